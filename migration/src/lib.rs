//! Schema history. Every change is one file with `up` and `down`.
//!
//! The first migration creates the original service's four tables only when
//! they are missing, so a database the original made (tables present, no
//! migration history) is adopted as it is and brought forward with every row.

pub use sea_orm_migration::prelude::*;

mod m20250101_000001_original_tables;
mod m20250101_000002_time_indexes;
mod m20250102_000001_auth_sessions;
mod m20250103_000001_analytics_ingest;
mod m20250104_000001_usage_rollups;
mod m20250105_000001_analytics_rollups;
mod m20250106_000001_hourly_rollups;
mod m20250107_000001_incremental_usage;
mod m20250108_000001_api_keys;
mod m20250109_000001_accounts;
mod m20250110_000001_second_factor;
mod m20250111_000001_partitions;
mod m20250112_000001_type_user_hours;
mod m20250113_000001_cost_counters;
mod m20250114_000001_user_last_hours;
mod m20250115_000001_key_generations;

pub use m20250105_000001_analytics_rollups::backfill_sql;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20250101_000001_original_tables::Migration),
            Box::new(m20250101_000002_time_indexes::Migration),
            Box::new(m20250102_000001_auth_sessions::Migration),
            Box::new(m20250103_000001_analytics_ingest::Migration),
            Box::new(m20250104_000001_usage_rollups::Migration),
            Box::new(m20250105_000001_analytics_rollups::Migration),
            Box::new(m20250106_000001_hourly_rollups::Migration),
            Box::new(m20250107_000001_incremental_usage::Migration),
            Box::new(m20250108_000001_api_keys::Migration),
            Box::new(m20250109_000001_accounts::Migration),
            Box::new(m20250110_000001_second_factor::Migration),
            Box::new(m20250111_000001_partitions::Migration),
            Box::new(m20250112_000001_type_user_hours::Migration),
            Box::new(m20250113_000001_cost_counters::Migration),
            Box::new(m20250114_000001_user_last_hours::Migration),
            Box::new(m20250115_000001_key_generations::Migration),
        ]
    }
}

/// Table and column names shared by several migrations.
#[derive(DeriveIden, Clone, Copy)]
pub enum PlatformUsers {
    Table,
    Id,
    Email,
    PasswordHash,
    IsActive,
    CreatedAt,
    UpdatedAt,
    FirstName,
    LastName,
    MetaData,
}

#[derive(DeriveIden, Clone, Copy)]
pub enum PlatformAnalyticsEvents {
    Table,
    Id,
    UserId,
    EventType,
    EventData,
    Timestamp,
    SessionId,
    IpAddress,
    UserAgent,
}

#[derive(DeriveIden, Clone, Copy)]
pub enum PlatformAnalyticsMetrics {
    Table,
    Id,
    MetricName,
    MetricValue,
    MetricType,
    UserId,
    ServiceName,
    Endpoint,
    Labels,
    Timestamp,
}

#[derive(DeriveIden, Clone, Copy)]
pub enum PlatformAnalyticsUsage {
    Table,
    Id,
    UserId,
    ApiCallsCount,
    TokensUsed,
    CostUsd,
    Date,
    PeriodType,
    CreatedAt,
    UpdatedAt,
}
