//! Roles, sessions and refresh tokens. Added columns have defaults, so rows
//! the original wrote stay valid.

use sea_orm_migration::prelude::*;

use crate::PlatformUsers as Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PlatformUsersExt {
    Role,
}

#[derive(DeriveIden)]
enum PlatformAuthSessions {
    Table,
    Id,
    UserId,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
    RevokedReason,
    IpAddress,
    UserAgent,
}

#[derive(DeriveIden)]
enum PlatformAuthRefreshTokens {
    Table,
    TokenHash,
    SessionId,
    ParentHash,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_column("platform_users", "role").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .add_column(
                            ColumnDef::new(PlatformUsersExt::Role)
                                .string_len(20)
                                .not_null()
                                .default("user"),
                        )
                        .to_owned(),
                )
                .await?;
        }
        // Logins match emails case-insensitively; rows the original wrote may
        // be mixed case. Both engines support this expression index.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS ix_users_email_lower ON platform_users (lower(email))",
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(PlatformAuthSessions::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(PlatformAuthSessions::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(PlatformAuthSessions::UserId)
                            .integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PlatformAuthSessions::CreatedAt)
                            .timestamp()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PlatformAuthSessions::ExpiresAt)
                            .timestamp()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PlatformAuthSessions::RevokedAt)
                            .timestamp()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(PlatformAuthSessions::RevokedReason)
                            .string_len(50)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(PlatformAuthSessions::IpAddress)
                            .string_len(45)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(PlatformAuthSessions::UserAgent)
                            .text()
                            .null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_sessions_user")
                            .from(PlatformAuthSessions::Table, PlatformAuthSessions::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_sessions_user")
                    .table(PlatformAuthSessions::Table)
                    .col(PlatformAuthSessions::UserId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PlatformAuthRefreshTokens::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(PlatformAuthRefreshTokens::TokenHash)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(PlatformAuthRefreshTokens::SessionId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PlatformAuthRefreshTokens::ParentHash)
                            .string_len(64)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(PlatformAuthRefreshTokens::CreatedAt)
                            .timestamp()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PlatformAuthRefreshTokens::ExpiresAt)
                            .timestamp()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PlatformAuthRefreshTokens::UsedAt)
                            .timestamp()
                            .null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_refresh_session")
                            .from(
                                PlatformAuthRefreshTokens::Table,
                                PlatformAuthRefreshTokens::SessionId,
                            )
                            .to(PlatformAuthSessions::Table, PlatformAuthSessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_refresh_session")
                    .table(PlatformAuthRefreshTokens::Table)
                    .col(PlatformAuthRefreshTokens::SessionId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(PlatformAuthRefreshTokens::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(PlatformAuthSessions::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS ix_users_email_lower")
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(PlatformUsersExt::Role)
                    .to_owned(),
            )
            .await
    }
}
