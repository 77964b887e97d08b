//! The real [`Kernel`]: rtnetlink for links, addresses and routes, `sethostname(2)`, an
//! atomic write of resolv.conf, ARP probes on raw sockets, announcements ([`announce`])
//! and the defence of static addresses ([`defence`], a task of its own).

use super::defence::{self, Defended};
use super::netlink::{Link, Netlink};
use super::reconcile::{
    Actual, AddressState, ConflictHistory, Kernel, LinkState, Op, ProbeOutcome, ROUTE_PROTOCOL,
};
use super::{announce, probe, NetError};
use crate::model::netconfig::IpCidr;
use crate::store;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Clone)]
pub struct LiveKernel {
    nl: Netlink,
    /// Where resolv.conf is written (`/etc/resolv.conf` on the appliance).
    resolv_conf: PathBuf,
    defend: Arc<watch::Sender<Vec<Defended>>>,
    history: ConflictHistory,
}

impl LiveKernel {
    /// The kernel behind `nl`, with the defence of static addresses running in the
    /// background (it records what it defends in [`LiveKernel::history`]).
    pub fn start(
        nl: Netlink,
        resolv_conf: PathBuf,
        tasks: &mut crate::runtime::Tasks,
    ) -> LiveKernel {
        let (tx, rx) = watch::channel(Vec::new());
        let history = ConflictHistory::default();
        {
            let (nl, history) = (nl.clone(), history.clone());
            tasks.spawn("address-defence", move || {
                defence::run(nl.clone(), rx.clone(), history.clone())
            });
        }
        LiveKernel {
            nl,
            resolv_conf,
            defend: Arc::new(tx),
            history,
        }
    }

    /// The conflict history the defence writes to; the reconciler shares it.
    pub fn history(&self) -> ConflictHistory {
        self.history.clone()
    }
}

impl Kernel for LiveKernel {
    async fn links(&self) -> Result<Vec<Link>, NetError> {
        Ok(self.nl.links().await?)
    }

    async fn announce(&self, index: u32, address: IpAddr) -> Result<(), NetError> {
        announce::announce(&self.nl, index, address).await
    }

    fn defend(&self, addresses: &[Defended]) {
        self.defend.send_if_modified(|d| {
            let changed = d.as_slice() != addresses;
            if changed {
                *d = addresses.to_vec();
            }
            changed
        });
    }

    async fn snapshot(&self) -> Result<Actual, NetError> {
        let links = self
            .nl
            .links()
            .await?
            .into_iter()
            .map(|l| LinkState {
                index: l.index,
                name: l.name,
                up: l.up,
                running: l.running,
                loopback: l.loopback,
            })
            .collect();
        let addresses = self
            .nl
            .all_addresses()
            .await?
            .into_iter()
            .filter_map(|a| {
                Some(AddressState {
                    index: a.index,
                    address: IpCidr::new(a.ip, a.prefix).ok()?,
                    permanent: a.permanent,
                    tentative: a.tentative,
                    dad_failed: a.dad_failed,
                })
            })
            .collect();
        let routes = self.nl.routes().await?;
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let resolv_conf = std::fs::read_to_string(&self.resolv_conf).ok();
        Ok(Actual {
            links,
            addresses,
            routes,
            hostname,
            resolv_conf,
        })
    }

    async fn apply(&self, op: &Op) -> Result<(), NetError> {
        match op {
            Op::LinkUp { index, .. } => self.nl.set_up(*index).await?,
            Op::DelRoute(r) => self.nl.del_route(r).await?,
            Op::DelAddress { index, address, .. } => {
                for a in self.nl.addresses(*index).await? {
                    if a.ip == address.ip() && a.prefix == address.prefix() {
                        self.nl.del_address(&a).await?;
                    }
                }
            }
            Op::AddAddress {
                index,
                address,
                nodad,
                ..
            } => {
                self.nl
                    .add_address_with(*index, address.ip(), address.prefix(), *nodad)
                    .await?;
                match address.ip() {
                    IpAddr::V4(_) => announce::announce(&self.nl, *index, address.ip()).await?,
                    // The advertisement waits for DAD: not while the pass waits.
                    IpAddr::V6(_) => {
                        let (nl, index, ip) = (self.nl.clone(), *index, address.ip());
                        tokio::spawn(async move {
                            if let Err(e) = announce::announce(&nl, index, ip).await {
                                tracing::warn!(address = %ip, error = %e, "cannot advertise an IPv6 address");
                            }
                        });
                    }
                }
            }
            Op::AddRoute {
                destination,
                gateway,
                index,
                ..
            } => {
                self.nl
                    .add_route(
                        destination.ip(),
                        destination.prefix(),
                        *gateway,
                        *index,
                        ROUTE_PROTOCOL,
                    )
                    .await?
            }
            Op::SetHostname(h) => nix::unistd::sethostname(h).map_err(NetError::Hostname)?,
            Op::WriteResolvConf(text) => {
                let (path, text) = (self.resolv_conf.clone(), text.clone());
                store::blocking(move || store::write_atomic(&path, text.as_bytes(), 0o644)).await?
            }
        }
        Ok(())
    }

    async fn probe_ipv4(
        &self,
        index: u32,
        addr: std::net::Ipv4Addr,
        timing: super::acd::Timing,
    ) -> Result<ProbeOutcome, NetError> {
        probe::probe_ipv4(&self.nl, index, addr, timing).await
    }

    async fn probe_ipv6(
        &self,
        index: u32,
        addr: std::net::Ipv6Addr,
    ) -> Result<ProbeOutcome, NetError> {
        probe::probe_ipv6(&self.nl, index, addr).await
    }
}
