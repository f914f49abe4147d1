//! `kubectl mountlag status` (and `mountlag status --cluster`): every node's agent, reached
//! through the Kubernetes API server from wherever kubectl works.
//!
//! The agents are the pods labelled [`AGENT_SELECTOR`] in the namespace (default
//! [`DEFAULT_NAMESPACE`], the shipped one), only the one on `--node` when given. Each is asked
//! for `/status` through `pods/portforward`, the way `kubectl port-forward` reaches a pod:
//! kubelet connects inside the pod's network namespace, so the agent's node-local
//! `--status-listen` address (`127.0.0.1:9978` in the shipped DaemonSet) is reached, `/status`
//! stays off the pod network and the NetworkPolicy needs no exception. (The API server's pod
//! proxy would reach only the pod IP, where the shipped agent answers `/status` with 404 and
//! the NetworkPolicy admits no one but the node and Prometheus.)
//!
//! The caller needs `list` on `pods` and `get` + `create` on `pods/portforward` in that
//! namespace (docs/operations.md, "kubectl mountlag"). The connection comes from kube's usual
//! kubeconfig inference (`KUBECONFIG`, `~/.kube/config`, in-cluster), or from `--kubeconfig`
//! and `--context`: kubectl passes its own flags through to a plugin but does not act on them.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{Fetched, Tone, parse_status, terminal_safe};
use crate::cmd::kubeconfig::{self, chain, one_line};
use crate::cmd::status_client::{ClientError, get_over};
use crate::text::untrusted;

/// The shipped DaemonSet's namespace (`deploy/base/namespace.yaml`).
pub const DEFAULT_NAMESPACE: &str = "mountlag-system";
/// The labels of the shipped DaemonSet's pods (`deploy/base/daemonset.yaml`).
pub const AGENT_SELECTOR: &str =
    "app.kubernetes.io/name=mountlag,app.kubernetes.io/component=agent";
/// The agent's container in those pods.
const AGENT_CONTAINER: &str = "agent";
/// The agent's default `--listen` port, where `/status` is when there is no `--status-listen`.
const DEFAULT_PORT: u16 = 9977;
/// Agents asked at once.
const PARALLEL: usize = 16;
/// One agent: the port-forward and the whole `/status` exchange through it.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the error channel's message once the forwarded exchange failed.
const ERROR_GRACE: Duration = Duration::from_secs(1);
/// What the caller needs, named in every authorization error.
const NEEDS: &str = "needs `list` on pods and `get`, `create` on pods/portforward";

/// Where to look for the agents and how to reach the API server.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// The agents' namespace (`-n`); [`DEFAULT_NAMESPACE`] when `None`.
    pub namespace: Option<String>,
    /// Only the agent on this node.
    pub node: Option<String>,
    /// `--kubeconfig`: this file instead of `KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`: this kubeconfig context instead of the current one.
    pub context: Option<String>,
}

/// A client for the API server and where the agents are.
pub(super) struct Cluster {
    client: kube::Client,
    server: String,
    namespace: String,
    node: Option<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// One agent's answer, or why there is none.
#[derive(Debug)]
pub(super) struct NodeAnswer {
    node: String,
    pod: String,
    result: Result<Fetched, String>,
}

impl Cluster {
    /// Reads the kubeconfig (or the in-cluster configuration) and builds the client; nothing
    /// is sent yet.
    pub(super) async fn connect(options: &ClusterOptions) -> Result<Self, String> {
        let connection =
            kubeconfig::connect(options.kubeconfig.as_deref(), options.context.as_deref()).await?;
        Ok(Self {
            client: connection.client,
            server: connection.server,
            namespace: options
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            node: options.node.clone(),
        })
    }

    pub(super) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// What the watch header shows.
    pub(super) fn describe(&self) -> String {
        let mut text = format!("{} status -n {}", crate::cmd::program(), self.namespace);
        if let Some(node) = &self.node {
            text.push_str(&format!(" --node {node}"));
        }
        text
    }

    /// Every agent's answer, sorted by node. `Err`: one line saying why no agent could be
    /// asked at all (API unreachable, credentials refused, not allowed, no agent pods).
    pub(super) async fn collect(&self) -> Result<Vec<NodeAnswer>, String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut params = ListParams::default().labels(AGENT_SELECTOR);
        if let Some(node) = &self.node {
            params = params.fields(&format!("spec.nodeName={node}"));
        }
        let list = pods
            .list(&params)
            .await
            .map_err(|e| self.api_error("cannot list the agent pods", &e))?;
        if list.items.is_empty() {
            return Err(format!(
                "no mountlag agent pods (labels {AGENT_SELECTOR}) in namespace {}{}; is mountlag \
                 installed there? -n NAMESPACE looks elsewhere",
                untrusted(&self.namespace),
                self.node
                    .as_deref()
                    .map(|n| format!(" on node {}", untrusted(n)))
                    .unwrap_or_default(),
            ));
        }
        let asked: Vec<Result<NodeAnswer, String>> = futures::stream::iter(list.items)
            .map(|pod| self.ask(&pods, pod))
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let mut answers = asked.into_iter().collect::<Result<Vec<_>, _>>()?;
        answers.sort_by(|a, b| (&a.node, &a.pod).cmp(&(&b.node, &b.pod)));
        Ok(answers)
    }

    /// One agent. `Err` only for what would fail for every agent alike (401, 403).
    async fn ask(&self, pods: &Api<Pod>, pod: Pod) -> Result<NodeAnswer, String> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| "(not scheduled)".to_owned());
        let answer = |result| NodeAnswer {
            node: node.clone(),
            pod: name.clone(),
            result,
        };
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".to_owned());
        if phase != "Running" {
            return Ok(answer(Err(format!(
                "the agent pod is {} (not Running)",
                untrusted(&phase)
            ))));
        }
        let port = status_port(&pod);
        let label = format!("{}/{name}:{port}", self.namespace);
        let forwarded =
            match tokio::time::timeout(AGENT_TIMEOUT, pods.portforward(&name, &[port])).await {
                Err(_) => {
                    return Ok(answer(Err(format!(
                        "no port-forward to port {port} within {AGENT_TIMEOUT:?}"
                    ))));
                }
                Ok(Err(kube::Error::Api(status))) if matches!(status.code, 401 | 403) => {
                    return Err(self.api_error(
                        &format!("cannot forward to agent pod {}", untrusted(&name)),
                        &kube::Error::Api(status),
                    ));
                }
                Ok(Err(kube::Error::Api(status))) => {
                    return Ok(answer(Err(format!(
                        "cannot forward to port {port}: the API server answered {} {}: {}",
                        status.code,
                        untrusted(&status.reason),
                        one_line(&status.message)
                    ))));
                }
                Ok(Err(e)) => {
                    return Ok(answer(Err(format!(
                        "cannot forward to port {port}: {}",
                        one_line(&chain(&e))
                    ))));
                }
                Ok(Ok(forwarded)) => forwarded,
            };
        let mut forwarder = forwarded;
        let errors = forwarder.take_error(port);
        let Some(stream) = forwarder.take_stream(port) else {
            forwarder.abort();
            return Ok(answer(Err(format!("no stream for port {port}"))));
        };
        let exchanged =
            tokio::time::timeout(AGENT_TIMEOUT, get_over(stream, "localhost", "/status")).await;
        let result = match exchanged {
            Ok(Ok((code, body))) => parse_status(&label, code, &body),
            Ok(Err(e)) => Err(forward_failure(port, errors, &exchange_error(&e)).await),
            Err(_) => {
                let timeout = format!("no answer within {AGENT_TIMEOUT:?}");
                Err(forward_failure(port, errors, &timeout).await)
            }
        };
        forwarder.abort();
        Ok(answer(result))
    }

    /// One line for an API error, naming the server, the user's missing permission or the
    /// refused credentials.
    fn api_error(&self, what: &str, err: &kube::Error) -> String {
        match err {
            kube::Error::Api(status) if status.code == 403 => format!(
                "{what}: {} ({} {NEEDS} in namespace {}; see docs/operations.md, \"kubectl \
                 mountlag\")",
                one_line(&status.message),
                crate::cmd::program(),
                untrusted(&self.namespace)
            ),
            kube::Error::Api(status) if status.code == 401 => format!(
                "{what}: the API server at {} refused the credentials ({}): log in again or \
                 pick another --context",
                self.server,
                one_line(&status.message)
            ),
            kube::Error::Api(status) => format!(
                "{what}: the API server at {} answered {} {}: {}",
                self.server,
                status.code,
                untrusted(&status.reason),
                one_line(&status.message)
            ),
            other => kubeconfig::unreachable(&self.server, other)
                .unwrap_or_else(|| format!("{what}: {}", one_line(&chain(other)))),
        }
    }
}

/// Why the forwarded exchange failed: what kubelet said on the error channel (nothing listens
/// on the port, the container is not running, ...), else the client's error.
async fn forward_failure(
    port: u16,
    errors: Option<impl Future<Output = Option<String>>>,
    client_error: &str,
) -> String {
    let said = match errors {
        Some(said) => tokio::time::timeout(ERROR_GRACE, said).await.ok().flatten(),
        None => None,
    };
    format!(
        "cannot read /status through a port-forward to port {port}: {}",
        said.as_deref()
            .map_or_else(|| client_error.to_owned(), one_line)
    )
}

fn exchange_error(err: &ClientError) -> String {
    one_line(&chain(err))
}

/// The port the agent serves `/status` on, from its container's arguments: `--status-listen`
/// (node-local: the shipped DaemonSet's `127.0.0.1:9978`), else `--listen`, else 9977.
pub fn status_port(pod: &Pod) -> u16 {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let Some(container) = containers
        .iter()
        .find(|c| c.name == AGENT_CONTAINER)
        .or_else(|| containers.first())
    else {
        return DEFAULT_PORT;
    };
    let args: Vec<&str> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(String::as_str)
        .collect();
    ["--status-listen", "--listen"]
        .iter()
        .find_map(|flag| flag_value(&args, flag).and_then(port_of))
        .unwrap_or(DEFAULT_PORT)
}

/// `--flag=value` or `--flag value`; the last one wins, as with clap.
fn flag_value<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    let mut found = None;
    for (i, arg) in args.iter().enumerate() {
        if *arg == flag {
            found = args.get(i + 1).copied();
        } else if let Some(value) = arg.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            found = Some(value);
        }
    }
    found
}

/// The port of `host:port` / `[v6]:port`.
fn port_of(address: &str) -> Option<u16> {
    address.rsplit_once(':')?.1.parse().ok().filter(|p| *p > 0)
}

/// The table of every node, one after the other; a node whose agent did not answer gets one
/// line saying why.
pub(super) fn render_text(answers: &[NodeAnswer], now: OffsetDateTime, color: bool) -> String {
    let mut out = String::new();
    for (i, answer) in answers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match &answer.result {
            Ok(fetched) => out.push_str(&super::render(&fetched.value, now, color)),
            Err(why) => out.push_str(&format!(
                "node {}: {} (pod {}): {why}\n",
                untrusted(&answer.node),
                Tone::Bad.paint("AGENT UNREACHABLE", color),
                untrusted(&answer.pod),
            )),
        }
    }
    out
}

/// One document: `{"namespace": ..., "nodes": [{"node", "pod", "status" | "error"}]}`, each
/// `status` the agent's document unchanged.
pub(super) fn render_json(namespace: &str, answers: &[NodeAnswer]) -> String {
    let nodes: Vec<Value> = answers
        .iter()
        .map(|answer| {
            let mut entry = json!({"node": answer.node, "pod": answer.pod});
            match &answer.result {
                Ok(fetched) => entry["status"] = fetched.value.clone(),
                Err(why) => entry["error"] = json!(why),
            }
            entry
        })
        .collect();
    let document = json!({"namespace": namespace, "nodes": nodes});
    terminal_safe(&serde_json::to_string_pretty(&document).unwrap_or_default())
}

/// 2 when any agent could not be asked (its node's mounts are unknown), else 1 when any
/// mount on any node needs attention, else 0.
pub(super) fn exit_code(answers: &[NodeAnswer]) -> u8 {
    answers
        .iter()
        .map(|a| match &a.result {
            Ok(fetched) => super::exit_code(&fetched.value),
            Err(_) => super::EXIT_UNREACHABLE,
        })
        .max()
        .unwrap_or(super::EXIT_UNREACHABLE)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pod(args: &[&str]) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "mountlag-x"},
            "spec": {"containers": [
                {"name": "sidecar", "args": ["--listen=0.0.0.0:1"]},
                {"name": "agent", "args": args},
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn the_status_port_comes_from_the_agents_arguments() {
        let shipped = [
            "agent",
            "--listen=0.0.0.0:9977",
            "--status-listen=127.0.0.1:9978",
        ];
        assert_eq!(status_port(&pod(&shipped)), 9978);
        assert_eq!(
            status_port(&pod(&["agent", "--listen", "0.0.0.0:7000"])),
            7000
        );
        assert_eq!(
            status_port(&pod(&["agent", "--status-listen", "[::1]:7001"])),
            7001
        );
        assert_eq!(status_port(&pod(&["agent"])), 9977);
        assert_eq!(status_port(&pod(&["agent", "--listen=nonsense"])), 9977);
    }

    #[test]
    fn the_exit_code_is_the_worst_node() {
        let fine = json!({"node": "a", "mounts": [{"state": "in_sync"}]});
        let stuck = json!({"node": "b", "mounts": [{"state": "stuck"}]});
        let node = |value: Option<&Value>| NodeAnswer {
            node: "n".into(),
            pod: "p".into(),
            result: value
                .map(|v| Fetched {
                    raw: v.to_string().into_bytes(),
                    value: v.clone(),
                })
                .ok_or_else(|| "down".to_owned()),
        };
        assert_eq!(exit_code(&[node(Some(&fine)), node(Some(&fine))]), 0);
        assert_eq!(exit_code(&[node(Some(&fine)), node(Some(&stuck))]), 1);
        assert_eq!(exit_code(&[node(Some(&stuck)), node(None)]), 2);
        let text = render_text(
            &[node(Some(&fine)), node(None)],
            OffsetDateTime::now_utc(),
            false,
        );
        assert!(text.contains("node a: "), "{text}");
        assert!(
            text.contains("node n: AGENT UNREACHABLE (pod p): down"),
            "{text}"
        );
        let doc: Value =
            serde_json::from_str(&render_json("ns", &[node(Some(&fine)), node(None)])).unwrap();
        assert_eq!(doc["nodes"][0]["status"]["mounts"][0]["state"], "in_sync");
        assert_eq!(doc["nodes"][1]["error"], "down");
    }
}
