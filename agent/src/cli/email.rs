//! `appliancectl email show|set|test`: the site's alert e-mail (`/login/api/v1/email`).
//! The password is sent, never shown: `show` says only whether one is set.

use super::render::field;
use super::{check, CliError, Outcome};
use crate::api::LOGIN_PREFIX;
use crate::client::Client;
use crate::email::settings::{MailAddress, Password, Recipients, RelayHost, Security, Username};
use crate::email::{EmailUpdate, EmailView};
use clap::Subcommand;
use std::num::NonZeroU16;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum EmailAction {
    /// Show the settings (the password only as set or not).
    Show,
    /// Change some settings; the others keep their values.
    Set(SetArgs),
    /// Send a test message now to every recipient.
    Test,
}

#[derive(clap::Args, Debug, Default)]
pub struct SetArgs {
    /// The mail relay: an IP address or a DNS name.
    #[arg(long)]
    pub smtp_host: Option<String>,
    /// The relay's port (default: 25, 587 or 465 by --security).
    #[arg(long, conflicts_with = "default_port")]
    pub smtp_port: Option<u16>,
    /// Go back to the default port of the security mode.
    #[arg(long)]
    pub default_port: bool,
    /// none (plain SMTP), starttls (must succeed) or tls (from the first byte).
    #[arg(long, value_enum)]
    pub security: Option<Security>,
    /// The user name for SMTP authentication (give --password too).
    #[arg(long, conflicts_with = "no_login")]
    pub username: Option<String>,
    /// The password for SMTP authentication.
    #[arg(long, conflicts_with = "no_login")]
    pub password: Option<String>,
    /// Clear the user name and password.
    #[arg(long)]
    pub no_login: bool,
    /// The sender address.
    #[arg(long)]
    pub from: Option<String>,
    /// A recipient (repeat for several; replaces the list).
    #[arg(long = "to")]
    pub to: Vec<String>,
    /// Send alerts.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Send no alerts.
    #[arg(long)]
    pub disable: bool,
    /// Accept a relay certificate that does not verify (self-signed): true or false.
    #[arg(long)]
    pub accept_invalid_certs: Option<bool>,
}

/// The longest `email test` waits: the agent's own limit on the exchange, and some.
const TEST_TIMEOUT: Duration =
    Duration::from_secs(crate::email::smtp::EXCHANGE_TIMEOUT.as_secs() + 10);

fn usage<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, CliError> {
    r.map_err(|e| CliError::Usage(e.to_string()))
}

fn update_of(a: &SetArgs) -> Result<EmailUpdate, CliError> {
    let port = match (a.default_port, a.smtp_port) {
        (true, _) => Some(None),
        (false, Some(p)) => {
            Some(Some(NonZeroU16::new(p).ok_or_else(|| {
                CliError::Usage("--smtp-port must not be 0".into())
            })?))
        }
        (false, None) => None,
    };
    let to = if a.to.is_empty() {
        None
    } else {
        let list =
            a.to.iter()
                .map(|t| usage(t.parse::<MailAddress>()))
                .collect::<Result<Vec<_>, _>>()?;
        Some(usage(Recipients::try_from(list))?)
    };
    let (username, password) = if a.no_login {
        (Some(None), Some(None))
    } else {
        (
            a.username
                .clone()
                .map(|u| usage(Username::try_from(u)).map(Some))
                .transpose()?,
            a.password
                .clone()
                .map(|p| usage(Password::try_from(p)).map(Some))
                .transpose()?,
        )
    };
    Ok(EmailUpdate {
        enabled: (a.enable || a.disable).then_some(a.enable),
        smtp_host: a
            .smtp_host
            .as_deref()
            .map(|h| usage(h.parse::<RelayHost>()).map(Some))
            .transpose()?,
        smtp_port: port,
        security: a.security,
        username,
        password,
        from: a
            .from
            .as_deref()
            .map(|f| usage(f.parse::<MailAddress>()).map(Some))
            .transpose()?,
        to,
        accept_invalid_certs: a.accept_invalid_certs,
    })
}

pub(crate) fn view_text(v: &EmailView) -> String {
    let mut out = String::new();
    field(&mut out, "E-mail", if v.enabled { "on" } else { "off" });
    let host = v.smtp_host.as_ref().map_or("not set", |h| h.as_str());
    field(
        &mut out,
        "Relay",
        format_args!("{host} port {} ({})", v.smtp_port, v.security),
    );
    let login = match (&v.username, v.password_set) {
        (Some(u), true) => format!("{} (password set)", u.as_str()),
        (Some(u), false) => format!("{} (no password)", u.as_str()),
        (None, _) => "none".into(),
    };
    field(&mut out, "Login", login);
    field(
        &mut out,
        "From",
        v.from.as_ref().map_or("not set", |f| f.as_str()),
    );
    let to: Vec<&str> = v.to.as_slice().iter().map(|a| a.as_str()).collect();
    field(
        &mut out,
        "To",
        if to.is_empty() {
            "nobody".to_string()
        } else {
            to.join(", ")
        },
    );
    if v.accept_invalid_certs {
        field(
            &mut out,
            "Certificate",
            "not checked (accept_invalid_certs)",
        );
    }
    out.trim_end().to_string()
}

pub async fn execute(client: &Client, action: &EmailAction) -> Outcome {
    let path = format!("{LOGIN_PREFIX}/email");
    match action {
        EmailAction::Show => {
            let v = check(client.request("GET", &path, None).await?)?;
            let view: EmailView = serde_json::from_value(v.clone()).map_err(CliError::Decode)?;
            Ok((v, view_text(&view)))
        }
        EmailAction::Set(a) => {
            let update = update_of(a)?;
            if update == EmailUpdate::default() {
                return Err(CliError::Usage(
                    "nothing to change: give at least one option (see --help)".into(),
                ));
            }
            let body = serde_json::to_vec(&update).map_err(CliError::Decode)?;
            let v = check(client.request("PUT", &path, Some(body)).await?)?;
            let view: EmailView = serde_json::from_value(v.clone()).map_err(CliError::Decode)?;
            Ok((v, view_text(&view)))
        }
        EmailAction::Test => {
            let patient = Client {
                host: client.host.clone(),
                port: client.port,
                trust: client.trust.clone(),
                timeout: client.timeout.max(TEST_TIMEOUT),
                token: client.token.clone(),
            };
            let v = check(
                patient
                    .request("POST", &format!("{path}/test"), None)
                    .await?,
            )?;
            let sent: crate::api::email::TestSent =
                serde_json::from_value(v.clone()).map_err(CliError::Decode)?;
            let text = format!(
                "Test message sent through {} to {}",
                sent.relay,
                sent.to.join(", ")
            );
            Ok((v, text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<EmailUpdate, CliError> {
        let mut all = vec!["appliancectl", "email", "set"];
        all.extend_from_slice(args);
        let cli =
            crate::cli::Cli::try_parse_from(all).map_err(|e| CliError::Usage(e.to_string()))?;
        match cli.command {
            crate::cli::Command::Email {
                action: EmailAction::Set(a),
            } => update_of(&a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn set_sends_only_what_was_given() {
        let u = parse(&["--to", "a@example.net", "--to", "b@example.net", "--enable"]).unwrap();
        assert_eq!(u.enabled, Some(true));
        assert_eq!(u.to.unwrap().as_slice().len(), 2);
        assert_eq!(u.smtp_host, None);
        assert_eq!(u.password, None);
        let json =
            serde_json::to_string(&parse(&["--no-login", "--default-port"]).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"smtp_port":null,"username":null,"password":null}"#
        );
        let u = parse(&["--security", "tls", "--smtp-port", "2465", "--disable"]).unwrap();
        assert_eq!(u.security, Some(Security::Tls));
        assert_eq!(u.enabled, Some(false));
        assert_eq!(u.smtp_port, Some(NonZeroU16::new(2465)));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["--to", "nobody"][..],
            &["--smtp-host", "not a host"],
            &["--smtp-port", "0"],
            &["--enable", "--disable"],
            &["--password", "p", "--no-login"],
        ] {
            let e = parse(args).unwrap_err();
            assert!(matches!(e, CliError::Usage(_)), "{args:?}: {e}");
        }
    }

    #[test]
    fn show_never_prints_a_password() {
        let view = crate::email::settings::EmailSettings::default()
            .apply(
                serde_json::from_str(
                    r#"{"enabled": true, "smtp_host": "192.0.2.25", "security": "none",
                        "username": "u", "password": "hunter22", "from": "b@example.net",
                        "to": ["noc@example.net"]}"#,
                )
                .unwrap(),
            )
            .view();
        let text = view_text(&view);
        assert!(text.contains("192.0.2.25 port 25 (none)"), "{text}");
        assert!(text.contains("u (password set)"), "{text}");
        assert!(!text.contains("hunter22"), "{text}");
    }
}
