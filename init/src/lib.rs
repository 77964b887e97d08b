//! `appliance-init`: PID 1 of the appliance.
//!
//! The boot sequence is [`run`]: mounts, console, kernel command line, data disk, last
//! shutdown record, `lo`, then [`event_loop`], the one loop that supervises the agent, reaps
//! every child, serves the control socket, watches the power button and carries out the
//! ordered shutdown. Module map, one concern each:
//!
//! | module | concern |
//! | --- | --- |
//! | [`console`] | `[    1.234567] init: message` lines on the console and in the ring buffer; panic hook |
//! | [`ring`] | the bounded in-memory log (128 KiB, oldest lines dropped) |
//! | [`timeline`] | boot milestones in `/run/appliance/timeline` |
//! | [`kernel`] | the [`kernel::Kernel`] trait in front of mount, kill, sync, reboot and the clock |
//! | [`ffi`] | the only `unsafe` code: the `SIOCSIFFLAGS` ioctl, the empty signal mask for children |
//! | [`mounts`] | early mounts and the unmount order at shutdown |
//! | [`datadisk`] | find, check, format and mount `/data` (or a tmpfs) |
//! | [`records`] | the state files: data state, last shutdown, shutdown record, atomic writes |
//! | [`net`] | bring up `lo` |
//! | [`signals`] | signal mask, signalfd, what each signal means |
//! | [`reap`] | `waitpid` until no child is left |
//! | [`supervisor`] | restart-with-backoff state machine for the agent |
//! | [`agent`] | spawning the agent and reading its output pipe |
//! | [`input`] | evdev power button |
//! | [`control`] | the control socket |
//! | [`shutdown`] | the ordered shutdown: state machine and final executor |
//! | [`event_loop`] | the main loop tying the above together |
//!
//! PID 1 must never panic or exit: the lints below forbid the usual ways to panic outside
//! tests, every error is logged and survived, and the panic hook logs anyway.

#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::indexing_slicing,
        clippy::print_stdout,
        clippy::print_stderr,
        clippy::exit
    )
)]

#[macro_use]
pub mod console;

pub mod agent;
pub mod control;
pub mod datadisk;
pub mod event_loop;
#[allow(unsafe_code)]
pub mod ffi;
pub mod input;
pub mod kernel;
pub mod mounts;
pub mod net;
pub mod reap;
pub mod records;
pub mod reset;
pub mod ring;
pub mod shutdown;
pub mod signals;
pub mod supervisor;
pub mod timeline;

#[cfg(test)]
mod testutil;

use std::convert::Infallible;
use std::fmt;

use appliance_proto::cmdline::BootParams;
use appliance_proto::paths;

use crate::kernel::{Kernel, Linux};

/// The host name the appliance sets at boot; the agent may change it from the config.
pub const HOSTNAME: &str = "appliance";

/// Why [`run`] returned: the only case is that this process is not PID 1.
#[derive(Debug)]
pub struct NotPid1 {
    pub pid: i32,
}

impl fmt::Display for NotPid1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refusing to run as pid {}: this is the appliance's pid 1 and would mount, kill \
             every process and reboot; start it as /init (or in a pid namespace)",
            self.pid
        )
    }
}

impl std::error::Error for NotPid1 {}

/// Boots the appliance and runs the main loop; never returns when this process is PID 1.
pub fn run() -> Result<Infallible, NotPid1> {
    let mut k = Linux;
    let t0 = k.now();
    console::install_panic_hook();
    let pid = nix::unistd::getpid().as_raw();
    if pid != 1 {
        return Err(NotPid1 { pid });
    }
    // Blocked first, so a SIGTERM during boot waits for the loop instead of being lost.
    if let Err(e) = signals::block_all() {
        error!("cannot block signals: {e}; signals may be lost");
    }

    // 1. File systems, console, run directory, first milestone.
    mounts::mount_early(&mut k);
    console::ensure_stdio();
    if let Err(e) = k.mkdir(paths::RUN_DIR, 0o755) {
        error!("cannot create {}: {e}", paths::RUN_DIR);
    }
    timeline::milestone_at(t0, "init-start");

    // 2. Kernel command line, ctrl-alt-del, host name.
    let params = read_boot_params();
    console::set_level(params.log);
    for w in &params.warnings {
        warn!("{w}");
    }
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        warn!("cannot turn ctrl-alt-del into SIGINT: {e}");
    }
    match nix::unistd::sethostname(HOSTNAME) {
        Ok(()) => info!("host name set to {HOSTNAME}"),
        Err(e) => warn!("cannot set host name: {e}"),
    }

    // 3. A factory reset requested before the last reboot (or cut short by a power cut)
    // runs now, with nothing mounted; first, on the first boot from a disk image, the data
    // partition grows to fill the disk.
    datadisk::grow(&params.data);
    let reset = reset_if_requested(&params);

    // 4. Data disk. After a secure erase it must stay blank: /data is a tmpfs.
    let mut data = match &reset {
        Some(ResetDone::Rma { .. }) => {
            datadisk::volatile(&mut k, "the data disk was erased for return (RMA)")
        }
        _ => datadisk::prepare(&mut k, &params.data),
    };
    if matches!(reset, Some(ResetDone::Config { ok: true })) {
        data.mark_formatted(&mut k);
    }
    timeline::milestone("data-ready");

    // How the previous boot ended.
    match &reset {
        Some(done) => records::record_reset(done.describe()),
        None => {
            records::take_last_shutdown(&data);
        }
    }

    // 5. Loopback, on a thread of its own: the kernel's work behind it (addresses, routes,
    // IPv6 set-up) takes tens of milliseconds under emulation and nothing at boot waits
    // for it.
    let lo_up = || match net::loopback_up() {
        Ok(()) => info!("lo is up"),
        Err(e) => error!("cannot bring up lo: {e}"),
    };
    if let Err(e) = std::thread::Builder::new().name("lo".into()).spawn(lo_up) {
        warn!("cannot start a thread ({e}); bringing lo up inline");
        lo_up();
    }

    // 6-8. Agent, signals, control socket, power button, shutdown.
    let power_off_after = match &reset {
        Some(ResetDone::Rma { verified: true }) => {
            let hold = params.rma_hold_seconds;
            warn!("the appliance powers off in {hold} s (appliance.rma_hold); the report stays in status until then");
            Some(std::time::Duration::from_secs(hold.into()))
        }
        _ => None,
    };
    if data.device.is_some() && !data.is_persistent() {
        warn!("a factory reset can still be requested: it is recorded on the data disk itself");
    }
    event_loop::run(
        &mut k,
        event_loop::BootState {
            data_persistent: data.is_persistent(),
            reset_device: data.device.clone(),
            power_off_after,
        },
    )
}

/// A factory reset carried out at this boot.
enum ResetDone {
    Config { ok: bool },
    Rma { verified: bool },
}

impl ResetDone {
    fn describe(&self) -> String {
        match self {
            ResetDone::Config { ok: true } => "factory reset (config) completed at boot".into(),
            ResetDone::Config { ok: false } => {
                "factory reset (config) failed at boot; it is retried at the next boot".into()
            }
            ResetDone::Rma { verified: true } => {
                "secure erase for return (rma) completed and verified at boot".into()
            }
            ResetDone::Rma { verified: false } => {
                "secure erase for return (rma) FAILED at boot; see the erase report".into()
            }
        }
    }
}

/// Finds a reset marker on the data disk and carries the reset out. Without one, the record
/// of an earlier erase kept on the data disk is published for status.
fn reset_if_requested(params: &BootParams) -> Option<ResetDone> {
    let probes = datadisk::scan(&params.data);
    let data_disk = match datadisk::decide::decide(&params.data, &probes) {
        datadisk::decide::Decision::Mount { dev } => Some(dev),
        // A blank disk holds no marker, but may hold the record of an erase.
        datadisk::decide::Decision::Format { dev } => {
            publish_record(&dev);
            None
        }
        datadisk::decide::Decision::Volatile { .. } => None,
    };
    let candidates = reset::candidates(&probes);
    let Some(chosen) = reset::choose(&candidates, data_disk.as_deref()) else {
        if let Some(dev) = &data_disk {
            publish_record(dev);
        }
        return None;
    };
    let (dev, level, unix) = match &chosen.marker {
        Some(m) => (chosen.dev.clone(), m.level, m.unix),
        None => return None,
    };
    warn!("factory reset ({level}) requested at unix time {unix}: wiping {dev}");
    timeline::milestone("reset-start");
    let mut disk = match reset::BlockDisk::open(&dev) {
        Ok(d) => d,
        Err(e) => {
            error!("cannot open {dev} for the factory reset: {e}");
            return None;
        }
    };
    let done = match level {
        appliance_proto::control::ResetLevel::Config => match reset::run_config(&mut disk) {
            Ok(discard) => {
                warn!("factory reset (config): {dev} has a new, empty file system ({discard})");
                ResetDone::Config { ok: true }
            }
            Err(e) => {
                error!("factory reset (config) failed: {e}; the request stays and is retried at the next boot");
                ResetDone::Config { ok: false }
            }
        },
        appliance_proto::control::ResetLevel::Rma => {
            let report = reset::run_rma(&mut disk);
            for line in reset::describe(&report) {
                if report.verified {
                    warn!("{line}");
                } else {
                    error!("{line}");
                }
            }
            write_erase_report(&report);
            ResetDone::Rma {
                verified: report.verified,
            }
        }
    };
    timeline::milestone("reset-done");
    Some(done)
}

/// Shows the erase record kept on `dev` (from an earlier boot) in status.
fn publish_record(dev: &str) {
    let Ok(mut disk) = reset::BlockDisk::open_read_only(dev) else {
        return;
    };
    if let Some(report) = reset::read_record(&mut disk) {
        info!(
            "{dev} holds the report of an erase finished at unix time {}: {}",
            report.finished_unix,
            if report.verified {
                "verified"
            } else {
                "FAILED"
            }
        );
        write_erase_report(&report);
    }
}

fn write_erase_report(report: &appliance_proto::state::EraseReport) {
    if let Err(e) = records::write_atomic(
        std::path::Path::new(paths::ERASE_REPORT),
        report.encode().as_bytes(),
    ) {
        error!("cannot write {}: {e}", paths::ERASE_REPORT);
    }
}

fn read_boot_params() -> BootParams {
    match std::fs::read_to_string("/proc/cmdline") {
        Ok(text) => {
            let p = BootParams::parse(&text);
            info!("kernel command line: {}", text.trim());
            p
        }
        Err(e) => {
            warn!("cannot read /proc/cmdline: {e}; using defaults");
            BootParams::default()
        }
    }
}
