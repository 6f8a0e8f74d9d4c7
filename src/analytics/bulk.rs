//! Postgres' set-based insert: a chunk of rows travels as one JSON document
//! and goes in with one `INSERT … SELECT FROM json_to_recordset`, its ids
//! drawn from the table's sequence beforehand in one query. Per-row binds
//! (9 or 10 parameters a row) cost more than the rows themselves.

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, Statement};
use serde::Serialize;

use super::{NewEvent, NewMetric};

/// `n` fresh ids of `table`'s sequence.
async fn reserve_ids(txn: &DatabaseTransaction, table: &str, n: usize) -> Result<Vec<i64>, DbErr> {
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "SELECT nextval(pg_get_serial_sequence('{table}', 'id'))::int8 AS id \
                 FROM generate_series(1, $1::int4)"
            ),
            [sea_orm::Value::Int(Some(n as i32))],
        ))
        .await?;
    rows.iter().map(|r| r.try_get::<i64>("", "id")).collect()
}

async fn insert(txn: &DatabaseTransaction, sql: &str, document: String) -> Result<u64, DbErr> {
    Ok(txn
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [sea_orm::Value::String(Some(document))],
        ))
        .await?
        .rows_affected())
}

fn check(inserted: u64, expected: usize) -> Result<(), DbErr> {
    if inserted as usize != expected {
        return Err(DbErr::Custom(format!(
            "inserted {inserted} rows of {expected}"
        )));
    }
    Ok(())
}

#[derive(Serialize)]
struct MetricRow<'a> {
    id: i64,
    metric_name: &'a str,
    metric_value: f64,
    metric_type: &'a str,
    user_id: Option<i32>,
    service_name: Option<&'a str>,
    endpoint: Option<&'a str>,
    labels: &'a serde_json::Value,
    timestamp: chrono::NaiveDateTime,
    api_key_id: Option<i32>,
}

const METRICS_SQL: &str = "INSERT INTO platform_analytics_metrics \
    (id, metric_name, metric_value, metric_type, user_id, service_name, endpoint, labels, timestamp, api_key_id) \
    SELECT id, metric_name, metric_value, metric_type, user_id, service_name, endpoint, labels, \"timestamp\", api_key_id \
    FROM json_to_recordset($1::json) AS x(id int8, metric_name text, metric_value float8, metric_type text, \
    user_id int4, service_name text, endpoint text, labels json, \"timestamp\" timestamp, api_key_id int4)";

/// Inserts metrics; answers their ids in row order.
pub(super) async fn metrics(
    txn: &DatabaseTransaction,
    rows: &[&NewMetric],
) -> Result<Vec<i64>, DbErr> {
    let ids = reserve_ids(txn, "platform_analytics_metrics", rows.len()).await?;
    let doc: Vec<MetricRow> = rows
        .iter()
        .zip(&ids)
        .map(|(m, &id)| MetricRow {
            id,
            metric_name: &m.metric_name,
            metric_value: m.metric_value,
            metric_type: m.metric_type.as_str(),
            user_id: m.user_id,
            service_name: m.service_name.as_deref(),
            endpoint: m.endpoint.as_deref(),
            labels: &m.labels,
            timestamp: m.timestamp,
            api_key_id: m.api_key_id,
        })
        .collect();
    let doc = serde_json::to_string(&doc).map_err(|e| DbErr::Custom(e.to_string()))?;
    check(insert(txn, METRICS_SQL, doc).await?, rows.len())?;
    Ok(ids)
}

#[derive(Serialize)]
struct EventRow<'a> {
    id: i64,
    user_id: Option<i32>,
    event_type: &'a str,
    event_data: &'a serde_json::Value,
    timestamp: chrono::NaiveDateTime,
    session_id: Option<&'a str>,
    ip_address: Option<&'a str>,
    user_agent: Option<&'a str>,
    event_id: Option<&'a str>,
    api_key_id: Option<i32>,
}

const EVENTS_SQL: &str = "INSERT INTO platform_analytics_events \
    (id, user_id, event_type, event_data, timestamp, session_id, ip_address, user_agent, event_id, api_key_id) \
    SELECT id, user_id, event_type, event_data, \"timestamp\", session_id, ip_address, user_agent, event_id, api_key_id \
    FROM json_to_recordset($1::json) AS x(id int8, user_id int4, event_type text, event_data json, \
    \"timestamp\" timestamp, session_id text, ip_address text, user_agent text, event_id text, api_key_id int4)";

/// Inserts events; answers their ids in row order.
pub(super) async fn events(
    txn: &DatabaseTransaction,
    rows: &[&NewEvent],
) -> Result<Vec<i64>, DbErr> {
    let ids = reserve_ids(txn, "platform_analytics_events", rows.len()).await?;
    let doc: Vec<EventRow> = rows
        .iter()
        .zip(&ids)
        .map(|(e, &id)| EventRow {
            id,
            user_id: e.user_id,
            event_type: &e.event_type,
            event_data: &e.event_data,
            timestamp: e.timestamp,
            session_id: e.session_id.as_deref(),
            ip_address: e.ip_address.as_deref(),
            user_agent: e.user_agent.as_deref(),
            event_id: e.event_id.as_deref(),
            api_key_id: e.api_key_id,
        })
        .collect();
    let doc = serde_json::to_string(&doc).map_err(|e| DbErr::Custom(e.to_string()))?;
    check(insert(txn, EVENTS_SQL, doc).await?, rows.len())?;
    Ok(ids)
}
