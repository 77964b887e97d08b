//! Appliance VMs booted from the built image with `qemu/run-node`.

use crate::netns::Switch;
use crate::qmp::Qmp;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A test's own directory for disks, consoles and QMP sockets: `out/test-logs/<name>/`.
/// Removed when the test passes; kept, with the tail of every console printed, when it
/// fails.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let path = crate::top().join("out/test-logs").join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
            return;
        }
        let mut logs: Vec<_> = std::fs::read_dir(&self.path)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "---- last lines of {} ----\n{}",
                log.display(),
                tail.join("\n")
            );
        }
        eprintln!("---- logs kept in {} ----", self.path.display());
    }
}

/// How a VM boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boot {
    /// QEMU's direct kernel boot (bzImage + initramfs), a blank virtio data disk.
    Kernel,
    /// Like a physical box: OVMF boots the test build of the UEFI disk image
    /// (`appliance-test.img`, grown to 1 GiB) on NVMe, with an e1000e NIC.
    Uefi,
}

/// One appliance VM on a switch.
pub struct Vm {
    pub name: String,
    index: usize,
    netns: String,
    tap: String,
    dir: PathBuf,
    pub disk: PathBuf,
    pub append: String,
    pub serial_number: String,
    boot: Boot,
    boots: u32,
    child: Option<Child>,
}

impl Vm {
    /// A VM with a fresh blank data disk; `index` picks its tap and MAC. Not started.
    pub fn new(dir: &TestDir, switch: &Switch, index: usize, append: &str) -> Vm {
        Vm::with_disk(dir, switch, index, append, Boot::Kernel, "data.img")
    }

    /// A VM booted by UEFI firmware from a fresh copy of the test disk image (its command
    /// line is the one baked in). Not started; `run-node` grows the copy to 1 GiB.
    pub fn new_uefi(dir: &TestDir, switch: &Switch, index: usize) -> Vm {
        Vm::with_disk(dir, switch, index, "", Boot::Uefi, "appliance-test.img")
    }

    fn with_disk(
        dir: &TestDir,
        switch: &Switch,
        index: usize,
        append: &str,
        boot: Boot,
        source: &str,
    ) -> Vm {
        let name = format!("node{index}");
        let disk = dir.path.join(format!("{name}.img"));
        let images = crate::images();
        assert!(
            images.join(source).exists(),
            "{source} is missing: run `make disk-image` (or `make test`) first"
        );
        if boot == Boot::Uefi {
            // run-node makes a grown copy when the file is missing.
            let _ = std::fs::remove_file(&disk);
        } else {
            let status = Command::new("cp")
                .arg("--sparse=always")
                .arg(images.join(source))
                .arg(&disk)
                .status()
                .expect("copy the disk image");
            assert!(status.success());
        }
        Vm {
            boot,
            serial_number: format!("SN-TEST-{index:04}"),
            name,
            index,
            netns: switch.name.clone(),
            tap: switch.tap(index),
            dir: dir.path.clone(),
            disk,
            append: append.to_string(),
            boots: 0,
            child: None,
        }
    }

    /// The console log of the current (or last) QEMU process.
    pub fn log_path(&self) -> PathBuf {
        self.dir
            .join(format!("{}.boot{}.log", self.name, self.boots))
    }

    pub fn qmp_path(&self) -> PathBuf {
        self.dir.join(format!("{}.qmp", self.name))
    }

    /// Starts QEMU (again, after a power-off, with the same disk).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.boots += 1;
        let _ = std::fs::remove_file(self.qmp_path());
        let child = Command::new(crate::top().join("qemu/run-node"))
            .args(["--name", &self.name, "--index", &self.index.to_string()])
            .args(["--netns", &self.netns, "--tap", &self.tap])
            .args(["--images", &crate::images().to_string_lossy()])
            .arg("--drive")
            .arg(&self.disk)
            .args(match self.boot {
                Boot::Kernel => vec!["--append", &self.append],
                Boot::Uefi => vec!["--disk", "--test-build"],
            })
            .arg("--serial")
            .arg(self.log_path())
            .arg("--qmp")
            .arg(self.qmp_path())
            .args(["--serial-number", &self.serial_number])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.join(format!("{}.qemu-stderr.log", self.name)))
                    .expect("stderr log"),
            )
            .spawn()
            .expect("start qemu/run-node");
        self.child = Some(child);
    }

    pub fn console(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the current console shows `text`.
    pub fn wait_console(&mut self, text: &str, timeout: Duration) {
        let name = self.name.clone();
        crate::wait::until(
            &format!("{text:?} on the console of {name}"),
            timeout,
            Duration::from_millis(100),
            || {
                if self.console().contains(text) {
                    return Ok(());
                }
                match self.try_exit() {
                    Some(s) => Err(format!("QEMU already exited ({s})")),
                    None => Err("not yet".into()),
                }
            },
        );
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_exit().is_none()
    }

    /// Waits for QEMU to exit by itself (the guest powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return status;
                }
            } else {
                panic!("{} is not running", self.name);
            }
            if start.elapsed() > timeout {
                panic!("{} did not power off within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn qmp(&self) -> Qmp {
        let path = self.qmp_path();
        crate::wait::until(
            "the QMP socket",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || Qmp::connect(&path).map_err(|e| e.to_string()),
        )
    }

    /// Presses the ACPI power button.
    pub fn power_button(&self) {
        self.qmp()
            .execute("system_powerdown", json!({}))
            .expect("system_powerdown");
    }

    /// Cuts the power: QEMU stops at once, whatever the guest was doing.
    pub fn power_cut(&mut self) {
        let _ = self.qmp().execute("quit", json!({}));
        self.wait_exit(Duration::from_secs(10));
    }

    /// Plugs or unplugs the VM's network cable.
    pub fn set_link(&self, up: bool) {
        self.qmp()
            .execute("set_link", json!({ "name": "n0", "up": up }))
            .expect("set_link");
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
