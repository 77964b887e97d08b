//! GUID partition tables as bytes, and the appliance's disk layout.
//!
//! The image builder writes the table ([`Table::encode`]); init reads it back to find the
//! data partition by name and type ([`read_primary`]) and moves the backup table to the
//! end of a larger disk on first boot ([`grown`]). No I/O here: callers pass the first
//! [`HEAD_SECTORS`] sectors of the disk and its size.
//!
//! Layout of `appliance.img` ([`appliance_layout`]), 1 MiB aligned, 512-byte sectors:
//!
//! | # | name | type | size | content |
//! |---|------|------|------|---------|
//! | 1 | `ESP` | EFI system | 64 MiB | FAT32, `EFI/BOOT/BOOTX64.EFI` (the unified kernel image) |
//! | 2 | `APPLIANCE_FW_A` | [`FIRMWARE_TYPE`] | 64 MiB | blank: firmware slot A, reserved for updates |
//! | 3 | `APPLIANCE_FW_B` | [`FIRMWARE_TYPE`] | 64 MiB | blank: firmware slot B, reserved for updates |
//! | 4 | `APPLIANCE_DATA` | [`DATA_TYPE`] | the rest | blank; init makes `/data` there on first boot |
//!
//! The last MiB of the disk stays outside every partition (the backup table lives there).
//!
//! Limits: 512-byte logical sectors only (the image is written sector for sector; a 4Kn
//! disk would need a table of its own); 128 entries of 128 bytes, as every tool writes.

use std::fmt;

pub const SECTOR: u64 = 512;
pub const MIB: u64 = 1 << 20;
/// Entries in the table, and the size of each.
pub const ENTRIES: usize = 128;
pub const ENTRY_SIZE: usize = 128;
/// Sectors taken by the entry array (16 KiB).
pub const ENTRY_SECTORS: u64 = (ENTRIES * ENTRY_SIZE) as u64 / SECTOR;
/// Protective MBR, header and entries: what [`read_primary`] needs from the disk's start.
pub const HEAD_SECTORS: u64 = 2 + ENTRY_SECTORS;
/// Backup entries and header at the disk's end.
pub const TAIL_SECTORS: u64 = 1 + ENTRY_SECTORS;
/// Partitions start on and end before a MiB boundary; the disk's last MiB is left free.
pub const ALIGN: u64 = MIB;

const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION: u32 = 0x0001_0000;
const HEADER_SIZE: usize = 92;
const NAME_UNITS: usize = 36;

/// A GUID in its on-disk byte order (the first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID written `a-b-c-d[0..2]-d[2..8]`.
    pub const fn from_fields(a: u32, b: u16, c: u16, d: [u8; 8]) -> Guid {
        let a = a.to_le_bytes();
        let b = b.to_le_bytes();
        let c = c.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ])
    }

    /// A random (version 4) GUID from 16 random bytes.
    pub fn random(mut bytes: [u8; 16]) -> Guid {
        bytes[7] = (bytes[7] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Guid(bytes)
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for x in &b[10..] {
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// EFI system partition.
pub const ESP_TYPE: Guid = Guid::from_fields(
    0xC12A_7328,
    0xF81F,
    0x11D2,
    [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
);
/// Ours: the appliance's data partition (`b8d724e5-34bf-4466-9ade-322be0733903`).
pub const DATA_TYPE: Guid = Guid::from_fields(
    0xB8D7_24E5,
    0x34BF,
    0x4466,
    [0x9A, 0xDE, 0x32, 0x2B, 0xE0, 0x73, 0x39, 0x03],
);
/// Ours: a firmware slot (`bc4f1f67-9198-41c0-8a5a-324ab9cbcf3f`).
pub const FIRMWARE_TYPE: Guid = Guid::from_fields(
    0xBC4F_1F67,
    0x9198,
    0x41C0,
    [0x8A, 0x5A, 0x32, 0x4A, 0xB9, 0xCB, 0xCF, 0x3F],
);

pub const ESP_NAME: &str = "ESP";
pub const FIRMWARE_A_NAME: &str = "APPLIANCE_FW_A";
pub const FIRMWARE_B_NAME: &str = "APPLIANCE_FW_B";
/// The data partition's GPT name (the same word as the data file system's label).
pub const DATA_NAME: &str = crate::paths::DATA_LABEL;
pub const ESP_SIZE: u64 = 64 * MIB;
pub const FIRMWARE_SLOT_SIZE: u64 = 64 * MIB;

/// CRC-32 (IEEE 802.3), bitwise: tables and markers are small.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub type_guid: Guid,
    pub unique: Guid,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub name: String,
}

impl Partition {
    pub fn size(&self) -> u64 {
        (self.last_lba + 1).saturating_sub(self.first_lba) * SECTOR
    }
}

/// A partition table: the partitions in entry order (entry `i` is partition `i + 1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub disk_guid: Guid,
    pub partitions: Vec<Partition>,
}

/// What the primary header says besides the partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub backup_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GptError {
    /// No `EFI PART` signature at LBA 1: not a GPT disk (or another sector size).
    NoTable,
    /// A header or entry array whose checksum or fields are wrong.
    Corrupt(&'static str),
    /// The partitions do not fit the disk, overlap, or there are too many.
    Layout(String),
}

impl fmt::Display for GptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GptError::NoTable => write!(f, "no GPT header at LBA 1"),
            GptError::Corrupt(what) => write!(f, "corrupt GPT: {what}"),
            GptError::Layout(what) => write!(f, "bad partition layout: {what}"),
        }
    }
}

impl std::error::Error for GptError {}

/// The table's bytes: `head` goes at the disk's start, `tail` at `tail_offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
    pub tail_offset: u64,
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)?.try_into().ok().map(u64::from_le_bytes)
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)?.try_into().ok().map(u32::from_le_bytes)
}

fn guid_at(b: &[u8], at: usize) -> Option<Guid> {
    b.get(at..at + 16)?.try_into().ok().map(Guid)
}

/// First usable and last usable LBA on a disk of `sectors` sectors.
pub fn usable(sectors: u64) -> (u64, u64) {
    (HEAD_SECTORS, sectors.saturating_sub(TAIL_SECTORS + 1))
}

/// The last LBA a partition ending at the disk's end may use: the last MiB stays free.
pub fn last_aligned_lba(sectors: u64) -> u64 {
    let bytes = sectors * SECTOR;
    (bytes.saturating_sub(ALIGN) / ALIGN * ALIGN / SECTOR).saturating_sub(1)
}

impl Table {
    /// Checks the partitions against a disk of `sectors` sectors and encodes both copies.
    pub fn encode(&self, sectors: u64) -> Result<Encoded, GptError> {
        let (first_usable, last_usable) = usable(sectors);
        if self.partitions.len() > ENTRIES {
            return Err(GptError::Layout(format!("more than {ENTRIES} partitions")));
        }
        let mut sorted: Vec<&Partition> = self.partitions.iter().collect();
        sorted.sort_by_key(|p| p.first_lba);
        let mut next = first_usable;
        for p in sorted {
            if p.first_lba < next || p.last_lba < p.first_lba || p.last_lba > last_usable {
                return Err(GptError::Layout(format!(
                    "partition {:?} (LBA {}..={}) overlaps another or leaves LBA {}..={}",
                    p.name, p.first_lba, p.last_lba, first_usable, last_usable
                )));
            }
            if p.name.encode_utf16().count() > NAME_UNITS {
                return Err(GptError::Layout(format!("name {:?} is too long", p.name)));
            }
            next = p.last_lba + 1;
        }
        let mut entries = vec![0u8; ENTRIES * ENTRY_SIZE];
        for (p, e) in self.partitions.iter().zip(entries.chunks_mut(ENTRY_SIZE)) {
            e[0..16].copy_from_slice(&p.type_guid.0);
            e[16..32].copy_from_slice(&p.unique.0);
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            for (i, unit) in p.name.encode_utf16().enumerate() {
                e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
            }
        }
        let entries_crc = crc32(&entries);
        let backup_lba = sectors.saturating_sub(1);
        let header = |current: u64, alternate: u64, entries_lba: u64| {
            let mut h = vec![0u8; SECTOR as usize];
            h[0..8].copy_from_slice(SIGNATURE);
            h[8..12].copy_from_slice(&REVISION.to_le_bytes());
            h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
            h[24..32].copy_from_slice(&current.to_le_bytes());
            h[32..40].copy_from_slice(&alternate.to_le_bytes());
            h[40..48].copy_from_slice(&first_usable.to_le_bytes());
            h[48..56].copy_from_slice(&last_usable.to_le_bytes());
            h[56..72].copy_from_slice(&self.disk_guid.0);
            h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
            h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
            h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
            h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
            let crc = crc32(&h[..HEADER_SIZE]);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            h
        };
        let mut head = protective_mbr(sectors);
        head.extend(header(1, backup_lba, 2));
        head.extend_from_slice(&entries);
        let mut tail = entries;
        tail.extend(header(
            backup_lba,
            1,
            backup_lba.saturating_sub(ENTRY_SECTORS),
        ));
        Ok(Encoded {
            head,
            tail,
            tail_offset: backup_lba.saturating_sub(ENTRY_SECTORS) * SECTOR,
        })
    }

    /// The partition with this GPT name and type, with its number (1-based).
    pub fn find(&self, name: &str, type_guid: Guid) -> Option<(u32, &Partition)> {
        self.partitions
            .iter()
            .zip(1u32..)
            .find(|(p, _)| p.name == name && p.type_guid == type_guid)
            .map(|(p, n)| (n, p))
    }
}

fn protective_mbr(sectors: u64) -> Vec<u8> {
    let mut mbr = vec![0u8; SECTOR as usize];
    let size = u32::try_from(sectors.saturating_sub(1)).unwrap_or(u32::MAX);
    let entry = [0x00, 0x00, 0x02, 0x00, 0xEE, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0];
    mbr[446..458].copy_from_slice(&entry);
    mbr[458..462].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    mbr
}

/// Reads the primary table from the disk's first [`HEAD_SECTORS`] sectors, checking both
/// checksums. Empty entries are dropped, so partition numbers hold only while no entry
/// before the last used one is empty (true of every table [`Table::encode`] writes; init
/// looks partitions up by name and type, not by number).
pub fn read_primary(head: &[u8]) -> Result<(Table, Header), GptError> {
    let h = head
        .get(SECTOR as usize..2 * SECTOR as usize)
        .ok_or(GptError::NoTable)?;
    if h.get(0..8) != Some(&SIGNATURE[..]) {
        return Err(GptError::NoTable);
    }
    let size = le32(h, 12).ok_or(GptError::NoTable)? as usize;
    if !(HEADER_SIZE..=SECTOR as usize).contains(&size) {
        return Err(GptError::Corrupt("header size"));
    }
    let mut copy = h.get(..size).ok_or(GptError::NoTable)?.to_vec();
    copy.get_mut(16..20).unwrap_or_default().fill(0);
    if Some(crc32(&copy)) != le32(h, 16) {
        return Err(GptError::Corrupt("header checksum"));
    }
    let field = |at| le64(h, at).ok_or(GptError::Corrupt("header"));
    let entries_lba = field(72)?;
    let count = le32(h, 80).ok_or(GptError::Corrupt("header"))? as usize;
    let entry_size = le32(h, 84).ok_or(GptError::Corrupt("header"))? as usize;
    if entry_size != ENTRY_SIZE || count > ENTRIES || entries_lba != 2 {
        return Err(GptError::Corrupt(
            "entry array not the usual 128 x 128 bytes at LBA 2",
        ));
    }
    let start = (2 * SECTOR) as usize;
    let array = head
        .get(start..start + count * entry_size)
        .ok_or(GptError::Corrupt("entry array cut short"))?;
    if Some(crc32(array)) != le32(h, 88) {
        return Err(GptError::Corrupt("entry array checksum"));
    }
    let mut partitions = Vec::new();
    for e in array.chunks(ENTRY_SIZE) {
        let type_guid = guid_at(e, 0).ok_or(GptError::Corrupt("entry"))?;
        if type_guid.is_zero() {
            continue;
        }
        let units: Vec<u16> = e
            .get(56..128)
            .unwrap_or_default()
            .chunks(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .take_while(|&u| u != 0)
            .collect();
        partitions.push(Partition {
            type_guid,
            unique: guid_at(e, 16).ok_or(GptError::Corrupt("entry"))?,
            first_lba: le64(e, 32).ok_or(GptError::Corrupt("entry"))?,
            last_lba: le64(e, 40).ok_or(GptError::Corrupt("entry"))?,
            name: String::from_utf16_lossy(&units),
        });
    }
    let header = Header {
        backup_lba: field(32)?,
        first_usable: field(40)?,
        last_usable: field(48)?,
    };
    let table = Table {
        disk_guid: guid_at(h, 56).ok_or(GptError::Corrupt("header"))?,
        partitions,
    };
    Ok((table, header))
}

/// The table for a disk now `sectors` long, when it was written for a shorter one: the
/// partition `name` of type `type_guid` grows to the last MiB boundary short of the
/// disk's last MiB, and the backup table moves to the end. `None` when there is nothing
/// to do: the table already ends at the disk's end, the partition is missing or not the
/// last one, or it would not grow.
pub fn grown(
    table: &Table,
    header: &Header,
    sectors: u64,
    name: &str,
    type_guid: Guid,
) -> Option<Table> {
    if header.backup_lba + 1 >= sectors {
        return None;
    }
    let (index, part) = table
        .partitions
        .iter()
        .enumerate()
        .find(|(_, p)| p.name == name && p.type_guid == type_guid)?;
    if table.partitions.iter().any(|p| p.last_lba > part.last_lba) {
        return None;
    }
    let last = last_aligned_lba(sectors);
    if last <= part.last_lba {
        return None;
    }
    let mut new = table.clone();
    new.partitions.get_mut(index)?.last_lba = last;
    Some(new)
}

/// The appliance's layout on a disk image of `sectors` sectors (see the module doc).
pub fn appliance_layout(sectors: u64, guids: [Guid; 5]) -> Result<Table, GptError> {
    let [disk, esp, fw_a, fw_b, data] = guids;
    let lba = |bytes: u64| bytes / SECTOR;
    let mut at = ALIGN;
    let mut next = |size: u64| {
        let first = lba(at);
        at += size;
        (first, lba(at) - 1)
    };
    let (e0, e1) = next(ESP_SIZE);
    let (a0, a1) = next(FIRMWARE_SLOT_SIZE);
    let (b0, b1) = next(FIRMWARE_SLOT_SIZE);
    let data_first = lba(at);
    let data_last = last_aligned_lba(sectors);
    if data_last < data_first + lba(crate::gpt::MIB) {
        return Err(GptError::Layout(format!(
            "a disk of {} MiB leaves no room for the data partition",
            sectors * SECTOR / MIB
        )));
    }
    let part = |type_guid, unique, first_lba, last_lba, name: &str| Partition {
        type_guid,
        unique,
        first_lba,
        last_lba,
        name: name.to_string(),
    };
    Ok(Table {
        disk_guid: disk,
        partitions: vec![
            part(ESP_TYPE, esp, e0, e1, ESP_NAME),
            part(FIRMWARE_TYPE, fw_a, a0, a1, FIRMWARE_A_NAME),
            part(FIRMWARE_TYPE, fw_b, b0, b1, FIRMWARE_B_NAME),
            part(DATA_TYPE, data, data_first, data_last, DATA_NAME),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guids() -> [Guid; 5] {
        [1u8, 2, 3, 4, 5].map(|n| Guid::random([n; 16]))
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn guids_print_in_their_usual_form() {
        assert_eq!(ESP_TYPE.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(
            DATA_TYPE.to_string(),
            "b8d724e5-34bf-4466-9ade-322be0733903"
        );
        let g = Guid::random([0xff; 16]).to_string();
        assert_eq!(&g[14..15], "4", "{g}");
    }

    #[test]
    fn layout_round_trips_and_keeps_the_last_mib_free() {
        let sectors = 512 * MIB / SECTOR;
        let table = appliance_layout(sectors, guids()).unwrap();
        let enc = table.encode(sectors).unwrap();
        assert_eq!(enc.head.len() as u64, HEAD_SECTORS * SECTOR);
        assert_eq!(enc.tail.len() as u64, TAIL_SECTORS * SECTOR);
        assert_eq!(enc.tail_offset + enc.tail.len() as u64, sectors * SECTOR);
        assert_eq!(&enc.head[510..512], &[0x55, 0xAA]);
        assert_eq!(enc.head[450], 0xEE);
        let (read, header) = read_primary(&enc.head).unwrap();
        assert_eq!(read, table);
        assert_eq!(header.backup_lba, sectors - 1);
        let (n, data) = read.find(DATA_NAME, DATA_TYPE).unwrap();
        assert_eq!(n, 4);
        assert_eq!(data.first_lba * SECTOR, 193 * MIB);
        assert_eq!((data.last_lba + 1) * SECTOR, 511 * MIB);
        assert_eq!(read.partitions[0].first_lba * SECTOR, MIB);
        assert_eq!(read.partitions[0].size(), ESP_SIZE);
        // The backup header names the primary and its own entries.
        let backup = &enc.tail[enc.tail.len() - SECTOR as usize..];
        assert_eq!(&backup[..8], SIGNATURE);
        assert_eq!(le64(backup, 32), Some(1));
        assert_eq!(le64(backup, 72), Some(sectors - 1 - ENTRY_SECTORS));
    }

    #[test]
    fn a_damaged_table_is_refused() {
        let sectors = 300 * MIB / SECTOR;
        let enc = appliance_layout(sectors, guids())
            .unwrap()
            .encode(sectors)
            .unwrap();
        let mut bad = enc.head.clone();
        bad[2 * SECTOR as usize + 60] ^= 1;
        assert_eq!(
            read_primary(&bad),
            Err(GptError::Corrupt("entry array checksum"))
        );
        let mut bad = enc.head.clone();
        bad[SECTOR as usize + 40] ^= 1;
        assert_eq!(
            read_primary(&bad),
            Err(GptError::Corrupt("header checksum"))
        );
        assert_eq!(read_primary(&[0; 4096]), Err(GptError::NoTable));
        assert_eq!(read_primary(&[]), Err(GptError::NoTable));
    }

    #[test]
    fn too_small_a_disk_or_overlaps_are_refused() {
        assert!(matches!(
            appliance_layout(194 * MIB / SECTOR, guids()),
            Err(GptError::Layout(_))
        ));
        let sectors = 300 * MIB / SECTOR;
        let mut t = appliance_layout(sectors, guids()).unwrap();
        t.partitions[1].first_lba -= 1;
        assert!(matches!(t.encode(sectors), Err(GptError::Layout(_))));
    }

    #[test]
    fn the_data_partition_grows_to_a_larger_disk_once() {
        let small = 300 * MIB / SECTOR;
        let table = appliance_layout(small, guids()).unwrap();
        let enc = table.encode(small).unwrap();
        let (read, header) = read_primary(&enc.head).unwrap();
        assert_eq!(grown(&read, &header, small, DATA_NAME, DATA_TYPE), None);
        let big = 2048 * MIB / SECTOR;
        let new = grown(&read, &header, big, DATA_NAME, DATA_TYPE).unwrap();
        let data = &new.partitions[3];
        assert_eq!((data.last_lba + 1) * SECTOR, 2047 * MIB);
        assert_eq!(new.partitions[..3], read.partitions[..3]);
        let enc = new.encode(big).unwrap();
        let (again, header) = read_primary(&enc.head).unwrap();
        assert_eq!(header.backup_lba, big - 1);
        assert_eq!(grown(&again, &header, big, DATA_NAME, DATA_TYPE), None);
        // Not when the data partition is not the last one, or not ours.
        let mut other = read.clone();
        other.partitions[3].type_guid = FIRMWARE_TYPE;
        assert_eq!(
            grown(&other, &header_of(small), big, DATA_NAME, DATA_TYPE),
            None
        );
        let mut swapped = read.clone();
        swapped.partitions[2].first_lba = read.partitions[3].last_lba + 1;
        swapped.partitions[2].last_lba = read.partitions[3].last_lba + 10;
        assert_eq!(
            grown(&swapped, &header_of(small), big, DATA_NAME, DATA_TYPE),
            None
        );
    }

    fn header_of(sectors: u64) -> Header {
        Header {
            backup_lba: sectors - 1,
            first_usable: HEAD_SECTORS,
            last_usable: sectors - TAIL_SECTORS - 1,
        }
    }
}
