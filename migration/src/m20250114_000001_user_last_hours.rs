//! Each user's latest active hour, kept by the ingest writer beside the
//! presence table, so "active users since t" counts one row per user whose
//! latest hour is at or after t's first whole hour, instead of deduplicating
//! every (hour, user) pair of the window (the dashboard's costliest read at
//! 50 million rows). Folded in from the presence table.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PlatformAnalyticsUserLastHours {
    Table,
    UserId,
    Bucket,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use PlatformAnalyticsUserLastHours as L;
        manager
            .create_table(
                Table::create()
                    .table(L::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(L::UserId).integer().not_null().primary_key())
                    .col(ColumnDef::new(L::Bucket).timestamp().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_user_last_hours_bucket")
                    .table(L::Table)
                    .col(L::Bucket)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO platform_analytics_user_last_hours (user_id, bucket) \
                 SELECT user_id, MAX(bucket) FROM platform_analytics_event_user_hours \
                 WHERE 1 = 1 GROUP BY user_id ON CONFLICT DO NOTHING",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(PlatformAnalyticsUserLastHours::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
