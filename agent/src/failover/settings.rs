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
