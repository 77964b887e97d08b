//! Which way the appliance reaches a client, under a network configuration: so that a
//! change that would take away the path the requesting client came in on is refused
//! unless it carries a confirmation window (then it rolls back by itself if the client
//! loses the appliance, as LuCI applies changes).
//!
//! [`path_to`] is pure and follows the kernel's choice: the longest prefix among the
//! connected subnets (the enabled addresses' and the factory subnet while the factory
//! address is on) and the configured routes and default gateways; on a tie the connected
//! subnet wins (its metric is lower). A client the configuration says nothing about (on
//! loopback, IPv6 link-local, reached by a route the agent does not own) has no path here,
//! and no change is refused on its account.

use crate::model::netconfig::{IpCidr, NetworkConfig};
use std::net::{IpAddr, Ipv4Addr};

/// How the appliance reaches one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientPath {
    /// On a subnet the appliance is directly on, from this local address.
    Connected { subnet: IpCidr, local: IpAddr },
    /// On the factory subnet, from the factory address.
    Factory,
    /// Through a gateway.
    Routed {
        destination: IpCidr,
        gateway: IpAddr,
    },
}

impl std::fmt::Display for ClientPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientPath::Connected { subnet, local } => write!(f, "{subnet}, from {local}"),
            ClientPath::Factory => f.write_str("the factory subnet 169.254.1.0/24"),
            ClientPath::Routed {
                destination,
                gateway,
            } => write!(f, "{destination} via {gateway}"),
        }
    }
}

/// The path to `client` under `config`, with the factory address on or off.
pub fn path_to(config: &NetworkConfig, factory_on: bool, client: IpAddr) -> Option<ClientPath> {
    let client = match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(client),
        v4 => v4,
    };
    // Loopback, IPv6 link-local and the appliance's own addresses never go through a
    // route of the configuration (the default route contains them, but the kernel's local
    // and link routes win).
    let link_local_v6 = matches!(client, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
    let own = config.enabled_addresses().any(|(_, a)| a.ip() == client);
    if client.is_loopback() || link_local_v6 || own {
        return None;
    }
    // (prefix, connected?, path): the longest prefix wins, connected before routed.
    let mut best: Option<(u8, bool, ClientPath)> = None;
    let mut consider = |prefix: u8, connected: bool, path: ClientPath| {
        if best.is_none_or(|(p, c, _)| (prefix, connected) > (p, c)) {
            best = Some((prefix, connected, path));
        }
    };
    let factory = IpCidr::new(Ipv4Addr::new(169, 254, 1, 0).into(), 24).ok();
    if let Some(f) = factory.filter(|f| factory_on && f.contains(client)) {
        consider(f.prefix(), true, ClientPath::Factory);
    }
    for (_, a) in config.enabled_addresses() {
        if a.contains(client) && a.ip() != client {
            consider(
                a.prefix(),
                true,
                ClientPath::Connected {
                    subnet: a.network(),
                    local: a.ip(),
                },
            );
        }
    }
    for r in config.all_routes() {
        if r.destination.contains(client) {
            consider(
                r.destination.prefix(),
                false,
                ClientPath::Routed {
                    destination: r.destination,
                    gateway: r.gateway,
                },
            );
        }
    }
    best.map(|(_, _, p)| p)
}

/// Whether going from `before` to `after` takes away the path to `client`: it had one,
/// and it is gone or different.
pub fn cuts_off(
    before: &NetworkConfig,
    after: &NetworkConfig,
    factory_on: bool,
    client: IpAddr,
) -> Option<ClientPath> {
    let was = path_to(before, factory_on, client)?;
    (path_to(after, factory_on, client) != Some(was)).then_some(was)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> NetworkConfig {
        serde_json::from_str(json).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_link_local_and_own_addresses_have_no_path_even_with_a_default_route() {
        let c = config(
            r#"{"interfaces": [{"name": "eth0", "addresses": [{"address": "192.0.2.10/24"}]}],
                "gateways": {"ipv4": "192.0.2.1", "ipv6": "2001:db8::1"}}"#,
        );
        let none = NetworkConfig::default();
        for client in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "::1",
            "fe80::1",
            "192.0.2.10",
        ] {
            assert_eq!(path_to(&c, true, ip(client)), None, "{client}");
            assert_eq!(cuts_off(&c, &none, true, ip(client)), None, "{client}");
        }
        assert!(path_to(&c, true, ip("203.0.113.9")).is_some());
    }

    #[test]
    fn the_path_is_the_longest_prefix_with_connected_first() {
        let c = config(
            r#"{"interfaces": [{"name": "eth0", "addresses": [{"address": "192.0.2.10/24"}]}],
                "gateways": {"ipv4": "192.0.2.1"},
                "routes": [{"destination": "198.51.100.0/24", "gateway": "192.0.2.254"}]}"#,
        );
        assert_eq!(
            path_to(&c, true, ip("192.0.2.77")),
            Some(ClientPath::Connected {
                subnet: "192.0.2.0/24".parse().unwrap(),
                local: ip("192.0.2.10"),
            })
        );
        assert_eq!(
            path_to(&c, true, ip("198.51.100.9")).map(|p| p.to_string()),
            Some("198.51.100.0/24 via 192.0.2.254".into())
        );
        assert_eq!(
            path_to(&c, true, ip("203.0.113.5")).map(|p| p.to_string()),
            Some("0.0.0.0/0 via 192.0.2.1".into())
        );
        assert_eq!(
            path_to(&c, true, ip("169.254.1.4")),
            Some(ClientPath::Factory)
        );
        assert_eq!(
            path_to(&c, true, ip("::ffff:169.254.1.4")),
            Some(ClientPath::Factory),
            "an IPv4 client on the dual-stack socket"
        );
        assert_eq!(
            path_to(&c, false, ip("169.254.1.4")).map(|p| p.to_string()),
            Some("0.0.0.0/0 via 192.0.2.1".into())
        );
        assert_eq!(
            path_to(&NetworkConfig::default(), true, ip("127.0.0.1")),
            None
        );
    }

    #[test]
    fn a_change_that_moves_or_removes_the_clients_path_cuts_it_off() {
        let before = config(
            r#"{"interfaces": [{"name": "eth0", "addresses": [{"address": "192.0.2.10/24"}]}]}"#,
        );
        let client = ip("192.0.2.77");
        let other_address = config(
            r#"{"interfaces": [{"name": "eth0", "addresses": [{"address": "192.0.2.11/24"}]}]}"#,
        );
        assert!(cuts_off(&before, &other_address, true, client).is_some());
        let disabled = config(
            r#"{"interfaces": [{"name": "eth0", "addresses":
                [{"address": "192.0.2.10/24", "enabled": false}]}]}"#,
        );
        assert!(cuts_off(&before, &disabled, true, client).is_some());
        let more = config(
            r#"{"interfaces": [{"name": "eth0", "addresses":
                [{"address": "192.0.2.10/24"}, {"address": "198.51.100.1/24"}]}],
                "dns": {"servers": ["192.0.2.53"]}}"#,
        );
        assert_eq!(cuts_off(&before, &more, true, client), None);
        // The factory workstation keeps its path whatever happens to static addresses.
        assert_eq!(
            cuts_off(&before, &NetworkConfig::default(), true, ip("169.254.1.4")),
            None
        );
        // A client the configuration never reached is not protected (nor blocked).
        assert_eq!(
            cuts_off(&before, &other_address, true, ip("127.0.0.1")),
            None
        );
    }
}
