//! Test support: AtomicWriter-shaped volume directories on any filesystem (no tmpfs, no root),
//! and self-signed certificates with chosen (possibly hostile) names.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::symlink;
use std::path::Path;

use rcgen::{CertificateParams, DnType, KeyPair};

/// The generation directory name every test volume uses.
pub const GENERATION: &str = "..2026_01_01_00_00_00.1";

/// Writes `files` (relative paths, nested allowed) as one published generation under `dir`, the
/// way kubelet's AtomicWriter leaves it: `..<ts>/`, `..data -> ..<ts>`, `first -> ..data/first`.
pub fn write_volume(dir: &Path, files: &[(&str, &[u8])]) {
    let generation = dir.join(GENERATION);
    std::fs::create_dir_all(&generation).unwrap();
    let mut roots: Vec<&str> = Vec::new();
    for (path, bytes) in files {
        let file = generation.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, bytes).unwrap();
        let first = path.split('/').next().unwrap();
        if !roots.contains(&first) {
            roots.push(first);
        }
    }
    symlink(GENERATION, dir.join("..data")).unwrap();
    for first in roots {
        symlink(format!("..data/{first}"), dir.join(first)).unwrap();
    }
}

/// A self-signed leaf: (certificate PEM, key PEM, SHA-256 fingerprint of the DER).
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
    pub fingerprint: String,
}

/// Self-signed certificate with `common_name` and DNS SANs `dns`, valid `from`..`until` years.
pub fn self_signed(common_name: &str, dns: &[&str], years: (i32, i32)) -> SelfSigned {
    use sha2::Digest as _;
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(dns.iter().map(|s| (*s).to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
    params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    SelfSigned {
        fingerprint: hex::encode(sha2::Sha256::digest(cert.der())),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}
