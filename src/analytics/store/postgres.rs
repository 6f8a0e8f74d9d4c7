//! A group as one Postgres statement: the rows go in as arrays through
//! `unnest`, and the `event_id` keys and counter upserts ride in the same
//! statement as data-modifying CTEs, so a group is atomic in one round trip. The text is
//! the same for every group, so each connection prepares it once (multi-row
//! `VALUES` differed with every group size, and a group took six round trips:
//! begin, insert, three upserts, commit).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use sea_orm::sqlx::postgres::PgBindIterExt;
use sea_orm::sqlx::{self, PgConnection, PgPool, pool::PoolConnection};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, FromQueryResult, RuntimeErr, Statement,
};

use super::{EventPlan, stored_event};
use crate::analytics::counters::{
    cost_buckets, event_buckets, metric_buckets, type_user_hours, user_hours,
};
use crate::analytics::{Event, NewEvent, NewMetric, key_generations};
use crate::entity::events;
use crate::time::{Grain, now};

const WRITE: &str = r#"
WITH e AS (
    -- unnest in the select list hands rows straight to the insert; in FROM,
    -- a function scan first copied each row into a tuplestore.
    INSERT INTO platform_analytics_events
        (user_id, event_type, event_data, "timestamp", session_id, ip_address, user_agent, event_id, api_key_id)
    SELECT unnest($1::int4[]), unnest($2::text[]), unnest($3::text[])::json, unnest($4::timestamp[]),
           unnest($5::text[]), unnest($6::text[]), unnest($7::text[]), unnest($8::text[]),
           unnest($9::int4[])
    RETURNING id, event_id, "timestamp"
), event_keys AS (
    -- Into each generation of $50: this month's, and the previous one's in
    -- a month's first hour (see key_generations).
    INSERT INTO platform_analytics_event_keys (event_id, event_pk, "timestamp", gen)
    SELECT e.event_id, e.id, e."timestamp", g FROM e, unnest($50::timestamp[]) AS g
    WHERE e.event_id IS NOT NULL
), event_minutes AS (
    INSERT INTO platform_analytics_event_minutes (bucket, event_type, events)
    SELECT * FROM unnest($10::timestamp[], $11::text[], $12::int8[])
    ON CONFLICT (bucket, event_type)
    DO UPDATE SET events = platform_analytics_event_minutes.events + excluded.events
), event_hours AS (
    INSERT INTO platform_analytics_event_hours (bucket, event_type, events)
    SELECT * FROM unnest($13::timestamp[], $14::text[], $15::int8[])
    ON CONFLICT (bucket, event_type)
    DO UPDATE SET events = platform_analytics_event_hours.events + excluded.events
), user_hours AS (
    INSERT INTO platform_analytics_event_user_hours (bucket, user_id)
    SELECT * FROM unnest($16::timestamp[], $17::int4[])
    ON CONFLICT (bucket, user_id) DO NOTHING
), last_hours AS (
    -- Only users whose latest hour moves on, so a group locks no row
    -- otherwise; in user order, the same lock order on every writer.
    INSERT INTO platform_analytics_user_last_hours AS l (user_id, bucket)
    SELECT n.u, n.b FROM (
        SELECT u, MAX(b) AS b FROM unnest($16::timestamp[], $17::int4[]) AS r(b, u) GROUP BY u
    ) n
    WHERE NOT EXISTS (
        SELECT 1 FROM platform_analytics_user_last_hours o WHERE o.user_id = n.u AND o.bucket >= n.b
    )
    ORDER BY n.u
    ON CONFLICT (user_id) DO UPDATE SET bucket = excluded.bucket WHERE l.bucket < excluded.bucket
), type_user_hours AS (
    INSERT INTO platform_analytics_event_type_user_hours (bucket, event_type, user_id)
    SELECT * FROM unnest($37::timestamp[], $38::text[], $39::int4[])
    ON CONFLICT (bucket, event_type, user_id) DO NOTHING
), cost_minutes AS (
    INSERT INTO platform_analytics_cost_minutes (bucket, model, token_type, tokens, dollars)
    SELECT * FROM unnest($40::timestamp[], $41::text[], $42::text[], $43::int8[], $44::float8[])
    ON CONFLICT (bucket, model, token_type) DO UPDATE SET
        tokens = platform_analytics_cost_minutes.tokens + excluded.tokens,
        dollars = platform_analytics_cost_minutes.dollars + excluded.dollars
), cost_hours AS (
    INSERT INTO platform_analytics_cost_hours (bucket, model, token_type, tokens, dollars)
    SELECT * FROM unnest($45::timestamp[], $46::text[], $47::text[], $48::int8[], $49::float8[])
    ON CONFLICT (bucket, model, token_type) DO UPDATE SET
        tokens = platform_analytics_cost_hours.tokens + excluded.tokens,
        dollars = platform_analytics_cost_hours.dollars + excluded.dollars
), m AS (
    INSERT INTO platform_analytics_metrics
        (metric_name, metric_value, metric_type, user_id, service_name, endpoint, labels, "timestamp", api_key_id)
    SELECT unnest($18::text[]), unnest($19::float8[]), unnest($20::text[]), unnest($21::int4[]),
           unnest($22::text[]), unnest($23::text[]), unnest($24::text[])::json,
           unnest($25::timestamp[]), unnest($26::int4[])
    RETURNING id
), metric_minutes AS (
    INSERT INTO platform_analytics_metric_minutes (bucket, metric_name, endpoint, row_count, value_sum)
    SELECT * FROM unnest($27::timestamp[], $28::text[], $29::text[], $30::int8[], $31::float8[])
    ON CONFLICT (bucket, metric_name, endpoint) DO UPDATE SET
        row_count = platform_analytics_metric_minutes.row_count + excluded.row_count,
        value_sum = platform_analytics_metric_minutes.value_sum + excluded.value_sum
), metric_hours AS (
    INSERT INTO platform_analytics_metric_hours (bucket, metric_name, endpoint, row_count, value_sum)
    SELECT * FROM unnest($32::timestamp[], $33::text[], $34::text[], $35::int8[], $36::float8[])
    ON CONFLICT (bucket, metric_name, endpoint) DO UPDATE SET
        row_count = platform_analytics_metric_hours.row_count + excluded.row_count,
        value_sum = platform_analytics_metric_hours.value_sum + excluded.value_sum
)
-- One row of two arrays: a row per id cost the writer a message and a
-- decode each, on its path between groups.
SELECT (SELECT array_agg(id) FROM e), (SELECT array_agg(id) FROM m)
"#;

/// A writer's connection, kept from one group to the next while groups
/// follow each other: through the pool, each group also paid the ping sqlx
/// sends when a connection goes back, one more round trip. A writer with
/// nothing queued gives it back, so an idle server holds none.
#[derive(Default)]
pub(in crate::analytics) struct Held(Option<(PoolConnection<sqlx::Postgres>, Instant)>);

/// Even under load a held connection goes back this often, so the pool's
/// lifetime rules still reach it.
const HOLD_AT_MOST: Duration = Duration::from_secs(60);

impl Held {
    pub(in crate::analytics) fn release(&mut self) {
        self.0 = None;
    }

    async fn get(&mut self, pool: &PgPool) -> Result<&mut PgConnection, sqlx::Error> {
        if self
            .0
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= HOLD_AT_MOST)
        {
            self.0 = None;
        }
        let (conn, _) = match &mut self.0 {
            Some(held) => held,
            empty => empty.insert((pool.acquire().await?, Instant::now())),
        };
        Ok(&mut **conn)
    }
}

/// Writes the plan's fresh events, every metric and their counters; answers
/// the events stored now (by index into the group) and each metric's id in
/// group order. A failed write gives its connection back.
pub(super) async fn write(
    db: &DatabaseConnection,
    held: &mut Held,
    events: &[&NewEvent],
    plan: &EventPlan<'_>,
    metrics: &[&NewMetric],
) -> Result<(HashMap<usize, Event>, Vec<i64>), DbErr> {
    let fresh: Vec<&NewEvent> = plan.fresh.iter().map(|&i| events[i]).collect();
    let mut query = sqlx::query_as::<_, Ids>(WRITE);
    query = bind_events(query, &fresh);
    query = bind_metrics(query, metrics);
    query = bind_type_users(query, &fresh);
    query = bind_costs(query, metrics);
    query = query.bind(key_generations::targets(now()));
    let sqlx_err = |e| DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)));
    let conn = held
        .get(db.get_postgres_connection_pool())
        .await
        .map_err(sqlx_err)?;
    let (event_ids, metric_ids) = match query.fetch_one(conn).await {
        Ok(ids) => ids,
        Err(e) => {
            held.release();
            return Err(sqlx_err(e));
        }
    };

    // Identity values rise in insertion order, which is the arrays' order:
    // sorted, they pair with the rows whatever order RETURNING used.
    let (mut event_ids, mut metric_ids) = (
        event_ids.unwrap_or_default(),
        metric_ids.unwrap_or_default(),
    );
    event_ids.sort_unstable();
    metric_ids.sort_unstable();
    if event_ids.len() != fresh.len() || metric_ids.len() != metrics.len() {
        return Err(DbErr::Custom("insert returned fewer ids than rows".into()));
    }
    let stored: HashMap<usize, Event> = plan
        .fresh
        .iter()
        .zip(event_ids)
        .map(|(&i, id)| (i, stored_event(id, events[i])))
        .collect();
    Ok((stored, metric_ids))
}

/// The stored rows of these `event_id`s. The key table holds each id once
/// per generation and points at its row by `(id, timestamp)`, the key every
/// partition is searched by. A key whose row retention has removed (keys
/// outlive rows by up to a generation) is deleted, so the retry is stored
/// again as it would be without the key, and its new key is not refused.
pub(super) async fn stored_with_event_ids<C: ConnectionTrait>(
    conn: &C,
    ids: &[String],
) -> Result<Vec<Event>, DbErr> {
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            r#"SELECT k.event_id AS key_event_id, e.* FROM platform_analytics_event_keys k
               LEFT JOIN platform_analytics_events e
                 ON e.id = k.event_pk AND e."timestamp" = k."timestamp"
               WHERE k.event_id = ANY($1)"#,
            [ids.to_vec().into()],
        ))
        .await?;
    let mut found = Vec::with_capacity(rows.len());
    let mut dangling: Vec<String> = vec![];
    for row in rows {
        if row.try_get::<Option<i64>>("", "id")?.is_some() {
            found.push(events::Model::from_query_result(&row, "")?);
        } else {
            dangling.push(row.try_get("", "key_event_id")?);
        }
    }
    if !dangling.is_empty() {
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            r#"DELETE FROM platform_analytics_event_keys k WHERE k.event_id = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM platform_analytics_events e
                               WHERE e.id = k.event_pk AND e."timestamp" = k."timestamp")"#,
            [dangling.into()],
        ))
        .await?;
    }
    Ok(found)
}

/// The write's answer: the new events' ids and the metrics' ids.
type Ids = (Option<Vec<i64>>, Option<Vec<i64>>);
type Query<'q> = sqlx::query::QueryAs<'q, sqlx::Postgres, Ids, sqlx::postgres::PgArguments>;

/// A JSON object as text; the common empty one without an allocation.
fn json_text(value: &serde_json::Value) -> Cow<'static, str> {
    match value.as_object() {
        Some(map) if map.is_empty() => Cow::Borrowed("{}"),
        _ => Cow::Owned(value.to_string()),
    }
}

// The columns are encoded straight from the rows (`bind_iter`): a group of
// 1,000 metrics otherwise cloned each text into a vector only to encode it.
fn bind_events<'q>(query: Query<'q>, rows: &'q [&'q NewEvent]) -> Query<'q> {
    let mut query = query
        .bind(rows.iter().map(|e| e.user_id).bind_iter())
        .bind(rows.iter().map(|e| e.event_type.as_str()).bind_iter())
        .bind(rows.iter().map(|e| json_text(&e.event_data)).bind_iter())
        .bind(rows.iter().map(|e| e.timestamp).bind_iter())
        .bind(rows.iter().map(|e| e.session_id.as_deref()).bind_iter())
        .bind(rows.iter().map(|e| e.ip_address.as_deref()).bind_iter())
        .bind(rows.iter().map(|e| e.user_agent.as_deref()).bind_iter())
        .bind(rows.iter().map(|e| e.event_id.as_deref()).bind_iter())
        .bind(rows.iter().map(|e| e.api_key_id).bind_iter());
    for grain in [Grain::Minute, Grain::Hour] {
        let counts = event_buckets(
            rows.iter().map(|e| (e.timestamp, e.event_type.as_str())),
            grain,
        );
        let (mut buckets, mut types, mut events) = (vec![], vec![], vec![]);
        for ((b, t), n) in counts {
            buckets.push(b);
            types.push(t);
            events.push(n);
        }
        query = query.bind(buckets).bind(types).bind(events);
    }
    let (buckets, users): (Vec<NaiveDateTime>, Vec<i32>) =
        user_hours(rows.iter().map(|e| (e.timestamp, e.user_id)))
            .into_iter()
            .unzip();
    query.bind(buckets).bind(users)
}

/// The last parameters ($37..$39): which users did each type in each hour.
fn bind_type_users<'q>(query: Query<'q>, rows: &'q [&'q NewEvent]) -> Query<'q> {
    let (mut buckets, mut types, mut users) = (vec![], vec![], vec![]);
    for (b, t, u) in type_user_hours(
        rows.iter()
            .map(|e| (e.timestamp, e.event_type.as_str(), e.user_id)),
    ) {
        buckets.push(b);
        types.push(t);
        users.push(u);
    }
    query.bind(buckets).bind(types).bind(users)
}

/// $40..$49: the cost counters, minutes then hours.
fn bind_costs<'q>(mut query: Query<'q>, rows: &'q [&'q NewMetric]) -> Query<'q> {
    for grain in [Grain::Minute, Grain::Hour] {
        let (mut buckets, mut models, mut kinds, mut tokens, mut dollars) =
            (vec![], vec![], vec![], vec![], vec![]);
        for ((b, model, kind), (t, d)) in cost_buckets(rows.iter().copied(), grain) {
            buckets.push(b);
            models.push(model);
            kinds.push(kind);
            tokens.push(t);
            dollars.push(d);
        }
        query = query
            .bind(buckets)
            .bind(models)
            .bind(kinds)
            .bind(tokens)
            .bind(dollars);
    }
    query
}

fn bind_metrics<'q>(query: Query<'q>, rows: &'q [&'q NewMetric]) -> Query<'q> {
    let mut query = query
        .bind(rows.iter().map(|m| m.metric_name.as_str()).bind_iter())
        .bind(rows.iter().map(|m| m.metric_value).bind_iter())
        .bind(rows.iter().map(|m| m.metric_type.as_str()).bind_iter())
        .bind(rows.iter().map(|m| m.user_id).bind_iter())
        .bind(rows.iter().map(|m| m.service_name.as_deref()).bind_iter())
        .bind(rows.iter().map(|m| m.endpoint.as_deref()).bind_iter())
        .bind(rows.iter().map(|m| json_text(&m.labels)).bind_iter())
        .bind(rows.iter().map(|m| m.timestamp).bind_iter())
        .bind(rows.iter().map(|m| m.api_key_id).bind_iter());
    for grain in [Grain::Minute, Grain::Hour] {
        let (mut buckets, mut names, mut endpoints, mut counts, mut values) =
            (vec![], vec![], vec![], vec![], vec![]);
        for ((b, name, endpoint), (n, sum)) in metric_buckets(rows.iter().copied(), grain) {
            buckets.push(b);
            names.push(name);
            endpoints.push(endpoint);
            counts.push(n);
            values.push(sum);
        }
        query = query
            .bind(buckets)
            .bind(names)
            .bind(endpoints)
            .bind(counts)
            .bind(values);
    }
    query
}
