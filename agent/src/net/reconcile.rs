//! Bringing the kernel to the configured network state, and saying what could not be done.
//!
//! [`plan`] is pure: from the desired configuration and a snapshot of the kernel
//! ([`Actual`]) it computes an ordered list of [`Op`]s (links up, stale routes out, stale
//! addresses out, missing addresses in, missing routes in, host name, resolv.conf) and the
//! differences it already knows it cannot close (a NIC that is not there). [`Reconciler`]
//! carries a plan out through a [`Kernel`], the seam in front of netlink that unit tests
//! replace with a recording fake, and keeps the last [`ReconcileReport`].
//!
//! What the reconciler owns, and so repairs or removes:
//! - the NICs named in the configuration (admin state up, exactly the enabled addresses);
//! - routes in the main table tagged with [`ROUTE_PROTOCOL`] (its own);
//! - the host name and resolv.conf, once the configuration sets them.
//!
//! What it leaves alone: NICs the configuration does not name, the factory address
//! (169.254.1.0/24, owned by `factory_service`), addresses the kernel makes itself (IPv6
//! link-local and autoconfigured ones), and every route it did not install.
//!
//! Every IPv4 address goes through RFC 5227 conflict detection (a short ARP probe) before
//! it is added; one that another host answers for is not added, and is reported and tried
//! again no sooner than [`CONFLICT_RETRY`]. A NIC without carrier cannot be probed: its
//! IPv4 addresses wait for the link.

use super::netlink::Route;
use super::NetError;
use crate::model::netconfig::{IpCidr, NetworkConfig};
use crate::model::{unix_now, AddressConflict, Difference, ReconcileReport};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
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
}

/// Addresses the reconciler never removes from a NIC it manages.
pub fn kept(a: &AddressState) -> bool {
    match a.address.ip() {
        IpAddr::V4(v4) => super::factory::in_factory_range(v4),
        IpAddr::V6(v6) => crate::model::netconfig::is_link_local_v6(v6) || !a.permanent,
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
            if !wanted && !kept(p) {
                del_addresses.push(Op::DelAddress {
                    index: link.index,
                    nic: link.name.clone(),
                    address: p.address,
                });
            }
        }
        for want in iface.addresses.iter().filter(|a| a.enabled) {
            match present.iter().find(|p| p.address == want.address) {
                None => add_addresses.push(Op::AddAddress {
                    index: link.index,
                    nic: link.name.clone(),
                    address: want.address,
                }),
                Some(p) if p.dad_failed => unresolved.push(Difference::new(
                    format!("{} on {}", want.address, link.name),
                    "IPv6 duplicate address detection failed: another host on the link uses \
                     this address",
                )),
                Some(_) => {}
            }
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
    Plan { ops, unresolved }
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

/// The kernel as the reconciler sees it: a snapshot, the ops, and ARP probes.
pub trait Kernel: Send + Sync {
    fn snapshot(&self) -> impl Future<Output = Result<Actual, NetError>> + Send;
    /// Carries out one op (not the probe before an IPv4 address: see `probe_ipv4`).
    fn apply(&self, op: &Op) -> impl Future<Output = Result<(), NetError>> + Send;
    fn probe_ipv4(
        &self,
        index: u32,
        addr: Ipv4Addr,
    ) -> impl Future<Output = Result<ProbeOutcome, NetError>> + Send;
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

/// How many conflicts the history keeps.
const HISTORY: usize = 32;

/// Runs plans against a [`Kernel`], one at a time, and keeps the last report.
pub struct Reconciler<K> {
    kernel: K,
    state: tokio::sync::Mutex<State>,
    last: std::sync::Mutex<ReconcileReport>,
    history: std::sync::Mutex<std::collections::VecDeque<AddressConflict>>,
}

impl<K: Kernel> Reconciler<K> {
    pub fn new(kernel: K) -> Reconciler<K> {
        Reconciler {
            kernel,
            state: tokio::sync::Mutex::new(State::default()),
            last: std::sync::Mutex::new(ReconcileReport::default()),
            history: std::sync::Mutex::new(Default::default()),
        }
    }

    /// Every conflict seen (refused changes included), oldest first, at most 32.
    pub fn history(&self) -> Vec<AddressConflict> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn remember(&self, c: &AddressConflict) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(c.clone());
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
        let conflict = AddressConflict {
            nic: nic.to_string(),
            address: addr.to_string(),
            mac: super::arp::format_mac(&mac),
            unix_time: unix_now(),
        };
        tracing::warn!(nic, address = %addr, other_mac = %conflict.mac, "address conflict: change refused, another host uses this address");
        self.remember(&conflict);
        conflict
    }

    /// One pass: snapshot, plan, carry out, report.
    pub async fn reconcile(&self, network: &NetworkConfig) -> ReconcileReport {
        let mut st = self.state.lock().await;
        let actual = match self.kernel.snapshot().await {
            Ok(a) => a,
            Err(e) => {
                let report = ReconcileReport {
                    unix_time: unix_now(),
                    in_sync: false,
                    unresolved: vec![Difference::new("kernel state", e.to_string())],
                    ..Default::default()
                };
                tracing::error!(error = %e, "network: cannot read the kernel's state");
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) = report.clone();
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
        };
        let plan = plan(&desired, &actual);
        let mut applied = Vec::new();
        let mut unresolved = plan.unresolved;
        let now = Instant::now();
        st.cleared
            .retain(|_, t| now.duration_since(*t) < CLEARED_FOR);
        // Forget conflicts for addresses no longer wanted on that NIC.
        let wanted: Vec<(u32, Ipv4Addr)> = plan
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::AddAddress {
                    index, address: a, ..
                } => match a.ip() {
                    IpAddr::V4(v4) => Some((*index, v4)),
                    IpAddr::V6(_) => None,
                },
                _ => None,
            })
            .collect();
        st.conflicts.retain(|k, _| wanted.contains(k));

        for op in &plan.ops {
            if let Op::AddAddress {
                index,
                nic,
                address,
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
                        match self.kernel.probe_ipv4(*index, v4).await {
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
                                let conflict = AddressConflict {
                                    nic: nic.clone(),
                                    address: v4.to_string(),
                                    mac: super::arp::format_mac(&mac),
                                    unix_time: unix_now(),
                                };
                                tracing::warn!(nic = %nic, address = %v4, other_mac = %conflict.mac, "address conflict: not adding an address another host uses");
                                unresolved.push(Difference::new(
                                    format!("{address} on {nic}"),
                                    format!(
                                        "in use by {} on the segment (found by ARP probe)",
                                        conflict.mac
                                    ),
                                ));
                                self.remember(&conflict);
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
            match self.kernel.apply(op).await {
                Ok(()) => {
                    let what = op.describe();
                    tracing::info!(change = %what, "network: changed");
                    applied.push(what);
                    match op {
                        Op::SetHostname(h) => st.hostname_set = h != DEFAULT_HOSTNAME,
                        Op::WriteResolvConf(_) => st.dns_written = true,
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
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
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
    use std::sync::Mutex;

    fn cidr(s: &str) -> IpCidr {
        s.parse().unwrap()
    }

    fn link(index: u32, name: &str, up: bool) -> LinkState {
        LinkState {
            index,
            name: name.into(),
            up,
            running: up,
            loopback: name == "lo",
        }
    }

    fn addr(index: u32, a: &str) -> AddressState {
        AddressState {
            index,
            address: cidr(a),
            permanent: true,
            tentative: false,
            dad_failed: false,
        }
    }

    fn route(dst: &str, gw: &str, oif: u32, protocol: u8) -> Route {
        let d = cidr(dst);
        Route {
            destination: d.ip(),
            prefix: d.prefix(),
            gateway: Some(gw.parse().unwrap()),
            oif: Some(oif),
            protocol,
            priority: 0,
        }
    }

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
            hostname: None,
            resolv_conf: None,
        }
    }

    fn actual() -> Actual {
        Actual {
            links: vec![
                link(1, "lo", true),
                link(2, "eth0", true),
                link(3, "eth1", false),
            ],
            addresses: vec![
                addr(1, "127.0.0.1/8"),
                addr(2, "169.254.1.1/24"),
                AddressState {
                    permanent: true,
                    ..addr(2, "fe80::5054:ff:feb0:10/64")
                },
            ],
            routes: vec![],
            hostname: "appliance".into(),
            resolv_conf: None,
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
        assert_eq!(p, Plan::default());
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

    /// A kernel in memory: applies ops to its own state and records them.
    struct Fake {
        state: Mutex<Actual>,
        log: Mutex<Vec<String>>,
        taken: Vec<Ipv4Addr>,
    }

    impl Fake {
        fn new(actual: Actual) -> Fake {
            Fake {
                state: Mutex::new(actual),
                log: Mutex::new(vec![]),
                taken: vec![],
            }
        }
        fn log(&self) -> Vec<String> {
            std::mem::take(&mut *self.log.lock().unwrap())
        }
    }

    impl Kernel for Fake {
        async fn snapshot(&self) -> Result<Actual, NetError> {
            Ok(self.state.lock().unwrap().clone())
        }

        async fn apply(&self, op: &Op) -> Result<(), NetError> {
            self.log.lock().unwrap().push(op.describe());
            let mut s = self.state.lock().unwrap();
            match op {
                Op::LinkUp { index, .. } => {
                    for l in s.links.iter_mut().filter(|l| l.index == *index) {
                        l.up = true;
                        l.running = true;
                    }
                }
                Op::DelRoute(r) => s.routes.retain(|x| x != r),
                Op::DelAddress { index, address, .. } => s
                    .addresses
                    .retain(|a| !(a.index == *index && a.address == *address)),
                Op::AddAddress { index, address, .. } => {
                    s.addresses.push(addr(*index, &address.to_string()))
                }
                Op::AddRoute {
                    destination,
                    gateway,
                    index,
                    ..
                } => s.routes.push(route(
                    &destination.to_string(),
                    &gateway.to_string(),
                    *index,
                    ROUTE_PROTOCOL,
                )),
                Op::SetHostname(h) => s.hostname = h.clone(),
                Op::WriteResolvConf(t) => s.resolv_conf = Some(t.clone()),
            }
            Ok(())
        }

        async fn probe_ipv4(&self, index: u32, a: Ipv4Addr) -> Result<ProbeOutcome, NetError> {
            self.log.lock().unwrap().push(format!("probe {a}"));
            let s = self.state.lock().unwrap();
            if !s.links.iter().any(|l| l.index == index && l.running) {
                return Ok(ProbeOutcome::NoLink);
            }
            Ok(if self.taken.contains(&a) {
                ProbeOutcome::InUse {
                    mac: [0x52, 0x54, 0, 0xb0, 0, 1],
                }
            } else {
                ProbeOutcome::Free
            })
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
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
}
