//! The GPT data partition of a disk written from `appliance.img`: which partitions carry
//! the data partition's GPT name and type (read from the disk's own table, since sysfs
//! shows the name but not the type), and growing that partition to the end of a disk that
//! is larger than the image, on first boot.
//!
//! The grow writes the backup table at the disk's new end first and zeros the last MiB of
//! the grown partition (it held whatever the disk held before the image was written, and
//! a blank partition must read as zeros at both ends), then the primary table, then zeros
//! the old backup table (which now lies inside the data partition), syncs and asks the
//! kernel to read the table again. A power cut before the primary is written
//! leaves the old table valid and the next boot grows again; after it, the new one.
//!
//! Limits: only a data partition that is still blank is grown (first boot): a file system
//! is never resized; 512-byte sectors only (see [`appliance_proto::gpt`]).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use appliance_proto::gpt::{self, Guid, HEAD_SECTORS, SECTOR};

use super::scan::{self, BlockDevice};
use super::superblock::Content;

/// A partition's entry in its disk's GPT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptEntry {
    pub name: String,
    pub type_guid: Guid,
}

impl GptEntry {
    /// The appliance's data partition: its GPT name and our type GUID.
    pub fn is_data(&self) -> bool {
        self.name == gpt::DATA_NAME && self.type_guid == gpt::DATA_TYPE
    }
}

fn read_table(dev: &str) -> Result<(gpt::Table, gpt::Header), String> {
    let mut head = vec![0u8; (HEAD_SECTORS * SECTOR) as usize];
    File::open(dev)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| e.to_string())?;
    gpt::read_primary(&head).map_err(|e| e.to_string())
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Fills in [`BlockDevice::gpt`] for the partitions of every whole disk with a valid GPT,
/// matching entries by their first sector (sysfs `start`).
pub fn annotate(devices: &mut [BlockDevice], class_block: &Path) {
    let disks: Vec<(String, String, bool)> = devices
        .iter()
        .filter(|d| d.whole_disk)
        .map(|d| (d.name.clone(), d.dev.clone(), d.removable))
        .collect();
    for (disk, dev, removable) in disks {
        let Ok((table, _)) = read_table(&dev) else {
            continue;
        };
        for part in devices
            .iter_mut()
            .filter(|d| d.parent.as_deref() == Some(disk.as_str()))
        {
            // sysfs knows removable media for whole disks only.
            part.removable |= removable;
            let start: Option<u64> = read_trimmed(&class_block.join(&part.name).join("start"))
                .and_then(|s| s.parse().ok());
            part.gpt = table
                .partitions
                .iter()
                .find(|p| Some(p.first_lba) == start)
                .map(|p| GptEntry {
                    name: p.name.clone(),
                    type_guid: p.type_guid,
                });
        }
    }
}

/// Grows a blank data partition to a disk larger than its table says; returns whether a
/// table was rewritten (the caller scans again). Everything that goes wrong is logged and
/// leaves the disk as it was.
pub fn grow_data_partition(devices: &[BlockDevice]) -> bool {
    let mut grew = false;
    for disk in devices
        .iter()
        .filter(|d| d.whole_disk && !d.read_only && !d.removable)
    {
        let Some(data) = devices.iter().find(|p| {
            p.parent.as_deref() == Some(disk.name.as_str())
                && p.gpt.as_ref().is_some_and(GptEntry::is_data)
        }) else {
            continue;
        };
        let Ok((table, header)) = read_table(&disk.dev) else {
            continue;
        };
        let sectors = disk.size / SECTOR;
        let Some(new) = gpt::grown(&table, &header, sectors, gpt::DATA_NAME, gpt::DATA_TYPE) else {
            continue;
        };
        if scan::probe(data) != Content::Blank {
            info!(
                "{}: the disk is larger than its partition table says, but {} holds data: not grown",
                disk.dev, data.dev
            );
            continue;
        }
        let new_size = new
            .find(gpt::DATA_NAME, gpt::DATA_TYPE)
            .map(|(_, p)| p.size())
            .unwrap_or(0);
        match rewrite(&disk.dev, &new, sectors, header.backup_lba) {
            Ok(()) => {
                warn!(
                    "grew the data partition {} from {} MiB to {} MiB to fill {} ({} MiB)",
                    data.dev,
                    data.size >> 20,
                    new_size >> 20,
                    disk.dev,
                    disk.size >> 20
                );
                grew = true;
            }
            Err(e) => error!("cannot grow the data partition on {}: {e}", disk.dev),
        }
    }
    grew
}

fn rewrite(dev: &str, table: &gpt::Table, sectors: u64, old_backup_lba: u64) -> io::Result<()> {
    let enc = table
        .encode(sectors)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let mut f = File::options().read(true).write(true).open(dev)?;
    let mut write_at = |offset: u64, bytes: &[u8]| -> io::Result<()> {
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(bytes)?;
        f.sync_data()
    };
    write_at(enc.tail_offset, &enc.tail)?;
    if let Some((_, data)) = table.find(gpt::DATA_NAME, gpt::DATA_TYPE) {
        let end = (data.last_lba + 1) * SECTOR;
        let region = super::superblock::BLANK_REGION as u64;
        write_at(
            end.saturating_sub(region),
            &vec![0u8; super::superblock::BLANK_REGION],
        )?;
    }
    write_at(0, &enc.head)?;
    let old_tail = old_backup_lba.saturating_sub(gpt::ENTRY_SECTORS) * SECTOR;
    if old_tail >= enc.head.len() as u64 && old_tail < enc.tail_offset {
        write_at(old_tail, &vec![0u8; (gpt::TAIL_SECTORS * SECTOR) as usize])?;
    }
    crate::ffi::reread_partitions(&f).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use appliance_proto::gpt::MIB;

    fn table_file(path: &Path, image_bytes: u64, disk_bytes: u64) -> gpt::Table {
        let sectors = image_bytes / SECTOR;
        let guids = [1u8, 2, 3, 4, 5].map(|n| Guid::random([n; 16]));
        let table = gpt::appliance_layout(sectors, guids).unwrap();
        let enc = table.encode(sectors).unwrap();
        let mut f = File::create(path).unwrap();
        f.set_len(disk_bytes).unwrap();
        f.write_all(&enc.head).unwrap();
        f.seek(SeekFrom::Start(enc.tail_offset)).unwrap();
        f.write_all(&enc.tail).unwrap();
        table
    }

    #[test]
    fn rewriting_moves_the_backup_and_clears_the_old_one() {
        let t = TempDir::new("grow");
        let disk = t.0.join("disk");
        let table = table_file(&disk, 256 * MIB, 512 * MIB);
        // Whatever the disk held beyond the image.
        let mut f = File::options().write(true).open(&disk).unwrap();
        f.seek(SeekFrom::Start(511 * MIB - 100)).unwrap();
        f.write_all(b"old data").unwrap();
        drop(f);
        let (read, header) = read_table(disk.to_str().unwrap()).unwrap();
        assert_eq!(read, table);
        let sectors = 512 * MIB / SECTOR;
        let new = gpt::grown(&read, &header, sectors, gpt::DATA_NAME, gpt::DATA_TYPE).unwrap();
        // A regular file is not a block device: the re-read fails, the tables are written.
        let e = rewrite(disk.to_str().unwrap(), &new, sectors, header.backup_lba).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
        let (after, header) = read_table(disk.to_str().unwrap()).unwrap();
        assert_eq!(after, new);
        assert_eq!(header.backup_lba, sectors - 1);
        let bytes = std::fs::read(&disk).unwrap();
        let old_backup = (256 * MIB - SECTOR) as usize;
        assert!(bytes[old_backup..old_backup + 512].iter().all(|&b| b == 0));
        assert!(
            bytes[(510 * MIB) as usize..(511 * MIB) as usize]
                .iter()
                .all(|&b| b == 0),
            "the grown partition's last MiB is blank"
        );
        let new_backup = (512 * MIB - SECTOR) as usize;
        assert_eq!(&bytes[new_backup..new_backup + 8], b"EFI PART");
    }

    #[test]
    fn partitions_are_annotated_from_their_disks_table() {
        let t = TempDir::new("annotate");
        let class = t.0.join("class");
        let disk = t.0.join("devices/vda");
        std::fs::create_dir_all(&class).unwrap();
        let table = table_file(&t.0.join("vda.img"), 300 * MIB, 300 * MIB);
        let mut devices = vec![BlockDevice {
            name: "vda".into(),
            dev: t.0.join("vda.img").to_string_lossy().into_owned(),
            whole_disk: true,
            size: 300 * MIB,
            read_only: false,
            removable: false,
            parent: None,
            gpt: None,
        }];
        for (n, p) in table.partitions.iter().enumerate() {
            let name = format!("vda{}", n + 1);
            std::fs::create_dir_all(disk.join(&name)).unwrap();
            std::fs::write(disk.join(&name).join("start"), format!("{}\n", p.first_lba)).unwrap();
            std::os::unix::fs::symlink(disk.join(&name), class.join(&name)).unwrap();
            devices.push(BlockDevice {
                name,
                dev: String::new(),
                whole_disk: false,
                size: p.size(),
                read_only: false,
                removable: false,
                parent: Some("vda".into()),
                gpt: None,
            });
        }
        annotate(&mut devices, &class);
        assert_eq!(devices[0].gpt, None);
        assert_eq!(devices[1].gpt.as_ref().unwrap().name, "ESP");
        assert!(!devices[2].gpt.as_ref().unwrap().is_data());
        assert!(devices[4].gpt.as_ref().unwrap().is_data());
    }
}
