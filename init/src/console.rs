//! Init's log: one line per message, `[    1.234567] init: message`, with the time in
//! seconds on `CLOCK_MONOTONIC` (the kernel's own printk clock, so the lines interleave
//! sensibly with kernel messages). Each line goes to the console (init's stderr, which is
//! `/dev/console`) and into the ring buffer that the control socket's `log` request returns;
//! the agent's output goes through [`emit`] with the source `agent`.
//!
//! Limits: console writes block while the serial line drains (115200 baud is ~11 KiB/s), so
//! a very chatty agent slows init's loop down; nothing is rate limited yet.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use appliance_proto::cmdline::LogLevel;

use crate::ring::Ring;

/// Size of the in-memory log kept for the control socket's `log` request.
pub const RING_BYTES: usize = 128 * 1024;

static RING: Mutex<Ring> = Mutex::new(Ring::new(RING_BYTES));
static LEVEL: AtomicU8 = AtomicU8::new(level_number(LogLevel::Info));

const fn level_number(level: LogLevel) -> u8 {
    match level {
        LogLevel::Error => 0,
        LogLevel::Warn => 1,
        LogLevel::Info => 2,
        LogLevel::Debug => 3,
        LogLevel::Trace => 4,
    }
}

/// Logs at info level: `info!("mounted {dev}")`.
macro_rules! info {
    ($($t:tt)*) => { $crate::console::log($crate::console::Level::Info, &format!($($t)*)) };
}
/// Logs at warn level; the line reads `warning: ...`.
macro_rules! warn {
    ($($t:tt)*) => { $crate::console::log($crate::console::Level::Warn, &format!($($t)*)) };
}
/// Logs at error level; the line reads `error: ...`.
macro_rules! error {
    ($($t:tt)*) => { $crate::console::log($crate::console::Level::Error, &format!($($t)*)) };
}
/// Logs only with `appliance.log=debug` (or trace).
macro_rules! debug {
    ($($t:tt)*) => {
        if $crate::console::enabled($crate::console::Level::Debug) {
            $crate::console::log($crate::console::Level::Debug, &format!($($t)*))
        }
    };
}

pub use appliance_proto::cmdline::LogLevel as Level;

/// Sets the most verbose level written (from `appliance.log`).
pub fn set_level(level: LogLevel) {
    LEVEL.store(level_number(level), Ordering::Relaxed);
}

pub fn enabled(level: LogLevel) -> bool {
    level_number(level) <= LEVEL.load(Ordering::Relaxed)
}

/// One console line: `[    1.234567] source: message\n`. Line breaks in the message become
/// spaces so one call is always one line.
pub fn format_line(at: Duration, source: &str, message: &str) -> String {
    let mut line = format!("[{:5}.{:06}] {source}: ", at.as_secs(), at.subsec_micros());
    line.extend(
        message
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c }),
    );
    line.push('\n');
    line
}

/// Writes an init message at `level`, if that level is enabled.
pub fn log(level: LogLevel, message: &str) {
    if !enabled(level) {
        return;
    }
    match level {
        LogLevel::Error => emit("init", &format!("error: {message}")),
        LogLevel::Warn => emit("init", &format!("warning: {message}")),
        _ => emit("init", message),
    }
}

/// Writes one line from `source` (`init`, `agent`) to the console and the ring buffer.
pub fn emit(source: &str, message: &str) {
    let line = format_line(crate::kernel::monotonic(), source, message);
    // A console that fails (no /dev/console) must not stop init: the line is still kept.
    // (Unit tests keep the lines out of the test output.)
    if !cfg!(test) {
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
    ring().push(&line);
}

fn ring() -> MutexGuard<'static, Ring> {
    // Init is single-threaded and panics abort, so the lock is never poisoned in practice;
    // if it were, the data is still a valid ring.
    RING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A copy of the ring buffer: the last [`RING_BYTES`] of console lines.
pub fn ring_snapshot() -> Vec<u8> {
    ring().snapshot()
}

/// Logs a panic on the console (and in the ring, if it is free) and syncs the disks, since
/// with `panic = "abort"` the kernel panics right after ("Attempted to kill init").
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let line = format_line(
            crate::kernel::monotonic(),
            "init",
            &format!("PANIC: {info}"),
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        if let Ok(mut ring) = RING.try_lock() {
            ring.push(&line);
        }
        nix::unistd::sync();
    }));
}

/// Makes sure fds 0, 1 and 2 are open, on `/dev/console` if the kernel could not open it
/// for us (no `/dev/console` node in the initramfs), else on `/dev/null`. Fds that are
/// already open are left alone.
pub fn ensure_stdio() {
    use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
    use nix::sys::stat::Mode;

    let open_ok = [
        fcntl(std::io::stdin(), FcntlArg::F_GETFD).is_ok(),
        fcntl(std::io::stdout(), FcntlArg::F_GETFD).is_ok(),
        fcntl(std::io::stderr(), FcntlArg::F_GETFD).is_ok(),
    ];
    if open_ok.iter().all(|ok| *ok) {
        return;
    }
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let fd = match open("/dev/console", flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(_) => match open("/dev/null", flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(_) => return,
        },
    };
    let [stdin_ok, stdout_ok, stderr_ok] = open_ok;
    if !stdin_ok {
        let _ = nix::unistd::dup2_stdin(&fd);
    }
    if !stdout_ok {
        let _ = nix::unistd::dup2_stdout(&fd);
    }
    if !stderr_ok {
        let _ = nix::unistd::dup2_stderr(&fd);
    }
    info!("opened /dev/console for init's standard streams");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format_matches_the_kernel_style() {
        let line = format_line(Duration::from_micros(1_234_567), "init", "hello");
        assert_eq!(line, "[    1.234567] init: hello\n");
        let line = format_line(Duration::from_secs(123_456), "agent", "x");
        assert_eq!(line, "[123456.000000] agent: x\n");
    }

    #[test]
    fn a_message_is_always_one_line() {
        let line = format_line(Duration::ZERO, "agent", "a\nb\r\nc");
        assert_eq!(line, "[    0.000000] agent: a b  c\n");
    }

    #[test]
    fn levels_filter() {
        set_level(LogLevel::Info);
        assert!(enabled(LogLevel::Warn));
        assert!(enabled(LogLevel::Info));
        assert!(!enabled(LogLevel::Debug));
    }
}
