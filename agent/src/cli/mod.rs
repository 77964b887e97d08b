//! `appliancectl`: a verb for every API operation; human output by default, `--json` for
//! scripts (the API's own JSON, unchanged).
//!
//! Exit codes: 0 success, 1 the appliance refused (its error is printed), 2 usage,
//! 3 could not reach the appliance, 4 TLS or certificate trouble.

mod api_account;
mod email;
mod failover;
mod files;
mod network;
mod ntp;
mod render;
pub mod session;
mod system;

use crate::client::{self, Client, ClientError, Trust};
use crate::model;
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "appliancectl",
    version,
    about = "Manage a B Series appliance over its HTTPS API"
)]
pub struct Cli {
    /// Appliance address (a factory-fresh one answers on 169.254.1.1, else .2, .3, ...).
    #[arg(
        long,
        global = true,
        default_value = "169.254.1.1",
        env = "APPLIANCE_HOST"
    )]
    pub host: String,
    /// HTTPS port.
    #[arg(long, global = true, default_value_t = 443)]
    pub port: u16,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up after this many seconds.
    #[arg(long, global = true, default_value_t = 10)]
    pub timeout: u64,
    /// Accept the appliance's certificate only if its SHA-256 fingerprint is this.
    #[arg(long, global = true)]
    pub fingerprint: Option<String>,
    /// Do not check the appliance's certificate at all.
    #[arg(long, global = true)]
    pub insecure: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show version, uptime, boot timeline, data partition and addresses.
    Status,
    /// Check that the API answers over HTTPS (needs no login; any HTTP answer counts).
    Ping,
    /// Log in (the session is kept per appliance in ~/.config/appliancectl/sessions).
    Login(system::LoginArgs),
    /// End the session.
    Logout,
    /// Change the admin password (the factory default must be changed first).
    Passwd(system::PasswdArgs),
    /// API tokens for scripts.
    Token {
        #[command(subcommand)]
        action: system::TokenAction,
    },
    /// The HTTPS certificate: show, import, export.
    Cert {
        #[command(subcommand)]
        action: system::CertAction,
    },
    /// Reset to factory defaults (`--level config`), erase for return (`--level rma`), or
    /// cancel a reset whose reboot has not begun (`--cancel`).
    Reset(system::ResetArgs),
    /// Shut the appliance down and power it off.
    Shutdown(system::PowerArgs),
    /// Restart the appliance.
    Reboot(system::PowerArgs),
    #[command(flatten)]
    Network(network::NetworkCommand),
    /// This appliance's failover settings: status, inter-appliance key, backup settings,
    /// shared IPs.
    Failover {
        #[command(subcommand)]
        action: failover::FailoverAction,
    },
    /// Accounts for the vendor's command API (/api/command): add, ls, rm.
    #[command(name = "api-account")]
    ApiAccount {
        #[command(subcommand)]
        action: api_account::ApiAccountAction,
    },
    /// The site's alert e-mail: show, change (set), send a test message (test).
    Email {
        #[command(subcommand)]
        action: email::EmailAction,
    },
    /// The NTP servers and whether the clock is synchronised: status, set, off.
    Ntp {
        #[command(subcommand)]
        action: ntp::NtpAction,
    },
    /// The site's file store: put, get, ls, rm.
    Files {
        #[command(subcommand)]
        action: files::FilesAction,
    },
    /// Show or change the factory address (169.254.1.x): enable, disable, timing.
    #[command(name = "factory-address")]
    FactoryAddress {
        #[command(subcommand)]
        action: Option<FactoryAction>,
    },
}

#[derive(Subcommand, Debug)]
pub enum FactoryAction {
    /// Show the address held, its state and the conflicts seen (the default).
    Show,
    /// Claim the factory address again.
    Enable,
    /// Stop using the factory address (refused unless another IPv4 address exists).
    Disable,
    /// Choose the conflict-detection timing: fast (~0.25 s) or rfc (RFC 5227, 5-9 s).
    Timing {
        profile: crate::config::TimingProfile,
    },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Local(std::io::Error),
    #[error("the appliance answered {status}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the appliance sent something that is not the expected JSON: {0}")]
    Decode(serde_json::Error),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Api { .. } | CliError::Local(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Client(ClientError::Tls { .. } | ClientError::CertificateChanged { .. }) => 4,
            CliError::Client(_) | CliError::Decode(_) => 3,
        }
    }
}

/// What a verb produced: the API's JSON (for `--json`) and text for people.
pub(crate) type Outcome = Result<(serde_json::Value, String), CliError>;

pub(crate) fn check(answer: client::Answer) -> Result<serde_json::Value, CliError> {
    let value: serde_json::Value = if answer.body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&answer.body).map_err(CliError::Decode)?
    };
    if (200..300).contains(&answer.status) {
        return Ok(value);
    }
    let (code, message) = match serde_json::from_value::<model::ErrorBody>(value) {
        Ok(b) => (b.error.code, b.error.message),
        Err(_) => (
            "unknown".into(),
            String::from_utf8_lossy(&answer.body).into_owned(),
        ),
    };
    Err(CliError::Api {
        status: answer.status,
        code,
        message,
    })
}

async fn execute(cli: &Cli, client: &Client) -> Result<String, CliError> {
    let api = crate::api::PREFIX;
    let (value, text) = match &cli.command {
        Command::Status => system::status(client).await?,
        Command::Ping => system::ping(client).await?,
        Command::Login(a) => system::login(client, a).await?,
        Command::Logout => system::logout(client).await?,
        Command::Passwd(a) => system::passwd(client, a).await?,
        Command::Token { action } => system::token(client, action).await?,
        Command::Cert { action } => system::cert(client, action).await?,
        Command::Reset(a) => system::reset(client, a).await?,
        Command::Shutdown(p) => system::power(client, "shutdown", p).await?,
        Command::Reboot(p) => system::power(client, "reboot", p).await?,
        Command::Network(cmd) => network::execute(client, cmd).await?,
        Command::Failover { action } => failover::execute(client, action).await?,
        Command::ApiAccount { action } => api_account::execute(client, action).await?,
        Command::Email { action } => email::execute(client, action).await?,
        Command::Ntp { action } => ntp::execute(client, action).await?,
        Command::Files { action } => files::execute(client, action).await?,
        Command::FactoryAddress { action } => {
            let path = format!("{api}/network/factory-address");
            let update = match action {
                None | Some(FactoryAction::Show) => None,
                Some(FactoryAction::Enable) => Some(model::FactoryAddressUpdate {
                    enabled: Some(true),
                    timing: None,
                }),
                Some(FactoryAction::Disable) => Some(model::FactoryAddressUpdate {
                    enabled: Some(false),
                    timing: None,
                }),
                Some(FactoryAction::Timing { profile }) => Some(model::FactoryAddressUpdate {
                    enabled: None,
                    timing: Some(*profile),
                }),
            };
            let answer = match update {
                None => client.request("GET", &path, None).await?,
                Some(u) => {
                    client
                        .request(
                            "PUT",
                            &path,
                            Some(serde_json::to_vec(&u).map_err(CliError::Decode)?),
                        )
                        .await?
                }
            };
            let v = check(answer)?;
            let fa: model::FactoryAddress =
                serde_json::from_value(v.clone()).map_err(CliError::Decode)?;
            (v, render::factory_lines(&fa).trim_end().to_string())
        }
    };
    // A verb that wrote its own output (a download to standard output) has nothing more.
    if value.is_null() && text.is_empty() {
        return Ok(text);
    }
    Ok(if cli.json {
        serde_json::to_string_pretty(&value).unwrap_or_default()
    } else {
        text
    })
}

/// Parses the command line, runs the verb, prints, and maps errors to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let trust = match (&cli.fingerprint, cli.insecure) {
        (_, true) => Trust::Insecure,
        (Some(fp), false) => Trust::Fingerprint(fp.clone()),
        (None, false) => Trust::KnownHosts(Trust::default_known_hosts()),
    };
    let mut client = Client {
        host: cli
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: cli.port,
        trust,
        timeout: Duration::from_secs(cli.timeout.max(1)),
        token: None,
    };
    client.token = session::token_for(&client.target());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("appliancectl: cannot start: {e}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(execute(&cli, &client)) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if cli.json {
                if let CliError::Api { code, message, .. } = &e {
                    let body = model::ErrorBody {
                        error: model::ErrorDetail {
                            code: code.clone(),
                            message: message.clone(),
                        },
                    };
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&body).unwrap_or_default()
                    );
                }
            }
            eprintln!("appliancectl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every verb, at every level, has a line in `--help`.
    #[test]
    fn every_verb_has_a_help_line() {
        fn check(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(path.clone());
                }
                check(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        check(&Cli::command(), "appliancectl", &mut missing);
        assert!(missing.is_empty(), "verbs without help: {missing:?}");
    }

    #[test]
    fn ping_needs_no_arguments() {
        let cli = Cli::try_parse_from(["appliancectl", "--host", "169.254.1.2", "ping"]).unwrap();
        assert!(matches!(cli.command, Command::Ping));
    }

    #[test]
    fn reset_takes_a_level_or_cancel_but_not_both() {
        let parse = |args: &[&str]| {
            let mut all = vec!["appliancectl", "--host", "169.254.1.2", "reset"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all)
        };
        let cli = parse(&["--cancel"]).unwrap();
        assert!(matches!(cli.command, Command::Reset(a) if a.cancel && a.level.is_none()));
        assert!(parse(&["--level", "rma", "--yes"]).is_ok());
        assert!(parse(&[]).is_err(), "a level or --cancel is needed");
        assert!(parse(&["--cancel", "--level", "config"]).is_err());
    }
}
