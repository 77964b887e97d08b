//! `GET /check_health`: the vendor's health probe for load balancers and monitors. 200
//! when the appliance is healthy, 500 when not, with a short human-readable line and no
//! other data (seed 003, "Check B Series Appliance Health"): the reasons are for the
//! vendor's `check_health` command, which needs an API account. No authentication.

use super::AppState;
use crate::failover::Snapshot;
use crate::system::Health;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

pub const PATH: &str = "/check_health";

/// What failover reports wrong in `snapshot`: its own problem, else a conflict.
fn failover_problem(snapshot: &Snapshot) -> Option<String> {
    snapshot
        .problem
        .clone()
        .or_else(|| snapshot.conflict.map(crate::failover::conflict::message))
}

/// The appliance's health now, with failover's part from `snapshot`: the one assessment
/// `/check_health` and the vendor's `check_health` command share.
pub(super) fn assess(app: &AppState, snapshot: &Snapshot) -> Health {
    crate::system::health(
        &app.settings,
        app.config.load_error().is_some(),
        app.admin.load_error().is_some(),
        failover_problem(snapshot)
            .or_else(|| app.sync.no_pull_problem())
            .as_deref(),
    )
}

pub async fn check_health(State(app): State<AppState>) -> impl IntoResponse {
    let health = assess(&app, &app.failover.snapshot());
    let (status, text) = if health.healthy() {
        (StatusCode::OK, "healthy\n")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "not healthy\n")
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::conflict::Kind;

    #[test]
    fn failover_counts_its_problem_else_a_conflict() {
        let mut s = Snapshot::default();
        assert_eq!(failover_problem(&s), None);
        s.conflict = Some(Kind::BothPrimary);
        let conflict = failover_problem(&s).unwrap();
        assert!(
            conflict.starts_with(crate::failover::conflict::OPENING),
            "{conflict}"
        );
        s.problem = Some("the backup is cut off".into());
        assert_eq!(
            failover_problem(&s).as_deref(),
            Some("the backup is cut off")
        );
    }
}
