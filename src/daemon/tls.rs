//! TLS for `mqtts://`: a rustls client configuration (ring provider) from `[mqtt.tls]` files.
//!
//! The CA file replaces the system's roots when set; a client certificate and key enable
//! mutual TLS. Every error names the key and the file, so `sentimqd validate` can point at it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::config::TlsConfig;

/// Errors of building the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("{key} {path}: cannot read")]
    Read {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no PEM item of the expected kind.
    #[error("{key} {path}: no PEM {what} found; the file must contain -----BEGIN {what}-----")]
    Empty {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What was looked for, e.g. `CERTIFICATE`.
        what: &'static str,
    },
    /// A PEM item is malformed.
    #[error("{key} {path}: malformed PEM")]
    Malformed {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls rejects a certificate or key.
    #[error("{key} {path}: {problem}")]
    Invalid {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it, e.g. `unusable CA certificate`.
        problem: &'static str,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// No CA file is set and the system has no usable root certificates.
    #[error("mqtt.tls.ca_file is not set and no system root certificates were found ({0}); set mqtt.tls.ca_file")]
    NoRoots(String),
}

impl TlsError {
    /// The config key the error is about.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Read { key, .. }
            | TlsError::Empty { key, .. }
            | TlsError::Malformed { key, .. }
            | TlsError::Invalid { key, .. } => key,
            TlsError::NoRoots(_) => "mqtt.tls.ca_file",
        }
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the certificates of a PEM file (`mqtt.tls.ca_file` or `mqtt.tls.cert_file`).
pub fn read_certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(key, path)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Malformed {
            key,
            path: path.to_path_buf(),
            source,
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Empty {
            key,
            path: path.to_path_buf(),
            what: "CERTIFICATE",
        });
    }
    Ok(certificates)
}

/// Reads the private key of `mqtt.tls.key_file`.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    const KEY: &str = "mqtt.tls.key_file";
    let bytes = read(KEY, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            key: KEY,
            path: path.to_path_buf(),
            what: "PRIVATE KEY",
        },
        source => TlsError::Malformed {
            key: KEY,
            path: path.to_path_buf(),
            source,
        },
    })
}

/// The rustls client configuration for `[mqtt.tls]`.
pub fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for certificate in read_certificates("mqtt.tls.ca_file", path)? {
                roots.add(certificate).map_err(|source| TlsError::Invalid {
                    key: "mqtt.tls.ca_file",
                    path: path.clone(),
                    problem: "unusable CA certificate",
                    source,
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                let reasons: Vec<String> = native.errors.iter().map(|e| e.to_string()).collect();
                return Err(TlsError::NoRoots(if reasons.is_empty() {
                    "the store is empty".into()
                } else {
                    reasons.join("; ")
                }));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert_path), Some(key_path)) => {
            let chain = read_certificates("mqtt.tls.cert_file", cert_path)?;
            let key = read_private_key(key_path)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| TlsError::Invalid {
                    key: "mqtt.tls.key_file",
                    path: key_path.clone(),
                    problem: "does not fit mqtt.tls.cert_file",
                    source,
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key_and_file() {
        let missing = TlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsConfig::default()
        };
        let err = client_config(&missing).unwrap_err();
        assert_eq!(err.key(), "mqtt.tls.ca_file");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = read_certificates("mqtt.tls.ca_file", &empty).unwrap_err();
        assert!(matches!(err, TlsError::Empty { .. }), "{err}");
        let err = read_private_key(&empty).unwrap_err();
        assert_eq!(err.key(), "mqtt.tls.key_file");
    }
}
