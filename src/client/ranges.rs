//! One large file over several connections (`ferry get -j N`): for links
//! where one TCP stream cannot fill the pipe (long round trips, loss).
//!
//! The file is cut into N ranges; each connection fetches one with a GET
//! carrying the version (size, mtime) seen by a STAT first, and writes it at
//! its offset in the part file. Every answer's trailer carries the hash of
//! the whole file; once all ranges are in, the part is hashed from disk and
//! compared before it is renamed into place. A split download is not
//! resumable: on failure its part is removed.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;

use indicatif::ProgressBar;

use super::{
    download_job, local_name, Client, ClientError, Downloaded, FileJob, HostPort, PartFile,
    Progress,
};
use crate::display::escape_controls;
use crate::protocol::{EntryKind, Frame, GetRequest, Validator, HASH_LEN};

/// Files smaller than this are not worth splitting.
pub const MIN_SPLIT: u64 = 4 * 1024 * 1024;

/// Ranges start on multiples of this (page- and extent-friendly).
const ALIGN: u64 = 1024 * 1024;

/// Downloads `remote` into `out_dir` over `jobs` connections.
///
/// Falls back to one stream for small files, for `jobs <= 1`, and when an
/// earlier interrupted part exists (so it is resumed, not thrown away).
///
/// # Errors
///
/// As [`download`], plus `Protocol` if the file changes during the download.
pub async fn download_split(
    addr: &HostPort,
    remote: &str,
    out_dir: &Path,
    jobs: usize,
    progress: Progress,
    verify: bool,
) -> Result<Downloaded, ClientError> {
    let mut first = Client::connect(addr).await?;
    let name = local_name(remote)?;
    let part = PartFile::new(out_dir.join(name));
    let st = first.stat(remote).await;
    let split = match &st {
        Ok(s) => {
            s.kind == EntryKind::File
                && jobs > 1
                && s.size >= MIN_SPLIT
                && part.resume_point().is_none()
        }
        Err(_) => false,
    };
    let st = match st {
        Ok(s) if split => s,
        // Let the plain path produce its usual answer (or error).
        _ => {
            let job = FileJob::new(remote.to_string(), part.target().to_path_buf());
            return download_job(&mut first, job.verify(verify), progress).await;
        }
    };
    let version = Validator {
        size: st.size,
        mtime_ns: st.mtime_ns,
    };
    let local = |source| ClientError::Local {
        path: part.part_path().to_path_buf(),
        source,
    };
    let file = part.create(version).map_err(local)?;
    file.set_len(st.size).map_err(local)?;
    let file = Arc::new(file);
    let bar = progress.bar(remote, st.size);

    let ranges = split_ranges(st.size, jobs as u64);
    let mut tasks = tokio::task::JoinSet::new();
    let mut first = Some(first);
    for (offset, length) in ranges {
        let client = first.take();
        let (addr, remote, file, bar) =
            (addr.clone(), remote.to_string(), file.clone(), bar.clone());
        tasks.spawn(async move {
            let mut client = match client {
                Some(c) => c,
                None => Client::connect(&addr).await?,
            };
            fetch_range(&mut client, &remote, version, offset, length, &file, &bar).await
        });
    }
    let mut hashes = Vec::new();
    let mut failure = None;
    while let Some(res) = tasks.join_next().await {
        match res {
            Ok(Ok(h)) => hashes.push(h),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
                tasks.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                failure.get_or_insert(ClientError::Protocol(format!("range task failed: {e}")));
            }
        }
    }
    bar.finish_and_clear();
    if let Some(e) = failure {
        part.discard();
        return Err(e);
    }
    let expected = hashes[0];
    if hashes.iter().any(|h| *h != expected) {
        part.discard();
        return Err(ClientError::Protocol(format!(
            "{} changed during the download; run again",
            escape_controls(remote)
        )));
    }
    if verify {
        let file = file.clone();
        let actual = tokio::task::spawn_blocking(move || crate::hashing::hash_file(&file, st.size))
            .await
            .map_err(|e| ClientError::Protocol(format!("hashing failed: {e}")))?
            .map_err(local)?;
        if actual != expected {
            part.discard();
            return Err(ClientError::HashMismatch(
                escape_controls(remote).into_owned(),
            ));
        }
    }
    super::download::commit(&part, st.size, 0)
}

/// Splits `size` bytes into up to `n` aligned ranges `(offset, length)`.
pub fn split_ranges(size: u64, n: u64) -> Vec<(u64, u64)> {
    let n = n.max(1);
    let step = size.div_ceil(n).div_ceil(ALIGN).max(1) * ALIGN;
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < size {
        let len = step.min(size - offset);
        out.push((offset, len));
        offset += len;
    }
    if out.is_empty() {
        out.push((0, 0));
    }
    out
}

async fn fetch_range(
    client: &mut Client,
    remote: &str,
    version: Validator,
    offset: u64,
    length: u64,
    file: &File,
    bar: &ProgressBar,
) -> Result<[u8; HASH_LEN], ClientError> {
    client.queue_get(GetRequest {
        path: remote.as_bytes().to_vec(),
        offset,
        length: Some(length),
        if_unchanged: Some(version),
    })?;
    client.flush().await?;
    let h = match client.read_reply().await? {
        Frame::FileHeader(h) => h,
        other => {
            return Err(ClientError::Protocol(format!(
                "expected FileHeader, got {}",
                other.name()
            )))
        }
    };
    if h.size != version.size || h.mtime_ns != version.mtime_ns {
        return Err(ClientError::Protocol(format!(
            "{} changed during the download; run again",
            escape_controls(remote)
        )));
    }
    if h.offset != offset || h.length != length {
        return Err(ClientError::Protocol(format!(
            "asked for {offset}+{length}, server sent {}+{}",
            h.offset, h.length
        )));
    }
    let mut pos = offset;
    let mut buf = vec![0u8; 1024 * 1024];
    let mut write_error = None;
    let res = client
        .read_body(length, &mut buf, |chunk| {
            if let Err(e) = file.write_all_at(chunk, pos) {
                let kind = e.kind();
                write_error = Some(e);
                return Err(io::Error::new(kind, "local write failed"));
            }
            pos += chunk.len() as u64;
            bar.inc(chunk.len() as u64);
            Ok(())
        })
        .await;
    if let Some(e) = write_error {
        return Err(ClientError::Output(e));
    }
    res?;
    match client.read_reply().await? {
        Frame::Trailer { hash } => Ok(hash),
        other => Err(ClientError::Protocol(format!(
            "expected Trailer, got {}",
            other.name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_file_exactly() {
        for (size, n) in [
            (0, 4),
            (1, 4),
            (ALIGN * 10 + 5, 3),
            (ALIGN * 8, 8),
            (123, 1),
        ] {
            let r = split_ranges(size, n);
            assert!(r.len() as u64 <= n.max(1));
            let mut expect = 0;
            for (o, l) in &r {
                assert_eq!(*o, expect);
                expect += l;
            }
            assert_eq!(expect, size);
        }
    }
}
