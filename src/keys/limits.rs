//! Per-key limits, counted in the shared cache so replicas share them:
//! requests per second (a one-second window) and a daily ingest quota (rows
//! per UTC day). When the cache is unreachable the limits are not enforced:
//! limits protect capacity, and refusing every caller would defeat that.

use std::time::Duration;

use super::{Caller, KeyError, Keys, Quota};

fn cache_down(err: &crate::cache::CacheError) {
    metrics::counter!("api_key_limit_unchecked_total").increment(1);
    tracing::warn!(error = %err, "API key limit not checked: cache unavailable");
}

impl Keys {
    /// Counts one request against the caller's rate; `None` when unlimited.
    pub async fn admit(&self, caller: &Caller) -> Result<Option<Quota>, KeyError> {
        let (Some(limit), Some(id)) = (caller.rate_per_second, caller.key_id) else {
            return Ok(None);
        };
        let now = crate::time::now_utc();
        let second = now.timestamp();
        let key = format!("ratelimit:{{key-{id}}}:{second}");
        let count = match self.cache.incr(&key, Duration::from_secs(2)).await {
            Ok((count, _)) => count,
            Err(e) => {
                cache_down(&e);
                return Ok(None);
            }
        };
        let limit = i64::from(limit);
        let quota = Quota {
            limit,
            remaining: (limit - count).max(0),
            reset: 1,
        };
        if count > limit {
            return Err(self.refuse(&caller.name, "rate", KeyError::RateLimited(quota)));
        }
        Ok(Some(quota))
    }

    /// Takes `rows` from the caller's daily ingest quota, all or none;
    /// `None` when it has no quota.
    pub async fn charge_ingest(
        &self,
        caller: &Caller,
        rows: usize,
    ) -> Result<Option<Quota>, KeyError> {
        let (Some(limit), Some(key)) = (caller.daily_ingest_quota, quota_key(caller)) else {
            return Ok(None);
        };
        let rows = rows as i64;
        let reset = seconds_to_midnight();
        let ttl = Duration::from_secs(reset + 3600);
        let count = match self.cache.incr_by(&key, rows, ttl).await {
            Ok((count, _)) => count,
            Err(e) => {
                cache_down(&e);
                return Ok(None);
            }
        };
        if count > limit {
            let _ = self.cache.incr_by(&key, -rows, ttl).await;
            let quota = Quota {
                limit,
                remaining: (limit - (count - rows)).max(0),
                reset,
            };
            return Err(self.refuse(&caller.name, "quota", KeyError::QuotaExceeded(quota)));
        }
        Ok(Some(Quota {
            limit,
            remaining: limit - count,
            reset,
        }))
    }

    /// Gives back rows charged for an ingest that was not stored.
    pub async fn refund_ingest(&self, caller: &Caller, rows: usize) {
        if caller.daily_ingest_quota.is_none() {
            return;
        }
        if let Some(key) = quota_key(caller) {
            let ttl = Duration::from_secs(seconds_to_midnight() + 3600);
            if let Err(e) = self.cache.incr_by(&key, -(rows as i64), ttl).await {
                cache_down(&e);
            }
        }
    }
}

fn quota_key(caller: &Caller) -> Option<String> {
    let id = caller.key_id?;
    let day = crate::time::now_utc().format("%Y%m%d");
    Some(format!("quota:{{key-{id}}}:{day}"))
}

fn seconds_to_midnight() -> u64 {
    let now = crate::time::now_utc();
    let midnight = (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    (midnight - now).num_seconds().max(1) as u64
}
