//! A whole node for end-to-end tests: the API stand-in, the kubelet stand-in following it, and
//! the real `mountlag agent` process talking to the API over HTTP with kube-rs.
//!
//! ```text
//!  test ──▶ ApiServer (HTTP) ◀── mountlag agent (process, KUBECONFIG) ──▶ /status /metrics
//!              │  subscribe                       │ inotify
//!              ▼                                  ▼
//!          NodeKubelet ──▶ KubeletStandIn ──▶ tmpfs volumes
//! ```

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::apiserver::{ApiServer, ApiServerConfig, RecordedEvent};
use crate::certs::IssuedLeaf;
use crate::kubelet::KubeletStandIn;
use crate::node::{NodeConfig, NodeKubelet};

pub const NODE: &str = "node-a";
pub const NAMESPACE: &str = "ingress";

/// The running agent process.
#[derive(Debug)]
pub struct AgentProcess {
    child: Child,
    pub listen: SocketAddr,
    pub log: PathBuf,
}

impl AgentProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// How [`TestNode::start_agent_as`] runs the agent; the default is [`TestNode::start_agent`]'s.
#[derive(Debug, Clone, Default)]
pub struct AgentLaunch {
    /// `KUBECONFIG`; default: the stand-in's admin kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// `--kubelet-root`; default: the kubelet stand-in's root.
    pub kubelet_root: Option<PathBuf>,
    /// `--config`; default: the configuration the node was started with.
    pub config: Option<PathBuf>,
    /// Run as this uid and gid (no supplementary groups) instead of root: the kernel then
    /// clears every capability, as the probe-only DaemonSet's `runAsUser: 65532` does. The
    /// configuration and kubeconfig are copied to a directory that user can read.
    pub run_as: Option<u32>,
}

/// The uid and gid the probe-only DaemonSet runs the agent as (distroless `nonroot`).
pub const NONROOT: u32 = 65532;

/// API stand-in + kubelet stand-in + the agent.
#[derive(Debug)]
pub struct TestNode {
    pub api: ApiServer,
    pub node: NodeKubelet,
    pub kubelet: Arc<KubeletStandIn>,
    pub agent: Option<AgentProcess>,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    starts: usize,
    /// `RUST_LOG` of the agent process (benches turn debug logging off).
    pub log_filter: String,
}

/// A free TCP port on loopback (bound and released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl TestNode {
    /// Starts the API and kubelet stand-ins; the agent is started by [`TestNode::start_agent`].
    pub async fn start(node: NodeConfig, agent_config: &str) -> anyhow::Result<Self> {
        Self::start_with(ApiServerConfig::default(), node, agent_config).await
    }

    /// [`TestNode::start`] with an API stand-in configured by `api_config` (tokens, an RBAC
    /// authorizer, ...). The kubelet stand-in uses the in-process handle, so it is not subject
    /// to the authorizer.
    pub async fn start_with(
        api_config: ApiServerConfig,
        node: NodeConfig,
        agent_config: &str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("mountlag-node-")
            .tempdir()?;
        let api = ApiServer::start(api_config).await?;
        let kubelet = Arc::new(KubeletStandIn::new(dir.path().join("kubelet"))?);
        let node = NodeKubelet::start(api.clone(), Arc::clone(&kubelet), node);
        let config_path = dir.path().join("mountlag.yaml");
        std::fs::write(&config_path, agent_config)?;
        Ok(Self {
            api,
            node,
            kubelet,
            agent: None,
            dir,
            config_path,
            starts: 0,
            log_filter: "info,mountlag=debug".to_string(),
        })
    }

    /// `mountlag_tls_handshakes_total` of both results: the handshakes the agent has made to
    /// verify served certificates (0 before the first, or while the agent does not answer).
    pub async fn handshakes(&self) -> f64 {
        let mut total = 0.0;
        for result in ["served", "failed"] {
            total += self
                .metric(&format!(
                    "mountlag_tls_handshakes_total{{result=\"{result}\"}}"
                ))
                .await
                .ok()
                .flatten()
                .unwrap_or(0.0);
        }
        total
    }

    /// The agent's config file: rewrite it between agent starts to change the configuration.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn start_agent(&mut self) -> anyhow::Result<()> {
        let kubeconfig = self.api.kubeconfig_path().to_path_buf();
        self.start_agent_with_kubeconfig(&kubeconfig)
    }

    /// Starts the agent with `KUBECONFIG=kubeconfig` (e.g. one written by
    /// [`ApiServer::write_kubeconfig`] with a ServiceAccount's token) instead of the admin's.
    pub fn start_agent_with_kubeconfig(&mut self, kubeconfig: &Path) -> anyhow::Result<()> {
        self.start_agent_as(AgentLaunch {
            kubeconfig: Some(kubeconfig.to_path_buf()),
            ..AgentLaunch::default()
        })
    }

    /// Starts the agent as `launch` says.
    pub fn start_agent_as(&mut self, launch: AgentLaunch) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt as _;
        self.starts += 1;
        let port = free_port()?;
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log = self.dir.path().join(format!("agent-{}.log", self.starts));
        let out = std::fs::File::create(&log)?;
        let mut kubeconfig = launch
            .kubeconfig
            .unwrap_or_else(|| self.api.kubeconfig_path().to_path_buf());
        let mut config = launch.config.unwrap_or_else(|| self.config_path.clone());
        let kubelet_root = launch
            .kubelet_root
            .unwrap_or_else(|| self.kubelet.root().to_path_buf());
        let mut command = Command::new(crate::agent::binary());
        if let Some(uid) = launch.run_as {
            // The node's temp dir is root's (0700): hand the user copies it may read.
            let readable = self.dir.path().join(format!("as-{uid}-{}", self.starts));
            std::fs::create_dir(&readable)?;
            for (from, to) in [
                (&mut kubeconfig, "kubeconfig"),
                (&mut config, "mountlag.yaml"),
            ] {
                let copy = readable.join(to);
                std::fs::copy(&*from, &copy)?;
                std::os::unix::fs::chown(&copy, Some(uid), Some(uid))?;
                *from = copy;
            }
            std::os::unix::fs::chown(&readable, Some(uid), Some(uid))?;
            let mut parent = readable.parent();
            while let Some(dir) = parent {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(dir)?.permissions().mode();
                if mode & 0o001 == 0 && dir.starts_with(self.dir.path()) {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011))?;
                }
                parent = dir.parent();
            }
            // std also drops the supplementary groups when root sets a uid.
            command.uid(uid).gid(uid);
        }
        let child = command
            .args([
                "agent",
                "--node-name",
                NODE,
                "--listen",
                &listen.to_string(),
            ])
            .arg("--config")
            .arg(&config)
            .arg("--kubelet-root")
            .arg(&kubelet_root)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawn mountlag agent")?;
        self.agent = Some(AgentProcess { child, listen, log });
        Ok(())
    }

    /// SIGTERM, then wait for the exit status.
    pub fn stop_agent(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut agent = self.agent.take().context("no agent running")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(agent.child.id())?),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = agent.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = agent.child.kill();
                bail!("agent did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to `timeout`) for an agent that is expected to exit by itself, e.g. on a
    /// configuration it refuses.
    pub fn wait_agent_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let mut agent = self.agent.take().context("no agent running")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = agent.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = agent.child.kill();
                bail!("agent still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: a crash, no shutdown path.
    pub fn kill_agent(&mut self) -> anyhow::Result<()> {
        let mut agent = self.agent.take().context("no agent running")?;
        agent.child.kill()?;
        agent.child.wait()?;
        Ok(())
    }

    fn listen(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.agent.as_ref().context("no agent running")?.listen)
    }

    /// `GET path` on the agent's health endpoint: (status code, body).
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.listen()?, path).await
    }

    pub async fn status(&self) -> anyhow::Result<Value> {
        let (code, body) = self.get("/status").await?;
        anyhow::ensure!(code == 200, "/status answered {code}: {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = self.get("/readyz").await {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                let last = self
                    .get("/readyz")
                    .await
                    .map(|(_, b)| b)
                    .unwrap_or_default();
                bail!(
                    "agent not ready after {timeout:?}: {last}\n{}",
                    self.agent_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls `/status` until `pred` holds for it.
    pub async fn wait_status(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let start = Instant::now();
        loop {
            if let Ok(status) = self.status().await
                && pred(&status)
            {
                return Ok(status);
            }
            if start.elapsed() > timeout {
                let last = self.status().await.unwrap_or_default();
                bail!(
                    "{what}: not within {timeout:?}; last status {last:#}\n{}",
                    self.agent_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The value of one sample of `/metrics` (`name{labels}`), if present.
    pub async fn metric(&self, sample: &str) -> anyhow::Result<Option<f64>> {
        let (_, body) = self.get("/metrics").await?;
        Ok(metric_value(&body, sample))
    }

    /// Every Warning Event recorded by the API stand-in, as `<regarding name> <reason>: <note>`.
    pub fn warnings(&self) -> Vec<String> {
        self.api
            .events()
            .into_iter()
            .filter(|e| e.type_ == "Warning")
            .map(|e| format!("{} {}: {}", e.regarding.name, e.reason, e.note))
            .collect()
    }

    /// Creates `pod` in the API and waits (up to 10 s) until the kubelet stand-in has started
    /// it (its volumes are written): what the agent then finds on disk is settled.
    pub async fn create_pod_and_wait_started(&self, pod: &Pod) -> anyhow::Result<Pod> {
        let name = pod.metadata.name.clone().context("pod without a name")?;
        let before = self.node.last_seq();
        let created = self
            .api
            .create_pod(pod)
            .map_err(|e| anyhow::anyhow!("creating pod {name}: {e:?}"))?;
        self.node
            .wait_for(before, Duration::from_secs(10), |e| {
                e.pod == name && e.outcome == crate::node::SyncOutcome::Started
            })
            .await
            .with_context(|| format!("kubelet did not start pod {name} within 10 s"))?;
        Ok(created)
    }

    /// Events recorded by the API stand-in with this reason.
    pub fn events(&self, reason: &str) -> Vec<RecordedEvent> {
        self.api
            .events()
            .into_iter()
            .filter(|e| e.reason == reason)
            .collect()
    }

    /// The Events with `reason` once `done` holds for them, polled until `timeout`. The agent
    /// posts Events from a task of its own, so one can land after the status or metric that the
    /// same decision changed; tests wait for it instead of sleeping a fixed time.
    pub async fn wait_events(
        &self,
        reason: &str,
        timeout: Duration,
        done: impl Fn(&[RecordedEvent]) -> bool,
    ) -> anyhow::Result<Vec<RecordedEvent>> {
        let start = Instant::now();
        loop {
            let events = self.events(reason);
            if done(&events) {
                return Ok(events);
            }
            if start.elapsed() > timeout {
                bail!(
                    "{reason} Events: not as expected within {timeout:?}: {events:?}\n{}",
                    self.agent_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn agent_log(&self) -> String {
        self.agent
            .as_ref()
            .and_then(|a| std::fs::read_to_string(&a.log).ok())
            .unwrap_or_default()
    }

    /// Every agent log of this node so far (all starts).
    pub fn all_agent_logs(&self) -> String {
        (1..=self.starts)
            .filter_map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("agent-{i}.log"))).ok()
            })
            .collect()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.child.kill();
            let _ = agent.child.wait();
        }
    }
}

/// A minimal HTTP/1.1 GET (the agent's endpoint is plain HTTP on loopback).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .context("connect timeout")??;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .context("read timeout")??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status code")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Finds `sample` (e.g. `mountlag_mounts{state="in_sync"}`) in Prometheus text.
pub fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Issues test Secrets and remembers every private key, so any output can be scanned for them.
#[derive(Debug)]
pub struct KeyRing {
    pub ca: crate::certs::TestCa,
    keys: Vec<String>,
}

impl KeyRing {
    pub fn new(ca_name: &str) -> anyhow::Result<Self> {
        Ok(Self {
            ca: crate::certs::TestCa::new(ca_name)?,
            keys: Vec::new(),
        })
    }

    /// A `kubernetes.io/tls` Secret `name` in [`NAMESPACE`] with a fresh leaf for
    /// `edge.example.com`.
    pub fn secret(&mut self, name: &str) -> Secret {
        let leaf = self
            .ca
            .issue(&crate::certs::LeafSpec::valid_for(["edge.example.com"]))
            .expect("issue a test leaf");
        self.keys.push(leaf.key_pem.clone());
        tls_secret(NAMESPACE, name, &leaf)
    }

    /// Panics when `text` holds bytes of any key issued so far.
    pub fn assert_not_in(&self, what: &str, text: &str) {
        for key in &self.keys {
            for marker in crate::certs::secret_bytes_markers(key) {
                assert!(
                    !text.contains(&marker),
                    "key bytes leaked in {what}: {marker}"
                );
            }
        }
    }
}

/// A `kubernetes.io/tls` Secret with the leaf's chain and key.
pub fn tls_secret(namespace: &str, name: &str, leaf: &IssuedLeaf) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.namespace = Some(namespace.into());
    secret.metadata.name = Some(name.into());
    secret.type_ = Some("kubernetes.io/tls".into());
    secret.data = Some(BTreeMap::from([
        (
            "tls.crt".to_string(),
            ByteString(leaf.chain_pem.clone().into_bytes()),
        ),
        (
            "tls.key".to_string(),
            ByteString(leaf.key_pem.clone().into_bytes()),
        ),
    ]));
    secret
}

/// An ingress controller pod on [`NODE`] mounting Secret `secret` as volume `tls`
/// (through `subPath` when given).
pub fn ingress_pod(
    name: &str,
    labels: &[(&str, &str)],
    secret: &str,
    sub_path: Option<&str>,
) -> Pod {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let mut mount = json!({"name": "tls", "mountPath": "/etc/tls", "readOnly": true});
    if let Some(sub_path) = sub_path {
        mount = json!({"name": "tls", "mountPath": format!("/etc/tls/{sub_path}"), "subPath": sub_path});
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": NAMESPACE, "name": name, "labels": labels},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "nginx", "image": "nginx", "volumeMounts": [mount]}],
            "volumes": [{"name": "tls", "secret": {"secretName": secret}}]
        }
    }))
    .expect("a valid pod")
}

/// A controller pod whose container `container` mounts Secret `secret` as volume `tls`, with
/// `items` (key → path) when given, as a HAProxy deployment maps `tls.key` to `tls.crt.key`.
pub fn controller_pod(
    name: &str,
    container: &str,
    labels: &[(&str, &str)],
    secret: &str,
    items: Option<&[(&str, &str)]>,
) -> Pod {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let mut source = json!({"secretName": secret});
    if let Some(items) = items {
        source["items"] = items
            .iter()
            .map(|(key, path)| json!({"key": key, "path": path}))
            .collect();
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": NAMESPACE, "name": name, "labels": labels},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": container, "image": container,
                            "volumeMounts": [{"name": "tls", "mountPath": "/etc/tls", "readOnly": true}]}],
            "volumes": [{"name": "tls", "secret": source}]
        }
    }))
    .expect("a valid pod")
}

/// ingress-nginx's controller pod on the test node: the chart's labels, which the built-in
/// `ingress-nginx` profile selects, and no Secret volume (it reads its Secrets from the API).
pub fn ingress_nginx_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {
            "app.kubernetes.io/name": "ingress-nginx",
            "app.kubernetes.io/component": "controller"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "controller", "image": "ingress-nginx"}]}
    }))
    .expect("a valid pod")
}

/// `pod` with one more Secret volume `volume` (Secret `secret`) mounted by its first container
/// at `mount_path`.
pub fn with_secret_volume(
    pod: Pod,
    volume: &str,
    secret: &str,
    mount_path: &str,
) -> anyhow::Result<Pod> {
    let mut value = serde_json::to_value(pod)?;
    value["spec"]["volumes"]
        .as_array_mut()
        .context("a pod with volumes")?
        .push(json!({"name": volume, "secret": {"secretName": secret}}));
    value["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .context("a container with volume mounts")?
        .push(json!({"name": volume, "mountPath": mount_path, "readOnly": true}));
    Ok(serde_json::from_value(value)?)
}

/// The one mount of `/status` for pod `name`, if listed.
pub fn mount_of<'a>(status: &'a Value, pod: &str) -> Option<&'a Value> {
    status["mounts"]
        .as_array()?
        .iter()
        .find(|m| m["pod"] == pod)
}

/// An agent config with one controller profile selecting `app=edge` and these thresholds.
pub fn agent_config(nudge_after: &str, stuck_after: &str, nudge_enabled: bool) -> String {
    format!(
        "stuckAfter: {stuck_after}\nnudge:\n  enabled: {nudge_enabled}\n  after: {nudge_after}\n\
         controllers:\n  - name: edge\n    selector: app=edge\n    reload: none\n"
    )
}
