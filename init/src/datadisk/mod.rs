//! The data disk: find it, check it, format it on first boot, mount it at `/data`, or fall
//! back to a tmpfs ("volatile") and say so loudly.
//!
//! The steps are separate functions so that later steps can be slotted in between (the
//! factory-reset wipe goes after [`find`] and before [`make_layout`]):
//! [`scan()`] (sysfs + superblocks) → [`decide::decide`] (pure) → [`tools::check`] or
//! [`tools::format`] → [`mount_data`] or [`mount_volatile`] → [`make_layout`] → the state
//! record in `/run/appliance/data`.
//!
//! Before any of that, [`grow`] lets a blank GPT data partition fill a disk larger than
//! the image it was written from ([`partition`]).
//!
//! Limits: only ext2/3/4 is recognised (ext4 is what init creates); a disk named by
//! `appliance.data` or a label is waited for at most [`WAIT_FOR_NAMED`], in automatic mode
//! the disks must be there when init starts (virtio, SATA and NVMe disks are probed before
//! the kernel starts init); init never partitions: it formats the data partition of the
//! image, or a blank device named on the command line whole.

pub mod decide;
pub mod partition;
pub mod scan;
pub mod superblock;
pub mod tools;

use std::path::Path;
use std::time::{Duration, Instant};

use appliance_proto::cmdline::DataSource;
use appliance_proto::paths::{self, DATA_DIR, DATA_LABEL};
use appliance_proto::state::DataState;
use nix::mount::MsFlags;

use crate::kernel::Kernel;
use decide::Decision;
use scan::Probe;
use superblock::Content;

pub const CLASS_BLOCK: &str = "/sys/class/block";
const DEV_DIR: &str = "/dev";

/// How long a device or label named on the kernel command line is waited for.
pub const WAIT_FOR_NAMED: Duration = Duration::from_secs(5);

/// The directories init creates on `/data`, with their modes.
pub const LAYOUT: [(&str, u32); 4] = [
    ("/data/config", 0o700),
    ("/data/site", 0o755),
    ("/data/log", 0o755),
    (paths::DATA_INIT_DIR, 0o700),
];

/// What `/data` is for this boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDisk {
    pub state: DataState,
    /// The device chosen as the data disk, also when its file system failed its check or
    /// would not mount (a failing disk): factory resets are recorded there.
    pub device: Option<String>,
}

impl DataDisk {
    pub fn is_persistent(&self) -> bool {
        matches!(self.state, DataState::Persistent { .. })
    }

    /// Records that the file system is new (made by a factory reset earlier in this boot).
    pub fn mark_formatted(&mut self, k: &mut impl Kernel) {
        if let DataState::Persistent {
            formatted, check, ..
        } = &mut self.state
        {
            *formatted = true;
            *check = "new file system (factory reset)".into();
        }
        if let Err(e) = k.write_atomic(paths::DATA_STATE, self.state.encode().as_bytes()) {
            error!("cannot write {}: {e}", paths::DATA_STATE);
        }
    }

    /// Formatted during this boot: there is no previous boot to report on.
    pub fn formatted(&self) -> bool {
        matches!(
            self.state,
            DataState::Persistent {
                formatted: true,
                ..
            }
        )
    }
}

/// Finds, checks, formats if needed, and mounts `/data`; never fails (volatile instead).
pub fn prepare(k: &mut impl Kernel, source: &DataSource) -> DataDisk {
    prepare_decided(k, find(source), check_unless_clean, tools::format)
}

/// Carries out a decision with these tools (`check` the file system, `format` a disk).
fn prepare_decided(
    k: &mut impl Kernel,
    decision: Decision,
    check: impl Fn(&str) -> Result<String, String>,
    format: impl Fn(&str) -> Result<(), String>,
) -> DataDisk {
    let (state, device) = match decision {
        Decision::Mount { dev } => {
            let state = match check(&dev) {
                Ok(check) => match mount_data(k, &dev) {
                    Ok(()) => DataState::Persistent {
                        device: dev.clone(),
                        formatted: false,
                        check,
                    },
                    Err(reason) => mount_volatile(k, &reason),
                },
                Err(why) => {
                    mount_volatile(k, &format!("{dev} failed its file system check: {why}"))
                }
            };
            (state, Some(dev))
        }
        Decision::Format { dev } => {
            warn!("formatting blank disk {dev} as ext4, label {DATA_LABEL}");
            match format(&dev).and_then(|()| mount_data(k, &dev)) {
                Ok(()) => {
                    info!("{dev} formatted");
                    let state = DataState::Persistent {
                        device: dev.clone(),
                        formatted: true,
                        check: "new file system".into(),
                    };
                    (state, Some(dev))
                }
                Err(why) => (
                    mount_volatile(k, &format!("cannot set up {dev}: {why}")),
                    None,
                ),
            }
        }
        Decision::Volatile { reason } => (mount_volatile(k, &reason), None),
    };
    finish(k, state, device)
}

/// `/data` on a tmpfs on purpose (after a secure erase the disk must stay blank).
pub fn volatile(k: &mut impl Kernel, reason: &str) -> DataDisk {
    let state = mount_volatile(k, reason);
    finish(k, state, None)
}

/// Creates the layout and records what `/data` is.
fn finish(k: &mut impl Kernel, state: DataState, device: Option<String>) -> DataDisk {
    make_layout(k);
    if let DataState::Persistent {
        device,
        formatted,
        check,
    } = &state
    {
        info!("/data is {device} (formatted this boot: {formatted}, check: {check})");
    }
    if let Err(e) = k.write_atomic(paths::DATA_STATE, state.encode().as_bytes()) {
        error!("cannot write {}: {e}", paths::DATA_STATE);
    }
    DataDisk { state, device }
}

/// Runs `e2fsck` unless the superblock says the file system was unmounted cleanly.
fn check_unless_clean(dev: &str) -> Result<String, String> {
    match scan::read_superblock(dev).map(|sb| superblock::check_needed(&sb)) {
        Ok(None) => Ok("clean (superblock)".into()),
        Ok(Some(why)) => {
            info!("{dev}: {why}: running e2fsck");
            tools::check(dev)
        }
        Err(e) => {
            warn!("cannot read the superblock of {dev} ({e}): running e2fsck");
            tools::check(dev)
        }
    }
}

/// Scans the disks and decides; waits up to [`WAIT_FOR_NAMED`] for a named device or label
/// to appear.
pub fn find(source: &DataSource) -> Decision {
    let start = Instant::now();
    let mut said_waiting = false;
    loop {
        let probes = scan(source);
        let decision = decide::decide(source, &probes);
        let waiting = named_target_missing(source, &probes) && start.elapsed() < WAIT_FOR_NAMED;
        if !waiting {
            for p in &probes {
                info!("disk {}", describe(p));
            }
            if let Decision::Mount { dev } = &decision {
                let label = match source {
                    DataSource::Label(l) => l.as_str(),
                    _ => DATA_LABEL,
                };
                let others: Vec<&str> = decide::with_label(label, &probes)
                    .map(|p| p.device.dev.as_str())
                    .filter(|d| d != dev)
                    .collect();
                if !others.is_empty() {
                    warn!(
                        "several file systems are labelled {label}; using {dev}, ignoring {}",
                        others.join(", ")
                    );
                }
            }
            return decision;
        }
        if !said_waiting {
            info!(
                "waiting up to {} s for the data device named on the kernel command line",
                WAIT_FOR_NAMED.as_secs()
            );
            said_waiting = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A device or label named on the command line that the scan did not find (yet).
fn named_target_missing(source: &DataSource, probes: &[Probe]) -> bool {
    match source {
        DataSource::Auto => false,
        DataSource::Device(dev) => !probes.iter().any(|p| &p.device.dev == dev),
        DataSource::Label(label) => decide::with_label(label, probes).next().is_none(),
    }
}

/// Every block device, with the GPT entries of partitions filled in.
fn devices() -> Vec<scan::BlockDevice> {
    let mut devices = scan::list(Path::new(CLASS_BLOCK), Path::new(DEV_DIR));
    partition::annotate(&mut devices, Path::new(CLASS_BLOCK));
    devices
}

/// Grows a blank GPT data partition to fill its disk (first boot on a disk larger than
/// the image). Only in automatic mode: a named device or label is used as it is.
pub fn grow(source: &DataSource) {
    if *source == DataSource::Auto {
        partition::grow_data_partition(&devices());
    }
}

/// Probes the candidate devices: every device not skipped by name, or just the named one.
pub fn scan(source: &DataSource) -> Vec<Probe> {
    devices()
        .into_iter()
        .filter(|d| match source {
            DataSource::Device(dev) => &d.dev == dev,
            _ => !scan::skipped_in_scan(&d.name),
        })
        .map(|device| {
            let content = scan::probe(&device);
            Probe { device, content }
        })
        .collect()
}

fn describe(p: &Probe) -> String {
    let d = &p.device;
    let content = match &p.content {
        Content::Ext { label } => format!("ext file system labelled {label:?}"),
        Content::Blank => "blank".into(),
        Content::Other => "not blank".into(),
        Content::Unreadable(e) => format!("unreadable: {e}"),
    };
    format!(
        "{}: {} MiB, {}{}{}, {content}",
        d.dev,
        d.size >> 20,
        if d.whole_disk { "disk" } else { "partition" },
        if d.read_only { ", read-only" } else { "" },
        if d.removable { ", removable" } else { "" },
    )
}

/// Mounts the ext4 data file system at `/data` (noatime, nosuid, nodev).
pub fn mount_data(k: &mut impl Kernel, dev: &str) -> Result<(), String> {
    if let Err(e) = k.mkdir(DATA_DIR, 0o755) {
        warn!("cannot create {DATA_DIR}: {e}");
    }
    let flags = MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    k.mount(dev, DATA_DIR, "ext4", flags, None)
        .map_err(|e| format!("cannot mount {dev} on {DATA_DIR} as ext4: {e}"))
}

/// Mounts a tmpfs at `/data` and warns that nothing will persist.
pub fn mount_volatile(k: &mut impl Kernel, reason: &str) -> DataState {
    error!("no persistent data disk: {reason}");
    error!("/data is a tmpfs: configuration and data will NOT survive a reboot");
    if let Err(e) = k.mkdir(DATA_DIR, 0o755) {
        warn!("cannot create {DATA_DIR}: {e}");
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if let Err(e) = k.mount("tmpfs", DATA_DIR, "tmpfs", flags, Some("mode=0755")) {
        error!(
            "cannot mount a tmpfs on {DATA_DIR}: {e}; /data is on the initramfs (also volatile)"
        );
    }
    DataState::Volatile {
        reason: reason.to_string(),
    }
}

/// Creates `config/`, `site/`, `log/` and `.init/` on `/data` with their modes.
pub fn make_layout(k: &mut impl Kernel) {
    for (dir, mode) in LAYOUT {
        if let Err(e) = k.mkdir(dir, mode) {
            error!("cannot create {dir}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::{Call, FakeKernel};
    use nix::errno::Errno;

    #[test]
    fn volatile_mounts_a_tmpfs_and_keeps_the_reason() {
        let mut k = FakeKernel::default();
        let state = mount_volatile(&mut k, "no disk");
        assert_eq!(
            state,
            DataState::Volatile {
                reason: "no disk".into()
            }
        );
        assert!(k.calls.iter().any(|c| matches!(c, Call::Mount { fstype, target, .. } if fstype == "tmpfs" && target == "/data")));
    }

    #[test]
    fn data_is_mounted_noatime_and_layout_has_private_dirs() {
        let mut k = FakeKernel::default();
        mount_data(&mut k, "/dev/vdb").unwrap();
        make_layout(&mut k);
        assert!(k.calls.contains(&Call::Mount {
            source: "/dev/vdb".into(),
            target: "/data".into(),
            fstype: "ext4".into(),
            flags: MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: None,
        }));
        assert!(k.calls.contains(&Call::Mkdir {
            path: "/data/config".into(),
            mode: 0o700
        }));
        assert!(k.calls.contains(&Call::Mkdir {
            path: "/data/.init".into(),
            mode: 0o700
        }));
        assert!(k.calls.contains(&Call::Mkdir {
            path: "/data/site".into(),
            mode: 0o755
        }));
    }

    #[test]
    fn a_failed_mount_is_reported() {
        let mut k = FakeKernel::default();
        k.mount_errors.push(("/data".into(), Errno::EINVAL));
        let e = mount_data(&mut k, "/dev/vdb").unwrap_err();
        assert!(e.contains("cannot mount /dev/vdb on /data as ext4"), "{e}");
    }

    #[test]
    fn only_a_missing_named_target_is_waited_for() {
        use crate::datadisk::scan::BlockDevice;
        let probe = |dev: &str, content: Content| Probe {
            device: BlockDevice {
                name: dev.trim_start_matches("/dev/").into(),
                dev: dev.into(),
                whole_disk: true,
                size: 1 << 30,
                read_only: false,
                removable: false,
                parent: None,
                gpt: None,
            },
            content,
        };
        let probes = [probe(
            "/dev/vda",
            Content::Ext {
                label: "OTHER".into(),
            },
        )];
        assert!(!named_target_missing(&DataSource::Auto, &[]));
        // Present but refused: no point waiting.
        assert!(!named_target_missing(
            &DataSource::Device("/dev/vda".into()),
            &probes
        ));
        assert!(named_target_missing(
            &DataSource::Device("/dev/vdb".into()),
            &probes
        ));
        assert!(!named_target_missing(
            &DataSource::Label("OTHER".into()),
            &probes
        ));
        assert!(named_target_missing(
            &DataSource::Label("MINE".into()),
            &probes
        ));
    }

    #[test]
    fn a_data_disk_that_fails_its_check_or_mount_stays_the_reset_device() {
        let mount = || Decision::Mount {
            dev: "/dev/vdb".into(),
        };
        let no_format = |_: &str| Err("not called".to_string());
        let mut k = FakeKernel::default();
        let d = prepare_decided(
            &mut k,
            mount(),
            |_| Err("e2fsck: I/O error".into()),
            no_format,
        );
        assert!(!d.is_persistent());
        assert_eq!(d.device.as_deref(), Some("/dev/vdb"));

        let mut k = FakeKernel::default();
        k.mount_errors.push(("/data".into(), Errno::EIO));
        let d = prepare_decided(&mut k, mount(), |_| Ok("clean".into()), no_format);
        assert!(!d.is_persistent());
        assert_eq!(d.device.as_deref(), Some("/dev/vdb"));

        // A blank disk that could not be formatted holds nothing to reset.
        let mut k = FakeKernel::default();
        let format = Decision::Format {
            dev: "/dev/vdc".into(),
        };
        let d = prepare_decided(&mut k, format, |_| Ok(String::new()), no_format);
        assert_eq!(d.device, None);
    }

    #[test]
    fn data_disk_flags() {
        let p = DataDisk {
            state: DataState::Persistent {
                device: "/dev/vda".into(),
                formatted: true,
                check: String::new(),
            },
            device: Some("/dev/vda".into()),
        };
        assert!(p.is_persistent() && p.formatted());
        let v = DataDisk {
            state: DataState::Volatile {
                reason: String::new(),
            },
            device: None,
        };
        assert!(!v.is_persistent() && !v.formatted());
    }
}
