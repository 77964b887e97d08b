//! Who may administer the appliance: the admin account, sessions, API tokens, and the
//! limit on failed logins.
//!
//! - [`password`]: password rules and the slow salted hash (argon2id);
//! - [`sessions`]: login sessions (random bearer tokens, idle and absolute expiry);
//! - [`limiter`]: failed-login rate limiting per client address;
//! - [`api_accounts`]: the vendor command API's OAuth clients and their access tokens;
//! - [`store`]: the account and API tokens on /data (`config/admin.toml`, atomic writes).
//!
//! The factory default account is `admin` / `password`. Until that password is changed,
//! every API call except login and the password change answers "change the default
//! password first".

pub mod api_accounts;
pub mod limiter;
pub mod password;
pub mod sessions;
pub mod store;

pub use store::Admin;

/// A fresh random token: `prefix` then 64 hex digits (256 bits from the kernel's RNG).
pub fn random_token(prefix: &str) -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // getrandom(2) does not fail once the kernel's pool is ready; if it ever does,
        // fall back to something unique rather than to a predictable constant.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// Constant-time comparison of two byte strings of equal length.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SHA-256 of `s`, in lowercase hex (how tokens and secrets are kept: never themselves).
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
