//! This appliance's own failover settings through `/login/api/v1` with a real agent in a
//! namespace: the inter-appliance key (only its fingerprint is ever shown), a partial
//! update of the backup settings, the choice of shared IPs (only addresses configured
//! here), the network API refusing to remove a selected one, a read token refused on a
//! change, and everything kept across an agent restart.

use appliance_tests::api;
use appliance_tests::lab::{Agent, Lab};
use appliance_tests::vm::TestDir;
use serde_json::{json, Value};

const LOCAL: &str = "127.0.0.1";
const KEY: &str = "a long enough pre-shared key";

fn login_call(agent: &Agent, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    login_call_as(agent, method, path, body, None)
}

fn login_call_as(
    agent: &Agent,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, String) {
    let token = match token {
        Some(t) => t.to_string(),
        None => api::token(&agent.host.ns, LOCAL).expect("login"),
    };
    agent.at(
        method,
        &format!("/login/api/v1{path}"),
        body.map(|b| b.to_string().into_bytes()),
        Some(&token),
    )
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn code(body: &str) -> String {
    json_of(body)["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn appliance(agent: &Agent, method: &str, path: &str, body: Value) -> (u16, String) {
    let a = agent
        .call(method, path, Some(body.to_string().into_bytes()))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (a.status, String::from_utf8_lossy(&a.body).into_owned())
}

/// Runs appliancectl inside the agent's host with the harness's session token.
fn ctl(agent: &Agent, args: &[&str]) -> (bool, String) {
    agent.ctl(args)
}

/// Removes 192.0.2.100 from eth0 through the network API.
fn remove_shared_address(agent: &Agent) -> (u16, String) {
    let a = agent
        .call(
            "DELETE",
            "/network/interfaces/eth0/addresses/192.0.2.100",
            None,
        )
        .expect("delete");
    (a.status, String::from_utf8_lossy(&a.body).into_owned())
}

#[test]
fn local_failover_settings_through_the_login_api() {
    let dir = TestDir::new("failover_settings");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0xb0);
    let mut agent = Agent::start(&lab, &host, "agent", None);
    agent.wait_api();

    // Fresh: role none, no key, the defaults, a warning about the key.
    let (status, body) = login_call(&agent, "GET", "/failover/status", None);
    assert_eq!(status, 200, "{body}");
    let st = json_of(&body);
    assert_eq!(st["role"], "none");
    assert_eq!(st["epoch"], 0);
    assert_eq!(st["key_fingerprint"], Value::Null);
    assert_eq!(st["settings"]["primary_timeout_seconds"], 600.0);
    let id = st["appliance_id"].as_str().expect("an id").to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert!(body.contains("no inter-appliance key"), "{body}");

    // The key: too short refused, then set; only the fingerprint comes back.
    let (status, body) = login_call(
        &agent,
        "PUT",
        "/security/inter-appliance-key",
        Some(json!({"key": "too short"})),
    );
    assert_eq!((status, code(&body)), (400, "bad_request".into()), "{body}");
    let (status, body) = login_call(
        &agent,
        "PUT",
        "/security/inter-appliance-key",
        Some(json!({ "key": KEY })),
    );
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains(KEY), "the key is never answered: {body}");
    let fingerprint = json_of(&body)["fingerprint"]
        .as_str()
        .expect("a fingerprint")
        .to_string();

    // A partial update keeps what it leaves out.
    let (status, body) = login_call(
        &agent,
        "PUT",
        "/failover/settings",
        Some(json!({"backup_operations": false, "test_ips": ["192.0.2.1"]})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = login_call(
        &agent,
        "PUT",
        "/failover/settings",
        Some(json!({"automatic_failover": true, "primary_timeout_seconds": 2.5})),
    );
    assert_eq!(status, 200, "{body}");
    let s = json_of(&body);
    assert_eq!(s["backup_operations"], false, "kept: {body}");
    assert_eq!(s["test_ips"], json!(["192.0.2.1"]), "kept: {body}");
    assert_eq!(s["automatic_failover"], true);
    assert_eq!(s["primary_timeout_seconds"], 2.5);
    let (status, body) = login_call(
        &agent,
        "PUT",
        "/failover/settings",
        Some(json!({"primary_timeout_seconds": 0.1})),
    );
    assert_eq!((status, code(&body)), (400, "bad_request".into()), "{body}");

    // Automatic failover without a shared IP: status says so.
    let (_, body) = login_call(&agent, "GET", "/failover/status", None);
    assert!(
        body.contains("automatic failover needs a shared IP"),
        "{body}"
    );
    assert_eq!(json_of(&body)["key_fingerprint"], json!(fingerprint));
    assert!(!body.contains(KEY), "status never shows the key: {body}");

    // Shared IPs: only addresses configured here.
    let (status, body) = login_call(
        &agent,
        "PUT",
        "/failover/shared-ips",
        Some(json!({"addresses": ["192.0.2.100"]})),
    );
    assert_eq!(
        (status, code(&body)),
        (400, "not_configured_here".into()),
        "{body}"
    );
    assert!(body.contains("192.0.2.100"), "names it: {body}");
    for a in ["192.0.2.10/24", "192.0.2.100/24"] {
        let (status, body) = appliance(
            &agent,
            "POST",
            "/network/interfaces/eth0/addresses",
            json!({ "address": a }),
        );
        assert_eq!(status, 200, "{a}: {body}");
    }
    let (status, body) = login_call(
        &agent,
        "PUT",
        "/failover/shared-ips",
        Some(json!({"addresses": ["192.0.2.100", "192.0.2.100"]})),
    );
    assert_eq!((status, code(&body)), (400, "bad_request".into()), "{body}");
    let (status, body) = login_call(
        &agent,
        "PUT",
        "/failover/shared-ips",
        Some(json!({"addresses": ["192.0.2.100"]})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["addresses"], json!(["192.0.2.100"]));

    // The network API may not remove it while it is selected.
    let (status, body) = remove_shared_address(&agent);
    assert_eq!(
        (status, code(&body)),
        (409, "owned_by_failover".into()),
        "{body}"
    );
    assert!(
        host.addresses()
            .iter()
            .any(|a| a.starts_with("192.0.2.100/")),
        "still there: {:?}",
        host.addresses()
    );

    // A read token reads but does not change.
    let (status, body) = appliance(
        &agent,
        "POST",
        "/system/tokens",
        json!({"name": "monitor", "scope": "read"}),
    );
    assert_eq!(status, 201, "{body}");
    let read = json_of(&body)["token"].as_str().unwrap().to_string();
    let (status, _) = login_call_as(&agent, "GET", "/failover/settings", None, Some(&read));
    assert_eq!(status, 200);
    for (path, body) in [
        ("/failover/settings", json!({"automatic_failover": false})),
        ("/failover/shared-ips", json!({"addresses": []})),
        (
            "/security/inter-appliance-key",
            json!({"key": "another long enough key"}),
        ),
    ] {
        let (status, answer) = login_call_as(&agent, "PUT", path, Some(body), Some(&read));
        assert_eq!(
            (status, code(&answer)),
            (403, "insufficient_scope".into()),
            "PUT {path}: {answer}"
        );
    }

    // Everything survives a restart of the agent.
    agent.restart();
    agent.wait_api();
    // Sessions do not outlive the agent.
    api::login(&agent.host.ns, LOCAL).expect("log in again");
    let (status, body) = login_call(&agent, "GET", "/failover/status", None);
    assert_eq!(status, 200, "{body}");
    let st = json_of(&body);
    assert_eq!(st["appliance_id"], json!(id), "the id is kept");
    assert_eq!(st["key_fingerprint"], json!(fingerprint));
    assert_eq!(st["shared_ips"], json!(["192.0.2.100"]));
    assert_eq!(st["settings"]["automatic_failover"], true);
    assert_eq!(st["settings"]["backup_operations"], false);
    assert_eq!(st["settings"]["primary_timeout_seconds"], 2.5);
    assert_eq!(st["warnings"], json!([]), "{body}");
    let file = std::fs::read_to_string(agent.data.join("config/appliance.toml")).unwrap();
    assert!(file.contains(KEY), "the key is kept in the local settings");

    // The same through appliancectl.
    let (ok, text) = ctl(&agent, &["failover", "status"]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&fingerprint) && text.contains("192.0.2.100"),
        "{text}"
    );
    assert!(!text.contains(KEY), "{text}");
    let (ok, text) = ctl(
        &agent,
        &["--json", "failover", "settings", "--primary-timeout", "3"],
    );
    assert!(ok, "{text}");
    let s = json_of(&text);
    assert_eq!(s["primary_timeout_seconds"], 3.0);
    assert_eq!(s["backup_operations"], false, "kept: {text}");
    let (ok, text) = ctl(&agent, &["failover", "shared-ips", "set", "198.51.100.9"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("answered 400: 198.51.100.9 is not an address configured"),
        "{text}"
    );
    let key_file = dir.path.join("key");
    std::fs::write(&key_file, "another key, long enough\n").unwrap();
    let (ok, text) = ctl(
        &agent,
        &[
            "failover",
            "key",
            "set",
            "--key-file",
            key_file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("fingerprint") && !text.contains(&fingerprint),
        "{text}"
    );

    // Deselected, the address may go; the key may be cleared.
    let (status, body) = login_call(
        &agent,
        "PUT",
        "/failover/shared-ips",
        Some(json!({"addresses": []})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = remove_shared_address(&agent);
    assert_eq!(status, 200, "{body}");
    let (status, body) = login_call(&agent, "DELETE", "/security/inter-appliance-key", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["fingerprint"], Value::Null);
}
