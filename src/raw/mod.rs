//! The tutorial's raw protocol, both ways.
//!
//! The tutorial (a Python socket tutorial in Chinese: a message server, a
//! server looping over clients, a `> ` prompt client, a file downloader)
//! speaks plain TCP with no framing:
//!
//! * **file download**: the client sends a bare file name in one `send`
//!   (no terminator) and reads until the server closes; the server reads
//!   the name with one `recv(1024)`, streams the file and closes. For a
//!   missing file the server sends nothing and closes.
//! * **messages**: the client sends text; the server prints each chunk it
//!   receives until the client closes, and may answer `已收到你的信息`.
//!
//! [`server`] serves such clients (and netcat) on ferry's port: any
//! connection whose first byte is not the ferry magic's is raw.
//! [`client`] talks to the tutorial's servers (`ferry get --raw`,
//! `ferry say --raw`).

pub mod client;
pub(crate) mod server;

use std::time::Duration;

/// Longest raw file name, as the tutorial's `recv(1024)` reads.
pub const MAX_RAW_NAME: usize = 1024;

/// The tutorial's client sends its file name and then waits without closing
/// its side, so a name without newline ends after this long without new
/// bytes.
pub const NAME_QUIET: Duration = Duration::from_millis(100);
