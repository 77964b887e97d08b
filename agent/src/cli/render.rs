//! Text output for people: status and the system verbs here, the network verbs in
//! [`network`].

pub mod network;

use crate::model;
use std::fmt::Write;

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
    let _ = writeln!(
        out,
        "{:<16}{} {} (build {})",
        "Product", s.product, s.version, s.build
    );
    if let Some(r) = &s.erase_report {
        let verdict = if r.verified { "PASSED" } else { "FAILED" };
        let _ = writeln!(
            out,
            "{:<16}{} MiB of {} zeroed by {} in {:.1} s, read back in {:.1} s: {verdict} ({})",
            "Secure erase",
            r.bytes >> 20,
            r.device,
            r.method,
            r.erase_ms as f64 / 1000.0,
            r.verify_ms as f64 / 1000.0,
            r.detail
        );
    }
    out.push_str(&basics(&s.basics));
    let _ = writeln!(out, "{:<16}{}", "Hostname", s.hostname);
    let _ = writeln!(out, "{:<16}{}", "Uptime", duration(s.uptime_seconds));
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
    let _ = writeln!(out, "{:<16}{data}", "Data");
    out.push_str(&factory_lines(&s.factory_address));
    if let Some(ls) = &s.last_shutdown {
        let reason = if ls.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", ls.reason)
        };
        let _ = writeln!(out, "{:<16}{}{reason}", "Last shutdown", ls.kind);
    }
    let _ = writeln!(
        out,
        "{:<16}pid {}, up {}",
        "Agent",
        s.agent.pid,
        duration(s.agent.running_seconds)
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
    let _ = writeln!(out, "{:<16}{line}", "Factory address");
    if fa.exhausted {
        let _ = writeln!(
            out,
            "{:<16}every candidate address is taken; retrying once a minute",
            ""
        );
    }
    for c in &fa.conflicts {
        let _ = writeln!(
            out,
            "{:<16}{} claimed by {} ({}, {})",
            "  conflict",
            c.address,
            c.mac,
            c.kind,
            ago(c.unix_time)
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
    let _ = writeln!(
        out,
        "{:<16}{}",
        "Manufacturer",
        id.manufacturer.clone().unwrap_or_else(unknown)
    );
    let _ = writeln!(
        out,
        "{:<16}{}",
        "Model",
        id.product_name.clone().unwrap_or_else(unknown)
    );
    let _ = writeln!(
        out,
        "{:<16}{}",
        "Serial number",
        id.serial_number.clone().unwrap_or_else(unknown)
    );
    if let Some(uuid) = &id.uuid {
        let _ = writeln!(out, "{:<16}{uuid}", "UUID");
    }
    let _ = writeln!(
        out,
        "{:<16}{} (build {}), kernel {}",
        "Firmware", b.firmware_version, b.firmware_build, b.kernel
    );
    let _ = writeln!(
        out,
        "{:<16}{} × {}",
        "CPU",
        b.cpu.logical_cpus,
        b.cpu.model.clone().unwrap_or_else(unknown)
    );
    if let (Some(t), Some(a)) = (b.memory.total_bytes, b.memory.available_bytes) {
        let _ = writeln!(out, "{:<16}{} ({} available)", "Memory", mib(t), mib(a));
    }
    let disks: Vec<String> = b
        .disks
        .iter()
        .map(|d| format!("{} {}", d.name, mib(d.size_bytes)))
        .collect();
    let _ = writeln!(
        out,
        "{:<16}{}",
        "Disks",
        if disks.is_empty() {
            "none".into()
        } else {
            disks.join(", ")
        }
    );
    let nics: Vec<String> = b
        .nics
        .iter()
        .map(|n| format!("{} {}", n.name, n.mac.clone().unwrap_or_default()))
        .collect();
    let _ = writeln!(out, "{:<16}{}", "NICs", nics.join(", "));
    if let Some(t) = b.last_config_change_unix {
        let _ = writeln!(out, "{:<16}{}", "Settings changed", ago(t));
    }
    out
}
