//! The HTTPS identity: a certificate chain and its private key, kept together in one
//! file, `<data>/config/tls/identity.pem` (mode 0600), so that one atomic write replaces
//! both and a power cut can never pair a new certificate with an old key.
//!
//! On first boot a self-signed certificate is made (ECDSA P-256, ten years). An
//! administrator can import a chain and key (PEM; the key plain or passphrase-protected
//! PKCS#8) and export them again, optionally protected by a passphrase (PKCS#8 with
//! PBES2: PBKDF2-SHA256 and AES-256-CBC): the failover pair needs identical certificates.
//!
//! The identity is local (each box keeps its own file; an administrator copies it to the
//! peer by export and import, sync never does). It is not a `store::Document`: the file is
//! plain PEM that other tools read and write, so it has no place for a version or a
//! revision; it has no defaults (a missing file means "make one"), nothing to migrate and
//! no subscribers (the live TLS configuration is reloaded by whoever imports). What it
//! shares with the documents is the storage: `store::read_if_present` (missing is not an
//! error, any other failure is) and `store::replace` (one atomic write); and their rule: a
//! file that does not parse is reported, never replaced.

use crate::store::{self, StoreError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const IDENTITY_FILE: &str = "identity.pem";
/// PBKDF2 rounds for exported keys: costly to guess, bearable on an emulated CPU.
const EXPORT_PBKDF2_ROUNDS: u32 = 100_000;

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
    #[error("no certificate in the PEM text")]
    NoCertificate,
    #[error("no private key in the PEM text")]
    NoKey,
    #[error("more than one private key in the PEM text")]
    SeveralKeys,
    #[error("the private key is protected by a passphrase: give the passphrase")]
    PassphraseNeeded,
    #[error("the passphrase does not open the private key")]
    BadPassphrase,
    #[error("the private key does not belong to the first certificate of the chain")]
    KeyMismatch,
    #[error("the certificate chain and key are not a usable TLS identity: {0}")]
    Unusable(rustls::Error),
    #[error("the certificate cannot be parsed: {0}")]
    Parse(String),
    #[error("the private key is not PKCS#8, so it cannot be exported with a passphrase (export it without one)")]
    NotPkcs8,
    #[error("cannot protect the key: {0}")]
    Encrypt(String),
}

/// Whether the identity was already there or made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Loaded,
    Generated,
}

/// A certificate chain with its key, as PEM text, checked to belong together.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    config: Arc<rustls::ServerConfig>,
}

impl Identity {
    /// Parses chain and key PEM (one text or two); an encrypted PKCS#8 key needs `passphrase`.
    pub fn from_pem(
        chain_pem: &str,
        key_pem: &str,
        passphrase: Option<&str>,
    ) -> Result<Identity, TlsError> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .filter_map(Result::ok)
                .collect();
        if chain.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let mut keys = Vec::new();
        for (label, der) in pem_blocks(key_pem) {
            let key = match label.as_str() {
                "PRIVATE KEY" => PrivateKeyDer::Pkcs8(der.into()),
                "EC PRIVATE KEY" => PrivateKeyDer::Sec1(der.into()),
                "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(der.into()),
                "ENCRYPTED PRIVATE KEY" => {
                    let pass = passphrase.ok_or(TlsError::PassphraseNeeded)?;
                    PrivateKeyDer::Pkcs8(decrypt_pkcs8(&der, pass)?.into())
                }
                _ => continue,
            };
            keys.push(key);
        }
        let key = match keys.len() {
            0 => return Err(TlsError::NoKey),
            1 => keys.remove(0),
            _ => return Err(TlsError::SeveralKeys),
        };
        // Building the server configuration loads the key and checks it against the leaf
        // certificate: an identity that exists is one rustls can serve.
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch,
                other => TlsError::Unusable(other),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Identity {
            chain,
            key,
            config: Arc::new(config),
        })
    }

    /// The rustls server configuration for this identity.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    fn key_pem(&self) -> String {
        let (label, der) = match &self.key {
            PrivateKeyDer::Pkcs8(k) => ("PRIVATE KEY", k.secret_pkcs8_der()),
            PrivateKeyDer::Sec1(k) => ("EC PRIVATE KEY", k.secret_sec1_der()),
            PrivateKeyDer::Pkcs1(k) => ("RSA PRIVATE KEY", k.secret_pkcs1_der()),
            _ => ("PRIVATE KEY", &[][..]),
        };
        pem(label, der)
    }

    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| pem("CERTIFICATE", c)).collect()
    }

    /// The key as PEM, encrypted with `passphrase` if given (PKCS#8 keys only).
    pub fn export_key(&self, passphrase: Option<&str>) -> Result<String, TlsError> {
        let Some(pass) = passphrase else {
            return Ok(self.key_pem());
        };
        let PrivateKeyDer::Pkcs8(k) = &self.key else {
            return Err(TlsError::NotPkcs8);
        };
        Ok(pem(
            "ENCRYPTED PRIVATE KEY",
            &encrypt_pkcs8(k.secret_pkcs8_der(), pass)?,
        ))
    }

    fn file_text(&self) -> String {
        format!("{}{}", self.key_pem(), self.chain_pem())
    }

    /// SHA-256 of the leaf certificate, as colon-separated hex (what clients pin).
    pub fn fingerprint(&self) -> String {
        self.chain
            .first()
            .map(|c| fingerprint(c))
            .unwrap_or_default()
    }

    /// Details of the leaf certificate.
    pub fn info(&self) -> Result<crate::model::CertificateInfo, TlsError> {
        let leaf = self.chain.first().ok_or(TlsError::NoCertificate)?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| TlsError::Parse(e.to_string()))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(b) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*b) {
                            names.push(std::net::Ipv4Addr::from(a).to_string());
                        } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                            names.push(std::net::Ipv6Addr::from(a).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(crate::model::CertificateInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            subject_alt_names: names,
            not_before_unix: cert.validity().not_before.timestamp(),
            not_after_unix: cert.validity().not_after.timestamp(),
            self_signed: cert.subject() == cert.issuer(),
            chain_length: self.chain.len(),
            sha256_fingerprint: self.fingerprint(),
        })
    }
}

/// SHA-256 of a DER certificate as colon-separated lowercase hex: what clients pin and
/// what status shows.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn pem(label: &str, der: &[u8]) -> String {
    pkcs8::der::pem::encode_string(label, pkcs8::der::pem::LineEnding::LF, der).unwrap_or_default()
}

/// Every PEM block in `text`, as (label, DER); blocks that do not decode are skipped.
fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let Some(end_at) = rest[start..].find("-----END ") else {
            break;
        };
        let end_line = rest[start + end_at..]
            .find('\n')
            .map(|i| start + end_at + i + 1)
            .unwrap_or(rest.len());
        if let Ok((label, der)) = pkcs8::der::pem::decode_vec(&rest.as_bytes()[start..end_line]) {
            out.push((label.to_string(), der));
        }
        rest = &rest[end_line..];
    }
    out
}

fn decrypt_pkcs8(der: &[u8], passphrase: &str) -> Result<Vec<u8>, TlsError> {
    use pkcs8::der::Decode;
    let enc =
        pkcs8::EncryptedPrivateKeyInfoRef::from_der(der).map_err(|_| TlsError::BadPassphrase)?;
    let doc = enc
        .decrypt(passphrase.as_bytes())
        .map_err(|_| TlsError::BadPassphrase)?;
    Ok(doc.as_bytes().to_vec())
}

fn encrypt_pkcs8(der: &[u8], passphrase: &str) -> Result<Vec<u8>, TlsError> {
    use pkcs8::der::Decode;
    use ring::rand::SecureRandom;
    let (mut salt, mut iv) = ([0u8; 16], [0u8; 16]);
    let rng = ring::rand::SystemRandom::new();
    rng.fill(&mut salt)
        .and_then(|()| rng.fill(&mut iv))
        .map_err(|_| TlsError::Encrypt("no randomness".into()))?;
    let params = pkcs8::pkcs5::pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(
        EXPORT_PBKDF2_ROUNDS,
        &salt,
        iv,
    )
    .map_err(|e| TlsError::Encrypt(e.to_string()))?;
    let info =
        pkcs8::PrivateKeyInfoRef::from_der(der).map_err(|e| TlsError::Encrypt(e.to_string()))?;
    let doc = info
        .encrypt_with_params(params, passphrase.as_bytes())
        .map_err(|e| TlsError::Encrypt(e.to_string()))?;
    Ok(doc.as_bytes().to_vec())
}

/// Makes a self-signed certificate for the appliance (ECDSA P-256, valid ten years).
fn generate(hostname: &str) -> Result<Identity, TlsError> {
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
    Identity::from_pem(&cert.pem(), &key.serialize_pem(), None)
}

/// Where the identity lives.
pub fn identity_path(dir: &Path) -> PathBuf {
    dir.join(IDENTITY_FILE)
}

/// Loads the identity, generating a self-signed one first if there is none. A file that
/// is there but not a usable identity is an error and stays as it is.
pub fn load_or_generate(dir: &Path, hostname: &str) -> Result<(Identity, Origin), TlsError> {
    let text = store::read_if_present(&identity_path(dir)).map_err(|e| TlsError::Read {
        path: e.path,
        source: e.source,
    })?;
    match text {
        Some(text) => Ok((Identity::from_pem(&text, &text, None)?, Origin::Loaded)),
        None => {
            let identity = generate(hostname)?;
            save(dir, &identity)?;
            Ok((identity, Origin::Generated))
        }
    }
}

/// Replaces the stored identity (one atomic write).
pub fn save(dir: &Path, identity: &Identity) -> Result<(), TlsError> {
    store::replace(&identity_path(dir), identity.file_text().as_bytes(), 0o600)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    #[test]
    fn generates_once_then_loads_the_same_identity() {
        provider();
        let dir = tempfile::tempdir().unwrap();
        let (first, origin) = load_or_generate(dir.path(), "appliance").unwrap();
        assert_eq!(origin, Origin::Generated);
        let (again, origin) = load_or_generate(dir.path(), "appliance").unwrap();
        assert_eq!(origin, Origin::Loaded);
        assert_eq!(first.fingerprint(), again.fingerprint());
        let info = again.info().unwrap();
        assert!(info.self_signed);
        assert!(
            info.subject_alt_names.contains(&"169.254.1.1".to_string()),
            "{:?}",
            info.subject_alt_names
        );
        assert!(info.not_after_unix > info.not_before_unix + 9 * 365 * 86_400);
    }

    #[test]
    fn a_corrupt_identity_is_reported_not_replaced() {
        provider();
        let dir = tempfile::tempdir().unwrap();
        load_or_generate(dir.path(), "appliance").unwrap();
        std::fs::write(identity_path(dir.path()), "garbage").unwrap();
        assert!(matches!(
            load_or_generate(dir.path(), "appliance"),
            Err(TlsError::NoCertificate)
        ));
        assert_eq!(
            std::fs::read(identity_path(dir.path())).unwrap(),
            b"garbage"
        );
    }

    #[test]
    fn export_with_a_passphrase_imports_back_only_with_it() {
        provider();
        let dir = tempfile::tempdir().unwrap();
        let (id, _) = load_or_generate(dir.path(), "appliance").unwrap();
        let key = id.export_key(Some("s3cret pass")).unwrap();
        assert!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        let chain = id.chain_pem();
        assert!(matches!(
            Identity::from_pem(&chain, &key, None),
            Err(TlsError::PassphraseNeeded)
        ));
        assert!(matches!(
            Identity::from_pem(&chain, &key, Some("wrong")),
            Err(TlsError::BadPassphrase)
        ));
        let back = Identity::from_pem(&chain, &key, Some("s3cret pass")).unwrap();
        assert_eq!(back.fingerprint(), id.fingerprint());
        let plain = Identity::from_pem(&chain, &id.export_key(None).unwrap(), None).unwrap();
        assert_eq!(plain.fingerprint(), id.fingerprint());
    }

    #[test]
    fn a_key_from_another_certificate_is_refused() {
        provider();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (ida, _) = load_or_generate(a.path(), "a").unwrap();
        let (idb, _) = load_or_generate(b.path(), "b").unwrap();
        let mixed = Identity::from_pem(&ida.chain_pem(), &idb.export_key(None).unwrap(), None);
        assert!(matches!(mixed, Err(TlsError::KeyMismatch)));
        assert!(matches!(
            Identity::from_pem("", &ida.export_key(None).unwrap(), None),
            Err(TlsError::NoCertificate)
        ));
        assert!(matches!(
            Identity::from_pem(&ida.chain_pem(), "", None),
            Err(TlsError::NoKey)
        ));
    }
}
