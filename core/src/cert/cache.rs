//! Parse verdicts of PEM files, remembered by the SHA-256 of the file's whole content.
//!
//! Why: [`parse_pem`](super::parse_pem) (x509 parse of every certificate, key load and ring
//! public-key derivation) is the largest cost of reading a volume on the reload hot path, and
//! the same bytes are usually parsed twice: once when the Secret arrives from the API, and again
//! when kubelet swaps `..data` to the new generation moments later. `parse_pem` is a pure
//! function of the bytes, so its result can be reused whenever the bytes are the same.
//!
//! Rules, and why:
//!
//! - **Keyed by the digest of the whole content, nothing else.** Not by file name, Secret key or
//!   path: a verdict can only be reused for bytes whose SHA-256 equals those it was computed
//!   from, so a swapped key or a renewed certificate is always a miss and is parsed afresh. A
//!   stale verdict (a key that no longer matches its certificate reported as matching) cannot
//!   come out of here short of a SHA-256 collision.
//! - **Only successes.** A failed parse is rare and its error is not worth keeping; it is parsed
//!   again next time.
//! - **No secret bytes.** Entries are a digest and a [`PemContents`], which holds certificate
//!   summaries and public-key fingerprints only (see the module docs of [`super`]).
//! - **Bounded by what it holds.** The capacity counts summaries (each certificate, each key;
//!   an entry weighs at least 1), not entries, so a CA bundle of 140 certificates weighs 140 and
//!   memory stays bounded whatever the files look like. Inserting past the capacity evicts the
//!   least recently used entries. The cache serves the window between the API update and
//!   kubelet's swap, not every Secret of the node forever, so a small bound is enough and keeps
//!   the agent's memory flat at 1,000 Secrets. A miss is only a parse, never a wrong answer.
//!
//! [`SharedPemCache`] is the handle the agent passes to its Secret watch tasks (worker threads)
//! and to the executor (loop thread). It never holds its lock while parsing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sha2::{Digest, Sha256};

use super::PemContents;

/// The SHA-256 of a file's (or a Secret value's) whole content: the only key of [`PemCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentDigest([u8; 32]);

impl ContentDigest {
    /// The digest of `bytes`, all of them.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Lowercase hex, as [`FileSnapshot::sha256`](crate::volume::FileSnapshot) and
    /// [`SecretView::keys`](crate::secret::SecretView) show digests.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// How often [`PemCache::get`] found a verdict, and how often it did not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PemCacheStats {
    pub hits: u64,
    pub misses: u64,
}

/// A bounded map from [`ContentDigest`] to the [`PemContents`] parsed from those bytes,
/// evicting the least recently used entries at capacity.
#[derive(Debug)]
pub struct PemCache {
    /// Most summaries kept, see [`weight`].
    capacity: usize,
    /// Sum of the entries' weights: never above `capacity`.
    weight: usize,
    entries: HashMap<ContentDigest, Entry>,
    /// Incremented on every use; an entry's `last_used` orders evictions.
    clock: u64,
    stats: PemCacheStats,
}

#[derive(Debug)]
struct Entry {
    contents: PemContents,
    last_used: u64,
}

/// What an entry costs against the capacity: its certificate and key summaries (about half a
/// KiB each), at least 1 so that an empty verdict (a file of `EC PARAMETERS` only) counts too.
fn weight(contents: &PemContents) -> usize {
    (contents.certificates.len() + usize::from(contents.private_key.is_some())).max(1)
}

impl Default for PemCache {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl PemCache {
    /// 512 summaries: a typical Secret's files (leaf and issuer, key, CA) weigh about 4, so
    /// this covers a renewal wave of ~128 Secrets, for roughly 256 KiB when certificates carry
    /// a few names each, whatever the number of Secrets on the node.
    pub const DEFAULT_CAPACITY: usize = 512;

    /// An empty cache holding at most `capacity` summaries (0 keeps nothing).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            weight: 0,
            entries: HashMap::new(),
            clock: 0,
            stats: PemCacheStats::default(),
        }
    }

    /// The verdict for bytes with this digest, if one is kept; marks it recently used.
    pub fn get(&mut self, digest: &ContentDigest) -> Option<PemContents> {
        self.clock += 1;
        match self.entries.get_mut(digest) {
            Some(entry) => {
                entry.last_used = self.clock;
                self.stats.hits += 1;
                Some(entry.contents.clone())
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Remembers that the bytes with this digest parse to `contents`; at capacity, the least
    /// recently used other entries make room. Contents heavier than the whole capacity are not
    /// kept (they would empty the cache for one file).
    ///
    /// The caller must pass the digest of exactly the bytes `contents` was parsed from.
    pub fn insert(&mut self, digest: ContentDigest, contents: PemContents) {
        let added = weight(&contents);
        if added > self.capacity {
            return;
        }
        self.clock += 1;
        if let Some(old) = self.entries.remove(&digest) {
            self.weight -= weight(&old.contents);
        }
        while self.weight + added > self.capacity {
            // A linear scan: at a few hundred entries it costs about a microsecond, against the
            // ~100 µs parse that led here, and needs no second index to keep in step.
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(digest, _)| *digest);
            let Some(evicted) = oldest.and_then(|oldest| self.entries.remove(&oldest)) else {
                break;
            };
            self.weight -= weight(&evicted.contents);
        }
        self.weight += added;
        self.entries.insert(
            digest,
            Entry {
                contents,
                last_used: self.clock,
            },
        );
    }

    /// Number of verdicts kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Summaries kept, the quantity [`Self::new`]'s capacity bounds.
    pub fn weight(&self) -> usize {
        self.weight
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Hits and misses of [`Self::get`] since the cache was made.
    pub fn stats(&self) -> PemCacheStats {
        self.stats
    }
}

/// One [`PemCache`] shared between threads: cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct SharedPemCache(Arc<Mutex<PemCache>>);

impl SharedPemCache {
    pub fn new(cache: PemCache) -> Self {
        Self(Arc::new(Mutex::new(cache)))
    }

    /// Locks the cache. A thread that panicked while holding the lock cannot have left a wrong
    /// verdict behind (an entry is inserted whole or not at all), so a poisoned lock is used as
    /// it is rather than taking the agent down.
    pub fn lock(&self) -> MutexGuard<'_, PemCache> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The verdict for `bytes`: from the cache when `digest` is known, else from `parse`, whose
    /// success is then kept. The lock is not held while `parse` runs, so a watch task parsing a
    /// Secret never makes the loop wait, nor the other way round.
    pub fn get_or_parse<E>(
        &self,
        digest: ContentDigest,
        parse: impl FnOnce() -> Result<PemContents, E>,
    ) -> Result<PemContents, E> {
        if let Some(contents) = self.lock().get(&digest) {
            return Ok(contents);
        }
        let contents = parse()?;
        self.lock().insert(digest, contents.clone());
        Ok(contents)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cert::KeyAlgorithm;
    use crate::cert::KeySummary;

    /// Distinct plain contents: a key-only file whose public-key digest names `n`.
    fn contents(n: u8) -> PemContents {
        PemContents {
            certificates: Vec::new(),
            private_key: Some(KeySummary {
                algorithm: KeyAlgorithm::EcdsaP256,
                public_key_sha256: format!("{n:064x}"),
            }),
        }
    }

    fn summary() -> crate::cert::CertificateSummary {
        crate::cert::CertificateSummary {
            subject: "CN=ca.test".into(),
            issuer: "CN=ca.test".into(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            serial: "01".into(),
            fingerprint_sha256: "00".repeat(32),
            public_key_sha256: "11".repeat(32),
            not_before: time::OffsetDateTime::UNIX_EPOCH,
            not_after: time::OffsetDateTime::UNIX_EPOCH,
            is_ca: true,
        }
    }

    fn digest(n: u8) -> ContentDigest {
        ContentDigest::of(&[n])
    }

    #[test]
    fn a_hit_returns_the_contents_inserted_for_that_digest_and_only_that_one() {
        let mut cache = PemCache::new(4);
        cache.insert(digest(1), contents(1));
        cache.insert(digest(2), contents(2));
        assert_eq!(cache.get(&digest(1)), Some(contents(1)));
        assert_eq!(cache.get(&digest(2)), Some(contents(2)));
        assert_eq!(cache.get(&digest(3)), None);
        assert_eq!(cache.stats(), PemCacheStats { hits: 2, misses: 1 });
        // Inserting again for the same digest replaces, it does not grow.
        cache.insert(digest(1), contents(1));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn at_capacity_the_least_recently_used_entry_is_evicted() {
        let mut cache = PemCache::new(3);
        for n in 1..=3 {
            cache.insert(digest(n), contents(n));
        }
        // 1 is the oldest insert but was just used: 2 is now the least recently used.
        assert!(cache.get(&digest(1)).is_some());
        cache.insert(digest(4), contents(4));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&digest(2)), None);
        for n in [1, 3, 4] {
            assert_eq!(cache.get(&digest(n)), Some(contents(n)), "{n}");
        }
        // Many more inserts never grow it past its capacity.
        for n in 10..200 {
            cache.insert(digest(n), contents(n));
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.weight(), 3);
        assert_eq!(cache.get(&digest(199)), Some(contents(199)));
    }

    #[test]
    fn a_bundle_weighs_its_certificates_and_evicts_as_many_summaries_as_it_needs() {
        let bundle = |certificates: usize| PemContents {
            certificates: vec![summary(); certificates],
            private_key: None,
        };
        let mut cache = PemCache::new(5);
        for n in 1..=5 {
            cache.insert(digest(n), contents(n));
        }
        assert_eq!(cache.weight(), 5);
        // A bundle of 3 makes room by evicting the 3 least recently used keys.
        assert!(cache.get(&digest(1)).is_some());
        cache.insert(digest(10), bundle(3));
        assert_eq!(cache.weight(), 5);
        assert_eq!(cache.len(), 3);
        for (n, kept) in [(1, true), (2, false), (3, false), (4, false), (5, true)] {
            assert_eq!(cache.get(&digest(n)).is_some(), kept, "{n}");
        }
        assert_eq!(cache.get(&digest(10)), Some(bundle(3)));
        // Replacing an entry counts its weight once.
        cache.insert(digest(10), bundle(3));
        assert_eq!(cache.weight(), 5);
        // Heavier than the whole cache: not kept, nothing evicted for it.
        cache.insert(digest(11), bundle(6));
        assert_eq!(cache.get(&digest(11)), None);
        assert_eq!(cache.weight(), 5);
        assert_eq!(cache.len(), 3);
        // An empty verdict still weighs 1.
        cache.insert(digest(12), PemContents::default());
        assert_eq!(cache.weight(), 5);
        assert_eq!(cache.get(&digest(12)), Some(PemContents::default()));
    }

    #[test]
    fn a_cache_of_capacity_zero_keeps_nothing() {
        let mut cache = PemCache::new(0);
        cache.insert(digest(1), contents(1));
        assert!(cache.is_empty());
        assert_eq!(cache.get(&digest(1)), None);
    }

    #[test]
    fn the_digest_covers_every_byte_of_the_content() {
        // Same length, same prefix, one byte apart at the end: different keys.
        let a = ContentDigest::of(b"-----BEGIN PRIVATE KEY-----\nAAAA");
        let b = ContentDigest::of(b"-----BEGIN PRIVATE KEY-----\nAAAB");
        assert_ne!(a, b);
        assert_eq!(a, ContentDigest::of(b"-----BEGIN PRIVATE KEY-----\nAAAA"));
        assert_eq!(
            ContentDigest::of(b"").to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn get_or_parse_parses_once_per_content_and_keeps_no_failure() {
        let shared = SharedPemCache::new(PemCache::new(8));
        let mut parses = 0;
        let mut parse = |n: u8| {
            parses += 1;
            Ok::<_, ()>(contents(n))
        };
        assert_eq!(shared.get_or_parse(digest(1), || parse(1)), Ok(contents(1)));
        assert_eq!(shared.get_or_parse(digest(1), || parse(1)), Ok(contents(1)));
        assert_eq!(shared.get_or_parse(digest(2), || parse(2)), Ok(contents(2)));
        assert_eq!(parses, 2);
        assert_eq!(
            shared.get_or_parse(digest(3), || Err::<PemContents, _>("bad")),
            Err("bad")
        );
        assert_eq!(shared.lock().len(), 2, "a failure is not kept");
        // A clone shares the same cache.
        assert_eq!(shared.clone().lock().get(&digest(2)), Some(contents(2)));
    }

    #[test]
    fn a_poisoned_lock_still_serves_the_cache() {
        let shared = SharedPemCache::default();
        shared.lock().insert(digest(1), contents(1));
        let poisoner = shared.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.lock();
            panic!("poison the lock");
        })
        .join();
        assert_eq!(shared.lock().get(&digest(1)), Some(contents(1)));
    }
}
