//! The webhook deliveries received lately, to answer a retry or a replay without acting on
//! it again: keys (a delivery id, or the digest of a signed payload) are remembered for
//! `server.webhook_dedupe_window`, at most `server.webhook_dedupe_entries` of them (the
//! oldest forgotten first), as 32-byte digests, so memory stays bounded whatever the keys.
//! This module only remembers; the handlers decide which keys a delivery has.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A remembered key: the digest of its kind and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Key([u8; 32]);

impl Key {
    /// The key of `value` in the namespace `kind` (e.g. `github-delivery`).
    pub(super) fn new(kind: &str, value: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(kind.as_bytes());
        h.update([0]);
        h.update(value);
        Self(h.finalize().into())
    }
}

#[derive(Debug, Default)]
struct Seen {
    at: HashMap<Key, Instant>,
    order: VecDeque<(Key, Instant)>,
}

impl Seen {
    fn forget_old(&mut self, now: Instant, window: Duration, cap: usize) {
        while let Some((key, at)) = self.order.front().copied() {
            let expired = now.saturating_duration_since(at) >= window;
            if !expired && self.at.len() < cap {
                break;
            }
            self.order.pop_front();
            if self.at.get(&key) == Some(&at) {
                self.at.remove(&key);
            }
        }
    }
}

/// Recently received deliveries.
#[derive(Debug)]
pub(super) struct Deliveries {
    window: Duration,
    cap: usize,
    seen: Mutex<Seen>,
}

impl Deliveries {
    /// Remembers keys for `window`, at most `cap` of them.
    pub(super) fn new(window: Duration, cap: usize) -> Self {
        Self {
            window,
            cap: cap.max(1),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Whether any of `keys` was recorded within the window.
    pub(super) fn seen(&self, keys: &[Key]) -> bool {
        self.seen_at(keys, Instant::now())
    }

    fn seen_at(&self, keys: &[Key], now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.forget_old(now, self.window, usize::MAX);
        keys.iter().any(|k| seen.at.contains_key(k))
    }

    /// Records `keys` unless one of them was recorded within the window; returns whether
    /// one was (a duplicate, then nothing is recorded).
    pub(super) fn record(&self, keys: &[Key]) -> bool {
        self.record_at(keys, Instant::now())
    }

    fn record_at(&self, keys: &[Key], now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.forget_old(now, self.window, usize::MAX);
        if keys.iter().any(|k| seen.at.contains_key(k)) {
            return true;
        }
        for k in keys {
            // Make room first: the map never holds more than `cap` keys.
            let cap = self.cap;
            seen.forget_old(now, self.window, cap);
            seen.at.insert(*k, now);
            seen.order.push_back((*k, now));
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_a_duplicate_within_the_window_only() {
        let d = Deliveries::new(Duration::from_mins(10), 100);
        let t0 = Instant::now();
        let a = Key::new("github-delivery", b"a");
        assert!(!d.record_at(&[a], t0));
        assert!(d.record_at(&[a], t0 + Duration::from_mins(9)));
        assert!(d.seen_at(&[a], t0 + Duration::from_mins(9)));
        assert!(!d.seen_at(&[a], t0 + Duration::from_mins(10)));
        assert!(!d.record_at(&[a], t0 + Duration::from_mins(10)));
        // Kinds are separate namespaces.
        assert!(!d.seen_at(
            &[Key::new("gitlab-event", b"a")],
            t0 + Duration::from_mins(11)
        ));
    }

    #[test]
    fn any_matching_key_makes_a_duplicate_and_records_nothing() {
        let d = Deliveries::new(Duration::from_mins(10), 100);
        let t0 = Instant::now();
        let (id1, id2, body) = (
            Key::new("id", b"1"),
            Key::new("id", b"2"),
            Key::new("payload", b"{}"),
        );
        assert!(!d.record_at(&[id1, body], t0));
        // The same payload under a new id: a replay.
        assert!(d.record_at(&[id2, body], t0));
        assert!(!d.seen_at(&[id2], t0));
    }

    #[test]
    fn memory_is_capped_oldest_first() {
        let d = Deliveries::new(Duration::from_hours(1), 3);
        let t0 = Instant::now();
        let keys: Vec<Key> = (0..5u8).map(|i| Key::new("id", &[i])).collect();
        for (i, k) in keys.iter().enumerate() {
            assert!(!d.record_at(&[*k], t0 + Duration::from_secs(i as u64)));
        }
        let seen = d.seen.lock().expect("lock");
        assert_eq!(seen.at.len(), 3);
        assert_eq!(seen.order.len(), 3);
        drop(seen);
        let later = t0 + Duration::from_secs(10);
        assert!(!d.seen_at(&keys[..2], later));
        assert!(d.seen_at(&keys[2..3], later));
        assert!(d.seen_at(&keys[4..], later));
    }
}
