//! Password rules and hashing.
//!
//! Hashes are argon2id PHC strings with OWASP's low-memory parameters (7 MiB, 5 passes,
//! 1 lane): slow enough to make guessing expensive, small enough for an appliance that
//! may run under emulation. The parameters live in each hash, so they can be raised later
//! without breaking stored hashes.

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};

/// The factory default credentials.
pub const DEFAULT_USERNAME: &str = "admin";
pub const DEFAULT_PASSWORD: &str = "password";
pub const MIN_LEN: usize = 10;
pub const MAX_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("the new password must have at least {MIN_LEN} characters")]
    TooShort,
    #[error("the new password must have at most {MAX_LEN} characters")]
    TooLong,
    #[error("the new password must not contain the user name")]
    ContainsUsername,
    #[error("the new password must differ from the current one")]
    Unchanged,
    #[error("the new password must not contain control characters")]
    ControlCharacter,
    #[error(
        "the new password must use at least two kinds of characters (letters, digits, others)"
    )]
    OneKind,
}

/// Checks a proposed password against the rules. (The factory default is too short to
/// pass, so it can never be chosen again.)
pub fn check_rules(new: &str, current: &str, username: &str) -> Result<(), PasswordError> {
    let len = new.chars().count();
    if len < MIN_LEN {
        return Err(PasswordError::TooShort);
    }
    if len > MAX_LEN {
        return Err(PasswordError::TooLong);
    }
    if new.chars().any(char::is_control) {
        return Err(PasswordError::ControlCharacter);
    }
    if !username.is_empty() && new.to_lowercase().contains(&username.to_lowercase()) {
        return Err(PasswordError::ContainsUsername);
    }
    if new == current {
        return Err(PasswordError::Unchanged);
    }
    let kinds = [
        new.chars().any(char::is_alphabetic),
        new.chars().any(|c| c.is_ascii_digit()),
        new.chars().any(|c| !c.is_alphanumeric()),
    ];
    if kinds.iter().filter(|k| **k).count() < 2 {
        return Err(PasswordError::OneKind);
    }
    Ok(())
}

fn hasher() -> Argon2<'static> {
    let params = Params::new(7 * 1024, 5, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    hasher()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the PHC string `phc` (false for a malformed hash).
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let ok = "correct-horse-7";
        assert_eq!(check_rules(ok, "password", "admin"), Ok(()));
        assert_eq!(
            check_rules("short-1", "password", "admin"),
            Err(PasswordError::TooShort)
        );
        assert_eq!(
            check_rules(&"a1".repeat(65), "password", "admin"),
            Err(PasswordError::TooLong)
        );
        assert_eq!(
            check_rules("PASSWORD", "x", "admin"),
            Err(PasswordError::TooShort)
        );
        assert_eq!(
            check_rules("Password", "x", "root"),
            Err(PasswordError::TooShort)
        );
        assert_eq!(
            check_rules("my-Admin-pass-1", "x", "admin"),
            Err(PasswordError::ContainsUsername)
        );
        assert_eq!(check_rules(ok, ok, "admin"), Err(PasswordError::Unchanged));
        assert_eq!(
            check_rules("onlyletterslong", "x", "admin"),
            Err(PasswordError::OneKind)
        );
        assert_eq!(
            check_rules("12345678901", "x", "admin"),
            Err(PasswordError::OneKind)
        );
        assert_eq!(
            check_rules("tab\there-12345", "x", "admin"),
            Err(PasswordError::ControlCharacter)
        );
    }

    #[test]
    fn hashes_are_salted_and_verify() {
        let a = hash("correct-horse-7").unwrap();
        let b = hash("correct-horse-7").unwrap();
        assert_ne!(a, b, "a fresh salt each time");
        assert!(a.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{a}");
        assert!(verify("correct-horse-7", &a));
        assert!(!verify("correct-horse-8", &a));
        assert!(!verify("correct-horse-7", "not a hash"));
    }
}
