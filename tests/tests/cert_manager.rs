//! The cert-manager view across three nodes: three real agents on one API stand-in, each with
//! its own kubelet stand-in; a mounting controller (`edge`, one pod per node) and an API-driven
//! one (`api`, one pod per node, hosts from an Ingress). Every finding — a Certificate not
//! Ready, an Issuer missing, an overdue renewal, an uncovered host — must give exactly one
//! Event series, published by the node of the first pod by name (node-b here, whose pods are
//! `*-a`), and every agent must see it go when it is fixed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use mountlag_testbed::apiserver::{ApiServer, ApiServerConfig};
use mountlag_testbed::cluster::{KeyRing, NAMESPACE};
use mountlag_testbed::multinode::{NodeAgent, logs};
use mountlag_testbed::real;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const PATIENCE: Duration = Duration::from_secs(60);
const CONFIG: &str = "certManager:
  gracePeriod: 1s
controllers:
  - name: edge
    selector: app=edge
    reload: none
  - name: api
    selector: app=api
    mode: api
    reload: none
    probe:
      ports: [9]
    routes:
      ingressClassNames: [nginx]
";

/// The findings in an agent's /status: (reason, regarding, reporter).
async fn findings(agent: &NodeAgent) -> Option<BTreeSet<(String, String, String)>> {
    let status = agent.status().await?;
    let view = status.get("certManager")?;
    Some(
        view["findings"]
            .as_array()?
            .iter()
            .map(|f| {
                (
                    f["reason"].as_str().unwrap_or_default().to_owned(),
                    f["regarding"].as_str().unwrap_or_default().to_owned(),
                    f["reporter"].as_str().unwrap_or("-").to_owned(),
                )
            })
            .collect(),
    )
}

/// Sum of an agent's `mountlag_cert_manager_findings` series with this reason.
async fn finding_series(agent: &NodeAgent, reason: &str) -> f64 {
    match agent.metrics().await {
        Some(body) => body
            .lines()
            .filter(|l| {
                l.starts_with("mountlag_cert_manager_findings{")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
        None => f64::NAN,
    }
}

/// Waits until every agent's /status shows exactly `wanted` (reason, regarding) findings, all
/// with `reporter`.
async fn wait_findings(
    agents: &[NodeAgent],
    wanted: &[(&str, &str)],
    reporter: &str,
) -> anyhow::Result<()> {
    let wanted: BTreeSet<(String, String, String)> = wanted
        .iter()
        .map(|(r, o)| (r.to_string(), o.to_string(), reporter.to_owned()))
        .collect();
    let start = Instant::now();
    loop {
        let mut last = Vec::new();
        for agent in agents {
            last.push((agent.name.clone(), findings(agent).await));
        }
        if last.iter().all(|(_, f)| f.as_ref() == Some(&wanted)) {
            return Ok(());
        }
        if start.elapsed() > PATIENCE {
            anyhow::bail!(
                "findings never became {wanted:?} on every node; last {last:?}\n{}",
                logs(agents)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod(name: &str, app: &str, node: &str, secret: Option<&str>) -> anyhow::Result<Pod> {
    let (mounts, volumes) = match secret {
        Some(secret) => (
            json!([{"name": "tls", "mountPath": "/etc/tls", "readOnly": true}]),
            json!([{"name": "tls", "secret": {"secretName": secret}}]),
        ),
        None => (json!([]), json!([])),
    };
    Ok(serde_json::from_value(json!({
        "metadata": {"namespace": NAMESPACE, "name": name, "labels": {"app": app}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": "nginx", "volumeMounts": mounts}],
            "volumes": volumes,
        },
    }))?)
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

fn condition(ready: bool, since: OffsetDateTime) -> Value {
    json!([{
        "type": "Ready",
        "status": if ready { "True" } else { "False" },
        "reason": if ready { "Ready" } else { "Failed" },
        "message": if ready { "ready" } else { "the ACME order failed" },
        "lastTransitionTime": rfc3339(since),
    }])
}

fn certificate(ready: bool, issuer: &str, renewal: OffsetDateTime) -> Value {
    let long_ago = OffsetDateTime::now_utc() - time::Duration::hours(2);
    json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"namespace": NAMESPACE, "name": "edge"},
        "spec": {"secretName": "edge-tls", "dnsNames": ["edge.example.com"],
                 "issuerRef": {"name": issuer, "kind": "ClusterIssuer", "group": "cert-manager.io"}},
        "status": {"conditions": condition(ready, long_ago), "renewalTime": rfc3339(renewal),
                   "revision": 1},
    })
}

fn ingress(hosts: &[&str]) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"namespace": NAMESPACE, "name": "web"},
        "spec": {"ingressClassName": "nginx",
                 "tls": [{"hosts": hosts, "secretName": "edge-tls"}]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cert_manager_finding_is_one_event_series_across_three_agents_and_clears_when_fixed()
-> anyhow::Result<()> {
    if !real::require("root + tmpfs", real::can_mount()) {
        return Ok(());
    }
    let api = ApiServer::start(ApiServerConfig::default()).await?;
    let apply = |object: &Value| {
        api.apply_object(object)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .map(|_| ())
    };
    let now = OffsetDateTime::now_utc();
    let in_a_month = now + time::Duration::days(30);
    let mut keys = KeyRing::new("cert-manager test CA")?;
    let mut secret = keys.secret("edge-tls");
    secret.metadata.annotations = Some(
        [(
            "cert-manager.io/certificate-name".to_owned(),
            "edge".to_owned(),
        )]
        .into(),
    );
    api.apply_secret(&secret)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    apply(&json!({
        "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
        "metadata": {"name": "letsencrypt"}, "spec": {"acme": {}},
        "status": {"conditions": condition(true, now)},
    }))?;
    apply(&certificate(false, "letsencrypt", in_a_month))?;
    apply(&ingress(&["edge.example.com"]))?;
    // The first pod of each profile by name runs on node-b.
    for (node, suffix) in [("node-a", "c"), ("node-b", "a"), ("node-c", "b")] {
        api.create_pod(&pod(
            &format!("edge-{suffix}"),
            "edge",
            node,
            Some("edge-tls"),
        )?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        api.create_pod(&pod(&format!("api-{suffix}"), "api", node, None)?)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let dir = tempfile::Builder::new()
        .prefix("mountlag-cert-manager-")
        .tempdir()?;
    let agents = vec![
        NodeAgent::start(&api, dir.path(), "node-a", 0, CONFIG, None)?,
        NodeAgent::start(&api, dir.path(), "node-b", 1, CONFIG, None)?,
        NodeAgent::start(&api, dir.path(), "node-c", 2, CONFIG, None)?,
    ];
    let events = |reason: &str| -> Vec<(String, String)> {
        api.events()
            .into_iter()
            .filter(|e| e.reason == reason)
            .map(|e| (e.regarding.name.clone(), e.reporting_instance.clone()))
            .collect()
    };

    // 1. The Certificate is not Ready.
    wait_findings(
        &agents,
        &[("CertificateNotReady", "Certificate ingress/edge")],
        "node-b",
    )
    .await?;
    assert_eq!(
        events("CertificateNotReady"),
        [("edge".to_owned(), "node-b".to_owned())],
        "one Event, from the reporter"
    );
    assert_eq!(finding_series(&agents[1], "CertificateNotReady").await, 1.0);
    assert_eq!(finding_series(&agents[0], "CertificateNotReady").await, 0.0);
    assert_eq!(finding_series(&agents[2], "CertificateNotReady").await, 0.0);

    // 2. Ready again, but its ClusterIssuer does not exist.
    apply(&certificate(true, "missing-issuer", in_a_month))?;
    wait_findings(
        &agents,
        &[("IssuerNotReady", "Certificate ingress/edge")],
        "node-b",
    )
    .await?;
    assert_eq!(
        finding_series(&agents[1], "CertificateNotReady").await,
        0.0,
        "cleared"
    );
    assert_eq!(finding_series(&agents[1], "IssuerNotReady").await, 1.0);

    // 3. Issuer back; the renewal time passed 10 minutes ago and the Secret still holds the
    // leaf issued an hour ago.
    apply(&certificate(
        true,
        "letsencrypt",
        now - time::Duration::minutes(10),
    ))?;
    wait_findings(
        &agents,
        &[("CertificateRenewalOverdue", "Certificate ingress/edge")],
        "node-b",
    )
    .await?;

    // 4. Renewed (renewal time a month away); the Ingress gains a host nothing covers.
    apply(&certificate(true, "letsencrypt", in_a_month))?;
    apply(&ingress(&["edge.example.com", "shop.example.org"]))?;
    wait_findings(
        &agents,
        &[("TLSHostNotCovered", "Ingress ingress/web")],
        "node-b",
    )
    .await?;

    // 5. Fixed: nothing left on any node, and no metric series.
    apply(&ingress(&["edge.example.com"]))?;
    wait_findings(&agents, &[], "node-b").await?;
    for agent in &agents {
        assert_eq!(finding_series(agent, "TLSHostNotCovered").await, 0.0);
    }

    for reason in [
        "CertificateNotReady",
        "IssuerNotReady",
        "CertificateRenewalOverdue",
        "TLSHostNotCovered",
    ] {
        let published = events(reason);
        assert_eq!(
            published.len(),
            1,
            "{reason}: exactly one Event series across three agents, got {published:?}"
        );
        assert_eq!(
            published[0].1, "node-b",
            "{reason}: published by the reporter"
        );
    }
    let not_covered = api
        .events()
        .into_iter()
        .find(|e| e.reason == "TLSHostNotCovered")
        .context("TLSHostNotCovered event")?;
    assert_eq!(not_covered.regarding.kind, "Ingress");
    assert!(
        not_covered.note.contains("shop.example.org"),
        "{}",
        not_covered.note
    );
    for agent in &agents {
        keys.assert_not_in(&agent.name, &agent.log_text());
    }
    Ok(())
}

/// Requests the agent made for cert-manager's Certificates (all answered 404).
fn certificate_requests(api: &ApiServer) -> u64 {
    api.stats()
        .requests
        .iter()
        .filter(|((_, resource), _)| resource.contains("certificates"))
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cert_manager_the_agent_says_so_once_and_carries_on() -> anyhow::Result<()> {
    if !real::require("root + tmpfs", real::can_mount()) {
        return Ok(());
    }
    let api = ApiServer::start(ApiServerConfig {
        unserved_groups: vec!["cert-manager.io"],
        ..ApiServerConfig::default()
    })
    .await?;
    let mut keys = KeyRing::new("cert-manager absent test CA")?;
    api.apply_secret(&keys.secret("edge-tls"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    api.create_pod(&pod("edge-a", "edge", "node-a", Some("edge-tls"))?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = tempfile::Builder::new()
        .prefix("mountlag-cert-manager-absent-")
        .tempdir()?;
    let agent = NodeAgent::start(&api, dir.path(), "node-a", 0, CONFIG, None)?;
    // Ready, the mount in sync, the view "not installed"; and the watch kept retrying (three
    // more requests) without saying it again.
    let start = Instant::now();
    loop {
        let status = agent.status().await;
        let settled = status.as_ref().is_some_and(|s| {
            s["ready"] == true
                && s["certManager"]["state"] == "notInstalled"
                && s["mounts"][0]["state"] == "in_sync"
        });
        if settled && certificate_requests(&api) >= 4 {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < PATIENCE,
            "not settled: {status:?}, {} requests\n{}",
            certificate_requests(&api),
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let said = agent
        .log_text()
        .matches("cert-manager is not installed")
        .count();
    assert_eq!(said, 1, "{}", agent.log_text());
    assert!(
        !agent.log_text().contains("WARN"),
        "a missing cert-manager is no warning:\n{}",
        agent.log_text()
    );
    Ok(())
}
