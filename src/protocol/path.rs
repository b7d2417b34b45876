//! The protocol's rules for paths and names, shared by the server (which
//! refuses requests that break them) and the client (which refuses names
//! from a server that break them before creating anything locally).

use super::{MAX_NAME_LEN, MAX_PATH_LEN};

/// Checks a request path and returns it as `&str`.
///
/// A valid path is UTF-8, relative, `/`-separated, at most
/// [`MAX_PATH_LEN`] bytes, and each component is a valid name (see
/// [`validate_name`]). The empty path names the root itself.
///
/// # Errors
///
/// A short reason naming the first rule broken.
pub fn validate_path(raw: &[u8]) -> Result<&str, &'static str> {
    if raw.len() > MAX_PATH_LEN {
        return Err("path too long");
    }
    let path = std::str::from_utf8(raw).map_err(|_| "path is not UTF-8")?;
    if path.is_empty() {
        return Ok(path);
    }
    if path.starts_with('/') {
        return Err("absolute paths are not allowed");
    }
    for comp in path.split('/') {
        validate_name(comp.as_bytes())?;
    }
    Ok(path)
}

/// Checks one path component (a file name) and returns it as `&str`.
///
/// A valid name is non-empty UTF-8 of at most [`MAX_NAME_LEN`] bytes, is not
/// `.` or `..`, and holds no `/`, `\`, NUL or other control character.
///
/// # Errors
///
/// A short reason naming the first rule broken.
pub fn validate_name(raw: &[u8]) -> Result<&str, &'static str> {
    let name = std::str::from_utf8(raw).map_err(|_| "name is not UTF-8")?;
    match name {
        "" => Err("empty path component"),
        "." | ".." => Err("'.' and '..' are not allowed"),
        n if n.len() > MAX_NAME_LEN => Err("file name too long"),
        n if n.contains('/') => Err("'/' in a file name"),
        n if n.contains('\\') => Err("backslash in path"),
        n if n.chars().any(char::is_control) => Err("control character in path"),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_paths() {
        for ok in [
            "",
            "a",
            "a/b.txt",
            "dir with space/文件.txt",
            ".hidden",
            "a..b",
            "...x",
            "%2e%2e",
        ] {
            assert_eq!(validate_path(ok.as_bytes()).unwrap(), ok);
        }
    }

    #[test]
    fn rejects_every_escape_spelling() {
        let long_name = "x".repeat(256);
        let long_path = "a/".repeat(2100);
        let bad: Vec<&[u8]> = vec![
            b"..",
            b"../etc/passwd",
            b"a/../../b",
            b"/etc/passwd",
            b"//etc",
            b"a//b",
            b"a/./b",
            b".",
            b"..\\..\\x",
            b"a\\b",
            b"a\0b",
            b"a\nb",
            b"a/",
            b"\xff\xfe",
            b"a/\x1b[31m",
            long_name.as_bytes(),
            long_path.as_bytes(),
        ];
        for p in bad {
            assert!(validate_path(p).is_err(), "accepted {p:?}");
        }
        for n in [&b"a/b"[..], b"", b"..", b"\x7f"] {
            assert!(validate_name(n).is_err(), "accepted name {n:?}");
        }
    }
}
