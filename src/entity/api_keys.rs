use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "platform_api_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub name: String,
    /// The start of the key, shown in lists so people can tell keys apart.
    pub prefix: String,
    /// SHA-256 of the whole key, hex; the key itself is never stored.
    pub digest: String,
    /// Comma-separated scope names.
    pub scopes: String,
    pub rate_per_second: Option<i32>,
    pub daily_ingest_quota: Option<i64>,
    pub expires_at: Option<DateTime>,
    pub created_by: Option<String>,
    pub created_at: DateTime,
    pub last_used_at: Option<DateTime>,
    pub revoked_at: Option<DateTime>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
