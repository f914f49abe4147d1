//! A minimal, deterministic stand-in for the Deployment, ReplicaSet, DaemonSet and StatefulSet
//! controllers, so that a client that restarts a workload by patching its pod template (as
//! `kubectl rollout restart` does, with an annotation) can be tested end to end with the API
//! stand-in and the kubelet stand-in ([`crate::node::NodeKubelet`]).
//!
//! [`Rollouts::start`] watches the store in-process ([`ApiServer::subscribe`], like the kubelet
//! loop) and runs one worker per workload. A worker is level-triggered: whenever the workload
//! or one of its pods changes it compares the hash of `spec.template` ([`template_hash`]) with
//! the hash label each of its pods carries (`pod-template-hash` under a Deployment's
//! ReplicaSets, `controller-revision-hash` for DaemonSets and StatefulSets). Pods with another
//! hash are replaced one at a time, on the node they ran on:
//!
//! - Deployment: the ReplicaSet `<deployment>-<hash>` is created (or reused), then for each old
//!   pod a new one `<replicaset>-<5 chars>` on the same node; once the kubelet stand-in reports
//!   it Running and Ready the old pod is deleted (maxUnavailable 0, maxSurge 1);
//! - DaemonSet: the same, the pods `<daemonset>-<5 chars>` owned by the DaemonSet;
//! - StatefulSet: highest ordinal first, `<sts>-<i>` is deleted, then created again (same name,
//!   new UID) and waited for.
//!
//! A template change while a rollout runs ends it after the current pod, and the next one
//! moves every pod (new-but-superseded ones included) to the newest template. A change that
//! leaves the template as it was starts nothing. Status (`observedGeneration`, replica counts,
//! revisions) follows the pods at every step. Deleting a workload deletes what it owns (the
//! garbage collector's part).
//!
//! Counters per workload ([`Rollouts::stats`]), a log of every step ([`Rollouts::log`]) and
//! waiters ([`Rollouts::wait_completed`]). The fixtures ([`Rollouts::create_deployment`],
//! [`Rollouts::create_daemon_set`], [`Rollouts::create_stateful_set`]) write a workload with
//! its ReplicaSet and one running-to-be pod per node, as the controllers would have left them.
//! Where this differs from the real controllers is in `docs/testbed.md`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

use crate::apiserver::{ApiError, ApiServer, ChangeType, Resource, StoreChange};

const APPS_V1: &str = "apps/v1";
/// The label a Deployment's ReplicaSets and their pods carry.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The label DaemonSet and StatefulSet pods carry.
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
/// The Deployment and ReplicaSet revision annotation.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

/// The workload kinds the model rolls out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    /// apps/v1 Deployment (pods under ReplicaSets).
    Deployment,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// apps/v1 StatefulSet.
    StatefulSet,
}

impl WorkloadKind {
    /// `Deployment`, `DaemonSet`, `StatefulSet`.
    pub fn kind(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }

    /// The stand-in's resource.
    pub fn resource(self) -> Resource {
        match self {
            WorkloadKind::Deployment => Resource::Deployments,
            WorkloadKind::DaemonSet => Resource::DaemonSets,
            WorkloadKind::StatefulSet => Resource::StatefulSets,
        }
    }

    fn of_resource(r: Resource) -> Option<Self> {
        match r {
            Resource::Deployments => Some(WorkloadKind::Deployment),
            Resource::DaemonSets => Some(WorkloadKind::DaemonSet),
            Resource::StatefulSets => Some(WorkloadKind::StatefulSet),
            _ => None,
        }
    }

    fn of_kind(kind: &str) -> Option<Self> {
        [
            WorkloadKind::Deployment,
            WorkloadKind::DaemonSet,
            WorkloadKind::StatefulSet,
        ]
        .into_iter()
        .find(|k| k.kind() == kind)
    }
}

/// One workload: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadRef {
    /// Its kind.
    pub kind: WorkloadKind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl WorkloadRef {
    /// A workload of `kind`.
    pub fn new(kind: WorkloadKind, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// A Deployment.
    pub fn deployment(namespace: &str, name: &str) -> Self {
        Self::new(WorkloadKind::Deployment, namespace, name)
    }

    /// A DaemonSet.
    pub fn daemon_set(namespace: &str, name: &str) -> Self {
        Self::new(WorkloadKind::DaemonSet, namespace, name)
    }

    /// A StatefulSet.
    pub fn stateful_set(namespace: &str, name: &str) -> Self {
        Self::new(WorkloadKind::StatefulSet, namespace, name)
    }
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.kind(), self.namespace, self.name)
    }
}

/// What a fixture wrote.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The workload.
    pub reference: WorkloadRef,
    /// Its `metadata.uid`.
    pub uid: String,
    /// [`template_hash`] of its stored `spec.template`.
    pub template_hash: String,
    /// The Deployment's ReplicaSet (`<deployment>-<hash>`); None for the other kinds.
    pub replica_set: Option<String>,
    /// Its pods, one per node given, in that order (status `Pending` until a kubelet starts
    /// them).
    pub pods: Vec<Pod>,
}

/// Counters of one workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutStats {
    /// Rollouts started: one per template the workload's pods were moved to.
    pub started: u64,
    /// Rollouts that finished (every pod on the template they moved to). A rollout superseded
    /// by a newer template does not finish; the next one does.
    pub completed: u64,
    /// Pods created by rollouts (not by fixtures).
    pub pods_created: u64,
    /// Pods deleted by rollouts.
    pub pods_deleted: u64,
    /// A rollout is running.
    pub in_progress: bool,
    /// The template hash the pods are (being) moved to: the fixture's, then each rollout's.
    pub template_hash: String,
    /// The workload's `metadata.resourceVersion` as of the last reconcile that found every pod
    /// on its template (and wrote the status): a test's barrier for "the model has seen this
    /// write and did what it was going to do about it".
    pub reconciled_resource_version: u64,
}

/// One step of a rollout, in [`Rollouts::log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutStep {
    /// A rollout towards the template with this hash started.
    Started {
        /// The new template's hash.
        template_hash: String,
    },
    /// A pod was created on a node.
    PodCreated {
        /// Pod name.
        pod: String,
        /// Its UID.
        uid: String,
        /// `spec.nodeName`.
        node: String,
    },
    /// The kubelet reported the pod Running and Ready.
    PodReady {
        /// Pod name.
        pod: String,
        /// Its UID.
        uid: String,
    },
    /// A pod was deleted.
    PodDeleted {
        /// Pod name.
        pod: String,
        /// Its UID.
        uid: String,
        /// `spec.nodeName`.
        node: String,
    },
    /// Every pod runs the template with this hash.
    Completed {
        /// The template's hash.
        template_hash: String,
    },
}

/// A [`RolloutStep`] of a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutEvent {
    /// 1, 2, ... in the order things happened (over every workload).
    pub seq: u64,
    /// Whose.
    pub workload: WorkloadRef,
    /// What.
    pub step: RolloutStep,
}

#[derive(Debug)]
struct WorkerHandle {
    notify: Arc<Notify>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Inner {
    api: ApiServer,
    stats: Mutex<BTreeMap<WorkloadRef, RolloutStats>>,
    log: Mutex<Vec<RolloutEvent>>,
    workers: Mutex<HashMap<WorkloadRef, WorkerHandle>>,
    /// Bumped on every counter or log change (the waiters' wake-up).
    changed: tokio::sync::watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn update(&self, w: &WorkloadRef, f: impl FnOnce(&mut RolloutStats)) {
        f(lock(&self.stats).entry(w.clone()).or_default());
        self.changed.send_modify(|n| *n += 1);
    }

    fn record(&self, w: &WorkloadRef, step: RolloutStep) {
        {
            let mut log = lock(&self.log);
            let seq = log.len() as u64 + 1;
            tracing::debug!(workload = %w, ?step, "rollout");
            log.push(RolloutEvent {
                seq,
                workload: w.clone(),
                step,
            });
        }
        self.changed.send_modify(|n| *n += 1);
    }
}

/// The rollout controllers. Stops when dropped (a rollout in the middle stays where it is).
#[derive(Debug)]
pub struct Rollouts {
    inner: Arc<Inner>,
    dispatcher: JoinHandle<()>,
}

impl Drop for Rollouts {
    fn drop(&mut self) {
        self.dispatcher.abort();
        for (_, w) in lock(&self.inner.workers).drain() {
            w.task.abort();
        }
    }
}

impl Rollouts {
    /// Start the controllers on `api`'s store. Workloads already there are reconciled at once.
    /// Must be called inside a tokio runtime.
    pub fn start(api: ApiServer) -> Self {
        let (changed, _) = tokio::sync::watch::channel(0);
        let inner = Arc::new(Inner {
            api,
            stats: Mutex::new(BTreeMap::new()),
            log: Mutex::new(Vec::new()),
            workers: Mutex::new(HashMap::new()),
            changed,
        });
        // Subscribe before listing, so no change falls between the two.
        let rx = inner.api.subscribe();
        let dispatcher = tokio::spawn(dispatch(inner.clone(), rx));
        Self { inner, dispatcher }
    }

    /// The API stand-in it works on.
    pub fn api(&self) -> &ApiServer {
        &self.inner.api
    }

    /// Create a Deployment with `template` as `spec.template`, its ReplicaSet and one pod per
    /// entry of `nodes` (see [`create_deployment`]).
    pub fn create_deployment(
        &self,
        namespace: &str,
        name: &str,
        template: &Value,
        nodes: &[&str],
    ) -> anyhow::Result<Workload> {
        let w = create_deployment(&self.inner.api, namespace, name, template, nodes)?;
        self.adopt(&w);
        Ok(w)
    }

    /// Create a DaemonSet and one pod per node (see [`create_daemon_set`]).
    pub fn create_daemon_set(
        &self,
        namespace: &str,
        name: &str,
        template: &Value,
        nodes: &[&str],
    ) -> anyhow::Result<Workload> {
        let w = create_daemon_set(&self.inner.api, namespace, name, template, nodes)?;
        self.adopt(&w);
        Ok(w)
    }

    /// Create a StatefulSet and its pods `<name>-0`, `-1`, ... on `nodes` in that order (see
    /// [`create_stateful_set`]).
    pub fn create_stateful_set(
        &self,
        namespace: &str,
        name: &str,
        template: &Value,
        nodes: &[&str],
    ) -> anyhow::Result<Workload> {
        let w = create_stateful_set(&self.inner.api, namespace, name, template, nodes)?;
        self.adopt(&w);
        Ok(w)
    }

    fn adopt(&self, w: &Workload) {
        self.inner.update(&w.reference, |s| {
            s.template_hash = w.template_hash.clone();
        });
        nudge(&self.inner, &w.reference);
    }

    /// The counters of one workload (zeroes for one never seen).
    pub fn stats(&self, w: &WorkloadRef) -> RolloutStats {
        lock(&self.inner.stats).get(w).cloned().unwrap_or_default()
    }

    /// Rollouts started for one workload.
    pub fn started(&self, w: &WorkloadRef) -> u64 {
        self.stats(w).started
    }

    /// The counters of every workload seen.
    pub fn all_stats(&self) -> BTreeMap<WorkloadRef, RolloutStats> {
        lock(&self.inner.stats).clone()
    }

    /// Every rollout step so far, oldest first.
    pub fn log(&self) -> Vec<RolloutEvent> {
        lock(&self.inner.log).clone()
    }

    /// The workload's pods now (for a Deployment: the pods of all its ReplicaSets), by name.
    pub fn pods(&self, w: &WorkloadRef) -> Vec<Pod> {
        let Some(obj) = workload_object(&self.inner.api, w) else {
            return Vec::new();
        };
        owned_pods(&self.inner.api, w, &uid_of(&obj))
            .into_iter()
            .filter_map(|p| serde_json::from_value(p).ok())
            .collect()
    }

    /// Wait until `pred` holds for the workload's counters; the counters then, or an error
    /// naming what was seen after `timeout`.
    pub async fn wait_for(
        &self,
        w: &WorkloadRef,
        timeout: Duration,
        pred: impl Fn(&RolloutStats) -> bool,
    ) -> Result<RolloutStats, String> {
        let mut rx = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            let s = self.stats(w);
            if pred(&s) {
                return Ok(s);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(format!(
                    "{w}: not there within {timeout:?}: {s:?}; log: {:#?}",
                    self.log()
                        .into_iter()
                        .filter(|e| e.workload == *w)
                        .collect::<Vec<_>>()
                ));
            }
        }
    }

    /// Wait until `completed` rollouts of the workload have finished and none is running.
    pub async fn wait_completed(
        &self,
        w: &WorkloadRef,
        completed: u64,
        timeout: Duration,
    ) -> Result<RolloutStats, String> {
        self.wait_for(w, timeout, |s| s.completed >= completed && !s.in_progress)
            .await
    }
}

// ------------------------------------------------------------------------------- the hash

/// The hash the model names a pod template by: FNV-1a (32 bits) of the template's JSON with
/// sorted keys, written with Kubernetes' `rand.SafeEncodeString` alphabet over its decimal
/// form, like the real `pod-template-hash` (which hashes Go's dump of the object, so the
/// values differ from a real cluster's).
pub fn template_hash(template: &Value) -> String {
    let mut text = String::new();
    canonical(template, &mut text);
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            out.push('{');
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

// ------------------------------------------------------------------------------- fixtures

/// `template` with `metadata.labels` (`app: <name>` when it has none): what the selector
/// selects.
fn template_with_labels(template: &Value, name: &str) -> anyhow::Result<Value> {
    anyhow::ensure!(template.is_object(), "the pod template must be an object");
    let mut t = template.clone();
    let has_labels = t
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .is_some_and(|l| !l.is_empty());
    if !has_labels {
        t["metadata"]["labels"] = json!({"app": name});
    }
    Ok(t)
}

fn labels_of(template: &Value) -> Map<String, Value> {
    template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn controller_ref(kind: &str, name: &str, uid: &str) -> Value {
    json!({
        "apiVersion": APPS_V1,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// A pod from a template: its labels (plus `extra_labels`) and annotations, its spec with
/// `nodeName`, owned by `owner`.
fn pod_from_template(
    template: &Value,
    namespace: &str,
    name: &str,
    generate_name: Option<&str>,
    node: &str,
    extra_labels: &[(&str, String)],
    owner: Value,
) -> anyhow::Result<Pod> {
    let mut labels = labels_of(template);
    for (k, v) in extra_labels {
        labels.insert((*k).to_owned(), json!(v));
    }
    let mut metadata = json!({
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [owner],
    });
    if let Some(prefix) = generate_name {
        metadata["generateName"] = json!(prefix);
    }
    if let Some(a) = template
        .pointer("/metadata/annotations")
        .filter(|a| a.as_object().is_some_and(|a| !a.is_empty()))
    {
        metadata["annotations"] = a.clone();
    }
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    anyhow::ensure!(spec.is_object(), "the template's spec must be an object");
    spec["nodeName"] = json!(node);
    serde_json::from_value(json!({"metadata": metadata, "spec": spec}))
        .context("the pod template does not make a pod")
}

fn create_pod(api: &ApiServer, pod: &Pod) -> anyhow::Result<Pod> {
    api.create_pod(pod).map_err(|e| {
        anyhow::anyhow!(
            "creating pod {}: {e}",
            pod.metadata.name.as_deref().unwrap_or("")
        )
    })
}

fn apply(api: &ApiServer, obj: &Value) -> anyhow::Result<Value> {
    api.apply_object(obj).map_err(|e| {
        anyhow::anyhow!(
            "writing {} {}: {e}",
            obj["kind"].as_str().unwrap_or(""),
            obj["metadata"]["name"].as_str().unwrap_or("")
        )
    })
}

fn stored_template(obj: &Value) -> Value {
    obj.pointer("/spec/template").cloned().unwrap_or(json!({}))
}

/// Create (or replace) a Deployment `namespace/name` with `template` as its pod template
/// (`metadata.labels` default to `app: <name>` and make its selector; annotations, volumes,
/// containers as given), strategy RollingUpdate maxUnavailable 0 / maxSurge 1, `replicas` the
/// number of nodes; its ReplicaSet `<name>-<hash>` (label `pod-template-hash`, revision 1,
/// controller reference to the Deployment) and one pod per entry of `nodes`
/// (`<replicaset>-<5 chars>`, `spec.nodeName` set, controller reference to the ReplicaSet,
/// the template's labels and annotations plus `pod-template-hash`). The pods start `Pending`;
/// a [`crate::node::NodeKubelet`] for their node starts them.
pub fn create_deployment(
    api: &ApiServer,
    namespace: &str,
    name: &str,
    template: &Value,
    nodes: &[&str],
) -> anyhow::Result<Workload> {
    let template = template_with_labels(template, name)?;
    let labels = labels_of(&template);
    let replicas = nodes.len();
    let deployment = apply(
        api,
        &json!({
            "apiVersion": APPS_V1,
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "annotations": {REVISION: "1"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": template,
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
            },
        }),
    )?;
    let uid = uid_of(&deployment);
    let template = stored_template(&deployment);
    let hash = template_hash(&template);
    let rs = replica_set_object(&deployment, &template, &hash, 1, replicas);
    let rs = apply(api, &rs)?;
    let rs_name = name_of(&rs).to_owned();
    let mut pods = Vec::new();
    for node in nodes {
        let pod = pod_from_template(
            &template,
            namespace,
            &format!("{rs_name}-{}", crate::apiserver::random_suffix(5)),
            Some(&format!("{rs_name}-")),
            node,
            &[(POD_TEMPLATE_HASH, hash.clone())],
            controller_ref("ReplicaSet", &rs_name, &uid_of(&rs)),
        )?;
        pods.push(create_pod(api, &pod)?);
    }
    Ok(Workload {
        reference: WorkloadRef::deployment(namespace, name),
        uid,
        template_hash: hash,
        replica_set: Some(rs_name),
        pods,
    })
}

/// The ReplicaSet of a Deployment for the template with `hash`.
fn replica_set_object(
    deployment: &Value,
    template: &Value,
    hash: &str,
    revision: u64,
    replicas: usize,
) -> Value {
    let name = name_of(deployment);
    let rs_name = format!("{name}-{hash}");
    let mut labels = labels_of(template);
    labels.insert(POD_TEMPLATE_HASH.into(), json!(hash));
    let mut selector = deployment
        .pointer("/spec/selector")
        .cloned()
        .unwrap_or(json!({}));
    selector["matchLabels"][POD_TEMPLATE_HASH] = json!(hash);
    let mut template = template.clone();
    template["metadata"]["labels"] = Value::Object(labels.clone());
    json!({
        "apiVersion": APPS_V1,
        "kind": "ReplicaSet",
        "metadata": {
            "name": rs_name,
            "namespace": namespace_of(deployment),
            "labels": labels,
            "annotations": {
                REVISION: revision.to_string(),
                "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                "deployment.kubernetes.io/max-replicas": (replicas + 1).to_string(),
            },
            "ownerReferences": [controller_ref("Deployment", name, &uid_of(deployment))],
        },
        "spec": {"replicas": replicas, "selector": selector, "template": template},
    })
}

/// Create (or replace) a DaemonSet `namespace/name` with `template` (labels as for
/// [`create_deployment`]), update strategy RollingUpdate maxUnavailable 0 / maxSurge 1, and
/// one pod per entry of `nodes` (`<name>-<5 chars>`, `spec.nodeName` set, controller reference
/// to the DaemonSet, labels `controller-revision-hash` and `pod-template-generation`).
pub fn create_daemon_set(
    api: &ApiServer,
    namespace: &str,
    name: &str,
    template: &Value,
    nodes: &[&str],
) -> anyhow::Result<Workload> {
    let template = template_with_labels(template, name)?;
    let labels = labels_of(&template);
    let ds = apply(
        api,
        &json!({
            "apiVersion": APPS_V1,
            "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": template,
                "updateStrategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
            },
        }),
    )?;
    let uid = uid_of(&ds);
    let template = stored_template(&ds);
    let hash = template_hash(&template);
    let mut pods = Vec::new();
    for node in nodes {
        let pod = daemon_pod(&ds, &template, &hash, node)?;
        pods.push(create_pod(api, &pod)?);
    }
    Ok(Workload {
        reference: WorkloadRef::daemon_set(namespace, name),
        uid,
        template_hash: hash,
        replica_set: None,
        pods,
    })
}

fn daemon_pod(ds: &Value, template: &Value, hash: &str, node: &str) -> anyhow::Result<Pod> {
    let name = name_of(ds);
    pod_from_template(
        template,
        namespace_of(ds),
        &format!("{name}-{}", crate::apiserver::random_suffix(5)),
        Some(&format!("{name}-")),
        node,
        &[
            (CONTROLLER_REVISION_HASH, hash.to_owned()),
            ("pod-template-generation", generation_of(ds).to_string()),
        ],
        controller_ref("DaemonSet", name, &uid_of(ds)),
    )
}

/// Create (or replace) a StatefulSet `namespace/name` with `template` (labels as for
/// [`create_deployment`]), `serviceName` its name, `replicas` the number of nodes, and its pods
/// `<name>-0`, `<name>-1`, ... on `nodes` in that order (controller reference to the
/// StatefulSet, labels `controller-revision-hash` = `<name>-<hash>`,
/// `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index`).
pub fn create_stateful_set(
    api: &ApiServer,
    namespace: &str,
    name: &str,
    template: &Value,
    nodes: &[&str],
) -> anyhow::Result<Workload> {
    let template = template_with_labels(template, name)?;
    let labels = labels_of(&template);
    let sts = apply(
        api,
        &json!({
            "apiVersion": APPS_V1,
            "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": nodes.len(),
                "serviceName": name,
                "selector": {"matchLabels": labels},
                "template": template,
            },
        }),
    )?;
    let uid = uid_of(&sts);
    let template = stored_template(&sts);
    let hash = template_hash(&template);
    let mut pods = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let pod = stateful_pod(&sts, &template, &hash, i, node)?;
        pods.push(create_pod(api, &pod)?);
    }
    Ok(Workload {
        reference: WorkloadRef::stateful_set(namespace, name),
        uid,
        template_hash: hash,
        replica_set: None,
        pods,
    })
}

fn stateful_pod(
    sts: &Value,
    template: &Value,
    hash: &str,
    ordinal: usize,
    node: &str,
) -> anyhow::Result<Pod> {
    let name = name_of(sts);
    let pod_name = format!("{name}-{ordinal}");
    let mut pod = pod_from_template(
        template,
        namespace_of(sts),
        &pod_name,
        None,
        node,
        &[
            (CONTROLLER_REVISION_HASH, format!("{name}-{hash}")),
            ("statefulset.kubernetes.io/pod-name", pod_name.clone()),
            ("apps.kubernetes.io/pod-index", ordinal.to_string()),
        ],
        controller_ref("StatefulSet", name, &uid_of(sts)),
    )?;
    if let Some(spec) = pod.spec.as_mut() {
        spec.hostname = Some(pod_name);
        spec.subdomain = sts
            .pointer("/spec/serviceName")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    Ok(pod)
}

// ------------------------------------------------------------------------------- reading

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn uid_of(v: &Value) -> String {
    str_at(v, "/metadata/uid").to_owned()
}

fn name_of(v: &Value) -> &str {
    str_at(v, "/metadata/name")
}

fn namespace_of(v: &Value) -> &str {
    str_at(v, "/metadata/namespace")
}

fn node_of(v: &Value) -> String {
    str_at(v, "/spec/nodeName").to_owned()
}

fn generation_of(v: &Value) -> i64 {
    v.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn label<'a>(v: &'a Value, key: &str) -> &'a str {
    v.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The controller owner reference: (kind, name, uid).
fn controller_of(v: &Value) -> Option<(String, String, String)> {
    v.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller") == Some(&json!(true)))
        .map(|r| {
            (
                str_at(r, "/kind").to_owned(),
                str_at(r, "/name").to_owned(),
                str_at(r, "/uid").to_owned(),
            )
        })
}

fn owned_by(v: &Value, uid: &str) -> bool {
    controller_of(v).is_some_and(|(_, _, u)| !uid.is_empty() && u == uid)
}

/// Running with a `Ready` condition `True` (what the kubelet stand-in writes once it has set
/// up the volumes and "started" the containers).
fn is_ready(pod: &Value) -> bool {
    str_at(pod, "/status/phase") == "Running"
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
}

fn workload_object(api: &ApiServer, w: &WorkloadRef) -> Option<Value> {
    api.object(w.kind.resource(), &w.namespace, &w.name)
}

fn objects_in(api: &ApiServer, kind: &str, api_version: &str, namespace: &str) -> Vec<Value> {
    api.objects(api_version, kind)
        .into_iter()
        .filter(|o| namespace_of(o) == namespace)
        .collect()
}

/// The Deployment's ReplicaSets.
fn replica_sets(api: &ApiServer, namespace: &str, deployment_uid: &str) -> Vec<Value> {
    objects_in(api, "ReplicaSet", APPS_V1, namespace)
        .into_iter()
        .filter(|rs| owned_by(rs, deployment_uid))
        .collect()
}

/// The workload's pods (through its ReplicaSets for a Deployment), sorted by name.
fn owned_pods(api: &ApiServer, w: &WorkloadRef, uid: &str) -> Vec<Value> {
    let owners: BTreeSet<String> = match w.kind {
        WorkloadKind::Deployment => replica_sets(api, &w.namespace, uid)
            .iter()
            .map(uid_of)
            .collect(),
        _ => BTreeSet::from([uid.to_owned()]),
    };
    objects_in(api, "Pod", "v1", &w.namespace)
        .into_iter()
        .filter(|p| controller_of(p).is_some_and(|(_, _, u)| owners.contains(&u)))
        .collect()
}

/// The hash label value a pod of the template with `hash` carries.
fn pod_hash_label(w: &WorkloadRef, hash: &str) -> (&'static str, String) {
    match w.kind {
        WorkloadKind::Deployment => (POD_TEMPLATE_HASH, hash.to_owned()),
        WorkloadKind::DaemonSet => (CONTROLLER_REVISION_HASH, hash.to_owned()),
        WorkloadKind::StatefulSet => (CONTROLLER_REVISION_HASH, format!("{}-{hash}", w.name)),
    }
}

fn is_current(w: &WorkloadRef, pod: &Value, hash: &str) -> bool {
    let (key, want) = pod_hash_label(w, hash);
    label(pod, key) == want
}

// ------------------------------------------------------------------------------- the loop

async fn dispatch(inner: Arc<Inner>, mut rx: broadcast::Receiver<Arc<StoreChange>>) {
    resync_all(&inner);
    loop {
        match rx.recv().await {
            Ok(c) => on_change(&inner, &c),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "rollouts: fell behind the store, resyncing");
                resync_all(&inner);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn resync_all(inner: &Arc<Inner>) {
    for kind in [
        WorkloadKind::Deployment,
        WorkloadKind::DaemonSet,
        WorkloadKind::StatefulSet,
    ] {
        for obj in inner.api.objects(APPS_V1, kind.kind()) {
            nudge(
                inner,
                &WorkloadRef::new(kind, namespace_of(&obj), name_of(&obj)),
            );
        }
    }
}

fn on_change(inner: &Arc<Inner>, c: &StoreChange) {
    if let Some(kind) = WorkloadKind::of_resource(c.resource) {
        let w = WorkloadRef::new(kind, &c.namespace, &c.name);
        if c.change == ChangeType::Deleted {
            if let Some(h) = lock(&inner.workers).remove(&w) {
                h.task.abort();
            }
            collect_garbage(&inner.api, &c.namespace, &c.uid);
        } else {
            nudge(inner, &w);
        }
        return;
    }
    match c.resource {
        Resource::ReplicaSets => {
            if c.change == ChangeType::Deleted {
                collect_garbage(&inner.api, &c.namespace, &c.uid);
            }
            if let Some((kind, name, _)) = controller_of(&c.object)
                && kind == "Deployment"
            {
                nudge(inner, &WorkloadRef::deployment(&c.namespace, &name));
            }
        }
        Resource::Pods => {
            let Some((kind, name, _)) = controller_of(&c.object) else {
                return;
            };
            if kind == "ReplicaSet" {
                let owner = inner
                    .api
                    .object(Resource::ReplicaSets, &c.namespace, &name)
                    .and_then(|rs| controller_of(&rs));
                if let Some((kind, name, _)) = owner
                    && kind == "Deployment"
                {
                    nudge(inner, &WorkloadRef::deployment(&c.namespace, &name));
                }
            } else if let Some(kind) = WorkloadKind::of_kind(&kind) {
                nudge(inner, &WorkloadRef::new(kind, &c.namespace, &name));
            }
        }
        _ => {}
    }
}

/// The garbage collector's part: what the deleted owner controlled goes with it (its
/// ReplicaSets' pods follow when their deletion comes by).
fn collect_garbage(api: &ApiServer, namespace: &str, owner_uid: &str) {
    for rs in objects_in(api, "ReplicaSet", APPS_V1, namespace) {
        if owned_by(&rs, owner_uid) {
            let _ = api.delete_object(APPS_V1, "ReplicaSet", Some(namespace), name_of(&rs));
        }
    }
    for pod in objects_in(api, "Pod", "v1", namespace) {
        if owned_by(&pod, owner_uid) {
            let _ = api.delete_pod(namespace, name_of(&pod));
        }
    }
}

fn nudge(inner: &Arc<Inner>, w: &WorkloadRef) {
    let mut workers = lock(&inner.workers);
    if let Some(h) = workers.get(w)
        && !h.task.is_finished()
    {
        h.notify.notify_one();
        return;
    }
    let notify = Arc::new(Notify::new());
    notify.notify_one();
    let task = tokio::spawn(run_worker(inner.clone(), w.clone(), notify.clone()));
    workers.insert(w.clone(), WorkerHandle { notify, task });
}

async fn run_worker(inner: Arc<Inner>, w: WorkloadRef, notify: Arc<Notify>) {
    loop {
        notify.notified().await;
        if let Err(e) = reconcile(&inner, &w).await {
            tracing::warn!(workload = %w, error = %e, "rollouts: reconcile failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
            notify.notify_one();
        }
    }
}

/// Why a wait for a new pod ended.
enum Waited {
    Ready,
    /// The workload's template changed (or the workload went away): this rollout is over.
    Superseded,
    /// The new pod went away before it was ready (deleted by someone else).
    PodGone,
}

/// One reconcile: status from the pods; a rollout when some pod runs another template.
async fn reconcile(inner: &Arc<Inner>, w: &WorkloadRef) -> Result<(), ApiError> {
    let api = &inner.api;
    loop {
        let Some(obj) = workload_object(api, w) else {
            return Ok(());
        };
        let uid = uid_of(&obj);
        let hash = template_hash(&stored_template(&obj));
        let mut outdated: Vec<Value> = owned_pods(api, w, &uid)
            .into_iter()
            .filter(|p| !is_current(w, p, &hash))
            .collect();
        if outdated.is_empty() {
            write_status(api, w, &obj, &hash)?;
            let finished = lock(&inner.stats)
                .get(w)
                .is_some_and(|s| s.in_progress && s.template_hash == hash);
            let rv = str_at(&obj, "/metadata/resourceVersion")
                .parse::<u64>()
                .unwrap_or(0);
            // The log first: whoever the counters wake finds the step there.
            if finished {
                inner.record(
                    w,
                    RolloutStep::Completed {
                        template_hash: hash.clone(),
                    },
                );
            }
            inner.update(w, |s| {
                s.reconciled_resource_version = s.reconciled_resource_version.max(rv);
                if finished {
                    s.completed += 1;
                }
                if s.template_hash.is_empty() {
                    s.template_hash = hash.clone();
                }
                s.in_progress = false;
            });
            return Ok(());
        }
        let new_target = lock(&inner.stats)
            .get(w)
            .is_none_or(|s| !(s.in_progress && s.template_hash == hash));
        if new_target {
            inner.record(
                w,
                RolloutStep::Started {
                    template_hash: hash.clone(),
                },
            );
            inner.update(w, |s| {
                s.started += 1;
                s.in_progress = true;
                s.template_hash = hash.clone();
            });
        }
        write_status(api, w, &obj, &hash)?;
        if w.kind == WorkloadKind::StatefulSet {
            // Highest ordinal first, as the StatefulSet controller updates.
            outdated.sort_by_key(|p| std::cmp::Reverse(ordinal(name_of(p))));
        }
        for old in outdated {
            // Only the newest template rolls on: a newer one starts over in the next
            // reconcile (its change has nudged this worker already).
            match workload_object(api, w) {
                Some(now) if template_hash(&stored_template(&now)) == hash => {}
                _ => return Ok(()),
            }
            let waited = match w.kind {
                WorkloadKind::StatefulSet => replace_in_place(inner, w, &obj, &hash, &old).await?,
                _ => replace_with_surge(inner, w, &obj, &hash, &old).await?,
            };
            if let Some(now) = workload_object(api, w) {
                write_status(api, w, &now, &template_hash(&stored_template(&now)))?;
            }
            match waited {
                Waited::Ready => {}
                Waited::Superseded => return Ok(()),
                Waited::PodGone => {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        "a new pod went away before it was ready",
                    ));
                }
            }
        }
        // Every pod moved: look again (and record the completion).
    }
}

fn ordinal(pod_name: &str) -> u64 {
    pod_name
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// Deployment and DaemonSet: a new pod on the old one's node, then (once Ready) the old one
/// goes.
async fn replace_with_surge(
    inner: &Arc<Inner>,
    w: &WorkloadRef,
    obj: &Value,
    hash: &str,
    old: &Value,
) -> Result<Waited, ApiError> {
    let api = &inner.api;
    let template = stored_template(obj);
    let node = node_of(old);
    let pod = match w.kind {
        WorkloadKind::Deployment => {
            let rs = ensure_replica_set(api, obj, &template, hash)?;
            let rs_name = name_of(&rs).to_owned();
            pod_from_template(
                &template,
                &w.namespace,
                &format!("{rs_name}-{}", crate::apiserver::random_suffix(5)),
                Some(&format!("{rs_name}-")),
                &node,
                &[(POD_TEMPLATE_HASH, hash.to_owned())],
                controller_ref("ReplicaSet", &rs_name, &uid_of(&rs)),
            )
        }
        _ => daemon_pod(obj, &template, hash, &node),
    }
    .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    // Subscribe before creating: the Ready status cannot slip by.
    let mut rx = api.subscribe();
    let created = api.create_pod(&pod)?;
    let (name, uid) = pod_ids(&created);
    inner.record(
        w,
        RolloutStep::PodCreated {
            pod: name.clone(),
            uid: uid.clone(),
            node: node.clone(),
        },
    );
    inner.update(w, |s| s.pods_created += 1);
    let waited = wait_ready(inner, w, &mut rx, &name, &uid, hash).await;
    if matches!(waited, Waited::Ready) {
        delete_pod(inner, w, old)?;
    }
    Ok(waited)
}

/// StatefulSet: the old pod goes, a pod with its name (and a new UID) comes on its node.
async fn replace_in_place(
    inner: &Arc<Inner>,
    w: &WorkloadRef,
    obj: &Value,
    hash: &str,
    old: &Value,
) -> Result<Waited, ApiError> {
    let api = &inner.api;
    let template = stored_template(obj);
    let node = node_of(old);
    let pod = stateful_pod(obj, &template, hash, ordinal(name_of(old)) as usize, &node)
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    delete_pod(inner, w, old)?;
    let mut rx = api.subscribe();
    let created = api.create_pod(&pod)?;
    let (name, uid) = pod_ids(&created);
    inner.record(
        w,
        RolloutStep::PodCreated {
            pod: name.clone(),
            uid: uid.clone(),
            node,
        },
    );
    inner.update(w, |s| s.pods_created += 1);
    Ok(wait_ready(inner, w, &mut rx, &name, &uid, hash).await)
}

fn pod_ids(pod: &Pod) -> (String, String) {
    (
        pod.metadata.name.clone().unwrap_or_default(),
        pod.metadata.uid.clone().unwrap_or_default(),
    )
}

fn delete_pod(inner: &Arc<Inner>, w: &WorkloadRef, old: &Value) -> Result<(), ApiError> {
    let api = &inner.api;
    let (name, uid) = (name_of(old), uid_of(old));
    // Only the pod we mean (a StatefulSet pod's name outlives it).
    let same = api
        .pod(&w.namespace, name)
        .is_some_and(|p| p.metadata.uid.as_deref() == Some(uid.as_str()));
    if same {
        match api.delete_pod(&w.namespace, name) {
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
        inner.record(
            w,
            RolloutStep::PodDeleted {
                pod: name.to_owned(),
                uid,
                node: node_of(old),
            },
        );
        inner.update(w, |s| s.pods_deleted += 1);
    }
    Ok(())
}

/// Wait until the pod `name` with `uid` is Running and Ready, the workload's template moves
/// past `hash`, or the pod goes away. Every check reads the store; the subscription only says
/// when to look again.
async fn wait_ready(
    inner: &Arc<Inner>,
    w: &WorkloadRef,
    rx: &mut broadcast::Receiver<Arc<StoreChange>>,
    name: &str,
    uid: &str,
    hash: &str,
) -> Waited {
    let api = &inner.api;
    loop {
        match api.object(Resource::Pods, &w.namespace, name) {
            Some(p) if uid_of(&p) == uid => {
                if is_ready(&p) {
                    inner.record(
                        w,
                        RolloutStep::PodReady {
                            pod: name.to_owned(),
                            uid: uid.to_owned(),
                        },
                    );
                    return Waited::Ready;
                }
            }
            _ => return Waited::PodGone,
        }
        match workload_object(api, w) {
            Some(now) if template_hash(&stored_template(&now)) == hash => {}
            _ => return Waited::Superseded,
        }
        loop {
            match rx.recv().await {
                Ok(c)
                    if c.namespace == w.namespace
                        && ((c.resource == Resource::Pods && c.name == name)
                            || (c.resource == w.kind.resource() && c.name == w.name)) =>
                {
                    break;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return Waited::Superseded,
            }
        }
    }
}

/// The Deployment's ReplicaSet for `hash`, created (next revision) when missing.
fn ensure_replica_set(
    api: &ApiServer,
    deployment: &Value,
    template: &Value,
    hash: &str,
) -> Result<Value, ApiError> {
    let ns = namespace_of(deployment);
    let rs_name = format!("{}-{hash}", name_of(deployment));
    let owned = replica_sets(api, ns, &uid_of(deployment));
    if let Some(rs) = owned.iter().find(|rs| name_of(rs) == rs_name) {
        return Ok(rs.clone());
    }
    let revision = owned
        .iter()
        .filter_map(|rs| {
            rs.pointer("/metadata/annotations")
                .and_then(|a| a.get(REVISION))
                .and_then(Value::as_str)
                .and_then(|r| r.parse::<u64>().ok())
        })
        .max()
        .unwrap_or(0)
        + 1;
    let replicas = deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1) as usize;
    let mut rs = replica_set_object(deployment, template, hash, revision, replicas);
    // It grows as its pods come (the old one shrinks as they go): see `write_status`.
    rs["spec"]["replicas"] = json!(0);
    let rs = api.apply_object(&rs)?;
    api.patch_object(
        APPS_V1,
        "Deployment",
        Some(ns),
        name_of(deployment),
        &json!({"metadata": {"annotations": {REVISION: revision.to_string()}}}),
    )?;
    Ok(rs)
}

/// Status from the pods as they are now (a write that changes nothing is a no-op in the
/// store). `observedGeneration` is the workload's generation: the model has seen it.
fn write_status(api: &ApiServer, w: &WorkloadRef, obj: &Value, hash: &str) -> Result<(), ApiError> {
    let uid = uid_of(obj);
    let pods = owned_pods(api, w, &uid);
    let total = pods.len();
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let updated: Vec<&Value> = pods.iter().filter(|p| is_current(w, p, hash)).collect();
    let generation = generation_of(obj);
    let desired = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .map_or(total, |r| r as usize);
    let status = match w.kind {
        WorkloadKind::Deployment => {
            sync_replica_sets(api, &w.namespace, &uid, &pods)?;
            let done = updated.len() == desired && total == desired && ready == total;
            let available = ready >= desired;
            json!({
                "observedGeneration": generation,
                "replicas": total,
                "updatedReplicas": updated.len(),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "unavailableReplicas": total.saturating_sub(ready),
                "conditions": [
                    condition(
                        obj,
                        "Available",
                        available,
                        if available {
                            "MinimumReplicasAvailable"
                        } else {
                            "MinimumReplicasUnavailable"
                        },
                        if available {
                            "Deployment has minimum availability."
                        } else {
                            "Deployment does not have minimum availability."
                        }
                        .to_owned(),
                    ),
                    condition(
                        obj,
                        "Progressing",
                        true,
                        if done { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                        format!(
                            "ReplicaSet \"{}-{hash}\" {}",
                            w.name,
                            if done { "has successfully progressed." } else { "is progressing." }
                        ),
                    ),
                ],
            })
        }
        WorkloadKind::DaemonSet => {
            let nodes: BTreeSet<String> = pods.iter().map(node_of).collect();
            json!({
                "observedGeneration": generation,
                "desiredNumberScheduled": nodes.len(),
                "currentNumberScheduled": nodes.len(),
                "numberMisscheduled": 0,
                "numberReady": ready,
                "numberAvailable": ready,
                "numberUnavailable": nodes.len().saturating_sub(ready),
                "updatedNumberScheduled": updated.len(),
            })
        }
        WorkloadKind::StatefulSet => {
            let update_revision = format!("{}-{hash}", w.name);
            let current_revision = if updated.len() == total {
                update_revision.clone()
            } else {
                pods.iter()
                    .map(|p| label(p, CONTROLLER_REVISION_HASH))
                    .find(|l| *l != update_revision)
                    .unwrap_or("")
                    .to_owned()
            };
            let current = pods
                .iter()
                .filter(|p| label(p, CONTROLLER_REVISION_HASH) == current_revision)
                .count();
            json!({
                "observedGeneration": generation,
                "replicas": total,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "currentReplicas": current,
                "updatedReplicas": updated.len(),
                "currentRevision": current_revision,
                "updateRevision": update_revision,
                "collisionCount": 0,
            })
        }
    };
    api.patch_object_status(
        APPS_V1,
        w.kind.kind(),
        Some(&w.namespace),
        &w.name,
        &json!({"status": status}),
    )?;
    Ok(())
}

/// A status condition; its times are kept while its status and reason stay (so that an
/// unchanged status is an unchanged object, and no write).
fn condition(obj: &Value, type_: &str, status: bool, reason: &str, message: String) -> Value {
    let status = if status { "True" } else { "False" };
    let old = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_));
    let now = crate::apiserver::now_rfc3339();
    let (updated, transition) = match old {
        Some(c) if c["status"] == status && c["reason"] == reason => {
            (c["lastUpdateTime"].clone(), c["lastTransitionTime"].clone())
        }
        Some(c) if c["status"] == status => (json!(now), c["lastTransitionTime"].clone()),
        _ => (json!(now), json!(now)),
    };
    json!({
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": updated,
        "lastTransitionTime": transition,
    })
}

/// Each ReplicaSet of a Deployment: `spec.replicas` and status follow its pods (the model
/// never scales; the counts say where the pods are).
fn sync_replica_sets(
    api: &ApiServer,
    namespace: &str,
    deployment_uid: &str,
    pods: &[Value],
) -> Result<(), ApiError> {
    for rs in replica_sets(api, namespace, deployment_uid) {
        let rs_uid = uid_of(&rs);
        let mine: Vec<&Value> = pods.iter().filter(|p| owned_by(p, &rs_uid)).collect();
        let ready = mine.iter().filter(|p| is_ready(p)).count();
        let name = name_of(&rs);
        let rs = if rs.pointer("/spec/replicas").and_then(Value::as_u64) != Some(mine.len() as u64)
        {
            api.patch_object(
                APPS_V1,
                "ReplicaSet",
                Some(namespace),
                name,
                &json!({"spec": {"replicas": mine.len()}}),
            )?
        } else {
            rs.clone()
        };
        api.patch_object_status(
            APPS_V1,
            "ReplicaSet",
            Some(namespace),
            name,
            &json!({"status": {
                "observedGeneration": generation_of(&rs),
                "replicas": mine.len(),
                "fullyLabeledReplicas": mine.len(),
                "readyReplicas": ready,
                "availableReplicas": ready,
            }}),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_ignores_key_order_and_sees_every_value() {
        let a = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [1, 2]}});
        let b = json!({"spec": {"x": [1, 2]}, "metadata": {"labels": {"b": "2", "a": "1"}}});
        assert_eq!(template_hash(&a), template_hash(&b));
        let c = json!({"metadata": {"labels": {"a": "1", "b": "3"}}, "spec": {"x": [1, 2]}});
        assert_ne!(template_hash(&a), template_hash(&c));
        let h = template_hash(&a);
        assert!(!h.is_empty() && h.len() <= 10, "{h}");
        assert!(
            h.bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
        );
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal("web-0"), 0);
        assert_eq!(ordinal("my-web-12"), 12);
    }
}
