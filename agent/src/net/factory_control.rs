//! Turning the factory address on and off, and changing its timing profile.
//!
//! The one rule: the factory address may be turned off only while some NIC has another
//! IPv4 address (not a factory or loopback one), or the administrator would lock
//! themselves out. The kernel is asked, not the configuration: an address configured but
//! not on the NIC (refused, waiting for link) does not count. [`FactoryControl::set`]
//! checks it through the [`Kernel`] seam, then writes the configuration;
//! `factory_service` follows the configuration.

use super::factory::in_factory_range;
use super::kernel::LiveKernel;
use super::reconcile::{Actual, Kernel};
use super::NetError;
use crate::config::{ConfigError, ConfigStore};
use crate::model::{FactoryAddress, FactoryAddressUpdate};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    #[error("nothing to change: give \"enabled\" and/or \"timing\"")]
    NothingToChange,
    #[error(
        "refusing to turn off the factory address: no other IPv4 address is configured, so \
         the appliance would become unreachable; add an address first"
    )]
    WouldLockOut,
    #[error(transparent)]
    Kernel(#[from] NetError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Whether some interface has an IPv4 address other than a factory or loopback one.
pub fn has_other_ipv4(actual: &Actual) -> bool {
    actual.addresses.iter().any(|a| {
        let on_loopback = actual
            .links
            .iter()
            .any(|l| l.index == a.index && l.loopback);
        matches!(a.address.ip(), IpAddr::V4(v4) if !in_factory_range(v4) && !v4.is_loopback())
            && !on_loopback
    })
}

pub struct FactoryControl<K = LiveKernel> {
    config: Arc<ConfigStore>,
    kernel: K,
    /// What `factory_service` publishes.
    status: watch::Receiver<FactoryAddress>,
}

impl<K: Kernel> FactoryControl<K> {
    pub fn new(
        config: Arc<ConfigStore>,
        kernel: K,
        status: watch::Receiver<FactoryAddress>,
    ) -> FactoryControl<K> {
        FactoryControl {
            config,
            kernel,
            status,
        }
    }

    /// What the factory address is doing now.
    pub fn status(&self) -> FactoryAddress {
        self.status.borrow().clone()
    }

    /// Applies `update` to the configuration, and answers with the status as it will be
    /// (the service catches up within moments).
    pub async fn set(&self, update: &FactoryAddressUpdate) -> Result<FactoryAddress, FactoryError> {
        if update.enabled.is_none() && update.timing.is_none() {
            return Err(FactoryError::NothingToChange);
        }
        if update.enabled == Some(false)
            && self.config.current().factory_address.enabled
            && !has_other_ipv4(&self.kernel.snapshot().await?)
        {
            return Err(FactoryError::WouldLockOut);
        }
        let (config, u) = (self.config.clone(), update.clone());
        let cfg = crate::store::blocking(move || {
            config.update(|c| {
                if let Some(e) = u.enabled {
                    c.factory_address.enabled = e;
                }
                if let Some(t) = u.timing {
                    c.factory_address.timing = t;
                }
            })
        })
        .await?
        .factory_address;
        tracing::info!(enabled = ?update.enabled, timing = ?update.timing.map(|t| t.as_str()), "factory address settings changed");
        let mut snapshot = self.status();
        snapshot.enabled = cfg.enabled;
        snapshot.timing = cfg.timing;
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TimingProfile;
    use crate::net::fake::{actual, addr, block_on, Fake};

    fn control(a: Actual) -> (tempfile::TempDir, FactoryControl<Fake>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ConfigStore::open(dir.path()));
        let c = FactoryControl::new(
            store,
            Fake::new(a),
            watch::channel(FactoryAddress::default()).1,
        );
        (dir, c)
    }

    fn off() -> FactoryAddressUpdate {
        FactoryAddressUpdate {
            enabled: Some(false),
            timing: None,
        }
    }

    #[test]
    fn off_is_refused_with_only_factory_loopback_and_ipv6_addresses() {
        let mut a = actual();
        a.addresses.push(addr(2, "2001:db8::10/64"));
        let (dir, c) = control(a);
        assert!(matches!(
            block_on(c.set(&off())),
            Err(FactoryError::WouldLockOut)
        ));
        assert!(c.config.current().factory_address.enabled);
        assert!(
            !dir.path().join("appliance.toml").exists(),
            "nothing was written"
        );
        assert!(
            c.kernel.log().is_empty(),
            "nothing was changed in the kernel"
        );
    }

    #[test]
    fn off_is_allowed_with_another_ipv4_address_and_written() {
        let mut a = actual();
        a.addresses.push(addr(3, "192.0.2.50/24"));
        let (_dir, c) = control(a);
        let s = block_on(c.set(&off())).unwrap();
        assert!(!s.enabled);
        assert!(!c.config.current().factory_address.enabled);
        // Already off: turning it off again needs no check; back on always works.
        block_on(c.set(&off())).unwrap();
        block_on(c.set(&FactoryAddressUpdate {
            enabled: Some(true),
            timing: Some(TimingProfile::Rfc),
        }))
        .unwrap();
        let cfg = c.config.current().factory_address;
        assert!(cfg.enabled);
        assert_eq!(cfg.timing, TimingProfile::Rfc);
    }

    #[test]
    fn an_empty_update_is_refused() {
        let (_dir, c) = control(actual());
        assert!(matches!(
            block_on(c.set(&FactoryAddressUpdate::default())),
            Err(FactoryError::NothingToChange)
        ));
    }
}
