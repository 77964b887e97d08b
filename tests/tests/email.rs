//! The site's alert e-mail with an SMTP sink in a namespace. With a real agent beside it:
//! the settings through `/login/api/v1/email` (the password stored, never shown), a test
//! message that arrives with its sender, recipients, subject and login, a relay with
//! nothing listening and one that refuses (502 `smtp_failed` with its words), e-mail
//! disabled (409), a bad value refused without a change, `appliancectl email`, and the
//! settings kept across an agent restart. In the test's own process: the mailer turning
//! each countdown alert into one e-mail through the sink, and a TLS or STARTTLS relay
//! with a self-signed certificate refused unless `accept_invalid_certs` is on.

use appliance_agent::email::{self, smtp::Smtp, Mailer};
use appliance_agent::failover::role::AlertKind;
use appliance_agent::failover::service::{AlertMessage, Notifier};
use appliance_agent::site::SiteStore;
use appliance_tests::api;
use appliance_tests::lab::{Agent, Lab};
use appliance_tests::smtp::{Behaviour, Options, Sink, TlsMode};
use appliance_tests::vm::TestDir;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

const LOCAL: &str = "127.0.0.1";
const PASSWORD: &str = "relay-secret-42";

fn email_call(agent: &Agent, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let token = api::token(&agent.host.ns, LOCAL).expect("login");
    let (status, text) = agent.at(
        method,
        &format!("/login/api/v1{path}"),
        body.map(|b| b.to_string().into_bytes()),
        Some(&token),
    );
    assert!(
        !text.contains(PASSWORD),
        "{method} {path} showed the password: {text}"
    );
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, value)
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// A port on the host's loopback with nothing listening.
fn closed_port(agent: &Agent) -> u16 {
    agent.host.block_on(async {
        let l = tokio::net::TcpListener::bind((LOCAL, 0))
            .await
            .expect("bind");
        l.local_addr().expect("addr").port()
    })
}

/// Points the relay port at `port`; the test message then fails with 502 `smtp_failed`
/// and a message that says `words`.
fn test_fails_at(agent: &Agent, port: u16, words: &str) {
    let (status, v) = email_call(agent, "PUT", "/email", Some(json!({ "smtp_port": port })));
    assert_eq!(status, 200, "{v}");
    let (status, v) = email_call(agent, "POST", "/email/test", None);
    assert_eq!((status, code(&v)), (502, "smtp_failed"), "{v}");
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(words), "{v}");
}

#[test]
fn alert_e_mail_settings_and_a_test_message_through_a_real_relay() {
    let dir = TestDir::new("email");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0xe1);
    let mut agent = Agent::start(&lab, &host, "agent", None);
    agent.wait_api();
    let sink = Sink::start(&agent.host.ns, LOCAL.parse().unwrap());

    // Fresh: off, nothing set, STARTTLS on 587 by default.
    let (status, v) = email_call(&agent, "GET", "/email", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["enabled"], false);
    assert_eq!(v["security"], "starttls");
    assert_eq!(v["smtp_port"], 587);
    assert_eq!(v["password_set"], false);

    // Disabled: the test message is refused, nothing sent.
    let (status, v) = email_call(&agent, "POST", "/email/test", None);
    assert_eq!((status, code(&v)), (409, "email_not_configured"), "{v}");

    // Enabling without a sender is refused and changes nothing.
    let (status, v) = email_call(
        &agent,
        "PUT",
        "/email",
        Some(json!({"enabled": true, "smtp_host": LOCAL, "to": ["noc@example.net"]})),
    );
    assert_eq!((status, code(&v)), (400, "bad_request"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("from"),
        "{v}"
    );
    let (_, v) = email_call(&agent, "GET", "/email", None);
    assert_eq!(v["smtp_host"], Value::Null, "{v}");

    // The whole set, with a login: the password comes back only as password_set.
    let (status, v) = email_call(
        &agent,
        "PUT",
        "/email",
        Some(json!({
            "enabled": true,
            "smtp_host": LOCAL,
            "smtp_port": sink.addr().port(),
            "security": "none",
            "username": "appliance",
            "password": PASSWORD,
            "from": "b-series@example.net",
            "to": ["noc@example.net", "oncall@example.net"],
        })),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["password_set"], true, "{v}");
    assert!(v.get("password").is_none(), "{v}");
    assert_eq!(v["smtp_port"], sink.addr().port());

    // Stored in the site settings, mode 0600.
    let file = agent.data.join("site/settings.toml");
    let mode = std::fs::metadata(&file)
        .expect("settings")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    let text = std::fs::read_to_string(&file).expect("read settings");
    assert!(text.contains(PASSWORD), "the relay needs it: {text}");

    // The test message arrives: envelope, headers, login.
    let (status, v) = email_call(&agent, "POST", "/email/test", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["relay"], format!("{LOCAL}:{}", sink.addr().port()));
    let mails = sink.wait_for(1, Duration::from_secs(10));
    let m = &mails[0];
    assert_eq!(m.from, "b-series@example.net");
    assert_eq!(m.to, ["noc@example.net", "oncall@example.net"]);
    assert_eq!(
        m.login,
        Some(("appliance".to_string(), PASSWORD.to_string()))
    );
    assert_eq!(m.header("From").as_deref(), Some("b-series@example.net"));
    assert_eq!(
        m.header("To").as_deref(),
        Some("noc@example.net, oncall@example.net")
    );
    assert!(m.subject().ends_with("Test of the alert e-mail"), "{m:?}");
    let body = m.body().replace('\n', " ");
    let relay = format!("mail relay {LOCAL}:{}.", sink.addr().port());
    assert!(body.contains(&relay), "{body}");
    assert!(!m.hello.is_empty(), "{m:?}");

    // A bad recipient is refused and changes nothing.
    let (status, v) = email_call(&agent, "PUT", "/email", Some(json!({"to": ["noc"]})));
    assert_eq!((status, code(&v)), (400, "bad_request"), "{v}");
    let (_, v) = email_call(&agent, "GET", "/email", None);
    assert_eq!(v["to"], json!(["noc@example.net", "oncall@example.net"]));

    // Nothing listening at the relay's port: 502 with what went wrong.
    let port = closed_port(&agent);
    test_fails_at(&agent, port, &format!("{LOCAL}:{port}"));

    // A relay that refuses the recipients: 502 with the relay's own words.
    let refusing = Sink::start_with(
        &agent.host.ns,
        LOCAL.parse().unwrap(),
        Behaviour::RefuseRecipients("550 5.1.1 no such mailbox here".into()),
    );
    test_fails_at(&agent, refusing.addr().port(), "no such mailbox here");

    // The CLI: show (no password), set back to the sink and clear the login, test.
    let (ok, out) = agent.ctl(&["email", "show"]);
    assert!(ok, "{out}");
    assert!(out.contains("appliance (password set)"), "{out}");
    assert!(!out.contains(PASSWORD), "{out}");
    let port = sink.addr().port().to_string();
    let (ok, out) = agent.ctl(&[
        "email",
        "set",
        "--smtp-port",
        &port,
        "--no-login",
        "--to",
        "ops@example.net",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("Login") && out.contains("none"), "{out}");
    let (ok, out) = agent.ctl(&["email", "test"]);
    assert!(ok, "{out}");
    assert!(out.contains("Test message sent"), "{out}");
    let mails = sink.wait_for(2, Duration::from_secs(10));
    assert_eq!(mails[1].to, ["ops@example.net"]);
    assert_eq!(mails[1].login, None);
    let (ok, out) = agent.ctl(&["email", "set", "--to", "nobody"]);
    assert!(!ok, "{out}");

    // Disabled again: 409, and it stays so across a restart.
    let (status, v) = email_call(&agent, "PUT", "/email", Some(json!({"enabled": false})));
    assert_eq!((status, v["enabled"].clone()), (200, json!(false)), "{v}");
    agent.restart();
    agent.wait_api();
    // Sessions do not outlive the agent.
    api::login(&agent.host.ns, LOCAL).expect("log in again");
    let (status, v) = email_call(&agent, "GET", "/email", None);
    assert_eq!((status, v["enabled"].clone()), (200, json!(false)), "{v}");
    assert_eq!(v["to"], json!(["ops@example.net"]));
    assert_eq!(v["from"], "b-series@example.net");
    let (status, v) = email_call(&agent, "POST", "/email/test", None);
    assert_eq!((status, code(&v)), (409, "email_not_configured"), "{v}");
    assert_eq!(sink.mails().len(), 2, "nothing more was sent");
}

/// Site settings in `dir` sending to `sink` with `security`, from the test's own process.
fn site_for(
    dir: &std::path::Path,
    sink: &Sink,
    security: &str,
    accept_invalid_certs: bool,
) -> Arc<SiteStore> {
    let site = Arc::new(SiteStore::open(dir));
    let update = serde_json::from_value(json!({
        "enabled": true,
        "smtp_host": LOCAL,
        "smtp_port": sink.addr().port(),
        "security": security,
        "accept_invalid_certs": accept_invalid_certs,
        "from": "b-series@example.net",
        "to": ["noc@example.net"],
    }))
    .expect("an update");
    email::change(&site, update).expect("settings");
    site
}

fn alert(kind: AlertKind, silent: u64, remaining: Option<u64>) -> AlertMessage {
    AlertMessage {
        kind,
        silent_for: Duration::from_secs(silent),
        remaining: remaining.map(Duration::from_secs),
        appliance: "b2".into(),
        peer: "192.0.2.1:443".into(),
    }
}

/// Waits (on the runtime, so the mailer's task runs) until `sink` holds `n` e-mails.
async fn arrived(sink: &Sink, n: usize) -> Vec<appliance_tests::smtp::Mail> {
    for _ in 0..1000 {
        let mails = sink.mails();
        if mails.len() >= n {
            return mails;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} e-mails never arrived: {:?}", sink.mails());
}

#[test]
fn the_mailer_sends_one_e_mail_per_countdown_alert_through_a_real_relay() {
    let dir = TestDir::new("email_mailer");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0xe2);
    let sink = Sink::start(&host.ns, LOCAL.parse().unwrap());
    let site = site_for(&dir.path, &sink, "none", false);
    let mails = host.block_on(async {
        let mailer = Mailer::new(site);
        mailer.notify(alert(AlertKind::FirstMissed, 1, Some(239)));
        mailer.notify(alert(AlertKind::HalfTimeout, 120, Some(120)));
        mailer.notify(alert(AlertKind::Takeover, 240, None));
        let mails = arrived(&sink, 3).await;
        assert_eq!(mailer.dropped(), 0);
        mails
    });
    let subjects: Vec<String> = mails.iter().map(|m| m.subject()).collect();
    assert_eq!(
        subjects,
        [
            "[b2] Primary appliance 192.0.2.1:443 unreachable: automatic failover in 3 minutes 59 seconds",
            "[b2] Primary appliance 192.0.2.1:443 still unreachable: automatic failover in 2 minutes",
            "[b2] b2 took over as primary: 192.0.2.1:443 silent for 4 minutes",
        ]
    );
    assert!(
        mails[1].body().contains("Failover in:   2 minutes\n"),
        "{}",
        mails[1].body()
    );
    assert!(mails.iter().all(|m| m.to == ["noc@example.net"]));
}

#[test]
fn a_relay_with_a_self_signed_certificate_needs_accept_invalid_certs() {
    appliance_tests::crypto();
    let dir = TestDir::new("email_tls");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0xe3);
    for (mode, security) in [(TlsMode::Wrapper, "tls"), (TlsMode::StartTls, "starttls")] {
        let sink = Sink::start_opts(
            &host.ns,
            LOCAL.parse().unwrap(),
            Options {
                behaviour: Behaviour::Accept,
                tls: Some(mode),
            },
        );
        let checked = dir.path.join(format!("{security}-checked"));
        let settings = site_for(&checked, &sink, security, false)
            .settings()
            .current()
            .email;
        let e = host
            .block_on(email::send_test(&Smtp, &settings, "b2"))
            .expect_err("a self-signed relay is refused by default");
        assert_eq!(e.status_and_code(), (502, "smtp_failed"), "{security}: {e}");
        assert!(e.to_string().contains("certificate"), "{security}: {e}");
        assert!(sink.mails().is_empty(), "{security}");

        let trusting = dir.path.join(format!("{security}-trusting"));
        let settings = site_for(&trusting, &sink, security, true)
            .settings()
            .current()
            .email;
        host.block_on(email::send_test(&Smtp, &settings, "b2"))
            .unwrap_or_else(|e| panic!("{security}: {e}"));
        let mails = sink.wait_for(1, Duration::from_secs(10));
        assert!(mails[0].tls, "{security}: the message came over TLS");
        assert!(mails[0].subject().ends_with("Test of the alert e-mail"));
    }
}
