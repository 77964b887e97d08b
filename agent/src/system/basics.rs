//! Status > Basics: what the appliance is (SMBIOS system information), what it runs on
//! (CPU, memory, disks, NICs) and what it runs (firmware, kernel).
//!
//! SMBIOS is read once (it does not change while running) with smbios-lib from
//! `/sys/firmware/dmi/tables`; a machine without DMI reports the fields as unknown.
//! Everything else is read on each request: CPU and memory with the sysinfo crate, disks
//! and NICs from `/sys`.

use crate::model::{Basics, Cpu, Disk, Memory, NicSummary, SystemIdentity};
use std::path::Path;
use std::sync::OnceLock;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

fn clean(s: Option<String>) -> Option<String> {
    s.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// SMBIOS type 1 (system information), read once.
pub fn identity() -> SystemIdentity {
    static ID: OnceLock<SystemIdentity> = OnceLock::new();
    ID.get_or_init(|| match smbioslib::table_load_from_device() {
        Ok(data) => match data.first::<smbioslib::SMBiosSystemInformation>() {
            Some(sys) => SystemIdentity {
                manufacturer: clean(sys.manufacturer().ok()),
                product_name: clean(sys.product_name().ok()),
                serial_number: clean(sys.serial_number().ok()),
                uuid: sys.uuid().and_then(|u| match u {
                    smbioslib::SystemUuidData::Uuid(id) => Some(id.to_string()),
                    _ => None,
                }),
                source: "smbios".into(),
            },
            None => SystemIdentity {
                source: "smbios table has no system information".into(),
                ..Default::default()
            },
        },
        Err(e) => SystemIdentity {
            source: format!("no smbios: {e}"),
            ..Default::default()
        },
    })
    .clone()
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// CPU and memory as the kernel reports them now (`/proc/stat`, `/proc/cpuinfo`,
/// `/proc/meminfo`, read by sysinfo); `None` where sysinfo does not support the platform.
fn snapshot() -> Option<System> {
    let what = RefreshKind::nothing()
        .with_cpu(CpuRefreshKind::nothing())
        .with_memory(MemoryRefreshKind::nothing().with_ram());
    System::new_with_specifics(what).ok()
}

/// The CPU model (of the first CPU) and the number of logical CPUs online (at least one).
pub fn cpu(sys: Option<&System>) -> Cpu {
    let cpus = sys.map(System::cpus).unwrap_or_default();
    let model = cpus
        .first()
        .map(|c| c.brand().trim().to_string())
        .filter(|m| !m.is_empty());
    Cpu {
        model,
        logical_cpus: cpus.len().max(1),
    }
}

/// Total and available memory; unknown (rather than 0) when the kernel did not say.
pub fn memory(sys: Option<&System>) -> Memory {
    let known = |bytes: u64| Some(bytes).filter(|&b| b > 0);
    Memory {
        total_bytes: sys.and_then(|s| known(s.total_memory())),
        available_bytes: sys.and_then(|s| known(s.available_memory())),
    }
}

/// Whole disks (not partitions, loop or RAM devices) with their sizes.
///
/// Read from `/sys/block`, not with sysinfo: its disk list is the mounted file systems
/// and their sizes, so a blank or erased data disk (nothing mounted) would be missing and
/// a partitioned one would show its partitions instead of the whole device.
pub fn disks() -> Vec<Disk> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if ["loop", "ram", "zram", "sr", "fd"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let sectors: u64 = read(entry.path().join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let model = read(entry.path().join("device/model")).filter(|m| !m.is_empty());
        out.push(Disk {
            name,
            size_bytes: sectors * 512,
            model,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Network interfaces other than loopback, with MAC and driver.
pub fn nics() -> Vec<NicSummary> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        let driver = std::fs::read_link(entry.path().join("device/driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        out.push(NicSummary {
            name,
            mac: read(entry.path().join("address")),
            driver,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

pub fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The newest modification time of the settings under `config_dir` (its files and those
/// of its subdirectories), as seconds since the epoch.
pub fn last_config_change(config_dir: &Path) -> Option<u64> {
    fn newest(dir: &Path, depth: u32) -> Option<std::time::SystemTime> {
        let mut best = None;
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let t = if meta.is_dir() && depth > 0 {
                newest(&entry.path(), depth - 1)
            } else {
                meta.modified().ok()
            };
            best = best.max(t);
        }
        best
    }
    newest(config_dir, 2)?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// Everything but the identity's cache is read fresh.
pub fn basics(config_dir: &Path) -> Basics {
    let sys = snapshot();
    Basics {
        identity: identity(),
        firmware_version: env!("CARGO_PKG_VERSION").into(),
        firmware_build: super::build_id().into(),
        kernel: kernel_version(),
        cpu: cpu(sys.as_ref()),
        memory: memory(sys.as_ref()),
        disks: disks(),
        nics: nics(),
        last_config_change_unix: last_config_change(config_dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_machine_without_failing() {
        let b = basics(Path::new("/nonexistent"));
        assert!(b.cpu.logical_cpus >= 1);
        assert!(b.memory.total_bytes.unwrap_or(0) > 0);
        assert!(!b.kernel.is_empty());
        assert_eq!(b.last_config_change_unix, None);
        // This build machine has no DMI: the identity says why instead of failing.
        assert!(!b.identity.source.is_empty());
    }

    /// sysinfo reports what the kernel's own files say (the fields kept their meaning).
    #[test]
    fn cpu_and_memory_match_proc() {
        let sys = snapshot();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let processors = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string());
        let c = cpu(sys.as_ref());
        assert_eq!(c.logical_cpus, processors.max(1));
        assert_eq!(c.model, model);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let total_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        let m = memory(sys.as_ref());
        assert_eq!(m.total_bytes, Some(total_kib * 1024));
        assert!(m
            .available_bytes
            .is_some_and(|a| a > 0 && a <= total_kib * 1024));
    }

    #[test]
    fn without_sysinfo_cpu_and_memory_are_unknown() {
        assert_eq!(cpu(None).logical_cpus, 1);
        assert_eq!(cpu(None).model, None);
        assert_eq!(memory(None).total_bytes, None);
    }

    #[test]
    fn last_config_change_is_the_newest_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tls")).unwrap();
        std::fs::write(dir.path().join("tls/cert.pem"), "x").unwrap();
        let t = last_config_change(dir.path()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now - t < 60);
    }
}
