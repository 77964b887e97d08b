//! `/login/api/v1/api-accounts`: the vendor command API's accounts (OAuth clients), site
//! settings kept by `admin::api_accounts`. `POST` makes one and answers its secret, the
//! only time it is shown; `GET` lists them (never a secret); `DELETE .../{client_id}`
//! removes one and ends its access tokens at once.

use super::{parse_required, ApiError, AppState};
use crate::admin::api_accounts::{self, Access, AccountError, AccountView, NewAccount};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;

/// Every path this module serves (relative to `/login/api/v1`), in OpenAPI's spelling.
#[cfg(test)]
pub(crate) const PATHS: &[&str] = &["/api-accounts", "/api-accounts/{client_id}"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccountRequest {
    name: String,
    access: Access,
}

/// The status and stable code for each account error.
pub(super) fn status_and_code(e: &AccountError) -> (StatusCode, &'static str) {
    match e {
        AccountError::BadName => (StatusCode::BAD_REQUEST, "bad_request"),
        AccountError::TooMany => (StatusCode::CONFLICT, "conflict"),
        AccountError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        AccountError::Site(crate::store::DocumentError::Unreadable { .. }) => {
            (StatusCode::CONFLICT, "config_unreadable")
        }
        AccountError::Site(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

async fn list(State(app): State<AppState>) -> Json<Vec<AccountView>> {
    Json(
        app.site
            .settings()
            .with(|s| s.api_accounts.iter().map(AccountView::from).collect()),
    )
}

async fn create(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<NewAccount>), ApiError> {
    let req: NewAccountRequest = parse_required(&body)?;
    let site = app.site.clone();
    let new = crate::store::blocking(move || {
        site.settings().try_update(|s| {
            api_accounts::add(
                &mut s.api_accounts,
                &req.name,
                req.access,
                crate::model::unix_now(),
            )
        })
    })
    .await?;
    tracing::info!(account = %new.name, client_id = %new.client_id, access = %new.access, "API account created");
    Ok((StatusCode::CREATED, Json(new)))
}

async fn remove(
    State(app): State<AppState>,
    Path(client_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let site = app.site.clone();
    let id = client_id.clone();
    crate::store::blocking(move || {
        site.settings()
            .try_update(|s| api_accounts::remove(&mut s.api_accounts, &id))
    })
    .await?;
    let tokens = app.api_accounts.revoke(&client_id);
    tracing::info!(%client_id, tokens_ended = tokens, "API account removed");
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api-accounts", get(list).post(create))
        .route("/api-accounts/{client_id}", delete(remove))
}
