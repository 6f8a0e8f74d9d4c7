//! Database connection: Postgres when `DATABASE_URL` is set, else embedded
//! SQLite; and where lagging reads go (`replicas`).

pub mod replicas;

use std::time::Duration;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx;
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    RuntimeErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use secrecy::ExposeSecret;

use crate::config::DatabaseSettings;

/// A pooled connection idle this long is pinged before it is handed out.
/// sqlx pings on every checkout by default: one more round trip for each
/// ingest group and each read, on connections that were in use a moment ago.
/// A dead hot connection still fails its first statement, which callers
/// already answer as the database being unavailable (ingest retries it).
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    let url = match &settings.url {
        Some(url) => url.expose_secret().to_string(),
        None => {
            let path = &settings.sqlite_path;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating database folder {}", dir.display()))?;
            }
            format!("sqlite://{}?mode=rwc", path.display())
        }
    };
    let sqlite = url.starts_with("sqlite:");
    let mut opts = ConnectOptions::new(url);
    opts.max_connections(settings.max_connections)
        .min_connections(if sqlite { 1 } else { 2 })
        .connect_timeout(settings.acquire_timeout)
        .acquire_timeout(settings.acquire_timeout)
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire_if_idle_for(PING_AFTER_IDLE)
        .sqlx_logging(false);
    if sqlite {
        // WAL lets readers run beside the single writer; busy_timeout makes
        // concurrent writers wait instead of failing with SQLITE_BUSY.
        opts.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    }
    Database::connect(opts)
        .await
        .context("connecting to the database")
}

/// A transaction that writes. On SQLite it takes the write lock at BEGIN
/// (IMMEDIATE): a read transaction that later writes cannot be upgraded
/// once another connection has committed, and would fail at once.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None).await.context("running migrations")
}

/// True when the database answers and no migration is pending.
pub async fn is_ready(db: &DatabaseConnection) -> Result<bool, DbErr> {
    db.ping().await?;
    Ok(Migrator::get_pending_migrations(db).await?.is_empty())
}

/// Pool size and checked-out connections, as the original's `/health` reported.
pub fn pool_stats(db: &DatabaseConnection) -> (u32, u32) {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (
                pool.size(),
                pool.size().saturating_sub(pool.num_idle() as u32),
            )
        }
        DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (
                pool.size(),
                pool.size().saturating_sub(pool.num_idle() as u32),
            )
        }
        _ => (0, 0),
    }
}

pub fn backend_name(db: &DatabaseConnection) -> &'static str {
    match db.get_database_backend() {
        DbBackend::Postgres => "postgres",
        DbBackend::Sqlite => "sqlite",
        _ => "other",
    }
}

/// Errors that mean "the database is unreachable" (answered 503, retried
/// by the ingest writer), told apart by the driver's error kinds.
pub fn is_connection_error(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            is_sqlx_connection_error(e)
        }
        _ => false,
    }
}

fn is_sqlx_connection_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08 (connection exception) and 57P01–57P05 (the
        // server shutting down, starting up, or ending the session).
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn exec(e: sqlx::Error) -> DbErr {
        DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e)))
    }

    #[test]
    fn connection_errors_are_told_by_kind_not_text() {
        assert!(is_connection_error(&exec(sqlx::Error::PoolTimedOut)));
        assert!(is_connection_error(&exec(sqlx::Error::Io(
            std::io::ErrorKind::ConnectionRefused.into()
        ))));
        // Text that merely mentions a connection is not one.
        assert!(!is_connection_error(&DbErr::Custom(
            "Connection refused".into()
        )));
        assert!(!is_connection_error(&exec(sqlx::Error::RowNotFound)));
    }
}
