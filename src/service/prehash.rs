//! Hashing ahead of demand: the served tree's BLAKE3 hashes computed before
//! anyone asks, on one thread the kernel runs only when nothing else wants
//! the CPU or the disk.
//!
//! A download's trailer (or an HTTP answer's `X-Ferry-Blake3`) needs the
//! whole file's hash. Computed on demand it runs beside the body on a
//! second core, which is free on a server but not on a small machine whose
//! cores also carry the transfer. So the server walks its tree at startup
//! ([`Prehash::All`], the default) and the files of every directory it
//! lists ([`Prehash::Listed`] too), and hashes what it finds into the same
//! [`HashCache`](crate::storage::HashCache) the requests use.
//!
//! It never stands in a request's way: the thread is `SCHED_IDLE` with the
//! idle I/O class; it hashes privately and offers the result to the cache
//! only if the file is still that version; and it drops a file the moment a
//! request starts hashing the same version itself (no request ever waits
//! on this thread). Work is bounded: a bounded queue (a full one drops the
//! job), at most [`TREE_FILES`] files per walk and [`DIR_FILES`] per listed
//! directory, a depth limit, and files changed in the last 2 s are left
//! for later (the cache would not keep their hash).

use std::ops::ControlFlow;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Weak;

use tracing::{debug, warn};

use super::{Content, FileService, OpenFile};
use crate::protocol::EntryKind;

/// What the server hashes ahead of demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prehash {
    /// Nothing: every hash is computed when a download first needs it.
    Off,
    /// The files of each directory when it is listed (a listing is the
    /// usual step before a download).
    Listed,
    /// The whole tree once at startup, and listed directories after.
    #[default]
    All,
}

/// Most files hashed by one walk of the tree.
pub const TREE_FILES: usize = 16_384;
/// Most files hashed for one listed directory.
pub const DIR_FILES: usize = 1_024;
/// Deepest directory a walk enters.
const MAX_DEPTH: usize = 64;
/// Jobs waiting at once; more are dropped (listings are repeated anyway).
const QUEUE: usize = 64;

enum Job {
    Tree,
    Dir(Vec<u8>),
}

/// The handle a [`FileService`] keeps: queues work for the thread. Dropping
/// it (with the service) ends the thread.
#[derive(Debug)]
pub(super) struct Prehasher {
    tx: SyncSender<Job>,
}

impl Prehasher {
    /// Starts the thread for `service` (held weakly: the thread ends when
    /// the service does) and queues the startup walk for [`Prehash::All`].
    pub(super) fn start(service: Weak<FileService>, mode: Prehash) -> Option<Prehasher> {
        if mode == Prehash::Off {
            return None;
        }
        let (tx, rx) = sync_channel(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("ferry-prehash".into())
            .spawn(move || run(&service, &rx));
        if let Err(e) = spawned {
            warn!("cannot start the hashing-ahead thread ({e}); hashes are computed on demand");
            return None;
        }
        let me = Prehasher { tx };
        if mode == Prehash::All {
            me.queue(Job::Tree);
        }
        Some(me)
    }

    /// Queues the files of the directory `path` (just listed).
    pub(super) fn listed(&self, path: &[u8]) {
        self.queue(Job::Dir(path.to_vec()));
    }

    fn queue(&self, job: Job) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(job) {
            debug!("hashing-ahead queue full; job dropped");
        }
    }
}

fn run(service: &Weak<FileService>, rx: &Receiver<Job>) {
    lower_priority();
    while let Ok(job) = rx.recv() {
        let Some(svc) = service.upgrade() else { return };
        let (start, budget, depth) = match job {
            Job::Tree => (Vec::new(), TREE_FILES, MAX_DEPTH),
            Job::Dir(p) => (p, DIR_FILES, 0),
        };
        let hashed = walk(&svc, start, depth, budget);
        if hashed > 0 {
            debug!(hashed, "hashed ahead of demand");
        }
    }
}

/// Hashes the files under `dir`, entering subdirectories up to `depth`
/// more levels, looking at no more than `budget` files. Returns how many it
/// hashed.
fn walk(svc: &FileService, dir: Vec<u8>, depth: usize, budget: usize) -> usize {
    let (mut hashed, mut left) = (0, budget);
    let mut stack = vec![(dir, depth)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = svc.list_blocking(&dir) else {
            continue;
        };
        for e in entries {
            if left == 0 {
                return hashed;
            }
            let mut path = dir.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&e.entry.name);
            match e.entry.kind {
                EntryKind::File if e.entry.size > 0 => {
                    left -= 1;
                    // Known already (a directory listed again): not even
                    // opened.
                    if !svc.hashes.has(&e.info) && hash_one(svc, &path) {
                        hashed += 1;
                    }
                }
                EntryKind::Dir if depth > 0 => stack.push((path, depth - 1)),
                _ => {}
            }
        }
    }
    hashed
}

/// Hashes one file into the cache unless a request is already at it.
fn hash_one(svc: &FileService, path: &[u8]) -> bool {
    let Ok(OpenFile {
        content: Content::Local(file),
        info,
    }) = svc.open_blocking(path)
    else {
        return false;
    };
    let f = LocalFile { file, info };
    let cache = &svc.hashes;
    if cache.has(&f.info) || cache.too_recent(&f.info) {
        return false;
    }
    let mut hasher = blake3::Hasher::new();
    let mut chunks = 0u32;
    let done = crate::hashing::try_for_each_chunk(&f.file, f.info.size, |c| {
        hasher.update(c);
        chunks += 1;
        // A request hashing this version itself: leave it to that.
        if chunks % 4 == 0 && cache.has(&f.info) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    match done {
        Ok(ControlFlow::Continue(())) => {
            cache.offer(&f.file, &f.info, *hasher.finalize().as_bytes())
        }
        _ => false,
    }
}

/// A local file opened for hashing ahead.
struct LocalFile {
    file: std::fs::File,
    info: crate::storage::FileInfo,
}

/// `SCHED_IDLE` and the idle I/O class for the calling thread: it runs only
/// when no other thread wants the CPU, and reads only when the disk is idle.
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread (pid 0) with valid
    // arguments; failure only leaves the thread at normal priority.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            debug!("SCHED_IDLE refused: {}", std::io::Error::last_os_error());
        }
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_IDLE: libc::c_long = 3;
        const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
        if libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        ) != 0
        {
            debug!(
                "idle I/O class refused: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
