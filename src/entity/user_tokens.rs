use sea_orm::entity::prelude::*;

/// Single-use tokens of mailed links (reset, verification, email change).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "platform_user_tokens")]
pub struct Model {
    /// SHA-256 of the token, hex; the token itself is never stored.
    #[sea_orm(primary_key, auto_increment = false)]
    pub token_hash: String,
    pub user_id: i32,
    pub purpose: String,
    /// The address the link proves (verification, the new address of a change).
    pub email: Option<String>,
    pub created_at: DateTime,
    pub expires_at: DateTime,
    pub used_at: Option<DateTime>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
