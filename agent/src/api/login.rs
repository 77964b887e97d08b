//! `/login/api/v1`: the site's API. JSON, admin auth (a `read` token may GET only), JSON
//! errors. This module serves failover: this appliance's own settings (the
//! inter-appliance key, the backup settings, the choice of shared IPs: local, in
//! `[failover]` of `appliance.toml`, never synchronised), the relationship, manual role
//! changes, Fix, the history, the test-IP check and the status. The work is the failover
//! service's (`crate::failover::FailoverService`); the e-mail and API-account routes live in
//! their own modules.

use super::{parse_body, parse_required, ApiError, AppState};
use crate::config::{FailoverSettings, InterApplianceKey};
use crate::failover::driver::role_name;
use crate::failover::wire::Endpoint;
use crate::failover::{RoleRequest, Settings, SettingsUpdate};
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Every path this module serves (relative to `/login/api/v1`), in OpenAPI's spelling.
#[cfg(test)]
pub(crate) const PATHS: &[&str] = &[
    "/security/inter-appliance-key",
    "/failover/settings",
    "/failover/shared-ips",
    "/failover/status",
    "/failover/relationship",
    "/failover/become-primary",
    "/failover/become-backup",
    "/failover/fix",
    "/failover/history",
    "/failover/test-ips/test",
    "/failover/sync",
    "/failover/sync/history",
];

/// At most this many shared IPs.
pub const MAX_SHARED_IPS: usize = 16;

pub const WARN_NO_KEY: &str =
    "no inter-appliance key is set: a failover relationship needs the same key on both appliances";
pub const WARN_NO_SHARED_IP: &str =
    "automatic failover needs a shared IP: none is selected, so a takeover would move no address";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    key: String,
}

#[derive(Serialize, Deserialize)]
pub struct KeyView {
    /// The key's fingerprint, or `null` when none is set.
    pub fingerprint: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedIps {
    pub addresses: Vec<IpAddr>,
}

#[derive(Default, Serialize, Deserialize)]
pub struct FailoverStatus {
    pub appliance_id: String,
    pub hostname: String,
    pub version: String,
    pub role: String,
    pub epoch: u64,
    /// A primary that came back and checks its peer before it takes anything.
    pub pending: bool,
    pub key_fingerprint: Option<String>,
    pub settings: Settings,
    pub shared_ips: Vec<IpAddr>,
    /// The shared IPs this appliance holds now.
    pub enabled_shared_ips: Vec<IpAddr>,
    pub peer: Option<crate::failover::service::PeerReport>,
    pub silent_seconds: f64,
    pub countdown_seconds: Option<f64>,
    pub conflict: Option<ConflictView>,
    pub cut_off: bool,
    pub isolated: bool,
    pub untested: bool,
    /// Why failover is not healthy, if it is not.
    pub problem: Option<String>,
    /// The data sync now (idle between syncs).
    #[serde(default)]
    pub sync: crate::sync::service::Progress,
    /// The last data sync, if any.
    #[serde(default)]
    pub last_sync: Option<crate::sync::service::HistoryEntry>,
    pub warnings: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub struct ConflictView {
    pub kind: crate::failover::conflict::Kind,
    pub message: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstablishRequest {
    pub backup: Endpoint,
    pub reverse: Endpoint,
}

#[derive(Serialize, Deserialize)]
pub struct RoleChanged {
    pub outcome: crate::failover::service::RoleOutcome,
    pub role: String,
    pub epoch: u64,
}

#[derive(Serialize, Deserialize)]
pub struct History {
    pub entries: Vec<crate::failover::service::HistoryItem>,
}

#[derive(Serialize, Deserialize)]
pub struct TestIpResults {
    pub results: Vec<crate::failover::testips::TestIpResult>,
}

async fn put_key(State(app): State<AppState>, body: Bytes) -> Result<Json<KeyView>, ApiError> {
    let req: KeyRequest = parse_required(&body)?;
    let key = InterApplianceKey::new(req.key).map_err(ApiError::BadRequest)?;
    let fingerprint = key.fingerprint();
    update(&app, move |f| f.key = Some(key)).await?;
    Ok(Json(KeyView {
        fingerprint: Some(fingerprint),
    }))
}

async fn delete_key(State(app): State<AppState>) -> Result<Json<KeyView>, ApiError> {
    update(&app, |f| f.key = None).await?;
    Ok(Json(KeyView { fingerprint: None }))
}

async fn get_settings(State(app): State<AppState>) -> Json<Settings> {
    Json(app.config.current().failover.backup)
}

async fn put_settings(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<Json<Settings>, ApiError> {
    let req: SettingsUpdate = parse_required(&body)?;
    let after = update(&app, move |f| f.backup = f.backup.apply(req)).await?;
    Ok(Json(after.backup))
}

async fn get_shared_ips(State(app): State<AppState>) -> Json<SharedIps> {
    Json(SharedIps {
        addresses: app.config.current().failover.shared_ips,
    })
}

async fn put_shared_ips(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<Json<SharedIps>, ApiError> {
    let req: SharedIps = parse_required(&body)?;
    check_shared_ips(&req.addresses)?;
    let config = app.config.clone();
    let addresses = crate::store::blocking(move || {
        config.try_update(|c| {
            // Checked under the document's lock, against the network configuration of the
            // same file, so that a concurrent address change cannot slip in between.
            if let Some(ip) = req.addresses.iter().find(|ip| !configured(&c.network, ip)) {
                return Err(ApiError::NotConfiguredHere(*ip));
            }
            c.failover.shared_ips = req.addresses.clone();
            Ok(req.addresses)
        })
    })
    .await?;
    Ok(Json(SharedIps { addresses }))
}

async fn status(State(app): State<AppState>) -> Result<Json<FailoverStatus>, ApiError> {
    let current = app.config.current();
    let f = current.failover;
    let appliance_id = app.failover.appliance_id();
    let hostname = app.network.hostname().await.hostname;
    let snapshot = app.failover.snapshot();
    let report = app.failover.report();
    Ok(Json(FailoverStatus {
        appliance_id,
        hostname,
        version: app.failover.version(),
        role: role_name(snapshot.role).into(),
        epoch: snapshot.epoch,
        pending: snapshot.pending,
        key_fingerprint: f.key.as_ref().map(InterApplianceKey::fingerprint),
        warnings: warnings(&f, &current.network),
        settings: f.backup,
        shared_ips: f.shared_ips,
        enabled_shared_ips: snapshot.enabled_shared_ips,
        peer: report.peer,
        silent_seconds: report.silent_seconds,
        countdown_seconds: report.countdown_seconds,
        conflict: report.conflict.map(|kind| ConflictView {
            kind,
            message: crate::failover::conflict::message(kind),
        }),
        cut_off: report.cut_off,
        isolated: report.isolated,
        untested: report.untested,
        problem: report.problem.or_else(|| app.sync.no_pull_problem()),
        sync: app.sync.progress(),
        last_sync: app.sync.last(),
    }))
}

async fn establish(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<Json<FailoverStatus>, ApiError> {
    let req: EstablishRequest = parse_required(&body)?;
    app.failover.establish(req.backup, req.reverse).await?;
    status(State(app)).await
}

async fn break_relationship(State(app): State<AppState>) -> Result<Json<FailoverStatus>, ApiError> {
    app.failover.break_relationship().await?;
    status(State(app)).await
}

fn role_changed(
    app: &AppState,
    outcome: crate::failover::service::RoleOutcome,
) -> Json<RoleChanged> {
    let s = app.failover.snapshot();
    Json(RoleChanged {
        outcome,
        role: role_name(s.role).into(),
        epoch: s.epoch,
    })
}

async fn become_primary(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<Json<RoleChanged>, ApiError> {
    let req: RoleRequest = parse_body(&body)?;
    let outcome = app
        .sync
        .change_role(crate::failover::role::Role::Primary, req)
        .await?;
    Ok(role_changed(&app, outcome))
}

async fn become_backup(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<Json<RoleChanged>, ApiError> {
    let req: RoleRequest = parse_body(&body)?;
    let outcome = app
        .sync
        .change_role(crate::failover::role::Role::Backup, req)
        .await?;
    Ok(role_changed(&app, outcome))
}

#[derive(Serialize, Deserialize)]
pub struct SyncHistory {
    pub entries: Vec<crate::sync::service::HistoryEntry>,
}

async fn sync_progress(State(app): State<AppState>) -> Json<crate::sync::service::Progress> {
    Json(app.sync.progress())
}

/// Sync Now: 202 with the progress; the sync runs in the background.
async fn sync_now(
    State(app): State<AppState>,
) -> Result<(axum::http::StatusCode, Json<crate::sync::service::Progress>), ApiError> {
    app.sync.sync_now().await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(app.sync.progress())))
}

async fn sync_history(State(app): State<AppState>) -> Json<SyncHistory> {
    Json(SyncHistory {
        entries: app.sync.history(),
    })
}

async fn fix(State(app): State<AppState>) -> Result<Json<RoleChanged>, ApiError> {
    let outcome = app.failover.fix().await?;
    Ok(role_changed(&app, outcome))
}

async fn history(State(app): State<AppState>) -> Json<History> {
    Json(History {
        entries: app.failover.history(),
    })
}

async fn test_ips(State(app): State<AppState>) -> Json<TestIpResults> {
    let ips = app.config.current().failover.backup.test_ips;
    Json(TestIpResults {
        results: crate::failover::testips::test_now(ips.as_slice()).await,
    })
}

/// What status warns about in these settings.
fn warnings(f: &FailoverSettings, network: &crate::model::netconfig::NetworkConfig) -> Vec<String> {
    let mut out = Vec::new();
    if f.key.is_none() {
        out.push(WARN_NO_KEY.to_string());
    }
    if f.backup.automatic_failover && f.shared_ips.is_empty() {
        out.push(WARN_NO_SHARED_IP.to_string());
    }
    // A network rollback restores the previous configuration whatever the selection says
    // (it is the safety net and is never refused): say so when it took a shared IP away.
    for ip in f.shared_ips.iter().filter(|ip| !configured(network, ip)) {
        out.push(format!(
            "shared IP {ip} is selected but no longer configured on a NIC (a network rollback \
             may have taken it away): configure it again or change the selection"
        ));
    }
    out
}

/// The list's own rules: at most [`MAX_SHARED_IPS`], each once.
fn check_shared_ips(addresses: &[IpAddr]) -> Result<(), ApiError> {
    if addresses.len() > MAX_SHARED_IPS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_SHARED_IPS} shared IPs, not {}",
            addresses.len()
        )));
    }
    for (i, ip) in addresses.iter().enumerate() {
        if addresses[..i].contains(ip) {
            return Err(ApiError::BadRequest(format!(
                "shared IP {ip} is listed more than once"
            )));
        }
    }
    Ok(())
}

/// Whether `ip` is an address configured (enabled or not) on one of this appliance's NICs.
fn configured(network: &crate::model::netconfig::NetworkConfig, ip: &IpAddr) -> bool {
    network
        .interfaces
        .iter()
        .flat_map(|i| i.addresses.iter())
        .any(|a| a.address.ip() == *ip)
}

/// Changes the `[failover]` section (atomically, off the async workers); answers it.
async fn update(
    app: &AppState,
    change: impl FnOnce(&mut FailoverSettings) + Send + 'static,
) -> Result<FailoverSettings, ApiError> {
    let config = app.config.clone();
    let after = crate::store::blocking(move || config.update(|c| change(&mut c.failover))).await?;
    Ok(after.failover)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/security/inter-appliance-key",
            put(put_key).delete(delete_key),
        )
        .route("/failover/settings", get(get_settings).put(put_settings))
        .route(
            "/failover/shared-ips",
            get(get_shared_ips).put(put_shared_ips),
        )
        .route("/failover/status", get(status))
        .route(
            "/failover/relationship",
            post(establish).delete(break_relationship),
        )
        .route("/failover/become-primary", post(become_primary))
        .route("/failover/become-backup", post(become_backup))
        .route("/failover/fix", post(fix))
        .route("/failover/sync", get(sync_progress).post(sync_now))
        .route("/failover/sync/history", get(sync_history))
        .route("/failover/history", get(history))
        .route("/failover/test-ips/test", post(test_ips))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn the_shared_ip_list_is_checked() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(check_shared_ips(&[]).is_ok());
        assert!(check_shared_ips(&[ip("192.0.2.1"), ip("2001:db8::1")]).is_ok());
        let e = check_shared_ips(&[ip("192.0.2.1"), ip("192.0.2.1")]).unwrap_err();
        assert_eq!(
            e.status_and_code(),
            (StatusCode::BAD_REQUEST, "bad_request")
        );
        assert!(e.to_string().contains("more than once"), "{e}");
        let many: Vec<IpAddr> = (1..=17).map(|i| ip(&format!("192.0.2.{i}"))).collect();
        assert!(check_shared_ips(&many)
            .unwrap_err()
            .to_string()
            .contains("at most 16"));
        let e = ApiError::NotConfiguredHere(ip("198.51.100.7"));
        assert_eq!(
            e.status_and_code(),
            (StatusCode::BAD_REQUEST, "not_configured_here")
        );
        assert!(e.to_string().contains("198.51.100.7"), "{e}");
    }

    #[test]
    fn status_warns_without_a_key_and_for_automatic_failover_without_a_shared_ip() {
        let network: crate::model::netconfig::NetworkConfig = serde_json::from_str(
            r#"{"interfaces": [{"name": "eth0", "addresses": [{"address": "192.0.2.100/24"}]}]}"#,
        )
        .unwrap();
        let mut f = FailoverSettings::default();
        assert_eq!(warnings(&f, &network), vec![WARN_NO_KEY.to_string()]);
        f.key = Some(InterApplianceKey::new("0123456789abcdef".into()).unwrap());
        assert!(warnings(&f, &network).is_empty());
        f.backup.automatic_failover = true;
        assert_eq!(warnings(&f, &network), vec![WARN_NO_SHARED_IP.to_string()]);
        f.shared_ips = vec!["192.0.2.100".parse().unwrap()];
        assert!(warnings(&f, &network).is_empty());
        // A rollback took the address away: the selection stays, with a warning.
        let w = warnings(&f, &Default::default());
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("192.0.2.100 is selected but no longer configured"),
            "{w:?}"
        );
    }

    #[test]
    fn a_key_request_is_checked() {
        let body = |s: &'static str| Bytes::from(s);
        assert!(parse_required::<KeyRequest>(&body(r#"{"key": "x", "extra": 1}"#)).is_err());
        assert!(parse_required::<KeyRequest>(&body(r#"{}"#)).is_err());
        let r = parse_required::<KeyRequest>(&body(r#"{"key": "short"}"#)).unwrap();
        let e = InterApplianceKey::new(r.key).unwrap_err();
        assert!(e.contains("16 to 256"), "{e}");
    }

    #[test]
    fn every_login_path_is_in_the_openapi_document_with_its_server() {
        let doc = include_str!("../../openapi.yaml");
        for p in PATHS.iter().chain(super::super::api_accounts::PATHS) {
            let line = format!("\n  {p}:\n    servers:\n      - url: /login/api/v1\n");
            assert!(
                doc.contains(&line),
                "{p} is not documented in agent/openapi.yaml with its servers entry"
            );
        }
    }
}
