//! The client's side of TLS: whom it trusts.
//!
//! In this order (the first that applies decides):
//!
//! 1. a pin (`--pin sha256:<hex>`): exactly that certificate, or refuse;
//! 2. a CA file (`--cacert`): a certificate it signed, for the right name,
//!    valid now;
//! 3. otherwise the system's roots, and for a certificate no root vouches
//!    for, trust on first use like ssh's `accept-new`: the first connection
//!    to `host:port` records its fingerprint in `known_hosts`; a later
//!    different one is refused, naming both fingerprints and the line to
//!    edit. A changed key is never accepted silently.
//!
//! Whatever the mode, the server must still prove it holds the
//! certificate's key (the handshake signature is checked as usual).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{fingerprint, provider, TlsError};

/// What the user told the client to trust.
#[derive(Debug, Clone, Default)]
pub struct TrustOptions {
    /// `sha256:<hex>`: exactly this certificate.
    pub pin: Option<String>,
    /// PEM file of the CA(s) to trust instead of the system's.
    pub cacert: Option<PathBuf>,
    /// Where first-use fingerprints are kept; `None`: the default
    /// ([`default_known_hosts`]).
    pub known_hosts: Option<PathBuf>,
}

/// Called once when a host is trusted for the first time, with the line to
/// show the user.
pub type FirstUse = Arc<dyn Fn(&str) + Send + Sync>;

/// A TLS client for one server (`host:port`): its trust and its session
/// cache, shared by every connection to that server so that later ones
/// resume the first one's session.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    verifier: Arc<Verifier>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("target", &self.verifier.target)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// The client for `target` (`host:port`, the key of `known_hosts`),
    /// speaking the protocols in `alpn`.
    ///
    /// # Errors
    ///
    /// A bad pin, or a CA file that cannot be read.
    pub fn new(
        target: &str,
        opts: &TrustOptions,
        alpn: &[&[u8]],
        on_first_use: FirstUse,
    ) -> Result<Self, TlsError> {
        let provider = provider();
        let mode = if let Some(pin) = &opts.pin {
            Mode::Pin(parse_pin(pin)?)
        } else if let Some(ca) = &opts.cacert {
            Mode::Ca(
                webpki(roots_from_file(ca)?, &provider).ok_or_else(|| TlsError::Pem {
                    path: ca.display().to_string(),
                    why: "no usable CA certificate in it".into(),
                })?,
            )
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            Mode::FirstUse {
                roots: webpki(roots, &provider),
                file: opts.known_hosts.clone().or_else(default_known_hosts),
                on_first_use,
                lock: Mutex::new(()),
            }
        };
        let verifier = Arc::new(Verifier {
            target: target.to_string(),
            mode,
            provider: provider.clone(),
            failure: Mutex::new(None),
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(ClientTls {
            config: Arc::new(config),
            verifier,
        })
    }

    /// Runs the handshake over `tcp` with the server named `host`.
    ///
    /// # Errors
    ///
    /// Why the server was not trusted (a pin or `known_hosts` mismatch, an
    /// untrusted, expired or wrong-name certificate), or why the handshake
    /// failed.
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
        let connector = TlsConnector::from(self.config.clone());
        match connector.connect(name, tcp).await {
            Ok(s) => Ok(s),
            Err(e) => Err(
                match self.verifier.failure.lock().ok().and_then(|mut f| f.take()) {
                    Some(why) => why,
                    None => format!("TLS handshake with {} failed: {e}", self.verifier.target),
                },
            ),
        }
    }
}

/// A TLS client configuration for web servers (`https://` URLs): the
/// certificate must chain to the system's roots, or to `cacert`'s when
/// given, and name the host; no first-use trust (a web server has a CA's
/// certificate, or is wrong). With a pin, use [`ClientTls`] instead.
///
/// # Errors
///
/// A CA file that cannot be read or holds no certificate.
pub fn web_config(
    cacert: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = match cacert {
        Some(ca) => roots_from_file(ca)?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            roots
        }
    };
    if roots.is_empty() {
        return Err(TlsError::Pem {
            path: cacert.map_or_else(|| "the system's roots".into(), |p| p.display().to_string()),
            why: "no usable CA certificate".into(),
        });
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// `$XDG_CONFIG_HOME/ferry/known_hosts`, else `~/.config/ferry/known_hosts`.
pub fn default_known_hosts() -> Option<PathBuf> {
    xdg_dir("XDG_CONFIG_HOME", ".config").map(|d| d.join("known_hosts"))
}

/// `$VAR/ferry` when VAR is an absolute path, else `$HOME/<fallback>/ferry`.
pub(crate) fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(p) if p.is_absolute() => Some(p.join("ferry")),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(fallback).join("ferry")),
    }
}

fn parse_pin(pin: &str) -> Result<[u8; 32], TlsError> {
    let bad = || TlsError::BadPin(pin.to_string());
    let hex = pin.strip_prefix("sha256:").ok_or_else(bad)?;
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

fn roots_from_file(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in super::read_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: path.display().to_string(),
            why: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

fn webpki(
    roots: rustls::RootCertStore,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Option<Arc<WebPkiServerVerifier>> {
    if roots.is_empty() {
        return None;
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .ok()
}

enum Mode {
    Pin([u8; 32]),
    Ca(Arc<WebPkiServerVerifier>),
    FirstUse {
        roots: Option<Arc<WebPkiServerVerifier>>,
        file: Option<PathBuf>,
        on_first_use: FirstUse,
        lock: Mutex<()>,
    },
}

struct Verifier {
    target: String,
    mode: Mode,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// Why the last certificate was refused, in words for the user (rustls'
    /// own error would only say "invalid peer certificate").
    failure: Mutex<Option<String>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    fn refuse(&self, why: String) -> rustls::Error {
        if let Ok(mut f) = self.failure.lock() {
            *f = Some(why);
        }
        rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), String> {
        let target = &self.target;
        let offered = fingerprint(end_entity);
        match &self.mode {
            Mode::Pin(pin) => {
                let want = format!("sha256:{}", crate::display::hex(pin));
                if offered == want {
                    Ok(())
                } else {
                    Err(format!(
                        "certificate of {target} is {offered}, not the pinned {want}: refusing"
                    ))
                }
            }
            Mode::Ca(ca) => ca
                .verify_server_cert(end_entity, intermediates, name, &[], now)
                .map(drop)
                .map_err(|e| format!("certificate of {target} not trusted by --cacert: {e}")),
            Mode::FirstUse {
                roots,
                file,
                on_first_use,
                lock,
            } => {
                if let Some(roots) = roots {
                    match roots.verify_server_cert(end_entity, intermediates, name, &[], now) {
                        Ok(_) => return Ok(()),
                        // No root vouches for it (self-signed, a private
                        // CA): trust on first use decides.
                        Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                        }
                        Err(e) => return Err(format!("certificate of {target} refused: {e}")),
                    }
                }
                let Some(file) = file else {
                    return Err(format!(
                        "certificate of {target} ({offered}) is not signed by a trusted CA, \
                         and there is no known_hosts file to trust it on first use \
                         (HOME is not set): use --pin {offered}"
                    ));
                };
                let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                match lookup(file, target) {
                    Ok(Some((_, known))) if known == offered => Ok(()),
                    Ok(Some((line, known))) => Err(format!(
                        "certificate of {target} CHANGED: known as {known}, now {offered}. \
                         Someone may be intercepting the connection. If the server's \
                         certificate was replaced on purpose, delete line {line} of {}",
                        file.display()
                    )),
                    Ok(None) => {
                        record(file, target, &offered).map_err(|e| {
                            format!("cannot record {target} in {}: {e}", file.display())
                        })?;
                        on_first_use(&format!(
                            "ferry: first connection to {target}: trusting its certificate \
                             {offered} from now on (recorded in {})",
                            file.display()
                        ));
                        Ok(())
                    }
                    Err(e) => Err(format!("cannot read {}: {e}", file.display())),
                }
            }
        }
    }
}

/// The line number and fingerprint recorded for `target`, if any.
fn lookup(file: &Path, target: &str) -> std::io::Result<Option<(usize, String)>> {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        let mut words = line.split_whitespace();
        if let (Some(host), Some(fp)) = (words.next(), words.next()) {
            if !host.starts_with('#') && host == target {
                return Ok(Some((i + 1, fp.to_string())));
            }
        }
    }
    Ok(None)
}

fn record(file: &Path, target: &str, fp: &str) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    writeln!(f, "{target} {fp}")?;
    f.sync_all()
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, server_name, now)
            .map(|()| ServerCertVerified::assertion())
            .map_err(|why| self.refuse(why))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_or_are_refused() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_pin(&format!("sha256:{hex}")).unwrap(), [0xab; 32]);
        for bad in [
            hex.clone(),
            format!("sha256:{}", &hex[2..]),
            format!("sha1:{hex}"),
            format!("sha256:{}zz", &hex[2..]),
        ] {
            assert!(parse_pin(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn known_hosts_lines_are_found_by_target() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/known_hosts");
        assert_eq!(lookup(&file, "a:1").unwrap(), None);
        record(&file, "a:1", "sha256:00").unwrap();
        record(&file, "b:2", "sha256:11").unwrap();
        assert_eq!(lookup(&file, "b:2").unwrap(), Some((2, "sha256:11".into())));
        assert_eq!(lookup(&file, "a:2").unwrap(), None);
    }
}
