//! An NTP server for a namespace: Debian's chronyd serving its clock (the host's) at
//! `local stratum 8`, bound to one address. It runs with `-x`, so it never touches the
//! host's clock; its config, pid and drift files and its log stay in the test's directory.
//! Stopped on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The stratum chronyd claims; its clients are one more.
pub const STRATUM: u8 = 8;

pub struct Chrony {
    child: Child,
}

impl Chrony {
    /// Starts chronyd inside namespace `ns`, listening on `address`, with its files under
    /// `<dir>/chrony/`.
    pub fn start(dir: &Path, ns: &str, address: &str) -> Chrony {
        let dir = dir.join("chrony");
        std::fs::create_dir_all(&dir).expect("chrony dir");
        let conf = dir.join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                "local stratum {STRATUM}\nallow all\nbindaddress {address}\ncmdport 0\n\
                 pidfile {d}/chronyd.pid\ndriftfile {d}/drift\n",
                d = dir.display()
            ),
        )
        .expect("chrony.conf");
        let log = std::fs::File::create(dir.join("chronyd.log")).expect("chrony log");
        let child = Command::new("ip")
            .args([
                "netns", "exec", ns, "chronyd", "-x", "-d", "-u", "root", "-f",
            ])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start chronyd (apt-get install chrony, or make deps)");
        Chrony { child }
    }
}

impl Drop for Chrony {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
