//! Zero-copy file bodies: `sendfile(2)` from the page cache to a TCP socket.
//!
//! The header bytes go out with `MSG_MORE`, so the kernel holds them until
//! the body's first bytes join them in one segment. The body then moves from
//! the page cache to the socket without passing through ferry's memory, so a
//! transfer costs no buffer at all, whatever the file size.
//!
//! Elsewhere than Linux, [`crate::connection::copy_file_to`] is used.

use std::fs::File;
use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::connection::WriteLimit;

/// Largest count handed to one `sendfile` call. Linux caps a call at just
/// under 2 GiB anyway; smaller calls let other tasks on this worker run
/// between pieces of a long transfer.
#[cfg(target_os = "linux")]
const SENDFILE_CHUNK: usize = 16 * 1024 * 1024;

/// Writes `prefix` then `len` bytes of `file` from `offset` to `stream`.
///
/// # Errors
///
/// The socket's IO error, or `UnexpectedEof` if the file ends before
/// `offset + len` (it was truncated while being served).
#[cfg(target_os = "linux")]
pub async fn send_file(
    stream: &mut TcpStream,
    prefix: &[u8],
    file: &File,
    offset: u64,
    len: u64,
    limit: &WriteLimit,
) -> io::Result<()> {
    use rustix::net::SendFlags;
    use std::os::fd::AsFd;
    use tokio::io::Interest;

    let mut sent = 0;
    while sent < prefix.len() {
        // MSG_MORE only when a body follows: otherwise the header must leave now.
        let flags = if len > 0 {
            SendFlags::MORE
        } else {
            SendFlags::empty()
        };
        limit.run(stream.writable()).await?;
        match stream.try_io(Interest::WRITABLE, || {
            rustix::net::send(stream.as_fd(), &prefix[sent..], flags).map_err(io::Error::from)
        }) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }

    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let count = usize::try_from(end - pos)
            .unwrap_or(usize::MAX)
            .min(SENDFILE_CHUNK);
        // A readiness wait that is already satisfied does not count against
        // tokio's cooperative budget: without this, a transfer to a fast
        // reader would never yield, and nothing else on this worker (other
        // connections, shutdown) would run until it ended.
        tokio::task::consume_budget().await;
        limit.run(stream.writable()).await?;
        let res = stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream.as_fd(), file, Some(&mut pos), count)
                .map_err(io::Error::from)
        });
        match res {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being sent",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Why [`splice_to_file`] stopped.
#[derive(Debug)]
pub enum SpliceError {
    /// The socket failed.
    Socket(io::Error),
    /// Writing the file failed (disk full, read-only...).
    File(io::Error),
    /// The peer closed before all bytes arrived.
    Eof,
}

/// How long a body may stall (no byte at all) before the receive gives up:
/// a silently dead link must not hang a download forever.
pub const RECV_STALL: Duration = Duration::from_secs(60);

#[cfg(target_os = "linux")]
async fn readable(stream: &TcpStream) -> Result<(), SpliceError> {
    match tokio::time::timeout(RECV_STALL, stream.readable()).await {
        Ok(r) => r.map_err(SpliceError::Socket),
        Err(_) => Err(SpliceError::Socket(io::Error::new(
            io::ErrorKind::TimedOut,
            "no data from the server for 60 s",
        ))),
    }
}

/// How many bytes a receive moves between yields to the runtime.
#[cfg(target_os = "linux")]
const YIELD_EVERY: u64 = 8 * 1024 * 1024;

/// Pipe size asked for: one splice moves up to this much. The kernel may
/// grant less (`/proc/sys/fs/pipe-max-size`).
#[cfg(target_os = "linux")]
const PIPE_SIZE: usize = 1024 * 1024;

/// Receives exactly `len` bytes from `stream` into `file` at `offset` with
/// `splice(2)` (socket → pipe → file), so the bytes never enter user space.
/// `progress` is called with the file offset reached after each piece.
///
/// Where the file system cannot take spliced writes, the bytes in flight are
/// copied out of the pipe and the rest is received with plain reads.
///
/// # Errors
///
/// [`SpliceError`], telling socket from file failures.
#[cfg(target_os = "linux")]
pub async fn splice_to_file(
    stream: &TcpStream,
    file: &File,
    offset: u64,
    len: u64,
    mut progress: impl FnMut(u64),
) -> Result<(), SpliceError> {
    use rustix::pipe::{
        fcntl_getpipe_size, fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags,
    };
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;
    use tokio::io::Interest;

    let (pr, pw) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
        .map_err(|e| SpliceError::File(e.into()))?;
    let _ = fcntl_setpipe_size(&pw, PIPE_SIZE);
    let cap = fcntl_getpipe_size(&pw).unwrap_or(64 * 1024).max(4096);
    let mut pos = offset;
    let end = offset + len;
    let mut copy_buf: Vec<u8> = Vec::new();
    let mut last_yield = pos;
    while pos < end {
        let want = usize::try_from(end - pos).unwrap_or(usize::MAX).min(cap);
        if !copy_buf.is_empty() {
            // Fallback: plain reads.
            let n = loop {
                readable(stream).await?;
                let want = want.min(copy_buf.len());
                match stream.try_read(&mut copy_buf[..want]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(SpliceError::Socket(e)),
                }
            };
            if n == 0 {
                return Err(SpliceError::Eof);
            }
            file.write_all_at(&copy_buf[..n], pos)
                .map_err(SpliceError::File)?;
            pos += n as u64;
            progress(pos);
            continue;
        }
        // Yield every few MiB, as in `send_file`, or Ctrl-C (and every other
        // task) waits until the socket happens to run dry. By bytes, not by
        // tokio's budget of 128 polls: a write into the page cache can be
        // throttled for milliseconds when much is dirty, and 128 of those
        // kept Ctrl-C waiting for a second.
        if pos - last_yield >= YIELD_EVERY {
            last_yield = pos;
            tokio::task::yield_now().await;
        }
        readable(stream).await?;
        let moved = stream.try_io(Interest::READABLE, || {
            splice(
                stream.as_fd(),
                None,
                &pw,
                None,
                want,
                SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
            )
            .map_err(io::Error::from)
        });
        let n = match moved {
            Ok(0) => return Err(SpliceError::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(SpliceError::Socket(e)),
        };
        let mut left = n;
        while left > 0 {
            match splice(&pr, None, file, Some(&mut pos), left, SpliceFlags::MOVE) {
                Ok(0) => return Err(SpliceError::File(io::Error::other("splice wrote nothing"))),
                Ok(m) => left -= m,
                Err(rustix::io::Errno::INVAL) if copy_buf.is_empty() => {
                    // This file system takes no spliced writes: empty the
                    // pipe by hand and switch to plain reads.
                    copy_buf = vec![0u8; cap];
                    while left > 0 {
                        let r = rustix::io::read(&pr, &mut copy_buf[..left.min(cap)])
                            .map_err(|e| SpliceError::File(e.into()))?;
                        file.write_all_at(&copy_buf[..r], pos)
                            .map_err(SpliceError::File)?;
                        pos += r as u64;
                        left -= r;
                    }
                }
                Err(e) => return Err(SpliceError::File(e.into())),
            }
        }
        progress(pos);
    }
    Ok(())
}
