//! Signals. Init blocks every signal (before anything else, so nothing sent during boot is
//! lost; blocked signals are queued even for PID 1) and reads them from a signalfd in the
//! main loop. Children start with an empty mask: see `ffi::with_empty_signal_mask`
//! (tested in `agent`).
//!
//! | signal | meaning |
//! | --- | --- |
//! | SIGCHLD | reap every exited child |
//! | SIGTERM | reboot |
//! | SIGINT | reboot (the kernel sends it on ctrl-alt-del once `CAD_OFF` is set) |
//! | SIGUSR1 | halt |
//! | SIGUSR2 | power off |
//! | SIGPWR | power off (what container managers and UPS daemons send) |
//! | anything else | logged and ignored |

use appliance_proto::control::PowerAction;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Blocks every signal in init.
pub fn block_all() -> nix::Result<()> {
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), None)
}

/// A non-blocking signalfd for every signal.
pub fn open_signalfd() -> nix::Result<SignalFd> {
    SignalFd::with_flags(
        &SigSet::all(),
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignalAction {
    Reap,
    Power {
        action: PowerAction,
        reason: &'static str,
    },
    Ignore,
}

/// What a signal asks init to do.
pub fn action_for(signal: Signal) -> SignalAction {
    let power = |action, reason| SignalAction::Power { action, reason };
    match signal {
        Signal::SIGCHLD => SignalAction::Reap,
        Signal::SIGTERM => power(PowerAction::Reboot, "signal SIGTERM"),
        Signal::SIGINT => power(PowerAction::Reboot, "signal SIGINT (ctrl-alt-del)"),
        Signal::SIGUSR1 => power(PowerAction::Halt, "signal SIGUSR1"),
        Signal::SIGUSR2 => power(PowerAction::PowerOff, "signal SIGUSR2"),
        Signal::SIGPWR => power(PowerAction::PowerOff, "signal SIGPWR"),
        _ => SignalAction::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_meanings() {
        assert_eq!(action_for(Signal::SIGCHLD), SignalAction::Reap);
        let action = |s| match action_for(s) {
            SignalAction::Power { action, .. } => Some(action),
            _ => None,
        };
        assert_eq!(action(Signal::SIGTERM), Some(PowerAction::Reboot));
        assert_eq!(action(Signal::SIGINT), Some(PowerAction::Reboot));
        assert_eq!(action(Signal::SIGUSR1), Some(PowerAction::Halt));
        assert_eq!(action(Signal::SIGUSR2), Some(PowerAction::PowerOff));
        assert_eq!(action(Signal::SIGPWR), Some(PowerAction::PowerOff));
        assert_eq!(action_for(Signal::SIGHUP), SignalAction::Ignore);
        assert_eq!(action_for(Signal::SIGPIPE), SignalAction::Ignore);
    }
}
