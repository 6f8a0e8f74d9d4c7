//! Background jobs: the usage rollup, retention and time partitions. Each run takes a
//! Postgres advisory lock (a process lock on SQLite), so with many replicas a
//! job runs once per tick, and records its outcome in `platform_jobs`.

pub mod partitions;
mod retention;
mod usage_rollup;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, EntityTrait, Set,
    Statement,
};
use tokio::sync::{Mutex, watch};

use crate::analytics::pricing::PriceTable;
use crate::config::JobSettings;
use crate::entity::jobs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    UsageRollup,
    Retention,
    Partitions,
}

impl Job {
    pub const ALL: [Job; 3] = [Job::UsageRollup, Job::Retention, Job::Partitions];

    /// As stored in `platform_jobs.name` and shown in `/health` and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Job::UsageRollup => "rollup",
            Job::Retention => "retention",
            Job::Partitions => "partitions",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Database(#[from] DbErr),
}

impl JobError {
    /// A short class for `/health` (which needs no key); the detail goes to the log.
    pub fn class(&self) -> &'static str {
        match self {
            JobError::Database(e) if crate::db::is_connection_error(e) => "database_unavailable",
            JobError::Database(_) => "database_error",
        }
    }

    pub fn is_unavailable(&self) -> bool {
        self.class() == "database_unavailable"
    }
}

/// The classes `last_error` may show; older rows held raw error text.
const ERROR_CLASSES: [&str; 2] = ["database_unavailable", "database_error"];

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub job: Job,
    /// False when another replica held the lock; nothing was done here.
    pub ran: bool,
    /// Usage rows written (rollup), rows deleted (retention) or partitions
    /// created.
    pub rows: i64,
    pub duration_ms: i64,
    /// Highest metric id folded into the usage tables (rollup).
    pub watermark: Option<i64>,
}

impl RunReport {
    fn new(job: Job, ran: bool, rows: i64, started: Instant, watermark: Option<i64>) -> Self {
        RunReport {
            job,
            ran,
            rows,
            duration_ms: started.elapsed().as_millis() as i64,
            watermark,
        }
    }
}

/// The jobs of this process: what they need, and one lock per job so a
/// scheduled run and a manual one never overlap here.
pub struct Jobs {
    db: DatabaseConnection,
    prices: PriceTable,
    retention_days: u32,
    settings: JobSettings,
    locks: [Mutex<()>; 3],
}

impl Jobs {
    pub fn new(db: DatabaseConnection, settings: &JobSettings, retention_days: u32) -> Arc<Self> {
        Arc::new(Jobs {
            db,
            prices: PriceTable::new(&settings.prices),
            retention_days,
            settings: settings.clone(),
            locks: [Mutex::new(()), Mutex::new(()), Mutex::new(())],
        })
    }

    /// The price table the usage rollup charges with.
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Runs a job now (a scheduled tick or a manual trigger).
    pub async fn run(&self, job: Job) -> Result<RunReport, JobError> {
        let _guard = self.locks[job as usize].lock().await;
        let started = Instant::now();
        let result = match job {
            Job::UsageRollup => usage_rollup::run_once(&self.db, &self.prices, started).await,
            Job::Retention => retention::run_once(&self.db, self.retention_days, started).await,
            Job::Partitions => {
                partitions::run_once(
                    &self.db,
                    &self.settings.partitions,
                    self.retention_days,
                    started,
                )
                .await
            }
        };
        match &result {
            Ok(r) if r.ran => {
                metrics::gauge!("job_last_run_timestamp_seconds", "job" => job.name())
                    .set(crate::time::now_utc().timestamp() as f64);
                metrics::gauge!("job_last_duration_seconds", "job" => job.name())
                    .set(r.duration_ms as f64 / 1000.0);
                metrics::gauge!("job_last_rows", "job" => job.name()).set(r.rows as f64);
                metrics::counter!("job_runs_total", "job" => job.name(), "result" => "ok")
                    .increment(1);
            }
            Ok(_) => {
                metrics::counter!("job_runs_total", "job" => job.name(), "result" => "skipped")
                    .increment(1);
            }
            Err(e) => {
                tracing::error!(job = job.name(), error = %e, "job failed");
                metrics::counter!("job_runs_total", "job" => job.name(), "result" => "error")
                    .increment(1);
                let _ = record(&self.db, job, started, 0, None, Some(e.class())).await;
            }
        }
        result
    }

    /// Starts the schedules; they stop when `shutdown` turns true.
    pub fn start(
        self: &Arc<Self>,
        shutdown: &watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        Job::ALL
            .into_iter()
            .map(|job| tokio::spawn(self.clone().schedule(job, shutdown.clone())))
            .collect()
    }

    async fn schedule(self: Arc<Self>, job: Job, mut shutdown: watch::Receiver<bool>) {
        let (every, first) = match job {
            // The rollup runs at once; retention only after its first period,
            // so adopting a database never deletes anything the moment it starts.
            Job::UsageRollup => (self.settings.usage_rollup_interval, Duration::ZERO),
            // Partitions for today and ahead exist before the first writes.
            Job::Partitions => (self.settings.partition_job_interval, Duration::ZERO),
            Job::Retention => (
                self.settings.retention_interval,
                self.settings.retention_interval,
            ),
        };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            // A stop does not wait for a run: each is transactions that roll
            // back whole when dropped, and the next start runs it again.
            tokio::select! {
                _ = self.run(job) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// A write transaction holding the job's cluster-wide lock, or `None` when
/// another replica holds it (the transaction is then rolled back).
async fn locked_write(
    db: &DatabaseConnection,
    job: Job,
) -> Result<Option<DatabaseTransaction>, DbErr> {
    let txn = crate::db::begin_write(db).await?;
    if try_advisory_lock(&txn, job).await? {
        return Ok(Some(txn));
    }
    txn.rollback().await?;
    Ok(None)
}

/// Takes the job's cluster-wide lock for the current transaction.
async fn try_advisory_lock<C: ConnectionTrait>(conn: &C, job: Job) -> Result<bool, DbErr> {
    if conn.get_database_backend() != DbBackend::Postgres {
        // One process owns a SQLite file; the process lock is enough.
        return Ok(true);
    }
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_try_advisory_xact_lock(hashtext($1)) AS locked",
            [format!("platform-server:{}", job.name()).into()],
        ))
        .await?;
    Ok(row
        .map(|r| r.try_get::<bool>("", "locked"))
        .transpose()?
        .unwrap_or(false))
}

/// Records a run's outcome (the rollup writes its success with its output).
async fn record<C: ConnectionTrait>(
    conn: &C,
    job: Job,
    started: Instant,
    rows: i64,
    watermark: Option<i64>,
    error: Option<&str>,
) -> Result<(), DbErr> {
    let now = crate::time::now();
    let mut model = jobs::ActiveModel {
        name: Set(job.name().to_string()),
        last_run_at: Set(Some(now)),
        last_duration_ms: Set(started.elapsed().as_millis() as i64),
        last_rows: Set(rows),
        last_error: Set(error.map(str::to_string)),
        watermark: Set(watermark.unwrap_or(0)),
        ..Default::default()
    };
    let mut update = vec![
        jobs::Column::LastRunAt,
        jobs::Column::LastDurationMs,
        jobs::Column::LastRows,
        jobs::Column::LastError,
    ];
    if error.is_none() {
        model.last_success_at = Set(Some(now));
        update.push(jobs::Column::LastSuccessAt);
    }
    if watermark.is_some() {
        update.push(jobs::Column::Watermark);
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

/// A job's last run, as every replica sees it.
#[derive(Debug, Clone)]
pub struct JobStatus {
    pub name: String,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub duration_ms: i64,
    pub rows: i64,
    /// Seconds since the last successful run.
    pub lag_seconds: Option<i64>,
    /// An error class, never raw error text.
    pub last_error: Option<&'static str>,
}

pub async fn status(db: &DatabaseConnection) -> Result<Vec<JobStatus>, DbErr> {
    let now = crate::time::now_utc();
    let rows = jobs::Entity::find().all(db).await?;
    let mut out: Vec<JobStatus> = rows
        .into_iter()
        .map(|j| {
            let lag = j.last_success_at.map(|t| (now - t.and_utc()).num_seconds());
            if let Some(l) = lag {
                metrics::gauge!("job_lag_seconds", "job" => j.name.clone()).set(l as f64);
            }
            JobStatus {
                last_run_at: j.last_run_at.map(|t| t.and_utc()),
                last_success_at: j.last_success_at.map(|t| t.and_utc()),
                duration_ms: j.last_duration_ms,
                rows: j.last_rows,
                lag_seconds: lag,
                last_error: j.last_error.map(|e| {
                    ERROR_CLASSES
                        .into_iter()
                        .find(|c| *c == e)
                        .unwrap_or("error")
                }),
                name: j.name,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
