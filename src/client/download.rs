//! Downloading one file over one stream: resume from a `.part`, receive,
//! verify, rename.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::output::{Existing, OutputDir};
use super::space::{check_free, Reservation};
use super::{Client, ClientError, GetOptions, GrowingHash, Have, PartFile, StreamHash};
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
    /// A bar for one file (or tree) of `total` bytes, labelled `label`
    /// (hidden unless wanted and stderr is a terminal). It is cleared from
    /// the terminal when dropped, however the download ends.
    pub fn bar(self, label: &str, total: u64) -> Bar {
        if self == Progress::Hidden || !io::stderr().is_terminal() {
            return Bar(ProgressBar::hidden());
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:20!} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(escape_controls(label).into_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar(bar)
    }
}

/// A progress bar that clears itself from the terminal when dropped, so an
/// interrupted or failed download never leaves a frozen bar behind.
#[derive(Debug)]
pub struct Bar(ProgressBar);

impl std::ops::Deref for Bar {
    type Target = ProgressBar;
    fn deref(&self) -> &ProgressBar {
        &self.0
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Why a download did not continue its `.part`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// The server's file changed since the `.part` was saved.
    Changed,
    /// The `.part` did not match the server's file (its hash), or was
    /// longer than it: it was discarded.
    Corrupt,
}

/// What a finished download did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Where the file was saved.
    pub path: PathBuf,
    /// The file's size.
    pub size: u64,
    /// Bytes that came from an earlier interrupted attempt (0 if none).
    pub resumed: u64,
    /// Whether those bytes were a prefix (`resumed at N`) rather than
    /// pieces of several ranges.
    pub resumed_prefix: bool,
    /// Set when an earlier `.part` was found but not used.
    pub restarted: Option<Restart>,
}

/// How a download request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Downloaded (and verified unless verification was off).
    Saved(Downloaded),
    /// ferry's own copy of this version was already there: nothing done.
    UpToDate(PathBuf),
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
    /// Bytes of the part already on disk, and the version they belong to.
    resume: Option<(u64, Validator)>,
    verify: bool,
    restarted: Option<Restart>,
}

impl FileJob {
    /// A job saving `remote` through `part`, resuming what the part holds
    /// (a prefix; a split download's part goes to [`super::ranges`]).
    pub fn new(remote: String, part: PartFile) -> Self {
        let resume = match part.resume_point() {
            Some((Have::Prefix(len), v)) => Some((len, v)),
            _ => None,
        };
        FileJob {
            remote,
            part,
            resume,
            verify: true,
            restarted: None,
        }
    }

    /// A job for a file known to be small (from a listing): such files are
    /// verified in memory and written at once, so they never leave a part
    /// to resume, and looking for one is skipped.
    pub fn new_small(remote: String, part: PartFile) -> Self {
        FileJob {
            remote,
            part,
            resume: None,
            verify: true,
            restarted: None,
        }
    }

    /// Whether to check the BLAKE3 hash (on by default). Without it the
    /// download saves the client a core's worth of hashing, and a corrupted
    /// transfer goes unnoticed: for benchmarks and trusted links only.
    pub fn verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// Whether a file of `size` bytes takes the small-file path.
    pub fn is_small(size: u64) -> bool {
        size <= SMALL_BODY
    }

    /// The same job, started over: the part is discarded.
    pub fn fresh(mut self) -> Self {
        self.part.discard();
        self.resume = None;
        self.restarted = Some(Restart::Corrupt);
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
    pub fn renewed(self) -> Self {
        let restarted = self.restarted;
        let mut job = FileJob::new(self.remote, self.part).verify(self.verify);
        job.restarted = restarted;
        job
    }

    /// Whether this job checks the hash.
    pub fn is_verified(&self) -> bool {
        self.verify
    }

    /// The GET request for this job.
    ///
    /// A part that already holds the whole file asks for its last byte
    /// again: a server answers a request for no bytes without hashing the
    /// file (docs/PROTOCOL.md), and the hash is what the complete part
    /// still needs.
    pub fn request(&self) -> GetRequest {
        let (offset, if_unchanged) = match self.resume {
            Some((len, v)) if len > 0 && len == v.size => (len - 1, Some(v)),
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

/// Downloads `remote` to `rel` inside `out`, unless ferry's own copy of
/// that version is already there. An existing different file is refused
/// unless `opts.force`.
///
/// # Errors
///
/// As [`download_job`], and `Exists` for a file in the way.
pub async fn fetch_file(
    client: &mut Client,
    out: &OutputDir,
    rel: &Path,
    remote: &str,
    opts: &GetOptions,
) -> Result<Outcome, ClientError> {
    // Something in the way (and no --force): is it ferry's own copy?
    if out.existing(rel, 0, i64::MIN, true)? != Existing::Absent && !opts.force {
        let st = client.stat(remote).await?;
        if out.existing(rel, st.size, st.mtime_ns, opts.force)? == Existing::UpToDate {
            debug!(target = %out.shown(rel).display(), "already up to date");
            return Ok(Outcome::UpToDate(out.shown(rel)));
        }
    }
    let job = FileJob::new(remote.to_string(), out.part(rel)).verify(opts.verify);
    download_job(client, job, opts).await.map(Outcome::Saved)
}

/// Fetches `job` over `client`: resumes its part when the server's file
/// is unchanged, starts over when it changed (or when the resumed part
/// turns out not to match), and renames the part into place only after the
/// BLAKE3 hash of the whole file matches the server's. A refused request
/// creates nothing.
///
/// # Errors
///
/// The server's refusal (`Remote`), `HashMismatch`, local file errors
/// (`Local`, the part kept for a later resume), a lost connection (the
/// part kept) or `Interrupted`.
pub async fn download_job(
    client: &mut Client,
    job: FileJob,
    opts: &GetOptions,
) -> Result<Downloaded, ClientError> {
    match fetch(client, &job, opts).await {
        Err(e) if job.retry_fresh(&e) => {
            debug!("the .part did not match ({e}); starting over");
            fetch(client, &job.fresh(), opts).await
        }
        other => other,
    }
}

async fn fetch(
    client: &mut Client,
    job: &FileJob,
    opts: &GetOptions,
) -> Result<Downloaded, ClientError> {
    client.queue_get(job.request())?;
    client.flush().await?;
    receive(client, job, opts, None).await
}

/// Reads the answer to `job`'s GET (already sent) into its part file,
/// verifies it and renames it into place. Progress goes to a bar of its own
/// or to `shared_bar`.
///
/// # Errors
///
/// As [`download_job`].
pub async fn receive(
    client: &mut Client,
    job: &FileJob,
    opts: &GetOptions,
    shared_bar: Option<&ProgressBar>,
) -> Result<Downloaded, ClientError> {
    let header = read_header(client).await?;
    let asked = job.request().offset;
    if header.offset != 0 && header.offset != asked {
        return Err(ClientError::Protocol(format!(
            "server resumed at {} but was asked for {asked}",
            header.offset
        )));
    }
    let resumed = match job.resume {
        Some((len, _)) if asked > 0 && header.offset == asked => len,
        _ => 0,
    };
    let restarted = if asked > 0 && header.offset == 0 {
        debug!("the server's file changed since the .part was saved; starting over");
        Some(Restart::Changed)
    } else {
        job.restarted
    };
    let done = |size| Downloaded {
        path: job.part.target().to_path_buf(),
        size,
        resumed,
        resumed_prefix: true,
        restarted,
    };
    if header.offset == 0 && header.length <= SMALL_BODY {
        receive_small(client, job, &header, shared_bar, &opts.cancel).await?;
        return Ok(done(header.size));
    }
    let part = &job.part;
    let local = |source| ClientError::Local {
        path: part.part_path(),
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
    check_free(&file, header.length, &part.part_path())?;
    let own_bar;
    let bar = match shared_bar {
        Some(b) => b,
        None => {
            own_bar = opts.progress.bar(&job.remote, header.size);
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
    let mut reserve = Reservation::new(&file, header.offset, header.offset + header.length);
    let received = tokio::select! {
        r = receive_into_file(client, &job.remote, &header, &file, hash.as_ref(), bar, &mut reserve) => r,
        () = opts.cancel.cancelled() => Err(ClientError::Interrupted {
            part: Some(part.part_path()),
            kept: 0,
            total: header.size,
        }),
    };
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
    if let Err(e) = received {
        let kept = file.metadata().map_or(0, |m| m.len());
        reserve.release(kept);
        return Err(match e {
            ClientError::Output(source) => local(source),
            ClientError::Interrupted { part, total, .. } => {
                ClientError::Interrupted { part, kept, total }
            }
            e => e,
        });
    }
    let actual = actual.transpose().map_err(local)?;
    let expected = read_trailer(client).await?;
    if actual.is_some_and(|a| a != expected) {
        drop(file);
        part.discard();
        return Err(ClientError::HashMismatch(
            escape_controls(&job.remote).into_owned(),
        ));
    }
    part.save(&file, Some(header.mtime_ns))?;
    Ok(done(header.size))
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
    cancel: &CancellationToken,
) -> Result<(), ClientError> {
    let len = usize::try_from(header.length).map_err(|_| ClientError::Protocol("size".into()))?;
    let mut body = Vec::with_capacity(len);
    let mut buf = vec![0u8; len.max(1)];
    let read = client.read_body(header.length, &mut buf, |chunk| {
        body.extend_from_slice(chunk);
        Ok(())
    });
    tokio::select! {
        r = read => r.map_err(|e| match e {
            ConnectionError::UnexpectedEof(_) => cut_short(&job.remote),
            other => other.into(),
        })?,
        () = cancel.cancelled() => return Err(ClientError::Interrupted {
            part: None,
            kept: 0,
            total: header.size,
        }),
    }
    let expected = read_trailer(client).await?;
    if job.verify && blake3::hash(&body).as_bytes() != &expected {
        return Err(ClientError::HashMismatch(
            escape_controls(&job.remote).into_owned(),
        ));
    }
    let part = &job.part;
    let local = |source| ClientError::Local {
        path: part.part_path(),
        source,
    };
    let mut file = part.create_plain().map_err(local)?;
    file.write_all(&body).map_err(local)?;
    part.save(&file, Some(header.mtime_ns))?;
    if let Some(bar) = shared_bar {
        bar.inc(header.length);
    }
    Ok(())
}

/// Receives the body announced by `header` into `file` at its offset,
/// telling `hash`, `bar` and `reserve` how far it got. On Linux the bytes
/// go from the socket to the file with `splice(2)`, never through user
/// space.
async fn receive_into_file(
    client: &mut Client,
    remote: &str,
    header: &FileHeader,
    file: &File,
    hash: Option<&GrowingHash>,
    bar: &ProgressBar,
    reserve: &mut Reservation<'_>,
) -> Result<(), ClientError> {
    let mut advance = |p| {
        if let Some(h) = hash {
            h.advance(p);
        }
        reserve.advance(p);
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
    // Plain TCP: socket to file in the kernel. Inside TLS the bytes must
    // be decrypted in user space, so they are read and written.
    #[cfg(target_os = "linux")]
    if let crate::tls::Stream::Plain(tcp) = conn.stream() {
        use crate::zerocopy::{splice_to_file, SpliceError};
        return splice_to_file(tcp, file, pos, end - pos, advance)
            .await
            .map_err(|e| match e {
                SpliceError::File(e) => ClientError::Output(e),
                SpliceError::Socket(e) => ClientError::Connection(ConnectionError::Io(e)),
                SpliceError::Eof => cut_short(remote),
            });
    }
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
                advance(pos);
                Ok(())
            })
            .await;
        if let Some(e) = write_error {
            return Err(ClientError::Output(e));
        }
        res.map_err(|e| match e {
            ConnectionError::UnexpectedEof(_) => cut_short(remote),
            other => other.into(),
        })
    }
}

pub(super) fn cut_short(remote: &str) -> ClientError {
    ClientError::Connection(ConnectionError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!(
            "server closed during {}; run again to resume",
            escape_controls(remote)
        ),
    )))
}

pub(super) async fn read_trailer(client: &mut Client) -> Result<[u8; HASH_LEN], ClientError> {
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
/// As [`download_job`]; `HashMismatch` after the bytes were written;
/// `Interrupted` (nothing kept) on Ctrl-C.
pub async fn download_to<W: Write>(
    client: &mut Client,
    remote: &str,
    out: &mut W,
    opts: &GetOptions,
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
    let bar = opts.progress.bar(remote, header.size);
    tokio::select! {
        r = receive_verified(client, remote, &header, out, opts.verify, &bar) => r.map(|()| header.size),
        () = opts.cancel.cancelled() => Err(ClientError::Interrupted {
            part: None,
            kept: 0,
            total: header.size,
        }),
    }
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

/// Receives the body announced by `header` into `out`, hashing it on a
/// thread of its own, then checks the trailer's hash.
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
            return Err(cut_short(remote));
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
