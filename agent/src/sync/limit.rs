//! The bandwidth limit: a pacer that holds the bytes a sync puts on the wire under the
//! limit in every one-second window, not just on average.
//!
//! Each write of `n` bytes takes `n / rate` seconds of the wire's time, one after the
//! other; a write may start at most [`BURST`] before its turn. So any window of length `w`
//! carries at most `rate * (w + BURST)` bytes plus the piece that straddles its end: 2.5%
//! over the limit in a one-second window at most. Writes are cut into pieces of a quarter
//! of the burst, so the bound holds whatever the chunk sizes. A new pacer starts with nothing saved up.

use std::time::{Duration, Instant};

/// How far ahead of its turn a write may go: 20 ms, 2% of a second.
pub const BURST: Duration = Duration::from_millis(20);
/// The largest piece written at once when unlimited.
pub const MAX_PIECE: usize = 64 * 1024;
/// The smallest piece, so that a tiny limit does not mean one-byte writes.
const MIN_PIECE: usize = 256;
/// What each piece costs on the wire beyond its bytes: its TLS record (header, type and
/// tag: 22 bytes) and its HTTP chunk framing (up to 10), with room to spare.
pub const PIECE_OVERHEAD: usize = 40;

#[derive(Debug)]
pub struct Pacer {
    rate: Option<u64>,
    /// When the wire is free for the next write.
    free_at: Option<Instant>,
}

impl Pacer {
    /// `rate` in bytes per second; `None` is unlimited.
    pub fn new(rate: Option<u64>) -> Pacer {
        Pacer {
            rate: rate.filter(|r| *r > 0),
            free_at: None,
        }
    }

    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// A new limit, from the next write on; what is booked stays booked.
    pub fn set_rate(&mut self, rate: Option<u64>) {
        self.rate = rate.filter(|r| *r > 0);
    }

    /// The largest piece to write at once.
    pub fn piece(&self) -> usize {
        match self.rate {
            None => MAX_PIECE,
            Some(r) => {
                // A quarter of the burst: a piece counts whole at its start.
                let burst = (r as u128 * BURST.as_millis() / 4000) as usize;
                burst.clamp(MIN_PIECE, MAX_PIECE)
            }
        }
    }

    /// Books `n` bytes; answers how long to wait, from `now`, before writing them.
    pub fn book(&mut self, n: usize, now: Instant) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        let takes = Duration::from_secs_f64(n as f64 / rate as f64);
        // Nothing saved up at the start, nor after the wire was idle.
        let turn = match self.free_at {
            Some(t) if t > now => t,
            _ => now,
        };
        let start = turn.checked_sub(BURST).unwrap_or(now).max(now);
        self.free_at = Some(turn + takes);
        start - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `total` bytes through a pacer with a simulated clock and returns the largest
    /// number of bytes that any one-second window saw.
    fn worst_window(rate: u64, total: usize, writes: &[usize]) -> (u64, Duration) {
        let mut pacer = Pacer::new(Some(rate));
        let t0 = Instant::now();
        let mut now = t0;
        let mut sent: Vec<(Duration, usize)> = Vec::new();
        let mut left = total;
        let mut i = 0;
        while left > 0 {
            let want = writes[i % writes.len()].min(left);
            i += 1;
            let mut rest = want;
            while rest > 0 {
                let piece = pacer.piece().min(rest);
                now += pacer.book(piece, now);
                sent.push((now - t0, piece));
                rest -= piece;
            }
            left -= want;
        }
        let mut worst = 0u64;
        for (k, (start, _)) in sent.iter().enumerate() {
            let end = *start + Duration::from_secs(1);
            let in_window: u64 = sent[k..]
                .iter()
                .take_while(|(t, _)| *t < end)
                .map(|(_, n)| *n as u64)
                .sum();
            worst = worst.max(in_window);
        }
        (worst, now - t0)
    }

    #[test]
    fn no_one_second_window_exceeds_the_limit_by_more_than_the_burst() {
        for rate in [100_000u64, 1_000_000, 10_000_000] {
            let total = (rate * 5) as usize;
            let (worst, took) = worst_window(rate, total, &[131_072, 8_192, 70_000, 1]);
            let bound = rate as f64 * 1.025 + MIN_PIECE as f64;
            assert!(
                (worst as f64) <= bound,
                "rate {rate}: a window carried {worst} bytes (bound {bound})"
            );
            assert!(
                (worst as f64) >= rate as f64 * 0.95,
                "rate {rate}: the limit is used, not starved ({worst})"
            );
            let secs = took.as_secs_f64();
            assert!((4.8..=5.1).contains(&secs), "rate {rate}: took {secs} s");
        }
    }

    #[test]
    fn unlimited_never_waits_and_an_idle_wire_saves_nothing_up() {
        let mut p = Pacer::new(None);
        let now = Instant::now();
        assert_eq!(p.book(10 << 20, now), Duration::ZERO);
        assert_eq!(p.piece(), MAX_PIECE);
        let mut p = Pacer::new(Some(1000));
        assert_eq!(p.piece(), MIN_PIECE);
        assert_eq!(Pacer::new(Some(1_000_000)).piece(), 5000);
        assert_eq!(
            p.book(20, now),
            Duration::ZERO,
            "the first write goes at once"
        );
        // Twenty bytes take 20 ms; the next 20 may start 20 ms early: now.
        assert_eq!(p.book(20, now), Duration::ZERO);
        assert_eq!(p.book(20, now), Duration::from_millis(20));
        // After a long pause the wire is idle: no saved-up burst beyond BURST.
        let later = now + Duration::from_secs(10);
        assert_eq!(p.book(20, later), Duration::ZERO);
        assert_eq!(p.book(20, later), Duration::ZERO);
        assert_eq!(p.book(20, later), Duration::from_millis(20));
    }
}
