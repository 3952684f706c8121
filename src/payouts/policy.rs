//! Policy that decides whether a queued chunk may be signed now: the rollout guardrail (a daily
//! volume share per phase, the day counted in the network's time zone) and the per-account
//! destination allowlist. A chunk a policy holds back stays queued; nothing is dropped.
pub use crate::domain::payouts::RolloutPhase;

use crate::domain::UnixMicros;
use chrono::{NaiveTime, TimeZone};

crate::domain::stored_as_text!(RolloutPhase);

impl RolloutPhase {
    pub const ALL: [RolloutPhase; 3] = [
        RolloutPhase::Pilot,
        RolloutPhase::Canary,
        RolloutPhase::Full,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Pilot => "pilot",
            RolloutPhase::Canary => "canary",
            RolloutPhase::Full => "full",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }

    pub fn percent(self) -> i128 {
        match self {
            RolloutPhase::Pilot => 10,
            RolloutPhase::Canary => 30,
            RolloutPhase::Full => 100,
        }
    }

    /// What may be sent per day in this phase: the phase's share of `target`, rounded down.
    pub fn allowance(self, target: i128) -> i128 {
        target / 100 * self.percent() + target % 100 * self.percent() / 100
    }
}

/// The start of the day that contains `now`, in `zone`, as Unix microseconds. On a day whose
/// midnight a clock change skips, the day starts at the first local time that exists.
pub fn day_start(now: UnixMicros, zone: chrono_tz::Tz) -> UnixMicros {
    let Some(utc) = chrono::DateTime::from_timestamp_micros(now) else {
        return now;
    };
    let date = utc.with_timezone(&zone).date_naive();
    for minutes in (0..24 * 60).step_by(15) {
        let time = NaiveTime::MIN + chrono::Duration::minutes(minutes);
        if let Some(start) = zone.from_local_datetime(&date.and_time(time)).earliest() {
            return start.timestamp_micros();
        }
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowance_is_the_phase_share_rounded_down() {
        assert_eq!(RolloutPhase::Pilot.allowance(1_000_000), 100_000);
        assert_eq!(RolloutPhase::Canary.allowance(1_000_000), 300_000);
        assert_eq!(RolloutPhase::Full.allowance(1_000_000), 1_000_000);
        assert_eq!(RolloutPhase::Pilot.allowance(999), 99);
        assert_eq!(RolloutPhase::Canary.allowance(999), 299);
        // No overflow near the top of the range.
        let big = i128::MAX / 2;
        assert!(RolloutPhase::Canary.allowance(big) <= big / 100 * 30 + 30);
    }

    #[test]
    fn the_day_starts_at_local_midnight() {
        let tz: chrono_tz::Tz = "Asia/Ulaanbaatar".parse().unwrap();
        // 2026-11-23 02:00 UTC is 10:00 in Ulaanbaatar (UTC+8): the day began 2026-11-22 16:00 UTC.
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-23T02:00:00Z").unwrap();
        let start = day_start(now.timestamp_micros(), tz);
        let expected = chrono::DateTime::parse_from_rfc3339("2026-11-22T16:00:00Z").unwrap();
        assert_eq!(start, expected.timestamp_micros());
    }

    #[test]
    fn a_day_whose_midnight_is_skipped_starts_when_the_clock_resumes() {
        // Santiago moved from 00:00 to 01:00 on 2022-09-11.
        let tz: chrono_tz::Tz = "America/Santiago".parse().unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2022-09-11T18:00:00Z").unwrap();
        let start = day_start(now.timestamp_micros(), tz);
        let expected = chrono::DateTime::parse_from_rfc3339("2022-09-11T04:00:00Z").unwrap();
        assert_eq!(start, expected.timestamp_micros());
    }
}
