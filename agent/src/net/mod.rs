//! Network: NICs and addresses, through rtnetlink in-process.
//!
//! - [`acd`]: RFC 5227 conflict detection for one address (pure state machine);
//! - [`factory`]: choosing the factory address among 169.254.1.x (pure state machine);
//! - [`factory_service`]: running it with a raw ARP socket ([`arp`]) and [`netlink`];
//!   [`factory_control`]: turning it on and off (never off without another IPv4 address);
//! - [`model`]: the static configuration (addresses, gateways, routes, DNS, host name)
//!   and its validation; [`changes`]: the typed changes made to it;
//! - [`reconcile`]: planning desired vs actual into ordered kernel operations, and
//!   carrying them out through the [`reconcile::Kernel`] seam ([`kernel`] is the real
//!   one; [`probe`] the RFC 5227 probe each static IPv4 address passes first,
//!   [`announce`] the gratuitous ARP and neighbour advertisements after an add,
//!   [`defence`] the RFC 5227 §2.4 defence of static IPv4 addresses); [`overlay`]: the
//!   addresses another part of the agent (failover) holds or withholds at run time;
//! - [`service`]: changes, confirmation windows and rollback ([`rollback`]), and the
//!   reconcile loop; [`inventory`]: the NIC list;
//! - [`utilities`]: TCP test, ping ([`icmp`]) and DNS lookup from the appliance.

pub mod acd;
pub mod announce;
pub mod arp;
pub mod changes;
pub mod client_path;
pub mod defence;
pub mod factory;
pub mod factory_control;
pub mod factory_service;
#[cfg(test)]
pub(crate) mod fake;
pub mod icmp;
pub mod inventory;
pub mod kernel;

pub mod netlink;
pub mod overlay;
pub mod probe;
pub mod reconcile;
pub mod rollback;
pub mod service;
pub mod utilities;

use netlink::{Link, NetlinkError};
use std::net::Ipv4Addr;

/// The address a fresh appliance answers on.
pub const FACTORY_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
pub const FACTORY_PREFIX: u8 = 24;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("no interface named {0}")]
    NoSuchNic(String),
    #[error("no Ethernet interface found for the factory address")]
    NoNic,
    #[error("interface {0} has no MAC address")]
    NoMac(String),
    #[error("raw ARP socket: {0}")]
    Arp(#[source] std::io::Error),
    #[error("cannot send a neighbour advertisement: {0}")]
    Announce(#[source] std::io::Error),
    #[error("the kernel stopped sending link events")]
    EventsEnded,
    #[error("cannot set the host name: {0}")]
    Hostname(nix::errno::Errno),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The NIC the factory address goes on: the one named, else the first Ethernet NIC.
pub fn pick_factory_nic<'a>(links: &'a [Link], wanted: Option<&str>) -> Result<&'a Link, NetError> {
    match wanted {
        Some(name) => links
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| NetError::NoSuchNic(name.to_string())),
        None => links
            .iter()
            .filter(|l| l.ethernet && !l.loopback)
            .min_by_key(|l| l.index)
            .ok_or(NetError::NoNic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, ethernet: bool) -> Link {
        Link {
            index,
            name: name.into(),
            ethernet,
            loopback: name == "lo",
            up: false,
            running: false,
            mac: None,
            mtu: Some(1500),
            operstate: "down".into(),
            kind: None,
        }
    }

    #[test]
    fn factory_nic_is_the_first_ethernet_or_the_named_one() {
        let links = vec![
            link(1, "lo", false),
            link(3, "eth1", true),
            link(2, "eth0", true),
        ];
        assert_eq!(pick_factory_nic(&links, None).unwrap().name, "eth0");
        assert_eq!(pick_factory_nic(&links, Some("eth1")).unwrap().name, "eth1");
        assert!(matches!(
            pick_factory_nic(&links, Some("eth9")),
            Err(NetError::NoSuchNic(_))
        ));
        assert!(matches!(
            pick_factory_nic(&links[..1], None),
            Err(NetError::NoNic)
        ));
    }
}
