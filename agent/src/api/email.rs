//! `/login/api/v1/email`: the site's alert e-mail settings (stored in the site settings,
//! synchronised to a backup) and a test message. The password is never shown: the
//! settings come back with `password_set`.
//!
//! | route | does |
//! | --- | --- |
//! | `GET /email` | the settings |
//! | `PUT /email` | a partial update (fields left out keep their values, `null` clears an optional one); answers the settings |
//! | `POST /email/test` | sends a test message now: 200, 409 `email_not_configured` when disabled, 502 `smtp_failed` with the relay's words |

use super::{parse_required, ApiError, AppState};
use crate::email::{self, EmailUpdate, EmailView};
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// Every path this module serves (relative to `/login/api/v1`), in OpenAPI's spelling.
#[cfg(test)]
pub(crate) const PATHS: &[&str] = &["/email", "/email/test"];

/// The answer of a test that went through.
#[derive(Debug, Serialize, Deserialize)]
pub struct TestSent {
    /// The relay that took it, `host:port`.
    pub relay: String,
    /// The recipients.
    pub to: Vec<String>,
}

async fn get_email(State(app): State<AppState>) -> Json<EmailView> {
    Json(app.site.settings().with(|s| s.email.view()))
}

async fn put_email(State(app): State<AppState>, body: Bytes) -> Result<Json<EmailView>, ApiError> {
    let update: EmailUpdate = parse_required(&body)?;
    let site = app.site.clone();
    let view = crate::store::blocking(move || email::change(&site, update)).await?;
    Ok(Json(view))
}

async fn test(State(app): State<AppState>) -> Result<Json<TestSent>, ApiError> {
    let settings = app.site.settings().current().email;
    let appliance = app.network.hostname().await.hostname;
    email::send_test(&email::smtp::Smtp, &settings, &appliance).await?;
    Ok(Json(TestSent {
        relay: email::smtp::relay_name(&settings),
        to: settings
            .to
            .as_slice()
            .iter()
            .map(|a| a.as_str().to_string())
            .collect(),
    }))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/email", get(get_email).put(put_email))
        .route("/email/test", post(test))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::EmailError;
    use axum::http::StatusCode;

    #[test]
    fn every_email_path_is_in_the_openapi_document_with_its_server() {
        assert_eq!(
            super::super::undocumented_login_paths(PATHS),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn e_mail_errors_answer_their_documented_statuses() {
        let e = ApiError::from(EmailError::NotConfigured("disabled".into()));
        assert_eq!(
            e.status_and_code(),
            (StatusCode::CONFLICT, "email_not_configured")
        );
        let e = ApiError::from(EmailError::Smtp {
            relay: "r:25".into(),
            message: "550 no".into(),
        });
        assert_eq!(
            e.status_and_code(),
            (StatusCode::BAD_GATEWAY, "smtp_failed")
        );
        let e = ApiError::from(EmailError::Invalid(email::InvalidEmail::HalfCredentials));
        assert_eq!(
            e.status_and_code(),
            (StatusCode::BAD_REQUEST, "bad_request")
        );
    }

    #[test]
    fn a_refused_change_leaves_the_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let site = crate::site::SiteStore::open(dir.path());
        let change = |json: &str| {
            let u: EmailUpdate = parse_required(&Bytes::from(json.to_string())).unwrap();
            email::change(&site, u)
        };
        let v = change(r#"{"smtp_host": "192.0.2.25", "password": "p", "username": "u"}"#).unwrap();
        assert!(v.password_set);
        let before = std::fs::read_to_string(dir.path().join("settings.toml")).unwrap();
        let e = change(r#"{"enabled": true}"#).unwrap_err();
        assert!(e.to_string().contains("without from, to"), "{e}");
        let after = std::fs::read_to_string(dir.path().join("settings.toml")).unwrap();
        assert_eq!(before, after);
        assert!(!site.settings().current().email.enabled);
    }
}
