//! Arrival generations of the `event_id` key table (Postgres): a key is
//! written into the week it arrives in, so retention drops a whole week of
//! keys instead of deleting them one by one. The primary key is
//! `(event_id, gen)`; the lookup before every write reads all generations,
//! and a retry racing its original across a week boundary is caught by the
//! copy written into the previous week during a week's first hour.

use chrono::{Datelike, Duration, NaiveDateTime, NaiveTime};

use crate::config::PartitionInterval;

pub const TABLE: &str = "platform_analytics_event_keys";

/// The width of a generation, as the partition job names it.
pub const SPAN: PartitionInterval = PartitionInterval::Week;

/// How long after a boundary keys are also written into the previous
/// generation: far longer than a group stays uncommitted (milliseconds; an
/// hour would be a stuck database) and than two servers' clocks differ.
const OVERLAP: Duration = Duration::hours(1);

/// The generation a key written at `at` belongs to: its week's Monday
/// (Postgres' `date_trunc('week', …)`).
pub fn current(at: NaiveDateTime) -> NaiveDateTime {
    let day = at.date();
    (day - Duration::days(i64::from(day.weekday().num_days_from_monday()))).and_time(NaiveTime::MIN)
}

/// The generations a key written at `at` goes into.
pub fn targets(at: NaiveDateTime) -> Vec<NaiveDateTime> {
    let this = current(at);
    if at < this + OVERLAP {
        vec![this, this - Duration::weeks(1)]
    } else {
        vec![this]
    }
}

/// The generations the partition job keeps ready: this one and the next.
pub fn wanted(at: NaiveDateTime) -> Vec<NaiveDateTime> {
    let this = current(at);
    vec![this, this + Duration::weeks(1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn a_key_goes_into_its_week_and_the_previous_one_in_the_first_hour() {
        // 2026-11-30 is a Monday.
        assert_eq!(
            targets(t("2026-12-02 17:45:10")),
            [t("2026-11-30 00:00:00")]
        );
        assert_eq!(
            targets(t("2026-11-30 00:59:59")),
            [t("2026-11-30 00:00:00"), t("2026-11-23 00:00:00")]
        );
        assert_eq!(
            targets(t("2026-11-30 01:00:00")),
            [t("2026-11-30 00:00:00")]
        );
        assert_eq!(
            targets(t("2026-11-29 23:59:59")),
            [t("2026-11-23 00:00:00")]
        );
        assert_eq!(
            wanted(t("2026-12-06 23:00:00")),
            [t("2026-11-30 00:00:00"), t("2026-12-07 00:00:00")]
        );
    }
}
