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
//! withholds the shared IP, the winner announces again (and settles it again every
//! [`Params::both_backup_grace`] while the peer still answers as primary). Both backup lasts only while
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
/// Another host's claims on a held shared IP are answered at most this often (as for
/// configured addresses, RFC 5227 §2.4).
pub const DEFEND_INTERVAL: Duration = Duration::from_secs(10);
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
    /// No backup has pulled a data sync from this primary for the configured time (sent
    /// by the sync service, not the role machine).
    NoPull,
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

impl Action {
    /// Whether carrying it out reaches the network (everything but persisting and
    /// recording): a batch's [`Action::Persist`] comes before all of these.
    pub fn touches_network(&self) -> bool {
        !matches!(self, Action::Persist { .. } | Action::Record(_))
    }
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
    /// The last claim on a held shared IP that was answered.
    last_claim: Option<Time>,
    /// The last test-IP result recorded in the history (only changes are recorded).
    last_test: Option<bool>,
    alerts: Series,
    cut_off: bool,
    isolated: bool,
    untested: bool,
    conflict: Option<ConflictKind>,
    /// When the conflict of this episode was last acted on.
    settled_at: Option<Time>,
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
            last_test: None,
            last_claim: None,
            alerts: Series::default(),
            cut_off: false,
            isolated: false,
            untested: false,
            conflict: None,
            settled_at: None,
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
        self.last_test = None;
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
                self.settled_at = None;
                self.both_backup_since = None;
                if self.role == Role::Primary && !self.holding {
                    self.take(now, &mut out);
                }
            }
            (Role::Primary, Role::Primary) => {
                self.enter_conflict(ConflictKind::BothPrimary, &mut out);
                // Settled at once; again if it lasts (the peer did not step down).
                let due = self
                    .settled_at
                    .is_none_or(|at| now.saturating_sub(at) >= self.params.both_backup_grace());
                if due {
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
                self.alert(now, AlertKind::FirstMissed, self.silence, &mut out);
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
        if !matches!(self.round, Round::Running { .. }) {
            // A late result of a round the machine no longer waits for (the peer
            // answered since, or the role changed): stale evidence, ignored.
            return out;
        }
        if self.last_test != Some(answered) {
            self.last_test = Some(answered);
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
    /// else is answered with an announcement and recorded, at most once per
    /// [`DEFEND_INTERVAL`] (a remote host cannot flood the history or the wire).
    pub fn address_claimed(&mut self, now: Time) -> Vec<Action> {
        let mut out = Vec::new();
        self.advance(now, &mut out);
        if self.role != Role::Primary || !self.holding {
            return out;
        }
        if self
            .last_claim
            .is_some_and(|t| now.saturating_sub(t) < DEFEND_INTERVAL)
        {
            return out;
        }
        self.last_claim = Some(now);
        out.push(Action::Record(Entry::AddressClaimed));
        out.push(Action::Announce);
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
        self.settled_at = Some(now);
        out.push(Action::Record(Entry::Fixed {
            kind,
            primary_here,
            reason,
        }));
        Ok(out)
    }

    /// The peer answered a [`PeerCommand`] this machine asked for. The driver reports
    /// every [`Action::AskPeer`] (with [`PeerReply::NoAnswer`] when it times out): until
    /// then, manual role changes answer [`Refusal::Busy`].
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
            self.settled_at = None;
            out.push(Action::Record(Entry::Conflict { kind }));
        }
    }

    fn settle_both_primary(&mut self, now: Time, out: &mut Vec<Action>) {
        let (winner, reason) = self.decide();
        self.settled_at = Some(now);
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
        self.settled_at = None;
        self.both_backup_since = None;
        self.silence = Duration::ZERO;
        self.net_silence = Duration::ZERO;
        self.round = Round::None;
        self.alerts.half = false;
        // First of the batch, before any network action already in it.
        let at = out
            .iter()
            .position(Action::touches_network)
            .unwrap_or(out.len());
        out.insert(
            at,
            Action::Persist {
                role: to,
                epoch,
                cause,
            },
        );
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
    fn alert(&mut self, now: Time, kind: AlertKind, silent_for: Duration, out: &mut Vec<Action>) {
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
            .then(|| self.params.timeout.saturating_sub(silent_for));
        out.push(Action::Alert(Alert {
            kind,
            silent_for,
            remaining,
        }));
    }

    /// Starts a test-IP round ending at `until`.
    fn ping(&mut self, until: Time, out: &mut Vec<Action>) {
        self.round = Round::Running { until };
        out.push(Action::PingTestIps { until });
    }

    fn evaluate(&mut self, now: Time, out: &mut Vec<Action>) {
        // A round whose result never came (the driver lost it) counts as unanswered.
        if let Round::Running { until } = self.round {
            if now > until + self.params.heartbeat {
                self.round = Round::Done {
                    answered: false,
                    at: now,
                };
            }
        }
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
            self.alert(now, AlertKind::HalfTimeout, self.silence, out);
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
            self.take_over(now, true, out);
            return;
        }
        match self.round {
            Round::Done { answered: true, .. } => self.take_over(now, false, out),
            Round::Done {
                answered: false, ..
            } => {
                if !self.cut_off {
                    self.cut_off = true;
                    out.push(Action::Record(Entry::CutOff));
                    self.alert(now, AlertKind::CutOff, self.silence, out);
                }
                // A whole new timeout of silence before the next try.
                self.silence = Duration::ZERO;
                self.round = Round::None;
                self.alerts.half = true;
            }
            Round::Running { .. } | Round::None => {}
        }
    }

    /// The automatic failover of a backup.
    fn take_over(&mut self, now: Time, untested: bool, out: &mut Vec<Action>) {
        let silent_for = self.silence;
        self.promote(now, Cause::AutomaticFailover, out);
        if untested {
            self.untested = true;
            out.push(Action::Record(Entry::Untested));
        }
        self.alert(now, AlertKind::Takeover, silent_for, out);
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

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "4c4c4544-0000-4000-8000-00000000000a";
    const PEER: &str = "4c4c4544-0000-4000-8000-00000000000b";

    fn ms(n: u64) -> Time {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Time {
        Duration::from_secs(n)
    }

    fn params(timeout: Time, automatic: bool, test_ips: bool) -> Params {
        Params {
            automatic_failover: automatic,
            backup_operations: true,
            timeout,
            heartbeat: (timeout / 4).min(secs(1)),
            has_test_ips: test_ips,
            has_shared_ip: true,
        }
    }

    fn view(role: Role, epoch: u64, holds: bool) -> PeerView {
        PeerView {
            role,
            epoch,
            pending: false,
            holds_shared_ip: holds,
            id: PEER.to_string(),
        }
    }

    fn is_network(a: &Action) -> bool {
        a.touches_network()
    }

    /// Every batch: at most one Persist, and it comes before any network action.
    fn checked(actions: Vec<Action>) -> Vec<Action> {
        let persists: Vec<usize> = (0..actions.len())
            .filter(|&i| matches!(actions[i], Action::Persist { .. }))
            .collect();
        assert!(persists.len() <= 1, "one Persist per batch: {actions:?}");
        if let (Some(&p), Some(n)) = (persists.first(), actions.iter().position(is_network)) {
            assert!(p < n, "Persist before any network action: {actions:?}");
        }
        actions
    }

    fn ok(r: Result<Vec<Action>, Refusal>) -> Vec<Action> {
        checked(r.expect("accepted"))
    }

    fn persisted(actions: &[Action]) -> Option<(Role, u64, Cause)> {
        actions.iter().find_map(|a| match a {
            Action::Persist { role, epoch, cause } => Some((*role, *epoch, *cause)),
            _ => None,
        })
    }

    fn count(log: &[(Time, Action)], pred: impl Fn(&Action) -> bool) -> usize {
        log.iter().filter(|(_, a)| pred(a)).count()
    }

    fn first(log: &[(Time, Action)], pred: impl Fn(&Action) -> bool) -> Option<Time> {
        log.iter().find(|(_, a)| pred(a)).map(|(t, _)| *t)
    }

    fn alerts(log: &[(Time, Action)]) -> Vec<(Time, AlertKind)> {
        log.iter()
            .filter_map(|(t, a)| match a {
                Action::Alert(al) => Some((*t, al.kind)),
                _ => None,
            })
            .collect()
    }

    /// What the world looks like at a time: the peer's answer (None: silent) and whether
    /// any test IP answers.
    struct World {
        peer: Option<PeerView>,
        test_ips: bool,
    }

    /// Drives `m` like its driver would, from `from` to `until`: a heartbeat every
    /// interval, ticks at each deadline, test-IP rounds answered after 5 ms (or not at
    /// all, then reported at their end).
    fn simulate(
        m: &mut Machine,
        from: Time,
        until: Time,
        world: impl Fn(Time) -> World,
    ) -> Vec<(Time, Action)> {
        let hb = m.params.heartbeat;
        let mut next_hb = from + hb;
        let mut ping: Option<(Time, bool)> = None;
        let mut log = Vec::new();
        for _ in 0..1_000_000 {
            let tick = m.deadline().unwrap_or(until + secs(1));
            let t = tick.min(next_hb).min(ping.map_or(tick, |p| p.0));
            if t > until {
                return log;
            }
            let actions = if ping.is_some_and(|p| p.0 == t) {
                let (_, answered) = ping.take().unwrap();
                m.test_ips_result(t, answered)
            } else if t == next_hb {
                next_hb += hb;
                match world(t).peer {
                    Some(v) => m.peer_answered(t, v),
                    None => m.peer_missed(t),
                }
            } else {
                m.tick(t)
            };
            for a in checked(actions) {
                if let Action::PingTestIps { until } = a {
                    ping = Some(if world(t).test_ips {
                        (t + ms(5), true)
                    } else {
                        (until, false)
                    });
                }
                log.push((t, a));
            }
        }
        panic!("the simulation does not end");
    }

    fn backup(p: Params) -> Machine {
        let mut m = Machine::new(ME, p, Time::ZERO);
        ok(m.establish(Time::ZERO, Role::Backup, 5));
        m
    }

    fn primary(p: Params) -> Machine {
        let mut m = Machine::new(ME, p, Time::ZERO);
        ok(m.establish(Time::ZERO, Role::Primary, 0));
        m
    }

    /// The peer is primary (epoch 5) until `gone`, then silent; test IPs as given.
    fn primary_gone(gone: Time, test_ips: bool) -> impl Fn(Time) -> World {
        move |t| World {
            peer: (t < gone).then(|| view(Role::Primary, 5, true)),
            test_ips,
        }
    }

    fn last_answer(m: &Machine) -> Time {
        m.status().last_answer.expect("an answer")
    }

    #[test]
    fn establishing_as_primary_persists_then_takes_and_announces_twice() {
        let mut m = Machine::new(ME, params(secs(3), true, true), Time::ZERO);
        let a = ok(m.establish(Time::ZERO, Role::Primary, 4));
        assert_eq!(persisted(&a), Some((Role::Primary, 5, Cause::Established)));
        assert_eq!(
            a[0],
            Action::Persist {
                role: Role::Primary,
                epoch: 5,
                cause: Cause::Established
            }
        );
        assert!(a.contains(&Action::HoldSharedIps { probe: true }));
        let log = simulate(&mut m, Time::ZERO, secs(5), |_| World {
            peer: Some(view(Role::Backup, 6, false)),
            test_ips: true,
        });
        assert_eq!(
            count(&log, |a| *a == Action::Announce),
            1,
            "the second burst"
        );
        let again = first(&log, |a| *a == Action::Announce).unwrap();
        assert!(
            again >= secs(1),
            "at least a second after the first: {again:?}"
        );
        assert_eq!(
            m.establish(secs(5), Role::Primary, 0),
            Err(Refusal::RelationshipExists)
        );
        assert!(persisted(&log.into_iter().map(|(_, a)| a).collect::<Vec<_>>()).is_none());
    }

    #[test]
    fn establishing_as_backup_withholds() {
        let mut m = Machine::new(ME, params(secs(3), true, true), Time::ZERO);
        let a = ok(m.establish(Time::ZERO, Role::Backup, 5));
        assert_eq!(persisted(&a), Some((Role::Backup, 6, Cause::Established)));
        assert!(a.contains(&Action::WithholdSharedIps));
        assert!(!a.iter().any(|a| matches!(a, Action::HoldSharedIps { .. })));
    }

    #[test]
    fn the_backup_takes_over_at_the_timeout_when_a_test_ip_answers() {
        let p = params(secs(3), true, true);
        let mut m = backup(p);
        let log = simulate(&mut m, Time::ZERO, secs(20), primary_gone(secs(10), true));
        let last = last_answer(&m);
        let window = p.ping_window();
        let pinged = first(&log, |a| matches!(a, Action::PingTestIps { .. })).unwrap();
        assert_eq!(
            pinged,
            last + p.timeout - window,
            "in the last part of the timeout"
        );
        assert!(log.iter().any(|(_, a)| *a
            == Action::PingTestIps {
                until: last + p.timeout
            }));
        let took = first(&log, |a| matches!(a, Action::Persist { .. })).unwrap();
        assert_eq!(
            took,
            last + p.timeout,
            "at the timeout, not before or much after"
        );
        let batch: Vec<Action> = log
            .iter()
            .filter(|(t, _)| *t == took)
            .map(|(_, a)| a.clone())
            .collect();
        assert_eq!(
            persisted(&batch),
            Some((Role::Primary, 7, Cause::AutomaticFailover))
        );
        let hold = batch
            .iter()
            .position(|a| matches!(a, Action::HoldSharedIps { probe: true }));
        let announce = batch.iter().position(|a| *a == Action::Announce);
        assert!(hold.unwrap() < announce.unwrap());
        // A short timeout: the first alert and the last, nothing between.
        let kinds: Vec<AlertKind> = alerts(&log).into_iter().map(|(_, k)| k).collect();
        assert_eq!(kinds, vec![AlertKind::FirstMissed, AlertKind::Takeover]);
        assert_eq!(m.role(), Role::Primary);
        assert!(!m.status().untested);
        assert_eq!(
            count(&log, |a| *a == Action::Announce),
            2,
            "now and again later"
        );
    }

    #[test]
    fn a_backup_that_reaches_no_test_ip_is_cut_off_and_does_not_take_over() {
        let p = params(secs(3), true, true);
        let mut m = backup(p);
        let log = simulate(&mut m, Time::ZERO, secs(40), primary_gone(secs(10), false));
        assert_eq!(count(&log, |a| matches!(a, Action::Persist { .. })), 0);
        assert_eq!(
            count(&log, |a| matches!(a, Action::HoldSharedIps { .. })),
            0
        );
        assert_eq!(count(&log, |a| *a == Action::Record(Entry::CutOff)), 1);
        let kinds: Vec<AlertKind> = alerts(&log).into_iter().map(|(_, k)| k).collect();
        assert_eq!(kinds, vec![AlertKind::FirstMissed, AlertKind::CutOff]);
        assert!(m.status().cut_off);
        assert_eq!(m.status().countdown, None);
        // It keeps trying, one round per timeout.
        let rounds = count(&log, |a| matches!(a, Action::PingTestIps { .. }));
        assert!(
            (9..=11).contains(&rounds),
            "{rounds} rounds in 30 s of silence"
        );
        // Its network comes back; the primary is still gone: it takes over.
        let log = simulate(&mut m, secs(40), secs(50), primary_gone(secs(10), true));
        let took = first(&log, |a| matches!(a, Action::Persist { .. })).unwrap();
        assert!(
            took <= secs(44),
            "within a timeout of the network's return: {took:?}"
        );
        assert_eq!(m.role(), Role::Primary);
        assert!(!m.status().cut_off);
    }

    #[test]
    fn with_no_test_ips_the_backup_takes_over_and_warns() {
        let p = params(secs(2), true, false);
        let mut m = backup(p);
        let log = simulate(&mut m, Time::ZERO, secs(20), primary_gone(secs(10), false));
        assert_eq!(count(&log, |a| matches!(a, Action::PingTestIps { .. })), 0);
        let took = first(&log, |a| matches!(a, Action::Persist { .. })).unwrap();
        assert_eq!(took, last_answer(&m) + p.timeout);
        assert!(m.status().untested, "status warns");
        assert_eq!(count(&log, |a| *a == Action::Record(Entry::Untested)), 1);
    }

    #[test]
    fn a_stalled_backup_does_not_fail_over_on_its_own_stall() {
        let p = params(secs(1), true, false);
        for answer_first in [false, true] {
            let mut m = backup(p);
            simulate(&mut m, Time::ZERO, secs(5), primary_gone(secs(1000), true));
            // Paused for a minute; on resuming, the timer of the heartbeat in flight
            // fires before its answer is read, or after.
            let resumed = secs(65);
            let mut all = Vec::new();
            let alive = view(Role::Primary, 5, true);
            if answer_first {
                all.extend(checked(m.peer_answered(resumed, alive.clone())));
                all.extend(checked(m.tick(resumed + ms(1))));
            } else {
                all.extend(checked(m.tick(resumed)));
                all.extend(checked(m.peer_missed(resumed + ms(1))));
                all.extend(checked(m.tick(resumed + ms(2))));
                all.extend(checked(m.peer_answered(resumed + ms(3), alive.clone())));
            }
            assert!(persisted(&all).is_none(), "no takeover: {all:?}");
            assert!(all
                .iter()
                .any(|a| matches!(a, Action::Record(Entry::Stalled { .. }))));
            assert!(m.status().silent_for < p.timeout);
            let log = simulate(
                &mut m,
                resumed + ms(3),
                secs(80),
                primary_gone(secs(1000), true),
            );
            assert_eq!(count(&log, |a| matches!(a, Action::Persist { .. })), 0);
        }
    }

    #[test]
    fn a_stall_during_real_silence_needs_a_fresh_failed_heartbeat() {
        let p = params(secs(1), true, false);
        let mut m = backup(p);
        simulate(&mut m, Time::ZERO, secs(5), primary_gone(ms(4300), true));
        // Silent for 0.75 s, then paused for a minute: nothing on resuming.
        let a = checked(m.tick(secs(65)));
        assert!(persisted(&a).is_none());
        // 0.75 s before the stall and 0.3 s after: past the timeout, but no heartbeat
        // has failed since the stall.
        let a = checked(m.tick(secs(65) + ms(300)));
        assert!(persisted(&a).is_none(), "{a:?}");
        assert_eq!(
            m.status().silent_for,
            ms(1050),
            "the stall itself did not count"
        );
        // The next heartbeat fails: now it takes over.
        let a = checked(m.peer_missed(secs(65) + ms(310)));
        assert!(persisted(&a).is_some(), "{a:?}");
    }

    #[test]
    fn silence_is_counted_by_time_not_by_polls() {
        let p = params(secs(2), true, false);
        // One failed poll, then nothing but ticks: it still takes over on time.
        let mut m = backup(p);
        checked(m.peer_answered(ms(100), view(Role::Primary, 5, true)));
        checked(m.peer_missed(ms(600)));
        let mut took = None;
        for i in 1..100u64 {
            let t = ms(600 + i * 50);
            if persisted(&checked(m.tick(t))).is_some() {
                took = Some(t);
                break;
            }
        }
        assert_eq!(took, Some(ms(2100)));
        // Many failed polls do not make it sooner.
        let mut m = backup(p);
        checked(m.peer_answered(ms(100), view(Role::Primary, 5, true)));
        for i in 1..199u64 {
            let a = checked(m.peer_missed(ms(100 + i * 10)));
            assert!(persisted(&a).is_none(), "at {} ms", 100 + i * 10);
        }
        assert!(persisted(&checked(m.peer_missed(ms(2100)))).is_some());
    }

    #[test]
    fn without_automatic_failover_the_backup_only_alerts() {
        let p = params(secs(600), false, true);
        let mut m = backup(p);
        let log = simulate(&mut m, Time::ZERO, secs(2000), primary_gone(secs(10), true));
        assert_eq!(count(&log, |a| matches!(a, Action::Persist { .. })), 0);
        assert_eq!(count(&log, |a| matches!(a, Action::PingTestIps { .. })), 0);
        let a = alerts(&log);
        assert_eq!(a.len(), 2, "{a:?}");
        assert_eq!(a[0].1, AlertKind::FirstMissed);
        assert_eq!(a[1], (a[0].0 + secs(299), AlertKind::HalfTimeout));
        assert_eq!(m.status().countdown, None);
        assert_eq!(m.role(), Role::Backup);
    }

    #[test]
    fn a_long_timeout_counts_down_in_three_alerts_and_in_status() {
        let p = params(secs(600), true, true);
        let mut m = backup(p);
        let log = simulate(&mut m, Time::ZERO, secs(300), primary_gone(secs(10), true));
        let last = last_answer(&m);
        assert_eq!(m.status().countdown, Some(last + p.timeout - secs(300)));
        let log2 = simulate(&mut m, secs(300), secs(700), primary_gone(secs(10), true));
        let all: Vec<_> = log.into_iter().chain(log2).collect();
        let a = alerts(&all);
        let kinds: Vec<_> = a.iter().map(|x| x.1).collect();
        assert_eq!(
            kinds,
            [
                AlertKind::FirstMissed,
                AlertKind::HalfTimeout,
                AlertKind::Takeover
            ]
        );
        assert_eq!(a[1].0, last + secs(300));
        assert_eq!(a[2].0, last + secs(600));
        let remaining: Vec<_> = all
            .iter()
            .filter_map(|(_, x)| match x {
                Action::Alert(al) => Some(al.remaining),
                _ => None,
            })
            .collect();
        assert_eq!(remaining, [Some(secs(599)), Some(secs(300)), None]);
    }

    #[test]
    fn alerts_of_a_flapping_link_come_at_most_once_a_minute() {
        let p = params(secs(3), true, true);
        let mut m = backup(p);
        // One heartbeat in three fails, for two minutes.
        let log = simulate(&mut m, Time::ZERO, secs(120), |t| World {
            peer: (t.as_millis() % 2250 != 0).then(|| view(Role::Primary, 5, true)),
            test_ips: true,
        });
        let a = alerts(&log);
        assert!((2..=3).contains(&a.len()), "{a:?}");
        assert!(a.windows(2).all(|w| w[1].0 - w[0].0 >= ALERT_SPACING));
        assert_eq!(count(&log, |a| matches!(a, Action::Persist { .. })), 0);
    }

    #[test]
    fn backup_operations_off_or_no_shared_ip_means_no_takeover() {
        let quiet = Params {
            backup_operations: false,
            ..params(secs(1), true, false)
        };
        let no_ip = Params {
            has_shared_ip: false,
            ..params(secs(1), true, false)
        };
        for p in [quiet, no_ip] {
            let mut m = backup(p);
            let log = simulate(&mut m, Time::ZERO, secs(30), primary_gone(secs(5), true));
            assert_eq!(
                count(&log, |a| matches!(a, Action::Persist { .. })),
                0,
                "{p:?}"
            );
            if !p.backup_operations {
                assert!(alerts(&log).is_empty());
            }
        }
        let m = backup(no_ip);
        assert!(
            m.status().needs_shared_ip,
            "status says automatic failover needs one"
        );
    }

    #[test]
    fn a_cut_off_primary_gives_up_the_shared_ip_and_takes_it_back() {
        // Its own test IPs count even with backup operations (and automatic failover) off.
        for p in [
            params(secs(2), true, true),
            Params {
                backup_operations: false,
                ..params(secs(2), false, true)
            },
        ] {
            cut_off_primary(p);
        }
    }

    fn cut_off_primary(p: Params) {
        let mut m = primary(p);
        // Its link goes at 10 s: no backup, no test IPs.
        let log = simulate(&mut m, Time::ZERO, secs(20), |t| World {
            peer: (t < secs(10)).then(|| view(Role::Backup, 2, false)),
            test_ips: t < secs(10),
        });
        let last = last_answer(&m);
        let gave_up = first(&log, |a| *a == Action::WithholdSharedIps).unwrap();
        assert_eq!(
            gave_up,
            last + p.timeout,
            "after the timeout of seeing nothing"
        );
        assert_eq!(count(&log, |a| matches!(a, Action::Persist { .. })), 0);
        assert_eq!(m.role(), Role::Primary, "the role stays");
        assert!(m.status().isolated && !m.status().holding);
        // The link is back, the backup still silent: after a probe, it holds again.
        let log = simulate(&mut m, secs(20), secs(25), |_| World {
            peer: None,
            test_ips: true,
        });
        let back = first(&log, |a| *a == Action::HoldSharedIps { probe: true }).unwrap();
        // Within a timeout (the round in flight at 20 s is lost with the simulation).
        assert!(back <= secs(20) + p.timeout + ms(10), "{back:?}");
        assert!(log
            .iter()
            .any(|(t, a)| *t == back && *a == Action::Announce));
        assert_eq!(count(&log, |a| matches!(a, Action::Persist { .. })), 0);
        assert!(m.status().holding && !m.status().isolated);
    }

    #[test]
    fn a_primary_that_sees_a_test_ip_or_has_none_keeps_the_shared_ip() {
        for test_ips in [true, false] {
            let p = params(secs(2), true, test_ips);
            let mut m = primary(p);
            let log = simulate(&mut m, Time::ZERO, secs(60), |t| World {
                peer: (t < secs(10)).then(|| view(Role::Backup, 2, false)),
                test_ips: !test_ips || t < secs(1000),
            });
            assert_eq!(count(&log, |a| *a == Action::WithholdSharedIps), 0);
            let rounds = count(&log, |a| matches!(a, Action::PingTestIps { .. }));
            if test_ips {
                // One per timeout less the window: 50 s / 1.5 s.
                assert!((30..=36).contains(&rounds), "{rounds} rounds");
            } else {
                assert_eq!(rounds, 0);
            }
            // Without test IPs, no network at all changes nothing either.
            if !test_ips {
                let log = simulate(&mut m, secs(60), secs(90), |_| World {
                    peer: None,
                    test_ips: false,
                });
                assert_eq!(count(&log, |a| *a == Action::WithholdSharedIps), 0);
            }
        }
    }

    #[test]
    fn a_returning_primary_never_takes_the_ip_from_a_newer_primary() {
        let p = params(secs(3), true, true);
        for peer in [
            view(Role::Primary, 7, true),
            view(Role::Primary, 7, false),
            view(Role::Primary, 3, true),
        ] {
            let (mut m, a) = Machine::restore(ME, p, Role::Primary, 5, false, Time::ZERO);
            assert_eq!(a, vec![Action::WithholdSharedIps]);
            assert!(m.status().pending);
            let a = checked(m.peer_answered(ms(100), peer.clone()));
            assert_eq!(
                persisted(&a),
                Some((Role::Backup, peer.epoch.max(5) + 1, Cause::ConflictLost))
            );
            assert!(!a
                .iter()
                .any(|x| matches!(x, Action::HoldSharedIps { .. } | Action::Announce)));
            let log = simulate(&mut m, ms(100), secs(30), |_| World {
                peer: Some(peer.clone()),
                test_ips: true,
            });
            assert_eq!(
                count(&log, |x| matches!(x, Action::HoldSharedIps { .. })),
                0
            );
            assert_eq!(m.role(), Role::Backup);
        }
    }

    #[test]
    fn a_returning_primary_whose_peer_is_backup_resumes() {
        let p = params(secs(3), true, true);
        let (mut m, _) = Machine::restore(ME, p, Role::Primary, 5, false, Time::ZERO);
        let a = checked(m.peer_answered(ms(100), view(Role::Backup, 6, false)));
        assert!(persisted(&a).is_none(), "the same role and epoch");
        assert!(
            a.contains(&Action::HoldSharedIps { probe: true }) && a.contains(&Action::Announce)
        );
        assert!(!m.status().pending && m.status().holding);
    }

    #[test]
    fn a_returning_primary_alone_waits_a_timeout_and_needs_a_test_ip() {
        let p = params(secs(3), true, true);
        let (mut m, _) = Machine::restore(ME, p, Role::Primary, 5, false, Time::ZERO);
        let log = simulate(&mut m, Time::ZERO, secs(30), |_| World {
            peer: None,
            test_ips: false,
        });
        assert_eq!(
            count(&log, |a| matches!(a, Action::HoldSharedIps { .. })),
            0
        );
        assert!(m.status().pending && m.status().isolated);
        let log = simulate(&mut m, secs(30), secs(35), |_| World {
            peer: None,
            test_ips: true,
        });
        assert!(first(&log, |a| *a == Action::HoldSharedIps { probe: true }).is_some());
        assert!(!m.status().pending);
        // With no test IPs: at the timeout, with a warning.
        let p = params(secs(3), true, false);
        let (mut m, _) = Machine::restore(ME, p, Role::Primary, 5, false, Time::ZERO);
        let log = simulate(&mut m, Time::ZERO, secs(10), |_| World {
            peer: None,
            test_ips: false,
        });
        let held = first(&log, |a| matches!(a, Action::HoldSharedIps { .. })).unwrap();
        assert!(
            held >= p.timeout && held <= p.timeout + p.heartbeat,
            "{held:?}"
        );
        assert!(m.status().untested);
    }

    #[test]
    fn an_agent_restart_on_the_primary_keeps_the_shared_ip_without_a_flap() {
        let p = params(secs(3), true, true);
        let (mut m, a) = Machine::restore(ME, p, Role::Primary, 5, true, Time::ZERO);
        assert_eq!(a, vec![Action::HoldSharedIps { probe: false }]);
        let log = simulate(&mut m, Time::ZERO, secs(10), |_| World {
            peer: Some(view(Role::Backup, 6, false)),
            test_ips: true,
        });
        assert!(log.iter().all(|(_, a)| !is_network(a)), "{log:?}");
        assert_eq!(m.epoch(), 5);
        let (_, a) = Machine::restore(ME, p, Role::Backup, 6, true, Time::ZERO);
        assert_eq!(a, vec![Action::WithholdSharedIps]);
    }

    #[test]
    fn become_backup_is_cancelled_without_force_when_the_peer_is_unreachable() {
        let p = params(secs(3), true, true);
        let mut m = primary(p);
        let before = m.status();
        assert_eq!(
            m.become_backup(secs(1), false, false),
            Err(Refusal::PeerUnreachable)
        );
        assert_eq!(m.status(), before, "nothing changed");
        let a = ok(m.become_backup(secs(1), true, false));
        assert_eq!(
            persisted(&a),
            Some((Role::Backup, 2, Cause::ForcedBecomeBackup))
        );
        assert!(a.contains(&Action::WithholdSharedIps));
        assert!(!a.iter().any(|x| matches!(x, Action::AskPeer(_))));
        assert_eq!(
            m.become_backup(secs(2), true, true),
            Err(Refusal::WrongRole {
                role: Role::Backup,
                needs: Role::Primary
            })
        );
        let mut none = Machine::new(ME, p, Time::ZERO);
        assert_eq!(
            none.become_backup(Time::ZERO, true, true),
            Err(Refusal::NoRelationship)
        );
        assert_eq!(
            none.become_primary(Time::ZERO, false, true),
            Err(Refusal::NoRelationship)
        );
    }

    #[test]
    fn become_backup_with_the_peer_steps_down_first_then_asks_it() {
        let mut m = primary(params(secs(3), true, true));
        let a = ok(m.become_backup(secs(1), false, true));
        let order: Vec<&Action> = a
            .iter()
            .filter(|x| !matches!(x, Action::Record(_)))
            .collect();
        assert_eq!(
            order,
            [
                &Action::Persist {
                    role: Role::Backup,
                    epoch: 2,
                    cause: Cause::BecomeBackup
                },
                &Action::WithholdSharedIps,
                &Action::AskPeer(PeerCommand::BecomePrimary),
            ]
        );
        let a = m.peer_replied(secs(2), PeerCommand::BecomePrimary, PeerReply::NoAnswer);
        assert!(a.contains(&Action::Record(Entry::PeerDidNotSwap {
            command: PeerCommand::BecomePrimary
        })));
    }

    #[test]
    fn become_primary_waits_for_the_peer_to_step_down() {
        let p = params(secs(3), true, true);
        let mut m = backup(p);
        let a = ok(m.become_primary(secs(1), false, true));
        assert_eq!(a, vec![Action::AskPeer(PeerCommand::BecomeBackup)]);
        assert_eq!(m.become_primary(secs(1), false, true), Err(Refusal::Busy));
        let a = checked(m.peer_replied(
            secs(2),
            PeerCommand::BecomeBackup,
            PeerReply::Done { epoch: 9 },
        ));
        assert_eq!(
            persisted(&a),
            Some((Role::Primary, 10, Cause::BecomePrimary))
        );
        assert!(a.contains(&Action::HoldSharedIps { probe: true }));
        // A refusal leaves it backup.
        let mut m = backup(p);
        ok(m.become_primary(secs(1), false, true));
        let a = checked(m.peer_replied(secs(2), PeerCommand::BecomeBackup, PeerReply::Refused));
        assert!(persisted(&a).is_none());
        assert_eq!(m.role(), Role::Backup);
        // With the primary down (unplanned maintenance): at once.
        let mut m = backup(p);
        let a = ok(m.become_primary(secs(1), false, false));
        assert_eq!(
            persisted(&a),
            Some((Role::Primary, 7, Cause::BecomePrimary))
        );
    }

    /// Two machines and the peer channel between them, delivered by hand.
    struct Pair {
        a: Machine,
        b: Machine,
    }

    impl Pair {
        fn new(p: Params) -> Pair {
            let mut a = Machine::new(ME, p, Time::ZERO);
            let mut b = Machine::new(PEER, p, Time::ZERO);
            ok(a.establish(Time::ZERO, Role::Primary, 0));
            ok(b.establish(Time::ZERO, Role::Backup, a.epoch()));
            Pair { a, b }
        }

        fn view_of(m: &Machine) -> PeerView {
            let s = m.status();
            PeerView {
                role: s.role,
                epoch: s.epoch,
                pending: s.pending,
                holds_shared_ip: s.holding && !s.pending,
                id: m.id.clone(),
            }
        }

        fn never_both_primary(&self) {
            assert!(
                !(self.a.role() == Role::Primary && self.b.role() == Role::Primary),
                "both primary"
            );
        }

        /// Carries out the AskPeer actions of one side on the other.
        fn deliver(&mut self, now: Time, from_a: bool, actions: Vec<Action>) {
            for act in checked(actions) {
                self.never_both_primary();
                if let Action::AskPeer(cmd) = act {
                    let (asker, asked) = if from_a {
                        (&mut self.a, &mut self.b)
                    } else {
                        (&mut self.b, &mut self.a)
                    };
                    let done = ok(asked.peer_command(now, cmd, asker.epoch()));
                    let reply = PeerReply::Done {
                        epoch: asked.epoch(),
                    };
                    let _ = done;
                    self.never_both_primary();
                    let back = if from_a { &mut self.a } else { &mut self.b };
                    let more = back.peer_replied(now, cmd, reply);
                    self.deliver(now, from_a, more);
                }
            }
            self.never_both_primary();
        }

        /// Each sees the other once.
        fn exchange(&mut self, now: Time) -> (Vec<Action>, Vec<Action>) {
            let (va, vb) = (Pair::view_of(&self.a), Pair::view_of(&self.b));
            let x = checked(self.a.peer_answered(now, vb));
            let y = checked(self.b.peer_answered(now, va));
            (x, y)
        }
    }

    #[test]
    fn a_planned_swap_is_serial_and_never_both_primary() {
        let mut pair = Pair::new(params(secs(3), true, true));
        pair.exchange(ms(10));
        let a = ok(pair.a.become_backup(secs(1), false, true));
        pair.deliver(secs(1), true, a);
        assert_eq!(
            (pair.a.role(), pair.b.role()),
            (Role::Backup, Role::Primary)
        );
        pair.exchange(secs(2));
        // And back, from the other side's Become Primary.
        let a = ok(pair.a.become_primary(secs(3), false, true));
        pair.deliver(secs(3), true, a);
        assert_eq!(
            (pair.a.role(), pair.b.role()),
            (Role::Primary, Role::Backup)
        );
        let (x, y) = pair.exchange(secs(4));
        assert!(pair.a.status().conflict.is_none() && pair.b.status().conflict.is_none());
        assert!(persisted(&x).is_none() && persisted(&y).is_none());
        assert!(pair.a.epoch() > pair.b.epoch());
    }

    #[test]
    fn both_primary_is_settled_at_once_the_same_way_on_both_sides() {
        let p = params(secs(3), true, true);
        // (a holds, b holds, a's epoch, b's epoch) -> a stays primary
        for (a_holds, b_holds, ea, eb, a_wins) in [
            (true, true, 7, 8, false),  // both hold: the newer epoch
            (true, false, 7, 8, true),  // only a holds: a, though older
            (false, false, 9, 9, true), // alike: the lower id (ME)
        ] {
            let mut a = Machine::new(ME, p, Time::ZERO);
            let mut b = Machine::new(PEER, p, Time::ZERO);
            for (m, holds, e) in [(&mut a, a_holds, ea), (&mut b, b_holds, eb)] {
                m.role = Role::Primary;
                m.epoch = e;
                m.holding = holds;
            }
            let (va, vb) = (Pair::view_of(&a), Pair::view_of(&b));
            let x = checked(a.peer_answered(secs(1), vb));
            let y = checked(b.peer_answered(secs(1), va));
            let (win, lose) = if a_wins { (&x, &y) } else { (&y, &x) };
            assert_eq!(
                persisted(lose).map(|p| (p.0, p.2)),
                Some((Role::Backup, Cause::ConflictLost))
            );
            assert!(lose.contains(&Action::WithholdSharedIps));
            assert!(persisted(win).is_none());
            assert!(
                win.contains(&Action::Announce),
                "the keeper announces again"
            );
            assert!(win.contains(&Action::Record(Entry::Conflict {
                kind: ConflictKind::BothPrimary
            })));
            let roles = [a.role(), b.role()];
            assert_eq!(roles.iter().filter(|r| **r == Role::Primary).count(), 1);
            assert_eq!(a.role() == Role::Primary, a_wins);
            let winner = if a_wins { &mut a } else { &mut b };
            let more = checked(winner.tick(secs(1) + ANNOUNCE_AGAIN));
            assert_eq!(more.iter().filter(|x| **x == Action::Announce).count(), 1);
        }
    }

    #[test]
    fn a_both_primary_conflict_that_lasts_is_settled_again() {
        let p = params(secs(3), true, true);
        let mut m = Machine::new(ME, p, Time::ZERO);
        ok(m.establish(Time::ZERO, Role::Primary, 8));
        // A peer that stays primary with an older epoch, whatever it is told.
        let log = simulate(&mut m, Time::ZERO, secs(12), |_| World {
            peer: Some(view(Role::Primary, 8, true)),
            test_ips: true,
        });
        let fixes: Vec<Time> = log
            .iter()
            .filter(|(_, a)| matches!(a, Action::Record(Entry::Fixed { .. })))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(fixes.len(), 3, "{fixes:?}");
        let grace = p.both_backup_grace();
        assert!(
            fixes
                .windows(2)
                .all(|w| w[1] - w[0] >= grace && w[1] - w[0] <= grace + p.heartbeat),
            "{fixes:?}"
        );
        assert_eq!(m.role(), Role::Primary, "it keeps the role it won");
        assert_eq!(count(&log, |a| matches!(a, Action::Persist { .. })), 0);
    }

    #[test]
    fn both_backup_does_not_last_with_automatic_failover() {
        let p = params(secs(3), true, true);
        let mut pair = Pair::new(p);
        pair.a.role = Role::Backup;
        pair.a.holding = false;
        pair.a.epoch = 4;
        pair.b.epoch = 3;
        let mut promoted = None;
        for i in 1..200u64 {
            let now = ms(i * 100);
            let (x, y) = pair.exchange(now);
            assert!(persisted(&y).is_none(), "the loser waits for the winner");
            if persisted(&x).is_some() {
                promoted = Some(now);
                break;
            }
        }
        let at = promoted.expect("the newer epoch becomes primary");
        assert!(at >= ms(100) + p.both_backup_grace() && at <= ms(300) + p.both_backup_grace());
        assert_eq!(pair.a.role(), Role::Primary);
        pair.exchange(at + ms(100));
        assert!(pair.b.status().conflict.is_none());
    }

    #[test]
    fn both_backup_without_automatic_failover_waits_for_fix() {
        let p = params(secs(3), false, true);
        let mut pair = Pair::new(p);
        pair.a.role = Role::Backup;
        pair.a.holding = false;
        for i in 1..=600u64 {
            let (x, y) = pair.exchange(ms(i * 100));
            assert!(persisted(&x).is_none() && persisted(&y).is_none());
        }
        let s = pair.b.status();
        assert_eq!(s.conflict, Some(ConflictKind::BothBackup));
        assert!(conflict::message(s.conflict.unwrap()).starts_with(conflict::OPENING));
        let fix = ok(pair.b.fix(secs(61)));
        pair.deliver(secs(61), false, fix);
        pair.exchange(secs(62));
        // b has the newer epoch (it was established after a): it becomes primary.
        assert_eq!(pair.b.role(), Role::Primary);
        assert_eq!(pair.a.fix(secs(61)), Err(Refusal::NoConflict));
    }

    #[test]
    fn fix_on_the_loser_asks_the_winner_to_become_primary() {
        let p = params(secs(3), false, true);
        let mut pair = Pair::new(p);
        pair.a.role = Role::Backup;
        pair.a.holding = false;
        pair.exchange(secs(1));
        let a = ok(pair.a.fix(secs(2)));
        assert_eq!(
            a.iter().filter(|x| is_network(x)).collect::<Vec<_>>(),
            [&Action::AskPeer(PeerCommand::BecomePrimary)]
        );
        pair.deliver(secs(2), true, a);
        assert_eq!(
            (pair.a.role(), pair.b.role()),
            (Role::Backup, Role::Primary)
        );
    }

    #[test]
    fn a_taken_address_found_in_use_makes_this_appliance_backup() {
        let p = params(secs(1), true, false);
        let mut m = backup(p);
        let log = simulate(&mut m, Time::ZERO, secs(5), primary_gone(secs(2), true));
        assert_eq!(m.role(), Role::Primary);
        let took_epoch = m.epoch();
        let t = first(&log, |a| matches!(a, Action::Persist { .. })).unwrap();
        let a = checked(m.address_in_use(t + ms(20)));
        assert_eq!(
            persisted(&a),
            Some((Role::Backup, took_epoch + 1, Cause::AddressInUse))
        );
        assert!(a.contains(&Action::WithholdSharedIps));
        assert!(!m.status().holding);
        // No second announcement for an address it does not hold.
        let a = checked(m.tick(t + ANNOUNCE_AGAIN));
        assert!(!a.contains(&Action::Announce));
    }

    #[test]
    fn a_claimed_shared_ip_is_defended_at_most_once_per_interval() {
        let p = params(secs(3), true, true);
        let mut m = primary(p);
        simulate(&mut m, Time::ZERO, secs(5), |_| World {
            peer: Some(view(Role::Backup, 2, false)),
            test_ips: true,
        });
        let a = checked(m.address_claimed(secs(5)));
        assert_eq!(a, [Action::Record(Entry::AddressClaimed), Action::Announce]);
        for i in 1..100u64 {
            let a = checked(m.address_claimed(secs(5) + ms(i * 99)));
            assert!(a.is_empty(), "{a:?}");
        }
        let a = checked(m.address_claimed(secs(5) + DEFEND_INTERVAL));
        assert_eq!(a, [Action::Record(Entry::AddressClaimed), Action::Announce]);
        assert_eq!(m.role(), Role::Primary);
        // A backup holds nothing to defend.
        let mut b = backup(p);
        assert!(b.address_claimed(ms(10)).is_empty());
        let mut none = Machine::new(ME, p, Time::ZERO);
        assert_eq!(
            none.peer_command(Time::ZERO, PeerCommand::BecomePrimary, 3),
            Err(Refusal::NoRelationship)
        );
    }

    #[test]
    fn breaking_leaves_the_addresses_as_they_are() {
        let p = params(secs(3), true, true);
        let mut m = primary(p);
        let a = ok(m.break_relationship(secs(1)));
        assert_eq!(persisted(&a), Some((Role::None, 2, Cause::Broken)));
        assert!(a.contains(&Action::ReleaseSharedIps { enabled: true }));
        assert_eq!(m.break_relationship(secs(2)), Err(Refusal::NoRelationship));
        let mut m = backup(p);
        let a = ok(m.break_relationship(secs(1)));
        assert!(a.contains(&Action::ReleaseSharedIps { enabled: false }));
        // A peer that answers with no role broke it on its side.
        let mut m = backup(p);
        let a = checked(m.peer_answered(secs(1), view(Role::None, 9, false)));
        assert_eq!(persisted(&a), Some((Role::None, 10, Cause::BrokenByPeer)));
        // Nothing happens without a relationship.
        let log = simulate(&mut m, secs(1), secs(30), |_| World {
            peer: None,
            test_ips: false,
        });
        assert!(log.is_empty(), "{log:?}");
    }

    #[test]
    fn a_late_test_ip_result_is_not_evidence_for_a_later_takeover() {
        let p = params(secs(2), true, true);
        let mut m = backup(p);
        let alive = view(Role::Primary, 5, true);
        checked(m.peer_answered(ms(100), alive.clone()));
        checked(m.peer_missed(ms(600)));
        let mut a = Vec::new();
        for i in 7..=16u64 {
            a.extend(checked(m.tick(ms(i * 100))));
        }
        assert!(a.contains(&Action::PingTestIps { until: ms(2100) }));
        // The primary answers before the round ends; the round's result comes late.
        checked(m.peer_answered(ms(1700), alive));
        let late = checked(m.test_ips_result(ms(1750), true));
        assert!(late.is_empty(), "ignored: {late:?}");
        // Silent again: a fresh round is needed, and nothing happens without its result.
        let mut a = checked(m.peer_missed(ms(2200)));
        for i in 23..=40u64 {
            a.extend(checked(m.tick(ms(i * 100))));
        }
        assert!(
            a.contains(&Action::PingTestIps { until: ms(3700) }),
            "{a:?}"
        );
        assert!(
            persisted(&a).is_none(),
            "no takeover on the old result: {a:?}"
        );
    }

    #[test]
    fn persist_comes_first_even_when_the_first_miss_is_the_last() {
        // The shortest timeout: the first failed heartbeat can come at the timeout.
        let p = params(ms(200), true, false);
        let mut m = backup(p);
        checked(m.peer_answered(Time::ZERO, view(Role::Primary, 5, true)));
        let a = checked(m.peer_missed(ms(200)));
        assert_eq!(persisted(&a).map(|p| p.0), Some(Role::Primary));
        let sent: Vec<Alert> = a
            .iter()
            .filter_map(|x| match x {
                Action::Alert(al) => Some(*al),
                _ => None,
            })
            .collect();
        let kinds: Vec<AlertKind> = sent.iter().map(|al| al.kind).collect();
        assert_eq!(kinds, [AlertKind::FirstMissed, AlertKind::Takeover]);
        assert_eq!(sent[1].silent_for, ms(200), "the silence that led to it");
    }

    #[test]
    fn a_new_epoch_is_above_both_own_and_the_peers() {
        let p = params(secs(1), true, false);
        let mut m = backup(p);
        assert_eq!(m.epoch(), 6);
        checked(m.peer_answered(ms(100), view(Role::Primary, 41, true)));
        let log = simulate(&mut m, ms(100), secs(5), |_| World {
            peer: None,
            test_ips: true,
        });
        let batch: Vec<Action> = log.into_iter().map(|(_, a)| a).collect();
        assert_eq!(persisted(&batch).map(|p| p.1), Some(42));
    }
}
