//! What the two appliances say to each other on `/peer/v1`, and how each request and
//! answer carries its key proof.
//!
//! Every request carries [`PROOF_HEADER`]: the client's proof ([`super::proof::proof`],
//! [`Side::Client`]) over the TLS session's exporter and [`context`] (method and path), and
//! every answer the server's ([`Side::Server`]) over the same. The key never crosses the
//! wire; a proof recorded on one connection is worthless on another (its exporter
//! differs); a machine in the middle holds two sessions with two exporters and can make
//! neither proof. A server that cannot check the proof (wrong key) answers 401
//! `key_mismatch` with no proof of its own.

use super::proof::{self, Side, EXPORTER_LEN};
use super::role::{PeerCommand, Role};
use serde::{Deserialize, Serialize};

/// The header that carries a proof, in hex.
pub const PROOF_HEADER: &str = "appliance-peer-proof";
/// The peer channel's prefix.
pub const PREFIX: &str = "/peer/v1";
pub const STATE: &str = "/peer/v1/state";
pub const RELATIONSHIP: &str = "/peer/v1/relationship";
pub const COMMAND: &str = "/peer/v1/command";

/// What a proof binds besides the session: the request's method and path.
pub fn context(method: &str, path: &str) -> Vec<u8> {
    let mut c = Vec::with_capacity(method.len() + path.len() + 1);
    c.extend_from_slice(method.as_bytes());
    c.push(0);
    c.extend_from_slice(path.as_bytes());
    c
}

/// The proof `side` sends for `method path`, in hex.
pub fn proof_hex(
    key: &[u8],
    exporter: &[u8; EXPORTER_LEN],
    side: Side,
    method: &str,
    path: &str,
) -> String {
    hex(&proof::proof(key, exporter, side, &context(method, path)))
}

/// Whether `header` is the proof `side` would send for `method path`.
pub fn check(
    key: &[u8],
    exporter: &[u8; EXPORTER_LEN],
    side: Side,
    method: &str,
    path: &str,
    header: Option<&str>,
) -> bool {
    let Some(tag) = header.and_then(unhex) else {
        return false;
    };
    proof::verify(key, exporter, side, &context(method, path), &tag)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// How to reach an appliance's HTTPS port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_port() -> u16 {
    443
}

impl Endpoint {
    /// A host name or address (no scheme, no path, no port) and a port other than 0.
    pub fn check(&self) -> Result<(), String> {
        let h = &self.host;
        let ok = !h.is_empty()
            && h.len() <= 253
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '%' | '_'));
        if !ok {
            return Err(format!(
                "{:?} is not a host name or an IP address",
                h.chars().take(64).collect::<String>()
            ));
        }
        if self.port == 0 {
            return Err("port must be 1 to 65535".into());
        }
        Ok(())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What an appliance says about itself (`GET /peer/v1/state`, and in answer to the other
/// calls).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerState {
    pub id: String,
    pub hostname: String,
    /// Software version and build; both appliances of a pair run the same.
    pub version: String,
    pub role: Role,
    pub epoch: u64,
    pub pending: bool,
    /// It holds the shared IPs (and answers on them).
    pub holds_shared_ip: bool,
}

/// `POST /peer/v1/relationship`: the intended primary asks this appliance to be its
/// backup; `reverse` is how to reach the primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationshipRequest {
    pub reverse: Endpoint,
    pub primary: PeerState,
}

/// `POST /peer/v1/command`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    pub command: PeerCommand,
    /// The sender's epoch.
    pub epoch: u64,
}

/// The answer to a [`CommandRequest`]: the receiver's epoch after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply {
    pub epoch: u64,
    pub role: Role,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_binds_key_session_side_method_and_path() {
        let key = b"0123456789abcdef";
        let exp = [7u8; EXPORTER_LEN];
        let p = proof_hex(key, &exp, Side::Client, "GET", STATE);
        assert!(check(key, &exp, Side::Client, "GET", STATE, Some(&p)));
        assert!(!check(
            b"0123456789abcdeX",
            &exp,
            Side::Client,
            "GET",
            STATE,
            Some(&p)
        ));
        assert!(!check(
            key,
            &[8u8; EXPORTER_LEN],
            Side::Client,
            "GET",
            STATE,
            Some(&p)
        ));
        assert!(!check(key, &exp, Side::Server, "GET", STATE, Some(&p)));
        assert!(!check(key, &exp, Side::Client, "POST", STATE, Some(&p)));
        assert!(!check(key, &exp, Side::Client, "GET", COMMAND, Some(&p)));
        assert!(!check(key, &exp, Side::Client, "GET", STATE, None));
        assert!(!check(key, &exp, Side::Client, "GET", STATE, Some("zz")));
        assert!(!check(key, &exp, Side::Client, "GET", STATE, Some("é")));
    }

    #[test]
    fn endpoints_are_checked() {
        let e = |h: &str, p| Endpoint {
            host: h.into(),
            port: p,
        };
        assert!(e("192.0.2.1", 443).check().is_ok());
        assert!(e("fe80::1%eth0", 443).check().is_ok());
        assert!(e("b2.example.net", 8443).check().is_ok());
        assert!(e("", 443).check().is_err());
        assert!(e("a/b", 443).check().is_err());
        assert!(e("https://x", 443).check().is_err());
        assert!(e("x", 0).check().is_err());
        assert_eq!(e("2001:db8::1", 443).to_string(), "[2001:db8::1]:443");
    }
}
