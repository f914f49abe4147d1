//! The reload machines' deadlines in time order: the loop asks for the node's next deadline on
//! every turn, and a tick wants the machines that are due, without visiting every pod (at
//! 1,000 pods, each with a periodic check pending, that was a walk of 1,000 machines per turn).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

#[derive(Debug, Default)]
pub(super) struct ReloadDeadlines {
    by_time: BTreeSet<(Instant, String)>,
    of_pod: HashMap<String, Instant>,
}

impl ReloadDeadlines {
    /// The pod's machine now has deadline `at` (`None`: none, or the pod is gone).
    pub(super) fn set(&mut self, uid: &str, at: Option<Instant>) {
        if self.of_pod.get(uid).copied() == at {
            return;
        }
        let key = match self.of_pod.remove_entry(uid) {
            Some((key, old)) => {
                self.by_time.remove(&(old, key.clone()));
                key
            }
            None => uid.to_owned(),
        };
        if let Some(at) = at {
            self.by_time.insert((at, key.clone()));
            self.of_pod.insert(key, at);
        }
    }

    pub(super) fn first(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// The pods whose deadline is at or before `now`, earliest first.
    pub(super) fn due(&self, now: Instant) -> Vec<String> {
        self.by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, uid)| uid.clone())
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
        let mut deadlines = ReloadDeadlines::default();
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
