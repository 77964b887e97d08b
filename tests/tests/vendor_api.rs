//! The vendor's command API with a real agent in a namespace, called the way existing
//! scripts call it (curl): API accounts made over the site API and with appliancectl, an
//! OAuth client credentials token, `check_health` as XML checked element by element (GET
//! and POST), read-only accounts refused `set_failover_role`, 401 without or with a bad
//! token (the admin's session is not one), a removed account's token dead at once,
//! tokens gone and accounts kept across an agent restart, failed client authentications
//! limited per address, `set_failover_role` on an appliance with no failover relationship
//! answered as the failover error, in `<error>`, and one health assessment for
//! `check_health` and `/check_health`.

use appliance_tests::api;
use appliance_tests::lab::{Agent, Lab};
use appliance_tests::vm::TestDir;
use serde_json::{json, Value};

const LOCAL: &str = "127.0.0.1";
const GRANT: &str = "grant_type=client_credentials";
const OPEN: &str = "<error xmlns=\"http://www.bomgar.com/namespaces/API/command\">";

use appliance_tests::lab::Seen;

fn curl(agent: &Agent, path: &str, args: &[&str]) -> Seen {
    agent.https(path, args)
}

/// `POST /oauth2/token` with `id:secret` (if given) as HTTP Basic and `form` as the body.
fn token_call(agent: &Agent, credentials: Option<(&str, &str)>, form: &str) -> Seen {
    let user = credentials.map(|(id, secret)| format!("{id}:{secret}"));
    let mut args = vec!["-d", form];
    if let Some(u) = &user {
        args.extend(["-u", u.as_str()]);
    }
    curl(agent, "/oauth2/token", &args)
}

/// An access token for `id` and `secret` from `/oauth2/token`.
fn token_for(agent: &Agent, id: &str, secret: &str) -> String {
    let seen = token_call(agent, Some((id, secret)), GRANT);
    assert_eq!(seen.status, 200, "{}", seen.body);
    let v = json_of(&seen.body);
    assert_eq!(v["token_type"], "Bearer", "{v}");
    assert_eq!(v["expires_in"], 3600, "{v}");
    v["access_token"].as_str().expect("a token").to_string()
}

/// `/api/command` with `query`, as a GET with the token (if any) as a bearer.
fn command(agent: &Agent, token: Option<&str>, query: &str) -> Seen {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = Vec::new();
    if let Some(a) = &auth {
        args.extend(["-H", a.as_str()]);
    }
    curl(agent, &format!("/api/command?{query}"), &args)
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A call to the site API as the administrator: (status, body).
fn site(agent: &Agent, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let token = api::token(&agent.host.ns, LOCAL).expect("login");
    agent.at(
        method,
        &format!("/login/api/v1{path}"),
        body.map(|b| b.to_string().into_bytes()),
        Some(&token),
    )
}

/// Makes an API account; answers its client id and secret.
fn add_account(agent: &Agent, name: &str, access: &str) -> (String, String) {
    let (status, body) = site(
        agent,
        "POST",
        "/api-accounts",
        Some(json!({"name": name, "access": access})),
    );
    assert_eq!(status, 201, "{body}");
    let v = json_of(&body);
    assert_eq!(
        (v["name"].as_str(), v["access"].as_str()),
        (Some(name), Some(access))
    );
    (
        v["client_id"].as_str().expect("client_id").to_string(),
        v["client_secret"]
            .as_str()
            .expect("client_secret")
            .to_string(),
    )
}

/// The lines of an XML answer between its declaration and root and the root's end.
fn children(xml: &str) -> Vec<String> {
    let lines: Vec<&str> = xml.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
        "{xml}"
    );
    assert_eq!(
        lines.get(1),
        Some(&"<health_check xmlns=\"http://www.bomgar.com/namespaces/API/command\">"),
        "{xml}"
    );
    assert_eq!(lines.last(), Some(&"</health_check>"), "{xml}");
    lines[2..lines.len() - 1]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[test]
fn scripts_use_the_command_api_with_oauth_api_accounts() {
    let dir = TestDir::new("vendor_api");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0xc0);
    let mut agent = Agent::start(&lab, &host, "agent", None);
    agent.wait_api();
    let session = api::token(&agent.host.ns, LOCAL).expect("login");

    // No token, a made-up one, the admin's session: 401 with an <error>.
    for token in [None, Some("0123456789abcdef"), Some(session.as_str())] {
        let seen = command(&agent, token, "action=check_health");
        assert_eq!(seen.status, 401, "{token:?}: {}", seen.body);
        assert_eq!(seen.content_type, "text/xml; charset=UTF-8");
        assert!(seen.body.contains(OPEN), "{}", seen.body);
    }

    // Accounts: bad requests refused, two made, listed without secrets.
    for bad in [
        json!({"name": "", "access": "full"}),
        json!({"name": "ops", "access": "admin"}),
        json!({"name": "ops"}),
    ] {
        let (status, body) = site(&agent, "POST", "/api-accounts", Some(bad.clone()));
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (full_id, full_secret) = add_account(&agent, "failover script", "full");
    let (ro_id, ro_secret) = add_account(&agent, "nagios", "read_only");
    let (status, body) = site(&agent, "GET", "/api-accounts", None);
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains(&full_secret) && !body.contains("secret"),
        "{body}"
    );
    let listed = json_of(&body);
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(listed[0]["client_id"], full_id.as_str());
    assert_eq!(listed[1]["access"], "read_only");

    // The token endpoint: a wrong secret, a wrong grant, no credentials.
    let wrong = token_call(&agent, Some((&full_id, "nope")), GRANT);
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(json_of(&wrong.body)["error"], "invalid_client");
    let grant = token_call(
        &agent,
        Some((&full_id, &full_secret)),
        "grant_type=password",
    );
    assert_eq!(grant.status, 400, "{}", grant.body);
    assert_eq!(json_of(&grant.body)["error"], "unsupported_grant_type");
    let anonymous = token_call(&agent, None, GRANT);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let full = token_for(&agent, &full_id, &full_secret);
    let read_only = token_for(&agent, &ro_id, &ro_secret);

    // check_health, element by element, against what the JSON APIs say.
    let (_, body) = site(&agent, "GET", "/failover/status", None);
    let failover = json_of(&body);
    let status = agent.status().expect("status");
    let seen = command(&agent, Some(&full), "action=check_health");
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert_eq!(seen.content_type, "text/xml; charset=UTF-8");
    assert_eq!(
        children(&seen.body),
        vec![
            format!(
                "<appliance id=\"{}\">{}</appliance>",
                failover["appliance_id"].as_str().expect("id"),
                failover["hostname"].as_str().expect("hostname")
            ),
            format!("<version>{}+{}</version>", status.version, status.build),
            "<success>1</success>".to_string(),
            "<failover_role>none</failover_role>".to_string(),
        ],
        "healthy, no failover: no error message, shared IPs or data sync"
    );
    // A read-only account may check health, by POST with a form body too.
    let auth = format!("Authorization: Bearer {read_only}");
    let posted = curl(
        &agent,
        "/api/command",
        &["-H", &auth, "-d", "action=check_health"],
    );
    assert_eq!(
        (posted.status, posted.body.as_str()),
        (200, seen.body.as_str())
    );

    // ... but not change the role.
    let refused = command(
        &agent,
        Some(&read_only),
        "action=set_failover_role&role=primary",
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains(OPEN) && refused.body.contains("read-only access"),
        "{}",
        refused.body
    );
    // A full account can ask; with no relationship the failover error comes back as XML.
    let failed = command(
        &agent,
        Some(&full),
        "action=set_failover_role&role=backup&force=1",
    );
    assert!(failed.body.contains(OPEN), "{}", failed.body);
    match failed.status {
        409 => assert!(
            failed.body.contains("no failover relationship"),
            "{}",
            failed.body
        ),
        503 => assert!(failed.body.contains("not running"), "{}", failed.body),
        other => panic!("set_failover_role answered {other}: {}", failed.body),
    }
    let unknown = command(&agent, Some(&full), "action=no_such_thing");
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert!(
        unknown
            .body
            .contains("unknown action &quot;no_such_thing&quot;</error>"),
        "{}",
        unknown.body
    );

    // Removing an account ends its tokens at once; the other account is untouched.
    let (status, body) = site(&agent, "DELETE", &format!("/api-accounts/{full_id}"), None);
    assert_eq!(status, 204, "{body}");
    let dead = command(&agent, Some(&full), "action=check_health");
    assert_eq!(dead.status, 401, "{}", dead.body);
    let (status, body) = site(&agent, "DELETE", &format!("/api-accounts/{full_id}"), None);
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        command(&agent, Some(&read_only), "action=check_health").status,
        200
    );

    // appliancectl manages the same accounts.
    let (ok, out) = agent.ctl(&["api-account", "add", "backup job", "--access", "full"]);
    assert!(ok && out.contains("client secret:"), "{out}");
    let (ok, out) = agent.ctl(&["api-account", "ls"]);
    assert!(
        ok && out.contains("nagios") && out.contains("backup job"),
        "{out}"
    );
    let (ok, out) = agent.ctl(&["api-account", "rm", &ro_id]);
    assert!(ok, "{out}");
    let (ok, out) = agent.ctl(&["api-account", "rm", &ro_id]);
    assert!(!ok && out.contains("404"), "{out}");
    let (_, out) = agent.ctl(&["api-account", "ls"]);
    assert!(!out.contains("nagios"), "{out}");

    // Tokens live in memory: a restart ends them; the accounts are kept.
    let (job_id, job_secret) = add_account(&agent, "after restart", "read_only");
    let before = token_for(&agent, &job_id, &job_secret);
    agent.restart();
    agent.wait_api();
    assert_eq!(
        command(&agent, Some(&before), "action=check_health").status,
        401
    );
    let after = token_for(&agent, &job_id, &job_secret);
    assert_eq!(
        command(&agent, Some(&after), "action=check_health").status,
        200
    );

    // Guessing secrets locks that client address out, as logins do; others carry on.
    let guess = |n: usize| {
        let user = format!("{job_id}:guess-{n}");
        curl(
            &agent,
            "/oauth2/token",
            &["--interface", "127.0.1.7", "-u", &user, "-d", GRANT],
        )
    };
    for n in 1..5 {
        assert_eq!(guess(n).status, 401, "guess {n}");
    }
    let locked = guess(5);
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert_eq!(json_of(&locked.body)["error"], "too_many_attempts");
    token_for(&agent, &job_id, &job_secret);

    // One assessment for both probes: a settings file that does not parse makes
    // check_health answer success 0 with the reason, and /check_health 500.
    agent.kill();
    std::fs::write(agent.data.join("config/appliance.toml"), "version = ").expect("write");
    agent.restart();
    agent.wait_api();
    let token = token_for(&agent, &job_id, &job_secret);
    let seen = command(&agent, Some(&token), "action=check_health");
    assert_eq!(seen.status, 200, "{}", seen.body);
    let lines = children(&seen.body);
    assert_eq!(lines[2], "<success>0</success>", "{}", seen.body);
    assert!(
        lines[3].starts_with("<error_message>the settings file does not parse"),
        "{}",
        seen.body
    );
    assert_eq!(lines[4], "<failover_role>none</failover_role>");
    assert_eq!(agent.at("GET", "/check_health", None, None).0, 500);
}
