//! The boot timeline: init's milestones plus the agent's own, on the monotonic clock.

use appliance_proto::timeline::{self, Milestone};
use std::io::Write;
use std::path::Path;

/// Microseconds on CLOCK_MONOTONIC (time since the kernel started, on the appliance).
pub fn monotonic_micros() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1000,
        Err(_) => 0,
    }
}

/// Appends a milestone to the timeline file; failures are logged, never fatal.
pub fn mark(path: &Path, name: &str) {
    let m = Milestone::new(monotonic_micros(), name);
    tracing::info!(milestone = %m.name, ms = m.millis(), "boot milestone");
    let result = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(m.encode().as_bytes()));
    if let Err(e) = result {
        tracing::debug!(path = %path.display(), error = %e, "cannot record milestone");
    }
}

/// Every milestone recorded so far (none if the file is missing).
pub fn read(path: &Path) -> Vec<Milestone> {
    std::fs::read_to_string(path)
        .map(|t| timeline::parse(&t))
        .unwrap_or_default()
}
