use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "platform_analytics_usage_breakdown")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub user_id: i32,
    pub period_type: String,
    pub date: DateTime,
    /// Empty when the metrics named none.
    pub service_name: String,
    pub model: String,
    pub api_calls_count: i64,
    pub tokens_used: i64,
    pub cost_nano_usd: i64,
    /// Pico-dollars beyond `cost_nano_usd` (-500..=500), so sums stay exact.
    pub cost_pico_rem: i16,
    pub updated_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
