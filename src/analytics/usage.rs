//! Usage and cost reports over the tables the usage rollup job fills.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDateTime};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use super::QueryError;
use super::domain::{GroupBy, Period};
use super::pricing::{Totals, nano_to_dollars};
use super::views::{CostGroups, CostSummary, CostsResponse, UsageRow, UserCost};
use crate::entity::{usage, usage_breakdown};
use crate::time::today_start;

/// Today and the `days - 1` days before it.
fn report_start(days: i64) -> NaiveDateTime {
    today_start() - Duration::days(days - 1)
}

/// A user's usage rows of `period` over the last `days`, newest first.
pub async fn usage_rows(
    db: &DatabaseConnection,
    user_id: i32,
    period: Period,
    days: i64,
) -> Result<Vec<UsageRow>, QueryError> {
    let start = report_start(days);
    let since = match period {
        Period::Daily => start,
        Period::Monthly => start
            .date()
            .with_day(1)
            .expect("day one exists")
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists"),
    };
    let rows = usage::Entity::find()
        .filter(usage::Column::UserId.eq(user_id))
        .filter(usage::Column::PeriodType.eq(period.as_str()))
        .filter(usage::Column::Date.gte(since))
        .order_by_desc(usage::Column::Date)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| UsageRow {
            user_id: r.user_id,
            api_calls_count: r.api_calls_count,
            tokens_used: r.tokens_used,
            cost_usd: nano_to_dollars(r.cost_nano_usd),
            date: r.date.and_utc(),
            period_type: r.period_type,
        })
        .collect())
}

/// The original's cost report over daily rows (each metric counted once).
pub async fn costs(
    db: &DatabaseConnection,
    user: Option<i32>,
    days: i64,
) -> Result<CostsResponse, QueryError> {
    let start = report_start(days);
    let mut find = usage::Entity::find()
        .filter(usage::Column::PeriodType.eq(Period::Daily.as_str()))
        .filter(usage::Column::Date.gte(start));
    if let Some(u) = user {
        find = find.filter(usage::Column::UserId.eq(u));
    }
    let mut total = Totals::default();
    let mut per_user: BTreeMap<i32, Totals> = BTreeMap::new();
    for r in find.all(db).await? {
        let t = Totals::stored(
            r.api_calls_count,
            r.tokens_used,
            r.cost_nano_usd,
            r.cost_pico_rem,
        );
        total.add(&t);
        per_user.entry(r.user_id).or_default().add(&t);
    }
    let mut user_breakdown: Vec<UserCost> = per_user
        .into_iter()
        .map(|(user_id, t)| UserCost {
            user_id,
            total_cost: t.dollars(),
            total_tokens: t.tokens,
            total_api_calls: t.calls,
        })
        .collect();
    user_breakdown.sort_by(|a, b| {
        b.total_cost
            .total_cmp(&a.total_cost)
            .then(a.user_id.cmp(&b.user_id))
    });
    let cost = total.dollars();
    let per = |n: i64| if n > 0 { cost / n as f64 } else { 0.0 };
    Ok(CostsResponse {
        summary: CostSummary {
            total_cost_usd: cost,
            total_tokens: total.tokens,
            total_api_calls: total.calls,
            period_days: days,
            cost_per_token: per(total.tokens),
            cost_per_api_call: per(total.calls),
        },
        user_breakdown,
        period: super::views::Period {
            start_date: start.and_utc(),
            end_date: crate::time::now_utc(),
        },
    })
}

/// Costs grouped by service, model or day, from the breakdown rows.
pub async fn cost_groups(
    db: &DatabaseConnection,
    user: Option<i32>,
    days: i64,
    group_by: GroupBy,
) -> Result<CostGroups, QueryError> {
    let mut find = usage_breakdown::Entity::find()
        .filter(usage_breakdown::Column::PeriodType.eq(Period::Daily.as_str()))
        .filter(usage_breakdown::Column::Date.gte(report_start(days)));
    if let Some(u) = user {
        find = find.filter(usage_breakdown::Column::UserId.eq(u));
    }
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    for r in find.all(db).await? {
        let k = match group_by {
            GroupBy::Service => r.service_name.clone(),
            GroupBy::Model => r.model.clone(),
            GroupBy::Day => r.date.and_utc().format("%Y-%m-%d").to_string(),
        };
        let t = Totals::stored(
            r.api_calls_count,
            r.tokens_used,
            r.cost_nano_usd,
            r.cost_pico_rem,
        );
        groups.entry(k).or_default().add(&t);
    }
    let mut list: Vec<(String, Totals)> = groups.into_iter().collect();
    if group_by != GroupBy::Day {
        list.sort_by(|a, b| b.1.pico.cmp(&a.1.pico).then_with(|| a.0.cmp(&b.0)));
    }
    let key = group_by.key();
    let groups = list
        .into_iter()
        .map(|(k, t)| {
            // Empty service or model means the metrics named none.
            let label = if k.is_empty() { Value::Null } else { Value::String(k) };
            json!({key: label, "total_cost": t.dollars(), "total_tokens": t.tokens, "total_api_calls": t.calls})
        })
        .collect();
    Ok(CostGroups { groups })
}
