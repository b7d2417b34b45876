//! [`HashCache`]: BLAKE3 hashes of served files, computed once per version.
//!
//! A hash costs a full read of the file, so the server keeps them keyed by
//! (device, inode, size, mtime): an unchanged file is hashed once, a changed
//! one gets a new key. Concurrent requests for the same version share one
//! computation. Hashing runs on the blocking pool, beside the body being
//! sent, so it never delays a response's first byte.
//!
//! Hashing costs a full read per request whose key is not cached (a file
//! changed in the last 2 s is never cached, see below), so computations
//! are rationed: at most one per core run at once, server-wide, and the
//! rest wait their turn. No client, however many connections it opens, can
//! keep more cores hashing than the machine has, and a request that sends
//! no body never hashes at all (`server::native`).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};

use tokio::sync::{OnceCell, Semaphore};

use super::local::FileInfo;
use crate::protocol::HASH_LEN;

/// Identifies one version of one file.
///
/// `ctime_ns` is part of the key because (dev, ino, size, mtime) alone
/// does not identify a version: a file rewritten in place with the same
/// size and its mtime restored (`cp -p`, `rsync -t`, `touch -r`) kept the
/// old key, so the old hash was served for the new bytes and every download
/// of it failed verification, retries included. The kernel moves ctime on
/// every write and no program can set it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl From<&FileInfo> for HashKey {
    fn from(i: &FileInfo) -> Self {
        HashKey {
            dev: i.dev,
            ino: i.ino,
            size: i.size,
            mtime_ns: i.mtime_ns,
            ctime_ns: i.ctime_ns,
        }
    }
}

type Slot = Arc<OnceCell<[u8; HASH_LEN]>>;

/// Cached file hashes. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct HashCache {
    slots: Mutex<HashMap<HashKey, Slot>>,
    capacity: usize,
    /// Files changed less than this long ago are hashed but not cached.
    racy_window_ns: i64,
    /// Computations allowed at once (large files only; small ones are
    /// hashed inline).
    computing: Semaphore,
}

/// Files up to this size are hashed inline: a trip to the blocking pool
/// costs more than hashing them.
const INLINE_HASH_MAX: u64 = 64 * 1024;

impl HashCache {
    /// A cache remembering up to `capacity` file versions.
    pub fn new(capacity: usize) -> Self {
        HashCache {
            slots: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            racy_window_ns: RACY_WINDOW_NS,
            computing: Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            ),
        }
    }

    /// The same cache, keeping even hashes of files changed just now (for
    /// tests, which cannot wait for their fixtures to age).
    pub fn without_racy_window(mut self) -> Self {
        self.racy_window_ns = 0;
        self
    }

    fn slot(&self, key: HashKey) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() >= self.capacity && !slots.contains_key(&key) {
            // Crude but bounded: forget finished entries when full. In-flight
            // ones stay so their waiters still share them.
            slots.retain(|_, s| !s.initialized());
        }
        slots.entry(key).or_default().clone()
    }

    /// The hash of this file version if it is already known.
    pub fn cached(&self, info: &FileInfo) -> Option<[u8; HASH_LEN]> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .get(&HashKey::from(info))
            .and_then(|s| s.get().copied())
    }

    /// Whether this file version's hash is known or being computed.
    pub fn has(&self, info: &FileInfo) -> bool {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.contains_key(&HashKey::from(info))
    }

    /// Whether this version changed too recently for its hash to be kept.
    pub fn too_recent(&self, info: &FileInfo) -> bool {
        recently_changed(info, self.racy_window_ns)
    }

    /// Keeps `hash`, computed elsewhere from `file` as it was at `info`, if
    /// the file is still that version and old enough to be kept, and no
    /// request has computed it meanwhile. Returns whether it was kept.
    pub fn offer(&self, file: &File, info: &FileInfo, hash: [u8; HASH_LEN]) -> bool {
        let key = HashKey::from(info);
        let same = FileInfo::of_file(file).is_ok_and(|now| HashKey::from(&now) == key);
        if !same || self.too_recent(info) || self.has(info) {
            return false;
        }
        self.slot(key).set(hash).is_ok()
    }

    /// The hash of `file`, whose metadata is `info`, computing it if needed.
    ///
    /// # Errors
    ///
    /// A read error, or `UnexpectedEof`/`Other` if the file changed while it
    /// was being hashed (the result would describe no version of it; nothing
    /// is cached then).
    pub async fn hash(&self, file: &File, info: &FileInfo) -> io::Result<[u8; HASH_LEN]> {
        let key = HashKey::from(info);
        let slot = self.slot(key);
        let size = info.size;
        let res = slot
            .get_or_try_init(|| async {
                if size <= INLINE_HASH_MAX {
                    crate::hashing::hash_file(file, size)
                } else {
                    let _turn = self.computing.acquire().await.map_err(io::Error::other)?;
                    let file = file.try_clone()?;
                    tokio::task::spawn_blocking(move || crate::hashing::hash_file(&file, size))
                        .await
                        .map_err(io::Error::other)?
                }
                .and_then(|h| {
                    // A file rewritten in place during the read may keep its
                    // size; its mtime tells.
                    let now = FileInfo::of_file(file)?;
                    if HashKey::from(&now) == key {
                        Ok(h)
                    } else {
                        Err(io::Error::other("file changed while being hashed"))
                    }
                })
            })
            .await
            .copied();
        // A file changed within the last moments may change again within
        // the same timestamp tick, leaving its key as it is (git's "racily
        // clean" problem): its hash serves this request but is not kept.
        if res.is_err() || recently_changed(info, self.racy_window_ns) {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.remove(&key);
        }
        res
    }

    /// Keeps `hash` for the version `info` of an object (whose key carries
    /// its ETag, so no racy window applies), unless already known.
    pub fn insert_object(&self, info: &FileInfo, hash: [u8; HASH_LEN]) {
        let _ = self.slot(HashKey::from(info)).set(hash);
    }

    /// The hash of the version `info`, computed by
    /// `compute` if not known: for storage that is not a local file (an
    /// object, whose version key carries its ETag, so no racy window
    /// applies). Shares one computation among concurrent requests and takes
    /// a computing turn like [`HashCache::hash`].
    ///
    /// # Errors
    ///
    /// `compute`'s error (nothing is cached then).
    pub async fn hash_with<F, Fut>(&self, info: &FileInfo, compute: F) -> io::Result<[u8; HASH_LEN]>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = io::Result<[u8; HASH_LEN]>>,
    {
        let key = HashKey::from(info);
        let slot = self.slot(key);
        let res = slot
            .get_or_try_init(|| async {
                let _turn = if info.size > INLINE_HASH_MAX {
                    Some(self.computing.acquire().await.map_err(io::Error::other)?)
                } else {
                    None
                };
                compute().await
            })
            .await
            .copied();
        if res.is_err() {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.remove(&key);
        }
        res
    }
}

/// How close to "now" a change time must be for the hash not to be cached.
const RACY_WINDOW_NS: i64 = 2_000_000_000;

fn recently_changed(info: &FileInfo, window_ns: i64) -> bool {
    let now = super::local::system_time_ns(std::time::SystemTime::now());
    now.saturating_sub(info.mtime_ns.max(info.ctime_ns)) < window_ns
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn hashes_once_and_matches_blake3() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::File::create(&p).unwrap().write_all(&data).unwrap();
        let f = File::open(&p).unwrap();
        let info = FileInfo::of_file(&f).unwrap();
        let cache = HashCache::new(4).without_racy_window();
        assert_eq!(cache.cached(&info), None);
        let h = cache.hash(&f, &info).await.unwrap();
        assert_eq!(h, *blake3::hash(&data).as_bytes());
        assert_eq!(cache.cached(&info), Some(h));
    }

    #[tokio::test]
    async fn a_file_changed_just_now_is_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fresh");
        std::fs::write(&p, b"new").unwrap();
        let f = File::open(&p).unwrap();
        let info = FileInfo::of_file(&f).unwrap();
        let cache = HashCache::new(4);
        assert_eq!(
            cache.hash(&f, &info).await.unwrap(),
            *blake3::hash(b"new").as_bytes()
        );
        assert_eq!(cache.cached(&info), None);
    }

    #[test]
    fn an_offered_hash_is_kept_only_for_the_version_it_was_made_from() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"one").unwrap();
        let f = File::open(&p).unwrap();
        let info = FileInfo::of_file(&f).unwrap();
        let h = *blake3::hash(b"one").as_bytes();
        // Changed just now: not kept, as for a request.
        assert!(!HashCache::new(4).offer(&f, &info, h));
        let cache = HashCache::new(4).without_racy_window();
        assert!(cache.offer(&f, &info, h));
        assert_eq!(cache.cached(&info), Some(h));
        assert!(!cache.offer(&f, &info, h), "offered twice");
        // Rewritten after the hash was made: the old version's offer fails.
        let cache = HashCache::new(4).without_racy_window();
        std::fs::write(&p, b"two").unwrap();
        assert!(!cache.offer(&f, &info, h));
        assert!(!cache.has(&info));
    }

    #[tokio::test]
    async fn stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = HashCache::new(3).without_racy_window();
        for i in 0..10 {
            let p = dir.path().join(format!("f{i}"));
            std::fs::write(&p, format!("{i}")).unwrap();
            let f = File::open(&p).unwrap();
            let info = FileInfo::of_file(&f).unwrap();
            cache.hash(&f, &info).await.unwrap();
        }
        assert!(cache.slots.lock().unwrap().len() <= 3);
    }
}
