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
