//! The site: what a failover backup pulls from its primary, all of it under `<data>/site/`
//! so that sync can swap the directory whole.
//!
//! ```text
//! <data>/site/
//!   settings.toml   the site settings: a store::Document, schema version 1
//!   files/          the site's file store
//! ```
//!
//! ```toml
//! version = 1
//! revision = 2
//!
//! [email]             # alert e-mail: crate::email::settings
//! enabled = true
//! smtp_host = "smtp.example.net"
//! from = "appliance@example.net"
//! to = ["noc@example.net"]
//! ```
//!
//! The rule that keeps the swap safe: nothing under `<data>/site/` refers to local state
//! (a NIC, an address of this box, its keys, its admin account), and nothing local ever
//! lives here. Local settings are in `<data>/config/` (`crate::config`, `admin.toml`, the
//! TLS identity); a setting that differs between the two boxes of a pair is local.
//!
//! The settings hold the alert e-mail ([`crate::email`]) and the vendor-API accounts; the
//! file store is [`crate::files`]; [`crate::sync`] carries all of it to a backup and swaps
//! the directory whole, and sets the [`Gate`] from the failover role.

pub use crate::email::settings::EmailSettings;
use crate::email::InvalidEmail;
use crate::store::{self, Document, DocumentError, Schema};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The schema version of `settings.toml` this firmware reads and writes.
pub const VERSION: u32 = 1;
pub const SETTINGS_FILE: &str = "settings.toml";
pub const FILES_DIR: &str = "files";

/// The site settings, `<data>/site/settings.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSettings {
    #[serde(default, skip_serializing_if = "EmailSettings::is_unset")]
    pub email: EmailSettings,
    /// The vendor command API's OAuth clients (`crate::admin::api_accounts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_accounts: Vec<crate::admin::api_accounts::ApiAccount>,
}

/// Why site settings are refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidSite {
    #[error("email: {0}")]
    Email(#[from] InvalidEmail),
}

impl Schema for SiteSettings {
    const VERSION: u32 = VERSION;
    type Invalid = InvalidSite;

    fn validate(&self) -> Result<(), InvalidSite> {
        self.email.validate()?;
        Ok(())
    }
}

pub type SiteError = DocumentError<InvalidSite>;

/// Who may use the site now. The failover role and data sync set it; the site's routes
/// (files, e-mail, API accounts: not failover's own, not the peer channel, not the vendor's
/// command API or health) ask it before they act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A primary or a standalone appliance: read and write.
    Open,
    /// A failover backup: its site is a copy of the primary's, refreshed by sync, so it
    /// reads but never writes.
    ReadOnly,
    /// A primary during the final sync of a planned role swap: nothing, so that no write
    /// lands after the copy the backup takes.
    Paused,
}

/// Why the site refused a request.
#[derive(Debug, thiserror::Error)]
pub enum SiteRefused {
    #[error("this appliance is the failover backup: its site is a read-only copy of the primary's; make the change on the primary")]
    BackupReadOnly,
    #[error("the site is paused while a final data sync runs before a planned role swap; try again when the swap is done")]
    Paused,
}

impl SiteRefused {
    /// The HTTP status and stable code.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            SiteRefused::BackupReadOnly => (409, "backup_read_only"),
            SiteRefused::Paused => (503, "site_paused"),
        }
    }
}

/// The site's [`Access`], shared by everything that serves or changes the site.
#[derive(Clone)]
pub struct Gate(std::sync::Arc<tokio::sync::watch::Sender<Access>>);

impl Default for Gate {
    fn default() -> Self {
        Gate(std::sync::Arc::new(tokio::sync::watch::Sender::new(
            Access::Open,
        )))
    }
}

impl Gate {
    pub fn access(&self) -> Access {
        *self.0.borrow()
    }

    pub fn set(&self, access: Access) {
        self.0
            .send_if_modified(|a| std::mem::replace(a, access) != access);
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Access> {
        self.0.subscribe()
    }

    /// Whether the site may be read now.
    pub fn check_read(&self) -> Result<(), SiteRefused> {
        match self.access() {
            Access::Paused => Err(SiteRefused::Paused),
            Access::Open | Access::ReadOnly => Ok(()),
        }
    }

    /// Whether the site may be changed now.
    pub fn check_write(&self) -> Result<(), SiteRefused> {
        match self.access() {
            Access::Paused => Err(SiteRefused::Paused),
            Access::ReadOnly => Err(SiteRefused::BackupReadOnly),
            Access::Open => Ok(()),
        }
    }
}

/// The site directory: its settings document and its file store.
pub struct SiteStore {
    dir: PathBuf,
    settings: Document<SiteSettings>,
    gate: Gate,
}

impl SiteStore {
    /// Loads `<site_dir>/settings.toml` (a bad file is reported and left as it is) and
    /// creates `files/` if it is missing. Neither stops the agent: the site is not what
    /// keeps the appliance reachable, so problems are logged.
    pub fn open(site_dir: &Path) -> SiteStore {
        if let Err(e) = store::ensure_dir(&site_dir.join(FILES_DIR), 0o700) {
            tracing::error!("no site file store: {e}");
        }
        SiteStore {
            dir: site_dir.to_path_buf(),
            settings: Document::load(site_dir.join(SETTINGS_FILE)),
            gate: Gate::default(),
        }
    }

    /// Who may use the site now.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// The directory sync swaps whole.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn settings(&self) -> &Document<SiteSettings> {
        &self.settings
    }

    pub fn files_dir(&self) -> PathBuf {
        self.dir.join(FILES_DIR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_site_directory_holds_the_settings_and_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let site_dir = dir.path().join("site");
        let site = SiteStore::open(&site_dir);
        assert!(site.files_dir().is_dir());
        assert_eq!(site.settings().current(), SiteSettings::default());
        assert!(
            !site_dir.join(SETTINGS_FILE).exists(),
            "opening writes nothing"
        );

        site.settings()
            .update(|s| {
                s.email = toml::from_str(
                    "enabled = true\nsmtp_host = \"smtp.example.net\"\n\
                     from = \"b@example.net\"\nto = [\"noc@example.net\"]\n",
                )
                .unwrap()
            })
            .unwrap();
        let text = std::fs::read_to_string(site_dir.join(SETTINGS_FILE)).unwrap();
        assert!(text.starts_with("version = 1\nrevision = 1\n"), "{text}");
        let again = SiteStore::open(&site_dir);
        assert_eq!(again.settings().current(), site.settings().current());
        assert_eq!(again.settings().revision(), 1);
    }

    #[test]
    fn incomplete_alert_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let site = SiteStore::open(dir.path());
        let err = site
            .settings()
            .update(|s| s.email.enabled = true)
            .unwrap_err();
        assert!(matches!(err, SiteError::Invalid { .. }), "{err}");
        assert!(!dir.path().join(SETTINGS_FILE).exists());
        let e = store::document::parse::<SiteSettings>(
            "version = 1\n[email]\nenabled = true\nto = [\"a@example.net\"]\n",
            Path::new("settings.toml"),
        );
        assert!(e.unwrap_err().to_string().contains("smtp_host"));
    }

    #[test]
    fn a_file_of_the_first_schema_1_firmware_still_loads() {
        // Written before the relay port, security, credentials and sender existed: the new
        // fields are additive, so the schema stays version 1.
        let loaded = store::document::parse::<SiteSettings>(
            "version = 1\nrevision = 3\n[email]\nenabled = true\nto = [\"noc@example.net\"]\n\
             smtp_host = \"smtp.example.net\"\n",
            Path::new("settings.toml"),
        )
        .unwrap();
        let e = loaded.value.email;
        assert!(e.enabled);
        assert_eq!(e.port(), 587, "STARTTLS on the submission port by default");
        assert_eq!(e.from, None);
        assert_eq!(e.to.as_slice()[0].as_str(), "noc@example.net");
    }
}
