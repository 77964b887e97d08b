//! Bringing the kernel to the configured network state, and saying what could not be done.
//!
//! [`plan`] is pure: from the desired configuration and a snapshot of the kernel
//! ([`Actual`]) it computes an ordered list of [`Op`]s (links up, stale routes out, stale
//! addresses out, missing addresses in, missing routes in, host name, resolv.conf) and the
//! differences it already knows it cannot close (a NIC that is not there). [`Reconciler`]
//! carries a plan out through a [`Kernel`], the seam in front of netlink that unit tests
//! replace with a recording fake, and keeps the last [`ReconcileReport`].
//!
//! Who owns an address decides what the reconciler does with it ([`owner`]), first rule
//! that matches:
//! 1. [`Owner::Overlay`]: the run-time [`AddressOverlay`] names it (the failover agent's
//!    shared addresses): added while held, removed while withheld, whatever the
//!    configuration says; on any NIC that is present, named in the configuration or not.
//! 2. [`Owner::Factory`]: 169.254.1.0/24, run by `factory_service`: left alone.
//! 3. [`Owner::Kernel`]: IPv6 link-local and autoconfigured addresses: left alone.
//! 4. [`Owner::Config`]: anything else on a NIC the configuration names: exactly the
//!    enabled addresses are kept, the rest removed.
//!
//! Besides addresses it owns the NICs named in the configuration (admin state up), routes
//! in the main table tagged with [`ROUTE_PROTOCOL`], and the host name and resolv.conf
//! once the configuration sets them. NICs the configuration does not name and every route
//! it did not install are left alone.
//!
//! Every configured IPv4 address goes through RFC 5227 conflict detection (a short ARP
//! probe) before it is added; one that another host answers for is not added, and is
//! reported and tried again no sooner than [`CONFLICT_RETRY`]. A NIC without carrier
//! cannot be probed: its IPv4 addresses wait for the link. A held overlay address is
//! probed only if its claim asks for it ([`Probe::First`]). Once on the NIC, configured
//! IPv4 addresses are defended (RFC 5227 §2.4, see [`super::defence`]): after each pass
//! the reconciler tells the kernel which ones ([`Kernel::defend`]); overlay addresses are
//! never among them.

use super::acd::ConflictKind;
use super::defence::Defended;
use super::netlink::{Link, Route};
use super::overlay::{AddressOverlay, Claim, OverlayHandle, Probe};
use super::NetError;
use crate::model::netconfig::{IpCidr, NetworkConfig};
pub use crate::model::AddressConflict;
use crate::model::{unix_now, Difference, ReconcileReport};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `rtm_protocol` of the routes the agent installs (`proto 200` in `ip route`), so it
/// knows its own routes from the kernel's and from anyone else's.
pub const ROUTE_PROTOCOL: u8 = 200;
/// The host name init gives the appliance; restored when a configured one is removed.
pub const DEFAULT_HOSTNAME: &str = "appliance";
/// How long an address found in use is left before it is probed again.
pub const CONFLICT_RETRY: Duration = Duration::from_secs(30);
/// How long a successful probe made just before a change stays good for the reconcile
/// that applies it (so the address is not probed twice).
const CLEARED_FOR: Duration = Duration::from_secs(10);

pub type Mac = [u8; 6];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub up: bool,
    /// Up with carrier.
    pub running: bool,
    pub loopback: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressState {
    pub index: u32,
    pub address: IpCidr,
    /// Configured by someone (not made by the kernel).
    pub permanent: bool,
    pub tentative: bool,
    pub dad_failed: bool,
}

/// What the kernel has now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actual {
    pub links: Vec<LinkState>,
    pub addresses: Vec<AddressState>,
    /// Unicast routes of the main table.
    pub routes: Vec<Route>,
    pub hostname: String,
    /// The resolv.conf text, `None` if the file is missing.
    pub resolv_conf: Option<String>,
}

/// What the kernel should have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub network: NetworkConfig,
    /// The host name to set; `None` leaves it alone.
    pub hostname: Option<String>,
    /// The resolv.conf text; `None` leaves the file alone.
    pub resolv_conf: Option<String>,
    /// What other parts of the agent hold or withhold at run time.
    pub overlay: AddressOverlay,
}

/// One change to the kernel, in the order a plan lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    LinkUp {
        index: u32,
        nic: String,
    },
    DelRoute(Route),
    DelAddress {
        index: u32,
        nic: String,
        address: IpCidr,
    },
    AddAddress {
        index: u32,
        nic: String,
        address: IpCidr,
        /// Probe (RFC 5227) before adding: every configured IPv4 address; a held overlay
        /// address only if its claim asks for it. IPv6 relies on the kernel's DAD.
        probe: bool,
        /// Add without the kernel's duplicate address detection (IPv6): the holder probed
        /// it already (a failover takeover), and DAD would keep it silent for a second.
        nodad: bool,
    },
    AddRoute {
        destination: IpCidr,
        gateway: IpAddr,
        index: u32,
        nic: String,
    },
    SetHostname(String),
    WriteResolvConf(String),
}

impl Op {
    /// What the op is about, for a report of one that failed.
    pub fn subject(&self) -> String {
        match self {
            Op::LinkUp { nic, .. } => format!("interface {nic}"),
            Op::DelRoute(r) => format!("route {}/{}", r.destination, r.prefix),
            Op::DelAddress { nic, address, .. } | Op::AddAddress { nic, address, .. } => {
                format!("{address} on {nic}")
            }
            Op::AddRoute {
                destination,
                gateway,
                ..
            } => format!("route {destination} via {gateway}"),
            Op::SetHostname(_) => "host name".into(),
            Op::WriteResolvConf(_) => "resolv.conf".into(),
        }
    }

    /// What the op does, for the log and the report.
    pub fn describe(&self) -> String {
        match self {
            Op::LinkUp { nic, .. } => format!("set {nic} up"),
            Op::DelRoute(r) => {
                let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
                format!("removed route {}/{}{via}", r.destination, r.prefix)
            }
            Op::DelAddress { nic, address, .. } => format!("removed {address} from {nic}"),
            Op::AddAddress { nic, address, .. } => format!("added {address} to {nic}"),
            Op::AddRoute {
                destination,
                gateway,
                nic,
                ..
            } => format!("added route {destination} via {gateway} dev {nic}"),
            Op::SetHostname(h) => format!("set the host name to {h}"),
            Op::WriteResolvConf(_) => "wrote resolv.conf".into(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub unresolved: Vec<Difference>,
    /// Configured IPv4 addresses to defend once they are on their NIC (present now or
    /// added by this plan); overlay and factory addresses are never listed.
    pub defend: Vec<Defended>,
}

/// Who decides about an address on a NIC (see the module doc for the rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The run-time overlay (the failover agent's shared addresses).
    Overlay,
    /// The factory address service (169.254.1.0/24).
    Factory,
    /// The kernel itself (IPv6 link-local and autoconfigured addresses).
    Kernel,
    /// The configuration.
    Config,
}

/// Who owns `a`, present on `nic`.
pub fn owner(nic: &str, a: &AddressState, overlay: &AddressOverlay) -> Owner {
    if overlay.covers(nic, &a.address) {
        return Owner::Overlay;
    }
    match a.address.ip() {
        IpAddr::V4(v4) if super::factory::in_factory_range(v4) => Owner::Factory,
        IpAddr::V6(v6) if crate::model::netconfig::is_link_local_v6(v6) || !a.permanent => {
            Owner::Kernel
        }
        _ => Owner::Config,
    }
}

struct WantedRoute {
    destination: IpCidr,
    gateway: IpAddr,
    index: u32,
    nic: String,
}

impl WantedRoute {
    fn matches(&self, r: &Route) -> bool {
        r.destination == self.destination.ip()
            && r.prefix == self.destination.prefix()
            && r.gateway == Some(self.gateway)
            && r.oif == Some(self.index)
    }
}

/// Desired vs actual → ordered operations. Pure: no I/O, no clock.
pub fn plan(desired: &Desired, actual: &Actual) -> Plan {
    let cfg = &desired.network;
    let mut links_up = Vec::new();
    let mut del_routes = Vec::new();
    let mut del_addresses = Vec::new();
    let mut add_addresses = Vec::new();
    let mut add_routes = Vec::new();
    let mut unresolved = Vec::new();

    let mut managed = Vec::new();
    for iface in &cfg.interfaces {
        match actual
            .links
            .iter()
            .find(|l| l.name == iface.name.as_str() && !l.loopback)
        {
            None => unresolved.push(Difference::new(
                format!("interface {}", iface.name),
                "not present on this appliance: its addresses are not configured",
            )),
            Some(link) => {
                if !link.up {
                    links_up.push(Op::LinkUp {
                        index: link.index,
                        nic: link.name.clone(),
                    });
                }
                managed.push((iface, link));
            }
        }
    }

    let overlay = &desired.overlay;
    let mut defend = Vec::new();
    for (iface, link) in &managed {
        let present: Vec<&AddressState> = actual
            .addresses
            .iter()
            .filter(|a| a.index == link.index)
            .collect();
        for p in &present {
            let wanted = iface
                .addresses
                .iter()
                .any(|a| a.enabled && a.address == p.address);
            if !wanted && owner(&link.name, p, overlay) == Owner::Config {
                del_addresses.push(Op::DelAddress {
                    index: link.index,
                    nic: link.name.clone(),
                    address: p.address,
                });
            }
        }
        for want in iface.addresses.iter().filter(|a| a.enabled) {
            if overlay.covers(&link.name, &want.address) {
                continue;
            }
            if let IpAddr::V4(v4) = want.address.ip() {
                if !super::factory::in_factory_range(v4) {
                    defend.push(Defended {
                        index: link.index,
                        nic: link.name.clone(),
                        address: v4,
                    });
                }
            }
            match present.iter().find(|p| p.address == want.address) {
                None => add_addresses.push(Op::AddAddress {
                    index: link.index,
                    nic: link.name.clone(),
                    address: want.address,
                    probe: want.address.ip().is_ipv4(),
                    nodad: false,
                }),
                Some(p) if p.dad_failed => unresolved.push(dad_failed(&want.address, &link.name)),
                Some(_) => {}
            }
        }
    }

    for (nic, address, claim) in overlay.iter() {
        let Some(link) = actual
            .links
            .iter()
            .find(|l| l.name == nic.as_str() && !l.loopback)
        else {
            if matches!(claim, Claim::Held { .. }) {
                unresolved.push(Difference::new(
                    format!("{address} on {nic}"),
                    "held at run time, but the interface is not present",
                ));
            }
            continue;
        };
        let present = actual
            .addresses
            .iter()
            .find(|a| a.index == link.index && a.address == *address);
        match (claim, present) {
            (Claim::Held { probe }, None) => add_addresses.push(Op::AddAddress {
                index: link.index,
                nic: link.name.clone(),
                address: *address,
                probe: probe == Probe::First && address.ip().is_ipv4(),
                nodad: probe == Probe::Skip && address.ip().is_ipv6(),
            }),
            (Claim::Held { .. }, Some(p)) if p.dad_failed => {
                unresolved.push(dad_failed(address, &link.name))
            }
            (Claim::Withheld, Some(_)) => del_addresses.push(Op::DelAddress {
                index: link.index,
                nic: link.name.clone(),
                address: *address,
            }),
            _ => {}
        }
    }

    let mut wanted_routes = Vec::new();
    for r in cfg.all_routes() {
        let link = cfg
            .nic_for_gateway(r.gateway)
            .and_then(|nic| managed.iter().find(|(i, _)| &i.name == nic))
            .map(|(_, l)| *l);
        match link {
            Some(l) => wanted_routes.push(WantedRoute {
                destination: r.destination,
                gateway: r.gateway,
                index: l.index,
                nic: l.name.clone(),
            }),
            None => unresolved.push(Difference::new(
                format!("route {} via {}", r.destination, r.gateway),
                "no NIC that is present has an enabled subnet holding the gateway",
            )),
        }
    }
    let ours: Vec<&Route> = actual
        .routes
        .iter()
        .filter(|r| r.protocol == ROUTE_PROTOCOL)
        .collect();
    for r in &ours {
        if !wanted_routes.iter().any(|w| w.matches(r)) {
            del_routes.push(Op::DelRoute((*r).clone()));
        }
    }
    for w in wanted_routes {
        if !ours.iter().any(|r| w.matches(r)) {
            add_routes.push(Op::AddRoute {
                destination: w.destination,
                gateway: w.gateway,
                index: w.index,
                nic: w.nic,
            });
        }
    }

    let mut ops = links_up;
    ops.extend(del_routes);
    ops.extend(del_addresses);
    ops.extend(add_addresses);
    ops.extend(add_routes);
    if let Some(h) = &desired.hostname {
        if *h != actual.hostname {
            ops.push(Op::SetHostname(h.clone()));
        }
    }
    if let Some(text) = &desired.resolv_conf {
        if actual.resolv_conf.as_deref() != Some(text.as_str()) {
            ops.push(Op::WriteResolvConf(text.clone()));
        }
    }
    Plan {
        ops,
        unresolved,
        defend,
    }
}

fn dad_failed(address: &IpCidr, nic: &str) -> Difference {
    Difference::new(
        format!("{address} on {nic}"),
        "IPv6 duplicate address detection failed: another host on the link uses this address",
    )
}

/// The answer to an ARP probe for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Nobody answered: the address may be used.
    Free,
    /// Another host has it.
    InUse { mac: Mac },
    /// The NIC has no carrier: nothing can be probed.
    NoLink,
}

/// The kernel as the network service sees it: snapshots, the ops, ARP probes and
/// announcements, and the set of addresses to defend.
pub trait Kernel: Send + Sync + 'static {
    fn snapshot(&self) -> impl Future<Output = Result<Actual, NetError>> + Send;
    /// Every link with its hardware facts (MAC, MTU, kind), for the inventory.
    fn links(&self) -> impl Future<Output = Result<Vec<Link>, NetError>> + Send;
    /// Carries out one op (not the probe before an IPv4 address: see `probe_ipv4`).
    fn apply(&self, op: &Op) -> impl Future<Output = Result<(), NetError>> + Send;
    fn probe_ipv4(
        &self,
        index: u32,
        addr: Ipv4Addr,
        timing: super::acd::Timing,
    ) -> impl Future<Output = Result<ProbeOutcome, NetError>> + Send;
    /// Asks the link whether another host has `addr` (neighbour solicitations, as DAD
    /// does), before the address is added without the kernel's own DAD.
    fn probe_ipv6(
        &self,
        index: u32,
        addr: std::net::Ipv6Addr,
    ) -> impl Future<Output = Result<ProbeOutcome, NetError>> + Send;
    /// Tells the neighbours that `address` is on interface `index` now (gratuitous ARP,
    /// or an unsolicited neighbour advertisement once DAD is done).
    fn announce(
        &self,
        index: u32,
        address: IpAddr,
    ) -> impl Future<Output = Result<(), NetError>> + Send;
    /// From now on, defend exactly these addresses against other hosts' claims.
    fn defend(&self, addresses: &[Defended]);
}

impl AddressConflict {
    pub fn new(nic: &str, address: Ipv4Addr, mac: &Mac, kind: ConflictKind) -> AddressConflict {
        AddressConflict {
            nic: nic.to_string(),
            address: address.to_string(),
            mac: super::arp::format_mac(mac),
            unix_time: unix_now(),
            kind,
        }
    }
}

/// How many conflicts the history keeps.
const HISTORY: usize = 32;

/// Every conflict seen, oldest first, at most 32; shared by the reconciler and the
/// defence of addresses it added.
#[derive(Clone, Default)]
pub struct ConflictHistory(Arc<std::sync::Mutex<VecDeque<AddressConflict>>>);

impl ConflictHistory {
    pub fn record(&self, c: &AddressConflict) {
        let mut h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(c.clone());
    }

    pub fn list(&self) -> Vec<AddressConflict> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

#[derive(Default)]
struct State {
    /// The host name was set by us at least once (so removing it restores the default).
    hostname_set: bool,
    /// resolv.conf was written by us at least once (so emptying DNS rewrites it).
    dns_written: bool,
    conflicts: HashMap<(u32, Ipv4Addr), (Instant, AddressConflict)>,
    cleared: HashMap<(u32, Ipv4Addr), Instant>,
}

/// Runs plans against a [`Kernel`], one at a time, and keeps the last report.
pub struct Reconciler<K> {
    kernel: K,
    state: tokio::sync::Mutex<State>,
    last: std::sync::Mutex<ReconcileReport>,
    history: ConflictHistory,
    overlay: OverlayHandle,
}

impl<K: Kernel> Reconciler<K> {
    pub fn new(kernel: K) -> Reconciler<K> {
        Reconciler::with_history(kernel, ConflictHistory::default())
    }

    /// A reconciler whose conflict history is shared with `kernel`'s defence.
    pub fn with_history(kernel: K, history: ConflictHistory) -> Reconciler<K> {
        Reconciler {
            kernel,
            state: tokio::sync::Mutex::new(State::default()),
            last: std::sync::Mutex::new(ReconcileReport::default()),
            history,
            overlay: OverlayHandle::new(),
        }
    }

    /// The same reconciler with `overlay` as its run-time claims.
    pub fn with_overlay(mut self, overlay: OverlayHandle) -> Reconciler<K> {
        self.overlay = overlay;
        self
    }

    /// Every conflict seen (refused changes and defences included), oldest first, at
    /// most 32.
    pub fn history(&self) -> Vec<AddressConflict> {
        self.history.list()
    }

    fn remember(&self, c: &AddressConflict) {
        self.history.record(c);
    }

    /// The run-time overlay every pass takes into account.
    pub fn overlay(&self) -> &OverlayHandle {
        &self.overlay
    }

    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    pub fn last(&self) -> ReconcileReport {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// An address probed free just now: the next reconcile adds it without probing again.
    pub async fn mark_cleared(&self, index: u32, addr: Ipv4Addr) {
        let mut st = self.state.lock().await;
        st.conflicts.remove(&(index, addr));
        st.cleared.insert((index, addr), Instant::now());
    }

    /// Records, in the history, that another host answered for `addr` on `nic` when a
    /// change wanted it (the change was refused).
    pub fn record_refused(&self, nic: &str, addr: Ipv4Addr, mac: Mac) -> AddressConflict {
        let conflict = AddressConflict::new(nic, addr, &mac, ConflictKind::InUse);
        tracing::warn!(nic, address = %addr, other_mac = %conflict.mac, "address conflict: change refused, another host uses this address");
        self.remember(&conflict);
        conflict
    }

    /// One pass: snapshot, plan, carry out, report.
    pub async fn reconcile(&self, network: &NetworkConfig) -> ReconcileReport {
        self.turn().await.reconcile(network).await
    }

    /// The reconciler to oneself: no other pass runs until the [`Turn`] is dropped. A
    /// change takes its turn before it writes the settings, so that its own pass (and its
    /// report) is the one that applies it.
    pub async fn turn(&self) -> Turn<'_, K> {
        Turn {
            reconciler: self,
            state: self.state.lock().await,
        }
    }
}

/// One caller's exclusive use of a [`Reconciler`].
pub struct Turn<'a, K> {
    reconciler: &'a Reconciler<K>,
    state: tokio::sync::MutexGuard<'a, State>,
}

impl<K: Kernel> Turn<'_, K> {
    /// One pass: snapshot, plan, carry out, report.
    pub async fn reconcile(&mut self, network: &NetworkConfig) -> ReconcileReport {
        let this = self.reconciler;
        let st = &mut *self.state;
        let actual = match this.kernel.snapshot().await {
            Ok(a) => a,
            Err(e) => {
                let report = ReconcileReport {
                    unix_time: unix_now(),
                    in_sync: false,
                    unresolved: vec![Difference::new("kernel state", e.to_string())],
                    ..Default::default()
                };
                tracing::error!(error = %e, "network: cannot read the kernel's state");
                *this.last.lock().unwrap_or_else(|p| p.into_inner()) = report.clone();
                return report;
            }
        };
        let desired = Desired {
            network: network.clone(),
            hostname: match &network.hostname {
                Some(h) => Some(h.to_string()),
                None if st.hostname_set => Some(DEFAULT_HOSTNAME.to_string()),
                None => None,
            },
            resolv_conf: (!network.dns.is_empty() || st.dns_written)
                .then(|| network.dns.resolv_conf()),
            overlay: this.overlay.current(),
        };
        let Plan {
            ops,
            mut unresolved,
            defend,
        } = plan(&desired, &actual);
        let mut applied = Vec::new();
        let mut added = Vec::new();
        let now = Instant::now();
        st.cleared
            .retain(|_, t| now.duration_since(*t) < CLEARED_FOR);
        // Forget conflicts for addresses no longer wanted on that NIC.
        let wanted: Vec<(u32, Ipv4Addr)> = ops
            .iter()
            .filter_map(|op| match op {
                Op::AddAddress {
                    index,
                    address: a,
                    probe: true,
                    ..
                } => match a.ip() {
                    IpAddr::V4(v4) => Some((*index, v4)),
                    IpAddr::V6(_) => None,
                },
                _ => None,
            })
            .collect();
        st.conflicts.retain(|k, _| wanted.contains(k));

        for op in &ops {
            if let Op::AddAddress {
                index,
                nic,
                address,
                probe: true,
                ..
            } = op
            {
                if let IpAddr::V4(v4) = address.ip() {
                    let key = (*index, v4);
                    if let Some((at, c)) = st.conflicts.get(&key) {
                        if now.duration_since(*at) < CONFLICT_RETRY {
                            unresolved.push(Difference::new(
                                format!("{address} on {nic}"),
                                format!(
                                    "in use by {} on the segment (found by ARP probe); probed \
                                     again every {} s",
                                    c.mac,
                                    CONFLICT_RETRY.as_secs()
                                ),
                            ));
                            continue;
                        }
                    }
                    // A probe made just before the change counts once.
                    if st.cleared.remove(&key).is_none() {
                        match this
                            .kernel
                            .probe_ipv4(*index, v4, super::acd::Timing::FAST)
                            .await
                        {
                            Ok(ProbeOutcome::Free) => {
                                st.conflicts.remove(&key);
                            }
                            Ok(ProbeOutcome::NoLink) => {
                                unresolved.push(Difference::new(
                                    format!("{address} on {nic}"),
                                    "waiting for link: conflict detection needs carrier",
                                ));
                                continue;
                            }
                            Ok(ProbeOutcome::InUse { mac }) => {
                                let conflict =
                                    AddressConflict::new(nic, v4, &mac, ConflictKind::InUse);
                                tracing::warn!(nic = %nic, address = %v4, other_mac = %conflict.mac, "address conflict: not adding an address another host uses");
                                unresolved.push(Difference::new(
                                    format!("{address} on {nic}"),
                                    format!(
                                        "in use by {} on the segment (found by ARP probe)",
                                        conflict.mac
                                    ),
                                ));
                                this.remember(&conflict);
                                st.conflicts.insert(key, (now, conflict));
                                continue;
                            }
                            Err(e) => {
                                unresolved.push(Difference::new(
                                    format!("{address} on {nic}"),
                                    format!("conflict detection failed: {e}"),
                                ));
                                continue;
                            }
                        }
                    }
                }
            }
            match this.kernel.apply(op).await {
                Ok(()) => {
                    let what = op.describe();
                    tracing::info!(change = %what, "network: changed");
                    applied.push(what);
                    match op {
                        Op::SetHostname(h) => st.hostname_set = h != DEFAULT_HOSTNAME,
                        Op::WriteResolvConf(_) => st.dns_written = true,
                        Op::AddAddress { index, address, .. } => added.push((*index, *address)),
                        _ => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(op = %op.describe(), error = %e, "network: change failed");
                    unresolved.push(Difference::new(op.subject(), e.to_string()));
                }
            }
        }
        if network.hostname.is_some() {
            st.hostname_set = true;
        }
        // Defend what is on its NIC now: there before this pass, or added by it.
        let defended: Vec<Defended> = defend
            .into_iter()
            .filter(|d| {
                let a = IpAddr::V4(d.address);
                added.iter().any(|(i, x)| *i == d.index && x.ip() == a)
                    || actual
                        .addresses
                        .iter()
                        .any(|x| x.index == d.index && x.address.ip() == a)
            })
            .collect();
        this.kernel.defend(&defended);
        let mut conflicts: Vec<AddressConflict> =
            st.conflicts.values().map(|(_, c)| c.clone()).collect();
        conflicts.sort_by(|a, b| (&a.nic, &a.address).cmp(&(&b.nic, &b.address)));
        let report = ReconcileReport {
            unix_time: unix_now(),
            in_sync: unresolved.is_empty(),
            applied,
            unresolved,
            conflicts,
        };
        let mut last = this.last.lock().unwrap_or_else(|p| p.into_inner());
        if report.unresolved != last.unresolved {
            for d in &report.unresolved {
                tracing::warn!(subject = %d.subject, reason = %d.reason, "network: difference not closed");
            }
        }
        *last = report.clone();
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::netconfig::{AddressConfig, InterfaceConfig, RouteConfig};
    use crate::net::fake::{actual, addr, block_on, cidr, route, Fake, OTHER_MAC};

    fn config(addresses: &[(&str, &str, bool)]) -> NetworkConfig {
        let mut cfg = NetworkConfig::default();
        for (nic, a, enabled) in addresses {
            let name = nic.parse().unwrap();
            if cfg.interface(&name).is_none() {
                cfg.interfaces.push(InterfaceConfig {
                    name: name.clone(),
                    addresses: vec![],
                });
            }
            let i = cfg.interfaces.iter().position(|i| i.name == name).unwrap();
            cfg.interfaces[i].addresses.push(AddressConfig {
                address: cidr(a),
                enabled: *enabled,
            });
        }
        cfg
    }

    fn desired(network: NetworkConfig) -> Desired {
        Desired {
            network,
            ..Default::default()
        }
    }

    #[test]
    fn an_empty_configuration_changes_nothing() {
        let mut a = actual();
        a.addresses.push(addr(3, "192.0.2.99/24"));
        a.routes.push(route("0.0.0.0/0", "192.0.2.1", 3, 3));
        assert_eq!(
            plan(&desired(NetworkConfig::default()), &a),
            Plan::default()
        );
    }

    #[test]
    fn a_full_plan_is_ordered_links_routes_out_addresses_out_addresses_in_routes_in() {
        let mut cfg = config(&[
            ("eth0", "192.0.2.10/24", true),
            ("eth0", "2001:db8::10/64", true),
            ("eth0", "192.0.2.11/24", false),
            ("eth1", "198.51.100.10/24", true),
        ]);
        cfg.gateways.ipv4 = Some("192.0.2.1".parse().unwrap());
        cfg.gateways.ipv6 = Some("2001:db8::1".parse().unwrap());
        cfg.routes.push(RouteConfig {
            destination: cidr("203.0.113.0/24"),
            gateway: "198.51.100.1".parse().unwrap(),
        });
        cfg.validate().unwrap();
        let mut a = actual();
        // A disabled address someone left on, an unexpected one, and a stale route of ours.
        a.addresses.push(addr(2, "192.0.2.11/24"));
        a.addresses.push(addr(2, "192.0.2.99/24"));
        a.routes
            .push(route("10.9.0.0/16", "192.0.2.1", 2, ROUTE_PROTOCOL));
        // Someone else's route: not ours to touch.
        a.routes.push(route("10.8.0.0/16", "192.0.2.1", 2, 3));
        let d = Desired {
            network: cfg,
            hostname: Some("fw-1".into()),
            resolv_conf: Some("nameserver 192.0.2.53\n".into()),
            ..Default::default()
        };
        let p = plan(&d, &a);
        assert!(p.unresolved.is_empty(), "{:?}", p.unresolved);
        let described: Vec<String> = p.ops.iter().map(Op::describe).collect();
        assert_eq!(
            described,
            vec![
                "set eth1 up",
                "removed route 10.9.0.0/16 via 192.0.2.1",
                "removed 192.0.2.11/24 from eth0",
                "removed 192.0.2.99/24 from eth0",
                "added 192.0.2.10/24 to eth0",
                "added 2001:db8::10/64 to eth0",
                "added 198.51.100.10/24 to eth1",
                "added route 203.0.113.0/24 via 198.51.100.1 dev eth1",
                "added route 0.0.0.0/0 via 192.0.2.1 dev eth0",
                "added route ::/0 via 2001:db8::1 dev eth0",
                "set the host name to fw-1",
                "wrote resolv.conf",
            ]
        );
    }

    #[test]
    fn factory_link_local_and_autoconfigured_addresses_are_kept() {
        let cfg = config(&[("eth0", "192.0.2.10/24", true)]);
        let mut a = actual();
        a.addresses.push(addr(2, "192.0.2.10/24"));
        a.addresses.push(AddressState {
            permanent: false,
            ..addr(2, "2001:db8:0:9::abcd/64")
        });
        let p = plan(&desired(cfg), &a);
        assert!(p.ops.is_empty() && p.unresolved.is_empty(), "{p:?}");
        assert_eq!(
            p.defend,
            vec![Defended {
                index: 2,
                nic: "eth0".into(),
                address: "192.0.2.10".parse().unwrap()
            }],
            "a configured IPv4 address is defended; factory and kernel ones are not"
        );
    }

    #[test]
    fn unmanaged_nics_are_left_alone_and_missing_ones_reported() {
        let cfg = config(&[("eth7", "192.0.2.10/24", true)]);
        let mut a = actual();
        a.addresses.push(addr(3, "203.0.113.5/24"));
        let p = plan(&desired(cfg), &a);
        assert!(p.ops.is_empty(), "{:?}", p.ops);
        assert_eq!(p.unresolved.len(), 1);
        assert_eq!(p.unresolved[0].subject, "interface eth7");
    }

    #[test]
    fn a_changed_prefix_replaces_the_address_and_a_changed_gateway_the_route() {
        let mut cfg = config(&[("eth0", "192.0.2.10/25", true)]);
        cfg.gateways.ipv4 = Some("192.0.2.2".parse().unwrap());
        let mut a = actual();
        a.addresses.push(addr(2, "192.0.2.10/24"));
        a.routes
            .push(route("0.0.0.0/0", "192.0.2.1", 2, ROUTE_PROTOCOL));
        let p = plan(&desired(cfg), &a);
        let described: Vec<String> = p.ops.iter().map(Op::describe).collect();
        assert_eq!(
            described,
            vec![
                "removed route 0.0.0.0/0 via 192.0.2.1",
                "removed 192.0.2.10/24 from eth0",
                "added 192.0.2.10/25 to eth0",
                "added route 0.0.0.0/0 via 192.0.2.2 dev eth0",
            ]
        );
    }

    #[test]
    fn dad_failures_are_reported_not_retried() {
        let cfg = config(&[("eth0", "2001:db8::10/64", true)]);
        let mut a = actual();
        a.addresses.push(AddressState {
            dad_failed: true,
            ..addr(2, "2001:db8::10/64")
        });
        let p = plan(&desired(cfg), &a);
        assert!(p.ops.is_empty());
        assert!(p.unresolved[0]
            .reason
            .contains("duplicate address detection"));
    }

    #[test]
    fn reconciling_converges_and_a_second_pass_does_nothing() {
        let mut cfg = config(&[
            ("eth0", "192.0.2.10/24", true),
            ("eth0", "2001:db8::10/64", true),
        ]);
        cfg.gateways.ipv4 = Some("192.0.2.1".parse().unwrap());
        cfg.hostname = Some("fw-1".parse().unwrap());
        cfg.dns.servers = vec!["192.0.2.53".parse().unwrap()];
        let r = Reconciler::new(Fake::new(actual()));
        let report = block_on(r.reconcile(&cfg));
        assert!(report.in_sync, "{report:?}");
        assert_eq!(
            r.kernel().log(),
            vec![
                "probe 192.0.2.10",
                "added 192.0.2.10/24 to eth0",
                "added 2001:db8::10/64 to eth0",
                "added route 0.0.0.0/0 via 192.0.2.1 dev eth0",
                "set the host name to fw-1",
                "wrote resolv.conf",
            ],
            "IPv4 is probed before it is added; IPv6 relies on the kernel's DAD"
        );
        let again = block_on(r.reconcile(&cfg));
        assert!(again.in_sync && again.applied.is_empty(), "{again:?}");
        assert!(r.kernel().log().is_empty());

        // Someone deletes the address: it is probed and put back, and so is the route.
        {
            let mut s = r.kernel().state.lock().unwrap();
            s.addresses.retain(|a| a.address != cidr("192.0.2.10/24"));
            s.routes.clear();
        }
        let repaired = block_on(r.reconcile(&cfg));
        assert_eq!(
            repaired.applied,
            vec![
                "added 192.0.2.10/24 to eth0",
                "added route 0.0.0.0/0 via 192.0.2.1 dev eth0"
            ]
        );

        // Removing hostname and DNS from the configuration restores the defaults.
        let mut cleared = cfg.clone();
        cleared.hostname = None;
        cleared.dns = Default::default();
        let report = block_on(r.reconcile(&cleared));
        assert_eq!(
            report.applied,
            vec!["set the host name to appliance", "wrote resolv.conf"]
        );
        let s = r.kernel().state.lock().unwrap().clone();
        assert_eq!(s.hostname, "appliance");
        assert!(!s.resolv_conf.unwrap().contains("nameserver"));
    }

    #[test]
    fn an_address_in_use_is_not_added_and_is_reported() {
        let cfg = config(&[
            ("eth0", "192.0.2.77/24", true),
            ("eth0", "192.0.2.78/24", true),
        ]);
        let mut fake = Fake::new(actual());
        fake.taken = vec!["192.0.2.77".parse().unwrap()];
        let r = Reconciler::new(fake);
        let report = block_on(r.reconcile(&cfg));
        assert!(!report.in_sync);
        assert_eq!(report.applied, vec!["added 192.0.2.78/24 to eth0"]);
        assert_eq!(report.unresolved.len(), 1);
        assert!(report.unresolved[0].reason.contains("52:54:00:b0:00:01"));
        assert_eq!(report.conflicts.len(), 1);
        assert_eq!(report.conflicts[0].address, "192.0.2.77");
        r.kernel().log();
        // Within the retry interval it is not probed again, but still reported.
        let again = block_on(r.reconcile(&cfg));
        assert!(r.kernel().log().is_empty(), "no probe storm");
        assert_eq!(again.unresolved.len(), 1);
        // Once it is no longer wanted, the conflict is forgotten.
        let gone = block_on(r.reconcile(&config(&[("eth0", "192.0.2.78/24", true)])));
        assert!(gone.in_sync && gone.conflicts.is_empty(), "{gone:?}");
    }

    #[test]
    fn without_carrier_ipv4_waits_and_a_cleared_address_is_not_probed_twice() {
        let cfg = config(&[("eth1", "198.51.100.10/24", true)]);
        let mut a = actual();
        a.links[2].up = true; // admin up, no carrier
        let r = Reconciler::new(Fake::new(a));
        let report = block_on(r.reconcile(&cfg));
        assert!(report.unresolved[0].reason.contains("waiting for link"));
        r.kernel().state.lock().unwrap().links[2].running = true;
        r.kernel().log();
        block_on(r.mark_cleared(3, "198.51.100.10".parse().unwrap()));
        let report = block_on(r.reconcile(&cfg));
        assert!(report.in_sync);
        assert_eq!(r.kernel().log(), vec!["added 198.51.100.10/24 to eth1"]);
    }

    fn nic(n: &str) -> crate::model::netconfig::NicName {
        n.parse().unwrap()
    }

    fn with_overlay(cfg: NetworkConfig, overlay: &OverlayHandle) -> Desired {
        Desired {
            overlay: overlay.current(),
            ..desired(cfg)
        }
    }

    #[test]
    fn a_held_ipv6_address_that_was_probed_skips_the_kernels_dad() {
        let o = OverlayHandle::new();
        o.hold(nic("eth0"), cidr("2001:db8::100/64"), Probe::Skip);
        o.hold(nic("eth1"), cidr("2001:db8:1::100/64"), Probe::First);
        let p = plan(&with_overlay(NetworkConfig::default(), &o), &actual());
        let nodad: Vec<(String, bool)> = p
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::AddAddress { address, nodad, .. } => Some((address.to_string(), *nodad)),
                _ => None,
            })
            .collect();
        assert_eq!(
            nodad,
            vec![
                ("2001:db8::100/64".to_string(), true),
                ("2001:db8:1::100/64".to_string(), false)
            ]
        );
    }

    #[test]
    fn ownership_is_overlay_then_factory_then_kernel_then_config() {
        let o = OverlayHandle::new();
        o.hold(nic("eth0"), cidr("169.254.1.1/24"), Probe::Skip);
        let ov = o.current();
        assert_eq!(
            owner("eth0", &addr(2, "169.254.1.1/24"), &ov),
            Owner::Overlay
        );
        assert_eq!(
            owner("eth1", &addr(3, "169.254.1.1/24"), &ov),
            Owner::Factory
        );
        assert_eq!(owner("eth0", &addr(2, "fe80::1/64"), &ov), Owner::Kernel);
        let autoconf = AddressState {
            permanent: false,
            ..addr(2, "2001:db8::abcd/64")
        };
        assert_eq!(owner("eth0", &autoconf, &ov), Owner::Kernel);
        assert_eq!(owner("eth0", &addr(2, "192.0.2.10/24"), &ov), Owner::Config);
        assert_eq!(
            owner("eth0", &addr(2, "2001:db8::10/64"), &ov),
            Owner::Config
        );
    }

    #[test]
    fn a_held_address_is_added_even_if_disabled_and_never_defended() {
        let cfg = config(&[
            ("eth0", "192.0.2.10/24", true),
            ("eth0", "192.0.2.100/24", false),
        ]);
        let o = OverlayHandle::new();
        o.hold(nic("eth0"), cidr("192.0.2.100/24"), Probe::Skip);
        // On a NIC the configuration does not name, too, probed first if asked.
        o.hold(nic("eth1"), cidr("198.51.100.100/24"), Probe::First);
        let p = plan(&with_overlay(cfg.clone(), &o), &actual());
        assert_eq!(
            p.ops,
            vec![
                Op::AddAddress {
                    index: 2,
                    nic: "eth0".into(),
                    address: cidr("192.0.2.10/24"),
                    probe: true,
                    nodad: false,
                },
                Op::AddAddress {
                    index: 2,
                    nic: "eth0".into(),
                    address: cidr("192.0.2.100/24"),
                    probe: false,
                    nodad: false,
                },
                Op::AddAddress {
                    index: 3,
                    nic: "eth1".into(),
                    address: cidr("198.51.100.100/24"),
                    probe: true,
                    nodad: false,
                },
            ]
        );
        let defended: Vec<Ipv4Addr> = p.defend.iter().map(|d| d.address).collect();
        assert_eq!(defended, vec!["192.0.2.10".parse::<Ipv4Addr>().unwrap()]);

        // Present and held: kept although the configuration has it disabled.
        let mut a = actual();
        a.addresses.push(addr(2, "192.0.2.10/24"));
        a.addresses.push(addr(2, "192.0.2.100/24"));
        a.addresses.push(addr(3, "198.51.100.100/24"));
        let p = plan(&with_overlay(cfg.clone(), &o), &a);
        assert!(p.ops.is_empty(), "{:?}", p.ops);

        // Released: the configuration decides again, and it says disabled.
        o.release(nic("eth0"), cidr("192.0.2.100/24"));
        o.release(nic("eth1"), cidr("198.51.100.100/24"));
        let p = plan(&with_overlay(cfg, &o), &a);
        let described: Vec<String> = p.ops.iter().map(Op::describe).collect();
        assert_eq!(
            described,
            vec!["removed 192.0.2.100/24 from eth0"],
            "eth1 is not managed: an address left there is not the reconciler's"
        );
    }

    #[test]
    fn a_withheld_address_is_removed_and_not_added_even_if_enabled() {
        let cfg = config(&[
            ("eth0", "192.0.2.10/24", true),
            ("eth0", "192.0.2.100/24", true),
        ]);
        let o = OverlayHandle::new();
        o.withhold(nic("eth0"), cidr("192.0.2.100/24"));
        let p = plan(&with_overlay(cfg.clone(), &o), &actual());
        let described: Vec<String> = p.ops.iter().map(Op::describe).collect();
        assert_eq!(described, vec!["added 192.0.2.10/24 to eth0"]);
        assert_eq!(p.defend.len(), 1, "the withheld one is not defended");
        let mut a = actual();
        a.addresses.push(addr(2, "192.0.2.10/24"));
        a.addresses.push(addr(2, "192.0.2.100/24"));
        let p = plan(&with_overlay(cfg, &o), &a);
        let described: Vec<String> = p.ops.iter().map(Op::describe).collect();
        assert_eq!(described, vec!["removed 192.0.2.100/24 from eth0"]);
    }

    #[test]
    fn a_held_address_on_a_missing_nic_is_reported() {
        let o = OverlayHandle::new();
        o.hold(nic("eth7"), cidr("192.0.2.100/24"), Probe::Skip);
        o.withhold(nic("eth8"), cidr("192.0.2.101/24"));
        let p = plan(&with_overlay(NetworkConfig::default(), &o), &actual());
        assert!(p.ops.is_empty());
        assert_eq!(p.unresolved.len(), 1, "{:?}", p.unresolved);
        assert_eq!(p.unresolved[0].subject, "192.0.2.100/24 on eth7");
    }

    #[test]
    fn a_takeover_is_added_without_a_probe_and_configured_addresses_are_defended() {
        let cfg = config(&[("eth0", "192.0.2.10/24", true)]);
        let r = Reconciler::new(Fake::new(actual()));
        r.overlay()
            .hold(nic("eth0"), cidr("192.0.2.100/24"), Probe::Skip);
        let report = block_on(r.reconcile(&cfg));
        assert!(report.in_sync, "{report:?}");
        assert_eq!(
            r.kernel().log(),
            vec![
                "probe 192.0.2.10",
                "added 192.0.2.10/24 to eth0",
                "added 192.0.2.100/24 to eth0",
            ],
            "the held address is not probed: the takeover did its own checks"
        );
        assert_eq!(r.kernel().defended(), vec!["192.0.2.10 on eth0"]);

        // Withheld: removed, and still not defended.
        r.overlay().withhold(nic("eth0"), cidr("192.0.2.100/24"));
        let report = block_on(r.reconcile(&cfg));
        assert_eq!(report.applied, vec!["removed 192.0.2.100/24 from eth0"]);
        assert_eq!(r.kernel().defended(), vec!["192.0.2.10 on eth0"]);
    }

    #[test]
    fn an_address_found_in_use_is_not_defended() {
        let cfg = config(&[("eth0", "192.0.2.77/24", true)]);
        let mut fake = Fake::new(actual());
        fake.taken = vec!["192.0.2.77".parse().unwrap()];
        let r = Reconciler::new(fake);
        let report = block_on(r.reconcile(&cfg));
        assert_eq!(report.conflicts[0].kind, "in-use");
        assert_eq!(
            report.conflicts[0].mac,
            crate::net::arp::format_mac(&OTHER_MAC)
        );
        assert!(r.kernel().defended().is_empty());
    }

    #[test]
    fn a_conflict_without_a_kind_reads_as_in_use() {
        let c: AddressConflict = serde_json::from_str(
            r#"{"nic": "eth0", "address": "192.0.2.1", "mac": "52:54:00:00:00:01", "unix_time": 1}"#,
        )
        .unwrap();
        assert_eq!(c.kind, "in-use");
    }
}
