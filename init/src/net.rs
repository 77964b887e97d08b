//! Networking init does itself: only `lo`. Everything else is the agent's.

use nix::errno::Errno;

/// Brings up the loopback interface (the kernel assigns 127.0.0.1 and ::1 on up).
pub fn loopback_up() -> Result<(), Errno> {
    crate::ffi::set_interface_up("lo").map(|_| ())
}
