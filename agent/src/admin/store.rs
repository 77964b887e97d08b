//! The admin account and API tokens, kept in `<data>/config/admin.toml` (a
//! `store::Document`: schema `version = 1`, a `revision` counter, written atomically, mode
//! 0600), plus the in-memory sessions and login limiter. No file means the factory default
//! account, `admin` / `password`, which must be changed before anything else is allowed.
//! The account is local: it administers this box and never travels to a failover peer.
//!
//! Limits: a file that cannot be used is reported and the factory default account applies
//! (known to be unsafe; another issue fixes it). Changes are refused while it is so, like
//! every document's: the password cannot be changed over a file that does not parse.

use super::limiter::{Failure, Limiter};
use super::password::{self, PasswordError, DEFAULT_PASSWORD, DEFAULT_USERNAME};
use super::sessions::Sessions;
use crate::model::unix_now;
use crate::store::{Document, DocumentError, Schema};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const FILE: &str = "admin.toml";
pub const TOKEN_PREFIX: &str = "apt_";
const MAX_TOKENS: usize = 32;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Account {
    username: String,
    password_hash: String,
    changed_unix: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct StoredToken {
    name: String,
    /// SHA-256 of the token, hex: the token itself is shown once and never stored.
    sha256: String,
    created_unix: u64,
    expires_unix: Option<u64>,
}

/// What `admin.toml` holds. The default (no file) has no account: the factory default
/// account applies.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct AdminFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account: Option<Account>,
    #[serde(default)]
    tokens: Vec<StoredToken>,
}

#[derive(Debug, thiserror::Error)]
pub enum InvalidAdminFile {
    #[error("no [account] section")]
    NoAccount,
}

impl Schema for AdminFile {
    const VERSION: u32 = 1;
    type Invalid = InvalidAdminFile;

    /// A file always has the account: only the absence of a file means the default one.
    fn validate(&self) -> Result<(), InvalidAdminFile> {
        match self.account {
            Some(_) => Ok(()),
            None => Err(InvalidAdminFile::NoAccount),
        }
    }
}

pub type AdminFileError = DocumentError<InvalidAdminFile>;

/// Who a request runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Session { username: String },
    Token { name: String },
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("log in first: POST /appliance/api/v1/login, then send the token as \"Authorization: Bearer <token>\"")]
    Missing,
    #[error("the token is unknown or has expired: log in again")]
    Invalid,
    #[error(
        "change the default password first: POST /appliance/api/v1/system/admin/password \
         (appliancectl passwd)"
    )]
    DefaultPassword,
    #[error("too many failed logins from this address: try again in {} s", .0.as_secs().max(1))]
    Locked(Duration),
    #[error("wrong user name or password")]
    BadCredentials,
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(transparent)]
    File(#[from] AdminFileError),
    #[error("there is already a token named {0:?}")]
    TokenExists(String),
    #[error("no token named {0:?}")]
    TokenNotFound(String),
    #[error("a token name is 1 to 64 letters, digits, '-', '_' or '.'")]
    BadTokenName,
    #[error("at most {MAX_TOKENS} API tokens may exist")]
    TooManyTokens,
    #[error("cannot encode the account file: {0}")]
    Encode(String),
}

/// A successful login.
#[derive(Clone, Debug)]
pub struct Login {
    pub token: String,
    pub must_change_password: bool,
}

/// An API token as listed (never the token itself).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenInfo {
    pub name: String,
    pub created_unix: u64,
    pub expires_unix: Option<u64>,
}

pub struct Admin {
    file: Document<AdminFile>,
    sessions: Mutex<Sessions>,
    limiter: Mutex<Limiter>,
    origin: Instant,
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Admin {
    /// Loads `<config_dir>/admin.toml`. A file that cannot be read is reported and the
    /// factory default account applies (so the appliance can still be administered).
    pub fn open(config_dir: &Path) -> Admin {
        Admin {
            file: Document::load(config_dir.join(FILE)),
            sessions: Mutex::new(Sessions::default()),
            limiter: Mutex::new(Limiter::default()),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub fn load_error(&self) -> Option<String> {
        self.file.load_error()
    }

    /// The factory default password is still in force.
    pub fn is_default(&self) -> bool {
        self.file.with(|f| f.account.is_none())
    }

    pub fn username(&self) -> String {
        self.file.with(|f| {
            f.account
                .as_ref()
                .map(|a| a.username.clone())
                .unwrap_or_else(|| DEFAULT_USERNAME.into())
        })
    }

    /// When the password was last changed (none for the factory default).
    pub fn password_changed_unix(&self) -> Option<u64> {
        self.file
            .with(|f| f.account.as_ref().map(|a| a.changed_unix))
    }

    /// Checks a user name and password (the slow hash runs off the async threads).
    async fn check_password(
        self: &Arc<Self>,
        ip: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<(), AuthError> {
        if let Err(wait) = lock(&self.limiter).check(ip, self.now()) {
            return Err(AuthError::Locked(wait));
        }
        let stored = self.file.with(|f| f.account.clone());
        let (user_ok, pass_ok) = match stored {
            None => (
                super::same(username.as_bytes(), DEFAULT_USERNAME.as_bytes()),
                super::same(password.as_bytes(), DEFAULT_PASSWORD.as_bytes()),
            ),
            Some(account) => {
                let user_ok = super::same(username.as_bytes(), account.username.as_bytes());
                let password = password.to_string();
                let hash = account.password_hash.clone();
                // The hash is checked even for a wrong user name, so timing does not tell.
                let pass_ok =
                    tokio::task::spawn_blocking(move || password::verify(&password, &hash))
                        .await
                        .unwrap_or(false);
                (user_ok, pass_ok)
            }
        };
        if user_ok && pass_ok {
            lock(&self.limiter).success(ip);
            return Ok(());
        }
        match lock(&self.limiter).failure(ip, self.now()) {
            Failure::LockedOut(d) => {
                tracing::warn!(client = %ip, lock_s = d.as_secs(), "too many failed logins: address locked out");
                Err(AuthError::Locked(d))
            }
            Failure::Counted { remaining } => {
                tracing::info!(client = %ip, remaining, "failed login");
                Err(AuthError::BadCredentials)
            }
        }
    }

    pub async fn login(
        self: &Arc<Self>,
        ip: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<Login, AuthError> {
        self.check_password(ip, username, password).await?;
        let token = lock(&self.sessions).open(username, self.now());
        let must_change_password = self.is_default();
        tracing::info!(client = %ip, user = username, must_change_password, "login");
        Ok(Login {
            token,
            must_change_password,
        })
    }

    pub fn logout(&self, token: &str) -> bool {
        lock(&self.sessions).close(token)
    }

    /// Changes the password (proved by the current one); every session ends.
    pub async fn change_password(
        self: &Arc<Self>,
        ip: IpAddr,
        username: &str,
        current: &str,
        new: &str,
    ) -> Result<(), AuthError> {
        self.check_password(ip, username, current).await?;
        password::check_rules(new, current, username)?;
        let new_owned = new.to_string();
        let hash = tokio::task::spawn_blocking(move || password::hash(&new_owned))
            .await
            .map_err(|e| AuthError::Encode(e.to_string()))?
            .map_err(AuthError::Encode)?;
        let (me, user) = (self.clone(), username.to_string());
        crate::store::blocking(move || {
            me.file.try_update(|f| {
                let account = f.account.get_or_insert_with(|| Account {
                    username: user,
                    password_hash: String::new(),
                    changed_unix: 0,
                });
                account.password_hash = hash;
                account.changed_unix = unix_now();
                Ok::<_, AuthError>(())
            })
        })
        .await?;
        lock(&self.sessions).close_all();
        tracing::warn!(client = %ip, user = username, "admin password changed; every session ended");
        Ok(())
    }

    /// Who a bearer token belongs to. While the default password is in force nothing but
    /// login and the password change is allowed, whatever the token.
    pub fn authenticate(&self, bearer: Option<&str>) -> Result<Principal, AuthError> {
        if self.is_default() {
            return Err(AuthError::DefaultPassword);
        }
        let token = bearer.ok_or(AuthError::Missing)?;
        if token.starts_with(super::sessions::PREFIX) {
            return lock(&self.sessions)
                .touch(token, self.now())
                .map(|s| Principal::Session {
                    username: s.username,
                })
                .ok_or(AuthError::Invalid);
        }
        if token.starts_with(TOKEN_PREFIX) {
            let digest = sha256_hex(token);
            let now = unix_now();
            let found = self.file.with(|f| {
                f.tokens
                    .iter()
                    .find(|t| {
                        super::same(t.sha256.as_bytes(), digest.as_bytes())
                            && t.expires_unix.is_none_or(|e| e > now)
                    })
                    .map(|t| t.name.clone())
            });
            return found
                .map(|name| Principal::Token { name })
                .ok_or(AuthError::Invalid);
        }
        Err(AuthError::Invalid)
    }

    /// Creates an API token; the returned string is the only copy.
    pub fn create_token(&self, name: &str, expires_days: Option<u32>) -> Result<String, AuthError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(AuthError::BadTokenName);
        }
        let token = self.file.try_update(|f| {
            if f.account.is_none() {
                return Err(AuthError::DefaultPassword);
            }
            if f.tokens.iter().any(|t| t.name == name) {
                return Err(AuthError::TokenExists(name.into()));
            }
            if f.tokens.len() >= MAX_TOKENS {
                return Err(AuthError::TooManyTokens);
            }
            let token = super::random_token(TOKEN_PREFIX);
            let now = unix_now();
            f.tokens.push(StoredToken {
                name: name.into(),
                sha256: sha256_hex(&token),
                created_unix: now,
                expires_unix: expires_days.map(|d| now + u64::from(d) * 86_400),
            });
            Ok(token)
        })?;
        tracing::info!(token = name, "API token created");
        Ok(token)
    }

    pub fn tokens(&self) -> Vec<TokenInfo> {
        self.file.with(|f| {
            f.tokens
                .iter()
                .map(|t| TokenInfo {
                    name: t.name.clone(),
                    created_unix: t.created_unix,
                    expires_unix: t.expires_unix,
                })
                .collect()
        })
    }

    pub fn delete_token(&self, name: &str) -> Result<(), AuthError> {
        self.file.try_update(|f| {
            if !f.tokens.iter().any(|t| t.name == name) {
                return Err(AuthError::TokenNotFound(name.into()));
            }
            f.tokens.retain(|t| t.name != name);
            Ok(())
        })?;
        tracing::info!(token = name, "API token deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 1, 4));
    const NEW: &str = "correct-horse-7";

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn the_default_password_allows_only_login_and_its_change() {
        let dir = tempfile::tempdir().unwrap();
        let admin = Arc::new(Admin::open(dir.path()));
        rt().block_on(async {
            let login = admin.login(IP, "admin", "password").await.unwrap();
            assert!(login.must_change_password);
            assert!(matches!(
                admin.authenticate(Some(&login.token)),
                Err(AuthError::DefaultPassword)
            ));
            assert!(matches!(
                admin.authenticate(None),
                Err(AuthError::DefaultPassword)
            ));
            assert!(matches!(
                admin
                    .change_password(IP, "admin", "password", "short")
                    .await,
                Err(AuthError::Password(PasswordError::TooShort))
            ));
            assert!(admin.is_default(), "a refused change changes nothing");
            admin
                .change_password(IP, "admin", "password", NEW)
                .await
                .unwrap();
            assert!(
                matches!(
                    admin.authenticate(Some(&login.token)),
                    Err(AuthError::Invalid)
                ),
                "sessions ended"
            );
            let login = admin.login(IP, "admin", NEW).await.unwrap();
            assert!(!login.must_change_password);
            assert_eq!(
                admin.authenticate(Some(&login.token)).unwrap(),
                Principal::Session {
                    username: "admin".into()
                }
            );
            assert!(matches!(admin.authenticate(None), Err(AuthError::Missing)));
            assert!(matches!(
                admin.login(IP, "admin", "password").await,
                Err(AuthError::BadCredentials)
            ));
        });
        // Persistent, hashed, private.
        let again = Admin::open(dir.path());
        assert!(!again.is_default());
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("$argon2id$") && !text.contains(NEW));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(dir.path().join(FILE))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    #[test]
    fn api_tokens_are_shown_once_stored_hashed_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let admin = Arc::new(Admin::open(dir.path()));
        assert!(matches!(
            admin.create_token("backup", None),
            Err(AuthError::DefaultPassword)
        ));
        rt().block_on(admin.change_password(IP, "admin", "password", NEW))
            .unwrap();
        let token = admin.create_token("backup", Some(30)).unwrap();
        assert!(token.starts_with(TOKEN_PREFIX));
        assert!(matches!(
            admin.create_token("backup", None),
            Err(AuthError::TokenExists(_))
        ));
        assert!(matches!(
            admin.create_token("no spaces", None),
            Err(AuthError::BadTokenName)
        ));
        assert_eq!(
            admin.authenticate(Some(&token)).unwrap(),
            Principal::Token {
                name: "backup".into()
            }
        );
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!text.contains(&token) && text.contains(&sha256_hex(&token)));
        assert_eq!(admin.tokens().len(), 1);
        admin.delete_token("backup").unwrap();
        assert!(matches!(
            admin.authenticate(Some(&token)),
            Err(AuthError::Invalid)
        ));
        assert!(matches!(
            admin.delete_token("backup"),
            Err(AuthError::TokenNotFound(_))
        ));
    }

    #[test]
    fn repeated_failures_lock_the_address_out() {
        let dir = tempfile::tempdir().unwrap();
        let admin = Arc::new(Admin::open(dir.path()));
        rt().block_on(async {
            for _ in 0..4 {
                assert!(matches!(
                    admin.login(IP, "admin", "guess").await,
                    Err(AuthError::BadCredentials)
                ));
            }
            assert!(matches!(
                admin.login(IP, "admin", "guess").await,
                Err(AuthError::Locked(_))
            ));
            // Even the right password is refused while locked out.
            assert!(matches!(
                admin.login(IP, "admin", "password").await,
                Err(AuthError::Locked(_))
            ));
        });
    }

    #[test]
    fn a_corrupt_file_falls_back_to_the_default_account_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "version = 1\n[account]\n").unwrap();
        let admin = Admin::open(dir.path());
        assert!(admin.is_default());
        assert!(admin.load_error().unwrap().contains(FILE));
    }

    #[test]
    fn a_file_written_before_revisions_loads_and_gains_one_at_the_next_change() {
        let dir = tempfile::tempdir().unwrap();
        let hash = password::hash(NEW).unwrap();
        // What the firmware before `store::Document` wrote.
        let old = format!(
            "version = 1\ntokens = []\n\n[account]\nusername = \"admin\"\n\
             password_hash = \"{hash}\"\nchanged_unix = 1767225600\n"
        );
        std::fs::write(dir.path().join(FILE), &old).unwrap();
        let admin = Arc::new(Admin::open(dir.path()));
        assert_eq!(admin.load_error(), None);
        assert!(!admin.is_default());
        assert_eq!(admin.password_changed_unix(), Some(1767225600));
        rt().block_on(admin.login(IP, "admin", NEW)).unwrap();
        admin.create_token("backup", None).unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.starts_with("version = 1\nrevision = 1\n"), "{text}");
        assert!(text.contains(&hash), "{text}");
    }

    #[test]
    fn a_corrupt_file_is_not_overwritten_by_a_password_change() {
        let dir = tempfile::tempdir().unwrap();
        let corrupt = "version = 1\n[account]\n";
        std::fs::write(dir.path().join(FILE), corrupt).unwrap();
        let admin = Arc::new(Admin::open(dir.path()));
        let err = rt()
            .block_on(admin.change_password(IP, "admin", "password", NEW))
            .unwrap_err();
        assert!(
            matches!(err, AuthError::File(DocumentError::Unreadable { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("does not parse"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE)).unwrap(),
            corrupt
        );
        assert!(admin.is_default());
    }
}
