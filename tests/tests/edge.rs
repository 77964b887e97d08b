//! The HTTPS port against clients that hold connections without logging in, with a real
//! agent in a namespace: a flood of idle connections from one address leaves the API to
//! everyone else, a stalled request head or an idle connection is closed, and the agent
//! runs with only the capabilities and file limit it is meant to have.

use appliance_agent::conn::{Limits, Timeouts};
use appliance_agent::logging::{BURST, SUMMARY_EVERY};
use appliance_agent::privilege;
use appliance_tests::api;
use appliance_tests::lab::{Agent, Host, Lab};
use appliance_tests::netns::enter_and_run;
use appliance_tests::vm::TestDir;
use appliance_tests::wait;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FAST: &str = "version = 1\n[factory_address]\ntiming = \"fast\"\n";
/// The connections the flooding host tries to open and hold.
const FLOOD: usize = 2000;
/// How long the flood may go on at most.
const FLOOD_TIME: Duration = Duration::from_secs(60);

/// A lab with an agent on its factory address, a flooding host at 169.254.1.50 and the
/// workstation (the switch namespace) at 169.254.1.4.
fn lab(name: &str) -> (TestDir, Lab, Agent, Host, String) {
    let dir = TestDir::new(name);
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0xa0);
    let flooder = lab.host(0xa1);
    flooder.add_address("169.254.1.50/16");
    let agent = Agent::start(&lab, &host, "agent", Some(FAST));
    let held = agent.wait_held(Duration::from_secs(30));
    let addr = held
        .address
        .as_deref()
        .and_then(|a| a.split('/').next())
        .expect("a factory address")
        .to_string();
    (dir, lab, agent, flooder, addr)
}

/// Keeps [`FLOOD`] idle TCP connections open to `target`, opening a new one for each the
/// agent closes, until `stop` (or [`FLOOD_TIME`]); counts its sweeps in `sweeps`. Returns
/// the connections of the last sweep and how many connects succeeded in all.
fn flood(target: SocketAddr, stop: &AtomicBool, sweeps: &AtomicUsize) -> (Vec<TcpStream>, usize) {
    let start = Instant::now();
    let mut held: Vec<TcpStream> = Vec::new();
    let mut connects = 0;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < FLOOD_TIME {
        held.retain(|s| !closed(s));
        for _ in held.len()..FLOOD {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Ok(s) = TcpStream::connect_timeout(&target, Duration::from_millis(200)) {
                held.push(s);
                connects += 1;
            }
        }
        sweeps.fetch_add(1, Ordering::Relaxed);
    }
    (held, connects)
}

/// Sets this test process's soft open-file limit (within the hard one); processes it
/// starts inherit it.
fn set_own_file_limit(soft: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard).expect("setrlimit");
}

/// Whether the agent has closed this connection (a read sees EOF or a reset).
fn closed(s: &TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut b = [0u8; 1];
    match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    }
}

#[test]
fn an_idle_flood_from_one_address_leaves_the_api_to_everyone_else() {
    // The agent starts with the file limit init gives it on the appliance (the kernel's
    // default, 1024), then the test raises its own to hold the flood.
    set_own_file_limit(1024);
    let (_dir, lab, agent, flooder, addr) = lab("idle_flood");
    set_own_file_limit(3 * FLOOD as u64);
    // The workstation logs in once first (the harness changes the default password).
    api::login(&lab.switch, &addr).expect("login before the flood");

    let target: SocketAddr = format!("{addr}:443").parse().expect("address");
    let stop = AtomicBool::new(false);
    let sweeps = AtomicUsize::new(0);
    let (held, connects, login) = std::thread::scope(|s| {
        let flood = s.spawn(|| enter_and_run(&flooder.ns, || flood(target, &stop, &sweeps)));
        wait::until(
            "the flood to be up",
            FLOOD_TIME,
            Duration::from_millis(100),
            || match sweeps.load(Ordering::Relaxed) {
                0 => Err("opening".to_string()),
                _ => Ok(()),
            },
        );
        // Another address logs in while the flood goes on.
        let t = Instant::now();
        let login = api::login(&lab.switch, &addr)
            .and_then(|_| api::call(&lab.switch, &addr, "GET", "/status", None).map(|a| a.status));
        let took = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        let (held, connects) = flood.join().expect("the flood");
        eprintln!(
            "admin login and status from 169.254.1.4 while 169.254.1.50 tries to keep {FLOOD} idle \
             connections open ({connects} connects): {login:?} in {} ms",
            took.as_millis()
        );
        (held, connects, login)
    });
    assert_eq!(login, Ok(200), "the admin logs in during the flood");

    // The flooding address held no more than its cap; the rest were closed at once.
    let open = held.iter().filter(|s| !closed(s)).count();
    assert!(
        open <= Limits::APPLIANCE.per_address,
        "{open} idle connections from one address are held"
    );
    // And those it holds are closed by the handshake timeout.
    wait::until(
        "the idle connections to be closed",
        Timeouts::APPLIANCE.handshake * 3,
        Duration::from_millis(500),
        || match held.iter().filter(|s| !closed(s)).count() {
            0 => Ok(()),
            n => Err(format!("{n} still open")),
        },
    );

    // Each refusal is a log line a client caused: they are rate limited and summed up.
    let refused = connects - Limits::APPLIANCE.per_address;
    let log = wait::until(
        "the agent to report suppressed log lines",
        SUMMARY_EVERY * 2,
        Duration::from_millis(500),
        || {
            let log = std::fs::read_to_string(&agent.log).map_err(|e| e.to_string())?;
            if log.contains("suppressed by the rate limit") {
                Ok(log)
            } else {
                Err("no summary yet".into())
            }
        },
    );
    let logged = log.matches("connection closed: too many").count();
    eprintln!("{refused} connections refused, {logged} of them logged");
    assert!(
        logged < BURST as usize + 60,
        "{logged} refusal lines for {refused} refusals"
    );
}

/// A TLS connection from inside namespace `ns`, with the raw socket.
fn tls_connect(ns: &str, addr: &str) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    appliance_tests::crypto();
    let config = Arc::new(appliance_agent::client::insecure_tls_config().expect("tls config"));
    let target: SocketAddr = format!("{addr}:443").parse().expect("address");
    let tcp = enter_and_run(ns, move || TcpStream::connect(target).expect("connect"));
    let name = rustls::pki_types::ServerName::try_from(addr.to_string()).expect("name");
    let conn = rustls::ClientConnection::new(config, name).expect("tls client");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
    }
    tls
}

/// Waits (at most `limit`) for the server to close the connection; returns how long it took.
fn wait_closed(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    limit: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match tls.read(&mut buf) {
            Ok(0) => return Ok(start.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Ok(start.elapsed()),
        }
    }
    Err(format!("still open after {limit:?}"))
}

#[test]
fn a_stalled_request_head_and_an_idle_connection_are_closed() {
    let (_dir, lab, _agent, _flooder, addr) = lab("stalled_head");
    let limit = Timeouts::APPLIANCE.header * 3;
    std::thread::scope(|s| {
        let partial = s.spawn(|| {
            let mut tls = tls_connect(&lab.switch, &addr);
            tls.write_all(b"GET /check_health HTTP/1.1\r\nHost: appliance\r\n")
                .expect("send part of a head");
            tls.flush().expect("flush");
            wait_closed(&mut tls, limit)
        });
        let idle = s.spawn(|| {
            let mut tls = tls_connect(&lab.switch, &addr);
            tls.write_all(b"GET /check_health HTTP/1.1\r\nHost: appliance\r\n\r\n")
                .expect("send a request");
            tls.flush().expect("flush");
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&got).contains("healthy") {
                let n = tls.read(&mut buf).expect("the answer");
                assert!(n > 0, "closed before answering");
                got.extend_from_slice(&buf[..n]);
            }
            assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
            wait_closed(&mut tls, limit)
        });
        let partial = partial.join().expect("partial");
        let idle = idle.join().expect("idle");
        eprintln!("a stalled request head closed after {partial:?}; an idle kept-alive connection after {idle:?}");
        partial.expect("a stalled request head is closed");
        idle.expect("an idle connection is closed");
    });
}

/// The capability masks of a process, from `/proc/<pid>/status`.
fn capabilities(pid: u32) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    text.lines()
        .filter(|l| l.starts_with("Cap"))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_agent_keeps_only_the_capabilities_it_needs_and_still_works() {
    let (_dir, lab, agent, _flooder, addr) = lab("capabilities");
    let pid = agent.pid().expect("pid");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "appliance-agent", "the pid is the agent's");
    let kept = format!("{:016x}", privilege::mask(&privilege::KEPT));
    let caps = capabilities(pid);
    eprintln!("agent capabilities: {caps:?}");
    for (set, want) in [
        ("CapEff", kept.as_str()),
        ("CapPrm", kept.as_str()),
        ("CapBnd", kept.as_str()),
        ("CapInh", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
    ] {
        let got = caps.iter().find(|(k, _)| k == set).map(|(_, v)| v.as_str());
        assert_eq!(got, Some(want), "{set}");
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a file limit");
    let soft: u64 = files
        .split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!(soft >= privilege::FILE_LIMIT, "{files}");

    // With those, it still does its work: the factory address is held (ARP, netlink,
    // above), it answers on 443, writes /data (the password change at login) and sets
    // the host name.
    api::login(&lab.switch, &addr).expect("login");
    let body = serde_json::json!({"hostname": "edge-1"})
        .to_string()
        .into_bytes();
    let a = api::call(&lab.switch, &addr, "PUT", "/network/hostname", Some(body))
        .expect("set the host name");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    wait::until(
        "the agent's UTS namespace to have the new host name",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let out = std::process::Command::new("nsenter")
                .args([
                    "-t",
                    &pid.to_string(),
                    "-u",
                    "cat",
                    "/proc/sys/kernel/hostname",
                ])
                .output()
                .map_err(|e| e.to_string())?;
            match String::from_utf8_lossy(&out.stdout).trim() {
                "edge-1" => Ok(()),
                other => Err(format!("host name {other:?}")),
            }
        },
    );
    let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
    assert!(!log.contains("cannot set the capability"), "{log}");
}
