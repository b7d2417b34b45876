//! One object opened for reading ([`ObjectBlob`]): its bytes as ranged
//! reads that fail if the object changes, and its BLAKE3 hash as kept in
//! the store for every node (the entry format is below; see `object` for
//! where it lives).

use std::fmt;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, PutPayload};

use super::object::{bounded, io_error, STORE_TIMEOUT};
use crate::protocol::HASH_LEN;

/// One object opened for reading: its key and the version found when it
/// was opened. Reads of it fail if the object changes meanwhile.
#[derive(Clone)]
pub struct ObjectBlob {
    store: Arc<dyn ObjectStore>,
    key: ObjPath,
    size: u64,
    etag: Option<String>,
    sidecar: ObjPath,
}

impl ObjectBlob {
    /// The object `meta` describes, whose shared hash lives at `sidecar`.
    pub(super) fn new(store: Arc<dyn ObjectStore>, meta: ObjectMeta, sidecar: ObjPath) -> Self {
        ObjectBlob {
            store,
            key: meta.location,
            size: meta.size,
            etag: meta.e_tag,
            sidecar,
        }
    }
}

impl fmt::Debug for ObjectBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectBlob")
            .field("key", &self.key.as_ref())
            .field("size", &self.size)
            .field("etag", &self.etag)
            .finish()
    }
}

/// A stream of an object's bytes, in the store's chunks.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

impl ObjectBlob {
    /// The object's bytes `offset..offset + len`, streamed with bounded
    /// memory (one ranged `GET` with `If-Match`). The stream fails if the
    /// object changed since it was opened, if the store stops sending for
    /// 30 s, or if it ends early.
    ///
    /// # Errors
    ///
    /// The store's answer to the request.
    pub async fn range(&self, offset: u64, len: u64) -> io::Result<ByteStream> {
        if len == 0 {
            return Ok(futures_util::stream::empty().boxed());
        }
        tracing::debug!(
            "store read: {} bytes {offset}..{}",
            self.key.as_ref(),
            offset + len
        );
        let opts = GetOptions {
            range: Some(GetRange::Bounded(offset..offset + len)),
            if_match: self.etag.clone(),
            ..GetOptions::default()
        };
        let got = bounded(self.store.get_opts(&self.key, opts))
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::TimedOut, e.to_string()))?
            .map_err(io_error)?;
        let inner = got.into_stream();
        let stream = futures_util::stream::unfold((inner, len), |(mut inner, left)| async move {
            if left == 0 {
                return None;
            }
            let item = match tokio::time::timeout(STORE_TIMEOUT, inner.next()).await {
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the object store stopped sending",
                )),
                Ok(None) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the object store's answer ended early",
                )),
                Ok(Some(Err(e))) => Err(io_error(e)),
                Ok(Some(Ok(b))) if b.len() as u64 > left => Err(io::Error::other(
                    "the object store sent more than was asked for",
                )),
                Ok(Some(Ok(b))) => Ok(b),
            };
            match item {
                Ok(b) => {
                    let left = left - b.len() as u64;
                    Some((Ok(b), (inner, left)))
                }
                Err(e) => Some((Err(e), (inner, 0))),
            }
        });
        Ok(stream.boxed())
    }

    /// The hash another node (or this one, earlier) kept in the store for
    /// this version of the object, if any.
    pub async fn shared_hash(&self) -> Option<[u8; HASH_LEN]> {
        let etag = self.etag.as_deref()?;
        let got = bounded(self.store.get(&self.sidecar)).await.ok()?.ok()?;
        let body = bounded(got.bytes()).await.ok()?.ok()?;
        parse_sidecar(&body, etag, self.size)
    }

    /// Computes the hash by reading the whole object, and keeps it in the
    /// store for every node (best effort: a store that refuses the write
    /// still gets its hash served).
    ///
    /// # Errors
    ///
    /// A read error, or the object changed while it was read.
    pub async fn compute_hash(&self) -> io::Result<[u8; HASH_LEN]> {
        let mut hasher = blake3::Hasher::new();
        let mut body = self.range(0, self.size).await?;
        while let Some(chunk) = body.next().await {
            hasher.update(&chunk?);
        }
        let hash = *hasher.finalize().as_bytes();
        self.keep_hash(hash).await;
        Ok(hash)
    }

    /// Writes `hash` (of this version) to the shared place.
    pub async fn keep_hash(&self, hash: [u8; HASH_LEN]) {
        let Some(etag) = self.etag.as_deref() else {
            return;
        };
        let text = sidecar_text(etag, self.size, &hash);
        let put = self.store.put(&self.sidecar, PutPayload::from(text));
        match bounded(put).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("could not keep the hash in the store: {e}"),
            Err(e) => tracing::warn!("could not keep the hash in the store: {e}"),
        }
    }

    /// The version's `ETag`, as the store gave it.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// The object's key in the store (for logs).
    pub fn key(&self) -> &str {
        self.key.as_ref()
    }

    /// The object's size when opened.
    pub fn size(&self) -> u64 {
        self.size
    }
}

const SIDECAR_MAGIC: &str = "ferry-blake3 1";

fn sidecar_text(etag: &str, size: u64, hash: &[u8; HASH_LEN]) -> String {
    format!(
        "{SIDECAR_MAGIC}\n{etag}\n{size}\n{}\n",
        blake3::Hash::from(*hash).to_hex()
    )
}

fn parse_sidecar(body: &[u8], etag: &str, size: u64) -> Option<[u8; HASH_LEN]> {
    let text = std::str::from_utf8(body).ok()?;
    let mut lines = text.lines();
    if lines.next()? != SIDECAR_MAGIC
        || lines.next()? != etag
        || lines.next()?.parse::<u64>().ok()? != size
    {
        return None;
    }
    blake3::Hash::from_hex(lines.next()?.trim())
        .ok()
        .map(|h| *h.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sidecar_counts_only_for_the_version_it_was_made_from() {
        let h = *blake3::hash(b"x").as_bytes();
        let t = sidecar_text("\"e1\"", 1, &h);
        assert_eq!(parse_sidecar(t.as_bytes(), "\"e1\"", 1), Some(h));
        assert_eq!(parse_sidecar(t.as_bytes(), "\"e2\"", 1), None);
        assert_eq!(parse_sidecar(t.as_bytes(), "\"e1\"", 2), None);
        assert_eq!(parse_sidecar(b"junk", "\"e1\"", 1), None);
    }
}
