//! The object-store backend: a bucket (and a key prefix in it) served as if
//! it were a directory, through the `object_store` crate (S3 and anything
//! that speaks its API: Garage, MinIO, Ceph).
//!
//! # Keys never leave the prefix
//!
//! A request path is first checked by the same pure rule as for a local
//! root ([`validate_path`]: UTF-8, relative, no empty, `.` or `..`
//! components, no `\`, NUL or control characters). Only then is the key
//! built, as `PREFIX/` followed by that path *verbatim*
//! ([`ObjPath::parse`], never the encoding [`ObjPath::from`], which would
//! map one name to another key). An object store has no links and no
//! `..`: a key so built can only name an object under the prefix. Percent
//! signs are literal characters of a key, so `%2e%2e` is a name, not `..`.
//!
//! # Versions and validators
//!
//! Several ferry nodes may serve the same bucket, and a download started on
//! one may be resumed on another, so whatever identifies a version must be
//! the same on every node: it comes from the store, never from the node.
//! An object's [`FileInfo`] has `dev` = [`OBJECT_DEV`], `ino` a digest of
//! its key, and `mtime_ns` its modification time *to the second* (what
//! S3's `Last-Modified` carries) with the nanoseconds below the second
//! replaced by a digest of its `ETag`. So the (size, mtime) validator of
//! the native protocol, the HTTP `ETag` made from a [`FileInfo`] and the
//! hash cache's key all change whenever the object does, even when it is
//! rewritten with the same size in the same second, and they agree across
//! nodes. Reading a range sends `If-Match: ETAG`, so an object replaced
//! while it is being read fails the read instead of splicing two versions.
//!
//! # Shared hashes
//!
//! An object's BLAKE3 hash is computed once for all nodes: it is kept in
//! the store itself, under the reserved prefix `PREFIX/.ferry/blake3/`, in
//! an object named by a digest of the key, holding the ETag and size it was
//! made from. A node that needs a hash reads it there first; a stale one
//! (another ETag) is ignored and replaced. `.ferry/` is never served or
//! listed, even with `--hidden`.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{Certificate, ClientOptions, ObjectMeta, ObjectStore, RetryConfig};

use super::local::{validate_path, Entry, FileInfo, PathError, RootOptions};
use super::object_blob::ObjectBlob;
use crate::protocol::{EntryKind, ListEntry, MAX_LIST_ENTRIES, MAX_NAME_LEN};

/// `FileInfo::dev` of every object: no local device has it.
pub const OBJECT_DEV: u64 = u64::MAX;

/// The top-level name under the prefix that ferry keeps for itself.
pub const RESERVED: &str = ".ferry";

/// How long one request to the store (a stat, a listing page, one chunk of
/// a body) may take before it counts as failed: a store that stopped
/// answering must not hold a client's request for ever.
pub(super) const STORE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an object store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The address is not `s3://BUCKET[/PREFIX]`.
    #[error("not an object-store address (expected s3://BUCKET[/PREFIX]): {0}")]
    BadUrl(String),
    /// A plain-HTTP endpoint that is not on this machine.
    #[error("refusing plain-HTTP endpoint {0}: only loopback endpoints may skip TLS")]
    PlainHttp(String),
    /// A store other than AWS itself, and no key to present to it.
    #[error("no credentials for {0}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")]
    NoCredentials(String),
    /// The CA file given for the store cannot be used.
    #[error("cannot use {path} as the store's CA certificates: {why}")]
    CaCert {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        why: String,
    },
    /// The store's client refused the configuration.
    #[error("object store: {0}")]
    Config(#[from] object_store::Error),
}

/// Where an object store is and how to reach it, beyond the `AWS_*`
/// variables.
#[derive(Debug, Clone, Default)]
pub struct ObjectConfig {
    /// The S3 endpoint (else `AWS_ENDPOINT_URL`, else AWS itself).
    pub endpoint: Option<String>,
    /// The region (else `AWS_REGION` / `AWS_DEFAULT_REGION`).
    pub region: Option<String>,
    /// CA certificates (PEM) to trust for an `https://` endpoint, besides
    /// the system's: a store of one's own behind a private CA.
    pub cacert: Option<std::path::PathBuf>,
}

/// A bucket and prefix served read-only; no key outside the prefix can be
/// reached through it.
pub struct ObjectRoot {
    store: Arc<dyn ObjectStore>,
    /// The key prefix without a trailing `/` (`""`: the whole bucket).
    prefix: String,
    /// `s3://bucket/prefix`, for display.
    url: String,
    opts: RootOptions,
}

impl fmt::Debug for ObjectRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectRoot")
            .field("url", &self.url)
            .finish()
    }
}

/// Whether `s` names an object store (`s3://…`) rather than a directory.
pub fn is_object_url(s: &str) -> bool {
    s.starts_with("s3://")
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url.trim_start_matches("http://");
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl ObjectRoot {
    /// Connects (lazily: nothing is sent yet) to `s3://BUCKET[/PREFIX]`,
    /// with credentials and defaults from the standard `AWS_*` variables.
    ///
    /// # Errors
    ///
    /// A malformed address, a plain-HTTP endpoint off this machine, or a
    /// configuration the client refuses (no bucket, bad region).
    pub fn connect(
        url: &str,
        config: &ObjectConfig,
        opts: RootOptions,
    ) -> Result<Self, ObjectError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| ObjectError::BadUrl(url.to_string()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_end_matches('/');
        if bucket.is_empty() || (!prefix.is_empty() && validate_path(prefix.as_bytes()).is_err()) {
            return Err(ObjectError::BadUrl(url.to_string()));
        }
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(e) = &config.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &config.region {
            b = b.with_region(r);
        }
        let endpoint = config
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT").ok());
        // Without keys the client would ask AWS's instance metadata service
        // (169.254.169.254), right on EC2 and wrong anywhere else: for a
        // store of one's own, say what is missing instead.
        let has_keys = [
            "AWS_ACCESS_KEY_ID",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
        if let Some(e) = endpoint.as_ref().filter(|_| !has_keys) {
            return Err(ObjectError::NoCredentials(e.clone()));
        }
        // No total timeout: a body may take as long as the client takes to
        // read it (each chunk is bounded instead, see `STORE_TIMEOUT`).
        let mut client = ClientOptions::new()
            .with_timeout_disabled()
            .with_connect_timeout(Duration::from_secs(5));
        if let Some(e) = endpoint.filter(|e| e.starts_with("http://")) {
            if !is_loopback_url(&e) {
                return Err(ObjectError::PlainHttp(e));
            }
            // A fresh connection per request to a store on this machine:
            // a kept-alive one to Garage (which writes a response's head
            // and body separately, with Nagle on) waits ~40 ms per small
            // object for our delayed ACK; a new connection starts in
            // quick-ACK mode, and on loopback costs microseconds.
            client = client.with_allow_http(true).with_pool_max_idle_per_host(0);
        }
        if let Some(path) = &config.cacert {
            let bad = |why: String| ObjectError::CaCert {
                path: path.clone(),
                why,
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let certs = Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in it".into()));
            }
            for c in certs {
                client = client.with_root_certificate(c);
            }
        }
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(10),
            ..RetryConfig::default()
        };
        let store = b.with_client_options(client).with_retry(retry).build()?;
        Ok(ObjectRoot {
            store: Arc::new(store),
            prefix: prefix.to_string(),
            url: format!(
                "s3://{bucket}{}{prefix}",
                if prefix.is_empty() { "" } else { "/" }
            ),
            opts,
        })
    }

    /// The store's client.
    pub(super) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// `s3://bucket/prefix`, for display.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key of `rel` (validated; `""` is the prefix itself).
    pub(super) fn key(&self, rel: &str) -> Result<ObjPath, PathError> {
        let raw = match (self.prefix.is_empty(), rel.is_empty()) {
            (_, true) => self.prefix.clone(),
            (true, false) => rel.to_string(),
            (false, false) => format!("{}/{rel}", self.prefix),
        };
        ObjPath::parse(raw).map_err(|_| PathError::Invalid("not a valid object key"))
    }

    /// Checks a request path and refuses hidden and reserved names.
    pub(super) fn checked<'a>(&self, raw: &'a [u8]) -> Result<&'a str, PathError> {
        let path = validate_path(raw)?;
        if path.split('/').next() == Some(RESERVED) && !path.is_empty() {
            return Err(PathError::Hidden);
        }
        if !self.opts.hidden && path.split('/').any(|c| c.starts_with('.')) {
            return Err(PathError::Hidden);
        }
        Ok(path)
    }

    /// Whether anything lies under `rel/` (a "directory" of a flat store).
    pub(super) async fn has_children(&self, rel: &str) -> Result<bool, PathError> {
        let key = self.key(rel)?;
        let mut list = self.store.list(Some(&key));
        match bounded(list.next()).await? {
            None => Ok(false),
            Some(r) => r.map(|_| true).map_err(path_error),
        }
    }

    pub(super) async fn head(&self, rel: &str) -> Result<Option<ObjectMeta>, PathError> {
        let key = self.key(rel)?;
        match bounded(self.store.head(&key)).await? {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(path_error(e)),
        }
    }

    /// Describes `raw` (directories have size 0).
    ///
    /// # Errors
    ///
    /// As [`super::SafeRoot::stat`], and `Io` when the store fails.
    pub async fn stat(&self, raw: &[u8]) -> Result<FileInfo, PathError> {
        let path = self.checked(raw)?;
        if path.is_empty() {
            return Ok(dir_info(&self.key("")?));
        }
        if let Some(m) = self.head(path).await? {
            return Ok(info_of(&m));
        }
        if self.has_children(path).await? {
            return Ok(dir_info(&self.key(path)?));
        }
        Err(PathError::NotFound)
    }

    /// Opens the object at `raw` for reading.
    ///
    /// # Errors
    ///
    /// As [`super::SafeRoot::open_file`], and `Io` when the store fails.
    pub async fn open(&self, raw: &[u8]) -> Result<(ObjectBlob, FileInfo), PathError> {
        let path = self.checked(raw)?;
        if path.is_empty() {
            return Err(PathError::IsADirectory);
        }
        let Some(meta) = self.head(path).await? else {
            return Err(if self.has_children(path).await? {
                PathError::IsADirectory
            } else {
                PathError::NotFound
            });
        };
        let info = info_of(&meta);
        let sidecar = self.key(&format!(
            "{RESERVED}/blake3/{}",
            &blake3::hash(meta.location.as_ref().as_bytes()).to_hex()[..32]
        ))?;
        let blob = ObjectBlob::new(self.store.clone(), meta, sidecar);
        Ok((blob, info))
    }

    /// Lists the "directory" `raw`: the objects directly under it and the
    /// names that lead further down, sorted by name. Hidden names (unless
    /// shared), the reserved `.ferry/` and keys no path could name (empty
    /// components, `\`, control characters, over-long names) are left out.
    ///
    /// # Errors
    ///
    /// As [`super::SafeRoot::entries`], and `Io` when the store fails.
    pub async fn entries(&self, raw: &[u8]) -> Result<Vec<Entry>, PathError> {
        let path = self.checked(raw)?;
        let key = self.key(path)?;
        let prefix = (!key.as_ref().is_empty()).then_some(&key);
        let listed = bounded(self.store.list_with_delimiter(prefix))
            .await?
            .map_err(path_error)?;
        if !path.is_empty() && listed.objects.is_empty() && listed.common_prefixes.is_empty() {
            return Err(match self.head(path).await? {
                Some(_) => PathError::NotADirectory,
                None => PathError::NotFound,
            });
        }
        let mut out = Vec::new();
        let dirs = listed.common_prefixes.iter().map(|p| (p, dir_info(p)));
        let files = listed.objects.iter().map(|m| (&m.location, info_of(m)));
        for (loc, info) in dirs.chain(files) {
            let Some(name) = loc.filename() else { continue };
            let top_reserved = path.is_empty() && name == RESERVED;
            if top_reserved
                || name.len() > MAX_NAME_LEN
                || crate::protocol::validate_name(name.as_bytes()).is_err()
                || (!self.opts.hidden && name.starts_with('.'))
                || *loc == key
            {
                continue;
            }
            if out.len() == MAX_LIST_ENTRIES {
                return Err(PathError::TooManyEntries);
            }
            out.push(Entry {
                entry: ListEntry {
                    name: name.as_bytes().to_vec(),
                    kind: info.kind,
                    size: info.size,
                    mtime_ns: info.mtime_ns,
                },
                info,
            });
        }
        out.sort_by(|a, b| a.entry.name.cmp(&b.entry.name));
        // A key that is both an object and a prefix ("a" and "a/b") is
        // listed once, as the object (what a GET of it serves).
        out.dedup_by(|later, first| later.entry.name == first.entry.name);
        Ok(out)
    }

    /// Whether the store answers, with this key and bucket: a listing of
    /// the reserved `.ferry/` (a few names, all ferry's own). Not a listing
    /// of the served prefix, where one key that no path can name would
    /// fail it and take a healthy node out of rotation; not a `HEAD` of a
    /// missing key, which S3 answers 403 to a key without `ListBucket`.
    ///
    /// # Errors
    ///
    /// What failed: the store unreachable, the key refused, no bucket.
    pub async fn check(&self) -> io::Result<()> {
        let key = self.key(RESERVED).map_err(io::Error::other)?;
        self.store
            .list_with_delimiter(Some(&key))
            .await
            .map(drop)
            .map_err(io::Error::other)
    }
}

/// Runs one store request under [`STORE_TIMEOUT`].
pub(super) async fn bounded<T>(f: impl std::future::Future<Output = T>) -> Result<T, PathError> {
    tokio::time::timeout(STORE_TIMEOUT, f).await.map_err(|_| {
        PathError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "the object store did not answer",
        ))
    })
}

pub(super) fn io_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        object_store::Error::Precondition { .. } => {
            io::Error::other(format!("the object changed while being read ({e})"))
        }
        e => io::Error::other(e),
    }
}

fn path_error(e: object_store::Error) -> PathError {
    match e {
        object_store::Error::NotFound { .. } => PathError::NotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => PathError::PermissionDenied,
        e => PathError::Io(io_error(e)),
    }
}

fn digest64(parts: &[&[u8]]) -> u64 {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// What a stat of an object tells, the same on every node (see the module
/// documentation).
fn info_of(m: &ObjectMeta) -> FileInfo {
    let version = m.e_tag.as_deref().or(m.version.as_deref()).unwrap_or("");
    let below_second = (digest64(&[version.as_bytes()]) % 1_000_000_000) as i64;
    let mtime_ns = m
        .last_modified
        .timestamp()
        .saturating_mul(1_000_000_000)
        .saturating_add(below_second);
    FileInfo {
        kind: EntryKind::File,
        size: m.size,
        mtime_ns,
        dev: OBJECT_DEV,
        ino: digest64(&[m.location.as_ref().as_bytes()]),
        ctime_ns: mtime_ns,
        nlink: 1,
    }
}

fn dir_info(key: &ObjPath) -> FileInfo {
    FileInfo {
        kind: EntryKind::Dir,
        size: 0,
        mtime_ns: 0,
        dev: OBJECT_DEV,
        ino: digest64(&[key.as_ref().as_bytes(), b"/"]),
        ctime_ns: 0,
        nlink: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_a_prefix_that_paths_cannot_leave() {
        let cfg = ObjectConfig {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: Some("garage".into()),
            cacert: None,
        };
        // The only test that reads these variables: no other thread races.
        std::env::remove_var("AWS_ACCESS_KEY_ID");
        assert!(matches!(
            ObjectRoot::connect("s3://b/pub/", &cfg, RootOptions::default()),
            Err(ObjectError::NoCredentials(_))
        ));
        std::env::set_var("AWS_ACCESS_KEY_ID", "ferry-unit-test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "ferry-unit-test");
        let r = ObjectRoot::connect("s3://b/pub/", &cfg, RootOptions::default()).unwrap();
        assert_eq!(r.url(), "s3://b/pub");
        assert_eq!(r.key("").unwrap().as_ref(), "pub");
        assert_eq!(r.key("a/b.txt").unwrap().as_ref(), "pub/a/b.txt");
        // Percent signs are literal: no decoding, no second meaning.
        assert_eq!(r.key("%2e%2e/x").unwrap().as_ref(), "pub/%2e%2e/x");
        for bad in [
            &b"../x"[..],
            b"a/../../x",
            b"/x",
            b"a//b",
            b"a\\..\\x",
            b"a\0b",
            b".ferry/blake3/x",
        ] {
            assert!(
                r.checked(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for bad in ["s3://", "s3:///x", "s3://b/../x", "s3://b/a//c", "http://b"] {
            assert!(
                ObjectRoot::connect(bad, &cfg, RootOptions::default()).is_err(),
                "{bad}"
            );
        }
        let far = ObjectConfig {
            endpoint: Some("http://192.0.2.1:3900".into()),
            region: None,
            cacert: None,
        };
        assert!(matches!(
            ObjectRoot::connect("s3://b", &far, RootOptions::default()),
            Err(ObjectError::PlainHttp(_))
        ));
    }

    #[test]
    fn a_new_etag_is_a_new_version_even_in_the_same_second() {
        let meta = |etag: &str| ObjectMeta {
            location: ObjPath::parse("p/a").unwrap(),
            last_modified: "2026-12-04T10:00:00.250Z".parse().unwrap(),
            size: 10,
            e_tag: Some(etag.into()),
            version: None,
        };
        let (a, b) = (info_of(&meta("\"1\"")), info_of(&meta("\"2\"")));
        assert_ne!(a.mtime_ns, b.mtime_ns);
        assert_eq!(a.mtime_ns.div_euclid(1_000_000_000), 1_796_378_400);
        assert_eq!(a, info_of(&meta("\"1\"")), "the same on every node");
    }

    #[test]
    fn only_loopback_is_loopback() {
        assert!(is_loopback_url("http://127.0.0.1:3900"));
        assert!(is_loopback_url("http://[::1]:3900/"));
        assert!(is_loopback_url("http://localhost:1"));
        assert!(!is_loopback_url("http://10.0.0.1:3900"));
        assert!(!is_loopback_url("http://127.0.0.1.evil.example:3900"));
    }
}
