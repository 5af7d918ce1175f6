//! TLS for GLI (rustls): the certificate chain and private key, loaded from PEM files.
//!
//! The ring provider is named explicitly rather than taken from rustls' process default, so that
//! another crate enabling a second provider cannot make server start-up ambiguous (rustls
//! panics in that case when asked for the default).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;
use tokio_rustls::TlsAcceptor;

/// Why the TLS configuration could not be built. Each names the file at fault.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid PEM: {reason}", path.display())]
    BadPem { path: PathBuf, reason: String },
    #[error("{}: no certificate found (expected a PEM 'BEGIN CERTIFICATE' section)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no private key found (expected a PEM PKCS#8, PKCS#1 or SEC1 private key)", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: no usable CA certificate: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error("certificate {} and key {} are not usable together: {source}", cert.display(), key.display())]
    Config {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// A server-side TLS configuration; cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}

impl TlsConfig {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsConfig, TlsError> {
        TlsConfig::with_client_ca(cert, key, None)
    }

    /// As [`TlsConfig::from_pem_files`]; with `client_ca` (PEM CA certificates), a client must
    /// present a certificate signed by one of them (mutual TLS) or the handshake fails.
    pub fn with_client_ca(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<TlsConfig, TlsError> {
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let chain = certificates(cert, &cert_pem)?;
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
                path: key.to_owned(),
            },
            other => TlsError::BadPem {
                path: key.to_owned(),
                reason: other.to_string(),
            },
        })?;
        let config_err = |source| TlsError::Config {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let ca_err = |reason: String| TlsError::ClientCa {
                    path: ca.to_owned(),
                    reason,
                };
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(ca, &read(ca)?)? {
                    roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| ca_err(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, private_key)
            .map_err(config_err)?;
        Ok(TlsConfig {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The acceptor for a TLS server's handshakes (GLI and the feed).
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The PEM certificates in `pem` (at least one).
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}
