//! No key bytes in any output, on the paths where leaks hide: the real agent fed broken material
//! (a key that does not match, a garbage `tls.key` holding fragments of a real key, key and
//! certificate in each other's field), an API outage while a rotation is pending, and reloads
//! that fail (no controller process, an HTTP reload target that refuses). Every output the agent
//! makes is collected (its log, every Event with its note as stored, the Pods it annotated,
//! `/status`, `/metrics`, `/livez`, `/readyz`, `mountlag status`, `mountlag inspect` of the
//! broken volumes, error messages) and scanned with one [`SecretLeakScanner`] that knows every
//! encoding of every key and Secret of the scenario. Each scenario also asserts that it reached
//! its error path, so it cannot pass by doing nothing.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use mountlag_testbed::certs::{IssuedLeaf, LeafSpec, SecretLeakScanner, TestCa};
use mountlag_testbed::cluster::{
    NAMESPACE, NODE, TestNode, controller_pod, free_port, ingress_pod, metric_value, mount_of,
    tls_secret,
};
use mountlag_testbed::controllers::{self, ControllerKind, ControllerSpec, RunningController};
use mountlag_testbed::kubelet::VolumeKind;
use mountlag_testbed::node::{NodeConfig, SyncOutcome};
use mountlag_testbed::real;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const NAMES: [&str; 2] = ["edge.example.com", "www.example.com"];
const POD: &str = "edge-0";
const NO_LABELS: [&str; 0] = [];
/// Generous: CI machines are loaded.
const WAIT: Duration = Duration::from_secs(30);

fn can_run_nginx() -> bool {
    real::require("root + tmpfs", real::can_mount())
        && real::require("nginx", controllers::available(ControllerKind::Nginx))
}

/// kubelet at its real 60–90 s period: the agent's nudge (or `sync_now`) brings rotations in.
fn agent_config(controllers: &str) -> String {
    format!(
        "stuckAfter: 30s\nnudge:\n  after: 100ms\nreload:\n  minInterval: 0s\nverify:\n  timeout: 6s\n\
         controllers:\n{controllers}"
    )
}

/// The test CA, every key and Secret the scenario made (broken ones included) in one scanner,
/// and every output collected.
struct Leaks {
    ca: TestCa,
    scanner: SecretLeakScanner,
    outputs: Vec<(String, String)>,
}

impl Leaks {
    fn new() -> Self {
        Self {
            ca: TestCa::new("leaks test CA").unwrap(),
            scanner: SecretLeakScanner::new(),
            outputs: Vec::new(),
        }
    }

    fn issue(&mut self, what: &str) -> IssuedLeaf {
        let leaf = self.ca.issue(&LeafSpec::valid_for(NAMES)).unwrap();
        self.scanner
            .add_key_pem(&format!("key of {what}"), &leaf.key_pem);
        leaf
    }

    /// Applies `secret` (in-process: works while the API's listener is down) and scans for
    /// every value of it.
    fn apply(&mut self, node: &TestNode, what: &str, secret: &Secret) {
        self.scanner.add_secret(&format!("Secret {what}"), secret);
        node.api.apply_secret(secret).unwrap();
    }

    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.outputs.push((what.into(), text.into()));
    }

    /// The health endpoint's every path and `mountlag status` (table and JSON).
    async fn endpoints(&mut self, node: &TestNode, when: &str) {
        for path in ["/livez", "/readyz", "/metrics", "/status", "/", "/healthz"] {
            match node.get(path).await {
                Ok((code, body)) => self.add(format!("{when}: GET {path} ({code})"), body),
                Err(e) => self.add(format!("{when}: GET {path} (error)"), format!("{e:#}")),
            }
        }
        let endpoint = format!("http://{}", node.agent.as_ref().unwrap().listen);
        for args in [
            vec!["status", "--endpoint", &endpoint],
            vec!["status", "--endpoint", &endpoint, "--json"],
        ] {
            self.run(&format!("{when}: mountlag {}", args.join(" ")), &args);
        }
    }

    /// Runs `mountlag ARGS` (with `RUST_LOG=debug`); keeps stdout and stderr. (exit code,
    /// stdout)
    fn run(&mut self, what: &str, args: &[&str]) -> (i32, String) {
        let out = mountlag_testbed::agent::run(args);
        let code = out.status.code().unwrap_or(-1);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        self.add(format!("{what} (exit {code}) stdout"), stdout.clone());
        self.add(
            format!("{what} (exit {code}) stderr"),
            String::from_utf8_lossy(&out.stderr),
        );
        (code, stdout)
    }

    /// `mountlag inspect` (text and JSON) of `volume`: (exit code, text output).
    fn inspect(&mut self, volume: &Path, when: &str) -> (i32, String) {
        let shown = volume.to_str().unwrap();
        let text = self.run(&format!("{when}: mountlag inspect"), &["inspect", shown]);
        let (json, _) = self.run(
            &format!("{when}: mountlag inspect --json"),
            &["inspect", "--json", shown],
        );
        assert_eq!(text.0, json, "text and JSON inspect exit alike");
        text
    }

    /// Every Event (as the test reads it and as stored, both APIs, notes included), the Pods
    /// the agent annotated and every agent log so far.
    fn api_and_logs(&mut self, node: &TestNode, when: &str) {
        for event in node.api.events() {
            self.add(
                format!("{when}: Event {} {}", event.reason, event.name),
                format!("{event:?}\nnote: {}", event.note),
            );
        }
        for (api_version, kind) in [
            ("events.k8s.io/v1", "Event"),
            ("v1", "Event"),
            ("v1", "Pod"),
        ] {
            self.add(
                format!("{when}: {kind} objects ({api_version})"),
                serde_json::to_string_pretty(&node.api.objects(api_version, kind)).unwrap(),
            );
        }
        self.add(format!("{when}: agent log"), node.all_agent_logs());
    }

    /// Scans everything collected for every key and Secret of the scenario.
    fn assert_no_key_bytes(&self) {
        assert!(self.scanner.needle_count() > 0);
        for (what, text) in &self.outputs {
            if what.ends_with("agent log") || what.contains("Event") {
                assert!(!text.is_empty(), "{what} is empty");
            }
        }
        self.scanner.assert_all_clean(&self.outputs);
        eprintln!(
            "scanned {} outputs ({} bytes) for {} secrets ({} needles): clean",
            self.outputs.len(),
            self.outputs.iter().map(|(_, t)| t.len()).sum::<usize>(),
            self.scanner.secrets().len(),
            self.scanner.needle_count()
        );
    }
}

/// Sum of every sample of `name` whose labels contain each of `labels`.
fn metric_sum<L: AsRef<str>>(scrape: &str, name: &str, labels: &[L]) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|label| l.contains(label.as_ref())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(node: &TestNode) -> String {
    node.get("/metrics")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// Waits until the sum of `name{labels...}` reaches `at_least`; returns it.
async fn wait_metric<L: AsRef<str> + std::fmt::Debug>(
    node: &TestNode,
    name: &str,
    labels: &[L],
    at_least: f64,
) -> f64 {
    let start = Instant::now();
    loop {
        let value = metric_sum(&scrape(node).await, name, labels);
        if value >= at_least {
            return value;
        }
        assert!(
            start.elapsed() < WAIT,
            "{name}{labels:?} = {value}, not {at_least} within {WAIT:?}\n{}",
            node.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `count` Events with `reason` exist; returns them.
async fn wait_events(
    node: &TestNode,
    reason: &str,
    count: usize,
) -> Vec<mountlag_testbed::apiserver::RecordedEvent> {
    node.wait_events(reason, WAIT, |e| e.len() >= count)
        .await
        .unwrap()
}

fn reloads(pod: &str, result: &str) -> [String; 2] {
    [format!("pod=\"{pod}\""), format!("result=\"{result}\"")]
}

/// A node with nginx serving Secret `edge-tls` (leaf `v1`) in pod [`POD`], the agent in sync.
async fn nginx_node(leaks: &mut Leaks) -> (TestNode, RunningController, PathBuf) {
    let port = free_port().unwrap();
    let config = agent_config(&format!(
        "  - name: edge\n    profile: nginx\n    selector: app=edge\n    probe:\n      ports: [{port}]\n"
    ));
    let mut node = TestNode::start(NodeConfig::new(NODE), &config)
        .await
        .unwrap();
    let v1 = leaks.issue("v1");
    leaks.apply(&node, "v1", &tls_secret(NAMESPACE, "edge-tls", &v1));
    let before = node.node.last_seq();
    node.api
        .create_pod(&controller_pod(
            POD,
            "nginx",
            &[("app", "edge")],
            "edge-tls",
            None,
        ))
        .unwrap();
    node.node
        .wait_for(before, WAIT, |e| {
            e.pod == POD && e.outcome == SyncOutcome::Started
        })
        .await
        .expect("kubelet started the pod");
    let uid = node.api.pod(NAMESPACE, POD).unwrap().metadata.uid.unwrap();
    let volume = node.kubelet.volume_dir(&uid, VolumeKind::Secret, "tls");
    let names = NAMES.iter().map(|n| n.to_string()).collect();
    let controller = RunningController::start(
        ControllerSpec::new(ControllerKind::Nginx, &uid, &volume, names).with_port(port),
    )
    .unwrap();
    node.start_agent().unwrap();
    node.wait_ready(WAIT).await.unwrap();
    node.wait_status(WAIT, "in sync", |s| {
        mount_of(s, POD).is_some_and(|m| m["state"] == "in_sync")
    })
    .await
    .unwrap();
    assert_eq!(served(&controller).await, v1.fingerprint_sha256);
    (node, controller, volume)
}

/// The leaf nginx serves for every name and without SNI (all the same).
async fn served(controller: &RunningController) -> String {
    let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    let all: Vec<String> =
        mountlag::effects::probe::probe_all(controller.addr(), &names, Duration::from_secs(2))
            .await
            .into_iter()
            .map(|(target, result)| {
                result
                    .unwrap_or_else(|e| panic!("probe {:?}: {e}", target.sni))
                    .fingerprint_sha256
            })
            .collect();
    assert!(all.windows(2).all(|w| w[0] == w[1]), "{all:?}");
    all[0].clone()
}

/// A Secret `edge-tls` with these values.
fn secret_with(crt: &[u8], key: &[u8]) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.namespace = Some(NAMESPACE.into());
    secret.metadata.name = Some("edge-tls".into());
    secret.type_ = Some("kubernetes.io/tls".into());
    secret.data = Some(BTreeMap::from([
        ("tls.crt".to_string(), ByteString(crt.to_vec())),
        ("tls.key".to_string(), ByteString(key.to_vec())),
    ]));
    secret
}

fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read as _;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .unwrap();
    bytes
}

/// Garbage in a `tls.key`: random binary bytes, then a `PRIVATE KEY` block holding the body of
/// `donor`'s key, random base64 and characters base64 does not have.
fn garbage_key(donor: &IssuedLeaf, noise: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let mut out = noise[..16].to_vec();
    out.extend_from_slice(b"\n-----BEGIN PRIVATE KEY-----\n");
    for line in donor.key_pem.lines().filter(|l| !l.starts_with("-----")) {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(
        base64::engine::general_purpose::STANDARD
            .encode(&noise[16..])
            .as_bytes(),
    );
    out.extend_from_slice(b"\n*** not base64 ***\n-----END PRIVATE KEY-----\n");
    out
}

/// Waits until the kubelet stand-in has written a new generation for [`POD`] after `before`;
/// its name.
async fn wait_written(node: &TestNode, before: u64) -> String {
    let event = node
        .node
        .wait_for(before, WAIT, |e| {
            e.pod == POD && matches!(e.outcome, SyncOutcome::Written { .. })
        })
        .await
        .expect("kubelet wrote the new generation");
    match event.outcome {
        SyncOutcome::Written { generation } => generation,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_material_is_withheld_and_no_output_holds_key_bytes() {
    if !can_run_nginx() {
        return;
    }
    let started = Instant::now();
    let mut leaks = Leaks::new();
    let (mut node, controller, volume) = nginx_node(&mut leaks).await;
    let first = served(&controller).await;
    leaks.endpoints(&node, "in sync").await;

    // 1. A renewal whose key belongs to another certificate.
    let renewed = leaks.issue("renewal with a foreign key");
    let foreign = leaks.issue("foreign key");
    let mismatch = secret_with(renewed.chain_pem.as_bytes(), foreign.key_pem.as_bytes());
    leaks.apply(&node, "key mismatch", &mismatch);
    let invalid = wait_events(&node, "InvalidCertificateMaterial", 1).await;
    assert!(
        invalid[0].note.contains("keyMismatch"),
        "{}",
        invalid[0].note
    );
    let (code, text) = leaks.inspect(&volume, "key mismatch");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("keyMismatch"), "{text}");
    leaks.endpoints(&node, "key mismatch").await;

    // 2. Garbage in tls.key: binary noise around the body of the matching key.
    let donor = leaks.issue("garbage's donor");
    let noise = random_bytes(64);
    leaks.scanner.add_secret_bytes("garbage noise", &noise);
    let garbage = secret_with(donor.chain_pem.as_bytes(), &garbage_key(&donor, &noise));
    leaks.apply(&node, "garbage tls.key", &garbage);
    let invalid = wait_events(&node, "InvalidCertificateMaterial", 2).await;
    let note = &invalid[1].note;
    assert!(
        note.contains("tls.key") && note.contains("unparsablePem"),
        "{note}"
    );
    let (code, text) = leaks.inspect(&volume, "garbage tls.key");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("unparsablePem"), "{text}");
    leaks.endpoints(&node, "garbage tls.key").await;

    // 3. Key and certificate each in the other's field.
    let swapped_leaf = leaks.issue("swapped fields");
    let swapped = secret_with(
        swapped_leaf.key_pem.as_bytes(),
        swapped_leaf.chain_pem.as_bytes(),
    );
    let before = node.node.last_seq();
    leaks.apply(&node, "swapped fields", &swapped);
    let generation = wait_written(&node, before).await;
    // The agent judged that generation and withheld it as swapped (its Event scanned with the
    // rest), and inspect parsed both files.
    node.wait_status(WAIT, "the swapped generation judged", |s| {
        mount_of(s, POD).is_some_and(|m| m["diskGeneration"] == generation.as_str())
    })
    .await
    .unwrap();
    node.wait_events("InvalidCertificateMaterial", WAIT, |e| {
        e.iter()
            .any(|e| e.note.contains("swappedKeyAndCertificate"))
    })
    .await
    .unwrap();
    let (code, text) = leaks.inspect(&volume, "swapped fields");
    assert!(
        text.contains("key ") && text.contains("no certificate beside it"),
        "the key in tls.crt was parsed: {text}"
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("swappedKeyAndCertificate"), "{text}");
    leaks.endpoints(&node, "swapped fields").await;

    // Nothing of that was loaded: nginx still serves the first leaf, and was never reloaded.
    assert_eq!(served(&controller).await, first);
    assert!(node.events("ControllerReloaded").is_empty());
    let scrape = scrape(&node).await;
    assert!(
        metric_sum(&scrape, "mountlag_reloads_total", &reloads(POD, "withheld")) >= 3.0,
        "{scrape}"
    );

    // 4. A good renewal is reloaded and verified: the agent got past all of it.
    let good = leaks.issue("good renewal");
    leaks.apply(
        &node,
        "good renewal",
        &tls_secret(NAMESPACE, "edge-tls", &good),
    );
    wait_metric(
        &node,
        "mountlag_reloads_total",
        &reloads(POD, "verified"),
        1.0,
    )
    .await;
    assert_eq!(served(&controller).await, good.fingerprint_sha256);
    leaks.endpoints(&node, "good renewal").await;

    assert_eq!(node.stop_agent().unwrap().code(), Some(0));
    // An error message: `mountlag status` with the agent gone.
    let endpoint = format!("http://127.0.0.1:{}", free_port().unwrap());
    let (code, _) = leaks.run(
        "mountlag status, agent gone",
        &["status", "--endpoint", &endpoint],
    );
    assert_ne!(code, 0);
    leaks.api_and_logs(&node, "end");
    leaks.assert_no_key_bytes();
    eprintln!("broken material: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_during_a_rotation_leaks_no_key_bytes() {
    if !can_run_nginx() {
        return;
    }
    let started = Instant::now();
    let mut leaks = Leaks::new();
    let (mut node, controller, _volume) = nginx_node(&mut leaks).await;
    assert_eq!(
        metric_sum(
            &scrape(&node).await,
            "mountlag_api_errors_total",
            &NO_LABELS
        ),
        0.0
    );

    // The API goes away; a rotation happens meanwhile (the Secret changes in the store, kubelet
    // writes it at its next sync).
    node.api.stop().await;
    let v2 = leaks.issue("v2 (during the outage)");
    leaks.apply(&node, "v2", &tls_secret(NAMESPACE, "edge-tls", &v2));
    // Both watches fail: the agent cannot see the rotation.
    for resource in ["secrets", "pods"] {
        wait_metric(
            &node,
            "mountlag_api_errors_total",
            &[
                format!("resource=\"{resource}\""),
                "reason=\"unreachable\"".to_string(),
            ],
            1.0,
        )
        .await;
    }
    leaks.endpoints(&node, "API down, rotation pending").await;
    let before = node.node.last_seq();
    assert!(node.node.sync_now(NAMESPACE, POD));
    wait_written(&node, before).await;
    // Reloaded and verified without the API; the Event about it cannot be published.
    wait_metric(
        &node,
        "mountlag_reloads_total",
        &reloads(POD, "verified"),
        1.0,
    )
    .await;
    assert_eq!(served(&controller).await, v2.fingerprint_sha256);
    wait_metric(
        &node,
        "mountlag_events_total",
        &["reason=\"ControllerReloaded\"", "result=\"error\""],
        1.0,
    )
    .await;
    // A broken rotation during the outage too: judged from disk, its Event lost.
    let renewed = leaks.issue("renewal with a foreign key (during the outage)");
    let foreign = leaks.issue("foreign key (during the outage)");
    leaks.apply(
        &node,
        "key mismatch (during the outage)",
        &secret_with(renewed.chain_pem.as_bytes(), foreign.key_pem.as_bytes()),
    );
    let before = node.node.last_seq();
    assert!(node.node.sync_now(NAMESPACE, POD));
    wait_written(&node, before).await;
    wait_metric(
        &node,
        "mountlag_reloads_total",
        &reloads(POD, "withheld"),
        1.0,
    )
    .await;
    wait_metric(
        &node,
        "mountlag_events_total",
        &["reason=\"InvalidCertificateMaterial\"", "result=\"error\""],
        1.0,
    )
    .await;
    leaks.endpoints(&node, "API down, rotated").await;
    let scrape_down = scrape(&node).await;
    assert!(
        metric_sum(
            &scrape_down,
            "mountlag_api_errors_total",
            &["resource=\"events\""]
        ) >= 2.0,
        "{scrape_down}"
    );
    assert!(
        node.events("ControllerReloaded").is_empty(),
        "published during the outage?"
    );

    // The API is back: the agent catches up and the next rotation is published again.
    node.api.restart().await.unwrap();
    node.wait_ready(WAIT).await.unwrap();
    let v3 = leaks.issue("v3 (after the outage)");
    leaks.apply(&node, "v3", &tls_secret(NAMESPACE, "edge-tls", &v3));
    wait_metric(
        &node,
        "mountlag_reloads_total",
        &reloads(POD, "verified"),
        2.0,
    )
    .await;
    assert_eq!(served(&controller).await, v3.fingerprint_sha256);
    wait_events(&node, "ControllerReloaded", 1).await;
    leaks.endpoints(&node, "API back").await;

    assert_eq!(node.stop_agent().unwrap().code(), Some(0));
    let log = node.all_agent_logs();
    assert!(log.contains("cannot publish event"), "{log}");
    leaks.add("API down: /metrics", scrape_down);
    leaks.api_and_logs(&node, "end");
    leaks.assert_no_key_bytes();
    eprintln!("API outage: {:?}", started.elapsed());
}

/// An HTTP reload target that refuses every reload: 500 with a short reason. Counts requests.
async fn refusing_reload_target() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "reload refused: configuration rejected";
                let answer = format!(
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reloads_leak_no_key_bytes() {
    if !real::require("root + tmpfs", real::can_mount()) {
        return;
    }
    let started = Instant::now();
    let mut leaks = Leaks::new();
    let (reload_port, reload_requests) = refusing_reload_target().await;
    // Nothing listens on the probe port: no controller serves anything.
    let probe_port = free_port().unwrap();
    let config = agent_config(&format!(
        "  - name: gone\n    profile: nginx\n    selector: app=gone\n    probe:\n      ports: [{probe_port}]\n\
         \x20 - name: refusing\n    selector: app=refusing\n    reload:\n      http:\n        url: http://{{podIP}}:{reload_port}/reload\n    probe:\n      ports: [{probe_port}]\n"
    ));
    let mut node = TestNode::start(NodeConfig::new(NODE), &config)
        .await
        .unwrap();
    let pods = [
        ("gone-0", "gone", "gone-tls"),
        ("refusing-0", "refusing", "refusing-tls"),
    ];
    for (pod, app, secret) in pods {
        let leaf = leaks.issue(&format!("{secret} v1"));
        leaks.apply(
            &node,
            &format!("{secret} v1"),
            &tls_secret(NAMESPACE, secret, &leaf),
        );
        node.create_pod_and_wait_started(&ingress_pod(pod, &[("app", app)], secret, None))
            .await
            .unwrap();
    }
    node.start_agent().unwrap();
    node.wait_ready(WAIT).await.unwrap();
    node.wait_status(WAIT, "both mounts in sync", |s| {
        pods.iter()
            .all(|(pod, _, _)| mount_of(s, pod).is_some_and(|m| m["state"] == "in_sync"))
    })
    .await
    .unwrap();

    for (_, _, secret) in pods {
        let leaf = leaks.issue(&format!("{secret} v2"));
        leaks.apply(
            &node,
            &format!("{secret} v2"),
            &tls_secret(NAMESPACE, secret, &leaf),
        );
    }
    // The nginx profile finds no nginx in gone-0; the HTTP target refuses refusing-0's reload.
    for (pod, _, _) in pods {
        wait_metric(
            &node,
            "mountlag_reloads_total",
            &reloads(pod, "failed"),
            1.0,
        )
        .await;
    }
    let not_found = wait_events(&node, "ControllerProcessNotFound", 1).await;
    assert!(
        not_found.iter().any(|e| e.regarding.name == "gone-0"),
        "{not_found:?}"
    );
    let refused = node
        .wait_events("ReloadUnverified", WAIT, |e| {
            e.iter()
                .any(|e| e.regarding.name == "refusing-0" && e.note.contains("HTTP 500"))
        })
        .await
        .unwrap();
    assert!(
        refused.iter().any(|e| e.note.contains("reload refused")),
        "the refusal is quoted: {refused:?}"
    );
    assert!(reload_requests.load(Ordering::SeqCst) >= 1);
    leaks.endpoints(&node, "reloads failed").await;
    node.wait_status(WAIT, "both reloads failed in /status", |s| {
        pods.iter()
            .all(|(pod, _, _)| mount_of(s, pod).is_some_and(|m| m["lastReload"] == "failed"))
    })
    .await
    .unwrap();
    let endpoint = format!("http://{}", node.agent.as_ref().unwrap().listen);
    let (code, _) = leaks.run(
        "mountlag status, reloads failed",
        &["status", "--endpoint", &endpoint],
    );
    assert_eq!(code, 1, "failed reloads need attention");
    assert!(
        metric_value(
            &scrape(&node).await,
            &format!(
                "mountlag_reloads_total{{namespace=\"{NAMESPACE}\",pod=\"gone-0\",result=\"verified\"}}"
            )
        )
        .unwrap_or(0.0)
            == 0.0
    );

    assert_eq!(node.stop_agent().unwrap().code(), Some(0));
    leaks.api_and_logs(&node, "end");
    leaks.assert_no_key_bytes();
    eprintln!("failed reloads: {:?}", started.elapsed());
}
