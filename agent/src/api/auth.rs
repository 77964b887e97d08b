//! Who may call the API: every route but login and the password change passes through
//! [`require_admin`], which checks the bearer token with [`crate::admin::Admin`] and puts
//! the caller's [`Principal`] in the request's extensions.

use super::{ApiError, AppState};
use crate::admin::store::AuthError;
pub use crate::admin::store::Principal;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(request_headers: &axum::http::HeaderMap) -> Option<String> {
    let value = request_headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

pub async fn require_admin(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = bearer(request.headers());
    match app.admin.authenticate(token.as_deref()) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => ApiError::Auth(e).into_response(),
    }
}

/// The status and stable code for each authentication error.
pub fn status_and_code(e: &AuthError) -> (axum::http::StatusCode, &'static str) {
    use axum::http::StatusCode as S;
    match e {
        AuthError::Missing | AuthError::Invalid => (S::UNAUTHORIZED, "unauthorized"),
        AuthError::BadCredentials => (S::UNAUTHORIZED, "bad_credentials"),
        AuthError::DefaultPassword => (S::FORBIDDEN, "password_change_required"),
        AuthError::Locked(_) => (S::TOO_MANY_REQUESTS, "too_many_attempts"),
        AuthError::Password(_) => (S::BAD_REQUEST, "password_rules"),
        AuthError::BadTokenName => (S::BAD_REQUEST, "bad_request"),
        AuthError::TokenExists(_) | AuthError::TooManyTokens => (S::CONFLICT, "conflict"),
        AuthError::TokenNotFound(_) => (S::NOT_FOUND, "not_found"),
        AuthError::File(crate::store::DocumentError::Unreadable { .. }) => {
            (S::CONFLICT, "config_unreadable")
        }
        AuthError::File(_) | AuthError::Encode(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
    }
}
