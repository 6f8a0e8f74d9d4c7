//! Request bodies and query strings of the analytics API, and how each
//! parses into the domain's values.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::analytics::domain::{
    EventFilter, Limits, MetricFilter, Page, api_key_id, filter, metric_value, opt_text, text,
    user_id,
};
use crate::analytics::export::{Export, Format, Rows};
use crate::analytics::{Invalid, MetricType, NewEvent, NewMetric};

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EventIn {
    #[schema(example = "user_login", max_length = 100)]
    pub event_type: String,
    /// Absent or null is stored as `{}`.
    #[serde(default, deserialize_with = "crate::http::bounded::object")]
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
    #[serde(default, deserialize_with = "crate::http::bounded::object")]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricQuery {
    pub metric_name: Option<String>,
    pub service_name: Option<String>,
    pub user_id: Option<i64>,
    pub endpoint: Option<String>,
    pub metric_type: Option<String>,
    /// Only rows ingested with this managed API key.
    pub api_key_id: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    pub event_type: Option<String>,
    pub user_id: Option<i64>,
    pub session_id: Option<String>,
    /// Only events ingested with this managed API key.
    pub api_key_id: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// RFC 3339, inclusive.
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339, exclusive.
    pub to: Option<DateTime<Utc>>,
    /// 1..=1000, default 100.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `ndjson` (default) or `csv`.
    pub format: Option<String>,
    /// RFC 3339, inclusive.
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339, exclusive.
    pub to: Option<DateTime<Utc>>,
    /// Resuming: only rows after this id (the last one received).
    pub after_id: Option<i64>,
    /// Resuming: the first answer's `X-Export-Through-Id`, so the rows are
    /// the set that answer counted.
    pub through_id: Option<i64>,
}

impl ExportQuery {
    pub fn parse(self, rows: Rows) -> Result<Export, Invalid> {
        Export::new(
            rows,
            Format::parse(self.format.as_deref())?,
            self.from,
            self.to,
            self.after_id,
            self.through_id,
        )
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UniquesQuery {
    /// RFC 3339, inclusive; default 24 hours before `to`.
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339, exclusive; default now. At most 366 days after `from`.
    pub to: Option<DateTime<Utc>>,
    /// Only this event type.
    pub event_type: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FunnelQuery {
    /// 2 to 10 event types, comma-separated, in order (`signup,activate,pay`).
    pub steps: String,
    /// The time every step must fall within, from the first; default 86400.
    pub within_seconds: Option<i64>,
    /// RFC 3339, inclusive; default 24 hours before `to`.
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339, exclusive; default now.
    pub to: Option<DateTime<Utc>>,
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

impl EventIn {
    pub fn parse(self, limits: &Limits) -> Result<NewEvent, Invalid> {
        // Fields are checked in this order, so the first problem is reported.
        Ok(NewEvent {
            event_type: text("event_type", self.event_type, 100, true)?,
            session_id: opt_text("session_id", self.session_id, 255)?,
            event_id: self
                .event_id
                .map(|id| text("event_id", id, 128, true))
                .transpose()?,
            user_id: user_id(self.user_id)?,
            event_data: limits.object("event_data", self.event_data)?,
            timestamp: limits.timestamp(self.timestamp)?,
            ip_address: None,
            user_agent: None,
            api_key_id: None,
        })
    }
}

impl MetricIn {
    pub fn parse(self, limits: &Limits) -> Result<NewMetric, Invalid> {
        Ok(NewMetric {
            metric_name: text("metric_name", self.metric_name, 100, true)?,
            metric_value: metric_value(self.metric_value)?,
            metric_type: MetricType::parse(self.metric_type.as_deref().unwrap_or("counter"))?,
            service_name: opt_text("service_name", self.service_name, 100)?,
            endpoint: opt_text("endpoint", self.endpoint, 255)?,
            user_id: user_id(self.user_id)?,
            labels: limits.object("labels", self.labels)?,
            timestamp: limits.timestamp(self.timestamp)?,
            api_key_id: None,
        })
    }
}

impl MetricQuery {
    pub fn parse(self) -> Result<MetricFilter, Invalid> {
        Ok(MetricFilter {
            metric_name: filter("metric_name", self.metric_name, 100)?,
            service_name: filter("service_name", self.service_name, 100)?,
            endpoint: filter("endpoint", self.endpoint, 255)?,
            metric_type: self
                .metric_type
                .as_deref()
                .map(MetricType::parse)
                .transpose()?,
            user_id: user_id(self.user_id)?,
            api_key_id: api_key_id(self.api_key_id)?,
        })
    }
}

impl EventQuery {
    pub fn parse(self) -> Result<EventFilter, Invalid> {
        Ok(EventFilter {
            event_type: filter("event_type", self.event_type, 100)?,
            session_id: filter("session_id", self.session_id, 255)?,
            user_id: user_id(self.user_id)?,
            api_key_id: api_key_id(self.api_key_id)?,
        })
    }
}

impl PageQuery {
    pub fn parse(self) -> Result<Page, Invalid> {
        Page::parse(self.from, self.to, self.limit, self.cursor.as_deref())
    }
}
