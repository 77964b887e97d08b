//! Text output of the network verbs.

use super::field;
use crate::model::netconfig::DnsConfig;
use crate::model::{
    ChangeOutcome, DnsLookupResult, HostnameView, NetworkStatus, Nic, PingResult, RoutesView,
    TcpTestResult,
};
use std::fmt::Write;

/// The answer to a change, for people.
pub fn change(o: &ChangeOutcome) -> String {
    let mut out = o.message.clone();
    for a in &o.report.applied {
        let _ = write!(out, "\n  {a}");
    }
    for d in &o.report.unresolved {
        let _ = write!(out, "\n  not done: {}: {}", d.subject, d.reason);
    }
    out
}

pub fn nics(nics: &[Nic]) -> String {
    let mut out = String::new();
    for n in nics {
        let mut facts = vec![if n.carrier {
            "up".to_string()
        } else if n.admin_up {
            "no carrier".to_string()
        } else {
            "down".to_string()
        }];
        facts.extend(n.mac.clone());
        facts.extend(n.driver.clone());
        if let Some(s) = n.speed_mbps {
            facts.push(match &n.duplex {
                Some(d) => format!("{s} Mb/s {d}"),
                None => format!("{s} Mb/s"),
            });
        }
        if let Some(m) = n.mtu {
            facts.push(format!("mtu {m}"));
        }
        if n.managed {
            facts.push("managed".into());
        }
        field(&mut out, &n.name, facts.join(", "));
        for a in &n.addresses {
            let mut state = vec![a.origin.as_str().to_string()];
            if a.enabled == Some(false) {
                state.push("disabled".into());
            }
            state.push(if a.present { "present" } else { "absent" }.into());
            state.extend(a.state.map(|s| s.as_str().to_string()));
            let _ = writeln!(out, "  {:<40}{}", a.address, state.join(", "));
        }
    }
    out.trim_end().to_string()
}

pub fn routes(r: &RoutesView) -> String {
    let mut out = String::from("Configured\n");
    let gw = |g: Option<String>| g.unwrap_or_else(|| "(none)".into());
    let _ = writeln!(
        out,
        "  default (ipv4) via {}",
        gw(r.gateways.ipv4.map(|g| g.to_string()))
    );
    let _ = writeln!(
        out,
        "  default (ipv6) via {}",
        gw(r.gateways.ipv6.map(|g| g.to_string()))
    );
    for c in &r.routes {
        let _ = writeln!(out, "  {} via {}", c.destination, c.gateway);
    }
    out.push_str("Kernel (main table)\n");
    for k in &r.kernel {
        let via = k
            .gateway
            .as_ref()
            .map(|g| format!(" via {g}"))
            .unwrap_or_default();
        let dev = k
            .nic
            .as_ref()
            .map(|n| format!(" dev {n}"))
            .unwrap_or_default();
        let who = if k.managed {
            " (agent)".to_string()
        } else {
            format!(" (proto {})", k.protocol)
        };
        let _ = writeln!(out, "  {}{via}{dev}{who}", k.destination);
    }
    out.trim_end().to_string()
}

pub fn status(s: &NetworkStatus) -> String {
    let mut out = String::new();
    field(
        &mut out,
        "Kernel",
        if s.report.in_sync {
            "matches the configuration"
        } else {
            "differs from the configuration"
        },
    );
    for d in &s.report.unresolved {
        let _ = writeln!(out, "  not done: {}: {}", d.subject, d.reason);
    }
    match &s.pending {
        Some(p) => field(
            &mut out,
            "Pending",
            format_args!(
                "\"{}\": {} s left to confirm (appliancectl network confirm)",
                p.change, p.seconds_left
            ),
        ),
        None => field(&mut out, "Pending", "no change awaits confirmation"),
    }
    for c in &s.conflict_history {
        field(
            &mut out,
            "  conflict",
            format_args!(
                "{} on {} claimed by {} ({})",
                c.address, c.nic, c.mac, c.kind
            ),
        );
    }
    out.trim_end().to_string()
}

pub fn dns(d: &DnsConfig) -> String {
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "(none)".to_string()
        } else {
            items.join(" ")
        }
    };
    let mut text = String::new();
    field(
        &mut text,
        "Servers",
        list(d.servers.iter().map(|s| s.to_string()).collect()),
    );
    field(
        &mut text,
        "Search",
        list(d.search.iter().map(|s| s.as_str().to_string()).collect()),
    );
    text.trim_end().to_string()
}

pub fn hostname(h: &HostnameView) -> String {
    match &h.configured {
        Some(c) if *c == h.hostname => h.hostname.clone(),
        Some(c) => format!("{} (configured: {c})", h.hostname),
        None => format!("{} (factory default)", h.hostname),
    }
}

pub fn tcp(r: &TcpTestResult) -> String {
    if r.connected {
        format!(
            "connected to {} in {:.1} ms",
            r.address.as_deref().unwrap_or_default(),
            r.elapsed_ms
        )
    } else {
        format!(
            "no connection to {}:{}: {}",
            r.host,
            r.port,
            r.error.as_deref().unwrap_or_default()
        )
    }
}

pub fn ping(r: &PingResult) -> String {
    let mut text = String::new();
    let to = r.address.clone().unwrap_or_else(|| r.host.clone());
    for reply in &r.replies {
        let _ = writeln!(
            text,
            "reply from {to}: seq={} time={:.2} ms",
            reply.seq, reply.rtt_ms
        );
    }
    let _ = write!(text, "{} sent, {} received", r.sent, r.received);
    if let Some(e) = &r.error {
        let _ = write!(text, " ({e})");
    }
    text
}

pub fn dns_lookup(r: &DnsLookupResult) -> String {
    match &r.error {
        Some(e) => e.clone(),
        None => format!("{}: {}", r.name, r.addresses.join(" ")),
    }
}
