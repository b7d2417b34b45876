//! One large file over several connections (`ferry get -j N`): for links
//! where one TCP stream cannot fill the pipe (long round trips, loss).
//!
//! The file is cut into N ranges; each connection fetches one with a GET
//! carrying the version (size, mtime) seen by a STAT first, and writes it
//! at its offset in the part file. A connection that is done takes over
//! the second half of the range with the most left ([`super::board`]), so
//! a slow connection does not hold the others back. Every answer's trailer
//! carries the hash of the whole file; once all ranges are in, the part is
//! hashed from disk and compared before it is renamed into place.
//!
//! A split download is resumable: each range's progress is kept in the
//! part's metadata (checkpointed every second, and when the download fails
//! or is interrupted), and a later run fetches only what each range still
//! lacks, over as many connections as it is given. A single-stream part
//! re-run with `-j` has its remainder split the same way. If the server's
//! file changed in between, the part is discarded and the download starts
//! over; it never splices two versions together.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;

use super::board::Board;
use super::download::{download_job, read_trailer};
use super::output::{Existing, OutputDir};
use super::space::check_free;
use super::{
    fetch_file, Client, ClientError, Downloaded, FileJob, GetOptions, Have, HostPort, Outcome,
    PartFile, RangeProgress, Restart,
};
use crate::display::escape_controls;
use crate::protocol::{EntryKind, Frame, GetRequest, Validator, HASH_LEN};

/// Files smaller than this are not worth splitting.
pub const MIN_SPLIT: u64 = 4 * 1024 * 1024;

/// Ranges start on multiples of this (page- and extent-friendly).
const ALIGN: u64 = 1024 * 1024;

/// How often range progress is written to the part's metadata.
const CHECKPOINT: Duration = Duration::from_secs(1);

/// How many times a connection is re-opened after it broke.
const MAX_RECONNECTS: usize = 3;

/// Downloads `remote` to `rel` inside `out` over up to `jobs` connections,
/// resuming a split (or single-stream) part when the server's file is
/// unchanged.
///
/// Falls back to one stream for small files and for `jobs <= 1` (unless a
/// split part is to be resumed).
///
/// # Errors
///
/// As [`super::download_job`].
pub async fn download_split(
    addr: &HostPort,
    out: &OutputDir,
    rel: &Path,
    remote: &str,
    jobs: usize,
    opts: &GetOptions,
) -> Result<Outcome, ClientError> {
    let mut restarted = None;
    let mut outcome = split_once(addr, out, rel, remote, jobs, opts, &mut restarted).await;
    if let Err(e @ (SplitError::Changed | SplitError::Corrupt)) = &outcome {
        // Once more from nothing, against the server's current version; a
        // second failure is reported.
        debug!("starting the split download over: {e:?}");
        out.part(rel).discard();
        restarted = Some(match e {
            SplitError::Corrupt => Restart::Corrupt,
            _ => Restart::Changed,
        });
        outcome = split_once(addr, out, rel, remote, jobs, opts, &mut restarted).await;
    }
    match outcome {
        Ok(Outcome::Saved(mut d)) => {
            d.restarted = d.restarted.or(restarted);
            Ok(Outcome::Saved(d))
        }
        Ok(other) => Ok(other),
        Err(e) => Err(e.into_client(remote)),
    }
}

/// One attempt of [`download_split`]: stat, plan from what the part holds,
/// fetch.
async fn split_once(
    addr: &HostPort,
    out: &OutputDir,
    rel: &Path,
    remote: &str,
    jobs: usize,
    opts: &GetOptions,
    restarted: &mut Option<Restart>,
) -> Result<Outcome, SplitError> {
    // The other lanes connect while the first one connects and asks for
    // the file's size: on a long round trip that is two of them saved.
    // Unused ones (a small file, one stream, a failure) are dropped, which
    // closes them.
    let spare = super::open_ahead(jobs.saturating_sub(1), || {
        let addr = addr.clone();
        async move { Client::connect(&addr).await }
    });
    let mut first = Client::connect_pipelined(addr).await?;
    let st = first.stat(remote).await?;
    if st.kind != EntryKind::File {
        // Let the plain path produce its usual answer ("is a directory").
        return Ok(fetch_file(&mut first, out, rel, remote, opts).await?);
    }
    if out.existing(rel, st.size, st.mtime_ns, opts.force)? == Existing::UpToDate {
        return Ok(Outcome::UpToDate(out.shown(rel)));
    }
    let version = Validator {
        size: st.size,
        mtime_ns: st.mtime_ns,
    };
    let part = out.part(rel);
    let plan = match part.resume_point() {
        Some((have, v)) if v != version => {
            debug!(?have, "the server's file changed since the .part was saved");
            part.discard();
            *restarted = Some(Restart::Changed);
            fresh_plan(st.size, jobs)
        }
        Some((Have::Ranges(r), _)) => Some(r),
        Some((Have::Prefix(len), _)) if jobs > 1 && st.size.saturating_sub(len) >= MIN_SPLIT => {
            let mut r = vec![RangeProgress {
                offset: 0,
                length: len,
                done: len,
            }];
            r.extend(
                split_ranges(st.size - len, jobs as u64)
                    .into_iter()
                    .map(|(o, l)| RangeProgress {
                        offset: len + o,
                        length: l,
                        done: 0,
                    }),
            );
            r.retain(|r| r.length > 0);
            Some(r)
        }
        Some((Have::Prefix(_), _)) => None,
        None => fresh_plan(st.size, jobs),
    };
    let Some(ranges) = plan else {
        let job = FileJob::new(remote.to_string(), part).verify(opts.verify);
        return Ok(Outcome::Saved(download_job(&mut first, job, opts).await?));
    };
    let split = Split {
        addr,
        remote,
        version,
        part: &part,
        opts,
        jobs,
    };
    split.run(first, spare, ranges).await.map(Outcome::Saved)
}

/// A connection being opened for a lane; aborted if dropped unused.
type Connecting = AbortOnDropHandle<Result<Client, ClientError>>;

/// The ranges of a fresh split, or `None` if the file is not worth it.
fn fresh_plan(size: u64, jobs: usize) -> Option<Vec<RangeProgress>> {
    if jobs <= 1 || size < MIN_SPLIT {
        return None;
    }
    Some(
        split_ranges(size, jobs as u64)
            .into_iter()
            .map(|(offset, length)| RangeProgress {
                offset,
                length,
                done: 0,
            })
            .collect(),
    )
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

/// Why a split download stopped.
#[derive(Debug)]
enum SplitError {
    /// The server's file is not the version the ranges belong to.
    Changed,
    /// Every range arrived, but the whole does not hash to the server's
    /// hash (a resumed piece was damaged).
    Corrupt,
    /// Anything else; the part and its progress are kept.
    Client(ClientError),
}

impl SplitError {
    fn into_client(self, remote: &str) -> ClientError {
        match self {
            SplitError::Changed => ClientError::Protocol(format!(
                "{} changed on the server during the download; run again",
                escape_controls(remote)
            )),
            SplitError::Corrupt => ClientError::HashMismatch(escape_controls(remote).into_owned()),
            SplitError::Client(e) => e,
        }
    }
}

impl From<ClientError> for SplitError {
    fn from(e: ClientError) -> Self {
        SplitError::Client(e)
    }
}

/// One split download in progress.
struct Split<'a> {
    addr: &'a HostPort,
    remote: &'a str,
    version: Validator,
    part: &'a PartFile,
    opts: &'a GetOptions,
    jobs: usize,
}

impl Split<'_> {
    /// Fetches what `ranges` still lack, verifies the whole, commits.
    async fn run(
        &self,
        first: Client,
        mut spare: Vec<Connecting>,
        mut ranges: Vec<RangeProgress>,
    ) -> Result<Downloaded, SplitError> {
        let part = self.part;
        let local = |source| ClientError::Local {
            path: part.part_path(),
            source,
        };
        let resumed: u64 = ranges.iter().map(|r| r.done.min(r.length)).sum();
        let file = if resumed == 0 {
            let f = part.create_plain().map_err(local)?;
            f.set_len(self.version.size).map_err(local)?;
            f
        } else {
            let f = part.reopen().map_err(local)?;
            // A single-stream part continued in ranges: give it its full
            // length (the ranges' metadata says what is really there).
            if f.metadata().map_err(local)?.len() < self.version.size {
                f.set_len(self.version.size).map_err(local)?;
            }
            f
        };
        part.write_meta(self.version, Some(&ranges))
            .map_err(local)?;
        check_free(&file, self.version.size - resumed, &part.part_path())?;
        // A part that is all there still needs the server's hash: fetch its
        // last byte again (a request for nothing gets no hash).
        if ranges.iter().all(|r| r.remaining() == 0) {
            if let Some(last) = ranges.iter_mut().rev().find(|r| r.length > 0) {
                last.done -= 1;
            }
        }
        let file = Arc::new(file);
        let bar = self.opts.progress.bar(self.remote, self.version.size);
        bar.set_position(resumed);
        let todo = ranges.iter().filter(|r| r.remaining() > 0).count();
        // As many lanes as asked for: once the ranges are all taken, a free
        // lane takes over half of the largest one left (see `board`).
        let lanes = self.jobs.max(1);
        debug!(
            ranges = ranges.len(),
            todo, lanes, resumed, "split download"
        );
        let board = Arc::new(Board::new(ranges));
        let mut tasks = tokio::task::JoinSet::new();
        let mut first = Some(first);
        for _ in 0..lanes {
            let client = first.take();
            let ctx = Lane {
                connecting: if client.is_none() { spare.pop() } else { None },
                client,
                addr: self.addr.clone(),
                remote: self.remote.to_string(),
                version: self.version,
                board: board.clone(),
                file: file.clone(),
                part_path: part.part_path(),
                bar: (*bar).clone(),
            };
            tasks.spawn(ctx.run());
        }
        drop(spare);
        let mut hashes = Vec::new();
        let mut failure: Option<SplitError> = None;
        let mut tick = tokio::time::interval(CHECKPOINT);
        tick.tick().await;
        loop {
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    None => break,
                    Some(Ok(Ok(h))) => hashes.extend(h),
                    Some(Ok(Err(e))) => {
                        failure.get_or_insert(e);
                        tasks.abort_all();
                    }
                    Some(Err(e)) if e.is_cancelled() => {}
                    Some(Err(e)) => {
                        failure.get_or_insert(SplitError::Client(ClientError::Protocol(format!(
                            "range task failed: {e}"
                        ))));
                        tasks.abort_all();
                    }
                },
                _ = tick.tick() => {
                    let _ = part.write_meta(self.version, Some(&board.snapshot()));
                }
                () = self.opts.cancel.cancelled(), if failure.is_none() => {
                    failure = Some(SplitError::Client(ClientError::Interrupted {
                        part: Some(part.part_path()),
                        kept: 0,
                        total: self.version.size,
                    }));
                    tasks.abort_all();
                }
            }
        }
        // Every task has stopped writing: what the board says is on disk.
        let progress = board.snapshot();
        let kept = Have::Ranges(progress.clone()).bytes();
        if let Some(e) = failure {
            if matches!(e, SplitError::Changed) {
                return Err(e);
            }
            let _ = part.write_meta(self.version, Some(&progress));
            return Err(match e {
                SplitError::Client(ClientError::Interrupted { part, total, .. }) => {
                    SplitError::Client(ClientError::Interrupted { part, kept, total })
                }
                other => other,
            });
        }
        drop(bar);
        let expected = hashes.first().copied().ok_or_else(|| {
            SplitError::Client(ClientError::Protocol("no range was fetched".into()))
        })?;
        if hashes.iter().any(|h| *h != expected) {
            return Err(SplitError::Changed);
        }
        if self.opts.verify {
            let (f, size) = (file.clone(), self.version.size);
            let actual = tokio::task::spawn_blocking(move || crate::hashing::hash_file(&f, size))
                .await
                .map_err(|e| ClientError::Protocol(format!("hashing failed: {e}")))?
                .map_err(local)?;
            if actual != expected {
                if resumed > 0 {
                    return Err(SplitError::Corrupt);
                }
                part.discard();
                return Err(SplitError::Client(ClientError::HashMismatch(
                    escape_controls(self.remote).into_owned(),
                )));
            }
        }
        part.save(&file, Some(self.version.mtime_ns))?;
        Ok(Downloaded {
            path: part.target().to_path_buf(),
            size: self.version.size,
            resumed,
            resumed_prefix: false,
            restarted: None,
        })
    }
}

/// One connection's share of a split download.
struct Lane {
    client: Option<Client>,
    /// The connection opened for this lane beside the first one's STAT.
    connecting: Option<Connecting>,
    addr: HostPort,
    remote: String,
    version: Validator,
    board: Arc<Board>,
    file: Arc<File>,
    part_path: std::path::PathBuf,
    bar: ProgressBar,
}

/// How a lane's request for a range ended.
enum Fetched {
    /// Answered to its end: the trailer's hash of the whole file.
    Whole([u8; HASH_LEN]),
    /// The range was cut short by another lane taking over its end, and
    /// the bytes up to the cut are written; the rest of the answer is not
    /// wanted, so the connection cannot be used again.
    Cut,
}

impl Lane {
    /// Fetches ranges from the board until none is left to take, and
    /// returns the trailers' hashes.
    async fn run(mut self) -> Result<Vec<[u8; HASH_LEN]>, SplitError> {
        let mut hashes = Vec::new();
        let mut reconnects = 0;
        while let Some(i) = self.board.claim() {
            let fetched = self.fetch_range(i, &mut reconnects).await;
            self.board.release(i);
            if let Some(h) = fetched? {
                hashes.push(h);
            }
        }
        Ok(hashes)
    }

    /// Fetches what range `i` lacks, reconnecting (a few times in all)
    /// when the connection breaks.
    async fn fetch_range(
        &mut self,
        i: usize,
        reconnects: &mut usize,
    ) -> Result<Option<[u8; HASH_LEN]>, SplitError> {
        loop {
            if self.board.range(i).remaining() == 0 {
                return Ok(None);
            }
            let mut client = match (self.client.take(), self.connecting.take()) {
                (Some(c), _) => c,
                (None, Some(opening)) => opening.await.map_err(|e| {
                    ClientError::Protocol(format!("connecting a lane failed: {e}"))
                })??,
                (None, None) => Client::connect(&self.addr).await?,
            };
            match self.fetch(&mut client, i).await {
                Ok(Fetched::Whole(h)) => {
                    self.client = Some(client);
                    return Ok(Some(h));
                }
                Ok(Fetched::Cut) => {
                    debug!("range {i} cut by another lane: leaving its connection");
                    return Ok(None);
                }
                Err(SplitError::Client(e))
                    if e.breaks_connection()
                        && !matches!(e, ClientError::Interrupted { .. })
                        && e.remote_code() != Some(crate::protocol::ErrorCode::Busy)
                        && *reconnects < MAX_RECONNECTS =>
                {
                    *reconnects += 1;
                    debug!("range {i}: {e}; reconnecting ({reconnects}/{MAX_RECONNECTS})");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Fetches what range `i` lacks over `client`, up to where the range
    /// ends (which may move closer while the answer arrives).
    async fn fetch(&self, client: &mut Client, i: usize) -> Result<Fetched, SplitError> {
        let range = self.board.range(i);
        let offset = range.offset + range.done.min(range.length);
        let length = range.remaining();
        client.queue_get(GetRequest {
            path: self.remote.as_bytes().to_vec(),
            offset,
            length: Some(length),
            if_unchanged: Some(self.version),
        })?;
        client.flush().await?;
        let h = match client.read_reply().await? {
            Frame::FileHeader(h) => h,
            other => {
                return Err(SplitError::Client(ClientError::Protocol(format!(
                    "expected FileHeader, got {}",
                    other.name()
                ))))
            }
        };
        if h.size != self.version.size || h.mtime_ns != self.version.mtime_ns || h.offset != offset
        {
            return Err(SplitError::Changed);
        }
        if h.length != length {
            return Err(SplitError::Client(ClientError::Protocol(format!(
                "asked for {offset}+{length}, server sent {}+{}",
                h.offset, h.length
            ))));
        }
        let end = offset + length;
        let mut pos = offset;
        let mut buf = vec![0u8; 1024 * 1024];
        while pos < end {
            let want = usize::try_from(end - pos).map_or(buf.len(), |w| w.min(buf.len()));
            let n = client
                .connection()
                .read_raw(&mut buf[..want])
                .await
                .map_err(|e| ClientError::Connection(e.into()))?;
            if n == 0 {
                return Err(SplitError::Client(super::download::cut_short(&self.remote)));
            }
            let fit = self.board.fit(i, pos, n);
            self.file
                .write_all_at(&buf[..fit.take], pos)
                .map_err(|source| ClientError::Local {
                    path: self.part_path.clone(),
                    source,
                })?;
            pos += fit.take as u64;
            self.bar.inc(self.board.advance(i, pos));
            if fit.cut && pos < end {
                return Ok(Fetched::Cut);
            }
        }
        Ok(Fetched::Whole(read_trailer(client).await?))
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
