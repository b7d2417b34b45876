//! Downloads from any HTTP(S) server (nginx, S3 presigned URLs, python's
//! http.server, ferry itself), with hyper's HTTP/1.1 client over our own
//! TCP (and rustls) connection.
//!
//! The same promises as a native download: bytes go to `NAME.part` and
//! are renamed onto the name only when whole (and checked, when there is
//! something to check against), after an `fsync`. A download resumes with
//! `Range` and `If-Range` (the strong ETag, else Last-Modified), so a file
//! that changed on the server restarts instead of splicing two versions;
//! a server that ignores `Range` is handled by starting over (said once).
//! Without a validator nothing is kept to resume from. Redirects are
//! followed (at most [`MAX_REDIRECTS`]); a `Content-Disposition` name is
//! taken through the same rules as any remote name.
//!
//! Verification: the server's `X-Ferry-Blake3` (a ferry server), or what
//! the user expects (`--blake3 HEX`, `--sha256 HEX`); without either the
//! file is "not verified". BLAKE3 is computed beside the download
//! (reading the part back in bounded chunks), SHA-256 after it.

use std::path::PathBuf;
use std::time::Duration;

use http::{header, HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::download::local_name;
use super::ClientError;
use crate::protocol::HASH_LEN;

mod save;
mod split;

pub use save::http_get;

/// Most redirects followed for one download.
pub const MAX_REDIRECTS: usize = 10;

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server may stay silent (before its answer, or mid-body).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The hash a download must match, as the user gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// `--blake3 HEX`.
    Blake3([u8; HASH_LEN]),
    /// `--sha256 HEX`.
    Sha256([u8; 32]),
}

/// How to reach and trust an HTTP(S) server.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// CA file to trust instead of the system's roots (`--cacert`).
    pub cacert: Option<PathBuf>,
    /// `sha256:HEX`: trust exactly this certificate (`--pin`).
    pub pin: Option<String>,
    /// A bearer token (`--token`), sent only to the URL's own host.
    pub token: Option<String>,
    /// The hash the file must have.
    pub expected: Option<Expected>,
    /// Connections for one file (`-j`): ranges in parallel when the server
    /// serves them.
    pub jobs: usize,
    /// A kept-alive connection handed from one download to the next (`-r`
    /// fetches a tree's files, and lists its directories, over it).
    pub pool: ConnPool,
}

/// One kept-alive connection, shared by the downloads of one command: each
/// takes it, and gives it back when its answer was read to the end.
#[derive(Default, Clone)]
pub struct ConnPool(std::sync::Arc<std::sync::Mutex<Option<Conn>>>);

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnPool")
    }
}

impl ConnPool {
    fn take(&self) -> Option<Conn> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn put(&self, conn: Option<Conn>) {
        if conn.as_ref().is_some_and(|c| !c.sender.is_closed()) {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = conn;
        }
    }
}

/// What a finished HTTP download did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSaved {
    /// Where it was saved (`None`: standard output).
    pub path: Option<PathBuf>,
    /// Its size.
    pub size: u64,
    /// Bytes kept from an earlier interrupted attempt.
    pub resumed: u64,
    /// Whether they were pieces of ranges (`-j`) rather than a prefix.
    pub resumed_ranges: bool,
    /// Why an earlier `.part` was not continued, if one was there.
    pub restarted: Option<&'static str>,
    /// What it was checked against (`None`: not verified).
    pub verified: Option<&'static str>,
    /// Whether the local copy was already the server's file.
    pub up_to_date: bool,
}

impl HttpSaved {
    /// Nothing fetched: ferry's own copy of this version is already at
    /// `path`.
    fn already_here(path: PathBuf, size: u64) -> HttpSaved {
        HttpSaved {
            path: Some(path),
            size,
            resumed: 0,
            resumed_ranges: false,
            restarted: None,
            verified: None,
            up_to_date: true,
        }
    }
}

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone)]
struct Url {
    https: bool,
    host: String,
    port: u16,
    /// `host[:port]` as the `Host` header carries it.
    authority: String,
    /// Path and query, as sent.
    target: String,
}

fn bad_url(url: &str, why: &'static str) -> ClientError {
    ClientError::BadAddress {
        addr: crate::display::escape_controls(url).into_owned(),
        why,
    }
}

impl Url {
    fn parse(s: &str) -> Result<Url, ClientError> {
        let uri: Uri = s.parse().map_err(|_| bad_url(s, "not a valid URL"))?;
        Url::from_uri(&uri, s)
    }

    fn from_uri(uri: &Uri, shown: &str) -> Result<Url, ClientError> {
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad_url(shown, "only http:// and https:// URLs")),
        };
        let auth = uri
            .authority()
            .ok_or_else(|| bad_url(shown, "no host in the URL"))?;
        if auth.as_str().contains('@') {
            return Err(bad_url(
                shown,
                "user:password@ in URLs is not supported (use --token)",
            ));
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        Ok(Url {
            https,
            host: host.to_string(),
            port: auth.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority: auth.as_str().to_string(),
            target: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        })
    }

    fn shown(&self) -> String {
        format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            self.authority,
            self.target
        )
    }

    /// The `Location` of a redirect, resolved against this URL.
    fn join(&self, location: &str) -> Result<Url, ClientError> {
        if location.contains("://") {
            return Url::parse(location);
        }
        let target = if location.starts_with("//") {
            return Url::parse(&format!(
                "{}:{location}",
                if self.https { "https" } else { "http" }
            ));
        } else if location.starts_with('/') {
            location.to_string()
        } else {
            let path = self.target.split('?').next().unwrap_or("/");
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        let mut next = self.clone();
        next.target = target;
        Ok(next)
    }

    /// The file name the URL's path ends in (percent-decoded), if any.
    fn file_name(&self) -> Option<String> {
        let path = self.target.split(['?', '#']).next().unwrap_or("");
        let last = path.rsplit('/').next().filter(|l| !l.is_empty())?;
        let decoded = percent_encoding::percent_decode_str(last)
            .decode_utf8()
            .ok()?
            .into_owned();
        local_name(&decoded).ok().map(str::to_string)
    }
}

/// Whether `s` is an `http://` or `https://` URL (what `ferry get` hands
/// to [`http_get`]).
pub fn is_http_url(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

/// One connection's request sender.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    key: (bool, String, u16),
}

async fn connect(url: &Url, opts: &HttpOptions) -> Result<Conn, ClientError> {
    let addr = super::HostPort {
        host: url.host.clone(),
        port: url.port,
        tls: None,
        token: None,
    };
    let tcp: TcpStream = super::connect(&addr).await?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if let (true, Some(pin)) = (url.https, &opts.pin) {
        // A pinned certificate: exactly this one, whoever signed it.
        let trust = crate::tls::client::TrustOptions {
            pin: Some(pin.clone()),
            cacert: None,
            known_hosts: None,
        };
        let tls = crate::tls::client::ClientTls::new(
            &url.authority,
            &trust,
            &[b"http/1.1"],
            std::sync::Arc::new(|_: &str| {}),
        )
        .map_err(|e| ClientError::Tls(e.to_string()))?;
        match tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(&url.host, tcp)).await {
            Ok(Ok(s)) => Box::new(s),
            Ok(Err(why)) => return Err(ClientError::Tls(why)),
            Err(_) => {
                return Err(ClientError::Tls(format!(
                    "TLS handshake with {} timed out",
                    url.authority
                )))
            }
        }
    } else if url.https {
        let config = crate::tls::client::web_config(opts.cacert.as_deref(), &[b"http/1.1"])
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|_| ClientError::Tls(format!("{:?} is not a TLS server name", url.host)))?;
        let connector = tokio_rustls::TlsConnector::from(config);
        match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
            Ok(Ok(s)) => Box::new(s),
            Ok(Err(e)) => return Err(ClientError::Tls(format!("TLS with {}: {e}", url.authority))),
            Err(_) => {
                return Err(ClientError::Tls(format!(
                    "TLS handshake with {} timed out",
                    url.authority
                )))
            }
        }
    } else {
        Box::new(tcp)
    };
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ClientError::Protocol(format!("HTTP with {}: {e}", url.authority)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!("HTTP connection ended: {e}");
        }
    });
    Ok(Conn {
        sender,
        key: (url.https, url.host.clone(), url.port),
    })
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The bytes a request asks for: from `from` to `to` (inclusive; `None`:
/// the end), only if the file is still the version `validator` names.
#[derive(Debug, Clone, Copy)]
struct Span<'a> {
    from: u64,
    to: Option<u64>,
    validator: &'a str,
}

/// A response, and the URL it finally came from.
struct Answer {
    url: Url,
    status: StatusCode,
    headers: HeaderMap,
    body: Incoming,
}

/// How long a kept-alive connection may take to be ready for the next
/// request before a new one is opened instead.
const REUSE_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Sends `GET` (with `range`: `Range` from byte N and `If-Range`),
/// following redirects over kept-alive connections.
async fn fetch(
    conn: &mut Option<Conn>,
    first: &Url,
    range: Option<Span<'_>>,
    opts: &HttpOptions,
) -> Result<Answer, ClientError> {
    let mut url = first.clone();
    for _ in 0..=MAX_REDIRECTS {
        let key = (url.https, url.host.clone(), url.port);
        let mut reusable = false;
        if let Some(c) = conn
            .as_mut()
            .filter(|c| c.key == key && !c.sender.is_closed())
        {
            // Just after a body's end the connection may take a moment to
            // be idle again.
            reusable = matches!(
                tokio::time::timeout(REUSE_WAIT, c.sender.ready()).await,
                Ok(Ok(()))
            );
            if reusable {
                debug!(
                    "HTTP: reusing the kept-alive connection to {}",
                    url.authority
                );
            }
        }
        if !reusable {
            *conn = Some(connect(&url, opts).await?);
        }
        let c = conn.as_mut().expect("connected above");
        let mut req = Request::get(url.target.as_str())
            .header(header::HOST, url.authority.as_str())
            .header(
                header::USER_AGENT,
                concat!("ferry/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::ACCEPT_ENCODING, "identity");
        if let Some(Span {
            from,
            to,
            validator,
        }) = range
        {
            let to = to.map(|t| t.to_string()).unwrap_or_default();
            req = req.header(header::RANGE, format!("bytes={from}-{to}"));
            if !validator.is_empty() {
                req = req.header(header::IF_RANGE, validator);
            }
        }
        // The token goes only to the host it was given for.
        if let (Some(t), true) = (&opts.token, url.host == first.host) {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = match tokio::time::timeout(STALL_TIMEOUT, c.sender.send_request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                *conn = None;
                return Err(ClientError::Protocol(format!("{}: {e}", url.shown())));
            }
            Err(_) => {
                *conn = None;
                return Err(ClientError::Protocol(format!(
                    "{}: no answer within {}s",
                    url.shown(),
                    STALL_TIMEOUT.as_secs()
                )));
            }
        };
        let status = resp.status();
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            let Some(loc) = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
            else {
                return Err(ClientError::Http(format!(
                    "{}: {status} without a Location",
                    url.shown()
                )));
            };
            let next = url.join(loc)?;
            debug!(from = %url.shown(), to = %next.shown(), "redirected");
            // Drain the (small) redirect body so the connection can be reused.
            let _ = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await;
            url = next;
            continue;
        }
        let (parts, body) = resp.into_parts();
        return Ok(Answer {
            url,
            status,
            headers: parts.headers,
            body,
        });
    }
    Err(ClientError::Http(format!(
        "{}: more than {MAX_REDIRECTS} redirects",
        first.shown()
    )))
}

/// A response that is neither a success nor a redirect, as an error.
fn failure(a: &Answer) -> ClientError {
    ClientError::Http(format!("{}: HTTP {}", a.url.shown(), a.status))
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// What a response says about the file.
#[derive(Debug)]
struct About {
    /// The whole file's size, if known.
    total: Option<u64>,
    /// Where this body starts in the file.
    start: u64,
    /// The validator a resume must send in `If-Range` (strong ETag, else
    /// Last-Modified), if any.
    validator: Option<String>,
    mtime_ns: Option<i64>,
    blake3: Option<[u8; HASH_LEN]>,
    /// The name `Content-Disposition` gives, checked.
    name: Option<String>,
}

fn about(a: &Answer) -> Result<About, ClientError> {
    let h = &a.headers;
    let length: Option<u64> = header_str(h, "content-length").and_then(|v| v.parse().ok());
    let (start, total) = if a.status == StatusCode::PARTIAL_CONTENT {
        let cr = header_str(h, "content-range").unwrap_or("");
        parse_content_range(cr).ok_or_else(|| {
            ClientError::Protocol(format!(
                "{}: 206 with an unusable Content-Range {cr:?}",
                a.url.shown()
            ))
        })?
    } else {
        (0, length)
    };
    let etag = header_str(h, "etag").filter(|e| e.starts_with('"'));
    let last_modified = header_str(h, "last-modified");
    let mtime_ns = last_modified
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .map(crate::storage::system_time_ns);
    let blake3 = header_str(h, "x-ferry-blake3").and_then(parse_hex::<HASH_LEN>);
    let name = header_str(h, "content-disposition").and_then(disposition_name);
    Ok(About {
        total,
        start,
        validator: etag.or(last_modified).map(str::to_string),
        mtime_ns,
        blake3,
        name,
    })
}

/// `bytes START-END/TOTAL` → (START, TOTAL).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (s, _) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((s.trim().parse().ok()?, total))
}

/// Lowercase or uppercase hex of exactly `N` bytes.
pub fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim();
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The file name of a `Content-Disposition` (`filename*=UTF-8''…` first,
/// then `filename="…"`), through the rules for remote names: its last
/// component only, and refused if unusable.
fn disposition_name(v: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for part in v.split(';').map(str::trim) {
        if let Some(x) = part.strip_prefix("filename*=") {
            let enc = x.split_once("''").map(|(_, e)| e).unwrap_or(x);
            extended = percent_encoding::percent_decode_str(enc.trim_matches('"'))
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned());
        } else if let Some(x) = part.strip_prefix("filename=") {
            plain = Some(x.trim_matches('"').to_string());
        }
    }
    let name = extended.or(plain)?;
    // A name with a path keeps only its last component, as local_name does.
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    local_name(last).ok().map(str::to_string)
}

/// Largest JSON listing read (a ferry listing of 262,144 entries with long
/// names stays well under it).
const MAX_LISTING: usize = 128 << 20;

/// Lists a directory of a ferry server through its JSON listing
/// (`?format=json`): each entry as (name, kind word, size, mtime in ns).
///
/// # Errors
///
/// As a download's, and `Protocol` when the answer is not a ferry
/// listing.
pub async fn http_list(
    url: &str,
    opts: &HttpOptions,
) -> Result<Vec<crate::protocol::ListEntry>, ClientError> {
    use crate::protocol::{EntryKind, ListEntry};
    let mut u = Url::parse(url)?;
    if !u.target.contains('?') {
        if !u.target.ends_with('/') {
            u.target.push('/');
        }
        u.target.push_str("?format=json");
    }
    let mut conn = opts.pool.take();
    let answer = fetch(&mut conn, &u, None, opts).await?;
    if !answer.status.is_success() {
        return Err(failure(&answer));
    }
    let limited = http_body_util::Limited::new(answer.body, MAX_LISTING);
    let body = tokio::time::timeout(STALL_TIMEOUT, limited.collect())
        .await
        .map_err(|_| ClientError::Protocol(format!("{}: listing too slow", u.shown())))?
        .map_err(|e| ClientError::Protocol(format!("{}: {e}", u.shown())))?
        .to_bytes();
    opts.pool.put(conn);
    #[derive(serde::Deserialize)]
    struct Listing {
        entries: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        name: String,
        kind: String,
        size: u64,
        mtime_ns: i64,
    }
    let listing: Listing = serde_json::from_slice(&body).map_err(|_| {
        ClientError::Protocol(format!(
            "{} is not a ferry listing (only ferry servers list as JSON)",
            u.shown()
        ))
    })?;
    Ok(listing
        .entries
        .into_iter()
        .map(|i| ListEntry {
            name: i.name.into_bytes(),
            kind: match i.kind.as_str() {
                "file" => EntryKind::File,
                "dir" => EntryKind::Dir,
                "link" => EntryKind::Symlink,
                _ => EntryKind::Other,
            },
            size: i.size,
            mtime_ns: i.mtime_ns,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_names_and_redirects() {
        let u = Url::parse("http://h:8080/a/b%20c.txt?x=1").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.https), ("h", 8080, false));
        assert_eq!(u.file_name().as_deref(), Some("b c.txt"));
        assert_eq!(Url::parse("https://[::1]/").unwrap().port, 443);
        assert_eq!(Url::parse("https://[::1]/").unwrap().host, "::1");
        assert_eq!(Url::parse("http://h/").unwrap().file_name(), None);
        assert_eq!(Url::parse("http://h/..").unwrap().file_name(), None);
        assert!(Url::parse("ftp://h/x").is_err());
        assert!(Url::parse("http://u:p@h/x").is_err());
        assert_eq!(u.join("/z").unwrap().target, "/z");
        assert_eq!(u.join("y.bin").unwrap().target, "/a/y.bin");
        assert_eq!(u.join("https://o/p").unwrap().host, "o");
    }

    #[test]
    fn disposition_names_are_checked() {
        assert_eq!(
            disposition_name("attachment; filename=\"r.pdf\"").as_deref(),
            Some("r.pdf")
        );
        assert_eq!(
            disposition_name("attachment; filename=\"x\"; filename*=UTF-8''%E6%96%87%E4%BB%B6.txt")
                .as_deref(),
            Some("文件.txt")
        );
        assert_eq!(
            disposition_name("attachment; filename=\"../../etc/passwd\"").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            disposition_name("attachment; filename=\"..\"").as_deref(),
            None
        );
        assert_eq!(
            disposition_name("attachment; filename=\".bashrc\"").is_some(),
            local_name(".bashrc").is_ok()
        );
        assert_eq!(disposition_name("inline"), None);
    }

    #[test]
    fn content_ranges_and_hex() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 10-99/*"), Some((10, None)));
        assert_eq!(parse_content_range("nonsense"), None);
        assert_eq!(parse_hex::<2>("0aFF"), Some([0x0a, 0xff]));
        assert_eq!(parse_hex::<2>("0aF"), None);
    }
}
