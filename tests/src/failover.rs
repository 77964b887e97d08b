//! A failover pair in the namespace lab: two appliances `a` (192.0.2.1) and `b`
//! (192.0.2.2) with the shared IP 192.0.2.100/24 configured on both, the same key, and a
//! client (192.0.2.50, also the test IP) that pings the shared IP every 10 ms and watches
//! which appliance holds it.

use crate::api;
use crate::lab::{Agent, Host, Lab};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const KEY: &str = "the pair's pre-shared key, long enough";
pub const SHARED: &str = "192.0.2.100";
pub const CLIENT: &str = "192.0.2.50";

/// One appliance's `appliance.toml`: its own address, the shared IP (enabled or not), the
/// key, the shared-IP selection and the backup settings.
pub fn config(own: &str, shared_enabled: bool, backup: &str) -> String {
    format!(
        "version = 2\n[factory_address]\nenabled = false\n[network]\n\
         [[network.interfaces]]\nname = \"eth0\"\n\
         [[network.interfaces.addresses]]\naddress = \"{own}/24\"\n\
         [[network.interfaces.addresses]]\naddress = \"{SHARED}/24\"\nenabled = {shared_enabled}\n\
         [failover]\nkey = \"{KEY}\"\nshared_ips = [\"{SHARED}\"]\n\
         [failover.backup]\n{backup}\n"
    )
}

pub struct Pair {
    pub lab: Lab,
    pub a: Agent,
    pub b: Agent,
    pub client: Host,
}

impl Pair {
    /// Starts both agents with `backup` as their `[failover.backup]` settings.
    pub fn start(dir: std::path::PathBuf, backup: &str) -> Pair {
        let mut lab = Lab::new(dir);
        let ha = lab.host(0xa1);
        let hb = lab.host(0xb2);
        let client = lab.host(0xc3);
        client.add_address(&format!("{CLIENT}/24"));
        let a = Agent::start_with(
            &lab,
            &ha,
            "a",
            Some(&config("192.0.2.1", true, backup)),
            true,
        );
        let b = Agent::start_with(
            &lab,
            &hb,
            "b",
            Some(&config("192.0.2.2", false, backup)),
            true,
        );
        a.wait_api();
        b.wait_api();
        for (agent, own) in [(&a, "192.0.2.1/24"), (&b, "192.0.2.2/24")] {
            crate::wait::until(
                &format!("{own} on {}", agent.host.ns),
                Duration::from_secs(10),
                Duration::from_millis(20),
                || {
                    let have = agent.host.addresses();
                    if have.iter().any(|x| x == own) {
                        Ok(())
                    } else {
                        Err(format!("{have:?}"))
                    }
                },
            );
        }
        Pair { lab, a, b, client }
    }

    /// Establish Relationship from `a` (primary) with `b` (backup).
    pub fn establish(&self) -> (u16, String) {
        login(
            &self.a,
            "POST",
            "/failover/relationship",
            Some(json!({"backup": {"host": "192.0.2.2"}, "reverse": {"host": "192.0.2.1"}})),
        )
    }
}

/// A call to `/login/api/v1` as the administrator.
pub fn login(agent: &Agent, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let path = format!("/login/api/v1{path}");
    let body = body.map(|b| b.to_string().into_bytes());
    let token = api::token(&agent.host.ns, "127.0.0.1").expect("login");
    let (s, text) = agent.at(method, &path, body.clone(), Some(&token));
    if s != 401 {
        return (s, text);
    }
    // The agent restarted since the session began.
    let token = api::login(&agent.host.ns, "127.0.0.1").expect("login");
    agent.at(method, &path, body, Some(&token))
}

pub fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

pub fn code(body: &str) -> String {
    json_of(body)["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

pub fn status(agent: &Agent) -> Value {
    let (s, body) = login(agent, "GET", "/failover/status", None);
    assert_eq!(s, 200, "{body}");
    json_of(&body)
}

/// Waits until `agent` reports `role` (and, for a primary, holds its shared IPs).
pub fn wait_role(agent: &Agent, role: &str, timeout: Duration) -> Value {
    crate::wait::until(
        &format!("{} to be {role}", agent.host.ns),
        timeout,
        Duration::from_millis(50),
        || {
            let st = status(agent);
            let holds = st["enabled_shared_ips"]
                .as_array()
                .is_some_and(|a| a.contains(&json!(SHARED)));
            if st["role"] == role && (role != "primary" || holds) {
                Ok(st)
            } else {
                Err(st.to_string())
            }
        },
    )
}

/// Whether `host` has the shared IP on its NIC (the kernel's view).
pub fn holds(host: &Host) -> bool {
    host.addresses()
        .iter()
        .any(|a| a == &format!("{SHARED}/24"))
}

/// Whether `host` holds the shared IP where the network can see it: on its NIC, with the
/// cable in (a host whose cable is out answers nobody).
pub fn holds_on_wire(host: &Host) -> bool {
    let out = std::process::Command::new("ip")
        .args(["-n", &host.ns, "-o", "link", "show", "dev", "eth0"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout).contains("LOWER_UP") && holds(host)
}

/// Watches both appliances' NICs every 10 ms and counts the moments both held the
/// shared IP; stops (and answers the count) on drop of the guard's `stop`.
pub struct HolderWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u32, u32)>>,
}

impl HolderWatch {
    pub fn start(a: &Host, b: &Host) -> HolderWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let (a, b, s) = (a.clone(), b.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let (mut samples, mut both) = (0, 0);
            while !s.load(Ordering::Relaxed) {
                samples += 1;
                if holds_on_wire(&a) && holds_on_wire(&b) {
                    both += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (samples, both)
        });
        HolderWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and asserts that two holders were never seen.
    pub fn never_two(self) {
        let (samples, both) = self.finish();
        assert_eq!(both, 0, "two holders in {both} of {samples} samples");
    }

    /// (samples, samples with two holders); printed too, for the fault-matrix figures.
    pub fn finish(mut self) -> (u32, u32) {
        self.stop.store(true, Ordering::Relaxed);
        let (samples, both) = self
            .thread
            .take()
            .map(|t| t.join().unwrap_or((0, 0)))
            .unwrap_or((0, 0));
        eprintln!("holder watch: {samples} samples, {both} with two holders");
        (samples, both)
    }
}

/// The client pinging the shared IP every 10 ms: the longest run of unanswered pings.
pub struct Pinger {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<(Instant, bool)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pinger {
    pub fn start(client: &Host) -> Pinger {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (c, s, l) = (client.clone(), stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            c.block_on(async move {
                let target = SHARED.parse().expect("ip");
                let p = appliance_agent::net::icmp::Pinger::open(target).expect("icmp socket");
                let mut seq = 0u16;
                while !s.load(Ordering::Relaxed) {
                    seq = seq.wrapping_add(1);
                    let started = tokio::time::Instant::now();
                    let ok = matches!(p.ping(seq, Duration::from_millis(10)).await, Ok(Some(_)));
                    l.lock().unwrap().push((Instant::now(), ok));
                    tokio::time::sleep_until(started + Duration::from_millis(10)).await;
                }
            })
        });
        Pinger {
            stop,
            log,
            thread: Some(thread),
        }
    }

    /// Whether a ping sent after `t` was answered.
    pub fn answered_since(&self, t: Instant) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|(at, ok)| *ok && *at > t)
    }

    /// Stops; the longest outage seen (from the last answered ping to the next one).
    pub fn finish(mut self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let log = self.log.lock().unwrap();
        let mut worst = Duration::ZERO;
        let mut last_ok: Option<Instant> = None;
        for (at, ok) in log.iter() {
            if *ok {
                if let Some(l) = last_ok {
                    worst = worst.max(at.duration_since(l));
                }
                last_ok = Some(*at);
            }
        }
        worst
    }
}

/// The MAC the client's neighbour table has for the shared IP.
pub fn client_neighbour(client: &Host) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", &client.ns, "neigh", "show", SHARED, "dev", "eth0"])
        .output()
        .expect("ip neigh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or("")
        .to_string()
}

/// Loads an nftables ruleset into namespace `ns`.
pub fn nft(ns: &str, rules: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(rules.as_bytes())
        .expect("write rules");
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft: {}\n{rules}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Cuts (or heals) the path between `a` and `b` at the switch; both still reach the client.
pub fn partition(p: &Pair, cut: bool) {
    let (pa, pb) = (p.a.host.port(), p.b.host.port());
    let rules = if cut {
        format!(
            "table bridge partition {{\n chain pass {{\n  type filter hook forward priority 0;\n  \
             iifname \"{pa}\" oifname \"{pb}\" drop\n  iifname \"{pb}\" oifname \"{pa}\" drop\n }}\n}}\n"
        )
    } else {
        "delete table bridge partition\n".to_string()
    };
    nft(&p.lab.switch, &rules);
}

/// Polls `probe` every 50 ms for up to `secs` seconds.
pub fn until<T>(what: &str, secs: u64, probe: impl FnMut() -> Result<T, String>) -> T {
    crate::wait::until(
        what,
        Duration::from_secs(secs),
        Duration::from_millis(50),
        probe,
    )
}

/// Establishes the pair and waits until each sees the other in its role.
pub fn established(p: &Pair) {
    let (s, body) = p.establish();
    assert_eq!(s, 200, "{body}");
    wait_role(&p.a, "primary", Duration::from_secs(10));
    wait_role(&p.b, "backup", Duration::from_secs(10));
    until("b to see its primary", 10, || {
        let st = status(&p.b);
        if st["peer"]["reachable"] == true && st["peer"]["state"]["role"] == "primary" {
            Ok(())
        } else {
            Err(st.to_string())
        }
    });
}

/// The MAC of `host`'s eth0, as `aa:bb:...`.
pub fn mac_text(host: &Host) -> String {
    host.mac()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
