//! Which protocol a connection speaks, from its first bytes, without losing
//! or reordering one (they are handed to the front-end).
//!
//! * `0x89`: native ferry (the first byte of its magic; no UTF-8 text and
//!   no HTTP request starts with it);
//! * `0x16`: TLS (a handshake record), reserved;
//! * an HTTP/1.x request line, `METHOD SP target SP HTTP/1.`: HTTP;
//! * anything else: the tutorial's protocol (a bare file name, or text).
//!
//! A tutorial client sends its name and then waits, without a terminator,
//! so a start that could still become a request line (`GET foo`) waits
//! for more bytes only as long as the tutorial's quiet period
//! ([`NAME_QUIET`]); then it is the tutorial's.

use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::frontend::ConnCtx;
use crate::protocol::MAGIC;

/// The tutorial's client sends its file name and then waits without closing
/// its side, so a name without newline ends after this long without new
/// bytes.
pub(crate) const NAME_QUIET: Duration = Duration::from_millis(100);

/// Longest start of a connection read while deciding: a request line
/// longer than this is not taken for HTTP.
const MAX_SNIFF: usize = 8 * 1024;

/// The start of HTTP/2's connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Longest HTTP method name accepted.
const MAX_METHOD: usize = 16;

/// The protocols of the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Native,
    Tls,
    Http,
    /// HTTP/2 with prior knowledge (its connection preface).
    Http2,
    Tutorial,
}

/// Reads the connection's first bytes until its protocol is known. `None`
/// if the peer closed before sending anything.
///
/// # Errors
///
/// Why no first byte arrived (idle timeout, eviction, shutdown), or the
/// socket's error.
pub(crate) async fn sniff(
    stream: &mut crate::tls::Stream,
    ctx: &ConnCtx<'_>,
) -> Result<Option<(Protocol, Vec<u8>)>, String> {
    let mut head = vec![0u8; MAX_SNIFF];
    let n = match ctx.wait(stream.read(&mut head)).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return Err(format!("read failed: {e}")),
        Err(stop) => return Err(stop.to_string()),
    };
    if n == 0 {
        return Ok(None);
    }
    let mut len = n;
    loop {
        let verdict = classify(&head[..len]);
        if let Some(p) = verdict {
            head.truncate(len);
            return Ok(Some((p, head)));
        }
        if len == head.len() {
            // 8 KiB and still a request line in the making: no name of the
            // tutorial's is that long (it reads 1024), so it is HTTP with
            // an over-long target, for HTTP to refuse.
            head.truncate(len);
            return Ok(Some((Protocol::Http, head)));
        }
        // Still possibly a request line: wait a little for the rest.
        match tokio::time::timeout(NAME_QUIET, stream.read(&mut head[len..])).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(m)) => len += m,
            Ok(Err(e)) => return Err(format!("read failed: {e}")),
        }
    }
    head.truncate(len);
    Ok(Some((Protocol::Tutorial, head)))
}

/// The protocol these first bytes show, or `None` while they could still
/// be the start of an HTTP request line.
pub(crate) fn classify(b: &[u8]) -> Option<Protocol> {
    match b.first() {
        None => None,
        Some(&x) if x == MAGIC[0] => Some(Protocol::Native),
        Some(0x16) => Some(Protocol::Tls),
        Some(b'P') if b.len() >= H2_PREFACE.len() && b.starts_with(H2_PREFACE) => {
            Some(Protocol::Http2)
        }
        Some(b'P') if H2_PREFACE.starts_with(b) => None,
        Some(_) => match request_line(b) {
            Line::Yes => Some(Protocol::Http),
            Line::No => Some(Protocol::Tutorial),
            Line::Maybe => None,
        },
    }
}

enum Line {
    Yes,
    No,
    Maybe,
}

/// Whether `b` starts with `METHOD SP target SP HTTP/1.`: a method of
/// upper-case letters, a target of visible ASCII.
fn request_line(b: &[u8]) -> Line {
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_uppercase() {
        i += 1;
        if i > MAX_METHOD {
            return Line::No;
        }
    }
    if i == b.len() {
        return Line::Maybe;
    }
    if i == 0 || b[i] != b' ' {
        return Line::No;
    }
    i += 1;
    let target_start = i;
    while i < b.len() && b[i] > b' ' && b[i] < 0x7f {
        i += 1;
    }
    if i == b.len() {
        return Line::Maybe;
    }
    if i == target_start || b[i] != b' ' {
        return Line::No;
    }
    i += 1;
    const VERSION: &[u8] = b"HTTP/1.";
    let rest = &b[i..];
    let n = rest.len().min(VERSION.len());
    if rest[..n] != VERSION[..n] {
        Line::No
    } else if n == VERSION.len() {
        Line::Yes
    } else {
        Line::Maybe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_pick_the_protocol() {
        use Protocol::*;
        let cases: &[(&[u8], Option<Protocol>)] = &[
            (b"\x89FERRY\r\n", Some(Native)),
            (b"\x89", Some(Native)),
            (b"\x16\x03\x01", Some(Tls)),
            (b"GET / HTTP/1.1\r\n", Some(Http)),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Some(Http2)),
            (b"PRI * HTTP/2", None),
            (b"PRINT.txt", Some(Tutorial)),
            (b"HEAD /a%20b HTTP/1.0\r\n", Some(Http)),
            (b"GET / HTTP/1.", Some(Http)),
            (b"GET / HTTP/", None),
            (b"GET /x", None),
            (b"GET", None),
            (b"G", None),
            (b"GET foo bar", Some(Tutorial)),
            (b"GET foo\n", Some(Tutorial)),
            (b"GET  / HTTP/1.1", Some(Tutorial)),
            (b"GET / HTTP/2.0", Some(Tutorial)),
            (b"get / HTTP/1.1", Some(Tutorial)),
            (b"notes.txt", Some(Tutorial)),
            (b"README.md", Some(Tutorial)),
            ("文件.txt".as_bytes(), Some(Tutorial)),
            (b"ABCDEFGHIJKLMNOPQ / HTTP/1.1", Some(Tutorial)),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                classify(bytes),
                *want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
