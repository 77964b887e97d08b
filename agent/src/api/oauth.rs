//! `POST /oauth2/token`: the OAuth 2.0 token endpoint of the vendor's command API (RFC
//! 6749 §4.4, the client credentials grant). The client authenticates with HTTP Basic
//! (its client id and secret, from `/login/api/v1/api-accounts`), the body is
//! `grant_type=client_credentials` form-encoded, and the answer is
//! `{"access_token", "token_type": "Bearer", "expires_in": 3600}`, never cached.
//!
//! Errors have RFC 6749 §5.2's shape, `{"error": "...", "error_description": "..."}`:
//! `invalid_request` (400: a malformed or repeated parameter, no `grant_type`, a body
//! that is not form-encoded; 413 for one over 8 KiB), `unsupported_grant_type` (400),
//! `invalid_client` (401 with `WWW-Authenticate: Basic`), and `too_many_attempts` (429
//! with `Retry-After`) once a client address has failed to authenticate five times, as
//! admin logins are limited. The request is checked before the client is, so a malformed
//! one never counts as a failed authentication.

use super::AppState;
use crate::admin::api_accounts::GrantError;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

pub const PATH: &str = "/oauth2/token";
/// Largest form body read.
const MAX_FORM: usize = 8 * 1024;

#[derive(Serialize)]
struct TokenAnswer {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

#[derive(Serialize)]
struct ErrorAnswer {
    error: &'static str,
    error_description: String,
}

/// Why no token was issued.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the request body is over {MAX_FORM} bytes")]
    TooLarge,
    #[error("grant_type {0:?} is not supported: use client_credentials")]
    UnsupportedGrantType(String),
    #[error("{0}")]
    InvalidClient(String),
    #[error("too many failed client authentications from this address: try again in {} s", .0.as_secs().max(1))]
    Locked(Duration),
}

impl TokenError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            TokenError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            TokenError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request"),
            TokenError::UnsupportedGrantType(_) => {
                (StatusCode::BAD_REQUEST, "unsupported_grant_type")
            }
            TokenError::InvalidClient(_) => (StatusCode::UNAUTHORIZED, "invalid_client"),
            TokenError::Locked(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
        }
    }
}

impl From<GrantError> for TokenError {
    fn from(e: GrantError) -> TokenError {
        match e {
            GrantError::BadClient => TokenError::InvalidClient(e.to_string()),
            GrantError::Locked(d) => TokenError::Locked(d),
        }
    }
}

/// RFC 6749 §5.1: token answers, errors included, are not to be cached.
fn no_store(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let (status, error) = self.status_and_code();
        let body = ErrorAnswer {
            error,
            error_description: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        let h = response.headers_mut();
        match self {
            TokenError::InvalidClient(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"appliance\""),
                );
            }
            TokenError::Locked(wait) => {
                h.insert(header::RETRY_AFTER, wait.as_secs().max(1).into());
            }
            _ => {}
        }
        no_store(response)
    }
}

/// The client id and secret of an `Authorization: Basic` header.
pub fn basic_credentials(headers: &HeaderMap) -> Result<(String, String), TokenError> {
    let missing = || {
        TokenError::InvalidClient(
            "client authentication is required: HTTP Basic with the API account's client id \
             and secret"
                .into(),
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    let (scheme, encoded) = value.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(missing());
    }
    let malformed = || TokenError::InvalidClient("malformed HTTP Basic credentials".into());
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed())?;
    let text = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = text.split_once(':').ok_or_else(malformed)?;
    Ok((id.to_string(), secret.to_string()))
}

/// Checks the form body: `grant_type=client_credentials`, each parameter once (others
/// are ignored, RFC 6749 §3.2).
pub fn check_grant(content_type: Option<&str>, body: &[u8]) -> Result<(), TokenError> {
    let form = "application/x-www-form-urlencoded";
    if let Some(ct) = content_type {
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case(form) {
            return Err(TokenError::InvalidRequest(format!(
                "the body must be {form}, not {:?}",
                essence.chars().take(64).collect::<String>()
            )));
        }
    }
    let mut params = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if params.insert(k.to_string(), v.to_string()).is_some() {
            return Err(TokenError::InvalidRequest(format!(
                "parameter {:?} is given more than once",
                k.chars().take(64).collect::<String>()
            )));
        }
    }
    match params.get("grant_type").map(String::as_str) {
        None => Err(TokenError::InvalidRequest(
            "grant_type is required: grant_type=client_credentials".into(),
        )),
        Some("client_credentials") => Ok(()),
        Some(other) => Err(TokenError::UnsupportedGrantType(
            other.chars().take(64).collect(),
        )),
    }
}

async fn token(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, TokenError> {
    let body = axum::body::to_bytes(body, MAX_FORM)
        .await
        .map_err(|_| TokenError::TooLarge)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?"));
    check_grant(content_type, &body)?;
    let (client_id, secret) = basic_credentials(&headers)?;
    let grant = app.site.settings().with(|s| {
        app.api_accounts
            .grant(&s.api_accounts, peer.ip(), &client_id, &secret)
    })?;
    Ok(no_store(
        Json(TokenAnswer {
            access_token: grant.access_token,
            token_type: "Bearer",
            expires_in: grant.expires_in.as_secs(),
        })
        .into_response(),
    ))
}

pub fn routes() -> Router<AppState> {
    Router::new().route(PATH, post(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn basic_credentials_are_read_and_anything_else_is_invalid_client() {
        // base64("0123abcd:s3cr:et")
        assert_eq!(
            basic_credentials(&basic("Basic MDEyM2FiY2Q6czNjcjpldA==")).unwrap(),
            ("0123abcd".into(), "s3cr:et".into())
        );
        assert!(basic_credentials(&basic("basic MDEyM2FiY2Q6czNjcjpldA==")).is_ok());
        for bad in ["Bearer abc", "Basic !!!", "Basic bm9jb2xvbg==", "Basic"] {
            let e = basic_credentials(&basic(bad)).unwrap_err();
            assert_eq!(
                e.status_and_code(),
                (StatusCode::UNAUTHORIZED, "invalid_client"),
                "{bad}"
            );
        }
        assert!(basic_credentials(&HeaderMap::new()).is_err());
    }

    #[test]
    fn the_form_must_ask_for_client_credentials_once() {
        let form = Some("application/x-www-form-urlencoded");
        assert_eq!(check_grant(form, b"grant_type=client_credentials"), Ok(()));
        assert_eq!(
            check_grant(
                Some("application/x-www-form-urlencoded; charset=UTF-8"),
                b"scope=x&grant_type=client_credentials"
            ),
            Ok(())
        );
        assert_eq!(check_grant(None, b"grant_type=client_credentials"), Ok(()));
        let code = |ct, body: &[u8]| check_grant(ct, body).unwrap_err().status_and_code();
        let invalid = (StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(code(form, b""), invalid);
        assert_eq!(
            code(
                form,
                b"grant_type=client_credentials&grant_type=client_credentials"
            ),
            invalid
        );
        assert_eq!(
            code(Some("application/json"), b"grant_type=client_credentials"),
            invalid
        );
        assert_eq!(
            code(form, b"grant_type=password"),
            (StatusCode::BAD_REQUEST, "unsupported_grant_type")
        );
    }

    #[test]
    fn the_token_endpoint_is_in_the_openapi_document_at_the_root() {
        let doc = include_str!("../../openapi.yaml");
        let entry = format!("\n  {PATH}:\n    servers:\n      - url: /\n");
        assert!(
            doc.contains(&entry),
            "{PATH} is not documented with its servers entry"
        );
    }

    #[tokio::test]
    async fn errors_have_the_rfc_shape_and_headers() {
        let r = TokenError::InvalidClient("no".into()).into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"appliance\""
        );
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "invalid_client");
        assert_eq!(v["error_description"], "no");
        let r = TokenError::Locked(Duration::from_secs(60)).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "60");
    }
}
