//! A near cache in process memory for the keys read on every request (the
//! user and session records verify needs), kept in front of Redis.
//!
//! Every replica subscribes to one invalidation channel; a write of a near
//! key publishes the key in the same transaction, and each replica drops its
//! copy on the message. While the subscription is down the near cache is
//! bypassed and emptied, so a replica that may have missed a message reads
//! Redis as it did before; entries also live at most `TTL`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use foldhash::HashMap;

/// Keys with these prefixes are held near.
const PREFIXES: [&str; 2] = ["user:", "sess:"];
/// The longest an entry is used, whatever the channel says. Verify reuses
/// what it derived from entries for up to 1 s more (`RECENT_TTL`), so the
/// two together stay within 5 s.
const TTL: Duration = Duration::from_secs(4);
/// Entries kept at most; the map is emptied when full.
const MAX_ENTRIES: usize = 100_000;

pub(super) struct Near {
    entries: Mutex<HashMap<String, (String, Instant)>>,
    /// Bumped by every invalidation: a value read from Redis is kept only if
    /// no invalidation arrived while it was being read.
    epoch: AtomicU64,
    live: AtomicBool,
}

impl Near {
    pub(super) fn new() -> Self {
        Near {
            entries: Mutex::new(HashMap::default()),
            epoch: AtomicU64::new(0),
            live: AtomicBool::new(false),
        }
    }

    pub(super) fn applies(key: &str) -> bool {
        PREFIXES.iter().any(|p| key.starts_with(p))
    }

    pub(super) fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The held values of all `keys`, under one lock; `None` unless every
    /// one is held and fresh.
    pub(super) fn get_all(&self, keys: &[&str]) -> Option<Vec<String>> {
        if !self.is_live() {
            return None;
        }
        let entries = self.lock();
        keys.iter()
            .map(|k| {
                let (value, at) = entries.get(*k)?;
                (at.elapsed() < TTL).then(|| value.clone())
            })
            .collect()
    }

    /// Taken before reading Redis, passed back to `store`.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Keeps a value read from Redis, unless an invalidation came meanwhile.
    pub(super) fn store(&self, key: &str, value: &str, read_at_epoch: u64) {
        if !self.is_live() {
            return;
        }
        let mut entries = self.lock();
        // Checked under the lock: invalidations bump the epoch under it too.
        if self.epoch() != read_at_epoch {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key.to_string(), (value.to_string(), Instant::now()));
    }

    pub(super) fn invalidate(&self, key: &str) {
        let mut entries = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.remove(key);
    }

    /// The channel is subscribed: entries may be kept from now on.
    pub(super) fn up(&self) {
        // A new epoch: nothing derived before or while down matches it.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.live.store(true, Ordering::Release);
    }

    /// The channel is down: forget everything, keep nothing until it is back.
    pub(super) fn down(&self) {
        self.live.store(false, Ordering::Release);
        let mut entries = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_only_while_live_and_drops_on_invalidation() {
        let near = Near::new();
        let e = near.epoch();
        near.store("user:{1}", "a", e);
        assert_eq!(
            near.get_all(&["user:{1}"]),
            None,
            "nothing is kept before the channel is up"
        );
        near.up();
        near.store("user:{1}", "a", near.epoch());
        assert_eq!(near.get_all(&["user:{1}"]), Some(vec!["a".to_string()]));
        near.store("sess:{1}:s", "1", near.epoch());
        assert_eq!(
            near.get_all(&["sess:{1}:s", "user:{1}"]),
            Some(vec!["1".to_string(), "a".to_string()])
        );
        assert_eq!(near.get_all(&["sess:{1}:t", "user:{1}"]), None);
        near.invalidate("user:{1}");
        assert_eq!(near.get_all(&["user:{1}"]), None);
        // A read that raced an invalidation is not kept.
        let e = near.epoch();
        near.invalidate("sess:{1}:x");
        near.store("user:{1}", "stale", e);
        assert_eq!(near.get_all(&["user:{1}"]), None);
        near.store("user:{1}", "b", near.epoch());
        near.down();
        assert_eq!(near.get_all(&["user:{1}"]), None);
        let down_at = near.epoch();
        near.up();
        assert_ne!(near.epoch(), down_at, "coming back up is a new epoch");
        assert_eq!(near.get_all(&["user:{1}"]), None, "emptied while down");
        assert!(Near::applies("sess:{7}:abc") && !Near::applies("login-fail:ip:x"));
    }
}
