//! The end-to-end harness, in the spirit of NixOS VM tests and cloud-hypervisor's
//! `test_infra`: build a [`netns::Switch`] (a namespace with a bridge and a workstation at
//! 169.254.1.4), boot [`vm::Vm`]s on it from the built image, and wait for console text or
//! API answers with explicit timeouts. Every test gets its own namespace, disks and logs
//! under `out/test-logs/<test>/`; logs of a failed test are kept and their tail printed.
//! [`smtp::Sink`] is a mail relay for a namespace that records the alert e-mails it takes;
//! [`chrony::Chrony`] an NTP server for one.

pub mod api;
pub mod capture;
pub mod chrony;
pub mod erase;
pub mod failover;
pub mod lab;
pub mod netns;
pub mod qmp;
pub mod smtp;
pub mod sync;
pub mod vm;
pub mod wait;

use std::path::PathBuf;

/// The repository's top directory.
pub fn top() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `out/images`, checked: the tests need `make image` to have run.
pub fn images() -> PathBuf {
    let dir = top().join("out/images");
    for f in ["bzImage", "initramfs.cpio.gz", "data.img"] {
        assert!(
            dir.join(f).exists(),
            "{} is missing: run `make image` (or `make test`) first",
            dir.join(f).display()
        );
    }
    dir
}

/// A binary from `out/bin` (built by `make image`), or from `$APPLIANCE_BIN_DIR`.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("APPLIANCE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| top().join("out/bin"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `make image` (or `make test`) first",
        p.display()
    );
    p
}

/// Installs the rustls crypto provider once per process.
pub fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A short name unique to this process and call, for namespaces and taps. With
/// `$APPLIANCE_NETNS_PREFIX` set (letters and digits, at most 6), every name starts with
/// it, so runs from several checkouts on one machine never share a name and each can
/// find and remove what it left.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let run = std::env::var("APPLIANCE_NETNS_PREFIX")
        .ok()
        .filter(|p| p.len() <= 6 && p.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_default();
    format!(
        "{run}{prefix}{}-{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}
