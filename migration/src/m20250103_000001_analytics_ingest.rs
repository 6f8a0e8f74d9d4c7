//! High-rate ingestion: 64-bit ids (at 15,000 rows a second a 32-bit serial
//! runs out within two days) and a client `event_id` for idempotent retries.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::PlatformAnalyticsEvents as E;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventsExt {
    EventId,
}

const TABLES: [&str; 2] = ["platform_analytics_events", "platform_analytics_metrics"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            // SQLite's INTEGER is already 64-bit.
            for table in TABLES {
                manager
                    .get_connection()
                    .execute_unprepared(&format!(
                        "ALTER TABLE {table} ALTER COLUMN id TYPE BIGINT;\
                         DO $$ BEGIN EXECUTE format('ALTER SEQUENCE %s AS BIGINT', \
                         pg_get_serial_sequence('{table}', 'id')); END $$;"
                    ))
                    .await?;
            }
        }
        if !manager
            .has_column("platform_analytics_events", "event_id")
            .await?
        {
            manager
                .alter_table(
                    Table::alter()
                        .table(E::Table)
                        .add_column(ColumnDef::new(EventsExt::EventId).string_len(128).null())
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("ux_events_event_id")
                    .table(E::Table)
                    .col(EventsExt::EventId)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("ux_events_event_id")
                    .table(E::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(E::Table)
                    .drop_column(EventsExt::EventId)
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            for table in TABLES {
                manager
                    .get_connection()
                    .execute_unprepared(&format!(
                        "ALTER SEQUENCE {table}_id_seq AS INTEGER; ALTER TABLE {table} ALTER COLUMN id TYPE INTEGER"
                    ))
                    .await?;
            }
        }
        Ok(())
    }
}
