//! Arrival generations of the `event_id` key table (Postgres): a key is
//! written into the month it arrives in, so retention drops a whole month
//! of keys instead of deleting them one by one. The primary key is
//! `(event_id, gen)`; the lookup before every write reads all generations,
//! and a retry racing its original across a boundary is caught by the copy
//! written into the previous generation during a generation's first hour.
//!
//! A month, not a week: the lookup probes every generation's index, and
//! with 13 weekly generations (90 days) single events that carry an
//! `event_id` ran at 83–87% of the rate with one; with 4 they ran at
//! 107% (noise). Keys outlive their rows by up to a month.

use chrono::{Duration, NaiveDateTime};

use crate::config::PartitionInterval;

pub const TABLE: &str = "platform_analytics_event_keys";

/// The width of a generation, as the partition job names it.
pub const SPAN: PartitionInterval = PartitionInterval::Month;

/// How long after a boundary keys are also written into the previous
/// generation: far longer than a group stays uncommitted (milliseconds; an
/// hour would be a stuck database) and than two servers' clocks differ.
const OVERLAP: Duration = Duration::hours(1);

/// The generation a key written at `at` belongs to.
pub fn current(at: NaiveDateTime) -> NaiveDateTime {
    SPAN.floor(at)
}

/// The generations a key written at `at` goes into: its own, and the one
/// before while the overlap after a boundary lasts.
pub fn targets(at: NaiveDateTime) -> Vec<NaiveDateTime> {
    let this = current(at);
    let before = current(at - OVERLAP);
    if before == this {
        vec![this]
    } else {
        vec![this, before]
    }
}

/// The generations the partition job keeps ready: this one and the next.
pub fn wanted(at: NaiveDateTime) -> Vec<NaiveDateTime> {
    let this = current(at);
    vec![this, SPAN.next(this)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn a_key_goes_into_its_month_and_the_previous_one_in_the_first_hour() {
        assert_eq!(
            targets(t("2026-12-02 17:45:10")),
            [t("2026-12-01 00:00:00")]
        );
        assert_eq!(
            targets(t("2026-12-01 00:59:59")),
            [t("2026-12-01 00:00:00"), t("2026-11-01 00:00:00")]
        );
        assert_eq!(
            targets(t("2026-12-01 01:00:00")),
            [t("2026-12-01 00:00:00")]
        );
        assert_eq!(
            targets(t("2027-01-01 00:30:00")),
            [t("2027-01-01 00:00:00"), t("2026-12-01 00:00:00")]
        );
        assert_eq!(
            targets(t("2026-11-30 23:59:59")),
            [t("2026-11-01 00:00:00")]
        );
        assert_eq!(
            wanted(t("2026-12-31 23:00:00")),
            [t("2026-12-01 00:00:00"), t("2027-01-01 00:00:00")]
        );
    }
}
