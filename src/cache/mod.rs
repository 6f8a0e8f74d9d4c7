//! The cache shared by replicas: token revocations, throttling counters and
//! cached lookups. Redis when configured, else an in-process map.

mod memory;
mod near;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::config::CacheSettings;

pub use self::memory::MemoryCache;
pub use self::redis::{RedisCache, RedisTarget};

#[derive(Debug, thiserror::Error)]
#[error("cache unavailable: {0}")]
pub struct CacheError(pub String);

#[async_trait::async_trait]
pub trait Cache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<String>, CacheError>;
    /// Several keys in one round trip. On Redis Cluster they must share a
    /// hash tag (`{…}`), which the callers' key names ensure.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<String>>, CacheError>;
    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CacheError>;
    /// Sets only when the key is absent; answers whether it did. Used to fill
    /// the cache from the database without overwriting a newer revocation.
    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, CacheError>;
    /// Adds `delta` (which may be negative) and starts the TTL on the first
    /// change; answers the new count and the seconds left until it resets.
    async fn incr_by(&self, key: &str, delta: i64, ttl: Duration)
    -> Result<(i64, u64), CacheError>;
    async fn incr(&self, key: &str, ttl: Duration) -> Result<(i64, u64), CacheError> {
        self.incr_by(key, 1, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), CacheError>;
    /// Round trip to the backing store; `None` for the in-process cache.
    async fn ping(&self) -> Option<Result<Duration, CacheError>>;
    fn backend(&self) -> &'static str;
    /// Changes whenever a user or session record (`user:`, `sess:` keys) may
    /// have changed as this process reads it; `None` while the cache cannot
    /// tell (the near cache's channel is down). What a caller derived from
    /// those records under one stamp holds while the stamp is the same.
    fn stamp(&self) -> Option<u64> {
        None
    }
    /// Starts what the cache runs beside requests (Redis: following the
    /// near cache's invalidation channel).
    fn start(
        &self,
        _shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        None
    }
    /// Sends `payload` to every replica following `channel`. `Ok(false)`:
    /// nothing is shared between processes (the in-process cache), so the
    /// caller delivers it here itself.
    async fn publish(&self, _channel: &str, _payload: &str) -> Result<bool, CacheError> {
        Ok(false)
    }
    /// Follows `channel` on the shared store; `None` when there is none.
    fn follow(
        &self,
        _channel: &str,
        _follower: Arc<dyn Follower>,
        _shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        None
    }
}

/// Where a followed channel's messages go.
pub trait Follower: Send + Sync + 'static {
    /// Subscribed (again): messages flow from now on.
    fn up(&self) {}
    fn message(&self, payload: String);
    /// False asks for a fresh subscription (something saw Redis fail).
    fn live(&self) -> bool {
        true
    }
    /// Unsubscribed: messages sent meanwhile are missed.
    fn down(&self) {}
}

pub type SharedCache = Arc<dyn Cache>;

pub fn build(settings: &CacheSettings) -> anyhow::Result<SharedCache> {
    let target = match &settings.redis_url {
        Some(url) => RedisTarget::Single(url.expose_secret()),
        None if !settings.redis_cluster_nodes.is_empty() => RedisTarget::Cluster(
            settings
                .redis_cluster_nodes
                .iter()
                .map(|n| n.expose_secret())
                .collect(),
        ),
        None => return Ok(Arc::new(MemoryCache::new())),
    };
    Ok(Arc::new(RedisCache::new(
        target,
        &settings.key_prefix,
        settings.pool_size,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_cache_expires_and_counts() {
        let cache = MemoryCache::new();
        cache
            .set("a", "1", Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(cache.get("a").await.unwrap().as_deref(), Some("1"));
        assert_eq!(cache.incr("n", Duration::from_secs(60)).await.unwrap().0, 1);
        let (count, ttl) = cache.incr("n", Duration::from_secs(60)).await.unwrap();
        assert_eq!(count, 2);
        assert!((59..=60).contains(&ttl), "ttl {ttl}");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(cache.get("a").await.unwrap(), None);
        assert!(
            cache
                .set_nx("x", "first", Duration::from_secs(5))
                .await
                .unwrap()
        );
        assert!(
            !cache
                .set_nx("x", "second", Duration::from_secs(5))
                .await
                .unwrap()
        );
        assert_eq!(cache.get("x").await.unwrap().as_deref(), Some("first"));
        let (count, _) = cache
            .incr_by("n", -1, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(count, 1);
        cache.delete("n").await.unwrap();
        assert_eq!(cache.get("n").await.unwrap(), None);
    }

    #[tokio::test]
    async fn memory_stamp_moves_with_user_and_session_records_only() {
        let cache = MemoryCache::new();
        let ttl = Duration::from_secs(60);
        let s0 = cache.stamp().unwrap();
        cache.set("login-fail:ip:x", "1", ttl).await.unwrap();
        cache.incr("rate:x", ttl).await.unwrap();
        cache.get_many(&["user:{1}", "sess:{1}:a"]).await.unwrap();
        assert_eq!(cache.stamp(), Some(s0), "reads and other keys leave it");
        cache.set("user:{1}", "{}", ttl).await.unwrap();
        let s1 = cache.stamp().unwrap();
        assert_ne!(s1, s0);
        cache.set_nx("sess:{1}:a", "1", ttl).await.unwrap();
        let s2 = cache.stamp().unwrap();
        assert_ne!(s2, s1);
        cache.delete("sess:{1}:a").await.unwrap();
        assert_ne!(cache.stamp(), Some(s2));
    }
}
