//! `/login/api/v1`: the site's API. The failover relationship, roles and the site's
//! settings and files come here (the failover and data-sync issues); what is here now is
//! the surface itself: JSON, admin auth, JSON errors.

use super::AppState;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new()
}
