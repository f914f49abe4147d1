//! `testbed bench api-driven`: issue 18's headline for a controller that reads its Secrets
//! through the API (ingress-nginx and the like), reported apart from file mode because the
//! controller's own pickup bounds it.
//!
//! The real agent with the shipped defaults (only the controller's probe port is set) verifies
//! an ingress-nginx-style controller (`ingress_controller`, real TLS, its own API watches) that
//! serves `hosts` Ingress hosts, one Secret each. Each rotation renews every Secret, one after
//! the other as cert-manager would in a wave, and times, from the first write:
//!
//! - **controller serves**: the stand-in switched every host to its new leaf (its pickup; the
//!   `lag` option delays it as ingress-nginx's `--sync-rate-limit` of 0.3/s can, up to ~3.3 s);
//! - **agent verified**: the agent's `/status` shows every host served with its new leaf and
//!   matching the API (polled every 25 ms; the status is published at most every 100 ms on a
//!   small node, so this figure carries up to ~125 ms of reporting delay).
//!
//! Measured, never asserted; docs/benchmarks.md records the figures.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bench::Summary;
use crate::certs::{IssuedLeaf, LeafSpec, TestCa};
use crate::cluster::{NAMESPACE, NODE, TestNode, free_port, ingress_nginx_pod, tls_secret};
use crate::ingress_controller::IngressControllerStandIn;
use crate::node::NodeConfig;

fn host(i: usize) -> String {
    format!("h{i}.shop.bench.example")
}

fn secret_name(i: usize) -> String {
    format!("shop-tls-{i}")
}

/// Samples of one controller lag.
#[derive(Debug, Default)]
pub struct ApiDrivenRun {
    pub lag: Duration,
    /// First Secret written → the controller serves every new leaf.
    pub served: Vec<Duration>,
    /// First Secret written → the agent's status shows every one served and matching.
    pub verified: Vec<Duration>,
}

fn config(port: u16) -> String {
    format!(
        "controllers:\n  - name: ingress-nginx\n    profile: ingress-nginx\n    namespaces: [{NAMESPACE}]\n    \
         probe:\n      ports: [{port}]\n"
    )
}

/// Every host served with its expected leaf, matching.
fn hosts_match(status: &Value, fingerprints: &[String]) -> bool {
    fingerprints.iter().enumerate().all(|(i, fingerprint)| {
        let name = host(i);
        status["hosts"].as_array().into_iter().flatten().any(|h| {
            h["host"] == name.as_str()
                && h["served"][0]["fingerprintSha256"] == fingerprint.as_str()
                && h["served"][0]["match"] == true
        })
    })
}

/// `rotations` renewals of `hosts` Secrets each against a controller that applies what it
/// sees `lag` later.
pub async fn run_lag(
    rotations: usize,
    hosts: usize,
    lag: Duration,
) -> anyhow::Result<ApiDrivenRun> {
    let hosts = hosts.max(1);
    let port = free_port()?;
    let mut node = TestNode::start(NodeConfig::new(NODE), &config(port)).await?;
    let api_error = |e| anyhow::anyhow!("{e:?}");
    let ca = TestCa::new("api-driven bench CA")?;
    let issue = |i: usize| ca.issue(&LeafSpec::valid_for([host(i)]));
    let first: Vec<IssuedLeaf> = (0..hosts).map(issue).collect::<Result<_, _>>()?;
    node.api
        .apply_object(&json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}
        }))
        .map_err(api_error)?;
    for (i, leaf) in first.iter().enumerate() {
        node.api
            .apply_secret(&tls_secret(NAMESPACE, &secret_name(i), leaf))
            .map_err(api_error)?;
    }
    let tls: Vec<Value> = (0..hosts)
        .map(|i| json!({"hosts": [host(i)], "secretName": secret_name(i)}))
        .collect();
    node.api
        .apply_object(&json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "shop", "namespace": NAMESPACE},
            "spec": {"ingressClassName": "nginx", "tls": tls}
        }))
        .map_err(api_error)?;
    let controller =
        IngressControllerStandIn::start(node.api.client(), "k8s.io/ingress-nginx", port).await?;
    for (i, leaf) in first.iter().enumerate() {
        controller
            .wait_serving(&host(i), &leaf.fingerprint_sha256, Duration::from_secs(30))
            .await?;
    }
    let pod = ingress_nginx_pod("ingress-nginx-0");
    node.create_pod_and_wait_started(&pod).await?;
    node.start_agent()?;
    node.wait_ready(Duration::from_secs(60)).await?;
    let fingerprints = |leaves: &[IssuedLeaf]| -> Vec<String> {
        leaves
            .iter()
            .map(|l| l.fingerprint_sha256.clone())
            .collect()
    };
    let expected = fingerprints(&first);
    node.wait_status(Duration::from_secs(60), "the first leaves verified", |s| {
        hosts_match(s, &expected)
    })
    .await?;
    controller.set_lag(lag);

    let mut run = ApiDrivenRun {
        lag,
        ..ApiDrivenRun::default()
    };
    for _ in 0..rotations {
        let leaves: Vec<IssuedLeaf> = (0..hosts).map(issue).collect::<Result<_, _>>()?;
        let written = Instant::now();
        for (i, leaf) in leaves.iter().enumerate() {
            node.api
                .apply_secret(&tls_secret(NAMESPACE, &secret_name(i), leaf))
                .map_err(api_error)?;
        }
        let bound = lag + Duration::from_secs(60);
        let served = async {
            for (i, leaf) in leaves.iter().enumerate() {
                controller
                    .wait_serving(&host(i), &leaf.fingerprint_sha256, bound)
                    .await?;
            }
            anyhow::Ok(written.elapsed())
        };
        let expected = fingerprints(&leaves);
        let verified = async {
            node.wait_status(bound, "the renewals verified", |s| {
                hosts_match(s, &expected)
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
pub async fn run(rotations: usize, hosts: usize, lags: &[Duration]) -> anyhow::Result<()> {
    println!(
        "## Secrets updated in the API → new leaves served by an API-driven controller and verified by the agent (shipped defaults, {hosts} hosts with a Secret each, all renewed per rotation, {rotations} rotations per lag)\n"
    );
    println!(
        "| controller lag | rotations | controller serves p50 / p99 ms | agent verified p50 / p99 / max ms | verified − served p50 / p99 ms |"
    );
    println!("|---|---:|---:|---:|---:|");
    for lag in lags {
        let run = run_lag(rotations, hosts, *lag).await?;
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
