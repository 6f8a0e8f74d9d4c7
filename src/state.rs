//! What every handler can reach.

use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;
use sea_orm::DatabaseConnection;

use crate::auth::AuthContext;

use crate::cache::SharedCache;
use crate::config::Settings;

#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub cache: SharedCache,
    pub settings: Arc<Settings>,
    pub started_at: Instant,
    pub auth: Arc<AuthContext>,
    pub trusted_proxies: Arc<Vec<IpNet>>,
}
