//! Reload and prove it: the real agent finds real nginx and HAProxy through kubelet-shaped
//! cgroups, signals them through a pidfd, and verifies the served leaf over TLS.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mountlag_testbed::certs::{IssuedLeaf, LeafSpec, TestCa, secret_bytes_markers};
use mountlag_testbed::cluster::{
    NAMESPACE, TestNode, controller_pod, free_port, mount_of, tls_secret,
};
use mountlag_testbed::controllers::{
    self, CgroupLayout, ControllerKind, ControllerSpec, RunningController,
};
use mountlag_testbed::kubelet::VolumeKind;
use mountlag_testbed::node::{NodeConfig, SyncOutcome};
use mountlag_testbed::real;
use mountlag_testbed::tlsload::LoadGenerator;

const NAMES: [&str; 2] = ["edge.example.com", "www.example.com"];

fn can_run(kind: ControllerKind) -> bool {
    real::require("root + tmpfs", real::can_mount())
        && real::require(kind.name(), controllers::available(kind))
}

struct Setup {
    node: TestNode,
    controller: RunningController,
    ca: TestCa,
    keys: Vec<String>,
    pod: &'static str,
    /// The leaf the controller started with.
    first: IssuedLeaf,
}

/// How a test's node is set up; `Options::default()` is the common case.
#[derive(Default)]
struct Options {
    /// Overrides the kind's profile.
    profile: Option<&'static str>,
    /// Overrides the profile's reload action.
    reload: Option<&'static str>,
    layout: CgroupLayout,
    /// Kubelet-shaped in the cgroup v1 hierarchy only.
    v1_only: bool,
    /// `verify.interval` (the agent's default otherwise).
    verify_interval: Option<&'static str>,
    /// The first leaf (valid for a year otherwise).
    first_leaf: Option<LeafSpec>,
}

/// The agent config for one controller.
fn config(kind: ControllerKind, port: u16, options: &Options) -> String {
    let profile = options.profile.unwrap_or(match kind {
        ControllerKind::Nginx => "nginx",
        ControllerKind::Haproxy => "haproxy",
    });
    let reload = options
        .reload
        .map(|r| format!("    reload: {r}\n"))
        .unwrap_or_default();
    let interval = options
        .verify_interval
        .map(|i| format!("  interval: {i}\n"))
        .unwrap_or_default();
    format!(
        "stuckAfter: 30s\nnudge:\n  after: 100ms\nreload:\n  minInterval: 0s\nverify:\n  timeout: 6s\n{interval}\
         controllers:\n  - name: edge\n    profile: {profile}\n    selector: app=edge\n{reload}    probe:\n      ports: [{port}]\n"
    )
}

impl Setup {
    async fn start(kind: ControllerKind) -> Self {
        Self::start_with(kind, Options::default()).await
    }

    /// The controller's processes in the cgroup `options.layout` names (kubelet reporting the
    /// layout's runtime in the container IDs).
    async fn start_with(kind: ControllerKind, options: Options) -> Self {
        let port = free_port().unwrap();
        let layout = options.layout;
        // kubelet at its real 60–90 s period: the agent's nudge is what brings rotations in.
        let mut node = TestNode::start(
            NodeConfig::new(mountlag_testbed::cluster::NODE).container_runtime(layout.runtime()),
            &config(kind, port, &options),
        )
        .await
        .unwrap();
        let ca = TestCa::new("reload test CA").unwrap();
        let mut setup_keys = Vec::new();
        let first = options
            .first_leaf
            .unwrap_or_else(|| LeafSpec::valid_for(NAMES));
        let leaf = ca.issue(&first).unwrap();
        setup_keys.push(leaf.key_pem.clone());
        node.api
            .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &leaf))
            .unwrap();
        let items: Option<&[(&str, &str)]> = match kind {
            ControllerKind::Nginx => None,
            ControllerKind::Haproxy => Some(&[("tls.crt", "tls.crt"), ("tls.key", "tls.crt.key")]),
        };
        let pod = "edge-0";
        let before = node.node.last_seq();
        node.api
            .create_pod(&controller_pod(
                pod,
                kind.name(),
                &[("app", "edge")],
                "edge-tls",
                items,
            ))
            .unwrap();
        node.node
            .wait_for(before, Duration::from_secs(10), |e| {
                e.pod == pod && e.outcome == SyncOutcome::Started
            })
            .await
            .expect("kubelet started the pod");
        let uid = node.api.pod(NAMESPACE, pod).unwrap().metadata.uid.unwrap();
        let volume = node.kubelet.volume_dir(&uid, VolumeKind::Secret, "tls");
        let names = NAMES.iter().map(|n| n.to_string()).collect();
        let mut spec = ControllerSpec::new(kind, &uid, &volume, names)
            .with_port(port)
            .with_layout(layout);
        if options.v1_only {
            spec = spec.with_v1_only();
        }
        let controller = RunningController::start(spec).unwrap();
        node.start_agent().unwrap();
        node.wait_ready(Duration::from_secs(10)).await.unwrap();
        node.wait_status(Duration::from_secs(10), "in sync", |s| {
            mount_of(s, pod).is_some_and(|m| m["state"] == "in_sync")
        })
        .await
        .unwrap();
        let served = probe(&controller).await;
        assert!(
            served.iter().all(|fp| fp == &leaf.fingerprint_sha256),
            "serves v1 at start"
        );
        Self {
            node,
            controller,
            ca,
            keys: setup_keys,
            pod,
            first: leaf,
        }
    }

    fn issue(&mut self) -> IssuedLeaf {
        let leaf = self.ca.issue(&LeafSpec::valid_for(NAMES)).unwrap();
        self.keys.push(leaf.key_pem.clone());
        leaf
    }

    async fn verified(&self) -> f64 {
        self.node
            .metric(&format!(
                "mountlag_reloads_total{{namespace=\"{NAMESPACE}\",pod=\"{}\",result=\"verified\"}}",
                self.pod
            ))
            .await
            .unwrap()
            .unwrap_or(0.0)
    }

    /// `mountlag_reloads_total` of the pod by result, the results with a count only.
    async fn reloads(&self) -> std::collections::BTreeMap<String, f64> {
        let (_, body) = self.node.get("/metrics").await.unwrap();
        let prefix = format!(
            "mountlag_reloads_total{{namespace=\"{NAMESPACE}\",pod=\"{}\",result=\"",
            self.pod
        );
        body.lines()
            .filter_map(|l| {
                let (result, value) = l.strip_prefix(&prefix)?.split_once("\"} ")?;
                let value: f64 = value.trim().parse().ok()?;
                (value > 0.0).then(|| (result.to_string(), value))
            })
            .collect()
    }

    async fn wait_verified(&self, count: f64, timeout: Duration) {
        let start = Instant::now();
        while self.verified().await < count {
            assert!(
                start.elapsed() < timeout,
                "reload #{count} not verified within {timeout:?}\n{}",
                self.node.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn assert_no_key_bytes(&self) {
        let logs = self.node.all_agent_logs();
        for key in &self.keys {
            for marker in secret_bytes_markers(key) {
                assert!(!logs.contains(&marker), "key bytes in the agent log");
            }
        }
    }
}

/// The leaf fingerprint served for every name and without SNI.
async fn probe(controller: &RunningController) -> Vec<String> {
    let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    mountlag::effects::probe::probe_all(controller.addr(), &names, Duration::from_secs(2))
        .await
        .into_iter()
        .map(|(target, result)| {
            result
                .unwrap_or_else(|e| panic!("probe {:?}: {e}", target.sni))
                .fingerprint_sha256
        })
        .collect()
}

async fn rotation_is_reloaded_and_verified(kind: ControllerKind) {
    let mut setup = Setup::start(kind).await;
    let v2 = setup.issue();
    let rotated = Instant::now();
    setup
        .node
        .api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v2))
        .unwrap();
    setup.wait_verified(1.0, Duration::from_secs(20)).await;
    let took = rotated.elapsed();
    let served = probe(&setup.controller).await;
    assert_eq!(served.len(), 3, "two names and no SNI");
    assert!(
        served.iter().all(|fp| fp == &v2.fingerprint_sha256),
        "{served:?} != {}",
        v2.fingerprint_sha256
    );
    setup
        .node
        .wait_events("ControllerReloaded", Duration::from_secs(10), |e| {
            !e.is_empty()
        })
        .await
        .unwrap();
    let reloaded = setup.node.events("ControllerReloaded");
    assert_eq!(reloaded[0].type_, "Normal");
    assert!(
        reloaded[0].note.contains(&v2.fingerprint_sha256[..16]),
        "{}",
        reloaded[0].note
    );
    // `/status` follows the metric and the Event (its snapshot is published after them).
    setup
        .node
        .wait_status(Duration::from_secs(10), "v2 reloaded and served", |s| {
            mount_of(s, setup.pod).is_some_and(|m| {
                m["served"]["match"] == true
                    && m["lastReload"] == "verified"
                    && m["certificate"]["fingerprintSha256"] == v2.fingerprint_sha256.as_str()
            })
        })
        .await
        .unwrap();
    eprintln!(
        "{}: Secret updated → new leaf verified in {took:?}",
        kind.name()
    );

    // One reload and one Event per rotation. Quiescence: the next rotation is reloaded,
    // verified and reported, so whatever the agent did about v2 it did before.
    let v3 = setup.issue();
    setup
        .node
        .api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v3))
        .unwrap();
    setup.wait_verified(2.0, Duration::from_secs(20)).await;
    let reloaded = setup
        .node
        .wait_events("ControllerReloaded", Duration::from_secs(10), |e| {
            e.iter()
                .any(|e| e.note.contains(&v3.fingerprint_sha256[..16]))
        })
        .await
        .unwrap();
    assert_eq!(reloaded.len(), 2, "one Event per rotation: {reloaded:?}");
    for (event, leaf) in reloaded.iter().zip([&v2, &v3]) {
        assert!(
            event.note.contains(&leaf.fingerprint_sha256[..16]),
            "{reloaded:?}"
        );
        assert!(event.series_count.is_none(), "no repeat: {reloaded:?}");
    }
    let reloads = setup.reloads().await;
    assert_eq!(
        reloads,
        [("verified".to_string(), 2.0)].into(),
        "{reloads:?}"
    );
    assert_eq!(
        setup.controller.reloads_logged(),
        2,
        "two reload signals reached {}:\n{}",
        kind.name(),
        setup.controller.log()
    );
    setup.assert_no_key_bytes();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_rotation_is_reloaded_and_verified_on_every_name() {
    if can_run(ControllerKind::Nginx) {
        rotation_is_reloaded_and_verified(ControllerKind::Nginx).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_rotation_is_reloaded_and_verified_on_every_name() {
    if can_run(ControllerKind::Haproxy) {
        rotation_is_reloaded_and_verified(ControllerKind::Haproxy).await;
    }
}

/// docs/install.md names the runtimes and cgroup layouts the agent finds controllers in: each
/// one, and a cgroup v1 node, end to end (the agent reading real `/proc/<pid>/cgroup` files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_is_found_and_reloaded_in_every_runtimes_cgroup_layout() {
    if !can_run(ControllerKind::Nginx) {
        return;
    }
    let v1 = real::require("cgroup v1 pids hierarchy", controllers::v1_available());
    let mut cases: Vec<(CgroupLayout, bool)> =
        CgroupLayout::ALL.iter().map(|l| (*l, false)).collect();
    if v1 {
        cases.push((CgroupLayout::ContainerdCgroupfs, true));
        cases.push((CgroupLayout::CrioSystemd, true));
    }
    for (layout, v1_only) in cases {
        let case = format!(
            "{layout:?}{}",
            if v1_only { " (cgroup v1 only)" } else { "" }
        );
        let options = Options {
            layout,
            v1_only,
            ..Options::default()
        };
        let mut setup = Setup::start_with(ControllerKind::Nginx, options).await;
        let line = std::fs::read_to_string(format!("/proc/{}/cgroup", setup.controller.pids()[0]))
            .unwrap();
        let path = layout.path(
            &setup.controller.spec().pod_uid,
            &setup.controller.spec().container_id,
        );
        assert!(
            line.lines()
                .any(|l| l.ends_with(&format!(":{path}")) && (l.starts_with("0::") != v1_only)),
            "{case}: {line}"
        );
        let v2 = setup.issue();
        setup
            .node
            .api
            .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v2))
            .unwrap();
        setup.wait_verified(1.0, Duration::from_secs(20)).await;
        let served = probe(&setup.controller).await;
        assert!(
            served.iter().all(|fp| fp == &v2.fingerprint_sha256),
            "{case}: {served:?}"
        );
        assert!(
            setup.node.events("ControllerProcessNotFound").is_empty(),
            "{case}"
        );
        eprintln!("{case}: found, signalled and verified");
    }
}

/// How a renewal can be broken.
#[derive(Debug, Clone, Copy)]
enum Broken {
    KeyMismatch,
    GarbagePem,
    ExpiredLeaf,
}

async fn broken_material_is_withheld(kind: ControllerKind, how: Broken) {
    let mut setup = Setup::start(kind).await;
    let before = probe(&setup.controller).await;
    let processes_before = setup.controller.pids();
    let good = setup.issue();
    let mut broken = tls_secret(NAMESPACE, "edge-tls", &good);
    let data = broken.data.as_mut().unwrap();
    let code = match how {
        Broken::KeyMismatch => {
            let other = setup.issue();
            data.insert(
                "tls.key".into(),
                k8s_openapi::ByteString(other.key_pem.clone().into_bytes()),
            );
            "keyMismatch"
        }
        Broken::GarbagePem => {
            let garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
            data.insert(
                "tls.crt".into(),
                k8s_openapi::ByteString(garbage.as_bytes().to_vec()),
            );
            "unparsablePem"
        }
        Broken::ExpiredLeaf => {
            let now = time::OffsetDateTime::now_utc();
            let expired = setup
                .ca
                .issue(&LeafSpec::valid_for(NAMES).with_validity(
                    now - time::Duration::days(30),
                    now - time::Duration::days(1),
                ))
                .unwrap();
            setup.keys.push(expired.key_pem.clone());
            broken = tls_secret(NAMESPACE, "edge-tls", &expired);
            "expired"
        }
    };
    setup.node.api.apply_secret(&broken).unwrap();
    let start = Instant::now();
    while setup.node.events("InvalidCertificateMaterial").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no InvalidCertificateMaterial\n{}",
            setup.node.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let event = &setup.node.events("InvalidCertificateMaterial")[0];
    assert_eq!(event.type_, "Warning");
    assert!(event.note.contains(code), "{how:?}: {}", event.note);
    assert_eq!(
        probe(&setup.controller).await,
        before,
        "the old certificate stays served"
    );
    assert_eq!(
        setup.controller.pids(),
        processes_before,
        "no signal: the same master and workers"
    );

    // Quiescence: a good rotation after it is reloaded, verified and reported; the agent
    // handles its inputs in order, so any reload for the broken version came before. Then
    // exactly that one reload reached the controller, and the broken version got none.
    let next = setup.issue();
    setup
        .node
        .api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &next))
        .unwrap();
    setup.wait_verified(1.0, Duration::from_secs(20)).await;
    let reloaded = setup
        .node
        .wait_events("ControllerReloaded", Duration::from_secs(10), |e| {
            !e.is_empty()
        })
        .await
        .unwrap();
    assert_eq!(reloaded.len(), 1, "{reloaded:?}");
    assert!(
        reloaded[0].note.contains(&next.fingerprint_sha256[..16]),
        "only the good version was reloaded: {}",
        reloaded[0].note
    );
    assert!(reloaded[0].series_count.is_none(), "{reloaded:?}");
    let reloads = setup.reloads().await;
    assert_eq!(
        reloads,
        [("verified".to_string(), 1.0), ("withheld".to_string(), 1.0)].into(),
        "{reloads:?}"
    );
    assert_eq!(
        setup.controller.reloads_logged(),
        1,
        "one reload signal reached the controller, for the good version:\n{}",
        setup.controller.log()
    );
    assert_eq!(setup.node.events("InvalidCertificateMaterial").len(), 1);
    setup.assert_no_key_bytes();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_is_not_signalled_for_garbage_pem_or_an_expired_leaf() {
    if can_run(ControllerKind::Nginx) {
        broken_material_is_withheld(ControllerKind::Nginx, Broken::GarbagePem).await;
        broken_material_is_withheld(ControllerKind::Nginx, Broken::ExpiredLeaf).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_ignores_the_signal_is_reported_unverified() {
    if !can_run(ControllerKind::Nginx) {
        return;
    }
    // SIGUSR1 makes nginx reopen its logs: the signal arrives, the certificate stays.
    let reload = "{signal: SIGUSR1, process: \"nginx: master process\"}";
    let options = Options {
        reload: Some(reload),
        ..Options::default()
    };
    let mut setup = Setup::start_with(ControllerKind::Nginx, options).await;
    let before = probe(&setup.controller).await;
    let v2 = setup.issue();
    setup
        .node
        .api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v2))
        .unwrap();
    let start = Instant::now();
    while setup.node.events("ReloadUnverified").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no ReloadUnverified\n{}",
            setup.node.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = &setup.node.events("ReloadUnverified")[0];
    assert_eq!(event.type_, "Warning");
    assert!(
        event.note.contains(&before[0][..16]),
        "names what is served: {}",
        event.note
    );
    assert!(setup.node.events("ControllerReloaded").is_empty());
    let status = setup.node.status().await.unwrap();
    assert_eq!(
        mount_of(&status, setup.pod).unwrap()["served"]["match"],
        false
    );
    // `mountlag status` says a human is needed, although the mount itself is in sync (the
    // status above already showed the mismatch; `lastReload` follows within 100 ms).
    let endpoint = format!("http://{}", setup.node.agent.as_ref().unwrap().listen);
    let out = mountlag_testbed::agent::run(&["status", "--endpoint", &endpoint]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("MISMATCH"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_reloading_profile_with_a_stale_server_is_a_mismatch() {
    if !can_run(ControllerKind::Nginx) {
        return;
    }
    // The envoy profile sends no signal (Envoy SDS watches the files itself); nginx does not.
    let options = Options {
        profile: Some("envoy"),
        ..Options::default()
    };
    let mut setup = Setup::start_with(ControllerKind::Nginx, options).await;
    let processes_before = setup.controller.pids();
    let v2 = setup.issue();
    setup
        .node
        .api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v2))
        .unwrap();
    let start = Instant::now();
    while setup.node.events("ServedCertificateMismatch").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no ServedCertificateMismatch\n{}",
            setup.node.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        setup.controller.pids(),
        processes_before,
        "nothing was signalled"
    );
    assert!(setup.node.events("ControllerReloaded").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_with_the_same_title_in_another_cgroup_is_never_signalled() {
    if !can_run(ControllerKind::Nginx) {
        return;
    }
    let mut setup = Setup::start(ControllerKind::Nginx).await;
    // A decoy nginx reading the same files, in another pod's cgroup: a signal to it would show
    // as new workers and a new leaf on its port.
    let uid = setup
        .node
        .api
        .pod(NAMESPACE, setup.pod)
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let volume = setup
        .node
        .kubelet
        .volume_dir(&uid, VolumeKind::Secret, "tls");
    let names = NAMES.iter().map(|n| n.to_string()).collect();
    let decoy = RunningController::start(ControllerSpec::new(
        ControllerKind::Nginx,
        "00000000-0000-4000-8000-00000000dec0",
        &volume,
        names,
    ))
    .unwrap();
    let decoy_before = (decoy.pids(), probe(&decoy).await);
    let v2 = setup.issue();
    setup
        .node
        .api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v2))
        .unwrap();
    setup.wait_verified(1.0, Duration::from_secs(20)).await;
    // Verified: the reload's signal has been sent. Quiescence on the decoy's side: a SIGUSR1
    // (reopen the logs) sent now is logged after any SIGHUP sent before it (pending signals
    // are delivered lowest number first, nginx logs each as its handler runs).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(decoy.master_pid()),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let marked = Instant::now();
    while !decoy.log().contains("(SIGUSR1) received") {
        assert!(
            marked.elapsed() < Duration::from_secs(10),
            "the decoy never logged the marker SIGUSR1:\n{}",
            decoy.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(decoy.reloads_logged(), 0, "{}", decoy.log());
    assert_eq!(
        (decoy.pids(), probe(&decoy).await),
        decoy_before,
        "the decoy was left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_keeps_serving_when_the_new_key_does_not_match() {
    if can_run(ControllerKind::Nginx) {
        broken_material_is_withheld(ControllerKind::Nginx, Broken::KeyMismatch).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_keeps_serving_when_the_new_key_does_not_match() {
    if can_run(ControllerKind::Haproxy) {
        broken_material_is_withheld(ControllerKind::Haproxy, Broken::KeyMismatch).await;
    }
}

async fn hundred_rotations_under_load(kind: ControllerKind) {
    let mut setup = Setup::start(kind).await;
    let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    let load = LoadGenerator::start(setup.controller.addr(), &names, 4).unwrap();
    let mut expected = Vec::new();
    for round in 1..=100u32 {
        let leaf = setup.issue();
        setup
            .node
            .api
            .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &leaf))
            .unwrap();
        setup
            .wait_verified(f64::from(round), Duration::from_secs(30))
            .await;
        expected.push(leaf.fingerprint_sha256);
    }
    let report = load.stop();
    eprintln!(
        "{}: 100 rotations under load: {} requests, {} failed",
        kind.name(),
        report.requests,
        report.failures
    );
    assert!(report.requests > 100, "the load ran: {report:?}");
    assert_eq!(
        report.failures, 0,
        "failed requests: {:?}",
        report.failure_samples
    );
    // nginx's old workers may still answer for ~100 ms after a verified reload (they drain):
    // the final state is what matters here.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut served = probe(&setup.controller).await;
    while !served.iter().all(|fp| Some(fp) == expected.last()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        served = probe(&setup.controller).await;
    }
    assert!(
        served.iter().all(|fp| Some(fp) == expected.last()),
        "{served:?}"
    );
    let unverified = setup.node.events("ReloadUnverified");
    assert!(
        unverified.is_empty(),
        "{unverified:?}\n{}",
        setup.node.agent_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_hundred_rotations_under_tls_load_fail_no_request() {
    if can_run(ControllerKind::Nginx) {
        hundred_rotations_under_load(ControllerKind::Nginx).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_hundred_rotations_under_tls_load_fail_no_request() {
    if can_run(ControllerKind::Haproxy) {
        hundred_rotations_under_load(ControllerKind::Haproxy).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_lost_to_an_agent_restart_is_done_once_when_the_agent_is_back() {
    if !can_run(ControllerKind::Nginx) {
        return;
    }
    let options = Options {
        verify_interval: Some("1s"),
        ..Options::default()
    };
    let mut setup = Setup::start_with(ControllerKind::Nginx, options).await;
    // Killed (SIGKILL) after the `..data` swap and before the reload: the swap happens while
    // the agent is down, so nothing ever signals nginx for it.
    setup.node.kill_agent().unwrap();
    let v2 = setup.issue();
    setup
        .node
        .api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v2))
        .unwrap();
    let before = setup.node.node.last_seq();
    assert!(setup.node.node.sync_now(NAMESPACE, setup.pod));
    setup
        .node
        .node
        .wait_for(before, Duration::from_secs(10), |e| {
            e.pod == setup.pod && matches!(e.outcome, SyncOutcome::Written { .. })
        })
        .await
        .expect("kubelet wrote the new generation");
    let served = probe(&setup.controller).await;
    assert!(
        served
            .iter()
            .all(|fp| fp == &setup.first.fingerprint_sha256),
        "nginx still serves v1: nothing reloaded it"
    );
    setup.node.start_agent().unwrap();
    setup
        .node
        .wait_ready(Duration::from_secs(10))
        .await
        .unwrap();
    setup.wait_verified(1.0, Duration::from_secs(20)).await;
    let served = probe(&setup.controller).await;
    assert!(
        served.iter().all(|fp| fp == &v2.fingerprint_sha256),
        "{served:?} != {}",
        v2.fingerprint_sha256
    );
    // Exactly one reload: periodic checks go on (every second here) and find nothing to do.
    let after = setup.node.handshakes().await;
    let start = Instant::now();
    while setup.node.handshakes().await < after + 9.0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "three more check rounds did not happen\n{}",
            setup.node.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reloaded = setup.node.events("ControllerReloaded");
    assert_eq!(reloaded.len(), 1, "{reloaded:?}");
    assert!(
        reloaded[0].note.contains(&v2.fingerprint_sha256[..16]),
        "{}",
        reloaded[0].note
    );
    for result in ["verified", "unverified", "failed"] {
        let count = setup
            .node
            .metric(&format!(
                "mountlag_reloads_total{{namespace=\"{NAMESPACE}\",pod=\"{}\",result=\"{result}\"}}",
                setup.pod
            ))
            .await
            .unwrap()
            .unwrap_or(0.0);
        let want = if result == "verified" { 1.0 } else { 0.0 };
        assert_eq!(count, want, "reloads with result {result}");
    }
    setup.assert_no_key_bytes();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_near_expiry_that_never_rotates_is_warned_with_its_three_views() {
    if !can_run(ControllerKind::Nginx)
        || !real::require("promtool (Debian package prometheus)", real::promtool())
    {
        return;
    }
    let mut spec = LeafSpec::valid_for(NAMES);
    spec.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(10);
    let not_after = spec.not_after.unix_timestamp() as f64;
    let options = Options {
        verify_interval: Some("2s"),
        first_leaf: Some(spec),
        ..Options::default()
    };
    let setup = Setup::start_with(ControllerKind::Nginx, options).await;
    let warned = setup
        .node
        .wait_events("CertificateExpiringSoon", Duration::from_secs(10), |e| {
            !e.is_empty()
        })
        .await
        .unwrap();
    let note = &warned[0].note;
    assert_eq!(warned[0].type_, "Warning");
    assert!(
        note.contains(&setup.first.fingerprint_sha256[..16])
            && (note.contains("expires in 9 day(s)") || note.contains("expires in 10 day(s)"))
            && note.contains("no renewal exists"),
        "{note}"
    );
    for source in ["api", "disk", "served"] {
        let sample = format!(
            "mountlag_certificate_not_after_timestamp_seconds{{namespace=\"{NAMESPACE}\",secret=\"edge-tls\",source=\"{source}\"}}"
        );
        assert_eq!(
            setup.node.metric(&sample).await.unwrap(),
            Some(not_after),
            "{sample}"
        );
    }
    let (_, scrape) = setup.node.get("/metrics").await.unwrap();
    if let Err(findings) = real::promtool_check_metrics(&scrape) {
        panic!("{findings}");
    }
    // Expiring is a state that needs attention: `mountlag status` exits 1.
    let endpoint = format!("http://{}", setup.node.agent.as_ref().unwrap().listen);
    let out = mountlag_testbed::agent::run(&["status", "--endpoint", &endpoint]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    setup.assert_no_key_bytes();
}

/// Where in a rotation the agent is killed (SIGKILL) in [`killed_at_every_step_of_a_rotation`].
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// Right after the Secret changed in the API.
    AfterApiChange,
    /// Once its nudge (the pod annotation) is in the API.
    AfterNudge,
    /// Once kubelet has swapped `..data`.
    AfterSwap,
    /// Once the agent has logged the reload (the signal is on its way or delivered).
    AfterSignal,
    /// Once the controller serves the new leaf, before the agent has confirmed it.
    DuringVerification,
}

fn resync_annotation(setup: &Setup) -> Option<String> {
    setup
        .node
        .api
        .pod(NAMESPACE, setup.pod)?
        .metadata
        .annotations?
        .get("mountlag.io/resync")
        .cloned()
}

async fn wait_until(what: &str, setup: &Setup, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 30 s\n{}",
            setup.node.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// SIGKILL at each step of a rotation, then a restart: every time the new leaf ends up served
/// on every name and verified, the controller reloads at most once per version, and no
/// Warning Event is raised (no stuck mount, no unverified reload, no duplicate).
async fn killed_at_every_step_of_a_rotation(kind: ControllerKind) {
    let options = Options {
        verify_interval: Some("2s"),
        ..Options::default()
    };
    let mut setup = Setup::start_with(kind, options).await;
    let reloads_at_start = setup.controller.reloads_logged();
    let points = [
        KillPoint::AfterApiChange,
        KillPoint::AfterNudge,
        KillPoint::AfterSwap,
        KillPoint::AfterSignal,
        KillPoint::DuringVerification,
    ];
    for (version, point) in points.into_iter().enumerate() {
        let leaf = setup.issue();
        let nudged_before = resync_annotation(&setup);
        let logged_before = setup
            .node
            .agent_log()
            .matches("reloading controller")
            .count();
        let swaps_before = setup.node.node.last_seq();
        setup
            .node
            .api
            .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &leaf))
            .unwrap();
        match point {
            KillPoint::AfterApiChange => {}
            KillPoint::AfterNudge => {
                wait_until("nudged", &setup, async || {
                    resync_annotation(&setup) != nudged_before
                })
                .await;
            }
            KillPoint::AfterSwap => {
                setup
                    .node
                    .node
                    .wait_for(swaps_before, Duration::from_secs(30), |e| {
                        e.pod == setup.pod && matches!(e.outcome, SyncOutcome::Written { .. })
                    })
                    .await
                    .expect("kubelet swapped the new generation in");
            }
            KillPoint::AfterSignal => {
                wait_until("reload logged", &setup, async || {
                    setup
                        .node
                        .agent_log()
                        .matches("reloading controller")
                        .count()
                        > logged_before
                })
                .await;
            }
            KillPoint::DuringVerification => {
                wait_until("new leaf served", &setup, async || {
                    probe(&setup.controller)
                        .await
                        .iter()
                        .all(|fp| fp == &leaf.fingerprint_sha256)
                })
                .await;
            }
        }
        setup.node.kill_agent().unwrap();
        setup.node.start_agent().unwrap();
        setup
            .node
            .wait_ready(Duration::from_secs(30))
            .await
            .unwrap();
        wait_until(&format!("{point:?}: new leaf served"), &setup, async || {
            probe(&setup.controller)
                .await
                .iter()
                .all(|fp| fp == &leaf.fingerprint_sha256)
        })
        .await;
        // Verified by the agent: its /status shows the new leaf served and matching.
        setup
            .node
            .wait_status(
                Duration::from_secs(30),
                &format!("{point:?}: served leaf verified"),
                |s| {
                    mount_of(s, setup.pod).is_some_and(|m| {
                        m["state"] == "in_sync"
                            && m["served"]["fingerprintSha256"] == leaf.fingerprint_sha256.as_str()
                            && m["served"]["match"] == true
                    })
                },
            )
            .await
            .unwrap();
        let reloads = setup.controller.reloads_logged() - reloads_at_start;
        assert!(
            reloads <= version + 1,
            "{point:?}: {reloads} reloads for {} versions\n{}\n--- agent ---\n{}",
            version + 1,
            setup.controller.log(),
            setup.node.all_agent_logs()
        );
    }
    // Two periodic checks after the last restart find nothing more to reload.
    let after = setup.node.handshakes().await;
    wait_until("two more check rounds", &setup, async || {
        setup.node.handshakes().await >= after + 6.0
    })
    .await;
    let reloads = setup.controller.reloads_logged() - reloads_at_start;
    eprintln!(
        "{}: {} kill points, {} versions, {reloads} reloads logged by the controller",
        kind.name(),
        points.len(),
        points.len()
    );
    assert!(
        reloads <= points.len(),
        "{reloads} reloads for {} versions",
        points.len()
    );
    let warnings = setup.node.warnings();
    assert!(warnings.is_empty(), "Warning Events: {warnings:#?}");
    setup.assert_no_key_bytes();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_killed_at_every_step_of_a_rotation_ends_served_verified_and_reloaded_once_per_version()
 {
    if can_run(ControllerKind::Nginx) {
        killed_at_every_step_of_a_rotation(ControllerKind::Nginx).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_killed_at_every_step_of_a_rotation_ends_served_verified_and_reloaded_once_per_version()
 {
    if can_run(ControllerKind::Haproxy) {
        killed_at_every_step_of_a_rotation(ControllerKind::Haproxy).await;
    }
}
