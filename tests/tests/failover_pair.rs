//! Two real agents as a failover pair in namespaces, with a client pinging the shared IP
//! every 10 ms: establish (refused with a wrong key, then done), the shared IP on the
//! primary only, the primary hard-killed (cable out and SIGKILL) and the backup taking
//! over, the old primary coming back and staying backup, a planned swap back, history,
//! and breaking the relationship. Two holders of the shared IP are never seen.

use appliance_tests::failover::*;
use appliance_tests::vm::TestDir;
use serde_json::json;
use std::time::Duration;

const SETTINGS: &str =
    "automatic_failover = true\nprimary_timeout_seconds = 1.0\ntest_ips = [\"192.0.2.50\"]";

fn mac_of(host: &appliance_tests::lab::Host) -> String {
    host.mac()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn a_pair_establishes_fails_over_and_swaps_back() {
    let dir = TestDir::new("failover_pair");
    let mut p = Pair::start(dir.path.clone(), SETTINGS);

    // A different key on the backup: refused, nothing changes on either side.
    let (s, body) = login(
        &p.b,
        "PUT",
        "/security/inter-appliance-key",
        Some(json!({"key": "another key, also long enough"})),
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = p.establish();
    assert_eq!((s, code(&body)), (409, "key_mismatch".into()), "{body}");
    assert_eq!(status(&p.a)["role"], "none");
    assert_eq!(status(&p.b)["role"], "none");
    let (s, body) = login(
        &p.b,
        "PUT",
        "/security/inter-appliance-key",
        Some(json!({ "key": KEY })),
    );
    assert_eq!(s, 200, "{body}");

    // Established: a primary holding the shared IP, b backup without it.
    let (s, body) = p.establish();
    assert_eq!(s, 200, "{body}");
    // Each role change takes max(own, peer's) + 1: the backup recorded its side first.
    let st = wait_role(&p.a, "primary", Duration::from_secs(10));
    assert_eq!(st["epoch"], 2, "{st}");
    assert_eq!(
        wait_role(&p.b, "backup", Duration::from_secs(10))["epoch"],
        1
    );
    appliance_tests::wait::until(
        "the shared IP on a only",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || match (holds(&p.a.host), holds(&p.b.host)) {
            (true, false) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let (s, body) = p.establish();
    assert_eq!(
        (s, code(&body)),
        (409, "relationship_exists".into()),
        "{body}"
    );
    appliance_tests::wait::until(
        "b to see its primary",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let st = status(&p.b);
            if st["peer"]["reachable"] == true && st["peer"]["state"]["role"] == "primary" {
                Ok(())
            } else {
                Err(st.to_string())
            }
        },
    );

    // b's alert e-mail goes to a relay in its host. The settings are the site's: made on
    // the primary (the backup's site is read only) and pulled by the backup.
    let sink = appliance_tests::smtp::Sink::start(&p.b.host.ns, "127.0.0.1".parse().unwrap());
    let (s, body) = login(
        &p.a,
        "PUT",
        "/email",
        Some(
            json!({"enabled": true, "smtp_host": "127.0.0.1", "smtp_port": sink.addr().port(),
                    "security": "none", "from": "fw-b@example.net", "to": ["noc@example.net"]}),
        ),
    );
    assert_eq!(s, 200, "{body}");
    let synced = appliance_tests::sync::sync_now(&p.b);
    assert_eq!(synced["result"], "success", "{synced}");

    let watch = HolderWatch::start(&p.a.host, &p.b.host);
    let pinger = Pinger::start(&p.client);
    std::thread::sleep(Duration::from_millis(300));

    // The primary dies hard: cable out, agent killed. b takes over.
    p.a.host.cable(false);
    p.a.kill();
    let st = wait_role(&p.b, "primary", Duration::from_secs(10));
    assert_eq!(st["epoch"], 3, "newer than the old primary's: {st}");
    appliance_tests::wait::until(
        "the client to reach the shared IP on b",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let n = client_neighbour(&p.client);
            if n == mac_of(&p.b.host) {
                Ok(())
            } else {
                Err(format!("neighbour entry {n:?}"))
            }
        },
    );
    let outage = pinger.finish();
    eprintln!(
        "client-observed outage at a 1 s timeout: {} ms",
        outage.as_millis()
    );

    // The old primary comes back (rebooted with its link still out, then the link): it
    // starts pending, holds nothing, sees b's newer epoch and becomes backup.
    // A reboot leaves no address behind.
    let out = std::process::Command::new("ip")
        .args(["-n", &p.a.host.ns, "addr", "flush", "dev", "eth0"])
        .output()
        .expect("ip addr flush");
    assert!(out.status.success());
    p.a.restart();
    p.a.wait_api();
    assert_eq!(status(&p.a)["pending"], true);
    p.a.host.cable(true);
    wait_role(&p.a, "backup", Duration::from_secs(15));
    assert!(
        holds(&p.b.host) && !holds(&p.a.host),
        "b keeps the shared IP"
    );

    // A planned swap back, from a (the backup): b steps down first, then a takes over.
    let (s, body) = login(&p.a, "POST", "/failover/become-primary", Some(json!({})));
    assert_eq!(s, 200, "{body}");
    assert_eq!(json_of(&body)["role"], "primary", "{body}");
    wait_role(&p.a, "primary", Duration::from_secs(10));
    wait_role(&p.b, "backup", Duration::from_secs(10));
    watch.never_two();

    // Become Backup on a backup is refused with a stable code.
    let (s, body) = login(&p.b, "POST", "/failover/become-backup", None);
    assert_eq!((s, code(&body)), (409, "wrong_role".into()), "{body}");

    // b's history: the automatic failover and the swap, with causes and epochs.
    let (s, body) = login(&p.b, "GET", "/failover/history", None);
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("\"cause\":\"automatic_failover\""), "{body}");
    assert!(body.contains("\"cause\":\"peer_asked\""), "{body}");
    assert!(body.contains("\"event\":\"peer_lost\""), "{body}");

    // Broken from the backup: both none, the shared IP stays where it is.
    let (s, body) = login(&p.b, "DELETE", "/failover/relationship", None);
    assert_eq!(s, 200, "{body}");
    assert_eq!(json_of(&body)["role"], "none");
    appliance_tests::wait::until(
        "a to learn the relationship is broken",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || match status(&p.a)["role"].as_str() {
            Some("none") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(holds(&p.a.host) && !holds(&p.b.host), "left as they were");
}
