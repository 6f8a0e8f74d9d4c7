use sea_orm::entity::prelude::*;

/// Mails waiting to be sent, written in the transaction of the change that
/// caused them; the sender delivers them.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "platform_mail_outbox")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub kind: String,
    pub recipient: String,
    pub user_id: Option<i32>,
    /// Template values other than the link.
    #[sea_orm(column_type = "Json")]
    pub params: Json,
    /// The link's token is derived from this with the server's mail key; only
    /// the token's digest is stored (in `platform_user_tokens`).
    pub nonce: Option<String>,
    pub created_at: DateTime,
    pub next_attempt_at: DateTime,
    pub attempts: i32,
    /// Lease of the replica sending it.
    pub claimed_until: Option<DateTime>,
    pub sent_at: Option<DateTime>,
    /// `sent`, `logged`, `discarded` or `no_account`.
    pub outcome: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
