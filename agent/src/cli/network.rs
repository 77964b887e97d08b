//! Verbs for the network: `ip`, `route`, `dns`, `hostname`, `test` and `network`.
//!
//! Every verb that changes something takes `--confirm-within SECONDS`: the appliance
//! undoes the change unless `appliancectl network confirm` follows in time.

use super::render::network as text;
use super::{check, CliError, Outcome};
use crate::api::PREFIX;
use crate::client::Client;
use crate::model::netconfig::{
    AddressConfig, DnsConfig, DomainName, Family, Hostname, IpCidr, NetworkConfig, NicName,
    RouteConfig,
};
use crate::model::{
    ChangeOutcome, DnsLookupRequest, DnsLookupResult, EnabledRequest, GatewayRequest,
    HostnameRequest, HostnameView, NetworkStatus, Nic, PingRequest, PingResult, RoutesView,
    TcpTestRequest, TcpTestResult,
};
use clap::Subcommand;
use serde::Serialize;
use std::net::IpAddr;

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
        nic: NicName,
        address: IpCidr,
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
        gateway: IpAddr,
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
        servers: Vec<IpAddr>,
        /// A search domain; repeat for more.
        #[arg(long = "search", value_name = "DOMAIN")]
        search: Vec<DomainName>,
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
        name: Hostname,
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

/// Sends one request with an optional typed JSON body.
async fn send<B: Serialize>(
    client: &Client,
    method: &str,
    path: String,
    body: Option<&B>,
) -> Result<serde_json::Value, CliError> {
    let body = body
        .map(serde_json::to_vec)
        .transpose()
        .map_err(CliError::Decode)?;
    check(client.request(method, &path, body).await?)
}

/// A GET, decoded into `T`.
async fn get<T: serde::de::DeserializeOwned>(
    client: &Client,
    path: &str,
) -> Result<(serde_json::Value, T), CliError> {
    let v = send::<()>(client, "GET", format!("{PREFIX}{path}"), None).await?;
    let t = decode(&v)?;
    Ok((v, t))
}

/// A change: the answer is a [`ChangeOutcome`].
async fn changed<B: Serialize>(
    client: &Client,
    method: &str,
    path: String,
    body: Option<&B>,
) -> Outcome {
    let v = send(client, method, path, body).await?;
    let outcome: ChangeOutcome = decode(&v)?;
    Ok((v, text::change(&outcome)))
}

/// A utility test: POSTs `body` to `/network/test/{what}` and renders the result.
async fn run_test<B: Serialize, R: serde::de::DeserializeOwned>(
    client: &Client,
    what: &str,
    body: &B,
    render: impl FnOnce(R) -> String,
) -> Outcome {
    let v = send(
        client,
        "POST",
        format!("{PREFIX}/network/test/{what}"),
        Some(body),
    )
    .await?;
    let r: R = decode(&v)?;
    Ok((v, render(r)))
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
                let (v, d): (_, DnsConfig) = get(client, "/network/dns").await?;
                Ok((v, text::dns(&d)))
            }
            DnsAction::Set {
                servers,
                search,
                confirm,
            } => {
                let body = DnsConfig {
                    servers: servers.clone(),
                    search: search.clone(),
                };
                let path = with_confirm("/network/dns", confirm);
                changed(client, "PUT", path, Some(&body)).await
            }
            DnsAction::Clear { confirm } => {
                let path = with_confirm("/network/dns", confirm);
                changed(client, "PUT", path, Some(&DnsConfig::default())).await
            }
        },
        NetworkCommand::Hostname { action } => {
            match action.as_ref().unwrap_or(&HostnameAction::Show) {
                HostnameAction::Show => {
                    let (v, h): (_, HostnameView) = get(client, "/network/hostname").await?;
                    Ok((v, text::hostname(&h)))
                }
                HostnameAction::Set { name, confirm } => {
                    let body = HostnameRequest {
                        hostname: name.clone(),
                    };
                    let path = with_confirm("/network/hostname", confirm);
                    changed(client, "PUT", path, Some(&body)).await
                }
                HostnameAction::Reset { confirm } => {
                    let path = with_confirm("/network/hostname", confirm);
                    changed::<()>(client, "DELETE", path, None).await
                }
            }
        }
        NetworkCommand::Test { action } => test(client, action).await,
        NetworkCommand::Network { action } => match action.as_ref().unwrap_or(&NetAction::Status) {
            NetAction::Status => {
                let (v, s): (_, NetworkStatus) = get(client, "/network/status").await?;
                Ok((v, text::status(&s)))
            }
            NetAction::Config => {
                let (v, _): (_, NetworkConfig) = get(client, "/network/config").await?;
                let text = serde_json::to_string_pretty(&v).unwrap_or_default();
                Ok((v, text))
            }
            NetAction::Confirm => {
                let path = format!("{PREFIX}/network/confirm");
                let v = send::<()>(client, "POST", path, None).await?;
                let text = v["message"].as_str().unwrap_or("confirmed").to_string();
                Ok((v, text))
            }
            NetAction::Rollback => {
                let path = format!("{PREFIX}/network/rollback");
                changed::<()>(client, "POST", path, None).await
            }
        },
    }
}

async fn ip(client: &Client, action: &IpAction) -> Outcome {
    let address_path =
        |nic: &str, address: &str| format!("/network/interfaces/{nic}/addresses/{}", bare(address));
    match action {
        IpAction::List => {
            let (v, nics): (_, Vec<Nic>) = get(client, "/network/interfaces").await?;
            Ok((v, text::nics(&nics)))
        }
        IpAction::Add {
            nic,
            address,
            disabled,
            confirm,
        } => {
            let body = AddressConfig {
                address: *address,
                enabled: !disabled,
            };
            let path = with_confirm(&format!("/network/interfaces/{nic}/addresses"), confirm);
            changed(client, "POST", path, Some(&body)).await
        }
        IpAction::Remove {
            nic,
            address,
            confirm,
        } => {
            let path = with_confirm(&address_path(nic, address), confirm);
            changed::<()>(client, "DELETE", path, None).await
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
            let body = EnabledRequest {
                enabled: matches!(action, IpAction::Enable { .. }),
            };
            let path = with_confirm(&address_path(nic, address), confirm);
            changed(client, "PATCH", path, Some(&body)).await
        }
    }
}

async fn route(client: &Client, action: &RouteAction) -> Outcome {
    match action {
        RouteAction::List => {
            let (v, r): (_, RoutesView) = get(client, "/network/routes").await?;
            Ok((v, text::routes(&r)))
        }
        RouteAction::Add {
            destination,
            gateway,
            confirm,
        } => {
            if destination == "default" {
                let family = Family::of(*gateway).as_str();
                let path = with_confirm(&format!("/network/gateways/{family}"), confirm);
                let body = GatewayRequest { gateway: *gateway };
                changed(client, "PUT", path, Some(&body)).await
            } else {
                let destination: IpCidr = destination
                    .parse()
                    .map_err(|e| CliError::Usage(format!("{destination:?}: {e}")))?;
                let body = RouteConfig {
                    destination,
                    gateway: *gateway,
                };
                let path = with_confirm("/network/routes", confirm);
                changed(client, "POST", path, Some(&body)).await
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
            changed::<()>(client, "DELETE", with_confirm(&path, confirm), None).await
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
            let body = TcpTestRequest {
                host: target.clone(),
                port: *target_port,
                timeout_ms: Some(*timeout_ms),
            };
            run_test(client, "tcp", &body, |r: TcpTestResult| text::tcp(&r)).await
        }
        TestAction::Ping {
            target,
            count,
            interval_ms,
            timeout_ms,
        } => {
            let body = PingRequest {
                host: target.clone(),
                count: Some(*count),
                interval_ms: Some(*interval_ms),
                timeout_ms: Some(*timeout_ms),
            };
            run_test(client, "ping", &body, |r: PingResult| text::ping(&r)).await
        }
        TestAction::Dns { name } => {
            let body = DnsLookupRequest { name: name.clone() };
            run_test(client, "dns", &body, |r: DnsLookupResult| {
                text::dns_lookup(&r)
            })
            .await
        }
    }
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
                assert_eq!(nic.as_str(), "eth0");
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
