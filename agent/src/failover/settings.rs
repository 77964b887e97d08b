//! The backup settings: how this appliance behaves while it is the backup (and, for the
//! test IPs, while it is the primary). They belong to one appliance and are never
//! synchronised: a setting changed on one box does not travel to the other.
//!
//! `PUT /login/api/v1/failover/settings` takes a [`SettingsUpdate`]: fields left out (or
//! `null`) keep their values. Values are checked while parsing, so a bad one is refused
//! with a clear message and changes nothing.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

/// The shortest primary timeout: a fifth of a second.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(200);
/// The longest primary timeout: a day.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);
/// The default primary timeout: ten minutes, the value the vendor's guide suggests for a
/// backup. A pair that must fail over fast sets a shorter one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// At most this many test IPs (each round pings all of them at once).
pub const MAX_TEST_IPS: usize = 16;
/// The heartbeat interval never exceeds this, however long the timeout.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(1);

/// How long the primary must be silent before the backup acts: 0.2 s to 86400 s, in
/// seconds with fractions on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct PrimaryTimeout(Duration);

impl PrimaryTimeout {
    pub fn new(d: Duration) -> Result<PrimaryTimeout, String> {
        if (MIN_TIMEOUT..=MAX_TIMEOUT).contains(&d) {
            Ok(PrimaryTimeout(d))
        } else {
            Err(format!(
                "primary_timeout_seconds must be between {} and {} seconds, not {}",
                MIN_TIMEOUT.as_secs_f64(),
                MAX_TIMEOUT.as_secs_f64(),
                d.as_secs_f64()
            ))
        }
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl Default for PrimaryTimeout {
    fn default() -> Self {
        PrimaryTimeout(DEFAULT_TIMEOUT)
    }
}

impl TryFrom<f64> for PrimaryTimeout {
    type Error = String;
    fn try_from(secs: f64) -> Result<Self, String> {
        let limits = MIN_TIMEOUT.as_secs_f64()..=MAX_TIMEOUT.as_secs_f64();
        if !secs.is_finite() || !limits.contains(&secs) {
            return Err(format!(
                "primary_timeout_seconds must be between {} and {} seconds, not {secs}",
                limits.start(),
                limits.end()
            ));
        }
        // Whole milliseconds: the heartbeat and the ping window are derived from it.
        let ms = (secs * 1000.0).round() as u64;
        PrimaryTimeout::new(Duration::from_millis(ms))
    }
}

impl From<PrimaryTimeout> for f64 {
    fn from(t: PrimaryTimeout) -> f64 {
        t.0.as_secs_f64()
    }
}

/// The network connectivity test IPs: unicast addresses, each listed once, at most
/// [`MAX_TEST_IPS`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<IpAddr>", into = "Vec<IpAddr>")]
pub struct TestIps(Vec<IpAddr>);

impl TestIps {
    pub fn as_slice(&self) -> &[IpAddr] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<Vec<IpAddr>> for TestIps {
    type Error = String;
    fn try_from(ips: Vec<IpAddr>) -> Result<Self, String> {
        if ips.len() > MAX_TEST_IPS {
            return Err(format!(
                "at most {MAX_TEST_IPS} test IPs, not {}",
                ips.len()
            ));
        }
        let mut seen = BTreeSet::new();
        for ip in &ips {
            if ip.is_unspecified() || ip.is_multicast() || is_broadcast(ip) {
                return Err(format!("test IP {ip} is not a unicast address"));
            }
            if !seen.insert(*ip) {
                return Err(format!("test IP {ip} is listed more than once"));
            }
        }
        Ok(TestIps(ips))
    }
}

impl From<TestIps> for Vec<IpAddr> {
    fn from(t: TestIps) -> Vec<IpAddr> {
        t.0
    }
}

fn is_broadcast(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// The backup settings of one appliance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Probing the primary, data syncs, alerts and automatic failover while backup.
    /// Default on; turn it off on the appliance that is normally primary.
    #[serde(default = "yes")]
    pub backup_operations: bool,
    /// Whether the backup takes over by itself when the primary is silent for the
    /// timeout. Default off: an automatic role change is opted into. It needs a shared IP.
    #[serde(default)]
    pub automatic_failover: bool,
    #[serde(default)]
    pub primary_timeout_seconds: PrimaryTimeout,
    #[serde(default)]
    pub test_ips: TestIps,
    /// When the backup pulls a data sync by itself.
    #[serde(default)]
    pub sync_schedule: crate::sync::Schedule,
    /// The data sync's bandwidth limit in bytes per second, `None` for unlimited. The
    /// backup's setting is the one in force (it sends it with each request).
    #[serde(default)]
    pub bandwidth_limit_bytes_per_second: Option<BandwidthLimit>,
    /// The primary alerts when no backup has pulled for this long.
    #[serde(default = "default_no_pull")]
    pub no_pull_alert_minutes: NoPullMinutes,
    /// The first sync after the relationship starts waits this long.
    #[serde(default = "default_first_sync")]
    pub first_sync_delay_seconds: FirstSyncDelay,
}

/// A data-sync bandwidth limit: 1 KB/s to 10 GB/s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct BandwidthLimit(u64);

pub const MIN_BANDWIDTH: u64 = 1000;
pub const MAX_BANDWIDTH: u64 = 10_000_000_000;

impl BandwidthLimit {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for BandwidthLimit {
    type Error = String;
    fn try_from(n: u64) -> Result<Self, String> {
        if (MIN_BANDWIDTH..=MAX_BANDWIDTH).contains(&n) {
            Ok(BandwidthLimit(n))
        } else {
            Err(format!(
                "bandwidth_limit_bytes_per_second must be between {MIN_BANDWIDTH} and {MAX_BANDWIDTH} (or null for unlimited), not {n}"
            ))
        }
    }
}

impl From<BandwidthLimit> for u64 {
    fn from(b: BandwidthLimit) -> u64 {
        b.0
    }
}

/// Minutes without a pull before the primary alerts: 1 to 10080 (a week).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct NoPullMinutes(u32);

impl TryFrom<u32> for NoPullMinutes {
    type Error = String;
    fn try_from(n: u32) -> Result<Self, String> {
        if (1..=10_080).contains(&n) {
            Ok(NoPullMinutes(n))
        } else {
            Err(format!(
                "no_pull_alert_minutes must be between 1 and 10080, not {n}"
            ))
        }
    }
}

impl From<NoPullMinutes> for u32 {
    fn from(n: NoPullMinutes) -> u32 {
        n.0
    }
}

impl From<NoPullMinutes> for u64 {
    fn from(n: NoPullMinutes) -> u64 {
        n.0.into()
    }
}

impl std::fmt::Display for NoPullMinutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Seconds before the first sync of a relationship: 0 to 3600; the vendor's 60 by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct FirstSyncDelay(u32);

impl TryFrom<u32> for FirstSyncDelay {
    type Error = String;
    fn try_from(n: u32) -> Result<Self, String> {
        if n <= 3600 {
            Ok(FirstSyncDelay(n))
        } else {
            Err(format!(
                "first_sync_delay_seconds must be between 0 and 3600, not {n}"
            ))
        }
    }
}

impl From<FirstSyncDelay> for u32 {
    fn from(n: FirstSyncDelay) -> u32 {
        n.0
    }
}

impl From<FirstSyncDelay> for u64 {
    fn from(n: FirstSyncDelay) -> u64 {
        n.0.into()
    }
}

fn default_no_pull() -> NoPullMinutes {
    NoPullMinutes(24 * 60)
}

fn default_first_sync() -> FirstSyncDelay {
    FirstSyncDelay(60)
}

/// `null` given (Some(None)) apart from left out (None).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn yes() -> bool {
    true
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            backup_operations: true,
            automatic_failover: false,
            primary_timeout_seconds: PrimaryTimeout::default(),
            test_ips: TestIps::default(),
            sync_schedule: crate::sync::Schedule::default(),
            bandwidth_limit_bytes_per_second: None,
            no_pull_alert_minutes: default_no_pull(),
            first_sync_delay_seconds: default_first_sync(),
        }
    }
}

impl Settings {
    pub fn timeout(&self) -> Duration {
        self.primary_timeout_seconds.get()
    }

    /// How often the peers check each other: a quarter of the timeout, at most
    /// [`MAX_HEARTBEAT`].
    pub fn heartbeat_interval(&self) -> Duration {
        (self.timeout() / 4).min(MAX_HEARTBEAT)
    }

    /// The settings with `update` applied: each field given replaces the old value.
    pub fn apply(&self, update: SettingsUpdate) -> Settings {
        Settings {
            backup_operations: update.backup_operations.unwrap_or(self.backup_operations),
            automatic_failover: update.automatic_failover.unwrap_or(self.automatic_failover),
            primary_timeout_seconds: update
                .primary_timeout_seconds
                .unwrap_or(self.primary_timeout_seconds),
            test_ips: update.test_ips.unwrap_or_else(|| self.test_ips.clone()),
            sync_schedule: update.sync_schedule.unwrap_or(self.sync_schedule),
            bandwidth_limit_bytes_per_second: update
                .bandwidth_limit_bytes_per_second
                .unwrap_or(self.bandwidth_limit_bytes_per_second),
            no_pull_alert_minutes: update
                .no_pull_alert_minutes
                .unwrap_or(self.no_pull_alert_minutes),
            first_sync_delay_seconds: update
                .first_sync_delay_seconds
                .unwrap_or(self.first_sync_delay_seconds),
        }
    }
}

/// A partial update of [`Settings`]: a field left out or `null` keeps its value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    #[serde(default)]
    pub backup_operations: Option<bool>,
    #[serde(default)]
    pub automatic_failover: Option<bool>,
    #[serde(default)]
    pub primary_timeout_seconds: Option<PrimaryTimeout>,
    #[serde(default)]
    pub test_ips: Option<TestIps>,
    #[serde(default)]
    pub sync_schedule: Option<crate::sync::Schedule>,
    /// Left out keeps the limit; `null` makes it unlimited.
    #[serde(default, deserialize_with = "present")]
    pub bandwidth_limit_bytes_per_second: Option<Option<BandwidthLimit>>,
    #[serde(default)]
    pub no_pull_alert_minutes: Option<NoPullMinutes>,
    #[serde(default)]
    pub first_sync_delay_seconds: Option<FirstSyncDelay>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<SettingsUpdate, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn a_partial_update_keeps_the_fields_left_out() {
        let before = Settings {
            backup_operations: false,
            automatic_failover: true,
            primary_timeout_seconds: PrimaryTimeout::new(Duration::from_secs(3)).unwrap(),
            test_ips: TestIps::try_from(vec!["192.0.2.1".parse().unwrap()]).unwrap(),
            ..Settings::default()
        };
        let after = before.apply(parse(r#"{"primary_timeout_seconds": 0.5}"#).unwrap());
        assert_eq!(after.timeout(), Duration::from_millis(500));
        assert!(!after.backup_operations);
        assert!(after.automatic_failover);
        assert_eq!(after.test_ips, before.test_ips);
        let after =
            before.apply(parse(r#"{"test_ips": null, "automatic_failover": false}"#).unwrap());
        assert_eq!(after.test_ips, before.test_ips, "null keeps the value");
        assert!(!after.automatic_failover);
        let after = before.apply(parse(r#"{"test_ips": []}"#).unwrap());
        assert!(after.test_ips.is_empty(), "an empty list clears them");
        let limited =
            before.apply(parse(r#"{"bandwidth_limit_bytes_per_second": 50000}"#).unwrap());
        assert_eq!(
            limited.bandwidth_limit_bytes_per_second.map(|b| b.get()),
            Some(50_000)
        );
        let kept = limited.apply(parse(r#"{"sync_schedule": {"daily_at": "02:00"}}"#).unwrap());
        assert_eq!(
            kept.bandwidth_limit_bytes_per_second, limited.bandwidth_limit_bytes_per_second,
            "left out keeps it"
        );
        let unlimited = kept.apply(parse(r#"{"bandwidth_limit_bytes_per_second": null}"#).unwrap());
        assert_eq!(
            unlimited.bandwidth_limit_bytes_per_second, None,
            "null is unlimited"
        );
        for (bad, why) in [
            (
                r#"{"bandwidth_limit_bytes_per_second": 999}"#,
                "between 1000",
            ),
            (r#"{"no_pull_alert_minutes": 0}"#, "between 1 and 10080"),
            (
                r#"{"first_sync_delay_seconds": 3601}"#,
                "between 0 and 3600",
            ),
            (r#"{"sync_schedule": {"daily_at": "25:00"}}"#, "HH:MM"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_timeout_range_is_checked_at_parse_time() {
        for ok in ["0.2", "1", "2.5", "86400"] {
            parse(&format!(r#"{{"primary_timeout_seconds": {ok}}}"#))
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["0.19", "0", "-1", "86400.5", "1e9"] {
            let e = parse(&format!(r#"{{"primary_timeout_seconds": {bad}}}"#)).unwrap_err();
            assert!(e.contains("between 0.2 and 86400"), "{bad}: {e}");
        }
        let e = parse(r#"{"primary_timeout_seconds": "3"}"#).unwrap_err();
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn unknown_fields_and_bad_test_ips_are_refused() {
        let e = parse(r#"{"automatic_failover": true, "autofailover": true}"#).unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        for (bad, why) in [
            (r#"["192.0.2.1", "192.0.2.1"]"#, "more than once"),
            (r#"["0.0.0.0"]"#, "not a unicast"),
            (r#"["224.0.0.1"]"#, "not a unicast"),
            (r#"["255.255.255.255"]"#, "not a unicast"),
            (r#"["ff02::1"]"#, "not a unicast"),
            (r#"["example.com"]"#, "invalid IP address"),
        ] {
            let e = parse(&format!(r#"{{"test_ips": {bad}}}"#)).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let many: Vec<String> = (1..=17).map(|i| format!("\"192.0.2.{i}\"")).collect();
        let e = parse(&format!(r#"{{"test_ips": [{}]}}"#, many.join(","))).unwrap_err();
        assert!(e.contains("at most 16"), "{e}");
    }

    #[test]
    fn defaults_and_round_trip() {
        let s: Settings = serde_json::from_str("{}").unwrap();
        assert_eq!(s, Settings::default());
        assert!(s.backup_operations);
        assert!(!s.automatic_failover);
        assert_eq!(s.timeout(), DEFAULT_TIMEOUT);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["primary_timeout_seconds"], 600.0);
        let back: Settings = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn the_heartbeat_is_a_quarter_of_the_timeout_at_most_a_second() {
        let with = |ms| Settings {
            primary_timeout_seconds: PrimaryTimeout::new(Duration::from_millis(ms)).unwrap(),
            ..Settings::default()
        };
        assert_eq!(with(200).heartbeat_interval(), Duration::from_millis(50));
        assert_eq!(with(3000).heartbeat_interval(), Duration::from_millis(750));
        assert_eq!(with(600_000).heartbeat_interval(), MAX_HEARTBEAT);
    }
}
