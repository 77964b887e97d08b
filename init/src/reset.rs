//! Factory reset, carried out by init with nothing mounted.
//!
//! A request is recorded first, as a marker at the start of the last mebibyte of the data
//! device ([`RESERVE`]), which the data file system never covers: init formats it that
//! much short of the end. Then the appliance reboots, and early in the next boot, before
//! anything mounts `/data`, init finds the marker and does the work:
//!
//! - `config`: a new file system (mke2fs), then the marker is cleared; the boot goes on
//!   with factory defaults.
//! - `rma`: zeros over the whole file-system area (BLKZEROOUT: the kernel offloads it to
//!   the device where the device guarantees zeros, else writes zero pages), read back and
//!   checked, then the reserved tail (marker included) zeroed and checked, so no byte and
//!   no file-system signature is left. The report goes to the console and to
//!   `/run/appliance/erase-report`; `/data` stays a tmpfs, and the appliance powers off.
//!
//! The marker goes only when the work is done, so a power cut at any point leaves it in
//! place and the next boot starts the wipe again from the beginning. [`Disk`] is the seam
//! in front of the block device; the unit tests cut the power of a fake disk after every
//! possible operation and check that the next boot still finishes the job.

use std::io;
use std::time::{Duration, Instant};

use appliance_proto::control::ResetLevel;
use appliance_proto::state::EraseReport;

/// The tail of the data device that the file system leaves free for the marker.
pub const RESERVE: u64 = 1 << 20;
const MAGIC: &[u8; 16] = b"APPLIANCE-RESET\x01";
const MARKER_LEN: usize = 512;
/// Zeroing and verification go in pieces of this size (progress is logged between them).
const CHUNK: u64 = 32 << 20;
const READ_CHUNK: usize = 1 << 20;

/// What a reset needs from a block device.
pub trait Disk {
    fn name(&self) -> String;
    fn size(&self) -> u64;
    /// Writes zeros over `len` bytes at `offset`.
    fn zero(&mut self, offset: u64, len: u64) -> io::Result<()>;
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every write so far durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Forgets cached pages, so that reads come from the device.
    fn drop_cache(&mut self) -> io::Result<()>;
    /// Makes the data file system on the first `fs_bytes` bytes.
    fn format(&mut self, fs_bytes: u64) -> Result<(), String>;
    /// How [`Disk::zero`] writes its zeros, for the report.
    fn zero_method(&self) -> String;
}

/// Bytes the data file system may use on a device of `size` bytes (whole 4 KiB blocks
/// short of the reserved tail).
pub fn fs_bytes(size: u64) -> u64 {
    size.saturating_sub(RESERVE) / 4096 * 4096
}

fn marker_offset(size: u64) -> u64 {
    size.saturating_sub(RESERVE)
}

/// CRC-32 (IEEE), bitwise: the marker is 32 bytes, speed does not matter.
fn crc32(data: &[u8]) -> u32 {
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

pub fn encode_marker(level: ResetLevel, unix: u64) -> [u8; MARKER_LEN] {
    let mut head = Vec::with_capacity(32);
    head.extend_from_slice(MAGIC);
    head.push(match level {
        ResetLevel::Config => 1,
        ResetLevel::Rma => 2,
    });
    head.resize(24, 0);
    head.extend_from_slice(&unix.to_le_bytes());
    let crc = crc32(&head);
    let mut m = [0u8; MARKER_LEN];
    for (dst, src) in m
        .iter_mut()
        .zip(head.iter().chain(crc.to_le_bytes().iter()))
    {
        *dst = *src;
    }
    m
}

/// A valid marker's level and request time; anything else (zeros, old data) is `None`.
pub fn decode_marker(buf: &[u8]) -> Option<(ResetLevel, u64)> {
    let head = buf.get(..32)?;
    let crc = buf.get(32..36)?;
    if head.get(..16)? != MAGIC || crc32(head).to_le_bytes() != crc {
        return None;
    }
    let level = match head.get(16)? {
        1 => ResetLevel::Config,
        2 => ResetLevel::Rma,
        _ => return None,
    };
    let unix = u64::from_le_bytes(head.get(24..32)?.try_into().ok()?);
    Some((level, unix))
}

/// The ext file system's size in bytes, from its superblock (at offset 1024).
pub fn ext_fs_bytes(sb: &[u8]) -> Option<u64> {
    let le32 = |at: usize| {
        sb.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    if sb.get(56..58)? != [0x53, 0xEF] {
        return None;
    }
    let lo = u64::from(le32(4)?);
    let log = le32(24)?;
    let incompat = le32(96)?;
    let hi = if incompat & 0x80 != 0 {
        u64::from(le32(0x150).unwrap_or(0))
    } else {
        0
    };
    let block = 1024u64.checked_shl(log.min(6))?;
    Some(((hi << 32) | lo) * block)
}

#[derive(Debug, PartialEq, Eq)]
pub enum ArmError {
    TooSmall,
    NoRoom { fs_bytes: u64, limit: u64 },
    Io(String),
}

impl std::fmt::Display for ArmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArmError::TooSmall => write!(f, "the data disk is too small to hold a reset marker"),
            ArmError::NoRoom { fs_bytes, limit } => write!(
                f,
                "the data file system ({fs_bytes} bytes) covers the reserved tail of the disk \
                 (it must end by byte {limit}); it was not made by this firmware"
            ),
            ArmError::Io(e) => write!(f, "cannot write the reset marker: {e}"),
        }
    }
}

/// Records a reset request on the (mounted) data disk; durable when this returns.
pub fn arm(disk: &mut impl Disk, level: ResetLevel, unix: u64) -> Result<(), ArmError> {
    let size = disk.size();
    if size < 4 * RESERVE {
        return Err(ArmError::TooSmall);
    }
    let mut sb = [0u8; 1024];
    disk.read(1024, &mut sb)
        .map_err(|e| ArmError::Io(e.to_string()))?;
    if let Some(fs) = ext_fs_bytes(&sb) {
        if fs > fs_bytes(size) {
            return Err(ArmError::NoRoom {
                fs_bytes: fs,
                limit: fs_bytes(size),
            });
        }
    }
    disk.write(marker_offset(size), &encode_marker(level, unix))
        .map_err(|e| ArmError::Io(e.to_string()))?;
    disk.sync().map_err(|e| ArmError::Io(e.to_string()))
}

/// The reset waiting on this disk, if any.
pub fn pending(disk: &mut impl Disk) -> Option<(ResetLevel, u64)> {
    let size = disk.size();
    if size < 4 * RESERVE {
        return None;
    }
    let mut buf = [0u8; MARKER_LEN];
    disk.read(marker_offset(size), &mut buf).ok()?;
    decode_marker(&buf)
}

fn clear_marker(disk: &mut impl Disk) -> io::Result<()> {
    disk.write(marker_offset(disk.size()), &[0u8; MARKER_LEN])?;
    disk.sync()
}

/// The `config` reset: a new file system, then the marker goes.
pub fn run_config(disk: &mut impl Disk) -> Result<(), String> {
    let size = disk.size();
    disk.format(fs_bytes(size))?;
    clear_marker(disk).map_err(|e| format!("cannot clear the reset marker: {e}"))
}

fn zero_range(disk: &mut impl Disk, start: u64, end: u64, label: &str) -> io::Result<()> {
    let mut at = start;
    let mut next_note = start;
    while at < end {
        let len = CHUNK.min(end - at);
        disk.zero(at, len)?;
        at += len;
        if at >= next_note || at == end {
            info!(
                "erase {label}: {} of {} MiB zeroed",
                (at - start) >> 20,
                (end - start) >> 20
            );
            next_note = at + (end - start) / 4;
        }
    }
    disk.sync()
}

/// Reads `[start, end)` back; `Ok(None)` if all zero, else the first non-zero offset.
fn first_nonzero(disk: &mut impl Disk, start: u64, end: u64) -> io::Result<Option<u64>> {
    disk.drop_cache()?;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut at = start;
    while at < end {
        let n = (end - at).min(READ_CHUNK as u64) as usize;
        let part = buf.get_mut(..n).unwrap_or_default();
        disk.read(at, part)?;
        if let Some(i) = part.iter().position(|&b| b != 0) {
            return Ok(Some(at + i as u64));
        }
        at += n as u64;
    }
    Ok(None)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// The `rma` erase. An I/O error (a power cut, a failing disk) ends it early with the
/// marker still in place; the report then says what went wrong.
pub fn run_rma(disk: &mut impl Disk) -> EraseReport {
    let size = disk.size();
    let payload_end = marker_offset(size);
    let started_unix = unix_now();
    let t0 = Instant::now();
    let mut report = EraseReport {
        device: disk.name(),
        method: disk.zero_method(),
        bytes: size,
        started_unix,
        finished_unix: started_unix,
        erase_ms: 0,
        verify_ms: 0,
        verified: false,
        detail: String::new(),
    };
    let finish = |mut r: EraseReport, detail: String| {
        r.finished_unix = unix_now();
        r.detail = detail;
        r
    };
    // 1. Everything before the marker, then read it all back.
    if let Err(e) = zero_range(disk, 0, payload_end, "data area") {
        return finish(report, format!("zeroing failed: {e}"));
    }
    report.erase_ms = ms(t0.elapsed());
    let t1 = Instant::now();
    match first_nonzero(disk, 0, payload_end) {
        Ok(None) => {}
        Ok(Some(at)) => return finish(report, format!("read-back found data at byte {at}")),
        Err(e) => return finish(report, format!("read-back failed: {e}")),
    }
    report.verify_ms = ms(t1.elapsed());
    // 2. The tail with the marker: once it is zero the request is done.
    let t2 = Instant::now();
    if let Err(e) = zero_range(disk, payload_end, size, "reserved tail") {
        return finish(report, format!("zeroing the tail failed: {e}"));
    }
    report.erase_ms += ms(t2.elapsed());
    let t3 = Instant::now();
    match first_nonzero(disk, payload_end, size) {
        Ok(None) => {}
        Ok(Some(at)) => return finish(report, format!("read-back found data at byte {at}")),
        Err(e) => return finish(report, format!("read-back failed: {e}")),
    }
    report.verify_ms += ms(t3.elapsed());
    report.verified = true;
    let detail = format!("all {size} bytes read back as zero; no file system left");
    finish(report, detail)
}

/// The data device itself.
pub struct BlockDisk {
    path: String,
    file: std::fs::File,
    size: u64,
    offload: bool,
}

impl BlockDisk {
    pub fn open(path: &str) -> io::Result<BlockDisk> {
        use std::io::Seek;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let size = file.seek(io::SeekFrom::End(0))?;
        let name = path.rsplit('/').next().unwrap_or("");
        let sys = std::path::Path::new("/sys/class/block").join(name);
        let queue = [sys.join("queue"), sys.join("../queue")];
        let offload = queue.iter().any(|q| {
            std::fs::read_to_string(q.join("write_zeroes_max_bytes"))
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        });
        Ok(BlockDisk {
            path: path.to_string(),
            file,
            size,
            offload,
        })
    }

    fn write_zeros(&mut self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let zeros = vec![0u8; READ_CHUNK];
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(READ_CHUNK as u64) as usize;
            self.file
                .write_all_at(zeros.get(..n).unwrap_or_default(), at)?;
            at += n as u64;
        }
        Ok(())
    }
}

impl Disk for BlockDisk {
    fn name(&self) -> String {
        self.path.clone()
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
        match crate::ffi::blkzeroout(&self.file, offset, len) {
            Ok(()) => Ok(()),
            // Not a block device (a disk image in a test) or no support: plain writes.
            Err(
                nix::errno::Errno::ENOTTY
                | nix::errno::Errno::EOPNOTSUPP
                | nix::errno::Errno::EINVAL,
            ) => {
                self.offload = false;
                self.write_zeros(offset, len)
            }
            Err(e) => Err(e.into()),
        }
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, data, offset)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
    fn drop_cache(&mut self) -> io::Result<()> {
        use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
        posix_fadvise(&self.file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
            .map_err(io::Error::from)
    }
    fn format(&mut self, fs_bytes: u64) -> Result<(), String> {
        crate::datadisk::tools::format_bytes(&self.path, fs_bytes)
    }
    fn zero_method(&self) -> String {
        if self.offload {
            "BLKZEROOUT, offloaded to the device's write-zeroes command".into()
        } else {
            "BLKZEROOUT, zero pages written by the kernel".into()
        }
    }
}

/// A factory reset waiting on one of the disks `probes` found, with its device.
pub fn find_pending(probes: &[crate::datadisk::scan::Probe]) -> Option<(String, ResetLevel, u64)> {
    for p in probes {
        if p.device.size < 4 * RESERVE || p.device.read_only {
            continue;
        }
        let Ok(mut disk) = BlockDisk::open(&p.device.dev) else {
            continue;
        };
        if let Some((level, unix)) = pending(&mut disk) {
            return Some((p.device.dev.clone(), level, unix));
        }
    }
    None
}

/// The RMA report as console lines.
pub fn describe(r: &EraseReport) -> Vec<String> {
    let secs = (r.erase_ms + r.verify_ms) as f64 / 1000.0;
    let rate = if r.erase_ms > 0 {
        (r.bytes as f64 / 1048576.0) / (r.erase_ms as f64 / 1000.0)
    } else {
        0.0
    };
    vec![
        format!(
            "SECURE ERASE REPORT: device {}, {} MiB",
            r.device,
            r.bytes >> 20
        ),
        format!(
            "  method: {} (zeroing at {rate:.0} MiB/s), then a full read-back",
            r.method
        ),
        format!(
            "  started unix {} finished unix {} ({secs:.1} s)",
            r.started_unix, r.finished_unix
        ),
        format!(
            "  verification: {} ({})",
            if r.verified { "PASSED" } else { "FAILED" },
            r.detail
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory disk whose power can be cut after a number of operations.
    struct Fake {
        bytes: Vec<u8>,
        ops_left: Option<usize>,
        formats: usize,
    }

    impl Fake {
        fn new(size: usize) -> Fake {
            Fake {
                bytes: vec![0xAB; size],
                ops_left: None,
                formats: 0,
            }
        }
        fn op(&mut self) -> io::Result<()> {
            match &mut self.ops_left {
                Some(0) => Err(io::Error::other("power cut")),
                Some(n) => {
                    *n -= 1;
                    Ok(())
                }
                None => Ok(()),
            }
        }
        fn range(&mut self, offset: u64, len: usize) -> io::Result<&mut [u8]> {
            let start = offset as usize;
            self.bytes
                .get_mut(start..start + len)
                .ok_or_else(|| io::Error::other("out of range"))
        }
    }

    impl Disk for Fake {
        fn name(&self) -> String {
            "/dev/fake".into()
        }
        fn size(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
            self.op()?;
            self.range(offset, len as usize)?.fill(0);
            Ok(())
        }
        fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            let len = buf.len();
            buf.copy_from_slice(self.range(offset, len)?);
            Ok(())
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.op()?;
            self.range(offset, data.len())?.copy_from_slice(data);
            Ok(())
        }
        fn sync(&mut self) -> io::Result<()> {
            self.op()
        }
        fn drop_cache(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn format(&mut self, fs_bytes: u64) -> Result<(), String> {
            self.op().map_err(|e| e.to_string())?;
            // A new file system: its area rewritten, a superblock with its size.
            self.range(0, fs_bytes as usize)
                .map_err(|e| e.to_string())?
                .fill(0);
            let blocks = (fs_bytes / 4096) as u32;
            let sb = self.range(1024, 1024).map_err(|e| e.to_string())?;
            sb[56] = 0x53;
            sb[57] = 0xEF;
            sb[4..8].copy_from_slice(&blocks.to_le_bytes());
            sb[24..28].copy_from_slice(&2u32.to_le_bytes());
            self.formats += 1;
            Ok(())
        }
        fn zero_method(&self) -> String {
            "fake zeroing".into()
        }
    }

    const SIZE: usize = 72 << 20;

    #[test]
    fn markers_round_trip_and_noise_is_not_a_marker() {
        for level in [ResetLevel::Config, ResetLevel::Rma] {
            assert_eq!(
                decode_marker(&encode_marker(level, 1234)),
                Some((level, 1234))
            );
        }
        assert_eq!(decode_marker(&[0u8; MARKER_LEN]), None);
        let mut m = encode_marker(ResetLevel::Rma, 1);
        m[24] ^= 1;
        assert_eq!(decode_marker(&m), None, "a damaged marker is ignored");
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn the_file_system_stops_short_of_the_reserved_tail() {
        assert_eq!(fs_bytes(256 << 20), (256 << 20) - RESERVE);
        assert_eq!(fs_bytes((256 << 20) + 1000), (256 << 20) - RESERVE);
        let mut d = Fake::new(SIZE);
        d.format(fs_bytes(SIZE as u64)).unwrap();
        let mut sb = [0u8; 1024];
        d.read(1024, &mut sb).unwrap();
        assert_eq!(ext_fs_bytes(&sb), Some(fs_bytes(SIZE as u64)));
    }

    #[test]
    fn arming_refuses_a_file_system_that_covers_the_tail() {
        let mut d = Fake::new(SIZE);
        d.format(SIZE as u64).unwrap();
        assert!(matches!(
            arm(&mut d, ResetLevel::Config, 1),
            Err(ArmError::NoRoom { .. })
        ));
        assert_eq!(pending(&mut d), None);
        let mut small = Fake::new(2 << 20);
        assert_eq!(
            arm(&mut small, ResetLevel::Config, 1),
            Err(ArmError::TooSmall)
        );
    }

    #[test]
    fn a_config_reset_formats_and_clears_the_marker_even_after_power_cuts() {
        for cut_after in 0..4 {
            let mut d = Fake::new(SIZE);
            d.format(fs_bytes(SIZE as u64)).unwrap();
            d.range(4096, 6).unwrap().copy_from_slice(b"CANARY");
            arm(&mut d, ResetLevel::Config, 7).unwrap();
            assert_eq!(pending(&mut d), Some((ResetLevel::Config, 7)));
            d.ops_left = Some(cut_after);
            let first = run_config(&mut d);
            d.ops_left = None;
            // A cut leaves the marker (the next boot starts again) unless the work was done.
            if first.is_err() && pending(&mut d).is_some() {
                run_config(&mut d).unwrap();
            }
            assert_eq!(pending(&mut d), None, "cut after {cut_after}");
            assert!(!d.bytes.windows(6).any(|w| w == b"CANARY"));
        }
    }

    #[test]
    fn an_rma_erase_leaves_only_zeros_and_survives_a_power_cut_at_any_step() {
        let mut completed_first_time = 0;
        for cut_after in 0..12 {
            let mut d = Fake::new(SIZE);
            d.format(fs_bytes(SIZE as u64)).unwrap();
            arm(&mut d, ResetLevel::Rma, 9).unwrap();
            d.ops_left = Some(cut_after);
            let first = run_rma(&mut d);
            d.ops_left = None;
            if first.verified {
                completed_first_time += 1;
            } else if pending(&mut d).is_some() {
                // The marker stays until the very end, so the next boot starts again.
                let second = run_rma(&mut d);
                assert!(second.verified, "{}", second.detail);
            }
            assert!(
                d.bytes.iter().all(|&b| b == 0),
                "cut after {cut_after}: bytes left"
            );
            assert_eq!(pending(&mut d), None);
        }
        assert!(
            completed_first_time > 0,
            "the sweep reached a run with no cut"
        );
    }

    #[test]
    fn the_report_says_what_was_done() {
        let mut d = Fake::new(SIZE);
        arm(&mut d, ResetLevel::Rma, 9).unwrap();
        let r = run_rma(&mut d);
        assert!(r.verified);
        assert_eq!(r.bytes, SIZE as u64);
        assert_eq!(r.method, "fake zeroing");
        let lines = describe(&r).join("\n");
        assert!(
            lines.contains("PASSED") && lines.contains("/dev/fake"),
            "{lines}"
        );
    }
}
