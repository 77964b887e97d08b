//! Defending the static IPv4 addresses the reconciler added (RFC 5227 §2.4).
//!
//! Once a configured IPv4 address is on its NIC, another host that claims it (an ARP
//! packet with our address as sender IP and another MAC) is answered with one
//! announcement, at most one per `DEFEND_INTERVAL` (10 s), and the address is kept:
//! policy (c) of the RFC, carried out by the same [`Acd`] machine as the factory
//! address (started bound, see [`Acd::holding`]). Each answered claim is recorded in
//! the conflict history with kind `defended`; claims inside the interval are not
//! answered and not recorded (a remote host cannot flood the history or the log).
//!
//! [`Defences`] is the pure part: the set of addresses to defend, and what to do with an
//! ARP packet seen on a NIC. [`run`] is the thin loop: one raw ARP socket per NIC with
//! something to defend, fed by the set the reconciler publishes after every pass. The
//! overlay's addresses (failover's shared addresses) are never in that set.

use super::acd::{Acd, Action, ArpSeen, ConflictKind, DefendPolicy, Mac, Time, Timing};
use super::arp::{ArpFrame, ArpSocket};
use super::netlink::Netlink;
use super::reconcile::{AddressConflict, ConflictHistory};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// An address to defend on interface `index` (`nic` is its name, for the record).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Defended {
    pub index: u32,
    pub nic: String,
    pub address: Ipv4Addr,
}

/// What to do after an ARP packet: announce `address` (from our MAC), and record the
/// claim when it was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defence {
    pub address: Ipv4Addr,
    pub conflict: AddressConflict,
}

/// The addresses defended on one NIC, each with its own RFC 5227 machine (so the
/// interval is kept per address across changes of the set).
pub struct Defences {
    mac: Mac,
    nic: String,
    acds: BTreeMap<Ipv4Addr, Acd>,
}

impl Defences {
    pub fn new(nic: &str, mac: Mac) -> Defences {
        Defences {
            mac,
            nic: nic.to_string(),
            acds: BTreeMap::new(),
        }
    }

    /// Defends exactly `addresses` from now on; machines for those kept stay as they are.
    pub fn set(&mut self, addresses: &BTreeSet<Ipv4Addr>) {
        self.acds.retain(|a, _| addresses.contains(a));
        for a in addresses {
            self.acds
                .entry(*a)
                .or_insert_with(|| Acd::holding(*a, self.mac, Timing::FAST, DefendPolicy::Forever));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.acds.is_empty()
    }

    /// An ARP packet seen on the NIC at `now`: the defences to carry out.
    pub fn on_arp(&mut self, now: Time, seen: &ArpSeen) -> Vec<Defence> {
        let Some(acd) = self.acds.get_mut(&seen.sender_ip) else {
            return Vec::new();
        };
        let actions = acd.on_arp(now, seen);
        if !actions.contains(&Action::SendAnnouncement) {
            return Vec::new();
        }
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Conflict(c) if c.kind == ConflictKind::Defended => Some(Defence {
                    address: seen.sender_ip,
                    conflict: AddressConflict::new(
                        &self.nic,
                        seen.sender_ip,
                        &c.mac,
                        ConflictKind::Defended,
                    ),
                }),
                _ => None,
            })
            .collect()
    }
}

/// How long to wait before opening a NIC's socket again after an error.
const RETRY: Duration = Duration::from_secs(5);

/// Runs for the agent's lifetime: keeps one defender task per NIC in `targets`.
pub async fn run(
    nl: Netlink,
    mut targets: watch::Receiver<Vec<Defended>>,
    history: ConflictHistory,
) {
    let mut tasks: BTreeMap<u32, tokio::task::JoinHandle<()>> = BTreeMap::new();
    loop {
        let wanted: BTreeSet<u32> = targets
            .borrow_and_update()
            .iter()
            .map(|d| d.index)
            .collect();
        tasks.retain(|index, task| {
            let keep = wanted.contains(index) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for index in wanted {
            tasks.entry(index).or_insert_with(|| {
                tokio::spawn(defend_nic(
                    nl.clone(),
                    index,
                    targets.clone(),
                    history.clone(),
                ))
            });
        }
        if targets.changed().await.is_err() {
            return;
        }
    }
}

/// Defends the addresses of one NIC until none is left there; retries after errors.
async fn defend_nic(
    nl: Netlink,
    index: u32,
    mut targets: watch::Receiver<Vec<Defended>>,
    history: ConflictHistory,
) {
    loop {
        match defend_nic_once(&nl, index, &mut targets, &history).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(index, error = %e, "address defence: retrying in {RETRY:?}");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn defend_nic_once(
    nl: &Netlink,
    index: u32,
    targets: &mut watch::Receiver<Vec<Defended>>,
    history: &ConflictHistory,
) -> Result<(), super::NetError> {
    let link = nl
        .link(index)
        .await?
        .ok_or_else(|| super::NetError::NoSuchNic(format!("index {index}")))?;
    let mac = link
        .mac
        .ok_or_else(|| super::NetError::NoMac(link.name.clone()))?;
    let sock = ArpSocket::open(index).map_err(super::NetError::Arp)?;
    let mut defences = Defences::new(&link.name, mac);
    let origin = Instant::now();
    loop {
        let set: BTreeSet<Ipv4Addr> = targets
            .borrow_and_update()
            .iter()
            .filter(|d| d.index == index)
            .map(|d| d.address)
            .collect();
        defences.set(&set);
        if defences.is_empty() {
            return Ok(());
        }
        tokio::select! {
            changed = targets.changed() => if changed.is_err() {
                return Ok(());
            },
            frame = sock.recv() => {
                let frame = frame.map_err(super::NetError::Arp)?;
                for d in defences.on_arp(origin.elapsed(), &frame.seen()) {
                    if let Err(e) = sock.send(&ArpFrame::announcement(mac, d.address)).await {
                        tracing::debug!(error = %e, "cannot send an ARP announcement");
                    }
                    tracing::warn!(nic = %link.name, address = %d.address, other_mac = %d.conflict.mac, "address conflict: another host claims a static address; defended it (RFC 5227 §2.4)");
                    history.record(&d.conflict);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: Mac = [0x52, 0x54, 0, 0xb0, 0, 0x10];
    const OTHER: Mac = [0x52, 0x54, 0, 0xb0, 0, 0x01];

    fn claim(mac: Mac, ip: Ipv4Addr) -> ArpSeen {
        ArpSeen {
            request: true,
            sender_mac: mac,
            sender_ip: ip,
            target_ip: ip,
        }
    }

    fn s(secs: f64) -> Time {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn a_claim_is_answered_once_per_interval_and_only_for_defended_addresses() {
        let a = Ipv4Addr::new(192, 0, 2, 10);
        let b = Ipv4Addr::new(192, 0, 2, 11);
        let mut d = Defences::new("eth0", OURS);
        d.set(&BTreeSet::from([a]));
        let out = d.on_arp(s(1.0), &claim(OTHER, a));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].address, a);
        assert_eq!(out[0].conflict.kind, "defended");
        assert_eq!(out[0].conflict.mac, "52:54:00:b0:00:01");
        assert_eq!(
            (
                out[0].conflict.nic.as_str(),
                out[0].conflict.address.as_str()
            ),
            ("eth0", "192.0.2.10")
        );
        assert!(
            d.on_arp(s(3.0), &claim(OTHER, a)).is_empty(),
            "rate limited"
        );
        assert!(
            d.on_arp(s(3.0), &claim(OTHER, b)).is_empty(),
            "not ours to defend"
        );
        assert!(
            d.on_arp(s(3.0), &claim(OURS, a)).is_empty(),
            "our own frame"
        );
        // Keeping an address in the set keeps its interval; a re-added one starts afresh.
        d.set(&BTreeSet::from([a, b]));
        assert!(d.on_arp(s(4.0), &claim(OTHER, a)).is_empty());
        assert_eq!(d.on_arp(s(4.0), &claim(OTHER, b)).len(), 1);
        assert_eq!(d.on_arp(s(11.0), &claim(OTHER, a)).len(), 1);
        d.set(&BTreeSet::new());
        assert!(d.is_empty());
        assert!(d.on_arp(s(30.0), &claim(OTHER, a)).is_empty());
    }
}
