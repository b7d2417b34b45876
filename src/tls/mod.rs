//! TLS on ferry's port, both ends, with rustls.
//!
//! * [`Stream`]: a TCP connection, plain or inside TLS, as every front-end
//!   and the client see it. Plain file bodies still leave by `sendfile(2)`;
//!   inside TLS they are read and encrypted (no kernel TLS).
//! * [`server`]: the server's certificate (given as PEM files, or generated
//!   once, self-signed, and kept under the state directory) and its
//!   acceptor, with ALPN `h2`, `http/1.1` and [`ALPN_FERRY`].
//! * [`client`]: who the client trusts, in order: a pinned fingerprint,
//!   a CA file or the system's roots, else trust on first use recorded in
//!   `known_hosts`.
//!
//! A certificate's identity, everywhere it is shown or pinned, is
//! [`fingerprint`]: `sha256:` and the SHA-256 of its DER bytes in hex.

pub mod client;
pub mod server;

use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::connection::{SendFile, WriteLimit};

/// The ALPN protocol id of ferry's native protocol inside TLS.
pub const ALPN_FERRY: &[u8] = b"ferry/1";

/// Errors setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A file holds no usable certificate or key.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The state directory for the generated certificate failed.
    #[error("cannot keep the certificate in {path}: {source}")]
    State {
        /// The directory or file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// rustls refused the configuration (e.g. a key that does not match
    /// the certificate).
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating a certificate failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    /// `--pin` is not `sha256:` and 64 hex digits.
    #[error("bad pin {0:?}: expected sha256: and 64 hex digits")]
    BadPin(String),
}

/// The certificates in a PEM file (a server's chain, or a client's CAs).
///
/// # Errors
///
/// The file cannot be read, is not PEM, or holds no certificate.
pub(crate) fn read_certs(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: shown.clone(),
        source,
    })?;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: shown.clone(),
            why: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: shown,
            why: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

/// `sha256:<hex>` of a certificate's DER bytes.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", crate::display::hex(&sha2::Sha256::digest(der)))
}

/// The process's rustls crypto provider: ring, with AES-128-GCM preferred
/// over AES-256-GCM (rustls' default order puts 256 first; 128 costs
/// fewer AES rounds per byte and is as safe for this use). Installed once;
/// a provider installed before, by anyone, is kept.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = ring_provider().install_default();
    });
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| std::sync::Arc::new(ring_provider()))
}

fn ring_provider() -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384};
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        TLS13_AES_128_GCM_SHA256 => 0,
        TLS13_AES_256_GCM_SHA384 => 1,
        _ => 2,
    });
    p
}

/// A connection: plain TCP, or TLS over TCP (either end).
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.get_ref().0,
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The protocol both ends agreed on by ALPN, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => t.get_ref().1.alpn_protocol(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(t) => t.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

impl SendFile for Stream {
    async fn send_file(
        &mut self,
        prefix: &[u8],
        file: &File,
        offset: u64,
        len: u64,
        limit: &WriteLimit,
    ) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.send_file(prefix, file, offset, len, limit).await,
            Stream::Tls(_) => {
                crate::connection::copy_file_to(self, prefix, file, offset, len, limit).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprint_is_sha256_of_der() {
        // SHA-256 of the empty string, a fixed point anyone can check.
        assert_eq!(
            super::fingerprint(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
