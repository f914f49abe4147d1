//! `testbed bench api-driven`: issue 18's headline for a controller that reads its Secrets
//! through the API (ingress-nginx and the like), reported apart from file mode because the
//! controller's own pickup bounds it.
//!
//! The real agent with the shipped defaults (only the controller's probe port is set) verifies
//! an ingress-nginx-style controller (`ingress_controller`, real TLS, its own API watches) that
//! serves one Ingress host. Each rotation puts a new leaf in the API and times, from that
//! write:
//!
//! - **controller serves**: the stand-in switched the host to the new leaf (its pickup; the
//!   `lag` option delays it as ingress-nginx's `--sync-rate-limit` of 0.3/s can, up to ~3.3 s);
//! - **agent verified**: the agent's `/status` shows the host served with the new leaf and
//!   matching the API (polled every 25 ms; the status is published at most every 100 ms on a
//!   small node, so this figure carries up to ~125 ms of reporting delay).
//!
//! Measured, never asserted; docs/benchmarks.md records the figures.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bench::Summary;
use crate::certs::{LeafSpec, TestCa};
use crate::cluster::{NAMESPACE, NODE, TestNode, free_port, tls_secret};
use crate::ingress_controller::IngressControllerStandIn;
use crate::node::NodeConfig;

const HOST: &str = "shop.bench.example";

/// Samples of one controller lag.
#[derive(Debug, Default)]
pub struct ApiDrivenRun {
    pub lag: Duration,
    /// Secret written → the controller serves the new leaf.
    pub served: Vec<Duration>,
    /// Secret written → the agent's status shows it served and matching.
    pub verified: Vec<Duration>,
}

fn config(port: u16) -> String {
    format!(
        "controllers:\n  - name: ingress-nginx\n    profile: ingress-nginx\n    namespaces: [{NAMESPACE}]\n    \
         probe:\n      ports: [{port}]\n"
    )
}

fn host_matches(status: &Value, fingerprint: &str) -> bool {
    status["hosts"].as_array().into_iter().flatten().any(|h| {
        h["host"] == HOST
            && h["served"][0]["fingerprintSha256"] == fingerprint
            && h["served"][0]["match"] == true
    })
}

/// `rotations` renewals against a controller that applies what it sees `lag` later.
pub async fn run_lag(rotations: usize, lag: Duration) -> anyhow::Result<ApiDrivenRun> {
    let port = free_port()?;
    let mut node = TestNode::start(NodeConfig::new(NODE), &config(port)).await?;
    let api_error = |e| anyhow::anyhow!("{e:?}");
    let ca = TestCa::new("api-driven bench CA")?;
    let first = ca.issue(&LeafSpec::valid_for([HOST]))?;
    node.api
        .apply_object(&json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}
        }))
        .map_err(api_error)?;
    node.api
        .apply_secret(&tls_secret(NAMESPACE, "shop-tls", &first))
        .map_err(api_error)?;
    node.api
        .apply_object(&json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "shop", "namespace": NAMESPACE},
            "spec": {"ingressClassName": "nginx", "tls": [{"hosts": [HOST], "secretName": "shop-tls"}]}
        }))
        .map_err(api_error)?;
    let controller =
        IngressControllerStandIn::start(node.api.client(), "k8s.io/ingress-nginx", port).await?;
    controller
        .wait_serving(HOST, &first.fingerprint_sha256, Duration::from_secs(30))
        .await?;
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ingress-nginx-0", "namespace": NAMESPACE, "labels": {
            "app.kubernetes.io/name": "ingress-nginx",
            "app.kubernetes.io/component": "controller"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "controller", "image": "x"}]}
    }))?;
    node.create_pod_and_wait_started(&pod).await?;
    node.start_agent()?;
    node.wait_ready(Duration::from_secs(60)).await?;
    node.wait_status(Duration::from_secs(60), "the first leaf verified", |s| {
        host_matches(s, &first.fingerprint_sha256)
    })
    .await?;
    controller.set_lag(lag);

    let mut run = ApiDrivenRun {
        lag,
        ..ApiDrivenRun::default()
    };
    for _ in 0..rotations {
        let leaf = ca.issue(&LeafSpec::valid_for([HOST]))?;
        let written = Instant::now();
        node.api
            .apply_secret(&tls_secret(NAMESPACE, "shop-tls", &leaf))
            .map_err(api_error)?;
        let bound = lag + Duration::from_secs(60);
        let served = async {
            controller
                .wait_serving(HOST, &leaf.fingerprint_sha256, bound)
                .await
                .map(|()| written.elapsed())
        };
        let verified = async {
            node.wait_status(bound, "the renewal verified", |s| {
                host_matches(s, &leaf.fingerprint_sha256)
            })
            .await
            .map(|_| written.elapsed())
        };
        let (served, verified) = tokio::join!(served, verified);
        run.served.push(served?);
        run.verified.push(verified?);
        // The verification's confirming rounds end before the next renewal.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    node.stop_agent()?;
    drop(controller);
    Ok(run)
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

/// `testbed bench api-driven`.
pub async fn run(rotations: usize, lags: &[Duration]) -> anyhow::Result<()> {
    println!(
        "## Secret updated in the API → new leaf served by an API-driven controller and verified by the agent (shipped defaults, {rotations} rotations per lag)\n"
    );
    println!(
        "| controller lag | rotations | controller serves p50 / p99 ms | agent verified p50 / p99 / max ms | verified − served p50 / p99 ms |"
    );
    println!("|---|---:|---:|---:|---:|");
    for lag in lags {
        let run = run_lag(rotations, *lag).await?;
        let gaps: Vec<Duration> = run
            .verified
            .iter()
            .zip(&run.served)
            .map(|(v, s)| v.saturating_sub(*s))
            .collect();
        let (Some(s), Some(v), Some(g)) = (
            Summary::of(&run.served),
            Summary::of(&run.verified),
            Summary::of(&gaps),
        ) else {
            continue;
        };
        println!(
            "| {} ms | {} | {} / {} | {} / {} / {} | {} / {} |",
            run.lag.as_millis(),
            v.count,
            ms(s.p50),
            ms(s.p99),
            ms(v.p50),
            ms(v.p99),
            ms(v.max),
            ms(g.p50),
            ms(g.p99),
        );
    }
    Ok(())
}
