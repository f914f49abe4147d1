//! Served truth for controllers that read their Secrets from the API: the real agent learns
//! the hosts from Ingress objects on the API stand-in, watches each named Secret by name,
//! probes an ingress-nginx-style controller (tests/src/ingress_controller.rs: it watches the
//! same API and serves over real TLS) and reports what a user must know: a renewal the
//! controller never picks up, a host whose Secret is missing (placeholder certificate served),
//! and a Gateway listener whose Secret is in another namespace (ReferenceGrant).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use mountlag_testbed::certs::{IssuedLeaf, LeafSpec, TestCa, secret_bytes_markers};
use mountlag_testbed::cluster::{
    NAMESPACE, NODE, TestNode, free_port, ingress_nginx_pod, tls_secret,
};
use mountlag_testbed::ingress_controller::IngressControllerStandIn;
use mountlag_testbed::node::NodeConfig;
use mountlag_testbed::real;
use serde_json::{Value, json};

const HOSTS: [&str; 2] = ["a.example.com", "b.example.com"];
const CONTROLLER_POD: &str = "ingress-nginx-controller-0";

fn can_run() -> bool {
    real::require("root + tmpfs", real::can_mount())
}

/// The ingress-nginx profile, checking every second and reporting a mismatch after 2 s.
fn config(port: u16) -> String {
    format!(
        "nudge:\n  enabled: false\nverify:\n  timeout: 3s\n  interval: 1s\n  mismatchAfter: 2s\n\
         controllers:\n  - name: ingress-nginx\n    profile: ingress-nginx\n    namespaces: [{NAMESPACE}]\n    \
         probe:\n      ports: [{port}]\n"
    )
}

fn ingress_class() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "nginx"},
        "spec": {"controller": "k8s.io/ingress-nginx"}
    })
}

fn ingress(name: &str, hosts: &[&str], secret: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": hosts, "secretName": secret}],
            "rules": hosts.iter().map(|h| json!({"host": h})).collect::<Vec<_>>()
        }
    })
}

/// The controller's pod: the chart's labels, no Secret volume (it reads the API).
fn controller_pod() -> Pod {
    ingress_nginx_pod(CONTROLLER_POD)
}

struct Setup {
    node: TestNode,
    controller: IngressControllerStandIn,
    ca: TestCa,
    keys: Vec<String>,
}

impl Setup {
    /// Ingress `web` (two hosts, Secret `web-tls` holding `first`) served by the stand-in, the
    /// controller pod on the node, the agent ready.
    async fn start() -> (Self, IssuedLeaf) {
        let port = free_port().unwrap();
        let mut node = TestNode::start(NodeConfig::new(NODE), &config(port))
            .await
            .unwrap();
        let ca = TestCa::new("ingress test CA").unwrap();
        let first = ca.issue(&LeafSpec::valid_for(HOSTS)).unwrap();
        node.api.apply_object(&ingress_class()).unwrap();
        node.api
            .apply_secret(&tls_secret(NAMESPACE, "web-tls", &first))
            .unwrap();
        node.api
            .apply_object(&ingress("web", &HOSTS, "web-tls"))
            .unwrap();
        let controller =
            IngressControllerStandIn::start(node.api.client(), "k8s.io/ingress-nginx", port)
                .await
                .unwrap();
        for host in HOSTS {
            controller
                .wait_serving(host, &first.fingerprint_sha256, Duration::from_secs(10))
                .await
                .unwrap();
        }
        node.create_pod_and_wait_started(&controller_pod())
            .await
            .unwrap();
        node.start_agent().unwrap();
        node.wait_ready(Duration::from_secs(10)).await.unwrap();
        let keys = vec![first.key_pem.clone()];
        (
            Self {
                node,
                controller,
                ca,
                keys,
            },
            first,
        )
    }

    fn issue(&mut self) -> IssuedLeaf {
        let leaf = self.ca.issue(&LeafSpec::valid_for(HOSTS)).unwrap();
        self.keys.push(leaf.key_pem.clone());
        leaf
    }

    fn rotate(&self, leaf: &IssuedLeaf) {
        self.node
            .api
            .apply_secret(&tls_secret(NAMESPACE, "web-tls", leaf))
            .unwrap();
    }

    /// Waits until `/status` shows every host of `hosts` with `state`, served `fingerprint`
    /// and `matches`.
    async fn wait_hosts(&self, hosts: &[&str], state: &str, fingerprint: &str, matches: bool) {
        let what = format!("{hosts:?} {state}, serving {fingerprint} (match {matches})");
        self.node
            .wait_status(Duration::from_secs(15), &what, |s| {
                hosts.iter().all(|host| {
                    s["hosts"].as_array().into_iter().flatten().any(|h| {
                        h["host"] == *host
                            && h["state"] == state
                            && h["served"][0]["fingerprintSha256"] == fingerprint
                            && h["served"][0]["match"] == matches
                    })
                })
            })
            .await
            .unwrap();
    }

    /// `mountlag status`'s exit code.
    fn status_exit_code(&self) -> i32 {
        let out = mountlag_testbed::agent::run(&[
            "status",
            "--endpoint",
            &format!("http://{}", self.node.agent.as_ref().unwrap().listen),
        ]);
        out.status.code().unwrap()
    }

    /// Waits for `rounds` more periodic check rounds (each a handshake per host and one
    /// without SNI).
    async fn wait_check_rounds(&self, rounds: usize) {
        let target = self.node.handshakes().await + (rounds * (HOSTS.len() + 1)) as f64;
        let start = Instant::now();
        while self.node.handshakes().await < target {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{rounds} more check rounds did not happen\n{}",
                self.node.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// No private key byte in the agent's logs, `/status`, `/metrics` or any Event.
    async fn assert_no_key_bytes(&self) {
        let (_, status) = self.node.get("/status").await.unwrap();
        let (_, metrics) = self.node.get("/metrics").await.unwrap();
        let events: String = self
            .node
            .api
            .events()
            .iter()
            .map(|e| format!("{} {}\n", e.reason, e.note))
            .collect();
        let outputs = [
            ("agent log", self.node.all_agent_logs()),
            ("/status", status),
            ("/metrics", metrics),
            ("Events", events),
        ];
        for key in &self.keys {
            for marker in secret_bytes_markers(key) {
                for (what, text) in &outputs {
                    assert!(!text.contains(&marker), "key bytes in the {what}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_hosts_are_verified_and_a_renewal_the_controller_never_picks_up_is_a_mismatch() {
    if !can_run() {
        return;
    }
    let (mut setup, first) = Setup::start().await;
    setup
        .wait_hosts(&HOSTS, "ok", &first.fingerprint_sha256, true)
        .await;
    assert_eq!(setup.status_exit_code(), 0);
    // A renewal the controller picks up: verified, and no reload is claimed (none happened).
    let second = setup.issue();
    setup.rotate(&second);
    setup
        .wait_hosts(&HOSTS, "ok", &second.fingerprint_sha256, true)
        .await;
    assert!(setup.node.events("ControllerReloaded").is_empty());
    assert!(setup.node.events("ServedCertificateMismatch").is_empty());

    // The renewal that never reaches the controller: one ServedCertificateMismatch after
    // verify.mismatchAfter, naming the host and which view is old; `mountlag status` exits 1.
    setup.controller.freeze(true);
    let third = setup.issue();
    setup.rotate(&third);
    let events = setup
        .node
        .wait_events("ServedCertificateMismatch", Duration::from_secs(20), |e| {
            !e.is_empty()
        })
        .await
        .unwrap();
    let note = &events[0].note;
    assert_eq!(events[0].regarding.name, CONTROLLER_POD);
    assert!(
        note.contains("a.example.com on 127.0.0.1:")
            && note.contains(&second.fingerprint_sha256[..16])
            && note.contains(&format!(
                "is old: the Secrets in the API hold {}",
                &third.fingerprint_sha256[..16]
            )),
        "{note}"
    );
    setup
        .wait_hosts(&HOSTS, "ok", &second.fingerprint_sha256, false)
        .await;
    assert_eq!(setup.status_exit_code(), 1);
    let sample = format!(
        "mountlag_served_certificate_match{{namespace=\"{NAMESPACE}\",pod=\"{CONTROLLER_POD}\",secret=\"{NAMESPACE}/web-tls\"}}"
    );
    assert_eq!(setup.node.metric(&sample).await.unwrap(), Some(0.0));
    // One Event for the episode, its series count rising while checks go on.
    setup.wait_check_rounds(3).await;
    let events = setup.node.events("ServedCertificateMismatch");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].series_count.is_some_and(|n| n >= 2),
        "the count rises: {events:?}"
    );

    // The controller catches up: the match is back, the exit code too.
    setup.controller.freeze(false);
    setup
        .wait_hosts(&HOSTS, "ok", &third.fingerprint_sha256, true)
        .await;
    assert_eq!(setup.node.metric(&sample).await.unwrap(), Some(1.0));
    assert_eq!(setup.status_exit_code(), 0);
    setup.assert_no_key_bytes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_secret_is_missing_gets_the_placeholder_and_both_are_reported() {
    if !can_run() {
        return;
    }
    let (setup, _) = Setup::start().await;
    setup
        .node
        .api
        .apply_object(&ingress("shop", &["shop.example.com"], "shop-tls"))
        .unwrap();
    let missing = setup
        .node
        .wait_events("TLSSecretMissing", Duration::from_secs(15), |e| {
            !e.is_empty()
        })
        .await
        .unwrap();
    assert_eq!(missing[0].type_, "Warning");
    assert_eq!(missing[0].regarding.kind, "Ingress");
    assert_eq!(missing[0].regarding.name, "shop");
    assert!(
        missing[0].note.contains("TLS host shop.example.com")
            && missing[0].note.contains(&format!("{NAMESPACE}/shop-tls")),
        "{}",
        missing[0].note
    );
    let mismatch = setup
        .node
        .wait_events("ServedCertificateMismatch", Duration::from_secs(15), |e| {
            !e.is_empty()
        })
        .await
        .unwrap();
    assert!(
        mismatch[0].note.contains("shop.example.com")
            && mismatch[0]
                .note
                .contains("ingress-nginx's placeholder certificate"),
        "{}",
        mismatch[0].note
    );
    setup
        .wait_hosts(
            &["shop.example.com"],
            "secret_missing",
            setup.controller.fake_fingerprint(),
            false,
        )
        .await;
    assert_eq!(
        setup
            .node
            .metric("mountlag_tls_hosts{controller=\"ingress-nginx\",state=\"secret_missing\"}")
            .await
            .unwrap(),
        Some(1.0)
    );
    assert_eq!(setup.status_exit_code(), 1);
    setup.assert_no_key_bytes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_controller_pods_keeps_exactly_one_watch_open() {
    if !can_run() {
        return;
    }
    // The default configuration (every API-driven profile, routes included), no pod at all.
    let mut node = TestNode::start(NodeConfig::new(NODE), "stuckAfter: 120s\n")
        .await
        .unwrap();
    node.api.apply_object(&ingress_class()).unwrap();
    node.api
        .apply_object(&ingress("web", &HOSTS, "web-tls"))
        .unwrap();
    node.start_agent().unwrap();
    node.wait_ready(Duration::from_secs(10)).await.unwrap();
    let stats = node.api.stats();
    assert_eq!(
        stats.open_watches, 1,
        "one pod watch: {:?}",
        stats.open_watches_by_resource
    );
    assert_eq!(stats.open_watches_by_resource.get("pods"), Some(&1));
    assert!(
        !stats
            .requests
            .keys()
            .any(|(_, resource)| resource.contains("ingress")),
        "{:?}",
        stats.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_namespace_certificate_ref_counts_only_once_a_reference_grant_allows_it() {
    if !can_run() {
        return;
    }
    const CONTROLLER: &str = "gateway.envoyproxy.io/gatewayclass-controller";
    const HOST: &str = "gw.example.com";
    let port = free_port().unwrap();
    let config = format!(
        "nudge:\n  enabled: false\nverify:\n  timeout: 3s\n  interval: 1s\n  mismatchAfter: 2s\n\
         controllers:\n  - name: envoy-gateway\n    profile: envoy-gateway\n    selector: app=gw\n    \
         namespaces: [{NAMESPACE}]\n    probe:\n      ports: [{port}]\n"
    );
    let mut node = TestNode::start(NodeConfig::new(NODE), &config)
        .await
        .unwrap();
    let ca = TestCa::new("gateway test CA").unwrap();
    let leaf = ca.issue(&LeafSpec::valid_for([HOST])).unwrap();
    node.api
        .apply_object(&json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "eg"}, "spec": {"controllerName": CONTROLLER}
        }))
        .unwrap();
    node.api
        .apply_secret(&tls_secret("certs", "gw-tls", &leaf))
        .unwrap();
    node.api
        .apply_object(&json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": NAMESPACE},
            "spec": {"gatewayClassName": "eg", "listeners": [{
                "name": "https", "port": 443, "protocol": "HTTPS", "hostname": HOST,
                "tls": {"mode": "Terminate",
                        "certificateRefs": [{"name": "gw-tls", "namespace": "certs"}]}
            }]}
        }))
        .unwrap();
    let controller = IngressControllerStandIn::start_gateway(node.api.client(), CONTROLLER, port)
        .await
        .unwrap();
    let mut pod = controller_pod();
    pod.metadata.name = Some("envoy-0".into());
    pod.metadata.labels = Some([("app".to_string(), "gw".to_string())].into());
    node.create_pod_and_wait_started(&pod).await.unwrap();
    node.start_agent().unwrap();
    node.wait_ready(Duration::from_secs(10)).await.unwrap();

    // Without a ReferenceGrant the controller will not serve it: reported on the Gateway.
    let refused = node
        .wait_events("TLSSecretRefNotPermitted", Duration::from_secs(15), |e| {
            !e.is_empty()
        })
        .await
        .unwrap();
    assert_eq!(refused[0].regarding.kind, "Gateway");
    assert_eq!(refused[0].regarding.name, "edge");
    assert!(
        refused[0]
            .note
            .contains("no ReferenceGrant in namespace certs lets Gateways of namespace")
            && refused[0].note.contains("listener https"),
        "{}",
        refused[0].note
    );
    let status = node
        .wait_status(Duration::from_secs(10), "ref_not_permitted", |s| {
            s["hosts"][0]["state"] == "ref_not_permitted"
        })
        .await
        .unwrap();
    assert_eq!(status["hosts"][0]["secret"], "certs/gw-tls", "{status:#}");

    // With one, the host is probed and verified against the Secret in the other namespace.
    node.api
        .apply_object(&json!({
            "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
            "metadata": {"name": "gateways", "namespace": "certs"},
            "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                               "namespace": NAMESPACE}],
                     "to": [{"group": "", "kind": "Secret", "name": "gw-tls"}]}
        }))
        .unwrap();
    controller
        .wait_serving(HOST, &leaf.fingerprint_sha256, Duration::from_secs(10))
        .await
        .unwrap();
    node.wait_status(Duration::from_secs(15), "verified", |s| {
        s["hosts"].as_array().is_some_and(|hosts| {
            hosts.len() == 1
                && hosts[0]["host"] == HOST
                && hosts[0]["state"] == "ok"
                && hosts[0]["served"][0]["fingerprintSha256"] == leaf.fingerprint_sha256.as_str()
                && hosts[0]["served"][0]["match"] == true
        })
    })
    .await
    .unwrap();
    let out = mountlag_testbed::agent::run(&[
        "status",
        "--endpoint",
        &format!("http://{}", node.agent.as_ref().unwrap().listen),
    ]);
    assert_eq!(out.status.code(), Some(0));
}
