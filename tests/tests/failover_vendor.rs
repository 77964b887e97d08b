//! The vendor's command API on an established pair, as an existing script would use it:
//! an API account made on the primary reaching the backup with a data sync, `check_health`
//! on the primary and on the backup (role, shared IPs, health, the last sync), then
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

/// A full-access API account on `agent`: `client_id:client_secret`.
fn script_account(agent: &Agent) -> String {
    let (s, body) = login(
        agent,
        "POST",
        "/api-accounts",
        Some(json!({"name": "failover script", "access": "full"})),
    );
    assert_eq!(s, 201, "{body}");
    let v = json_of(&body);
    format!(
        "{}:{}",
        v["client_id"].as_str().expect("id"),
        v["client_secret"].as_str().expect("secret")
    )
}

/// A token for the API account `user` from `agent`.
fn script_token(agent: &Agent, user: &str) -> String {
    let (s, body) = curl(
        agent,
        "/oauth2/token",
        &["-u", user, "-d", "grant_type=client_credentials"],
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
    // The account is made on the primary (the backup's site is read only) and reaches
    // the backup with the site settings: the same script works against either.
    let user = script_account(&p.a);
    let (s, body) = login(
        &p.b,
        "POST",
        "/api-accounts",
        Some(json!({"name": "x", "access": "full"})),
    );
    assert_eq!((s, code(&body)), (409, "backup_read_only".into()), "{body}");
    let synced = appliance_tests::sync::sync_now(&p.b);
    assert_eq!(synced["result"], "success", "{synced}");
    let (ta, tb) = (script_token(&p.a, &user), script_token(&p.b, &user));

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
    assert!(
        xml.contains("<last_data_sync_status>success</last_data_sync_status>"),
        "{xml}"
    );
    assert!(xml.contains("<last_data_sync_time ts="), "{xml}");

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
