//! Uploads through the file service: the storage's blocking [`Upload`],
//! driven from async front-ends without blocking their workers.
//!
//! Every file-system call (open, each write, the final hash check, fsync
//! and rename) runs on the blocking pool; while one chunk is written
//! there, the front-end already receives the next. So an upload holds at
//! most two chunks of memory and no thread while its client is slow.
//!
//! An upload into an object store ([`ObjectUpload`]) goes through the
//! same task, so front-ends need not know where the bytes go; it is async
//! already and cannot be resumed (kept means aborted).

use tokio::task::JoinHandle;

use crate::protocol::HASH_LEN;
use crate::storage::{Committed, ObjectUpload, Upload, UploadError};

/// Size of the chunks an upload is written in.
pub const UPLOAD_CHUNK: usize = 256 * 1024;

type Pending = JoinHandle<(Upload, Vec<u8>, Result<(), UploadError>)>;

/// An upload being received (see the module doc).
#[derive(Debug)]
pub struct UploadTask {
    upload: Option<Upload>,
    pending: Option<Pending>,
    spare: Option<Vec<u8>>,
    /// The chunk [`UploadTask::push`] is filling.
    filling: Option<Vec<u8>>,
    start: u64,
    received: u64,
    /// Set instead of `upload` for an object store.
    object: Option<ObjectUpload>,
}

fn lost(e: tokio::task::JoinError) -> UploadError {
    UploadError::Io(std::io::Error::other(format!("upload worker failed: {e}")))
}

impl UploadTask {
    pub(super) fn new(upload: Upload) -> Self {
        let start = upload.offset();
        UploadTask {
            upload: Some(upload),
            pending: None,
            spare: None,
            filling: None,
            start,
            received: 0,
            object: None,
        }
    }

    pub(super) fn object(upload: ObjectUpload) -> Self {
        UploadTask {
            upload: None,
            pending: None,
            spare: None,
            filling: None,
            start: upload.offset(),
            received: 0,
            object: Some(upload),
        }
    }

    /// Bytes the server already held when the upload began: the client's
    /// bytes continue from here.
    pub fn offset(&self) -> u64 {
        self.start
    }

    /// Bytes received (handed to [`UploadTask::write`] or
    /// [`UploadTask::push`]) so far.
    pub fn received(&self) -> u64 {
        self.received + self.filling.as_ref().map_or(0, |b| b.len() as u64)
    }

    /// An empty buffer of [`UPLOAD_CHUNK`] capacity to fill and hand back
    /// to [`UploadTask::write`] (reused, so a long upload allocates twice).
    pub fn buffer(&mut self) -> Vec<u8> {
        let mut b = self
            .spare
            .take()
            .unwrap_or_else(|| Vec::with_capacity(UPLOAD_CHUNK));
        b.clear();
        b
    }

    async fn settle(&mut self) -> Result<(), UploadError> {
        if let Some(p) = self.pending.take() {
            let (u, buf, res) = p.await.map_err(lost)?;
            self.upload = Some(u);
            self.spare = Some(buf);
            if let Err(e) = res {
                if gives_up(&e) {
                    if let Some(u) = self.upload.take() {
                        let _ = tokio::task::spawn_blocking(move || u.discard()).await;
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Appends `buf`: waits for the previous chunk's write, then starts
    /// this one's in the background.
    ///
    /// # Errors
    ///
    /// The previous write's failure: past the declared size or the limit
    /// (the temporary is then removed), the disk full (removed too, so a
    /// full disk is not kept full), or another IO error.
    pub async fn write(&mut self, buf: Vec<u8>) -> Result<(), UploadError> {
        if let Some(o) = self.object.as_mut() {
            self.received += buf.len() as u64;
            let res = o.write(&buf).await;
            self.spare = Some(buf);
            return res;
        }
        self.settle().await?;
        let Some(mut u) = self.upload.take() else {
            return Err(UploadError::Io(std::io::Error::other(
                "upload already failed",
            )));
        };
        self.received += buf.len() as u64;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let r = u.write(&buf);
            (u, buf, r)
        }));
        Ok(())
    }

    /// Appends `data` of any length: bytes gather into chunks, each
    /// written (as by [`UploadTask::write`]) once full; the last, partial
    /// one by [`UploadTask::finish`] or [`UploadTask::keep`].
    ///
    /// # Errors
    ///
    /// As [`UploadTask::write`].
    pub async fn push(&mut self, mut data: &[u8]) -> Result<(), UploadError> {
        while !data.is_empty() {
            let mut buf = match self.filling.take() {
                Some(b) => b,
                None => self.buffer(),
            };
            let n = (UPLOAD_CHUNK - buf.len()).min(data.len());
            buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if buf.len() == UPLOAD_CHUNK {
                self.write(buf).await?;
            } else {
                self.filling = Some(buf);
            }
        }
        Ok(())
    }

    /// Writes what [`UploadTask::push`] gathered.
    async fn flush(&mut self) -> Result<(), UploadError> {
        match self.filling.take() {
            Some(b) if !b.is_empty() => self.write(b).await,
            _ => Ok(()),
        }
    }

    /// Waits for the last write, checks the file against `hash` (when
    /// given) and renames it into place, durably.
    ///
    /// # Errors
    ///
    /// A write's failure, or [`Upload::commit`]'s.
    pub async fn finish(mut self, hash: Option<[u8; HASH_LEN]>) -> Result<Committed, UploadError> {
        self.flush().await?;
        if let Some(o) = self.object.take() {
            return o.commit(hash).await;
        }
        self.settle().await?;
        let Some(u) = self.upload.take() else {
            return Err(UploadError::Io(std::io::Error::other(
                "upload already failed",
            )));
        };
        tokio::task::spawn_blocking(move || u.commit(hash))
            .await
            .map_err(lost)?
    }

    /// Stops, keeping what was received for a later resume.
    pub async fn keep(mut self) {
        if let Some(mut o) = self.object.take() {
            o.abort().await;
            return;
        }
        let _ = self.flush().await;
        let _ = self.settle().await;
    }

    /// Stops and removes the temporary.
    pub async fn discard(mut self) {
        if let Some(mut o) = self.object.take() {
            o.abort().await;
            return;
        }
        let _ = self.settle().await;
        if let Some(u) = self.upload.take() {
            let _ = tokio::task::spawn_blocking(move || u.discard()).await;
        }
    }
}

/// Failures after which the temporary is worth nothing.
fn gives_up(e: &UploadError) -> bool {
    matches!(
        e,
        UploadError::TooLarge { .. } | UploadError::WrongLength { .. } | UploadError::NoSpace
    )
}
