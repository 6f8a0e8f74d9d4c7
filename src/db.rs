//! Database connection: Postgres when `DATABASE_URL` is set, else embedded SQLite.

use std::time::Duration;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

use crate::config::Settings;

pub async fn connect(settings: &Settings) -> anyhow::Result<DatabaseConnection> {
    let url = match settings.database_url()? {
        Some(url) => url,
        None => {
            let path = settings.sqlite_path();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating database folder {}", dir.display()))?;
            }
            format!("sqlite://{}?mode=rwc", path.display())
        }
    };
    let sqlite = url.starts_with("sqlite:");
    let mut opts = ConnectOptions::new(url);
    opts.max_connections(settings.database_max_connections)
        .min_connections(if sqlite { 1 } else { 2 })
        .connect_timeout(Duration::from_secs(settings.database_acquire_timeout))
        .acquire_timeout(Duration::from_secs(settings.database_acquire_timeout))
        .idle_timeout(Duration::from_secs(300))
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

/// Errors that mean "the database is unreachable", answered 503 rather than 500.
pub fn is_connection_error(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        other => {
            let text = other.to_string();
            text.contains("Connection refused")
                || text.contains("connection closed")
                || text.contains("PoolTimedOut")
                || text.contains("pool timed out")
                || text.contains("terminating connection")
                || text.contains("the database system is")
        }
    }
}
