//! Several nodes on one API stand-in: each its own kubelet stand-in and its own real agent
//! process, for behaviour that only shows across nodes (one Event series from many agents, a
//! workload rolled once however many nodes ask).
//!
//! ```text
//!  test ──▶ ApiServer ◀── agent node-a ── kubelet stand-in node-a (pod IP 127.0.0.2)
//!                     ◀── agent node-b ── kubelet stand-in node-b (pod IP 127.0.0.3) ...
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::Value;

use crate::apiserver::ApiServer;
use crate::cluster::{free_port, http_get};
use crate::kubelet::KubeletStandIn;
use crate::node::{NodeConfig, NodeKubelet};

/// One node: its kubelet stand-in (fast periodic sync) and its agent.
#[derive(Debug)]
pub struct NodeAgent {
    pub name: String,
    /// The node's pods' `status.podIP`.
    pub pod_ip: Ipv4Addr,
    pub node: NodeKubelet,
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
        index: u8,
        config: &str,
        kubeconfig: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let root = dir.join(name);
        std::fs::create_dir_all(&root)?;
        let kubelet = Arc::new(KubeletStandIn::new(root.join("kubelet"))?);
        let pod_ip = Ipv4Addr::new(127, 0, 0, index.saturating_add(2));
        let mut node_config = NodeConfig::new(name).time_factor(0.02);
        node_config.pod_ip = pod_ip.to_string();
        let node = NodeKubelet::start(api.clone(), Arc::clone(&kubelet), node_config);
        let config_path = root.join("mountlag.yaml");
        std::fs::write(&config_path, config)?;
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let log = root.join("agent.log");
        let out = std::fs::File::create(&log)?;
        let kubeconfig = kubeconfig.unwrap_or(api.kubeconfig_path()).to_path_buf();
        let child = Command::new(crate::agent::binary())
            .args(["agent", "--node-name", name])
            .arg(format!("--listen={listen}"))
            .arg("--config")
            .arg(&config_path)
            .arg("--kubelet-root")
            .arg(kubelet.root())
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,mountlag=debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawn mountlag agent")?;
        Ok(Self {
            name: name.to_string(),
            pod_ip,
            node,
            kubelet,
            child,
            listen,
            log,
        })
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

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every agent's log, for a failure message.
pub fn logs(agents: &[NodeAgent]) -> String {
    agents
        .iter()
        .map(|a| format!("--- {}\n{}", a.name, a.log_text()))
        .collect()
}
