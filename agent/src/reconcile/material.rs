//! Judging new certificate material before anything is reloaded: from a disk snapshot (files
//! mode) or from the Secrets in the API (controllers that read the API themselves).

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::cert::{self, PemContents};
use crate::kubelet::{ProblemKind, VolumeSnapshot};
use crate::text::untrusted;

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod hostile_tests {
    use super::*;
    use crate::kubelet::snapshot;
    use crate::kubelet::test_volume::{self_signed, write_volume};

    #[test]
    fn reasons_for_an_event_escape_and_cut_subjects_and_file_names() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("tls");
        // Expired, so the subject is quoted in the reason; 100 kB of it.
        let subject = format!("\u{1b}[31mEVIL\u{1b}]0;t\u{7}{}", "X".repeat(100_000));
        let cert = self_signed(&subject, &["a.test"], (2001, 2002));
        write_volume(
            &volume,
            &[
                ("tls.crt", cert.cert_pem.as_bytes()),
                ("tls.key", cert.key_pem.as_bytes()),
                (
                    "\u{1b}[2J\u{202e}bad.pem",
                    b"-----BEGIN \x1b[31mEVIL-----\n",
                ),
            ],
        );
        let snap = snapshot(&volume).unwrap();
        let Material::Invalid { reasons } = material_of_snapshot(&snap, OffsetDateTime::now_utc())
        else {
            panic!("expired material must be invalid");
        };
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        for reason in &reasons {
            assert!(
                !reason.chars().any(crate::text::needs_escape),
                "raw control text in {reason:?}"
            );
            assert!(reason.len() < 1024, "{} bytes", reason.len());
        }
        let all = reasons.join("\n");
        assert!(all.contains("\\u{1b}[2J\\u{202e}bad.pem"), "{all}");
        assert!(all.contains("CN=\\u{1b}[31mEVIL"), "{all}");
        assert!(all.contains("bytes)"), "{all}");
    }
}
