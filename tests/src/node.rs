//! The kubelet sync loop: makes the [`KubeletStandIn`] follow the [`ApiServer`] stand-in for
//! the pods bound to one node, with kubelet's timing.
//!
//! [`NodeKubelet`] watches the store in-process ([`ApiServer::subscribe`], not HTTP) and runs
//! one worker task per pod (kubelet's pod workers). A worker:
//!
//! - on pod add: for every `secret` and `projected` volume, computes the payload from the
//!   Secrets in the store with kubelet's semantics ([`volume_payload`]), mounts the volume's
//!   tmpfs and writes it with the AtomicWriter. When all volumes are set up it "starts the
//!   containers": bind-mounts each `subPath` volumeMount once ([`KubeletStandIn::mount_subpath`])
//!   and patches the pod status (`Running`, pod/host IP, `containerd://<64 hex>` container IDs);
//! - syncs the pod again every 60–90 s (syncFrequency 1 m + jitter 0.5) × `time_factor`,
//!   rewriting every volume from the current Secrets (the AtomicWriter skips unchanged ones);
//! - syncs immediately (after `pod_change_delay`) when the pod's annotations, labels, spec or
//!   deletionTimestamp change: the agent's `mountlag.io/resync` nudge;
//! - never rewrites a volume just because a Secret changed (kubelet only refreshes its cache;
//!   the files change at the next pod sync);
//! - retries a failed sync (missing Secret or key) after 10 s (jitter 0.5) × `time_factor`,
//!   leaving the old content in place;
//! - tears the pod down (subPath mounts, volume mounts, pod dir) when it is deleted.
//!
//! Faults: [`NodeKubelet::set_stuck`] (a pod's volumes are never rewritten, even on annotation
//! changes) and [`NodeKubelet::set_paused`] (the whole node does nothing). Everything it does
//! goes to a log ([`NodeKubelet::log`], [`NodeKubelet::subscribe`], [`NodeKubelet::wait_for`])
//! and counters ([`NodeKubelet::stats`]).
//!
//! Differences from kubelet are listed in `docs/testbed.md`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{KeyToPath, Pod, Secret, Volume};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::apiserver::{ApiServer, ChangeType, Resource};
use crate::kubelet::{FileProjection, KubeletStandIn, Payload, VolumeKind, WriteOutcome};

/// Default `defaultMode` of secret and projected volumes (0644).
pub const DEFAULT_MODE: u32 = 0o644;
/// Content of a projected `serviceAccountToken` file (no real token is issued).
pub const FAKE_SERVICE_ACCOUNT_TOKEN: &[u8] = b"mountlag-testbed-fake-service-account-token";

/// How the node behaves.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `spec.nodeName` of the pods this node runs.
    pub node_name: String,
    /// kubelet `syncFrequency` (1 m).
    pub sync_frequency: Duration,
    /// Jitter factor of the periodic sync (0.5: the next sync is 60–90 s after the last one).
    pub jitter: f64,
    /// Multiplies every kubelet delay (periodic sync, error back-off): 0.01 → syncs every
    /// 0.6–0.9 s. 1.0 is real time.
    pub time_factor: f64,
    /// kubelet's pod worker back-off after a failed sync (10 s, jitter 0.5, scaled).
    pub error_backoff: Duration,
    /// Delay between a pod annotation/label/spec change and its sync (not scaled; kubelet
    /// takes up to about 1 s). Default 0.
    pub pod_change_delay: Duration,
    /// `status.podIP` / `status.hostIP`.
    pub pod_ip: String,
    /// Entries kept in the log (oldest dropped first).
    pub log_capacity: usize,
    /// The scheme of `status.containerStatuses[].containerID`: `containerd` (default), `cri-o`
    /// or `docker` (cri-dockerd), as [`crate::controllers::CgroupLayout::runtime`] names it.
    pub container_runtime: String,
}

impl NodeConfig {
    /// Defaults for `node_name`: real kubelet timing (`time_factor` 1).
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            sync_frequency: Duration::from_secs(60),
            jitter: 0.5,
            time_factor: 1.0,
            error_backoff: Duration::from_secs(10),
            pod_change_delay: Duration::ZERO,
            pod_ip: "127.0.0.1".into(),
            log_capacity: 100_000,
            container_runtime: "containerd".into(),
        }
    }

    /// Set `container_runtime`.
    pub fn container_runtime(mut self, runtime: &str) -> Self {
        self.container_runtime = runtime.into();
        self
    }

    /// Set `time_factor`.
    pub fn time_factor(mut self, factor: f64) -> Self {
        self.time_factor = factor;
        self
    }

    /// Set `pod_change_delay`.
    pub fn pod_change_delay(mut self, delay: Duration) -> Self {
        self.pod_change_delay = delay;
        self
    }

    fn scaled(&self, base: Duration, jitter: f64) -> Duration {
        let r = (crate::apiserver::random_u64() >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64((1.0 + jitter.max(0.0) * r) * self.time_factor.max(0.0))
    }
}

/// Why a sync ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncReason {
    /// First sync of a pod (pod added, or this node started with the pod already bound).
    Initial,
    /// The periodic sync (60–90 s × time_factor after the previous one).
    Periodic,
    /// The pod's annotations, labels, spec or deletionTimestamp changed (the nudge).
    Annotation,
    /// Retry after a failed sync (error back-off).
    Retry,
    /// [`NodeKubelet::sync_now`] (a container event, say).
    Manual,
    /// The pod was deleted (or left the node).
    Deleted,
}

/// What the node did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// A new generation was written; `..data` points at it.
    Written {
        /// The generation dir name.
        generation: String,
    },
    /// The payload was byte-identical: nothing written.
    Unchanged,
    /// A required Secret or key is missing: the volume was not (re)written, old content stays.
    SecretMissing {
        /// kubelet-style error text.
        message: String,
    },
    /// Any other failure (mount, write, unsupported source).
    Failed {
        /// Error text.
        message: String,
    },
    /// The pod is stuck ([`NodeKubelet::set_stuck`]): the volume was not rewritten.
    SkippedStuck,
    /// The node is paused ([`NodeKubelet::set_paused`]): nothing was done.
    SkippedPaused,
    /// A subPath bind mount was made (once, at container start).
    SubPathMounted {
        /// Container name.
        container: String,
        /// Index of the volumeMount in the container.
        index: usize,
        /// `pods/<uid>/volume-subpaths/<vol>/<container>/<index>`.
        target: PathBuf,
    },
    /// All volumes were set up and the pod status was set to Running.
    Started,
    /// The pod's mounts and dir were removed.
    TornDown,
}

/// One entry of the node log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// Sequence number (1, 2, ...).
    pub seq: u64,
    /// When (monotonic).
    pub at: Instant,
    /// When (wall clock).
    pub wall: SystemTime,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod UID.
    pub pod_uid: String,
    /// Volume name (None for pod-level entries: Started, TornDown).
    pub volume: Option<String>,
    /// Why.
    pub reason: SyncReason,
    /// What happened.
    pub outcome: SyncOutcome,
}

/// Counters of a [`NodeKubelet`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Pod syncs run (any reason, including skipped ones).
    pub pod_syncs: u64,
    /// Volume generations written.
    pub volume_writes: u64,
    /// Volume syncs that found nothing to write.
    pub volume_unchanged: u64,
    /// Volume syncs that failed (SecretMissing or Failed).
    pub volume_failures: u64,
    /// Volume syncs skipped (stuck or paused).
    pub volume_skipped: u64,
    /// subPath mounts made.
    pub subpath_mounts: u64,
    /// Pods torn down.
    pub teardowns: u64,
    /// Pods with a worker right now.
    pub pods: u64,
}

/// A pod, by UID or by namespace/name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PodRef {
    /// `metadata.uid`.
    Uid(String),
    /// Namespace and name.
    Name {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

impl PodRef {
    /// By UID.
    pub fn uid(uid: impl Into<String>) -> Self {
        PodRef::Uid(uid.into())
    }

    /// By namespace and name.
    pub fn name(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        PodRef::Name {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// Why a payload could not be computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadError {
    /// A required Secret or Secret key is missing (retry later).
    pub secret_missing: bool,
    /// kubelet-style message.
    pub message: String,
}

/// The payload kubelet writes for `volume` of `pod`, looking Secrets up in the pod's namespace
/// with `lookup`. `Ok(None)`: not a secret/projected volume.
///
/// kubelet semantics (`pkg/volume/secret`, `pkg/volume/projected`): without `items` every key
/// becomes a file with `defaultMode` (0644 when unset); with `items` only the listed keys, at
/// their `path`, with the item `mode` or `defaultMode`; a missing listed key fails unless the
/// Secret is `optional`; a missing `optional` Secret gives an empty payload (in a projected
/// volume: that source contributes nothing); a missing required Secret fails the volume.
/// Projected sources are merged in order, a later one wins on the same path.
pub fn volume_payload(
    pod: &Pod,
    volume: &Volume,
    lookup: &dyn Fn(&str) -> Option<Secret>,
) -> Result<Option<(VolumeKind, Payload)>, PayloadError> {
    if let Some(s) = &volume.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let optional = s.optional.unwrap_or(false);
        let mode = mode_of(s.default_mode);
        let secret = match lookup(&name) {
            Some(secret) => secret,
            None if optional => Secret::default(),
            None => {
                return Err(PayloadError {
                    secret_missing: true,
                    message: format!("secret \"{name}\" not found"),
                });
            }
        };
        let payload = make_payload(s.items.as_deref(), &secret, mode, optional)?;
        return Ok(Some((VolumeKind::Secret, payload)));
    }
    let Some(p) = &volume.projected else {
        return Ok(None);
    };
    let mode = mode_of(p.default_mode);
    let mut payload = Payload::new();
    let mut errors: Vec<PayloadError> = Vec::new();
    for source in p.sources.iter().flatten() {
        if let Some(s) = &source.secret {
            let name = s.name.clone();
            let optional = s.optional.unwrap_or(false);
            let secret = match lookup(&name) {
                Some(secret) => secret,
                None if optional => Secret::default(),
                None => {
                    errors.push(PayloadError {
                        secret_missing: true,
                        message: format!("secret \"{name}\" not found"),
                    });
                    continue;
                }
            };
            match make_payload(s.items.as_deref(), &secret, mode, optional) {
                Ok(part) => payload.extend(part),
                Err(e) => errors.push(e),
            }
        } else if let Some(cm) = &source.config_map {
            // The stand-in serves no ConfigMaps: every ConfigMap is missing.
            if !cm.optional.unwrap_or(false) {
                errors.push(PayloadError {
                    secret_missing: false,
                    message: format!(
                        "configmap \"{}\" not found (the testbed serves no ConfigMaps)",
                        cm.name
                    ),
                });
            }
        } else if let Some(sat) = &source.service_account_token {
            payload.insert(
                sat.path.clone(),
                FileProjection::new(FAKE_SERVICE_ACCOUNT_TOKEN.to_vec(), mode),
            );
        } else if let Some(d) = &source.downward_api {
            for item in d.items.iter().flatten() {
                let data = match &item.field_ref {
                    Some(f) => downward_field(pod, &f.field_path),
                    None => Err("resourceFieldRef is not supported by the testbed".to_owned()),
                };
                match data {
                    Ok(data) => {
                        payload.insert(
                            item.path.clone(),
                            FileProjection::new(data, item.mode.map_or(mode, mode_u32)),
                        );
                    }
                    Err(message) => errors.push(PayloadError {
                        secret_missing: false,
                        message,
                    }),
                }
            }
        } else if source
            .cluster_trust_bundle
            .as_ref()
            .is_some_and(|c| c.optional != Some(true))
        {
            errors.push(PayloadError {
                secret_missing: false,
                message: "clusterTrustBundle sources are not supported by the testbed".into(),
            });
        }
    }
    if errors.is_empty() {
        Ok(Some((VolumeKind::Projected, payload)))
    } else {
        Err(PayloadError {
            secret_missing: errors.iter().any(|e| e.secret_missing),
            message: errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

fn mode_u32(m: i32) -> u32 {
    u32::try_from(m).unwrap_or(DEFAULT_MODE)
}

fn mode_of(m: Option<i32>) -> u32 {
    m.map_or(DEFAULT_MODE, mode_u32)
}

/// kubelet's `secret.MakePayload`.
fn make_payload(
    items: Option<&[KeyToPath]>,
    secret: &Secret,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, PayloadError> {
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let mut payload = Payload::new();
    match items {
        None | Some([]) => {
            for (k, v) in data {
                payload.insert(k.clone(), FileProjection::new(v.0.clone(), default_mode));
            }
        }
        Some(items) => {
            for ktp in items {
                let Some(v) = data.get(&ktp.key) else {
                    if optional {
                        continue;
                    }
                    return Err(PayloadError {
                        secret_missing: true,
                        message: format!("references non-existent secret key: {}", ktp.key),
                    });
                };
                let mode = ktp.mode.map_or(default_mode, mode_u32);
                payload.insert(ktp.path.clone(), FileProjection::new(v.0.clone(), mode));
            }
        }
    }
    Ok(payload)
}

fn downward_field(pod: &Pod, field: &str) -> Result<Vec<u8>, String> {
    let m = &pod.metadata;
    let map_lines = |m: Option<&BTreeMap<String, String>>| {
        let mut lines: Vec<String> = m
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", go_quote(v)))
            .collect();
        lines.sort();
        lines.join("\n").into_bytes()
    };
    Ok(match field {
        "metadata.name" => m.name.clone().unwrap_or_default().into_bytes(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default().into_bytes(),
        "metadata.uid" => m.uid.clone().unwrap_or_default().into_bytes(),
        "metadata.labels" => map_lines(m.labels.as_ref()),
        "metadata.annotations" => map_lines(m.annotations.as_ref()),
        other => return Err(format!("downwardAPI fieldPath {other:?} is not supported")),
    })
}

/// Go's `%q` for the strings labels and annotations hold (printable ASCII and escapes).
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The container ID the node reports for `container` of pod `pod_uid` (64 hex digits,
/// deterministic, so a harness can create the matching cgroup before the pod starts). A
/// `containerID` already present in the pod status is kept instead.
pub fn container_id(pod_uid: &str, container: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("{pod_uid}/{container}")))
}

// ------------------------------------------------------------------------------------ the node

enum Msg {
    Update(Box<Pod>),
    SyncNow,
    Delete,
}

#[derive(Debug)]
struct WorkerHandle {
    tx: mpsc::UnboundedSender<Msg>,
    task: JoinHandle<()>,
    namespace: String,
    name: String,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Update(_) => f.write_str("Update"),
            Msg::SyncNow => f.write_str("SyncNow"),
            Msg::Delete => f.write_str("Delete"),
        }
    }
}

#[derive(Debug)]
struct NodeInner {
    config: NodeConfig,
    api: ApiServer,
    kubelet: Arc<KubeletStandIn>,
    paused: AtomicBool,
    stuck: Mutex<BTreeSet<PodRef>>,
    log: Mutex<VecDeque<NodeEvent>>,
    seq: AtomicU64,
    log_tx: broadcast::Sender<NodeEvent>,
    stats: Mutex<NodeStats>,
    workers: Mutex<HashMap<String, WorkerHandle>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NodeInner {
    fn record(&self, pod: &PodIds, volume: Option<&str>, reason: SyncReason, outcome: SyncOutcome) {
        {
            let mut st = lock(&self.stats);
            match &outcome {
                SyncOutcome::Written { .. } => st.volume_writes += 1,
                SyncOutcome::Unchanged => st.volume_unchanged += 1,
                SyncOutcome::SecretMissing { .. } | SyncOutcome::Failed { .. } => {
                    st.volume_failures += 1
                }
                SyncOutcome::SkippedStuck | SyncOutcome::SkippedPaused => st.volume_skipped += 1,
                SyncOutcome::SubPathMounted { .. } => st.subpath_mounts += 1,
                SyncOutcome::TornDown => st.teardowns += 1,
                SyncOutcome::Started => {}
            }
        }
        let mut log = lock(&self.log);
        let ev = NodeEvent {
            seq: self.seq.fetch_add(1, Ordering::SeqCst) + 1,
            at: Instant::now(),
            wall: SystemTime::now(),
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            volume: volume.map(str::to_owned),
            reason,
            outcome,
        };
        tracing::debug!(?ev, "node");
        log.push_back(ev.clone());
        while log.len() > self.config.log_capacity.max(1) {
            log.pop_front();
        }
        // Sent under the log lock: subscribers see seq order.
        let _ = self.log_tx.send(ev);
    }

    fn is_stuck(&self, pod: &PodIds) -> bool {
        let stuck = lock(&self.stuck);
        stuck.contains(&PodRef::Uid(pod.uid.clone()))
            || stuck.contains(&PodRef::Name {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
            })
    }
}

#[derive(Debug, Clone)]
struct PodIds {
    uid: String,
    namespace: String,
    name: String,
}

impl PodIds {
    fn of(pod: &Pod) -> Self {
        Self {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
        }
    }
}

/// A kubelet for one node: the [`KubeletStandIn`] driven by the pods the [`ApiServer`]
/// stand-in binds to `config.node_name`. Stops (without tearing pods down) when dropped.
#[derive(Debug)]
pub struct NodeKubelet {
    inner: Arc<NodeInner>,
    dispatcher: JoinHandle<()>,
}

impl Drop for NodeKubelet {
    fn drop(&mut self) {
        self.dispatcher.abort();
        for (_, w) in lock(&self.inner.workers).drain() {
            w.task.abort();
        }
    }
}

impl NodeKubelet {
    /// Start the node: pods already bound to it are synced (reason Initial) right away, as
    /// after a kubelet restart. Must be called inside a tokio runtime.
    pub fn start(api: ApiServer, kubelet: Arc<KubeletStandIn>, config: NodeConfig) -> Self {
        let (log_tx, _) = broadcast::channel(65_536);
        let inner = Arc::new(NodeInner {
            config,
            api,
            kubelet,
            paused: AtomicBool::new(false),
            stuck: Mutex::new(BTreeSet::new()),
            log: Mutex::new(VecDeque::new()),
            seq: AtomicU64::new(0),
            log_tx,
            stats: Mutex::new(NodeStats::default()),
            workers: Mutex::new(HashMap::new()),
        });
        // Subscribe before listing, so no change falls between the two.
        let rx = inner.api.subscribe();
        let dispatcher = tokio::spawn(dispatch(inner.clone(), rx));
        Self { inner, dispatcher }
    }

    /// The kubelet stand-in (paths, mountinfo helpers).
    pub fn kubelet(&self) -> &Arc<KubeletStandIn> {
        &self.inner.kubelet
    }

    /// The node name.
    pub fn node_name(&self) -> &str {
        &self.inner.config.node_name
    }

    /// Fault: while `stuck`, the pod's volumes that are already set up are never rewritten
    /// (periodic syncs and annotation changes are ignored). Clearing it does not sync by
    /// itself: the next periodic or annotation sync does.
    pub fn set_stuck(&self, pod: PodRef, stuck: bool) {
        let mut s = lock(&self.inner.stuck);
        if stuck {
            s.insert(pod);
        } else {
            s.remove(&pod);
        }
    }

    /// Fault: while paused the node does nothing at all (no mounts, writes, starts or
    /// teardowns; deletions are handled after unpausing).
    pub fn set_paused(&self, paused: bool) {
        self.inner.paused.store(paused, Ordering::SeqCst);
    }

    /// Sync the pod now (reason Manual), like a container event would.
    pub fn sync_now(&self, namespace: &str, name: &str) -> bool {
        let workers = lock(&self.inner.workers);
        workers
            .values()
            .find(|w| w.namespace == namespace && w.name == name)
            .is_some_and(|w| w.tx.send(Msg::SyncNow).is_ok())
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        let mut s = *lock(&self.inner.stats);
        s.pods = lock(&self.inner.workers).len() as u64;
        s
    }

    /// The log (up to `log_capacity` newest entries).
    pub fn log(&self) -> Vec<NodeEvent> {
        lock(&self.inner.log).iter().cloned().collect()
    }

    /// Sequence number of the newest log entry (0 if none): pass it to
    /// [`NodeKubelet::wait_for`] to wait for something that happens after now.
    pub fn last_seq(&self) -> u64 {
        self.inner.seq.load(Ordering::SeqCst)
    }

    /// Every log entry from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.log_tx.subscribe()
    }

    /// The first log entry with `seq > after` matching `pred`, waiting up to `timeout`.
    pub async fn wait_for(
        &self,
        after: u64,
        timeout: Duration,
        pred: impl Fn(&NodeEvent) -> bool,
    ) -> Option<NodeEvent> {
        let mut rx = self.subscribe();
        if let Some(e) = lock(&self.inner.log)
            .iter()
            .find(|e| e.seq > after && pred(e))
        {
            return Some(e.clone());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(e)) if e.seq > after && pred(&e) => return Some(e),
                Ok(Ok(_)) => {}
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    if let Some(e) = lock(&self.inner.log)
                        .iter()
                        .find(|e| e.seq > after && pred(e))
                    {
                        return Some(e.clone());
                    }
                }
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return None,
            }
        }
    }
}

fn on_node(pod: &Pod, node: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| n == node)
}

async fn dispatch(
    inner: Arc<NodeInner>,
    mut rx: broadcast::Receiver<Arc<crate::apiserver::StoreChange>>,
) {
    relist(&inner);
    loop {
        match rx.recv().await {
            Ok(c) if c.resource == Resource::Pods => {
                let pod: Pod = match serde_json::from_value((*c.object).clone()) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "node: undecodable pod in the store");
                        continue;
                    }
                };
                let here = on_node(&pod, &inner.config.node_name);
                if c.change == ChangeType::Deleted || !here {
                    remove_worker(&inner, &c.uid);
                } else {
                    update_worker(&inner, pod);
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "node: fell behind the store, relisting");
                relist(&inner);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn relist(inner: &Arc<NodeInner>) {
    let pods: Vec<Pod> = inner
        .api
        .pods()
        .into_iter()
        .filter(|p| on_node(p, &inner.config.node_name))
        .collect();
    let live: BTreeSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
    let gone: Vec<String> = lock(&inner.workers)
        .keys()
        .filter(|k| !live.contains(*k))
        .cloned()
        .collect();
    for uid in gone {
        remove_worker(inner, &uid);
    }
    for p in pods {
        update_worker(inner, p);
    }
}

fn remove_worker(inner: &Arc<NodeInner>, uid: &str) {
    if let Some(w) = lock(&inner.workers).remove(uid) {
        // The worker tears down and exits; its task is not aborted.
        let _ = w.tx.send(Msg::Delete);
    }
}

fn update_worker(inner: &Arc<NodeInner>, pod: Pod) {
    let ids = PodIds::of(&pod);
    if ids.uid.is_empty() {
        return;
    }
    let mut workers = lock(&inner.workers);
    if let Some(w) = workers.get(&ids.uid)
        && w.tx.send(Msg::Update(Box::new(pod.clone()))).is_ok()
    {
        return;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = Worker {
        inner: inner.clone(),
        ids: ids.clone(),
        pod,
        set_up: BTreeSet::new(),
        started: false,
    };
    let task = tokio::spawn(worker.run(rx));
    workers.insert(
        ids.uid,
        WorkerHandle {
            tx,
            task,
            namespace: ids.namespace,
            name: ids.name,
        },
    );
}

/// kubelet's `podsDifferSemantically` (plus the deletion fields): changes that sync a pod.
fn differs(a: &Pod, b: &Pod) -> bool {
    a.metadata.labels != b.metadata.labels
        || a.metadata.annotations != b.metadata.annotations
        || a.metadata.deletion_timestamp != b.metadata.deletion_timestamp
        || a.metadata.deletion_grace_period_seconds != b.metadata.deletion_grace_period_seconds
        || a.spec != b.spec
}

struct Worker {
    inner: Arc<NodeInner>,
    ids: PodIds,
    pod: Pod,
    /// Volumes mounted and written at least once.
    set_up: BTreeSet<String>,
    /// Containers "started" (subPaths mounted, status Running).
    started: bool,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut next_sync = tokio::time::Instant::now();
        let mut timer_reason = SyncReason::Initial;
        let mut pending: Option<(tokio::time::Instant, SyncReason)> = None;
        loop {
            let reason = tokio::select! {
                msg = rx.recv() => match msg {
                    None | Some(Msg::Delete) => {
                        self.teardown().await;
                        return;
                    }
                    Some(Msg::Update(p)) => {
                        let changed = differs(&self.pod, &p);
                        self.pod = *p;
                        if changed && pending.is_none() {
                            pending = Some((
                                tokio::time::Instant::now() + self.inner.config.pod_change_delay,
                                SyncReason::Annotation,
                            ));
                        }
                        continue;
                    }
                    Some(Msg::SyncNow) => {
                        pending = Some((tokio::time::Instant::now(), SyncReason::Manual));
                        continue;
                    }
                },
                _ = tokio::time::sleep_until(next_sync) => timer_reason,
                _ = async {
                    match pending {
                        Some((at, _)) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let r = pending.map_or(SyncReason::Annotation, |(_, r)| r);
                    pending = None;
                    r
                }
            };
            let ok = self.sync(reason).await;
            let cfg = &self.inner.config;
            // kubelet re-queues the pod after every sync: jittered resync, or back-off.
            next_sync = tokio::time::Instant::now()
                + if ok {
                    cfg.scaled(cfg.sync_frequency, cfg.jitter)
                } else {
                    cfg.scaled(cfg.error_backoff, 0.5)
                };
            timer_reason = if ok {
                SyncReason::Periodic
            } else {
                SyncReason::Retry
            };
        }
    }

    /// One pod sync. Returns false when something failed (→ back-off).
    async fn sync(&mut self, reason: SyncReason) -> bool {
        lock(&self.inner.stats).pod_syncs += 1;
        let inner = self.inner.clone();
        let ids = self.ids.clone();
        let pod = self.pod.clone();
        let mut set_up = std::mem::take(&mut self.set_up);
        let started = self.started;
        let res = tokio::task::spawn_blocking(move || {
            let ok = sync_blocking(&inner, &ids, &pod, reason, &mut set_up, started);
            (ok, set_up)
        })
        .await;
        let (ok, set_up) = match res {
            Ok(r) => r,
            Err(e) => {
                self.inner.record(
                    &self.ids,
                    None,
                    reason,
                    SyncOutcome::Failed {
                        message: format!("sync task failed: {e}"),
                    },
                );
                return false;
            }
        };
        self.set_up = set_up;
        match ok {
            SyncResult::Failed => false,
            SyncResult::Skipped => true,
            SyncResult::VolumesReady if self.started => true,
            SyncResult::VolumesReady => {
                let started = self.start_containers(reason).await;
                self.started = started;
                started
            }
        }
    }

    async fn start_containers(&mut self, reason: SyncReason) -> bool {
        let inner = self.inner.clone();
        let ids = self.ids.clone();
        let pod = self.pod.clone();
        let res =
            tokio::task::spawn_blocking(move || mount_subpaths(&inner, &ids, &pod, reason)).await;
        if !matches!(res, Ok(true)) {
            return false;
        }
        match self.inner.api.patch_pod_status(
            &self.ids.namespace,
            &self.ids.name,
            &running_status(
                &self.pod,
                &self.inner.config.pod_ip,
                &self.inner.config.container_runtime,
            ),
        ) {
            Ok(_) => {
                self.inner
                    .record(&self.ids, None, reason, SyncOutcome::Started);
                true
            }
            Err(e) => {
                self.inner.record(
                    &self.ids,
                    None,
                    reason,
                    SyncOutcome::Failed {
                        message: format!("updating the pod status: {e}"),
                    },
                );
                false
            }
        }
    }

    async fn teardown(&mut self) {
        // A paused node handles the deletion once unpaused.
        while self.inner.paused.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let inner = self.inner.clone();
        let uid = self.ids.uid.clone();
        let res = tokio::task::spawn_blocking(move || inner.kubelet.teardown_pod(&uid)).await;
        let outcome = match res {
            Ok(Ok(())) => SyncOutcome::TornDown,
            Ok(Err(e)) => SyncOutcome::Failed {
                message: format!("teardown: {e:#}"),
            },
            Err(e) => SyncOutcome::Failed {
                message: format!("teardown task failed: {e}"),
            },
        };
        self.inner
            .record(&self.ids, None, SyncReason::Deleted, outcome);
    }
}

enum SyncResult {
    /// Every volume is set up (written or unchanged).
    VolumesReady,
    /// Paused / stuck: nothing done, not an error.
    Skipped,
    /// Some volume failed.
    Failed,
}

fn secret_volumes(pod: &Pod) -> Vec<&Volume> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .map(|v| {
            v.iter()
                .filter(|v| v.secret.is_some() || v.projected.is_some())
                .collect()
        })
        .unwrap_or_default()
}

fn sync_blocking(
    inner: &NodeInner,
    ids: &PodIds,
    pod: &Pod,
    reason: SyncReason,
    set_up: &mut BTreeSet<String>,
    started: bool,
) -> SyncResult {
    let volumes = secret_volumes(pod);
    if inner.paused.load(Ordering::SeqCst) {
        for v in &volumes {
            inner.record(ids, Some(&v.name), reason, SyncOutcome::SkippedPaused);
        }
        return SyncResult::Skipped;
    }
    let stuck = inner.is_stuck(ids);
    let fs_group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    let lookup = |name: &str| inner.api.secret(&ids.namespace, name);
    let mut all_ok = true;
    let mut skipped = false;
    for v in volumes {
        if stuck && set_up.contains(&v.name) {
            inner.record(ids, Some(&v.name), reason, SyncOutcome::SkippedStuck);
            skipped = true;
            continue;
        }
        let outcome = match volume_payload(pod, v, &lookup) {
            Ok(None) => continue,
            Err(e) if e.secret_missing => SyncOutcome::SecretMissing { message: e.message },
            Err(e) => SyncOutcome::Failed { message: e.message },
            Ok(Some((kind, payload))) => {
                match write_volume(
                    inner,
                    ids,
                    v,
                    kind,
                    &payload,
                    fs_group,
                    set_up.contains(&v.name),
                ) {
                    Ok(WriteOutcome::Written { generation }) => SyncOutcome::Written { generation },
                    Ok(WriteOutcome::Unchanged) => SyncOutcome::Unchanged,
                    Err(e) => SyncOutcome::Failed {
                        message: format!("{e:#}"),
                    },
                }
            }
        };
        match &outcome {
            SyncOutcome::Written { .. } | SyncOutcome::Unchanged => {
                set_up.insert(v.name.clone());
            }
            _ => all_ok = false,
        }
        inner.record(ids, Some(&v.name), reason, outcome);
    }
    if !all_ok {
        SyncResult::Failed
    } else if skipped && !started {
        SyncResult::Skipped
    } else {
        SyncResult::VolumesReady
    }
}

fn write_volume(
    inner: &NodeInner,
    ids: &PodIds,
    v: &Volume,
    kind: VolumeKind,
    payload: &Payload,
    fs_group: Option<u32>,
    mounted: bool,
) -> anyhow::Result<WriteOutcome> {
    let dir = if mounted {
        inner.kubelet.volume_dir(&ids.uid, kind, &v.name)
    } else {
        inner.kubelet.mount_volume(&ids.uid, kind, &v.name)?
    };
    inner.kubelet.write(&dir, payload, fs_group)
}

fn mount_subpaths(inner: &NodeInner, ids: &PodIds, pod: &Pod, reason: SyncReason) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let kinds: BTreeMap<&str, VolumeKind> = secret_volumes(pod)
        .into_iter()
        .map(|v| {
            let k = if v.secret.is_some() {
                VolumeKind::Secret
            } else {
                VolumeKind::Projected
            };
            (v.name.as_str(), k)
        })
        .collect();
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    let mut ok = true;
    for c in containers {
        for (index, m) in c.volume_mounts.iter().flatten().enumerate() {
            let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let Some(kind) = kinds.get(m.name.as_str()) else {
                continue;
            };
            let outcome = match inner
                .kubelet
                .mount_subpath(&ids.uid, &m.name, *kind, &c.name, index, sub)
            {
                Ok(target) => SyncOutcome::SubPathMounted {
                    container: c.name.clone(),
                    index,
                    target,
                },
                Err(e) => {
                    ok = false;
                    SyncOutcome::Failed {
                        message: format!("subPath {sub:?} of container {}: {e:#}", c.name),
                    }
                }
            };
            inner.record(ids, Some(&m.name), reason, outcome);
        }
    }
    ok
}

fn running_status(pod: &Pod, ip: &str, runtime: &str) -> Value {
    let now = crate::apiserver::now_rfc3339();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let existing: BTreeMap<String, String> = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|cs| cs.container_id.clone().map(|id| (cs.name.clone(), id)))
        .collect();
    let statuses: Vec<Value> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let id = existing
                .get(&c.name)
                .cloned()
                .unwrap_or_else(|| format!("{runtime}://{}", container_id(&uid, &c.name)));
            json!({
                "name": c.name,
                "containerID": id,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": "",
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
    json!({"status": {
        "phase": "Running",
        "conditions": [
            cond("PodReadyToStartContainers"),
            cond("Initialized"),
            cond("Ready"),
            cond("ContainersReady"),
            cond("PodScheduled"),
        ],
        "hostIP": ip,
        "hostIPs": [{"ip": ip}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": now,
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    }})
}
