//! Choosing the factory address: 169.254.1.1, else .2, .3, … with RFC 5227 conflict
//! detection on each, as a plain state machine over [`Acd`].
//!
//! Candidates are tried in a fixed order: .1, .2, .3, then .5 to .254. Address .4 is
//! skipped: it is where the vendor tells technicians to put their workstation. An address
//! the interface already holds (the agent restarted) is tried first, so a running
//! appliance keeps its address. After `MAX_CONFLICTS` conflicts a new address is tried at
//! most once per `RATE_LIMIT_INTERVAL` (RFC 5227 §2.1.1); when every candidate has been
//! lost the status says so and the search starts over at that rate.

use super::acd::{
    Acd, Action, ArpSeen, ConflictKind, DefendPolicy, Mac, Random, State, Time, Timing,
};
use std::collections::VecDeque;
use std::net::Ipv4Addr;

/// How many conflicts the status keeps.
const HISTORY: usize = 32;

/// The candidates in the order they are tried.
pub fn candidates() -> Vec<Ipv4Addr> {
    (1..=254u8)
        .filter(|&n| n != 4)
        .map(|n| Ipv4Addr::new(169, 254, 1, n))
        .collect()
}

pub use crate::model::netconfig::in_factory_range;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConflictRecord {
    pub address: Ipv4Addr,
    pub mac: Mac,
    pub at: Time,
    pub kind: ConflictKind,
}

/// The factory address's phase, for status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Idle,
    WaitingForLink,
    Probing,
    Held,
    /// Waiting before the next attempt (rate limit after too many conflicts).
    RateLimited {
        until: Time,
    },
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::WaitingForLink => "waiting-for-link",
            Phase::Probing => "probing",
            Phase::Held => "held",
            Phase::RateLimited { .. } => "rate-limited",
        }
    }
}

impl From<Phase> for crate::model::FactoryState {
    fn from(p: Phase) -> Self {
        use crate::model::FactoryState as S;
        match p {
            Phase::Idle => S::Idle,
            Phase::WaitingForLink => S::WaitingForLink,
            Phase::Probing => S::Probing,
            Phase::Held => S::Held,
            Phase::RateLimited { .. } => S::RateLimited,
        }
    }
}

pub struct Factory {
    mac: Mac,
    timing: Timing,
    candidates: Vec<Ipv4Addr>,
    index: usize,
    acd: Option<Acd>,
    wait_until: Option<Time>,
    link_up: bool,
    losses: u32,
    last_attempt: Option<Time>,
    /// Every candidate has been lost at least once since the last success.
    pub exhausted: bool,
    /// The newest [`HISTORY`] conflicts, oldest first.
    pub history: VecDeque<ConflictRecord>,
    /// How many conflicts were ever recorded (the history keeps only the newest).
    recorded: u64,
    preferred: Option<Ipv4Addr>,
}

/// An action for one address.
pub type Step = (Ipv4Addr, Action);

impl Factory {
    /// `held`: a factory-range address the interface already has (kept if still free).
    pub fn new(mac: Mac, timing: Timing, held: Option<Ipv4Addr>) -> Factory {
        let candidates = candidates();
        let index = held
            .and_then(|h| candidates.iter().position(|c| *c == h))
            .unwrap_or(0);
        Factory {
            mac,
            timing,
            candidates,
            index,
            acd: None,
            wait_until: None,
            link_up: true,
            losses: 0,
            last_attempt: None,
            exhausted: false,
            history: VecDeque::new(),
            recorded: 0,
            preferred: held,
        }
    }

    /// The conflicts recorded after the first `seen` ones (those still in the history),
    /// and the count to pass next time. A caller that polls this never misses one that is
    /// still kept, however many came before.
    pub fn conflicts_since(&self, seen: u64) -> (impl Iterator<Item = &ConflictRecord>, u64) {
        let new = self.recorded.saturating_sub(seen);
        let skip = usize::try_from(new)
            .map(|n| self.history.len().saturating_sub(n))
            .unwrap_or(0);
        (self.history.iter().skip(skip), self.recorded)
    }

    /// The address being probed or held.
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.acd.as_ref().map(|a| a.addr)
    }

    pub fn phase(&self) -> Phase {
        if let Some(until) = self.wait_until {
            return Phase::RateLimited { until };
        }
        match self.acd.as_ref().map(Acd::state) {
            None | Some(State::Idle) | Some(State::Conflicted) => Phase::Idle,
            Some(State::WaitingForLink) => Phase::WaitingForLink,
            Some(State::Probing { .. }) => Phase::Probing,
            Some(State::Announcing { .. }) | Some(State::Bound) => Phase::Held,
        }
    }

    pub fn deadline(&self) -> Option<Time> {
        self.wait_until
            .or_else(|| self.acd.as_ref().and_then(Acd::deadline))
    }

    pub fn start(&mut self, now: Time, link_up: bool, rng: &mut dyn Random) -> Vec<Step> {
        self.link_up = link_up;
        self.attempt(now, rng)
    }

    fn attempt(&mut self, now: Time, rng: &mut dyn Random) -> Vec<Step> {
        self.wait_until = None;
        self.last_attempt = Some(now);
        let addr = self
            .candidates
            .get(self.index)
            .copied()
            .unwrap_or(Ipv4Addr::new(169, 254, 1, 1));
        let configured = self.preferred.take() == Some(addr);
        let mut acd = Acd::new(
            addr,
            self.mac,
            self.timing,
            DefendPolicy::DefendOnce,
            configured,
        );
        let actions = acd.start(now, self.link_up, rng);
        self.acd = Some(acd);
        actions.into_iter().map(|a| (addr, a)).collect()
    }

    /// Records conflicts from `actions`; after a loss, moves on to the next candidate.
    fn after(&mut self, now: Time, actions: Vec<Action>, rng: &mut dyn Random) -> Vec<Step> {
        let Some(addr) = self.address() else {
            return Vec::new();
        };
        let mut steps = Vec::new();
        let mut lost = false;
        for a in actions {
            if let Action::Conflict(c) = a {
                if self.history.len() == HISTORY {
                    self.history.pop_front();
                }
                self.history.push_back(ConflictRecord {
                    address: addr,
                    mac: c.mac,
                    at: c.at,
                    kind: c.kind,
                });
                self.recorded += 1;
                lost |= c.kind.is_loss();
            }
            if a == Action::Claim {
                self.exhausted = false;
            }
            steps.push((addr, a));
        }
        if lost {
            self.losses += 1;
            self.index += 1;
            if self.index >= self.candidates.len() {
                self.index = 0;
                self.exhausted = true;
            }
            let earliest = match self.last_attempt {
                Some(t) if self.losses >= self.timing.max_conflicts => {
                    t + self.timing.rate_limit_interval
                }
                _ => now,
            };
            if earliest > now {
                self.acd = None;
                self.wait_until = Some(earliest);
            } else {
                steps.extend(self.attempt(now, rng));
            }
        }
        steps
    }

    pub fn on_timer(&mut self, now: Time, rng: &mut dyn Random) -> Vec<Step> {
        if let Some(until) = self.wait_until {
            return if now >= until {
                self.attempt(now, rng)
            } else {
                Vec::new()
            };
        }
        let actions = match self.acd.as_mut() {
            Some(acd) => acd.on_timer(now, rng),
            None => return Vec::new(),
        };
        self.after(now, actions, rng)
    }

    pub fn on_arp(&mut self, now: Time, p: &ArpSeen, rng: &mut dyn Random) -> Vec<Step> {
        let actions = match self.acd.as_mut() {
            Some(acd) => acd.on_arp(now, p),
            None => return Vec::new(),
        };
        self.after(now, actions, rng)
    }

    pub fn on_link(&mut self, now: Time, up: bool, rng: &mut dyn Random) -> Vec<Step> {
        self.link_up = up;
        let actions = match self.acd.as_mut() {
            Some(acd) => acd.on_link(now, up, rng),
            None => return Vec::new(),
        };
        self.after(now, actions, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const OURS: Mac = [0x52, 0x54, 0, 0xa0, 0, 5];
    const OTHER: Mac = [0x52, 0x54, 0, 0xa0, 0, 9];

    struct Low;
    impl Random for Low {
        fn between(&mut self, lo: Duration, _hi: Duration) -> Duration {
            lo
        }
    }

    fn s(x: f64) -> Time {
        Duration::from_secs_f64(x)
    }

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(169, 254, 1, n)
    }

    fn reply(from: Ipv4Addr) -> ArpSeen {
        ArpSeen {
            request: false,
            sender_mac: OTHER,
            sender_ip: from,
            target_ip: Ipv4Addr::UNSPECIFIED,
        }
    }

    fn settle(f: &mut Factory, until: Time) -> Vec<(Time, Step)> {
        let mut out = Vec::new();
        while let Some(t) = f.deadline().filter(|t| *t <= until) {
            out.extend(f.on_timer(t, &mut Low).into_iter().map(|s| (t, s)));
        }
        out
    }

    #[test]
    fn candidates_go_in_order_and_skip_the_workstation() {
        let c = candidates();
        assert_eq!(&c[..4], &[ip(1), ip(2), ip(3), ip(5)]);
        assert_eq!(c.len(), 253);
        assert!(!c.contains(&ip(4)));
        assert_eq!(c.last(), Some(&ip(254)));
    }

    #[test]
    fn a_taken_first_address_moves_to_the_second() {
        let mut f = Factory::new(OURS, Timing::FAST, None);
        f.start(s(0.0), true, &mut Low);
        assert_eq!(f.address(), Some(ip(1)));
        let steps = f.on_arp(s(0.01), &reply(ip(1)), &mut Low);
        assert!(matches!(steps[0], (a, Action::Conflict(_)) if a == ip(1)));
        assert_eq!(f.address(), Some(ip(2)));
        let log = settle(&mut f, s(5.0));
        assert!(log.iter().any(|(_, st)| *st == (ip(2), Action::Claim)));
        assert_eq!(f.phase(), Phase::Held);
        assert_eq!(f.history.len(), 1);
        assert_eq!(f.history[0].mac, OTHER);
        assert_eq!(f.history[0].kind, ConflictKind::InUse);
    }

    #[test]
    fn a_held_address_is_tried_first_after_a_restart() {
        let mut f = Factory::new(OURS, Timing::FAST, Some(ip(3)));
        f.start(s(0.0), true, &mut Low);
        assert_eq!(f.address(), Some(ip(3)));
        // And if it turns out to be taken, it is released before moving on.
        let steps = f.on_arp(s(0.01), &reply(ip(3)), &mut Low);
        assert_eq!(steps[0], (ip(3), Action::Release));
        assert_eq!(f.address(), Some(ip(5)));
    }

    #[test]
    fn after_max_conflicts_new_attempts_are_rate_limited() {
        let mut f = Factory::new(OURS, Timing::RFC, None);
        f.start(s(0.0), true, &mut Low);
        let mut now = 0.0;
        for n in 1..=10u32 {
            now += 0.5;
            let addr = f.address().unwrap();
            f.on_arp(s(now), &reply(addr), &mut Low);
            if n < 10 {
                assert_eq!(f.phase(), Phase::Probing, "attempt {n} is immediate");
            }
        }
        // The tenth conflict: the next attempt waits 60 s from the last attempt's start.
        assert_eq!(
            f.phase(),
            Phase::RateLimited {
                until: s(4.5 + 60.0)
            }
        );
        assert!(f.on_timer(s(30.0), &mut Low).is_empty());
        f.on_timer(s(64.5), &mut Low);
        assert_eq!(f.phase(), Phase::Probing);
        assert_eq!(
            f.address(),
            Some(ip(12)),
            ".4 is skipped: the eleventh candidate is .12"
        );
    }

    #[test]
    fn when_every_candidate_is_taken_it_says_so_and_keeps_trying() {
        let mut f = Factory::new(OURS, Timing::FAST, None);
        f.start(s(0.0), true, &mut Low);
        let mut now = s(0.0);
        for _ in 0..candidates().len() {
            if let Phase::RateLimited { until } = f.phase() {
                now = until;
                f.on_timer(now, &mut Low);
            }
            now += s(0.01);
            let addr = f.address().unwrap();
            f.on_arp(now, &reply(addr), &mut Low);
        }
        assert!(f.exhausted);
        let Phase::RateLimited { until } = f.phase() else {
            panic!("{:?}", f.phase())
        };
        f.on_timer(until, &mut Low);
        assert_eq!(
            f.address(),
            Some(ip(1)),
            "starts over from the first candidate"
        );
        settle(&mut f, until + s(5.0));
        assert_eq!(f.phase(), Phase::Held);
        assert!(!f.exhausted, "a held address clears the exhausted flag");
    }

    #[test]
    fn losing_a_defended_address_moves_on() {
        let mut f = Factory::new(OURS, Timing::FAST, None);
        f.start(s(0.0), true, &mut Low);
        settle(&mut f, s(5.0));
        assert_eq!(f.phase(), Phase::Held);
        let st = f.on_arp(s(10.0), &reply(ip(1)), &mut Low);
        assert_eq!(st[0], (ip(1), Action::SendAnnouncement));
        assert_eq!(f.address(), Some(ip(1)));
        let st = f.on_arp(s(15.0), &reply(ip(1)), &mut Low);
        assert_eq!(st[0], (ip(1), Action::Release));
        assert_eq!(f.address(), Some(ip(2)));
        let kinds: Vec<_> = f.history.iter().map(|h| h.kind).collect();
        assert_eq!(kinds, vec![ConflictKind::Defended, ConflictKind::Lost]);
    }

    #[test]
    fn the_history_keeps_the_newest_conflicts_and_reports_each_once() {
        let mut f = Factory::new(OURS, Timing::FAST, None);
        f.start(s(0.0), true, &mut Low);
        let mut seen = 0;
        let mut reported = Vec::new();
        for n in 0..40u32 {
            let addr = f.address().unwrap();
            f.on_arp(s(f64::from(n) * 100.0 + 0.01), &reply(addr), &mut Low);
            let (new, next) = f.conflicts_since(seen);
            reported.extend(new.map(|h| h.address));
            seen = next;
            settle(&mut f, s(f64::from(n) * 100.0 + 99.0));
        }
        assert_eq!(reported.len(), 40, "each conflict is reported once");
        assert_eq!(f.history.len(), HISTORY);
        assert_eq!(
            f.history.back().map(|h| h.address),
            reported.last().copied(),
            "the newest conflict is kept"
        );
        assert_eq!(
            f.history.front().map(|h| h.address),
            Some(reported[40 - HISTORY])
        );
        // A caller far behind gets what is still kept.
        assert_eq!(f.conflicts_since(0).0.count(), HISTORY);
    }

    #[test]
    fn factory_range() {
        assert!(in_factory_range(ip(7)));
        assert!(!in_factory_range(Ipv4Addr::new(169, 254, 2, 1)));
    }
}
