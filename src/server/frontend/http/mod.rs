//! HTTP/1.1 for browsers, curl and wget, through hyper (no hand-written
//! HTTP parser): GET and HEAD of files with ranges and conditional
//! requests ([`files`]), directory listings as HTML or JSON ([`listing`]),
//! whole subtrees as tar or zip ([`archive`]); with uploads on, `PUT`
//! ([`upload`]) and the listing page's form posts ([`form`]). Paths go through the same
//! file service, and so the same confinement, as every other protocol.
//!
//! Limits: request heads are capped in size (64 KiB) and count (100
//! headers), answered 431 beyond; a head must arrive within the idle
//! timeout (hyper's header-read timeout, against slowloris); a keep-alive
//! connection idle for the idle timeout is closed, and one waiting for its
//! next request counts as idle for eviction ([`io`]); every write is bounded
//! like any other front-end's.

mod archive;
mod body;
mod files;
mod form;
mod io;
mod listing;
mod upload;
mod url;

use std::convert::Infallible;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::tls::Stream;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::debug;

use self::body::{AccessLog, Body};
use self::io::{HttpIo, InFlight};
use super::ConnCtx;
use crate::auth::Verdict;
use crate::service::FileService;
use crate::storage::PathError;

/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Most header fields in a request.
const MAX_HEADERS: usize = 100;

/// Serves an HTTP/1.1 connection whose first bytes, `head`, were read by
/// the sniffer. Returns a summary for the disconnect log line.
pub(crate) async fn serve(stream: Stream, head: Vec<u8>, ctx: &ConnCtx<'_>) -> String {
    let in_flight: InFlight = Arc::new(AtomicUsize::new(0));
    let idle = ctx.config().idle_timeout;
    let io = http_io(stream, head, ctx, &in_flight);
    let requests = AtomicUsize::new(0);
    let service = service_fn(|req| answer(req, ctx, &in_flight, &requests));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .max_buf_size(MAX_HEAD.max(8192) * 2)
        .max_header_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .keep_alive(true)
        // A client that half-closes after its request (`nc -N`) still gets
        // its answer.
        .half_close(true)
        // Not `pipeline_flush(true)`: with it, hyper 1.12 dropped the
        // automatic 400/431 answer to a malformed head unsent (seen with
        // `GET / HTTP/1.9` and a 70 KB header: the client got a bare
        // close). Pipelined requests are still answered in order.
        .pipeline_flush(false);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let res = until_shutdown(conn, ctx, |c| c.graceful_shutdown()).await;
    summary("http", &requests, res)
}

/// Serves an HTTP/2 connection (ALPN `h2`, or the preface in `head`):
/// the same answers as HTTP/1.1, each stream its own task.
pub(crate) async fn serve_h2(stream: Stream, head: Vec<u8>, ctx: &ConnCtx<'_>) -> String {
    let in_flight: InFlight = Arc::new(AtomicUsize::new(0));
    let io = http_io(stream, head, ctx, &in_flight);
    let requests = AtomicUsize::new(0);
    let service = service_fn(|req| answer(req, ctx, &in_flight, &requests));
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD as u32)
        .max_concurrent_streams(100);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let res = until_shutdown(conn, ctx, |c| c.graceful_shutdown()).await;
    summary("http/2", &requests, res)
}

/// Runs a hyper connection; once the server shuts down, it finishes what
/// is in flight and takes no new request.
async fn until_shutdown<C>(
    conn: C,
    ctx: &ConnCtx<'_>,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
) -> Result<(), hyper::Error>
where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        () = ctx.shutdown().cancelled() => {
            graceful(conn.as_mut());
            conn.await
        }
    }
}

fn http_io(stream: Stream, head: Vec<u8>, ctx: &ConnCtx<'_>, in_flight: &InFlight) -> HttpIo {
    HttpIo::new(
        stream,
        head,
        ctx.config().idle_timeout,
        in_flight.clone(),
        ctx.activity(),
        ctx.write_limit_watch(),
        ctx.evict_token(),
    )
}

/// An answer being worked out: a read (which may wait for the file
/// system) or an upload.
type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>;

/// What answering a read needs from its connection, owned: the answer is
/// worked out in a future that outlives the borrow of the connection.
struct Reading {
    service: Arc<FileService>,
    tls: bool,
    token: bool,
}

impl Reading {
    fn of(ctx: &ConnCtx<'_>) -> Reading {
        Reading {
            service: ctx.service_owned(),
            tls: ctx.is_tls(),
            token: ctx.auth_required(),
        }
    }
}

/// One request's answer, as hyper's service wants it.
fn answer(
    req: Request<Incoming>,
    ctx: &ConnCtx<'_>,
    in_flight: &InFlight,
    requests: &AtomicUsize,
) -> impl std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static {
    requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = || AccessLog::new(req.method().as_str(), req.uri().path(), in_flight);
    let mut delay = None;
    let mut pending = None;
    let response = if req.uri().path() == HEALTH_PATH {
        // Before TLS and tokens: a load balancer's check needs neither,
        // and the answer says nothing but up or down.
        let draining = ctx.shutdown().is_cancelled();
        pending = Some(Box::pin(health(ctx.service_owned(), draining, log())) as Pending);
        None
    } else if ctx.plaintext_refused() {
        Some(to_https(&req, log()))
    } else {
        match ctx.authorize(presented_token(&req).as_deref()) {
            Verdict::Granted if req.method() == Method::PUT => {
                match upload_target(&req, ctx, log()) {
                    Ok(path) => {
                        let log = log();
                        let put = upload::put(req, path, ctx.service_owned(), log);
                        pending = Some(Box::pin(put) as Pending);
                        None
                    }
                    Err(r) => Some(*r),
                }
            }
            Verdict::Granted if req.method() == Method::POST => {
                match form_target(&req, ctx, log()) {
                    Ok(dir) => {
                        let log = log();
                        let post = form::post(req, dir, ctx.service_owned(), log);
                        pending = Some(Box::pin(post) as Pending);
                        None
                    }
                    Err(r) => Some(*r),
                }
            }
            Verdict::Granted => {
                let log = AccessLog::new(req.method().as_str(), req.uri().path(), in_flight);
                pending = Some(Box::pin(handle(req, Reading::of(ctx), log)) as Pending);
                None
            }
            Verdict::Missing => Some(unauthorized("this server requires a token", log())),
            Verdict::Wrong(d) => {
                delay = Some(d);
                Some(unauthorized("wrong token", log()))
            }
        }
    };
    async move {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        match (response, pending) {
            (Some(r), _) => Ok(r),
            (None, Some(p)) => Ok(p.await),
            (None, None) => unreachable!("either an answer or one pending"),
        }
    }
}

/// The path of the health check (`GET`, `HEAD`, `OPTIONS`; HAProxy's
/// `option httpchk` sends a bare HTTP/1.0 request, no `Host`).
pub(crate) const HEALTH_PATH: &str = "/_ferry/health";

/// `200 ok` while the storage answers, `503` when it does not or while the
/// server shuts down (so a balancer stops sending new clients).
async fn health(service: Arc<FileService>, draining: bool, log: AccessLog) -> Response<Body> {
    let mut r = if draining {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining", log)
    } else {
        match service.health().await {
            Ok(()) => text(StatusCode::OK, "ok", log.quiet()),
            Err(why) => {
                tracing::warn!("health check: {why}");
                text(StatusCode::SERVICE_UNAVAILABLE, "storage unreachable", log)
            }
        }
    };
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The token in `Authorization`: `Bearer TOKEN`, or Basic with any user
/// name and the token as password (what a browser's login prompt sends).
fn presented_token(req: &Request<Incoming>) -> Option<Vec<u8>> {
    use headers::authorization::{Basic, Bearer};
    use headers::{Authorization, HeaderMapExt};
    let h = req.headers();
    if let Some(Authorization(b)) = h.typed_get::<Authorization<Bearer>>() {
        return Some(b.token().as_bytes().to_vec());
    }
    h.typed_get::<Authorization<Basic>>()
        .map(|Authorization(b)| b.password().as_bytes().to_vec())
}

/// 401 with the challenges a browser (Basic: its login prompt) and a
/// script (Bearer) understand.
fn unauthorized(msg: &str, log: AccessLog) -> Response<Body> {
    let mut r = text(StatusCode::UNAUTHORIZED, msg, log);
    let h = r.headers_mut();
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"ferry\", charset=\"UTF-8\""),
    );
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ferry\""),
    );
    r
}

fn summary(what: &str, requests: &AtomicUsize, res: Result<(), hyper::Error>) -> String {
    let n = requests.load(std::sync::atomic::Ordering::Relaxed);
    match res {
        Ok(()) => format!("{what}: {n} request(s)"),
        Err(e) => format!("{what}: {n} request(s); {e}"),
    }
}

/// Plaintext on a port that requires TLS: a redirect to the same URL over
/// https (the same port).
fn to_https(req: &Request<Incoming>, log: AccessLog) -> Response<Body> {
    let host = request_host(req).unwrap_or("localhost");
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut r = text(
        StatusCode::PERMANENT_REDIRECT,
        "this server requires TLS: use https://",
        log,
    );
    if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{target}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The `host[:port]` a request addressed: its `Host`, or over HTTP/2 its
/// URI's authority.
fn request_host(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// A response of `status` with a one-line text body.
fn text(status: StatusCode, msg: &str, log: AccessLog) -> Response<Body> {
    let mut body = Body::bytes(format!("{msg}\n"), log);
    body.set_status(status.as_u16());
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A response of `status` with no body.
fn status_only(status: StatusCode, log: AccessLog) -> Response<Body> {
    let mut body = Body::empty(log);
    body.set_status(status.as_u16());
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r
}

/// The status for a path the service refused.
fn refused(e: &PathError) -> StatusCode {
    match e {
        PathError::Invalid(_) => StatusCode::BAD_REQUEST,
        PathError::NotFound | PathError::Hidden | PathError::NoFiles | PathError::NotADirectory => {
            StatusCode::NOT_FOUND
        }
        PathError::OutsideRoot
        | PathError::PermissionDenied
        | PathError::NotAFile
        | PathError::HardLink => StatusCode::FORBIDDEN,
        PathError::IsADirectory | PathError::TooManyEntries | PathError::Io(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// A redirect to `location` (already a valid URL path).
fn redirect(location: &str, log: AccessLog) -> Response<Body> {
    let mut r = text(StatusCode::MOVED_PERMANENTLY, "moved", log);
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The path a PUT writes to, or the answer refusing it.
fn upload_target(
    req: &Request<Incoming>,
    ctx: &ConnCtx<'_>,
    log: AccessLog,
) -> Result<String, Box<Response<Body>>> {
    match write_target(req, ctx, log)? {
        (t, log) if t.dir || t.path.is_empty() => Err(Box::new(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "PUT needs a file name (a URL not ending in /)",
            log,
        ))),
        (t, _) => Ok(t.path),
    }
}

/// The directory a form's `POST` saves into, or the answer refusing it.
fn form_target(
    req: &Request<Incoming>,
    ctx: &ConnCtx<'_>,
    log: AccessLog,
) -> Result<String, Box<Response<Body>>> {
    let (t, log) = write_target(req, ctx, log)?;
    if let Some(why) = form::cross_site(req.headers(), request_host(req)) {
        return Err(Box::new(text(StatusCode::FORBIDDEN, why, log)));
    }
    Ok(t.path)
}

/// The decoded target of a write (`PUT`, `POST`), or the answer refusing
/// it: uploads off, or a path that does not decode.
fn write_target(
    req: &Request<Incoming>,
    ctx: &ConnCtx<'_>,
    log: AccessLog,
) -> Result<(url::Target, AccessLog), Box<Response<Body>>> {
    if !ctx.service().accepts_uploads() {
        return Err(Box::new(text(
            StatusCode::FORBIDDEN,
            "uploads are off on this server (start it with --upload)",
            log,
        )));
    }
    match url::decode(req.uri().path()) {
        Ok(t) => Ok((t, log)),
        Err(why) => Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            &format!("invalid path: {why}"),
            log,
        ))),
    }
}

/// What one request means, answered by the file service.
async fn handle(req: Request<Incoming>, cx: Reading, log: AccessLog) -> Response<Body> {
    let method = req.method().clone();
    let raw_path = req.uri().path().to_string();
    debug!(%method, uri = %req.uri(), "HTTP request");
    if method != Method::GET && method != Method::HEAD {
        let uploads = cx.service.accepts_uploads();
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            if uploads {
                "only GET, HEAD, PUT and POST (a form to a directory) are served"
            } else {
                "only GET and HEAD are served (uploads are off)"
            },
            log,
        );
        r.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static(if uploads {
                "GET, HEAD, PUT, POST"
            } else {
                "GET, HEAD"
            }),
        );
        return r;
    }
    let target = match url::decode(&raw_path) {
        Ok(t) => t,
        Err(why) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("invalid path: {why}"),
                log,
            )
        }
    };
    // Opened once: a file (the common case) is answered from this handle.
    match cx.service.open(target.path.as_bytes()).await {
        Ok(_) if target.dir => text(
            StatusCode::NOT_FOUND,
            &format!("not a directory: /{}", target.path),
            log,
        ),
        Ok(opened) => files::respond(
            &method,
            req.headers(),
            &target.path,
            opened,
            &cx.service,
            log,
        ),
        Err(PathError::IsADirectory) if !target.dir => {
            // `/dir` -> `/dir/`, keeping the query.
            let mut to = url::href(&target.path) + "/";
            if let Some(q) = req.uri().query() {
                to.push('?');
                to.push_str(q);
            }
            redirect(&to, log)
        }
        Err(PathError::IsADirectory) => directory(&req, &target.path, &cx, log).await,
        Err(e) => text(refused(&e), &format!("{e}: /{}", target.path), log),
    }
}

/// A directory: an archive of it, its listing as JSON, or the HTML page.
async fn directory(
    req: &Request<Incoming>,
    path: &str,
    cx: &Reading,
    log: AccessLog,
) -> Response<Body> {
    let query = req.uri().query();
    if let Some(kind) = url::query_param(query, "archive") {
        let Some(format) = archive::Format::parse(&kind) else {
            return text(StatusCode::BAD_REQUEST, "archive must be tar or zip", log);
        };
        let name = path
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("files");
        let mut body = if req.method() == Method::HEAD {
            Body::empty(log)
        } else {
            Body::stream(
                archive::start(cx.service.clone(), path.to_string(), format),
                log,
            )
        };
        body.set_status(200);
        let mut r = Response::new(body);
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        let file = format!("{name}.{}", format.extension());
        let disposition = format!(
            "attachment; filename=\"{}\"; filename*=UTF-8''{}",
            file.replace(
                |c: char| !c.is_ascii_graphic() || c == '"' || c == '\\',
                "_"
            ),
            percent_encoding::utf8_percent_encode(&file, percent_encoding::NON_ALPHANUMERIC)
        );
        if let Ok(v) = HeaderValue::from_str(&disposition) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        return r;
    }
    let wants_json = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
        || url::query_param(query, "format").as_deref() == Some("json");
    // Listed and rendered on the blocking pool: for a huge directory both
    // are long work.
    let owned = path.to_string();
    let view = listing::View::from_query(query);
    let host = request_host(req).unwrap_or("HOST").to_string();
    let (tls, token) = (cx.tls, cx.token);
    let made = cx
        .service
        .list_with(path.as_bytes(), move |entries, service| {
            if wants_json {
                (
                    "application/json",
                    listing::json(&owned, &entries, service),
                    None,
                )
            } else {
                let page = listing::Page {
                    path: &owned,
                    entries,
                    view,
                    host,
                    tls,
                    token,
                    upload: service.accepts_uploads(),
                    nonce: nonce(),
                };
                let csp = page.csp();
                ("text/html; charset=utf-8", page.render(), Some(csp))
            }
        })
        .await;
    let (content_type, page, csp) = match made {
        Ok(m) => m,
        Err(e) => return text(refused(&e), &format!("{e}: /{path}"), log),
    };
    let len = page.len();
    let mut body = if req.method() == Method::HEAD {
        Body::empty(log)
    } else {
        Body::bytes(page, log)
    };
    body.set_status(200);
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(csp) = csp.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    r
}

/// A fresh nonce for a page's script: 128 random bits, hex.
fn nonce() -> String {
    let mut b = [0u8; 16];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    crate::display::hex(&b)
}
