//! Hashing beside the receive, on a thread of its own, so verification
//! does not slow a download down.
//!
//! * [`GrowingHash`] follows a file as it is written (the splice path): it
//!   reads each newly written stretch back from the page cache with
//!   positional reads into one bounded buffer and hashes it. A resumed
//!   prefix is hashed while new bytes already arrive. (Not a mapping of the
//!   whole file: its pages would stay in the process's resident set, a
//!   gigabyte of RSS for a gigabyte downloaded.)
//! * [`StreamHash`] hashes buffers handed over by the receiver (the stdout
//!   path), returning them to a small pool.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;

use crate::protocol::HASH_LEN;

/// The writer tells the hasher about progress only in steps this large:
/// fewer wake-ups, and the hasher still trails the writer closely.
const NOTIFY_STEP: u64 = 4 * 1024 * 1024;

/// Largest stretch hashed between checks for news from the writer.
const HASH_STEP: u64 = 4 * 1024 * 1024;

/// A hash that follows a file as it grows.
#[derive(Debug)]
pub struct GrowingHash {
    tx: Option<mpsc::Sender<u64>>,
    told: AtomicU64,
    result: oneshot::Receiver<io::Result<[u8; HASH_LEN]>>,
}

impl GrowingHash {
    /// Starts hashing `file`, which will grow to `size` bytes and whose
    /// first `already` bytes are written.
    ///
    /// # Errors
    ///
    /// If the file cannot be mapped or the thread cannot be spawned.
    pub fn start(file: File, already: u64, size: u64) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let (done_tx, result) = oneshot::channel();
        thread::Builder::new()
            .name("ferry-hash".into())
            .spawn(move || {
                let _ = done_tx.send(hash_as_written(&file, size, already, &rx));
            })?;
        Ok(GrowingHash {
            tx: Some(tx),
            told: AtomicU64::new(already),
            result,
        })
    }

    /// Tells the hasher that bytes `[0, n)` are now written.
    pub fn advance(&self, n: u64) {
        if n >= self.told.load(Ordering::Relaxed) + NOTIFY_STEP {
            self.tell(n);
        }
    }

    fn tell(&self, n: u64) {
        self.told.store(n, Ordering::Relaxed);
        if let Some(tx) = &self.tx {
            let _ = tx.send(n);
        }
    }

    /// Waits for the hash of the file's first `total` bytes (all of which
    /// must be written).
    ///
    /// # Errors
    ///
    /// If the hashing thread failed.
    pub async fn finish(mut self, total: u64) -> io::Result<[u8; HASH_LEN]> {
        self.tell(total);
        drop(self.tx.take());
        self.result
            .await
            .unwrap_or_else(|_| Err(io::Error::other("hashing thread died")))
    }
}

fn hash_as_written(
    file: &File,
    size: u64,
    already: u64,
    rx: &mpsc::Receiver<u64>,
) -> io::Result<[u8; HASH_LEN]> {
    use std::os::unix::fs::FileExt;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; usize::try_from(HASH_STEP.min(size.max(1))).unwrap_or(1)];
    let mut hashed = 0u64;
    let mut written = already;
    loop {
        while hashed < written {
            if written > size {
                return Err(io::Error::other("written past the announced size"));
            }
            let want = usize::try_from((written - hashed).min(buf.len() as u64))
                .map_err(io::Error::other)?;
            let n = file.read_at(&mut buf[..want], hashed)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the part file is shorter than what was written",
                ));
            }
            hasher.update(&buf[..n]);
            hashed += n as u64;
            // Take news without waiting, to hash up to the newest position.
            while let Ok(n) = rx.try_recv() {
                written = written.max(n);
            }
        }
        match rx.recv() {
            Ok(n) => written = written.max(n),
            Err(_) => break,
        }
    }
    Ok(*hasher.finalize().as_bytes())
}

/// BLAKE3 of a stream of buffers, on a thread of its own: the receiving
/// thread fills a buffer from the socket, hands it over and fills the next
/// while this one is hashed, so hashing costs no time on the receive path.
/// Buffers come back to a small pool: nothing is allocated per chunk.
#[derive(Debug)]
pub struct StreamHash {
    full: Option<mpsc::SyncSender<(Vec<u8>, usize)>>,
    free: mpsc::Receiver<Vec<u8>>,
    made: usize,
    buf_len: usize,
    result: oneshot::Receiver<[u8; HASH_LEN]>,
}

/// Buffers in flight between the receiver and the hashing thread.
const POOL: usize = 4;

impl StreamHash {
    /// Starts the hashing thread; buffers will be `buf_len` bytes.
    ///
    /// # Errors
    ///
    /// If the thread cannot be spawned.
    pub fn start(buf_len: usize) -> io::Result<Self> {
        let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(POOL);
        let (free_tx, free) = mpsc::sync_channel(POOL);
        let (done_tx, result) = oneshot::channel();
        thread::Builder::new()
            .name("ferry-hash".into())
            .spawn(move || {
                let mut hasher = blake3::Hasher::new();
                for (buf, n) in full_rx {
                    hasher.update(&buf[..n]);
                    let _ = free_tx.send(buf);
                }
                let _ = done_tx.send(*hasher.finalize().as_bytes());
            })?;
        Ok(StreamHash {
            full: Some(full_tx),
            free,
            made: 0,
            buf_len: buf_len.max(1),
            result,
        })
    }

    /// A buffer to fill: a returned one, a new one while the pool is not
    /// full, or else the next one the hasher gives back (waiting for it).
    pub fn buffer(&mut self) -> Vec<u8> {
        if let Ok(b) = self.free.try_recv() {
            return b;
        }
        if self.made < POOL {
            self.made += 1;
            return vec![0u8; self.buf_len];
        }
        self.free.recv().unwrap_or_else(|_| vec![0u8; self.buf_len])
    }

    /// Hands over the first `n` bytes of `buf` to be hashed.
    pub fn submit(&self, buf: Vec<u8>, n: usize) {
        if let Some(tx) = &self.full {
            let _ = tx.send((buf, n));
        }
    }

    /// The hash of everything submitted.
    ///
    /// # Errors
    ///
    /// If the hashing thread died.
    pub async fn finish(mut self) -> io::Result<[u8; HASH_LEN]> {
        drop(self.full.take());
        self.result
            .await
            .map_err(|_| io::Error::other("hashing thread died"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn follows_a_growing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut f = File::create(&p).unwrap();
        let data: Vec<u8> = (0..20_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
        f.write_all(&data[..5000]).unwrap();
        let h = GrowingHash::start(File::open(&p).unwrap(), 5000, data.len() as u64).unwrap();
        let mut pos = 5000;
        for chunk in data[5000..].chunks(3_000_001) {
            f.write_all(chunk).unwrap();
            pos += chunk.len() as u64;
            h.advance(pos);
        }
        assert_eq!(
            h.finish(pos).await.unwrap(),
            *blake3::hash(&data).as_bytes()
        );
    }

    #[tokio::test]
    async fn stream_hash_matches_blake3_across_buffers() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 249) as u8).collect();
        let mut h = StreamHash::start(64 * 1024).unwrap();
        for chunk in data.chunks(50_000) {
            let mut buf = h.buffer();
            buf[..chunk.len()].copy_from_slice(chunk);
            h.submit(buf, chunk.len());
        }
        assert_eq!(h.finish().await.unwrap(), *blake3::hash(&data).as_bytes());
    }

    #[tokio::test]
    async fn empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        File::create(&p).unwrap();
        let h = GrowingHash::start(File::open(&p).unwrap(), 0, 0).unwrap();
        assert_eq!(h.finish(0).await.unwrap(), *blake3::hash(b"").as_bytes());
    }
}
