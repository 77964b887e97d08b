//! The appliance's settings: a versioned TOML file, `<data>/config/appliance.toml`.
//!
//! ```toml
//! version = 1
//!
//! [factory_address]
//! enabled = true      # claim 169.254.1.x on the first NIC
//! timing = "fast"     # "fast" (about 0.25 s to a usable address) or "rfc" (RFC 5227, 5-9 s)
//! ```
//!
//! The `[network]` section (static addresses, gateways, routes, DNS, host name) is
//! [`NetworkConfig`], documented and validated in `net::model`; absent, it is empty.
//!
//! A missing file means factory defaults. A file that does not parse, or has another
//! schema version, is reported (in the log and in status) and left untouched; the agent
//! runs on factory defaults so the appliance stays reachable. Every change is validated
//! whole, then written atomically (`store::write_atomic`), then published to the parts of
//! the agent that apply it.

use crate::model::netconfig::NetworkConfig;
use crate::store::{self, StoreError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::watch;

/// The schema version this firmware reads and writes.
pub const VERSION: u32 = 1;
pub const FILE: &str = "appliance.toml";

pub use crate::model::TimingProfile;

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactoryAddressConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub timing: TimingProfile,
}

impl Default for FactoryAddressConfig {
    fn default() -> Self {
        FactoryAddressConfig {
            enabled: true,
            timing: TimingProfile::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub version: u32,
    #[serde(default)]
    pub factory_address: FactoryAddressConfig,
    /// Static addresses, routes, DNS and host name (`net::model`); empty by default.
    #[serde(default, skip_serializing_if = "NetworkConfig::is_empty")]
    pub network: NetworkConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: VERSION,
            factory_address: FactoryAddressConfig::default(),
            network: NetworkConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "{path}: schema version {found} is not supported (this firmware reads version {VERSION})"
    )]
    Version { path: PathBuf, found: u32 },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode the configuration: {0}")]
    Encode(#[from] toml::ser::Error),
    #[error("{path}: invalid network settings: {source}")]
    Invalid {
        path: PathBuf,
        source: crate::model::netconfig::ValidationError,
    },
}

impl Config {
    /// Parses and checks a config file's text.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        if config.version != VERSION {
            return Err(ConfigError::Version {
                path: path.to_path_buf(),
                found: config.version,
            });
        }
        config
            .network
            .validate()
            .map_err(|source| ConfigError::Invalid {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(config)
    }

    pub fn to_toml(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string(self)?)
    }
}

/// The config file, the settings in force, and a channel that publishes every change.
pub struct ConfigStore {
    path: PathBuf,
    /// Why the file on disk is not in force, if it is not.
    load_error: Mutex<Option<String>>,
    tx: watch::Sender<Config>,
}

impl ConfigStore {
    /// Loads `<config_dir>/appliance.toml`; a bad file is reported and left as it is.
    pub fn open(config_dir: &Path) -> ConfigStore {
        let path = config_dir.join(FILE);
        let (config, error) = match std::fs::read_to_string(&path) {
            Ok(text) => match Config::parse(&text, &path) {
                Ok(c) => (c, None),
                Err(e) => (Config::default(), Some(e.to_string())),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Config::default(), None),
            Err(source) => (
                Config::default(),
                Some(
                    ConfigError::Read {
                        path: path.clone(),
                        source,
                    }
                    .to_string(),
                ),
            ),
        };
        if let Some(e) = &error {
            tracing::error!("configuration not applied, running on factory defaults: {e}");
        }
        let (tx, _) = watch::channel(config);
        ConfigStore {
            path,
            load_error: Mutex::new(error),
            tx,
        }
    }

    pub fn current(&self) -> Config {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Config> {
        self.tx.subscribe()
    }

    pub fn load_error(&self) -> Option<String> {
        self.load_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies `change` to a copy, writes it atomically, then publishes it. On any error
    /// nothing changes.
    pub fn update(&self, change: impl FnOnce(&mut Config)) -> Result<Config, ConfigError> {
        let mut next = self.current();
        change(&mut next);
        next.version = VERSION;
        next.network
            .validate()
            .map_err(|source| ConfigError::Invalid {
                path: self.path.clone(),
                source,
            })?;
        let text = next.to_toml()?;
        if let Some(dir) = self.path.parent() {
            store::ensure_dir(dir, 0o700)?;
        }
        store::write_atomic(&self.path, text.as_bytes(), 0o600)?;
        *self.load_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.tx.send_replace(next.clone());
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_the_file_is_missing_or_sections_are_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::open(dir.path());
        assert_eq!(store.current(), Config::default());
        assert!(store.current().factory_address.enabled);
        assert_eq!(store.current().factory_address.timing, TimingProfile::Fast);
        assert_eq!(
            Config::parse("version = 1\n", Path::new("x")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn bad_files_are_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        for (text, needle) in [
            ("version = 2\n", "schema version 2"),
            (
                "version = 1\n[factory_address]\ntiming = \"slow\"\n",
                "unknown variant",
            ),
            ("version = 1\ncolour = \"blue\"\n", "unknown field"),
            ("version = ", "appliance.toml"),
        ] {
            std::fs::write(&path, text).unwrap();
            let store = ConfigStore::open(dir.path());
            let err = store.load_error().expect("an error is reported");
            assert!(err.contains(needle), "{err}");
            assert_eq!(store.current(), Config::default());
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                text,
                "the file is not rewritten"
            );
        }
    }

    #[test]
    fn updates_persist_and_are_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::open(dir.path());
        let mut rx = store.subscribe();
        store
            .update(|c| c.factory_address.timing = TimingProfile::Rfc)
            .unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            rx.borrow_and_update().factory_address.timing,
            TimingProfile::Rfc
        );
        let again = ConfigStore::open(dir.path());
        assert_eq!(again.current().factory_address.timing, TimingProfile::Rfc);
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.starts_with("version = 1"), "{text}");
    }

    #[test]
    fn the_network_section_round_trips_and_a_bad_one_is_refused() {
        let text = "version = 1\n[network]\nhostname = \"fw-1\"\n\
                    [[network.interfaces]]\nname = \"eth0\"\n\
                    addresses = [{ address = \"192.0.2.10/24\" }]\n";
        let c = Config::parse(text, Path::new("x")).unwrap();
        assert_eq!(
            c.network.interfaces[0].addresses[0].address.to_string(),
            "192.0.2.10/24"
        );
        assert_eq!(
            Config::parse(&c.to_toml().unwrap(), Path::new("x")).unwrap(),
            c
        );
        assert!(
            !Config::default().to_toml().unwrap().contains("network"),
            "an empty section is not written"
        );

        let bad = "version = 1\n[[network.interfaces]]\nname = \"eth0\"\n\
                   addresses = [{ address = \"192.0.2.0/24\" }]\n";
        let e = Config::parse(bad, Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("network address"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::open(dir.path());
        let err = store.update(|c| c.network.gateways.ipv4 = Some("192.0.2.1".parse().unwrap()));
        assert!(matches!(err, Err(ConfigError::Invalid { .. })));
        assert!(!dir.path().join(FILE).exists(), "nothing was written");
        assert_eq!(store.current(), Config::default());
    }
}
