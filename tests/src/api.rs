//! HTTPS calls to an appliance from the workstation side of a switch.

use crate::netns::enter_and_run;
use appliance_agent::api::types::Status;
use appliance_agent::api::PREFIX;
use appliance_agent::cli::client::{Answer, Client, Trust};
use std::time::Duration;

/// One API call from inside namespace `ns`; the certificate is not checked (the tests
/// compare fingerprints themselves where it matters).
pub fn call(
    ns: &str,
    host: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Answer, String> {
    crate::crypto();
    let client = Client {
        host: host.to_string(),
        port: 443,
        trust: Trust::Insecure,
        timeout: Duration::from_secs(5),
    };
    let path = format!("{PREFIX}{path}");
    enter_and_run(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(client.request(method, &path, body))
            .map_err(|e| e.to_string())
    })
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
