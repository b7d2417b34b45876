//! `ferry get http(s)://…`: downloads from any web server, one URL after
//! another, with the lines that say what happened.

use std::process::ExitCode;

use anyhow::{bail, Result};
use tokio_util::sync::CancellationToken;

use super::{error_line, exit_for, note, GetArgs};
use crate::client::http::{http_get, is_http_url, parse_hex, Expected, HttpOptions, HttpSaved};
use crate::client::{ClientError, Destination, GetOptions};
use crate::display::bytes;

pub(super) async fn get(a: GetArgs) -> Result<ExitCode> {
    if a.tutorial {
        bail!("--tutorial is for the tutorial's raw protocol, not http(s):// URLs");
    }
    let mut urls = vec![a.host.clone()];
    urls.extend(a.remote_paths.iter().cloned());
    if let Some(u) = urls.iter().find(|u| !is_http_url(u)) {
        bail!("{u:?} is not an http(s):// URL (after a URL, give only URLs)");
    }
    let expected = match (&a.blake3, &a.sha256) {
        (Some(h), _) => {
            Some(Expected::Blake3(parse_hex(h).ok_or_else(|| {
                anyhow::anyhow!("--blake3 needs 64 hex digits")
            })?))
        }
        (_, Some(h)) => {
            Some(Expected::Sha256(parse_hex(h).ok_or_else(|| {
                anyhow::anyhow!("--sha256 needs 64 hex digits")
            })?))
        }
        _ => None,
    };
    if expected.is_some() && urls.len() > 1 {
        bail!("--blake3/--sha256 check one file: give one URL");
    }
    let cancel = CancellationToken::new();
    tokio::spawn(super::get::cancel_on_ctrl_c(cancel.clone()));
    let get = super::get::get_options(&a, &cancel);
    let opts = HttpOptions {
        cacert: a.tls.cacert.clone(),
        pin: a.tls.pin.clone(),
        token: a.tls.token.clone(),
        expected,
        jobs: a.jobs as usize,
        pool: Default::default(),
    };
    if a.recursive {
        return trees(&a, &urls, &get, &opts, &cancel).await;
    }
    let dest = Destination::resolve(a.output.as_deref(), urls.len(), false);
    let mut failures = 0;
    for url in &urls {
        match http_get(url, &dest, &get, &opts).await {
            Ok(s) => {
                if !a.quiet && s.path.is_some() {
                    note(summary(&s, a.no_verify));
                }
            }
            Err(e @ ClientError::Interrupted { .. }) if cancel.is_cancelled() => {
                error_line(&e);
                return Ok(ExitCode::from(super::EXIT_INTERRUPTED));
            }
            Err(e) => {
                error_line(&e);
                failures += 1;
            }
        }
    }
    Ok(exit_for(failures))
}

fn summary(s: &HttpSaved, no_verify: bool) -> String {
    let path = s
        .path
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if s.up_to_date {
        return format!(
            "{path} is already here (same size and time as the server's); nothing to do"
        );
    }
    let verified = match s.verified {
        Some(what) => format!(", verified ({what})"),
        None if no_verify => ", not verified (--no-verify)".into(),
        None => ", not verified (the server sent no hash; --blake3 or --sha256 checks one)".into(),
    };
    let resumed = match (s.resumed, s.resumed_ranges) {
        (0, _) => String::new(),
        (n, true) => format!(", {} of it resumed from the .part", bytes(n)),
        (n, false) => format!(", resumed at {n}"),
    };
    let restarted = s
        .restarted
        .map(|why| format!("; started over: {why}"))
        .unwrap_or_default();
    format!(
        "saved {path} ({}{verified}{resumed}){restarted}",
        bytes(s.size)
    )
}

/// Most files one `-r` over HTTP walks (a bound, like the native walk's).
const MAX_TREE_FILES: usize = 1_000_000;

/// `-r` over HTTP from a ferry server: its JSON listings walked, then the
/// files fetched into OUT/<last component>/..., files already there (same
/// size and time) skipped. With `-j N` the files are spread over N
/// kept-alive connections, N requests in flight at once (the listings are
/// walked first, on one).
async fn trees(
    a: &GetArgs,
    urls: &[String],
    get: &GetOptions,
    opts: &HttpOptions,
    cancel: &CancellationToken,
) -> Result<ExitCode> {
    let out = a.output.clone().unwrap_or_else(|| ".".into());
    let mut failures = 0;
    let mut files = Vec::new();
    for url in urls {
        failures += walk(url, &out, opts, &mut files).await?;
    }
    let workers = a.jobs.max(1) as usize;
    let queue = std::sync::Mutex::new(files.into_iter());
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let interrupted = std::sync::atomic::AtomicBool::new(false);
    let (queue, failed, interrupted) = (&queue, &failed, &interrupted);
    let worker = |i: usize| async move {
        // Each worker its own connection (the first goes on with the
        // walk's); one file per request (no ranges within a file when the
        // tree is spread), bars only when alone.
        let opts = HttpOptions {
            jobs: 1,
            pool: if i == 0 {
                opts.pool.clone()
            } else {
                Default::default()
            },
            ..opts.clone()
        };
        let mut get = get.clone();
        if workers > 1 {
            get.progress = crate::client::Progress::Hidden;
        }
        loop {
            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
            let Some((url, local)) = next else { break };
            if let Err(e) = std::fs::create_dir_all(&local) {
                error_line(format!("{}: {e}", local.display()));
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            let dest = Destination::Dir(local);
            match http_get(&url, &dest, &get, &opts).await {
                Ok(s) if s.up_to_date => {}
                Ok(s) => {
                    if !a.quiet {
                        note(summary(&s, a.no_verify));
                    }
                }
                Err(e) if cancel.is_cancelled() => {
                    error_line(&e);
                    interrupted.store(true, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    error_line(&e);
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    };
    futures_util::future::join_all((0..workers).map(worker)).await;
    if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(ExitCode::from(super::EXIT_INTERRUPTED));
    }
    Ok(exit_for(
        failures + failed.load(std::sync::atomic::Ordering::Relaxed),
    ))
}

/// Walks the JSON listings under `url` (on `opts`' kept-alive connection),
/// adding each file's URL and the local directory it goes into to `files`.
/// Returns how many listings failed (each said in a line).
///
/// # Errors
///
/// More than [`MAX_TREE_FILES`] files.
async fn walk(
    url: &str,
    out: &std::path::Path,
    opts: &HttpOptions,
    files: &mut Vec<(String, std::path::PathBuf)>,
) -> Result<usize> {
    use crate::client::http::http_list;
    use crate::protocol::EntryKind;
    let mut failures = 0;
    let base = url.trim_end_matches('/').to_string();
    let top = base.rsplit('/').next().unwrap_or("");
    let top = percent_encoding::percent_decode_str(top)
        .decode_utf8_lossy()
        .into_owned();
    let root = match crate::client::local_name(&top) {
        Ok(n) if !base.ends_with("://") && base.matches('/').count() > 2 => out.join(n),
        _ => out.to_path_buf(),
    };
    let mut stack = vec![(base, root)];
    while let Some((dir_url, local)) = stack.pop() {
        let entries = match http_list(&format!("{dir_url}/"), opts).await {
            Ok(e) => e,
            Err(e) => {
                error_line(&e);
                failures += 1;
                continue;
            }
        };
        for e in entries {
            let Ok(name) = crate::protocol::validate_name(&e.name) else {
                continue;
            };
            let enc: String =
                percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
                    .collect();
            let child = format!("{dir_url}/{enc}");
            match e.kind {
                EntryKind::Dir => stack.push((child, local.join(name))),
                EntryKind::File => {
                    if files.len() == MAX_TREE_FILES {
                        bail!("more than {MAX_TREE_FILES} files: stopped");
                    }
                    files.push((child, local.clone()));
                }
                EntryKind::Symlink | EntryKind::Other => {}
            }
        }
    }
    Ok(failures)
}
