//! The pending-rollback record: `<data>/config/network-rollback.toml`.
//!
//! A change made with a confirmation window first writes the network configuration it
//! replaces here (atomically), then the new configuration. Confirming removes the record;
//! so does rolling back, after the old configuration is written again. A record found at
//! start means a change was never confirmed (the agent or the appliance restarted inside
//! the window): the agent restores the configuration it holds before applying anything.
//!
//! The record is in the `store::Document` format (schema `version = 1`, a `revision`),
//! read and written with `document::read_file` and `write_file`: it is there or not, so it
//! has no defaults and no value in force. Each record is written once, at revision 1. It is
//! local, like all of `<data>/config/`.
//!
//! ```toml
//! version = 1
//! revision = 1
//! change = "add 192.0.2.10/24 to eth0"
//! created_unix = 1767225600
//! confirm_within_seconds = 60
//! [previous]          # the network section before the change
//! ...
//! ```

use crate::model::netconfig::NetworkConfig;
use crate::store::{document, DocumentError, Schema, StoreError};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::fs::File;
use std::path::{Path, PathBuf};

pub const FILE: &str = "network-rollback.toml";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRecord {
    /// What the unconfirmed change did.
    pub change: String,
    pub created_unix: u64,
    pub confirm_within_seconds: u64,
    /// The network configuration to restore.
    pub previous: NetworkConfig,
}

impl Schema for RollbackRecord {
    const VERSION: u32 = 1;
    type Invalid = Infallible;

    /// `previous` is what was in force: it was valid then, and restoring it must not fail.
    fn validate(&self) -> Result<(), Infallible> {
        Ok(())
    }
}

pub type RollbackError = DocumentError<Infallible>;

impl RollbackRecord {
    pub fn new(change: String, confirm_within_seconds: u64, previous: NetworkConfig) -> Self {
        RollbackRecord {
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
    document::write_file(&path(config_dir), record, 1)
}

/// The record, if there is one.
pub fn load(config_dir: &Path) -> Result<Option<RollbackRecord>, RollbackError> {
    Ok(document::read_file(&path(config_dir))?.map(|loaded| loaded.value))
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

    #[test]
    fn a_record_of_another_version_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let rec = RollbackRecord::new("x".into(), 5, NetworkConfig::default());
        save(dir.path(), &rec).unwrap();
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert!(text.starts_with("version = 1\nrevision = 1\n"), "{text}");
        std::fs::write(path(dir.path()), text.replace("version = 1", "version = 2")).unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(RollbackError::Version { found: 2, .. })
        ));
    }
}
