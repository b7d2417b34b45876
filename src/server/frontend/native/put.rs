//! Uploads over the native protocol: `Put`, the body, `PutEnd`, answered
//! by `PutDone` or an error (docs/PROTOCOL.md, "Uploads").
//!
//! Whatever goes wrong with the file, the body the client announced is
//! still read (and dropped) to its end, so the connection stays in step
//! and the error reaches a client that is busy writing; only a broken or
//! silent connection ends it, and then the temporary is kept for a resume.

use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::{next_frame, shown, End};
use crate::connection::Connection;
use crate::protocol::{ErrorCode, Frame, PutRequest};
use crate::server::frontend::ConnCtx;
use crate::service::{UploadTask, UPLOAD_CHUNK};
use crate::storage::{UploadError, UploadSpec};
use crate::tls::Stream;

fn error_frame(e: &UploadError, path: &[u8]) -> Frame {
    Frame::error(e.code(), format!("{e}: {}", shown(path)))
}

/// Reads up to `want` body bytes into `buf` (cleared first), each read
/// bounded by `idle`.
async fn fill(
    conn: &mut Connection<Stream>,
    buf: &mut Vec<u8>,
    want: usize,
    idle: Duration,
) -> Result<(), End> {
    buf.resize(want, 0);
    let mut filled = 0;
    while filled < want {
        let n = match tokio::time::timeout(idle, conn.read_raw(&mut buf[filled..])).await {
            Ok(Ok(0)) => {
                return Err(End::Broken(
                    "client closed in the middle of an upload".into(),
                ))
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                return Err(End::Broken(format!(
                    "connection error during an upload: {e}"
                )))
            }
            Err(_) => {
                return Err(End::Broken(
                    "client stopped sending an upload's body".into(),
                ))
            }
        };
        filled += n;
    }
    Ok(())
}

/// Reads and drops `left` body bytes, then the `PutEnd` after them.
async fn skip_body(
    conn: &mut Connection<Stream>,
    ctx: &ConnCtx<'_>,
    mut left: u64,
) -> Result<(), End> {
    let mut buf = Vec::with_capacity(64 * 1024);
    while left > 0 {
        let n = left.min(64 * 1024) as usize;
        fill(conn, &mut buf, n, ctx.config().idle_timeout).await?;
        left -= n as u64;
    }
    expect_end(conn, ctx).await.map(|_| ())
}

async fn expect_end(conn: &mut Connection<Stream>, ctx: &ConnCtx<'_>) -> Result<[u8; 32], End> {
    match next_frame(conn, ctx).await? {
        Some(Frame::PutEnd { hash }) => Ok(hash),
        Some(other) => Err(super::fatal(
            ErrorCode::UnexpectedFrame,
            format!(
                "expected PutEnd after an upload's body, got {}",
                other.name()
            ),
        )),
        None => Err(End::Broken("client closed before ending its upload".into())),
    }
}

/// Receives `left` bytes into `task`. `Ok(Err(e))`: the file failed (the
/// rest of the body was still read); `Err`: the connection did.
async fn receive(
    conn: &mut Connection<Stream>,
    ctx: &ConnCtx<'_>,
    task: &mut UploadTask,
    mut left: u64,
) -> Result<Result<(), UploadError>, End> {
    let idle = ctx.config().idle_timeout;
    while left > 0 {
        let mut buf = task.buffer();
        let n = left.min(UPLOAD_CHUNK as u64) as usize;
        fill(conn, &mut buf, n, idle).await?;
        left -= n as u64;
        if let Err(e) = task.write(buf).await {
            skip_body(conn, ctx, left).await?;
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

/// Answers one `Put`.
pub(super) async fn handle_put(
    conn: &mut Connection<Stream>,
    ctx: &ConnCtx<'_>,
    p: PutRequest,
) -> Result<(), End> {
    let started = Instant::now();
    let spec = UploadSpec {
        size: Some(p.size),
        mtime_ns: Some(p.mtime_ns),
        offset: p.inline.then_some(0),
    };
    let mut task = match ctx.service().begin_upload(&p.path, spec).await {
        Ok(t) => t,
        Err(e) => {
            info!(path = %shown(&p.path), "PUT refused: {e}");
            conn.queue(&error_frame(&e, &p.path));
            if p.inline {
                skip_body(conn, ctx, p.size).await?;
            }
            return Ok(());
        }
    };
    let offset = task.offset();
    if !p.inline {
        conn.queue(&Frame::PutReady { offset });
        conn.flush()
            .await
            .map_err(|e| End::Broken(format!("connection error: {e}")))?;
    }
    let received = match receive(conn, ctx, &mut task, p.size - offset).await {
        Ok(r) => r,
        Err(end) => {
            debug!(path = %shown(&p.path), "upload cut short; its temporary is kept for a resume");
            task.keep().await;
            return Err(end);
        }
    };
    if let Err(e) = received {
        info!(path = %shown(&p.path), "PUT failed: {e}");
        conn.queue(&error_frame(&e, &p.path));
        return Ok(());
    }
    let hash = match expect_end(conn, ctx).await {
        Ok(h) => h,
        Err(end) => {
            task.keep().await;
            return Err(end);
        }
    };
    match task.finish(Some(hash)).await {
        Ok(c) => {
            info!(
                path = %shown(&p.path),
                bytes = p.size - offset,
                resumed_at = offset,
                replaced = c.replaced,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "PUT"
            );
            conn.queue(&Frame::PutDone {
                size: c.info.size,
                replaced: c.replaced,
            });
        }
        Err(e) => {
            info!(path = %shown(&p.path), "PUT failed: {e}");
            conn.queue(&error_frame(&e, &p.path));
        }
    }
    Ok(())
}
