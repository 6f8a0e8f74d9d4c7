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

/// Distinct users with events at or after `since`, however far ahead a
/// client's clock was allowed to be. A window open at its end needs no set
/// of users: those whose latest hour is at or after its first whole hour,
/// plus those whose latest hour is its ragged first one and who have an
/// event inside the window (deduplicating the window's (hour, user) pairs
/// took 8 ms at 50 million rows, the dashboard's costliest read).
pub async fn active_users<C: ConnectionTrait>(
    conn: &C,
    since: NaiveDateTime,
) -> Result<i64, DbErr> {
    let backend = conn.get_database_backend();
    let step = Grain::Hour.step();
    let [h0, first, since_p] = [1, 2, 3].map(|i| bind(backend, i));
    let sql = format!(
        "SELECT (SELECT COUNT(*) FROM platform_analytics_user_last_hours WHERE bucket >= {h0}) \
              + (SELECT COUNT(*) FROM platform_analytics_user_last_hours l \
                 WHERE l.bucket = {first} AND l.bucket < {h0} AND EXISTS ( \
                   SELECT 1 FROM platform_analytics_events e WHERE e.user_id = l.user_id \
                   AND e.\"timestamp\" >= {since_p} AND e.\"timestamp\" < {h0})) AS n"
    );
    let values: [Value; 3] = [
        ceil(since, step).into(),
        trunc(since, step).into(),
        since.into(),
    ];
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    row.map_or(Ok(0), |r| r.try_get::<i64>("", "n"))
}

/// The distinct users with events in [from, to).
async fn users_in<C: ConnectionTrait>(
    conn: &C,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<i64, DbErr> {
    // Overall, the count is one row.
    Ok(present(conn, from, to, false, None)
        .await?
        .first()
        .map_or(0, |r| r.1))
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
/// (optionally one type). Exact.
pub async fn distinct_users<C: ConnectionTrait>(
    conn: &C,
    from: NaiveDateTime,
    to: NaiveDateTime,
    event_type: Option<&str>,
) -> Result<(i64, Vec<(String, i64)>), DbErr> {
    let by_type = present(conn, from, to, true, event_type).await?;
    if event_type.is_some() {
        let n = by_type.first().map_or(0, |t| t.1);
        return Ok((n, by_type));
    }
    Ok((users_in(conn, from, to).await?, by_type))
}

/// Users (or (type, user) pairs with `per_type`) with events in [from, to),
/// counted (per type): the presence of the whole hours inside the window,
/// plus those present in its ragged first and last hours who are not among
/// them and have an event inside the window. The ragged hours are probed
/// per user present, not read per raw row, so they cost the same at any
/// event rate (at 50 million rows a ragged hour held tens of thousands of
/// rows). A window inside one hour has no whole hour, and all of it is
/// ragged.
async fn present<C: ConnectionTrait>(
    conn: &C,
    from: NaiveDateTime,
    to: NaiveDateTime,
    per_type: bool,
    event_type: Option<&str>,
) -> Result<Vec<(String, i64)>, DbErr> {
    let backend = conn.get_database_backend();
    let step = Grain::Hour.step();
    let (h0, h1) = (ceil(from, step), trunc(to, step));
    // A key not among the whole hours' has no event in [h0, h1), so each
    // edge's probe reads only its own ragged part of the window: at most an
    // hour of the user's events, not the whole window's (for a pair whose
    // events in that hour fell outside the window, the probe walked all of
    // it: 0.8 s over 24 hours at 50 million rows). Inside one hour both
    // parts are the window.
    let mut values: Vec<Value> = vec![
        h0.into(),
        h1.into(),
        trunc(from, step).into(),
        to.into(),
        from.into(),
        h0.min(to).into(),
        h1.max(from).into(),
    ];
    let p: Vec<String> = (1..=8).map(|i| bind(backend, i)).collect();
    let (table, key, h_key, same_type, group) = if per_type {
        (
            "platform_analytics_event_type_user_hours",
            "event_type, user_id",
            "h.event_type, h.user_id",
            " AND e.event_type = h.event_type",
            "event_type",
        )
    } else {
        (
            "platform_analytics_event_user_hours",
            "user_id",
            "h.user_id",
            "",
            "''",
        )
    };
    let mut of_type = String::new();
    if let Some(t) = event_type {
        values.push(t.to_string().into());
        of_type = format!(" AND event_type = {}", p[7]);
    }
    let grouped = if per_type { " GROUP BY event_type" } else { "" };
    // Each edge is its own range of the presence table (an index-only scan
    // of the key), probed over its own part of the window with constant
    // bounds, so the planner prunes the raw partitions to that hour's.
    let probe = |edge: &str, lo: &str, hi: &str| {
        format!(
            "SELECT {h_key} FROM {table} h WHERE {edge}{of_type} \
               AND ({h_key}) NOT IN (SELECT {key} FROM whole) \
               AND EXISTS (SELECT 1 FROM platform_analytics_events e \
                 WHERE e.user_id = h.user_id{same_type} AND e.\"timestamp\" >= {lo} AND e.\"timestamp\" < {hi})"
        )
    };
    // The placeholders, in the order of `values`.
    let [h0, h1, first, to, from, first_end, last_start] = [0, 1, 2, 3, 4, 5, 6].map(|i| &p[i]);
    let ragged = format!(
        "{} UNION {}",
        probe(
            &format!("h.bucket >= {first} AND h.bucket < {h0}"),
            from,
            first_end
        ),
        probe(
            &format!("h.bucket >= {h1} AND h.bucket < {to}"),
            last_start,
            to
        ),
    );
    let sql = format!(
        "WITH whole AS (\
           SELECT DISTINCT {key} FROM {table} WHERE bucket >= {h0} AND bucket < {h1}{of_type}), \
         ragged AS ({ragged}) \
         SELECT {group} AS event_type, COUNT(*) AS n FROM (\
           SELECT {key} FROM whole UNION ALL SELECT {key} FROM ragged) u{grouped}"
    );
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("", "event_type")?, r.try_get("", "n")?)))
        .collect()
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
