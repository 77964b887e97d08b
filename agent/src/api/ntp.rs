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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn the_route_and_its_statuses_are_in_the_openapi_document() {
        let doc = super::super::system::OPENAPI;
        let start = doc
            .find("\n  /network/ntp:\n")
            .expect("/network/ntp documented");
        let end = doc[start + 1..]
            .find("\n  /")
            .map_or(doc.len(), |e| start + 1 + e);
        let section = &doc[start..end];
        for status in [
            "\"200\"", "\"400\"", "\"401\"", "\"403\"", "\"409\"", "\"413\"",
        ] {
            assert!(section.contains(status), "{status} missing:\n{section}");
        }
    }

    #[test]
    fn bad_servers_and_an_unreadable_file_answer_their_documented_statuses() {
        let e = parse_required::<NtpRequest>(&Bytes::from(r#"{"servers": ["a b"]}"#)).unwrap_err();
        assert_eq!(
            e.status_and_code(),
            (StatusCode::BAD_REQUEST, "bad_request")
        );
        assert!(
            e.to_string()
                .contains("neither an IP address nor a host name"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(crate::config::FILE), "version = ").unwrap();
        let config = crate::config::ConfigStore::open(dir.path());
        let e = ApiError::from(
            config
                .update(|c| c.ntp.servers = Default::default())
                .unwrap_err(),
        );
        assert_eq!(
            e.status_and_code(),
            (StatusCode::CONFLICT, "config_unreadable")
        );
    }
}
