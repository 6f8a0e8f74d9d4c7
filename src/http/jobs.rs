//! Manual job triggers (`POST /analytics/jobs/*`) and the shapes jobs are
//! shown in over HTTP.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::extract::MaybeUser;
use super::{ApiError, AppState, ErrorBody};
use crate::jobs::{Job, JobStatus, RunReport};

/// What a run did, answered by `POST /analytics/jobs/*`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobReport {
    pub job: &'static str,
    /// False when another replica held the lock; nothing was done here.
    pub ran: bool,
    /// Usage rows written (rollup), rows deleted (retention) or partitions
    /// created (partitions).
    pub rows: i64,
    pub duration_ms: i64,
    /// Highest metric id folded into the usage tables (rollup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<i64>,
}

impl From<RunReport> for JobReport {
    fn from(r: RunReport) -> Self {
        JobReport {
            job: r.job.name(),
            ran: r.ran,
            rows: r.rows,
            duration_ms: r.duration_ms,
            watermark: r.watermark,
        }
    }
}

/// Each job's last run as `/health` reports it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobHealth {
    pub name: String,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub duration_ms: i64,
    pub rows: i64,
    /// Seconds since the last successful run.
    pub lag_seconds: Option<i64>,
    pub last_error: Option<String>,
}

impl From<JobStatus> for JobHealth {
    fn from(j: JobStatus) -> Self {
        JobHealth {
            name: j.name,
            last_run_at: j.last_run_at,
            last_success_at: j.last_success_at,
            duration_ms: j.duration_ms,
            rows: j.rows,
            lag_seconds: j.lag_seconds,
            last_error: j.last_error.map(str::to_string),
        }
    }
}

/// Admins, and services with only the API key, may run jobs.
async fn run(state: &AppState, caller: &MaybeUser, job: Job) -> Result<HttpResponse, ApiError> {
    if caller.0.as_ref().is_some_and(|p| !p.is_admin()) {
        return Err(ApiError::Forbidden("Admin privileges required".into()));
    }
    let report = state.jobs.run(job).await?;
    Ok(HttpResponse::Ok().json(JobReport::from(report)))
}

/// Run the usage rollup now (admin, or a service with only the API key).
#[utoipa::path(
    post, path = "/analytics/jobs/rollup", tag = "usage",
    responses(
        (status = 200, description = "What the run did", body = JobReport),
        (status = 403, description = "A non-admin user", body = ErrorBody),
        (status = 503, description = "Database unavailable; see Retry-After", body = ErrorBody),
    )
)]
pub async fn run_rollup(
    state: web::Data<AppState>,
    caller: MaybeUser,
) -> Result<HttpResponse, ApiError> {
    run(&state, &caller, Job::UsageRollup).await
}

/// Run retention now (admin, or a service with only the API key).
#[utoipa::path(
    post, path = "/analytics/jobs/retention", tag = "usage",
    responses(
        (status = 200, description = "What the run did", body = JobReport),
        (status = 403, description = "A non-admin user", body = ErrorBody),
        (status = 503, description = "Database unavailable; see Retry-After", body = ErrorBody),
    )
)]
pub async fn run_retention(
    state: web::Data<AppState>,
    caller: MaybeUser,
) -> Result<HttpResponse, ApiError> {
    run(&state, &caller, Job::Retention).await
}

/// Create the time partitions due now and drain the default partition
/// (Postgres; elsewhere `ran` is false). Admin, or a service with only the
/// API key.
#[utoipa::path(
    post, path = "/analytics/jobs/partitions", tag = "usage",
    responses(
        (status = 200, description = "What the run did", body = JobReport),
        (status = 403, description = "A non-admin user", body = ErrorBody),
        (status = 503, description = "Database unavailable; see Retry-After", body = ErrorBody),
    )
)]
pub async fn run_partitions(
    state: web::Data<AppState>,
    caller: MaybeUser,
) -> Result<HttpResponse, ApiError> {
    run(&state, &caller, Job::Partitions).await
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/analytics/jobs/rollup").route(web::post().to(run_rollup)))
        .service(web::resource("/analytics/jobs/retention").route(web::post().to(run_retention)))
        .service(web::resource("/analytics/jobs/partitions").route(web::post().to(run_partitions)));
}
