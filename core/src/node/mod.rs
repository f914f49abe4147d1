//! The node model: every decision the agent makes, behind one entry point.
//!
//! ```text
//!  Input ─▶ Node::step(input, now) ─┬─▶ MountIndex: one Mount per volume ─▶ Nudge · Event · ObserveLag
//!   pods, Secrets,                  ├─▶ PodReload per pod (lagging mounts  ─▶ Reload · Probe · Event ·
//!   volume reads,                   │    of the pod hold a reload back)        ReloadFinished
//!   reload and probe                ├─▶ which Secrets to watch, which volume ─▶ WatchSecret · TrackVolume ·
//!   results, ticks                  │    directories to track and read          ReadVolume · …
//!                                   └─▶ Node::publish_if_due(now) ─▶ Publication (status, gauges)
//! ```
//!
//! The agent converts what it observes into [`Input`]s and performs the [`Action`]s; results of
//! actions (a volume tracked and read, a reload done, a probe round) come back as inputs. No
//! I/O and no clock here: `now` is an argument, so every decision is a unit test.

mod certmanager;
mod publish;
mod routes;
#[cfg(test)]
mod tests;
mod tracking;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::action::{Action, CertificateView};
use crate::events::RelatedSecret;
use crate::pod::ControllerPod;
use crate::reconcile::material::material_of_secrets;
use crate::reconcile::reload::{
    Decision, ExpectedLeaf, Material, PodReload, ProbeRound, ReloadFailure, ReloadInput,
    ReloadKind, ReloadLimits,
};
use crate::reconcile::{MountIndex, PodRef, SecretKey, Thresholds};
use crate::routes::{
    ControllerHosts, RouteIndex, RouteKind, RouteMatch, RouteObject, RouteObjectKey,
};
use crate::secret::SecretView;
use crate::status::DiskStatus;
use crate::volume::{KubeletRoot, RescanReason, VolumeSnapshot};

pub use certmanager::{
    CertManagerInput, CertManagerSettings, CertManagerStatus, FindingSeries, FindingStatus,
};
pub use publish::{PUBLISH_EVERY, PUBLISH_SPACING_PER_MOUNT, Publication, ServedMatch};
pub use routes::{HostServed, HostState, HostStatus};

/// The clock, passed in: monotonic for timers, wall-clock for certificate validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub at: Instant,
    pub utc: OffsetDateTime,
}

/// Where a controller reads its certificates from (a profile's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateSource {
    /// The mounted Secret volume: disk matters, a reload may be needed.
    Files,
    /// The Kubernetes API: only served == API is checked.
    Api,
}

/// What the model needs of a controller profile (config `controllers[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSpec {
    pub name: String,
    /// `None`: every container that mounts the volume counts.
    pub containers: Option<Vec<String>>,
    pub source: CertificateSource,
    /// The profile has a reload action (signal or HTTP); without one the controller picks new
    /// files up by itself and is only verified.
    pub reloads: bool,
    /// Extra SNI names to probe.
    pub probe_hosts: Vec<String>,
    /// Where the controller's hosts come from, when Ingress and Gateway objects say.
    pub routes: Option<RouteMatch>,
    /// Ports a probe round covers on every pod IP (for the handshake budget).
    pub probe_ports: usize,
    /// The profile may restart the pod's workload instead of reloading it.
    pub restart: Option<RollingRestart>,
}

/// Reload by a rolling restart of the pod's workload (config `reload: restart`, or
/// `reload.fallback: restart` for a signal that may be withheld).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollingRestart {
    /// `reload.restartTimeout`: how long the old pod may keep serving the old leaf after the
    /// restart was requested (it is normally replaced well before) before `ReloadUnverified`.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    pub node_name: String,
    pub kubelet: KubeletRoot,
    /// Whether kubelet's volume directories are read at all (a probe-only install does not).
    pub disk: DiskStatus,
    pub thresholds: Thresholds,
    pub reload: ReloadLimits,
    pub controllers: Vec<ControllerSpec>,
    /// The status is rebuilt at most this often (it costs O(mounts)).
    pub publish_every: Duration,
    /// `verify.handshakesPerSecond`: what periodic checks may spend, node-wide, on average.
    /// Verification after a rotation is never held back, but is counted.
    pub handshakes_per_second: u32,
    /// The cert-manager view; `None`: off (config `certManager.enabled: false`).
    pub cert_manager: Option<CertManagerSettings>,
}

/// Everything the agent observes, and the results of the actions it performed.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The pod watch (re)listed: these are all the selected pods of the node.
    PodsListed(Vec<ControllerPod>),
    /// A selected pod was added or changed.
    PodApplied(ControllerPod),
    /// A pod changed and no profile selects it (any more).
    PodUnselected {
        uid: Option<String>,
    },
    PodDeleted {
        uid: String,
    },
    PodWatchFailed {
        reason: String,
    },
    /// A watch of Ingress or Gateway API objects (re)listed: all objects of the kind.
    RoutesListed {
        kind: RouteKind,
        objects: Vec<RouteObject>,
    },
    RouteApplied(RouteObject),
    RouteDeleted(RouteObjectKey),
    RouteWatchFailed {
        kind: RouteKind,
        reason: String,
    },
    /// A Secret watch listed or saw a change; `None`: the Secret does not exist.
    SecretObserved {
        key: SecretKey,
        view: Option<SecretView>,
    },
    SecretWatchFailed {
        key: SecretKey,
        reason: String,
    },
    /// Result of [`Action::TrackVolume`]: `Err` when the directory is not there yet.
    VolumeTracked {
        path: PathBuf,
        result: Result<(), String>,
    },
    /// Result of [`Action::ReadVolume`], or of a change the watcher saw.
    VolumeRead {
        path: PathBuf,
        read: Result<VolumeSnapshot, String>,
    },
    /// The watcher saw a generation change: read the volume again.
    VolumeChanged {
        path: PathBuf,
    },
    VolumeUnmounted {
        path: PathBuf,
    },
    /// Filesystems were mounted or unmounted at these paths.
    MountsChanged {
        mount_points: Vec<PathBuf>,
    },
    VolumesRescanned {
        reason: RescanReason,
    },
    /// Result of [`Action::Reload`].
    Reloaded {
        uid: String,
        result: Result<(), ReloadFailure>,
    },
    /// Result of [`Action::Probe`].
    Probed {
        uid: String,
        round: ProbeRound,
    },
    /// cert-manager objects, and the controller pods of the whole cluster.
    CertManager(CertManagerInput),
    /// A deadline from [`Node::next_deadline`] passed.
    Tick,
}

/// The node: the mount index, one reload machine per controller pod, and what the agent
/// watches and tracks on their behalf.
#[derive(Debug)]
pub struct Node {
    settings: NodeSettings,
    index: MountIndex,
    reloads: BTreeMap<String, PodReload>,
    /// Every machine's next deadline, kept in step with `reloads`, except for the machines
    /// waiting in `budget_queue`.
    reload_deadlines: crate::reconcile::Deadlines<String>,
    /// Pods whose periodic check is due while the handshake budget is spent, first come first
    /// served. Each turn of the budget takes the first; the others wait untouched (re-deferring
    /// every waiting check on every round was O(pods) per round at 1,000 pods, where the
    /// default budget is always in use).
    budget_queue: VecDeque<String>,
    queued_for_budget: HashSet<String>,
    /// The selected pods, for reloads and probes.
    /// Shared with the reload and probe actions that name them: no copy per action.
    pods: BTreeMap<String, Arc<ControllerPod>>,
    /// Last generation read per volume directory: a change is new material.
    generations: BTreeMap<PathBuf, Option<String>>,
    /// Leaves of the last valid read per volume directory, for /status and metrics. Hashed:
    /// every publication looks up each mount's, and ordering paths compares them component
    /// by component.
    leaves_on_disk: HashMap<PathBuf, Vec<ExpectedLeaf>>,
    watched_secrets: BTreeSet<SecretKey>,
    /// Volume directories under a watch (or asked to be).
    tracked: BTreeSet<PathBuf>,
    /// Volume directories that do not exist yet (kubelet has not set them up): retried when
    /// the mount table changes.
    untrackable: BTreeSet<PathBuf>,
    pods_listed: bool,
    /// The pod set changed: the wanted Secret watches and volume directories may differ.
    pods_changed: bool,
    /// Something changed since the last publication.
    unpublished: bool,
    /// The last publication's `/status` entries, republished as they are while unchanged.
    kept_status: crate::reconcile::KeptStatus,
    published_at: Option<Instant>,
    /// Whether the last publication said ready: then publications are spaced by mount count.
    published_ready: bool,
    created_at: Instant,
    /// When the handshake budget is free again: each probe round moves it on by its cost.
    budget_free_at: Instant,
    /// Ingress and Gateway API objects, while a local controller's profile needs them.
    routes: RouteIndex,
    /// The kinds under a watch, and whether each has listed.
    route_kinds: BTreeMap<RouteKind, bool>,
    /// Per controller profile with local pods: the hosts its routes name.
    route_hosts: BTreeMap<String, ControllerHosts>,
    /// The Secrets those hosts need, as the API has them.
    route_secrets: BTreeMap<SecretKey, routes::RouteSecret>,
    /// Host problems already reported (one Event each, again only after it was gone).
    reported_host_problems: BTreeSet<routes::HostProblem>,
    /// A route object changed: hosts are computed again.
    routes_changed: bool,
    /// A Secret the hosts need changed: what each host must serve is computed again.
    route_secrets_changed: bool,
    cert_manager: certmanager::CertManagerState,
    /// Pods created by a rolling restart whose new certificate was seen served.
    restarts_verified: BTreeSet<String>,
}

impl Node {
    pub fn new(settings: NodeSettings, now: Instant) -> Self {
        let index = MountIndex::new(settings.kubelet.clone(), settings.thresholds);
        let index = if settings.disk.checked {
            index
        } else {
            index.without_disk()
        };
        Self {
            settings,
            index,
            reloads: BTreeMap::new(),
            reload_deadlines: crate::reconcile::Deadlines::default(),
            budget_queue: VecDeque::new(),
            queued_for_budget: HashSet::new(),
            pods: BTreeMap::new(),
            generations: BTreeMap::new(),
            leaves_on_disk: HashMap::new(),
            watched_secrets: BTreeSet::new(),
            tracked: BTreeSet::new(),
            untrackable: BTreeSet::new(),
            pods_listed: false,
            pods_changed: false,
            unpublished: true,
            kept_status: crate::reconcile::KeptStatus::default(),
            published_at: None,
            published_ready: false,
            created_at: now,
            budget_free_at: now,
            routes: RouteIndex::default(),
            route_kinds: BTreeMap::new(),
            route_hosts: BTreeMap::new(),
            route_secrets: BTreeMap::new(),
            reported_host_problems: BTreeSet::new(),
            routes_changed: false,
            route_secrets_changed: false,
            cert_manager: certmanager::CertManagerState::default(),
            restarts_verified: BTreeSet::new(),
        }
    }

    pub fn step(&mut self, input: Input, now: Now) -> Vec<Action> {
        self.unpublished = true;
        let at = now.at;
        let mut actions = match input {
            Input::PodsListed(pods) => self.pods_listed(pods, at),
            Input::PodApplied(pod) => {
                let mut actions = self.index.set_pods_healthy(true, at);
                actions.extend(self.pod_applied(pod, at));
                actions
            }
            Input::PodUnselected { uid } => {
                let mut actions = self.index.set_pods_healthy(true, at);
                if let Some(uid) = uid {
                    actions.extend(self.pod_gone(&uid));
                }
                actions
            }
            Input::PodDeleted { uid } => self.pod_gone(&uid),
            Input::PodWatchFailed { reason } => {
                let mut actions = vec![Action::CountApiError {
                    resource: "pods",
                    reason,
                }];
                actions.extend(self.index.set_pods_healthy(false, at));
                actions
            }
            Input::RoutesListed { kind, objects } => {
                self.route_kinds.insert(kind, true);
                self.routes_changed |= self.routes.replace_kind(kind, objects);
                Vec::new()
            }
            Input::RouteApplied(object) => {
                self.routes_changed |= self.routes.apply(object);
                Vec::new()
            }
            Input::RouteDeleted(key) => {
                self.routes_changed |= self.routes.delete(&key);
                Vec::new()
            }
            Input::RouteWatchFailed { kind, reason } => vec![Action::CountApiError {
                resource: kind.resource(),
                reason,
            }],
            Input::SecretObserved { key, view } => {
                self.route_secret_observed(&key, view.as_ref(), now.utc.unix_timestamp());
                self.cert_manager_secret_observed(&key, view.as_ref());
                let mut actions: Vec<Action> = view
                    .as_ref()
                    .and_then(earliest_not_after)
                    .map(|unix| Action::SetNotAfter {
                        namespace: key.namespace.clone(),
                        secret: key.name.clone(),
                        source: CertificateView::Api,
                        unix,
                    })
                    .into_iter()
                    .collect();
                actions.extend(self.index.secret_observed(&key, view, at));
                for uid in self.index.pods_of_secret(&key) {
                    actions.extend(self.api_leaves_of_pod(&uid, at));
                }
                actions
            }
            Input::SecretWatchFailed { key, reason } => {
                let mut actions = vec![Action::CountApiError {
                    resource: "secrets",
                    reason,
                }];
                actions.extend(self.index.secret_watch_health(&key, false, at));
                actions
            }
            Input::VolumeTracked { path, result } => self.volume_tracked(path, result),
            Input::VolumeChanged { path } => vec![Action::ReadVolume(path)],
            Input::VolumeRead { path, read } => self.volume_read(&path, read, now),
            Input::VolumeUnmounted { path } => self.volume_unmounted(path, at),
            Input::MountsChanged { mount_points } => {
                // Directories kubelet has mounted since are trackable now.
                let retry: Vec<PathBuf> = self
                    .untrackable
                    .iter()
                    .filter(|p| mount_points.iter().any(|m| p.starts_with(m)))
                    .cloned()
                    .collect();
                self.retrack(retry)
            }
            // Directories kubelet has created since are trackable now. After a queue overflow
            // too: the events that would have announced them are among those lost.
            Input::VolumesRescanned { reason: _ } => {
                let retry = std::mem::take(&mut self.untrackable);
                self.retrack(retry.into_iter().collect())
            }
            Input::Reloaded { uid, result } => {
                self.step_reload(&uid, ReloadInput::Reloaded(result), at)
            }
            Input::Probed { uid, round } => {
                let mut actions = self.served_not_after(&uid, &round);
                actions.extend(self.step_reload(&uid, ReloadInput::Probed(round), at));
                actions.extend(self.restart_verified(&uid));
                actions
            }
            Input::CertManager(input) => self.cert_manager_input(input),
            Input::Tick => self.tick(at),
        };
        // Only pods add or remove Secret references and volume directories; both sets cost
        // O(mounts) to compute.
        let pods_changed = std::mem::take(&mut self.pods_changed);
        let routes_changed = std::mem::take(&mut self.routes_changed) || pods_changed;
        if routes_changed {
            let mut first = self.sync_route_watches();
            first.append(&mut actions);
            actions = first;
            self.compute_route_hosts();
        }
        if pods_changed || routes_changed {
            let mut first = self.sync_secret_watches();
            if pods_changed {
                first.extend(self.sync_volumes());
            }
            first.append(&mut actions);
            actions = first;
        }
        if pods_changed {
            actions.extend(self.sync_cert_manager_watches());
        }
        if routes_changed || std::mem::take(&mut self.route_secrets_changed) {
            actions.extend(self.route_expectations(at));
            self.cert_manager_changed();
        }
        actions.extend(self.judge_cert_manager(now));
        actions
    }

    /// When [`Input::Tick`] is due next (timers of mounts and reloads, the next publication).
    pub fn next_deadline(&self) -> Option<Instant> {
        debug_assert!(
            self.reloads.iter().all(|(uid, reload)| {
                self.queued_for_budget.contains(uid)
                    || self.reload_deadlines.get(uid) == reload.next_deadline()
            }),
            "a reload machine changed without its deadline"
        );
        let reloads = [
            self.reload_deadlines.first(),
            (!self.budget_queue.is_empty()).then_some(self.budget_free_at),
        ]
        .into_iter()
        .flatten()
        .min();
        let publish = self.next_publication();
        [
            self.index.next_deadline(),
            reloads,
            publish,
            self.cert_manager_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = self.index.tick(now);
        while self.budget_free_at <= now
            && let Some(uid) = self.budget_queue.pop_front()
        {
            self.queued_for_budget.remove(&uid);
            actions.extend(self.step_reload(&uid, ReloadInput::Tick, now));
        }
        for uid in self.reload_deadlines.due(now) {
            if self.budget_free_at > now && self.reloads.get(&uid).is_some_and(|r| r.check_due(now))
            {
                self.reload_deadlines.set(&uid, None);
                if self.queued_for_budget.insert(uid.clone()) {
                    self.budget_queue.push_back(uid);
                }
                continue;
            }
            actions.extend(self.step_reload(&uid, ReloadInput::Tick, now));
        }
        actions
    }

    /// Moves the handshake budget on by one probe round of `names` on the pod.
    fn charge_probe(&mut self, pod: &ControllerPod, names: usize, now: Instant) {
        let ports = self
            .spec(&pod.controller)
            .map_or(1, |s| s.probe_ports.max(1));
        let handshakes = (names + 1) * ports * pod.pod_ips.len().max(1);
        let rate = f64::from(self.settings.handshakes_per_second.max(1));
        let cost = Duration::from_secs_f64(handshakes as f64 / rate);
        self.budget_free_at = self.budget_free_at.max(now) + cost;
    }

    fn spec(&self, controller: &str) -> Option<&ControllerSpec> {
        self.settings
            .controllers
            .iter()
            .find(|c| c.name == controller)
    }

    /// A (re)list: pods not in it are gone, the others are applied as if seen one by one.
    fn pods_listed(&mut self, pods: Vec<ControllerPod>, now: Instant) -> Vec<Action> {
        self.pods_listed = true;
        self.pods_changed = true;
        let mut actions = self.index.set_pods_healthy(true, now);
        let listed: BTreeSet<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|uid| !listed.contains(uid.as_str()))
            .cloned()
            .collect();
        for uid in gone {
            actions.extend(self.pod_gone(&uid));
        }
        for pod in pods {
            actions.extend(self.pod_applied(pod, now));
        }
        actions
    }

    fn pod_applied(&mut self, pod: ControllerPod, now: Instant) -> Vec<Action> {
        // Most updates (a nudge's annotation, a container's status) leave what the pod mounts
        // alone, and with it every set derived from all pods (O(mounts) each to recompute).
        self.pods_changed |= self
            .pods
            .get(&pod.uid)
            .is_none_or(|known| !known.mounts_the_same_as(&pod));
        let pod = Arc::new(pod);
        let uid = pod.uid.clone();
        let containers = self.remember_pod(&pod);
        let mut actions = self.index.upsert_pod(pod, containers, now);
        actions.extend(self.api_leaves_of_pod(&uid, now));
        actions
    }

    fn pod_gone(&mut self, uid: &str) -> Vec<Action> {
        self.pods_changed = true;
        self.index.remove_pod(uid);
        self.forget_pod(uid)
    }

    /// Keeps the pod for reloads and probes and gives it a reload machine on first sight;
    /// returns the containers its profile watches.
    fn remember_pod(&mut self, pod: &Arc<ControllerPod>) -> Option<Vec<String>> {
        let spec = self.spec(&pod.controller).cloned();
        let containers = spec.as_ref().and_then(|s| s.containers.clone());
        if !self.reloads.contains_key(&pod.uid)
            && let Some(spec) = spec
        {
            let kind = match (spec.source, spec.reloads) {
                // Without disk, the API is the only source of what should be served; and a
                // probe-only install could not signal anyway (no host PID namespace).
                _ if !self.settings.disk.checked => ReloadKind::ApiDriven,
                (CertificateSource::Api, _) => ReloadKind::ApiDriven,
                (CertificateSource::Files, false) => ReloadKind::VerifyOnly,
                (CertificateSource::Files, true) => ReloadKind::Reload,
            };
            self.reloads.insert(
                pod.uid.clone(),
                PodReload::new(
                    kind,
                    match spec.restart {
                        // The new leaf arrives with the replacement pods: the old one is given
                        // as long as a rollout may take.
                        Some(restart) => ReloadLimits {
                            verify_timeout: restart
                                .timeout
                                .max(self.settings.reload.verify_timeout),
                            ..self.settings.reload
                        },
                        None => self.settings.reload,
                    },
                    spec.probe_hosts,
                    jitter_seed(&pod.uid),
                ),
            );
            self.reload_deadline_moved(&pod.uid);
        }
        self.pods.insert(pod.uid.clone(), Arc::clone(pod));
        containers
    }

    /// A pod a rolling restart created (its template carries mountlag's annotation) serves the
    /// certificate of its Secrets: the restart is verified, said once per pod.
    fn restart_verified(&mut self, uid: &str) -> Vec<Action> {
        let Some(pod) = self.pods.get(uid) else {
            return Vec::new();
        };
        let Some(value) = pod.restart_annotation.as_deref() else {
            return Vec::new();
        };
        let restarts = self
            .spec(&pod.controller)
            .is_some_and(|s| s.restart.is_some());
        let Some(reload) = self.reloads.get(uid) else {
            return Vec::new();
        };
        if !restarts
            || reload.served_matches() != Some(true)
            || !self.restarts_verified.insert(uid.to_string())
        {
            return Vec::new();
        }
        let note = format!(
            "Rolled out by a rolling restart ({}={value}): the new pod serves the certificate of its Secrets ({}).",
            crate::pod::RESTART_ANNOTATION,
            reload.served_fingerprint().unwrap_or("-")
        );
        vec![Action::Event {
            pod: pod_ref(pod),
            reason: crate::events::EventReason::ControllerReloaded,
            note,
            related: None,
        }]
    }

    fn forget_pod(&mut self, uid: &str) -> Vec<Action> {
        self.restarts_verified.remove(uid);
        self.reloads.remove(uid);
        self.reload_deadlines.set(uid, None);
        // Its place in the queue is skipped when its turn comes.
        self.queued_for_budget.remove(uid);
        match self.pods.remove(uid) {
            Some(pod) => vec![Action::ForgetPod(pod_ref(&pod))],
            None => Vec::new(),
        }
    }

    /// Feeds the pod's reload machine the leaves its Secrets hold in the API, when the
    /// controller reads the API (or disk is not read at all); a no-op when they are unchanged,
    /// so a pod seen after its Secrets is verified too.
    fn api_leaves_of_pod(&mut self, uid: &str, now: Instant) -> Vec<Action> {
        let Some(pod) = self.pods.get(uid) else {
            return Vec::new();
        };
        let api_driven = self
            .spec(&pod.controller)
            .is_some_and(|s| s.source == CertificateSource::Api);
        if !api_driven && self.settings.disk.checked {
            return Vec::new();
        }
        let hosts = match self.host_plan(&pod.controller) {
            routes::Plan::NoRoutes => None,
            // Verifying against a half-known plan would probe again with every Secret listed.
            routes::Plan::NotSynced => return Vec::new(),
            routes::Plan::Ready(plan) => Some(plan),
        };
        let mut leaves = Vec::new();
        for view in self.index.secrets_of_pod(uid) {
            if let Material::Valid { leaves: found } = material_of_secrets(&view.certificates) {
                leaves.extend(found);
            }
        }
        self.step_reload(uid, ReloadInput::ApiLeaves { leaves, hosts }, now)
    }

    fn reload_deadline_moved(&mut self, uid: &str) {
        let at = self.reloads.get(uid).and_then(PodReload::next_deadline);
        self.reload_deadlines.set(uid, at);
    }

    /// One step of a pod's reload machine, told first which of the pod's mounts lag the API.
    fn step_reload(&mut self, uid: &str, input: ReloadInput, now: Instant) -> Vec<Action> {
        let lagging = self.index.lagging_volumes(uid);
        let Some(reload) = self.reloads.get_mut(uid) else {
            return Vec::new();
        };
        let mut decisions = reload.step(ReloadInput::Lagging(lagging), now);
        decisions.extend(reload.step(input, now));
        self.reload_deadline_moved(uid);
        // Most steps (ticks, probe rounds that change nothing) decide nothing.
        if decisions.is_empty() {
            return Vec::new();
        }
        let Some(pod) = self.pods.get(uid).cloned() else {
            return Vec::new();
        };
        for decision in &decisions {
            if let Decision::Probe { names } = decision {
                self.charge_probe(&pod, names.len(), now);
            }
        }
        let pod = &pod;
        decisions
            .into_iter()
            .map(|decision| match decision {
                Decision::Reload { attempt } => Action::Reload {
                    pod: Arc::clone(pod),
                    attempt,
                    // Not before every Secret of the pod has listed: a value from a partial
                    // set would differ from other nodes' and roll the workload twice.
                    restart: self
                        .spec(&pod.controller)
                        .and_then(|s| s.restart)
                        .and_then(|_| self.index.secrets_of_pod_when_synced(uid))
                        .map(|views| restart_value(&views)),
                },
                Decision::Probe { names } => Action::Probe {
                    pod: Arc::clone(pod),
                    names,
                },
                Decision::Event { reason, note } => Action::Event {
                    pod: pod_ref(pod),
                    reason,
                    note,
                    // The Secret version at hand: one Event per version, each with its own
                    // note, instead of a series that keeps the first note.
                    related: self
                        .index
                        .secrets_of_pod(uid)
                        .first()
                        .map(|view| RelatedSecret {
                            namespace: view.namespace.clone(),
                            name: view.name.clone(),
                            uid: view.uid.clone(),
                            resource_version: view.resource_version.clone(),
                        }),
                },
                Decision::Finished { result, seconds } => Action::ReloadFinished {
                    pod: pod_ref(pod),
                    result,
                    seconds,
                },
            })
            .collect()
    }

    /// `mountlag_certificate_not_after_seconds{source="served"}` for the pod's Secrets: those
    /// it mounts (what it serves without SNI), and for route hosts, each host's Secret (what
    /// it serves for that host).
    fn served_not_after(&self, uid: &str, round: &ProbeRound) -> Vec<Action> {
        let Some(pod) = self.pods.get(uid) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        if let Some(hosts) = self.route_hosts.get(&pod.controller) {
            for host in &hosts.hosts {
                let served = round.served.iter().find_map(|(key, result)| {
                    (key.sni.as_deref() == Some(host.host.as_str()))
                        .then(|| result.as_ref().ok()?.not_after)
                        .flatten()
                });
                if let Some(unix) = served {
                    actions.push(Action::SetNotAfter {
                        namespace: host.secret.namespace.clone(),
                        secret: host.secret.name.clone(),
                        source: CertificateView::Served,
                        unix,
                    });
                }
            }
        }
        let Some(not_after) = round.default_leaf().and_then(|s| s.not_after) else {
            return actions;
        };
        actions.extend(pod.secret_names().map(|secret| Action::SetNotAfter {
            namespace: pod.namespace.clone(),
            secret: secret.to_string(),
            source: CertificateView::Served,
            unix: not_after,
        }));
        actions
    }
}

/// The notAfter the API's Secret holds: of its served leaves (a certificate with its key), the
/// earliest; `None` for a Secret without one.
/// The pod-template annotation value of a rolling restart: a digest of what the pod's Secrets
/// hold (names and key digests, not resourceVersions, so a metadata-only change restarts
/// nothing). Every node computes the same value from the same API view, so concurrent patches
/// from several agents agree and the workload rolls once.
pub fn restart_value(secrets: &[&SecretView]) -> String {
    use sha2::{Digest as _, Sha256};
    let mut sorted: Vec<&&SecretView> = secrets.iter().collect();
    sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut hasher = Sha256::new();
    for view in sorted {
        hasher.update(format!("{}/{}\n", view.namespace, view.name));
        for (key, digest) in &view.keys {
            hasher.update(format!("{key}={digest}\n"));
        }
    }
    hex::encode(hasher.finalize())[..16].to_string()
}

fn earliest_not_after(view: &SecretView) -> Option<i64> {
    match material_of_secrets(&view.certificates) {
        Material::Valid { leaves } => leaves.iter().map(|leaf| leaf.not_after).min(),
        Material::Invalid { .. } | Material::NoServedCertificate => None,
    }
}

/// A per-pod seed for the periodic checks' jitter (FNV-1a of the UID): stable, and different
/// for pods that start together.
fn jitter_seed(uid: &str) -> u64 {
    uid.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn pod_ref(pod: &ControllerPod) -> PodRef {
    PodRef {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
    }
}
