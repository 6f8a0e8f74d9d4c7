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
    fn now_has_microsecond_precision() {
        assert_eq!(now().and_utc().timestamp_subsec_nanos() % 1000, 0);
        for g in [Grain::Minute, Grain::Hour, Grain::Day] {
            assert_eq!(Grain::parse(g.name()), Some(g));
        }
        assert_eq!(Grain::parse("week"), None);
    }
}
