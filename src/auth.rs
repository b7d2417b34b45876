//! Access tokens: one secret the server is started with, checked for every
//! protocol (native: in `Hello`; HTTP: `Authorization: Bearer`, or Basic
//! with the token as password).
//!
//! A token is compared in constant time (digests of both sides, compared
//! with `subtle`), never logged and never echoed. Wrong tokens from one
//! address are answered ever more slowly (100 ms doubling up to 5 s, reset
//! after a minute without one), so guessing is slow, while other addresses
//! are not affected: the delay holds back only the failing connection.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use crate::protocol::MAX_TOKEN_LEN;

/// Failures older than this are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Longest delay before answering a wrong token.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Most addresses whose failures are remembered at once.
const MAX_TRACKED: usize = 10_000;

/// Why a token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Empty, too long, or with characters HTTP cannot carry.
    #[error("a token must be 1 to {MAX_TOKEN_LEN} visible ASCII characters (no spaces)")]
    Invalid,
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Checks and wraps a token.
    ///
    /// # Errors
    ///
    /// [`TokenError::Invalid`] for an empty or over-long token, or one with
    /// spaces or control characters.
    pub fn new(token: &str) -> Result<Self, TokenError> {
        let token = token.trim_end_matches(['\r', '\n']);
        if token.is_empty()
            || token.len() > MAX_TOKEN_LEN
            || !token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(TokenError::Invalid);
        }
        Ok(Secret(token.to_string()))
    }

    /// A fresh random token: 128 bits, as 32 hex digits.
    pub fn generate() -> Self {
        let mut b = [0u8; 16];
        rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())
            .expect("the kernel's random source");
        Secret(crate::display::hex(&b))
    }

    /// The token itself, for the one place that must send or print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What a presented token amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The right token.
    Granted,
    /// No token at all (not counted as a guess).
    Missing,
    /// A wrong token: answer after this delay.
    Wrong(Duration),
}

/// The server's token and the failures it has seen.
pub struct Auth {
    digest: [u8; 32],
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Auth(..)")
    }
}

impl Auth {
    /// Checks tokens against `token`.
    pub fn new(token: &Secret) -> Self {
        Auth {
            digest: *blake3::hash(token.0.as_bytes()).as_bytes(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Judges what `peer` presented, counting a wrong token against it.
    pub fn verify(&self, peer: IpAddr, offered: Option<&[u8]>) -> Verdict {
        let Some(offered) = offered else {
            return Verdict::Missing;
        };
        let digest = blake3::hash(offered);
        if bool::from(digest.as_bytes().ct_eq(&self.digest)) {
            return Verdict::Granted;
        }
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let entry = map.entry(peer).or_insert((0, now));
        if now.duration_since(entry.1) >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let doublings = entry.0.saturating_sub(1).min(6);
        Verdict::Wrong((Duration::from_millis(100) * (1 << doublings)).min(MAX_DELAY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_wrong_ones_slowed_per_address() {
        let secret = Secret::new("s3cret-token").unwrap();
        let auth = Auth::new(&secret);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(auth.verify(a, Some(b"s3cret-token")), Verdict::Granted);
        assert_eq!(auth.verify(a, None), Verdict::Missing);
        let delays: Vec<_> = (0..8)
            .map(|_| match auth.verify(a, Some(b"guess")) {
                Verdict::Wrong(d) => d.as_millis(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        // Another address starts from scratch; the right token still works.
        assert_eq!(
            auth.verify(b, Some(b"x")),
            Verdict::Wrong(Duration::from_millis(100))
        );
        assert_eq!(auth.verify(a, Some(b"s3cret-token")), Verdict::Granted);
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }

    #[test]
    fn tokens_must_be_visible_ascii() {
        for bad in ["", "a b", "tab\there", &"x".repeat(257), "é"] {
            assert!(Secret::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Secret::generate().expose().len(), 32);
    }
}
