//! Making untrusted text safe to print on a terminal.

use std::borrow::Cow;
use std::fmt::Write;

/// Replaces control characters (newline, escape, DEL, C1 controls...) with
/// visible escapes such as `\n` or `\u{1b}`, so a name or message from a
/// peer can never move the cursor, recolour the terminal or forge a line.
/// Everything else, Chinese included, is kept as is.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_only() {
        assert_eq!(escape_controls("已收到 ok"), "已收到 ok");
        assert_eq!(escape_controls("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(escape_bytes(b"\xffx"), "\u{fffd}x");
    }
}
