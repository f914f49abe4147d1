//! Judging new certificate material before anything is reloaded: from a disk snapshot (files
//! mode) or from the Secrets in the API (controllers that read the API themselves).

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::cert::{self, PemContents};
use crate::text::untrusted;
use crate::volume::{ProblemKind, VolumeSnapshot};

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
    )
}

/// The material of one generation: invalid when any file has a blocking problem, else the
/// leaves of every certificate that has its key beside it.
pub fn material_of_snapshot(snapshot: &VolumeSnapshot, now: OffsetDateTime) -> Material {
    let reasons: Vec<String> = snapshot
        .problems_at(now)
        .into_iter()
        .filter(|p| blocks_reload(p.kind))
        .map(|p| {
            format!(
                "{}: {}: {}",
                untrusted(p.file.as_deref().unwrap_or("(volume)")),
                p.kind.code(),
                p.detail
            )
        })
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
