//! Debug hooks for the end-to-end tests, answered only when the appliance booted with
//! `appliance.debug=1` (otherwise every one is a 404, as if it did not exist).
//!
//! - `POST /debug/kill-agent`: the agent kills itself with SIGKILL, as a crash would;
//! - `PUT /debug/data/{path}`: writes the body to `/data/{path}` (atomically);
//! - `GET /debug/data/{path}`: reads `/data/{path}` back;
//! - `GET /debug/clock`: the wall clock (`{"unix_seconds"}`); `PUT /debug/clock`
//!   `{"shift_seconds": -3600}` steps it by that much (at most a year either way), so a
//!   VM test can see NTP put it right. Never call it on a namespace test's agent: those
//!   share the host's clock.
//! - `PUT /debug/site-access`: sets the site's gate ([`crate::site::Gate`]) to the body,
//!   `open`, `read_only` or `paused`, as failover and sync would (until they next set it).

use super::{ApiError, AppState};
use crate::site::Access;
use crate::store;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::Router;
use std::path::{Component, PathBuf};

fn enabled(app: &AppState) -> Result<(), ApiError> {
    if app.settings.boot.debug {
        Ok(())
    } else {
        Err(ApiError::NotFound(
            "debug hooks are off (boot with appliance.debug=1)".into(),
        ))
    }
}

/// A path under the data directory: relative, no `..`, no empty parts.
fn data_path(app: &AppState, rel: &str) -> Result<PathBuf, ApiError> {
    let p = std::path::Path::new(rel);
    let ok = !rel.is_empty()
        && rel.len() <= 255
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if !ok {
        return Err(ApiError::BadRequest(format!(
            "{rel:?} is not a plain relative path"
        )));
    }
    Ok(app.settings.data_dir.join(p))
}

async fn kill_agent(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    enabled(&app)?;
    tracing::warn!("debug hook: the agent kills itself with SIGKILL");
    tokio::spawn(async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    });
    Ok(StatusCode::ACCEPTED)
}

async fn put_data(
    State(app): State<AppState>,
    Path(rel): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    enabled(&app)?;
    let path = data_path(&app, &rel)?;
    let (target, len) = (path.clone(), body.len());
    store::blocking(move || {
        if let Some(dir) = target.parent() {
            store::ensure_dir(dir, 0o755)?;
        }
        store::write_atomic(&target, &body, 0o644)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::warn!(path = %path.display(), bytes = len, "debug hook: wrote a data file");
    Ok(StatusCode::NO_CONTENT)
}

async fn get_data(
    State(app): State<AppState>,
    Path(rel): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    enabled(&app)?;
    let path = data_path(&app, &rel)?;
    std::fs::read(&path).map_err(|e| ApiError::NotFound(format!("{}: {e}", path.display())))
}

/// `PUT /debug/clock`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockShift {
    shift_seconds: f64,
}

/// The wall clock, for `/debug/clock`.
#[derive(serde::Serialize)]
struct WallClock {
    unix_seconds: f64,
}

fn wall_clock() -> axum::Json<WallClock> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    axum::Json(WallClock {
        unix_seconds: now.as_secs_f64(),
    })
}

async fn get_clock(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    enabled(&app)?;
    Ok(wall_clock())
}

async fn shift_clock(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    enabled(&app)?;
    let shift: ClockShift = super::parse_required(&body)?;
    const YEAR: f64 = 366.0 * 86_400.0;
    if !shift.shift_seconds.is_finite() || shift.shift_seconds.abs() > YEAR {
        return Err(ApiError::BadRequest(
            "shift_seconds must be a number of seconds within a year either way".into(),
        ));
    }
    use crate::ntp::clock::Clock;
    crate::ntp::clock::SystemClock
        .step(shift.shift_seconds)
        .map_err(|e| ApiError::Internal(format!("cannot step the clock: {e}")))?;
    tracing::warn!(shift = shift.shift_seconds, "debug hook: stepped the clock");
    Ok(wall_clock())
}

async fn put_site_access(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    enabled(&app)?;
    let access = match body.trim_ascii() {
        b"open" => Access::Open,
        b"read_only" => Access::ReadOnly,
        b"paused" => Access::Paused,
        _ => {
            return Err(ApiError::BadRequest(
                "the body is one of open, read_only, paused".into(),
            ))
        }
    };
    tracing::warn!(?access, "debug hook: the site's access set by hand");
    app.site.gate().set(access);
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/debug/kill-agent", post(kill_agent))
        .route("/debug/clock", get(get_clock).put(shift_clock))
        .route("/debug/site-access", put(put_site_access))
        .route("/debug/data/{*path}", get(get_data).put(put_data))
}
