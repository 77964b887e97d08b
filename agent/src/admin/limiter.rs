//! Failed-login rate limiting, per client, driven by an injected clock.
//!
//! A client is an IPv4 address, or an IPv6 /64 (one host can use any address of its
//! /64, so a finer key would give it endless guesses); an IPv4-mapped IPv6 address is its
//! IPv4 address. See [`client_key`].
//!
//! Every attempt is counted when it starts ([`Limiter::begin`]), before the slow hash, so
//! parallel attempts cannot outrun the count; a success clears the client's record. Five
//! attempts that were not successes within five minutes lock the client out for a minute;
//! each further lockout doubles, up to fifteen minutes. One attempt per client may be in
//! flight at a time.
//!
//! At most [`MAX_TRACKED`] clients are remembered, so a flood of addresses cannot grow
//! memory. When full, the least recent record that is neither locked nor in flight goes
//! first; a locked one goes only when every record is locked (the one whose lock ends
//! soonest), so rotating addresses does not free a locked client. Nothing here is global:
//! one client's failures never lock out another.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

pub const FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(300);
pub const FIRST_LOCK: Duration = Duration::from_secs(60);
pub const MAX_LOCK: Duration = Duration::from_secs(900);
pub const MAX_TRACKED: usize = 1024;

/// Time on a monotonic clock (origin irrelevant).
pub type Time = Duration;

/// The key a client's attempts are counted under: an IPv4 address as it is, an
/// IPv4-mapped IPv6 address as its IPv4 address, any other IPv6 address as its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

#[derive(Clone, Debug, Default)]
struct Record {
    failures: Vec<Time>,
    locked_until: Option<Time>,
    lockouts: u32,
    last: Time,
}

impl Record {
    fn locked_at(&self, now: Time) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }
}

#[derive(Default)]
pub struct Limiter {
    records: HashMap<IpAddr, Record>,
    in_flight: HashSet<IpAddr>,
}

/// What counting an attempt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Counted; this many more are allowed before a lockout.
    Counted { remaining: usize },
    /// This attempt, unless it succeeds, locks the client out for this long.
    LockedOut(Duration),
}

/// Why an attempt may not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The client is locked out for this long yet.
    Locked(Duration),
    /// The client has an attempt in flight.
    Busy,
}

impl Limiter {
    /// `Err(wait)` while the client of `ip` is locked out.
    pub fn check(&self, ip: IpAddr, now: Time) -> Result<(), Duration> {
        match self
            .records
            .get(&client_key(ip))
            .and_then(|r| r.locked_until)
        {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Starts an attempt from `ip`: refused while its client is locked out or has one in
    /// flight, else counted as a failure at once (a success later clears it) and marked
    /// in flight until [`end`](Self::end).
    pub fn begin(&mut self, ip: IpAddr, now: Time) -> Result<Failure, Refused> {
        self.may_begin(ip, now)?;
        let counted = self.failure(ip, now);
        self.in_flight.insert(client_key(ip));
        Ok(counted)
    }

    /// Whether [`begin`](Self::begin) would start an attempt from `ip` now.
    pub fn may_begin(&self, ip: IpAddr, now: Time) -> Result<(), Refused> {
        self.check(ip, now).map_err(Refused::Locked)?;
        if self.in_flight.contains(&client_key(ip)) {
            return Err(Refused::Busy);
        }
        Ok(())
    }

    /// Ends the attempt [`begin`](Self::begin) started from `ip`.
    pub fn end(&mut self, ip: IpAddr) {
        self.in_flight.remove(&client_key(ip));
    }

    pub fn failure(&mut self, ip: IpAddr, now: Time) -> Failure {
        let key = client_key(ip);
        if self.records.len() >= MAX_TRACKED && !self.records.contains_key(&key) {
            self.evict(now);
        }
        let r = self.records.entry(key).or_default();
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

    /// Drops one record: the least recent unlocked one not in flight, else the locked one
    /// whose lock ends soonest.
    fn evict(&mut self, now: Time) {
        let unlocked = self
            .records
            .iter()
            .filter(|(k, r)| !r.locked_at(now) && !self.in_flight.contains(*k))
            .min_by_key(|(_, r)| r.last)
            .map(|(k, _)| *k);
        let victim = unlocked.or_else(|| {
            self.records
                .iter()
                .filter(|(k, _)| !self.in_flight.contains(*k))
                .min_by_key(|(_, r)| r.locked_until)
                .map(|(k, _)| *k)
        });
        if let Some(k) = victim {
            self.records.remove(&k);
        }
    }

    pub fn success(&mut self, ip: IpAddr) {
        self.records.remove(&client_key(ip));
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

    fn v6(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_ipv4_by_the_ipv4() {
        assert_eq!(client_key(v6("2001:db8:1:2:aa::1")), v6("2001:db8:1:2::"));
        assert_eq!(client_key(v6("::ffff:169.254.1.4")), A);
        assert_eq!(client_key(A), A);

        // Rotating through a /64 does not give more guesses.
        let mut l = Limiter::default();
        for i in 0..FAILURES as u64 {
            let ip = IpAddr::V6(Ipv6Addr::from(
                0x2001_0db8_0001_0002_0000_0000_0000_0000_u128 + u128::from(i) * 7919 + 1,
            ));
            l.failure(ip, s(i));
        }
        assert_eq!(l.check(v6("2001:db8:1:2:ffff::9"), s(10)), Err(s(54)));
        assert_eq!(l.check(v6("2001:db8:1:3::1"), s(10)), Ok(()), "another /64");

        // An IPv4 client is the same whether it comes over IPv4 or mapped.
        for i in 0..FAILURES as u64 {
            l.failure(v6("::ffff:169.254.1.4"), s(i));
        }
        assert!(l.check(A, s(10)).is_err());
        assert_eq!(l.check(B, s(10)), Ok(()));
    }

    #[test]
    fn attempts_count_when_they_start_and_one_per_client_is_in_flight() {
        let mut l = Limiter::default();
        assert_eq!(l.begin(A, s(0)), Ok(Failure::Counted { remaining: 4 }));
        assert_eq!(l.begin(A, s(0)), Err(Refused::Busy), "one in flight");
        assert_eq!(
            l.begin(v6("::ffff:169.254.1.4"), s(0)),
            Err(Refused::Busy),
            "the same client mapped"
        );
        assert_eq!(l.begin(B, s(0)), Ok(Failure::Counted { remaining: 4 }));
        l.end(A);
        for i in 1..4 {
            assert!(l.begin(A, s(i)).is_ok());
            l.end(A);
        }
        // The fifth attempt starts (it may be the right password) but locks unless it
        // succeeds; meanwhile nothing else from that client starts.
        assert_eq!(l.begin(A, s(4)), Ok(Failure::LockedOut(s(60))));
        l.end(A);
        assert_eq!(l.begin(A, s(5)), Err(Refused::Locked(s(59))));
        // A success clears the record.
        l.success(A);
        assert_eq!(l.begin(A, s(6)), Ok(Failure::Counted { remaining: 4 }));
    }

    #[test]
    fn a_flood_of_addresses_evicts_unlocked_records_before_a_locked_one() {
        let mut l = Limiter::default();
        for i in 0..FAILURES as u64 {
            l.failure(A, s(i));
        }
        assert!(l.check(A, s(5)).is_err());
        // Many more clients than the limiter remembers, each with one guess, each more
        // recent than A's record.
        for i in 0..(3 * MAX_TRACKED as u128) {
            let ip = IpAddr::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | (i << 64)));
            l.failure(ip, s(6));
            assert!(l.records.len() <= MAX_TRACKED);
        }
        assert!(
            l.check(A, s(7)).is_err(),
            "the locked client is still locked"
        );
        // Once every record is locked, the lock that ends soonest goes first.
        let mut full = Limiter::default();
        for i in 0..(MAX_TRACKED as u32) {
            for t in 0..FAILURES as u64 {
                let at = s(t) + Duration::from_millis(u64::from(i));
                full.failure(IpAddr::V4(i.into()), at);
            }
        }
        full.failure(B, s(10));
        assert_eq!(full.records.len(), MAX_TRACKED);
        assert!(!full.records.contains_key(&IpAddr::V4(0.into())));
        assert!(full.records.contains_key(&IpAddr::V4(1.into())));
    }
}
