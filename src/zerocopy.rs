//! Zero-copy file bodies: `sendfile(2)` from the page cache to a TCP socket.
//!
//! The header bytes go out with `MSG_MORE`, so the kernel holds them until
//! the body's first bytes join them in one segment. The body then moves from
//! the page cache to the socket without passing through ferry's memory, so a
//! transfer costs no buffer at all, whatever the file size.
//!
//! Elsewhere than Linux, the portable copy path is used.

use std::fs::File;
use std::io;

use tokio::net::TcpStream;

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
        stream.writable().await?;
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
        stream.writable().await?;
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

/// Portable fallback: see [`crate::connection::copy_file_to`].
///
/// # Errors
///
/// As the Linux version.
#[cfg(not(target_os = "linux"))]
pub async fn send_file(
    stream: &mut TcpStream,
    prefix: &[u8],
    file: &File,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    crate::connection::copy_file_to(stream, prefix, file, offset, len).await
}
