//! Status codes carried by [`super::Frame::Error`].

use std::fmt;

/// Why a request (or a whole connection) failed.
///
/// The numeric values are part of the wire protocol and never change meaning.
/// Codes below 100 are request-level: the connection stays usable. Codes from
/// 100 up are connection-level: the sender closes the connection after the
/// error frame.
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The path does not exist under the served root.
    NotFound = 1,
    /// A file was asked for but the path is a directory.
    IsADirectory = 2,
    /// A directory was asked for but the path is not one.
    NotADirectory = 3,
    /// The path is malformed: absolute, `..`, empty component, NUL, `\`,
    /// invalid UTF-8, too long.
    InvalidPath = 4,
    /// The path resolves outside the served root (e.g. through a symlink).
    OutsideRoot = 5,
    /// The server may not read the path.
    PermissionDenied = 6,
    /// The path is neither a regular file nor a directory (FIFO, device...).
    NotAFile = 7,
    /// The requested offset lies beyond the end of the file.
    RangeNotSatisfiable = 8,
    /// Any other IO failure on the server.
    Io = 9,
    /// A `List` of a directory with more entries than one listing may
    /// carry ([`crate::protocol::MAX_LIST_ENTRIES`]).
    TooManyEntries = 10,
    /// An upload's target exists and the server does not overwrite.
    Exists = 11,
    /// An upload is larger than the server accepts.
    TooLarge = 12,
    /// The server accepts no uploads.
    ReadOnly = 13,
    /// An upload's bytes do not match its hash; nothing was saved.
    Mismatch = 14,
    /// The server's disk is full; nothing was saved.
    NoSpace = 15,
    /// Another upload of the same file is in progress.
    Conflict = 16,
    /// The server is at its connection limit.
    Busy = 100,
    /// No protocol version in common.
    UnsupportedVersion = 101,
    /// The peer sent bytes that are not a valid frame.
    BadFrame = 102,
    /// The peer sent a frame that is valid but not allowed here.
    UnexpectedFrame = 103,
    /// The peer was too slow sending a frame, or idle too long.
    Timeout = 104,
    /// The server is shutting down.
    ShuttingDown = 105,
    /// The server requires TLS and the connection is plaintext.
    TlsRequired = 106,
    /// The server requires a token, and none or a wrong one was given.
    Unauthorized = 107,
}

/// A code this implementation does not know (sent by a newer peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0}")]
pub struct UnknownErrorCode(pub u16);

impl ErrorCode {
    /// Whether the connection is closed after an error with this code.
    pub fn is_fatal(self) -> bool {
        self as u16 >= 100
    }

    /// Every defined code, for exhaustive tests.
    pub const ALL: [ErrorCode; 24] = [
        ErrorCode::NotFound,
        ErrorCode::IsADirectory,
        ErrorCode::NotADirectory,
        ErrorCode::InvalidPath,
        ErrorCode::OutsideRoot,
        ErrorCode::PermissionDenied,
        ErrorCode::NotAFile,
        ErrorCode::RangeNotSatisfiable,
        ErrorCode::Io,
        ErrorCode::TooManyEntries,
        ErrorCode::Exists,
        ErrorCode::TooLarge,
        ErrorCode::ReadOnly,
        ErrorCode::Mismatch,
        ErrorCode::NoSpace,
        ErrorCode::Conflict,
        ErrorCode::Busy,
        ErrorCode::UnsupportedVersion,
        ErrorCode::BadFrame,
        ErrorCode::UnexpectedFrame,
        ErrorCode::Timeout,
        ErrorCode::ShuttingDown,
        ErrorCode::TlsRequired,
        ErrorCode::Unauthorized,
    ];
}

impl TryFrom<u16> for ErrorCode {
    type Error = UnknownErrorCode;

    fn try_from(value: u16) -> Result<Self, Self::Error> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| *c as u16 == value)
            .ok_or(UnknownErrorCode(value))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorCode::NotFound => "no such file",
            ErrorCode::IsADirectory => "is a directory",
            ErrorCode::NotADirectory => "not a directory",
            ErrorCode::InvalidPath => "invalid path",
            ErrorCode::OutsideRoot => "outside the served root",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::NotAFile => "not a regular file",
            ErrorCode::RangeNotSatisfiable => "offset beyond end of file",
            ErrorCode::Io => "server I/O error",
            ErrorCode::TooManyEntries => "directory too large to list",
            ErrorCode::Exists => "already exists",
            ErrorCode::TooLarge => "over the upload limit",
            ErrorCode::ReadOnly => "uploads are off",
            ErrorCode::Mismatch => "hash mismatch",
            ErrorCode::NoSpace => "server disk full",
            ErrorCode::Conflict => "upload in progress",
            ErrorCode::Busy => "server busy",
            ErrorCode::UnsupportedVersion => "unsupported protocol version",
            ErrorCode::BadFrame => "malformed frame",
            ErrorCode::UnexpectedFrame => "unexpected frame",
            ErrorCode::Timeout => "timed out",
            ErrorCode::ShuttingDown => "server shutting down",
            ErrorCode::TlsRequired => "TLS required",
            ErrorCode::Unauthorized => "token required or wrong",
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_is_typed() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::try_from(c as u16), Ok(c));
        }
        assert_eq!(ErrorCode::try_from(0), Err(UnknownErrorCode(0)));
        assert_eq!(ErrorCode::try_from(999), Err(UnknownErrorCode(999)));
        assert!(ErrorCode::Busy.is_fatal());
        assert!(!ErrorCode::NotFound.is_fatal());
    }
}
