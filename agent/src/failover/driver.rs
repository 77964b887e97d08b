//! The driver: the one task that owns the role machine ([`super::role::Machine`]) and
//! carries out what it asks for.
//!
//! It takes events from a [`mpsc`] channel (the monitor's heartbeats, test-IP rounds,
//! the peer's replies to role-change requests) and commands from the API and the peer
//! channel, ticks the machine at its deadline, and carries out each batch of actions in
//! order: the role and epoch are written (atomically, fsynced) before any network action
//! of the same batch; a shared IP is ARP-probed before it is held (through the address
//! overlay, with [`Probe::Skip`] since the probe is done), announced in a burst, and the
//! machine asks for the second burst itself. Heartbeats run on their own task
//! ([`monitor`]), so a slow exchange never holds up the machine; time is a monotonic clock
//! from the driver's start.
//!
//! Current limits: the history is kept in memory (the last [`HISTORY_LEN`] entries); a
//! planned swap with `data_sync_first` is run by the sync service (`crate::sync`), which
//! calls this driver's role change once the final sync is done; claims on a
//! held shared IP by other hosts after it is taken are not watched (the conflict rules
//! and the probe before every take cover a peer).

use super::link::{LinkError, PeerLink};
use super::role::{
    self, Action, Cause, Entry, Machine, Params, PeerCommand, PeerReply, PeerView, Refusal, Role,
};
use super::service::{
    AlertMessage, Command, FailoverError, HistoryItem, Notifier, PeerReport, Report, RoleOutcome,
    Snapshot,
};
use super::wire::{self, CommandReply, Endpoint, PeerState};
use crate::config::{Config, ConfigStore};
use crate::model::netconfig::{IpCidr, NicName};
use crate::net::overlay::Probe;
use crate::net::reconcile::ProbeOutcome;
use crate::net::service::NetworkService;
use crate::store::{Document, Schema};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// The file, in the config directory, that keeps the role, epoch and peer.
pub const STATE_FILE: &str = "failover-state.toml";
/// History entries kept.
pub const HISTORY_LEN: usize = 500;
/// How long a peer that answers with no role is not taken to have broken the
/// relationship, after establishing it (the two sides establish one after the other).
pub const ESTABLISH_GRACE: Duration = Duration::from_secs(10);
/// How long a role-change request to the peer may take.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time a heartbeat may take before it counts as missed (a fresh TLS
/// connection must fit in it).
pub const MIN_HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(150);

/// A backup starts probing the shared IPs this long before its timeout runs out (a
/// takeover probe takes about 0.1 s).
pub const PROBE_LEAD: Duration = Duration::from_millis(150);
/// A probe started with a test-IP round stands for the takeover's probe this long.
pub const PRE_PROBE_FRESH: Duration = Duration::from_millis(1500);
/// The longest wait for withheld shared IPs to leave the NICs.
pub const WITHHOLD_WAIT: Duration = Duration::from_secs(2);

/// What is kept across restarts: role, epoch, the peer, the cause of the last change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persisted {
    #[serde(default)]
    pub role: Role,
    #[serde(default)]
    pub epoch: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
}

#[derive(Debug, thiserror::Error)]
pub enum InvalidState {
    #[error("a role other than none needs a peer")]
    NoPeer,
}

impl Schema for Persisted {
    const VERSION: u32 = 1;
    type Invalid = InvalidState;
    fn validate(&self) -> Result<(), InvalidState> {
        if self.role != Role::None && self.peer.is_none() {
            return Err(InvalidState::NoPeer);
        }
        Ok(())
    }
}

/// What the driver learns from its helpers.
#[derive(Debug)]
pub(crate) enum Event {
    Answered(PeerState),
    Missed(String),
    TestIps(bool),
    PeerReplied(PeerCommand, PeerReply),
}

/// The parts the driver and the service share.
pub(crate) struct Ctx {
    pub id: String,
    pub version: String,
    pub config: Arc<ConfigStore>,
    pub network: NetworkService,
    pub notifier: Arc<dyn Notifier>,
    pub state: Document<Persisted>,
    pub history: Mutex<VecDeque<HistoryItem>>,
}

/// The shared IPs as (NIC, address with prefix), from the configuration: each selected
/// address where it is configured; one no longer configured is left out (a rollback took
/// it away: status warns, and failover treats it as absent).
pub fn shared_targets(config: &Config) -> Vec<(NicName, IpCidr)> {
    config
        .failover
        .shared_ips
        .iter()
        .filter_map(|ip| {
            config.network.interfaces.iter().find_map(|i| {
                i.addresses
                    .iter()
                    .find(|a| a.address.ip() == *ip)
                    .map(|a| (i.name.clone(), a.address))
            })
        })
        .collect()
}

fn params_of(config: &Config) -> Params {
    Params::new(&config.failover.backup, !shared_targets(config).is_empty())
}

fn refusal(r: Refusal) -> FailoverError {
    match r {
        Refusal::NoRelationship => FailoverError::NoRelationship,
        Refusal::RelationshipExists => FailoverError::RelationshipExists,
        Refusal::WrongRole { role, needs } => FailoverError::WrongRole {
            role: role_name(role).into(),
            needs: role_name(needs).into(),
        },
        Refusal::PeerUnreachable => FailoverError::PeerUnreachable(
            ": use force to change this appliance's role anyway".into(),
        ),
        Refusal::Busy => FailoverError::Busy,
        Refusal::NoConflict => FailoverError::NoConflict,
    }
}

pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::None => "none",
        Role::Primary => "primary",
        Role::Backup => "backup",
    }
}

/// A role change the API waits on: answered when the peer's reply comes.
struct Waiting {
    /// The role this appliance must end in; `None`: whatever the evidence decided (a fix).
    wants: Option<Role>,
    answer: oneshot::Sender<Result<RoleOutcome, FailoverError>>,
}

pub(crate) struct Driver {
    ctx: Arc<Ctx>,
    machine: Machine,
    origin: Instant,
    peer: Option<Endpoint>,
    established_at: Option<Instant>,
    monitor: Option<tokio::task::JoinHandle<()>>,
    heartbeat: watch::Sender<Duration>,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    commands: mpsc::Receiver<Command>,
    snapshot: watch::Sender<Snapshot>,
    report: watch::Sender<Report>,
    /// The shared IPs the overlay speaks for now.
    targets: Vec<(NicName, IpCidr)>,
    persist_failed: Option<String>,
    waiting: Option<Waiting>,
    /// A probe of the shared IPs started with the last test-IP round, and when.
    pre_probe: Option<(Instant, tokio::task::JoinHandle<bool>)>,
    last_peer: Option<PeerState>,
    last_answer_at: Option<Instant>,
}

impl Driver {
    pub(crate) async fn start(
        ctx: Arc<Ctx>,
        commands: mpsc::Receiver<Command>,
        snapshot: watch::Sender<Snapshot>,
        report: watch::Sender<Report>,
    ) -> Driver {
        let config = ctx.config.current();
        let params = params_of(&config);
        let saved = ctx.state.current();
        let targets = shared_targets(&config);
        let present = !targets.is_empty() && {
            let mut all = true;
            for (_, cidr) in &targets {
                all &= ctx.network.has_address(cidr.ip()).await;
            }
            all
        };
        // A primary whose shared IPs are still on the NICs (the agent restarted, the
        // box did not) keeps them without a flap, unless its peer took over meanwhile:
        // one quick look at the peer first.
        let present = present
            && saved.role == Role::Primary
            && !peer_took_over(&ctx, saved.peer.as_ref(), saved.epoch).await;
        let (machine, actions) = Machine::restore(
            &ctx.id,
            params,
            saved.role,
            saved.epoch,
            present,
            Duration::ZERO,
        );
        let (events_tx, events) = mpsc::channel(64);
        let mut d = Driver {
            ctx,
            machine,
            origin: Instant::now(),
            peer: saved.peer.clone(),
            established_at: None,
            monitor: None,
            heartbeat: watch::Sender::new(params.heartbeat),
            events_tx,
            events,
            commands,
            snapshot,
            report,
            targets,
            persist_failed: None,
            waiting: None,
            pre_probe: None,
            last_peer: None,
            last_answer_at: None,
        };
        if saved.role != Role::None {
            tracing::info!(
                role = role_name(saved.role),
                epoch = saved.epoch,
                pending = d.machine.status().pending,
                "failover: restored the role"
            );
            d.start_monitor();
        }
        d.carry_out(actions).await;
        d.publish();
        d
    }

    fn now(&self) -> role::Time {
        self.origin.elapsed()
    }

    pub(crate) async fn run(mut self) {
        let mut config = self.ctx.config.subscribe();
        config.borrow_and_update();
        loop {
            let deadline = self.machine.deadline().map(|d| self.origin + d);
            tokio::select! {
                Some(cmd) = self.commands.recv() => self.command(cmd).await,
                Some(ev) = self.events.recv() => self.event(ev).await,
                changed = config.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    config.borrow_and_update();
                    self.settings_changed().await;
                }
                _ = sleep_until(deadline) => {
                    let actions = self.machine.tick(self.now());
                    self.carry_out(actions).await;
                }
            }
            self.publish();
        }
    }

    async fn event(&mut self, ev: Event) {
        let now = self.now();
        let actions = match ev {
            Event::Answered(state) => {
                self.last_answer_at = Some(Instant::now());
                let fresh = self
                    .established_at
                    .is_some_and(|t| t.elapsed() < ESTABLISH_GRACE);
                self.last_peer = Some(state.clone());
                if state.role == Role::None && fresh {
                    // The peer has not recorded its side of a new relationship yet.
                    return;
                }
                self.machine.peer_answered(
                    now,
                    PeerView {
                        role: state.role,
                        epoch: state.epoch,
                        pending: state.pending,
                        holds_shared_ip: state.holds_shared_ip,
                        id: state.id,
                    },
                )
            }
            Event::Missed(why) => {
                tracing::debug!("failover: heartbeat missed: {why}");
                let actions = self.machine.peer_missed(now);
                self.carry_out(actions).await;
                // A takeover is near: have the probe of the shared IPs done by then.
                let st = self.machine.status();
                let timeout = self.ctx.config.current().failover.backup.timeout();
                if st.role == Role::Backup
                    && st.countdown.is_some()
                    && st.silent_for + PROBE_LEAD >= timeout
                    && self
                        .pre_probe
                        .as_ref()
                        .is_none_or(|(t, _)| t.elapsed() >= PRE_PROBE_FRESH)
                {
                    self.start_pre_probe();
                }
                return;
            }
            Event::TestIps(answered) => self.machine.test_ips_result(now, answered),
            Event::PeerReplied(command, reply) => {
                let actions = self.machine.peer_replied(now, command, reply);
                self.carry_out(actions).await;
                if let Some(w) = self.waiting.take() {
                    let result = if w.wants.is_none_or(|r| r == self.machine.role()) {
                        Ok(RoleOutcome::Changed)
                    } else {
                        Err(FailoverError::PeerUnreachable(
                            ": the peer did not change its role; nothing changed here".into(),
                        ))
                    };
                    let _ = w.answer.send(result);
                }
                return;
            }
        };
        self.carry_out(actions).await;
    }

    async fn command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::Establish {
                role,
                peer,
                peer_epoch,
                answer,
            } => {
                if self.machine.role() != Role::None {
                    let _ = answer.send(Err(FailoverError::RelationshipExists));
                    return;
                }
                self.peer = Some(peer);
                match self.machine.establish(now, role, peer_epoch) {
                    Ok(actions) => {
                        self.established_at = Some(Instant::now());
                        self.carry_out(actions).await;
                        self.start_monitor();
                        let _ = answer.send(match &self.persist_failed {
                            Some(e) => Err(FailoverError::Persist(e.clone())),
                            None => Ok(()),
                        });
                    }
                    Err(r) => {
                        let _ = answer.send(Err(refusal(r)));
                    }
                }
            }
            Command::Break { tell_peer, answer } => {
                let peer = self.peer.clone();
                match self.machine.break_relationship(now) {
                    Ok(actions) => {
                        self.carry_out(actions).await;
                        if let (true, Some(peer)) = (tell_peer, peer) {
                            self.tell_peer_broken(peer);
                        }
                        let _ = answer.send(Ok(()));
                    }
                    Err(r) => {
                        let _ = answer.send(Err(refusal(r)));
                    }
                }
            }
            Command::BecomePrimary(req, answer) => {
                let reachable = self.machine.status().peer_reachable;
                let r = self.machine.become_primary(now, req.force, reachable);
                self.role_change(r, Some(Role::Primary), answer).await;
            }
            Command::BecomeBackup(req, answer) => {
                let reachable = self.machine.status().peer_reachable;
                let r = self.machine.become_backup(now, req.force, reachable);
                self.role_change(r, Some(Role::Backup), answer).await;
            }
            Command::Fix(answer) => {
                let r = self.machine.fix(now);
                self.role_change(r, None, answer).await;
            }
            Command::Peer(req, answer) => {
                match self.machine.peer_command(now, req.command, req.epoch) {
                    Ok(actions) => {
                        self.carry_out(actions).await;
                        let _ = answer.send(Ok(CommandReply {
                            epoch: self.machine.epoch(),
                            role: self.machine.role(),
                        }));
                    }
                    Err(r) => {
                        let _ = answer.send(Err(refusal(r)));
                    }
                }
            }
        }
    }

    /// Carries out a manual role change; when it asks the peer first, the answer waits
    /// for the peer's reply.
    async fn role_change(
        &mut self,
        result: Result<Vec<Action>, Refusal>,
        wants: Option<Role>,
        answer: oneshot::Sender<Result<RoleOutcome, FailoverError>>,
    ) {
        match result {
            Err(r) => {
                let _ = answer.send(Err(refusal(r)));
            }
            Ok(actions) => {
                let asks = actions.iter().any(|a| matches!(a, Action::AskPeer(_)));
                self.carry_out(actions).await;
                if asks {
                    self.waiting = Some(Waiting { wants, answer });
                } else {
                    let _ = answer.send(match &self.persist_failed {
                        Some(e) => Err(FailoverError::Persist(e.clone())),
                        None => Ok(RoleOutcome::Changed),
                    });
                }
            }
        }
    }

    async fn settings_changed(&mut self) {
        let config = self.ctx.config.current();
        let params = params_of(&config);
        self.machine.set_params(params);
        self.heartbeat.send_replace(params.heartbeat);
        let targets = shared_targets(&config);
        if targets != self.targets {
            let overlay = self.ctx.network.overlay();
            for (nic, cidr) in self.targets.iter().filter(|t| !targets.contains(t)) {
                overlay.release(nic.clone(), *cidr);
            }
            self.targets = targets;
            if self.machine.role() != Role::None {
                let st = self.machine.status();
                for (nic, cidr) in &self.targets {
                    if st.holding && !st.pending {
                        overlay.hold(nic.clone(), *cidr, Probe::First);
                    } else {
                        overlay.withhold(nic.clone(), *cidr);
                    }
                }
            }
        }
        if self.machine.role() != Role::None {
            // The key may have changed: the link proves with the one in force.
            self.start_monitor();
        }
    }

    fn key(&self) -> Option<Vec<u8>> {
        self.ctx
            .config
            .current()
            .failover
            .key
            .map(|k| k.as_bytes().to_vec())
    }

    fn start_monitor(&mut self) {
        if let Some(m) = self.monitor.take() {
            m.abort();
        }
        let (Some(peer), Some(key)) = (self.peer.clone(), self.key()) else {
            return;
        };
        let tx = self.events_tx.clone();
        let heartbeat = self.heartbeat.subscribe();
        self.monitor = Some(tokio::spawn(monitor(
            PeerLink::new(peer, &key),
            heartbeat,
            tx,
        )));
    }

    fn stop_monitor(&mut self) {
        if let Some(m) = self.monitor.take() {
            m.abort();
        }
        self.last_peer = None;
        self.last_answer_at = None;
    }

    fn tell_peer_broken(&self, peer: Endpoint) {
        let Some(key) = self.key() else { return };
        tokio::spawn(async move {
            let mut link = PeerLink::new(peer, &key);
            let r: Result<PeerState, _> = link
                .call("DELETE", wire::RELATIONSHIP, None, ASK_TIMEOUT)
                .await;
            if let Err(e) = r {
                tracing::info!("failover: could not tell the peer the relationship is broken ({e}); it will see it when it next reaches this appliance");
            }
        });
    }

    /// Carries out a batch in order. Follow-ups the machine gives back while it runs (an
    /// address found in use) replace the rest of the batch.
    async fn carry_out(&mut self, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Persist { role, epoch, cause } => {
                    let peer = if role == Role::None {
                        None
                    } else {
                        self.peer.clone()
                    };
                    let state = Persisted {
                        role,
                        epoch,
                        peer,
                        cause: Some(cause),
                    };
                    match self.persist(state).await {
                        Ok(()) => {
                            self.persist_failed = None;
                            tracing::info!(role = role_name(role), epoch, cause = ?cause, "failover: role changed");
                        }
                        Err(e) => {
                            // Nothing of the batch reaches the network unrecorded.
                            tracing::error!("failover: cannot record role {} epoch {epoch}: {e}; the network is left as it is", role_name(role));
                            self.persist_failed = Some(e);
                            return;
                        }
                    }
                    if role == Role::None {
                        self.stop_monitor();
                        self.peer = None;
                        self.established_at = None;
                    }
                }
                Action::HoldSharedIps { probe } => {
                    if probe && self.in_use().await {
                        let more = self.machine.address_in_use(self.now());
                        queue = more.into();
                        continue;
                    }
                    let overlay = self.ctx.network.overlay();
                    for (nic, cidr) in &self.targets {
                        overlay.hold(nic.clone(), *cidr, Probe::Skip);
                    }
                }
                Action::WithholdSharedIps => {
                    let overlay = self.ctx.network.overlay();
                    for (nic, cidr) in &self.targets {
                        overlay.withhold(nic.clone(), *cidr);
                    }
                    // The rest of the batch (an answer to the peer that takes over next)
                    // waits until the addresses are off the NICs: the peer's probe must
                    // not find them here.
                    self.wait_withheld().await;
                }
                Action::ReleaseSharedIps { enabled } => self.release(enabled).await,
                Action::Announce => {
                    for (nic, cidr) in self.targets.clone() {
                        let network = self.ctx.network.clone();
                        tokio::spawn(async move {
                            if let Err(e) = network.announce(&nic, cidr.ip()).await {
                                tracing::warn!(nic = %nic, address = %cidr.ip(), "failover: cannot announce the shared IP: {e}");
                            }
                        });
                    }
                }
                Action::PingTestIps { until } => {
                    self.ping_test_ips(until);
                    if self
                        .pre_probe
                        .as_ref()
                        .is_none_or(|(t, _)| t.elapsed() >= PRE_PROBE_FRESH)
                    {
                        self.start_pre_probe();
                    }
                }
                Action::AskPeer(command) => self.ask_peer(command),
                Action::Alert(a) => self.ctx.notifier.notify(AlertMessage {
                    kind: a.kind,
                    silent_for: a.silent_for,
                    remaining: a.remaining,
                    appliance: crate::system::host_name(),
                    peer: self
                        .peer
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                }),
                Action::Record(entry) => self.record(entry),
            }
        }
    }

    /// Waits (at most [`WITHHOLD_WAIT`]) until no shared IP is on a NIC.
    async fn wait_withheld(&self) {
        let deadline = Instant::now() + WITHHOLD_WAIT;
        loop {
            let mut any = false;
            for (_, cidr) in &self.targets {
                any |= self.ctx.network.has_address(cidr.ip()).await;
            }
            if !any {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!("failover: the shared IPs are still on the NICs {WITHHOLD_WAIT:?} after withholding them");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn persist(&self, state: Persisted) -> Result<(), String> {
        let ctx = self.ctx.clone();
        crate::store::blocking(move || ctx.state.update(|s| *s = state))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Whether another host answers for a shared IP: the probe that ran alongside the
    /// last test-IP round when it is recent and found them free (waiting for it if it
    /// still runs), else one now.
    async fn in_use(&mut self) -> bool {
        if let Some((started, probe)) = self.pre_probe.take() {
            if started.elapsed() < PRE_PROBE_FRESH {
                // Free then counts; in use then is checked again now (the holder may have
                // gone since).
                if let Ok(false) = probe.await {
                    return false;
                }
            } else {
                probe.abort();
            }
        }
        probe_all(self.ctx.network.clone(), self.targets.clone()).await
    }

    /// Starts probing the shared IPs in the background (during the last part of the
    /// timeout, with the test IPs), so that a takeover at the timeout need not wait for it.
    fn start_pre_probe(&mut self) {
        if self.machine.status().holding || self.targets.is_empty() {
            return;
        }
        if let Some((_, old)) = self.pre_probe.take() {
            old.abort();
        }
        let probe = tokio::spawn(probe_all(self.ctx.network.clone(), self.targets.clone()));
        self.pre_probe = Some((Instant::now(), probe));
    }

    /// Leaves the shared IPs as they are: their enabled state goes into the
    /// configuration, and the overlay lets go of them.
    async fn release(&mut self, enabled: bool) {
        let ips: Vec<IpAddr> = self.targets.iter().map(|(_, c)| c.ip()).collect();
        let config = self.ctx.config.clone();
        let written = crate::store::blocking(move || {
            config.update(|c| {
                for i in c.network.interfaces.iter_mut() {
                    for a in i.addresses.iter_mut() {
                        if ips.contains(&a.address.ip()) {
                            a.enabled = enabled;
                        }
                    }
                }
            })
        })
        .await;
        if let Err(e) = written {
            tracing::error!(
                "failover: cannot record the shared IPs' state in the configuration: {e}"
            );
        }
        let overlay = self.ctx.network.overlay();
        for (nic, cidr) in &self.targets {
            overlay.release(nic.clone(), *cidr);
        }
    }

    fn ping_test_ips(&self, until: role::Time) {
        let ips = self.ctx.config.current().failover.backup.test_ips;
        let tx = self.events_tx.clone();
        let deadline = self.origin + until;
        tokio::spawn(async move {
            let answered = super::testips::any_answers(ips.as_slice(), deadline).await;
            let _ = tx.send(Event::TestIps(answered)).await;
        });
    }

    fn ask_peer(&self, command: PeerCommand) {
        let tx = self.events_tx.clone();
        let (Some(peer), Some(key)) = (self.peer.clone(), self.key()) else {
            let _ = tx.try_send(Event::PeerReplied(command, PeerReply::NoAnswer));
            return;
        };
        let body = serde_json::to_vec(&wire::CommandRequest {
            command,
            epoch: self.machine.epoch(),
        })
        .unwrap_or_default();
        tokio::spawn(async move {
            let mut link = PeerLink::new(peer, &key);
            let reply = match link
                .call::<CommandReply>("POST", wire::COMMAND, Some(body), ASK_TIMEOUT)
                .await
            {
                Ok(r) => PeerReply::Done { epoch: r.epoch },
                Err(LinkError::Refused { .. } | LinkError::KeyMismatch) => PeerReply::Refused,
                Err(_) => PeerReply::NoAnswer,
            };
            let _ = tx.send(Event::PeerReplied(command, reply)).await;
        });
    }

    fn record(&self, entry: Entry) {
        match &entry {
            Entry::Stalled { .. } | Entry::TestIps { .. } => {
                tracing::debug!(?entry, "failover history")
            }
            _ => tracing::info!(?entry, "failover history"),
        }
        let mut h = self.ctx.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() >= HISTORY_LEN {
            h.pop_front();
        }
        h.push_back(HistoryItem {
            unix_time: crate::model::unix_now(),
            entry,
        });
    }

    fn publish(&self) {
        let st = self.machine.status();
        let config = self.ctx.config.current();
        let timeout = config.failover.backup.timeout();
        let holds = st.holding && !st.pending;
        let problem = self.problem(&st, timeout);
        let enabled_shared_ips = if holds {
            self.targets.iter().map(|(_, c)| c.ip()).collect()
        } else {
            Vec::new()
        };
        self.snapshot.send_if_modified(|s| {
            let next = Snapshot {
                role: st.role,
                epoch: st.epoch,
                pending: st.pending,
                enabled_shared_ips: enabled_shared_ips.clone(),
                conflict: st.conflict,
                problem: problem.clone(),
                last_sync: s.last_sync.clone(),
                holding: holds,
            };
            let changed = *s != next;
            *s = next;
            changed
        });
        let peer = self.peer.as_ref().map(|endpoint| PeerReport {
            endpoint: endpoint.clone(),
            reachable: st.peer_reachable,
            state: self.last_peer.clone(),
            last_answer_seconds_ago: self.last_answer_at.map(|t| t.elapsed().as_secs_f64()),
        });
        self.report.send_replace(Report {
            pending: st.pending,
            holding: holds,
            peer,
            silent_seconds: st.silent_for.as_secs_f64(),
            countdown_seconds: st.countdown.map(|d| d.as_secs_f64()),
            conflict: st.conflict,
            cut_off: st.cut_off,
            isolated: st.isolated,
            untested: st.untested,
            problem,
        });
    }

    /// Why failover is not in the state its role asks for.
    fn problem(&self, st: &role::Status, timeout: Duration) -> Option<String> {
        if let Some(e) = &self.persist_failed {
            return Some(format!("cannot record the failover role: {e}"));
        }
        if let Some(kind) = st.conflict {
            return Some(super::conflict::message(kind));
        }
        match st.role {
            Role::None => None,
            Role::Primary if st.pending => Some(
                "this primary is waiting to see its peer before it takes its shared IPs".into(),
            ),
            Role::Primary if !st.holding => Some(
                "this primary has given up its shared IPs: it can reach neither its peer nor any test IP"
                    .into(),
            ),
            Role::Primary => None,
            Role::Backup if st.cut_off => Some(
                "this backup can reach none of its test IPs: it would not take over".into(),
            ),
            Role::Backup if !st.peer_reachable && st.silent_for >= timeout => Some(format!(
                "the primary has not answered for {:.1} s",
                st.silent_for.as_secs_f64()
            )),
            Role::Backup => None,
        }
    }
}

/// Whether the peer holds a newer role than `epoch` as primary (or holds the shared IPs),
/// asked once with a short timeout; `false` when it cannot be asked.
async fn peer_took_over(ctx: &Ctx, peer: Option<&Endpoint>, epoch: u64) -> bool {
    let (Some(peer), Some(key)) = (peer, ctx.config.current().failover.key) else {
        return false;
    };
    let mut link = PeerLink::new(peer.clone(), key.as_bytes());
    match link
        .call::<PeerState>("GET", wire::STATE, None, RESTORE_CHECK)
        .await
    {
        Ok(s) => s.role == Role::Primary && (s.epoch > epoch || s.holds_shared_ip),
        Err(_) => false,
    }
}

/// How long a restarted primary asks its peer before it keeps its shared IPs.
pub const RESTORE_CHECK: Duration = Duration::from_secs(1);

/// The claims to state before the network's first pass, from the persisted role: a
/// backup withholds its shared IPs at once (the configuration may enable them). A primary
/// is decided by the driver's start.
pub fn initial_claims(
    config_dir: &Path,
    config: &Config,
    overlay: &crate::net::overlay::OverlayHandle,
) {
    let saved = Document::<Persisted>::load(config_dir.join(STATE_FILE)).current();
    if saved.role == Role::Backup {
        for (nic, cidr) in shared_targets(config) {
            overlay.withhold(nic, cidr);
        }
    }
}

/// Probes every shared IP (ARP for IPv4, neighbour solicitations for IPv6, which are then
/// added without the kernel's DAD): `true` when another host answers for one.
async fn probe_all(network: NetworkService, targets: Vec<(NicName, IpCidr)>) -> bool {
    let probes = targets.iter().map(|(nic, cidr)| {
        let network = network.clone();
        async move {
            let ip = cidr.ip();
            match network.probe(nic, ip).await {
                Ok(ProbeOutcome::InUse { mac }) => {
                    tracing::warn!(nic = %nic, address = %ip, mac = %crate::net::arp::format_mac(&mac), "failover: the shared IP is in use by another host: not taking it");
                    true
                }
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(nic = %nic, address = %ip, "failover: cannot probe the shared IP ({e}); taking it");
                    false
                }
            }
        }
    });
    futures_util::future::join_all(probes)
        .await
        .into_iter()
        .any(|in_use| in_use)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Heartbeats: asks the peer for its state every heartbeat interval and reports each
/// outcome. The interval is measured from the start of one request to the next, so a
/// slow answer does not stretch the rhythm.
async fn monitor(
    mut link: PeerLink,
    heartbeat: watch::Receiver<Duration>,
    tx: mpsc::Sender<Event>,
) {
    loop {
        let interval = *heartbeat.borrow();
        let started = Instant::now();
        let timeout = interval.max(MIN_HEARTBEAT_TIMEOUT);
        let event = match link
            .call::<PeerState>("GET", wire::STATE, None, timeout)
            .await
        {
            Ok(state) => Event::Answered(state),
            Err(e) => Event::Missed(e.to_string()),
        };
        if tx.send(event).await.is_err() {
            return;
        }
        tokio::time::sleep_until(started + interval).await;
    }
}

/// The version a peer must match: the software version and build, or in debug mode the
/// content of `<data>/debug/version` when it exists (the tests' version mismatch).
pub fn version(data_dir: &Path, debug: bool) -> String {
    let real = crate::system::version_string();
    if debug {
        if let Ok(Some(v)) = crate::store::read_if_present(&data_dir.join("debug/version")) {
            let v = v.trim();
            if !v.is_empty() {
                return v.chars().take(64).collect();
            }
        }
    }
    real
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("x")).unwrap()
    }

    #[test]
    fn shared_targets_are_the_selected_addresses_where_they_are_configured() {
        let c = config(
            "version = 2\n[[network.interfaces]]\nname = \"eth0\"\n\
             [[network.interfaces.addresses]]\naddress = \"192.0.2.1/24\"\n\
             [[network.interfaces]]\nname = \"eth1\"\n\
             [[network.interfaces.addresses]]\naddress = \"198.51.100.100/25\"\nenabled = false\n\
             [failover]\nshared_ips = [\"198.51.100.100\"]\n",
        );
        let t = shared_targets(&c);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].0.as_str(), "eth1");
        assert_eq!(t[0].1.to_string(), "198.51.100.100/25");
        assert!(params_of(&c).has_shared_ip);

        // A rollback took the address away: failover treats it as absent.
        let mut gone = c.clone();
        gone.network.interfaces.truncate(1);
        assert!(shared_targets(&gone).is_empty());
        assert!(!params_of(&gone).has_shared_ip);
    }

    #[test]
    fn a_persisted_role_needs_a_peer_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let doc = Document::<Persisted>::load(dir.path().join(STATE_FILE));
        assert_eq!(doc.current(), Persisted::default());
        assert!(doc
            .update(|s| {
                s.role = Role::Backup;
                s.epoch = 3;
            })
            .is_err());
        let peer = Endpoint {
            host: "192.0.2.2".into(),
            port: 443,
        };
        doc.update(|s| {
            s.role = Role::Primary;
            s.epoch = 4;
            s.peer = Some(peer.clone());
            s.cause = Some(Cause::AutomaticFailover);
        })
        .unwrap();
        let again = Document::<Persisted>::load(dir.path().join(STATE_FILE)).current();
        assert_eq!(
            (again.role, again.epoch, again.peer, again.cause),
            (Role::Primary, 4, Some(peer), Some(Cause::AutomaticFailover))
        );
    }

    #[test]
    fn the_version_override_works_in_debug_mode_only() {
        let dir = tempfile::tempdir().unwrap();
        let real = crate::system::version_string();
        assert_eq!(version(dir.path(), true), real);
        std::fs::create_dir_all(dir.path().join("debug")).unwrap();
        std::fs::write(dir.path().join("debug/version"), "9.9.9+other\n").unwrap();
        assert_eq!(version(dir.path(), false), real);
        assert_eq!(version(dir.path(), true), "9.9.9+other");
    }

    #[test]
    fn refusals_keep_their_stable_codes() {
        let code = |r| refusal(r).status_and_code();
        assert_eq!(code(Refusal::NoRelationship), (409, "no_relationship"));
        assert_eq!(
            code(Refusal::RelationshipExists),
            (409, "relationship_exists")
        );
        assert_eq!(code(Refusal::PeerUnreachable), (409, "peer_unreachable"));
        assert_eq!(
            code(Refusal::WrongRole {
                role: Role::Backup,
                needs: Role::Primary
            }),
            (409, "wrong_role")
        );
        assert_eq!(code(Refusal::NoConflict), (409, "no_conflict"));
        assert_eq!(code(Refusal::Busy), (409, "busy"));
    }
}
