//! Read side: keyset-paginated lists and windowed aggregates, bounded and
//! served from indexes on (column, timestamp, id) and from the counters.

use std::collections::HashMap;

use chrono::{Duration, NaiveDateTime};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbBackend, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Select,
};

use super::QueryError;
use super::counters;
use super::domain::{EventFilter, MetricFilter, Page, encode_cursor};
use super::pricing::{PriceTable, TokenType, Totals, dollars_to_pico};
use super::views::*;
use super::{Event, Metric};
use crate::entity::{events, metrics, users};
use crate::time::{Grain, now, trunc};

const MAX_BUCKETS: i64 = 10_000;

/// One page of `find`, newest first by (`ts`, `id`), and the cursor of the
/// next page when there is one.
async fn page<E, C>(
    db: &DatabaseConnection,
    mut find: Select<E>,
    (ts, id): (C, C),
    page: &Page,
    key: impl Fn(&E::Model) -> (NaiveDateTime, i64),
) -> Result<(Vec<E::Model>, Option<String>), DbErr>
where
    E: EntityTrait,
    C: ColumnTrait,
{
    if let Some(v) = page.from {
        find = find.filter(ts.gte(v));
    }
    if let Some(v) = page.to {
        find = find.filter(ts.lt(v));
    }
    if let Some((cts, cid)) = page.cursor {
        find = find.filter(
            Condition::any()
                .add(ts.lt(cts))
                .add(Condition::all().add(ts.eq(cts)).add(id.lt(cid))),
        );
    }
    let mut rows = find
        .order_by_desc(ts)
        .order_by_desc(id)
        .limit(page.limit + 1)
        .all(db)
        .await?;
    let next = if rows.len() as u64 > page.limit {
        rows.truncate(page.limit as usize);
        rows.last().map(|r| {
            let (t, i) = key(r);
            encode_cursor(t, i)
        })
    } else {
        None
    };
    Ok((rows, next))
}

/// Metrics matching `f` (any time).
pub(super) fn metrics_matching(f: MetricFilter) -> Select<metrics::Entity> {
    use metrics::Column as C;
    let mut find = metrics::Entity::find();
    if let Some(v) = f.metric_name {
        find = find.filter(C::MetricName.eq(v));
    }
    if let Some(v) = f.service_name {
        find = find.filter(C::ServiceName.eq(v));
    }
    if let Some(v) = f.endpoint {
        find = find.filter(C::Endpoint.eq(v));
    }
    if let Some(v) = f.metric_type {
        find = find.filter(C::MetricType.eq(v.as_str()));
    }
    if let Some(v) = f.user_id {
        find = find.filter(C::UserId.eq(v));
    }
    if let Some(v) = f.api_key_id {
        find = find.filter(C::ApiKeyId.eq(v));
    }
    find
}

/// Events matching `f` (any time).
pub(super) fn events_matching(f: EventFilter) -> Select<events::Entity> {
    use events::Column as C;
    let mut find = events::Entity::find();
    if let Some(v) = f.event_type {
        find = find.filter(C::EventType.eq(v));
    }
    if let Some(v) = f.session_id {
        find = find.filter(C::SessionId.eq(v));
    }
    if let Some(v) = f.user_id {
        find = find.filter(C::UserId.eq(v));
    }
    if let Some(v) = f.api_key_id {
        find = find.filter(C::ApiKeyId.eq(v));
    }
    find
}

pub async fn list_metrics(
    db: &DatabaseConnection,
    f: MetricFilter,
    p: &Page,
) -> Result<(Vec<Metric>, Option<String>), QueryError> {
    use metrics::Column as C;
    let find = metrics_matching(f);
    Ok(page(db, find, (C::Timestamp, C::Id), p, |r| (r.timestamp, r.id)).await?)
}

pub async fn list_events(
    db: &DatabaseConnection,
    f: EventFilter,
    p: &Page,
) -> Result<(Vec<Event>, Option<String>), QueryError> {
    use events::Column as C;
    let find = events_matching(f);
    Ok(page(db, find, (C::Timestamp, C::Id), p, |r| (r.timestamp, r.id)).await?)
}

fn since(hours: i64) -> NaiveDateTime {
    now() - Duration::hours(hours)
}

/// Raw event counts by type in [from, to): the partial minute at a window's start.
async fn raw_type_counts(
    db: &DatabaseConnection,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<Vec<(String, i64)>, QueryError> {
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
) -> Result<Vec<TypeCount>, QueryError> {
    let w = counters::split(since);
    let (rolled, raw) = tokio::try_join!(
        async { Ok::<_, QueryError>(counters::event_counts_since(db, w, None, None).await?) },
        raw_type_counts(db, since, w.minute),
    )?;
    let mut counts: HashMap<String, i64> = HashMap::new();
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

/// SQL that truncates the timestamp column `col` to the start of its
/// `grain` bucket, as text.
fn bucket_sql(grain: Grain, backend: DbBackend, col: &str) -> String {
    let unit = grain.name();
    match backend {
        DbBackend::Postgres => {
            format!("to_char(date_trunc('{unit}', \"{col}\"), 'YYYY-MM-DD HH24:MI:SS')")
        }
        _ => {
            let fmt = match grain {
                Grain::Minute => "%Y-%m-%d %H:%M:00",
                Grain::Hour => "%Y-%m-%d %H:00:00",
                Grain::Day => "%Y-%m-%d 00:00:00",
            };
            format!("strftime('{fmt}', \"{col}\")")
        }
    }
}

/// Event counts per aligned bucket from `since` to now, empty buckets included.
pub async fn timeseries(
    db: &DatabaseConnection,
    interval: Grain,
    hours: i64,
    event_type: Option<&str>,
) -> Result<Vec<Bucket>, QueryError> {
    use events::Column as C;
    let step = interval.step();
    if Duration::hours(hours).num_seconds() / step.num_seconds() > MAX_BUCKETS {
        return Err(super::Invalid::new(format!(
            "at most {MAX_BUCKETS} buckets: shorten hours or widen interval"
        ))
        .into());
    }
    let start = since(hours);
    let w = counters::split(start);
    let edge = w.minute;
    let backend = db.get_database_backend();
    let rolled_sql = bucket_sql(interval, backend, "bucket");
    let raw_bucket = Expr::cust(bucket_sql(interval, backend, "timestamp"));
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
                Grain::Minute => {
                    counters::event_counts(
                        db,
                        Grain::Minute,
                        edge,
                        None,
                        Some(&rolled_sql),
                        event_type,
                    )
                    .await?
                }
                _ => counters::event_counts_since(db, w, Some(&rolled_sql), event_type).await?,
            };
            Ok::<_, QueryError>(rolled)
        },
        async { Ok::<RawBuckets, QueryError>(raw.into_tuple().all(db).await?) },
    )?;
    let mut counts: HashMap<NaiveDateTime, i64> = HashMap::new();
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
    let mut t = trunc(start, step);
    let end = now();
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
) -> Result<f64, QueryError> {
    use metrics::Column as C;
    let w = counters::split(since);
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
    let rolled = counters::metric_totals_since(db, w, Some(name)).await?;
    Ok(raw.flatten().unwrap_or(0.0) + rolled.values().map(|(_, s)| s).sum::<f64>())
}

/// The 5 endpoints with the most metric rows since `since`.
async fn top_endpoints(
    db: &DatabaseConnection,
    since: NaiveDateTime,
) -> Result<Vec<EndpointCount>, QueryError> {
    use metrics::Column as C;
    let w = counters::split(since);
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
    let mut counts: HashMap<String, i64> = raw.into_iter().collect();
    for (endpoint, (n, _)) in counters::metric_totals_since(db, w, None).await? {
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

/// What the usage rollup would charge for the users' metrics stored in
/// [from, to): priced `tokens_used` plus `cost_usd`, the same money
/// `/analytics/costs` reports once the rollup has counted them. Cut at every
/// price change, so each part has one price per model; each part is read
/// from the cost counters where whole buckets fit and from the raw rows in
/// the minutes at its ends.
pub async fn window_cost(
    db: &DatabaseConnection,
    prices: &PriceTable,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<f64, QueryError> {
    let mut edges = vec![from];
    edges.extend(prices.changes_within(from, to));
    edges.push(to);
    let mut total = Totals::default();
    for w in edges.windows(2) {
        for (model, kind, tokens, dollars) in usage_between(db, w[0], w[1]).await? {
            let pico = if model.is_empty() {
                dollars_to_pico(dollars)
            } else {
                let kind = TokenType::from_label(Some(&kind));
                prices.cost_pico(&model, kind, tokens, w[0]).unwrap_or(0)
            };
            total.add(&Totals {
                pico,
                ..Default::default()
            });
        }
    }
    Ok(total.dollars())
}

/// Tokens and dollars per (model, token type) in [a, b): hour buckets in
/// the whole hours, minute buckets in the whole minutes around them, raw
/// rows in the partial minutes at both ends.
async fn usage_between(
    db: &DatabaseConnection,
    a: NaiveDateTime,
    b: NaiveDateTime,
) -> Result<Vec<(String, String, i64, f64)>, QueryError> {
    let (minute, hour) = (Grain::Minute.step(), Grain::Hour.step());
    let (ma, mb) = (crate::time::ceil(a, minute), trunc(b, minute));
    let (ha, hb) = (crate::time::ceil(a, hour), trunc(b, hour));
    let (hours, minutes, raw) = if ha < hb {
        (
            vec![(ha, hb)],
            vec![(ma, ha), (hb, mb)],
            vec![(a, ma), (mb, b)],
        )
    } else if ma < mb {
        (vec![], vec![(ma, mb)], vec![(a, ma), (mb, b)])
    } else {
        (vec![], vec![], vec![(a, b)])
    };
    let keep = |v: Vec<(NaiveDateTime, NaiveDateTime)>| -> Vec<_> {
        v.into_iter().filter(|(x, y)| x < y).collect()
    };
    let (hours, minutes, raw) = (keep(hours), keep(minutes), keep(raw));
    let (h, m, r) = tokio::try_join!(
        counters::cost_totals(db, Grain::Hour, &hours),
        counters::cost_totals(db, Grain::Minute, &minutes),
        raw_usage(db, &raw),
    )?;
    Ok(h.into_iter().chain(m).chain(r).collect())
}

/// The cost counters' sums, from the raw rows of the given ranges.
async fn raw_usage(
    db: &DatabaseConnection,
    ranges: &[(NaiveDateTime, NaiveDateTime)],
) -> Result<Vec<(String, String, i64, f64)>, DbErr> {
    use metrics::Column as C;
    if ranges.is_empty() {
        return Ok(vec![]);
    }
    let mut window = Condition::any();
    for (x, y) in ranges {
        window = window.add(C::Timestamp.gte(*x).and(C::Timestamp.lt(*y)));
    }
    let rows = metrics::Entity::find()
        .filter(C::MetricName.is_in(["tokens_used", "cost_usd"]))
        .filter(C::UserId.is_not_null())
        .filter(window)
        .all(db)
        .await?;
    Ok(counters::cost_buckets(&rows, Grain::Hour)
        .into_iter()
        .map(|((_, model, kind), (tokens, dollars))| (model, kind.to_string(), tokens, dollars))
        .collect())
}

pub async fn dashboard(
    db: &DatabaseConnection,
    prices: &PriceTable,
    hours: i64,
) -> Result<Dashboard, QueryError> {
    use events::Column as C;
    let start = since(hours);
    let (users, calls, cost, endpoints, recent, types, hourly) = tokio::try_join!(
        async { Ok::<_, QueryError>(counters::active_users(db, start).await?) },
        metric_sum(db, "api_calls", start),
        window_cost(db, prices, start, now() + Duration::days(1)),
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
        timeseries(db, Grain::Hour, hours, None),
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

pub async fn summary(db: &DatabaseConnection) -> Result<Summary, QueryError> {
    let start = since(24);
    let (total_users, active, types) = tokio::try_join!(
        async { Ok::<_, QueryError>(users::Entity::find().count(db).await? as i64) },
        async { Ok(counters::active_users(db, start).await?) },
        event_types(db, start, None),
    )?;
    Ok(Summary {
        total_users,
        active_users_24h: active,
        events_24h: types.iter().map(|t| t.count).sum(),
        top_event_types: types.into_iter().take(10).collect(),
    })
}
