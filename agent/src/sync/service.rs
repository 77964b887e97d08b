//! The sync service: when the backup pulls (first sync, schedule, Sync Now, a final sync
//! before a planned swap), one pull at a time, its progress and history, the site's gate
//! following the role, and the primary's alert when no backup pulls.

use super::local::LocalIndex;
use super::pull::{self, Counters, Paths, PullError};
use super::wire;
use crate::config::ConfigStore;
use crate::failover::role::Role;
use crate::failover::service::{AlertMessage, Notifier, RoleOutcome, RoleRequest, SyncRecord};
use crate::failover::FailoverError;
use crate::failover::FailoverService;
use crate::site::{Access, SiteStore};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// The history keeps this many syncs.
pub const HISTORY: usize = 200;
/// A pause for a final sync ends by itself after this long, if nothing ends it before.
pub const PAUSE_LIMIT: Duration = Duration::from_secs(15 * 60);
/// How often the service looks at the clock, the role and the schedule.
const TICK: Duration = Duration::from_millis(500);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    #[default]
    Idle,
    Running,
}

/// `GET /login/api/v1/failover/sync`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub state: State,
    /// `merging`, `comparing`, `transferring`, `installing`, `done`, while running.
    pub phase: Option<String>,
    /// What started it: `first`, `schedule`, `now`, `final`.
    pub trigger: Option<String>,
    pub started: Option<u64>,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub bytes_on_wire: u64,
    pub rate_bytes_per_second: f64,
    pub eta_seconds: Option<f64>,
    /// When the next scheduled sync is due (Unix seconds), on a backup.
    pub next_scheduled: Option<u64>,
    /// A scheduled slot that came while a sync was still running.
    pub overlapped: Option<String>,
}

/// One finished sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub trigger: String,
    pub started: u64,
    pub ended: u64,
    pub bytes_on_wire: u64,
    pub files_changed: u64,
    /// `success`, or what went wrong.
    pub result: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("a data sync is already running")]
    Running,
    #[error("this appliance is in no failover relationship")]
    NoRelationship,
    #[error("{0}")]
    Failed(String),
    #[error("the peer: {0}")]
    Peer(String),
}

impl SyncError {
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            SyncError::Running => (409, "sync_running"),
            SyncError::NoRelationship => (409, "no_relationship"),
            SyncError::Failed(_) => (502, "sync_failed"),
            SyncError::Peer(_) => (502, "peer_unreachable"),
        }
    }
}

struct Inner {
    index: Arc<LocalIndex>,
    paths: Paths,
    site: Arc<SiteStore>,
    config: Arc<ConfigStore>,
    failover: FailoverService,
    notifier: Arc<dyn Notifier>,
    progress: watch::Sender<Progress>,
    history: Mutex<VecDeque<HistoryEntry>>,
    /// One pull at a time.
    running: Arc<tokio::sync::Mutex<()>>,
    /// Since when this appliance is primary, as the service saw it.
    primary_since: Mutex<Option<u64>>,
    /// A primary paused for a final sync, until when.
    paused_until: Mutex<Option<Instant>>,
    /// Every answer of the sync is paced through this one.
    pacer: super::serve::SharedPacer,
    /// On a primary: when a backup last finished a pull, and how.
    last_pulled: Mutex<Option<(u64, bool)>>,
}

/// The handle: cheap to clone.
#[derive(Clone)]
pub struct SyncService(Arc<Inner>);

impl SyncService {
    pub fn new(
        data_dir: &std::path::Path,
        site: Arc<SiteStore>,
        config: Arc<ConfigStore>,
        failover: FailoverService,
        notifier: Arc<dyn Notifier>,
    ) -> SyncService {
        let paths = Paths::new(data_dir);
        pull::clean_up(&paths);
        SyncService(Arc::new(Inner {
            index: Arc::new(LocalIndex::new(&paths.site, &paths.sync)),
            paths,
            site,
            config,
            failover,
            notifier,
            progress: watch::Sender::new(Progress::default()),
            history: Mutex::new(VecDeque::new()),
            running: Arc::new(tokio::sync::Mutex::new(())),
            primary_since: Mutex::new(None),
            paused_until: Mutex::new(None),
            last_pulled: Mutex::new(None),
            pacer: super::serve::shared_pacer(),
        }))
    }

    pub fn index(&self) -> &Arc<LocalIndex> {
        &self.0.index
    }

    pub fn pacer(&self) -> &super::serve::SharedPacer {
        &self.0.pacer
    }

    pub fn progress(&self) -> Progress {
        self.0.progress.borrow().clone()
    }

    pub fn history(&self) -> Vec<HistoryEntry> {
        lock(&self.0.history).iter().rev().cloned().collect()
    }

    /// The last sync, if any.
    pub fn last(&self) -> Option<HistoryEntry> {
        lock(&self.0.history).back().cloned()
    }

    /// The last sync, for the health API.
    pub fn last_record(&self) -> Option<SyncRecord> {
        self.last().map(|h| SyncRecord {
            at: h.ended,
            status: h.result,
        })
    }

    /// The primary's problem when no backup has pulled for too long.
    pub fn no_pull_problem(&self) -> Option<String> {
        let settings = self.0.config.current().failover.backup;
        let role = self.0.failover.snapshot().role;
        if role != Role::Primary {
            return None;
        }
        let since = self.0.silent_since()?;
        let limit = u64::from(settings.no_pull_alert_minutes) * 60;
        let silent = unix_now().saturating_sub(since);
        (silent > limit).then(|| {
            format!(
                "no backup has pulled a data sync for {} minutes (the alert is set at {})",
                silent / 60,
                settings.no_pull_alert_minutes
            )
        })
    }

    /// Runs the schedule and the gate; spawned once.
    pub async fn run(self) {
        let mut was_backup_since: Option<u64> = None;
        let mut alerted = false;
        let mut last_start: Option<u64> = None;
        let mut overlapped_slot: Option<u64> = None;
        let mut marked_served = false;
        let mut last_access: Option<Access> = None;
        // A role change sets the gate at once, not at the next tick.
        let mut snapshots = self.0.failover.subscribe();
        loop {
            let snapshot = self.0.failover.snapshot();
            let paused = self.paused();
            // Set when the role or the pause changes, not every tick: what else set
            // it in between (the debug hook) holds until then.
            let access = match (snapshot.role, paused) {
                (_, true) => Access::Paused,
                (Role::Backup, false) => Access::ReadOnly,
                _ => Access::Open,
            };
            if last_access != Some(access) {
                last_access = Some(access);
                self.0.site.gate().set(access);
            }
            let settings = self.0.config.current().failover.backup;
            let now = unix_now();
            match snapshot.role {
                Role::Backup => {
                    marked_served = false;
                    let since = *was_backup_since.get_or_insert(now);
                    if settings.backup_operations {
                        let due = match last_start {
                            None => since + u64::from(settings.first_sync_delay_seconds),
                            Some(_) => settings.sync_schedule.next(now, last_start),
                        };
                        let due = if last_start.is_none() {
                            due
                        } else {
                            due.max(last_start.unwrap_or(0) + 1)
                        };
                        let _ = self.0.progress.send_if_modified(|p| {
                            let changed = p.next_scheduled != Some(due);
                            p.next_scheduled = Some(due);
                            changed
                        });
                        if now >= due {
                            let trigger = if last_start.is_none() {
                                "first"
                            } else {
                                "schedule"
                            };
                            match self.start(trigger) {
                                Ok(()) => last_start = Some(now),
                                Err(SyncError::Running) => {
                                    if overlapped_slot != Some(due) {
                                        overlapped_slot = Some(due);
                                        tracing::warn!("sync: a scheduled sync came while the last one was still running");
                                        self.0.progress.send_modify(|p| {
                                            p.overlapped = Some(format!(
                                                "the sync due at {due} (Unix time) came while another was still running: it was skipped"
                                            ))
                                        });
                                    }
                                    last_start = Some(now);
                                }
                                Err(e) => tracing::warn!("sync: {e}"),
                            }
                        }
                    }
                }
                role => {
                    was_backup_since = None;
                    last_start = None;
                    {
                        let mut since = lock(&self.0.primary_since);
                        match role {
                            Role::Primary => {
                                since.get_or_insert(now);
                            }
                            _ => *since = None,
                        }
                    }
                    if role == Role::Primary {
                        if !marked_served {
                            marked_served = true;
                            let paths = self.0.paths.clone();
                            crate::store::blocking(move || pull::PullState::mark_served(&paths))
                                .await;
                        }
                        match self.no_pull_problem() {
                            Some(problem) if !alerted => {
                                alerted = true;
                                tracing::warn!("sync: {problem}");
                                self.alert_no_pull();
                            }
                            None => alerted = false,
                            _ => {}
                        }
                    }
                }
            }
            tokio::select! {
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep(TICK).await;
                    }
                }
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    fn alert_no_pull(&self) {
        let peer = self
            .0
            .failover
            .peer()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let since = self.0.silent_since().unwrap_or_else(unix_now);
        self.0.notifier.notify(AlertMessage {
            kind: crate::failover::role::AlertKind::NoPull,
            silent_for: Duration::from_secs(unix_now().saturating_sub(since)),
            remaining: None,
            appliance: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            peer,
        });
    }

    fn paused(&self) -> bool {
        let mut p = lock(&self.0.paused_until);
        match *p {
            Some(until) if until > Instant::now() => true,
            Some(_) => {
                *p = None;
                false
            }
            None => false,
        }
    }

    /// Pauses the site (a primary before a final sync) or opens it again.
    pub fn set_paused(&self, pause: bool) {
        *lock(&self.0.paused_until) = pause.then(|| Instant::now() + PAUSE_LIMIT);
        let role = self.0.failover.snapshot().role;
        self.0.site.gate().set(match (role, pause) {
            (_, true) => Access::Paused,
            (Role::Backup, false) => Access::ReadOnly,
            _ => Access::Open,
        });
    }

    /// The primary's record of a backup's finished pull.
    pub fn pulled(&self, done: wire::Done) {
        if done.ok {
            *lock(&self.0.last_pulled) = Some((unix_now(), true));
        } else {
            tracing::warn!("sync: the backup's pull failed: {}", done.message);
        }
    }

    /// Sync Now: a backup pulls (in the background); a primary asks its backup to.
    pub async fn sync_now(&self) -> Result<(), SyncError> {
        match self.0.failover.snapshot().role {
            Role::Backup => self.start("now"),
            Role::Primary => self.ask_peer_to_pull(false).await,
            Role::None => Err(SyncError::NoRelationship),
        }
    }

    /// Become Primary / Become Backup. With `data_sync_first` (and a role to change), the
    /// swap is planned: the current primary stops serving its site, the current backup
    /// pulls a final sync, then the roles swap, serially; the answer comes at once
    /// ([`RoleOutcome::SyncStarted`]) and the history tells how it ended.
    pub async fn change_role(
        &self,
        wants: Role,
        req: RoleRequest,
    ) -> Result<RoleOutcome, FailoverError> {
        let role = self.0.failover.snapshot().role;
        if !req.data_sync_first || role == wants || role == Role::None {
            return self.become_role(wants, req).await;
        }
        let guard = self.try_run().map_err(|_| FailoverError::Busy)?;
        if role == Role::Primary {
            // Before the answer: nothing written after it may miss the final sync.
            self.set_paused(true);
        }
        let me = self.clone();
        tokio::spawn(async move {
            let synced = match role {
                Role::Backup => match me.tell_peer_pause(true).await {
                    Ok(()) => me.pull_with(guard, "final").await,
                    Err(e) => Err(e),
                },
                _ => {
                    drop(guard);
                    me.ask_peer_to_pull(true).await
                }
            };
            match synced {
                Ok(()) => {
                    let req = RoleRequest {
                        data_sync_first: false,
                        ..req
                    };
                    if let Err(e) = me.become_role(wants, req).await {
                        tracing::warn!("sync: the final sync is done but the swap failed: {e}");
                    }
                }
                Err(e) => tracing::warn!("sync: the final sync failed, the roles stay: {e}"),
            }
            me.set_paused(false);
            let _ = me.tell_peer_pause(false).await;
        });
        Ok(RoleOutcome::SyncStarted)
    }

    async fn become_role(
        &self,
        wants: Role,
        req: RoleRequest,
    ) -> Result<RoleOutcome, FailoverError> {
        match wants {
            Role::Backup => self.0.failover.become_backup(req).await,
            _ => self.0.failover.become_primary(req).await,
        }
    }

    /// The primary's side of a merge: takes what its backup changed while it served.
    pub async fn take_offer(&self, offer: wire::Offer) -> Result<wire::Merged, SyncError> {
        let (Some(endpoint), Some(key)) = (self.0.failover.peer(), self.0.failover.key_bytes())
        else {
            return Err(SyncError::NoRelationship);
        };
        let mut link = crate::failover::link::PeerLink::new(endpoint, &key);
        pull::take_offer(&mut link, &self.0.index, &self.0.paths, offer)
            .await
            .map_err(|e| SyncError::Failed(e.to_string()))
    }

    /// The backup's answer to its primary's "pull now": at once, or when `wait`, once
    /// the pull is done.
    pub async fn pull_asked(&self, wait: bool) -> Result<(), SyncError> {
        if self.0.failover.snapshot().role != Role::Backup {
            return Err(SyncError::NoRelationship);
        }
        if wait {
            self.run_pull("final").await
        } else {
            self.start("now")
        }
    }

    fn start(&self, trigger: &'static str) -> Result<(), SyncError> {
        let guard = self.try_run()?;
        let me = self.clone();
        tokio::spawn(async move {
            let _ = me.pull_with(guard, trigger).await;
        });
        Ok(())
    }

    /// Runs a pull now and waits for it.
    pub async fn run_pull(&self, trigger: &'static str) -> Result<(), SyncError> {
        let guard = self.try_run()?;
        self.pull_with(guard, trigger).await
    }

    fn try_run(&self) -> Result<RunGuard, SyncError> {
        self.0
            .running
            .clone()
            .try_lock_owned()
            .map_err(|_| SyncError::Running)
    }

    async fn pull_with(&self, guard: RunGuard, trigger: &'static str) -> Result<(), SyncError> {
        let started = unix_now();
        let t0 = Instant::now();
        self.0.progress.send_modify(|p| {
            *p = Progress {
                state: State::Running,
                trigger: Some(trigger.into()),
                started: Some(started),
                next_scheduled: p.next_scheduled,
                overlapped: p.overlapped.take(),
                ..Progress::default()
            }
        });
        let result = self.pull_once(t0).await;
        let (result_text, pulled) = match &result {
            Ok(p) => ("success".to_string(), Some(p.clone())),
            Err(e) => (e.to_string(), None),
        };
        let entry = HistoryEntry {
            trigger: trigger.into(),
            started,
            ended: unix_now(),
            bytes_on_wire: pulled
                .as_ref()
                .map(|p| p.bytes_on_wire)
                .unwrap_or(self.0.progress.borrow().bytes_on_wire),
            files_changed: pulled.as_ref().map(|p| p.files_changed).unwrap_or(0),
            result: result_text.clone(),
        };
        tracing::info!(
            trigger,
            result = %entry.result,
            bytes_on_wire = entry.bytes_on_wire,
            files_changed = entry.files_changed,
            "sync: pull finished"
        );
        {
            let mut h = lock(&self.0.history);
            h.push_back(entry);
            while h.len() > HISTORY {
                h.pop_front();
            }
        }
        self.0.progress.send_modify(|p| {
            p.state = State::Idle;
            p.phase = None;
            p.eta_seconds = None;
        });
        if result.is_ok() {
            self.0.site.settings().reload();
        }
        drop(guard);
        // The primary keeps the record for its no-pull alert; telling it does not hold up
        // the next sync.
        if let (Some(endpoint), Some(key)) = (self.0.failover.peer(), self.0.failover.key_bytes()) {
            let done = serde_json::to_vec(&wire::Done {
                ok: result.is_ok(),
                message: result_text,
            })
            .unwrap_or_default();
            tokio::spawn(async move {
                let mut link = crate::failover::link::PeerLink::new(endpoint, &key);
                let _ = link
                    .call::<serde_json::Value>(
                        "POST",
                        wire::DONE,
                        Some(done),
                        Duration::from_secs(5),
                    )
                    .await;
            });
        }
        result
            .map(|_| ())
            .map_err(|e| SyncError::Failed(e.to_string()))
    }

    async fn pull_once(&self, t0: Instant) -> Result<pull::Pulled, PullError> {
        let (Some(endpoint), Some(key)) = (self.0.failover.peer(), self.0.failover.key_bytes())
        else {
            return Err(PullError::Io(
                "no failover peer or no inter-appliance key".into(),
            ));
        };
        let mut link = crate::failover::link::PeerLink::new(endpoint, &key);
        let config = self.0.config.clone();
        let limit = move || {
            config
                .current()
                .failover
                .backup
                .bandwidth_limit_bytes_per_second
                .map(|l| l.get())
        };
        let progress = self.0.progress.clone();
        let report = move |c: &Counters| {
            let secs = t0.elapsed().as_secs_f64().max(0.001);
            progress.send_modify(|p| {
                p.phase = Some(c.phase.clone());
                p.files_done = c.files_done;
                p.files_total = c.files_total;
                p.bytes_done = c.bytes_done;
                p.bytes_total = c.bytes_total;
                p.bytes_on_wire = c.bytes_on_wire;
                p.rate_bytes_per_second = c.bytes_on_wire as f64 / secs;
                let raw_rate = c.bytes_done as f64 / secs;
                p.eta_seconds = (raw_rate > 0.0)
                    .then(|| c.bytes_total.saturating_sub(c.bytes_done) as f64 / raw_rate);
            });
        };
        pull::pull(pull::Ctx {
            link: &mut link,
            index: &self.0.index,
            paths: &self.0.paths,
            limit: &limit,
            progress: &report,
        })
        .await
    }

    async fn ask_peer_to_pull(&self, wait: bool) -> Result<(), SyncError> {
        let (Some(endpoint), Some(key)) = (self.0.failover.peer(), self.0.failover.key_bytes())
        else {
            return Err(SyncError::NoRelationship);
        };
        let mut link = crate::failover::link::PeerLink::new(endpoint, &key);
        let body = serde_json::to_vec(&wire::PullRequest { wait }).unwrap_or_default();
        let timeout = if wait {
            PAUSE_LIMIT
        } else {
            Duration::from_secs(5)
        };
        link.call::<serde_json::Value>("POST", wire::PULL, Some(body), timeout)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                crate::failover::link::LinkError::Refused { code, message, .. }
                    if code == "sync_running" =>
                {
                    let _ = message;
                    SyncError::Running
                }
                crate::failover::link::LinkError::Refused { code, message, .. }
                    if code == "sync_failed" =>
                {
                    SyncError::Failed(message)
                }
                other => SyncError::Peer(other.to_string()),
            })
    }

    async fn tell_peer_pause(&self, pause: bool) -> Result<(), SyncError> {
        let (Some(endpoint), Some(key)) = (self.0.failover.peer(), self.0.failover.key_bytes())
        else {
            return Err(SyncError::NoRelationship);
        };
        let mut link = crate::failover::link::PeerLink::new(endpoint, &key);
        let body = serde_json::to_vec(&wire::PauseRequest { pause }).unwrap_or_default();
        link.call::<serde_json::Value>("POST", wire::PAUSE, Some(body), Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|e| SyncError::Peer(e.to_string()))
    }
}

impl Inner {
    /// Since when no backup has pulled from this primary: its last pull, or when this
    /// appliance became primary (as the service saw it) if later.
    fn silent_since(&self) -> Option<u64> {
        let primary = (*lock(&self.primary_since))?;
        let pulled = (*lock(&self.last_pulled)).map(|(at, _)| at).unwrap_or(0);
        Some(primary.max(pulled))
    }
}

type RunGuard = tokio::sync::OwnedMutexGuard<()>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
