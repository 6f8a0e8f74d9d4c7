//! Reads of the counters: windowed sums, distinct users and the cost
//! counters' usage, each over whole buckets (the raw rows at a window's
//! edges are the callers').

use std::collections::HashMap;

use chrono::NaiveDateTime;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

use super::{Split, costs_table, events_table, metrics_table};
use crate::time::{Grain, ceil, trunc};

/// The `i`th value's placeholder, numbered on both backends so a value can
/// be named twice.
fn bind(backend: DbBackend, i: usize) -> String {
    if backend == DbBackend::Postgres {
        format!("${i}")
    } else {
        format!("?{i}")
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

/// Distinct users with events at or after `since`: the presence of the
/// whole hours from the first whole hour on, plus those present in the hour
/// `since` falls in who are not among them and have an event at or after
/// `since`. The ragged start is probed per user, not read per row, so it
/// costs the same at any event rate (at 50 million rows a partial hour held
/// tens of thousands of raw rows).
pub async fn active_users<C: ConnectionTrait>(
    conn: &C,
    since: NaiveDateTime,
) -> Result<i64, DbErr> {
    let backend = conn.get_database_backend();
    let edge = ceil(since, Grain::Hour.step());
    let first = trunc(since, Grain::Hour.step());
    let sql = format!(
        "WITH whole AS (\
           SELECT DISTINCT user_id FROM platform_analytics_event_user_hours WHERE bucket >= {p1}) \
         SELECT (SELECT COUNT(*) FROM whole) + (\
           SELECT COUNT(*) FROM platform_analytics_event_user_hours h \
           WHERE h.bucket = {p2} AND h.user_id NOT IN (SELECT user_id FROM whole) \
             AND EXISTS (SELECT 1 FROM platform_analytics_events e WHERE e.user_id = h.user_id \
               AND e.\"timestamp\" >= {p3} AND e.\"timestamp\" < {p1})) AS n",
        p1 = bind(backend, 1),
        p2 = bind(backend, 2),
        p3 = bind(backend, 3),
    );
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [edge.into(), first.into(), since.into()],
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
    // The type's value is named twice.
    let p: Vec<String> = (1..=7).map(|i| bind(backend, i)).collect();
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
