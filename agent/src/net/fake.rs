//! A kernel in memory for unit tests: applies ops to its own state and records every
//! op, probe and announcement, and the last set of defended addresses.

use super::defence::Defended;
use super::netlink::{Link, Route};
use super::reconcile::{Actual, AddressState, Kernel, LinkState, Op, ProbeOutcome, ROUTE_PROTOCOL};
use super::NetError;
use crate::model::netconfig::IpCidr;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

/// The MAC that answers probes for a taken address.
pub const OTHER_MAC: [u8; 6] = [0x52, 0x54, 0, 0xb0, 0, 1];

pub fn cidr(s: &str) -> IpCidr {
    s.parse().unwrap()
}

pub fn link(index: u32, name: &str, up: bool) -> LinkState {
    LinkState {
        index,
        name: name.into(),
        up,
        running: up,
        loopback: name == "lo",
    }
}

pub fn addr(index: u32, a: &str) -> AddressState {
    AddressState {
        index,
        address: cidr(a),
        permanent: true,
        tentative: false,
        dad_failed: false,
    }
}

pub fn route(dst: &str, gw: &str, oif: u32, protocol: u8) -> Route {
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

/// lo, eth0 (up, with the factory address and a link-local one), eth1 (down).
pub fn actual() -> Actual {
    Actual {
        links: vec![
            link(1, "lo", true),
            link(2, "eth0", true),
            link(3, "eth1", false),
        ],
        addresses: vec![
            addr(1, "127.0.0.1/8"),
            addr(2, "169.254.1.1/24"),
            addr(2, "fe80::5054:ff:feb0:10/64"),
        ],
        routes: vec![],
        hostname: "appliance".into(),
        resolv_conf: None,
    }
}

pub struct Fake {
    pub state: Mutex<Actual>,
    log: Mutex<Vec<String>>,
    /// Addresses another host answers probes for.
    pub taken: Vec<Ipv4Addr>,
    pub defended: Mutex<Vec<Defended>>,
    /// How long a probe takes (none: it answers at once).
    pub probe_time: Option<std::time::Duration>,
}

impl Fake {
    pub fn new(actual: Actual) -> Fake {
        Fake {
            state: Mutex::new(actual),
            log: Mutex::new(vec![]),
            taken: vec![],
            defended: Mutex::new(vec![]),
            probe_time: None,
        }
    }

    /// What happened since the last call.
    pub fn log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn record(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }

    pub fn defended(&self) -> Vec<String> {
        self.defended
            .lock()
            .unwrap()
            .iter()
            .map(|d| format!("{} on {}", d.address, d.nic))
            .collect()
    }
}

impl Kernel for Fake {
    async fn snapshot(&self) -> Result<Actual, NetError> {
        Ok(self.state.lock().unwrap().clone())
    }

    async fn links(&self) -> Result<Vec<Link>, NetError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .links
            .iter()
            .map(|l| Link {
                index: l.index,
                name: l.name.clone(),
                ethernet: !l.loopback,
                loopback: l.loopback,
                up: l.up,
                running: l.running,
                mac: (!l.loopback).then_some([0x52, 0x54, 0, 0xb0, 0, l.index as u8]),
                mtu: Some(1500),
                operstate: if l.running { "up" } else { "down" }.into(),
                kind: None,
            })
            .collect())
    }

    async fn apply(&self, op: &Op) -> Result<(), NetError> {
        self.record(op.describe());
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

    async fn probe_ipv6(
        &self,
        _index: u32,
        a: std::net::Ipv6Addr,
    ) -> Result<ProbeOutcome, NetError> {
        self.record(format!("probe {a}"));
        Ok(ProbeOutcome::Free)
    }

    async fn probe_ipv4(
        &self,
        index: u32,
        a: Ipv4Addr,
        _timing: super::acd::Timing,
    ) -> Result<ProbeOutcome, NetError> {
        self.record(format!("probe {a}"));
        if let Some(t) = self.probe_time {
            tokio::time::sleep(t).await;
        }
        let s = self.state.lock().unwrap();
        if !s.links.iter().any(|l| l.index == index && l.running) {
            return Ok(ProbeOutcome::NoLink);
        }
        Ok(if self.taken.contains(&a) {
            ProbeOutcome::InUse { mac: OTHER_MAC }
        } else {
            ProbeOutcome::Free
        })
    }

    async fn announce(&self, index: u32, address: IpAddr) -> Result<(), NetError> {
        self.record(format!("announce {address} on {index}"));
        Ok(())
    }

    fn defend(&self, addresses: &[Defended]) {
        *self.defended.lock().unwrap() = addresses.to_vec();
    }
}

pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
