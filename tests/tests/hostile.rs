//! The real `mountlag agent` against a node where a volume directory is not what kubelet makes:
//! a symlink out of the kubelet root to a valid-looking certificate. The agent refuses it,
//! reports that mount, reads nothing behind it and keeps tracking its other mounts.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mountlag_testbed::certs::{LeafSpec, secret_bytes_markers};
use mountlag_testbed::cluster::{
    KeyRing, NAMESPACE, NODE, TestNode, agent_config, ingress_pod, mount_of, tls_secret,
};
use mountlag_testbed::kubelet::{
    FileProjection, Payload, VolumeKind, atomic_write, read_data_link,
};
use mountlag_testbed::node::NodeConfig;
use mountlag_testbed::real;
use serde_json::Value;

fn state_of(status: &Value, pod: &str) -> String {
    mount_of(status, pod)
        .and_then(|m| m["state"].as_str())
        .unwrap_or("absent")
        .to_string()
}

fn uid_of(node: &TestNode, pod: &str) -> String {
    node.api
        .pod(NAMESPACE, pod)
        .and_then(|p| p.metadata.uid)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_directory_symlinked_out_of_the_kubelet_root_is_refused_and_reported() {
    if !real::require("root + tmpfs", real::can_mount()) {
        return;
    }
    let mut keys = KeyRing::new("hostile test CA").unwrap();
    let mut node = TestNode::start(NodeConfig::new(NODE), &agent_config("1s", "30s", true))
        .await
        .unwrap();
    node.api.apply_secret(&keys.secret("edge-tls")).unwrap();
    node.api.apply_secret(&keys.secret("evil-tls")).unwrap();

    // edge-0: an honest pod, mounted and written by the kubelet stand-in.
    node.api
        .create_pod(&ingress_pod("edge-0", &[("app", "edge")], "edge-tls", None))
        .unwrap();
    let edge_volume = node
        .kubelet
        .volume_dir(&uid_of(&node, "edge-0"), VolumeKind::Secret, "tls");
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_data_link(&edge_volume).ok().flatten().is_none() {
        assert!(
            Instant::now() < deadline,
            "edge-0's volume is never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // evil-0: kubelet (paused) never sets it up; its volume directory is a symlink to a
    // directory outside the kubelet root holding a valid-looking AtomicWriter volume.
    node.node.set_paused(true);
    node.api
        .create_pod(&ingress_pod("evil-0", &[("app", "edge")], "evil-tls", None))
        .unwrap();
    let outside_leaf = keys
        .ca
        .issue(&LeafSpec::valid_for(["outside.example.com"]))
        .unwrap();
    let outside = tempfile::Builder::new()
        .prefix("mountlag-outside-")
        .tempdir()
        .unwrap();
    let payload: Payload = [
        ("tls.crt", outside_leaf.chain_pem.as_bytes()),
        ("tls.key", outside_leaf.key_pem.as_bytes()),
    ]
    .into_iter()
    .map(|(name, bytes)| (name.to_string(), FileProjection::new(bytes, 0o644)))
    .collect();
    atomic_write(outside.path(), &payload, None).unwrap();
    let evil_volume = node
        .kubelet
        .volume_dir(&uid_of(&node, "evil-0"), VolumeKind::Secret, "tls");
    std::fs::create_dir_all(evil_volume.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(outside.path(), &evil_volume).unwrap();

    node.start_agent().unwrap();
    let status = node
        .wait_status(
            Duration::from_secs(15),
            "edge-0 in sync, evil-0 unreadable",
            |s| state_of(s, "edge-0") == "in_sync" && state_of(s, "evil-0") == "unreadable",
        )
        .await
        .unwrap();
    node.wait_ready(Duration::from_secs(10)).await.unwrap();
    let log = node.agent_log();
    assert!(
        log.contains("volume refused") && log.contains("is a symlink to"),
        "the refusal is logged: {log}"
    );
    // Nothing behind the symlink was read: the outside leaf is nowhere.
    let status_text = status.to_string();
    for (what, text) in [("/status", &status_text), ("agent log", &log)] {
        assert!(
            !text.contains(&outside_leaf.fingerprint_sha256),
            "{what} shows the outside certificate: {text}"
        );
        keys.assert_not_in(what, text);
        for marker in secret_bytes_markers(&outside_leaf.key_pem) {
            assert!(!text.contains(&marker), "outside key bytes in {what}");
        }
    }
    assert!(
        mount_of(&status, "evil-0").unwrap()["certificate"].is_null(),
        "{status:#}"
    );
    assert_eq!(node.stop_agent().unwrap().code(), Some(0));
    node.node.set_paused(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_about_a_hostile_certificate_quotes_its_names_escaped() {
    if !real::require("root + tmpfs", real::can_mount()) {
        return;
    }
    let mut keys = KeyRing::new("hostile test CA").unwrap();
    let mut node = TestNode::start(
        NodeConfig::new(NODE).time_factor(0.02),
        &agent_config("1s", "30s", true),
    )
    .await
    .unwrap();
    node.api.apply_secret(&keys.secret("edge-tls")).unwrap();
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

    // An expired leaf whose name (its CN and DNS SAN) is a terminal escape sequence: the
    // Event withholding the reload quotes it.
    let now = time::OffsetDateTime::now_utc();
    let hostile = "evil\u{1b}[2J\u{1b}]0;owned\u{7}.example.com";
    let evil = keys
        .ca
        .issue(&LeafSpec::valid_for([hostile]).with_validity(
            now - time::Duration::days(60),
            now - time::Duration::days(30),
        ))
        .unwrap();
    node.api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &evil))
        .unwrap();
    let events = node
        .wait_events("InvalidCertificateMaterial", Duration::from_secs(20), |e| {
            !e.is_empty()
        })
        .await
        .unwrap();
    let note = &events[0].note;
    assert!(
        !note.chars().any(mountlag::text::needs_escape),
        "raw control characters in the Event note: {note:?}"
    );
    assert!(
        note.contains("CN=evil\\u{1b}[2J\\u{1b}]0;owned\\u{7}.example.com"),
        "{note}"
    );
    assert!(note.len() <= mountlag::text::MAX_EVENT_NOTE_BYTES, "{note}");
    let log = node.agent_log();
    assert!(!log.contains('\u{1b}') && !log.contains('\u{7}'), "{log}");
    assert_eq!(node.stop_agent().unwrap().code(), Some(0));
    keys.assert_not_in("agent log", &node.all_agent_logs());
}
