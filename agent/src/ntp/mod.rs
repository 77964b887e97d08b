//! The NTP client: keeps the appliance's clock on the servers of the local settings
//! (`[ntp]` of `appliance.toml`; none by default, and then the clock is left alone).
//!
//! SNTP per RFC 5905 in client mode, written here (no NTP crate: the client is a few
//! hundred lines of packet parsing and arithmetic that we test to the bit).
//!
//! | module | what |
//! | --- | --- |
//! | [`packet`] | the header, its checks (kiss-of-death, stratum, origin, zero transmit) and the offset and delay arithmetic, without I/O |
//! | [`clock`] | the clock seam (`clock_settime`, `adjtimex`), the step-or-slew decision |
//! | [`query`] | one poll over UDP: several exchanges per server, the best by delay |
//! | [`tracker`] | the status as a state machine: synchronised, offset, server, errors |
//!
//! The service polls right away, then every 64 s, and again at once when the servers
//! change. Servers are tried in order; the first that answers is used. Host names are
//! resolved with the system resolver, which reads the resolv.conf the agent writes from
//! the appliance's DNS settings. The clock is stepped over 0.128 s of offset and slewed
//! below; the agent keeps `CAP_SYS_TIME` for it.
//!
//! Observe-only mode (measure, never touch the clock) is a debug switch for the namespace
//! tests, whose agents share the host's clock: with `appliance.debug=1` on the kernel
//! command line and a file `<data>/debug/ntp-observe-only`.
//!
//! [`NtpService::status`] is a `watch` of the status, for whatever needs to know whether
//! the time can be trusted (the data-sync scheduler).
//!
//! Current limits: one server is used at a time (no selection or clustering among
//! several, no frequency discipline of our own: the kernel's loop does it); no NTP
//! authentication (symmetric keys, NTS); only the first address of a host name is tried;
//! a kiss-of-death ends that server's poll and the next server is tried, but the server
//! is asked again at the next poll (not dropped for `DENY` or `RSTR`, not polled less
//! often for `RATE`: at one poll of four requests per 64 s the rate is low already).

pub mod clock;
pub mod packet;
pub mod query;
pub mod tracker;

use crate::config::ConfigStore;
use crate::model::ntp::{NtpServers, NtpStatus};
use crate::runtime::Tasks;
use clock::{Clock, Mode};
use query::Exchange;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The time between two polls.
pub const POLL: Duration = Duration::from_secs(64);

/// The debug switch file, under the data directory.
pub const OBSERVE_ONLY_FILE: &str = "debug/ntp-observe-only";

/// Observe-only when booted with `appliance.debug=1` and `<data>/debug/ntp-observe-only` exists.
pub fn mode(data_dir: &Path, debug: bool) -> Mode {
    if debug && data_dir.join(OBSERVE_ONLY_FILE).exists() {
        tracing::warn!("NTP in observe-only mode (debug switch): the clock is never changed");
        Mode::ObserveOnly
    } else {
        Mode::Adjust
    }
}

/// The handle: the status as a `watch`; cheap to clone.
#[derive(Clone)]
pub struct NtpService {
    status: watch::Receiver<NtpStatus>,
}

impl NtpService {
    /// Starts the client as the task `ntp`.
    pub fn start(
        config: Arc<ConfigStore>,
        clock: Arc<dyn Clock + Send + Sync>,
        mode: Mode,
        tasks: &mut Tasks,
    ) -> NtpService {
        let (tx, rx) = watch::channel(NtpStatus::default());
        let tx = Arc::new(tx);
        tasks.spawn("ntp", move || {
            run(
                config.subscribe(),
                tx.clone(),
                clock.clone(),
                mode,
                Exchange::DEFAULT,
            )
        });
        NtpService { status: rx }
    }

    /// The status, updated after every poll.
    pub fn status(&self) -> watch::Receiver<NtpStatus> {
        self.status.clone()
    }

    pub fn snapshot(&self) -> NtpStatus {
        self.status.borrow().clone()
    }

    /// Whether the clock was set from a server recently (see [`tracker::HOLDOVER`]).
    pub fn is_synchronised(&self) -> bool {
        self.status.borrow().synchronised
    }
}

/// The client's loop: poll, adjust, publish, wait for the next poll or new servers. New
/// servers interrupt a poll under way and are polled at once.
async fn run(
    mut config: watch::Receiver<crate::config::Config>,
    status: Arc<watch::Sender<NtpStatus>>,
    clock: Arc<dyn Clock + Send + Sync>,
    mode: Mode,
    exchange: Exchange,
) {
    let mut servers: NtpServers = config.borrow_and_update().ntp.servers.clone();
    let mut tracker = tracker::Tracker::default();
    loop {
        let polled = if servers.is_empty() {
            None
        } else {
            tokio::select! {
                outcome = query::poll(servers.as_slice(), clock.as_ref(), exchange) => Some(Ok(outcome)),
                new = new_servers(&mut config, &servers) => Some(Err(new)),
            }
        };
        let new = match polled {
            Some(Ok(outcome)) => {
                let was = tracker.status().clone();
                match outcome {
                    Ok(found) => {
                        let s = found.sample;
                        match clock::adjust(clock.as_ref(), s.offset, s.delay / 2.0, mode) {
                            Ok(action) => {
                                let unix = crate::model::unix_now();
                                tracker.synced(&found, action, Instant::now(), unix);
                            }
                            Err(e) => tracker.failed(e.to_string(), Instant::now()),
                        }
                    }
                    Err(why) => tracker.failed(why, Instant::now()),
                }
                log_change(&was, tracker.status());
                status.send_replace(tracker.status().clone());
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => None,
                    new = new_servers(&mut config, &servers) => Some(new),
                }
            }
            Some(Err(new)) => Some(new),
            None => Some(new_servers(&mut config, &servers).await),
        };
        if let Some(new) = new {
            let names: Vec<String> = new.as_slice().iter().map(|s| s.to_string()).collect();
            tracing::info!(servers = ?names, "NTP servers changed");
            servers = new;
            tracker.restart();
            status.send_replace(tracker.status().clone());
        }
    }
}

/// Waits until the configured servers differ from `current`, and returns them (never,
/// once the settings are gone at shutdown).
async fn new_servers(
    config: &mut watch::Receiver<crate::config::Config>,
    current: &NtpServers,
) -> NtpServers {
    loop {
        if config.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        let new = config.borrow_and_update().ntp.servers.clone();
        if new != *current {
            return new;
        }
    }
}

/// Logs when the clock gains or loses its synchronisation, or the error changes.
fn log_change(was: &NtpStatus, now: &NtpStatus) {
    if now.synchronised && !was.synchronised {
        tracing::info!(
            server = now.server.as_deref().unwrap_or_default(),
            offset = now.offset_seconds.unwrap_or_default(),
            stratum = now.stratum.unwrap_or_default(),
            "clock synchronised by NTP"
        );
    }
    if now.error != was.error {
        if let Some(e) = &now.error {
            tracing::warn!("NTP: {e}");
        }
    }
    if was.synchronised && !now.synchronised {
        tracing::warn!("clock no longer synchronised by NTP");
    }
}

#[cfg(test)]
mod tests {
    use super::clock::fake::FakeClock;
    use super::*;

    #[test]
    fn observe_only_needs_both_the_debug_boot_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(mode(dir.path(), true), Mode::Adjust);
        std::fs::create_dir_all(dir.path().join("debug")).unwrap();
        std::fs::write(dir.path().join(OBSERVE_ONLY_FILE), "").unwrap();
        assert_eq!(mode(dir.path(), false), Mode::Adjust);
        assert_eq!(mode(dir.path(), true), Mode::ObserveOnly);
    }

    /// A server on `ip` that answers with the fixed time `unix` (when `answers`) or never.
    async fn server(ip: &str, port: u16, unix: u64, answers: bool) -> u16 {
        let socket = tokio::net::UdpSocket::bind((ip, port)).await.unwrap();
        let port = socket.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = [0u8; 128];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let req = packet::Packet::decode(&buf[..n]).unwrap();
                let t = packet::Timestamp::from_system(
                    std::time::UNIX_EPOCH + Duration::from_secs(unix),
                );
                let answer = packet::Packet {
                    version: 4,
                    mode: packet::MODE_SERVER,
                    stratum: 2,
                    origin: req.transmit,
                    receive: t,
                    transmit: t,
                    ..Default::default()
                };
                if answers {
                    let _ = socket.send_to(&answer.encode(), from).await;
                }
            }
        });
        port
    }

    fn set_servers(config: &ConfigStore, servers: &[&str]) {
        let list: Vec<_> = servers.iter().map(|s| s.parse().unwrap()).collect();
        config
            .update(|c| c.ntp.servers = list.try_into().unwrap())
            .unwrap();
    }

    struct Running {
        config: Arc<ConfigStore>,
        clock: Arc<FakeClock>,
        status: watch::Receiver<NtpStatus>,
        _dir: tempfile::TempDir,
    }

    fn start(exchange: Exchange) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(ConfigStore::open(dir.path()));
        let clock = Arc::new(FakeClock::at(1_000_000));
        let (tx, status) = watch::channel(NtpStatus::default());
        tokio::spawn(run(
            config.subscribe(),
            Arc::new(tx),
            clock.clone(),
            Mode::Adjust,
            exchange,
        ));
        Running {
            config,
            clock,
            status,
            _dir: dir,
        }
    }

    async fn synced(status: &mut watch::Receiver<NtpStatus>) -> NtpStatus {
        tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.synchronised))
            .await
            .expect("synchronised")
            .unwrap()
            .clone()
    }

    /// The loop against a loopback server 3 s ahead of a fake clock: nothing without
    /// servers; once they are set, a poll at once that steps the clock by 3 s.
    #[tokio::test]
    async fn the_loop_polls_when_servers_are_set_and_steps_a_fake_clock() {
        let port = server("127.0.0.1", 0, 1_000_003, true).await;
        let mut r = start(Exchange {
            samples: 2,
            timeout: Duration::from_millis(500),
            spacing: Duration::from_millis(1),
            port,
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(r.clock.calls().is_empty(), "no servers: no poll");
        set_servers(&r.config, &["127.0.0.1"]);
        let status = synced(&mut r.status).await;
        assert_eq!(status.stratum, Some(3));
        assert_eq!(
            status.last_action,
            Some(crate::model::ntp::ClockAction::Stepped)
        );
        let calls = r.clock.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].0, "step");
        assert!((calls[0].1 - 3.0).abs() < 0.01, "{calls:?}");
    }

    /// A poll of a silent server (a minute of waiting) is cut short by a new list.
    #[tokio::test]
    async fn new_servers_interrupt_a_poll_under_way() {
        let port = server("127.0.0.1", 0, 1_000_000, true).await;
        server("127.0.0.2", port, 0, false).await;
        let mut r = start(Exchange {
            samples: 2,
            timeout: Duration::from_secs(30),
            spacing: Duration::from_millis(1),
            port,
        });
        set_servers(&r.config, &["127.0.0.2"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        set_servers(&r.config, &["127.0.0.1"]);
        let status = synced(&mut r.status).await;
        assert_eq!(status.server.as_deref(), Some("127.0.0.1"));
        assert_eq!(r.clock.calls(), vec![("slew", 0.0)]);
    }
}
