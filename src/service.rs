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

use std::io;
use std::sync::Arc;

use crate::protocol::HASH_LEN;
use crate::storage::{
    ByteStream, Entry, FileInfo, HashCache, ObjectBlob, ObjectRoot, PathError, SafeRoot,
    UploadError, UploadSpec, WriteRules,
};

mod content;
mod prehash;
mod upload;

/// Most file-system calls of reads and listings running at once on the
/// blocking pool; more wait their turn (uploads have their own bound: one
/// write in flight each).
pub const MAX_BLOCKING_FS: usize = 64;

/// How long a health check waits for the storage to answer.
pub const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub use content::{Content, OpenFile};
pub use prehash::Prehash;
pub use upload::{UploadTask, UPLOAD_CHUNK};

/// Where a service's files are.
///
/// An enum rather than a trait object (which STYLE.md sketches): the two
/// backends differ in what an opened file *is* (a local `File` that the
/// kernel can `sendfile`, or an object read by ranged requests), where
/// their calls run (the blocking pool, or async requests to the store),
/// and what they can do ahead (hashing a local tree). A trait would hide
/// exactly the differences the front-ends use to stay zero-copy; the
/// match sits in this one module, and front-ends see only [`Content`].
#[derive(Debug, Clone)]
pub enum Storage {
    /// A local directory (zero-copy sending, hashing ahead).
    Local(Arc<SafeRoot>),
    /// A bucket and prefix of an object store.
    Object(Arc<ObjectRoot>),
}

/// The protocol-neutral file service. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct FileService {
    root: Option<Storage>,
    hashes: HashCache,
    /// `None`: read-only (the default).
    writes: Option<WriteRules>,
    /// Bounds the blocking calls of [`FileService::open`] and the like (and
    /// the requests to an object store).
    fs_slots: Arc<tokio::sync::Semaphore>,
    /// Hashing ahead of demand, once started.
    prehash: std::sync::OnceLock<prehash::Prehasher>,
}

impl FileService {
    /// A service over the local directory `root` (`None`: a message
    /// server, sharing no files).
    pub fn new(root: Option<SafeRoot>, hashes: HashCache) -> Self {
        Self::over(root.map(|r| Storage::Local(Arc::new(r))), hashes)
    }

    /// A service over `storage` (`None`: sharing no files).
    pub fn over(storage: Option<Storage>, hashes: HashCache) -> Self {
        FileService {
            root: storage,
            hashes,
            writes: None,
            fs_slots: Arc::new(tokio::sync::Semaphore::new(MAX_BLOCKING_FS)),
            prehash: std::sync::OnceLock::new(),
        }
    }

    fn local(&self) -> Option<&Arc<SafeRoot>> {
        match &self.root {
            Some(Storage::Local(r)) => Some(r),
            _ => None,
        }
    }

    /// Starts hashing ahead of demand (see [`Prehash`]); a second call, or
    /// one on a service sharing no files, does nothing. An object store is
    /// not hashed ahead: its hashes are shared by every node through the
    /// store itself.
    pub fn start_prehashing(self: &Arc<Self>, mode: Prehash) {
        if self.local().is_none() || self.prehash.get().is_some() {
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
        let (Some(rules), Some(storage)) = (self.writes, self.root.as_ref()) else {
            return Err(UploadError::Disabled);
        };
        let root = match storage {
            Storage::Local(root) => root.clone(),
            Storage::Object(o) => {
                return Ok(UploadTask::object(o.begin_upload(path, spec, rules).await?));
            }
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

    /// Runs `f` on the local root in the blocking pool, within the bound.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SafeRoot) -> Result<T, PathError> + Send + 'static,
    ) -> Result<T, PathError> {
        let root = self.local().cloned().ok_or(PathError::NoFiles)?;
        let _slot = self.slot().await?;
        tokio::task::spawn_blocking(move || f(&root))
            .await
            .map_err(|e| PathError::Io(io::Error::other(e)))?
    }

    async fn slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, PathError> {
        self.fs_slots
            .acquire()
            .await
            .map_err(|e| PathError::Io(io::Error::other(e)))
    }

    /// Opens the regular file at `path` (a validated, `/`-separated path
    /// relative to the root; `""` is the root), off the async workers.
    ///
    /// # Errors
    ///
    /// A [`PathError`]: invalid, missing or hidden, a directory or special
    /// file, outside the root, or no files shared.
    pub async fn open(&self, path: &[u8]) -> Result<OpenFile, PathError> {
        match self.root.as_ref().ok_or(PathError::NoFiles)? {
            Storage::Local(_) => {
                let path = path.to_vec();
                self.blocking(move |root| root.open_file(&path))
                    .await
                    .map(|(file, info)| OpenFile {
                        content: Content::Local(file),
                        info,
                    })
            }
            Storage::Object(o) => {
                let _slot = self.slot().await?;
                let (blob, info) = o.open(path).await?;
                // Another node's hash, if it kept one: then this node's
                // answers carry the same hash (and HTTP the same `ETag`)
                // as that node's, and a resume moving between them holds.
                if self.known_hash(&info).is_none() {
                    if let Some(h) = blob.shared_hash().await {
                        tracing::info!("object hash found in the store: {}", blob.key());
                        self.hashes.insert_object(&info, h);
                    }
                }
                Ok(OpenFile {
                    content: Content::Object(blob),
                    info,
                })
            }
        }
    }

    /// Describes `path` (directories have size 0), off the async workers.
    ///
    /// # Errors
    ///
    /// As [`FileService::open`].
    pub async fn stat(&self, path: &[u8]) -> Result<FileInfo, PathError> {
        match self.root.as_ref().ok_or(PathError::NoFiles)? {
            Storage::Local(_) => {
                let path = path.to_vec();
                self.blocking(move |root| root.stat(&path)).await
            }
            Storage::Object(o) => {
                let _slot = self.slot().await?;
                o.stat(path).await
            }
        }
    }

    /// Lists the directory `path`, sorted by name, off the async workers.
    ///
    /// # Errors
    ///
    /// As [`FileService::open`], and `NotADirectory`, `TooManyEntries`.
    pub async fn list(&self, path: &[u8]) -> Result<Vec<Entry>, PathError> {
        let list = match self.root.as_ref().ok_or(PathError::NoFiles)? {
            Storage::Local(_) => {
                let path = path.to_vec();
                self.blocking(move |root| root.entries(&path)).await
            }
            Storage::Object(o) => {
                let _slot = self.slot().await?;
                o.entries(path).await
            }
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
        let list = match self.root.as_ref().ok_or(PathError::NoFiles)? {
            Storage::Local(_) => {
                let path = path.to_vec();
                self.blocking(move |root| root.entries(&path).map(|e| f(e, &me)))
                    .await
            }
            Storage::Object(_) => {
                let entries = self.list(path).await?;
                tokio::task::spawn_blocking(move || f(entries, &me))
                    .await
                    .map_err(|e| PathError::Io(io::Error::other(e)))
            }
        };
        if list.is_ok() {
            self.listed(path);
        }
        list
    }

    /// [`FileService::open`] for code already on a blocking thread (the
    /// archive walk; an object store is asked through the current runtime).
    ///
    /// # Errors
    ///
    /// As [`FileService::open`].
    pub fn open_blocking(&self, path: &[u8]) -> Result<OpenFile, PathError> {
        match self.root.as_ref().ok_or(PathError::NoFiles)? {
            Storage::Local(root) => {
                let (file, info) = root.open_file(path)?;
                Ok(OpenFile {
                    content: Content::Local(file),
                    info,
                })
            }
            Storage::Object(_) => runtime()?.block_on(self.open(path)),
        }
    }

    /// [`FileService::list`] for code already on a blocking thread.
    ///
    /// # Errors
    ///
    /// As [`FileService::list`].
    pub fn list_blocking(&self, path: &[u8]) -> Result<Vec<Entry>, PathError> {
        match self.root.as_ref().ok_or(PathError::NoFiles)? {
            Storage::Local(root) => root.entries(path),
            Storage::Object(o) => runtime()?.block_on(o.entries(path)),
        }
    }

    /// Whether the storage can be reached (for a load balancer's health
    /// check): the served directory still there and readable, or the
    /// object store answering a listing of the prefix, within
    /// [`HEALTH_TIMEOUT`] (a hung mount or store counts as unreachable). A
    /// message server, sharing no files, is always healthy.
    ///
    /// # Errors
    ///
    /// What failed, in words.
    pub async fn health(&self) -> Result<(), String> {
        let check = match self.root.clone() {
            None => return Ok(()),
            Some(Storage::Local(root)) => tokio::task::spawn_blocking(move || root.check()),
            Some(Storage::Object(o)) => tokio::spawn(async move { o.check().await }),
        };
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
    /// (An object's hash kept in the store by another node was already
    /// taken into the cache by [`FileService::open`].)
    ///
    /// # Errors
    ///
    /// A read error, or the file changed while it was hashed.
    pub async fn hash(&self, f: &OpenFile) -> io::Result<[u8; HASH_LEN]> {
        match &f.content {
            Content::Local(file) => self.hashes.hash(file, &f.info).await,
            Content::Object(blob) => {
                self.hashes
                    .hash_with(&f.info, || async {
                        let h = blob.compute_hash().await?;
                        tracing::info!("object hashed: {} ({} bytes)", blob.key(), blob.size());
                        Ok(h)
                    })
                    .await
            }
        }
    }

    /// The bytes `offset..offset + len` of an object. When that is the
    /// whole object and its hash is not known yet (not even to another
    /// node: [`FileService::open`] looked in the store), the body hashes
    /// what passes through, and once all of it has passed the hash is
    /// cached and kept in the store for every node. So the object is read
    /// once, never once to send and once more to hash.
    ///
    /// # Errors
    ///
    /// The store's refusal to start the read.
    pub async fn object_body(
        self: &Arc<Self>,
        blob: &ObjectBlob,
        info: &FileInfo,
        offset: u64,
        len: u64,
    ) -> io::Result<ByteStream> {
        let body = blob.range(offset, len).await?;
        if !self.whole_and_unhashed(info, offset, len) {
            return Ok(body);
        }
        Ok(hashing_body(self.clone(), blob.clone(), *info, body))
    }

    /// Whether a send of these bytes hashes them on the way
    /// ([`FileService::object_body`]): then the hash is known once the body
    /// has been sent, and asking for it earlier would read the object twice.
    pub fn hashes_while_sending(&self, f: &OpenFile, offset: u64, len: u64) -> bool {
        matches!(f.content, Content::Object(_)) && self.whole_and_unhashed(&f.info, offset, len)
    }

    /// Whether `offset..offset + len` is all of a non-empty version whose
    /// hash is not known yet.
    fn whole_and_unhashed(&self, info: &FileInfo, offset: u64, len: u64) -> bool {
        offset == 0 && len == info.size && len > 0 && self.known_hash(info).is_none()
    }

    /// The hash of this version of a file, if already known (never computes).
    pub fn known_hash(&self, info: &FileInfo) -> Option<[u8; HASH_LEN]> {
        self.hashes.cached(info)
    }
}

/// `body` (all of `blob`), hashed as it passes; at its end the hash is
/// cached and kept in the store ([`FileService::open`] found none there;
/// another node writing the same entry meanwhile writes the same bytes).
fn hashing_body(
    svc: Arc<FileService>,
    blob: ObjectBlob,
    info: FileInfo,
    body: ByteStream,
) -> ByteStream {
    use futures_util::StreamExt;
    let mut hasher = Some(blake3::Hasher::new());
    let mut seen = 0u64;
    body.map(move |chunk| {
        if let (Ok(c), Some(h)) = (&chunk, hasher.as_mut()) {
            h.update(c);
            seen += c.len() as u64;
            if seen == info.size {
                let hash = *h.finalize().as_bytes();
                hasher = None;
                svc.hashes.insert_object(&info, hash);
                tracing::info!("object hashed: {} ({seen} bytes, while sent)", blob.key());
                let blob = blob.clone();
                tokio::spawn(async move { blob.keep_hash(hash).await });
            }
        }
        chunk
    })
    .boxed()
}

/// The runtime to run an object store's requests from a blocking thread.
fn runtime() -> Result<tokio::runtime::Handle, PathError> {
    tokio::runtime::Handle::try_current().map_err(|e| PathError::Io(io::Error::other(e)))
}
