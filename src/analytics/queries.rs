//! Read side: keyset-paginated lists and windowed aggregates, bounded and
//! served from indexes on (column, timestamp, id).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, DurationRound, NaiveDateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};

use super::dto::*;
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

pub async fn event_types(
    db: &DatabaseConnection,
    since: NaiveDateTime,
    top: Option<u64>,
) -> Result<Vec<TypeCount>, ApiError> {
    use events::Column as C;
    let mut q = events::Entity::find()
        .select_only()
        .column(C::EventType)
        .column_as(Expr::col(C::Id).count(), "n")
        .filter(C::Timestamp.gte(since))
        .group_by(C::EventType)
        .order_by(Expr::col(Alias::new("n")), Order::Desc)
        .order_by_asc(C::EventType);
    if let Some(n) = top {
        q = q.limit(n);
    }
    let rows: Vec<(String, i64)> = q.into_tuple().all(db).await?;
    Ok(rows
        .into_iter()
        .map(|(event_type, count)| TypeCount { event_type, count })
        .collect())
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

    /// SQL that truncates the timestamp to the bucket start, as text.
    pub fn sql_expr(self, backend: DbBackend) -> &'static str {
        match (backend, self) {
            (DbBackend::Postgres, Interval::Minute) => {
                "to_char(date_trunc('minute', \"timestamp\"), 'YYYY-MM-DD HH24:MI:SS')"
            }
            (DbBackend::Postgres, Interval::Hour) => {
                "to_char(date_trunc('hour', \"timestamp\"), 'YYYY-MM-DD HH24:MI:SS')"
            }
            (DbBackend::Postgres, Interval::Day) => {
                "to_char(date_trunc('day', \"timestamp\"), 'YYYY-MM-DD HH24:MI:SS')"
            }
            (_, Interval::Minute) => "strftime('%Y-%m-%d %H:%M:00', \"timestamp\")",
            (_, Interval::Hour) => "strftime('%Y-%m-%d %H:00:00', \"timestamp\")",
            (_, Interval::Day) => "strftime('%Y-%m-%d 00:00:00', \"timestamp\")",
        }
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
    let bucket = Expr::cust(interval.sql_expr(db.get_database_backend()));
    let mut q = events::Entity::find()
        .select_only()
        .column_as(bucket.clone(), "bucket")
        .column_as(Expr::col(C::Id).count(), "n")
        .filter(C::Timestamp.gte(start))
        .group_by(bucket);
    if let Some(t) = event_type {
        q = q.filter(C::EventType.eq(t));
    }
    let rows: Vec<(String, i64)> = q.into_tuple().all(db).await?;
    let counts: std::collections::HashMap<NaiveDateTime, i64> = rows
        .into_iter()
        .filter_map(|(b, n)| {
            NaiveDateTime::parse_from_str(&b, "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|t| (t, n))
        })
        .collect();
    let mut out = vec![];
    let mut t = start
        .and_utc()
        .duration_trunc(step)
        .map_err(ApiError::internal)?
        .naive_utc();
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

async fn active_users(db: &DatabaseConnection, since: NaiveDateTime) -> Result<i64, ApiError> {
    use events::Column as C;
    let n: Option<i64> = events::Entity::find()
        .select_only()
        .column_as(Expr::col(C::UserId).count_distinct(), "n")
        .filter(C::Timestamp.gte(since))
        .filter(C::UserId.is_not_null())
        .into_tuple()
        .one(db)
        .await?;
    Ok(n.unwrap_or(0))
}

async fn metric_sum(
    db: &DatabaseConnection,
    name: &str,
    since: NaiveDateTime,
) -> Result<f64, ApiError> {
    use metrics::Column as C;
    let sum: Option<Option<f64>> = metrics::Entity::find()
        .select_only()
        .column_as(Expr::col(C::MetricValue).sum(), "s")
        .filter(C::MetricName.eq(name))
        .filter(C::Timestamp.gte(since))
        .into_tuple()
        .one(db)
        .await?;
    Ok(sum.flatten().unwrap_or(0.0))
}

async fn top_endpoints(
    db: &DatabaseConnection,
    since: NaiveDateTime,
) -> Result<Vec<EndpointCount>, ApiError> {
    use metrics::Column as C;
    let rows: Vec<(String, i64)> = metrics::Entity::find()
        .select_only()
        .column(C::Endpoint)
        .column_as(Expr::col(C::Id).count(), "n")
        .filter(C::Timestamp.gte(since))
        .filter(C::Endpoint.is_not_null())
        .group_by(C::Endpoint)
        .order_by(Expr::col(Alias::new("n")), Order::Desc)
        .order_by_asc(C::Endpoint)
        .limit(5)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(endpoint, count)| EndpointCount { endpoint, count })
        .collect())
}

pub async fn dashboard(db: &DatabaseConnection, hours: i64) -> Result<Dashboard, ApiError> {
    use events::Column as C;
    let start = since(hours);
    let (total, users, calls, cost, endpoints, recent, types, hourly) = tokio::try_join!(
        async {
            Ok::<_, ApiError>(
                events::Entity::find()
                    .filter(C::Timestamp.gte(start))
                    .count(db)
                    .await? as i64,
            )
        },
        active_users(db, start),
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
        total_events: total,
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
    let (total_users, active, events_24h, top) = tokio::try_join!(
        async { Ok::<_, ApiError>(users::Entity::find().count(db).await? as i64) },
        active_users(db, start),
        async {
            Ok(events::Entity::find()
                .filter(events::Column::Timestamp.gte(start))
                .count(db)
                .await? as i64)
        },
        event_types(db, start, Some(10)),
    )?;
    Ok(Summary {
        total_users,
        active_users_24h: active,
        events_24h,
        top_event_types: top,
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
