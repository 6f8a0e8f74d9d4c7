//! Fills `platform_analytics_usage` (daily and monthly rows per user) and its
//! per-service/per-model breakdown from metrics named `api_calls`,
//! `tokens_used` and `cost_usd`.
//!
//! Incremental: each run reads only metrics it has not counted yet (ids above
//! the watermark) and adds their sums to the stored rows, so its cost follows
//! the new rows, not the size of the buckets they land in. Money is summed in
//! pico-dollars (nano plus a stored remainder), so adding stays exact. Output
//! and watermark commit in one transaction, so running again changes nothing.
//!
//! Ids are allocated before commit, so a writer on another replica can commit
//! ids below ones already seen. The ranges missing below the watermark are
//! kept as gaps and read again on each run until their rows appear (counted
//! then, once) or `GAP_TTL_SECS` passes (the transaction that held them
//! rolled back).
//!
//! Each run then catches up users' latest hours from the last two hours of
//! presence rows (`counters::catch_up_last_hours`), for rows an older
//! replica wrote during a rolling upgrade.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect, Set, Statement,
};

use super::{Job, JobError, RunReport, locked_write, record};
use crate::analytics::counters;
use crate::analytics::domain::Period;
use crate::analytics::pricing::{
    PriceTable, TokenType, Totals, dollars_to_pico, nano_to_dollars, split_pico,
};
use crate::entity::{jobs, metrics, usage, usage_breakdown};

pub const SOURCES: [&str; 3] = ["api_calls", "tokens_used", "cost_usd"];
/// A writer's transaction still open after this long has failed.
const GAP_TTL_SECS: i64 = 600;
/// Gaps kept at most (the newest). Concurrent multi-row inserts interleave
/// their ids one by one, so one uncommitted group can leave thousands of
/// single-id gaps.
const MAX_GAPS: usize = 100_000;
/// Gap ranges per query (two bound values each).
const GAPS_PER_QUERY: usize = 500;
const USERS_PER_QUERY: usize = 500;
const ROWS_PER_UPSERT: usize = 1000;

type Slice = (String, String);

/// A (user, day)'s totals and its (service, model) slices.
#[derive(Debug, Default)]
struct DayTotals {
    total: Totals,
    slices: BTreeMap<Slice, Totals>,
}

impl DayTotals {
    fn add(&mut self, slice: &Slice, t: &Totals) {
        self.total.add(t);
        match self.slices.get_mut(slice) {
            Some(s) => s.add(t),
            None => {
                self.slices.insert(slice.clone(), *t);
            }
        }
    }

    fn merge(&mut self, o: &DayTotals) {
        self.total.add(&o.total);
        for (slice, t) in &o.slices {
            self.slices.entry(slice.clone()).or_default().add(t);
        }
    }
}

/// An id range seen missing below the watermark: `(lo, hi, first_seen_unix)`.
type Gap = (i64, i64, i64);

/// What one metric contributes.
fn contribution(prices: &PriceTable, m: &MetricRow) -> Totals {
    let model = m.labels.get("model").and_then(|v| v.as_str());
    match m.metric_name.as_str() {
        "api_calls" => Totals {
            calls: m.metric_value.round() as i64,
            ..Default::default()
        },
        "tokens_used" => {
            let tokens = m.metric_value.round() as i64;
            let kind = TokenType::from_label(m.labels.get("token_type").and_then(|v| v.as_str()));
            let pico = model
                .and_then(|model| prices.cost_pico(model, kind, tokens, m.timestamp))
                .unwrap_or(0);
            Totals {
                tokens,
                pico,
                ..Default::default()
            }
        }
        "cost_usd" => Totals {
            pico: dollars_to_pico(m.metric_value),
            ..Default::default()
        },
        _ => Totals::default(),
    }
}

#[derive(Debug, sea_orm::FromQueryResult)]
struct MetricRow {
    id: i64,
    user_id: Option<i32>,
    metric_name: String,
    metric_value: f64,
    labels: serde_json::Value,
    service_name: Option<String>,
    timestamp: NaiveDateTime,
}

/// Every metric in range (not only usage sources): the gaps are found
/// among all ids.
fn select_rows() -> sea_orm::Select<metrics::Entity> {
    metrics::Entity::find().select_only().columns([
        metrics::Column::Id,
        metrics::Column::UserId,
        metrics::Column::MetricName,
        metrics::Column::MetricValue,
        metrics::Column::Labels,
        metrics::Column::ServiceName,
        metrics::Column::Timestamp,
    ])
}

/// Postgres reads the gaps as arrays joined to the table: one index probe
/// per range. An `OR` of ranges is planned from their summed width, so ranges
/// the sequence skipped for good (a rolled-back group, a `COPY` into a table
/// sharing the sequence) made each run a parallel scan of every partition.
const GAP_ROWS: &str = r#"
SELECT m.id, m.user_id, m.metric_name, m.metric_value, m.labels, m.service_name, m."timestamp"
FROM unnest($1::int8[], $2::int8[]) AS g(lo, hi)
JOIN platform_analytics_metrics m ON m.id BETWEEN g.lo AND g.hi
"#;

/// The rows committed into `gaps` by now.
async fn gap_rows<'a>(
    txn: &'a DatabaseTransaction,
    gaps: &[Gap],
) -> Result<BoxStream<'a, Result<MetricRow, DbErr>>, DbErr> {
    if txn.get_database_backend() == DbBackend::Postgres {
        let (lo, hi): (Vec<i64>, Vec<i64>) = gaps.iter().map(|&(lo, hi, _)| (lo, hi)).unzip();
        let query =
            Statement::from_sql_and_values(DbBackend::Postgres, GAP_ROWS, [lo.into(), hi.into()]);
        return Ok(MetricRow::find_by_statement(query)
            .stream(txn)
            .await?
            .boxed());
    }
    let cond = gaps.iter().fold(Condition::any(), |c, &(lo, hi, _)| {
        c.add(metrics::Column::Id.between(lo, hi))
    });
    Ok(select_rows()
        .filter(cond)
        .into_model::<MetricRow>()
        .stream(txn)
        .await?
        .boxed())
}

/// Adds a metric to its (user, day) bucket.
fn tally(days: &mut HashMap<(i32, NaiveDate), DayTotals>, prices: &PriceTable, m: &MetricRow) {
    let Some(user) = m.user_id else { return };
    if !SOURCES.contains(&m.metric_name.as_str()) {
        return;
    }
    let slice = (
        m.service_name.clone().unwrap_or_default(),
        m.labels
            .get("model")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .chars()
            .take(100)
            .collect(),
    );
    days.entry((user, m.timestamp.date()))
        .or_default()
        .add(&slice, &contribution(prices, m));
}

/// What is left of `gaps` once the (sorted) ids in `found` have appeared.
fn fill(gaps: &[Gap], found: &[i64]) -> Vec<Gap> {
    let mut out = Vec::new();
    for &(lo, hi, seen) in gaps {
        let mut start = lo;
        let first = found.partition_point(|&id| id < lo);
        for &id in found[first..].iter().take_while(|&&id| id <= hi) {
            if id > start {
                out.push((start, id - 1, seen));
            }
            start = id + 1;
        }
        if start <= hi {
            out.push((start, hi, seen));
        }
    }
    out
}

fn day_start(d: NaiveDate) -> NaiveDateTime {
    d.and_hms_opt(0, 0, 0).expect("midnight exists")
}

fn month_start(d: NaiveDate) -> NaiveDate {
    d.with_day(1).expect("day one exists")
}

pub(super) async fn run_once(
    db: &DatabaseConnection,
    prices: &PriceTable,
    started: Instant,
) -> Result<RunReport, JobError> {
    let Some(txn) = locked_write(db, Job::UsageRollup).await? else {
        return Ok(RunReport::new(Job::UsageRollup, false, 0, started, None));
    };
    let job = jobs::Entity::find_by_id(Job::UsageRollup.name().to_string())
        .one(&txn)
        .await?;
    let watermark = job.as_ref().map_or(0, |j| j.watermark);
    let stored_gaps: Vec<Gap> = job
        .and_then(|j| j.gaps)
        .and_then(|g| serde_json::from_str(&g).ok())
        .unwrap_or_default();
    let now = crate::time::now_utc().timestamp();
    let open: Vec<Gap> = stored_gaps
        .iter()
        .copied()
        .filter(|g| now - g.2 < GAP_TTL_SECS)
        .collect();

    let mut days: HashMap<(i32, NaiveDate), DayTotals> = HashMap::new();
    // Rows committed into earlier gaps since the last run. The gap ranges
    // and the new rows are disjoint, so each query may see its own snapshot.
    let mut found = Vec::new();
    for chunk in open.chunks(GAPS_PER_QUERY) {
        let mut rows = gap_rows(&txn, chunk).await?;
        while let Some(m) = rows.next().await {
            tokio::task::coop::consume_budget().await;
            let m = m?;
            found.push(m.id);
            tally(&mut days, prices, &m);
        }
    }
    found.sort_unstable();
    let mut gaps = fill(&open, &found);

    // New rows, streamed in id order (a busy day holds millions; only the
    // sums stay in memory), so the ids missing among them show.
    let mut next = watermark + 1;
    {
        let mut rows = select_rows()
            .filter(metrics::Column::Id.gt(watermark))
            .order_by_asc(metrics::Column::Id)
            .into_model::<MetricRow>()
            .stream(&txn)
            .await?;
        while let Some(m) = rows.next().await {
            // A buffered stream never waits, so without this a long run
            // would hold its thread, and the ingest writer behind it.
            tokio::task::coop::consume_budget().await;
            let m = m?;
            if m.id > next {
                gaps.push((next, m.id - 1, now));
            }
            next = m.id + 1;
            tally(&mut days, prices, &m);
        }
    }
    let new_watermark = next - 1;
    if gaps.len() > MAX_GAPS {
        gaps.drain(..gaps.len() - MAX_GAPS);
    }

    // A month moves by the sum of its days' moves.
    let mut periods: BTreeMap<(&str, NaiveDate), BTreeMap<i32, DayTotals>> = BTreeMap::new();
    for ((user, day), bucket) in days {
        periods
            .entry((Period::Monthly.as_str(), month_start(day)))
            .or_default()
            .entry(user)
            .or_default()
            .merge(&bucket);
        periods
            .entry((Period::Daily.as_str(), day))
            .or_default()
            .insert(user, bucket);
    }
    // Before the first run nothing was counted into stored rows (an adopted
    // table may hold others'), so they are replaced rather than added to.
    let fresh = watermark == 0;
    let mut changed = 0;
    for ((period, date), users) in &periods {
        let ids: Vec<i32> = users.keys().copied().collect();
        for chunk in ids.chunks(USERS_PER_QUERY) {
            changed += store(&txn, period, day_start(*date), chunk, users, fresh).await?;
        }
    }
    record(
        &txn,
        Job::UsageRollup,
        started,
        changed,
        Some(new_watermark),
        None,
    )
    .await?;
    if gaps != stored_gaps {
        let text = (!gaps.is_empty()).then(|| serde_json::to_string(&gaps).expect("ints"));
        jobs::Entity::update_many()
            .col_expr(jobs::Column::Gaps, sea_orm::sea_query::Expr::value(text))
            .filter(jobs::Column::Name.eq(Job::UsageRollup.name()))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    // Outside the rollup's transaction, so the rows it moves are not held
    // locked against the writers while a large rollup commits.
    let since = crate::time::now_utc().naive_utc() - chrono::Duration::hours(1);
    let moved = counters::catch_up_last_hours(db, since).await?;
    if moved > 0 {
        tracing::info!(users = moved, "latest hours caught up from presence rows");
    }
    Ok(RunReport::new(
        Job::UsageRollup,
        true,
        changed,
        started,
        Some(new_watermark),
    ))
}

/// The value a row should hold after adding `delta`, or `None` when it
/// stays as stored (or, absent, would be all zero).
fn next_value(stored: Option<Totals>, delta: &Totals, fresh: bool) -> Option<Totals> {
    let mut new = if fresh {
        Totals::default()
    } else {
        stored.unwrap_or_default()
    };
    new.add(delta);
    match stored {
        Some(old) if old == new => None,
        None if new == Totals::default() => None,
        _ => Some(new),
    }
}

/// The stored rows of `users` for one (period, date), of the usage table or
/// its breakdown (`cols`: their period, date and user columns).
async fn stored_rows<E: EntityTrait>(
    txn: &DatabaseTransaction,
    [period_col, date_col, user_col]: [E::Column; 3],
    period: &str,
    date: NaiveDateTime,
    users: &[i32],
) -> Result<Vec<E::Model>, DbErr> {
    E::find()
        .filter(period_col.eq(period))
        .filter(date_col.eq(date))
        .filter(user_col.is_in(users.iter().copied()))
        .all(txn)
        .await
}

/// Inserts `rows`, or on a `conflict` updates the `update` columns.
async fn upsert<E: EntityTrait>(
    txn: &DatabaseTransaction,
    rows: Vec<E::ActiveModel>,
    conflict: &[E::Column],
    update: &[E::Column],
) -> Result<(), DbErr>
where
    E::ActiveModel: Clone,
{
    for chunk in rows.chunks(ROWS_PER_UPSERT) {
        E::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns(conflict.iter().copied())
                    .update_columns(update.iter().copied())
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// Adds the buckets of `users` for one (period, date) to the stored rows;
/// answers how many rows it wrote.
async fn store(
    txn: &DatabaseTransaction,
    period: &str,
    date: NaiveDateTime,
    users: &[i32],
    deltas: &BTreeMap<i32, DayTotals>,
    fresh: bool,
) -> Result<i64, DbErr> {
    let now = crate::time::now();
    let totals: HashMap<i32, Totals> = {
        use usage::Column as C;
        stored_rows::<usage::Entity>(
            txn,
            [C::PeriodType, C::Date, C::UserId],
            period,
            date,
            users,
        )
        .await?
        .iter()
        .map(|r| (r.user_id, Totals::from(r)))
        .collect()
    };
    let slices: HashMap<(i32, Slice), Totals> = {
        use usage_breakdown::Column as C;
        stored_rows::<usage_breakdown::Entity>(
            txn,
            [C::PeriodType, C::Date, C::UserId],
            period,
            date,
            users,
        )
        .await?
        .iter()
        .map(|r| {
            (
                (r.user_id, (r.service_name.clone(), r.model.clone())),
                Totals::from(r),
            )
        })
        .collect()
    };
    let mut rows = Vec::new();
    let mut parts = Vec::new();
    for &user in users {
        let delta = &deltas[&user];
        if let Some(t) = next_value(totals.get(&user).copied(), &delta.total, fresh) {
            let (nano, rem) = split_pico(t.pico);
            rows.push(usage::ActiveModel {
                user_id: Set(user),
                api_calls_count: Set(t.calls),
                tokens_used: Set(t.tokens),
                cost_usd: Set(nano_to_dollars(nano)),
                cost_nano_usd: Set(nano),
                cost_pico_rem: Set(rem),
                date: Set(date),
                period_type: Set(period.to_string()),
                created_at: Set(now),
                updated_at: Set(now),
                ..Default::default()
            });
        }
        for (slice, d) in &delta.slices {
            let stored = slices.get(&(user, slice.clone())).copied();
            if let Some(t) = next_value(stored, d, fresh) {
                let (nano, rem) = split_pico(t.pico);
                parts.push(usage_breakdown::ActiveModel {
                    user_id: Set(user),
                    period_type: Set(period.to_string()),
                    date: Set(date),
                    service_name: Set(slice.0.clone()),
                    model: Set(slice.1.clone()),
                    api_calls_count: Set(t.calls),
                    tokens_used: Set(t.tokens),
                    cost_nano_usd: Set(nano),
                    cost_pico_rem: Set(rem),
                    updated_at: Set(now),
                    ..Default::default()
                });
            }
        }
    }
    let changed = (rows.len() + parts.len()) as i64;
    {
        use usage::Column as C;
        let conflict = [C::UserId, C::PeriodType, C::Date];
        let update = [
            C::ApiCallsCount,
            C::TokensUsed,
            C::CostUsd,
            C::CostNanoUsd,
            C::CostPicoRem,
            C::UpdatedAt,
        ];
        upsert::<usage::Entity>(txn, rows, &conflict, &update).await?;
    }
    {
        use usage_breakdown::Column as C;
        let conflict = [C::UserId, C::PeriodType, C::Date, C::ServiceName, C::Model];
        let update = [
            C::ApiCallsCount,
            C::TokensUsed,
            C::CostNanoUsd,
            C::CostPicoRem,
            C::UpdatedAt,
        ];
        upsert::<usage_breakdown::Entity>(txn, parts, &conflict, &update).await?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_start_on_day_one() {
        let d = NaiveDate::from_ymd_opt(2025, 12, 31).unwrap();
        assert_eq!(
            month_start(d),
            NaiveDate::from_ymd_opt(2025, 12, 1).unwrap()
        );
    }

    #[test]
    fn gaps_shrink_as_their_rows_appear() {
        let gaps = [(10, 19, 7), (30, 30, 8)];
        assert_eq!(fill(&gaps, &[]), gaps.to_vec());
        assert_eq!(
            fill(&gaps, &[5, 10, 14, 15, 19, 30, 40]),
            vec![(11, 13, 7), (16, 18, 7)]
        );
        assert_eq!(
            fill(&gaps, &(10..=19).collect::<Vec<_>>()),
            vec![(30, 30, 8)]
        );
    }

    #[test]
    fn a_row_changes_only_when_its_value_does() {
        let one = Totals {
            calls: 1,
            tokens: 2,
            pico: 3,
        };
        let zero = Totals::default();
        assert_eq!(next_value(None, &zero, false), None);
        assert_eq!(next_value(Some(one), &zero, false), None);
        let two = Totals {
            calls: 2,
            tokens: 4,
            pico: 6,
        };
        assert_eq!(next_value(Some(one), &one, false), Some(two));
        // The first run replaces what it finds.
        assert_eq!(next_value(Some(two), &one, true), Some(one));
        assert_eq!(next_value(Some(one), &one, true), None);
    }
}
