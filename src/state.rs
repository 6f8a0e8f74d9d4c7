//! What every handler can reach.

use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;
use sea_orm::DatabaseConnection;

use crate::analytics::ingest::IngestHandle;
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
    pub ingest: IngestHandle,
    pub jobs: Arc<crate::jobs::JobsContext>,
}

/// Tasks that outlive requests (the ingest writer, jobs). Stopped after the
/// HTTP server, so requests still waiting for a commit get their answer.
pub struct Background {
    pub shutdown: tokio::sync::watch::Sender<bool>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
