//! Verbs for the network: `ip`, `route`, `dns`, `hostname`, `test` and `network`.
//!
//! Every verb that changes something takes `--confirm-within SECONDS`: the appliance
//! undoes the change unless `appliancectl network confirm` follows in time.

use super::client::Client;
use super::render::field;
use super::{check, CliError, Outcome};
use crate::api::net_types::{
    ChangeOutcome, DnsLookupResult, HostnameView, NetworkStatus, Nic, PingResult, RoutesView,
    TcpTestResult,
};
use crate::api::PREFIX;
use crate::net::model::NetworkConfig;
use clap::Subcommand;
use serde_json::json;
use std::fmt::Write;

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// NICs and their addresses: list, add, remove, enable, disable.
    Ip {
        #[command(subcommand)]
        action: Option<IpAction>,
    },
    /// Default gateways and static routes.
    Route {
        #[command(subcommand)]
        action: Option<RouteAction>,
    },
    /// DNS servers and search domains (/etc/resolv.conf on the appliance).
    Dns {
        #[command(subcommand)]
        action: Option<DnsAction>,
    },
    /// The appliance's host name.
    Hostname {
        #[command(subcommand)]
        action: Option<HostnameAction>,
    },
    /// Test connectivity from the appliance: a TCP connection, ping, a DNS lookup.
    Test {
        #[command(subcommand)]
        action: TestAction,
    },
    /// Network status, the whole configuration, and confirming or undoing a change.
    Network {
        #[command(subcommand)]
        action: Option<NetAction>,
    },
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfirmArgs {
    /// Undo the change unless `appliancectl network confirm` follows within SECONDS.
    #[arg(long, value_name = "SECONDS")]
    pub confirm_within: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum IpAction {
    /// Every NIC with its hardware facts and addresses (the default).
    List,
    /// Add an address (ADDRESS/PREFIX) to a NIC.
    Add {
        nic: String,
        address: String,
        /// Keep it in the configuration but off the NIC.
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
    /// Remove an address from a NIC.
    Remove {
        nic: String,
        address: String,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
    /// Put a configured address back on its NIC.
    Enable {
        nic: String,
        address: String,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
    /// Take a configured address off its NIC, keeping it in the configuration.
    Disable {
        nic: String,
        address: String,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum RouteAction {
    /// Configured gateways and routes, and the kernel's main table (the default).
    List,
    /// Add a route to DESTINATION (a subnet) via GATEWAY; `default` sets the default
    /// gateway of the gateway's family.
    Add {
        destination: String,
        gateway: String,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
    /// Remove a route; `default` removes the IPv4 default gateway, `default6` the IPv6 one.
    Remove {
        destination: String,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum DnsAction {
    /// The DNS servers and search domains (the default).
    Show,
    /// Replace the DNS servers (up to 3) and search domains (up to 6).
    Set {
        servers: Vec<String>,
        /// A search domain; repeat for more.
        #[arg(long = "search", value_name = "DOMAIN")]
        search: Vec<String>,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
    /// Remove every DNS server and search domain.
    Clear {
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum HostnameAction {
    /// The host name now and the configured one (the default).
    Show,
    /// Set the host name.
    Set {
        name: String,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
    /// Go back to the factory host name.
    Reset {
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum TestAction {
    /// Open a TCP connection to HOST:PORT from the appliance.
    Tcp {
        // Not named `host`/`port`: those would clash with the global `--host`/`--port`.
        /// The address or name to connect to.
        #[arg(value_name = "HOST")]
        target: String,
        /// The port to connect to.
        #[arg(value_name = "PORT")]
        target_port: u16,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
    /// Ping HOST from the appliance.
    Ping {
        /// The address or name to ping.
        #[arg(value_name = "HOST")]
        target: String,
        #[arg(long, default_value_t = 3)]
        count: u32,
        /// Milliseconds between requests.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Milliseconds to wait for each reply.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Look NAME up on the appliance (its /etc/hosts, then its DNS servers).
    Dns { name: String },
}

#[derive(Subcommand, Debug)]
pub enum NetAction {
    /// The last reconciliation, a change awaiting confirmation, conflicts (the default).
    Status,
    /// The whole network configuration, as JSON.
    Config,
    /// Keep the change awaiting confirmation.
    Confirm,
    /// Undo the change awaiting confirmation now.
    Rollback,
}

fn decode<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, CliError> {
    serde_json::from_value(v.clone()).map_err(CliError::Decode)
}

fn with_confirm(path: &str, c: &ConfirmArgs) -> String {
    match c.confirm_within {
        Some(s) => format!("{PREFIX}{path}?confirm_within={s}"),
        None => format!("{PREFIX}{path}"),
    }
}

/// The address without its prefix, as the API's paths take it.
fn bare(address: &str) -> &str {
    address.split('/').next().unwrap_or(address)
}

async fn send(
    client: &Client,
    method: &str,
    path: String,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, CliError> {
    let body = body.map(|b| b.to_string().into_bytes());
    check(client.request(method, &path, body).await?)
}

async fn changed(
    client: &Client,
    method: &str,
    path: String,
    body: Option<serde_json::Value>,
) -> Outcome {
    let v = send(client, method, path, body).await?;
    let outcome: ChangeOutcome = decode(&v)?;
    Ok((v, change_text(&outcome)))
}

pub async fn execute(client: &Client, cmd: &NetworkCommand) -> Outcome {
    match cmd {
        NetworkCommand::Ip { action } => {
            ip(client, action.as_ref().unwrap_or(&IpAction::List)).await
        }
        NetworkCommand::Route { action } => {
            route(client, action.as_ref().unwrap_or(&RouteAction::List)).await
        }
        NetworkCommand::Dns { action } => match action.as_ref().unwrap_or(&DnsAction::Show) {
            DnsAction::Show => {
                let v = send(client, "GET", format!("{PREFIX}/network/dns"), None).await?;
                let servers = v["servers"].as_array().cloned().unwrap_or_default();
                let search = v["search"].as_array().cloned().unwrap_or_default();
                let list = |a: &[serde_json::Value]| {
                    let s: Vec<&str> = a.iter().filter_map(|x| x.as_str()).collect();
                    if s.is_empty() {
                        "(none)".to_string()
                    } else {
                        s.join(" ")
                    }
                };
                let mut text = String::new();
                field(&mut text, "Servers", list(&servers));
                field(&mut text, "Search", list(&search));
                Ok((v, text.trim_end().to_string()))
            }
            DnsAction::Set {
                servers,
                search,
                confirm,
            } => {
                let body = json!({ "servers": servers, "search": search });
                changed(
                    client,
                    "PUT",
                    with_confirm("/network/dns", confirm),
                    Some(body),
                )
                .await
            }
            DnsAction::Clear { confirm } => {
                let body = json!({ "servers": [], "search": [] });
                changed(
                    client,
                    "PUT",
                    with_confirm("/network/dns", confirm),
                    Some(body),
                )
                .await
            }
        },
        NetworkCommand::Hostname { action } => {
            match action.as_ref().unwrap_or(&HostnameAction::Show) {
                HostnameAction::Show => {
                    let v = send(client, "GET", format!("{PREFIX}/network/hostname"), None).await?;
                    let h: HostnameView = decode(&v)?;
                    let text = match &h.configured {
                        Some(c) if *c == h.hostname => h.hostname.clone(),
                        Some(c) => format!("{} (configured: {c})", h.hostname),
                        None => format!("{} (factory default)", h.hostname),
                    };
                    Ok((v, text))
                }
                HostnameAction::Set { name, confirm } => {
                    let body = json!({ "hostname": name });
                    changed(
                        client,
                        "PUT",
                        with_confirm("/network/hostname", confirm),
                        Some(body),
                    )
                    .await
                }
                HostnameAction::Reset { confirm } => {
                    changed(
                        client,
                        "DELETE",
                        with_confirm("/network/hostname", confirm),
                        None,
                    )
                    .await
                }
            }
        }
        NetworkCommand::Test { action } => test(client, action).await,
        NetworkCommand::Network { action } => match action.as_ref().unwrap_or(&NetAction::Status) {
            NetAction::Status => {
                let v = send(client, "GET", format!("{PREFIX}/network/status"), None).await?;
                let s: NetworkStatus = decode(&v)?;
                Ok((v, status_text(&s)))
            }
            NetAction::Config => {
                let v = send(client, "GET", format!("{PREFIX}/network/config"), None).await?;
                let _: NetworkConfig = decode(&v)?;
                let text = serde_json::to_string_pretty(&v).unwrap_or_default();
                Ok((v, text))
            }
            NetAction::Confirm => {
                let v = send(client, "POST", format!("{PREFIX}/network/confirm"), None).await?;
                let text = v["message"].as_str().unwrap_or("confirmed").to_string();
                Ok((v, text))
            }
            NetAction::Rollback => {
                changed(client, "POST", format!("{PREFIX}/network/rollback"), None).await
            }
        },
    }
}

async fn ip(client: &Client, action: &IpAction) -> Outcome {
    match action {
        IpAction::List => {
            let v = send(client, "GET", format!("{PREFIX}/network/interfaces"), None).await?;
            let nics: Vec<Nic> = decode(&v)?;
            Ok((v, nics_text(&nics)))
        }
        IpAction::Add {
            nic,
            address,
            disabled,
            confirm,
        } => {
            let body = json!({ "address": address, "enabled": !disabled });
            let path = with_confirm(&format!("/network/interfaces/{nic}/addresses"), confirm);
            changed(client, "POST", path, Some(body)).await
        }
        IpAction::Remove {
            nic,
            address,
            confirm,
        } => {
            let path = with_confirm(
                &format!("/network/interfaces/{nic}/addresses/{}", bare(address)),
                confirm,
            );
            changed(client, "DELETE", path, None).await
        }
        IpAction::Enable {
            nic,
            address,
            confirm,
        }
        | IpAction::Disable {
            nic,
            address,
            confirm,
        } => {
            let enabled = matches!(action, IpAction::Enable { .. });
            let path = with_confirm(
                &format!("/network/interfaces/{nic}/addresses/{}", bare(address)),
                confirm,
            );
            changed(client, "PATCH", path, Some(json!({ "enabled": enabled }))).await
        }
    }
}

async fn route(client: &Client, action: &RouteAction) -> Outcome {
    match action {
        RouteAction::List => {
            let v = send(client, "GET", format!("{PREFIX}/network/routes"), None).await?;
            let r: RoutesView = decode(&v)?;
            Ok((v, routes_text(&r)))
        }
        RouteAction::Add {
            destination,
            gateway,
            confirm,
        } => {
            if destination == "default" {
                let family = if gateway.contains(':') {
                    "ipv6"
                } else {
                    "ipv4"
                };
                let path = with_confirm(&format!("/network/gateways/{family}"), confirm);
                changed(client, "PUT", path, Some(json!({ "gateway": gateway }))).await
            } else {
                let body = json!({ "destination": destination, "gateway": gateway });
                changed(
                    client,
                    "POST",
                    with_confirm("/network/routes", confirm),
                    Some(body),
                )
                .await
            }
        }
        RouteAction::Remove {
            destination,
            confirm,
        } => {
            let path = match destination.as_str() {
                "default" | "0.0.0.0/0" => "/network/gateways/ipv4".to_string(),
                "default6" | "::/0" => "/network/gateways/ipv6".to_string(),
                d if d.contains('/') => format!("/network/routes/{d}"),
                d => {
                    return Err(CliError::Usage(format!(
                        "{d:?}: give the destination with its prefix (198.51.100.0/24), or \
                         default / default6"
                    )))
                }
            };
            changed(client, "DELETE", with_confirm(&path, confirm), None).await
        }
    }
}

async fn test(client: &Client, action: &TestAction) -> Outcome {
    match action {
        TestAction::Tcp {
            target,
            target_port,
            timeout_ms,
        } => {
            let body = json!({ "host": target, "port": target_port, "timeout_ms": timeout_ms });
            let v = send(
                client,
                "POST",
                format!("{PREFIX}/network/test/tcp"),
                Some(body),
            )
            .await?;
            let r: TcpTestResult = decode(&v)?;
            let text = if r.connected {
                format!(
                    "connected to {} in {:.1} ms",
                    r.address.unwrap_or_default(),
                    r.elapsed_ms
                )
            } else {
                format!(
                    "no connection to {}:{}: {}",
                    r.host,
                    r.port,
                    r.error.unwrap_or_default()
                )
            };
            Ok((v, text))
        }
        TestAction::Ping {
            target,
            count,
            interval_ms,
            timeout_ms,
        } => {
            let body = json!({ "host": target, "count": count, "interval_ms": interval_ms,
                               "timeout_ms": timeout_ms });
            let v = send(
                client,
                "POST",
                format!("{PREFIX}/network/test/ping"),
                Some(body),
            )
            .await?;
            let r: PingResult = decode(&v)?;
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
            Ok((v, text))
        }
        TestAction::Dns { name } => {
            let body = json!({ "name": name });
            let v = send(
                client,
                "POST",
                format!("{PREFIX}/network/test/dns"),
                Some(body),
            )
            .await?;
            let r: DnsLookupResult = decode(&v)?;
            let text = match &r.error {
                Some(e) => e.clone(),
                None => format!("{}: {}", r.name, r.addresses.join(" ")),
            };
            Ok((v, text))
        }
    }
}

/// The answer to a change, for people.
pub fn change_text(o: &ChangeOutcome) -> String {
    let mut out = o.message.clone();
    for a in &o.report.applied {
        let _ = write!(out, "\n  {a}");
    }
    for d in &o.report.unresolved {
        let _ = write!(out, "\n  not done: {}: {}", d.subject, d.reason);
    }
    out
}

pub fn nics_text(nics: &[Nic]) -> String {
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
            let mut state = vec![a.origin.clone()];
            if a.enabled == Some(false) {
                state.push("disabled".into());
            }
            state.push(if a.present { "present" } else { "absent" }.into());
            state.extend(a.state.clone());
            let _ = writeln!(out, "  {:<40}{}", a.address, state.join(", "));
        }
    }
    out.trim_end().to_string()
}

pub fn routes_text(r: &RoutesView) -> String {
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

pub fn status_text(s: &NetworkStatus) -> String {
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
        Some(p) => {
            field(
                &mut out,
                "Pending",
                format_args!(
                    "\"{}\": {} s left to confirm (appliancectl network confirm)",
                    p.change, p.seconds_left
                ),
            );
        }
        None => {
            field(&mut out, "Pending", "no change awaits confirmation");
        }
    }
    for c in &s.conflict_history {
        field(
            &mut out,
            "  conflict",
            format_args!("{} on {} claimed by {}", c.address, c.nic, c.mac),
        );
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[command(subcommand)]
        cmd: NetworkCommand,
    }

    #[test]
    fn verbs_parse() {
        let t = T::try_parse_from([
            "x",
            "ip",
            "add",
            "eth0",
            "192.0.2.10/24",
            "--confirm-within",
            "60",
        ])
        .unwrap();
        match t.cmd {
            NetworkCommand::Ip {
                action:
                    Some(IpAction::Add {
                        nic,
                        confirm,
                        disabled,
                        ..
                    }),
            } => {
                assert_eq!(nic, "eth0");
                assert_eq!(confirm.confirm_within, Some(60));
                assert!(!disabled);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            T::try_parse_from(["x", "dns", "set", "192.0.2.53", "--search", "example.net"]).is_ok()
        );
        match T::try_parse_from(["x", "test", "ping", "192.0.2.1", "--count", "2"])
            .unwrap()
            .cmd
        {
            NetworkCommand::Test {
                action: TestAction::Ping { target, count, .. },
            } => assert_eq!((target.as_str(), count), ("192.0.2.1", 2)),
            other => panic!("{other:?}"),
        }
        assert!(T::try_parse_from(["x", "route", "add", "default", "192.0.2.1"]).is_ok());
        assert!(
            T::try_parse_from(["x", "test", "tcp", "192.0.2.1"]).is_err(),
            "port is required"
        );
        assert_eq!(
            with_confirm(
                "/network/dns",
                &ConfirmArgs {
                    confirm_within: Some(5)
                }
            ),
            "/appliance/api/v1/network/dns?confirm_within=5"
        );
        assert_eq!(bare("2001:db8::1/64"), "2001:db8::1");
    }
}
