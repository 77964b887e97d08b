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
    /// Why the configuration file on /data is not in force (the agent runs on factory
    /// defaults until it is fixed or replaced).
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
    /// `persistent`, `volatile` or `unknown` (no record from init).
    pub mode: String,
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
    /// `fast` or `rfc`.
    pub timing: String,
    pub nic: Option<String>,
    pub mac: Option<String>,
    /// The address held, with prefix (`169.254.1.1/24`), once it is usable.
    pub address: Option<String>,
    /// `disabled`, `starting`, `waiting-for-link`, `probing`, `held`, `rate-limited` or `failed`.
    pub state: String,
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
    /// `in-use`, `simultaneous-probe`, `defended` (we kept it) or `lost`.
    pub kind: String,
    /// Seconds since the epoch.
    pub unix_time: u64,
}

/// `PUT /appliance/api/v1/network/factory-address`: fields left out are unchanged.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactoryAddressUpdate {
    pub enabled: Option<bool>,
    pub timing: Option<crate::config::TimingProfile>,
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
