//! `testbed demo`: the whole story on a stand-in node, for someone with no cluster.
//!
//! Everything is real except the API server and kubelet: the `mountlag agent` binary talking
//! to the API stand-in over HTTP, tmpfs volumes written the way kubelet writes them, inotify,
//! nginx (and HAProxy when installed) in kubelet-shaped cgroups, TLS handshakes. Each step
//! checks what it shows; the demo exits non-zero if one misbehaved.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::certs::{IssuedLeaf, LeafSpec, TestCa};
use crate::cluster::{
    NAMESPACE, NODE, TestNode, controller_pod, free_port, ingress_nginx_pod, ingress_pod, mount_of,
    tls_secret,
};
use crate::controllers::{self, ControllerKind, ControllerSpec, RunningController};
use crate::ingress_controller::IngressControllerStandIn;
use crate::kubelet::VolumeKind;
use crate::node::{NodeConfig, PodRef, SyncOutcome};
use crate::tlsload::LoadGenerator;
use crate::{agent, real};

const NAMES: [&str; 2] = ["edge.example.com", "www.example.com"];

fn colour() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdout().is_terminal()
}

fn heading(step: usize, text: &str) {
    if colour() {
        println!("\n\x1b[1m── {step}. {text}\x1b[0m");
    } else {
        println!("\n── {step}. {text}");
    }
}

fn ok(text: &str) {
    if colour() {
        println!("   \x1b[32m✓\x1b[0m {text}");
    } else {
        println!("   ✓ {text}");
    }
}

fn show(lines: &str) {
    for line in lines.lines() {
        println!("   │ {line}");
    }
}

fn short(fingerprint: &str) -> &str {
    &fingerprint[..fingerprint.len().min(16)]
}

struct Demo {
    node: TestNode,
    ca: TestCa,
    /// (Event name, series count) already printed.
    shown_events: std::collections::BTreeSet<(String, Option<i64>)>,
}

impl Demo {
    fn leaf(&self) -> anyhow::Result<IssuedLeaf> {
        self.ca.issue(&LeafSpec::valid_for(NAMES))
    }

    /// Prints the Events the agent published since the last call.
    fn new_events(&mut self) -> Vec<String> {
        let events = self.node.api.events();
        let fresh: Vec<String> = events
            .iter()
            .filter(|e| self.shown_events.insert((e.name.clone(), e.series_count)))
            .map(|e| {
                let count = e
                    .series_count
                    .map(|c| format!(" (×{c})"))
                    .unwrap_or_default();
                format!(
                    "{:<7} {:<28} {}/{}{count}: {}",
                    e.type_, e.reason, e.regarding.namespace, e.regarding.name, e.note
                )
            })
            .collect();
        for line in &fresh {
            println!("   │ Event  {line}");
        }
        fresh
    }

    async fn wait_event(&mut self, reason: &str, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while !self.node.api.events().iter().any(|e| e.reason == reason) {
            if start.elapsed() > timeout {
                bail!(
                    "no {reason} Event within {timeout:?}\n{}",
                    self.node.agent_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.new_events();
        Ok(())
    }

    async fn metric(&self, sample: &str) -> f64 {
        self.node.metric(sample).await.ok().flatten().unwrap_or(0.0)
    }

    async fn wait_metric(
        &self,
        sample: &str,
        at_least: f64,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        while self.metric(sample).await < at_least {
            if start.elapsed() > timeout {
                bail!(
                    "{sample} did not reach {at_least} within {timeout:?}\n{}",
                    self.node.agent_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(start.elapsed())
    }

    /// A pod labelled `app=<app>` mounting `secret`, started by kubelet, and a real nginx in
    /// its cgroup serving the volume's files for `names` on `port`.
    async fn start_nginx_pod(
        &self,
        pod: &str,
        app: &str,
        secret: &str,
        port: u16,
        names: Vec<String>,
    ) -> anyhow::Result<(RunningController, std::path::PathBuf)> {
        let before = self.node.node.last_seq();
        self.node
            .api
            .create_pod(&controller_pod(pod, "nginx", &[("app", app)], secret, None))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.node
            .node
            .wait_for(before, Duration::from_secs(10), |e| {
                e.pod == pod && e.outcome == SyncOutcome::Started
            })
            .await
            .context("kubelet did not start the pod")?;
        let uid = self
            .node
            .api
            .pod(NAMESPACE, pod)
            .and_then(|p| p.metadata.uid)
            .context("uid")?;
        let volume = self
            .node
            .kubelet
            .volume_dir(&uid, VolumeKind::Secret, "tls");
        let nginx = RunningController::start(
            ControllerSpec::new(ControllerKind::Nginx, &uid, &volume, names).with_port(port),
        )?;
        Ok((nginx, volume))
    }

    fn status_table(&self) -> anyhow::Result<()> {
        let endpoint = format!(
            "http://{}",
            self.node.agent.as_ref().context("agent")?.listen
        );
        let out = agent::run(&["status", "--endpoint", &endpoint]);
        show(&String::from_utf8_lossy(&out.stdout));
        Ok(())
    }
}

async fn served(controller: &RunningController) -> Vec<String> {
    let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    mountlag::effects::probe::probe_all(controller.addr(), &names, Duration::from_secs(2))
        .await
        .into_iter()
        .map(|(_, r)| {
            r.map(|l| l.fingerprint_sha256)
                .unwrap_or_else(|e| format!("error: {e}"))
        })
        .collect()
}

pub fn run() -> anyhow::Result<()> {
    if let Err(why) = real::can_mount() {
        bail!("testbed demo mounts tmpfs volumes like kubelet and needs root: {why}");
    }
    if let Err(why) = controllers::available(ControllerKind::Nginx) {
        bail!("testbed demo runs a real nginx: {why} (tests/need nginx=nginx installs it)");
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(story())
}

async fn story() -> anyhow::Result<()> {
    let started = Instant::now();
    println!("mountlag demo: one Kubernetes node on this machine.");
    println!(
        "  real: the mountlag agent, tmpfs volumes, inotify, nginx in kubelet-shaped cgroups, TLS"
    );
    println!(
        "  stand-ins: the API server (HTTP) and kubelet (AtomicWriter, 60–90 s sync, remount on annotation)"
    );
    let port = free_port()?;
    let ingress_port = free_port()?;
    let legacy_port = free_port()?;
    let config = format!(
        "stuckAfter: 5s\nnudge:\n  after: 1s\nreload:\n  minInterval: 0s\n\
         verify:\n  timeout: 5s\n  interval: 2s\n  mismatchAfter: 3s\n\
         controllers:\n  - name: edge\n    profile: nginx\n    selector: app=edge\n    probe:\n      ports: [{port}]\n\
         \x20 - name: ingress-nginx\n    profile: ingress-nginx\n    namespaces: [{NAMESPACE}]\n    probe:\n      ports: [{ingress_port}]\n\
         \x20 - name: legacy\n    profile: nginx\n    selector: app=legacy\n    probe:\n      ports: [{legacy_port}]\n"
    );
    let node = TestNode::start(NodeConfig::new(NODE), &config).await?;
    let mut demo = Demo {
        node,
        ca: TestCa::new("demo ingress CA")?,
        shown_events: Default::default(),
    };

    heading(
        1,
        "an nginx ingress pod mounts Secret edge-tls; kubelet projects it on tmpfs",
    );
    let v1 = demo.leaf()?;
    demo.node
        .api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v1))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    let (nginx, volume) = demo
        .start_nginx_pod("edge-0", "edge", "edge-tls", port, names.clone())
        .await?;
    let out = agent::run(&["inspect", volume.to_str().context("path")?]);
    show(&String::from_utf8_lossy(&out.stdout));
    demo.node.start_agent()?;
    let ready = demo.node.wait_ready(Duration::from_secs(10)).await?;
    demo.node
        .wait_status(Duration::from_secs(10), "in sync", |s| {
            mount_of(s, "edge-0").is_some_and(|m| m["state"] == "in_sync")
        })
        .await?;
    ok(&format!(
        "mountlag agent ready in {} ms; nginx serves {} on every name",
        ready.as_millis(),
        short(&v1.fingerprint_sha256)
    ));
    demo.status_table()?;

    heading(
        2,
        "the certificate is renewed in the API, under live TLS traffic",
    );
    println!(
        "     kubelet alone would take 60–90 s to notice; mountlag nudges it, reloads nginx, verifies"
    );
    let load = LoadGenerator::start(nginx.addr(), &names, 4)?;
    let v2 = demo.leaf()?;
    let rotated = Instant::now();
    demo.node
        .api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v2))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let verified =
        "mountlag_reloads_total{namespace=\"ingress\",pod=\"edge-0\",result=\"verified\"}";
    demo.wait_metric(verified, 1.0, Duration::from_secs(15))
        .await?;
    let took = rotated.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.stop();
    demo.new_events();
    let now_served = served(&nginx).await;
    if !now_served.iter().all(|fp| fp == &v2.fingerprint_sha256) {
        bail!("nginx does not serve the renewed certificate: {now_served:?}");
    }
    if report.failures > 0 {
        bail!(
            "{} of {} requests failed during the rotation: {:?}",
            report.failures,
            report.requests,
            report.failure_samples
        );
    }
    ok(&format!(
        "Secret updated → new leaf {} served and verified in {} ms; {} TLS requests during it, 0 failed",
        short(&v2.fingerprint_sha256),
        took.as_millis(),
        report.requests
    ));

    heading(3, "kubelet gets stuck: the mount never follows the Secret");
    demo.node
        .node
        .set_stuck(PodRef::name(NAMESPACE, "edge-0"), true);
    let v3 = demo.leaf()?;
    demo.node
        .api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v3))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    demo.wait_event("SecretMountStuck", Duration::from_secs(10))
        .await?;
    ok("two nudges did not help: Warning SecretMountStuck names the Secret version and the lag");
    demo.node
        .node
        .set_stuck(PodRef::name(NAMESPACE, "edge-0"), false);
    demo.node.node.sync_now(NAMESPACE, "edge-0");
    demo.wait_event("SecretMountRecovered", Duration::from_secs(10))
        .await?;
    demo.wait_metric(verified, 2.0, Duration::from_secs(10))
        .await?;
    demo.new_events();
    ok("the fault cleared: SecretMountRecovered, and the new leaf was reloaded and verified");

    heading(
        4,
        "a broken renewal: the new key does not belong to the new certificate",
    );
    let v4 = demo.leaf()?;
    let stranger = demo.leaf()?;
    let mut broken = tls_secret(NAMESPACE, "edge-tls", &v4);
    broken.data.as_mut().context("data")?.insert(
        "tls.key".into(),
        k8s_openapi::ByteString(stranger.key_pem.clone().into_bytes()),
    );
    demo.node
        .api
        .apply_secret(&broken)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    demo.wait_event("InvalidCertificateMaterial", Duration::from_secs(10))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = served(&nginx).await;
    if !still.iter().all(|fp| fp == &v3.fingerprint_sha256) {
        bail!("nginx should still serve the previous certificate: {still:?}");
    }
    ok(&format!(
        "reload withheld; nginx keeps serving {} (it would have failed to load the pair)",
        short(&v3.fingerprint_sha256)
    ));
    let good = demo.leaf()?;
    demo.node
        .api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &good))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    demo.wait_metric(verified, 3.0, Duration::from_secs(15))
        .await?;
    demo.new_events();
    ok("the fixed Secret goes out normally");

    heading(5, "another pod mounts tls.crt through subPath");
    demo.node
        .api
        .create_pod(&ingress_pod(
            "edge-subpath",
            &[("app", "edge")],
            "edge-tls",
            Some("tls.crt"),
        ))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    demo.wait_event("SubPathNeverUpdates", Duration::from_secs(10))
        .await?;
    ok("kubelet never updates subPath mounts: flagged once, at discovery");

    let ingress = api_driven_steps(&mut demo, ingress_port, legacy_port).await?;

    heading(9, "what an operator sees");
    demo.status_table()?;
    let (_, metrics) = demo.node.get("/metrics").await?;
    for line in metrics.lines().filter(|l| {
        !l.starts_with('#')
            && (l.starts_with("mountlag_reloads_total")
                || l.starts_with("mountlag_kubelet_nudges_total")
                || l.starts_with("mountlag_mount_lag_seconds_count")
                || l.starts_with("mountlag_mounts{"))
    }) {
        println!("   │ {line}");
    }
    let status: Value = demo.node.status().await?;
    let states: Vec<&str> = status["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["state"].as_str())
        .collect();
    ok(&format!(
        "/status lists {} mount(s): {}",
        states.len(),
        states.join(", ")
    ));
    let exit = demo.node.stop_agent()?;
    if exit.code() != Some(0) {
        bail!("the agent exited with {exit} on SIGTERM");
    }
    drop(nginx);
    drop(ingress);
    println!(
        "\ndemo finished in {:.0} s: every step behaved as shown",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

const SHOP_HOSTS: [&str; 2] = ["shop.example.com", "www.shop.example.com"];

/// Steps 6–8: a controller that reads its Secrets from the API (an ingress-nginx-style
/// stand-in serving over real TLS) and a certificate nothing renews. Returns what must live
/// until the end of the demo.
async fn api_driven_steps(
    demo: &mut Demo,
    ingress_port: u16,
    legacy_port: u16,
) -> anyhow::Result<(IngressControllerStandIn, RunningController)> {
    heading(
        6,
        "an ingress-nginx-style controller serves two Ingress hosts from Secrets it reads through the API",
    );
    println!(
        "     it mounts no Secret: mountlag learns the hosts from the Ingress and probes each one"
    );
    let shop = demo.ca.issue(&LeafSpec::valid_for(SHOP_HOSTS))?;
    let api = &demo.node.api;
    let apply = |object: serde_json::Value| {
        api.apply_object(&object)
            .map(drop)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
    };
    apply(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}
    }))?;
    api.apply_secret(&tls_secret(NAMESPACE, "shop-tls", &shop))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    apply(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "shop", "namespace": NAMESPACE},
        "spec": {"ingressClassName": "nginx",
                 "tls": [{"hosts": SHOP_HOSTS, "secretName": "shop-tls"}]}
    }))?;
    let controller =
        IngressControllerStandIn::start(api.client(), "k8s.io/ingress-nginx", ingress_port).await?;
    for host in SHOP_HOSTS {
        controller
            .wait_serving(host, &shop.fingerprint_sha256, Duration::from_secs(10))
            .await?;
    }
    let pod = ingress_nginx_pod("ingress-nginx-0");
    demo.node.create_pod_and_wait_started(&pod).await?;
    let serving = |fingerprint: String, matches: bool| {
        move |s: &Value| {
            SHOP_HOSTS.iter().all(|host| {
                s["hosts"].as_array().into_iter().flatten().any(|h| {
                    h["host"] == *host
                        && h["served"][0]["fingerprintSha256"] == fingerprint.as_str()
                        && h["served"][0]["match"] == matches
                })
            })
        }
    };
    demo.node
        .wait_status(
            Duration::from_secs(15),
            "both hosts verified",
            serving(shop.fingerprint_sha256.clone(), true),
        )
        .await?;
    ok(&format!(
        "both hosts serve {} = the Secret in the API; re-checked every verify.interval (2 s here, 5 min by default)",
        short(&shop.fingerprint_sha256)
    ));

    heading(7, "a renewal that never reaches the controller");
    println!("     the controller stops syncing; the Secret is renewed in the API");
    controller.freeze(true);
    let renewed = demo.ca.issue(&LeafSpec::valid_for(SHOP_HOSTS))?;
    demo.node
        .api
        .apply_secret(&tls_secret(NAMESPACE, "shop-tls", &renewed))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    demo.wait_event("ServedCertificateMismatch", Duration::from_secs(15))
        .await?;
    let endpoint = format!(
        "http://{}",
        demo.node.agent.as_ref().context("agent")?.listen
    );
    let exit = agent::run(&["status", "--endpoint", &endpoint])
        .status
        .code();
    if exit != Some(1) {
        bail!("mountlag status should exit 1 while a host serves the old leaf: {exit:?}");
    }
    ok(
        "Warning ServedCertificateMismatch after verify.mismatchAfter (3 s here), once; `mountlag status` exits 1",
    );
    controller.freeze(false);
    demo.node
        .wait_status(
            Duration::from_secs(15),
            "the renewal served",
            serving(renewed.fingerprint_sha256.clone(), true),
        )
        .await?;
    ok("the controller syncs again: the next check sees the renewal, the match is back");

    heading(8, "a certificate 10 days from expiry that nothing renews");
    let mut spec = LeafSpec::valid_for(["old.example.com"]);
    spec.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(10);
    let expiring = demo.ca.issue(&spec)?;
    demo.node
        .api
        .apply_secret(&tls_secret(NAMESPACE, "old-tls", &expiring))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (legacy, _) = demo
        .start_nginx_pod(
            "legacy-0",
            "legacy",
            "old-tls",
            legacy_port,
            vec!["old.example.com".to_string()],
        )
        .await?;
    demo.wait_event("CertificateExpiringSoon", Duration::from_secs(20))
        .await?;
    let (_, metrics) = demo.node.get("/metrics").await?;
    let views: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("mountlag_certificate_not_after_timestamp_seconds")
                && l.contains("secret=\"old-tls\"")
        })
        .collect();
    for line in &views {
        println!("   │ {line}");
    }
    if views.len() != 3 {
        bail!("expected the api, disk and served views of old-tls: {views:?}");
    }
    ok(
        "Warning CertificateExpiringSoon (\"no renewal exists\"), with the notAfter the API, the disk and the controller have",
    );
    Ok((controller, legacy))
}
