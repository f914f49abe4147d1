//! A snapshot read from disk, judged as reload material: hostile names stay escaped and cut.

#![allow(clippy::unwrap_used)]

use mountlag_core::reconcile::material::material_of_snapshot;
use mountlag_core::reconcile::reload::Material;
use time::OffsetDateTime;

use super::snapshot;
use super::test_volume::{self_signed, write_volume};

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
            !reason.chars().any(mountlag_core::text::needs_escape),
            "raw control text in {reason:?}"
        );
        assert!(reason.len() < 1024, "{} bytes", reason.len());
    }
    let all = reasons.join("\n");
    assert!(all.contains("\\u{1b}[2J\\u{202e}bad.pem"), "{all}");
    assert!(all.contains("CN=\\u{1b}[31mEVIL"), "{all}");
    assert!(all.contains("bytes)"), "{all}");
}
