//! Read side: keyset-paginated lists and windowed aggregates, bounded and
//! served from indexes on (column, timestamp, id).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};

use super::dto::*;
use super::rollups;
use crate::entity::{events, metrics, users};
use crate::error::ApiError;

pub const MAX_HOURS: i64 = 8784;
const MAX_BUCKETS: i64 = 10_000;

pub fn hours(value: Option<i64>) -> Result<i64, ApiError> {
    let h = value.unwrap_or(24);
    if !(1..=MAX_HOURS).contains(&h) {
        return Err(ApiError::unprocessable(format!(
            "hours must be between 1 and {MAX_HOURS}"
        )));
    }
    Ok(h)
}

pub fn limit(value: Option<i64>) -> Result<u64, ApiError> {
    let l = value.unwrap_or(100);
    if !(1..=1000).contains(&l) {
        return Err(ApiError::unprocessable("limit must be between 1 and 1000"));
    }
    Ok(l as u64)
}

fn check_filter(field: &str, value: &Option<String>, max: usize) -> Result<(), ApiError> {
    if value.as_ref().is_some_and(|v| v.chars().count() > max) {
        return Err(ApiError::unprocessable(format!(
            "{field} must be at most {max} characters"
        )));
    }
    Ok(())
}

/// A position in a newest-first list: the last row's (timestamp, id).
pub fn encode_cursor(ts: NaiveDateTime, id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", ts.and_utc().timestamp_micros()))
}

pub fn decode_cursor(cursor: &str) -> Result<(NaiveDateTime, i64), ApiError> {
    let bad = || ApiError::unprocessable("cursor is not valid");
    if cursor.len() > 100 {
        return Err(bad());
    }
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (ts, id) = raw.split_once(':').ok_or_else(bad)?;
    let ts = DateTime::from_timestamp_micros(ts.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok((ts.naive_utc(), id.parse().map_err(|_| bad())?))
}

fn window(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<(Option<NaiveDateTime>, Option<NaiveDateTime>), ApiError> {
    if from.zip(to).is_some_and(|(f, t)| f > t) {
        return Err(ApiError::unprocessable("from must not be after to"));
    }
    Ok((
        from.map(super::ingest::micros),
        to.map(super::ingest::micros),
    ))
}

fn keyset<C: ColumnTrait>(ts_col: C, id_col: C, cursor: (NaiveDateTime, i64)) -> Condition {
    Condition::any().add(ts_col.lt(cursor.0)).add(
        Condition::all()
            .add(ts_col.eq(cursor.0))
            .add(id_col.lt(cursor.1)),
    )
}

pub async fn list_metrics(db: &DatabaseConnection, q: MetricQuery) -> Result<MetricList, ApiError> {
    use metrics::Column as C;
    let limit = limit(q.limit)?;
    check_filter("metric_name", &q.metric_name, 100)?;
    check_filter("service_name", &q.service_name, 100)?;
    check_filter("endpoint", &q.endpoint, 255)?;
    if q.metric_type
        .as_deref()
        .is_some_and(|t| !METRIC_TYPES.contains(&t))
    {
        return Err(ApiError::unprocessable(
            "metric_type must be one of counter, gauge, histogram",
        ));
    }
    let user = user_id(q.user_id)?;
    let (from, to) = window(q.from, q.to)?;
    let cursor = q.cursor.as_deref().map(decode_cursor).transpose()?;

    let mut find = metrics::Entity::find();
    if let Some(v) = q.metric_name {
        find = find.filter(C::MetricName.eq(v));
    }
    if let Some(v) = q.service_name {
        find = find.filter(C::ServiceName.eq(v));
    }
    if let Some(v) = q.endpoint {
        find = find.filter(C::Endpoint.eq(v));
    }
    if let Some(v) = q.metric_type {
        find = find.filter(C::MetricType.eq(v));
    }
    if let Some(v) = user {
        find = find.filter(C::UserId.eq(v));
    }
    if let Some(v) = from {
        find = find.filter(C::Timestamp.gte(v));
    }
    if let Some(v) = to {
        find = find.filter(C::Timestamp.lt(v));
    }
    if let Some(c) = cursor {
        find = find.filter(keyset(C::Timestamp, C::Id, c));
    }
    let mut rows = find
        .order_by_desc(C::Timestamp)
        .order_by_desc(C::Id)
        .limit(limit + 1)
        .all(db)
        .await?;
    let next_cursor = page_end(&mut rows, limit, |r| encode_cursor(r.timestamp, r.id));
    Ok(MetricList {
        count: rows.len(),
        metrics: rows.iter().map(MetricResponse::from).collect(),
        next_cursor,
    })
}

fn page_end<T>(rows: &mut Vec<T>, limit: u64, cursor: impl Fn(&T) -> String) -> Option<String> {
    if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(cursor)
    } else {
        None
    }
}

pub async fn list_events(db: &DatabaseConnection, q: EventQuery) -> Result<EventList, ApiError> {
    use events::Column as C;
    let limit = limit(q.limit)?;
    check_filter("event_type", &q.event_type, 100)?;
    check_filter("session_id", &q.session_id, 255)?;
    let user = user_id(q.user_id)?;
    let (from, to) = window(q.from, q.to)?;
    let cursor = q.cursor.as_deref().map(decode_cursor).transpose()?;

    let mut find = events::Entity::find();
    if let Some(v) = q.event_type {
        find = find.filter(C::EventType.eq(v));
    }
    if let Some(v) = q.session_id {
        find = find.filter(C::SessionId.eq(v));
    }
    if let Some(v) = user {
        find = find.filter(C::UserId.eq(v));
    }
    if let Some(v) = from {
        find = find.filter(C::Timestamp.gte(v));
    }
    if let Some(v) = to {
        find = find.filter(C::Timestamp.lt(v));
    }
    if let Some(c) = cursor {
        find = find.filter(keyset(C::Timestamp, C::Id, c));
    }
    let mut rows = find
        .order_by_desc(C::Timestamp)
        .order_by_desc(C::Id)
        .limit(limit + 1)
        .all(db)
        .await?;
    let next_cursor = page_end(&mut rows, limit, |r| encode_cursor(r.timestamp, r.id));
    Ok(EventList {
        count: rows.len(),
        events: rows.iter().map(EventResponse::from).collect(),
        next_cursor,
    })
}

fn since(hours: i64) -> NaiveDateTime {
    super::ingest::now() - Duration::hours(hours)
}

/// Raw event counts by type in [from, to): the partial minute at a window's start.
async fn raw_type_counts(
    db: &DatabaseConnection,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<Vec<(String, i64)>, ApiError> {
    use events::Column as C;
    Ok(events::Entity::find()
        .select_only()
        .column(C::EventType)
        .column_as(Expr::col(C::Id).count(), "n")
        .filter(C::Timestamp.gte(from))
        .filter(C::Timestamp.lt(to))
        .group_by(C::EventType)
        .into_tuple()
        .all(db)
        .await?)
}

/// Event counts by type since `since`, most first.
pub async fn event_types(
    db: &DatabaseConnection,
    since: NaiveDateTime,
    top: Option<u64>,
) -> Result<Vec<TypeCount>, ApiError> {
    let w = rollups::split(since);
    let (rolled, raw) = tokio::try_join!(
        async { Ok::<_, ApiError>(rollups::event_counts_since(db, w, None, None).await?) },
        raw_type_counts(db, since, w.minute),
    )?;
    let mut counts: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for (_, t, n) in rolled {
        *counts.entry(t).or_default() += n;
    }
    for (t, n) in raw {
        *counts.entry(t).or_default() += n;
    }
    let mut list: Vec<TypeCount> = counts
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(event_type, count)| TypeCount { event_type, count })
        .collect();
    list.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.event_type.cmp(&b.event_type))
    });
    if let Some(n) = top {
        list.truncate(n as usize);
    }
    Ok(list)
}

#[derive(Clone, Copy)]
pub enum Interval {
    Minute,
    Hour,
    Day,
}

impl Interval {
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value.unwrap_or("hour") {
            "minute" => Ok(Interval::Minute),
            "hour" => Ok(Interval::Hour),
            "day" => Ok(Interval::Day),
            _ => Err(ApiError::unprocessable(
                "interval must be minute, hour or day",
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Interval::Minute => "minute",
            Interval::Hour => "hour",
            Interval::Day => "day",
        }
    }

    fn step(self) -> Duration {
        match self {
            Interval::Minute => Duration::minutes(1),
            Interval::Hour => Duration::hours(1),
            Interval::Day => Duration::days(1),
        }
    }

    /// SQL that truncates the timestamp column `col` to the bucket start, as text.
    pub fn sql_on(self, backend: DbBackend, col: &str) -> String {
        let unit = self.name();
        match backend {
            DbBackend::Postgres => {
                format!("to_char(date_trunc('{unit}', \"{col}\"), 'YYYY-MM-DD HH24:MI:SS')")
            }
            _ => {
                let fmt = match self {
                    Interval::Minute => "%Y-%m-%d %H:%M:00",
                    Interval::Hour => "%Y-%m-%d %H:00:00",
                    Interval::Day => "%Y-%m-%d 00:00:00",
                };
                format!("strftime('{fmt}', \"{col}\")")
            }
        }
    }

    pub fn sql_expr(self, backend: DbBackend) -> String {
        self.sql_on(backend, "timestamp")
    }
}

/// Event counts per aligned bucket from `since` to now, empty buckets included.
pub async fn timeseries(
    db: &DatabaseConnection,
    interval: Interval,
    hours: i64,
    event_type: Option<&str>,
) -> Result<Vec<Bucket>, ApiError> {
    use events::Column as C;
    let step = interval.step();
    if Duration::hours(hours).num_seconds() / step.num_seconds() > MAX_BUCKETS {
        return Err(ApiError::unprocessable(format!(
            "at most {MAX_BUCKETS} buckets: shorten hours or widen interval"
        )));
    }
    let start = since(hours);
    let w = rollups::split(start);
    let edge = w.minute;
    let backend = db.get_database_backend();
    let rolled_sql = interval.sql_on(backend, "bucket");
    let raw_bucket = Expr::cust(interval.sql_expr(backend));
    let mut raw = events::Entity::find()
        .select_only()
        .column_as(raw_bucket.clone(), "bucket")
        .column_as(Expr::col(C::Id).count(), "n")
        .filter(C::Timestamp.gte(start))
        .filter(C::Timestamp.lt(edge))
        .group_by(raw_bucket);
    if let Some(t) = event_type {
        raw = raw.filter(C::EventType.eq(t));
    }
    type RawBuckets = Vec<(String, i64)>;
    let (rolled, raw) = tokio::try_join!(
        async {
            // Minute series read only minute buckets; coarser ones mostly hours.
            let rolled = match interval {
                Interval::Minute => {
                    rollups::event_counts(
                        db,
                        rollups::Grain::Minute,
                        edge,
                        None,
                        Some(&rolled_sql),
                        event_type,
                    )
                    .await?
                }
                _ => rollups::event_counts_since(db, w, Some(&rolled_sql), event_type).await?,
            };
            Ok::<_, ApiError>(rolled)
        },
        async { Ok::<RawBuckets, ApiError>(raw.into_tuple().all(db).await?) },
    )?;
    let mut counts: std::collections::HashMap<NaiveDateTime, i64> =
        std::collections::HashMap::new();
    let parse = |b: &str| NaiveDateTime::parse_from_str(b, "%Y-%m-%d %H:%M:%S").ok();
    for (b, _, n) in rolled {
        if let Some(t) = parse(&b) {
            *counts.entry(t).or_default() += n;
        }
    }
    for (b, n) in raw {
        if let Some(t) = parse(&b) {
            *counts.entry(t).or_default() += n;
        }
    }
    let mut out = vec![];
    let mut t = rollups::trunc(start, step);
    let end = super::ingest::now();
    while t <= end {
        out.push(Bucket {
            start: t.and_utc(),
            count: counts.get(&t).copied().unwrap_or(0),
        });
        t += step;
    }
    Ok(out)
}

/// Σ value of metrics named `name` since `since`.
async fn metric_sum(
    db: &DatabaseConnection,
    name: &str,
    since: NaiveDateTime,
) -> Result<f64, ApiError> {
    use metrics::Column as C;
    let w = rollups::split(since);
    let edge = w.minute;
    let raw: Option<Option<f64>> = metrics::Entity::find()
        .select_only()
        .column_as(Expr::col(C::MetricValue).sum(), "s")
        .filter(C::MetricName.eq(name))
        .filter(C::Timestamp.gte(since))
        .filter(C::Timestamp.lt(edge))
        .into_tuple()
        .one(db)
        .await?;
    let rolled = rollups::metric_totals_since(db, w, Some(name)).await?;
    Ok(raw.flatten().unwrap_or(0.0) + rolled.values().map(|(_, s)| s).sum::<f64>())
}

/// The 5 endpoints with the most metric rows since `since`.
async fn top_endpoints(
    db: &DatabaseConnection,
    since: NaiveDateTime,
) -> Result<Vec<EndpointCount>, ApiError> {
    use metrics::Column as C;
    let w = rollups::split(since);
    let edge = w.minute;
    let raw: Vec<(String, i64)> = metrics::Entity::find()
        .select_only()
        .column(C::Endpoint)
        .column_as(Expr::col(C::Id).count(), "n")
        .filter(C::Timestamp.gte(since))
        .filter(C::Timestamp.lt(edge))
        .filter(C::Endpoint.is_not_null())
        .group_by(C::Endpoint)
        .into_tuple()
        .all(db)
        .await?;
    let mut counts: std::collections::HashMap<String, i64> = raw.into_iter().collect();
    for (endpoint, (n, _)) in rollups::metric_totals_since(db, w, None).await? {
        if !endpoint.is_empty() {
            *counts.entry(endpoint).or_default() += n;
        }
    }
    let mut list: Vec<EndpointCount> = counts
        .into_iter()
        .map(|(endpoint, count)| EndpointCount { endpoint, count })
        .collect();
    list.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.endpoint.cmp(&b.endpoint))
    });
    list.truncate(5);
    Ok(list)
}

pub async fn dashboard(db: &DatabaseConnection, hours: i64) -> Result<Dashboard, ApiError> {
    use events::Column as C;
    let start = since(hours);
    let (users, calls, cost, endpoints, recent, types, hourly) = tokio::try_join!(
        async { Ok::<_, ApiError>(rollups::active_users(db, start).await?) },
        metric_sum(db, "api_calls", start),
        metric_sum(db, "cost_usd", start),
        top_endpoints(db, start),
        async {
            Ok(events::Entity::find()
                .filter(C::Timestamp.gte(start))
                .order_by_desc(C::Timestamp)
                .order_by_desc(C::Id)
                .limit(10)
                .all(db)
                .await?)
        },
        event_types(db, start, None),
        timeseries(db, Interval::Hour, hours, None),
    )?;
    Ok(Dashboard {
        hours: hours as u32,
        total_events: types.iter().map(|t| t.count).sum(),
        active_users: users,
        total_api_calls: calls,
        total_cost: cost,
        top_endpoints: endpoints,
        recent_events: recent.iter().map(EventResponse::from).collect(),
        event_types: types,
        hourly,
    })
}

pub async fn summary(db: &DatabaseConnection) -> Result<Summary, ApiError> {
    let start = since(24);
    let (total_users, active, types) = tokio::try_join!(
        async { Ok::<_, ApiError>(users::Entity::find().count(db).await? as i64) },
        async { Ok(rollups::active_users(db, start).await?) },
        event_types(db, start, None),
    )?;
    Ok(Summary {
        total_users,
        active_users_24h: active,
        events_24h: types.iter().map(|t| t.count).sum(),
        top_event_types: types.into_iter().take(10).collect(),
    })
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
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(1001)).is_err());
        assert_eq!(limit(Some(1000)).unwrap(), 1000);
    }
}
