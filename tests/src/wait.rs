//! Waiting with explicit timeouts (no bare sleeps in tests).

use std::time::{Duration, Instant};

/// Polls `probe` every `every` until it returns `Some`, or panics after `timeout` saying
/// what was awaited and what the last attempt said.
pub fn until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        let last = match probe() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last attempt: {last}");
        }
        std::thread::sleep(every);
    }
}
