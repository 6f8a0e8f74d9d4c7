//! Usage and cost endpoints over the rollup tables. A bearer user reads only
//! their own figures (an admin anyone's); a service call with only the API
//! key reads anyone's.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::analytics::domain::{GroupBy, Period, days, user_id};
use crate::analytics::views::{CostsResponse, UsageRow};
use crate::analytics::{QueryError, usage};
use crate::http::auth::extract::MaybeUser;
use crate::http::{ApiError, AppState, ErrorBody};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// daily (default) or monthly.
    pub period_type: Option<String>,
    /// 1..=3660, default 30.
    pub days: Option<i64>,
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

/// The caller may read `user_id`'s figures: itself, an admin, or a service.
fn may_read(caller: &MaybeUser, user_id: Option<i32>) -> Result<Option<i32>, QueryError> {
    match &caller.0 {
        None => Ok(user_id),
        Some(p) if p.is_admin() => Ok(user_id),
        Some(p) => match user_id {
            Some(id) if id != p.user.id => {
                Err(QueryError::Forbidden("Can only read your own usage"))
            }
            _ => Ok(Some(p.user.id)),
        },
    }
}

/// A user's usage rows, newest first.
#[utoipa::path(
    get, path = "/analytics/usage/{user_id}", tag = "usage",
    params(("user_id" = i64, Path, description = "User id"), UsageQuery),
    security(("api_key" = []), ("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "Usage rows", body = Vec<UsageRow>),
        (status = 403, description = "A user reading someone else's usage", body = ErrorBody),
        (status = 422, description = "Bad period_type or days", body = ErrorBody),
    )
)]
pub async fn get_usage(
    state: web::Data<AppState>,
    caller: MaybeUser,
    path: web::Path<i64>,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let user = user_id(Some(path.into_inner()))?;
    let user = may_read(&caller, user)?.expect("a path user id");
    let period = Period::parse(query.period_type.as_deref())?;
    let days = days(query.days)?;
    let rows = state
        .reads
        .run(|db| async move { usage::usage_rows(&db, user, period, days).await })
        .await?;
    Ok(HttpResponse::Ok().json(rows))
}

/// Costs over daily rows (each metric counted once), optionally grouped.
#[utoipa::path(
    get, path = "/analytics/costs", tag = "usage",
    params(CostsQuery),
    security(("api_key" = []), ("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
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
    let user = may_read(&caller, user_id(query.user_id)?)?;
    Ok(match query.group_by.as_deref() {
        Some(g) => {
            let group_by = GroupBy::parse(g)?;
            let groups = state
                .reads
                .run(|db| async move { usage::cost_groups(&db, user, days, group_by).await })
                .await?;
            HttpResponse::Ok().json(groups)
        }
        None => HttpResponse::Ok().json(
            state
                .reads
                .run(|db| async move { usage::costs(&db, user, days).await })
                .await?,
        ),
    })
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/analytics/usage/{user_id}").route(web::get().to(get_usage)))
        .service(web::resource("/analytics/costs").route(web::get().to(get_costs)));
}
