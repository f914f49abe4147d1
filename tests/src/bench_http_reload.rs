//! `testbed bench reload --parts http`: `..data` rename → HTTP reload request received, for
//! three watchers in one run, each on its own tmpfs volume, in alternating blocks, with the same
//! swap (kubelet's AtomicWriter steps, rename timed with `CLOCK_MONOTONIC`):
//!
//! - **floor**: `inotify-post`, one thread blocked on an inotify fd (`IN_MOVED_TO` only) that
//!   POSTs over one kept-alive connection and checks nothing;
//! - **configmap-reload** (the Go sidecar, a binary built outside the repository by
//!   `tests/bench/build-configmap-reload.sh`): `--volume-dir` + `--webhook-url`;
//! - **mountlag**: the real agent with a controller profile `reload: {http: {url:
//!   http://{podIP}:<port>/mountlag}}` on a pod of the stand-in node, so the material is read
//!   and checked (PEM, x509, key pair) before each reload exactly as for a signal.
//!
//! The controller is an HTTP sink inside the bench (its own thread and runtime) that records
//! `CLOCK_MONOTONIC` when a request's handler runs and answers 200. Per subject: p50/p99 of
//! rename → request received, CPU per update (the sum of the process's threads' `schedstat`
//! from just before the rename to `pause` after the request arrived; for mountlag the window
//! ends before its first verification probe, 25 ms after the reload, so like the signal bench
//! it is the reload path alone: configmap-reload verifies nothing), and RSS at the end.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::bench::Summary;
use crate::bench_reload::{cpu_ns, from_ns, micros, monotonic_ns, stuck_node, swap, tls_payload};
use crate::certs::{IssuedLeaf, TestCa};
use crate::cluster::free_port;
use crate::kubelet::VolumeKind;

/// Who a request came from: the sink's path names the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Floor,
    ConfigmapReload,
    Mountlag,
}

impl Subject {
    fn path(self) -> &'static str {
        match self {
            Self::Floor => "/floor",
            Self::ConfigmapReload => "/configmap-reload",
            Self::Mountlag => "/mountlag",
        }
    }

    fn from_path(path: &str) -> Option<Self> {
        [Self::Floor, Self::ConfigmapReload, Self::Mountlag]
            .into_iter()
            .find(|s| s.path() == path)
    }
}

/// The stand-in controller's reload endpoint: every request's arrival time, by subject.
struct HttpSink {
    addr: SocketAddr,
    arrivals: Receiver<(Option<Subject>, i128)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Requests that came while waiting for another subject's (none expected).
    stray: usize,
}

impl HttpSink {
    fn start() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, arrivals) = channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // A thread of its own: the bench's runtime blocks on channels between swaps.
        let thread = std::thread::Builder::new()
            .name("http-sink".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let app = axum::Router::new().fallback(record).with_state(tx);
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })?;
        Ok(Self {
            addr,
            arrivals,
            stop: Some(stop),
            thread: Some(thread),
            stray: 0,
        })
    }

    fn url(&self, subject: Subject) -> String {
        format!("http://{}{}", self.addr, subject.path())
    }

    /// When `subject`'s next request arrived, if within `timeout`.
    fn wait(&mut self, subject: Subject, timeout: Duration) -> Option<i128> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (from, at) = self.arrivals.recv_timeout(left).ok()?;
            if from == Some(subject) {
                return Some(at);
            }
            self.stray += 1;
        }
    }

    /// Forgets requests already received (warm-up leftovers).
    fn drain(&mut self) {
        while self.arrivals.try_recv().is_ok() {}
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn record(
    axum::extract::State(tx): axum::extract::State<Sender<(Option<Subject>, i128)>>,
    uri: axum::http::Uri,
) -> axum::http::StatusCode {
    let at = monotonic_ns();
    let _ = tx.send((Subject::from_path(uri.path()), at));
    axum::http::StatusCode::OK
}

/// A watcher process of the bench's own (floor, configmap-reload), killed on drop.
struct Watcher {
    child: Child,
}

impl Watcher {
    fn spawn(command: &mut Command) -> anyhow::Result<Self> {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {command:?}"))?;
        Ok(Self { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of `pid`, bytes (0 when unreadable).
fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// One subject's figures.
#[derive(Debug, Default)]
pub struct SubjectResult {
    pub name: String,
    /// `None`: not run (why).
    pub skipped: Option<String>,
    pub samples: Vec<Duration>,
    pub missed: usize,
    pub cpu_per_update: Duration,
    pub rss_bytes: u64,
}

/// What one run measured, in the order floor, configmap-reload, mountlag.
#[derive(Debug)]
pub struct HttpBenchResult {
    pub subjects: Vec<SubjectResult>,
    pub stray: usize,
}

struct Running {
    subject: Subject,
    volume: PathBuf,
    pid: u32,
    result: SubjectResult,
    cpu_total: u64,
}

/// Most swaps a subject gets to show it is watching.
const WARM_UP_SWAPS: usize = 50;

/// Swaps `volume` until `subject`'s request arrives (a watcher may still be adding its watch).
fn warm_up(
    sink: &mut HttpSink,
    subject: Subject,
    volume: &Path,
    leaves: &[IssuedLeaf],
    round: &mut usize,
) -> anyhow::Result<()> {
    for _ in 0..WARM_UP_SWAPS {
        *round += 1;
        swap(
            volume,
            &tls_payload(&leaves[*round % leaves.len()], "tls.key"),
        )?;
        if sink.wait(subject, Duration::from_millis(200)).is_some() {
            sink.drain();
            return Ok(());
        }
    }
    anyhow::bail!("{subject:?}: no reload request after {WARM_UP_SWAPS} swaps")
}

/// `..data` rename → reload request received, floor / configmap-reload / mountlag.
pub async fn swap_to_http(
    swaps: usize,
    blocks: usize,
    pause: Duration,
    configmap_reload: Option<&Path>,
    api_first: bool,
) -> anyhow::Result<HttpBenchResult> {
    let ca = TestCa::new("bench CA")?;
    // A leaf never seen before on every swap: nothing learnt from an earlier swap can help the
    // agent, as nothing can in a real rotation (with `api_first`, the API shows it first).
    let leaves = crate::bench_reload::fresh_leaves(&ca, 3 * swaps + 3 * WARM_UP_SWAPS + 1)?;
    let mut sink = HttpSink::start()?;
    let closed_port = free_port()?;
    let port = sink.addr.port();
    let config = format!(
        "stuckAfter: 1h\nnudge:\n  enabled: false\nreload:\n  minInterval: 0s\nverify:\n  timeout: 1h\n\
         controllers:\n  - name: sink\n    selector: app=bench\n    reload:\n      http:\n        url: http://{{podIP}}:{port}{}\n    probe:\n      ports: [{closed_port}]\n",
        Subject::Mountlag.path()
    );
    let (mut node, _uid, volume) = stuck_node(&config, "httpsink", None, &leaves[0]).await?;
    node.log_filter = "warn".to_string();
    node.start_agent()?;
    node.wait_ready(Duration::from_secs(10)).await?;
    let agent_pid = node.agent.as_ref().context("agent")?.pid();

    let exe_dir = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .to_path_buf();
    let floor_bin = exe_dir.join("inotify-post");
    anyhow::ensure!(
        floor_bin.exists(),
        "{} missing: build the testbed package",
        floor_bin.display()
    );
    let floor_dir = node
        .kubelet
        .mount_volume("bench-floor", VolumeKind::Secret, "tls")?;
    swap(&floor_dir, &tls_payload(&leaves[0], "tls.key"))?;
    let floor = Watcher::spawn(
        Command::new(&floor_bin)
            .arg(&floor_dir)
            .arg(sink.url(Subject::Floor)),
    )?;

    let mut cmr = None;
    let mut cmr_dir = None;
    if let Some(bin) = configmap_reload {
        let dir = node
            .kubelet
            .mount_volume("bench-configmap-reload", VolumeKind::Secret, "tls")?;
        swap(&dir, &tls_payload(&leaves[0], "tls.key"))?;
        cmr = Some(Watcher::spawn(
            Command::new(bin)
                .arg(format!("--volume-dir={}", dir.display()))
                .arg(format!(
                    "--webhook-url={}",
                    sink.url(Subject::ConfigmapReload)
                )),
        )?);
        cmr_dir = Some(dir);
    }

    let mut running = vec![Running {
        subject: Subject::Floor,
        volume: floor_dir,
        pid: floor.pid(),
        result: SubjectResult {
            name: "inotify floor (inotify-post: IN_MOVED_TO → POST, keep-alive)".into(),
            ..SubjectResult::default()
        },
        cpu_total: 0,
    }];
    let mut skipped_cmr = None;
    match (&cmr, cmr_dir) {
        (Some(cmr), Some(dir)) => running.push(Running {
            subject: Subject::ConfigmapReload,
            volume: dir,
            pid: cmr.pid(),
            result: SubjectResult {
                name: "configmap-reload v0.2.1".into(),
                ..SubjectResult::default()
            },
            cpu_total: 0,
        }),
        _ => {
            skipped_cmr = Some(SubjectResult {
                name: "configmap-reload v0.2.1".into(),
                skipped: Some("skipped (no binary)".into()),
                ..SubjectResult::default()
            });
        }
    }
    running.push(Running {
        subject: Subject::Mountlag,
        volume,
        pid: agent_pid,
        result: SubjectResult {
            name: "mountlag (HTTP reload profile)".into(),
            ..SubjectResult::default()
        },
        cpu_total: 0,
    });

    // Warm-up: connections opened, the agent's first reload done, every watch in place.
    let mut round = 0usize;
    for r in &running {
        warm_up(&mut sink, r.subject, &r.volume, &leaves, &mut round)?;
        tokio::time::sleep(pause).await;
    }
    sink.stray = 0;

    let per_block = swaps.div_ceil(blocks.max(1));
    let mut done = 0;
    let mut block = 0usize;
    while done < swaps {
        let n = per_block.min(swaps - done);
        // Each block starts with another subject, so none always runs right after another.
        let count = running.len();
        for k in 0..count {
            let r = &mut running[(block + k) % count];
            for _ in 0..n {
                round += 1;
                let leaf = &leaves[round % leaves.len()];
                if api_first && r.subject == Subject::Mountlag {
                    crate::bench_reload::publish_in_api_first(&node, leaf).await?;
                }
                let cpu_before = cpu_ns(r.pid);
                let renamed = swap(&r.volume, &tls_payload(leaf, "tls.key"))?;
                match sink.wait(r.subject, Duration::from_secs(2)) {
                    Some(seen) => r.result.samples.push(from_ns(seen - renamed)),
                    None => r.result.missed += 1,
                }
                tokio::time::sleep(pause).await;
                r.cpu_total += cpu_ns(r.pid).saturating_sub(cpu_before);
            }
        }
        done += n;
        block += 1;
    }
    let swaps_u64 = u64::try_from(swaps.max(1)).unwrap_or(1);
    let mut subjects = Vec::new();
    for mut r in running {
        r.result.cpu_per_update = Duration::from_nanos(r.cpu_total / swaps_u64);
        r.result.rss_bytes = rss_bytes(r.pid);
        if r.subject == Subject::Mountlag
            && let Some(skipped) = skipped_cmr.take()
        {
            subjects.push(skipped);
        }
        subjects.push(r.result);
    }
    let stray = sink.stray;
    drop(floor);
    drop(cmr);
    node.stop_agent()?;
    Ok(HttpBenchResult { subjects, stray })
}

/// Prints the table and the mountlag / configmap-reload ratios of one run.
pub fn print(
    result: &HttpBenchResult,
    swaps: usize,
    blocks: usize,
    pause: Duration,
    api_first: bool,
) {
    let order = if api_first {
        "; mountlag's leaf in the API and seen before each swap"
    } else {
        ""
    };
    println!(
        "## ..data rename → HTTP reload request received ({swaps} swaps per subject, {blocks} alternating blocks, {} ms pause{order})\n",
        pause.as_millis()
    );
    println!("| subject | swaps | missed | p50 µs | p99 µs | max µs | CPU / update µs | RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for s in &result.subjects {
        if let Some(why) = &s.skipped {
            println!("| {} | {why} | | | | | | |", s.name);
            continue;
        }
        match Summary::of(&s.samples) {
            Some(sum) => println!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |",
                s.name,
                sum.count,
                s.missed,
                micros(sum.p50),
                micros(sum.p99),
                micros(sum.max),
                micros(s.cpu_per_update),
                s.rss_bytes as f64 / (1024.0 * 1024.0)
            ),
            None => println!("| {} | 0 | {} | - | - | - | - | - |", s.name, s.missed),
        }
    }
    let find = |prefix: &str| {
        result
            .subjects
            .iter()
            .find(|s| s.name.starts_with(prefix) && s.skipped.is_none())
    };
    if let (Some(m), Some(c)) = (find("mountlag"), find("configmap-reload"))
        && let (Some(ms), Some(cs)) = (Summary::of(&m.samples), Summary::of(&c.samples))
    {
        println!(
            "\nratio mountlag / configmap-reload (same run): p50 {:.2}×, p99 {:.2}×, CPU per update {:.2}×, RSS {:.2}×",
            micros(ms.p50) / micros(cs.p50),
            micros(ms.p99) / micros(cs.p99),
            micros(m.cpu_per_update) / micros(c.cpu_per_update).max(1e-9),
            m.rss_bytes as f64 / (c.rss_bytes as f64).max(1.0)
        );
    }
    if result.stray > 0 {
        println!(
            "\n{} requests arrived while another subject's was awaited",
            result.stray
        );
    }
}
