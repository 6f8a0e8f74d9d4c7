//! What every handler can reach. Only the HTTP edge sees it; services take
//! the parts they use.

use std::sync::Arc;
use std::time::Instant;

use sea_orm::DatabaseConnection;

use crate::analytics::live::LiveFeed;
use crate::analytics::queue::IngestHandle;
use crate::auth::Auth;
use crate::cache::SharedCache;
use crate::config::Settings;
use crate::jobs::Jobs;
use crate::keys::Keys;

#[derive(Clone)]
pub struct AppState {
    /// The primary: writes, auth, jobs, and reads that must see their writes.
    pub db: DatabaseConnection,
    /// Analytics reads that may lag: a replica in sync, else the primary.
    pub reads: Arc<crate::db::replicas::Reads>,
    pub cache: SharedCache,
    pub settings: Arc<Settings>,
    pub started_at: Instant,
    pub auth: Arc<Auth>,
    pub ingest: IngestHandle,
    pub live: Arc<LiveFeed>,
    pub jobs: Arc<Jobs>,
    pub keys: Arc<Keys>,
}
