//! API accounts for the vendor's command API (`/api/command`): OAuth 2.0 clients that trade
//! their id and secret for short-lived bearer tokens (RFC 6749, client credentials grant).
//!
//! - The accounts are site settings ([`crate::site::SiteSettings::api_accounts`]), so they
//!   travel to the backup with data sync: a backup that takes over accepts the same
//!   scripts. Each keeps its id, name, access and the SHA-256 of its secret; the secret is
//!   256 random bits shown once when the account is made, so a fast hash is enough, and
//!   it is compared in constant time ([`super::same`]).
//! - The access tokens live in memory only ([`Tokens`]): an agent restart, a reboot or a
//!   takeover by the backup means asking for a new one. A token lasts [`TOKEN_LIFETIME`];
//!   an account holds at most [`MAX_TOKENS_PER_ACCOUNT`] live tokens, the oldest dropped.
//!   A token is good only while its account exists, so deleting an account (or a data
//!   sync that brings a site without it) ends its tokens.
//! - Failed client authentications are limited per client address exactly like admin
//!   logins ([`super::limiter`]).
//!
//! Everything here is plain logic over values and an injected clock; the routes are in
//! `api/api_accounts.rs`, `api/oauth.rs` and `api/command.rs`.

use super::limiter::{Failure, Limiter};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many API accounts.
pub const MAX_ACCOUNTS: usize = 32;
/// An account's name: 1 to this many characters.
pub const MAX_NAME: usize = 64;
/// How long an access token lasts.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Live tokens per account; a new one beyond this drops the oldest.
pub const MAX_TOKENS_PER_ACCOUNT: usize = 30;
/// A client id: this many lowercase hex digits.
pub const CLIENT_ID_LEN: usize = 32;

/// Time on a monotonic clock (origin irrelevant).
pub type Time = Duration;

/// What an account may do with the command API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// `check_health` only.
    ReadOnly,
    /// Every action, `set_failover_role` included.
    Full,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::ReadOnly => "read_only",
            Access::Full => "full",
        })
    }
}

/// An account as the site settings keep it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiAccount {
    pub client_id: String,
    pub name: String,
    pub access: Access,
    /// SHA-256 of the secret, in hex.
    pub secret_sha256: String,
    pub created_unix: u64,
}

/// An account as listed: never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub client_id: String,
    pub name: String,
    pub access: Access,
    pub created_unix: u64,
}

impl From<&ApiAccount> for AccountView {
    fn from(a: &ApiAccount) -> AccountView {
        AccountView {
            client_id: a.client_id.clone(),
            name: a.name.clone(),
            access: a.access,
            created_unix: a.created_unix,
        }
    }
}

/// A new account, with the only copy of its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAccount {
    pub client_id: String,
    pub client_secret: String,
    pub name: String,
    pub access: Access,
}

/// Why an account was not made or removed; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("an API account's name is 1 to {MAX_NAME} characters, without control characters")]
    BadName,
    #[error("at most {MAX_ACCOUNTS} API accounts may exist: remove one first")]
    TooMany,
    #[error("no API account has the client id {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Site(#[from] crate::site::SiteError),
}

/// Adds an account named `name` to `accounts`; answers it with its secret.
pub fn add(
    accounts: &mut Vec<ApiAccount>,
    name: &str,
    access: Access,
    now_unix: u64,
) -> Result<NewAccount, AccountError> {
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME || name.chars().any(char::is_control) {
        return Err(AccountError::BadName);
    }
    if accounts.len() >= MAX_ACCOUNTS {
        return Err(AccountError::TooMany);
    }
    let client_id = super::random_token("")
        .chars()
        .take(CLIENT_ID_LEN)
        .collect::<String>();
    let client_secret = super::random_token("");
    accounts.push(ApiAccount {
        client_id: client_id.clone(),
        name: name.to_string(),
        access,
        secret_sha256: super::sha256_hex(&client_secret),
        created_unix: now_unix,
    });
    Ok(NewAccount {
        client_id,
        client_secret,
        name: name.to_string(),
        access,
    })
}

/// Removes the account `client_id` from `accounts`.
pub fn remove(accounts: &mut Vec<ApiAccount>, client_id: &str) -> Result<(), AccountError> {
    let before = accounts.len();
    accounts.retain(|a| a.client_id != client_id);
    if accounts.len() == before {
        return Err(AccountError::NotFound(
            client_id.chars().take(CLIENT_ID_LEN + 8).collect(),
        ));
    }
    Ok(())
}

/// The access of the account `client_id` if `secret` is its secret. The secret's digest
/// is compared with `same`, which must take the same time whatever the bytes
/// ([`super::same`]; a parameter so that a test can see it used).
fn verify_with(
    accounts: &[ApiAccount],
    client_id: &str,
    secret: &str,
    same: impl Fn(&[u8], &[u8]) -> bool,
) -> Option<Access> {
    let digest = super::sha256_hex(secret);
    let account = accounts.iter().find(|a| a.client_id == client_id)?;
    same(account.secret_sha256.as_bytes(), digest.as_bytes()).then_some(account.access)
}

/// The access of the account `client_id` if `secret` is its secret.
pub fn verify(accounts: &[ApiAccount], client_id: &str, secret: &str) -> Option<Access> {
    verify_with(accounts, client_id, secret, super::same)
}

/// One live access token.
#[derive(Clone, Debug)]
struct Live {
    client_id: String,
    issued: Time,
}

/// The live access tokens, by the SHA-256 of the token (a lookup's timing then says
/// nothing about the token).
#[derive(Default)]
pub struct Tokens {
    live: HashMap<String, Live>,
}

impl Tokens {
    /// A new token for `client_id`; the account's oldest goes beyond
    /// [`MAX_TOKENS_PER_ACCOUNT`].
    pub fn issue(&mut self, client_id: &str, now: Time) -> String {
        self.expire(now);
        let mine: Vec<(&String, Time)> = self
            .live
            .iter()
            .filter(|(_, l)| l.client_id == client_id)
            .map(|(k, l)| (k, l.issued))
            .collect();
        if mine.len() >= MAX_TOKENS_PER_ACCOUNT {
            if let Some(oldest) = mine
                .iter()
                .min_by_key(|(_, t)| *t)
                .map(|(k, _)| (*k).clone())
            {
                self.live.remove(&oldest);
            }
        }
        let token = super::random_token("");
        self.live.insert(
            super::sha256_hex(&token),
            Live {
                client_id: client_id.to_string(),
                issued: now,
            },
        );
        token
    }

    /// The client id `token` was issued to, while it is live.
    pub fn client_of(&mut self, token: &str, now: Time) -> Option<String> {
        self.expire(now);
        self.live
            .get(&super::sha256_hex(token))
            .map(|l| l.client_id.clone())
    }

    /// Ends every token of `client_id`; answers how many there were.
    pub fn revoke(&mut self, client_id: &str) -> usize {
        let before = self.live.len();
        self.live.retain(|_, l| l.client_id != client_id);
        before - self.live.len()
    }

    /// How many tokens of `client_id` are live.
    pub fn count(&self, client_id: &str) -> usize {
        self.live
            .values()
            .filter(|l| l.client_id == client_id)
            .count()
    }

    fn expire(&mut self, now: Time) {
        self.live
            .retain(|_, l| now.saturating_sub(l.issued) < TOKEN_LIFETIME);
    }
}

/// Who called the command API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub client_id: String,
    pub name: String,
    pub access: Access,
}

/// Why a client was not given a token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("unknown client id or wrong client secret")]
    BadClient,
    #[error("too many failed client authentications from this address: try again in {} s", .0.as_secs().max(1))]
    Locked(Duration),
}

/// An access token granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub access_token: String,
    pub expires_in: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The command API's live state: tokens and the failed-authentication limiter.
pub struct ApiAccounts {
    tokens: Mutex<Tokens>,
    limiter: Mutex<Limiter>,
    origin: Instant,
}

impl Default for ApiAccounts {
    fn default() -> ApiAccounts {
        ApiAccounts {
            tokens: Mutex::new(Tokens::default()),
            limiter: Mutex::new(Limiter::default()),
            origin: Instant::now(),
        }
    }
}

impl ApiAccounts {
    fn now(&self) -> Time {
        self.origin.elapsed()
    }

    /// The client credentials grant: a token for `client_id` if `secret` is its secret in
    /// `accounts`. A client address locked out by failures is refused before checking.
    pub fn grant(
        &self,
        accounts: &[ApiAccount],
        ip: IpAddr,
        client_id: &str,
        secret: &str,
    ) -> Result<Grant, GrantError> {
        let now = self.now();
        let mut limiter = lock(&self.limiter);
        limiter.check(ip, now).map_err(GrantError::Locked)?;
        if verify(accounts, client_id, secret).is_none() {
            return Err(match limiter.failure(ip, now) {
                Failure::LockedOut(d) => {
                    tracing::warn!(client = %ip, lock_s = d.as_secs(), "too many failed API client authentications: address locked out");
                    GrantError::Locked(d)
                }
                Failure::Counted { remaining } => {
                    tracing::info!(client = %ip, remaining, "failed API client authentication");
                    GrantError::BadClient
                }
            });
        }
        limiter.success(ip);
        drop(limiter);
        let access_token = lock(&self.tokens).issue(client_id, now);
        Ok(Grant {
            access_token,
            expires_in: TOKEN_LIFETIME,
        })
    }

    /// The caller a bearer token stands for, while the token is live and its account
    /// still exists in `accounts` (its access as the account has it now).
    pub fn caller(&self, accounts: &[ApiAccount], token: &str) -> Option<Caller> {
        let client_id = lock(&self.tokens).client_of(token, self.now())?;
        let account = accounts.iter().find(|a| a.client_id == client_id)?;
        Some(Caller {
            client_id,
            name: account.name.clone(),
            access: account.access,
        })
    }

    /// Ends every token of a removed account.
    pub fn revoke(&self, client_id: &str) -> usize {
        lock(&self.tokens).revoke(client_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn s(x: u64) -> Time {
        Duration::from_secs(x)
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 9));

    #[test]
    fn an_account_keeps_only_the_digest_of_its_secret() {
        let mut accounts = Vec::new();
        let new = add(&mut accounts, "nagios", Access::ReadOnly, 1_767_225_600).unwrap();
        assert_eq!(new.client_id.len(), CLIENT_ID_LEN);
        assert!(new.client_id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(new.client_secret.len(), 64, "256 random bits in hex");
        let stored = toml::to_string(&accounts[0]).unwrap();
        assert!(!stored.contains(&new.client_secret), "{stored}");
        assert!(stored.contains(&crate::admin::sha256_hex(&new.client_secret)));
        assert_eq!(
            verify(&accounts, &new.client_id, &new.client_secret),
            Some(Access::ReadOnly)
        );
        assert_eq!(verify(&accounts, &new.client_id, "wrong"), None);
        assert_eq!(verify(&accounts, "0000", &new.client_secret), None);
        let other = add(&mut accounts, "nagios", Access::Full, 0).unwrap();
        assert_ne!(other.client_id, new.client_id);
        assert_ne!(other.client_secret, new.client_secret);
        assert_eq!(AccountView::from(&accounts[1]).access, Access::Full);
    }

    #[test]
    fn accounts_are_kept_in_the_site_settings_without_their_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let site = crate::site::SiteStore::open(dir.path());
        let new = site
            .settings()
            .try_update(|s| add(&mut s.api_accounts, "ops", Access::Full, 7))
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join(crate::site::SETTINGS_FILE)).unwrap();
        assert!(text.contains("[[api_accounts]]"), "{text}");
        assert!(!text.contains(&new.client_secret), "{text}");
        let again = crate::site::SiteStore::open(dir.path());
        let accounts = again.settings().current().api_accounts;
        assert_eq!(
            verify(&accounts, &new.client_id, &new.client_secret),
            Some(Access::Full)
        );
    }

    #[test]
    fn the_secret_is_compared_by_digest_with_the_constant_time_comparison() {
        let mut accounts = Vec::new();
        let new = add(&mut accounts, "ops", Access::Full, 0).unwrap();
        let seen = RefCell::new(Vec::new());
        let recording = |a: &[u8], b: &[u8]| {
            seen.borrow_mut().push((a.to_vec(), b.to_vec()));
            crate::admin::same(a, b)
        };
        assert_eq!(
            verify_with(&accounts, &new.client_id, &new.client_secret, recording),
            Some(Access::Full)
        );
        assert_eq!(verify_with(&accounts, &new.client_id, "x", recording), None);
        let seen = seen.into_inner();
        assert_eq!(seen.len(), 2, "every check of a known client compares");
        for (stored, given) in &seen {
            assert_eq!(stored, accounts[0].secret_sha256.as_bytes());
            assert_eq!(given.len(), stored.len(), "digests, of equal length");
        }
    }

    #[test]
    fn names_and_the_number_of_accounts_are_bounded() {
        let mut accounts = Vec::new();
        for bad in ["", "a\nb", &"x".repeat(MAX_NAME + 1)] {
            assert!(matches!(
                add(&mut accounts, bad, Access::Full, 0),
                Err(AccountError::BadName)
            ));
        }
        assert!(add(&mut accounts, &"é".repeat(MAX_NAME), Access::Full, 0).is_ok());
        for i in 1..MAX_ACCOUNTS {
            add(&mut accounts, &format!("a{i}"), Access::Full, 0).unwrap();
        }
        assert!(matches!(
            add(&mut accounts, "one more", Access::Full, 0),
            Err(AccountError::TooMany)
        ));
        assert_eq!(accounts.len(), MAX_ACCOUNTS);
        let id = accounts[3].client_id.clone();
        remove(&mut accounts, &id).unwrap();
        assert!(matches!(
            remove(&mut accounts, &id),
            Err(AccountError::NotFound(_))
        ));
        assert_eq!(accounts.len(), MAX_ACCOUNTS - 1);
    }

    #[test]
    fn an_account_holds_at_most_thirty_tokens_and_the_oldest_goes() {
        let mut t = Tokens::default();
        let first = t.issue("a", s(0));
        let second = t.issue("a", s(1));
        for i in 2..MAX_TOKENS_PER_ACCOUNT as u64 {
            t.issue("a", s(i));
        }
        let other = t.issue("b", s(0));
        assert_eq!(t.count("a"), MAX_TOKENS_PER_ACCOUNT);
        let newest = t.issue("a", s(100));
        assert_eq!(t.count("a"), MAX_TOKENS_PER_ACCOUNT);
        assert_eq!(t.client_of(&first, s(100)), None, "the oldest was dropped");
        assert_eq!(t.client_of(&second, s(100)).as_deref(), Some("a"));
        assert_eq!(t.client_of(&newest, s(100)).as_deref(), Some("a"));
        assert_eq!(
            t.client_of(&other, s(100)).as_deref(),
            Some("b"),
            "another account's tokens are not counted"
        );
    }

    #[test]
    fn tokens_expire_after_an_hour_and_die_with_their_account() {
        let mut t = Tokens::default();
        let token = t.issue("a", s(0));
        assert_eq!(t.client_of(&token, s(3599)).as_deref(), Some("a"));
        assert_eq!(t.client_of(&token, s(3600)), None);
        let token = t.issue("a", s(4000));
        t.issue("a", s(4000));
        let kept = t.issue("b", s(4000));
        assert_eq!(t.revoke("a"), 2);
        assert_eq!(t.client_of(&token, s(4001)), None);
        assert_eq!(t.client_of(&kept, s(4001)).as_deref(), Some("b"));
        assert_eq!(t.client_of("not a token", s(4001)), None);
    }

    #[test]
    fn a_token_is_granted_for_the_right_secret_and_ends_with_its_account() {
        let service = ApiAccounts::default();
        let mut accounts = Vec::new();
        let new = add(&mut accounts, "ops", Access::ReadOnly, 0).unwrap();
        let grant = service
            .grant(&accounts, IP, &new.client_id, &new.client_secret)
            .unwrap();
        assert_eq!(grant.expires_in, TOKEN_LIFETIME);
        let caller = service.caller(&accounts, &grant.access_token).unwrap();
        assert_eq!(
            (caller.name.as_str(), caller.access),
            ("ops", Access::ReadOnly)
        );
        // An account gone from the site settings (removed, or not in a synced site) has
        // no callers, even before its tokens are revoked.
        assert_eq!(service.caller(&[], &grant.access_token), None);
        remove(&mut accounts, &new.client_id).unwrap();
        assert_eq!(service.revoke(&new.client_id), 1);
        assert_eq!(service.caller(&accounts, &grant.access_token), None);
    }

    #[test]
    fn failed_client_authentications_lock_the_address_out() {
        let service = ApiAccounts::default();
        let mut accounts = Vec::new();
        let new = add(&mut accounts, "ops", Access::Full, 0).unwrap();
        for _ in 1..crate::admin::limiter::FAILURES {
            assert_eq!(
                service.grant(&accounts, IP, &new.client_id, "guess"),
                Err(GrantError::BadClient)
            );
        }
        assert!(matches!(
            service.grant(&accounts, IP, &new.client_id, "guess"),
            Err(GrantError::Locked(_))
        ));
        assert!(
            matches!(
                service.grant(&accounts, IP, &new.client_id, &new.client_secret),
                Err(GrantError::Locked(_))
            ),
            "the right secret waits for the lock too"
        );
        let elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10));
        assert!(service
            .grant(&accounts, elsewhere, &new.client_id, &new.client_secret)
            .is_ok());
    }
}
