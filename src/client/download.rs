//! Downloading one file: resume from a `.part`, receive, verify, rename.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Client, ClientError, PartFile};
use crate::connection::ConnectionError;
use crate::display::escape_controls;
use crate::protocol::{validate_name, ErrorCode, Frame, GetRequest, Validator};

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
    let part = PartFile::new(out_dir.join(name));
    let resume = part.resume_point();
    match fetch(client, remote, &part, resume, progress).await {
        // A resumed prefix that no longer matches (the file was rewritten
        // with the same size and mtime), or a stale part longer than the
        // file: start over once, from scratch.
        Err(ClientError::HashMismatch(_)) if resume.is_some_and(|(len, _)| len > 0) => {
            part.discard();
            fetch(client, remote, &part, None, progress).await
        }
        Err(e)
            if resume.is_some()
                && e.remote_code() == Some(ErrorCode::RangeNotSatisfiable) =>
        {
            part.discard();
            fetch(client, remote, &part, None, progress).await
        }
        other => other,
    }
}

async fn fetch(
    client: &mut Client,
    remote: &str,
    part: &PartFile,
    resume: Option<(u64, Validator)>,
    progress: Progress,
) -> Result<Downloaded, ClientError> {
    let (offset, if_unchanged) = match resume {
        Some((len, v)) => (len, Some(v)),
        None => (0, None),
    };
    client.queue_get(GetRequest {
        path: remote.as_bytes().to_vec(),
        offset,
        length: None,
        if_unchanged,
    })?;
    client.flush().await?;
    let header = match client.read_reply().await? {
        Frame::FileHeader(h) => h,
        other => {
            return Err(ClientError::Protocol(format!(
                "expected FileHeader, got {}",
                other.name()
            )))
        }
    };
    if (header.offset != 0 && header.offset != offset) || header.offset + header.length != header.size
    {
        return Err(ClientError::Protocol(format!(
            "server sent range {}+{} of {} bytes; asked for {offset}..end",
            header.offset, header.length, header.size
        )));
    }
    let local = |source| ClientError::Local {
        path: part.part_path().to_path_buf(),
        source,
    };
    let mut hasher = blake3::Hasher::new();
    let mut file = if header.offset == 0 {
        part.create(Validator {
            size: header.size,
            mtime_ns: header.mtime_ns,
        })
        .map_err(local)?
    } else {
        part.reopen(&mut hasher).map_err(local)?
    };

    let bar = progress.bar(remote, header.size);
    bar.set_position(header.offset);
    let mut buf = vec![0u8; RECV_BUF.min(usize::try_from(header.length).unwrap_or(RECV_BUF)).max(1)];
    let mut write_error = None;
    let received = client
        .read_body(header.length, &mut buf, |chunk| {
            if let Err(e) = file.write_all(chunk) {
                let kind = e.kind();
                write_error = Some(e);
                return Err(io::Error::new(kind, "local write failed"));
            }
            hasher.update(chunk);
            bar.inc(chunk.len() as u64);
            Ok(())
        })
        .await;
    bar.finish_and_clear();
    if let Some(e) = write_error {
        return Err(local(e));
    }
    received.map_err(|e| match e {
        ConnectionError::UnexpectedEof(_) => ClientError::Connection(ConnectionError::Io(
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "server closed during {}; run again to resume",
                    escape_controls(remote)
                ),
            ),
        )),
        other => other.into(),
    })?;
    drop(file);

    let expected = match client.read_reply().await? {
        Frame::Trailer { hash } => hash,
        other => {
            return Err(ClientError::Protocol(format!(
                "expected Trailer, got {}",
                other.name()
            )))
        }
    };
    if hasher.finalize().as_bytes() != &expected {
        part.discard();
        return Err(ClientError::HashMismatch(escape_controls(remote).into_owned()));
    }
    part.commit().map_err(|source| ClientError::Local {
        path: part.target().to_path_buf(),
        source,
    })?;
    Ok(Downloaded {
        path: part.target().to_path_buf(),
        size: header.size,
        resumed_from: header.offset,
    })
}
