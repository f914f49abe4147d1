//! `testbed bench reload`: what a rotation costs end to end, measured, never asserted.
//!
//! - **swap → signal**: `..data` rename → SIGHUP received by a controller stand-in (`sigsink`,
//!   in a kubelet-shaped cgroup), through the real agent (inotify, snapshot, material check,
//!   process lookup, pidfd), next to a bare inotify floor in alternating blocks; plus the
//!   agent's CPU time per update (sum of its threads' `schedstat`, from the rename to 20 ms
//!   later: the signal path; the first verification probe is due 25 ms after the signal, and
//!   the next swap supersedes it).
//! - **swap → served**: `..data` rename → the new leaf answered on every name by real nginx and
//!   HAProxy after the agent's reload, polled by the bench itself; plus the agent's CPU per
//!   rotation up to the verified reload (signal and every probe round).
//! - **headline**: Secret updated in the API → new leaf served and verified by the agent, with
//!   kubelet at its real 60–90 s period and the default `nudge.after: 2s`.
//!
//! In the first two the kubelet stand-in is set stuck and the bench writes the volume itself
//! with kubelet's exact AtomicWriter steps, so it can time the rename.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::time::{ClockId, clock_gettime};

use crate::bench::Summary;
use crate::certs::{IssuedLeaf, LeafSpec, TestCa};
use crate::cluster::{NAMESPACE, NODE, TestNode, controller_pod, free_port, tls_secret};
use crate::controllers::{self, ControllerKind, ControllerSpec, RunningController};
use crate::kubelet::{Payload, VolumeKind, raw_write_generation};
use crate::node::{NodeConfig, PodRef, SyncOutcome};

pub(crate) fn monotonic_ns() -> i128 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
        .unwrap_or_default()
}

pub(crate) fn from_ns(ns: i128) -> Duration {
    Duration::from_nanos(u64::try_from(ns.max(0)).unwrap_or(0))
}

pub(crate) fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// kubelet's AtomicWriter on `dir`, with the rename timed (CLOCK_MONOTONIC ns just before it).
pub(crate) fn swap(dir: &Path, payload: &Payload) -> anyhow::Result<i128> {
    let old = std::fs::read_link(dir.join("..data")).ok();
    let generation = raw_write_generation(dir, payload)?;
    let tmp = dir.join("..data_tmp");
    symlink(&generation, &tmp).context("symlink ..data_tmp")?;
    let renamed = monotonic_ns();
    std::fs::rename(&tmp, dir.join("..data")).context("rename ..data")?;
    for name in payload.keys() {
        let first = name.split('/').next().unwrap_or(name);
        let visible = dir.join(first);
        if visible.symlink_metadata().is_err() {
            symlink(format!("..data/{first}"), &visible)?;
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(renamed)
}

pub(crate) fn tls_payload(leaf: &IssuedLeaf, key_name: &str) -> Payload {
    Payload::from([
        (
            "tls.crt".to_string(),
            crate::kubelet::FileProjection::new(leaf.chain_pem.clone(), 0o644),
        ),
        (
            key_name.to_string(),
            crate::kubelet::FileProjection::new(leaf.key_pem.clone(), 0o600),
        ),
    ])
}

/// The floor: one thread blocked on an inotify fd watching only `IN_MOVED_TO`.
fn start_floor(dir: &Path) -> anyhow::Result<Receiver<i128>> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(dir, AddWatchFlags::IN_MOVED_TO)?;
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        while let Ok(events) = inotify.read_events() {
            let seen = monotonic_ns();
            if events
                .iter()
                .any(|e| e.name.as_deref().is_some_and(|n| n == "..data"))
                && tx.send(seen).is_err()
            {
                return;
            }
        }
    });
    Ok(rx)
}

/// CPU time of every thread of `pid`, from `/proc/<pid>/task/*/schedstat` (ns).
pub(crate) fn cpu_ns(pid: u32) -> u64 {
    cpu_by_thread(pid).values().sum()
}

/// CPU time of `pid`'s threads by thread name (`comm`: the agent's loop runs on the thread
/// named after the process, inotify on notify's, tasks on `tokio-rt-worker`s), in ns.
pub(crate) fn cpu_by_thread(pid: u32) -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Some(ns) = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        else {
            continue;
        };
        let name = std::fs::read_to_string(task.path().join("comm"))
            .map(|n| n.trim().to_string())
            .unwrap_or_default();
        *by_name.entry(name).or_insert(0) += ns;
    }
    by_name
}

/// Adds `after - before` per thread name into `total`.
pub(crate) fn add_cpu_delta(
    total: &mut BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) {
    for (name, ns) in after {
        let spent = ns.saturating_sub(before.get(name).copied().unwrap_or(0));
        *total.entry(name.clone()).or_insert(0) += spent;
    }
}

/// "name 123 µs, …" per update, largest first.
pub(crate) fn cpu_breakdown(total: &BTreeMap<String, u64>, updates: usize) -> String {
    let mut rows: Vec<(&String, &u64)> = total.iter().filter(|(_, ns)| **ns > 0).collect();
    rows.sort_by(|a, b| b.1.cmp(a.1));
    let per = |ns: u64| ns as f64 / 1000.0 / updates.max(1) as f64;
    rows.iter()
        .map(|(name, ns)| format!("{name} {:.0} µs", per(**ns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `sigsink` in the cgroup kubelet would give container `container_id` of pod `pod_uid`.
struct SignalSink {
    child: Child,
    received: Receiver<i128>,
    cgroup: PathBuf,
}

impl SignalSink {
    fn start(pod_uid: &str, container_id: &str) -> anyhow::Result<Self> {
        let root = controllers::cgroup_v2_root()?.context("no cgroup2 hierarchy")?;
        let cgroup = root
            .join(controllers::kubelet_cgroup_path(pod_uid, container_id).trim_start_matches('/'));
        std::fs::create_dir_all(&cgroup)?;
        let exe = std::env::current_exe()?;
        let sink = exe.parent().context("exe dir")?.join("sigsink");
        anyhow::ensure!(
            sink.exists(),
            "{} missing: build the testbed package",
            sink.display()
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec {}",
                cgroup.display(),
                sink.display()
            ))
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("sigsink stdout")?;
        let (tx, rx) = channel();
        let (ready_tx, ready_rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready_tx.send(());
                } else if let Ok(ns) = line.parse::<i128>()
                    && tx.send(ns).is_err()
                {
                    return;
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("sigsink not ready")?;
        Ok(Self {
            child,
            received: rx,
            cgroup,
        })
    }
}

impl Drop for SignalSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

/// Starts a node with one pod whose container is `container`, the kubelet stuck after the
/// first mount so only the bench writes the volume. Returns the node, pod uid and volume dir.
pub(crate) async fn stuck_node(
    config: &str,
    container: &str,
    items: Option<&[(&str, &str)]>,
    leaf: &IssuedLeaf,
) -> anyhow::Result<(TestNode, String, PathBuf)> {
    let node = TestNode::start(NodeConfig::new(NODE), config).await?;
    node.api
        .apply_secret(&tls_secret(NAMESPACE, "bench-tls", leaf))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let before = node.node.last_seq();
    node.api
        .create_pod(&controller_pod(
            "bench-0",
            container,
            &[("app", "bench")],
            "bench-tls",
            items,
        ))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    node.node
        .wait_for(before, Duration::from_secs(10), |e| {
            e.pod == "bench-0" && e.outcome == SyncOutcome::Started
        })
        .await
        .context("kubelet did not start the pod")?;
    node.node
        .set_stuck(PodRef::name(NAMESPACE, "bench-0"), true);
    let uid = node
        .api
        .pod(NAMESPACE, "bench-0")
        .and_then(|p| p.metadata.uid)
        .context("pod uid")?;
    let volume = node.kubelet.volume_dir(&uid, VolumeKind::Secret, "tls");
    Ok((node, uid, volume))
}

/// Puts `leaf` in the API as the bench pod's Secret and waits until the agent's `/status` shows
/// that version: a cluster's order, where the Secret changes in the API before kubelet writes
/// it (and the agent may prepare for the files it will see). Used with `--api-first`.
pub(crate) async fn publish_in_api_first(node: &TestNode, leaf: &IssuedLeaf) -> anyhow::Result<()> {
    let rv = node
        .api
        .apply_secret(&tls_secret(NAMESPACE, "bench-tls", leaf))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .metadata
        .resource_version
        .context("resourceVersion")?;
    node.wait_status(
        Duration::from_secs(10),
        &format!("the agent to see Secret version {rv}"),
        |status| {
            status["mounts"].as_array().is_some_and(|mounts| {
                mounts.iter().any(|m| {
                    m["secrets"].as_array().is_some_and(|secrets| {
                        secrets.iter().any(|s| s["resourceVersion"] == rv.as_str())
                    })
                })
            })
        },
    )
    .await?;
    Ok(())
}

/// A leaf never used before for every swap (`count` of them): nothing the agent learnt from an
/// earlier swap can help it, as nothing can in a real rotation.
pub(crate) fn fresh_leaves(ca: &TestCa, count: usize) -> anyhow::Result<Vec<IssuedLeaf>> {
    (0..count)
        .map(|_| ca.issue(&LeafSpec::valid_for(["bench.example"])))
        .collect()
}

#[derive(Debug)]
pub struct SignalResult {
    pub floor: Vec<Duration>,
    pub mountlag: Vec<Duration>,
    pub missed: usize,
    pub cpu_per_update: Duration,
    /// Agent CPU in the update windows by thread name (ns, all updates).
    pub cpu_by_thread: BTreeMap<String, u64>,
}

/// `..data` rename → SIGHUP delivered, against the inotify floor.
///
/// `api_first`: each new leaf is in the API, and seen by the agent, before its swap.
pub async fn swap_to_signal(
    swaps: usize,
    blocks: usize,
    pause: Duration,
    api_first: bool,
) -> anyhow::Result<SignalResult> {
    let ca = TestCa::new("bench CA")?;
    let leaves = fresh_leaves(&ca, 2 * swaps + 3)?;
    let closed_port = free_port()?;
    let config = format!(
        "stuckAfter: 1h\nnudge:\n  enabled: false\nreload:\n  minInterval: 0s\nverify:\n  timeout: 1h\n\
         controllers:\n  - name: sink\n    selector: app=bench\n    reload:\n      signal: SIGHUP\n      process: sigsink\n    probe:\n      ports: [{closed_port}]\n"
    );
    let (mut node, uid, volume) = stuck_node(&config, "sigsink", None, &leaves[0]).await?;
    node.log_filter = "warn".to_string();
    let sink = SignalSink::start(&uid, &crate::node::container_id(&uid, "sigsink"))?;
    node.start_agent()?;
    node.wait_ready(Duration::from_secs(10)).await?;
    let agent_pid = node.agent.as_ref().context("agent")?.pid();
    let floor_dir = node
        .kubelet
        .mount_volume("bench-floor", VolumeKind::Secret, "tls")?;
    swap(&floor_dir, &tls_payload(&leaves[0], "tls.key"))?;
    let floor_rx = start_floor(&floor_dir)?;

    let mut result = SignalResult {
        floor: Vec::new(),
        mountlag: Vec::new(),
        missed: 0,
        cpu_per_update: Duration::ZERO,
        cpu_by_thread: BTreeMap::new(),
    };
    // One warm-up rotation: the first reload scans /proc; later ones reuse the target.
    swap(&volume, &tls_payload(&leaves[1], "tls.key"))?;
    let _ = sink.received.recv_timeout(Duration::from_secs(5));
    tokio::time::sleep(pause).await;
    let per_block = swaps.div_ceil(blocks.max(1));
    let mut round = 2usize;
    let mut done = 0;
    while done < swaps {
        let n = per_block.min(swaps - done);
        for _ in 0..n {
            round += 1;
            let renamed = swap(
                &floor_dir,
                &tls_payload(&leaves[round % leaves.len()], "tls.key"),
            )?;
            match floor_rx.recv_timeout(Duration::from_secs(2)) {
                Ok(seen) => result.floor.push(from_ns(seen - renamed)),
                Err(_) => result.missed += 1,
            }
            tokio::time::sleep(pause).await;
        }
        for _ in 0..n {
            round += 1;
            let leaf = &leaves[round % leaves.len()];
            if api_first {
                publish_in_api_first(&node, leaf).await?;
            }
            let cpu_before = cpu_by_thread(agent_pid);
            let renamed = swap(&volume, &tls_payload(leaf, "tls.key"))?;
            match sink.received.recv_timeout(Duration::from_secs(2)) {
                Ok(seen) => result.mountlag.push(from_ns(seen - renamed)),
                Err(_) => result.missed += 1,
            }
            // Let the agent finish the update (snapshot, Events, status) before counting CPU.
            tokio::time::sleep(pause).await;
            add_cpu_delta(
                &mut result.cpu_by_thread,
                &cpu_before,
                &cpu_by_thread(agent_pid),
            );
        }
        done += n;
    }
    let cpu_total: u64 = result.cpu_by_thread.values().sum();
    result.cpu_per_update =
        Duration::from_nanos(cpu_total / u64::try_from(swaps.max(1)).unwrap_or(1));
    drop(sink);
    node.stop_agent()?;
    Ok(result)
}

/// What [`swap_to_served`] measured.
#[derive(Debug, Default)]
pub struct ServedResult {
    /// `..data` rename → the new leaf answered on every name.
    pub served: Vec<Duration>,
    /// Agent CPU from just before the rename until the reload was verified (signal plus the
    /// confirming probe rounds), per rotation.
    pub cpu_per_rotation: Duration,
}

/// How long after the new leaf is served the agent has surely confirmed it: three probe rounds
/// 150 ms apart, the first possibly one backoff step late.
const CONFIRMED_WITHIN: Duration = Duration::from_millis(700);

/// `..data` rename → the new leaf served on every name, through the agent's reload.
pub async fn swap_to_served(
    kind: ControllerKind,
    rotations: usize,
) -> anyhow::Result<ServedResult> {
    let ca = TestCa::new("bench CA")?;
    let names = vec![
        "edge.example.com".to_string(),
        "www.example.com".to_string(),
    ];
    let leaves: Vec<IssuedLeaf> = (0..8)
        .map(|_| ca.issue(&LeafSpec::valid_for(names.clone())))
        .collect::<anyhow::Result<_>>()?;
    let port = free_port()?;
    let profile = kind.name();
    let config = format!(
        "stuckAfter: 1h\nnudge:\n  enabled: false\nreload:\n  minInterval: 0s\nverify:\n  timeout: 5s\n\
         controllers:\n  - name: edge\n    profile: {profile}\n    selector: app=bench\n    probe:\n      ports: [{port}]\n"
    );
    let (key_name, items): (&str, Option<&[(&str, &str)]>) = match kind {
        ControllerKind::Nginx => ("tls.key", None),
        ControllerKind::Haproxy => (
            "tls.crt.key",
            Some(&[("tls.crt", "tls.crt"), ("tls.key", "tls.crt.key")]),
        ),
    };
    let (mut node, uid, volume) = stuck_node(&config, kind.name(), items, &leaves[0]).await?;
    node.log_filter = "warn".to_string();
    let controller = RunningController::start(
        ControllerSpec::new(kind, &uid, &volume, names.clone()).with_port(port),
    )?;
    node.start_agent()?;
    node.wait_ready(Duration::from_secs(10)).await?;
    let agent_pid = node.agent.as_ref().context("agent")?.pid();
    let verified =
        "mountlag_reloads_total{namespace=\"ingress\",pod=\"bench-0\",result=\"verified\"}";
    let mut samples = Vec::with_capacity(rotations);
    let mut cpu_total = 0u64;
    for round in 1..=rotations {
        let leaf = &leaves[round % leaves.len()];
        // Like a real rotation, each one comes to a settled controller (HAProxy's master
        // blocks its reload signal for a moment after each reload).
        controller.wait_reload_ready(Duration::from_secs(5))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cpu_before = cpu_ns(agent_pid);
        let renamed_at = swap(&volume, &tls_payload(leaf, key_name))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let served = mountlag::effects::probe::probe_all(
                controller.addr(),
                &names,
                Duration::from_secs(1),
            )
            .await;
            if served.iter().all(|(_, r)| {
                r.as_ref()
                    .is_ok_and(|l| l.fingerprint_sha256 == leaf.fingerprint_sha256)
            }) {
                samples.push(from_ns(monotonic_ns() - renamed_at));
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: rotation {round} not served within 5 s\n{}",
                    kind.name(),
                    node.agent_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Read the CPU before scraping: the scrape is the bench's cost, not the rotation's.
        tokio::time::sleep(CONFIRMED_WITHIN).await;
        cpu_total += cpu_ns(agent_pid).saturating_sub(cpu_before);
        let confirmed = node.metric(verified).await?.unwrap_or(0.0);
        if confirmed < round as f64 {
            bail!(
                "{}: rotation {round} served but not verified {CONFIRMED_WITHIN:?} later ({confirmed} verified)\n{}",
                kind.name(),
                node.agent_log()
            );
        }
    }
    node.stop_agent()?;
    Ok(ServedResult {
        served: samples,
        cpu_per_rotation: Duration::from_nanos(
            cpu_total / u64::try_from(rotations.max(1)).unwrap_or(1),
        ),
    })
}

/// Secret updated in the API → the agent has verified the new leaf served by nginx.
pub async fn api_to_verified(rotations: usize) -> anyhow::Result<Vec<Duration>> {
    Ok(
        api_to_verified_with(rotations, None, &HeadlineShape::default())
            .await?
            .samples,
    )
}

/// What the pod and kubelet look like in a headline run.
#[derive(Debug, Clone, Default)]
pub struct HeadlineShape {
    /// kubelet stand-in: from a pod change to its sync (a real kubelet: up to about a second).
    pub pod_change_delay: Duration,
}

/// What the headline run measured: API → verified per rotation, and what the rotations cost
/// the API (requests of the agent, by verb and resource, over all rotations).
#[derive(Debug, Clone)]
pub struct Headline {
    pub nudge_after: String,
    pub samples: Vec<Duration>,
    pub requests: BTreeMap<(String, String), u64>,
    pub nudges: f64,
}

/// [`api_to_verified`] with `nudge.after` set (`None`: the agent's default).
pub async fn api_to_verified_with(
    rotations: usize,
    nudge_after: Option<&str>,
    shape: &HeadlineShape,
) -> anyhow::Result<Headline> {
    let ca = TestCa::new("bench CA")?;
    let names = vec!["edge.example.com".to_string()];
    let port = free_port()?;
    let nudge = nudge_after
        .map(|after| format!("nudge:\n  after: {after}\n"))
        .unwrap_or_default();
    let config = format!(
        "{nudge}controllers:\n  - name: edge\n    profile: nginx\n    selector: app=bench\n    probe:\n      ports: [{port}]\n"
    );
    let mut node = TestNode::start(
        NodeConfig::new(NODE).pod_change_delay(shape.pod_change_delay),
        &config,
    )
    .await?;
    node.log_filter = "warn".to_string();
    let first = ca.issue(&LeafSpec::valid_for(names.clone()))?;
    node.api
        .apply_secret(&tls_secret(NAMESPACE, "bench-tls", &first))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let pod = controller_pod("bench-0", "nginx", &[("app", "bench")], "bench-tls", None);
    let before = node.node.last_seq();
    node.api
        .create_pod(&pod)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    node.node
        .wait_for(before, Duration::from_secs(10), |e| {
            e.pod == "bench-0" && e.outcome == SyncOutcome::Started
        })
        .await
        .context("kubelet did not start the pod")?;
    let uid = node
        .api
        .pod(NAMESPACE, "bench-0")
        .and_then(|p| p.metadata.uid)
        .context("uid")?;
    let volume = node.kubelet.volume_dir(&uid, VolumeKind::Secret, "tls");
    let _controller = RunningController::start(
        ControllerSpec::new(ControllerKind::Nginx, &uid, &volume, names.clone()).with_port(port),
    )?;
    node.start_agent()?;
    node.wait_ready(Duration::from_secs(10)).await?;
    let verified =
        "mountlag_reloads_total{namespace=\"ingress\",pod=\"bench-0\",result=\"verified\"}";
    let nudges = "mountlag_kubelet_nudges_total{result=\"success\"}";
    let nudges_before = node.metric(nudges).await?.unwrap_or(0.0);
    let before = node.api.stats().requests;
    let mut samples = Vec::new();
    for round in 1..=rotations {
        let leaf = ca.issue(&LeafSpec::valid_for(names.clone()))?;
        let start = Instant::now();
        node.api
            .apply_secret(&tls_secret(NAMESPACE, "bench-tls", &leaf))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        loop {
            if node.metric(verified).await?.unwrap_or(0.0) >= round as f64 {
                samples.push(start.elapsed());
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "rotation {round} not verified within 30 s\n{}",
                    node.agent_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Rotations come `reload.minInterval` (5 s by default) apart, as real ones do.
        tokio::time::sleep(Duration::from_millis(5500)).await;
    }
    let after = node.api.stats().requests;
    let nudged = node.metric(nudges).await?.unwrap_or(0.0) - nudges_before;
    node.stop_agent()?;
    // The agent's own requests only: the kubelet stand-in reads the store in-process.
    let requests = after
        .into_iter()
        .map(|(k, n)| {
            let old = before.get(&k).copied().unwrap_or(0);
            (k, n - old)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    Ok(Headline {
        nudge_after: nudge_after.unwrap_or("default").to_string(),
        samples,
        requests,
        nudges: nudged,
    })
}

/// `testbed bench headline`: API → verified for each `nudge.after`, with the API cost of a
/// rotation.
pub async fn headline_sweep(
    rotations: usize,
    nudge_afters: &[String],
    shape: &HeadlineShape,
) -> anyhow::Result<()> {
    println!(
        "## Secret updated in the API → new leaf served and verified (nginx, kubelet 60–90 s, {} ms from a pod change to its sync), by nudge.after ({rotations} rotations each, 5.5 s apart)\n",
        shape.pod_change_delay.as_millis(),
    );
    println!(
        "| nudge.after | rotations | p50 ms | p99 ms | max ms | nudges / rotation | agent API requests / rotation (verb resource: n) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for after in nudge_afters {
        let run = api_to_verified_with(rotations, Some(after), shape).await?;
        let Some(s) = Summary::of(&run.samples) else {
            continue;
        };
        let n = run.samples.len().max(1) as f64;
        let requests: Vec<String> = run
            .requests
            .iter()
            .filter(|((verb, _), _)| verb != "watch" && verb != "list")
            .map(|((verb, resource), count)| format!("{verb} {resource}: {:.2}", *count as f64 / n))
            .collect();
        println!(
            "| {after} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {} |",
            s.count,
            s.p50.as_secs_f64() * 1e3,
            s.p99.as_secs_f64() * 1e3,
            s.max.as_secs_f64() * 1e3,
            run.nudges / n,
            requests.join(", ")
        );
    }
    Ok(())
}

fn row(name: &str, samples: &[Duration]) {
    match Summary::of(samples) {
        Some(s) => println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} |",
            s.count,
            micros(s.p50),
            micros(s.p99),
            micros(s.max)
        ),
        None => println!("| {name} | 0 | - | - | - |"),
    }
}

/// Which parts of `testbed bench reload` to run, and their sizes.
#[derive(Debug, Clone)]
pub struct ReloadBench {
    /// `signal`, `served`, `headline`, `http` (`all`: every one).
    pub parts: Vec<String>,
    pub swaps: usize,
    pub blocks: usize,
    pub served: usize,
    pub headline: usize,
    /// Pause after each swap of the `signal` and `http` parts.
    pub pause: Duration,
    /// configmap-reload v0.2.1 for the `http` part (`None`: its row says skipped).
    pub configmap_reload: Option<PathBuf>,
    /// `signal` and `http` parts: every new leaf is put in the API, and seen by the agent,
    /// before the files are swapped (a cluster's order); otherwise the files change alone.
    pub api_first: bool,
}

/// The parts `--parts` knows.
pub const PARTS: [&str; 4] = ["signal", "served", "headline", "http"];

impl ReloadBench {
    fn wants(&self, part: &str) -> bool {
        self.parts.iter().any(|p| p == part || p == "all")
    }
}

pub async fn run(bench: &ReloadBench) -> anyhow::Result<()> {
    if let Some(unknown) = bench
        .parts
        .iter()
        .find(|p| *p != "all" && !PARTS.contains(&p.as_str()))
    {
        bail!("unknown part {unknown:?}: expected some of {PARTS:?} or all");
    }
    let (swaps, blocks, served, headline) =
        (bench.swaps, bench.blocks, bench.served, bench.headline);
    if bench.wants("signal") {
        signal_part(swaps, blocks, bench.pause, bench.api_first).await?;
    }
    if bench.wants("served") {
        served_part(served).await?;
    }
    if bench.wants("headline") {
        println!(
            "\n## Secret updated in the API → new leaf served and verified (nginx, kubelet 60–90 s, nudge.after 2s)\n"
        );
        println!("| path | rotations | p50 µs | p99 µs | max µs |");
        println!("|---|---:|---:|---:|---:|");
        row("API → verified", &api_to_verified(headline).await?);
    }
    if bench.wants("http") {
        let cmr = bench.configmap_reload.as_deref().filter(|p| p.exists());
        let result = crate::bench_http_reload::swap_to_http(
            swaps,
            blocks,
            bench.pause,
            cmr,
            bench.api_first,
        )
        .await?;
        println!();
        crate::bench_http_reload::print(&result, swaps, blocks, bench.pause, bench.api_first);
    }
    Ok(())
}

async fn signal_part(
    swaps: usize,
    blocks: usize,
    pause: Duration,
    api_first: bool,
) -> anyhow::Result<()> {
    let order = if api_first {
        "each leaf in the API and seen by the agent before its swap"
    } else {
        "files swapped alone, the API unchanged"
    };
    println!(
        "## ..data rename → reload signal delivered ({swaps} swaps each, {blocks} alternating blocks; {order})\n"
    );
    let signal = swap_to_signal(swaps, blocks, pause, api_first).await?;
    println!("| subject | swaps | p50 µs | p99 µs | max µs |");
    println!("|---|---:|---:|---:|---:|");
    row("inotify floor (rename seen)", &signal.floor);
    row("mountlag (SIGHUP received)", &signal.mountlag);
    if let (Some(f), Some(m)) = (Summary::of(&signal.floor), Summary::of(&signal.mountlag)) {
        println!(
            "\nratio mountlag / floor: p50 {:.2}×, p99 {:.2}×; missed {}; agent CPU per update {:.0} µs",
            micros(m.p50) / micros(f.p50),
            micros(m.p99) / micros(f.p99),
            signal.missed,
            micros(signal.cpu_per_update)
        );
        println!(
            "agent CPU per update by thread: {}",
            cpu_breakdown(&signal.cpu_by_thread, signal.mountlag.len() + signal.missed)
        );
    }
    Ok(())
}

async fn served_part(served: usize) -> anyhow::Result<()> {
    println!("\n## ..data rename → new leaf served on every name ({served} rotations each)\n");
    println!("| controller | rotations | p50 µs | p99 µs | max µs |");
    println!("|---|---:|---:|---:|---:|");
    let mut cpu = Vec::new();
    for kind in [ControllerKind::Nginx, ControllerKind::Haproxy] {
        if let Err(why) = controllers::available(kind) {
            println!("| {} | skipped: {why} | | | |", kind.name());
            continue;
        }
        let result = swap_to_served(kind, served).await?;
        row(kind.name(), &result.served);
        cpu.push((kind.name(), result.cpu_per_rotation));
    }
    for (name, per_rotation) in cpu {
        println!(
            "\n{name}: agent CPU per rotation, rename → verified (signal + 3 confirming probe rounds): {:.0} µs",
            micros(per_rotation)
        );
    }
    Ok(())
}
