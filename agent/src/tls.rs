//! The HTTPS identity: a certificate chain and its private key, kept together in one
//! file, `<data>/config/tls/identity.pem` (mode 0600), so that one atomic write replaces
//! both and a power cut can never pair a new certificate with an old key.
//!
//! On first boot a self-signed certificate is made (ECDSA P-256, ten years). An
//! administrator can import a chain and key (PEM; the key plain or passphrase-protected
//! PKCS#8) and export them again, protected by a passphrase (PKCS#8 with PBES2:
//! PBKDF2-SHA256 with [`EXPORT_PBKDF2_ROUNDS`] rounds, as OWASP advises, and AES-256-CBC),
//! or in plain text only when asked for explicitly ([`export_protection`]): the failover
//! pair needs identical certificates.
//!
//! Imported PEM is read strictly: only whitespace outside the blocks, only the block types
//! below, every block must decode; anything else is refused, never skipped. An encrypted
//! key's cost parameters are chosen by whoever made it, so they are bounded before any
//! work: PBKDF2 at most [`MAX_IMPORT_PBKDF2_ROUNDS`] rounds; scrypt N at most
//! 2^[`MAX_IMPORT_SCRYPT_LOG_N`], memory (128·N·r) at most [`MAX_IMPORT_SCRYPT_MEMORY`]
//! bytes, p at most [`MAX_IMPORT_SCRYPT_P`]. PBES1 (DES, RC2) is refused.
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
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const IDENTITY_FILE: &str = "identity.pem";
/// PBKDF2-SHA256 rounds for exported keys (OWASP's figure for PBKDF2-HMAC-SHA256).
pub const EXPORT_PBKDF2_ROUNDS: u32 = 600_000;
/// The most PBKDF2 rounds an imported key may ask for.
pub const MAX_IMPORT_PBKDF2_ROUNDS: u32 = 10_000_000;
/// The largest scrypt N (as log2) an imported key may ask for.
pub const MAX_IMPORT_SCRYPT_LOG_N: u32 = 20;
/// The most memory (128·N·r bytes) scrypt may need for an imported key.
pub const MAX_IMPORT_SCRYPT_MEMORY: u64 = 64 * 1024 * 1024;
/// The largest scrypt parallelisation p an imported key may ask for.
pub const MAX_IMPORT_SCRYPT_P: u64 = 16;
/// The shortest export passphrase.
pub const MIN_PASSPHRASE: usize = 8;
/// The PEM block types an identity may hold.
const KNOWN_BLOCKS: &[&str] = &[
    "CERTIFICATE",
    "PRIVATE KEY",
    "EC PRIVATE KEY",
    "RSA PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
];

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
    #[error("give a passphrase to protect the exported key, or ask for it unprotected with \"unencrypted\": true")]
    PassphraseRequired,
    #[error("a passphrase and \"unencrypted\": true contradict each other: give one of them")]
    PassphraseAndUnencrypted,
    #[error("the passphrase must have at least {MIN_PASSPHRASE} characters")]
    PassphraseTooShort,
    #[error("the PEM text is malformed at line {line}: {reason}")]
    MalformedPem { line: usize, reason: String },
    #[error(
        "unknown PEM block type {0:?} (this takes CERTIFICATE and private keys only): remove it"
    )]
    UnknownPemBlock(String),
    #[error("the encrypted key asks for {what}, over the limit of {limit}: re-encrypt it with cheaper parameters")]
    KdfTooCostly { what: String, limit: String },
    #[error("the encrypted key uses {0}, which is not supported: re-encrypt it with PBES2 (openssl pkcs8 -topk8 -v2 aes-256-cbc)")]
    UnsupportedEncryption(String),
}

/// How an exported key is protected: by `passphrase`, or (only when `unencrypted` is
/// asked for and no passphrase is given) not at all. Returns the passphrase to use.
pub fn export_protection(
    passphrase: Option<&str>,
    unencrypted: bool,
) -> Result<Option<&str>, TlsError> {
    match (passphrase, unencrypted) {
        (Some(_), true) => Err(TlsError::PassphraseAndUnencrypted),
        (None, false) => Err(TlsError::PassphraseRequired),
        (None, true) => Ok(None),
        (Some(p), false) if p.chars().count() < MIN_PASSPHRASE => Err(TlsError::PassphraseTooShort),
        (Some(p), false) => Ok(Some(p)),
    }
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
        // One text may hold both (the identity file does): certificates are taken from
        // the chain text, keys from the key text, and each text must be well formed whole.
        let chain: Vec<CertificateDer<'static>> = pem_blocks(chain_pem)?
            .into_iter()
            .filter(|(label, _)| label == "CERTIFICATE")
            .map(|(_, der)| CertificateDer::from(der))
            .collect();
        if chain.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let mut keys = Vec::new();
        for (label, der) in pem_blocks(key_pem)? {
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

/// Every PEM block in `text`, as (label, DER), in order. Only whitespace may stand
/// outside the blocks, every block must be of a known type and decode.
fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, TlsError> {
    let malformed = |line: usize, reason: &str| TlsError::MalformedPem {
        line,
        reason: reason.to_string(),
    };
    let mut out = Vec::new();
    // The open block: its first line number, label and lines so far.
    let mut open: Option<(usize, String, Vec<&str>)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (n, line) = (i + 1, raw.trim());
        match open.as_mut() {
            None if line.is_empty() => {}
            None => {
                let label = line
                    .strip_prefix("-----BEGIN ")
                    .and_then(|l| l.strip_suffix("-----"))
                    .ok_or_else(|| malformed(n, "text outside a PEM block"))?;
                if !KNOWN_BLOCKS.contains(&label) {
                    return Err(TlsError::UnknownPemBlock(label.chars().take(64).collect()));
                }
                open = Some((n, label.to_string(), vec![line]));
            }
            Some((start, label, lines)) => {
                lines.push(line);
                if !line.starts_with("-----END ") {
                    continue;
                }
                if line != format!("-----END {label}-----") {
                    return Err(malformed(n, "the END line does not match the BEGIN line"));
                }
                let block = lines.join("\n") + "\n";
                let (decoded_label, der) = pkcs8::der::pem::decode_vec(block.as_bytes())
                    .map_err(|e| malformed(*start, &format!("the block does not decode: {e}")))?;
                if decoded_label != label.as_str() {
                    return Err(malformed(*start, "the block does not decode"));
                }
                out.push((label.clone(), der));
                open = None;
            }
        }
    }
    if let Some((start, label, _)) = open {
        return Err(malformed(
            start,
            &format!("the {label} block has no END line"),
        ));
    }
    Ok(out)
}

/// Refuses an encrypted key whose key derivation would cost more than the bounds.
fn check_kdf_cost(scheme: &pkcs8::pkcs5::EncryptionScheme) -> Result<(), TlsError> {
    use pkcs8::pkcs5::pbes2::Kdf;
    let too_costly = |what: String, limit: String| Err(TlsError::KdfTooCostly { what, limit });
    let Some(pbes2) = scheme.pbes2() else {
        return Err(TlsError::UnsupportedEncryption(format!(
            "PBES1 ({})",
            scheme.oid()
        )));
    };
    match &pbes2.kdf {
        Kdf::Pbkdf2(p) if p.iteration_count > MAX_IMPORT_PBKDF2_ROUNDS => too_costly(
            format!("{} PBKDF2 rounds", p.iteration_count),
            format!("{MAX_IMPORT_PBKDF2_ROUNDS} rounds"),
        ),
        Kdf::Pbkdf2(_) => Ok(()),
        Kdf::Scrypt(p) => {
            let n = p.cost_parameter;
            let (r, par) = (u64::from(p.block_size), u64::from(p.parallelization));
            let memory = 128u64.saturating_mul(n).saturating_mul(r);
            if n > 1 << MAX_IMPORT_SCRYPT_LOG_N {
                too_costly(
                    format!("scrypt N = {n}"),
                    format!("N = 2^{MAX_IMPORT_SCRYPT_LOG_N}"),
                )
            } else if memory > MAX_IMPORT_SCRYPT_MEMORY {
                too_costly(
                    format!("{memory} bytes of scrypt memory (N = {n}, r = {r})"),
                    format!("{MAX_IMPORT_SCRYPT_MEMORY} bytes"),
                )
            } else if par > MAX_IMPORT_SCRYPT_P {
                too_costly(
                    format!("scrypt p = {par}"),
                    format!("p = {MAX_IMPORT_SCRYPT_P}"),
                )
            } else {
                Ok(())
            }
        }
        other => Err(TlsError::UnsupportedEncryption(format!(
            "the key derivation {}",
            other.oid()
        ))),
    }
}

fn decrypt_pkcs8(der: &[u8], passphrase: &str) -> Result<Vec<u8>, TlsError> {
    use pkcs8::der::Decode;
    let enc =
        pkcs8::EncryptedPrivateKeyInfoRef::from_der(der).map_err(|_| TlsError::BadPassphrase)?;
    check_kdf_cost(&enc.encryption_algorithm)?;
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
            Err(TlsError::MalformedPem { line: 1, .. })
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
        {
            use pkcs8::der::Decode;
            let (_, der) = pkcs8::der::pem::decode_vec(key.as_bytes()).unwrap();
            let enc = pkcs8::EncryptedPrivateKeyInfoRef::from_der(&der).unwrap();
            let kdf = &enc.encryption_algorithm.pbes2().unwrap().kdf;
            assert_eq!(kdf.pbkdf2().unwrap().iteration_count, 600_000, "OWASP");
        }
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

    /// The key of `id`, encrypted, with its key derivation replaced by `kdf` (the
    /// ciphertext no longer matches: the bound must refuse it before any decryption).
    fn with_kdf(key: &str, kdf: pkcs8::pkcs5::pbes2::Kdf) -> String {
        use pkcs8::der::{Decode, Encode};
        let (_, der) = pkcs8::der::pem::decode_vec(key.as_bytes()).unwrap();
        let mut enc = pkcs8::EncryptedPrivateKeyInfoRef::from_der(&der).unwrap();
        let pkcs8::pkcs5::EncryptionScheme::Pbes2(mut params) = enc.encryption_algorithm else {
            panic!("PBES2 expected");
        };
        params.kdf = kdf;
        enc.encryption_algorithm = params.into();
        pem("ENCRYPTED PRIVATE KEY", &enc.to_der().unwrap())
    }

    #[test]
    fn a_plain_key_export_must_be_asked_for() {
        assert!(matches!(
            export_protection(None, false),
            Err(TlsError::PassphraseRequired)
        ));
        assert!(matches!(export_protection(None, true), Ok(None)));
        assert!(matches!(
            export_protection(Some("s3cret pass"), true),
            Err(TlsError::PassphraseAndUnencrypted)
        ));
        assert!(matches!(
            export_protection(Some("short"), false),
            Err(TlsError::PassphraseTooShort)
        ));
        assert_eq!(
            export_protection(Some("s3cret pass"), false).unwrap(),
            Some("s3cret pass")
        );
    }

    #[test]
    fn imported_key_derivations_over_the_bounds_are_refused() {
        use pkcs8::pkcs5::pbes2::{Kdf, Pbkdf2Params, ScryptParams};
        use pkcs8::pkcs5::scrypt::Params;
        provider();
        let dir = tempfile::tempdir().unwrap();
        let (id, _) = load_or_generate(dir.path(), "appliance").unwrap();
        let salt = [7u8; 16];
        let chain = id.chain_pem();
        let key = id.export_key(Some("s3cret pass")).unwrap();
        let refused =
            |kdf: Kdf| Identity::from_pem(&chain, &with_kdf(&key, kdf), Some("s3cret pass"));

        let pbkdf2 = |rounds| Kdf::Pbkdf2(Pbkdf2Params::hmac_sha256(rounds, &salt).unwrap());
        assert!(matches!(
            refused(pbkdf2(MAX_IMPORT_PBKDF2_ROUNDS + 1)),
            Err(TlsError::KdfTooCostly { .. })
        ));
        // At the bound the derivation is allowed (cheaply shown: it only fails to open).
        assert!(matches!(
            refused(pbkdf2(1000)),
            Err(TlsError::BadPassphrase)
        ));

        let scrypt = |log_n, r, p| {
            Kdf::Scrypt(
                ScryptParams::from_params_and_salt(Params::new(log_n, r, p).unwrap(), &salt)
                    .unwrap(),
            )
        };
        for (log_n, r, p) in [(21, 1, 1), (20, 8, 1), (17, 8, 1), (10, 1, 17)] {
            assert!(
                matches!(
                    refused(scrypt(log_n, r, p)),
                    Err(TlsError::KdfTooCostly { .. })
                ),
                "N = 2^{log_n}, r = {r}, p = {p}"
            );
        }
        // openssl's default (N = 2^14, r = 8, p = 1: 16 MiB) is allowed.
        assert!(matches!(
            refused(scrypt(14, 8, 1)),
            Err(TlsError::BadPassphrase)
        ));
    }

    #[test]
    fn malformed_pem_is_refused_not_skipped() {
        provider();
        let dir = tempfile::tempdir().unwrap();
        let (id, _) = load_or_generate(dir.path(), "appliance").unwrap();
        let (chain, key) = (id.chain_pem(), id.export_key(None).unwrap());
        assert!(Identity::from_pem(&chain, &key, None).is_ok());
        // Windows line ends and blank lines between blocks are fine.
        let crlf = format!("\r\n{}\r\n", chain.replace('\n', "\r\n"));
        assert!(Identity::from_pem(&crlf, &key, None).is_ok());

        let malformed =
            |r: Result<Identity, TlsError>| matches!(r, Err(TlsError::MalformedPem { .. }));
        assert!(malformed(Identity::from_pem(
            &format!("{chain}garbage\n"),
            &key,
            None
        )));
        assert!(malformed(Identity::from_pem(
            &chain,
            &format!("note\n{key}"),
            None
        )));
        let lines: Vec<&str> = chain.lines().collect();
        let truncated = lines[..lines.len() - 1].join("\n");
        assert!(
            malformed(Identity::from_pem(&truncated, &key, None)),
            "no END line"
        );
        let damaged = chain.replacen("MII", "M!I", 1);
        assert!(
            malformed(Identity::from_pem(&damaged, &key, None)),
            "does not decode"
        );
        let mismatched = chain.replace("END CERTIFICATE", "END PRIVATE KEY");
        assert!(malformed(Identity::from_pem(&mismatched, &key, None)));
        let params =
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
        assert!(matches!(
            Identity::from_pem(&chain, &format!("{params}{key}"), None),
            Err(TlsError::UnknownPemBlock(l)) if l == "EC PARAMETERS"
        ));
        // The identity file (key and chain in one text) still loads.
        assert!(Identity::from_pem(&id.file_text(), &id.file_text(), None).is_ok());
    }
}
