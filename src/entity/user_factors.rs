use sea_orm::entity::prelude::*;

/// A user's second factors: TOTP and passkeys.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "platform_user_factors")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub user_id: i32,
    /// `totp` or `passkey`.
    pub kind: String,
    pub name: Option<String>,
    /// The TOTP secret, base32.
    pub secret: Option<String>,
    /// A passkey as webauthn-rs keeps it (JSON): public key, counter.
    pub credential: Option<String>,
    /// The passkey's credential id, base64url, for lookups.
    pub credential_id: Option<String>,
    /// The WebAuthn user handle (a UUID), the same for all of a user's passkeys.
    pub user_handle: Option<String>,
    /// The last TOTP time step accepted: each step's code is accepted once.
    pub last_used_step: i64,
    /// Set once the user proved a code; unconfirmed factors do not count.
    pub confirmed_at: Option<DateTime>,
    pub created_at: DateTime,
    pub last_used_at: Option<DateTime>,
}

/// The kinds of factor.
pub const TOTP: &str = "totp";
pub const PASSKEY: &str = "passkey";

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
