//! `/network/...`: the factory address.

use super::{parse_body, ApiError, AppState};
use crate::model;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

pub fn factory_snapshot(app: &AppState) -> model::FactoryAddress {
    app.factory.borrow().clone()
}

async fn get_factory(State(app): State<AppState>) -> Json<model::FactoryAddress> {
    Json(factory_snapshot(&app))
}

/// Turns the factory address on or off, or changes its timing profile.
async fn put_factory(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<Json<model::FactoryAddress>, ApiError> {
    let update: model::FactoryAddressUpdate = parse_body(&body)?;
    Ok(Json(app.factory_control.set(&update).await?))
}

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/network/factory-address",
        get(get_factory).put(put_factory),
    )
}
