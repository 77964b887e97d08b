//! The API document is a contract: schemathesis (pinned in the Makefile, installed in
//! `out/venv` by `make test-openapi`) generates requests from the document the agent
//! serves (`agent/openapi.yaml`, built in) and sends them to that agent in a namespace,
//! checking that the agent never fails with a server error, answers only documented
//! statuses and content types, matches the response schemas, and rejects what the
//! document says is invalid. Routes that would end the run (power, reset, logout,
//! password change, debug hooks, certificate replacement, the factory address) are left
//! out. The agent must still answer at the end.

use appliance_tests::api;
use appliance_tests::lab::{Agent, Lab};
use appliance_tests::vm::TestDir;
use std::io::Write;
use std::process::Command;

const LOCAL: &str = "127.0.0.1";

/// Operations the fuzzer must not call: each would end the run or cut it off.
const EXCLUDED: &[(&str, &str)] = &[
    ("POST", "/system/shutdown"),
    ("POST", "/system/reboot"),
    ("POST", "/system/reset"),
    ("DELETE", "/system/reset"),
    ("POST", "/logout"),
    ("POST", "/system/admin/password"),
    ("PUT", "/system/certificate"),
    ("PUT", "/network/factory-address"),
];

fn schemathesis() -> std::path::PathBuf {
    let p = appliance_tests::top().join("out/venv/bin/schemathesis");
    assert!(
        p.exists(),
        "{} is missing: run `make test-openapi` (or `make test`) first",
        p.display()
    );
    p
}

#[test]
fn the_api_keeps_to_its_document() {
    let dir = TestDir::new("api_fuzz");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0x70);
    let agent = Agent::start(&lab, &host, "agent", None);
    agent.wait_api();
    let token = api::token(&agent.host.ns, LOCAL).expect("login");

    let mut cmd = Command::new("ip");
    // schemathesis keeps a cache in its working directory: the test's own.
    cmd.current_dir(&dir.path);
    cmd.args(["netns", "exec", &agent.host.ns])
        .arg(schemathesis())
        .arg("run")
        // Loaded from the agent's own URL and without `--url`: the base URL then comes
        // from the document, each path's own `servers` entry (the `/login/api/v1` paths)
        // resolved against the agent's host, the others against the global one
        // (`/appliance/api/v1`). schemathesis 4 lets `--url` override path-level servers,
        // which would send the login paths to the wrong surface.
        .arg(format!("https://{LOCAL}/appliance/api/v1/openapi.yaml"))
        .args(["--tls-verify", "false"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,negative_data_rejection",
        ])
        .args(["--exclude-path-regex", "^/debug/"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "40", "--max-time", "120", "--seed", "1"])
        .args(["--workers", "2", "--request-timeout", "20"])
        .args(["--suppress-health-check", "all", "--no-color"])
        .arg("--report-junit-path")
        .arg(dir.path.join("schemathesis-junit.xml"))
        .args(["--report", "junit"]);
    for (method, path) in EXCLUDED {
        cmd.args(["--exclude-name", &format!("{method} {path}")]);
    }
    let out = cmd.output().expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.path.join("schemathesis.log"), &text).expect("keep the report");
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("passed") || l.contains("failed") || l.contains("generated"))
        .collect();
    // Straight to stderr, past the test harness's capture: the figures belong in the log.
    let _ = writeln!(std::io::stderr(), "schemathesis: {}", summary.join(" | "));
    assert!(out.status.success(), "schemathesis found failures:\n{text}");

    // The appliance still answers, logged in, after the run.
    agent
        .status()
        .expect("the agent answers status after the fuzzer");
}
