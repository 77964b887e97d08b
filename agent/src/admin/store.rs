//! The admin account and API tokens, kept in `<data>/config/admin.toml` (schema
//! `version = 1`, written atomically, mode 0600), plus the in-memory sessions and login
//! limiter. No file means the factory default account, `admin` / `password`, which must be
//! changed before anything else is allowed.

use super::limiter::{Failure, Limiter};
use super::password::{self, PasswordError, DEFAULT_PASSWORD, DEFAULT_USERNAME};
use super::sessions::Sessions;
use crate::model::unix_now;
use crate::store::{self, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
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

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct AdminFile {
    version: u32,
    account: Account,
    #[serde(default)]
    tokens: Vec<StoredToken>,
}

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
    Store(#[from] StoreError),
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
    path: PathBuf,
    file: Mutex<Option<AdminFile>>,
    load_error: Option<String>,
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
        let path = config_dir.join(FILE);
        let (file, load_error) = match std::fs::read_to_string(&path) {
            Ok(text) => match toml::from_str::<AdminFile>(&text) {
                Ok(f) if f.version == 1 => (Some(f), None),
                Ok(f) => (
                    None,
                    Some(format!(
                        "{}: schema version {} is not supported",
                        path.display(),
                        f.version
                    )),
                ),
                Err(e) => (None, Some(format!("{}: {}", path.display(), e.message()))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
            Err(e) => (None, Some(format!("cannot read {}: {e}", path.display()))),
        };
        if let Some(e) = &load_error {
            tracing::error!(
                "admin account file not usable, the factory default account applies: {e}"
            );
        }
        Admin {
            path,
            file: Mutex::new(file),
            load_error,
            sessions: Mutex::new(Sessions::default()),
            limiter: Mutex::new(Limiter::default()),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub fn load_error(&self) -> Option<String> {
        self.load_error.clone()
    }

    /// The factory default password is still in force.
    pub fn is_default(&self) -> bool {
        lock(&self.file).is_none()
    }

    pub fn username(&self) -> String {
        lock(&self.file)
            .as_ref()
            .map(|f| f.account.username.clone())
            .unwrap_or_else(|| DEFAULT_USERNAME.into())
    }

    /// When the password was last changed (none for the factory default).
    pub fn password_changed_unix(&self) -> Option<u64> {
        lock(&self.file).as_ref().map(|f| f.account.changed_unix)
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
        let stored = lock(&self.file).as_ref().map(|f| f.account.clone());
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
        let mut file = lock(&self.file);
        let mut next = file.clone().unwrap_or(AdminFile {
            version: 1,
            account: Account {
                username: username.into(),
                password_hash: String::new(),
                changed_unix: 0,
            },
            tokens: Vec::new(),
        });
        next.account.password_hash = hash;
        next.account.changed_unix = unix_now();
        self.persist(&next)?;
        *file = Some(next);
        drop(file);
        lock(&self.sessions).close_all();
        tracing::warn!(client = %ip, user = username, "admin password changed; every session ended");
        Ok(())
    }

    fn persist(&self, f: &AdminFile) -> Result<(), AuthError> {
        let text = toml::to_string(f).map_err(|e| AuthError::Encode(e.to_string()))?;
        if let Some(dir) = self.path.parent() {
            store::ensure_dir(dir, 0o700)?;
        }
        store::write_atomic(&self.path, text.as_bytes(), 0o600)?;
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
            let file = lock(&self.file);
            let found = file.iter().flat_map(|f| &f.tokens).find(|t| {
                super::same(t.sha256.as_bytes(), digest.as_bytes())
                    && t.expires_unix.is_none_or(|e| e > now)
            });
            return found
                .map(|t| Principal::Token {
                    name: t.name.clone(),
                })
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
        let mut file = lock(&self.file);
        let Some(current) = file.as_ref() else {
            return Err(AuthError::DefaultPassword);
        };
        if current.tokens.iter().any(|t| t.name == name) {
            return Err(AuthError::TokenExists(name.into()));
        }
        if current.tokens.len() >= MAX_TOKENS {
            return Err(AuthError::TooManyTokens);
        }
        let token = super::random_token(TOKEN_PREFIX);
        let now = unix_now();
        let mut next = current.clone();
        next.tokens.push(StoredToken {
            name: name.into(),
            sha256: sha256_hex(&token),
            created_unix: now,
            expires_unix: expires_days.map(|d| now + u64::from(d) * 86_400),
        });
        self.persist(&next)?;
        *file = Some(next);
        tracing::info!(token = name, "API token created");
        Ok(token)
    }

    pub fn tokens(&self) -> Vec<TokenInfo> {
        lock(&self.file)
            .iter()
            .flat_map(|f| &f.tokens)
            .map(|t| TokenInfo {
                name: t.name.clone(),
                created_unix: t.created_unix,
                expires_unix: t.expires_unix,
            })
            .collect()
    }

    pub fn delete_token(&self, name: &str) -> Result<(), AuthError> {
        let mut file = lock(&self.file);
        let Some(current) = file.as_ref() else {
            return Err(AuthError::TokenNotFound(name.into()));
        };
        if !current.tokens.iter().any(|t| t.name == name) {
            return Err(AuthError::TokenNotFound(name.into()));
        }
        let mut next = current.clone();
        next.tokens.retain(|t| t.name != name);
        self.persist(&next)?;
        *file = Some(next);
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
}
