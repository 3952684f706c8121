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

/// The start of the day that contains `now`, in `zone`, as Unix microseconds. On a day whose
/// midnight a clock change skips, the day starts at the first local time that exists.
pub fn day_start(now: UnixMicros, zone: chrono_tz::Tz) -> UnixMicros {
    let Some(utc) = chrono::DateTime::from_timestamp_micros(now) else {
        return now;
    };
    local_midnight(utc.with_timezone(&zone).date_naive(), zone).unwrap_or(now)
}

/// The start of the calendar month that contains `now`, in `zone`.
pub fn month_start(now: UnixMicros, zone: chrono_tz::Tz) -> UnixMicros {
    use chrono::Datelike;
    let Some(utc) = chrono::DateTime::from_timestamp_micros(now) else {
        return now;
    };
    let date = utc.with_timezone(&zone).date_naive();
    date.with_day(1)
        .and_then(|first| local_midnight(first, zone))
        .unwrap_or(now)
}

fn local_midnight(date: chrono::NaiveDate, zone: chrono_tz::Tz) -> Option<UnixMicros> {
    use chrono::{NaiveTime, TimeZone};
    (0..24 * 60).step_by(15).find_map(|minutes| {
        let time = NaiveTime::MIN + chrono::Duration::minutes(minutes);
        zone.from_local_datetime(&date.and_time(time))
            .earliest()
            .map(|start| start.timestamp_micros())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> UnixMicros {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_micros()
    }

    #[test]
    fn the_day_starts_at_local_midnight() {
        let tz: chrono_tz::Tz = "Asia/Ulaanbaatar".parse().unwrap();
        // 2026-11-23 02:00 UTC is 10:00 in Ulaanbaatar (UTC+8): the day began 2026-11-22 16:00 UTC.
        let start = day_start(at("2026-11-23T02:00:00Z"), tz);
        assert_eq!(start, at("2026-11-22T16:00:00Z"));
    }

    #[test]
    fn a_day_whose_midnight_is_skipped_starts_when_the_clock_resumes() {
        // Santiago moved from 00:00 to 01:00 on 2022-09-11.
        let tz: chrono_tz::Tz = "America/Santiago".parse().unwrap();
        let start = day_start(at("2022-09-11T18:00:00Z"), tz);
        assert_eq!(start, at("2022-09-11T04:00:00Z"));
    }

    #[test]
    fn the_month_starts_at_local_midnight_of_its_first_day() {
        let tz: chrono_tz::Tz = "Europe/Warsaw".parse().unwrap();
        // 2026-12-01 00:00 in Warsaw (UTC+1) is 2026-11-30 23:00 UTC.
        assert_eq!(
            month_start(at("2026-12-06T12:00:00Z"), tz),
            at("2026-11-30T23:00:00Z")
        );
        // Still November in Warsaw until 23:00 UTC.
        assert_eq!(
            month_start(at("2026-11-30T22:59:00Z"), tz),
            at("2026-10-31T23:00:00Z")
        );
        assert_eq!(
            month_start(at("2026-03-15T00:00:00Z"), chrono_tz::UTC),
            at("2026-03-01T00:00:00Z")
        );
    }

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
