//! The probe-only install (deploy/components/probe-only): the real agent runs as uid 65532 with
//! no capabilities and no kubelet root, and still proves, against the API, what real nginx
//! serves. It says in /status that disk is not checked, and never nudges or signals.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mountlag_testbed::certs::{LeafSpec, TestCa, secret_bytes_markers};
use mountlag_testbed::cluster::{
    AgentLaunch, NAMESPACE, NODE, NONROOT, TestNode, controller_pod, free_port, mount_of,
    tls_secret,
};
use mountlag_testbed::controllers::{self, ControllerKind, ControllerSpec, RunningController};
use mountlag_testbed::kubelet::VolumeKind;
use mountlag_testbed::node::NodeConfig;
use mountlag_testbed::real;

const NAMES: [&str; 2] = ["edge.example.com", "www.example.com"];
const POD: &str = "edge-0";

/// `/proc/<pid>/status` field `name`, e.g. `Uid` or `CapEff`.
fn proc_status(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// `profile`: an API-driven one (as the probe-only overlays use) or a files one, which the
/// agent must then verify against the API too, since it has no disk to read and no process to
/// signal.
async fn probe_only_agent_verifies_against_the_api(profile: &str) {
    if !(real::require("root + tmpfs", real::can_mount())
        && real::require("nginx", controllers::available(ControllerKind::Nginx)))
    {
        return;
    }
    let port = free_port().unwrap();
    let config = format!(
        "nudge:\n  enabled: false\nverify:\n  timeout: 3s\n  mismatchAfter: 3s\ncontrollers:\n  - name: edge\n    \
         profile: {profile}\n    selector: app=edge\n    namespaces: [{NAMESPACE}]\n    probe:\n      \
         ports: [{port}]\n"
    );
    // kubelet at its real 60–90 s period: nothing but the test changes the served files.
    let mut node = TestNode::start(NodeConfig::new(NODE), &config)
        .await
        .unwrap();
    let ca = TestCa::new("probe-only test CA").unwrap();
    let v1 = ca.issue(&LeafSpec::valid_for(NAMES)).unwrap();
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
    let uid = node.api.pod(NAMESPACE, POD).unwrap().metadata.uid.unwrap();
    let volume = node.kubelet.volume_dir(&uid, VolumeKind::Secret, "tls");
    let names = NAMES.iter().map(|n| n.to_string()).collect();
    let nginx = RunningController::start(
        ControllerSpec::new(ControllerKind::Nginx, &uid, &volume, names).with_port(port),
    )
    .unwrap();
    let nginx_pids = nginx.pids();

    // What the probe-only DaemonSet gives the agent: no kubelet root, uid 65532.
    let no_kubelet_root = std::path::PathBuf::from("/nonexistent/kubelet");
    node.start_agent_as(AgentLaunch {
        kubelet_root: Some(no_kubelet_root.clone()),
        run_as: Some(NONROOT),
        ..AgentLaunch::default()
    })
    .unwrap();
    let pid = node.agent.as_ref().unwrap().pid();
    node.wait_ready(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        proc_status(pid, "Uid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec!["65532"; 4]
    );
    assert_eq!(proc_status(pid, "CapEff"), "0000000000000000");

    // It says what it does not check, and proves what nginx serves against the API.
    let status = node
        .wait_status(Duration::from_secs(15), "served v1 verified", |s| {
            mount_of(s, POD).is_some_and(|m| m["served"]["match"] == true)
        })
        .await
        .unwrap();
    assert_eq!(status["disk"]["checked"], false, "{status:#}");
    let reason = status["disk"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&no_kubelet_root.join("pods").display().to_string())
            && reason.contains("checked against the API only"),
        "{reason}"
    );
    let mount = mount_of(&status, POD).unwrap();
    assert_eq!(mount["state"], "unchecked", "{mount:#}");
    assert_eq!(
        mount["served"]["fingerprintSha256"],
        v1.fingerprint_sha256.as_str()
    );
    assert_eq!(
        node.metric("mountlag_mounts{state=\"unchecked\"}")
            .await
            .unwrap(),
        Some(1.0)
    );
    let text = mountlag_testbed::agent::run(&[
        "status",
        "--endpoint",
        &format!("http://{}", node.agent.as_ref().unwrap().listen),
    ]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("disk not checked: no kubelet pods directory"),
        "{text}"
    );

    // A renewal in the API that the controller never picks up (kubelet has not synced, and
    // nothing may nudge it): reported as a mismatch, with no nudge and no signal.
    let v2 = ca.issue(&LeafSpec::valid_for(NAMES)).unwrap();
    node.api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v2))
        .unwrap();
    let events = node
        .wait_events("ServedCertificateMismatch", Duration::from_secs(20), |e| {
            !e.is_empty()
        })
        .await
        .unwrap();
    assert!(
        events[0].note.contains(&v2.fingerprint_sha256[..16]),
        "{}",
        events[0].note
    );
    let status = node
        .wait_status(Duration::from_secs(10), "served mismatch", |s| {
            mount_of(s, POD).is_some_and(|m| m["served"]["match"] == false)
        })
        .await
        .unwrap();
    assert_eq!(mount_of(&status, POD).unwrap()["state"], "unchecked");
    let pod = node.api.pod(NAMESPACE, POD).unwrap();
    assert!(
        !pod.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("mountlag.io/resync"),
        "nudged"
    );
    assert_eq!(nginx.pids(), nginx_pids, "nothing was signalled");
    for reason in [
        "KubeletResyncRequested",
        "SecretMountStuck",
        "ControllerReloaded",
    ] {
        assert!(node.events(reason).is_empty(), "{reason}");
    }
    let logs = node.all_agent_logs();
    for key in [&v1.key_pem, &v2.key_pem] {
        for marker in secret_bytes_markers(key) {
            assert!(!logs.contains(&marker), "key bytes in the agent log");
        }
    }
    assert!(
        node.stop_agent().unwrap().success(),
        "clean exit\n{}",
        node.agent_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_only_agent_verifies_an_api_driven_controller() {
    probe_only_agent_verifies_against_the_api("ingress-nginx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_only_agent_verifies_a_files_controller_without_signalling_it() {
    probe_only_agent_verifies_against_the_api("nginx").await;
}
