//! Which users did each event type in each hour, kept by the ingest writer
//! beside the other counters, so distinct users per event type read whole
//! hours from here instead of every row of the window. Existing rows are
//! folded in.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PlatformAnalyticsEventTypeUserHours {
    Table,
    Bucket,
    EventType,
    UserId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use PlatformAnalyticsEventTypeUserHours as H;
        manager
            .create_table(
                Table::create()
                    .table(H::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(H::Bucket).timestamp().not_null())
                    .col(ColumnDef::new(H::EventType).string_len(100).not_null())
                    .col(ColumnDef::new(H::UserId).integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(H::Bucket)
                            .col(H::EventType)
                            .col(H::UserId),
                    )
                    .to_owned(),
            )
            .await?;
        let hour = match manager.get_database_backend() {
            DbBackend::Postgres => "date_trunc('hour', \"timestamp\")",
            _ => "strftime('%Y-%m-%d %H:00:00', \"timestamp\")",
        };
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "INSERT INTO platform_analytics_event_type_user_hours (bucket, event_type, user_id) \
                 SELECT DISTINCT {hour}, event_type, user_id FROM platform_analytics_events \
                 WHERE user_id IS NOT NULL ON CONFLICT DO NOTHING"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(PlatformAnalyticsEventTypeUserHours::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
