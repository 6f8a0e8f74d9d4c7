//! What every handler can reach.

use std::sync::Arc;
use std::time::Instant;

use sea_orm::DatabaseConnection;

use crate::cache::SharedCache;
use crate::config::Settings;

#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub cache: SharedCache,
    pub settings: Arc<Settings>,
    pub started_at: Instant,
}
