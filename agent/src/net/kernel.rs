//! The real [`Kernel`]: rtnetlink for links, addresses and routes, `sethostname(2)`, an
//! atomic write of resolv.conf, and ARP probes on raw sockets.

use super::netlink::Netlink;
use super::reconcile::{Actual, AddressState, Kernel, LinkState, Op, ProbeOutcome, ROUTE_PROTOCOL};
use super::{probe, NetError};
use crate::model::netconfig::IpCidr;
use crate::store;
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Clone)]
pub struct LiveKernel {
    pub nl: Netlink,
    /// Where resolv.conf is written (`/etc/resolv.conf` on the appliance).
    pub resolv_conf: PathBuf,
}

impl Kernel for LiveKernel {
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
            Op::AddAddress { index, address, .. } => {
                self.nl
                    .add_address(*index, address.ip(), address.prefix())
                    .await?;
                if let IpAddr::V4(v4) = address.ip() {
                    probe::announce_ipv4(&self.nl, *index, v4).await?;
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
                store::write_atomic(&self.resolv_conf, text.as_bytes(), 0o644)?
            }
        }
        Ok(())
    }

    async fn probe_ipv4(
        &self,
        index: u32,
        addr: std::net::Ipv4Addr,
    ) -> Result<ProbeOutcome, NetError> {
        probe::probe_ipv4(&self.nl, index, addr).await
    }
}
