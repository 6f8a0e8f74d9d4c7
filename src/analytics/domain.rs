//! The values analytics works with, parsed from input before they reach a
//! service: new rows, filters, windows and pages.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde_json::{Map, Value};

use super::Invalid;
use crate::config::AnalyticsSettings;
use crate::json::{Unstorable, check_storable};
use crate::time::{micros, now};

/// A stored event (the row as committed, with its id).
pub use crate::entity::events::Model as Event;
/// A stored metric.
pub use crate::entity::metrics::Model as Metric;

pub const MAX_HOURS: i64 = 8784;
pub const MAX_DAYS: i64 = 3660;
/// Bound on metric values, so sums over billions of rows (counter buckets,
/// usage) stay finite: one huge value would poison its bucket for good.
pub const MAX_METRIC_VALUE: f64 = 1e15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        match value {
            "counter" => Ok(MetricType::Counter),
            "gauge" => Ok(MetricType::Gauge),
            "histogram" => Ok(MetricType::Histogram),
            _ => Err(Invalid::new(
                "metric_type must be one of counter, gauge, histogram",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// An event to store. Its client (IP, User-Agent) is stamped by the caller.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: String,
    pub event_data: Value,
    pub user_id: Option<i32>,
    pub session_id: Option<String>,
    /// Client-chosen id: a retry with the same id is stored once.
    pub event_id: Option<String>,
    pub timestamp: NaiveDateTime,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    /// The managed API key that sent it, stamped by the caller.
    pub api_key_id: Option<i32>,
}

#[derive(Debug, Clone)]
pub struct NewMetric {
    pub metric_name: String,
    pub metric_value: f64,
    pub metric_type: MetricType,
    pub user_id: Option<i32>,
    pub service_name: Option<String>,
    pub endpoint: Option<String>,
    pub labels: Value,
    pub timestamp: NaiveDateTime,
    /// The managed API key that sent it, stamped by the caller.
    pub api_key_id: Option<i32>,
}

/// What new rows may hold: object sizes and the accepted time window.
pub struct Limits {
    pub json_max_bytes: usize,
    pub oldest: NaiveDateTime,
    pub newest: NaiveDateTime,
    /// When the request was read: the time of its rows that carry none.
    pub received: NaiveDateTime,
}

impl Limits {
    pub fn now(settings: &AnalyticsSettings) -> Self {
        let now = now();
        Limits {
            json_max_bytes: settings.json_max_bytes,
            // One day inside the horizon: an accepted row is not deleted by
            // the next retention run before reads and rollups have seen it.
            oldest: now - Duration::days(i64::from(settings.retention_days.max(2) - 1)),
            newest: now
                + Duration::from_std(settings.clock_skew).unwrap_or_else(|_| Duration::zero()),
            received: now,
        }
    }

    /// A client timestamp inside the window, or the request's when absent.
    pub fn timestamp(&self, value: Option<DateTime<Utc>>) -> Result<NaiveDateTime, Invalid> {
        let Some(ts) = value else {
            return Ok(self.received);
        };
        let ts = micros(ts);
        if ts < self.oldest || ts > self.newest {
            return Err(Invalid::new(
                "timestamp is outside the accepted window (retention horizon to clock skew)",
            ));
        }
        Ok(ts)
    }

    /// A JSON object within the size limit (absent is `{}`).
    pub fn object(&self, field: &str, value: Option<Map<String, Value>>) -> Result<Value, Invalid> {
        let value = Value::Object(value.unwrap_or_default());
        // Counted, not written out: most batch items carry `{}` or a few keys.
        let mut size = ByteCount(0);
        if serde_json::to_writer(&mut size, &value).is_err() {
            size.0 = usize::MAX;
        }
        if size.0 > self.json_max_bytes {
            return Err(Invalid::new(format!(
                "{field} must be at most {} bytes of JSON",
                self.json_max_bytes
            )));
        }
        match check_storable(&value) {
            Err(Unstorable::Nul) => Err(Invalid::new(format!(
                "{field} must not contain NUL characters"
            ))),
            Err(Unstorable::HugeNumber) => Err(Invalid::new(format!(
                "{field} numbers must be within ±1e100"
            ))),
            Ok(()) => Ok(value),
        }
    }
}

/// The length of what is written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Text of at most `max` characters, free of NUL; `required` refuses blank.
pub fn text(field: &str, value: String, max: usize, required: bool) -> Result<String, Invalid> {
    if required && value.trim().is_empty() {
        return Err(Invalid::new(format!("{field} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(Invalid::new(format!(
            "{field} must be at most {max} characters"
        )));
    }
    if value.contains('\0') {
        return Err(Invalid::new(format!(
            "{field} must not contain NUL characters"
        )));
    }
    Ok(value)
}

pub fn opt_text(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, Invalid> {
    value.map(|v| text(field, v, max, false)).transpose()
}

/// A filter value: at most `max` characters.
pub fn filter(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, Invalid> {
    if value.as_ref().is_some_and(|v| v.chars().count() > max) {
        return Err(Invalid::new(format!(
            "{field} must be at most {max} characters"
        )));
    }
    Ok(value)
}

pub fn user_id(value: Option<i64>) -> Result<Option<i32>, Invalid> {
    row_id("user_id", value)
}

/// A positive 32-bit id, as the tables store them.
fn row_id(field: &str, value: Option<i64>) -> Result<Option<i32>, Invalid> {
    match value {
        None => Ok(None),
        Some(v) if (1..=i64::from(i32::MAX)).contains(&v) => Ok(Some(v as i32)),
        Some(_) => Err(Invalid::new(format!(
            "{field} must be between 1 and 2147483647"
        ))),
    }
}

pub fn api_key_id(value: Option<i64>) -> Result<Option<i32>, Invalid> {
    row_id("api_key_id", value)
}

pub fn metric_value(value: f64) -> Result<f64, Invalid> {
    if !value.is_finite() || value.abs() > MAX_METRIC_VALUE {
        return Err(Invalid::new(
            "metric_value must be a finite number within ±1e15",
        ));
    }
    Ok(value)
}

/// `hours` of a look-back window: 1..=8784 (a leap year), default 24.
pub fn hours(value: Option<i64>) -> Result<i64, Invalid> {
    let h = value.unwrap_or(24);
    if !(1..=MAX_HOURS).contains(&h) {
        return Err(Invalid::new(format!(
            "hours must be between 1 and {MAX_HOURS}"
        )));
    }
    Ok(h)
}

/// `days` of a usage or cost report: 1..=3660, default 30.
pub fn days(value: Option<i64>) -> Result<i64, Invalid> {
    let d = value.unwrap_or(30);
    if !(1..=MAX_DAYS).contains(&d) {
        return Err(Invalid::new(format!(
            "days must be between 1 and {MAX_DAYS}"
        )));
    }
    Ok(d)
}

/// A position in a newest-first list: the last row's (timestamp, id).
pub fn encode_cursor(ts: NaiveDateTime, id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", ts.and_utc().timestamp_micros()))
}

pub fn decode_cursor(cursor: &str) -> Result<(NaiveDateTime, i64), Invalid> {
    let bad = || Invalid::new("cursor is not valid");
    if cursor.len() > 100 {
        return Err(bad());
    }
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (ts, id) = raw.split_once(':').ok_or_else(bad)?;
    let ts = DateTime::from_timestamp_micros(ts.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok((ts.naive_utc(), id.parse().map_err(|_| bad())?))
}

/// One page of a newest-first list: a window [from, to), a size, and where
/// the previous page ended. Every list takes one.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub from: Option<NaiveDateTime>,
    pub to: Option<NaiveDateTime>,
    pub limit: u64,
    pub cursor: Option<(NaiveDateTime, i64)>,
}

impl Page {
    pub fn parse(
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> Result<Self, Invalid> {
        let l = limit.unwrap_or(100);
        if !(1..=1000).contains(&l) {
            return Err(Invalid::new("limit must be between 1 and 1000"));
        }
        if from.zip(to).is_some_and(|(f, t)| f > t) {
            return Err(Invalid::new("from must not be after to"));
        }
        Ok(Page {
            from: from.map(micros),
            to: to.map(micros),
            limit: l as u64,
            cursor: cursor.map(decode_cursor).transpose()?,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub event_type: Option<String>,
    pub user_id: Option<i32>,
    pub session_id: Option<String>,
    pub api_key_id: Option<i32>,
}

#[derive(Debug, Clone, Default)]
pub struct MetricFilter {
    pub metric_name: Option<String>,
    pub service_name: Option<String>,
    pub user_id: Option<i32>,
    pub endpoint: Option<String>,
    pub metric_type: Option<MetricType>,
    pub api_key_id: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Daily,
    Monthly,
}

impl Period {
    pub fn parse(value: Option<&str>) -> Result<Self, Invalid> {
        match value.unwrap_or("daily") {
            "daily" => Ok(Period::Daily),
            "monthly" => Ok(Period::Monthly),
            _ => Err(Invalid::new("period_type must be daily or monthly")),
        }
    }

    /// As stored in `period_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Monthly => "monthly",
        }
    }
}

/// How `/analytics/costs` may group its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Service,
    Model,
    Day,
}

impl GroupBy {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        match value {
            "service" => Ok(GroupBy::Service),
            "model" => Ok(GroupBy::Model),
            "day" => Ok(GroupBy::Day),
            _ => Err(Invalid::new("group_by must be service, model or day")),
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            GroupBy::Service => "service",
            GroupBy::Model => "model",
            GroupBy::Day => "day",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let ts =
            NaiveDateTime::parse_from_str("2026-01-02 03:04:05.123456", "%Y-%m-%d %H:%M:%S%.f")
                .unwrap();
        let c = encode_cursor(ts, 42);
        assert_eq!(decode_cursor(&c).unwrap(), (ts, 42));
        for bad in ["", "!!", "bm90LWEtY3Vyc29y", &"A".repeat(200)] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bounds() {
        assert!(hours(Some(0)).is_err());
        assert!(hours(Some(MAX_HOURS + 1)).is_err());
        assert_eq!(hours(None).unwrap(), 24);
        let page = |l| Page::parse(None, None, Some(l), None);
        assert!(page(0).is_err());
        assert!(page(1001).is_err());
        assert_eq!(page(1000).unwrap().limit, 1000);
        assert!(days(Some(0)).is_err());
        assert_eq!(days(None).unwrap(), 30);
    }

    #[test]
    fn objects_are_measured_as_stored_and_rows_without_time_take_the_requests() {
        let received =
            NaiveDateTime::parse_from_str("2026-01-02 03:04:05", "%Y-%m-%d %H:%M:%S").unwrap();
        let map = |v: serde_json::Value| v.as_object().cloned();
        let doc = serde_json::json!({"model": "gpt", "n": [1, 2.5], "s": "é\""});
        let size = serde_json::to_vec(&doc).unwrap().len();
        let limits = |max| Limits {
            json_max_bytes: max,
            oldest: received - Duration::days(1),
            newest: received,
            received,
        };
        assert_eq!(
            limits(size).object("labels", map(doc.clone())).unwrap(),
            doc
        );
        let over = limits(size - 1).object("labels", map(doc)).unwrap_err();
        assert_eq!(
            over.0,
            format!("labels must be at most {} bytes of JSON", size - 1)
        );
        assert_eq!(
            limits(2).object("labels", None).unwrap(),
            serde_json::json!({})
        );
        assert_eq!(limits(2).timestamp(None).unwrap(), received);
    }

    #[test]
    fn sets_parse_to_their_variants() {
        assert_eq!(MetricType::parse("gauge").unwrap().as_str(), "gauge");
        assert!(MetricType::parse("sum").is_err());
        assert_eq!(Period::parse(None).unwrap(), Period::Daily);
        assert!(Period::parse(Some("weekly")).is_err());
        assert_eq!(GroupBy::parse("model").unwrap().key(), "model");
        assert!(GroupBy::parse("user").is_err());
    }
}
