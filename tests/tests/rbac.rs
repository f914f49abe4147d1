//! The RBAC shipped in `deploy/` is least privilege and sufficient.
//!
//! The API stand-in enforces the Roles, ClusterRoles and bindings rendered by
//! `kubectl kustomize` (`mountlag_testbed::rbac`), and the real agent runs with a kubeconfig
//! carrying its ServiceAccount's token:
//!
//! - with exactly the rendered rules everything works: pods listed and watched, the Secret
//!   synced, the nudge patch accepted, Events created and folded into a series, no 403;
//! - without the `patch pods` rule the agent says so (log line naming the verb and resource,
//!   `mountlag_api_errors_total{resource="pods",reason="Forbidden"}`) and keeps working;
//! - without the Secret RoleBinding `/readyz` stays 503 and names the Secret it cannot read.
//!
//! They run under the RBAC of `deploy/overlays/nginx`; a probe-only overlay
//! (`deploy/overlays/ingress-nginx`) runs the agent as uid 65532 without a kubelet root under
//! its own RBAC and configuration, with no request refused. A static check covers every overlay
//! (read from `deploy/overlays/`): the permissions each one's own configuration needs are
//! granted, Secret reads exactly in the namespaces it names (its `secret-reads.yaml`), and
//! nothing beyond the documented verbs is. The base alone reads no Secret.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mountlag_testbed::apiserver::{ADMIN_TOKEN, ADMIN_USER, ApiServerConfig, ValidatingPolicies};

use mountlag_testbed::cluster::{
    AgentLaunch, KeyRing, NAMESPACE, NODE, NONROOT, TestNode, agent_config, ingress_pod, mount_of,
};
use mountlag_testbed::node::{NodeConfig, PodRef};
use mountlag_testbed::rbac::{self, Rbac};
use mountlag_testbed::real;
use serde_json::Value;

/// The token the agent's kubeconfig carries; the stand-in maps it to the ServiceAccount, with
/// the node-name claim of a token bound to a pod on [`NODE`].
const AGENT_TOKEN: &str = "mountlag-serviceaccount-token";
/// The same ServiceAccount's token without the node claim (e.g. a legacy Secret token).
const UNBOUND_AGENT_TOKEN: &str = "mountlag-unbound-serviceaccount-token";
/// The claim a pod-bound ServiceAccount token carries (Kubernetes 1.30+).
const NODE_NAME_CLAIM: &str = "authentication.kubernetes.io/node-name";

fn can_render() -> bool {
    real::require("kubectl (kustomize)", rbac::kubectl_available())
}

fn can_run() -> bool {
    can_render() && real::require("root + tmpfs", real::can_mount())
}

/// `kubectl kustomize deploy/<variant>`, parsed.
fn rendered(variant: &str) -> Vec<Value> {
    let dir = rbac::deploy_dir().join(variant);
    let yaml = rbac::render(&dir).unwrap();
    rbac::documents(&yaml).unwrap()
}

/// The overlay the end-to-end tests run the agent under: plain nginx in [`NAMESPACE`], whose
/// RBAC has everything the agent can use (Secret reads there, the nudge and its policy).
const END_TO_END_VARIANT: &str = "overlays/nginx";

/// That overlay's RBAC and the user its DaemonSet runs as.
fn overlay_rbac() -> (Rbac, String) {
    let docs = rendered(END_TO_END_VARIANT);
    let user = rbac::daemonset_user(&docs).unwrap();
    let rbac = Rbac::from_documents(&docs).unwrap();
    // The end-to-end tests run the controller pods in the namespace the overlay's Secret
    // RoleBinding covers; if that namespace moves, move the tests with it.
    let secrets = rbac.grants(&user, "watch", "", "secrets");
    assert!(
        secrets.namespaces == BTreeSet::from([NAMESPACE.to_owned()]) && !secrets.cluster_wide,
        "{END_TO_END_VARIANT} grants Secret reads in {NAMESPACE:?} only: {secrets:?}"
    );
    (rbac, user)
}

/// A node whose API stand-in enforces `rbac`, with the agent running as `user`.
async fn node_under(rbac: Rbac, user: &str, config: &str) -> (TestNode, tempfile::TempDir) {
    node_under_variant(END_TO_END_VARIANT, rbac, user, config).await
}

/// [`node_under`], with the admission policies of `variant`.
async fn node_under_variant(
    variant: &str,
    rbac: Rbac,
    user: &str,
    config: &str,
) -> (TestNode, tempfile::TempDir) {
    let api_config = ApiServerConfig {
        tokens: BTreeMap::from([
            (AGENT_TOKEN.to_owned(), user.to_owned()),
            (UNBOUND_AGENT_TOKEN.to_owned(), user.to_owned()),
            (ADMIN_TOKEN.to_owned(), ADMIN_USER.to_owned()),
        ]),
        token_extra: BTreeMap::from([(
            AGENT_TOKEN.to_owned(),
            BTreeMap::from([(NODE_NAME_CLAIM.to_owned(), vec![NODE.to_owned()])]),
        )]),
        authorizer: Arc::new(rbac.with_kubernetes_defaults().with_superuser(ADMIN_USER)),
        // The overlay's admission policy, evaluated by the stand-in as the API server would.
        admission: Arc::new(ValidatingPolicies::from_documents(&rendered(variant)).unwrap()),
        ..ApiServerConfig::default()
    };
    // kubelet's real 60–90 s sync: only a nudge makes it rewrite a volume in time.
    let node = TestNode::start_with(api_config, NodeConfig::new(NODE), config)
        .await
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("mountlag-rbac-")
        .tempdir()
        .unwrap();
    node.api
        .write_kubeconfig(&dir.path().join("kubeconfig"), Some(AGENT_TOKEN))
        .unwrap();
    (node, dir)
}

fn start_agent(node: &mut TestNode, dir: &tempfile::TempDir) {
    node.start_agent_with_kubeconfig(&dir.path().join("kubeconfig"))
        .unwrap();
}

fn state_of(status: &Value) -> String {
    mount_of(status, "edge-0")
        .and_then(|m| m["state"].as_str())
        .unwrap_or("absent")
        .to_owned()
}

/// Polls `/metrics` until `sample` is at least `at_least`.
async fn wait_metric(node: &TestNode, sample: &str, at_least: f64, timeout: Duration) -> f64 {
    let start = Instant::now();
    loop {
        let value = node.metric(sample).await.unwrap().unwrap_or(0.0);
        if value >= at_least {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "{sample} stayed at {value} for {timeout:?}\n{}",
            node.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_rbac_is_sufficient_for_everything_the_agent_does() {
    if !can_run() {
        return;
    }
    let (rbac, user) = overlay_rbac();
    let (mut node, dir) = node_under(rbac, &user, &agent_config("1s", "3s", true)).await;
    let mut keys = KeyRing::new("rbac test CA").unwrap();
    node.api.apply_secret(&keys.secret("edge-tls")).unwrap();
    node.api
        .create_pod(&ingress_pod("edge-0", &[("app", "edge")], "edge-tls", None))
        .unwrap();
    start_agent(&mut node, &dir);
    node.wait_ready(Duration::from_secs(10)).await.unwrap();
    node.wait_status(Duration::from_secs(10), "in sync", |s| {
        state_of(s) == "in_sync"
    })
    .await
    .unwrap();

    // A rotation kubelet does not pick up: two nudges (pod patches), a stuck mount, then the
    // recovery; the second nudge's Event is folded into the first (an Event patch).
    node.node.set_stuck(PodRef::name(NAMESPACE, "edge-0"), true);
    node.api.apply_secret(&keys.secret("edge-tls")).unwrap();
    node.wait_status(Duration::from_secs(20), "stuck", |s| state_of(s) == "stuck")
        .await
        .unwrap();
    node.wait_events("KubeletResyncRequested", Duration::from_secs(10), |e| {
        e.first().and_then(|e| e.series_count) == Some(2)
    })
    .await
    .unwrap();
    node.node
        .set_stuck(PodRef::name(NAMESPACE, "edge-0"), false);
    assert!(node.node.sync_now(NAMESPACE, "edge-0"));
    node.wait_status(Duration::from_secs(15), "recovered", |s| {
        state_of(s) == "in_sync"
    })
    .await
    .unwrap();
    for reason in ["SecretMountStuck", "SecretMountRecovered"] {
        node.wait_events(reason, Duration::from_secs(10), |e| !e.is_empty())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let annotations = node
        .api
        .pod(NAMESPACE, "edge-0")
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(
        annotations.contains_key("mountlag.io/resync"),
        "nudged: {annotations:?}"
    );
    for reason in [
        "KubeletResyncRequested",
        "SecretMountStuck",
        "SecretMountRecovered",
    ] {
        assert_eq!(
            node.events(reason).len(),
            1,
            "{reason}: {:?}",
            node.api.events()
        );
    }
    assert_eq!(
        node.events("KubeletResyncRequested")[0].series_count,
        Some(2)
    );

    let stats = node.api.stats();
    assert!(stats.forbidden.is_empty(), "403s: {:?}", stats.forbidden);
    let users: BTreeSet<&String> = stats.requests_by_user.keys().collect();
    assert_eq!(
        users,
        BTreeSet::from([&user]),
        "every request came from the agent"
    );
    for (verb, resource) in [
        ("list", "pods"),
        ("watch", "pods"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("patch", "pods"),
        ("create", "events.events.k8s.io"),
        ("patch", "events.events.k8s.io"),
    ] {
        assert!(
            stats.count(verb, resource) >= 1,
            "{verb} {resource} was exercised: {:?}",
            stats.requests
        );
    }
    assert_eq!(stats.count("patch", "pods"), 2, "{:?}", stats.requests);
    assert_eq!(
        node.metric("mountlag_kubelet_nudges_total{result=\"success\"}")
            .await
            .unwrap(),
        Some(2.0)
    );
    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert!(
        !metrics.contains("reason=\"Forbidden\""),
        "no Forbidden API error:\n{metrics}"
    );
    let log = node.agent_log();
    assert!(!log.to_lowercase().contains("forbidden"), "{log}");
    assert_eq!(node.stop_agent().unwrap().code(), Some(0));
    keys.assert_not_in("agent log", &node.all_agent_logs());
}

const PROBE_ONLY_VARIANT: &str = "overlays/ingress-nginx";
const PROBE_ONLY_NAMESPACE: &str = "ingress-nginx";

/// The agent as `overlays/ingress-nginx` installs it (its RBAC enforced, uid 65532, no kubelet
/// root), an ingress-nginx controller pod mounting `edge-tls`, and `objects` applied first.
async fn probe_only_ingress_nginx(objects: &[Value]) -> (TestNode, tempfile::TempDir, KeyRing) {
    let docs = rendered(PROBE_ONLY_VARIANT);
    let user = rbac::daemonset_user(&docs).unwrap();
    let rbac = Rbac::from_documents(&docs).unwrap();
    let [configmap] = rbac::of_kind(&docs, "ConfigMap")[..] else {
        panic!("{PROBE_ONLY_VARIANT}: one ConfigMap");
    };
    // The overlay's configuration as installed; only the waits for a served certificate are
    // shortened (nothing serves here, so every check ends in a mismatch Event).
    let config = configmap["data"]["mountlag.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!config.contains("\nverify:"), "{config}");
    let config = format!("{config}\nverify:\n  timeout: 2s\n  mismatchAfter: 2s\n");
    let (mut node, dir) = node_under_variant(PROBE_ONLY_VARIANT, rbac, &user, &config).await;
    for object in objects {
        node.api.apply_object(object).unwrap();
    }
    let mut keys = KeyRing::new("probe-only rbac CA").unwrap();
    let mut secret = keys.secret("edge-tls");
    secret.metadata.namespace = Some(PROBE_ONLY_NAMESPACE.into());
    node.api.apply_secret(&secret).unwrap();
    let mut pod = ingress_pod(
        "ingress-nginx-controller-0",
        &[
            ("app.kubernetes.io/name", "ingress-nginx"),
            ("app.kubernetes.io/component", "controller"),
        ],
        "edge-tls",
        None,
    );
    pod.metadata.namespace = Some(PROBE_ONLY_NAMESPACE.into());
    node.api.create_pod(&pod).unwrap();
    node.start_agent_as(AgentLaunch {
        kubeconfig: Some(dir.path().join("kubeconfig")),
        kubelet_root: Some("/nonexistent/kubelet".into()),
        run_as: Some(NONROOT),
        ..AgentLaunch::default()
    })
    .unwrap();
    (node, dir, keys)
}

/// An Ingress whose Secret lives where the overlay grants no read: the agent says which
/// Secret and namespace it cannot read (readiness, log, metric) and keeps serving the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_grant_for_an_ingress_secret_readiness_and_the_log_name_its_namespace() {
    if !can_run() {
        return;
    }
    let class = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}
    });
    let ingress = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"ingressClassName": "nginx",
                 "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]}
    });
    let (node, _dir, keys) = probe_only_ingress_nginx(&[class, ingress]).await;
    let expected = "Secret(s) not synced: shop/shop-tls";
    let start = Instant::now();
    loop {
        if let Ok((code, body)) = node.get("/readyz").await
            && body.contains(expected)
        {
            assert_eq!(code, 503, "{body}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "/readyz never named the Secret\n{}",
            node.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = node.agent_log();
    let line = log
        .lines()
        .find(|l| l.contains("secret watch failed") && l.contains("shop-tls"))
        .unwrap_or_else(|| panic!("no `secret watch failed` line for shop-tls:\n{log}"));
    for needle in ["forbidden", "namespace=shop", "route-secrets"] {
        assert!(line.contains(needle), "{needle:?} missing from: {line}");
    }
    let stats = node.api.stats();
    assert!(
        stats
            .forbidden
            .keys()
            .all(|(_, resource)| resource == "secrets"),
        "only the Secret read was refused: {:?}",
        stats.forbidden
    );
    keys.assert_not_in("agent log", &node.all_agent_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_only_overlay_runs_the_agent_under_its_own_rbac_without_a_refused_request() {
    if !can_run() {
        return;
    }
    let (mut node, _dir, keys) = probe_only_ingress_nginx(&[]).await;
    node.wait_ready(Duration::from_secs(10)).await.unwrap();
    let namespace = PROBE_ONLY_NAMESPACE;
    let status = node
        .wait_status(Duration::from_secs(10), "the controller's mount", |s| {
            s["mounts"][0]["state"] == "unchecked"
        })
        .await
        .unwrap();
    assert_eq!(status["disk"]["checked"], false, "{status:#}");
    let events = node
        .wait_events("ServedCertificateMismatch", Duration::from_secs(20), |e| {
            !e.is_empty()
        })
        .await
        .unwrap();
    assert_eq!(events[0].namespace, namespace);

    let stats = node.api.stats();
    assert!(stats.forbidden.is_empty(), "403s: {:?}", stats.forbidden);
    for (verb, resource) in [
        ("list", "pods"),
        ("watch", "pods"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("create", "events.events.k8s.io"),
        // Its hosts come from Ingress objects: read cluster-wide (components/ingress-routes).
        ("list", "ingresses.networking.k8s.io"),
        ("watch", "ingresses.networking.k8s.io"),
        ("list", "ingressclasses.networking.k8s.io"),
        ("watch", "ingressclasses.networking.k8s.io"),
    ] {
        assert!(
            stats.count(verb, resource) >= 1,
            "{verb} {resource} was exercised: {:?}",
            stats.requests
        );
    }
    assert_eq!(stats.count("patch", "pods"), 0, "never nudges");
    let log = node.agent_log();
    assert!(!log.to_lowercase().contains("forbidden"), "{log}");
    assert_eq!(node.stop_agent().unwrap().code(), Some(0));
    keys.assert_not_in("agent log", &node.all_agent_logs());
}

/// A kube client with the agent's identity (`token`), as the agent's own kubeconfig gives it.
async fn client_with(node: &TestNode, dir: &tempfile::TempDir, token: &str) -> kube::Client {
    let path = dir.path().join(format!("kubeconfig-{token}"));
    node.api.write_kubeconfig(&path, Some(token)).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// `patch pods` is cluster-wide in RBAC; the admission policy shipped beside it
/// (deploy/base/admission/nudge-policy.yaml, evaluated by the stand-in with CEL) lets the
/// agent's identity change only `mountlag.io/resync`, and only on pods of its own node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_patch_grant_reaches_only_the_nudge_annotation_on_its_own_node() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, Patch, PatchParams};
    use serde_json::json;
    if !can_run() {
        return;
    }
    let (rbac, user) = overlay_rbac();
    let (node, dir) = node_under(rbac, &user, &agent_config("1s", "30s", true)).await;
    let mut mine = ingress_pod("edge-0", &[("app", "edge")], "edge-tls", None);
    mine.metadata.annotations = Some(BTreeMap::from([("team".to_owned(), "edge".to_owned())]));
    node.api.create_pod(&mine).unwrap();
    let mut theirs = ingress_pod("edge-elsewhere", &[("app", "edge")], "edge-tls", None);
    theirs.spec.as_mut().unwrap().node_name = Some("node-b".to_owned());
    node.api.create_pod(&theirs).unwrap();

    let pods: Api<Pod> = Api::namespaced(client_with(&node, &dir, AGENT_TOKEN).await, NAMESPACE);
    let merge = |patch: serde_json::Value| Patch::Merge(patch);
    let resync =
        json!({"metadata": {"annotations": {"mountlag.io/resync": "2026-12-06T00:00:00Z"}}});
    pods.patch("edge-0", &PatchParams::default(), &merge(resync.clone()))
        .await
        .expect("the nudge itself is admitted");
    let after_nudge = node.api.pod(NAMESPACE, "edge-0").unwrap();

    let refused: &[(&str, serde_json::Value, &str)] = &[
        (
            "edge-0",
            json!({"metadata": {"annotations": {"other": "x"}}}),
            "only change the annotation",
        ),
        (
            "edge-0",
            json!({"metadata": {"annotations": {"team": null}}}),
            "only change the annotation",
        ),
        (
            "edge-0",
            json!({"metadata": {"annotations": {"team": "red"}}}),
            "only change the annotation",
        ),
        (
            "edge-0",
            json!({"metadata": {"labels": {"app": "evil"}}}),
            "only change the annotation",
        ),
        (
            "edge-0",
            json!({"metadata": {"finalizers": ["x/y"]}}),
            "only change the annotation",
        ),
        (
            "edge-0",
            json!({"spec": {"activeDeadlineSeconds": 1}}),
            "only change the annotation",
        ),
        ("edge-elsewhere", resync.clone(), "pods on its own node"),
    ];
    for (pod, patch, says) in refused {
        let err = pods
            .patch(pod, &PatchParams::default(), &merge(patch.clone()))
            .await
            .expect_err(&format!("{pod}: {patch} must be refused"));
        let kube::Error::Api(status) = &err else {
            panic!("{pod}: {patch}: not an API error: {err}");
        };
        assert_eq!(status.code, 403, "{pod}: {patch}: {status:?}");
        assert!(
            status.message.contains(says) && status.message.contains("mountlag-nudge-only"),
            "{pod}: {patch}: {}",
            status.message
        );
    }
    assert_eq!(
        node.api.pod(NAMESPACE, "edge-0").unwrap(),
        after_nudge,
        "nothing refused was stored"
    );
    assert_eq!(
        node.api
            .pod(NAMESPACE, "edge-elsewhere")
            .unwrap()
            .metadata
            .annotations,
        None
    );
    // A token of the same ServiceAccount that does not name a node reaches no pod at all.
    let unbound: Api<Pod> = Api::namespaced(
        client_with(&node, &dir, UNBOUND_AGENT_TOKEN).await,
        NAMESPACE,
    );
    let err = unbound
        .patch("edge-0", &PatchParams::default(), &merge(resync))
        .await
        .expect_err("no node claim, no patch");
    assert!(err.to_string().contains("pods on its own node"), "{err}");
    assert_eq!(node.api.stats().admission_denied, refused.len() as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_patch_permission_a_nudge_fails_loudly_and_the_agent_keeps_working() {
    if !can_run() {
        return;
    }
    let (mut rbac, user) = overlay_rbac();
    assert_eq!(
        rbac.revoke("patch", "", "pods"),
        1,
        "one rule grants patch pods"
    );
    assert!(!rbac.allows(&user, "patch", "", "pods", NAMESPACE));
    let (mut node, dir) = node_under(rbac, &user, &agent_config("1s", "30s", true)).await;
    let mut keys = KeyRing::new("rbac test CA").unwrap();
    node.api.apply_secret(&keys.secret("edge-tls")).unwrap();
    node.api
        .create_pod(&ingress_pod("edge-0", &[("app", "edge")], "edge-tls", None))
        .unwrap();
    start_agent(&mut node, &dir);
    node.wait_ready(Duration::from_secs(10)).await.unwrap();
    node.wait_status(Duration::from_secs(10), "in sync", |s| {
        state_of(s) == "in_sync"
    })
    .await
    .unwrap();

    node.api.apply_secret(&keys.secret("edge-tls")).unwrap();
    wait_metric(
        &node,
        "mountlag_api_errors_total{resource=\"pods\",reason=\"Forbidden\"}",
        1.0,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        node.metric("mountlag_kubelet_nudges_total{result=\"error\"}")
            .await
            .unwrap()
            .unwrap_or(0.0)
            >= 1.0
    );
    // The log line names what was refused: the verb, the resource and the namespace.
    let log = node.agent_log();
    let line = log
        .lines()
        .find(|l| l.contains("nudge failed"))
        .unwrap_or_else(|| panic!("no `nudge failed` line:\n{log}"));
    eprintln!("the agent said: {line}");
    for needle in [
        "forbidden",
        "cannot patch resource",
        "pods",
        NAMESPACE,
        "edge-0",
    ] {
        assert!(line.contains(needle), "{needle:?} missing from: {line}");
    }
    let stats = node.api.stats();
    assert_eq!(
        stats.forbidden.keys().collect::<Vec<_>>(),
        vec![&("patch".to_owned(), "pods".to_owned())],
        "only the nudge was refused"
    );
    // Everything else goes on: still ready, the watches still work, Events can be written.
    let (code, body) = node.get("/readyz").await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        node.api
            .pod(NAMESPACE, "edge-0")
            .unwrap()
            .metadata
            .annotations
            .unwrap_or_default()
            .is_empty(),
        "the refused patch changed nothing"
    );
    keys.assert_not_in("agent log", &node.all_agent_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_secret_read_binding_readiness_names_the_secret_it_cannot_read() {
    if !can_run() {
        return;
    }
    // What a secret-reads.yaml that forgot the namespace installs: the ClusterRole is there,
    // no RoleBinding grants it in the controllers' namespace.
    let (mut rbac, user) = overlay_rbac();
    let secret_bindings: Vec<(String, String)> = rbac
        .bindings
        .iter()
        .filter(|b| {
            b.namespace.as_deref() == Some(NAMESPACE) && b.role_ref.name == "mountlag-secret-reader"
        })
        .map(|b| (b.kind.clone(), b.name.clone()))
        .collect();
    assert_eq!(
        secret_bindings,
        vec![(
            "RoleBinding".to_owned(),
            "mountlag-secret-reader".to_owned()
        )]
    );
    for (kind, name) in &secret_bindings {
        assert!(rbac.remove_binding(kind, name, Some(NAMESPACE)));
    }
    assert!(!rbac.allows(&user, "watch", "", "secrets", NAMESPACE));
    let (mut node, dir) = node_under(rbac, &user, &agent_config("1s", "30s", true)).await;
    let mut keys = KeyRing::new("rbac test CA").unwrap();
    node.api.apply_secret(&keys.secret("edge-tls")).unwrap();
    node.api
        .create_pod(&ingress_pod("edge-0", &[("app", "edge")], "edge-tls", None))
        .unwrap();
    start_agent(&mut node, &dir);

    let expected = format!("Secret(s) not synced: {NAMESPACE}/edge-tls");
    let start = Instant::now();
    let mut seen_since = None;
    loop {
        // A request that times out on a loaded machine says nothing about readiness.
        let Ok((code, body)) = node.get("/readyz").await else {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "/readyz does not answer\n{}",
                node.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if body.contains(&expected) {
            assert_eq!(code, 503, "{body}");
            let since = *seen_since.get_or_insert_with(Instant::now);
            // It stays that way: the watch retries, and keeps being refused.
            if since.elapsed() > Duration::from_secs(3) {
                break;
            }
        } else {
            assert!(seen_since.is_none(), "readiness changed to {code}: {body}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "/readyz never named the Secret: {code} {body}\n{}",
            node.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        node.metric("mountlag_api_errors_total{resource=\"secrets\",reason=\"Forbidden\"}")
            .await
            .unwrap()
            .unwrap_or(0.0)
            >= 1.0,
        "{}",
        node.get("/metrics").await.unwrap().1
    );
    let log = node.agent_log();
    let line = log
        .lines()
        .find(|l| l.contains("secret watch failed"))
        .unwrap_or_else(|| panic!("no `secret watch failed` line:\n{log}"));
    eprintln!("the agent said: {line}");
    for needle in ["forbidden", "cannot list resource", "secrets", "edge-tls"] {
        assert!(line.contains(needle), "{needle:?} missing from: {line}");
    }
    let stats = node.api.stats();
    assert!(
        stats
            .forbidden
            .keys()
            .all(|(_, resource)| resource == "secrets"),
        "only Secret reads were refused: {:?}",
        stats.forbidden
    );
    keys.assert_not_in("agent log", &node.all_agent_logs());
}

/// Every kustomization a user may apply: each directory of deploy/overlays (there is no
/// top-level kustomization, deploy/README.md). Read from the disk, so that a new overlay is
/// checked without being listed here.
fn variants() -> Vec<String> {
    let mut overlays: Vec<String> = std::fs::read_dir(rbac::deploy_dir().join("overlays"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("kustomization.yaml").exists())
        .map(|e| format!("overlays/{}", e.file_name().to_string_lossy()))
        .collect();
    overlays.sort();
    for expected in [
        "overlays/ingress-nginx",
        "overlays/traefik-crd",
        "overlays/haproxy-ingress",
        "overlays/contour",
        "overlays/istio",
        "overlays/nginx",
        "overlays/haproxy",
        "overlays/traefik",
        "overlays/no-nudge",
        "overlays/cluster-wide-secrets",
        "overlays/traefik-restart",
    ] {
        assert!(
            overlays.iter().any(|o| o == expected),
            "{expected}: {overlays:?}"
        );
    }
    assert!(
        !rbac::deploy_dir().join("kustomization.yaml").exists(),
        "deploy/ has no top-level kustomization (deploy/README.md)"
    );
    overlays
}

/// The ClusterRole every Secret read goes through (deploy/base/rbac/secrets.yaml).
const SECRET_READER: &str = "mountlag-secret-reader";

/// Everything the agent may be granted: (API group, resource) → verbs.
fn documented_permissions() -> BTreeMap<(&'static str, &'static str), BTreeSet<&'static str>> {
    BTreeMap::from([
        (
            ("", "pods"),
            BTreeSet::from(["get", "list", "watch", "patch"]),
        ),
        (("", "secrets"), BTreeSet::from(["get", "list", "watch"])),
        (
            ("events.k8s.io", "events"),
            BTreeSet::from(["create", "patch"]),
        ),
        (
            ("networking.k8s.io", "ingresses"),
            BTreeSet::from(["list", "watch"]),
        ),
        (
            ("networking.k8s.io", "ingressclasses"),
            BTreeSet::from(["list", "watch"]),
        ),
        (
            ("gateway.networking.k8s.io", "gateways"),
            BTreeSet::from(["list", "watch"]),
        ),
        (
            ("gateway.networking.k8s.io", "gatewayclasses"),
            BTreeSet::from(["list", "watch"]),
        ),
        (
            ("gateway.networking.k8s.io", "referencegrants"),
            BTreeSet::from(["list", "watch"]),
        ),
        (
            ("gateway.networking.k8s.io", "httproutes"),
            BTreeSet::from(["list", "watch"]),
        ),
        (
            ("gateway.networking.k8s.io", "tlsroutes"),
            BTreeSet::from(["list", "watch"]),
        ),
        (
            ("cert-manager.io", "certificates"),
            BTreeSet::from(["list", "watch"]),
        ),
        (("apps", "replicasets"), BTreeSet::from(["get"])),
        (("apps", "deployments"), BTreeSet::from(["get", "patch"])),
        (("apps", "daemonsets"), BTreeSet::from(["get", "patch"])),
        (("apps", "statefulsets"), BTreeSet::from(["get", "patch"])),
        (
            ("cert-manager.io", "issuers"),
            BTreeSet::from(["list", "watch"]),
        ),
        (
            ("cert-manager.io", "clusterissuers"),
            BTreeSet::from(["list", "watch"]),
        ),
    ])
}

/// The kinds a configuration's controllers watch for their hosts: (API group, resource).
fn route_resources(config: &mountlag::config::Config) -> BTreeSet<(&'static str, &'static str)> {
    use mountlag::routes::RouteKind;
    let mut out = BTreeSet::new();
    for routes in config.controllers.iter().filter_map(|c| c.routes.as_ref()) {
        for kind in routes.kinds() {
            let group = match kind {
                RouteKind::Ingress | RouteKind::IngressClass => "networking.k8s.io",
                _ => "gateway.networking.k8s.io",
            };
            out.insert((group, kind.resource()));
        }
    }
    out
}

fn config_of(docs: &[Value], variant: &str) -> mountlag::config::Config {
    let [cm] = rbac::of_kind(docs, "ConfigMap")[..] else {
        panic!("{variant}: expected one ConfigMap");
    };
    let text = cm["data"]["mountlag.yaml"]
        .as_str()
        .unwrap_or_else(|| panic!("{variant}: the ConfigMap has no mountlag.yaml"));
    mountlag::config::Config::from_yaml(text, &format!("{variant} ConfigMap"))
        .unwrap_or_else(|errors| panic!("{variant}: invalid configuration:\n{errors}"))
}

#[test]
fn every_variant_grants_what_its_configuration_needs_and_nothing_more() {
    if !can_render() {
        return;
    }
    let allowed = documented_permissions();
    for variant in &variants() {
        let docs = rendered(variant);
        let user = rbac::daemonset_user(&docs).unwrap();
        let rbac = Rbac::from_documents(&docs).unwrap();
        let config = config_of(&docs, variant);

        // Nothing beyond the documented verbs; no wildcards; nothing non-resource.
        for role in &rbac.roles {
            for rule in &role.rules {
                assert!(rule.non_resource_urls.is_none(), "{variant}: {role:?}");
                assert!(rule.resource_names.is_none(), "{variant}: {role:?}");
                for group in rule.api_groups.as_deref().unwrap_or_default() {
                    for resource in rule.resources.as_deref().unwrap_or_default() {
                        let verbs = allowed
                            .get(&(group.as_str(), resource.as_str()))
                            .unwrap_or_else(|| {
                                panic!(
                                    "{variant}: {}/{} grants {group}/{resource}",
                                    role.kind, role.name
                                )
                            });
                        for verb in &rule.verbs {
                            assert!(
                                verbs.contains(verb.as_str()),
                                "{variant}: {}/{} grants {verb} on {group}/{resource}",
                                role.kind,
                                role.name
                            );
                        }
                    }
                }
            }
        }
        // Every binding binds the agent's ServiceAccount only.
        for binding in &rbac.bindings {
            assert_eq!(binding.subjects.len(), 1, "{variant}: {binding:?}");
            let subject = &binding.subjects[0];
            assert_eq!(subject.kind, "ServiceAccount", "{variant}: {binding:?}");
            assert_eq!(
                rbac::service_account_user(
                    subject.namespace.as_deref().unwrap_or_default(),
                    &subject.name
                ),
                user,
                "{variant}: {binding:?}"
            );
        }

        // The pod watch is cluster-scoped (field-selected to the node).
        for verb in ["list", "watch"] {
            assert!(
                rbac.allows(&user, verb, "", "pods", ""),
                "{variant}: {verb} pods"
            );
        }
        let secrets = rbac.grants(&user, "watch", "", "secrets");
        assert_eq!(
            secrets,
            rbac.grants(&user, "list", "", "secrets"),
            "{variant}"
        );
        assert_eq!(
            secrets.cluster_wide,
            variant == "overlays/cluster-wide-secrets",
            "{variant}: cluster-wide Secret reads are opt-in: {secrets:?}"
        );
        let patch = rbac.grants(&user, "patch", "", "pods");
        assert_eq!(
            patch.cluster_wide || !patch.namespaces.is_empty(),
            config.nudge.enabled,
            "{variant}: pods patch is granted exactly when the nudge is enabled"
        );
        // And wherever it is granted, the admission policy narrows it to the nudge.
        let policies = ValidatingPolicies::from_documents(&docs).unwrap();
        let restarts = config.controllers.iter().any(|c| c.may_restart());
        let mut expected_policies = Vec::new();
        if config.nudge.enabled {
            expected_policies.push("mountlag-nudge-only");
        }
        if restarts {
            expected_policies.push("mountlag-restart-only");
        }
        let mut names = policies.names();
        names.sort_unstable();
        assert_eq!(
            names, expected_policies,
            "{variant}: the nudge policy is in force exactly when pods may be patched, the restart policy exactly when workloads may"
        );
        // Workloads: patched (and read) exactly when a controller may restart them.
        for resource in ["deployments", "daemonsets", "statefulsets"] {
            for verb in ["get", "patch"] {
                let grant = rbac.grants(&user, verb, "apps", resource);
                assert_eq!(
                    grant.cluster_wide || !grant.namespaces.is_empty(),
                    restarts,
                    "{variant}: {verb} {resource} is granted exactly when a controller restarts its workload"
                );
            }
        }
        // Secrets are read only through the base's ClusterRole: no Role or other ClusterRole
        // grants them, and whatever binds it binds the agent (checked above).
        for role in &rbac.roles {
            let grants_secrets = role.rules.iter().any(|rule| {
                rule.resources
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|r| r == "secrets")
            });
            assert_eq!(
                grants_secrets,
                role.kind == "ClusterRole" && role.name == SECRET_READER,
                "{variant}: {} {} and Secrets",
                role.kind,
                role.name
            );
        }
        let namespaces: Vec<String> = match config.watched_namespaces() {
            Some(set) => set.into_iter().map(str::to_owned).collect(),
            // Controllers in any namespace: a namespace nobody listed must be covered too.
            None => vec!["any-namespace".to_owned()],
        };
        assert!(!namespaces.is_empty(), "{variant}: no controller");
        for ns in &namespaces {
            assert!(
                secrets.covers(ns),
                "{variant}: Secrets in {ns:?}: {secrets:?}"
            );
            for verb in ["create", "patch"] {
                assert!(
                    rbac.allows(&user, verb, "events.k8s.io", "events", ns),
                    "{variant}: {verb} events in {ns:?}"
                );
            }
            if config.nudge.enabled {
                assert!(patch.covers(ns), "{variant}: patch pods in {ns:?}");
            }
        }
        // Ingress and Gateway API kinds: read cluster-wide exactly when a controller's hosts
        // come from them, and only the kinds its `routes` need.
        let needed = route_resources(&config);
        for (group, resource) in documented_permissions().keys() {
            if group.is_empty() || *group == "events.k8s.io" {
                continue;
            }
            if *group == "apps" {
                continue;
            }
            if *group == "cert-manager.io" {
                // The cert-manager view: read-only, cluster-wide, exactly while it is on.
                for verb in ["list", "watch"] {
                    let grant = rbac.grants(&user, verb, group, resource);
                    assert_eq!(
                        grant.cluster_wide, config.cert_manager.enabled,
                        "{variant}: {verb} {group}/{resource}: {grant:?}"
                    );
                }
                continue;
            }
            for verb in ["list", "watch"] {
                let grant = rbac.grants(&user, verb, group, resource);
                assert_eq!(
                    grant.cluster_wide,
                    needed.contains(&(*group, *resource)),
                    "{variant}: {verb} {group}/{resource}: {grant:?}"
                );
                assert!(grant.namespaces.is_empty(), "{variant}: {grant:?}");
            }
        }
        // Secret reads exist only where the configuration has controllers.
        if !secrets.cluster_wide {
            let wanted: BTreeSet<String> = namespaces.iter().cloned().collect();
            assert_eq!(
                secrets.namespaces, wanted,
                "{variant}: Secret reads beyond (or short of) the config"
            );
        }
    }
}

/// The base alone reads no Secret anywhere: its ClusterRole `mountlag-secret-reader` is bound
/// by nobody, so the namespaces are an input of each overlay (secret-reads.yaml), and the base
/// never creates an object in a namespace that may not exist.
#[test]
fn the_base_alone_grants_no_secret_read_and_binds_nothing_to_the_secret_reader() {
    if !can_render() {
        return;
    }
    let docs = rendered("base");
    let user = rbac::daemonset_user(&docs).unwrap();
    let rbac = Rbac::from_documents(&docs).unwrap();
    assert!(
        rbac.roles
            .iter()
            .any(|r| r.kind == "ClusterRole" && r.name == SECRET_READER),
        "the base ships the ClusterRole {SECRET_READER}: {:?}",
        rbac.roles
    );
    for verb in ["get", "list", "watch"] {
        let grants = rbac.grants(&user, verb, "", "secrets");
        assert_eq!(
            grants,
            rbac::Grants::default(),
            "{verb} secrets: {grants:?}"
        );
        for ns in [
            "ingress",
            "ingress-nginx",
            "kube-system",
            "mountlag-system",
            "",
        ] {
            assert!(
                !rbac.allows(&user, verb, "", "secrets", ns),
                "{verb} secrets in {ns:?}"
            );
        }
    }
    let bound: Vec<&str> = rbac
        .bindings
        .iter()
        .filter(|b| b.role_ref.name == SECRET_READER)
        .map(|b| b.name.as_str())
        .collect();
    assert!(
        bound.is_empty(),
        "bindings to {SECRET_READER} in the base: {bound:?}"
    );
    // Nothing namespaced outside the agent's own namespace.
    for doc in &docs {
        if let Some(ns) = doc["metadata"]["namespace"].as_str() {
            assert_eq!(ns, "mountlag-system", "{}", doc["metadata"]);
        }
    }
}

/// Each overlay's Secret reads are an input beside its configuration: secret-reads.yaml holds
/// one RoleBinding of the secret reader per namespace mountlag.yaml names, and nothing else.
#[test]
fn every_overlay_grants_secret_reads_in_secret_reads_yaml_only() {
    for variant in variants() {
        let dir = rbac::deploy_dir().join(&variant);
        let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
        let file = dir.join("secret-reads.yaml");
        if variant == "overlays/cluster-wide-secrets" {
            assert!(
                !file.exists(),
                "{variant}: reads Secrets cluster-wide, no secret-reads.yaml"
            );
            continue;
        }
        assert!(
            kustomization.contains("\n  - secret-reads.yaml\n"),
            "{variant}: kustomization.yaml lists secret-reads.yaml"
        );
        let docs = rbac::documents(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let config = mountlag::config::Config::from_yaml(
            &std::fs::read_to_string(dir.join("mountlag.yaml")).unwrap(),
            "mountlag.yaml",
        )
        .unwrap();
        let mut namespaces = BTreeSet::new();
        for doc in &docs {
            assert_eq!(doc["kind"], "RoleBinding", "{variant}: {doc}");
            assert_eq!(doc["metadata"]["name"], SECRET_READER, "{variant}: {doc}");
            assert_eq!(
                doc["roleRef"],
                serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SECRET_READER}),
                "{variant}"
            );
            namespaces.insert(doc["metadata"]["namespace"].as_str().unwrap().to_owned());
        }
        let wanted: BTreeSet<String> = config
            .watched_namespaces()
            .unwrap_or_else(|| panic!("{variant}: every controller names its namespaces"))
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            namespaces, wanted,
            "{variant}: secret-reads.yaml against mountlag.yaml"
        );
    }
}

/// `components/route-secrets` on top of an API-driven overlay: Secret reads in its listed
/// namespace as well, and nowhere else; the route kinds cluster-wide, read-only.
#[test]
fn the_route_secrets_component_adds_secret_reads_in_the_namespaces_it_lists_only() {
    if !can_render() {
        return;
    }
    // kustomize refuses absolute paths: the kustomization lives in the repository's target/.
    let repo = rbac::deploy_dir().parent().unwrap().to_path_buf();
    let target = repo.join("target");
    std::fs::create_dir_all(&target).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("route-secrets-")
        .tempdir_in(&target)
        .unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources:\n  - ../../deploy/overlays/ingress-nginx\n\
         components:\n  - ../../deploy/components/route-secrets\n",
    )
    .unwrap();
    let docs = rbac::documents(&rbac::render(dir.path()).unwrap()).unwrap();
    let user = rbac::daemonset_user(&docs).unwrap();
    let rbac = Rbac::from_documents(&docs).unwrap();
    for verb in ["get", "list", "watch"] {
        let grant = rbac.grants(&user, verb, "", "secrets");
        assert!(!grant.cluster_wide, "{grant:?}");
        assert_eq!(
            grant.namespaces,
            BTreeSet::from(["ingress-nginx".to_owned(), "default".to_owned()]),
            "{verb}"
        );
    }
    for resource in ["ingresses", "ingressclasses"] {
        let grant = rbac.grants(&user, "watch", "networking.k8s.io", resource);
        assert!(grant.cluster_wide, "{resource}: {grant:?}");
        assert!(!rbac.allows(&user, "create", "networking.k8s.io", resource, ""));
    }
    assert!(
        !rbac
            .grants(&user, "watch", "gateway.networking.k8s.io", "gateways")
            .cluster_wide,
        "ingress-nginx reads no Gateway"
    );
}
