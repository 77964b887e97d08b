//! Factory reset, carried out by init with nothing mounted.
//!
//! A request is recorded first, as a marker at the start of the last mebibyte of the data
//! device ([`RESERVE`]), which the data file system never covers: init formats it that
//! much short of the end. The marker names the device it was written for (its serial or
//! partition GUID, see [`crate::datadisk::scan::identity`], and its size), so a copy of
//! the bytes seen through another device (a partition that ends where its disk ends, a
//! cloned stick) does not match. Init arms the marker and starts the reboot in one step
//! (the `reset` control request). Early in the next boot, before anything mounts `/data`,
//! init finds the marker on the device it chose as the data disk ([`choose`]) and does
//! the work:
//!
//! - `config`: the old file system's blocks are discarded (BLKDISCARD, where the device
//!   has it), a new file system is made (mke2fs), then the marker is cleared; the boot goes
//!   on with factory defaults.
//! - `rma`: the device's own secure discard over the file-system area where it has one
//!   (BLKSECDISCARD), then zeros over all of it (BLKZEROOUT: the device's write-zeroes
//!   command where it has one, else zero pages written by the kernel; zeros written from
//!   user space where the ioctl is refused), read back past the page cache (`O_DIRECT`)
//!   and checked, then the reserved tail zeroed and checked. The report names what ran
//!   as observed, the byte range and the NIST SP 800-88 level met (`purge` when the
//!   secure discard completed, `clear` for zeros), goes to the console and to
//!   `/run/appliance/erase-report`, and is kept on the disk as a small checksummed record
//!   in the reserved tail ([`record_offset`]), shown again at the next boot. `/data` stays
//!   a tmpfs, and the appliance powers off.
//!
//! The marker goes only when the work is done, so a power cut at any point leaves it in
//! place and the next boot starts the wipe again from the beginning. [`Disk`] is the seam
//! in front of the block device; the unit tests cut the power of a fake disk after every
//! possible operation and check that the next boot still finishes the job.
//!
//! Limits: no NVMe Format/Sanitize or ATA Secure Erase passthrough (neither reaches the
//! emulated disks of the test VMs); the secure discard is a range command, so it only
//! ever covers the data device's own range.

use std::io;
use std::time::{Duration, Instant};

use appliance_proto::control::ResetLevel;
use appliance_proto::gpt::crc32;
use appliance_proto::state::EraseReport;

/// The tail of the data device that the file system leaves free for the marker.
pub const RESERVE: u64 = 1 << 20;
const MAGIC: &[u8; 16] = b"APPLIANCE-RESET\x02";
const MARKER_LEN: usize = 512;
/// The block at the start of the tail that holds the marker; it is cleared whole, and the
/// erase works on whole blocks around it (4 KiB: aligned for any logical block size).
const MARKER_BLOCK: u64 = 4096;
/// Bytes of the marker covered by its checksum (the CRC follows them).
const MARKER_BODY: usize = 200;
/// Longest device identity a marker holds.
const MAX_ID: usize = 150;
/// Where the erase record sits in the reserved tail, and its largest size.
const RECORD_AT: u64 = 4096;
const RECORD_MAX: usize = 4096;
const RECORD_MAGIC: &[u8; 16] = b"APPLIANCE-ERASE\x01";
const RECORD_HEAD: usize = 24;
/// Zeroing and verification go in pieces of this size (progress is logged between them).
const CHUNK: u64 = 32 << 20;
const READ_CHUNK: usize = 1 << 20;

/// What a reset needs from a block device.
pub trait Disk {
    fn name(&self) -> String;
    fn size(&self) -> u64;
    /// What names this device beyond its contents ([`crate::datadisk::scan::identity`]).
    fn id(&self) -> String;
    /// A whole disk, not a partition.
    fn whole_disk(&self) -> bool;
    /// The device's secure discard over the range (`ErrorKind::Unsupported` if it has none).
    fn secure_discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Tells the device the range is unused (`ErrorKind::Unsupported` if it cannot).
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Writes zeros over `len` bytes at `offset`.
    fn zero(&mut self, offset: u64, len: u64) -> io::Result<()>;
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Reads from the device itself, past any cache (`O_DIRECT` where it works).
    fn read_uncached(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every write so far durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Makes the data file system on the first `fs_bytes` bytes.
    fn format(&mut self, fs_bytes: u64) -> Result<(), String>;
    /// How [`Disk::zero`] wrote its zeros, as observed, for the report.
    fn zero_method(&self) -> String;
    /// How [`Disk::read_uncached`] read, as observed, for the report.
    fn read_method(&self) -> String;
}

/// Bytes the data file system may use on a device of `size` bytes (whole 4 KiB blocks
/// short of the reserved tail).
pub fn fs_bytes(size: u64) -> u64 {
    size.saturating_sub(RESERVE) / 4096 * 4096
}

/// Where the reserved tail (and the marker at its start) begins on a device of `size`.
pub fn tail_offset(size: u64) -> u64 {
    size.saturating_sub(RESERVE)
}

/// Where the erase record sits on a device of `size` bytes.
pub fn record_offset(size: u64) -> u64 {
    tail_offset(size) + RECORD_AT
}

/// A reset request as recorded on a disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub level: ResetLevel,
    pub unix: u64,
    /// The identity and size of the device it was written for.
    pub id: String,
    pub size: u64,
}

impl Marker {
    /// Whether this marker was written for a device with this identity and size.
    pub fn binds(&self, id: &str, size: u64) -> bool {
        self.id == id && self.size == size
    }
}

/// Layout: magic (16), level (1), zeros to 24, request time (8), device size (8), identity
/// length (1) and identity (up to [`MAX_ID`]), zeros to [`MARKER_BODY`], CRC-32 of the body.
pub fn encode_marker(m: &Marker) -> [u8; MARKER_LEN] {
    let id = m.id.as_bytes();
    let id = id.get(..MAX_ID).unwrap_or(id);
    let mut body = Vec::with_capacity(MARKER_BODY);
    body.extend_from_slice(MAGIC);
    body.push(match m.level {
        ResetLevel::Config => 1,
        ResetLevel::Rma => 2,
    });
    body.resize(24, 0);
    body.extend_from_slice(&m.unix.to_le_bytes());
    body.extend_from_slice(&m.size.to_le_bytes());
    body.push(u8::try_from(id.len()).unwrap_or(0));
    body.extend_from_slice(id);
    body.resize(MARKER_BODY, 0);
    let crc = crc32(&body);
    let mut out = [0u8; MARKER_LEN];
    for (dst, src) in out
        .iter_mut()
        .zip(body.iter().chain(crc.to_le_bytes().iter()))
    {
        *dst = *src;
    }
    out
}

/// A valid marker; anything else (zeros, old data, a marker of an older format) is `None`.
pub fn decode_marker(buf: &[u8]) -> Option<Marker> {
    let body = buf.get(..MARKER_BODY)?;
    let crc = buf.get(MARKER_BODY..MARKER_BODY + 4)?;
    if body.get(..16)? != MAGIC || crc32(body).to_le_bytes() != crc {
        return None;
    }
    let level = match body.get(16)? {
        1 => ResetLevel::Config,
        2 => ResetLevel::Rma,
        _ => return None,
    };
    let le64 = |at: usize| {
        body.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let id_len = usize::from(*body.get(40)?);
    let id = std::str::from_utf8(body.get(41..41 + id_len)?).ok()?;
    Some(Marker {
        level,
        unix: le64(24)?,
        size: le64(32)?,
        id: id.to_string(),
    })
}

/// The erase report as a record for the reserved tail: magic (16), text length (4),
/// CRC-32 of the text (4), the `key=value` text.
pub fn encode_record(report: &EraseReport) -> Vec<u8> {
    let mut text = report.encode().into_bytes();
    text.truncate(RECORD_MAX - RECORD_HEAD);
    let mut out = Vec::with_capacity(RECORD_HEAD + text.len());
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&u32::try_from(text.len()).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&crc32(&text).to_le_bytes());
    out.extend_from_slice(&text);
    out
}

/// A valid record at the start of `buf`, with its length in bytes.
pub fn decode_record(buf: &[u8]) -> Option<(EraseReport, usize)> {
    if buf.get(..16)? != RECORD_MAGIC {
        return None;
    }
    let le32 = |at: usize| {
        buf.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let len = usize::try_from(le32(16)?).ok()?;
    if len > RECORD_MAX - RECORD_HEAD {
        return None;
    }
    let text = buf.get(RECORD_HEAD..RECORD_HEAD + len)?;
    if crc32(text) != le32(20)? {
        return None;
    }
    let report = EraseReport::parse(std::str::from_utf8(text).ok()?)?;
    Some((report, RECORD_HEAD + len))
}

/// Zeroes a valid erase record in `tail` (the first bytes of a reserved tail), so that a
/// blank check can look past it.
pub fn mask_erase_record(tail: &mut [u8]) {
    let at = RECORD_AT as usize;
    if let Some((_, len)) = tail.get(at..).and_then(decode_record) {
        if let Some(r) = tail.get_mut(at..at + len) {
            r.fill(0);
        }
    }
}

/// The erase record kept on this disk, if any.
pub fn read_record(disk: &mut impl Disk) -> Option<EraseReport> {
    let size = disk.size();
    if size < 4 * RESERVE {
        return None;
    }
    let mut buf = vec![0u8; RECORD_MAX];
    disk.read(record_offset(size), &mut buf).ok()?;
    decode_record(&buf).map(|(r, _)| r)
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

/// Records a reset request on the data disk, bound to it; durable when this returns.
///
/// The file system must leave the reserved tail free. When its superblock cannot be read
/// (a failing disk), an `rma` request is recorded anyway (the erase is what that disk
/// needs), a `config` request is not.
pub fn arm(disk: &mut impl Disk, level: ResetLevel, unix: u64) -> Result<(), ArmError> {
    let size = disk.size();
    if size < 4 * RESERVE {
        return Err(ArmError::TooSmall);
    }
    let mut sb = [0u8; 1024];
    match disk.read(1024, &mut sb) {
        Ok(()) => {
            if let Some(fs) = ext_fs_bytes(&sb) {
                if fs > fs_bytes(size) {
                    return Err(ArmError::NoRoom {
                        fs_bytes: fs,
                        limit: fs_bytes(size),
                    });
                }
            }
        }
        Err(e) if level == ResetLevel::Rma => {
            warn!(
                "cannot read the superblock of {} ({e}); recording the erase request anyway",
                disk.name()
            );
        }
        Err(e) => return Err(ArmError::Io(format!("cannot read the superblock: {e}"))),
    }
    let marker = Marker {
        level,
        unix,
        id: disk.id(),
        size,
    };
    disk.write(tail_offset(size), &encode_marker(&marker))
        .map_err(|e| ArmError::Io(e.to_string()))?;
    disk.sync().map_err(|e| ArmError::Io(e.to_string()))
}

/// The marker on this disk, whether or not it was written for it.
pub fn read_marker(disk: &mut impl Disk) -> Option<Marker> {
    let size = disk.size();
    if size < 4 * RESERVE {
        return None;
    }
    let mut buf = [0u8; MARKER_LEN];
    disk.read(tail_offset(size), &mut buf).ok()?;
    decode_marker(&buf)
}

/// The reset waiting on this disk, if any: a valid marker written for this very device.
pub fn pending(disk: &mut impl Disk) -> Option<(ResetLevel, u64)> {
    let (id, size) = (disk.id(), disk.size());
    read_marker(disk)
        .filter(|m| m.binds(&id, size))
        .map(|m| (m.level, m.unix))
}

fn clear_marker(disk: &mut impl Disk) -> io::Result<()> {
    disk.write(tail_offset(disk.size()), &[0u8; MARKER_BLOCK as usize])?;
    disk.sync()
}

/// Clears the reset waiting on this disk; returns its level, `None` if there was none.
pub fn cancel(disk: &mut impl Disk) -> io::Result<Option<ResetLevel>> {
    match pending(disk) {
        Some((level, _)) => clear_marker(disk).map(|()| Some(level)),
        None => Ok(None),
    }
}

fn unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
}

/// The `config` reset: the old file system's blocks discarded (where the device can), a
/// new file system, then the marker goes. `Ok` says what the discard did.
pub fn run_config(disk: &mut impl Disk) -> Result<String, String> {
    let fs = fs_bytes(disk.size());
    let discard = match disk.discard(0, fs) {
        Ok(()) => format!("the old file system's {} MiB discarded", fs >> 20),
        Err(e) if unsupported(&e) => format!("no discard ({e})"),
        Err(e) => return Err(format!("cannot discard the old file system: {e}")),
    };
    disk.format(fs)?;
    clear_marker(disk).map_err(|e| format!("cannot clear the reset marker: {e}"))?;
    Ok(discard)
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

/// Reads `[start, end)` back from the device; `Ok(None)` if all zero but for the bytes in
/// `ignore`, else the first non-zero offset.
fn first_nonzero(
    disk: &mut impl Disk,
    start: u64,
    end: u64,
    ignore: std::ops::Range<u64>,
) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut at = start;
    while at < end {
        let n = (end - at).min(READ_CHUNK as u64) as usize;
        let part = buf.get_mut(..n).unwrap_or_default();
        disk.read_uncached(at, part)?;
        let mut from = 0;
        while let Some(i) = part
            .get(from..)
            .and_then(|p| p.iter().position(|&b| b != 0))
        {
            let pos = at + (from + i) as u64;
            if !ignore.contains(&pos) {
                return Ok(Some(pos));
            }
            // Skip the rest of the ignored range within this piece.
            from = usize::try_from(ignore.end.saturating_sub(at)).unwrap_or(usize::MAX);
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

/// Zeroes `[start, end)` and reads it back; the error says which of the two failed.
fn zero_and_check(
    disk: &mut impl Disk,
    start: u64,
    end: u64,
    label: &str,
    report: &mut EraseReport,
) -> Result<(), String> {
    let t = Instant::now();
    zero_range(disk, start, end, label).map_err(|e| format!("zeroing the {label} failed: {e}"))?;
    report.erase_ms += ms(t.elapsed());
    let t = Instant::now();
    match first_nonzero(disk, start, end, 0..0) {
        Ok(None) => {}
        Ok(Some(at)) => return Err(format!("read-back found data at byte {at}")),
        Err(e) => return Err(format!("read-back of the {label} failed: {e}")),
    }
    report.verify_ms += ms(t.elapsed());
    Ok(())
}

/// The `rma` erase. An I/O error (a power cut, a failing disk) ends it early with the
/// marker still in place; the report then says what went wrong.
pub fn run_rma(disk: &mut impl Disk) -> EraseReport {
    let size = disk.size();
    let tail = tail_offset(size);
    let mut report = EraseReport {
        device: disk.name(),
        method: String::new(),
        nist_level: String::new(),
        scope: if disk.whole_disk() {
            "whole disk"
        } else {
            "partition"
        }
        .into(),
        range_start: 0,
        range_end: size,
        bytes: size,
        started_unix: unix_now(),
        finished_unix: 0,
        erase_ms: 0,
        verify_ms: 0,
        verified: false,
        detail: String::new(),
    };
    // 1. The device's own secure discard, where it has one.
    let t = Instant::now();
    let purged = match disk.secure_discard(0, tail) {
        Ok(()) => {
            report.erase_ms += ms(t.elapsed());
            "BLKSECDISCARD (the device's secure discard): completed".to_string()
        }
        Err(e) if unsupported(&e) => format!("BLKSECDISCARD: not available ({e})"),
        Err(e) => format!("BLKSECDISCARD: failed ({e})"),
    };
    let secure = purged.ends_with("completed");
    // 2. Zeros over everything before the marker, then over the tail behind it.
    let zeroed = zero_and_check(disk, 0, tail, "data area", &mut report).and_then(|()| {
        zero_and_check(
            disk,
            tail + MARKER_BLOCK,
            size,
            "reserved tail",
            &mut report,
        )
    });
    report.method = format!(
        "{purged}; {}; read back with {}",
        disk.zero_method(),
        disk.read_method()
    );
    if let Err(detail) = zeroed {
        report.finished_unix = unix_now();
        report.detail = detail;
        return report;
    }
    // 3. The record of what was done, then the marker goes: the request is complete.
    report.verified = true;
    report.nist_level = if secure { "purge" } else { "clear" }.into();
    report.finished_unix = unix_now();
    report.detail = format!(
        "all {size} bytes read back as zero (but for this record in the reserved tail); \
         no file system left"
    );
    let record = encode_record(&report);
    let at = record_offset(size);
    let kept = at..at + record.len() as u64;
    let finished = disk
        .write(at, &record)
        .and_then(|()| clear_marker(disk))
        .map_err(|e| format!("cannot record the report and clear the marker: {e}"))
        .and_then(|()| match first_nonzero(disk, tail, size, kept) {
            Ok(None) => Ok(()),
            Ok(Some(at)) => Err(format!("read-back found data at byte {at}")),
            Err(e) => Err(format!("read-back of the reserved tail failed: {e}")),
        });
    if let Err(detail) = finished {
        report.verified = false;
        report.nist_level.clear();
        report.detail = detail;
    }
    report
}

/// The data device itself.
pub struct BlockDisk {
    path: String,
    file: std::fs::File,
    /// The same device opened with `O_DIRECT`, if that worked.
    direct: Option<std::fs::File>,
    size: u64,
    id: String,
    whole_disk: bool,
    /// Whether the queue advertises a write-zeroes command.
    offload: bool,
    /// How the zeros were written so far (set by the first [`Disk::zero`]).
    zeroed_by: Option<String>,
}

impl BlockDisk {
    /// Opens a device for reading and writing.
    pub fn open(path: &str) -> io::Result<BlockDisk> {
        Self::open_with(path, true)
    }

    /// Opens a device for reading only (looking for a marker or a record).
    pub fn open_read_only(path: &str) -> io::Result<BlockDisk> {
        Self::open_with(path, false)
    }

    fn open_with(path: &str, write: bool) -> io::Result<BlockDisk> {
        use std::io::Seek;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)?;
        let size = file.seek(io::SeekFrom::End(0))?;
        let direct = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        let name = path.rsplit('/').next().unwrap_or("");
        let class = std::path::Path::new(crate::datadisk::CLASS_BLOCK);
        let sys = class.join(name);
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
            direct,
            size,
            id: crate::datadisk::scan::identity(class, name),
            whole_disk: !sys.join("partition").exists(),
            offload,
            zeroed_by: None,
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

    fn range_op(&self, op: crate::ffi::BlkRange, offset: u64, len: u64) -> io::Result<()> {
        use nix::errno::Errno;
        match crate::ffi::blk_range(&self.file, op, offset, len) {
            Ok(()) => Ok(()),
            // Not a block device (a disk image in a test), no such command, or none for
            // this range.
            Err(e @ (Errno::ENOTTY | Errno::EOPNOTSUPP | Errno::EINVAL)) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the ioctl answered {e:?}"),
            )),
            Err(e) => Err(e.into()),
        }
    }
}

/// Reads `buf.len()` bytes at `offset` with `O_DIRECT`, through a bounce buffer aligned to
/// 4 KiB (offsets and lengths here are multiples of the logical block size).
fn read_direct(file: &std::fs::File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    const ALIGN: usize = 4096;
    let mut bounce = vec![0u8; buf.len() + ALIGN];
    let skip = bounce.as_ptr().align_offset(ALIGN);
    let aligned = bounce
        .get_mut(skip..skip + buf.len())
        .ok_or_else(|| io::Error::other("cannot align the read buffer"))?;
    std::os::unix::fs::FileExt::read_exact_at(file, aligned, offset)?;
    buf.copy_from_slice(aligned);
    Ok(())
}

impl Disk for BlockDisk {
    fn name(&self) -> String {
        self.path.clone()
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn id(&self) -> String {
        self.id.clone()
    }
    fn whole_disk(&self) -> bool {
        self.whole_disk
    }
    fn secure_discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.range_op(crate::ffi::BlkRange::SecureDiscard, offset, len)
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.range_op(crate::ffi::BlkRange::Discard, offset, len)
    }
    fn zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
        match self.range_op(crate::ffi::BlkRange::ZeroOut, offset, len) {
            Ok(()) => {
                if self.zeroed_by.is_none() {
                    self.zeroed_by = Some(if self.offload {
                        "BLKZEROOUT: offloaded to the device's write-zeroes command".into()
                    } else {
                        "BLKZEROOUT: zero pages written by the kernel".into()
                    });
                }
                Ok(())
            }
            Err(e) if unsupported(&e) => {
                self.zeroed_by = Some(format!("zeros written from user space (BLKZEROOUT: {e})"));
                self.write_zeros(offset, len)
            }
            Err(e) => Err(e),
        }
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }
    fn read_uncached(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if let Some(direct) = &self.direct {
            match read_direct(direct, offset, buf) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    warn!("O_DIRECT read refused ({e}); reading after dropping the page cache");
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
        posix_fadvise(&self.file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
            .map_err(io::Error::from)?;
        self.read(offset, buf)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, data, offset)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
    fn format(&mut self, fs_bytes: u64) -> Result<(), String> {
        crate::datadisk::tools::format_bytes(&self.path, fs_bytes)
    }
    fn zero_method(&self) -> String {
        self.zeroed_by
            .clone()
            .unwrap_or_else(|| "nothing zeroed".into())
    }
    fn read_method(&self) -> String {
        if self.direct.is_some() {
            "O_DIRECT reads".into()
        } else {
            "reads after dropping the page cache (O_DIRECT not available)".into()
        }
    }
}

/// A disk that may hold a reset marker, as found at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub dev: String,
    pub id: String,
    pub size: u64,
    pub removable: bool,
    pub marker: Option<Marker>,
}

/// The device whose reset marker is honoured: only one written for that very device
/// (identity and size), and only on the data disk init chose (`data_disk`, the device
/// with the data label, even when its file system is damaged). Without one (the
/// superblock itself unreadable), a marker bound to a non-empty identity on a fixed
/// disk. Removable media other than the chosen data disk are never wiped.
pub fn choose<'a>(candidates: &'a [Candidate], data_disk: Option<&str>) -> Option<&'a Candidate> {
    let bound = |c: &&Candidate| c.marker.as_ref().is_some_and(|m| m.binds(&c.id, c.size));
    match data_disk {
        Some(dev) => candidates.iter().filter(|c| c.dev == dev).find(bound),
        None => candidates
            .iter()
            .filter(|c| !c.removable && !c.id.is_empty())
            .find(bound),
    }
}

/// Reads the markers of the disks `probes` found.
pub fn candidates(probes: &[crate::datadisk::scan::Probe]) -> Vec<Candidate> {
    probes
        .iter()
        .filter(|p| p.device.size >= 4 * RESERVE && !p.device.read_only)
        .filter_map(|p| {
            let mut disk = BlockDisk::open_read_only(&p.device.dev).ok()?;
            let marker = read_marker(&mut disk);
            if let Some(m) = &marker {
                if !m.binds(&disk.id, disk.size) {
                    warn!(
                        "{}: a reset marker for another device ({:?}, {} bytes) is ignored",
                        p.device.dev, m.id, m.size
                    );
                }
            }
            Some(Candidate {
                dev: p.device.dev.clone(),
                id: disk.id.clone(),
                size: disk.size,
                removable: p.device.removable,
                marker,
            })
        })
        .collect()
}

/// The RMA report as console lines.
pub fn describe(r: &EraseReport) -> Vec<String> {
    let secs = (r.erase_ms + r.verify_ms) as f64 / 1000.0;
    let level = if r.nist_level.is_empty() {
        "none (not completed)".to_string()
    } else {
        format!("NIST SP 800-88 {}", r.nist_level)
    };
    vec![
        format!(
            "ERASE REPORT: device {} ({}), bytes {}..{} of {} ({} MiB)",
            r.device,
            r.scope,
            r.range_start,
            r.range_end,
            r.bytes,
            r.bytes >> 20
        ),
        format!("  method: {}", r.method),
        format!("  level: {level}"),
        format!(
            "  started unix {} finished unix {} ({secs:.1} s: erase {} ms, read-back {} ms)",
            r.started_unix, r.finished_unix, r.erase_ms, r.verify_ms
        ),
        format!(
            "  verification: {} ({})",
            if r.verified { "PASSED" } else { "FAILED" },
            r.detail
        ),
    ]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An in-memory disk whose power can be cut after a number of operations.
    pub(crate) struct Fake {
        pub bytes: Vec<u8>,
        pub ops_left: Option<usize>,
        pub formats: usize,
        pub id: String,
        pub whole: bool,
        /// Whether the device has a secure discard, and a discard.
        pub secure: bool,
        pub can_discard: bool,
        /// What happened, in order: `discard a..b`, `format n`, `secure a..b`.
        pub log: Vec<String>,
    }

    impl Fake {
        pub fn new(size: usize) -> Fake {
            Fake {
                bytes: vec![0xAB; size],
                ops_left: None,
                formats: 0,
                id: "serial:FAKE-1".into(),
                whole: true,
                secure: false,
                can_discard: true,
                log: Vec::new(),
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
        fn id(&self) -> String {
            self.id.clone()
        }
        fn whole_disk(&self) -> bool {
            self.whole
        }
        fn secure_discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
            self.op()?;
            if !self.secure {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "no such command",
                ));
            }
            self.log.push(format!("secure {offset}..{}", offset + len));
            self.range(offset, len as usize)?.fill(0);
            Ok(())
        }
        fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
            self.op()?;
            if !self.can_discard {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "no such command",
                ));
            }
            self.log.push(format!("discard {offset}..{}", offset + len));
            // Discarded blocks of this fake read back as zeros.
            self.range(offset, len as usize)?.fill(0);
            Ok(())
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
        fn read_uncached(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.read(offset, buf)
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.op()?;
            self.range(offset, data.len())?.copy_from_slice(data);
            Ok(())
        }
        fn sync(&mut self) -> io::Result<()> {
            self.op()
        }
        fn format(&mut self, fs_bytes: u64) -> Result<(), String> {
            self.op().map_err(|e| e.to_string())?;
            self.log.push(format!("format {fs_bytes}"));
            // A new file system: a superblock with its size, the rest of its area as it was
            // (mke2fs with lazy init does not rewrite data blocks).
            let blocks = (fs_bytes / 4096) as u32;
            let sb = self.range(1024, 1024).map_err(|e| e.to_string())?;
            sb.fill(0);
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
        fn read_method(&self) -> String {
            "fake reads".into()
        }
    }

    const SIZE: usize = 72 << 20;

    /// A valid erase record for a device of `size` bytes.
    pub(crate) fn sample_record(size: u64) -> Vec<u8> {
        let mut d = Fake::new(size as usize);
        arm(&mut d, ResetLevel::Rma, 1).unwrap();
        run_rma(&mut d);
        let at = record_offset(size) as usize;
        let (_, len) = decode_record(&d.bytes[at..]).unwrap();
        d.bytes[at..at + len].to_vec()
    }

    fn marker(level: ResetLevel, id: &str, size: u64) -> Marker {
        Marker {
            level,
            unix: 1234,
            id: id.into(),
            size,
        }
    }

    /// Every byte zero but the erase record, which reads back as a verified report.
    fn erased_but_for_the_record(d: &Fake) -> EraseReport {
        let at = record_offset(d.size()) as usize;
        let (report, len) = decode_record(&d.bytes[at..]).expect("an erase record");
        let mut rest = d.bytes.clone();
        rest[at..at + len].fill(0);
        let stray = rest.iter().position(|&b| b != 0);
        assert_eq!(stray, None, "bytes left beside the record");
        report
    }

    #[test]
    fn markers_round_trip_and_noise_is_not_a_marker() {
        for level in [ResetLevel::Config, ResetLevel::Rma] {
            let m = marker(level, "serial:ABC", 1 << 30);
            assert_eq!(decode_marker(&encode_marker(&m)), Some(m));
        }
        assert_eq!(decode_marker(&[0u8; MARKER_LEN]), None);
        let mut m = encode_marker(&marker(ResetLevel::Rma, "", 1));
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
    fn a_marker_binds_to_its_device_identity_and_size() {
        let mut d = Fake::new(SIZE);
        d.format(fs_bytes(SIZE as u64)).unwrap();
        arm(&mut d, ResetLevel::Rma, 5).unwrap();
        assert_eq!(pending(&mut d), Some((ResetLevel::Rma, 5)));
        // The same bytes seen through a device with another serial: not for it.
        d.id = "serial:OTHER".into();
        assert_eq!(pending(&mut d), None);
        assert!(read_marker(&mut d).is_some(), "still there, only not bound");
        // A data partition that ends where its disk ends: the disk sees the partition's
        // marker in its own last MiB, but the marker names the partition and its size.
        let part = SIZE as u64 - (8 << 20);
        let m = marker(ResetLevel::Rma, "serial:FAKE-1#1", part);
        let mut disk = Fake::new(SIZE);
        let at = tail_offset(SIZE as u64);
        disk.write(at, &encode_marker(&m)).unwrap();
        assert_eq!(read_marker(&mut disk), Some(m));
        assert_eq!(pending(&mut disk), None, "the whole disk does not match");
    }

    #[test]
    fn only_the_chosen_data_disk_is_wiped_and_removable_media_never_otherwise() {
        let cand = |dev: &str, id: &str, removable: bool, m: Option<Marker>| Candidate {
            dev: dev.into(),
            id: id.into(),
            size: 1 << 30,
            removable,
            marker: m,
        };
        let bound = |id: &str| Some(marker(ResetLevel::Rma, id, 1 << 30));
        let cands = [
            // A USB stick holding a valid marker for itself (cloned from another box, or a
            // boot module): first in name order.
            cand("/dev/sda", "serial:USB", true, bound("serial:USB")),
            // A disk with a stale marker copied from another device.
            cand("/dev/vda", "serial:A", false, bound("serial:B")),
            cand("/dev/vdb", "serial:DATA", false, bound("serial:DATA")),
        ];
        let chosen = |d: Option<&str>| choose(&cands, d).map(|c| c.dev.as_str());
        assert_eq!(chosen(Some("/dev/vdb")), Some("/dev/vdb"));
        assert_eq!(
            chosen(Some("/dev/vda")),
            None,
            "a marker for another device"
        );
        // No data disk found (its superblock unreadable): the fixed disk the marker names.
        assert_eq!(chosen(None), Some("/dev/vdb"));
        // The removable data disk itself (a box that keeps its data on a USB module).
        assert_eq!(chosen(Some("/dev/sda")), Some("/dev/sda"));
        // Without an identity, only as the chosen data disk.
        let anon = [cand("/dev/vdc", "", false, bound(""))];
        assert_eq!(choose(&anon, None), None);
        assert_eq!(
            choose(&anon, Some("/dev/vdc")).map(|c| c.dev.as_str()),
            Some("/dev/vdc")
        );
    }

    #[test]
    fn an_rma_request_is_recorded_on_a_disk_whose_superblock_cannot_be_read() {
        /// A disk whose first blocks cannot be read.
        struct Failing(Fake);
        impl Disk for Failing {
            fn name(&self) -> String {
                self.0.name()
            }
            fn size(&self) -> u64 {
                self.0.size()
            }
            fn id(&self) -> String {
                self.0.id()
            }
            fn whole_disk(&self) -> bool {
                true
            }
            fn secure_discard(&mut self, o: u64, l: u64) -> io::Result<()> {
                self.0.secure_discard(o, l)
            }
            fn discard(&mut self, o: u64, l: u64) -> io::Result<()> {
                self.0.discard(o, l)
            }
            fn zero(&mut self, o: u64, l: u64) -> io::Result<()> {
                self.0.zero(o, l)
            }
            fn read(&mut self, o: u64, b: &mut [u8]) -> io::Result<()> {
                if o < 4096 {
                    return Err(io::Error::other("Input/output error"));
                }
                self.0.read(o, b)
            }
            fn read_uncached(&mut self, o: u64, b: &mut [u8]) -> io::Result<()> {
                self.0.read(o, b)
            }
            fn write(&mut self, o: u64, b: &[u8]) -> io::Result<()> {
                self.0.write(o, b)
            }
            fn sync(&mut self) -> io::Result<()> {
                self.0.sync()
            }
            fn format(&mut self, n: u64) -> Result<(), String> {
                self.0.format(n)
            }
            fn zero_method(&self) -> String {
                self.0.zero_method()
            }
            fn read_method(&self) -> String {
                self.0.read_method()
            }
        }
        let mut f = Failing(Fake::new(SIZE));
        assert!(matches!(
            arm(&mut f, ResetLevel::Config, 1),
            Err(ArmError::Io(_))
        ));
        arm(&mut f, ResetLevel::Rma, 1).unwrap();
        assert_eq!(pending(&mut f), Some((ResetLevel::Rma, 1)));
        let r = run_rma(&mut f);
        assert!(r.verified, "{}", r.detail);
    }

    #[test]
    fn a_reset_not_yet_carried_out_can_be_cancelled() {
        let mut d = Fake::new(SIZE);
        d.format(fs_bytes(SIZE as u64)).unwrap();
        assert_eq!(cancel(&mut d).unwrap(), None);
        arm(&mut d, ResetLevel::Config, 3).unwrap();
        assert_eq!(cancel(&mut d).unwrap(), Some(ResetLevel::Config));
        assert_eq!(pending(&mut d), None);
        assert_eq!(cancel(&mut d).unwrap(), None);
    }

    #[test]
    fn a_config_reset_discards_formats_and_clears_the_marker_even_after_power_cuts() {
        for cut_after in 0..5 {
            let mut d = Fake::new(SIZE);
            d.format(fs_bytes(SIZE as u64)).unwrap();
            d.range(4096, 6).unwrap().copy_from_slice(b"CANARY");
            d.range(40 << 20, 6).unwrap().copy_from_slice(b"SECRET");
            arm(&mut d, ResetLevel::Config, 7).unwrap();
            assert_eq!(pending(&mut d), Some((ResetLevel::Config, 7)));
            d.log.clear();
            d.ops_left = Some(cut_after);
            let first = run_config(&mut d);
            d.ops_left = None;
            // A cut leaves the marker (the next boot starts again) unless the work was done.
            if first.is_err() && pending(&mut d).is_some() {
                run_config(&mut d).unwrap();
            }
            assert_eq!(pending(&mut d), None, "cut after {cut_after}");
            let discard = format!("discard 0..{}", fs_bytes(SIZE as u64));
            let at = |what: &str| d.log.iter().rposition(|l| l.starts_with(what));
            assert!(
                at(&discard).is_some() && at(&discard) < at("format"),
                "the old blocks are discarded before the new file system: {:?}",
                d.log
            );
            for canary in [b"CANARY", b"SECRET"] {
                assert!(!d.bytes.windows(6).any(|w| w == canary));
            }
        }
        // A device without discard still gets its new file system.
        let mut d = Fake::new(SIZE);
        d.can_discard = false;
        arm(&mut d, ResetLevel::Config, 7).unwrap();
        let note = run_config(&mut d).unwrap();
        assert!(note.starts_with("no discard"), "{note}");
        assert_eq!((d.formats, pending(&mut d)), (1, None));
    }

    #[test]
    fn an_rma_erase_leaves_only_zeros_and_its_record_and_survives_a_power_cut_at_any_step() {
        let mut completed_first_time = 0;
        for cut_after in 0..16 {
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
            let kept = erased_but_for_the_record(&d);
            assert!(kept.verified, "cut after {cut_after}: {kept:?}");
            assert_eq!(pending(&mut d), None);
            assert_eq!(read_record(&mut d), Some(kept));
        }
        assert!(
            completed_first_time > 0,
            "the sweep reached a run with no cut"
        );
    }

    #[test]
    fn the_report_names_what_ran_the_range_and_the_nist_level() {
        let mut d = Fake::new(SIZE);
        arm(&mut d, ResetLevel::Rma, 9).unwrap();
        let r = run_rma(&mut d);
        assert!(r.verified);
        assert_eq!(
            (r.range_start, r.range_end, r.bytes),
            (0, SIZE as u64, SIZE as u64)
        );
        assert_eq!(r.scope, "whole disk");
        assert_eq!(r.nist_level, "clear", "zeros only: clear, not purge");
        assert!(
            r.method.starts_with("BLKSECDISCARD: not available"),
            "{}",
            r.method
        );
        assert!(r.method.contains("fake zeroing") && r.method.contains("fake reads"));
        let lines = describe(&r).join("\n");
        assert!(
            lines.contains("PASSED")
                && lines.contains("/dev/fake")
                && lines.contains("800-88 clear"),
            "{lines}"
        );
        assert!(!lines.contains("SECURE ERASE"), "{lines}");

        // A device with a secure discard: purge, and it ran over the data area.
        let mut d = Fake::new(SIZE);
        d.secure = true;
        d.whole = false;
        arm(&mut d, ResetLevel::Rma, 9).unwrap();
        let r = run_rma(&mut d);
        assert_eq!(
            (r.nist_level.as_str(), r.scope.as_str()),
            ("purge", "partition")
        );
        assert_eq!(d.log, [format!("secure 0..{}", tail_offset(SIZE as u64))]);
        assert!(r.method.contains("completed"), "{}", r.method);
    }

    #[test]
    fn a_failed_erase_claims_no_level_and_keeps_the_marker() {
        let mut d = Fake::new(SIZE);
        arm(&mut d, ResetLevel::Rma, 9).unwrap();
        d.ops_left = Some(3);
        let r = run_rma(&mut d);
        assert!(!r.verified);
        assert_eq!(r.nist_level, "");
        assert!(r.detail.contains("failed"), "{}", r.detail);
        d.ops_left = None;
        assert!(pending(&mut d).is_some());
        assert_eq!(read_record(&mut d), None);
    }

    #[test]
    fn records_round_trip_and_a_damaged_one_is_ignored() {
        let rec = sample_record(SIZE as u64);
        let (r, len) = decode_record(&rec).unwrap();
        assert_eq!(len, rec.len());
        assert!(r.verified);
        let mut bad = rec.clone();
        bad[30] ^= 1;
        assert_eq!(decode_record(&bad), None);
        let mut tail = vec![0u8; 64 << 10];
        tail[RECORD_AT as usize..RECORD_AT as usize + rec.len()].copy_from_slice(&rec);
        mask_erase_record(&mut tail);
        assert!(tail.iter().all(|&b| b == 0));
    }
}
