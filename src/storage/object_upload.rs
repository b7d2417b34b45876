//! Uploads into an object store: the same rules as into a directory
//! (confined, hidden names refused, no overwrite unless allowed, a size
//! limit, the declared size and hash checked), but the object appears only
//! once complete and verified, because S3 makes an object visible only
//! when its single `PUT` or its multipart upload completes.
//!
//! Bytes are hashed as they arrive. A file up to [`PART_SIZE`] is kept in
//! memory and stored with one `PUT` at the end; a larger one becomes a
//! multipart upload of [`PART_SIZE`] parts, at most [`PARTS_IN_FLIGHT`]
//! sent at once, so an upload holds a bounded amount of memory. The hash
//! is checked before the upload is completed; a mismatch, a wrong length
//! or a connection lost aborts it and nothing appears. The hash is then
//! kept where every node finds it (`.ferry/blake3/`, see `object`).
//!
//! Unlike a local upload, an interrupted one cannot be resumed: it starts
//! over (its offset is always 0).

use std::fmt;

use bytes::Bytes;
use object_store::path::Path as ObjPath;
use object_store::{PutPayload, WriteMultipart};

use super::local::PathError;
use super::object::ObjectRoot;
use super::upload::{Committed, UploadError, UploadSpec, WriteRules};
use crate::protocol::HASH_LEN;

/// Size of a multipart upload's parts (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts sent at once by one upload.
const PARTS_IN_FLIGHT: usize = 2;

/// An upload into an object store in progress.
pub struct ObjectUpload {
    root: std::sync::Arc<ObjectRoot>,
    key: ObjPath,
    path: String,
    hasher: blake3::Hasher,
    written: u64,
    spec: UploadSpec,
    max_size: Option<u64>,
    replaced: bool,
    /// The bytes of a small file, until they outgrow one part.
    small: Vec<u8>,
    /// The multipart upload, once the file is larger than one part.
    multipart: Option<WriteMultipart>,
}

impl fmt::Debug for ObjectUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectUpload")
            .field("key", &self.key.as_ref())
            .field("written", &self.written)
            .finish()
    }
}

fn store_error(e: object_store::Error) -> UploadError {
    UploadError::Io(std::io::Error::other(e))
}

impl ObjectRoot {
    /// Starts an upload to `raw` under `rules` (see the module doc).
    ///
    /// # Errors
    ///
    /// As [`super::SafeRoot::begin_upload`]: a bad or hidden path, a
    /// directory or an object in the way, an existing object without
    /// `--overwrite`, a declared size over the limit, an offset other than
    /// 0; or the store's failure.
    pub async fn begin_upload(
        self: &std::sync::Arc<Self>,
        raw: &[u8],
        spec: UploadSpec,
        rules: WriteRules,
    ) -> Result<ObjectUpload, UploadError> {
        let path = match self.checked(raw) {
            Err(PathError::Hidden) => return Err(UploadError::Hidden),
            other => other?.to_string(),
        };
        if path.is_empty() {
            return Err(UploadError::Path(PathError::IsADirectory));
        }
        if let Some(asked) = spec.offset.filter(|&o| o > 0) {
            return Err(UploadError::BadOffset { asked, held: 0 });
        }
        if let (Some(size), Some(max)) = (spec.size, rules.max_size) {
            if size > max {
                return Err(UploadError::TooLarge { size, max });
            }
        }
        // No object may stand where a directory of the path is.
        for (slash, _) in path.match_indices('/') {
            if self.head(&path[..slash]).await?.is_some() {
                return Err(UploadError::Path(PathError::NotADirectory));
            }
        }
        let replaced = self.head(&path).await?.is_some();
        if replaced && !rules.overwrite {
            return Err(UploadError::Exists);
        }
        if !replaced && self.has_children(&path).await? {
            return Err(UploadError::Path(PathError::IsADirectory));
        }
        Ok(ObjectUpload {
            root: self.clone(),
            key: self.key(&path)?,
            path,
            hasher: blake3::Hasher::new(),
            written: 0,
            spec,
            max_size: rules.max_size,
            replaced,
            small: Vec::new(),
            multipart: None,
        })
    }
}

impl ObjectUpload {
    /// Always 0: an interrupted upload to an object store starts over.
    pub fn offset(&self) -> u64 {
        0
    }

    /// Appends `data`.
    ///
    /// # Errors
    ///
    /// Past the declared size or the limit (the upload is then aborted),
    /// or the store's failure.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), UploadError> {
        let got = self.written + data.len() as u64;
        if let Some(declared) = self.spec.size.filter(|&d| got > d) {
            self.abort().await;
            return Err(UploadError::WrongLength { declared, got });
        }
        if let Some(max) = self.max_size.filter(|&m| got > m) {
            self.abort().await;
            return Err(UploadError::TooLarge { size: got, max });
        }
        self.hasher.update(data);
        self.written = got;
        if self.multipart.is_none() && self.small.len() + data.len() <= PART_SIZE {
            self.small.extend_from_slice(data);
            return Ok(());
        }
        if self.multipart.is_none() {
            let upload = self
                .root
                .store()
                .put_multipart(&self.key)
                .await
                .map_err(store_error)?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            w.put(Bytes::from(std::mem::take(&mut self.small)));
            self.multipart = Some(w);
        }
        if let Some(w) = self.multipart.as_mut() {
            // Bounded memory: wait while enough parts are on their way.
            w.wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(store_error)?;
            w.write(data);
        }
        Ok(())
    }

    /// Checks the length and `hash` (when given) and, only if both hold,
    /// completes the upload: the object appears whole, or not at all.
    ///
    /// # Errors
    ///
    /// `WrongLength`, `Mismatch` (the upload is aborted), or the store's
    /// failure.
    pub async fn commit(mut self, hash: Option<[u8; HASH_LEN]>) -> Result<Committed, UploadError> {
        if let Some(declared) = self.spec.size.filter(|&d| d != self.written) {
            self.abort().await;
            return Err(UploadError::WrongLength {
                declared,
                got: self.written,
            });
        }
        let got = *self.hasher.finalize().as_bytes();
        if hash.is_some_and(|h| h != got) {
            self.abort().await;
            return Err(UploadError::Mismatch);
        }
        let store = self.root.store();
        let put = match self.multipart.take() {
            Some(w) => w.finish().await,
            None => {
                let body = PutPayload::from(std::mem::take(&mut self.small));
                store.put(&self.key, body).await
            }
        }
        .map_err(store_error)?;
        let (blob, info) = self.root.open(self.path.as_bytes()).await?;
        // Keep the hash for every node, if the object is still ours.
        if put.e_tag.is_some() && put.e_tag == blob.etag().map(str::to_string) {
            blob.keep_hash(got).await;
        }
        Ok(Committed {
            info,
            hash: got,
            replaced: self.replaced,
        })
    }

    /// Aborts: nothing appears, the parts sent so far are dropped.
    pub async fn abort(&mut self) {
        self.small = Vec::new();
        if let Some(w) = self.multipart.take() {
            if let Err(e) = w.abort().await {
                tracing::warn!("aborting the upload of {}: {e}", self.path);
            }
        }
    }
}

impl Drop for ObjectUpload {
    fn drop(&mut self) {
        // Dropped mid-way (the connection's task ended): abort in the
        // background, so the store drops the parts now rather than by its
        // lifecycle rules.
        if let Some(w) = self.multipart.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = w.abort().await;
                });
            }
        }
    }
}
