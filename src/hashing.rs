//! BLAKE3 over files, shared by the server (hash cache) and the client
//! (verifying split downloads).

use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;

use crate::protocol::HASH_LEN;

/// Read size while hashing: large reads keep the per-byte copy cost low.
const HASH_CHUNK: usize = 1024 * 1024;

/// Hashes the first `size` bytes of `file` with positional reads (the file
/// offset is untouched, so the same handle can be in use elsewhere).
///
/// # Errors
///
/// A read error, or `UnexpectedEof` if the file is shorter than `size`.
pub fn hash_file(file: &File, size: u64) -> io::Result<[u8; HASH_LEN]> {
    let mut hasher = blake3::Hasher::new();
    update_from_file(&mut hasher, file, size)?;
    Ok(*hasher.finalize().as_bytes())
}

/// Feeds the first `size` bytes of `file` to `hasher` (positional reads,
/// bounded buffer): what an upload resumed at `size` has already received.
///
/// # Errors
///
/// As [`hash_file`].
pub fn update_from_file(hasher: &mut blake3::Hasher, file: &File, size: u64) -> io::Result<()> {
    for_each_chunk(file, size, |c| {
        hasher.update(c);
    })
}

/// Hands the first `size` bytes of `file` to `each`, in chunks read with
/// positional reads into one bounded buffer (for any hash).
///
/// # Errors
///
/// As [`hash_file`].
pub fn for_each_chunk(file: &File, size: u64, mut each: impl FnMut(&[u8])) -> io::Result<()> {
    try_for_each_chunk(file, size, |c| {
        each(c);
        ControlFlow::Continue(())
    })
    .map(|_| ())
}

/// [`for_each_chunk`] that `each` can stop early by answering `Break`
/// (what it answered last is returned).
///
/// # Errors
///
/// As [`hash_file`].
pub fn try_for_each_chunk(
    file: &File,
    size: u64,
    mut each: impl FnMut(&[u8]) -> ControlFlow<()>,
) -> io::Result<ControlFlow<()>> {
    let mut buf = vec![
        0u8;
        HASH_CHUNK
            .min(usize::try_from(size).unwrap_or(HASH_CHUNK))
            .max(1)
    ];
    let mut pos = 0u64;
    while pos < size {
        let want = buf
            .len()
            .min(usize::try_from(size - pos).unwrap_or(usize::MAX));
        let n = file.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being hashed",
            ));
        }
        if each(&buf[..n]).is_break() {
            return Ok(ControlFlow::Break(()));
        }
        pos += n as u64;
    }
    Ok(ControlFlow::Continue(()))
}
