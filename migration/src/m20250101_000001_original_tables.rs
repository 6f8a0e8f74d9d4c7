//! The original service's tables, column for column (names, types, NULLs),
//! created only where missing.

use sea_orm_migration::prelude::*;

use crate::{PlatformAnalyticsEvents as E, PlatformAnalyticsMetrics as M};
use crate::{PlatformAnalyticsUsage as U, PlatformUsers as Users};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn id<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .if_not_exists()
                    .col(id(Users::Id))
                    .col(
                        ColumnDef::new(Users::Email)
                            .string_len(255)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(Users::PasswordHash)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Users::IsActive).boolean().not_null())
                    .col(ColumnDef::new(Users::CreatedAt).timestamp().not_null())
                    .col(ColumnDef::new(Users::UpdatedAt).timestamp().not_null())
                    .col(ColumnDef::new(Users::FirstName).string_len(100).null())
                    .col(ColumnDef::new(Users::LastName).string_len(100).null())
                    .col(ColumnDef::new(Users::MetaData).json().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(E::Table)
                    .if_not_exists()
                    .col(id(E::Id))
                    .col(ColumnDef::new(E::UserId).integer().null())
                    .col(ColumnDef::new(E::EventType).string_len(100).not_null())
                    .col(ColumnDef::new(E::EventData).json().not_null())
                    .col(ColumnDef::new(E::Timestamp).timestamp().not_null())
                    .col(ColumnDef::new(E::SessionId).string_len(255).null())
                    .col(ColumnDef::new(E::IpAddress).string_len(45).null())
                    .col(ColumnDef::new(E::UserAgent).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(M::Table)
                    .if_not_exists()
                    .col(id(M::Id))
                    .col(ColumnDef::new(M::MetricName).string_len(100).not_null())
                    .col(ColumnDef::new(M::MetricValue).double().not_null())
                    .col(ColumnDef::new(M::MetricType).string_len(50).not_null())
                    .col(ColumnDef::new(M::UserId).integer().null())
                    .col(ColumnDef::new(M::ServiceName).string_len(100).null())
                    .col(ColumnDef::new(M::Endpoint).string_len(255).null())
                    .col(ColumnDef::new(M::Labels).json().not_null())
                    .col(ColumnDef::new(M::Timestamp).timestamp().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(U::Table)
                    .if_not_exists()
                    .col(id(U::Id))
                    .col(ColumnDef::new(U::UserId).integer().not_null())
                    .col(ColumnDef::new(U::ApiCallsCount).integer().not_null())
                    .col(ColumnDef::new(U::TokensUsed).integer().not_null())
                    .col(ColumnDef::new(U::CostUsd).double().not_null())
                    .col(ColumnDef::new(U::Date).timestamp().not_null())
                    .col(ColumnDef::new(U::PeriodType).string_len(20).not_null())
                    .col(ColumnDef::new(U::CreatedAt).timestamp().not_null())
                    .col(ColumnDef::new(U::UpdatedAt).timestamp().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            U::Table.into_iden(),
            M::Table.into_iden(),
            E::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
