//! `/login`, `/logout` and `/system/...`: sessions, the admin password, API tokens,
//! shutdown and reboot.

use super::{parse_body, ApiError, AppState};
use crate::admin::store::ChangeOptions;
use crate::model;
use crate::system::PowerCommand;
use appliance_proto::control::PowerAction;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use std::net::SocketAddr;

async fn login(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Json<model::LoginResponse>, ApiError> {
    let req: model::LoginRequest = super::parse_required(&body)?;
    let login = app
        .admin
        .login(peer.ip(), &req.username, &req.password)
        .await?;
    Ok(Json(model::LoginResponse {
        token: login.token,
        expires_in_seconds: crate::admin::sessions::IDLE.as_secs(),
        must_change_password: login.must_change_password,
    }))
}

async fn logout(State(app): State<AppState>, headers: HeaderMap) -> StatusCode {
    if let Some(t) = super::auth::bearer(&headers) {
        app.admin.logout(&t);
    }
    StatusCode::NO_CONTENT
}

async fn change_password(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Json<model::Message>, ApiError> {
    let req: model::PasswordChange = super::parse_required(&body)?;
    let username = req.username.unwrap_or_else(|| app.admin.username());
    app.admin
        .change_password(
            peer.ip(),
            &username,
            &req.current_password,
            &req.new_password,
            ChangeOptions {
                keep_tokens: req.keep_tokens,
            },
        )
        .await?;
    let tokens = if req.keep_tokens {
        "API tokens kept"
    } else {
        "every API token is revoked"
    };
    Ok(Json(model::Message {
        message: format!("password changed; every session has ended ({tokens}), log in again"),
    }))
}

async fn list_tokens(State(app): State<AppState>) -> Json<Vec<model::ApiToken>> {
    Json(
        app.admin
            .tokens()
            .into_iter()
            .map(|t| model::ApiToken {
                name: t.name,
                created_unix: t.created_unix,
                expires_unix: t.expires_unix,
                scope: t.scope,
            })
            .collect(),
    )
}

async fn create_token(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<model::NewApiToken>), ApiError> {
    let req: model::TokenRequest = super::parse_required(&body)?;
    if req.expires_in_days == Some(0) {
        return Err(ApiError::BadRequest(
            "expires_in_days must be at least 1 (leave it out for no expiry)".into(),
        ));
    }
    let admin = app.admin.clone();
    let name = req.name.clone();
    let (days, scope) = (req.expires_in_days, req.scope);
    let token = crate::store::blocking(move || admin.create_token(&name, days, scope)).await?;
    Ok((
        StatusCode::CREATED,
        Json(model::NewApiToken {
            name: req.name,
            scope,
            token,
        }),
    ))
}

async fn delete_token(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let admin = app.admin.clone();
    let gone = name.clone();
    crate::store::blocking(move || admin.delete_token(&gone)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn power(
    app: &AppState,
    action: PowerAction,
    body: &Bytes,
) -> Result<(StatusCode, Json<model::PowerAccepted>), ApiError> {
    let req: model::PowerRequest = parse_body(body)?;
    let cmd = PowerCommand::from_request(action, &req)?;
    let delay_seconds = cmd.delay.as_secs() as u32;
    app.power.schedule(cmd).await?;
    let what = match action {
        PowerAction::PowerOff => "power off",
        PowerAction::Reboot => "reboot",
        PowerAction::Halt => "halt",
    };
    let when = if delay_seconds == 0 {
        "now".to_string()
    } else {
        format!("in {delay_seconds} s")
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(model::PowerAccepted {
            action: action.to_string(),
            delay_seconds,
            message: format!("the appliance will {what} {when}"),
        }),
    ))
}

async fn shutdown(State(app): State<AppState>, body: Bytes) -> Result<impl IntoResponse, ApiError> {
    power(&app, PowerAction::PowerOff, &body).await
}

async fn reboot(State(app): State<AppState>, body: Bytes) -> Result<impl IntoResponse, ApiError> {
    power(&app, PowerAction::Reboot, &body).await
}

fn read_identity(app: &AppState) -> Result<crate::tls::Identity, ApiError> {
    let path = crate::tls::identity_path(&app.settings.tls_dir());
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ApiError::Internal(format!("cannot read {}: {e}", path.display())))?;
    crate::tls::Identity::from_pem(&text, &text, None)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

async fn certificate(
    State(app): State<AppState>,
) -> Result<Json<model::CertificateInfo>, ApiError> {
    let id = read_identity(&app)?;
    Ok(Json(
        id.info().map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}

/// The status and stable code for each certificate error.
pub(super) fn certificate_status_and_code(e: &crate::tls::TlsError) -> (StatusCode, &'static str) {
    use crate::tls::TlsError as E;
    match e {
        E::PassphraseRequired => (StatusCode::BAD_REQUEST, "passphrase_required"),
        E::MalformedPem { .. } | E::UnknownPemBlock(_) => {
            (StatusCode::BAD_REQUEST, "malformed_pem")
        }
        E::KdfTooCostly { .. } => (StatusCode::BAD_REQUEST, "kdf_too_costly"),
        E::UnsupportedEncryption(_) => (StatusCode::BAD_REQUEST, "unsupported_encryption"),
        E::PassphraseAndUnencrypted
        | E::PassphraseTooShort
        | E::NoCertificate
        | E::NoKey
        | E::SeveralKeys
        | E::PassphraseNeeded
        | E::BadPassphrase
        | E::KeyMismatch
        | E::Unusable(_)
        | E::Parse(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        E::NotPkcs8 => (StatusCode::CONFLICT, "conflict"),
        E::Generate(_) | E::Store(_) | E::Read { .. } | E::Encrypt(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    }
}

/// Replaces the HTTPS identity; new connections use it at once.
async fn import_certificate(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<Json<model::CertificateInfo>, ApiError> {
    let req: model::CertificateImport = super::parse_required(&body)?;
    let dir = app.settings.tls_dir();
    let (id, info) = crate::store::blocking(move || {
        let id = crate::tls::Identity::from_pem(
            &req.chain_pem,
            &req.key_pem,
            req.passphrase.as_deref(),
        )?;
        let info = id.info()?;
        crate::tls::save(&dir, &id).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok::<_, ApiError>((id, info))
    })
    .await?;
    app.tls.reload_from_config(id.server_config());
    tracing::warn!(subject = %info.subject, fingerprint = %info.sha256_fingerprint, "HTTPS certificate replaced");
    Ok(Json(info))
}

async fn export_certificate(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<Json<model::CertificateExport>, ApiError> {
    let req: model::CertificateExportRequest = parse_body(&body)?;
    let passphrase = crate::tls::export_protection(req.passphrase.as_deref(), req.unencrypted)?
        .map(str::to_string);
    let encrypted = passphrase.is_some();
    let id = read_identity(&app)?;
    let (key_pem, id) =
        tokio::task::spawn_blocking(move || id.export_key(passphrase.as_deref()).map(|k| (k, id)))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
    tracing::warn!(encrypted, "HTTPS certificate and key exported");
    Ok(Json(model::CertificateExport {
        chain_pem: id.chain_pem(),
        key_pem,
        key_encrypted: encrypted,
    }))
}

async fn reset(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<model::Message>), ApiError> {
    use appliance_proto::control::ResetLevel;
    let req: model::ResetRequest = super::parse_required(&body)?;
    let delay = req.delay_seconds.unwrap_or(0);
    let when = if delay == 0 {
        "reboots".to_string()
    } else {
        format!("reboots in {delay} s (DELETE /system/reset cancels it until then)")
    };
    let (level, message) = match req.level {
        model::ResetLevelName::Config => (
            ResetLevel::Config,
            format!(
                "the appliance {when} and resets to factory defaults: it comes back at \
                 169.254.1.1 (or .2, .3, ...) with user admin, password password"
            ),
        ),
        model::ResetLevelName::Rma => (
            ResetLevel::Rma,
            format!(
                "the appliance {when}, erases its whole data disk, checks it, shows the report \
                 and powers off, ready to ship"
            ),
        ),
    };
    crate::system::factory_reset(&app.power, level, delay).await?;
    Ok((StatusCode::ACCEPTED, Json(model::Message { message })))
}

/// Clears a factory reset whose reboot has not begun.
async fn cancel_reset(State(app): State<AppState>) -> Result<Json<model::Message>, ApiError> {
    let level = crate::system::cancel_reset(&app.power).await?;
    Ok(Json(model::Message {
        message: format!(
            "the factory reset ({level}) is cancelled: nothing will be wiped and the appliance \
             does not reboot"
        ),
    }))
}

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../openapi.yaml");

async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/yaml")],
        OPENAPI,
    )
}

/// Routes open to anyone: the API's description, logging in and out, and changing the
/// password (which proves the current one itself).
pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.yaml", get(openapi))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/system/admin/password", post(change_password))
}

/// Routes for an authenticated administrator.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/system/shutdown", post(shutdown))
        .route("/system/reboot", post(reboot))
        .route("/system/reset", post(reset).delete(cancel_reset))
        .route("/system/tokens", get(list_tokens).post(create_token))
        .route("/system/tokens/{name}", delete(delete_token))
        .route(
            "/system/certificate",
            get(certificate).put(import_certificate),
        )
        .route("/system/certificate/export", post(export_certificate))
}

#[cfg(test)]
mod tests {
    /// Every route of this module and of the others outside `/network`.
    const PATHS: &[&str] = &[
        "/openapi.yaml",
        "/login",
        "/logout",
        "/system/admin/password",
        "/system/tokens",
        "/system/tokens/{name}",
        "/system/certificate",
        "/system/certificate/export",
        "/system/shutdown",
        "/system/reboot",
        "/system/reset",
        "/status",
        "/debug/kill-agent",
        "/debug/data/{path}",
        "/debug/clock",
    ];

    #[test]
    fn every_path_is_in_the_openapi_document() {
        for p in PATHS {
            assert!(
                super::OPENAPI.contains(&format!("\n  {p}:")),
                "{p} is not documented in agent/openapi.yaml"
            );
        }
    }

    #[test]
    fn the_openapi_document_is_valid_yaml_shape() {
        // Every path entry sits under `paths:` and every `$ref` points into components.
        assert!(super::OPENAPI.starts_with("openapi: 3.0.3"));
        for r in super::OPENAPI.split("$ref: \"").skip(1) {
            let target = r.split('"').next().unwrap_or("");
            let name = target.rsplit('/').next().unwrap_or("");
            assert!(target.starts_with("#/components/"), "{target}");
            assert!(
                super::OPENAPI.contains(&format!("\n    {name}:")),
                "{target} is not defined"
            );
        }
    }
}
