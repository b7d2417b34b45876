//! GET and HEAD of a file, by the book (RFC 9110): validators, conditional
//! requests in their order of precedence, single byte ranges.
//!
//! * `Last-Modified` is the file's modification time; the `ETag` is strong:
//!   `"b3-<BLAKE3>"` when the hash is known, else `"v-<…>"` derived from
//!   the file's identity and times (device, inode, size, mtime, ctime), so
//!   any write changes it. Either tag of the current version matches in a
//!   condition, so a tag taken before the hash was known still works.
//! * Preconditions: `If-Match`, then `If-Unmodified-Since` (412), then
//!   `If-None-Match`, then `If-Modified-Since` (304); then `If-Range`
//!   decides whether `Range` applies.
//! * One byte range gives 206 with `Content-Range` (suffix and open-ended
//!   ranges too); a range the file cannot satisfy gives 416 with
//!   `Content-Range: bytes */LEN`; several ranges, or a malformed header,
//!   are ignored (200, the whole file), as the RFC allows.
//! * `X-Ferry-Blake3` carries the file's BLAKE3 hash when the server knows
//!   it, so a client can verify what it received.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use headers::{
    ETag, HeaderMapExt, IfMatch, IfModifiedSince, IfNoneMatch, IfRange, IfUnmodifiedSince,
};
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::body::{AccessLog, Body};
use crate::display::hex;
use crate::service::{Content, FileService, OpenFile};
use crate::storage::FileInfo;

/// The header carrying a file's BLAKE3 hash (hex), when known.
pub(crate) const BLAKE3_HEADER: &str = "x-ferry-blake3";

/// The file's validators.
struct Validators {
    /// The tag sent: from the hash if known, else from the version.
    etag: ETag,
    /// The other tag of the same version (the version tag when the hash is
    /// known), accepted in conditions too.
    alt: Option<ETag>,
    /// The modification time, to the second (what `Last-Modified` says).
    modified: SystemTime,
    hash: Option<[u8; 32]>,
}

fn tag(s: String) -> ETag {
    // Both forms are `"` + [0-9a-z-] + `"`: always a valid entity tag.
    s.parse()
        .unwrap_or_else(|_| "\"x\"".parse().expect("a valid tag"))
}

/// The version tag: a short hash of what identifies this version.
fn version_tag(info: &FileInfo) -> ETag {
    let mut h = blake3::Hasher::new();
    for v in [info.dev, info.ino, info.size] {
        h.update(&v.to_le_bytes());
    }
    for v in [info.mtime_ns, info.ctime_ns] {
        h.update(&v.to_le_bytes());
    }
    tag(format!("\"v-{}\"", &hex(h.finalize().as_bytes())[..20]))
}

/// A time in nanoseconds since the epoch, to the second (below it: HTTP
/// dates have no finer resolution).
pub(crate) fn to_http_time(ns: i64) -> SystemTime {
    let secs = ns.div_euclid(1_000_000_000);
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

impl Validators {
    fn of(info: &FileInfo, hash: Option<[u8; 32]>) -> Self {
        let version = version_tag(info);
        let (etag, alt) = match hash {
            Some(h) => (tag(format!("\"b3-{}\"", hex(&h))), Some(version)),
            None => (version, None),
        };
        Validators {
            etag,
            alt,
            modified: to_http_time(info.mtime_ns),
            hash,
        }
    }

    fn tags(&self) -> impl Iterator<Item = &ETag> {
        std::iter::once(&self.etag).chain(self.alt.as_ref())
    }

    fn headers(&self, h: &mut HeaderMap) {
        h.typed_insert(self.etag.clone());
        h.typed_insert(headers::LastModified::from(self.modified));
        if let Some(hash) = self.hash {
            if let Ok(v) = HeaderValue::from_str(&hex(&hash)) {
                h.insert(BLAKE3_HEADER, v);
            }
        }
    }
}

/// What the preconditions decided.
enum Precondition {
    /// Go on (and whether `Range` still applies).
    Proceed {
        range_applies: bool,
    },
    NotModified,
    Failed,
}

fn preconditions(req: &HeaderMap, method: &Method, v: &Validators) -> Precondition {
    // 1. If-Match (strong), else 2. If-Unmodified-Since.
    if let Some(im) = req.typed_get::<IfMatch>() {
        if !v.tags().any(|t| im.precondition_passes(t)) {
            return Precondition::Failed;
        }
    } else if let Some(ius) = req.typed_get::<IfUnmodifiedSince>() {
        if !ius.precondition_passes(v.modified) {
            return Precondition::Failed;
        }
    }
    // 3. If-None-Match (weak comparison), else 4. If-Modified-Since.
    let get_or_head = method == Method::GET || method == Method::HEAD;
    if let Some(inm) = req.typed_get::<IfNoneMatch>() {
        if !v.tags().all(|t| inm.precondition_passes(t)) {
            return if get_or_head {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if let Some(ims) = req.typed_get::<IfModifiedSince>() {
        if get_or_head && !ims.is_modified(v.modified) {
            return Precondition::NotModified;
        }
    }
    // 5. If-Range: the range only if the client's copy is this version.
    let range_applies = match req.typed_get::<IfRange>() {
        None => true,
        Some(ir) => {
            let lm = headers::LastModified::from(v.modified);
            v.tags().any(|t| !ir.is_modified(Some(t), Some(&lm)))
        }
    };
    Precondition::Proceed { range_applies }
}

/// Which bytes to send.
enum Span {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

fn span(req: &HeaderMap, size: u64) -> Span {
    let Some(raw) = req.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Span::Whole;
    };
    let Ok(parsed) = http_range_header::parse_range_header(raw) else {
        return Span::Whole; // malformed: ignored, as the RFC allows
    };
    match parsed.validate(size) {
        Ok(ranges) if ranges.len() == 1 => {
            let r = &ranges[0];
            Span::Part(*r.start(), r.end() - r.start() + 1)
        }
        // Several ranges (no multipart here) or an empty file: whole.
        Ok(_) => Span::Whole,
        Err(http_range_header::RangeUnsatisfiableError::Unsatisfiable) => Span::Unsatisfiable,
        Err(_) => Span::Whole,
    }
}

/// The content type for a path.
pub(crate) fn content_type(path: &str) -> HeaderValue {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let s = if mime.type_() == mime_guess::mime::TEXT && mime.get_param("charset").is_none() {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// Answers GET or HEAD of the opened file at `path`.
pub(crate) fn respond(
    method: &Method,
    req: &HeaderMap,
    path: &str,
    opened: OpenFile,
    service: &Arc<FileService>,
    log: AccessLog,
) -> Response<Body> {
    let info = opened.info;
    let v = Validators::of(&info, service.known_hash(&info));
    let range_applies = match preconditions(req, method, &v) {
        Precondition::Proceed { range_applies } => range_applies,
        Precondition::NotModified => {
            let mut r = super::status_only(StatusCode::NOT_MODIFIED, log);
            v.headers(r.headers_mut());
            return r;
        }
        Precondition::Failed => {
            return super::text(StatusCode::PRECONDITION_FAILED, "precondition failed", log)
        }
    };
    let size = info.size;
    let span = if range_applies && method == Method::GET {
        span(req, size)
    } else {
        Span::Whole
    };
    let (status, offset, len) = match span {
        Span::Whole => (StatusCode::OK, 0, size),
        Span::Part(o, l) => (StatusCode::PARTIAL_CONTENT, o, l),
        Span::Unsatisfiable => {
            let mut r = super::text(
                StatusCode::RANGE_NOT_SATISFIABLE,
                &format!("range not satisfiable: the file has {size} bytes"),
                log,
            );
            r.headers_mut()
                .typed_insert(headers::ContentRange::unsatisfied_bytes(size));
            return r;
        }
    };
    // A whole file sent to the end gets its hash computed afterwards (if
    // not known), so later answers carry it; never for a HEAD or a range.
    let hash_after =
        (method == Method::GET && status == StatusCode::OK && v.hash.is_none() && size > 0)
            .then(|| opened.try_clone().ok())
            .flatten()
            .map(|dup| {
                let svc = service.clone();
                Box::new(move || {
                    tokio::spawn(async move {
                        let _ = svc.hash(&dup).await;
                    });
                }) as Box<dyn FnOnce() + Send>
            });
    let mut body = if method == Method::HEAD {
        Body::empty(log)
    } else {
        match opened.content {
            Content::Local(file) => Body::file(file, offset, len, log),
            Content::Object(blob) => {
                let svc = service.clone();
                let body = async move { svc.object_body(&blob, &info, offset, len).await };
                Body::object(Box::pin(body), len, log)
            }
        }
        .on_complete(hash_after)
    };
    body.set_status(status.as_u16());
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    v.headers(h);
    h.insert(header::CONTENT_TYPE, content_type(path));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(cr) = headers::ContentRange::bytes(offset..offset + len, size) {
            h.typed_insert(cr);
        }
    }
    r
}
