//! `ferry put`: which local files go where on the server, and the lines
//! that say what happened.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use tokio_util::sync::CancellationToken;

use super::{error_line, note, PutArgs, EXIT_INTERRUPTED};
use crate::client::upload::{put_batch, BatchReport, PutJob, PutOptions};
use crate::client::{ClientError, Progress, Target};
use crate::display::{bytes, human_bytes};
use crate::server::DEFAULT_PORT;

/// How long an upload may take to wind down after Ctrl-C.
const WIND_DOWN: Duration = Duration::from_secs(2);

/// Local names a tree upload leaves out (and says so): links, special
/// files, hidden names (which the server refuses unless it shares them).
#[derive(Debug, Default)]
struct Skipped {
    links: usize,
    hidden: usize,
    special: usize,
}

pub(super) async fn put(mut a: PutArgs) -> Result<ExitCode> {
    let mut target = Target::parse(&a.host, DEFAULT_PORT)?;
    a.tls.apply(&mut target.addr, false, target.tls)?;
    let to = match (a.to.take(), target.path.take()) {
        (Some(t), _) | (None, Some(t)) => remote_dir(&t),
        (None, None) => String::new(),
    };
    let mut skipped = Skipped::default();
    let mut jobs = Vec::new();
    let mut failures = 0usize;
    for local in &a.local {
        match plan(local, &to, a.recursive, &mut jobs, &mut skipped) {
            Ok(()) => {}
            Err(e) => {
                error_line(e);
                failures += 1;
            }
        }
    }
    if jobs.is_empty() {
        if failures == 0 {
            bail!("nothing to upload");
        }
        return Ok(ExitCode::FAILURE);
    }
    let total: u64 = jobs
        .iter()
        .map(|j| std::fs::metadata(&j.local).map_or(0, |m| m.len()))
        .sum();
    let cancel = CancellationToken::new();
    tokio::spawn(super::get::cancel_on_ctrl_c(cancel.clone()));
    let opts = PutOptions {
        progress: if a.quiet {
            Progress::Hidden
        } else {
            Progress::Auto
        },
        cancel: cancel.clone(),
    };
    let label = match jobs.as_slice() {
        [one] => one.remote.rsplit('/').next().unwrap_or("").to_string(),
        many => format!("{} files", many.len()),
    };
    let bar = opts.progress.bar(&label, total);
    let lanes = (a.jobs as usize).clamp(1, jobs.len());
    let mut batches: Vec<Vec<PutJob>> = vec![Vec::new(); lanes];
    for (i, j) in jobs.iter().enumerate() {
        batches[i % lanes].push(j.clone());
    }
    let work = async {
        let runs = batches
            .iter()
            .map(|b| put_batch(&target.addr, b, &opts, &bar));
        futures_util::future::join_all(runs).await
    };
    let results = tokio::select! {
        r = work => r,
        () = async { cancel.cancelled().await; tokio::time::sleep(WIND_DOWN).await } => {
            error_line("interrupted: the server keeps what it received; run the same command again to resume");
            return Ok(ExitCode::from(EXIT_INTERRUPTED));
        }
    };
    drop(bar);
    let mut all = BatchReport::default();
    for r in results {
        match r {
            Ok(rep) => {
                all.saved.extend(rep.saved);
                all.failures.extend(rep.failures);
                all.bytes += rep.bytes;
                all.interrupted |= rep.interrupted;
            }
            Err(e) => {
                all.failures.push(fatal_line(&e));
            }
        }
    }
    all.failures.dedup();
    for f in &all.failures {
        error_line(f);
    }
    report_skipped(&skipped);
    if all.interrupted {
        error_line(format!(
            "interrupted: uploaded {} so far; the server keeps the file in progress; run the same command again to resume",
            files(all.saved.len())
        ));
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    if !a.quiet {
        summary(&all, &target.addr.to_string(), &to, jobs.len());
    }
    Ok(if all.failures.is_empty() && failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn fatal_line(e: &ClientError) -> String {
    match e {
        ClientError::Connection(_) => {
            format!("{e}; the server keeps what it received: run the same command again to resume")
        }
        _ => e.to_string(),
    }
}

fn summary(all: &BatchReport, host: &str, to: &str, planned: usize) {
    let dest = if to.is_empty() {
        format!("{host}:/")
    } else {
        format!("{host}:/{to}/")
    };
    if let ([one], 1) = (all.saved.as_slice(), planned) {
        let mut extra = String::new();
        if one.resumed > 0 {
            extra.push_str(&format!(", resumed at {}", one.resumed));
        }
        if one.replaced {
            extra.push_str(", replaced the server's copy");
        }
        let restarted = if one.restarted {
            "; the server's partial copy did not match this file, so it started over"
        } else {
            ""
        };
        note(format!(
            "uploaded {} as {host}:/{} ({}, verified{extra}){restarted}",
            one.remote.rsplit('/').next().unwrap_or(""),
            one.remote,
            bytes(one.size)
        ));
        return;
    }
    if all.saved.is_empty() {
        return;
    }
    note(format!(
        "uploaded {} ({}, verified) to {dest}",
        files(all.saved.len()),
        human_bytes(all.bytes)
    ));
}

fn report_skipped(s: &Skipped) {
    if s.links > 0 {
        note(format!(
            "skipped {} (symbolic links are not followed)",
            files(s.links)
        ));
    }
    if s.hidden > 0 {
        note(format!(
            "skipped {} with hidden names (starting with '.')",
            files(s.hidden)
        ));
    }
    if s.special > 0 {
        note(format!("skipped {} (not regular files)", files(s.special)));
    }
}

fn files(n: usize) -> String {
    if n == 1 {
        "1 file".to_string()
    } else {
        format!("{n} files")
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The local name's last component, as a remote name.
fn last_name(p: &Path) -> Result<String> {
    let name = match p.file_name() {
        Some(n) => n.to_owned(),
        // `.` or `..`: name it after the directory it is.
        None => match p.canonicalize()?.file_name() {
            Some(n) => n.to_owned(),
            None => bail!(
                "{}: cannot upload the root directory as a name",
                p.display()
            ),
        },
    };
    match name.to_str() {
        Some(s) => Ok(s.to_string()),
        None => bail!("{}: the name is not UTF-8", p.display()),
    }
}

/// A `--to` as a service path: `.`, `/`, `./` and empty mean the root;
/// `./a/` is `a`. Anything else (`..` included) is left for the server's
/// path rules to judge.
fn remote_dir(to: &str) -> String {
    let t = to.trim_matches('/');
    let t = t.strip_prefix("./").unwrap_or(t);
    if t == "." {
        String::new()
    } else {
        t.trim_matches('/').to_string()
    }
}

/// Adds what uploading `local` means to `jobs`.
fn plan(
    local: &Path,
    to: &str,
    recursive: bool,
    jobs: &mut Vec<PutJob>,
    skipped: &mut Skipped,
) -> Result<()> {
    let meta = std::fs::metadata(local).map_err(|e| anyhow::anyhow!("{}: {e}", local.display()))?;
    let name = last_name(local)?;
    if meta.is_dir() {
        if !recursive {
            bail!("{} is a directory (use -r to upload it)", local.display());
        }
        walk(local, &join(to, &name), jobs, skipped, 0)
    } else {
        jobs.push(PutJob {
            local: local.to_path_buf(),
            remote: join(to, &name),
        });
        Ok(())
    }
}

/// Most directory levels a tree upload descends.
const MAX_DEPTH: usize = 256;

fn walk(
    dir: &Path,
    remote: &str,
    jobs: &mut Vec<PutJob>,
    skipped: &mut Skipped,
    depth: usize,
) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!("{}: deeper than {MAX_DEPTH} levels", dir.display());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(std::result::Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path: PathBuf = e.path();
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            error_line(format!(
                "{}: the name is not UTF-8; skipped",
                path.display()
            ));
            continue;
        };
        if name.starts_with('.') {
            skipped.hidden += 1;
            continue;
        }
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_symlink() {
            skipped.links += 1;
        } else if ft.is_dir() {
            walk(&path, &join(remote, &name), jobs, skipped, depth + 1)?;
        } else if ft.is_file() {
            jobs.push(PutJob {
                local: path,
                remote: join(remote, &name),
            });
        } else {
            skipped.special += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::remote_dir;

    #[test]
    fn to_the_root_is_spelled_many_ways() {
        for root in ["", ".", "/", "./", "/./"] {
            assert_eq!(remote_dir(root), "", "{root:?}");
        }
        assert_eq!(remote_dir("./a/b/"), "a/b");
        assert_eq!(remote_dir("/a"), "a");
        assert_eq!(remote_dir("../x"), "../x");
    }
}
