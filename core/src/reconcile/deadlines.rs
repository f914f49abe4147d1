//! Deadlines of many state machines in time order. The loop asks for the node's next deadline
//! on every turn, and a tick wants the machines that are due: both without visiting every
//! machine (at 1,000 pods, each with a periodic check pending, and during a renewal wave with
//! 1,000 mounts out of sync, that was a walk of 1,000 machines per turn).

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// Each machine's deadline by its key, and the same in time order. Whoever steps a machine
/// sets its deadline again.
#[derive(Debug)]
pub struct Deadlines<K> {
    by_time: BTreeSet<(Instant, K)>,
    of: HashMap<K, Instant>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Self {
            by_time: BTreeSet::new(),
            of: HashMap::new(),
        }
    }
}

impl<K: Ord + Hash + Clone> Deadlines<K> {
    /// `key`'s machine now has deadline `at` (`None`: none, or the machine is gone).
    pub fn set<Q>(&mut self, key: &Q, at: Option<Instant>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.of.get(key).copied() == at {
            return;
        }
        let key = match self.of.remove_entry(key) {
            Some((key, old)) => {
                self.by_time.remove(&(old, key.clone()));
                key
            }
            None => key.to_owned(),
        };
        if let Some(at) = at {
            self.by_time.insert((at, key.clone()));
            self.of.insert(key, at);
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<Instant>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.of.get(key).copied()
    }

    pub fn first(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// The keys whose deadline is at or before `now`, earliest first.
    pub fn due(&self, now: Instant) -> Vec<K> {
        self.by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, key)| key.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn deadlines_are_kept_in_time_order_and_move_with_their_pod() {
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        let mut deadlines = Deadlines::<String>::default();
        deadlines.set("a", Some(at(30)));
        deadlines.set("b", Some(at(10)));
        deadlines.set("c", None);
        assert_eq!(deadlines.first(), Some(at(10)));
        assert_eq!(deadlines.due(at(10)), ["b"]);
        deadlines.set("b", Some(at(40)));
        assert_eq!(deadlines.first(), Some(at(30)));
        assert_eq!(deadlines.due(at(40)), ["a", "b"]);
        deadlines.set("a", None);
        deadlines.set("b", None);
        assert_eq!(deadlines.first(), None);
        assert!(deadlines.due(at(100)).is_empty());
    }
}
