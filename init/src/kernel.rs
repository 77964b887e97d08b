//! The seam in front of the kernel: mounts, signals to every process, sync, reboot, the
//! clocks and the few file writes whose order matters at shutdown. [`Linux`] is the real
//! thing (used by the binary, and by the namespace and QEMU tests); the recording fake in
//! `fake` (unit tests only) lets the data-disk and shutdown sequences be tested without
//! root. In the style of youki's `Syscall` trait.

use std::io;
use std::path::Path;
use std::time::Duration;

use appliance_proto::control::PowerAction;
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::Signal;

/// One line of `/proc/self/mounts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub source: String,
    pub target: String,
    pub fstype: String,
}

pub trait Kernel {
    /// `mount(2)`; `source` and `fstype` may be empty for a remount.
    fn mount(
        &mut self,
        source: &str,
        target: &str,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno>;
    /// `umount2(2)`.
    fn umount(&mut self, target: &str, flags: MntFlags) -> Result<(), Errno>;
    /// The current mount table, in mount order.
    fn mounts(&mut self) -> Vec<MountEntry>;
    /// `mkdir -p` then `chmod` the last component to `mode`.
    fn mkdir(&mut self, path: &str, mode: u32) -> io::Result<()>;
    /// `kill(-1, signal)`: every process except init itself.
    fn kill_all(&mut self, signal: Signal) -> Result<(), Errno>;
    /// `sync(2)`.
    fn sync(&mut self);
    /// `reboot(2)`; returns only if the kernel refused.
    fn reboot(&mut self, action: PowerAction) -> Errno;
    /// Replaces `path` atomically and durably (see [`crate::records::write_atomic`]).
    fn write_atomic(&mut self, path: &str, contents: &[u8]) -> io::Result<()>;
    /// Time on `CLOCK_MONOTONIC` (time since the kernel started).
    fn now(&self) -> Duration;
    /// Wall-clock seconds since the epoch, if the clock is readable.
    fn unix_time(&self) -> Option<u64>;
}

/// `CLOCK_MONOTONIC` as a `Duration` since boot; zero if the clock cannot be read.
pub fn monotonic() -> Duration {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => Duration::from(ts),
        Err(_) => Duration::ZERO,
    }
}

/// The real kernel.
pub struct Linux;

impl Kernel for Linux {
    fn mount(
        &mut self,
        source: &str,
        target: &str,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        let source = (!source.is_empty()).then_some(source);
        let fstype = (!fstype.is_empty()).then_some(fstype);
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount(&mut self, target: &str, flags: MntFlags) -> Result<(), Errno> {
        nix::mount::umount2(target, flags)
    }

    fn mounts(&mut self) -> Vec<MountEntry> {
        match std::fs::read_to_string("/proc/self/mounts") {
            Ok(text) => parse_mounts(&text),
            Err(_) => Vec::new(),
        }
    }

    fn mkdir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    fn kill_all(&mut self, signal: Signal) -> Result<(), Errno> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), signal)
    }

    fn sync(&mut self) {
        nix::unistd::sync();
    }

    fn reboot(&mut self, action: PowerAction) -> Errno {
        use nix::sys::reboot::RebootMode;
        let mode = match action {
            PowerAction::PowerOff => RebootMode::RB_POWER_OFF,
            PowerAction::Reboot => RebootMode::RB_AUTOBOOT,
            PowerAction::Halt => RebootMode::RB_HALT_SYSTEM,
        };
        match nix::sys::reboot::reboot(mode) {
            Err(e) => e,
            Ok(never) => match never {},
        }
    }

    fn write_atomic(&mut self, path: &str, contents: &[u8]) -> io::Result<()> {
        crate::records::write_atomic(Path::new(path), contents)
    }

    fn now(&self) -> Duration {
        monotonic()
    }

    fn unix_time(&self) -> Option<u64> {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    }
}

/// Parses `/proc/self/mounts` (octal escapes such as `\040` decoded).
pub fn parse_mounts(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let source = unescape(fields.next()?);
            let target = unescape(fields.next()?);
            let fstype = unescape(fields.next()?);
            Some(MountEntry {
                source,
                target,
                fstype,
            })
        })
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'\\' {
            if let Some(octal) = bytes.get(i + 1..i + 4) {
                if let Ok(value) = u8::from_str_radix(std::str::from_utf8(octal).unwrap_or("x"), 8)
                {
                    out.push(value);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
pub mod fake {
    //! A kernel that records every call, for unit tests.

    use super::*;

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Call {
        Mount {
            source: String,
            target: String,
            fstype: String,
            flags: MsFlags,
            data: Option<String>,
        },
        Umount {
            target: String,
            flags: MntFlags,
        },
        Mkdir {
            path: String,
            mode: u32,
        },
        KillAll(Signal),
        Sync,
        Reboot(PowerAction),
        WriteAtomic {
            path: String,
            contents: String,
        },
    }

    #[derive(Default)]
    pub struct FakeKernel {
        pub calls: Vec<Call>,
        pub table: Vec<MountEntry>,
        /// `mount` fails with this errno for these targets.
        pub mount_errors: Vec<(String, Errno)>,
        /// The first plain (not lazy) `umount` of these targets fails with `EBUSY`.
        pub busy: Vec<String>,
        pub now: Duration,
    }

    impl FakeKernel {
        /// What an appliance has mounted once it is up: the early mounts and `/data`.
        pub const APPLIANCE_MOUNTS: [(&'static str, &'static str, &'static str); 8] = [
            ("rootfs", "/", "rootfs"),
            ("proc", "/proc", "proc"),
            ("sysfs", "/sys", "sysfs"),
            ("devtmpfs", "/dev", "devtmpfs"),
            ("devpts", "/dev/pts", "devpts"),
            ("tmpfs", "/run", "tmpfs"),
            ("tmpfs", "/tmp", "tmpfs"),
            ("/dev/vda", "/data", "ext4"),
        ];

        pub fn with_mounts(entries: &[(&str, &str, &str)]) -> FakeKernel {
            FakeKernel {
                table: entries
                    .iter()
                    .map(|(s, t, f)| MountEntry {
                        source: s.to_string(),
                        target: t.to_string(),
                        fstype: f.to_string(),
                    })
                    .collect(),
                ..FakeKernel::default()
            }
        }
    }

    impl Kernel for FakeKernel {
        fn mount(
            &mut self,
            source: &str,
            target: &str,
            fstype: &str,
            flags: MsFlags,
            data: Option<&str>,
        ) -> Result<(), Errno> {
            self.calls.push(Call::Mount {
                source: source.into(),
                target: target.into(),
                fstype: fstype.into(),
                flags,
                data: data.map(String::from),
            });
            if let Some((_, e)) = self.mount_errors.iter().find(|(t, _)| t == target) {
                return Err(*e);
            }
            if !flags.contains(MsFlags::MS_REMOUNT) {
                self.table.push(MountEntry {
                    source: source.into(),
                    target: target.into(),
                    fstype: fstype.into(),
                });
            }
            Ok(())
        }

        fn umount(&mut self, target: &str, flags: MntFlags) -> Result<(), Errno> {
            self.calls.push(Call::Umount {
                target: target.into(),
                flags,
            });
            if !flags.contains(MntFlags::MNT_DETACH) {
                if let Some(pos) = self.busy.iter().position(|t| t == target) {
                    self.busy.remove(pos);
                    return Err(Errno::EBUSY);
                }
            }
            match self.table.iter().rposition(|m| m.target == target) {
                Some(pos) => {
                    self.table.remove(pos);
                    Ok(())
                }
                None => Err(Errno::EINVAL),
            }
        }

        fn mounts(&mut self) -> Vec<MountEntry> {
            self.table.clone()
        }

        fn mkdir(&mut self, path: &str, mode: u32) -> io::Result<()> {
            self.calls.push(Call::Mkdir {
                path: path.into(),
                mode,
            });
            Ok(())
        }

        fn kill_all(&mut self, signal: Signal) -> Result<(), Errno> {
            self.calls.push(Call::KillAll(signal));
            Ok(())
        }

        fn sync(&mut self) {
            self.calls.push(Call::Sync);
        }

        fn reboot(&mut self, action: PowerAction) -> Errno {
            self.calls.push(Call::Reboot(action));
            Errno::EPERM
        }

        fn write_atomic(&mut self, path: &str, contents: &[u8]) -> io::Result<()> {
            self.calls.push(Call::WriteAtomic {
                path: path.into(),
                contents: String::from_utf8_lossy(contents).into_owned(),
            });
            Ok(())
        }

        fn now(&self) -> Duration {
            self.now
        }

        fn unix_time(&self) -> Option<u64> {
            Some(1_700_000_000)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_table_parses_with_escapes() {
        let text = "rootfs / rootfs rw 0 0\n/dev/vdb /data ext4 rw,noatime 0 0\n\
                    tmpfs /mnt/my\\040dir tmpfs rw 0 0\nbroken\n";
        let m = parse_mounts(text);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[1],
            MountEntry {
                source: "/dev/vdb".into(),
                target: "/data".into(),
                fstype: "ext4".into()
            }
        );
        assert_eq!(m[2].target, "/mnt/my dir");
    }

    #[test]
    fn monotonic_moves_forward() {
        let a = monotonic();
        let b = monotonic();
        assert!(b >= a && a > Duration::ZERO);
    }
}
