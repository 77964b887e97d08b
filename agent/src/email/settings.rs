//! The alert e-mail settings: the `[email]` section of the site settings
//! (`<data>/site/settings.toml`, see [`crate::site`]), so a backup that takes over sends
//! its alerts through the same relay to the same people.
//!
//! ```toml
//! [email]
//! enabled = true
//! smtp_host = "smtp.example.net"
//! smtp_port = 587                     # left out: 25, 587 or 465 by `security`
//! security = "starttls"               # none | starttls (the default) | tls
//! username = "appliance"
//! password = "..."                    # the file is mode 0600; the API never shows it
//! from = "appliance@example.net"
//! to = ["noc@example.net"]
//! accept_invalid_certs = false        # true: a relay with a self-signed certificate
//! ```
//!
//! Every value is a checked newtype, so a bad one is refused while parsing, with a message
//! that says which and why, and changes nothing. [`EmailSettings::validate`] checks the
//! whole: enabled e-mail needs a relay, a sender and a recipient.
//!
//! `PUT /login/api/v1/email` takes an [`EmailUpdate`]: a field left out keeps its value; for
//! the optional values (`smtp_host`, `smtp_port`, `username`, `password`, `from`) `null`
//! clears it. The API shows an [`EmailView`]: the password only as `password_set`.

use crate::model::netconfig::DomainName;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU16;
use std::str::FromStr;

/// At most this many recipients.
pub const MAX_RECIPIENTS: usize = 16;
/// The longest user name or password.
pub const MAX_CREDENTIAL: usize = 256;
/// The longest address (RFC 5321's path limit, less the angle brackets).
pub const MAX_ADDRESS: usize = 254;

/// How the connection to the relay is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain SMTP (port 25 by default): for a relay on a trusted network only.
    None,
    /// SMTP upgraded with STARTTLS, which must succeed (port 587 by default).
    #[default]
    Starttls,
    /// TLS from the first byte, "SMTPS" (port 465 by default).
    Tls,
}

impl Security {
    /// The port used when `smtp_port` is not set.
    pub fn default_port(self) -> u16 {
        match self {
            Security::None => 25,
            Security::Starttls => 587,
            Security::Tls => 465,
        }
    }
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Security::None => "none",
            Security::Starttls => "starttls",
            Security::Tls => "tls",
        })
    }
}

/// The mail relay: an IP address or a DNS name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelayHost(String);

impl RelayHost {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RelayHost {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(RelayHost(ip.to_string()));
        }
        let all_digits = s.chars().all(|c| c.is_ascii_digit() || c == '.');
        match s.parse::<DomainName>() {
            Ok(d) if !all_digits => Ok(RelayHost(d.to_string())),
            _ => Err(format!(
                "smtp_host {s:?} is neither an IP address nor a DNS name"
            )),
        }
    }
}

/// A plain e-mail address, `user@domain` (no display name, no angle brackets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MailAddress(String);

impl MailAddress {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MailAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("{s:?} is not an e-mail address: {why}"));
        if s.len() > MAX_ADDRESS {
            return bad(&format!("longer than {MAX_ADDRESS} characters"));
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c))
        {
            return bad("give the bare address, user@domain");
        }
        match s.parse::<lettre::Address>() {
            Ok(_) => Ok(MailAddress(s.to_string())),
            Err(e) => bad(&e.to_string()),
        }
    }
}

/// The recipients: at most [`MAX_RECIPIENTS`], each once (compared without case).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<MailAddress>", into = "Vec<MailAddress>")]
pub struct Recipients(Vec<MailAddress>);

impl Recipients {
    pub fn as_slice(&self) -> &[MailAddress] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<Vec<MailAddress>> for Recipients {
    type Error = String;
    fn try_from(to: Vec<MailAddress>) -> Result<Self, String> {
        if to.len() > MAX_RECIPIENTS {
            return Err(format!(
                "at most {MAX_RECIPIENTS} recipients, not {}",
                to.len()
            ));
        }
        for (i, a) in to.iter().enumerate() {
            if to[..i].iter().any(|b| b.0.eq_ignore_ascii_case(&a.0)) {
                return Err(format!("recipient {} is listed more than once", a.0));
            }
        }
        Ok(Recipients(to))
    }
}

impl From<Recipients> for Vec<MailAddress> {
    fn from(r: Recipients) -> Vec<MailAddress> {
        r.0
    }
}

/// Checks a user name or password: 1 to [`MAX_CREDENTIAL`] characters, no control
/// characters.
fn credential(what: &str, s: &str) -> Result<(), String> {
    let n = s.chars().count();
    if n == 0 || n > MAX_CREDENTIAL {
        return Err(format!(
            "{what} must have 1 to {MAX_CREDENTIAL} characters, not {n}"
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{what} must not contain control characters"));
    }
    Ok(())
}

/// The user name for SMTP authentication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Username {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        credential("username", &s).map(|()| Username(s))
    }
}

impl From<Username> for String {
    fn from(u: Username) -> String {
        u.0
    }
}

/// The password for SMTP authentication. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Password(String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

impl TryFrom<String> for Password {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        credential("password", &s).map(|()| Password(s))
    }
}

impl From<Password> for String {
    fn from(p: Password) -> String {
        p.0
    }
}

macro_rules! string_newtype {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }

        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
string_newtype!(RelayHost, MailAddress);

fn is_false(b: &bool) -> bool {
    !*b
}

/// The alert e-mail settings as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    #[serde(default)]
    pub enabled: bool,
    /// The mail relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_host: Option<RelayHost>,
    /// The relay's port; `None`: [`Security::default_port`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_port: Option<NonZeroU16>,
    #[serde(default)]
    pub security: Security,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<Username>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Password>,
    /// The sender of the alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<MailAddress>,
    /// Who gets the alerts.
    #[serde(default, skip_serializing_if = "Recipients::is_empty")]
    pub to: Recipients,
    /// Accept a relay certificate that does not verify (self-signed, wrong name). Off by
    /// default: with it on, anyone on the path can read the password and the alerts.
    #[serde(default, skip_serializing_if = "is_false")]
    pub accept_invalid_certs: bool,
}

/// Why e-mail settings are refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEmail {
    #[error("alert e-mail is enabled without {}: set {} or disable e-mail", .0.join(", "), if .0.len() == 1 { "it" } else { "them" })]
    Incomplete(Vec<&'static str>),
    #[error("a username needs a password and a password a username: set both or neither")]
    HalfCredentials,
}

impl EmailSettings {
    pub fn is_unset(&self) -> bool {
        *self == EmailSettings::default()
    }

    /// The port in use: the one set, else the default of the security mode.
    pub fn port(&self) -> u16 {
        self.smtp_port
            .map_or(self.security.default_port(), NonZeroU16::get)
    }

    /// The rules across fields a settings file must keep: enabled e-mail has a relay and
    /// a recipient, and credentials come in pairs. (A file of the first schema-1 firmware
    /// had no `from`: it still loads, and the mailer says what is missing.)
    pub fn validate(&self) -> Result<(), InvalidEmail> {
        self.check(false)
    }

    /// What a change through the API must also meet: enabled e-mail has a sender too.
    pub fn check_complete(&self) -> Result<(), InvalidEmail> {
        self.check(true)
    }

    fn check(&self, need_from: bool) -> Result<(), InvalidEmail> {
        if self.enabled {
            let mut missing = Vec::new();
            if self.smtp_host.is_none() {
                missing.push("smtp_host");
            }
            if need_from && self.from.is_none() {
                missing.push("from");
            }
            if self.to.is_empty() {
                missing.push("to");
            }
            if !missing.is_empty() {
                return Err(InvalidEmail::Incomplete(missing));
            }
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(InvalidEmail::HalfCredentials);
        }
        Ok(())
    }

    /// The settings with `update` applied (not yet validated).
    pub fn apply(&self, u: EmailUpdate) -> EmailSettings {
        fn pick<T>(new: Option<Option<T>>, old: &Option<T>) -> Option<T>
        where
            T: Clone,
        {
            new.unwrap_or_else(|| old.clone())
        }
        EmailSettings {
            enabled: u.enabled.unwrap_or(self.enabled),
            smtp_host: pick(u.smtp_host, &self.smtp_host),
            smtp_port: pick(u.smtp_port, &self.smtp_port),
            security: u.security.unwrap_or(self.security),
            username: pick(u.username, &self.username),
            password: pick(u.password, &self.password),
            from: pick(u.from, &self.from),
            to: u.to.unwrap_or_else(|| self.to.clone()),
            accept_invalid_certs: u.accept_invalid_certs.unwrap_or(self.accept_invalid_certs),
        }
    }

    /// What the API shows: everything but the password.
    pub fn view(&self) -> EmailView {
        EmailView {
            enabled: self.enabled,
            smtp_host: self.smtp_host.clone(),
            smtp_port: self.port(),
            security: self.security,
            username: self.username.clone(),
            password_set: self.password.is_some(),
            from: self.from.clone(),
            to: self.to.clone(),
            accept_invalid_certs: self.accept_invalid_certs,
        }
    }
}

/// Deserializes a field that is there (a value or `null`) as `Some`; a field left out
/// stays `None` through `#[serde(default)]`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A partial update: a field left out keeps its value; `null` clears the optional ones
/// and keeps the others.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub smtp_host: Option<Option<RelayHost>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub smtp_port: Option<Option<NonZeroU16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Security>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub username: Option<Option<Username>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub password: Option<Option<Password>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub from: Option<Option<MailAddress>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Recipients>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_invalid_certs: Option<bool>,
}

/// The settings as the API shows them: the password only as whether one is set, the port
/// in use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailView {
    pub enabled: bool,
    pub smtp_host: Option<RelayHost>,
    pub smtp_port: u16,
    pub security: Security,
    pub username: Option<Username>,
    pub password_set: bool,
    pub from: Option<MailAddress>,
    pub to: Recipients,
    pub accept_invalid_certs: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(json: &str) -> Result<EmailUpdate, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    fn complete() -> EmailSettings {
        EmailSettings::default().apply(
            update(
                r#"{"enabled": true, "smtp_host": "smtp.example.net", "from": "b@example.net",
                    "to": ["noc@example.net"], "username": "u", "password": "secret pass"}"#,
            )
            .unwrap(),
        )
    }

    #[test]
    fn the_port_follows_the_security_mode_unless_set() {
        let mut s = EmailSettings::default();
        assert_eq!(s.security, Security::Starttls, "secure by default");
        assert_eq!(s.port(), 587);
        s.security = Security::None;
        assert_eq!(s.port(), 25);
        s.security = Security::Tls;
        assert_eq!(s.port(), 465);
        s.smtp_port = NonZeroU16::new(2525);
        assert_eq!(s.port(), 2525);
        let e = update(r#"{"smtp_port": 0}"#).unwrap_err();
        assert!(e.contains("nonzero"), "{e}");
        let e = update(r#"{"smtp_port": 65536}"#).unwrap_err();
        assert!(e.contains("invalid value"), "{e}");
        let e = update(r#"{"security": "ssl"}"#).unwrap_err();
        assert!(e.contains("unknown variant"), "{e}");
    }

    #[test]
    fn a_partial_update_keeps_what_is_left_out_and_null_clears() {
        let before = complete();
        assert!(before.check_complete().is_ok());
        let after = before.apply(update(r#"{"smtp_port": 2525}"#).unwrap());
        assert_eq!(after.port(), 2525);
        assert_eq!(after.password, before.password, "left out: kept");
        assert_eq!(after.to, before.to);
        assert!(after.enabled);

        let after = before.apply(update(r#"{"password": null, "username": null}"#).unwrap());
        assert_eq!(after.password, None, "null clears the password");
        assert_eq!(after.username, None);
        assert_eq!(after.smtp_host, before.smtp_host);
        assert!(
            after.check_complete().is_ok(),
            "no credentials at all is fine"
        );

        let after = before.apply(update(r#"{"to": null, "enabled": null}"#).unwrap());
        assert_eq!(after.to, before.to, "null keeps the list");
        assert!(after.enabled);
        let after = before.apply(update(r#"{"to": [], "enabled": false}"#).unwrap());
        assert!(after.to.is_empty(), "an empty list clears it");
        assert!(after.check_complete().is_ok(), "disabled may be incomplete");

        assert_eq!(before.apply(EmailUpdate::default()), before);
    }

    #[test]
    fn enabled_e_mail_needs_a_relay_a_sender_and_a_recipient() {
        let s = EmailSettings {
            enabled: true,
            ..Default::default()
        };
        let e = s.check_complete().unwrap_err();
        assert_eq!(e, InvalidEmail::Incomplete(vec!["smtp_host", "from", "to"]));
        assert_eq!(
            e.to_string(),
            "alert e-mail is enabled without smtp_host, from, to: set them or disable e-mail"
        );
        let no_from = complete().apply(update(r#"{"from": null}"#).unwrap());
        assert_eq!(no_from.validate(), Ok(()), "a file need not have it");
        assert_eq!(
            no_from.check_complete(),
            Err(InvalidEmail::Incomplete(vec!["from"]))
        );
        assert_eq!(
            s.validate(),
            Err(InvalidEmail::Incomplete(vec!["smtp_host", "to"]))
        );
        let half = complete().apply(update(r#"{"password": null}"#).unwrap());
        assert_eq!(half.validate(), Err(InvalidEmail::HalfCredentials));
    }

    #[test]
    fn values_are_checked_while_parsing() {
        for (body, why) in [
            (r#"{"smtp_host": "not a host"}"#, "neither an IP address"),
            (r#"{"smtp_host": "1.2.3"}"#, "neither an IP address"),
            (r#"{"smtp_host": ""}"#, "neither an IP address"),
            (r#"{"from": "nobody"}"#, "not an e-mail address"),
            (r#"{"from": "A <a@example.net>"}"#, "bare address"),
            (
                r#"{"to": ["a@example.net", "b@"]}"#,
                "not an e-mail address",
            ),
            (
                r#"{"to": ["a@example.net", "A@example.net"]}"#,
                "more than once",
            ),
            (r#"{"to": "a@example.net"}"#, "invalid type"),
            (r#"{"username": ""}"#, "1 to 256"),
            (r#"{"password": "a\nb"}"#, "control characters"),
            (r#"{"enabled": true, "extra": 1}"#, "unknown field"),
        ] {
            let e = update(body).unwrap_err();
            assert!(e.contains(why), "{body}: {e}");
        }
        let many: Vec<String> = (1..=17).map(|i| format!("\"n{i}@example.net\"")).collect();
        let e = update(&format!(r#"{{"to": [{}]}}"#, many.join(","))).unwrap_err();
        assert!(e.contains("at most 16"), "{e}");
        let long = format!("{}@example.net", "a".repeat(250));
        assert!(long.parse::<MailAddress>().is_err());

        let ok = update(r#"{"smtp_host": "2001:db8::25", "to": ["a@example.net"]}"#).unwrap();
        assert_eq!(ok.smtp_host.unwrap().unwrap().as_str(), "2001:db8::25");
        let ok = update(r#"{"smtp_host": "Mail.Example.NET"}"#).unwrap();
        assert_eq!(ok.smtp_host.unwrap().unwrap().as_str(), "mail.example.net");
    }

    #[test]
    fn the_view_never_holds_the_password() {
        let s = complete();
        let v = serde_json::to_value(s.view()).unwrap();
        assert_eq!(v["password_set"], true);
        assert!(v.get("password").is_none(), "{v}");
        assert!(!v.to_string().contains("secret pass"), "{v}");
        assert_eq!(v["smtp_port"], 587);
        assert!(!format!("{s:?}").contains("secret pass"), "Debug hides it");
        let cleared = s.apply(update(r#"{"password": null, "username": null}"#).unwrap());
        assert_eq!(
            serde_json::to_value(cleared.view()).unwrap()["password_set"],
            false
        );
    }

    #[test]
    fn an_update_serialises_back_to_what_it_means() {
        let u = EmailUpdate {
            password: Some(None),
            smtp_port: Some(NonZeroU16::new(25)),
            ..Default::default()
        };
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(json, r#"{"smtp_port":25,"password":null}"#);
        assert_eq!(update(&json).unwrap(), u);
    }
}
