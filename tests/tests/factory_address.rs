//! Factory addressing with RFC 5227 conflict detection: real agents in network namespaces
//! on one bridge, real ARP and netlink (no VMs).

use appliance_agent::net::arp::{format_mac, ArpFrame, ArpSocket};
use appliance_tests::lab::{Agent, Host, Lab};
use appliance_tests::vm::TestDir;
use appliance_tests::wait;
use std::net::Ipv4Addr;
use std::time::Duration;

const FAST: &str = "version = 1\n[factory_address]\ntiming = \"fast\"\n";
const RFC: &str = "version = 1\n[factory_address]\ntiming = \"rfc\"\n";
/// Generous: the rfc profile alone takes up to 9 s per address.
const HELD: Duration = Duration::from_secs(40);

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(169, 254, 1, n)
}

fn ifindex(host: &Host) -> u32 {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &host.ns,
            "cat",
            "/sys/class/net/eth0/ifindex",
        ])
        .output()
        .expect("read ifindex");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("ifindex")
}

/// Sends one ARP announcement for `addr` from `host` (a rogue claiming the address).
fn announce(host: &Host, addr: Ipv4Addr) {
    let index = ifindex(host);
    let mac = host.mac();
    host.block_on(async move {
        let sock = ArpSocket::open(index).expect("arp socket");
        sock.send(&ArpFrame::announcement(mac, addr))
            .await
            .expect("send");
    });
}

fn rogue_takes_first(name: &str, config: &str) {
    let dir = TestDir::new(name);
    let mut lab = Lab::new(dir.path.clone());
    let rogue = lab.host(0x01);
    rogue.add_address("169.254.1.1/24");
    let host = lab.host(0x10);
    let mut agent = Agent::start(&lab, &host, "agent", Some(config));
    let f = agent.wait_held(HELD);
    assert_eq!(f.address.as_deref(), Some("169.254.1.2/24"));
    assert_eq!(host.addresses(), vec!["169.254.1.2/24".to_string()]);
    assert_eq!(f.conflicts.len(), 1, "{:?}", f.conflicts);
    assert_eq!(f.conflicts[0].address, "169.254.1.1");
    assert_eq!(f.conflicts[0].mac, format_mac(&rogue.mac()));
    assert_eq!(f.conflicts[0].kind, "in-use");
    assert!(f.usable_after_ms.is_some());

    // A restarted agent keeps the address it holds instead of starting over at .1.
    agent.restart();
    let f = agent.wait_held(HELD);
    assert_eq!(f.address.as_deref(), Some("169.254.1.2/24"));
    assert!(f.conflicts.is_empty(), "no new conflict: {:?}", f.conflicts);
    assert_eq!(host.addresses(), vec!["169.254.1.2/24".to_string()]);
}

#[test]
fn a_rogue_holding_the_first_address_makes_the_agent_take_the_second_fast() {
    rogue_takes_first("rogue_takes_first_fast", FAST);
}

#[test]
fn a_rogue_holding_the_first_address_makes_the_agent_take_the_second_rfc() {
    rogue_takes_first("rogue_takes_first_rfc", RFC);
}

#[test]
fn two_agents_started_together_end_on_different_addresses() {
    let runs: usize = std::env::var("ACD_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = TestDir::new("two_agents_together");
    let mut lab = Lab::new(dir.path.clone());
    let (h1, h2) = (lab.host(0x21), lab.host(0x22));
    let mut simultaneous = 0;
    for run in 1..=runs {
        for h in [&h1, &h2] {
            let _ = std::process::Command::new("ip")
                .args(["-n", &h.ns, "addr", "flush", "dev", "eth0"])
                .status();
        }
        let a1 = Agent::start(&lab, &h1, "a1", Some(FAST));
        let a2 = Agent::start(&lab, &h2, "a2", Some(FAST));
        let (f1, f2) = (a1.wait_held(HELD), a2.wait_held(HELD));
        assert_ne!(
            f1.address, f2.address,
            "run {run}: both agents hold {:?}",
            f1.address
        );
        let mut got = vec![
            f1.address.clone().unwrap_or_default(),
            f2.address.clone().unwrap_or_default(),
        ];
        got.sort();
        assert_eq!(got, vec!["169.254.1.1/24", "169.254.1.2/24"], "run {run}");
        assert_eq!(
            h1.addresses().len() + h2.addresses().len(),
            2,
            "run {run}: one address each in the kernel"
        );
        if f1
            .conflicts
            .iter()
            .chain(&f2.conflicts)
            .any(|c| c.kind == "simultaneous-probe")
        {
            simultaneous += 1;
        }
    }
    eprintln!("{runs} simultaneous starts: {runs} on distinct addresses; {simultaneous} resolved a simultaneous probe");
}

#[test]
fn a_held_address_is_defended_once_and_lost_on_a_second_conflict_within_10_s() {
    let dir = TestDir::new("defend_once");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0x30);
    let rogue = lab.host(0x31);
    let agent = Agent::start(&lab, &host, "agent", Some(FAST));
    let f = agent.wait_held(HELD);
    assert_eq!(f.address.as_deref(), Some("169.254.1.1/24"));

    // First claim by the rogue: the agent answers with an announcement of its own, keeps it.
    let index = ifindex(&rogue);
    let agent_mac = host.mac();
    let rogue_mac = rogue.mac();
    let defended = rogue.block_on(async move {
        let sock = ArpSocket::open(index).expect("arp socket");
        sock.send(&ArpFrame::announcement(rogue_mac, ip(1)))
            .await
            .expect("send");
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let f = sock.recv().await.expect("recv");
                if f.sender_mac == agent_mac && f.sender_ip == ip(1) {
                    return f;
                }
            }
        })
        .await
    });
    assert!(
        defended.is_ok(),
        "the agent did not defend its address with an announcement"
    );
    let f = wait::until(
        "the defence to be recorded",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            let f = agent.factory()?;
            if f.conflicts.iter().any(|c| c.kind == "defended") {
                Ok(f)
            } else {
                Err(format!("{:?}", f.conflicts))
            }
        },
    );
    assert_eq!(
        f.address.as_deref(),
        Some("169.254.1.1/24"),
        "one conflict is defended, not yielded"
    );
    assert_eq!(f.conflicts[0].mac, format_mac(&rogue_mac));

    // A second claim inside DEFEND_INTERVAL (10 s): the agent gives .1 up and moves on.
    announce(&rogue, ip(1));
    let f = wait::until(
        "the agent to move to .2",
        HELD,
        Duration::from_millis(50),
        || {
            let f = agent.factory()?;
            if f.address.as_deref() == Some("169.254.1.2/24") && f.state == "held" {
                Ok(f)
            } else {
                Err(format!("{} {:?}", f.state, f.address))
            }
        },
    );
    let kinds: Vec<&str> = f.conflicts.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, vec!["defended", "lost"]);
    assert_eq!(
        host.addresses(),
        vec!["169.254.1.2/24".to_string()],
        "the lost address is removed from the NIC"
    );
}

#[test]
fn a_link_flap_during_probing_restarts_probing_without_a_false_conflict() {
    let dir = TestDir::new("link_flap");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0x40);
    let sniffer = lab.host(0x41);
    sniffer.add_address("192.0.2.41/24");
    let agent = Agent::start(&lab, &host, "agent", Some(RFC));
    wait::until(
        "probing",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let f = agent.factory()?;
            (f.state == "probing")
                .then_some(())
                .ok_or(f.state.to_string())
        },
    );
    host.cable(false);
    wait::until(
        "the agent to notice the cable is out",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let f = agent.factory()?;
            (f.state == "waiting-for-link")
                .then_some(())
                .ok_or(f.state.to_string())
        },
    );

    // Plug back in while a sniffer on the switch counts what the agent sends.
    let index = ifindex(&sniffer);
    let agent_mac = host.mac();
    let sniffed = std::thread::scope(|s| {
        let sniff = s.spawn(|| {
            sniffer.block_on(async move {
                let sock = ArpSocket::open(index).expect("arp socket");
                let mut probes = 0;
                tokio::time::timeout(Duration::from_secs(20), async {
                    loop {
                        let f = sock.recv().await.expect("recv");
                        if f.sender_mac != agent_mac {
                            continue;
                        }
                        if f.seen().is_probe() && f.target_ip == ip(1) {
                            probes += 1;
                        } else if f.sender_ip == ip(1) {
                            return probes;
                        }
                    }
                })
                .await
            })
        });
        // The sniffer's socket must be open before the cable comes back.
        std::thread::sleep(Duration::from_millis(300));
        host.cable(true);
        sniff.join().expect("sniffer")
    });
    let probes = sniffed.expect("no announcement within 20 s of the link returning");
    assert!(
        probes >= 3,
        "only {probes} probes after the link returned: probing must start over"
    );
    let f = agent.wait_held(HELD);
    assert_eq!(f.address.as_deref(), Some("169.254.1.1/24"));
    assert!(f.conflicts.is_empty(), "false conflict: {:?}", f.conflicts);
}

#[test]
fn the_factory_address_is_turned_off_only_with_another_address_and_returns_after_a_reset() {
    let dir = TestDir::new("factory_disable");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0x50);
    let mut agent = Agent::start(&lab, &host, "agent", None);
    agent.wait_held(HELD);

    // With no other address, turning it off would lock the administrator out: refused.
    let a = agent
        .call(
            "PUT",
            "/network/factory-address",
            Some(br#"{"enabled": false}"#.to_vec()),
        )
        .expect("call");
    assert_eq!(a.status, 409, "{}", String::from_utf8_lossy(&a.body));
    assert!(String::from_utf8_lossy(&a.body).contains("no other IPv4 address"));
    assert_eq!(host.addresses(), vec!["169.254.1.1/24".to_string()]);

    // Bad requests change nothing.
    for body in [
        &br#"{"enabled": "no"}"#[..],
        br#"{"timing": "slow"}"#,
        br#"{"colour": 1}"#,
        b"{",
        br#"{}"#,
    ] {
        let a = agent
            .call("PUT", "/network/factory-address", Some(body.to_vec()))
            .expect("call");
        assert_eq!(
            a.status,
            400,
            "{}: {}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(&a.body)
        );
        let v: serde_json::Value = serde_json::from_slice(&a.body).expect("JSON error body");
        assert_eq!(v["error"]["code"], "bad_request");
    }
    assert!(
        !agent.data.join("config/appliance.toml").exists(),
        "nothing was written"
    );

    // Once a real address exists it can be turned off; the NIC loses it.
    host.add_address("192.0.2.50/24");
    let a = agent
        .call(
            "PUT",
            "/network/factory-address",
            Some(br#"{"enabled": false}"#.to_vec()),
        )
        .expect("call");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    wait::until(
        "the factory address to go",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            let addrs = host.addresses();
            (addrs == vec!["192.0.2.50/24".to_string()])
                .then_some(())
                .ok_or(format!("{addrs:?}"))
        },
    );
    assert_eq!(agent.factory().expect("factory").state, "disabled");

    // The setting is persistent: a restarted agent leaves it off.
    agent.restart();
    wait::until(
        "the agent to answer",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || agent.factory(),
    );
    assert_eq!(agent.factory().expect("factory").state, "disabled");
    assert_eq!(host.addresses(), vec!["192.0.2.50/24".to_string()]);

    // A factory reset wipes the configuration: the factory address comes back.
    std::fs::remove_file(agent.data.join("config/appliance.toml")).expect("remove config");
    agent.restart();
    let f = agent.wait_held(HELD);
    assert_eq!(f.address.as_deref(), Some("169.254.1.1/24"));
}

#[test]
fn a_broken_config_file_is_reported_and_factory_defaults_apply() {
    let dir = TestDir::new("broken_config");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0x60);
    let broken = "version = 1\n[factory_address]\nenabled = false\ntiming = \"slow\"\n";
    let agent = Agent::start(&lab, &host, "agent", Some(broken));
    let f = agent.wait_held(HELD);
    assert_eq!(
        f.address.as_deref(),
        Some("169.254.1.1/24"),
        "defaults apply: the appliance stays reachable"
    );
    let s = agent.status().expect("status");
    let err = s
        .config_error
        .expect("the config error is reported in status");
    assert!(
        err.contains("appliance.toml") && err.contains("slow"),
        "{err}"
    );
    let on_disk = std::fs::read_to_string(agent.data.join("config/appliance.toml")).expect("read");
    assert_eq!(
        on_disk, broken,
        "the broken file is left for the administrator to see"
    );
}
