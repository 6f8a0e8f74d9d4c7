//! Retention: raw events and metrics older than `ANALYTICS_RETENTION_DAYS`,
//! the counter buckets wholly before the same horizon, and expired sessions.
//! Usage rows stay.
//!
//! On Postgres a time partition goes whole once its range ends before the
//! horizon (detach, drop: no row deletes, no vacuum churn), so rows stay up
//! to one partition range past it. The `event_id` keys go a month's
//! generation at a time once it ends before the horizon. Only the first
//! partition of a migrated database (its range starts at MINVALUE) and the
//! default partitions lose rows one batch at a time. SQLite deletes rows in
//! bounded batches (short transactions, so ingestion never waits long).

use std::time::Instant;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

use super::partitions::{self, TABLES};
use super::{Job, JobError, RunReport, locked_write, record};
use crate::analytics::{counters, key_generations};
use crate::time::now;

const BATCH: u64 = 10_000;

/// Rows older than this are past the horizon.
fn horizon(retention_days: u32) -> chrono::NaiveDateTime {
    now() - chrono::Duration::days(i64::from(retention_days))
}

pub(super) async fn run_once(
    db: &DatabaseConnection,
    retention_days: u32,
    started: Instant,
) -> Result<RunReport, JobError> {
    let cutoff = horizon(retention_days);
    let mut deleted: i64 = 0;
    // (table, key column) whose rows go one batch at a time.
    let mut by_rows: Vec<(String, &str)> = vec![];
    if db.get_database_backend() == DbBackend::Postgres {
        let tables: Vec<&str> = TABLES.into_iter().chain([key_generations::TABLE]).collect();
        let dropped = partitions::drop_before(db, &tables, cutoff, |table, name| {
            (table == key_generations::TABLE).then(|| carry_kept_keys(name, cutoff))
        })
        .await?;
        match dropped {
            Some(rows) => deleted += rows,
            None => return Ok(RunReport::new(Job::Retention, false, 0, started, None)),
        }
        for table in tables {
            let key = if table == key_generations::TABLE {
                "event_id"
            } else {
                "id"
            };
            for p in partitions::list(db, table).await? {
                if p.from.is_none() {
                    by_rows.push((p.name, key));
                }
            }
            by_rows.push((format!("{table}_default"), key));
        }
    } else {
        by_rows.extend(TABLES.map(|t| (t.to_string(), "id")));
    }
    let mut ran = false;
    for (table, key) in &by_rows {
        loop {
            let Some(txn) = locked_write(db, Job::Retention).await? else {
                break;
            };
            ran = true;
            let n = delete_batch(&txn, table, key, "timestamp", cutoff).await?;
            txn.commit().await?;
            deleted += n as i64;
            if n < BATCH {
                break;
            }
        }
    }
    if ran {
        let txn = crate::db::begin_write(db).await?;
        // The per-minute and per-hour counters of the deleted rows.
        deleted += counters::delete_before(&txn, cutoff).await? as i64;
        // Sessions whose refresh tokens can no longer be used (cascade).
        deleted +=
            delete_batch(&txn, "platform_auth_sessions", "id", "expires_at", now()).await? as i64;
        record(&txn, Job::Retention, started, deleted, None, None).await?;
        txn.commit().await?;
    }
    Ok(RunReport::new(Job::Retention, ran, deleted, started, None))
}

/// `DELETE … WHERE key IN (SELECT key … LIMIT n)`: portable and bounded.
/// On Postgres the batch is deleted by `ctid`, straight from the rows the
/// subquery found: the `IN` form looked each of them up again through the
/// key's index, 10,000 random probes per batch (a day of 1.67 million
/// `event_id` keys took 13–14 s that way, 2.2–2.7 s by `ctid`).
async fn delete_batch<C: ConnectionTrait>(
    conn: &C,
    table: &str,
    key: &str,
    column: &str,
    before: chrono::NaiveDateTime,
) -> Result<u64, DbErr> {
    if conn.get_database_backend() == DbBackend::Postgres {
        // Table and column names are the job's own, never input.
        let sql = format!(
            r#"DELETE FROM "{table}" WHERE ctid = ANY(ARRAY(
                   SELECT ctid FROM "{table}" WHERE "{column}" < $1 LIMIT {BATCH}))"#
        );
        let stmt = Statement::from_sql_and_values(DbBackend::Postgres, sql, [before.into()]);
        return Ok(conn.execute_raw(stmt).await?.rows_affected());
    }
    let table = Alias::new(table);
    let ids = Query::select()
        .column(Alias::new(key))
        .from(table.clone())
        .and_where(Expr::col(Alias::new(column)).lt(before))
        .limit(BATCH)
        .to_owned();
    let stmt = Query::delete()
        .from_table(table)
        .and_where(Expr::col(Alias::new(key)).in_subquery(ids))
        .to_owned();
    Ok(conn.execute(&stmt).await?.rows_affected())
}

/// Before a key generation that ended before `cutoff` is dropped: copies
/// into the current one the keys whose events are kept (a client's clock
/// ahead). Keys outlive their rows by up to a generation; a retry that finds
/// one whose row is gone deletes it and is stored again.
fn carry_kept_keys(generation: &str, cutoff: chrono::NaiveDateTime) -> Statement {
    let table = key_generations::TABLE;
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!(
            r#"INSERT INTO {table} (event_id, event_pk, "timestamp", gen)
               SELECT event_id, event_pk, "timestamp", $2 FROM {generation} WHERE "timestamp" >= $1
               ON CONFLICT DO NOTHING"#
        ),
        [cutoff.into(), key_generations::current(now()).into()],
    )
}
