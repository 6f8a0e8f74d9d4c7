//! Authentication: accounts, sessions, tokens, roles, throttling.

pub mod dto;
pub mod extract;
pub mod jwt;
pub mod password;
pub mod routes;
pub mod service;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;

/// Auth material built once at start.
pub struct AuthContext {
    pub hasher: password::PasswordHasher,
    pub jwt: jwt::JwtKeys,
    pub refresh_ttl: Duration,
    /// Revocations the cache missed (Redis down): retried until they land,
    /// so a marker cached as live before the outage cannot outlive it.
    pub pending_revocations: std::sync::Mutex<Vec<(String, std::time::Instant)>>,
}

impl AuthContext {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(AuthContext {
            hasher: password::PasswordHasher::new(
                settings.password_hash_rounds,
                settings.password_hash_concurrency,
            ),
            jwt: jwt::JwtKeys::from_settings(settings)?,
            refresh_ttl: settings.refresh_token_ttl()?,
            pending_revocations: std::sync::Mutex::new(Vec::new()),
        }))
    }
}
