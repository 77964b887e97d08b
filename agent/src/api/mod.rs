//! The HTTPS API: one router per surface, each with its own auth and error rendering.
//!
//! | surface | prefix | body | errors | auth |
//! | --- | --- | --- | --- | --- |
//! | the appliance ([`system`], [`network`], [`net_config`], [`ntp`], [`debug`]) | `/appliance/api/v1` | JSON | JSON | admin (login and password change open) |
//! | the site ([`login`], [`api_accounts`], [`email`]) | `/login/api/v1` | JSON | JSON | admin |
//! | the vendor's command API ([`command`]) | `/api/command` | XML | `<error>` XML | an OAuth access token of an API account |
//! | its token endpoint ([`oauth`]) | `/oauth2/token` | form | RFC 6749 JSON | the API account's id and secret (HTTP Basic) |
//! | the health probe ([`health`]) | `/check_health` | plain text | plain text | none |
//! | the failover peer channel ([`peer`]) | `/peer/v1` | JSON | JSON | the inter-appliance key, proved over the TLS session |
//!
//! Handlers parse requests into typed commands and hand them to the owning module
//! (`system`, `net`); they never touch the kernel themselves. Every error leaves through
//! [`ApiError`], whose one `match` picks the HTTP status and the stable code; the surface's
//! own layer renders it (JSON, XML or text). Bodies are read by one parser
//! ([`parse_body`], [`parse_required`]).

mod api_accounts;
pub mod auth;
mod command;
mod debug;
pub mod email;
mod files;
mod health;
pub mod login;
mod net_config;
mod network;
mod ntp;
mod oauth;
mod peer;
mod system;

use crate::config::ConfigError;
use crate::model;
use crate::model::netconfig::ValidationError;
use crate::net::factory_control::FactoryError;
use crate::net::service::ChangeError;
use crate::net::utilities::UtilityError;
use crate::settings::Settings;
use crate::system::{Power, PowerError};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// The appliance's own API (`/appliance`).
pub const PREFIX: &str = "/appliance/api/v1";
/// The site's API (`/login`): failover, and next the site's settings and files.
pub const LOGIN_PREFIX: &str = "/login/api/v1";

/// Largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

/// Largest body read and thrown away to answer 413 to a client that announced more than
/// [`MAX_BODY`] (most clients write the whole body before they read: without this they
/// see a broken connection instead of the answer). A larger one gets the answer and the
/// connection is closed.
const MAX_DRAIN: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no such endpoint: {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0} is not an address configured on this appliance's NICs: add it there first")]
    NotConfiguredHere(std::net::IpAddr),
    #[error("the request body has {0} bytes; at most {MAX_BODY} are accepted")]
    PayloadTooLarge(u64),
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Power(#[from] PowerError),
    #[error(transparent)]
    Auth(#[from] crate::admin::store::AuthError),
    #[error(transparent)]
    Network(#[from] ChangeError),
    #[error(transparent)]
    NetworkTest(#[from] UtilityError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Factory(#[from] FactoryError),
    #[error(transparent)]
    Certificate(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Failover(#[from] crate::failover::FailoverError),
    #[error(transparent)]
    ApiAccount(#[from] crate::admin::api_accounts::AccountError),
    #[error(transparent)]
    Email(#[from] crate::email::EmailError),
    #[error(transparent)]
    Site(#[from] crate::site::SiteRefused),
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    #[error(transparent)]
    Files(#[from] crate::files::FilesError),
}

impl ApiError {
    /// The `Retry-After` seconds of an error that asks to come back later.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Auth(e) => auth::retry_after(e),
            _ => None,
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::NotConfiguredHere(_) => (StatusCode::BAD_REQUEST, "not_configured_here"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Power(PowerError::AlreadyScheduled(_)) => {
                (StatusCode::CONFLICT, "already_scheduled")
            }
            ApiError::Power(PowerError::DelayTooLong | PowerError::ReasonTooLong) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            ApiError::Power(PowerError::NoResetPending) => {
                (StatusCode::NOT_FOUND, "no_reset_pending")
            }
            ApiError::Power(PowerError::CannotCancel(_)) => {
                (StatusCode::CONFLICT, "reset_under_way")
            }
            ApiError::Auth(e) => auth::status_and_code(e),
            ApiError::Power(PowerError::Init(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "init_unavailable")
            }
            ApiError::Network(ChangeError::Invalid(ValidationError::UnknownNic { .. })) => {
                (StatusCode::BAD_REQUEST, "unknown_nic")
            }
            ApiError::Network(ChangeError::Invalid(ValidationError::RouteShadowsConnected {
                ..
            })) => (StatusCode::BAD_REQUEST, "route_shadows_connected"),
            ApiError::Network(ChangeError::Invalid(_)) => {
                (StatusCode::BAD_REQUEST, "invalid_network_config")
            }
            ApiError::Network(ChangeError::NotConfigured(_)) => {
                (StatusCode::NOT_FOUND, "not_configured")
            }
            ApiError::Network(ChangeError::AddressInUse { .. }) => {
                (StatusCode::CONFLICT, "address_in_use")
            }
            ApiError::Network(ChangeError::Pending { .. }) => {
                (StatusCode::CONFLICT, "change_pending")
            }
            ApiError::Network(ChangeError::WouldCutOff { .. }) => {
                (StatusCode::CONFLICT, "would_cut_off_client")
            }
            ApiError::Network(ChangeError::OwnedByFailover(_)) => {
                (StatusCode::CONFLICT, "owned_by_failover")
            }
            ApiError::Network(ChangeError::NothingPending) => {
                (StatusCode::CONFLICT, "nothing_pending")
            }
            ApiError::Network(ChangeError::Kernel(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "network_error")
            }
            ApiError::Network(ChangeError::Config(ConfigError::Unreadable { .. }))
            | ApiError::Config(ConfigError::Unreadable { .. }) => {
                (StatusCode::CONFLICT, "config_unreadable")
            }
            ApiError::Config(ConfigError::Invalid { .. }) => {
                (StatusCode::BAD_REQUEST, "invalid_network_config")
            }
            ApiError::Network(ChangeError::Config(_) | ChangeError::Rollback(_))
            | ApiError::Config(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::NetworkTest(UtilityError::BadInput(_)) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            ApiError::Factory(FactoryError::NothingToChange) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            ApiError::Factory(FactoryError::WouldLockOut) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Factory(FactoryError::Kernel(_) | FactoryError::Config(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            ApiError::Certificate(e) => system::certificate_status_and_code(e),
            ApiError::ApiAccount(e) => api_accounts::status_and_code(e),
            ApiError::Failover(e) => numeric(e.status_and_code()),
            ApiError::Email(e) => numeric(e.status_and_code()),
            ApiError::Site(e) => numeric(e.status_and_code()),
            ApiError::Sync(e) => numeric(e.status_and_code()),
            ApiError::Files(e) => numeric(e.status_and_code()),
        }
    }
}

/// A domain error's own status number as an HTTP status.
fn numeric((status, code): (u16, &'static str)) -> (StatusCode, &'static str) {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        code,
    )
}

/// The stable code and message of an error response, kept in the response's extensions
/// so that a surface that does not speak JSON can render the same error its own way.
#[derive(Clone, Debug)]
pub struct ErrorInfo {
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = self.to_string();
        let body = model::ErrorBody {
            error: model::ErrorDetail {
                code: code.to_string(),
                message: message.clone(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
            .extensions_mut()
            .insert(ErrorInfo { code, message });
        response
    }
}

/// Parses an optional JSON body: empty means the type's default.
pub(crate) fn parse_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_object(body)
}

/// Parses a JSON body that must be there.
pub(crate) fn parse_required<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("a JSON body is required".into()));
    }
    parse_object(body)
}

/// Every request body of the API is a JSON object (serde would also fill a struct from an
/// array, field by field).
fn parse_object<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadRequest(
            "invalid JSON body: expected an object ({...})".into(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Answers 413 to a request whose announced body is over [`MAX_BODY`], after reading (up
/// to [`MAX_DRAIN`]) and dropping it, so that the client gets to read the answer.
async fn refuse_oversized(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let length = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) if n > MAX_BODY as u64 => {
            if n <= MAX_DRAIN {
                let _ = axum::body::to_bytes(request.into_body(), MAX_DRAIN as usize).await;
            }
            ApiError::PayloadTooLarge(n).into_response()
        }
        _ => next.run(request).await,
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub started: Instant,
    /// The factory address as its service last published it.
    pub factory: watch::Receiver<model::FactoryAddress>,
    /// The agent's long-running tasks.
    pub tasks: watch::Receiver<Vec<model::TaskStatus>>,
    pub power: Power,
    /// The local settings.
    pub config: Arc<crate::config::ConfigStore>,
    /// The site settings (alert e-mail: [`email`]) and files.
    pub site: Arc<crate::site::SiteStore>,
    /// The site's file store ([`files`]).
    pub files: Arc<crate::files::FileStore>,
    pub admin: Arc<crate::admin::Admin>,
    /// The live TLS configuration, reloaded when a certificate is imported.
    pub tls: axum_server::tls_rustls::RustlsConfig,
    /// Turns the factory address on and off (the rule against locking oneself out).
    pub factory_control: Arc<crate::net::factory_control::FactoryControl>,
    pub network: crate::net::service::NetworkService,
    /// The failover pair: role, shared IPs, commands to the driver.
    pub failover: crate::failover::FailoverService,
    /// The data sync (`crate::sync`).
    pub sync: crate::sync::SyncService,
    /// The command API's access tokens (the accounts themselves are site settings).
    pub api_accounts: Arc<crate::admin::api_accounts::ApiAccounts>,
    /// The NTP client's status (is the clock synchronised?).
    pub ntp: crate::ntp::NtpService,
}

async fn status(State(app): State<AppState>) -> Json<model::Status> {
    let mut s = crate::system::status(&app.settings, &network::factory_snapshot(&app), app.started);
    s.config_error = app.config.load_error();
    s.agent.tasks = app.tasks.borrow().clone();
    Json(s)
}

/// Errors raised outside the handlers (a body over the limit, a method a route does not
/// take, a malformed path) come out of axum as plain text; this gives them the same JSON
/// shape as every other error.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    let bytes = axum::body::to_bytes(response.into_body(), MAX_BODY)
        .await
        .unwrap_or_default();
    let mut message = String::from_utf8_lossy(&bytes).trim().to_string();
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("error").to_lowercase();
    }
    let body = model::ErrorBody {
        error: model::ErrorDetail {
            code: code.into(),
            message,
        },
    };
    (status, Json(body)).into_response()
}

/// Errors axum raises itself (an unknown path, a method a route does not take, a body
/// over the limit), in the JSON shape.
async fn fallback(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(uri.path().chars().take(200).collect())
}

/// The site's routes ask the site's [`crate::site::Gate`] first: a backup's site is read
/// only (409 `backup_read_only`), a site paused for a final sync answers nothing (503
/// `site_paused`).
async fn site_gate(
    State(app): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let gate = app.site.gate();
    let allowed = if request.method().is_safe() {
        gate.check_read()
    } else {
        gate.check_write()
    };
    match allowed {
        Ok(()) => next.run(request).await,
        Err(e) => ApiError::Site(e).into_response(),
    }
}

/// A JSON surface: its routes (with their auth and fallback), axum's own errors turned
/// into JSON.
fn json_surface(routes: Router<AppState>) -> Router<AppState> {
    with_json_errors(routes.layer(axum::middleware::from_fn(refuse_oversized)))
}

/// Axum's own errors turned into JSON, for a surface whose routes apply the body limit
/// themselves.
fn with_json_errors(routes: Router<AppState>) -> Router<AppState> {
    routes.layer(axum::middleware::map_response(json_errors))
}

pub fn router(app: AppState) -> Router {
    let require_admin = || axum::middleware::from_fn_with_state(app.clone(), auth::require_admin);
    let appliance = Router::new()
        .route("/status", get(status))
        .merge(system::routes())
        .merge(network::routes())
        .merge(ntp::routes())
        .merge(net_config::routes())
        .merge(debug::routes())
        .layer(require_admin());
    let appliance = Router::new()
        .merge(system::public_routes())
        .merge(appliance)
        .fallback(fallback);
    Router::new()
        .nest(PREFIX, json_surface(appliance))
        // Nothing there is public: unknown paths answer 401 too until logged in.
        .nest(
            LOGIN_PREFIX,
            // The body limit applies to each group but the file routes, which stream
            // their bodies with their own limit (the free space).
            with_json_errors(
                login::routes()
                    .layer(axum::middleware::from_fn(refuse_oversized))
                    .merge(
                        api_accounts::routes()
                            .merge(email::routes())
                            .layer(axum::middleware::from_fn(refuse_oversized))
                            .merge(files::routes())
                            .layer(axum::middleware::from_fn_with_state(app.clone(), site_gate)),
                    )
                    .fallback(fallback)
                    .layer(require_admin()),
            ),
        )
        .nest(
            peer::PREFIX,
            json_surface(peer::routes(&app).fallback(fallback)),
        )
        .nest(command::PATH, command::surface())
        .merge(oauth::routes())
        .route(health::PATH, get(health::check_health))
        .fallback(fallback)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// The paths of `paths` (relative to `/login/api/v1`, in OpenAPI's spelling) that
/// `agent/openapi.yaml` lacks or documents without the site surface's `servers` entry.
#[cfg(test)]
pub(crate) fn undocumented_login_paths<'a>(paths: &[&'a str]) -> Vec<&'a str> {
    let doc = include_str!("../../openapi.yaml");
    paths
        .iter()
        .copied()
        .filter(|p| {
            !doc.contains(&format!(
                "\n  {p}:\n    servers:\n      - url: {LOGIN_PREFIX}\n"
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        #[derive(serde::Deserialize, Default, Debug)]
        #[serde(default, deny_unknown_fields)]
        struct Fields {
            #[allow(dead_code)]
            a: Option<u32>,
        }
        for body in ["[]", " [1]", "null", "3", "\"a\""] {
            let e = parse_required::<Fields>(&Bytes::from(body)).unwrap_err();
            assert_eq!(
                e.status_and_code(),
                (StatusCode::BAD_REQUEST, "bad_request"),
                "{body}"
            );
            assert!(parse_body::<Fields>(&Bytes::from(body)).is_err(), "{body}");
        }
        assert!(parse_required::<Fields>(&Bytes::from(" {\"a\": 1}")).is_ok());
        assert!(parse_body::<Fields>(&Bytes::from("  ")).is_ok());
    }

    #[test]
    fn a_change_over_a_settings_file_that_does_not_parse_is_409_config_unreadable() {
        let unreadable = (StatusCode::CONFLICT, "config_unreadable");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(crate::config::FILE), "version = ").unwrap();
        std::fs::write(dir.path().join(crate::admin::store::FILE), "version = ").unwrap();

        let config = crate::config::ConfigStore::open(dir.path());
        let refused = || config.update(|c| c.factory_address.enabled = false);
        let e = ApiError::Config(refused().unwrap_err());
        assert_eq!(e.status_and_code(), unreadable, "{e}");
        let e = ApiError::Network(ChangeError::Config(refused().unwrap_err()));
        assert_eq!(e.status_and_code(), unreadable, "{e}");

        let admin = crate::admin::Admin::open(dir.path());
        let e = ApiError::Auth(
            admin
                .create_token("backup", None, model::TokenScope::Admin)
                .unwrap_err(),
        );
        assert_eq!(e.status_and_code(), unreadable, "{e}");
    }
}
