//! Request and response bodies of the analytics API, and their validation.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::entity::{events, metrics};
use crate::error::ApiError;

pub const METRIC_TYPES: [&str; 3] = ["counter", "gauge", "histogram"];

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EventIn {
    #[schema(example = "user_login", max_length = 100)]
    pub event_type: String,
    /// Absent or null is stored as `{}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub event_data: Option<Map<String, Value>>,
    pub user_id: Option<i64>,
    #[schema(max_length = 255)]
    pub session_id: Option<String>,
    /// Client-chosen id: a retry with the same id is stored once.
    #[schema(max_length = 128)]
    pub event_id: Option<String>,
    /// Defaults to now; at most `INGEST_CLOCK_SKEW` seconds ahead and no
    /// older than the retention horizon.
    pub timestamp: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MetricIn {
    #[schema(example = "api_calls", max_length = 100)]
    pub metric_name: String,
    #[schema(example = 1.0, minimum = -1e15, maximum = 1e15)]
    pub metric_value: f64,
    /// counter (default), gauge or histogram.
    pub metric_type: Option<String>,
    pub user_id: Option<i64>,
    #[schema(max_length = 100)]
    pub service_name: Option<String>,
    #[schema(max_length = 255)]
    pub endpoint: Option<String>,
    /// Absent or null is stored as `{}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub labels: Option<Map<String, Value>>,
    pub timestamp: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EventBatch {
    pub events: Vec<EventIn>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MetricBatch {
    pub metrics: Vec<MetricIn>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    #[schema(example = "Created 2 metrics successfully")]
    pub message: String,
    pub count: usize,
    /// Stored ids, in request order.
    pub ids: Vec<i64>,
}

impl BatchResponse {
    /// The original's message, plus the count and the ids in request order.
    pub fn new(kind: &str, ids: impl Iterator<Item = i64>) -> Self {
        let ids: Vec<i64> = ids.collect();
        BatchResponse {
            message: format!("Created {} {kind} successfully", ids.len()),
            count: ids.len(),
            ids,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventResponse {
    pub id: i64,
    pub event_type: String,
    #[schema(value_type = Object)]
    pub event_data: Value,
    pub user_id: Option<i32>,
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub timestamp: DateTime<Utc>,
}

impl From<&events::Model> for EventResponse {
    fn from(e: &events::Model) -> Self {
        EventResponse {
            id: e.id,
            event_type: e.event_type.clone(),
            event_data: e.event_data.clone(),
            user_id: e.user_id,
            session_id: e.session_id.clone(),
            event_id: e.event_id.clone(),
            timestamp: e.timestamp.and_utc(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MetricResponse {
    pub id: i64,
    pub metric_name: String,
    pub metric_value: f64,
    pub metric_type: String,
    pub user_id: Option<i32>,
    pub service_name: Option<String>,
    pub endpoint: Option<String>,
    #[schema(value_type = Object)]
    pub labels: Value,
    pub timestamp: DateTime<Utc>,
}

impl From<&metrics::Model> for MetricResponse {
    fn from(m: &metrics::Model) -> Self {
        MetricResponse {
            id: m.id,
            metric_name: m.metric_name.clone(),
            metric_value: m.metric_value,
            metric_type: m.metric_type.clone(),
            user_id: m.user_id,
            service_name: m.service_name.clone(),
            endpoint: m.endpoint.clone(),
            labels: m.labels.clone(),
            timestamp: m.timestamp.and_utc(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MetricList {
    pub metrics: Vec<MetricResponse>,
    pub count: usize,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventResponse>,
    pub count: usize,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TypeCount {
    pub event_type: String,
    pub count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ByType {
    pub event_types: Vec<TypeCount>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Timeseries {
    /// minute, hour or day.
    pub interval: String,
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointCount {
    pub endpoint: String,
    pub count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Dashboard {
    pub hours: u32,
    pub total_events: i64,
    /// Distinct non-null user ids among the window's events.
    pub active_users: i64,
    /// Sum of `api_calls` metrics in the window.
    pub total_api_calls: f64,
    /// Sum of `cost_usd` metrics in the window.
    pub total_cost: f64,
    /// The 5 endpoints with the most metric rows in the window.
    pub top_endpoints: Vec<EndpointCount>,
    /// The 10 newest events in the window.
    pub recent_events: Vec<EventResponse>,
    pub event_types: Vec<TypeCount>,
    /// Hourly event counts across the window.
    pub hourly: Vec<Bucket>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Summary {
    pub total_users: i64,
    pub active_users_24h: i64,
    pub events_24h: i64,
    pub top_event_types: Vec<TypeCount>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricQuery {
    pub metric_name: Option<String>,
    pub service_name: Option<String>,
    pub user_id: Option<i64>,
    pub endpoint: Option<String>,
    pub metric_type: Option<String>,
    /// RFC 3339, inclusive.
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339, exclusive.
    pub to: Option<DateTime<Utc>>,
    /// 1..=1000, default 100.
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    pub event_type: Option<String>,
    pub user_id: Option<i64>,
    pub session_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HoursQuery {
    /// 1..=8784 (a leap year), default 24.
    pub hours: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimeseriesQuery {
    /// minute, hour (default) or day.
    pub interval: Option<String>,
    pub hours: Option<i64>,
    pub event_type: Option<String>,
}

// ------------------------------------------------------------- validation

pub struct Limits {
    pub json_max_bytes: usize,
    pub oldest: NaiveDateTime,
    pub newest: NaiveDateTime,
}

fn text(field: &str, value: &str, max: usize, required: bool) -> Result<(), ApiError> {
    if required && value.trim().is_empty() {
        return Err(ApiError::unprocessable(format!(
            "{field} must not be empty"
        )));
    }
    if value.chars().count() > max {
        return Err(ApiError::unprocessable(format!(
            "{field} must be at most {max} characters"
        )));
    }
    if value.contains('\0') {
        return Err(ApiError::unprocessable(format!(
            "{field} must not contain NUL characters"
        )));
    }
    Ok(())
}

fn opt_text(field: &str, value: &Option<String>, max: usize) -> Result<(), ApiError> {
    value
        .as_deref()
        .map_or(Ok(()), |v| text(field, v, max, false))
}

pub fn user_id(value: Option<i64>) -> Result<Option<i32>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) if (1..=i64::from(i32::MAX)).contains(&v) => Ok(Some(v as i32)),
        Some(_) => Err(ApiError::unprocessable(
            "user_id must be between 1 and 2147483647",
        )),
    }
}

fn json_object(
    field: &str,
    value: Option<Map<String, Value>>,
    max: usize,
) -> Result<Value, ApiError> {
    let value = Value::Object(value.unwrap_or_default());
    let size = serde_json::to_vec(&value).map_or(usize::MAX, |v| v.len());
    if size > max {
        return Err(ApiError::unprocessable(format!(
            "{field} must be at most {max} bytes of JSON"
        )));
    }
    if contains_nul(&value) {
        return Err(ApiError::unprocessable(format!(
            "{field} must not contain NUL characters"
        )));
    }
    if has_huge_number(&value) {
        return Err(ApiError::unprocessable(format!(
            "{field} numbers must be within ±1e100"
        )));
    }
    Ok(value)
}

/// Postgres rejects NUL in text and json; refuse it up front, not at commit.
fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(contains_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// Found by the spec fuzzer: a number near f64's limit is written out in
/// full by the database driver and cannot be read back, so every later list
/// that included the row failed. No analytics value comes near 1e100.
fn has_huge_number(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64().is_some_and(|x| x.abs() > 1e100),
        Value::Array(a) => a.iter().any(has_huge_number),
        Value::Object(o) => o.values().any(has_huge_number),
        _ => false,
    }
}

fn timestamp(value: Option<DateTime<Utc>>, limits: &Limits) -> Result<NaiveDateTime, ApiError> {
    let now = super::ingest::now();
    let Some(ts) = value else { return Ok(now) };
    let ts = super::ingest::micros(ts);
    if ts < limits.oldest || ts > limits.newest {
        return Err(ApiError::unprocessable(
            "timestamp is outside the accepted window (retention horizon to clock skew)",
        ));
    }
    Ok(ts)
}

impl EventIn {
    pub fn validate(self, limits: &Limits) -> Result<events::Model, ApiError> {
        text("event_type", &self.event_type, 100, true)?;
        opt_text("session_id", &self.session_id, 255)?;
        if let Some(id) = &self.event_id {
            text("event_id", id, 128, true)?;
        }
        Ok(events::Model {
            id: 0,
            user_id: user_id(self.user_id)?,
            event_type: self.event_type,
            event_data: json_object("event_data", self.event_data, limits.json_max_bytes)?,
            timestamp: timestamp(self.timestamp, limits)?,
            session_id: self.session_id,
            ip_address: None,
            user_agent: None,
            event_id: self.event_id,
        })
    }
}

pub const MAX_METRIC_VALUE: f64 = 1e15;

impl MetricIn {
    pub fn validate(self, limits: &Limits) -> Result<metrics::Model, ApiError> {
        text("metric_name", &self.metric_name, 100, true)?;
        // Bounded so that sums over billions of rows (rollup buckets, usage)
        // stay finite: one huge value would poison its bucket for good.
        if !self.metric_value.is_finite() || self.metric_value.abs() > MAX_METRIC_VALUE {
            return Err(ApiError::unprocessable(
                "metric_value must be a finite number within ±1e15",
            ));
        }
        let metric_type = self.metric_type.unwrap_or_else(|| "counter".into());
        if !METRIC_TYPES.contains(&metric_type.as_str()) {
            return Err(ApiError::unprocessable(
                "metric_type must be one of counter, gauge, histogram",
            ));
        }
        opt_text("service_name", &self.service_name, 100)?;
        opt_text("endpoint", &self.endpoint, 255)?;
        Ok(metrics::Model {
            id: 0,
            metric_name: self.metric_name,
            metric_value: self.metric_value,
            metric_type,
            user_id: user_id(self.user_id)?,
            service_name: self.service_name,
            endpoint: self.endpoint,
            labels: json_object("labels", self.labels, limits.json_max_bytes)?,
            timestamp: timestamp(self.timestamp, limits)?,
        })
    }
}
