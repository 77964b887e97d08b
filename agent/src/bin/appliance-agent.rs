//! `appliance-agent`: the management daemon init starts at boot.

use appliance_agent::privilege;
use appliance_agent::settings::Settings;
use appliance_proto::cmdline::BootParams;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// The appliance management agent. On the appliance it runs with no arguments; the
/// options let tests run it inside a network namespace.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The persistent data directory.
    #[arg(long, default_value = appliance_proto::paths::DATA_DIR)]
    data_dir: PathBuf,
    /// Init's run-time directory (control socket, boot timeline).
    #[arg(long, default_value = appliance_proto::paths::RUN_DIR)]
    run_dir: PathBuf,
    /// Address and port of the HTTPS API.
    #[arg(long, default_value = "[::]:443")]
    listen: std::net::SocketAddr,
    /// The NIC for the factory address (default: appliance.nic, else the first Ethernet NIC).
    #[arg(long)]
    nic: Option<String>,
    /// Do not claim the factory address.
    #[arg(long)]
    no_factory_address: bool,
    /// Where the `appliance.*` boot parameters are read from.
    #[arg(long, default_value = "/proc/cmdline")]
    cmdline: PathBuf,
    /// Where the DNS settings are written.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Before any thread exists: capabilities are per thread, and later threads inherit.
    let file_limit = privilege::raise_file_limit(privilege::FILE_LIMIT);
    let capabilities = privilege::keep_only(&privilege::KEPT);
    let cmdline = std::fs::read_to_string(&args.cmdline).unwrap_or_default();
    let boot = BootParams::parse(&cmdline);
    let _log = match appliance_agent::logging::init(
        tracing_subscriber::EnvFilter::try_from_env("APPLIANCE_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(boot.log.as_str())),
    ) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("cannot start the log writer: {e}");
            return ExitCode::from(70);
        }
    };
    for result in [file_limit, capabilities] {
        if let Err(e) = result {
            tracing::warn!("{e}");
        }
    }
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a rustls crypto provider was already installed");
    }
    for w in &boot.warnings {
        tracing::warn!("{w}");
    }
    let mut settings = Settings::on_appliance(boot);
    settings.data_dir = args.data_dir;
    settings.run_dir = args.run_dir;
    settings.listen = args.listen;
    settings.nic = args.nic.or(settings.nic);
    settings.factory_address = !args.no_factory_address;
    settings.resolv_conf = args.resolv_conf;
    // Two workers: a slow disk write or a long handler on one never stalls the other (and
    // with failover, a heartbeat). File writes go to the blocking pool.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(appliance_agent::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
