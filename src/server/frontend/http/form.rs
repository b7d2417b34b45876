//! Uploads from the listing page: `POST /dir/` with a
//! `multipart/form-data` body (what the page's form, its script, and
//! `curl -F "file=@x"` send). Every part that carries a file name is a
//! file to save in that directory; the other parts are read and ignored.
//! Parts are parsed by multer and streamed to the file service's upload
//! chunk by chunk, never held whole in memory; each file goes through the
//! same resolver, temporary, limit and atomic rename as a `PUT`.
//!
//! The answer is JSON (`{"saved": [...], "failed": [...]}`) when the
//! request accepts `application/json` (the page's script does), otherwise
//! a `303 See Other` back to the listing when every file was saved (what
//! a plain form submission wants), or a text page naming what failed.
//!
//! A browser sends `Origin` (and `Sec-Fetch-Site`) with a form: a post
//! from another site's page is refused, so a page elsewhere cannot plant
//! files through a visitor's browser.

use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyDataStream;
use hyper::body::Incoming;
use serde::Serialize;
use tracing::info;

use super::body::{AccessLog, Body};
use super::upload::status_of;
use super::{text, url};
use crate::service::FileService;
use crate::storage::{UploadError, UploadSpec};

/// Most bytes of a part that is not a file (a text field) read before
/// the form is refused: such fields are ignored, not stored.
const MAX_TEXT_FIELD: usize = 64 * 1024;

#[derive(Serialize)]
struct Saved {
    path: String,
    size: u64,
    blake3: String,
    replaced: bool,
}

#[derive(Serialize)]
struct Failed {
    name: String,
    status: u16,
    error: String,
}

#[derive(Serialize, Default)]
struct Outcome {
    saved: Vec<Saved>,
    failed: Vec<Failed>,
}

/// Why a post is refused before any part is read, or `None`.
///
/// A browser names the page a form came from in `Origin`, and marks a
/// request from another site with `Sec-Fetch-Site: cross-site`; programs
/// like curl send neither, and are let through.
/// `host` is the request's own `host:port` (its `Host`, or its
/// authority over HTTP/2).
pub(super) fn cross_site(h: &HeaderMap, host: Option<&str>) -> Option<&'static str> {
    let get = |k: header::HeaderName| h.get(k).and_then(|v| v.to_str().ok());
    if get(header::HeaderName::from_static("sec-fetch-site")) == Some("cross-site") {
        return Some("uploads from another site's page are refused");
    }
    let origin = get(header::ORIGIN)?;
    let host = host.unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    (origin == "null" || !origin_host.eq_ignore_ascii_case(host))
        .then_some("uploads from another site's page are refused (Origin is not this server)")
}

/// Answers `POST /dir/`: saves the form's files into `dir` (a service
/// path, `""` for the root).
pub(super) async fn post(
    req: Request<Incoming>,
    dir: String,
    service: Arc<FileService>,
    log: AccessLog,
) -> Response<Body> {
    let h = req.headers();
    let json = h
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let Some(boundary) = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
    else {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a POST to a directory must be multipart/form-data (a form with files)",
            log,
        );
    };
    let mut form = multer::Multipart::new(BodyDataStream::new(req.into_body()), boundary);
    let mut outcome = Outcome::default();
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return broken(&e, log),
        };
        match field.file_name().map(str::to_string) {
            Some(name) if !name.is_empty() => {
                let path = if dir.is_empty() {
                    name.clone()
                } else {
                    format!("{dir}/{name}")
                };
                match save(field, &path, &service).await {
                    Ok(saved) => outcome.saved.push(saved),
                    Err(Failure::Form(e)) => return broken(&e, log),
                    Err(Failure::File(e)) => {
                        info!(path = %path, "form upload refused: {e}");
                        outcome.failed.push(Failed {
                            name,
                            status: status_of(&e).as_u16(),
                            error: e.to_string(),
                        });
                    }
                }
            }
            // A text field, or a file input left empty: read past it.
            _ => {
                if let Err(r) = skip(field).await {
                    return match r {
                        Some(e) => broken(&e, log),
                        None => text(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "a form field without a file name is over 64 KiB",
                            log,
                        ),
                    };
                }
            }
        }
    }
    answer(outcome, &dir, json, log)
}

enum Failure {
    /// The body itself is broken or cut short: the request ends.
    Form(multer::Error),
    /// This file was refused or failed: the next part is read.
    File(UploadError),
}

/// Streams one file part to its upload and saves it.
async fn save(
    mut field: multer::Field<'_>,
    path: &str,
    service: &FileService,
) -> Result<Saved, Failure> {
    let spec = UploadSpec {
        size: None,
        mtime_ns: None,
        offset: Some(0),
    };
    let mut task = match service.begin_upload(path.as_bytes(), spec).await {
        Ok(t) => t,
        Err(e) => {
            // Read past the refused file, so the next one can be saved.
            return Err(match skip_all(&mut field).await {
                Ok(()) => Failure::File(e),
                Err(fe) => Failure::Form(fe),
            });
        }
    };
    loop {
        match field.chunk().await {
            Ok(Some(data)) => {
                if let Err(e) = task.push(&data).await {
                    return Err(match skip_all(&mut field).await {
                        Ok(()) => Failure::File(e),
                        Err(fe) => Failure::Form(fe),
                    });
                }
            }
            Ok(None) => break,
            Err(e) => {
                // Unsized: nothing could resume it.
                task.discard().await;
                return Err(Failure::Form(e));
            }
        }
    }
    let size = task.received();
    let c = task.finish(None).await.map_err(Failure::File)?;
    info!(path = %path, bytes = size, "form upload");
    Ok(Saved {
        path: url::href(path),
        size,
        blake3: crate::display::hex(&c.hash),
        replaced: c.replaced,
    })
}

async fn skip_all(field: &mut multer::Field<'_>) -> Result<(), multer::Error> {
    while field.chunk().await?.is_some() {}
    Ok(())
}

/// Reads past a part that is not a file; `Err(None)` when it is too big
/// to be a text field.
async fn skip(mut field: multer::Field<'_>) -> Result<(), Option<multer::Error>> {
    let mut seen = 0;
    while let Some(c) = field.chunk().await.map_err(Some)? {
        seen += c.len();
        if seen > MAX_TEXT_FIELD {
            return Err(None);
        }
    }
    Ok(())
}

fn broken(e: &multer::Error, log: AccessLog) -> Response<Body> {
    info!("form upload broken: {e}");
    text(
        StatusCode::BAD_REQUEST,
        &format!("malformed or incomplete form: {e}"),
        log,
    )
}

fn answer(outcome: Outcome, dir: &str, json: bool, log: AccessLog) -> Response<Body> {
    let status = match (outcome.failed.first(), outcome.saved.is_empty()) {
        (Some(f), _) => StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_REQUEST),
        (None, true) => StatusCode::BAD_REQUEST,
        (None, false) => StatusCode::CREATED,
    };
    if json {
        let page = serde_json::to_string_pretty(&outcome).unwrap_or_else(|_| "{}".into());
        let mut body = Body::bytes(page, log);
        body.set_status(status.as_u16());
        let mut r = Response::new(body);
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return r;
    }
    let listing = if dir.is_empty() {
        "/".to_string()
    } else {
        url::href(dir) + "/"
    };
    if status == StatusCode::CREATED {
        let mut r = super::status_only(StatusCode::SEE_OTHER, log);
        if let Ok(v) = HeaderValue::from_str(&listing) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    let mut msg = String::new();
    for s in &outcome.saved {
        msg.push_str(&format!("saved {} ({} bytes)\n", s.path, s.size));
    }
    for f in &outcome.failed {
        msg.push_str(&format!("not saved: {}: {}\n", f.name, f.error));
    }
    if outcome.saved.is_empty() && outcome.failed.is_empty() {
        msg.push_str("the form had no file in it\n");
    }
    msg.push_str(&format!("back to the listing: {listing}"));
    text(status, &msg, log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(pairs: &[(&str, &str)]) -> Option<&'static str> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let host = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        cross_site(&h, host.as_deref())
    }

    #[test]
    fn only_same_site_forms_pass() {
        // curl: no Origin, no Sec-Fetch-Site.
        assert_eq!(verdict(&[("host", "127.0.0.1:8000")]), None);
        assert_eq!(
            verdict(&[
                ("host", "127.0.0.1:8000"),
                ("origin", "http://127.0.0.1:8000"),
                ("sec-fetch-site", "same-origin"),
            ]),
            None
        );
        for bad in [
            vec![
                ("host", "127.0.0.1:8000"),
                ("origin", "http://evil.example"),
            ],
            vec![
                ("host", "127.0.0.1:8000"),
                ("origin", "http://127.0.0.1:8001"),
            ],
            vec![("host", "127.0.0.1:8000"), ("origin", "null")],
            vec![("host", "127.0.0.1:8000"), ("sec-fetch-site", "cross-site")],
            vec![("origin", "http://127.0.0.1:8000")],
        ] {
            assert!(verdict(&bad).is_some(), "{bad:?}");
        }
    }
}
