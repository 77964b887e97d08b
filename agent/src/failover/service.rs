//! The failover service as the rest of the agent sees it: a cheap handle
//! ([`FailoverService`]) over the driver task that runs the role machine.
//!
//! Readers (status, `/check_health`, the vendor's `check_health`) take a [`Snapshot`],
//! published by the driver after every batch of actions and never blocking. Commands
//! (establish, break, become primary or backup, fix) go to the driver over a channel and
//! come back as a result. Alerts leave through a [`Notifier`] (the site's e-mail).

use super::conflict::Kind as ConflictKind;
use super::driver::{self, Ctx, Driver, Persisted};
use super::link::{LinkError, PeerLink};
use super::role::{AlertKind, Entry, Role};
use super::wire::{self, CommandReply, CommandRequest, Endpoint, PeerState, RelationshipRequest};
use crate::config::ConfigStore;
use crate::net::service::NetworkService;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// The body of Become Primary / Become Backup (and the vendor's `set_failover_role`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoleRequest {
    /// Pull a data sync from the primary first (the data-sync hook).
    pub data_sync_first: bool,
    /// Become Backup even when the peer cannot be contacted.
    pub force: bool,
}

/// How a role change request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleOutcome {
    /// The role changed.
    Changed,
    /// A data sync started; the role changes when it completes.
    SyncStarted,
}

/// Why a failover command was refused or failed; nothing changed unless it says so.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FailoverError {
    #[error("there is no failover relationship")]
    NoRelationship,
    #[error("a failover relationship already exists; break it first")]
    RelationshipExists,
    #[error("this appliance is {role}, and the command needs a {needs}")]
    WrongRole { role: String, needs: String },
    #[error("the peer cannot be reached{0}")]
    PeerUnreachable(String),
    #[error("the peer does not hold the same inter-appliance key")]
    KeyMismatch,
    #[error("no inter-appliance key is set here: set the same key on both appliances first")]
    NoKey,
    #[error("the two appliances run different software ({here} here, {there} there): update one")]
    VersionMismatch { here: String, there: String },
    #[error("a role change is already in progress")]
    Busy,
    #[error("there is no conflict to fix")]
    NoConflict,
    #[error("{0}")]
    Invalid(String),
    #[error("cannot record the failover role: {0}")]
    Persist(String),
    #[error("the failover service is not running")]
    NotRunning,
    #[error("the peer already has a failover relationship; break it there first")]
    PeerHasRelationship,
    #[error("the peer refused: {0}")]
    PeerRefused(String),
}

/// One line of what [`FailoverError`]s a route answers, as HTTP status and stable code.
impl FailoverError {
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            FailoverError::NoRelationship => (409, "no_relationship"),
            FailoverError::RelationshipExists => (409, "relationship_exists"),
            FailoverError::WrongRole { .. } => (409, "wrong_role"),
            FailoverError::PeerUnreachable(_) => (409, "peer_unreachable"),
            FailoverError::KeyMismatch => (409, "key_mismatch"),
            FailoverError::NoKey => (409, "no_key"),
            FailoverError::VersionMismatch { .. } => (409, "version_mismatch"),
            FailoverError::Busy => (409, "busy"),
            FailoverError::NoConflict => (409, "no_conflict"),
            FailoverError::Invalid(_) => (400, "bad_request"),
            FailoverError::Persist(_) => (500, "internal"),
            FailoverError::NotRunning => (503, "failover_unavailable"),
            FailoverError::PeerHasRelationship => (409, "relationship_exists"),
            FailoverError::PeerRefused(_) => (409, "peer_refused"),
        }
    }
}

/// The last data sync, for the health API (filled by the data-sync issue).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyncRecord {
    /// Unix seconds.
    pub at: u64,
    /// `success`, or what went wrong.
    pub status: String,
}

/// What the driver publishes after each batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub role: Role,
    pub epoch: u64,
    pub pending: bool,
    /// The shared IPs this appliance holds now (enabled on its NICs).
    pub enabled_shared_ips: Vec<IpAddr>,
    pub conflict: Option<ConflictKind>,
    /// Why failover is not in the state its role asks for (a health problem), if it is not.
    pub problem: Option<String>,
    /// The last data sync; `None` before the first one.
    pub last_sync: Option<SyncRecord>,
    /// This appliance holds its shared IPs (a primary, not pending).
    pub holding: bool,
}

/// What the JSON status shows beyond the [`Snapshot`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub pending: bool,
    pub holding: bool,
    pub peer: Option<PeerReport>,
    /// How long the peer has been silent (observed time, this appliance's stalls left out).
    pub silent_seconds: f64,
    /// Time left until this backup takes over, while it counts down.
    pub countdown_seconds: Option<f64>,
    pub conflict: Option<ConflictKind>,
    pub cut_off: bool,
    pub isolated: bool,
    pub untested: bool,
    pub problem: Option<String>,
}

/// The peer as this appliance sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerReport {
    pub endpoint: Endpoint,
    pub reachable: bool,
    /// What it said about itself in its last answer.
    pub state: Option<PeerState>,
    pub last_answer_seconds_ago: Option<f64>,
}

/// One history entry, stamped with the wall clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryItem {
    pub unix_time: u64,
    #[serde(flatten)]
    pub entry: Entry,
}

/// An alert for the notifier: what the role machine asked for, with who and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertMessage {
    pub kind: AlertKind,
    /// How long the primary has been silent.
    pub silent_for: Duration,
    /// Time left until the automatic failover, when there will be one.
    pub remaining: Option<Duration>,
    /// This appliance's host name.
    pub appliance: String,
    /// The peer, as `host:port`.
    pub peer: String,
}

/// Where alerts go. Must not block: the driver calls it on its own task.
pub trait Notifier: Send + Sync + 'static {
    fn notify(&self, alert: AlertMessage);
}

/// A notifier that drops alerts (no e-mail configured in tests of other parts).
pub struct NoNotifier;

impl Notifier for NoNotifier {
    fn notify(&self, _alert: AlertMessage) {}
}

type Answer<T> = oneshot::Sender<Result<T, FailoverError>>;

/// A command for the driver, with where its answer goes.
pub(crate) enum Command {
    Establish {
        role: Role,
        peer: Endpoint,
        peer_epoch: u64,
        answer: Answer<()>,
    },
    Break {
        tell_peer: bool,
        answer: Answer<()>,
    },
    BecomePrimary(RoleRequest, Answer<RoleOutcome>),
    BecomeBackup(RoleRequest, Answer<RoleOutcome>),
    Fix(Answer<RoleOutcome>),
    Peer(CommandRequest, Answer<CommandReply>),
}

/// What the driver needs from the rest of the agent.
pub struct Deps {
    pub config_dir: std::path::PathBuf,
    pub id: String,
    pub version: String,
    pub config: Arc<ConfigStore>,
    pub network: NetworkService,
    pub notifier: Arc<dyn Notifier>,
}

/// How long establishing may wait for each exchange with the other appliance.
pub const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The handle: cheap to clone.
#[derive(Clone)]
pub struct FailoverService {
    snapshot: watch::Receiver<Snapshot>,
    report: watch::Receiver<Report>,
    commands: mpsc::Sender<Command>,
    ctx: Option<Arc<Ctx>>,
    _keep: Arc<(watch::Sender<Snapshot>, watch::Sender<Report>)>,
}

fn link_error(e: LinkError, whose: &str) -> FailoverError {
    match e {
        LinkError::KeyMismatch => FailoverError::KeyMismatch,
        LinkError::Refused { code, message, .. } => match code.as_str() {
            "key_mismatch" | "no_key" => FailoverError::KeyMismatch,
            "version_mismatch" => FailoverError::PeerRefused(message),
            "relationship_exists" => FailoverError::PeerHasRelationship,
            _ => FailoverError::PeerRefused(message),
        },
        LinkError::Unreachable(why) => FailoverError::PeerUnreachable(format!(" ({whose}): {why}")),
        LinkError::Protocol(why) => FailoverError::PeerUnreachable(format!(" ({whose}): {why}")),
    }
}

impl FailoverService {
    /// A service with no driver behind it: role `none`, every command refused with
    /// [`FailoverError::NotRunning`]. For tests of the parts that only read.
    pub fn idle() -> FailoverService {
        let (tx, rx) = watch::channel(Snapshot::default());
        let (rtx, rrx) = watch::channel(Report::default());
        let (commands, _) = mpsc::channel(1);
        FailoverService {
            snapshot: rx,
            report: rrx,
            commands,
            ctx: None,
            _keep: Arc::new((tx, rtx)),
        }
    }

    /// Starts the driver: restores the persisted role (a primary comes back pending
    /// unless its shared IPs are still on the NICs) and states its claims on the
    /// shared IPs before it returns.
    pub async fn start(deps: Deps, tasks: &mut crate::runtime::Tasks) -> FailoverService {
        let ctx = Arc::new(Ctx {
            id: deps.id,
            version: deps.version,
            config: deps.config,
            network: deps.network,
            notifier: deps.notifier,
            state: crate::store::Document::<Persisted>::load(
                deps.config_dir.join(driver::STATE_FILE),
            ),
            history: Mutex::new(VecDeque::new()),
        });
        let (tx, rx) = watch::channel(Snapshot::default());
        let (rtx, rrx) = watch::channel(Report::default());
        let (commands, crx) = mpsc::channel(16);
        let driver = Driver::start(ctx.clone(), crx, tx.clone(), rtx.clone()).await;
        let slot = Arc::new(Mutex::new(Some(driver)));
        tasks.spawn("failover", move || {
            let slot = slot.clone();
            async move {
                let driver = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                match driver {
                    Some(d) => d.run().await,
                    // A driver that stopped is not rebuilt: its state is in the file, and
                    // the next start of the agent restores it.
                    None => std::future::pending().await,
                }
            }
        });
        FailoverService {
            snapshot: rx,
            report: rrx,
            commands,
            ctx: Some(ctx),
            _keep: Arc::new((tx, rtx)),
        }
    }

    /// Keeps `peers` (the connection caps' reserved set) at the peer's address while a
    /// relationship exists: heartbeats get in however many clients crowd the port. A
    /// peer given by name is looked up each time it changes.
    pub async fn feed_peer_addresses(
        self,
        peers: watch::Sender<std::collections::HashSet<IpAddr>>,
    ) {
        let mut report = self.report.clone();
        let mut last: Option<Endpoint> = None;
        loop {
            let endpoint = report
                .borrow_and_update()
                .peer
                .as_ref()
                .map(|p| p.endpoint.clone());
            if endpoint != last {
                let mut set = std::collections::HashSet::new();
                if let Some(e) = &endpoint {
                    let host = e.host.split('%').next().unwrap_or_default();
                    match host.parse::<IpAddr>() {
                        Ok(ip) => {
                            set.insert(ip);
                        }
                        Err(_) => {
                            if let Ok(found) = tokio::net::lookup_host(e.to_string()).await {
                                set.extend(found.map(|a| a.ip()));
                            }
                        }
                    }
                }
                peers.send_replace(set);
                last = endpoint;
            }
            if report.changed().await.is_err() {
                return;
            }
        }
    }

    /// What the driver published last.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// The snapshot as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.clone()
    }

    pub fn report(&self) -> Report {
        self.report.borrow().clone()
    }

    pub fn history(&self) -> Vec<HistoryItem> {
        match &self.ctx {
            Some(c) => c
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect(),
            None => Vec::new(),
        }
    }

    /// This appliance's id (the vendor API's GUID); empty when the service is idle.
    pub fn appliance_id(&self) -> String {
        self.ctx.as_ref().map(|c| c.id.clone()).unwrap_or_default()
    }

    /// The version a peer must match.
    pub fn version(&self) -> String {
        self.ctx
            .as_ref()
            .map(|c| c.version.clone())
            .unwrap_or_default()
    }

    /// What this appliance says about itself to its peer.
    pub fn peer_state(&self) -> PeerState {
        let s = self.snapshot();
        PeerState {
            id: self.ctx.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
            hostname: crate::system::host_name(),
            version: self.version(),
            role: s.role,
            epoch: s.epoch,
            pending: s.pending,
            holds_shared_ip: s.holding,
        }
    }

    fn ctx(&self) -> Result<&Arc<Ctx>, FailoverError> {
        self.ctx.as_ref().ok_or(FailoverError::NotRunning)
    }

    fn key(&self) -> Result<Vec<u8>, FailoverError> {
        let ctx = self.ctx()?;
        ctx.config
            .current()
            .failover
            .key
            .map(|k| k.as_bytes().to_vec())
            .ok_or(FailoverError::NoKey)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, FailoverError>>) -> Command,
    ) -> Result<T, FailoverError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| FailoverError::NotRunning)?;
        rx.await.map_err(|_| FailoverError::NotRunning)?
    }

    /// Establish Relationship, on the intended primary: checks the backup (reachable,
    /// same key, same software, no relationship of its own), has it establish its side
    /// (it checks that it reaches this appliance through `reverse`), then takes the
    /// primary role here.
    pub async fn establish(
        &self,
        backup: Endpoint,
        reverse: Endpoint,
    ) -> Result<(), FailoverError> {
        backup
            .check()
            .map_err(|e| FailoverError::Invalid(format!("backup: {e}")))?;
        reverse
            .check()
            .map_err(|e| FailoverError::Invalid(format!("reverse: {e}")))?;
        if self.snapshot().role != Role::None {
            return Err(FailoverError::RelationshipExists);
        }
        let key = self.key()?;
        let me = self.peer_state();
        let mut link = PeerLink::new(backup.clone(), &key);
        let there: PeerState = link
            .call("GET", wire::STATE, None, ESTABLISH_TIMEOUT)
            .await
            .map_err(|e| link_error(e, &format!("the backup at {backup}")))?;
        if there.version != me.version {
            return Err(FailoverError::VersionMismatch {
                here: me.version,
                there: there.version,
            });
        }
        if there.id == me.id {
            return Err(FailoverError::Invalid(format!(
                "{backup} is this appliance: give the backup's connection details"
            )));
        }
        if there.role != Role::None {
            return Err(FailoverError::PeerHasRelationship);
        }
        let body = serde_json::to_vec(&RelationshipRequest {
            reverse: reverse.clone(),
            primary: me,
        })
        .map_err(|e| FailoverError::Invalid(e.to_string()))?;
        let answer: PeerState = link
            .call(
                "POST",
                wire::RELATIONSHIP,
                Some(body),
                ESTABLISH_TIMEOUT * 2,
            )
            .await
            .map_err(|e| link_error(e, &format!("the backup at {backup}")))?;
        let result = self
            .ask(|answer_tx| Command::Establish {
                role: Role::Primary,
                peer: backup.clone(),
                peer_epoch: answer.epoch,
                answer: answer_tx,
            })
            .await;
        if result.is_err() {
            // Undo the backup's side.
            let _: Result<PeerState, _> = link
                .call("DELETE", wire::RELATIONSHIP, None, ESTABLISH_TIMEOUT)
                .await;
        }
        result
    }

    /// The backup's side of Establish Relationship, asked by the primary over the peer
    /// channel (whose key proof has passed).
    pub async fn accept_relationship(
        &self,
        req: RelationshipRequest,
    ) -> Result<PeerState, FailoverError> {
        req.reverse
            .check()
            .map_err(|e| FailoverError::Invalid(format!("reverse: {e}")))?;
        if self.snapshot().role != Role::None {
            return Err(FailoverError::RelationshipExists);
        }
        let version = self.version();
        if req.primary.version != version {
            return Err(FailoverError::VersionMismatch {
                here: version,
                there: req.primary.version,
            });
        }
        let key = self.key()?;
        let mut link = PeerLink::new(req.reverse.clone(), &key);
        let there: PeerState = link
            .call("GET", wire::STATE, None, ESTABLISH_TIMEOUT)
            .await
            .map_err(|e| {
                link_error(
                    e,
                    &format!("the backup cannot reach the primary at {}", req.reverse),
                )
            })?;
        if there.id != req.primary.id {
            return Err(FailoverError::Invalid(format!(
                "{} is not the appliance that asked: give the connection details the backup uses to reach the primary",
                req.reverse
            )));
        }
        self.ask(|answer| Command::Establish {
            role: Role::Backup,
            peer: req.reverse.clone(),
            peer_epoch: req.primary.epoch,
            answer,
        })
        .await?;
        Ok(self.peer_state())
    }

    /// Break Relationship, here; the peer is told when it can be reached (else it sees
    /// it at its next heartbeat).
    pub async fn break_relationship(&self) -> Result<(), FailoverError> {
        self.ask(|answer| Command::Break {
            tell_peer: true,
            answer,
        })
        .await
    }

    /// The peer broke the relationship (over the peer channel).
    pub async fn peer_broke(&self) -> Result<(), FailoverError> {
        self.ask(|answer| Command::Break {
            tell_peer: false,
            answer,
        })
        .await
    }

    /// Become Primary (on the backup).
    pub async fn become_primary(&self, req: RoleRequest) -> Result<RoleOutcome, FailoverError> {
        self.ask(|tx| Command::BecomePrimary(req, tx)).await
    }

    /// Become Backup (on the primary).
    pub async fn become_backup(&self, req: RoleRequest) -> Result<RoleOutcome, FailoverError> {
        self.ask(|tx| Command::BecomeBackup(req, tx)).await
    }

    /// Fix This Error.
    pub async fn fix(&self) -> Result<RoleOutcome, FailoverError> {
        self.ask(Command::Fix).await
    }

    /// A role change the peer asks for.
    pub async fn peer_command(&self, req: CommandRequest) -> Result<CommandReply, FailoverError> {
        self.ask(|tx| Command::Peer(req, tx)).await
    }

    /// The peer of the relationship, if there is one.
    pub fn peer(&self) -> Option<Endpoint> {
        self.ctx.as_ref()?.state.current().peer
    }

    /// The key in force, for the peer channel's proofs.
    pub fn key_bytes(&self) -> Option<Vec<u8>> {
        self.key().ok()
    }
}

/// The version string a peer must match (see [`driver::version`]).
pub fn version(data_dir: &Path, debug: bool) -> String {
    driver::version(data_dir, debug)
}
