//! The clock: "now" at the precision both databases store (microseconds),
//! and the grains that buckets, series and rollups share.

use chrono::{DateTime, Duration, DurationRound, NaiveDateTime, Utc};

/// Now, truncated to microseconds so that answers equal stored rows and
/// range bounds compare like stored values.
pub fn now() -> NaiveDateTime {
    micros(Utc::now())
}

/// Now as an instant in UTC (for Unix times, lags and token claims).
pub fn now_utc() -> DateTime<Utc> {
    now().and_utc()
}

/// Truncates to microseconds, as both databases store timestamps.
pub fn micros(ts: DateTime<Utc>) -> NaiveDateTime {
    let ts = ts.naive_utc();
    ts - Duration::nanoseconds(i64::from(ts.and_utc().timestamp_subsec_nanos() % 1000))
}

/// Midnight UTC of today.
pub fn today_start() -> NaiveDateTime {
    Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
}

pub fn trunc(ts: NaiveDateTime, step: Duration) -> NaiveDateTime {
    ts.and_utc()
        .duration_trunc(step)
        .map_or(ts, |t| t.naive_utc())
}

/// `trunc` over a run of timestamps, reusing the last bucket while they
/// stay in it: a group's rows mostly share their minute and hour, and the
/// calendar arithmetic was a visible share of a batch's cost.
pub struct Truncator {
    step: Duration,
    last: Option<(NaiveDateTime, NaiveDateTime)>,
}

impl Truncator {
    pub fn new(step: Duration) -> Self {
        Truncator { step, last: None }
    }

    pub fn trunc(&mut self, ts: NaiveDateTime) -> NaiveDateTime {
        if let Some((start, end)) = self.last
            && start <= ts
            && ts < end
        {
            return start;
        }
        let start = trunc(ts, self.step);
        self.last = Some((start, start + self.step));
        start
    }
}

/// The first bucket boundary at or after `ts`.
pub fn ceil(ts: NaiveDateTime, step: Duration) -> NaiveDateTime {
    let t = trunc(ts, step);
    if t == ts { t } else { t + step }
}

/// A bucket width: of time series, and of the stored counters (minute and
/// hour; a day is read from hours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grain {
    Minute,
    Hour,
    Day,
}

impl Grain {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "minute" => Some(Grain::Minute),
            "hour" => Some(Grain::Hour),
            "day" => Some(Grain::Day),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Grain::Minute => "minute",
            Grain::Hour => "hour",
            Grain::Day => "day",
        }
    }

    pub fn step(self) -> Duration {
        match self {
            Grain::Minute => Duration::minutes(1),
            Grain::Hour => Duration::hours(1),
            Grain::Day => Duration::days(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_down_and_up() {
        let t =
            NaiveDateTime::parse_from_str("2026-01-02 03:04:05.5", "%Y-%m-%d %H:%M:%S%.f").unwrap();
        let m = Duration::minutes(1);
        assert_eq!(trunc(t, m).to_string(), "2026-01-02 03:04:00");
        assert_eq!(ceil(t, m).to_string(), "2026-01-02 03:05:00");
        assert_eq!(ceil(trunc(t, m), m), trunc(t, m));
    }

    #[test]
    fn a_truncator_agrees_with_trunc_across_boundaries_and_back() {
        let start =
            NaiveDateTime::parse_from_str("2026-01-02 03:58:59", "%Y-%m-%d %H:%M:%S").unwrap();
        // Forward over minute and hour boundaries, then back in time.
        let offsets = [
            0, 500, 1_000, 1_001, 61_000, 59_999, 3_600_000, -1, -120_000, 1_000,
        ];
        for step in [Duration::minutes(1), Duration::hours(1)] {
            let mut bucket = Truncator::new(step);
            for ms in offsets {
                let ts = start + Duration::milliseconds(ms);
                assert_eq!(bucket.trunc(ts), trunc(ts, step), "{ts} by {step}");
            }
        }
    }

    #[test]
    fn now_has_microsecond_precision() {
        assert_eq!(now().and_utc().timestamp_subsec_nanos() % 1000, 0);
        for g in [Grain::Minute, Grain::Hour, Grain::Day] {
            assert_eq!(Grain::parse(g.name()), Some(g));
        }
        assert_eq!(Grain::parse("week"), None);
    }
}
