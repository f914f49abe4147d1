//! `testbed bench scale`: hundreds of real agents (release `mountlag`, one process each, each
//! with its own node name and token) against one API stand-in, to check the API cost per agent
//! and in total, measured, never asserted.
//!
//! ```text
//!  ApiServer (stand-in, in this process) ◀── agent node-0000 ┐ mounting nodes: a pod mounting
//!        │ requests, bytes, watches per user                  │ --secrets-per-node Secrets,
//!        │                               ◀── agent node-0015 ┘ kubelet stand-in (real timing)
//!        │                               ◀── agent node-0016 ┐ API-driven nodes: an
//!        │                                   ingress stand-in │ ingress-nginx-style pod (the
//!        │                               ◀── agent node-0019 ┘ stand-in serving Ingress hosts)
//!        │                               ◀── agent node-0020 … node-0499: no controller pod, no
//!        │                                   kubelet stand-in, a mount namespace of its own
//! ```
//!
//! Phases: the **start storm** (every agent spawned at once; until all are ready and the
//! controller nodes settled), an **idle window** (requests, bytes and watches per agent), and
//! a **renewal wave** (every served Secret renewed, with its Certificate's status, as
//! cert-manager would; until every agent shows the new leaves). Each agent has a user of its
//! own, so the stand-in's per-user counters ([`ApiStats`]) separate them; the ingress-nginx
//! stand-ins have users of their own too (they list every Secret, as ingress-nginx does).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Pod, Secret};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::apiserver::{ADMIN_TOKEN, ADMIN_USER, ApiServer, ApiServerConfig, ApiStats};
use crate::bench_footprint::{cpu_ticks, memory};
use crate::certs::{IssuedLeaf, LeafSpec, TestCa};
use crate::cluster::{free_port, tls_secret};
use crate::ingress_controller::IngressControllerStandIn;
use crate::multinode::{NodeAgent, NodeHost, NodeSpec};

/// Namespace of the mounting controller pods and their Secrets.
const EDGE_NS: &str = "ingress";
/// Namespace of the ingress-nginx pods (the profile's usual one).
const NGINX_NS: &str = "ingress-nginx";
/// Namespace of the Ingresses the ingress-nginx pods serve, and their Secrets.
const APP_NS: &str = "shop";
const INGRESS_CONTROLLER: &str = "k8s.io/ingress-nginx";
const CERTIFICATE_ANNOTATION: &str = "cert-manager.io/certificate-name";
const USER_HZ: f64 = 100.0;

/// `testbed bench scale` options.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// Agents (nodes) in all.
    pub agents: usize,
    /// Nodes with a controller pod (the first ones), API-driven ones included.
    pub controller_nodes: usize,
    /// Of the controller nodes, those running an ingress-nginx-style pod (hosts from
    /// Ingresses) instead of a pod mounting its Secrets.
    pub api_driven_nodes: usize,
    /// Secrets a mounting node's pod mounts (each node its own), and Ingress hosts (each with
    /// its own Secret) the ingress-nginx pods serve (the same set on every API-driven node).
    pub secrets_per_node: usize,
    /// TLS Secrets no controller uses, in other namespaces (a cluster-wide list would carry
    /// them).
    pub unused_secrets: usize,
    /// Idle window.
    pub window: Duration,
    /// The renewal wave's rotations are spread evenly over this.
    pub wave_spread: Duration,
    /// The stand-in's BOOKMARK interval (the real server: about a minute).
    pub bookmark_interval: Duration,
}

/// What runs on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeKind {
    /// A pod of profile `edge` mounting its Secrets (kubelet stand-in at real timing).
    Mounting,
    /// An ingress-nginx pod: hosts from Ingresses, Secrets read from the API.
    ApiDriven,
    /// No controller pod.
    Plain,
}

impl NodeKind {
    fn label(self) -> &'static str {
        match self {
            NodeKind::Mounting => "controller pod mounting its Secrets",
            NodeKind::ApiDriven => "ingress-nginx pod (hosts from Ingresses)",
            NodeKind::Plain => "no controller pod",
        }
    }

    const ALL: [NodeKind; 3] = [NodeKind::Mounting, NodeKind::ApiDriven, NodeKind::Plain];
}

/// One node of the simulated cluster.
#[derive(Debug, Clone)]
struct NodePlan {
    name: String,
    kind: NodeKind,
    token: String,
    user: String,
}

fn node_name(i: usize) -> String {
    format!("node-{i:04}")
}

fn agent_user(node: &str) -> String {
    format!("mountlag:{node}")
}

fn plan(o: &ScaleOptions) -> Vec<NodePlan> {
    let mounting = o.controller_nodes - o.api_driven_nodes;
    (0..o.agents)
        .map(|i| {
            let name = node_name(i);
            let kind = if i < mounting {
                NodeKind::Mounting
            } else if i < o.controller_nodes {
                NodeKind::ApiDriven
            } else {
                NodeKind::Plain
            };
            NodePlan {
                token: format!("scale-agent-token-{name}"),
                user: agent_user(&name),
                name,
                kind,
            }
        })
        .collect()
}

fn ingress_user(node: &str) -> String {
    format!("ingress-nginx:{node}")
}

/// The one configuration every agent runs with (one DaemonSet).
fn agent_config(probe_port: u16) -> String {
    format!(
        "controllers:\n  - name: edge\n    selector: app=edge\n    namespaces: [{EDGE_NS}]\n    reload: none\n\
         \x20 - name: ingress-nginx\n    profile: ingress-nginx\n    probe:\n      ports: [{probe_port}]\n"
    )
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// The Certificate cert-manager keeps for `secret`, Ready, renewed `revision` times.
fn certificate(namespace: &str, secret: &str, host: &str, revision: u64) -> Value {
    let now = OffsetDateTime::now_utc();
    json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"namespace": namespace, "name": secret},
        "spec": {"secretName": secret, "dnsNames": [host],
                 "issuerRef": {"name": "bench-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                            "message": "Certificate is up to date and has not expired",
                            "lastTransitionTime": rfc3339(now)}],
            "notBefore": rfc3339(now - time::Duration::hours(1)),
            "notAfter": rfc3339(now + time::Duration::days(90)),
            "renewalTime": rfc3339(now + time::Duration::days(60)),
            "revision": revision,
        },
    })
}

/// One served Secret: where, which host, and the Certificate that issues it.
#[derive(Debug, Clone)]
struct Served {
    namespace: &'static str,
    name: String,
    host: String,
    /// The node whose agent serves it (`None`: every API-driven node).
    node: Option<String>,
}

fn served_secrets(o: &ScaleOptions, nodes: &[NodePlan]) -> Vec<Served> {
    let mut out = Vec::new();
    for node in nodes.iter().filter(|n| n.kind == NodeKind::Mounting) {
        for j in 0..o.secrets_per_node {
            out.push(Served {
                namespace: EDGE_NS,
                name: format!("{}-tls-{j:03}", node.name),
                host: format!("h{j}.{}.edge.example", node.name),
                node: Some(node.name.clone()),
            });
        }
    }
    if o.api_driven_nodes > 0 {
        for j in 0..o.secrets_per_node {
            out.push(Served {
                namespace: APP_NS,
                name: format!("shop-tls-{j:03}"),
                host: format!("h{j}.shop.example"),
                node: None,
            });
        }
    }
    out
}

fn with_certificate_annotation(mut secret: Secret, certificate: &str) -> Secret {
    secret.metadata.annotations = Some(
        [(CERTIFICATE_ANNOTATION.to_owned(), certificate.to_owned())]
            .into_iter()
            .collect(),
    );
    secret
}

fn api_error(e: crate::apiserver::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Creates every object of the cluster but the pods; returns the served Secrets' leaves.
fn populate(
    api: &ApiServer,
    o: &ScaleOptions,
    served: &[Served],
    ca: &TestCa,
) -> anyhow::Result<BTreeMap<String, IssuedLeaf>> {
    let now = OffsetDateTime::now_utc();
    api.apply_object(&json!({
        "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
        "metadata": {"name": "bench-ca"}, "spec": {"ca": {"secretName": "bench-ca"}},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KeyPairVerified",
                                   "message": "Signing CA verified", "lastTransitionTime": rfc3339(now)}]},
    }))
    .map_err(api_error)?;
    api.apply_object(&json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "nginx"}, "spec": {"controller": INGRESS_CONTROLLER},
    }))
    .map_err(api_error)?;
    let mut leaves = BTreeMap::new();
    for s in served {
        let leaf = ca.issue(&LeafSpec::valid_for([s.host.clone()]))?;
        api.apply_secret(&with_certificate_annotation(
            tls_secret(s.namespace, &s.name, &leaf),
            &s.name,
        ))
        .map_err(api_error)?;
        api.apply_object(&certificate(s.namespace, &s.name, &s.host, 1))
            .map_err(api_error)?;
        if s.node.is_none() {
            api.apply_object(&json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"namespace": APP_NS, "name": s.name},
                "spec": {"ingressClassName": "nginx",
                         "tls": [{"hosts": [s.host], "secretName": s.name}],
                         "rules": [{"host": s.host}]},
            }))
            .map_err(api_error)?;
        }
        leaves.insert(s.name.clone(), leaf);
    }
    // Secrets nobody serves, in ten other namespaces: what a cluster-wide list would carry.
    let unused = ca.issue(&LeafSpec::valid_for(["unused.example"]))?;
    for i in 0..o.unused_secrets {
        api.apply_secret(&tls_secret(
            &format!("apps-{:02}", i % 10),
            &format!("app-tls-{i:05}"),
            &unused,
        ))
        .map_err(api_error)?;
    }
    Ok(leaves)
}

/// The controller pod of a controller node.
fn controller_pod(node: &NodePlan, served: &[Served]) -> anyhow::Result<Pod> {
    let pod = match node.kind {
        NodeKind::Mounting => {
            let secrets: Vec<&Served> = served
                .iter()
                .filter(|s| s.node.as_deref() == Some(node.name.as_str()))
                .collect();
            let mounts: Vec<Value> = (0..secrets.len())
                .map(|j| json!({"name": format!("tls-{j}"), "mountPath": format!("/etc/tls/{j}"), "readOnly": true}))
                .collect();
            let volumes: Vec<Value> = secrets
                .iter()
                .enumerate()
                .map(|(j, s)| json!({"name": format!("tls-{j}"), "secret": {"secretName": s.name}}))
                .collect();
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"namespace": EDGE_NS, "name": format!("edge-{}", node.name),
                             "labels": {"app": "edge"}},
                "spec": {"nodeName": node.name,
                         "containers": [{"name": "nginx", "image": "nginx", "volumeMounts": mounts}],
                         "volumes": volumes},
            })
        }
        NodeKind::ApiDriven => json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": NGINX_NS, "name": format!("ingress-nginx-{}", node.name),
                         "labels": {"app.kubernetes.io/name": "ingress-nginx",
                                    "app.kubernetes.io/component": "controller"}},
            "spec": {"nodeName": node.name,
                     "containers": [{"name": "controller", "image": "ingress-nginx"}]},
        }),
        NodeKind::Plain => bail!("{} runs no controller pod", node.name),
    };
    Ok(serde_json::from_value(pod)?)
}

fn pod_running(api: &ApiServer, namespace: &str, name: &str) -> bool {
    api.pod(namespace, name)
        .and_then(|p| p.status?.phase)
        .is_some_and(|phase| phase == "Running")
}

/// Raises the soft open-files limit to the hard one: the stand-in holds a connection per
/// agent, the readiness poll one more each.
fn raise_nofile() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

const INOTIFY_INSTANCES: &str = "/proc/sys/fs/inotify/max_user_instances";

/// `fs.inotify.max_user_instances` raised for the run, restored when dropped. Every agent
/// has one inotify instance and they all run as root here, while on a real cluster each node
/// has its own limit (128 by default).
#[derive(Debug)]
struct InotifyInstances {
    restore: Option<u64>,
}

impl InotifyInstances {
    fn at_least(wanted: u64) -> anyhow::Result<Self> {
        let read = || -> anyhow::Result<u64> {
            Ok(std::fs::read_to_string(INOTIFY_INSTANCES)?.trim().parse()?)
        };
        let old = read().with_context(|| format!("reading {INOTIFY_INSTANCES}"))?;
        if old >= wanted {
            return Ok(Self { restore: None });
        }
        std::fs::write(INOTIFY_INSTANCES, wanted.to_string())
            .with_context(|| format!("raising {INOTIFY_INSTANCES} to {wanted}"))?;
        eprintln!("bench scale: fs.inotify.max_user_instances {old} → {wanted} for the run");
        Ok(Self { restore: Some(old) })
    }
}

impl Drop for InotifyInstances {
    fn drop(&mut self) {
        if let Some(old) = self.restore
            && let Err(e) = std::fs::write(INOTIFY_INSTANCES, old.to_string())
        {
            eprintln!("bench scale: restoring {INOTIFY_INSTANCES} to {old}: {e}");
        }
    }
}

/// `MemAvailable` of /proc/meminfo, MiB.
fn mem_available_mib() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no MemAvailable in /proc/meminfo")?;
    Ok(kib / 1024)
}

/// The cluster being measured.
struct Cluster {
    api: ApiServer,
    nodes: Vec<NodePlan>,
    served: Vec<Served>,
    leaves: BTreeMap<String, IssuedLeaf>,
    ca: TestCa,
    agents: Vec<NodeAgent>,
    ingress: Vec<IngressControllerStandIn>,
    /// (node index, pod namespace, pod name) of the controller pods.
    pods: Vec<(usize, String, String)>,
}

impl Cluster {
    /// Whether node `i`'s agent shows its controller's Secrets as they are in the API now:
    /// every mount in sync with the current leaf, or every host served with it.
    fn settled(&self, i: usize, status: &Value) -> bool {
        if status["ready"] != true {
            return false;
        }
        let node = &self.nodes[i];
        let current = |secret: &str| {
            self.leaves
                .get(secret)
                .map(|l| l.fingerprint_sha256.as_str())
        };
        match node.kind {
            NodeKind::Plain => true,
            NodeKind::Mounting => {
                let mounts = status["mounts"].as_array().map_or(&[][..], Vec::as_slice);
                mounts.len() == self.served_by(&node.name)
                    && mounts.iter().all(|m| {
                        m["state"] == "in_sync"
                            && m["secrets"][0]["name"].as_str().and_then(current)
                                == m["certificate"]["fingerprintSha256"].as_str()
                    })
            }
            NodeKind::ApiDriven => {
                let hosts = status["hosts"].as_array().map_or(&[][..], Vec::as_slice);
                hosts.len() == self.served_by_api()
                    && hosts.iter().all(|h| {
                        let secret = h["secret"].as_str().and_then(|s| s.split('/').nth(1));
                        h["state"] == "ok"
                            && secret.and_then(current).is_some()
                            && h["served"][0]["fingerprintSha256"].as_str()
                                == secret.and_then(current)
                    })
            }
        }
    }

    fn served_by(&self, node: &str) -> usize {
        self.served
            .iter()
            .filter(|s| s.node.as_deref() == Some(node))
            .count()
    }

    fn served_by_api(&self) -> usize {
        self.served.iter().filter(|s| s.node.is_none()).count()
    }

    /// Waits until every agent is ready and every controller node settled; returns, per
    /// agent, the first moment (since `since`) it answered `/readyz` 200.
    async fn wait_settled(
        &mut self,
        since: Instant,
        timeout: Duration,
        what: &str,
    ) -> anyhow::Result<Vec<Duration>> {
        let mut ready: Vec<Option<Duration>> = vec![None; self.agents.len()];
        let mut settled = vec![false; self.agents.len()];
        loop {
            for agent in &mut self.agents {
                if agent.exited() {
                    bail!(
                        "{what}: the agent of {} exited:\n{}",
                        agent.name,
                        tail(&agent.log_text())
                    );
                }
            }
            let pending: Vec<usize> = (0..self.agents.len())
                .filter(|&i| ready[i].is_none() || !settled[i])
                .collect();
            if pending.is_empty() {
                return Ok(ready.into_iter().flatten().collect());
            }
            let this = &*self;
            let answers: Vec<(usize, bool, bool)> = futures::stream::iter(pending)
                .map(|i| async move {
                    let agent = &this.agents[i];
                    if this.nodes[i].kind == NodeKind::Plain {
                        let up = agent.ready().await;
                        (i, up, up)
                    } else {
                        match agent.status().await {
                            Some(status) => (i, status["ready"] == true, this.settled(i, &status)),
                            None => (i, false, false),
                        }
                    }
                })
                .buffer_unordered(32)
                .collect()
                .await;
            for (i, up, done) in answers {
                if up && ready[i].is_none() {
                    ready[i] = Some(since.elapsed());
                }
                settled[i] = done;
            }
            if since.elapsed() > timeout {
                let late: Vec<&str> = (0..self.agents.len())
                    .filter(|&i| ready[i].is_none() || !settled[i])
                    .map(|i| self.nodes[i].name.as_str())
                    .collect();
                let first = late
                    .first()
                    .and_then(|n| self.agents.iter().find(|a| a.name == *n));
                bail!(
                    "{what}: {} agents not settled within {timeout:?}: {:?}\n{}",
                    late.len(),
                    &late[..late.len().min(10)],
                    first.map(|a| tail(&a.log_text())).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the stand-in's watch counters stay unchanged for `quiet`.
    async fn wait_watches_quiet(&self, quiet: Duration, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let key = |s: &ApiStats| (s.open_watches, s.watches_started);
        let mut last = key(&self.api.stats());
        let mut since = Instant::now();
        while since.elapsed() < quiet {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = key(&self.api.stats());
            if now != last {
                last = now;
                since = Instant::now();
            }
            if start.elapsed() > timeout {
                bail!("watches still opening after {timeout:?}");
            }
        }
        Ok(())
    }

    fn agent_cpu(&self) -> u64 {
        self.agents
            .iter()
            .filter_map(|a| cpu_ticks(a.pid()).ok())
            .sum()
    }
}

fn tail(text: &str) -> String {
    let mut cut = text.len().saturating_sub(3000);
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    text[cut..].to_owned()
}

/// What one phase cost, from the stand-in's counters.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: &'static str,
    pub elapsed: Duration,
    pub stats: ApiStats,
    /// This process's CPU (API stand-in, kubelet and ingress stand-ins, the poller), seconds.
    pub testbed_cpu_s: f64,
    /// All agents' CPU, seconds.
    pub agents_cpu_s: f64,
}

/// The figures of a run.
#[derive(Debug, Clone)]
pub struct ScaleRun {
    pub options: ScaleOptions,
    /// Per kind, the users of its agents.
    users: BTreeMap<NodeKind, BTreeSet<String>>,
    ingress_users: Vec<String>,
    pub spawn_all: Duration,
    /// Spawn of the first agent → each agent's first `/readyz` 200.
    pub ready: Vec<Duration>,
    pub storm: Phase,
    pub idle: Phase,
    pub wave: Phase,
    pub rotations: usize,
    /// Per kind: (VmRSS, RssAnon) KiB of each agent at the end of the idle window.
    pub memory: BTreeMap<NodeKind, Vec<(u64, u64)>>,
    pub secrets_in_cluster: usize,
    /// The counters before the storm: the ingress-nginx stand-ins' own start.
    pub ingress_start: ApiStats,
    /// Mean JSON size of one object of each kind the agents read, bytes (for the arithmetic
    /// in docs/architecture.md).
    pub sizes: Vec<(&'static str, f64)>,
}

/// Mean JSON size of the objects of each kind the agents read, as the stand-in stores them
/// (a watch event adds ~30 bytes of envelope).
fn object_sizes(api: &ApiServer) -> Vec<(&'static str, f64)> {
    [
        ("v1", "Secret", "Secret (TLS, ECDSA P-256 leaf + CA)"),
        ("cert-manager.io/v1", "Certificate", "Certificate"),
        ("networking.k8s.io/v1", "Ingress", "Ingress"),
        ("v1", "Pod", "Pod (controller pod, running)"),
    ]
    .into_iter()
    .map(|(version, kind, label)| {
        let objects = api.objects(version, kind);
        let total: usize = objects
            .iter()
            .map(|o| serde_json::to_vec(o).map_or(0, |v| v.len()))
            .sum();
        (label, total as f64 / objects.len().max(1) as f64)
    })
    .collect()
}

fn phase(
    name: &'static str,
    started: Instant,
    stats: ApiStats,
    testbed_ticks: u64,
    agent_ticks: u64,
) -> Phase {
    Phase {
        name,
        elapsed: started.elapsed(),
        stats,
        testbed_cpu_s: testbed_ticks as f64 / USER_HZ,
        agents_cpu_s: agent_ticks as f64 / USER_HZ,
    }
}

pub async fn run_scale(o: &ScaleOptions) -> anyhow::Result<ScaleRun> {
    anyhow::ensure!(
        o.api_driven_nodes <= o.controller_nodes && o.controller_nodes <= o.agents,
        "--api-driven-nodes ≤ --controller-nodes ≤ --agents"
    );
    // 17–26 MiB VmRSS per agent measured, 13–16 MiB of it the binary's pages, shared by all;
    // 20 MiB each leaves a margin.
    let needed = 20 * o.agents as u64 + 1024;
    let available = mem_available_mib()?;
    anyhow::ensure!(
        available >= needed,
        "{} agents need about {needed} MiB free; {available} MiB available",
        o.agents
    );
    let nofile = raise_nofile()?;
    anyhow::ensure!(
        nofile >= 4 * o.agents as u64 + 1024,
        "open files limit {nofile} is too low for {} agents",
        o.agents
    );
    // One instance per agent, plus the default's headroom for everything else of the machine.
    let _inotify = InotifyInstances::at_least(o.agents as u64 + 128)?;
    let nodes = plan(o);
    let mut tokens = BTreeMap::from([(ADMIN_TOKEN.to_owned(), ADMIN_USER.to_owned())]);
    for n in &nodes {
        tokens.insert(n.token.clone(), n.user.clone());
        if n.kind == NodeKind::ApiDriven {
            tokens.insert(format!("ingress-{}", n.token), ingress_user(&n.name));
        }
    }
    let api = ApiServer::start(ApiServerConfig {
        tokens,
        bookmark_interval: o.bookmark_interval,
        // Resuming watches never fall out of the window here (no 410 relists the real
        // server's watch cache would not cause either).
        history_limit: 200_000,
        ..ApiServerConfig::default()
    })
    .await?;
    let dir = tempfile::Builder::new()
        .prefix("mountlag-scale-")
        .tempdir()?;
    let ca = TestCa::new("scale bench CA")?;
    let served = served_secrets(o, &nodes);
    eprintln!(
        "bench scale: {} served Secrets, {} unused, {} agents",
        served.len(),
        o.unused_secrets,
        o.agents
    );
    let leaves = populate(&api, o, &served, &ca)?;
    let probe_port = free_port()?;
    let config = agent_config(probe_port);

    // Controller nodes first: their kubelet stand-ins start the pods before any agent runs.
    let mut hosts = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let kubeconfig = dir.path().join(format!("{}.kubeconfig", n.name));
        api.write_kubeconfig(&kubeconfig, Some(&n.token))?;
        let plain = n.kind == NodeKind::Plain;
        let spec = NodeSpec {
            kubeconfig: Some(&kubeconfig),
            kubelet_time_factor: (!plain).then_some(1.0),
            rust_log: None,
            private_mounts: plain,
            ..NodeSpec::new(&n.name, u32::try_from(i)?, &config)
        };
        hosts.push(NodeHost::start(&api, dir.path(), &spec)?);
    }
    let mut pods = Vec::new();
    for (i, n) in nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.kind != NodeKind::Plain)
    {
        let pod = api
            .create_pod(&controller_pod(n, &served)?)
            .map_err(api_error)?;
        pods.push((
            i,
            pod.metadata.namespace.unwrap_or_default(),
            pod.metadata.name.unwrap_or_default(),
        ));
    }
    let start = Instant::now();
    while !pods.iter().all(|(_, ns, name)| pod_running(&api, ns, name)) {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "controller pods not running within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ingress = Vec::new();
    for (i, n) in nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.kind == NodeKind::ApiDriven)
    {
        let client = api.client_with_token(Some(&format!("ingress-{}", n.token)))?;
        let addr = SocketAddr::new(hosts[i].pod_ip.into(), probe_port);
        let controller =
            IngressControllerStandIn::start_on(client, INGRESS_CONTROLLER, addr).await?;
        if let Some(last) = served.iter().rfind(|s| s.node.is_none()) {
            controller
                .wait_serving(
                    &last.host,
                    &leaves[&last.name].fingerprint_sha256,
                    Duration::from_secs(120),
                )
                .await?;
        }
        ingress.push(controller);
    }

    // What the ingress-nginx stand-ins' own start cost (their lists of every Secret), for
    // comparison; nothing else has talked to the stand-in yet.
    let ingress_start = api.stats();

    // The start storm: every agent at once, as after a DaemonSet rollout on a running cluster.
    eprintln!("bench scale: start storm");
    api.reset_stats();
    let me = std::process::id();
    let testbed0 = cpu_ticks(me)?;
    let storm_start = Instant::now();
    let mut agents = Vec::with_capacity(hosts.len());
    for host in hosts {
        agents.push(host.spawn_agent()?);
    }
    let spawn_all = storm_start.elapsed();
    let mut cluster = Cluster {
        api: api.clone(),
        nodes,
        served,
        leaves,
        ca,
        agents,
        ingress,
        pods,
    };
    let ready = cluster
        .wait_settled(storm_start, Duration::from_secs(900), "start storm")
        .await?;
    cluster
        .wait_watches_quiet(Duration::from_secs(3), Duration::from_secs(120))
        .await?;
    let storm = phase(
        "start storm",
        storm_start,
        api.stats(),
        cpu_ticks(me)?.saturating_sub(testbed0),
        cluster.agent_cpu(),
    );

    // The idle window.
    eprintln!("bench scale: idle window of {:?}", o.window);
    api.reset_stats();
    let (testbed0, agents0, idle_start) = (cpu_ticks(me)?, cluster.agent_cpu(), Instant::now());
    tokio::time::sleep(o.window).await;
    let idle = phase(
        "idle window",
        idle_start,
        api.stats(),
        cpu_ticks(me)?.saturating_sub(testbed0),
        cluster.agent_cpu().saturating_sub(agents0),
    );
    let mut memory_by_kind: BTreeMap<NodeKind, Vec<(u64, u64)>> = BTreeMap::new();
    for (i, agent) in cluster.agents.iter().enumerate() {
        if let Ok(m) = memory(agent.pid()) {
            memory_by_kind
                .entry(cluster.nodes[i].kind)
                .or_default()
                .push((m.rss, m.anon));
        }
    }

    // The renewal wave: every served Secret renewed once, its Certificate's status with it.
    let renewals: Vec<(Served, IssuedLeaf)> = cluster
        .served
        .iter()
        .map(|s| {
            Ok((
                s.clone(),
                cluster.ca.issue(&LeafSpec::valid_for([s.host.clone()]))?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    eprintln!(
        "bench scale: renewal wave of {} Secrets over {:?}",
        renewals.len(),
        o.wave_spread
    );
    api.reset_stats();
    let (testbed0, agents0, wave_start) = (cpu_ticks(me)?, cluster.agent_cpu(), Instant::now());
    let step = o
        .wave_spread
        .checked_div(u32::try_from(renewals.len().max(1))?)
        .unwrap_or_default();
    for (k, (s, leaf)) in renewals.iter().enumerate() {
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            wave_start + step * u32::try_from(k)?,
        ))
        .await;
        api.apply_secret(&with_certificate_annotation(
            tls_secret(s.namespace, &s.name, leaf),
            &s.name,
        ))
        .map_err(api_error)?;
        api.apply_object(&certificate(s.namespace, &s.name, &s.host, 2))
            .map_err(api_error)?;
        cluster.leaves.insert(s.name.clone(), leaf.clone());
    }
    let rotations = renewals.len();
    cluster
        .wait_settled(
            wave_start,
            o.wave_spread + Duration::from_secs(600),
            "renewal wave",
        )
        .await?;
    // Events and watch renewals that trail the last change.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let wave = phase(
        "renewal wave",
        wave_start,
        api.stats(),
        cpu_ticks(me)?.saturating_sub(testbed0),
        cluster.agent_cpu().saturating_sub(agents0),
    );

    let mut users: BTreeMap<NodeKind, BTreeSet<String>> = BTreeMap::new();
    for n in &cluster.nodes {
        users.entry(n.kind).or_default().insert(n.user.clone());
    }
    let ingress_users = cluster
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::ApiDriven)
        .map(|n| ingress_user(&n.name))
        .collect();
    let run = ScaleRun {
        options: o.clone(),
        users,
        ingress_users,
        spawn_all,
        ready,
        storm,
        idle,
        wave,
        rotations,
        memory: memory_by_kind,
        secrets_in_cluster: cluster.served.len() + o.unused_secrets,
        ingress_start,
        sizes: object_sizes(&api),
    };
    drop(cluster);
    Ok(run)
}

/// Agents first (killed), then each controller node's kubelet loop and its pod's mounts, also
/// when the run fails (before the temporary directory goes).
impl Drop for Cluster {
    fn drop(&mut self) {
        self.ingress.clear();
        for agent in &mut self.agents {
            agent.kill();
        }
        for (i, namespace, name) in &self.pods {
            let Some(agent) = self.agents.get_mut(*i) else {
                continue;
            };
            drop(agent.node.take());
            if let Some(uid) = self.api.pod(namespace, name).and_then(|p| p.metadata.uid)
                && let Err(e) = agent.kubelet.teardown_pod(&uid)
            {
                eprintln!("bench scale: teardown of {namespace}/{name}: {e:#}");
            }
        }
    }
}

// ------------------------------------------------------------------------------- the report

/// Min, median, max and sum of a set of values.
#[derive(Debug, Clone, Copy, Default)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
    sum: f64,
    n: usize,
}

impl Spread {
    fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        Self {
            min: v[0],
            median: v[(v.len() - 1) / 2],
            max: v[v.len() - 1],
            sum: v.iter().sum(),
            n: v.len(),
        }
    }

    fn cell(&self, digits: usize) -> String {
        if self.n == 0 {
            return "-".into();
        }
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = digits
        )
    }
}

fn get(map: &BTreeMap<String, u64>, user: &str) -> f64 {
    map.get(user).copied().unwrap_or(0) as f64
}

fn get_usize(map: &BTreeMap<String, usize>, user: &str) -> f64 {
    map.get(user).copied().unwrap_or(0) as f64
}

fn kib(bytes: f64) -> f64 {
    bytes / 1024.0
}

/// Per kind of node: requests, bytes, watch events per agent in a phase (`per_hour` scales
/// by the phase's length).
fn print_per_agent(run: &ScaleRun, p: &Phase, per_hour: bool) {
    let scale = if per_hour {
        3600.0 / p.elapsed.as_secs_f64().max(1e-9)
    } else {
        1.0
    };
    let unit = if per_hour { "/h" } else { "" };
    println!(
        "| node kind | agents | requests{unit} per agent | response KiB{unit} per agent | watch events{unit} per agent | open watches per agent (end) | API connections per agent (end) | all agents: requests{unit} | all agents: MiB{unit} |"
    );
    println!("|---|---:|---|---|---|---|---|---:|---:|");
    for kind in NodeKind::ALL {
        let Some(users) = run.users.get(&kind) else {
            continue;
        };
        let s = &p.stats;
        let requests = Spread::of(users.iter().map(|u| get(&s.requests_by_user, u) * scale));
        let bytes = Spread::of(users.iter().map(|u| kib(get(&s.bytes_by_user, u)) * scale));
        let events = Spread::of(
            users
                .iter()
                .map(|u| get(&s.watch_events_by_user, u) * scale),
        );
        let watches = Spread::of(users.iter().map(|u| get_usize(&s.open_watches_by_user, u)));
        let connections = Spread::of(
            users
                .iter()
                .map(|u| get_usize(&s.open_connections_by_user, u)),
        );
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.2} |",
            kind.label(),
            users.len(),
            requests.cell(1),
            bytes.cell(1),
            events.cell(1),
            watches.cell(0),
            connections.cell(0),
            requests.sum,
            bytes.sum / 1024.0
        );
    }
    if !run.ingress_users.is_empty() {
        let s = &p.stats;
        let users = &run.ingress_users;
        let requests = Spread::of(users.iter().map(|u| get(&s.requests_by_user, u) * scale));
        let bytes = Spread::of(users.iter().map(|u| kib(get(&s.bytes_by_user, u)) * scale));
        let events = Spread::of(
            users
                .iter()
                .map(|u| get(&s.watch_events_by_user, u) * scale),
        );
        let watches = Spread::of(users.iter().map(|u| get_usize(&s.open_watches_by_user, u)));
        println!(
            "| for comparison: the ingress-nginx stand-in itself (lists every Secret) | {} | {} | {} | {} | {} | - | {:.0} | {:.2} |",
            users.len(),
            requests.cell(1),
            bytes.cell(1),
            events.cell(1),
            watches.cell(0),
            requests.sum,
            bytes.sum / 1024.0
        );
    }
}

/// Per kind of node: every kind of request its agents made (summed), per agent.
fn print_shapes(run: &ScaleRun, p: &Phase) {
    println!("| node kind | verb | resource | scope | selector | requests per agent |");
    println!("|---|---|---|---|---|---:|");
    for kind in NodeKind::ALL {
        let Some(users) = run.users.get(&kind) else {
            continue;
        };
        let mut rows: BTreeMap<(String, String, &'static str, String), u64> = BTreeMap::new();
        for (shape, n) in &p.stats.requests_by_shape {
            if users.contains(&shape.user) {
                *rows
                    .entry((
                        shape.verb.clone(),
                        shape.resource.clone(),
                        shape.scope,
                        shape.selector.clone(),
                    ))
                    .or_default() += n;
            }
        }
        for ((verb, resource, scope, selector), n) in rows {
            println!(
                "| {} | {verb} | {resource} | {scope} | {} | {:.2} |",
                kind.label(),
                if selector.is_empty() { "-" } else { &selector },
                n as f64 / users.len() as f64
            );
        }
    }
}

/// Requests that would read every Secret: a cluster-wide or namespace-wide Secret list or
/// watch without a `metadata.name` selector, by agents.
fn unselected_secret_reads(run: &ScaleRun, p: &Phase) -> u64 {
    p.stats
        .requests_by_shape
        .iter()
        .filter(|(s, _)| {
            s.resource == "secrets"
                && matches!(s.verb.as_str(), "list" | "watch")
                && !s.selector.contains("metadata.name")
                && run.users.values().any(|u| u.contains(&s.user))
        })
        .map(|(_, n)| n)
        .sum()
}

/// Agents that opened any cluster-scoped request, by kind.
fn cluster_scoped_by_kind(run: &ScaleRun, p: &Phase) -> BTreeMap<NodeKind, (usize, Vec<String>)> {
    let mut out = BTreeMap::new();
    for (kind, users) in &run.users {
        let mut agents = BTreeSet::new();
        let mut resources = BTreeSet::new();
        for shape in p.stats.requests_by_shape.keys() {
            // The pod watch is cluster-wide in URL but field-selected to the node.
            let node_pods = shape.resource == "pods" && shape.selector.contains("spec.nodeName");
            if shape.scope == "cluster" && !node_pods && users.contains(&shape.user) {
                agents.insert(shape.user.clone());
                resources.insert(
                    format!("{} {}", shape.resource, shape.selector)
                        .trim()
                        .to_owned(),
                );
            }
        }
        out.insert(*kind, (agents.len(), resources.into_iter().collect()));
    }
    out
}

pub fn print(run: &ScaleRun) {
    let o = &run.options;
    let mounting = o.controller_nodes - o.api_driven_nodes;
    println!(
        "{} agents: {mounting} nodes with a pod mounting {} Secrets each, {} nodes with an \
         ingress-nginx pod serving {} Ingress hosts (one Secret each, the same on every such \
         node), {} nodes without controller pods; {} TLS Secrets in the cluster ({} unused), \
         one Certificate per served Secret; BOOKMARKs every {} s\n",
        o.agents,
        o.secrets_per_node,
        o.api_driven_nodes,
        o.secrets_per_node,
        o.agents - o.controller_nodes,
        run.secrets_in_cluster,
        o.unused_secrets,
        o.bookmark_interval.as_secs()
    );

    let ready = Spread::of(run.ready.iter().map(Duration::as_secs_f64));
    println!("### Start storm\n");
    println!(
        "all {} agents spawned in {:.1} s; spawn of the first → each agent's first /readyz 200: \
         median {:.1} s, last {:.1} s; every controller node settled (mounts in sync, hosts \
         verified) and no watch opening for 3 s: {:.1} s after the first spawn",
        o.agents,
        run.spawn_all.as_secs_f64(),
        ready.median,
        ready.max,
        run.storm.elapsed.as_secs_f64()
    );
    println!(
        "CPU over the storm: testbed process (API stand-in, kubelet and ingress stand-ins, the \
         readiness poll) {:.1} s, all agents {:.1} s ({:.0} ms per agent)\n",
        run.storm.testbed_cpu_s,
        run.storm.agents_cpu_s,
        run.storm.agents_cpu_s * 1e3 / o.agents as f64
    );
    print_per_agent(run, &run.storm, false);
    if !run.ingress_users.is_empty() {
        let s = &run.ingress_start;
        let requests = Spread::of(
            run.ingress_users
                .iter()
                .map(|u| get(&s.requests_by_user, u)),
        );
        let bytes = Spread::of(
            run.ingress_users
                .iter()
                .map(|u| kib(get(&s.bytes_by_user, u))),
        );
        println!(
            "\nfor comparison, each ingress-nginx stand-in's own start before the storm (its \
             cluster-wide lists and watches of Secrets, Ingresses and IngressClasses): {} \
             requests, {} KiB",
            requests.cell(0),
            bytes.cell(1)
        );
    }
    println!("\nrequests of the storm by kind (per agent):\n");
    print_shapes(run, &run.storm);

    println!(
        "\n### Idle window ({:.0} s, figures per hour)\n",
        run.idle.elapsed.as_secs_f64()
    );
    print_per_agent(run, &run.idle, true);
    println!(
        "\nCPU over the window: testbed process {:.1} s, all agents {:.1} s ({:.3}% of a core per agent)",
        run.idle.testbed_cpu_s,
        run.idle.agents_cpu_s,
        run.idle.agents_cpu_s / o.agents as f64 / run.idle.elapsed.as_secs_f64() * 100.0
    );
    for (kind, samples) in &run.memory {
        let rss = Spread::of(samples.iter().map(|(rss, _)| *rss as f64 / 1024.0));
        let anon = Spread::of(samples.iter().map(|(_, anon)| *anon as f64 / 1024.0));
        println!(
            "memory, {}: VmRSS {} MiB, RssAnon {} MiB per agent",
            kind.label(),
            rss.cell(1),
            anon.cell(1)
        );
    }
    println!("\nrequests of the window by kind (per agent):\n");
    print_shapes(run, &run.idle);

    let w = &run.wave;
    println!(
        "\n### Renewal wave: {} Secrets renewed over {:.0} s (with their Certificates' status)\n",
        run.rotations,
        o.wave_spread.as_secs_f64()
    );
    println!(
        "first renewal → every agent shows every new leaf (+5 s): {:.1} s; CPU: testbed {:.1} s, \
         agents {:.1} s",
        w.elapsed.as_secs_f64(),
        w.testbed_cpu_s,
        w.agents_cpu_s
    );
    println!(
        "agent writes: pod PATCHes {} ({:.2} per renewal), Event creates {} (core {} + \
         events.k8s.io {}), Event PATCHes {}\n",
        w.stats.count("patch", "pods"),
        w.stats.count("patch", "pods") as f64 / run.rotations.max(1) as f64,
        w.stats.count("create", "events") + w.stats.count("create", "events.events.k8s.io"),
        w.stats.count("create", "events"),
        w.stats.count("create", "events.events.k8s.io"),
        w.stats.count("patch", "events") + w.stats.count("patch", "events.events.k8s.io"),
    );
    print_per_agent(run, w, false);
    let events: u64 = run
        .users
        .values()
        .flatten()
        .map(|u| w.stats.watch_events_by_user.get(u).copied().unwrap_or(0))
        .sum();
    let bytes: u64 = run
        .users
        .values()
        .flatten()
        .map(|u| w.stats.bytes_by_user.get(u).copied().unwrap_or(0))
        .sum();
    println!(
        "\nper renewal, to all agents together: {:.1} watch events, {:.1} KiB",
        events as f64 / run.rotations.max(1) as f64,
        kib(bytes as f64) / run.rotations.max(1) as f64
    );
    println!("\nrequests of the wave by kind (per agent):\n");
    print_shapes(run, w);

    let sizes: Vec<String> = run
        .sizes
        .iter()
        .map(|(kind, bytes)| format!("{kind} {bytes:.0} B"))
        .collect();
    println!("\nmean object sizes (JSON): {}", sizes.join(", "));

    println!("\n### What the agents never did\n");
    for p in [&run.storm, &run.idle, &run.wave] {
        println!(
            "- {}: Secret lists/watches without a metadata.name selector (cluster- or \
             namespace-wide) by any agent: {}",
            p.name,
            unselected_secret_reads(run, p)
        );
    }
    for (kind, (agents, resources)) in cluster_scoped_by_kind(run, &run.storm) {
        let total = run.users.get(&kind).map_or(0, BTreeSet::len);
        println!(
            "- start storm, {}: {agents} of {total} agents made cluster-scoped requests other than their node's pod watch{}",
            kind.label(),
            if resources.is_empty() {
                String::new()
            } else {
                format!(" ({})", resources.join(", "))
            }
        );
    }
}

/// `testbed bench scale`.
pub fn run(o: &ScaleOptions) -> anyhow::Result<()> {
    if let Err(why) = crate::real::can_mount() {
        bail!("bench scale needs root and tmpfs mounts: {why}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(run_scale(o))?;
    print(&result);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(agents: usize, controller: usize, api: usize) -> ScaleOptions {
        ScaleOptions {
            agents,
            controller_nodes: controller,
            api_driven_nodes: api,
            secrets_per_node: 3,
            unused_secrets: 0,
            window: Duration::from_secs(1),
            wave_spread: Duration::from_secs(1),
            bookmark_interval: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_first_nodes_run_controllers_mounting_ones_first() {
        let nodes = plan(&options(6, 3, 1));
        let kinds: Vec<NodeKind> = nodes.iter().map(|n| n.kind).collect();
        assert_eq!(
            kinds,
            [
                NodeKind::Mounting,
                NodeKind::Mounting,
                NodeKind::ApiDriven,
                NodeKind::Plain,
                NodeKind::Plain,
                NodeKind::Plain
            ]
        );
        let users: BTreeSet<&str> = nodes.iter().map(|n| n.user.as_str()).collect();
        assert_eq!(users.len(), 6, "one user per agent");
    }

    #[test]
    fn mounting_nodes_have_their_own_secrets_and_api_driven_ones_share_theirs() {
        let o = options(6, 3, 1);
        let served = served_secrets(&o, &plan(&o));
        assert_eq!(served.len(), 2 * 3 + 3);
        let names: BTreeSet<&str> = served.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.len(), served.len());
        assert_eq!(served.iter().filter(|s| s.node.is_none()).count(), 3);
    }

    #[test]
    fn spread_is_median_min_max() {
        let s = Spread::of([3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.min, s.median, s.max, s.sum), (1.0, 2.0, 10.0, 16.0));
        assert_eq!(Spread::of([]).cell(1), "-");
    }
}
