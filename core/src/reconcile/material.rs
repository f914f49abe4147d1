//! Judging new certificate material before anything is reloaded: from a disk snapshot (files
//! mode) or from the Secrets in the API (controllers that read the API themselves).

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::cert::{self, PemContents};
use crate::text::untrusted;
use crate::volume::{Problem, ProblemKind, VolumeSnapshot};

use super::reload::{ExpectedLeaf, Material};

/// Problems a server would refuse to load, or load and serve broken.
fn blocks_reload(kind: ProblemKind) -> bool {
    matches!(
        kind,
        ProblemKind::KeyMismatch
            | ProblemKind::Expired
            | ProblemKind::NotYetValid
            | ProblemKind::UnparsablePem
            | ProblemKind::DanglingSymlink
            | ProblemKind::SymlinkEscapesVolume
            | ProblemKind::FileTooLarge
            | ProblemKind::NotRegularFile
            | ProblemKind::Unreadable
            | ProblemKind::SwappedKeyAndCertificate
    )
}

/// A problem as a reason to withhold a reload: file, code, detail.
fn reason(p: &Problem) -> String {
    format!(
        "{}: {}: {}",
        untrusted(p.file.as_deref().unwrap_or("(volume)")),
        p.kind.code(),
        p.detail
    )
}

/// The material of one generation: invalid when any file has a blocking problem, else the
/// leaves of every certificate that has its key beside it.
pub fn material_of_snapshot(snapshot: &VolumeSnapshot, now: OffsetDateTime) -> Material {
    let reasons: Vec<String> = snapshot
        .problems_at(now)
        .into_iter()
        .filter(|p| blocks_reload(p.kind))
        .map(|p| reason(&p))
        .collect();
    if !reasons.is_empty() {
        return Material::Invalid { reasons };
    }
    let pem: BTreeMap<&str, &PemContents> = snapshot
        .files
        .iter()
        .filter_map(|f| f.pem.as_ref().map(|p| (f.path.as_str(), p)))
        .collect();
    leaves(&snapshot.pairings, &pem)
}

/// The leaves a controller reading the Secrets from the API should serve.
pub fn material_of_secrets(certificates: &BTreeMap<String, PemContents>) -> Material {
    let files: Vec<(&str, &PemContents)> =
        certificates.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let pairings = cert::pair_keys(&files);
    let swapped: Vec<String> = cert::swapped_pairs(&files)
        .into_iter()
        .map(|(crt, key)| reason(&Problem::swapped(&crt, &key)))
        .collect();
    if !swapped.is_empty() {
        return Material::Invalid { reasons: swapped };
    }
    let pem: BTreeMap<&str, &PemContents> = files.into_iter().collect();
    leaves(&pairings, &pem)
}

fn leaves(pairings: &[cert::KeyPairing], pem: &BTreeMap<&str, &PemContents>) -> Material {
    let mut leaves: Vec<ExpectedLeaf> = pairings
        .iter()
        .filter(|p| p.matches)
        .filter_map(|p| {
            let leaf = pem.get(p.cert_file.as_str())?.leaf()?;
            Some(ExpectedLeaf {
                file: p.cert_file.clone(),
                fingerprint: leaf.fingerprint_sha256.clone(),
                dns_names: leaf.dns_names.clone(),
                not_after: leaf.not_after.unix_timestamp(),
            })
        })
        .collect();
    leaves.sort_by(|a, b| a.file.cmp(&b.file));
    leaves.dedup_by(|a, b| a.fingerprint == b.fingerprint);
    if leaves.is_empty() {
        Material::NoServedCertificate
    } else {
        Material::Valid { leaves }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pem_of(text: &str) -> PemContents {
        cert::parse_pem(text.as_bytes()).unwrap()
    }

    #[test]
    fn a_certificate_and_key_filled_the_wrong_way_round_are_refused_as_swapped() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        let swapped = BTreeMap::from([
            ("tls.crt".to_owned(), pem_of(&key_pem)),
            ("tls.key".to_owned(), pem_of(&cert_pem)),
        ]);
        let Material::Invalid { reasons } = material_of_secrets(&swapped) else {
            panic!("swapped files are not valid material");
        };
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            reasons[0].starts_with("tls.crt: swappedKeyAndCertificate: "),
            "{reasons:?}"
        );
        assert!(!reasons[0].contains("PRIVATE"), "no key text: {reasons:?}");

        let right = BTreeMap::from([
            ("tls.crt".to_owned(), pem_of(&cert_pem)),
            ("tls.key".to_owned(), pem_of(&key_pem)),
        ]);
        assert!(matches!(
            material_of_secrets(&right),
            Material::Valid { .. }
        ));
        // A CA bundle beside a key-only file is not a swap.
        let ca_only = BTreeMap::from([("ca.crt".to_owned(), pem_of(&cert_pem))]);
        assert_eq!(material_of_secrets(&ca_only), Material::NoServedCertificate);
    }
}
