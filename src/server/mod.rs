//! The server: accept loop, connection limits, graceful shutdown, and the
//! dispatch of each connection, by its first bytes ([`sniff`]), to a
//! front-end ([`frontend`]): native ferry, HTTP, or the tutorial's protocol.
//! Every front-end answers through the one [`FileService`].
//!
//! [`run`] takes an already-bound listener (tests bind port 0) and a
//! [`CancellationToken`] (the binary cancels it on Ctrl-C / SIGTERM). Each
//! connection runs in its own task, so one failing or hostile request can
//! only end its own connection.
//!
//! Limits: at most `max_connections` connections are served at once. When a
//! new one arrives at the limit, the connection that has waited longest for
//! its next request (an idle or slowloris client) is closed to make room;
//! only if every connection is busy transferring does the newcomer get
//! `server busy`. So idle connections can never lock a real client out.

mod frontend;
mod printer;
pub mod proxy;
pub(crate) mod registry;
mod sniff;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use frontend::{close_gracefully, ConnCtx};
use registry::{ConnHandle, Registry};

use crate::protocol::{ErrorCode, Frame, MAGIC};
use crate::service::{FileService, Storage};
use crate::storage::{HashCache, ObjectRoot, RootOptions, SafeRoot};

/// What the server does with clients of the tutorial's protocol (its
/// programs, netcat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TutorialMode {
    /// Serve the file named by the client's first bytes (the tutorial's
    /// downloader).
    #[default]
    File,
    /// Print what the client sends and acknowledge each chunk (the
    /// tutorial's message servers).
    Message,
    /// Close such connections.
    Off,
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory to serve; `None` shares no files at all (a message
    /// server).
    pub root: Option<PathBuf>,
    /// A bucket to serve instead of `root` (`ferry serve s3://…`).
    pub object: Option<Arc<ObjectRoot>>,
    /// Hidden files, hard links: what the root shares besides plain files.
    pub root_options: RootOptions,
    /// Most connections served at once.
    pub max_connections: usize,
    /// How long a connection may take to send its next request (or its
    /// first bytes) before it is closed.
    pub idle_timeout: Duration,
    /// How long transfers in flight may continue after shutdown begins.
    pub grace: Duration,
    /// What to do with clients of the tutorial's protocol.
    pub tutorial: TutorialMode,
    /// The acknowledgement sent for each message.
    pub ack: String,
    /// Whether received messages are printed to stdout.
    pub print_messages: bool,
    /// TLS on the port (connections whose first byte is a TLS handshake).
    pub tls: Option<crate::tls::server::ServerTls>,
    /// With TLS on, whether plaintext connections are still served (else
    /// each is told, in its own protocol, that TLS is required).
    pub allow_plaintext: bool,
    /// The access token every client must present; `None`: open to all.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// Uploads accepted, under these rules; `None` (the default): the
    /// server is read-only.
    pub uploads: Option<crate::storage::WriteRules>,
    /// What is hashed ahead of demand (default: the whole tree).
    pub prehash: crate::service::Prehash,
    /// HAProxy's PROXY protocol: `Some(trusted)` requires a PROXY header
    /// from peers in these networks (and honours none from others), whose
    /// client address then stands for the peer everywhere; `None` (the
    /// default): off.
    pub proxy_protocol: Option<Vec<proxy::TrustedNet>>,
}

impl Config {
    /// Defaults for serving `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Config {
            root: Some(root.into()),
            object: None,
            root_options: RootOptions::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(10),
            tutorial: TutorialMode::File,
            ack: DEFAULT_ACK.to_string(),
            print_messages: true,
            tls: None,
            allow_plaintext: false,
            auth: None,
            uploads: None,
            prehash: crate::service::Prehash::default(),
            proxy_protocol: None,
        }
    }

    /// Defaults for serving a bucket.
    pub fn object(root: Arc<ObjectRoot>) -> Self {
        Config {
            root: None,
            object: Some(root),
            ..Config::new(PathBuf::new())
        }
    }

    /// Defaults for a message server that shares no files.
    pub fn messages_only() -> Self {
        Config {
            root: None,
            tutorial: TutorialMode::Message,
            ..Config::new(PathBuf::new())
        }
    }
}

/// The tutorial's acknowledgement: "your message was received".
pub const DEFAULT_ACK: &str = "已收到你的信息";

/// Default connection cap: generous, since an idle connection costs a few
/// KiB and is evicted when room is needed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The tutorial's port.
pub const DEFAULT_PORT: u16 = 8000;

/// Connections beyond the limit that may wait at once for room or a busy
/// answer; past this they are closed straight away.
const MAX_PENDING_REJECTS: usize = 256;

/// Longest a newcomer waits for the slot of the connection evicted for it.
///
/// It must exceed [`frontend::DRAIN_TIMEOUT`]: an evicted native connection is sent
/// `Error{Timeout}` and closed gracefully, keeping its slot until the peer
/// closes or the drain times out, and an idle client (an interactive
/// `ferry say` at its prompt) is typically not reading, so it rides out the
/// whole drain. With both at 2 s the newcomer's wait expired first and it
/// was told "server busy" although room had been made for it.
const EVICTION_WAIT: Duration = Duration::from_secs(frontend::DRAIN_TIMEOUT.as_secs() + 3);

/// Errors that stop the server as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The root could not be opened.
    #[error("cannot serve {path}: {source}")]
    Root {
        /// The directory asked for.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// The thread that prints received messages could not start.
    #[error("cannot start the message printer: {0}")]
    Stdout(io::Error),
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        source: io::Error,
    },
}

/// Binds the listening socket: `[::]:port` accepting IPv4 and IPv6 when no
/// address is given (falling back to `0.0.0.0` where IPv6 is unavailable).
///
/// # Errors
///
/// [`ServerError::Bind`] if the socket cannot be bound.
pub fn bind(addr: Option<IpAddr>, port: u16) -> Result<TcpListener, ServerError> {
    match addr {
        Some(ip) => bind_one(SocketAddr::new(ip, port), false),
        None => match bind_one(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port), true) {
            // Only a machine without IPv6 falls back to IPv4 alone; a port
            // in use is an error, not a reason to serve half the stack.
            Err(ServerError::Bind { source, .. })
                if source.kind() != io::ErrorKind::AddrInUse
                    && source.kind() != io::ErrorKind::PermissionDenied =>
            {
                debug!("dual-stack bind failed ({source}); falling back to IPv4");
                bind_one(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port), false)
            }
            other => other,
        },
    }
}

fn bind_one(addr: SocketAddr, dual_stack: bool) -> Result<TcpListener, ServerError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| ServerError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(!dual_stack).map_err(err)?;
    }
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

/// State shared by every connection task.
pub(crate) struct Shared {
    pub(crate) service: Arc<FileService>,
    pub(crate) config: Config,
    pub(crate) shutdown: CancellationToken,
    /// Where received messages go (`None`: not printed).
    pub(crate) printer: Option<printer::Printer>,
}

/// Serves connections from `listener` until `shutdown` is cancelled, then
/// lets transfers in flight finish for up to `config.grace`.
///
/// # Errors
///
/// [`ServerError::Root`] if the root cannot be opened. Errors of single
/// connections are logged, never returned.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let root = match (&config.object, &config.root) {
        (Some(o), _) => Some(Storage::Object(o.clone())),
        (None, Some(path)) => Some(Storage::Local(Arc::new(
            SafeRoot::open_with(path, config.root_options).map_err(|source| ServerError::Root {
                path: path.clone(),
                source,
            })?,
        ))),
        (None, None) => None,
    };
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let rejects = Arc::new(Semaphore::new(MAX_PENDING_REJECTS));
    let registry = Arc::new(Registry::default());
    let grace = config.grace;
    // A writer whose peer has taken nothing for half the idle timeout is
    // as useless as an idle connection, and may be evicted like one.
    let stalled_for = config.idle_timeout / 2;
    let service =
        Arc::new(FileService::over(root, HashCache::new(65_536)).with_uploads(config.uploads));
    service.start_prehashing(config.prehash);
    let shared = Arc::new(Shared {
        service,
        printer: if config.print_messages {
            Some(printer::Printer::start().map_err(ServerError::Stdout)?)
        } else {
            None
        },
        config,
        shutdown: shutdown.clone(),
    });
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(5);

    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d;
                // logs and message lines show them as plain IPv4.
                (
                    stream,
                    SocketAddr::new(peer.ip().to_canonical(), peer.port()),
                )
            }
            Err(e) => {
                // EMFILE and friends: wait a little rather than spin.
                warn!("accept failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // At the limit: make room by evicting the longest-waiting
            // connection, or answer busy. Bounded so a flood costs little.
            let Ok(reject_permit) = rejects.clone().try_acquire_owned() else {
                debug!(%peer, "over the limit and too many pending; closing");
                continue;
            };
            let (permits, registry, shared) = (permits.clone(), registry.clone(), shared.clone());
            tracker.spawn(async move {
                let _reject_permit = reject_permit;
                let permit = if registry.evict_one(stalled_for) {
                    tokio::time::timeout(EVICTION_WAIT, permits.acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    None
                };
                match permit {
                    Some(permit) => {
                        let handle = registry.register();
                        let _permit = permit;
                        serve_connection(stream, peer, &shared, &handle).await;
                    }
                    None => reject_busy(stream, peer, &shared).await,
                }
            });
            continue;
        };
        let handle = registry.register();
        let shared = shared.clone();
        tracker.spawn(async move {
            let _permit = permit;
            serve_connection(stream, peer, &shared, &handle).await;
        });
    }

    drop(listener);
    tracker.close();
    let in_flight = tracker.len();
    if in_flight > 0 {
        info!("shutting down: waiting up to {grace:?} for {in_flight} connection(s)");
    }
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!(
            "grace period over; dropping {} connection(s)",
            tracker.len()
        );
    }
    if let Some(p) = Arc::into_inner(shared).and_then(|s| s.printer) {
        p.finish(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// Serves one accepted connection: its PROXY header first if it comes
/// from a trusted proxy, TLS next if it starts with a TLS handshake, then
/// the front-end of its protocol (by ALPN, or by its first bytes).
async fn serve_connection(
    mut tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    handle: &ConnHandle,
) {
    let (peer, span) = match proxied_peer(&mut tcp, peer, shared, handle).await {
        Some(client) if client != peer => (client, info_span!("conn", peer = %client, via = %peer)),
        Some(_) => (peer, info_span!("conn", %peer)),
        None => {
            // Not served: a trusted proxy must say whom it relays.
            close_gracefully(crate::tls::Stream::Plain(tcp)).await;
            return;
        }
    };
    let mut ctx = ConnCtx::new(peer, shared, handle);
    async move {
        debug!("connected");
        let started = std::time::Instant::now();
        let mut stream = match open(tcp, &ctx).await {
            Ok(s) => s,
            Err(why) => {
                debug!("closed before its protocol was known: {why}");
                return;
            }
        };
        ctx.set_tls(stream.is_tls());
        let by_alpn = match stream.alpn() {
            Some(b"h2") => Some(sniff::Protocol::Http2),
            Some(b"http/1.1") => Some(sniff::Protocol::Http),
            Some(p) if p == crate::tls::ALPN_FERRY => Some(sniff::Protocol::Native),
            _ => None,
        };
        let (protocol, head) = match by_alpn {
            Some(p) => (p, Vec::new()),
            None => match sniff::sniff(&mut stream, &ctx).await {
                Ok(Some(x)) => x,
                Ok(None) => {
                    debug!("disconnected without sending anything");
                    return;
                }
                Err(why) => {
                    debug!("closed before its protocol was known: {why}");
                    return;
                }
            },
        };
        debug!(?protocol, tls = stream.is_tls(), "protocol");
        let summary = match protocol {
            sniff::Protocol::Native => frontend::native::serve(stream, &head, &ctx)
                .await
                .to_string(),
            sniff::Protocol::Tls => {
                // A handshake inside TLS, or one too late: nothing to serve.
                close_gracefully(stream).await;
                "TLS inside TLS refused".to_string()
            }
            sniff::Protocol::Http => frontend::http::serve(stream, head, &ctx).await,
            sniff::Protocol::Http2 => frontend::http::serve_h2(stream, head, &ctx).await,
            sniff::Protocol::Tutorial => frontend::tutorial::serve(stream, &head, &ctx).await,
        };
        debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "disconnected: {summary}"
        );
    }
    .instrument(span)
    .await;
}

/// The address that stands for the peer: the client a trusted proxy's
/// PROXY header names (its own for `LOCAL` and unspecified ones), or the
/// peer itself when the PROXY protocol is off or the peer is not trusted
/// (whose header, if any, then goes to sniffing and is refused there).
/// `None`: a trusted peer sent no valid header in time (logged here).
async fn proxied_peer(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    handle: &ConnHandle,
) -> Option<SocketAddr> {
    let Some(trusted) = shared.config.proxy_protocol.as_deref() else {
        return Some(peer);
    };
    if !proxy::is_trusted(trusted, peer.ip()) {
        return Some(peer);
    }
    // Bounded like any wait for a request: a proxy that connects and says
    // nothing holds a slot no longer than an idle client (and is evicted
    // like one).
    let read = proxy::read_header(tcp);
    match handle
        .wait(shared.config.idle_timeout, &shared.shutdown, read)
        .await
    {
        Ok(Ok(header)) => match header.client() {
            Some(client) => {
                let client = SocketAddr::new(client.ip().to_canonical(), client.port());
                debug!("PROXY header: client {client} via proxy {peer}");
                Some(client)
            }
            None => {
                debug!("PROXY header ({header:?}): the proxy's own connection, {peer}");
                Some(peer)
            }
        },
        Ok(Err(proxy::ReadError::Closed(0))) => {
            debug!(%peer, "trusted proxy closed without sending a PROXY header");
            None
        }
        Ok(Err(e)) => {
            warn!(%peer, "closing a connection from a trusted proxy: {e}");
            None
        }
        Err(stop) => {
            warn!(%peer, "closing a connection from a trusted proxy: no PROXY header ({stop})");
            None
        }
    }
}

/// Waits for the first byte (without taking it) and, if it opens a TLS
/// handshake, runs the handshake, bounded by the idle timeout.
///
/// # Errors
///
/// Why the connection ended before it could be served: no byte, TLS not
/// on, a failed or too slow handshake.
async fn open(tcp: TcpStream, ctx: &ConnCtx<'_>) -> Result<crate::tls::Stream, String> {
    let mut first = [0u8; 1];
    match ctx.wait(tcp.peek(&mut first)).await {
        Ok(Ok(0)) => return Err("disconnected without sending anything".into()),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("read failed: {e}")),
        Err(stop) => return Err(stop.to_string()),
    }
    if sniff::classify(&first) != Some(sniff::Protocol::Tls) {
        return Ok(crate::tls::Stream::Plain(tcp));
    }
    let Some(tls) = &ctx.config().tls else {
        close_gracefully(crate::tls::Stream::Plain(tcp)).await;
        return Err("a TLS handshake, but TLS is off (serve --tls)".into());
    };
    match ctx.wait(tls.acceptor().accept(tcp)).await {
        Ok(Ok(s)) => Ok(crate::tls::Stream::Tls(Box::new(s.into()))),
        Ok(Err(e)) => {
            info!("TLS handshake failed: {e}");
            Err(format!("TLS handshake failed: {e}"))
        }
        Err(stop) => Err(format!("TLS handshake: {stop}")),
    }
}

/// Why a connection stopped waiting for its next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Nothing arrived within the idle timeout.
    Timeout,
    /// Closed to make room for a new connection.
    Evicted,
    /// The server is shutting down.
    Shutdown,
}

impl Stop {
    /// The error frame telling a native client why it is being closed.
    pub(crate) fn frame(self) -> Frame {
        match self {
            Stop::Timeout => Frame::error(ErrorCode::Timeout, "idle timeout: closing connection"),
            Stop::Evicted => Frame::error(
                ErrorCode::Timeout,
                "idle connection closed to make room for another client",
            ),
            Stop::Shutdown => Frame::error(ErrorCode::ShuttingDown, "server shutting down"),
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Timeout => "idle timeout",
            Stop::Evicted => "evicted to make room",
            Stop::Shutdown => "server shutting down",
        })
    }
}

/// Tells an over-the-limit client `server busy` in its own protocol (a
/// native client an error frame, an HTTP client a 503; a tutorial client
/// nothing, as an error text would end up in its file) and closes. Behind
/// a trusted proxy, its PROXY header is read first (bounded by the same
/// second), so the log names the client and the sniffing sees its bytes.
async fn reject_busy(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let mut peer = peer;
    if let Some(trusted) = shared.config.proxy_protocol.as_deref() {
        if proxy::is_trusted(trusted, peer.ip()) {
            let read = proxy::read_header(&mut stream);
            match tokio::time::timeout(Duration::from_secs(1), read).await {
                Ok(Ok(header)) => {
                    if let Some(client) = header.client() {
                        peer = SocketAddr::new(client.ip().to_canonical(), client.port());
                    }
                }
                _ => {
                    debug!(%peer, "over the limit, and no PROXY header from a trusted proxy");
                    close_gracefully(crate::tls::Stream::Plain(stream)).await;
                    return;
                }
            }
        }
    }
    info!(%peer, "server busy: connection refused");
    let mut head = [0u8; 64];
    let n = match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut head)).await {
        Ok(Ok(n)) => n,
        _ => 0,
    };
    let head = &head[..n];
    let answer: Option<Vec<u8>> = match sniff::classify(head) {
        Some(sniff::Protocol::Native) => {
            let mut out = MAGIC.to_vec();
            Frame::error(ErrorCode::Busy, "server busy").encode(&mut out);
            Some(out)
        }
        // Undecided after one read is most likely a request line still on
        // its way: a browser or curl gets a 503 either way.
        Some(sniff::Protocol::Http) | None if !head.is_empty() => Some(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 12\r\nRetry-After: 2\r\nConnection: close\r\n\r\nserver busy\n"
                .to_vec(),
        ),
        _ => None,
    };
    if let Some(out) = answer {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
    }
    close_gracefully(crate::tls::Stream::Plain(stream)).await;
}
