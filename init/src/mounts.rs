//! The file systems init mounts before anything else, and the order it unmounts at
//! shutdown.
//!
//! A target that is already mounted (the kernel or a previous stage did it, or `EBUSY`) is
//! left as it is; any other failure is logged and boot goes on.

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::kernel::{Kernel, MountEntry};

pub struct MountSpec {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// In order: `/dev/pts` lives on `/dev`.
pub const EARLY_MOUNTS: [MountSpec; 6] = [
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("mode=0620,ptmxmode=0666"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
];

/// Mounts [`EARLY_MOUNTS`], creating the mount points (an initramfs may lack them), and
/// links `/dev/fd`, `/dev/stdin`, `/dev/stdout`, `/dev/stderr` (devtmpfs does not).
pub fn mount_early(k: &mut impl Kernel) {
    for spec in &EARLY_MOUNTS {
        // The table is read again each time: /proc/self/mounts exists once /proc is up.
        if is_mounted(&k.mounts(), spec.target) {
            debug!("{} is already mounted", spec.target);
            continue;
        }
        if let Err(e) = k.mkdir(spec.target, 0o755) {
            warn!("cannot create mount point {}: {e}", spec.target);
        }
        match k.mount(spec.source, spec.target, spec.fstype, spec.flags, spec.data) {
            Ok(()) => debug!("mounted {} on {}", spec.fstype, spec.target),
            Err(Errno::EBUSY) => debug!("{} is already mounted", spec.target),
            Err(e) => error!("cannot mount {} on {}: {e}", spec.fstype, spec.target),
        }
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        // Exists already on a second run or a devtmpfs that has them: fine.
        let _ = std::os::unix::fs::symlink(target, link);
    }
}

pub fn is_mounted(table: &[MountEntry], target: &str) -> bool {
    table.iter().any(|m| m.target == target)
}

/// Virtual file systems that stay until the end (the console lives on /dev).
fn kept_at_shutdown(target: &str) -> bool {
    target == "/"
        || ["/proc", "/sys", "/dev"].iter().any(|top| {
            target == *top
                || target
                    .strip_prefix(top)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
}

/// What to unmount at shutdown, innermost first: everything but `/` and the virtual file
/// systems under `/proc`, `/sys` and `/dev`.
pub fn shutdown_unmount_order(table: &[MountEntry]) -> Vec<MountEntry> {
    table
        .iter()
        .rev()
        .filter(|m| !kept_at_shutdown(&m.target))
        .cloned()
        .collect()
}

/// Unmounts one file system. If it is busy: a block-device file system is remounted
/// read-only first (so its journal is clean even if the detach below leaves it attached),
/// then lazily detached.
pub fn unmount_for_shutdown(k: &mut impl Kernel, m: &MountEntry) {
    match k.umount(&m.target, MntFlags::empty()) {
        Ok(()) => {
            info!("unmounted {}", m.target);
            return;
        }
        Err(e) => warn!("cannot unmount {}: {e}", m.target),
    }
    if m.source.starts_with("/dev/") {
        match k.mount(
            "",
            &m.target,
            "",
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        ) {
            Ok(()) => info!("remounted {} read-only", m.target),
            Err(e) => error!("cannot remount {} read-only: {e}", m.target),
        }
    }
    match k.umount(&m.target, MntFlags::MNT_DETACH) {
        Ok(()) => info!("detached {} (lazy unmount)", m.target),
        Err(e) => error!("cannot detach {}: {e}", m.target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::{Call, FakeKernel};

    #[test]
    fn early_mounts_skip_what_is_mounted_and_survive_errors() {
        let mut k =
            FakeKernel::with_mounts(&[("rootfs", "/", "rootfs"), ("devtmpfs", "/dev", "devtmpfs")]);
        k.mount_errors.push(("/sys".into(), Errno::ENODEV));
        k.mount_errors.push(("/tmp".into(), Errno::EBUSY));
        mount_early(&mut k);
        let mounted: Vec<_> = k
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount { target, .. } => Some(target.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(mounted, ["/proc", "/sys", "/dev/pts", "/run", "/tmp"]);
        assert!(k.calls.contains(&Call::Mkdir {
            path: "/dev/pts".into(),
            mode: 0o755
        }));
        assert!(k.calls.iter().any(|c| matches!(c,
            Call::Mount { target, data: Some(d), .. } if target == "/tmp" && d == "mode=1777")));
    }

    #[test]
    fn shutdown_unmounts_innermost_first_and_keeps_virtual_ones() {
        let mut table = FakeKernel::APPLIANCE_MOUNTS.to_vec();
        table.extend([
            ("tmpfs", "/data/site/cache", "tmpfs"),
            ("cgroup2", "/sys/fs/cgroup", "cgroup2"),
            ("tmpfs", "/devices", "tmpfs"),
        ]);
        let k = FakeKernel::with_mounts(&table);
        let order: Vec<_> = shutdown_unmount_order(&k.table)
            .into_iter()
            .map(|m| m.target)
            .collect();
        assert_eq!(
            order,
            ["/devices", "/data/site/cache", "/data", "/tmp", "/run"]
        );
    }

    #[test]
    fn a_busy_disk_is_remounted_read_only_then_detached() {
        let mut k = FakeKernel::with_mounts(&[("/dev/vda", "/data", "ext4")]);
        k.busy.push("/data".into());
        let m = k.table[0].clone();
        unmount_for_shutdown(&mut k, &m);
        assert_eq!(
            k.calls,
            [
                Call::Umount {
                    target: "/data".into(),
                    flags: MntFlags::empty()
                },
                Call::Mount {
                    source: String::new(),
                    target: "/data".into(),
                    fstype: String::new(),
                    flags: MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    data: None
                },
                Call::Umount {
                    target: "/data".into(),
                    flags: MntFlags::MNT_DETACH
                },
            ]
        );
        assert!(k.table.is_empty());
    }
}
