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
    if update.enabled.is_none() && update.timing.is_none() {
        return Err(ApiError::BadRequest(
            "nothing to change: give \"enabled\" and/or \"timing\"".into(),
        ));
    }
    if update.enabled == Some(false) && app.config.current().factory_address.enabled {
        let other = crate::net::has_other_ipv4(&app.nl)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if !other {
            return Err(ApiError::Conflict(
                "refusing to turn off the factory address: no other IPv4 address is configured, so the \
                 appliance would become unreachable; add an address first"
                    .into(),
            ));
        }
    }
    app.config
        .update(|c| {
            if let Some(e) = update.enabled {
                c.factory_address.enabled = e;
            }
            if let Some(t) = update.timing {
                c.factory_address.timing = t;
            }
        })
        .map_err(ApiError::Config)?;
    tracing::info!(enabled = ?update.enabled, timing = ?update.timing.map(|t| t.as_str()), "factory address settings changed");
    let mut snapshot = factory_snapshot(&app);
    let cfg = app.config.current().factory_address;
    snapshot.enabled = cfg.enabled;
    snapshot.timing = cfg.timing;
    Ok(Json(snapshot))
}

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/network/factory-address",
        get(get_factory).put(put_factory),
    )
}
