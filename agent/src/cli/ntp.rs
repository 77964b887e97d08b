//! `appliancectl ntp status|set|off`: the NTP servers and the clock's status
//! (`/appliance/api/v1/network/ntp`).

use super::render::field;
use super::{check, CliError, Outcome};
use crate::api::PREFIX;
use crate::client::Client;
use crate::model::ntp::{ClockAction, NtpRequest, NtpServer, NtpServers, NtpView};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum NtpAction {
    /// Show the servers, whether the clock is synchronised, the offset and the server in use.
    Status,
    /// Use these servers (IP addresses or host names, in order of preference; at most 5).
    Set {
        #[arg(required = true)]
        servers: Vec<String>,
    },
    /// Use no NTP server: the clock is left as it is.
    Off,
}

pub(crate) fn view_text(v: &NtpView) -> String {
    let mut out = String::new();
    let servers: Vec<String> = v.servers.as_slice().iter().map(|s| s.to_string()).collect();
    if servers.is_empty() {
        field(&mut out, "NTP", "off (no servers)");
    } else {
        field(&mut out, "Servers", servers.join(", "));
    }
    let s = &v.status;
    field(
        &mut out,
        "Synchronised",
        if s.synchronised { "yes" } else { "no" },
    );
    if let (Some(server), Some(address)) = (&s.server, &s.address) {
        let name = server.to_string();
        let shown = if name == address.to_string() {
            name
        } else {
            format!("{name} ({address})")
        };
        field(
            &mut out,
            "Server",
            format_args!("{shown}; our stratum {}", s.stratum.unwrap_or_default()),
        );
    }
    if let Some(offset) = s.offset_seconds {
        field(
            &mut out,
            "Offset",
            format_args!(
                "{:+.6} s (delay {:.6} s)",
                offset,
                s.delay_seconds.unwrap_or_default()
            ),
        );
    }
    if let Some(t) = &s.last_sync {
        let action = match s.last_action {
            Some(ClockAction::Stepped) => " (stepped)",
            Some(ClockAction::Slewed) => " (slewed)",
            Some(ClockAction::ObservedOnly) => " (observed only)",
            None => "",
        };
        field(&mut out, "Last sync", format_args!("{t}{action}"));
    }
    if let Some(e) = &s.error {
        field(&mut out, "Error", e);
    }
    out.trim_end().to_string()
}

pub async fn execute(client: &Client, action: &NtpAction) -> Outcome {
    let path = format!("{PREFIX}/network/ntp");
    let answer = match action {
        NtpAction::Status => client.request("GET", &path, None).await?,
        NtpAction::Set { .. } | NtpAction::Off => {
            let list = match action {
                NtpAction::Set { servers } => servers
                    .iter()
                    .map(|s| s.parse::<NtpServer>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(CliError::Usage)?,
                _ => Vec::new(),
            };
            let servers = NtpServers::try_from(list).map_err(CliError::Usage)?;
            let body = serde_json::to_vec(&NtpRequest { servers }).map_err(CliError::Decode)?;
            client.request("PUT", &path, Some(body)).await?
        }
    };
    let v = check(answer)?;
    let view: NtpView = serde_json::from_value(v.clone()).map_err(CliError::Decode)?;
    Ok((v, view_text(&view)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ntp::NtpStatus;

    #[test]
    fn the_status_reads_in_words() {
        let v = NtpView {
            servers: vec!["ntp.example.net".parse().unwrap()].try_into().unwrap(),
            status: NtpStatus {
                synchronised: true,
                server: Some("ntp.example.net".into()),
                address: Some("192.0.2.1".parse().unwrap()),
                stratum: Some(2),
                offset_seconds: Some(-0.0015),
                delay_seconds: Some(0.0004),
                last_sync: Some("2026-01-01T00:00:00Z".into()),
                last_action: Some(ClockAction::ObservedOnly),
                error: None,
            },
        };
        let text = view_text(&v);
        assert!(
            text.contains("ntp.example.net (192.0.2.1); our stratum 2"),
            "{text}"
        );
        assert!(text.contains("-0.001500 s"), "{text}");
        assert!(
            text.contains("2026-01-01T00:00:00Z (observed only)"),
            "{text}"
        );
        let off = view_text(&NtpView {
            servers: NtpServers::default(),
            status: NtpStatus {
                error: None,
                ..NtpStatus::default()
            },
        });
        assert!(off.contains("off (no servers)"), "{off}");
        assert!(off.contains("no"), "{off}");
    }
}
