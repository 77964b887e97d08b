//! The NTP client against Debian's chrony in a namespace. With a real agent: set to use
//! chronyd (`local stratum 8`), it shows the clock synchronised, its own stratum 9 and an
//! offset of a few milliseconds at most (both run on the host's clock); `appliancectl ntp`
//! sets and shows the same. A server that does not answer leaves it unsynchronised with
//! the reason in words. Bad input is refused with 400 and changes nothing; an empty list
//! turns NTP off.
//!
//! The agents share the host's clock (network namespaces do not separate time), so they
//! run in observe-only mode (`appliance.debug=1` and `<data>/debug/ntp-observe-only`):
//! they measure and never step or slew the host's clock. chronyd runs with `-x`, which
//! keeps it off the clock too.

use appliance_agent::model::ntp::{ClockAction, NtpView};
use appliance_tests::chrony::Chrony;
use appliance_tests::lab::{Agent, Host, Lab};
use appliance_tests::vm::TestDir;
use serde_json::{json, Value};
use std::time::Duration;

const SERVER: &str = "192.0.2.123";
const APPLIANCE: &str = "192.0.2.10/24";

/// An agent in observe-only NTP mode on `host`, with `192.0.2.10/24` on its NIC.
fn observing_agent(lab: &Lab, host: &Host) -> Agent {
    let switch = lab.dir.join("agent/data").join("debug");
    std::fs::create_dir_all(&switch).expect("debug dir");
    std::fs::write(switch.join("ntp-observe-only"), "").expect("observe-only switch");
    host.add_address(APPLIANCE);
    let agent = Agent::start_with(lab, host, "agent", None, true);
    agent.wait_api();
    agent
}

fn ntp(agent: &Agent, body: Option<Value>) -> (u16, Value) {
    let method = if body.is_some() { "PUT" } else { "GET" };
    let a = agent
        .call(
            method,
            "/network/ntp",
            body.map(|b| b.to_string().into_bytes()),
        )
        .unwrap_or_else(|e| panic!("{method} /network/ntp: {e}"));
    let v = serde_json::from_slice(&a.body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&a.body)));
    (a.status, v)
}

fn view(agent: &Agent) -> NtpView {
    let (status, v) = ntp(agent, None);
    assert_eq!(status, 200, "{v}");
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
}

fn config_text(agent: &Agent) -> String {
    std::fs::read_to_string(agent.data.join("config/appliance.toml")).unwrap_or_default()
}

#[test]
fn the_clock_synchronises_from_chrony_at_stratum_9_within_a_few_ms() {
    let dir = TestDir::new("ntp_chrony");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0x61);
    let server = lab.host(0x62);
    server.add_address(&format!("{SERVER}/24"));
    let _chrony = Chrony::start(&dir.path, &server.ns, SERVER);
    let agent = observing_agent(&lab, &host);

    let v = view(&agent);
    assert!(v.servers.is_empty(), "off by default: {v:?}");
    assert!(!v.status.synchronised);

    let (status, v) = ntp(&agent, Some(json!({ "servers": [SERVER] })));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["servers"], json!([SERVER]));
    assert!(
        config_text(&agent).contains(SERVER),
        "kept in appliance.toml"
    );

    let synced = appliance_tests::wait::until(
        "the clock to be synchronised from chronyd",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let v = view(&agent);
            if v.status.synchronised {
                Ok(v)
            } else {
                Err(format!("{:?}", v.status))
            }
        },
    );
    let s = &synced.status;
    eprintln!("NTP status against chronyd: {s:?}");
    assert_eq!(s.server.as_deref(), Some(SERVER));
    assert_eq!(s.address, Some(SERVER.parse().unwrap()));
    assert_eq!(
        s.stratum,
        Some(9),
        "one more than chronyd's local stratum 8"
    );
    let offset = s.offset_seconds.expect("an offset");
    assert!(
        offset.abs() < 0.005,
        "same clock: a few ms at most, not {offset} s"
    );
    assert!(
        s.delay_seconds.is_some_and(|d| (0.0..0.5).contains(&d)),
        "{s:?}"
    );
    assert_eq!(
        s.last_action,
        Some(ClockAction::ObservedOnly),
        "the host's clock is left alone"
    );
    assert_eq!(s.error, None);
    let when = s.last_sync.as_deref().expect("last_sync");
    assert!(
        when.ends_with('Z') && when.len() >= 20,
        "RFC 3339 UTC: {when}"
    );

    let (ok, text) = agent.ctl(&["ntp", "status"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("Synchronised") && text.contains("yes"),
        "{text}"
    );
    assert!(text.contains("our stratum 9"), "{text}");

    // appliancectl sets the list; an unknown second server changes nothing in use.
    let (ok, text) = agent.ctl(&["ntp", "set", SERVER, "ntp.invalid"]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("{SERVER}, ntp.invalid")), "{text}");
    appliance_tests::wait::until(
        "the new list to be polled",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || match view(&agent).status {
            s if s.synchronised && s.server.as_deref() == Some(SERVER) => Ok(()),
            s => Err(format!("{s:?}")),
        },
    );
}

#[test]
fn a_silent_server_is_said_in_words_and_bad_input_changes_nothing() {
    let dir = TestDir::new("ntp_silent");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0x63);
    let agent = observing_agent(&lab, &host);

    // Nobody holds 192.0.2.124: the requests go unanswered.
    let (status, v) = ntp(&agent, Some(json!({ "servers": ["192.0.2.124"] })));
    assert_eq!(status, 200, "{v}");
    let failed = appliance_tests::wait::until(
        "the poll of a silent server to fail",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let v = view(&agent);
            v.status
                .error
                .clone()
                .map(|e| (v, e))
                .ok_or("no error yet".to_string())
        },
    );
    let (v, error) = failed;
    eprintln!("NTP error for a silent server: {error}");
    assert!(!v.status.synchronised);
    assert!(
        error.starts_with("no NTP server gave the time (192.0.2.124: "),
        "{error}"
    );
    assert_eq!(v.status.offset_seconds, None);

    let before = config_text(&agent);
    for (body, words) in [
        (
            json!({ "servers": ["not a host!"] }),
            "neither an IP address nor a host name",
        ),
        (json!({ "servers": ["192.0.2.1:123"] }), "without a port"),
        (
            json!({ "servers": ["a.net", "b.net", "c.net", "d.net", "e.net", "f.net"] }),
            "at most 5",
        ),
        (json!({ "servers": ["a.net", "A.NET"] }), "more than once"),
        (json!({ "servers": "192.0.2.1" }), "invalid JSON body"),
        (json!({ "server": ["192.0.2.1"] }), "unknown field"),
        (json!({}), "missing field `servers`"),
    ] {
        let (status, answer) = ntp(&agent, Some(body.clone()));
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{body}: {message}");
    }
    assert_eq!(config_text(&agent), before, "nothing written");
    assert_eq!(view(&agent).servers.as_slice().len(), 1);
    let (ok, text) = agent.ctl(&["ntp", "set", "bad name"]);
    assert!(!ok, "{text}");
    assert_eq!(config_text(&agent), before);

    // An empty list turns NTP off: no servers, no status, no error.
    let (ok, text) = agent.ctl(&["ntp", "off"]);
    assert!(ok, "{text}");
    assert!(text.contains("off (no servers)"), "{text}");
    let v = view(&agent);
    assert!(v.servers.is_empty());
    assert!(!v.status.synchronised);
    assert_eq!(v.status.error, None);
    assert!(!config_text(&agent).contains("[ntp]"));
}
