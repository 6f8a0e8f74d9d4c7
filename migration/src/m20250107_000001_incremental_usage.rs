//! Incremental usage rollups: each run adds only the metrics it has not yet
//! counted. The stored sums keep their sub-nano-dollar remainder (so adding
//! deltas stays exact), and the rollup job keeps the id gaps it saw (ids a
//! concurrent writer held but had not committed), to count them once they
//! commit.

use sea_orm_migration::prelude::*;

use crate::PlatformAnalyticsUsage as U;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Added {
    CostPicoRem,
    Gaps,
}

#[derive(DeriveIden)]
enum PlatformAnalyticsUsageBreakdown {
    Table,
}

#[derive(DeriveIden)]
enum PlatformJobs {
    Table,
}

fn remainder() -> ColumnDef {
    ColumnDef::new(Added::CostPicoRem)
        .small_integer()
        .not_null()
        .default(0)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite alters one column per statement.
        for table in [
            U::Table.into_iden(),
            PlatformAnalyticsUsageBreakdown::Table.into_iden(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(remainder())
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(PlatformJobs::Table)
                    .add_column(ColumnDef::new(Added::Gaps).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(PlatformJobs::Table)
                    .drop_column(Added::Gaps)
                    .to_owned(),
            )
            .await?;
        for table in [
            U::Table.into_iden(),
            PlatformAnalyticsUsageBreakdown::Table.into_iden(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .drop_column(Added::CostPicoRem)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
