//! When a trust pair's session closes: its local cut-off time in its IANA timezone, as an
//! instant. Across DST changes the wall-clock time is kept: a cut-off that falls in the
//! spring-forward gap (it does not exist that day) closes at the first instant after the gap;
//! one that occurs twice in the autumn closes at the first occurrence.

use crate::domain::UnixMicros;
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// The instant of `date`'s cut-off at local `time` in `tz`.
pub fn cutoff_on(tz: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let local = date.and_time(time);
    // A gap is at most a few hours; step forward a minute at a time to its end.
    for minutes in 0..=24 * 60 {
        let candidate = local + Duration::minutes(minutes);
        match tz.from_local_datetime(&candidate) {
            chrono::LocalResult::Single(t) => return t.with_timezone(&Utc),
            chrono::LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
            chrono::LocalResult::None => {}
        }
    }
    // No zone has a day-long gap; fall back to reading the wall time as UTC.
    Utc.from_utc_datetime(&local)
}

/// The business date (local) whose cut-off is the first one strictly after `after`, and that
/// cut-off.
pub fn next_cutoff(tz: Tz, time: NaiveTime, after: UnixMicros) -> (NaiveDate, UnixMicros) {
    let after_utc = DateTime::<Utc>::from_timestamp_micros(after).unwrap_or_default();
    let mut date = after_utc.with_timezone(&tz).date_naive() - Duration::days(1);
    loop {
        let at = cutoff_on(tz, date, time).timestamp_micros();
        if at > after {
            return (date, at);
        }
        date = date.succ_opt().unwrap_or(date);
    }
}

pub use crate::domain::trust::parse_cutoff as parse_time;

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> UnixMicros {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_micros()
    }

    fn at(tz: &str, time: &str, after: &str) -> (String, String) {
        let (date, micros) =
            next_cutoff(tz.parse().unwrap(), parse_time(time).unwrap(), utc(after));
        (
            date.to_string(),
            DateTime::<Utc>::from_timestamp_micros(micros)
                .unwrap()
                .to_rfc3339(),
        )
    }

    #[test]
    fn cutoffs_follow_each_zone_across_dst() {
        // Warsaw: CET (+1) in winter, CEST (+2) from 2026-03-29 02:00 to 2026-10-25 03:00.
        assert_eq!(
            at("Europe/Warsaw", "18:00", "2026-03-28T12:00:00Z"),
            ("2026-03-28".into(), "2026-03-28T17:00:00+00:00".into())
        );
        assert_eq!(
            at("Europe/Warsaw", "18:00", "2026-03-28T17:00:00Z"),
            ("2026-03-29".into(), "2026-03-29T16:00:00+00:00".into())
        );
        assert_eq!(
            at("Europe/Warsaw", "18:00", "2026-10-25T00:00:00Z"),
            ("2026-10-25".into(), "2026-10-25T17:00:00+00:00".into())
        );
        // 02:30 does not exist on 2026-03-29 in Warsaw: the clocks jump to 03:00 (01:00 UTC).
        assert_eq!(
            at("Europe/Warsaw", "02:30", "2026-03-28T12:00:00Z"),
            ("2026-03-29".into(), "2026-03-29T01:00:00+00:00".into())
        );
        // 02:30 happens twice on 2026-10-25: the first (CEST, 00:30 UTC).
        assert_eq!(
            at("Europe/Warsaw", "02:30", "2026-10-24T12:00:00Z"),
            ("2026-10-25".into(), "2026-10-25T00:30:00+00:00".into())
        );
        // Ulaanbaatar (+8, no DST) and Seoul (+9, no DST).
        assert_eq!(
            at("Asia/Ulaanbaatar", "17:00", "2026-03-29T08:59:59Z"),
            ("2026-03-29".into(), "2026-03-29T09:00:00+00:00".into())
        );
        assert_eq!(
            at("Asia/Seoul", "23:30", "2026-03-29T14:30:00Z"),
            ("2026-03-30".into(), "2026-03-30T14:30:00+00:00".into())
        );
    }

    #[test]
    fn times_parse_strictly() {
        assert_eq!(parse_time("18:00"), NaiveTime::from_hms_opt(18, 0, 0));
        for bad in ["18", "8:00", "24:00", "18:60", "18:00:00", "ab:cd"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
