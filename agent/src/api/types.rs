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

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FactoryAddress {
    pub nic: Option<String>,
    pub address: Option<String>,
    pub state: String,
    pub error: Option<String>,
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
