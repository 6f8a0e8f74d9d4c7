use std::time::{Duration, Instant};

use std::sync::Mutex;

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{self, AsyncCommands};
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};

use super::{Cache, CacheError};

/// Every command is bounded: a stalled Redis must not stall requests.
const OP_TIMEOUT: Duration = Duration::from_millis(1500);

/// Redis through deadpool-redis. Each operation touches one key (or keys
/// sharing a hash tag), so it also works on Redis Cluster.
///
/// Operations share one multiplexed connection taken from the pool: a pool
/// checkout pings Redis (UNWATCH + PING) before every use, which doubled the
/// round trips of a verify. A failed operation drops the shared connection
/// and the next one takes a fresh connection from the pool.
pub struct RedisCache {
    pool: Pool,
    shared: Mutex<Option<MultiplexedConnection>>,
    prefix: String,
}

impl RedisCache {
    pub fn new(url: &str, prefix: &str, pool_size: usize) -> anyhow::Result<Self> {
        let mut cfg = Config::from_url(url);
        cfg.pool = Some(PoolConfig {
            max_size: pool_size,
            timeouts: Timeouts {
                wait: Some(OP_TIMEOUT),
                create: Some(OP_TIMEOUT),
                recycle: Some(OP_TIMEOUT),
            },
            ..PoolConfig::default()
        });
        let pool = cfg.create_pool(Some(Runtime::Tokio1))?;
        Ok(RedisCache {
            pool,
            shared: Mutex::new(None),
            prefix: prefix.to_string(),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    async fn connection(&self) -> Result<MultiplexedConnection, CacheError> {
        if let Some(c) = self.lock().as_ref() {
            return Ok(c.clone());
        }
        let conn = self
            .pool
            .get()
            .await
            .map_err(|e| CacheError(e.to_string()))?;
        let conn = deadpool_redis::Connection::take(conn);
        *self.lock() = Some(conn.clone());
        Ok(conn)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<MultiplexedConnection>> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run<T, F, Fut>(&self, f: F) -> Result<T, CacheError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let conn = self.connection().await?;
            f(conn).await.map_err(|e| CacheError(e.to_string()))
        };
        let result = tokio::time::timeout(OP_TIMEOUT, work)
            .await
            .map_err(|_| CacheError("timed out".into()))
            .and_then(|r| r);
        if result.is_err() {
            *self.lock() = None;
        }
        result
    }
}

#[async_trait::async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        let key = self.key(key);
        self.run(|mut c| async move { c.get(key).await }).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<String>>, CacheError> {
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        self.run(|mut c| async move {
            redis::cmd("MGET")
                .arg(&keys)
                .query_async::<Vec<Option<String>>>(&mut c)
                .await
        })
        .await
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CacheError> {
        let key = self.key(key);
        let value = value.to_string();
        let ms = ttl.as_millis().max(1) as u64;
        self.run(|mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, CacheError> {
        let key = self.key(key);
        let value = value.to_string();
        let ms = ttl.as_millis().max(1) as u64;
        self.run(|mut c| async move {
            let set: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("NX")
                .arg("PX")
                .arg(ms)
                .query_async(&mut c)
                .await?;
            Ok(set.is_some())
        })
        .await
    }

    async fn incr_by(
        &self,
        key: &str,
        delta: i64,
        ttl: Duration,
    ) -> Result<(i64, u64), CacheError> {
        let key = self.key(key);
        let secs = ttl.as_secs().max(1);
        self.run(|mut c| async move {
            // One transaction on one key: the TTL starts with the first change
            // and is never extended (EXPIRE NX, Redis 7).
            let (count, _, left): (i64, i64, i64) = redis::pipe()
                .atomic()
                .cmd("INCRBY")
                .arg(&key)
                .arg(delta)
                .cmd("EXPIRE")
                .arg(&key)
                .arg(secs)
                .arg("NX")
                .cmd("TTL")
                .arg(&key)
                .query_async(&mut c)
                .await?;
            Ok((count, left.max(0) as u64))
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let key = self.key(key);
        self.run(|mut c| async move { c.del::<_, ()>(key).await })
            .await
    }

    async fn ping(&self) -> Option<Result<Duration, CacheError>> {
        let start = Instant::now();
        Some(
            self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
                .await
                .map(|_| start.elapsed()),
        )
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
