use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::near::Near;
use super::{Cache, CacheError};

struct Entry {
    value: String,
    expires: Instant,
}

/// Single-process stand-in for Redis; expired entries are dropped lazily and
/// swept whenever the map has doubled since the last sweep.
pub struct MemoryCache {
    inner: Mutex<Inner>,
    /// Writes of user and session records so far: the cache's stamp.
    writes: AtomicU64,
}

struct Inner {
    map: HashMap<String, Entry>,
    sweep_at: usize,
}

impl MemoryCache {
    pub fn new() -> Self {
        MemoryCache {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                sweep_at: 1024,
            }),
            writes: AtomicU64::new(0),
        }
    }

    /// Runs a write of `key`, moving the stamp under the same lock once a
    /// user or session record changed: a reader that took the stamp before
    /// cannot pair it with the new value.
    fn write<T>(&self, key: &str, f: impl FnOnce(&mut Inner, Instant) -> T) -> T {
        self.with(|inner, now| {
            let out = f(inner, now);
            if Near::applies(key) {
                self.writes.fetch_add(1, Ordering::AcqRel);
            }
            out
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner, Instant) -> T) -> T {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if guard.map.len() >= guard.sweep_at {
            guard.map.retain(|_, e| e.expires > now);
            guard.sweep_at = (guard.map.len() * 2).max(1024);
        }
        f(&mut guard, now)
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        Ok(self.with(|inner, now| match inner.map.get(key) {
            Some(e) if e.expires > now => Some(e.value.clone()),
            _ => None,
        }))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<String>>, CacheError> {
        Ok(self.with(|inner, now| {
            keys.iter()
                .map(|k| match inner.map.get(*k) {
                    Some(e) if e.expires > now => Some(e.value.clone()),
                    _ => None,
                })
                .collect()
        }))
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CacheError> {
        self.write(key, |inner, now| {
            inner.map.insert(
                key.to_string(),
                Entry {
                    value: value.to_string(),
                    expires: now + ttl,
                },
            )
        });
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, CacheError> {
        Ok(self.write(key, |inner, now| match inner.map.get(key) {
            Some(e) if e.expires > now => false,
            _ => {
                inner.map.insert(
                    key.to_string(),
                    Entry {
                        value: value.to_string(),
                        expires: now + ttl,
                    },
                );
                true
            }
        }))
    }

    async fn incr_by(
        &self,
        key: &str,
        delta: i64,
        ttl: Duration,
    ) -> Result<(i64, u64), CacheError> {
        Ok(self.write(key, |inner, now| {
            let entry = inner
                .map
                .entry(key.to_string())
                .and_modify(|e| {
                    if e.expires <= now {
                        e.value = "0".into();
                        e.expires = now + ttl;
                    }
                })
                .or_insert_with(|| Entry {
                    value: "0".into(),
                    expires: now + ttl,
                });
            let count = entry.value.parse::<i64>().unwrap_or(0) + delta;
            entry.value = count.to_string();
            let left = entry.expires.saturating_duration_since(now);
            (count, left.as_secs() + u64::from(left.subsec_nanos() > 0))
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.write(key, |inner, _| inner.map.remove(key));
        Ok(())
    }

    async fn ping(&self) -> Option<Result<Duration, CacheError>> {
        None
    }

    fn backend(&self) -> &'static str {
        "in-process"
    }

    fn stamp(&self) -> Option<u64> {
        Some(self.writes.load(Ordering::Acquire))
    }
}
