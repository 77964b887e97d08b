//! The JSON bodies of the `/network/...` API (besides the factory address), shared by the
//! server and `appliancectl`. The configuration itself travels as
//! [`NetworkConfig`](crate::model::netconfig::NetworkConfig), the same schema as the file.

use crate::model::netconfig::{Family, Hostname, NetworkConfig};
use crate::model::ConflictKind;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// `GET /network/interfaces`: one NIC as the kernel and the configuration see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub index: u32,
    pub mac: Option<String>,
    /// The kernel driver (`virtio_net`, `e1000e`, ...) or, for a virtual link, its type.
    pub driver: Option<String>,
    /// `ethernet`, `loopback` or the virtual link type.
    pub kind: String,
    /// Administratively up.
    pub admin_up: bool,
    /// Up with carrier: frames can flow.
    pub carrier: bool,
    /// RFC 2863 operational state (`up`, `down`, `lowerlayerdown`, ...).
    pub operstate: String,
    pub speed_mbps: Option<u32>,
    /// `full` or `half`, where the driver knows.
    pub duplex: Option<String>,
    pub mtu: Option<u32>,
    /// Named in the network configuration: the agent owns its addresses.
    pub managed: bool,
    pub addresses: Vec<NicAddress>,
}

/// An address on a NIC: configured, present, or both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicAddress {
    /// With prefix: `192.0.2.10/24`.
    pub address: String,
    pub family: Family,
    /// In the configuration.
    pub configured: bool,
    /// Its `enabled` flag, for a configured address.
    pub enabled: Option<bool>,
    /// On the NIC now.
    pub present: bool,
    pub origin: AddressOrigin,
    /// IPv6 duplicate address detection still running, or failed.
    pub state: Option<DadState>,
}

/// Who put an address on a NIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressOrigin {
    /// The network configuration.
    Config,
    /// The factory address service (169.254.1.0/24).
    Factory,
    /// The kernel: IPv6 link-local.
    LinkLocal,
    /// The kernel: IPv6 autoconfiguration.
    Autoconf,
    /// Someone else.
    Other,
}

impl AddressOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressOrigin::Config => "config",
            AddressOrigin::Factory => "factory",
            AddressOrigin::LinkLocal => "link-local",
            AddressOrigin::Autoconf => "autoconf",
            AddressOrigin::Other => "other",
        }
    }
}

/// IPv6 duplicate address detection on an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DadState {
    Tentative,
    DadFailed,
}

impl DadState {
    pub fn as_str(self) -> &'static str {
        match self {
            DadState::Tentative => "tentative",
            DadState::DadFailed => "dad-failed",
        }
    }
}

/// `PATCH /network/interfaces/{nic}/addresses/{ip}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnabledRequest {
    pub enabled: bool,
}

/// `PUT /network/gateways/{family}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayRequest {
    pub gateway: IpAddr,
}

/// `PUT /network/hostname`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostnameRequest {
    pub hostname: Hostname,
}

/// `GET /network/hostname`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostnameView {
    /// The name the kernel has now.
    pub hostname: String,
    /// The configured name; none means the factory default.
    pub configured: Option<String>,
}

/// `GET /network/routes`: what is configured and what the kernel's main table holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoutesView {
    pub gateways: crate::model::netconfig::Gateways,
    pub routes: Vec<crate::model::netconfig::RouteConfig>,
    pub kernel: Vec<KernelRoute>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelRoute {
    /// With prefix; `0.0.0.0/0` and `::/0` are the default routes.
    pub destination: String,
    pub gateway: Option<String>,
    pub nic: Option<String>,
    /// `rtm_protocol`: 2 the kernel's own, 200 the agent's, others someone else's.
    pub protocol: u8,
    /// Installed by the agent from the configuration.
    pub managed: bool,
}

/// A change that is undone unless confirmed in time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    pub change: String,
    pub confirm_within_seconds: u64,
    /// When the previous configuration comes back (seconds since the epoch).
    pub deadline_unix: u64,
    pub seconds_left: u64,
    pub message: String,
}

/// The answer to every change of the network configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangeOutcome {
    pub message: String,
    /// The network configuration now in force.
    pub config: NetworkConfig,
    /// How the kernel was brought to it.
    pub report: ReconcileReport,
    pub pending: Option<PendingChange>,
}

/// `GET /network/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub report: ReconcileReport,
    pub pending: Option<PendingChange>,
    /// Every address conflict seen, refused changes included (oldest first, at most 32).
    pub conflict_history: Vec<AddressConflict>,
}

/// `POST /network/confirm`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Confirmed {
    pub message: String,
}

/// `POST /network/test/tcp`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpTestRequest {
    /// An IP address or a host name.
    pub host: String,
    pub port: u16,
    /// 100 to 30000; default 3000.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TcpTestResult {
    pub host: String,
    pub port: u16,
    pub connected: bool,
    /// The address that answered.
    pub address: Option<String>,
    pub elapsed_ms: f64,
    pub error: Option<String>,
}

/// `POST /network/test/ping`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingRequest {
    pub host: String,
    /// 1 to 10; default 3.
    #[serde(default)]
    pub count: Option<u32>,
    /// 200 to 5000; default 1000.
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// How long to wait for each reply: 100 to 10000; default 1000.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PingResult {
    pub host: String,
    pub address: Option<String>,
    pub sent: u32,
    pub received: u32,
    pub replies: Vec<PingReply>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PingReply {
    pub seq: u16,
    pub rtt_ms: f64,
}

/// `POST /network/test/dns`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsLookupRequest {
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DnsLookupResult {
    pub name: String,
    pub addresses: Vec<String>,
    pub elapsed_ms: f64,
    pub error: Option<String>,
}

/// A difference between configuration and kernel that was not closed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub subject: String,
    pub reason: String,
}

impl Difference {
    pub fn new(subject: impl Into<String>, reason: impl Into<String>) -> Difference {
        Difference {
            subject: subject.into(),
            reason: reason.into(),
        }
    }
}

/// An address another host answered for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressConflict {
    pub nic: String,
    pub address: String,
    /// The other host's MAC.
    pub mac: String,
    /// Seconds since the epoch.
    pub unix_time: u64,
    /// `in-use` (another host answered our probe: not added, or the change refused) or
    /// `defended` (another host claimed an address we hold: we announced it and kept it).
    #[serde(default = "in_use")]
    pub kind: ConflictKind,
}

fn in_use() -> ConflictKind {
    ConflictKind::InUse
}

/// The outcome of the last reconciliation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// When it ran (seconds since the epoch); 0 before the first run.
    pub unix_time: u64,
    /// The kernel matches the configuration.
    pub in_sync: bool,
    /// What this run changed.
    pub applied: Vec<String>,
    /// What it could not change, and why.
    pub unresolved: Vec<Difference>,
    /// Configured IPv4 addresses another host holds (not configured here).
    pub conflicts: Vec<AddressConflict>,
}

super::system::wire_name!(AddressOrigin, DadState);
