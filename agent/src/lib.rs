//! The appliance management agent and its command-line client.
//!
//! | module | concern |
//! | --- | --- |
//! | [`model`] | the shapes that travel (JSON bodies, the network schema, validated newtypes): below everything else |
//! | [`api`] | the HTTPS API: one router per surface, errors |
//! | [`admin`] | the admin account, sessions, API tokens, login limits |
//! | [`system`] | status, power actions and factory reset (carried out by init) |
//! | [`net`] | factory address, NICs, addresses, routes, DNS, through rtnetlink |
//! | [`config`] | the local settings (`/data/config/appliance.toml`): factory address, network |
//! | [`site`] | the site settings and files (`/data/site/`), what failover synchronises |
//! | [`email`] | alert e-mail: the site's SMTP settings, the alert texts, the mailer behind the failover notifier |
//! | [`ntp`] | the NTP client: keeps the clock on the configured servers, its status |
//! | [`files`] | the site's file store (`/data/site/files/`): safe paths, streamed atomic uploads, listing with hashes |
//! | [`failover`] | the primary/backup pair: role machine, conflict rules, peer key proofs, backup settings (pure core) |
//! | [`tls`] | the HTTPS identity: made on first boot, imported, exported |
//! | [`store`] | atomic writes; `Document`, the typed, versioned settings file |
//! | [`runtime`] | the long-running tasks: registered, restarted, stopped |
//! | [`conn`] | connections to the HTTPS port: caps per address and in all, timeouts |
//! | [`logging`] | log output that never blocks, rate limits for lines clients cause |
//! | [`privilege`] | the file limit and the capabilities the agent keeps |
//! | [`client`] | the HTTPS client with certificate pinning (`appliancectl`, the peer link) |
//! | [`boot`] | the boot timeline |
//! | [`cli`] | `appliancectl` |

pub mod admin;
pub mod api;
pub mod boot;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod email;
pub mod failover;
pub mod files;
pub mod logging;
pub mod model;
pub mod net;
pub mod ntp;
pub mod privilege;
pub mod runtime;
pub mod settings;
pub mod site;
pub mod store;
pub mod sync;
pub mod system;
pub mod tls;

use settings::Settings;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("the TLS task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("cannot serve HTTPS on {addr}: {source}")]
    Serve {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Netlink(net::netlink::NetlinkError),
    #[error("cannot install the signal handler: {0}")]
    Signal(std::io::Error),
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), AgentError> {
    let started = Instant::now();
    let timeline = settings.timeline();
    boot::mark(&timeline, "agent-start");
    let settings = Arc::new(settings);

    // The certificate (slow on first boot) and the factory address go in parallel.
    let tls_dir = settings.tls_dir();
    let tls_task =
        tokio::task::spawn_blocking(move || tls::load_or_generate(&tls_dir, "appliance"));
    let config = Arc::new(config::ConfigStore::open(&settings.config_dir()));
    let site = Arc::new(site::SiteStore::open(&settings.site_dir()));
    let (factory_tx, factory) = tokio::sync::watch::channel(model::FactoryAddress {
        state: if settings.factory_address {
            model::FactoryState::Starting
        } else {
            model::FactoryState::Disabled
        },
        ..Default::default()
    });
    let factory_tx = Arc::new(factory_tx);
    let mut tasks = runtime::Tasks::new();
    let nl = net::netlink::Netlink::open().map_err(AgentError::Netlink)?;
    // Restores a network change left unconfirmed, then reconciles in the background.
    let kernel =
        net::kernel::LiveKernel::start(nl.clone(), settings.resolv_conf.clone(), &mut tasks);
    let overlay = net::overlay::OverlayHandle::new();
    failover::driver::initial_claims(&settings.config_dir(), &config.current(), &overlay);
    let network = net::service::NetworkService::start(
        config.clone(),
        settings.config_dir(),
        kernel.clone(),
        overlay,
        &mut tasks,
    );
    let ntp = ntp::NtpService::start(
        config.clone(),
        Arc::new(ntp::clock::SystemClock),
        ntp::mode(&settings.data_dir, settings.boot.debug),
        &mut tasks,
    );
    let factory_control = Arc::new(net::factory_control::FactoryControl::new(
        config.clone(),
        kernel,
        factory.clone(),
    ));
    if settings.factory_address {
        let service = net::factory_service::FactoryService {
            nl: nl.clone(),
            nic: settings.nic.clone(),
            status: factory_tx.clone(),
            config: config.subscribe(),
            timeline: timeline.clone(),
        };
        tasks.spawn("factory-address", move || service.clone().run());
    }
    let id_dir = settings.config_dir();
    let appliance_id = tokio::task::spawn_blocking(move || system::appliance_id(&id_dir))
        .await?
        .unwrap_or_else(|e| {
            tracing::error!("no appliance id ({e}): failover cannot tell this appliance apart");
            String::new()
        });
    let mailer = Arc::new(email::Mailer::new(site.clone()));
    let failover = failover::FailoverService::start(
        failover::service::Deps {
            config_dir: settings.config_dir(),
            id: appliance_id,
            version: failover::service::version(&settings.data_dir, settings.boot.debug),
            config: config.clone(),
            network: network.clone(),
            notifier: mailer.clone(),
        },
        &mut tasks,
    )
    .await;
    let sync = sync::SyncService::new(
        &settings.data_dir,
        site.clone(),
        config.clone(),
        failover.clone(),
        mailer,
    );
    {
        let sync = sync.clone();
        tasks.spawn("sync", move || sync.clone().run());
    }
    let (identity, origin) = tls_task.await??;
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(identity.server_config());
    match origin {
        tls::Origin::Generated => tracing::info!("generated a self-signed TLS certificate"),
        tls::Origin::Loaded => tracing::debug!("loaded the TLS certificate"),
    }
    boot::mark(&timeline, "tls-ready");

    let app = api::AppState {
        power: system::Power::new(system::init_client::InitClient::new(
            settings.control_socket(),
        )),
        settings: settings.clone(),
        started,
        factory,
        tasks: tasks.status(),
        admin: Arc::new(admin::Admin::open(&settings.config_dir())),
        tls: tls.clone(),
        config,
        files: Arc::new(files::FileStore::open(
            site.clone(),
            settings.data_dir.join(files::UPLOADS_DIR),
        )),
        site,
        factory_control,
        network,
        failover: failover.clone(),
        sync,
        api_accounts: Default::default(),
        ntp,
    };
    let handle = axum_server::Handle::new();
    {
        let handle = handle.clone();
        let timeline = timeline.clone();
        tokio::spawn(async move {
            if let Some(addr) = handle.listening().await {
                tracing::info!(%addr, "HTTPS API listening");
                boot::mark(&timeline, "api-listening");
            }
        });
    }
    let (stop_tasks, tasks_stopped) = tokio::sync::oneshot::channel::<()>();
    {
        let handle = handle.clone();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(AgentError::Signal)?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            tracing::info!("stopping");
            let _ = stop_tasks.send(());
            handle.graceful_shutdown(Some(Duration::from_secs(1)));
        });
    }
    let supervisor = tokio::spawn(tasks.supervise(async {
        let _ = tasks_stopped.await;
    }));
    let listener = bind(settings.listen).map_err(|source| AgentError::Serve {
        addr: settings.listen,
        source,
    })?;
    // The failover peer's addresses get the reserved connection slots.
    let (peers, gate) = conn::Gate::new(conn::Limits::APPLIANCE);
    tokio::spawn(failover.feed_peer_addresses(peers));
    let served = serve(listener, tls, gate, conn::Timeouts::APPLIANCE)
        .map_err(|source| AgentError::Serve {
            addr: settings.listen,
            source,
        })?
        .handle(handle)
        .serve(api::router(app).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .await
        .map_err(|source| AgentError::Serve {
            addr: settings.listen,
            source,
        });
    supervisor.abort();
    served
}

/// The HTTPS server on `listener`: connections admitted by `gate` before the TLS
/// handshake, with the timeouts of `timeouts` (see [`conn`]).
fn serve(
    listener: std::net::TcpListener,
    tls: axum_server::tls_rustls::RustlsConfig,
    gate: conn::Gate,
    timeouts: conn::Timeouts,
) -> std::io::Result<
    axum_server::Server<
        std::net::SocketAddr,
        conn::SessionAcceptor<axum_server::tls_rustls::RustlsAcceptor<conn::EdgeAcceptor>>,
    >,
> {
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
        .handshake_timeout(timeouts.handshake)
        .acceptor(conn::EdgeAcceptor {
            gate,
            no_progress: timeouts.no_progress,
        });
    let acceptor = conn::SessionAcceptor { inner: acceptor };
    let mut server = axum_server::from_tcp(listener)?.acceptor(acceptor);
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeouts.header);
    Ok(server)
}

/// Binds the API socket; `[::]` also takes IPv4 (dual stack), falling back to `0.0.0.0`
/// on a kernel without IPv6.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = match std::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) if addr.ip().is_unspecified() && addr.is_ipv6() => {
            tracing::warn!(error = %e, "no IPv6: listening on IPv4 only");
            std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, addr.port()))?
        }
        Err(e) => return Err(e),
    };
    listener.set_nonblocking(true)?;
    Ok(listener)
}
