//! Which key a server loads with which certificate, by file name, and whether they match.

use std::collections::BTreeMap;

use serde::Serialize;

use super::PemContents;

/// A private key paired with the certificate a server would load with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyPairing {
    pub key_file: String,
    pub cert_file: String,
    /// The key's public key equals the public key of `cert_file`'s leaf.
    pub matches: bool,
}

/// Pairs keys with certificates the way servers are configured to load them, given
/// `(relative path, contents)` of every parsed file of one volume.
///
/// For each file holding a private key, the first rule that finds a file with certificates wins:
///
/// 1. the file itself holds certificates (bundle `X.pem`, HAProxy style) → paired with itself;
/// 2. `X.pem.key` → `X.pem` (HAProxy loads the key from beside the crt file);
/// 3. `X.key` → `X.crt` (same directory; covers `tls.key`/`tls.crt`);
/// 4. `X.key` → `X.pem` when no `X.crt` with certificates exists;
/// 5. `X.key` → `X` (HAProxy's general `<crt file>.key`, e.g. `tls.crt.key` → `tls.crt`).
///
/// Certificates without a key (CA bundles such as `ca.crt`) and keys without a certificate yield
/// no pairing; neither is a problem by itself. Paths are matched exactly (`/` separated, case
/// sensitive) as they appear in the volume. Output is sorted by `key_file`; if a path appears
/// twice in `files`, its first entry is used.
pub fn pair_keys(files: &[(&str, &PemContents)]) -> Vec<KeyPairing> {
    let mut by_path: BTreeMap<&str, &PemContents> = BTreeMap::new();
    for (path, contents) in files {
        by_path.entry(path).or_insert(contents);
    }

    // BTreeMap iteration is sorted by path, so the output is sorted by key_file.
    by_path
        .iter()
        .filter_map(|(&key_path, contents)| {
            let key = contents.private_key.as_ref()?;
            let (cert_path, leaf) = if let Some(leaf) = contents.leaf() {
                (key_path.to_owned(), leaf)
            } else {
                cert_candidates(key_path)
                    .into_iter()
                    .find_map(|candidate| {
                        let leaf = by_path.get(candidate.as_str())?.leaf()?;
                        Some((candidate, leaf))
                    })?
            };
            Some(KeyPairing {
                key_file: key_path.to_owned(),
                cert_file: cert_path,
                matches: key.matches(leaf),
            })
        })
        .collect()
}

/// `(X.crt, X.key)` where `X.crt` holds only a private key and `X.key` only certificates: the
/// two fields of a TLS Secret filled the wrong way round. No key pairs with a certificate then,
/// so nothing else calls the volume broken, yet every server refuses to load it.
pub fn swapped_pairs(files: &[(&str, &PemContents)]) -> Vec<(String, String)> {
    let by_path: BTreeMap<&str, &PemContents> = files.iter().copied().collect();
    by_path
        .iter()
        .filter_map(|(&key_path, contents)| {
            let crt = format!("{}.crt", key_path.strip_suffix(".key")?);
            let beside = by_path.get(crt.as_str())?;
            let key_holds_only_certificates =
                contents.private_key.is_none() && !contents.certificates.is_empty();
            let crt_holds_only_a_key =
                beside.private_key.is_some() && beside.certificates.is_empty();
            (key_holds_only_certificates && crt_holds_only_a_key)
                .then(|| (crt, key_path.to_owned()))
        })
        .collect()
}

/// Certificate files a server would load beside `key_path`, most specific first.
fn cert_candidates(key_path: &str) -> Vec<String> {
    let Some(stem) = key_path.strip_suffix(".key") else {
        return Vec::new();
    };
    // `.key` alone (or `dir/.key`) has no stem to pair on.
    if stem.is_empty() || stem.ends_with('/') {
        return Vec::new();
    }
    if stem.ends_with(".pem") {
        return vec![stem.to_owned()];
    }
    // Last: HAProxy's general rule, `<crt file>.key` beside any certificate file name
    // (`tls.crt.key` with `tls.crt`).
    vec![
        format!("{stem}.crt"),
        format!("{stem}.pem"),
        stem.to_owned(),
    ]
}
