use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "platform_jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub watermark: i64,
    pub last_run_at: Option<DateTime>,
    pub last_success_at: Option<DateTime>,
    pub last_duration_ms: i64,
    pub last_rows: i64,
    pub last_error: Option<String>,
    /// Rollup: id ranges seen missing, as JSON `[[lo, hi, first_seen_unix], …]`.
    pub gaps: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
