//! Downloading one file: resume from a `.part`, receive, verify, rename.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Client, ClientError, GrowingHash, PartFile, StreamHash};
use crate::connection::ConnectionError;
use crate::display::escape_controls;
use crate::protocol::{
    validate_name, ErrorCode, FileHeader, Frame, GetRequest, Validator, HASH_LEN,
};

/// Receive buffer size. Large reads matter: kernel→user copies cost several
/// times more per byte in small blocks than in large ones.
const RECV_BUF: usize = 1024 * 1024;

/// Whether and how to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A progress bar on stderr, if stderr is a terminal.
    Auto,
    /// Nothing.
    Hidden,
}

impl Progress {
    /// A bar for one file of `total` bytes (hidden unless wanted and
    /// stderr is a terminal).
    pub fn bar(self, name: &str, total: u64) -> ProgressBar {
        if self == Progress::Hidden || !io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:20!} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(escape_controls(name).into_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

/// What a finished download did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Where the file was saved.
    pub path: PathBuf,
    /// The file's size.
    pub size: u64,
    /// Bytes that came from an earlier interrupted attempt (0 if none).
    pub resumed_from: u64,
}

/// The local file name for a remote path: its last component, checked like
/// any untrusted name.
///
/// # Errors
///
/// `InvalidPath` if the last component is empty, `.`, `..` or otherwise not
/// a usable file name.
pub fn local_name(remote: &str) -> Result<&str, ClientError> {
    let last = remote.rsplit('/').next().unwrap_or(remote);
    validate_name(last.as_bytes()).map_err(|why| ClientError::InvalidPath {
        path: escape_controls(remote).into_owned(),
        why,
    })
}

/// One file to fetch: its remote path, its part file, and where an earlier
/// attempt stopped.
#[derive(Debug, Clone)]
pub struct FileJob {
    /// Path on the server.
    pub remote: String,
    /// The local part file (and target).
    pub part: PartFile,
    resume: Option<(u64, Validator)>,
    verify: bool,
}

impl FileJob {
    /// A job saving `remote` to `target`, resuming an earlier part if any.
    pub fn new(remote: String, target: PathBuf) -> Self {
        let part = PartFile::new(target);
        let resume = part.resume_point();
        FileJob {
            remote,
            part,
            resume,
            verify: true,
        }
    }

    /// Whether to check the BLAKE3 hash (on by default). Without it the
    /// download saves the client a core's worth of hashing, and a corrupted
    /// transfer goes unnoticed: for benchmarks and trusted links only.
    pub fn verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// A job for a file known to be small (from a listing): such files are
    /// verified in memory and written at once, so they never leave a part
    /// to resume, and looking for one is skipped.
    pub fn new_small(remote: String, target: PathBuf) -> Self {
        FileJob {
            remote,
            part: PartFile::new(target),
            resume: None,
            verify: true,
        }
    }

    /// Whether a file of `size` bytes takes the small-file path.
    pub fn is_small(size: u64) -> bool {
        size <= SMALL_BODY
    }

    /// The same job, started over: the part is discarded.
    pub fn fresh(mut self) -> Self {
        self.part.discard();
        self.resume = None;
        self
    }

    /// Whether a failure of this job with `e` is worth one fresh retry: a
    /// resumed prefix that no longer matches (the file was rewritten keeping
    /// size and mtime), or a stale part longer than the file.
    pub fn retry_fresh(&self, e: &ClientError) -> bool {
        self.resume.is_some_and(|(len, _)| len > 0)
            && (matches!(e, ClientError::HashMismatch(_))
                || e.remote_code() == Some(ErrorCode::RangeNotSatisfiable))
    }

    /// The same job, its resume point read again from the part file (after
    /// an interrupted attempt wrote more of it).
    pub fn renewed(mut self) -> Self {
        self.resume = self.part.resume_point();
        self
    }

    /// Whether this job checks the hash.
    pub fn is_verified(&self) -> bool {
        self.verify
    }

    /// The GET request for this job.
    pub fn request(&self) -> GetRequest {
        let (offset, if_unchanged) = match self.resume {
            Some((len, v)) => (len, Some(v)),
            None => (0, None),
        };
        GetRequest {
            path: self.remote.as_bytes().to_vec(),
            offset,
            length: None,
            if_unchanged,
        }
    }
}

/// Downloads `remote` into `out_dir` under its base name.
///
/// Resumes from an earlier `.part` when the server's file is unchanged,
/// starts over when it changed, and renames the part into place only after
/// the BLAKE3 hash of the whole file matches the server's. A refused request
/// creates nothing.
///
/// # Errors
///
/// The server's refusal (`Remote`), `HashMismatch`, local file errors
/// (`Local`, the part kept for a later resume) or a lost connection (the
/// part kept).
pub async fn download(
    client: &mut Client,
    remote: &str,
    out_dir: &Path,
    progress: Progress,
) -> Result<Downloaded, ClientError> {
    let name = local_name(remote)?;
    download_job(
        client,
        FileJob::new(remote.to_string(), out_dir.join(name)),
        progress,
    )
    .await
}

/// [`download`] for a job built by the caller (e.g. without verification).
///
/// # Errors
///
/// As [`download`].
pub async fn download_job(
    client: &mut Client,
    job: FileJob,
    progress: Progress,
) -> Result<Downloaded, ClientError> {
    match fetch(client, &job, progress).await {
        Err(e) if job.retry_fresh(&e) => fetch(client, &job.fresh(), progress).await,
        other => other,
    }
}

async fn fetch(
    client: &mut Client,
    job: &FileJob,
    progress: Progress,
) -> Result<Downloaded, ClientError> {
    client.queue_get(job.request())?;
    client.flush().await?;
    receive(client, job, Some(progress), None).await
}

/// Reads the answer to `job`'s GET (already sent) into its part file,
/// verifies it and renames it into place. Progress goes to a bar of its own
/// (`progress`) or to a shared one (`shared_bar`).
///
/// # Errors
///
/// As [`download`].
pub async fn receive(
    client: &mut Client,
    job: &FileJob,
    progress: Option<Progress>,
    shared_bar: Option<&ProgressBar>,
) -> Result<Downloaded, ClientError> {
    let header = read_header(client).await?;
    let offset = job.request().offset;
    if header.offset != 0 && header.offset != offset {
        return Err(ClientError::Protocol(format!(
            "server resumed at {} but was asked for {offset}",
            header.offset
        )));
    }
    if header.offset == 0 && header.length <= SMALL_BODY {
        return receive_small(client, job, &header, shared_bar).await;
    }
    let part = &job.part;
    let local = |source| ClientError::Local {
        path: part.part_path().to_path_buf(),
        source,
    };
    let file = if header.offset == 0 {
        part.create(Validator {
            size: header.size,
            mtime_ns: header.mtime_ns,
        })
        .map_err(local)?
    } else {
        part.reopen().map_err(local)?
    };
    // Reserve the blocks up front without changing the file's length (which
    // is what a resume reads): the file system allocates one extent instead
    // of growing the file piece by piece, and a full disk shows at once.
    // File systems without fallocate simply skip this.
    // Not on tmpfs, where fallocate zeroes every page before the first byte
    // arrives: there it costs more than it saves.
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    // `f_type`'s width differs between architectures, hence the cast.
    #[allow(clippy::unnecessary_cast)]
    let on_tmpfs = rustix::fs::fstatfs(&file).is_ok_and(|fs| fs.f_type as i64 == TMPFS_MAGIC);
    if !on_tmpfs {
        let _ = rustix::fs::fallocate(
            &file,
            rustix::fs::FallocateFlags::KEEP_SIZE,
            header.offset,
            header.length,
        );
    }
    let own_bar;
    let bar = match shared_bar {
        Some(b) => b,
        None => {
            own_bar = progress
                .unwrap_or(Progress::Hidden)
                .bar(&job.remote, header.size);
            own_bar.set_position(header.offset);
            &own_bar
        }
    };
    // The hash runs on its own thread beside the receive; for a resumed
    // download it starts with the prefix already on disk.
    let hash = if job.verify {
        let dup = file.try_clone().map_err(local)?;
        Some(GrowingHash::start(dup, header.offset, header.size).map_err(local)?)
    } else {
        None
    };
    let received = receive_into_file(client, &job.remote, &header, &file, hash.as_ref(), bar).await;
    if shared_bar.is_none() {
        bar.finish_and_clear();
    }
    drop(file);
    // Only a complete body may be hashed to `header.size`. After a cut
    // connection or a failed write the part is shorter than that, and
    // `finish(size)` would map pages past its end: touching them is SIGBUS,
    // which killed the client (exit 135, no message) whenever the server
    // died mid-body or the disk filled up (tests/it/faults.rs). Dropping
    // the hash instead stops its thread after the bytes actually written.
    let actual = match (hash, &received) {
        (Some(h), Ok(())) => Some(h.finish(header.size).await),
        _ => None,
    };
    match received {
        Ok(()) => {}
        Err(ClientError::Output(source)) => return Err(local(source)),
        Err(e) => return Err(e),
    }
    let actual = actual.transpose().map_err(local)?;
    let expected = read_trailer(client).await?;
    if actual.is_some_and(|a| a != expected) {
        part.discard();
        return Err(ClientError::HashMismatch(
            escape_controls(&job.remote).into_owned(),
        ));
    }
    commit(part, header.size, header.offset)
}

/// Renames a verified part into place and describes the result.
///
/// # Errors
///
/// `Local` if the rename fails.
pub(super) fn commit(
    part: &PartFile,
    size: u64,
    resumed_from: u64,
) -> Result<Downloaded, ClientError> {
    finish(part, size, resumed_from, PartFile::commit)
}

/// [`commit`] with the rename to use (a part without metadata has none to
/// remove).
fn finish(
    part: &PartFile,
    size: u64,
    resumed_from: u64,
    rename: fn(&PartFile) -> io::Result<()>,
) -> Result<Downloaded, ClientError> {
    rename(part).map_err(|source| ClientError::Local {
        path: part.target().to_path_buf(),
        source,
    })?;
    Ok(Downloaded {
        path: part.target().to_path_buf(),
        size,
        resumed_from,
    })
}

/// Bodies up to this size are received into memory and verified before
/// anything touches the disk: no part metadata, no hashing thread, no pipe.
/// For thousands of small files those per-file costs would dominate.
const SMALL_BODY: u64 = 256 * 1024;

/// [`receive`] for a small body: read it whole, check its hash, then write
/// the part and rename it. A mismatch leaves nothing at all behind.
async fn receive_small(
    client: &mut Client,
    job: &FileJob,
    header: &FileHeader,
    shared_bar: Option<&ProgressBar>,
) -> Result<Downloaded, ClientError> {
    let len = usize::try_from(header.length).map_err(|_| ClientError::Protocol("size".into()))?;
    let mut body = Vec::with_capacity(len);
    let mut buf = vec![0u8; len.max(1)];
    client
        .read_body(header.length, &mut buf, |chunk| {
            body.extend_from_slice(chunk);
            Ok(())
        })
        .await
        .map_err(|e| match e {
            ConnectionError::UnexpectedEof(_) => interrupted(&job.remote),
            other => other.into(),
        })?;
    let expected = read_trailer(client).await?;
    if job.verify && blake3::hash(&body).as_bytes() != &expected {
        return Err(ClientError::HashMismatch(
            escape_controls(&job.remote).into_owned(),
        ));
    }
    let part = &job.part;
    let local = |source| ClientError::Local {
        path: part.part_path().to_path_buf(),
        source,
    };
    let mut file = part.create_plain().map_err(local)?;
    file.write_all(&body).map_err(local)?;
    drop(file);
    if let Some(bar) = shared_bar {
        bar.inc(header.length);
    }
    finish(part, header.size, 0, PartFile::commit_plain)
}

/// Receives the body announced by `header` into `file` at its offset,
/// telling `hash` and `bar` how far it got. On Linux the bytes go from the
/// socket to the file with `splice(2)`, never through user space.
async fn receive_into_file(
    client: &mut Client,
    remote: &str,
    header: &FileHeader,
    file: &File,
    hash: Option<&GrowingHash>,
    bar: &ProgressBar,
) -> Result<(), ClientError> {
    let advance = |p| {
        if let Some(h) = hash {
            h.advance(p);
        }
        bar.set_position(p);
    };
    let conn = client.connection();
    let mut pos = header.offset;
    let end = header.offset + header.length;
    // Whatever arrived together with the header is already in user space.
    let head = conn.take_buffered(header.length);
    if !head.is_empty() {
        file.write_all_at(&head, pos).map_err(ClientError::Output)?;
        pos += head.len() as u64;
        advance(pos);
    }
    if pos == end {
        return Ok(());
    }
    let progress = advance;
    #[cfg(target_os = "linux")]
    {
        use crate::zerocopy::{splice_to_file, SpliceError};
        splice_to_file(conn.stream(), file, pos, end - pos, progress)
            .await
            .map_err(|e| match e {
                SpliceError::File(e) => ClientError::Output(e),
                SpliceError::Socket(e) => ClientError::Connection(ConnectionError::Io(e)),
                SpliceError::Eof => interrupted(remote),
            })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut buf = vec![0u8; RECV_BUF];
        let mut write_error = None;
        let res = conn
            .read_body(end - pos, &mut buf, |chunk| {
                if let Err(e) = file.write_all_at(chunk, pos) {
                    let kind = e.kind();
                    write_error = Some(e);
                    return Err(io::Error::new(kind, "local write failed"));
                }
                pos += chunk.len() as u64;
                progress(pos);
                Ok(())
            })
            .await;
        if let Some(e) = write_error {
            return Err(ClientError::Output(e));
        }
        res.map_err(|e| match e {
            ConnectionError::UnexpectedEof(_) => interrupted(remote),
            other => other.into(),
        })
    }
}

fn interrupted(remote: &str) -> ClientError {
    ClientError::Connection(ConnectionError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!(
            "server closed during {}; run again to resume",
            escape_controls(remote)
        ),
    )))
}

async fn read_trailer(client: &mut Client) -> Result<[u8; HASH_LEN], ClientError> {
    match client.read_reply().await? {
        Frame::Trailer { hash } => Ok(hash),
        other => Err(ClientError::Protocol(format!(
            "expected Trailer, got {}",
            other.name()
        ))),
    }
}

/// Downloads `remote` whole into `out` (e.g. stdout), verifying it. The
/// bytes are written as they arrive; a mismatch is reported afterwards.
///
/// # Errors
///
/// As [`download`]; `HashMismatch` after the bytes were written.
pub async fn download_to<W: Write>(
    client: &mut Client,
    remote: &str,
    out: &mut W,
    progress: Progress,
    verify: bool,
) -> Result<u64, ClientError> {
    client.queue_get(GetRequest {
        path: remote.as_bytes().to_vec(),
        offset: 0,
        length: None,
        if_unchanged: None,
    })?;
    client.flush().await?;
    let header = read_header(client).await?;
    if header.offset != 0 {
        return Err(ClientError::Protocol("server answered with a range".into()));
    }
    let bar = progress.bar(remote, header.size);
    let res = receive_verified(client, remote, &header, out, verify, &bar).await;
    bar.finish_and_clear();
    res.map(|()| header.size)
}

async fn read_header(client: &mut Client) -> Result<FileHeader, ClientError> {
    let header = match client.read_reply().await? {
        Frame::FileHeader(h) => h,
        other => {
            return Err(ClientError::Protocol(format!(
                "expected FileHeader, got {}",
                other.name()
            )))
        }
    };
    if header.offset + header.length != header.size {
        return Err(ClientError::Protocol(format!(
            "server sent range {}+{} of {} bytes; asked for everything to the end",
            header.offset, header.length, header.size
        )));
    }
    Ok(header)
}

/// Receives the body announced by `header` into `out`, hashing it after
/// whatever `hasher` already holds, then checks the trailer's hash.
async fn receive_verified<W: Write>(
    client: &mut Client,
    remote: &str,
    header: &FileHeader,
    out: &mut W,
    verify: bool,
    bar: &ProgressBar,
) -> Result<(), ClientError> {
    let buf_len = RECV_BUF
        .min(usize::try_from(header.length).unwrap_or(RECV_BUF))
        .max(1);
    let mut hash = if verify {
        Some(StreamHash::start(buf_len).map_err(ClientError::Output)?)
    } else {
        None
    };
    let mut spare = Vec::new();
    let conn = client.connection();
    let mut remaining = header.length;
    while remaining > 0 {
        let mut buf = match hash.as_mut() {
            Some(h) => h.buffer(),
            None if spare.is_empty() => vec![0u8; buf_len],
            None => std::mem::take(&mut spare),
        };
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = conn
            .read_raw(&mut buf[..want])
            .await
            .map_err(|e| ClientError::Connection(e.into()))?;
        if n == 0 {
            return Err(interrupted(remote));
        }
        out.write_all(&buf[..n]).map_err(ClientError::Output)?;
        bar.inc(n as u64);
        match hash.as_ref() {
            Some(h) => h.submit(buf, n),
            None => spare = buf,
        }
        remaining -= n as u64;
    }
    out.flush().map_err(ClientError::Output)?;
    let expected = read_trailer(client).await?;
    if let Some(h) = hash {
        let actual = h.finish().await.map_err(ClientError::Output)?;
        if actual != expected {
            return Err(ClientError::HashMismatch(
                escape_controls(remote).into_owned(),
            ));
        }
    }
    Ok(())
}
