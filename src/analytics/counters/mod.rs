//! Per-minute and per-hour counters of events and metrics (not to be
//! confused with the usage rollup job, `jobs::usage_rollup`). The ingest
//! writer adds each committed group to them in the same transaction, so
//! they are exact and never ahead of or behind the rows. Windowed reads take
//! whole buckets from here and the partial bucket at the window's start from
//! the raw rows.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDateTime;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

use super::pricing::TokenType;
use super::{Event, Metric};
use crate::time::{Grain, Truncator, ceil, trunc};

mod reads;
pub use reads::*;

/// A user's latest hour only ever moves forward, whoever writes it.
const LATEST_HOUR_MOVES_ON: &str = "ON CONFLICT (user_id) DO UPDATE SET bucket = excluded.bucket \
     WHERE platform_analytics_user_last_hours.bucket < excluded.bucket";

/// Rows per upsert statement (3 to 5 parameters each).
const CHUNK: usize = 500;

/// `$1, $2…` for Postgres, `?` for SQLite.
pub(super) fn tuple(backend: DbBackend, first: usize, n: usize) -> String {
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
pub(super) fn events_table(grain: Grain) -> &'static str {
    match grain {
        Grain::Minute => "platform_analytics_event_minutes",
        Grain::Hour | Grain::Day => "platform_analytics_event_hours",
    }
}

pub(super) fn metrics_table(grain: Grain) -> &'static str {
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
pub(super) const STORED: [Grain; 2] = [Grain::Minute, Grain::Hour];

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
    let mut bucket = Truncator::new(grain.step());
    for (timestamp, event_type) in rows {
        *counts
            .entry((bucket.trunc(timestamp), event_type))
            .or_default() += 1;
    }
    counts
}

/// The hours in which each user was active, in key order.
pub(super) fn user_hours(
    rows: impl IntoIterator<Item = (NaiveDateTime, Option<i32>)>,
) -> BTreeSet<(NaiveDateTime, i32)> {
    let mut hour = Truncator::new(Grain::Hour.step());
    rows.into_iter()
        .filter_map(|(timestamp, user)| user.map(|u| (hour.trunc(timestamp), u)))
        .collect()
}

/// Each user's latest hour among these, in user order (one row per user,
/// as an upsert needs, and the same lock order on every writer).
pub(super) fn last_hours(hours: &BTreeSet<(NaiveDateTime, i32)>) -> BTreeMap<i32, NaiveDateTime> {
    let mut latest = BTreeMap::new();
    // Ascending (hour, user): a later hour overwrites an earlier one.
    for &(hour, user) in hours {
        latest.insert(user, hour);
    }
    latest
}

/// The event types each user did in each hour, in key order.
pub(super) fn type_user_hours<'a>(
    rows: impl IntoIterator<Item = (NaiveDateTime, &'a str, Option<i32>)>,
) -> BTreeSet<(NaiveDateTime, &'a str, i32)> {
    let mut hour = Truncator::new(Grain::Hour.step());
    rows.into_iter()
        .filter_map(|(timestamp, event_type, user)| {
            user.map(|u| (hour.trunc(timestamp), event_type, u))
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

/// Stored and new metrics read alike.
macro_rules! cost_key {
    ($($model:ty),*) => {$(
        impl CostKey for $model {
            fn cost_key(&self) -> Option<(NaiveDateTime, String, &'static str, i64, f64)> {
                cost_parts(self.timestamp, self.user_id, &self.metric_name, self.metric_value, &self.labels)
            }
        }
    )*};
}
cost_key!(Metric, super::NewMetric);

/// Tokens and dollars per (bucket, model, token type) at one grain.
pub(super) fn cost_buckets<'a, M: CostKey + 'a>(
    rows: impl IntoIterator<Item = &'a M>,
    grain: Grain,
) -> BTreeMap<(NaiveDateTime, String, &'static str), (i64, f64)> {
    let mut sums: BTreeMap<_, (i64, f64)> = BTreeMap::new();
    let mut bucket = Truncator::new(grain.step());
    for (timestamp, model, kind, tokens, dollars) in rows.into_iter().filter_map(CostKey::cost_key)
    {
        let slot = sums
            .entry((bucket.trunc(timestamp), model, kind))
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
    let mut bucket = Truncator::new(grain.step());
    for row in rows {
        let (timestamp, name, endpoint, value) = row.key();
        let slot = sums
            .entry((bucket.trunc(timestamp), name, endpoint.unwrap_or("")))
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
    let latest = last_hours(&users);
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
    upsert(
        conn,
        "INSERT INTO platform_analytics_user_last_hours (user_id, bucket)",
        LATEST_HOUR_MOVES_ON,
        2,
        latest
            .into_iter()
            .map(|(u, b)| vec![u.into(), b.into()])
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

pub async fn add_metrics<C: ConnectionTrait>(
    conn: &C,
    rows: &[&super::NewMetric],
) -> Result<(), DbErr> {
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
            cost_buckets(rows.iter().copied(), grain)
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
        let sums = metric_buckets(rows.iter().copied(), grain);
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

/// Moves each user's latest hour up to their newest presence row from
/// `since` on; answers the users moved. The writer keeps the latest hours
/// itself, so this finds work only for presence rows written by a replica
/// that predates the table, during a rolling upgrade. Only stale users are
/// written, in user order like the writer.
pub async fn catch_up_last_hours<C: ConnectionTrait>(
    conn: &C,
    since: NaiveDateTime,
) -> Result<u64, DbErr> {
    let backend = conn.get_database_backend();
    let sql = format!(
        "INSERT INTO platform_analytics_user_last_hours (user_id, bucket) \
         SELECT n.user_id, n.bucket FROM (SELECT user_id, MAX(bucket) AS bucket \
           FROM platform_analytics_event_user_hours WHERE bucket >= {} GROUP BY user_id) n \
         WHERE NOT EXISTS (SELECT 1 FROM platform_analytics_user_last_hours l \
           WHERE l.user_id = n.user_id AND l.bucket >= n.bucket) \
         ORDER BY n.user_id {LATEST_HOUR_MOVES_ON}",
        tuple(backend, 1, 1)
    );
    let since = trunc(since, Grain::Hour.step());
    Ok(conn
        .execute_raw(Statement::from_sql_and_values(backend, sql, [since.into()]))
        .await?
        .rows_affected())
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
            // Latest hours before the horizon go with the presence rows.
            ("platform_analytics_user_last_hours", Grain::Hour),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_backend() {
        assert_eq!(tuple(DbBackend::Postgres, 4, 3), "($4, $5, $6)");
        assert_eq!(tuple(DbBackend::Sqlite, 4, 2), "(?, ?)");
    }
}
