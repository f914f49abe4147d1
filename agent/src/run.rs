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

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

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
use crate::actions::{EventLimiter, Executor, ExecutorMetrics};
use crate::admin::{self, AgentMetrics, StatusSnapshot};
use crate::config::Config;
use crate::discovery::{ControllerPod, SecretView};
use crate::kubelet::{KubeletRoot, snapshot};
use crate::reconcile::{DiskView, MountIndex, SecretKey, Thresholds};
use crate::watch::{RescanReason, VolumeChange, VolumeWatcher, WatcherConfig};

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub config: Config,
    pub node_name: String,
    pub kubelet_root: PathBuf,
    pub proc_root: PathBuf,
    pub listen: SocketAddr,
}

/// Everything that can happen, in one channel to the loop.
#[derive(Debug)]
enum LoopInput {
    PodsListed(Vec<(ControllerPod, Option<Vec<String>>)>),
    PodApplied(Box<Pod>),
    PodDeleted(String),
    PodWatchFailed(String),
    SecretObserved(SecretKey, Option<SecretView>),
    SecretWatchFailed(SecretKey, String),
    Volume(VolumeChange),
}

/// Runs the agent until `shutdown` resolves.
pub async fn run_agent(
    options: AgentOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot configure the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let mut registry = Registry::default();
    let executor_metrics = ExecutorMetrics::register(&mut registry);
    let agent_metrics = AgentMetrics::register(&mut registry);
    let rescans = crate::watch::WatchMetrics::register(&mut registry);
    let registry = Arc::new(registry);

    let (status_tx, status_rx) = watch::channel(Arc::new(StatusSnapshot {
        node: options.node_name.clone(),
        ready: false,
        waiting_for: vec!["pods not listed yet".into()],
        mounts: Vec::new(),
    }));
    let listener = admin::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    tracing::info!(listen = %options.listen, node = %options.node_name, "mountlag agent starting");
    let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let admin_task = tokio::spawn(admin::serve(
        listener,
        Arc::clone(&registry),
        status_rx,
        async {
            let _ = admin_stop_rx.await;
        },
    ));

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
        index: MountIndex::new(KubeletRoot::new(&options.kubelet_root), limits),
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
        pods_listed: false,
        node: options.node_name.clone(),
        status_tx,
    };

    tokio::pin!(shutdown);
    let result = loop {
        let deadline = agent.index.next_deadline();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            input = input_rx.recv() => match input {
                Some(input) => agent.handle(input),
                None => break Err(anyhow::anyhow!("every input of the agent loop closed")),
            },
            () = sleep => agent.tick(),
        }
        if pod_task.is_finished() {
            break Err(anyhow::anyhow!("the pod watch stopped"));
        }
        agent.publish();
    };
    agent.mark_unready("shutting down");
    for (_, task) in agent.secret_watches.drain() {
        task.abort();
    }
    pod_task.abort();
    let _ = admin_stop_tx.send(());
    let _ = admin_task.await;
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
    pods_listed: bool,
    node: String,
    status_tx: watch::Sender<Arc<StatusSnapshot>>,
}

impl AgentLoop {
    fn handle(&mut self, input: LoopInput) {
        let now = Instant::now();
        let actions = match input {
            LoopInput::PodsListed(pods) => {
                self.pods_listed = true;
                let mut actions = self.index.set_pods_healthy(true, now);
                actions.extend(self.index.replace_pods(pods, now));
                actions
            }
            LoopInput::PodApplied(pod) => {
                let mut actions = self.index.set_pods_healthy(true, now);
                match select_controller(&self.config, &pod) {
                    Some((controller, containers)) => {
                        actions.extend(self.index.upsert_pod(controller, containers, now))
                    }
                    None => {
                        if let Some(uid) = pod.metadata.uid.as_deref() {
                            self.index.remove_pod(uid);
                        }
                    }
                }
                actions
            }
            LoopInput::PodDeleted(uid) => {
                self.index.remove_pod(&uid);
                Vec::new()
            }
            LoopInput::PodWatchFailed(reason) => {
                self.executor_metrics.api_error("pods", &reason);
                self.index.set_pods_healthy(false, now)
            }
            LoopInput::SecretObserved(key, view) => self.index.secret_observed(&key, view, now),
            LoopInput::SecretWatchFailed(key, reason) => {
                self.executor_metrics.api_error("secrets", &reason);
                self.index.secret_watch_health(&key, false, now)
            }
            LoopInput::Volume(change) => self.volume_changed(change, now),
        };
        self.sync_secret_watches();
        let mut more = self.sync_volumes(now);
        more.extend(actions);
        for action in more {
            self.executor.execute(action);
        }
    }

    fn tick(&mut self) {
        for action in self.index.tick(Instant::now()) {
            self.executor.execute(action);
        }
    }

    fn volume_changed(
        &mut self,
        change: VolumeChange,
        now: Instant,
    ) -> Vec<crate::reconcile::Action> {
        match change {
            VolumeChange::Generation { volume, .. } => {
                let disk = disk_view(&volume);
                self.index.disk_observed(&volume, disk, now)
            }
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
                let disk = disk_view(&path);
                self.index.disk_observed(&path, disk, now)
            }
            Err(err) => {
                tracing::debug!(volume = %path.display(), error = %err, "volume directory not there yet");
                self.untrackable.insert(path);
                Vec::new()
            }
        }
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
        for (state, count) in self.index.count_by_state() {
            self.agent_metrics.set_mounts(state.label(), count);
        }
        let waiting_for = self.waiting_for();
        let snapshot = StatusSnapshot {
            node: self.node.clone(),
            ready: waiting_for.is_empty(),
            waiting_for,
            mounts: self.index.status(now),
        };
        self.status_tx.send_replace(Arc::new(snapshot));
    }

    fn mark_unready(&mut self, why: &str) {
        let mut snapshot = (**self.status_tx.borrow()).clone();
        snapshot.ready = false;
        snapshot.waiting_for = vec![why.to_string()];
        self.status_tx.send_replace(Arc::new(snapshot));
    }
}

fn disk_view(path: &Path) -> DiskView {
    match snapshot(path) {
        Ok(snap) => DiskView::Files {
            generation: snap.generation,
            files: snap.files.into_iter().map(|f| (f.path, f.sha256)).collect(),
        },
        Err(err) => DiskView::Unreadable {
            reason: err.to_string(),
        },
    }
}

/// The first controller profile that selects the pod, with the containers it watches.
fn select_controller(config: &Config, pod: &Pod) -> Option<(ControllerPod, Option<Vec<String>>)> {
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
    let controller = ControllerPod::from_pod(pod, &profile.name)?;
    Some((controller, profile.containers.clone()))
}

/// One watch on the node's pods; label selectors are applied here, not by the API server,
/// because several profiles may select different pods of the node.
async fn watch_pods(
    client: Client,
    node: String,
    config: Arc<Config>,
    tx: mpsc::UnboundedSender<LoopInput>,
) {
    let api: Api<Pod> = Api::all(client);
    let watch_config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher::watcher(api, watch_config)
        .default_backoff()
        .boxed();
    let mut listing: Vec<(ControllerPod, Option<Vec<String>>)> = Vec::new();
    loop {
        let input = match stream.try_next().await {
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
                tracing::warn!(error = %err, "pod watch failed; retrying with backoff");
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
                listed = SecretView::from_secret(&secret);
                continue;
            }
            Ok(Some(Event::InitDone)) => LoopInput::SecretObserved(key.clone(), listed.take()),
            Ok(Some(Event::Apply(secret))) => {
                LoopInput::SecretObserved(key.clone(), SecretView::from_secret(&secret))
            }
            Ok(Some(Event::Delete(_))) => LoopInput::SecretObserved(key.clone(), None),
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(namespace = %key.namespace, secret = %key.name, error = %err, "secret watch failed; retrying");
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
