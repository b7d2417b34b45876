//! The file service: what a request means, whatever protocol carried it.
//!
//! Every front-end (native, the tutorial's protocol, HTTP) translates its
//! wire to these calls and their answers back; none of them opens, lists or
//! hashes anything itself. So confinement (paths resolved beneath the root,
//! hidden files left out), the hash cache and "this server shares no files"
//! are decided in one place, the same way for every protocol.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::protocol::HASH_LEN;
use crate::storage::{Entry, FileInfo, HashCache, PathError, SafeRoot};

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
    root: Option<SafeRoot>,
    hashes: HashCache,
}

impl FileService {
    /// A service over `root` (`None`: a message server, sharing no files).
    pub fn new(root: Option<SafeRoot>, hashes: HashCache) -> Self {
        FileService { root, hashes }
    }

    /// Whether any files are shared at all.
    pub fn shares_files(&self) -> bool {
        self.root.is_some()
    }

    /// The served directory, for display only.
    pub fn root_path(&self) -> Option<&Path> {
        self.root.as_ref().map(SafeRoot::display_path)
    }

    fn root(&self) -> Result<&SafeRoot, PathError> {
        self.root.as_ref().ok_or(PathError::NoFiles)
    }

    /// Opens the regular file at `path` (a validated, `/`-separated path
    /// relative to the root; `""` is the root).
    ///
    /// # Errors
    ///
    /// A [`PathError`]: invalid, missing or hidden, a directory or special
    /// file, outside the root, or no files shared.
    pub fn open(&self, path: &[u8]) -> Result<OpenFile, PathError> {
        let (file, info) = self.root()?.open_file(path)?;
        Ok(OpenFile { file, info })
    }

    /// Describes `path` (directories have size 0).
    ///
    /// # Errors
    ///
    /// As [`FileService::open`].
    pub fn stat(&self, path: &[u8]) -> Result<FileInfo, PathError> {
        self.root()?.stat(path)
    }

    /// Lists the directory `path`, sorted by name.
    ///
    /// # Errors
    ///
    /// As [`FileService::open`], and `NotADirectory`, `TooManyEntries`.
    pub fn list(&self, path: &[u8]) -> Result<Vec<Entry>, PathError> {
        self.root()?.entries(path)
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
