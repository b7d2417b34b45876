//! From request targets to service paths, and from names to links and
//! HTML text.
//!
//! A target is percent-decoded exactly once and must then be UTF-8; what
//! it names is then checked by the same path rules, and opened by the same
//! root resolver, as a native or tutorial request. Nothing here decides
//! what may be read: a decoded `..` is refused by the service like any
//! other.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What a request target asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The service path: decoded, no leading `/`, no trailing `/` (`""` is
    /// the root).
    pub(crate) path: String,
    /// Whether the target ended in `/` (a directory is wanted).
    pub(crate) dir: bool,
}

/// Decodes the path of a request target.
///
/// # Errors
///
/// A reason, for a 400: not UTF-8 once decoded, or not starting with `/`.
pub(crate) fn decode(raw_path: &str) -> Result<Target, &'static str> {
    if !raw_path.starts_with('/') {
        return Err("the path must start with '/'");
    }
    let decoded = percent_decode_str(raw_path)
        .decode_utf8()
        .map_err(|_| "the path is not UTF-8 once %-decoded")?;
    let inner = &decoded[1..];
    let dir = inner.is_empty() || inner.ends_with('/');
    let path = inner.strip_suffix('/').unwrap_or(inner).to_string();
    Ok(Target { path, dir })
}

/// Characters left as they are in a path segment of a link: RFC 3986's
/// unreserved ones. Everything else (`/`, `?`, `#`, `%`, `&`, quotes,
/// spaces, non-ASCII) is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A service path as the path of a URL: each segment percent-encoded,
/// joined by `/`, with a leading `/`.
pub(crate) fn href(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.extend(utf8_percent_encode(seg, SEGMENT));
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Text made safe inside HTML elements and quoted attributes.
pub(crate) fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The value of query parameter `key`, decoded (`+` as a space).
pub(crate) fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| {
            percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_decode_once() {
        let t = |s| decode(s).unwrap();
        assert_eq!(t("/").path, "");
        assert!(t("/").dir);
        assert_eq!(t("/a%20b/c.txt").path, "a b/c.txt");
        assert!(!t("/a%20b/c.txt").dir);
        assert_eq!(t("/dir/").path, "dir");
        assert!(t("/dir/").dir);
        // Decoded once: %252e stays "%2e", which is just a name.
        assert_eq!(t("/%252e%252e/x").path, "%2e%2e/x");
        // Decoded to "..": the service refuses it, as any "..".
        assert_eq!(t("/%2e%2e/etc/passwd").path, "../etc/passwd");
        assert_eq!(t("/%2F%2Fetc").path, "//etc");
        for bad in ["", "x", "/%ff", "/%c0%ae%c0%ae/x"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn links_and_text_are_escaped() {
        assert_eq!(
            href("a b/#?%&'\"/文"),
            "/a%20b/%23%3F%25%26%27%22/%E6%96%87"
        );
        assert_eq!(href(""), "/");
        assert_eq!(
            html("<img src=x onerror=alert(1)>.txt"),
            "&lt;img src=x onerror=alert(1)&gt;.txt"
        );
        assert_eq!(html("a&b\"'"), "a&amp;b&quot;&#39;");
        assert_eq!(
            query_param(Some("sort=size&q=a+b%21"), "q").as_deref(),
            Some("a b!")
        );
        assert_eq!(query_param(Some("archive"), "archive").as_deref(), Some(""));
        assert_eq!(query_param(None, "q"), None);
    }
}
