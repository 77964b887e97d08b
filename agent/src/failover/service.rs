//! The failover service as the rest of the agent sees it: a cheap handle
//! ([`FailoverService`]) over the driver task that runs the role machine.
//!
//! Readers (status, `/check_health`, the vendor's `check_health`) take a [`Snapshot`],
//! published by the driver after every batch of actions and never blocking. Commands
//! (establish, break, become primary or backup, fix) go to the driver over a channel and
//! come back as a result. Alerts leave through a [`Notifier`] (the site's e-mail).

use super::conflict::Kind as ConflictKind;
use super::role::{AlertKind, Role};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Arc;
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

/// A command for the driver, with where its answer goes.
#[allow(dead_code)] // read by the driver, which comes next
pub(crate) enum Command {
    BecomePrimary(RoleRequest, oneshot::Sender<Result<RoleOutcome, FailoverError>>),
    BecomeBackup(RoleRequest, oneshot::Sender<Result<RoleOutcome, FailoverError>>),
}

/// The handle: cheap to clone.
#[derive(Clone)]
pub struct FailoverService {
    snapshot: watch::Receiver<Snapshot>,
    commands: mpsc::Sender<Command>,
    _keep: Arc<watch::Sender<Snapshot>>,
}

impl FailoverService {
    /// A service with no driver behind it: role `none`, every command refused with
    /// [`FailoverError::NotRunning`]. For tests of the parts that only read.
    pub fn idle() -> FailoverService {
        let (tx, rx) = watch::channel(Snapshot::default());
        let (commands, _) = mpsc::channel(1);
        FailoverService {
            snapshot: rx,
            commands,
            _keep: Arc::new(tx),
        }
    }

    /// What the driver published last.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    async fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<RoleOutcome, FailoverError>>) -> Command,
    ) -> Result<RoleOutcome, FailoverError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| FailoverError::NotRunning)?;
        rx.await.map_err(|_| FailoverError::NotRunning)?
    }

    /// Become Primary (on the backup).
    pub async fn become_primary(&self, req: RoleRequest) -> Result<RoleOutcome, FailoverError> {
        self.ask(|tx| Command::BecomePrimary(req, tx)).await
    }

    /// Become Backup (on the primary).
    pub async fn become_backup(&self, req: RoleRequest) -> Result<RoleOutcome, FailoverError> {
        self.ask(|tx| Command::BecomeBackup(req, tx)).await
    }
}
