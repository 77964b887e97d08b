//! HTTPS calls to an appliance from inside a namespace (the workstation side of a switch,
//! or a lab host), logged in transparently as the administrator.
//!
//! A fresh appliance has the factory default password, which must be changed before any
//! other call works; the harness changes it to [`TEST_PASSWORD`] the first time it talks
//! to an appliance, keeps one session per appliance, and logs in again when the session
//! is gone (reboot, agent restart, factory reset).

use crate::netns::enter_and_run;
use appliance_agent::api::PREFIX;
use appliance_agent::client::{Answer, Client, Trust};
use appliance_agent::model::{LoginResponse, Status};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The admin password the harness sets on every appliance it talks to.
pub const TEST_PASSWORD: &str = "test-Passw0rd-1";

static SESSIONS: std::sync::LazyLock<Mutex<HashMap<(String, String), String>>> =
    std::sync::LazyLock::new(|| Mutex::new(HashMap::new()));

/// One request from inside namespace `ns`, with `token` if given; the certificate is not
/// checked (tests compare fingerprints themselves where it matters).
pub fn raw(
    ns: &str,
    host: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    token: Option<String>,
) -> Result<Answer, String> {
    raw_within(ns, host, method, path, body, token, Duration::from_secs(10))
}

/// [`raw`] giving up after `timeout`: for polling an appliance that is (re)booting, where
/// a connection attempt would otherwise sit out TCP's growing retransmission timers.
pub fn raw_within(
    ns: &str,
    host: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    token: Option<String>,
    timeout: Duration,
) -> Result<Answer, String> {
    let path = format!("{PREFIX}{path}");
    at_path(ns, host, method, &path, body, token, timeout)
}

/// One request to any path of the appliance's HTTPS port (not only below [`PREFIX`]).
pub fn at_path(
    ns: &str,
    host: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    token: Option<String>,
    timeout: Duration,
) -> Result<Answer, String> {
    crate::crypto();
    let client = Client {
        host: host.to_string(),
        port: 443,
        trust: Trust::Insecure,
        timeout,
        token,
    };
    let path = path.to_string();
    let method = method.to_string();
    enter_and_run(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(client.request(&method, &path, body))
            .map_err(|e| e.to_string())
    })
}

/// An unauthenticated call.
pub fn call_raw(
    ns: &str,
    host: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Answer, String> {
    raw(ns, host, method, path, body, None)
}

fn error_code(a: &Answer) -> String {
    serde_json::from_slice::<serde_json::Value>(&a.body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// An unauthenticated JSON POST that must answer 200.
fn post_ok(ns: &str, host: &str, path: &str, body: serde_json::Value) -> Result<Answer, String> {
    let a = call_raw(ns, host, "POST", path, Some(body.to_string().into_bytes()))?;
    if a.status != 200 {
        return Err(format!(
            "POST {path} answered {}: {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        ));
    }
    Ok(a)
}

fn login_as(ns: &str, host: &str, password: &str) -> Result<LoginResponse, String> {
    let a = post_ok(
        ns,
        host,
        "/login",
        json!({ "username": "admin", "password": password }),
    )?;
    serde_json::from_slice(&a.body).map_err(|e| e.to_string())
}

/// Logs in as admin, first changing the factory default password if it is still set.
pub fn login(ns: &str, host: &str) -> Result<String, String> {
    // An unauthenticated call tells whether the default is in force without a failed login.
    let probe = call_raw(ns, host, "GET", "/status", None)?;
    if error_code(&probe) == "password_change_required" {
        let change = json!({ "current_password": "password", "new_password": TEST_PASSWORD });
        post_ok(ns, host, "/system/admin/password", change)?;
    }
    let token = login_as(ns, host, TEST_PASSWORD)?.token;
    SESSIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((ns.into(), host.into()), token.clone());
    Ok(token)
}

/// A session token for the appliance (logging in if needed).
pub fn token(ns: &str, host: &str) -> Result<String, String> {
    let cached = SESSIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(ns.to_string(), host.to_string()))
        .cloned();
    match cached {
        Some(t) => Ok(t),
        None => login(ns, host),
    }
}

/// One API call as the administrator (`path` is below `/appliance/api/v1`).
pub fn call(
    ns: &str,
    host: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Answer, String> {
    let t = token(ns, host)?;
    let a = raw(ns, host, method, path, body.clone(), Some(t))?;
    let code = error_code(&a);
    if a.status == 401 || code == "password_change_required" {
        let t = login(ns, host)?;
        return raw(ns, host, method, path, body, Some(t));
    }
    Ok(a)
}

/// `GET /status`, decoded.
pub fn status(ns: &str, host: &str) -> Result<Status, String> {
    let a = call(ns, host, "GET", "/status", None)?;
    if a.status != 200 {
        return Err(format!(
            "status answered {}: {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        ));
    }
    serde_json::from_slice(&a.body).map_err(|e| format!("bad status JSON: {e}"))
}

/// Waits until `GET /status` answers on `host`.
pub fn wait_status(ns: &str, host: &str, timeout: Duration) -> Status {
    crate::wait::until(
        &format!("the API at https://{host}"),
        timeout,
        Duration::from_millis(250),
        || status(ns, host),
    )
}

/// Requests a factory reset of `level` (`config` or `rma`); it must be accepted (202).
pub fn request_reset(ns: &str, host: &str, level: &str) {
    let a = ok(
        ns,
        host,
        "POST",
        "/system/reset",
        Some(json!({ "level": level }).to_string().into_bytes()),
    );
    assert_eq!(a.status, 202);
}

/// Waits until the appliance at `host` answers with the factory default password in force
/// (after a factory reset and its reboot).
pub fn wait_factory_defaults(ns: &str, host: &str, timeout: Duration) {
    crate::wait::until(
        "the appliance back on factory defaults",
        timeout,
        Duration::from_millis(50),
        || {
            // Short attempts: a rebooting appliance drops connections, and a long attempt
            // would measure TCP's retransmission timers instead of the appliance.
            let a = raw_within(
                ns,
                host,
                "GET",
                "/status",
                None,
                None,
                Duration::from_millis(300),
            )?;
            let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
            if a.status == 403 && v["error"]["code"] == "password_change_required" {
                Ok(())
            } else {
                Err(format!("answered {}", a.status))
            }
        },
    );
}

/// A call that must succeed with a 2xx status.
pub fn ok(ns: &str, host: &str, method: &str, path: &str, body: Option<Vec<u8>>) -> Answer {
    let a = call(ns, host, method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert!(
        (200..300).contains(&a.status),
        "{method} {path} answered {}: {}",
        a.status,
        String::from_utf8_lossy(&a.body)
    );
    a
}
