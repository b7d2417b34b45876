//! Framed IO over any byte stream: the thin layer between sockets and the
//! pure [`crate::protocol`] codec.
//!
//! [`Connection`] owns the stream, a read buffer and a write buffer. Reading
//! loops "try to parse a frame from the buffer, else read more"; a clean EOF
//! between frames is `Ok(None)`, an EOF inside a frame is an error. File
//! bodies are not frames: [`Connection::read_body`] steps out of framing for
//! exactly `len` raw bytes (first draining what the read buffer already
//! holds), and [`SendFile`] sends a body straight from a file, with
//! `sendfile(2)` where the stream is a TCP socket on Linux.
//!
//! The stream type is generic so tests can run the same code over
//! `tokio::io::duplex`.

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::protocol::{check_magic, DecodeError, Frame, MAGIC, MAX_FRAME_LEN};

/// Read-buffer growth step. Headers are small; 8 KiB holds many pipelined
/// requests, and the buffer never grows past one maximal frame.
const READ_CHUNK: usize = 8 * 1024;

/// Copy-buffer size for the non-sendfile body path. 256 KiB: kernel↔user
/// copies on small blocks cost several times more per byte than on large ones.
pub const BODY_CHUNK: usize = 256 * 1024;

/// Told when a write starts and stops waiting for the peer to take bytes,
/// so a server can tell a peer that stopped reading from a busy one.
pub trait StallWatch: Send + Sync + fmt::Debug {
    /// `true`: a write is now waiting for the peer; `false`: it is done.
    fn waiting(&self, yes: bool);
}

/// What bounds every write on a connection: how long the peer may take no
/// bytes at all, a token that cuts a waiting write short (eviction), and
/// who is told while a write waits. The default bounds nothing (a client
/// writing small requests to its server).
///
/// Each single `write` (or wait for writability) is bounded, not the whole
/// transfer: a slow reader that keeps taking bytes is never cut off, one
/// that takes none for `stall` is.
#[derive(Debug, Clone, Default)]
pub struct WriteLimit {
    stall: Option<Duration>,
    cancel: Option<CancellationToken>,
    watch: Option<Arc<dyn StallWatch>>,
}

impl WriteLimit {
    /// Writes fail with `TimedOut` once the peer took nothing for `stall`.
    pub fn new(stall: Duration) -> Self {
        WriteLimit {
            stall: Some(stall),
            ..WriteLimit::default()
        }
    }

    /// A waiting write fails at once when `token` is cancelled.
    pub fn cancelled_by(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// `watch` is told whenever a write waits for the peer.
    pub fn watched_by(mut self, watch: Arc<dyn StallWatch>) -> Self {
        self.watch = Some(watch);
        self
    }

    /// Runs one write step (a `write` call, a wait for writability) under
    /// this limit.
    ///
    /// # Errors
    ///
    /// `fut`'s error, [`stalled`] when the peer took nothing for the stall
    /// limit, or [`evicted`] when the cancel token fired.
    pub async fn run<T, F>(&self, fut: F) -> io::Result<T>
    where
        F: Future<Output = io::Result<T>>,
    {
        if self.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return Err(evicted());
        }
        let _waiting = self.watch.as_deref().map(Waiting::new);
        let bounded = async {
            match self.stall {
                Some(limit) => tokio::time::timeout(limit, fut)
                    .await
                    .unwrap_or_else(|_| Err(stalled())),
                None => fut.await,
            }
        };
        match &self.cancel {
            Some(token) => tokio::select! {
                biased;
                () = token.cancelled() => Err(evicted()),
                r = bounded => r,
            },
            None => bounded.await,
        }
    }
}

/// Marks a [`StallWatch`] as waiting for as long as it lives.
struct Waiting<'a>(&'a dyn StallWatch);

impl<'a> Waiting<'a> {
    fn new(w: &'a dyn StallWatch) -> Self {
        w.waiting(true);
        Waiting(w)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting(false);
    }
}

/// The error for a peer that took no bytes for the stall limit.
pub fn stalled() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading")
}

/// The error for a write cut short to make room for another connection.
pub fn evicted() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "peer stopped reading; closed to make room for another client",
    )
}

/// Failures of framed IO.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The peer closed the connection inside a frame, a body or the magic.
    #[error("connection closed in the middle of {0}")]
    UnexpectedEof(&'static str),
    /// The peer sent bytes that are not a valid frame.
    #[error("protocol violation: {0}")]
    Decode(#[from] DecodeError),
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A framed connection over a byte stream.
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    limit: WriteLimit,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a stream.
    pub fn new(stream: S) -> Self {
        Self::with_buffered(stream, &[])
    }

    /// Wraps a stream whose first bytes were already read (e.g. by the
    /// server's protocol sniffing); they are parsed before anything else.
    pub fn with_buffered(stream: S, already_read: &[u8]) -> Self {
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK.max(already_read.len()));
        rbuf.extend_from_slice(already_read);
        Connection {
            stream,
            rbuf,
            wbuf: Vec::with_capacity(256),
            limit: WriteLimit::default(),
        }
    }

    /// Bounds every later write (frames and bodies) by `limit`.
    pub fn set_write_limit(&mut self, limit: WriteLimit) {
        self.limit = limit;
    }

    /// The limit writes run under.
    pub fn write_limit(&self) -> &WriteLimit {
        &self.limit
    }

    /// The underlying stream.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Unwraps the stream, dropping anything buffered.
    pub fn into_stream(self) -> S {
        self.stream
    }

    /// Removes and returns up to `max` bytes already read from the stream
    /// but not parsed: the start of a body that arrived with its header.
    pub fn take_buffered(&mut self, max: u64) -> BytesMut {
        let n = self
            .rbuf
            .len()
            .min(usize::try_from(max).unwrap_or(usize::MAX));
        self.rbuf.split_to(n)
    }

    /// Bytes queued for sending and not yet flushed.
    pub fn queued_len(&self) -> usize {
        self.wbuf.len()
    }

    /// Whether the read buffer holds bytes not yet parsed (part of a frame).
    pub fn has_buffered_input(&self) -> bool {
        !self.rbuf.is_empty()
    }

    /// Whether the read buffer already holds one whole frame (by its length
    /// prefix), so the next [`Connection::read_frame`] needs no read.
    pub fn frame_ready(&self) -> bool {
        self.rbuf.len() >= 4 && {
            let len = u32::from_be_bytes([self.rbuf[0], self.rbuf[1], self.rbuf[2], self.rbuf[3]]);
            self.rbuf.len() - 4 >= len as usize
        }
    }

    /// Reads more bytes into the read buffer. Returns false on EOF.
    async fn fill(&mut self) -> io::Result<bool> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 2 {
            self.rbuf.reserve(READ_CHUNK);
        }
        Ok(self.stream.read_buf(&mut self.rbuf).await? != 0)
    }

    /// Reads and checks the peer's 8-byte magic.
    ///
    /// Returns `Ok(false)` if the peer closed before sending anything.
    ///
    /// # Errors
    ///
    /// [`DecodeError::BadMagic`] if the bytes differ, `UnexpectedEof` if the
    /// peer closed in the middle of it.
    pub async fn read_magic(&mut self) -> Result<bool, ConnectionError> {
        loop {
            if check_magic(&self.rbuf)?.is_some() {
                self.rbuf.advance(MAGIC.len());
                return Ok(true);
            }
            if !self.fill().await? {
                return if self.rbuf.is_empty() {
                    Ok(false)
                } else {
                    Err(ConnectionError::UnexpectedEof("the magic"))
                };
            }
        }
    }

    /// Reads one frame.
    ///
    /// Returns `Ok(None)` on a clean EOF between frames.
    ///
    /// # Errors
    ///
    /// A decode error for invalid bytes, `UnexpectedEof` for an EOF inside a
    /// frame, or the socket's IO error.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ConnectionError> {
        loop {
            if let Some((frame, used)) = Frame::parse(&self.rbuf)? {
                self.rbuf.advance(used);
                return Ok(Some(frame));
            }
            debug_assert!(self.rbuf.len() < 4 + MAX_FRAME_LEN);
            if !self.fill().await? {
                return if self.rbuf.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnectionError::UnexpectedEof("a frame"))
                };
            }
        }
    }

    /// Appends a frame to the write buffer without sending it.
    pub fn queue(&mut self, frame: &Frame) {
        frame.encode(&mut self.wbuf);
    }

    /// Appends raw bytes (the magic) to the write buffer.
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Sends everything queued, each write bounded by the [`WriteLimit`].
    ///
    /// # Errors
    ///
    /// The socket's IO error, or the limit's (`stalled`, `evicted`).
    pub async fn flush(&mut self) -> io::Result<()> {
        let mut sent = 0;
        while sent < self.wbuf.len() {
            let n = self.limit.run(self.stream.write(&self.wbuf[sent..])).await;
            match n {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) => {
                    self.wbuf.drain(..sent);
                    return Err(e);
                }
            }
        }
        self.wbuf.clear();
        self.limit.run(self.stream.flush()).await
    }

    /// Queues a frame and sends everything queued.
    ///
    /// # Errors
    ///
    /// The socket's IO error.
    pub async fn send(&mut self, frame: &Frame) -> io::Result<()> {
        self.queue(frame);
        self.flush().await
    }

    /// Reads exactly `len` raw body bytes, handing them to `sink` in pieces
    /// of at most `buf.len()` bytes. Bytes already in the read buffer come
    /// first; the rest is read straight into `buf`, with no further copy.
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` if the peer closes early, the socket's IO error, or
    /// whatever `sink` returns (wrapped as `Io`).
    pub async fn read_body<F>(
        &mut self,
        len: u64,
        buf: &mut [u8],
        mut sink: F,
    ) -> Result<(), ConnectionError>
    where
        F: FnMut(&[u8]) -> io::Result<()>,
    {
        assert!(!buf.is_empty(), "read_body needs a buffer");
        let mut remaining = len;
        if !self.rbuf.is_empty() && remaining > 0 {
            let n = self
                .rbuf
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            sink(&self.rbuf[..n])?;
            self.rbuf.advance(n);
            remaining -= n as u64;
        }
        while remaining > 0 {
            let want = buf
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            let n = self.stream.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(ConnectionError::UnexpectedEof("a file body"));
            }
            sink(&buf[..n])?;
            remaining -= n as u64;
        }
        Ok(())
    }

    /// Reads some raw bytes (part of a body) into `buf`: first what the read
    /// buffer holds, then straight from the stream. `Ok(0)` means EOF.
    ///
    /// # Errors
    ///
    /// The socket's IO error.
    pub async fn read_raw(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.rbuf.is_empty() {
            let n = self.rbuf.len().min(buf.len());
            buf[..n].copy_from_slice(&self.rbuf[..n]);
            self.rbuf.advance(n);
            return Ok(n);
        }
        self.stream.read(buf).await
    }

    /// Reads whatever the peer sends until it closes, up to `limit` bytes in
    /// total, handing the bytes to `sink`. Used by the raw protocol, whose
    /// file bodies end at EOF. Returns the number of bytes read.
    ///
    /// # Errors
    ///
    /// The socket's IO error or `sink`'s.
    pub async fn read_to_end<F>(&mut self, buf: &mut [u8], mut sink: F) -> io::Result<u64>
    where
        F: FnMut(&[u8]) -> io::Result<()>,
    {
        let mut total = 0u64;
        if !self.rbuf.is_empty() {
            sink(&self.rbuf)?;
            total += self.rbuf.len() as u64;
            self.rbuf.clear();
        }
        loop {
            let n = self.stream.read(buf).await?;
            if n == 0 {
                return Ok(total);
            }
            sink(&buf[..n])?;
            total += n as u64;
        }
    }
}

impl<S: SendFile> Connection<S> {
    /// Sends what is queued followed by `len` bytes of `file` from `offset`,
    /// so the header leaves in the same segment as the start of the body.
    /// Every write is bounded by the [`WriteLimit`].
    ///
    /// # Errors
    ///
    /// The socket's IO error, the limit's, or `UnexpectedEof` if the file
    /// ends early (it was truncated while being served).
    pub async fn send_file(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        let prefix = std::mem::take(&mut self.wbuf);
        let res = self
            .stream
            .send_file(&prefix, file, offset, len, &self.limit)
            .await;
        self.wbuf = prefix;
        self.wbuf.clear();
        res
    }

    /// Writes any queued frames, then exactly `len` bytes taken from
    /// `body` (an object store's chunks): the same raw body as
    /// [`Connection::send_file`], through user space.
    ///
    /// # Errors
    ///
    /// The socket's or the body's IO error, the limit's, or
    /// `UnexpectedEof` if the body ends early.
    pub async fn send_stream(
        &mut self,
        body: crate::storage::ByteStream,
        len: u64,
    ) -> io::Result<()> {
        let prefix = std::mem::take(&mut self.wbuf);
        let res = copy_stream_to(&mut self.stream, &prefix, body, len, &self.limit).await;
        self.wbuf = prefix;
        self.wbuf.clear();
        res
    }
}

/// Writes `prefix`, then exactly `len` bytes of `body`, each write bounded
/// by `limit` (the body path for bytes that do not come from a local file).
///
/// # Errors
///
/// The stream's or the body's IO error, the limit's, `UnexpectedEof` if the
/// body ends early, or an error if it has more than `len` bytes.
pub async fn copy_stream_to<W: AsyncWrite + Unpin + Send>(
    out: &mut W,
    prefix: &[u8],
    mut body: crate::storage::ByteStream,
    len: u64,
    limit: &WriteLimit,
) -> io::Result<()> {
    use futures_util::StreamExt;
    if !prefix.is_empty() {
        write_all_limited(out, prefix, limit).await?;
    }
    let mut left = len;
    while left > 0 {
        let chunk = match body.next().await {
            Some(c) => c?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the body ended early",
                ))
            }
        };
        if chunk.len() as u64 > left {
            return Err(io::Error::other("the body is longer than announced"));
        }
        left -= chunk.len() as u64;
        write_all_limited(out, &chunk, limit).await?;
    }
    limit.run(out.flush()).await
}

async fn write_all_limited<W: AsyncWrite + Unpin + Send>(
    out: &mut W,
    mut buf: &[u8],
    limit: &WriteLimit,
) -> io::Result<()> {
    while !buf.is_empty() {
        match limit.run(out.write(buf)).await? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => buf = &buf[n..],
        }
    }
    Ok(())
}

/// A stream that can send a file's bytes, possibly without copying them
/// through user space.
pub trait SendFile: AsyncRead + AsyncWrite + Unpin + Send {
    /// Writes `prefix`, then `len` bytes of `file` starting at `offset`,
    /// each write bounded by `limit`.
    ///
    /// # Errors
    ///
    /// The stream's IO error, the limit's, or `UnexpectedEof` if the file
    /// ends early.
    fn send_file(
        &mut self,
        prefix: &[u8],
        file: &File,
        offset: u64,
        len: u64,
        limit: &WriteLimit,
    ) -> impl Future<Output = io::Result<()>> + Send;
}

/// The portable body path: `pread` into a fixed buffer and write it out.
/// The first write carries `prefix` and the start of the body together.
///
/// # Errors
///
/// As [`SendFile::send_file`].
pub async fn copy_file_to<W: AsyncWrite + Unpin + Send>(
    out: &mut W,
    prefix: &[u8],
    file: &File,
    offset: u64,
    len: u64,
    limit: &WriteLimit,
) -> io::Result<()> {
    let cap = BODY_CHUNK.min(usize::try_from(len).unwrap_or(BODY_CHUNK)) + prefix.len();
    let mut buf = vec![0u8; cap];
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut filled = prefix.len();
    let mut pos = offset;
    let end = offset + len;
    loop {
        while filled < buf.len() && pos < end {
            let want = (buf.len() - filled).min(usize::try_from(end - pos).unwrap_or(usize::MAX));
            let n = file.read_at(&mut buf[filled..filled + want], pos)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being sent",
                ));
            }
            filled += n;
            pos += n as u64;
        }
        if filled == 0 {
            break;
        }
        let mut sent = 0;
        while sent < filled {
            match limit.run(out.write(&buf[sent..filled])).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => sent += n,
            }
        }
        filled = 0;
        if pos == end {
            break;
        }
    }
    limit.run(out.flush()).await
}

impl SendFile for tokio::io::DuplexStream {
    async fn send_file(
        &mut self,
        prefix: &[u8],
        file: &File,
        offset: u64,
        len: u64,
        limit: &WriteLimit,
    ) -> io::Result<()> {
        copy_file_to(self, prefix, file, offset, len, limit).await
    }
}

impl SendFile for tokio::net::TcpStream {
    async fn send_file(
        &mut self,
        prefix: &[u8],
        file: &File,
        offset: u64,
        len: u64,
        limit: &WriteLimit,
    ) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        return crate::zerocopy::send_file(self, prefix, file, offset, len, limit).await;
        #[cfg(not(target_os = "linux"))]
        return copy_file_to(self, prefix, file, offset, len, limit).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Frame;

    #[tokio::test]
    async fn frames_and_body_over_duplex() {
        let (a, b) = tokio::io::duplex(64);
        let mut tx = Connection::new(a);
        let mut rx = Connection::new(b);
        let writer = tokio::spawn(async move {
            tx.queue_raw(&MAGIC);
            tx.queue(&Frame::Hello {
                version: 1,
                caps: 0,
                token: None,
            });
            tx.queue(&Frame::Trailer { hash: [7; 32] });
            tx.queue_raw(b"0123456789");
            tx.queue(&Frame::ListEnd { count: 3 });
            tx.flush().await.unwrap();
        });
        assert!(rx.read_magic().await.unwrap());
        assert_eq!(
            rx.read_frame().await.unwrap(),
            Some(Frame::Hello {
                version: 1,
                caps: 0,
                token: None,
            })
        );
        assert_eq!(
            rx.read_frame().await.unwrap(),
            Some(Frame::Trailer { hash: [7; 32] })
        );
        let mut got = Vec::new();
        let mut buf = [0u8; 3];
        rx.read_body(10, &mut buf, |b| {
            got.extend_from_slice(b);
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(got, b"0123456789");
        assert_eq!(
            rx.read_frame().await.unwrap(),
            Some(Frame::ListEnd { count: 3 })
        );
        writer.await.unwrap();
        assert_eq!(rx.read_frame().await.unwrap(), None);
    }

    #[tokio::test]
    async fn eof_inside_frame_is_an_error() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut rx = Connection::new(b);
        a.write_all(&[0, 0, 0, 9, 0x01]).await.unwrap();
        drop(a);
        assert!(matches!(
            rx.read_frame().await,
            Err(ConnectionError::UnexpectedEof(_))
        ));
    }

    #[tokio::test]
    async fn body_cut_short_is_an_error() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut rx = Connection::new(b);
        a.write_all(b"abc").await.unwrap();
        drop(a);
        let mut buf = [0u8; 16];
        let res = rx.read_body(10, &mut buf, |_| Ok(())).await;
        assert!(matches!(res, Err(ConnectionError::UnexpectedEof(_))));
    }

    #[tokio::test]
    async fn bad_magic_is_rejected() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut rx = Connection::new(b);
        a.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(matches!(
            rx.read_magic().await,
            Err(ConnectionError::Decode(DecodeError::BadMagic))
        ));
    }
}
