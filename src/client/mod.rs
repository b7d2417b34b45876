//! The client: addresses ([`addr`]), the native session ([`Client`]),
//! downloads that never leave a wrong file under its final name (one
//! stream in [`download`], split over connections in [`ranges`], whole
//! trees in [`tree`]), and where they are saved ([`output`]).
//!
//! One resume policy serves all of them: a `.part` beside the target
//! records the server file's version and what is on disk ([`PartFile`]);
//! a later run continues it if that version is unchanged, starts over if
//! not, and says which it did.

mod addr;
pub mod board;
pub mod download;
pub mod http;
pub mod output;
mod part;
pub mod ranges;
mod session;
mod space;
pub mod tree;
pub mod tutorial;
pub mod upload;
mod verify;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

pub use addr::{connect, connect_stream, HostPort, Target};
pub use download::{
    download_job, download_to, fetch_file, local_name, receive, Bar, Downloaded, FileJob, Outcome,
    Progress, Restart,
};
pub use output::{Destination, OutputDir};
pub use part::{Have, PartFile, RangeProgress};
pub use ranges::{download_split, split_ranges, MIN_SPLIT};
pub use session::Client;
pub use verify::{GrowingHash, StreamHash};

use crate::connection::ConnectionError;
use crate::protocol::ErrorCode;

/// Starts `n` tasks made by `open` (the connections of a split download's
/// lanes, opened ahead of need); each is aborted if its handle is dropped
/// unused.
pub(crate) fn open_ahead<T, F>(
    n: usize,
    open: impl Fn() -> F,
) -> Vec<tokio_util::task::AbortOnDropHandle<T>>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    (0..n)
        .map(|_| tokio_util::task::AbortOnDropHandle::new(tokio::spawn(open())))
        .collect()
}

/// Most entries a tree download walks: past it, the download stops with an
/// error instead of letting a hostile (or enormous) server exhaust memory.
pub const MAX_TREE_ENTRIES: usize = 1 << 20;

/// How downloads behave, shared by every kind of download.
#[derive(Debug, Clone)]
pub struct GetOptions {
    /// Progress bars.
    pub progress: Progress,
    /// Check each file's BLAKE3 hash (see [`FileJob::verify`]).
    pub verify: bool,
    /// Replace existing files that differ from the server's.
    pub force: bool,
    /// Cancelled on Ctrl-C: downloads stop, keep their `.part`, and fail
    /// with [`ClientError::Interrupted`].
    pub cancel: CancellationToken,
}

impl Default for GetOptions {
    fn default() -> Self {
        GetOptions {
            progress: Progress::Auto,
            verify: true,
            force: false,
            cancel: CancellationToken::new(),
        }
    }
}

/// Everything that can go wrong on the client side. Each variant displays as
/// the one-line message a user sees; text that came from the server is
/// already escaped for the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `HOST[:PORT]` could not be parsed.
    #[error("invalid address {addr:?}: {why}")]
    BadAddress {
        /// What the user typed (escaped).
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
        /// The server's explanation, escaped for display.
        message: String,
    },
    /// An HTTP server's refusal or failure (`HTTP 404 Not Found`), or a
    /// redirect that went nowhere.
    #[error("{0}")]
    Http(String),
    /// The downloaded bytes do not hash to what the server announced.
    #[error("hash mismatch: {0}: the received bytes differ from the server's file")]
    HashMismatch(String),
    /// TLS failed: the server's certificate was not trusted (the reason
    /// names the pin, CA or `known_hosts` line), or the handshake failed.
    #[error("{0}")]
    Tls(String),
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
    #[error("{}: {source}", crate::display::escape_controls(&path.display().to_string()))]
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
    #[error("invalid path: {why}: {path}")]
    InvalidPath {
        /// The path (escaped for display).
        path: String,
        /// Why.
        why: &'static str,
    },
    /// A raw-protocol server sent nothing back.
    #[error("server sent nothing for {0} (no such file?)")]
    Empty(String),
    /// The target exists and is not ferry's copy of the server's file.
    #[error("{} already exists and differs from the server's file (use --force to replace it)",
        crate::display::escape_controls(&.0.display().to_string()))]
    Exists(PathBuf),
    /// The output file system has too little room for the download.
    #[error("not enough space for {}: it needs {} more, {} free",
        crate::display::escape_controls(&path.display().to_string()),
        crate::display::human_bytes(*need), crate::display::human_bytes(*free))]
    NoSpace {
        /// The part file.
        path: PathBuf,
        /// Bytes still to write.
        need: u64,
        /// Bytes the file system has free for us.
        free: u64,
    },
    /// Ctrl-C: the download stopped, what it had is kept.
    #[error("interrupted: {}", interrupted_detail(part.as_deref(), *kept, *total))]
    Interrupted {
        /// Where the bytes received so far are kept (`None`: nowhere, as
        /// for `-o -`).
        part: Option<PathBuf>,
        /// Bytes kept.
        kept: u64,
        /// The file's size.
        total: u64,
    },
}

fn interrupted_detail(part: Option<&std::path::Path>, kept: u64, total: u64) -> String {
    match part {
        Some(p) => format!(
            "kept {} of {} in {}; run the same command again to resume",
            crate::display::human_bytes(kept),
            crate::display::human_bytes(total),
            crate::display::escape_controls(&p.display().to_string())
        ),
        None => "nothing was kept".to_string(),
    }
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
            ClientError::Connection(_)
            | ClientError::Protocol(_)
            | ClientError::NotFerry(_)
            | ClientError::Interrupted { .. } => true,
            _ => false,
        }
    }

    /// Whether no later request to the same server can succeed either (it
    /// is not there, or the user stopped us).
    pub fn stops_everything(&self) -> bool {
        if let ClientError::Remote { code, .. } = self {
            return *code == ErrorCode::TlsRequired as u16
                || *code == ErrorCode::Unauthorized as u16;
        }
        matches!(
            self,
            ClientError::Refused(_)
                | ClientError::Resolve { .. }
                | ClientError::Connect { .. }
                | ClientError::Tls(_)
                | ClientError::Interrupted { .. }
        )
    }
}
