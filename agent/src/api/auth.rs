//! Who may call the API: every route but login and the password change passes through
//! [`require_admin`], which checks the bearer token with [`crate::admin::Admin`], checks
//! the caller's scope against what the route needs ([`required_scope`]), and puts the
//! caller's [`Principal`] in the request's extensions.
//!
//! The scope rule is one function of the method and the route, applied by the router to
//! every authenticated route of every surface, never by the handlers: a `read` API token
//! may call GET (and HEAD) routes only, and never the debug hooks; everything else needs
//! `admin` (a session is always `admin`).

use super::{ApiError, AppState};
use crate::admin::store::AuthError;
pub use crate::admin::store::Principal;
use crate::model::TokenScope;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::Method;
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

/// The scope a call needs: `read` for GET and HEAD, except on routes whose reads are
/// not harmless (the debug hooks read any file on /data; the vendor's command API takes
/// its action, state-changing ones included, in the query of a GET); `admin` for
/// anything else. `route` is the matched route pattern, with its surface's prefix
/// (none for a path no route matched).
pub fn required_scope(method: &Method, route: Option<&str>) -> TokenScope {
    let reads = method == Method::GET || method == Method::HEAD;
    let guarded =
        route.is_some_and(|r| r.contains("/debug/") || r.starts_with(super::command::PATH));
    if reads && !guarded {
        TokenScope::Read
    } else {
        TokenScope::Admin
    }
}

/// Whether `principal` may make a call needing `need`.
pub fn authorize(principal: &Principal, need: TokenScope) -> Result<(), AuthError> {
    let have = principal.scope();
    if have >= need {
        Ok(())
    } else {
        Err(AuthError::InsufficientScope { have, need })
    }
}

pub async fn require_admin(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = bearer(request.headers());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let need = required_scope(request.method(), route.as_deref());
    let allowed = app
        .admin
        .authenticate(token.as_deref())
        .and_then(|p| authorize(&p, need).map(|()| p));
    match allowed {
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
        AuthError::CredentialsChanged => (S::UNAUTHORIZED, "credentials_changed"),
        AuthError::DefaultPassword => (S::FORBIDDEN, "password_change_required"),
        AuthError::InsufficientScope { .. } => (S::FORBIDDEN, "insufficient_scope"),
        AuthError::Locked(_) => (S::TOO_MANY_REQUESTS, "too_many_attempts"),
        AuthError::Busy | AuthError::InFlight => (S::TOO_MANY_REQUESTS, "too_many_logins"),
        AuthError::StoreUnreadable(_) => (S::SERVICE_UNAVAILABLE, "admin_store_unreadable"),
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

/// Seconds to put in `Retry-After` for an error that asks the client to come back later.
pub fn retry_after(e: &AuthError) -> Option<u64> {
    match e {
        AuthError::Locked(wait) => Some(wait.as_secs().max(1)),
        AuthError::Busy | AuthError::InFlight => {
            Some(crate::admin::store::BUSY_RETRY.as_secs().max(1))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_token_may_only_read_and_never_the_debug_hooks_or_command_api() {
        let read = Principal::Token {
            name: "monitor".into(),
            scope: TokenScope::Read,
        };
        let admin = Principal::Token {
            name: "backup".into(),
            scope: TokenScope::Admin,
        };
        let session = Principal::Session {
            username: "admin".into(),
        };
        let p = |r: &str| format!("{}{r}", super::super::PREFIX);
        let cases = [
            (Method::GET, p("/status"), true),
            (Method::HEAD, p("/status"), true),
            (Method::GET, p("/system/certificate"), true),
            (Method::GET, p("/network/config"), true),
            (Method::POST, p("/system/certificate/export"), false),
            (Method::PUT, p("/system/certificate"), false),
            (Method::POST, p("/system/reset"), false),
            (Method::POST, p("/system/tokens"), false),
            (Method::DELETE, p("/system/tokens/{name}"), false),
            (Method::POST, p("/network/test/ping"), false),
            (Method::GET, p("/debug/data/{*path}"), false),
            (Method::GET, "/api/command/".to_string(), false),
            (
                Method::GET,
                format!("{}/anything", super::super::LOGIN_PREFIX),
                true,
            ),
            (
                Method::PUT,
                format!("{}/anything", super::super::LOGIN_PREFIX),
                false,
            ),
        ];
        for (method, route, read_may) in cases {
            let need = required_scope(&method, Some(&route));
            assert_eq!(authorize(&read, need).is_ok(), read_may, "{method} {route}");
            assert!(authorize(&admin, need).is_ok(), "{method} {route}");
            assert!(authorize(&session, need).is_ok(), "{method} {route}");
        }
        let e = authorize(&read, TokenScope::Admin).unwrap_err();
        assert_eq!(
            status_and_code(&e),
            (axum::http::StatusCode::FORBIDDEN, "insufficient_scope")
        );
        assert_eq!(required_scope(&Method::POST, None), TokenScope::Admin);
    }
}
