//! Background jobs: usage rollups and retention. Each run takes a Postgres
//! advisory lock (a process lock on SQLite), so with many replicas a job runs
//! once per tick, and records its outcome in `platform_jobs` for `/health`.

pub mod pricing;
pub mod retention;
pub mod rollup;

use std::time::{Duration, Instant};

use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, Set, Statement};
use serde::Serialize;
use tokio::sync::{Mutex, watch};
use utoipa::ToSchema;

use crate::entity::jobs;
use crate::state::AppState;

pub const ROLLUP: &str = "rollup";
pub const RETENTION: &str = "retention";

/// Per-process state of the jobs: the price table and one lock per job, so a
/// scheduled run and a manual one never overlap in one process.
pub struct JobsContext {
    pub prices: pricing::PriceTable,
    rollup_lock: Mutex<()>,
    retention_lock: Mutex<()>,
}

impl JobsContext {
    pub fn new(prices: pricing::PriceTable) -> Self {
        JobsContext {
            prices,
            rollup_lock: Mutex::new(()),
            retention_lock: Mutex::new(()),
        }
    }
}

/// What a run did, answered by `POST /analytics/jobs/*`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobReport {
    pub job: &'static str,
    /// False when another replica held the lock; nothing was done here.
    pub ran: bool,
    /// Usage rows written (rollup) or rows deleted (retention).
    pub rows: i64,
    pub duration_ms: i64,
    /// Highest metric id folded into the usage tables (rollup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<i64>,
}

/// Takes the job's cluster-wide lock for the current transaction.
pub async fn try_advisory_lock<C: ConnectionTrait>(conn: &C, job: &str) -> Result<bool, DbErr> {
    if conn.get_database_backend() != DbBackend::Postgres {
        // One process owns a SQLite file; the process lock is enough.
        return Ok(true);
    }
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_try_advisory_xact_lock(hashtext($1)) AS locked",
            [format!("platform-server:{job}").into()],
        ))
        .await?;
    Ok(row
        .map(|r| r.try_get::<bool>("", "locked"))
        .transpose()?
        .unwrap_or(false))
}

/// Records a run's outcome (the rollup writes its success with its output).
pub async fn record<C: ConnectionTrait>(
    conn: &C,
    job: &str,
    started: Instant,
    rows: i64,
    watermark: Option<i64>,
    error: Option<String>,
) -> Result<(), DbErr> {
    let now = crate::analytics::ingest::now();
    let ok = error.is_none();
    let mut model = jobs::ActiveModel {
        name: Set(job.to_string()),
        last_run_at: Set(Some(now)),
        last_duration_ms: Set(started.elapsed().as_millis() as i64),
        last_rows: Set(rows),
        last_error: Set(error),
        ..Default::default()
    };
    let mut update = vec![
        jobs::Column::LastRunAt,
        jobs::Column::LastDurationMs,
        jobs::Column::LastRows,
        jobs::Column::LastError,
    ];
    if ok {
        model.last_success_at = Set(Some(now));
        update.push(jobs::Column::LastSuccessAt);
    }
    if let Some(w) = watermark {
        model.watermark = Set(w);
        update.push(jobs::Column::Watermark);
    } else {
        model.watermark = Set(0);
    }
    jobs::Entity::insert(model)
        .on_conflict(
            OnConflict::column(jobs::Column::Name)
                .update_columns(update)
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

fn observe(report: &Result<JobReport, anyhow::Error>, job: &'static str) {
    match report {
        Ok(r) if r.ran => {
            metrics::gauge!("job_last_run_timestamp_seconds", "job" => job)
                .set(chrono::Utc::now().timestamp() as f64);
            metrics::gauge!("job_last_duration_seconds", "job" => job)
                .set(r.duration_ms as f64 / 1000.0);
            metrics::gauge!("job_last_rows", "job" => job).set(r.rows as f64);
            metrics::counter!("job_runs_total", "job" => job, "result" => "ok").increment(1);
        }
        Ok(_) => {
            metrics::counter!("job_runs_total", "job" => job, "result" => "skipped").increment(1);
        }
        Err(e) => {
            tracing::error!(job, error = %e, "job failed");
            metrics::counter!("job_runs_total", "job" => job, "result" => "error").increment(1);
        }
    }
}

/// Runs the rollup now (scheduled tick or `POST /analytics/jobs/rollup`).
pub async fn run_rollup(state: &AppState) -> anyhow::Result<JobReport> {
    let _guard = state.jobs.rollup_lock.lock().await;
    let started = Instant::now();
    let result = rollup::run_once(&state.db, &state.jobs.prices, started).await;
    if let Err(e) = &result {
        let _ = record(&state.db, ROLLUP, started, 0, None, Some(e.to_string())).await;
    }
    observe(&result, ROLLUP);
    result
}

/// Runs retention now (scheduled tick or `POST /analytics/jobs/retention`).
pub async fn run_retention(state: &AppState) -> anyhow::Result<JobReport> {
    let _guard = state.jobs.retention_lock.lock().await;
    let started = Instant::now();
    let result =
        retention::run_once(&state.db, state.settings.analytics_retention_days, started).await;
    if let Err(e) = &result {
        let _ = record(&state.db, RETENTION, started, 0, None, Some(e.to_string())).await;
    }
    observe(&result, RETENTION);
    result
}

/// Starts both schedules; they stop when `shutdown` turns true.
pub fn start(state: AppState, shutdown: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    let rollup_every = Duration::from_secs(state.settings.usage_rollup_interval);
    let retention_every = Duration::from_secs(state.settings.retention_interval);
    vec![
        tokio::spawn(schedule(
            state.clone(),
            shutdown.clone(),
            rollup_every,
            ROLLUP,
        )),
        tokio::spawn(schedule(state, shutdown, retention_every, RETENTION)),
    ]
}

async fn schedule(
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
    every: Duration,
    job: &'static str,
) {
    // The rollup runs at once; retention only after its first period, so
    // adopting a database never deletes anything the moment it starts.
    let first = if job == RETENTION {
        tokio::time::Instant::now() + every
    } else {
        tokio::time::Instant::now()
    };
    let mut tick = tokio::time::interval_at(first, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        let _ = match job {
            ROLLUP => run_rollup(&state).await,
            _ => run_retention(&state).await,
        };
    }
}

/// Each job's last run as `/health` reports it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobHealth {
    pub name: String,
    pub last_run_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_success_at: Option<chrono::DateTime<chrono::Utc>>,
    pub duration_ms: i64,
    pub rows: i64,
    /// Seconds since the last successful run.
    pub lag_seconds: Option<i64>,
    pub last_error: Option<String>,
}

pub async fn health(db: &DatabaseConnection) -> Result<Vec<JobHealth>, DbErr> {
    let now = chrono::Utc::now();
    let rows = jobs::Entity::find().all(db).await?;
    let mut out: Vec<JobHealth> = rows
        .into_iter()
        .map(|j| {
            let lag = j.last_success_at.map(|t| (now - t.and_utc()).num_seconds());
            if let Some(l) = lag {
                metrics::gauge!("job_lag_seconds", "job" => j.name.clone()).set(l as f64);
            }
            JobHealth {
                last_run_at: j.last_run_at.map(|t| t.and_utc()),
                last_success_at: j.last_success_at.map(|t| t.and_utc()),
                duration_ms: j.last_duration_ms,
                rows: j.last_rows,
                lag_seconds: lag,
                last_error: j.last_error,
                name: j.name,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
