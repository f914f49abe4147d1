//! The kubelet sync loop ([`NodeKubelet`]) on real tmpfs and bind mounts: what lands on disk,
//! and when.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use mountlag_testbed::apiserver::{ApiServer, ApiServerConfig};
use mountlag_testbed::kubelet::{KubeletStandIn, VolumeKind, read_mountinfo};
use mountlag_testbed::node::{
    NodeConfig, NodeEvent, NodeKubelet, PodRef, SyncOutcome, SyncReason, container_id,
};
use mountlag_testbed::real;
use serde_json::{Value, json};

const NS: &str = "ingress";

fn can_run() -> bool {
    real::require("root + tmpfs", real::can_mount())
}

async fn node(time_factor: f64) -> (ApiServer, NodeKubelet) {
    let api = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    let kubelet = Arc::new(KubeletStandIn::in_tempdir().unwrap());
    let node = NodeKubelet::start(
        api.clone(),
        kubelet,
        NodeConfig::new("node-a").time_factor(time_factor),
    );
    (api, node)
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    let string_data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS},
        "stringData": string_data,
    }))
    .unwrap()
}

fn tls_pod(name: &str, volumes: Value, mounts: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "edge"}},
        "spec": {
            "nodeName": "node-a",
            "containers": [{"name": "nginx", "image": "nginx:1.27", "volumeMounts": mounts}],
            "volumes": volumes,
        },
    }))
    .unwrap()
}

fn simple_pod(name: &str) -> Pod {
    tls_pod(
        name,
        json!([{"name": "tls", "secret": {"secretName": "edge-tls"}}]),
        json!([{"name": "tls", "mountPath": "/etc/tls"}]),
    )
}

async fn wait(
    node: &NodeKubelet,
    after: u64,
    what: &str,
    pred: impl Fn(&NodeEvent) -> bool,
) -> NodeEvent {
    match node.wait_for(after, Duration::from_secs(10), pred).await {
        Some(e) => e,
        None => panic!("no {what} within 10 s; node log: {:#?}", node.log()),
    }
}

fn is_written(e: &NodeEvent, pod: &str, volume: &str) -> bool {
    e.pod == pod
        && e.volume.as_deref() == Some(volume)
        && matches!(e.outcome, SyncOutcome::Written { .. })
}

async fn started(node: &NodeKubelet, pod: &str) -> NodeEvent {
    wait(node, 0, "pod start", |e| {
        e.pod == pod && e.outcome == SyncOutcome::Started
    })
    .await
}

fn uid(api: &ApiServer, name: &str) -> String {
    api.pod(NS, name).unwrap().metadata.uid.unwrap()
}

fn vol(node: &NodeKubelet, uid: &str, kind: VolumeKind, name: &str) -> PathBuf {
    node.kubelet().volume_dir(uid, kind, name)
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Names in a volume dir that a container sees (no `..` entries).
fn visible(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".."))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_gets_its_secret_files_and_a_running_status() {
    if !can_run() {
        return;
    }
    let (api, node) = node(1.0).await;
    api.apply_secret(&secret(
        "edge-tls",
        &[("tls.crt", "CRT-1"), ("tls.key", "KEY-1")],
    ))
    .unwrap();
    api.create_pod(&simple_pod("edge-0")).unwrap();
    started(&node, "edge-0").await;
    let uid = uid(&api, "edge-0");
    let dir = vol(&node, &uid, VolumeKind::Secret, "tls");
    assert_eq!(read(&dir.join("tls.crt")), "CRT-1");
    assert_eq!(read(&dir.join("tls.key")), "KEY-1");
    assert_eq!(mode(&dir.join("tls.crt")), 0o644);
    assert!(
        read_mountinfo()
            .unwrap()
            .iter()
            .any(|m| m.mount_point == dir && m.fs_type == "tmpfs"),
        "the volume is its own tmpfs"
    );
    let pod = api.pod(NS, "edge-0").unwrap();
    let status = pod.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    let cs = &status.container_statuses.unwrap()[0];
    assert_eq!(
        cs.container_id.as_deref(),
        Some(format!("containerd://{}", container_id(&uid, "nginx")).as_str())
    );
    assert_eq!(container_id(&uid, "nginx").len(), 64);
    let stats = node.stats();
    assert_eq!(stats.volume_writes, 1);
    assert_eq!(stats.pods, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_update_appears_only_at_the_next_periodic_sync() {
    if !can_run() {
        return;
    }
    // 60–90 s × 0.02 = 1.2–1.8 s between syncs.
    let (api, node) = node(0.02).await;
    api.apply_secret(&secret("edge-tls", &[("tls.crt", "OLD")]))
        .unwrap();
    api.create_pod(&simple_pod("edge-0")).unwrap();
    let first = wait(&node, 0, "initial write", |e| {
        is_written(e, "edge-0", "tls")
    })
    .await;
    assert_eq!(first.reason, SyncReason::Initial);
    let dir = vol(&node, &uid(&api, "edge-0"), VolumeKind::Secret, "tls");
    let after = node.last_seq();
    api.apply_secret(&secret("edge-tls", &[("tls.crt", "NEW")]))
        .unwrap();
    let changed_at = Instant::now();
    assert_eq!(read(&dir.join("tls.crt")), "OLD");
    // A Secret change alone does not rewrite the volume: whatever was written since came with
    // a periodic sync (one may fall in this window when the machine is slow).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let early: Vec<_> = node
        .log()
        .into_iter()
        .filter(|e| e.seq > after && is_written(e, "edge-0", "tls"))
        .collect();
    assert!(
        early.iter().all(|e| e.reason == SyncReason::Periodic),
        "a Secret change alone does not rewrite the volume: {early:?}"
    );
    let periodic = wait(&node, after, "periodic write", |e| {
        is_written(e, "edge-0", "tls")
    })
    .await;
    assert_eq!(periodic.reason, SyncReason::Periodic);
    assert_eq!(read(&dir.join("tls.crt")), "NEW");
    // The write came with the periodic sync after the previous one, not with the change.
    let log = node.log();
    let prev = log
        .iter()
        .rfind(|e| e.seq < periodic.seq && e.volume.as_deref() == Some("tls"))
        .unwrap();
    let gap = periodic.at - prev.at;
    assert!(
        gap >= Duration::from_millis(1150) && gap <= Duration::from_millis(4000),
        "sync gap {gap:?}"
    );
    assert!(periodic.at - changed_at >= Duration::from_millis(500) || prev.seq > first.seq);
    // The next periodic sync finds nothing to write.
    let unchanged = wait(&node, periodic.seq, "unchanged resync", |e| {
        e.volume.as_deref() == Some("tls")
    })
    .await;
    assert_eq!(unchanged.outcome, SyncOutcome::Unchanged);
    assert_eq!(unchanged.reason, SyncReason::Periodic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotation_change_rewrites_immediately() {
    if !can_run() {
        return;
    }
    // Real timing: no periodic sync happens during the test.
    let (api, node) = node(1.0).await;
    api.apply_secret(&secret("edge-tls", &[("tls.crt", "OLD")]))
        .unwrap();
    api.create_pod(&simple_pod("edge-0")).unwrap();
    started(&node, "edge-0").await;
    let dir = vol(&node, &uid(&api, "edge-0"), VolumeKind::Secret, "tls");
    api.apply_secret(&secret("edge-tls", &[("tls.crt", "NEW")]))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read(&dir.join("tls.crt")), "OLD");
    // A status-only change (kubelet's own) does not sync the pod.
    let after = node.last_seq();
    api.patch_pod_status(NS, "edge-0", &json!({"status": {"message": "x"}}))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(node.last_seq(), after, "{:?}", node.log());
    // The nudge.
    let t = Instant::now();
    api.annotate_pod(NS, "edge-0", "mountlag.io/resync", "1")
        .unwrap();
    let w = wait(&node, after, "annotation write", |e| {
        is_written(e, "edge-0", "tls")
    })
    .await;
    assert_eq!(w.reason, SyncReason::Annotation);
    // Immediate, not at the next periodic sync (60–90 s at kubelet's real period).
    assert!(w.at - t < Duration::from_secs(5), "{:?}", w.at - t);
    assert_eq!(read(&dir.join("tls.crt")), "NEW");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_and_paused_ignore_syncs() {
    if !can_run() {
        return;
    }
    // 0.6–0.9 s between periodic syncs.
    let (api, node) = node(0.01).await;
    api.apply_secret(&secret("edge-tls", &[("tls.crt", "OLD")]))
        .unwrap();
    api.create_pod(&simple_pod("edge-0")).unwrap();
    started(&node, "edge-0").await;
    let dir = vol(&node, &uid(&api, "edge-0"), VolumeKind::Secret, "tls");

    node.set_stuck(PodRef::name(NS, "edge-0"), true);
    let after = node.last_seq();
    api.apply_secret(&secret("edge-tls", &[("tls.crt", "NEW")]))
        .unwrap();
    api.annotate_pod(NS, "edge-0", "mountlag.io/resync", "1")
        .unwrap();
    wait(&node, after, "stuck annotation sync", |e| {
        e.reason == SyncReason::Annotation && e.outcome == SyncOutcome::SkippedStuck
    })
    .await;
    wait(&node, after, "stuck periodic sync", |e| {
        e.reason == SyncReason::Periodic && e.outcome == SyncOutcome::SkippedStuck
    })
    .await;
    assert_eq!(read(&dir.join("tls.crt")), "OLD");
    assert!(
        !node
            .log()
            .iter()
            .any(|e| e.seq > after && is_written(e, "edge-0", "tls")),
        "{:?}",
        node.log()
    );

    // Unstuck: the next sync writes.
    node.set_stuck(PodRef::name(NS, "edge-0"), false);
    let after = node.last_seq();
    wait(&node, after, "write after unstuck", |e| {
        is_written(e, "edge-0", "tls")
    })
    .await;
    assert_eq!(read(&dir.join("tls.crt")), "NEW");

    // Paused node: nothing happens, not even for annotation changes.
    node.set_paused(true);
    let after = node.last_seq();
    api.apply_secret(&secret("edge-tls", &[("tls.crt", "NEWER")]))
        .unwrap();
    api.annotate_pod(NS, "edge-0", "mountlag.io/resync", "2")
        .unwrap();
    wait(&node, after, "paused sync", |e| {
        e.outcome == SyncOutcome::SkippedPaused && e.reason == SyncReason::Annotation
    })
    .await;
    assert_eq!(read(&dir.join("tls.crt")), "NEW");
    node.set_paused(false);
    let after = node.last_seq();
    wait(&node, after, "write after unpause", |e| {
        is_written(e, "edge-0", "tls")
    })
    .await;
    assert_eq!(read(&dir.join("tls.crt")), "NEWER");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_projected_and_optional_semantics() {
    if !can_run() {
        return;
    }
    let (api, node) = node(0.01).await;
    api.apply_secret(&secret("s1", &[("a", "A1"), ("b", "B1"), ("c", "C1")]))
        .unwrap();
    api.apply_secret(&secret("s2", &[("b", "B2"), ("d", "D2")]))
        .unwrap();
    let pod = tls_pod(
        "sem",
        json!([
            {"name": "all", "secret": {"secretName": "s1", "defaultMode": 0o400}},
            {"name": "items", "secret": {"secretName": "s1", "items": [
                {"key": "a", "path": "x/a.pem", "mode": 0o600},
                {"key": "b", "path": "b.txt"},
            ]}},
            {"name": "opt-missing", "secret": {"secretName": "nope", "optional": true}},
            {"name": "opt-key", "secret": {"secretName": "s1", "optional": true, "items": [
                {"key": "zz", "path": "zz"},
                {"key": "a", "path": "a"},
            ]}},
            {"name": "proj", "projected": {"defaultMode": 0o440, "sources": [
                {"secret": {"name": "s1", "items": [{"key": "a", "path": "same.pem"}]}},
                {"secret": {"name": "s2", "items": [{"key": "b", "path": "same.pem"}]}},
                {"secret": {"name": "s2"}},
                {"secret": {"name": "nope", "optional": true}},
                {"downwardAPI": {"items": [{"path": "podname", "fieldRef": {"fieldPath": "metadata.name"}}]}},
            ]}},
            {"name": "scratch", "emptyDir": {}},
        ]),
        json!([{"name": "all", "mountPath": "/all"}]),
    );
    api.create_pod(&pod).unwrap();
    started(&node, "sem").await;
    let uid = uid(&api, "sem");

    let all = vol(&node, &uid, VolumeKind::Secret, "all");
    assert_eq!(visible(&all), ["a", "b", "c"]);
    assert_eq!(read(&all.join("c")), "C1");
    assert_eq!(mode(&all.join("a")), 0o400);

    let items = vol(&node, &uid, VolumeKind::Secret, "items");
    assert_eq!(visible(&items), ["b.txt", "x"]);
    assert_eq!(read(&items.join("x/a.pem")), "A1");
    assert_eq!(mode(&items.join("x/a.pem")), 0o600);
    assert_eq!(read(&items.join("b.txt")), "B1");
    assert_eq!(
        mode(&items.join("b.txt")),
        0o644,
        "defaultMode (420 from the API)"
    );

    let opt_missing = vol(&node, &uid, VolumeKind::Secret, "opt-missing");
    assert!(
        opt_missing.join("..data").exists(),
        "an empty generation is written"
    );
    assert!(visible(&opt_missing).is_empty());

    let opt_key = vol(&node, &uid, VolumeKind::Secret, "opt-key");
    assert_eq!(visible(&opt_key), ["a"]);

    let proj = vol(&node, &uid, VolumeKind::Projected, "proj");
    assert_eq!(visible(&proj), ["b", "d", "podname", "same.pem"]);
    assert_eq!(read(&proj.join("same.pem")), "B2", "a later source wins");
    assert_eq!(read(&proj.join("b")), "B2");
    assert_eq!(read(&proj.join("podname")), "sem");
    assert_eq!(mode(&proj.join("d")), 0o440);

    assert!(
        !node
            .kubelet()
            .pod_dir(&uid)
            .join("volumes/kubernetes.io~empty-dir")
            .exists(),
        "only secret and projected volumes are handled"
    );

    // A deleted Secret fails the next sync; the old content stays.
    let after = node.last_seq();
    api.delete_secret(NS, "s2").unwrap();
    let failed = wait(&node, after, "secret-missing", |e| {
        e.volume.as_deref() == Some("proj")
            && matches!(e.outcome, SyncOutcome::SecretMissing { .. })
    })
    .await;
    assert!(
        format!("{:?}", failed.outcome).contains("\\\"s2\\\" not found"),
        "{failed:?}"
    );
    assert_eq!(read(&proj.join("same.pem")), "B2");
    // Back: written again at the retry.
    api.apply_secret(&secret("s2", &[("b", "B3"), ("d", "D3")]))
        .unwrap();
    let back = wait(&node, after, "rewrite after the secret is back", |e| {
        is_written(e, "sem", "proj")
    })
    .await;
    assert_eq!(back.reason, SyncReason::Retry);
    assert_eq!(read(&proj.join("same.pem")), "B3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_required_secret_or_key_blocks_the_start() {
    if !can_run() {
        return;
    }
    let (api, node) = node(0.01).await;
    api.apply_secret(&secret("s1", &[("a", "A1")])).unwrap();
    api.create_pod(&tls_pod(
        "wait",
        json!([
            {"name": "later", "secret": {"secretName": "later"}},
            {"name": "key", "secret": {"secretName": "s1", "items": [{"key": "nokey", "path": "k"}]}},
        ]),
        json!([]),
    ))
    .unwrap();
    wait(&node, 0, "missing secret", |e| {
        e.volume.as_deref() == Some("later")
            && matches!(&e.outcome, SyncOutcome::SecretMissing { message } if message.contains("\"later\" not found"))
    })
    .await;
    wait(&node, 0, "missing key", |e| {
        e.volume.as_deref() == Some("key")
            && matches!(&e.outcome, SyncOutcome::SecretMissing { message } if message.contains("non-existent secret key: nokey"))
    })
    .await;
    let uid = uid(&api, "wait");
    // The failed volume was not even mounted (kubelet gets the Secret before the tmpfs).
    let later = vol(&node, &uid, VolumeKind::Secret, "later");
    assert!(!later.join("..data").exists());
    assert_eq!(
        api.pod(NS, "wait")
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Pending")
    );
    // Retries (back-off 10 s × 0.01) keep failing until the Secret and key exist.
    wait(&node, 0, "retry", |e| e.reason == SyncReason::Retry).await;
    api.apply_secret(&secret("later", &[("tls.crt", "L")]))
        .unwrap();
    api.apply_secret(&secret("s1", &[("a", "A1"), ("nokey", "K")]))
        .unwrap();
    started(&node, "wait").await;
    assert_eq!(read(&later.join("tls.crt")), "L");
    assert_eq!(
        read(&vol(&node, &uid, VolumeKind::Secret, "key").join("k")),
        "K"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subpath_file_never_changes_and_delete_tears_down() {
    if !can_run() {
        return;
    }
    let (api, node) = node(1.0).await;
    api.apply_secret(&secret("edge-tls", &[("tls.crt", "V1"), ("tls.key", "K1")]))
        .unwrap();
    api.create_pod(&tls_pod(
        "sub",
        json!([{"name": "tls", "secret": {"secretName": "edge-tls"}}]),
        json!([
            {"name": "tls", "mountPath": "/etc/tls"},
            {"name": "tls", "mountPath": "/etc/nginx/cert.pem", "subPath": "tls.crt"},
        ]),
    ))
    .unwrap();
    let mounted = wait(&node, 0, "subPath mount", |e| {
        matches!(e.outcome, SyncOutcome::SubPathMounted { .. })
    })
    .await;
    let SyncOutcome::SubPathMounted {
        container,
        index,
        target,
    } = mounted.outcome
    else {
        unreachable!()
    };
    assert_eq!((container.as_str(), index), ("nginx", 1));
    started(&node, "sub").await;
    let uid = uid(&api, "sub");
    assert_eq!(target, node.kubelet().subpath_dir(&uid, "tls", "nginx", 1));
    assert_eq!(read(&target), "V1");

    let after = node.last_seq();
    api.apply_secret(&secret("edge-tls", &[("tls.crt", "V2"), ("tls.key", "K2")]))
        .unwrap();
    api.annotate_pod(NS, "sub", "mountlag.io/resync", "1")
        .unwrap();
    wait(&node, after, "annotation write", |e| {
        is_written(e, "sub", "tls")
    })
    .await;
    let dir = vol(&node, &uid, VolumeKind::Secret, "tls");
    assert_eq!(read(&dir.join("tls.crt")), "V2");
    assert_eq!(read(&target), "V1", "subPath mounts never update");
    assert!(
        !node
            .log()
            .iter()
            .any(|e| e.seq > after && matches!(e.outcome, SyncOutcome::SubPathMounted { .. })),
        "the subPath is mounted once"
    );

    // Delete: everything under the pod dir is unmounted and removed.
    let pod_dir = node.kubelet().pod_dir(&uid);
    let under_pod = || {
        read_mountinfo()
            .unwrap()
            .into_iter()
            .filter(|m| m.mount_point.starts_with(&pod_dir))
            .count()
    };
    assert_eq!(under_pod(), 2, "volume tmpfs + subPath bind mount");
    let after = node.last_seq();
    api.delete_pod(NS, "sub").unwrap();
    wait(&node, after, "teardown", |e| {
        e.pod == "sub" && e.outcome == SyncOutcome::TornDown
    })
    .await;
    assert_eq!(under_pod(), 0);
    let root = node.kubelet().root().to_owned();
    assert!(
        !read_mountinfo()
            .unwrap()
            .iter()
            .any(|m| m.mount_point.starts_with(&root)),
        "no mounts left under the kubelet root"
    );
    assert!(!pod_dir.exists());
    assert_eq!(node.stats().pods, 0);
    assert_eq!(node.stats().teardowns, 1);
}
