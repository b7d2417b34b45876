//! Response bodies: nothing, a few bytes, a byte range of a file (read in
//! bounded chunks on the blocking pool, one chunk ahead), or a stream of
//! chunks produced elsewhere (archives). Every body also carries the
//! request's access-log line, written when the body is done or dropped, and
//! counts as a response in flight until then.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::info;

use super::io::InFlight;
use crate::storage::ByteStream;

/// Bytes read from a file per chunk: large enough that the trip to the
/// blocking pool is cheap per byte, small enough that a hundred clients
/// cost little memory (two chunks each).
const FILE_CHUNK: usize = 256 * 1024;

/// Bodies up to this size are read at once, on the connection's task.
const INLINE_READ: usize = 64 * 1024;

/// What a request did, for its access-log line.
#[derive(Debug)]
pub(crate) struct AccessLog {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) status: u16,
    pub(crate) started: Instant,
    pub(crate) bytes: u64,
    in_flight: Option<InFlight>,
    /// Logged at debug level only (a balancer's health checks, every
    /// second, would drown the log).
    quiet: bool,
}

impl AccessLog {
    /// Starts the line for a request; the response counts as in flight
    /// until the log (with its body) is dropped.
    pub(crate) fn new(method: &str, path: &str, in_flight: &InFlight) -> Self {
        in_flight.fetch_add(1, Ordering::AcqRel);
        AccessLog {
            method: method.to_string(),
            path: crate::display::escape_controls(path).into_owned(),
            status: 0,
            started: Instant::now(),
            bytes: 0,
            in_flight: Some(in_flight.clone()),
            quiet: false,
        }
    }

    /// The same line, at debug level only.
    pub(crate) fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if let Some(n) = self.in_flight.take() {
            n.fetch_sub(1, Ordering::AcqRel);
        }
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        if self.quiet {
            tracing::debug!(method = %self.method, path = %self.path, status = self.status, elapsed_ms, "HTTP");
            return;
        }
        info!(
            method = %self.method,
            path = %self.path,
            status = self.status,
            bytes = self.bytes,
            elapsed_ms,
            "HTTP"
        );
    }
}

enum Kind {
    Bytes(Option<Bytes>),
    File(FileRange),
    Stream(mpsc::Receiver<io::Result<Bytes>>),
    Object(ObjectRange),
}

/// An object's bytes: the ranged request, then its chunks.
enum ObjectRange {
    Starting(futures_util::future::BoxFuture<'static, io::Result<ByteStream>>),
    Streaming(ByteStream),
}

impl ObjectRange {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        use futures_util::StreamExt;
        loop {
            match self {
                ObjectRange::Starting(f) => match f.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(Ok(s)) => *self = ObjectRange::Streaming(s),
                },
                ObjectRange::Streaming(s) => return s.poll_next_unpin(cx),
            }
        }
    }
}

/// A file's bytes `pos..end`.
struct FileRange {
    file: Arc<File>,
    pos: u64,
    end: u64,
    next: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileRange {
    fn start_read(&mut self) {
        if self.pos >= self.end || self.next.is_some() {
            return;
        }
        let len = FILE_CHUNK.min(usize::try_from(self.end - self.pos).unwrap_or(FILE_CHUNK));
        let (file, at) = (self.file.clone(), self.pos);
        self.pos += len as u64;
        self.next = Some(tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            let mut got = 0;
            while got < len {
                match file.read_at(&mut buf[got..], at + got as u64)? {
                    0 => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file shrank while being sent",
                        ))
                    }
                    n => got += n,
                }
            }
            Ok(Bytes::from(buf))
        }));
    }
}

/// Work to run once a body has been sent to its end.
pub(crate) type OnComplete = Box<dyn FnOnce() + Send>;

/// A response body (see the module documentation).
pub(crate) struct Body {
    kind: Kind,
    remaining: Option<u64>,
    log: Option<AccessLog>,
    on_complete: Option<OnComplete>,
}

impl Body {
    /// No body.
    pub(crate) fn empty(log: AccessLog) -> Self {
        Body::bytes(Bytes::new(), log)
    }

    /// A body of these bytes.
    pub(crate) fn bytes(b: impl Into<Bytes>, log: AccessLog) -> Self {
        let b = b.into();
        Body {
            remaining: Some(b.len() as u64),
            kind: Kind::Bytes(Some(b)),
            log: Some(log),
            on_complete: None,
        }
    }

    /// Bytes `offset..offset + len` of `file`.
    pub(crate) fn file(file: File, offset: u64, len: u64, log: AccessLog) -> Self {
        if len <= INLINE_READ as u64 {
            // A small body is read here and now: one `pread` costs less
            // than the trip to the blocking pool and back (two thread
            // switches per request, most of a small file's cost).
            let mut buf = vec![0u8; len as usize];
            if file.read_exact_at(&mut buf, offset).is_ok() {
                return Body::bytes(buf, log);
            }
            // Shrunk or unreadable: the chunked path reports it.
        }
        let mut range = FileRange {
            file: Arc::new(file),
            pos: offset,
            end: offset + len,
            next: None,
        };
        range.start_read();
        Body {
            kind: Kind::File(range),
            remaining: Some(len),
            log: Some(log),
            on_complete: None,
        }
    }

    /// `len` bytes of an object, requested from the store (by `start`)
    /// when hyper first asks for them.
    pub(crate) fn object(
        start: futures_util::future::BoxFuture<'static, io::Result<ByteStream>>,
        len: u64,
        log: AccessLog,
    ) -> Self {
        Body {
            kind: Kind::Object(ObjectRange::Starting(start)),
            remaining: Some(len),
            log: Some(log),
            on_complete: None,
        }
    }

    /// Chunks arriving on `rx`, of unknown total length (sent chunked); an
    /// `Err` ends the response abruptly (the client sees it cut short).
    pub(crate) fn stream(rx: mpsc::Receiver<io::Result<Bytes>>, log: AccessLog) -> Self {
        Body {
            kind: Kind::Stream(rx),
            remaining: None,
            log: Some(log),
            on_complete: None,
        }
    }

    /// Runs `f` once the body has been sent to its end (not if the client
    /// went away first).
    pub(crate) fn on_complete(mut self, f: Option<OnComplete>) -> Self {
        self.on_complete = f;
        self
    }

    /// Records the status for the access log.
    pub(crate) fn set_status(&mut self, status: u16) {
        if let Some(l) = self.log.as_mut() {
            l.status = status;
        }
    }

    /// The body is done: the access-log line goes out now, not when hyper
    /// gets round to dropping the body, and the completion work runs.
    fn finish(&mut self) {
        self.log.take();
        if let Some(f) = self.on_complete.take() {
            f();
        }
    }

    fn sent(&mut self, n: usize) {
        if let Some(l) = self.log.as_mut() {
            l.bytes += n as u64;
        }
        if let Some(r) = self.remaining.as_mut() {
            *r = r.saturating_sub(n as u64);
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let next = match &mut this.kind {
            Kind::Bytes(b) => b.take().filter(|b| !b.is_empty()).map(Ok),
            Kind::File(range) => match range.next.as_mut() {
                None => None,
                Some(handle) => {
                    let res = match Pin::new(handle).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(r) => r.unwrap_or_else(|e| Err(io::Error::other(e))),
                    };
                    range.next = None;
                    // Read the next chunk while this one is being sent.
                    range.start_read();
                    Some(res)
                }
            },
            Kind::Stream(rx) => match rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(chunk) => chunk,
            },
            Kind::Object(range) => match range.poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                // Hyper stops at the announced length; a stream that ends
                // before it is a cut body.
                Poll::Ready(None) if this.remaining != Some(0) => Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the object store's answer ended early",
                ))),
                Poll::Ready(chunk) => chunk,
            },
        };
        match next {
            Some(Ok(bytes)) => {
                this.sent(bytes.len());
                if this.remaining == Some(0) {
                    // Hyper will not poll again (`is_end_stream`).
                    this.finish();
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => {
                this.finish();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
