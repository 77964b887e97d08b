//! The NTP settings and status: the `[ntp]` section of `appliance.toml` and the body of
//! `/appliance/api/v1/network/ntp`.

use super::netconfig::DomainName;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The most NTP servers the appliance takes.
pub const MAX_SERVERS: usize = 5;

/// An NTP server: an IP address, or a host name resolved with the appliance's DNS settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum NtpServer {
    Ip(IpAddr),
    Name(DomainName),
}

impl FromStr for NtpServer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(NtpServer::Ip(ip));
        }
        let numeric = s.chars().all(|c| c.is_ascii_digit() || c == '.');
        match s.parse::<DomainName>() {
            Ok(name) if !numeric => Ok(NtpServer::Name(name)),
            _ => Err(format!(
                "{s:?} is neither an IP address nor a host name (give the server without a port)"
            )),
        }
    }
}

impl TryFrom<String> for NtpServer {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<NtpServer> for String {
    fn from(s: NtpServer) -> String {
        s.to_string()
    }
}

impl fmt::Display for NtpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NtpServer::Ip(ip) => write!(f, "{ip}"),
            NtpServer::Name(n) => f.write_str(n.as_str()),
        }
    }
}

/// The servers, in order of preference: at most [`MAX_SERVERS`], none twice. Empty turns
/// NTP off.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<NtpServer>", into = "Vec<NtpServer>")]
pub struct NtpServers(Vec<NtpServer>);

impl NtpServers {
    pub fn as_slice(&self) -> &[NtpServer] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<Vec<NtpServer>> for NtpServers {
    type Error = String;
    fn try_from(list: Vec<NtpServer>) -> Result<Self, String> {
        if list.len() > MAX_SERVERS {
            return Err(format!(
                "{} NTP servers given; at most {MAX_SERVERS} are accepted",
                list.len()
            ));
        }
        for (i, s) in list.iter().enumerate() {
            if list.iter().take(i).any(|earlier| earlier == s) {
                return Err(format!("NTP server {s} is given more than once"));
            }
        }
        Ok(NtpServers(list))
    }
}

impl From<NtpServers> for Vec<NtpServer> {
    fn from(s: NtpServers) -> Vec<NtpServer> {
        s.0
    }
}

/// The `[ntp]` section of `appliance.toml`; absent means no servers (NTP off).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtpSettings {
    #[serde(default)]
    pub servers: NtpServers,
}

impl NtpSettings {
    pub fn is_unset(&self) -> bool {
        self.servers.is_empty()
    }
}

/// `PUT /network/ntp`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtpRequest {
    pub servers: NtpServers,
}

/// What the last adjustment of the clock was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockAction {
    /// Set at once (the offset was over the step threshold).
    Stepped,
    /// Turned gradually by the kernel.
    Slewed,
    /// Measured and left alone (the tests' observe-only switch).
    ObservedOnly,
}

/// How the appliance's clock stands against its NTP servers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NtpStatus {
    /// The clock was set from a server at the last poll or recently enough (see `crate::ntp`).
    pub synchronised: bool,
    /// The server in use, as configured.
    pub server: Option<String>,
    /// Its address.
    pub address: Option<IpAddr>,
    /// This appliance's stratum: its server's plus one (2 to 16).
    pub stratum: Option<u8>,
    /// The last measured offset of the server's clock from ours, in seconds (positive:
    /// ours was behind).
    pub offset_seconds: Option<f64>,
    /// The round-trip delay of the sample used, in seconds.
    pub delay_seconds: Option<f64>,
    /// When the clock was last set from a server (RFC 3339, UTC).
    pub last_sync: Option<String>,
    /// What was done to the clock then.
    pub last_action: Option<ClockAction>,
    /// Why the last poll found no usable server, in words.
    pub error: Option<String>,
}

/// `GET /network/ntp`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NtpView {
    pub servers: NtpServers,
    pub status: NtpStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_ips_or_host_names_without_ports() {
        assert_eq!(
            "192.0.2.1".parse::<NtpServer>().unwrap(),
            NtpServer::Ip("192.0.2.1".parse().unwrap())
        );
        assert!(matches!("2001:db8::1".parse(), Ok(NtpServer::Ip(_))));
        assert_eq!(
            "NTP.Example.net".parse::<NtpServer>().unwrap().to_string(),
            "ntp.example.net"
        );
        for bad in [
            "",
            "192.0.2.1:123",
            "300.1.2.3",
            "ntp example",
            "-x.net",
            "a..b",
        ] {
            let e = bad.parse::<NtpServer>().unwrap_err();
            assert!(
                e.contains("neither an IP address nor a host name"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_list_has_at_most_five_servers_none_twice() {
        let parse = |json: &str| serde_json::from_str::<NtpRequest>(json);
        assert!(parse(r#"{"servers": []}"#).unwrap().servers.is_empty());
        let ok = parse(r#"{"servers": ["192.0.2.1", "ntp.example.net"]}"#).unwrap();
        assert_eq!(ok.servers.as_slice().len(), 2);
        let six = r#"{"servers": ["a.net", "b.net", "c.net", "d.net", "e.net", "f.net"]}"#;
        assert!(parse(six).unwrap_err().to_string().contains("at most 5"));
        let twice = r#"{"servers": ["a.net", "A.net"]}"#;
        assert!(parse(twice)
            .unwrap_err()
            .to_string()
            .contains("more than once"));
        assert!(parse(r#"{"servers": ["a.net"], "x": 1}"#).is_err());
        assert!(parse(r#"{}"#).is_err(), "servers is required");
    }
}
