//! The failover pair as two QEMU VMs on one bridge, with the workstation (169.254.1.4, and
//! 192.0.2.50 for the shared IP's subnet) as client and test IP: established over the
//! API, the primary's power cut (QMP `quit`) and the backup answering HTTPS on the shared
//! IP, the old primary booting again and staying backup, the new primary's cable pulled
//! (QMP `set_link`) and a takeover, the cable back and one holder. Timeouts are 3 s.
//! Data sync: a file put on the primary is on the backup after Sync Now, and the backup
//! serves it from the shared IP once it has taken over.

use appliance_tests::api;
use appliance_tests::netns::Switch;
use appliance_tests::vm::{TestDir, Vm};
use serde_json::{json, Value};
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(150);
const KEY: &str = "the VM pair's pre-shared key";
const SHARED: &str = "192.0.2.100";

/// A call to `/login/api/v1` (or any path with `raw_path`) on `host` as admin.
fn login(sw: &Switch, host: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let path = format!("/login/api/v1{path}");
    let body = body.map(|b| b.to_string().into_bytes());
    let mut token = api::token(&sw.name, host).expect("login");
    for _ in 0..2 {
        let a = api::at_path(
            &sw.name,
            host,
            method,
            &path,
            body.clone(),
            Some(token.clone()),
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("{method} {path} on {host}: {e}"));
        if a.status == 401 {
            token = api::login(&sw.name, host).expect("login");
            continue;
        }
        let v = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        return (a.status, v);
    }
    panic!("{method} {path} on {host}: not logged in");
}

fn ok(sw: &Switch, host: &str, method: &str, path: &str, body: Value) {
    let (s, v) = login(sw, host, method, path, Some(body));
    assert_eq!(s, 200, "{method} {path} on {host}: {v}");
}

/// Sets one appliance up for the pair: its own address, the shared IP, the key, settings.
fn prepare(sw: &Switch, host: &str, own: &str, shared_enabled: bool) {
    for (address, enabled) in [(own, true), (SHARED, shared_enabled)] {
        api::ok(
            &sw.name,
            host,
            "POST",
            "/network/interfaces/eth0/addresses",
            Some(
                json!({"address": format!("{address}/24"), "enabled": enabled})
                    .to_string()
                    .into_bytes(),
            ),
        );
    }
    ok(
        sw,
        host,
        "PUT",
        "/security/inter-appliance-key",
        json!({ "key": KEY }),
    );
    ok(
        sw,
        host,
        "PUT",
        "/failover/settings",
        json!({"automatic_failover": true, "primary_timeout_seconds": 3, "test_ips": ["169.254.1.4"], "first_sync_delay_seconds": 3600}),
    );
    ok(
        sw,
        host,
        "PUT",
        "/failover/shared-ips",
        json!({ "addresses": [SHARED] }),
    );
}

fn failover_status(sw: &Switch, host: &str) -> Result<Value, String> {
    let token = api::token(&sw.name, host)?;
    let a = api::at_path(
        &sw.name,
        host,
        "GET",
        "/login/api/v1/failover/status",
        None,
        Some(token),
        Duration::from_secs(3),
    )?;
    if a.status == 401 {
        api::login(&sw.name, host)?;
        return Err("logged in again".into());
    }
    serde_json::from_slice(&a.body).map_err(|e| e.to_string())
}

fn wait_role(sw: &Switch, host: &str, role: &str, timeout: Duration) {
    appliance_tests::wait::until(
        &format!("{host} to be {role}"),
        timeout,
        Duration::from_millis(250),
        || {
            let st = failover_status(sw, host)?;
            let holds = st["enabled_shared_ips"] == json!([SHARED]);
            if st["role"] == role && (role != "primary" || holds) {
                Ok(())
            } else {
                Err(st.to_string())
            }
        },
    );
}

/// A file of the site's file store on `host`: status and bytes.
fn file_at(
    sw: &Switch,
    host: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, Vec<u8>) {
    let token = api::token(&sw.name, host).expect("login");
    let a = api::at_path(
        &sw.name,
        host,
        method,
        &format!("/login/api/v1/files/{path}"),
        body,
        Some(token),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{method} {path} on {host}: {e}"));
    (a.status, a.body.to_vec())
}

/// Sync Now on the backup at `host`, until its history shows the result.
fn sync_now(sw: &Switch, host: &str) -> Value {
    let (s, v) = login(sw, host, "POST", "/failover/sync", None);
    assert_eq!(s, 202, "{v}");
    appliance_tests::wait::until(
        "the sync to finish",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || {
            let (_, v) = login(sw, host, "GET", "/failover/sync/history", None);
            match v["entries"].as_array().and_then(|e| e.first()) {
                Some(e) => Ok(e.clone()),
                None => Err(v.to_string()),
            }
        },
    )
}

/// The appliance answering HTTPS on the shared IP, by its failover status there.
fn shared_answers_as(sw: &Switch, role: &str) -> Result<String, String> {
    let st = failover_status(sw, SHARED)?;
    if st["role"] == role {
        Ok(st["appliance_id"].as_str().unwrap_or("").to_string())
    } else {
        Err(st.to_string())
    }
}

#[test]
fn a_vm_pair_fails_over_on_power_cut_and_link_cut() {
    let dir = TestDir::new("failover_vm");
    let sw = Switch::new(2);
    let ip = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(["-n", &sw.name])
            .args(args)
            .output()
            .expect("ip");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(&["addr", "add", "192.0.2.50/24", "dev", "br0"]);
    let mut a = Vm::new(&dir, &sw, 1, "");
    let mut b = Vm::new(&dir, &sw, 2, "");
    // One after the other, so that a is on .1 and b on .2.
    a.start();
    api::wait_status(&sw.name, "169.254.1.1", BOOT);
    b.start();
    api::wait_status(&sw.name, "169.254.1.2", BOOT);
    prepare(&sw, "169.254.1.1", "192.0.2.1", true);
    prepare(&sw, "169.254.1.2", "192.0.2.2", false);

    let (s, v) = login(
        &sw,
        "192.0.2.1",
        "POST",
        "/failover/relationship",
        Some(json!({"backup": {"host": "192.0.2.2"}, "reverse": {"host": "192.0.2.1"}})),
    );
    assert_eq!(s, 200, "{v}");
    wait_role(&sw, "192.0.2.1", "primary", Duration::from_secs(30));
    wait_role(&sw, "192.0.2.2", "backup", Duration::from_secs(30));
    let id_a = appliance_tests::wait::until(
        "a on the shared IP",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || shared_answers_as(&sw, "primary"),
    );

    // A file put on the primary is on the backup after Sync Now.
    let report: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (s, body) = file_at(
        &sw,
        "192.0.2.1",
        "PUT",
        "reports/day1.bin",
        Some(report.clone()),
    );
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&body));
    let synced = sync_now(&sw, "192.0.2.2");
    assert_eq!(synced["result"], "success", "{synced}");
    assert_eq!(
        file_at(&sw, "192.0.2.2", "GET", "reports/day1.bin", None),
        (200, report.clone())
    );

    // The primary's power is cut: b takes over and answers HTTPS on the shared IP.
    a.power_cut();
    wait_role(&sw, "192.0.2.2", "primary", Duration::from_secs(60));
    let id_b = appliance_tests::wait::until(
        "b on the shared IP",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || shared_answers_as(&sw, "primary"),
    );
    assert_ne!(id_a, id_b, "another appliance answers on the shared IP");
    assert_eq!(
        file_at(&sw, SHARED, "GET", "reports/day1.bin", None),
        (200, report),
        "the backup that took over serves the synced file"
    );

    // The old primary boots again: pending, it sees b's newer epoch and stays backup.
    a.start();
    api::wait_status(&sw.name, "192.0.2.1", BOOT);
    wait_role(&sw, "192.0.2.1", "backup", Duration::from_secs(60));
    assert_eq!(shared_answers_as(&sw, "primary"), Ok(id_b.clone()));

    // The new primary's cable is pulled: a takes over.
    b.set_link(false);
    wait_role(&sw, "192.0.2.1", "primary", Duration::from_secs(60));
    appliance_tests::wait::until(
        "a on the shared IP again",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || {
            let id = shared_answers_as(&sw, "primary")?;
            if id == id_a {
                Ok(())
            } else {
                Err(id)
            }
        },
    );

    // The cable back: b (isolated, it gave up the address) sees a's newer epoch; one holder.
    b.set_link(true);
    wait_role(&sw, "192.0.2.2", "backup", Duration::from_secs(60));
    let st_a = failover_status(&sw, "192.0.2.1").expect("a");
    let st_b = failover_status(&sw, "192.0.2.2").expect("b");
    assert_eq!(st_a["enabled_shared_ips"], json!([SHARED]), "{st_a}");
    assert_eq!(st_b["enabled_shared_ips"], json!([]), "{st_b}");
    a.power_cut();
    b.power_cut();
}
