//! `/api/command`: the vendor's XML command API, so that existing scripts work unchanged.
//!
//! A call is `GET /api/command?action=...` or a `POST` with the same parameters in a
//! form-encoded body (or the query), authenticated by an OAuth access token from
//! `POST /oauth2/token` (`Authorization: Bearer <token>`; see `admin::api_accounts`), not
//! by the admin's session. Answers and errors are XML in the vendor's namespace, served
//! as `text/xml; charset=UTF-8`; an error is `<error>message</error>` with the HTTP status
//! saying what kind (401 no or a bad token, 403 a read-only account asking for a change,
//! 400 a bad request, and a failover refusal's own status).
//!
//! | action | access | answer |
//! | --- | --- | --- |
//! | `check_health` | read-only or full | `<health_check>` (see [`render_health`]) |
//! | `set_failover_role` (`role=primary\|backup`, `data_sync_first=0\|1`, `force=0\|1`) | full | `<success>...</success>` |
//!
//! `check_health` shares its assessment with `/check_health`. Its data-sync elements are
//! left out while failover is not configured (role `none`); with a role but no data sync
//! yet, `<last_data_sync_time>` is left out and `<last_data_sync_status>` says `never`.
//! Parameters this API does not know are ignored (scripts may send more); one given twice
//! is refused.

use super::AppState;
use crate::admin::api_accounts::{Access, Caller};
use crate::failover::role::Role;
use crate::failover::service::{RoleOutcome, SyncRecord};
use crate::failover::{FailoverError, RoleRequest};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::net::IpAddr;

pub const PATH: &str = "/api/command";
/// The XML namespace of every answer.
pub const NAMESPACE: &str = "http://www.bomgar.com/namespaces/API/command";
const CONTENT_TYPE: &str = "text/xml; charset=UTF-8";

pub const CHANGED: &str = "Successfully changed role.";
pub const SYNC_STARTED: &str =
    "Successfully started data sync. Role change will occur upon successful completion.";

/// The role `set_failover_role` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Primary,
    Backup,
}

/// A command, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    CheckHealth,
    SetFailoverRole { role: Target, request: RoleRequest },
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::CheckHealth => "check_health",
            Action::SetFailoverRole { .. } => "set_failover_role",
        }
    }

    /// The access an account needs for this action.
    fn needs(&self) -> Access {
        match self {
            Action::CheckHealth => Access::ReadOnly,
            Action::SetFailoverRole { .. } => Access::Full,
        }
    }
}

/// Why a command was not carried out; each renders as `<error>`.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("an OAuth access token is required: POST /oauth2/token with the API account's client id and secret, then send \"Authorization: Bearer <token>\"")]
    NoToken,
    #[error("the access token is unknown or has expired, or its API account was removed: get a new one from /oauth2/token")]
    BadToken,
    #[error("this API account has read-only access; {0} needs an account with full access")]
    ReadOnly(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Failover(#[from] FailoverError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl CommandError {
    fn status(&self) -> StatusCode {
        match self {
            CommandError::NoToken | CommandError::BadToken => StatusCode::UNAUTHORIZED,
            CommandError::ReadOnly(_) => StatusCode::FORBIDDEN,
            CommandError::BadRequest(_) => StatusCode::BAD_REQUEST,
            CommandError::Failover(e) => StatusCode::from_u16(e.status_and_code().0)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            CommandError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for CommandError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = xml(status, "error", &self.to_string());
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The parameters of a call: those of the query and those of a form-encoded body. A
/// parameter given twice (in either or across both) is refused.
pub fn params(query: Option<&str>, body: &[u8]) -> Result<HashMap<String, String>, CommandError> {
    let mut out = HashMap::new();
    let pairs =
        form_urlencoded::parse(query.unwrap_or("").as_bytes()).chain(form_urlencoded::parse(body));
    for (k, v) in pairs {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(CommandError::BadRequest(format!(
                "parameter {:?} is given more than once",
                short(&k)
            )));
        }
    }
    Ok(out)
}

fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

/// A `0|1` parameter; absent is `0`.
fn flag(params: &HashMap<String, String>, name: &str) -> Result<bool, CommandError> {
    match params.get(name).map(String::as_str) {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => Err(CommandError::BadRequest(format!(
            "{name} is 0 or 1, not {:?}",
            short(other)
        ))),
    }
}

/// The command the parameters ask for.
pub fn parse(params: &HashMap<String, String>) -> Result<Action, CommandError> {
    match params.get("action").map(String::as_str) {
        None | Some("") => Err(CommandError::BadRequest(
            "no action given: add action=check_health or action=set_failover_role".into(),
        )),
        Some("check_health") => Ok(Action::CheckHealth),
        Some("set_failover_role") => {
            let role = match params.get("role").map(String::as_str) {
                Some("primary") => Target::Primary,
                Some("backup") => Target::Backup,
                None => {
                    return Err(CommandError::BadRequest(
                        "set_failover_role needs role=primary or role=backup".into(),
                    ))
                }
                Some(other) => {
                    return Err(CommandError::BadRequest(format!(
                        "role is primary or backup, not {:?}",
                        short(other)
                    )))
                }
            };
            Ok(Action::SetFailoverRole {
                role,
                request: RoleRequest {
                    data_sync_first: flag(params, "data_sync_first")?,
                    force: flag(params, "force")?,
                },
            })
        }
        Some(other) => Err(CommandError::BadRequest(format!(
            "unknown action {:?}",
            short(other)
        ))),
    }
}

/// Whether `caller` may run `action`.
pub fn authorize(caller: &Caller, action: &Action) -> Result<(), CommandError> {
    match (action.needs(), caller.access) {
        (Access::Full, Access::ReadOnly) => Err(CommandError::ReadOnly(action.name())),
        _ => Ok(()),
    }
}

/// Everything `check_health` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReport {
    pub appliance_id: String,
    pub hostname: String,
    pub version: String,
    /// Empty when healthy.
    pub problems: Vec<String>,
    pub role: Role,
    pub enabled_shared_ips: Vec<IpAddr>,
    pub last_sync: Option<SyncRecord>,
}

/// Unix seconds as ISO 8601 (UTC).
fn iso8601(unix: u64) -> String {
    crate::model::rfc3339(unix)
}

fn element(out: &mut String, name: &str, text: &str) {
    out.push_str(&format!("<{name}>{}</{name}>\n", escape(text)));
}

/// The `<health_check>` document: its children in the vendor's order, each on a line.
pub fn render_health(r: &HealthReport) -> String {
    let mut inner = String::from("\n");
    inner.push_str(&format!(
        "<appliance id=\"{}\">{}</appliance>\n",
        escape(&r.appliance_id),
        escape(&r.hostname)
    ));
    element(&mut inner, "version", &r.version);
    let healthy = r.problems.is_empty();
    element(&mut inner, "success", if healthy { "1" } else { "0" });
    if !healthy {
        element(&mut inner, "error_message", &r.problems.join("; "));
    }
    let role = match r.role {
        Role::None => "none",
        Role::Primary => "primary",
        Role::Backup => "backup",
    };
    element(&mut inner, "failover_role", role);
    if !r.enabled_shared_ips.is_empty() {
        inner.push_str("<enabled_shared_ips>");
        for ip in &r.enabled_shared_ips {
            inner.push_str(&format!("<ip>{ip}</ip>"));
        }
        inner.push_str("</enabled_shared_ips>\n");
    }
    if r.role != Role::None {
        match &r.last_sync {
            Some(sync) => {
                inner.push_str(&format!(
                    "<last_data_sync_time ts=\"{}\">{}</last_data_sync_time>\n",
                    sync.at,
                    iso8601(sync.at)
                ));
                element(&mut inner, "last_data_sync_status", &sync.status);
            }
            None => element(&mut inner, "last_data_sync_status", "never"),
        }
    }
    document("health_check", &inner)
}

async fn check_health(app: &AppState) -> Result<Response, CommandError> {
    let snapshot = app.failover.snapshot();
    let health = super::health::assess(app, &snapshot);
    let config_dir = app.settings.config_dir();
    let appliance_id = crate::store::blocking(move || crate::system::appliance_id(&config_dir))
        .await
        .map_err(|e| CommandError::Internal(e.to_string()))?;
    let report = HealthReport {
        appliance_id,
        hostname: app.network.hostname().await.hostname,
        version: crate::system::version_string(),
        problems: health.problems.iter().map(ToString::to_string).collect(),
        role: snapshot.role,
        enabled_shared_ips: snapshot.enabled_shared_ips,
        last_sync: app.sync.last_record(),
    };
    Ok(xml_response(StatusCode::OK, render_health(&report)))
}

async fn set_failover_role(
    app: &AppState,
    caller: &Caller,
    role: Target,
    request: RoleRequest,
) -> Result<Response, CommandError> {
    tracing::info!(account = %caller.name, ?role, ?request, "vendor API: set_failover_role");
    let outcome = match role {
        Target::Primary => {
            app.sync
                .change_role(crate::failover::role::Role::Primary, request)
                .await?
        }
        Target::Backup => {
            app.sync
                .change_role(crate::failover::role::Role::Backup, request)
                .await?
        }
    };
    Ok(xml(StatusCode::OK, "success", success_text(outcome)))
}

/// What `<success>` says for each way a role change request ends.
fn success_text(outcome: RoleOutcome) -> &'static str {
    match outcome {
        RoleOutcome::Changed => CHANGED,
        RoleOutcome::SyncStarted => SYNC_STARTED,
    }
}

/// The caller a request's bearer token stands for.
fn caller(app: &AppState, headers: &HeaderMap) -> Result<Caller, CommandError> {
    let token = super::auth::bearer(headers).ok_or(CommandError::NoToken)?;
    app.site
        .settings()
        .with(|s| app.api_accounts.caller(&s.api_accounts, &token))
        .ok_or(CommandError::BadToken)
}

async fn command(
    State(app): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, CommandError> {
    let caller = caller(&app, &headers)?;
    let action = parse(&params(uri.query(), &body)?)?;
    authorize(&caller, &action)?;
    match action {
        Action::CheckHealth => check_health(&app).await,
        Action::SetFailoverRole { role, request } => {
            set_failover_role(&app, &caller, role, request).await
        }
    }
}

/// The surface: its one route (the handler authenticates), and axum's own errors (a
/// method it does not take, a body over the limit) rendered as XML too.
pub fn surface() -> Router<AppState> {
    Router::new()
        .route("/", get(command).post(command))
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

/// An XML document in the vendor's namespace: root element `root` around `inner`
/// (already XML).
fn document(root: &str, inner: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"{NAMESPACE}\">{inner}</{root}>\n")
}

fn xml_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// An XML document in the vendor's namespace with one root element holding `text`.
pub fn xml(status: StatusCode, root: &str, text: &str) -> Response {
    xml_response(status, document(root, &escape(text)))
}

/// Renders every error response of the surface that is not XML yet as `<error>`.
async fn xml_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_xml = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/xml"));
    if is_xml || (!status.is_client_error() && !status.is_server_error()) {
        return response;
    }
    let message = match response.extensions().get::<super::ErrorInfo>() {
        Some(info) => info.message.clone(),
        None => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    xml(status, "error", &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(r: Response) -> String {
        let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn errors_are_xml_in_the_vendor_namespace_with_the_message_escaped() {
        let r = xml(StatusCode::BAD_REQUEST, "error", "unknown action \"<x>&\"");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/xml; charset=UTF-8");
        assert_eq!(
            body_of(r).await,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error xmlns=\"http://www.bomgar.com/namespaces/API/command\">unknown action &quot;&lt;x&gt;&amp;&quot;</error>\n"
        );
    }

    #[tokio::test]
    async fn auth_errors_are_401_with_a_bearer_challenge_and_read_only_is_403() {
        for e in [CommandError::NoToken, CommandError::BadToken] {
            let r = e.into_response();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
            assert!(body_of(r).await.contains("<error xmlns="));
        }
        let r = CommandError::ReadOnly("set_failover_role").into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(body_of(r)
            .await
            .contains("read-only access; set_failover_role needs"));
        let r = CommandError::Failover(FailoverError::NotRunning).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body_of(r)
            .await
            .contains(">the failover service is not running</error>"));
    }

    fn from_query(q: &str) -> Result<Action, CommandError> {
        parse(&params(Some(q), b"")?)
    }

    #[test]
    fn the_query_and_a_form_body_give_the_same_command() {
        let want = Action::SetFailoverRole {
            role: Target::Backup,
            request: RoleRequest {
                data_sync_first: false,
                force: true,
            },
        };
        assert_eq!(
            from_query("action=set_failover_role&role=backup&force=1").unwrap(),
            want
        );
        let body = b"action=set_failover_role&role=backup&force=1&data_sync_first=0";
        assert_eq!(parse(&params(None, body).unwrap()).unwrap(), want);
        // Split between the two, and percent-encoded.
        let p = params(Some("action=set%5Ffailover%5Frole"), b"role=backup&force=1").unwrap();
        assert_eq!(parse(&p).unwrap(), want);
        assert_eq!(
            from_query("action=check_health&unknown=ignored").unwrap(),
            Action::CheckHealth
        );
        assert_eq!(
            from_query("action=set_failover_role&role=primary&data_sync_first=1").unwrap(),
            Action::SetFailoverRole {
                role: Target::Primary,
                request: RoleRequest {
                    data_sync_first: true,
                    force: false
                }
            }
        );
    }

    #[test]
    fn bad_commands_are_refused_with_what_is_wrong() {
        let message = |q: &str| match from_query(q) {
            Err(e @ CommandError::BadRequest(_)) => e.to_string(),
            other => panic!("{q}: {other:?}"),
        };
        assert!(message("").contains("no action given"));
        assert!(message("action=reboot").contains("unknown action \"reboot\""));
        assert!(message("action=set_failover_role").contains("needs role=primary or role=backup"));
        assert!(message("action=set_failover_role&role=none").contains("not \"none\""));
        assert!(
            message("action=set_failover_role&role=backup&force=yes").contains("force is 0 or 1")
        );
        assert!(message("action=check_health&action=check_health").contains("more than once"));
        let twice = params(Some("action=check_health"), b"action=check_health");
        assert!(matches!(twice, Err(CommandError::BadRequest(_))));
    }

    #[test]
    fn read_only_accounts_may_check_health_only() {
        let who = |access| Caller {
            client_id: "c".into(),
            name: "n".into(),
            access,
        };
        let set = from_query("action=set_failover_role&role=primary").unwrap();
        assert!(authorize(&who(Access::ReadOnly), &Action::CheckHealth).is_ok());
        assert!(matches!(
            authorize(&who(Access::ReadOnly), &set),
            Err(CommandError::ReadOnly("set_failover_role"))
        ));
        assert!(authorize(&who(Access::Full), &set).is_ok());
        assert!(authorize(&who(Access::Full), &Action::CheckHealth).is_ok());
    }

    #[tokio::test]
    async fn a_role_change_answers_the_vendor_success_texts() {
        let r = xml(
            StatusCode::OK,
            "success",
            success_text(RoleOutcome::Changed),
        );
        assert!(body_of(r)
            .await
            .ends_with(">Successfully changed role.</success>\n"));
        assert_eq!(
            success_text(RoleOutcome::SyncStarted),
            "Successfully started data sync. Role change will occur upon successful completion."
        );
    }

    fn report() -> HealthReport {
        HealthReport {
            appliance_id: "4c4c4544-0042-3510-8048-b4c04f564432".into(),
            hostname: "access-1".into(),
            version: "0.1.0+dev".into(),
            problems: vec![],
            role: Role::None,
            enabled_shared_ips: vec![],
            last_sync: None,
        }
    }

    #[test]
    fn a_healthy_appliance_without_failover_reports_no_sync_and_no_shared_ips() {
        assert_eq!(
            render_health(&report()),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <health_check xmlns=\"http://www.bomgar.com/namespaces/API/command\">\n\
             <appliance id=\"4c4c4544-0042-3510-8048-b4c04f564432\">access-1</appliance>\n\
             <version>0.1.0+dev</version>\n\
             <success>1</success>\n\
             <failover_role>none</failover_role>\n\
             </health_check>\n"
        );
    }

    #[test]
    fn a_primary_reports_its_shared_ips_and_last_sync_and_problems_as_error_message() {
        let mut r = report();
        r.role = Role::Primary;
        r.problems = vec!["a <conflict>".into(), "data in memory".into()];
        r.enabled_shared_ips = vec![
            "192.0.2.100".parse().unwrap(),
            "2001:db8::64".parse().unwrap(),
        ];
        r.last_sync = Some(SyncRecord {
            at: 1_767_225_600,
            status: "success".into(),
        });
        let xml = render_health(&r);
        let lines: Vec<&str> = xml.lines().collect();
        assert_eq!(
            lines[2..],
            [
                "<appliance id=\"4c4c4544-0042-3510-8048-b4c04f564432\">access-1</appliance>",
                "<version>0.1.0+dev</version>",
                "<success>0</success>",
                "<error_message>a &lt;conflict&gt;; data in memory</error_message>",
                "<failover_role>primary</failover_role>",
                "<enabled_shared_ips><ip>192.0.2.100</ip><ip>2001:db8::64</ip></enabled_shared_ips>",
                "<last_data_sync_time ts=\"1767225600\">2026-01-01T00:00:00Z</last_data_sync_time>",
                "<last_data_sync_status>success</last_data_sync_status>",
                "</health_check>",
            ]
        );
    }

    #[test]
    fn a_backup_before_its_first_sync_says_never() {
        let mut r = report();
        r.role = Role::Backup;
        let xml = render_health(&r);
        assert!(xml.contains("<failover_role>backup</failover_role>\n<last_data_sync_status>never</last_data_sync_status>\n</health_check>"), "{xml}");
        assert!(!xml.contains("last_data_sync_time"), "{xml}");
    }
}
