//! `testbed bench api`: the API side of the agent, measured against the stand-ins, never asserted.
//!
//! Three parts, each printed as Markdown:
//!
//! - `lag`: Secret changed in the API → kubelet stand-in wrote the new generation, per rotation,
//!   with the nudge (kubelet at real 60–90 s timing, the agent's `nudge.after`) and without it
//!   (kubelet's periodic sync scaled by `time_factor`, nudge disabled), cross-checked with the
//!   agent's own `mountlag_mount_lag_seconds` histogram of the same run.
//! - `load`: requests and open watches against the API stand-in for a node with many controller
//!   pods and Secrets, in a steady-state window, plus the startup requests. A recording proxy
//!   sits between the agent and the stand-in and logs every request line, so the selector of
//!   every Secret list/watch can be checked.
//! - `ready`: `mountlag agent` spawn → `/readyz` 200 with many tracked mounts already on disk.
//!
//! The node is set up here (not with [`crate::cluster::TestNode`]) because the benches need
//! their own API stand-in config, the recording proxy and the agent's default log level.
//! [`BenchNode`] is shared with [`crate::bench_footprint`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::apiserver::{ADMIN_TOKEN, ApiServer, ApiServerConfig};
use crate::bench::Summary;
use crate::certs::{LeafSpec, TestCa};
use crate::cluster::{NAMESPACE, NODE, agent_config, free_port, http_get, tls_secret};
use crate::kubelet::KubeletStandIn;
use crate::node::{NodeConfig, NodeKubelet, SyncOutcome, SyncReason};

/// kube-runtime's watch timeout when `watcher::Config::timeout` is unset (kube-core
/// `WatchParams`: `timeoutSeconds=290`), i.e. how often each watch is re-established.
pub const KUBE_RUNTIME_WATCH_TIMEOUT_S: u64 = 290;

// ------------------------------------------------------------------------------ the bench node

/// The running agent process.
#[derive(Debug)]
pub struct AgentRun {
    child: Child,
    /// `--listen` address.
    pub listen: SocketAddr,
    /// stdout + stderr of the agent.
    pub log: PathBuf,
    /// Just before the spawn.
    pub spawned: Instant,
}

impl AgentRun {
    /// The agent's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process group the agent leads (with whatever it was wrapped in).
    fn group(&self) -> anyhow::Result<nix::unistd::Pid> {
        Ok(nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?))
    }

    /// SIGKILL to whatever is left of the group (nothing, after a clean exit).
    fn kill_group(&mut self) {
        if let Ok(group) = self.group() {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// What the node holds: `mounts` secret volumes in pods of at most `per_pod` volumes, referring
/// to `secrets` distinct Secrets (mount `k` mounts Secret `k % secrets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub mounts: usize,
    pub per_pod: usize,
    pub secrets: usize,
}

impl Shape {
    pub fn pods(&self) -> usize {
        self.mounts.div_ceil(self.per_pod.max(1))
    }

    /// Secrets actually referenced.
    pub fn referenced_secrets(&self) -> usize {
        self.secrets.min(self.mounts)
    }
}

/// API stand-in (+ optional recording proxy) + kubelet stand-in + the real agent.
#[derive(Debug)]
pub struct BenchNode {
    pub agent: Option<AgentRun>,
    pub node: Option<NodeKubelet>,
    pub kubelet: Arc<KubeletStandIn>,
    pub api: ApiServer,
    pub proxy: Option<RecordingProxy>,
    /// [`Self::populate`] writes its pods and Secrets as a real cluster serves them (managed
    /// fields, cert-manager's annotations: [`crate::real_world`]).
    pub real_world_metadata: bool,
    kubeconfig: PathBuf,
    config_path: PathBuf,
    pod_uids: Vec<String>,
    starts: usize,
    dir: tempfile::TempDir,
}

impl BenchNode {
    /// Starts the API stand-in with `api`, the kubelet stand-in following it with `node`, and
    /// (with `record`) a recording proxy the agent talks to instead of the stand-in.
    pub async fn start(
        api: ApiServerConfig,
        node: NodeConfig,
        agent_config: &str,
        record: bool,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("mountlag-bench-")
            .tempdir()?;
        // The recording proxy reads plain HTTP/1.1 requests, so behind it the stand-in speaks
        // plain HTTP (and the agent HTTP/1.1): the request pattern is the same, the
        // connection count is not (see docs/benchmarks.md).
        let api = ApiServer::start(ApiServerConfig {
            tls: api.tls && !record,
            ..api
        })
        .await?;
        let kubelet = Arc::new(KubeletStandIn::new(dir.path().join("kubelet"))?);
        let node = NodeKubelet::start(api.clone(), Arc::clone(&kubelet), node);
        let config_path = dir.path().join("mountlag.yaml");
        std::fs::write(&config_path, agent_config)?;
        let (proxy, kubeconfig) = if record {
            let proxy = RecordingProxy::start(api.port()).await?;
            let path = dir.path().join("kubeconfig-proxy");
            write_kubeconfig(&path, proxy.port)?;
            (Some(proxy), path)
        } else {
            (None, api.kubeconfig_path().to_path_buf())
        };
        Ok(Self {
            agent: None,
            node: Some(node),
            kubelet,
            api,
            proxy,
            real_world_metadata: false,
            kubeconfig,
            config_path,
            pod_uids: Vec::new(),
            starts: 0,
            dir,
        })
    }

    pub fn node(&self) -> anyhow::Result<&NodeKubelet> {
        self.node.as_ref().context("node stopped")
    }

    /// Creates the Secrets and pods of `shape` (Secrets `tls-NNNN`, pods `edge-NNNN` labelled
    /// `app=edge`, volumes `tls-J` mounted at `/etc/tls/J`). Returns the pod names.
    pub fn populate(&mut self, shape: &Shape, ca: &TestCa) -> anyhow::Result<Vec<String>> {
        let secrets = shape.referenced_secrets();
        for i in 0..secrets {
            let host = format!("edge-{i}.example.com");
            let leaf = ca.issue(&LeafSpec::valid_for([host.clone()]))?;
            let secret = self.secret(i, &host, &leaf)?;
            self.api
                .apply_secret(&secret)
                .map_err(|e| anyhow::anyhow!("apply secret {i}: {e}"))?;
        }
        let mut names = Vec::new();
        for p in 0..shape.pods() {
            let first = p * shape.per_pod;
            let last = (first + shape.per_pod).min(shape.mounts);
            let refs: Vec<String> = (first..last)
                .map(|k| secret_name(k % shape.secrets.max(1)))
                .collect();
            let name = format!("edge-{p:04}");
            let mut pod = multi_volume_pod(&name, &refs)?;
            if self.real_world_metadata {
                pod = crate::real_world::scheduled_pod(&pod)?;
            }
            let created = self
                .api
                .create_pod(&pod)
                .map_err(|e| anyhow::anyhow!("create pod {name}: {e}"))?;
            self.pod_uids.extend(created.metadata.uid);
            names.push(name);
        }
        Ok(names)
    }

    /// Secret `i` of [`Self::populate`] holding `leaf` for `host`.
    pub fn secret(
        &self,
        i: usize,
        host: &str,
        leaf: &crate::certs::IssuedLeaf,
    ) -> anyhow::Result<k8s_openapi::api::core::v1::Secret> {
        let secret = tls_secret(NAMESPACE, &secret_name(i), leaf);
        if self.real_world_metadata {
            crate::real_world::issued_secret(&secret, &secret_name(i), host)
        } else {
            Ok(secret)
        }
    }

    /// Remembers a pod created elsewhere, for the teardown.
    pub fn track_pod(&mut self, pod: &Pod) {
        self.pod_uids.extend(pod.metadata.uid.clone());
    }

    /// Waits until the kubelet stand-in has started `pods` pods (all volumes mounted and
    /// written).
    pub async fn wait_pods_started(&self, pods: usize, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let started = self
                .node()?
                .log()
                .iter()
                .filter(|e| e.outcome == SyncOutcome::Started)
                .count();
            if started >= pods {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("kubelet stand-in started {started} of {pods} pods within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Spawns `mountlag agent` (the agent's default log level: `RUST_LOG` removed).
    pub fn start_agent(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.agent.is_none(), "agent already running");
        self.starts += 1;
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let log = self.dir.path().join(format!("agent-{}.log", self.starts));
        let out = std::fs::File::create(&log)?;
        let spawned = Instant::now();
        let child = Command::new(crate::agent::binary())
            .args([
                "agent",
                "--node-name",
                NODE,
                "--listen",
                &listen.to_string(),
            ])
            .arg("--config")
            .arg(&self.config_path)
            .arg("--kubelet-root")
            .arg(self.kubelet.root())
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // A group of its own, signalled as a whole: `MOUNTLAG_BIN` may be a wrapper
            // (heaptrack, perf) whose agent would otherwise outlive the bench and skew the
            // next one's figures.
            .process_group(0)
            .spawn()
            .context("spawn mountlag agent")?;
        self.agent = Some(AgentRun {
            child,
            listen,
            log,
            spawned,
        });
        Ok(())
    }

    pub fn agent(&self) -> anyhow::Result<&AgentRun> {
        self.agent.as_ref().context("no agent running")
    }

    /// Polls `/readyz` every 5 ms; returns spawn → first 200.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let agent = self.agent()?;
        loop {
            if let Ok((200, _)) = http_get(agent.listen, "/readyz").await {
                return Ok(agent.spawned.elapsed());
            }
            if agent.spawned.elapsed() > timeout {
                let last = http_get(agent.listen, "/readyz")
                    .await
                    .map(|(c, b)| format!("{c} {b}"))
                    .unwrap_or_else(|e| e.to_string());
                bail!(
                    "agent not ready within {timeout:?}: {last}\n{}",
                    self.agent_log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `GET path` on the agent.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.agent()?.listen, path).await
    }

    pub async fn status(&self) -> anyhow::Result<Value> {
        let (code, body) = self.get("/status").await?;
        anyhow::ensure!(code == 200, "/status answered {code}");
        Ok(serde_json::from_str(&body)?)
    }

    /// Polls `/status` (every `every`) until `pred` holds.
    pub async fn wait_status(
        &self,
        timeout: Duration,
        every: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let start = Instant::now();
        loop {
            if let Ok(s) = self.status().await
                && pred(&s)
            {
                return Ok(s);
            }
            if start.elapsed() > timeout {
                let states = self.status().await.map(|s| states(&s)).unwrap_or_default();
                bail!(
                    "{what}: not within {timeout:?}; mount states {states:?}\n{}",
                    self.agent_log_tail()
                );
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Waits until `/status` lists `mounts` mounts, all `in_sync`.
    pub async fn wait_all_in_sync(&self, mounts: usize, timeout: Duration) -> anyhow::Result<()> {
        self.wait_status(
            timeout,
            Duration::from_millis(100),
            "all mounts in sync",
            |s| {
                let st = states(s);
                st.len() == 1 && st.get("in_sync") == Some(&mounts)
            },
        )
        .await
        .map(|_| ())
    }

    /// Waits until the stand-in has `n` open Secret watches (the agent's cluster-wide watches,
    /// pods and cert-manager kinds, come on top).
    pub async fn wait_secret_watches(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let stats = self.api.stats();
            let open = stats
                .open_watches_by_resource
                .get("secrets")
                .copied()
                .unwrap_or(0);
            if open == n {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "{open} open Secret watches, expected {n}, after {timeout:?}; open watches: {:?}",
                    stats.open_watches_by_resource
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The metrics text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let (code, body) = self.get("/metrics").await?;
        anyhow::ensure!(code == 200, "/metrics answered {code}");
        Ok(body)
    }

    /// SIGTERM, wait for the exit (kill after 10 s).
    pub fn stop_agent(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut agent = self.agent.take().context("no agent running")?;
        nix::sys::signal::killpg(agent.group()?, nix::sys::signal::Signal::SIGTERM)?;
        // Longer than the DaemonSet's terminationGracePeriodSeconds (10): a bench reports how
        // long a shutdown takes instead of failing on a slow one.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = agent.child.try_wait()? {
                agent.kill_group();
                return Ok(status);
            }
            if Instant::now() > deadline {
                agent.kill_group();
                let _ = agent.child.wait();
                bail!("agent did not exit within 120 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Lines the agent has logged so far.
    pub fn agent_log_lines(&self) -> usize {
        self.agent
            .as_ref()
            .and_then(|a| std::fs::read(&a.log).ok())
            .map_or(0, |log| log.iter().filter(|b| **b == b'\n').count())
    }

    /// The last 4 KiB of the current agent's log.
    pub fn agent_log_tail(&self) -> String {
        let text = self
            .agent
            .as_ref()
            .and_then(|a| std::fs::read_to_string(&a.log).ok())
            .unwrap_or_default();
        let mut cut = text.len().saturating_sub(4096);
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text[cut..].to_string()
    }
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.kill_group();
            let _ = agent.child.wait();
        }
        // Stop the kubelet loop first, then unmount every pod's tmpfs volumes before the temp
        // dir goes.
        self.node = None;
        for uid in &self.pod_uids {
            if let Err(e) = self.kubelet.teardown_pod(uid) {
                eprintln!("bench: teardown of pod {uid}: {e:#}");
            }
        }
    }
}

pub fn secret_name(i: usize) -> String {
    format!("tls-{i:04}")
}

/// A pod on [`NODE`] (label `app=edge`, container `nginx`) with one secret volume per entry of
/// `secrets`.
pub fn multi_volume_pod(name: &str, secrets: &[String]) -> anyhow::Result<Pod> {
    let mounts: Vec<Value> = (0..secrets.len())
        .map(|j| json!({"name": format!("tls-{j}"), "mountPath": format!("/etc/tls/{j}"), "readOnly": true}))
        .collect();
    let volumes: Vec<Value> = secrets
        .iter()
        .enumerate()
        .map(|(j, s)| json!({"name": format!("tls-{j}"), "secret": {"secretName": s}}))
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": NAMESPACE, "name": name, "labels": {"app": "edge"}},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "nginx", "image": "nginx", "volumeMounts": mounts}],
            "volumes": volumes
        }
    }))?)
}

/// Mount count per state in a `/status` document.
pub fn states(status: &Value) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in status["mounts"].as_array().into_iter().flatten() {
        *out.entry(m["state"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    out
}

/// Sum of every sample of metric family `name` (all label sets).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            rest.rsplit_once(' ')?.1.trim().parse::<f64>().ok()
        })
        .sum()
}

fn write_kubeconfig(path: &std::path::Path, port: u16) -> anyhow::Result<()> {
    let cfg = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testbed", "cluster": {"server": format!("http://127.0.0.1:{port}")}}],
        "users": [{"name": "testbed-user", "user": {"token": ADMIN_TOKEN}}],
        "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": "testbed-user", "namespace": "default"}}],
        "current-context": "testbed",
    });
    std::fs::write(path, serde_yaml::to_string(&cfg)?)?;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A uniformly random duration in `[0, max)`.
fn random_up_to(max: Duration) -> Duration {
    let r = (crate::apiserver::random_u64() >> 11) as f64 / (1u64 << 53) as f64;
    max.mul_f64(r)
}

// --------------------------------------------------------------------------- recording proxy

/// One request line seen by the proxy.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub at: Instant,
    /// Proxy connection number (1, 2, ...).
    pub connection: u64,
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
}

#[derive(Debug, Default)]
struct ProxyState {
    requests: Vec<RecordedRequest>,
    connections: u64,
    open: u64,
    /// Connections whose request stream could not be parsed (chunked request bodies).
    unparsed: u64,
}

/// A TCP proxy on loopback in front of the API stand-in that logs every HTTP/1.1 request line
/// the client sends (request bodies are skipped by their `Content-Length`).
#[derive(Debug)]
pub struct RecordingProxy {
    pub port: u16,
    state: Arc<Mutex<ProxyState>>,
    task: JoinHandle<()>,
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RecordingProxy {
    pub async fn start(upstream_port: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = {
                    let mut s = lock(&st);
                    s.connections += 1;
                    s.open += 1;
                    s.connections
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = relay(client, upstream_port, id, &st).await;
                    lock(&st).open -= 1;
                });
            }
        });
        Ok(Self { port, state, task })
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    /// (connections accepted so far, open now, unparsed).
    pub fn connections(&self) -> (u64, u64, u64) {
        let s = lock(&self.state);
        (s.connections, s.open, s.unparsed)
    }
}

async fn relay(
    client: TcpStream,
    upstream_port: u16,
    id: u64,
    state: &Arc<Mutex<ProxyState>>,
) -> anyhow::Result<()> {
    let upstream = TcpStream::connect(("127.0.0.1", upstream_port)).await?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
    });
    let mut parser = RequestParser::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match cr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let was_broken = parser.broken;
        let lines = parser.feed(&buf[..n]);
        {
            let mut s = lock(state);
            if parser.broken && !was_broken {
                s.unparsed += 1;
            }
            let at = Instant::now();
            for (method, target) in lines {
                s.requests.push(RecordedRequest {
                    at,
                    connection: id,
                    method,
                    target,
                });
            }
        }
        if uw.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = uw.shutdown().await;
    let _ = down.await;
    Ok(())
}

/// Splits a client's HTTP/1.1 byte stream into requests (method, target).
#[derive(Debug, Default)]
struct RequestParser {
    buf: Vec<u8>,
    body_left: usize,
    broken: bool,
}

impl RequestParser {
    fn feed(&mut self, data: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.broken {
            return out;
        }
        self.buf.extend_from_slice(data);
        loop {
            if self.body_left > 0 {
                let k = self.body_left.min(self.buf.len());
                self.buf.drain(..k);
                self.body_left -= k;
                if self.body_left > 0 {
                    break;
                }
            }
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                if self.buf.len() > 1 << 20 {
                    self.broken = true;
                    self.buf.clear();
                }
                break;
            };
            let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            self.buf.drain(..end + 4);
            let mut lines = head.split("\r\n");
            let mut first = lines.next().unwrap_or_default().split(' ');
            let method = first.next().unwrap_or_default().to_string();
            let target = first.next().unwrap_or_default().to_string();
            let mut length = 0usize;
            for l in lines {
                let Some((k, v)) = l.split_once(':') else {
                    continue;
                };
                let k = k.trim().to_ascii_lowercase();
                if k == "content-length" {
                    length = v.trim().parse().unwrap_or(0);
                } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                    self.broken = true;
                }
            }
            out.push((method, target));
            if self.broken {
                self.buf.clear();
                break;
            }
            self.body_left = length;
        }
        out
    }
}

/// Percent-decodes a query component (`+` is a space).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Path and decoded query parameters of a request target.
fn split_target(target: &str) -> (String, BTreeMap<String, String>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    (path.to_string(), params)
}

// --------------------------------------------------------------------------------- lag part

/// Options of `testbed bench api`.
#[derive(Debug, Clone)]
pub struct ApiBenchOptions {
    /// Parts to run: `lag`, `load`, `ready`.
    pub parts: Vec<String>,
    /// Rotations per lag run.
    pub rotations: usize,
    /// kubelet `time_factor` of the run without the nudge.
    pub time_factor: f64,
    /// `nudge.after` of the run with the nudge.
    pub nudge_after: String,
    /// kubelet stand-in delay between a pod annotation change and its sync.
    pub pod_change_delay: Duration,
    /// Steady-state window of the load part.
    pub window: Duration,
    /// Controller pods of the load part.
    pub load_pods: usize,
    /// Distinct Secrets of the load part.
    pub load_secrets: usize,
    /// Secret volumes per pod of the load part.
    pub load_per_pod: usize,
    /// Tracked mounts of the ready part.
    pub ready_mounts: usize,
    /// Volumes per pod of the ready part.
    pub ready_per_pod: usize,
    /// Distinct Secrets of the ready part.
    pub ready_secrets: usize,
    /// Agent starts of the ready part.
    pub ready_repeats: usize,
    /// Repeat the ready part with the same mounts sharing this many Secrets (0: no).
    pub ready_shared_secrets: usize,
}

/// One lag run.
#[derive(Debug, Clone)]
pub struct LagRun {
    pub nudge: bool,
    pub time_factor: f64,
    pub nudge_after: String,
    /// `apply_secret` returned → kubelet stand-in logged `Written` for the pod.
    pub samples: Vec<Duration>,
    /// `apply_secret` returned → `/status` shows the mount `in_sync` at the new version
    /// (polled every 10 ms).
    pub status_samples: Vec<Duration>,
    /// Which kubelet sync wrote the new generation.
    pub written_by: BTreeMap<String, usize>,
    /// Delta of `mountlag_mount_lag_seconds` sum and count over the run.
    pub histogram_sum: f64,
    pub histogram_count: f64,
    /// Delta of `mountlag_kubelet_nudges_total` (all results) over the run.
    pub nudges: f64,
    /// Warning Events recorded during the run.
    pub warnings: usize,
}

fn reason_name(r: SyncReason) -> &'static str {
    match r {
        SyncReason::Initial => "initial",
        SyncReason::Periodic => "periodic sync",
        SyncReason::Annotation => "annotation (nudge)",
        SyncReason::Retry => "retry",
        SyncReason::Manual => "manual",
        SyncReason::Deleted => "deleted",
    }
}

/// Rotates Secret `edge-tls` mounted by one pod `rotations` times and times each update.
pub async fn lag_run(
    nudge: bool,
    time_factor: f64,
    nudge_after: &str,
    pod_change_delay: Duration,
    rotations: usize,
) -> anyhow::Result<LagRun> {
    let node_config = NodeConfig::new(NODE)
        .time_factor(time_factor)
        .pod_change_delay(pod_change_delay);
    let mut bn = BenchNode::start(
        ApiServerConfig::default(),
        node_config.clone(),
        &agent_config(nudge_after, "120s", nudge),
        false,
    )
    .await?;
    let ca = TestCa::new("bench api CA")?;
    let issue = || -> anyhow::Result<_> {
        let leaf = ca.issue(&LeafSpec::valid_for(["edge.example.com"]))?;
        Ok(tls_secret(NAMESPACE, "edge-tls", &leaf))
    };
    bn.api
        .apply_secret(&issue()?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pod = bn
        .api
        .create_pod(&crate::cluster::ingress_pod(
            "edge-0",
            &[("app", "edge")],
            "edge-tls",
            None,
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    bn.track_pod(&pod);
    bn.wait_pods_started(1, Duration::from_secs(30)).await?;
    bn.start_agent()?;
    bn.wait_ready(Duration::from_secs(20)).await?;
    bn.wait_all_in_sync(1, Duration::from_secs(20)).await?;

    let before = bn.metrics().await?;
    let warnings_before = bn
        .api
        .events()
        .iter()
        .filter(|e| e.type_ == "Warning")
        .count();
    // kubelet's sync period (60–90 s) scaled: the longest a change can wait without a nudge.
    let period_max = node_config
        .sync_frequency
        .mul_f64((1.0 + node_config.jitter) * time_factor);
    let timeout = period_max + Duration::from_secs(15);
    let mut run = LagRun {
        nudge,
        time_factor,
        nudge_after: nudge_after.to_string(),
        samples: Vec::new(),
        status_samples: Vec::new(),
        written_by: BTreeMap::new(),
        histogram_sum: 0.0,
        histogram_count: 0.0,
        nudges: 0.0,
        warnings: 0,
    };
    for i in 0..rotations {
        // Land the change at a random phase of kubelet's sync cycle.
        let pause = if nudge {
            Duration::from_millis(200) + random_up_to(Duration::from_millis(800))
        } else {
            random_up_to(period_max)
        };
        tokio::time::sleep(pause).await;
        let node = bn.node()?;
        let seq = node.last_seq();
        let secret = issue()?;
        let applied = bn
            .api
            .apply_secret(&secret)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let t0 = Instant::now();
        let rv = applied.metadata.resource_version.unwrap_or_default();
        let written = node
            .wait_for(seq, timeout, |e| {
                e.pod == "edge-0" && matches!(e.outcome, SyncOutcome::Written { .. })
            })
            .await
            .with_context(|| format!("rotation {i}: kubelet wrote nothing within {timeout:?}"))?;
        run.samples.push(written.at.saturating_duration_since(t0));
        *run.written_by
            .entry(reason_name(written.reason).to_string())
            .or_insert(0) += 1;
        bn.wait_status(
            Duration::from_secs(15),
            Duration::from_millis(10),
            "mount in sync at the new version",
            |s| {
                s["mounts"].as_array().is_some_and(|ms| {
                    ms.iter().any(|m| {
                        m["pod"] == "edge-0"
                            && m["state"] == "in_sync"
                            && m["secrets"][0]["resourceVersion"] == rv.as_str()
                    })
                })
            },
        )
        .await?;
        run.status_samples.push(t0.elapsed());
    }
    let after = bn.metrics().await?;
    let delta = |name: &str| metric_sum(&after, name) - metric_sum(&before, name);
    run.histogram_sum = delta("mountlag_mount_lag_seconds_sum");
    run.histogram_count = delta("mountlag_mount_lag_seconds_count");
    run.nudges = delta("mountlag_kubelet_nudges_total");
    run.warnings = bn
        .api
        .events()
        .iter()
        .filter(|e| e.type_ == "Warning")
        .count()
        - warnings_before;
    let _ = bn.stop_agent();
    Ok(run)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn mean(samples: &[Duration]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.iter().map(|d| d.as_secs_f64()).sum::<f64>() / samples.len() as f64
}

pub fn print_lag(with: &LagRun, without: &LagRun) {
    let f = without.time_factor;
    println!(
        "| run | kubelet timing | rotations | p50 s | p99 s | max s | mean s | agent histogram mean s (count) | agent /status in_sync p50 s | written by kubelet sync |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let row = |label: &str, timing: &str, r: &LagRun, scale: f64| {
        let s = Summary::of(&r.samples);
        let st = Summary::of(&r.status_samples);
        let hist_mean = if r.histogram_count > 0.0 {
            format!(
                "{:.3} ({:.0})",
                r.histogram_sum / r.histogram_count / scale,
                r.histogram_count
            )
        } else {
            "- (0)".to_string()
        };
        let by: Vec<String> = r
            .written_by
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        match (s, st) {
            (Some(s), Some(st)) => println!(
                "| {label} | {timing} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {hist_mean} | {:.3} | {} |",
                s.count,
                secs(s.p50) / scale,
                secs(s.p99) / scale,
                secs(s.max) / scale,
                mean(&r.samples) / scale,
                secs(st.p50) / scale,
                by.join(", ")
            ),
            _ => println!("| {label} | {timing} | 0 | - | - | - | - | {hist_mean} | - | - |"),
        }
    };
    row(
        &format!("with nudge (nudge.after {})", with.nudge_after),
        &format!("real (time_factor {})", with.time_factor),
        with,
        1.0,
    );
    row(
        "without nudge, measured",
        &format!("scaled (time_factor {f})"),
        without,
        1.0,
    );
    row(
        "without nudge, real-time equivalent",
        &format!("measured ÷ {f}"),
        without,
        f,
    );
    if let (Some(w), Some(wo)) = (Summary::of(&with.samples), Summary::of(&without.samples)) {
        println!(
            "\nratio without (real-time equivalent) / with nudge: p50 {:.1}×, p99 {:.1}×",
            secs(wo.p50) / f / secs(w.p50),
            secs(wo.p99) / f / secs(w.p99)
        );
    }
    println!(
        "\nnudges counted by the agent (mountlag_kubelet_nudges_total delta): with {:.0}, without {:.0}; \
         Warning Events: with {}, without {}",
        with.nudges, without.nudges, with.warnings, without.warnings
    );
}

// -------------------------------------------------------------------------------- load part

/// The load part's figures.
#[derive(Debug, Clone)]
pub struct LoadRun {
    pub shape: Shape,
    pub window: Duration,
    /// Requests per (verb, resource) from agent spawn to the start of the window.
    pub startup: BTreeMap<(String, String), u64>,
    /// Requests per (verb, resource) during the window.
    pub steady: BTreeMap<(String, String), u64>,
    pub open_watches: BTreeMap<String, usize>,
    pub ready: Duration,
    /// `timeoutSeconds` values of the watch requests seen by the proxy.
    pub watch_timeouts: BTreeMap<String, usize>,
    pub secret_check: SecretCheck,
    /// TCP connections the agent opened to the API (whole run), open at the end.
    pub connections: (u64, u64),
    pub unparsed_connections: u64,
}

/// Every Secret list/watch the proxy saw, by scope.
#[derive(Debug, Clone, Default)]
pub struct SecretCheck {
    pub total: usize,
    /// `/api/v1/secrets` (all namespaces).
    pub cluster_wide: usize,
    /// `/api/v1/namespaces/<ns>/secrets` without a `metadata.name=` field selector.
    pub namespace_wide_unselected: usize,
    /// `/api/v1/namespaces/<ns>/secrets?fieldSelector=metadata.name=<x>`.
    pub by_name: usize,
    /// `/api/v1/namespaces/<ns>/secrets/<name>` (get).
    pub get: usize,
    pub examples: Vec<String>,
}

fn check_secret_requests(requests: &[RecordedRequest]) -> SecretCheck {
    let mut c = SecretCheck::default();
    for r in requests {
        let (path, q) = split_target(&r.target);
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segs.as_slice() {
            ["api", "v1", "secrets"] => {
                c.total += 1;
                c.cluster_wide += 1;
                c.examples.push(format!("{} {}", r.method, r.target));
            }
            ["api", "v1", "namespaces", _, "secrets"] => {
                c.total += 1;
                let by_name = q.get("fieldSelector").is_some_and(|f| {
                    f.split(',')
                        .any(|t| t.starts_with("metadata.name=") && !t.ends_with('='))
                });
                if by_name {
                    c.by_name += 1;
                } else {
                    c.namespace_wide_unselected += 1;
                    c.examples.push(format!("{} {}", r.method, r.target));
                }
            }
            ["api", "v1", "namespaces", _, "secrets", _] => {
                c.total += 1;
                c.get += 1;
            }
            _ => {}
        }
    }
    c
}

pub async fn load_run(shape: Shape, window: Duration) -> anyhow::Result<LoadRun> {
    let mut bn = BenchNode::start(
        ApiServerConfig {
            bookmark_interval: Duration::from_secs(60),
            ..ApiServerConfig::default()
        },
        NodeConfig::new(NODE),
        &agent_config("2s", "120s", true),
        true,
    )
    .await?;
    let ca = TestCa::new("bench api CA")?;
    bn.populate(&shape, &ca)?;
    bn.wait_pods_started(shape.pods(), Duration::from_secs(120))
        .await?;
    bn.api.reset_stats();
    bn.start_agent()?;
    let ready = bn.wait_ready(Duration::from_secs(60)).await?;
    bn.wait_all_in_sync(shape.mounts, Duration::from_secs(60))
        .await?;
    bn.wait_secret_watches(shape.referenced_secrets(), Duration::from_secs(30))
        .await?;
    // Let the startup settle (Events, the last watch requests) before the window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let startup = bn.api.stats().requests;
    bn.api.reset_stats();
    let proxy_mark = bn.proxy.as_ref().map_or(0, |p| p.requests().len());
    tokio::time::sleep(window).await;
    let stats = bn.api.stats();
    let proxy = bn.proxy.as_ref().context("no proxy")?;
    let requests = proxy.requests();
    let steady_proxy = requests.len() - proxy_mark;
    let (connections, open, unparsed) = proxy.connections();
    let mut watch_timeouts = BTreeMap::new();
    for r in &requests {
        let (_, q) = split_target(&r.target);
        if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
            *watch_timeouts
                .entry(
                    q.get("timeoutSeconds")
                        .cloned()
                        .unwrap_or_else(|| "(none)".into()),
                )
                .or_insert(0) += 1;
        }
    }
    let steady_total: u64 = stats.requests.values().sum();
    if steady_total != steady_proxy as u64 {
        eprintln!(
            "bench: note: the stand-in counted {steady_total} requests in the window, the proxy {steady_proxy}"
        );
    }
    let run = LoadRun {
        shape,
        window,
        startup,
        steady: stats.requests,
        open_watches: stats.open_watches_by_resource,
        ready,
        watch_timeouts,
        secret_check: check_secret_requests(&requests),
        connections: (connections, open),
        unparsed_connections: unparsed,
    };
    let _ = bn.stop_agent();
    Ok(run)
}

pub fn print_load(r: &LoadRun) {
    let pods = r.shape.pods();
    let secrets = r.shape.referenced_secrets();
    let watches_expected = secrets + 1;
    println!(
        "node: {pods} controller pods × {} secret volumes = {} mounts, {secrets} distinct Secrets; \
         agent ready {:.0} ms after spawn\n",
        r.shape.per_pod,
        r.shape.mounts,
        r.ready.as_secs_f64() * 1e3
    );
    println!("open watches at the end of the window (stand-in gauge):\n");
    println!("| resource | open watches |");
    println!("|---|---:|");
    for (res, n) in &r.open_watches {
        println!("| {res} | {n} |");
    }
    println!(
        "| total | {} (expected 1 pod watch + {secrets} Secret watches = {watches_expected}) |",
        r.open_watches.values().sum::<usize>()
    );

    println!(
        "\nstartup (agent spawn → all mounts in sync + 2 s), requests by verb and resource:\n"
    );
    println!("| verb | resource | requests |");
    println!("|---|---|---:|");
    for ((verb, res), n) in &r.startup {
        println!("| {verb} | {res} | {n} |");
    }
    println!("| | total | {} |", r.startup.values().sum::<u64>());

    let w = r.window.as_secs_f64();
    let renewals_per_hour = 3600.0 / KUBE_RUNTIME_WATCH_TIMEOUT_S as f64;
    println!(
        "\nsteady state: measured over a {w:.0} s idle window (×{:.0} for per hour), and extrapolated \
         from kube-runtime's watch timeout ({KUBE_RUNTIME_WATCH_TIMEOUT_S} s: each watch is \
         re-established {renewals_per_hour:.1}× per hour, resuming from its last resourceVersion):\n",
        3600.0 / w
    );
    println!(
        "| verb | resource | measured in window | measured, per hour | extrapolated per hour |"
    );
    println!("|---|---|---:|---:|---:|");
    let mut keys: std::collections::BTreeSet<(String, String)> = r.steady.keys().cloned().collect();
    keys.insert(("watch".into(), "pods".into()));
    keys.insert(("watch".into(), "secrets".into()));
    let mut total_measured = 0u64;
    let mut total_extra = 0.0;
    for key in &keys {
        let n = r.steady.get(key).copied().unwrap_or(0);
        let extra = match (key.0.as_str(), key.1.as_str()) {
            ("watch", "pods") => renewals_per_hour,
            ("watch", "secrets") => secrets as f64 * renewals_per_hour,
            _ => n as f64 * 3600.0 / w,
        };
        total_measured += n;
        total_extra += extra;
        println!(
            "| {} | {} | {n} | {:.0} | {extra:.0} |",
            key.0,
            key.1,
            n as f64 * 3600.0 / w
        );
    }
    println!(
        "| | total | {total_measured} | {:.0} | {total_extra:.0} ({:.2}/s) |",
        total_measured as f64 * 3600.0 / w,
        total_extra / 3600.0
    );
    let timeouts: Vec<String> = r
        .watch_timeouts
        .iter()
        .map(|(t, n)| format!("timeoutSeconds={t} × {n}"))
        .collect();
    println!(
        "\nwatch requests seen by the recording proxy (whole run): {}",
        timeouts.join(", ")
    );
    let c = &r.secret_check;
    println!(
        "Secret requests seen by the proxy (whole run, every request line): {} in all; \
         cluster-wide list/watch: {}; namespace-wide list/watch without a metadata.name field \
         selector: {}; list/watch with fieldSelector=metadata.name=<one Secret>: {}; get by name: {}",
        c.total, c.cluster_wide, c.namespace_wide_unselected, c.by_name, c.get
    );
    for e in c.examples.iter().take(5) {
        println!("  offending: {e}");
    }
    println!(
        "TCP connections from the agent to the API (whole run): {} opened, {} open at the end{}",
        r.connections.0,
        r.connections.1,
        if r.unparsed_connections > 0 {
            format!(
                " ({} not parsed: chunked request bodies)",
                r.unparsed_connections
            )
        } else {
            String::new()
        }
    );
}

// ------------------------------------------------------------------------------- ready part

/// One agent start of the ready part.
#[derive(Debug, Clone, Copy)]
pub struct ReadyRun {
    /// Spawn → `/readyz` 200.
    pub ready: Duration,
    /// Spawn → `/status` shows every mount `in_sync` (polled every 100 ms after ready).
    pub in_sync: Duration,
    /// CPU the agent used from spawn to ready.
    pub agent_cpu: Duration,
    /// CPU this process (API stand-in, kubelet stand-in, the poller) used over the same time.
    pub testbed_cpu: Duration,
    /// Requests the agent made to the API stand-in from spawn to ready.
    pub requests: u64,
}

fn ticks(t: u64) -> Duration {
    // USER_HZ: 100 per second.
    Duration::from_millis(t * 10)
}

pub async fn ready_runs(shape: Shape, repeats: usize) -> anyhow::Result<Vec<ReadyRun>> {
    use crate::bench_footprint::cpu_ticks;
    let mut bn = BenchNode::start(
        ApiServerConfig {
            bookmark_interval: Duration::from_secs(60),
            ..ApiServerConfig::default()
        },
        NodeConfig::new(NODE),
        &agent_config("2s", "120s", true),
        false,
    )
    .await?;
    let ca = TestCa::new("bench api CA")?;
    bn.populate(&shape, &ca)?;
    bn.wait_pods_started(shape.pods(), Duration::from_secs(300))
        .await?;
    let me = std::process::id();
    let mut out = Vec::new();
    for _ in 0..repeats {
        bn.api.reset_stats();
        let self_before = cpu_ticks(me)?;
        bn.start_agent()?;
        let ready = bn.wait_ready(Duration::from_secs(120)).await?;
        let agent_cpu = ticks(cpu_ticks(bn.agent()?.pid())?);
        let testbed_cpu = ticks(cpu_ticks(me)?.saturating_sub(self_before));
        let requests = bn.api.stats().total_requests();
        bn.wait_all_in_sync(shape.mounts, Duration::from_secs(60))
            .await?;
        let in_sync = bn.agent()?.spawned.elapsed();
        let status = bn.stop_agent()?;
        anyhow::ensure!(status.success(), "agent exited with {status}");
        out.push(ReadyRun {
            ready,
            in_sync,
            agent_cpu,
            testbed_cpu,
            requests,
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(out)
}

pub fn print_ready(shape: &Shape, runs: &[ReadyRun]) {
    println!(
        "{} mounts ({} pods × {} secret volumes, {} distinct Secrets), already mounted by the \
         kubelet stand-in; agent spawned, `/readyz` polled every 5 ms:\n",
        shape.mounts,
        shape.pods(),
        shape.per_pod,
        shape.referenced_secrets()
    );
    println!(
        "| start | spawn → /readyz 200 ms | spawn → all in_sync ms | agent CPU to ready ms | testbed CPU (API + kubelet stand-ins) same span ms | API requests to ready |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (i, r) in runs.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            i + 1,
            ms(r.ready),
            ms(r.in_sync),
            ms(r.agent_cpu),
            ms(r.testbed_cpu),
            r.requests
        );
    }
    let readies: Vec<Duration> = runs.iter().map(|r| r.ready).collect();
    if let Some(s) = Summary::of(&readies) {
        println!(
            "\nmedian spawn → ready {:.0} ms, max {:.0} ms (target ≤ 1000 ms)",
            ms(s.p50),
            ms(s.max)
        );
    }
}

// -------------------------------------------------------------------------------------- run

/// `testbed bench api`.
pub fn run(opts: &ApiBenchOptions) -> anyhow::Result<()> {
    if let Err(why) = crate::real::can_mount() {
        bail!("bench api needs root and tmpfs mounts: {why}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(opts))
}

async fn run_async(o: &ApiBenchOptions) -> anyhow::Result<()> {
    let want = |p: &str| o.parts.iter().any(|x| x == p || x == "all");
    if want("lag") {
        println!(
            "## API change → disk matches ({} rotations per run)\n",
            o.rotations
        );
        let with = lag_run(true, 1.0, &o.nudge_after, o.pod_change_delay, o.rotations).await?;
        let without = lag_run(
            false,
            o.time_factor,
            &o.nudge_after,
            o.pod_change_delay,
            o.rotations,
        )
        .await?;
        print_lag(&with, &without);
        println!();
    }
    if want("load") {
        println!(
            "## API load: {} controller pods, {} referenced Secrets\n",
            o.load_pods, o.load_secrets
        );
        let shape = Shape {
            mounts: o.load_pods * o.load_per_pod,
            per_pod: o.load_per_pod,
            secrets: o.load_secrets,
        };
        let r = load_run(shape, o.window).await?;
        print_load(&r);
        println!();
    }
    if want("ready") {
        println!("## start → ready with {} mounts\n", o.ready_mounts);
        let shape = Shape {
            mounts: o.ready_mounts,
            per_pod: o.ready_per_pod,
            secrets: o.ready_secrets,
        };
        let runs = ready_runs(shape, o.ready_repeats).await?;
        print_ready(&shape, &runs);
        println!();
        if o.ready_shared_secrets > 0 {
            let shared = Shape {
                secrets: o.ready_shared_secrets,
                ..shape
            };
            let runs = ready_runs(shared, o.ready_repeats).await?;
            print_ready(&shared, &runs);
            println!();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_splits_pipelined_requests_and_skips_bodies() {
        let mut p = RequestParser::default();
        let a = p.feed(b"GET /api/v1/pods?watch=true HTTP/1.1\r\nHost: x\r\n\r\nPATCH /api/v1/namespaces/a/pods/b HTTP/1.1\r\nContent-Length: 10\r\n\r\n{\"a\":");
        assert_eq!(
            a,
            vec![
                ("GET".to_string(), "/api/v1/pods?watch=true".to_string()),
                (
                    "PATCH".to_string(),
                    "/api/v1/namespaces/a/pods/b".to_string()
                )
            ]
        );
        let b = p.feed(b"1234}GET /version HTTP/1.1\r\n\r\n");
        assert_eq!(b, vec![("GET".to_string(), "/version".to_string())]);
    }

    #[test]
    fn secret_requests_are_classified_by_scope() {
        let r = |t: &str| RecordedRequest {
            at: Instant::now(),
            connection: 1,
            method: "GET".into(),
            target: t.into(),
        };
        let c = check_secret_requests(&[
            r(
                "/api/v1/namespaces/ingress/secrets?fieldSelector=metadata.name%3Dtls-0001&limit=500",
            ),
            r(
                "/api/v1/namespaces/ingress/secrets?&watch=true&fieldSelector=metadata.name%3Dtls-0001",
            ),
            r("/api/v1/namespaces/ingress/secrets?limit=500"),
            r("/api/v1/secrets?watch=true"),
            r("/api/v1/namespaces/ingress/pods"),
        ]);
        assert_eq!(c.total, 4);
        assert_eq!(c.by_name, 2);
        assert_eq!(c.namespace_wide_unselected, 1);
        assert_eq!(c.cluster_wide, 1);
    }

    #[test]
    fn metric_sum_adds_label_sets() {
        let text = "# HELP x\nmountlag_kubelet_nudges_total{result=\"ok\"} 3\nmountlag_kubelet_nudges_total{result=\"error\"} 1\nmountlag_kubelet_nudges_totalx 9\n";
        assert_eq!(metric_sum(text, "mountlag_kubelet_nudges_total"), 4.0);
    }
}
