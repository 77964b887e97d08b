//! The agent's log output: never blocks the agent, and no remote client can flood it.
//!
//! Lines go to standard error (through init to a 115200-baud console), written by a
//! thread of their own from a bounded queue of [`QUEUE_LINES`] lines. When the queue is
//! full the line is dropped and counted ([`dropped`], in status as `agent.log_dropped`);
//! the writer reports the count in a line of its own when it catches up.
//!
//! Lines a remote client can cause are rate limited per target by a token bucket
//! ([`BURST`] lines, then [`PER_SECOND`] a second); the writer reports how many were
//! suppressed at most every [`SUMMARY_EVERY`]. A line counts as remote when:
//! - it has a `client` field (the address of the client that caused it: failed logins,
//!   lockouts), or
//! - its target is [`REMOTE`] (`tracing::info!(target: "remote", ...)`: connections
//!   refused by the caps, bad requests).

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The target for log lines a remote client can trigger.
pub const REMOTE: &str = "remote";
/// Lines held for the writer before new ones are dropped.
pub const QUEUE_LINES: usize = 512;
/// Remote lines let through at once per target.
pub const BURST: f64 = 20.0;
/// Remote lines per second per target, after the burst.
pub const PER_SECOND: f64 = 1.0;
/// How often the writer reports suppressed lines (when there are any).
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Counters shared by the producers and the writer.
#[derive(Debug, Default)]
pub struct Counters {
    pub dropped: AtomicU64,
    pub suppressed: AtomicU64,
    queued: AtomicU64,
    written: AtomicU64,
}

static COUNTERS: Counters = Counters {
    dropped: AtomicU64::new(0),
    suppressed: AtomicU64::new(0),
    queued: AtomicU64::new(0),
    written: AtomicU64::new(0),
};

/// Log lines dropped because the output could not keep up, since start.
pub fn dropped() -> u64 {
    COUNTERS.dropped.load(Ordering::Relaxed)
}

/// Whether a log line is one a remote client can trigger (see the module documentation).
pub fn is_remote(meta: &Metadata<'_>) -> bool {
    meta.is_event() && (meta.target() == REMOTE || meta.fields().field("client").is_some())
}

/// A token bucket.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(now: Instant) -> Bucket {
        Bucket {
            tokens: BURST,
            at: now,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * PER_SECOND;
        self.tokens = (self.tokens + refill).min(BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The layer that rate limits remote lines, counting those it suppresses.
pub struct RemoteLimit {
    buckets: Mutex<HashMap<&'static str, Bucket>>,
    counters: &'static Counters,
    clock: fn() -> Instant,
}

impl RemoteLimit {
    fn new(counters: &'static Counters, clock: fn() -> Instant) -> RemoteLimit {
        RemoteLimit {
            buckets: Mutex::new(HashMap::new()),
            counters,
            clock,
        }
    }
}

impl<S: Subscriber> Layer<S> for RemoteLimit {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if !is_remote(meta) {
            return true;
        }
        let now = (self.clock)();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let pass = buckets
            .entry(meta.target())
            .or_insert_with(|| Bucket::full(now))
            .take(now);
        if !pass {
            self.counters.suppressed.fetch_add(1, Ordering::Relaxed);
        }
        pass
    }
}

/// The producers' end: each formatted line is queued whole, or dropped and counted.
#[derive(Clone)]
pub struct Queue {
    tx: SyncSender<Vec<u8>>,
    counters: &'static Counters,
}

/// One line being formatted; queued when dropped.
pub struct Line<'a> {
    buf: Vec<u8>,
    queue: &'a Queue,
}

impl Write for Line<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.queue.tx.try_send(std::mem::take(&mut self.buf)) {
            Ok(()) => {
                self.queue.counters.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.queue.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Queue {
    type Writer = Line<'a>;
    fn make_writer(&'a self) -> Line<'a> {
        Line {
            buf: Vec::new(),
            queue: self,
        }
    }
}

/// The writer thread's loop: writes queued lines to `out` and reports what was dropped
/// and suppressed; returns when every producer is gone.
fn drain(rx: Receiver<Vec<u8>>, mut out: impl Write, counters: &Counters) {
    let mut reported_dropped = 0;
    let mut reported_suppressed = 0;
    let mut last_summary = Instant::now();
    loop {
        let done = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                let _ = out.write_all(&line);
                counters.written.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let dropped = counters.dropped.load(Ordering::Relaxed);
        if dropped > reported_dropped {
            let _ = writeln!(
                out,
                " WARN log: {} line(s) dropped: the console could not keep up",
                dropped - reported_dropped
            );
            reported_dropped = dropped;
        }
        let suppressed = counters.suppressed.load(Ordering::Relaxed);
        if suppressed > reported_suppressed && (done || last_summary.elapsed() >= SUMMARY_EVERY) {
            let _ = writeln!(
                out,
                " WARN log: {} line(s) caused by remote clients suppressed by the rate limit",
                suppressed - reported_suppressed
            );
            reported_suppressed = suppressed;
            last_summary = Instant::now();
        }
        let _ = out.flush();
        if done {
            return;
        }
    }
}

/// Dropped at exit: waits (at most a second) for the writer to write what is queued.
pub struct Guard {
    counters: Option<&'static Counters>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(c) = self.counters else { return };
        let start = Instant::now();
        while c.written.load(Ordering::Relaxed) < c.queued.load(Ordering::Relaxed)
            && start.elapsed() < Duration::from_secs(1)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The pieces of the pipeline, for the binary and for tests.
fn pipeline(
    out: impl Write + Send + 'static,
    counters: &'static Counters,
) -> io::Result<(Queue, Receiver<()>)> {
    let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            drain(rx, out, counters);
            let _ = done_tx.send(());
        })?;
    Ok((Queue { tx, counters }, done_rx))
}

/// Installs the agent's logging with `filter` as the global subscriber.
pub fn init(filter: tracing_subscriber::EnvFilter) -> io::Result<Guard> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // The writer runs until exit: the subscriber, which holds the queue, is never dropped.
    let (queue, _finished) = pipeline(io::stderr(), &COUNTERS)?;
    let fmt = tracing_subscriber::fmt::layer()
        .without_time()
        .with_ansi(false)
        .with_target(false)
        .with_writer(queue);
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(RemoteLimit::new(&COUNTERS, Instant::now))
        .with(fmt)
        .try_init()
        .is_ok();
    Ok(Guard {
        counters: installed.then_some(&COUNTERS),
    })
}

/// A writer that can be blocked, as a slow console is.
#[cfg(test)]
#[derive(Clone, Default)]
struct Gated {
    open: std::sync::Arc<(Mutex<bool>, std::sync::Condvar)>,
    got: std::sync::Arc<Mutex<Vec<u8>>>,
}

#[cfg(test)]
impl Write for Gated {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let (lock, cv) = &*self.open;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        self.got.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn leak() -> &'static Counters {
        Box::leak(Box::default())
    }

    #[test]
    fn a_stalled_console_never_blocks_logging_and_the_loss_is_reported() {
        let counters = leak();
        let console = Gated::default();
        let (queue, finished) = pipeline(console.clone(), counters).unwrap();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(queue)
                .without_time(),
        );
        // The console takes nothing: 5,000 lines must still return at once.
        tracing::subscriber::with_default(subscriber, || {
            for n in 0..5000 {
                tracing::info!(n, "a line");
            }
        });
        let dropped = counters.dropped.load(Ordering::Relaxed);
        assert!(
            dropped >= 5000 - QUEUE_LINES as u64 - 1,
            "dropped {dropped}"
        );
        // The console recovers: the queued lines come out, then the count.
        *console.open.0.lock().unwrap() = true;
        console.open.1.notify_all();
        finished.recv_timeout(Duration::from_secs(10)).unwrap();
        let text = String::from_utf8(console.got.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains(&format!("{dropped} line(s) dropped")),
            "{}",
            &text[text.len().saturating_sub(300)..]
        );
    }

    #[test]
    fn a_bucket_lets_a_burst_through_then_one_a_second() {
        let t0 = Instant::now();
        let mut b = Bucket::full(t0);
        let burst = (0..100).filter(|_| b.take(t0)).count();
        assert_eq!(burst, BURST as usize);
        assert!(!b.take(t0 + Duration::from_millis(500)));
        assert!(b.take(t0 + Duration::from_millis(1000)));
        assert!(!b.take(t0 + Duration::from_millis(1100)));
        // A long quiet spell refills the burst, no more.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.take(later)).count(), BURST as usize);
    }

    #[test]
    fn remote_lines_are_limited_per_target_and_counted_others_pass() {
        let counters = leak();
        let console = Gated::default();
        *console.open.0.lock().unwrap() = true;
        let (queue, finished) = pipeline(console.clone(), counters).unwrap();
        // A clock that never moves: only the burst passes.
        fn frozen() -> Instant {
            static T: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
            *T.get_or_init(Instant::now)
        }
        let subscriber = tracing_subscriber::registry()
            .with(RemoteLimit::new(counters, frozen))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(queue)
                    .without_time(),
            );
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..100 {
                tracing::info!(client = "192.0.2.7", "failed login");
                tracing::info!(target: "remote", "connection closed");
                tracing::info!("address added");
            }
        });
        finished.recv_timeout(Duration::from_secs(10)).unwrap();
        let text = String::from_utf8(console.got.lock().unwrap().clone()).unwrap();
        let count = |s: &str| text.matches(s).count();
        assert_eq!(count("failed login"), BURST as usize);
        assert_eq!(count("connection closed"), BURST as usize);
        assert_eq!(count("address added"), 100);
        assert_eq!(
            counters.suppressed.load(Ordering::Relaxed),
            2 * (100 - BURST as u64)
        );
        assert!(
            text.contains(&format!(
                "{} line(s) caused by remote clients",
                2 * (100 - BURST as u64)
            )),
            "{text}"
        );
    }
}
