//! `ferry get`: which download each path takes, where it is saved, and the
//! lines that say what happened.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use tokio_util::sync::CancellationToken;

use super::{error_line, exit_for, note, prompt_line, stdin_lines, GetArgs, EXIT_INTERRUPTED};
use crate::client::tree::{download_tree, TreeOptions, TreeReport};
use crate::client::{
    download_split, download_to, fetch_file, local_name, Client, ClientError, Destination,
    Downloaded, GetOptions, Have, HostPort, Outcome, OutputDir, Progress, Restart, Target,
};
use crate::display::{bytes, human_bytes};
use crate::protocol::ErrorCode;
use crate::server::DEFAULT_PORT;

/// How long a download may take to wind down after Ctrl-C (saving its
/// progress) before the process leaves anyway.
const WIND_DOWN: Duration = Duration::from_secs(2);

pub(super) async fn get(mut a: GetArgs) -> Result<ExitCode> {
    // Past a file-size limit (RLIMIT_FSIZE) the kernel kills the writer with
    // SIGXFSZ; with a handler installed the write fails with EFBIG instead,
    // and the user gets an error line and a kept .part.
    let _xfsz = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
        rustix::process::Signal::Xfsz as i32,
    ));
    if crate::client::http::is_http_url(&a.host) {
        return super::web::get(a).await;
    }
    let mut target = Target::parse(&a.host, DEFAULT_PORT)?;
    a.tls.apply(&mut target.addr, a.tutorial, target.tls)?;
    let mut paths = std::mem::take(&mut a.remote_paths);
    if let Some(p) = target.path {
        paths.insert(0, p);
    }
    if paths.is_empty() {
        let line = prompt_line(&mut stdin_lines(), "file to download: ").await?;
        match line.map(|l| l.trim_end_matches(['\r', '\n']).to_string()) {
            Some(l) if !l.is_empty() => paths.push(l),
            _ => bail!("no file name given"),
        }
    }
    let cancel = CancellationToken::new();
    tokio::spawn(cancel_on_ctrl_c(cancel.clone()));
    let opts = get_options(&a, &cancel);
    let plan = Plan {
        a: &a,
        addr: target.addr,
        opts,
    };
    let work = plan.run(paths);
    tokio::select! {
        r = work => r,
        // The download had its chance to stop cleanly and did not (it was
        // still connecting, say): leave anyway.
        () = async { cancel.cancelled().await; tokio::time::sleep(WIND_DOWN).await } => {
            error_line("interrupted");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
    }
}

/// What `-q`, `--no-verify` and `--force` ask of every download.
pub(super) fn get_options(a: &GetArgs, cancel: &CancellationToken) -> GetOptions {
    GetOptions {
        progress: if a.quiet {
            Progress::Hidden
        } else {
            Progress::Auto
        },
        verify: !a.no_verify,
        force: a.force,
        cancel: cancel.clone(),
    }
}

/// First Ctrl-C: ask the transfers to stop and keep what they have (a
/// `.part` here, a temporary on the server for `put`). A second one: leave
/// at once.
pub(super) async fn cancel_on_ctrl_c(cancel: CancellationToken) {
    if tokio::signal::ctrl_c().await.is_ok() {
        cancel.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    }
}

struct Plan<'a> {
    a: &'a GetArgs,
    addr: HostPort,
    opts: GetOptions,
}

/// How one path's download ended, for the exit status.
enum Done {
    Ok,
    Failed,
    /// Stop: nothing more can work (server gone, Ctrl-C).
    Stop(ExitCode),
}

impl Plan<'_> {
    async fn run(&self, paths: Vec<String>) -> Result<ExitCode> {
        let dest = Destination::resolve(self.a.output.as_deref(), paths.len(), self.a.recursive);
        match dest {
            Destination::Stdout => self.to_stdout(&paths).await,
            _ if self.a.recursive => self.trees(&dest, &paths).await,
            Destination::Dir(d) => {
                let out = OutputDir::open(&d)?;
                let mut session = None;
                let mut failures = 0;
                for path in &paths {
                    let rel = match local_name(path) {
                        Ok(n) => PathBuf::from(n),
                        Err(e) => {
                            error_line(e);
                            failures += 1;
                            continue;
                        }
                    };
                    match self.one(&mut session, &out, &rel, path).await {
                        Done::Ok => {}
                        Done::Failed => failures += 1,
                        Done::Stop(code) => return Ok(code),
                    }
                }
                Ok(exit_for(failures))
            }
            Destination::File(f) => {
                let (parent, name) = split_file_dest(&f)?;
                let out = OutputDir::open(&parent)?;
                match self.one(&mut None, &out, Path::new(&name), &paths[0]).await {
                    Done::Ok => Ok(ExitCode::SUCCESS),
                    Done::Failed => Ok(ExitCode::FAILURE),
                    Done::Stop(code) => Ok(code),
                }
            }
        }
    }

    /// Downloads one path to `rel` inside `out`, over `session` when it is
    /// a plain single-stream download, and reports it.
    async fn one(
        &self,
        session: &mut Option<Client>,
        out: &OutputDir,
        rel: &Path,
        path: &str,
    ) -> Done {
        let res = if self.a.tutorial {
            crate::client::tutorial::get(&self.addr, path, out, rel, &self.opts)
                .await
                .map(Outcome::Saved)
        } else if self.a.jobs > 1 || has_split_part(out, rel) {
            download_split(&self.addr, out, rel, path, self.a.jobs as usize, &self.opts).await
        } else {
            self.over_session(session, out, rel, path).await
        };
        match res {
            Ok(outcome) => {
                if !self.a.quiet {
                    note(self.summary(&outcome));
                }
                Done::Ok
            }
            Err(e) => failed(&e),
        }
    }

    /// A single-stream download over the session, (re)connecting when there
    /// is none or the last error broke it.
    async fn over_session(
        &self,
        session: &mut Option<Client>,
        out: &OutputDir,
        rel: &Path,
        path: &str,
    ) -> Result<Outcome, ClientError> {
        let mut tries = 0;
        loop {
            let res = match session {
                Some(c) => fetch_file(c, out, rel, path, &self.opts).await,
                None => match Client::connect_pipelined(&self.addr).await {
                    Ok(c) => fetch_file(session.insert(c), out, rel, path, &self.opts).await,
                    Err(e) => Err(e),
                },
            };
            if res.as_ref().is_err_and(ClientError::breaks_connection) {
                *session = None;
            }
            match res {
                Err(e) if tries < self.a.retry && is_transient(&e) => {
                    tries += 1;
                    let wait = Duration::from_millis(250 << (tries - 1).min(5));
                    if !self.a.quiet {
                        note(format!(
                            "{e}; reconnecting in {} (try {tries} of {})",
                            humantime::format_duration(wait),
                            self.a.retry
                        ));
                    }
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.opts.cancel.cancelled() => return Err(e),
                    }
                }
                other => return other,
            }
        }
    }

    fn summary(&self, outcome: &Outcome) -> String {
        let d = match outcome {
            Outcome::UpToDate(p) => {
                return format!(
                    "{} is already here (same size and time as the server's); nothing to do",
                    p.display()
                )
            }
            Outcome::Saved(d) => d,
        };
        let verified = if self.a.tutorial || self.a.no_verify {
            ""
        } else {
            ", verified"
        };
        format!(
            "saved {} ({}{verified}{}){}",
            d.path.display(),
            bytes(d.size),
            resumed_note(d),
            restart_note(d.restarted)
        )
    }

    /// `-o -`: each file in turn to stdout, verified.
    async fn to_stdout(&self, paths: &[String]) -> Result<ExitCode> {
        if self.a.recursive || self.a.tutorial {
            bail!(
                "-o - writes one verified file stream; it cannot be combined with -r or --tutorial"
            );
        }
        let mut client = Client::connect_pipelined(&self.addr).await?;
        let stdout = io::stdout();
        let mut out = stdout.lock();
        let mut failures = 0;
        let mut said_no_resume = false;
        for (i, path) in paths.iter().enumerate() {
            match download_to(&mut client, path, &mut out, &self.opts).await {
                Ok(_) => {}
                Err(ClientError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                    return Ok(ExitCode::SUCCESS);
                }
                Err(e @ ClientError::Interrupted { .. }) => {
                    error_line(format!("{e} (-o - cannot resume)"));
                    return Ok(ExitCode::from(EXIT_INTERRUPTED));
                }
                Err(e) => {
                    failures += 1;
                    error_line(&e);
                    if !e.breaks_connection() {
                        continue;
                    }
                    if !said_no_resume {
                        said_no_resume = true;
                        error_line(
                            "-o - cannot resume: what was written stays written; run again to fetch from the start",
                        );
                    }
                    if i + 1 == paths.len() {
                        break;
                    }
                    // One reconnect for the paths left; if the server is
                    // gone, say so once and stop.
                    match Client::connect(&self.addr).await {
                        Ok(c) => client = c,
                        Err(e) => {
                            error_line(&e);
                            return Ok(ExitCode::FAILURE);
                        }
                    }
                }
            }
        }
        Ok(exit_for(failures))
    }

    /// `get -r`: each remote directory as a tree.
    async fn trees(&self, dest: &Destination, paths: &[String]) -> Result<ExitCode> {
        if self.a.tutorial {
            bail!(
                "the tutorial's protocol has no directories; -r cannot be combined with --tutorial"
            );
        }
        let Destination::Dir(d) = dest else {
            unreachable!("-r always saves into a directory")
        };
        let out = OutputDir::open(d)?;
        let opts = TreeOptions {
            jobs: self.a.jobs as usize,
            get: self.opts.clone(),
            ..Default::default()
        };
        let mut any_failed = false;
        for path in paths {
            match download_tree(&self.addr, path, &out, &opts).await {
                Ok(r) => {
                    any_failed |= r.failed();
                    self.tree_report(&r);
                    if r.interrupted {
                        return Ok(ExitCode::from(EXIT_INTERRUPTED));
                    }
                }
                Err(e) => {
                    any_failed = true;
                    if let Done::Stop(code) = failed(&e) {
                        return Ok(code);
                    }
                }
            }
        }
        Ok(if any_failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }

    fn tree_report(&self, r: &TreeReport) {
        for f in &r.failures {
            error_line(f);
        }
        for s in &r.unsafe_names {
            error_line(format!("skipped an unsafe name from the server: {s}"));
        }
        for s in &r.skipped {
            note(format!(
                "skipped {s} (a link that cannot be followed, or not a regular file)"
            ));
        }
        if r.interrupted {
            error_line(format!(
                "interrupted: saved {} so far into {}; partial files are kept as .part; run the same command again to resume",
                files(r.files),
                r.root.display()
            ));
            return;
        }
        if self.a.quiet {
            return;
        }
        let verified = if self.a.no_verify { "" } else { ", verified" };
        let mut line = format!(
            "saved {} ({}, {}{verified}",
            r.root.display(),
            files(r.files),
            human_bytes(r.bytes),
        );
        if r.up_to_date > 0 {
            line.push_str(&format!("; {} already here", files(r.up_to_date)));
        }
        line.push(')');
        if !r.unsafe_names.is_empty() {
            line.push_str(&format!(
                ", skipped {} (unsafe names)",
                r.unsafe_names.len()
            ));
        }
        if !r.failures.is_empty() {
            line.push_str(&format!(", {} failed", r.failures.len()));
        }
        note(line);
    }
}

/// Whether `e` may go away by connecting again: the connection was lost,
/// refused, or the server busy (not a refusal of the request, not Ctrl-C).
fn is_transient(e: &ClientError) -> bool {
    match e {
        ClientError::Connection(_) | ClientError::Refused(_) | ClientError::Connect { .. } => true,
        ClientError::Remote { .. } => e.remote_code() == Some(ErrorCode::Busy),
        _ => false,
    }
}

fn files(n: u64) -> String {
    if n == 1 {
        "1 file".to_string()
    } else {
        format!("{n} files")
    }
}

/// Whether `rel` has a split download's part to resume (which only the
/// split path can continue, whatever `-j`).
fn has_split_part(out: &OutputDir, rel: &Path) -> bool {
    matches!(out.part(rel).resume_point(), Some((Have::Ranges(_), _)))
}

/// `-o PATH` for one file: the directory to open and the name inside it.
fn split_file_dest(f: &Path) -> Result<(PathBuf, String)> {
    let Some(name) = f.file_name().and_then(|n| n.to_str()) else {
        bail!("cannot save as {}: not a file name", f.display());
    };
    if let Err(why) = crate::protocol::validate_name(name.as_bytes()) {
        bail!("cannot save as {}: {why}", f.display());
    }
    let parent = match f.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_string()))
}

fn resumed_note(d: &Downloaded) -> String {
    match (d.resumed, d.resumed_prefix) {
        (0, _) => String::new(),
        (n, true) => format!(", resumed at {n}"),
        (n, false) => format!(", {} of it resumed from the .part", human_bytes(n)),
    }
}

fn restart_note(r: Option<Restart>) -> &'static str {
    match r {
        None => "",
        Some(Restart::Changed) => {
            "; the server's file had changed since the .part was saved, so it started over"
        }
        Some(Restart::Corrupt) => {
            "; the earlier .part did not match the server's file, so it started over"
        }
    }
}

/// Reports a failed download; tells whether to go on with the next path.
fn failed(e: &ClientError) -> Done {
    match e {
        ClientError::Interrupted { .. } => {
            error_line(e);
            return Done::Stop(ExitCode::from(EXIT_INTERRUPTED));
        }
        ClientError::Remote { .. } if e.remote_code() == Some(ErrorCode::IsADirectory) => {
            error_line(format!("{e} (use -r to download a directory)"));
        }
        _ => error_line(e),
    }
    if e.stops_everything() {
        // Nothing will work for the other paths either.
        return Done::Stop(ExitCode::FAILURE);
    }
    Done::Failed
}
