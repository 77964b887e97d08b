//! The network connectivity test IPs: pinged (ICMP echo, every address at once) by a
//! backup during the last part of the primary timeout, by a primary that cannot see its
//! peer, and on demand (the seeds' Test button).

use crate::net::icmp::Pinger;
use serde::Serialize;
use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;

/// Echo requests to one address are at least this far apart within a round.
pub const RETRY: Duration = Duration::from_millis(100);

/// Whether any of `ips` answers an echo request before `deadline` (each is asked every
/// [`RETRY`] until one answers or the time is up).
pub async fn any_answers(ips: &[IpAddr], deadline: Instant) -> bool {
    if ips.is_empty() {
        return false;
    }
    let rounds = ips.iter().map(|ip| answers_before(*ip, deadline));
    let mut set: futures_util::stream::FuturesUnordered<_> = rounds.collect();
    use futures_util::StreamExt;
    while let Some(answered) = set.next().await {
        if answered {
            return true;
        }
    }
    false
}

async fn answers_before(ip: IpAddr, deadline: Instant) -> bool {
    let pinger = match Pinger::open(ip) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%ip, "failover: cannot open an ICMP socket for a test IP: {e}");
            return false;
        }
    };
    let mut seq = 0u16;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        seq = seq.wrapping_add(1);
        let started = Instant::now();
        match pinger.ping(seq, left.min(RETRY * 5)).await {
            Ok(Some(_)) => return true,
            Ok(None) => {}
            Err(_) => tokio::time::sleep_until((started + RETRY).min(deadline)).await,
        }
    }
}

/// One test IP's result of an on-demand test.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct TestIpResult {
    pub address: IpAddr,
    pub answered: bool,
    /// Round-trip time of the first answer, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Why it could not be tested (no route, no socket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Pings every test IP now (three tries each, 1 s timeout) and says how each answered.
pub async fn test_now(ips: &[IpAddr]) -> Vec<TestIpResult> {
    let tests = ips.iter().map(|ip| async move {
        let mut r = TestIpResult {
            address: *ip,
            answered: false,
            rtt_ms: None,
            error: None,
        };
        let pinger = match Pinger::open(*ip) {
            Ok(p) => p,
            Err(e) => {
                r.error = Some(format!("cannot open an ICMP socket: {e}"));
                return r;
            }
        };
        for seq in 1..=3u16 {
            match pinger.ping(seq, Duration::from_secs(1)).await {
                Ok(Some(rtt)) => {
                    r.answered = true;
                    r.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    r.error = Some(format!("cannot send to {ip}: {e}"));
                    break;
                }
            }
        }
        r
    });
    futures_util::future::join_all(tests).await
}
