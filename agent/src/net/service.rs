//! The network service: takes typed changes, checks them whole, probes new IPv4
//! addresses, persists, reconciles, and undoes changes that are not confirmed in time.
//!
//! - At start it first restores the configuration an unconfirmed change replaced (see
//!   [`rollback`]), then reconciles; and again on every configuration change, on every
//!   kernel notice about links, addresses or routes (after 150 ms of quiet), and every
//!   [`RESYNC`] as a safety net.
//! - [`NetworkService::change`] applies one [`NetworkChange`]: the next configuration is
//!   computed and validated, NICs it names must exist, each IPv4 address it enables is
//!   probed (RFC 5227) and refused if another host answers. Only then is anything written.
//!   With a confirmation window the old configuration is recorded first; a timer restores
//!   it unless [`NetworkService::confirm`] comes in time. While a change awaits
//!   confirmation, other changes are refused.
//! - Every kernel access goes through the [`Kernel`] seam held by its [`Reconciler`]
//!   (snapshots, links, probes, announcements), so the service runs on the recording
//!   fake in unit tests. The one exception is the subscription to kernel notices that
//!   wakes the loop ([`NetworkService::start`], live only).
//! - [`NetworkService::overlay`] is how the failover agent holds and withholds the
//!   shared addresses at run time (see [`super::overlay`]); every change of it wakes the
//!   loop. [`NetworkService::announce`] sends gratuitous ARP or a neighbour
//!   advertisement for an address, e.g. after a takeover.

use super::changes::{NetworkChange, NotConfigured};
use super::client_path;
use super::inventory;
use super::kernel::LiveKernel;
use super::netlink::NetEvents;
use super::overlay::OverlayHandle;
use super::reconcile::{Kernel, ProbeOutcome, Reconciler, ROUTE_PROTOCOL};
use super::rollback::{self, RollbackError, RollbackRecord};
use super::NetError;
use crate::config::{ConfigError, ConfigStore};
use crate::model::netconfig::{NetworkConfig, NicName, ValidationError};
use crate::model::unix_now;
use crate::model::{
    ChangeOutcome, Confirmed, HostnameView, KernelRoute, NetworkStatus, Nic, PendingChange,
    RoutesView,
};
use crate::runtime::Tasks;
use crate::store;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often the kernel is compared with the configuration without any notice.
pub const RESYNC: Duration = Duration::from_secs(30);
/// The longest confirmation window.
pub const MAX_CONFIRM_WITHIN: u64 = 3600;
/// Kernel notices are gathered this long before reconciling.
const SETTLE: Duration = Duration::from_millis(150);

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    NotConfigured(#[from] NotConfigured),
    #[error(
        "{address} is already in use on the segment of {nic}: {mac} answered our ARP probe \
         (RFC 5227 conflict detection); nothing was changed"
    )]
    AddressInUse {
        nic: String,
        address: Ipv4Addr,
        mac: String,
    },
    #[error(
        "the change \"{change}\" awaits confirmation ({seconds_left} s left): confirm it or \
         roll it back first"
    )]
    Pending { change: String, seconds_left: u64 },
    #[error("no network change awaits confirmation")]
    NothingPending,
    #[error(
        "{0} is selected as a shared IP: failover owns it, so it cannot be removed or \
         enabled or disabled by hand; take it out of the shared IPs first"
    )]
    OwnedByFailover(IpAddr),
    #[error(
        "this change would take away the appliance's path to you ({client}, reached through \
         {path}): send it again with a confirmation window (confirm_within), so that it is \
         undone by itself unless you confirm it from the new address"
    )]
    WouldCutOff { client: IpAddr, path: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Kernel(#[from] NetError),
    #[error(transparent)]
    Rollback(#[from] RollbackError),
}

struct Pending {
    id: u64,
    change: String,
    previous: NetworkConfig,
    within: Duration,
    deadline: Instant,
    deadline_unix: u64,
}

impl Pending {
    fn view(&self) -> PendingChange {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let seconds_left = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        PendingChange {
            change: self.change.clone(),
            confirm_within_seconds: self.within.as_secs(),
            deadline_unix: self.deadline_unix,
            seconds_left,
            message: format!(
                "unless confirmed within {} s, the previous network configuration is restored \
                 automatically (also if the appliance restarts first)",
                self.within.as_secs()
            ),
        }
    }
}

struct Inner<K> {
    config: Arc<ConfigStore>,
    config_dir: PathBuf,
    reconciler: Reconciler<K>,
    /// Held for the whole of a change: changes are applied one at a time.
    pending: tokio::sync::Mutex<Option<Pending>>,
    next_id: AtomicU64,
    /// The pending change's id and deadline, for the rollback timer task.
    deadline: watch::Sender<Option<(u64, Instant)>>,
}

pub struct NetworkService<K = LiveKernel> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for NetworkService<K> {
    fn clone(&self) -> Self {
        NetworkService {
            inner: self.inner.clone(),
        }
    }
}

impl NetworkService<LiveKernel> {
    /// Restores what an unconfirmed change replaced, then starts reconciling in the
    /// background. `config_dir` holds the rollback record.
    /// `overlay`: the claims stated before the first pass (the failover role's).
    pub fn start(
        config: Arc<ConfigStore>,
        config_dir: PathBuf,
        kernel: LiveKernel,
        overlay: OverlayHandle,
        tasks: &mut Tasks,
    ) -> NetworkService {
        let history = kernel.history();
        let svc = NetworkService::new(
            config,
            config_dir,
            Reconciler::with_history(kernel, history).with_overlay(overlay),
        );
        let s = svc.clone();
        tasks.spawn("network-reconcile", move || {
            let events = match NetEvents::subscribe() {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::warn!(error = %e, "network: no kernel notices; reconciling every {RESYNC:?} only");
                    None
                }
            };
            s.clone().run(events)
        });
        let s = svc.clone();
        tasks.spawn("network-rollback-timer", move || s.clone().rollback_timer());
        svc
    }
}

impl<K: Kernel> NetworkService<K> {
    /// Restores what an unconfirmed change replaced; reconciles only when asked (the
    /// loop is [`NetworkService::start`]'s).
    pub fn new(
        config: Arc<ConfigStore>,
        config_dir: PathBuf,
        reconciler: Reconciler<K>,
    ) -> NetworkService<K> {
        roll_back_unconfirmed(&config, &config_dir);
        NetworkService {
            inner: Arc::new(Inner {
                reconciler,
                config,
                config_dir,
                pending: tokio::sync::Mutex::new(None),
                next_id: AtomicU64::new(1),
                deadline: watch::Sender::new(None),
            }),
        }
    }

    async fn run(self, mut events: Option<NetEvents>) {
        let inner = &self.inner;
        let mut rx = inner.config.subscribe();
        let mut overlay = inner.reconciler.overlay().subscribe();
        let mut tick = tokio::time::interval(RESYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let network = rx.borrow_and_update().network.clone();
            overlay.borrow_and_update();
            inner.reconciler.reconcile(&network).await;
            tokio::select! {
                changed = rx.changed() => if changed.is_err() {
                    return;
                },
                changed = overlay.changed() => if changed.is_err() {
                    return;
                },
                event = next_event(&mut events) => match event {
                    Some(()) => settle(&mut events).await,
                    None => {
                        tracing::warn!("network: kernel notices stopped; reconciling every {RESYNC:?} only");
                        events = None;
                    }
                },
                _ = tick.tick() => {}
            }
        }
    }

    pub fn config(&self) -> NetworkConfig {
        self.inner.config.current().network
    }

    /// Applies one change; with `confirm_within`, undone unless confirmed in time.
    ///
    /// The change runs to its end on a task of its own: a client that goes away while it
    /// is being applied (which cancels the API handler) cannot leave it half done, for
    /// example written but without its rollback timer.
    ///
    /// `client` is the address the request came from: without a confirmation window, a
    /// change that would take away the appliance's path to it is refused
    /// ([`ChangeError::WouldCutOff`]).
    pub async fn change(
        &self,
        change: NetworkChange,
        confirm_within: Option<Duration>,
        client: Option<IpAddr>,
    ) -> Result<ChangeOutcome, ChangeError>
    where
        K: 'static,
    {
        let svc = self.clone();
        to_completion(async move { svc.apply(change, confirm_within, client).await }).await
    }

    async fn apply(
        &self,
        change: NetworkChange,
        confirm_within: Option<Duration>,
        client: Option<IpAddr>,
    ) -> Result<ChangeOutcome, ChangeError> {
        let inner = &self.inner;
        let mut pending = inner.pending.lock().await;
        if let Some(p) = pending.as_ref() {
            let v = p.view();
            return Err(ChangeError::Pending {
                change: v.change,
                seconds_left: v.seconds_left,
            });
        }
        let current = self.config();
        let next = change.apply(&current)?;
        let shared = inner.config.current().failover.shared_ips;
        if let Some(ip) = touches_shared_ip(&current, &next, &shared) {
            return Err(ChangeError::OwnedByFailover(ip));
        }
        next.validate()?;
        let actual = inner.reconciler.kernel().snapshot().await?;
        let present: Vec<String> = actual
            .links
            .iter()
            .filter(|l| !l.loopback)
            .map(|l| l.name.clone())
            .collect();
        // NICs new to the configuration, or named by this change, must exist; one already
        // configured that went away does not block unrelated changes.
        let named = NetworkConfig {
            interfaces: next
                .interfaces
                .iter()
                .filter(|i| current.interface(&i.name).is_none() || change.nic() == Some(&i.name))
                .cloned()
                .collect(),
            ..Default::default()
        };
        named.check_nics(&present)?;
        if confirm_within.is_none() {
            let factory_on = inner.config.current().factory_address.enabled;
            if let Some(path) = client
                .and_then(|c| client_path::cuts_off(&current, &next, factory_on, c).map(|p| (c, p)))
            {
                return Err(ChangeError::WouldCutOff {
                    client: path.0,
                    path: path.1.to_string(),
                });
            }
        }
        if next == current {
            return Ok(ChangeOutcome {
                message: "nothing to change: the configuration already says so".into(),
                config: current,
                report: inner.reconciler.last(),
                pending: None,
            });
        }

        // RFC 5227: every IPv4 address this change enables is probed before anything is
        // written; one that another host answers for is refused.
        let mut cleared = Vec::new();
        for (nic, a) in next.enabled_addresses() {
            let IpAddr::V4(v4) = a.ip() else { continue };
            let was_enabled = current.interface(nic).is_some_and(|i| {
                i.addresses
                    .iter()
                    .any(|x| x.enabled && x.address.ip() == a.ip())
            });
            let Some(link) = actual
                .links
                .iter()
                .find(|l| l.name == nic.as_str() && !l.loopback)
            else {
                continue;
            };
            let there = actual
                .addresses
                .iter()
                .any(|k| k.index == link.index && k.address.ip() == a.ip());
            if was_enabled || there {
                continue;
            }
            match inner
                .reconciler
                .kernel()
                .probe_ipv4(link.index, v4, super::acd::Timing::FAST)
                .await?
            {
                ProbeOutcome::Free => cleared.push((link.index, v4)),
                ProbeOutcome::NoLink => {}
                ProbeOutcome::InUse { mac } => {
                    let c = inner.reconciler.record_refused(nic.as_str(), v4, mac);
                    return Err(ChangeError::AddressInUse {
                        nic: nic.to_string(),
                        address: v4,
                        mac: c.mac,
                    });
                }
            }
        }

        let what = change.describe();
        let record =
            confirm_within.map(|w| RollbackRecord::new(what.clone(), w.as_secs(), current.clone()));
        for (index, v4) in cleared {
            inner.reconciler.mark_cleared(index, v4).await;
        }
        // This change's own pass applies it (and reports what it did): the background
        // loop, woken by the new settings, waits for the turn and finds nothing to do.
        let mut turn = inner.reconciler.turn().await;
        self.persist(record, next.clone()).await?;
        tracing::info!(change = %what, confirm_within_s = confirm_within.map(|d| d.as_secs()), "network settings changed");
        // The rollback timer is armed as soon as the change is written.
        let view = confirm_within.map(|w| {
            let p = self.arm(what.clone(), current, w);
            let v = p.view();
            *pending = Some(p);
            v
        });
        let report = turn.reconcile(&next).await;
        drop(turn);
        let mut message = format!("done: {what}");
        if !report.in_sync {
            message.push_str("; some differences remain (see report.unresolved)");
        }
        if let Some(v) = &view {
            message.push_str("; ");
            message.push_str(&v.message);
        }
        Ok(ChangeOutcome {
            message,
            config: next,
            report,
            pending: view,
        })
    }

    fn arm(&self, change: String, previous: NetworkConfig, within: Duration) -> Pending {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + within;
        self.inner.deadline.send_replace(Some((id, deadline)));
        Pending {
            id,
            change,
            previous,
            within,
            deadline,
            deadline_unix: unix_now() + within.as_secs(),
        }
    }

    /// Forgets the deadline of change `id` (confirmed, rolled back or expired).
    fn disarm(&self, id: u64) {
        self.inner.deadline.send_if_modified(|d| match d {
            Some((armed, _)) if *armed == id => {
                *d = None;
                true
            }
            _ => false,
        });
    }

    /// The rollback timer: a supervised task that restores the previous configuration
    /// when the pending change's deadline passes.
    async fn rollback_timer(self) {
        let mut armed = self.inner.deadline.subscribe();
        loop {
            let next = *armed.borrow_and_update();
            match next {
                Some((id, at)) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => self.expire(id).await,
                    _ = armed.changed() => {}
                },
                None => {
                    if armed.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn expire(&self, id: u64) {
        let mut pending = self.inner.pending.lock().await;
        if pending.as_ref().is_some_and(|p| p.id == id) {
            if let Some(p) = pending.take() {
                let why = format!("was not confirmed within {} s", p.within.as_secs());
                if let Err(e) = self.restore(p, &why).await {
                    tracing::error!(error = %e, "cannot restore the previous network configuration; it is restored at the next start");
                }
            }
        }
        self.disarm(id);
    }

    /// Writes `network` to the settings (on the blocking pool), with the rollback record
    /// first when the change has a confirmation window; a failed write takes the record
    /// back out.
    async fn persist(
        &self,
        record: Option<RollbackRecord>,
        network: NetworkConfig,
    ) -> Result<(), ChangeError> {
        let (config, dir) = (self.inner.config.clone(), self.inner.config_dir.clone());
        store::blocking(move || {
            if let Some(r) = &record {
                rollback::save(&dir, r)?;
            }
            if let Err(e) = config.update(|c| c.network = network) {
                if record.is_some() {
                    if let Err(e) = rollback::remove(&dir) {
                        tracing::error!(error = %e, "cannot remove the rollback record");
                    }
                }
                return Err(e.into());
            }
            Ok(())
        })
        .await
    }

    async fn restore(&self, p: Pending, why: &str) -> Result<ChangeOutcome, ChangeError> {
        let inner = &self.inner;
        let (config, dir) = (inner.config.clone(), inner.config_dir.clone());
        let previous = p.previous.clone();
        let mut turn = inner.reconciler.turn().await;
        store::blocking(move || {
            config.update(|c| c.network = previous)?;
            if let Err(e) = rollback::remove(&dir) {
                tracing::error!(error = %e, "cannot remove the rollback record");
            }
            Ok::<_, ChangeError>(())
        })
        .await?;
        tracing::warn!(change = %p.change, "network change {why}: previous configuration restored");
        let report = turn.reconcile(&p.previous).await;
        drop(turn);
        Ok(ChangeOutcome {
            message: format!(
                "the change \"{}\" {why}: the previous configuration is restored",
                p.change
            ),
            config: p.previous,
            report,
            pending: None,
        })
    }

    /// Keeps the change awaiting confirmation (to the end, like [`Self::change`]).
    pub async fn confirm(&self) -> Result<Confirmed, ChangeError>
    where
        K: 'static,
    {
        let svc = self.clone();
        to_completion(async move { svc.keep().await }).await
    }

    async fn keep(&self) -> Result<Confirmed, ChangeError> {
        let mut pending = self.inner.pending.lock().await;
        let change = match pending.as_ref() {
            Some(p) => p.change.clone(),
            None => return Err(ChangeError::NothingPending),
        };
        let dir = self.inner.config_dir.clone();
        store::blocking(move || rollback::remove(&dir)).await?;
        if let Some(p) = pending.take() {
            self.disarm(p.id);
        }
        tracing::info!(change = %change, "network change confirmed");
        Ok(Confirmed {
            message: format!("confirmed: {change}"),
        })
    }

    /// Undoes the change awaiting confirmation now (to the end, like [`Self::change`]).
    pub async fn roll_back(&self) -> Result<ChangeOutcome, ChangeError>
    where
        K: 'static,
    {
        let svc = self.clone();
        to_completion(async move { svc.undo().await }).await
    }

    async fn undo(&self) -> Result<ChangeOutcome, ChangeError> {
        let mut pending = self.inner.pending.lock().await;
        let p = pending.take().ok_or(ChangeError::NothingPending)?;
        self.disarm(p.id);
        self.restore(p, "was rolled back on request").await
    }

    pub async fn status(&self) -> NetworkStatus {
        let pending = self.inner.pending.lock().await.as_ref().map(Pending::view);
        NetworkStatus {
            report: self.inner.reconciler.last(),
            pending,
            conflict_history: self.inner.reconciler.history(),
        }
    }

    /// Every NIC with its facts and its configured and present addresses.
    pub async fn inventory(&self) -> Result<Vec<Nic>, NetError> {
        let kernel = self.inner.reconciler.kernel();
        let links = kernel.links().await?;
        let addresses = kernel.snapshot().await?.addresses;
        Ok(inventory::build(&links, &addresses, &self.config(), |l| {
            inventory::read_sysfs(&l.name)
        }))
    }

    pub async fn routes(&self) -> Result<RoutesView, NetError> {
        let actual = self.inner.reconciler.kernel().snapshot().await?;
        let links = actual.links;
        let cfg = self.config();
        let kernel = actual
            .routes
            .into_iter()
            .map(|r| KernelRoute {
                destination: format!("{}/{}", r.destination, r.prefix),
                gateway: r.gateway.map(|g| g.to_string()),
                nic: r
                    .oif
                    .and_then(|i| links.iter().find(|l| l.index == i))
                    .map(|l| l.name.clone()),
                protocol: r.protocol,
                managed: r.protocol == ROUTE_PROTOCOL,
            })
            .collect();
        Ok(RoutesView {
            gateways: cfg.gateways,
            routes: cfg.routes,
            kernel,
        })
    }

    /// How the failover agent holds and withholds addresses at run time.
    pub fn overlay(&self) -> OverlayHandle {
        self.inner.reconciler.overlay().clone()
    }

    /// Announces `address` on `nic` (gratuitous ARP in request and reply form, or an
    /// unsolicited neighbour advertisement once DAD is done).
    pub async fn announce(&self, nic: &NicName, address: IpAddr) -> Result<(), NetError> {
        let index = self.index_of(nic).await?;
        self.inner
            .reconciler
            .kernel()
            .announce(index, address)
            .await
    }

    /// The kernel's index of `nic`.
    async fn index_of(&self, nic: &NicName) -> Result<u32, NetError> {
        let actual = self.inner.reconciler.kernel().snapshot().await?;
        actual
            .links
            .iter()
            .find(|l| l.name == nic.as_str() && !l.loopback)
            .map(|l| l.index)
            .ok_or_else(|| NetError::NoSuchNic(nic.to_string()))
    }

    /// Whether another host has `address` on `nic`'s link, for a failover takeover: a
    /// quick ARP probe ([`super::acd::Timing::TAKEOVER`]) for IPv4, neighbour
    /// solicitations for IPv6.
    pub async fn probe(
        &self,
        nic: &NicName,
        address: IpAddr,
    ) -> Result<super::reconcile::ProbeOutcome, NetError> {
        let index = self.index_of(nic).await?;
        let kernel = self.inner.reconciler.kernel();
        match address {
            IpAddr::V4(v4) => {
                kernel
                    .probe_ipv4(index, v4, super::acd::Timing::TAKEOVER)
                    .await
            }
            IpAddr::V6(v6) => kernel.probe_ipv6(index, v6).await,
        }
    }

    /// Whether `address` is on one of the NICs now.
    pub async fn has_address(&self, address: IpAddr) -> bool {
        match self.inner.reconciler.kernel().snapshot().await {
            Ok(a) => a.addresses.iter().any(|s| s.address.ip() == address),
            Err(_) => false,
        }
    }

    pub async fn hostname(&self) -> HostnameView {
        let hostname = match self.inner.reconciler.kernel().snapshot().await {
            Ok(a) => a.hostname,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the kernel's state for the host name");
                String::new()
            }
        };
        HostnameView {
            hostname,
            configured: self.config().hostname.map(|h| h.to_string()),
        }
    }
}

/// The first shared IP that a change from `current` to `next` removes, enables or disables.
fn touches_shared_ip(
    current: &NetworkConfig,
    next: &NetworkConfig,
    shared: &[IpAddr],
) -> Option<IpAddr> {
    let state = |c: &NetworkConfig, ip: &IpAddr| {
        c.interfaces
            .iter()
            .flat_map(|i| i.addresses.iter())
            .find(|a| a.address.ip() == *ip)
            .map(|a| a.enabled)
    };
    shared
        .iter()
        .find(|ip| state(current, ip).is_some() && state(current, ip) != state(next, ip))
        .copied()
}

/// Runs `work` on its own task and waits for it: dropping the waiting future (a cancelled
/// handler) does not stop the work.
async fn to_completion<R: Send + 'static>(
    work: impl std::future::Future<Output = R> + Send + 'static,
) -> R {
    match tokio::spawn(work).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

async fn next_event(events: &mut Option<NetEvents>) -> Option<()> {
    match events {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

/// Waits until the kernel has been quiet for [`SETTLE`].
async fn settle(events: &mut Option<NetEvents>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SETTLE) => return,
            e = next_event(events) => if e.is_none() {
                return;
            },
        }
    }
}

/// A rollback record at start means the change it records was never confirmed: put the
/// previous network configuration back before anything is applied.
fn roll_back_unconfirmed(config: &ConfigStore, config_dir: &std::path::Path) {
    match rollback::load(config_dir) {
        Ok(None) => {}
        Ok(Some(rec)) => match config.update(|c| c.network = rec.previous.clone()) {
            Ok(_) => {
                tracing::warn!(change = %rec.change, "network change was not confirmed before the restart: previous configuration restored");
                if let Err(e) = rollback::remove(config_dir) {
                    tracing::error!(error = %e, "cannot remove the rollback record");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, change = %rec.change, "cannot restore the network configuration an unconfirmed change replaced")
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "cannot read the pending network rollback; left in place")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unconfirmed_change_is_undone_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::open(dir.path());
        let before: NetworkConfig = serde_json::from_str(
            r#"{"interfaces": [{"name": "eth0", "addresses": [{"address": "192.0.2.10/24"}]}]}"#,
        )
        .unwrap();
        store.update(|c| c.network = before.clone()).unwrap();
        rollback::save(
            dir.path(),
            &RollbackRecord::new("add 192.0.2.11/24".into(), 60, before.clone()),
        )
        .unwrap();
        let after: NetworkConfig = serde_json::from_str(
            r#"{"interfaces": [{"name": "eth0", "addresses": [{"address": "192.0.2.11/24"}]}]}"#,
        )
        .unwrap();
        store.update(|c| c.network = after).unwrap();
        store.update(|c| c.factory_address.enabled = false).unwrap();

        roll_back_unconfirmed(&store, dir.path());
        let reopened = ConfigStore::open(dir.path());
        assert_eq!(reopened.current().network, before);
        assert!(
            !reopened.current().factory_address.enabled,
            "only the network section is rolled back"
        );
        assert_eq!(rollback::load(dir.path()).unwrap(), None);
        // Nothing to do the second time.
        roll_back_unconfirmed(&store, dir.path());
        assert_eq!(store.current().network, before);
    }

    use crate::model::netconfig::{AddressConfig, ValidationError};
    use crate::net::fake::{actual, addr, block_on, Fake, OTHER_MAC};

    fn service(fake: Fake) -> (tempfile::TempDir, NetworkService<Fake>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ConfigStore::open(dir.path()));
        let svc = NetworkService::new(store, dir.path().to_path_buf(), Reconciler::new(fake));
        (dir, svc)
    }

    fn add(nic: &str, address: &str) -> NetworkChange {
        NetworkChange::AddAddress {
            nic: nic.parse().unwrap(),
            address: AddressConfig {
                address: address.parse().unwrap(),
                enabled: true,
            },
        }
    }

    fn log(svc: &NetworkService<Fake>) -> Vec<String> {
        svc.inner.reconciler.kernel().log()
    }

    #[test]
    fn an_ipv4_address_another_host_answers_for_is_refused_and_nothing_is_written() {
        let mut fake = Fake::new(actual());
        fake.taken = vec!["192.0.2.77".parse().unwrap()];
        let (dir, svc) = service(fake);
        let err = block_on(svc.change(add("eth0", "192.0.2.77/24"), None, None)).unwrap_err();
        match err {
            ChangeError::AddressInUse { nic, address, mac } => {
                assert_eq!(
                    (nic.as_str(), address.to_string()),
                    ("eth0", "192.0.2.77".into())
                );
                assert_eq!(mac, crate::net::arp::format_mac(&OTHER_MAC));
            }
            e => panic!("{e}"),
        }
        assert_eq!(log(&svc), vec!["probe 192.0.2.77"], "probed, then nothing");
        assert!(
            !dir.path().join(crate::config::FILE).exists(),
            "nothing was written"
        );
        assert_eq!(svc.config(), NetworkConfig::default());
        let st = block_on(svc.status());
        assert_eq!(st.conflict_history.len(), 1);
        assert_eq!(st.conflict_history[0].kind, "in-use");
    }

    #[test]
    fn a_selected_shared_ip_cannot_be_removed_or_toggled_by_hand() {
        let (dir, svc) = service(Fake::new(actual()));
        block_on(svc.change(add("eth0", "192.0.2.10/24"), None, None)).unwrap();
        block_on(svc.change(add("eth0", "192.0.2.100/24"), None, None)).unwrap();
        svc.inner
            .config
            .update(|c| c.failover.shared_ips = vec!["192.0.2.100".parse().unwrap()])
            .unwrap();
        let file = std::fs::read_to_string(dir.path().join(crate::config::FILE)).unwrap();
        let shared: IpAddr = "192.0.2.100".parse().unwrap();
        for change in [
            NetworkChange::RemoveAddress {
                nic: "eth0".parse().unwrap(),
                ip: shared,
            },
            NetworkChange::SetAddressEnabled {
                nic: "eth0".parse().unwrap(),
                ip: shared,
                enabled: false,
            },
            NetworkChange::Replace(NetworkConfig::default()),
        ] {
            let err = block_on(svc.change(change, None, None)).unwrap_err();
            assert!(
                matches!(err, ChangeError::OwnedByFailover(ip) if ip == shared),
                "{err}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join(crate::config::FILE)).unwrap(),
            file,
            "nothing was written"
        );
        // Other addresses are not failover's business.
        let other = NetworkChange::RemoveAddress {
            nic: "eth0".parse().unwrap(),
            ip: "192.0.2.10".parse().unwrap(),
        };
        block_on(svc.change(other, None, None)).unwrap();
    }

    #[test]
    fn a_change_that_cuts_off_the_client_needs_a_confirmation_window() {
        let (dir, svc) = service(Fake::new(actual()));
        block_on(svc.change(add("eth0", "192.0.2.10/24"), None, None)).unwrap();
        let file = std::fs::read_to_string(dir.path().join(crate::config::FILE)).unwrap();
        let client: IpAddr = "192.0.2.77".parse().unwrap();
        let remove = || NetworkChange::RemoveAddress {
            nic: "eth0".parse().unwrap(),
            ip: "192.0.2.10".parse().unwrap(),
        };
        let err = block_on(svc.change(remove(), None, Some(client))).unwrap_err();
        assert!(
            matches!(&err, ChangeError::WouldCutOff { client: c, path }
                if *c == client && path == "192.0.2.0/24, from 192.0.2.10"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(crate::config::FILE)).unwrap(),
            file,
            "nothing was written"
        );
        // Another client's path is not this change's business, and a window makes it safe.
        let other: IpAddr = "169.254.1.4".parse().unwrap();
        block_on(svc.change(add("eth0", "192.0.2.11/24"), None, Some(other))).unwrap();
        let within = Some(Duration::from_secs(60));
        let out = block_on(svc.change(remove(), within, Some(client))).unwrap();
        assert!(out.pending.is_some());
    }

    #[test]
    fn a_change_whose_client_goes_away_still_ends_with_its_rollback_armed() {
        let mut fake = Fake::new(actual());
        fake.probe_time = Some(Duration::from_millis(200));
        let (dir, svc) = service(fake);
        let within = Some(Duration::from_secs(60));
        block_on(async {
            // The client hangs up while the address is being probed: the handler's future
            // is dropped.
            let gone = tokio::time::timeout(
                Duration::from_millis(20),
                svc.change(add("eth0", "192.0.2.10/24"), within, None),
            )
            .await;
            assert!(gone.is_err(), "the change was still probing");
            tokio::time::sleep(Duration::from_millis(600)).await;
        });
        let st = block_on(svc.status());
        assert!(st.pending.is_some(), "the rollback timer is armed");
        assert!(
            rollback::load(dir.path()).unwrap().is_some(),
            "and its record kept"
        );
        let text = std::fs::read_to_string(dir.path().join(crate::config::FILE)).unwrap();
        assert!(text.contains("192.0.2.10/24"), "{text}");
    }

    #[test]
    fn a_free_address_is_probed_once_and_then_added_without_a_second_probe() {
        let (dir, svc) = service(Fake::new(actual()));
        let out = block_on(svc.change(add("eth0", "192.0.2.10/24"), None, None)).unwrap();
        assert!(out.report.in_sync, "{:?}", out.report);
        assert_eq!(
            log(&svc),
            vec!["probe 192.0.2.10", "added 192.0.2.10/24 to eth0"]
        );
        let text = std::fs::read_to_string(dir.path().join(crate::config::FILE)).unwrap();
        assert!(text.contains("192.0.2.10/24"), "{text}");
        assert_eq!(
            svc.inner.reconciler.kernel().defended(),
            vec!["192.0.2.10 on eth0"],
            "defended once added"
        );
    }

    #[test]
    fn an_address_already_present_or_enabled_is_not_probed() {
        let mut a = actual();
        a.addresses.push(addr(2, "192.0.2.10/24"));
        let (_dir, svc) = service(Fake::new(a));
        // On the NIC already (put there by hand): no probe, nothing to add.
        block_on(svc.change(add("eth0", "192.0.2.10/24"), None, None)).unwrap();
        assert!(log(&svc).is_empty(), "present: not probed");
        // Enabled already: a change of something else probes only the new address.
        block_on(svc.change(add("eth0", "192.0.2.11/24"), None, None)).unwrap();
        assert_eq!(
            log(&svc),
            vec!["probe 192.0.2.11", "added 192.0.2.11/24 to eth0"]
        );
    }

    #[test]
    fn an_unknown_nic_is_refused_before_any_probe() {
        let (dir, svc) = service(Fake::new(actual()));
        let err = block_on(svc.change(add("eth9", "192.0.2.10/24"), None, None)).unwrap_err();
        assert!(
            matches!(
                err,
                ChangeError::Invalid(ValidationError::UnknownNic { .. })
            ),
            "{err}"
        );
        // The loopback NIC is no place for a configured address either.
        assert!(block_on(svc.change(add("lo", "192.0.2.10/24"), None, None)).is_err());
        assert!(log(&svc).is_empty());
        assert!(!dir.path().join(crate::config::FILE).exists());
    }

    #[test]
    fn inventory_routes_and_announce_go_through_the_kernel_seam() {
        let (_dir, svc) = service(Fake::new(actual()));
        let nics = block_on(svc.inventory()).unwrap();
        let eth0 = nics.iter().find(|n| n.name == "eth0").unwrap();
        assert!(eth0
            .addresses
            .iter()
            .any(|a| a.address == "169.254.1.1/24" && a.origin == "factory"));
        assert!(block_on(svc.routes()).unwrap().kernel.is_empty());
        block_on(svc.announce(&"eth0".parse().unwrap(), "192.0.2.10".parse().unwrap())).unwrap();
        assert_eq!(log(&svc), vec!["announce 192.0.2.10 on 2"]);
        assert!(matches!(
            block_on(svc.announce(&"eth9".parse().unwrap(), "192.0.2.10".parse().unwrap())),
            Err(NetError::NoSuchNic(_))
        ));
    }
}
