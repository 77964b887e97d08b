//! The system clock behind a seam: read it, step it, slew it; and the decision between
//! a step and a slew.
//!
//! An offset over [`STEP_THRESHOLD`] (0.128 s, the threshold of RFC 5905's clock
//! discipline) is stepped at once (`clock_settime(CLOCK_REALTIME)`); a smaller one is
//! handed to the kernel's phase-locked loop (`adjtimex` with `ADJ_OFFSET`), which turns
//! the clock gradually and never backwards. In observe-only mode (a debug switch for the
//! namespace tests, whose agents share the host's clock) nothing is touched.

use crate::model::ntp::ClockAction;
use std::io;
use std::time::SystemTime;

/// Offsets larger than this (in seconds) are stepped, smaller ones slewed.
pub const STEP_THRESHOLD: f64 = 0.128;

/// The largest offset the kernel's loop takes (`MAXPHASE`, 0.5 s).
const MAX_SLEW_NS: i64 = 500_000_000;

/// The clock as the NTP client uses it.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
    /// Moves the clock by `offset` seconds at once.
    fn step(&self, offset: f64) -> io::Result<()>;
    /// Has the kernel move the clock by `offset` seconds gradually; `error` is the
    /// estimated error of the measurement, in seconds.
    fn slew(&self, offset: f64, error: f64) -> io::Result<()>;
}

/// Whether the client may touch the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Adjust,
    ObserveOnly,
}

/// What to do with a measured offset.
pub fn decide(offset: f64, mode: Mode) -> ClockAction {
    match mode {
        Mode::ObserveOnly => ClockAction::ObservedOnly,
        Mode::Adjust if offset.abs() > STEP_THRESHOLD => ClockAction::Stepped,
        Mode::Adjust => ClockAction::Slewed,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot {what} the clock by {offset:.6} s: {source}")]
pub struct ClockError {
    pub what: &'static str,
    pub offset: f64,
    pub source: io::Error,
}

/// Decides and carries out the adjustment for `offset`.
pub fn adjust(
    clock: &dyn Clock,
    offset: f64,
    error: f64,
    mode: Mode,
) -> Result<ClockAction, ClockError> {
    let action = decide(offset, mode);
    let result = match action {
        ClockAction::Stepped => clock.step(offset).map_err(|e| ("step", e)),
        ClockAction::Slewed => clock.slew(offset, error).map_err(|e| ("slew", e)),
        ClockAction::ObservedOnly => Ok(()),
    };
    result.map_err(|(what, source)| ClockError {
        what,
        offset,
        source,
    })?;
    Ok(action)
}

/// The kernel's `CLOCK_REALTIME` (needs `CAP_SYS_TIME` to change it).
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn step(&self, offset: f64) -> io::Result<()> {
        use nix::time::{clock_gettime, clock_settime, ClockId};
        let now = clock_gettime(ClockId::CLOCK_REALTIME).map_err(io::Error::from)?;
        let total_ns = i128::from(now.tv_sec()) * 1_000_000_000
            + i128::from(now.tv_nsec())
            + (offset * 1e9) as i128;
        let secs = total_ns.div_euclid(1_000_000_000);
        let nanos = total_ns.rem_euclid(1_000_000_000);
        let target = nix::sys::time::TimeSpec::new(
            i64::try_from(secs).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
            nanos as i64,
        );
        clock_settime(ClockId::CLOCK_REALTIME, target).map_err(io::Error::from)?;
        tracing::warn!(offset, "clock stepped from NTP");
        Ok(())
    }

    fn slew(&self, offset: f64, error: f64) -> io::Result<()> {
        let ns = ((offset * 1e9) as i64).clamp(-MAX_SLEW_NS, MAX_SLEW_NS);
        let micros = |s: f64| (s.abs() * 1e6).min(16e6) as libc::c_long;
        // SAFETY: `timex` is a plain C struct of integers, for which all zeros is a valid value.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        tx.modes = libc::ADJ_OFFSET
            | libc::ADJ_STATUS
            | libc::ADJ_NANO
            | libc::ADJ_TIMECONST
            | libc::ADJ_MAXERROR
            | libc::ADJ_ESTERROR;
        // The phase-locked loop on, "unsynchronised" off: the kernel then also keeps the
        // hardware clock in step (every 11 minutes).
        tx.status = libc::STA_PLL;
        tx.offset = ns as libc::c_long;
        // A time constant for a 64 s poll (2^(6-4)), as the reference implementation uses.
        tx.constant = 2;
        tx.maxerror = micros(offset.abs() + error);
        tx.esterror = micros(error);
        // SAFETY: adjtimex reads and writes the one `timex` we pass, which lives across the call.
        let r = unsafe { libc::adjtimex(&mut tx) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        tracing::debug!(offset, "clock slewed from NTP");
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A clock that records what was asked of it; `fail` makes every change fail.
    pub struct FakeClock {
        pub now: Mutex<SystemTime>,
        pub calls: Mutex<Vec<(&'static str, f64)>>,
        pub fail: bool,
    }

    impl FakeClock {
        pub fn at(unix: u64) -> FakeClock {
            FakeClock {
                now: Mutex::new(SystemTime::UNIX_EPOCH + Duration::from_secs(unix)),
                calls: Mutex::new(Vec::new()),
                fail: false,
            }
        }

        pub fn calls(&self) -> Vec<(&'static str, f64)> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> SystemTime {
            *self.now.lock().unwrap()
        }

        fn step(&self, offset: f64) -> io::Result<()> {
            self.calls.lock().unwrap().push(("step", offset));
            if self.fail {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            let mut now = self.now.lock().unwrap();
            let d = Duration::from_secs_f64(offset.abs());
            *now = if offset >= 0.0 { *now + d } else { *now - d };
            Ok(())
        }

        fn slew(&self, offset: f64, _error: f64) -> io::Result<()> {
            self.calls.lock().unwrap().push(("slew", offset));
            if self.fail {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeClock;
    use super::*;

    #[test]
    fn offsets_over_128_ms_are_stepped_smaller_ones_slewed() {
        assert_eq!(decide(0.0, Mode::Adjust), ClockAction::Slewed);
        assert_eq!(decide(0.128, Mode::Adjust), ClockAction::Slewed);
        assert_eq!(decide(-0.128, Mode::Adjust), ClockAction::Slewed);
        assert_eq!(decide(0.1281, Mode::Adjust), ClockAction::Stepped);
        assert_eq!(decide(-0.1281, Mode::Adjust), ClockAction::Stepped);
        assert_eq!(decide(3600.0, Mode::Adjust), ClockAction::Stepped);
    }

    #[test]
    fn a_large_offset_steps_the_clock_by_that_much() {
        let clock = FakeClock::at(1_000_000);
        let done = adjust(&clock, -2.5, 0.01, Mode::Adjust).unwrap();
        assert_eq!(done, ClockAction::Stepped);
        assert_eq!(clock.calls(), vec![("step", -2.5)]);
        let now = clock.now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(now.as_secs_f64(), 999_997.5);
    }

    #[test]
    fn a_small_offset_is_slewed_and_never_stepped() {
        let clock = FakeClock::at(1_000_000);
        let done = adjust(&clock, 0.004, 0.001, Mode::Adjust).unwrap();
        assert_eq!(done, ClockAction::Slewed);
        assert_eq!(clock.calls(), vec![("slew", 0.004)]);
        assert_eq!(clock.now(), FakeClock::at(1_000_000).now());
    }

    #[test]
    fn observe_only_never_touches_the_clock() {
        let clock = FakeClock::at(1_000_000);
        for offset in [-86_400.0, -0.2, 0.0, 0.05, 7200.0] {
            let done = adjust(&clock, offset, 0.0, Mode::ObserveOnly).unwrap();
            assert_eq!(done, ClockAction::ObservedOnly);
        }
        assert!(clock.calls().is_empty());
    }

    #[test]
    fn a_refused_change_says_what_and_why() {
        let clock = FakeClock {
            fail: true,
            ..FakeClock::at(5)
        };
        let e = adjust(&clock, 1.0, 0.0, Mode::Adjust).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot step the clock by 1.000000 s"),
            "{e}"
        );
        let e = adjust(&clock, 0.01, 0.0, Mode::Adjust).unwrap_err();
        assert!(e.to_string().starts_with("cannot slew"), "{e}");
    }
}
