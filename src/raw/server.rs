//! Serving the tutorial's raw clients (and netcat) on ferry's port.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{info, warn};

use super::{MAX_RAW_NAME, NAME_QUIET};
use crate::connection::SendFile;
use crate::display::escape_bytes;
use crate::server::{close_gracefully, print_message, ConnCtx, RawMode};

/// Serves a raw connection whose first byte was `first`. Returns a summary
/// for the disconnect log line.
pub(crate) async fn serve(stream: TcpStream, first: u8, ctx: &ConnCtx<'_>) -> String {
    match ctx.shared.config.raw {
        RawMode::Off => {
            info!("raw client refused (--raw off)");
            close_gracefully(stream).await;
            "raw client refused".to_string()
        }
        RawMode::File => serve_file(stream, first, ctx).await,
        RawMode::Message => serve_messages(stream, first, ctx).await,
    }
}

/// Reads a raw file name: up to a newline, the client's half-close, a quiet
/// period once bytes have arrived, or [`MAX_RAW_NAME`] bytes.
async fn read_name(stream: &mut TcpStream, first: u8) -> std::io::Result<Vec<u8>> {
    let mut name = vec![first];
    let mut buf = [0u8; MAX_RAW_NAME];
    while !name.contains(&b'\n') && name.len() < MAX_RAW_NAME {
        let room = MAX_RAW_NAME - name.len();
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

async fn serve_file(mut stream: TcpStream, first: u8, ctx: &ConnCtx<'_>) -> String {
    let name = match ctx.wait(read_name(&mut stream, first)).await {
        Ok(Ok(name)) => name,
        Ok(Err(e)) => return format!("raw: read failed: {e}"),
        Err(stop) => {
            close_gracefully(stream).await;
            return format!("raw: {stop} before a file name arrived");
        }
    };
    let shown = escape_bytes(&name);
    let Some(root) = ctx.shared.root.as_ref() else {
        warn!(name = %shown, "raw download refused: this server shares no files");
        close_gracefully(stream).await;
        return format!("raw: refused {shown}: no files shared");
    };
    let (file, info) = match root.open_file(&name) {
        Ok(x) => x,
        Err(e) => {
            // The tutorial's server sends nothing for a file it cannot
            // serve; so do we, but the operator sees why.
            warn!(name = %shown, "raw download failed: {e}");
            close_gracefully(stream).await;
            return format!("raw: refused {shown}: {e}");
        }
    };
    let started = std::time::Instant::now();
    if let Err(e) = stream
        .send_file(&[], &file, 0, info.size, &ctx.write_limit())
        .await
    {
        warn!(name = %shown, "raw download interrupted: {e}");
        return format!("raw: {shown} interrupted: {e}");
    }
    info!(
        name = %shown,
        bytes = info.size,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "raw GET"
    );
    close_gracefully(stream).await;
    format!("raw: sent {shown} ({} bytes)", info.size)
}

async fn serve_messages(mut stream: TcpStream, first: u8, ctx: &ConnCtx<'_>) -> String {
    let shared = ctx.shared;
    let limit = ctx.write_limit();
    let mut buf = vec![0u8; 64 * 1024];
    buf[0] = first;
    // The rest of the first chunk is likely already here: take it so the
    // chunk prints as one line, as the tutorial's recv(1024) would.
    let mut len = 1 + stream.try_read(&mut buf[1..]).unwrap_or(0);
    let mut count = 0u64;
    loop {
        count += 1;
        if shared.config.print_messages {
            print_message(ctx.peer, &buf[..len]);
        }
        info!(bytes = len, "raw message");
        // The tutorial's clients may not read the answer and may already be
        // gone; a failed write just ends the connection, and one that stops
        // reading is dropped by the write limit.
        if limit
            .run(stream.write_all(shared.config.ack.as_bytes()))
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
                return format!("raw: {count} message(s); {stop}");
            }
        };
    }
    format!("raw: {count} message(s)")
}
