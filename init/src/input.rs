//! The power button, through evdev: init opens every `/dev/input/event*` and a `KEY_POWER`
//! press (`EV_KEY`, code 116, value 1) on any of them powers the appliance off. On a PC
//! (and QEMU's q35) the ACPI power button is an input device, which is also what QEMU's
//! `system_powerdown` presses.
//!
//! While no device is open, `/dev/input` is scanned again every [`RESCAN_EVERY`] (the
//! ACPI button driver may register after init starts). Limits: devices plugged in after
//! one was opened are not picked up; any keyboard's power key counts too.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const EV_KEY: u16 = 0x01;
pub const KEY_POWER: u16 = 116;
pub const RESCAN_EVERY: Duration = Duration::from_secs(2);

/// `struct input_event` is a `struct timeval` then `u16 type, u16 code, i32 value`.
const TIME_LEN: usize = std::mem::size_of::<libc::timeval>();
pub const EVENT_LEN: usize = TIME_LEN + 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputEvent {
    pub kind: u16,
    pub code: u16,
    pub value: i32,
}

impl InputEvent {
    pub fn is_power_press(&self) -> bool {
        self.kind == EV_KEY && self.code == KEY_POWER && self.value == 1
    }
}

/// Parses the events in a read from an evdev device (a trailing partial event is ignored;
/// the kernel only returns whole ones).
pub fn parse_events(buf: &[u8]) -> Vec<InputEvent> {
    buf.chunks_exact(EVENT_LEN)
        .filter_map(|ev| {
            let b = ev.get(TIME_LEN..)?;
            let u16_at = |i: usize| Some(u16::from_ne_bytes([*b.get(i)?, *b.get(i + 1)?]));
            Some(InputEvent {
                kind: u16_at(0)?,
                code: u16_at(2)?,
                value: i32::from_ne_bytes([*b.get(4)?, *b.get(5)?, *b.get(6)?, *b.get(7)?]),
            })
        })
        .collect()
}

pub struct Device {
    pub path: PathBuf,
    file: File,
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// What reading a device gave.
pub enum Readout {
    PowerPressed,
    Nothing,
    /// The device is gone or broken; drop it.
    Gone(io::Error),
}

impl Device {
    /// Reads the pending events; reports whether the power key was pressed.
    pub fn read(&mut self) -> Readout {
        let mut buf = [0u8; EVENT_LEN * 64];
        let mut pressed = false;
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => return Readout::Gone(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    pressed |= parse_events(buf.get(..n).unwrap_or_default())
                        .iter()
                        .any(InputEvent::is_power_press)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Readout::Gone(e),
            }
        }
        if pressed {
            Readout::PowerPressed
        } else {
            Readout::Nothing
        }
    }
}

#[derive(Default)]
pub struct Inputs {
    pub devices: Vec<Device>,
    next_scan: Duration,
}

impl Inputs {
    /// Opens the event devices not yet open, if it is time to look.
    pub fn scan_if_due(&mut self, now: Duration) {
        if !self.devices.is_empty() || now < self.next_scan {
            return;
        }
        self.next_scan = now.saturating_add(RESCAN_EVERY);
        self.scan(Path::new("/dev/input"));
    }

    /// When the loop must wake up for the next scan.
    pub fn deadline(&self) -> Option<Duration> {
        self.devices.is_empty().then_some(self.next_scan)
    }

    fn scan(&mut self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
            .map(|e| e.path())
            .collect();
        paths.sort();
        for path in paths {
            if self.devices.iter().any(|d| d.path == path) {
                continue;
            }
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&path);
            match opened {
                Ok(file) => {
                    info!(
                        "watching {} ({}) for the power button",
                        path.display(),
                        device_name(&path)
                    );
                    self.devices.push(Device { path, file });
                }
                Err(e) => warn!("cannot open {}: {e}", path.display()),
            }
        }
    }

    /// Drops a device that failed.
    pub fn remove(&mut self, index: usize) {
        if index < self.devices.len() {
            let d = self.devices.remove(index);
            warn!("stopped watching {}", d.path.display());
        }
    }
}

fn device_name(path: &Path) -> String {
    let node = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::read_to_string(format!("/sys/class/input/{node}/device/name"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown device".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut e = vec![0xAAu8; TIME_LEN]; // time, ignored
        e.extend_from_slice(&kind.to_ne_bytes());
        e.extend_from_slice(&code.to_ne_bytes());
        e.extend_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn event_size_matches_the_kernel_struct() {
        assert_eq!(EVENT_LEN, std::mem::size_of::<libc::input_event>());
    }

    #[test]
    fn parses_a_power_button_press_and_release() {
        // What the ACPI button sends: press, sync, release, sync.
        let mut buf = event(EV_KEY, KEY_POWER, 1);
        buf.extend(event(0, 0, 0));
        buf.extend(event(EV_KEY, KEY_POWER, 0));
        buf.extend(event(0, 0, 0));
        let evs = parse_events(&buf);
        assert_eq!(evs.len(), 4);
        assert_eq!(
            evs[0],
            InputEvent {
                kind: EV_KEY,
                code: KEY_POWER,
                value: 1
            }
        );
        assert_eq!(evs.iter().filter(|e| e.is_power_press()).count(), 1);
    }

    #[test]
    fn other_keys_releases_and_repeats_are_not_presses() {
        assert!(!InputEvent {
            kind: EV_KEY,
            code: 30,
            value: 1
        }
        .is_power_press());
        assert!(!InputEvent {
            kind: EV_KEY,
            code: KEY_POWER,
            value: 0
        }
        .is_power_press());
        assert!(!InputEvent {
            kind: EV_KEY,
            code: KEY_POWER,
            value: 2
        }
        .is_power_press());
        assert!(!InputEvent {
            kind: 0x04,
            code: KEY_POWER,
            value: 1
        }
        .is_power_press());
    }

    #[test]
    fn partial_events_are_ignored() {
        let buf = event(EV_KEY, KEY_POWER, 1);
        assert!(parse_events(&buf[..EVENT_LEN - 1]).is_empty());
        let mut two = buf.clone();
        two.extend_from_slice(&buf[..5]);
        assert_eq!(parse_events(&two).len(), 1);
    }

    #[test]
    fn rescans_only_while_nothing_is_open() {
        let mut i = Inputs::default();
        assert_eq!(i.deadline(), Some(Duration::ZERO));
        i.next_scan = Duration::from_secs(4);
        i.scan_if_due(Duration::from_secs(3));
        assert_eq!(i.deadline(), Some(Duration::from_secs(4)));
    }
}
