use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_redis::cluster::ClusterConnection;
use deadpool_redis::redis;
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::{PoolConfig, Runtime, Timeouts};
use futures_util::StreamExt;

use super::near::Near;
use super::{Cache, CacheError, Follower};

/// Every command is bounded: a stalled Redis must not stall requests.
const OP_TIMEOUT: Duration = Duration::from_millis(1500);

/// Where the cache lives: one Redis, or a Redis Cluster named by seed nodes.
pub enum RedisTarget<'a> {
    Single(&'a str),
    Cluster(Vec<&'a str>),
}

enum Pool {
    Single(deadpool_redis::Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

/// A connection of either kind; both are multiplexed and cheap to clone.
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Redis through deadpool-redis, one server or a cluster. Each operation
/// touches one key (or keys sharing a hash tag), so on a cluster it goes to
/// one slot's master; transactions stay within that slot.
///
/// Operations share one multiplexed connection taken from the pool: a pool
/// checkout pings Redis (UNWATCH + PING) before every use, which doubled the
/// round trips of a verify. A failed operation drops the shared connection
/// and the next one takes a fresh connection from the pool (on a cluster, a
/// fresh slot map: that is how a failover is followed).
pub struct RedisCache {
    pool: Pool,
    shared: Mutex<Option<Conn>>,
    prefix: String,
    /// Users and sessions held in memory, invalidated through `channel`.
    near: Arc<Near>,
    /// Where the channel is followed. Classic pub/sub is broadcast to every
    /// node of a cluster, so any one node will do; the listener moves to the
    /// next when one fails.
    subscribe_to: Vec<redis::Client>,
    channel: String,
}

impl RedisCache {
    pub fn new(target: RedisTarget<'_>, prefix: &str, pool_size: usize) -> anyhow::Result<Self> {
        let pool_config = PoolConfig {
            max_size: pool_size,
            timeouts: Timeouts {
                wait: Some(OP_TIMEOUT),
                create: Some(OP_TIMEOUT),
                recycle: Some(OP_TIMEOUT),
            },
            ..PoolConfig::default()
        };
        let (pool, urls) = match target {
            RedisTarget::Single(url) => {
                let mut cfg = deadpool_redis::Config::from_url(url);
                cfg.pool = Some(pool_config);
                (
                    Pool::Single(cfg.create_pool(Some(Runtime::Tokio1))?),
                    vec![url],
                )
            }
            RedisTarget::Cluster(urls) => {
                let mut cfg = deadpool_redis::cluster::Config::from_urls(
                    urls.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
                );
                cfg.pool = Some(pool_config);
                (Pool::Cluster(cfg.create_pool(Some(Runtime::Tokio1))?), urls)
            }
        };
        Ok(RedisCache {
            pool,
            shared: Mutex::new(None),
            prefix: prefix.to_string(),
            near: Arc::new(Near::new()),
            subscribe_to: urls
                .into_iter()
                .map(redis::Client::open)
                .collect::<Result<_, _>>()?,
            channel: format!("{prefix}invalidate"),
        })
    }

    /// Runs a write of `key`; a near key's write is also announced to every
    /// replica, atomically with it.
    async fn write(&self, key: &str, write: redis::Cmd) -> Result<redis::Value, CacheError> {
        if !Near::applies(key) {
            return self
                .run(|mut c| async move { write.query_async(&mut c).await })
                .await;
        }
        let channel = self.channel.clone();
        let name = key.to_string();
        let result = self
            .run(|mut c| async move {
                let (value, _): (redis::Value, i64) = redis::pipe()
                    .atomic()
                    .add_command(write)
                    .cmd("PUBLISH")
                    .arg(channel)
                    .arg(name)
                    .query_async(&mut c)
                    .await?;
                Ok(value)
            })
            .await;
        self.near.invalidate(key);
        result
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    async fn connection(&self) -> Result<Conn, CacheError> {
        if let Some(c) = self.lock().as_ref() {
            return Ok(c.clone());
        }
        let conn = match &self.pool {
            Pool::Single(pool) => pool
                .get()
                .await
                .map(|c| Conn::Single(deadpool_redis::Connection::take(c)))
                .map_err(|e| CacheError(e.to_string()))?,
            Pool::Cluster(pool) => pool
                .get()
                .await
                .map(|c| Conn::Cluster(deadpool_redis::cluster::Connection::take(c)))
                .map_err(|e| CacheError(e.to_string()))?,
        };
        *self.lock() = Some(conn.clone());
        Ok(conn)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Conn>> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run<T, F, Fut>(&self, f: F) -> Result<T, CacheError>
    where
        F: FnOnce(Conn) -> Fut,
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
            // Messages may be missed too: hold nothing until resubscribed.
            self.near.down();
        }
        result
    }
}

/// The near cache follows the invalidation channel: it is used only while
/// subscribed, and emptied whenever the subscription (or any Redis
/// operation) fails.
impl Follower for Near {
    fn up(&self) {
        Near::up(self);
        metrics::gauge!("cache_near_live").set(1.0);
    }

    fn message(&self, payload: String) {
        self.invalidate(&payload);
    }

    fn live(&self) -> bool {
        self.is_live()
    }

    fn down(&self) {
        Near::down(self);
        metrics::gauge!("cache_near_live").set(0.0);
    }
}

/// Follows `channel` on one node at a time, moving to the next seed when a
/// node fails or the follower reports itself down.
async fn follow(
    clients: Vec<redis::Client>,
    channel: String,
    follower: Arc<dyn Follower>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    for client in clients.iter().cycle() {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            redis::RedisResult::Ok(pubsub)
        };
        match tokio::time::timeout(OP_TIMEOUT, subscribed).await {
            Ok(Ok(mut pubsub)) => {
                follower.up();
                let mut messages = pubsub.on_message();
                let mut check = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tokio::select! {
                        msg = messages.next() => match msg {
                            Some(msg) => {
                                if let Ok(payload) = msg.get_payload::<String>() {
                                    follower.message(payload);
                                }
                            }
                            None => break,
                        },
                        _ = check.tick() => if !follower.live() { break },
                        _ = shutdown.changed() => return,
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, %channel, "Redis channel unavailable"),
            Err(_) => tracing::warn!(%channel, "Redis channel: subscribe timed out"),
        }
        follower.down();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[async_trait::async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        Ok(self.get_many(&[key]).await?.pop().flatten())
    }

    fn stamp(&self) -> Option<u64> {
        // The epoch first: going down sets `live` before it moves the epoch.
        let epoch = self.near.epoch();
        self.near.is_live().then_some(epoch)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<String>>, CacheError> {
        let near = keys.iter().all(|k| Near::applies(k));
        if near && let Some(held) = self.near.get_all(keys) {
            metrics::counter!("cache_near_hits_total").increment(1);
            return Ok(held.into_iter().map(Some).collect());
        }
        let epoch = self.near.epoch();
        let names: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let values = self
            .run(|mut c| async move {
                redis::cmd("MGET")
                    .arg(&names)
                    .query_async::<Vec<Option<String>>>(&mut c)
                    .await
            })
            .await?;
        if near {
            for (key, value) in keys.iter().zip(&values) {
                if let Some(v) = value {
                    self.near.store(key, v, epoch);
                }
            }
        }
        Ok(values)
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CacheError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        self.write(key, cmd).await.map(|_| ())
    }

    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, CacheError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        // Nil when the key was already there.
        let set = self.write(key, cmd).await?;
        Ok(!matches!(set, redis::Value::Nil))
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
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(key));
        self.write(key, cmd).await.map(|_| ())
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
        match self.pool {
            Pool::Single(_) => "redis",
            Pool::Cluster(_) => "redis-cluster",
        }
    }

    fn start(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        Some(tokio::spawn(follow(
            self.subscribe_to.clone(),
            self.channel.clone(),
            self.near.clone(),
            shutdown,
        )))
    }

    async fn publish(&self, channel: &str, payload: &str) -> Result<bool, CacheError> {
        let channel = self.key(channel);
        let payload = payload.to_string();
        self.run(|mut c| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|_| true)
    }

    fn follow(
        &self,
        channel: &str,
        follower: Arc<dyn Follower>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        Some(tokio::spawn(follow(
            self.subscribe_to.clone(),
            self.key(channel),
            follower,
            shutdown,
        )))
    }
}
