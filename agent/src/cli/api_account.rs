//! `appliancectl api-account add|ls|rm`: the accounts scripts use for the vendor's command
//! API (`/api/command`, tokens from `/oauth2/token`), on the site surface
//! (`/login/api/v1/api-accounts`).

use super::{check, CliError, Outcome};
use crate::admin::api_accounts::{Access, AccountView, NewAccount};
use crate::client::Client;
use clap::{Subcommand, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccessArg {
    /// check_health only.
    #[value(name = "read_only")]
    ReadOnly,
    /// Every action, set_failover_role included.
    Full,
}

impl From<AccessArg> for Access {
    fn from(a: AccessArg) -> Access {
        match a {
            AccessArg::ReadOnly => Access::ReadOnly,
            AccessArg::Full => Access::Full,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ApiAccountAction {
    /// Make an API account; its client secret is printed once.
    Add {
        /// What the account is for (1 to 64 characters).
        name: String,
        /// What it may do: read_only (check_health) or full (set_failover_role too).
        #[arg(long, value_enum)]
        access: AccessArg,
    },
    /// List the API accounts (never their secrets).
    Ls,
    /// Remove an API account; its access tokens stop working at once.
    Rm { client_id: String },
}

fn path(tail: &str) -> String {
    format!("{}/api-accounts{tail}", crate::api::LOGIN_PREFIX)
}

fn list_text(accounts: &[AccountView]) -> String {
    if accounts.is_empty() {
        return "no API accounts".into();
    }
    accounts
        .iter()
        .map(|a| format!("{}  {:<9}  {}", a.client_id, a.access, a.name))
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn execute(client: &Client, action: &ApiAccountAction) -> Outcome {
    match action {
        ApiAccountAction::Add { name, access } => {
            let req = serde_json::json!({ "name": name, "access": Access::from(*access) });
            let answer = client
                .request("POST", &path(""), Some(req.to_string().into_bytes()))
                .await?;
            let v = check(answer)?;
            let new: NewAccount = serde_json::from_value(v.clone()).map_err(CliError::Decode)?;
            let text = format!(
                "client id:     {}\nclient secret: {}\n(access {}; the secret is shown once: keep it)",
                new.client_id, new.client_secret, new.access
            );
            Ok((v, text))
        }
        ApiAccountAction::Ls => {
            let v = check(client.request("GET", &path(""), None).await?)?;
            let accounts: Vec<AccountView> =
                serde_json::from_value(v.clone()).map_err(CliError::Decode)?;
            Ok((v, list_text(&accounts)))
        }
        ApiAccountAction::Rm { client_id } => {
            let answer = client
                .request("DELETE", &path(&format!("/{client_id}")), None)
                .await?;
            check(answer)?;
            Ok((
                serde_json::Value::Null,
                format!("API account {client_id} removed"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<ApiAccountAction, clap::Error> {
        let mut all = vec!["appliancectl", "api-account"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| match c.command {
            Command::ApiAccount { action } => action,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn add_needs_a_name_and_an_access_spelled_as_the_api_does() {
        let a = parse(&["add", "nagios", "--access", "read_only"]).unwrap();
        assert!(
            matches!(a, ApiAccountAction::Add { ref name, access: AccessArg::ReadOnly } if name == "nagios")
        );
        assert!(parse(&["add", "ops", "--access", "full"]).is_ok());
        assert!(parse(&["add", "ops"]).is_err(), "access is required");
        assert!(parse(&["add", "ops", "--access", "admin"]).is_err());
        assert!(matches!(parse(&["ls"]).unwrap(), ApiAccountAction::Ls));
        assert!(parse(&["rm"]).is_err(), "rm needs a client id");
    }

    #[test]
    fn the_list_shows_ids_access_and_names() {
        let accounts = vec![AccountView {
            client_id: "0123456789abcdef0123456789abcdef".into(),
            name: "nagios".into(),
            access: Access::ReadOnly,
            created_unix: 0,
        }];
        assert_eq!(
            list_text(&accounts),
            "0123456789abcdef0123456789abcdef  read_only  nagios"
        );
        assert_eq!(list_text(&[]), "no API accounts");
    }
}
