//! `testbed chaos soak`: many rotations across many pods, each pod a real nginx or HAProxy,
//! some of them under continuous TLS load with new connections and long-lived keep-alive ones
//! beside them. Figures for docs/reliability.md; a small case runs in the default test run
//! (tests/tests/soak.rs).
//!
//! ```text
//!  round r: every pod's Secret rotated in the API ──▶ agent nudges, kubelet swaps, agent reloads
//!           └─ wait until /status shows every pod serving its new leaf, verified
//!  load: LoadGenerator on the first pods of each kind (new connections + keep-alive)
//!  end: failed requests, reloads logged per controller vs versions, agent RSS and fds start/end
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::certs::{LeafSpec, TestCa};
use crate::cluster::{NAMESPACE, TestNode, controller_pod, free_port, mount_of, tls_secret};
use crate::controllers::{ControllerKind, ControllerSpec, RunningController};
use crate::kubelet::VolumeKind;
use crate::node::{NodeConfig, SyncOutcome};
use crate::tlsload::{LoadConfig, LoadGenerator, LoadReport};

const NAMES: [&str; 2] = ["edge.example.com", "www.example.com"];

/// What to soak.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Pods, alternately nginx and HAProxy.
    pub pods: usize,
    /// Rotations in all, spread evenly over the pods (rounded up to whole rounds).
    pub rotations: usize,
    /// Pods under load (half nginx, half HAProxy).
    pub loaded_pods: usize,
    /// New-connection loops per loaded pod.
    pub new_connection_loops: usize,
    /// Keep-alive connections per loaded pod.
    pub keepalive_connections: usize,
    /// Bound on one round (every pod rotated and verified).
    pub round_timeout: Duration,
}

impl Default for SoakOptions {
    fn default() -> Self {
        Self {
            pods: 100,
            rotations: 10_000,
            loaded_pods: 4,
            new_connection_loops: 2,
            keepalive_connections: 2,
            round_timeout: Duration::from_secs(120),
        }
    }
}

/// What a soak measured.
#[derive(Debug, Clone)]
pub struct SoakReport {
    pub pods: usize,
    pub rounds: usize,
    pub rotations: usize,
    pub elapsed: Duration,
    /// Median and slowest round (rotate all, all verified).
    pub round_median: Duration,
    pub round_max: Duration,
    /// Reloads the controllers logged, in all and the most for one pod.
    pub reloads_logged: usize,
    pub max_reloads_per_pod: usize,
    /// The agent's resident memory (KiB) after the first round and at the end.
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    pub rss_peak_kib: u64,
    /// The agent's open file descriptors after the first round and at the end.
    pub fds_start: usize,
    pub fds_end: usize,
    /// Warning Events by reason.
    pub warnings: Vec<String>,
    pub load: Vec<(String, LoadReport)>,
}

impl SoakReport {
    pub fn failed_requests(&self) -> u64 {
        self.load.iter().map(|(_, r)| r.failures).sum()
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "soak: {} pods, {} rounds, {} rotations in {:.0} s (round median {:.2} s, max {:.2} s)",
            self.pods,
            self.rounds,
            self.rotations,
            self.elapsed.as_secs_f64(),
            self.round_median.as_secs_f64(),
            self.round_max.as_secs_f64()
        )?;
        writeln!(
            f,
            "reloads logged by the controllers: {} for {} versions (at most {} for one pod of {} versions)",
            self.reloads_logged, self.rotations, self.max_reloads_per_pod, self.rounds
        )?;
        writeln!(
            f,
            "agent RSS: {} KiB after the first round, {} KiB at the end, {} KiB peak; fds {} → {}",
            self.rss_start_kib, self.rss_end_kib, self.rss_peak_kib, self.fds_start, self.fds_end
        )?;
        writeln!(f, "Warning Events: {:?}", self.warnings)?;
        for (pod, report) in &self.load {
            writeln!(f, "load on {pod}: {report}")?;
        }
        write!(f, "failed requests: {}", self.failed_requests())
    }
}

fn kind_of(i: usize) -> ControllerKind {
    if i.is_multiple_of(2) {
        ControllerKind::Nginx
    } else {
        ControllerKind::Haproxy
    }
}

fn agent_config(ports: &[u16]) -> String {
    let mut config = String::from(
        "stuckAfter: 60s\nnudge:\n  after: 100ms\nreload:\n  minInterval: 0s\nverify:\n  timeout: 20s\ncontrollers:\n",
    );
    for (i, port) in ports.iter().enumerate() {
        let profile = kind_of(i).name();
        config.push_str(&format!(
            "  - name: edge-{i}\n    profile: {profile}\n    selector: app=edge-{i}\n    probe:\n      ports: [{port}]\n"
        ));
    }
    config
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Runs the soak; needs root (tmpfs, cgroups), nginx and HAProxy.
pub async fn soak(options: &SoakOptions) -> anyhow::Result<SoakReport> {
    ensure!(options.pods > 0, "at least one pod");
    let rounds = options.rotations.div_ceil(options.pods);
    let ports: Vec<u16> = (0..options.pods)
        .map(|_| free_port())
        .collect::<anyhow::Result<_>>()?;
    let mut node =
        TestNode::start(NodeConfig::new(crate::cluster::NODE), &agent_config(&ports)).await?;
    node.log_filter = "warn,mountlag=info".to_owned();
    let ca = TestCa::new("soak CA")?;
    let mut controllers = Vec::new();
    let mut expected = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let kind = kind_of(i);
        let leaf = ca.issue(&LeafSpec::valid_for(NAMES))?;
        node.api
            .apply_secret(&tls_secret(NAMESPACE, &format!("tls-{i}"), &leaf))?;
        let items: Option<&[(&str, &str)]> = match kind {
            ControllerKind::Nginx => None,
            ControllerKind::Haproxy => Some(&[("tls.crt", "tls.crt"), ("tls.key", "tls.crt.key")]),
        };
        let name = format!("edge-{i}");
        let label = format!("edge-{i}");
        let before = node.node.last_seq();
        node.api.create_pod(&controller_pod(
            &name,
            kind.name(),
            &[("app", label.as_str())],
            &format!("tls-{i}"),
            items,
        ))?;
        node.node
            .wait_for(before, Duration::from_secs(30), |e| {
                e.pod == name && e.outcome == SyncOutcome::Started
            })
            .await
            .with_context(|| format!("kubelet did not start {name}"))?;
        let uid = node
            .api
            .pod(NAMESPACE, &name)
            .and_then(|p| p.metadata.uid)
            .context("pod without a UID")?;
        let volume = node.kubelet.volume_dir(&uid, VolumeKind::Secret, "tls");
        let names = NAMES.iter().map(|n| n.to_string()).collect();
        let spec = ControllerSpec::new(kind, &uid, &volume, names).with_port(*port);
        controllers.push(RunningController::start(spec).with_context(|| name.clone())?);
        expected.push(leaf.fingerprint_sha256);
    }
    node.start_agent()?;
    node.wait_ready(Duration::from_secs(60)).await?;
    wait_all_served(&node, &expected, options.round_timeout).await?;
    let reloads_before: Vec<usize> = controllers.iter().map(|c| c.reloads_logged()).collect();

    let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    let mut loads = Vec::new();
    for (i, controller) in controllers.iter().enumerate().take(options.loaded_pods) {
        let config = LoadConfig {
            keepalive_connections: options.keepalive_connections,
            max_duration: Duration::from_secs(24 * 3600),
            ..LoadConfig::new(controller.addr(), &names, options.new_connection_loops)
        };
        loads.push((
            format!("edge-{i} ({})", kind_of(i).name()),
            LoadGenerator::start_with(config)?,
        ));
    }

    let pid = node.agent.as_ref().context("agent not running")?.pid();
    let started = Instant::now();
    let mut round_times = Vec::new();
    let (mut rss_start, mut fds_start, mut rss_peak) = (0, 0, 0);
    for round in 0..rounds {
        let round_started = Instant::now();
        for (i, fingerprint) in expected.iter_mut().enumerate() {
            let leaf = ca.issue(&LeafSpec::valid_for(NAMES))?;
            node.api
                .apply_secret(&tls_secret(NAMESPACE, &format!("tls-{i}"), &leaf))?;
            *fingerprint = leaf.fingerprint_sha256;
        }
        wait_all_served(&node, &expected, options.round_timeout)
            .await
            .with_context(|| format!("round {round}"))?;
        round_times.push(round_started.elapsed());
        rss_peak = rss_peak.max(proc_status_kib(pid, "VmRSS:"));
        if round == 0 {
            rss_start = proc_status_kib(pid, "VmRSS:");
            fds_start = open_fds(pid);
        }
        if round % 10 == 9 {
            eprintln!(
                "round {}/{rounds}: {:.1} s, agent RSS {} KiB",
                round + 1,
                round_started.elapsed().as_secs_f64(),
                proc_status_kib(pid, "VmRSS:")
            );
        }
    }
    let elapsed = started.elapsed();
    let load: Vec<(String, LoadReport)> = loads
        .into_iter()
        .map(|(pod, generator)| (pod, generator.stop()))
        .collect();
    let per_pod: Vec<usize> = controllers
        .iter()
        .zip(&reloads_before)
        .map(|(c, before)| c.reloads_logged() - before)
        .collect();
    round_times.sort();
    let warnings = node.warnings();
    let report = SoakReport {
        pods: options.pods,
        rounds,
        rotations: rounds * options.pods,
        elapsed,
        round_median: round_times[round_times.len() / 2],
        round_max: round_times.last().copied().unwrap_or_default(),
        reloads_logged: per_pod.iter().sum(),
        max_reloads_per_pod: per_pod.iter().copied().max().unwrap_or(0),
        rss_start_kib: rss_start,
        rss_end_kib: proc_status_kib(pid, "VmRSS:"),
        rss_peak_kib: rss_peak,
        fds_start,
        fds_end: open_fds(pid),
        warnings,
        load,
    };
    for controller in controllers {
        controller.stop()?;
    }
    Ok(report)
}

/// Until `/status` shows every pod `edge-i` serving `expected[i]` on every name, verified.
async fn wait_all_served(
    node: &TestNode,
    expected: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(status) = node.status().await {
            let behind = expected
                .iter()
                .enumerate()
                .filter(|(i, fingerprint)| {
                    !mount_of(&status, &format!("edge-{i}")).is_some_and(|m| {
                        m["served"]["fingerprintSha256"] == fingerprint.as_str()
                            && m["served"]["match"] == true
                    })
                })
                .count();
            if behind == 0 {
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!(
                    "{behind} of {} pods not verified on their new leaf within {timeout:?}\n{}",
                    expected.len(),
                    node.agent_log()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
