//! `?archive=tar` and `?archive=zip`: a directory's subtree as one
//! download, written while it is sent: no temporary file, and memory
//! bounded whatever the tree's size (a few 64 KiB chunks in flight and one
//! copy buffer).
//!
//! The walk goes through the file service like every other read: each
//! directory is listed and each file opened beneath the root, hidden names
//! and links that cannot be followed left out, loops listed as links (see
//! `SafeRoot::list`). Entry names are relative to the directory archived,
//! built from names the listing returned (never `..`, never a leading `/`).
//! Zip entries are stored, not compressed (zip64 past 4 GiB).

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::warn;

use crate::protocol::EntryKind;
use crate::service::FileService;

/// Which archive format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Tar,
    Zip,
}

impl Format {
    pub(crate) fn parse(s: &str) -> Option<Format> {
        match s {
            "tar" => Some(Format::Tar),
            "zip" => Some(Format::Zip),
            _ => None,
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Tar => "application/x-tar",
            Format::Zip => "application/zip",
        }
    }

    pub(crate) fn extension(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::Zip => "zip",
        }
    }
}

/// Bytes per chunk handed to the response.
const CHUNK: usize = 64 * 1024;

/// Chunks waiting to be sent: with [`CHUNK`], what an archive download
/// holds in memory at most (plus the copy buffer).
const IN_FLIGHT: usize = 4;

/// Starts writing the archive of directory `dir` (a service path) on the
/// blocking pool; its chunks arrive on the returned channel, and an `Err`
/// there ends the download cut short (the client sees it incomplete).
pub(crate) fn start(
    service: Arc<FileService>,
    dir: String,
    format: Format,
) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let res = match format {
            Format::Tar => write_tar(&service, &dir, &mut out),
            Format::Zip => write_zip(&service, &dir, &mut out),
        }
        .and_then(|()| out.flush());
        if let Err(e) = res {
            if e.kind() != io::ErrorKind::BrokenPipe {
                warn!("archive of /{dir} stopped: {e}");
            }
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

/// A `Write` that hands its bytes on in chunks, waiting while the client
/// is slow (the channel is bounded).
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client gone"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// One file of the walk: its name inside the archive and its service path.
struct Item {
    name: String,
    path: String,
    kind: EntryKind,
    size: u64,
    mtime_ns: i64,
}

/// Walks `dir` depth-first, in name order, calling `each` for every
/// directory (before its contents) and regular file.
fn walk(
    service: &FileService,
    dir: &str,
    each: &mut dyn FnMut(&Item) -> io::Result<()>,
) -> io::Result<()> {
    let mut stack = vec![(dir.to_string(), String::new())];
    while let Some((path, prefix)) = stack.pop() {
        let entries = service
            .list_blocking(path.as_bytes())
            .map_err(|e| io::Error::other(format!("/{path}: {e}")))?;
        let mut subdirs = Vec::new();
        for e in entries {
            // A name the protocol's rules refuse cannot be requested (and
            // could not be safely unpacked either): left out.
            let Ok(name) = crate::protocol::validate_name(&e.entry.name) else {
                continue;
            };
            let item = Item {
                name: format!("{prefix}{name}"),
                path: if path.is_empty() {
                    name.to_string()
                } else {
                    format!("{path}/{name}")
                },
                kind: e.entry.kind,
                size: e.entry.size,
                mtime_ns: e.entry.mtime_ns,
            };
            match item.kind {
                EntryKind::File => each(&item)?,
                EntryKind::Dir => {
                    each(&item)?;
                    subdirs.push((item.path.clone(), format!("{}/", item.name)));
                }
                EntryKind::Symlink | EntryKind::Other => {}
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

fn mtime_secs(ns: i64) -> u64 {
    u64::try_from(ns.div_euclid(1_000_000_000)).unwrap_or(0)
}

fn write_tar(service: &FileService, dir: &str, out: &mut ChannelWriter) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    walk(service, dir, &mut |item| {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(mtime_secs(item.mtime_ns));
        if item.kind == EntryKind::Dir {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, format!("{}/", item.name), io::empty())
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(item.size);
            // The bytes go straight from the file, a buffer at a time.
            tar.append_data(&mut h, &item.name, FileReader::new(service, item)?)
        }
    })?;
    tar.into_inner()?.flush()
}

/// A reader over exactly one file's announced bytes, opened through the
/// service; it fails if the file changed size meanwhile.
struct FileReader {
    inner: Box<dyn Read + Send>,
    left: u64,
    path: String,
}

impl FileReader {
    fn new(service: &FileService, item: &Item) -> io::Result<Self> {
        let opened = service
            .open_blocking(item.path.as_bytes())
            .map_err(|e| io::Error::other(format!("/{}: {e}", item.path)))?;
        if opened.info.size != item.size {
            return Err(io::Error::other(format!(
                "/{} changed while being archived",
                item.path
            )));
        }
        let handle = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        Ok(FileReader {
            inner: opened.reader(0, item.size, &handle)?,
            left: item.size,
            path: item.path.clone(),
        })
    }
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "/{} shrank while being archived",
                self.path
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn write_zip(service: &FileService, dir: &str, out: &mut ChannelWriter) -> io::Result<()> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new_stream(out);
    walk(service, dir, &mut |item| {
        let when = zip_time(item.mtime_ns);
        let opts = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .last_modified_time(when)
            .large_file(item.size >= u32::MAX as u64);
        if item.kind == EntryKind::Dir {
            zip.add_directory(&item.name, opts)
                .map_err(io::Error::other)
        } else {
            zip.start_file(&item.name, opts).map_err(io::Error::other)?;
            io::copy(&mut FileReader::new(service, item)?, &mut zip).map(drop)
        }
    })?;
    zip.finish().map_err(io::Error::other)?;
    Ok(())
}

/// A modification time as a zip date-time (UTC: ferry has no time-zone
/// database, and a zip carries local times without a zone).
fn zip_time(ns: i64) -> zip::DateTime {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime_secs(ns));
    // "YYYY-MM-DDTHH:MM:SSZ"
    let s = humantime::format_rfc3339_seconds(t).to_string();
    let n = |r: std::ops::Range<usize>| s.get(r).and_then(|v| v.parse::<u16>().ok());
    match (n(0..4), n(5..7), n(8..10), n(11..13), n(14..16), n(17..19)) {
        (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) => {
            zip::DateTime::from_date_and_time(y, mo as u8, d as u8, h as u8, mi as u8, se as u8)
                .unwrap_or_default()
        }
        _ => zip::DateTime::default(),
    }
}
