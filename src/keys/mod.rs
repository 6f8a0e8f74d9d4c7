//! Callers: the API keys services present. Keys configured in the
//! environment (`API_KEY`, `API_KEYS`) hold every scope and no limits;
//! managed keys live in the database as digests, with scopes, limits, expiry
//! and revocation. The check on the hot path answers from process memory:
//! a key's record is re-read at most every half second, so a revocation on
//! any replica takes effect everywhere within a second.

mod domain;
mod limits;
mod manage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use self::domain::{ApiKey, Caller, CreatedKey, KeyChange, NewKey, Quota, Scope, Scopes};
use crate::cache::SharedCache;
use crate::entity::api_keys;

/// Managed keys start with this, so a leaked one is recognisable (secret
/// scanners) and anything else is refused without a lookup.
pub const KEY_PREFIX: &str = "psk_";
/// `psk_` and 43 base64url characters: 256 random bits.
const KEY_LEN: usize = KEY_PREFIX.len() + 43;
/// A record younger than this is used as it is.
const FRESH: Duration = Duration::from_millis(500);
/// A record older than this is never used: the bound on revocation delay.
const MAX_AGE: Duration = Duration::from_secs(1);
/// `last_used_at` is written at most this often per key and replica.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Bound on remembered digests (unknown keys included); cleared when full.
const MAX_CACHED: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("Invalid API key")]
    Unknown,
    #[error("API key revoked")]
    Revoked,
    #[error("API key expired")]
    Expired,
    #[error("API key lacks the '{0}' scope")]
    MissingScope(Scope),
    #[error("Rate limit exceeded")]
    RateLimited(Quota),
    #[error("Daily ingest quota exceeded")]
    QuotaExceeded(Quota),
    #[error("API key not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Database(#[from] DbErr),
}

/// A managed key's record as the hot path needs it.
#[derive(Debug)]
struct Record {
    caller: Caller,
    expires_at: Option<chrono::NaiveDateTime>,
    revoked: bool,
}

struct Cached {
    record: Option<Arc<Record>>,
    fetched: Instant,
    refreshing: bool,
}

pub struct Keys {
    db: DatabaseConnection,
    cache: SharedCache,
    configured: Vec<[u8; 32]>,
    required: bool,
    generated: Option<String>,
    records: Mutex<HashMap<[u8; 32], Cached>>,
    touched: Mutex<HashMap<i32, Instant>>,
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl Keys {
    /// `configured` are the environment's keys; `generated` is one made for
    /// this run (development without any), which counts as configured.
    pub fn new<'a>(
        db: DatabaseConnection,
        cache: SharedCache,
        configured: impl IntoIterator<Item = &'a str>,
        required: bool,
        generated: Option<String>,
    ) -> Self {
        let mut configured: Vec<[u8; 32]> = configured
            .into_iter()
            .map(|k| digest(k.as_bytes()))
            .collect();
        configured.extend(generated.as_deref().map(|k| digest(k.as_bytes())));
        Keys {
            db,
            cache,
            configured,
            required,
            generated,
            records: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// Whether requests without a key are refused.
    pub fn required(&self) -> bool {
        self.required
    }

    pub fn generated(&self) -> Option<&str> {
        self.generated.as_deref()
    }

    /// The caller a presented key stands for.
    pub async fn authenticate(&self, presented: &[u8]) -> Result<Caller, KeyError> {
        let digest = digest(presented);
        // Compare against every configured key without stopping early.
        let configured: bool = self
            .configured
            .iter()
            .fold(subtle::Choice::from(0), |acc, k| acc | k.ct_eq(&digest))
            .into();
        if configured {
            return Ok(Caller::configured());
        }
        if presented.len() != KEY_LEN || !presented.starts_with(KEY_PREFIX.as_bytes()) {
            return Err(self.refuse("unknown", "unknown", KeyError::Unknown));
        }
        let record = self.record(digest).await?;
        let Some(record) = record else {
            return Err(self.refuse("unknown", "unknown", KeyError::Unknown));
        };
        let name = &record.caller.name;
        if record.revoked {
            return Err(self.refuse(name, "revoked", KeyError::Revoked));
        }
        if record.expires_at.is_some_and(|at| at <= crate::time::now()) {
            return Err(self.refuse(name, "expired", KeyError::Expired));
        }
        if let Some(id) = record.caller.key_id {
            self.touch(id);
        }
        metrics::counter!("api_key_requests_total", "key" => name.to_string()).increment(1);
        Ok(record.caller.clone())
    }

    /// Refuses a caller without `scope`.
    pub fn require(&self, caller: &Caller, scope: Scope) -> Result<(), KeyError> {
        if caller.scopes.contains(scope) {
            Ok(())
        } else {
            Err(self.refuse(&caller.name, "scope", KeyError::MissingScope(scope)))
        }
    }

    fn refuse(&self, name: &str, reason: &'static str, err: KeyError) -> KeyError {
        metrics::counter!("api_key_rejections_total", "key" => name.to_string(), "reason" => reason)
            .increment(1);
        err
    }

    /// The record of a digest, from memory when fresh enough.
    async fn record(&self, digest: [u8; 32]) -> Result<Option<Arc<Record>>, KeyError> {
        {
            let mut records = self.records.lock().expect("key cache lock");
            if let Some(c) = records.get_mut(&digest) {
                let age = c.fetched.elapsed();
                if age < FRESH || (age < MAX_AGE && c.refreshing) {
                    return Ok(c.record.clone());
                }
                // One request refreshes; the others use the record meanwhile.
                c.refreshing = true;
            }
        }
        let fetched = Instant::now();
        let row = api_keys::Entity::find()
            .filter(api_keys::Column::Digest.eq(hex::encode(digest)))
            .one(&self.db)
            .await;
        let mut records = self.records.lock().expect("key cache lock");
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                if let Some(c) = records.get_mut(&digest) {
                    c.refreshing = false;
                }
                return Err(e.into());
            }
        };
        let record = row.map(|r| Arc::new(Record::from(r)));
        if records.len() >= MAX_CACHED {
            records.clear();
        }
        records.insert(
            digest,
            Cached {
                record: record.clone(),
                fetched,
                refreshing: false,
            },
        );
        Ok(record)
    }

    /// Forgets what this replica remembers of a key (after a change here).
    fn forget(&self, digest_hex: &str) {
        if let Ok(bytes) = hex::decode(digest_hex)
            && let Ok(d) = <[u8; 32]>::try_from(bytes.as_slice())
        {
            self.records.lock().expect("key cache lock").remove(&d);
        }
    }

    /// Records use at most once a minute per key and replica, off the request.
    fn touch(&self, id: i32) {
        {
            let mut touched = self.touched.lock().expect("touch lock");
            let now = Instant::now();
            match touched.get(&id) {
                Some(at) if now.duration_since(*at) < TOUCH_EVERY => return,
                _ => {
                    touched.insert(id, now);
                }
            }
        }
        let db = self.db.clone();
        tokio::spawn(async move {
            if let Err(e) = manage::touch(&db, id).await {
                tracing::warn!(error = %e, key_id = id, "recording API key use failed");
            }
        });
    }
}

impl From<api_keys::Model> for Record {
    fn from(r: api_keys::Model) -> Self {
        let k = ApiKey::from(r);
        Record {
            caller: Caller {
                key_id: Some(k.id),
                name: k.name.into(),
                scopes: k.scopes,
                rate_per_second: k.rate_per_second,
                daily_ingest_quota: k.daily_ingest_quota,
            },
            expires_at: k.expires_at,
            revoked: k.revoked_at.is_some(),
        }
    }
}

#[cfg(test)]
mod tests;
