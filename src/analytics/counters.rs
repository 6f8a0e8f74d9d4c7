//! Per-minute and per-hour counters of events and metrics (not to be
//! confused with the usage rollup job, `jobs::usage_rollup`). The ingest
//! writer adds each committed group to them in the same transaction, so
//! they are exact and never ahead of or behind the rows. Windowed reads take
//! whole buckets from here and the partial bucket at the window's start from
//! the raw rows.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDateTime;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

use super::pricing::TokenType;
use super::{Event, Metric};
use crate::time::{Grain, ceil, trunc};

/// Rows per upsert statement (3 to 5 parameters each).
const CHUNK: usize = 500;

/// `$1, $2…` for Postgres, `?` for SQLite.
fn tuple(backend: DbBackend, first: usize, n: usize) -> String {
    let items: Vec<String> = (first..first + n)
        .map(|i| {
            if backend == DbBackend::Postgres {
                format!("${i}")
            } else {
                "?".into()
            }
        })
        .collect();
    format!("({})", items.join(", "))
}

async fn upsert<C: ConnectionTrait>(
    conn: &C,
    head: &str,
    tail: &str,
    width: usize,
    rows: Vec<Vec<Value>>,
) -> Result<(), DbErr> {
    let backend = conn.get_database_backend();
    for chunk in rows.chunks(CHUNK) {
        let tuples: Vec<String> = (0..chunk.len())
            .map(|i| tuple(backend, 1 + i * width, width))
            .collect();
        let sql = format!("{head} VALUES {} {tail}", tuples.join(", "));
        let values: Vec<Value> = chunk.iter().flatten().cloned().collect();
        conn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
    }
    Ok(())
}

/// The counter tables a grain is read from: minutes for minutes, hours
/// for hours and days.
fn events_table(grain: Grain) -> &'static str {
    match grain {
        Grain::Minute => "platform_analytics_event_minutes",
        Grain::Hour | Grain::Day => "platform_analytics_event_hours",
    }
}

fn metrics_table(grain: Grain) -> &'static str {
    match grain {
        Grain::Minute => "platform_analytics_metric_minutes",
        Grain::Hour | Grain::Day => "platform_analytics_metric_hours",
    }
}

pub(super) fn costs_table(grain: Grain) -> &'static str {
    match grain {
        Grain::Minute => "platform_analytics_cost_minutes",
        Grain::Hour | Grain::Day => "platform_analytics_cost_hours",
    }
}

/// The grains stored as counters.
const STORED: [Grain; 2] = [Grain::Minute, Grain::Hour];

/// A window from `since` on, split into what each source answers exactly:
/// raw rows in [since, minute), minute buckets in [minute, hour), hour
/// buckets from `hour` on.
#[derive(Clone, Copy, Debug)]
pub struct Split {
    pub since: NaiveDateTime,
    pub minute: NaiveDateTime,
    pub hour: NaiveDateTime,
}

pub fn split(since: NaiveDateTime) -> Split {
    Split {
        since,
        minute: ceil(since, Grain::Minute.step()),
        hour: ceil(since, Grain::Hour.step()),
    }
}

/// Events per (bucket, event type) at one grain, in key order.
pub(super) fn event_buckets<'a>(
    rows: impl IntoIterator<Item = (NaiveDateTime, &'a str)>,
    grain: Grain,
) -> BTreeMap<(NaiveDateTime, &'a str), i64> {
    let mut counts = BTreeMap::new();
    for (timestamp, event_type) in rows {
        *counts
            .entry((trunc(timestamp, grain.step()), event_type))
            .or_default() += 1;
    }
    counts
}

/// The hours in which each user was active, in key order.
pub(super) fn user_hours(
    rows: impl IntoIterator<Item = (NaiveDateTime, Option<i32>)>,
) -> BTreeSet<(NaiveDateTime, i32)> {
    rows.into_iter()
        .filter_map(|(timestamp, user)| user.map(|u| (trunc(timestamp, Grain::Hour.step()), u)))
        .collect()
}

/// The event types each user did in each hour, in key order.
pub(super) fn type_user_hours<'a>(
    rows: impl IntoIterator<Item = (NaiveDateTime, &'a str, Option<i32>)>,
) -> BTreeSet<(NaiveDateTime, &'a str, i32)> {
    rows.into_iter()
        .filter_map(|(timestamp, event_type, user)| {
            user.map(|u| (trunc(timestamp, Grain::Hour.step()), event_type, u))
        })
        .collect()
}

/// What the metric counters read of a row, stored or about to be.
pub(super) trait MetricKey {
    fn key(&self) -> (NaiveDateTime, &str, Option<&str>, f64);
}

impl MetricKey for Metric {
    fn key(&self) -> (NaiveDateTime, &str, Option<&str>, f64) {
        (
            self.timestamp,
            &self.metric_name,
            self.endpoint.as_deref(),
            self.metric_value,
        )
    }
}

impl MetricKey for super::NewMetric {
    fn key(&self) -> (NaiveDateTime, &str, Option<&str>, f64) {
        (
            self.timestamp,
            &self.metric_name,
            self.endpoint.as_deref(),
            self.metric_value,
        )
    }
}

/// What a metric adds to the cost counters: the users' `tokens_used` with
/// a model, per (model, token type), and their `cost_usd` dollars (model
/// and type ''). Prices apply when the counters are read.
pub(super) trait CostKey {
    fn cost_key(&self) -> Option<(NaiveDateTime, String, &'static str, i64, f64)>;
}

fn cost_parts(
    timestamp: NaiveDateTime,
    user: Option<i32>,
    name: &str,
    value: f64,
    labels: &serde_json::Value,
) -> Option<(NaiveDateTime, String, &'static str, i64, f64)> {
    user?;
    match name {
        "cost_usd" => Some((timestamp, String::new(), "", 0, value)),
        "tokens_used" => {
            let model: String = labels.get("model")?.as_str()?.chars().take(100).collect();
            let label = labels.get("token_type").and_then(|v| v.as_str());
            let kind = match TokenType::from_label(label) {
                TokenType::Input => "input",
                TokenType::Output => "output",
            };
            Some((timestamp, model, kind, value.round() as i64, 0.0))
        }
        _ => None,
    }
}

impl CostKey for Metric {
    fn cost_key(&self) -> Option<(NaiveDateTime, String, &'static str, i64, f64)> {
        let m = self;
        cost_parts(
            m.timestamp,
            m.user_id,
            &m.metric_name,
            m.metric_value,
            &m.labels,
        )
    }
}

impl CostKey for super::NewMetric {
    fn cost_key(&self) -> Option<(NaiveDateTime, String, &'static str, i64, f64)> {
        let m = self;
        cost_parts(
            m.timestamp,
            m.user_id,
            &m.metric_name,
            m.metric_value,
            &m.labels,
        )
    }
}

/// Tokens and dollars per (bucket, model, token type) at one grain.
pub(super) fn cost_buckets<'a, M: CostKey + 'a>(
    rows: impl IntoIterator<Item = &'a M>,
    grain: Grain,
) -> BTreeMap<(NaiveDateTime, String, &'static str), (i64, f64)> {
    let mut sums: BTreeMap<_, (i64, f64)> = BTreeMap::new();
    for (timestamp, model, kind, tokens, dollars) in rows.into_iter().filter_map(CostKey::cost_key)
    {
        let slot = sums
            .entry((trunc(timestamp, grain.step()), model, kind))
            .or_default();
        slot.0 = slot.0.saturating_add(tokens);
        slot.1 += dollars;
    }
    sums
}

/// Row count and value sum per (bucket, metric name, endpoint or "") at one
/// grain, in key order.
pub(super) fn metric_buckets<'a, M: MetricKey + 'a>(
    rows: impl IntoIterator<Item = &'a M>,
    grain: Grain,
) -> BTreeMap<(NaiveDateTime, &'a str, &'a str), (i64, f64)> {
    let mut sums: BTreeMap<_, (i64, f64)> = BTreeMap::new();
    for row in rows {
        let (timestamp, name, endpoint, value) = row.key();
        let slot = sums
            .entry((trunc(timestamp, grain.step()), name, endpoint.unwrap_or("")))
            .or_default();
        slot.0 += 1;
        slot.1 += value;
    }
    sums
}

/// Adds newly stored events. Keys are sorted, so concurrent writers on two
/// replicas lock bucket rows in the same order and cannot deadlock.
pub async fn add_events<C: ConnectionTrait>(conn: &C, rows: &[&Event]) -> Result<(), DbErr> {
    for grain in STORED {
        let counts = event_buckets(
            rows.iter().map(|e| (e.timestamp, e.event_type.as_str())),
            grain,
        );
        let table = events_table(grain);
        upsert(
            conn,
            &format!("INSERT INTO {table} (bucket, event_type, events)"),
            &format!("ON CONFLICT (bucket, event_type) DO UPDATE SET events = {table}.events + excluded.events"),
            3,
            counts
                .into_iter()
                .map(|((b, t), n)| vec![b.into(), t.to_string().into(), n.into()])
                .collect(),
        )
        .await?;
    }
    let users = user_hours(rows.iter().map(|e| (e.timestamp, e.user_id)));
    upsert(
        conn,
        "INSERT INTO platform_analytics_event_user_hours (bucket, user_id)",
        "ON CONFLICT (bucket, user_id) DO NOTHING",
        2,
        users
            .into_iter()
            .map(|(b, u)| vec![b.into(), u.into()])
            .collect(),
    )
    .await?;
    let typed = type_user_hours(
        rows.iter()
            .map(|e| (e.timestamp, e.event_type.as_str(), e.user_id)),
    );
    upsert(
        conn,
        "INSERT INTO platform_analytics_event_type_user_hours (bucket, event_type, user_id)",
        "ON CONFLICT (bucket, event_type, user_id) DO NOTHING",
        3,
        typed
            .into_iter()
            .map(|(b, t, u)| vec![b.into(), t.to_string().into(), u.into()])
            .collect(),
    )
    .await
}

pub async fn add_metrics<C: ConnectionTrait>(conn: &C, rows: &[Metric]) -> Result<(), DbErr> {
    for grain in STORED {
        let table = costs_table(grain);
        upsert(
            conn,
            &format!("INSERT INTO {table} (bucket, model, token_type, tokens, dollars)"),
            &format!(
                "ON CONFLICT (bucket, model, token_type) DO UPDATE SET \
                 tokens = {table}.tokens + excluded.tokens, \
                 dollars = {table}.dollars + excluded.dollars"
            ),
            5,
            cost_buckets(rows, grain)
                .into_iter()
                .map(|((b, model, kind), (tokens, dollars))| {
                    vec![
                        b.into(),
                        model.into(),
                        kind.to_string().into(),
                        tokens.into(),
                        dollars.into(),
                    ]
                })
                .collect(),
        )
        .await?;
    }
    for grain in STORED {
        let sums = metric_buckets(rows, grain);
        let table = metrics_table(grain);
        upsert(
            conn,
            &format!("INSERT INTO {table} (bucket, metric_name, endpoint, row_count, value_sum)"),
            &format!(
                "ON CONFLICT (bucket, metric_name, endpoint) DO UPDATE SET \
                 row_count = {table}.row_count + excluded.row_count, \
                 value_sum = {table}.value_sum + excluded.value_sum"
            ),
            5,
            sums.into_iter()
                .map(|((b, name, ep), (n, sum))| {
                    vec![
                        b.into(),
                        name.to_string().into(),
                        ep.to_string().into(),
                        n.into(),
                        sum.into(),
                    ]
                })
                .collect(),
        )
        .await?;
    }
    Ok(())
}

/// Retention for the counters: buckets wholly before the horizon.
pub async fn delete_before<C: ConnectionTrait>(
    conn: &C,
    horizon: NaiveDateTime,
) -> Result<u64, DbErr> {
    let backend = conn.get_database_backend();
    let mut n = 0;
    let tables = STORED
        .iter()
        .flat_map(|&g| {
            [
                (events_table(g), g),
                (metrics_table(g), g),
                (costs_table(g), g),
            ]
        })
        .chain([
            ("platform_analytics_event_user_hours", Grain::Hour),
            ("platform_analytics_event_type_user_hours", Grain::Hour),
        ]);
    for (table, grain) in tables {
        let sql = format!(
            "DELETE FROM {table} WHERE bucket < {}",
            tuple(backend, 1, 1)
        );
        n += conn
            .execute_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [trunc(horizon, grain.step()).into()],
            ))
            .await?
            .rows_affected();
    }
    Ok(n)
}

// ------------------------------------------------------------------ reads

fn bind(backend: DbBackend, i: usize) -> String {
    if backend == DbBackend::Postgres {
        format!("${i}")
    } else {
        "?".into()
    }
}

/// `bucket >= from [AND bucket < to] [AND column = value]`, with its values.
fn window_filter(
    backend: DbBackend,
    from: NaiveDateTime,
    to: Option<NaiveDateTime>,
    eq: Option<(&str, &str)>,
) -> (String, Vec<Value>) {
    let mut values: Vec<Value> = vec![from.into()];
    let mut filter = format!("bucket >= {}", bind(backend, 1));
    if let Some(t) = to {
        values.push(t.into());
        filter.push_str(&format!(" AND bucket < {}", bind(backend, values.len())));
    }
    if let Some((column, value)) = eq {
        values.push(value.to_string().into());
        filter.push_str(&format!(" AND {column} = {}", bind(backend, values.len())));
    }
    (filter, values)
}

/// Σ events per (bucket start as text, event_type) from `grain` buckets in
/// [from, to), bucketed by `bucket_sql` (a truncation of the `bucket` column).
pub async fn event_counts<C: ConnectionTrait>(
    conn: &C,
    grain: Grain,
    from: NaiveDateTime,
    to: Option<NaiveDateTime>,
    bucket_sql: Option<&str>,
    event_type: Option<&str>,
) -> Result<Vec<(String, String, i64)>, DbErr> {
    let backend = conn.get_database_backend();
    let bucket = bucket_sql.unwrap_or("''");
    let (filter, values) = window_filter(backend, from, to, event_type.map(|t| ("event_type", t)));
    let sql = format!(
        "SELECT {bucket} AS b, event_type, CAST(SUM(events) AS BIGINT) AS n \
         FROM {} WHERE {filter} GROUP BY 1, 2",
        events_table(grain),
    );
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<String>("", "b")?,
                r.try_get("", "event_type")?,
                r.try_get("", "n")?,
            ))
        })
        .collect()
}

/// Distinct users with events at or after `since`: hour buckets from the
/// first whole hour, raw rows before it.
pub async fn active_users<C: ConnectionTrait>(
    conn: &C,
    since: NaiveDateTime,
) -> Result<i64, DbErr> {
    let backend = conn.get_database_backend();
    let edge = ceil(since, Grain::Hour.step());
    let sql = format!(
        "SELECT COUNT(*) AS n FROM (\
           SELECT user_id FROM platform_analytics_event_user_hours WHERE bucket >= {p1} \
           UNION \
           SELECT user_id FROM platform_analytics_events \
             WHERE \"timestamp\" >= {p2} AND \"timestamp\" < {p3} AND user_id IS NOT NULL\
         ) u",
        p1 = bind(backend, 1),
        p2 = bind(backend, 2),
        p3 = bind(backend, 3),
    );
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [edge.into(), since.into(), edge.into()],
        ))
        .await?;
    Ok(row
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0))
}

/// Tokens and dollars per (model, token type) of the cost counters at
/// `grain` in the given [from, to) ranges.
pub async fn cost_totals<C: ConnectionTrait>(
    conn: &C,
    grain: Grain,
    ranges: &[(NaiveDateTime, NaiveDateTime)],
) -> Result<Vec<(String, String, i64, f64)>, DbErr> {
    if ranges.is_empty() {
        return Ok(vec![]);
    }
    let backend = conn.get_database_backend();
    let mut values: Vec<Value> = vec![];
    let mut clauses = vec![];
    for (from, to) in ranges {
        values.push((*from).into());
        values.push((*to).into());
        clauses.push(format!(
            "(bucket >= {} AND bucket < {})",
            bind(backend, values.len() - 1),
            bind(backend, values.len())
        ));
    }
    let sql = format!(
        "SELECT model, token_type, CAST(SUM(tokens) AS BIGINT) AS tokens, SUM(dollars) AS dollars \
         FROM {} WHERE {} GROUP BY model, token_type",
        costs_table(grain),
        clauses.join(" OR ")
    );
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("", "model")?,
                r.try_get("", "token_type")?,
                r.try_get::<Option<i64>>("", "tokens")?.unwrap_or(0),
                r.try_get::<Option<f64>>("", "dollars")?.unwrap_or(0.0),
            ))
        })
        .collect()
}

/// Distinct users with events in [from, to), overall and per event type
/// (optionally one type): whole hours from the presence tables, the
/// window's partial first and last hours from the raw rows. Exact.
pub async fn distinct_users<C: ConnectionTrait>(
    conn: &C,
    from: NaiveDateTime,
    to: NaiveDateTime,
    event_type: Option<&str>,
) -> Result<(i64, Vec<(String, i64)>), DbErr> {
    let backend = conn.get_database_backend();
    let step = Grain::Hour.step();
    let (mut h0, mut h1) = (ceil(from, step), trunc(to, step));
    if h0 >= h1 {
        // No whole hour: all of it from the raw rows.
        (h0, h1) = (to, to);
    }
    let mut values: Vec<Value> = vec![
        h0.into(),
        h1.into(),
        from.into(),
        h0.into(),
        h1.into(),
        to.into(),
    ];
    // Numbered for SQLite too: the type's value is named twice.
    let p: Vec<String> = (1..=7)
        .map(|i| match backend {
            DbBackend::Postgres => format!("${i}"),
            _ => format!("?{i}"),
        })
        .collect();
    let type_filter = match event_type {
        Some(t) => {
            values.push(t.to_string().into());
            format!(" AND event_type = {}", p[6])
        }
        None => String::new(),
    };
    let raw = |columns: &str| {
        format!(
            "SELECT {columns} FROM platform_analytics_events \
             WHERE user_id IS NOT NULL{type_filter} AND (\
               (\"timestamp\" >= {} AND \"timestamp\" < {}) OR \
               (\"timestamp\" >= {} AND \"timestamp\" < {}))",
            p[2], p[3], p[4], p[5]
        )
    };
    let whole = format!("bucket >= {} AND bucket < {}{type_filter}", p[0], p[1]);
    let per_type = format!(
        "SELECT event_type, COUNT(*) AS n FROM (\
           SELECT event_type, user_id FROM platform_analytics_event_type_user_hours WHERE {whole} \
           UNION {}) u GROUP BY event_type",
        raw("event_type, user_id")
    );
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            per_type,
            values.clone(),
        ))
        .await?;
    let by_type: Vec<(String, i64)> = rows
        .iter()
        .map(|r| Ok((r.try_get("", "event_type")?, r.try_get("", "n")?)))
        .collect::<Result<_, DbErr>>()?;
    if event_type.is_some() {
        let n = by_type.first().map_or(0, |t| t.1);
        return Ok((n, by_type));
    }
    let overall = format!(
        "SELECT COUNT(*) AS n FROM (\
           SELECT user_id FROM platform_analytics_event_user_hours WHERE {whole} \
           UNION {}) u",
        raw("user_id")
    );
    let n = conn
        .query_one_raw(Statement::from_sql_and_values(backend, overall, values))
        .await?
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0);
    Ok((n, by_type))
}

/// Per endpoint (rows, Σ value) of metric `grain` buckets in [from, to),
/// optionally for one metric name.
pub async fn metric_totals<C: ConnectionTrait>(
    conn: &C,
    grain: Grain,
    from: NaiveDateTime,
    to: Option<NaiveDateTime>,
    name: Option<&str>,
) -> Result<HashMap<String, (i64, f64)>, DbErr> {
    let backend = conn.get_database_backend();
    let (filter, values) = window_filter(backend, from, to, name.map(|n| ("metric_name", n)));
    let sql = format!(
        "SELECT endpoint, CAST(SUM(row_count) AS BIGINT) AS n, SUM(value_sum) AS s \
         FROM {} WHERE {filter} GROUP BY endpoint",
        metrics_table(grain),
    );
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<String>("", "endpoint")?,
                (
                    r.try_get::<i64>("", "n")?,
                    r.try_get::<Option<f64>>("", "s")?.unwrap_or(0.0),
                ),
            ))
        })
        .collect()
}

/// Both metric grains of a split window (the raw edge is the caller's).
pub async fn metric_totals_since<C: ConnectionTrait>(
    conn: &C,
    w: Split,
    name: Option<&str>,
) -> Result<HashMap<String, (i64, f64)>, DbErr> {
    let (mut a, b) = tokio::try_join!(
        metric_totals(conn, Grain::Minute, w.minute, Some(w.hour), name),
        metric_totals(conn, Grain::Hour, w.hour, None, name),
    )?;
    for (k, (n, s)) in b {
        let slot = a.entry(k).or_default();
        slot.0 += n;
        slot.1 += s;
    }
    Ok(a)
}

/// Both event grains of a split window, bucketed by `bucket_sql`.
pub async fn event_counts_since<C: ConnectionTrait>(
    conn: &C,
    w: Split,
    bucket_sql: Option<&str>,
    event_type: Option<&str>,
) -> Result<Vec<(String, String, i64)>, DbErr> {
    let (mut a, b) = tokio::try_join!(
        event_counts(
            conn,
            Grain::Minute,
            w.minute,
            Some(w.hour),
            bucket_sql,
            event_type
        ),
        event_counts(conn, Grain::Hour, w.hour, None, bucket_sql, event_type),
    )?;
    a.extend(b);
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_backend() {
        assert_eq!(tuple(DbBackend::Postgres, 4, 3), "($4, $5, $6)");
        assert_eq!(tuple(DbBackend::Sqlite, 4, 2), "(?, ?)");
    }
}
