//! A pod volume as kubelet lays it out and as one AtomicWriter generation of it reads, as plain
//! values: where it lives ([`KubeletRoot`], [`VolumeLocation`]) and what it held
//! ([`VolumeSnapshot`]: digests and certificate summaries, never bytes).
//!
//! ```text
//! <kubeletRoot>/pods/<podUID>/volumes/kubernetes.io~secret/<volume>/      one tmpfs per volume
//! <kubeletRoot>/pods/<podUID>/volumes/kubernetes.io~projected/<volume>/
//! <kubeletRoot>/pods/<podUID>/volume-subpaths/<volume>/<container>/<index>   subPath bind mounts
//! ```
//!
//! Reading the disk is the agent's (`mountlag::kubelet`); this module only names paths and
//! judges what was read, with the time passed in.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;

use crate::cert::{KeyPairing, PemContents, Validity};
use crate::text::untrusted;

/// The volume plugins whose directories AtomicWriter manages and that can carry Secret data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeKind {
    Secret,
    Projected,
}

impl VolumeKind {
    pub const ALL: [VolumeKind; 2] = [VolumeKind::Secret, VolumeKind::Projected];

    /// The plugin directory name kubelet uses under `volumes/`.
    pub fn plugin_dir(self) -> &'static str {
        match self {
            VolumeKind::Secret => "kubernetes.io~secret",
            VolumeKind::Projected => "kubernetes.io~projected",
        }
    }

    pub fn from_plugin_dir(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.plugin_dir() == name)
    }
}

impl fmt::Display for VolumeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VolumeKind::Secret => "secret",
            VolumeKind::Projected => "projected",
        })
    }
}

/// The kubelet root directory (`--root-dir`, `/var/lib/kubelet` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletRoot {
    root: PathBuf,
}

impl KubeletRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }

    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.pods_dir().join(pod_uid)
    }

    pub fn volume_dir(&self, pod_uid: &str, kind: VolumeKind, volume: &str) -> PathBuf {
        self.pod_dir(pod_uid)
            .join("volumes")
            .join(kind.plugin_dir())
            .join(volume)
    }

    /// Where kubelet bind-mounts the file a container mounts through `subPath`.
    pub fn subpath_dir(
        &self,
        pod_uid: &str,
        volume: &str,
        container: &str,
        index: usize,
    ) -> PathBuf {
        self.pod_dir(pod_uid)
            .join("volume-subpaths")
            .join(volume)
            .join(container)
            .join(index.to_string())
    }
}

/// One secret or projected volume directory, with what its path says about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeLocation {
    pub path: PathBuf,
    /// Known when the path has kubelet's shape (`pods/<uid>/volumes/<plugin>/<name>`).
    pub pod_uid: Option<String>,
    pub kind: Option<VolumeKind>,
    pub name: String,
}

impl VolumeLocation {
    /// Reads pod UID, plugin and volume name off a volume directory path.
    pub fn from_path(path: &Path) -> Self {
        let name = file_name(path);
        let plugin = path.parent();
        let kind = plugin.and_then(|p| VolumeKind::from_plugin_dir(&file_name(p)));
        let pod_uid = match (kind, plugin.and_then(Path::parent)) {
            (Some(_), Some(volumes)) if file_name(volumes) == "volumes" => {
                volumes.parent().map(file_name)
            }
            _ => None,
        };
        Self {
            path: path.to_path_buf(),
            pod_uid,
            kind,
            name,
        }
    }
}

/// The last component of `path`, lossily as text; `""` for `/` or `..`.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether AtomicWriter has published anything yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeState {
    /// No `..data` yet: kubelet has not finished the first write.
    NotWritten,
    /// `..data` points at an empty generation (e.g. a missing optional Secret).
    Empty,
    Written,
}

/// What is wrong with one file (or the volume), as `inspect` and the agent report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ProblemKind {
    DanglingSymlink,
    SymlinkEscapesVolume,
    UnexpectedEntry,
    NotRegularFile,
    FileTooLarge,
    Unreadable,
    UnparsablePem,
    KeyMismatch,
    Expired,
    NotYetValid,
    TooManyEntries,
    SwappedKeyAndCertificate,
}

impl ProblemKind {
    /// Stable camelCase code, the same as in JSON.
    pub fn code(self) -> &'static str {
        match self {
            ProblemKind::DanglingSymlink => "danglingSymlink",
            ProblemKind::SymlinkEscapesVolume => "symlinkEscapesVolume",
            ProblemKind::UnexpectedEntry => "unexpectedEntry",
            ProblemKind::NotRegularFile => "notRegularFile",
            ProblemKind::FileTooLarge => "fileTooLarge",
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::UnparsablePem => "unparsablePem",
            ProblemKind::KeyMismatch => "keyMismatch",
            ProblemKind::Expired => "expired",
            ProblemKind::NotYetValid => "notYetValid",
            ProblemKind::TooManyEntries => "tooManyEntries",
            ProblemKind::SwappedKeyAndCertificate => "swappedKeyAndCertificate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// Path relative to the volume (`tls.crt`, `a/b/c`, `..data`); `None` for the whole volume.
    pub file: Option<String>,
    pub kind: ProblemKind,
    /// Human-readable detail. Never contains file contents.
    pub detail: String,
}

impl Problem {
    /// `crt` holds a private key and `key` holds certificates ([`crate::cert::swapped_pairs`]).
    pub fn swapped(crt: &str, key: &str) -> Self {
        Self::new(
            crt,
            ProblemKind::SwappedKeyAndCertificate,
            format!(
                "{} holds a private key and no certificate, {} holds certificates and no key: the two look swapped",
                untrusted(crt),
                untrusted(key)
            ),
        )
    }

    pub fn new(file: impl Into<String>, kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            file: Some(file.into()),
            kind,
            detail: detail.into(),
        }
    }
}

/// One regular file of the generation. Only metadata, a digest and certificate summaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileSnapshot {
    /// Path relative to the generation directory, as the payload names it.
    pub path: String,
    pub size: u64,
    pub mode: u32,
    /// Lowercase hex SHA-256 of the contents; `None` when the file was not read (too large).
    pub sha256: Option<String>,
    /// Certificates and key found in a PEM file.
    pub pem: Option<PemContents>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshot {
    /// The `..data` target (`..2026_11_28_05_07_12.123456789`), `None` before the first write.
    pub generation: Option<String>,
    /// Sorted by path.
    pub files: Vec<FileSnapshot>,
    pub pairings: Vec<KeyPairing>,
    /// Problems found while reading; time-dependent ones come from [`VolumeSnapshot::problems_at`].
    pub problems: Vec<Problem>,
}

impl VolumeSnapshot {
    pub fn state(&self) -> VolumeState {
        match (&self.generation, self.files.is_empty()) {
            (None, _) => VolumeState::NotWritten,
            (Some(_), true) => VolumeState::Empty,
            (Some(_), false) => VolumeState::Written,
        }
    }

    /// Every problem at `now`: those found while reading plus certificates outside their validity.
    ///
    /// A file's first certificate is judged when it is served (paired with a key) or is not a
    /// CA; an expired root somewhere in a CA bundle is the bundle owner's business.
    pub fn problems_at(&self, now: OffsetDateTime) -> Vec<Problem> {
        let mut problems = self.problems.clone();
        for file in &self.files {
            let Some(leaf) = file.pem.as_ref().and_then(PemContents::leaf) else {
                continue;
            };
            let served = self.pairings.iter().any(|p| p.cert_file == file.path);
            if leaf.is_ca && !served {
                continue;
            }
            match leaf.validity_at(now) {
                Validity::Valid => {}
                Validity::Expired => problems.push(Problem::new(
                    &file.path,
                    ProblemKind::Expired,
                    format!(
                        "certificate {} expired at {}",
                        untrusted(&leaf.subject),
                        rfc3339(leaf.not_after)
                    ),
                )),
                Validity::NotYetValid => problems.push(Problem::new(
                    &file.path,
                    ProblemKind::NotYetValid,
                    format!(
                        "certificate {} is not valid before {}",
                        untrusted(&leaf.subject),
                        rfc3339(leaf.not_before)
                    ),
                )),
            }
        }
        problems.sort_by(|a, b| (&a.file, a.kind).cmp(&(&b.file, b.kind)));
        problems
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Why the watcher re-read every volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RescanReason {
    /// The inotify queue overflowed: events were lost.
    QueueOverflow,
    /// A filesystem was mounted or unmounted somewhere on the node.
    MountTable,
    /// The slow periodic check that needs no event at all.
    Safety,
}

impl RescanReason {
    /// Stable label value for `mountlag_rescans_total{reason}`.
    pub fn label(self) -> &'static str {
        match self {
            RescanReason::QueueOverflow => "queue_overflow",
            RescanReason::MountTable => "mount_table",
            RescanReason::Safety => "safety",
        }
    }
}

#[cfg(test)]
mod proptests;
