//! `appliancectl failover status|history|key|establish|break|become-primary|become-backup|fix|settings|shared-ips|test-ips|sync|sync-history`:
//! the failover pair on the site surface (`/login/api/v1`).

use super::render::field;
use super::{check, CliError, Outcome};
use crate::api::login::{
    EstablishRequest, FailoverStatus, History, KeyView, RoleChanged, SharedIps, TestIpResults,
};
use crate::client::Client;
use crate::failover::wire::Endpoint;
use crate::failover::RoleRequest;
use crate::failover::{Settings, SettingsUpdate};
use clap::Subcommand;
use std::net::IpAddr;

#[derive(Subcommand, Debug)]
pub enum FailoverAction {
    /// Show this appliance's id, role, key fingerprint, settings, shared IPs and warnings.
    Status,
    /// The inter-appliance key (status shows only its fingerprint).
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Show the backup settings, or change some of them (the others keep their values).
    Settings(SettingsArgs),
    /// Show the shared IPs, or select them (each must be configured on a NIC here).
    #[command(name = "shared-ips")]
    SharedIps {
        #[command(subcommand)]
        action: Option<SharedIpsAction>,
    },
    /// Role changes, lost and found peers, test-IP results, conflicts and fixes.
    History,
    /// Establish the relationship, on the intended primary.
    Establish {
        /// The backup, as HOST or HOST:PORT (IPv6 in brackets with a port).
        #[arg(long)]
        backup: String,
        /// This appliance as the backup reaches it, HOST or HOST:PORT.
        #[arg(long)]
        reverse: String,
    },
    /// Break the relationship (from either side); the shared IPs stay as they are.
    Break,
    /// Make this backup the primary (the peer becomes backup when it can be reached).
    #[command(name = "become-primary")]
    BecomePrimary(RoleArgs),
    /// Make this primary the backup (the peer becomes primary).
    #[command(name = "become-backup")]
    BecomeBackup(RoleArgs),
    /// Settle a conflict (both primary or both backup) by evidence, on both appliances.
    Fix,
    /// Ping the network connectivity test IPs now.
    #[command(name = "test-ips")]
    TestIps,
    /// Show the data sync's progress; with --now, start one (Sync Now) and follow it.
    Sync {
        #[arg(long)]
        now: bool,
    },
    /// The past data syncs.
    #[command(name = "sync-history")]
    SyncHistory,
}

#[derive(clap::Args, Debug, Default)]
pub struct RoleArgs {
    /// Pull a data sync from the primary first.
    #[arg(long)]
    pub data_sync_first: bool,
    /// Go ahead even when the peer cannot be contacted.
    #[arg(long)]
    pub force: bool,
}

/// `HOST`, `HOST:PORT`, `[V6]:PORT` or a bare IPv6 address, as an endpoint (port 443 by
/// default).
pub fn endpoint(s: &str) -> Result<Endpoint, CliError> {
    let bad = || CliError::Usage(format!("{s:?} is not HOST or HOST:PORT"));
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or_else(bad)?;
        match tail.strip_prefix(':') {
            Some(p) => (h.to_string(), p.parse().map_err(|_| bad())?),
            None if tail.is_empty() => (h.to_string(), 443),
            None => return Err(bad()),
        }
    } else if s.matches(':').count() == 1 {
        let (h, p) = s.split_once(':').ok_or_else(bad)?;
        (h.to_string(), p.parse().map_err(|_| bad())?)
    } else {
        (s.to_string(), 443)
    };
    let e = Endpoint { host, port };
    e.check().map_err(CliError::Usage)?;
    Ok(e)
}

#[derive(Subcommand, Debug)]
pub enum KeyAction {
    /// Set the key from a file (its first line, 16 to 256 characters); prints its fingerprint.
    Set {
        #[arg(long)]
        key_file: std::path::PathBuf,
    },
    /// Clear the key.
    Clear,
}

#[derive(clap::Args, Debug, Default)]
pub struct SettingsArgs {
    /// Probe the primary, sync and alert while backup.
    #[arg(long)]
    pub backup_operations: Option<bool>,
    /// Take over by itself when the primary is silent for the timeout.
    #[arg(long)]
    pub automatic_failover: Option<bool>,
    /// Seconds of primary silence before the backup acts (0.2 to 86400).
    #[arg(long)]
    pub primary_timeout: Option<f64>,
    /// A network connectivity test IP (repeat for several; replaces the list).
    #[arg(long = "test-ip", conflicts_with = "no_test_ips")]
    pub test_ips: Vec<IpAddr>,
    /// Clear the test IPs.
    #[arg(long)]
    pub no_test_ips: bool,
    /// Pull a data sync every N minutes (counted from the last start).
    #[arg(long, value_name = "MINUTES", conflicts_with_all = ["sync_daily", "sync_weekly"])]
    pub sync_every: Option<u32>,
    /// Pull a data sync daily at HH:MM UTC.
    #[arg(long, value_name = "HH:MM", conflicts_with = "sync_weekly")]
    pub sync_daily: Option<String>,
    /// Pull a data sync weekly, DAY@HH:MM UTC (e.g. sunday@03:00).
    #[arg(long, value_name = "DAY@HH:MM")]
    pub sync_weekly: Option<String>,
    /// The data sync's bandwidth limit, bytes per second.
    #[arg(long, value_name = "BYTES", conflicts_with = "unlimited")]
    pub bandwidth_limit: Option<u64>,
    /// No bandwidth limit.
    #[arg(long)]
    pub unlimited: bool,
    /// Alert (on the primary) when no backup has pulled for this many minutes.
    #[arg(long, value_name = "MINUTES")]
    pub no_pull_alert: Option<u32>,
    /// Seconds before the first sync of a relationship.
    #[arg(long, value_name = "SECONDS")]
    pub first_sync_delay: Option<u32>,
}

/// The schedule the settings flags ask for, as the API reads it.
fn schedule_of(a: &SettingsArgs) -> Result<Option<crate::sync::Schedule>, CliError> {
    let json = if let Some(n) = a.sync_every {
        serde_json::json!({ "every_minutes": n })
    } else if let Some(at) = &a.sync_daily {
        serde_json::json!({ "daily_at": at })
    } else if let Some(w) = &a.sync_weekly {
        let (day, at) = w
            .split_once('@')
            .ok_or_else(|| CliError::Usage(format!("{w:?} is not DAY@HH:MM")))?;
        serde_json::json!({ "weekly": { "day": day.to_lowercase(), "at": at } })
    } else {
        return Ok(None);
    };
    serde_json::from_value(json)
        .map(Some)
        .map_err(|e| CliError::Usage(e.to_string()))
}

#[derive(Subcommand, Debug)]
pub enum SharedIpsAction {
    /// Show the selected shared IPs (the default).
    Show,
    /// Select these addresses (replaces the list).
    Set {
        #[arg(required = true)]
        addresses: Vec<IpAddr>,
    },
    /// Select none.
    Clear,
}

fn api(path: &str) -> String {
    format!("{}{path}", crate::api::LOGIN_PREFIX)
}

fn decode<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, CliError> {
    serde_json::from_value(v.clone()).map_err(CliError::Decode)
}

fn body(v: &impl serde::Serialize) -> Result<Option<Vec<u8>>, CliError> {
    serde_json::to_vec(v).map(Some).map_err(CliError::Decode)
}

fn list(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        "none".into()
    } else {
        ips.iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn settings_text(s: &Settings, out: &mut String) {
    field(out, "Backup operations", on_off(s.backup_operations));
    field(out, "Automatic failover", on_off(s.automatic_failover));
    field(
        out,
        "Primary timeout",
        format_args!("{} s", s.timeout().as_secs_f64()),
    );
    field(out, "Test IPs", list(s.test_ips.as_slice()));
    field(
        out,
        "Sync schedule",
        serde_json::to_string(&s.sync_schedule).unwrap_or_default(),
    );
    match s.bandwidth_limit_bytes_per_second {
        Some(b) => field(out, "Bandwidth limit", format_args!("{} bytes/s", b.get())),
        None => field(out, "Bandwidth limit", "unlimited"),
    }
    field(
        out,
        "No-pull alert",
        format_args!("after {} minutes", s.no_pull_alert_minutes),
    );
}

fn progress_text(p: &crate::sync::service::Progress) -> String {
    let mut out = String::new();
    match p.state {
        crate::sync::service::State::Running => field(
            &mut out,
            "Sync",
            format_args!(
                "running ({}): {} of {} files, {} of {} bytes, {} on the wire, {:.0} bytes/s",
                p.phase.as_deref().unwrap_or("starting"),
                p.files_done,
                p.files_total,
                p.bytes_done,
                p.bytes_total,
                p.bytes_on_wire,
                p.rate_bytes_per_second
            ),
        ),
        crate::sync::service::State::Idle => field(&mut out, "Sync", "idle"),
    }
    if let Some(next) = p.next_scheduled {
        field(
            &mut out,
            "Next scheduled",
            format_args!("{next} (Unix time)"),
        );
    }
    if let Some(o) = &p.overlapped {
        field(&mut out, "Warning", o);
    }
    out.trim_end().to_string()
}

async fn sync_history(
    client: &Client,
) -> Result<(serde_json::Value, crate::api::login::SyncHistory), CliError> {
    let v = check(
        client
            .request("GET", &api("/failover/sync/history"), None)
            .await?,
    )?;
    let h = decode(&v)?;
    Ok((v, h))
}

/// Follows a running sync with a progress bar until it is idle.
async fn follow(client: &Client) -> Result<serde_json::Value, CliError> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut seen_running = false;
    let started = std::time::Instant::now();
    loop {
        let v = check(client.request("GET", &api("/failover/sync"), None).await?)?;
        let p: crate::sync::service::Progress = decode(&v)?;
        match p.state {
            crate::sync::service::State::Running => {
                seen_running = true;
                bar.set_length(p.bytes_total);
                bar.set_position(p.bytes_done);
                bar.set_message(p.phase.clone().unwrap_or_default());
            }
            // A sync asked of the peer may take a moment to show.
            crate::sync::service::State::Idle
                if seen_running || started.elapsed() > std::time::Duration::from_secs(5) =>
            {
                bar.finish_and_clear();
                return Ok(v);
            }
            crate::sync::service::State::Idle => {}
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// One line each, or `empty` when there are none.
fn lines_or(lines: Vec<String>, empty: &str) -> String {
    if lines.is_empty() {
        empty.to_string()
    } else {
        lines.join("\n")
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

pub(crate) fn status_text(st: &FailoverStatus) -> String {
    let mut out = String::new();
    field(
        &mut out,
        "Appliance",
        format_args!("{} ({})", st.hostname, st.appliance_id),
    );
    field(
        &mut out,
        "Role",
        format_args!("{} (epoch {})", st.role, st.epoch),
    );
    field(
        &mut out,
        "Key",
        st.key_fingerprint.as_deref().unwrap_or("not set"),
    );
    if st.pending {
        field(
            &mut out,
            "Pending",
            "yes: checking the peer before taking the shared IPs",
        );
    }
    field(
        &mut out,
        "Shared IPs",
        format_args!(
            "{} (held here: {})",
            list(&st.shared_ips),
            list(&st.enabled_shared_ips)
        ),
    );
    if let Some(p) = &st.peer {
        let seen = match (&p.state, p.reachable) {
            (Some(s), true) => format!(
                "{} ({}), {} epoch {}",
                s.hostname,
                s.id,
                crate::failover::driver::role_name(s.role),
                s.epoch
            ),
            (_, false) => "unreachable".to_string(),
            (None, true) => "reachable".to_string(),
        };
        field(&mut out, "Peer", format_args!("{} {seen}", p.endpoint));
        if let Some(ago) = p.last_answer_seconds_ago {
            field(&mut out, "Last answer", format_args!("{ago:.1} s ago"));
        }
    }
    if let Some(c) = &st.countdown_seconds {
        field(&mut out, "Takeover in", format_args!("{c:.1} s"));
    }
    if let Some(c) = &st.conflict {
        field(&mut out, "Conflict", &c.message);
    }
    if let Some(p) = &st.problem {
        field(&mut out, "Problem", p);
    }
    settings_text(&st.settings, &mut out);
    for w in &st.warnings {
        field(&mut out, "Warning", w);
    }
    out.trim_end().to_string()
}

fn update_of(a: &SettingsArgs) -> Result<SettingsUpdate, CliError> {
    let timeout = a
        .primary_timeout
        .map(crate::failover::PrimaryTimeout::try_from)
        .transpose()
        .map_err(CliError::Usage)?;
    let test_ips = if a.no_test_ips {
        Some(Vec::new())
    } else if a.test_ips.is_empty() {
        None
    } else {
        Some(a.test_ips.clone())
    };
    Ok(SettingsUpdate {
        backup_operations: a.backup_operations,
        automatic_failover: a.automatic_failover,
        primary_timeout_seconds: timeout,
        test_ips: test_ips
            .map(crate::failover::TestIps::try_from)
            .transpose()
            .map_err(CliError::Usage)?,
        sync_schedule: schedule_of(a)?,
        bandwidth_limit_bytes_per_second: if a.unlimited {
            Some(None)
        } else {
            a.bandwidth_limit
                .map(|b| crate::failover::settings::BandwidthLimit::try_from(b).map(Some))
                .transpose()
                .map_err(CliError::Usage)?
        },
        no_pull_alert_minutes: a
            .no_pull_alert
            .map(crate::failover::settings::NoPullMinutes::try_from)
            .transpose()
            .map_err(CliError::Usage)?,
        first_sync_delay_seconds: a
            .first_sync_delay
            .map(crate::failover::settings::FirstSyncDelay::try_from)
            .transpose()
            .map_err(CliError::Usage)?,
    })
}

pub async fn execute(client: &Client, action: &FailoverAction) -> Outcome {
    match action {
        FailoverAction::Status => {
            let v = check(
                client
                    .request("GET", &api("/failover/status"), None)
                    .await?,
            )?;
            let st: FailoverStatus = decode(&v)?;
            Ok((v, status_text(&st)))
        }
        FailoverAction::Key { action } => {
            let path = api("/security/inter-appliance-key");
            let answer = match action {
                KeyAction::Set { key_file } => {
                    let text = std::fs::read_to_string(key_file).map_err(CliError::Local)?;
                    let key = text.lines().next().unwrap_or("").to_string();
                    let req = serde_json::json!({ "key": key });
                    client.request("PUT", &path, body(&req)?).await?
                }
                KeyAction::Clear => client.request("DELETE", &path, None).await?,
            };
            let v = check(answer)?;
            let k: KeyView = decode(&v)?;
            let text = match k.fingerprint {
                Some(f) => format!("Key set; fingerprint {f}"),
                None => "Key cleared".into(),
            };
            Ok((v, text))
        }
        FailoverAction::Settings(a) => {
            let path = api("/failover/settings");
            let update = update_of(a)?;
            let answer = if update == SettingsUpdate::default() {
                client.request("GET", &path, None).await?
            } else {
                client.request("PUT", &path, body(&update)?).await?
            };
            let v = check(answer)?;
            let s: Settings = decode(&v)?;
            let mut out = String::new();
            settings_text(&s, &mut out);
            Ok((v, out.trim_end().to_string()))
        }
        FailoverAction::SharedIps { action } => {
            let path = api("/failover/shared-ips");
            let chosen = match action {
                None | Some(SharedIpsAction::Show) => None,
                Some(SharedIpsAction::Set { addresses }) => Some(addresses.clone()),
                Some(SharedIpsAction::Clear) => Some(Vec::new()),
            };
            let answer = match chosen {
                None => client.request("GET", &path, None).await?,
                Some(addresses) => {
                    let req = SharedIps { addresses };
                    client.request("PUT", &path, body(&req)?).await?
                }
            };
            let v = check(answer)?;
            let s: SharedIps = decode(&v)?;
            Ok((v, format!("Shared IPs: {}", list(&s.addresses))))
        }
        FailoverAction::History => {
            let v = check(
                client
                    .request("GET", &api("/failover/history"), None)
                    .await?,
            )?;
            let h: History = decode(&v)?;
            let lines: Vec<String> = h
                .entries
                .iter()
                .map(|e| {
                    let what = serde_json::to_value(&e.entry).unwrap_or_default();
                    format!("{}  {}", e.unix_time, what)
                })
                .collect();
            Ok((v, lines_or(lines, "No failover history")))
        }
        FailoverAction::Establish { backup, reverse } => {
            let req = EstablishRequest {
                backup: endpoint(backup)?,
                reverse: endpoint(reverse)?,
            };
            let v = check(
                client
                    .request("POST", &api("/failover/relationship"), body(&req)?)
                    .await?,
            )?;
            let st: FailoverStatus = decode(&v)?;
            Ok((v, status_text(&st)))
        }
        FailoverAction::Break => {
            let v = check(
                client
                    .request("DELETE", &api("/failover/relationship"), None)
                    .await?,
            )?;
            Ok((
                v,
                "Relationship broken; the shared IPs stay as they are".into(),
            ))
        }
        FailoverAction::BecomePrimary(a) | FailoverAction::BecomeBackup(a) => {
            let path = match action {
                FailoverAction::BecomePrimary(_) => "/failover/become-primary",
                _ => "/failover/become-backup",
            };
            let req = RoleRequest {
                data_sync_first: a.data_sync_first,
                force: a.force,
            };
            let v = check(client.request("POST", &api(path), body(&req)?).await?)?;
            let r: RoleChanged = decode(&v)?;
            Ok((v, format!("Role: {} (epoch {})", r.role, r.epoch)))
        }
        FailoverAction::Fix => {
            let v = check(client.request("POST", &api("/failover/fix"), None).await?)?;
            let r: RoleChanged = decode(&v)?;
            Ok((
                v,
                format!("Fixed; role here: {} (epoch {})", r.role, r.epoch),
            ))
        }
        FailoverAction::Sync { now } => {
            if *now {
                check(client.request("POST", &api("/failover/sync"), None).await?)?;
                follow(client).await?;
                let (v, h) = sync_history(client).await?;
                let text = match h.entries.first() {
                    Some(e) => format!(
                        "Sync {}: {} files changed, {} bytes on the wire",
                        e.result, e.files_changed, e.bytes_on_wire
                    ),
                    None => "Sync asked of the backup (see its history)".into(),
                };
                return Ok((v, text));
            }
            let v = check(client.request("GET", &api("/failover/sync"), None).await?)?;
            let p: crate::sync::service::Progress = decode(&v)?;
            Ok((v, progress_text(&p)))
        }
        FailoverAction::SyncHistory => {
            let (v, h) = sync_history(client).await?;
            let lines: Vec<String> = h
                .entries
                .iter()
                .map(|e| {
                    format!(
                        "{}..{}  {:8}  {} files, {} bytes on the wire: {}",
                        e.started, e.ended, e.trigger, e.files_changed, e.bytes_on_wire, e.result
                    )
                })
                .collect();
            Ok((v, lines_or(lines, "No data sync yet")))
        }
        FailoverAction::TestIps => {
            let v = check(
                client
                    .request("POST", &api("/failover/test-ips/test"), None)
                    .await?,
            )?;
            let t: TestIpResults = decode(&v)?;
            let lines: Vec<String> = t
                .results
                .iter()
                .map(|r| match (r.answered, r.rtt_ms, &r.error) {
                    (true, Some(ms), _) => format!("{}: answered in {ms:.1} ms", r.address),
                    (_, _, Some(e)) => format!("{}: {e}", r.address),
                    _ => format!("{}: no answer", r.address),
                })
                .collect();
            Ok((v, lines_or(lines, "No test IPs are set")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<FailoverAction, clap::Error> {
        let mut all = vec!["appliancectl", "failover"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| match c.command {
            Command::Failover { action } => action,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn settings_flags_make_a_partial_update() {
        let FailoverAction::Settings(a) = parse(&[
            "settings",
            "--automatic-failover",
            "true",
            "--primary-timeout",
            "2.5",
        ])
        .unwrap() else {
            panic!()
        };
        let u = update_of(&a).unwrap();
        assert_eq!(u.automatic_failover, Some(true));
        assert_eq!(u.backup_operations, None);
        assert_eq!(u.test_ips, None);
        assert_eq!(
            serde_json::to_value(&u).unwrap()["primary_timeout_seconds"],
            2.5
        );
        let FailoverAction::Settings(a) = parse(&["settings", "--no-test-ips"]).unwrap() else {
            panic!()
        };
        assert_eq!(
            update_of(&a).unwrap().test_ips.map(|t| t.is_empty()),
            Some(true)
        );
        let FailoverAction::Settings(a) = parse(&["settings", "--primary-timeout", "0.1"]).unwrap()
        else {
            panic!()
        };
        assert!(matches!(update_of(&a), Err(CliError::Usage(_))));
        assert!(parse(&["settings", "--test-ip", "192.0.2.1", "--no-test-ips"]).is_err());
        assert!(
            parse(&["shared-ips", "set"]).is_err(),
            "set needs an address"
        );
        assert!(parse(&["shared-ips", "set", "192.0.2.100"]).is_ok());
    }

    #[test]
    fn status_text_shows_the_fingerprint_and_warnings() {
        let st = FailoverStatus {
            appliance_id: "4c4c4544-0042-3510-8048-b4c04f564432".into(),
            hostname: "fw-1".into(),
            role: "none".into(),
            epoch: 0,
            key_fingerprint: None,
            settings: Settings::default(),
            shared_ips: vec![],
            warnings: vec!["no inter-appliance key is set".into()],
            ..Default::default()
        };
        let t = status_text(&st);
        assert!(t.contains("fw-1 (4c4c4544"), "{t}");
        assert!(t.contains("none (epoch 0)"), "{t}");
        assert!(t.contains("not set"), "{t}");
        assert!(t.contains("600 s"), "{t}");
        assert!(t.contains("no inter-appliance key"), "{t}");
    }

    #[test]
    fn status_text_shows_the_peer_the_countdown_and_a_conflict() {
        let st = FailoverStatus {
            role: "backup".into(),
            epoch: 4,
            peer: Some(crate::failover::service::PeerReport {
                endpoint: Endpoint {
                    host: "192.0.2.1".into(),
                    port: 443,
                },
                reachable: false,
                state: None,
                last_answer_seconds_ago: Some(2.5),
            }),
            countdown_seconds: Some(1.5),
            conflict: Some(crate::api::login::ConflictView {
                kind: crate::failover::conflict::Kind::BothBackup,
                message: crate::failover::conflict::message(
                    crate::failover::conflict::Kind::BothBackup,
                ),
            }),
            ..Default::default()
        };
        let t = status_text(&st);
        assert!(t.contains("192.0.2.1:443 unreachable"), "{t}");
        assert!(t.contains("2.5 s ago"), "{t}");
        assert!(t.contains("Takeover in"), "{t}");
        assert!(
            t.contains("There is a conflict in the primary and secondary site instances."),
            "{t}"
        );
    }

    #[test]
    fn endpoints_parse_with_and_without_a_port() {
        let e = endpoint("192.0.2.1").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("192.0.2.1", 443));
        let e = endpoint("b2.example.net:8443").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("b2.example.net", 8443));
        let e = endpoint("[2001:db8::1]:444").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("2001:db8::1", 444));
        let e = endpoint("2001:db8::1").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("2001:db8::1", 443));
        assert!(endpoint("x:y").is_err());
        assert!(endpoint("[::1]x").is_err());
        assert!(endpoint("a/b").is_err());
    }
}
