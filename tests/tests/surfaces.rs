//! The API's surfaces with a real agent in a namespace: each answers in its own shape and
//! with its own auth (`/appliance/api/v1` and `/login/api/v1` JSON, `/api/command` XML,
//! `/check_health` plain text with no login), and the agent's tasks in status.

use appliance_tests::api;
use appliance_tests::lab::{Agent, Lab};
use appliance_tests::vm::TestDir;
use std::time::Duration;

const LOCAL: &str = "127.0.0.1";

fn get(agent: &Agent, path: &str, token: Option<&str>) -> (u16, String) {
    agent.at("GET", path, None, token)
}

#[test]
fn each_surface_answers_in_its_own_shape() {
    let dir = TestDir::new("surfaces");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0x90);
    let mut agent = Agent::start(&lab, &host, "agent", None);
    agent.wait_api();

    // The health probe needs no login and says only healthy or not.
    assert_eq!(
        get(&agent, "/check_health", None),
        (200, "healthy\n".into())
    );

    // The vendor's command API: errors are XML in its namespace, auth errors included.
    // It takes the OAuth tokens of API accounts (tests/tests/vendor_api.rs), not the
    // admin's session.
    let token = api::token(&agent.host.ns, LOCAL).expect("login");
    for t in [None, Some(token.as_str())] {
        let (status, body) = get(&agent, "/api/command?action=check_health", t);
        assert_eq!(status, 401, "{body}");
        assert!(
            body.contains("<error xmlns=\"http://www.bomgar.com/namespaces/API/command\">"),
            "{body}"
        );
    }

    // The site's API is JSON behind the same login.
    let (status, body) = get(&agent, "/login/api/v1/failover/status", None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"code\":\"unauthorized\""), "{body}");
    let (status, body) = get(&agent, "/login/api/v1/nothing-here", Some(&token));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"code\":\"not_found\""), "{body}");

    // The agent's long-running tasks are registered in one place and reported in status.
    let status = agent.status().expect("status");
    let mut names: Vec<&str> = status.agent.tasks.iter().map(|t| t.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "address-defence",
            "factory-address",
            "failover",
            "network-reconcile",
            "network-rollback-timer",
            "ntp",
            "sync"
        ]
    );
    assert!(
        status
            .agent
            .tasks
            .iter()
            .all(|t| t.running && t.restarts == 0),
        "{:?}",
        status.agent.tasks
    );

    // A body over the limit is answered 413 in the JSON shape, and the client gets to read
    // the answer although it wrote its whole body first.
    let big = format!("{{\"hostname\": \"{}\"}}", "a".repeat(128 * 1024)).into_bytes();
    let a = api::at_path(
        &agent.host.ns,
        LOCAL,
        "PUT",
        "/appliance/api/v1/network/config",
        Some(big),
        Some(token.clone()),
        Duration::from_secs(10),
    )
    .expect("an answer, not a broken connection");
    let body = String::from_utf8_lossy(&a.body);
    assert_eq!(a.status, 413, "{body}");
    assert!(body.contains("\"code\":\"payload_too_large\""), "{body}");

    // Outside every surface: a JSON 404, as before.
    let (status, body) = get(&agent, "/elsewhere", None);
    assert_eq!(
        (status, body.contains("\"not_found\"")),
        (404, true),
        "{body}"
    );

    // A settings file that does not parse makes the appliance unhealthy, with no detail.
    agent.kill();
    std::fs::write(agent.data.join("config/appliance.toml"), "version = ").expect("write");
    agent.restart();
    agent.wait_api();
    assert_eq!(
        get(&agent, "/check_health", None),
        (500, "not healthy\n".into())
    );
}
