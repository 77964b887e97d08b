//! Network: NICs and addresses, through rtnetlink in-process.
//!
//! Current limits: the factory address is added without conflict detection (RFC 5227
//! comes with its own issue); static configuration is not there yet.

pub mod netlink;

use netlink::{Link, Netlink, NetlinkError};
use serde::Serialize;
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
}

/// What the factory address is doing, for status.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FactoryStatus {
    pub nic: Option<String>,
    pub address: Option<String>,
    pub state: String,
    pub error: Option<String>,
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

/// Brings the factory NIC up and puts 169.254.1.1/24 on it.
pub async fn claim_factory_address(nl: &Netlink, wanted: Option<&str>) -> Result<FactoryStatus, NetError> {
    let links = nl.links().await?;
    let nic = pick_factory_nic(&links, wanted)?;
    nl.set_up(nic.index).await?;
    nl.add_address(nic.index, FACTORY_ADDRESS.into(), FACTORY_PREFIX).await?;
    tracing::info!(nic = %nic.name, address = %FACTORY_ADDRESS, "factory address added");
    Ok(FactoryStatus {
        nic: Some(nic.name.clone()),
        address: Some(format!("{FACTORY_ADDRESS}/{FACTORY_PREFIX}")),
        state: "held".into(),
        error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, ethernet: bool) -> Link {
        Link { index, name: name.into(), ethernet, loopback: name == "lo", up: false, mac: None }
    }

    #[test]
    fn factory_nic_is_the_first_ethernet_or_the_named_one() {
        let links = vec![link(1, "lo", false), link(3, "eth1", true), link(2, "eth0", true)];
        assert_eq!(pick_factory_nic(&links, None).unwrap().name, "eth0");
        assert_eq!(pick_factory_nic(&links, Some("eth1")).unwrap().name, "eth1");
        assert!(matches!(pick_factory_nic(&links, Some("eth9")), Err(NetError::NoSuchNic(_))));
        assert!(matches!(pick_factory_nic(&links[..1], None), Err(NetError::NoNic)));
    }
}
