//! `ferry get http(s)://…`: downloads from any web server, one URL after
//! another, with the lines that say what happened.

use std::process::ExitCode;

use anyhow::{bail, Result};
use tokio_util::sync::CancellationToken;

use super::{error_line, exit_for, note, GetArgs};
use crate::client::http::{http_get, is_http_url, parse_hex, Expected, HttpOptions, HttpSaved};
use crate::client::{ClientError, Destination, GetOptions, Progress};
use crate::display::bytes;

pub(super) async fn get(a: GetArgs) -> Result<ExitCode> {
    if a.recursive || a.tutorial {
        bail!("-r and --tutorial are not supported for http(s):// URLs (-r works with ferry:// addresses)");
    }
    if a.tls.pin.is_some() {
        bail!("--pin is for ferry's own TLS; an https:// server is checked against the system's CAs or --cacert");
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
    let get = GetOptions {
        progress: if a.quiet {
            Progress::Hidden
        } else {
            Progress::Auto
        },
        verify: !a.no_verify,
        force: a.force,
        cancel: cancel.clone(),
    };
    let opts = HttpOptions {
        cacert: a.tls.cacert.clone(),
        token: a.tls.token.clone(),
        expected,
        jobs: a.jobs as usize,
    };
    let dest = Destination::resolve(a.output.as_deref(), urls.len(), false);
    let mut failures = 0;
    for url in &urls {
        match http_get(url, &dest, &get, &opts).await {
            Ok(s) => {
                if !a.quiet && s.path.is_some() {
                    note(summary(&s));
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

fn summary(s: &HttpSaved) -> String {
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
