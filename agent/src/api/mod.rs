//! The HTTPS API under `/appliance/api/v1/`.
//!
//! Handlers parse requests into typed commands and hand them to the owning module
//! (`system`, `net`); they never touch the kernel themselves. Every error leaves through
//! [`ApiError`], whose one `match` picks the HTTP status and the stable code.

pub mod auth;
mod debug;
mod net_config;
pub mod net_types;
mod network;
mod system;
pub mod types;

use crate::net::factory_control::FactoryError;
use crate::net::model::ValidationError;
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
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const PREFIX: &str = "/appliance/api/v1";

/// Largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no such endpoint: {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
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
    Factory(#[from] FactoryError),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Power(PowerError::AlreadyScheduled(_)) => {
                (StatusCode::CONFLICT, "already_scheduled")
            }
            ApiError::Power(PowerError::DelayTooLong | PowerError::ReasonTooLong) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            ApiError::Auth(e) => auth::status_and_code(e),
            ApiError::Power(PowerError::Init(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "init_unavailable")
            }
            ApiError::Network(ChangeError::Invalid(ValidationError::UnknownNic { .. })) => {
                (StatusCode::BAD_REQUEST, "unknown_nic")
            }
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
            ApiError::Network(ChangeError::NothingPending) => {
                (StatusCode::CONFLICT, "nothing_pending")
            }
            ApiError::Network(ChangeError::Kernel(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "network_error")
            }
            ApiError::Network(ChangeError::Config(_) | ChangeError::Rollback(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
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
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = types::ErrorBody {
            error: types::ErrorDetail {
                code: code.to_string(),
                message: self.to_string(),
            },
        };
        (status, Json(body)).into_response()
    }
}

/// Parses an optional JSON body: empty means the type's default.
fn parse_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Parses a JSON body that must be there.
fn parse_required<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("a JSON body is required".into()));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub started: Instant,
    pub factory: Arc<Mutex<types::FactoryAddress>>,
    pub power: Power,
    pub config: Arc<crate::config::ConfigStore>,
    pub admin: Arc<crate::admin::Admin>,
    /// The live TLS configuration, reloaded when a certificate is imported.
    pub tls: axum_server::tls_rustls::RustlsConfig,
    /// Turns the factory address on and off (the rule against locking oneself out).
    pub factory_control: Arc<crate::net::factory_control::FactoryControl>,
    pub network: crate::net::service::NetworkService,
}

async fn status(State(app): State<AppState>) -> Json<types::Status> {
    let mut s = crate::system::status(&app.settings, &network::factory_snapshot(&app), app.started);
    s.config_error = app.config.load_error();
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
    let body = types::ErrorBody {
        error: types::ErrorDetail {
            code: code.into(),
            message,
        },
    };
    (status, Json(body)).into_response()
}

async fn fallback(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(uri.path().chars().take(200).collect())
}

pub fn router(app: AppState) -> Router {
    let admin = Router::new()
        .route("/status", get(status))
        .merge(system::routes())
        .merge(network::routes())
        .merge(net_config::routes())
        .merge(debug::routes())
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_admin,
        ));
    let api = Router::new().merge(system::public_routes()).merge(admin);
    Router::new()
        .nest(PREFIX, api)
        .fallback(fallback)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(app)
}
