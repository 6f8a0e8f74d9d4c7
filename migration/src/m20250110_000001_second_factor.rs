//! Second factors: TOTP and passkeys per user, single-use recovery codes
//! stored as digests, MFA tickets of two-step logins, WebAuthn ceremonies in
//! flight, and the authentication methods (`amr`) a session was established
//! with.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PlatformUserFactors {
    Table,
    Id,
    UserId,
    Kind,
    Name,
    Secret,
    Credential,
    CredentialId,
    UserHandle,
    LastUsedStep,
    ConfirmedAt,
    CreatedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum PlatformRecoveryCodes {
    Table,
    Id,
    UserId,
    CodeHash,
    CreatedAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum PlatformMfaTickets {
    Table,
    TicketHash,
    UserId,
    CreatedAt,
    ExpiresAt,
    UsedAt,
    Failures,
}

#[derive(DeriveIden)]
enum PlatformWebauthnCeremonies {
    Table,
    Id,
    UserId,
    Kind,
    State,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum PlatformAuthSessions {
    Table,
    Amr,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use PlatformUserFactors as F;
        manager
            .create_table(
                Table::create()
                    .table(F::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(F::Id)
                            .integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(F::UserId).integer().not_null())
                    .col(ColumnDef::new(F::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(F::Name).string_len(100).null())
                    .col(ColumnDef::new(F::Secret).string_len(128).null())
                    .col(ColumnDef::new(F::Credential).text().null())
                    .col(ColumnDef::new(F::CredentialId).string_len(1024).null())
                    .col(ColumnDef::new(F::UserHandle).string_len(36).null())
                    .col(
                        ColumnDef::new(F::LastUsedStep)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(F::ConfirmedAt).timestamp().null())
                    .col(ColumnDef::new(F::CreatedAt).timestamp().not_null())
                    .col(ColumnDef::new(F::LastUsedAt).timestamp().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_user_factors_user")
                    .table(F::Table)
                    .col(F::UserId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_user_factors_credential")
                    .table(F::Table)
                    .col(F::CredentialId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        use PlatformWebauthnCeremonies as W;
        manager
            .create_table(
                Table::create()
                    .table(W::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(W::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(W::UserId).integer().null())
                    .col(ColumnDef::new(W::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(W::State).text().not_null())
                    .col(ColumnDef::new(W::CreatedAt).timestamp().not_null())
                    .col(ColumnDef::new(W::ExpiresAt).timestamp().not_null())
                    .to_owned(),
            )
            .await?;
        use PlatformRecoveryCodes as R;
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(R::Id)
                            .integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(R::UserId).integer().not_null())
                    .col(ColumnDef::new(R::CodeHash).string_len(64).not_null())
                    .col(ColumnDef::new(R::CreatedAt).timestamp().not_null())
                    .col(ColumnDef::new(R::UsedAt).timestamp().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_recovery_codes_user")
                    .table(R::Table)
                    .col(R::UserId)
                    .col(R::CodeHash)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        use PlatformMfaTickets as T;
        manager
            .create_table(
                Table::create()
                    .table(T::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(T::TicketHash)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(T::UserId).integer().not_null())
                    .col(ColumnDef::new(T::CreatedAt).timestamp().not_null())
                    .col(ColumnDef::new(T::ExpiresAt).timestamp().not_null())
                    .col(ColumnDef::new(T::UsedAt).timestamp().null())
                    .col(ColumnDef::new(T::Failures).integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(PlatformAuthSessions::Table)
                    .add_column(
                        ColumnDef::new(PlatformAuthSessions::Amr)
                            .string_len(64)
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(PlatformAuthSessions::Table)
                    .drop_column(PlatformAuthSessions::Amr)
                    .to_owned(),
            )
            .await?;
        for table in [
            PlatformWebauthnCeremonies::Table.into_iden(),
            PlatformMfaTickets::Table.into_iden(),
            PlatformRecoveryCodes::Table.into_iden(),
            PlatformUserFactors::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
