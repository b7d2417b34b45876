//! Front-ends: one per protocol on the port, each translating its wire to
//! the [`FileService`] and back. They never import each other; what they
//! share is the per-connection context ([`ConnCtx`]) and two helpers for
//! ending a connection politely.
//!
//! * [`native`]: ferry's own framed protocol (docs/PROTOCOL.md);
//! * [`http`]: HTTP/1.1 for browsers, curl and wget;
//! * [`tutorial`]: the tutorial's protocol (a bare name in, the file out;
//!   or messages and acknowledgements).

pub(crate) mod http;
pub(crate) mod native;
pub(crate) mod tutorial;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::tls::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::registry::{ConnHandle, ConnState};
use super::{Config, Shared, Stop};
use crate::connection::WriteLimit;
use crate::service::FileService;

/// Longest [`close_gracefully`] waits for the peer to close its side.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What a front-end gets for one connection: who the peer is, the file
/// service, the settings, and the two things every wait and write on it
/// obeys (the idle timeout with eviction and shutdown, and the write limit).
pub(crate) struct ConnCtx<'a> {
    /// The peer's address (IPv4 shown as IPv4).
    pub(crate) peer: SocketAddr,
    shared: &'a Shared,
    handle: &'a ConnHandle,
    tls: bool,
}

impl<'a> ConnCtx<'a> {
    pub(crate) fn new(peer: SocketAddr, shared: &'a Shared, handle: &'a ConnHandle) -> Self {
        ConnCtx {
            peer,
            shared,
            handle,
            tls: false,
        }
    }

    /// Records that the connection is encrypted.
    pub(crate) fn set_tls(&mut self, tls: bool) {
        self.tls = tls;
    }

    /// Whether the connection is encrypted.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether clients must present a token.
    pub(crate) fn auth_required(&self) -> bool {
        self.shared.config.auth.is_some()
    }

    /// Judges a presented token (always granted when no token is set).
    pub(crate) fn authorize(&self, offered: Option<&[u8]>) -> crate::auth::Verdict {
        match &self.shared.config.auth {
            None => crate::auth::Verdict::Granted,
            Some(auth) => auth.verify(self.peer.ip(), offered),
        }
    }

    /// Whether this connection is plaintext on a port that requires TLS:
    /// its front-end tells it so and serves nothing.
    pub(crate) fn plaintext_refused(&self) -> bool {
        !self.tls && self.shared.config.tls.is_some() && !self.shared.config.allow_plaintext
    }

    /// The file service every request goes to.
    pub(crate) fn service(&self) -> &'a FileService {
        &self.shared.service
    }

    /// The file service, to hand to work that outlives a borrow (a
    /// response body, an archive being written).
    pub(crate) fn service_owned(&self) -> std::sync::Arc<FileService> {
        self.shared.service.clone()
    }

    /// The connection's state in the registry (idle, busy, evicted).
    pub(crate) fn activity(&self) -> std::sync::Arc<ConnState> {
        self.handle.state()
    }

    /// Cancelled when the server shuts down.
    pub(crate) fn shutdown(&self) -> &'a tokio_util::sync::CancellationToken {
        &self.shared.shutdown
    }

    /// Cancelled when this connection is evicted to make room.
    pub(crate) fn evict_token(&self) -> tokio_util::sync::CancellationToken {
        self.handle.evict_token()
    }

    /// The server's settings.
    pub(crate) fn config(&self) -> &'a Config {
        &self.shared.config
    }

    /// Runs `fut` (a read of the peer's next request) as an idle wait:
    /// bounded by the idle timeout, cut short by eviction and shutdown.
    ///
    /// # Errors
    ///
    /// The [`Stop`] reason if `fut` did not finish.
    pub(crate) async fn wait<F: Future>(&self, fut: F) -> Result<F::Output, Stop> {
        self.handle
            .wait(self.shared.config.idle_timeout, &self.shared.shutdown, fut)
            .await
    }

    /// The limit for every write: a peer that takes no byte for the idle
    /// timeout is dropped, and one that has taken none for half of it can
    /// be evicted to make room (see `Registry::evict_one`).
    pub(crate) fn write_limit(&self) -> WriteLimit {
        WriteLimit::new(self.shared.config.idle_timeout)
            .cancelled_by(self.handle.evict_token())
            .watched_by(self.handle.stall_watch())
    }

    /// What a write that waits for the peer reports to (for front-ends
    /// whose writes happen inside a library, HTTP).
    pub(crate) fn write_limit_watch(&self) -> std::sync::Arc<dyn crate::connection::StallWatch> {
        self.handle.stall_watch()
    }

    /// Prints a message received from the peer, if the server prints them
    /// (through the printing thread: a stuck stdout stalls only this
    /// connection).
    pub(crate) async fn print_message(&self, text: &[u8]) {
        if let Some(p) = &self.shared.printer {
            p.print(message_line(self.peer, text)).await;
        }
    }
}

/// Half-closes, then discards what the peer still sends (bounded in bytes
/// and time) before closing. Closing a socket that has unread input makes
/// the kernel send a reset, which can destroy the error frame we just sent
/// before the peer reads it.
pub(crate) async fn close_gracefully(mut stream: Stream) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        while let Ok(n) = stream.read(&mut buf).await {
            total += n;
            if n == 0 || total > 256 * 1024 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
}

/// A received message as one line of output, control characters escaped.
fn message_line(peer: SocketAddr, text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let line = crate::display::escape_controls(text.trim_end_matches(['\r', '\n']));
    format!("message from {peer}: {line}")
}
