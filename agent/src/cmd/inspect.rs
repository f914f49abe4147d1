//! `mountlag inspect`: what kubelet projected on this node, read the way the agent reads it.
//!
//! ```text
//! PATH... ─▶ kubelet::discover_volumes ─▶ kubelet::snapshot (per volume) ─▶ Report ─▶ text | JSON
//! ```
//!
//! The report is built from snapshots only, so it carries digests and certificate summaries and
//! can never print a byte of a key. The JSON shape is a contract (docs/inspect.md): fields are
//! added, never renamed, and `schemaVersion` changes if that ever has to happen.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cert::{CertificateSummary, KeyAlgorithm, KeyPairing, KeySummary, Validity};
use crate::disk::paths::{DiscoverError, RefusedPath, discover};
use crate::disk::{FileSnapshot, Problem, VolumeKind, VolumeLocation, VolumeState, snapshot};
use crate::text::{MAX_MESSAGE_BYTES, untrusted, untrusted_capped};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub schema_version: u32,
    #[serde(serialize_with = "rfc3339")]
    pub inspected_at: OffsetDateTime,
    /// No problem in any volume, every path could be read and none was refused.
    pub healthy: bool,
    pub volumes: Vec<VolumeReport>,
    /// Pod, `volumes` and plugin directories that are symlinks: not followed, nothing read.
    /// (A volume directory that is a symlink is a volume with an `error`.)
    pub refused: Vec<RefusedPath>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeReport {
    pub path: PathBuf,
    pub pod_uid: Option<String>,
    pub kind: Option<VolumeKind>,
    pub name: String,
    /// `written`, `empty`, `notWritten`, or `unreadable` when `error` is set.
    pub state: &'static str,
    pub generation: Option<String>,
    pub files: Vec<FileReport>,
    pub key_pairs: Vec<KeyPairing>,
    pub problems: Vec<Problem>,
    /// Why the volume could not be read at all.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileReport {
    pub path: String,
    pub size: u64,
    /// Octal permission bits, e.g. `"0644"`.
    pub mode: String,
    pub sha256: Option<String>,
    pub certificates: Vec<CertificateReport>,
    pub chain_length: usize,
    pub private_key: Option<KeySummary>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateReport {
    #[serde(flatten)]
    pub summary: CertificateSummary,
    pub days_to_expiry: i64,
    pub validity: Validity,
}

/// Why `inspect` could not even start on a path (a usage error, exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Discover(#[from] DiscoverError),
}

/// Reads every secret and projected volume at or below each path.
pub fn inspect(paths: &[PathBuf], now: OffsetDateTime) -> Result<Report, InspectError> {
    let mut locations: Vec<VolumeLocation> = Vec::new();
    let mut refused: Vec<RefusedPath> = Vec::new();
    for path in paths {
        let found = discover(path)?;
        locations.extend(found.volumes);
        refused.extend(found.refused);
    }
    locations.sort();
    locations.dedup();
    refused.sort();
    refused.dedup();
    let volumes: Vec<VolumeReport> = locations.iter().map(|l| inspect_volume(l, now)).collect();
    let healthy = refused.is_empty()
        && volumes
            .iter()
            .all(|v| v.problems.is_empty() && v.error.is_none());
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        inspected_at: now,
        healthy,
        volumes,
        refused,
    })
}

fn inspect_volume(location: &VolumeLocation, now: OffsetDateTime) -> VolumeReport {
    let mut report = VolumeReport {
        path: location.path.clone(),
        pod_uid: location.pod_uid.clone(),
        kind: location.kind,
        name: location.name.clone(),
        state: "unreadable",
        generation: None,
        files: Vec::new(),
        key_pairs: Vec::new(),
        problems: Vec::new(),
        error: None,
    };
    match snapshot(&location.path) {
        Ok(snap) => {
            report.state = match snap.state() {
                VolumeState::NotWritten => "notWritten",
                VolumeState::Empty => "empty",
                VolumeState::Written => "written",
            };
            report.problems = snap.problems_at(now);
            report.files = snap.files.iter().map(|f| file_report(f, now)).collect();
            report.generation = snap.generation;
            report.key_pairs = snap.pairings;
        }
        Err(err) => report.error = Some(err.to_string()),
    }
    report
}

fn file_report(file: &FileSnapshot, now: OffsetDateTime) -> FileReport {
    let pem = file.pem.as_ref();
    FileReport {
        path: file.path.clone(),
        size: file.size,
        mode: format!("{:04o}", file.mode),
        sha256: file.sha256.clone(),
        certificates: pem
            .map(|p| {
                p.certificates
                    .iter()
                    .map(|c| CertificateReport {
                        summary: c.clone(),
                        days_to_expiry: c.days_to_expiry(now),
                        validity: c.validity_at(now),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        chain_length: pem.map_or(0, |p| p.chain_length()),
        private_key: pem.and_then(|p| p.private_key.clone()),
    }
}

fn rfc3339<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(*t))
}

fn format_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

impl Report {
    /// Exit status of `mountlag inspect`: 0 healthy, 1 a problem was found.
    pub fn exit_code(&self) -> u8 {
        if self.healthy { 0 } else { 1 }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|err| format!("{{\"error\":\"cannot encode report: {err}\"}}"))
    }

    /// The operator's view: one block per volume, full digests, problems last.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if self.volumes.is_empty() {
            out.push_str("no secret or projected volumes found\n");
        }
        for volume in &self.volumes {
            render_volume(&mut out, volume);
        }
        for refused in &self.refused {
            let path = refused.path.to_string_lossy();
            let _ = writeln!(
                out,
                "{}\n  ✗ refused: {}\n",
                untrusted_capped(&path, MAX_MESSAGE_BYTES),
                untrusted_capped(&refused.reason, MAX_MESSAGE_BYTES)
            );
        }
        let problems: usize = self.volumes.iter().map(|v| v.problems.len()).sum();
        let unreadable = self.volumes.iter().filter(|v| v.error.is_some()).count();
        let mut extra = String::new();
        if unreadable > 0 {
            extra.push_str(&format!(", {unreadable} unreadable"));
        }
        if !self.refused.is_empty() {
            extra.push_str(&format!(", {} refused", self.refused.len()));
        }
        let _ = writeln!(
            out,
            "{} volume(s), {} problem(s){extra}: {}",
            self.volumes.len(),
            problems,
            if self.healthy { "healthy" } else { "UNHEALTHY" }
        );
        out
    }
}

/// Every name, path and certificate string below comes from the volume: each goes through
/// [`untrusted`] so a file name or subject cannot drive the operator's terminal.
fn render_volume(out: &mut String, volume: &VolumeReport) {
    let path = volume.path.to_string_lossy();
    let _ = writeln!(out, "{}", untrusted_capped(&path, MAX_MESSAGE_BYTES));
    let mut about = Vec::new();
    if let Some(uid) = &volume.pod_uid {
        about.push(format!("pod {}", untrusted(uid)));
    }
    match volume.kind {
        Some(kind) => about.push(format!("{kind} volume \"{}\"", untrusted(&volume.name))),
        None => about.push(format!("volume \"{}\"", untrusted(&volume.name))),
    }
    match &volume.generation {
        Some(generation) => about.push(format!(
            "generation {} ({})",
            untrusted(generation),
            volume.state
        )),
        None => about.push(format!("no generation ({})", volume.state)),
    }
    let _ = writeln!(out, "  {}", about.join(" · "));
    if let Some(error) = &volume.error {
        let _ = writeln!(
            out,
            "  error: {}",
            untrusted_capped(error, MAX_MESSAGE_BYTES)
        );
    }
    for file in &volume.files {
        let _ = writeln!(
            out,
            "  {}  {}  {} B  sha256 {}",
            untrusted(&file.path),
            file.mode,
            file.size,
            file.sha256.as_deref().unwrap_or("(not read)")
        );
        for (index, cert) in file.certificates.iter().enumerate() {
            render_certificate(out, index, file.chain_length, cert);
        }
        if let Some(key) = &file.private_key {
            let pairing = volume
                .key_pairs
                .iter()
                .find(|p| p.key_file == file.path)
                .map(|p| {
                    if p.matches {
                        format!("matches {}", untrusted(&p.cert_file))
                    } else {
                        format!("DOES NOT MATCH {}", untrusted(&p.cert_file))
                    }
                })
                .unwrap_or_else(|| "no certificate beside it".into());
            let _ = writeln!(
                out,
                "    key   {} · public key sha256 {} · {pairing}",
                algorithm_name(key.algorithm),
                key.public_key_sha256
            );
        }
    }
    if !volume.problems.is_empty() {
        let _ = writeln!(out, "  problems:");
        for problem in &volume.problems {
            let _ = writeln!(
                out,
                "    ✗ {}: {}: {}",
                untrusted(problem.file.as_deref().unwrap_or("(volume)")),
                problem.kind.code(),
                untrusted_capped(&problem.detail, MAX_MESSAGE_BYTES)
            );
        }
    }
    out.push('\n');
}

fn render_certificate(out: &mut String, index: usize, chain: usize, cert: &CertificateReport) {
    let c = &cert.summary;
    let role = if index == 0 { "leaf " } else { "chain" };
    let _ = writeln!(out, "    {role} {}", untrusted(&c.subject));
    if !c.dns_names.is_empty() || !c.ip_addresses.is_empty() {
        let names: Vec<String> = c
            .dns_names
            .iter()
            .chain(&c.ip_addresses)
            .map(|name| untrusted(name).to_string())
            .collect();
        let _ = writeln!(
            out,
            "          names {}",
            untrusted_capped(&names.join(", "), MAX_MESSAGE_BYTES)
        );
    }
    let _ = writeln!(out, "          issuer {}", untrusted(&c.issuer));
    let _ = writeln!(
        out,
        "          serial {} · sha256 fingerprint {}",
        c.serial, c.fingerprint_sha256
    );
    let validity = match cert.validity {
        Validity::Valid => format!("{} days left", cert.days_to_expiry),
        Validity::Expired => "EXPIRED".to_string(),
        Validity::NotYetValid => "NOT YET VALID".to_string(),
    };
    let chain_note = if index == 0 {
        format!(" · chain length {chain}")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "          {} → {} · {validity}{chain_note}",
        format_time(c.not_before),
        format_time(c.not_after)
    );
}

fn algorithm_name(algorithm: KeyAlgorithm) -> &'static str {
    match algorithm {
        KeyAlgorithm::Rsa => "RSA",
        KeyAlgorithm::EcdsaP256 => "ECDSA P-256",
        KeyAlgorithm::EcdsaP384 => "ECDSA P-384",
        KeyAlgorithm::Ed25519 => "Ed25519",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::disk::test_volume::{self_signed, write_volume};

    /// Only `\n` ends the lines inspect writes; nothing else may reach the terminal raw.
    fn assert_terminal_safe(text: &str) {
        let bad: Vec<char> = text
            .chars()
            .filter(|c| *c != '\n' && crate::text::needs_escape(*c))
            .collect();
        assert!(bad.is_empty(), "raw {bad:?} in:\n{text}");
    }

    #[test]
    fn text_output_escapes_and_cuts_names_and_subjects_from_the_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("tls");
        let cert = self_signed(
            "\u{1b}]0;owned\u{7}\u{1b}[31mEVIL\u{202e}",
            &["evil\u{1b}[2J.test"],
            (2020, 2040),
        );
        let long_dir = "d".repeat(200);
        let long_file = format!("{}\u{1b}[8m.txt", "e".repeat(200));
        let nested = format!("{long_dir}/{long_file}");
        write_volume(
            &volume,
            &[
                ("tls.crt", cert.cert_pem.as_bytes()),
                ("tls.key", cert.key_pem.as_bytes()),
                ("\u{1b}[2Jwipe.crt", b"not a certificate"),
                (&nested, b"x"),
            ],
        );
        let report = inspect(std::slice::from_ref(&volume), OffsetDateTime::now_utc()).unwrap();
        let text = report.to_text();
        assert_terminal_safe(&text);
        assert!(text.contains("\\u{1b}[2Jwipe.crt"), "{text}");
        assert!(text.contains("CN=\\u{1b}]0;owned\\u{7}"), "{text}");
        assert!(text.contains("evil\\u{1b}[2J.test"), "{text}");
        // The 400-byte nested path is cut, and says how much is missing.
        let cut = text.lines().find(|l| l.contains(&long_dir)).unwrap();
        assert!(cut.contains(" bytes)  0644  1 B"), "{cut}");
        assert!(cut.split("  ").nth(1).unwrap().len() <= crate::text::MAX_UNTRUSTED_BYTES);
        assert!(!text.contains(&long_file[..150]), "{text}");
        // The JSON keeps the names as they are (serde escapes them).
        let json = report.to_json();
        assert!(json.contains("\\u001b[2Jwipe.crt"), "{json}");
        assert!(!json.contains('\u{1b}'));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod symlink_tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::disk::KubeletRoot;
    use crate::disk::test_volume::{self_signed, write_volume};

    #[test]
    fn symlinked_volume_pod_and_volumes_directories_are_refused_and_never_read() {
        let tmp = tempfile::tempdir().unwrap();
        let root = KubeletRoot::new(tmp.path().join("kubelet"));
        let good = self_signed("inside.test", &["inside.test"], (2020, 2040));
        let bad = self_signed("outside.test", &["outside.test"], (2020, 2040));
        let files = |c: &crate::disk::test_volume::SelfSigned| {
            vec![
                ("tls.crt", c.cert_pem.clone().into_bytes()),
                ("tls.key", c.key_pem.clone().into_bytes()),
            ]
        };
        let write = |dir: &std::path::Path, c| {
            let owned = files(c);
            let refs: Vec<(&str, &[u8])> = owned.iter().map(|(n, b)| (*n, b.as_slice())).collect();
            write_volume(dir, &refs);
        };
        // Pod a: a real volume. Outside the root: a pod-shaped tree with a valid certificate.
        write(&root.volume_dir("a", VolumeKind::Secret, "tls"), &good);
        let outside_pod = tmp.path().join("outside-pod");
        let outside_volume = outside_pod.join("volumes/kubernetes.io~secret/tls");
        write(&outside_volume, &bad);
        // Pod b: its volume directory is a symlink to the outside volume.
        let b = root.volume_dir("b", VolumeKind::Secret, "tls");
        std::fs::create_dir_all(b.parent().unwrap()).unwrap();
        symlink(&outside_volume, &b).unwrap();
        // Pod c: the pod directory is a symlink. Pod d: its `volumes` is one.
        symlink(&outside_pod, root.pod_dir("c")).unwrap();
        std::fs::create_dir_all(root.pod_dir("d")).unwrap();
        symlink(
            outside_pod.join("volumes"),
            root.pod_dir("d").join("volumes"),
        )
        .unwrap();

        let now = OffsetDateTime::now_utc();
        let report = inspect(&[root.path().to_path_buf()], now).unwrap();
        let text = report.to_text();
        let json = report.to_json();
        assert!(!report.healthy);
        assert_eq!(report.exit_code(), 1);
        let paths: Vec<_> = report.volumes.iter().map(|v| v.path.clone()).collect();
        assert_eq!(
            paths,
            [root.volume_dir("a", VolumeKind::Secret, "tls"), b.clone()]
        );
        assert!(report.volumes[0].error.is_none(), "{text}");
        let error = report.volumes[1].error.as_deref().unwrap();
        assert!(
            error.contains("is a symlink to") && error.contains("not followed"),
            "{error}"
        );
        assert_eq!(report.volumes[1].state, "unreadable");
        let refused: Vec<_> = report.refused.iter().map(|r| r.path.clone()).collect();
        assert_eq!(
            refused,
            [root.pod_dir("c"), root.pod_dir("d").join("volumes")]
        );
        assert!(
            text.contains("✗ refused: pod directory is a symlink"),
            "{text}"
        );
        assert!(
            text.contains("✗ refused: volumes directory is a symlink"),
            "{text}"
        );
        assert!(text.ends_with("2 volume(s), 0 problem(s), 1 unreadable, 2 refused: UNHEALTHY\n"));
        // Nothing behind a symlink was read: the outside certificate appears nowhere.
        assert!(text.contains(&good.fingerprint), "{text}");
        for output in [&text, &json] {
            assert!(!output.contains(&bad.fingerprint), "{output}");
            assert!(!output.contains("outside.test"), "{output}");
        }

        // Named directly, the symlinked volume is refused the same way.
        let direct = inspect(std::slice::from_ref(&b), now).unwrap();
        assert!(!direct.healthy);
        assert!(
            direct.volumes[0]
                .error
                .as_deref()
                .unwrap()
                .contains("not followed")
        );
        assert!(!direct.to_json().contains(&bad.fingerprint));
    }
}
