//! A Go program is signalled only when it is proven to handle the signal.
//!
//! The Go runtime installs a handler for every signal, so `/proc/<pid>/status` shows SIGHUP as
//! caught, yet a Go program that did not ask for SIGHUP exits on it. These tests build small
//! Go TLS servers with Debian's `go`, run them as a pod's container process (kubelet-shaped
//! cgroup, process title chosen to match each built-in profile) and drive the real agent:
//!
//! - a Go program that does not handle SIGHUP survives a rotation under every built-in signal
//!   profile (nginx, haproxy, traefik), and the withheld signal is reported (Event
//!   `ReloadSignalWithheld`, `/status` `lastReload: signal_withheld` with the reason);
//! - a Go program whose module path is `github.com/traefik/traefik/v3`, started with
//!   `--providers.file.directory=`, re-reads its certificate on SIGHUP: under `profile: traefik`
//!   it is signalled and the reload is verified;
//! - the same program built as `github.com/traefik/traefik/v2` is not signalled; with
//!   `reload.fallback: restart` its Deployment gets a rolling restart instead.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use mountlag_testbed::certs::{IssuedLeaf, LeafSpec, TestCa, secret_bytes_markers};
use mountlag_testbed::cluster::{
    NAMESPACE, TestNode, controller_pod, free_port, mount_of, tls_secret,
};
use mountlag_testbed::controllers::{self, ContainerProcess, ControllerKind};
use mountlag_testbed::goprog;
use mountlag_testbed::kubelet::VolumeKind;
use mountlag_testbed::node::{NodeConfig, container_id};
use mountlag_testbed::real;
use mountlag_testbed::rollout::{Rollouts, WorkloadRef};

const NAMES: [&str; 1] = ["edge.example.com"];
const POD: &str = "edge-0";
const TRAEFIK_V3: &str = "github.com/traefik/traefik/v3";
const TRAEFIK_V2: &str = "github.com/traefik/traefik/v2";

fn can_run() -> bool {
    // nginx's check covers root and a writable cgroup v2 hierarchy; nginx itself is not run.
    real::require("root + tmpfs", real::can_mount())
        && real::require(
            "root + writable cgroup v2",
            controllers::available(ControllerKind::Nginx),
        )
        && real::require("go (Debian package golang-go)", goprog::available())
}

fn go_binary(module: &str) -> PathBuf {
    goprog::build(
        &PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        module,
        goprog::TLS_SERVER,
    )
    .unwrap()
}

struct Setup {
    node: TestNode,
    process: ContainerProcess,
    ca: TestCa,
    keys: Vec<String>,
    port: u16,
    v1: IssuedLeaf,
}

impl Setup {
    /// A node whose one controller pod (profile `profile`, container `container`) runs the Go
    /// program `binary` titled `title`, with `flag` naming the certificate directory.
    async fn start(profile: &str, container: &str, binary: &Path, title: &str, flag: &str) -> Self {
        let port = free_port().unwrap();
        let config = format!(
            "stuckAfter: 30s\nnudge:\n  after: 100ms\nreload:\n  minInterval: 0s\nverify:\n  timeout: 3s\n\
             controllers:\n  - name: edge\n    profile: {profile}\n    selector: app=edge\n    probe:\n      ports: [{port}]\n"
        );
        let mut node = TestNode::start(NodeConfig::new(mountlag_testbed::cluster::NODE), &config)
            .await
            .unwrap();
        let ca = TestCa::new("go signal test CA").unwrap();
        let v1 = ca.issue(&LeafSpec::valid_for(NAMES)).unwrap();
        node.api
            .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v1))
            .unwrap();
        node.create_pod_and_wait_started(&controller_pod(
            POD,
            container,
            &[("app", "edge")],
            "edge-tls",
            None,
        ))
        .await
        .unwrap();
        let uid = node.api.pod(NAMESPACE, POD).unwrap().metadata.uid.unwrap();
        let volume = node.kubelet.volume_dir(&uid, VolumeKind::Secret, "tls");
        let process = ContainerProcess::start(
            &uid,
            &container_id(&uid, container),
            binary,
            title,
            &[
                format!("{flag}={}", volume.display()),
                format!("--addr=127.0.0.1:{port}"),
            ],
            &[],
        )
        .unwrap();
        node.start_agent().unwrap();
        node.wait_ready(Duration::from_secs(10)).await.unwrap();
        node.wait_status(Duration::from_secs(10), "in sync", |s| {
            mount_of(s, POD).is_some_and(|m| m["state"] == "in_sync")
        })
        .await
        .unwrap();
        let keys = vec![v1.key_pem.clone()];
        let setup = Self {
            node,
            process,
            ca,
            keys,
            port,
            v1,
        };
        assert_eq!(
            setup.served().await,
            setup.v1.fingerprint_sha256,
            "serves v1"
        );
        setup
    }

    async fn served(&self) -> String {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
        let results =
            mountlag::effects::probe::probe_all(addr, &names, Duration::from_secs(2)).await;
        let mut fingerprints: Vec<String> = results
            .into_iter()
            .map(|(target, r)| {
                r.unwrap_or_else(|e| panic!("probe {:?}: {e}", target.sni))
                    .fingerprint_sha256
            })
            .collect();
        fingerprints.dedup();
        assert_eq!(fingerprints.len(), 1, "{fingerprints:?}");
        fingerprints.remove(0)
    }

    fn rotate(&mut self) -> IssuedLeaf {
        let v2 = self.ca.issue(&LeafSpec::valid_for(NAMES)).unwrap();
        self.keys.push(v2.key_pem.clone());
        self.node
            .api
            .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v2))
            .unwrap();
        v2
    }

    /// The rotation is withheld, reported, and the program is left alone (still running, still
    /// serving the old leaf). `why` is a piece of the reason the agent must give.
    async fn assert_withheld(&mut self, why: &str) {
        let events = self
            .node
            .wait_events("ReloadSignalWithheld", Duration::from_secs(20), |e| {
                !e.is_empty()
            })
            .await
            .unwrap();
        assert_eq!(events[0].type_, "Warning");
        assert!(events[0].note.contains(why), "{}", events[0].note);
        let status = self
            .node
            .wait_status(Duration::from_secs(10), "signal_withheld in /status", |s| {
                mount_of(s, POD).is_some_and(|m| m["lastReload"] == "signal_withheld")
            })
            .await
            .unwrap();
        let message = mount_of(&status, POD).unwrap()["lastReloadMessage"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(why), "{message}");
        // The verification that follows a withheld signal ends in a mismatch (the program took
        // no new certificate), without any retry that could signal it after all.
        self.node
            .wait_events("ServedCertificateMismatch", Duration::from_secs(20), |e| {
                !e.is_empty()
            })
            .await
            .unwrap();
        assert!(
            self.process.alive(),
            "the program was killed ({:?}); its log:\n{}\nagent:\n{}",
            self.process.exit_status(),
            self.process.log(),
            self.node.agent_log()
        );
        assert_eq!(self.served().await, self.v1.fingerprint_sha256, "old leaf");
        assert!(!self.process.log().contains("reloaded"));
        assert!(self.node.events("ControllerReloaded").is_empty());
        let withheld = self
            .node
            .metric(&format!(
                "mountlag_reloads_total{{namespace=\"{NAMESPACE}\",pod=\"{POD}\",result=\"signal_withheld\"}}"
            ))
            .await
            .unwrap();
        assert_eq!(withheld, Some(1.0));
        // mountlag status (the CLI) prints the reason.
        let out = mountlag_testbed::agent::run(&[
            "status",
            "--endpoint",
            &format!("http://{}", self.node.agent.as_ref().unwrap().listen),
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("{NAMESPACE}/{POD}: reload signal_withheld: "))
                && text.contains(why),
            "{text}"
        );
        self.assert_no_key_bytes();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_program_that_does_not_handle_sighup_survives_every_builtin_signal_profile() {
    if !can_run() {
        return;
    }
    // Built as Traefik v3 (the strictest case for the traefik profile: only the missing file
    // provider stops the signal), started without a --providers.file flag: it never asks for
    // SIGHUP, so one would kill it.
    let binary = go_binary(TRAEFIK_V3);
    let cases = [
        ("nginx", "nginx", "nginx: master process", "is a Go program"),
        ("haproxy", "haproxy", "haproxy", "is a Go program"),
        ("traefik", "traefik", "traefik", "without the file provider"),
    ];
    for (profile, container, title, why) in cases {
        let mut setup = Setup::start(profile, container, &binary, title, "--certdir").await;
        setup.rotate();
        setup.assert_withheld(why).await;
        eprintln!("{profile}: signal withheld, program alive");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_v3_with_the_file_provider_is_signalled_and_verified() {
    if !can_run() {
        return;
    }
    let binary = go_binary(TRAEFIK_V3);
    let info = goprog::version_m(&PathBuf::from(env!("CARGO_TARGET_TMPDIR")), &binary).unwrap();
    assert!(info.contains(&format!("mod\t{TRAEFIK_V3}")), "{info}");
    let mut setup = Setup::start(
        "traefik",
        "traefik",
        &binary,
        "traefik",
        "--providers.file.directory",
    )
    .await;
    let v2 = setup.rotate();
    let events = setup
        .node
        .wait_events("ControllerReloaded", Duration::from_secs(20), |e| {
            !e.is_empty()
        })
        .await
        .unwrap();
    assert!(
        events[0].note.contains(&v2.fingerprint_sha256[..16]),
        "{}",
        events[0].note
    );
    assert_eq!(setup.served().await, v2.fingerprint_sha256);
    assert!(setup.process.alive(), "{}", setup.process.log());
    assert!(setup.process.log().contains("reloaded"));
    assert!(setup.node.events("ReloadSignalWithheld").is_empty());
    setup
        .node
        .wait_status(Duration::from_secs(10), "verified in /status", |s| {
            mount_of(s, POD).is_some_and(|m| m["lastReload"] == "verified")
        })
        .await
        .unwrap();
    assert!(
        setup
            .node
            .agent_log()
            .contains("with the file provider on (flag --providers.file.directory)"),
        "the proof is logged:\n{}",
        setup.node.agent_log()
    );
    setup.assert_no_key_bytes();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_v2_is_not_signalled_even_with_the_file_provider() {
    if !can_run() {
        return;
    }
    let binary = go_binary(TRAEFIK_V2);
    let mut setup = Setup::start(
        "traefik",
        "traefik",
        &binary,
        "traefik",
        "--providers.file.directory",
    )
    .await;
    setup.rotate();
    setup.assert_withheld("not Traefik v3").await;
}

/// `profile: traefik` with `reload.fallback: restart`: a Traefik v2 (which exits on SIGHUP and
/// never reloads a mounted certificate) is not signalled; its Deployment gets a rolling restart
/// instead, and the program is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_v2_with_a_restart_fallback_gets_a_rolling_restart_and_no_signal() {
    if !can_run() {
        return;
    }
    let binary = go_binary(TRAEFIK_V2);
    let port = free_port().unwrap();
    let config = format!(
        "nudge:\n  after: 100ms\nreload:\n  minInterval: 0s\n\
         controllers:\n  - name: edge\n    profile: traefik\n    reload:\n      fallback: restart\n    \
         selector: app=edge\n    probe:\n      ports: [{port}]\n"
    );
    let mut node = TestNode::start(NodeConfig::new(mountlag_testbed::cluster::NODE), &config)
        .await
        .unwrap();
    let rollouts = Rollouts::start(node.api.clone());
    let ca = TestCa::new("go fallback test CA").unwrap();
    let v1 = ca.issue(&LeafSpec::valid_for(NAMES)).unwrap();
    node.api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v1))
        .unwrap();
    let template = serde_json::json!({
        "metadata": {"labels": {"app": "edge"}},
        "spec": {
            "containers": [{"name": "traefik", "image": "traefik:v2",
                            "volumeMounts": [{"name": "tls", "mountPath": "/certs", "readOnly": true}]}],
            "volumes": [{"name": "tls", "secret": {"secretName": "edge-tls"}}],
        },
    });
    let deployment = WorkloadRef::deployment(NAMESPACE, "traefik");
    let created = rollouts
        .create_deployment(
            NAMESPACE,
            "traefik",
            &template,
            &[mountlag_testbed::cluster::NODE],
        )
        .unwrap();
    let pod = created.pods[0].metadata.name.clone().unwrap();
    let uid = created.pods[0].metadata.uid.clone().unwrap();
    let volume = node.kubelet.volume_dir(&uid, VolumeKind::Secret, "tls");
    let start = std::time::Instant::now();
    while !volume.join("tls.crt").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the pod never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut process = ContainerProcess::start(
        &uid,
        &container_id(&uid, "traefik"),
        &binary,
        "traefik",
        &[
            format!("--providers.file.directory={}", volume.display()),
            format!("--addr=127.0.0.1:{port}"),
        ],
        &[],
    )
    .unwrap();
    node.start_agent().unwrap();
    node.wait_status(Duration::from_secs(20), "in sync", |s| {
        mount_of(s, &pod).is_some_and(|m| m["state"] == "in_sync")
    })
    .await
    .unwrap();

    let v2 = ca.issue(&LeafSpec::valid_for(NAMES)).unwrap();
    node.api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v2))
        .unwrap();
    let events = node
        .wait_events("RollingRestartRequested", Duration::from_secs(20), |e| {
            !e.is_empty()
        })
        .await
        .unwrap();
    assert_eq!(events[0].regarding.kind, "Deployment");
    assert_eq!(events[0].regarding.name, "traefik");
    rollouts
        .wait_completed(&deployment, 1, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(rollouts.started(&deployment), 1);
    assert!(
        node.agent_log()
            .contains("signal withheld: falling back to a rolling restart"),
        "{}",
        node.agent_log()
    );
    // Never signalled: alive, nothing reloaded, no ReloadSignalWithheld (the fallback acted).
    assert!(process.alive(), "{}", process.log());
    assert!(!process.log().contains("reloaded"));
    assert!(node.events("ReloadSignalWithheld").is_empty());
    for marker in secret_bytes_markers(&v2.key_pem) {
        assert!(!node.all_agent_logs().contains(&marker));
    }
}
