//! docs/install.md's upgrade, rollback and uninstall steps, walked through on one node with the
//! real agent and the API and kubelet stand-ins (the rollout itself is kubelet replacing the
//! agent's pod: here, stopping one agent process and starting the next).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mountlag_testbed::agent;
use mountlag_testbed::certs::{IssuedLeaf, LeafSpec, TestCa};
use mountlag_testbed::cluster::{
    AgentLaunch, NAMESPACE, NODE, TestNode, agent_config, controller_pod, mount_of, tls_secret,
};
use mountlag_testbed::node::NodeConfig;
use mountlag_testbed::real;
use serde_json::Value;

const POD: &str = "edge-0";

fn served_fingerprint(status: &Value) -> Option<&str> {
    mount_of(status, POD)?["certificate"]["fingerprintSha256"].as_str()
}

async fn wait_in_sync_with(node: &TestNode, leaf: &IssuedLeaf) {
    node.wait_status(Duration::from_secs(30), "in sync with the leaf", |s| {
        mount_of(s, POD).is_some_and(|m| m["state"] == "in_sync")
            && served_fingerprint(s) == Some(leaf.fingerprint_sha256.as_str())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", node.agent_log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_rollback_and_uninstall_as_docs_install_md_says() {
    if !real::require("root + tmpfs", real::can_mount()) {
        return;
    }
    let installed = agent_config("100ms", "30s", true);
    // kubelet at its real 60–90 s period: only the agent's nudge brings a rotation in quickly.
    let mut node = TestNode::start(NodeConfig::new(NODE), &installed)
        .await
        .unwrap();
    let ca = TestCa::new("lifecycle CA").unwrap();
    let v1 = ca
        .issue(&LeafSpec::valid_for(["edge.example.com"]))
        .unwrap();
    node.api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v1))
        .unwrap();
    node.create_pod_and_wait_started(&controller_pod(
        POD,
        "nginx",
        &[("app", "edge")],
        "edge-tls",
        None,
    ))
    .await
    .unwrap();
    node.start_agent().unwrap();
    node.wait_ready(Duration::from_secs(10)).await.unwrap();
    wait_in_sync_with(&node, &v1).await;

    // Upgrade, step 1: the new configuration, checked with the new binary before anything rolls.
    let dir = tempfile::tempdir().unwrap();
    let upgraded = dir.path().join("mountlag.yaml");
    std::fs::write(
        &upgraded,
        format!("{installed}expiry:\n  warnBefore: 30d\n"),
    )
    .unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, installed.replacen("stuckAfter", "stuckAftr", 1)).unwrap();
    let check = agent::run(&["check-config", upgraded.to_str().unwrap()]);
    assert!(check.status.success(), "{check:?}");
    let check = agent::run(&["check-config", broken.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&check.stderr).to_string()
        + &String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success(), "{said}");
    assert!(
        said.contains("broken.yaml:1:") && said.contains("stuckAftr"),
        "names the file, line and key: {said}"
    );

    // What the check prevents: an agent given that configuration does not start (every pod of
    // the DaemonSet would crash-loop). The old agent's pod is replaced first, as in a rollout,
    // and a renewal lands while the node has no agent.
    assert!(node.stop_agent().unwrap().success());
    let v2 = ca
        .issue(&LeafSpec::valid_for(["edge.example.com"]))
        .unwrap();
    node.api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v2))
        .unwrap();
    node.start_agent_as(AgentLaunch {
        config: Some(broken.clone()),
        ..AgentLaunch::default()
    })
    .unwrap();
    let exit = node.wait_agent_exit(Duration::from_secs(30)).unwrap();
    assert!(
        !exit.success(),
        "an agent with a bad configuration exited {exit}"
    );
    let logs = node.all_agent_logs();
    assert!(logs.contains("stuckAftr"), "{logs}");

    // Step 2: the checked configuration rolls out; the new agent catches up with the renewal
    // made while the node had none (it nudges kubelet instead of waiting for its next sync).
    node.start_agent_as(AgentLaunch {
        config: Some(upgraded.clone()),
        ..AgentLaunch::default()
    })
    .unwrap();
    node.wait_ready(Duration::from_secs(10)).await.unwrap();
    wait_in_sync_with(&node, &v2).await;
    assert!(!node.events("KubeletResyncRequested").is_empty());

    // Rollback: the previous configuration (and binary) again; same view of the node.
    assert!(node.stop_agent().unwrap().success());
    node.start_agent().unwrap();
    node.wait_ready(Duration::from_secs(10)).await.unwrap();
    wait_in_sync_with(&node, &v2).await;

    // Uninstall: the agent stops cleanly and leaves the node as kubelet made it: the volume
    // still holds v2, and the pod keeps the nudge annotation (which kubelet ignores).
    assert!(node.stop_agent().unwrap().success());
    let pod = node.api.pod(NAMESPACE, POD).unwrap();
    assert!(
        pod.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("mountlag.io/resync")
    );
    let uid = pod.metadata.uid.unwrap();
    let volume =
        node.kubelet
            .volume_dir(&uid, mountlag_testbed::kubelet::VolumeKind::Secret, "tls");
    let on_disk = std::fs::read_to_string(volume.join("tls.crt")).unwrap();
    assert_eq!(on_disk, v2.chain_pem);
}
