//! `/api/command`: the vendor's XML command API (`?action=...`), so that existing scripts
//! work unchanged. Answers and errors are XML in the vendor's namespace, served as
//! `text/xml; charset=UTF-8`; an error is `<error>message</error>`. The actions
//! (`check_health`, `set_failover_role`) come with the failover issue: until then every
//! action is unknown.

use super::{ApiError, AppState, ErrorInfo};
use axum::extract::{Query, Request};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;

pub const PATH: &str = "/api/command";
/// The XML namespace of every answer.
pub const NAMESPACE: &str = "http://www.bomgar.com/namespaces/API/command";

async fn command(Query(query): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    match query.get("action").map(String::as_str) {
        None | Some("") => Err(ApiError::BadRequest(
            "no action given: add ?action=NAME".into(),
        )),
        Some(other) => Err(ApiError::BadRequest(format!(
            "unknown action {:?}",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

/// The surface: its one route behind the admin's auth, and every error (the handler's,
/// the auth layer's, axum's own) rendered as XML.
pub fn surface(app: &AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(command).post(command))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            super::auth::require_admin,
        ))
        .layer(axum::middleware::from_fn(xml_errors))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// An XML document in the vendor's namespace with one root element holding `text`.
pub fn xml(status: StatusCode, root: &str, text: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"{NAMESPACE}\">{}</{root}>\n",
        escape(text)
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=UTF-8")],
        body,
    )
        .into_response()
}

/// Renders every error response of the surface as `<error>`.
async fn xml_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return response;
    }
    let message = match response.extensions().get::<ErrorInfo>() {
        Some(info) => info.message.clone(),
        None => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    xml(status, "error", &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_are_xml_in_the_vendor_namespace_with_the_message_escaped() {
        let r = xml(StatusCode::BAD_REQUEST, "error", "unknown action \"<x>&\"");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/xml; charset=UTF-8");
        let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error xmlns=\"http://www.bomgar.com/namespaces/API/command\">unknown action &quot;&lt;x&gt;&amp;&quot;</error>\n"
        );
    }
}
