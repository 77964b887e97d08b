//! Verbs for the system: status, ping, login, logout, passwd, token, shutdown, reboot.

use super::render::field;
use super::{check, render, session, CliError, Outcome};
use crate::client::{Answer, Client};
use crate::model;
use clap::Subcommand;

#[derive(clap::Args, Debug)]
pub struct PowerArgs {
    /// Why, for the log and the last-shutdown record.
    #[arg(long)]
    pub reason: Option<String>,
    /// Wait this many seconds first.
    #[arg(long, default_value_t = 0)]
    pub delay: u32,
}

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// User name.
    #[arg(long, default_value = "admin")]
    pub user: String,
}

#[derive(clap::Args, Debug)]
pub struct PasswdArgs {
    #[command(flatten)]
    pub login: LoginArgs,
    /// Keep the API tokens (by default the change revokes them all).
    #[arg(long)]
    pub keep_tokens: bool,
}

/// What a token may do, as `token create --scope` takes it.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ScopeArg {
    /// GET calls only: status, settings, lists (never export, reset or any change).
    Read,
    /// Every call.
    Admin,
}

impl From<ScopeArg> for model::TokenScope {
    fn from(s: ScopeArg) -> model::TokenScope {
        match s {
            ScopeArg::Read => model::TokenScope::Read,
            ScopeArg::Admin => model::TokenScope::Admin,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// List API tokens (names and dates; tokens are shown only when made).
    List,
    /// Make an API token for scripts; it is printed once.
    Create {
        name: String,
        /// Expire after this many days (default: never).
        #[arg(long)]
        days: Option<u32>,
        /// What the token may do: `read` (GET calls only) or `admin` (everything).
        #[arg(long, value_enum, default_value = "admin")]
        scope: ScopeArg,
    },
    /// Revoke an API token.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub enum CertAction {
    /// Show the certificate in use.
    Show,
    /// Replace the certificate: a PEM chain (leaf first) and its PEM key.
    Import {
        #[arg(long)]
        chain: std::path::PathBuf,
        #[arg(long)]
        key: std::path::PathBuf,
        /// The key's passphrase is in this file (first line).
        #[arg(long)]
        passphrase_file: Option<std::path::PathBuf>,
    },
    /// Save the certificate chain and key (for the failover peer).
    Export {
        #[arg(long)]
        chain_out: std::path::PathBuf,
        #[arg(long)]
        key_out: std::path::PathBuf,
        /// Protect the key with the passphrase in this file (first line, 8 characters or
        /// more). Needed unless --unencrypted.
        #[arg(long, required_unless_present = "unencrypted")]
        passphrase_file: Option<std::path::PathBuf>,
        /// Write the key in plain text, without a passphrase.
        #[arg(long, conflicts_with = "passphrase_file")]
        unencrypted: bool,
    },
}

fn passphrase(file: &Option<std::path::PathBuf>) -> Result<Option<String>, CliError> {
    match file {
        None => Ok(None),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(CliError::Local)?;
            Ok(Some(text.lines().next().unwrap_or("").to_string()))
        }
    }
}

fn cert_text(c: &model::CertificateInfo) -> String {
    let mut out = String::new();
    field(&mut out, "Subject", &c.subject);
    let self_signed = if c.self_signed { " (self-signed)" } else { "" };
    field(
        &mut out,
        "Issuer",
        format_args!("{}{self_signed}", c.issuer),
    );
    field(&mut out, "Names", c.subject_alt_names.join(", "));
    field(
        &mut out,
        "Valid",
        format_args!("unix {} to {}", c.not_before_unix, c.not_after_unix),
    );
    field(&mut out, "SHA-256", &c.sha256_fingerprint);
    out.trim_end().to_string()
}

pub async fn cert(client: &Client, action: &CertAction) -> Outcome {
    match action {
        CertAction::Show => {
            let v = check(
                client
                    .request("GET", &api("/system/certificate"), None)
                    .await?,
            )?;
            let c: model::CertificateInfo = decode(&v)?;
            Ok((v, cert_text(&c)))
        }
        CertAction::Import {
            chain,
            key,
            passphrase_file,
        } => {
            let req = model::CertificateImport {
                chain_pem: std::fs::read_to_string(chain).map_err(CliError::Local)?,
                key_pem: std::fs::read_to_string(key).map_err(CliError::Local)?,
                passphrase: passphrase(passphrase_file)?,
            };
            let v = check(
                client
                    .request("PUT", &api("/system/certificate"), body(&req)?)
                    .await?,
            )?;
            let c: model::CertificateInfo = decode(&v)?;
            Ok((v, format!("certificate imported\n{}", cert_text(&c))))
        }
        CertAction::Export {
            chain_out,
            key_out,
            passphrase_file,
            unencrypted,
        } => {
            let req = model::CertificateExportRequest {
                passphrase: passphrase(passphrase_file)?,
                unencrypted: *unencrypted,
            };
            let v = check(
                client
                    .request("POST", &api("/system/certificate/export"), body(&req)?)
                    .await?,
            )?;
            let e: model::CertificateExport = decode(&v)?;
            std::fs::write(chain_out, &e.chain_pem).map_err(CliError::Local)?;
            crate::store::write_atomic(key_out, e.key_pem.as_bytes(), 0o600)
                .map_err(|e| CliError::Local(e.source))?;
            let note = if e.key_encrypted {
                "protected by the passphrase"
            } else {
                "NOT protected: keep it safe"
            };
            Ok((
                v,
                format!(
                    "chain written to {}, key to {} ({note})",
                    chain_out.display(),
                    key_out.display()
                ),
            ))
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct ResetArgs {
    /// config: wipe settings, keys, certificates and data, back to factory defaults;
    /// rma: also overwrite the whole data disk and power off, for return.
    #[arg(long, value_enum, required_unless_present = "cancel")]
    pub level: Option<model::ResetLevelName>,
    /// Cancel a factory reset that was recorded but whose reboot has not begun.
    #[arg(long, conflicts_with_all = ["level", "yes", "delay"])]
    pub cancel: bool,
    /// Seconds before the reboot that carries it out (0 to 3600); `--cancel` stops it
    /// until then.
    #[arg(long, value_name = "SECONDS")]
    pub delay: Option<u32>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

pub async fn reset(client: &Client, a: &ResetArgs) -> Outcome {
    let Some(level) = a.level.filter(|_| !a.cancel) else {
        let v = check(
            client
                .request("DELETE", &api("/system/reset"), None)
                .await?,
        )?;
        let m: model::Message = decode(&v)?;
        return Ok((v, m.message));
    };
    if !a.yes {
        let what = match level {
            model::ResetLevelName::Config => "erase every setting and all data on",
            model::ResetLevelName::Rma => "ERASE THE WHOLE DATA DISK of, then power off,",
        };
        let answer = session::read_secret(&format!(
            "This will {what} {}. Type yes to go on: ",
            client.target()
        ))
        .map_err(CliError::Local)?;
        if answer.trim() != "yes" {
            return Err(CliError::Usage("not confirmed; nothing changed".into()));
        }
    }
    let req = model::ResetRequest {
        level,
        delay_seconds: a.delay,
    };
    let v = check(
        client
            .request("POST", &api("/system/reset"), body(&req)?)
            .await?,
    )?;
    let m: model::Message = decode(&v)?;
    session::forget(&client.target()).map_err(CliError::Local)?;
    Ok((v, m.message))
}

fn api(path: &str) -> String {
    format!("{}{path}", crate::api::PREFIX)
}

fn body<T: serde::Serialize>(v: &T) -> Result<Option<Vec<u8>>, CliError> {
    serde_json::to_vec(v).map(Some).map_err(CliError::Decode)
}

fn decode<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, CliError> {
    serde_json::from_value(v.clone()).map_err(CliError::Decode)
}

pub async fn status(client: &Client) -> Outcome {
    let v = check(client.request("GET", &api("/status"), None).await?)?;
    let s: model::Status = decode(&v)?;
    Ok((v.clone(), render::status(&s)))
}

/// Whether the API answers over HTTPS, without a session: it fetches the OpenAPI document,
/// which needs no login, and any HTTP answer counts (an agent is listening behind TLS).
pub async fn ping(client: &Client) -> Outcome {
    let answer = client.request("GET", &api("/openapi.yaml"), None).await?;
    let v = serde_json::json!({
        "http_status": answer.status,
        "certificate_sha256": answer.fingerprint,
    });
    let text = format!(
        "https://{}{} answers (HTTP {}, certificate sha256 {})",
        client.target(),
        crate::api::PREFIX,
        answer.status,
        answer.fingerprint
    );
    Ok((v, text))
}

pub async fn power(client: &Client, verb: &str, p: &PowerArgs) -> Outcome {
    let req = model::PowerRequest {
        reason: p.reason.clone(),
        delay_seconds: Some(p.delay),
    };
    let v = check(
        client
            .request("POST", &api(&format!("/system/{verb}")), body(&req)?)
            .await?,
    )?;
    let accepted: model::PowerAccepted = decode(&v)?;
    Ok((v, accepted.message))
}

/// How many times a login is sent while the appliance answers `too_many_logins`.
const LOGIN_TRIES: u32 = 5;

async fn login_with(
    client: &Client,
    user: &str,
    password: String,
) -> Result<(serde_json::Value, model::LoginResponse), CliError> {
    let req = model::LoginRequest {
        username: user.into(),
        password,
    };
    // While the appliance is checking too many logins at once it answers 429
    // `too_many_logins` without checking this one: wait a second and ask again, a few
    // times. (A lockout, `too_many_attempts`, is not retried.)
    let mut tries = 0;
    let v = loop {
        tries += 1;
        match check(client.request("POST", &api("/login"), body(&req)?).await?) {
            Err(CliError::Api { code, .. }) if code == "too_many_logins" && tries < LOGIN_TRIES => {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            other => break other?,
        }
    };
    let resp: model::LoginResponse = decode(&v)?;
    session::save(&client.target(), &resp.token).map_err(CliError::Local)?;
    Ok((v, resp))
}

pub async fn login(client: &Client, a: &LoginArgs) -> Outcome {
    let password = session::read_secret(&format!("Password for {}@{}: ", a.user, client.host))
        .map_err(CliError::Local)?;
    let (v, resp) = login_with(client, &a.user, password).await?;
    let text = if resp.must_change_password {
        "logged in; the factory default password is still set: change it now with `appliancectl passwd`".to_string()
    } else {
        format!("logged in to {}", client.target())
    };
    Ok((v, text))
}

pub async fn logout(client: &Client) -> Outcome {
    let answer: Answer = client.request("POST", &api("/logout"), None).await?;
    session::forget(&client.target()).map_err(CliError::Local)?;
    check(answer)?;
    Ok((serde_json::Value::Null, "logged out".into()))
}

/// Asks for the current password and the new one twice (or reads three lines of standard
/// input), changes it, and logs in with the new one.
pub async fn passwd(client: &Client, p: &PasswdArgs) -> Outcome {
    let a = &p.login;
    let current = session::read_secret(&format!("Current password for {}: ", a.user))
        .map_err(CliError::Local)?;
    let new = session::read_secret("New password: ").map_err(CliError::Local)?;
    let again = session::read_secret("New password again: ").map_err(CliError::Local)?;
    if new != again {
        return Err(CliError::Usage(
            "the two new passwords differ; nothing changed".into(),
        ));
    }
    let req = model::PasswordChange {
        username: Some(a.user.clone()),
        current_password: current,
        new_password: new.clone(),
        keep_tokens: p.keep_tokens,
    };
    check(
        client
            .request("POST", &api("/system/admin/password"), body(&req)?)
            .await?,
    )?;
    let (v, _) = login_with(client, &a.user, new).await?;
    let tokens = if p.keep_tokens {
        "API tokens kept"
    } else {
        "every API token revoked"
    };
    Ok((
        v,
        format!("password changed ({tokens}); logged in with the new password"),
    ))
}

pub async fn token(client: &Client, action: &TokenAction) -> Outcome {
    match action {
        TokenAction::List => {
            let v = check(client.request("GET", &api("/system/tokens"), None).await?)?;
            let tokens: Vec<model::ApiToken> = decode(&v)?;
            let text = if tokens.is_empty() {
                "no API tokens".to_string()
            } else {
                tokens
                    .iter()
                    .map(|t| match t.expires_unix {
                        Some(e) => {
                            format!("{:<24} {:<6} expires at unix time {e}", t.name, t.scope)
                        }
                        None => format!("{:<24} {:<6} does not expire", t.name, t.scope),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok((v, text))
        }
        TokenAction::Create { name, days, scope } => {
            let req = model::TokenRequest {
                name: name.clone(),
                expires_in_days: *days,
                scope: (*scope).into(),
            };
            let v = check(
                client
                    .request("POST", &api("/system/tokens"), body(&req)?)
                    .await?,
            )?;
            let t: model::NewApiToken = decode(&v)?;
            Ok((
                v,
                format!(
                    "{}\n(scope {}; shown once: keep it; use it as APPLIANCE_TOKEN)",
                    t.token, t.scope
                ),
            ))
        }
        TokenAction::Delete { name } => {
            check(
                client
                    .request("DELETE", &api(&format!("/system/tokens/{name}")), None)
                    .await?,
            )?;
            Ok((serde_json::Value::Null, format!("token {name} revoked")))
        }
    }
}
