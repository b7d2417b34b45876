//! The file service: what a request means, whatever protocol carried it.
//!
//! Every front-end (native, the tutorial's protocol, HTTP) translates its
//! wire to these calls and their answers back; none of them opens, lists or
//! hashes anything itself. So confinement (paths resolved beneath the root,
//! hidden files left out), the hash cache and "this server shares no files"
//! are decided in one place, the same way for every protocol.
//!
//! File-system calls that can block (open, stat, readdir, and everything
//! an upload does) never run on the async workers: the async methods hand
//! them to the blocking pool, at most [`MAX_BLOCKING_FS`] at once, so a
//! huge directory, a slow disk or a hung network mount delays only the
//! requests that touch it.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::protocol::HASH_LEN;
use crate::storage::{
    Entry, FileInfo, HashCache, PathError, SafeRoot, UploadError, UploadSpec, WriteRules,
};

mod prehash;
mod upload;

/// Most file-system calls of reads and listings running at once on the
/// blocking pool; more wait their turn (uploads have their own bound: one
/// write in flight each).
pub const MAX_BLOCKING_FS: usize = 64;

/// How long a health check waits for the storage to answer.
pub const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub use prehash::Prehash;
pub use upload::{UploadTask, UPLOAD_CHUNK};

/// A regular file opened for serving, and what its stat found when opened.
#[derive(Debug)]
pub struct OpenFile {
    /// The open file (read with positional reads or `sendfile`).
    pub file: File,
    /// Its size, times and identity at open time.
    pub info: FileInfo,
}

/// The protocol-neutral file service. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct FileService {
    root: Option<Arc<SafeRoot>>,
    hashes: HashCache,
    /// `None`: read-only (the default).
    writes: Option<WriteRules>,
    /// Bounds the blocking calls of [`FileService::open`] and the like.
    fs_slots: Arc<tokio::sync::Semaphore>,
    /// Hashing ahead of demand, once started.
    prehash: std::sync::OnceLock<prehash::Prehasher>,
}

impl FileService {
    /// A service over `root` (`None`: a message server, sharing no files).
    pub fn new(root: Option<SafeRoot>, hashes: HashCache) -> Self {
        FileService {
            root: root.map(Arc::new),
            hashes,
            writes: None,
            fs_slots: Arc::new(tokio::sync::Semaphore::new(MAX_BLOCKING_FS)),
            prehash: std::sync::OnceLock::new(),
        }
    }

    /// Starts hashing ahead of demand (see [`Prehash`]); a second call, or
    /// one on a service sharing no files, does nothing.
    pub fn start_prehashing(self: &Arc<Self>, mode: Prehash) {
        if self.root.is_none() || self.prehash.get().is_some() {
            return;
        }
        if let Some(p) = prehash::Prehasher::start(Arc::downgrade(self), mode) {
            let _ = self.prehash.set(p);
        }
    }

    /// Tells the hashing-ahead thread that `path` was listed.
    fn listed(&self, path: &[u8]) {
        if let Some(p) = self.prehash.get() {
            p.listed(path);
        }
    }

    /// The same service accepting uploads under `rules` (`None`: none).
    pub fn with_uploads(mut self, rules: Option<WriteRules>) -> Self {
        self.writes = rules;
        self
    }

    /// Whether uploads are accepted.
    pub fn accepts_uploads(&self) -> bool {
        self.writes.is_some() && self.root.is_some()
    }

    /// Starts or resumes an upload to `path` (see
    /// [`SafeRoot::begin_upload`]), off the async workers.
    ///
    /// # Errors
    ///
    /// `Disabled` when uploads are off, else [`SafeRoot::begin_upload`]'s.
    pub async fn begin_upload(
        &self,
        path: &[u8],
        spec: UploadSpec,
    ) -> Result<UploadTask, UploadError> {
        let (Some(rules), Some(root)) = (self.writes, self.root.clone()) else {
            return Err(UploadError::Disabled);
        };
        let path = path.to_vec();
        let upload = tokio::task::spawn_blocking(move || root.begin_upload(&path, spec, rules))
            .await
            .map_err(|e| UploadError::Io(io::Error::other(e)))??;
        Ok(UploadTask::new(upload))
    }

    /// Whether any files are shared at all.
    pub fn shares_files(&self) -> bool {
        self.root.is_some()
    }

    /// The served directory, for display only.
    pub fn root_path(&self) -> Option<&Path> {
        self.root.as_deref().map(SafeRoot::display_path)
    }

    fn root(&self) -> Result<&SafeRoot, PathError> {
        self.root.as_deref().ok_or(PathError::NoFiles)
    }

    /// Runs `f` on the root in the blocking pool, within the bound.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SafeRoot) -> Result<T, PathError> + Send + 'static,
    ) -> Result<T, PathError> {
        let root = self.root.clone().ok_or(PathError::NoFiles)?;
        let _slot = self
            .fs_slots
            .acquire()
            .await
            .map_err(|e| PathError::Io(io::Error::other(e)))?;
        tokio::task::spawn_blocking(move || f(&root))
            .await
            .map_err(|e| PathError::Io(io::Error::other(e)))?
    }

    /// Opens the regular file at `path` (a validated, `/`-separated path
    /// relative to the root; `""` is the root), off the async workers.
    ///
    /// # Errors
    ///
    /// A [`PathError`]: invalid, missing or hidden, a directory or special
    /// file, outside the root, or no files shared.
    pub async fn open(&self, path: &[u8]) -> Result<OpenFile, PathError> {
        let path = path.to_vec();
        self.blocking(move |root| root.open_file(&path))
            .await
            .map(|(file, info)| OpenFile { file, info })
    }

    /// Describes `path` (directories have size 0), off the async workers.
    ///
    /// # Errors
    ///
    /// As [`FileService::open`].
    pub async fn stat(&self, path: &[u8]) -> Result<FileInfo, PathError> {
        let path = path.to_vec();
        self.blocking(move |root| root.stat(&path)).await
    }

    /// Lists the directory `path`, sorted by name, off the async workers.
    ///
    /// # Errors
    ///
    /// As [`FileService::open`], and `NotADirectory`, `TooManyEntries`.
    pub async fn list(&self, path: &[u8]) -> Result<Vec<Entry>, PathError> {
        let list = {
            let path = path.to_vec();
            self.blocking(move |root| root.entries(&path)).await
        };
        if list.is_ok() {
            self.listed(path);
        }
        list
    }

    /// Lists `path` and hands its entries to `f`, both on the blocking
    /// pool: for answers whose making is itself long work for a huge
    /// directory (an HTML page, JSON).
    ///
    /// # Errors
    ///
    /// As [`FileService::list`].
    pub async fn list_with<T: Send + 'static>(
        self: &Arc<Self>,
        path: &[u8],
        f: impl FnOnce(Vec<Entry>, &FileService) -> T + Send + 'static,
    ) -> Result<T, PathError> {
        let me = self.clone();
        let list = {
            let path = path.to_vec();
            self.blocking(move |root| root.entries(&path).map(|e| f(e, &me)))
                .await
        };
        if list.is_ok() {
            self.listed(path);
        }
        list
    }

    /// [`FileService::open`] for code already on a blocking thread (the
    /// archive walk).
    ///
    /// # Errors
    ///
    /// As [`FileService::open`].
    pub fn open_blocking(&self, path: &[u8]) -> Result<OpenFile, PathError> {
        let (file, info) = self.root()?.open_file(path)?;
        Ok(OpenFile { file, info })
    }

    /// [`FileService::list`] for code already on a blocking thread.
    ///
    /// # Errors
    ///
    /// As [`FileService::list`].
    pub fn list_blocking(&self, path: &[u8]) -> Result<Vec<Entry>, PathError> {
        self.root()?.entries(path)
    }

    /// Whether the storage can be reached (for a load balancer's health
    /// check): the served directory still there and readable, within
    /// [`HEALTH_TIMEOUT`] (a hung mount counts as unreachable). A message
    /// server, sharing no files, is always healthy.
    ///
    /// # Errors
    ///
    /// What failed, in words.
    pub async fn health(&self) -> Result<(), String> {
        let Some(root) = self.root.clone() else {
            return Ok(());
        };
        let check = tokio::task::spawn_blocking(move || root.check());
        match tokio::time::timeout(HEALTH_TIMEOUT, check).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(format!("storage unreachable: {e}")),
            Ok(Err(e)) => Err(format!("storage check failed: {e}")),
            Err(_) => Err(format!(
                "storage did not answer within {} s",
                HEALTH_TIMEOUT.as_secs()
            )),
        }
    }

    /// The BLAKE3 hash of an opened file, computed (rationed) if not known.
    ///
    /// # Errors
    ///
    /// A read error, or the file changed while it was hashed.
    pub async fn hash(&self, f: &OpenFile) -> io::Result<[u8; HASH_LEN]> {
        self.hashes.hash(&f.file, &f.info).await
    }

    /// The hash of this version of a file, if already known (never computes).
    pub fn known_hash(&self, info: &FileInfo) -> Option<[u8; HASH_LEN]> {
        self.hashes.cached(info)
    }
}
