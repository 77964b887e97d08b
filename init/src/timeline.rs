//! Boot milestones: a line in [`appliance_proto::paths::TIMELINE`] (the format is
//! `appliance_proto::timeline`) and a line on the console.
//!
//! Init records `init-start` (taken as the first thing `run` does, written once `/run`
//! exists), `data-ready` (after `/data` is mounted, persistent or not) and `agent-spawned`
//! (the first start of the agent); the agent appends its own.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use appliance_proto::paths;
use appliance_proto::timeline::Milestone;

/// Records `name` at the current monotonic time.
pub fn milestone(name: &str) {
    milestone_at(crate::kernel::monotonic(), name);
}

/// Records `name` at `at` (monotonic time since the kernel started).
pub fn milestone_at(at: Duration, name: &str) {
    let m = Milestone::new(u64::try_from(at.as_micros()).unwrap_or(u64::MAX), name);
    let written = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(paths::TIMELINE)
        // One write of a short line to an O_APPEND file: writers never interleave.
        .and_then(|mut f| f.write_all(m.encode().as_bytes()));
    if let Err(e) = written {
        warn!("cannot append to {}: {e}", paths::TIMELINE);
    }
    info!("milestone {} at {:.3} ms", m.name, m.millis());
}
