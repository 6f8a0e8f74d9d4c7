//! Usage and cost endpoints over the rollup tables, and the job triggers.
//! A bearer user reads only their own figures (an admin anyone's); a
//! service call with only the API key reads anyone's.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Datelike, Duration, NaiveDateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::auth::extract::MaybeUser;
use crate::entity::{usage, usage_breakdown};
use crate::error::{ApiError, ErrorBody};
use crate::jobs::{self, JobReport, pricing::nano_to_dollars};
use crate::state::AppState;

const MAX_DAYS: i64 = 3660;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// daily (default) or monthly.
    pub period_type: Option<String>,
    /// 1..=3660, default 30.
    pub days: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRow {
    pub user_id: i32,
    pub api_calls_count: i64,
    pub tokens_used: i64,
    pub cost_usd: f64,
    /// Start of the day or month, UTC.
    pub date: DateTime<Utc>,
    pub period_type: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CostsQuery {
    pub user_id: Option<i64>,
    /// 1..=3660, default 30: today and the days before it.
    pub days: Option<i64>,
    /// service, model or day: answers `{"groups": [...]}` instead.
    pub group_by: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CostSummary {
    pub total_cost_usd: f64,
    pub total_tokens: i64,
    pub total_api_calls: i64,
    pub period_days: i64,
    pub cost_per_token: f64,
    pub cost_per_api_call: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserCost {
    pub user_id: i32,
    pub total_cost: f64,
    pub total_tokens: i64,
    pub total_api_calls: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Period {
    pub start_date: DateTime<Utc>,
    pub end_date: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CostsResponse {
    pub summary: CostSummary,
    pub user_breakdown: Vec<UserCost>,
    pub period: Period,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CostGroups {
    /// Each `{<service|model|day>, total_cost, total_tokens, total_api_calls}`.
    #[schema(value_type = Vec<Object>)]
    pub groups: Vec<Value>,
}

fn days(value: Option<i64>) -> Result<i64, ApiError> {
    let d = value.unwrap_or(30);
    if !(1..=MAX_DAYS).contains(&d) {
        return Err(ApiError::unprocessable(format!(
            "days must be between 1 and {MAX_DAYS}"
        )));
    }
    Ok(d)
}

/// The caller may read `user_id`'s figures: itself, an admin, or a service.
fn may_read(caller: &MaybeUser, user_id: Option<i32>) -> Result<Option<i32>, ApiError> {
    match &caller.0 {
        None => Ok(user_id),
        Some(p) if p.is_admin() => Ok(user_id),
        Some(p) => match user_id {
            Some(id) if id != p.user.id => {
                Err(ApiError::Forbidden("Can only read your own usage".into()))
            }
            _ => Ok(Some(p.user.id)),
        },
    }
}

fn today_start() -> NaiveDateTime {
    Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
}

/// A user's usage rows, newest first.
#[utoipa::path(
    get, path = "/analytics/usage/{user_id}", tag = "usage",
    params(("user_id" = i64, Path, description = "User id"), UsageQuery),
    security(("api_key" = []), ("api_key" = [], "bearer" = [])),
    responses(
        (status = 200, description = "Usage rows", body = Vec<UsageRow>),
        (status = 403, description = "A user reading someone else's usage", body = ErrorBody),
        (status = 422, description = "Bad period_type or days", body = ErrorBody),
    )
)]
pub async fn get_usage(
    state: web::Data<AppState>,
    caller: MaybeUser,
    user_id: web::Path<i64>,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let user = crate::analytics::dto::user_id(Some(user_id.into_inner()))?;
    let user = may_read(&caller, user)?.expect("a path user id");
    let period = query.period_type.clone().unwrap_or_else(|| "daily".into());
    let days = days(query.days)?;
    let since = match period.as_str() {
        "daily" => today_start() - Duration::days(days - 1),
        "monthly" => {
            let d = (today_start() - Duration::days(days - 1)).date();
            d.with_day(1)
                .expect("day one")
                .and_hms_opt(0, 0, 0)
                .expect("midnight")
        }
        _ => {
            return Err(ApiError::unprocessable(
                "period_type must be daily or monthly",
            ));
        }
    };
    let rows = usage::Entity::find()
        .filter(usage::Column::UserId.eq(user))
        .filter(usage::Column::PeriodType.eq(period))
        .filter(usage::Column::Date.gte(since))
        .order_by_desc(usage::Column::Date)
        .all(&state.db)
        .await?;
    let out: Vec<UsageRow> = rows
        .into_iter()
        .map(|r| UsageRow {
            user_id: r.user_id,
            api_calls_count: r.api_calls_count,
            tokens_used: r.tokens_used,
            cost_usd: nano_to_dollars(r.cost_nano_usd),
            date: r.date.and_utc(),
            period_type: r.period_type,
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

#[derive(Default)]
struct Sum {
    nano: i64,
    tokens: i64,
    calls: i64,
}

impl Sum {
    fn add(&mut self, nano: i64, tokens: i64, calls: i64) {
        self.nano += nano;
        self.tokens += tokens;
        self.calls += calls;
    }
}

/// Costs over daily rows (each metric counted once), optionally grouped.
#[utoipa::path(
    get, path = "/analytics/costs", tag = "usage",
    params(CostsQuery),
    security(("api_key" = []), ("api_key" = [], "bearer" = [])),
    responses(
        (status = 200, description = "The original's cost report, or `{groups}` with group_by", body = CostsResponse),
        (status = 403, description = "A user reading someone else's costs", body = ErrorBody),
        (status = 422, description = "Bad days, user_id or group_by", body = ErrorBody),
    )
)]
pub async fn get_costs(
    state: web::Data<AppState>,
    caller: MaybeUser,
    query: web::Query<CostsQuery>,
) -> Result<HttpResponse, ApiError> {
    let days = days(query.days)?;
    let user = may_read(&caller, crate::analytics::dto::user_id(query.user_id)?)?;
    let start = today_start() - Duration::days(days - 1);
    if let Some(group) = query.group_by.as_deref() {
        let key = match group {
            "service" | "model" | "day" => group,
            _ => {
                return Err(ApiError::unprocessable(
                    "group_by must be service, model or day",
                ));
            }
        };
        let mut find = usage_breakdown::Entity::find()
            .filter(usage_breakdown::Column::PeriodType.eq("daily"))
            .filter(usage_breakdown::Column::Date.gte(start));
        if let Some(u) = user {
            find = find.filter(usage_breakdown::Column::UserId.eq(u));
        }
        let mut groups: BTreeMap<String, Sum> = BTreeMap::new();
        for r in find.all(&state.db).await? {
            let k = match key {
                "service" => r.service_name.clone(),
                "model" => r.model.clone(),
                _ => r.date.and_utc().format("%Y-%m-%d").to_string(),
            };
            groups
                .entry(k)
                .or_default()
                .add(r.cost_nano_usd, r.tokens_used, r.api_calls_count);
        }
        let mut list: Vec<(String, Sum)> = groups.into_iter().collect();
        if key != "day" {
            list.sort_by(|a, b| b.1.nano.cmp(&a.1.nano).then_with(|| a.0.cmp(&b.0)));
        }
        let groups = list
            .into_iter()
            .map(|(k, s)| {
                // Empty service or model means the metrics named none.
                let label = if k.is_empty() { Value::Null } else { Value::String(k) };
                json!({key: label, "total_cost": nano_to_dollars(s.nano), "total_tokens": s.tokens, "total_api_calls": s.calls})
            })
            .collect();
        return Ok(HttpResponse::Ok().json(CostGroups { groups }));
    }

    let mut find = usage::Entity::find()
        .filter(usage::Column::PeriodType.eq("daily"))
        .filter(usage::Column::Date.gte(start));
    if let Some(u) = user {
        find = find.filter(usage::Column::UserId.eq(u));
    }
    let mut total = Sum::default();
    let mut per_user: BTreeMap<i32, Sum> = BTreeMap::new();
    for r in find.all(&state.db).await? {
        total.add(r.cost_nano_usd, r.tokens_used, r.api_calls_count);
        per_user.entry(r.user_id).or_default().add(
            r.cost_nano_usd,
            r.tokens_used,
            r.api_calls_count,
        );
    }
    let mut user_breakdown: Vec<UserCost> = per_user
        .into_iter()
        .map(|(user_id, s)| UserCost {
            user_id,
            total_cost: nano_to_dollars(s.nano),
            total_tokens: s.tokens,
            total_api_calls: s.calls,
        })
        .collect();
    user_breakdown.sort_by(|a, b| {
        b.total_cost
            .total_cmp(&a.total_cost)
            .then(a.user_id.cmp(&b.user_id))
    });
    let cost = nano_to_dollars(total.nano);
    let per = |n: i64| if n > 0 { cost / n as f64 } else { 0.0 };
    Ok(HttpResponse::Ok().json(CostsResponse {
        summary: CostSummary {
            total_cost_usd: cost,
            total_tokens: total.tokens,
            total_api_calls: total.calls,
            period_days: days,
            cost_per_token: per(total.tokens),
            cost_per_api_call: per(total.calls),
        },
        user_breakdown,
        period: Period {
            start_date: start.and_utc(),
            end_date: Utc::now(),
        },
    }))
}

fn service_or_admin(caller: &MaybeUser) -> Result<(), ApiError> {
    match &caller.0 {
        Some(p) if !p.is_admin() => Err(ApiError::Forbidden("Admin privileges required".into())),
        _ => Ok(()),
    }
}

/// Run the usage rollup now (admin, or a service with only the API key).
#[utoipa::path(
    post, path = "/analytics/jobs/rollup", tag = "usage",
    responses(
        (status = 200, description = "What the run did", body = JobReport),
        (status = 403, description = "A non-admin user", body = ErrorBody),
    )
)]
pub async fn run_rollup(
    state: web::Data<AppState>,
    caller: MaybeUser,
) -> Result<HttpResponse, ApiError> {
    service_or_admin(&caller)?;
    let report = jobs::run_rollup(&state).await.map_err(ApiError::Internal)?;
    Ok(HttpResponse::Ok().json(report))
}

/// Run retention now (admin, or a service with only the API key).
#[utoipa::path(
    post, path = "/analytics/jobs/retention", tag = "usage",
    responses(
        (status = 200, description = "What the run did", body = JobReport),
        (status = 403, description = "A non-admin user", body = ErrorBody),
    )
)]
pub async fn run_retention(
    state: web::Data<AppState>,
    caller: MaybeUser,
) -> Result<HttpResponse, ApiError> {
    service_or_admin(&caller)?;
    let report = jobs::run_retention(&state)
        .await
        .map_err(ApiError::Internal)?;
    Ok(HttpResponse::Ok().json(report))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/analytics/usage/{user_id}").route(web::get().to(get_usage)))
        .service(web::resource("/analytics/costs").route(web::get().to(get_costs)))
        .service(web::resource("/analytics/jobs/rollup").route(web::post().to(run_rollup)))
        .service(web::resource("/analytics/jobs/retention").route(web::post().to(run_retention)));
}
