//! The NIC inventory: every interface with its hardware facts and its addresses, the
//! configured ones beside the ones actually present.
//!
//! [`build`] merges a kernel snapshot, the configuration and per-NIC facts from sysfs
//! (driver, speed, duplex: [`read_sysfs`]) without doing I/O itself.

use super::factory::in_factory_range;
use super::netlink::Link;
use super::reconcile::AddressState;
use crate::model::netconfig::Family;
use crate::model::netconfig::{is_link_local_v6, NetworkConfig};
use crate::model::{AddressOrigin, DadState, Nic, NicAddress};
use std::net::IpAddr;
use std::path::Path;

/// What sysfs says about one NIC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SysFacts {
    pub driver: Option<String>,
    pub speed_mbps: Option<u32>,
    pub duplex: Option<String>,
}

/// Reads `/sys/class/net/<name>/{device/driver,speed,duplex}`; what is missing or unknown
/// (a link that is down has no speed) is left out.
pub fn read_sysfs(name: &str) -> SysFacts {
    let dir = Path::new("/sys/class/net").join(name);
    let driver = std::fs::read_link(dir.join("device/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let speed_mbps = std::fs::read_to_string(dir.join("speed"))
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|s| *s > 0)
        .and_then(|s| u32::try_from(s).ok());
    let duplex = std::fs::read_to_string(dir.join("duplex"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| s == "full" || s == "half");
    SysFacts {
        driver,
        speed_mbps,
        duplex,
    }
}

/// Every NIC, ordered by index, with configured and present addresses merged.
pub fn build(
    links: &[Link],
    addresses: &[AddressState],
    config: &NetworkConfig,
    facts: impl Fn(&Link) -> SysFacts,
) -> Vec<Nic> {
    let mut links: Vec<&Link> = links.iter().collect();
    links.sort_by_key(|l| l.index);
    links
        .into_iter()
        .map(|l| {
            let sys = facts(l);
            let iface = config.interfaces.iter().find(|i| i.name.as_str() == l.name);
            let present: Vec<&AddressState> =
                addresses.iter().filter(|a| a.index == l.index).collect();
            let mut out = Vec::new();
            for p in &present {
                let conf = iface.and_then(|i| i.addresses.iter().find(|a| a.address == p.address));
                let origin = match (conf, p.address.ip()) {
                    (Some(_), _) => AddressOrigin::Config,
                    (None, IpAddr::V4(v4)) if in_factory_range(v4) => AddressOrigin::Factory,
                    (None, IpAddr::V6(v6)) if is_link_local_v6(v6) => AddressOrigin::LinkLocal,
                    (None, IpAddr::V6(_)) if !p.permanent => AddressOrigin::Autoconf,
                    (None, _) => AddressOrigin::Other,
                };
                out.push(NicAddress {
                    address: p.address.to_string(),
                    family: Family::of(p.address.ip()),
                    configured: conf.is_some(),
                    enabled: conf.map(|c| c.enabled),
                    present: true,
                    origin,
                    state: if p.dad_failed {
                        Some(DadState::DadFailed)
                    } else if p.tentative {
                        Some(DadState::Tentative)
                    } else {
                        None
                    },
                });
            }
            for c in iface.map(|i| i.addresses.as_slice()).unwrap_or_default() {
                if present.iter().any(|p| p.address == c.address) {
                    continue;
                }
                out.push(NicAddress {
                    address: c.address.to_string(),
                    family: Family::of(c.address.ip()),
                    configured: true,
                    enabled: Some(c.enabled),
                    present: false,
                    origin: AddressOrigin::Config,
                    state: None,
                });
            }
            let kind = if l.loopback {
                "loopback".to_string()
            } else if let Some(k) = &l.kind {
                k.clone()
            } else if l.ethernet {
                "ethernet".to_string()
            } else {
                "other".to_string()
            };
            Nic {
                name: l.name.clone(),
                index: l.index,
                mac: l
                    .mac
                    .filter(|m| !l.loopback && *m != [0; 6])
                    .map(|m| super::arp::format_mac(&m)),
                driver: sys.driver.or_else(|| l.kind.clone()),
                kind,
                admin_up: l.up,
                carrier: l.running,
                operstate: l.operstate.clone(),
                speed_mbps: sys.speed_mbps,
                duplex: sys.duplex,
                mtu: l.mtu,
                managed: iface.is_some(),
                addresses: out,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            ethernet: name != "lo",
            loopback: name == "lo",
            up: true,
            running: true,
            mac: Some([0x52, 0x54, 0, 0xb0, 0, index as u8]),
            mtu: Some(1500),
            operstate: "up".into(),
            kind: (name == "veth0").then(|| "veth".to_string()),
        }
    }

    fn present(index: u32, a: &str, permanent: bool) -> AddressState {
        AddressState {
            index,
            address: a.parse().unwrap(),
            permanent,
            tentative: false,
            dad_failed: false,
        }
    }

    #[test]
    fn configured_and_present_addresses_are_merged() {
        let cfg: NetworkConfig = serde_json::from_str(
            r#"{"interfaces": [{"name": "eth0", "addresses": [
                {"address": "192.0.2.10/24"},
                {"address": "192.0.2.11/24", "enabled": false}]}]}"#,
        )
        .unwrap();
        let links = vec![link(2, "eth0"), link(1, "lo"), link(3, "veth0")];
        let addrs = vec![
            present(1, "127.0.0.1/8", true),
            present(2, "192.0.2.10/24", true),
            present(2, "169.254.1.1/24", true),
            present(2, "fe80::1/64", true),
            present(2, "2001:db8::abcd/64", false),
            present(2, "203.0.113.9/24", true),
        ];
        let nics = build(&links, &addrs, &cfg, |l| SysFacts {
            driver: (l.name == "eth0").then(|| "virtio_net".into()),
            speed_mbps: Some(1000),
            duplex: Some("full".into()),
        });
        let names: Vec<&str> = nics.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, vec!["lo", "eth0", "veth0"]);
        assert_eq!(nics[0].kind, "loopback");
        assert_eq!(nics[0].mac, None);
        let eth0 = &nics[1];
        assert!(eth0.managed);
        assert_eq!(eth0.driver.as_deref(), Some("virtio_net"));
        assert_eq!(eth0.mac.as_deref(), Some("52:54:00:b0:00:02"));
        let summary: Vec<(String, String, bool, Option<bool>)> = eth0
            .addresses
            .iter()
            .map(|a| {
                (
                    a.address.clone(),
                    a.origin.to_string(),
                    a.present,
                    a.enabled,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("192.0.2.10/24".into(), "config".into(), true, Some(true)),
                ("169.254.1.1/24".into(), "factory".into(), true, None),
                ("fe80::1/64".into(), "link-local".into(), true, None),
                ("2001:db8::abcd/64".into(), "autoconf".into(), true, None),
                ("203.0.113.9/24".into(), "other".into(), true, None),
                ("192.0.2.11/24".into(), "config".into(), false, Some(false)),
            ]
        );
        assert_eq!(nics[2].kind, "veth");
        assert_eq!(nics[2].driver.as_deref(), Some("veth"));
        assert!(!nics[2].managed);
    }
}
