//! The ordered shutdown: a state machine ([`Shutdown`]) that says what to do next given the
//! clock and whether children are left, and the final executor ([`finish`]).
//!
//! 1. Log the action and reason; stop restarting services.
//! 2. `kill(-1, SIGTERM)` and `kill(-1, SIGCONT)` (so stopped processes see the TERM).
//! 3. Keep reaping until no child is left or [`GRACE`] has passed; then `kill(-1, SIGKILL)`
//!    and reap for at most [`KILL_WAIT`] more (a process stuck in the kernel cannot be
//!    waited for forever).
//! 4. [`finish`]: write the shutdown record on `/data` (persistent only, atomically), sync,
//!    unmount everything but the virtual file systems (busy block file systems are
//!    remounted read-only, then detached), sync, `reboot(2)`.

use std::time::Duration;

use appliance_proto::control::PowerAction;
use appliance_proto::paths;
use appliance_proto::state::LastShutdown;
use nix::errno::Errno;
use nix::sys::signal::Signal;

use crate::kernel::Kernel;
use crate::mounts;

/// How long services get to exit after SIGTERM.
pub const GRACE: Duration = Duration::from_secs(5);
/// How long to wait for the reaping after SIGKILL.
pub const KILL_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// SIGTERM sent; waiting for children to exit.
    Terminating { deadline: Duration },
    /// SIGKILL sent; waiting for the last reaps.
    Killing { deadline: Duration },
    /// [`finish`] was requested; nothing more to do here.
    Finishing,
}

/// One thing for the executor to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Stop the supervisor: no more restarts.
    StopServices,
    /// `kill(-1, signal)`.
    SignalAll(Signal),
    /// Run [`finish`].
    Finish,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shutdown {
    pub action: PowerAction,
    pub reason: String,
    pub started: Duration,
    pub unix_time: Option<u64>,
    pub phase: Phase,
}

impl Shutdown {
    /// Starts a shutdown; returns the steps to take at once.
    pub fn begin(
        action: PowerAction,
        reason: &str,
        now: Duration,
        unix_time: Option<u64>,
    ) -> (Shutdown, Vec<Step>) {
        let sd = Shutdown {
            action,
            reason: reason.to_string(),
            started: now,
            unix_time,
            phase: Phase::Terminating {
                deadline: now.saturating_add(GRACE),
            },
        };
        (
            sd,
            vec![
                Step::StopServices,
                Step::SignalAll(Signal::SIGTERM),
                Step::SignalAll(Signal::SIGCONT),
            ],
        )
    }

    /// Called after each round of reaping.
    pub fn progress(&mut self, children_left: bool, now: Duration) -> Vec<Step> {
        match self.phase {
            Phase::Terminating { .. } if !children_left => {
                info!(
                    "every process exited after {:.3} s",
                    now.saturating_sub(self.started).as_secs_f64()
                );
                self.phase = Phase::Finishing;
                vec![Step::Finish]
            }
            Phase::Terminating { deadline } if now >= deadline => {
                warn!(
                    "processes still running after {} s: sending SIGKILL",
                    GRACE.as_secs()
                );
                self.phase = Phase::Killing {
                    deadline: now.saturating_add(KILL_WAIT),
                };
                vec![Step::SignalAll(Signal::SIGKILL)]
            }
            Phase::Killing { deadline } if !children_left || now >= deadline => {
                if children_left {
                    error!("processes left after SIGKILL (stuck in the kernel?); going on");
                }
                self.phase = Phase::Finishing;
                vec![Step::Finish]
            }
            _ => Vec::new(),
        }
    }

    /// When the loop must wake up next for this shutdown.
    pub fn deadline(&self) -> Option<Duration> {
        match self.phase {
            Phase::Terminating { deadline } | Phase::Killing { deadline } => Some(deadline),
            Phase::Finishing => None,
        }
    }

    /// The record the next boot will report.
    pub fn record(&self) -> LastShutdown {
        LastShutdown {
            kind: self.action.as_str().to_string(),
            reason: self.reason.clone(),
            unix_time: self.unix_time,
        }
    }
}

/// The end of the shutdown: record, sync, unmount, sync, `reboot(2)`. Returns only if the
/// kernel refused to reboot, with its error.
pub fn finish(k: &mut impl Kernel, sd: &Shutdown, data_persistent: bool) -> Errno {
    if data_persistent {
        match k.write_atomic(paths::SHUTDOWN_RECORD, sd.record().encode().as_bytes()) {
            Ok(()) => info!("shutdown record written to {}", paths::SHUTDOWN_RECORD),
            Err(e) => error!(
                "cannot write {}: {e}; the next boot will report an unclean shutdown",
                paths::SHUTDOWN_RECORD
            ),
        }
    }
    k.sync();
    for m in mounts::shutdown_unmount_order(&k.mounts()) {
        mounts::unmount_for_shutdown(k, &m);
    }
    k.sync();
    info!(
        "{}: {} (shutdown took {:.3} s)",
        sd.action,
        sd.reason,
        k.now().saturating_sub(sd.started).as_secs_f64()
    );
    k.reboot(sd.action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::{Call, FakeKernel};
    use nix::mount::MntFlags;

    fn secs(n: f64) -> Duration {
        Duration::from_secs_f64(n)
    }

    #[test]
    fn children_that_exit_in_time_skip_the_kill() {
        let (mut sd, steps) =
            Shutdown::begin(PowerAction::PowerOff, "power button", secs(10.0), Some(5));
        assert_eq!(
            steps,
            [
                Step::StopServices,
                Step::SignalAll(Signal::SIGTERM),
                Step::SignalAll(Signal::SIGCONT)
            ]
        );
        assert_eq!(sd.deadline(), Some(secs(15.0)));
        assert!(sd.progress(true, secs(11.0)).is_empty());
        assert_eq!(sd.progress(false, secs(12.0)), [Step::Finish]);
        assert_eq!(sd.phase, Phase::Finishing);
        assert_eq!(sd.deadline(), None);
        assert!(sd.progress(false, secs(13.0)).is_empty());
    }

    #[test]
    fn stubborn_children_get_killed_after_the_grace_period() {
        let (mut sd, _) = Shutdown::begin(PowerAction::Reboot, "signal SIGTERM", secs(0.0), None);
        assert!(sd.progress(true, secs(4.999)).is_empty());
        assert_eq!(
            sd.progress(true, secs(5.0)),
            [Step::SignalAll(Signal::SIGKILL)]
        );
        assert_eq!(sd.deadline(), Some(secs(7.0)));
        assert!(sd.progress(true, secs(6.0)).is_empty());
        assert_eq!(sd.progress(false, secs(6.1)), [Step::Finish]);
    }

    #[test]
    fn unkillable_children_do_not_block_the_shutdown() {
        let (mut sd, _) = Shutdown::begin(PowerAction::Halt, "x", secs(0.0), None);
        sd.progress(true, secs(5.0));
        assert_eq!(sd.progress(true, secs(7.0)), [Step::Finish]);
    }

    #[test]
    fn no_children_at_all_finishes_at_once() {
        let (mut sd, _) = Shutdown::begin(PowerAction::PowerOff, "x", secs(1.0), None);
        assert_eq!(sd.progress(false, secs(1.0)), [Step::Finish]);
    }

    fn base_mounts() -> FakeKernel {
        FakeKernel::with_mounts(&FakeKernel::APPLIANCE_MOUNTS)
    }

    #[test]
    fn finish_writes_the_record_before_unmounting_then_reboots() {
        let mut k = base_mounts();
        let (sd, _) = Shutdown::begin(
            PowerAction::PowerOff,
            "power button",
            secs(1.0),
            Some(1_700_000_123),
        );
        let err = finish(&mut k, &sd, true);
        assert_eq!(err, Errno::EPERM); // the fake refuses, like a kernel without CAP_SYS_BOOT
        assert_eq!(
            k.calls,
            [
                Call::WriteAtomic {
                    path: "/data/.init/shutdown".into(),
                    contents: "kind=poweroff\nreason=power button\ntime=1700000123\n".into()
                },
                Call::Sync,
                Call::Umount {
                    target: "/data".into(),
                    flags: MntFlags::empty()
                },
                Call::Umount {
                    target: "/tmp".into(),
                    flags: MntFlags::empty()
                },
                Call::Umount {
                    target: "/run".into(),
                    flags: MntFlags::empty()
                },
                Call::Sync,
                Call::Reboot(PowerAction::PowerOff),
            ]
        );
    }

    #[test]
    fn volatile_data_gets_no_record_and_a_busy_data_disk_is_made_read_only() {
        let mut k = base_mounts();
        k.busy.push("/data".into());
        let (sd, _) = Shutdown::begin(PowerAction::Reboot, "x", secs(0.0), None);
        finish(&mut k, &sd, false);
        assert!(!k
            .calls
            .iter()
            .any(|c| matches!(c, Call::WriteAtomic { .. })));
        let pos = |want: &Call| k.calls.iter().position(|c| c == want).unwrap();
        let detach = pos(&Call::Umount {
            target: "/data".into(),
            flags: MntFlags::MNT_DETACH,
        });
        let remount = k
            .calls
            .iter()
            .position(|c| matches!(c, Call::Mount { target, .. } if target == "/data"))
            .unwrap();
        assert!(remount < detach);
        assert_eq!(k.calls.last(), Some(&Call::Reboot(PowerAction::Reboot)));
        assert_eq!(k.calls[k.calls.len() - 2], Call::Sync);
    }

    #[test]
    fn the_record_says_what_and_why() {
        let (sd, _) = Shutdown::begin(PowerAction::Halt, "signal SIGUSR1", secs(0.0), Some(9));
        assert_eq!(
            sd.record(),
            LastShutdown {
                kind: "halt".into(),
                reason: "signal SIGUSR1".into(),
                unix_time: Some(9)
            }
        );
    }
}
