//! The `event_id` key table partitioned by arrival generation (Postgres
//! only), so retention drops old keys whole instead of deleting them row by
//! row: a day of 1.7 million keys took 2.2–3.1 s to delete at 50 million
//! events.
//!
//! `gen` is the month the key was written in; the primary key becomes
//! `(event_id, gen)`. A retry in another generation finds its original
//! through the lookup before the write, which reads every generation; the
//! writer also writes a key into the previous generation during the first
//! hour of a month, so two copies racing across the boundary still collide.
//!
//! The existing table becomes the first generation, `FROM (MINVALUE) TO
//! (next month)`, the way the event tables became partitioned: `gen` is added
//! with a constant default (no rewrite), the bound is a `CHECK` validated
//! while writes go on, the `(event_id, gen)` key is built `CONCURRENTLY`, and
//! one short transaction renames, creates the parent and attaches. The
//! partition job creates the monthly generations from there on.

use std::time::Instant;

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

use crate::m20250111_000001_partitions::{
    attach_first, build_unique, is_partitioned, legacy_name, number, text,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

const KEYS: &str = "platform_analytics_event_keys";
const PAIR: &str = "platform_analytics_event_keys_event_id_gen";
const CHECK: &str = "platform_analytics_event_keys_generation_bound";
/// The generation of a key written without one (a server of the previous
/// version during a rolling upgrade): the month it arrives in.
const GEN_DEFAULT: &str = "date_trunc('month', timezone('UTC', now()))";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// Validation and the concurrent index build must run outside a
    /// transaction, or they would hold their locks to the end.
    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        if is_partitioned(db, KEYS).await? {
            return Ok(());
        }
        let started = Instant::now();
        // A constant default is stored once in the catalog: no rewrite.
        db.execute_unprepared(&format!(
            "SET lock_timeout = '10s';
             ALTER TABLE {KEYS} ADD COLUMN IF NOT EXISTS gen TIMESTAMP NOT NULL DEFAULT '-infinity';
             RESET lock_timeout;"
        ))
        .await?;
        // Keys written while this runs carry this month at the latest.
        let bound = text(
            db,
            "SELECT to_char(date_trunc('month', timezone('UTC', now())) + interval '1 month', \
             'YYYY-MM-DD HH24:MI:SS') AS v",
        )
        .await?;
        db.execute_unprepared(&format!(
            r#"ALTER TABLE {KEYS} DROP CONSTRAINT IF EXISTS {CHECK};
               ALTER TABLE {KEYS} ADD CONSTRAINT {CHECK} CHECK (gen < '{bound}') NOT VALID"#
        ))
        .await?;
        db.execute_unprepared(&format!("ALTER TABLE {KEYS} VALIDATE CONSTRAINT {CHECK}"))
            .await?;
        tracing::info!(
            table = KEYS,
            elapsed_s = started.elapsed().as_secs_f64(),
            "key generations: bound validated"
        );
        build_unique(db, KEYS, PAIR, "event_id, gen").await?;
        tracing::info!(
            table = KEYS,
            elapsed_s = started.elapsed().as_secs_f64(),
            "key generations: key built"
        );
        swap(manager, &bound).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres
            || !is_partitioned(manager.get_connection(), KEYS).await?
        {
            return Ok(());
        }
        // Back to one key per `event_id` (a full copy); the first-hour
        // copies in the previous generation collapse into one.
        let txn = manager.begin().await?;
        txn.get_connection()
            .execute_unprepared(&format!(
                r#"CREATE TABLE {KEYS}_plain (
                       event_id VARCHAR(128) PRIMARY KEY,
                       event_pk BIGINT NOT NULL,
                       "timestamp" TIMESTAMP NOT NULL);
                   INSERT INTO {KEYS}_plain
                   SELECT DISTINCT ON (event_id) event_id, event_pk, "timestamp" FROM {KEYS}
                   ORDER BY event_id, gen;
                   DROP TABLE {KEYS};
                   ALTER TABLE {KEYS}_plain RENAME TO {KEYS};
                   ALTER INDEX {KEYS}_plain_pkey RENAME TO {KEYS}_pkey;
                   CREATE INDEX ix_event_keys_timestamp ON {KEYS} ("timestamp");"#
            ))
            .await?;
        txn.commit().await
    }
}

/// The one short transaction: rename, create the parent with the same
/// columns and indexes, attach the old table as the first generation (or
/// drop it when empty) and add the default partition.
async fn swap(manager: &SchemaManager<'_>, bound: &str) -> Result<(), DbErr> {
    let locked = Instant::now();
    let txn = manager.begin().await?;
    let db = txn.get_connection();
    db.execute_unprepared(&format!(
        "SET LOCAL lock_timeout = '10s'; LOCK TABLE {KEYS} IN ACCESS EXCLUSIVE MODE"
    ))
    .await?;
    let empty = number(
        db,
        &format!("SELECT (NOT EXISTS (SELECT 1 FROM {KEYS}))::int::int8 AS v"),
    )
    .await?
        == 1;
    let old = format!("{KEYS}_legacy");
    let time_index = "ix_event_keys_timestamp";
    let mut sql = format!(
        r#"ALTER TABLE {KEYS} DROP CONSTRAINT {KEYS}_pkey;
           ALTER TABLE {KEYS} RENAME TO {old};
           ALTER INDEX IF EXISTS {time_index} RENAME TO {legacy};
           CREATE TABLE {KEYS} (LIKE {old}) PARTITION BY RANGE (gen);
           ALTER TABLE {KEYS} ALTER COLUMN gen SET DEFAULT {GEN_DEFAULT};
           ALTER TABLE {KEYS} ADD CONSTRAINT {KEYS}_pkey PRIMARY KEY (event_id, gen);
           CREATE INDEX {time_index} ON {KEYS} ("timestamp");"#,
        legacy = legacy_name(time_index),
    );
    // Its `event_id` key went above: in the first hour of a month both
    // copies of a key may fall in its range.
    sql.push_str(&attach_first(KEYS, &old, PAIR, bound, CHECK, empty));
    db.execute_unprepared(&sql).await?;
    txn.commit().await?;
    tracing::info!(
        table = KEYS,
        empty,
        locked_ms = locked.elapsed().as_millis() as u64,
        "key generations: swapped"
    );
    Ok(())
}
