//! Making untrusted text safe to print on a terminal.
//!
//! Everything a peer sends that can reach a terminal (names, messages,
//! error texts, acknowledgements) goes through [`escape_controls`] (or
//! [`escape_bytes`], which calls it) before it is printed. It is
//! idempotent, so text escaped twice reads the same as text escaped once.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` must not reach a terminal raw: control characters (C0, DEL,
/// C1 such as U+009B, the one-byte CSI), and the invisible characters that
/// reorder or hide text: bidirectional overrides, embeddings and isolates
/// (U+202A–U+202E, U+2066–U+2069), marks (U+200E, U+200F, U+061C),
/// zero-width characters (U+200B–U+200D, U+2060–U+2064, U+FEFF), line and
/// paragraph separators, and the other invisible format and filler
/// characters that a name has no use for. (Emoji variation selectors are
/// kept: they only choose how a visible character is drawn.)
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFFB}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// Replaces every character [`is_unsafe_char`] finds with a visible escape
/// such as `\n`, `\u{1b}` or `\u{202e}`, so a name or message from a peer
/// can never move the cursor, recolour the terminal, retitle the window,
/// forge a line or display reordered. Everything else, Chinese included,
/// is kept as is.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe_char(c) {
            let _ = match c {
                '\n' | '\r' | '\t' => write!(out, "{}", c.escape_default()),
                c => write!(out, "\\u{{{:x}}}", c as u32),
            };
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`escape_controls`] for bytes that may not be UTF-8 (invalid sequences
/// become U+FFFD).
pub fn escape_bytes(b: &[u8]) -> String {
    escape_controls(&String::from_utf8_lossy(b)).into_owned()
}

/// `n` with its unit: "1 byte", "512 bytes".
pub fn bytes(n: u64) -> String {
    if n == 1 {
        "1 byte".to_string()
    } else {
        format!("{n} bytes")
    }
}

/// A size for people: "512 bytes", "1.5 KiB", "3.0 GiB" (powers of 1024).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return bytes(n);
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Bytes as lower-case hex (hashes, nonces).
pub fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn escapes_controls_only() {
        assert_eq!(escape_controls("已收到 ok"), "已收到 ok");
        assert_eq!(escape_controls("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(escape_bytes(b"\xffx"), "\u{fffd}x");
    }

    #[test]
    fn escapes_spoofing_characters() {
        assert_eq!(
            escape_controls("evil\u{202e}txt.exe"),
            "evil\\u{202e}txt.exe"
        );
        assert_eq!(
            escape_controls("a\u{200b}b\u{feff}"),
            "a\\u{200b}b\\u{feff}"
        );
        assert_eq!(escape_controls("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape_controls("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
        // Right-to-left text itself is fine; only the invisible controls go.
        assert_eq!(escape_controls("שלום مرحبا"), "שלום مرحبا");
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(bytes(1), "1 byte");
        assert_eq!(bytes(0), "0 bytes");
        assert_eq!(human_bytes(1023), "1023 bytes");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn escaping_is_idempotent() {
        for s in ["\x1b]0;pwned\x07", "a\u{202e}b\nc", "plain", "\u{9b}"] {
            let once = escape_controls(s).into_owned();
            assert_eq!(escape_controls(&once), once);
            assert!(!once.chars().any(is_unsafe_char), "{once:?}");
        }
    }
}
