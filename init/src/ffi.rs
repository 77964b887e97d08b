//! The only `unsafe` code in init, behind a safe API:
//! - the interface-flags ioctls that bring a network interface up (nix has no safe wrapper
//!   for `SIOCSIFFLAGS`);
//! - a `pre_exec` hook that gives children an empty signal mask;
//! - the block-range ioctls of a factory reset: `BLKDISCARD`, `BLKSECDISCARD` and
//!   `BLKZEROOUT`;
//! - `BLKRRPART`, which makes the kernel read a disk's partition table again after init
//!   grew the data partition.
//!
//! Everything else goes through `nix` or `std`.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

/// Makes the child of `cmd` start with no signal blocked.
///
/// Init blocks every signal and a child inherits the mask across `exec`. `std` clears it
/// when it spawns with `posix_spawn`, but not on its fork-and-exec path, which is the one
/// a static glibc build takes (seen in QEMU: the agent ignored SIGTERM). This hook makes
/// it explicit on every path.
pub fn with_empty_signal_mask(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the child between fork and exec. It only calls
    // sigprocmask(2), which is async-signal-safe; `SigSet::empty()` lives on the stack, so
    // nothing allocates or takes a lock that another thread of the parent could hold.
    unsafe {
        cmd.pre_exec(|| {
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        })
    }
}

/// Sets `IFF_UP` on the interface `name`; returns whether it was down before.
pub fn set_interface_up(name: &str) -> Result<bool, Errno> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(Errno::EINVAL);
    }
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;

    // SAFETY: `ifreq` is a plain C struct (a char array and a union of integers and
    // plain structs) for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }

    // SAFETY: the fd is a socket we own for the duration of the call, and `req` is a
    // valid, NUL-terminated (the name is shorter than IFNAMSIZ and the struct was zeroed)
    // `ifreq` that outlives the call; SIOCGIFFLAGS only writes `ifr_flags` inside it.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    Errno::result(rc)?;

    // SAFETY: SIOCGIFFLAGS succeeded, so the kernel initialised `ifru_flags`; reading a
    // `c_short` from the zero-initialised union is valid in any case.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    let up = libc::IFF_UP as libc::c_short;
    if flags & up != 0 {
        return Ok(false);
    }
    req.ifr_ifru.ifru_flags = flags | up;

    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    Errno::result(rc)?;
    Ok(true)
}

/// The ioctls that act on a byte range of a block device (`_IO(0x12, n)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkRange {
    /// `BLKDISCARD` (119): tell the device the range is unused (TRIM/UNMAP).
    Discard,
    /// `BLKSECDISCARD` (125): the device's secure discard, which also removes copies the
    /// device keeps elsewhere (eMMC secure erase/trim); few devices have it.
    SecureDiscard,
    /// `BLKZEROOUT` (127): the range reads back as zeros; the kernel uses the device's
    /// write-zeroes command where it has one, else writes zero pages.
    ZeroOut,
}

impl BlkRange {
    fn request(self) -> libc::c_ulong {
        match self {
            BlkRange::Discard => 0x1277,
            BlkRange::SecureDiscard => 0x127d,
            BlkRange::ZeroOut => 0x127f,
        }
    }
}

/// Runs `op` over `len` bytes at `offset` of the block device `fd` (both multiples of the
/// logical block size). `ENOTTY` means `fd` is not a block device, `EOPNOTSUPP` that the
/// device has no such command.
pub fn blk_range(fd: &impl AsRawFd, op: BlkRange, offset: u64, len: u64) -> Result<(), Errno> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: the fd is a file we own for the duration of the call, and each of these
    // ioctls reads exactly two u64 (start, length) from the pointer, which points at
    // `range` on our stack for the whole call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), op.request(), range.as_ptr()) };
    Errno::result(rc).map(drop)
}

/// Makes the kernel read the partition table of the whole disk `fd` again (`BLKRRPART`,
/// `_IO(0x12, 95)`). `EBUSY` means a partition of it is open or mounted.
pub fn reread_partitions(fd: &impl AsRawFd) -> Result<(), Errno> {
    // SAFETY: the fd is a file we own for the duration of the call, and BLKRRPART takes no
    // argument: the kernel reads nothing from user memory.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), 0x125f as libc::c_ulong) };
    Errno::result(rc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_without_a_syscall() {
        assert_eq!(set_interface_up(""), Err(Errno::EINVAL));
        assert_eq!(
            set_interface_up("a-name-that-is-too-long"),
            Err(Errno::EINVAL)
        );
        assert_eq!(set_interface_up("lo\0x"), Err(Errno::EINVAL));
    }

    #[test]
    fn a_missing_interface_is_an_error() {
        assert_eq!(set_interface_up("nosuchif0"), Err(Errno::ENODEV));
    }
}
