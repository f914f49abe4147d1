//! Objects of a few kinds, by key, as a list/watch of each kind keeps them: the store behind
//! the route index and the cert-manager index.

use std::collections::BTreeMap;

/// An object that knows its key and, through the key, its kind.
pub trait Keyed {
    type Key: Ord + Clone;
    type Kind: PartialEq + Copy;
    fn key(&self) -> Self::Key;
    fn kind_of(key: &Self::Key) -> Self::Kind;
}

#[derive(Debug, Clone)]
pub struct Objects<T: Keyed> {
    by_key: BTreeMap<T::Key, T>,
}

impl<T: Keyed> Default for Objects<T> {
    fn default() -> Self {
        Self {
            by_key: BTreeMap::new(),
        }
    }
}

impl<T: Keyed + PartialEq> Objects<T> {
    /// Stores (or replaces) an object; returns whether anything changed.
    pub fn apply(&mut self, object: T) -> bool {
        let key = object.key();
        if self.by_key.get(&key) == Some(&object) {
            return false;
        }
        self.by_key.insert(key, object);
        true
    }

    pub fn delete(&mut self, key: &T::Key) -> bool {
        self.by_key.remove(key).is_some()
    }

    /// A (re)list of one kind: objects of the kind not in it are gone.
    pub fn replace_kind(&mut self, kind: T::Kind, objects: Vec<T>) -> bool {
        let before = self.by_key.len();
        let mut changed = false;
        self.by_key.retain(|key, object| {
            let keep = T::kind_of(key) != kind || objects.contains(object);
            changed |= !keep;
            keep
        });
        for object in objects {
            changed |= self.apply(object);
        }
        changed || before != self.by_key.len()
    }

    /// Forgets every object of `kinds` (their watches stopped).
    pub fn forget_kinds(&mut self, kinds: &[T::Kind]) {
        self.by_key
            .retain(|key, _| !kinds.contains(&T::kind_of(key)));
    }

    pub fn get(&self, key: &T::Key) -> Option<&T> {
        self.by_key.get(key)
    }

    /// Objects from `start` on, in key order.
    pub fn from_key(&self, start: T::Key) -> impl Iterator<Item = (&T::Key, &T)> {
        self.by_key.range(start..)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}
