//! The native session: one connection, hello exchanged, requests and their
//! answers. Everything the server says that a user may see is escaped
//! here, as it arrives.

use std::io;
use std::net::SocketAddr;

use crate::tls::Stream;
use tracing::debug;

use super::{connect_stream, ClientError, HostPort};
use crate::connection::{Connection, ConnectionError};
use crate::display::escape_controls;
use crate::protocol::{
    caps, DecodeError, Frame, GetRequest, ListEntry, StatReply, MAGIC, MAX_LIST_ENTRIES,
    MAX_MESSAGE_LEN, VERSION,
};

/// A native ferry session: connected, hello sent (and, once anything has
/// been read, the server's welcome received).
#[derive(Debug)]
pub struct Client {
    conn: Connection<Stream>,
    peer: SocketAddr,
    /// The capabilities the server granted.
    caps: u64,
    /// Whether the server's `Welcome` has been read.
    welcomed: bool,
}

impl Client {
    /// Connects and exchanges hellos.
    ///
    /// # Errors
    ///
    /// Connection failures, `NotFerry`, or the server's refusal (e.g.
    /// `server busy`) as `Remote`.
    pub async fn connect(addr: &HostPort) -> Result<Self, ClientError> {
        let stream = connect_stream(addr).await?;
        Self::handshake(stream, addr.token.as_ref()).await
    }

    /// Connects and queues the hello without waiting for the server's
    /// answer: the first request leaves with it, a round trip sooner, and
    /// the welcome is read before that request's answer. A refusal (busy,
    /// token, not ferry) is then the first request's error. The server
    /// reads a refused connection to its end before closing, so the
    /// refusal is not lost to a reset.
    ///
    /// # Errors
    ///
    /// Connection failures (TLS included).
    pub async fn connect_pipelined(addr: &HostPort) -> Result<Self, ClientError> {
        let stream = connect_stream(addr).await?;
        Self::start(stream, addr.token.as_ref())
    }

    /// Exchanges hellos over an already connected stream, presenting
    /// `token` if given.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    pub async fn handshake(
        stream: Stream,
        token: Option<&crate::auth::Secret>,
    ) -> Result<Self, ClientError> {
        let mut client = Self::start(stream, token)?;
        client.flush().await?;
        client.welcome().await?;
        Ok(client)
    }

    /// Queues the magic and the hello.
    fn start(stream: Stream, token: Option<&crate::auth::Secret>) -> Result<Self, ClientError> {
        let peer = stream
            .tcp()
            .peer_addr()
            .map_err(|e| ClientError::Connection(e.into()))?;
        let mut conn = Connection::new(stream);
        conn.queue_raw(&MAGIC);
        conn.queue(&Frame::Hello {
            version: VERSION,
            caps: caps::UPLOAD
                | if token.is_some() {
                    caps::TOKEN
                } else {
                    caps::NONE
                },
            token: token.map(|t| t.expose().as_bytes().to_vec()),
        });
        Ok(Client {
            conn,
            peer,
            caps: caps::NONE,
            welcomed: false,
        })
    }

    /// Reads the server's magic and `Welcome` (the hello must be sent).
    async fn welcome(&mut self) -> Result<(), ClientError> {
        let peer = self.peer;
        match self.conn.read_magic().await {
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
        match self.next_frame().await? {
            Frame::Welcome { version, caps } if version >= 1 && version <= VERSION => {
                self.caps = caps;
                self.welcomed = true;
                debug!(%peer, "hello exchanged");
                Ok(())
            }
            Frame::Welcome { version, .. } => Err(ClientError::Protocol(format!(
                "server chose unsupported version {version}"
            ))),
            other => Err(unexpected(&other, "Welcome")),
        }
    }

    /// The framed connection, for receiving a body without copies (after
    /// its header was read, so past the welcome).
    pub(crate) fn connection(&mut self) -> &mut Connection<Stream> {
        debug_assert!(self.welcomed, "raw reads before the welcome");
        &mut self.conn
    }

    /// Whether the server said it accepts uploads (known once the welcome
    /// was read: always after [`Client::connect`]).
    pub fn accepts_uploads(&self) -> bool {
        debug_assert!(self.welcomed, "capabilities asked before the welcome");
        self.caps & caps::UPLOAD != 0
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
        if !self.welcomed {
            self.welcome().await?;
        }
        self.next_frame().await
    }

    async fn next_frame(&mut self) -> Result<Frame, ClientError> {
        match self.conn.read_frame().await? {
            // Escaped now: the message is the server's, and may be meant to
            // reach a terminal (colours, titles, cursor moves).
            Some(Frame::Error { code, message }) => Err(ClientError::Remote {
                code,
                message: escape_controls(&message).into_owned(),
            }),
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
        debug!(
            path = %crate::display::escape_bytes(&req.path),
            offset = req.offset,
            length = ?req.length,
            resume = req.if_unchanged.is_some(),
            "GET"
        );
        self.queue_frame(Frame::Get(req))
    }

    /// Queues any request after checking it against the protocol's limits.
    pub(crate) fn queue_frame(&mut self, frame: Frame) -> Result<(), ClientError> {
        frame
            .check_limits()
            .map_err(|why| ClientError::InvalidPath {
                path: match &frame {
                    Frame::Get(g) => crate::display::escape_bytes(&g.path),
                    Frame::Stat { path } | Frame::List { path } => {
                        crate::display::escape_bytes(path)
                    }
                    Frame::Put(p) => crate::display::escape_bytes(&p.path),
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
        debug_assert!(self.welcomed, "a body read before the welcome");
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
    /// `Remote` if the server refused it, `Protocol` for a malformed answer
    /// or one of more than [`MAX_LIST_ENTRIES`] entries.
    pub async fn read_list(&mut self) -> Result<Vec<ListEntry>, ClientError> {
        let mut out = Vec::new();
        self.read_list_each(|e| {
            out.push(e);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Reads the answer to a LIST, handing each entry to `each` as it
    /// arrives (so a long listing costs no memory), and returns the count.
    ///
    /// # Errors
    ///
    /// As [`Client::read_list`], or `Output` with `each`'s error.
    pub async fn read_list_each(
        &mut self,
        mut each: impl FnMut(ListEntry) -> io::Result<()>,
    ) -> Result<u64, ClientError> {
        let mut n = 0u64;
        loop {
            match self.read_reply().await? {
                Frame::ListEntry(_) if n == MAX_LIST_ENTRIES as u64 => {
                    return Err(ClientError::Protocol(format!(
                        "the server's listing goes past {MAX_LIST_ENTRIES} entries, the most one listing may have"
                    )))
                }
                Frame::ListEntry(e) => {
                    n += 1;
                    each(e).map_err(ClientError::Output)?;
                }
                Frame::ListEnd { count } if count == n => return Ok(n),
                Frame::ListEnd { count } => {
                    return Err(ClientError::Protocol(format!(
                        "listing announced {count} entries but sent {n}"
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
