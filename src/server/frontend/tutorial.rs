//! The tutorial's protocol, server side: its clients (and netcat) on
//! ferry's port.
//!
//! * **file download**: the client sends a bare file name in one `send`
//!   (no terminator) and reads until the server closes; the server reads
//!   the name with one `recv(1024)`, streams the file and closes. For a
//!   missing file the server sends nothing and closes.
//! * **messages**: the client sends text; the server prints each chunk it
//!   receives until the client closes, and answers `已收到你的信息` to each.

use crate::tls::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use super::{close_gracefully, ConnCtx};
use crate::connection::{copy_stream_to, SendFile};
use crate::display::escape_bytes;
use crate::server::sniff::NAME_QUIET;
use crate::server::TutorialMode;
use crate::service::Content;

/// Longest file name, as the tutorial's `recv(1024)` reads.
const MAX_NAME: usize = 1024;

/// Serves a connection of the tutorial's protocol whose first bytes,
/// `head`, were already read. Returns a summary for the disconnect log
/// line.
pub(crate) async fn serve(mut stream: Stream, head: &[u8], ctx: &ConnCtx<'_>) -> String {
    if ctx.plaintext_refused() {
        // Said once, then closed: the tutorial's client would save this
        // line as its file, but it has no way to speak TLS anyway.
        let _ = ctx
            .write_limit()
            .run(
                stream
                    .write_all(b"this server requires TLS (ferry get --tls); plaintext refused\n"),
            )
            .await;
        close_gracefully(stream).await;
        return "tutorial client refused: TLS required".to_string();
    }
    if ctx.auth_required() {
        // The tutorial's protocol has nowhere to carry a token.
        let _ = ctx
            .write_limit()
            .run(stream.write_all(
                b"this server requires a token (ferry get --token); the tutorial's protocol cannot send one\n",
            ))
            .await;
        close_gracefully(stream).await;
        return "tutorial client refused: token required".to_string();
    }
    match ctx.config().tutorial {
        TutorialMode::Off => {
            info!("tutorial client refused (--tutorial off)");
            close_gracefully(stream).await;
            "tutorial client refused".to_string()
        }
        TutorialMode::File => serve_file(stream, head, ctx).await,
        TutorialMode::Message => serve_messages(stream, head, ctx).await,
    }
}

/// Reads a file name: up to a newline, the client's half-close, a quiet
/// period once bytes have arrived, or [`MAX_NAME`] bytes.
async fn read_name(stream: &mut Stream, head: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut name = head[..head.len().min(MAX_NAME)].to_vec();
    let mut buf = [0u8; MAX_NAME];
    while !name.contains(&b'\n') && name.len() < MAX_NAME {
        let room = MAX_NAME - name.len();
        match tokio::time::timeout(NAME_QUIET, stream.read(&mut buf[..room])).await {
            Err(_) | Ok(Ok(0)) => break,
            Ok(Ok(n)) => name.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Err(e),
        }
    }
    if let Some(nl) = name.iter().position(|&b| b == b'\n') {
        name.truncate(nl);
    }
    if name.last() == Some(&b'\r') {
        name.pop();
    }
    Ok(name)
}

async fn serve_file(mut stream: Stream, head: &[u8], ctx: &ConnCtx<'_>) -> String {
    let name = match ctx.wait(read_name(&mut stream, head)).await {
        Ok(Ok(name)) => name,
        Ok(Err(e)) => return format!("tutorial: read failed: {e}"),
        Err(stop) => {
            close_gracefully(stream).await;
            return format!("tutorial: {stop} before a file name arrived");
        }
    };
    let shown = escape_bytes(&name);
    let opened = match ctx.service().open(&name).await {
        Ok(x) => x,
        Err(e) => {
            // The tutorial's server sends nothing for a file it cannot
            // serve; so do we, but the operator sees why.
            warn!(name = %shown, "tutorial download failed: {e}");
            close_gracefully(stream).await;
            return format!("tutorial: refused {shown}: {e}");
        }
    };
    let started = std::time::Instant::now();
    let info = opened.info;
    let limit = ctx.write_limit();
    let sent = match opened.content {
        Content::Local(file) => stream.send_file(&[], &file, 0, info.size, &limit).await,
        Content::Object(blob) => match ctx
            .service_owned()
            .object_body(&blob, &info, 0, info.size)
            .await
        {
            Ok(body) => copy_stream_to(&mut stream, &[], body, info.size, &limit).await,
            Err(e) => Err(e),
        },
    };
    if let Err(e) = sent {
        warn!(name = %shown, "tutorial download interrupted: {e}");
        return format!("tutorial: {shown} interrupted: {e}");
    }
    info!(
        name = %shown,
        bytes = info.size,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "tutorial GET"
    );
    close_gracefully(stream).await;
    format!("tutorial: sent {shown} ({} bytes)", info.size)
}

async fn serve_messages(mut stream: Stream, head: &[u8], ctx: &ConnCtx<'_>) -> String {
    let limit = ctx.write_limit();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = head.len().min(buf.len());
    buf[..len].copy_from_slice(&head[..len]);
    // The rest of the first chunk is likely already here: take it so the
    // chunk prints as one line, as the tutorial's recv(1024) would.
    if let Ok(Ok(n)) =
        tokio::time::timeout(std::time::Duration::ZERO, stream.read(&mut buf[len..])).await
    {
        len += n;
    }
    let mut count = 0u64;
    loop {
        count += 1;
        ctx.print_message(&buf[..len]).await;
        info!(bytes = len, "tutorial message");
        // The tutorial's clients may not read the answer and may already be
        // gone; a failed write just ends the connection, and one that stops
        // reading is dropped by the write limit.
        if limit
            .run(stream.write_all(ctx.config().ack.as_bytes()))
            .await
            .is_err()
        {
            break;
        }
        len = match ctx.wait(stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(stop) => {
                close_gracefully(stream).await;
                return format!("tutorial: {count} message(s); {stop}");
            }
        };
    }
    format!("tutorial: {count} message(s)")
}
