//! The HTTPS API under `/appliance/api/v1/`.
//!
//! Handlers parse requests into typed commands and hand them to the owning module
//! (`system`, `net`); they never touch the kernel themselves. Every error leaves through
//! [`ApiError`], whose one `match` picks the HTTP status and the stable code.

pub mod auth;
mod debug;
mod network;
mod system;
pub mod types;

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
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
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
    pub nl: crate::net::netlink::Netlink,
}

async fn status(State(app): State<AppState>) -> Json<types::Status> {
    let mut s = crate::system::status(&app.settings, &network::factory_snapshot(&app), app.started);
    s.config_error = app.config.load_error();
    Json(s)
}

async fn fallback(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(uri.path().chars().take(200).collect())
}

pub fn router(app: AppState) -> Router {
    let admin = Router::new()
        .route("/status", get(status))
        .merge(system::routes())
        .merge(network::routes())
        .merge(debug::routes())
        .layer(axum::middleware::from_fn_with_state(app.clone(), auth::require_admin));
    let api = Router::new().merge(system::public_routes()).merge(admin);
    Router::new()
        .nest(PREFIX, api)
        .fallback(fallback)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}
