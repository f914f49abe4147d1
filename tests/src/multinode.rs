//! Several nodes on one API stand-in: each its own real agent process and, where pods run, its
//! own kubelet stand-in, for behaviour that only shows across nodes (one Event series from
//! many agents, a workload rolled once however many nodes ask, the API load of hundreds of
//! agents).
//!
//! ```text
//!  test ──▶ ApiServer ◀── agent node-a ── kubelet stand-in node-a (pod IP 127.0.0.2)
//!                     ◀── agent node-b ── kubelet stand-in node-b (pod IP 127.0.0.3) ...
//!                     ◀── agent node-x    (no kubelet stand-in: no pod ever runs there)
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::Value;

use crate::apiserver::ApiServer;
use crate::cluster::http_get;
use crate::kubelet::KubeletStandIn;
use crate::node::{NodeConfig, NodeKubelet};

/// How one node is started ([`NodeSpec::new`] gives what [`NodeAgent::start`] uses).
#[derive(Debug, Clone)]
pub struct NodeSpec<'a> {
    /// Node name (`--node-name`, the pods' `spec.nodeName`).
    pub name: &'a str,
    /// The node's number: its pods' IP is [`pod_ip`] of it.
    pub index: u32,
    /// The agent's mountlag.yaml.
    pub config: &'a str,
    /// The agent's kubeconfig (default: the stand-in's admin kubeconfig).
    pub kubeconfig: Option<&'a Path>,
    /// The kubelet stand-in's time factor (0.02: periodic syncs every 1.2–1.8 s; 1.0: real
    /// 60–90 s). `None`: no kubelet stand-in (the kubelet root exists and stays empty), for a
    /// node no pod of the test is bound to.
    pub kubelet_time_factor: Option<f64>,
    /// The agent's `RUST_LOG` (`None`: unset, the agent's default level).
    pub rust_log: Option<&'a str>,
    /// Run the agent in a mount namespace of its own (`unshare -m --propagation private`), as
    /// on a real node, where other nodes' mounts never reach its mount table; only for a node
    /// without a kubelet stand-in (whose volume mounts, made later by this process, it would
    /// not see).
    pub private_mounts: bool,
}

impl<'a> NodeSpec<'a> {
    /// A node with a fast kubelet stand-in (time factor 0.02) and debug logging, the agent on
    /// the admin kubeconfig.
    pub fn new(name: &'a str, index: u32, config: &'a str) -> Self {
        Self {
            name,
            index,
            config,
            kubeconfig: None,
            kubelet_time_factor: Some(0.02),
            rust_log: Some("info,mountlag=debug"),
            private_mounts: false,
        }
    }
}

/// The pod IP of node number `index`: 127.0.0.`index + 2` up to index 253, then on through
/// 127.0.1.0, ... (all of 127/8 is loopback on Linux).
pub fn pod_ip(index: u32) -> Ipv4Addr {
    let n = index.saturating_add(2);
    let [_, b, c, d] = n.to_be_bytes();
    Ipv4Addr::new(127, b, c, d)
}

/// A node whose kubelet stand-in (if any) runs and whose agent is not started yet: start the
/// pods first, then [`NodeHost::spawn_agent`], as an agent joins a running node.
#[derive(Debug)]
pub struct NodeHost {
    pub name: String,
    pub pod_ip: Ipv4Addr,
    pub node: Option<NodeKubelet>,
    pub kubelet: Arc<KubeletStandIn>,
    root: PathBuf,
    config_path: PathBuf,
    kubeconfig: PathBuf,
    rust_log: Option<String>,
    private_mounts: bool,
}

impl NodeHost {
    /// The node's directory `dir/<name>`, its agent's config, and its kubelet stand-in.
    pub fn start(api: &ApiServer, dir: &Path, spec: &NodeSpec<'_>) -> anyhow::Result<Self> {
        let root = dir.join(spec.name);
        std::fs::create_dir_all(&root)?;
        let kubelet = Arc::new(KubeletStandIn::new(root.join("kubelet"))?);
        let pod_ip = pod_ip(spec.index);
        let node = spec.kubelet_time_factor.map(|factor| {
            let mut node_config = NodeConfig::new(spec.name).time_factor(factor);
            node_config.pod_ip = pod_ip.to_string();
            NodeKubelet::start(api.clone(), Arc::clone(&kubelet), node_config)
        });
        anyhow::ensure!(
            !(spec.private_mounts && node.is_some()),
            "node {}: an agent in a mount namespace of its own would not see its kubelet stand-in's mounts",
            spec.name
        );
        let config_path = root.join("mountlag.yaml");
        std::fs::write(&config_path, spec.config)?;
        Ok(Self {
            name: spec.name.to_owned(),
            pod_ip,
            node,
            kubelet,
            root,
            config_path,
            kubeconfig: spec
                .kubeconfig
                .unwrap_or(api.kubeconfig_path())
                .to_path_buf(),
            rust_log: spec.rust_log.map(str::to_owned),
            private_mounts: spec.private_mounts,
        })
    }

    /// Spawns the node's `mountlag agent`.
    pub fn spawn_agent(self) -> anyhow::Result<NodeAgent> {
        // A free port on the node's own address: one picked free on 127.0.0.1 could be taken
        // meanwhile as the source port of a connection to the API stand-in (hundreds of agents
        // start at once); nothing else binds the node's address. Not a fixed port: tests run
        // nodes with the same index side by side.
        let listen = std::net::TcpListener::bind((self.pod_ip, 0))
            .and_then(|l| l.local_addr())
            .with_context(|| format!("a free port on {}", self.pod_ip))?;
        let log = self.root.join("agent.log");
        let out = std::fs::File::create(&log)?;
        let mut command = if self.private_mounts {
            // unshare execs the agent: the child's PID is the agent's.
            let mut unshare = Command::new("unshare");
            unshare
                .args(["--mount", "--propagation", "private", "--"])
                .arg(crate::agent::binary());
            unshare
        } else {
            Command::new(crate::agent::binary())
        };
        command
            .args(["agent", "--node-name", &self.name])
            .arg(format!("--listen={listen}"))
            .arg("--config")
            .arg(&self.config_path)
            .arg("--kubelet-root")
            .arg(self.kubelet.root())
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        match &self.rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let child = command.spawn().context("spawn mountlag agent")?;
        Ok(NodeAgent {
            name: self.name,
            pod_ip: self.pod_ip,
            node: self.node,
            kubelet: self.kubelet,
            child,
            listen,
            log,
        })
    }
}

/// One node: its agent and, where pods run, its kubelet stand-in.
#[derive(Debug)]
pub struct NodeAgent {
    pub name: String,
    /// The node's pods' `status.podIP`.
    pub pod_ip: Ipv4Addr,
    /// The kubelet sync loop (`None` on a node started without one).
    pub node: Option<NodeKubelet>,
    pub kubelet: Arc<KubeletStandIn>,
    child: Child,
    pub listen: SocketAddr,
    pub log: PathBuf,
}

impl NodeAgent {
    /// Starts node `name` (the `index`-th: pod IP 127.0.0.`index + 2`) with `config` as the
    /// agent's mountlag.yaml, the agent reaching the API through `kubeconfig` (default: the
    /// stand-in's admin kubeconfig).
    pub fn start(
        api: &ApiServer,
        dir: &Path,
        name: &str,
        index: u16,
        config: &str,
        kubeconfig: Option<&Path>,
    ) -> anyhow::Result<Self> {
        Self::start_spec(
            api,
            dir,
            &NodeSpec {
                kubeconfig,
                ..NodeSpec::new(name, u32::from(index), config)
            },
        )
    }

    /// Starts the node `spec` describes, its files under `dir/<name>`: the kubelet stand-in
    /// (if any) and the agent at once.
    pub fn start_spec(api: &ApiServer, dir: &Path, spec: &NodeSpec<'_>) -> anyhow::Result<Self> {
        NodeHost::start(api, dir, spec)?.spawn_agent()
    }

    /// The agent's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether `/readyz` answers 200 now.
    pub async fn ready(&self) -> bool {
        matches!(http_get(self.listen, "/readyz").await, Ok((200, _)))
    }

    /// `/status`, or `None` while the agent does not answer.
    pub async fn status(&self) -> Option<Value> {
        match http_get(self.listen, "/status").await {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// `/metrics` text, or `None` while the agent does not answer.
    pub async fn metrics(&self) -> Option<String> {
        match http_get(self.listen, "/metrics").await {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    }

    /// Kills the agent (SIGKILL) and reaps it; the kubelet stand-in stays.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the agent process has exited (and reaps it if so).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every agent's log, for a failure message.
pub fn logs(agents: &[NodeAgent]) -> String {
    agents
        .iter()
        .map(|a| format!("--- {}\n{}", a.name, a.log_text()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ips_are_unchanged_below_254_nodes_and_go_on_past_it() {
        assert_eq!(pod_ip(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(pod_ip(253), Ipv4Addr::new(127, 0, 0, 255));
        assert_eq!(pod_ip(254), Ipv4Addr::new(127, 0, 1, 0));
        assert_eq!(pod_ip(999), Ipv4Addr::new(127, 0, 3, 233));
        let distinct: std::collections::BTreeSet<Ipv4Addr> = (0..5000).map(pod_ip).collect();
        assert_eq!(distinct.len(), 5000);
    }
}
