//! The real `mountlag agent` against an API stand-in that misbehaves the ways real API servers
//! and what sits in front of them do: every watch answered `410 Gone`, the API flapping,
//! watches left open and silent past their timeout, 429/5xx with `Retry-After`, and a watch
//! stream cut in the middle of an object. Secrets rotate during each fault; every rotation
//! must reach the agent's view in the end, with no false Event, the fault counted in the
//! agent's API error metric and readiness saying when the view is stale. Through an outage a
//! failing watch warns once, not at every retry.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mountlag_testbed::apiserver::{Faults, Rejection};
use mountlag_testbed::cluster::{
    KeyRing, NAMESPACE, NODE, TestNode, agent_config, ingress_pod, mount_of,
};
use mountlag_testbed::node::NodeConfig;
use mountlag_testbed::real;
use serde_json::Value;

fn can_run() -> bool {
    real::require("root + tmpfs", real::can_mount())
}

/// Watches renewed every 5 s (so a silent one is given up after 7 s), nudges after 1 s,
/// stuck after 20 s: far beyond what a rotation takes with the fast kubelet below. The pods
/// here serve no TLS: verification gets 10 minutes, so it concludes nothing during a test
/// (these tests are about the API view; served truth under faults is tests/tests/kill_points.rs).
fn config() -> String {
    format!(
        "{}verify:\n  timeout: 10m\n  interval: 1h\napi:\n  watchTimeout: 5s\n",
        agent_config("1s", "20s", true)
    )
}

fn secret_rv_of(status: &Value, pod: &str) -> Option<String> {
    mount_of(status, pod)?["secrets"][0]["resourceVersion"]
        .as_str()
        .map(str::to_owned)
}

fn in_sync_on(status: &Value, rv: &str) -> bool {
    mount_of(status, "edge-0").is_some_and(|m| m["state"] == "in_sync")
        && secret_rv_of(status, "edge-0").as_deref() == Some(rv)
}

struct Edge {
    node: TestNode,
    keys: KeyRing,
}

impl Edge {
    /// One edge pod in sync, the kubelet stand-in syncing every 1.2–1.8 s, the agent ready.
    async fn start() -> Self {
        let mut keys = KeyRing::new("api faults test CA").unwrap();
        let mut node = TestNode::start(NodeConfig::new(NODE).time_factor(0.02), &config())
            .await
            .unwrap();
        node.api.apply_secret(&keys.secret("edge-tls")).unwrap();
        node.create_pod_and_wait_started(&ingress_pod(
            "edge-0",
            &[("app", "edge")],
            "edge-tls",
            None,
        ))
        .await
        .unwrap();
        node.start_agent().unwrap();
        node.wait_ready(Duration::from_secs(20)).await.unwrap();
        let edge = Self { node, keys };
        edge.wait_in_sync(Duration::from_secs(20), "at start").await;
        edge
    }

    /// Writes a new version of the Secret (through the in-process handle, so it works while
    /// the HTTP side is down or faulty) and returns its resourceVersion.
    fn rotate(&mut self) -> String {
        let secret = self.keys.secret("edge-tls");
        self.node
            .api
            .apply_secret(&secret)
            .unwrap()
            .metadata
            .resource_version
            .unwrap()
    }

    fn current_rv(&self) -> String {
        self.node
            .api
            .secret(NAMESPACE, "edge-tls")
            .and_then(|s| s.metadata.resource_version)
            .unwrap()
    }

    async fn wait_in_sync(&self, timeout: Duration, what: &str) -> Value {
        let rv = self.current_rv();
        self.node
            .wait_status(timeout, &format!("in sync on {rv} {what}"), |s| {
                in_sync_on(s, &rv)
            })
            .await
            .unwrap()
    }

    async fn api_errors(&self) -> f64 {
        let (_, body) = self.node.get("/metrics").await.unwrap();
        body.lines()
            .filter(|l| l.starts_with("mountlag_api_errors_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// No Warning Event at all: nothing in these scenarios is stuck, invalid or unverified.
    fn assert_no_warning(&self) {
        let warnings = self.node.warnings();
        assert!(
            warnings.is_empty(),
            "false Warning Events: {warnings:#?}\n{}",
            self.node.agent_log()
        );
    }

    fn fault_count(&self, fault: &str) -> u64 {
        self.node
            .api
            .stats()
            .faults
            .get(fault)
            .copied()
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watch_answered_gone_still_brings_every_rotation_through_relists() {
    if !can_run() {
        return;
    }
    let mut edge = Edge::start().await;
    let errors_before = edge.api_errors().await;
    edge.node.api.set_faults(Faults {
        watches_gone: true,
        ..Faults::default()
    });
    edge.node.api.drop_watches();
    // Two rotations while no watch survives its first line: only relists can see them.
    edge.rotate();
    tokio::time::sleep(Duration::from_millis(500)).await;
    edge.rotate();
    edge.wait_in_sync(Duration::from_secs(60), "while every watch is answered 410")
        .await;
    assert!(
        edge.fault_count("watch_gone") >= 2,
        "{:?}",
        edge.node.api.stats().faults
    );
    assert!(
        edge.api_errors().await > errors_before,
        "the 410s are counted in mountlag_api_errors_total"
    );
    edge.node.api.set_faults(Faults::default());
    let rv = edge.rotate();
    edge.wait_in_sync(Duration::from_secs(60), "after the fault")
        .await;
    // The watches are open again: the next change arrives without a relist.
    let deadline = Instant::now() + Duration::from_secs(60);
    while edge
        .node
        .api
        .stats()
        .open_watches_by_resource
        .get("secrets")
        .copied()
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "no Secret watch open again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(edge.current_rv(), rv);
    edge.assert_no_warning();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_api_with_rotations_ends_in_sync_without_false_events_and_readiness_follows() {
    if !can_run() {
        return;
    }
    let mut edge = Edge::start().await;
    let errors_before = edge.api_errors().await;
    let mut unready_seen = Vec::new();
    let mut rotations = 0;
    // Down and up every 3 s for 30 s, a rotation in every phase: while down, the kubelet
    // stand-in (in process) still writes the new version, so the disk runs ahead of the
    // agent's stale view of the API.
    for phase in 0..10 {
        let up = phase % 2 == 1;
        edge.node.api.set_available(up).await.unwrap();
        edge.rotate();
        rotations += 1;
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if let Ok((503, body)) = edge.node.get("/readyz").await {
                unready_seen.push(body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    edge.node.api.set_available(true).await.unwrap();
    edge.wait_in_sync(Duration::from_secs(60), "after the flapping")
        .await;
    edge.node.wait_ready(Duration::from_secs(60)).await.unwrap();
    assert!(
        unready_seen
            .iter()
            .any(|body| body.contains("the pod watch is failing")),
        "readiness never said the API view was stale during {rotations} phases: {unready_seen:?}"
    );
    assert!(
        edge.api_errors().await > errors_before,
        "the outages are counted in mountlag_api_errors_total"
    );
    edge.assert_no_warning();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_left_open_and_silent_past_its_timeout_is_renewed_and_misses_nothing() {
    if !can_run() {
        return;
    }
    let mut edge = Edge::start().await;
    edge.node.api.set_faults(Faults {
        silent_watches: true,
        ..Faults::default()
    });
    edge.node.api.drop_watches();
    let deadline = Instant::now() + Duration::from_secs(30);
    while edge.fault_count("watch_silent") < 2 {
        assert!(
            Instant::now() < deadline,
            "the agent did not watch again: {:?}",
            edge.node.api.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The server would now answer normally, but the agent's watches are the silent ones: a
    // client that trusted them (HTTP/2 pings keep the connection alive) would never learn of
    // this rotation.
    let watches_before = edge.node.api.stats().count("watch", "secrets");
    edge.node.api.set_faults(Faults::default());
    edge.rotate();
    edge.wait_in_sync(Duration::from_secs(40), "after the silent watches ended")
        .await;
    assert!(
        edge.node.api.stats().count("watch", "secrets") > watches_before,
        "the rotation came through a renewed watch"
    );
    edge.assert_no_warning();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_with_retry_after_delay_but_lose_no_rotation() {
    if !can_run() {
        return;
    }
    let mut edge = Edge::start().await;
    for status in [429, 503, 500] {
        let errors_before = edge.api_errors().await;
        edge.node.api.set_faults(Faults {
            reject: Some(Rejection {
                status,
                retry_after_seconds: 1,
                remaining: 12,
            }),
            ..Faults::default()
        });
        edge.node.api.drop_watches();
        edge.rotate();
        edge.wait_in_sync(
            Duration::from_secs(60),
            &format!("through {status} answers"),
        )
        .await;
        let label = format!("reject_{status}");
        assert!(
            edge.fault_count(&label) >= 1,
            "{:?}",
            edge.node.api.stats().faults
        );
        if status == 500 {
            // Not retried by the client: each one fails a watch, and is counted.
            assert!(
                edge.api_errors().await > errors_before,
                "500s are counted in mountlag_api_errors_total"
            );
        }
        edge.node.api.set_faults(Faults::default());
    }
    edge.assert_no_warning();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_stream_cut_mid_object_is_resumed_and_the_change_delivered() {
    if !can_run() {
        return;
    }
    let mut edge = Edge::start().await;
    edge.node.api.set_faults(Faults {
        cut_watch_events: 1,
        ..Faults::default()
    });
    // The change event of this rotation is the next event on any watch: it is cut in half.
    edge.rotate();
    edge.wait_in_sync(Duration::from_secs(30), "after the cut")
        .await;
    assert_eq!(
        edge.fault_count("watch_cut"),
        1,
        "{:?}",
        edge.node.api.stats().faults
    );
    edge.rotate();
    edge.wait_in_sync(Duration::from_secs(30), "on the resumed watch")
        .await;
    edge.assert_no_warning();
}

/// Lines of the agent's log that warn of a failed Secret watch.
fn secret_watch_warnings(edge: &Edge) -> usize {
    edge.node
        .agent_log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("secret watch failed"))
        .count()
}

impl Edge {
    async fn secret_watch_errors(&self) -> f64 {
        let (_, body) = self.node.get("/metrics").await.unwrap();
        body.lines()
            .filter(|l| {
                l.starts_with("mountlag_api_errors_total{") && l.contains("resource=\"secrets\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until the Secret watch has failed `more` more times than `since`.
    async fn wait_secret_watch_errors(&self, since: f64, more: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.secret_watch_errors().await;
            if now >= since + more {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "the Secret watch failed {} times, not {more}:\n{}",
                now - since,
                self.node.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_an_outage_a_failing_secret_watch_warns_once_and_once_more_after_it_recovered() {
    if !can_run() {
        return;
    }
    let edge = Edge::start().await;
    assert_eq!(secret_watch_warnings(&edge), 0);
    let before = edge.secret_watch_errors().await;
    edge.node.api.set_available(false).await.unwrap();
    // Three failures, each retried after its backoff: one warning (the others at debug level;
    // on a node with 1,000 Secrets an outage wrote ~200 warnings a second).
    let failed = edge.wait_secret_watch_errors(before, 3.0).await;
    assert_eq!(secret_watch_warnings(&edge), 1, "{}", edge.node.agent_log());
    edge.node.api.set_available(true).await.unwrap();
    edge.node.wait_ready(Duration::from_secs(60)).await.unwrap();
    // Listed again: the next outage is news.
    edge.node.api.set_available(false).await.unwrap();
    edge.wait_secret_watch_errors(failed, 1.0).await;
    assert_eq!(secret_watch_warnings(&edge), 2, "{}", edge.node.agent_log());
    edge.node.api.set_available(true).await.unwrap();
    edge.node.wait_ready(Duration::from_secs(60)).await.unwrap();
}
