//! `ferry ls` and `ferry say`.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

use super::{prompt_line, stdin_lines, LsArgs, SayArgs};
use crate::client::{Client, Target};
use crate::display::escape_bytes;
use crate::protocol::{EntryKind, ErrorCode, ListEntry};
use crate::server::DEFAULT_PORT;

pub(super) async fn ls(a: LsArgs) -> Result<ExitCode> {
    if crate::client::http::is_http_url(&a.host) {
        if a.remote_path.is_some() {
            bail!("name the directory in the URL");
        }
        let opts = crate::client::http::HttpOptions {
            cacert: a.tls.cacert.clone(),
            pin: a.tls.pin.clone(),
            token: a.tls.token.clone(),
            expected: None,
            jobs: 1,
            pool: Default::default(),
        };
        let entries = crate::client::http::http_list(&a.host, &opts).await?;
        let mut out = io::stdout().lock();
        for e in &entries {
            print_entry(&mut out, e)?;
        }
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut target = Target::parse(&a.host, DEFAULT_PORT)?;
    a.tls.apply(&mut target.addr, false, target.tls)?;
    let path = match (target.path, a.remote_path) {
        (Some(_), Some(_)) => bail!("name the directory once: HOST/DIR or HOST DIR"),
        (Some(p), None) | (None, Some(p)) => p,
        (None, None) => String::new(),
    };
    let path = path.trim_matches('/');
    let path = if path == "." { "" } else { path };
    let mut client = Client::connect_pipelined(&target.addr).await?;
    client.queue_list(path)?;
    client.flush().await?;
    let mut out = io::stdout().lock();
    // Entries are printed as they arrive: a long listing costs no memory.
    let listed = client.read_list_each(|e| print_entry(&mut out, &e)).await;
    match listed {
        Ok(_) => {}
        Err(e) if e.remote_code() == Some(ErrorCode::NotADirectory) => {
            // `ls FILE` describes the file, as ls(1) does.
            let s = client.stat(path).await?;
            let entry = ListEntry {
                name: path.as_bytes().to_vec(),
                kind: s.kind,
                size: s.size,
                mtime_ns: s.mtime_ns,
            };
            print_entry(&mut out, &entry)?;
        }
        Err(crate::client::ClientError::Output(e)) => return Err(e.into()),
        Err(e) => return Err(e.into()),
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn print_entry(out: &mut impl Write, e: &ListEntry) -> io::Result<()> {
    let (kind, suffix) = match e.kind {
        EntryKind::File => ("file", ""),
        EntryKind::Dir => ("dir", "/"),
        EntryKind::Symlink => ("link", ""),
        EntryKind::Other => ("other", ""),
    };
    writeln!(
        out,
        "{kind:<5} {:>14} {}  {}{suffix}",
        e.size,
        format_mtime(e.mtime_ns),
        escape_bytes(&e.name)
    )
}

fn format_mtime(ns: i64) -> String {
    let t = if ns >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        SystemTime::UNIX_EPOCH
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

pub(super) async fn say(a: SayArgs) -> Result<ExitCode> {
    let mut target = Target::parse(&a.host, DEFAULT_PORT)?;
    if target.path.as_deref().is_some_and(|p| !p.is_empty()) {
        bail!("say takes a server, not a path: HOST[:PORT]");
    }
    a.tls.apply(&mut target.addr, a.tutorial, target.tls)?;
    let addr = target.addr;
    let wait = Duration::try_from_secs_f64(a.wait).context("--wait must be a number of seconds")?;
    enum Session {
        Native(Box<Client>),
        Tutorial(crate::client::tutorial::TutorialSay),
    }
    let mut session = if a.tutorial {
        Session::Tutorial(crate::client::tutorial::TutorialSay::connect(&addr, wait).await?)
    } else {
        Session::Native(Box::new(Client::connect(&addr).await?))
    };
    let mut lines = stdin_lines();
    let mut one = a.message.map(String::into_bytes);
    let interactive = one.is_none();
    loop {
        let msg = if interactive {
            match prompt_line(&mut lines, "> ").await? {
                Some(l) => l.into_bytes(),
                None => break,
            }
        } else {
            match one.take() {
                Some(m) => m,
                None => break,
            }
        };
        let answer = match &mut session {
            Session::Native(c) => c.message(&msg).await?,
            Session::Tutorial(r) => r.say(&msg).await?,
        };
        if !answer.is_empty() {
            let mut out = io::stdout().lock();
            writeln!(out, "{}", escape_bytes(&answer))?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
