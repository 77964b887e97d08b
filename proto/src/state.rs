//! Small records init leaves in `/run/appliance` for the agent to report.
//!
//! Each is a text file of `key=value` lines; values are single-line. Unknown keys are
//! ignored when reading, so either side may add fields.

use std::collections::BTreeMap;

fn one_line(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn encode(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}\n", one_line(v)))
        .collect()
}

fn decode(text: &str) -> BTreeMap<&str, &str> {
    text.lines().filter_map(|l| l.split_once('=')).collect()
}

/// What init did about the data partition at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataState {
    /// `/data` is the ext4 filesystem on `device`.
    Persistent {
        device: String,
        /// Formatted during this boot (first boot, or after a factory reset).
        formatted: bool,
        /// What the filesystem check said, in words.
        check: String,
    },
    /// No usable data partition: `/data` is a tmpfs and nothing survives a reboot.
    Volatile { reason: String },
}

impl DataState {
    pub fn encode(&self) -> String {
        match self {
            DataState::Persistent {
                device,
                formatted,
                check,
            } => encode(&[
                ("mode", "persistent".into()),
                ("device", device.clone()),
                ("formatted", if *formatted { "1" } else { "0" }.into()),
                ("check", check.clone()),
            ]),
            DataState::Volatile { reason } => {
                encode(&[("mode", "volatile".into()), ("reason", reason.clone())])
            }
        }
    }

    pub fn parse(text: &str) -> Option<DataState> {
        let kv = decode(text);
        match *kv.get("mode")? {
            "persistent" => Some(DataState::Persistent {
                device: kv.get("device")?.to_string(),
                formatted: kv.get("formatted") == Some(&"1"),
                check: kv.get("check").unwrap_or(&"").to_string(),
            }),
            "volatile" => Some(DataState::Volatile {
                reason: kv.get("reason").unwrap_or(&"").to_string(),
            }),
            _ => None,
        }
    }
}

/// How the previous boot ended, as init found out at this boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastShutdown {
    /// `poweroff`, `reboot`, `halt` (an ordered shutdown), `unclean` (power cut or crash:
    /// no record was left), `first-boot` (the data partition is new) or `unknown` (no
    /// persistent data partition).
    pub kind: String,
    /// The reason given with the request (`api: ...`, `signal SIGTERM`, `power button`).
    pub reason: String,
    /// Wall-clock seconds since the epoch when the shutdown began, if known.
    pub unix_time: Option<u64>,
}

impl LastShutdown {
    pub fn encode(&self) -> String {
        let mut pairs = vec![("kind", self.kind.clone()), ("reason", self.reason.clone())];
        if let Some(t) = self.unix_time {
            pairs.push(("time", t.to_string()));
        }
        encode(&pairs)
    }

    pub fn parse(text: &str) -> Option<LastShutdown> {
        let kv = decode(text);
        Some(LastShutdown {
            kind: kv.get("kind")?.to_string(),
            reason: kv.get("reason").unwrap_or(&"").to_string(),
            unix_time: kv.get("time").and_then(|t| t.parse().ok()),
        })
    }
}

/// What a secure erase (factory reset for return, RMA) did, for the console and status.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EraseReport {
    pub device: String,
    /// What ran, as observed, step by step (`BLKSECDISCARD: not supported by the device;
    /// BLKZEROOUT: offloaded to the device's write-zeroes command; read back with O_DIRECT`).
    pub method: String,
    /// The NIST SP 800-88 level the erase meets: `purge` (the device's own secure erase
    /// completed) or `clear` (overwritten with zeros); empty if it did not complete.
    #[cfg_attr(feature = "serde", serde(default))]
    pub nist_level: String,
    /// `whole disk` or `partition`: what the byte range below is a range of.
    #[cfg_attr(feature = "serde", serde(default))]
    pub scope: String,
    /// The bytes erased and read back, `[range_start, range_end)` of the device.
    #[cfg_attr(feature = "serde", serde(default))]
    pub range_start: u64,
    #[cfg_attr(feature = "serde", serde(default))]
    pub range_end: u64,
    /// Size of the device in bytes.
    pub bytes: u64,
    pub started_unix: u64,
    pub finished_unix: u64,
    /// Wall time of the erase and the read-back, in milliseconds.
    pub erase_ms: u64,
    pub verify_ms: u64,
    /// Every byte read back as zero.
    pub verified: bool,
    pub detail: String,
}

impl EraseReport {
    pub fn encode(&self) -> String {
        encode(&[
            ("device", self.device.clone()),
            ("method", self.method.clone()),
            ("nist_level", self.nist_level.clone()),
            ("scope", self.scope.clone()),
            ("range_start", self.range_start.to_string()),
            ("range_end", self.range_end.to_string()),
            ("bytes", self.bytes.to_string()),
            ("started", self.started_unix.to_string()),
            ("finished", self.finished_unix.to_string()),
            ("erase_ms", self.erase_ms.to_string()),
            ("verify_ms", self.verify_ms.to_string()),
            ("verified", if self.verified { "1" } else { "0" }.into()),
            ("detail", self.detail.clone()),
        ])
    }

    pub fn parse(text: &str) -> Option<EraseReport> {
        let kv = decode(text);
        let num = |k: &str| kv.get(k).and_then(|v| v.parse().ok());
        Some(EraseReport {
            device: kv.get("device")?.to_string(),
            method: kv.get("method").unwrap_or(&"").to_string(),
            nist_level: kv.get("nist_level").unwrap_or(&"").to_string(),
            scope: kv.get("scope").unwrap_or(&"").to_string(),
            range_start: num("range_start").unwrap_or(0),
            range_end: num("range_end").unwrap_or(0),
            bytes: num("bytes")?,
            started_unix: num("started").unwrap_or(0),
            finished_unix: num("finished").unwrap_or(0),
            erase_ms: num("erase_ms").unwrap_or(0),
            verify_ms: num("verify_ms").unwrap_or(0),
            verified: kv.get("verified") == Some(&"1"),
            detail: kv.get("detail").unwrap_or(&"").to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_state_round_trips() {
        for s in [
            DataState::Persistent {
                device: "/dev/vdb".into(),
                formatted: true,
                check: "clean".into(),
            },
            DataState::Volatile {
                reason: "no blank disk\nfound".into(),
            },
        ] {
            let back = DataState::parse(&s.encode()).unwrap();
            if let DataState::Volatile { reason } = &back {
                assert_eq!(reason, "no blank disk found");
            } else {
                assert_eq!(back, s);
            }
        }
        assert_eq!(DataState::parse("mode=other\n"), None);
    }

    #[test]
    fn erase_report_round_trips() {
        let r = EraseReport {
            device: "/dev/vda".into(),
            method: "write-zeroes offload".into(),
            nist_level: "clear".into(),
            scope: "whole disk".into(),
            range_start: 0,
            range_end: 256 << 20,
            bytes: 256 << 20,
            started_unix: 10,
            finished_unix: 12,
            erase_ms: 150,
            verify_ms: 1900,
            verified: true,
            detail: "every byte read back as zero".into(),
        };
        assert_eq!(EraseReport::parse(&r.encode()), Some(r));
    }

    #[test]
    fn last_shutdown_round_trips() {
        let s = LastShutdown {
            kind: "reboot".into(),
            reason: "api: test".into(),
            unix_time: Some(17),
        };
        assert_eq!(LastShutdown::parse(&s.encode()), Some(s));
        let s = LastShutdown {
            kind: "unclean".into(),
            reason: String::new(),
            unix_time: None,
        };
        assert_eq!(LastShutdown::parse(&s.encode()), Some(s));
    }
}
