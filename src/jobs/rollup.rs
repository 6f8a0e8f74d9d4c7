//! Fills `platform_analytics_usage` (daily and monthly rows per user) and its
//! per-service/per-model breakdown from metrics named `api_calls`,
//! `tokens_used` and `cost_usd`.
//!
//! Incremental: metrics with an id above the watermark name the (user, day)
//! buckets to recompute. Each touched bucket is recomputed whole from the raw
//! rows, so late data lands in the right day and running again changes
//! nothing. Output and watermark commit in one transaction. Ids just below
//! the watermark are rescanned (`RESCAN`), so rows whose transaction
//! committed after a higher id's (another replica's writer) are not missed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use futures_util::StreamExt;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime};
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    EntityTrait, QueryFilter, QuerySelect, Set,
};

use super::pricing::{PriceTable, TokenType, dollars_to_pico, pico_to_nano};
use super::{JobReport, ROLLUP, record, try_advisory_lock};
use crate::analytics::queries::Interval;
use crate::entity::{jobs, metrics, usage, usage_breakdown};

pub const SOURCES: [&str; 3] = ["api_calls", "tokens_used", "cost_usd"];
const RESCAN: i64 = 10_000;
const USERS_PER_QUERY: usize = 500;

/// Totals of one bucket, or of one (service, model) slice of it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub calls: i64,
    pub tokens: i64,
    pub pico: i128,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.calls += o.calls;
        self.tokens += o.tokens;
        self.pico += o.pico;
    }
}

type Slice = (String, String);

#[derive(Debug, Default)]
struct Bucket {
    total: Totals,
    slices: BTreeMap<Slice, Totals>,
}

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
            let kind = match m.labels.get("token_type").and_then(|v| v.as_str()) {
                Some("output") => TokenType::Output,
                _ => TokenType::Input,
            };
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
    user_id: i32,
    metric_name: String,
    metric_value: f64,
    labels: serde_json::Value,
    service_name: Option<String>,
    timestamp: NaiveDateTime,
}

fn day_start(d: NaiveDate) -> NaiveDateTime {
    d.and_hms_opt(0, 0, 0).expect("midnight exists")
}

fn month_start(d: NaiveDate) -> NaiveDate {
    d.with_day(1).expect("day one exists")
}

fn next_month(d: NaiveDate) -> NaiveDate {
    let (y, m) = if d.month() == 12 {
        (d.year() + 1, 1)
    } else {
        (d.year(), d.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1).expect("valid month")
}

pub async fn run_once(
    db: &DatabaseConnection,
    prices: &PriceTable,
    rescanned: &AtomicI64,
    started: Instant,
) -> anyhow::Result<JobReport> {
    let txn = crate::db::begin_write(db).await?;
    if !try_advisory_lock(&txn, ROLLUP).await? {
        txn.rollback().await?;
        return Ok(JobReport {
            job: ROLLUP,
            ran: false,
            rows: 0,
            duration_ms: started.elapsed().as_millis() as i64,
            watermark: None,
        });
    }
    let watermark = jobs::Entity::find_by_id(ROLLUP.to_string())
        .one(&txn)
        .await?
        .map_or(0, |j| j.watermark);
    let max_id: Option<i64> = metrics::Entity::find()
        .select_only()
        .column_as(Expr::from(Func::max(Expr::col(metrics::Column::Id))), "m")
        .into_tuple::<Option<i64>>()
        .one(&txn)
        .await?
        .flatten();
    let Some(max_id) = max_id else {
        record(&txn, ROLLUP, started, 0, Some(watermark), None).await?;
        txn.commit().await?;
        return Ok(report(started, 0, watermark));
    };
    // With nothing new, one more run rescans (a straggler may have committed
    // since); after that an idle system costs nothing.
    if max_id <= watermark && rescanned.load(Ordering::Relaxed) == watermark {
        record(&txn, ROLLUP, started, 0, Some(watermark), None).await?;
        txn.commit().await?;
        return Ok(report(started, 0, watermark));
    }
    let from_id = (watermark - RESCAN).max(0);

    // The (user, day) buckets that new or recent rows touch.
    let day_sql = Interval::Day.sql_expr(txn.get_database_backend());
    let touched: Vec<(i32, String)> = metrics::Entity::find()
        .select_only()
        .column(metrics::Column::UserId)
        .column_as(Expr::cust(day_sql), "day")
        .filter(metrics::Column::Id.gt(from_id))
        .filter(metrics::Column::Id.lte(max_id))
        .filter(metrics::Column::UserId.is_not_null())
        .filter(metrics::Column::MetricName.is_in(SOURCES))
        .distinct()
        .into_tuple()
        .all(&txn)
        .await?;
    let mut by_day: BTreeMap<NaiveDate, BTreeSet<i32>> = BTreeMap::new();
    for (user, day) in touched {
        if let Ok(d) = NaiveDate::parse_from_str(&day[..10.min(day.len())], "%Y-%m-%d") {
            by_day.entry(d).or_default().insert(user);
        }
    }

    let mut changed = 0i64;
    let mut months: BTreeSet<(i32, NaiveDate)> = BTreeSet::new();
    for (day, users) in &by_day {
        let users: Vec<i32> = users.iter().copied().collect();
        for chunk in users.chunks(USERS_PER_QUERY) {
            let buckets = compute_day(&txn, prices, *day, chunk).await?;
            for &user in chunk {
                let bucket = buckets.get(&user).map_or_else(Bucket::default, |b| Bucket {
                    total: b.total,
                    slices: b.slices.clone(),
                });
                changed += store(&txn, user, "daily", day_start(*day), &bucket).await?;
                months.insert((user, month_start(*day)));
            }
        }
    }
    for (user, month) in months {
        let bucket = compute_month(&txn, user, month).await?;
        changed += store(&txn, user, "monthly", day_start(month), &bucket).await?;
    }
    record(&txn, ROLLUP, started, changed, Some(max_id), None).await?;
    txn.commit().await?;
    rescanned.store(
        if max_id <= watermark {
            max_id
        } else {
            i64::MIN
        },
        Ordering::Relaxed,
    );
    Ok(report(started, changed, max_id))
}

fn report(started: Instant, rows: i64, watermark: i64) -> JobReport {
    JobReport {
        job: ROLLUP,
        ran: true,
        rows,
        duration_ms: started.elapsed().as_millis() as i64,
        watermark: Some(watermark),
    }
}

async fn compute_day(
    txn: &DatabaseTransaction,
    prices: &PriceTable,
    day: NaiveDate,
    users: &[i32],
) -> anyhow::Result<HashMap<i32, Bucket>> {
    let start = day_start(day);
    // Streamed: a busy day holds millions of rows; only the sums stay in memory.
    let mut rows = metrics::Entity::find()
        .select_only()
        .columns([
            metrics::Column::UserId,
            metrics::Column::MetricName,
            metrics::Column::MetricValue,
            metrics::Column::Labels,
            metrics::Column::ServiceName,
            metrics::Column::Timestamp,
        ])
        .filter(metrics::Column::Timestamp.gte(start))
        .filter(metrics::Column::Timestamp.lt(start + Duration::days(1)))
        .filter(metrics::Column::UserId.is_in(users.iter().copied()))
        .filter(metrics::Column::MetricName.is_in(SOURCES))
        .into_model::<MetricRow>()
        .stream(txn)
        .await?;
    let mut out: HashMap<i32, Bucket> = HashMap::new();
    while let Some(m) = rows.next().await {
        let m = m?;
        let t = contribution(prices, &m);
        let bucket = out.entry(m.user_id).or_default();
        bucket.total.add(&t);
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
        bucket.slices.entry(slice).or_default().add(&t);
    }
    Ok(out)
}

/// A month is the sum of its daily rows (which retention never deletes).
async fn compute_month(
    txn: &DatabaseTransaction,
    user: i32,
    month: NaiveDate,
) -> anyhow::Result<Bucket> {
    let (from, to) = (day_start(month), day_start(next_month(month)));
    let mut bucket = Bucket::default();
    for row in usage_breakdown::Entity::find()
        .filter(usage_breakdown::Column::UserId.eq(user))
        .filter(usage_breakdown::Column::PeriodType.eq("daily"))
        .filter(usage_breakdown::Column::Date.gte(from))
        .filter(usage_breakdown::Column::Date.lt(to))
        .all(txn)
        .await?
    {
        let t = Totals {
            calls: row.api_calls_count,
            tokens: row.tokens_used,
            pico: i128::from(row.cost_nano_usd) * 1000,
        };
        bucket.total.add(&t);
        bucket
            .slices
            .entry((row.service_name, row.model))
            .or_default()
            .add(&t);
    }
    Ok(bucket)
}

/// Writes a bucket where it differs from what is stored; answers how many
/// rows changed (0 on a rerun with no new data).
async fn store(
    txn: &DatabaseTransaction,
    user: i32,
    period: &str,
    date: NaiveDateTime,
    bucket: &Bucket,
) -> anyhow::Result<i64> {
    let now = crate::analytics::ingest::now();
    let mut changed = 0;
    let nano = pico_to_nano(bucket.total.pico);
    let existing = usage::Entity::find()
        .filter(usage::Column::UserId.eq(user))
        .filter(usage::Column::PeriodType.eq(period))
        .filter(usage::Column::Date.eq(date))
        .one(txn)
        .await?;
    let empty = bucket.total == Totals::default();
    match existing {
        Some(row)
            if row.api_calls_count == bucket.total.calls
                && row.tokens_used == bucket.total.tokens
                && row.cost_nano_usd == nano => {}
        Some(row) => {
            let mut am: usage::ActiveModel = row.into();
            am.api_calls_count = Set(bucket.total.calls);
            am.tokens_used = Set(bucket.total.tokens);
            am.cost_nano_usd = Set(nano);
            am.cost_usd = Set(super::pricing::nano_to_dollars(nano));
            am.updated_at = Set(now);
            am.update(txn).await?;
            changed += 1;
        }
        None if empty => {}
        None => {
            usage::ActiveModel {
                user_id: Set(user),
                api_calls_count: Set(bucket.total.calls),
                tokens_used: Set(bucket.total.tokens),
                cost_usd: Set(super::pricing::nano_to_dollars(nano)),
                cost_nano_usd: Set(nano),
                date: Set(date),
                period_type: Set(period.to_string()),
                created_at: Set(now),
                updated_at: Set(now),
                ..Default::default()
            }
            .insert(txn)
            .await?;
            changed += 1;
        }
    }

    let stored = usage_breakdown::Entity::find()
        .filter(usage_breakdown::Column::UserId.eq(user))
        .filter(usage_breakdown::Column::PeriodType.eq(period))
        .filter(usage_breakdown::Column::Date.eq(date))
        .all(txn)
        .await?;
    let mut stored: HashMap<Slice, usage_breakdown::Model> = stored
        .into_iter()
        .map(|r| ((r.service_name.clone(), r.model.clone()), r))
        .collect();
    for (slice, t) in &bucket.slices {
        let nano = pico_to_nano(t.pico);
        match stored.remove(slice) {
            Some(r)
                if r.api_calls_count == t.calls
                    && r.tokens_used == t.tokens
                    && r.cost_nano_usd == nano => {}
            Some(r) => {
                let mut am: usage_breakdown::ActiveModel = r.into();
                am.api_calls_count = Set(t.calls);
                am.tokens_used = Set(t.tokens);
                am.cost_nano_usd = Set(nano);
                am.updated_at = Set(now);
                am.update(txn).await?;
                changed += 1;
            }
            None => {
                usage_breakdown::ActiveModel {
                    user_id: Set(user),
                    period_type: Set(period.to_string()),
                    date: Set(date),
                    service_name: Set(slice.0.clone()),
                    model: Set(slice.1.clone()),
                    api_calls_count: Set(t.calls),
                    tokens_used: Set(t.tokens),
                    cost_nano_usd: Set(nano),
                    updated_at: Set(now),
                    ..Default::default()
                }
                .insert(txn)
                .await?;
                changed += 1;
            }
        }
    }
    for (_, gone) in stored {
        usage_breakdown::Entity::delete_by_id(gone.id)
            .exec(txn)
            .await?;
        changed += 1;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_roll_over_years() {
        let d = NaiveDate::from_ymd_opt(2025, 12, 31).unwrap();
        assert_eq!(
            month_start(d),
            NaiveDate::from_ymd_opt(2025, 12, 1).unwrap()
        );
        assert_eq!(next_month(d), NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
    }
}
