//! Which warnings are news: a problem that stays the same from one cycle to the next is
//! logged at `warn` once, when it appears (and again if it goes away and comes back), then at
//! `debug` each cycle, so that a daemon polling every minute does not bury a new problem
//! under a hundred copies of an old one. Memory only; decides nothing but the log level.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// The problems seen last cycle, per kind of message.
#[derive(Debug, Default)]
pub struct Repeats {
    last: Mutex<BTreeMap<&'static str, BTreeSet<String>>>,
}

impl Repeats {
    /// Records this cycle's `current` messages of `kind` and returns those that are new
    /// (absent last cycle): log those at `warn`, the others at `debug`.
    pub fn news(&self, kind: &'static str, current: BTreeSet<String>) -> BTreeSet<String> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let news = match last.get(kind) {
            Some(previous) => current.difference(previous).cloned().collect(),
            None => current.clone(),
        };
        last.insert(kind, current);
        news
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn a_problem_is_news_when_it_appears_and_when_it_comes_back() {
        let r = Repeats::default();
        assert_eq!(r.news("problem", set(&["a"])), set(&["a"]));
        assert_eq!(r.news("problem", set(&["a", "b"])), set(&["b"]));
        assert_eq!(r.news("problem", set(&["a", "b"])), set(&[]));
        // Another kind is remembered on its own.
        assert_eq!(r.news("invalid", set(&["a"])), set(&["a"]));
        // Gone, then back: news again.
        assert_eq!(r.news("problem", set(&["b"])), set(&[]));
        assert_eq!(r.news("problem", set(&["a", "b"])), set(&["a"]));
    }
}
