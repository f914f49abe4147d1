//! The one executor: performs every [`Action`] of the node model and turns what it learns
//! (a volume tracked and read, a reload done, a probe round) back into [`Input`]s.
//!
//! ```text
//!  Action ──▶ Effects::perform ─┬─ Nudge · Event · ObserveLag ──▶ Executor (API, rate limits)
//!                               ├─ WatchSecret · UnwatchSecret ──▶ one watch task per Secret
//!                               ├─ WatchRoutes · UnwatchRoutes ──▶ one cluster-wide watch per kind
//!                               ├─ WatchCluster · UnwatchCluster ▶ cert-manager kinds, a profile's pods
//!                               ├─ TrackVolume · ReadVolume ─────▶ inotify, kubelet::snapshot ─▶ Input now
//!                               ├─ Reload ─▶ cached pidfd signal ─▶ Input now │ blocking task ─▶ Input later
//!                               │          HTTP: task on this thread, kept-alive connection ─▶ Input later
//!                               ├─ Probe ──▶ TLS handshakes (task) ─────────────────────────▶ Input later
//!                               └─ metrics
//!  Publication ──▶ Effects::publish ──▶ /status snapshot, gauges
//! ```
//!
//! Inputs it can answer at once are returned, so the loop feeds them to the model before the
//! next observation; inputs that take I/O time arrive through the loop's channel.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mountlag_core::action::{Action, ClusterWatch};
use mountlag_core::cert::SharedPemCache;
use mountlag_core::node::{Input, Publication};
use mountlag_core::reconcile::SecretKey;
use mountlag_core::reconcile::reload::{FailureKind, ReloadFailure};
use mountlag_core::routes::RouteKind;
use mountlag_core::status::StatusSnapshot;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::http_reload::{HttpReloader, Spawner};
use super::metrics::{
    CertManagerFindingLabels, EffectMetrics, NotAfterLabels, ServedLabels, TlsHostLabels,
};
use super::reload::{
    TargetCache, probe_addresses, probe_round, reload_controller, signal_known_target, with_pod_ip,
};
use super::{EventReason, Executor, ExecutorMetrics, RestartOutcome, WorkloadRestarter};
use crate::config::{Config, ControllerProfile, ReloadAction};
use crate::disk::VolumeWatcher;
use crate::disk::{SnapshotError, snapshot_with};

/// Starts a watch on one Secret whose events go to the loop.
pub type SecretWatchSpawner = Box<dyn Fn(SecretKey) -> JoinHandle<()> + Send>;
/// Starts a cluster-wide watch of one Ingress or Gateway API kind.
pub type RouteWatchSpawner = Box<dyn Fn(RouteKind) -> JoinHandle<()> + Send>;
/// Starts a cluster-wide watch for the cert-manager view.
pub type ClusterWatchSpawner = Box<dyn Fn(ClusterWatch) -> JoinHandle<()> + Send>;

pub struct Effects {
    executor: Executor,
    metrics: EffectMetrics,
    config: Arc<Config>,
    /// The configuration's controllers by name, shared with the tasks that reload and probe
    /// (profiles do not change while the agent runs).
    profiles: HashMap<String, Arc<ControllerProfile>>,
    /// The configuration's controllers are the built-in defaults (metric label `origin`).
    controllers_are_defaults: bool,
    proc_root: PathBuf,
    targets: Arc<TargetCache>,
    /// One HTTP client for every HTTP reload: its connections are kept alive between reloads.
    http: HttpReloader,
    volumes: VolumeWatcher,
    /// PEM verdicts by content digest, pre-warmed by the Secret watches: a volume read after
    /// kubelet's swap finds the new certificate already parsed.
    pem_cache: SharedPemCache,
    secret_watches: HashMap<SecretKey, JoinHandle<()>>,
    spawn_secret_watch: SecretWatchSpawner,
    route_watches: HashMap<RouteKind, JoinHandle<()>>,
    spawn_route_watch: RouteWatchSpawner,
    cluster_watches: HashMap<ClusterWatch, JoinHandle<()>>,
    spawn_cluster_watch: ClusterWatchSpawner,
    restarter: Arc<dyn WorkloadRestarter>,
    /// Where results that take time go: the loop's input channel.
    later: mpsc::UnboundedSender<Input>,
    /// A task was handed to the loop thread's own `LocalSet` (an HTTP reload) since
    /// [`Self::take_local_work`] last looked.
    local_work_started: bool,
    status: watch::Sender<Arc<StatusSnapshot>>,
}

impl std::fmt::Debug for Effects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effects")
            .field("secret_watches", &self.secret_watches.len())
            .finish_non_exhaustive()
    }
}

/// What [`Effects`] acts on.
pub struct EffectTargets {
    pub executor: Executor,
    pub metrics: EffectMetrics,
    pub config: Arc<Config>,
    pub proc_root: PathBuf,
    pub volumes: VolumeWatcher,
    /// The cache the Secret watches spawned by `spawn_secret_watch` fill.
    pub pem_cache: SharedPemCache,
    pub spawn_secret_watch: SecretWatchSpawner,
    pub spawn_route_watch: RouteWatchSpawner,
    pub spawn_cluster_watch: ClusterWatchSpawner,
    /// Rolling restarts (reload mode `restart`).
    pub restarter: Arc<dyn WorkloadRestarter>,
    /// Runs HTTP reloads on the loop's own thread ([`super::http_reload::spawner_here`]).
    pub here: Spawner,
    pub later: mpsc::UnboundedSender<Input>,
    pub status: watch::Sender<Arc<StatusSnapshot>>,
}

impl std::fmt::Debug for EffectTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EffectTargets").finish_non_exhaustive()
    }
}

impl Effects {
    pub fn new(targets: EffectTargets) -> Self {
        Self {
            controllers_are_defaults: targets.config.controllers
                == crate::config::BuiltinProfile::default_controllers(),
            executor: targets.executor,
            metrics: targets.metrics,
            profiles: targets
                .config
                .controllers
                .iter()
                .map(|c| (c.name.clone(), Arc::new(c.clone())))
                .collect(),
            config: targets.config,
            proc_root: targets.proc_root,
            targets: Arc::new(TargetCache::default()),
            http: HttpReloader::with_spawner(targets.here),
            volumes: targets.volumes,
            pem_cache: targets.pem_cache,
            secret_watches: HashMap::new(),
            spawn_secret_watch: targets.spawn_secret_watch,
            route_watches: HashMap::new(),
            spawn_route_watch: targets.spawn_route_watch,
            cluster_watches: HashMap::new(),
            spawn_cluster_watch: targets.spawn_cluster_watch,
            restarter: targets.restarter,
            later: targets.later,
            local_work_started: false,
            status: targets.status,
        }
    }

    /// Performs one action; returns the input it produced at once, if any.
    pub fn perform(&mut self, action: Action) -> Option<Input> {
        match action {
            Action::Nudge { .. }
            | Action::Event { .. }
            | Action::RouteEvent { .. }
            | Action::ObjectEvent { .. }
            | Action::ObserveLag { .. } => {
                self.executor.execute(action);
                None
            }
            Action::WatchRoutes(kind) => {
                tracing::info!(
                    resource = kind.resource(),
                    "watching cluster-wide: a local controller's hosts come from it"
                );
                let task = (self.spawn_route_watch)(kind);
                if let Some(old) = self.route_watches.insert(kind, task) {
                    old.abort();
                }
                None
            }
            Action::WatchCluster(watch) => {
                tracing::info!(watch = ?watch, "watching cluster-wide for the cert-manager view");
                let task = (self.spawn_cluster_watch)(watch.clone());
                if let Some(old) = self.cluster_watches.insert(watch, task) {
                    old.abort();
                }
                None
            }
            Action::UnwatchCluster(watch) => {
                if let Some(task) = self.cluster_watches.remove(&watch) {
                    task.abort();
                }
                None
            }
            Action::UnwatchRoutes(kind) => {
                if let Some(task) = self.route_watches.remove(&kind) {
                    task.abort();
                }
                None
            }
            Action::WatchSecret(key) => {
                let task = (self.spawn_secret_watch)(key.clone());
                if let Some(old) = self.secret_watches.insert(key, task) {
                    old.abort();
                }
                None
            }
            Action::UnwatchSecret(key) => {
                if let Some(task) = self.secret_watches.remove(&key) {
                    task.abort();
                }
                None
            }
            Action::TrackVolume(path) => {
                let result = self.volumes.track(&path).map(drop).map_err(|err| {
                    tracing::debug!(volume = %path.display(), error = %err, "volume directory not there yet");
                    err.to_string()
                });
                Some(Input::VolumeTracked { path, result })
            }
            Action::UntrackVolume(path) => {
                self.volumes.untrack(&path);
                None
            }
            Action::ReadVolume(path) => {
                let read = snapshot_with(&path, Some(&self.pem_cache)).map_err(|err| {
                    if matches!(err, SnapshotError::Symlink { .. }) {
                        // Never kubelet's doing: worth a warning, not only an `unreadable` state.
                        tracing::warn!(volume = %path.display(), error = %err, "volume refused");
                    }
                    err.to_string()
                });
                Some(Input::VolumeRead { path, read })
            }
            Action::Reload {
                pod,
                attempt,
                restart,
            } => {
                let uid = pod.uid.clone();
                let Some(profile) = self.profile(&pod.controller) else {
                    return Some(Input::Reloaded {
                        uid,
                        result: Err(no_profile(&pod.controller)),
                    });
                };
                tracing::info!(namespace = %pod.namespace, pod = %pod.name, attempt, "reloading controller");
                let restarts = RestartTask {
                    restarter: Arc::clone(&self.restarter),
                    executor: self.executor.clone(),
                    metrics: self.metrics.executor.clone(),
                };
                let later = self.later.clone();
                if profile.reload == ReloadAction::Restart {
                    tokio::spawn(async move {
                        let result = restarts.restart(&pod, restart.as_deref()).await;
                        let _ = later.send(Input::Reloaded { uid, result });
                    });
                    return None;
                }
                if let ReloadAction::Http { url } = &profile.reload {
                    // No process to find: the request goes out on the agent's kept-alive
                    // connection, written from this thread (no hop to a worker first).
                    let url = with_pod_ip(url, &pod);
                    let http = self.http.clone();
                    let timeout = self.config.verify.timeout;
                    self.local_work_started = true;
                    self.http.spawner().spawn(async move {
                        let result = http
                            .reload(&url, timeout)
                            .await
                            .map_err(|err| super::reload::failed(err.to_string()));
                        let _ = later.send(Input::Reloaded { uid, result });
                    });
                    return None;
                }
                if let Some(result) =
                    signal_known_target(&self.proc_root, &uid, &profile, &self.targets)
                {
                    return Some(Input::Reloaded { uid, result });
                }
                let proc_root = self.proc_root.clone();
                let timeout = self.config.verify.timeout;
                let targets = Arc::clone(&self.targets);
                let http = self.http.clone();
                tokio::spawn(async move {
                    let fallback = profile.restart_fallback;
                    let mut result =
                        reload_controller(proc_root, &pod, &profile, timeout, targets, &http).await;
                    if fallback
                        && let Err(failure) = &result
                        && failure.kind == FailureKind::SignalWithheld
                    {
                        tracing::info!(namespace = %pod.namespace, pod = %pod.name, reason = %failure.message, "signal withheld: falling back to a rolling restart");
                        result = restarts.restart(&pod, restart.as_deref()).await;
                    }
                    let _ = later.send(Input::Reloaded { uid, result });
                });
                None
            }
            Action::Probe { pod, names } => {
                // Profiles do not change while the agent runs: every pod's profile exists.
                let profile = self.profile(&pod.controller)?;
                let later = self.later.clone();
                let addrs = probe_addresses(&pod, &profile);
                let timeout = self.config.verify.timeout.min(Duration::from_secs(2));
                let uid = pod.uid.clone();
                let metrics = self.metrics.executor.clone();
                tokio::spawn(async move {
                    let round = probe_round(addrs, names, timeout).await;
                    metrics.handshakes(&round);
                    let _ = later.send(Input::Probed { uid, round });
                });
                None
            }
            Action::ForgetPod(pod) => {
                self.targets.forget(&pod.uid);
                self.metrics.reload.forget_pod(&pod.namespace, &pod.name);
                None
            }
            Action::ReloadFinished {
                pod,
                result,
                seconds,
            } => {
                self.metrics
                    .reload
                    .finished(&pod.namespace, &pod.name, result, seconds);
                None
            }
            Action::CountApiError { resource, reason } => {
                self.metrics.executor.api_error(resource, &reason);
                None
            }
            Action::SetNotAfter {
                namespace,
                secret,
                source,
                unix,
            } => {
                self.set_not_after(namespace, secret, source.label(), unix);
                None
            }
        }
    }

    fn profile(&self, controller: &str) -> Option<Arc<ControllerProfile>> {
        self.profiles.get(controller).cloned()
    }

    fn set_not_after(&self, namespace: String, secret: String, source: &'static str, unix: i64) {
        self.metrics
            .reload
            .not_after
            .get_or_create(&NotAfterLabels {
                namespace,
                secret,
                source,
            })
            .set(unix);
    }

    /// Publishes the status and the gauges that go with it.
    /// Whether a task was handed to the loop thread since the last call: the loop lets it run
    /// (an HTTP reload writes its request) before it spends time on anything else.
    pub fn take_local_work(&mut self) -> bool {
        std::mem::take(&mut self.local_work_started)
    }

    pub fn publish(&self, publication: Publication) {
        self.metrics
            .inotify_watches
            .store(publication.tracked_volumes, Ordering::Relaxed);
        for (state, count) in &publication.mounts_by_state {
            self.metrics.agent.set_mounts(state.label(), *count);
        }
        for served in publication.served_matches {
            self.metrics
                .reload
                .served_match
                .get_or_create(&ServedLabels {
                    namespace: served.namespace,
                    pod: served.pod,
                    secret: served.secret,
                })
                .set(i64::from(served.matches));
        }
        // A profile whose last pod left takes its series with it.
        self.metrics.reload.tls_hosts.clear();
        for ((controller, state), count) in publication.tls_hosts {
            self.metrics
                .reload
                .tls_hosts
                .get_or_create(&TlsHostLabels {
                    controller,
                    state: state.label(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        self.metrics.reload.cert_manager_findings.clear();
        for series in publication.cert_manager_findings {
            self.metrics
                .reload
                .cert_manager_findings
                .get_or_create(&CertManagerFindingLabels {
                    reason: series.reason,
                    kind: series.kind,
                    namespace: series.namespace,
                    name: series.name,
                })
                .set(1);
        }
        for (namespace, secret, unix) in publication.not_after_on_disk {
            self.set_not_after(namespace, secret, "disk", unix);
        }
        self.metrics.agent.set_ready(publication.status.ready);
        self.metrics.agent.set_controller_pods(
            publication
                .controller_pods
                .iter()
                .map(|(name, count)| (name.as_str(), *count)),
            self.controllers_are_defaults,
        );
        self.status.send_replace(Arc::new(publication.status));
    }

    /// `/readyz` answers 503 with `why`, the mounts stay visible.
    pub fn mark_unready(&self, why: &str) {
        self.metrics.agent.set_ready(false);
        crate::admin::mark_unready(&self.status, why);
    }

    /// Stops every Secret and route watch.
    pub fn stop_watches(&mut self) {
        for (_, task) in self.secret_watches.drain() {
            task.abort();
        }
        for (_, task) in self.cluster_watches.drain() {
            task.abort();
        }
        for (_, task) in self.route_watches.drain() {
            task.abort();
        }
    }
}

fn no_profile(controller: &str) -> ReloadFailure {
    ReloadFailure {
        kind: FailureKind::Failed,
        message: format!("no controller profile named {controller:?} in the configuration"),
    }
}

/// A rolling restart on behalf of one pod: the restarter's patch, the Event of the agent whose
/// patch changed the template, and the answer the pod's reload machine waits for.
struct RestartTask {
    restarter: Arc<dyn WorkloadRestarter>,
    executor: Executor,
    metrics: ExecutorMetrics,
}

impl RestartTask {
    async fn restart(
        &self,
        pod: &mountlag_core::pod::ControllerPod,
        value: Option<&str>,
    ) -> Result<(), ReloadFailure> {
        let Some(value) = value else {
            return Err(ReloadFailure {
                kind: FailureKind::Failed,
                message: "no restart value for this pod (its Secrets are not synced)".into(),
            });
        };
        let pod_ref = mountlag_core::reconcile::PodRef {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        };
        match self.restarter.restart(&pod_ref, value).await {
            Ok(RestartOutcome::Requested { workload }) => {
                tracing::info!(namespace = %pod.namespace, pod = %pod.name, kind = workload.kind, workload = %workload.name, %value, "rolling restart requested");
                let note = format!(
                    "The Secrets of pod {} changed and the new material is valid; {} cannot hot-reload, so its pod template was annotated {}={value}: the {} controller replaces the pods as its strategy and PodDisruptionBudgets allow.",
                    pod.name,
                    pod.controller,
                    mountlag_core::pod::RESTART_ANNOTATION,
                    workload.kind
                );
                self.executor.publish(
                    workload,
                    EventReason::RollingRestartRequested.into(),
                    note,
                    None,
                );
                Ok(())
            }
            Ok(RestartOutcome::AlreadyRequested { workload }) => {
                tracing::info!(namespace = %pod.namespace, pod = %pod.name, kind = workload.kind, workload = %workload.name, %value, "rolling restart already requested");
                Ok(())
            }
            Err(failure) => {
                self.metrics.api_error("workloads", &failure.reason);
                Err(ReloadFailure {
                    kind: FailureKind::Failed,
                    message: format!("rolling restart not requested: {}", failure.message),
                })
            }
        }
    }
}
