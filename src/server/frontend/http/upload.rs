//! Uploads over HTTP: `PUT /path` (what `curl -T` sends), streamed to the
//! file service's upload, never held in memory.
//!
//! Resumable with partial PUTs (RFC 9110 §14.5), in the style of Google's
//! resumable uploads: `Content-Range: bytes */TOTAL` with an empty body
//! asks how much the server holds (`308` with `Range: bytes=0-N` and
//! `Upload-Offset`), and `Content-Range: bytes START-END/TOTAL` sends the
//! part from START (which must not be past what the server holds). The
//! file appears under its name only when all TOTAL bytes are there (and,
//! with `X-Ferry-Blake3`, verified): `201 Created`, or `204 No Content`
//! when it replaced a file.

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;
use tracing::info;

use super::body::{AccessLog, Body};
use super::files::BLAKE3_HEADER;
use super::{refused, text};
use crate::protocol::HASH_LEN;
use crate::service::FileService;
use crate::storage::{UploadError, UploadSpec};

/// The header that tells how many bytes of an upload the server holds.
const UPLOAD_OFFSET: &str = "upload-offset";

/// A parsed `Content-Range` of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// `bytes */TOTAL`: how much do you hold?
    Query { total: u64 },
    /// `bytes START-END/TOTAL`.
    Range { start: u64, end: u64, total: u64 },
}

fn parse_content_range(v: &str) -> Option<Part> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total: u64 = total.trim().parse().ok()?;
    if range.trim() == "*" {
        return Some(Part::Query { total });
    }
    let (s, e) = range.split_once('-')?;
    let (start, end): (u64, u64) = (s.trim().parse().ok()?, e.trim().parse().ok()?);
    (start <= end && end < total).then_some(Part::Range { start, end, total })
}

fn parse_hash(h: &HeaderMap) -> Result<Option<[u8; HASH_LEN]>, ()> {
    let Some(v) = h.get(BLAKE3_HEADER) else {
        return Ok(None);
    };
    let s = v.to_str().map_err(|_| ())?.trim();
    if s.len() != 2 * HASH_LEN {
        return Err(());
    }
    let mut out = [0u8; HASH_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| ())?;
    }
    Ok(Some(out))
}

/// The status for an upload the service refused or that failed.
pub(super) fn status_of(e: &UploadError) -> StatusCode {
    match e {
        UploadError::Disabled | UploadError::Hidden | UploadError::Symlink => StatusCode::FORBIDDEN,
        UploadError::Path(p) => refused(p),
        UploadError::Exists | UploadError::Busy => StatusCode::CONFLICT,
        UploadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        UploadError::Mismatch | UploadError::WrongLength { .. } => StatusCode::BAD_REQUEST,
        UploadError::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
        UploadError::BadOffset { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        UploadError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn failed(e: &UploadError, path: &str, log: AccessLog) -> Response<Body> {
    let mut r = text(status_of(e), &format!("{e}: /{path}"), log);
    if let UploadError::BadOffset { held, .. } = e {
        r.headers_mut()
            .insert(UPLOAD_OFFSET, HeaderValue::from(*held));
    }
    r
}

/// "Not all there yet": 308 with what the server holds.
fn incomplete(held: u64, log: AccessLog) -> Response<Body> {
    let mut r = text(
        StatusCode::PERMANENT_REDIRECT,
        &format!("{held} byte(s) received; send the rest with Content-Range"),
        log,
    );
    let h = r.headers_mut();
    h.insert(UPLOAD_OFFSET, HeaderValue::from(held));
    if held > 0 {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes=0-{}", held - 1)) {
            h.insert(header::RANGE, v);
        }
    }
    r
}

/// Answers `PUT /path`.
pub(super) async fn put(
    req: Request<Incoming>,
    path: String,
    service: Arc<FileService>,
    log: AccessLog,
) -> Response<Body> {
    let h = req.headers();
    let Ok(hash) = parse_hash(h) else {
        return text(
            StatusCode::BAD_REQUEST,
            "X-Ferry-Blake3 must be 64 hex digits",
            log,
        );
    };
    let length: Option<u64> = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let part = match h.get(header::CONTENT_RANGE) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(parse_content_range) {
            Some(p) => Some(p),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "Content-Range must be bytes START-END/TOTAL or bytes */TOTAL",
                    log,
                )
            }
        },
    };
    let spec = match part {
        None => UploadSpec {
            size: length,
            mtime_ns: None,
            offset: Some(0),
        },
        Some(Part::Query { total }) => UploadSpec {
            size: Some(total),
            mtime_ns: None,
            offset: None,
        },
        Some(Part::Range { start, end, total }) => {
            if length.is_some_and(|l| l != end - start + 1) {
                return text(
                    StatusCode::BAD_REQUEST,
                    "Content-Length does not match Content-Range",
                    log,
                );
            }
            UploadSpec {
                size: Some(total),
                mtime_ns: None,
                offset: Some(start),
            }
        }
    };
    let mut task = match service.begin_upload(path.as_bytes(), spec).await {
        Ok(t) => t,
        Err(e) => {
            info!(path = %path, "PUT refused: {e}");
            return failed(&e, &path, log);
        }
    };
    if let Some(Part::Query { .. }) = part {
        let held = task.offset();
        task.keep().await;
        return incomplete(held, log);
    }
    let start = task.offset();
    // The part's end: what it must hold once this body is in.
    let end = match part {
        Some(Part::Range { end, .. }) => Some(end + 1),
        _ => length,
    };
    let mut body = req.into_body();
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) if spec.size.is_none() => {
                // No declared size: nothing could find this temporary again.
                info!(path = %path, "PUT cut short ({e}); discarded");
                task.discard().await;
                return text(StatusCode::BAD_REQUEST, "upload body cut short", log);
            }
            Some(Err(e)) => {
                info!(path = %path, "PUT cut short ({e}); kept for a resume");
                task.keep().await;
                return text(StatusCode::BAD_REQUEST, "upload body cut short", log);
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if let Err(e) = task.push(&data).await {
                        return failed(&e, &path, log);
                    }
                }
            }
        }
    }
    let held = start + task.received();
    if let Some(end) = end {
        if held != end {
            task.keep().await;
            return failed(
                &UploadError::WrongLength {
                    declared: end - start,
                    got: held - start,
                },
                &path,
                log,
            );
        }
    }
    if spec.size.is_some_and(|total| held < total) {
        task.keep().await;
        return incomplete(held, log);
    }
    match task.finish(hash).await {
        Ok(c) => {
            info!(path = %path, bytes = held - start, resumed_at = start, "PUT");
            let (status, msg) = if c.replaced {
                (StatusCode::NO_CONTENT, "")
            } else {
                (StatusCode::CREATED, "created")
            };
            let mut r = if c.replaced {
                super::status_only(status, log)
            } else {
                text(status, msg, log)
            };
            let hx = crate::display::hex(&c.hash);
            if let Ok(v) = HeaderValue::from_str(&hx) {
                r.headers_mut().insert(BLAKE3_HEADER, v);
            }
            if let Ok(v) = HeaderValue::from_str(&super::url::href(&path)) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(e) => {
            info!(path = %path, "PUT failed: {e}");
            failed(&e, &path, log)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes */100"),
            Some(Part::Query { total: 100 })
        );
        assert_eq!(
            parse_content_range("bytes 10-19/100"),
            Some(Part::Range {
                start: 10,
                end: 19,
                total: 100
            })
        );
        assert_eq!(parse_content_range("bytes 10-100/100"), None);
        assert_eq!(parse_content_range("bytes 20-10/100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}
