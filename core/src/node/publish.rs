//! What the node publishes: the `/status` snapshot and the gauges derived from the same state,
//! rebuilt at most every `publish_every` and only when something changed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::reconcile::{KeptStatus, MountExtras, MountState, RenderedStatus};
use crate::status::StatusSnapshot;

use super::{HostState, Node, Now};

/// How often the status is rebuilt at most: it costs O(mounts) (~8 ms at 1,000), and /status,
/// /readyz and `mountlag status --watch` do not need fresher data.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// The spacing grows with the mounts: 1 ms per mount (1 s at 1,000). Between rotations every
/// periodic check changes a pod's status, so at 1,000 mounts republishing every 100 ms was
/// most of the agent's idle CPU (~70 ms/s, docs/benchmarks.md); at ~7 µs per mount per
/// rebuild this keeps it under 1% of a core. The same holds while the node waits (start, an
/// API outage, when every failing watch's retry changes the status: 10–20% of a core at 1,000
/// mounts with `publish_every`). Only the turn to ready keeps `publish_every`, so readiness
/// is never held back.
pub const PUBLISH_SPACING_PER_MOUNT: Duration = Duration::from_millis(1);

/// One publication: the status and the gauges that go with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub status: StatusSnapshot,
    /// `mountlag_mounts{state}`, every state present.
    pub mounts_by_state: BTreeMap<MountState, usize>,
    /// `mountlag_controller_pods{controller}`, every configured controller present.
    pub controller_pods: BTreeMap<String, usize>,
    /// `mountlag_served_certificate_match`, per mount Secret with a known answer: those of
    /// the mounts whose entry changed since the last publication (the gauges keep the others),
    /// and every route's.
    pub served_matches: Vec<ServedMatch>,
    /// `mountlag_certificate_not_after_seconds{source="disk"}`: (namespace, Secret, Unix time),
    /// of the mounts whose entry changed since the last publication.
    pub not_after_on_disk: Vec<(String, String, i64)>,
    /// Volume directories under an inotify watch.
    pub tracked_volumes: usize,
    /// `mountlag_tls_hosts{controller, state}`, every state of every profile with routes.
    pub tls_hosts: BTreeMap<(String, HostState), usize>,
    /// `mountlag_cert_manager_findings`: the findings this node reports.
    pub cert_manager_findings: Vec<super::FindingSeries>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedMatch {
    pub namespace: String,
    pub pod: String,
    pub secret: String,
    pub matches: bool,
}

impl Node {
    /// The publication, when one is due: something changed and the last one is
    /// `publish_every` old.
    pub fn publish_if_due(&mut self, now: Now) -> Option<Publication> {
        let due = self.next_publication().is_some_and(|at| now.at >= at);
        due.then(|| self.publish(now))
    }

    /// When the next publication is due, if something is unpublished.
    pub(super) fn next_publication(&self) -> Option<Instant> {
        if !self.unpublished {
            return None;
        }
        let Some(last) = self.published_at else {
            return Some(self.created_at);
        };
        let turns_ready = !self.published_ready && self.would_be_ready();
        let spacing = if turns_ready {
            self.settings.publish_every
        } else {
            let per_mount = PUBLISH_SPACING_PER_MOUNT
                .saturating_mul(u32::try_from(self.index.mount_count()).unwrap_or(u32::MAX));
            self.settings.publish_every.max(per_mount)
        };
        Some(last + spacing)
    }

    /// `waiting_for().is_empty()` without building the reasons: asked on every turn of the
    /// loop while not ready, and it stops at the first thing still awaited (during an outage,
    /// the first Secret).
    fn would_be_ready(&self) -> bool {
        self.pods_listed
            && self.index.pods_healthy()
            && self.index.secret_watches_current()
            && self.route_kinds.values().all(|listed| *listed)
            && self.routes_secrets_synced()
            && self.unscanned_volumes() == 0
    }

    /// Tracked volume directories not read yet. The tracked directories are the index's (less
    /// those that cannot be watched), so the index's unread mounts are walked, not the tracked
    /// set looked up path by path: that was a tenth of a large node's idle CPU.
    fn unscanned_volumes(&self) -> usize {
        let unscanned = self
            .index
            .unscanned_paths()
            .filter(|p| self.tracked.contains(*p))
            .count();
        debug_assert_eq!(
            unscanned,
            self.tracked
                .iter()
                .filter(|p| !self.index.volume_scanned(p))
                .count(),
            "a tracked directory the index does not know"
        );
        unscanned
    }

    fn publish(&mut self, now: Now) -> Publication {
        self.unpublished = false;
        self.published_at = Some(now.at);
        let waiting_for = self.waiting_for();
        self.published_ready = waiting_for.is_empty();
        debug_assert_eq!(
            self.would_be_ready(),
            self.published_ready,
            "{waiting_for:?}"
        );
        let today = now.utc.unix_timestamp();
        let mut kept = std::mem::take(&mut self.kept_status);
        let rendered = self.render_mounts(now, &mut kept);
        self.kept_status = kept;
        let mut served_matches = Vec::new();
        let mut not_after_on_disk = Vec::new();
        for rebuilt in &rendered.rebuilt {
            let mount = &rebuilt.status;
            if let Some(matches) = mount.served.as_ref().and_then(|served| served.matches) {
                served_matches.extend(mount.secrets.iter().map(|secret| ServedMatch {
                    namespace: mount.namespace.clone(),
                    pod: mount.pod.clone(),
                    secret: secret.name.clone(),
                    matches,
                }));
            }
            if let Some(not_after) = rebuilt.leaf_not_after {
                not_after_on_disk.extend(
                    mount
                        .secrets
                        .iter()
                        .map(|secret| (mount.namespace.clone(), secret.name.clone(), not_after)),
                );
            }
        }
        let mounts = rendered.mounts;
        let mut controller_pods: BTreeMap<String, usize> = self
            .settings
            .controllers
            .iter()
            .map(|c| (c.name.clone(), 0))
            .collect();
        for pod in self.pods.values() {
            *controller_pods.entry(pod.controller.clone()).or_default() += 1;
        }
        served_matches.extend(self.route_served_matches());
        let hosts = self.host_statuses(today);
        let tls_hosts = self.host_counts(&hosts);
        Publication {
            status: StatusSnapshot {
                node: self.settings.node_name.clone(),
                ready: waiting_for.is_empty(),
                waiting_for,
                disk: self.settings.disk.clone(),
                mounts,
                hosts,
                cert_manager: self.cert_manager_status(),
            },
            mounts_by_state: self.index.count_by_state(),
            controller_pods,
            served_matches,
            not_after_on_disk,
            tracked_volumes: self.tracked.len(),
            tls_hosts,
            cert_manager_findings: self.cert_manager_series(),
        }
    }

    /// The `/status` entries of every mount, reusing those of `kept` whose facts are unchanged.
    fn render_mounts(&self, now: Now, kept: &mut KeptStatus) -> RenderedStatus {
        let today = now.utc.unix_timestamp();
        let warn_before_seconds =
            i64::try_from(self.settings.reload.expiry_warn_before.as_secs()).unwrap_or(i64::MAX);
        self.index.render_status(
            now.at,
            |path, pod_uid| MountExtras {
                leaf: self.leaves_on_disk.get(path).and_then(|l| l.first()),
                today,
                warn_before_seconds,
                reload: self.reloads.get(pod_uid),
            },
            kept,
        )
    }

    /// The entries a publication at `now` would show if none were kept from before.
    #[cfg(test)]
    pub(super) fn mounts_rebuilt_whole(&self, now: Now) -> Vec<crate::reconcile::MountStatus> {
        let rendered = self.render_mounts(now, &mut KeptStatus::default());
        rendered.mounts.iter().map(|m| (**m).clone()).collect()
    }

    /// Why the agent is not ready: empty once pods are listed, every Secret watch has listed
    /// and every tracked volume has been read, and while no watch is failing (the view of the
    /// API is stale then: nothing is judged, and kubectl should show it).
    pub fn waiting_for(&self) -> Vec<String> {
        let mut waiting = Vec::new();
        if !self.pods_listed {
            waiting.push("pods not listed yet".to_string());
        } else if !self.index.pods_healthy() {
            waiting.push("the pod watch is failing (API unreachable?); retrying".to_string());
        }
        let failing = self.index.failing_secret_watches();
        if !failing.is_empty() {
            waiting.push(format!(
                "{} Secret watch(es) failing: {}",
                failing.len(),
                failing
                    .iter()
                    .take(5)
                    .map(|k| format!("{}/{}", k.namespace, k.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(routes) = self.routes_waiting_for() {
            waiting.push(routes);
        }
        let mut unsynced = self.index.unsynced_secrets();
        unsynced.extend(self.unsynced_route_secrets());
        unsynced.sort();
        unsynced.dedup();
        if !unsynced.is_empty() {
            waiting.push(format!(
                "{} Secret(s) not synced: {}",
                unsynced.len(),
                unsynced
                    .iter()
                    .take(5)
                    .map(|k| format!("{}/{}", k.namespace, k.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let unscanned = self.unscanned_volumes();
        if unscanned > 0 {
            waiting.push(format!("{unscanned} volume(s) not scanned"));
        }
        waiting
    }

    /// When the node was created (the first publication is due then).
    pub fn created_at(&self) -> Instant {
        self.created_at
    }
}
