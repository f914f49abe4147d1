//! The cert-manager view on the node: what to watch, when to judge, what to report.
//!
//! ```text
//!  local controller pods ─▶ watches: Certificate, Issuer, ClusterIssuer (cluster-wide) and,
//!                            per local profile, its pods in the whole cluster (the reporter
//!                            choice); none on a node without controller pods
//!  Secret watches ─▶ SecretFacts (annotation, leaf SANs, notBefore)
//!  mounts + route hosts ─▶ SecretUse ─▶ certmanager::findings ─▶ reporter == this node?
//!        ─▶ one Warning Event per new finding, mountlag_cert_manager_findings, /status certManager
//! ```
//!
//! Judging waits until every cert-manager kind has listed (or is known not to be served), so a
//! half-listed cluster never reports an Issuer as missing. Judgments are spaced by
//! [`JUDGE_SPACING_PER_USE`]: a change in between is judged when the spacing ends.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::action::{Action, ClusterWatch};
use crate::certmanager::findings::{
    FindingKey, Findings, Grace, HostUse, SecretFacts, SecretUse, findings,
};
use crate::certmanager::reporter::{PeerPod, reporter};
use crate::certmanager::{CertManagerIndex, CertManagerKey, CertManagerKind, CertManagerObject};
use crate::reconcile::SecretKey;
use crate::secret::SecretView;
use crate::text::{MAX_MESSAGE_BYTES, untrusted_capped};

use super::{Node, Now};

/// A judgment costs O(Secret uses) (every use of every local pod and route host is collected
/// and compared), and at a start every Secret's first event changes its facts: judging on every
/// step made a start with 1,000 Secrets quadratic (docs/benchmarks.md, session 16). So the
/// next judgment waits 1 ms per use of the last one (1 s at 1,000 uses; a node with one pod
/// judges at once). Findings are about issuance running late by minutes: an Event a second
/// later changes nothing.
pub const JUDGE_SPACING_PER_USE: Duration = Duration::from_millis(1);

/// What the node model needs of config `certManager`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertManagerSettings {
    /// `certManager.gracePeriod`: how long a Certificate or issuer may be not Ready, and a
    /// renewal late, before it is a finding.
    pub grace: Duration,
}

/// cert-manager news and the cluster's controller pods, from the agent's watches.
#[derive(Debug, Clone, PartialEq)]
pub enum CertManagerInput {
    Listed {
        kind: CertManagerKind,
        objects: Vec<CertManagerObject>,
    },
    Applied(CertManagerObject),
    Deleted(CertManagerKey),
    /// The cluster does not serve the kind (cert-manager's CRDs are not installed): it counts
    /// as listed and empty.
    NotInstalled {
        kind: CertManagerKind,
    },
    WatchFailed {
        kind: CertManagerKind,
        reason: String,
    },
    /// The pods of a controller profile in the whole cluster (re)listed.
    PeersListed {
        controller: String,
        pods: Vec<PeerPod>,
    },
    PeerApplied(PeerPod),
    PeerDeleted {
        controller: String,
        uid: String,
    },
    PeersWatchFailed {
        controller: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KindState {
    Listing,
    Listed,
    NotInstalled,
}

/// `/status` `certManager`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerStatus {
    /// `installed`, `notInstalled`, `listing`.
    pub state: &'static str,
    pub findings: Vec<FindingStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingStatus {
    pub reason: &'static str,
    /// `Certificate shop/web`, `Ingress shop/web`.
    pub regarding: String,
    pub message: String,
    /// The node that reports it (absent while the cluster's controller pods are not listed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reporter: Option<String>,
}

/// `mountlag_cert_manager_findings{reason, kind, namespace, name}`: one series per finding
/// this node reports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FindingSeries {
    pub reason: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Default)]
pub(super) struct CertManagerState {
    index: CertManagerIndex,
    kinds: BTreeMap<CertManagerKind, KindState>,
    /// Per local controller profile: its pods in the cluster, once listed.
    peers: BTreeMap<String, Option<BTreeMap<String, PeerPod>>>,
    secrets: BTreeMap<SecretKey, SecretFacts>,
    /// The last judgement, with each finding's reporter.
    current: BTreeMap<FindingKey, (crate::certmanager::findings::Found, Option<String>)>,
    /// Findings this node reported (an Event each) and still reports.
    reported: BTreeSet<FindingKey>,
    dirty: bool,
    recheck_at: Option<Instant>,
    /// The next judgment does not run before this ([`JUDGE_SPACING_PER_USE`]).
    not_before: Option<Instant>,
}

impl Node {
    /// Watches while a controller pod runs here: the cert-manager kinds, and each local
    /// profile's pods cluster-wide.
    pub(super) fn sync_cert_manager_watches(&mut self) -> Vec<Action> {
        let Some(_) = self.settings.cert_manager else {
            return Vec::new();
        };
        let local: BTreeSet<String> = self.pods.values().map(|p| p.controller.clone()).collect();
        let state = &mut self.cert_manager;
        let mut actions = Vec::new();
        let wanted_kinds: &[CertManagerKind] = if local.is_empty() {
            &[]
        } else {
            &CertManagerKind::ALL
        };
        for kind in CertManagerKind::ALL {
            let watched = state.kinds.contains_key(&kind);
            if wanted_kinds.contains(&kind) && !watched {
                state.kinds.insert(kind, KindState::Listing);
                actions.push(Action::WatchCluster(ClusterWatch::CertManager(kind)));
            } else if !wanted_kinds.contains(&kind) && watched {
                state.kinds.remove(&kind);
                actions.push(Action::UnwatchCluster(ClusterWatch::CertManager(kind)));
            }
        }
        if local.is_empty() {
            state.index.forget_all();
        }
        let gone: Vec<String> = state
            .peers
            .keys()
            .filter(|c| !local.contains(*c))
            .cloned()
            .collect();
        for controller in gone {
            state.peers.remove(&controller);
            actions.push(Action::UnwatchCluster(ClusterWatch::Peers(controller)));
        }
        for controller in local {
            if !state.peers.contains_key(&controller) {
                state.peers.insert(controller.clone(), None);
                actions.push(Action::WatchCluster(ClusterWatch::Peers(controller)));
            }
        }
        state.dirty = true;
        actions
    }

    pub(super) fn cert_manager_input(&mut self, input: CertManagerInput) -> Vec<Action> {
        let state = &mut self.cert_manager;
        state.dirty = true;
        match input {
            CertManagerInput::Listed { kind, objects } => {
                if let Some(listed) = state.kinds.get_mut(&kind) {
                    *listed = KindState::Listed;
                    state.index.replace_kind(kind, objects);
                }
            }
            CertManagerInput::Applied(object) => {
                if state.kinds.contains_key(&object.key().kind) {
                    state.index.apply(object);
                }
            }
            CertManagerInput::Deleted(key) => {
                state.index.delete(&key);
            }
            CertManagerInput::NotInstalled { kind } => {
                if let Some(listed) = state.kinds.get_mut(&kind) {
                    *listed = KindState::NotInstalled;
                    state.index.replace_kind(kind, Vec::new());
                }
            }
            CertManagerInput::WatchFailed { kind, reason } => {
                return vec![Action::CountApiError {
                    resource: kind.resource(),
                    reason,
                }];
            }
            CertManagerInput::PeersListed { controller, pods } => {
                if let Some(peers) = state.peers.get_mut(&controller) {
                    *peers = Some(pods.into_iter().map(|p| (p.uid.clone(), p)).collect());
                }
            }
            CertManagerInput::PeerApplied(pod) => {
                if let Some(Some(peers)) = state.peers.get_mut(&pod.controller) {
                    peers.insert(pod.uid.clone(), pod);
                }
            }
            CertManagerInput::PeerDeleted { controller, uid } => {
                if let Some(Some(peers)) = state.peers.get_mut(&controller) {
                    peers.remove(&uid);
                }
            }
            CertManagerInput::PeersWatchFailed { reason, .. } => {
                return vec![Action::CountApiError {
                    resource: "pods",
                    reason,
                }];
            }
        }
        Vec::new()
    }

    /// A Secret watch's news: the annotation and leaf the findings read.
    pub(super) fn cert_manager_secret_observed(
        &mut self,
        key: &SecretKey,
        view: Option<&SecretView>,
    ) {
        if self.settings.cert_manager.is_none() {
            return;
        }
        let facts = view.map(SecretFacts::of_view);
        let state = &mut self.cert_manager;
        match facts {
            Some(facts) => {
                if state.secrets.get(key) != Some(&facts) {
                    state.secrets.insert(key.clone(), facts);
                    state.dirty = true;
                }
            }
            None => {
                if state.secrets.remove(key).is_some() {
                    state.dirty = true;
                }
            }
        }
    }

    /// Hosts or their Secrets changed: judge again.
    pub(super) fn cert_manager_changed(&mut self) {
        self.cert_manager.dirty = true;
    }

    pub(super) fn cert_manager_deadline(&self) -> Option<Instant> {
        self.settings.cert_manager?;
        let state = &self.cert_manager;
        let wanted = if state.dirty {
            // Dirty after a step only while the spacing holds the judgment back.
            state.not_before
        } else {
            state.recheck_at
        }?;
        Some(state.not_before.map_or(wanted, |at| wanted.max(at)))
    }

    /// Judges again when something changed or a recheck time passed: an Event for each finding
    /// this node newly reports.
    pub(super) fn judge_cert_manager(&mut self, now: Now) -> Vec<Action> {
        let Some(settings) = self.settings.cert_manager else {
            return Vec::new();
        };
        let due = self.cert_manager.recheck_at.is_some_and(|at| now.at >= at);
        if !self.cert_manager.dirty && !due {
            return Vec::new();
        }
        if self.cert_manager.not_before.is_some_and(|at| now.at < at) {
            // Judged when the spacing ends (`cert_manager_deadline`).
            return Vec::new();
        }
        self.cert_manager.dirty = false;
        self.cert_manager.recheck_at = None;
        let listed = !self.cert_manager.kinds.is_empty()
            && self
                .cert_manager
                .kinds
                .values()
                .all(|k| *k != KindState::Listing);
        if !listed {
            self.cert_manager.current.clear();
            return Vec::new();
        }
        let uses = self.secret_uses();
        self.cert_manager.not_before = Some(
            now.at
                + JUDGE_SPACING_PER_USE
                    .saturating_mul(u32::try_from(uses.len()).unwrap_or(u32::MAX)),
        );
        let watched: BTreeSet<&SecretKey> = uses.iter().map(|u| &u.secret).collect();
        self.cert_manager.secrets.retain(|k, _| watched.contains(k));
        let state = &mut self.cert_manager;
        let grace = Grace {
            seconds: i64::try_from(settings.grace.as_secs()).unwrap_or(i64::MAX),
        };
        let utc = now.utc.unix_timestamp();
        let Findings { found, recheck_at } =
            findings(&uses, &state.secrets, &state.index, utc, grace);
        state.recheck_at = recheck_at.map(|at| {
            let wait = u64::try_from(at.saturating_sub(utc)).unwrap_or(0);
            now.at + Duration::from_secs(wait)
        });
        let peers: Vec<&PeerPod> = state
            .peers
            .values()
            .flatten()
            .flat_map(|pods| pods.values())
            .collect();
        let node = self.settings.node_name.as_str();
        let mut actions = Vec::new();
        let mut reported = BTreeSet::new();
        let mut current = BTreeMap::new();
        for (key, found) in found {
            // No candidate once every serving profile listed its pods (a profile without a
            // selector has no cluster-wide list): the node that found it reports it.
            let listed = found
                .served_by
                .iter()
                .all(|s| matches!(state.peers.get(&s.controller), Some(Some(_))));
            let by = reporter(peers.iter().copied(), &found.served_by)
                .or(listed.then_some(node))
                .map(str::to_string);
            if by.as_deref() == Some(node) {
                if !state.reported.contains(&key) {
                    actions.push(Action::ObjectEvent {
                        regarding: found.finding.regarding.clone(),
                        reason: key.reason.event_reason(),
                        note: untrusted_capped(&found.finding.message, MAX_MESSAGE_BYTES)
                            .to_string(),
                    });
                }
                reported.insert(key.clone());
            }
            current.insert(key, (found, by));
        }
        state.reported = reported;
        state.current = current;
        actions
    }

    /// Every Secret the local pods serve, and how: mounted, or for a host of their routes.
    fn secret_uses(&self) -> Vec<SecretUse> {
        let mut uses = BTreeSet::new();
        for pod in self.pods.values() {
            for volume in &pod.volumes {
                for source in &volume.sources {
                    uses.insert(SecretUse {
                        controller: pod.controller.clone(),
                        secret: SecretKey {
                            namespace: pod.namespace.clone(),
                            name: source.secret.clone(),
                        },
                        mounted: true,
                        host: None,
                    });
                }
            }
        }
        for (controller, hosts) in &self.route_hosts {
            for host in &hosts.hosts {
                uses.insert(SecretUse {
                    controller: controller.clone(),
                    secret: host.secret.clone(),
                    mounted: false,
                    host: Some(HostUse {
                        origin: host.origin.clone(),
                        host: host.host.clone(),
                        issuer: self.routes.cert_manager_issuer(&host.origin).cloned(),
                    }),
                });
            }
            if let Some(secret) = &hosts.default_certificate {
                uses.insert(SecretUse {
                    controller: controller.clone(),
                    secret: secret.clone(),
                    mounted: false,
                    host: None,
                });
            }
        }
        uses.into_iter().collect()
    }

    /// `/status` `certManager`; `None` when the view is off or no controller pod runs here.
    pub(super) fn cert_manager_status(&self) -> Option<CertManagerStatus> {
        self.settings.cert_manager?;
        let state = &self.cert_manager;
        if state.kinds.is_empty() {
            return None;
        }
        let kinds: Vec<KindState> = state.kinds.values().copied().collect();
        let label = if kinds.contains(&KindState::Listing) {
            "listing"
        } else if kinds.contains(&KindState::NotInstalled) {
            "notInstalled"
        } else {
            "installed"
        };
        Some(CertManagerStatus {
            state: label,
            findings: state
                .current
                .iter()
                .map(|(key, (found, by))| FindingStatus {
                    reason: key.reason.as_str(),
                    regarding: format!("{} {}/{}", key.kind, key.namespace, key.name),
                    message: untrusted_capped(&found.finding.message, MAX_MESSAGE_BYTES)
                        .to_string(),
                    reporter: by.clone(),
                })
                .collect(),
        })
    }

    /// The series of `mountlag_cert_manager_findings` this node exports.
    pub(super) fn cert_manager_series(&self) -> Vec<FindingSeries> {
        self.cert_manager
            .reported
            .iter()
            .map(|key| FindingSeries {
                reason: key.reason.as_str(),
                kind: key.kind,
                namespace: key.namespace.clone(),
                name: key.name.clone(),
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}
