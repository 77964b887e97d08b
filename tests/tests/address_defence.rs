//! Static addresses after they are added: announced to the segment (gratuitous ARP in
//! request and reply form, an unsolicited IPv6 neighbour advertisement once DAD is done)
//! and defended when another host claims them (RFC 5227 §2.4). Real agents in network
//! namespaces on one bridge; what the agent sends is captured from a second host.

use appliance_agent::net::arp::{format_mac, ArpFrame, ArpSocket};
use appliance_tests::capture::{Capture, Seen};
use appliance_tests::lab::{Agent, Host, Lab};
use appliance_tests::vm::TestDir;
use appliance_tests::wait;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::Duration;

const FAST: &str = "version = 1\n[factory_address]\ntiming = \"fast\"\n";
const HELD: Duration = Duration::from_secs(30);
const V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

fn call(agent: &Agent, method: &str, path: &str, body: Option<Value>) -> Value {
    let a = agent
        .call(method, path, body.map(|b| b.to_string().into_bytes()))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert_eq!(
        a.status,
        200,
        "{method} {path}: {}",
        String::from_utf8_lossy(&a.body)
    );
    serde_json::from_slice(&a.body).expect("JSON")
}

fn add_address(agent: &Agent, address: &str) -> Value {
    call(
        agent,
        "POST",
        "/network/interfaces/eth0/addresses",
        Some(json!({ "address": address })),
    )
}

fn ifindex(host: &Host) -> u32 {
    let out = Command::new("ip")
        .args(["netns", "exec", &host.ns])
        .args(["cat", "/sys/class/net/eth0/ifindex"])
        .output()
        .expect("read ifindex");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("ifindex")
}

/// The gratuitous ARP frames from `mac` for `addr`: (request form, reply form) seen.
fn gratuitous(seen: &[Seen], mac: [u8; 6], addr: Ipv4Addr) -> (bool, bool) {
    let ours = |f: &&ArpFrame| f.sender_mac == mac && f.sender_ip == addr && f.target_ip == addr;
    let frames: Vec<&ArpFrame> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Arp(f) => Some(f),
            _ => None,
        })
        .filter(ours)
        .collect();
    (
        frames.iter().any(|f| f.request && f.target_mac == [0; 6]),
        frames
            .iter()
            .any(|f| !f.request && f.target_mac == [0xff; 6]),
    )
}

#[test]
fn added_addresses_are_announced_by_gratuitous_arp_in_both_forms_and_by_neighbour_advertisement() {
    let dir = TestDir::new("announce_static");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0x80);
    let peer = lab.host(0x81);
    let agent = Agent::start(&lab, &host, "agent", Some(FAST));
    agent.wait_held(HELD);
    let mac = host.mac();
    let v6: Ipv6Addr = "2001:db8::10".parse().unwrap();

    let capture = Capture::open(&peer.ns);
    add_address(&agent, "192.0.2.10/24");
    add_address(&agent, "2001:db8::10/64");
    let seen = capture.until(Duration::from_secs(15), |seen| {
        gratuitous(seen, mac, V4) == (true, true)
            && seen
                .iter()
                .any(|s| matches!(s, Seen::Advertisement(a) if a.target == v6))
    });
    assert_eq!(
        gratuitous(&seen, mac, V4),
        (true, true),
        "gratuitous ARP as a request (target MAC zero) and as a reply (to broadcast): {seen:?}"
    );
    let na = seen
        .iter()
        .find_map(|s| match s {
            Seen::Advertisement(a) if a.target == v6 => Some(a.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no neighbour advertisement for {v6}: {seen:?}"));
    assert_eq!(na.source_mac, mac);
    assert_eq!(na.destination, "ff02::1".parse::<Ipv6Addr>().unwrap());
    assert_eq!(na.hop_limit, 255, "RFC 4861 drops anything else");
    assert!(na.override_flag, "unsolicited advertisements override");
    assert_eq!(
        na.link_layer,
        Some(mac),
        "with the target link-layer address"
    );
    // The address was no longer tentative when advertised.
    let out = Command::new("ip")
        .args(["-n", &host.ns, "-6", "addr", "show", "dev", "eth0"])
        .output()
        .expect("ip");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("2001:db8::10/64"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(!line.contains("tentative"), "{line}");
}

#[test]
fn a_static_address_another_host_claims_is_defended_kept_and_reported() {
    let dir = TestDir::new("defend_static");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0x82);
    let rogue = lab.host(0x83);
    let agent = Agent::start(&lab, &host, "agent", Some(FAST));
    agent.wait_held(HELD);
    add_address(&agent, "192.0.2.10/24");
    // The agent's own announcements (2 s apart) are over before the rogue claims.
    std::thread::sleep(Duration::from_millis(2500));

    let (agent_mac, rogue_mac, index) = (host.mac(), rogue.mac(), ifindex(&rogue));
    // Claims the address as a rogue would, and waits for an announcement of the agent's.
    let claim = |wait: Duration| {
        rogue.block_on(async move {
            let sock = ArpSocket::open(index).expect("arp socket");
            sock.send(&ArpFrame::announcement(rogue_mac, V4))
                .await
                .expect("send");
            tokio::time::timeout(wait, async {
                loop {
                    let f = sock.recv().await.expect("recv");
                    if f.sender_mac == agent_mac && f.sender_ip == V4 && f.target_ip == V4 {
                        return f;
                    }
                }
            })
            .await
            .ok()
        })
    };
    let answer = claim(Duration::from_secs(5));
    assert!(
        answer.is_some(),
        "the agent did not defend 192.0.2.10 with an announcement within 5 s"
    );
    let status = wait::until(
        "the defence to be recorded",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            let v = call(&agent, "GET", "/network/status", None);
            let recorded = v["conflict_history"].as_array().is_some_and(|h| {
                h.iter().any(|c| {
                    c["address"] == "192.0.2.10"
                        && c["kind"] == "defended"
                        && c["mac"] == format_mac(&rogue_mac).as_str()
                        && c["nic"] == "eth0"
                })
            });
            if recorded {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        },
    );
    assert_eq!(status["report"]["in_sync"], true, "{status}");

    // A second claim within DEFEND_INTERVAL (10 s) is not answered (rate limited), and
    // the address stays: a static address is never given up.
    assert!(
        claim(Duration::from_secs(2)).is_none(),
        "answered twice within 10 s"
    );
    assert!(
        host.addresses().contains(&"192.0.2.10/24".to_string()),
        "{:?}",
        host.addresses()
    );
    let v = call(&agent, "GET", "/network/status", None);
    let defended = v["conflict_history"]
        .as_array()
        .map(|h| h.iter().filter(|c| c["kind"] == "defended").count())
        .unwrap_or(0);
    assert_eq!(defended, 1, "only answered claims are recorded: {v}");
}
