//! The JSON bodies of the API, shared by the server and `appliancectl`.

use serde::{Deserialize, Serialize};

/// Every error body: a stable code for scripts and a message for people.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// `GET /appliance/api/v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub product: String,
    pub version: String,
    pub build: String,
    pub hostname: String,
    pub uptime_seconds: f64,
    pub boot_timeline: Vec<Milestone>,
    pub data: DataStatus,
    pub last_shutdown: Option<LastShutdown>,
    pub factory_address: FactoryAddress,
    pub agent: AgentStatus,
    /// Status > Basics: identity, firmware, kernel, CPU, memory, disks, NICs.
    pub basics: Basics,
    /// The report of the last erase for return (RMA reset) of the data disk: the one done
    /// at this boot, or the record of an earlier one kept in the disk's reserved tail.
    pub erase_report: Option<EraseReport>,
    /// Why the configuration file on /data is not in force (the agent runs on factory
    /// defaults until it is fixed or replaced). (An unusable `admin.toml` refuses every
    /// login, status included: its reason is in that refusal, 503
    /// `admin_store_unreadable`, and on the console.)
    pub config_error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Milestone {
    pub name: String,
    /// Milliseconds since the kernel started.
    pub ms: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataStatus {
    pub mode: DataMode,
    pub device: Option<String>,
    pub formatted_this_boot: bool,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LastShutdown {
    pub kind: String,
    pub reason: String,
    pub unix_time: Option<u64>,
}

/// `GET /appliance/api/v1/network/factory-address` (also part of status).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FactoryAddress {
    pub enabled: bool,
    pub timing: TimingProfile,
    pub nic: Option<String>,
    pub mac: Option<String>,
    /// The address held, with prefix (`169.254.1.1/24`), once it is usable.
    pub address: Option<String>,
    pub state: FactoryState,
    /// The candidate being probed.
    pub probing: Option<String>,
    /// Every candidate was found taken since the last success; retrying at the rate limit.
    pub exhausted: bool,
    /// Milliseconds from link up to the address being usable, for the last claim.
    pub usable_after_ms: Option<f64>,
    /// Conflicts seen, oldest first (at most 32).
    pub conflicts: Vec<FactoryConflict>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FactoryConflict {
    pub address: String,
    /// The other host's MAC.
    pub mac: String,
    pub kind: ConflictKind,
    /// Seconds since the epoch.
    pub unix_time: u64,
}

/// `PUT /appliance/api/v1/network/factory-address`: fields left out are unchanged.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactoryAddressUpdate {
    pub enabled: Option<bool>,
    pub timing: Option<TimingProfile>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentStatus {
    pub pid: u32,
    /// Seconds since this agent process started.
    pub running_seconds: f64,
    pub debug_hooks: bool,
    /// Resident memory of the agent, in KiB.
    pub rss_kib: Option<u64>,
    /// Resident memory of init (PID 1), in KiB, when the agent runs under it.
    pub init_rss_kib: Option<u64>,
    /// The agent's long-running tasks.
    #[serde(default)]
    pub tasks: Vec<TaskStatus>,
    /// Log lines dropped since start because the console could not keep up.
    #[serde(default)]
    pub log_dropped: u64,
}

/// One of the agent's long-running tasks (`runtime::Tasks`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskStatus {
    pub name: String,
    pub running: bool,
    /// How often it ended or panicked and was started again.
    pub restarts: u32,
    /// How its last run ended (`ended`, `panicked`), if it was restarted.
    pub last_exit: Option<String>,
}

/// `POST /appliance/api/v1/system/{shutdown,reboot}` (the body is optional).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    /// Logged by init and kept as the last shutdown reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// Wait this long before going down (0 to 3600; default 0).
    #[serde(default)]
    pub delay_seconds: Option<u32>,
}

/// The answer to a power request, sent before the appliance goes down.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PowerAccepted {
    pub action: String,
    pub delay_seconds: u32,
    pub message: String,
}

/// `POST /appliance/api/v1/login`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// The session ends after this long without use (and 12 h after login at most).
    pub expires_in_seconds: u64,
    /// The factory default password is in force: change it before anything else.
    pub must_change_password: bool,
}

/// `POST /appliance/api/v1/system/admin/password` (no token needed: the current password
/// proves who is asking).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    #[serde(default)]
    pub username: Option<String>,
    pub current_password: String,
    pub new_password: String,
    /// Keep the API tokens (by default a password change revokes them all).
    #[serde(default)]
    pub keep_tokens: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Message {
    pub message: String,
}

/// What an API token may do: `read` calls GET routes only; `admin` calls every route.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    Read,
    #[default]
    Admin,
}

impl std::fmt::Display for TokenScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenScope::Read => "read",
            TokenScope::Admin => "admin",
        })
    }
}

/// `POST /appliance/api/v1/system/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub name: String,
    #[serde(default)]
    pub expires_in_days: Option<u32>,
    /// `admin` when left out.
    #[serde(default)]
    pub scope: TokenScope,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewApiToken {
    pub name: String,
    pub scope: TokenScope,
    /// Shown once; only its hash is kept.
    pub token: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiToken {
    pub name: String,
    pub created_unix: u64,
    pub expires_unix: Option<u64>,
    pub scope: TokenScope,
}

/// Status > Basics.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Basics {
    pub identity: SystemIdentity,
    pub firmware_version: String,
    pub firmware_build: String,
    pub kernel: String,
    pub cpu: Cpu,
    pub memory: Memory,
    pub disks: Vec<Disk>,
    pub nics: Vec<NicSummary>,
    /// When a setting under /data/config last changed (seconds since the epoch).
    pub last_config_change_unix: Option<u64>,
}

/// SMBIOS system information (type 1).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SystemIdentity {
    pub manufacturer: Option<String>,
    pub product_name: Option<String>,
    pub serial_number: Option<String>,
    pub uuid: Option<String>,
    /// `smbios`, or why there is none.
    pub source: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cpu {
    pub model: Option<String>,
    pub logical_cpus: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Memory {
    pub total_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Disk {
    pub name: String,
    pub size_bytes: u64,
    pub model: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NicSummary {
    pub name: String,
    pub mac: Option<String>,
    pub driver: Option<String>,
}

/// `GET /appliance/api/v1/system/certificate`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    pub subject_alt_names: Vec<String>,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub self_signed: bool,
    pub chain_length: usize,
    pub sha256_fingerprint: String,
}

/// `PUT /appliance/api/v1/system/certificate`: a chain (leaf first) and its key, PEM.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateImport {
    pub chain_pem: String,
    pub key_pem: String,
    /// For a key in encrypted PKCS#8 form.
    #[serde(default)]
    pub passphrase: Option<String>,
}

/// `POST /appliance/api/v1/system/certificate/export`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateExportRequest {
    /// Protect the exported key with this passphrase (8 characters or more). Required
    /// unless `unencrypted` is true.
    #[serde(default)]
    pub passphrase: Option<String>,
    /// Export the key in plain text (no passphrase): must be asked for explicitly.
    #[serde(default)]
    pub unencrypted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertificateExport {
    pub chain_pem: String,
    pub key_pem: String,
    pub key_encrypted: bool,
}

/// `POST /appliance/api/v1/system/reset`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// `config`: settings, keys, certificates, site data, failover and logs wiped; back at
    /// 169.254.1.1 with admin/password. `rma`: the same after overwriting the whole data
    /// disk with zeros and checking it; then the appliance powers off, ready to ship.
    pub level: ResetLevelName,
    /// Seconds before the reboot that carries the reset out (0 to 3600; default 0). Until
    /// then `DELETE /system/reset` cancels it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<u32>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ResetLevelName {
    Config,
    Rma,
}

/// A secure erase, as init reported it (the record init writes, shared through `proto`).
pub use appliance_proto::state::EraseReport;

/// Where `/data` lives this boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataMode {
    /// On the data disk.
    Persistent,
    /// In memory: nothing survives a reboot (see `detail`).
    Volatile,
    /// Init left no record (the agent runs outside the appliance).
    Unknown,
}

impl DataMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DataMode::Persistent => "persistent",
            DataMode::Volatile => "volatile",
            DataMode::Unknown => "unknown",
        }
    }
}

/// The factory-address timing profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TimingProfile {
    /// About 200-300 ms from start to a usable address (see `net::acd::Timing::FAST`).
    #[default]
    Fast,
    /// RFC 5227's own constants: 5 to 9 s.
    Rfc,
}

impl TimingProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            TimingProfile::Fast => "fast",
            TimingProfile::Rfc => "rfc",
        }
    }
}

/// What the factory address is doing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FactoryState {
    /// Turned off in the settings.
    Disabled,
    /// The service has not looked at the NIC yet.
    #[default]
    Starting,
    Idle,
    WaitingForLink,
    Probing,
    Held,
    /// Every candidate was taken recently; retrying at the RFC 5227 rate limit.
    RateLimited,
    /// The service hit an error (see `error`) and retries.
    Failed,
}

impl FactoryState {
    pub fn as_str(self) -> &'static str {
        match self {
            FactoryState::Disabled => "disabled",
            FactoryState::Starting => "starting",
            FactoryState::Idle => "idle",
            FactoryState::WaitingForLink => "waiting-for-link",
            FactoryState::Probing => "probing",
            FactoryState::Held => "held",
            FactoryState::RateLimited => "rate-limited",
            FactoryState::Failed => "failed",
        }
    }
}

/// An RFC 5227 address conflict, as conflict detection saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictKind {
    /// While probing, another host answered or announced with the address.
    InUse,
    /// While probing, another host probed for the same address and had the lower MAC.
    SimultaneousProbe,
    /// While holding the address, another host claimed it; we defended and kept it.
    Defended,
    /// While holding the address, another host claimed it and we gave it up.
    Lost,
}

impl ConflictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::InUse => "in-use",
            ConflictKind::SimultaneousProbe => "simultaneous-probe",
            ConflictKind::Defended => "defended",
            ConflictKind::Lost => "lost",
        }
    }

    /// Whether the address is gone (the machine is finished).
    pub fn is_loss(self) -> bool {
        !matches!(self, ConflictKind::Defended)
    }
}

/// Status enums print, and compare with, their wire names (`"held"`, `"in-use"`, ...).
macro_rules! wire_name {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    )*};
}
pub(crate) use wire_name;
wire_name!(DataMode, TimingProfile, FactoryState, ConflictKind);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_enums_keep_their_wire_names() {
        let json = |v: &dyn erased::Json| v.json();
        assert_eq!(json(&FactoryState::WaitingForLink), "\"waiting-for-link\"");
        assert_eq!(json(&FactoryState::RateLimited), "\"rate-limited\"");
        assert_eq!(
            json(&ConflictKind::SimultaneousProbe),
            "\"simultaneous-probe\""
        );
        assert_eq!(json(&TimingProfile::Rfc), "\"rfc\"");
        assert_eq!(json(&DataMode::Persistent), "\"persistent\"");
        assert_eq!(
            json(&crate::model::AddressOrigin::LinkLocal),
            "\"link-local\""
        );
        assert_eq!(json(&crate::model::DadState::DadFailed), "\"dad-failed\"");
        for s in [
            FactoryState::Disabled,
            FactoryState::Starting,
            FactoryState::Idle,
            FactoryState::WaitingForLink,
            FactoryState::Probing,
            FactoryState::Held,
            FactoryState::RateLimited,
            FactoryState::Failed,
        ] {
            assert_eq!(json(&s), format!("\"{s}\""), "as_str and serde agree");
        }
    }

    mod erased {
        pub trait Json {
            fn json(&self) -> String;
        }
        impl<T: serde::Serialize> Json for T {
            fn json(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }
}
