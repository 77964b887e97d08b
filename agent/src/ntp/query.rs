//! One poll: a few exchanges with each server, in order, until one gives a usable sample.
//!
//! Each exchange sends a request with a fresh random nonce over a UDP socket connected to
//! the server (so the kernel drops datagrams from any other address) and waits for the
//! answer that echoes the nonce; anything else that arrives meanwhile (a late answer to an
//! earlier request, a forgery) is ignored. A kiss-of-death, a bad stratum, an
//! unsynchronised server or a zero transmit timestamp ends the poll of that server. Of the
//! samples a server gave, the one with the smallest delay is used.

use super::clock::Clock;
use super::packet::{self, Packet, Refusal, Sample, Timestamp};
use crate::model::ntp::NtpServer;
use crate::net::utilities::Target;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;

/// How a poll talks to a server.
#[derive(Clone, Copy, Debug)]
pub struct Exchange {
    /// Requests per server and poll.
    pub samples: usize,
    /// How long to wait for each answer.
    pub timeout: Duration,
    /// The pause between two requests to one server.
    pub spacing: Duration,
    /// The servers' UDP port.
    pub port: u16,
}

impl Exchange {
    pub const DEFAULT: Exchange = Exchange {
        samples: 4,
        timeout: Duration::from_secs(1),
        spacing: Duration::from_millis(250),
        port: 123,
    };
}

/// The server a poll used and what it measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub server: NtpServer,
    pub address: IpAddr,
    pub sample: Sample,
}

/// Polls `servers` in order; the first that gives a sample is used. The error says, in
/// words, what went wrong with each.
pub async fn poll(
    servers: &[NtpServer],
    clock: &dyn Clock,
    exchange: Exchange,
) -> Result<Found, String> {
    let mut problems = Vec::new();
    for server in servers {
        match poll_one(server, clock, exchange).await {
            Ok(found) => return Ok(found),
            Err(why) => problems.push(format!("{server}: {why}")),
        }
    }
    Err(format!(
        "no NTP server gave the time ({})",
        problems.join("; ")
    ))
}

async fn poll_one(
    server: &NtpServer,
    clock: &dyn Clock,
    exchange: Exchange,
) -> Result<Found, String> {
    let address = match server {
        NtpServer::Ip(ip) => *ip,
        NtpServer::Name(name) => {
            let found = Target::Name(name.to_string()).resolve().await?;
            found
                .first()
                .copied()
                .ok_or_else(|| format!("{name} has no addresses"))?
        }
    };
    let to = SocketAddr::new(address, exchange.port);
    let local: SocketAddr = if address.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    socket
        .connect(to)
        .await
        .map_err(|e| format!("cannot reach {to}: {e}"))?;
    let mut samples = Vec::new();
    let mut last_problem = String::new();
    for i in 0..exchange.samples.max(1) {
        if i > 0 {
            tokio::time::sleep(exchange.spacing).await;
        }
        match one_exchange(&socket, clock, exchange.timeout).await {
            Ok(s) => samples.push(s),
            Err(Failure::Refused(r)) => return Err(r.to_string()),
            Err(Failure::Lost(why)) => last_problem = why,
        }
    }
    match packet::best(&samples) {
        Some(sample) => Ok(Found {
            server: server.clone(),
            address,
            sample,
        }),
        None => Err(format!(
            "{last_problem} ({} requests to {to})",
            exchange.samples.max(1)
        )),
    }
}

enum Failure {
    /// The server answered and must not be used now.
    Refused(Refusal),
    /// No usable answer to this request.
    Lost(String),
}

async fn one_exchange(
    socket: &UdpSocket,
    clock: &dyn Clock,
    timeout: Duration,
) -> Result<Sample, Failure> {
    let nonce = Timestamp(random_u64().map_err(Failure::Lost)?);
    let request = Packet::request(nonce, 6).encode();
    let t1 = Timestamp::from_system(clock.now());
    socket
        .send(&request)
        .await
        .map_err(|e| Failure::Lost(format!("cannot send: {e}")))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut ignored: Option<Refusal> = None;
    let mut buf = [0u8; 1024];
    loop {
        let received = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await;
        let t4 = Timestamp::from_system(clock.now());
        let n = match received {
            Err(_) => {
                return Err(Failure::Lost(match ignored {
                    Some(r) => format!("no valid answer within {timeout:?}; ignored {r}"),
                    None => format!("no answer within {timeout:?}"),
                }))
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(Failure::Lost(
                    "refused: nothing listens on the NTP port".into(),
                ))
            }
            Ok(Err(e)) => return Err(Failure::Lost(format!("cannot receive: {e}"))),
            Ok(Ok(n)) => n,
        };
        let checked = Packet::decode(buf.get(..n).unwrap_or_default())
            .and_then(|p| packet::check_answer(&p, nonce).map(|()| p));
        match checked {
            Ok(p) => return Ok(packet::measure(t1, p.receive, p.transmit, t4, p.stratum)),
            Err(r) if r.is_stray() => {
                tracing::debug!("NTP: ignored {r}");
                ignored = Some(r);
            }
            Err(r) => return Err(Failure::Refused(r)),
        }
    }
}

fn random_u64() -> Result<u64, String> {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| "no random numbers for the request".to_string())?;
    Ok(u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::super::clock::SystemClock;
    use super::*;

    /// A one-shot server on loopback: answers each request with what `reply` makes of it.
    async fn serve<F>(reply: F) -> u16
    where
        F: Fn(Packet) -> Vec<Vec<u8>> + Send + 'static,
    {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = [0u8; 128];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let request = Packet::decode(&buf[..n]).unwrap();
                for answer in reply(request) {
                    let _ = socket.send_to(&answer, from).await;
                }
            }
        });
        port
    }

    fn answer_to(request: Packet, shift: f64) -> Packet {
        let now = Timestamp::from_system(std::time::SystemTime::now()).add_seconds(shift);
        Packet {
            version: 4,
            mode: packet::MODE_SERVER,
            stratum: 3,
            reference_id: *b"TEST",
            origin: request.transmit,
            receive: now,
            transmit: now,
            ..Packet::default()
        }
    }

    fn quick(port: u16) -> Exchange {
        Exchange {
            samples: 3,
            timeout: Duration::from_millis(300),
            spacing: Duration::from_millis(10),
            port,
        }
    }

    fn local() -> Vec<NtpServer> {
        vec!["127.0.0.1".parse().unwrap()]
    }

    #[tokio::test]
    async fn a_server_ahead_by_5_s_measures_5_s_and_stale_answers_are_ignored() {
        let port = serve(|req| {
            let stale = Packet {
                origin: Timestamp(req.transmit.0 ^ 1),
                ..answer_to(req, -100.0)
            };
            vec![
                stale.encode().to_vec(),
                answer_to(req, 5.0).encode().to_vec(),
            ]
        })
        .await;
        let found = poll(&local(), &SystemClock, quick(port)).await.unwrap();
        assert!((found.sample.offset - 5.0).abs() < 0.05, "{found:?}");
        assert_eq!(found.sample.stratum, 3);
        assert_eq!(found.address, "127.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn a_kiss_of_death_ends_the_poll_with_its_code() {
        let port = serve(|req| {
            let kod = Packet {
                stratum: 0,
                reference_id: *b"RATE",
                ..answer_to(req, 0.0)
            };
            vec![kod.encode().to_vec()]
        })
        .await;
        let e = poll(&local(), &SystemClock, quick(port)).await.unwrap_err();
        assert!(e.contains("127.0.0.1: kiss-of-death \"RATE\""), "{e}");
    }

    #[tokio::test]
    async fn only_spoofed_answers_is_no_answer() {
        let port = serve(|req| {
            let forged = Packet {
                origin: Timestamp(req.transmit.0.wrapping_add(1)),
                ..answer_to(req, 1000.0)
            };
            vec![forged.encode().to_vec(), vec![0x24; 12]]
        })
        .await;
        let e = poll(&local(), &SystemClock, quick(port)).await.unwrap_err();
        assert!(e.contains("no valid answer within"), "{e}");
        assert!(e.contains("shorter than an NTP header"), "{e}");
    }

    #[tokio::test]
    async fn a_closed_port_and_a_silent_server_are_said_in_words() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let e = poll(&local(), &SystemClock, quick(port)).await.unwrap_err();
        assert!(e.contains("nothing listens on the NTP port"), "{e}");

        let silent = serve(|_| Vec::new()).await;
        let e = poll(&local(), &SystemClock, quick(silent))
            .await
            .unwrap_err();
        assert!(
            e.starts_with("no NTP server gave the time (127.0.0.1: no answer within 300ms"),
            "{e}"
        );
    }
}
