//! The native ferry protocol, server side: the hello exchange and the request
//! loop. See `docs/PROTOCOL.md`.
//!
//! [`serve`] is the outer `call`: it turns any failure of the inner request
//! handling into one error frame and one log line. Request-level failures
//! (a missing file) answer an error frame and keep the connection;
//! connection-level ones (a malformed frame, a timeout) answer one and close.

mod put;

use std::fmt;
use std::time::Instant;

use crate::tls::Stream;
use tracing::{debug, info, warn};

use super::{close_gracefully, ConnCtx};
use crate::auth::Verdict;
use crate::connection::{Connection, ConnectionError, WriteLimit};
use crate::display::escape_controls;
use crate::protocol::{
    caps, ErrorCode, FileHeader, Frame, GetRequest, StatReply, HASH_LEN, MAGIC, VERSION,
};
use crate::service::Content;
use crate::storage::{FileInfo, PathError};

/// Queued answer bytes past which the server flushes even while more
/// requests are waiting in its read buffer. Together with "flush whenever
/// no whole request is buffered", this bounds what one connection can
/// make the server hold: a client that pipelines requests and never reads
/// the answers fills its socket, the flush waits (under the write limit),
/// and no further request is read meanwhile. Backpressure, whatever the
/// client's write pattern.
const FLUSH_AT: usize = 64 * 1024;

/// Longest the last error frame of a closing connection may wait for the
/// peer to take it.
const FAREWELL_STALL: std::time::Duration = std::time::Duration::from_secs(2);

/// Totals of one connection, for the disconnect log line.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// Whether our magic went out (an error before it must carry it, so the
    /// client can read the error instead of calling us "not ferry").
    magic_sent: bool,
    requests: u64,
    bytes: u64,
    end: String,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} request(s), {} body byte(s) sent; {}",
            self.requests, self.bytes, self.end
        )
    }
}

/// Why the request loop ended.
pub(super) enum End {
    /// The client closed cleanly.
    Closed,
    /// We close, after sending this frame.
    Fatal(Frame, String),
    /// The connection is broken; nothing more can be sent.
    Broken(String),
}

/// Serves a native ferry client whose first byte(s) were already read.
pub(crate) async fn serve(stream: Stream, already_read: &[u8], ctx: &ConnCtx<'_>) -> Summary {
    let mut conn = Connection::with_buffered(stream, already_read);
    conn.set_write_limit(ctx.write_limit());
    let mut summary = Summary::default();
    let end = run(&mut conn, ctx, &mut summary).await;
    summary.end = match end {
        End::Closed => "closed by client".to_string(),
        End::Broken(why) => why,
        End::Fatal(frame, why) => {
            if let Frame::Error { code, .. } = &frame {
                if *code != ErrorCode::ShuttingDown as u16 && *code != ErrorCode::Timeout as u16 {
                    warn!("closing connection: {why}");
                }
            }
            if !summary.magic_sent {
                conn.queue_raw(&MAGIC);
            }
            conn.queue(&frame);
            // The farewell is owed even to an evicted connection (whose
            // token would cut this write short): bounded on its own.
            conn.set_write_limit(WriteLimit::new(FAREWELL_STALL));
            let _ = conn.flush().await;
            close_gracefully(conn.into_stream()).await;
            why
        }
    };
    summary
}

pub(super) fn fatal(code: ErrorCode, why: impl Into<String>) -> End {
    let why = why.into();
    End::Fatal(Frame::error(code, why.clone()), why)
}

fn from_conn_error(e: ConnectionError) -> End {
    match e {
        ConnectionError::Decode(d) => fatal(ErrorCode::BadFrame, format!("malformed frame: {d}")),
        // A peer that ends its stream inside the magic or a frame has sent
        // bytes that can never form a valid frame: answer `BadFrame` as for
        // any malformed frame (it may have only half-closed and still be
        // reading). Closing silently left such a client with no reason at
        // all (tests/it/hostile.rs). To a peer that is gone entirely, the
        // write just fails, which `serve` ignores.
        ConnectionError::UnexpectedEof(what) => fatal(
            ErrorCode::BadFrame,
            format!("truncated input: client closed in the middle of {what}"),
        ),
        ConnectionError::Io(e) => End::Broken(format!("connection error: {e}")),
    }
}

/// Waits for the next frame as an evictable, time-limited wait.
pub(super) async fn next_frame(
    conn: &mut Connection<Stream>,
    ctx: &ConnCtx<'_>,
) -> Result<Option<Frame>, End> {
    match ctx.wait(conn.read_frame()).await {
        Ok(Ok(frame)) => Ok(frame),
        Ok(Err(e)) => Err(from_conn_error(e)),
        Err(stop) => Err(End::Fatal(stop.frame(), stop.to_string())),
    }
}

async fn run(conn: &mut Connection<Stream>, ctx: &ConnCtx<'_>, summary: &mut Summary) -> End {
    match ctx.wait(conn.read_magic()).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return End::Closed,
        Ok(Err(ConnectionError::Decode(_))) => {
            return fatal(ErrorCode::BadFrame, "bad magic: not a ferry client")
        }
        Ok(Err(e)) => return from_conn_error(e),
        Err(stop) => return End::Fatal(stop.frame(), stop.to_string()),
    }
    let hello = match next_frame(conn, ctx).await {
        Ok(Some(f)) => f,
        Ok(None) => return End::Closed,
        Err(end) => return end,
    };
    let Frame::Hello {
        version,
        caps: asked,
        token,
    } = hello
    else {
        return fatal(
            ErrorCode::UnexpectedFrame,
            format!("expected Hello, got {}", hello.name()),
        );
    };
    if ctx.plaintext_refused() {
        return fatal(
            ErrorCode::TlsRequired,
            "this server requires TLS: connect with --tls",
        );
    }
    match ctx.authorize(token.as_deref()) {
        Verdict::Granted => {}
        Verdict::Missing => {
            return fatal(
                ErrorCode::Unauthorized,
                "this server requires a token: use --token or FERRY_TOKEN",
            )
        }
        Verdict::Wrong(delay) => {
            info!("wrong token");
            tokio::time::sleep(delay).await;
            return fatal(ErrorCode::Unauthorized, "wrong token");
        }
    }
    if version == 0 {
        return fatal(
            ErrorCode::UnsupportedVersion,
            format!("client speaks version {version}; this server speaks 1 to {VERSION}"),
        );
    }
    conn.queue_raw(&MAGIC);
    summary.magic_sent = true;
    conn.queue(&Frame::Welcome {
        version: version.min(VERSION),
        caps: asked & granted_caps(ctx),
    });
    if let Err(e) = conn.flush().await {
        return End::Broken(format!("connection error: {e}"));
    }
    debug!(version, "hello");

    loop {
        let frame = match next_frame(conn, ctx).await {
            Ok(Some(f)) => f,
            Ok(None) => return End::Closed,
            Err(end) => return end,
        };
        summary.requests += 1;
        let res = match frame {
            Frame::Get(g) => handle_get(conn, ctx, g, summary).await,
            Frame::Stat { path } => {
                handle_stat(conn, ctx, &path).await;
                Ok(())
            }
            Frame::List { path } => handle_list(conn, ctx, &path).await,
            Frame::Put(p) => put::handle_put(conn, ctx, p).await,
            Frame::Message { text } => {
                ctx.print_message(&text).await;
                info!(bytes = text.len(), "MSG");
                conn.queue(&Frame::Ack {
                    text: ctx.config().ack.as_bytes().to_vec(),
                });
                Ok(())
            }
            other => {
                return fatal(
                    ErrorCode::UnexpectedFrame,
                    format!("{} is not a request", other.name()),
                )
            }
        };
        if let Err(end) = res {
            return end;
        }
        // Pipelined requests already buffered are answered before flushing,
        // so a burst of small answers leaves in few segments, but never
        // more than FLUSH_AT of them: see there.
        if !conn.frame_ready() || conn.queued_len() >= FLUSH_AT {
            if let Err(e) = conn.flush().await {
                return End::Broken(format!("connection error: {e}"));
            }
        }
    }
}

/// The capabilities this server grants (when asked).
fn granted_caps(ctx: &ConnCtx<'_>) -> u64 {
    let mut c = caps::NONE;
    if ctx.auth_required() {
        c |= caps::TOKEN;
    }
    if ctx.service().accepts_uploads() {
        c |= caps::UPLOAD;
    }
    c
}

/// Formats a request path for messages and logs.
pub(super) fn shown(path: &[u8]) -> String {
    escape_controls(&String::from_utf8_lossy(path)).into_owned()
}

fn path_error_frame(e: &PathError, path: &[u8]) -> Frame {
    let code = e.code();
    let msg = match e {
        PathError::Invalid(why) => format!("invalid path: {why}: {}", shown(path)),
        other => format!("{other}: {}", shown(path)),
    };
    Frame::error(code, msg)
}

async fn handle_get(
    conn: &mut Connection<Stream>,
    ctx: &ConnCtx<'_>,
    g: GetRequest,
    summary: &mut Summary,
) -> Result<(), End> {
    let started = Instant::now();
    let service = ctx.service();
    let opened = match service.open(&g.path).await {
        Ok(x) => x,
        Err(e) => {
            info!(path = %shown(&g.path), "GET refused: {e}");
            conn.queue(&path_error_frame(&e, &g.path));
            return Ok(());
        }
    };
    let info = opened.info;
    let mut offset = g.offset;
    let mut wanted = g.length;
    if let Some(v) = g.if_unchanged {
        if v.size != info.size || v.mtime_ns != info.mtime_ns {
            debug!("file changed since the client's partial download; sending it whole");
            offset = 0;
            wanted = None;
        }
    }
    if offset > info.size {
        conn.queue(&Frame::error(
            ErrorCode::RangeNotSatisfiable,
            format!(
                "offset {offset} is beyond the end of {} ({} bytes)",
                shown(&g.path),
                info.size
            ),
        ));
        return Ok(());
    }
    let available = info.size - offset;
    let length = wanted.map_or(available, |l| l.min(available));
    conn.queue(&Frame::FileHeader(FileHeader {
        offset,
        length,
        size: info.size,
        mtime_ns: info.mtime_ns,
    }));
    let hash = if length == 0 && info.size > 0 {
        // No body, so no hashing: a request for nothing must not cost the
        // server a read of the whole file. The trailer carries the hash if
        // it is already known, else zeroes ("unknown", docs/PROTOCOL.md).
        if let Err(e) = conn.flush().await {
            return Err(End::Broken(format!("connection error: {e}")));
        }
        Ok(service.known_hash(&info).unwrap_or([0; HASH_LEN]))
    } else {
        // The body and the hash proceed side by side: the first body byte
        // never waits for the hash, which only the trailer needs.
        let owned = ctx.service_owned();
        let send = async {
            match &opened.content {
                Content::Local(file) => conn.send_file(file, offset, length).await,
                Content::Object(blob) => {
                    let body = owned.object_body(blob, &info, offset, length).await?;
                    conn.send_stream(body, length).await
                }
            }
        };
        // An object sent whole is hashed on its way (one read, not two):
        // its hash is asked for once it has passed.
        let (sent, hash) = if service.hashes_while_sending(&opened, offset, length) {
            let sent = send.await;
            let hash = match &sent {
                Ok(()) => service.hash(&opened).await,
                Err(_) => Err(std::io::Error::other("not sent")),
            };
            (sent, hash)
        } else {
            tokio::join!(send, service.hash(&opened))
        };
        if let Err(e) = sent {
            return Err(End::Broken(format!(
                "sending {} failed after header: {e}",
                shown(&g.path)
            )));
        }
        hash
    };
    summary.bytes += length;
    let hash = match hash {
        Ok(h) => h,
        Err(e) => {
            // Without a trailer the client treats the body as interrupted
            // and retries; the file is changing under us.
            return Err(End::Broken(format!(
                "hashing {} failed: {e}",
                shown(&g.path)
            )));
        }
    };
    conn.queue(&Frame::Trailer { hash });
    info!(
        path = %shown(&g.path),
        offset,
        bytes = length,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "GET"
    );
    Ok(())
}

async fn handle_stat(conn: &mut Connection<Stream>, ctx: &ConnCtx<'_>, path: &[u8]) {
    match ctx.service().stat(path).await {
        Ok(info) => {
            info!(path = %shown(path), "STAT");
            conn.queue(&Frame::StatReply(stat_reply(ctx, &info)));
        }
        Err(e) => {
            info!(path = %shown(path), "STAT refused: {e}");
            conn.queue(&path_error_frame(&e, path));
        }
    }
}

fn stat_reply(ctx: &ConnCtx<'_>, info: &FileInfo) -> StatReply {
    StatReply {
        kind: info.kind,
        size: info.size,
        mtime_ns: info.mtime_ns,
        hash: ctx.service().known_hash(info),
    }
}

async fn handle_list(
    conn: &mut Connection<Stream>,
    ctx: &ConnCtx<'_>,
    path: &[u8],
) -> Result<(), End> {
    let entries = match ctx.service().list(path).await {
        Ok(e) => e,
        Err(e) => {
            info!(path = %shown(path), "LIST refused: {e}");
            conn.queue(&path_error_frame(&e, path));
            return Ok(());
        }
    };
    let count = entries.len() as u64;
    for e in entries {
        conn.queue(&Frame::ListEntry(e.entry));
        if conn.queued_len() >= FLUSH_AT {
            conn.flush()
                .await
                .map_err(|e| End::Broken(format!("connection error: {e}")))?;
        }
    }
    conn.queue(&Frame::ListEnd { count });
    info!(path = %shown(path), entries = count, "LIST");
    Ok(())
}
