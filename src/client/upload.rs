//! Uploading: one file over a session (`Put`, its body, `PutEnd`), and
//! whole local trees, pipelined (docs/PROTOCOL.md, "Uploads").
//!
//! The server keeps what an interrupted upload sent beside the target, so
//! the same command run again continues from there; the whole file is
//! then checked against its BLAKE3 hash, which the client computes from
//! its own copy while the body is on its way. A file changed locally
//! between the two runs fails that check: the server drops what it had
//! and the upload starts over once, from zero.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Bar, Client, ClientError, HostPort, Progress};
use crate::connection::ConnectionError;
use crate::protocol::{ErrorCode, Frame, PutRequest, HASH_LEN, MAX_INLINE_PUT};

/// Body bytes sent between progress updates and Ctrl-C checks.
const SEND_STEP: u64 = 8 * 1024 * 1024;

/// Inline uploads awaiting their answer at most, per connection.
const WINDOW: usize = 32;

/// How uploads behave.
#[derive(Debug, Clone)]
pub struct PutOptions {
    /// Progress bars.
    pub progress: Progress,
    /// Cancelled on Ctrl-C: the upload stops; the server keeps what it has.
    pub cancel: CancellationToken,
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions {
            progress: Progress::Auto,
            cancel: CancellationToken::new(),
        }
    }
}

/// What a finished upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// The remote path it was saved as.
    pub remote: String,
    /// Its size.
    pub size: u64,
    /// Bytes the server already had from an earlier attempt.
    pub resumed: u64,
    /// Whether it replaced a file on the server.
    pub replaced: bool,
    /// Whether it started over after the server's copy failed the check.
    pub restarted: bool,
}

/// A local file to upload, opened.
#[derive(Debug)]
pub struct LocalFile {
    /// The path as the user gave it (for messages).
    pub path: PathBuf,
    file: File,
    size: u64,
    mtime_ns: i64,
}

impl LocalFile {
    /// Opens a local regular file.
    ///
    /// # Errors
    ///
    /// `Local` if it cannot be opened or is not a regular file.
    pub fn open(path: &Path) -> Result<Self, ClientError> {
        let local = |source| ClientError::Local {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(local)?;
        let meta = file.metadata().map_err(local)?;
        if !meta.is_file() {
            return Err(local(io::Error::new(
                io::ErrorKind::InvalidInput,
                if meta.is_dir() {
                    "is a directory (use -r to upload a directory)"
                } else {
                    "not a regular file"
                },
            )));
        }
        let mtime_ns = meta
            .modified()
            .map(crate::storage::system_time_ns)
            .unwrap_or(0);
        Ok(LocalFile {
            path: path.to_path_buf(),
            file,
            size: meta.len(),
            mtime_ns,
        })
    }

    /// Its size.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn request(&self, remote: &str, inline: bool) -> Frame {
        Frame::Put(PutRequest {
            path: remote.as_bytes().to_vec(),
            size: self.size,
            mtime_ns: self.mtime_ns,
            inline,
        })
    }

    fn local_err(&self, source: io::Error) -> ClientError {
        ClientError::Local {
            path: self.path.clone(),
            source,
        }
    }
}

fn unexpected(frame: &Frame, wanted: &str) -> ClientError {
    ClientError::Protocol(format!("expected {wanted}, got {}", frame.name()))
}

/// Uploads `local` as `remote` over `client`, resuming what the server
/// kept of an earlier attempt, and retrying once from zero if the server's
/// copy fails the hash check. `bar` grows by the bytes the server gets of
/// this file.
///
/// # Errors
///
/// The server's refusal (`Remote`), a local read error (`Local`), a broken
/// connection, or `Interrupted` on Ctrl-C (the server keeps what it has).
pub async fn put_file(
    client: &mut Client,
    local: &LocalFile,
    remote: &str,
    opts: &PutOptions,
    bar: &Bar,
) -> Result<Uploaded, ClientError> {
    let progress = Shown {
        bar,
        last: std::cell::Cell::new(0),
    };
    // The server may not yet have noticed that an interrupted run of the
    // same upload is gone (its lock on the temporary lasts until then):
    // a few short waits.
    let mut first = put_once(client, local, remote, opts, &progress).await;
    for wait_ms in [100, 300, 600, 1000, 2000] {
        if first.as_ref().err().and_then(ClientError::remote_code) != Some(ErrorCode::Conflict) {
            break;
        }
        debug!("another upload of this file is in progress; retrying in {wait_ms} ms");
        tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
        first = put_once(client, local, remote, opts, &progress).await;
    }
    match first {
        Err(e) if e.remote_code() == Some(ErrorCode::Mismatch) => {
            debug!("the server's copy failed the check; starting over");
            progress.at(0);
            let mut done = put_once(client, local, remote, opts, &progress).await?;
            done.restarted = true;
            Ok(done)
        }
        other => other,
    }
}

/// One file's share of a bar that other connections' files move too:
/// it adds what this file gained since last told.
struct Shown<'a> {
    bar: &'a Bar,
    last: std::cell::Cell<u64>,
}

impl Shown<'_> {
    fn at(&self, pos: u64) {
        let last = self.last.replace(pos);
        if pos >= last {
            self.bar.inc(pos - last);
        } else {
            self.bar
                .set_position(self.bar.position().saturating_sub(last - pos));
        }
    }
}

async fn put_once(
    client: &mut Client,
    local: &LocalFile,
    remote: &str,
    opts: &PutOptions,
    bar: &Shown<'_>,
) -> Result<Uploaded, ClientError> {
    client.queue_frame(local.request(remote, false))?;
    client.flush().await?;
    let offset = match client.read_reply().await? {
        Frame::PutReady { offset } if offset <= local.size => offset,
        Frame::PutReady { offset } => {
            return Err(ClientError::Protocol(format!(
                "server says it holds {offset} bytes of a {}-byte file",
                local.size
            )))
        }
        other => return Err(unexpected(&other, "PutReady")),
    };
    bar.at(offset);
    let hashing = {
        let f = local.file.try_clone().map_err(|e| local.local_err(e))?;
        let size = local.size;
        tokio::task::spawn_blocking(move || crate::hashing::hash_file(&f, size))
    };
    let sent = send_body(client, local, offset, opts, bar).await;
    let hash = hashing
        .await
        .map_err(|e| local.local_err(io::Error::other(e)))?
        .map_err(|e| local.local_err(e));
    sent?;
    let hash = hash?;
    client.connection().queue(&Frame::PutEnd { hash });
    client.flush().await?;
    match client.read_reply().await? {
        Frame::PutDone { size, replaced } => Ok(Uploaded {
            remote: remote.to_string(),
            size,
            resumed: offset,
            replaced,
            restarted: false,
        }),
        other => Err(unexpected(&other, "PutDone")),
    }
}

/// Sends the body from `offset`, in steps, zero-copy where the stream
/// allows; stops between steps on Ctrl-C.
async fn send_body(
    client: &mut Client,
    local: &LocalFile,
    offset: u64,
    opts: &PutOptions,
    bar: &Shown<'_>,
) -> Result<(), ClientError> {
    let mut pos = offset;
    while pos < local.size {
        if opts.cancel.is_cancelled() {
            return Err(ClientError::Interrupted {
                part: None,
                kept: pos,
                total: local.size,
            });
        }
        let n = SEND_STEP.min(local.size - pos);
        client
            .connection()
            .send_file(&local.file, pos, n)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => {
                    local.local_err(io::Error::other("the file shrank while being sent"))
                }
                _ => ClientError::Connection(ConnectionError::Io(e)),
            })?;
        pos += n;
        bar.at(pos);
    }
    Ok(())
}

/// One file of a tree upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutJob {
    /// The local file.
    pub local: PathBuf,
    /// Where it goes on the server.
    pub remote: String,
}

/// What happened to each file of a batch.
#[derive(Debug, Default)]
pub struct BatchReport {
    /// Files saved on the server.
    pub saved: Vec<Uploaded>,
    /// Files that failed, with the line saying why.
    pub failures: Vec<String>,
    /// Body bytes the files saved hold.
    pub bytes: u64,
    /// Stopped by Ctrl-C.
    pub interrupted: bool,
}

/// Uploads `jobs` over one connection: small files inline and pipelined
/// (up to `WINDOW` (32) awaiting their answers), large ones one at a time
/// with resume.
///
/// # Errors
///
/// Only what ends the whole batch: the connection failing, or the server
/// refusing everything (uploads off, token). Per-file failures are in the
/// report.
pub async fn put_batch(
    addr: &HostPort,
    jobs: &[PutJob],
    opts: &PutOptions,
    bar: &Bar,
) -> Result<BatchReport, ClientError> {
    let mut client = connect_for_upload(addr).await?;
    let mut report = BatchReport::default();
    let mut waiting: VecDeque<(String, PathBuf, u64)> = VecDeque::new();
    for job in jobs {
        if opts.cancel.is_cancelled() {
            report.interrupted = true;
            break;
        }
        let local = match LocalFile::open(&job.local) {
            Ok(l) => l,
            Err(e) => {
                report.failures.push(e.to_string());
                continue;
            }
        };
        if local.size <= MAX_INLINE_PUT {
            let mut body = vec![0u8; local.size as usize];
            if let Err(e) = local.file.read_exact_at(&mut body, 0) {
                report.failures.push(local.local_err(e).to_string());
                continue;
            }
            let hash: [u8; HASH_LEN] = *blake3::hash(&body).as_bytes();
            if let Err(e) = client.queue_frame(local.request(&job.remote, true)) {
                report.failures.push(e.to_string());
                continue;
            }
            let conn = client.connection();
            conn.queue_raw(&body);
            conn.queue(&Frame::PutEnd { hash });
            waiting.push_back((job.remote.clone(), job.local.clone(), local.size));
            if conn.queued_len() >= 256 * 1024 || waiting.len() >= WINDOW {
                client.flush().await?;
            }
            while waiting.len() >= WINDOW {
                settle_one(&mut client, &mut waiting, &mut report, bar).await?;
            }
        } else {
            client.flush().await?;
            while !waiting.is_empty() {
                settle_one(&mut client, &mut waiting, &mut report, bar).await?;
            }
            match put_file(&mut client, &local, &job.remote, opts, bar).await {
                Ok(u) => {
                    report.bytes += u.size;
                    report.saved.push(u);
                }
                Err(ClientError::Interrupted { .. }) => {
                    report.interrupted = true;
                    break;
                }
                Err(e) if e.breaks_connection() || e.stops_everything() => return Err(e),
                Err(e) => report.failures.push(failure_line(&local.path, &e)),
            }
        }
    }
    client.flush().await?;
    while !waiting.is_empty() {
        settle_one(&mut client, &mut waiting, &mut report, bar).await?;
    }
    Ok(report)
}

/// Reads the answer to the oldest inline upload.
async fn settle_one(
    client: &mut Client,
    waiting: &mut VecDeque<(String, PathBuf, u64)>,
    report: &mut BatchReport,
    bar: &Bar,
) -> Result<(), ClientError> {
    let Some((remote, local, size)) = waiting.pop_front() else {
        return Ok(());
    };
    match client.read_reply().await {
        Ok(Frame::PutDone { size, replaced }) => {
            report.bytes += size;
            report.saved.push(Uploaded {
                remote,
                size,
                resumed: 0,
                replaced,
                restarted: false,
            });
        }
        Ok(other) => return Err(unexpected(&other, "PutDone")),
        Err(e) if e.breaks_connection() || e.stops_everything() => return Err(e),
        Err(e) => report.failures.push(failure_line(&local, &e)),
    }
    bar.inc(size);
    Ok(())
}

/// The line for a file that failed: the server's message names the remote
/// path already; a local failure names the local one.
fn failure_line(local: &Path, e: &ClientError) -> String {
    match e {
        ClientError::Remote { .. } | ClientError::Local { .. } => e.to_string(),
        _ => format!("{}: {e}", local.display()),
    }
}

/// Connects and checks that the server accepts uploads.
///
/// # Errors
///
/// As [`Client::connect`], or `Remote` with `ReadOnly` when the server
/// does not accept uploads.
pub async fn connect_for_upload(addr: &HostPort) -> Result<Client, ClientError> {
    let client = Client::connect(addr).await?;
    if !client.accepts_uploads() {
        return Err(ClientError::Remote {
            code: ErrorCode::ReadOnly as u16,
            message: format!(
                "{} does not accept uploads (start it with ferry serve --upload)",
                client.peer()
            ),
        });
    }
    Ok(client)
}
