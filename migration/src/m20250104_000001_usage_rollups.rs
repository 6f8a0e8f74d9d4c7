//! Usage rollups: exact money (integer nano-dollars), 64-bit counters, one
//! row per (user, period, date), a per-service/per-model breakdown, and the
//! jobs table that holds each job's watermark and last run.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::PlatformAnalyticsUsage as U;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum UsageExt {
    CostNanoUsd,
}

#[derive(DeriveIden)]
enum PlatformAnalyticsUsageBreakdown {
    Table,
    Id,
    UserId,
    PeriodType,
    Date,
    ServiceName,
    Model,
    ApiCallsCount,
    TokensUsed,
    CostNanoUsd,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PlatformJobs {
    Table,
    Name,
    Watermark,
    LastRunAt,
    LastDurationMs,
    LastRows,
    LastError,
    LastSuccessAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            // The original's int32 tokens overflow at 2.1 billion tokens a month.
            manager
                .get_connection()
                .execute_unprepared(
                    "ALTER TABLE platform_analytics_usage \
                     ALTER COLUMN tokens_used TYPE BIGINT, \
                     ALTER COLUMN api_calls_count TYPE BIGINT",
                )
                .await?;
        }
        if !manager
            .has_column("platform_analytics_usage", "cost_nano_usd")
            .await?
        {
            manager
                .alter_table(
                    Table::alter()
                        .table(U::Table)
                        .add_column(
                            ColumnDef::new(UsageExt::CostNanoUsd)
                                .big_integer()
                                .not_null()
                                .default(0),
                        )
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("ux_usage_user_period_date")
                    .table(U::Table)
                    .col(U::UserId)
                    .col(U::PeriodType)
                    .col(U::Date)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_usage_period_date")
                    .table(U::Table)
                    .col(U::PeriodType)
                    .col(U::Date)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        use PlatformAnalyticsUsageBreakdown as B;
        manager
            .create_table(
                Table::create()
                    .table(B::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(B::Id)
                            .integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(B::UserId).integer().not_null())
                    .col(ColumnDef::new(B::PeriodType).string_len(20).not_null())
                    .col(ColumnDef::new(B::Date).timestamp().not_null())
                    .col(
                        ColumnDef::new(B::ServiceName)
                            .string_len(100)
                            .not_null()
                            .default(""),
                    )
                    .col(
                        ColumnDef::new(B::Model)
                            .string_len(100)
                            .not_null()
                            .default(""),
                    )
                    .col(
                        ColumnDef::new(B::ApiCallsCount)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(B::TokensUsed)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(B::CostNanoUsd)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(B::UpdatedAt).timestamp().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_breakdown_bucket")
                    .table(B::Table)
                    .col(B::UserId)
                    .col(B::PeriodType)
                    .col(B::Date)
                    .col(B::ServiceName)
                    .col(B::Model)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_breakdown_period_date")
                    .table(B::Table)
                    .col(B::PeriodType)
                    .col(B::Date)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        use PlatformJobs as J;
        manager
            .create_table(
                Table::create()
                    .table(J::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(J::Name)
                            .string_len(50)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(J::Watermark)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(J::LastRunAt).timestamp().null())
                    .col(ColumnDef::new(J::LastSuccessAt).timestamp().null())
                    .col(
                        ColumnDef::new(J::LastDurationMs)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(J::LastRows)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(J::LastError).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(PlatformJobs::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(PlatformAnalyticsUsageBreakdown::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        for name in ["ux_usage_user_period_date", "ix_usage_period_date"] {
            manager
                .drop_index(
                    Index::drop()
                        .name(name)
                        .table(U::Table)
                        .if_exists()
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(U::Table)
                    .drop_column(UsageExt::CostNanoUsd)
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(
                    "ALTER TABLE platform_analytics_usage \
                     ALTER COLUMN tokens_used TYPE INTEGER, \
                     ALTER COLUMN api_calls_count TYPE INTEGER",
                )
                .await?;
        }
        Ok(())
    }
}
