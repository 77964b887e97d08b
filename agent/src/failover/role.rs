//! The failover role machine of one appliance, as a plain state machine.
//!
//! [`Machine`] is driven by events (the peer answered or did not, time passed, the test
//! IPs answered or did not, a manual role change, a command from the peer, the
//! relationship made or broken, the shared IP found in use) with the time passed in, and
//! answers with [`Action`]s for its driver to carry out in order. It does no I/O and
//! reads no clock.
//!
//! # Roles and epochs
//! A role is `none`, `primary` or `backup`, persisted with an epoch. Every role change
//! takes a new epoch, `max(own, highest seen from the peer) + 1`, and its batch starts with
//! [`Action::Persist`]: the driver writes it (atomically, fsynced) before any network
//! action of the same batch. A primary that comes back (reboot, power, an agent restart
//! that finds its shared IP gone) starts *pending*: it holds nothing until it has seen its
//! peer, and a peer that holds the shared IP or has the newer epoch keeps the role.
//!
//! # Silence
//! Silence is the time observed since the peer last answered, not a count of polls. Two
//! rules keep a stalled appliance (VM paused, CPU starved) from acting on its own stall:
//! - time only counts between events that arrive at most [`Params::stall_gap`] apart
//!   (the driver ticks at least every heartbeat interval, see [`Machine::deadline`]); a
//!   longer gap is this appliance's own stall and adds nothing;
//! - a takeover (or giving up the shared IP) needs a failed heartbeat reported after the
//!   last answer and after the last stall. A tick after a long pause followed by an
//!   answer therefore changes nothing, whichever of the two the driver sees first.
//!
//! # The backup
//! When the primary has been silent for the timeout, with automatic failover on (which
//! needs backup operations and a shared IP): it pings the test IPs once during the last
//! part of the timeout (the last quarter, at most the last second) and takes over only if
//! one answered; if none did it reports itself cut off and needs a whole new timeout of
//! silence before it tries again. With no test IPs it takes over and warns. Alerts count
//! down: when the primary is first missed, at half the timeout, at the takeover or cut-off;
//! at most one a minute except the last of a series.
//!
//! # The primary
//! With test IPs, a primary that has seen neither its peer nor any test IP for the
//! timeout gives up the shared IP (its role stays); it keeps testing and takes the IP back
//! (after an ARP probe) when a test IP answers while the peer is still silent, or when the
//! peer answers as backup. It never gives up without test IPs.
//!
//! # Conflicts
//! Both primary is resolved at once by [`conflict::decide`]: the loser becomes backup and
//! withholds the shared IP, the winner announces again. Both backup lasts only while
//! automatic failover is off (then status shows it and [`Machine::fix`] resolves it):
//! with it on, the winner becomes primary after [`Params::both_backup_grace`], the loser
//! after twice that if the winner has not (a manual swap shows both backup for a moment,
//! which the grace allows). Whenever this appliance tries to take the shared IP and
//! another host answers for it, that host is the primary and this appliance becomes
//! backup.
//!
//! Current limits: one peer; the driver re-states holds when the list of shared IPs
//! changes (from [`Status::holding`]); a peer that answers with no role is taken to have
//! broken the relationship.

use super::conflict::{self, Evidence, Kind as ConflictKind, Reason, Winner};
use super::settings::Settings;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Time on the driver's monotonic clock (the origin does not matter).
pub type Time = Duration;

/// The second announcement burst follows the first by this much: Linux ignores a second
/// neighbour update within its lock time (1 s).
pub const ANNOUNCE_AGAIN: Duration = Duration::from_millis(1200);
/// Alerts other than the last of a series are at least this far apart.
pub const ALERT_SPACING: Duration = Duration::from_secs(60);
/// The test IPs are pinged during the last quarter of the timeout, at most the last this.
pub const MAX_PING_WINDOW: Duration = Duration::from_secs(1);
/// The least time both appliances stay backup before automatic failover settles it.
pub const MIN_BOTH_BACKUP_GRACE: Duration = Duration::from_secs(5);
/// Scheduling slack on top of two heartbeat intervals before a gap counts as a stall.
pub const STALL_SLACK: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    None,
    Primary,
    Backup,
}

/// Why the role changed (recorded with every change).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The relationship was established.
    Established,
    /// The relationship was broken here.
    Broken,
    /// The peer answered with no role: it broke the relationship.
    BrokenByPeer,
    /// Become Primary, by hand.
    BecomePrimary,
    /// Become Backup, by hand.
    BecomeBackup,
    /// Become Backup, by hand, with the peer unreachable.
    ForcedBecomeBackup,
    /// The peer asked for the change (its half of a role swap or a fix).
    PeerAsked,
    /// The primary was silent for the timeout.
    AutomaticFailover,
    /// Both were primary and the peer keeps the role.
    ConflictLost,
    /// Both were backup and automatic failover chose this appliance.
    BothBackup,
    /// Fix This Error, by hand.
    Fix,
    /// Another host answered for the shared IP when this appliance went to take it.
    AddressInUse,
}

/// The inputs the machine needs from the settings and the shared-IP selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub automatic_failover: bool,
    pub backup_operations: bool,
    pub timeout: Duration,
    pub heartbeat: Duration,
    pub has_test_ips: bool,
    pub has_shared_ip: bool,
}

impl Params {
    pub fn new(settings: &Settings, has_shared_ip: bool) -> Params {
        Params {
            automatic_failover: settings.automatic_failover,
            backup_operations: settings.backup_operations,
            timeout: settings.timeout(),
            heartbeat: settings.heartbeat_interval(),
            has_test_ips: !settings.test_ips.is_empty(),
            has_shared_ip,
        }
    }

    /// Automatic failover can happen: it is on, backup operations are on, and there is a
    /// shared IP to take.
    pub fn automatic(&self) -> bool {
        self.automatic_failover && self.backup_operations && self.has_shared_ip
    }

    /// The last part of the timeout, in which the test IPs are pinged.
    pub fn ping_window(&self) -> Duration {
        (self.timeout / 4).min(MAX_PING_WINDOW)
    }

    /// A gap between events longer than this is this appliance's own stall.
    pub fn stall_gap(&self) -> Duration {
        self.heartbeat * 2 + STALL_SLACK
    }

    pub fn both_backup_grace(&self) -> Duration {
        self.timeout.max(MIN_BOTH_BACKUP_GRACE)
    }
}

/// What the peer said about itself in its last answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub role: Role,
    pub epoch: u64,
    pub pending: bool,
    /// It holds the shared IP and answers on it.
    pub holds_shared_ip: bool,
    pub id: String,
}

/// A request to the peer, as part of a role swap or a fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerCommand {
    BecomeBackup,
    BecomePrimary,
}

/// How the peer answered a [`PeerCommand`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerReply {
    /// Done; the peer's epoch now.
    Done { epoch: u64 },
    /// The peer answered and refused.
    Refused,
    /// No answer in time.
    NoAnswer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The primary missed its first heartbeat.
    FirstMissed,
    /// The primary has been silent for half the timeout.
    HalfTimeout,
    /// This backup took over.
    Takeover,
    /// This backup cannot reach any test IP: it is the one cut off and does not take over.
    CutOff,
}

/// An e-mail alert to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    /// How long the primary has been silent.
    pub silent_for: Duration,
    /// Time left until the automatic failover, when there will be one.
    pub remaining: Option<Duration>,
}

/// A history entry (the driver stamps it with the wall clock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    RoleChanged {
        from: Role,
        to: Role,
        epoch: u64,
        cause: Cause,
    },
    PeerLost,
    PeerFound {
        role: Role,
        epoch: u64,
    },
    TestIps {
        answered: bool,
    },
    Conflict {
        kind: ConflictKind,
    },
    /// A conflict was settled; `primary_here`: this appliance ends up primary.
    Fixed {
        kind: ConflictKind,
        primary_here: bool,
        reason: Reason,
    },
    /// This backup could reach no test IP: no takeover.
    CutOff,
    /// This primary saw neither peer nor test IPs for the timeout and gave up the shared IP.
    GaveUpSharedIps,
    /// It holds the shared IP again.
    TookSharedIps,
    /// It took the shared IP with no test IPs to check its own network first.
    Untested,
    /// Another host answered for the shared IP.
    AddressInUse,
    /// Another host claimed the shared IP this appliance holds.
    AddressClaimed,
    /// A role swap asked of the peer did not happen.
    PeerDidNotSwap {
        command: PeerCommand,
    },
    /// This appliance stalled (no event for this long): the time did not count as silence.
    Stalled {
        for_ms: u64,
    },
}

/// What the driver does, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write role and epoch durably before anything else of the batch.
    Persist {
        role: Role,
        epoch: u64,
        cause: Cause,
    },
    /// Take the shared IPs: with `probe`, ARP-probe (IPv6: DAD) each first and report
    /// [`Machine::address_in_use`] if anyone answers; then hold them (overlay,
    /// `Probe::Skip`).
    HoldSharedIps {
        probe: bool,
    },
    /// Withhold the shared IPs (remove them, whatever the configuration says).
    WithholdSharedIps,
    /// Leave the shared IPs as they are, in the configuration: enabled or not.
    ReleaseSharedIps {
        enabled: bool,
    },
    /// One burst of gratuitous ARP and unsolicited NA for the shared IPs held now.
    Announce,
    /// Ping every test IP at once until `until`, then report
    /// [`Machine::test_ips_result`].
    PingTestIps {
        until: Time,
    },
    /// Ask the peer for a role change and report [`Machine::peer_replied`].
    AskPeer(PeerCommand),
    Alert(Alert),
    Record(Entry),
}

/// Why a command was refused; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("there is no failover relationship")]
    NoRelationship,
    #[error("a failover relationship already exists; break it first")]
    RelationshipExists,
    #[error("this appliance is {role:?}, and the command needs {needs:?}")]
    WrongRole { role: Role, needs: Role },
    #[error("the peer cannot be reached; use force to change this appliance's role anyway")]
    PeerUnreachable,
    #[error("a role change is already in progress")]
    Busy,
    #[error("there is no conflict to fix")]
    NoConflict,
}

/// What status shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub role: Role,
    pub epoch: u64,
    pub pending: bool,
    /// This appliance holds (or is taking) the shared IPs.
    pub holding: bool,
    pub peer: Option<PeerView>,
    pub peer_reachable: bool,
    pub last_answer: Option<Time>,
    /// How long the peer has been silent (observed time).
    pub silent_for: Duration,
    /// Time left until this backup takes over, while it counts down.
    pub countdown: Option<Duration>,
    pub conflict: Option<ConflictKind>,
    /// This backup could reach no test IP (it does not take over).
    pub cut_off: bool,
    /// This primary gave up its shared IP, or a pending one cannot see the network.
    pub isolated: bool,
    /// It took the shared IP without test IPs to check its network first.
    pub untested: bool,
    /// Automatic failover is on but has no shared IP to take.
    pub needs_shared_ip: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Round {
    /// No test-IP round in this count.
    None,
    Running {
        until: Time,
    },
    Done {
        answered: bool,
        at: Time,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaiting {
    /// Become Primary: the peer is asked to become backup first.
    Demotion,
    /// Become Backup or Fix: the peer is asked to become primary after us.
    Promotion,
    /// Fix with both primary: the peer is asked to step down; we announce after.
    FixDemotion,
}

#[derive(Clone, Copy, Debug, Default)]
struct Series {
    half: bool,
    last_at: Option<Time>,
}

/// The role machine of one appliance.
#[derive(Clone, Debug)]
pub struct Machine {
    id: String,
    params: Params,
    role: Role,
    epoch: u64,
    pending: bool,
    holding: bool,
    peer: Option<PeerView>,
    peer_epoch: u64,
    peer_reachable: bool,
    last_answer: Option<Time>,
    /// The time of the last event (stall detection).
    clock: Time,
    /// Observed time since the peer last answered (restarted by a cut-off).
    silence: Duration,
    /// Observed time since the peer or a test IP last answered (the primary's rule).
    net_silence: Duration,
    /// A heartbeat failed since the last answer and the last stall.
    missed: bool,
    round: Round,
    alerts: Series,
    cut_off: bool,
    isolated: bool,
    untested: bool,
    conflict: Option<ConflictKind>,
    /// The conflict of this episode was acted on.
    settled: bool,
    both_backup_since: Option<Time>,
    announce_at: Option<Time>,
    awaiting: Option<Awaiting>,
}

impl Machine {
    /// A machine with no relationship.
    pub fn new(id: &str, params: Params, now: Time) -> Machine {
        Machine {
            id: id.to_string(),
            params,
            role: Role::None,
            epoch: 0,
            pending: false,
            holding: false,
            peer: None,
            peer_epoch: 0,
            peer_reachable: false,
            last_answer: None,
            clock: now,
            silence: Duration::ZERO,
            net_silence: Duration::ZERO,
            missed: false,
            round: Round::None,
            alerts: Series::default(),
            cut_off: false,
            isolated: false,
            untested: false,
            conflict: None,
            settled: false,
            both_backup_since: None,
            announce_at: None,
            awaiting: None,
        }
    }

    /// The machine for a persisted role, when the agent starts. `shared_ip_present`: the
    /// shared IPs are on the NICs now (an agent restart, not a reboot): a primary that
    /// still has them keeps them without a flap; one that does not comes back pending.
    pub fn restore(
        id: &str,
        params: Params,
        role: Role,
        epoch: u64,
        shared_ip_present: bool,
        now: Time,
    ) -> (Machine, Vec<Action>) {
        let mut m = Machine::new(id, params, now);
        m.role = role;
        m.epoch = epoch;
        let actions = match role {
            Role::None => Vec::new(),
            Role::Primary if shared_ip_present => {
                m.holding = true;
                vec![Action::HoldSharedIps { probe: false }]
            }
            Role::Primary => {
                m.pending = true;
                vec![Action::WithholdSharedIps]
            }
            Role::Backup => vec![Action::WithholdSharedIps],
        };
        (m, actions)
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn set_params(&mut self, params: Params) {
        self.params = params;
    }

    pub fn status(&self) -> Status {
        let t = self.params.timeout;
        let counting = self.role == Role::Backup
            && self.params.automatic()
            && !self.peer_reachable
            && self.missed
            && !self.cut_off;
        Status {
            role: self.role,
            epoch: self.epoch,
            pending: self.pending,
            holding: self.holding,
            peer: self.peer.clone(),
            peer_reachable: self.peer_reachable,
            last_answer: self.last_answer,
            silent_for: self.silence,
            countdown: counting.then(|| t.saturating_sub(self.silence)),
            conflict: self.conflict,
            cut_off: self.cut_off,
            isolated: self.isolated,
            untested: self.untested,
            needs_shared_ip: self.params.automatic_failover && !self.params.has_shared_ip,
        }
    }

    /// When [`Machine::tick`] should next run: at most a heartbeat interval away while a
    /// relationship exists (so gaps mean stalls), sooner when a threshold falls due.
    pub fn deadline(&self) -> Option<Time> {
        let mut next = self.announce_at;
        if self.role != Role::None {
            let t = self.params.timeout;
            let mut wait = self.params.heartbeat;
            for counter in [self.silence, self.net_silence] {
                for threshold in [t / 2, t.saturating_sub(self.params.ping_window()), t] {
                    if threshold > counter {
                        wait = wait.min(threshold - counter);
                    }
                }
            }
            let at = self.clock + wait;
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        next
    }

    /// Moves the machine's clock to `now`, counting the time as silence unless it was a
    /// stall.
    fn advance(&mut self, now: Time, out: &mut Vec<Action>) {
        let dt = now.saturating_sub(self.clock);
        self.clock = self.clock.max(now);
        if self.role == Role::None {
            return;
        }
        if dt > self.params.stall_gap() {
            self.missed = false;
            out.push(Action::Record(Entry::Stalled {
                for_ms: dt.as_millis() as u64,
            }));
        } else {
            self.silence += dt;
            self.net_silence += dt;
        }
    }

    /// Time passes.
    pub fn tick(&mut self, now: Time) -> Vec<Action> {
        let mut out = Vec::new();
        self.advance(now, &mut out);
        self.evaluate(now, &mut out);
        out
    }

    /// A heartbeat was answered.
    pub fn peer_answered(&mut self, now: Time, view: PeerView) -> Vec<Action> {
        let mut out = Vec::new();
        self.advance(now, &mut out);
        if self.role == Role::None {
            return out;
        }
        self.silence = Duration::ZERO;
        self.net_silence = Duration::ZERO;
        self.missed = false;
        self.round = Round::None;
        self.alerts.half = false;
        self.cut_off = false;
        self.last_answer = Some(now);
        self.peer_epoch = self.peer_epoch.max(view.epoch);
        if !self.peer_reachable {
            self.peer_reachable = true;
            out.push(Action::Record(Entry::PeerFound {
                role: view.role,
                epoch: view.epoch,
            }));
        }
        let peer_role = view.role;
        self.peer = Some(view);
        match (self.role, peer_role) {
            (_, Role::None) => {
                self.leave(Cause::BrokenByPeer, &mut out);
                return out;
            }
            (Role::Primary, Role::Backup) | (Role::Backup, Role::Primary) => {
                self.conflict = None;
                self.settled = false;
                self.both_backup_since = None;
                if self.role == Role::Primary && !self.holding {
                    self.take(now, &mut out);
                }
            }
            (Role::Primary, Role::Primary) => {
                self.enter_conflict(ConflictKind::BothPrimary, &mut out);
                if !self.settled {
                    self.settle_both_primary(now, &mut out);
                }
            }
            (Role::Backup, Role::Backup) => {
                self.enter_conflict(ConflictKind::BothBackup, &mut out);
                self.both_backup_since.get_or_insert(now);
            }
            (Role::None, _) => {}
        }
        self.evaluate(now, &mut out);
        out
    }

    /// A heartbeat failed (timed out, refused, bad proof).
    pub fn peer_missed(&mut self, now: Time) -> Vec<Action> {
        let mut out = Vec::new();
        self.advance(now, &mut out);
        if self.role == Role::None {
            return out;
        }
        self.missed = true;
        if self.peer_reachable {
            self.peer_reachable = false;
            self.both_backup_since = None;
            out.push(Action::Record(Entry::PeerLost));
            if self.role == Role::Backup {
                self.alert(now, AlertKind::FirstMissed, &mut out);
            }
        }
        self.evaluate(now, &mut out);
        out
    }

    /// A test-IP round ended: whether any test IP answered.
    pub fn test_ips_result(&mut self, now: Time, answered: bool) -> Vec<Action> {
        let mut out = Vec::new();
        self.advance(now, &mut out);
        if self.role == Role::None {
            return out;
        }
        let changed = !matches!(self.round, Round::Done { answered: a, .. } if a == answered);
        if changed {
            out.push(Action::Record(Entry::TestIps { answered }));
        }
        self.round = Round::Done { answered, at: now };
        if self.role == Role::Primary && answered {
            if self.holding {
                // The network is there: the count of the primary's rule starts again.
                self.net_silence = Duration::ZERO;
                self.round = Round::None;
            } else if !self.peer_reachable && self.silence >= self.params.timeout {
                self.take(now, &mut out);
            }
        }
        self.evaluate(now, &mut out);
        out
    }

    /// The shared IP is in use by another host: found by the probe before taking it.
    pub fn address_in_use(&mut self, now: Time) -> Vec<Action> {
        let mut out = Vec::new();
        self.advance(now, &mut out);
        if self.role != Role::Primary || !self.holding {
            return out;
        }
        self.holding = false;
        self.announce_at = None;
        out.push(Action::Record(Entry::AddressInUse));
        self.change_role(Role::Backup, Cause::AddressInUse, &mut out);
        out.push(Action::WithholdSharedIps);
        out
    }

    /// Another host claimed the shared IP this appliance holds (seen after taking it). A
    /// peer that is primary is settled by the conflict rules when it answers; anything
    /// else is answered with an announcement, at most one per [`ANNOUNCE_AGAIN`].
    pub fn address_claimed(&mut self, now: Time) -> Vec<Action> {
        let mut out = Vec::new();
        self.advance(now, &mut out);
        if self.role != Role::Primary || !self.holding {
            return out;
        }
        out.push(Action::Record(Entry::AddressClaimed));
        if self.announce_at.is_none() {
            out.push(Action::Announce);
            self.announce_at = Some(now + ANNOUNCE_AGAIN);
        }
        out
    }

    /// Establish Relationship: `role` is this appliance's new role, `peer_epoch` the
    /// peer's current epoch.
    pub fn establish(
        &mut self,
        now: Time,
        role: Role,
        peer_epoch: u64,
    ) -> Result<Vec<Action>, Refusal> {
        if self.role != Role::None {
            return Err(Refusal::RelationshipExists);
        }
        if role == Role::None {
            return Err(Refusal::WrongRole {
                role,
                needs: Role::Primary,
            });
        }
        let mut out = Vec::new();
        self.advance(now, &mut out);
        self.peer_epoch = self.peer_epoch.max(peer_epoch);
        self.reset_watch();
        self.change_role(role, Cause::Established, &mut out);
        match role {
            Role::Primary => self.take(now, &mut out),
            _ => out.push(Action::WithholdSharedIps),
        }
        Ok(out)
    }

    /// Break the relationship; the shared IPs stay as they are.
    pub fn break_relationship(&mut self, now: Time) -> Result<Vec<Action>, Refusal> {
        if self.role == Role::None {
            return Err(Refusal::NoRelationship);
        }
        let mut out = Vec::new();
        self.advance(now, &mut out);
        self.leave(Cause::Broken, &mut out);
        Ok(out)
    }

    /// Become Primary, on the backup. With the peer reachable, it is asked to become
    /// backup first and this appliance follows when it has ([`Machine::peer_replied`]):
    /// never both primary. With the peer unreachable it goes ahead (the unplanned
    /// maintenance flow; the probe keeps it off an address still in use). `force` only
    /// matters for Become Backup.
    pub fn become_primary(
        &mut self,
        now: Time,
        _force: bool,
        peer_reachable: bool,
    ) -> Result<Vec<Action>, Refusal> {
        self.check_command(Role::Backup)?;
        let mut out = Vec::new();
        self.advance(now, &mut out);
        if peer_reachable {
            self.awaiting = Some(Awaiting::Demotion);
            out.push(Action::AskPeer(PeerCommand::BecomeBackup));
        } else {
            self.promote(now, Cause::BecomePrimary, &mut out);
        }
        Ok(out)
    }

    /// Become Backup, on the primary. With the peer reachable this appliance steps down
    /// first, then asks the peer to become primary (both backup for a moment). With the
    /// peer unreachable it is refused unless `force`.
    pub fn become_backup(
        &mut self,
        now: Time,
        force: bool,
        peer_reachable: bool,
    ) -> Result<Vec<Action>, Refusal> {
        self.check_command(Role::Primary)?;
        if !peer_reachable && !force {
            return Err(Refusal::PeerUnreachable);
        }
        let mut out = Vec::new();
        self.advance(now, &mut out);
        if peer_reachable {
            self.demote(Cause::BecomeBackup, &mut out);
            self.awaiting = Some(Awaiting::Promotion);
            out.push(Action::AskPeer(PeerCommand::BecomePrimary));
        } else {
            self.demote(Cause::ForcedBecomeBackup, &mut out);
        }
        Ok(out)
    }

    /// Fix This Error: settle a conflict by evidence, here and (through the peer) there.
    pub fn fix(&mut self, now: Time) -> Result<Vec<Action>, Refusal> {
        let kind = self.conflict.ok_or(Refusal::NoConflict)?;
        if !self.peer_reachable {
            return Err(Refusal::PeerUnreachable);
        }
        if self.awaiting.is_some() {
            return Err(Refusal::Busy);
        }
        let mut out = Vec::new();
        self.advance(now, &mut out);
        let (winner, reason) = self.decide();
        let primary_here = match (kind, winner) {
            (ConflictKind::BothPrimary, Winner::A) => {
                self.awaiting = Some(Awaiting::FixDemotion);
                out.push(Action::AskPeer(PeerCommand::BecomeBackup));
                true
            }
            (ConflictKind::BothPrimary, Winner::B) => {
                self.demote(Cause::Fix, &mut out);
                false
            }
            (ConflictKind::BothBackup, Winner::A) => {
                self.promote(now, Cause::Fix, &mut out);
                true
            }
            (ConflictKind::BothBackup, Winner::B) => {
                self.awaiting = Some(Awaiting::Promotion);
                out.push(Action::AskPeer(PeerCommand::BecomePrimary));
                false
            }
        };
        self.settled = true;
        out.push(Action::Record(Entry::Fixed {
            kind,
            primary_here,
            reason,
        }));
        Ok(out)
    }

    /// The peer answered a [`PeerCommand`] this machine asked for.
    pub fn peer_replied(
        &mut self,
        now: Time,
        command: PeerCommand,
        reply: PeerReply,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        self.advance(now, &mut out);
        if let PeerReply::Done { epoch } = reply {
            self.peer_epoch = self.peer_epoch.max(epoch);
        }
        let awaiting = self.awaiting.take();
        match (awaiting, command, reply) {
            (Some(Awaiting::Demotion), PeerCommand::BecomeBackup, PeerReply::Refused) => {
                out.push(Action::Record(Entry::PeerDidNotSwap { command }));
            }
            (Some(Awaiting::Demotion), PeerCommand::BecomeBackup, _)
                if self.role == Role::Backup =>
            {
                // Done, or the peer went away since it was reachable: the probe guards
                // the address.
                self.promote(now, Cause::BecomePrimary, &mut out);
            }
            (Some(Awaiting::FixDemotion), PeerCommand::BecomeBackup, PeerReply::Done { .. }) => {
                if self.holding {
                    out.push(Action::Announce);
                    self.announce_at = Some(now + ANNOUNCE_AGAIN);
                } else if self.role == Role::Primary {
                    self.take(now, &mut out);
                }
            }
            (Some(_), _, PeerReply::Done { .. }) => {}
            (Some(_), _, _) => out.push(Action::Record(Entry::PeerDidNotSwap { command })),
            (None, _, _) => {}
        }
        out
    }

    /// The peer asks this appliance to change role (its half of a swap or a fix).
    pub fn peer_command(
        &mut self,
        now: Time,
        command: PeerCommand,
        peer_epoch: u64,
    ) -> Result<Vec<Action>, Refusal> {
        if self.role == Role::None {
            return Err(Refusal::NoRelationship);
        }
        let mut out = Vec::new();
        self.advance(now, &mut out);
        self.peer_epoch = self.peer_epoch.max(peer_epoch);
        match (command, self.role) {
            (PeerCommand::BecomeBackup, Role::Primary) => self.demote(Cause::PeerAsked, &mut out),
            (PeerCommand::BecomePrimary, Role::Backup) => {
                self.promote(now, Cause::PeerAsked, &mut out)
            }
            (PeerCommand::BecomePrimary, Role::Primary) if !self.holding => {
                self.take(now, &mut out)
            }
            _ => {}
        }
        Ok(out)
    }

    fn check_command(&self, needs: Role) -> Result<(), Refusal> {
        match self.role {
            Role::None => Err(Refusal::NoRelationship),
            role if role != needs => Err(Refusal::WrongRole { role, needs }),
            _ if self.awaiting.is_some() => Err(Refusal::Busy),
            _ => Ok(()),
        }
    }

    fn own_evidence(&self) -> Evidence<'_> {
        Evidence {
            holds_shared_ip: self.holding && !self.pending,
            epoch: self.epoch,
            id: &self.id,
        }
    }

    /// Who keeps the role: A is this appliance, B the peer.
    fn decide(&self) -> (Winner, Reason) {
        match &self.peer {
            Some(p) => conflict::decide_why(
                self.own_evidence(),
                Evidence {
                    holds_shared_ip: p.holds_shared_ip,
                    epoch: p.epoch,
                    id: &p.id,
                },
            ),
            None => (Winner::A, Reason::Id),
        }
    }

    fn enter_conflict(&mut self, kind: ConflictKind, out: &mut Vec<Action>) {
        if self.conflict != Some(kind) {
            self.conflict = Some(kind);
            self.settled = false;
            out.push(Action::Record(Entry::Conflict { kind }));
        }
    }

    fn settle_both_primary(&mut self, now: Time, out: &mut Vec<Action>) {
        let (winner, reason) = self.decide();
        self.settled = true;
        let primary_here = winner == Winner::A;
        if primary_here {
            if self.holding {
                out.push(Action::Announce);
                self.announce_at = Some(now + ANNOUNCE_AGAIN);
            } else {
                self.take(now, out);
            }
        } else {
            self.demote(Cause::ConflictLost, out);
        }
        out.push(Action::Record(Entry::Fixed {
            kind: ConflictKind::BothPrimary,
            primary_here,
            reason,
        }));
    }

    /// The new epoch, the persisted change, its history entry; per-role state reset.
    fn change_role(&mut self, to: Role, cause: Cause, out: &mut Vec<Action>) {
        let from = self.role;
        let epoch = self.epoch.max(self.peer_epoch).saturating_add(1);
        self.role = to;
        self.epoch = epoch;
        self.pending = false;
        self.cut_off = false;
        self.isolated = false;
        self.untested = false;
        self.conflict = None;
        self.settled = false;
        self.both_backup_since = None;
        self.silence = Duration::ZERO;
        self.net_silence = Duration::ZERO;
        self.round = Round::None;
        self.alerts.half = false;
        out.push(Action::Persist {
            role: to,
            epoch,
            cause,
        });
        out.push(Action::Record(Entry::RoleChanged {
            from,
            to,
            epoch,
            cause,
        }));
    }

    fn promote(&mut self, now: Time, cause: Cause, out: &mut Vec<Action>) {
        self.change_role(Role::Primary, cause, out);
        self.take(now, out);
    }

    fn demote(&mut self, cause: Cause, out: &mut Vec<Action>) {
        self.change_role(Role::Backup, cause, out);
        self.holding = false;
        self.announce_at = None;
        out.push(Action::WithholdSharedIps);
    }

    /// Takes the shared IPs (after a probe) and announces them now and again later.
    fn take(&mut self, now: Time, out: &mut Vec<Action>) {
        self.holding = true;
        self.pending = false;
        if self.isolated {
            self.isolated = false;
        }
        out.push(Action::HoldSharedIps { probe: true });
        out.push(Action::Announce);
        out.push(Action::Record(Entry::TookSharedIps));
        self.announce_at = Some(now + ANNOUNCE_AGAIN);
    }

    fn leave(&mut self, cause: Cause, out: &mut Vec<Action>) {
        self.change_role(Role::None, cause, out);
        out.push(Action::ReleaseSharedIps {
            enabled: self.holding,
        });
        self.holding = false;
        self.announce_at = None;
        self.awaiting = None;
        self.peer = None;
        self.reset_watch();
    }

    fn reset_watch(&mut self) {
        self.peer_reachable = false;
        self.missed = false;
        self.silence = Duration::ZERO;
        self.net_silence = Duration::ZERO;
        self.round = Round::None;
        self.alerts = Series::default();
    }

    /// Sends an alert (a backup with backup operations on); all but the last of a series
    /// are at least [`ALERT_SPACING`] apart.
    fn alert(&mut self, now: Time, kind: AlertKind, out: &mut Vec<Action>) {
        if !self.params.backup_operations {
            return;
        }
        let last = matches!(kind, AlertKind::Takeover | AlertKind::CutOff);
        let recent = self
            .alerts
            .last_at
            .is_some_and(|t| now.saturating_sub(t) < ALERT_SPACING);
        if recent && !last {
            return;
        }
        self.alerts.last_at = Some(now);
        let remaining = (self.params.automatic() && kind != AlertKind::Takeover)
            .then(|| self.params.timeout.saturating_sub(self.silence));
        out.push(Action::Alert(Alert {
            kind,
            silent_for: self.silence,
            remaining,
        }));
    }

    /// Starts a test-IP round ending at `until`.
    fn ping(&mut self, until: Time, out: &mut Vec<Action>) {
        self.round = Round::Running { until };
        out.push(Action::PingTestIps { until });
    }

    fn evaluate(&mut self, now: Time, out: &mut Vec<Action>) {
        if let Some(at) = self.announce_at {
            if now >= at {
                self.announce_at = None;
                if self.holding {
                    out.push(Action::Announce);
                }
            }
        }
        match self.role {
            Role::Backup => self.watch_as_backup(now, out),
            Role::Primary => self.watch_as_primary(now, out),
            Role::None => {}
        }
    }

    fn watch_as_backup(&mut self, now: Time, out: &mut Vec<Action>) {
        let p = self.params;
        if let Some(since) = self.both_backup_since {
            if self.peer_reachable && p.automatic() && self.awaiting.is_none() {
                let waited = now.saturating_sub(since);
                let (winner, _) = self.decide();
                let due = match winner {
                    Winner::A => p.both_backup_grace(),
                    Winner::B => p.both_backup_grace() * 2,
                };
                if waited >= due {
                    self.promote(now, Cause::BothBackup, out);
                }
            }
            return;
        }
        if self.peer_reachable || !self.missed {
            return;
        }
        let t = p.timeout;
        if self.silence >= t / 2 && !self.alerts.half {
            self.alerts.half = true;
            self.alert(now, AlertKind::HalfTimeout, out);
        }
        if !p.automatic() {
            return;
        }
        let window_start = t.saturating_sub(p.ping_window());
        if p.has_test_ips && self.round == Round::None && self.silence >= window_start {
            let until = now + t.saturating_sub(self.silence).max(p.heartbeat);
            self.ping(until, out);
        }
        if self.silence < t {
            return;
        }
        if !p.has_test_ips {
            self.promote(now, Cause::AutomaticFailover, out);
            self.untested = true;
            out.push(Action::Record(Entry::Untested));
            self.alert(now, AlertKind::Takeover, out);
            return;
        }
        match self.round {
            Round::Done { answered: true, .. } => {
                self.promote(now, Cause::AutomaticFailover, out);
                self.alert(now, AlertKind::Takeover, out);
            }
            Round::Done {
                answered: false, ..
            } => {
                if !self.cut_off {
                    self.cut_off = true;
                    out.push(Action::Record(Entry::CutOff));
                    self.alert(now, AlertKind::CutOff, out);
                }
                // A whole new timeout of silence before the next try.
                self.silence = Duration::ZERO;
                self.round = Round::None;
                self.alerts.half = true;
            }
            Round::Running { .. } | Round::None => {}
        }
    }

    fn watch_as_primary(&mut self, now: Time, out: &mut Vec<Action>) {
        let p = self.params;
        if self.peer_reachable || !self.missed {
            return;
        }
        let t = p.timeout;
        let window_start = t.saturating_sub(p.ping_window());
        if self.holding {
            if !p.has_test_ips {
                return;
            }
            if self.round == Round::None && self.net_silence >= window_start {
                let until = now + t.saturating_sub(self.net_silence).max(p.heartbeat);
                self.ping(until, out);
            }
            if self.net_silence >= t
                && matches!(
                    self.round,
                    Round::Done {
                        answered: false,
                        ..
                    }
                )
            {
                self.holding = false;
                self.isolated = true;
                self.announce_at = None;
                out.push(Action::WithholdSharedIps);
                out.push(Action::Record(Entry::GaveUpSharedIps));
            }
            return;
        }
        // Not holding: pending, or gave the address up. Take it when the peer has been
        // silent for the timeout and a test IP answers (or there are none).
        if self.silence < window_start {
            return;
        }
        if !p.has_test_ips {
            if self.silence >= t {
                self.take(now, out);
                self.untested = true;
                out.push(Action::Record(Entry::Untested));
            }
            return;
        }
        match self.round {
            Round::None => {
                let until = now + t.saturating_sub(self.silence).max(p.heartbeat);
                self.ping(until, out);
            }
            Round::Done { answered: true, .. } if self.silence >= t => self.take(now, out),
            Round::Done {
                answered: false,
                at,
            } if self.silence >= t => {
                self.isolated = true;
                if now >= at + p.heartbeat {
                    self.ping(now + p.ping_window(), out);
                }
            }
            _ => {}
        }
    }
}
