//! Where "now" comes from. The daemon reads the time only through one `Clock`, built once in
//! `App` and handed to every part that stamps or compares times (the store, the ledger, the
//! engines, deals, trust sessions, webhooks, the console), so a test or the demo that moves
//! the clock moves it for all of them at once.

use crate::domain::UnixMicros;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> UnixMicros;
}

pub type DynClock = Arc<dyn Clock>;

/// The system's wall clock: production's.
#[derive(Debug, Default)]
pub struct SystemClock;

impl SystemClock {
    pub fn shared() -> DynClock {
        Arc::new(Self)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> UnixMicros {
        chrono::Utc::now().timestamp_micros()
    }
}

/// A clock that stands still until moved: for tests.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn starting_at(at: UnixMicros) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(at)))
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.0.fetch_add(micros(by), Ordering::SeqCst);
    }

    pub fn set(&self, at: UnixMicros) {
        self.0.store(at, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMicros {
        self.0.load(Ordering::SeqCst)
    }
}

/// The wall clock plus an offset that only grows: `treasuryd demo`'s, which skips ahead to a
/// deal's timer or a session's cut-off instead of waiting days for it.
#[derive(Debug, Default)]
pub struct SkippingClock {
    ahead: AtomicI64,
}

impl SkippingClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Moves the clock forward to `at`; never back.
    pub fn skip_to(&self, at: UnixMicros) {
        let behind = at - self.now();
        if behind > 0 {
            self.ahead.fetch_add(behind, Ordering::SeqCst);
        }
    }
}

impl Clock for SkippingClock {
    fn now(&self) -> UnixMicros {
        SystemClock
            .now()
            .saturating_add(self.ahead.load(Ordering::SeqCst))
    }
}

fn micros(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipping_clock_moves_forward_only() {
        let clock = SkippingClock::new();
        let start = clock.now();
        clock.skip_to(start + 3 * 86_400_000_000);
        let skipped = clock.now();
        assert!(
            skipped >= start + 3 * 86_400_000_000,
            "{skipped} vs {start}"
        );
        clock.skip_to(start);
        assert!(clock.now() >= skipped, "skipping back moved the clock back");
    }

    #[test]
    fn a_manual_clock_stands_still_until_moved() {
        let clock = ManualClock::starting_at(1_000);
        assert_eq!(clock.now(), 1_000);
        clock.advance(std::time::Duration::from_millis(2));
        assert_eq!(clock.now(), 3_000);
        clock.set(7);
        assert_eq!(clock.now(), 7);
    }
}
