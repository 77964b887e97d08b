//! Text output for people.

use crate::api::types;
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

pub fn status(s: &types::Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<16}{} {} (build {})", "Product", s.product, s.version, s.build);
    let _ = writeln!(out, "{:<16}{}", "Hostname", s.hostname);
    let _ = writeln!(out, "{:<16}{}", "Uptime", duration(s.uptime_seconds));
    let data = match (&s.data.mode[..], &s.data.device) {
        ("persistent", Some(dev)) => {
            let fresh = if s.data.formatted_this_boot { ", formatted this boot" } else { "" };
            format!("persistent on {dev}{fresh}")
        }
        _ => format!("{} ({})", s.data.mode, s.data.detail),
    };
    let _ = writeln!(out, "{:<16}{data}", "Data");
    let fa = &s.factory_address;
    let factory = match (&fa.address, &fa.nic, &fa.error) {
        (Some(a), Some(n), _) => format!("{a} on {n} ({})", fa.state),
        (_, _, Some(e)) => format!("{} ({e})", fa.state),
        _ => fa.state.clone(),
    };
    let _ = writeln!(out, "{:<16}{factory}", "Factory address");
    if let Some(ls) = &s.last_shutdown {
        let reason = if ls.reason.is_empty() { String::new() } else { format!(" ({})", ls.reason) };
        let _ = writeln!(out, "{:<16}{}{reason}", "Last shutdown", ls.kind);
    }
    let _ = writeln!(out, "{:<16}pid {}, up {}", "Agent", s.agent.pid, duration(s.agent.running_seconds));
    if !s.boot_timeline.is_empty() {
        let _ = writeln!(out, "Boot timeline (ms since kernel start)");
        for m in &s.boot_timeline {
            let _ = writeln!(out, "  {:>10.1}  {}", m.ms, m.name);
        }
    }
    out.trim_end().to_string()
}
