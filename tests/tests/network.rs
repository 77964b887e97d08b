//! Static network configuration with a real agent in a network namespace: addresses,
//! routes, DNS and host name reach the kernel; the reconciler repairs what someone
//! changes by hand; unconfirmed changes roll back; bad input and addresses in use on the
//! segment are refused with nothing changed; the support utilities work.

use appliance_tests::lab::{Agent, Host, Lab};
use appliance_tests::vm::TestDir;
use appliance_tests::wait;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

const FAST: &str = "version = 1\n[factory_address]\ntiming = \"fast\"\n";
const HELD: Duration = Duration::from_secs(30);
const SETTLED: Duration = Duration::from_secs(10);

struct Setup {
    _dir: TestDir,
    lab: Lab,
    host: Host,
    agent: Agent,
}

fn setup(name: &str, mac_last: u8) -> Setup {
    let dir = TestDir::new(name);
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(mac_last);
    let agent = Agent::start(&lab, &host, "agent", Some(FAST));
    agent.wait_held(HELD);
    Setup {
        _dir: dir,
        lab,
        host,
        agent,
    }
}

/// One API call; returns the status and the JSON body.
fn call(agent: &Agent, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let a = agent
        .call(method, path, body.map(|b| b.to_string().into_bytes()))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let v = if a.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&a.body).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&a.body)
            )
        })
    };
    (a.status, v)
}

/// A call that must answer 200.
fn ok(agent: &Agent, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, v) = call(agent, method, path, body);
    assert_eq!(status, 200, "{method} {path}: {v}");
    v
}

fn ip_out(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip_do(ns: &str, args: &[&str]) {
    ip_out(ns, args);
}

/// Every address on `eth0` (IPv4 and IPv6) as `address/prefix`.
fn kernel_addresses(host: &Host) -> Vec<String> {
    ip_out(&host.ns, &["-o", "addr", "show", "dev", "eth0"])
        .lines()
        .filter_map(|l| {
            let mut w = l
                .split_whitespace()
                .skip_while(|w| *w != "inet" && *w != "inet6");
            w.next()?;
            w.next().map(str::to_string)
        })
        .collect()
}

/// The main table's routes, IPv4 then IPv6, one `ip route` line each.
fn kernel_routes(host: &Host) -> Vec<String> {
    let mut out: Vec<String> = ip_out(&host.ns, &["route", "show"])
        .lines()
        .map(str::to_string)
        .collect();
    out.extend(
        ip_out(&host.ns, &["-6", "route", "show"])
            .lines()
            .map(str::to_string),
    );
    out
}

fn has_route(host: &Host, prefix: &str) -> bool {
    kernel_routes(host).iter().any(|r| r.starts_with(prefix))
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<(), String>) {
    wait::until(what, timeout, Duration::from_millis(50), &mut check);
}

fn wait_address(host: &Host, address: &str, present: bool) {
    wait_for(
        &format!(
            "{address} to be {} eth0",
            if present { "on" } else { "off" }
        ),
        SETTLED,
        || {
            let now = kernel_addresses(host);
            if now.iter().any(|a| a == address) == present {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        },
    );
}

fn config_file(agent: &Agent) -> String {
    std::fs::read_to_string(agent.data.join("config/appliance.toml")).unwrap_or_default()
}

/// The settings in a config file's text, without its revision counter (a rollback writes
/// the previous settings again, as a new revision).
fn settings_in(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("revision = "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn add_address(agent: &Agent, address: &str) -> Value {
    ok(
        agent,
        "POST",
        "/network/interfaces/eth0/addresses",
        Some(json!({ "address": address })),
    )
}

#[test]
fn addresses_are_added_disabled_enabled_and_removed_in_the_kernel() {
    let s = setup("net_addresses", 0x70);
    let (agent, host) = (&s.agent, &s.host);

    let v = add_address(agent, "192.0.2.10/24");
    assert_eq!(v["report"]["in_sync"], true, "{v}");
    assert_eq!(
        v["report"]["applied"][0], "added 192.0.2.10/24 to eth0",
        "{v}"
    );
    assert!(v["pending"].is_null());
    assert!(kernel_addresses(host).contains(&"192.0.2.10/24".to_string()));
    add_address(agent, "2001:db8::10/64");
    wait_address(host, "2001:db8::10/64", true);

    // The inventory: hardware facts, and configured beside present.
    let nics = ok(agent, "GET", "/network/interfaces", None);
    let eth0 = nics
        .as_array()
        .expect("a list")
        .iter()
        .find(|n| n["name"] == "eth0")
        .expect("eth0 listed")
        .clone();
    assert_eq!(eth0["mac"], "52:54:00:b0:00:70");
    assert_eq!(eth0["driver"], "veth");
    assert_eq!(eth0["mtu"], 1500);
    assert_eq!(eth0["carrier"], true);
    assert_eq!(eth0["managed"], true);
    let origin = |a: &str| {
        eth0["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["address"] == a)
            .map(|x| (x["origin"].clone(), x["present"].clone()))
    };
    assert_eq!(
        origin("192.0.2.10/24"),
        Some((json!("config"), json!(true)))
    );
    assert_eq!(
        origin("169.254.1.1/24"),
        Some((json!("factory"), json!(true)))
    );
    assert!(nics
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["name"] == "lo" && n["kind"] == "loopback"));
    let one = ok(agent, "GET", "/network/interfaces/eth0", None);
    assert_eq!(one["name"], "eth0");
    let (status, v) = call(agent, "GET", "/network/interfaces/eth9", None);
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (400, json!("unknown_nic")),
        "{v}"
    );

    // Disabled: kept in the configuration, gone from the NIC.
    let v = ok(
        agent,
        "PATCH",
        "/network/interfaces/eth0/addresses/192.0.2.10",
        Some(json!({ "enabled": false })),
    );
    assert_eq!(
        v["config"]["interfaces"][0]["addresses"][0]["enabled"],
        false
    );
    wait_address(host, "192.0.2.10/24", false);
    let eth0 = ok(agent, "GET", "/network/interfaces/eth0", None);
    let a = eth0["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["address"] == "192.0.2.10/24")
        .expect("the disabled address is listed")
        .clone();
    assert_eq!(
        (
            a["configured"].clone(),
            a["present"].clone(),
            a["enabled"].clone()
        ),
        (json!(true), json!(false), json!(false))
    );

    ok(
        agent,
        "PATCH",
        "/network/interfaces/eth0/addresses/192.0.2.10",
        Some(json!({ "enabled": true })),
    );
    wait_address(host, "192.0.2.10/24", true);
    ok(
        agent,
        "DELETE",
        "/network/interfaces/eth0/addresses/2001:db8::10",
        None,
    );
    wait_address(host, "2001:db8::10/64", false);

    // The factory address was never touched, and the configuration is on disk.
    assert!(kernel_addresses(host).contains(&"169.254.1.1/24".to_string()));
    let text = config_file(agent);
    assert!(text.starts_with("version = 2"), "{text}");
    assert!(
        text.contains("192.0.2.10/24") && !text.contains("2001:db8::10"),
        "{text}"
    );

    // A restarted agent keeps what is configured.
    let mut agent = s.agent;
    agent.restart();
    agent.wait_held(HELD);
    let status = ok(&agent, "GET", "/network/status", None);
    assert_eq!(status["report"]["in_sync"], true, "{status}");
    let addrs = kernel_addresses(host);
    assert!(addrs.contains(&"192.0.2.10/24".to_string()), "{addrs:?}");
}

#[test]
fn routes_and_gateways_are_installed_and_removed() {
    let s = setup("net_routes", 0x71);
    let (agent, host) = (&s.agent, &s.host);
    let cfg = json!({
        "interfaces": [{"name": "eth0", "addresses": [
            {"address": "192.0.2.10/24"}, {"address": "2001:db8::10/64"}]}],
        "gateways": {"ipv4": "192.0.2.1", "ipv6": "2001:db8::1"},
        "routes": [{"destination": "198.51.100.0/24", "gateway": "192.0.2.254"},
                   {"destination": "2001:db8:99::/48", "gateway": "2001:db8::fe"}]
    });
    let v = ok(agent, "PUT", "/network/config", Some(cfg.clone()));
    assert_eq!(v["report"]["in_sync"], true, "{v}");
    let routes = kernel_routes(host);
    for want in [
        "default via 192.0.2.1 dev eth0 proto 200",
        "198.51.100.0/24 via 192.0.2.254 dev eth0 proto 200",
        "default via 2001:db8::1 dev eth0 proto 200",
        "2001:db8:99::/48 via 2001:db8::fe dev eth0 proto 200",
    ] {
        assert!(
            routes.iter().any(|r| r.starts_with(want)),
            "{want:?} missing from {routes:#?}"
        );
    }
    let got = ok(agent, "GET", "/network/config", None);
    assert_eq!(got, v["config"], "GET answers what the change put in force");
    assert_eq!(got["routes"], cfg["routes"]);
    assert_eq!(got["gateways"], cfg["gateways"]);
    assert_eq!(
        got["interfaces"][0]["addresses"][1]["enabled"], true,
        "enabled by default"
    );
    let view = ok(agent, "GET", "/network/routes", None);
    let managed: Vec<&Value> = view["kernel"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["managed"] == true)
        .collect();
    assert_eq!(managed.len(), 4, "{view}");
    assert_eq!(view["gateways"]["ipv4"], "192.0.2.1");

    ok(agent, "DELETE", "/network/routes/198.51.100.0/24", None);
    assert!(!has_route(host, "198.51.100.0/24"));
    ok(agent, "DELETE", "/network/routes/2001:db8:99::/48", None);
    assert!(!has_route(host, "2001:db8:99::/48"));
    ok(agent, "DELETE", "/network/gateways/ipv4", None);
    assert!(!has_route(host, "default via 192.0.2.1"));
    assert!(has_route(host, "default via 2001:db8::1"));
    ok(
        agent,
        "PUT",
        "/network/gateways/ipv4",
        Some(json!({"gateway": "192.0.2.2"})),
    );
    assert!(has_route(host, "default via 192.0.2.2 dev eth0 proto 200"));
    ok(agent, "DELETE", "/network/gateways/ipv6", None);
    assert!(!has_route(host, "default via 2001:db8::1"));
}

#[test]
fn the_reconciler_repairs_what_someone_changes_by_hand() {
    let s = setup("net_repair", 0x72);
    let (agent, host) = (&s.agent, &s.host);
    ok(
        agent,
        "PUT",
        "/network/config",
        Some(json!({
            "interfaces": [{"name": "eth0", "addresses": [{"address": "192.0.2.10/24"}]}],
            "gateways": {"ipv4": "192.0.2.1"}
        })),
    );
    let ns = host.ns.as_str();

    let t = Instant::now();
    ip_do(ns, &["addr", "del", "192.0.2.10/24", "dev", "eth0"]);
    wait_address(host, "192.0.2.10/24", true);
    eprintln!("a deleted address was back after {:?}", t.elapsed());
    wait_for("the default route to come back", SETTLED, || {
        has_route(host, "default via 192.0.2.1")
            .then_some(())
            .ok_or_else(|| format!("{:?}", kernel_routes(host)))
    });

    ip_do(ns, &["route", "del", "default"]);
    wait_for("the default route to come back", SETTLED, || {
        has_route(host, "default via 192.0.2.1 dev eth0 proto 200")
            .then_some(())
            .ok_or_else(|| format!("{:?}", kernel_routes(host)))
    });

    // An address nobody configured, on a NIC the agent manages, is removed.
    ip_do(ns, &["addr", "add", "192.0.2.99/24", "dev", "eth0"]);
    wait_address(host, "192.0.2.99/24", false);

    // A NIC someone takes down comes back up with its addresses.
    ip_do(ns, &["link", "set", "eth0", "down"]);
    wait_for("eth0 to be up again", SETTLED, || {
        let l = ip_out(ns, &["-o", "link", "show", "dev", "eth0"]);
        l.contains("state UP").then_some(()).ok_or(l)
    });
    wait_address(host, "192.0.2.10/24", true);
    wait_for("the default route to come back", SETTLED, || {
        has_route(host, "default via 192.0.2.1")
            .then_some(())
            .ok_or_else(|| format!("{:?}", kernel_routes(host)))
    });
    wait_address(host, "169.254.1.1/24", true);
    wait_for("the report to say in sync", SETTLED, || {
        let v = ok(agent, "GET", "/network/status", None);
        (v["report"]["in_sync"] == true)
            .then_some(())
            .ok_or(v.to_string())
    });
}

#[test]
fn an_unconfirmed_change_rolls_back_on_time_and_a_confirmed_one_stays() {
    let s = setup("net_rollback", 0x73);
    let (host, mut agent) = (&s.host, s.agent);
    add_address(&agent, "192.0.2.10/24");
    let before = config_file(&agent);
    let record = agent.data.join("config/network-rollback.toml");

    // Unconfirmed: the response says so, and the old configuration returns on time.
    let started = Instant::now();
    let v = ok(
        &agent,
        "POST",
        "/network/interfaces/eth0/addresses?confirm_within=3",
        Some(json!({"address": "192.0.2.11/24"})),
    );
    assert_eq!(v["pending"]["confirm_within_seconds"], 3, "{v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("unless confirmed") && msg.contains("within 3 s"),
        "{msg}"
    );
    assert!(kernel_addresses(host).contains(&"192.0.2.11/24".to_string()));
    assert!(
        record.exists(),
        "the rollback is recorded before the change"
    );
    let (status, v) = call(
        &agent,
        "POST",
        "/network/interfaces/eth0/addresses",
        Some(json!({"address": "192.0.2.12/24"})),
    );
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (409, json!("change_pending")),
        "{v}"
    );
    let pending = ok(&agent, "GET", "/network/status", None);
    assert_eq!(pending["pending"]["change"], "add 192.0.2.11/24 to eth0");
    wait_address(host, "192.0.2.11/24", false);
    let took = started.elapsed();
    // Not before the window ends; the upper bound only catches a timer that never fires
    // (it is loose so that a loaded CI machine does not fail it).
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(20),
        "rolled back after {took:?}, wanted about 3 s"
    );
    assert_eq!(settings_in(&config_file(&agent)), settings_in(&before));
    assert_ne!(
        config_file(&agent),
        before,
        "the rollback is a new revision"
    );
    assert!(!record.exists());
    assert!(ok(&agent, "GET", "/network/status", None)["pending"].is_null());
    assert!(kernel_addresses(host).contains(&"192.0.2.10/24".to_string()));

    // Confirmed in time: it stays.
    ok(
        &agent,
        "POST",
        "/network/interfaces/eth0/addresses?confirm_within=2",
        Some(json!({"address": "192.0.2.11/24"})),
    );
    let v = ok(&agent, "POST", "/network/confirm", None);
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("192.0.2.11"),
        "{v}"
    );
    assert!(!record.exists());
    std::thread::sleep(Duration::from_secs(3));
    assert!(kernel_addresses(host).contains(&"192.0.2.11/24".to_string()));
    assert!(config_file(&agent).contains("192.0.2.11/24"));
    let (status, v) = call(&agent, "POST", "/network/confirm", None);
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (409, json!("nothing_pending"))
    );

    // Undone on request.
    ok(
        &agent,
        "DELETE",
        "/network/interfaces/eth0/addresses/192.0.2.11?confirm_within=600",
        None,
    );
    wait_address(host, "192.0.2.11/24", false);
    let v = ok(&agent, "POST", "/network/rollback", None);
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("rolled back"),
        "{v}"
    );
    wait_address(host, "192.0.2.11/24", true);

    // A restart inside the window rolls back too (so does a reboot: the record is on /data).
    let before = config_file(&agent);
    ok(
        &agent,
        "POST",
        "/network/interfaces/eth0/addresses?confirm_within=600",
        Some(json!({"address": "192.0.2.12/24"})),
    );
    wait_address(host, "192.0.2.12/24", true);
    agent.restart();
    agent.wait_held(HELD);
    wait_address(host, "192.0.2.12/24", false);
    assert_eq!(settings_in(&config_file(&agent)), settings_in(&before));
    assert_ne!(
        config_file(&agent),
        before,
        "the rollback is a new revision"
    );
    assert!(!record.exists());
}

#[test]
fn every_class_of_bad_input_is_refused_and_changes_nothing() {
    let s = setup("net_bad_input", 0x74);
    let (agent, host) = (&s.agent, &s.host);
    add_address(agent, "192.0.2.10/24");
    ok(
        agent,
        "PUT",
        "/network/gateways/ipv4",
        Some(json!({"gateway": "192.0.2.1"})),
    );
    let file = config_file(agent);
    let addrs = kernel_addresses(host);
    let routes = kernel_routes(host);
    let addr_path = "/network/interfaces/eth0/addresses";
    let cases: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        // Malformed: not JSON, empty, unknown fields, wrong types.
        (
            "POST",
            addr_path,
            Some(r#"{"address": "#),
            400,
            "bad_request",
        ),
        ("POST", addr_path, None, 400, "bad_request"),
        (
            "POST",
            addr_path,
            Some(r#"{"address": "192.0.2.12/24", "colour": "red"}"#),
            400,
            "bad_request",
        ),
        (
            "POST",
            addr_path,
            Some(r#"{"address": 12}"#),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/network/config",
            Some(r#"{"interfaces": [], "vlan": 5}"#),
            400,
            "bad_request",
        ),
        // Bad address or prefix.
        (
            "POST",
            addr_path,
            Some(r#"{"address": "192.0.2.300/24"}"#),
            400,
            "bad_request",
        ),
        (
            "POST",
            addr_path,
            Some(r#"{"address": "192.0.2.12/33"}"#),
            400,
            "bad_request",
        ),
        (
            "POST",
            addr_path,
            Some(r#"{"address": "192.0.2.12"}"#),
            400,
            "bad_request",
        ),
        (
            "POST",
            addr_path,
            Some(r#"{"address": "192.0.2.0/24"}"#),
            400,
            "invalid_network_config",
        ),
        (
            "POST",
            addr_path,
            Some(r#"{"address": "224.0.0.5/24"}"#),
            400,
            "invalid_network_config",
        ),
        (
            "POST",
            addr_path,
            Some(r#"{"address": "169.254.1.7/24"}"#),
            400,
            "invalid_network_config",
        ),
        // Duplicate.
        (
            "POST",
            addr_path,
            Some(r#"{"address": "192.0.2.10/24"}"#),
            400,
            "invalid_network_config",
        ),
        // Unknown NIC.
        (
            "POST",
            "/network/interfaces/eth9/addresses",
            Some(r#"{"address": "192.0.2.12/24"}"#),
            400,
            "unknown_nic",
        ),
        (
            "POST",
            "/network/interfaces/bad%2Fname/addresses",
            Some(r#"{"address": "192.0.2.12/24"}"#),
            400,
            "bad_request",
        ),
        // Gateways and routes outside every subnet, host bits, default as a route.
        (
            "PUT",
            "/network/gateways/ipv4",
            Some(r#"{"gateway": "198.51.100.1"}"#),
            400,
            "invalid_network_config",
        ),
        (
            "PUT",
            "/network/gateways/ipv6",
            Some(r#"{"gateway": "2001:db8::1"}"#),
            400,
            "invalid_network_config",
        ),
        (
            "PUT",
            "/network/gateways/ipv6",
            Some(r#"{"gateway": "192.0.2.1"}"#),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/network/gateways/ipv5",
            Some(r#"{"gateway": "192.0.2.1"}"#),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/network/routes",
            Some(r#"{"destination": "198.51.100.0/24", "gateway": "203.0.113.1"}"#),
            400,
            "invalid_network_config",
        ),
        (
            "POST",
            "/network/routes",
            Some(r#"{"destination": "198.51.100.1/24", "gateway": "192.0.2.1"}"#),
            400,
            "invalid_network_config",
        ),
        (
            "POST",
            "/network/routes",
            Some(r#"{"destination": "0.0.0.0/0", "gateway": "192.0.2.1"}"#),
            400,
            "invalid_network_config",
        ),
        // Disabling the address the gateway depends on.
        (
            "PATCH",
            "/network/interfaces/eth0/addresses/192.0.2.10",
            Some(r#"{"enabled": false}"#),
            400,
            "invalid_network_config",
        ),
        // DNS, host name.
        (
            "PUT",
            "/network/dns",
            Some(r#"{"servers": ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]}"#),
            400,
            "invalid_network_config",
        ),
        (
            "PUT",
            "/network/dns",
            Some(r#"{"servers": ["not-an-ip"]}"#),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/network/hostname",
            Some(r#"{"hostname": "bad_name"}"#),
            400,
            "bad_request",
        ),
        // Things that are not configured.
        (
            "DELETE",
            "/network/interfaces/eth0/addresses/192.0.2.77",
            None,
            404,
            "not_configured",
        ),
        (
            "PATCH",
            "/network/interfaces/eth0/addresses/192.0.2.77",
            Some(r#"{"enabled": true}"#),
            404,
            "not_configured",
        ),
        (
            "DELETE",
            "/network/routes/203.0.113.0/24",
            None,
            404,
            "not_configured",
        ),
        (
            "DELETE",
            "/network/interfaces/eth0/addresses/not-an-ip",
            None,
            400,
            "bad_request",
        ),
        // A bad confirmation window.
        (
            "POST",
            "/network/interfaces/eth0/addresses?confirm_within=0",
            Some(r#"{"address": "192.0.2.12/24"}"#),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/network/interfaces/eth0/addresses?confirm_after=5",
            Some(r#"{"address": "192.0.2.12/24"}"#),
            400,
            "bad_request",
        ),
        // Utilities.
        (
            "POST",
            "/network/test/ping",
            Some(r#"{"host": "a b"}"#),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/network/test/tcp",
            Some(r#"{"host": "192.0.2.1", "port": 0}"#),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/network/test/dns",
            Some(r#"{"name": "192.0.2.1"}"#),
            400,
            "bad_request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let a = agent
            .call(method, path, body.map(|b| b.as_bytes().to_vec()))
            .expect("call");
        let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        assert_eq!(
            (a.status, v["error"]["code"].as_str().unwrap_or("")),
            (status, code),
            "{method} {path} {body:?}: {v}"
        );
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.len() > 10,
            "{method} {path}: a clear message, got {message:?}"
        );
    }
    assert_eq!(config_file(agent), file, "the file is unchanged");
    assert_eq!(kernel_addresses(host), addrs, "the NIC is unchanged");
    assert_eq!(kernel_routes(host), routes, "the routes are unchanged");

    // A few messages say exactly what is wrong.
    let (_, v) = call(
        agent,
        "PUT",
        "/network/gateways/ipv4",
        Some(json!({"gateway": "198.51.100.1"})),
    );
    let m = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("198.51.100.1") && m.contains("192.0.2.0/24 on eth0"),
        "{m}"
    );
    let (_, v) = call(
        agent,
        "POST",
        "/network/interfaces/eth9/addresses",
        Some(json!({"address": "192.0.2.12/24"})),
    );
    let m = v["error"]["message"].as_str().unwrap_or_default();
    assert!(m.contains("eth9") && m.contains("eth0"), "{m}");
}

#[test]
fn an_address_in_use_on_the_segment_is_refused_with_the_conflict_reported() {
    let dir = TestDir::new("net_conflict");
    let mut lab = Lab::new(dir.path.clone());
    let rogue = lab.host(0x01);
    rogue.add_address("192.0.2.77/24");
    let host = lab.host(0x75);
    let mut agent = Agent::start(&lab, &host, "agent", Some(FAST));
    agent.wait_held(HELD);
    add_address(&agent, "192.0.2.10/24");
    let file = config_file(&agent);

    let (status, v) = call(
        &agent,
        "POST",
        "/network/interfaces/eth0/addresses",
        Some(json!({"address": "192.0.2.77/24"})),
    );
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (409, json!("address_in_use")),
        "{v}"
    );
    let m = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("192.0.2.77") && m.contains("52:54:00:b0:00:01"),
        "{m}"
    );
    assert_eq!(config_file(&agent), file, "nothing was written");
    assert!(!kernel_addresses(&host).contains(&"192.0.2.77/24".to_string()));
    let st = ok(&agent, "GET", "/network/status", None);
    let history = st["conflict_history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        history
            .iter()
            .any(|c| c["address"] == "192.0.2.77" && c["mac"] == "52:54:00:b0:00:01"),
        "{st}"
    );

    // The same through a whole-configuration replacement.
    let (status, _) = call(
        &agent,
        "PUT",
        "/network/config",
        Some(json!({"interfaces": [{"name": "eth0", "addresses": [
            {"address": "192.0.2.10/24"}, {"address": "192.0.2.77/24"}]}]})),
    );
    assert_eq!(status, 409);

    // A configuration file that asks for it (edited offline): at start the address is
    // probed, not added, and the conflict is reported as a difference not closed.
    agent.kill();
    std::fs::write(
        agent.data.join("config/appliance.toml"),
        format!(
            "{FAST}[[network.interfaces]]\nname = \"eth0\"\naddresses = [\
             {{ address = \"192.0.2.10/24\" }}, {{ address = \"192.0.2.77/24\" }}]\n"
        ),
    )
    .expect("write config");
    agent.restart();
    agent.wait_held(HELD);
    let st = wait::until(
        "the conflict to be reported",
        SETTLED,
        Duration::from_millis(100),
        || {
            let v = ok(&agent, "GET", "/network/status", None);
            if v["report"]["conflicts"]
                .as_array()
                .is_some_and(|c| !c.is_empty())
            {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        },
    );
    assert_eq!(st["report"]["in_sync"], false);
    assert_eq!(
        st["report"]["conflicts"][0]["mac"], "52:54:00:b0:00:01",
        "{st}"
    );
    let reason = st["report"]["unresolved"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("in use by 52:54:00:b0:00:01"), "{st}");
    let addrs = kernel_addresses(&host);
    assert!(addrs.contains(&"192.0.2.10/24".to_string()), "{addrs:?}");
    assert!(!addrs.contains(&"192.0.2.77/24".to_string()), "{addrs:?}");
}

#[test]
fn host_name_and_dns_are_applied() {
    let s = setup("net_hostname_dns", 0x76);
    let agent = &s.agent;
    let uts_hostname = || {
        let pid = agent.pid().expect("running").to_string();
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-u", "hostname"])
            .output()
            .expect("nsenter");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let v = ok(
        agent,
        "PUT",
        "/network/hostname",
        Some(json!({"hostname": "fw-1"})),
    );
    assert_eq!(v["config"]["hostname"], "fw-1");
    assert_eq!(uts_hostname(), "fw-1");
    let h = ok(agent, "GET", "/network/hostname", None);
    assert_eq!(
        (h["hostname"].clone(), h["configured"].clone()),
        (json!("fw-1"), json!("fw-1"))
    );

    add_address(agent, "192.0.2.10/24");
    ok(
        agent,
        "PUT",
        "/network/dns",
        Some(
            json!({"servers": ["192.0.2.53", "2001:db8::53"], "search": ["example.net", "Lab.Example"]}),
        ),
    );
    let text = std::fs::read_to_string(agent.resolv_conf()).expect("resolv.conf written");
    assert!(
        text.contains(
            "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch example.net lab.example\n"
        ),
        "{text}"
    );
    assert_eq!(
        ok(agent, "GET", "/network/dns", None)["servers"][1],
        "2001:db8::53"
    );

    ok(agent, "DELETE", "/network/hostname", None);
    assert_eq!(uts_hostname(), "appliance");
    ok(agent, "PUT", "/network/dns", Some(json!({"servers": []})));
    let text = std::fs::read_to_string(agent.resolv_conf()).expect("resolv.conf");
    assert!(!text.contains("nameserver"), "{text}");
}

#[test]
fn support_utilities_reach_hosts_on_the_segment() {
    let mut s = setup("net_utilities", 0x77);
    let peer = s.lab.host(0x78);
    peer.add_address("192.0.2.20/24");
    ip_do(
        &peer.ns,
        &["addr", "add", "2001:db8::20/64", "dev", "eth0", "nodad"],
    );
    let agent = &s.agent;
    add_address(agent, "192.0.2.10/24");
    add_address(agent, "2001:db8::10/64");
    wait_for(
        "IPv6 duplicate address detection to finish",
        SETTLED,
        || {
            let out = ip_out(&s.host.ns, &["-6", "-o", "addr", "show", "dev", "eth0"]);
            (out.contains("2001:db8::10/64") && !out.contains("tentative"))
                .then_some(())
                .ok_or(out)
        },
    );

    // A TCP listener on the peer: connected; a closed port: refused.
    let listener = peer.block_on(async {
        std::net::TcpListener::bind("192.0.2.20:8080").expect("bind on the peer")
    });
    let v = ok(
        agent,
        "POST",
        "/network/test/tcp",
        Some(json!({"host": "192.0.2.20", "port": 8080})),
    );
    assert_eq!(v["connected"], true, "{v}");
    assert_eq!(v["address"], "192.0.2.20:8080");
    drop(listener);
    let v = ok(
        agent,
        "POST",
        "/network/test/tcp",
        Some(json!({"host": "192.0.2.20", "port": 8081, "timeout_ms": 2000})),
    );
    assert_eq!(v["connected"], false);
    assert!(
        v["error"].as_str().unwrap_or_default().contains("refused"),
        "{v}"
    );

    for target in ["192.0.2.20", "2001:db8::20"] {
        let v = ok(
            agent,
            "POST",
            "/network/test/ping",
            Some(json!({"host": target, "count": 2, "interval_ms": 200})),
        );
        assert_eq!(
            (v["sent"].clone(), v["received"].clone()),
            (json!(2), json!(2)),
            "{v}"
        );
        assert!(v["replies"][0]["rtt_ms"].as_f64().is_some());
    }
    let v = ok(
        agent,
        "POST",
        "/network/test/ping",
        Some(json!({"host": "192.0.2.21", "count": 1, "timeout_ms": 300})),
    );
    assert_eq!(
        (v["sent"].clone(), v["received"].clone()),
        (json!(1), json!(0)),
        "{v}"
    );

    let v = ok(
        agent,
        "POST",
        "/network/test/dns",
        Some(json!({"name": "localhost"})),
    );
    let found: Vec<String> = serde_json::from_value(v["addresses"].clone()).unwrap_or_default();
    assert!(found.iter().any(|a| a == "127.0.0.1" || a == "::1"), "{v}");
    let v = ok(
        agent,
        "POST",
        "/network/test/dns",
        Some(json!({"name": "no-such-host.invalid"})),
    );
    assert!(v["error"].is_string(), "{v}");
}

/// Runs `appliancectl` inside the agent's host, logged in as the harness is.
fn ctl(agent: &Agent, args: &[&str]) -> (bool, String, String) {
    let token = appliance_tests::api::token(&agent.host.ns, "127.0.0.1").unwrap_or_default();
    let out = Command::new("ip")
        .args(["netns", "exec", &agent.host.ns])
        .arg(appliance_tests::bin("appliancectl"))
        .args(["--insecure", "--host", "127.0.0.1"])
        .args(args)
        .env("APPLIANCE_TOKEN", token)
        .output()
        .expect("run appliancectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_verbs_drive_the_same_api() {
    let s = setup("net_cli", 0x79);
    let (agent, host) = (&s.agent, &s.host);
    let run = |args: &[&str]| {
        let (ok, out, err) = ctl(agent, args);
        assert!(ok, "appliancectl {args:?} failed: {err}{out}");
        out
    };
    let out = run(&["ip", "add", "eth0", "192.0.2.10/24"]);
    assert!(out.contains("added 192.0.2.10/24 to eth0"), "{out}");
    run(&["ip", "add", "eth0", "2001:db8::10/64", "--disabled"]);
    let out = run(&["ip", "list"]);
    assert!(
        out.contains("192.0.2.10/24") && out.contains("managed"),
        "{out}"
    );
    assert!(
        out.contains("2001:db8::10/64") && out.contains("disabled, absent"),
        "{out}"
    );
    let (_, json_out, _) = ctl(agent, &["--json", "ip", "list"]);
    let v: Value = serde_json::from_str(&json_out).expect("--json prints JSON");
    assert!(v
        .as_array()
        .is_some_and(|a| a.iter().any(|n| n["name"] == "eth0")));
    run(&["ip", "enable", "eth0", "2001:db8::10"]);
    wait_address(host, "2001:db8::10/64", true);
    run(&["ip", "disable", "eth0", "2001:db8::10/64"]);
    wait_address(host, "2001:db8::10/64", false);
    run(&["ip", "remove", "eth0", "2001:db8::10"]);

    run(&["route", "add", "default", "192.0.2.1"]);
    run(&["route", "add", "198.51.100.0/24", "192.0.2.254"]);
    let out = run(&["route", "list"]);
    assert!(out.contains("default (ipv4) via 192.0.2.1"), "{out}");
    assert!(
        out.contains("198.51.100.0/24 via 192.0.2.254 dev eth0 (agent)"),
        "{out}"
    );
    run(&["route", "remove", "198.51.100.0/24"]);
    run(&["route", "remove", "default"]);
    assert!(!has_route(host, "default via 192.0.2.1"));

    run(&["dns", "set", "192.0.2.53", "--search", "example.net"]);
    let out = run(&["dns"]);
    assert!(
        out.contains("192.0.2.53") && out.contains("example.net"),
        "{out}"
    );
    run(&["hostname", "set", "fw-2"]);
    assert!(run(&["hostname"]).starts_with("fw-2"));

    // The target is not the appliance the CLI talks to (--host): both must be kept apart.
    let out = run(&["test", "tcp", "192.0.2.10", "443"]);
    assert!(out.contains("connected to 192.0.2.10:443"), "{out}");
    let out = run(&["test", "tcp", "192.0.2.10", "444", "--timeout-ms", "1000"]);
    assert!(out.contains("no connection to 192.0.2.10:444"), "{out}");
    let out = run(&["test", "ping", "192.0.2.10", "--count", "1"]);
    assert!(out.contains("1 sent, 1 received"), "{out}");
    let out = run(&["test", "dns", "localhost"]);
    assert!(out.starts_with("localhost:"), "{out}");

    // With a confirmation window, and its confirmation.
    let out = run(&[
        "ip",
        "add",
        "eth0",
        "192.0.2.11/24",
        "--confirm-within",
        "60",
    ]);
    assert!(out.contains("unless confirmed"), "{out}");
    assert!(run(&["network"]).contains("s left to confirm"));
    run(&["network", "confirm"]);
    let (ok, _, err) = ctl(agent, &["network", "confirm"]);
    assert!(
        !ok && err.contains("no network change awaits confirmation"),
        "{err}"
    );
    // A refused change exits 1 and says why.
    let (ok, _, err) = ctl(agent, &["ip", "add", "eth9", "192.0.2.12/24"]);
    assert!(!ok && err.contains("no NIC named eth9"), "{err}");
}
