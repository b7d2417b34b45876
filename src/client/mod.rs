//! The client: addresses, connecting, the native session ([`Client`]), and
//! downloads ([`download`]) that never leave a wrong file under its final
//! name.

mod download;
mod part;
mod ranges;
mod verify;

use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpStream;

pub use download::{
    download, download_job, download_to, local_name, receive, Downloaded, FileJob, Progress,
};
pub use part::PartFile;
pub use ranges::{download_split, split_ranges, MIN_SPLIT};
pub use verify::{GrowingHash, StreamHash};

use crate::connection::{Connection, ConnectionError};
use crate::protocol::{
    caps, DecodeError, ErrorCode, Frame, GetRequest, ListEntry, StatReply, MAGIC, MAX_MESSAGE_LEN,
    VERSION,
};

/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything that can go wrong on the client side. Each variant displays as
/// the one-line message a user sees.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `HOST[:PORT]` could not be parsed.
    #[error("invalid address {addr:?}: {why}")]
    BadAddress {
        /// What the user typed.
        addr: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// Nothing listens at the address.
    #[error("connection refused: {0}")]
    Refused(SocketAddr),
    /// Connecting failed otherwise.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried last.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The server reported an error (`no such file: x`, `server busy`...).
    #[error("{message}")]
    Remote {
        /// The wire code; see [`ErrorCode`].
        code: u16,
        /// The server's explanation.
        message: String,
    },
    /// The downloaded bytes do not hash to what the server announced.
    #[error("hash mismatch: {0}: the received bytes differ from the server's file")]
    HashMismatch(String),
    /// The peer is not a ferry server.
    #[error("{0} is not a ferry server (it answered something else)")]
    NotFerry(SocketAddr),
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection failed or closed mid-exchange.
    #[error("connection lost: {0}")]
    Connection(#[from] ConnectionError),
    /// A local file operation failed.
    #[error("{}: {source}", path.display())]
    Local {
        /// The local path.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
    /// Writing the downloaded bytes failed (disk full, closed pipe...).
    #[error("cannot write the download: {0}")]
    Output(#[source] io::Error),
    /// A remote path or name cannot be used.
    #[error("invalid path {path:?}: {why}")]
    InvalidPath {
        /// The path (escaped for display).
        path: String,
        /// Why.
        why: &'static str,
    },
    /// A raw-protocol server sent nothing back.
    #[error("server sent nothing for {0} (no such file?)")]
    Empty(String),
}

impl ClientError {
    /// The server's error code, if this is a remote error.
    pub fn remote_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Remote { code, .. } => ErrorCode::try_from(*code).ok(),
            _ => None,
        }
    }

    /// Whether the connection is unusable after this error (a new one is
    /// needed for further requests).
    pub fn breaks_connection(&self) -> bool {
        match self {
            ClientError::Remote { code, .. } => {
                ErrorCode::try_from(*code).map_or(true, ErrorCode::is_fatal)
            }
            ClientError::Connection(_) | ClientError::Protocol(_) | ClientError::NotFerry(_) => {
                true
            }
            _ => false,
        }
    }
}

/// A server address as the user gives it: `HOST[:PORT]`, where HOST is a
/// name, an IPv4 address, or an IPv6 address in brackets (or bare, without
/// a port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or address, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl HostPort {
    /// Parses `HOST[:PORT]`, using `default_port` when none is given.
    ///
    /// # Errors
    ///
    /// [`ClientError::BadAddress`] for an empty host, a bad port or
    /// unbalanced brackets.
    pub fn parse(s: &str, default_port: u16) -> Result<Self, ClientError> {
        let bad = |why| ClientError::BadAddress {
            addr: s.to_string(),
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
            });
        }
        if s.parse::<Ipv6Addr>().is_ok() {
            return Ok(HostPort {
                host: s.to_string(),
                port: default_port,
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
    let mut last = None;
    for sa in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(sa)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                last = Some(ClientError::Refused(sa));
            }
            Ok(Err(source)) => last = Some(ClientError::Connect { addr: sa, source }),
            Err(_) => {
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

/// A native ferry session: connected, hello exchanged.
#[derive(Debug)]
pub struct Client {
    conn: Connection<TcpStream>,
    peer: SocketAddr,
}

impl Client {
    /// Connects and exchanges hellos.
    ///
    /// # Errors
    ///
    /// Connection failures, `NotFerry`, or the server's refusal (e.g.
    /// `server busy`) as `Remote`.
    pub async fn connect(addr: &HostPort) -> Result<Self, ClientError> {
        let stream = connect(addr).await?;
        Self::handshake(stream).await
    }

    /// Exchanges hellos over an already connected stream.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    pub async fn handshake(stream: TcpStream) -> Result<Self, ClientError> {
        let peer = stream
            .peer_addr()
            .map_err(|e| ClientError::Connection(e.into()))?;
        let mut conn = Connection::new(stream);
        conn.queue_raw(&MAGIC);
        conn.queue(&Frame::Hello {
            version: VERSION,
            caps: caps::NONE,
        });
        conn.flush().await.map_err(ConnectionError::from)?;
        match conn.read_magic().await {
            Ok(true) => {}
            Ok(false) => {
                return Err(ClientError::Protocol(format!(
                    "{peer} closed the connection without answering (not a ferry server, or raw clients refused?)"
                )))
            }
            Err(ConnectionError::Decode(DecodeError::BadMagic)) => {
                return Err(ClientError::NotFerry(peer))
            }
            Err(e) => return Err(e.into()),
        }
        let mut client = Client { conn, peer };
        match client.read_reply().await? {
            Frame::Welcome { version, .. } if version >= 1 && version <= VERSION => Ok(client),
            Frame::Welcome { version, .. } => Err(ClientError::Protocol(format!(
                "server chose unsupported version {version}"
            ))),
            other => Err(unexpected(&other, "Welcome")),
        }
    }

    /// The framed connection, for receiving a body without copies.
    pub(crate) fn connection(&mut self) -> &mut Connection<TcpStream> {
        &mut self.conn
    }

    /// The server's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Reads the next frame; an `Error` frame becomes `Remote`, a clean EOF
    /// becomes a connection error.
    ///
    /// # Errors
    ///
    /// `Remote` for an error frame, `Connection` for a broken connection.
    pub async fn read_reply(&mut self) -> Result<Frame, ClientError> {
        match self.conn.read_frame().await? {
            Some(Frame::Error { code, message }) => Err(ClientError::Remote { code, message }),
            Some(frame) => Ok(frame),
            None => Err(ConnectionError::UnexpectedEof("an answer (server closed)").into()),
        }
    }

    /// Queues a GET without sending it (to pipeline several).
    ///
    /// # Errors
    ///
    /// `InvalidPath` if the path exceeds the protocol's limit.
    pub fn queue_get(&mut self, req: GetRequest) -> Result<(), ClientError> {
        self.queue_frame(Frame::Get(req))
    }

    fn queue_frame(&mut self, frame: Frame) -> Result<(), ClientError> {
        frame
            .check_limits()
            .map_err(|why| ClientError::InvalidPath {
                path: match &frame {
                    Frame::Get(g) => crate::display::escape_bytes(&g.path),
                    Frame::Stat { path } | Frame::List { path } => {
                        crate::display::escape_bytes(path)
                    }
                    _ => String::new(),
                },
                why,
            })?;
        self.conn.queue(&frame);
        Ok(())
    }

    /// Sends everything queued.
    ///
    /// # Errors
    ///
    /// The socket's error.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.conn.flush().await.map_err(ConnectionError::from)?;
        Ok(())
    }

    /// Reads a body of `len` bytes; see [`Connection::read_body`].
    ///
    /// # Errors
    ///
    /// As [`Connection::read_body`].
    pub async fn read_body<F>(
        &mut self,
        len: u64,
        buf: &mut [u8],
        sink: F,
    ) -> Result<(), ConnectionError>
    where
        F: FnMut(&[u8]) -> io::Result<()>,
    {
        self.conn.read_body(len, buf, sink).await
    }

    /// Describes a remote path.
    ///
    /// # Errors
    ///
    /// `Remote` if the server refuses (e.g. `no such file: x`).
    pub async fn stat(&mut self, path: &str) -> Result<StatReply, ClientError> {
        self.send_request(Frame::Stat {
            path: path.as_bytes().to_vec(),
        })
        .await?;
        match self.read_reply().await? {
            Frame::StatReply(s) => Ok(s),
            other => Err(unexpected(&other, "StatReply")),
        }
    }

    /// Lists a remote directory (`""` for the root).
    ///
    /// # Errors
    ///
    /// `Remote` if the server refuses.
    pub async fn list(&mut self, path: &str) -> Result<Vec<ListEntry>, ClientError> {
        self.queue_list(path)?;
        self.flush().await?;
        self.read_list().await
    }

    /// Queues a LIST without sending it (to pipeline several).
    ///
    /// # Errors
    ///
    /// `InvalidPath` if the path exceeds the protocol's limit.
    pub fn queue_list(&mut self, path: &str) -> Result<(), ClientError> {
        self.queue_frame(Frame::List {
            path: path.as_bytes().to_vec(),
        })
    }

    /// Reads the answer to a LIST.
    ///
    /// # Errors
    ///
    /// `Remote` if the server refused it, `Protocol` for a malformed answer.
    pub async fn read_list(&mut self) -> Result<Vec<ListEntry>, ClientError> {
        let mut out = Vec::new();
        loop {
            match self.read_reply().await? {
                Frame::ListEntry(e) => out.push(e),
                Frame::ListEnd { count } if count == out.len() as u64 => return Ok(out),
                Frame::ListEnd { count } => {
                    return Err(ClientError::Protocol(format!(
                        "listing announced {count} entries but sent {}",
                        out.len()
                    )))
                }
                other => return Err(unexpected(&other, "ListEntry")),
            }
        }
    }

    /// Sends a message and returns the server's acknowledgement.
    ///
    /// # Errors
    ///
    /// `Protocol` if the message exceeds the protocol's limit, or the
    /// server's error.
    pub async fn message(&mut self, text: &[u8]) -> Result<Vec<u8>, ClientError> {
        if text.len() > MAX_MESSAGE_LEN {
            return Err(ClientError::Protocol(format!(
                "message of {} bytes exceeds the limit of {MAX_MESSAGE_LEN}",
                text.len()
            )));
        }
        self.send_request(Frame::Message {
            text: text.to_vec(),
        })
        .await?;
        match self.read_reply().await? {
            Frame::Ack { text } => Ok(text),
            other => Err(unexpected(&other, "Ack")),
        }
    }

    async fn send_request(&mut self, frame: Frame) -> Result<(), ClientError> {
        self.queue_frame(frame)?;
        self.flush().await
    }
}

fn unexpected(frame: &Frame, wanted: &str) -> ClientError {
    ClientError::Protocol(format!("expected {wanted}, got {}", frame.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        let p = |s| HostPort::parse(s, 8000);
        assert_eq!(
            p("localhost").unwrap(),
            HostPort {
                host: "localhost".into(),
                port: 8000
            }
        );
        assert_eq!(
            p("127.0.0.1:9").unwrap(),
            HostPort {
                host: "127.0.0.1".into(),
                port: 9
            }
        );
        assert_eq!(
            p("[::1]:80").unwrap(),
            HostPort {
                host: "::1".into(),
                port: 80
            }
        );
        assert_eq!(
            p("[::1]").unwrap(),
            HostPort {
                host: "::1".into(),
                port: 8000
            }
        );
        assert_eq!(
            p("::1").unwrap(),
            HostPort {
                host: "::1".into(),
                port: 8000
            }
        );
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
}
