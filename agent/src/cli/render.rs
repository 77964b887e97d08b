//! Text output for people: one `Label  value` line per fact, the values in one column;
//! status and the system verbs here, the network verbs in [`network`].

pub mod network;

use crate::model;
use std::fmt::{Display, Write};

/// Width of the label column: the longest label ("Settings changed", 16) and a space.
pub(crate) const LABEL_WIDTH: usize = 17;

/// Appends one `label value` line, the value starting at [`LABEL_WIDTH`]; a label too
/// long for the column still gets one space before its value.
pub(crate) fn field(out: &mut String, label: &str, value: impl Display) {
    let label = format!("{label} ");
    let _ = writeln!(out, "{label:<LABEL_WIDTH$}{value}");
}

fn duration(seconds: f64) -> String {
    let s = seconds as u64;
    match s {
        0..=59 => format!("{seconds:.1} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

pub fn status(s: &model::Status) -> String {
    let mut out = String::new();
    field(
        &mut out,
        "Product",
        format_args!("{} {} (build {})", s.product, s.version, s.build),
    );
    if let Some(r) = &s.erase_report {
        let verdict = if r.verified { "PASSED" } else { "FAILED" };
        let level = if r.nist_level.is_empty() {
            "no NIST SP 800-88 level".to_string()
        } else {
            format!("NIST SP 800-88 {}", r.nist_level)
        };
        field(
            &mut out,
            "Erase",
            format_args!(
                "{} ({}), bytes {}..{}, finished unix {}: {verdict}, {level}; {} ({:.1} s, read \
                 back {:.1} s; {})",
                r.device,
                r.scope,
                r.range_start,
                r.range_end,
                r.finished_unix,
                r.method,
                r.erase_ms as f64 / 1000.0,
                r.verify_ms as f64 / 1000.0,
                r.detail
            ),
        );
    }
    out.push_str(&basics(&s.basics));
    field(&mut out, "Hostname", &s.hostname);
    field(&mut out, "Uptime", duration(s.uptime_seconds));
    let data = match (s.data.mode, &s.data.device) {
        (model::DataMode::Persistent, Some(dev)) => {
            let fresh = if s.data.formatted_this_boot {
                ", formatted this boot"
            } else {
                ""
            };
            format!("persistent on {dev}{fresh}")
        }
        _ => format!("{} ({})", s.data.mode.as_str(), s.data.detail),
    };
    field(&mut out, "Data", data);
    out.push_str(&factory_lines(&s.factory_address));
    if let Some(ls) = &s.last_shutdown {
        let reason = if ls.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", ls.reason)
        };
        field(
            &mut out,
            "Last shutdown",
            format_args!("{}{reason}", ls.kind),
        );
    }
    field(
        &mut out,
        "Agent",
        format_args!(
            "pid {}, up {}",
            s.agent.pid,
            duration(s.agent.running_seconds)
        ),
    );
    if !s.boot_timeline.is_empty() {
        let _ = writeln!(out, "Boot timeline (ms since kernel start)");
        for m in &s.boot_timeline {
            let _ = writeln!(out, "  {:>10.1}  {}", m.ms, m.name);
        }
    }
    out.trim_end().to_string()
}

fn ago(unix_time: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(unix_time);
    format!("{} ago", duration(now.saturating_sub(unix_time) as f64))
}

/// The factory address as status lines (shared by `status` and `factory-address`).
pub fn factory_lines(fa: &model::FactoryAddress) -> String {
    let mut out = String::new();
    let nic = fa.nic.as_deref().unwrap_or("?");
    let line = match (&fa.address, &fa.probing) {
        (Some(a), _) => {
            let after = fa
                .usable_after_ms
                .map(|ms| format!(", usable {ms:.0} ms after link up"))
                .unwrap_or_default();
            format!("{a} on {nic} ({}, {} timing{after})", fa.state, fa.timing)
        }
        (None, Some(p)) => format!("{} {p} on {nic}", fa.state),
        (None, None) => match &fa.error {
            Some(e) => format!("{} ({e})", fa.state),
            None => fa.state.to_string(),
        },
    };
    field(&mut out, "Factory address", line);
    if fa.exhausted {
        field(
            &mut out,
            "",
            "every candidate address is taken; retrying once a minute",
        );
    }
    for c in &fa.conflicts {
        field(
            &mut out,
            "  conflict",
            format_args!(
                "{} claimed by {} ({}, {})",
                c.address,
                c.mac,
                c.kind,
                ago(c.unix_time)
            ),
        );
    }
    out
}

fn mib(bytes: u64) -> String {
    if bytes >= 10 << 30 {
        format!("{:.0} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// Status > Basics lines.
fn basics(b: &model::Basics) -> String {
    let mut out = String::new();
    let id = &b.identity;
    let unknown = || "unknown".to_string();
    field(
        &mut out,
        "Manufacturer",
        id.manufacturer.clone().unwrap_or_else(unknown),
    );
    field(
        &mut out,
        "Model",
        id.product_name.clone().unwrap_or_else(unknown),
    );
    field(
        &mut out,
        "Serial number",
        id.serial_number.clone().unwrap_or_else(unknown),
    );
    if let Some(uuid) = &id.uuid {
        field(&mut out, "UUID", uuid);
    }
    field(
        &mut out,
        "Firmware",
        format_args!(
            "{} (build {}), kernel {}",
            b.firmware_version, b.firmware_build, b.kernel
        ),
    );
    field(
        &mut out,
        "CPU",
        format_args!(
            "{} × {}",
            b.cpu.logical_cpus,
            b.cpu.model.clone().unwrap_or_else(unknown)
        ),
    );
    if let (Some(t), Some(a)) = (b.memory.total_bytes, b.memory.available_bytes) {
        field(
            &mut out,
            "Memory",
            format_args!("{} ({} available)", mib(t), mib(a)),
        );
    }
    let disks: Vec<String> = b
        .disks
        .iter()
        .map(|d| format!("{} {}", d.name, mib(d.size_bytes)))
        .collect();
    field(
        &mut out,
        "Disks",
        if disks.is_empty() {
            "none".into()
        } else {
            disks.join(", ")
        },
    );
    let nics: Vec<String> = b
        .nics
        .iter()
        .map(|n| format!("{} {}", n.name, n.mac.clone().unwrap_or_default()))
        .collect();
    field(&mut out, "NICs", nics.join(", "));
    if let Some(t) = b.last_config_change_unix {
        field(&mut out, "Settings changed", ago(t));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line's label, padded to the column, ends in a space and the value follows.
    fn assert_columns(text: &str) {
        for line in text.lines() {
            let (label, value) = line.split_at(LABEL_WIDTH);
            assert!(label.ends_with(' '), "no space after the label: {line:?}");
            assert!(!value.starts_with(' '), "value out of its column: {line:?}");
        }
    }

    #[test]
    fn basics_have_a_space_between_label_and_value() {
        let b = model::Basics {
            firmware_version: "0.1.0".into(),
            kernel: "6.1.0".into(),
            last_config_change_unix: Some(0),
            ..Default::default()
        };
        let text = basics(&b);
        assert!(text.contains("\nSettings changed "), "{text}");
        assert!(text.contains("\nSerial number    unknown\n"), "{text}");
        assert_columns(&text);
    }

    #[test]
    fn factory_lines_have_a_space_between_label_and_value() {
        let fa = model::FactoryAddress {
            state: model::FactoryState::Held,
            timing: model::TimingProfile::Fast,
            address: Some("169.254.1.1/24".into()),
            nic: Some("eth0".into()),
            exhausted: true,
            conflicts: vec![model::FactoryConflict {
                address: "169.254.1.1".into(),
                mac: "52:54:00:a0:00:02".into(),
                kind: model::ConflictKind::InUse,
                unix_time: 0,
            }],
            ..Default::default()
        };
        let text = factory_lines(&fa);
        assert!(
            text.starts_with("Factory address  169.254.1.1/24 on eth0"),
            "{text}"
        );
        assert_columns(&text);
    }

    #[test]
    fn a_label_longer_than_the_column_still_gets_a_space() {
        let mut out = String::new();
        field(&mut out, "A label longer than the column", "value");
        assert_eq!(out, "A label longer than the column value\n");
    }
}
