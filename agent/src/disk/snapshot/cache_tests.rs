//! Tests of [`super::snapshot_with`] and its [`SharedPemCache`]: a verdict is reused only for
//! the very bytes it was made from.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use mountlag_core::cert::{PemCache, PemCacheStats};

use super::*;
use crate::disk::test_volume::{SelfSigned, self_signed, write_volume};

fn pair(files: &[(&str, &SelfSigned)]) -> Vec<(String, Vec<u8>)> {
    files
        .iter()
        .map(|(name, cert)| {
            let pem = if name.ends_with(".key") {
                &cert.key_pem
            } else {
                &cert.cert_pem
            };
            ((*name).to_string(), pem.as_bytes().to_vec())
        })
        .collect()
}

/// Publishes `files` as a new generation `..<name>` the way AtomicWriter does: written whole,
/// then `..data` swapped by a rename.
fn publish(dir: &Path, name: &str, files: &[(String, Vec<u8>)]) {
    let generation = dir.join(format!("..{name}"));
    std::fs::create_dir(&generation).unwrap();
    for (path, bytes) in files {
        std::fs::write(generation.join(path), bytes).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    symlink(format!("..{name}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(DATA_LINK)).unwrap();
}

fn kinds(snap: &VolumeSnapshot) -> Vec<(Option<&str>, ProblemKind)> {
    snap.problems
        .iter()
        .map(|p| (p.file.as_deref(), p.kind))
        .collect()
}

fn leaf_fingerprint<'a>(snap: &'a VolumeSnapshot, file: &str) -> &'a str {
    let entry = snap.files.iter().find(|f| f.path == file).unwrap();
    &entry
        .pem
        .as_ref()
        .unwrap()
        .leaf()
        .unwrap()
        .fingerprint_sha256
}

#[test]
fn a_key_swapped_for_another_certificates_key_after_the_pair_was_cached_is_a_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let a = self_signed("a.test", &["a.test"], (2020, 2040));
    let b = self_signed("b.test", &["b.test"], (2020, 2040));
    let a_files = pair(&[("tls.crt", &a), ("tls.key", &a)]);
    let a_refs: Vec<(&str, &[u8])> = a_files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    write_volume(&dir, &a_refs);
    let cache = SharedPemCache::default();

    let first = snapshot_with(&dir, Some(&cache)).unwrap();
    assert_eq!(kinds(&first), []);
    assert!(first.pairings.iter().all(|p| p.matches), "{first:?}");
    assert_eq!(cache.lock().len(), 2, "both verdicts kept");
    // The same generation read again comes wholly from the cache, and reads the same.
    let again = snapshot_with(&dir, Some(&cache)).unwrap();
    assert_eq!(again, first);
    assert_eq!(cache.lock().stats(), PemCacheStats { hits: 2, misses: 2 });

    // Same certificate, key of another one: the key's bytes are new, so it is parsed.
    publish(&dir, "second", &pair(&[("tls.crt", &a), ("tls.key", &b)]));
    let swapped = snapshot_with(&dir, Some(&cache)).unwrap();
    assert_eq!(
        kinds(&swapped),
        [(Some("tls.key"), ProblemKind::KeyMismatch)]
    );
    assert_eq!(swapped, snapshot(&dir).unwrap(), "as an uncached read says");
    assert_eq!(cache.lock().stats(), PemCacheStats { hits: 3, misses: 3 });

    // Renewed: both files change, both are parsed, the leaf is the new one.
    publish(&dir, "third", &pair(&[("tls.crt", &b), ("tls.key", &b)]));
    let renewed = snapshot_with(&dir, Some(&cache)).unwrap();
    assert_eq!(kinds(&renewed), []);
    assert_eq!(leaf_fingerprint(&renewed, "tls.crt"), b.fingerprint);
    assert_eq!(renewed, snapshot(&dir).unwrap());
    // And back to the first pair: every verdict still known, still right.
    publish(&dir, "fourth", &a_files);
    let back = snapshot_with(&dir, Some(&cache)).unwrap();
    assert_eq!(leaf_fingerprint(&back, "tls.crt"), a.fingerprint);
    assert_eq!(kinds(&back), []);
}

#[test]
fn a_certificate_whose_bytes_change_in_place_is_parsed_afresh() {
    // Not kubelet's way, but the cache must not depend on it: same path, same generation,
    // new bytes.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let a = self_signed("a.test", &["a.test"], (2020, 2040));
    let b = self_signed("b.test", &["b.test"], (2020, 2040));
    write_volume(&dir, &[("ca.crt", a.cert_pem.as_bytes())]);
    let cache = SharedPemCache::new(PemCache::new(8));
    let first = snapshot_with(&dir, Some(&cache)).unwrap();
    assert_eq!(leaf_fingerprint(&first, "ca.crt"), a.fingerprint);
    std::fs::write(
        dir.join(crate::disk::test_volume::GENERATION)
            .join("ca.crt"),
        b.cert_pem.as_bytes(),
    )
    .unwrap();
    let second = snapshot_with(&dir, Some(&cache)).unwrap();
    assert_eq!(leaf_fingerprint(&second, "ca.crt"), b.fingerprint);
}

#[test]
fn a_secret_seen_in_the_api_makes_the_first_read_of_its_new_files_a_hit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let a = self_signed("a.test", &["a.test"], (2020, 2040));
    let files = pair(&[("tls.crt", &a), ("tls.key", &a)]);
    let mut secret = Secret::default();
    secret.metadata.namespace = Some("ns".into());
    secret.metadata.name = Some("tls".into());
    secret.data = Some(
        files
            .iter()
            .map(|(name, bytes)| (name.clone(), ByteString(bytes.clone())))
            .collect::<BTreeMap<_, _>>(),
    );
    let cache = SharedPemCache::default();
    let view = crate::k8s::secret_view_with(&secret, Some(&cache)).unwrap();
    assert_eq!(view.certificates.len(), 2);
    assert_eq!(cache.lock().len(), 2);

    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    write_volume(&dir, &refs);
    let snap = snapshot_with(&dir, Some(&cache)).unwrap();
    assert_eq!(cache.lock().stats(), PemCacheStats { hits: 2, misses: 0 });
    assert_eq!(snap, snapshot(&dir).unwrap());
    assert_eq!(kinds(&snap), []);
}
