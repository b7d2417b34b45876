//! `request_parser`: the server's request path, from the client's first byte
//! to the path check of each request.
//!
//! The input is structured (`arbitrary`): a magic (right, corrupted,
//! truncated or missing), an optional `Hello`, a list of items (requests
//! whose paths are built from hostile parts such as `..`, `\`, NUL, control
//! characters and over-long names, plus raw frames and raw garbage), and the
//! sizes of the reads the bytes arrive in. The bytes are served by an
//! in-memory stream, chunk by chunk, to the real
//! `ferry::connection::Connection`, and read the way `server::native` reads
//! them: `read_magic`, then a `Hello`, then requests until a frame that is
//! not one. Every `Get`/`Stat`/`List`/`Put` path goes through
//! `ferry::protocol::validate_path`.
//!
//! Invariants checked, besides "never panics":
//!
//! * the magic verdict matches a model computed from the whole byte stream;
//! * the frames `Connection` reads, however the bytes are split into reads,
//!   are exactly those `Frame::parse` finds in the whole stream, ending with
//!   the same error, or with a clean EOF only between frames;
//! * every well-formed item decodes to the frame it was built from;
//! * a path `validate_path` accepts is the same bytes as UTF-8, at most
//!   `MAX_PATH_LEN` bytes, has no leading `/`, no empty, `.` or `..`
//!   component, no `\`, NUL or other control character, only `Normal`
//!   components as `std::path::Path` sees them, and every component passes
//!   `validate_name`; the server's wrapper (`storage::validate_path`)
//!   gives the same verdict.

#![no_main]

use std::future::Future;
use std::io;
use std::path::{Component, Path};
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use arbitrary::Arbitrary;
use ferry::connection::{Connection, ConnectionError};
use ferry::protocol::{
    validate_name, validate_path, DecodeError, Frame, GetRequest, PutRequest, Validator, MAGIC,
    MAX_FRAME_LEN, MAX_NAME_LEN, MAX_PATH_LEN,
};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Arbitrary, Debug)]
enum Magic {
    Good,
    Corrupt { at: u8, xor: u8 },
    Truncated { keep: u8 },
    Missing,
}

/// One path component, biased towards the spellings that matter.
#[derive(Arbitrary, Debug)]
enum Part {
    Name(String),
    Bytes(Vec<u8>),
    Dot,
    DotDot,
    Empty,
    BackslashDotDot,
    Nul,
    /// An ASCII control character (C0 or DEL).
    Control(u8),
    /// A C1 control character (U+0080..U+009F), valid UTF-8.
    C1(u8),
    /// A long run of `x`: around `MAX_NAME_LEN` and `MAX_PATH_LEN`.
    Long(u16),
}

#[derive(Arbitrary, Debug)]
enum PathSpec {
    Raw(Vec<u8>),
    Parts {
        leading_slash: bool,
        parts: Vec<Part>,
    },
}

#[derive(Arbitrary, Debug)]
enum Item {
    Get {
        path: PathSpec,
        offset: u64,
        length: Option<u64>,
        validator: Option<(u64, i64)>,
    },
    Stat(PathSpec),
    List(PathSpec),
    Message(Vec<u8>),
    /// An upload's head (never inline here: a body is not a frame) and
    /// the `PutEnd` that follows its body.
    Put {
        path: PathSpec,
        size: u64,
        mtime_ns: i64,
    },
    PutEnd([u8; 32]),
    Hello {
        version: u16,
        caps: u64,
        /// Sent (after `caps`) when `caps` has the TOKEN bit.
        token: Vec<u8>,
    },
    /// A correctly length-prefixed frame of any type and payload.
    RawFrame {
        ty: u8,
        payload: Vec<u8>,
    },
    /// Bytes with no framing at all.
    Garbage(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    magic: Magic,
    hello: Option<(u16, u64, Vec<u8>)>,
    items: Vec<Item>,
    /// Sizes of the successive reads (cycled); empty means one read.
    reads: Vec<u16>,
    /// How many leading bytes the server's protocol sniffing already read.
    sniffed: u8,
}

/// What the bytes of one item should decode to.
enum Expect {
    Frame(Frame),
    /// An over-limit field: the decoder must refuse it.
    Error,
    /// Raw frames and garbage: anything may happen from here on.
    Unknown,
}

fuzz_target!(|input: Input| {
    let mut magic_bytes = MAGIC.to_vec();
    match input.magic {
        Magic::Good => {}
        Magic::Corrupt { at, xor } => magic_bytes[at as usize % MAGIC.len()] ^= xor.max(1),
        Magic::Truncated { keep } => magic_bytes.truncate(keep as usize % MAGIC.len()),
        Magic::Missing => magic_bytes.clear(),
    }
    let mut stream = magic_bytes;
    let frames_start = stream.len();
    let mut expected = Vec::new();
    if let Some((version, caps, token)) = input.hello {
        expected.push(encode_hello(version, caps, token, &mut stream));
    }
    for item in &input.items {
        expected.push(encode_item(item, &mut stream));
    }

    let sniffed = (input.sniffed as usize).min(stream.len());
    let source = ChunkedStream {
        data: &stream[sniffed..],
        pos: 0,
        reads: &input.reads,
        next_read: 0,
    };
    let mut conn = Connection::with_buffered(source, &stream[..sniffed]);

    // The magic, against a model of the whole stream.
    let got = block_on(conn.read_magic());
    let model = if stream.starts_with(&MAGIC) {
        "ok"
    } else if stream.is_empty() {
        "closed"
    } else if MAGIC.starts_with(&stream) {
        "eof"
    } else {
        "bad"
    };
    match (&got, model) {
        (Ok(true), "ok") => {}
        (Ok(false), "closed") => return,
        (Err(ConnectionError::UnexpectedEof(_)), "eof") => return,
        (Err(ConnectionError::Decode(DecodeError::BadMagic)), "bad") => return,
        _ => panic!("read_magic gave {got:?}, model says {model}"),
    }
    // A damaged magic can be completed by the bytes after it, and then the
    // items no longer line up with the frames: compare with the whole-stream
    // parse only.
    let aligned = frames_start == MAGIC.len();

    // The frames `Frame::parse` finds in the whole stream at once.
    let (whole, whole_end) = parse_all(&stream[MAGIC.len()..]);

    // The same stream through `Connection`, chunk by chunk, consumed the
    // way `server::native::run` consumes it.
    let mut index = 0;
    let mut comparing = aligned;
    let mut expect = expected.iter();
    let mut handshake_done = false;
    loop {
        let got = block_on(conn.read_frame());
        let frame = match got {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                assert!(index == whole.len() && whole_end == End::Clean, "early EOF");
                return;
            }
            Err(ConnectionError::UnexpectedEof(_)) => {
                assert!(index == whole.len() && whole_end == End::Partial);
                return;
            }
            Err(ConnectionError::Decode(e)) => {
                assert_eq!(index, whole.len());
                assert_eq!(whole_end, End::Error(e.clone()));
                if comparing {
                    match expect.next() {
                        Some(Expect::Error) | Some(Expect::Unknown) => {}
                        _ => panic!("well-formed item refused: {e}"),
                    }
                }
                return;
            }
            Err(ConnectionError::Io(e)) => panic!("in-memory stream failed: {e}"),
        };
        assert_eq!(whole.get(index), Some(&frame), "frame {index} differs");
        index += 1;
        if comparing {
            match expect.next() {
                Some(Expect::Frame(want)) => assert_eq!(&frame, want),
                Some(Expect::Error) => panic!("over-limit item accepted: {frame:?}"),
                Some(Expect::Unknown) => comparing = false,
                None => panic!("more frames than items: {frame:?}"),
            }
        }

        // What the server does with it.
        if !handshake_done {
            match frame {
                Frame::Hello { version, .. } if version != 0 => handshake_done = true,
                // Wrong first frame or version 0: the server closes.
                _ => return,
            }
            continue;
        }
        match &frame {
            Frame::Get(GetRequest { path, .. }) | Frame::Stat { path } | Frame::List { path } => {
                check_path(path)
            }
            // An upload's body follows, raw bytes and not frames: the
            // framed model ends here.
            Frame::Put(PutRequest { path, .. }) => {
                check_path(path);
                return;
            }
            Frame::Message { .. } => {}
            // Not a request: the server answers UnexpectedFrame and closes.
            _ => return,
        }
    }
});

fn encode_item(item: &Item, out: &mut Vec<u8>) -> Expect {
    match item {
        Item::Get {
            path,
            offset,
            length,
            validator,
        } => {
            let path = path_bytes(path);
            if path.len() > MAX_PATH_LEN {
                // Hand-encoded: `Frame::encode` refuses over-limit fields.
                let mut payload = Vec::new();
                put_bytes(&mut payload, &path);
                payload.extend_from_slice(&offset.to_be_bytes());
                payload.push(0);
                put_frame(out, 0x02, &payload);
                return Expect::Error;
            }
            let f = Frame::Get(GetRequest {
                path,
                offset: *offset,
                length: *length,
                if_unchanged: validator.map(|(size, mtime_ns)| Validator { size, mtime_ns }),
            });
            f.encode(out);
            Expect::Frame(f)
        }
        Item::Stat(path) | Item::List(path) => {
            let path = path_bytes(path);
            let stat = matches!(item, Item::Stat(_));
            if path.len() > MAX_PATH_LEN {
                let mut payload = Vec::new();
                put_bytes(&mut payload, &path);
                put_frame(out, if stat { 0x03 } else { 0x04 }, &payload);
                return Expect::Error;
            }
            let f = if stat {
                Frame::Stat { path }
            } else {
                Frame::List { path }
            };
            f.encode(out);
            Expect::Frame(f)
        }
        Item::Put {
            path,
            size,
            mtime_ns,
        } => {
            let path = path_bytes(path);
            if path.len() > MAX_PATH_LEN {
                let mut payload = Vec::new();
                put_bytes(&mut payload, &path);
                payload.extend_from_slice(&size.to_be_bytes());
                payload.extend_from_slice(&mtime_ns.to_be_bytes());
                payload.push(0);
                put_frame(out, 0x06, &payload);
                return Expect::Error;
            }
            let f = Frame::Put(PutRequest {
                path,
                size: *size,
                mtime_ns: *mtime_ns,
                inline: false,
            });
            f.encode(out);
            Expect::Frame(f)
        }
        Item::PutEnd(hash) => {
            let f = Frame::PutEnd { hash: *hash };
            f.encode(out);
            Expect::Frame(f)
        }
        Item::Message(text) => {
            // Arbitrary inputs are far below MAX_MESSAGE_LEN; encode() checks.
            let f = Frame::Message { text: text.clone() };
            if f.check_limits().is_err() {
                return Expect::Unknown;
            }
            f.encode(out);
            Expect::Frame(f)
        }
        Item::Hello {
            version,
            caps,
            token,
        } => encode_hello(*version, *caps, token.clone(), out),
        Item::RawFrame { ty, payload } => {
            put_frame(out, *ty, payload);
            Expect::Unknown
        }
        Item::Garbage(bytes) => {
            out.extend_from_slice(bytes);
            Expect::Unknown
        }
    }
}

fn path_bytes(spec: &PathSpec) -> Vec<u8> {
    let (leading_slash, parts) = match spec {
        PathSpec::Raw(b) => return b.clone(),
        PathSpec::Parts {
            leading_slash,
            parts,
        } => (*leading_slash, parts),
    };
    let mut out = Vec::new();
    if leading_slash {
        out.push(b'/');
    }
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        match part {
            Part::Name(s) => out.extend_from_slice(s.as_bytes()),
            Part::Bytes(b) => out.extend_from_slice(b),
            Part::Dot => out.push(b'.'),
            Part::DotDot => out.extend_from_slice(b".."),
            Part::Empty => {}
            Part::BackslashDotDot => out.extend_from_slice(b"..\\.."),
            Part::Nul => out.extend_from_slice(b"a\0b"),
            Part::Control(c) => {
                out.push(b'x');
                out.push(if c & 0x80 != 0 { 0x7f } else { c % 0x20 });
            }
            Part::C1(c) => {
                let ch = char::from_u32(0x80 + u32::from(c % 0x20)).unwrap();
                out.extend_from_slice(ch.to_string().as_bytes());
            }
            Part::Long(n) => out.resize(out.len() + (*n as usize % 5000), b'x'),
        }
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let b = &b[..b.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_frame(out: &mut Vec<u8>, ty: u8, payload: &[u8]) {
    // Keep the length honest but within what a u32 can say; an over-size
    // frame is then refused by its length alone.
    let len = (1 + payload.len()) as u32;
    out.extend_from_slice(&len.to_be_bytes());
    out.push(ty);
    out.extend_from_slice(payload);
}

/// The invariants of a path the protocol accepts.
fn check_path(raw: &[u8]) {
    let verdict = validate_path(raw);
    let server_verdict = ferry::storage::validate_path(raw);
    assert_eq!(
        verdict.is_ok(),
        server_verdict.is_ok(),
        "protocol and server disagree on {raw:?}"
    );
    let Ok(path) = verdict else { return };
    assert_eq!(path.as_bytes(), raw);
    assert!(raw.len() <= MAX_PATH_LEN, "accepted {} bytes", raw.len());
    if path.is_empty() {
        return; // the root itself
    }
    assert!(!path.starts_with('/'), "accepted absolute {path:?}");
    assert!(!path.contains('\\'), "accepted backslash in {path:?}");
    assert!(!path.contains('\0'), "accepted NUL in {path:?}");
    assert!(
        !path.chars().any(char::is_control),
        "accepted control character in {path:?}"
    );
    for comp in path.split('/') {
        assert!(!comp.is_empty(), "accepted empty component in {path:?}");
        assert!(comp != "." && comp != "..", "accepted {comp:?} in {path:?}");
        assert!(comp.len() <= MAX_NAME_LEN, "accepted long name in {path:?}");
        assert!(validate_name(comp.as_bytes()).is_ok());
    }
    for comp in Path::new(path).components() {
        assert!(
            matches!(comp, Component::Normal(_)),
            "{path:?} has component {comp:?}"
        );
    }
}

#[derive(Debug, PartialEq)]
enum End {
    Clean,
    Partial,
    Error(DecodeError),
}

/// Every frame `Frame::parse` finds in `buf`, and how the buffer ends.
fn parse_all(mut buf: &[u8]) -> (Vec<Frame>, End) {
    let mut frames = Vec::new();
    loop {
        match Frame::parse(buf) {
            Ok(Some((f, used))) => {
                frames.push(f);
                buf = &buf[used..];
            }
            Ok(None) if buf.is_empty() => return (frames, End::Clean),
            Ok(None) => {
                assert!(buf.len() < 4 + MAX_FRAME_LEN);
                return (frames, End::Partial);
            }
            Err(e) => return (frames, End::Error(e)),
        }
    }
}

/// An in-memory stream that hands out its bytes in reads of the given
/// sizes, and swallows writes. It never returns `Pending`.
struct ChunkedStream<'a> {
    data: &'a [u8],
    pos: usize,
    reads: &'a [u16],
    next_read: usize,
}

impl AsyncRead for ChunkedStream<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let left = self.data.len() - self.pos;
        let want = if self.reads.is_empty() {
            left
        } else {
            let r = self.reads[self.next_read % self.reads.len()].max(1) as usize;
            self.next_read += 1;
            r
        };
        let n = want.min(left).min(buf.remaining());
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ChunkedStream<'_> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs a future that never waits (the stream above is always ready).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("an in-memory read returned Pending"),
    }
}

/// A `Hello`, with its token when `caps` asks for one; an over-long token
/// is written by hand and must be refused.
fn encode_hello(version: u16, caps: u64, token: Vec<u8>, out: &mut Vec<u8>) -> Expect {
    let token = (caps & ferry::protocol::caps::TOKEN != 0).then_some(token);
    if token
        .as_ref()
        .is_some_and(|t| t.len() > ferry::protocol::MAX_TOKEN_LEN)
    {
        let mut payload = Vec::new();
        payload.extend_from_slice(&version.to_be_bytes());
        payload.extend_from_slice(&caps.to_be_bytes());
        put_bytes(&mut payload, token.as_deref().unwrap_or_default());
        put_frame(out, 0x01, &payload);
        return Expect::Error;
    }
    let f = Frame::Hello {
        version,
        caps,
        token,
    };
    f.encode(out);
    Expect::Frame(f)
}
