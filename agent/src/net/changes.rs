//! The typed changes the API and CLI make to the network configuration.
//!
//! [`NetworkChange::apply`] is pure: it computes the next configuration from the current
//! one, or says why the change does not apply (the address or route is not configured).
//! Whether the result is a valid configuration is [`NetworkConfig::validate`]'s job.

use crate::model::netconfig::{
    AddressConfig, DnsConfig, Family, Hostname, InterfaceConfig, IpCidr, NetworkConfig, NicName,
    RouteConfig,
};
use std::net::IpAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkChange {
    AddAddress {
        nic: NicName,
        address: AddressConfig,
    },
    RemoveAddress {
        nic: NicName,
        ip: IpAddr,
    },
    SetAddressEnabled {
        nic: NicName,
        ip: IpAddr,
        enabled: bool,
    },
    AddRoute(RouteConfig),
    RemoveRoute {
        destination: IpCidr,
    },
    SetGateway {
        family: Family,
        gateway: Option<IpAddr>,
    },
    SetDns(DnsConfig),
    SetHostname(Option<Hostname>),
    /// The whole network section at once.
    Replace(NetworkConfig),
}

/// A change that names something the configuration does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotConfigured(pub String);

impl NetworkChange {
    /// One line for the log and the rollback record.
    pub fn describe(&self) -> String {
        match self {
            NetworkChange::AddAddress { nic, address } => format!(
                "add {} to {nic}{}",
                address.address,
                if address.enabled { "" } else { " (disabled)" }
            ),
            NetworkChange::RemoveAddress { nic, ip } => format!("remove {ip} from {nic}"),
            NetworkChange::SetAddressEnabled { nic, ip, enabled } => format!(
                "{} {ip} on {nic}",
                if *enabled { "enable" } else { "disable" }
            ),
            NetworkChange::AddRoute(r) => format!("add route {} via {}", r.destination, r.gateway),
            NetworkChange::RemoveRoute { destination } => format!("remove route {destination}"),
            NetworkChange::SetGateway { family, gateway } => match gateway {
                Some(g) => format!("set the {} gateway to {g}", family.as_str()),
                None => format!("remove the {} gateway", family.as_str()),
            },
            NetworkChange::SetDns(d) => format!(
                "set DNS servers [{}] search [{}]",
                d.servers
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                d.search
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            NetworkChange::SetHostname(Some(h)) => format!("set the host name to {h}"),
            NetworkChange::SetHostname(None) => "reset the host name".into(),
            NetworkChange::Replace(_) => "replace the network configuration".into(),
        }
    }

    /// The NIC a change names, if it names one (to check it exists).
    pub fn nic(&self) -> Option<&NicName> {
        match self {
            NetworkChange::AddAddress { nic, .. }
            | NetworkChange::RemoveAddress { nic, .. }
            | NetworkChange::SetAddressEnabled { nic, .. } => Some(nic),
            _ => None,
        }
    }

    /// The configuration after this change.
    pub fn apply(&self, current: &NetworkConfig) -> Result<NetworkConfig, NotConfigured> {
        let mut next = current.clone();
        match self {
            NetworkChange::AddAddress { nic, address } => {
                match next.interfaces.iter_mut().find(|i| &i.name == nic) {
                    Some(i) => i.addresses.push(address.clone()),
                    None => next.interfaces.push(InterfaceConfig {
                        name: nic.clone(),
                        addresses: vec![address.clone()],
                    }),
                }
            }
            NetworkChange::RemoveAddress { nic, ip } => {
                let iface = next
                    .interfaces
                    .iter_mut()
                    .find(|i| &i.name == nic)
                    .ok_or_else(|| not_on(nic, *ip))?;
                let at = iface
                    .addresses
                    .iter()
                    .position(|a| a.address.ip() == *ip)
                    .ok_or_else(|| not_on(nic, *ip))?;
                // The NIC stays managed (with no address left) so the address is removed
                // from the kernel too.
                iface.addresses.remove(at);
            }
            NetworkChange::SetAddressEnabled { nic, ip, enabled } => {
                let iface = next
                    .interfaces
                    .iter_mut()
                    .find(|i| &i.name == nic)
                    .ok_or_else(|| not_on(nic, *ip))?;
                let a = iface
                    .addresses
                    .iter_mut()
                    .find(|a| a.address.ip() == *ip)
                    .ok_or_else(|| not_on(nic, *ip))?;
                a.enabled = *enabled;
            }
            NetworkChange::AddRoute(r) => next.routes.push(r.clone()),
            NetworkChange::RemoveRoute { destination } => {
                let before = next.routes.len();
                next.routes.retain(|r| r.destination != *destination);
                if next.routes.len() == before {
                    return Err(NotConfigured(format!(
                        "no route to {destination} is configured"
                    )));
                }
            }
            NetworkChange::SetGateway { family, gateway } => match (family, gateway) {
                (Family::Ipv4, Some(IpAddr::V4(g))) => next.gateways.ipv4 = Some(*g),
                (Family::Ipv6, Some(IpAddr::V6(g))) => next.gateways.ipv6 = Some(*g),
                (Family::Ipv4, None) => next.gateways.ipv4 = None,
                (Family::Ipv6, None) => next.gateways.ipv6 = None,
                (f, Some(g)) => {
                    return Err(NotConfigured(format!(
                        "{g} is not an {} address",
                        f.as_str()
                    )))
                }
            },
            NetworkChange::SetDns(d) => next.dns = d.clone(),
            NetworkChange::SetHostname(h) => next.hostname = h.clone(),
            NetworkChange::Replace(cfg) => next = cfg.clone(),
        }
        Ok(next)
    }
}

fn not_on(nic: &NicName, ip: IpAddr) -> NotConfigured {
    NotConfigured(format!("{ip} is not configured on {nic}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(s: &str) -> NicName {
        s.parse().unwrap()
    }

    fn add(n: &str, a: &str, enabled: bool) -> NetworkChange {
        NetworkChange::AddAddress {
            nic: nic(n),
            address: AddressConfig {
                address: a.parse().unwrap(),
                enabled,
            },
        }
    }

    #[test]
    fn addresses_are_added_enabled_disabled_and_removed() {
        let c0 = NetworkConfig::default();
        let c1 = add("eth0", "192.0.2.10/24", true).apply(&c0).unwrap();
        let c2 = add("eth0", "2001:db8::10/64", false).apply(&c1).unwrap();
        assert_eq!(c2.interfaces.len(), 1);
        assert_eq!(c2.interfaces[0].addresses.len(), 2);
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let c3 = NetworkChange::SetAddressEnabled {
            nic: nic("eth0"),
            ip,
            enabled: false,
        }
        .apply(&c2)
        .unwrap();
        assert!(!c3.interfaces[0].addresses[0].enabled);
        let c4 = NetworkChange::RemoveAddress {
            nic: nic("eth0"),
            ip,
        }
        .apply(&c3)
        .unwrap();
        assert_eq!(c4.interfaces[0].addresses.len(), 1);
        let c5 = NetworkChange::RemoveAddress {
            nic: nic("eth0"),
            ip: "2001:db8::10".parse().unwrap(),
        }
        .apply(&c4)
        .unwrap();
        assert_eq!(
            c5.interfaces,
            vec![InterfaceConfig {
                name: nic("eth0"),
                addresses: vec![]
            }],
            "the NIC stays managed so its addresses leave the kernel too"
        );
        let e = NetworkChange::RemoveAddress {
            nic: nic("eth1"),
            ip,
        }
        .apply(&c5)
        .unwrap_err();
        assert_eq!(e.to_string(), "192.0.2.10 is not configured on eth1");
        // A duplicate is the validator's business, not apply's.
        let dup = add("eth0", "192.0.2.10/24", true).apply(&c1).unwrap();
        assert!(dup.validate().is_err());
    }

    #[test]
    fn routes_gateways_dns_and_hostname() {
        let base = add("eth0", "192.0.2.10/24", true)
            .apply(&NetworkConfig::default())
            .unwrap();
        let r = RouteConfig {
            destination: "198.51.100.0/24".parse().unwrap(),
            gateway: "192.0.2.1".parse().unwrap(),
        };
        let c = NetworkChange::AddRoute(r.clone()).apply(&base).unwrap();
        assert_eq!(c.routes, vec![r.clone()]);
        let c = NetworkChange::RemoveRoute {
            destination: r.destination,
        }
        .apply(&c)
        .unwrap();
        assert!(c.routes.is_empty());
        assert!(NetworkChange::RemoveRoute {
            destination: r.destination
        }
        .apply(&c)
        .is_err());
        let c = NetworkChange::SetGateway {
            family: Family::Ipv4,
            gateway: Some("192.0.2.1".parse().unwrap()),
        }
        .apply(&c)
        .unwrap();
        assert_eq!(c.gateways.ipv4, Some("192.0.2.1".parse().unwrap()));
        assert!(NetworkChange::SetGateway {
            family: Family::Ipv6,
            gateway: Some("192.0.2.1".parse().unwrap()),
        }
        .apply(&c)
        .is_err());
        let c = NetworkChange::SetHostname(Some("fw-1".parse().unwrap()))
            .apply(&c)
            .unwrap();
        assert_eq!(c.hostname.as_ref().map(|h| h.as_str()), Some("fw-1"));
        assert_eq!(
            NetworkChange::SetHostname(None).describe(),
            "reset the host name"
        );
    }
}
