//! Saving an HTTP download: the `.part`, its resume, the body received
//! and checked, the rename; or the body to standard output.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Bytes;
use tracing::debug;

use super::failure;
use super::split::Split;
use super::Span;

use super::{
    about, fetch, About, Answer, Conn, Expected, HttpOptions, HttpSaved, Url, STALL_TIMEOUT,
};
use crate::client::output::{Destination, Existing, OutputDir};
use crate::client::{ClientError, GetOptions, GrowingHash, Have, PartFile};
use crate::protocol::{Validator, HASH_LEN};

/// Downloads `url` to `dest`.
///
/// # Errors
///
/// A bad URL, the connection's, TLS's or the server's error (`HTTP 404`
/// and the like), `Exists` for a different local file without `--force`,
/// `HashMismatch`, `Interrupted` (the `.part` kept when it can resume), or
/// a local error.
pub async fn http_get(
    url: &str,
    dest: &Destination,
    get: &GetOptions,
    opts: &HttpOptions,
) -> Result<HttpSaved, ClientError> {
    let first = Url::parse(url)?;
    let mut conn = opts.pool.take();
    let res = get_over(&mut conn, &first, dest, get, opts).await;
    if res.is_ok() {
        opts.pool.put(conn);
    }
    res
}

/// [`http_get`] over `conn` (reused when it leads to the URL's server).
async fn get_over(
    conn: &mut Option<Conn>,
    first: &Url,
    dest: &Destination,
    get: &GetOptions,
    opts: &HttpOptions,
) -> Result<HttpSaved, ClientError> {
    let first = first.clone();
    let (out, rel) = match dest {
        Destination::Stdout => return to_stdout(conn, &first, get, opts).await,
        Destination::Dir(d) => (OutputDir::open(d)?, None),
        Destination::File(f) => {
            let parent = f.parent().filter(|p| !p.as_os_str().is_empty());
            let name =
                f.file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| ClientError::InvalidPath {
                        path: f.display().to_string(),
                        why: "not a file name",
                    })?;
            (
                OutputDir::open(parent.unwrap_or(Path::new(".")))?,
                Some(PathBuf::from(name)),
            )
        }
    };
    let url_name = rel
        .clone()
        .or_else(|| first.file_name().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("index.html"));
    // -j, or ranges an earlier -j left: in parallel ranges if the server
    // allows (else in one stream, below).
    let split_part = matches!(
        out.part(&url_name).resume_point(),
        Some((Have::Ranges(_), _))
    );
    let mut restarted = None;
    if opts.jobs > 1 || split_part {
        match super::split::split(&first, &out, &url_name, get, opts).await? {
            Split::Done(done) => return Ok(done),
            Split::No => {}
            Split::Changed => {
                restarted = Some("the server's file changed since the ranges were saved");
            }
        }
    }
    // Resume from the part this URL's name left, if it says how to.
    let part = out.part(&url_name);
    let resume = match part.resume_point() {
        Some((Have::Prefix(n), v)) if n > 0 => part.if_range().map(|val| (n, v, val)),
        _ => None,
    };
    let answer = fetch(
        conn,
        &first,
        resume.as_ref().map(|(n, _, val)| Span {
            from: *n,
            to: None,
            validator: val.as_str(),
        }),
        opts,
    )
    .await?;
    let answer = match (answer.status, &resume) {
        (StatusCode::RANGE_NOT_SATISFIABLE, Some(_)) => {
            restarted = Some("the server's file is shorter than the kept part");
            drop(answer);
            fetch(conn, &first, None, opts).await?
        }
        _ => answer,
    };
    if !answer.status.is_success() {
        return Err(failure(&answer));
    }
    let info = about(&answer)?;
    // Content-Disposition names the file only when -o did not.
    let rel = match (&rel, &info.name) {
        (None, Some(n)) => PathBuf::from(n),
        _ => url_name.clone(),
    };
    let same_part = rel == url_name;
    let part = out.part(&rel);
    let mut kept = 0;
    match (&resume, answer.status) {
        (Some((n, v, _)), StatusCode::PARTIAL_CONTENT)
            if same_part && info.start == *n && info.total == Some(v.size) =>
        {
            kept = *n;
        }
        (Some(_), _) if restarted.is_none() => {
            restarted = Some("the server sent the whole file (it changed, or it ignores ranges)");
        }
        _ => {}
    }
    if kept == 0 {
        if let Some(total) = info.total {
            match out.existing(&rel, total, info.mtime_ns.unwrap_or(i64::MIN), get.force)? {
                Existing::UpToDate => return Ok(HttpSaved::already_here(out.shown(&rel), total)),
                Existing::Absent | Existing::Replace => {}
            }
        } else if !get.force && out.existing(&rel, 0, i64::MIN, false).is_err() {
            return Err(ClientError::Exists(out.shown(&rel)));
        }
    }
    receive(answer, info, &part, kept, restarted, get, opts).await
}

/// What the body gave next.
enum Next {
    Data(Bytes),
    /// A frame without data (trailers).
    Skip,
    End,
    Broken(String),
}

/// Receives the body into the part (from `kept`), checks and saves it.
async fn receive(
    answer: Answer,
    info: About,
    part: &PartFile,
    kept: u64,
    restarted: Option<&'static str>,
    get: &GetOptions,
    opts: &HttpOptions,
) -> Result<HttpSaved, ClientError> {
    let local = |source| ClientError::Local {
        path: part.target().to_path_buf(),
        source,
    };
    let total = info.total;
    // Resumable only with a validator and a known size.
    let resumable = info.validator.is_some() && total.is_some();
    let mut file = if kept > 0 {
        let mut f = part.reopen().map_err(local)?;
        f.set_len(kept).map_err(local)?;
        f.seek(SeekFrom::Start(kept)).map_err(local)?;
        f
    } else if let (true, Some(size), Some(val)) = (resumable, total, &info.validator) {
        let v = Validator {
            size,
            mtime_ns: info.mtime_ns.unwrap_or(0),
        };
        let f = part.create(v).map_err(local)?;
        part.write_meta_with(v, None, Some(val)).map_err(local)?;
        f.set_len(0).map_err(local)?;
        f
    } else {
        let f = part.create_plain().map_err(local)?;
        f.set_len(0).map_err(local)?;
        f
    };
    // BLAKE3 only when there is one to compare with (and not --no-verify).
    let hasher = if get.verify && wants_blake3(&info, opts) {
        Some(
            GrowingHash::start(
                file.try_clone().map_err(local)?,
                kept,
                total.unwrap_or(u64::MAX),
            )
            .map_err(local)?,
        )
    } else {
        None
    };
    let bar = get
        .progress
        .bar(&part.target().display().to_string(), total.unwrap_or(0));
    bar.set_position(kept);
    let mut body = answer.body;
    let mut have = kept;
    loop {
        let next = tokio::select! {
            f = tokio::time::timeout(STALL_TIMEOUT, body.frame()) => match f {
                Ok(None) => Next::End,
                Ok(Some(Ok(frame))) => frame.into_data().map_or(Next::Skip, Next::Data),
                Ok(Some(Err(e))) => Next::Broken(e.to_string()),
                Err(_) => Next::Broken(format!("no data for {}s", STALL_TIMEOUT.as_secs())),
            },
            () = get.cancel.cancelled() => Next::Broken("interrupted".into()),
        };
        let data = match next {
            Next::End => break,
            Next::Skip => continue,
            Next::Data(d) => d,
            Next::Broken(why) => {
                debug!("HTTP body ended early: {why}");
                drop(file);
                if !resumable {
                    part.discard();
                }
                return Err(ClientError::Interrupted {
                    part: resumable.then(|| part.part_path()),
                    kept: have,
                    total: total.unwrap_or(have),
                });
            }
        };
        if total.is_some_and(|t| have + data.len() as u64 > t) {
            drop(file);
            part.discard();
            return Err(ClientError::Protocol(format!(
                "{}: the server sent more than its {} bytes",
                answer.url.shown(),
                total.unwrap_or(0)
            )));
        }
        file.write_all(&data).map_err(local)?;
        have += data.len() as u64;
        if let Some(h) = &hasher {
            h.advance(have);
        }
        bar.set_position(have);
    }
    if total.is_some_and(|t| have != t) {
        drop(file);
        return Err(ClientError::Interrupted {
            part: resumable.then(|| part.part_path()),
            kept: have,
            total: total.unwrap_or(have),
        });
    }
    let blake3 = match hasher {
        Some(h) => Some(h.finish(have).await.map_err(local)?),
        None => None,
    };
    let verified = if get.verify {
        check(&file, have, blake3.as_ref(), &info, opts)
            .await
            .map_err(local)?
    } else {
        Ok(None)
    };
    if let Err(which) = verified {
        drop(file);
        part.discard();
        return Err(ClientError::HashMismatch(format!(
            "{} ({which})",
            answer.url.shown()
        )));
    }
    part.save(&file, info.mtime_ns)?;
    Ok(HttpSaved {
        path: Some(part.target().to_path_buf()),
        size: have,
        resumed: kept,
        resumed_ranges: false,
        restarted,
        verified: verified.ok().flatten(),
        up_to_date: false,
    })
}

/// Checks the received file against the server's BLAKE3 and the user's
/// expectation: `Ok(Some(what))` checked, `Ok(None)` nothing to check
/// against, `Err(what)` a mismatch.
/// Whether checking needs the file's BLAKE3.
pub(super) fn wants_blake3(info: &About, opts: &HttpOptions) -> bool {
    info.blake3.is_some() || matches!(opts.expected, Some(Expected::Blake3(_)))
}

pub(super) async fn check(
    file: &File,
    size: u64,
    blake3: Option<&[u8; HASH_LEN]>,
    info: &About,
    opts: &HttpOptions,
) -> io::Result<Result<Option<&'static str>, &'static str>> {
    let mut what = None;
    if let Some(h) = info.blake3 {
        if Some(&h) != blake3 {
            return Ok(Err("BLAKE3 from the server"));
        }
        what = Some("BLAKE3 from the server");
    }
    match opts.expected {
        Some(Expected::Blake3(h)) => {
            if Some(&h) != blake3 {
                return Ok(Err("--blake3"));
            }
            what = Some("--blake3");
        }
        Some(Expected::Sha256(h)) => {
            let f = file.try_clone()?;
            let got = tokio::task::spawn_blocking(move || sha256_file(&f, size))
                .await
                .map_err(io::Error::other)??;
            if got != h {
                return Ok(Err("--sha256"));
            }
            what = Some("--sha256");
        }
        None => {}
    }
    Ok(Ok(what))
}

fn sha256_file(file: &File, size: u64) -> io::Result<[u8; 32]> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    crate::hashing::for_each_chunk(file, size, |c| h.update(c))?;
    Ok(h.finalize().into())
}

/// `-o -`: the body to standard output, checked at the end (what was
/// written stays written; a mismatch is an error).
async fn to_stdout(
    conn: &mut Option<Conn>,
    url: &Url,
    get: &GetOptions,
    opts: &HttpOptions,
) -> Result<HttpSaved, ClientError> {
    let answer = fetch(conn, url, None, opts).await?;
    if !answer.status.is_success() {
        return Err(failure(&answer));
    }
    let info = about(&answer)?;
    // Each hash only when there is one to compare it with (and not with
    // --no-verify): hashing costs the client a core at these speeds.
    let mut blake3 = (get.verify && wants_blake3(&info, opts)).then(blake3::Hasher::new);
    let mut sha = (get.verify && matches!(opts.expected, Some(Expected::Sha256(_)))).then(|| {
        use sha2::Digest;
        sha2::Sha256::new()
    });
    let mut out = io::stdout().lock();
    let mut body = answer.body;
    let mut have = 0u64;
    while let Some(frame) = tokio::select! {
        f = body.frame() => f,
        () = get.cancel.cancelled() => return Err(ClientError::Interrupted { part: None, kept: have, total: info.total.unwrap_or(have) }),
    } {
        let frame = frame.map_err(|e| ClientError::Protocol(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if let Some(b) = blake3.as_mut() {
            b.update(&data);
        }
        if let Some(s) = sha.as_mut() {
            use sha2::Digest;
            s.update(&data);
        }
        out.write_all(&data).map_err(ClientError::Output)?;
        have += data.len() as u64;
    }
    out.flush().map_err(ClientError::Output)?;
    let got = blake3.map(|b| *b.finalize().as_bytes());
    let mut verified = None;
    if let (Some(h), Some(got)) = (info.blake3, got) {
        if h != got {
            return Err(ClientError::HashMismatch(url.shown()));
        }
        verified = Some("BLAKE3 from the server");
    }
    match (opts.expected, sha) {
        (Some(Expected::Blake3(h)), _) if got.is_some_and(|g| g != h) => {
            return Err(ClientError::HashMismatch(format!(
                "{} (--blake3)",
                url.shown()
            )))
        }
        (Some(Expected::Blake3(_)), _) if got.is_some() => verified = Some("--blake3"),
        (Some(Expected::Sha256(h)), Some(s)) => {
            use sha2::Digest;
            if <[u8; 32]>::from(s.finalize()) != h {
                return Err(ClientError::HashMismatch(format!(
                    "{} (--sha256)",
                    url.shown()
                )));
            }
            verified = Some("--sha256");
        }
        _ => {}
    }
    Ok(HttpSaved {
        path: None,
        size: have,
        resumed: 0,
        resumed_ranges: false,
        restarted: None,
        verified,
        up_to_date: false,
    })
}
