//! Reading back a device after an RMA erase, from its image file on the host.

use appliance_proto::state::EraseReport;

/// The erase record init keeps in the device's reserved tail: magic, length, CRC-32, text.
const RECORD_MAGIC: &[u8; 16] = b"APPLIANCE-ERASE\x01";
const RESERVE: usize = 1 << 20;
const RECORD_AT: usize = 4096;

/// Checks that the erased device's bytes (a whole disk, or a partition's range of a disk
/// image) are nothing but zeros and the erase record; returns the record.
pub fn scan_erased(device: &mut [u8]) -> EraseReport {
    let at = device.len() - RESERVE + RECORD_AT;
    assert_eq!(
        &device[at..at + 16],
        RECORD_MAGIC,
        "no erase record in the tail"
    );
    let len = u32::from_le_bytes(device[at + 16..at + 20].try_into().unwrap()) as usize;
    let text = String::from_utf8(device[at + 24..at + 24 + len].to_vec()).expect("record text");
    let record = EraseReport::parse(&text).expect("a parsable record");
    device[at..at + 24 + len].fill(0);
    let nonzero = device.iter().position(|&b| b != 0);
    assert_eq!(
        nonzero, None,
        "the erased device has data at byte {nonzero:?} besides the record"
    );
    record
}
