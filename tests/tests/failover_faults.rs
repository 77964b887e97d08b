//! The failover fault matrix in namespaces, each case with real agents, a client on the
//! LAN (also the test IP) and the kernel's view of who holds the shared IP: the backup's
//! own uplink down, the test IP down with the primary healthy, the heartbeat path blocked
//! with the LAN up, a healed partition with both primary, the primary's agent killed,
//! manual role changes with and without a reachable peer, a conflict fixed by hand, a
//! replayed key proof and a version mismatch refused.

use appliance_tests::failover::*;
use appliance_tests::vm::TestDir;
use serde_json::json;
use std::time::Duration;

const ONE_SECOND: &str =
    "automatic_failover = true\nprimary_timeout_seconds = 1.0\ntest_ips = [\"192.0.2.50\"]";

fn pair(name: &str, settings: &str) -> (TestDir, Pair) {
    let dir = TestDir::new(name);
    let p = Pair::start(dir.path.clone(), settings);
    (dir, p)
}

/// Keeps watching for `secs` seconds that the roles stay as they are (a primary holding).
fn stays(p: &Pair, secs: u64) {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        assert_eq!(status(&p.a)["role"], "primary");
        assert_eq!(status(&p.b)["role"], "backup");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_backup_whose_own_uplink_is_down_does_not_take_over() {
    let (_d, p) = pair("fo_backup_cut_off", ONE_SECOND);
    established(&p);
    let watch = HolderWatch::start(&p.a.host, &p.b.host);
    p.b.host.cable(false);
    let st = until("b to report itself cut off", 10, || {
        let st = status(&p.b);
        if st["cut_off"] == true {
            Ok(st)
        } else {
            Err(st.to_string())
        }
    });
    assert_eq!(st["role"], "backup", "{st}");
    assert!(
        st["problem"]
            .as_str()
            .unwrap_or("")
            .contains("none of its test IPs"),
        "{st}"
    );
    // A whole new timeout of silence before it tries again; it never takes over.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(status(&p.b)["role"], "backup");
    assert!(!holds(&p.b.host));
    p.b.host.cable(true);
    until("b to see its primary again", 10, || {
        let st = status(&p.b);
        if st["peer"]["reachable"] == true && st["cut_off"] == false {
            Ok(())
        } else {
            Err(st.to_string())
        }
    });
    assert_eq!(status(&p.a)["role"], "primary");
    watch.never_two();
}

#[test]
fn the_test_ip_down_with_the_primary_healthy_changes_nothing() {
    let (_d, p) = pair("fo_test_ip_down", ONE_SECOND);
    established(&p);
    let watch = HolderWatch::start(&p.a.host, &p.b.host);
    p.client.cable(false);
    stays(&p, 4);
    assert!(holds(&p.a.host) && !holds(&p.b.host));
    watch.never_two();
}

#[test]
fn the_heartbeat_path_blocked_with_the_lan_up_never_makes_two_holders() {
    let (_d, p) = pair("fo_heartbeat_blocked", ONE_SECOND);
    established(&p);
    let watch = HolderWatch::start(&p.a.host, &p.b.host);
    let pinger = Pinger::start(&p.client);
    // b can no longer open connections to a's HTTPS port; ARP and ping still pass.
    nft(
        &p.b.host.ns,
        "table inet block {\n chain out {\n  type filter hook output priority 0;\n  \
         ip daddr 192.0.2.1 tcp dport 443 drop\n }\n}\n",
    );
    until("b to miss its primary", 10, || {
        let st = status(&p.b);
        if st["peer"]["reachable"] == false {
            Ok(())
        } else {
            Err(st.to_string())
        }
    });
    // b tries to take over; its probe finds the address in use and it stays backup.
    std::thread::sleep(Duration::from_secs(4));
    watch.never_two();
    assert!(holds(&p.a.host), "a keeps the shared IP");
    let worst = pinger.finish();
    assert!(
        worst < Duration::from_secs(1),
        "the client kept reaching the shared IP (worst gap {worst:?})"
    );
    assert_eq!(client_neighbour(&p.client), mac_text(&p.a.host));
    let (_, history) = login(&p.b, "GET", "/failover/history", None);
    assert!(history.contains("address_in_use"), "{history}");
}

#[test]
fn a_healed_partition_with_both_primary_ends_with_one_holder() {
    let (_d, p) = pair("fo_partition", ONE_SECOND);
    established(&p);
    let pinger = Pinger::start(&p.client);
    // Cut off from each other at layer 2 (ARP included), neither can see the other hold
    // the address: both do until the partition heals.
    partition(&p, true);
    // Each still reaches the client (the test IP): b takes over, a keeps its role.
    wait_role(&p.b, "primary", Duration::from_secs(10));
    assert_eq!(status(&p.a)["role"], "primary");
    partition(&p, false);
    // Settled by evidence: both hold the address, so the newer epoch (b's) keeps it.
    wait_role(&p.a, "backup", Duration::from_secs(10));
    until("one holder, b", 10, || {
        match (holds(&p.a.host), holds(&p.b.host)) {
            (false, true) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(status(&p.b)["role"], "primary");
    let watch = HolderWatch::start(&p.a.host, &p.b.host);
    std::thread::sleep(Duration::from_secs(2));
    let (samples, both) = watch.finish();
    assert_eq!(
        both, 0,
        "after the heal: two holders in {both} of {samples} samples"
    );
    // b announced again: the client's neighbour entry moves to b.
    until("the client's neighbour entry on b", 10, || {
        let n = client_neighbour(&p.client);
        if n == mac_text(&p.b.host) {
            Ok(())
        } else {
            Err(n)
        }
    });
    pinger.finish();
    let (_, history) = login(&p.a, "GET", "/failover/history", None);
    assert!(history.contains("\"cause\":\"conflict_lost\""), "{history}");
}

#[test]
fn the_primarys_agent_killed_changes_no_role_and_keeps_the_address() {
    let (_d, mut p) = pair(
        "fo_agent_kill",
        "automatic_failover = true\nprimary_timeout_seconds = 3.0\ntest_ips = [\"192.0.2.50\"]",
    );
    established(&p);
    let epoch = status(&p.a)["epoch"].clone();
    let watch = HolderWatch::start(&p.a.host, &p.b.host);
    let pinger = Pinger::start(&p.client);
    p.a.restart();
    p.a.wait_api();
    let st = wait_role(&p.a, "primary", Duration::from_secs(10));
    assert_eq!(st["epoch"], epoch, "no role change: {st}");
    assert_eq!(st["pending"], false);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(status(&p.b)["role"], "backup");
    let worst = pinger.finish();
    assert!(
        worst < Duration::from_millis(500),
        "the shared IP never left (worst gap {worst:?})"
    );
    watch.never_two();
    let (_, history) = login(&p.b, "GET", "/failover/history", None);
    assert!(!history.contains("automatic_failover"), "{history}");
}

#[test]
fn manual_role_changes_with_and_without_the_peer_and_a_conflict_fixed_by_hand() {
    // Automatic failover off: only the manual paths move roles.
    let (_d, p) = pair(
        "fo_manual",
        "automatic_failover = false\nprimary_timeout_seconds = 1.0",
    );
    established(&p);
    let watch = HolderWatch::start(&p.a.host, &p.b.host);
    p.b.host.cable(false);
    until("a to lose b", 10, || {
        let st = status(&p.a);
        if st["peer"]["reachable"] == false {
            Ok(())
        } else {
            Err(st.to_string())
        }
    });
    // Become Backup with the peer unreachable: refused without force, done with it.
    let (s, body) = login(&p.a, "POST", "/failover/become-backup", Some(json!({})));
    assert_eq!((s, code(&body)), (409, "peer_unreachable".into()), "{body}");
    assert_eq!(status(&p.a)["role"], "primary");
    let (s, body) = login(
        &p.a,
        "POST",
        "/failover/become-backup",
        Some(json!({"force": true})),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(json_of(&body)["role"], "backup");
    until("a to give up the shared IP", 10, || {
        if holds(&p.a.host) {
            Err("still there".into())
        } else {
            Ok(())
        }
    });
    // Both backup once b is back: status shows the conflict in the vendor's words.
    p.b.host.cable(true);
    let st = until("the conflict", 10, || {
        let st = status(&p.a);
        if st["conflict"]["kind"] == "both_backup" {
            Ok(st)
        } else {
            Err(st.to_string())
        }
    });
    assert!(
        st["conflict"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("There is a conflict in the primary and secondary site instances."),
        "{st}"
    );
    // Fix This Error: one primary by evidence (neither holds; a's epoch is newer).
    let (s, body) = login(&p.a, "POST", "/failover/fix", None);
    assert_eq!(s, 200, "{body}");
    wait_role(&p.a, "primary", Duration::from_secs(10));
    wait_role(&p.b, "backup", Duration::from_secs(10));
    until("one holder, a", 10, || {
        match (holds(&p.a.host), holds(&p.b.host)) {
            (true, false) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let (s, body) = login(&p.a, "POST", "/failover/fix", None);
    assert_eq!((s, code(&body)), (409, "no_conflict".into()), "{body}");
    watch.never_two();

    // Become Primary on a backup whose primary is down (unplanned maintenance).
    p.a.host.cable(false);
    until("b to lose a", 10, || {
        let st = status(&p.b);
        if st["peer"]["reachable"] == false {
            Ok(())
        } else {
            Err(st.to_string())
        }
    });
    assert_eq!(status(&p.b)["role"], "backup", "no automatic failover");
    let (s, body) = login(&p.b, "POST", "/failover/become-primary", None);
    assert_eq!(s, 200, "{body}");
    wait_role(&p.b, "primary", Duration::from_secs(10));
}

#[test]
fn a_replayed_proof_and_another_version_are_refused() {
    let (_d, p) = pair("fo_refused", ONE_SECOND);
    // A proof made on one connection is worthless on another.
    let (first, second) = p.b.host.block_on(async {
        let key = KEY.as_bytes();
        let connect = || async {
            let config = appliance_agent::client::peer_tls_config().expect("tls");
            let tcp = tokio::net::TcpStream::connect("127.0.0.1:443").await.expect("tcp");
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(
                    rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name"),
                    tcp,
                )
                .await
                .expect("tls")
        };
        let get = |proof: String| {
            format!(
                "GET /peer/v1/state HTTP/1.1\r\nHost: x\r\nappliance-peer-proof: {proof}\r\nConnection: close\r\n\r\n"
            )
        };
        let mut one = connect().await;
        let exporter = appliance_agent::failover::proof::exporter(one.get_ref().1).expect("exporter");
        let proof = appliance_agent::failover::wire::proof_hex(
            key,
            &exporter,
            appliance_agent::failover::proof::Side::Client,
            "GET",
            "/peer/v1/state",
        );
        let first = exchange(&mut one, &get(proof.clone())).await;
        let mut two = connect().await;
        let second = exchange(&mut two, &get(proof)).await;
        (first, second)
    });
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        first.contains("appliance-peer-proof"),
        "the answer is proved: {first}"
    );
    assert!(second.starts_with("HTTP/1.1 401"), "{second}");
    assert!(second.contains("key_mismatch"), "{second}");

    // Different software on the backup: Establish Relationship is refused.
    std::fs::create_dir_all(p.b.data.join("debug")).unwrap();
    std::fs::write(p.b.data.join("debug/version"), "9.9.9+other").unwrap();
    p.b.host.cable(true);
    let mut b = p.b;
    b.restart();
    b.wait_api();
    let p = Pair { b, ..p };
    let (s, body) = p.establish();
    assert_eq!((s, code(&body)), (409, "version_mismatch".into()), "{body}");
    assert!(body.contains("9.9.9+other"), "{body}");
    assert_eq!(status(&p.a)["role"], "none");
    assert_eq!(status(&p.b)["role"], "none");
}

async fn exchange(
    s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    request: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The IPv6 address flags of `cidr` on `host`'s eth0 (`ip -6 addr` words after it), or
/// `None` when it is not there.
fn v6_flags(host: &appliance_tests::lab::Host, cidr: &str) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-n", &host.ns, "-6", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == cidr))
        .map(str::to_string)
}

#[test]
fn an_ipv6_shared_ip_is_probed_by_the_agent_and_added_without_the_kernels_dad() {
    const V6: &str = "2001:db8::100/64";
    let (_d, p) = pair("fo_ipv6", ONE_SECOND);
    for (agent, own) in [(&p.a, "2001:db8::1/64"), (&p.b, "2001:db8::2/64")] {
        for (address, enabled) in [(own, true), (V6, false)] {
            let a = agent
                .call(
                    "POST",
                    "/network/interfaces/eth0/addresses",
                    Some(
                        json!({ "address": address, "enabled": enabled })
                            .to_string()
                            .into_bytes(),
                    ),
                )
                .expect("add");
            assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        }
        let (s, body) = login(
            agent,
            "PUT",
            "/failover/shared-ips",
            Some(json!({"addresses": [SHARED, "2001:db8::100"]})),
        );
        assert_eq!(s, 200, "{body}");
    }
    established(&p);
    let on_a = until("the IPv6 shared IP on a", 10, || {
        v6_flags(&p.a.host, V6).ok_or_else(|| "absent".to_string())
    });
    assert!(
        on_a.contains("nodad") && !on_a.contains("tentative"),
        "{on_a}"
    );
    assert!(v6_flags(&p.b.host, V6).is_none());
    p.a.host.cable(false);
    let mut a = p.a;
    a.kill();
    let p = Pair { a, ..p };
    wait_role(&p.b, "primary", Duration::from_secs(10));
    let on_b = until("the IPv6 shared IP on b", 10, || {
        v6_flags(&p.b.host, V6).ok_or_else(|| "absent".to_string())
    });
    assert!(
        on_b.contains("nodad") && !on_b.contains("tentative"),
        "usable at once: {on_b}"
    );
}

#[test]
fn both_backup_does_not_last_with_automatic_failover_on() {
    let (_d, p) = pair("fo_both_backup", ONE_SECOND);
    established(&p);
    let watch = HolderWatch::start(&p.a.host, &p.b.host);
    // b cut off (it reaches no test IP: it does not take over); a steps down by force.
    p.b.host.cable(false);
    until("a to lose b", 10, || {
        match status(&p.a)["peer"]["reachable"].as_bool() {
            Some(false) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let (s, body) = login(
        &p.a,
        "POST",
        "/failover/become-backup",
        Some(json!({"force": true})),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(status(&p.b)["role"], "backup");
    // Both backup now; b back on the network: settled without anyone pressing Fix (b's
    // takeover, or the both-backup rule): one primary, one holder.
    p.b.host.cable(true);
    until("one primary", 20, || {
        let roles = (status(&p.a)["role"].clone(), status(&p.b)["role"].clone());
        match (roles.0.as_str(), roles.1.as_str()) {
            (Some("primary"), Some("backup")) | (Some("backup"), Some("primary")) => Ok(()),
            _ => Err(format!("{roles:?}")),
        }
    });
    until("one holder", 10, || {
        match (holds(&p.a.host), holds(&p.b.host)) {
            (true, false) | (false, true) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    watch.never_two();
}
