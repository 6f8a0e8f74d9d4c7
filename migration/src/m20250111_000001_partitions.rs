//! Range partitions by `timestamp` for the raw event and metric tables on
//! Postgres, and the `event_id` key table that keeps retried events stored
//! once (a unique index on a partitioned table must include `timestamp`).
//! SQLite keeps plain tables.
//!
//! An existing table becomes the first partition, `FROM (MINVALUE) TO (B)`,
//! without a long lock: the bound is a `CHECK` added `NOT VALID` and
//! validated while writes go on, the `(id, timestamp)` key is built
//! `CONCURRENTLY`, and the short final transaction renames, creates the
//! parent and attaches, which the validated check lets Postgres do without a
//! scan. Every step can run again after an interruption. The partition job
//! (server) creates the partitions from `B` on; rows no partition takes land
//! in the default partition, which the job drains.

use std::time::{Duration, Instant};

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

const EVENTS: &str = "platform_analytics_events";
const METRICS: &str = "platform_analytics_metrics";
const KEYS: &str = "platform_analytics_event_keys";
/// Rows of `event_id` copied per statement while writes go on.
const KEY_BATCH: i64 = 200_000;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// Validation, the concurrent index build and the key backfill must run
    /// outside a transaction, or they would hold their locks to the end.
    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            r#"CREATE TABLE IF NOT EXISTS {KEYS} (
                   event_id VARCHAR(128) PRIMARY KEY,
                   event_pk BIGINT NOT NULL,
                   "timestamp" TIMESTAMP NOT NULL);
               CREATE INDEX IF NOT EXISTS ix_event_keys_timestamp ON {KEYS} ("timestamp");"#
        ))
        .await?;
        for table in [EVENTS, METRICS] {
            if is_partitioned(db, table).await? {
                continue;
            }
            partition(manager, table).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        for table in [EVENTS, METRICS] {
            if is_partitioned(manager.get_connection(), table).await? {
                unpartition(manager, table).await?;
            }
        }
        manager
            .get_connection()
            .execute_unprepared(&format!("DROP TABLE IF EXISTS {KEYS}"))
            .await?;
        Ok(())
    }
}

pub(crate) async fn is_partitioned<C: ConnectionTrait>(db: &C, table: &str) -> Result<bool, DbErr> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT relkind::text = 'p' AS p FROM pg_class WHERE oid = to_regclass($1)",
            [table.into()],
        ))
        .await?;
    Ok(row
        .map(|r| r.try_get::<bool>("", "p"))
        .transpose()?
        .unwrap_or(false))
}

pub(crate) async fn text<C: ConnectionTrait>(db: &C, sql: &str) -> Result<String, DbErr> {
    db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await?
        .ok_or_else(|| DbErr::Custom(format!("no row from {sql}")))?
        .try_get::<String>("", "v")
}

pub(crate) async fn number<C: ConnectionTrait>(db: &C, sql: &str) -> Result<i64, DbErr> {
    db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await?
        .ok_or_else(|| DbErr::Custom(format!("no row from {sql}")))?
        .try_get::<i64>("", "v")
}

/// Turns `table` into a partitioned table whose first partition holds every
/// existing row (none when it is empty).
async fn partition(manager: &SchemaManager<'_>, table: &str) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let started = Instant::now();
    let rows = number(
        db,
        &format!(
            "SELECT GREATEST(reltuples, 0)::int8 AS v FROM pg_class WHERE oid = '{table}'::regclass"
        ),
    )
    .await?;
    tracing::info!(table, rows_estimate = rows, "partitioning: start");

    // Everything now stored lies before the bound; two days ahead leaves
    // room for the clock skew clients may use while this runs.
    let bound = text(
        db,
        "SELECT to_char(date_trunc('day', timezone('UTC', now())) + interval '2 days', \
         'YYYY-MM-DD HH24:MI:SS') AS v",
    )
    .await?;
    let check = format!("{table}_partition_bound");
    db.execute_unprepared(&format!(
        r#"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check};
           ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ("timestamp" < '{bound}') NOT VALID"#
    ))
    .await?;
    db.execute_unprepared(&format!("ALTER TABLE {table} VALIDATE CONSTRAINT {check}"))
        .await?;
    tracing::info!(
        table,
        elapsed_s = started.elapsed().as_secs_f64(),
        "partitioning: bound validated"
    );

    // The partition key: (id, timestamp).
    let key = format!("{table}_id_timestamp");
    build_unique(db, table, &key, r#"id, "timestamp""#).await?;
    tracing::info!(
        table,
        elapsed_s = started.elapsed().as_secs_f64(),
        "partitioning: key built"
    );

    let mut copied_to = 0;
    if table == EVENTS {
        copied_to = backfill_keys(db, started).await?;
    }
    swap(manager, table, &bound, &check, &key, copied_to).await?;
    tracing::info!(
        table,
        elapsed_s = started.elapsed().as_secs_f64(),
        "partitioning: done"
    );
    Ok(())
}

/// Builds the unique index `name` on `table (columns)` while writes go on.
/// A build interrupted before leaves an invalid index behind; it is rebuilt.
pub(crate) async fn build_unique<C: ConnectionTrait>(
    db: &C,
    table: &str,
    name: &str,
    columns: &str,
) -> Result<(), DbErr> {
    let valid = number(
        db,
        &format!(
            "SELECT COALESCE((SELECT indisvalid::int FROM pg_index \
             WHERE indexrelid = to_regclass('{name}')), -1)::int8 AS v"
        ),
    )
    .await?;
    if valid == 0 {
        db.execute_unprepared(&format!("DROP INDEX CONCURRENTLY {name}"))
            .await?;
    }
    if valid != 1 {
        let sql = format!("CREATE UNIQUE INDEX CONCURRENTLY {name} ON {table} ({columns})");
        report_index_progress(db, table, db.execute_unprepared(&sql)).await?;
    }
    Ok(())
}

/// Logs the build's progress every few seconds while it runs.
async fn report_index_progress<C, F>(db: &C, table: &str, build: F) -> Result<(), DbErr>
where
    C: ConnectionTrait,
    F: std::future::Future<Output = Result<sea_orm_migration::sea_orm::ExecResult, DbErr>>,
{
    tokio::pin!(build);
    loop {
        tokio::select! {
            done = &mut build => return done.map(|_| ()),
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                let progress = db
                    .query_one_raw(Statement::from_string(
                        DbBackend::Postgres,
                        format!(
                            "SELECT phase, blocks_done::int8 AS done, blocks_total::int8 AS total, \
                             tuples_done::int8 AS tuples FROM pg_stat_progress_create_index \
                             WHERE relid = '{table}'::regclass"
                        ),
                    ))
                    .await;
                if let Ok(Some(row)) = progress {
                    tracing::info!(
                        table,
                        phase = row.try_get::<String>("", "phase").unwrap_or_default(),
                        blocks_done = row.try_get::<i64>("", "done").unwrap_or_default(),
                        blocks_total = row.try_get::<i64>("", "total").unwrap_or_default(),
                        tuples_done = row.try_get::<i64>("", "tuples").unwrap_or_default(),
                        "partitioning: building the key"
                    );
                }
            }
        }
    }
}

/// Copies every stored `event_id` into the key table in short statements;
/// returns the highest event id covered (the swap copies the rest).
async fn backfill_keys<C: ConnectionTrait>(db: &C, started: Instant) -> Result<i64, DbErr> {
    let max = number(
        db,
        &format!("SELECT COALESCE(MAX(id), 0)::int8 AS v FROM {EVENTS}"),
    )
    .await?;
    let mut from = 0;
    while from < max {
        let to = Ord::min(from + KEY_BATCH, max);
        db.execute_unprepared(&format!(
            r#"INSERT INTO {KEYS} (event_id, event_pk, "timestamp")
               SELECT event_id, id, "timestamp" FROM {EVENTS}
               WHERE id > {from} AND id <= {to} AND event_id IS NOT NULL
               ON CONFLICT (event_id) DO NOTHING"#
        ))
        .await?;
        from = to;
        tracing::info!(
            table = EVENTS,
            done = from,
            of = max,
            elapsed_s = started.elapsed().as_secs_f64(),
            "partitioning: copying event ids"
        );
    }
    Ok(max)
}

/// The one short transaction: rename, create the parent with the same
/// columns and indexes, attach the old table as the first partition (or drop
/// it when empty) and add the default partition.
async fn swap(
    manager: &SchemaManager<'_>,
    table: &str,
    bound: &str,
    check: &str,
    key: &str,
    keys_copied_to: i64,
) -> Result<(), DbErr> {
    let locked = Instant::now();
    let txn = manager.begin().await?;
    let db = txn.get_connection();
    // Waiting behind a long query would stall every writer queued behind
    // this lock: give up instead, and the migration can run again.
    db.execute_unprepared(&format!(
        "SET LOCAL lock_timeout = '10s'; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
    ))
    .await?;
    if table == EVENTS {
        db.execute_unprepared(&format!(
            r#"INSERT INTO {KEYS} (event_id, event_pk, "timestamp")
               SELECT event_id, id, "timestamp" FROM {EVENTS}
               WHERE id > {keys_copied_to} AND event_id IS NOT NULL
               ON CONFLICT (event_id) DO NOTHING"#
        ))
        .await?;
    }
    let empty = number(
        db,
        &format!("SELECT (NOT EXISTS (SELECT 1 FROM {table}))::int::int8 AS v"),
    )
    .await?
        == 1;
    // The plain indexes move to the parent under their names; unique ones
    // other than the key (`event_id`'s) stay on the old table alone.
    let indexes = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS def \
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 WHERE i.indrelid = '{table}'::regclass AND NOT i.indisunique ORDER BY 1"
            ),
        ))
        .await?
        .into_iter()
        .map(|r| {
            Ok((
                r.try_get::<String>("", "name")?,
                r.try_get::<String>("", "def")?,
            ))
        })
        .collect::<Result<Vec<_>, DbErr>>()?;
    // Ids go on from where the old sequence stopped. It may be an identity
    // (ours) or a serial (the original's); the parent takes a plain sequence
    // under the same name, which partitions of any Postgres version accept.
    let seq = format!("{table}_id_seq");
    let next = number(
        db,
        &format!(
            "SELECT (CASE WHEN is_called THEN last_value + 1 ELSE last_value END)::int8 AS v \
             FROM {seq}"
        ),
    )
    .await?;
    let old = format!("{table}_legacy");
    let mut sql = format!(
        r#"ALTER TABLE {table} ALTER COLUMN id DROP IDENTITY IF EXISTS;
           ALTER TABLE {table} ALTER COLUMN id DROP DEFAULT;
           DROP SEQUENCE IF EXISTS {seq};
           ALTER TABLE {table} RENAME TO {old};
           ALTER INDEX IF EXISTS {table}_pkey RENAME TO {old}_pkey;
           CREATE TABLE {table} (LIKE {old}) PARTITION BY RANGE ("timestamp");
           CREATE SEQUENCE {seq} AS BIGINT START WITH {next} OWNED BY {table}.id;
           ALTER TABLE {table} ALTER COLUMN id SET DEFAULT nextval('{seq}');
           ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY (id, "timestamp");"#
    );
    for (name, def) in &indexes {
        sql.push_str(&format!(
            "ALTER INDEX {name} RENAME TO {};",
            legacy_name(name)
        ));
        sql.push_str(def);
        sql.push(';');
    }
    sql.push_str(&attach_first(table, &old, key, bound, check, empty));
    db.execute_unprepared(&sql).await?;
    txn.commit().await?;
    tracing::info!(
        table,
        empty,
        locked_ms = locked.elapsed().as_millis() as u64,
        "partitioning: swapped"
    );
    Ok(())
}

/// The end of a swap: the old table `old` attached as the first partition
/// of `table`, `FROM (MINVALUE) TO (bound)`, its unique index `key` matching
/// the parent's primary key and its `check` no longer needed (or dropped,
/// when `empty`); then the default partition.
pub(crate) fn attach_first(
    table: &str,
    old: &str,
    key: &str,
    bound: &str,
    check: &str,
    empty: bool,
) -> String {
    let attach = if empty {
        format!("DROP TABLE {old};")
    } else {
        format!(
            r#"ALTER TABLE {old} ADD CONSTRAINT {key} UNIQUE USING INDEX {key};
               ALTER TABLE {table} ATTACH PARTITION {old} FOR VALUES FROM (MINVALUE) TO ('{bound}');
               ALTER TABLE {old} DROP CONSTRAINT {check};"#
        )
    };
    format!("{attach}CREATE TABLE {table}_default PARTITION OF {table} DEFAULT;")
}

/// Names stay within Postgres' 63 bytes.
pub(crate) fn legacy_name(name: &str) -> String {
    let mut base = name.to_string();
    base.truncate(63 - "_legacy".len());
    format!("{base}_legacy")
}

/// Back to a plain table: every row is copied (a full rewrite).
async fn unpartition(manager: &SchemaManager<'_>, table: &str) -> Result<(), DbErr> {
    let txn = manager.begin().await?;
    let db = txn.get_connection();
    let indexes = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT pg_get_indexdef(i.indexrelid) AS def FROM pg_index i \
                 WHERE i.indrelid = '{table}'::regclass AND NOT i.indisunique"
            ),
        ))
        .await?
        .into_iter()
        .map(|r| r.try_get::<String>("", "def"))
        .collect::<Result<Vec<_>, DbErr>>()?;
    let seq = format!("{table}_id_seq");
    let mut sql = format!(
        r#"CREATE TABLE {table}_plain (LIKE {table} INCLUDING DEFAULTS);
           INSERT INTO {table}_plain SELECT * FROM {table};
           ALTER SEQUENCE {seq} OWNED BY NONE;
           DROP TABLE {table};
           ALTER TABLE {table}_plain RENAME TO {table};
           ALTER SEQUENCE {seq} OWNED BY {table}.id;
           ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY (id);"#
    );
    for def in indexes {
        sql.push_str(&def);
        sql.push(';');
    }
    if table == EVENTS {
        sql.push_str(&format!(
            "CREATE UNIQUE INDEX ux_events_event_id ON {table} (event_id);"
        ));
    }
    db.execute_unprepared(&sql.replace(" ON ONLY ", " ON "))
        .await?;
    txn.commit().await
}
