//! Whole-directory downloads (`ferry get -r HOST DIR -o OUT`).
//!
//! The tree is recreated as `OUT/<last component of DIR>/...`, as `scp -r`
//! and `cp -r` do (the whole served tree, `.` or `/`, goes into `OUT`
//! itself). The walk pipelines one LIST per directory of a level; the files
//! are then fetched with up to [`TreeOptions::window`] GETs in flight per
//! connection, over [`TreeOptions::jobs`] connections, so thousands of
//! small files cost little more than their bytes.
//!
//! Names come from the server and are untrusted: each must pass
//! [`validate_name`] (no `/`, `\`, `..`, NUL or control characters) before
//! anything is created, and everything is created beneath the output
//! directory's handle ([`OutputDir`]): directories one component at a time
//! and never through an existing symlink, part files with `O_NOFOLLOW`. A
//! malicious server can therefore not make the client write outside the
//! output directory.
//!
//! A file already there with the server's size and modification time is
//! ferry's own copy from an earlier run and is left alone, so re-running an
//! interrupted tree download fetches only what is missing; a different file
//! in the way is refused unless `--force`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use super::output::{Existing, OutputDir};
use super::{
    local_name, receive, Client, ClientError, FileJob, GetOptions, HostPort, MAX_TREE_ENTRIES,
};
use crate::display::{escape_bytes, escape_controls};
use crate::protocol::{validate_name, EntryKind};

/// How a tree is fetched.
#[derive(Debug, Clone)]
pub struct TreeOptions {
    /// Parallel connections.
    pub jobs: usize,
    /// GET requests in flight per connection.
    pub window: usize,
    /// Progress, verification, `--force`, Ctrl-C.
    pub get: GetOptions,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions {
            jobs: 1,
            window: 64,
            get: GetOptions::default(),
        }
    }
}

/// What a tree download did.
#[derive(Debug, Default)]
pub struct TreeReport {
    /// The local directory the tree was saved as.
    pub root: PathBuf,
    /// Files saved (and verified unless verification was off).
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Files already there from an earlier run (same size and time).
    pub up_to_date: u64,
    /// One line per file or directory that failed.
    pub failures: Vec<String>,
    /// Names the server sent that are unsafe to create locally, each once,
    /// escaped for display, with the reason.
    pub unsafe_names: Vec<String>,
    /// Entries skipped on purpose (links that cannot be followed, special
    /// files).
    pub skipped: Vec<String>,
    /// Set when Ctrl-C stopped the download.
    pub interrupted: bool,
}

impl TreeReport {
    /// Whether anything went wrong (the exit status is then non-zero).
    pub fn failed(&self) -> bool {
        !self.failures.is_empty() || !self.unsafe_names.is_empty() || self.interrupted
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

/// Whether `remote` names the whole served tree (`""`, `.`, `/`, `./`).
fn is_whole_tree(remote: &str) -> bool {
    remote
        .trim_matches('/')
        .trim_start_matches("./")
        .trim_matches('/')
        == "."
        || remote.trim_matches('/').is_empty()
}

/// Downloads the remote directory `remote_dir` into `out` (the whole served
/// tree, for `""`, `.` or `/`, into `out` itself).
///
/// # Errors
///
/// Connecting, a remote dir that is not a directory, or a local directory
/// that cannot be created. Failures of single files are collected in the
/// report instead.
pub async fn download_tree(
    addr: &HostPort,
    remote_dir: &str,
    out: &OutputDir,
    opts: &TreeOptions,
) -> Result<TreeReport, ClientError> {
    let remote_dir = if is_whole_tree(remote_dir) {
        ""
    } else {
        remote_dir.trim_end_matches('/')
    };
    let local_root = if remote_dir.is_empty() {
        PathBuf::new()
    } else {
        PathBuf::from(local_name(remote_dir)?)
    };
    let mut client = Client::connect_pipelined(addr).await?;
    let st = client.stat(remote_dir).await?;
    if st.kind != EntryKind::Dir {
        return Err(ClientError::InvalidPath {
            path: escape_controls(remote_dir).into_owned(),
            why: "not a directory (drop -r to download a file)",
        });
    }
    if !remote_dir.is_empty() {
        out.ensure_dir(&local_root)
            .map_err(|source| ClientError::Local {
                path: out.shown(&local_root),
                source,
            })?;
    }
    let mut report = TreeReport {
        root: if remote_dir.is_empty() {
            out.path().to_path_buf()
        } else {
            out.shown(&local_root)
        },
        ..TreeReport::default()
    };
    let (jobs, total) = walk(&mut client, remote_dir, &local_root, out, opts, &mut report).await?;

    let label = if remote_dir.is_empty() {
        "(whole tree)"
    } else {
        remote_dir
    };
    let bar = opts.get.progress.bar(label, total);
    let n = opts.jobs.clamp(1, jobs.len().max(1));
    let mut lanes: Vec<Vec<FileJob>> = vec![Vec::new(); n];
    for (i, job) in jobs.into_iter().enumerate() {
        lanes[i % n].push(job);
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut first = Some(client);
    for lane in lanes {
        let client = first.take();
        let (addr, bar) = (addr.clone(), (*bar).clone());
        let (window, get) = (opts.window.max(1), opts.get.clone());
        tasks.spawn(async move { run_lane(client, &addr, lane, window, &get, &bar).await });
    }
    while let Some(res) = tasks.join_next().await {
        match res {
            Ok(lane) => {
                report.files += lane.files;
                report.bytes += lane.bytes;
                report.failures.extend(lane.failures);
                report.interrupted |= lane.interrupted;
            }
            Err(e) => report.failures.push(format!("a download task failed: {e}")),
        }
    }
    Ok(report)
}

/// Lists the tree level by level (one pipelined LIST per directory of a
/// level), creating local directories and collecting the files to fetch.
async fn walk(
    client: &mut Client,
    remote_dir: &str,
    local_root: &Path,
    out: &OutputDir,
    opts: &TreeOptions,
    report: &mut TreeReport,
) -> Result<(Vec<FileJob>, u64), ClientError> {
    let mut jobs = Vec::new();
    let mut total = 0u64;
    let mut seen = 0usize;
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
            seen += entries.len();
            if seen > MAX_TREE_ENTRIES {
                return Err(ClientError::Protocol(format!(
                    "the tree has more than {MAX_TREE_ENTRIES} entries; download it in parts"
                )));
            }
            for entry in entries {
                let name = match validate_name(&entry.name) {
                    Ok(n) => n,
                    Err(why) => {
                        let shown_dir = if remote.is_empty() {
                            String::new()
                        } else {
                            format!("{}/", escape_controls(&remote))
                        };
                        report
                            .unsafe_names
                            .push(format!("{shown_dir}{} ({why})", escape_bytes(&entry.name)));
                        continue;
                    }
                };
                let remote_path = join_remote(&remote, name);
                let local_path = local.join(name);
                match entry.kind {
                    EntryKind::Dir => match out.ensure_dir(&local_path) {
                        Ok(()) => next.push((remote_path, local_path)),
                        Err(e) => report.failures.push(format!(
                            "{}: {e}",
                            escape_controls(&out.shown(&local_path).display().to_string())
                        )),
                    },
                    EntryKind::File => {
                        match out.existing(&local_path, entry.size, entry.mtime_ns, opts.get.force)
                        {
                            Ok(Existing::UpToDate) => {
                                report.up_to_date += 1;
                                continue;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                report.failures.push(e.to_string());
                                continue;
                            }
                        }
                        total += entry.size;
                        let part = out.part(&local_path);
                        let job = if FileJob::is_small(entry.size) {
                            FileJob::new_small(remote_path, part)
                        } else {
                            FileJob::new(remote_path, part)
                        };
                        jobs.push(job.verify(opts.get.verify));
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
    interrupted: bool,
}

/// How many times a lane reconnects after losing its connection.
const MAX_RECONNECTS: usize = 3;

/// Fetches `jobs` over one connection with up to `window` GETs in flight.
async fn run_lane(
    client: Option<Client>,
    addr: &HostPort,
    jobs: Vec<FileJob>,
    window: usize,
    opts: &GetOptions,
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
                    fail_all(&mut report, &mut todo, &e);
                    break;
                }
            },
        };
        match pipeline(&mut c, &mut todo, window, opts, bar, &mut report).await {
            Ok(()) => client = Some(c),
            Err(ClientError::Interrupted { .. }) => {
                report.interrupted = true;
                break;
            }
            Err(e) => {
                reconnects += 1;
                if reconnects > MAX_RECONNECTS || e.stops_everything() {
                    fail_all(&mut report, &mut todo, &e);
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

fn fail_all(report: &mut LaneReport, todo: &mut VecDeque<FileJob>, e: &ClientError) {
    for job in todo.drain(..) {
        report
            .failures
            .push(format!("{}: {e}", escape_controls(&job.remote)));
    }
}

/// Runs the pipeline until `todo` is empty or the connection breaks (then
/// the jobs in flight are returned to the front of `todo`).
async fn pipeline(
    client: &mut Client,
    todo: &mut VecDeque<FileJob>,
    window: usize,
    opts: &GetOptions,
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
        match receive(client, &job, opts, Some(bar)).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_tree_spellings() {
        for w in ["", ".", "/", "./", "//", "./."] {
            assert!(is_whole_tree(w), "{w:?}");
        }
        for d in ["a", "./a", ".hidden", "a/."] {
            assert!(!is_whole_tree(d), "{d:?}");
        }
    }
}
