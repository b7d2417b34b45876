//! The ferry wire protocol, as a pure codec: bytes in, frames out.
//!
//! Nothing in this module touches a socket, a file or a clock, so every part
//! of it can be unit-, property- and fuzz-tested on its own. The connection
//! layer ([`crate::connection`]) does the IO. The normative description of the
//! protocol is `docs/PROTOCOL.md`; the golden byte vectors in this module's
//! tests are taken from it, so the two cannot drift apart silently.
//!
//! In short:
//!
//! * Both sides open with the 8-byte [`MAGIC`], then exchange one frame each:
//!   the client's [`Frame::Hello`] and the server's [`Frame::Welcome`] (or a
//!   [`Frame::Error`] and a close).
//! * Every frame is `len: u32 BE | type: u8 | payload`, where `len` counts the
//!   type byte and the payload and is at most [`MAX_FRAME_LEN`].
//! * A file body is *not* framed: after a [`Frame::FileHeader`] announcing
//!   `length`, exactly `length` raw bytes follow, then a [`Frame::Trailer`]
//!   carrying the BLAKE3 hash of the whole file.

mod codes;
mod frame;
mod path;

pub use codes::{ErrorCode, UnknownErrorCode};
pub use frame::{
    check_magic, DecodeError, EntryKind, FileHeader, Frame, GetRequest, ListEntry, PutRequest,
    StatReply, Validator,
};
pub use path::{validate_name, validate_path};

/// The 8 bytes each side sends first.
///
/// `0x89` cannot start a UTF-8 string nor an HTTP request line, so a server
/// can tell a ferry client from the tutorial's bare file name and from HTTP by
/// the very first byte (the trick PNG's signature uses). `\r\n` catches line
/// ending translation by anything in between.
pub const MAGIC: [u8; 8] = *b"\x89FERRY\r\n";

/// The protocol version this implementation speaks.
pub const VERSION: u16 = 1;

/// Largest value of a frame's `len` field: type byte plus payload.
///
/// Headers are small; the cap is what keeps a hostile peer from making us
/// allocate. File bodies are not frames and are not limited by it.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Longest path, in bytes, a request may carry.
pub const MAX_PATH_LEN: usize = 4096;

/// Longest single path component (file name), in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Longest message a `Message` or `Ack` frame may carry, in bytes.
pub const MAX_MESSAGE_LEN: usize = 60 * 1024;

/// Longest human-readable error message, in bytes.
pub const MAX_ERROR_MESSAGE_LEN: usize = 1024;

/// Most entries one `List` answer may carry. A server refuses to list a
/// larger directory (`TooManyEntries`); a client stops reading a listing
/// that goes past it, so a hostile server cannot exhaust its memory.
pub const MAX_LIST_ENTRIES: usize = 262_144;

/// Length of a BLAKE3 hash.
pub const HASH_LEN: usize = 32;

/// Capability bits a peer may announce in `Hello`/`Welcome`.
///
/// Version 1 defines [`caps::TOKEN`] and [`caps::UPLOAD`]; unknown bits are ignored, so a
/// later client can ask for more and an older server simply does not echo the bit.
pub mod caps {
    /// No capabilities: what a v1 peer sends.
    pub const NONE: u64 = 0;
    /// `Hello` carries an access token after `caps` (`bytes token`); a
    /// server that checks tokens echoes the bit in `Welcome`.
    pub const TOKEN: u64 = 1;
    /// Uploads: a client asks for it before sending `Put`; a server that
    /// accepts uploads echoes it (one that does not, or predates them,
    /// does not).
    pub const UPLOAD: u64 = 2;
}

/// Largest file a `Put` may send inline (its body right after the frame,
/// without waiting for `PutReady`): small files pipeline, large ones ask
/// where to resume.
pub const MAX_INLINE_PUT: u64 = 1024 * 1024;

/// Longest access token a `Hello` may carry.
pub const MAX_TOKEN_LEN: usize = 256;

#[cfg(test)]
mod tests;
