//! The static network configuration: typed values checked where they enter (config file or
//! API), and the rules a whole configuration must satisfy.
//!
//! Newtypes ([`NicName`], [`IpCidr`], [`Hostname`], [`DomainName`]) parse from strings and
//! serialize back to the same strings, so the TOML file and the JSON API share one schema:
//!
//! ```toml
//! [network]
//! hostname = "fw-1"
//! gateways = { ipv4 = "192.0.2.1", ipv6 = "2001:db8::1" }
//! dns = { servers = ["192.0.2.53"], search = ["example.net"] }
//!
//! [[network.interfaces]]
//! name = "eth0"
//! addresses = [{ address = "192.0.2.10/24", enabled = true }]
//!
//! [[network.routes]]
//! destination = "198.51.100.0/24"
//! gateway = "192.0.2.254"
//! ```
//!
//! [`NetworkConfig::validate`] checks what a single value cannot: duplicates, gateways
//! inside an enabled subnet, DNS limits. Whether a NIC exists is a question for the kernel
//! and is asked when a change is made ([`NetworkConfig::check_nics`]).
//!
//! Current limits: IPv6 link-local gateways (`fe80::/10`, which need an explicit NIC) are
//! not accepted; every gateway must lie in an enabled subnet of a configured NIC.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// glibc reads at most this many `nameserver` lines (MAXNS).
pub const MAX_DNS_SERVERS: usize = 3;
/// glibc reads at most this many search domains (MAXDNSRCH).
pub const MAX_SEARCH_DOMAINS: usize = 6;

fn yes() -> bool {
    true
}

/// An interface name as the kernel accepts it: 1 to 15 bytes, no `/`, `:` or whitespace,
/// not `.` or `..`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NicName(String);

impl NicName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NicName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 15
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
        if ok {
            Ok(NicName(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not an interface name (1 to 15 characters, no '/', ':' or spaces)"
            ))
        }
    }
}

impl TryFrom<String> for NicName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<NicName> for String {
    fn from(n: NicName) -> String {
        n.0
    }
}

impl fmt::Display for NicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IP address with a prefix length: `192.0.2.10/24`, `2001:db8::10/64`. The prefix is
/// at most 32 (IPv4) or 128 (IPv6); it must be written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpCidr {
    ip: IpAddr,
    prefix: u8,
}

impl IpCidr {
    pub fn new(ip: IpAddr, prefix: u8) -> Result<IpCidr, String> {
        let max = max_prefix(ip);
        if prefix > max {
            return Err(format!("prefix /{prefix} is longer than {max} for {ip}"));
        }
        Ok(IpCidr { ip, prefix })
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(&self) -> bool {
        self.ip.is_ipv4()
    }

    /// The subnet: the address with its host bits cleared.
    pub fn network(&self) -> IpCidr {
        IpCidr {
            ip: mask(self.ip, self.prefix),
            prefix: self.prefix,
        }
    }

    /// Whether `other` (a subnet) lies inside this subnet, or is it.
    pub fn covers(&self, other: &IpCidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.ip)
    }

    /// Whether `ip` lies in this subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.ip.is_ipv4() && mask(ip, self.prefix) == mask(self.ip, self.prefix)
    }

    /// The IPv4 broadcast address of the subnet.
    fn broadcast_v4(&self) -> Option<Ipv4Addr> {
        match self.ip {
            IpAddr::V4(v4) => {
                let host_bits = 32 - u32::from(self.prefix);
                let ones = if host_bits == 32 {
                    u32::MAX
                } else {
                    (1u32 << host_bits) - 1
                };
                Some(Ipv4Addr::from(u32::from(v4) | ones))
            }
            IpAddr::V6(_) => None,
        }
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// `ip` with all but the first `prefix` bits cleared.
pub fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl FromStr for IpCidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s.split_once('/').ok_or_else(|| {
            format!("{s:?} has no prefix length: write it as address/prefix, e.g. 192.0.2.10/24")
        })?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv4 or IPv6 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| {
            format!(
                "{prefix:?} is not a prefix length (0 to {})",
                max_prefix(ip)
            )
        })?;
        IpCidr::new(ip, prefix)
    }
}

impl TryFrom<String> for IpCidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<IpCidr> for String {
    fn from(c: IpCidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// Checks one DNS label: 1 to 63 letters, digits and hyphens, no hyphen at either end.
fn label_ok(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// A host name (RFC 1123): dot-separated labels, at most 64 characters (the kernel's
/// limit), not all digits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Hostname(String);

impl Hostname {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Hostname {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.split('.').all(label_ok)
            && !s.chars().all(|c| c.is_ascii_digit() || c == '.');
        if ok {
            Ok(Hostname(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not a host name (letters, digits, '-' and '.', at most 64 characters, \
                 labels not starting or ending with '-')"
            ))
        }
    }
}

impl TryFrom<String> for Hostname {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Hostname> for String {
    fn from(h: Hostname) -> String {
        h.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A domain name for the DNS search list: labels as in [`Hostname`], at most 253
/// characters, no trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainName(String);

impl DomainName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DomainName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.is_empty() && s.len() <= 253 && s.split('.').all(label_ok) {
            Ok(DomainName(s.to_ascii_lowercase()))
        } else {
            Err(format!("{s:?} is not a domain name"))
        }
    }
}

impl TryFrom<String> for DomainName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<DomainName> for String {
    fn from(d: DomainName) -> String {
        d.0
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// IPv4 or IPv6, where a setting exists once per family (the default gateway).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

impl FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ipv4" => Ok(Family::Ipv4),
            "ipv6" => Ok(Family::Ipv6),
            _ => Err(format!("{s:?} is not a family: use ipv4 or ipv6")),
        }
    }
}

/// One address on a NIC; a disabled one stays in the configuration but not on the NIC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressConfig {
    pub address: IpCidr,
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// A NIC the agent manages: exactly these addresses are on it (besides the factory
/// address and the addresses the kernel makes itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    pub name: NicName,
    #[serde(default)]
    pub addresses: Vec<AddressConfig>,
}

/// A static route: `destination` (a subnet) is reached through `gateway`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub destination: IpCidr,
    pub gateway: IpAddr,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateways {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
}

impl Gateways {
    pub fn get(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::Ipv4 => self.ipv4.map(IpAddr::V4),
            Family::Ipv6 => self.ipv6.map(IpAddr::V6),
        }
    }

    /// Both gateways with their default-route destinations (`0.0.0.0/0`, `::/0`).
    pub fn as_routes(&self) -> Vec<RouteConfig> {
        let mut out = Vec::new();
        if let Some(g) = self.ipv4 {
            out.push(RouteConfig {
                destination: IpCidr {
                    ip: Ipv4Addr::UNSPECIFIED.into(),
                    prefix: 0,
                },
                gateway: g.into(),
            });
        }
        if let Some(g) = self.ipv6 {
            out.push(RouteConfig {
                destination: IpCidr {
                    ip: Ipv6Addr::UNSPECIFIED.into(),
                    prefix: 0,
                },
                gateway: g.into(),
            });
        }
        out
    }
}

/// What goes into `/etc/resolv.conf`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    #[serde(default)]
    pub servers: Vec<IpAddr>,
    #[serde(default)]
    pub search: Vec<DomainName>,
}

impl DnsConfig {
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.search.is_empty()
    }

    /// The resolv.conf text for this configuration.
    pub fn resolv_conf(&self) -> String {
        let mut out = String::from("# written by appliance-agent from the network settings\n");
        for s in &self.servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        if !self.search.is_empty() {
            let names: Vec<&str> = self.search.iter().map(DomainName::as_str).collect();
            out.push_str(&format!("search {}\n", names.join(" ")));
        }
        out
    }
}

/// The `[network]` section of the configuration file. Empty (the default) means the agent
/// leaves every NIC, route, the host name and resolv.conf as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Hostname>,
    #[serde(default)]
    pub gateways: Gateways,
    #[serde(default)]
    pub dns: DnsConfig,
    #[serde(default)]
    pub interfaces: Vec<InterfaceConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// Why a network configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{address} cannot be an interface address: {reason}")]
    UnusableAddress { address: IpCidr, reason: String },
    #[error(
        "{ip} is configured more than once (on {first} and {second}); each address may appear once"
    )]
    DuplicateAddress {
        ip: IpAddr,
        first: NicName,
        second: NicName,
    },
    #[error("interface {0} appears more than once; list each NIC once")]
    DuplicateNic(NicName),
    #[error("{0} is not a NIC the agent may configure")]
    ReservedNic(NicName),
    #[error(
        "gateway {gateway} is outside every enabled {family} subnet ({subnets}); add or enable an \
         address in the gateway's subnet first"
    )]
    GatewayOutsideSubnets {
        gateway: IpAddr,
        family: &'static str,
        subnets: String,
    },
    #[error("route destination {given} has host bits set; did you mean {network}?")]
    RouteHostBits { given: IpCidr, network: IpCidr },
    #[error("{0} is the default route: set it with the gateway setting instead")]
    RouteIsDefault(IpCidr),
    #[error("route {destination} via {gateway} mixes IPv4 and IPv6")]
    RouteFamilyMismatch {
        destination: IpCidr,
        gateway: IpAddr,
    },
    #[error(
        "route {destination} lies inside {subnet}, a subnet the appliance is directly on: it \
         would take that subnet's hosts (maybe the one you are on) away from it"
    )]
    RouteShadowsConnected { destination: IpCidr, subnet: IpCidr },
    #[error("route destination {0} is configured more than once")]
    DuplicateRoute(IpCidr),
    #[error("{gateway} cannot be a gateway: {reason}")]
    UnusableGateway { gateway: IpAddr, reason: String },
    #[error("at most {MAX_DNS_SERVERS} DNS servers are used (got {0})")]
    TooManyDnsServers(usize),
    #[error("at most {MAX_SEARCH_DOMAINS} search domains are used (got {0})")]
    TooManySearchDomains(usize),
    #[error("DNS server {0} is listed more than once")]
    DuplicateDnsServer(IpAddr),
    #[error("search domain {0} is listed more than once")]
    DuplicateSearchDomain(DomainName),
    #[error("{server} cannot be a DNS server: {reason}")]
    UnusableDnsServer { server: IpAddr, reason: String },
    #[error("no NIC named {name} on this appliance (present: {present})")]
    UnknownNic { name: NicName, present: String },
}

/// Why an address cannot be put on a NIC, if it cannot.
fn unusable(c: &IpCidr) -> Option<String> {
    let ip = c.ip();
    if ip.is_unspecified() {
        return Some("it is the unspecified address".into());
    }
    if ip.is_loopback() {
        return Some("it is a loopback address".into());
    }
    if ip.is_multicast() {
        return Some("it is a multicast address".into());
    }
    if c.prefix() == 0 {
        return Some("a /0 prefix would put every address on this link".into());
    }
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_broadcast() {
                return Some("it is the broadcast address".into());
            }
            if v4.octets()[0] >= 240 {
                return Some("it is in the reserved range 240.0.0.0/4".into());
            }
            if in_factory_range(v4) {
                return Some(
                    "it is in 169.254.1.0/24, which the factory address owns (see \
                     /network/factory-address)"
                        .into(),
                );
            }
            if c.prefix() <= 30 {
                if c.network().ip() == ip {
                    return Some(format!("it is the network address of {}", c.network()));
                }
                if c.broadcast_v4() == Some(v4) {
                    return Some(format!("it is the broadcast address of {}", c.network()));
                }
            }
        }
        IpAddr::V6(v6) => {
            if is_link_local_v6(v6) {
                return Some("IPv6 link-local addresses (fe80::/10) are made by the kernel".into());
            }
        }
    }
    None
}

pub fn is_link_local_v6(v6: Ipv6Addr) -> bool {
    v6.segments()[0] & 0xffc0 == 0xfe80
}

fn unusable_peer(ip: IpAddr) -> Option<String> {
    if ip.is_unspecified() {
        Some("it is the unspecified address".into())
    } else if ip.is_loopback() {
        Some("it is a loopback address".into())
    } else if ip.is_multicast() {
        Some("it is a multicast address".into())
    } else if matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        Some("it is the broadcast address".into())
    } else {
        None
    }
}

impl NetworkConfig {
    pub fn is_empty(&self) -> bool {
        *self == NetworkConfig::default()
    }

    pub fn interface(&self, nic: &NicName) -> Option<&InterfaceConfig> {
        self.interfaces.iter().find(|i| &i.name == nic)
    }

    /// Every enabled address with its NIC, in configuration order.
    pub fn enabled_addresses(&self) -> impl Iterator<Item = (&NicName, IpCidr)> {
        self.interfaces.iter().flat_map(|i| {
            i.addresses
                .iter()
                .filter(|a| a.enabled)
                .map(move |a| (&i.name, a.address))
        })
    }

    /// The NIC whose enabled subnet holds `gateway` (the first, in configuration order).
    pub fn nic_for_gateway(&self, gateway: IpAddr) -> Option<&NicName> {
        self.enabled_addresses()
            .find(|(_, a)| a.contains(gateway) && a.ip() != gateway)
            .map(|(n, _)| n)
    }

    /// The subnets the appliance is directly on: those of its enabled addresses, and the
    /// factory subnet (169.254.1.0/24), whether or not the factory address is on now.
    pub fn connected_subnets(&self) -> impl Iterator<Item = IpCidr> + '_ {
        let factory = IpCidr {
            ip: Ipv4Addr::new(169, 254, 1, 0).into(),
            prefix: 24,
        };
        std::iter::once(factory).chain(self.enabled_addresses().map(|(_, a)| a.network()))
    }

    /// Static routes followed by the default routes, as the kernel gets them.
    pub fn all_routes(&self) -> Vec<RouteConfig> {
        let mut out = self.routes.clone();
        out.extend(self.gateways.as_routes());
        out
    }

    /// Checks the rules a whole configuration must satisfy (not whether NICs exist).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut seen_nics: Vec<&NicName> = Vec::new();
        let mut seen_ips: Vec<(IpAddr, &NicName)> = Vec::new();
        for iface in &self.interfaces {
            if iface.name.as_str() == "lo" {
                return Err(ValidationError::ReservedNic(iface.name.clone()));
            }
            if seen_nics.contains(&&iface.name) {
                return Err(ValidationError::DuplicateNic(iface.name.clone()));
            }
            seen_nics.push(&iface.name);
            for a in &iface.addresses {
                if let Some(reason) = unusable(&a.address) {
                    return Err(ValidationError::UnusableAddress {
                        address: a.address,
                        reason,
                    });
                }
                if let Some((_, first)) = seen_ips.iter().find(|(ip, _)| *ip == a.address.ip()) {
                    return Err(ValidationError::DuplicateAddress {
                        ip: a.address.ip(),
                        first: (*first).clone(),
                        second: iface.name.clone(),
                    });
                }
                seen_ips.push((a.address.ip(), &iface.name));
            }
        }
        let mut seen_routes: Vec<IpCidr> = Vec::new();
        for r in &self.routes {
            if r.destination.ip().is_ipv4() != r.gateway.is_ipv4() {
                return Err(ValidationError::RouteFamilyMismatch {
                    destination: r.destination,
                    gateway: r.gateway,
                });
            }
            if r.destination.prefix() == 0 {
                return Err(ValidationError::RouteIsDefault(r.destination));
            }
            if r.destination.network() != r.destination {
                return Err(ValidationError::RouteHostBits {
                    given: r.destination,
                    network: r.destination.network(),
                });
            }
            if let Some(subnet) = self.connected_subnets().find(|s| s.covers(&r.destination)) {
                return Err(ValidationError::RouteShadowsConnected {
                    destination: r.destination,
                    subnet,
                });
            }
            if seen_routes.contains(&r.destination) {
                return Err(ValidationError::DuplicateRoute(r.destination));
            }
            seen_routes.push(r.destination);
        }
        for r in self.all_routes() {
            self.check_gateway(r.gateway)?;
        }
        let dns = &self.dns;
        if dns.servers.len() > MAX_DNS_SERVERS {
            return Err(ValidationError::TooManyDnsServers(dns.servers.len()));
        }
        if dns.search.len() > MAX_SEARCH_DOMAINS {
            return Err(ValidationError::TooManySearchDomains(dns.search.len()));
        }
        for (i, s) in dns.servers.iter().enumerate() {
            if let Some(reason) = unusable_peer(*s) {
                return Err(ValidationError::UnusableDnsServer { server: *s, reason });
            }
            if dns.servers[..i].contains(s) {
                return Err(ValidationError::DuplicateDnsServer(*s));
            }
        }
        for (i, d) in dns.search.iter().enumerate() {
            if dns.search[..i].contains(d) {
                return Err(ValidationError::DuplicateSearchDomain(d.clone()));
            }
        }
        Ok(())
    }

    fn check_gateway(&self, gateway: IpAddr) -> Result<(), ValidationError> {
        if let Some(reason) = unusable_peer(gateway) {
            return Err(ValidationError::UnusableGateway { gateway, reason });
        }
        if let IpAddr::V6(v6) = gateway {
            if is_link_local_v6(v6) {
                return Err(ValidationError::UnusableGateway {
                    gateway,
                    reason: "link-local IPv6 gateways are not supported yet; use a global \
                             address in an enabled subnet"
                        .into(),
                });
            }
        }
        if self.enabled_addresses().any(|(_, a)| a.ip() == gateway) {
            return Err(ValidationError::UnusableGateway {
                gateway,
                reason: "it is one of this appliance's own addresses".into(),
            });
        }
        if self.nic_for_gateway(gateway).is_some() {
            return Ok(());
        }
        let subnets: Vec<String> = self
            .enabled_addresses()
            .filter(|(_, a)| a.ip().is_ipv4() == gateway.is_ipv4())
            .map(|(n, a)| format!("{} on {n}", a.network()))
            .collect();
        Err(ValidationError::GatewayOutsideSubnets {
            gateway,
            family: Family::of(gateway).as_str(),
            subnets: if subnets.is_empty() {
                "there are none".into()
            } else {
                subnets.join(", ")
            },
        })
    }

    /// Checks that every NIC the configuration names exists (`present`: the kernel's).
    pub fn check_nics(&self, present: &[String]) -> Result<(), ValidationError> {
        for iface in &self.interfaces {
            if !present.iter().any(|p| p == iface.name.as_str()) {
                return Err(ValidationError::UnknownNic {
                    name: iface.name.clone(),
                    present: present.join(", "),
                });
            }
        }
        Ok(())
    }
}

/// Whether `a` is in the factory range 169.254.1.0/24.
pub fn in_factory_range(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 169 && o[1] == 254 && o[2] == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> IpCidr {
        s.parse().unwrap()
    }

    fn nic(s: &str) -> NicName {
        s.parse().unwrap()
    }

    fn with_addresses(list: &[(&str, &str)]) -> NetworkConfig {
        let mut cfg = NetworkConfig::default();
        for (n, a) in list {
            let n = nic(n);
            let entry = match cfg.interfaces.iter_mut().position(|i| i.name == n) {
                Some(i) => &mut cfg.interfaces[i],
                None => {
                    cfg.interfaces.push(InterfaceConfig {
                        name: n,
                        addresses: vec![],
                    });
                    cfg.interfaces.last_mut().unwrap()
                }
            };
            entry.addresses.push(AddressConfig {
                address: cidr(a),
                enabled: true,
            });
        }
        cfg
    }

    #[test]
    fn cidrs_parse_and_print() {
        let c = cidr("192.0.2.10/24");
        assert_eq!(c.ip(), "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!(c.prefix(), 24);
        assert_eq!(c.network().to_string(), "192.0.2.0/24");
        assert!(c.contains("192.0.2.200".parse().unwrap()));
        assert!(!c.contains("192.0.3.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let v6 = cidr("2001:db8:0:1::10/64");
        assert_eq!(v6.network().to_string(), "2001:db8:0:1::/64");
        assert!(v6.contains("2001:db8:0:1::ffff".parse().unwrap()));
        assert_eq!(cidr("0.0.0.0/0").network(), cidr("0.0.0.0/0"));
        for (bad, needle) in [
            ("192.0.2.10", "no prefix length"),
            ("192.0.2.10/33", "longer than 32"),
            ("2001:db8::1/129", "longer than 128"),
            ("192.0.2.300/24", "not an IPv4 or IPv6 address"),
            ("192.0.2.1/x", "not a prefix length"),
            ("192.0.2.1/-1", "not a prefix length"),
            ("/24", "not an IPv4"),
        ] {
            let e = bad.parse::<IpCidr>().unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn names_are_checked() {
        for good in ["eth0", "enp0s3", "br-lan", "veth.1"] {
            assert!(good.parse::<NicName>().is_ok(), "{good}");
        }
        for bad in ["", "a/b", "eth 0", "sixteen-chars-xx", "..", "eth0:1"] {
            assert!(bad.parse::<NicName>().is_err(), "{bad:?}");
        }
        for good in ["fw-1", "appliance", "a.example.net", "x1"] {
            assert!(good.parse::<Hostname>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "-fw",
            "fw-",
            "fw_1",
            "a..b",
            "1234",
            "has space",
            &"x".repeat(65),
        ] {
            assert!(bad.parse::<Hostname>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "Example.NET".parse::<DomainName>().unwrap().as_str(),
            "example.net"
        );
        assert!("example.net.".parse::<DomainName>().is_err());
        assert!("ex ample".parse::<DomainName>().is_err());
    }

    #[test]
    fn unusable_addresses_are_refused_with_the_reason() {
        for (a, needle) in [
            ("0.0.0.0/8", "unspecified"),
            ("127.0.0.2/8", "loopback"),
            ("224.0.0.1/24", "multicast"),
            ("192.0.2.0/24", "network address"),
            ("192.0.2.255/24", "broadcast address of 192.0.2.0/24"),
            ("169.254.1.9/24", "factory address"),
            ("fe80::5/64", "link-local"),
            ("192.0.2.1/0", "/0"),
            ("255.255.255.255/32", "broadcast"),
            ("ff02::1/64", "multicast"),
        ] {
            let e = with_addresses(&[("eth0", a)]).validate().unwrap_err();
            assert!(
                matches!(e, ValidationError::UnusableAddress { .. }),
                "{a}: {e}"
            );
            assert!(e.to_string().contains(needle), "{a}: {e}");
        }
        // /31 and /32 have no network or broadcast address to avoid.
        with_addresses(&[("eth0", "192.0.2.0/31"), ("eth0", "192.0.2.9/32")])
            .validate()
            .unwrap();
    }

    #[test]
    fn duplicates_are_refused() {
        let e = with_addresses(&[("eth0", "192.0.2.10/24"), ("eth1", "192.0.2.10/25")])
            .validate()
            .unwrap_err();
        assert_eq!(
            e,
            ValidationError::DuplicateAddress {
                ip: "192.0.2.10".parse().unwrap(),
                first: nic("eth0"),
                second: nic("eth1")
            }
        );
        let mut cfg = with_addresses(&[("eth0", "192.0.2.10/24")]);
        cfg.interfaces.push(InterfaceConfig {
            name: nic("eth0"),
            addresses: vec![],
        });
        assert_eq!(
            cfg.validate().unwrap_err(),
            ValidationError::DuplicateNic(nic("eth0"))
        );
        let mut cfg = with_addresses(&[("eth0", "192.0.2.10/24")]);
        let r = RouteConfig {
            destination: cidr("198.51.100.0/24"),
            gateway: "192.0.2.1".parse().unwrap(),
        };
        cfg.routes = vec![r.clone(), r];
        assert!(matches!(
            cfg.validate().unwrap_err(),
            ValidationError::DuplicateRoute(_)
        ));
    }

    #[test]
    fn gateways_must_be_inside_an_enabled_subnet() {
        let mut cfg = with_addresses(&[("eth0", "192.0.2.10/24"), ("eth0", "2001:db8::10/64")]);
        cfg.gateways.ipv4 = Some("192.0.2.1".parse().unwrap());
        cfg.gateways.ipv6 = Some("2001:db8::1".parse().unwrap());
        cfg.validate().unwrap();
        assert_eq!(
            cfg.nic_for_gateway("192.0.2.1".parse().unwrap()),
            Some(&nic("eth0"))
        );

        let mut outside = cfg.clone();
        outside.gateways.ipv4 = Some("198.51.100.1".parse().unwrap());
        let e = outside.validate().unwrap_err();
        assert!(
            matches!(e, ValidationError::GatewayOutsideSubnets { .. }),
            "{e}"
        );
        assert!(e.to_string().contains("192.0.2.0/24 on eth0"), "{e}");

        // Disabling the only address of the gateway's subnet leaves the gateway outside.
        let mut disabled = cfg.clone();
        disabled.interfaces[0].addresses[0].enabled = false;
        assert!(disabled
            .validate()
            .unwrap_err()
            .to_string()
            .contains("none"));

        let mut own = cfg.clone();
        own.gateways.ipv4 = Some("192.0.2.10".parse().unwrap());
        assert!(own.validate().unwrap_err().to_string().contains("own"));

        let mut ll = cfg.clone();
        ll.gateways.ipv6 = Some("fe80::1".parse().unwrap());
        assert!(ll
            .validate()
            .unwrap_err()
            .to_string()
            .contains("link-local"));

        let mut route = cfg.clone();
        route.routes.push(RouteConfig {
            destination: cidr("198.51.100.0/24"),
            gateway: "203.0.113.1".parse().unwrap(),
        });
        assert!(matches!(
            route.validate().unwrap_err(),
            ValidationError::GatewayOutsideSubnets { .. }
        ));
    }

    #[test]
    fn routes_are_subnets_of_one_family_and_not_default() {
        let mut cfg = with_addresses(&[("eth0", "192.0.2.10/24")]);
        cfg.routes.push(RouteConfig {
            destination: cidr("198.51.100.7/24"),
            gateway: "192.0.2.1".parse().unwrap(),
        });
        let e = cfg.validate().unwrap_err();
        assert!(
            e.to_string().contains("did you mean 198.51.100.0/24"),
            "{e}"
        );
        cfg.routes[0].destination = cidr("0.0.0.0/0");
        assert!(matches!(
            cfg.validate().unwrap_err(),
            ValidationError::RouteIsDefault(_)
        ));
        cfg.routes[0].destination = cidr("2001:db8:5::/48");
        assert!(matches!(
            cfg.validate().unwrap_err(),
            ValidationError::RouteFamilyMismatch { .. }
        ));
    }

    #[test]
    fn a_route_inside_a_connected_subnet_is_refused() {
        // Found by fuzzing: this route took the factory subnet, and the workstation on it,
        // away from the appliance until a rollback.
        let mut cfg = with_addresses(&[("eth0", "192.0.2.10/24")]);
        for (destination, subnet) in [
            ("169.254.1.0/24", "169.254.1.0/24"),
            ("169.254.1.0/25", "169.254.1.0/24"),
            ("192.0.2.128/25", "192.0.2.0/24"),
            ("192.0.2.0/24", "192.0.2.0/24"),
        ] {
            cfg.routes = vec![RouteConfig {
                destination: cidr(destination),
                gateway: "192.0.2.254".parse().unwrap(),
            }];
            assert_eq!(
                cfg.validate().unwrap_err(),
                ValidationError::RouteShadowsConnected {
                    destination: cidr(destination),
                    subnet: cidr(subnet),
                },
                "{destination}"
            );
        }
        // A wider route leaves the connected subnet to the more specific connected route.
        cfg.routes[0].destination = cidr("192.0.0.0/16");
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn dns_limits() {
        let mut cfg = NetworkConfig::default();
        cfg.dns.servers = ["192.0.2.53", "192.0.2.54", "2001:db8::53", "192.0.2.55"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            cfg.validate().unwrap_err(),
            ValidationError::TooManyDnsServers(4)
        );
        cfg.dns.servers.truncate(2);
        cfg.dns.servers[1] = cfg.dns.servers[0];
        assert!(matches!(
            cfg.validate().unwrap_err(),
            ValidationError::DuplicateDnsServer(_)
        ));
        cfg.dns.servers = vec!["0.0.0.0".parse().unwrap()];
        assert!(matches!(
            cfg.validate().unwrap_err(),
            ValidationError::UnusableDnsServer { .. }
        ));
        cfg.dns.servers = vec!["192.0.2.53".parse().unwrap()];
        cfg.dns.search = vec!["a.example".parse().unwrap(); 2];
        assert!(matches!(
            cfg.validate().unwrap_err(),
            ValidationError::DuplicateSearchDomain(_)
        ));
        cfg.dns.search = (0..7)
            .map(|i| format!("d{i}.example").parse().unwrap())
            .collect();
        assert_eq!(
            cfg.validate().unwrap_err(),
            ValidationError::TooManySearchDomains(7)
        );
        cfg.dns.search.truncate(2);
        cfg.validate().unwrap();
        assert_eq!(
            cfg.dns.resolv_conf(),
            "# written by appliance-agent from the network settings\nnameserver 192.0.2.53\n\
             search d0.example d1.example\n"
        );
    }

    #[test]
    fn nics_are_checked_against_the_kernel() {
        let cfg = with_addresses(&[("eth0", "192.0.2.10/24"), ("eth9", "192.0.2.11/24")]);
        let e = cfg.check_nics(&["lo".into(), "eth0".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no NIC named eth9 on this appliance (present: lo, eth0)"
        );
        let lo = with_addresses(&[("lo", "192.0.2.10/24")]);
        assert!(matches!(
            lo.validate().unwrap_err(),
            ValidationError::ReservedNic(_)
        ));
    }

    #[test]
    fn json_and_toml_share_the_schema() {
        let json = r#"{
            "hostname": "fw-1",
            "gateways": {"ipv4": "192.0.2.1"},
            "dns": {"servers": ["192.0.2.53"], "search": ["example.net"]},
            "interfaces": [{"name": "eth0", "addresses": [
                {"address": "192.0.2.10/24"},
                {"address": "2001:db8::10/64", "enabled": false}]}],
            "routes": [{"destination": "198.51.100.0/24", "gateway": "192.0.2.254"}]
        }"#;
        let cfg: NetworkConfig = serde_json::from_str(json).unwrap();
        cfg.validate().unwrap();
        assert!(cfg.interfaces[0].addresses[0].enabled, "enabled by default");
        assert!(!cfg.interfaces[0].addresses[1].enabled);
        let toml_text = toml::to_string(&cfg).unwrap();
        let back: NetworkConfig = toml::from_str(&toml_text).unwrap();
        assert_eq!(back, cfg, "{toml_text}");

        for (bad, needle) in [
            (r#"{"hostnam": "x"}"#, "unknown field"),
            (
                r#"{"interfaces": [{"name": "eth0", "addresses": [{"address": "192.0.2.1/24", "up": true}]}]}"#,
                "unknown field",
            ),
            (
                r#"{"interfaces": [{"name": "eth0", "addresses": [{"address": "192.0.2.1/40"}]}]}"#,
                "longer than 32",
            ),
            (r#"{"gateways": {"ipv4": "2001:db8::1"}}"#, "invalid"),
            (r#"{"hostname": "bad_name"}"#, "not a host name"),
        ] {
            let e = serde_json::from_str::<NetworkConfig>(bad).unwrap_err();
            assert!(e.to_string().contains(needle), "{bad}: {e}");
        }
    }
}
