//! `-j N` over HTTP: one file fetched as N ranges over N connections, as
//! aria2 does, when the server serves ranges and names the file's version
//! (a strong ETag or Last-Modified, sent back in `If-Range` with every
//! range, so pieces of two versions are never put together).
//!
//! A lane that is done takes over the second half of the range with the
//! most left (`client::board`), as with the native protocol.
//!
//! The part file has the final size from the start; each range is written
//! at its place, and the progress of every range is checkpointed into the
//! `.part.meta` once a second. A split download that stops for any reason
//! (Ctrl-C, a kill, a lost server) continues each range where it stopped
//! when run again. A lane whose connection breaks retries (a few times,
//! with a pause) before the download gives up.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use http::StatusCode;
use http_body_util::BodyExt;
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;

use super::save::{check, wants_blake3};
use super::{about, connect, fetch, About, Conn, HttpOptions, HttpSaved, Span, Url, STALL_TIMEOUT};
use crate::client::board::Board;
use crate::client::output::{Existing, OutputDir};
use crate::client::ranges::{split_ranges, MIN_SPLIT};
use crate::client::{ClientError, GetOptions, Have, RangeProgress};
use crate::protocol::Validator;

/// Attempts per lane before the download gives up (and keeps its part).
const LANE_TRIES: usize = 4;

/// How often range progress is written to the `.part.meta`.
const CHECKPOINT: Duration = Duration::from_secs(1);

/// Why a lane stopped.
enum LaneEnd {
    /// The server's file is not the version the ranges belong to.
    Changed,
    Failed(ClientError),
}

/// What the split download works from.
struct Plan {
    ranges: Vec<RangeProgress>,
    v: Validator,
    validator: String,
    resumed: u64,
    blake3: Option<[u8; crate::protocol::HASH_LEN]>,
}

/// How [`split`] ended, when it did not fail.
pub(super) enum Split {
    Done(HttpSaved),
    /// Not splittable here (the server ignores ranges, names no version,
    /// or the file is small): download it in one stream.
    No,
    /// The server's file changed since the ranges were saved (or during
    /// the download): the part is gone; download it afresh in one stream.
    Changed,
}

/// Downloads `url` into `rel` as ranges over `opts.jobs` connections, or
/// continues the ranges a `.part` holds.
///
/// # Errors
///
/// As a single-stream download's; `Interrupted` keeps the part and its
/// ranges for the next run.
pub(super) async fn split(
    url: &Url,
    out: &OutputDir,
    rel: &Path,
    get: &GetOptions,
    opts: &HttpOptions,
) -> Result<Split, ClientError> {
    let part = out.part(rel);
    // The other lanes connect while the first range is asked about: on a
    // long round trip (and more with TLS) that is the handshakes saved.
    // Unused ones are dropped, which closes them.
    let mut spare = crate::client::open_ahead(opts.jobs.saturating_sub(1), || {
        let (url, opts) = (url.clone(), opts.clone());
        async move { connect(&url, &opts).await }
    });
    let mut first_conn = None;
    let plan = match (part.resume_point(), part.if_range()) {
        (Some((Have::Ranges(ranges), v)), Some(validator)) => Plan {
            resumed: ranges.iter().map(|r| r.done.min(r.length)).sum(),
            ranges,
            v,
            validator,
            blake3: None,
        },
        _ => match probe(&mut first_conn, url, out, rel, get, opts).await? {
            Probe::Split(p) => p,
            Probe::No => return Ok(Split::No),
            Probe::UpToDate(size) => {
                return Ok(Split::Done(HttpSaved::already_here(out.shown(rel), size)))
            }
        },
    };
    let local = |source| ClientError::Local {
        path: part.target().to_path_buf(),
        source,
    };
    let file = if plan.resumed > 0 {
        part.reopen().map_err(local)?
    } else {
        let f = part.create(plan.v).map_err(local)?;
        f.set_len(plan.v.size).map_err(local)?;
        part.write_meta_with(plan.v, Some(&plan.ranges), Some(&plan.validator))
            .map_err(local)?;
        f
    };
    let file = Arc::new(file);
    let board = Board::new(plan.ranges.clone());
    let bar = get
        .progress
        .bar(&part.target().display().to_string(), plan.v.size);
    bar.set_position(plan.resumed);
    let server_hash = Arc::new(Mutex::new(plan.blake3));
    // As many lanes as asked for: a lane that is done takes over half of
    // the largest range left (see `board`). The probe's connection goes to
    // the first lane, the opened ones to the next.
    let starts: Vec<LaneStart> = (0..opts.jobs.max(1))
        .map(|_| match first_conn.take() {
            Some(c) => LaneStart {
                conn: Some(c),
                opening: None,
            },
            None => LaneStart {
                conn: None,
                opening: spare.pop(),
            },
        })
        .collect();
    drop(spare);
    let results = {
        let ctx = Lanes {
            url,
            plan: &plan,
            file: &file,
            board: &board,
            server_hash: &server_hash,
            bar: &bar,
            get,
            opts,
        };
        let all = join_all(starts.into_iter().map(|start| ctx.lane(start)));
        tokio::pin!(all);
        let mut tick = tokio::time::interval(CHECKPOINT);
        loop {
            tokio::select! {
                r = &mut all => break r,
                _ = tick.tick() => {
                    let _ = part.write_meta_with(plan.v, Some(&board.snapshot()), Some(&plan.validator));
                }
            }
        }
    };
    let now = board.snapshot();
    let kept: u64 = now.iter().map(|r| r.done.min(r.length)).sum();
    let _ = part.write_meta_with(plan.v, Some(&now), Some(&plan.validator));
    let mut failure = None;
    for r in results {
        match r {
            Ok(()) => {}
            Err(LaneEnd::Changed) => {
                drop(bar);
                part.discard();
                debug!("the file changed: starting over in one stream");
                return Ok(Split::Changed);
            }
            Err(LaneEnd::Failed(e)) => failure = failure.or(Some(e)),
        }
    }
    if let Some(e) = failure {
        // Whatever stopped a lane, the part and its ranges are kept.
        debug!("split download stopped: {e}");
        return Err(ClientError::Interrupted {
            part: Some(part.part_path()),
            kept,
            total: plan.v.size,
        });
    }
    drop(bar);
    let size = plan.v.size;
    let info = About {
        total: Some(size),
        start: 0,
        validator: Some(plan.validator.clone()),
        mtime_ns: (plan.v.mtime_ns != 0).then_some(plan.v.mtime_ns),
        blake3: server_hash.lock().ok().and_then(|h| *h),
        name: None,
    };
    let verified = if get.verify {
        let blake3 = if wants_blake3(&info, opts) {
            let f = file.try_clone().map_err(local)?;
            Some(
                tokio::task::spawn_blocking(move || crate::hashing::hash_file(&f, size))
                    .await
                    .map_err(|e| local(std::io::Error::other(e)))?
                    .map_err(local)?,
            )
        } else {
            None
        };
        check(&file, size, blake3.as_ref(), &info, opts)
            .await
            .map_err(local)?
    } else {
        Ok(None)
    };
    let verified = match verified {
        Ok(v) => v,
        Err(which) => {
            part.discard();
            return Err(ClientError::HashMismatch(format!(
                "{} ({which})",
                url.shown()
            )));
        }
    };
    part.save(&file, info.mtime_ns)?;
    Ok(Split::Done(HttpSaved {
        path: Some(part.target().to_path_buf()),
        size,
        resumed: plan.resumed,
        resumed_ranges: true,
        restarted: None,
        verified,
        up_to_date: false,
    }))
}

enum Probe {
    Split(Plan),
    No,
    UpToDate(u64),
}

/// A connection being opened for a lane; aborted if dropped unused.
type Opening = AbortOnDropHandle<Result<Conn, ClientError>>;

/// The connection a lane starts with: one already open, one being
/// opened, or none (the lane opens its own).
#[derive(Default)]
struct LaneStart {
    conn: Option<Conn>,
    opening: Option<Opening>,
}

/// Asks for the first byte over `conn` (left open for a lane): a `206`
/// names the size and version, and says the server serves ranges.
async fn probe(
    conn: &mut Option<Conn>,
    url: &Url,
    out: &OutputDir,
    rel: &Path,
    get: &GetOptions,
    opts: &HttpOptions,
) -> Result<Probe, ClientError> {
    let first = Span {
        from: 0,
        to: Some(0),
        validator: "",
    };
    let answer = fetch(conn, url, Some(first), opts).await?;
    if answer.status != StatusCode::PARTIAL_CONTENT {
        return Ok(Probe::No);
    }
    let info = about(&answer)?;
    // Read the byte asked for, so the connection is idle again for a lane.
    let body = http_body_util::Limited::new(answer.body, 64 * 1024);
    if !matches!(
        tokio::time::timeout(STALL_TIMEOUT, body.collect()).await,
        Ok(Ok(_))
    ) {
        *conn = None;
    }
    let (Some(size), Some(validator)) = (info.total, info.validator.clone()) else {
        return Ok(Probe::No);
    };
    if size < MIN_SPLIT {
        return Ok(Probe::No);
    }
    match out.existing(rel, size, info.mtime_ns.unwrap_or(i64::MIN), get.force)? {
        Existing::UpToDate => return Ok(Probe::UpToDate(size)),
        Existing::Absent | Existing::Replace => {}
    }
    let ranges = split_ranges(size, opts.jobs.max(1) as u64)
        .into_iter()
        .map(|(offset, length)| RangeProgress {
            offset,
            length,
            done: 0,
        })
        .collect();
    Ok(Probe::Split(Plan {
        ranges,
        v: Validator {
            size,
            mtime_ns: info.mtime_ns.unwrap_or(0),
        },
        validator,
        resumed: 0,
        blake3: info.blake3,
    }))
}

/// What every lane of one split download shares.
struct Lanes<'a> {
    url: &'a Url,
    plan: &'a Plan,
    file: &'a std::fs::File,
    board: &'a Board,
    server_hash: &'a Mutex<Option<[u8; crate::protocol::HASH_LEN]>>,
    bar: &'a indicatif::ProgressBar,
    get: &'a GetOptions,
    opts: &'a HttpOptions,
}

impl Lanes<'_> {
    /// One connection's share: ranges from the board until none is left.
    async fn lane(&self, start: LaneStart) -> Result<(), LaneEnd> {
        let mut conn = match start {
            LaneStart { conn: Some(c), .. } => Some(c),
            // A connection that could not be opened is opened again by
            // `fetch`, which reports the error.
            LaneStart {
                opening: Some(o), ..
            } => o.await.ok().and_then(Result::ok),
            LaneStart { .. } => None,
        };
        while let Some(i) = self.board.claim() {
            let fetched = self.fetch_range(i, &mut conn).await;
            self.board.release(i);
            fetched?;
        }
        Ok(())
    }

    /// Fetches what is left of range `i` (retrying, with pauses), up to where
    /// the range ends: another lane may take over its end meanwhile, and then
    /// the rest of the answer is not wanted and `conn` is dropped.
    async fn fetch_range(&self, i: usize, conn: &mut Option<Conn>) -> Result<(), LaneEnd> {
        let Lanes {
            url,
            plan,
            file,
            board,
            server_hash,
            bar,
            get,
            opts,
        } = *self;
        let mut last = None;
        for attempt in 0..LANE_TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
            }
            let r = board.range(i);
            if r.remaining() == 0 {
                return Ok(());
            }
            if get.cancel.is_cancelled() {
                break;
            }
            let span = Span {
                from: r.offset + r.done,
                to: Some(r.offset + r.length - 1),
                validator: &plan.validator,
            };
            let answer = match fetch(conn, url, Some(span), opts).await {
                Ok(a) => a,
                Err(e) => {
                    last = Some(e);
                    *conn = None;
                    continue;
                }
            };
            if answer.status == StatusCode::OK {
                // If-Range did not match: a new version of the file.
                return Err(LaneEnd::Changed);
            }
            if answer.status != StatusCode::PARTIAL_CONTENT {
                return Err(LaneEnd::Failed(ClientError::Http(format!(
                    "{}: HTTP {} for a range",
                    answer.url.shown(),
                    answer.status
                ))));
            }
            let info = about(&answer).map_err(LaneEnd::Failed)?;
            if info.start != span.from || info.total != Some(plan.v.size) {
                return Err(LaneEnd::Changed);
            }
            if let (Some(h), Ok(mut s)) = (info.blake3, server_hash.lock()) {
                s.get_or_insert(h);
            }
            let mut body = answer.body;
            let mut pos = span.from;
            let end = r.offset + r.length;
            let broke = loop {
                let frame = tokio::select! {
                    f = tokio::time::timeout(STALL_TIMEOUT, body.frame()) => f,
                    () = get.cancel.cancelled() => break Some(ClientError::Interrupted { part: None, kept: 0, total: 0 }),
                };
                match frame {
                    Ok(None) => break None,
                    Ok(Some(Ok(frame))) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        if pos + data.len() as u64 > end {
                            return Err(LaneEnd::Changed);
                        }
                        let fit = board.fit(i, pos, data.len());
                        if let Err(e) = file.write_all_at(&data[..fit.take], pos) {
                            return Err(LaneEnd::Failed(ClientError::Local {
                                path: "the .part".into(),
                                source: e,
                            }));
                        }
                        pos += fit.take as u64;
                        bar.inc(board.advance(i, pos));
                        if fit.cut && pos < end {
                            // Another lane fetches the rest: leave the answer.
                            *conn = None;
                            return Ok(());
                        }
                    }
                    Ok(Some(Err(e))) => break Some(ClientError::Protocol(e.to_string())),
                    Err(_) => break Some(ClientError::Protocol("the server stalled".into())),
                }
            };
            match broke {
                None if pos == end => return Ok(()),
                None => last = Some(ClientError::Protocol("a range ended early".into())),
                Some(e @ ClientError::Interrupted { .. }) => return Err(LaneEnd::Failed(e)),
                Some(e) => last = Some(e),
            }
            *conn = None;
        }
        Err(LaneEnd::Failed(last.unwrap_or(ClientError::Interrupted {
            part: None,
            kept: 0,
            total: 0,
        })))
    }
}
