use sea_orm::entity::prelude::*;

/// A user's second factors (TOTP today).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "platform_user_factors")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub user_id: i32,
    /// `totp`.
    pub kind: String,
    pub name: Option<String>,
    /// The TOTP secret, base32.
    pub secret: Option<String>,
    /// The last TOTP time step accepted: each step's code is accepted once.
    pub last_used_step: i64,
    /// Set once the user proved a code; unconfirmed factors do not count.
    pub confirmed_at: Option<DateTime>,
    pub created_at: DateTime,
    pub last_used_at: Option<DateTime>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
