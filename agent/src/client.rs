//! An HTTPS client for the appliance's API, with certificate pinning: what `appliancectl`
//! speaks, and what an appliance uses to reach its failover peer.
//!
//! A fresh appliance has a self-signed certificate, so there is no authority to check it
//! against. Like ssh, the first contact records the certificate's SHA-256 fingerprint in
//! the known-hosts file (`$APPLIANCECTL_KNOWN_HOSTS`, else
//! `~/.config/appliancectl/known_hosts`), and every later contact must present the same
//! certificate. `--fingerprint` pins one explicitly; `--insecure` checks nothing.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MAX_RESPONSE: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error("{target} did not answer within {timeout:?}")]
    Timeout { target: String, timeout: Duration },
    #[error("TLS with {target} failed: {source}")]
    Tls {
        target: String,
        source: std::io::Error,
    },
    #[error(
        "the certificate of {target} has changed (was {expected}, now {seen}); if the appliance \
         was reset or its certificate replaced, remove its line from {file} and try again"
    )]
    CertificateChanged {
        target: String,
        expected: String,
        seen: String,
        file: String,
    },
    #[error("HTTP exchange with {target} failed: {source}")]
    Http {
        target: String,
        source: hyper::Error,
    },
    #[error("the answer from {target} is too large or broken")]
    Body { target: String },
    #[error("bad host {0:?}")]
    BadHost(String),
    #[error("cannot update {path}: {source}")]
    KnownHosts {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the server's certificate is checked.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Trust on first use, recorded in this file.
    KnownHosts(PathBuf),
    /// This SHA-256 fingerprint (hex, colons optional) only.
    Fingerprint(String),
    /// Anything.
    Insecure,
}

impl Trust {
    pub fn default_known_hosts() -> PathBuf {
        if let Some(p) = std::env::var_os("APPLIANCECTL_KNOWN_HOSTS") {
            return PathBuf::from(p);
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        PathBuf::from(home).join(".config/appliancectl/known_hosts")
    }
}

pub use crate::tls::fingerprint;

fn normalize(fp: &str) -> String {
    let hex: String = fp
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_lowercase();
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// Accepts a certificate when it matches `expected` (or anything when `None`), and
/// remembers the fingerprint it saw.
#[derive(Debug)]
struct Pin {
    expected: Option<String>,
    seen: Mutex<Option<String>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(fp.clone());
        match &self.expected {
            Some(e) if *e != fp => Err(rustls::Error::General(
                "certificate fingerprint mismatch".into(),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
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

/// A TLS client configuration that accepts any server certificate, for clients that
/// speak raw HTTP over TLS (the tests of partial requests).
pub fn insecure_tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    any_certificate(rustls::DEFAULT_VERSIONS)
}

/// The TLS configuration of the failover peer link: TLS 1.3 only (its exporter is what
/// the key proof binds), any certificate (the key proof authenticates the peer, and a
/// machine in the middle with its own certificate cannot make it).
pub fn peer_tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    any_certificate(&[&rustls::version::TLS13])
}

fn any_certificate(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pin = Arc::new(Pin {
        expected: None,
        seen: Mutex::new(None),
        provider: provider.clone(),
    });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .dangerous()
        .with_custom_certificate_verifier(pin)
        .with_no_client_auth())
}

fn known_hosts_lookup(path: &PathBuf, target: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(t, _)| *t == target)
        .map(|(_, fp)| normalize(fp))
}

fn known_hosts_add(path: &PathBuf, target: &str, fp: &str) -> Result<(), ClientError> {
    use std::io::Write;
    let wrap = |source| ClientError::KnownHosts {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(wrap)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(wrap)?;
    writeln!(f, "{target} {fp}").map_err(wrap)
}

/// One API endpoint: host, port and how to trust it.
pub struct Client {
    pub host: String,
    pub port: u16,
    pub trust: Trust,
    pub timeout: Duration,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// A response: status and body.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// SHA-256 fingerprint of the certificate the appliance presented.
    pub fingerprint: String,
}

impl Client {
    /// `host:port`, as the known-hosts and sessions files name the appliance.
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Sends one request (JSON body if given) and returns the answer.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let target = self.target();
        tokio::time::timeout(self.timeout, self.exchange(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout {
                target,
                timeout: self.timeout,
            })?
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let (mut sender, fingerprint) = self.connect().await?;
        let mut req = self.head(method, path);
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let body = Full::new(Bytes::from(body.unwrap_or_default()))
            .map_err(|never| match never {})
            .boxed();
        let req = req
            .body(body)
            .map_err(|_| ClientError::BadHost(self.host.clone()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|source| ClientError::Http {
                target: self.target(),
                source,
            })?;
        let status = resp.status().as_u16();
        let body = read_limited(resp.into_body(), &self.target()).await?;
        Ok(Answer {
            status,
            body,
            fingerprint,
        })
    }

    /// Sends one request whose body streams from `body` (`length` bytes of
    /// `application/octet-stream`, if any) and returns the response with its body unread,
    /// for transfers too large to hold in memory. Only connecting is bounded by the
    /// timeout: a transfer that keeps moving may take as long as it needs.
    pub async fn stream(
        &self,
        method: &str,
        path: &str,
        body: Option<(StreamBody, u64)>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let target = self.target();
        let (mut sender, _) = tokio::time::timeout(self.timeout, self.connect())
            .await
            .map_err(|_| ClientError::Timeout {
                target: target.clone(),
                timeout: self.timeout,
            })??;
        let mut req = self.head(method, path);
        let body = match body {
            Some((body, length)) => {
                req = req
                    .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
                    .header(hyper::header::CONTENT_LENGTH, length);
                body
            }
            None => Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        };
        let req = req
            .body(body)
            .map_err(|_| ClientError::BadHost(self.host.clone()))?;
        sender
            .send_request(req)
            .await
            .map_err(|source| ClientError::Http { target, source })
    }

    /// A request's method, path and the headers every request carries.
    fn head(&self, method: &str, path: &str) -> hyper::http::request::Builder {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.target())
            .header(
                hyper::header::USER_AGENT,
                concat!("appliancectl/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        req
    }

    /// A TLS connection with the certificate checked as [`Trust`] says, and HTTP/1.1 over
    /// it: the sender and the certificate's fingerprint.
    async fn connect(
        &self,
    ) -> Result<(hyper::client::conn::http1::SendRequest<StreamBody>, String), ClientError> {
        let target = self.target();
        let (expected, record_in) = match &self.trust {
            Trust::Insecure => (None, None),
            Trust::Fingerprint(fp) => (Some(normalize(fp)), None),
            Trust::KnownHosts(file) => {
                let known = known_hosts_lookup(file, &target);
                let record = known.is_none().then(|| file.clone());
                (known, record)
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pin = Arc::new(Pin {
            expected: expected.clone(),
            seen: Mutex::new(None),
            provider: provider.clone(),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls {
                target: target.clone(),
                source: std::io::Error::other(e),
            })?
            .dangerous()
            .with_custom_certificate_verifier(pin.clone())
            .with_no_client_auth();
        let server_name = ServerName::try_from(self.host.clone())
            .map_err(|_| ClientError::BadHost(self.host.clone()))?;
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| ClientError::Connect {
                target: target.clone(),
                source,
            })?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tls = match connector.connect(server_name, tcp).await {
            Ok(t) => t,
            Err(source) => {
                let seen = pin.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let (Some(expected), Some(seen)) = (expected, seen) {
                    if expected != seen {
                        let file = match &self.trust {
                            Trust::KnownHosts(f) => f.display().to_string(),
                            _ => "--fingerprint".to_string(),
                        };
                        return Err(ClientError::CertificateChanged {
                            target,
                            expected,
                            seen,
                            file,
                        });
                    }
                }
                return Err(ClientError::Tls { target, source });
            }
        };
        let fingerprint = pin
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        if let Some(file) = record_in {
            known_hosts_add(&file, &target, &fingerprint)?;
            eprintln!(
                "note: trusting the certificate of {target} from now on (sha256 {fingerprint})"
            );
        }
        let io = hyper_util::rt::TokioIo::new(tls);
        let http = |source| ClientError::Http {
            target: target.clone(),
            source,
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(http)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((sender, fingerprint))
    }
}

/// A streamed request body.
pub type StreamBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Reads a whole response body of at most [`MAX_RESPONSE`] bytes.
pub async fn read_limited(body: hyper::body::Incoming, target: &str) -> Result<Bytes, ClientError> {
    Ok(Limited::new(body, MAX_RESPONSE)
        .collect()
        .await
        .map_err(|_| ClientError::Body {
            target: target.to_string(),
        })?
        .to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_normalize() {
        assert_eq!(normalize("AB:cd:01"), "ab:cd:01");
        assert_eq!(normalize("abcd01"), "ab:cd:01");
    }

    #[test]
    fn known_hosts_records_and_finds() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub/known_hosts");
        assert_eq!(known_hosts_lookup(&f, "169.254.1.1:443"), None);
        known_hosts_add(&f, "169.254.1.1:443", "aa:bb").unwrap();
        known_hosts_add(&f, "169.254.1.2:443", "cc:dd").unwrap();
        assert_eq!(
            known_hosts_lookup(&f, "169.254.1.2:443").as_deref(),
            Some("cc:dd")
        );
    }
}
