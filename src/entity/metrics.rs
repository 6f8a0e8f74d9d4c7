use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "platform_analytics_metrics")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub metric_name: String,
    pub metric_value: f64,
    pub metric_type: String,
    pub user_id: Option<i32>,
    pub service_name: Option<String>,
    pub endpoint: Option<String>,
    #[sea_orm(column_type = "Json")]
    pub labels: Json,
    pub timestamp: DateTime,
    /// The managed API key that ingested it (none for configured keys).
    pub api_key_id: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
