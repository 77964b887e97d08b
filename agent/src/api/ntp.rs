//! `/network/ntp`: the NTP servers (a local setting, never synchronised to a failover
//! peer) and how the clock stands.
//!
//! | route | does |
//! | --- | --- |
//! | `GET /network/ntp` | the servers and the status |
//! | `PUT /network/ntp` | replaces the server list (`{"servers": [...]}`, at most 5, an empty list turns NTP off); answers as `GET`; the client polls the new servers at once |

use super::{parse_required, ApiError, AppState};
use crate::model::ntp::{NtpRequest, NtpView};
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

fn view(app: &AppState) -> NtpView {
    NtpView {
        servers: app.config.current().ntp.servers,
        status: app.ntp.snapshot(),
    }
}

async fn get_ntp(State(app): State<AppState>) -> Json<NtpView> {
    Json(view(&app))
}

async fn put_ntp(State(app): State<AppState>, body: Bytes) -> Result<Json<NtpView>, ApiError> {
    let request: NtpRequest = parse_required(&body)?;
    let config = app.config.clone();
    crate::store::blocking(move || config.update(|c| c.ntp.servers = request.servers)).await?;
    Ok(Json(view(&app)))
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/network/ntp", get(get_ntp).put(put_ntp))
}
