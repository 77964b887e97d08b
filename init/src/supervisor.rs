//! Restart-with-backoff for the agent, as a plain state machine: the caller passes the
//! monotonic time in and carries out what it says, so the tests drive it with a simulated
//! clock.
//!
//! The first start is immediate. After an exit (or a failed start) the agent is started
//! again after [`INITIAL_BACKOFF`], doubling each time up to [`MAX_BACKOFF`]; a run of at
//! least [`STABLE_AFTER`] resets the delay. Once stopped (shutdown) it never starts again.

use std::time::Duration;

pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Start it when the clock reaches this time.
    StartAt(Duration),
    Running {
        pid: i32,
        since: Duration,
    },
    /// Never start again; `pid` is the one still running, if any.
    Stopped {
        pid: Option<i32>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Supervisor {
    state: State,
    backoff: Duration,
    starts: u64,
}

/// What an exit of the supervised process means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitOutcome {
    /// How long it ran.
    pub ran: Duration,
    /// When it will be started again, from now (`None` once stopped).
    pub restart_in: Option<Duration>,
}

impl Supervisor {
    pub fn new(now: Duration) -> Supervisor {
        Supervisor {
            state: State::StartAt(now),
            backoff: INITIAL_BACKOFF,
            starts: 0,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether the caller should start the process now.
    pub fn should_start(&self, now: Duration) -> bool {
        matches!(self.state, State::StartAt(at) if now >= at)
    }

    /// The time the loop must wake up at to start the process.
    pub fn deadline(&self) -> Option<Duration> {
        match self.state {
            State::StartAt(at) => Some(at),
            _ => None,
        }
    }

    /// The process was started. Returns true for the very first start.
    pub fn started(&mut self, pid: i32, now: Duration) -> bool {
        self.starts = self.starts.saturating_add(1);
        self.state = State::Running { pid, since: now };
        self.starts == 1
    }

    /// Starting failed (binary missing, exec error): like an exit after no time at all.
    pub fn start_failed(&mut self, now: Duration) -> Duration {
        self.schedule(now, Duration::ZERO)
    }

    /// Some child exited; `None` if it was not the supervised process.
    pub fn exited(&mut self, pid: i32, now: Duration) -> Option<ExitOutcome> {
        match self.state {
            State::Running { pid: p, since } if p == pid => {
                let ran = now.saturating_sub(since);
                Some(ExitOutcome {
                    ran,
                    restart_in: Some(self.schedule(now, ran)),
                })
            }
            State::Stopped { pid: Some(p) } if p == pid => {
                self.state = State::Stopped { pid: None };
                Some(ExitOutcome {
                    ran: Duration::ZERO,
                    restart_in: None,
                })
            }
            _ => None,
        }
    }

    /// No more starts; returns the pid still running, if any.
    pub fn stop(&mut self) -> Option<i32> {
        let pid = match self.state {
            State::Running { pid, .. } => Some(pid),
            State::Stopped { pid } => pid,
            State::StartAt(_) => None,
        };
        self.state = State::Stopped { pid };
        pid
    }

    pub fn pid(&self) -> Option<i32> {
        match self.state {
            State::Running { pid, .. } | State::Stopped { pid: Some(pid) } => Some(pid),
            _ => None,
        }
    }

    fn schedule(&mut self, now: Duration, ran: Duration) -> Duration {
        if ran >= STABLE_AFTER {
            self.backoff = INITIAL_BACKOFF;
        }
        let delay = self.backoff;
        self.backoff = self.backoff.saturating_mul(2).min(MAX_BACKOFF);
        self.state = State::StartAt(now.saturating_add(delay));
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starts_at_once() {
        let s = Supervisor::new(ms(500));
        assert!(!s.should_start(ms(499)));
        assert!(s.should_start(ms(500)));
        assert_eq!(s.deadline(), Some(ms(500)));
    }

    #[test]
    fn crash_loop_backs_off_exponentially_up_to_the_cap() {
        let mut now = ms(0);
        let mut s = Supervisor::new(now);
        let mut delays = Vec::new();
        for pid in 1..=14 {
            assert!(s.should_start(now));
            assert_eq!(s.started(pid, now), pid == 1);
            now += ms(10); // dies quickly
            let out = s.exited(pid, now).unwrap();
            assert_eq!(out.ran, ms(10));
            let delay = out.restart_in.unwrap();
            assert!(!s.should_start(now + delay - ms(1)));
            delays.push(delay.as_millis());
            now += delay;
        }
        assert_eq!(
            delays,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000, 30000,
                30000
            ]
        );
    }

    #[test]
    fn a_long_run_resets_the_backoff() {
        let mut s = Supervisor::new(ms(0));
        s.started(1, ms(0));
        assert_eq!(s.exited(1, ms(1)).unwrap().restart_in, Some(ms(100)));
        s.started(2, ms(101));
        assert_eq!(s.exited(2, ms(102)).unwrap().restart_in, Some(ms(200)));
        s.started(3, ms(302));
        // Ran 29.9 s: not stable yet.
        assert_eq!(s.exited(3, ms(30_202)).unwrap().restart_in, Some(ms(400)));
        s.started(4, ms(31_000));
        // Ran 30 s: back to the first delay.
        assert_eq!(s.exited(4, ms(61_000)).unwrap().restart_in, Some(ms(100)));
    }

    #[test]
    fn failed_starts_back_off_too() {
        let mut s = Supervisor::new(ms(0));
        assert_eq!(s.start_failed(ms(0)), ms(100));
        assert!(s.should_start(ms(100)));
        assert_eq!(s.start_failed(ms(100)), ms(200));
        assert_eq!(s.deadline(), Some(ms(300)));
    }

    #[test]
    fn other_children_are_not_the_agent() {
        let mut s = Supervisor::new(ms(0));
        s.started(10, ms(0));
        assert_eq!(s.exited(11, ms(5)), None);
        assert_eq!(s.pid(), Some(10));
    }

    #[test]
    fn stopped_never_restarts() {
        let mut s = Supervisor::new(ms(0));
        s.started(10, ms(0));
        assert_eq!(s.stop(), Some(10));
        assert_eq!(
            s.exited(10, ms(50)),
            Some(ExitOutcome {
                ran: ms(0),
                restart_in: None
            })
        );
        assert!(!s.should_start(ms(10_000_000)));
        assert_eq!(s.deadline(), None);
        assert_eq!(s.pid(), None);

        let mut s = Supervisor::new(ms(0));
        s.start_failed(ms(0));
        assert_eq!(s.stop(), None);
        assert!(!s.should_start(ms(1000)));
    }
}
