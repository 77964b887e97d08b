//! The appliance's own settings, `<data>/config/appliance.toml`: a [`Document`] (typed,
//! versioned, atomic, with a revision counter) of schema `version = 2`.
//!
//! ```toml
//! version = 2
//! revision = 3        # bumped by every write
//!
//! [factory_address]
//! enabled = true      # claim 169.254.1.x on the first NIC
//! timing = "fast"     # "fast" (about 0.25 s to a usable address) or "rfc" (RFC 5227, 5-9 s)
//! ```
//!
//! The `[network]` section (static addresses, gateways, routes, DNS, host name) is
//! [`NetworkConfig`], documented and validated in `net::model`; absent, it is empty. The
//! `[failover]` section ([`FailoverSettings`]) holds the inter-appliance key, the backup
//! settings (`[failover.backup]`) and the selected shared IPs; each part may be absent. The
//! `[ntp]` section ([`NtpSettings`]: `servers = ["192.0.2.1", "ntp.example.net"]`) may be
//! absent too: no servers, NTP off. Version 1 files (the same
//! sections without `revision`, `[failover]` and `[ntp]`) are read as they are and written as
//! version 2 at the next change.
//!
//! These are local settings: like everything under `<data>/config/` (the admin account in
//! `admin.toml`, the TLS identity in `tls/`, the network rollback record) they belong to
//! this box and never travel to a failover peer. What the peer pulls is the site
//! (`crate::site`, under `<data>/site/`).
//!
//! A missing file means factory defaults. A file that does not parse, or has a schema
//! version this firmware cannot read, is reported (in the log and in status) and left
//! untouched; the agent runs on factory defaults so the appliance stays reachable, and
//! changes are refused ([`ConfigError::Unreadable`]) rather than written over it. Every
//! change is validated whole, then written atomically, then published to the parts of the
//! agent that apply it.

use crate::model::netconfig::{NetworkConfig, ValidationError};
pub use crate::model::ntp::NtpSettings;
use crate::store::{document, Document, DocumentError, Schema};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The schema version this firmware reads and writes.
pub const VERSION: u32 = 2;
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

/// The shortest inter-appliance key, in characters.
pub const KEY_MIN_CHARS: usize = 16;
/// The longest inter-appliance key, in characters.
pub const KEY_MAX_CHARS: usize = 256;

/// The inter-appliance pre-shared key: 16 to 256 characters. It is never shown: its
/// `Debug` hides it, and answers carry [`InterApplianceKey::fingerprint`] only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InterApplianceKey(String);

impl InterApplianceKey {
    pub fn new(key: String) -> Result<InterApplianceKey, String> {
        let n = key.chars().count();
        if !(KEY_MIN_CHARS..=KEY_MAX_CHARS).contains(&n) {
            return Err(format!(
                "the inter-appliance key must have {KEY_MIN_CHARS} to {KEY_MAX_CHARS} characters, not {n}"
            ));
        }
        Ok(InterApplianceKey(key))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// What status shows of the key.
    pub fn fingerprint(&self) -> String {
        crate::failover::proof::key_fingerprint(self.as_bytes())
    }
}

impl std::fmt::Debug for InterApplianceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InterApplianceKey({})", self.fingerprint())
    }
}

impl TryFrom<String> for InterApplianceKey {
    type Error = String;
    fn try_from(key: String) -> Result<Self, String> {
        InterApplianceKey::new(key)
    }
}

impl From<InterApplianceKey> for String {
    fn from(k: InterApplianceKey) -> String {
        k.0
    }
}

/// This appliance's failover settings: the inter-appliance key, the backup settings and
/// the choice of shared IPs. They are local: a backup keeps its own, they are never
/// synchronised. Every field may be absent (a version-2 file written before them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<InterApplianceKey>,
    #[serde(default)]
    pub backup: crate::failover::Settings,
    /// Addresses configured on this appliance's NICs that failover owns.
    #[serde(default)]
    pub shared_ips: Vec<std::net::IpAddr>,
}

impl FailoverSettings {
    pub fn is_unset(&self) -> bool {
        *self == FailoverSettings::default()
    }
}

/// The local settings: everything of `/appliance` that lives in `appliance.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub factory_address: FactoryAddressConfig,
    /// Static addresses, routes, DNS and host name (`net::model`); empty by default.
    #[serde(default, skip_serializing_if = "NetworkConfig::is_empty")]
    pub network: NetworkConfig,
    #[serde(default, skip_serializing_if = "FailoverSettings::is_unset")]
    pub failover: FailoverSettings,
    /// The NTP servers; none by default.
    #[serde(default, skip_serializing_if = "NtpSettings::is_unset")]
    pub ntp: NtpSettings,
}

/// Schema version 1: the sections of version 2 but `[failover]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigV1 {
    #[serde(default)]
    factory_address: FactoryAddressConfig,
    #[serde(default)]
    network: NetworkConfig,
}

impl From<ConfigV1> for Config {
    fn from(v1: ConfigV1) -> Config {
        Config {
            factory_address: v1.factory_address,
            network: v1.network,
            failover: FailoverSettings::default(),
            ntp: NtpSettings::default(),
        }
    }
}

/// Why local settings are refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidConfig {
    #[error("invalid network settings: {0}")]
    Network(#[from] ValidationError),
    #[error("shared IP {0} is selected more than once")]
    DuplicateSharedIp(std::net::IpAddr),
}

impl Schema for Config {
    const VERSION: u32 = VERSION;
    type Invalid = InvalidConfig;

    fn validate(&self) -> Result<(), InvalidConfig> {
        self.network.validate()?;
        let mut seen = std::collections::BTreeSet::new();
        for ip in &self.failover.shared_ips {
            if !seen.insert(*ip) {
                return Err(InvalidConfig::DuplicateSharedIp(*ip));
            }
        }
        Ok(())
    }

    fn migrate(version: u32, sections: toml::Table) -> Option<Result<Config, toml::de::Error>> {
        match version {
            1 => Some(sections.try_into::<ConfigV1>().map(Config::from)),
            _ => None,
        }
    }
}

pub type ConfigError = DocumentError<InvalidConfig>;

impl Config {
    /// Parses and checks a config file's text (version 1 or 2).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        document::parse(text, path).map(|loaded| loaded.value)
    }

    /// The file's text (at revision 0).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        document::encode(self, 0, Path::new(FILE))
    }
}

/// The local settings file, the settings in force, and a channel that publishes every change.
pub type ConfigStore = Document<Config>;

impl Document<Config> {
    /// Loads `<config_dir>/appliance.toml`; a bad file is reported and left as it is.
    pub fn open(config_dir: &Path) -> ConfigStore {
        Document::load(config_dir.join(FILE))
    }
}

/// The file, next to `appliance.toml`, that keeps the appliance id made on a machine
/// without a usable SMBIOS UUID.
pub const ID_FILE: &str = "appliance-id";

/// Why the appliance id cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error(transparent)]
    Read(#[from] crate::store::ReadError),
    #[error(transparent)]
    Write(#[from] crate::store::StoreError),
    #[error("no random numbers for a new appliance id")]
    Random,
}

/// This appliance's id (the vendor API's `GUID`): the SMBIOS system UUID when there is a
/// usable one (not all zeros, not all ones), else a random UUID made once and kept in
/// `<config_dir>/appliance-id` (written atomically).
pub fn appliance_id(config_dir: &Path, smbios_uuid: Option<&str>) -> Result<String, IdError> {
    if let Some(u) = smbios_uuid.map(str::trim).filter(|u| usable_uuid(u)) {
        return Ok(u.to_lowercase());
    }
    let path = config_dir.join(ID_FILE);
    if let Some(text) = crate::store::read_if_present(&path)? {
        let kept = text.trim();
        if usable_uuid(kept) {
            return Ok(kept.to_string());
        }
        tracing::warn!(path = %path.display(), "the kept appliance id is not a UUID: making a new one");
    }
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| IdError::Random)?;
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let id = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    crate::store::replace(&path, format!("{id}\n").as_bytes(), 0o644)?;
    Ok(id)
}

/// A UUID in its 8-4-4-4-12 hex form that says something (not nil, not all ones).
fn usable_uuid(u: &str) -> bool {
    let groups: Vec<&str> = u.split('-').collect();
    let shape = groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && groups
            .iter()
            .all(|g| g.bytes().all(|c| c.is_ascii_hexdigit()));
    let digits: String = groups.concat().to_lowercase();
    shape && digits.bytes().any(|c| c != b'0') && digits.bytes().any(|c| c != b'f')
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
            ("version = 3\n", "schema version 3"),
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
        assert!(text.starts_with("version = 2"), "{text}");
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

    /// Today's README example, with a `[network]` section, as firmware that reads only
    /// version 1 writes it.
    const README_V1: &str = r#"version = 1
[factory_address]
enabled = true
timing = "fast"     # or "rfc"

[network]
hostname = "fw-1"
gateways = { ipv4 = "192.0.2.1" }
dns = { servers = ["192.0.2.53"], search = ["example.net"] }
[[network.interfaces]]
name = "eth0"
addresses = [{ address = "192.0.2.10/24", enabled = true }]
[[network.routes]]
destination = "198.51.100.0/24"
gateway = "192.0.2.254"
"#;

    #[test]
    fn a_version_1_file_migrates_to_version_2_at_the_next_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        std::fs::write(&path, README_V1).unwrap();
        let store = ConfigStore::open(dir.path());
        assert_eq!(store.load_error(), None);
        let c = store.current();
        assert!(c.factory_address.enabled);
        assert_eq!(c.network.hostname.as_ref().unwrap().to_string(), "fw-1");
        assert_eq!(c.network.gateways.ipv4.unwrap().to_string(), "192.0.2.1");
        assert_eq!(c.network.dns.servers[0].to_string(), "192.0.2.53");
        assert_eq!(c.network.interfaces[0].name.to_string(), "eth0");
        assert_eq!(c.network.routes[0].gateway.to_string(), "192.0.2.254");
        assert_eq!(c.failover, FailoverSettings::default());
        assert_eq!(store.revision(), 0);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            README_V1,
            "reading does not write"
        );

        let after = store
            .update(|c| c.factory_address.timing = TimingProfile::Rfc)
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("version = 2\nrevision = 1\n"),
            "written in version 2: {text}"
        );
        let again = ConfigStore::open(dir.path());
        assert_eq!(again.current(), after);
        assert_eq!(again.current().network, c.network, "nothing was lost");
        assert_eq!(again.revision(), 1);
    }

    #[test]
    fn a_file_that_does_not_parse_is_not_overwritten_by_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let broken = "version = 1\n[factory_address]\nenabled = false\ntiming = \"slow\"\n";
        std::fs::write(&path, broken).unwrap();
        let store = ConfigStore::open(dir.path());
        let err = store
            .update(|c| c.factory_address.timing = TimingProfile::Rfc)
            .unwrap_err();
        assert!(matches!(err, ConfigError::Unreadable { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("appliance.toml does not parse: unknown variant `slow`"),
            "{message}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), broken);
        assert_eq!(store.current(), Config::default());
    }

    #[test]
    fn the_failover_section_reads_when_absent_or_partial_and_round_trips() {
        let c = Config::parse("version = 2\n[failover]\n", Path::new("x")).unwrap();
        assert_eq!(c, Config::default());
        let e = Config::parse("version = 2\n[failover]\nkey = \"short\"\n", Path::new("x"));
        assert!(e.unwrap_err().to_string().contains("16 to 256 characters"));
        let e = Config::parse("version = 2\n[failover]\ncolour = 1\n", Path::new("x"));
        assert!(e.unwrap_err().to_string().contains("unknown field"));
        let e = Config::parse("version = 1\n[failover]\n", Path::new("x"));
        assert!(
            e.unwrap_err().to_string().contains("unknown field"),
            "version 1 had no failover section"
        );
        assert!(!Config::default().to_toml().unwrap().contains("failover"));

        let text = "version = 2\n[failover]\nshared_ips = [\"192.0.2.100\"]\n\
                    [failover.backup]\nautomatic_failover = true\n";
        let c = Config::parse(text, Path::new("x")).unwrap();
        assert_eq!(
            c.failover.shared_ips,
            vec!["192.0.2.100".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(c.failover.backup.automatic_failover);
        assert!(c.failover.backup.backup_operations, "left out: the default");
        assert_eq!(c.failover.key, None);

        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::open(dir.path());
        let key = InterApplianceKey::new("correct horse battery".into()).unwrap();
        store
            .update(|c| {
                c.failover.key = Some(key.clone());
                c.failover.backup.primary_timeout_seconds =
                    crate::failover::PrimaryTimeout::try_from(2.5).unwrap();
            })
            .unwrap();
        let again = ConfigStore::open(dir.path());
        assert_eq!(again.load_error(), None);
        assert_eq!(again.current().failover.key, Some(key.clone()));
        assert_eq!(again.current().failover.backup.timeout().as_millis(), 2500);
        assert!(!format!("{key:?}").contains("horse"), "Debug hides the key");

        let err = store.update(|c| {
            c.failover.shared_ips = vec!["192.0.2.1".parse().unwrap(); 2];
        });
        assert!(matches!(err, Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn the_ntp_section_reads_when_absent_round_trips_and_refuses_bad_servers() {
        assert_eq!(
            Config::parse("version = 2\n", Path::new("x")).unwrap().ntp,
            NtpSettings::default()
        );
        assert!(!Config::default().to_toml().unwrap().contains("ntp"));
        let text = "version = 2\n[ntp]\nservers = [\"192.0.2.1\", \"ntp.example.net\"]\n";
        let c = Config::parse(text, Path::new("x")).unwrap();
        let names: Vec<String> = c
            .ntp
            .servers
            .as_slice()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, ["192.0.2.1", "ntp.example.net"]);
        assert_eq!(
            Config::parse(&c.to_toml().unwrap(), Path::new("x")).unwrap(),
            c
        );
        let e = Config::parse("version = 2\n[ntp]\nservers = [\"a b\"]\n", Path::new("x"));
        assert!(e.unwrap_err().to_string().contains("neither an IP address"));
        let e = Config::parse("version = 1\n[ntp]\n", Path::new("x"));
        assert!(e.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn key_length_is_checked_in_characters() {
        assert!(InterApplianceKey::new("a".repeat(15)).is_err());
        assert!(InterApplianceKey::new("a".repeat(16)).is_ok());
        assert!(InterApplianceKey::new("é".repeat(16)).is_ok());
        assert!(InterApplianceKey::new("a".repeat(256)).is_ok());
        assert!(InterApplianceKey::new("a".repeat(257)).is_err());
    }

    #[test]
    fn the_appliance_id_is_smbios_else_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let smbios = "4C4C4544-0042-3510-8048-B4C04F564432";
        assert_eq!(
            appliance_id(dir.path(), Some(smbios)).unwrap(),
            smbios.to_lowercase()
        );
        assert!(
            !dir.path().join(ID_FILE).exists(),
            "nothing kept for an SMBIOS id"
        );
        let first = appliance_id(dir.path(), None).unwrap();
        assert!(usable_uuid(&first), "{first}");
        assert_eq!(&first[14..15], "4", "version 4: {first}");
        for unusable in [
            None,
            Some("00000000-0000-0000-0000-000000000000"),
            Some("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"),
            Some("garbage"),
        ] {
            assert_eq!(
                appliance_id(dir.path(), unusable).unwrap(),
                first,
                "{unusable:?}"
            );
        }
        let text = std::fs::read_to_string(dir.path().join(ID_FILE)).unwrap();
        assert_eq!(text.trim(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            appliance_id(other.path(), None).unwrap(),
            first,
            "random per appliance"
        );
    }
}
