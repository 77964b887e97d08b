//! The pending-rollback record: `<data>/config/network-rollback.toml`.
//!
//! A change made with a confirmation window first writes the network configuration it
//! replaces here (atomically), then the new configuration. Confirming removes the record;
//! so does rolling back, after the old configuration is written again. A record found at
//! start means a change was never confirmed (the agent or the appliance restarted inside
//! the window): the agent restores the configuration it holds before applying anything.
//!
//! ```toml
//! version = 1
//! change = "add 192.0.2.10/24 to eth0"
//! created_unix = 1767225600
//! confirm_within_seconds = 60
//! [previous]          # the network section before the change
//! ...
//! ```

use crate::model::netconfig::NetworkConfig;
use crate::store::{self, StoreError};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};

pub const FILE: &str = "network-rollback.toml";
const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRecord {
    pub version: u32,
    /// What the unconfirmed change did.
    pub change: String,
    pub created_unix: u64,
    pub confirm_within_seconds: u64,
    /// The network configuration to restore.
    pub previous: NetworkConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot encode the rollback record: {0}")]
    Encode(#[from] toml::ser::Error),
}

impl RollbackRecord {
    pub fn new(change: String, confirm_within_seconds: u64, previous: NetworkConfig) -> Self {
        RollbackRecord {
            version: VERSION,
            change,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            confirm_within_seconds,
            previous,
        }
    }
}

pub fn path(config_dir: &Path) -> PathBuf {
    config_dir.join(FILE)
}

/// Writes the record atomically and durably.
pub fn save(config_dir: &Path, record: &RollbackRecord) -> Result<(), RollbackError> {
    store::ensure_dir(config_dir, 0o700)?;
    let text = toml::to_string(record)?;
    store::write_atomic(&path(config_dir), text.as_bytes(), 0o600)?;
    Ok(())
}

/// The record, if there is one.
pub fn load(config_dir: &Path) -> Result<Option<RollbackRecord>, RollbackError> {
    let p = path(config_dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StoreError { path: p, source }.into()),
    };
    let record: RollbackRecord = toml::from_str(&text).map_err(|e| RollbackError::Parse {
        path: p.clone(),
        message: e.message().to_string(),
    })?;
    if record.version != VERSION {
        return Err(RollbackError::Parse {
            path: p,
            message: format!("record version {} is not supported", record.version),
        });
    }
    Ok(Some(record))
}

/// Removes the record durably (the directory is synced); a missing record is fine.
pub fn remove(config_dir: &Path) -> Result<(), RollbackError> {
    let p = path(config_dir);
    let wrap = |source| StoreError {
        path: p.clone(),
        source,
    };
    match std::fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(wrap(e).into()),
    }
    File::open(config_dir)
        .and_then(|d| d.sync_all())
        .map_err(wrap)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_go_away() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let previous: NetworkConfig = serde_json::from_str(
            r#"{"hostname": "fw-1", "gateways": {"ipv4": "192.0.2.1"},
                "interfaces": [{"name": "eth0", "addresses": [{"address": "192.0.2.10/24"}]}]}"#,
        )
        .unwrap();
        let rec = RollbackRecord::new("add 192.0.2.11/24 to eth0".into(), 60, previous);
        save(dir.path(), &rec).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(rec));
        remove(dir.path()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        remove(dir.path()).unwrap();

        let empty = RollbackRecord::new("x".into(), 5, NetworkConfig::default());
        save(dir.path(), &empty).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(empty));
    }

    #[test]
    fn a_bad_record_is_an_error_not_a_silent_skip() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "version = 1\n").unwrap();
        assert!(matches!(load(dir.path()), Err(RollbackError::Parse { .. })));
    }
}
