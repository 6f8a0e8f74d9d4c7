//! A memo of values derived from others (verified tokens, parsed users,
//! rendered answers): a bounded map emptied when full, since every entry
//! can be derived again, behind a lock that outlives a panicking holder.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

// foldhash (seeded per process) rather than SipHash: the token memo hashes
// a whole JWT on every verify, and SipHash was measurable there.
use foldhash::HashMap;

pub struct Memo<K, V> {
    entries: Mutex<HashMap<K, V>>,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    pub fn new(capacity: usize) -> Self {
        Memo {
            entries: Mutex::new(HashMap::default()),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, V>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kept value of `key` if `fresh` accepts it; a rejected one stays.
    pub fn get<Q>(&self, key: &Q, fresh: impl FnOnce(&V) -> bool) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.lock().get(key).filter(|v| fresh(v)).cloned()
    }

    /// Keeps `value` under `key`, emptying the memo first if it is full.
    pub fn keep(&self, key: K, value: V) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, value);
    }

    pub fn forget<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.lock().remove(key);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_is_fresh_and_empties_when_full() {
        let memo: Memo<Box<str>, u32> = Memo::new(2);
        assert!(memo.is_empty());
        memo.keep("a".into(), 1);
        assert_eq!(memo.get("a", |_| true), Some(1));
        assert_eq!(memo.get("a", |v| *v > 1), None, "rejected");
        assert_eq!(memo.len(), 1, "a rejected entry stays");
        assert_eq!(memo.get("b", |_| true), None);
        memo.keep("b".into(), 2);
        assert_eq!(memo.len(), 2);
        memo.keep("c".into(), 3);
        assert_eq!(memo.len(), 1, "emptied when full");
        assert_eq!(memo.get("c", |_| true), Some(3));
        memo.forget("c");
        assert!(memo.is_empty());
    }
}
