//! Per-minute event counts, per-hour active users and per-minute metric
//! sums, kept by the ingest writer in the same transaction as the rows, so
//! the dashboard reads a few thousand buckets instead of millions of rows.
//! Existing rows (an adopted database) are folded in here.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PlatformAnalyticsEventMinutes {
    Table,
    Bucket,
    EventType,
    Events,
}

#[derive(DeriveIden)]
enum PlatformAnalyticsEventUserHours {
    Table,
    Bucket,
    UserId,
}

#[derive(DeriveIden)]
enum PlatformAnalyticsMetricMinutes {
    Table,
    Bucket,
    MetricName,
    Endpoint,
    RowCount,
    ValueSum,
}

/// Folds existing raw rows into the rollup tables.
pub fn backfill_sql(backend: DbBackend) -> String {
    let (minute, hour) = match backend {
        DbBackend::Postgres => (
            "date_trunc('minute', \"timestamp\")",
            "date_trunc('hour', \"timestamp\")",
        ),
        _ => (
            "strftime('%Y-%m-%d %H:%M:00', \"timestamp\")",
            "strftime('%Y-%m-%d %H:00:00', \"timestamp\")",
        ),
    };
    format!(
        "INSERT INTO platform_analytics_event_minutes (bucket, event_type, events) \
         SELECT {minute}, event_type, COUNT(*) FROM platform_analytics_events GROUP BY 1, 2 ON CONFLICT DO NOTHING; \
         INSERT INTO platform_analytics_event_user_hours (bucket, user_id) \
         SELECT DISTINCT {hour}, user_id FROM platform_analytics_events WHERE user_id IS NOT NULL ON CONFLICT DO NOTHING; \
         INSERT INTO platform_analytics_metric_minutes (bucket, metric_name, endpoint, row_count, value_sum) \
         SELECT {minute}, metric_name, COALESCE(endpoint, ''), COUNT(*), SUM(metric_value) \
         FROM platform_analytics_metrics GROUP BY 1, 2, 3 ON CONFLICT DO NOTHING;"
    )
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use PlatformAnalyticsEventMinutes as E;
        use PlatformAnalyticsEventUserHours as H;
        use PlatformAnalyticsMetricMinutes as M;
        manager
            .create_table(
                Table::create()
                    .table(E::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(E::Bucket).timestamp().not_null())
                    .col(ColumnDef::new(E::EventType).string_len(100).not_null())
                    .col(ColumnDef::new(E::Events).big_integer().not_null())
                    .primary_key(Index::create().col(E::Bucket).col(E::EventType))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(H::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(H::Bucket).timestamp().not_null())
                    .col(ColumnDef::new(H::UserId).integer().not_null())
                    .primary_key(Index::create().col(H::Bucket).col(H::UserId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(M::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(M::Bucket).timestamp().not_null())
                    .col(ColumnDef::new(M::MetricName).string_len(100).not_null())
                    .col(
                        ColumnDef::new(M::Endpoint)
                            .string_len(255)
                            .not_null()
                            .default(""),
                    )
                    .col(ColumnDef::new(M::RowCount).big_integer().not_null())
                    .col(ColumnDef::new(M::ValueSum).double().not_null())
                    .primary_key(
                        Index::create()
                            .col(M::Bucket)
                            .col(M::MetricName)
                            .col(M::Endpoint),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(&backfill_sql(manager.get_database_backend()))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            PlatformAnalyticsMetricMinutes::Table.into_iden(),
            PlatformAnalyticsEventUserHours::Table.into_iden(),
            PlatformAnalyticsEventMinutes::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
