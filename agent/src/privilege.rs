//! What the agent process may do: its file limit and its capabilities, set once at start
//! by the binary before any other thread exists (capabilities are per thread; threads
//! started later inherit the reduced set).
//!
//! The agent runs as root. It keeps only the capabilities it uses ([`KEPT`]); the rest
//! leave the bounding, effective, permitted, inheritable and ambient sets, so a bug in
//! the API cannot load a module, read raw disks, trace init or reboot the box (init
//! does the power actions and the reset). Its files (`/data`, the control socket in
//! `/run`, the DMI tables) are root's own, so owner permissions suffice: no DAC
//! override is kept.

use std::io;

/// The open-file limit the agent sets for itself: room for every connection the caps
/// allow ([`crate::conn::Limits::APPLIANCE`]: 512 + 16 reserved) several times over,
/// plus netlink, ARP and ICMP sockets, the control socket and files.
pub const FILE_LIMIT: u64 = 4096;

// Capability numbers (linux/capability.h).
pub const CAP_NET_BIND_SERVICE: u32 = 10;
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_TIME: u32 = 25;

/// The capabilities the agent keeps, and why:
/// - `CAP_NET_BIND_SERVICE`: the API on port 443;
/// - `CAP_NET_ADMIN`: addresses, routes and links through rtnetlink;
/// - `CAP_NET_RAW`: ARP (a packet socket) for the factory address, ICMP for `test ping`;
/// - `CAP_SYS_ADMIN`: `sethostname(2)` (the only call that needs it; moving the host name
///   to init would let it go);
/// - `CAP_SYS_TIME`: the NTP client steps (`clock_settime`) and slews (`adjtimex`) the clock.
pub const KEPT: [u32; 5] = [
    CAP_NET_BIND_SERVICE,
    CAP_NET_ADMIN,
    CAP_NET_RAW,
    CAP_SYS_ADMIN,
    CAP_SYS_TIME,
];

/// The set of `caps` as the two 32-bit words of a capability mask.
pub fn mask(caps: &[u32]) -> u64 {
    caps.iter().filter(|c| **c < 64).fold(0, |m, c| m | 1 << c)
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot raise the open-file limit to {limit}: {source}")]
    FileLimit { limit: u64, source: nix::Error },
    #[error("cannot drop capability {cap} from the bounding set: {source}")]
    Bounding { cap: u32, source: io::Error },
    #[error("cannot set the capability sets: {0}")]
    Capset(io::Error),
    #[error("cannot clear the ambient capabilities: {0}")]
    Ambient(io::Error),
}

/// Raises the soft and hard open-file limits to `limit` (never lowers them).
pub fn raise_file_limit(limit: u64) -> Result<(), PrivilegeError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let wrap = |source| PrivilegeError::FileLimit { limit, source };
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(wrap)?;
    if soft >= limit {
        return Ok(());
    }
    setrlimit(Resource::RLIMIT_NOFILE, limit, hard.max(limit)).map_err(wrap)
}

/// The highest capability number the running kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops every capability but `keep` from the bounding set, then sets effective and
/// permitted to `keep` (those of them the process has) and inheritable and ambient to
/// nothing. Call before starting threads.
pub fn keep_only(keep: &[u32]) -> Result<(), PrivilegeError> {
    for cap in (0..=last_cap()).filter(|c| !keep.contains(c)) {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and touches no memory of ours.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if r != 0 {
            let e = io::Error::last_os_error();
            // EINVAL: a number this kernel does not know; nothing to drop.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(PrivilegeError::Bounding { cap, source: e });
            }
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(PrivilegeError::Ambient(io::Error::last_os_error()));
    }
    let wanted = mask(keep);
    let mut data = [CapData::default(); 2];
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capget writes two CapData records (version 3) into `data`, an array of
    // exactly two that outlives the call, and reads the header.
    unsafe { cap_syscall(libc::SYS_capget, &header, data.as_mut_ptr()) }?;
    for (i, d) in data.iter_mut().enumerate() {
        let word = (wanted >> (32 * i)) as u32;
        d.permitted &= word;
        d.effective = d.permitted;
        d.inheritable = 0;
    }
    // SAFETY: capset reads the header and the two CapData records of `data`.
    unsafe { cap_syscall(libc::SYS_capset, &header, data.as_mut_ptr()) }?;
    Ok(())
}

/// capget(2) or capset(2).
///
/// # Safety
/// `data` must point to as many `CapData` records as `header.version` implies (two for
/// version 3), valid for the access the call makes.
unsafe fn cap_syscall(
    nr: libc::c_long,
    header: &CapHeader,
    data: *mut CapData,
) -> Result<(), PrivilegeError> {
    // SAFETY: the header is a valid reference; `data` is the caller's promise.
    let r = unsafe { libc::syscall(nr, header as *const CapHeader, data) };
    if r == 0 {
        Ok(())
    } else {
        Err(PrivilegeError::Capset(io::Error::last_os_error()))
    }
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_set_is_the_network_hostname_and_time_capabilities() {
        assert_eq!(
            mask(&KEPT),
            (1 << 10) | (1 << 12) | (1 << 13) | (1 << 21) | (1 << 25)
        );
        assert_eq!(format!("{:016x}", mask(&KEPT)), "0000000002203400");
    }

    #[test]
    fn the_file_limit_leaves_room_above_the_connection_caps() {
        let caps = crate::conn::Limits::APPLIANCE;
        let connections = (caps.global + caps.peer_reserve) as u64;
        assert!(
            FILE_LIMIT >= 4 * connections,
            "{FILE_LIMIT} for {connections}"
        );
    }
}
