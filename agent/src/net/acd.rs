//! IPv4 Address Conflict Detection (RFC 5227) for one address, as a plain state machine.
//!
//! [`Acd`] is driven by events (start, timer fired, ARP packet seen, link up/down) with
//! the current time passed in, and answers with [`Action`]s for its driver to carry out
//! (send a probe or an announcement, configure or remove the address, report a conflict).
//! It does no I/O and reads no clock, so its tests run in microseconds.
//!
//! - Probe (§2.1.1): wait a random `0..PROBE_WAIT`, send `PROBE_NUM` probes (sender IP
//!   0.0.0.0) `PROBE_MIN..PROBE_MAX` apart, then wait `ANNOUNCE_WAIT`. Any ARP packet from
//!   another host with the address as sender IP is a conflict, and so is another host's
//!   probe for the same address (two hosts booting together).
//! - Announce (§2.3): configure the address, send `ANNOUNCE_NUM` announcements
//!   `ANNOUNCE_INTERVAL` apart. The address is usable from the first one.
//! - Defend (§2.4): on a conflicting packet, policy (a) gives up at once, (b) defends once
//!   with an announcement and gives up on a second conflict within `DEFEND_INTERVAL`,
//!   (c) defends forever (at most one announcement per `DEFEND_INTERVAL`).
//! - A link that goes down stops probing; when it comes back the address is probed afresh
//!   (RFC 5227 §2.1, "whenever the interface is connected"), so nothing seen or missed
//!   while the cable was out counts.
//!
//! One deliberate addition: when two hosts probe for the same address at the same time,
//! RFC 5227 has both give up. Here the host with the lower MAC keeps probing and the
//! other yields, so two appliances booted together always end on different addresses in
//! one round instead of colliding again on the next candidate. A host that does not
//! follow the rule still sees our probes and yields as the RFC says.

use std::net::Ipv4Addr;
use std::time::Duration;

/// Time on the driver's monotonic clock (the origin does not matter).
pub type Time = Duration;

pub type Mac = [u8; 6];

/// The RFC 5227 timing constants, as one profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub probe_wait: Duration,
    pub probe_num: u32,
    pub probe_min: Duration,
    pub probe_max: Duration,
    pub announce_wait: Duration,
    pub announce_num: u32,
    pub announce_interval: Duration,
    pub max_conflicts: u32,
    pub rate_limit_interval: Duration,
    pub defend_interval: Duration,
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl Timing {
    /// RFC 5227 §1.1, as written.
    pub const RFC: Timing = Timing {
        probe_wait: ms(1000),
        probe_num: 3,
        probe_min: ms(1000),
        probe_max: ms(2000),
        announce_wait: ms(2000),
        announce_num: 2,
        announce_interval: ms(2000),
        max_conflicts: 10,
        rate_limit_interval: ms(60_000),
        defend_interval: ms(10_000),
    };

    /// For a quiet factory link: the same three probes and the same defence, about
    /// 200–300 ms from start to a usable address. Announcements stay 2 s apart because
    /// Linux ignores a second ARP update within 1 s (`locktime`).
    /// A failover takeover: the address's holder has been silent for the primary
    /// timeout already, so two quick probes and a short wait (about 80 ms) ask only
    /// whether it still answers ARP. Used for nothing but the one-shot probe.
    pub const TAKEOVER: Timing = Timing {
        probe_wait: ms(1),
        probe_num: 2,
        probe_min: ms(20),
        probe_max: ms(30),
        announce_wait: ms(50),
        announce_num: 2,
        announce_interval: ms(2000),
        max_conflicts: 10,
        rate_limit_interval: ms(60_000),
        defend_interval: ms(10_000),
    };

    pub const FAST: Timing = Timing {
        probe_wait: ms(50),
        probe_num: 3,
        probe_min: ms(50),
        probe_max: ms(75),
        announce_wait: ms(100),
        announce_num: 2,
        announce_interval: ms(2000),
        max_conflicts: 10,
        rate_limit_interval: ms(60_000),
        defend_interval: ms(10_000),
    };
}

/// What to do when another host claims an address we hold (RFC 5227 §2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefendPolicy {
    /// (a) give the address up at once.
    GiveUp,
    /// (b) defend once; give up on a second conflict within `DEFEND_INTERVAL`.
    DefendOnce,
    /// (c) defend forever.
    Forever,
}

/// A received ARP packet, as far as ACD cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpSeen {
    pub request: bool,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

impl ArpSeen {
    /// An ARP probe: a request with sender IP 0.0.0.0.
    pub fn is_probe(&self) -> bool {
        self.request && self.sender_ip.is_unspecified()
    }
}

pub use crate::model::ConflictKind;

impl Timing {
    /// The constants of a timing profile of the settings.
    pub fn of(profile: crate::model::TimingProfile) -> Timing {
        match profile {
            crate::model::TimingProfile::Fast => Timing::FAST,
            crate::model::TimingProfile::Rfc => Timing::RFC,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub kind: ConflictKind,
    pub mac: Mac,
    pub at: Time,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an ARP probe for the address.
    SendProbe,
    /// Send an ARP announcement for the address (also how we defend it).
    SendAnnouncement,
    /// Configure the address on the interface: it is ours and usable now.
    Claim,
    /// Remove the address from the interface.
    Release,
    /// Another host wants the address; with a loss the machine is finished.
    Conflict(Conflict),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not started.
    Idle,
    /// Waiting for the link to come up before probing.
    WaitingForLink,
    /// `sent` probes sent; the next step is due at `next`.
    Probing { sent: u32, next: Time },
    /// The address is ours; `sent` announcements sent, the next due at `next`.
    Announcing { sent: u32, next: Time },
    /// The address is ours and announced.
    Bound,
    /// Lost to another host; this machine is finished.
    Conflicted,
}

/// Uniform random durations, injected so tests are deterministic.
pub trait Random {
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration;
}

/// A small xorshift generator; seed it with something that differs between hosts (MAC and
/// time), since two appliances booted together must not draw the same delays.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    /// Seeded from the host's MAC, `salt` and the clock, so that two hosts (or two probes
    /// of one host) do not draw the same delays.
    pub fn for_host(mac: &Mac, salt: u64) -> XorShift {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let m = u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0]);
        XorShift::new(m ^ salt ^ clock)
    }
}

impl Random for XorShift {
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        let span = hi.saturating_sub(lo).as_micros() as u64;
        if span == 0 {
            return lo;
        }
        lo + Duration::from_micros(x % (span + 1))
    }
}

/// Conflict detection for one address on one interface.
pub struct Acd {
    pub addr: Ipv4Addr,
    mac: Mac,
    timing: Timing,
    policy: DefendPolicy,
    state: State,
    link_up: bool,
    /// The address is configured on our interface (claimed, or there from before).
    configured: bool,
    last_conflict: Option<Time>,
}

impl Acd {
    /// `configured`: the address is already on the interface (an agent restart); it is
    /// probed again and removed if another host turns out to hold it.
    pub fn new(
        addr: Ipv4Addr,
        mac: Mac,
        timing: Timing,
        policy: DefendPolicy,
        configured: bool,
    ) -> Acd {
        Acd {
            addr,
            mac,
            timing,
            policy,
            state: State::Idle,
            link_up: true,
            configured,
            last_conflict: None,
        }
    }

    /// A machine for an address already probed and on the interface (a static address
    /// the reconciler added): it starts bound, only defending (RFC 5227 §2.4).
    pub fn holding(addr: Ipv4Addr, mac: Mac, timing: Timing, policy: DefendPolicy) -> Acd {
        Acd {
            state: State::Bound,
            configured: true,
            ..Acd::new(addr, mac, timing, policy, true)
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// When [`Acd::on_timer`] should next run, if anything is scheduled.
    pub fn deadline(&self) -> Option<Time> {
        match self.state {
            State::Probing { next, .. } | State::Announcing { next, .. } => Some(next),
            _ => None,
        }
    }

    pub fn start(&mut self, now: Time, link_up: bool, rng: &mut dyn Random) -> Vec<Action> {
        self.link_up = link_up;
        self.begin_probing(now, rng);
        Vec::new()
    }

    fn begin_probing(&mut self, now: Time, rng: &mut dyn Random) {
        self.state = if self.link_up {
            State::Probing {
                sent: 0,
                next: now + rng.between(Duration::ZERO, self.timing.probe_wait),
            }
        } else {
            State::WaitingForLink
        };
    }

    pub fn on_timer(&mut self, now: Time, rng: &mut dyn Random) -> Vec<Action> {
        match self.state {
            State::Probing { sent, next } if now >= next => {
                if sent < self.timing.probe_num {
                    let sent = sent + 1;
                    let wait = if sent < self.timing.probe_num {
                        rng.between(self.timing.probe_min, self.timing.probe_max)
                    } else {
                        self.timing.announce_wait
                    };
                    self.state = State::Probing {
                        sent,
                        next: now + wait,
                    };
                    vec![Action::SendProbe]
                } else {
                    self.configured = true;
                    self.announce_from(now, 1);
                    vec![Action::Claim, Action::SendAnnouncement]
                }
            }
            State::Announcing { sent, next } if now >= next => {
                self.announce_from(now, sent + 1);
                vec![Action::SendAnnouncement]
            }
            _ => Vec::new(),
        }
    }

    fn announce_from(&mut self, now: Time, sent: u32) {
        self.state = if sent < self.timing.announce_num {
            State::Announcing {
                sent,
                next: now + self.timing.announce_interval,
            }
        } else {
            State::Bound
        };
    }

    fn lose(&mut self, kind: ConflictKind, mac: Mac, now: Time) -> Vec<Action> {
        self.state = State::Conflicted;
        let mut actions = Vec::new();
        if self.configured {
            self.configured = false;
            actions.push(Action::Release);
        }
        actions.push(Action::Conflict(Conflict { kind, mac, at: now }));
        actions
    }

    pub fn on_arp(&mut self, now: Time, p: &ArpSeen) -> Vec<Action> {
        if p.sender_mac == self.mac {
            return Vec::new();
        }
        match self.state {
            State::Probing { .. } => {
                if p.sender_ip == self.addr {
                    self.lose(ConflictKind::InUse, p.sender_mac, now)
                } else if p.is_probe() && p.target_ip == self.addr && p.sender_mac < self.mac {
                    self.lose(ConflictKind::SimultaneousProbe, p.sender_mac, now)
                } else {
                    Vec::new()
                }
            }
            State::Announcing { .. } | State::Bound if p.sender_ip == self.addr => {
                let recent = self
                    .last_conflict
                    .is_some_and(|t| now.saturating_sub(t) < self.timing.defend_interval);
                let defended = Action::Conflict(Conflict {
                    kind: ConflictKind::Defended,
                    mac: p.sender_mac,
                    at: now,
                });
                match self.policy {
                    DefendPolicy::GiveUp => self.lose(ConflictKind::Lost, p.sender_mac, now),
                    DefendPolicy::DefendOnce if recent => {
                        self.lose(ConflictKind::Lost, p.sender_mac, now)
                    }
                    DefendPolicy::Forever if recent => vec![defended],
                    DefendPolicy::DefendOnce | DefendPolicy::Forever => {
                        self.last_conflict = Some(now);
                        vec![Action::SendAnnouncement, defended]
                    }
                }
            }
            _ => Vec::new(),
        }
    }

    pub fn on_link(&mut self, now: Time, up: bool, rng: &mut dyn Random) -> Vec<Action> {
        if up == self.link_up {
            return Vec::new();
        }
        self.link_up = up;
        match self.state {
            State::Conflicted | State::Idle => {}
            _ if !up => self.state = State::WaitingForLink,
            _ => self.begin_probing(now, rng),
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: Mac = [0x52, 0x54, 0, 0xa0, 0, 0x05];
    const LOWER: Mac = [0x52, 0x54, 0, 0xa0, 0, 0x01];
    const HIGHER: Mac = [0x52, 0x54, 0, 0xa0, 0, 0x09];
    const ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

    /// Always the lowest value: makes every schedule exact.
    struct Low;
    impl Random for Low {
        fn between(&mut self, lo: Duration, _hi: Duration) -> Duration {
            lo
        }
    }
    /// Always the highest value.
    struct High;
    impl Random for High {
        fn between(&mut self, _lo: Duration, hi: Duration) -> Duration {
            hi
        }
    }

    fn s(secs: f64) -> Time {
        Duration::from_secs_f64(secs)
    }

    /// Runs timers until `until`, returning (time, action) pairs.
    fn run(acd: &mut Acd, rng: &mut dyn Random, until: Time) -> Vec<(Time, Action)> {
        let mut out = Vec::new();
        while let Some(t) = acd.deadline() {
            if t > until {
                break;
            }
            for a in acd.on_timer(t, rng) {
                out.push((t, a));
            }
        }
        out
    }

    fn reply_from(mac: Mac, ip: Ipv4Addr) -> ArpSeen {
        ArpSeen {
            request: false,
            sender_mac: mac,
            sender_ip: ip,
            target_ip: Ipv4Addr::UNSPECIFIED,
        }
    }

    fn probe_from(mac: Mac, target: Ipv4Addr) -> ArpSeen {
        ArpSeen {
            request: true,
            sender_mac: mac,
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target_ip: target,
        }
    }

    #[test]
    fn rfc_constants_are_the_rfcs() {
        let t = Timing::RFC;
        assert_eq!(t.probe_wait, s(1.0));
        assert_eq!(t.probe_num, 3);
        assert_eq!((t.probe_min, t.probe_max), (s(1.0), s(2.0)));
        assert_eq!(t.announce_wait, s(2.0));
        assert_eq!((t.announce_num, t.announce_interval), (2, s(2.0)));
        assert_eq!(t.max_conflicts, 10);
        assert_eq!(t.rate_limit_interval, s(60.0));
        assert_eq!(t.defend_interval, s(10.0));
    }

    #[test]
    fn rfc_schedule_probes_then_claims_and_announces() {
        let mut acd = Acd::new(ADDR, OURS, Timing::RFC, DefendPolicy::DefendOnce, false);
        acd.start(s(0.0), true, &mut High);
        let log = run(&mut acd, &mut High, s(100.0));
        assert_eq!(
            log,
            vec![
                (s(1.0), Action::SendProbe),
                (s(3.0), Action::SendProbe),
                (s(5.0), Action::SendProbe),
                (s(7.0), Action::Claim),
                (s(7.0), Action::SendAnnouncement),
                (s(9.0), Action::SendAnnouncement),
            ]
        );
        assert_eq!(acd.state(), State::Bound);
    }

    #[test]
    fn fast_profile_is_usable_within_200_to_300_ms() {
        for (rng, expect) in [(&mut Low as &mut dyn Random, 0.2), (&mut High, 0.3)] {
            let mut acd = Acd::new(ADDR, OURS, Timing::FAST, DefendPolicy::DefendOnce, false);
            acd.start(s(0.0), true, rng);
            let log = run(&mut acd, rng, s(1.0));
            let claimed = log
                .iter()
                .find(|(_, a)| *a == Action::Claim)
                .map(|(t, _)| *t)
                .unwrap();
            assert_eq!(claimed, s(expect));
            assert_eq!(
                log.iter().filter(|(_, a)| *a == Action::SendProbe).count(),
                3
            );
        }
    }

    #[test]
    fn a_reply_while_probing_is_a_conflict_and_nothing_is_configured() {
        let mut acd = Acd::new(ADDR, OURS, Timing::RFC, DefendPolicy::DefendOnce, false);
        acd.start(s(0.0), true, &mut Low);
        run(&mut acd, &mut Low, s(1.5));
        let actions = acd.on_arp(s(1.6), &reply_from(HIGHER, ADDR));
        assert_eq!(
            actions,
            vec![Action::Conflict(Conflict {
                kind: ConflictKind::InUse,
                mac: HIGHER,
                at: s(1.6)
            })]
        );
        assert_eq!(acd.state(), State::Conflicted);
        assert!(
            run(&mut acd, &mut Low, s(100.0)).is_empty(),
            "nothing more after a conflict"
        );
    }

    #[test]
    fn an_address_left_from_before_is_released_on_conflict() {
        let mut acd = Acd::new(ADDR, OURS, Timing::FAST, DefendPolicy::DefendOnce, true);
        acd.start(s(0.0), true, &mut Low);
        let actions = acd.on_arp(s(0.01), &reply_from(HIGHER, ADDR));
        assert_eq!(actions[0], Action::Release);
    }

    #[test]
    fn our_own_frames_and_unrelated_traffic_are_ignored() {
        let mut acd = Acd::new(ADDR, OURS, Timing::RFC, DefendPolicy::DefendOnce, false);
        acd.start(s(0.0), true, &mut Low);
        assert!(acd.on_arp(s(0.1), &reply_from(OURS, ADDR)).is_empty());
        assert!(acd.on_arp(s(0.1), &probe_from(OURS, ADDR)).is_empty());
        assert!(acd
            .on_arp(s(0.1), &reply_from(HIGHER, Ipv4Addr::new(169, 254, 1, 2)))
            .is_empty());
        // Someone asking who has the address (not a probe) is not a conflict either.
        let ask = ArpSeen {
            request: true,
            sender_mac: HIGHER,
            sender_ip: Ipv4Addr::new(169, 254, 1, 4),
            target_ip: ADDR,
        };
        assert!(acd.on_arp(s(0.1), &ask).is_empty());
        assert!(matches!(acd.state(), State::Probing { .. }));
    }

    #[test]
    fn simultaneous_probes_make_exactly_one_host_yield() {
        let mut lower = Acd::new(ADDR, LOWER, Timing::RFC, DefendPolicy::DefendOnce, false);
        let mut higher = Acd::new(ADDR, HIGHER, Timing::RFC, DefendPolicy::DefendOnce, false);
        lower.start(s(0.0), true, &mut Low);
        higher.start(s(0.0), true, &mut Low);
        // Each sees the other's probe.
        assert!(lower.on_arp(s(0.01), &probe_from(HIGHER, ADDR)).is_empty());
        let a = higher.on_arp(s(0.01), &probe_from(LOWER, ADDR));
        assert_eq!(
            a,
            vec![Action::Conflict(Conflict {
                kind: ConflictKind::SimultaneousProbe,
                mac: LOWER,
                at: s(0.01)
            })]
        );
        assert!(run(&mut lower, &mut Low, s(100.0)).contains(&(s(4.0), Action::Claim)));
    }

    #[test]
    fn once_bound_a_first_conflict_is_defended_and_a_second_within_10_s_loses() {
        let mut acd = Acd::new(ADDR, OURS, Timing::FAST, DefendPolicy::DefendOnce, false);
        acd.start(s(0.0), true, &mut Low);
        run(&mut acd, &mut Low, s(10.0));
        assert_eq!(acd.state(), State::Bound);
        let a = acd.on_arp(s(20.0), &reply_from(HIGHER, ADDR));
        assert_eq!(
            a,
            vec![
                Action::SendAnnouncement,
                Action::Conflict(Conflict {
                    kind: ConflictKind::Defended,
                    mac: HIGHER,
                    at: s(20.0)
                })
            ]
        );
        assert_eq!(acd.state(), State::Bound);
        let a = acd.on_arp(s(29.9), &reply_from(HIGHER, ADDR));
        assert_eq!(
            a,
            vec![
                Action::Release,
                Action::Conflict(Conflict {
                    kind: ConflictKind::Lost,
                    mac: HIGHER,
                    at: s(29.9)
                })
            ]
        );
        assert_eq!(acd.state(), State::Conflicted);
    }

    #[test]
    fn conflicts_more_than_10_s_apart_are_each_defended() {
        let mut acd = Acd::new(ADDR, OURS, Timing::FAST, DefendPolicy::DefendOnce, false);
        acd.start(s(0.0), true, &mut Low);
        run(&mut acd, &mut Low, s(10.0));
        for t in [20.0, 30.5, 41.0] {
            let a = acd.on_arp(s(t), &reply_from(HIGHER, ADDR));
            assert_eq!(a[0], Action::SendAnnouncement, "at {t}");
        }
        assert_eq!(acd.state(), State::Bound);
    }

    #[test]
    fn policy_give_up_and_forever() {
        let mut a = Acd::new(ADDR, OURS, Timing::FAST, DefendPolicy::GiveUp, false);
        a.start(s(0.0), true, &mut Low);
        run(&mut a, &mut Low, s(10.0));
        assert_eq!(
            a.on_arp(s(11.0), &reply_from(HIGHER, ADDR))[0],
            Action::Release
        );
        let mut f = Acd::new(ADDR, OURS, Timing::FAST, DefendPolicy::Forever, false);
        f.start(s(0.0), true, &mut Low);
        run(&mut f, &mut Low, s(10.0));
        assert_eq!(
            f.on_arp(s(11.0), &reply_from(HIGHER, ADDR))[0],
            Action::SendAnnouncement
        );
        // Inside the interval: recorded, not answered (rate-limited defence), still ours.
        assert!(matches!(
            f.on_arp(s(12.0), &reply_from(HIGHER, ADDR))[..],
            [Action::Conflict(_)]
        ));
        assert_eq!(f.state(), State::Bound);
    }

    #[test]
    fn a_holding_machine_defends_at_most_once_per_interval_and_keeps_the_address() {
        let mut acd = Acd::holding(ADDR, OURS, Timing::FAST, DefendPolicy::Forever);
        assert_eq!(acd.state(), State::Bound);
        assert_eq!(
            acd.deadline(),
            None,
            "nothing to send until someone claims it"
        );
        let defended = |t| Conflict {
            kind: ConflictKind::Defended,
            mac: HIGHER,
            at: s(t),
        };
        assert_eq!(
            acd.on_arp(s(1.0), &reply_from(HIGHER, ADDR)),
            vec![Action::SendAnnouncement, Action::Conflict(defended(1.0))]
        );
        assert_eq!(
            acd.on_arp(s(5.0), &reply_from(HIGHER, ADDR)),
            vec![Action::Conflict(defended(5.0))],
            "within DEFEND_INTERVAL: not answered again"
        );
        assert_eq!(
            acd.on_arp(s(11.5), &reply_from(HIGHER, ADDR))[0],
            Action::SendAnnouncement
        );
        assert!(acd.on_arp(s(12.0), &reply_from(OURS, ADDR)).is_empty());
        assert_eq!(acd.state(), State::Bound);
    }

    #[test]
    fn link_down_during_probing_restarts_probing_when_it_returns() {
        let mut acd = Acd::new(ADDR, OURS, Timing::RFC, DefendPolicy::DefendOnce, false);
        acd.start(s(0.0), true, &mut Low);
        let log = run(&mut acd, &mut Low, s(1.5));
        assert_eq!(log.len(), 2, "two probes sent");
        acd.on_link(s(2.6), false, &mut Low);
        assert_eq!(acd.state(), State::WaitingForLink);
        assert_eq!(acd.deadline(), None);
        acd.on_link(s(8.0), true, &mut Low);
        let log = run(&mut acd, &mut Low, s(100.0));
        let probes: Vec<Time> = log
            .iter()
            .filter(|(_, a)| *a == Action::SendProbe)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            probes,
            vec![s(8.0), s(9.0), s(10.0)],
            "three fresh probes after the link returns"
        );
        assert!(log.contains(&(s(12.0), Action::Claim)));
    }

    #[test]
    fn starting_without_link_waits_for_it() {
        let mut acd = Acd::new(ADDR, OURS, Timing::FAST, DefendPolicy::DefendOnce, false);
        acd.start(s(0.0), false, &mut Low);
        assert_eq!(acd.state(), State::WaitingForLink);
        acd.on_link(s(5.0), true, &mut Low);
        assert_eq!(
            acd.state(),
            State::Probing {
                sent: 0,
                next: s(5.0)
            }
        );
    }

    #[test]
    fn a_held_address_is_probed_again_after_the_link_returns() {
        let mut acd = Acd::new(ADDR, OURS, Timing::FAST, DefendPolicy::DefendOnce, false);
        acd.start(s(0.0), true, &mut Low);
        run(&mut acd, &mut Low, s(10.0));
        acd.on_link(s(11.0), false, &mut Low);
        acd.on_link(s(12.0), true, &mut Low);
        // Plugged into a network where someone else has it: released, not kept.
        assert_eq!(
            acd.on_arp(s(12.01), &reply_from(HIGHER, ADDR))[0],
            Action::Release
        );
    }

    #[test]
    fn xorshift_stays_in_range_and_differs_by_seed() {
        let mut a = XorShift::new(1);
        let mut b = XorShift::new(2);
        let mut differ = false;
        for _ in 0..1000 {
            let x = a.between(s(0.05), s(0.075));
            assert!(x >= s(0.05) && x <= s(0.075));
            differ |= x != b.between(s(0.05), s(0.075));
        }
        assert!(differ);
    }
}
