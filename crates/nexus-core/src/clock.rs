//! Time as Nexus reads it for what expires: the system's clock, plus an
//! offset that only tests move (so a test reaches an expiry by moving the
//! clock rather than by sleeping). Audit rows and the store's own stamps
//! keep the system time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Clock {
    offset_micros: AtomicI64,
}

impl Clock {
    /// Unix microseconds.
    pub fn now_micros(&self) -> i64 {
        chrono::Utc::now().timestamp_micros() + self.offset_micros.load(Ordering::Relaxed)
    }

    /// Unix seconds.
    pub fn now_secs(&self) -> i64 {
        self.now_micros().div_euclid(1_000_000)
    }

    /// Moves this clock forward by `by` (tests).
    pub fn advance(&self, by: Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.offset_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now_and_nothing_else() {
        let clock = Clock::default();
        let before = clock.now_secs();
        assert!((before - chrono::Utc::now().timestamp()).abs() <= 1);
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now_secs() - before >= 3600);
        assert!(clock.now_secs() - before < 3602);
    }
}
