//! Accounts: `email_verified` on users (existing rows count as verified, so
//! adopted deployments change nothing), single-use tokens of mailed links
//! (stored as digests), and the mail outbox.

use sea_orm_migration::prelude::*;

use crate::PlatformUsers as U;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Added {
    EmailVerified,
}

#[derive(DeriveIden)]
enum PlatformUserTokens {
    Table,
    TokenHash,
    UserId,
    Purpose,
    Email,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum PlatformMailOutbox {
    Table,
    Id,
    Kind,
    Recipient,
    UserId,
    Params,
    Nonce,
    CreatedAt,
    NextAttemptAt,
    Attempts,
    ClaimedUntil,
    SentAt,
    Outcome,
    LastError,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(U::Table)
                    .add_column(
                        ColumnDef::new(Added::EmailVerified)
                            .boolean()
                            .not_null()
                            .default(true),
                    )
                    .to_owned(),
            )
            .await?;

        use PlatformUserTokens as T;
        manager
            .create_table(
                Table::create()
                    .table(T::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(T::TokenHash)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(T::UserId).integer().not_null())
                    .col(ColumnDef::new(T::Purpose).string_len(32).not_null())
                    .col(ColumnDef::new(T::Email).string_len(255).null())
                    .col(ColumnDef::new(T::CreatedAt).timestamp().not_null())
                    .col(ColumnDef::new(T::ExpiresAt).timestamp().not_null())
                    .col(ColumnDef::new(T::UsedAt).timestamp().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_user_tokens_user_purpose")
                    .table(T::Table)
                    .col(T::UserId)
                    .col(T::Purpose)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        use PlatformMailOutbox as O;
        manager
            .create_table(
                Table::create()
                    .table(O::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(O::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(O::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(O::Recipient).string_len(255).not_null())
                    .col(ColumnDef::new(O::UserId).integer().null())
                    .col(ColumnDef::new(O::Params).json().not_null())
                    .col(ColumnDef::new(O::Nonce).string_len(64).null())
                    .col(ColumnDef::new(O::CreatedAt).timestamp().not_null())
                    .col(ColumnDef::new(O::NextAttemptAt).timestamp().not_null())
                    .col(ColumnDef::new(O::Attempts).integer().not_null().default(0))
                    .col(ColumnDef::new(O::ClaimedUntil).timestamp().null())
                    .col(ColumnDef::new(O::SentAt).timestamp().null())
                    .col(ColumnDef::new(O::Outcome).string_len(32).null())
                    .col(ColumnDef::new(O::LastError).string_len(64).null())
                    .to_owned(),
            )
            .await?;
        // The sender's query: pending rows by due time.
        manager
            .create_index(
                Index::create()
                    .name("ix_mail_outbox_pending")
                    .table(O::Table)
                    .col(O::SentAt)
                    .col(O::NextAttemptAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PlatformMailOutbox::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(PlatformUserTokens::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(U::Table)
                    .drop_column(Added::EmailVerified)
                    .to_owned(),
            )
            .await
    }
}
