//! Where the agent finds things. On the appliance every default applies; tests run the
//! agent in a network namespace with its own data and run directories.

use appliance_proto::cmdline::BootParams;
use appliance_proto::paths;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Settings {
    /// The persistent data partition (`/data`).
    pub data_dir: PathBuf,
    /// Init's run-time directory (`/run/appliance`): control socket, timeline, records.
    pub run_dir: PathBuf,
    /// Where the HTTPS API listens (`[::]:443`: every address, IPv4 included).
    pub listen: SocketAddr,
    /// The kernel command line (`/proc/cmdline`), for the `appliance.*` keys.
    pub boot: BootParams,
    /// The NIC for the factory address; `None` picks the first Ethernet NIC.
    pub nic: Option<String>,
    /// Claim the factory address at start.
    pub factory_address: bool,
    /// Where the DNS settings are written (`/etc/resolv.conf`).
    pub resolv_conf: PathBuf,
}

impl Settings {
    pub fn on_appliance(boot: BootParams) -> Settings {
        Settings {
            data_dir: PathBuf::from(paths::DATA_DIR),
            run_dir: PathBuf::from(paths::RUN_DIR),
            listen: SocketAddr::from(([0u16; 8], 443)),
            nic: boot.nic.clone(),
            boot,
            factory_address: true,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }

    fn run_file(&self, absolute: &str) -> PathBuf {
        let name = Path::new(absolute).file_name().unwrap_or_default();
        self.run_dir.join(name)
    }

    pub fn control_socket(&self) -> PathBuf {
        self.run_file(paths::CONTROL_SOCKET)
    }

    pub fn timeline(&self) -> PathBuf {
        self.run_file(paths::TIMELINE)
    }

    pub fn data_state(&self) -> PathBuf {
        self.run_file(paths::DATA_STATE)
    }

    pub fn last_shutdown(&self) -> PathBuf {
        self.run_file(paths::LAST_SHUTDOWN)
    }

    /// The local settings (`/data/config`): this box's own, never synchronised.
    pub fn config_dir(&self) -> PathBuf {
        self.data_dir.join("config")
    }

    /// The site (`/data/site`): what a failover backup pulls from its primary.
    pub fn site_dir(&self) -> PathBuf {
        self.data_dir.join("site")
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.config_dir().join("tls")
    }
}
