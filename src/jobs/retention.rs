//! Deletes raw events and metrics older than `ANALYTICS_RETENTION_DAYS` in
//! bounded batches (short transactions, so ingestion never waits long), the
//! counter buckets wholly before the same horizon, and expired sessions.
//! Usage rows stay.

use std::time::Instant;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};

use super::{Job, JobError, RunReport, record, try_advisory_lock};
use crate::analytics::counters;
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
    let mut ran = false;
    for table in ["platform_analytics_events", "platform_analytics_metrics"] {
        loop {
            let txn = crate::db::begin_write(db).await?;
            if !try_advisory_lock(&txn, Job::Retention).await? {
                txn.rollback().await?;
                break;
            }
            ran = true;
            let n = delete_batch(&txn, table, "timestamp", cutoff).await?;
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
        deleted += delete_batch(&txn, "platform_auth_sessions", "expires_at", now()).await? as i64;
        record(&txn, Job::Retention, started, deleted, None, None).await?;
        txn.commit().await?;
    }
    Ok(RunReport::new(Job::Retention, ran, deleted, started, None))
}

/// `DELETE … WHERE id IN (SELECT id … LIMIT n)`: portable and bounded.
async fn delete_batch<C: ConnectionTrait>(
    conn: &C,
    table: &str,
    column: &str,
    before: chrono::NaiveDateTime,
) -> Result<u64, DbErr> {
    let table = Alias::new(table);
    let ids = Query::select()
        .column(Alias::new("id"))
        .from(table.clone())
        .and_where(Expr::col(Alias::new(column)).lt(before))
        .limit(BATCH)
        .to_owned();
    let stmt = Query::delete()
        .from_table(table)
        .and_where(Expr::col(Alias::new("id")).in_subquery(ids))
        .to_owned();
    Ok(conn.execute(&stmt).await?.rows_affected())
}
