//! What an opened file is to the service's callers: its bytes
//! ([`Content`]: a local file, or an object read in ranges) and its stat,
//! and a blocking reader over either for code on a blocking thread.

use std::fs::File;
use std::io;

use crate::storage::{ByteStream, FileInfo, ObjectBlob};

/// The bytes of an opened file: a local file, or an object read in ranges.
#[derive(Debug)]
pub enum Content {
    /// An open local file (read with positional reads or `sendfile`).
    Local(File),
    /// An object, read by ranged requests that fail if it changes.
    Object(ObjectBlob),
}

/// A regular file opened for serving, and what its stat found when opened.
#[derive(Debug)]
pub struct OpenFile {
    /// Its bytes.
    pub content: Content,
    /// Its size, times and identity at open time.
    pub info: FileInfo,
}

impl OpenFile {
    /// Another handle on the same version (the hash may be computed after
    /// the body is sent).
    pub fn try_clone(&self) -> io::Result<OpenFile> {
        let content = match &self.content {
            Content::Local(f) => Content::Local(f.try_clone()?),
            Content::Object(b) => Content::Object(b.clone()),
        };
        Ok(OpenFile {
            content,
            info: self.info,
        })
    }

    /// A blocking reader of bytes `offset..offset + len`, for code on a
    /// blocking thread (archives). An object's bytes are fetched through
    /// the runtime `handle`.
    ///
    /// # Errors
    ///
    /// An object store's refusal to start the read.
    pub fn reader(
        self,
        offset: u64,
        len: u64,
        handle: &tokio::runtime::Handle,
    ) -> io::Result<Box<dyn io::Read + Send>> {
        Ok(match self.content {
            Content::Local(file) => Box::new(LocalRange {
                file,
                pos: offset,
                end: offset + len,
            }),
            Content::Object(blob) => Box::new(ObjectReader {
                stream: handle.block_on(blob.range(offset, len))?,
                handle: handle.clone(),
                chunk: bytes::Bytes::new(),
            }),
        })
    }
}

/// A local file's bytes `pos..end` by positional reads.
struct LocalRange {
    file: File,
    pos: u64,
    end: u64,
}

impl io::Read for LocalRange {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = buf
            .len()
            .min(usize::try_from(self.end - self.pos).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        match self.file.read_at(&mut buf[..want], self.pos)? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being read",
            )),
            n => {
                self.pos += n as u64;
                Ok(n)
            }
        }
    }
}

/// An object's ranged stream read from a blocking thread.
struct ObjectReader {
    stream: ByteStream,
    handle: tokio::runtime::Handle,
    chunk: bytes::Bytes,
}

impl io::Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use futures_util::StreamExt;
        while self.chunk.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(c) => self.chunk = c?,
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}
