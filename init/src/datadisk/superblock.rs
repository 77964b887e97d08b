//! What is on a block device, from its first and last mebibyte: an ext2/3/4 file system
//! (and its label), nothing at all (blank), or something else.
//!
//! The ext superblock starts at byte 1024: the magic `0xEF53` (little-endian) is at +56
//! and the 16-byte volume label at +120, NUL-padded.

/// Where the ext superblock starts on the device.
pub const SUPERBLOCK_OFFSET: usize = 1024;
const MAGIC_OFFSET: usize = 56;
const LABEL_OFFSET: usize = 120;
const LABEL_LEN: usize = 16;
const EXT_MAGIC: u16 = 0xEF53;

/// How much of each end of a device is read to decide whether it is blank.
pub const BLANK_REGION: usize = 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// An ext2/3/4 file system with this label (empty if none).
    Ext { label: String },
    /// The first and the last [`BLANK_REGION`] bytes are all zero.
    Blank,
    /// Something else: a partition table, another file system, old data.
    Other,
    /// Could not be read (or has size 0, like an empty CD drive).
    Unreadable(String),
}

/// Parses an ext superblock (`sb` starts at device offset [`SUPERBLOCK_OFFSET`]).
pub fn ext_label(sb: &[u8]) -> Option<String> {
    let magic = sb.get(MAGIC_OFFSET..MAGIC_OFFSET + 2)?;
    if u16::from_le_bytes([*magic.first()?, *magic.get(1)?]) != EXT_MAGIC {
        return None;
    }
    let raw = sb.get(LABEL_OFFSET..LABEL_OFFSET + LABEL_LEN)?;
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    Some(String::from_utf8_lossy(raw.get(..end)?).into_owned())
}

const STATE_OFFSET: usize = 58;
const MNT_COUNT_OFFSET: usize = 52;
const MAX_MNT_COUNT_OFFSET: usize = 54;
const CHECKINTERVAL_OFFSET: usize = 68;
const INCOMPAT_OFFSET: usize = 96;
const STATE_VALID: u16 = 0x1;
const STATE_ERROR: u16 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;

fn le16(sb: &[u8], at: usize) -> Option<u16> {
    let b = sb.get(at..at + 2)?;
    Some(u16::from_le_bytes([*b.first()?, *b.get(1)?]))
}

fn le32(sb: &[u8], at: usize) -> Option<u32> {
    let b = sb.get(at..at + 4)?;
    Some(u32::from_le_bytes([
        *b.first()?,
        *b.get(1)?,
        *b.get(2)?,
        *b.get(3)?,
    ]))
}

/// Why an ext file system needs `e2fsck` before it is mounted, or `None` when its
/// superblock says it was unmounted cleanly and nothing asks for a check: valid state, no
/// error flag, no journal waiting for recovery, no mount-count or interval check due.
/// (Running `e2fsck -p` costs a process start under emulation; it would answer "clean".)
pub fn check_needed(sb: &[u8]) -> Option<&'static str> {
    ext_label(sb)?;
    let (Some(state), Some(incompat)) = (le16(sb, STATE_OFFSET), le32(sb, INCOMPAT_OFFSET)) else {
        return Some("superblock too short");
    };
    if state & STATE_VALID == 0 {
        return Some("not cleanly unmounted");
    }
    if state & STATE_ERROR != 0 {
        return Some("errors recorded");
    }
    if incompat & INCOMPAT_RECOVER != 0 {
        return Some("journal needs recovery");
    }
    let mounts = le16(sb, MNT_COUNT_OFFSET).unwrap_or(0);
    let max = le16(sb, MAX_MNT_COUNT_OFFSET).unwrap_or(0) as i16;
    if max > 0 && i32::from(mounts) >= i32::from(max) {
        return Some("maximal mount count reached");
    }
    if le32(sb, CHECKINTERVAL_OFFSET).unwrap_or(0) != 0 {
        return Some("periodic checks are configured");
    }
    None
}

/// Classifies a device from its first bytes (`head`, from offset 0, up to
/// [`BLANK_REGION`]) and its last bytes (`tail`, may be empty when `head` covered it all).
pub fn classify(head: &[u8], tail: &[u8]) -> Content {
    if let Some(label) = head.get(SUPERBLOCK_OFFSET..).and_then(ext_label) {
        return Content::Ext { label };
    }
    if head.is_empty() {
        return Content::Unreadable("device is empty".into());
    }
    if head.iter().chain(tail).all(|&b| b == 0) {
        Content::Blank
    } else {
        Content::Other
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A fake device start: 2 KiB with an ext superblock labelled `label`.
    pub fn ext_image(label: &str) -> Vec<u8> {
        let mut img = vec![0u8; 4096];
        img[SUPERBLOCK_OFFSET + MAGIC_OFFSET] = 0x53;
        img[SUPERBLOCK_OFFSET + MAGIC_OFFSET + 1] = 0xEF;
        let start = SUPERBLOCK_OFFSET + LABEL_OFFSET;
        img[start..start + label.len()].copy_from_slice(label.as_bytes());
        img
    }

    fn set16(img: &mut [u8], at: usize, v: u16) {
        img[SUPERBLOCK_OFFSET + at..SUPERBLOCK_OFFSET + at + 2].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn only_a_cleanly_unmounted_file_system_skips_the_check() {
        let mut img = ext_image("APPLIANCE_DATA");
        let sb = |img: &Vec<u8>| img[SUPERBLOCK_OFFSET..].to_vec();
        assert_eq!(check_needed(&sb(&img)), Some("not cleanly unmounted"));
        set16(&mut img, STATE_OFFSET, STATE_VALID);
        assert_eq!(check_needed(&sb(&img)), None);
        set16(&mut img, STATE_OFFSET, STATE_VALID | STATE_ERROR);
        assert_eq!(check_needed(&sb(&img)), Some("errors recorded"));
        set16(&mut img, STATE_OFFSET, STATE_VALID);
        img[SUPERBLOCK_OFFSET + INCOMPAT_OFFSET] = INCOMPAT_RECOVER as u8;
        assert_eq!(check_needed(&sb(&img)), Some("journal needs recovery"));
        img[SUPERBLOCK_OFFSET + INCOMPAT_OFFSET] = 0;
        set16(&mut img, MNT_COUNT_OFFSET, 20);
        set16(&mut img, MAX_MNT_COUNT_OFFSET, 20);
        assert_eq!(check_needed(&sb(&img)), Some("maximal mount count reached"));
        set16(&mut img, MAX_MNT_COUNT_OFFSET, 0xffff); // -1: no limit
        assert_eq!(check_needed(&sb(&img)), None);
        assert_eq!(
            check_needed(&[0u8; 1024]),
            None,
            "not ext at all: nothing to say"
        );
    }

    #[test]
    fn reads_the_label_of_an_ext_superblock() {
        assert_eq!(
            classify(&ext_image("APPLIANCE_DATA"), &[]),
            Content::Ext {
                label: "APPLIANCE_DATA".into()
            }
        );
        assert_eq!(
            classify(&ext_image(""), &[]),
            Content::Ext {
                label: String::new()
            }
        );
        // A full 16-byte label has no NUL.
        assert_eq!(
            ext_label(&ext_image("0123456789abcdef")[SUPERBLOCK_OFFSET..]),
            Some("0123456789abcdef".into())
        );
    }

    #[test]
    fn wrong_magic_is_not_ext() {
        let mut img = ext_image("APPLIANCE_DATA");
        img[SUPERBLOCK_OFFSET + MAGIC_OFFSET] = 0x54;
        assert_eq!(classify(&img, &[]), Content::Other);
        // Big-endian magic is not ext either.
        let mut img = ext_image("X");
        img[SUPERBLOCK_OFFSET + MAGIC_OFFSET] = 0xEF;
        img[SUPERBLOCK_OFFSET + MAGIC_OFFSET + 1] = 0x53;
        assert_eq!(classify(&img, &[]), Content::Other);
    }

    #[test]
    fn blank_means_zero_at_both_ends() {
        let zeros = vec![0u8; BLANK_REGION];
        assert_eq!(classify(&zeros, &zeros), Content::Blank);
        let mut tail = zeros.clone();
        *tail.last_mut().unwrap() = 1; // e.g. a backup GPT header or an md 0.90 superblock
        assert_eq!(classify(&zeros, &tail), Content::Other);
        let mut head = zeros.clone();
        head[510] = 0x55; // an MBR signature
        assert_eq!(classify(&head, &zeros), Content::Other);
    }

    #[test]
    fn short_and_empty_devices() {
        assert_eq!(classify(&[0u8; 100], &[]), Content::Blank);
        assert!(matches!(classify(&[], &[]), Content::Unreadable(_)));
        assert_eq!(classify(&[0u8; 1030], &[]), Content::Blank);
    }
}
