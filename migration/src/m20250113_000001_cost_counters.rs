//! Per-minute and per-hour usage the dashboard prices: the users' tokens
//! per (model, token type) and their `cost_usd` dollars, kept by the ingest
//! writer beside the other counters, so a window's cost reads buckets
//! instead of rows. Prices apply when read, so the counters hold tokens,
//! not money. Existing rows are folded in.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Cost {
    Bucket,
    Model,
    TokenType,
    Tokens,
    Dollars,
}

const TABLES: [(&str, &str); 2] = [
    ("platform_analytics_cost_minutes", "minute"),
    ("platform_analytics_cost_hours", "hour"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        for (table, unit) in TABLES {
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new(table))
                        .if_not_exists()
                        .col(ColumnDef::new(Cost::Bucket).timestamp().not_null())
                        // '' for cost_usd rows.
                        .col(ColumnDef::new(Cost::Model).string_len(100).not_null())
                        .col(ColumnDef::new(Cost::TokenType).string_len(10).not_null())
                        .col(ColumnDef::new(Cost::Tokens).big_integer().not_null())
                        .col(ColumnDef::new(Cost::Dollars).double().not_null())
                        .primary_key(
                            Index::create()
                                .col(Cost::Bucket)
                                .col(Cost::Model)
                                .col(Cost::TokenType),
                        )
                        .to_owned(),
                )
                .await?;
            let (bucket, model) = match backend {
                DbBackend::Postgres => (
                    format!("date_trunc('{unit}', \"timestamp\")"),
                    "left(labels ->> 'model', 100)",
                ),
                _ => (
                    format!(
                        "strftime('{}', \"timestamp\")",
                        if unit == "hour" {
                            "%Y-%m-%d %H:00:00"
                        } else {
                            "%Y-%m-%d %H:%M:00"
                        }
                    ),
                    "substr(labels ->> 'model', 1, 100)",
                ),
            };
            let tokens = "metric_name = 'tokens_used'";
            manager
                .get_connection()
                .execute_unprepared(&format!(
                    "INSERT INTO {table} (bucket, model, token_type, tokens, dollars) \
                     SELECT {bucket}, \
                       CASE WHEN {tokens} THEN {model} ELSE '' END, \
                       CASE WHEN {tokens} THEN (CASE WHEN labels ->> 'token_type' = 'output' \
                         THEN 'output' ELSE 'input' END) ELSE '' END, \
                       CAST(SUM(CASE WHEN {tokens} THEN ROUND(metric_value) ELSE 0 END) AS BIGINT), \
                       SUM(CASE WHEN {tokens} THEN 0 ELSE metric_value END) \
                     FROM platform_analytics_metrics \
                     WHERE user_id IS NOT NULL AND (metric_name = 'cost_usd' \
                       OR ({tokens} AND labels ->> 'model' IS NOT NULL)) \
                     GROUP BY 1, 2, 3 ON CONFLICT DO NOTHING"
                ))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, _) in TABLES {
            manager
                .drop_table(
                    Table::drop()
                        .table(Alias::new(table))
                        .if_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
