//! What the index shows of its mounts: the `/status` entries and the per-state counts behind
//! `mountlag_mounts{state}`. Digests, versions and states only, never Secret bytes.
//!
//! ```text
//!  mount + pod + Secret versions ─┐                  same as kept? ── yes ─▶ the kept Arc again
//!  node's extras (leaf, reload) ──┴─▶ EntryFacts ──▶      │
//!                                     (borrowed)          no ─▶ build ─▶ kept, and `rebuilt`
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Instant;

use super::{MountEntry, MountIndex, MountKey, SecretKey};
use crate::pod::ControllerPod;
use crate::reconcile::mount::{DiskView, MountState};
use crate::reconcile::reload::{ExpectedLeaf, PodReload};

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

    /// Every mount's entry as of `now`, none kept from before (tests, and the first publication).
    pub fn status(&self, now: Instant) -> Vec<Arc<MountStatus>> {
        let mut kept = KeptStatus::default();
        self.render_status(now, |_, _| MountExtras::default(), &mut kept)
            .mounts
    }

    /// Every mount's entry as of `now`, with what the node adds (`extras`, by volume path and
    /// pod uid). An entry whose facts are all as `kept` shows them is published again as it
    /// is: comparing borrows and allocates nothing, building clones a dozen strings. At 1,000
    /// mounts rebuilding every entry on each publication (once a second while probes report)
    /// was most of the agent's idle CPU (docs/benchmarks.md, session 17).
    pub fn render_status<'a>(
        &'a self,
        now: Instant,
        extras: impl Fn(&Path, &str) -> MountExtras<'a>,
        kept: &mut KeptStatus,
    ) -> RenderedStatus {
        // Both are ordered by mount key: walked side by side, no lookup per mount.
        let mut previous = std::mem::take(&mut kept.entries).into_iter().peekable();
        let mut rendered = RenderedStatus::default();
        for (key, entry) in &self.mounts {
            let Some(pod) = self.pods.get(&key.pod_uid) else {
                continue;
            };
            while previous.next_if(|(gone, _)| gone < key).is_some() {}
            let same_mount = previous.next_if(|(kept_key, _)| kept_key == key);
            let facts = EntryFacts {
                index: self,
                key,
                entry,
                pod,
                lag_seconds: entry.mount.lag(now).map(|d| d.as_secs_f64()),
                extras: extras(&entry.path, &key.pod_uid),
            };
            let (key, shown) = match same_mount {
                Some((kept_key, shown)) if facts.shown_by(&shown) => (kept_key, shown),
                stale => {
                    let built = facts.build();
                    rendered.rebuilt.push(RebuiltEntry {
                        status: Arc::clone(&built.status),
                        leaf_not_after: built.leaf_not_after,
                    });
                    let key = stale.map_or_else(|| key.clone(), |(kept_key, _)| kept_key);
                    (key, built)
                }
            };
            rendered.mounts.push(Arc::clone(&shown.status));
            kept.entries.push((key, shown));
        }
        rendered
    }
}

/// What the node adds to a mount's entry from its own state.
#[derive(Debug, Clone, Copy, Default)]
pub struct MountExtras<'a> {
    /// The first leaf of the volume's last snapshot.
    pub leaf: Option<&'a ExpectedLeaf>,
    /// Unix seconds of today, and how long before expiry a leaf is `expiring`.
    pub today: i64,
    pub warn_before_seconds: i64,
    /// The pod's reload state.
    pub reload: Option<&'a PodReload>,
}

/// The entries of the last publication and what each was built from.
#[derive(Debug, Default)]
pub struct KeptStatus {
    /// In mount key order.
    entries: Vec<(MountKey, KeptEntry)>,
}

#[derive(Debug)]
struct KeptEntry {
    /// The pod the entry was built from: pods are replaced, never changed in place, so the
    /// same allocation means the same names, controller and containers. Weak: a replaced pod's
    /// contents are freed at once (a renewal wave replaces every pod with its nudge), and its
    /// allocation, which this keeps, cannot be reused by another pod.
    pod: Weak<ControllerPod>,
    leaf_not_after: Option<i64>,
    status: Arc<MountStatus>,
}

/// One publication's entries, in mount order, and those built anew for it (new mounts and
/// changed ones): the gauges derived from an entry need setting only when it is rebuilt.
#[derive(Debug, Default)]
pub struct RenderedStatus {
    pub mounts: Vec<Arc<MountStatus>>,
    pub rebuilt: Vec<RebuiltEntry>,
}

#[derive(Debug)]
pub struct RebuiltEntry {
    pub status: Arc<MountStatus>,
    /// Unix seconds of the leaf on disk, when there is one.
    pub leaf_not_after: Option<i64>,
}

/// The borrowed facts one entry is made of.
struct EntryFacts<'a> {
    index: &'a MountIndex,
    key: &'a MountKey,
    entry: &'a MountEntry,
    pod: &'a Arc<ControllerPod>,
    lag_seconds: Option<f64>,
    extras: MountExtras<'a>,
}

impl EntryFacts<'_> {
    fn resource_version(&self, secret: &SecretKey) -> Option<&str> {
        self.index
            .secrets
            .get(secret)
            .and_then(|e| e.view.as_ref())
            .map(|v| v.resource_version.as_str())
    }

    fn disk_generation(&self) -> Option<&str> {
        match self.entry.mount.disk() {
            Some(DiskView::Files { generation, .. }) => generation.as_deref(),
            _ => None,
        }
    }

    fn days_to_expiry(&self, leaf: &ExpectedLeaf) -> (i64, bool) {
        let left = leaf.not_after - self.extras.today;
        (
            left.div_euclid(86_400),
            left <= self.extras.warn_before_seconds,
        )
    }

    /// Whether `kept` shows exactly these facts.
    fn shown_by(&self, kept: &KeptEntry) -> bool {
        let shown = &kept.status;
        let certificate_same = match (self.extras.leaf, &shown.certificate) {
            (None, None) => true,
            (Some(leaf), Some(cert)) => {
                let (days, expiring) = self.days_to_expiry(leaf);
                kept.leaf_not_after == Some(leaf.not_after)
                    && cert.fingerprint_sha256 == leaf.fingerprint
                    && cert.days_to_expiry == days
                    && cert.expiring == expiring
            }
            _ => false,
        };
        let reload_same = match (self.extras.reload, &shown.served) {
            (None, None) => shown.last_reload.is_none() && shown.last_reload_message.is_none(),
            (Some(reload), Some(served)) => {
                served.fingerprint_sha256.as_deref() == reload.served_fingerprint()
                    && served.matches == reload.served_matches()
                    && shown.last_reload == reload.last_result().map(|r| r.label())
                    && shown.last_reload_message.as_deref() == reload.last_message()
            }
            _ => false,
        };
        std::ptr::eq(kept.pod.as_ptr(), Arc::as_ptr(self.pod))
            && shown.path == self.entry.path
            && shown.state == self.entry.mount.state().label()
            && shown.lag_seconds == self.lag_seconds
            && shown.disk_generation.as_deref() == self.disk_generation()
            && shown.secrets.len() == self.entry.secrets.len()
            && shown
                .secrets
                .iter()
                .zip(&self.entry.secrets)
                .all(|(s, key)| {
                    s.name == key.name
                        && s.resource_version.as_deref() == self.resource_version(key)
                })
            && certificate_same
            && reload_same
    }

    fn build(&self) -> KeptEntry {
        let pod = self.pod;
        let containers = pod
            .consumers(&self.key.volume)
            .map(|(c, _)| c.name.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let certificate = self.extras.leaf.map(|leaf| {
            let (days_to_expiry, expiring) = self.days_to_expiry(leaf);
            CertificateStatus {
                fingerprint_sha256: leaf.fingerprint.clone(),
                not_after: time::OffsetDateTime::from_unix_timestamp(leaf.not_after)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_default(),
                days_to_expiry,
                expiring,
            }
        });
        let reload = self.extras.reload;
        let status = MountStatus {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            controller: pod.controller.clone(),
            containers,
            volume: self.key.volume.clone(),
            path: self.entry.path.clone(),
            secrets: self
                .entry
                .secrets
                .iter()
                .map(|s| SecretRefStatus {
                    name: s.name.clone(),
                    resource_version: self.resource_version(s).map(str::to_owned),
                })
                .collect(),
            state: self.entry.mount.state().label(),
            lag_seconds: self.lag_seconds,
            disk_generation: self.disk_generation().map(str::to_owned),
            certificate,
            served: reload.map(|reload| ServedStatus {
                fingerprint_sha256: reload.served_fingerprint().map(str::to_owned),
                matches: reload.served_matches(),
            }),
            last_reload: reload.and_then(|r| r.last_result()).map(|r| r.label()),
            last_reload_message: reload.and_then(|r| r.last_message()).map(str::to_owned),
        };
        KeptEntry {
            pod: Arc::downgrade(pod),
            leaf_not_after: self.extras.leaf.map(|leaf| leaf.not_after),
            status: Arc::new(status),
        }
    }
}
