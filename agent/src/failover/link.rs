//! The client end of the peer channel: one kept-alive HTTPS connection (TLS 1.3) to the
//! peer, every request proved with the inter-appliance key over that session's exporter
//! and every answer's proof checked (see [`super::wire`]). A failed exchange drops the
//! connection; the next call opens a new one.

use super::proof::{self, Side, EXPORTER_LEN};
use super::wire::{self, Endpoint};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// Largest answer read from the peer.
const MAX_ANSWER: usize = 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// No connection, no answer in time, or a broken exchange.
    #[error("{0}")]
    Unreachable(String),
    /// The peer does not hold our key (or is not who it says).
    #[error("the peer does not hold the same inter-appliance key")]
    KeyMismatch,
    /// The peer answered with an error of its own.
    #[error("the peer refused: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// The answer made no sense.
    #[error("the peer's answer is not understood: {0}")]
    Protocol(String),
}

struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    exporter: [u8; EXPORTER_LEN],
}

/// A link to one peer with one key.
pub struct PeerLink {
    endpoint: Endpoint,
    key: Vec<u8>,
    conn: Option<Conn>,
}

impl PeerLink {
    pub fn new(endpoint: Endpoint, key: &[u8]) -> PeerLink {
        PeerLink {
            endpoint,
            key: key.to_vec(),
            conn: None,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// One request, its answer parsed as `T`, within `timeout` (connecting included).
    pub async fn call<T: DeserializeOwned>(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<T, LinkError> {
        let outcome = tokio::time::timeout(timeout, self.exchange(method, path, body)).await;
        let bytes = self.settle(outcome, timeout)?;
        serde_json::from_slice(&bytes).map_err(|e| LinkError::Protocol(e.to_string()))
    }

    async fn connect(&self) -> Result<Conn, LinkError> {
        let unreachable = |what: &str, e: &dyn std::fmt::Display| {
            LinkError::Unreachable(format!("{what} {}: {e}", self.endpoint))
        };
        let config = crate::client::peer_tls_config().map_err(|e| unreachable("TLS with", &e))?;
        let host = self.endpoint.host.split('%').next().unwrap_or_default();
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| unreachable("bad host", &e))?;
        let tcp = tokio::net::TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(|e| unreachable("cannot connect to", &e))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| unreachable("TLS with", &e))?;
        let exporter =
            proof::exporter(tls.get_ref().1).map_err(|e| LinkError::Protocol(e.to_string()))?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| unreachable("HTTP with", &e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender, exporter })
    }

    /// Sends one request and checks the answer's proof; a refusal (not 2xx) comes back
    /// as [`LinkError::Refused`]. The body of a good answer is left to the caller to
    /// stream (a data sync reads gigabytes this way); the connection stays busy until it
    /// is read or dropped.
    pub async fn open(
        &mut self,
        method: &str,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
        timeout: std::time::Duration,
    ) -> Result<hyper::body::Incoming, LinkError> {
        let outcome = tokio::time::timeout(timeout, self.send(method, path, body)).await;
        self.settle(outcome, timeout)
    }

    /// The outcome of an exchange run under `timeout`; a failure drops the connection.
    fn settle<T>(
        &mut self,
        outcome: Result<Result<T, LinkError>, tokio::time::error::Elapsed>,
        timeout: Duration,
    ) -> Result<T, LinkError> {
        let result = outcome.unwrap_or_else(|_| {
            Err(LinkError::Unreachable(format!(
                "no answer from {} within {} ms",
                self.endpoint,
                timeout.as_millis()
            )))
        });
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Forgets the connection (after a stream was abandoned half read).
    pub fn reset(&mut self) {
        self.conn = None;
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<hyper::body::Incoming, LinkError> {
        if self.conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
            self.conn = Some(self.connect().await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(LinkError::Unreachable("no connection".into()));
        };
        let exporter = conn.exporter;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.endpoint.to_string())
            .header(
                wire::PROOF_HEADER,
                wire::proof_hex(&self.key, &exporter, Side::Client, method, path),
            );
        let bytes = match body {
            Some((bytes, content_type)) => {
                req = req.header(hyper::header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Vec::new(),
        };
        let req = req
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| LinkError::Protocol(e.to_string()))?;
        conn.sender
            .ready()
            .await
            .map_err(|e| LinkError::Unreachable(e.to_string()))?;
        let res = conn
            .sender
            .send_request(req)
            .await
            .map_err(|e| LinkError::Unreachable(format!("{}: {e}", self.endpoint)))?;
        let status = res.status().as_u16();
        let header = res
            .headers()
            .get(wire::PROOF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let proved = wire::check(
            &self.key,
            &exporter,
            Side::Server,
            method,
            path,
            header.as_deref(),
        );
        if !proved {
            // Whatever it says, an answer without the server's proof is not the peer's.
            return Err(LinkError::KeyMismatch);
        }
        if !(200..300).contains(&status) {
            let bytes = Limited::new(res.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| LinkError::Unreachable(format!("{}: {e}", self.endpoint)))?
                .to_bytes();
            let (code, message) = serde_json::from_slice::<crate::model::ErrorBody>(&bytes)
                .map(|e| (e.error.code, e.error.message))
                .unwrap_or_else(|_| ("unknown".into(), String::from_utf8_lossy(&bytes).into()));
            return Err(LinkError::Refused {
                status,
                code,
                message,
            });
        }
        Ok(res.into_body())
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, LinkError> {
        let body = self
            .send(method, path, body.map(|b| (b, "application/json")))
            .await?;
        Ok(Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| LinkError::Unreachable(format!("{}: {e}", self.endpoint)))?
            .to_bytes())
    }
}
