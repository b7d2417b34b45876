//! The server's side of TLS: its certificate and the acceptor.
//!
//! A certificate is either given (`--tls-cert`, `--tls-key`, PEM) or made
//! once with rcgen, self-signed for the machine's names and addresses, and
//! kept as `cert.pem` and `key.pem` (mode 0600, in a directory of mode
//! 0700) under the state directory, so a restarted server shows the same
//! fingerprint and the clients that trusted it on first use keep trusting
//! it.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::{fingerprint, provider, TlsError, ALPN_FERRY};

/// The server's TLS identity and settings, ready to accept connections.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    fingerprint: String,
    /// Where the certificate came from, for the startup lines.
    source: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Uses the certificate chain and key in these PEM files.
    ///
    /// # Errors
    ///
    /// A file that cannot be read, holds no certificate or key, or a key
    /// that does not match the certificate.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = super::read_certs(cert)?;
        let key = read_key(key)?;
        Self::build(chain, key, cert.display().to_string())
    }

    /// The certificate kept in `dir`, generated there (self-signed, for
    /// `names`: host names and IP addresses) when there is none yet.
    ///
    /// # Errors
    ///
    /// The directory or files cannot be created or read.
    pub fn self_signed_in(dir: &Path, names: &[String]) -> Result<Self, TlsError> {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        if !cert.exists() || !key.exists() {
            generate(dir, &cert, &key, names)?;
        }
        let mut tls = Self::from_pem_files(&cert, &key)?;
        tls.source = format!("self-signed, kept in {}", dir.display());
        Ok(tls)
    }

    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        source: String,
    ) -> Result<Self, TlsError> {
        let fingerprint = fingerprint(&chain[0]);
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        // Our order (AES-128-GCM first), not the client's: curl and
        // browsers list AES-256 first.
        config.ignore_client_order = true;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ALPN_FERRY.to_vec()];
        // Resumption: stateful sessions (rustls' default cache) plus
        // tickets, so many short connections skip the full handshake.
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
        if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
            config.ticketer = ticketer;
        }
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            fingerprint,
            source,
        })
    }

    /// The acceptor for incoming connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// `sha256:<hex>` of the leaf certificate.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Where the certificate came from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// `$XDG_STATE_HOME/ferry`, else `~/.local/state/ferry`.
pub fn default_state_dir() -> Option<PathBuf> {
    crate::tls::client::xdg_dir("XDG_STATE_HOME", ".local/state")
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: shown.clone(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: shown,
        why: format!("no private key in it: {e}"),
    })
}

/// Makes a self-signed certificate for `names` and writes it and its key
/// to `cert` and `key`, each 0600, in `dir` (created 0700).
fn generate(dir: &Path, cert: &Path, key: &Path, names: &[String]) -> Result<(), TlsError> {
    let state = |p: &Path| {
        let p = p.display().to_string();
        move |source| TlsError::State { path: p, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(state(dir))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    for name in names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => match name.clone().try_into() {
                Ok(dns) => rcgen::SanType::DnsName(dns),
                Err(_) => continue,
            },
        };
        if !params.subject_alt_names.contains(&san) {
            params.subject_alt_names.push(san);
        }
    }
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "ferry self-signed");
    params.distinguished_name = dn;
    let key_pair = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let made = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    write_private(key, key_pair.serialize_pem().as_bytes()).map_err(state(key))?;
    write_private(cert, made.pem().as_bytes()).map_err(state(cert))?;
    Ok(())
}

/// Writes a new file of mode 0600 (through a temporary and a rename, so a
/// crash never leaves half a key).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The names a generated certificate is for: `localhost`, this host's
/// name, the loopback addresses and every interface address.
pub fn local_names() -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if !host.is_empty() {
        names.push(host);
    }
    names.push("127.0.0.1".into());
    names.push("::1".into());
    for i in if_addrs::get_if_addrs().unwrap_or_default() {
        names.push(i.ip().to_string());
    }
    names.dedup();
    names
}
