//! Lists block devices from sysfs and reads what is on them.
//!
//! Without `appliance.data=/dev/X`, devices whose kernel name starts with one of
//! [`SKIPPED_PREFIXES`] are not considered at all: loop and RAM disks, compressed swap,
//! CD/DVD and floppy drives, network block devices, device-mapper and md RAID volumes and
//! raw flash. They are either not disks of this box or belong to a storage stack the
//! appliance does not manage. A device named on the command line is probed whatever its
//! name.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::superblock::{classify, Content, BLANK_REGION};

pub const SKIPPED_PREFIXES: [&str; 9] = [
    "loop", "ram", "zram", "sr", "fd", "nbd", "dm-", "md", "mtdblock",
];

/// A disk or partition as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDevice {
    /// Kernel name, `vdb` or `vdb1`.
    pub name: String,
    /// Device node, `/dev/vdb`.
    pub dev: String,
    /// A whole disk, not a partition.
    pub whole_disk: bool,
    /// Size in bytes.
    pub size: u64,
    pub read_only: bool,
    /// Removable media (USB sticks, card readers); only known for whole disks.
    pub removable: bool,
    /// For a partition, the kernel name of its disk.
    pub parent: Option<String>,
    /// For a partition of a GPT disk, its entry ([`super::partition::annotate`]).
    pub gpt: Option<super::partition::GptEntry>,
}

/// A device and what is on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub device: BlockDevice,
    pub content: Content,
}

pub fn skipped_in_scan(name: &str) -> bool {
    SKIPPED_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Every block device under `class_block` (`/sys/class/block`), sorted by name, with its
/// node under `dev_dir` (`/dev`).
pub fn list(class_block: &Path, dev_dir: &Path) -> Vec<BlockDevice> {
    let Ok(entries) = std::fs::read_dir(class_block) else {
        return Vec::new();
    };
    let mut devices: Vec<BlockDevice> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dir = e.path();
            // DEVNAME is the node name under /dev (it differs from the sysfs name for
            // names with a '/', like cciss!c0d0).
            let devname = read_trimmed(&dir.join("uevent"))
                .and_then(|u| {
                    u.lines()
                        .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_string))
                })
                .unwrap_or_else(|| name.clone());
            let sectors: u64 = read_trimmed(&dir.join("size"))?.parse().ok()?;
            let whole_disk = !dir.join("partition").exists();
            // A partition's sysfs directory sits inside its disk's.
            let parent = (!whole_disk)
                .then(|| std::fs::canonicalize(&dir).ok())
                .flatten()
                .and_then(|p| {
                    p.parent()
                        .and_then(|d| d.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                });
            Some(BlockDevice {
                dev: dev_dir.join(&devname).to_string_lossy().into_owned(),
                whole_disk,
                size: sectors.saturating_mul(512),
                read_only: read_trimmed(&dir.join("ro")).as_deref() == Some("1"),
                removable: read_trimmed(&dir.join("removable")).as_deref() == Some("1"),
                name,
                parent,
                gpt: None,
            })
        })
        .collect();
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    devices
}

/// What names a device independently of its contents and of the order the kernel found it
/// in, for binding a factory-reset marker to it: for a partition its GPT partition GUID
/// (`PARTUUID` in its uevent) or else its disk's serial and its number; for a disk its
/// serial (`serial`, `device/serial`, or `device/wwid`). Empty when sysfs tells none (a
/// virtio disk without a serial); the marker's size binding still applies then.
pub fn identity(class_block: &Path, name: &str) -> String {
    let dir = class_block.join(name);
    let serial = |disk: &Path| {
        ["serial", "device/serial", "device/wwid"]
            .iter()
            .filter_map(|f| read_trimmed(&disk.join(f)))
            .find(|s| !s.is_empty())
    };
    match read_trimmed(&dir.join("partition")) {
        Some(number) => {
            let uevent = read_trimmed(&dir.join("uevent")).unwrap_or_default();
            if let Some(uuid) = uevent.lines().find_map(|l| l.strip_prefix("PARTUUID=")) {
                return format!("partuuid:{}", uuid.to_ascii_lowercase());
            }
            // `vda1/..` is the disk's directory once sysfs has resolved the link.
            serial(&dir.join(".."))
                .map(|s| format!("serial:{s}#{number}"))
                .unwrap_or_default()
        }
        None => serial(&dir)
            .map(|s| format!("serial:{s}"))
            .unwrap_or_default(),
    }
}

/// Reads the first and last [`BLANK_REGION`] of the device and classifies it, in chunks
/// of 64 KiB so that init's memory stays small.
pub fn probe(device: &BlockDevice) -> Content {
    match probe_file(&device.dev, device.size) {
        Ok(content) => content,
        Err(e) => Content::Unreadable(e.to_string()),
    }
}

const CHUNK: usize = 64 * 1024;

/// The 1 KiB ext superblock of `dev`.
pub fn read_superblock(dev: &str) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(dev)?;
    f.seek(SeekFrom::Start(
        crate::datadisk::superblock::SUPERBLOCK_OFFSET as u64,
    ))?;
    let mut sb = vec![0u8; 1024];
    f.read_exact(&mut sb)?;
    Ok(sb)
}

fn probe_file(path: &str, size: u64) -> std::io::Result<Content> {
    let region = BLANK_REGION as u64;
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; CHUNK];
    // The first chunk holds the superblock (and the partition table, if any).
    let n = read_full(&mut f, &mut buf, size)?;
    let content = classify(buf.get(..n).unwrap_or_default(), &[]);
    if content != Content::Blank {
        return Ok(content);
    }
    let rest_of_head = region.min(size).saturating_sub(n as u64);
    if !zero_region(&mut f, &mut buf, rest_of_head)? {
        return Ok(Content::Other);
    }
    if size > region {
        let tail_start = size.saturating_sub(region).max(region);
        f.seek(SeekFrom::Start(tail_start))?;
        let mut tail_len = size.saturating_sub(tail_start);
        // The reserved tail may hold the record of an earlier secure erase, and nothing
        // else: such a disk is blank.
        if tail_start == crate::reset::tail_offset(size) {
            let n = read_full(&mut f, &mut buf, tail_len)?;
            let first = buf.get_mut(..n).unwrap_or_default();
            crate::reset::mask_erase_record(first);
            if first.iter().any(|&b| b != 0) {
                return Ok(Content::Other);
            }
            tail_len = tail_len.saturating_sub(n as u64);
        }
        if !zero_region(&mut f, &mut buf, tail_len)? {
            return Ok(Content::Other);
        }
    }
    Ok(Content::Blank)
}

/// Fills `buf` (up to `limit` bytes); returns how many bytes were read.
fn read_full(f: &mut File, buf: &mut [u8], limit: u64) -> std::io::Result<usize> {
    let want = usize::try_from(limit).unwrap_or(usize::MAX).min(buf.len());
    let mut got = 0;
    while got < want {
        match f.read(buf.get_mut(got..want).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Whether the next `len` bytes are all zero (a short device counts as zero-filled).
fn zero_region(f: &mut File, buf: &mut [u8], len: u64) -> std::io::Result<bool> {
    let mut left = len;
    while left > 0 {
        let n = read_full(f, buf, left)?;
        if n == 0 {
            break;
        }
        if buf.get(..n).unwrap_or_default().iter().any(|&b| b != 0) {
            return Ok(false);
        }
        left = left.saturating_sub(n as u64);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datadisk::superblock::tests::ext_image;
    use crate::testutil::TempDir;

    fn fake_device(
        root: &Path,
        name: &str,
        devname: &str,
        partition: bool,
        content: &[u8],
        size: u64,
    ) {
        let sys = root.join("sys").join(name);
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::write(
            sys.join("uevent"),
            format!("MAJOR=8\nMINOR=0\nDEVNAME={devname}\nDEVTYPE=disk\n"),
        )
        .unwrap();
        std::fs::write(sys.join("size"), format!("{}\n", size / 512)).unwrap();
        std::fs::write(sys.join("ro"), "0\n").unwrap();
        if partition {
            std::fs::write(sys.join("partition"), "1\n").unwrap();
        } else {
            std::fs::write(sys.join("removable"), "0\n").unwrap();
        }
        let dev = root.join("dev").join(devname);
        std::fs::create_dir_all(dev.parent().unwrap()).unwrap();
        std::fs::write(&dev, content).unwrap();
        File::options()
            .write(true)
            .open(&dev)
            .unwrap()
            .set_len(size)
            .unwrap();
    }

    #[test]
    fn lists_and_probes_a_fake_sysfs() {
        let t = TempDir::new("scan");
        let mib = 1024 * 1024;
        fake_device(&t.0, "vdb", "vdb", false, &[], 8 * mib);
        fake_device(&t.0, "vda", "vda", false, &[0x55, 0xaa], 8 * mib);
        fake_device(
            &t.0,
            "vda1",
            "vda1",
            true,
            &ext_image("APPLIANCE_DATA"),
            4 * mib,
        );
        fake_device(&t.0, "cciss!c0d0", "cciss/c0d0", false, &[], 3 * mib);
        let list = list(&t.0.join("sys"), &t.0.join("dev"));
        let names: Vec<_> = list.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["cciss!c0d0", "vda", "vda1", "vdb"]);
        assert!(list[0].dev.ends_with("/dev/cciss/c0d0"));
        assert!(list[1].whole_disk && !list[2].whole_disk);
        assert_eq!(list[3].size, 8 * mib);
        assert_eq!(probe(&list[0]), Content::Blank);
        assert_eq!(probe(&list[1]), Content::Other);
        assert_eq!(
            probe(&list[2]),
            Content::Ext {
                label: "APPLIANCE_DATA".into()
            }
        );
        assert_eq!(probe(&list[3]), Content::Blank);
    }

    #[test]
    fn identity_comes_from_the_serial_or_the_partition_guid() {
        let t = TempDir::new("identity");
        let devices = t.0.join("devices/vda");
        let class = t.0.join("class");
        std::fs::create_dir_all(devices.join("vda1")).unwrap();
        std::fs::create_dir_all(devices.join("vda2")).unwrap();
        std::fs::create_dir_all(&class).unwrap();
        std::fs::write(devices.join("serial"), "DISK-42\n").unwrap();
        std::fs::write(devices.join("vda1/partition"), "1\n").unwrap();
        std::fs::write(devices.join("vda1/uevent"), "PARTN=1\n").unwrap();
        std::fs::write(devices.join("vda2/partition"), "2\n").unwrap();
        std::fs::write(
            devices.join("vda2/uevent"),
            "PARTN=2\nPARTUUID=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
        )
        .unwrap();
        for n in ["vda", "vda/vda1", "vda/vda2"] {
            let name = n.rsplit('/').next().unwrap();
            std::os::unix::fs::symlink(t.0.join("devices").join(n), class.join(name)).unwrap();
        }
        assert_eq!(identity(&class, "vda"), "serial:DISK-42");
        assert_eq!(identity(&class, "vda1"), "serial:DISK-42#1");
        assert_eq!(
            identity(&class, "vda2"),
            "partuuid:0fc63daf-8483-4772-8e79-3d69d8477de4"
        );
        assert_eq!(identity(&class, "vdz"), "");
    }

    #[test]
    fn a_disk_holding_only_an_erase_record_is_blank() {
        let t = TempDir::new("record");
        let mib = 1024 * 1024;
        fake_device(&t.0, "vdc", "vdc", false, &[], 8 * mib);
        let dev = t.0.join("dev/vdc");
        let record = crate::reset::tests::sample_record(8 * mib);
        let mut f = File::options().write(true).open(&dev).unwrap();
        f.seek(SeekFrom::Start(crate::reset::record_offset(8 * mib)))
            .unwrap();
        std::io::Write::write_all(&mut f, &record).unwrap();
        let list = list(&t.0.join("sys"), &t.0.join("dev"));
        assert_eq!(probe(&list[0]), Content::Blank);
        // One more byte anywhere in the tail and it is not.
        f.seek(SeekFrom::Start(8 * mib - 10)).unwrap();
        std::io::Write::write_all(&mut f, b"x").unwrap();
        assert_eq!(probe(&list[0]), Content::Other);
    }

    #[test]
    fn data_near_the_end_makes_a_disk_not_blank() {
        let t = TempDir::new("tail");
        let mib = 1024 * 1024;
        fake_device(&t.0, "vdc", "vdc", false, &[], 5 * mib);
        let dev = t.0.join("dev/vdc");
        let mut f = File::options().write(true).open(&dev).unwrap();
        f.seek(SeekFrom::Start(5 * mib - 4096)).unwrap();
        std::io::Write::write_all(&mut f, b"EFI PART").unwrap();
        let list = list(&t.0.join("sys"), &t.0.join("dev"));
        assert_eq!(probe(&list[0]), Content::Other);
    }

    #[test]
    fn data_anywhere_in_the_first_mib_makes_a_disk_not_blank() {
        let t = TempDir::new("head");
        let mib = 1024 * 1024;
        fake_device(&t.0, "vdc", "vdc", false, &[], 5 * mib);
        let dev = t.0.join("dev/vdc");
        let mut f = File::options().write(true).open(&dev).unwrap();
        f.seek(SeekFrom::Start(mib - 1)).unwrap();
        std::io::Write::write_all(&mut f, b"x").unwrap();
        let list = list(&t.0.join("sys"), &t.0.join("dev"));
        assert_eq!(probe(&list[0]), Content::Other);
    }

    #[test]
    fn a_missing_node_is_unreadable() {
        let d = BlockDevice {
            name: "vdz".into(),
            dev: "/nonexistent/vdz".into(),
            whole_disk: true,
            size: 1 << 20,
            read_only: false,
            removable: false,
            parent: None,
            gpt: None,
        };
        assert!(matches!(probe(&d), Content::Unreadable(_)));
    }

    #[test]
    fn scan_skips_virtual_and_foreign_stacks() {
        for n in [
            "loop0",
            "ram1",
            "zram0",
            "sr0",
            "fd0",
            "nbd3",
            "dm-0",
            "md127",
            "mtdblock2",
        ] {
            assert!(skipped_in_scan(n), "{n}");
        }
        for n in ["vda", "sda1", "nvme0n1", "nvme0n1p2", "mmcblk0", "xvda"] {
            assert!(!skipped_in_scan(n), "{n}");
        }
    }
}
