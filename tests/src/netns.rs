//! Network namespaces the tests make and remove; nothing touches the host's own network.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, Output};

/// A namespace holding bridge `br0` (the switch), the workstation address 169.254.1.4/16
/// on it, and taps `tap1..tapN` for VMs (see `qemu/netns-up`). Removed on drop.
pub struct Switch {
    pub name: String,
}

fn script(name: &str) -> PathBuf {
    crate::top().join("qemu").join(name)
}

impl Switch {
    pub fn new(taps: usize) -> Switch {
        let name = crate::unique("apt");
        let mut cmd = Command::new(script("netns-up"));
        cmd.arg(&name);
        for i in 1..=taps {
            cmd.arg(format!("tap{i}"));
        }
        let out = cmd.output().expect("run qemu/netns-up");
        assert!(
            out.status.success(),
            "netns-up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Switch { name }
    }

    pub fn tap(&self, i: usize) -> String {
        format!("tap{i}")
    }

    /// Runs a program inside the namespace (as the workstation) and returns its output.
    pub fn exec(&self, program: &std::path::Path, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(program)
            .args(args)
            .output()
            .expect("run ip netns exec")
    }

    /// Runs `appliancectl` (with `--insecure`) in the namespace against `host`, logged in.
    pub fn ctl(&self, host: &str, args: &[&str]) -> Output {
        let token = crate::api::token(&self.name, host).unwrap_or_default();
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(crate::bin("appliancectl"))
            .args(["--insecure", "--host", host])
            .args(args)
            .env("APPLIANCE_TOKEN", token)
            .output()
            .expect("run appliancectl")
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it opens live there.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        enter_and_run(&self.name, f)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = Command::new(script("netns-down")).arg(&self.name).output();
    }
}

/// Runs `f` on a fresh thread inside namespace `name` (only that thread moves).
pub fn enter_and_run<R: Send>(name: &str, f: impl FnOnce() -> R + Send) -> R {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|s| {
        s.spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
