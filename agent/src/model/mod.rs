//! The shapes that travel: the JSON bodies of the API (shared by the server and
//! `appliancectl`), the network settings schema shared by the settings file and the API,
//! and the validated newtypes in them (`NicName`, `IpCidr`, `Hostname`, ...).
//!
//! This layer sits below both the domain (`net`, `system`, `admin`, `tls`) and the API:
//! it imports neither, so the API depends on the domain and never the reverse.
//!
//! | module | what |
//! | --- | --- |
//! | [`netconfig`] | the `[network]` settings: NICs, addresses, gateways, routes, DNS, host name, and their validation |
//! | [`network`] | network views: NIC inventory, routes, change outcomes, reconcile reports, utilities |
//! | [`ntp`] | the NTP servers (`[ntp]` of the settings file) and the clock's status |
//! | [`system`] | status, Status > Basics, admin, tokens, certificates, power, reset, errors |

pub mod netconfig;
pub mod network;
pub mod ntp;
pub mod system;

pub use network::*;
pub use system::*;

/// Seconds since the Unix epoch by the wall clock (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix seconds as RFC 3339 (UTC); empty if out of range.
pub fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
