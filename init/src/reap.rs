//! Reaping: `waitpid(-1, WNOHANG)` until nothing more has exited, for the agent and for
//! every orphan the kernel hands to PID 1.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

/// One reaped child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exited {
    pub pid: i32,
    pub status: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    pub exited: Vec<Exited>,
    /// False once `waitpid` says `ECHILD`: init has no child left at all.
    pub children_left: bool,
}

/// Reaps every child that has exited.
pub fn reap_all() -> Reaped {
    let mut out = Reaped {
        exited: Vec::new(),
        children_left: true,
    };
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return out,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    out.exited.push(Exited {
                        pid: pid.as_raw(),
                        status: describe(&status),
                    });
                }
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => {
                out.children_left = false;
                return out;
            }
            Err(e) => {
                error!("waitpid failed: {e}");
                return out;
            }
        }
    }
}

/// `exit code 1`, `killed by SIGSEGV (core dumped)`.
pub fn describe(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit code {code}"),
        WaitStatus::Signaled(_, sig, core) => {
            format!(
                "killed by {}{}",
                sig.as_str(),
                if *core { " (core dumped)" } else { "" }
            )
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    #[test]
    fn statuses_read_well() {
        let pid = Pid::from_raw(7);
        assert_eq!(describe(&WaitStatus::Exited(pid, 3)), "exit code 3");
        assert_eq!(
            describe(&WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            "killed by SIGKILL"
        );
        assert_eq!(
            describe(&WaitStatus::Signaled(pid, Signal::SIGSEGV, true)),
            "killed by SIGSEGV (core dumped)"
        );
    }
}
