//! The admin account and API tokens, kept in `<data>/config/admin.toml` (a
//! `store::Document`: schema `version = 2`, a `revision` counter, written atomically, mode
//! 0600), plus the in-memory sessions and login limiter. No file means the factory default
//! account, `admin` / `password`, which must be changed before anything else is allowed.
//! The account is local: it administers this box and never travels to a failover peer.
//!
//! - Fail closed: a file that is there but cannot be used (unreadable, does not parse, an
//!   unknown schema version, no account) refuses every login and every token
//!   ([`AuthError::StoreUnreadable`]) and is reported in status and on the console, until
//!   it is fixed and the agent restarted, or a config reset removes it (no file: the
//!   factory default account again).
//! - Logins are costly (argon2id, 7 MiB each): at most [`HASHING_PERMITS`] hashes run at
//!   once, and further attempts are refused at once ([`AuthError::Busy`]) rather than
//!   queued; an attempt is counted by the limiter before it is hashed, and one attempt per
//!   client is in flight at a time.
//! - The credential epoch (in the account, bumped by each password change) is read before
//!   the hash and checked again when the session opens, and every session carries it: a
//!   login proved with a password that has since changed opens nothing. A password change
//!   also revokes every API token unless asked to keep them.
//! - API tokens have a scope, `read` or `admin` (see `api::auth::required_scope`).
//!
//! Schema history: version 1 had no credential epoch and no token scope; it is read as
//! epoch 0 with `admin` tokens and written as version 2 at the next change.

use super::limiter::{Failure, Limiter, Refused};
use super::password::{self, PasswordError, DEFAULT_PASSWORD, DEFAULT_USERNAME};
use super::sessions::Sessions;
use super::sha256_hex;
use crate::model::{unix_now, TokenScope};
use crate::store::{Document, DocumentError, Schema};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub const FILE: &str = "admin.toml";
pub const TOKEN_PREFIX: &str = "apt_";
const MAX_TOKENS: usize = 32;
/// Password hashes (7 MiB each) that may run at once. Two, so that a client holding one
/// (one attempt per client) cannot keep another client out.
pub const HASHING_PERMITS: usize = 2;
/// What a refused attempt is told to wait before trying again while the hashing is busy.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Account {
    username: String,
    password_hash: String,
    changed_unix: u64,
    /// Bumped by each password change; 0 for the factory default account.
    credential_epoch: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct StoredToken {
    name: String,
    /// SHA-256 of the token, hex: the token itself is shown once and never stored.
    sha256: String,
    created_unix: u64,
    expires_unix: Option<u64>,
    scope: TokenScope,
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

/// Schema version 1: no credential epoch, no token scope.
mod v1 {
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Account {
        pub username: String,
        pub password_hash: String,
        pub changed_unix: u64,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct StoredToken {
        pub name: String,
        pub sha256: String,
        pub created_unix: u64,
        pub expires_unix: Option<u64>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct AdminFile {
        #[serde(default)]
        pub account: Option<Account>,
        #[serde(default)]
        pub tokens: Vec<StoredToken>,
    }
}

impl From<v1::AdminFile> for AdminFile {
    fn from(old: v1::AdminFile) -> AdminFile {
        AdminFile {
            account: old.account.map(|a| Account {
                username: a.username,
                password_hash: a.password_hash,
                changed_unix: a.changed_unix,
                credential_epoch: 0,
            }),
            // Tokens made before scopes existed could do everything: they stay so.
            tokens: old
                .tokens
                .into_iter()
                .map(|t| StoredToken {
                    name: t.name,
                    sha256: t.sha256,
                    created_unix: t.created_unix,
                    expires_unix: t.expires_unix,
                    scope: TokenScope::Admin,
                })
                .collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InvalidAdminFile {
    #[error("no [account] section")]
    NoAccount,
}

impl Schema for AdminFile {
    const VERSION: u32 = 2;
    type Invalid = InvalidAdminFile;

    /// A file always has the account: only the absence of a file means the default one.
    fn validate(&self) -> Result<(), InvalidAdminFile> {
        match self.account {
            Some(_) => Ok(()),
            None => Err(InvalidAdminFile::NoAccount),
        }
    }

    fn migrate(version: u32, sections: toml::Table) -> Option<Result<Self, toml::de::Error>> {
        match version {
            1 => Some(sections.try_into::<v1::AdminFile>().map(AdminFile::from)),
            _ => None,
        }
    }
}

pub type AdminFileError = DocumentError<InvalidAdminFile>;

/// Who a request runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Session { username: String },
    Token { name: String, scope: TokenScope },
}

impl Principal {
    /// What the caller may do: a session is the administrator.
    pub fn scope(&self) -> TokenScope {
        match self {
            Principal::Session { .. } => TokenScope::Admin,
            Principal::Token { scope, .. } => *scope,
        }
    }
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
    #[error("too many logins are being checked right now: try again in {} s", BUSY_RETRY.as_secs())]
    Busy,
    #[error("a login from this address is already being checked: wait for its answer")]
    InFlight,
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("the password changed while this login was checked: log in with the new password")]
    CredentialsChanged,
    #[error(
        "the admin account file cannot be used, so every login is refused: {0}; fix it and \
         restart the agent, or do a config reset (factory default account)"
    )]
    StoreUnreadable(String),
    #[error("this API token has the {have} scope; this call needs {need}")]
    InsufficientScope { have: TokenScope, need: TokenScope },
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
    pub scope: TokenScope,
}

/// What a password change does besides the password.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangeOptions {
    /// Keep the API tokens (else they are all revoked).
    pub keep_tokens: bool,
}

pub struct Admin {
    file: Document<AdminFile>,
    sessions: Mutex<Sessions>,
    limiter: Mutex<Limiter>,
    hashing: Arc<Semaphore>,
    origin: Instant,
}

/// A login attempt under way: it holds a hashing permit and the client's in-flight mark,
/// and gives both back when dropped, wherever that is (the hash runs to its end on a
/// blocking thread even when the client goes away, and keeps both until then).
struct Attempt {
    admin: Arc<Admin>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        lock(&self.admin.limiter).end(self.ip);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Admin {
    /// Loads `<config_dir>/admin.toml`. A file that is there but cannot be used is
    /// reported, and every login is refused while it is so.
    pub fn open(config_dir: &Path) -> Admin {
        let file = Document::load(config_dir.join(FILE));
        if let Some(e) = file.load_error() {
            tracing::error!(
                "admin account file cannot be used: every login is refused until it is fixed \
                 (then restart the agent) or a config reset: {e}"
            );
        }
        Admin {
            file,
            sessions: Mutex::new(Sessions::default()),
            limiter: Mutex::new(Limiter::default()),
            hashing: Arc::new(Semaphore::new(HASHING_PERMITS)),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub fn load_error(&self) -> Option<String> {
        self.file.load_error()
    }

    /// Refuses everything while the file on disk is not in force.
    fn usable(&self) -> Result<(), AuthError> {
        match self.file.load_error() {
            Some(e) => Err(AuthError::StoreUnreadable(e)),
            None => Ok(()),
        }
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

    /// The credential epoch in force (0 for the factory default account).
    fn epoch(&self) -> u64 {
        self.file
            .with(|f| f.account.as_ref().map_or(0, |a| a.credential_epoch))
    }

    /// A hashing permit, or [`AuthError::Busy`] at once when they are all taken.
    fn hashing_permit(&self) -> Result<OwnedSemaphorePermit, AuthError> {
        self.hashing
            .clone()
            .try_acquire_owned()
            .map_err(|_| AuthError::Busy)
    }

    /// Checks a user name and password and returns the credential epoch they proved. The
    /// attempt is counted before the slow hash, which runs on a blocking thread under a
    /// hashing permit.
    async fn check_password(
        self: &Arc<Self>,
        ip: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<u64, AuthError> {
        self.usable()?;
        let refusal = |refused| match refused {
            Refused::Locked(wait) => AuthError::Locked(wait),
            Refused::Busy => AuthError::InFlight,
        };
        // Under the limiter's lock, so that a client refused for having an attempt in
        // flight never holds a hashing permit, even for a moment.
        let (permit, counted) = {
            let mut limiter = lock(&self.limiter);
            let now = self.now();
            limiter.may_begin(ip, now).map_err(refusal)?;
            let permit = self.hashing_permit()?;
            (permit, limiter.begin(ip, now).map_err(refusal)?)
        };
        let attempt = Attempt {
            admin: self.clone(),
            ip,
            _permit: permit,
        };
        // Read before the hash: a change while it runs shows as a different epoch.
        let (stored, epoch) = self.file.with(|f| {
            (
                f.account.clone(),
                f.account.as_ref().map_or(0, |a| a.credential_epoch),
            )
        });
        let (username, password) = (username.to_string(), password.to_string());
        let verdict = tokio::task::spawn_blocking(move || {
            let _attempt = attempt;
            match stored {
                None => {
                    super::same(username.as_bytes(), DEFAULT_USERNAME.as_bytes())
                        & super::same(password.as_bytes(), DEFAULT_PASSWORD.as_bytes())
                }
                Some(account) => {
                    // The hash is checked even for a wrong user name, so timing does not tell.
                    let user_ok = super::same(username.as_bytes(), account.username.as_bytes());
                    password::verify(&password, &account.password_hash) & user_ok
                }
            }
        })
        .await
        .unwrap_or(false);
        if verdict {
            lock(&self.limiter).success(ip);
            return Ok(epoch);
        }
        match counted {
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

    /// Opens a session for a login that proved `epoch`, unless the password has changed
    /// since.
    fn open_session(&self, username: &str, epoch: u64) -> Result<String, AuthError> {
        let mut sessions = lock(&self.sessions);
        if self.epoch() != epoch {
            return Err(AuthError::CredentialsChanged);
        }
        Ok(sessions.open(username, epoch, self.now()))
    }

    pub async fn login(
        self: &Arc<Self>,
        ip: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<Login, AuthError> {
        let epoch = self.check_password(ip, username, password).await?;
        let token = self.open_session(username, epoch)?;
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

    /// Changes the password (proved by the current one): the credential epoch moves on,
    /// every session ends and, unless `options` keep them, every API token is revoked.
    pub async fn change_password(
        self: &Arc<Self>,
        ip: IpAddr,
        username: &str,
        current: &str,
        new: &str,
        options: ChangeOptions,
    ) -> Result<(), AuthError> {
        let epoch = self.check_password(ip, username, current).await?;
        password::check_rules(new, current, username)?;
        let permit = self.hashing_permit()?;
        let new_owned = new.to_string();
        let hash = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            password::hash(&new_owned)
        })
        .await
        .map_err(|e| AuthError::Encode(e.to_string()))?
        .map_err(AuthError::Encode)?;
        let (me, user) = (self.clone(), username.to_string());
        let revoked = crate::store::blocking(move || {
            me.file.try_update(|f| {
                let account = f.account.get_or_insert_with(|| Account {
                    username: user,
                    password_hash: String::new(),
                    changed_unix: 0,
                    credential_epoch: 0,
                });
                // Two changes proved by the same password: only the first goes ahead.
                if account.credential_epoch != epoch {
                    return Err(AuthError::CredentialsChanged);
                }
                account.password_hash = hash;
                account.changed_unix = unix_now();
                account.credential_epoch = epoch + 1;
                let revoked = if options.keep_tokens {
                    0
                } else {
                    std::mem::take(&mut f.tokens).len()
                };
                Ok::<_, AuthError>(revoked)
            })
        })
        .await?;
        lock(&self.sessions).close_all();
        tracing::warn!(
            client = %ip,
            user = username,
            tokens_revoked = revoked,
            "admin password changed; every session ended"
        );
        Ok(())
    }

    /// Who a bearer token belongs to. While the default password is in force nothing but
    /// login and the password change is allowed, whatever the token; while the account
    /// file cannot be used, nothing is.
    pub fn authenticate(&self, bearer: Option<&str>) -> Result<Principal, AuthError> {
        self.usable()?;
        if self.is_default() {
            return Err(AuthError::DefaultPassword);
        }
        let token = bearer.ok_or(AuthError::Missing)?;
        if token.starts_with(super::sessions::PREFIX) {
            let session = lock(&self.sessions)
                .touch(token, self.now())
                .ok_or(AuthError::Invalid)?;
            if session.epoch != self.epoch() {
                return Err(AuthError::Invalid);
            }
            return Ok(Principal::Session {
                username: session.username,
            });
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
                    .map(|t| (t.name.clone(), t.scope))
            });
            return found
                .map(|(name, scope)| Principal::Token { name, scope })
                .ok_or(AuthError::Invalid);
        }
        Err(AuthError::Invalid)
    }

    /// Creates an API token; the returned string is the only copy.
    pub fn create_token(
        &self,
        name: &str,
        expires_days: Option<u32>,
        scope: TokenScope,
    ) -> Result<String, AuthError> {
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
                scope,
            });
            Ok(token)
        })?;
        tracing::info!(token = name, %scope, "API token created");
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
                    scope: t.scope,
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
    const KEEP: ChangeOptions = ChangeOptions { keep_tokens: true };

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
                    .change_password(IP, "admin", "password", "short", KEEP)
                    .await,
                Err(AuthError::Password(PasswordError::TooShort))
            ));
            assert!(admin.is_default(), "a refused change changes nothing");
            admin
                .change_password(IP, "admin", "password", NEW, KEEP)
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
            admin.create_token("backup", None, TokenScope::Admin),
            Err(AuthError::DefaultPassword)
        ));
        rt().block_on(admin.change_password(IP, "admin", "password", NEW, KEEP))
            .unwrap();
        let token = admin
            .create_token("backup", Some(30), TokenScope::Admin)
            .unwrap();
        assert!(token.starts_with(TOKEN_PREFIX));
        assert!(matches!(
            admin.create_token("backup", None, TokenScope::Admin),
            Err(AuthError::TokenExists(_))
        ));
        assert!(matches!(
            admin.create_token("no spaces", None, TokenScope::Admin),
            Err(AuthError::BadTokenName)
        ));
        assert_eq!(
            admin.authenticate(Some(&token)).unwrap(),
            Principal::Token {
                name: "backup".into(),
                scope: TokenScope::Admin
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
    fn a_file_that_cannot_be_used_refuses_every_login_and_is_reported() {
        for (what, text) in [
            ("no account", "version = 2\n"),
            ("does not parse", "version = "),
            (
                "unknown version",
                "version = 9\n[account]\nusername = \"admin\"\n",
            ),
            (
                "a field missing",
                "version = 2\n[account]\nusername = \"admin\"\n",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(FILE), text).unwrap();
            let admin = Arc::new(Admin::open(dir.path()));
            assert!(admin.load_error().unwrap().contains(FILE), "{what}");
            let refused = rt().block_on(admin.login(IP, "admin", "password"));
            assert!(
                matches!(refused, Err(AuthError::StoreUnreadable(_))),
                "{what}: the factory default must not open: {refused:?}"
            );
            assert!(
                matches!(
                    admin.authenticate(Some("apt_x")),
                    Err(AuthError::StoreUnreadable(_))
                ),
                "{what}"
            );
        }
        // Unreadable, as opposed to absent: a directory where the file should be.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(FILE)).unwrap();
        let admin = Arc::new(Admin::open(dir.path()));
        assert!(matches!(
            rt().block_on(admin.login(IP, "admin", "password")),
            Err(AuthError::StoreUnreadable(_))
        ));
        // No file at all (a config reset makes a new file system): the factory default.
        let fresh = tempfile::tempdir().unwrap();
        let admin = Arc::new(Admin::open(fresh.path()));
        assert_eq!(admin.load_error(), None);
        assert!(rt().block_on(admin.login(IP, "admin", "password")).is_ok());
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
        admin
            .create_token("backup", None, TokenScope::Admin)
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.starts_with("version = 2\nrevision = 1\n"), "{text}");
        assert!(text.contains(&hash), "{text}");
    }

    #[test]
    fn a_corrupt_file_is_not_overwritten_by_a_password_change() {
        let dir = tempfile::tempdir().unwrap();
        let corrupt = "version = 2\n[account]\n";
        std::fs::write(dir.path().join(FILE), corrupt).unwrap();
        let admin = Arc::new(Admin::open(dir.path()));
        let err = rt()
            .block_on(admin.change_password(IP, "admin", "password", NEW, KEEP))
            .unwrap_err();
        assert!(matches!(err, AuthError::StoreUnreadable(_)), "{err}");
        let err = admin
            .create_token("backup", None, TokenScope::Admin)
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

    /// An account with NEW as its password, changed from the default.
    fn changed(dir: &Path) -> Arc<Admin> {
        let admin = Arc::new(Admin::open(dir));
        rt().block_on(admin.change_password(IP, "admin", "password", NEW, KEEP))
            .unwrap();
        admin
    }

    #[test]
    fn a_version_1_file_with_tokens_migrates_to_admin_scope_and_epoch_0() {
        let dir = tempfile::tempdir().unwrap();
        let hash = password::hash(NEW).unwrap();
        let token = "apt_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        // What the firmware before token scopes wrote (schema version 1).
        let old = format!(
            "version = 1\nrevision = 4\n\n[account]\nusername = \"admin\"\n\
             password_hash = \"{hash}\"\nchanged_unix = 1767225600\n\n\
             [[tokens]]\nname = \"backup\"\nsha256 = \"{}\"\ncreated_unix = 1767225700\n",
            sha256_hex(token)
        );
        std::fs::write(dir.path().join(FILE), &old).unwrap();
        let admin = Arc::new(Admin::open(dir.path()));
        assert_eq!(admin.load_error(), None);
        assert_eq!(
            admin.authenticate(Some(token)).unwrap(),
            Principal::Token {
                name: "backup".into(),
                scope: TokenScope::Admin
            }
        );
        assert_eq!(admin.tokens()[0].scope, TokenScope::Admin);
        assert_eq!(admin.epoch(), 0);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE)).unwrap(),
            old,
            "reading does not write"
        );
        admin
            .create_token("monitor", None, TokenScope::Read)
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.starts_with("version = 2\nrevision = 5\n"), "{text}");
        assert!(text.contains("credential_epoch = 0"), "{text}");
        assert_eq!(text.matches("scope = \"admin\"").count(), 1, "{text}");
        assert_eq!(text.matches("scope = \"read\"").count(), 1, "{text}");
        let again = Admin::open(dir.path());
        assert_eq!(again.load_error(), None);
        assert_eq!(again.tokens().len(), 2);
    }

    #[test]
    fn a_read_token_has_the_read_scope() {
        let dir = tempfile::tempdir().unwrap();
        let admin = changed(dir.path());
        let token = admin
            .create_token("monitor", None, TokenScope::Read)
            .unwrap();
        let who = admin.authenticate(Some(&token)).unwrap();
        assert_eq!(who.scope(), TokenScope::Read);
        let login = rt().block_on(admin.login(IP, "admin", NEW)).unwrap();
        assert_eq!(
            admin.authenticate(Some(&login.token)).unwrap().scope(),
            TokenScope::Admin
        );
    }

    #[test]
    fn a_password_change_revokes_tokens_unless_asked_to_keep_them() {
        let dir = tempfile::tempdir().unwrap();
        let admin = changed(dir.path());
        let token = admin
            .create_token("backup", None, TokenScope::Admin)
            .unwrap();
        let other = "other-Horse-8";
        rt().block_on(admin.change_password(IP, "admin", NEW, other, KEEP))
            .unwrap();
        assert!(admin.authenticate(Some(&token)).is_ok(), "kept");
        rt().block_on(admin.change_password(IP, "admin", other, NEW, ChangeOptions::default()))
            .unwrap();
        assert!(matches!(
            admin.authenticate(Some(&token)),
            Err(AuthError::Invalid)
        ));
        assert!(admin.tokens().is_empty());
        assert_eq!(admin.epoch(), 3, "default 0, then three changes");
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("credential_epoch = 3"), "persisted: {text}");
    }

    #[test]
    fn a_login_proved_before_a_password_change_opens_no_session() {
        let dir = tempfile::tempdir().unwrap();
        let admin = changed(dir.path());
        let rt = rt();
        // The old password is proved (the hash ran) ...
        let epoch = rt.block_on(admin.check_password(IP, "admin", NEW)).unwrap();
        // ... the password changes while the session is not open yet ...
        rt.block_on(admin.change_password(IP, "admin", NEW, "other-Horse-8", KEEP))
            .unwrap();
        // ... and the login is refused.
        assert!(matches!(
            admin.open_session("admin", epoch),
            Err(AuthError::CredentialsChanged)
        ));
        // A session opened under an old epoch is refused too, wherever it came from.
        let stale = lock(&admin.sessions).open("admin", epoch, admin.now());
        assert!(matches!(
            admin.authenticate(Some(&stale)),
            Err(AuthError::Invalid)
        ));
        let fresh = rt
            .block_on(admin.login(IP, "admin", "other-Horse-8"))
            .unwrap();
        assert!(admin.authenticate(Some(&fresh.token)).is_ok());
    }

    #[test]
    fn hashing_is_bounded_and_one_login_per_client_is_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let admin = changed(dir.path());
        let rt = rt();
        let held: Vec<_> = (0..HASHING_PERMITS)
            .map(|_| admin.hashing_permit().unwrap())
            .collect();
        assert!(matches!(
            rt.block_on(admin.login(IP, "admin", NEW)),
            Err(AuthError::Busy)
        ));
        assert_eq!(
            lock(&admin.limiter).begin(IP, admin.now()),
            Ok(Failure::Counted { remaining: 4 }),
            "a refused attempt was not hashed, so not counted"
        );
        drop(held);
        // That client has an attempt in flight (begun just above): a second one waits.
        assert!(matches!(
            rt.block_on(admin.login(IP, "admin", NEW)),
            Err(AuthError::InFlight)
        ));
        let other: IpAddr = "169.254.1.9".parse().unwrap();
        assert!(rt.block_on(admin.login(other, "admin", NEW)).is_ok());
        lock(&admin.limiter).end(IP);
        assert!(rt.block_on(admin.login(IP, "admin", NEW)).is_ok());
        assert_eq!(admin.hashing.available_permits(), HASHING_PERMITS);
    }

    #[test]
    fn parallel_bad_logins_hash_at_most_two_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let admin = changed(dir.path());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let results = rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..100u32 {
                let admin = admin.clone();
                let ip = IpAddr::V4((0xa9fe_0100 + i).into());
                tasks.push(tokio::spawn(async move {
                    admin.login(ip, "admin", "wrong-guess-1").await
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        });
        let busy = results
            .iter()
            .filter(|r| matches!(r, Err(AuthError::Busy)))
            .count();
        let hashed = results
            .iter()
            .filter(|r| matches!(r, Err(AuthError::BadCredentials)))
            .count();
        assert_eq!(busy + hashed, 100, "{results:?}");
        assert!(busy > 0, "the hashing permits ran out");
        assert_eq!(admin.hashing.available_permits(), HASHING_PERMITS);
    }
}
