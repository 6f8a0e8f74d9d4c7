//! Hourly event and metric rollups beside the minute ones: a day-long window
//! reads 24 buckets per key instead of 1,440.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PlatformAnalyticsEventHours {
    Table,
    Bucket,
    EventType,
    Events,
}

#[derive(DeriveIden)]
enum PlatformAnalyticsMetricHours {
    Table,
    Bucket,
    MetricName,
    Endpoint,
    RowCount,
    ValueSum,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use PlatformAnalyticsEventHours as E;
        use PlatformAnalyticsMetricHours as M;
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
        // Fold the minute rollups (which already hold every existing row).
        let hour = match manager.get_database_backend() {
            DbBackend::Postgres => "date_trunc('hour', bucket)",
            _ => "strftime('%Y-%m-%d %H:00:00', bucket)",
        };
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "INSERT INTO platform_analytics_event_hours (bucket, event_type, events) \
                 SELECT {hour}, event_type, SUM(events) FROM platform_analytics_event_minutes GROUP BY 1, 2 \
                 ON CONFLICT DO NOTHING; \
                 INSERT INTO platform_analytics_metric_hours (bucket, metric_name, endpoint, row_count, value_sum) \
                 SELECT {hour}, metric_name, endpoint, SUM(row_count), SUM(value_sum) \
                 FROM platform_analytics_metric_minutes GROUP BY 1, 2, 3 ON CONFLICT DO NOTHING;"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            PlatformAnalyticsMetricHours::Table.into_iden(),
            PlatformAnalyticsEventHours::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
