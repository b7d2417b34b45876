//! Addresses as users type them, and connecting to them.
//!
//! A server is `HOST[:PORT]`, where HOST is a name, an IPv4 address, or an
//! IPv6 address in brackets (or bare, without a port). A file on it can be
//! named in one word as `HOST[:PORT]/PATH` or `ferry://HOST[:PORT]/PATH`
//! (where PATH is percent-decoded, as in any URL); `ferrys://` is the same
//! over TLS.

use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::debug;

use super::ClientError;

/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A server address: host and port, and whether (and trusting whom) to
/// speak TLS to it.
#[derive(Debug, Clone)]
pub struct HostPort {
    /// Host name or address, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS, with its trust and session cache; `None`: plaintext.
    pub tls: Option<crate::tls::client::ClientTls>,
    /// The access token to present, if the server wants one.
    pub token: Option<crate::auth::Secret>,
}

impl PartialEq for HostPort {
    fn eq(&self, other: &Self) -> bool {
        self.host == other.host
            && self.port == other.port
            && self.tls.is_some() == other.tls.is_some()
    }
}

impl Eq for HostPort {}

impl HostPort {
    /// Parses `HOST[:PORT]`, using `default_port` when none is given.
    ///
    /// # Errors
    ///
    /// [`ClientError::BadAddress`] for an empty host, a bad port or
    /// unbalanced brackets.
    pub fn parse(s: &str, default_port: u16) -> Result<Self, ClientError> {
        let bad = |why| ClientError::BadAddress {
            addr: crate::display::escape_controls(s).into_owned(),
            why,
        };
        let port_of = |p: &str| p.parse::<u16>().map_err(|_| bad("port must be 0-65535"));
        if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
            host.parse::<Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address inside [ ]"))?;
            let port = match after {
                "" => default_port,
                p => port_of(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected ':PORT' after ']'"))?,
                )?,
            };
            return Ok(HostPort {
                host: host.to_string(),
                port,
                tls: None,
                token: None,
            });
        }
        if s.parse::<Ipv6Addr>().is_ok() {
            return Ok(HostPort {
                host: s.to_string(),
                port: default_port,
                tls: None,
                token: None,
            });
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, port_of(p)?),
            None => (s, default_port),
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if host.contains(':') {
            return Err(bad("put IPv6 addresses in brackets: [::1]:8000"));
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
            tls: None,
            token: None,
        })
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A server and, if the user named one in the same word, a path on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The server.
    pub addr: HostPort,
    /// The path after the first `/`, if any (`HOST/` gives `Some("")`: the
    /// served directory itself).
    pub path: Option<String>,
    /// The address said `ferrys://`: speak TLS, as `--tls` asks.
    pub tls: bool,
}

impl Target {
    /// Parses `HOST[:PORT]`, `HOST[:PORT]/PATH`,
    /// `ferry://HOST[:PORT][/PATH]` or `ferrys://…` (TLS).
    ///
    /// # Errors
    ///
    /// [`ClientError::BadAddress`] for a bad address or scheme, or a
    /// malformed percent-escape in a URL.
    pub fn parse(s: &str, default_port: u16) -> Result<Self, ClientError> {
        let bad = |why| ClientError::BadAddress {
            addr: crate::display::escape_controls(s).into_owned(),
            why,
        };
        let (rest, url, tls) = match s.split_once("://") {
            Some(("ferry", rest)) => (rest, true, false),
            Some(("ferrys", rest)) => (rest, true, true),
            Some(("http" | "https", _)) => {
                return Err(bad("http(s):// URLs work with `ferry get` and `ferry ls`"))
            }
            Some(_) => return Err(bad("only ferry://, ferrys:// and http(s):// addresses")),
            None => (s, false, false),
        };
        // The host ends at the first '/' after any [IPv6] bracket.
        let host_end = if rest.starts_with('[') {
            rest.find(']').map_or(rest.len(), |i| {
                rest[i..].find('/').map_or(rest.len(), |j| i + j)
            })
        } else {
            rest.find('/').unwrap_or(rest.len())
        };
        let (host, path) = rest.split_at(host_end);
        let addr = HostPort::parse(host, default_port)?;
        let path = match path.strip_prefix('/') {
            None => None,
            Some(p) if url => Some(percent_decode(p).ok_or_else(|| bad("bad %-escape in URL"))?),
            Some(p) => Some(p.to_string()),
        };
        Ok(Target { addr, path, tls })
    }
}

/// Decodes `%XX` escapes; `None` for a malformed one or a result that is
/// not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Connects to `addr` as it asks: plain TCP, or TLS over it.
///
/// # Errors
///
/// As [`connect`], and [`ClientError::Tls`] when the server is not trusted
/// or the handshake fails.
pub async fn connect_stream(addr: &HostPort) -> Result<crate::tls::Stream, ClientError> {
    let tcp = connect(addr).await?;
    match &addr.tls {
        None => Ok(crate::tls::Stream::Plain(tcp)),
        Some(tls) => {
            match tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(&addr.host, tcp)).await {
                Ok(Ok(s)) => Ok(crate::tls::Stream::Tls(Box::new(s.into()))),
                Ok(Err(why)) => Err(ClientError::Tls(why)),
                Err(_) => Err(ClientError::Tls(format!(
                    "TLS handshake with {addr} timed out"
                ))),
            }
        }
    }
}

/// Resolves `addr` and connects to the first address that answers.
///
/// # Errors
///
/// `Resolve`, `Refused` or `Connect`, naming the address.
pub async fn connect(addr: &HostPort) -> Result<TcpStream, ClientError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((addr.host.as_str(), addr.port))
        .await
        .map_err(|source| ClientError::Resolve {
            host: addr.host.clone(),
            source,
        })?
        .collect();
    debug!(%addr, ?addrs, "resolved");
    let mut last = None;
    for sa in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(sa)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                debug!(%sa, "connected");
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                debug!(%sa, "connection refused");
                last = Some(ClientError::Refused(sa));
            }
            Ok(Err(source)) => {
                debug!(%sa, "connect failed: {source}");
                last = Some(ClientError::Connect { addr: sa, source });
            }
            Err(_) => {
                debug!(%sa, "connect timed out");
                last = Some(ClientError::Connect {
                    addr: sa,
                    source: io::Error::new(io::ErrorKind::TimedOut, "timed out"),
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| ClientError::Resolve {
        host: addr.host.clone(),
        source: io::Error::new(io::ErrorKind::NotFound, "no addresses found"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        let p = |s| HostPort::parse(s, 8000);
        let hp = |h: &str, port| HostPort {
            host: h.into(),
            port,
            tls: None,
            token: None,
        };
        assert_eq!(p("localhost").unwrap(), hp("localhost", 8000));
        assert_eq!(p("127.0.0.1:9").unwrap(), hp("127.0.0.1", 9));
        assert_eq!(p("[::1]:80").unwrap(), hp("::1", 80));
        assert_eq!(p("[::1]").unwrap(), hp("::1", 8000));
        assert_eq!(p("::1").unwrap(), hp("::1", 8000));
        assert_eq!(p("[::1]:80").unwrap().to_string(), "[::1]:80");
        for bad in [
            "",
            ":80",
            "host:99999",
            "host:x",
            "[::1",
            "[nope]:1",
            "[::1]x",
            "a:b:c",
        ] {
            assert!(p(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn targets_with_paths() {
        let t = |s| Target::parse(s, 8000).unwrap();
        let hp = |h: &str, port| HostPort {
            host: h.into(),
            port,
            tls: None,
            token: None,
        };
        assert_eq!(t("localhost").path, None);
        assert_eq!(t("localhost:9000/a/b.txt").addr, hp("localhost", 9000));
        assert_eq!(t("localhost:9000/a/b.txt").path.as_deref(), Some("a/b.txt"));
        assert_eq!(t("host/").path.as_deref(), Some(""));
        assert_eq!(t("[::1]:7/x").addr, hp("::1", 7));
        assert_eq!(t("[::1]:7/x").path.as_deref(), Some("x"));
        assert_eq!(t("[::1]/x").addr, hp("::1", 8000));
        let u = t("ferry://h:1/dir%20with%20space/%E6%96%87.txt");
        assert_eq!(u.addr, hp("h", 1));
        assert_eq!(u.path.as_deref(), Some("dir with space/文.txt"));
        // Not decoded outside URLs: the name really has a '%'.
        assert_eq!(t("h/100%25").path.as_deref(), Some("100%25"));
        let s = t("ferrys://h/a");
        assert!(s.tls && s.addr.port == 8000 && s.path.as_deref() == Some("a"));
        assert!(!t("ferry://h/a").tls);
        for bad in ["http://h/x", "ferry://h/%zz", "ferry://h/%ff", "h:99999/x"] {
            assert!(Target::parse(bad, 8000).is_err(), "accepted {bad:?}");
        }
    }
}
