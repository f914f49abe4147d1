//! The workload and rollout model: apps/v1 kinds in the API stand-in, driven over HTTP by
//! kube-rs as the agent drives them, and the rollout model ([`Rollouts`]) replacing pods that
//! the kubelet stand-in ([`NodeKubelet`]) then starts on real tmpfs.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use mountlag_testbed::apiserver::{ADMIN_TOKEN, ADMIN_USER, ApiServer, ApiServerConfig};
use mountlag_testbed::kubelet::{KubeletStandIn, VolumeKind};
use mountlag_testbed::node::{NodeConfig, NodeKubelet, SyncOutcome};
use mountlag_testbed::rbac::Rbac;
use mountlag_testbed::real;
use mountlag_testbed::rollout::{
    self, CONTROLLER_REVISION_HASH, POD_TEMPLATE_HASH, RolloutStep, Rollouts, WorkloadRef,
};
use serde_json::{Value, json};

const NS: &str = "shop";
const NODES: [&str; 2] = ["node-a", "node-b"];
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
const WAIT: Duration = Duration::from_secs(30);

fn can_run() -> bool {
    real::require("root + tmpfs", real::can_mount())
}

/// The API stand-in, a kubelet per node (fast periodic syncs) and the rollout model.
struct Bed {
    api: ApiServer,
    nodes: BTreeMap<&'static str, NodeKubelet>,
    rollouts: Rollouts,
}

async fn bed() -> Bed {
    let api = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    let nodes = NODES
        .iter()
        .map(|name| {
            let kubelet = Arc::new(KubeletStandIn::in_tempdir().unwrap());
            let node = NodeKubelet::start(
                api.clone(),
                kubelet,
                NodeConfig::new(*name).time_factor(0.02),
            );
            (*name, node)
        })
        .collect();
    api.apply_secret(
        &serde_json::from_value::<Secret>(json!({
            "metadata": {"name": "edge-tls", "namespace": NS},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": "CRT-1", "tls.key": "KEY-1"},
        }))
        .unwrap(),
    )
    .unwrap();
    let rollouts = Rollouts::start(api.clone());
    Bed {
        api,
        nodes,
        rollouts,
    }
}

/// An nginx pod template with the TLS Secret mounted, as an Ingress controller's.
fn template(app: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}, "annotations": {"team": "edge"}},
        "spec": {
            "containers": [{
                "name": "nginx",
                "image": "nginx:1.27",
                "volumeMounts": [{"name": "tls", "mountPath": "/etc/tls"}],
            }],
            "volumes": [{"name": "tls", "secret": {"secretName": "edge-tls"}}],
        },
    })
}

fn restart_patch(value: &str) -> Patch<Value> {
    Patch::Merge(json!({
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: value}}}}
    }))
}

/// Wait until `cond` holds, looking again at every change of the store.
async fn wait_until(api: &ApiServer, what: &str, cond: impl Fn() -> bool) {
    let mut rx = api.subscribe();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(_) => {}
            Err(_) => panic!("{what}: not within {WAIT:?}"),
        }
    }
}

fn ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

async fn all_ready(bed: &Bed, w: &WorkloadRef, n: usize) {
    wait_until(&bed.api, &format!("{w}: {n} pods ready"), || {
        let pods = bed.rollouts.pods(w);
        pods.len() == n && pods.iter().all(ready)
    })
    .await;
}

/// (name, uid, node) of each pod, by node.
fn by_node(pods: &[Pod]) -> BTreeMap<String, (String, String)> {
    pods.iter()
        .map(|p| {
            (
                p.spec.as_ref().unwrap().node_name.clone().unwrap(),
                (p.name_any(), p.uid().unwrap()),
            )
        })
        .collect()
}

/// The new pods: on the same nodes as `before`, new UIDs, the annotation, started by their
/// node's kubelet with the Secret on disk; the old ones gone from the API and torn down.
async fn assert_replaced_on_same_nodes(
    bed: &Bed,
    before: &BTreeMap<String, (String, String)>,
    after: &[Pod],
    annotation: &str,
) {
    let now = by_node(after);
    assert_eq!(
        now.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "one pod per node, on the same nodes: {now:?}"
    );
    for (node_name, (name, uid)) in &now {
        let (old_name, old_uid) = &before[node_name];
        assert_ne!(uid, old_uid, "{name} on {node_name} is a new pod");
        let pod = after.iter().find(|p| p.name_any() == *name).unwrap();
        assert_eq!(
            pod.annotations().get(RESTARTED_AT).map(String::as_str),
            Some(annotation),
            "{name}"
        );
        assert_eq!(
            pod.annotations().get("team").map(String::as_str),
            Some("edge")
        );
        assert!(ready(pod), "{name} is Running and Ready");
        let node = &bed.nodes[node_name.as_str()];
        let crt = node
            .kubelet()
            .volume_dir(uid, VolumeKind::Secret, "tls")
            .join("tls.crt");
        assert_eq!(
            std::fs::read_to_string(&crt).unwrap_or_else(|e| panic!("{}: {e}", crt.display())),
            "CRT-1"
        );
        // The old pod: gone from the API (a StatefulSet's name comes back with another UID),
        // and its kubelet tears it down.
        let gone = bed
            .api
            .pod(NS, old_name)
            .is_none_or(|p| p.uid().as_deref() != Some(old_uid.as_str()));
        assert!(gone, "{old_name} ({old_uid}) is gone");
        let torn_down = node
            .wait_for(0, WAIT, |e| {
                e.pod_uid == *old_uid && e.outcome == SyncOutcome::TornDown
            })
            .await;
        assert!(torn_down.is_some(), "{old_name}: never torn down");
        assert!(!node.kubelet().pod_dir(old_uid).exists());
    }
}

/// In the log: one pod at a time, and on each node the new pod is Ready before the old one
/// goes (surge), or the old one goes before the new one comes (StatefulSet).
fn steps(bed: &Bed, w: &WorkloadRef) -> Vec<RolloutStep> {
    bed.rollouts
        .log()
        .into_iter()
        .filter(|e| e.workload == *w)
        .map(|e| e.step)
        .collect()
}

fn step_names(steps: &[RolloutStep]) -> Vec<String> {
    steps
        .iter()
        .map(|s| match s {
            RolloutStep::Started { .. } => "started".to_owned(),
            RolloutStep::PodCreated { node, .. } => format!("create@{node}"),
            RolloutStep::PodReady { .. } => "ready".to_owned(),
            RolloutStep::PodDeleted { node, .. } => format!("delete@{node}"),
            RolloutStep::Completed { .. } => "completed".to_owned(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_annotation_patch_restarts_a_deployment_once_pod_by_pod_on_the_same_nodes() {
    if !can_run() {
        return;
    }
    let bed = bed().await;
    let fixture = bed
        .rollouts
        .create_deployment(NS, "web", &template("web"), &NODES)
        .unwrap();
    let w = fixture.reference.clone();
    all_ready(&bed, &w, 2).await;
    let before = by_node(&bed.rollouts.pods(&w));
    let old_rs = fixture.replica_set.clone().unwrap();
    assert_eq!(old_rs, format!("web-{}", fixture.template_hash));

    // The agent's restart: a merge patch of the template's annotations, over HTTP.
    let deployments: Api<Deployment> = Api::namespaced(bed.api.client(), NS);
    let patched = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &restart_patch("2025-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2), "a spec change");
    let stats = bed.rollouts.wait_completed(&w, 1, WAIT).await.unwrap();
    assert_eq!((stats.started, stats.completed), (1, 1), "{stats:?}");
    assert_eq!(
        (stats.pods_created, stats.pods_deleted),
        (2, 2),
        "{stats:?}"
    );
    let new_hash = stats.template_hash.clone();
    assert_ne!(new_hash, fixture.template_hash);

    let after = bed.rollouts.pods(&w);
    assert_replaced_on_same_nodes(&bed, &before, &after, "2025-01-01T00:00:00Z").await;
    let new_rs = format!("web-{new_hash}");
    for pod in &after {
        assert_eq!(pod.labels()[POD_TEMPLATE_HASH], new_hash);
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("ReplicaSet", new_rs.as_str(), Some(true))
        );
        assert!(pod.name_any().starts_with(&format!("{new_rs}-")));
    }
    // maxSurge 1, maxUnavailable 0: one pod at a time, each new one Ready before its old one
    // on the same node goes.
    let names = step_names(&steps(&bed, &w));
    let [first, second] = [&names[1], &names[4]].map(|s| s.trim_start_matches("create@"));
    assert_eq!(
        names,
        [
            "started".to_owned(),
            format!("create@{first}"),
            "ready".to_owned(),
            format!("delete@{first}"),
            format!("create@{second}"),
            "ready".to_owned(),
            format!("delete@{second}"),
            "completed".to_owned(),
        ]
    );

    // Status and ReplicaSets, read back over HTTP.
    let d = deployments.get("web").await.unwrap();
    let status = d.status.clone().unwrap();
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.updated_replicas, Some(2));
    assert_eq!(status.replicas, Some(2));
    assert_eq!(status.ready_replicas, Some(2));
    assert_eq!(d.annotations()[rollout::REVISION], "2");
    let replica_sets: Api<ReplicaSet> = Api::namespaced(bed.api.client(), NS);
    let rs = replica_sets.get(&new_rs).await.unwrap();
    assert_eq!(rs.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(rs.owner_references()[0].uid, fixture.uid);
    assert_eq!(
        rs.spec
            .unwrap()
            .template
            .unwrap()
            .metadata
            .unwrap()
            .annotations
            .unwrap()[RESTARTED_AT],
        "2025-01-01T00:00:00Z"
    );
    let old = replica_sets.get(&old_rs).await.unwrap();
    assert_eq!(
        old.spec.unwrap().replicas,
        Some(0),
        "the old ReplicaSet is kept, empty"
    );

    // The PATCH is on record, body and answer.
    assert_eq!(
        bed.api.stats().patch_count("deployments.apps", NS, "web"),
        1
    );
    let record = bed.api.patches().pop().unwrap();
    assert_eq!((record.user.as_str(), record.code), (ADMIN_USER, 200));
    assert_eq!(
        record.content_type.split(';').next(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        record.body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT],
        "2025-01-01T00:00:00Z"
    );

    // The same patch again changes nothing: same resourceVersion, no rollout.
    let again = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &restart_patch("2025-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(again.resource_version(), d.resource_version());
    assert_eq!(again.metadata.generation, Some(2));
    // A patch outside the template changes the object but not the pods: once the model has
    // seen it, still one rollout.
    let labelled = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "edge"}}})),
        )
        .await
        .unwrap();
    let rv: u64 = labelled.resource_version().unwrap().parse().unwrap();
    let stats = bed
        .rollouts
        .wait_for(&w, WAIT, |s| s.reconciled_resource_version >= rv)
        .await
        .unwrap();
    assert_eq!((stats.started, stats.completed), (1, 1), "{stats:?}");
    assert_eq!(by_node(&bed.rollouts.pods(&w)), by_node(&after));
    assert_eq!(
        bed.api.stats().patch_count("deployments.apps", NS, "web"),
        3
    );

    // A stale resourceVersion in the patch is a precondition: 409, nothing written.
    let stale = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"resourceVersion": patched.resource_version()},
                "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: "later"}}}},
            })),
        )
        .await
        .unwrap_err();
    match stale {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
        other => panic!("expected a 409, got {other:?}"),
    }
    let unchanged = deployments.get("web").await.unwrap();
    assert_eq!(unchanged.resource_version(), labelled.resource_version());
    assert_eq!(bed.api.patches().pop().unwrap().code, 409);
    assert_eq!(bed.rollouts.started(&w), 1);
    // While the current one goes through and rolls again.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"resourceVersion": unchanged.resource_version()},
                "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: "later"}}}},
            })),
        )
        .await
        .unwrap();
    let stats = bed.rollouts.wait_completed(&w, 2, WAIT).await.unwrap();
    assert_eq!((stats.started, stats.completed), (2, 2), "{stats:?}");
    let last = bed.rollouts.pods(&w);
    assert_replaced_on_same_nodes(&bed, &by_node(&after), &last, "later").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_set_restarts_pod_by_pod_on_the_same_nodes() {
    if !can_run() {
        return;
    }
    let bed = bed().await;
    let fixture = bed
        .rollouts
        .create_daemon_set(NS, "edge", &template("edge"), &NODES)
        .unwrap();
    let w = fixture.reference.clone();
    all_ready(&bed, &w, 2).await;
    let before = by_node(&bed.rollouts.pods(&w));
    let daemon_sets: Api<DaemonSet> = Api::namespaced(bed.api.client(), NS);
    daemon_sets
        .patch("edge", &PatchParams::default(), &restart_patch("1"))
        .await
        .unwrap();
    let stats = bed.rollouts.wait_completed(&w, 1, WAIT).await.unwrap();
    assert_eq!(
        (stats.started, stats.pods_created, stats.pods_deleted),
        (1, 2, 2)
    );
    let after = bed.rollouts.pods(&w);
    assert_replaced_on_same_nodes(&bed, &before, &after, "1").await;
    for pod in &after {
        assert_eq!(pod.labels()[CONTROLLER_REVISION_HASH], stats.template_hash);
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("DaemonSet", fixture.uid.as_str())
        );
    }
    let names = step_names(&steps(&bed, &w));
    assert_eq!(names.iter().filter(|n| n.starts_with("create@")).count(), 2);
    for (i, n) in names.iter().enumerate() {
        if let Some(node) = n.strip_prefix("create@") {
            assert_eq!(names[i + 1], "ready");
            assert_eq!(names[i + 2], format!("delete@{node}"), "surge: {names:?}");
        }
    }
    let status = daemon_sets.get("edge").await.unwrap().status.unwrap();
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.updated_number_scheduled, Some(2));
    assert_eq!(status.number_ready, 2);
    // The same value again: nothing.
    let again = daemon_sets
        .patch("edge", &PatchParams::default(), &restart_patch("1"))
        .await
        .unwrap();
    assert_eq!(again.metadata.generation, Some(2));
    assert_eq!(bed.rollouts.started(&w), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_set_recreates_each_pod_under_its_name_highest_ordinal_first() {
    if !can_run() {
        return;
    }
    let bed = bed().await;
    let fixture = bed
        .rollouts
        .create_stateful_set(NS, "db", &template("db"), &NODES)
        .unwrap();
    let w = fixture.reference.clone();
    assert_eq!(
        fixture
            .pods
            .iter()
            .map(|p| p.name_any())
            .collect::<Vec<_>>(),
        ["db-0", "db-1"]
    );
    all_ready(&bed, &w, 2).await;
    let before = by_node(&bed.rollouts.pods(&w));
    let stateful_sets: Api<StatefulSet> = Api::namespaced(bed.api.client(), NS);
    stateful_sets
        .patch("db", &PatchParams::default(), &restart_patch("1"))
        .await
        .unwrap();
    let stats = bed.rollouts.wait_completed(&w, 1, WAIT).await.unwrap();
    assert_eq!(
        (stats.started, stats.pods_created, stats.pods_deleted),
        (1, 2, 2)
    );
    let after = bed.rollouts.pods(&w);
    assert_replaced_on_same_nodes(&bed, &before, &after, "1").await;
    // Same names on the same nodes, new UIDs.
    let names: BTreeMap<String, String> = by_node(&after)
        .into_iter()
        .map(|(node, (name, _))| (node, name))
        .collect();
    let old_names: BTreeMap<String, String> = before
        .iter()
        .map(|(node, (name, _))| (node.clone(), name.clone()))
        .collect();
    assert_eq!(names, old_names);
    // db-1 first; each pod deleted before it comes back.
    assert_eq!(
        step_names(&steps(&bed, &w)),
        [
            "started",
            "delete@node-b",
            "create@node-b",
            "ready",
            "delete@node-a",
            "create@node-a",
            "ready",
            "completed"
        ]
    );
    let status = stateful_sets.get("db").await.unwrap().status.unwrap();
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.updated_replicas, Some(2));
    assert_eq!(
        status.update_revision.as_deref(),
        Some(format!("db-{}", stats.template_hash).as_str())
    );
    assert_eq!(status.current_revision, status.update_revision);
    for pod in &after {
        assert_eq!(
            pod.labels()[CONTROLLER_REVISION_HASH],
            format!("db-{}", stats.template_hash)
        );
    }
}

/// No kubelet needed: the apps kinds over HTTP (get, list with selectors, watch, patch of the
/// main resource and of status, defaulting, validation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_kinds_over_http() {
    let api = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    let fixture = rollout::create_deployment(&api, NS, "web", &template("web"), &NODES).unwrap();
    let deployments: Api<Deployment> = Api::namespaced(api.client(), NS);

    let d = deployments.get("web").await.unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    assert_eq!(d.uid().unwrap(), fixture.uid);
    let spec = d.spec.clone().unwrap();
    assert_eq!(spec.revision_history_limit, Some(10), "defaulted");
    assert_eq!(spec.progress_deadline_seconds, Some(600), "defaulted");
    let volume = &spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        volume.secret.as_ref().unwrap().default_mode,
        Some(420),
        "the template is defaulted like a pod"
    );
    let listed = deployments
        .list(&ListParams::default().fields("metadata.name=web").labels(""))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let bad = deployments
        .list(&ListParams::default().fields("spec.replicas=2"))
        .await
        .unwrap_err();
    assert!(
        matches!(bad, kube::Error::Api(ref s) if s.code == 400),
        "{bad:?}"
    );
    let all: Api<ReplicaSet> = Api::all(api.client());
    let rs = all
        .list(
            &ListParams::default()
                .labels(&format!("{POD_TEMPLATE_HASH}={}", fixture.template_hash)),
        )
        .await
        .unwrap();
    assert_eq!(rs.items.len(), 1);

    // Watch from the Deployment's resourceVersion: the template patch comes as MODIFIED with
    // generation 2; a status patch leaves generation alone and a main-resource patch leaves
    // status alone.
    let mut stream = deployments
        .watch(
            &WatchParams::default().fields("metadata.name=web"),
            &d.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    deployments
        .patch("web", &PatchParams::default(), &restart_patch("x"))
        .await
        .unwrap();
    let modified = loop {
        match stream.next().await.unwrap().unwrap() {
            WatchEvent::Modified(d) => break d,
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(modified.metadata.generation, Some(2));
    let with_status = deployments
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 2, "replicas": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(with_status.metadata.generation, Some(2));
    let strategic = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"replicas": 3}, "status": {"replicas": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(strategic.metadata.generation, Some(3));
    assert_eq!(strategic.status.unwrap().replicas, Some(2), "status kept");

    // The selector is required, selects the template and cannot change.
    let bad = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"matchLabels": {"app": "other"}}}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(bad, kube::Error::Api(ref s) if s.code == 422),
        "{bad:?}"
    );

    // Discovery resolves the kinds with their scope.
    let discovery = kube::Discovery::new(api.client())
        .filter(&["apps"])
        .run()
        .await
        .unwrap();
    let kinds: BTreeSet<String> = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .map(|(r, _)| r.kind)
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["DaemonSet", "Deployment", "ReplicaSet", "StatefulSet"].map(String::from))
    );
}

/// RBAC applies to the apps kinds like to any other: a user who may read Deployments but not
/// patch them gets a 403 on the restart; one who may patch them gets it through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_a_deployment_takes_patch_on_deployments() {
    let rbac = Rbac::from_yaml(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: deployment-reader}
rules:
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: deployment-reader}
subjects:
- {kind: User, name: reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: deployment-restarter}
rules:
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: restarter, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: deployment-restarter}
subjects:
- {kind: User, name: restarter}
"#,
    )
    .unwrap()
    .with_kubernetes_defaults()
    .with_superuser(ADMIN_USER);
    let api = ApiServer::start(ApiServerConfig {
        tokens: BTreeMap::from([
            (ADMIN_TOKEN.to_owned(), ADMIN_USER.to_owned()),
            ("reader-token".to_owned(), "reader".to_owned()),
            ("restarter-token".to_owned(), "restarter".to_owned()),
        ]),
        authorizer: Arc::new(rbac),
        ..ApiServerConfig::default()
    })
    .await
    .unwrap();
    rollout::create_deployment(&api, NS, "web", &template("web"), &NODES).unwrap();
    let as_user = |token: &str| -> Api<Deployment> {
        Api::namespaced(api.client_with_token(Some(token)).unwrap(), NS)
    };

    let reader = as_user("reader-token");
    assert_eq!(
        reader
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let denied = reader
        .patch("web", &PatchParams::default(), &restart_patch("1"))
        .await
        .unwrap_err();
    match denied {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
            assert!(
                s.message
                    .contains(r#"cannot patch resource "deployments" in API group "apps""#),
                "{}",
                s.message
            );
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    let stats = api.stats();
    assert_eq!(
        stats
            .forbidden
            .get(&("patch".to_owned(), "deployments.apps".to_owned())),
        Some(&1)
    );
    assert_eq!(
        stats.patch_count("deployments.apps", NS, "web"),
        0,
        "only authorized ones"
    );
    assert_eq!(
        reader.get("web").await.unwrap().metadata.generation,
        Some(1)
    );
    // Neither may touch pods or another namespace's Deployments.
    let pods: Api<Pod> = Api::namespaced(api.client_with_token(Some("reader-token")).unwrap(), NS);
    assert!(pods.list(&ListParams::default()).await.is_err());

    let restarter = as_user("restarter-token");
    let patched = restarter
        .patch("web", &PatchParams::default(), &restart_patch("1"))
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    let elsewhere: Api<Deployment> = Api::namespaced(
        api.client_with_token(Some("restarter-token")).unwrap(),
        "other",
    );
    let denied = elsewhere
        .patch("web", &PatchParams::default(), &restart_patch("1"))
        .await
        .unwrap_err();
    assert!(
        matches!(denied, kube::Error::Api(ref s) if s.code == 403),
        "{denied:?}"
    );
}
