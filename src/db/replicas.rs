//! Where reads that may lag go: streaming replicas of the Postgres primary
//! (`DATABASE_REPLICA_URLS`), each used while its replay lag stays under
//! `DATABASE_REPLICA_MAX_LAG`, else the primary.
//!
//! A check every second asks the primary for its WAL position and each
//! replica whether it has replayed that far; one that has not is as far
//! behind as the age of its last replayed commit. A replica that fails the
//! check, lags, or fails a read is left at once and used again after its
//! next good check. Auth, idempotency lookups, jobs and writes never come
//! here: they use the primary.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

/// How often replicas are checked, and how long a check may take.
const CHECK_EVERY: Duration = Duration::from_secs(1);
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections per replica pool.
const REPLICA_POOL: u32 = 8;

struct Replica {
    /// `host:port/database`: never the credentials.
    name: String,
    conn: DatabaseConnection,
    in_use: AtomicBool,
    /// Seconds behind, as f64 bits; NaN while unknown (never checked, down).
    lag: AtomicU64,
    /// The last check failed (as opposed to: answered, but too far behind).
    down: AtomicBool,
}

/// Each replica as `/health` shows it.
#[derive(Debug, Clone)]
pub struct ReplicaStatus {
    pub name: String,
    pub lag_seconds: Option<f64>,
    /// `in_use`; `unreachable` when the last check failed; `lagging` past the limit.
    pub state: &'static str,
}

pub struct Reads {
    primary: DatabaseConnection,
    replicas: Vec<Replica>,
    max_lag: Duration,
    next: AtomicUsize,
}

impl Reads {
    /// Pools for each replica, made without connecting: a replica that is
    /// down at start is simply not used until it answers.
    pub async fn new(
        primary: DatabaseConnection,
        urls: &[SecretString],
        max_lag: Duration,
        acquire_timeout: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        let mut replicas = vec![];
        for url in urls {
            let url = url.expose_secret();
            let mut opts = ConnectOptions::new(url.to_string());
            opts.max_connections(REPLICA_POOL)
                .min_connections(0)
                .connect_timeout(acquire_timeout.min(CHECK_TIMEOUT))
                .acquire_timeout(acquire_timeout.min(CHECK_TIMEOUT))
                .idle_timeout(Duration::from_secs(300))
                .connect_lazy(true)
                .sqlx_logging(false);
            let conn = Database::connect(opts)
                .await
                .map_err(|e| anyhow::anyhow!("replica pool for {}: {e}", display_name(url)))?;
            replicas.push(Replica {
                name: display_name(url),
                conn,
                in_use: AtomicBool::new(false),
                lag: AtomicU64::new(f64::NAN.to_bits()),
                down: AtomicBool::new(false),
            });
        }
        Ok(Arc::new(Reads {
            primary,
            replicas,
            max_lag,
            next: AtomicUsize::new(0),
        }))
    }

    /// Runs a read on a replica in use (in turn), else on the primary. A
    /// replica whose read fails is left, and the read runs on the primary.
    pub async fn run<T, E, F, Fut>(&self, read: F) -> Result<T, E>
    where
        F: Fn(DatabaseConnection) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let Some(replica) = self.pick() else {
            metrics::counter!("db_reads_total", "target" => "primary").increment(1);
            return read(self.primary.clone()).await;
        };
        match read(replica.conn.clone()).await {
            Ok(v) => {
                metrics::counter!("db_reads_total", "target" => "replica").increment(1);
                Ok(v)
            }
            Err(_) => {
                tracing::warn!(
                    replica = replica.name,
                    "replica read failed; left until its next good check"
                );
                replica.in_use.store(false, Ordering::Relaxed);
                metrics::counter!("db_reads_total", "target" => "primary").increment(1);
                read(self.primary.clone()).await
            }
        }
    }

    fn pick(&self) -> Option<&Replica> {
        let n = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.replicas[(start + i) % n])
            .find(|r| r.in_use.load(Ordering::Relaxed))
    }

    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.replicas
            .iter()
            .map(|r| {
                let lag = f64::from_bits(r.lag.load(Ordering::Relaxed));
                let in_use = r.in_use.load(Ordering::Relaxed);
                ReplicaStatus {
                    name: r.name.clone(),
                    lag_seconds: (!lag.is_nan()).then_some(lag),
                    state: if in_use {
                        "in_use"
                    } else if r.down.load(Ordering::Relaxed) {
                        "unreachable"
                    } else {
                        "lagging"
                    },
                }
            })
            .collect()
    }

    /// One round of checks.
    pub async fn check(&self) {
        if self.replicas.is_empty() {
            return;
        }
        let primary_lsn = tokio::time::timeout(CHECK_TIMEOUT, wal_position(&self.primary)).await;
        for r in &self.replicas {
            let lag = match &primary_lsn {
                Ok(Ok(lsn)) => tokio::time::timeout(CHECK_TIMEOUT, replay_lag(&r.conn, lsn))
                    .await
                    .unwrap_or_else(|_| Err(DbErr::Custom("check timed out".into()))),
                // The primary cannot say how far it is: nothing to compare.
                _ => Err(DbErr::Custom("primary unavailable".into())),
            };
            let (lag, down) = match lag {
                Ok(l) => (l, false),
                Err(e) => {
                    tracing::debug!(replica = r.name, error = %e, "replica check failed");
                    (f64::NAN, true)
                }
            };
            let usable = !down && lag <= self.max_lag.as_secs_f64();
            if usable != r.in_use.load(Ordering::Relaxed) {
                tracing::info!(
                    replica = r.name,
                    lag_seconds = lag,
                    usable,
                    "replica use changed"
                );
            }
            r.lag.store(lag.to_bits(), Ordering::Relaxed);
            r.down.store(down, Ordering::Relaxed);
            r.in_use.store(usable, Ordering::Relaxed);
            metrics::gauge!("db_replica_lag_seconds", "replica" => r.name.clone())
                .set(if lag.is_nan() { -1.0 } else { lag });
            metrics::gauge!("db_replica_in_use", "replica" => r.name.clone()).set(if usable {
                1.0
            } else {
                0.0
            });
        }
    }

    /// Checks every second until `shutdown` turns true.
    pub fn start(
        self: &Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.replicas.is_empty() {
            return None;
        }
        let reads = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => reads.check().await,
                    _ = shutdown.changed() => return,
                }
            }
        }))
    }
}

async fn wal_position(primary: &DatabaseConnection) -> Result<String, DbErr> {
    let row = primary
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_current_wal_lsn()::text AS lsn",
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("no WAL position".into()))?;
    row.try_get("", "lsn")
}

/// Seconds behind: 0 once the replica has replayed up to `lsn`, else the
/// age of the last commit it replayed.
async fn replay_lag(replica: &DatabaseConnection, lsn: &str) -> Result<f64, DbErr> {
    let row = replica
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 \
                         WHEN pg_last_wal_replay_lsn() >= $1::pg_lsn THEN 0 \
                         ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 1e9) \
                    END::float8 AS lag",
            [lsn.into()],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("no lag".into()))?;
    row.try_get("", "lag")
}

/// `host:port/database` of a Postgres URL, without user or password.
fn display_name(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}{}",
            u.host_str().unwrap_or("?"),
            u.port().unwrap_or(5432),
            u.path()
        ),
        Err(_) => "replica".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_carry_credentials() {
        assert_eq!(
            display_name("postgres://app:s3cret@db-ro.internal:6432/platform"),
            "db-ro.internal:6432/platform"
        );
        assert_eq!(display_name("postgres://h/p"), "h:5432/p");
    }
}
