//! Indexes for the time-range queries of the analytics endpoints (the
//! original had none, so every dashboard scanned whole tables).

use sea_orm_migration::prelude::*;

use crate::{PlatformAnalyticsEvents as E, PlatformAnalyticsMetrics as M};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn indexes() -> Vec<(&'static str, DynIden, Vec<DynIden>)> {
    vec![
        (
            "ix_events_timestamp",
            E::Table.into_iden(),
            vec![E::Timestamp.into_iden()],
        ),
        (
            "ix_events_user_timestamp",
            E::Table.into_iden(),
            vec![
                E::UserId.into_iden(),
                E::Timestamp.into_iden(),
                E::Id.into_iden(),
            ],
        ),
        (
            "ix_events_type_timestamp",
            E::Table.into_iden(),
            vec![
                E::EventType.into_iden(),
                E::Timestamp.into_iden(),
                E::Id.into_iden(),
            ],
        ),
        (
            "ix_events_session_timestamp",
            E::Table.into_iden(),
            vec![E::SessionId.into_iden(), E::Timestamp.into_iden()],
        ),
        (
            "ix_metrics_timestamp",
            M::Table.into_iden(),
            vec![M::Timestamp.into_iden()],
        ),
        (
            "ix_metrics_name_timestamp",
            M::Table.into_iden(),
            vec![
                M::MetricName.into_iden(),
                M::Timestamp.into_iden(),
                M::Id.into_iden(),
            ],
        ),
        (
            "ix_metrics_user_timestamp",
            M::Table.into_iden(),
            vec![
                M::UserId.into_iden(),
                M::Timestamp.into_iden(),
                M::Id.into_iden(),
            ],
        ),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, cols) in indexes() {
            let mut index = Index::create();
            index.name(name).table(table).if_not_exists();
            for col in cols {
                index.col(col);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, _) in indexes() {
            manager
                .drop_index(Index::drop().name(name).table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
