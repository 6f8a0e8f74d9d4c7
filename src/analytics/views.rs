//! The shapes analytics answers in: stored rows as clients see them
//! (never the rows themselves), lists, aggregates and reports.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{Event, Metric};

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
    /// The managed API key that ingested it; absent for configured keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<i32>,
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
    /// The managed API key that ingested it; absent for configured keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<i32>,
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
    /// The users' `cost_usd` metrics plus their `tokens_used` priced by
    /// model, as `/analytics/costs` counts them, in the window.
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

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    #[schema(example = "Created 2 metrics successfully")]
    pub message: String,
    pub count: usize,
    /// Stored ids, in request order.
    pub ids: Vec<i64>,
}

impl From<&Event> for EventResponse {
    fn from(e: &Event) -> Self {
        EventResponse {
            id: e.id,
            event_type: e.event_type.clone(),
            event_data: e.event_data.clone(),
            user_id: e.user_id,
            session_id: e.session_id.clone(),
            event_id: e.event_id.clone(),
            timestamp: e.timestamp.and_utc(),
            api_key_id: e.api_key_id,
        }
    }
}

impl From<&Metric> for MetricResponse {
    fn from(m: &Metric) -> Self {
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
            api_key_id: m.api_key_id,
        }
    }
}

impl MetricList {
    pub fn new(rows: &[Metric], next_cursor: Option<String>) -> Self {
        MetricList {
            count: rows.len(),
            metrics: rows.iter().map(MetricResponse::from).collect(),
            next_cursor,
        }
    }
}

impl EventList {
    pub fn new(rows: &[Event], next_cursor: Option<String>) -> Self {
        EventList {
            count: rows.len(),
            events: rows.iter().map(EventResponse::from).collect(),
            next_cursor,
        }
    }
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

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRow {
    pub user_id: i32,
    pub api_calls_count: i64,
    pub tokens_used: i64,
    pub cost_usd: f64,
    /// Start of the day or month, UTC.
    pub date: DateTime<Utc>,
    pub period_type: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CostSummary {
    pub total_cost_usd: f64,
    pub total_tokens: i64,
    pub total_api_calls: i64,
    pub period_days: i64,
    pub cost_per_token: f64,
    pub cost_per_api_call: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserCost {
    pub user_id: i32,
    pub total_cost: f64,
    pub total_tokens: i64,
    pub total_api_calls: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Period {
    pub start_date: DateTime<Utc>,
    pub end_date: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CostsResponse {
    pub summary: CostSummary,
    pub user_breakdown: Vec<UserCost>,
    pub period: Period,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CostGroups {
    /// Each `{<service|model|day>, total_cost, total_tokens, total_api_calls}`.
    #[schema(value_type = Vec<Object>)]
    pub groups: Vec<Value>,
}

/// Distinct users of a window (`user_id` set), overall and per event type.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uniques {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub unique_users: i64,
    /// Most users first.
    pub by_event_type: Vec<TypeUniques>,
    /// Always true: counted from the stored events, not estimated.
    pub exact: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TypeUniques {
    pub event_type: String,
    pub unique_users: i64,
}

/// Users who reached each step, in order, with every step within
/// `within_seconds` of their first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Funnel {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub within_seconds: i64,
    pub steps: Vec<FunnelStep>,
    /// Always true: computed from the stored events, not estimated.
    pub exact: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FunnelStep {
    pub event_type: String,
    /// Users who reached this step (and so every one before it).
    pub users: i64,
    /// `users` over the first step's users (0 when nobody started).
    pub of_first: f64,
}
