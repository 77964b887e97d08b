//! Failed-login rate limiting, per client address, driven by an injected clock.
//!
//! Five failures within five minutes lock the address out for a minute; each further
//! lockout doubles, up to fifteen minutes. A success clears the address's record. At most
//! [`MAX_TRACKED`] addresses are remembered (the oldest record is dropped first), so a
//! flood of addresses cannot grow memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

pub const FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(300);
pub const FIRST_LOCK: Duration = Duration::from_secs(60);
pub const MAX_LOCK: Duration = Duration::from_secs(900);
pub const MAX_TRACKED: usize = 1024;

/// Time on a monotonic clock (origin irrelevant).
pub type Time = Duration;

#[derive(Clone, Debug, Default)]
struct Record {
    failures: Vec<Time>,
    locked_until: Option<Time>,
    lockouts: u32,
    last: Time,
}

#[derive(Default)]
pub struct Limiter {
    records: HashMap<IpAddr, Record>,
}

/// What a failure did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Counted; this many more are allowed before a lockout.
    Counted { remaining: usize },
    /// This failure locked the address out for this long.
    LockedOut(Duration),
}

impl Limiter {
    /// `Err(wait)` while the address is locked out.
    pub fn check(&self, ip: IpAddr, now: Time) -> Result<(), Duration> {
        match self.records.get(&ip).and_then(|r| r.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    pub fn failure(&mut self, ip: IpAddr, now: Time) -> Failure {
        if self.records.len() >= MAX_TRACKED && !self.records.contains_key(&ip) {
            if let Some(oldest) = self
                .records
                .iter()
                .min_by_key(|(_, r)| r.last)
                .map(|(k, _)| *k)
            {
                self.records.remove(&oldest);
            }
        }
        let r = self.records.entry(ip).or_default();
        r.last = now;
        r.failures.retain(|t| now.saturating_sub(*t) < WINDOW);
        r.failures.push(now);
        if r.failures.len() >= FAILURES {
            let lock = FIRST_LOCK
                .saturating_mul(1 << r.lockouts.min(8))
                .min(MAX_LOCK);
            r.lockouts += 1;
            r.failures.clear();
            r.locked_until = Some(now + lock);
            Failure::LockedOut(lock)
        } else {
            Failure::Counted {
                remaining: FAILURES - r.failures.len(),
            }
        }
    }

    pub fn success(&mut self, ip: IpAddr) {
        self.records.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: u64) -> Time {
        Duration::from_secs(x)
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 1, 4));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 1, 5));

    #[test]
    fn five_failures_lock_out_that_address_only() {
        let mut l = Limiter::default();
        for i in 0..4 {
            assert_eq!(
                l.failure(A, s(i)),
                Failure::Counted {
                    remaining: 4 - i as usize
                }
            );
        }
        assert_eq!(l.failure(A, s(4)), Failure::LockedOut(s(60)));
        assert_eq!(l.check(A, s(5)), Err(s(59)));
        assert_eq!(l.check(B, s(5)), Ok(()));
        assert_eq!(l.check(A, s(64)), Ok(()));
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_lock() {
        let mut l = Limiter::default();
        for i in 0..20 {
            assert!(
                matches!(l.failure(A, s(i * 100)), Failure::Counted { .. }),
                "failure {i}"
            );
        }
    }

    #[test]
    fn lockouts_double_up_to_the_maximum_and_success_clears() {
        let mut l = Limiter::default();
        let mut now = 0;
        let mut locks = Vec::new();
        for _ in 0..6 {
            for _ in 0..FAILURES {
                now += 1;
                if let Failure::LockedOut(d) = l.failure(A, s(now)) {
                    locks.push(d.as_secs());
                    now += d.as_secs();
                }
            }
        }
        assert_eq!(locks, vec![60, 120, 240, 480, 900, 900]);
        l.success(A);
        assert_eq!(l.failure(A, s(now + 1)), Failure::Counted { remaining: 4 });
    }

    #[test]
    fn memory_is_bounded() {
        let mut l = Limiter::default();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            l.failure(IpAddr::V4(i.into()), s(u64::from(i)));
        }
        assert_eq!(l.records.len(), MAX_TRACKED);
    }
}
