//! The real `mountlag agent` against the API stand-in and the kubelet stand-in on tmpfs:
//! lag, nudges, stuck mounts, subPath, API outages, restarts and pod churn.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mountlag_testbed::apiserver::ApiServerConfig;
use mountlag_testbed::cluster::{
    KeyRing, NAMESPACE, TestNode, agent_config, ingress_pod, mount_of, with_secret_volume,
};
use mountlag_testbed::node::{NodeConfig, PodRef, SyncOutcome, SyncReason};
use mountlag_testbed::real;
use serde_json::Value;

fn can_run() -> bool {
    real::require("root + tmpfs", real::can_mount())
}

/// kubelet's real 60–90 s sync period: in these tests only a nudge (or a manual sync) can
/// make it rewrite a volume in time.
fn slow_kubelet() -> NodeConfig {
    NodeConfig::new(mountlag_testbed::cluster::NODE)
}

/// kubelet's sync scaled by 0.02: every 1.2–1.8 s.
fn fast_kubelet() -> NodeConfig {
    NodeConfig::new(mountlag_testbed::cluster::NODE).time_factor(0.02)
}

fn state_of(status: &Value, pod: &str) -> String {
    mount_of(status, pod)
        .and_then(|m| m["state"].as_str())
        .unwrap_or("absent")
        .to_string()
}

fn secret_rv(status: &Value, pod: &str) -> String {
    mount_of(status, pod)
        .and_then(|m| m["secrets"][0]["resourceVersion"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn current_rv(node: &TestNode, name: &str) -> String {
    node.api
        .secret(NAMESPACE, name)
        .and_then(|s| s.metadata.resource_version)
        .unwrap()
}

/// Starts a node with one edge pod in sync and the agent ready.
async fn node_with_edge_pod(kubelet: NodeConfig, config: &str, rotation: &mut KeyRing) -> TestNode {
    let mut node = TestNode::start(kubelet, config).await.unwrap();
    node.api.apply_secret(&rotation.secret("edge-tls")).unwrap();
    node.api
        .create_pod(&ingress_pod("edge-0", &[("app", "edge")], "edge-tls", None))
        .unwrap();
    node.start_agent().unwrap();
    node.wait_ready(Duration::from_secs(10)).await.unwrap();
    node.wait_status(Duration::from_secs(10), "edge-0 in sync", |s| {
        state_of(s, "edge-0") == "in_sync"
    })
    .await
    .unwrap();
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_followed_by_kubelets_periodic_sync_raises_no_event_and_records_the_lag() {
    if !can_run() {
        return;
    }
    let mut rotation = KeyRing::new("agent test CA").unwrap();
    let mut node = node_with_edge_pod(
        fast_kubelet(),
        &agent_config("30s", "60s", true),
        &mut rotation,
    )
    .await;
    assert_eq!(
        node.metric("mountlag_mount_lag_seconds_count")
            .await
            .unwrap(),
        Some(0.0)
    );

    node.api.apply_secret(&rotation.secret("edge-tls")).unwrap();
    let rv = current_rv(&node, "edge-tls");
    node.wait_status(Duration::from_secs(10), "in sync on the new version", |s| {
        state_of(s, "edge-0") == "in_sync" && secret_rv(s, "edge-0") == rv
    })
    .await
    .unwrap();
    assert_eq!(
        node.metric("mountlag_mount_lag_seconds_count")
            .await
            .unwrap(),
        Some(1.0)
    );
    let lag = node
        .metric("mountlag_mount_lag_seconds_sum")
        .await
        .unwrap()
        .unwrap();
    // kubelet's period here is 1.2–1.8 s; the bound leaves room for a loaded machine and still
    // tells a periodic sync from none (kubelet's real period is 60–90 s).
    assert!(
        lag > 0.0 && lag < 6.0,
        "kubelet synced within 1.2–1.8 s: lag {lag}"
    );
    assert!(
        node.api.events().is_empty(),
        "no Event: {:?}",
        node.api.events()
    );
    assert!(
        node.api
            .pod(NAMESPACE, "edge-0")
            .unwrap()
            .metadata
            .annotations
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(node.stop_agent().unwrap().code(), Some(0));
    rotation.assert_not_in("agent log", &node.all_agent_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_kubelet_is_nudged_and_the_mount_catches_up() {
    if !can_run() {
        return;
    }
    let mut rotation = KeyRing::new("agent test CA").unwrap();
    let node = node_with_edge_pod(
        slow_kubelet(),
        &agent_config("1s", "30s", true),
        &mut rotation,
    )
    .await;
    let before = node.node.last_seq();
    let changed = Instant::now();
    node.api.apply_secret(&rotation.secret("edge-tls")).unwrap();
    let rv = current_rv(&node, "edge-tls");

    let nudged = node
        .node
        .wait_for(before, Duration::from_secs(15), |e| {
            e.reason == SyncReason::Annotation && matches!(e.outcome, SyncOutcome::Written { .. })
        })
        .await
        .expect("kubelet remounted after the nudge");
    // The nudge waited nudge.after (1 s), and kubelet's own sync (30–45 s here) did not do it.
    let elapsed = nudged.at.duration_since(changed);
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed <= Duration::from_secs(8),
        "nudge.after 1 s: took {elapsed:?}"
    );
    let annotation = node
        .api
        .pod(NAMESPACE, "edge-0")
        .unwrap()
        .metadata
        .annotations
        .unwrap();
    assert!(annotation.contains_key("mountlag.io/resync"));
    node.wait_status(Duration::from_secs(15), "in sync after the nudge", |s| {
        state_of(s, "edge-0") == "in_sync" && secret_rv(s, "edge-0") == rv
    })
    .await
    .unwrap();
    let requested = node
        .wait_events("KubeletResyncRequested", Duration::from_secs(10), |e| {
            !e.is_empty()
        })
        .await
        .unwrap();
    assert_eq!(requested.len(), 1, "{requested:?}");
    let e = &requested[0];
    assert_eq!(e.api_group, "events.k8s.io");
    assert_eq!(e.type_, "Normal");
    assert_eq!(e.regarding.kind, "Pod");
    assert_eq!(e.regarding.name, "edge-0");
    assert_eq!(e.regarding.api_version, "v1");
    assert_eq!(e.reporting_controller, "mountlag.io/agent");
    assert_eq!(e.reporting_instance, mountlag_testbed::cluster::NODE);
    assert!(node.events("SecretMountStuck").is_empty());
    assert_eq!(
        node.metric("mountlag_kubelet_nudges_total{result=\"success\"}")
            .await
            .unwrap(),
        Some(1.0)
    );
}

/// Every mount of pod `pod` in `/status` is in sync on the Secret version the API holds.
fn all_in_sync_on(status: &Value, pod: &str, rvs: &[(&str, String)]) -> bool {
    let mounts: Vec<&Value> = status["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["pod"] == pod)
        .collect();
    mounts.len() == rvs.len()
        && mounts.iter().all(|m| {
            m["state"] == "in_sync"
                && rvs.iter().any(|(name, rv)| {
                    m["secrets"][0]["name"] == *name && m["secrets"][0]["resourceVersion"] == *rv
                })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_of_one_pod_renewed_together_cost_one_nudge() {
    if !can_run() {
        return;
    }
    let mut rotation = KeyRing::new("agent test CA").unwrap();
    let mut other = KeyRing::new("agent test CA 2").unwrap();
    // nudge.after is the window in which a pod's renewals share one nudge: 3 s leaves room for
    // a loaded machine between the two writes below.
    let mut node = TestNode::start(slow_kubelet(), &agent_config("3s", "30s", true))
        .await
        .unwrap();
    node.api.apply_secret(&rotation.secret("edge-tls")).unwrap();
    node.api.apply_secret(&other.secret("api-tls")).unwrap();
    // One pod, two Secret volumes (as an ingress with two certificates).
    let pod = ingress_pod("edge-0", &[("app", "edge")], "edge-tls", None);
    let pod = with_secret_volume(pod, "api", "api-tls", "/etc/api").unwrap();
    node.api.create_pod(&pod).unwrap();
    node.start_agent().unwrap();
    node.wait_ready(Duration::from_secs(10)).await.unwrap();
    let rvs = |node: &TestNode| {
        vec![
            ("edge-tls", current_rv(node, "edge-tls")),
            ("api-tls", current_rv(node, "api-tls")),
        ]
    };
    let before = rvs(&node);
    node.wait_status(Duration::from_secs(10), "both volumes in sync", |s| {
        all_in_sync_on(s, "edge-0", &before)
    })
    .await
    .unwrap();
    let patches_before = node.api.stats().count("patch", "pods");

    // Both renewed back to back: kubelet (60–90 s period) updates neither by itself.
    node.api.apply_secret(&rotation.secret("edge-tls")).unwrap();
    node.api.apply_secret(&other.secret("api-tls")).unwrap();
    let after = rvs(&node);
    node.wait_status(
        Duration::from_secs(15),
        "both volumes on the new versions",
        |s| all_in_sync_on(s, "edge-0", &after),
    )
    .await
    .unwrap();
    assert_eq!(
        node.api.stats().count("patch", "pods") - patches_before,
        1,
        "one pod update for both volumes"
    );
    let requested = node.events("KubeletResyncRequested");
    assert_eq!(requested.len(), 1, "{requested:?}");
    assert!(
        requested[0].note.contains(r#"volumes "api", "tls""#),
        "{}",
        requested[0].note
    );
    let annotation = resync_annotation(&node, "edge-0").unwrap();
    assert_eq!(annotation.split('+').count(), 2, "{annotation}");
    assert_eq!(node.stop_agent().unwrap().code(), Some(0));
    rotation.assert_not_in("agent log", &node.all_agent_logs());
    other.assert_not_in("agent log", &node.all_agent_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_mount_is_reported_once_and_its_recovery_too() {
    if !can_run() {
        return;
    }
    let mut rotation = KeyRing::new("agent test CA").unwrap();
    let node = node_with_edge_pod(
        slow_kubelet(),
        &agent_config("1s", "3s", true),
        &mut rotation,
    )
    .await;
    node.node.set_stuck(PodRef::name(NAMESPACE, "edge-0"), true);
    let changed = Instant::now();
    node.api.apply_secret(&rotation.secret("edge-tls")).unwrap();

    node.wait_status(Duration::from_secs(15), "stuck", |s| {
        state_of(s, "edge-0") == "stuck"
    })
    .await
    .unwrap();
    let stuck_after = changed.elapsed();
    assert!(
        stuck_after >= Duration::from_secs(3) && stuck_after <= Duration::from_secs(10),
        "stuckAfter 3 s: {stuck_after:?}"
    );
    node.wait_events("SecretMountStuck", Duration::from_secs(10), |e| {
        !e.is_empty()
    })
    .await
    .unwrap();
    node.wait_events("KubeletResyncRequested", Duration::from_secs(10), |e| {
        e.first().and_then(|e| e.series_count) == Some(2)
    })
    .await
    .unwrap();
    // Give a flapping implementation the chance to report again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stuck = node.events("SecretMountStuck");
    assert_eq!(stuck.len(), 1, "exactly one SecretMountStuck: {stuck:?}");
    assert_eq!(stuck[0].type_, "Warning");
    assert!(stuck[0].series_count.is_none(), "no repeats: {stuck:?}");
    assert!(stuck[0].note.contains("edge-tls@"), "{}", stuck[0].note);
    assert_eq!(
        node.metric("mountlag_kubelet_nudges_total{result=\"success\"}")
            .await
            .unwrap(),
        Some(2.0),
        "two nudges per version, no more"
    );
    let requested = node.events("KubeletResyncRequested");
    assert_eq!(
        requested.len(),
        1,
        "the second nudge's Event joins the first as a series"
    );
    assert_eq!(requested[0].series_count, Some(2));
    assert!(node.events("SecretMountRecovered").is_empty());

    node.node
        .set_stuck(PodRef::name(NAMESPACE, "edge-0"), false);
    assert!(node.node.sync_now(NAMESPACE, "edge-0"));
    node.wait_status(Duration::from_secs(15), "recovered", |s| {
        state_of(s, "edge-0") == "in_sync"
    })
    .await
    .unwrap();
    node.wait_events("SecretMountRecovered", Duration::from_secs(10), |e| {
        !e.is_empty()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let recovered = node.events("SecretMountRecovered");
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(recovered[0].type_, "Normal");
    assert_eq!(node.events("SecretMountStuck").len(), 1);
}

/// The `mountlag.io/resync` annotation of a pod, if any.
fn resync_annotation(node: &TestNode, pod: &str) -> Option<String> {
    node.api
        .pod(NAMESPACE, pod)
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default()
        .get("mountlag.io/resync")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subpath_mount_is_flagged_once() {
    if !can_run() {
        return;
    }
    let mut rotation = KeyRing::new("agent test CA").unwrap();
    // kubelet's real 60–90 s period: after a rotation neither volume catches up by itself, so
    // a nudge falls due (nudge.after 1 s) for every mount that could use one.
    let mut node = TestNode::start(slow_kubelet(), &agent_config("1s", "4s", true))
        .await
        .unwrap();
    node.api.apply_secret(&rotation.secret("edge-tls")).unwrap();
    node.api
        .create_pod(&ingress_pod(
            "edge-sub",
            &[("app", "edge")],
            "edge-tls",
            Some("tls.crt"),
        ))
        .unwrap();
    // The witness: a whole-volume mount of the same Secret, kept stuck, so its nudges
    // (attempt 1 at nudge.after, attempt 2 one nudge.after later) and then SecretMountStuck
    // (stuckAfter) mark how far the agent got after the rotation.
    node.api
        .create_pod(&ingress_pod("edge-0", &[("app", "edge")], "edge-tls", None))
        .unwrap();
    node.start_agent().unwrap();
    node.wait_ready(Duration::from_secs(10)).await.unwrap();
    node.wait_status(Duration::from_secs(10), "both mounts in sync", |s| {
        state_of(s, "edge-sub") == "in_sync" && state_of(s, "edge-0") == "in_sync"
    })
    .await
    .unwrap();
    node.wait_events("SubPathNeverUpdates", Duration::from_secs(10), |e| {
        !e.is_empty()
    })
    .await
    .unwrap();
    node.node.set_stuck(PodRef::name(NAMESPACE, "edge-0"), true);
    let patches_before = node.api.stats().count("patch", "pods");
    let kubelet_before = node.node.last_seq();

    // A rotation: kubelet does not rewrite either volume before its next periodic sync.
    node.api.apply_secret(&rotation.secret("edge-tls")).unwrap();
    node.wait_status(Duration::from_secs(15), "edge-sub never updates", |s| {
        state_of(s, "edge-sub") == "never_updates"
    })
    .await
    .unwrap();
    // Quiescence: the witness's second nudge and its SecretMountStuck Event come after the
    // instant (nudge.after) at which a nudge of edge-sub would have been due.
    node.wait_events("KubeletResyncRequested", Duration::from_secs(20), |e| {
        e.iter()
            .any(|e| e.regarding.name == "edge-0" && e.series_count == Some(2))
    })
    .await
    .unwrap();
    node.wait_events("SecretMountStuck", Duration::from_secs(20), |e| {
        e.iter().any(|e| e.regarding.name == "edge-0")
    })
    .await
    .unwrap();
    assert_eq!(
        node.metric("mountlag_kubelet_nudges_total{result=\"success\"}")
            .await
            .unwrap(),
        Some(2.0),
        "the witness's two nudges, none for the subPath mount"
    );
    assert_eq!(
        node.metric("mountlag_kubelet_nudges_total{result=\"error\"}")
            .await
            .unwrap()
            .unwrap_or(0.0),
        0.0
    );
    assert_eq!(
        node.api.stats().count("patch", "pods") - patches_before,
        2,
        "pod patches after the rotation: the witness's two nudges only"
    );
    assert_eq!(
        resync_annotation(&node, "edge-sub"),
        None,
        "edge-sub never nudged"
    );
    assert!(
        resync_annotation(&node, "edge-0").is_some(),
        "the witness was nudged"
    );
    let requested = node.events("KubeletResyncRequested");
    assert!(
        requested.iter().all(|e| e.regarding.name == "edge-0"),
        "no nudge Event regarding edge-sub: {requested:?}"
    );
    assert!(
        !node.node.log().iter().any(|e| e.seq > kubelet_before
            && e.pod == "edge-sub"
            && e.reason == SyncReason::Annotation),
        "kubelet never resynced edge-sub for an annotation"
    );
    assert_eq!(
        state_of(&node.status().await.unwrap(), "edge-sub"),
        "never_updates"
    );
    let flagged = node.events("SubPathNeverUpdates");
    assert_eq!(flagged.len(), 1, "flagged exactly once: {flagged:?}");
    assert_eq!(flagged[0].type_, "Warning");
    assert_eq!(flagged[0].regarding.name, "edge-sub");
    assert!(flagged[0].series_count.is_none(), "no repeats: {flagged:?}");
    assert!(flagged[0].note.contains("nginx"), "{}", flagged[0].note);
    assert!(
        node.events("SecretMountStuck")
            .iter()
            .all(|e| e.regarding.name == "edge-0"),
        "the subPath mount is never_updates, not stuck"
    );
    assert_eq!(node.stop_agent().unwrap().code(), Some(0));
}

/// The sum of the samples of `/metrics` whose name and labels start with `prefix` and whose
/// labels contain every one of `labels` (e.g. `result="error"`).
async fn metric_total(node: &TestNode, prefix: &str, labels: &[&str]) -> f64 {
    let (code, body) = node.get("/metrics").await.unwrap();
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_raises_no_false_events_and_the_watches_resume() {
    if !can_run() {
        return;
    }
    const NUDGE_AFTER: Duration = Duration::from_secs(2);
    const STUCK_AFTER: Duration = Duration::from_secs(3);
    let mut rotation = KeyRing::new("agent test CA").unwrap();
    // kubelet's real period: during the outage only the test makes it write the volume.
    let node = node_with_edge_pod(
        slow_kubelet(),
        &agent_config("2s", "3s", true),
        &mut rotation,
    )
    .await;
    let pod_api_errors = || metric_total(&node, "mountlag_api_errors_total{resource=\"pods\"", &[]);
    assert_eq!(pod_api_errors().await, 0.0);

    // The mount starts to lag right before the outage: kubelet does not rewrite it.
    node.node.set_stuck(PodRef::name(NAMESPACE, "edge-0"), true);
    node.api.apply_secret(&rotation.secret("edge-tls")).unwrap();
    let rv = current_rv(&node, "edge-tls");
    node.wait_status(Duration::from_secs(10), "lagging on the new version", |s| {
        state_of(s, "edge-0") == "pending" && secret_rv(s, "edge-0") == rv
    })
    .await
    .unwrap();
    let lagging = Instant::now();
    node.api.stop().await;
    // The agent has noticed the outage once its pod watch failed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while pod_api_errors().await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the agent never counted the outage\n{}",
            node.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let noticed = lagging.elapsed();
    eprintln!("the agent noticed the outage {noticed:?} after the mount started to lag");
    assert!(
        noticed < NUDGE_AFTER,
        "the agent took {noticed:?} to notice the outage, past nudge.after: this run proves \
         nothing about the outage"
    );

    // The outage outlasts stuckAfter with the mount lagging; then kubelet catches up, still
    // during the outage. The agent's lag observation proves it judged the mount after the
    // stuck deadline had passed (its loop is sequential: a due timer ran before this input).
    while lagging.elapsed() < STUCK_AFTER + Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!node.api.is_available());
    node.node
        .set_stuck(PodRef::name(NAMESPACE, "edge-0"), false);
    assert!(node.node.sync_now(NAMESPACE, "edge-0"));
    node.wait_status(
        Duration::from_secs(20),
        "caught up during the outage",
        |s| state_of(s, "edge-0") == "in_sync" && secret_rv(s, "edge-0") == rv,
    )
    .await
    .unwrap();
    let lag = node
        .metric("mountlag_mount_lag_seconds_sum")
        .await
        .unwrap()
        .unwrap();
    assert!(
        lag >= STUCK_AFTER.as_secs_f64(),
        "the mount lagged past stuckAfter during the outage: {lag}"
    );
    let (code, _) = node.get("/livez").await.unwrap();
    assert_eq!(code, 200, "the agent keeps running while the API is away");
    assert!(!node.api.is_available(), "the whole lag fell in the outage");

    // Back: the watches resume.
    node.api.restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open = node.api.stats().open_watches_by_resource;
        if ["pods", "secrets"]
            .iter()
            .all(|r| open.get(*r).copied().unwrap_or(0) >= 1)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watches did not resume within 30 s: {open:?}\n{}",
            node.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The Secret watch follows a rotation again (kubelet writes it at once: no nudge is due).
    node.api.apply_secret(&rotation.secret("edge-tls")).unwrap();
    assert!(node.node.sync_now(NAMESPACE, "edge-0"));
    let rv = current_rv(&node, "edge-tls");
    node.wait_status(
        Duration::from_secs(20),
        "in sync on the version written after the outage",
        |s| state_of(s, "edge-0") == "in_sync" && secret_rv(s, "edge-0") == rv,
    )
    .await
    .unwrap();
    // The pod watch follows a new pod, and the marker: its SubPathNeverUpdates Event is
    // published. Anything the agent attempted during the outage was attempted seconds before.
    node.api
        .create_pod(&ingress_pod(
            "edge-sub",
            &[("app", "edge")],
            "edge-tls",
            Some("tls.crt"),
        ))
        .unwrap();
    node.wait_events("SubPathNeverUpdates", Duration::from_secs(20), |e| {
        !e.is_empty()
    })
    .await
    .unwrap();

    // No Event and no nudge was attempted for the mount that lagged during the outage: none
    // was published, none failed to publish, none was rate-limited.
    for reason in ["SecretMountStuck", "SecretMountRecovered"] {
        assert!(
            node.events(reason).is_empty(),
            "{reason}: {:?}",
            node.events(reason)
        );
        let attempted = metric_total(
            &node,
            "mountlag_events_total{",
            &[&format!("reason=\"{reason}\"")],
        )
        .await;
        assert_eq!(attempted, 0.0, "{reason} Events attempted");
    }
    assert_eq!(
        metric_total(&node, "mountlag_events_total{", &["result=\"error\""]).await,
        0.0,
        "no Event failed to publish\n{}",
        node.agent_log()
    );
    assert_eq!(
        metric_total(&node, "mountlag_api_errors_total{resource=\"events\"", &[]).await,
        0.0
    );
    assert_eq!(
        node.metric("mountlag_kubelet_nudges_total{result=\"error\"}")
            .await
            .unwrap(),
        Some(0.0),
        "no nudge attempted during the outage"
    );
    assert!(
        node.events("KubeletResyncRequested").is_empty(),
        "{:?}",
        node.events("KubeletResyncRequested")
    );
    assert_eq!(
        node.metric("mountlag_kubelet_nudges_total{result=\"success\"}")
            .await
            .unwrap(),
        Some(0.0)
    );
    assert!(
        node.metric("mountlag_api_errors_total{resource=\"pods\",reason=\"unreachable\"}")
            .await
            .unwrap()
            .unwrap_or(0.0)
            >= 1.0,
        "the outage is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_lag_rebuilds_state_without_a_nudge_storm_or_false_events() {
    if !can_run() {
        return;
    }
    let mut rotation = KeyRing::new("agent test CA").unwrap();
    let mut node = node_with_edge_pod(
        slow_kubelet(),
        &agent_config("1s", "6s", true),
        &mut rotation,
    )
    .await;
    node.node.set_stuck(PodRef::name(NAMESPACE, "edge-0"), true);
    node.api.apply_secret(&rotation.secret("edge-tls")).unwrap();
    node.wait_status(Duration::from_secs(15), "nudged", |s| {
        state_of(s, "edge-0") == "nudged"
    })
    .await
    .unwrap();
    node.kill_agent().unwrap();
    node.start_agent().unwrap();
    node.wait_ready(Duration::from_secs(20)).await.unwrap();
    node.wait_status(Duration::from_secs(20), "stuck after the restart", |s| {
        state_of(s, "edge-0") == "stuck"
    })
    .await
    .unwrap();
    node.wait_events("SecretMountStuck", Duration::from_secs(10), |e| {
        !e.is_empty()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pod = node.api.pod(NAMESPACE, "edge-0").unwrap();
    let nudges: i64 = node
        .events("KubeletResyncRequested")
        .iter()
        .map(|e| e.series_count.unwrap_or(1))
        .sum();
    assert!(
        nudges <= 2,
        "at most two nudges per version across restarts: {nudges}"
    );
    assert_eq!(node.events("SecretMountStuck").len(), 1);
    assert!(node.events("SecretMountRecovered").is_empty());
    assert!(
        pod.metadata
            .annotations
            .unwrap()
            .contains_key("mountlag.io/resync")
    );
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Open file descriptors other than sockets, and inotify watches, of a process. Sockets are
/// left out: the Kubernetes client keeps a bounded pool of idle connections that expire on
/// their own; leaked watches show in the API stand-in's open-watch count instead.
fn fd_and_inotify_watches(pid: u32) -> (usize, usize) {
    let fds: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .collect();
    let mut watches = 0;
    for fd in &fds {
        if std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().contains("inotify")) {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            watches += info
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count();
        }
    }
    let not_sockets = fds
        .iter()
        .filter(|fd| {
            !std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        })
        .count();
    (not_sockets, watches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churning_200_pods_with_rotations_leaks_no_watches_inotify_watches_descriptors_or_memory() {
    if !can_run() {
        return;
    }
    let mut rotation = KeyRing::new("agent test CA").unwrap();
    let mut node = TestNode::start(fast_kubelet(), &agent_config("5s", "60s", true))
        .await
        .unwrap();
    for i in 0..20 {
        node.api
            .apply_secret(&rotation.secret(&format!("tls-{i}")))
            .unwrap();
    }
    node.start_agent().unwrap();
    node.wait_ready(Duration::from_secs(10)).await.unwrap();
    let pid = node.agent.as_ref().unwrap().pid();
    let (fds_before, watches_before) = fd_and_inotify_watches(pid);
    assert_eq!(watches_before, 0);
    let mut rss_after_round = Vec::new();

    for round in 0..2 {
        for i in 0..100 {
            let name = format!("edge-{round}-{i}");
            node.api
                .create_pod(&ingress_pod(
                    &name,
                    &[("app", "edge")],
                    &format!("tls-{}", i % 20),
                    None,
                ))
                .unwrap();
        }
        node.wait_status(Duration::from_secs(60), "100 mounts in sync", |s| {
            s["mounts"]
                .as_array()
                .is_some_and(|m| m.len() == 100 && m.iter().all(|m| m["state"] == "in_sync"))
        })
        .await
        .unwrap();
        let (_, watches) = fd_and_inotify_watches(pid);
        assert_eq!(watches, 100, "one inotify watch per mounted volume");
        // Every Secret rotated while the 100 pods are up: every mount lands on its new version.
        let rvs: Vec<String> = (0..20)
            .map(|i| {
                node.api
                    .apply_secret(&rotation.secret(&format!("tls-{i}")))
                    .unwrap()
                    .metadata
                    .resource_version
                    .unwrap()
            })
            .collect();
        node.wait_status(
            Duration::from_secs(60),
            "100 mounts in sync on the rotated Secrets",
            |s| {
                s["mounts"].as_array().is_some_and(|mounts| {
                    mounts.len() == 100
                        && mounts.iter().all(|m| {
                            let name = m["secrets"][0]["name"].as_str().unwrap_or_default();
                            let rv = m["secrets"][0]["resourceVersion"].as_str();
                            m["state"] == "in_sync"
                                && name
                                    .strip_prefix("tls-")
                                    .and_then(|i| i.parse::<usize>().ok())
                                    .is_some_and(|i| rv == Some(rvs[i].as_str()))
                        })
                })
            },
        )
        .await
        .unwrap();
        // The previous round's watches end asynchronously (their tasks are aborted, then the
        // connection closes), so the count settles rather than being exact at once.
        let secret_watches = || {
            node.api
                .stats()
                .open_watches_by_resource
                .get("secrets")
                .copied()
        };
        let settled = Instant::now();
        while secret_watches() != Some(20) && settled.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            secret_watches(),
            Some(20),
            "one watch per referenced Secret"
        );
        for i in 0..100 {
            node.api
                .delete_pod(NAMESPACE, &format!("edge-{round}-{i}"))
                .unwrap();
        }
        node.wait_status(Duration::from_secs(60), "no mounts left", |s| {
            s["mounts"].as_array().is_some_and(Vec::is_empty)
        })
        .await
        .unwrap();
        rss_after_round.push(rss_kib(pid));
    }
    // The second round of the same churn needs no more memory than the first left behind
    // (allocator slack aside): nothing per pod or per rotation is kept.
    eprintln!("agent RSS after each round of 100 pods: {rss_after_round:?} KiB");
    assert!(
        rss_after_round[1] <= rss_after_round[0] + rss_after_round[0] / 4,
        "RSS grew from {} to {} KiB over a second identical round",
        rss_after_round[0],
        rss_after_round[1]
    );
    // Aborted watches close their connections asynchronously.
    let deadline = Instant::now() + Duration::from_secs(10);
    while node
        .api
        .stats()
        .open_watches_by_resource
        .get("secrets")
        .copied()
        .unwrap_or(0)
        > 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = node.api.stats();
    assert_eq!(
        stats
            .open_watches_by_resource
            .get("secrets")
            .copied()
            .unwrap_or(0),
        0,
        "{stats:?}"
    );
    assert_eq!(
        stats.open_watches_by_resource.get("pods").copied(),
        Some(1),
        "{stats:?}"
    );
    // Snapshot and pidfd descriptors are closed synchronously; allow the loop a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut fds_after, mut watches_after) = fd_and_inotify_watches(pid);
    while (fds_after > fds_before || watches_after > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        (fds_after, watches_after) = fd_and_inotify_watches(pid);
    }
    assert_eq!(watches_after, 0, "inotify watches left behind");
    assert!(
        fds_after <= fds_before,
        "descriptors (not sockets): {fds_before} before, {fds_after} after"
    );
    assert!(node.events("SecretMountStuck").is_empty());
}

/// A node with `secrets` pods `edge-<i>`, each mounting its own Secret `tls-<i>`, and the
/// agent started with `config` and ready.
async fn node_with_one_secret_per_pod(
    api_config: ApiServerConfig,
    config: &str,
    secrets: usize,
    keys: &mut KeyRing,
) -> TestNode {
    let mut node = TestNode::start_with(api_config, fast_kubelet(), config)
        .await
        .unwrap();
    for i in 0..secrets {
        let secret = format!("tls-{i}");
        node.api.apply_secret(&keys.secret(&secret)).unwrap();
        node.api
            .create_pod(&ingress_pod(
                &format!("edge-{i}"),
                &[("app", "edge")],
                &secret,
                None,
            ))
            .unwrap();
    }
    node.start_agent().unwrap();
    node.wait_ready(Duration::from_secs(30)).await.unwrap();
    node
}

/// One watch per referenced Secret (the design mirrors kubelet), multiplexed over HTTP/2 as the
/// real API server offers it: a few connections, not one per watch — and never more streams on
/// one connection than the server allows, or the watches beyond its limit would wait for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_watches_share_a_few_http2_connections_within_the_servers_stream_limit() {
    if !can_run() {
        return;
    }
    const SECRETS: usize = 30;
    const STREAMS: usize = 8;
    // A server that allows 8 streams per connection (the real one: 250 unless configured).
    let api_config = ApiServerConfig {
        http2_max_concurrent_streams: STREAMS as u32,
        ..Default::default()
    };
    let config = format!(
        "{}api:\n  maxStreamsPerConnection: {STREAMS}\n",
        agent_config("2s", "30s", true)
    );
    let mut keys = KeyRing::new("http2 test CA").unwrap();
    let node = node_with_one_secret_per_pod(api_config, &config, SECRETS, &mut keys).await;
    node.wait_status(Duration::from_secs(60), "every mount in sync", |s| {
        s["mounts"]
            .as_array()
            .is_some_and(|m| m.len() == SECRETS && m.iter().all(|m| m["state"] == "in_sync"))
    })
    .await
    .unwrap();

    let stats = node.api.stats();
    assert_eq!(
        stats.open_watches_by_resource.get("secrets").copied(),
        Some(SECRETS),
        "one watch per Secret, all open"
    );
    assert_eq!(
        stats.requests_by_http_version.keys().collect::<Vec<_>>(),
        vec!["HTTP/2.0"],
        "every request over HTTP/2: {:?}",
        stats.requests_by_http_version
    );
    // 31 watches (30 Secrets and the pods) at no more than 8 streams per connection.
    let least = (SECRETS + 1).div_ceil(STREAMS);
    assert!(
        (least..=least + 3).contains(&stats.open_connections),
        "{} connections for {} watches at {STREAMS} streams each",
        stats.open_connections,
        SECRETS + 1
    );
    // And no more were opened on the way (a burst of requests on a new connection must not
    // set up one TLS connection each before ALPN says one HTTP/2 connection serves them all).
    assert!(
        stats.connections_accepted <= (least + 3) as u64,
        "{} connections accepted for {} watches\n{}",
        stats.connections_accepted,
        SECRETS + 1,
        node.agent_log()
    );
    // A rotation still travels over those connections.
    node.api.apply_secret(&keys.secret("tls-7")).unwrap();
    let rv = current_rv(&node, "tls-7");
    node.wait_status(Duration::from_secs(30), "rotation seen and synced", |s| {
        state_of(s, "edge-7") == "in_sync" && secret_rv(s, "edge-7") == rv
    })
    .await
    .unwrap();
}

/// A server that allows fewer streams per connection than `api.maxStreamsPerConnection`
/// queues the extra watches; the agent notices that they get no answer, keeps fewer requests
/// per connection from then on, and its watch retries land on new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_queued_past_the_servers_stream_limit_move_to_new_connections() {
    if !can_run() {
        return;
    }
    const SECRETS: usize = 20;
    let api_config = ApiServerConfig {
        http2_max_concurrent_streams: 8,
        ..Default::default()
    };
    // The agent's default cap (100) is above this server's limit (8).
    let mut keys = KeyRing::new("http2 limit test CA").unwrap();
    let node = node_with_one_secret_per_pod(
        api_config,
        &agent_config("2s", "60s", true),
        SECRETS,
        &mut keys,
    )
    .await;
    let open_secret_watches = |node: &TestNode| {
        node.api
            .stats()
            .open_watches_by_resource
            .get("secrets")
            .copied()
            .unwrap_or(0)
    };
    // At first some watches are queued behind the 8 streams of the only connection.
    assert!(open_secret_watches(&node) < SECRETS);
    let waited = Instant::now();
    while open_secret_watches(&node) < SECRETS && waited.elapsed() < Duration::from_secs(150) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        open_secret_watches(&node),
        SECRETS,
        "every Secret watch open after the agent learned the limit\n{}",
        node.agent_log()
    );
    assert!(
        node.agent_log().contains("no answer within 30s"),
        "{}",
        node.agent_log()
    );
    // And rotations arrive again.
    node.api.apply_secret(&keys.secret("tls-19")).unwrap();
    let rv = current_rv(&node, "tls-19");
    node.wait_status(Duration::from_secs(30), "rotation seen and synced", |s| {
        state_of(s, "edge-19") == "in_sync" && secret_rv(s, "edge-19") == rv
    })
    .await
    .unwrap();
}

/// `api.http2: false` (for a proxy that mishandles HTTP/2): HTTP/1.1, one connection per watch,
/// and everything works as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_http2_off_every_watch_has_its_own_http1_connection() {
    if !can_run() {
        return;
    }
    const SECRETS: usize = 6;
    let config = format!("{}api:\n  http2: false\n", agent_config("2s", "30s", true));
    let mut keys = KeyRing::new("http1 test CA").unwrap();
    let node =
        node_with_one_secret_per_pod(ApiServerConfig::default(), &config, SECRETS, &mut keys).await;
    node.api.apply_secret(&keys.secret("tls-3")).unwrap();
    let rv = current_rv(&node, "tls-3");
    node.wait_status(Duration::from_secs(30), "rotation seen and synced", |s| {
        state_of(s, "edge-3") == "in_sync" && secret_rv(s, "edge-3") == rv
    })
    .await
    .unwrap();
    let stats = node.api.stats();
    assert_eq!(
        stats.requests_by_http_version.keys().collect::<Vec<_>>(),
        vec!["HTTP/1.1"],
        "{:?}",
        stats.requests_by_http_version
    );
    assert!(
        stats.open_connections > SECRETS,
        "{} connections for {} watches",
        stats.open_connections,
        SECRETS + 1
    );
}
