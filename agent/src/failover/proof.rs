//! Proving knowledge of the inter-appliance key over one TLS session, without sending it.
//!
//! Both ends of a TLS 1.3 session can derive the same secret bytes from it (the exporter
//! of RFC 8446 §7.5, RFC 5705 before it) and nobody else can: not an observer, and not a
//! machine in the middle, which holds two different sessions with two different
//! exporters. Each appliance sends `HMAC-SHA256(key, label ‖ side ‖ exporter ‖ context)`
//! and checks the other's in constant time. So:
//!
//! - the key never crosses the wire (only an HMAC keyed with it);
//! - a recorded proof is worth nothing on another connection (its exporter differs);
//! - a relay with its own certificate gets proofs bound to the wrong session;
//! - the client's proof cannot be reflected back as the server's (the side is in it).
//!
//! VRRP sends its password in clear and CARP's defaults authenticate nothing; this is the
//! contrast. Only TLS 1.3 is accepted for the peer link: a TLS 1.2 exporter without the
//! extended master secret can be shared by two sessions (the triple handshake attack).
//!
//! [`key_fingerprint`] is what status shows in place of the key: enough to see whether
//! the two appliances hold the same key, not the key. A fingerprint of a guessable key
//! can be tested against guesses; the 16-character minimum is what stands against that.

use ring::{digest, hmac};

/// The exporter label of ours (RFC 8446 labels are free text; ours names the purpose).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-appliance-peer-v1";
/// Bytes of keying material taken from the session.
pub const EXPORTER_LEN: usize = 32;
/// A proof: an HMAC-SHA256 tag.
pub type Proof = [u8; 32];

const PROOF_LABEL: &[u8] = b"appliance peer proof v1";
const FINGERPRINT_LABEL: &[u8] = b"appliance inter-appliance key fingerprint v1";

/// Which end of the TLS session makes the proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The appliance that opened the connection.
    Client,
    /// The appliance that accepted it.
    Server,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Side::Client => b"client",
            Side::Server => b"server",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("the peer link needs TLS 1.3; this session is {0}")]
    NotTls13(String),
    #[error("cannot export keying material from the TLS session: {0}")]
    Export(String),
}

/// A TLS session keying material can be exported from: either end of a rustls connection
/// (with tokio-rustls, `stream.get_ref().1`).
pub trait Session {
    fn protocol(&self) -> Option<rustls::ProtocolVersion>;
    fn export(&self, out: [u8; EXPORTER_LEN]) -> Result<[u8; EXPORTER_LEN], rustls::Error>;
}

impl Session for rustls::ClientConnection {
    fn protocol(&self) -> Option<rustls::ProtocolVersion> {
        self.protocol_version()
    }
    fn export(&self, out: [u8; EXPORTER_LEN]) -> Result<[u8; EXPORTER_LEN], rustls::Error> {
        self.export_keying_material(out, EXPORTER_LABEL, None)
    }
}

impl Session for rustls::ServerConnection {
    fn protocol(&self) -> Option<rustls::ProtocolVersion> {
        self.protocol_version()
    }
    fn export(&self, out: [u8; EXPORTER_LEN]) -> Result<[u8; EXPORTER_LEN], rustls::Error> {
        self.export_keying_material(out, EXPORTER_LABEL, None)
    }
}

/// The session's keying material under [`EXPORTER_LABEL`]; TLS 1.3 only, and only once
/// the handshake is complete.
pub fn exporter(session: &dyn Session) -> Result<[u8; EXPORTER_LEN], ProofError> {
    match session.protocol() {
        Some(rustls::ProtocolVersion::TLSv1_3) => {}
        Some(other) => return Err(ProofError::NotTls13(format!("{other:?}"))),
        None => return Err(ProofError::Export("the handshake is not complete".into())),
    }
    session
        .export([0; EXPORTER_LEN])
        .map_err(|e| ProofError::Export(e.to_string()))
}

fn message(exporter: &[u8; EXPORTER_LEN], side: Side, context: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(PROOF_LABEL.len() + 8 + EXPORTER_LEN + context.len() + 8);
    m.extend_from_slice(PROOF_LABEL);
    m.push(0);
    m.extend_from_slice(side.label());
    m.push(0);
    m.extend_from_slice(exporter);
    // Length-prefixed so no two (side, context) pairs make the same message.
    m.extend_from_slice(&(context.len() as u64).to_be_bytes());
    m.extend_from_slice(context);
    m
}

/// The proof `side` sends: an HMAC-SHA256 with the key over the session's exporter and
/// `context` (whatever else the exchange binds, such as both appliance ids or a nonce).
pub fn proof(key: &[u8], exporter: &[u8; EXPORTER_LEN], side: Side, context: &[u8]) -> Proof {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&k, &message(exporter, side, context));
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Whether `tag` is the proof `side` would make with `key` on this session; compared in
/// constant time.
pub fn verify(
    key: &[u8],
    exporter: &[u8; EXPORTER_LEN],
    side: Side,
    context: &[u8],
    tag: &[u8],
) -> bool {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::verify(&k, &message(exporter, side, context), tag).is_ok()
}

/// What status shows of the key: a SHA-256 of it under a fixed label, as 32 hex digits in
/// groups of four (`3f2a-9c01-...`).
pub fn key_fingerprint(key: &[u8]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(FINGERPRINT_LABEL);
    ctx.update(&[0]);
    ctx.update(key);
    let d = ctx.finish();
    let mut out = String::with_capacity(39);
    for (i, byte) in d.as_ref()[..16].iter().enumerate() {
        if i > 0 && i % 2 == 0 {
            out.push('-');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConnection, Connection, ServerConnection};
    use std::sync::Arc;

    const KEY: &[u8] = b"correct horse battery staple";

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A self-signed server identity for `name`, and a client that trusts exactly it.
    fn configs(
        name: &str,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let cert = CertificateDer::from(ck.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    fn tls13() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        configs("peer.test", &[&rustls::version::TLS13])
    }

    fn transfer(from: &mut Connection, to: &mut Connection) {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            to.read_tls(&mut rd).unwrap();
            to.process_new_packets().unwrap();
        }
    }

    /// One TLS session, handshaken in memory.
    fn session(
        server: &Arc<rustls::ServerConfig>,
        client: &Arc<rustls::ClientConfig>,
    ) -> (ClientConnection, ServerConnection) {
        let name = ServerName::try_from("peer.test").unwrap();
        let mut c = Connection::Client(ClientConnection::new(client.clone(), name).unwrap());
        let mut s = Connection::Server(ServerConnection::new(server.clone()).unwrap());
        for _ in 0..10 {
            transfer(&mut c, &mut s);
            transfer(&mut s, &mut c);
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
        }
        assert!(!c.is_handshaking() && !s.is_handshaking(), "handshake done");
        match (c, s) {
            (Connection::Client(c), Connection::Server(s)) => (c, s),
            _ => unreachable!(),
        }
    }

    #[test]
    fn both_ends_of_one_session_agree_with_the_same_key() {
        let (server, client) = tls13();
        let (c, s) = session(&server, &client);
        let (ec, es) = (exporter(&c).unwrap(), exporter(&s).unwrap());
        assert_eq!(ec, es, "one session, one exporter");
        let from_client = proof(KEY, &ec, Side::Client, b"ids");
        assert!(verify(KEY, &es, Side::Client, b"ids", &from_client));
        let from_server = proof(KEY, &es, Side::Server, b"ids");
        assert!(verify(KEY, &ec, Side::Server, b"ids", &from_server));
    }

    #[test]
    fn a_different_key_fails() {
        let (server, client) = tls13();
        let (c, s) = session(&server, &client);
        let p = proof(
            b"another key of sixteen+",
            &exporter(&c).unwrap(),
            Side::Client,
            b"",
        );
        assert!(!verify(KEY, &exporter(&s).unwrap(), Side::Client, b"", &p));
    }

    #[test]
    fn a_proof_is_bound_to_its_side_and_context_and_length() {
        let (server, client) = tls13();
        let (c, _s) = session(&server, &client);
        let e = exporter(&c).unwrap();
        let p = proof(KEY, &e, Side::Client, b"nonce-1");
        assert!(!verify(KEY, &e, Side::Server, b"nonce-1", &p), "reflected");
        assert!(!verify(KEY, &e, Side::Client, b"nonce-2", &p));
        assert!(!verify(KEY, &e, Side::Client, b"nonce-1", &p[..16]));
        assert!(!verify(KEY, &e, Side::Client, b"nonce-1", &[]));
    }

    #[test]
    fn a_recorded_proof_does_not_verify_on_another_session() {
        let (server, client) = tls13();
        let (c1, _s1) = session(&server, &client);
        let (_c2, s2) = session(&server, &client);
        let recorded = proof(KEY, &exporter(&c1).unwrap(), Side::Client, b"");
        assert!(!verify(
            KEY,
            &exporter(&s2).unwrap(),
            Side::Client,
            b"",
            &recorded
        ));
    }

    #[test]
    fn a_relay_with_its_own_certificate_cannot_pass_proofs_along() {
        // The real backup serves its certificate; the relay serves its own to the primary
        // (which was told to trust it) and opens a second session to the backup.
        let (backup, to_backup) = tls13();
        let (relay, to_relay) = tls13();
        let (primary_side, relay_from_primary) = session(&relay, &to_relay);
        let (relay_to_backup, backup_side) = session(&backup, &to_backup);
        let e_primary = exporter(&primary_side).unwrap();
        let e_backup = exporter(&backup_side).unwrap();
        assert_eq!(e_primary, exporter(&relay_from_primary).unwrap());
        assert_eq!(e_backup, exporter(&relay_to_backup).unwrap());
        assert_ne!(e_primary, e_backup, "two sessions, two exporters");
        // The primary's proof, relayed to the backup, fails there; the backup's, relayed
        // back, fails at the primary.
        let p = proof(KEY, &e_primary, Side::Client, b"");
        assert!(!verify(KEY, &e_backup, Side::Client, b"", &p));
        let q = proof(KEY, &e_backup, Side::Server, b"");
        assert!(!verify(KEY, &e_primary, Side::Server, b"", &q));
    }

    #[test]
    fn tls12_and_unfinished_sessions_are_refused() {
        let (server, client) = configs("peer.test", &[&rustls::version::TLS12]);
        let (c, _s) = session(&server, &client);
        assert!(matches!(exporter(&c), Err(ProofError::NotTls13(_))));
        let (_, client) = tls13();
        let name = ServerName::try_from("peer.test").unwrap();
        let fresh = ClientConnection::new(client, name).unwrap();
        assert!(matches!(exporter(&fresh), Err(ProofError::Export(_))));
    }

    #[test]
    fn the_fingerprint_tells_keys_apart_and_does_not_show_the_key() {
        let a = key_fingerprint(KEY);
        assert_eq!(a, key_fingerprint(KEY));
        assert_ne!(a, key_fingerprint(b"correct horse battery stapler"));
        assert_eq!(a.len(), 39);
        assert!(a.split('-').all(|g| g.len() == 4));
        // Not a plain SHA-256 of the key either (that would match any other use of it).
        let plain = digest::digest(&digest::SHA256, KEY);
        let plain: String = plain.as_ref()[..2]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!a.starts_with(&plain));
    }
}
