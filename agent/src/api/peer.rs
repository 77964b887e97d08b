//! `/peer/v1`: the failover peer channel between two appliances, on the same TLS port as
//! the API, outside the admin's auth. Every request must carry the calling appliance's
//! proof of the inter-appliance key, bound to this very TLS session (TLS 1.3 only); every
//! answer carries ours (see `failover::wire`). A request without a valid proof answers 401
//! `key_mismatch` and nothing else; with no key set here, 409 `no_key`.
//!
//! | route | what the peer asks |
//! | --- | --- |
//! | `GET /state` | this appliance's id, version, role, epoch, whether it holds the shared IPs (the heartbeat) |
//! | `POST /relationship` | be the backup of the caller (Establish Relationship) |
//! | `DELETE /relationship` | the caller broke the relationship |
//! | `POST /command` | change role (the peer's half of a swap or a fix) |
//! | `POST /sync/...` | the data sync (see `crate::sync::wire`) |

use super::{parse_required, ApiError, AppState};
use crate::conn::TlsSession;
use crate::failover::proof::Side;
use crate::failover::wire::{self, CommandReply, CommandRequest, PeerState, RelationshipRequest};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

pub const PREFIX: &str = wire::PREFIX;

async fn state(State(app): State<AppState>) -> Json<PeerState> {
    Json(app.failover.peer_state())
}

async fn relationship(
    State(app): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<PeerState>, ApiError> {
    let req: RelationshipRequest = parse_required(&body)?;
    Ok(Json(app.failover.accept_relationship(req).await?))
}

async fn broken(State(app): State<AppState>) -> Result<Json<PeerState>, ApiError> {
    match app.failover.peer_broke().await {
        Ok(()) | Err(crate::failover::FailoverError::NoRelationship) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Json(app.failover.peer_state()))
}

async fn command(
    State(app): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<CommandReply>, ApiError> {
    let req: CommandRequest = parse_required(&body)?;
    Ok(Json(app.failover.peer_command(req).await?))
}

fn binary<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    postcard::from_bytes(body).map_err(|e| ApiError::BadRequest(format!("not a sync request: {e}")))
}

async fn sync_tree(
    State(app): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req = binary(&body)?;
    let body = crate::sync::serve::tree(app.sync.index(), app.sync.pacer(), req)
        .await
        .map_err(|e| ApiError::Internal(format!("reading the site: {e}")))?;
    Ok(body.into_response())
}

async fn sync_files(
    State(app): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    Ok(
        crate::sync::serve::files(app.sync.index(), app.sync.pacer(), binary(&body)?)
            .into_response(),
    )
}

async fn sync_chunks(
    State(app): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    Ok(
        crate::sync::serve::chunks(app.sync.index(), app.sync.pacer(), binary(&body)?)
            .into_response(),
    )
}

async fn sync_offer(
    State(app): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<crate::sync::wire::Merged>, ApiError> {
    Ok(Json(app.sync.take_offer(binary(&body)?).await?))
}

async fn sync_done(
    State(app): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    app.sync.pulled(parse_required(&body)?);
    Ok(Json(serde_json::json!({})))
}

async fn sync_pause(
    State(app): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req: crate::sync::wire::PauseRequest = parse_required(&body)?;
    app.sync.set_paused(req.pause);
    Ok(Json(serde_json::json!({})))
}

async fn sync_pull(
    State(app): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req: crate::sync::wire::PullRequest = parse_required(&body)?;
    app.sync.pull_asked(req.wait).await?;
    Ok(Json(serde_json::json!({})))
}

/// Checks the caller's proof and signs the answer with ours.
async fn require_proof(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let exporter = req
        .extensions()
        .get::<TlsSession>()
        .and_then(|s| s.exporter);
    let Some(exporter) = exporter else {
        return ApiError::BadRequest("the peer channel needs TLS 1.3".into()).into_response();
    };
    let Some(key) = app.failover.key_bytes() else {
        return ApiError::Failover(crate::failover::FailoverError::NoKey).into_response();
    };
    // Nested under the prefix: axum gives the rest of the path.
    let path = format!("{PREFIX}{}", req.uri().path());
    let method = req.method().as_str().to_string();
    let header = req
        .headers()
        .get(wire::PROOF_HEADER)
        .and_then(|v| v.to_str().ok());
    if !wire::check(&key, &exporter, Side::Client, &method, &path, header) {
        let client = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_default();
        tracing::info!(target: "remote", client = %client, "peer channel: a request without a valid key proof");
        return (
            StatusCode::UNAUTHORIZED,
            Json(crate::model::ErrorBody {
                error: crate::model::ErrorDetail {
                    code: "key_mismatch".into(),
                    message: "no valid proof of the inter-appliance key for this session".into(),
                },
            }),
        )
            .into_response();
    }
    let mut response = next.run(req).await;
    let proof = wire::proof_hex(&key, &exporter, Side::Server, &method, &path);
    if let Ok(v) = HeaderValue::from_str(&proof) {
        response.headers_mut().insert(wire::PROOF_HEADER, v);
    }
    response
}

pub fn routes(app: &AppState) -> Router<AppState> {
    Router::new()
        .route("/state", get(state))
        .route("/relationship", post(relationship).delete(broken))
        .route("/command", post(command))
        .route("/sync/tree", post(sync_tree))
        .route("/sync/files", post(sync_files))
        .route("/sync/chunks", post(sync_chunks))
        .route("/sync/done", post(sync_done))
        .route("/sync/pause", post(sync_pause))
        .route("/sync/pull", post(sync_pull))
        .route("/sync/offer", post(sync_offer))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_proof,
        ))
}
