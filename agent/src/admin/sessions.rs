//! Login sessions: a random bearer token per login, kept in memory (an agent restart logs
//! everyone out), expiring after [`IDLE`] without use or [`ABSOLUTE`] after login. Each
//! session remembers the credential epoch it was opened under, so that the caller can
//! refuse one opened before a password change.

use std::collections::HashMap;
use std::time::Duration;

pub const IDLE: Duration = Duration::from_secs(30 * 60);
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
pub const MAX_SESSIONS: usize = 64;
pub const PREFIX: &str = "aps_";

/// Time on a monotonic clock (origin irrelevant).
pub type Time = Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub username: String,
    /// The credential epoch the login proved.
    pub epoch: u64,
    pub created: Time,
    pub last_used: Time,
}

#[derive(Default)]
pub struct Sessions {
    by_token: HashMap<String, Session>,
}

impl Sessions {
    /// Opens a session and returns its token; the oldest session goes when there are too many.
    pub fn open(&mut self, username: &str, epoch: u64, now: Time) -> String {
        self.expire(now);
        if self.by_token.len() >= MAX_SESSIONS {
            if let Some(oldest) = self
                .by_token
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(t, _)| t.clone())
            {
                self.by_token.remove(&oldest);
            }
        }
        let token = super::random_token(PREFIX);
        self.by_token.insert(
            token.clone(),
            Session {
                username: username.into(),
                epoch,
                created: now,
                last_used: now,
            },
        );
        token
    }

    /// The session for `token`, refreshed, if it is live.
    pub fn touch(&mut self, token: &str, now: Time) -> Option<Session> {
        self.expire(now);
        let s = self.by_token.get_mut(token)?;
        s.last_used = now;
        Some(s.clone())
    }

    pub fn close(&mut self, token: &str) -> bool {
        self.by_token.remove(token).is_some()
    }

    /// Ends every session (after a password change or a reset).
    pub fn close_all(&mut self) {
        self.by_token.clear();
    }

    fn expire(&mut self, now: Time) {
        self.by_token.retain(|_, s| {
            now.saturating_sub(s.last_used) < IDLE && now.saturating_sub(s.created) < ABSOLUTE
        });
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(x: u64) -> Time {
        Duration::from_secs(x * 60)
    }

    #[test]
    fn tokens_are_random_and_prefixed() {
        let mut s = Sessions::default();
        let a = s.open("admin", 0, m(0));
        let b = s.open("admin", 0, m(0));
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 64);
    }

    #[test]
    fn idle_sessions_expire_and_use_keeps_them_alive() {
        let mut s = Sessions::default();
        let t = s.open("admin", 0, m(0));
        assert!(s.touch(&t, m(29)).is_some());
        assert!(s.touch(&t, m(58)).is_some(), "used at 29 min: alive at 58");
        assert!(s.touch(&t, m(89)).is_none(), "31 min idle: gone");
    }

    #[test]
    fn sessions_end_after_twelve_hours_whatever_the_use() {
        let mut s = Sessions::default();
        let t = s.open("admin", 0, m(0));
        for i in 1..(12 * 60 / 20) {
            assert!(s.touch(&t, m(i * 20)).is_some(), "at {} min", i * 20);
        }
        assert!(s.touch(&t, m(12 * 60)).is_none());
    }

    #[test]
    fn close_and_limit() {
        let mut s = Sessions::default();
        let first = s.open("admin", 0, m(0));
        for i in 0..MAX_SESSIONS {
            s.open("admin", 0, m(1) + Duration::from_secs(i as u64));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.touch(&first, m(2)).is_none(), "the oldest was dropped");
        let t = s.open("admin", 0, m(3));
        assert!(s.close(&t));
        assert!(s.touch(&t, m(3)).is_none());
        s.close_all();
        assert!(s.is_empty());
    }
}
