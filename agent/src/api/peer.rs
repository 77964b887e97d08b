//! `/peer/v1`: the failover peer channel between two appliances, on the same TLS port as
//! the API. Its routes and its authentication (an HMAC over keying material exported from
//! the TLS session, with the inter-appliance key) come with the failover issue; it stays
//! outside the admin's auth and, next, outside the connection caps, so a flood of clients
//! never starves heartbeats.

use super::AppState;
use axum::Router;

pub const PREFIX: &str = "/peer/v1";

pub fn routes() -> Router<AppState> {
    Router::new()
}
