//! `/network/...`: NICs, addresses, gateways, routes, DNS, host name, the confirmation of
//! changes, and the support utilities (documented in `agent/openapi.yaml`).
//!
//! Each handler parses the request (path, `?confirm_within=N`, JSON body) into a typed
//! [`NetworkChange`] or utility command and hands it to the `net` module; none touches
//! the kernel. A change answers with the configuration now in force, what the
//! reconciler did, what it could not do, and, with a confirmation window, when the
//! previous configuration comes back unless confirmed.

use super::{parse_required, ApiError, AppState};
use crate::model::netconfig::{
    AddressConfig, DnsConfig, Family, IpCidr, NetworkConfig, NicName, RouteConfig, ValidationError,
};
use crate::model::{
    ChangeOutcome, Confirmed, DnsLookupRequest, DnsLookupResult, EnabledRequest, GatewayRequest,
    HostnameRequest, HostnameView, NetworkStatus, Nic, PingRequest, PingResult, RoutesView,
    TcpTestRequest, TcpTestResult,
};
use crate::net::changes::NetworkChange;
use crate::net::service::{ChangeError, MAX_CONFIRM_WITHIN};
use crate::net::utilities;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use std::net::IpAddr;
use std::time::Duration;

/// Every path this module serves (relative to the API prefix), in OpenAPI's spelling.
#[cfg(test)]
const PATHS: &[&str] = &[
    "/network/interfaces",
    "/network/interfaces/{nic}",
    "/network/interfaces/{nic}/addresses",
    "/network/interfaces/{nic}/addresses/{ip}",
    "/network/config",
    "/network/status",
    "/network/confirm",
    "/network/rollback",
    "/network/routes",
    "/network/routes/{destination}",
    "/network/gateways",
    "/network/gateways/{family}",
    "/network/dns",
    "/network/hostname",
    "/network/test/tcp",
    "/network/test/ping",
    "/network/test/dns",
];

type Changed = Result<Json<ChangeOutcome>, ApiError>;

/// `?confirm_within=N` (seconds), the only query parameter a change takes.
fn confirm_within(query: Option<String>) -> Result<Option<Duration>, ApiError> {
    let mut out = None;
    for pair in query
        .iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "confirm_within" {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter {key:?}: a change takes only confirm_within"
            )));
        }
        match value.parse::<u64>() {
            Ok(n) if (1..=MAX_CONFIRM_WITHIN).contains(&n) => out = Some(Duration::from_secs(n)),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "confirm_within must be a number of seconds from 1 to {MAX_CONFIRM_WITHIN}, \
                     not {value:?}"
                )))
            }
        }
    }
    Ok(out)
}

fn nic(s: &str) -> Result<NicName, ApiError> {
    s.parse().map_err(ApiError::BadRequest)
}

fn ip(s: &str) -> Result<IpAddr, ApiError> {
    s.parse()
        .map_err(|_| ApiError::BadRequest(format!("{s:?} is not an IPv4 or IPv6 address")))
}

fn family(s: &str) -> Result<Family, ApiError> {
    s.parse().map_err(ApiError::BadRequest)
}

/// How a change was asked for: its confirmation window (`?confirm_within=N`) and the
/// address of the client that asked (so that a change cannot cut that client off unless it
/// rolls back by itself).
struct Asked {
    within: Option<Duration>,
    client: Option<std::net::IpAddr>,
}

impl axum::extract::FromRequestParts<AppState> for Asked {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &AppState,
    ) -> Result<Asked, ApiError> {
        let query = parts.uri.query().map(str::to_string);
        let client = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(Asked {
            within: confirm_within(query)?,
            client,
        })
    }
}

async fn change(app: &AppState, asked: Asked, c: NetworkChange) -> Changed {
    Ok(Json(
        app.network.change(c, asked.within, asked.client).await?,
    ))
}

async fn interfaces(State(app): State<AppState>) -> Result<Json<Vec<Nic>>, ApiError> {
    Ok(Json(
        app.network.inventory().await.map_err(ChangeError::from)?,
    ))
}

async fn interface(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Nic>, ApiError> {
    let wanted = nic(&name)?;
    let nics = app.network.inventory().await.map_err(ChangeError::from)?;
    let present: Vec<String> = nics.iter().map(|n| n.name.clone()).collect();
    nics.into_iter()
        .find(|n| n.name == name)
        .map(Json)
        .ok_or_else(|| {
            ChangeError::Invalid(ValidationError::UnknownNic {
                name: wanted,
                present: present.join(", "),
            })
            .into()
        })
}

async fn add_address(
    State(app): State<AppState>,
    Path(name): Path<String>,
    asked: Asked,
    body: Bytes,
) -> Changed {
    let nic = nic(&name)?;
    let address: AddressConfig = parse_required(&body)?;
    change(&app, asked, NetworkChange::AddAddress { nic, address }).await
}

async fn patch_address(
    State(app): State<AppState>,
    Path((name, addr)): Path<(String, String)>,
    asked: Asked,
    body: Bytes,
) -> Changed {
    let req: EnabledRequest = parse_required(&body)?;
    let c = NetworkChange::SetAddressEnabled {
        nic: nic(&name)?,
        ip: ip(&addr)?,
        enabled: req.enabled,
    };
    change(&app, asked, c).await
}

async fn delete_address(
    State(app): State<AppState>,
    Path((name, addr)): Path<(String, String)>,
    asked: Asked,
) -> Changed {
    let c = NetworkChange::RemoveAddress {
        nic: nic(&name)?,
        ip: ip(&addr)?,
    };
    change(&app, asked, c).await
}

async fn get_config(State(app): State<AppState>) -> Json<NetworkConfig> {
    Json(app.network.config())
}

async fn put_config(State(app): State<AppState>, asked: Asked, body: Bytes) -> Changed {
    let cfg: NetworkConfig = parse_required(&body)?;
    change(&app, asked, NetworkChange::Replace(cfg)).await
}

async fn status(State(app): State<AppState>) -> Json<NetworkStatus> {
    Json(app.network.status().await)
}

async fn confirm(State(app): State<AppState>) -> Result<Json<Confirmed>, ApiError> {
    Ok(Json(app.network.confirm().await?))
}

async fn roll_back(State(app): State<AppState>) -> Changed {
    Ok(Json(app.network.roll_back().await?))
}

async fn list_routes(State(app): State<AppState>) -> Result<Json<RoutesView>, ApiError> {
    Ok(Json(app.network.routes().await.map_err(ChangeError::from)?))
}

async fn add_route(State(app): State<AppState>, asked: Asked, body: Bytes) -> Changed {
    let r: RouteConfig = parse_required(&body)?;
    change(&app, asked, NetworkChange::AddRoute(r)).await
}

async fn delete_route(
    State(app): State<AppState>,
    Path(dest): Path<String>,
    asked: Asked,
) -> Changed {
    let destination: IpCidr = dest.parse().map_err(ApiError::BadRequest)?;
    change(&app, asked, NetworkChange::RemoveRoute { destination }).await
}

async fn gateways(State(app): State<AppState>) -> Json<crate::model::netconfig::Gateways> {
    Json(app.network.config().gateways)
}

async fn put_gateway(
    State(app): State<AppState>,
    Path(fam): Path<String>,
    asked: Asked,
    body: Bytes,
) -> Changed {
    let family = family(&fam)?;
    let req: GatewayRequest = parse_required(&body)?;
    if crate::model::netconfig::Family::of(req.gateway) != family {
        return Err(ApiError::BadRequest(format!(
            "{} is not an {} address",
            req.gateway,
            family.as_str()
        )));
    }
    let c = NetworkChange::SetGateway {
        family,
        gateway: Some(req.gateway),
    };
    change(&app, asked, c).await
}

async fn delete_gateway(
    State(app): State<AppState>,
    Path(fam): Path<String>,
    asked: Asked,
) -> Changed {
    let c = NetworkChange::SetGateway {
        family: family(&fam)?,
        gateway: None,
    };
    change(&app, asked, c).await
}

async fn dns(State(app): State<AppState>) -> Json<DnsConfig> {
    Json(app.network.config().dns)
}

async fn put_dns(State(app): State<AppState>, asked: Asked, body: Bytes) -> Changed {
    let d: DnsConfig = parse_required(&body)?;
    change(&app, asked, NetworkChange::SetDns(d)).await
}

async fn hostname(State(app): State<AppState>) -> Json<HostnameView> {
    Json(app.network.hostname().await)
}

async fn put_hostname(State(app): State<AppState>, asked: Asked, body: Bytes) -> Changed {
    let req: HostnameRequest = parse_required(&body)?;
    change(&app, asked, NetworkChange::SetHostname(Some(req.hostname))).await
}

async fn delete_hostname(State(app): State<AppState>, asked: Asked) -> Changed {
    change(&app, asked, NetworkChange::SetHostname(None)).await
}

async fn test_tcp(body: Bytes) -> Result<Json<TcpTestResult>, ApiError> {
    let req: TcpTestRequest = parse_required(&body)?;
    let t = utilities::TcpTest::try_from(&req)?;
    Ok(Json(utilities::tcp(&t).await))
}

async fn test_ping(body: Bytes) -> Result<Json<PingResult>, ApiError> {
    let req: PingRequest = parse_required(&body)?;
    let p = utilities::Ping::try_from(&req)?;
    Ok(Json(utilities::ping(&p).await))
}

async fn test_dns(body: Bytes) -> Result<Json<DnsLookupResult>, ApiError> {
    let req: DnsLookupRequest = parse_required(&body)?;
    let l = utilities::Lookup::try_from(&req)?;
    Ok(Json(utilities::lookup(&l).await))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/network/interfaces", get(interfaces))
        .route("/network/interfaces/{nic}", get(interface))
        .route("/network/interfaces/{nic}/addresses", post(add_address))
        .route(
            "/network/interfaces/{nic}/addresses/{ip}",
            patch(patch_address).delete(delete_address),
        )
        .route("/network/config", get(get_config).put(put_config))
        .route("/network/status", get(status))
        .route("/network/confirm", post(confirm))
        .route("/network/rollback", post(roll_back))
        .route("/network/routes", get(list_routes).post(add_route))
        .route(
            "/network/routes/{*destination}",
            axum::routing::delete(delete_route),
        )
        .route("/network/gateways", get(gateways))
        .route(
            "/network/gateways/{family}",
            put(put_gateway).delete(delete_gateway),
        )
        .route("/network/dns", get(dns).put(put_dns))
        .route(
            "/network/hostname",
            get(hostname).put(put_hostname).delete(delete_hostname),
        )
        .route("/network/test/tcp", post(test_tcp))
        .route("/network/test/ping", post(test_ping))
        .route("/network/test/dns", post(test_dns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirm_within_is_checked() {
        assert_eq!(confirm_within(None).unwrap(), None);
        assert_eq!(
            confirm_within(Some("confirm_within=60".into())).unwrap(),
            Some(Duration::from_secs(60))
        );
        for bad in [
            "confirm_within=0",
            "confirm_within=x",
            "confirm_within=3601",
            "confirm=5",
            "confirm_within",
        ] {
            assert!(confirm_within(Some(bad.into())).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_path_is_in_the_openapi_document() {
        let doc = include_str!("../../openapi.yaml");
        for p in PATHS {
            let line = format!("\n  {p}:");
            assert!(
                doc.contains(&line),
                "{p} is not documented in agent/openapi.yaml"
            );
        }
        assert!(doc.contains("\n  /network/factory-address:"));
    }
}
