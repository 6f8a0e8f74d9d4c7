use sea_orm::entity::prelude::*;

/// A WebAuthn ceremony between its start and its finish (any replica may
/// serve either): the server's half of the challenge, single use.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "platform_webauthn_ceremonies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The registering user, or the ticket's user; `None` for passwordless login.
    pub user_id: Option<i32>,
    /// `register`, `second_factor` or `login`.
    pub kind: String,
    /// webauthn-rs's state, JSON.
    #[sea_orm(column_type = "Text")]
    pub state: String,
    pub created_at: DateTime,
    pub expires_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
