//! The vendor's command API on an established pair, as an existing script would use it:
//! `check_health` on the primary and on the backup (role, shared IPs, health), then
//! `set_failover_role` on the backup swapping the roles, and `/check_health` on the new
//! primary.

use appliance_tests::failover::*;
use appliance_tests::lab::Agent;
use appliance_tests::vm::TestDir;
use serde_json::json;
use std::time::Duration;

/// Runs curl in the agent's host: the status and the body.
fn curl(agent: &Agent, path: &str, args: &[&str]) -> (u16, String) {
    let seen = agent.https(path, args);
    (seen.status, seen.body)
}

/// A full-access API account on `agent` and a token for it.
fn script_token(agent: &Agent) -> String {
    let (s, body) = login(
        agent,
        "POST",
        "/api-accounts",
        Some(json!({"name": "failover script", "access": "full"})),
    );
    assert_eq!(s, 201, "{body}");
    let v = json_of(&body);
    let user = format!(
        "{}:{}",
        v["client_id"].as_str().expect("id"),
        v["client_secret"].as_str().expect("secret")
    );
    let (s, body) = curl(
        agent,
        "/oauth2/token",
        &["-u", &user, "-d", "grant_type=client_credentials"],
    );
    assert_eq!(s, 200, "{body}");
    json_of(&body)["access_token"]
        .as_str()
        .expect("token")
        .to_string()
}

fn command(agent: &Agent, token: &str, query: &str) -> (u16, String) {
    let auth = format!("Authorization: Bearer {token}");
    curl(agent, &format!("/api/command?{query}"), &["-H", &auth])
}

#[test]
fn scripts_see_and_swap_the_roles_of_a_pair() {
    let dir = TestDir::new("failover_vendor");
    let p = Pair::start(
        dir.path.clone(),
        "automatic_failover = true\nprimary_timeout_seconds = 2.0\ntest_ips = [\"192.0.2.50\"]",
    );
    established(&p);
    let (ta, tb) = (script_token(&p.a), script_token(&p.b));

    let (s, xml) = command(&p.a, &ta, "action=check_health");
    assert_eq!(s, 200, "{xml}");
    assert!(xml.contains("<success>1</success>"), "{xml}");
    assert!(
        xml.contains("<failover_role>primary</failover_role>"),
        "{xml}"
    );
    assert!(
        xml.contains("<enabled_shared_ips><ip>192.0.2.100</ip></enabled_shared_ips>"),
        "{xml}"
    );
    assert!(!xml.contains("<error_message>"), "{xml}");
    let (s, xml) = command(&p.b, &tb, "action=check_health");
    assert_eq!(s, 200, "{xml}");
    assert!(
        xml.contains("<success>1</success>"),
        "a healthy backup: {xml}"
    );
    assert!(
        xml.contains("<failover_role>backup</failover_role>"),
        "{xml}"
    );
    assert!(!xml.contains("<enabled_shared_ips>"), "{xml}");
    assert!(xml.contains("<last_data_sync_status>"), "{xml}");

    // A role already held: the failover error, as XML.
    let (s, xml) = command(&p.a, &ta, "action=set_failover_role&role=primary");
    assert_eq!(s, 409, "{xml}");
    assert!(xml.contains("<error"), "{xml}");

    // The planned swap from the backup's side.
    let (s, xml) = command(&p.b, &tb, "action=set_failover_role&role=primary");
    assert_eq!(s, 200, "{xml}");
    assert!(
        xml.contains(">Successfully changed role.</success>"),
        "{xml}"
    );
    wait_role(&p.b, "primary", Duration::from_secs(10));
    wait_role(&p.a, "backup", Duration::from_secs(10));
    until("the shared IP on b only", 10, || {
        match (holds(&p.a.host), holds(&p.b.host)) {
            (false, true) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let (s, text) = curl(&p.b, "/check_health", &[]);
    assert_eq!((s, text.trim()), (200, "healthy"));
    let (s, xml) = command(&p.b, &tb, "action=check_health");
    assert_eq!(s, 200, "{xml}");
    assert!(
        xml.contains("<failover_role>primary</failover_role>"),
        "{xml}"
    );
}
