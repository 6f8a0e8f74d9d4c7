//! Managed API keys (stored as digests, with scopes, limits, expiry and
//! revocation) and the key that ingested each event and metric.

use sea_orm_migration::prelude::*;

use crate::{PlatformAnalyticsEvents as E, PlatformAnalyticsMetrics as M};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PlatformApiKeys {
    Table,
    Id,
    Name,
    Prefix,
    Digest,
    Scopes,
    RatePerSecond,
    DailyIngestQuota,
    ExpiresAt,
    CreatedBy,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Added {
    ApiKeyId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use PlatformApiKeys as K;
        manager
            .create_table(
                Table::create()
                    .table(K::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(K::Id)
                            .integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(K::Name).string_len(100).not_null())
                    .col(ColumnDef::new(K::Prefix).string_len(16).not_null())
                    .col(ColumnDef::new(K::Digest).string_len(64).not_null())
                    .col(ColumnDef::new(K::Scopes).string_len(100).not_null())
                    .col(ColumnDef::new(K::RatePerSecond).integer().null())
                    .col(ColumnDef::new(K::DailyIngestQuota).big_integer().null())
                    .col(ColumnDef::new(K::ExpiresAt).timestamp().null())
                    .col(ColumnDef::new(K::CreatedBy).string_len(255).null())
                    .col(ColumnDef::new(K::CreatedAt).timestamp().not_null())
                    .col(ColumnDef::new(K::LastUsedAt).timestamp().null())
                    .col(ColumnDef::new(K::RevokedAt).timestamp().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_api_keys_digest")
                    .table(K::Table)
                    .col(K::Digest)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // SQLite alters one column per statement.
        for table in [E::Table.into_iden(), M::Table.into_iden()] {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(ColumnDef::new(Added::ApiKeyId).integer().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [E::Table.into_iden(), M::Table.into_iden()] {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .drop_column(Added::ApiKeyId)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(PlatformApiKeys::Table).to_owned())
            .await
    }
}
