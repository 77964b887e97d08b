//! The NTP status as a plain state machine: polls' outcomes and the time in, the status
//! out. No I/O; the monotonic time is passed in.
//!
//! The clock counts as synchronised from a poll that set it until [`HOLDOVER`] passes
//! without another: one lost poll does not make a schedule doubt the time, a server gone
//! for minutes does. A change of servers starts over (unsynchronised until the new list
//! gives the time).

use super::query::Found;
use crate::model::ntp::{ClockAction, NtpStatus};
use std::time::Duration;
use tokio::time::Instant;

/// How long the clock counts as synchronised after the last good poll: four polls.
pub const HOLDOVER: Duration = Duration::from_secs(4 * 64);

#[derive(Debug, Default)]
pub struct Tracker {
    status: NtpStatus,
    last_good: Option<Instant>,
}

impl Tracker {
    pub fn status(&self) -> &NtpStatus {
        &self.status
    }

    /// The servers changed (or NTP was turned off): nothing is known of the new ones.
    pub fn restart(&mut self) {
        *self = Tracker::default();
    }

    /// A poll measured `found` and the clock was adjusted (`action`) at `now`, `unix`
    /// seconds by the adjusted wall clock.
    pub fn synced(&mut self, found: &Found, action: ClockAction, now: Instant, unix: u64) {
        self.last_good = Some(now);
        self.status = NtpStatus {
            synchronised: true,
            server: Some(found.server.to_string()),
            address: Some(found.address),
            stratum: Some(found.sample.stratum.saturating_add(1)),
            offset_seconds: Some(found.sample.offset),
            delay_seconds: Some(found.sample.delay),
            last_sync: Some(crate::model::rfc3339(unix)),
            last_action: Some(action),
            error: None,
        };
    }

    /// A poll gave no usable time (or the clock could not be set): `why`, in words.
    pub fn failed(&mut self, why: String, now: Instant) {
        self.status.synchronised = self
            .last_good
            .is_some_and(|t| now.saturating_duration_since(t) < HOLDOVER);
        self.status.error = Some(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ntp::packet::Sample;

    fn found() -> Found {
        Found {
            server: "ntp.example.net".parse().unwrap(),
            address: "192.0.2.1".parse().unwrap(),
            sample: Sample {
                offset: 0.002,
                delay: 0.0004,
                stratum: 8,
            },
        }
    }

    #[test]
    fn a_good_poll_synchronises_and_fills_every_field() {
        let mut t = Tracker::default();
        assert!(!t.status().synchronised);
        t.synced(&found(), ClockAction::Slewed, Instant::now(), 1_767_225_600);
        let s = t.status();
        assert!(s.synchronised);
        assert_eq!(s.server.as_deref(), Some("ntp.example.net"));
        assert_eq!(s.address, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(s.stratum, Some(9), "one more than the server's");
        assert_eq!(s.offset_seconds, Some(0.002));
        assert_eq!(s.last_sync.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(s.last_action, Some(ClockAction::Slewed));
        assert_eq!(s.error, None);
    }

    #[test]
    fn lost_polls_keep_synchronised_for_the_holdover_then_not() {
        let start = Instant::now();
        let mut t = Tracker::default();
        t.failed("no answer".into(), start);
        assert!(!t.status().synchronised, "never synced");
        assert_eq!(t.status().error.as_deref(), Some("no answer"));

        t.synced(&found(), ClockAction::Slewed, start, 1);
        t.failed("no answer".into(), start + Duration::from_secs(64));
        assert!(t.status().synchronised);
        assert_eq!(t.status().error.as_deref(), Some("no answer"));
        assert_eq!(
            t.status().offset_seconds,
            Some(0.002),
            "the last measure stays"
        );
        t.failed("no answer".into(), start + HOLDOVER);
        assert!(!t.status().synchronised);

        t.synced(&found(), ClockAction::Stepped, start + HOLDOVER, 2);
        assert!(t.status().synchronised);
        assert_eq!(t.status().error, None);
    }

    #[test]
    fn new_servers_start_over() {
        let mut t = Tracker::default();
        t.synced(&found(), ClockAction::Slewed, Instant::now(), 1);
        t.restart();
        assert_eq!(*t.status(), NtpStatus::default());
    }
}
