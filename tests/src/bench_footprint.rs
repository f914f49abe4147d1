//! `testbed bench footprint`: the agent's memory, idle CPU and idle wakeups with many tracked
//! mounts, and the latency of its `/metrics` and `/status` endpoints; measured, never asserted.
//!
//! Per row: the API stand-in (BOOKMARKs every 60 s, like a real API server), the kubelet
//! stand-in at real timing (periodic syncs every 60–90 s, which find nothing to write), the
//! Secrets and pods of the row, all volumes mounted before the agent starts. Then the agent is
//! spawned, timed to `/readyz` 200, left until every mount is `in_sync` and every watch is open,
//! and sampled from `/proc` at the start and the end of an idle window in which nothing touches
//! it (no scrape, no change):
//!
//! - CPU: `utime + stime` of `/proc/<pid>/stat` (whole process, exited threads included), in
//!   USER_HZ ticks (100 per second on Linux);
//! - wakeups: `voluntary_ctxt_switches + nonvoluntary_ctxt_switches` of every
//!   `/proc/<pid>/task/<tid>/status`, differenced per thread (a thread that exits during the
//!   window loses its count and is reported);
//! - memory: `VmRSS` (and `VmHWM`, `RssAnon`, `RssFile`) of `/proc/<pid>/status` at the end.
//!
//! After the window, `/metrics` and `/status` are each fetched `scrapes` times in a row (a new
//! connection per request, as Prometheus and `mountlag status` do). Then, with `burst`, every
//! Secret of the row is renewed at once (a cert-manager renewal wave) and the agent is timed
//! until every mount is `in_sync` again (its nudges bring kubelet in), with its CPU and peak RSS.
//!
//! With `outage`, the API stand-in is then stopped (connections refused, as while a control
//! plane restarts): the agent's CPU, wakeups and log lines over the outage, and the time from
//! the API's return to `/readyz` 200 with the requests it took.
//!
//! With `agent_cpu_limit_m`, the agent runs under a CFS quota (cgroup v1 `cpu` hierarchy, the
//! way kubelet enforces `resources.limits.cpu`) from right after its spawn: what the DaemonSet's
//! CPU limit does to start → ready and to a burst.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::apiserver::ApiServerConfig;
use crate::bench::Summary;
use crate::bench_api::{BenchNode, Shape, states};
use crate::certs::{LeafSpec, TestCa};
use crate::cluster::{NODE, agent_config, http_get};
use crate::node::NodeConfig;

/// Stops the API stand-in for `length`, then starts it again and waits for `/readyz`.
async fn outage(bn: &mut BenchNode, pid: u32, length: Duration) -> anyhow::Result<Outage> {
    let lines_before = bn.agent_log_lines();
    bn.api.set_available(false).await?;
    let a = sample(pid)?;
    tokio::time::sleep(length).await;
    let b = sample(pid)?;
    let log_lines = bn.agent_log_lines().saturating_sub(lines_before);
    bn.api.reset_stats();
    bn.api.set_available(true).await?;
    let back = Instant::now();
    let listen = bn.agent()?.listen;
    // kube's backoff caps a failing watch's wait at 30 s: well within the limit.
    let deadline = back + Duration::from_secs(300);
    loop {
        if let Ok((200, _)) = http_get(listen, "/readyz").await {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "agent not ready 300 s after the API came back:\n{}",
                bn.agent_log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Outage {
        length,
        idle: idle_between(&a, &b),
        log_lines,
        back_to_ready: back.elapsed(),
        requests_to_ready: bn.api.stats().total_requests(),
    })
}

/// Linux reports `/proc/<pid>/stat` times in USER_HZ ticks: 100 per second on every
/// architecture the agent targets.
const USER_HZ: f64 = 100.0;

/// Options of `testbed bench footprint`.
#[derive(Debug, Clone)]
pub struct FootprintOptions {
    /// Idle window.
    pub window: Duration,
    /// Tracked mounts per row.
    pub mounts: Vec<usize>,
    /// Secret volumes per pod.
    pub per_pod: usize,
    /// Add a row with the largest mount count sharing this many Secrets (0: no such row).
    pub shared_secrets: usize,
    /// The API stand-in's BOOKMARK interval.
    pub bookmark_interval: Duration,
    /// Requests per endpoint for the scrape latency.
    pub scrapes: usize,
    /// Pause between "all in sync, all watches open" and the start of the window.
    pub settle: Duration,
    /// Run the agent with `api.http2: false` (one HTTP/1.1 connection per watch), to compare.
    pub api_http1: bool,
    /// Renew every Secret at once after the scrapes and time the agent through it.
    pub burst: bool,
    /// Run the agent under this CPU limit (millicores, CFS quota per 100 ms period).
    pub agent_cpu_limit_m: Option<u32>,
    /// Pods and Secrets as a real cluster serves them (managed fields, cert-manager's
    /// annotations), not as bare as the stand-in keeps what it is given.
    pub managed_fields: bool,
    /// After the scrapes, stop the API stand-in for this long (connections refused, as
    /// during a control-plane restart), then start it again and time the agent back to ready.
    pub outage: Option<Duration>,
}

/// The agent through an API outage: every watch fails and retries with its backoff.
#[derive(Debug, Clone)]
pub struct Outage {
    pub length: Duration,
    /// CPU and wakeups over the outage.
    pub idle: Idle,
    /// Lines the agent logged during the outage.
    pub log_lines: usize,
    /// API back → `/readyz` 200.
    pub back_to_ready: Duration,
    /// Requests from the API's return to ready (the relists).
    pub requests_to_ready: u64,
}

/// The agent through a renewal of every Secret at once.
#[derive(Debug, Clone)]
pub struct Burst {
    /// Renewal applied → every mount `in_sync` again.
    pub wall: Duration,
    /// Agent CPU over that span.
    pub cpu_ms: f64,
    /// `VmHWM` after it (the peak of the whole run).
    pub hwm: u64,
    /// SIGTERM → exit, right after every mount is in sync again.
    pub shutdown: Duration,
}

/// A CFS quota on one process, as kubelet sets `resources.limits.cpu` (cgroup v1 `cpu`
/// hierarchy; `cpu.max` on cgroup v2). Removed on drop (after the process is gone).
#[derive(Debug)]
pub struct CpuLimit {
    dir: std::path::PathBuf,
}

impl CpuLimit {
    pub fn apply(pid: u32, millicores: u32) -> anyhow::Result<Self> {
        let root = Path::new("/sys/fs/cgroup/cpu");
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let dir = if root.join("cpu.cfs_quota_us").exists() {
            let dir = root.join(format!("mountlag-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
            std::fs::write(dir.join("cpu.cfs_period_us"), "100000")?;
            std::fs::write(
                dir.join("cpu.cfs_quota_us"),
                (u64::from(millicores) * 100).to_string(),
            )?;
            dir
        } else if v2.exists() {
            let dir =
                Path::new("/sys/fs/cgroup").join(format!("mountlag-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
            std::fs::write(
                dir.join("cpu.max"),
                format!("{} 100000", u64::from(millicores) * 100),
            )?;
            dir
        } else {
            bail!("no cgroup cpu controller to limit the agent with");
        };
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving the agent into {}", dir.display()))?;
        Ok(Self { dir })
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// One `/proc` sample of a process.
#[derive(Debug, Clone)]
pub struct ProcSample {
    pub at: Instant,
    /// utime + stime, ticks.
    pub ticks: u64,
    /// tid → (comm, voluntary + nonvoluntary context switches).
    pub tasks: BTreeMap<u32, (String, u64)>,
}

fn status_fields(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect())
}

fn kib(fields: &BTreeMap<String, String>, key: &str) -> u64 {
    fields
        .get(key)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of `/proc/<pid>/stat`, ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').context("no ) in /proc/<pid>/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        Ok(f.get(n - 3).context("short /proc/<pid>/stat")?.parse()?)
    };
    Ok(field(14)? + field(15)?)
}

/// One sample of CPU time and per-thread context switches.
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let at = Instant::now();
    let ticks = cpu_ticks(pid)?;
    let mut tasks = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread may exit between read_dir and the read.
        let Ok(fields) = status_fields(&entry.path().join("status")) else {
            continue;
        };
        let switches =
            kib(&fields, "voluntary_ctxt_switches") + kib(&fields, "nonvoluntary_ctxt_switches");
        let comm = fields.get("Name").cloned().unwrap_or_default();
        tasks.insert(tid, (comm, switches));
    }
    Ok(ProcSample { at, ticks, tasks })
}

/// Memory and thread figures of `/proc/<pid>/status`, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss: u64,
    pub hwm: u64,
    pub anon: u64,
    pub file: u64,
    pub threads: u64,
    pub fds: usize,
}

pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let f = status_fields(Path::new(&format!("/proc/{pid}/status")))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok(Memory {
        rss: kib(&f, "VmRSS"),
        hwm: kib(&f, "VmHWM"),
        anon: kib(&f, "RssAnon"),
        file: kib(&f, "RssFile"),
        threads: kib(&f, "Threads"),
        fds,
    })
}

/// Idle CPU and wakeups between two samples.
#[derive(Debug, Clone, Default)]
pub struct Idle {
    pub seconds: f64,
    pub cpu_ms: f64,
    pub wakeups: u64,
    /// Thread name → wakeups in the window.
    pub by_thread: BTreeMap<String, u64>,
    /// Threads present at the start and gone at the end.
    pub exited: usize,
    /// Threads born during the window.
    pub born: usize,
}

pub fn idle_between(a: &ProcSample, b: &ProcSample) -> Idle {
    let mut idle = Idle {
        seconds: b.at.duration_since(a.at).as_secs_f64(),
        cpu_ms: b.ticks.saturating_sub(a.ticks) as f64 * 1000.0 / USER_HZ,
        ..Idle::default()
    };
    for (tid, (comm, n)) in &b.tasks {
        let d = match a.tasks.get(tid) {
            Some((_, before)) => n.saturating_sub(*before),
            None => {
                idle.born += 1;
                *n
            }
        };
        idle.wakeups += d;
        *idle.by_thread.entry(comm.clone()).or_insert(0) += d;
    }
    idle.exited = a.tasks.keys().filter(|t| !b.tasks.contains_key(t)).count();
    idle
}

fn volume_syncs(node: &crate::node::NodeKubelet) -> u64 {
    let s = node.stats();
    s.volume_writes + s.volume_unchanged
}

/// `mountlag_rescans_total` samples by `reason`.
fn rescans(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("mountlag_rescans_total{")?;
            let (labels, value) = rest.split_once("} ")?;
            let reason = labels
                .split(',')
                .find_map(|kv| kv.trim().strip_prefix("reason="))?
                .trim_matches('"')
                .to_string();
            Some((reason, value.trim().parse().ok()?))
        })
        .collect()
}

/// Counts mount-table changes of this mount namespace: `poll(POLLPRI)` on
/// `/proc/self/mountinfo` in a thread (the same mechanism the agent uses).
#[derive(Debug)]
pub struct MountChangeCounter {
    stop: Option<std::os::unix::net::UnixStream>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl MountChangeCounter {
    pub fn start() -> anyhow::Result<Self> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd as _;
        let table = std::fs::File::open("/proc/self/mountinfo")?;
        let (stop, stopped) = std::os::unix::net::UnixStream::pair()?;
        let thread = std::thread::Builder::new()
            .name("mount-changes".into())
            .spawn(move || {
                let mut changes = 0u64;
                loop {
                    let mut fds = [
                        PollFd::new(table.as_fd(), PollFlags::POLLPRI),
                        PollFd::new(stopped.as_fd(), PollFlags::POLLIN),
                    ];
                    match poll(&mut fds, PollTimeout::NONE) {
                        Ok(_) => {
                            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                                return changes;
                            }
                            if fds[0].revents().is_some_and(|r| {
                                r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR)
                            }) {
                                changes += 1;
                            }
                        }
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(_) => return changes,
                    }
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread; the number of changes seen.
    pub fn stop(mut self) -> u64 {
        drop(self.stop.take());
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

/// One row of the footprint table.
#[derive(Debug, Clone)]
pub struct FootprintRow {
    pub shape: Shape,
    pub ready: Duration,
    /// Agent CPU from spawn to ready.
    pub ready_cpu_ms: f64,
    /// `VmHWM` once every mount is in sync after the start.
    pub start_hwm: u64,
    pub burst: Option<Burst>,
    pub outage: Option<Outage>,
    pub memory: Memory,
    pub idle: Idle,
    /// BOOKMARK rounds (one BOOKMARK per open watch) due in the window: every watch gets one
    /// `bookmark_interval` after it started and then every interval; the watches start
    /// together, within the agent's startup.
    pub bookmark_rounds: usize,
    /// Requests the agent made to the API stand-in during the window.
    pub api_requests_in_window: u64,
    /// Connections open to the API stand-in at the end of the window (the agent's only).
    pub api_connections: usize,
    /// Mount-table changes in this mount namespace during the window (any process), counted
    /// by a thread of this process polling `/proc/self/mountinfo`.
    pub mount_changes: u64,
    /// Volume syncs of the kubelet stand-in during the window (periodic resyncs that found
    /// nothing to write, or writes).
    pub kubelet_volume_syncs: u64,
    /// `mountlag_rescans_total` deltas over the window, by `reason`.
    pub rescans: BTreeMap<String, f64>,
    pub metrics_scrape: Option<Summary>,
    pub status_scrape: Option<Summary>,
    pub metrics_bytes: usize,
    pub status_bytes: usize,
}

async fn scrape(
    listen: std::net::SocketAddr,
    path: &str,
    n: usize,
) -> anyhow::Result<(Option<Summary>, usize)> {
    let mut samples = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let start = Instant::now();
        let (code, body) = http_get(listen, path).await?;
        samples.push(start.elapsed());
        anyhow::ensure!(code == 200, "{path} answered {code}");
        bytes = body.len();
    }
    Ok((Summary::of(&samples), bytes))
}

pub async fn footprint_row(shape: Shape, o: &FootprintOptions) -> anyhow::Result<FootprintRow> {
    let mut bn = BenchNode::start(
        ApiServerConfig {
            bookmark_interval: o.bookmark_interval,
            ..ApiServerConfig::default()
        },
        NodeConfig::new(NODE),
        &format!(
            "{}api:\n  http2: {}\n",
            agent_config("250ms", "120s", true),
            !o.api_http1
        ),
        false,
    )
    .await?;
    bn.real_world_metadata = o.managed_fields;
    let ca = TestCa::new("bench footprint CA")?;
    bn.populate(&shape, &ca)?;
    bn.wait_pods_started(shape.pods(), Duration::from_secs(300))
        .await?;
    bn.start_agent()?;
    let pid = bn.agent()?.pid();
    let cpu_limit = match o.agent_cpu_limit_m {
        Some(m) => Some(CpuLimit::apply(pid, m)?),
        None => None,
    };
    let ready = bn.wait_ready(Duration::from_secs(300)).await?;
    let ready_cpu_ms = cpu_ticks(pid)? as f64 * 1e3 / USER_HZ;
    bn.wait_all_in_sync(shape.mounts, Duration::from_secs(300))
        .await?;
    let start_hwm = memory(pid)?.hwm;
    let watches = shape.referenced_secrets();
    bn.wait_secret_watches(watches, Duration::from_secs(60))
        .await?;
    let watches_open = Instant::now();
    let rescans_before = rescans(&bn.metrics().await?);
    if ready > Duration::from_secs(1) {
        eprintln!(
            "bench: slow start ({:.0} ms); agent log:\n{}",
            ms(ready),
            bn.agent_log_tail()
        );
    }
    tokio::time::sleep(o.settle).await;
    bn.api.reset_stats();
    let counter = MountChangeCounter::start()?;
    let syncs_before = volume_syncs(bn.node()?);
    let a = sample(pid)?;
    tokio::time::sleep(o.window).await;
    let b = sample(pid)?;
    let kubelet_volume_syncs = volume_syncs(bn.node()?) - syncs_before;
    let mount_changes = counter.stop();
    let memory = memory(pid)?;
    let api_stats = bn.api.stats();
    let api_requests_in_window = api_stats.total_requests();
    let api_connections = api_stats.open_connections;
    let rescans_after = rescans(&bn.metrics().await?);
    let rescans = rescans_after
        .iter()
        .map(|(k, v)| (k.clone(), v - rescans_before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect();
    let idle = idle_between(&a, &b);
    let listen = bn.agent()?.listen;
    let (metrics_scrape, metrics_bytes) = scrape(listen, "/metrics", o.scrapes).await?;
    let (status_scrape, status_bytes) = scrape(listen, "/status", o.scrapes).await?;
    let outage = match o.outage {
        Some(length) => Some(outage(&mut bn, pid, length).await?),
        None => None,
    };
    let burst = if o.burst {
        let before = cpu_ticks(pid)?;
        let start = Instant::now();
        for i in 0..shape.referenced_secrets() {
            let host = format!("edge-{i}.example.com");
            let leaf = ca.issue(&LeafSpec::valid_for([host.clone()]))?;
            bn.api
                .apply_secret(&bn.secret(i, &host, &leaf)?)
                .map_err(|e| anyhow::anyhow!("renew secret {i}: {e}"))?;
        }
        // Out of sync first (the agent saw the renewal), then all back in sync.
        bn.wait_status(
            Duration::from_secs(300),
            Duration::from_millis(100),
            "the renewal seen",
            |s| states(s).get("in_sync") != Some(&shape.mounts),
        )
        .await?;
        bn.wait_all_in_sync(shape.mounts, Duration::from_secs(600))
            .await?;
        Some(Burst {
            wall: start.elapsed(),
            cpu_ms: (cpu_ticks(pid)? - before) as f64 * 1e3 / USER_HZ,
            hwm: self::memory(pid)?.hwm,
            shutdown: Duration::ZERO,
        })
    } else {
        None
    };
    let stopping = Instant::now();
    let status = bn.stop_agent()?;
    let burst = burst.map(|b| Burst {
        shutdown: stopping.elapsed(),
        ..b
    });
    if !status.success() {
        eprintln!("bench: agent exited with {status}");
    }
    drop(cpu_limit);
    Ok(FootprintRow {
        shape,
        ready,
        ready_cpu_ms,
        start_hwm,
        burst,
        memory,
        bookmark_rounds: (1..)
            .map(|k| watches_open + o.bookmark_interval * k)
            .take_while(|t| *t <= b.at)
            .filter(|t| *t >= a.at)
            .count(),
        idle,
        outage,
        api_requests_in_window,
        api_connections,
        mount_changes,
        kubelet_volume_syncs,
        rescans,
        metrics_scrape,
        status_scrape,
        metrics_bytes,
        status_bytes,
    })
}

fn mib(k: u64) -> f64 {
    k as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn print_rows(rows: &[FootprintRow], o: &FootprintOptions) {
    println!(
        "idle window {:.0} s, API stand-in BOOKMARK interval {:.0} s, kubelet stand-in at real timing\n",
        o.window.as_secs_f64(),
        o.bookmark_interval.as_secs_f64()
    );
    println!(
        "| mounts | pods | Secrets (watches) | spawn → ready ms | VmRSS MiB | VmHWM MiB | RssAnon / RssFile MiB | threads | fds | API connections | idle CPU ms/s | idle wakeups/s | BOOKMARK rounds due in window | API requests in window |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let s = r.idle.seconds.max(1e-9);
        println!(
            "| {} | {} | {} ({}) | {:.0} | {:.1} | {:.1} | {:.1} / {:.1} | {} | {} | {} | {:.3} | {:.2} | {} | {} |",
            r.shape.mounts,
            r.shape.pods(),
            r.shape.referenced_secrets(),
            r.shape.referenced_secrets() + 1,
            ms(r.ready),
            mib(r.memory.rss),
            mib(r.memory.hwm),
            mib(r.memory.anon),
            mib(r.memory.file),
            r.memory.threads,
            r.memory.fds,
            r.api_connections,
            r.idle.cpu_ms / s,
            r.idle.wakeups as f64 / s,
            r.bookmark_rounds,
            r.api_requests_in_window
        );
    }
    println!(
        "\nstart and renewal burst{}:\n",
        o.agent_cpu_limit_m
            .map_or_else(String::new, |m| format!(" (agent CPU limited to {m}m)"))
    );
    println!(
        "| mounts | Secrets | spawn → ready ms | agent CPU to ready ms | VmHWM after start MiB | burst: renewal → all in sync ms | burst agent CPU ms | VmHWM after burst MiB | then SIGTERM → exit ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let (wall, cpu, hwm, shutdown) = r.burst.as_ref().map_or_else(
            || ("-".into(), "-".into(), "-".into(), "-".into()),
            |b| {
                (
                    format!("{:.0}", ms(b.wall)),
                    format!("{:.0}", b.cpu_ms),
                    format!("{:.1}", mib(b.hwm)),
                    format!("{:.0}", ms(b.shutdown)),
                )
            },
        );
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.1} | {wall} | {cpu} | {hwm} | {shutdown} |",
            r.shape.mounts,
            r.shape.referenced_secrets(),
            ms(r.ready),
            r.ready_cpu_ms,
            mib(r.start_hwm),
        );
    }
    println!(
        "\nwhat happened in the window, and the agent's wakeups by thread (counts over the window):\n"
    );
    println!(
        "| mounts | Secrets | mount-table changes (any process) | kubelet stand-in volume resyncs | agent rescans by reason | wakeups by thread | threads born / exited |"
    );
    println!("|---:|---:|---:|---:|---|---|---|");
    for r in rows {
        let by: Vec<String> = r
            .idle
            .by_thread
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| format!("{t}: {n}"))
            .collect();
        let rescans: Vec<String> = r
            .rescans
            .iter()
            .map(|(k, v)| format!("{k}: {v:.0}"))
            .collect();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} / {} |",
            r.shape.mounts,
            r.shape.referenced_secrets(),
            r.mount_changes,
            r.kubelet_volume_syncs,
            if rescans.is_empty() {
                "none".to_string()
            } else {
                rescans.join(", ")
            },
            if by.is_empty() {
                "none".to_string()
            } else {
                by.join(", ")
            },
            r.idle.born,
            r.idle.exited
        );
    }
    if rows.iter().any(|r| r.outage.is_some()) {
        println!("\nAPI outage (the stand-in stopped: connections refused), then back:\n");
        println!(
            "| mounts | Secrets | outage s | agent CPU ms/s | wakeups/s | log lines | API back → ready ms | requests to ready |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in rows {
            if let Some(o) = &r.outage {
                let s = o.idle.seconds.max(1e-9);
                println!(
                    "| {} | {} | {:.0} | {:.1} | {:.1} | {} | {:.0} | {} |",
                    r.shape.mounts,
                    r.shape.referenced_secrets(),
                    o.length.as_secs_f64(),
                    o.idle.cpu_ms / s,
                    o.idle.wakeups as f64 / s,
                    o.log_lines,
                    ms(o.back_to_ready),
                    o.requests_to_ready
                );
            }
        }
    }
    println!(
        "\nscrape latency ({} requests per endpoint, one connection each, after the idle window):\n",
        o.scrapes
    );
    println!("| mounts | endpoint | body KiB | p50 ms | p99 ms | max ms |");
    println!("|---:|---|---:|---:|---:|---:|");
    for r in rows {
        for (name, s, bytes) in [
            ("/metrics", r.metrics_scrape, r.metrics_bytes),
            ("/status", r.status_scrape, r.status_bytes),
        ] {
            if let Some(s) = s {
                println!(
                    "| {} | {name} | {:.1} | {:.2} | {:.2} | {:.2} |",
                    r.shape.mounts,
                    bytes as f64 / 1024.0,
                    ms(s.p50),
                    ms(s.p99),
                    ms(s.max)
                );
            }
        }
    }
}

/// `testbed bench footprint`.
pub fn run(o: &FootprintOptions) -> anyhow::Result<()> {
    if let Err(why) = crate::real::can_mount() {
        bail!("bench footprint needs root and tmpfs mounts: {why}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut shapes: Vec<Shape> = o
            .mounts
            .iter()
            .map(|&m| Shape {
                mounts: m,
                per_pod: o.per_pod,
                secrets: m,
            })
            .collect();
        if o.shared_secrets > 0
            && let Some(&max) = o.mounts.iter().max()
        {
            shapes.push(Shape {
                mounts: max,
                per_pod: o.per_pod,
                secrets: o.shared_secrets,
            });
        }
        println!("## footprint\n");
        let mut rows = Vec::new();
        for shape in shapes {
            eprintln!(
                "bench footprint: {} mounts, {} Secrets ...",
                shape.mounts,
                shape.referenced_secrets()
            );
            rows.push(footprint_row(shape, o).await?);
        }
        print_rows(&rows, o);
        Ok(())
    })
}
