//! Frames: their types, their encoding and their decoding.

use super::{
    ErrorCode, HASH_LEN, MAGIC, MAX_ERROR_MESSAGE_LEN, MAX_FRAME_LEN, MAX_MESSAGE_LEN,
    MAX_NAME_LEN, MAX_PATH_LEN,
};

/// Why bytes could not be decoded into a frame.
///
/// "Not enough bytes yet" is not an error: [`Frame::parse`] returns
/// `Ok(None)` for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The stream does not start with [`MAGIC`].
    #[error("bad magic: not a ferry peer")]
    BadMagic,
    /// A frame's `len` field exceeds [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    TooLarge(u32),
    /// A frame's `len` field is zero (there is not even a type byte).
    #[error("empty frame")]
    Empty,
    /// The type byte names no frame.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The payload ended before a field did.
    #[error("truncated {0} frame")]
    Truncated(&'static str),
    /// The payload has bytes after its last field.
    #[error("{0} frame has trailing bytes")]
    TrailingBytes(&'static str),
    /// A field holds a value the protocol does not allow.
    #[error("invalid field in {frame} frame: {what}")]
    InvalidField {
        /// The frame being decoded.
        frame: &'static str,
        /// What was wrong.
        what: &'static str,
    },
}

/// Checks whether `buf` starts with [`MAGIC`].
///
/// Returns `Ok(None)` while fewer than 8 bytes are available and every
/// available byte matches.
///
/// # Errors
///
/// [`DecodeError::BadMagic`] as soon as a byte differs.
pub fn check_magic(buf: &[u8]) -> Result<Option<()>, DecodeError> {
    let n = buf.len().min(MAGIC.len());
    if buf[..n] != MAGIC[..n] {
        return Err(DecodeError::BadMagic);
    }
    Ok((n == MAGIC.len()).then_some(()))
}

/// What a directory entry or a stat result is.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File = 1,
    /// A directory.
    Dir = 2,
    /// A symbolic link that could not be followed within the root.
    Symlink = 3,
    /// Anything else (FIFO, socket, device).
    Other = 4,
}

impl EntryKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => EntryKind::File,
            2 => EntryKind::Dir,
            3 => EntryKind::Symlink,
            4 => EntryKind::Other,
            _ => return None,
        })
    }
}

/// A resume condition: serve from the requested offset only if the file still
/// has this size and modification time; otherwise serve it from offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validator {
    /// File size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// A request for (part of) a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRequest {
    /// Path relative to the served root, `/`-separated.
    pub path: Vec<u8>,
    /// First byte wanted.
    pub offset: u64,
    /// How many bytes; `None` means to the end of the file.
    pub length: Option<u64>,
    /// Resume condition; see [`Validator`].
    pub if_unchanged: Option<Validator>,
}

/// The server's answer to a GET, followed by `length` raw body bytes and a
/// [`Frame::Trailer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// Offset of the first body byte. Equals the requested offset, or 0 when
    /// the request's validator did not match (the file changed).
    pub offset: u64,
    /// Number of body bytes that follow.
    pub length: u64,
    /// Size of the whole file.
    pub size: u64,
    /// Modification time of the file, ns since the epoch.
    pub mtime_ns: i64,
}

/// The server's answer to a STAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatReply {
    /// What the path is.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// The file's BLAKE3 hash, if the server already knows it.
    pub hash: Option<[u8; HASH_LEN]>,
}

/// One entry of a LIST answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The entry's name (one component, no `/`).
    pub name: Vec<u8>,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
}

/// A request to upload a file (see `docs/PROTOCOL.md`, "Uploads").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRequest {
    /// Target path relative to the served root, `/`-separated.
    pub path: Vec<u8>,
    /// The whole file's size.
    pub size: u64,
    /// The client's modification time of the file, ns since the epoch:
    /// given to the saved file, and part of what identifies an upload to
    /// resume.
    pub mtime_ns: i64,
    /// The body follows at once, from offset 0, with no `PutReady`
    /// (allowed up to [`MAX_INLINE_PUT`](super::MAX_INLINE_PUT) bytes).
    pub inline: bool,
}

/// Every frame of protocol version 1, both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → server, once, right after the magic.
    Hello {
        /// Highest protocol version the client speaks.
        version: u16,
        /// Capability bits the client would like.
        caps: u64,
        /// The access token, present exactly when `caps` has
        /// [`caps::TOKEN`](super::caps::TOKEN).
        token: Option<Vec<u8>>,
    },
    /// Server → client, once, answering `Hello`.
    Welcome {
        /// The version both will speak.
        version: u16,
        /// The capabilities granted (a subset of those asked for).
        caps: u64,
    },
    /// Client → server: read (part of) a file.
    Get(GetRequest),
    /// Client → server: describe a path.
    Stat {
        /// Path relative to the served root.
        path: Vec<u8>,
    },
    /// Client → server: list a directory.
    List {
        /// Path relative to the served root; empty for the root itself.
        path: Vec<u8>,
    },
    /// Client → server: upload a file; answered with `PutReady` (unless
    /// inline), then the body is sent, then `PutEnd`.
    Put(PutRequest),
    /// Client → server: ends an upload's body.
    PutEnd {
        /// BLAKE3 hash of the whole file.
        hash: [u8; HASH_LEN],
    },
    /// Client → server: a message to print; answered with `Ack`.
    Message {
        /// The message, ideally UTF-8.
        text: Vec<u8>,
    },
    /// Server → client: a GET's header.
    FileHeader(FileHeader),
    /// Server → client: ends a file body.
    Trailer {
        /// BLAKE3 hash of the *whole* file (not only the range sent).
        hash: [u8; HASH_LEN],
    },
    /// Server → client: a STAT's answer.
    StatReply(StatReply),
    /// Server → client: one directory entry of a LIST answer.
    ListEntry(ListEntry),
    /// Server → client: ends a LIST answer.
    ListEnd {
        /// How many `ListEntry` frames preceded it.
        count: u64,
    },
    /// Server → client: send the upload's body from `offset` (what the
    /// server already holds of it).
    PutReady {
        /// Bytes the server holds; the body is the file from here.
        offset: u64,
    },
    /// Server → client: the upload is saved under its name, verified.
    PutDone {
        /// Its size.
        size: u64,
        /// Whether it replaced an existing file.
        replaced: bool,
    },
    /// Server → client: acknowledges a `Message`.
    Ack {
        /// The acknowledgement text.
        text: Vec<u8>,
    },
    /// Either direction: a request or the connection failed.
    Error {
        /// An [`ErrorCode`] value; kept raw so a newer peer's codes decode.
        code: u16,
        /// A human-readable explanation, UTF-8.
        message: String,
    },
}

mod ty {
    pub const HELLO: u8 = 0x01;
    pub const GET: u8 = 0x02;
    pub const STAT: u8 = 0x03;
    pub const LIST: u8 = 0x04;
    pub const MESSAGE: u8 = 0x05;
    pub const PUT: u8 = 0x06;
    pub const PUT_END: u8 = 0x07;
    pub const WELCOME: u8 = 0x81;
    pub const FILE_HEADER: u8 = 0x82;
    pub const TRAILER: u8 = 0x83;
    pub const STAT_REPLY: u8 = 0x84;
    pub const LIST_ENTRY: u8 = 0x85;
    pub const LIST_END: u8 = 0x86;
    pub const ACK: u8 = 0x87;
    pub const PUT_READY: u8 = 0x88;
    pub const PUT_DONE: u8 = 0x89;
    pub const ERROR: u8 = 0xFF;
}

const GET_HAS_LENGTH: u8 = 0b01;
const GET_HAS_VALIDATOR: u8 = 0b10;
const PUT_INLINE: u8 = 0b01;

impl Frame {
    /// Builds an error frame from a code and a message (truncated to
    /// [`MAX_ERROR_MESSAGE_LEN`] on a character boundary).
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Frame {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE_LEN {
            let mut end = MAX_ERROR_MESSAGE_LEN;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Frame::Error {
            code: code as u16,
            message,
        }
    }

    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Welcome { .. } => "Welcome",
            Frame::Get(_) => "Get",
            Frame::Stat { .. } => "Stat",
            Frame::List { .. } => "List",
            Frame::Message { .. } => "Message",
            Frame::Put(_) => "Put",
            Frame::PutEnd { .. } => "PutEnd",
            Frame::PutReady { .. } => "PutReady",
            Frame::PutDone { .. } => "PutDone",
            Frame::FileHeader(_) => "FileHeader",
            Frame::Trailer { .. } => "Trailer",
            Frame::StatReply(_) => "StatReply",
            Frame::ListEntry(_) => "ListEntry",
            Frame::ListEnd { .. } => "ListEnd",
            Frame::Ack { .. } => "Ack",
            Frame::Error { .. } => "Error",
        }
    }

    /// Appends the encoded frame to `out`.
    ///
    /// # Panics
    ///
    /// If a field exceeds its protocol limit (a path over [`MAX_PATH_LEN`],
    /// a message over [`MAX_MESSAGE_LEN`]...). Callers build frames from
    /// validated values; [`Frame::check_limits`] tells beforehand.
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.check_limits().is_ok(), "frame exceeds protocol limits");
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Frame::Hello {
                version,
                caps,
                token,
            } => {
                out.push(ty::HELLO);
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&caps.to_be_bytes());
                if let Some(t) = token {
                    put_bytes(out, t);
                }
            }
            Frame::Welcome { version, caps } => {
                out.push(ty::WELCOME);
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&caps.to_be_bytes());
            }
            Frame::Get(g) => {
                out.push(ty::GET);
                put_bytes(out, &g.path);
                out.extend_from_slice(&g.offset.to_be_bytes());
                let mut flags = 0;
                if g.length.is_some() {
                    flags |= GET_HAS_LENGTH;
                }
                if g.if_unchanged.is_some() {
                    flags |= GET_HAS_VALIDATOR;
                }
                out.push(flags);
                if let Some(len) = g.length {
                    out.extend_from_slice(&len.to_be_bytes());
                }
                if let Some(v) = g.if_unchanged {
                    out.extend_from_slice(&v.size.to_be_bytes());
                    out.extend_from_slice(&v.mtime_ns.to_be_bytes());
                }
            }
            Frame::Stat { path } => {
                out.push(ty::STAT);
                put_bytes(out, path);
            }
            Frame::List { path } => {
                out.push(ty::LIST);
                put_bytes(out, path);
            }
            Frame::Message { text } => {
                out.push(ty::MESSAGE);
                put_bytes(out, text);
            }
            Frame::Put(p) => {
                out.push(ty::PUT);
                put_bytes(out, &p.path);
                out.extend_from_slice(&p.size.to_be_bytes());
                out.extend_from_slice(&p.mtime_ns.to_be_bytes());
                out.push(if p.inline { PUT_INLINE } else { 0 });
            }
            Frame::PutEnd { hash } => {
                out.push(ty::PUT_END);
                out.extend_from_slice(hash);
            }
            Frame::PutReady { offset } => {
                out.push(ty::PUT_READY);
                out.extend_from_slice(&offset.to_be_bytes());
            }
            Frame::PutDone { size, replaced } => {
                out.push(ty::PUT_DONE);
                out.extend_from_slice(&size.to_be_bytes());
                out.push(u8::from(*replaced));
            }
            Frame::FileHeader(h) => {
                out.push(ty::FILE_HEADER);
                out.extend_from_slice(&h.offset.to_be_bytes());
                out.extend_from_slice(&h.length.to_be_bytes());
                out.extend_from_slice(&h.size.to_be_bytes());
                out.extend_from_slice(&h.mtime_ns.to_be_bytes());
            }
            Frame::Trailer { hash } => {
                out.push(ty::TRAILER);
                out.extend_from_slice(hash);
            }
            Frame::StatReply(s) => {
                out.push(ty::STAT_REPLY);
                out.push(s.kind as u8);
                out.extend_from_slice(&s.size.to_be_bytes());
                out.extend_from_slice(&s.mtime_ns.to_be_bytes());
                match &s.hash {
                    Some(h) => {
                        out.push(1);
                        out.extend_from_slice(h);
                    }
                    None => out.push(0),
                }
            }
            Frame::ListEntry(e) => {
                out.push(ty::LIST_ENTRY);
                out.push(e.kind as u8);
                out.extend_from_slice(&e.size.to_be_bytes());
                out.extend_from_slice(&e.mtime_ns.to_be_bytes());
                put_bytes(out, &e.name);
            }
            Frame::ListEnd { count } => {
                out.push(ty::LIST_END);
                out.extend_from_slice(&count.to_be_bytes());
            }
            Frame::Ack { text } => {
                out.push(ty::ACK);
                put_bytes(out, text);
            }
            Frame::Error { code, message } => {
                out.push(ty::ERROR);
                out.extend_from_slice(&code.to_be_bytes());
                put_bytes(out, message.as_bytes());
            }
        }
        let len = u32::try_from(out.len() - start - 4).expect("bounded by check_limits");
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Checks every field against its protocol limit.
    ///
    /// # Errors
    ///
    /// Names the first field over its limit.
    pub fn check_limits(&self) -> Result<(), &'static str> {
        let ok = match self {
            Frame::Get(g) => g.path.len() <= MAX_PATH_LEN,
            Frame::Put(p) => {
                p.path.len() <= MAX_PATH_LEN && (!p.inline || p.size <= super::MAX_INLINE_PUT)
            }
            Frame::Stat { path } | Frame::List { path } => path.len() <= MAX_PATH_LEN,
            Frame::Message { text } | Frame::Ack { text } => text.len() <= MAX_MESSAGE_LEN,
            Frame::ListEntry(e) => e.name.len() <= MAX_NAME_LEN,
            Frame::Error { message, .. } => message.len() <= MAX_ERROR_MESSAGE_LEN,
            Frame::Hello { caps, token, .. } => {
                (caps & super::caps::TOKEN != 0) == token.is_some()
                    && token
                        .as_ref()
                        .is_none_or(|t| t.len() <= super::MAX_TOKEN_LEN)
            }
            Frame::FileHeader(h) => h.offset.checked_add(h.length).is_some_and(|e| e <= h.size),
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(match self {
                Frame::Message { .. } | Frame::Ack { .. } => "message too long",
                Frame::ListEntry(_) => "name too long",
                Frame::Error { .. } => "error message too long",
                Frame::FileHeader(_) => "range beyond file size",
                Frame::Hello { .. } => "token too long, or present without its capability bit",
                Frame::Put(p) if p.path.len() <= MAX_PATH_LEN => "inline body too large",
                _ => "path too long",
            })
        }
    }

    /// Tries to decode one frame from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a frame (read more and
    /// call again), or `Ok(Some((frame, n)))` where `n` is the number of bytes
    /// the frame used. The length is checked against [`MAX_FRAME_LEN`] before
    /// anything else, so a caller never needs to buffer more than
    /// `4 + MAX_FRAME_LEN` bytes.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] when the bytes can never form a valid frame.
    pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, DecodeError> {
        let Some(len_bytes) = buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(len_bytes.try_into().expect("4 bytes"));
        if len as usize > MAX_FRAME_LEN {
            return Err(DecodeError::TooLarge(len));
        }
        if len == 0 {
            return Err(DecodeError::Empty);
        }
        let total = 4 + len as usize;
        let Some(body) = buf.get(4..total) else {
            return Ok(None);
        };
        let frame = decode_body(body[0], &body[1..])?;
        Ok(Some((frame, total)))
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u16::try_from(b.len()).expect("bounded by check_limits");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
}

/// A cursor over one frame's payload.
struct Reader<'a> {
    buf: &'a [u8],
    frame: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(self.frame));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn bytes(&mut self, max: usize, what: &'static str) -> Result<Vec<u8>, DecodeError> {
        let len = self.u16()? as usize;
        if len > max {
            return Err(self.invalid(what));
        }
        Ok(self.take(len)?.to_vec())
    }

    fn kind(&mut self) -> Result<EntryKind, DecodeError> {
        let b = self.u8()?;
        EntryKind::from_u8(b).ok_or_else(|| self.invalid("unknown entry kind"))
    }

    fn invalid(&self, what: &'static str) -> DecodeError {
        DecodeError::InvalidField {
            frame: self.frame,
            what,
        }
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.frame))
        }
    }
}

fn decode_body(ty: u8, payload: &[u8]) -> Result<Frame, DecodeError> {
    let name = match ty {
        ty::HELLO => "Hello",
        ty::WELCOME => "Welcome",
        ty::GET => "Get",
        ty::STAT => "Stat",
        ty::LIST => "List",
        ty::MESSAGE => "Message",
        ty::PUT => "Put",
        ty::PUT_END => "PutEnd",
        ty::PUT_READY => "PutReady",
        ty::PUT_DONE => "PutDone",
        ty::FILE_HEADER => "FileHeader",
        ty::TRAILER => "Trailer",
        ty::STAT_REPLY => "StatReply",
        ty::LIST_ENTRY => "ListEntry",
        ty::LIST_END => "ListEnd",
        ty::ACK => "Ack",
        ty::ERROR => "Error",
        other => return Err(DecodeError::UnknownType(other)),
    };
    let mut r = Reader {
        buf: payload,
        frame: name,
    };
    let frame = match ty {
        ty::HELLO => {
            let version = r.u16()?;
            let caps = r.u64()?;
            let token = if caps & super::caps::TOKEN != 0 {
                Some(r.bytes(super::MAX_TOKEN_LEN, "token too long")?)
            } else {
                None
            };
            Frame::Hello {
                version,
                caps,
                token,
            }
        }
        ty::WELCOME => Frame::Welcome {
            version: r.u16()?,
            caps: r.u64()?,
        },
        ty::GET => {
            let path = r.bytes(MAX_PATH_LEN, "path too long")?;
            let offset = r.u64()?;
            let flags = r.u8()?;
            if flags & !(GET_HAS_LENGTH | GET_HAS_VALIDATOR) != 0 {
                return Err(r.invalid("unknown flags"));
            }
            let length = if flags & GET_HAS_LENGTH != 0 {
                Some(r.u64()?)
            } else {
                None
            };
            let if_unchanged = if flags & GET_HAS_VALIDATOR != 0 {
                Some(Validator {
                    size: r.u64()?,
                    mtime_ns: r.i64()?,
                })
            } else {
                None
            };
            Frame::Get(GetRequest {
                path,
                offset,
                length,
                if_unchanged,
            })
        }
        ty::STAT => Frame::Stat {
            path: r.bytes(MAX_PATH_LEN, "path too long")?,
        },
        ty::LIST => Frame::List {
            path: r.bytes(MAX_PATH_LEN, "path too long")?,
        },
        ty::MESSAGE => Frame::Message {
            text: r.bytes(MAX_MESSAGE_LEN, "message too long")?,
        },
        ty::PUT => {
            let path = r.bytes(MAX_PATH_LEN, "path too long")?;
            let size = r.u64()?;
            let mtime_ns = r.i64()?;
            let flags = r.u8()?;
            if flags & !PUT_INLINE != 0 {
                return Err(r.invalid("unknown flags"));
            }
            let inline = flags & PUT_INLINE != 0;
            if inline && size > super::MAX_INLINE_PUT {
                return Err(r.invalid("inline body too large"));
            }
            Frame::Put(PutRequest {
                path,
                size,
                mtime_ns,
                inline,
            })
        }
        ty::PUT_END => Frame::PutEnd { hash: r.array()? },
        ty::PUT_READY => Frame::PutReady { offset: r.u64()? },
        ty::PUT_DONE => {
            let size = r.u64()?;
            let replaced = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(r.invalid("bad replaced flag")),
            };
            Frame::PutDone { size, replaced }
        }
        ty::FILE_HEADER => {
            let h = FileHeader {
                offset: r.u64()?,
                length: r.u64()?,
                size: r.u64()?,
                mtime_ns: r.i64()?,
            };
            // A header that promises bytes past the end of the file is a lie
            // the client must not act on.
            if h.offset
                .checked_add(h.length)
                .is_none_or(|end| end > h.size)
            {
                return Err(r.invalid("range beyond file size"));
            }
            Frame::FileHeader(h)
        }
        ty::TRAILER => Frame::Trailer { hash: r.array()? },
        ty::STAT_REPLY => {
            let kind = r.kind()?;
            let size = r.u64()?;
            let mtime_ns = r.i64()?;
            let hash = match r.u8()? {
                0 => None,
                1 => Some(r.array()?),
                _ => return Err(r.invalid("bad hash flag")),
            };
            Frame::StatReply(StatReply {
                kind,
                size,
                mtime_ns,
                hash,
            })
        }
        ty::LIST_ENTRY => {
            let kind = r.kind()?;
            let size = r.u64()?;
            let mtime_ns = r.i64()?;
            let name = r.bytes(MAX_NAME_LEN, "name too long")?;
            Frame::ListEntry(ListEntry {
                name,
                kind,
                size,
                mtime_ns,
            })
        }
        ty::LIST_END => Frame::ListEnd { count: r.u64()? },
        ty::ACK => Frame::Ack {
            text: r.bytes(MAX_MESSAGE_LEN, "message too long")?,
        },
        ty::ERROR => {
            let code = r.u16()?;
            let message = r.bytes(MAX_ERROR_MESSAGE_LEN, "message too long")?;
            let message = String::from_utf8(message).map_err(|_| r.invalid("message not UTF-8"))?;
            Frame::Error { code, message }
        }
        _ => unreachable!("type checked above"),
    };
    r.finish()?;
    Ok(frame)
}
