//! The real `mountlag agent` while the disk misbehaves: a volume's tmpfs full (kubelet cannot
//! write the rotation), a storm of unrelated mounts and unmounts, a pod directory removed from
//! under the agent. The agent keeps running, says what is true about each mount and keeps
//! serving the others; nothing is lost once the disk recovers.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use mountlag_testbed::cluster::{
    KeyRing, NAMESPACE, NODE, TestNode, agent_config, ingress_pod, mount_of,
};
use mountlag_testbed::kubelet::VolumeKind;
use mountlag_testbed::node::{NodeConfig, PodRef};
use mountlag_testbed::real;
use serde_json::Value;

fn can_run() -> bool {
    real::require("root + tmpfs", real::can_mount())
}

fn state_of(status: &Value, pod: &str) -> String {
    mount_of(status, pod)
        .and_then(|m| m["state"].as_str())
        .unwrap_or("absent")
        .to_owned()
}

fn secret_rv_of(status: &Value, pod: &str) -> String {
    mount_of(status, pod)
        .and_then(|m| m["secrets"][0]["resourceVersion"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Pods `edge-0..n`, each with its own Secret `tls-i`, kubelet syncing every 1.2–1.8 s, the
/// agent ready and every mount in sync. The pods serve no TLS: verification is given an hour
/// so it concludes nothing here (these tests are about the disk).
async fn node_with_pods(n: usize, keys: &mut KeyRing, stuck_after: &str) -> TestNode {
    let config = format!(
        "{}verify:\n  timeout: 1h\n  interval: 1h\n",
        agent_config("1s", stuck_after, true)
    );
    let mut node = TestNode::start(NodeConfig::new(NODE).time_factor(0.02), &config)
        .await
        .unwrap();
    for i in 0..n {
        node.api
            .apply_secret(&keys.secret(&format!("tls-{i}")))
            .unwrap();
        node.create_pod_and_wait_started(&ingress_pod(
            &format!("edge-{i}"),
            &[("app", "edge")],
            &format!("tls-{i}"),
            None,
        ))
        .await
        .unwrap();
    }
    node.start_agent().unwrap();
    node.wait_ready(Duration::from_secs(20)).await.unwrap();
    node.wait_status(Duration::from_secs(20), "every mount in sync", |s| {
        (0..n).all(|i| state_of(s, &format!("edge-{i}")) == "in_sync")
    })
    .await
    .unwrap();
    node
}

fn rotate(node: &TestNode, keys: &mut KeyRing, secret: &str) -> String {
    node.api
        .apply_secret(&keys.secret(secret))
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
}

fn volume_of(node: &TestNode, pod: &str) -> PathBuf {
    let uid = node
        .api
        .pod(NAMESPACE, pod)
        .and_then(|p| p.metadata.uid)
        .unwrap();
    node.kubelet.volume_dir(&uid, VolumeKind::Secret, "tls")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// Used bytes of the filesystem at `path`, rounded up to KiB.
fn used_kib(path: &Path) -> u64 {
    let stat = nix::sys::statvfs::statvfs(path).unwrap();
    let used = (stat.blocks() - stat.blocks_free()) * stat.fragment_size();
    used.div_ceil(1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tmpfs_holds_the_rotation_back_is_reported_stuck_and_recovers_once_freed() {
    if !can_run() {
        return;
    }
    let mut keys = KeyRing::new("disk faults test CA").unwrap();
    let node = node_with_pods(2, &mut keys, "6s").await;
    let full = volume_of(&node, "edge-0");
    // Shrink edge-0's tmpfs to what it holds: kubelet's next write fails with ENOSPC, and the
    // old generation stays in place (AtomicWriter swaps `..data` only after every file).
    let size = used_kib(&full);
    run(Command::new("mount")
        .args(["-o", &format!("remount,size={size}k")])
        .arg(&full));

    let rv0 = rotate(&node, &mut keys, "tls-0");
    let rv1 = rotate(&node, &mut keys, "tls-1");
    let stuck = node
        .wait_status(
            Duration::from_secs(30),
            "edge-0 stuck, edge-1 in sync",
            |s| {
                state_of(s, "edge-0") == "stuck"
                    && state_of(s, "edge-1") == "in_sync"
                    && secret_rv_of(s, "edge-1") == rv1
            },
        )
        .await
        .unwrap();
    assert_eq!(
        secret_rv_of(&stuck, "edge-0"),
        rv0,
        "the API view is current"
    );
    node.wait_events("SecretMountStuck", Duration::from_secs(10), |e| {
        e.iter().any(|e| e.regarding.name == "edge-0")
    })
    .await
    .unwrap();
    assert_eq!(node.get("/livez").await.unwrap().0, 200);

    // Room again: kubelet's next (nudged or periodic) sync writes the rotation.
    run(Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&full));
    node.wait_status(Duration::from_secs(30), "edge-0 in sync again", |s| {
        state_of(s, "edge-0") == "in_sync" && secret_rv_of(s, "edge-0") == rv0
    })
    .await
    .unwrap();
    node.wait_events("SecretMountRecovered", Duration::from_secs(10), |e| {
        e.iter().any(|e| e.regarding.name == "edge-0")
    })
    .await
    .unwrap();
    let warnings = node.warnings();
    assert!(
        warnings
            .iter()
            .all(|w| w.starts_with("edge-0 SecretMountStuck")),
        "only the true stuck mount is warned about: {warnings:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_unrelated_mounts_holds_no_rotation_back() {
    if !can_run() {
        return;
    }
    let mut keys = KeyRing::new("disk faults test CA").unwrap();
    let node = node_with_pods(3, &mut keys, "20s").await;
    let rescans_before = node
        .metric("mountlag_rescans_total{reason=\"mount_table\"}")
        .await
        .unwrap()
        .unwrap_or(0.0);
    let scratch = tempfile::Builder::new()
        .prefix("mountlag-storm-")
        .tempdir()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let storm = {
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        let base = scratch.path().to_path_buf();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) || i < 300 {
                let point = base.join(format!("m{}", i % 20));
                std::fs::create_dir_all(&point).unwrap();
                nix::mount::mount(
                    Some("tmpfs"),
                    &point,
                    Some("tmpfs"),
                    nix::mount::MsFlags::empty(),
                    Some("size=64k"),
                )
                .unwrap();
                nix::mount::umount(&point).unwrap();
                i += 1;
                done.store(i, Ordering::Relaxed);
            }
        })
    };
    // Rotations while the mount table churns.
    for round in 0..3 {
        let rvs: Vec<String> = (0..3)
            .map(|i| rotate(&node, &mut keys, &format!("tls-{i}")))
            .collect();
        node.wait_status(
            Duration::from_secs(30),
            &format!("round {round}: every mount in sync on its rotation"),
            |s| {
                (0..3).all(|i| {
                    let pod = format!("edge-{i}");
                    state_of(s, &pod) == "in_sync" && secret_rv_of(s, &pod) == rvs[i]
                })
            },
        )
        .await
        .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    storm.join().unwrap();
    let mounts = done.load(Ordering::Relaxed);
    assert!(mounts >= 300, "the storm ran: {mounts} mount/unmount pairs");
    let rescans = node
        .metric("mountlag_rescans_total{reason=\"mount_table\"}")
        .await
        .unwrap()
        .unwrap_or(0.0);
    eprintln!(
        "mount storm: {mounts} mount/unmount pairs, {} mount-table rescans, 9 rotations in sync",
        rescans - rescans_before
    );
    assert_eq!(node.get("/livez").await.unwrap().0, 200);
    let warnings = node.warnings();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_directory_removed_from_under_the_agent_is_reported_and_the_other_pods_go_on() {
    if !can_run() {
        return;
    }
    let mut keys = KeyRing::new("disk faults test CA").unwrap();
    let node = node_with_pods(2, &mut keys, "6s").await;
    let gone = volume_of(&node, "edge-0");
    let pod_dir = gone.ancestors().nth(3).map(Path::to_path_buf).unwrap();
    assert!(
        pod_dir.ends_with(
            node.api
                .pod(NAMESPACE, "edge-0")
                .unwrap()
                .metadata
                .uid
                .unwrap()
        )
    );
    // kubelet leaves edge-0 alone from now on; its directory goes while edge-1 rotates.
    node.node.set_stuck(PodRef::name(NAMESPACE, "edge-0"), true);
    let rv1 = rotate(&node, &mut keys, "tls-1");
    nix::mount::umount(&gone).unwrap();
    std::fs::remove_dir_all(&pod_dir).unwrap();
    let status = node
        .wait_status(
            Duration::from_secs(30),
            "edge-0 not in sync, edge-1 in sync on its rotation",
            |s| {
                state_of(s, "edge-0") != "in_sync"
                    && state_of(s, "edge-1") == "in_sync"
                    && secret_rv_of(s, "edge-1") == rv1
            },
        )
        .await
        .unwrap();
    eprintln!(
        "edge-0 after its directory was removed: {}",
        state_of(&status, "edge-0")
    );
    // The agent keeps running and watching: another rotation of edge-1 arrives.
    let rv1 = rotate(&node, &mut keys, "tls-1");
    node.wait_status(Duration::from_secs(30), "edge-1 in sync again", |s| {
        state_of(s, "edge-1") == "in_sync" && secret_rv_of(s, "edge-1") == rv1
    })
    .await
    .unwrap();
    assert_eq!(node.get("/livez").await.unwrap().0, 200);
    assert!(
        !node.agent_log().contains("panicked"),
        "{}",
        node.agent_log()
    );
}
