//! Support utilities run from the appliance: a TCP connection test, ping, and a DNS lookup.
//!
//! Requests are parsed into typed commands ([`TcpTest`], [`Ping`], [`Lookup`]) with their
//! limits checked; a test that ran answers with its outcome (connected or the error, the
//! replies that came, the addresses found), whatever it was. Names are resolved with the
//! system resolver (`getaddrinfo`: `/etc/hosts`, then the DNS servers in resolv.conf).
//! Every run is logged at debug level only: an API client can start as many as it likes.

use super::icmp::Pinger;
use crate::model::{
    DnsLookupRequest, DnsLookupResult, PingReply, PingRequest, PingResult, TcpTestRequest,
    TcpTestResult,
};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UtilityError {
    #[error("{0}")]
    BadInput(String),
}

/// A host to test: an IP address or a name to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Ip(IpAddr),
    Name(String),
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, UtilityError> {
        let s = s.trim();
        if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse() {
            return Ok(Target::Ip(ip));
        }
        let ok = !s.is_empty()
            && s.len() <= 253
            && s.trim_end_matches('.').split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if ok {
            Ok(Target::Name(s.to_string()))
        } else {
            Err(UtilityError::BadInput(format!(
                "{s:?} is neither an IP address nor a host name"
            )))
        }
    }

    /// The addresses it stands for (one, for an IP).
    pub async fn resolve(&self) -> Result<Vec<IpAddr>, String> {
        match self {
            Target::Ip(ip) => Ok(vec![*ip]),
            Target::Name(n) => {
                let mut out: Vec<IpAddr> = Vec::new();
                let found = tokio::net::lookup_host((n.as_str(), 0))
                    .await
                    .map_err(|e| format!("cannot resolve {n}: {e}"))?;
                for sa in found {
                    if !out.contains(&sa.ip()) {
                        out.push(sa.ip());
                    }
                }
                if out.is_empty() {
                    return Err(format!("{n} has no addresses"));
                }
                Ok(out)
            }
        }
    }
}

fn duration_ms(
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
    what: &str,
) -> Result<Duration, UtilityError> {
    let v = value.unwrap_or(default);
    if !(min..=max).contains(&v) {
        return Err(UtilityError::BadInput(format!(
            "{what} must be between {min} and {max} ms"
        )));
    }
    Ok(Duration::from_millis(v))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpTest {
    pub host: String,
    pub target: Target,
    pub port: u16,
    pub timeout: Duration,
}

impl TryFrom<&TcpTestRequest> for TcpTest {
    type Error = UtilityError;
    fn try_from(r: &TcpTestRequest) -> Result<Self, UtilityError> {
        if r.port == 0 {
            return Err(UtilityError::BadInput("port must be 1 to 65535".into()));
        }
        Ok(TcpTest {
            host: r.host.clone(),
            target: Target::parse(&r.host)?,
            port: r.port,
            timeout: duration_ms(r.timeout_ms, 3000, 100, 30_000, "timeout_ms")?,
        })
    }
}

/// Connects to the first address of the host (then the next, until the time is up).
pub async fn tcp(t: &TcpTest) -> TcpTestResult {
    let start = Instant::now();
    let mut result = TcpTestResult {
        host: t.host.clone(),
        port: t.port,
        connected: false,
        address: None,
        elapsed_ms: 0.0,
        error: None,
    };
    let outcome = tokio::time::timeout(t.timeout, async {
        let addrs = t.target.resolve().await?;
        let mut last = String::from("no address to connect to");
        for ip in addrs {
            let sa = SocketAddr::new(ip, t.port);
            match tokio::net::TcpStream::connect(sa).await {
                Ok(_) => return Ok(sa),
                Err(e) => last = format!("{sa}: {e}"),
            }
        }
        Err(last)
    })
    .await;
    result.elapsed_ms = ms(start.elapsed());
    match outcome {
        Ok(Ok(sa)) => {
            result.connected = true;
            result.address = Some(sa.to_string());
        }
        Ok(Err(e)) => result.error = Some(e),
        Err(_) => result.error = Some(format!("no connection within {} ms", t.timeout.as_millis())),
    }
    tracing::debug!(host = %t.host, port = t.port, connected = result.connected, "utility: tcp test");
    result
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ping {
    pub host: String,
    pub target: Target,
    pub count: u16,
    pub interval: Duration,
    pub timeout: Duration,
}

impl TryFrom<&PingRequest> for Ping {
    type Error = UtilityError;
    fn try_from(r: &PingRequest) -> Result<Self, UtilityError> {
        let count = r.count.unwrap_or(3);
        if !(1..=10).contains(&count) {
            return Err(UtilityError::BadInput("count must be 1 to 10".into()));
        }
        Ok(Ping {
            host: r.host.clone(),
            target: Target::parse(&r.host)?,
            count: count as u16,
            interval: duration_ms(r.interval_ms, 1000, 200, 5000, "interval_ms")?,
            timeout: duration_ms(r.timeout_ms, 1000, 100, 10_000, "timeout_ms")?,
        })
    }
}

pub async fn ping(p: &Ping) -> PingResult {
    let mut result = PingResult {
        host: p.host.clone(),
        address: None,
        sent: 0,
        received: 0,
        replies: Vec::new(),
        error: None,
    };
    let ip = match p.target.resolve().await {
        Ok(addrs) => addrs[0],
        Err(e) => {
            result.error = Some(e);
            return result;
        }
    };
    result.address = Some(ip.to_string());
    let pinger = match Pinger::open(ip) {
        Ok(s) => s,
        Err(e) => {
            result.error = Some(format!("cannot open an ICMP socket: {e}"));
            return result;
        }
    };
    for seq in 1..=p.count {
        if seq > 1 {
            tokio::time::sleep(p.interval).await;
        }
        result.sent += 1;
        match pinger.ping(seq, p.timeout).await {
            Ok(Some(rtt)) => {
                result.received += 1;
                result.replies.push(PingReply {
                    seq,
                    rtt_ms: ms(rtt),
                });
            }
            Ok(None) => {}
            Err(e) => {
                result.error = Some(format!("cannot send to {ip}: {e}"));
                break;
            }
        }
    }
    tracing::debug!(host = %p.host, sent = result.sent, received = result.received, "utility: ping");
    result
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub name: String,
}

impl TryFrom<&DnsLookupRequest> for Lookup {
    type Error = UtilityError;
    fn try_from(r: &DnsLookupRequest) -> Result<Self, UtilityError> {
        match Target::parse(&r.name)? {
            Target::Name(n) => Ok(Lookup { name: n }),
            Target::Ip(_) => Err(UtilityError::BadInput(format!(
                "{} is an address, not a name to look up",
                r.name
            ))),
        }
    }
}

pub async fn lookup(l: &Lookup) -> DnsLookupResult {
    let start = Instant::now();
    let found = tokio::time::timeout(
        Duration::from_secs(15),
        Target::Name(l.name.clone()).resolve(),
    )
    .await;
    let (addresses, error) = match found {
        Ok(Ok(a)) => (a.iter().map(IpAddr::to_string).collect(), None),
        Ok(Err(e)) => (Vec::new(), Some(e)),
        Err(_) => (Vec::new(), Some("no answer within 15 s".to_string())),
    };
    tracing::debug!(name = %l.name, found = addresses.len(), "utility: dns lookup");
    DnsLookupResult {
        name: l.name.clone(),
        addresses,
        elapsed_ms: ms(start.elapsed()),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_limits_are_checked() {
        assert_eq!(
            Target::parse("192.0.2.1").unwrap(),
            Target::Ip("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            Target::parse("[2001:db8::1]").unwrap(),
            Target::Ip("2001:db8::1".parse().unwrap())
        );
        assert!(matches!(
            Target::parse("example.net.").unwrap(),
            Target::Name(_)
        ));
        for bad in ["", "a b", "a..b", "x;rm", &"a".repeat(64)] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
        let req = |port, timeout_ms| TcpTestRequest {
            host: "192.0.2.1".into(),
            port,
            timeout_ms,
        };
        assert!(TcpTest::try_from(&req(0, None)).is_err());
        assert!(TcpTest::try_from(&req(22, Some(50))).is_err());
        assert_eq!(
            TcpTest::try_from(&req(22, None)).unwrap().timeout,
            Duration::from_secs(3)
        );
        let ping = |count| PingRequest {
            host: "192.0.2.1".into(),
            count,
            interval_ms: None,
            timeout_ms: None,
        };
        assert!(Ping::try_from(&ping(Some(0))).is_err());
        assert!(Ping::try_from(&ping(Some(11))).is_err());
        assert_eq!(Ping::try_from(&ping(None)).unwrap().count, 3);
        assert!(Lookup::try_from(&DnsLookupRequest {
            name: "192.0.2.1".into()
        })
        .is_err());
    }

    #[test]
    fn tcp_test_reports_connected_and_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let t = TcpTest {
                host: "127.0.0.1".into(),
                target: Target::Ip("127.0.0.1".parse().unwrap()),
                port,
                timeout: Duration::from_secs(2),
            };
            let ok = tcp(&t).await;
            assert!(ok.connected, "{ok:?}");
            drop(listener);
            let refused = tcp(&t).await;
            assert!(!refused.connected);
            assert!(refused.error.unwrap().contains("refused"));
            let name = lookup(&Lookup {
                name: "localhost".into(),
            })
            .await;
            assert!(name.error.is_none(), "{name:?}");
            assert!(!name.addresses.is_empty());
        });
    }
}
