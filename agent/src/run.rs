//! `mountlag agent`: the wiring. Watches feed one loop; the loop feeds the pure index and hands
//! its actions to the executor.
//!
//! ```text
//!  pod watch (spec.nodeName) ──┐
//!  Secret watches (1 per ref) ─┼─▶ Input channel ──▶ MountIndex (pure) ──▶ Executor
//!  VolumeWatcher (inotify) ────┘        ▲                  │
//!                        timer (next deadline)             └─▶ status snapshot, gauges
//! ```
//!
//! One task owns the index; every other task only sends it inputs. A pod watch or inotify loop
//! that dies ends the agent with an error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Client;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::actions::kube_sinks::{KubeEventPublisher, KubePodPatcher, api_failure};
use crate::actions::reload::{
    ReloadMetrics, TargetCache, probe_address, probe_round, reload_controller, signal_known_target,
};
use crate::actions::{EventLimiter, Executor, ExecutorMetrics, RelatedSecret};
use crate::admin::{self, AgentMetrics, DiskStatus, Heartbeat, Liveness, StatusSnapshot};
use crate::config::{Config, ControllerProfile, ReloadAction as ProfileReload, ReloadMode};
use crate::discovery::{ControllerPod, SecretView};
use crate::kubelet::{KubeletRoot, snapshot};
use crate::reconcile::material::{material_of_secrets, material_of_snapshot};
use crate::reconcile::reload::{
    ExpectedLeaf, Material, PodReload, ProbeRound, ReloadAction, ReloadFailure, ReloadInput,
    ReloadKind, ReloadLimits,
};
use crate::reconcile::{
    CertificateStatus, DiskView, MountIndex, PodRef, SecretKey, ServedStatus, Thresholds,
};
use crate::watch::{RescanReason, VolumeChange, VolumeWatcher, WatcherConfig};

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub config: Config,
    pub node_name: String,
    pub kubelet_root: PathBuf,
    pub proc_root: PathBuf,
    pub listen: SocketAddr,
    /// `--status-listen`: a second, node-local listener that serves every endpoint; `/status`
    /// is then served only there. `None`: `/status` on `listen`.
    pub status_listen: Option<SocketAddr>,
}

/// Inputs handled back to back before the loop looks at timers and publishes again.
const MAX_BATCH: usize = 256;
/// The status snapshot is rebuilt at most this often: it costs O(mounts) (~8 ms at 1,000), and
/// /status, /readyz and `mountlag status --watch` do not need fresher data.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// Everything that can happen, in one channel to the loop.
#[derive(Debug)]
enum LoopInput {
    PodsListed(Vec<(ControllerPod, ControllerProfile)>),
    PodApplied(Box<Pod>),
    PodDeleted(String),
    PodWatchFailed(String),
    SecretObserved(SecretKey, Option<SecretView>),
    SecretWatchFailed(SecretKey, String),
    Volume(VolumeChange),
    Reloaded(String, Result<(), ReloadFailure>),
    Probed(String, ProbeRound),
}

/// Runs the agent until `shutdown` resolves.
pub async fn run_agent(
    options: AgentOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let kube_config = kube::Config::infer()
        .await
        .context("cannot configure the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let client = crate::apiclient::build(kube_config, options.config.api)
        .context("cannot configure the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let mut registry = Registry::default();
    let executor_metrics = ExecutorMetrics::register(&mut registry);
    let agent_metrics = AgentMetrics::register(&mut registry);
    let rescans = crate::watch::WatchMetrics::register(&mut registry);
    let reload_metrics = ReloadMetrics::register(&mut registry);
    let inotify_watches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    admin::register_inotify_watches(&mut registry, Arc::clone(&inotify_watches));
    let registry = Arc::new(registry);

    let kubelet = KubeletRoot::new(&options.kubelet_root);
    let disk = match crate::kubelet::check_readable(&kubelet) {
        Ok(()) => DiskStatus {
            checked: true,
            kubelet_root: options.kubelet_root.display().to_string(),
            reason: None,
        },
        Err(reason) => {
            tracing::warn!(
                %reason,
                "no kubelet root: checking served certificates against the API only; no disk \
                 comparison, nudge or reload on this node"
            );
            DiskStatus {
                checked: false,
                kubelet_root: options.kubelet_root.display().to_string(),
                reason: Some(format!(
                    "{reason}: served certificates are checked against the API only; mounts \
                     are not compared on disk, nudged or reloaded"
                )),
            }
        }
    };
    let (status_tx, status_rx) = watch::channel(Arc::new(StatusSnapshot {
        node: options.node_name.clone(),
        ready: false,
        waiting_for: vec!["pods not listed yet".into()],
        disk: disk.clone(),
        mounts: Vec::new(),
    }));
    let listener = admin::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let status_listener = match options.status_listen {
        Some(addr) => Some(
            admin::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--status-listen)"))?,
        ),
        None => None,
    };
    tracing::info!(
        listen = %options.listen,
        status_listen = ?options.status_listen,
        node = %options.node_name,
        "mountlag agent starting"
    );
    let liveness = Liveness::new();
    let reconcile_beat = liveness.register(admin::loops::RECONCILE, Duration::from_secs(30));
    let pods_beat = liveness.register(admin::loops::POD_WATCH, Duration::from_secs(30));
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    let admin_stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let admin_server =
        admin::AdminServer::new(Arc::clone(&registry), status_rx).liveness(liveness.clone());
    // Each listener has its own connection slots: clients of the public one (pod network)
    // cannot take those of the node-local one.
    let mut admin_tasks = vec![tokio::spawn(
        admin_server
            .clone()
            .serve_status(status_listener.is_none())
            .serve(listener, admin_stopped(admin_stop_rx.clone())),
    )];
    if let Some(status_listener) = status_listener {
        admin_tasks.push(tokio::spawn(
            admin_server.serve(status_listener, admin_stopped(admin_stop_rx)),
        ));
    }

    let (input_tx, mut input_rx) = mpsc::unbounded_channel();
    let volume_tx = input_tx.clone();
    let volumes = VolumeWatcher::new(
        WatcherConfig::default(),
        Box::new(move |change| {
            let _ = volume_tx.send(LoopInput::Volume(change));
        }),
    )
    .context("cannot start the inotify watcher")?;

    let config = Arc::new(options.config.clone());
    let pod_task = tokio::spawn(watch_pods(
        client.clone(),
        options.node_name.clone(),
        Arc::clone(&config),
        input_tx.clone(),
        pods_beat,
    ));

    let executor = Executor::new(
        Arc::new(KubePodPatcher::new(client.clone())),
        Arc::new(KubeEventPublisher::new(client.clone(), &options.node_name)),
        EventLimiter::default(),
        executor_metrics.clone(),
    );
    let limits = Thresholds {
        nudge_enabled: config.nudge.enabled,
        nudge_after: config.nudge.after,
        stuck_after: config.stuck_after,
    };
    let mut agent = AgentLoop {
        index: if disk.checked {
            MountIndex::new(kubelet, limits)
        } else {
            MountIndex::new(kubelet, limits).without_disk()
        },
        disk,
        config,
        client,
        input_tx,
        secret_watches: HashMap::new(),
        tracked: BTreeSet::new(),
        untrackable: BTreeSet::new(),
        volumes,
        executor,
        executor_metrics,
        agent_metrics,
        rescans,
        reload_metrics,
        reloads: HashMap::new(),
        controllers: HashMap::new(),
        controllers_are_defaults: options.config.controllers
            == crate::config::BuiltinProfile::default_controllers(),
        generations: HashMap::new(),
        leaves_on_disk: HashMap::new(),
        proc_root: options.proc_root.clone(),
        targets: Arc::new(TargetCache::default()),
        inotify_watches,
        pods_listed: false,
        node: options.node_name.clone(),
        status_tx,
        unpublished: true,
        published_at: None,
        pods_changed: false,
    };

    tokio::pin!(shutdown);
    let stall_for_test = Liveness::stall_requested(admin::loops::RECONCILE);
    let result = loop {
        if stall_for_test && agent.status_tx.borrow().ready {
            // Test hook (MOUNTLAG_TEST_STALL): wedge the loop so /livez must notice.
            tracing::warn!("MOUNTLAG_TEST_STALL: the reconcile loop stops making progress");
            std::future::pending::<()>().await;
        }
        let deadline = agent.next_deadline();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            input = input_rx.recv() => match input {
                Some(input) => {
                    agent.handle(input);
                    // A burst (every Secret listed at start, a kubelet sync touching many
                    // volumes) is handled as one batch: one status snapshot, not one per input.
                    for _ in 0..MAX_BATCH {
                        match input_rx.try_recv() {
                            Ok(input) => agent.handle(input),
                            Err(_) => break,
                        }
                    }
                }
                None => break Err(anyhow::anyhow!("every input of the agent loop closed")),
            },
            () = sleep => agent.tick(),
            () = reconcile_beat.pinged() => {}
        }
        reconcile_beat.beat();
        if pod_task.is_finished() {
            break Err(anyhow::anyhow!("the pod watch stopped"));
        }
        agent.publish_if_due(Instant::now());
    };
    agent.mark_unready("shutting down");
    // Let load balancers and kubelet see the unready answer before the listener closes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (_, task) in agent.secret_watches.drain() {
        task.abort();
    }
    pod_task.abort();
    let _ = admin_stop_tx.send(true);
    for task in admin_tasks {
        let _ = task.await;
    }
    tracing::info!("mountlag agent stopped");
    result
}

struct AgentLoop {
    index: MountIndex,
    config: Arc<Config>,
    client: Client,
    input_tx: mpsc::UnboundedSender<LoopInput>,
    secret_watches: HashMap<SecretKey, JoinHandle<()>>,
    /// Volume directories the watcher tracks.
    tracked: BTreeSet<PathBuf>,
    /// Volume directories that do not exist yet (kubelet has not set them up): retried on
    /// every mount table change.
    untrackable: BTreeSet<PathBuf>,
    volumes: VolumeWatcher,
    executor: Executor,
    executor_metrics: ExecutorMetrics,
    agent_metrics: AgentMetrics,
    rescans: crate::watch::WatchMetrics,
    reload_metrics: ReloadMetrics,
    /// One reload state machine per controller pod.
    reloads: HashMap<String, PodReload>,
    /// The pod and its profile, for reloads and probes.
    controllers: HashMap<String, (ControllerPod, ControllerProfile)>,
    /// The configuration's controllers are the built-in defaults (metric label `origin`).
    controllers_are_defaults: bool,
    /// Last generation seen per volume directory: a change is new material.
    generations: HashMap<PathBuf, Option<String>>,
    /// Leaves of the last snapshot per volume directory, for /status and metrics.
    leaves_on_disk: HashMap<PathBuf, Vec<ExpectedLeaf>>,
    proc_root: PathBuf,
    targets: Arc<TargetCache>,
    /// Volume directories under an inotify watch, for `mountlag_inotify_watches`.
    inotify_watches: Arc<std::sync::atomic::AtomicUsize>,
    pods_listed: bool,
    node: String,
    status_tx: watch::Sender<Arc<StatusSnapshot>>,
    /// Something changed since the last status snapshot.
    unpublished: bool,
    published_at: Option<Instant>,
    /// The pod set changed: the wanted Secret watches and volume directories may differ.
    pods_changed: bool,
    /// Whether kubelet's volume directories are read (see [`DiskStatus`]).
    disk: DiskStatus,
}

impl AgentLoop {
    fn handle(&mut self, input: LoopInput) {
        let now = Instant::now();
        self.unpublished = true;
        if matches!(
            input,
            LoopInput::PodsListed(_) | LoopInput::PodApplied(_) | LoopInput::PodDeleted(_)
        ) {
            self.pods_changed = true;
        }
        let actions = match input {
            LoopInput::PodsListed(pods) => {
                self.pods_listed = true;
                let mut actions = self.index.set_pods_healthy(true, now);
                let keep: BTreeSet<String> = pods.iter().map(|(p, _)| p.uid.clone()).collect();
                let gone: Vec<String> = self
                    .controllers
                    .keys()
                    .filter(|uid| !keep.contains(*uid))
                    .cloned()
                    .collect();
                for uid in gone {
                    self.forget_pod(&uid);
                }
                for (pod, profile) in &pods {
                    self.remember_pod(pod.clone(), profile.clone());
                }
                let pods = pods
                    .into_iter()
                    .map(|(pod, profile)| (pod, profile.containers))
                    .collect();
                actions.extend(self.index.replace_pods(pods, now));
                for uid in &keep {
                    self.api_leaves_of_pod(uid, now);
                }
                actions
            }
            LoopInput::PodApplied(pod) => {
                let mut actions = self.index.set_pods_healthy(true, now);
                match select_controller(&self.config, &pod) {
                    Some((controller, profile)) => {
                        let uid = controller.uid.clone();
                        self.remember_pod(controller.clone(), profile.clone());
                        actions.extend(self.index.upsert_pod(controller, profile.containers, now));
                        self.api_leaves_of_pod(&uid, now);
                    }
                    None => {
                        if let Some(uid) = pod.metadata.uid.as_deref() {
                            self.index.remove_pod(uid);
                            self.forget_pod(uid);
                        }
                    }
                }
                actions
            }
            LoopInput::PodDeleted(uid) => {
                self.index.remove_pod(&uid);
                self.forget_pod(&uid);
                Vec::new()
            }
            LoopInput::PodWatchFailed(reason) => {
                self.executor_metrics.api_error("pods", &reason);
                self.index.set_pods_healthy(false, now)
            }
            LoopInput::SecretObserved(key, view) => {
                let actions = self.index.secret_observed(&key, view, now);
                self.api_leaves_changed(&key, now);
                actions
            }
            LoopInput::SecretWatchFailed(key, reason) => {
                self.executor_metrics.api_error("secrets", &reason);
                self.index.secret_watch_health(&key, false, now)
            }
            LoopInput::Volume(change) => self.volume_changed(change, now),
            LoopInput::Reloaded(uid, result) => {
                self.step_reload(&uid, ReloadInput::Reloaded(result), now);
                Vec::new()
            }
            LoopInput::Probed(uid, round) => {
                self.record_served(&uid, &round);
                self.step_reload(&uid, ReloadInput::Probed(round), now);
                Vec::new()
            }
        };
        // Only pods add or remove Secret references and volume directories; both sets cost
        // O(mounts) to compute.
        let mut more = Vec::new();
        if std::mem::take(&mut self.pods_changed) {
            self.sync_secret_watches();
            more = self.sync_volumes(now);
        }
        more.extend(actions);
        for action in more {
            self.executor.execute(action);
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        self.unpublished = true;
        for action in self.index.tick(now) {
            self.executor.execute(action);
        }
        let due: Vec<String> = self
            .reloads
            .iter()
            .filter(|(_, r)| r.next_deadline().is_some_and(|d| d <= now))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in due {
            self.step_reload(&uid, ReloadInput::Tick, now);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let reloads = self
            .reloads
            .values()
            .filter_map(PodReload::next_deadline)
            .min();
        let publish = self.publish_deadline();
        [self.index.next_deadline(), reloads, publish]
            .into_iter()
            .flatten()
            .min()
    }

    fn publish_deadline(&self) -> Option<Instant> {
        if !self.unpublished {
            return None;
        }
        Some(
            self.published_at
                .map_or_else(Instant::now, |at| at + PUBLISH_EVERY),
        )
    }

    fn publish_if_due(&mut self, now: Instant) {
        if self.unpublished && self.published_at.is_none_or(|at| now >= at + PUBLISH_EVERY) {
            self.publish();
        }
    }

    fn remember_pod(&mut self, pod: ControllerPod, profile: ControllerProfile) {
        let uid = pod.uid.clone();
        if !self.reloads.contains_key(&uid) {
            let kind = match (profile.mode, &profile.reload) {
                // Without disk, the API is the only source of what should be served; and a
                // probe-only install could not signal anyway (no host PID namespace).
                _ if !self.disk.checked => ReloadKind::ApiDriven,
                (ReloadMode::Api, _) => ReloadKind::ApiDriven,
                (ReloadMode::Files, ProfileReload::None) => ReloadKind::VerifyOnly,
                (ReloadMode::Files, _) => ReloadKind::Reload,
            };
            let limits = ReloadLimits {
                min_interval: self.config.reload.min_interval,
                verify_timeout: self.config.verify.timeout,
                wait_for_others: self.config.stuck_after,
                expiry_warn_before: self.config.expiry.warn_before,
                max_attempts: 3,
            };
            let pod_ref = PodRef {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid: uid.clone(),
            };
            self.reloads.insert(
                uid.clone(),
                PodReload::new(pod_ref, kind, limits, profile.probe.hosts.clone()),
            );
        }
        self.controllers.insert(uid, (pod, profile));
    }

    fn forget_pod(&mut self, uid: &str) {
        self.reloads.remove(uid);
        self.targets.forget(uid);
        if let Some((pod, _)) = self.controllers.remove(uid) {
            self.reload_metrics.forget_pod(&pod.namespace, &pod.name);
        }
    }

    /// Controllers that read Secrets from the API (and, without disk, every controller) are
    /// verified against the API's leaves.
    fn api_leaves_changed(&mut self, key: &SecretKey, now: Instant) {
        for uid in self.index.pods_of_secret(key) {
            self.api_leaves_of_pod(&uid, now);
        }
    }

    /// Feeds the pod's reload its expected leaves from the API; a no-op when they are unchanged
    /// (so a pod seen after its Secrets is verified too).
    fn api_leaves_of_pod(&mut self, uid: &str, now: Instant) {
        let Some((_, profile)) = self.controllers.get(uid) else {
            return;
        };
        if profile.mode != ReloadMode::Api && self.disk.checked {
            return;
        }
        let mut leaves = Vec::new();
        for view in self.index.secrets_of_pod(uid) {
            if let Material::Valid { leaves: found } = material_of_secrets(&view.certificates) {
                leaves.extend(found);
            }
        }
        self.step_reload(uid, ReloadInput::ApiLeaves { leaves }, now);
    }

    fn step_reload(&mut self, uid: &str, input: ReloadInput, now: Instant) {
        let lagging = self.index.lagging_volumes(uid);
        let Some(reload) = self.reloads.get_mut(uid) else {
            return;
        };
        let mut actions = reload.step(ReloadInput::Lagging(lagging), now);
        actions.extend(reload.step(input, now));
        for action in actions {
            self.perform_reload_action(uid, action);
        }
    }

    fn perform_reload_action(&mut self, uid: &str, action: ReloadAction) {
        let Some((pod, profile)) = self.controllers.get(uid).cloned() else {
            return;
        };
        match action {
            ReloadAction::Reload { attempt, .. } => {
                tracing::info!(namespace = %pod.namespace, pod = %pod.name, attempt, "reloading controller");
                if let Some(result) =
                    signal_known_target(&self.proc_root, uid, &profile, &self.targets)
                {
                    // Through the channel, not a nested step: the actions of this step finish
                    // first, as they would with the asynchronous path.
                    let _ = self
                        .input_tx
                        .send(LoopInput::Reloaded(uid.to_string(), result));
                    return;
                }
                let tx = self.input_tx.clone();
                let proc_root = self.proc_root.clone();
                let timeout = self.config.verify.timeout;
                let uid = uid.to_string();
                let targets = Arc::clone(&self.targets);
                tokio::spawn(async move {
                    let result = reload_controller(proc_root, pod, profile, timeout, targets).await;
                    let _ = tx.send(LoopInput::Reloaded(uid, result));
                });
            }
            ReloadAction::Probe { names, .. } => {
                let tx = self.input_tx.clone();
                let addr = probe_address(&pod, &profile);
                let timeout = self
                    .config
                    .verify
                    .timeout
                    .min(std::time::Duration::from_secs(2));
                let uid = uid.to_string();
                tokio::spawn(async move {
                    let round = probe_round(addr, names, timeout).await;
                    let _ = tx.send(LoopInput::Probed(uid, round));
                });
            }
            ReloadAction::Event { pod, reason, note } => {
                // Related to the Secret version at hand: one Event per version, each with its
                // own note, instead of a series that keeps the first note.
                let related = self
                    .index
                    .secrets_of_pod(uid)
                    .first()
                    .map(|view| RelatedSecret {
                        namespace: view.namespace.clone(),
                        name: view.name.clone(),
                        uid: view.uid.clone(),
                        resource_version: view.resource_version.clone(),
                    });
                self.executor.publish(pod, reason.into(), note, related)
            }
            ReloadAction::Finished {
                pod,
                result,
                seconds,
            } => {
                self.reload_metrics
                    .finished(&pod.namespace, &pod.name, result, seconds);
            }
        }
    }

    /// Served-certificate gauges after a probe.
    fn record_served(&mut self, uid: &str, round: &ProbeRound) {
        let Some((pod, _)) = self.controllers.get(uid) else {
            return;
        };
        let served = round.served.get(&None).and_then(|r| r.as_ref().ok());
        let secrets: Vec<String> = pod.secret_names().map(str::to_owned).collect();
        for secret in secrets {
            if let Some(not_after) = served.and_then(|s| s.not_after) {
                self.reload_metrics
                    .not_after
                    .get_or_create(&crate::actions::reload::NotAfterLabels {
                        namespace: pod.namespace.clone(),
                        secret,
                        source: "served",
                    })
                    .set(not_after);
            }
        }
    }

    fn volume_changed(
        &mut self,
        change: VolumeChange,
        now: Instant,
    ) -> Vec<crate::reconcile::Action> {
        match change {
            VolumeChange::Generation { volume, .. } => self.read_volume(&volume, now),
            VolumeChange::Unmounted { volume } => {
                self.tracked.remove(&volume);
                self.volumes.untrack(&volume);
                if self.index.volume_paths().contains(&volume) {
                    self.untrackable.insert(volume.clone());
                }
                self.index.disk_observed(
                    &volume,
                    DiskView::Unreadable {
                        reason: "the volume was unmounted".into(),
                    },
                    now,
                )
            }
            VolumeChange::MountsChanged { mount_points } => {
                self.rescans.rescanned(RescanReason::MountTable);
                // Directories kubelet has mounted since are trackable now.
                let retry: Vec<PathBuf> = self
                    .untrackable
                    .iter()
                    .filter(|p| mount_points.iter().any(|m| p.starts_with(m)))
                    .cloned()
                    .collect();
                retry
                    .into_iter()
                    .flat_map(|p| {
                        self.untrackable.remove(&p);
                        self.track(p, now)
                    })
                    .collect()
            }
            VolumeChange::Rescanned { reason } => {
                self.rescans.rescanned(reason);
                if reason == RescanReason::MountTable || reason == RescanReason::Safety {
                    // Directories kubelet has created since are trackable now.
                    let retry: Vec<PathBuf> = self.untrackable.iter().cloned().collect();
                    self.untrackable.clear();
                    return retry.into_iter().flat_map(|p| self.track(p, now)).collect();
                }
                Vec::new()
            }
        }
    }

    /// Starts a watch for every newly referenced Secret and stops the ones no longer needed.
    fn sync_secret_watches(&mut self) {
        let wanted = self.index.wanted_secrets();
        self.secret_watches.retain(|key, task| {
            let keep = wanted.contains(key);
            if !keep {
                task.abort();
            }
            keep
        });
        for key in wanted {
            if !self.secret_watches.contains_key(&key) {
                let task = tokio::spawn(watch_secret(
                    self.client.clone(),
                    key.clone(),
                    self.input_tx.clone(),
                ));
                self.secret_watches.insert(key, task);
            }
        }
    }

    /// Tracks every volume directory the index knows, untracks the rest.
    fn sync_volumes(&mut self, now: Instant) -> Vec<crate::reconcile::Action> {
        let wanted = self.index.volume_paths();
        let gone: Vec<PathBuf> = self
            .tracked
            .iter()
            .filter(|p| !wanted.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            self.volumes.untrack(&path);
            self.tracked.remove(&path);
        }
        self.untrackable.retain(|p| wanted.contains(p));
        let new: Vec<PathBuf> = wanted
            .into_iter()
            .filter(|p| !self.tracked.contains(p) && !self.untrackable.contains(p))
            .collect();
        new.into_iter().flat_map(|p| self.track(p, now)).collect()
    }

    fn track(&mut self, path: PathBuf, now: Instant) -> Vec<crate::reconcile::Action> {
        match self.volumes.track(&path) {
            Ok(_) => {
                self.tracked.insert(path.clone());
                self.read_volume(&path, now)
            }
            Err(err) => {
                tracing::debug!(volume = %path.display(), error = %err, "volume directory not there yet");
                self.untrackable.insert(path);
                Vec::new()
            }
        }
    }

    /// Snapshots a volume: the digests go to the index, and a new generation's material to the
    /// pod's reload state machine.
    fn read_volume(&mut self, path: &Path, now: Instant) -> Vec<crate::reconcile::Action> {
        let (disk, material) = match snapshot(path) {
            Ok(snap) => {
                let material = material_of_snapshot(&snap, time::OffsetDateTime::now_utc());
                let disk = DiskView::Files {
                    generation: snap.generation,
                    files: snap.files.into_iter().map(|f| (f.path, f.sha256)).collect(),
                };
                (disk, Some(material))
            }
            Err(err) => {
                if matches!(err, crate::kubelet::SnapshotError::Symlink { .. }) {
                    // Never kubelet's doing: worth a warning, not only an `unreadable` state.
                    tracing::warn!(volume = %path.display(), error = %err, "volume refused");
                }
                (
                    DiskView::Unreadable {
                        reason: err.to_string(),
                    },
                    None,
                )
            }
        };
        let generation = match &disk {
            DiskView::Files { generation, .. } => generation.clone(),
            DiskView::Unreadable { .. } | DiskView::NotChecked => None,
        };
        let previous = self
            .generations
            .insert(path.to_path_buf(), generation.clone());
        if let Some(Material::Valid { leaves }) = &material {
            self.leaves_on_disk
                .insert(path.to_path_buf(), leaves.clone());
        }
        let actions = self.index.disk_observed(path, disk, now);
        // The first sighting is what the controller started with; only a change is a rotation.
        if let (Some(Some(_)), Some(generation), Some(material)) =
            (previous.as_ref(), generation, material)
            && previous != Some(Some(generation.clone()))
            && let Some(key) = self.index.mount_at(path).cloned()
        {
            self.step_reload(
                &key.pod_uid,
                ReloadInput::NewMaterial {
                    volume: key.volume.clone(),
                    generation,
                    material,
                },
                now,
            );
        }
        actions
    }

    fn waiting_for(&self) -> Vec<String> {
        let mut waiting = Vec::new();
        if !self.pods_listed {
            waiting.push("pods not listed yet".to_string());
        }
        let unsynced = self.index.unsynced_secrets();
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
        let unscanned = self
            .tracked
            .iter()
            .filter(|p| !self.index.volume_scanned(p))
            .count();
        if unscanned > 0 {
            waiting.push(format!("{unscanned} volume(s) not scanned"));
        }
        waiting
    }

    fn publish(&mut self) {
        let now = Instant::now();
        self.unpublished = false;
        self.published_at = Some(now);
        self.inotify_watches
            .store(self.tracked.len(), std::sync::atomic::Ordering::Relaxed);
        for (state, count) in self.index.count_by_state() {
            self.agent_metrics.set_mounts(state.label(), count);
        }
        let waiting_for = self.waiting_for();
        let mut mounts = self.index.status(now);
        let today = time::OffsetDateTime::now_utc().unix_timestamp();
        for mount in &mut mounts {
            mount.certificate = self
                .leaves_on_disk
                .get(&mount.path)
                .and_then(|l| l.first())
                .map(|leaf| CertificateStatus {
                    fingerprint_sha256: leaf.fingerprint.clone(),
                    not_after: time::OffsetDateTime::from_unix_timestamp(leaf.not_after)
                        .ok()
                        .and_then(|t| {
                            t.format(&time::format_description::well_known::Rfc3339)
                                .ok()
                        })
                        .unwrap_or_default(),
                    days_to_expiry: (leaf.not_after - today).div_euclid(86_400),
                });
            if let Some(reload) = self.reloads.get(&mount.pod_uid) {
                mount.served = Some(ServedStatus {
                    fingerprint_sha256: reload.served_fingerprint().map(str::to_owned),
                    matches: reload.served_matches(),
                });
                mount.last_reload = reload.last_result().map(|r| r.label());
                mount.last_reload_message = reload.last_message().map(str::to_owned);
                if let Some(matches) = reload.served_matches() {
                    for secret in &mount.secrets {
                        self.reload_metrics
                            .served_match
                            .get_or_create(&crate::actions::reload::ServedLabels {
                                namespace: mount.namespace.clone(),
                                pod: mount.pod.clone(),
                                secret: secret.name.clone(),
                            })
                            .set(i64::from(matches));
                    }
                }
            }
            if let Some(cert) = self.leaves_on_disk.get(&mount.path).and_then(|l| l.first()) {
                for secret in &mount.secrets {
                    self.reload_metrics
                        .not_after
                        .get_or_create(&crate::actions::reload::NotAfterLabels {
                            namespace: mount.namespace.clone(),
                            secret: secret.name.clone(),
                            source: "disk",
                        })
                        .set(cert.not_after);
                }
            }
        }
        self.agent_metrics.set_ready(waiting_for.is_empty());
        let mut selected: BTreeMap<&str, usize> = self
            .config
            .controllers
            .iter()
            .map(|c| (c.name.as_str(), 0))
            .collect();
        for (_, profile) in self.controllers.values() {
            *selected.entry(profile.name.as_str()).or_default() += 1;
        }
        self.agent_metrics
            .set_controller_pods(selected, self.controllers_are_defaults);
        let snapshot = StatusSnapshot {
            node: self.node.clone(),
            ready: waiting_for.is_empty(),
            waiting_for,
            disk: self.disk.clone(),
            mounts,
        };
        self.status_tx.send_replace(Arc::new(snapshot));
    }

    fn mark_unready(&mut self, why: &str) {
        self.agent_metrics.set_ready(false);
        let mut snapshot = (**self.status_tx.borrow()).clone();
        snapshot.ready = false;
        snapshot.waiting_for = vec![why.to_string()];
        self.status_tx.send_replace(Arc::new(snapshot));
    }
}

/// The first controller profile that selects the pod.
fn select_controller(config: &Config, pod: &Pod) -> Option<(ControllerPod, ControllerProfile)> {
    let namespace = pod.metadata.namespace.as_deref()?;
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let profile = config
        .controllers
        .iter()
        .find(|c| c.selects(namespace, &labels))?;
    let controller = crate::discovery::controller_pod(pod, &profile.name)?;
    Some((controller, profile.clone()))
}

/// One watch on the node's pods; label selectors are applied here, not by the API server,
/// because several profiles may select different pods of the node.
async fn watch_pods(
    client: Client,
    node: String,
    config: Arc<Config>,
    tx: mpsc::UnboundedSender<LoopInput>,
    beat: Heartbeat,
) {
    let api: Api<Pod> = Api::all(client);
    let watch_config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher::watcher(api, watch_config)
        .default_backoff()
        .boxed();
    let mut listing: Vec<(ControllerPod, ControllerProfile)> = Vec::new();
    loop {
        // An API outage is not a wedged loop: pings are answered while waiting for the stream.
        let next = beat.answer_pings_while(stream.try_next()).await;
        beat.beat();
        let input = match next {
            Ok(Some(Event::Init)) => {
                listing.clear();
                continue;
            }
            Ok(Some(Event::InitApply(pod))) => {
                listing.extend(select_controller(&config, &pod));
                continue;
            }
            Ok(Some(Event::InitDone)) => LoopInput::PodsListed(std::mem::take(&mut listing)),
            Ok(Some(Event::Apply(pod))) => LoopInput::PodApplied(Box::new(pod)),
            Ok(Some(Event::Delete(pod))) => match pod.metadata.uid {
                Some(uid) => LoopInput::PodDeleted(uid),
                None => continue,
            },
            Ok(None) => return,
            Err(err) => {
                // kube's error quotes the API server's answer: escaped and cut.
                tracing::warn!(error = %crate::text::untrusted_capped(&err.to_string(), crate::text::MAX_MESSAGE_BYTES), "pod watch failed; retrying with backoff");
                LoopInput::PodWatchFailed(watch_error_reason(&err))
            }
        };
        if tx.send(input).is_err() {
            return;
        }
    }
}

/// One watch per referenced Secret, field-selected by name: never a namespace-wide list.
async fn watch_secret(client: Client, key: SecretKey, tx: mpsc::UnboundedSender<LoopInput>) {
    let api: Api<Secret> = Api::namespaced(client, &key.namespace);
    let watch_config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
    let mut stream = watcher::watcher(api, watch_config)
        .default_backoff()
        .boxed();
    let mut listed: Option<SecretView> = None;
    loop {
        let input = match stream.try_next().await {
            Ok(Some(Event::Init)) => {
                listed = None;
                continue;
            }
            Ok(Some(Event::InitApply(secret))) => {
                listed = crate::discovery::secret_view(&secret);
                continue;
            }
            Ok(Some(Event::InitDone)) => LoopInput::SecretObserved(key.clone(), listed.take()),
            Ok(Some(Event::Apply(secret))) => {
                LoopInput::SecretObserved(key.clone(), crate::discovery::secret_view(&secret))
            }
            Ok(Some(Event::Delete(_))) => LoopInput::SecretObserved(key.clone(), None),
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(namespace = %key.namespace, secret = %key.name, error = %crate::text::untrusted_capped(&err.to_string(), crate::text::MAX_MESSAGE_BYTES), "secret watch failed; retrying");
                LoopInput::SecretWatchFailed(key.clone(), watch_error_reason(&err))
            }
        };
        if tx.send(input).is_err() {
            return;
        }
    }
}

fn watch_error_reason(err: &watcher::Error) -> String {
    match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => api_failure(e).reason,
        watcher::Error::WatchError(status) => {
            if status.reason.is_empty() {
                format!("http_{}", status.code)
            } else {
                status.reason.clone()
            }
        }
        _ => "other".to_string(),
    }
}
