//! Addresses another part of the agent decides about at run time, over the configuration.
//!
//! The configuration says which addresses a NIC has and whether each is enabled. The
//! failover agent owns the *enabled* state of the shared addresses while it runs: the
//! active node holds them, the standby withholds them, whatever the file says. It tells
//! the reconciler through an [`OverlayHandle`]; the reconciler reads the current
//! [`AddressOverlay`] on every pass and wakes when it changes.
//!
//! - [`Claim::Held`]: the address is added to the NIC (probed first, or not: a takeover
//!   that has done its own checks asks for [`Probe::Skip`]) and never removed while held,
//!   even if the configuration has it disabled or does not list it.
//! - [`Claim::Withheld`]: the address is removed, and not added, even if the
//!   configuration enables it.
//! - Released (not in the overlay): the configuration decides again.
//!
//! Addresses in the overlay are never defended or given up by conflict detection: the
//! failover agent decides about them. Current limits: an entry is keyed by NIC name and
//! exact address with prefix; the overlay does not survive an agent restart (the
//! failover agent states its claims again when it starts).

use crate::model::netconfig::{IpCidr, NicName};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// Whether a held address is probed (RFC 5227) before it is added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Probe IPv4 first, like a configured address; one in use is not added.
    First,
    /// Add at once: the caller has done its own checks (a takeover).
    Skip,
}

/// What the overlay says about one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    Held { probe: Probe },
    Withheld,
}

/// The run-time claims, by NIC and address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressOverlay {
    claims: BTreeMap<(NicName, IpCidr), Claim>,
}

impl AddressOverlay {
    pub fn get(&self, nic: &str, address: &IpCidr) -> Option<Claim> {
        self.claims
            .iter()
            .find(|((n, a), _)| n.as_str() == nic && a == address)
            .map(|(_, c)| *c)
    }

    /// Whether the overlay says anything about `address` on `nic`.
    pub fn covers(&self, nic: &str, address: &IpCidr) -> bool {
        self.get(nic, address).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&NicName, &IpCidr, Claim)> {
        self.claims.iter().map(|((n, a), c)| (n, a, *c))
    }

    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }

    pub fn set(&mut self, nic: NicName, address: IpCidr, claim: Claim) {
        self.claims.insert((nic, address), claim);
    }

    pub fn remove(&mut self, nic: &NicName, address: &IpCidr) {
        self.claims.remove(&(nic.clone(), *address));
    }
}

/// How the failover agent states its claims. Cheap to clone; every change wakes the
/// reconcile loop, which carries it out within a pass.
#[derive(Clone)]
pub struct OverlayHandle {
    tx: Arc<watch::Sender<AddressOverlay>>,
}

impl Default for OverlayHandle {
    fn default() -> Self {
        OverlayHandle::new()
    }
}

impl OverlayHandle {
    pub fn new() -> OverlayHandle {
        OverlayHandle {
            tx: Arc::new(watch::Sender::new(AddressOverlay::default())),
        }
    }

    /// `address` goes on `nic` and stays there until withheld or released.
    pub fn hold(&self, nic: NicName, address: IpCidr, probe: Probe) {
        self.change(nic, address, Some(Claim::Held { probe }));
    }

    /// `address` comes off `nic` (or is not added) whatever the configuration says.
    pub fn withhold(&self, nic: NicName, address: IpCidr) {
        self.change(nic, address, Some(Claim::Withheld));
    }

    /// The configuration decides about `address` on `nic` again.
    pub fn release(&self, nic: NicName, address: IpCidr) {
        self.change(nic, address, None);
    }

    fn change(&self, nic: NicName, address: IpCidr, claim: Option<Claim>) {
        self.tx.send_if_modified(|o| {
            let before = o.get(nic.as_str(), &address);
            match claim {
                Some(c) => o.set(nic.clone(), address, c),
                None => o.remove(&nic, &address),
            }
            let changed = before != claim;
            if changed {
                tracing::info!(nic = %nic, address = %address, claim = ?claim, "address overlay changed");
            }
            changed
        });
    }

    pub fn current(&self) -> AddressOverlay {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<AddressOverlay> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_withhold_release_and_only_real_changes_wake() {
        let h = OverlayHandle::new();
        let mut rx = h.subscribe();
        rx.borrow_and_update();
        let nic: NicName = "eth0".parse().unwrap();
        let a: IpCidr = "192.0.2.100/24".parse().unwrap();
        h.hold(nic.clone(), a, Probe::Skip);
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            rx.borrow_and_update().get("eth0", &a),
            Some(Claim::Held { probe: Probe::Skip })
        );
        h.hold(nic.clone(), a, Probe::Skip);
        assert!(
            !rx.has_changed().unwrap(),
            "the same claim again is no change"
        );
        h.withhold(nic.clone(), a);
        assert_eq!(h.current().get("eth0", &a), Some(Claim::Withheld));
        h.release(nic, a);
        assert!(h.current().is_empty());
        assert!(!h.current().covers("eth0", &a));
    }
}
