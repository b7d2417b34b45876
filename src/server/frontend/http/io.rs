//! [`HttpIo`]: the connection as hyper sees it, with the bytes the sniffer
//! already read put back in front, and the server's limits applied where
//! hyper has none of its own.
//!
//! * **Idle**: while no response is in flight, a read that waits is the
//!   connection waiting for its next request: the registry is told (so the
//!   connection can be evicted to make room), and after the idle timeout
//!   without a byte the connection ends. (Hyper's own header-read timeout,
//!   also set, bounds a request head that trickles in.)
//! * **Stalled writes**: a write that waits is reported to the registry
//!   like any other front-end's, and fails after the idle timeout without
//!   the peer taking a byte.
//! * **Eviction**: once the registry evicts the connection, the next read
//!   or write that would wait fails instead, and hyper closes it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::tls::Stream;
use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::connection::{evicted, stalled, StallWatch};
use crate::server::registry::ConnState;

/// Responses of this connection still being sent (a body not yet dropped):
/// while any is, a waiting read is not idleness.
pub(crate) type InFlight = Arc<AtomicUsize>;

/// The TCP stream under hyper.
pub(crate) struct HttpIo {
    stream: Stream,
    head: Bytes,
    idle: Duration,
    in_flight: InFlight,
    state: Arc<ConnState>,
    watch: Arc<dyn StallWatch>,
    evict: Pin<Box<WaitForCancellationFutureOwned>>,
    read_deadline: Option<Pin<Box<Sleep>>>,
    write_deadline: Option<Pin<Box<Sleep>>>,
}

impl HttpIo {
    pub(crate) fn new(
        stream: Stream,
        head: Vec<u8>,
        idle: Duration,
        in_flight: InFlight,
        state: Arc<ConnState>,
        watch: Arc<dyn StallWatch>,
        evict: CancellationToken,
    ) -> Self {
        HttpIo {
            stream,
            head: Bytes::from(head),
            idle,
            in_flight,
            state,
            watch,
            evict: Box::pin(evict.cancelled_owned()),
            read_deadline: None,
            write_deadline: None,
        }
    }

    fn evicted(&mut self, cx: &mut Context<'_>) -> bool {
        self.evict.as_mut().poll(cx).is_ready()
    }
}

/// Polls a deadline, arming it first; true once it has passed.
fn expired(deadline: &mut Option<Pin<Box<Sleep>>>, after: Duration, cx: &mut Context<'_>) -> bool {
    deadline
        .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)))
        .as_mut()
        .poll(cx)
        .is_ready()
}

impl AsyncRead for HttpIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.head.has_remaining() {
            let n = this.head.len().min(buf.remaining());
            buf.put_slice(&this.head[..n]);
            this.head.advance(n);
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.read_deadline = None;
                if this.in_flight.load(Ordering::Acquire) == 0 {
                    this.state.set_idle(false);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if this.evicted(cx) {
                    return Poll::Ready(Err(evicted()));
                }
                if this.in_flight.load(Ordering::Acquire) > 0 {
                    // Hyper watches for the peer closing while a response
                    // is sent: not idleness.
                    this.read_deadline = None;
                    return Poll::Pending;
                }
                this.state.set_idle(true);
                if expired(&mut this.read_deadline, this.idle, cx) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "idle timeout: no request",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl HttpIo {
    /// Runs one write step: a waiting write is reported as stalled, fails
    /// after the idle timeout, and fails at once once evicted.
    fn write_step<T>(
        &mut self,
        cx: &mut Context<'_>,
        step: impl FnOnce(Pin<&mut Stream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match step(Pin::new(&mut self.stream), cx) {
            Poll::Ready(r) => {
                if self.write_deadline.take().is_some() {
                    self.watch.waiting(false);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if self.evicted(cx) {
                    return Poll::Ready(Err(evicted()));
                }
                if self.write_deadline.is_none() {
                    self.watch.waiting(true);
                }
                if expired(&mut self.write_deadline, self.idle, cx) {
                    return Poll::Ready(Err(stalled()));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for HttpIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_step(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write_step(cx, |s, cx| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write_step(cx, |s, cx| s.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write_step(cx, |s, cx| s.poll_shutdown(cx))
    }
}
