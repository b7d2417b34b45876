//! Whole-directory downloads (`ferry get -r HOST DIR -o OUT`).
//!
//! The tree is recreated as `OUT/<last component of DIR>/...`, as `scp -r`
//! and `cp -r` do. The walk pipelines one LIST per directory of a level;
//! the files are then fetched with up to [`TreeOptions::window`] GETs in
//! flight per connection, over [`TreeOptions::jobs`] connections, so
//! thousands of small files cost little more than their bytes.
//!
//! Names come from the server and are untrusted: each must pass
//! [`validate_name`] (no `/`, `\`, `..`, NUL or control characters) before
//! anything is created, directories are created one component at a time
//! and never through an existing symlink, and part files are opened with
//! `O_NOFOLLOW`. A malicious server can therefore not make the client write
//! outside the output directory.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use crate::client::{local_name, receive, Client, ClientError, FileJob, HostPort, Progress};
use crate::display::{escape_bytes, escape_controls};
use crate::protocol::{validate_name, EntryKind};

/// How a tree is fetched.
#[derive(Debug, Clone, Copy)]
pub struct TreeOptions {
    /// Parallel connections.
    pub jobs: usize,
    /// GET requests in flight per connection.
    pub window: usize,
    /// Progress display.
    pub progress: Progress,
    /// Check each file's BLAKE3 hash (see [`FileJob::verify`]).
    pub verify: bool,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions {
            jobs: 1,
            window: 64,
            progress: Progress::Auto,
            verify: true,
        }
    }
}

/// What a tree download did.
#[derive(Debug, Default)]
pub struct TreeReport {
    /// The local directory the tree was saved as.
    pub root: PathBuf,
    /// Files saved and verified.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// One line per file or name that failed.
    pub failures: Vec<String>,
    /// Entries skipped on purpose (symlinks leaving the root, special files).
    pub skipped: Vec<String>,
}

/// Creates `dir` if missing; an existing entry must be a real directory,
/// never a symlink (which could point anywhere).
fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a directory (symlinks are not followed)",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(dir),
        Err(e) => Err(e),
    }
}

/// Joins a validated remote directory path and a validated name.
fn join_remote(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Downloads the remote directory `remote_dir` ("" for the whole served
/// root, saved into `out` itself) into `out`.
///
/// # Errors
///
/// Connecting, a remote dir that is not a directory, or a local directory
/// that cannot be created. Failures of single files are collected in the
/// report instead.
pub async fn download_tree(
    addr: &HostPort,
    remote_dir: &str,
    out: &Path,
    opts: TreeOptions,
) -> Result<TreeReport, ClientError> {
    let remote_dir = remote_dir.trim_end_matches('/');
    let local_root = if remote_dir.is_empty() {
        out.to_path_buf()
    } else {
        out.join(local_name(remote_dir)?)
    };
    let mut client = Client::connect(addr).await?;
    let st = client.stat(remote_dir).await?;
    if st.kind != EntryKind::Dir {
        return Err(ClientError::InvalidPath {
            path: escape_controls(remote_dir).into_owned(),
            why: "not a directory (drop -r to download a file)",
        });
    }
    let local_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ClientError::Local { path, source }
    };
    fs::create_dir_all(out).map_err(local_err(out))?;
    ensure_dir(&local_root).map_err(local_err(&local_root))?;

    let mut report = TreeReport {
        root: local_root.clone(),
        ..TreeReport::default()
    };
    let (jobs, total) = walk(
        &mut client,
        remote_dir,
        &local_root,
        opts.verify,
        &mut report,
    )
    .await?;

    let bar = opts.progress.bar(remote_dir, total);
    let n = opts.jobs.clamp(1, jobs.len().max(1));
    let mut lanes: Vec<Vec<FileJob>> = vec![Vec::new(); n];
    for (i, job) in jobs.into_iter().enumerate() {
        lanes[i % n].push(job);
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut first = Some(client);
    for lane in lanes {
        let client = first.take();
        let (addr, bar) = (addr.clone(), bar.clone());
        let window = opts.window.max(1);
        tasks.spawn(async move { run_lane(client, &addr, lane, window, &bar).await });
    }
    while let Some(res) = tasks.join_next().await {
        match res {
            Ok(lane) => {
                report.files += lane.files;
                report.bytes += lane.bytes;
                report.failures.extend(lane.failures);
            }
            Err(e) => report.failures.push(format!("a download task failed: {e}")),
        }
    }
    bar.finish_and_clear();
    Ok(report)
}

/// Lists the tree level by level (one pipelined LIST per directory of a
/// level), creating local directories and collecting the files.
async fn walk(
    client: &mut Client,
    remote_dir: &str,
    local_root: &Path,
    verify: bool,
    report: &mut TreeReport,
) -> Result<(Vec<FileJob>, u64), ClientError> {
    let mut jobs = Vec::new();
    let mut total = 0u64;
    let mut level = vec![(remote_dir.to_string(), local_root.to_path_buf())];
    while !level.is_empty() {
        for (remote, _) in &level {
            client.queue_list(remote)?;
        }
        client.flush().await?;
        let mut next = Vec::new();
        for (remote, local) in level {
            let entries = match client.read_list().await {
                Ok(e) => e,
                Err(e) if !e.breaks_connection() => {
                    report
                        .failures
                        .push(format!("{}: {e}", escape_controls(&remote)));
                    continue;
                }
                Err(e) => return Err(e),
            };
            for entry in entries {
                let name = match validate_name(&entry.name) {
                    Ok(n) => n,
                    Err(why) => {
                        report.failures.push(format!(
                            "server sent an unsafe name {:?} in {}: {why}; skipped",
                            escape_bytes(&entry.name),
                            escape_controls(&remote)
                        ));
                        continue;
                    }
                };
                let remote_path = join_remote(&remote, name);
                let local_path = local.join(name);
                match entry.kind {
                    EntryKind::Dir => match ensure_dir(&local_path) {
                        Ok(()) => next.push((remote_path, local_path)),
                        Err(e) => report.failures.push(format!(
                            "{}: {e}",
                            escape_controls(&local_path.display().to_string())
                        )),
                    },
                    EntryKind::File => {
                        total += entry.size;
                        let job = if FileJob::is_small(entry.size) {
                            FileJob::new_small(remote_path, local_path)
                        } else {
                            FileJob::new(remote_path, local_path)
                        };
                        jobs.push(job.verify(verify));
                    }
                    EntryKind::Symlink | EntryKind::Other => {
                        report
                            .skipped
                            .push(escape_controls(&remote_path).into_owned());
                    }
                }
            }
        }
        level = next;
    }
    Ok((jobs, total))
}

#[derive(Default)]
struct LaneReport {
    files: u64,
    bytes: u64,
    failures: Vec<String>,
}

/// How many times a lane reconnects after losing its connection.
const MAX_RECONNECTS: usize = 3;

/// Fetches `jobs` over one connection with up to `window` GETs in flight.
async fn run_lane(
    client: Option<Client>,
    addr: &HostPort,
    jobs: Vec<FileJob>,
    window: usize,
    bar: &ProgressBar,
) -> LaneReport {
    let mut report = LaneReport::default();
    let mut todo: VecDeque<FileJob> = jobs.into();
    let mut reconnects = 0;
    let mut client = client;
    while !todo.is_empty() {
        let mut c = match client.take() {
            Some(c) => c,
            None => match Client::connect(addr).await {
                Ok(c) => c,
                Err(e) => {
                    for job in todo.drain(..) {
                        report
                            .failures
                            .push(format!("{}: {e}", escape_controls(&job.remote)));
                    }
                    break;
                }
            },
        };
        match pipeline(&mut c, &mut todo, window, bar, &mut report).await {
            Ok(()) => client = Some(c),
            Err(e) => {
                reconnects += 1;
                if reconnects > MAX_RECONNECTS {
                    for job in todo.drain(..) {
                        report
                            .failures
                            .push(format!("{}: {e}", escape_controls(&job.remote)));
                    }
                    break;
                }
                // Jobs in flight were put back in `todo`; fresh FileJobs pick
                // up whatever their parts now hold, to resume from there.
                todo = todo.into_iter().map(FileJob::renewed).collect();
            }
        }
    }
    report
}

/// Runs the pipeline until `todo` is empty or the connection breaks (then
/// the jobs in flight are returned to the front of `todo`).
async fn pipeline(
    client: &mut Client,
    todo: &mut VecDeque<FileJob>,
    window: usize,
    bar: &ProgressBar,
    report: &mut LaneReport,
) -> Result<(), ClientError> {
    let mut in_flight: VecDeque<FileJob> = VecDeque::new();
    loop {
        let mut queued = false;
        // Refill in batches, once half the window has drained: one write
        // carries many requests instead of one write per answer.
        while in_flight.len() < window && (queued || in_flight.len() <= window / 2) {
            let Some(job) = todo.pop_front() else { break };
            if let Err(e) = client.queue_get(job.request()) {
                report
                    .failures
                    .push(format!("{}: {e}", escape_controls(&job.remote)));
                continue;
            }
            in_flight.push_back(job);
            queued = true;
        }
        let Some(job) = in_flight.pop_front() else {
            return Ok(());
        };
        if queued {
            if let Err(e) = client.flush().await {
                in_flight.push_front(job);
                requeue(todo, in_flight);
                return Err(e);
            }
        }
        match receive(client, &job, None, Some(bar)).await {
            Ok(d) => {
                report.files += 1;
                report.bytes += d.size;
            }
            Err(e) if e.breaks_connection() => {
                in_flight.push_front(job);
                requeue(todo, in_flight);
                return Err(e);
            }
            Err(e) if job.retry_fresh(&e) => todo.push_back(job.fresh()),
            Err(e) => report
                .failures
                .push(format!("{}: {e}", escape_controls(&job.remote))),
        }
    }
}

fn requeue(todo: &mut VecDeque<FileJob>, in_flight: VecDeque<FileJob>) {
    for job in in_flight.into_iter().rev() {
        todo.push_front(job);
    }
}
