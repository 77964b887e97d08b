//! The HTTPS identity: a self-signed certificate made on first boot and kept in
//! `<data>/config/tls/`, loaded into a rustls server configuration.
//!
//! Limits: no import or export yet (a later issue adds both, for the failover pair).

use crate::store::{self, StoreError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("the certificate and key in {dir} do not form a usable TLS identity: {source}")]
    Config { dir: PathBuf, source: rustls::Error },
}

/// Whether the identity was already there or made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Loaded,
    Generated,
}

/// Makes a self-signed certificate for the appliance (ECDSA P-256, valid ten years).
fn generate(hostname: &str) -> Result<(String, String), rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(vec![hostname.to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Appliance (self-signed)");
    for last in 1..=8u8 {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
                169, 254, 1, last,
            ])));
    }
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
    params.not_after = (now + std::time::Duration::from_secs(10 * 365 * 86_400)).into();
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Loads `<dir>/cert.pem` and `<dir>/key.pem`, generating them first if either is missing.
pub fn load_or_generate(
    dir: &Path,
    hostname: &str,
) -> Result<(Arc<rustls::ServerConfig>, Origin), TlsError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let origin = if cert_path.exists() && key_path.exists() {
        Origin::Loaded
    } else {
        store::ensure_dir(dir, 0o700)?;
        let (cert, key) = generate(hostname)?;
        // Key first: a cut between the two writes leaves no certificate, so the next start
        // generates both again instead of pairing a new certificate with an old key.
        store::write_atomic(&key_path, key.as_bytes(), 0o600)?;
        store::write_atomic(&cert_path, cert.as_bytes(), 0o644)?;
        Origin::Generated
    };
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.clone(),
            source,
        })
    };
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .ok()
        .filter(|c: &Vec<_>| !c.is_empty())
        .ok_or(TlsError::Pem {
            path: cert_path,
            what: "certificate",
        })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Pem {
        path: key_path,
        what: "private key",
    })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Config {
            dir: dir.to_path_buf(),
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_loads_the_same_identity() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let (_, origin) = load_or_generate(&tls, "appliance").unwrap();
        assert_eq!(origin, Origin::Generated);
        let first = std::fs::read(tls.join(CERT_FILE)).unwrap();
        let (_, origin) = load_or_generate(&tls, "appliance").unwrap();
        assert_eq!(origin, Origin::Loaded);
        assert_eq!(std::fs::read(tls.join(CERT_FILE)).unwrap(), first);
    }

    #[test]
    fn a_corrupt_key_is_reported_not_replaced() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        load_or_generate(dir.path(), "appliance").unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "garbage").unwrap();
        let err = load_or_generate(dir.path(), "appliance").unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join(KEY_FILE)).unwrap(),
            b"garbage"
        );
    }
}
