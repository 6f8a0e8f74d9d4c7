//! Time partitions of the raw event and metric tables, and the monthly
//! arrival generations of the `event_id` key table (Postgres only).
//!
//! The job creates the partitions from the current interval up to the
//! furthest a client timestamp may reach plus a few intervals, and drains the
//! default partition: rows no partition took (a far-past or far-future
//! timestamp) are moved into a partition made for them. A new partition is
//! filled and then attached, which locks the parent only against other
//! schema changes (`CREATE TABLE … PARTITION OF` would lock out every
//! writer); only writes into the default partition wait while it is
//! checked. Retention drops whole partitions (`drop_before`).

use std::time::Instant;

use chrono::NaiveDateTime;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

use super::{Job, JobError, RunReport, locked_write, record};
use crate::analytics::key_generations;
use crate::config::{PartitionInterval, PartitionSettings};
use crate::time::now;

/// The partitioned tables.
pub const TABLES: [&str; 2] = ["platform_analytics_events", "platform_analytics_metrics"];

/// One partition's range; `None` is MINVALUE below and MAXVALUE above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub from: Option<NaiveDateTime>,
    pub to: Option<NaiveDateTime>,
}

impl Partition {
    fn contains(&self, t: NaiveDateTime) -> bool {
        self.from.is_none_or(|f| f <= t) && self.to.is_none_or(|e| t < e)
    }
}

fn suffix(interval: PartitionInterval, start: NaiveDateTime) -> String {
    let format = match interval {
        PartitionInterval::Hour => "%Y%m%d%H",
        PartitionInterval::Day | PartitionInterval::Week => "%Y%m%d",
        PartitionInterval::Month => "%Y%m",
    };
    start.format(format).to_string()
}

/// The attached partitions of `table` (the default one apart), by range.
pub async fn list<C: ConnectionTrait>(conn: &C, table: &str) -> Result<Vec<Partition>, DbErr> {
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT c.relname::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = to_regclass($1)",
            [table.into()],
        ))
        .await?;
    let mut out = vec![];
    for row in rows {
        let name: String = row.try_get("", "name")?;
        let bound: String = row.try_get("", "bound")?;
        if let Some((from, to)) = parse_bound(&bound) {
            out.push(Partition { name, from, to });
        }
    }
    out.sort_by_key(|p| p.from);
    Ok(out)
}

/// `FOR VALUES FROM ('2026-12-02 00:00:00') TO (MAXVALUE)`; `None` for DEFAULT.
fn parse_bound(bound: &str) -> Option<(Option<NaiveDateTime>, Option<NaiveDateTime>)> {
    let value = |s: &str| -> Option<Option<NaiveDateTime>> {
        let s = s.trim().trim_start_matches('(').trim_end_matches(')');
        if s == "MINVALUE" || s == "MAXVALUE" {
            return Some(None);
        }
        let s = s.trim_matches('\'');
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
            .ok()
            .map(Some)
    };
    let rest = bound.strip_prefix("FOR VALUES FROM ")?;
    let (from, to) = rest.split_once(" TO ")?;
    Some((value(from)?, value(to)?))
}

/// The interval starts the job keeps covered: now to the furthest client
/// timestamp plus `ahead` intervals.
fn wanted(settings: &PartitionSettings, at: NaiveDateTime) -> Vec<NaiveDateTime> {
    let skew = chrono::Duration::from_std(settings.clock_skew).unwrap_or_default();
    let mut last = settings.interval.floor(at + skew);
    for _ in 0..settings.ahead {
        last = settings.interval.next(last);
    }
    let mut out = vec![];
    let mut s = settings.interval.floor(at);
    while s <= last {
        out.push(s);
        s = settings.interval.next(s);
    }
    out
}

/// A partitioned table as the job keeps it: the column its ranges are on,
/// their width, the name prefix of a partition, the starts to keep ready,
/// and how far back rows in the default partition get a partition made.
struct Layout {
    table: &'static str,
    column: &'static str,
    interval: PartitionInterval,
    prefix: &'static str,
    starts: Vec<NaiveDateTime>,
    since: NaiveDateTime,
}

pub(super) async fn run_once(
    db: &DatabaseConnection,
    settings: &PartitionSettings,
    retention_days: u32,
    started: Instant,
) -> Result<RunReport, JobError> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(RunReport::new(Job::Partitions, false, 0, started, None));
    }
    let at = now();
    let horizon = at - chrono::Duration::days(i64::from(retention_days));
    let mut layouts: Vec<Layout> = TABLES
        .map(|table| Layout {
            table,
            column: "timestamp",
            interval: settings.interval,
            prefix: "p",
            starts: wanted(settings, at),
            since: horizon,
        })
        .into();
    // Key generations are by arrival; one holding keys past the horizon
    // still holds newer ones until its month ends.
    layouts.push(Layout {
        table: key_generations::TABLE,
        column: "gen",
        interval: key_generations::SPAN,
        prefix: "g",
        starts: key_generations::wanted(at),
        since: key_generations::current(horizon),
    });
    let mut created = 0;
    for Layout {
        table,
        column,
        interval,
        prefix,
        mut starts,
        since,
    } in layouts
    {
        // Rows the default partition holds since `since` get their own.
        let stray = db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!(
                    r#"SELECT DISTINCT date_trunc($1, "{column}") AS s FROM {table}_default
                       WHERE "{column}" >= $2"#
                ),
                [interval.unit().into(), since.into()],
            ))
            .await?;
        for row in stray {
            starts.push(interval.floor(row.try_get("", "s")?));
        }
        starts.sort();
        starts.dedup();
        let mut existing = list(db, table).await?;
        for start in starts {
            if existing.iter().any(|p| p.contains(start)) {
                continue;
            }
            // Up to the next interval, or to a partition made under another
            // interval setting, whichever comes first.
            let end = existing
                .iter()
                .filter_map(|p| p.from.filter(|f| *f > start))
                .fold(interval.next(start), Ord::min);
            let name = format!("{table}_{prefix}{}", suffix(interval, start));
            match create(db, table, column, &name, start, end).await? {
                Created::Yes => {
                    created += 1;
                    existing.push(Partition {
                        name,
                        from: Some(start),
                        to: Some(end),
                    });
                }
                Created::LockedElsewhere => {
                    return Ok(RunReport::new(
                        Job::Partitions,
                        false,
                        created,
                        started,
                        None,
                    ));
                }
            }
        }
        report(table, &existing, at);
    }
    record(db, Job::Partitions, started, created, None, None).await?;
    Ok(RunReport::new(
        Job::Partitions,
        true,
        created,
        started,
        None,
    ))
}

enum Created {
    Yes,
    LockedElsewhere,
}

/// Fills the new partition `name` with the default partition's rows whose
/// `column` is in `[from, to)` and attaches it, in one transaction under the
/// job's lock.
async fn create(
    db: &DatabaseConnection,
    table: &str,
    column: &str,
    name: &str,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<Created, DbErr> {
    let Some(txn) = locked_write(db, Job::Partitions).await? else {
        return Ok(Created::LockedElsewhere);
    };
    let (from, to) = (
        from.format("%Y-%m-%d %H:%M:%S"),
        to.format("%Y-%m-%d %H:%M:%S"),
    );
    // A long query on the default partition must not queue every insert
    // behind this attach: give up and try at the next run.
    txn.execute_unprepared(&format!(
        r#"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms';
           CREATE TABLE {name} (LIKE {table});
           WITH moved AS (
               DELETE FROM {table}_default WHERE "{column}" >= '{from}' AND "{column}" < '{to}'
               RETURNING *)
           INSERT INTO {name} SELECT * FROM moved;
           ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ('{from}') TO ('{to}');"#
    ))
    .await?;
    txn.commit().await?;
    tracing::info!(table, partition = name, %from, %to, "partition created");
    Ok(Created::Yes)
}

/// How long schema changes wait for a lock before trying again later.
pub const LOCK_TIMEOUT_MS: u64 = 2000;

/// Publishes how far ahead the partitions reach.
fn report(table: &str, partitions: &[Partition], at: NaiveDateTime) {
    let mut reach = at;
    while let Some(p) = partitions.iter().find(|p| p.contains(reach)) {
        match p.to {
            Some(to) => reach = to,
            None => break,
        }
    }
    metrics::gauge!("analytics_partitions", "table" => table.to_string())
        .set(partitions.len() as f64);
    metrics::gauge!("analytics_partitions_ahead_seconds", "table" => table.to_string())
        .set((reach - at).num_seconds() as f64);
}

/// Detaches and drops every partition of `tables` wholly before `cutoff`,
/// each in its own transaction, after the statement `carry` gives for its
/// table and name, if any (rows to keep, copied out first). Answers the rows
/// they held (the planner's estimate: counting would read them all); `None`
/// when another replica holds the retention lock.
pub async fn drop_before<F>(
    db: &DatabaseConnection,
    tables: &[&str],
    cutoff: NaiveDateTime,
    carry: F,
) -> Result<Option<i64>, DbErr>
where
    F: Fn(&str, &str) -> Option<Statement>,
{
    let mut dropped = 0;
    for &table in tables {
        for p in list(db, table).await? {
            if p.to.is_none_or(|to| to > cutoff) {
                continue;
            }
            let Some(txn) = locked_write(db, Job::Retention).await? else {
                return Ok(None);
            };
            let rows = txn
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT GREATEST(reltuples, 0)::int8 AS n FROM pg_class WHERE oid = to_regclass($1)",
                    [p.name.clone().into()],
                ))
                .await?
                .map(|r| r.try_get::<i64>("", "n"))
                .transpose()?
                .unwrap_or(0);
            let carried = match carry(table, &p.name) {
                Some(stmt) => txn.execute_raw(stmt).await?.rows_affected(),
                None => 0,
            };
            txn.execute_unprepared(&format!(
                "SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms';
                 ALTER TABLE {table} DETACH PARTITION {name}; DROP TABLE {name};",
                name = p.name
            ))
            .await?;
            txn.commit().await?;
            tracing::info!(
                table,
                partition = p.name,
                rows,
                carried,
                "partition dropped"
            );
            dropped += rows;
        }
    }
    Ok(Some(dropped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn intervals_floor_and_step() {
        let at = t("2026-12-02 17:45:10");
        assert_eq!(PartitionInterval::Hour.floor(at), t("2026-12-02 17:00:00"));
        assert_eq!(PartitionInterval::Day.floor(at), t("2026-12-02 00:00:00"));
        assert_eq!(PartitionInterval::Week.floor(at), t("2026-11-30 00:00:00"));
        assert_eq!(PartitionInterval::Month.floor(at), t("2026-12-01 00:00:00"));
        assert_eq!(
            PartitionInterval::Month.next(t("2026-12-01 00:00:00")),
            t("2027-01-01 00:00:00")
        );
        assert_eq!(
            PartitionInterval::Week.next(t("2026-11-30 00:00:00")),
            t("2026-12-07 00:00:00")
        );
    }

    #[test]
    fn bounds_parse_as_postgres_prints_them() {
        assert_eq!(
            parse_bound("FOR VALUES FROM (MINVALUE) TO ('2026-12-04 00:00:00')"),
            Some((None, Some(t("2026-12-04 00:00:00"))))
        );
        assert_eq!(
            parse_bound("FOR VALUES FROM ('2026-12-02 00:00:00') TO ('2026-12-03 00:00:00')"),
            Some((
                Some(t("2026-12-02 00:00:00")),
                Some(t("2026-12-03 00:00:00"))
            ))
        );
        assert_eq!(parse_bound("DEFAULT"), None);
    }

    #[test]
    fn wanted_reaches_past_the_clock_skew() {
        let settings = PartitionSettings {
            interval: PartitionInterval::Day,
            ahead: 2,
            clock_skew: Duration::from_secs(36 * 3600),
        };
        let starts = wanted(&settings, t("2026-12-02 17:00:00"));
        // Skew reaches Dec 4 05:00; two more days after that one.
        assert_eq!(starts.first(), Some(&t("2026-12-02 00:00:00")));
        assert_eq!(starts.last(), Some(&t("2026-12-06 00:00:00")));
        assert_eq!(starts.len(), 5);
    }
}
