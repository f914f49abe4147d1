//! What the index shows of its mounts: the `/status` entries and the per-state counts behind
//! `mountlag_mounts{state}`. Digests, versions and states only, never Secret bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use super::MountIndex;
use crate::reconcile::mount::{DiskView, MountState};

/// What `/status` and `mountlag status` show of one mount. No secret bytes: digests,
/// resourceVersions and states only.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MountStatus {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub controller: String,
    pub containers: Vec<String>,
    pub volume: String,
    pub path: PathBuf,
    pub secrets: Vec<SecretRefStatus>,
    pub state: &'static str,
    pub lag_seconds: Option<f64>,
    pub disk_generation: Option<String>,
    /// The leaf on disk (filled in by the agent from its last snapshot).
    pub certificate: Option<CertificateStatus>,
    /// What the controller serves (filled in by the agent from its last probe).
    pub served: Option<ServedStatus>,
    /// The outcome of the pod's last reload: verified, unverified, withheld, failed.
    pub last_reload: Option<&'static str>,
    /// Why (e.g. why a signal was withheld); omitted when there is no reload yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reload_message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    pub fingerprint_sha256: String,
    /// RFC 3339.
    pub not_after: String,
    pub days_to_expiry: i64,
    /// Expires within `expiry.warnBefore` (or has expired).
    pub expiring: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServedStatus {
    /// Leaf served without SNI.
    pub fingerprint_sha256: Option<String>,
    /// Served equals expected on every probed name; `None` before the first probe.
    #[serde(rename = "match")]
    pub matches: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRefStatus {
    pub name: String,
    pub resource_version: Option<String>,
}

impl MountIndex {
    pub fn count_by_state(&self) -> BTreeMap<MountState, usize> {
        let mut counts: BTreeMap<MountState, usize> =
            MountState::ALL.iter().map(|s| (*s, 0)).collect();
        for entry in self.mounts.values() {
            *counts.entry(entry.mount.state()).or_default() += 1;
        }
        counts
    }

    pub fn status(&self, now: Instant) -> Vec<MountStatus> {
        self.mounts
            .iter()
            .filter_map(|(key, entry)| {
                let pod = self.pods.get(&key.pod_uid)?;
                let containers = pod
                    .consumers(&key.volume)
                    .map(|(c, _)| c.name.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                Some(MountStatus {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                    pod_uid: pod.uid.clone(),
                    controller: pod.controller.clone(),
                    containers,
                    volume: key.volume.clone(),
                    path: entry.path.clone(),
                    secrets: entry
                        .secrets
                        .iter()
                        .map(|s| SecretRefStatus {
                            name: s.name.clone(),
                            resource_version: self
                                .secrets
                                .get(s)
                                .and_then(|e| e.view.as_ref())
                                .map(|v| v.resource_version.clone()),
                        })
                        .collect(),
                    state: entry.mount.state().label(),
                    lag_seconds: entry.mount.lag(now).map(|d| d.as_secs_f64()),
                    disk_generation: match entry.mount.disk() {
                        Some(DiskView::Files { generation, .. }) => generation.clone(),
                        _ => None,
                    },
                    certificate: None,
                    served: None,
                    last_reload: None,
                    last_reload_message: None,
                })
            })
            .collect()
    }
}
