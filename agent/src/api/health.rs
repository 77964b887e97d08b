//! `GET /check_health`: the vendor's health probe for load balancers and monitors. 200
//! when the appliance is healthy, 500 when not, with a short human-readable line and no
//! other data (seed 003, "Check B Series Appliance Health"). No authentication.

use super::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

pub const PATH: &str = "/check_health";

pub async fn check_health(State(app): State<AppState>) -> impl IntoResponse {
    let health = crate::system::health(
        &app.settings,
        app.config.load_error().is_some(),
        app.admin.load_error().is_some(),
    );
    let (status, text) = if health.healthy() {
        (StatusCode::OK, "healthy\n")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "not healthy\n")
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
}
