//! `testbed bench verify`: what continuous verification costs. The real agent probes an
//! ingress-nginx-style controller (`ingress_controller`, real TLS) serving N Ingress hosts:
//!
//! - busy: `verify.interval: 1s` and a budget of 1000 handshakes/s, so the agent probes as fast
//!   as it may — handshakes per second and agent CPU per handshake (utime + stime of
//!   `/proc/<pid>/stat`);
//! - idle: the defaults (`verify.interval: 5m`, 5 handshakes/s) after the first round — the
//!   agent's CPU and its API requests in the window (counted by the API stand-in per user; the
//!   agent has a user of its own);
//! - no controller pod on the node: the agent's API requests and open watches in the window.
//!
//! Measured, never asserted; docs/benchmarks.md records the figures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::apiserver::{ADMIN_TOKEN, ADMIN_USER, AllowAll, ApiServerConfig};
use crate::bench_footprint::cpu_ticks;
use crate::certs::{LeafSpec, TestCa};
use crate::cluster::{NAMESPACE, NODE, TestNode, free_port, ingress_nginx_pod, tls_secret};
use crate::ingress_controller::IngressControllerStandIn;
use crate::node::NodeConfig;

const USER_HZ: f64 = 100.0;
const AGENT_TOKEN: &str = "bench-agent-token";
const AGENT_USER: &str = "bench-agent";

#[derive(Debug, Clone)]
pub struct VerifyBenchOptions {
    /// Ingress hosts per row.
    pub hosts: Vec<usize>,
    /// Busy window per row, seconds.
    pub busy_window_s: u64,
    /// Idle window per row, seconds.
    pub idle_window_s: u64,
    /// Window of the node without controller pods, seconds.
    pub no_pods_window_s: u64,
}

#[derive(Debug, Clone)]
pub struct VerifyRow {
    pub hosts: usize,
    pub busy_handshakes_per_s: f64,
    pub busy_cpu_percent: f64,
    pub cpu_ms_per_handshake: f64,
    pub idle_cpu_percent: f64,
    pub idle_handshakes: f64,
    pub idle_api_requests: u64,
    pub ready_s: f64,
}

fn config(port: u16, interval: &str, per_second: u32) -> String {
    format!(
        "nudge:\n  enabled: false\nverify:\n  interval: {interval}\n  handshakesPerSecond: {per_second}\n\
         controllers:\n  - name: ingress-nginx\n    profile: ingress-nginx\n    namespaces: [{NAMESPACE}]\n    \
         probe:\n      ports: [{port}]\n"
    )
}

/// A node whose API knows the agent as its own user (so its requests can be told apart).
async fn node(config: &str) -> anyhow::Result<(TestNode, tempfile::TempDir)> {
    let api_config = ApiServerConfig {
        tokens: BTreeMap::from([
            (AGENT_TOKEN.to_owned(), AGENT_USER.to_owned()),
            (ADMIN_TOKEN.to_owned(), ADMIN_USER.to_owned()),
        ]),
        authorizer: Arc::new(AllowAll),
        ..ApiServerConfig::default()
    };
    let node = TestNode::start_with(api_config, NodeConfig::new(NODE), config).await?;
    let dir = tempfile::tempdir()?;
    node.api
        .write_kubeconfig(&dir.path().join("kubeconfig"), Some(AGENT_TOKEN))?;
    Ok((node, dir))
}

async fn wait_handshakes(node: &TestNode, at_least: f64, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while node.handshakes().await < at_least {
        anyhow::ensure!(
            start.elapsed() < timeout,
            "fewer than {at_least} handshakes within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn agent_pid(node: &TestNode) -> anyhow::Result<u32> {
    Ok(node.agent.as_ref().context("agent")?.pid())
}

pub async fn row(hosts: usize, o: &VerifyBenchOptions) -> anyhow::Result<VerifyRow> {
    let port = free_port()?;
    let (mut node, dir) = node(&config(port, "1s", 1000)).await?;
    let ca = TestCa::new("verify bench CA")?;
    let leaf = ca.issue(&LeafSpec::valid_for(["*.bench.example"]))?;
    let names: Vec<String> = (0..hosts).map(|i| format!("h{i}.bench.example")).collect();
    let api_error = |e| anyhow::anyhow!("{e:?}");
    node.api
        .apply_object(&json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}
        }))
        .map_err(api_error)?;
    node.api
        .apply_secret(&tls_secret(NAMESPACE, "bench-tls", &leaf))
        .map_err(api_error)?;
    node.api
        .apply_object(&json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "bench", "namespace": NAMESPACE},
            "spec": {"ingressClassName": "nginx",
                     "tls": [{"hosts": names, "secretName": "bench-tls"}]}
        }))
        .map_err(api_error)?;
    let controller =
        IngressControllerStandIn::start(node.api.client(), "k8s.io/ingress-nginx", port).await?;
    controller
        .wait_serving(
            &names[hosts - 1],
            &leaf.fingerprint_sha256,
            Duration::from_secs(30),
        )
        .await?;
    let pod = ingress_nginx_pod("ingress-nginx-0");
    node.create_pod_and_wait_started(&pod).await?;

    // Busy: as fast as the agent may probe.
    node.start_agent_with_kubeconfig(&dir.path().join("kubeconfig"))?;
    node.wait_ready(Duration::from_secs(60)).await?;
    wait_handshakes(&node, (hosts + 1) as f64, Duration::from_secs(120)).await?;
    let pid = agent_pid(&node)?;
    let (h0, c0, t0) = (node.handshakes().await, cpu_ticks(pid)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(o.busy_window_s)).await;
    let (h1, c1, elapsed) = (
        node.handshakes().await,
        cpu_ticks(pid)?,
        t0.elapsed().as_secs_f64(),
    );
    let busy_cpu_ms = (c1 - c0) as f64 * 1000.0 / USER_HZ;
    node.stop_agent()?;

    // Idle: the defaults, after the first round.
    std::fs::write(node.config_path(), config(port, "5m", 5))?;
    let started = Instant::now();
    node.start_agent_with_kubeconfig(&dir.path().join("kubeconfig"))?;
    node.wait_ready(Duration::from_secs(60)).await?;
    let ready_s = started.elapsed().as_secs_f64();
    // The first verification (every host served the Secret's leaf) is over: checks are now
    // verify.interval apart.
    node.wait_status(Duration::from_secs(600), "every host verified", |s| {
        s["hosts"]
            .as_array()
            .is_some_and(|h| h.len() == hosts && h.iter().all(|h| h["served"][0]["match"] == true))
    })
    .await?;
    // Verification confirms over a few rounds after the first match: wait for it to end.
    let settle = Instant::now();
    loop {
        let before = node.handshakes().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        if node.handshakes().await == before {
            break;
        }
        anyhow::ensure!(
            settle.elapsed() < Duration::from_secs(120),
            "the agent still probes two minutes after verification"
        );
    }
    let pid = agent_pid(&node)?;
    node.api.reset_stats();
    let (ih0, ic0, it0) = (node.handshakes().await, cpu_ticks(pid)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(o.idle_window_s)).await;
    let (ih1, ic1, idle_elapsed) = (
        node.handshakes().await,
        cpu_ticks(pid)?,
        it0.elapsed().as_secs_f64(),
    );
    let idle_api_requests = node
        .api
        .stats()
        .requests_by_user
        .get(AGENT_USER)
        .copied()
        .unwrap_or(0);
    node.stop_agent()?;
    drop(controller);
    Ok(VerifyRow {
        hosts,
        busy_handshakes_per_s: (h1 - h0) / elapsed,
        busy_cpu_percent: busy_cpu_ms / elapsed / 10.0,
        cpu_ms_per_handshake: busy_cpu_ms / (h1 - h0).max(1.0),
        idle_cpu_percent: (ic1 - ic0) as f64 * 1000.0 / USER_HZ / idle_elapsed / 10.0,
        // The idle window's handshakes also count the scrapes' own (none) and any check
        // that fell into it.
        idle_handshakes: ih1 - ih0,
        idle_api_requests,
        ready_s,
    })
}

/// The agent's API requests and open watches on a node without controller pods.
pub async fn without_controller_pods(window_s: u64) -> anyhow::Result<(u64, usize)> {
    let (mut node, dir) = node("stuckAfter: 120s\n").await?;
    node.start_agent_with_kubeconfig(&dir.path().join("kubeconfig"))?;
    node.wait_ready(Duration::from_secs(30)).await?;
    node.api.reset_stats();
    tokio::time::sleep(Duration::from_secs(window_s)).await;
    let stats = node.api.stats();
    let requests = stats.requests_by_user.get(AGENT_USER).copied().unwrap_or(0);
    node.stop_agent()?;
    Ok((requests, stats.open_watches))
}

pub fn run(o: &VerifyBenchOptions) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            let mut rows = Vec::new();
            for &hosts in &o.hosts {
                eprintln!("bench verify: {hosts} hosts");
                rows.push(row(hosts.max(1), o).await?);
            }
            let (requests, watches) = without_controller_pods(o.no_pods_window_s).await?;
            println!(
                "| hosts | busy: handshakes/s | busy: agent CPU | CPU per handshake | start → ready | idle (verify.interval 5m): agent CPU | idle: handshakes | idle: API requests |"
            );
            println!("|---|---|---|---|---|---|---|---|");
            for r in &rows {
                println!(
                    "| {} | {:.0} | {:.1}% | {:.2} ms | {:.2} s | {:.3}% | {:.0} | {} |",
                    r.hosts,
                    r.busy_handshakes_per_s,
                    r.busy_cpu_percent,
                    r.cpu_ms_per_handshake,
                    r.ready_s,
                    r.idle_cpu_percent,
                    r.idle_handshakes,
                    r.idle_api_requests
                );
            }
            println!(
                "\nbusy window {} s, idle window {} s; a node without controller pods: {requests} API request(s) by the agent in {} s, {watches} watch(es) open",
                o.busy_window_s, o.idle_window_s, o.no_pods_window_s
            );
            Ok(())
        })
}
