//! The mount index: which pods, Secrets and volume directories exist, and which mount each
//! change concerns. It owns every [`Mount`] and forwards inputs to the ones affected.
//!
//! ```text
//!  ControllerPod ──▶ mounts (pod uid, volume) ──▶ volume dir on disk
//!        │                  ▲        ▲
//!        └─▶ Secret refs ───┘        └── DiskView (watcher + snapshot)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::expected::{Expected, SecretLookup, expected_payload};
use crate::pod::ControllerPod;
use crate::secret::SecretView;
use crate::volume::KubeletRoot;

use super::Deadlines;
use super::mount::{Action, DiskView, Input, Mount, MountSpec, MountState, PodRef, Thresholds};

mod status;

pub use status::{
    CertificateStatus, KeptStatus, MountExtras, MountStatus, RebuiltEntry, RenderedStatus,
    SecretRefStatus, ServedStatus,
};

/// A Secret by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretKey {
    pub namespace: String,
    pub name: String,
}

/// A mount: one secret or projected volume of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MountKey {
    pub pod_uid: String,
    pub volume: String,
}

#[derive(Debug, Default)]
struct SecretEntry {
    view: Option<SecretView>,
    /// The watch has delivered its first list.
    synced: bool,
    /// The watch is currently connected.
    healthy: bool,
}

#[derive(Debug)]
struct MountEntry {
    mount: Mount,
    path: PathBuf,
    secrets: Vec<SecretKey>,
}

#[derive(Debug)]
pub struct MountIndex {
    kubelet: KubeletRoot,
    limits: Thresholds,
    /// Shared with the node's reload and probe actions: one copy of each pod.
    pods: BTreeMap<String, Arc<ControllerPod>>,
    /// Containers each pod's controller profile watches (`None`: all).
    watched_containers: BTreeMap<String, Option<Vec<String>>>,
    secrets: BTreeMap<SecretKey, SecretEntry>,
    mounts: BTreeMap<MountKey, MountEntry>,
    /// The mounts each Secret feeds (the reverse of `MountEntry::secrets`), sorted: a Secret
    /// event touches its mounts without scanning all of them. Usually one or two, so a sorted
    /// `Vec` (a set would take a 0.5 KiB tree node per Secret); an entry goes with its last mount.
    mounts_by_secret: BTreeMap<SecretKey, Vec<MountKey>>,
    by_path: HashMap<PathBuf, MountKey>,
    /// Each mount's deadline (a nudge, a stuck report: only mounts out of sync have one), set
    /// again whenever the mount is stepped.
    deadlines: Deadlines<MountKey>,
    pods_healthy: bool,
    /// Whether volume directories are read at all (false: a probe-only install, no kubelet
    /// root to see; every mount is `Unchecked` and no path is watched).
    disk_checked: bool,
}

impl MountIndex {
    pub fn new(kubelet: KubeletRoot, limits: Thresholds) -> Self {
        Self {
            kubelet,
            limits,
            pods: BTreeMap::new(),
            watched_containers: BTreeMap::new(),
            secrets: BTreeMap::new(),
            mounts: BTreeMap::new(),
            mounts_by_secret: BTreeMap::new(),
            by_path: HashMap::new(),
            deadlines: Deadlines::default(),
            pods_healthy: true,
            disk_checked: true,
        }
    }

    /// An index that never reads disk: mounts are known from the API alone (the agent found no
    /// kubelet root, as in a probe-only install).
    pub fn without_disk(mut self) -> Self {
        self.disk_checked = false;
        self
    }

    pub fn disk_checked(&self) -> bool {
        self.disk_checked
    }

    pub fn limits(&self) -> &Thresholds {
        &self.limits
    }

    /// Adds or updates a controller pod; `containers` limits which of its containers count.
    pub fn upsert_pod(
        &mut self,
        pod: impl Into<Arc<ControllerPod>>,
        containers: Option<Vec<String>>,
        now: Instant,
    ) -> Vec<Action> {
        let pod = pod.into();
        let uid = pod.uid.clone();
        let wanted = self.mount_specs(&pod, containers.as_deref());
        // The pod's mounts are one range of the map (keys sort by pod first).
        let first = MountKey {
            pod_uid: uid.clone(),
            volume: String::new(),
        };
        let stale: Vec<MountKey> = self
            .mounts
            .range(first..)
            .map(|(k, _)| k)
            .take_while(|k| k.pod_uid == uid)
            .filter(|k| !wanted.iter().any(|(key, _, _)| key == *k))
            .cloned()
            .collect();
        // Only the Secrets of this pod's mounts, old and new, can have lost their last mount.
        let mut maybe_unreferenced = Vec::new();
        for key in stale {
            maybe_unreferenced.extend(self.drop_mount(&key));
        }
        let annotation = pod.resync_annotation.clone();
        self.pods.insert(uid.clone(), pod);
        self.watched_containers.insert(uid, containers);
        let mut actions = Vec::new();
        for (key, spec, secrets) in wanted {
            for secret in &secrets {
                self.secrets.entry(secret.clone()).or_default();
            }
            maybe_unreferenced.extend(secrets.iter().cloned());
            if !self.mounts.contains_key(&key) {
                let path = self
                    .kubelet
                    .volume_dir(&key.pod_uid, spec.kind, &key.volume);
                if self.disk_checked {
                    self.by_path.insert(path.clone(), key.clone());
                }
                for secret in &secrets {
                    let mounts = self.mounts_by_secret.entry(secret.clone()).or_default();
                    if let Err(at) = mounts.binary_search(&key) {
                        mounts.insert(at, key.clone());
                    }
                }
                self.mounts.insert(
                    key.clone(),
                    MountEntry {
                        mount: Mount::new(spec.mount),
                        path,
                        secrets,
                    },
                );
                if !self.disk_checked {
                    actions.extend(self.feed(&key, Input::Disk(DiskView::NotChecked), now));
                }
                actions.extend(self.refresh_expected(&key, now));
                actions.extend(self.feed(&key, Input::ApiHealthy(self.api_healthy_for(&key)), now));
            }
            actions.extend(self.feed(&key, Input::ResyncAnnotation(annotation.clone()), now));
        }
        self.forget_unreferenced_secrets(maybe_unreferenced);
        self.one_nudge_per_pod(actions, now)
    }

    pub fn remove_pod(&mut self, uid: &str) {
        self.pods.remove(uid);
        self.watched_containers.remove(uid);
        let first = MountKey {
            pod_uid: uid.to_string(),
            volume: String::new(),
        };
        let keys: Vec<MountKey> = self
            .mounts
            .range(first..)
            .map(|(k, _)| k)
            .take_while(|k| k.pod_uid == uid)
            .cloned()
            .collect();
        let mut maybe_unreferenced = Vec::new();
        for key in keys {
            maybe_unreferenced.extend(self.drop_mount(&key));
        }
        self.forget_unreferenced_secrets(maybe_unreferenced);
    }

    pub fn pod_uids(&self) -> impl Iterator<Item = &str> {
        self.pods.keys().map(String::as_str)
    }

    /// Whether the pod watch is connected (false from its failure until it lists again).
    pub fn pods_healthy(&self) -> bool {
        self.pods_healthy
    }

    /// Every Secret watch has listed and none has failed since: neither
    /// [`Self::failing_secret_watches`] nor [`Self::unsynced_secrets`] names one.
    pub fn secret_watches_current(&self) -> bool {
        self.secrets.values().all(|s| s.synced && s.healthy)
    }

    /// Secrets once synced whose watch failed and has not listed or delivered since (one that
    /// never listed is still unsynced).
    pub fn failing_secret_watches(&self) -> Vec<SecretKey> {
        self.secrets
            .iter()
            .filter(|(_, entry)| entry.synced && !entry.healthy)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The pod watch (dis)connected: while down, no Event or nudge is raised.
    pub fn set_pods_healthy(&mut self, healthy: bool, now: Instant) -> Vec<Action> {
        if self.pods_healthy == healthy {
            // Every pod event says so: telling each mount again cost O(mounts) per event, and a
            // renewal of 1,000 Secrets brings 1,000 pod updates (the nudges).
            return Vec::new();
        }
        self.pods_healthy = healthy;
        let actions = self.refresh_health(now);
        self.one_nudge_per_pod(actions, now)
    }

    /// A Secret watch delivered the current state: `None` when the Secret does not exist.
    pub fn secret_observed(
        &mut self,
        key: &SecretKey,
        view: Option<SecretView>,
        now: Instant,
    ) -> Vec<Action> {
        let Some(entry) = self.secrets.get_mut(key) else {
            return Vec::new();
        };
        entry.view = view;
        entry.synced = true;
        entry.healthy = true;
        let mut actions = Vec::new();
        for mount in self.mounts_of_secret(key) {
            actions.extend(self.refresh_expected(&mount, now));
            actions.extend(self.feed(&mount, Input::ApiHealthy(self.api_healthy_for(&mount)), now));
        }
        self.one_nudge_per_pod(actions, now)
    }

    /// A Secret watch failed (or recovered without news).
    pub fn secret_watch_health(
        &mut self,
        key: &SecretKey,
        healthy: bool,
        now: Instant,
    ) -> Vec<Action> {
        let Some(entry) = self.secrets.get_mut(key) else {
            return Vec::new();
        };
        entry.healthy = healthy;
        let mut actions = Vec::new();
        for mount in self.mounts_of_secret(key) {
            actions.extend(self.feed(&mount, Input::ApiHealthy(self.api_healthy_for(&mount)), now));
        }
        self.one_nudge_per_pod(actions, now)
    }

    /// What the disk holds in a volume directory; unknown paths are ignored.
    pub fn disk_observed(&mut self, path: &Path, disk: DiskView, now: Instant) -> Vec<Action> {
        let Some(key) = self.by_path.get(path).cloned() else {
            return Vec::new();
        };
        let actions = self.feed(&key, Input::Disk(disk), now);
        self.one_nudge_per_pod(actions, now)
    }

    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let due = self.deadlines.due(now);
        let actions = due
            .iter()
            .flat_map(|k| self.feed(k, Input::Tick, now))
            .collect();
        self.one_nudge_per_pod(actions, now)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let next = self.deadlines.first();
        debug_assert_eq!(
            next,
            self.mounts
                .values()
                .filter_map(|e| e.mount.next_deadline(&self.limits))
                .min(),
            "a mount changed without its deadline"
        );
        next
    }

    /// Every Secret some tracked mount depends on: one watch each.
    pub fn wanted_secrets(&self) -> BTreeSet<SecretKey> {
        self.secrets.keys().cloned().collect()
    }

    /// Every volume directory to watch on disk.
    pub fn volume_paths(&self) -> BTreeSet<PathBuf> {
        self.by_path.keys().cloned().collect()
    }

    /// Whether every referenced Secret has been listed once.
    pub fn secrets_synced(&self) -> bool {
        self.secrets.values().all(|s| s.synced)
    }

    /// Secrets not yet listed, for the readiness message.
    pub fn unsynced_secrets(&self) -> Vec<&SecretKey> {
        self.secrets
            .iter()
            .filter(|(_, s)| !s.synced)
            .map(|(k, _)| k)
            .collect()
    }

    /// Whether every mount has seen its volume directory at least once.
    pub fn disk_scanned(&self) -> bool {
        self.mounts.values().all(|e| e.mount.disk().is_some())
    }

    /// The pod's mounts known to be behind the API (a rotation in progress).
    pub fn lagging_volumes(&self, pod_uid: &str) -> BTreeSet<String> {
        self.mounts
            .iter()
            .filter(|(key, entry)| {
                key.pod_uid == pod_uid
                    && matches!(
                        entry.mount.state(),
                        MountState::Pending | MountState::Nudged | MountState::Stuck
                    )
            })
            .map(|(key, _)| key.volume.clone())
            .collect()
    }

    /// Pods with a mount fed by `secret`.
    pub fn pods_of_secret(&self, secret: &SecretKey) -> BTreeSet<String> {
        self.mounts_by_secret
            .get(secret)
            .into_iter()
            .flatten()
            .map(|k| k.pod_uid.clone())
            .collect()
    }

    /// The Secrets feeding a pod's mounts, as the API has them now.
    /// The pod's Secrets as the API has them, once every one of them has listed (`None`
    /// before): what a rolling restart's value is computed from, so that every node computes it
    /// from the same complete set. A Secret that does not exist is left out.
    pub fn secrets_of_pod_when_synced(&self, pod_uid: &str) -> Option<Vec<&SecretView>> {
        let mut views = Vec::new();
        for key in self.secret_keys_of_pod(pod_uid) {
            let entry = self.secrets.get(key)?;
            if !entry.synced {
                return None;
            }
            views.extend(entry.view.as_ref());
        }
        Some(views)
    }

    pub fn secrets_of_pod(&self, pod_uid: &str) -> Vec<&SecretView> {
        self.secret_keys_of_pod(pod_uid)
            .into_iter()
            .filter_map(|k| self.secrets.get(k)?.view.as_ref())
            .collect()
    }

    /// The Secrets the pod's mounts use, each once.
    fn secret_keys_of_pod(&self, pod_uid: &str) -> BTreeSet<&SecretKey> {
        self.mounts
            .iter()
            .filter(|(k, _)| k.pod_uid == pod_uid)
            .flat_map(|(_, e)| e.secrets.iter())
            .collect()
    }

    /// The mount a volume directory belongs to.
    pub fn mount_at(&self, path: &Path) -> Option<&MountKey> {
        self.by_path.get(path)
    }

    /// Whether the mount at `path` has been read from disk at least once.
    /// The directories of the mounts whose volume has not been read yet: a walk of the mounts
    /// that hashes nothing (readiness asks on every publication; once every volume has been
    /// read, this finds none).
    pub fn unscanned_paths(&self) -> impl Iterator<Item = &Path> {
        self.mounts
            .values()
            .filter(|e| e.mount.disk().is_none())
            .map(|e| e.path.as_path())
    }

    pub fn volume_scanned(&self, path: &Path) -> bool {
        self.by_path
            .get(path)
            .and_then(|key| self.mounts.get(key))
            .is_some_and(|e| e.mount.disk().is_some())
    }

    pub fn mount_count(&self) -> usize {
        self.mounts.len()
    }

    /// The mounts of `pod` that its profile watches, with their specs and Secret references.
    fn mount_specs(
        &self,
        pod: &ControllerPod,
        containers: Option<&[String]>,
    ) -> Vec<(MountKey, SpecWithKind, Vec<SecretKey>)> {
        let watched = |name: &str| containers.is_none_or(|list| list.iter().any(|c| c == name));
        pod.volumes
            .iter()
            .filter_map(|volume| {
                let consumers: Vec<_> = pod
                    .consumers(&volume.name)
                    .filter(|(c, _)| watched(&c.name))
                    .collect();
                if consumers.is_empty() {
                    return None;
                }
                let subpath_containers: Vec<String> = consumers
                    .iter()
                    .filter(|(_, m)| m.sub_path.is_some())
                    .map(|(c, _)| c.name.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let subpath_only = consumers.iter().all(|(_, m)| m.sub_path.is_some());
                let key = MountKey {
                    pod_uid: pod.uid.clone(),
                    volume: volume.name.clone(),
                };
                let secrets = volume
                    .sources
                    .iter()
                    .map(|s| SecretKey {
                        namespace: pod.namespace.clone(),
                        name: s.secret.clone(),
                    })
                    .collect();
                let spec = SpecWithKind {
                    kind: volume.kind,
                    mount: MountSpec {
                        pod: PodRef {
                            namespace: pod.namespace.clone(),
                            name: pod.name.clone(),
                            uid: pod.uid.clone(),
                        },
                        volume: volume.name.clone(),
                        subpath_containers,
                        subpath_only,
                    },
                };
                Some((key, spec, secrets))
            })
            .collect()
    }

    /// Removes a mount; returns the Secrets it used.
    fn drop_mount(&mut self, key: &MountKey) -> Vec<SecretKey> {
        let Some(entry) = self.mounts.remove(key) else {
            return Vec::new();
        };
        self.deadlines.set(key, None);
        self.by_path.remove(&entry.path);
        for secret in &entry.secrets {
            if let Some(mounts) = self.mounts_by_secret.get_mut(secret) {
                mounts.retain(|mount| mount != key);
                if mounts.is_empty() {
                    self.mounts_by_secret.remove(secret);
                }
            }
        }
        entry.secrets
    }

    /// Drops those of `candidates` no mount uses any more: those `mounts_by_secret` no longer
    /// names (it loses a Secret with its last mount). Only the Secrets of the pod at hand are
    /// candidates: a walk of every Secret (or every mount) on every pod update made a start
    /// with 1,000 pods quadratic.
    fn forget_unreferenced_secrets(&mut self, candidates: Vec<SecretKey>) {
        for key in candidates {
            if !self.mounts_by_secret.contains_key(&key) {
                self.secrets.remove(&key);
            }
        }
    }

    fn mounts_of_secret(&self, key: &SecretKey) -> Vec<MountKey> {
        self.mounts_by_secret
            .get(key)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    fn api_healthy_for(&self, key: &MountKey) -> bool {
        self.pods_healthy
            && self.mounts.get(key).is_some_and(|e| {
                e.secrets.iter().all(|s| {
                    self.secrets
                        .get(s)
                        .is_some_and(|entry| entry.synced && entry.healthy)
                })
            })
    }

    fn refresh_health(&mut self, now: Instant) -> Vec<Action> {
        let keys: Vec<MountKey> = self.mounts.keys().cloned().collect();
        keys.iter()
            .flat_map(|k| {
                let healthy = self.api_healthy_for(k);
                self.feed(k, Input::ApiHealthy(healthy), now)
            })
            .collect()
    }

    fn refresh_expected(&mut self, key: &MountKey, now: Instant) -> Vec<Action> {
        let Some(expected) = self.expected_for(key) else {
            return Vec::new();
        };
        self.feed(key, Input::Expected(expected), now)
    }

    fn expected_for(&self, key: &MountKey) -> Option<Expected> {
        let pod = self.pods.get(&key.pod_uid)?;
        let volume = pod.volumes.iter().find(|v| v.name == key.volume)?;
        Some(expected_payload(volume, |name| {
            let secret = SecretKey {
                namespace: pod.namespace.clone(),
                name: name.to_string(),
            };
            match self.secrets.get(&secret) {
                Some(SecretEntry {
                    synced: true,
                    view: Some(view),
                    ..
                }) => SecretLookup::Found(view),
                Some(SecretEntry { synced: true, .. }) => SecretLookup::Missing,
                _ => SecretLookup::NotSynced,
            }
        }))
    }

    fn feed(&mut self, key: &MountKey, input: Input, now: Instant) -> Vec<Action> {
        let limits = self.limits_for(&key.pod_uid);
        let Some(entry) = self.mounts.get_mut(key) else {
            return Vec::new();
        };
        let actions = entry.mount.step(input, now, &limits);
        self.deadlines
            .set(key, entry.mount.next_deadline(&self.limits));
        actions
    }

    fn limits_for(&self, pod_uid: &str) -> Thresholds {
        let terminating = self.pods.get(pod_uid).is_some_and(|p| p.terminating);
        Thresholds {
            nudge_enabled: self.limits.nudge_enabled && !terminating,
            ..self.limits
        }
    }

    /// Every public entry point ends here: the nudges its mounts decided on become one per pod
    /// (kubelet remounts all of a pod's volumes on one sync, so one pod update serves them
    /// all), joined by the pod's other volumes that lag and still wait for their first nudge.
    /// With `nudge.after` as the window, Secrets of one pod renewed within it cost one PATCH.
    fn one_nudge_per_pod(&mut self, actions: Vec<Action>, now: Instant) -> Vec<Action> {
        if !actions.iter().any(|a| matches!(a, Action::Nudge { .. })) {
            return actions;
        }
        let mut out: Vec<Action> = Vec::with_capacity(actions.len());
        let mut nudge_of_pod: BTreeMap<String, usize> = BTreeMap::new();
        for action in actions {
            match action {
                Action::Nudge { pod, volumes } => match nudge_of_pod.get(&pod.uid) {
                    Some(&at) => {
                        if let Some(Action::Nudge {
                            volumes: joined, ..
                        }) = out.get_mut(at)
                        {
                            joined.extend(volumes);
                        }
                    }
                    None => {
                        nudge_of_pod.insert(pod.uid.clone(), out.len());
                        out.push(Action::Nudge { pod, volumes });
                    }
                },
                other => out.push(other),
            }
        }
        for (uid, at) in nudge_of_pod {
            let limits = self.limits_for(&uid);
            let Some(Action::Nudge { volumes, .. }) = out.get_mut(at) else {
                continue;
            };
            let of_pod = self
                .mounts
                .range_mut(
                    MountKey {
                        pod_uid: uid.clone(),
                        volume: String::new(),
                    }..,
                )
                .take_while(|(k, _)| k.pod_uid == uid);
            for (key, entry) in of_pod {
                if volumes.iter().any(|v| v.volume == key.volume) {
                    continue;
                }
                let joined = entry.mount.join_nudge(now, &limits);
                if joined.is_some() {
                    self.deadlines
                        .set(key, entry.mount.next_deadline(&self.limits));
                }
                volumes.extend(joined);
            }
            volumes.sort_by(|a, b| a.volume.cmp(&b.volume));
        }
        out
    }
}

/// A mount spec with the plugin kind that decides its directory.
#[derive(Debug)]
struct SpecWithKind {
    kind: crate::volume::VolumeKind,
    mount: MountSpec,
}

/// Default thresholds, as the config's defaults (used by tests and benches).
pub const DEFAULT_THRESHOLDS: Thresholds = Thresholds {
    nudge_enabled: true,
    nudge_after: Duration::from_millis(250),
    nudge_retry_after: Duration::from_secs(2),
    stuck_after: Duration::from_secs(120),
};

#[cfg(test)]
mod tests;
