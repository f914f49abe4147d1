//! `kubectl mountlag status`: the real `kubectl` runs the real `mountlag` binary as its plugin
//! `kubectl-mountlag` (found on PATH), against the API stand-in with two nodes, each with its
//! kubelet stand-in and its agent process. The plugin lists the agent pods and reads each
//! agent's `/status` through `pods/portforward`, under the stand-in's RBAC with the Role that
//! docs/operations.md documents.
//!
//! The stand-in's pods have loopback addresses of their own (node-a's 127.0.0.2, node-b's
//! 127.0.0.3): each agent listens on its node's address, `--listen` and `--status-listen` as
//! the shipped DaemonSet sets them, and the stand-in forwards a pod's port to `podIP:port`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use mountlag_testbed::apiserver::{ADMIN_TOKEN, ADMIN_USER, ApiServer, ApiServerConfig};
use mountlag_testbed::cluster::{KeyRing, agent_config, http_get, mount_of};
use mountlag_testbed::kubelet::KubeletStandIn;
use mountlag_testbed::node::{NodeConfig, NodeKubelet, PodRef};
use mountlag_testbed::rbac::{Rbac, documents, kubectl_available};
use mountlag_testbed::real;
use serde_json::{Value, json};

const AGENT_NAMESPACE: &str = "mountlag-system";
const APP_NAMESPACE: &str = "ingress";
/// The operator of docs/operations.md's Role example.
const OPERATOR: &str = "jane@example.com";
const OPERATOR_TOKEN: &str = "operator-token";
/// May list pods in the agents' namespace, nothing more.
const LISTER: &str = "lister";
const LISTER_TOKEN: &str = "lister-token";
/// May do nothing at all.
const NOBODY: &str = "nobody";
const NOBODY_TOKEN: &str = "nobody-token";
const PATIENCE: Duration = Duration::from_secs(30);

/// The Role and RoleBinding docs/operations.md gives for `kubectl mountlag status`.
fn documented_rbac() -> anyhow::Result<Vec<Value>> {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md");
    let text = std::fs::read_to_string(&doc)?;
    let section = text
        .split("\n## `kubectl mountlag`")
        .nth(1)
        .context("docs/operations.md has no \"## `kubectl mountlag`\" section")?;
    let yaml = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .context("the kubectl mountlag section has no yaml block")?;
    documents(yaml)
}

/// The RBAC the stand-in enforces: the documented Role for the operator, a Role that only lists
/// pods for the lister, nothing for nobody; the test's admin may do anything.
fn rbac() -> anyhow::Result<Rbac> {
    let mut docs = documented_rbac()?;
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["Role", "RoleBinding"], "the documented RBAC");
    docs.extend(documents(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: pod-lister, namespace: {AGENT_NAMESPACE}}}
rules:
  - apiGroups: [\"\"]
    resources: [pods]
    verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: pod-lister, namespace: {AGENT_NAMESPACE}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-lister}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {LISTER}}}]
"
    ))?);
    Ok(Rbac::from_documents(&docs)?
        .with_kubernetes_defaults()
        .with_superuser(ADMIN_USER))
}

/// One node: kubelet stand-in, its agent process and the agent's pod in the API.
struct TestNode {
    name: &'static str,
    node: NodeKubelet,
    agent: Option<Child>,
    status_listen: SocketAddr,
    log: PathBuf,
}

impl TestNode {
    async fn start(
        api: &ApiServer,
        dir: &Path,
        name: &'static str,
        ip: &str,
    ) -> anyhow::Result<Self> {
        let kubelet = Arc::new(KubeletStandIn::new(dir.join(name).join("kubelet"))?);
        let mut config = NodeConfig::new(name).time_factor(0.02);
        config.pod_ip = ip.to_owned();
        let node = NodeKubelet::start(api.clone(), Arc::clone(&kubelet), config);
        let port = |ip: &str| -> anyhow::Result<u16> {
            Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
        };
        let listen: SocketAddr = format!("{ip}:{}", port(ip)?).parse()?;
        let status_listen: SocketAddr = format!("{ip}:{}", port(ip)?).parse()?;
        let config_path = dir.join(name).join("mountlag.yaml");
        std::fs::write(&config_path, agent_config("1s", "2s", false))?;
        let log = dir.join(name).join("agent.log");
        let out = std::fs::File::create(&log)?;
        let agent = Command::new(mountlag_testbed::agent::binary())
            .args(["agent", "--node-name", name])
            .arg(format!("--listen={listen}"))
            .arg(format!("--status-listen={status_listen}"))
            .arg("--config")
            .arg(&config_path)
            .arg("--kubelet-root")
            .arg(kubelet.root())
            .env("KUBECONFIG", api.kubeconfig_path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawn mountlag agent")?;
        // The agent's pod as the DaemonSet makes it (labels, container `agent`, its arguments).
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "namespace": AGENT_NAMESPACE,
                "name": format!("mountlag-{}", &name[name.len() - 1..]),
                "labels": {
                    "app.kubernetes.io/name": "mountlag",
                    "app.kubernetes.io/component": "agent",
                    "app.kubernetes.io/part-of": "mountlag",
                },
            },
            "spec": {
                "nodeName": name,
                "containers": [{
                    "name": "agent",
                    "image": "ghcr.io/example/mountlag:0.1.0",
                    "args": ["agent", format!("--listen={listen}"),
                             format!("--status-listen={status_listen}"), "--log-format=json"],
                    "ports": [{"name": "health", "containerPort": listen.port()}],
                }],
            },
        }))?;
        api.create_pod(&pod)
            .map_err(|e| anyhow::anyhow!("creating the agent pod: {e}"))?;
        Ok(Self {
            name,
            node,
            agent: Some(agent),
            status_listen,
            log,
        })
    }

    /// Waits until this node's agent reports `pod`'s mount in `state`.
    async fn wait_state(&self, pod: &str, state: &str) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < PATIENCE {
            if let Ok((200, body)) = http_get(self.status_listen, "/status").await {
                let status: Value = serde_json::from_str(&body)?;
                if mount_of(&status, pod).is_some_and(|m| m["state"] == state) {
                    return Ok(());
                }
                last = body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!(
            "{}: {pod} not {state} within {PATIENCE:?}; last /status {last}\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    fn kill_agent(&mut self) -> anyhow::Result<()> {
        if let Some(mut agent) = self.agent.take() {
            agent.kill()?;
            agent.wait()?;
        }
        Ok(())
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.kill_agent();
    }
}

/// A controller pod on `node` mounting Secret `secret` as volume `tls`.
fn edge_pod(name: &str, node: &str, secret: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"namespace": APP_NAMESPACE, "name": name, "labels": {"app": "edge"}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "nginx", "image": "nginx",
                            "volumeMounts": [{"name": "tls", "mountPath": "/etc/tls", "readOnly": true}]}],
            "volumes": [{"name": "tls", "secret": {"secretName": secret}}],
        },
    }))?)
}

/// What one `kubectl ...` run gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `kubectl` with the plugin directory first on PATH, `KUBECONFIG=kubeconfig` and a HOME
/// without a `.kube`.
struct Kubectl {
    bin: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    fn command(&self, kubeconfig: &Path, args: &[&str]) -> Command {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new("kubectl");
        command
            .args(args)
            .env("PATH", path)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", &self.home)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        command
    }

    async fn run(&self, kubeconfig: &Path, args: &[&str]) -> anyhow::Result<Run> {
        let mut command = self.command(kubeconfig, args);
        // Blocking, off the runtime's workers: the API stand-in answers on them meanwhile.
        let output = tokio::task::spawn_blocking(move || command.output()).await??;
        let run = Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        eprintln!("$ kubectl {}\n{run:#?}", args.join(" "));
        Ok(run)
    }
}

/// Asserts `run` failed with exit status 2 and exactly one line on stderr containing every
/// piece of `wanted`, and nothing on stdout.
fn assert_one_line_error(run: &Run, wanted: &[&str]) {
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(run.stdout, "", "{run:#?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {run:#?}");
    assert!(
        lines[0].starts_with("kubectl mountlag status: "),
        "{run:#?}"
    );
    for piece in wanted {
        assert!(lines[0].contains(piece), "{piece:?} missing: {run:#?}");
    }
}

fn json_of(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:#?}"))
}

fn nodes_of(doc: &Value) -> Vec<(String, String)> {
    doc["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    (
                        n["node"].as_str().unwrap_or("?").to_owned(),
                        n["pod"].as_str().unwrap_or("?").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_mountlag_status_reads_every_nodes_agent_through_the_api() -> anyhow::Result<()> {
    if !real::require("root + tmpfs", real::can_mount())
        || !real::require("kubectl", kubectl_available())
    {
        return Ok(());
    }
    let api = ApiServer::start(ApiServerConfig {
        tokens: BTreeMap::from([
            (ADMIN_TOKEN.to_owned(), ADMIN_USER.to_owned()),
            (OPERATOR_TOKEN.to_owned(), OPERATOR.to_owned()),
            (LISTER_TOKEN.to_owned(), LISTER.to_owned()),
            (NOBODY_TOKEN.to_owned(), NOBODY.to_owned()),
        ]),
        authorizer: Arc::new(rbac()?),
        ..ApiServerConfig::default()
    })
    .await?;
    let dir = tempfile::Builder::new()
        .prefix("mountlag-kubectl-plugin-")
        .tempdir()?;
    let mut keys = KeyRing::new("kubectl plugin test CA")?;
    let mut nodes = Vec::new();
    for (name, ip) in [("node-a", "127.0.0.2"), ("node-b", "127.0.0.3")] {
        let suffix = &name[name.len() - 1..];
        api.apply_secret(&keys.secret(&format!("edge-{suffix}-tls")))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        api.create_pod(&edge_pod(
            &format!("edge-{suffix}"),
            name,
            &format!("edge-{suffix}-tls"),
        )?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        nodes.push(TestNode::start(&api, dir.path(), name, ip).await?);
    }
    // Not an agent: a pod in the agents' namespace without their labels.
    let mut stranger = edge_pod("stranger", "node-a", "edge-a-tls")?;
    stranger.metadata.namespace = Some(AGENT_NAMESPACE.to_owned());
    stranger.metadata.labels = None;
    stranger.spec.as_mut().context("spec")?.volumes = None;
    stranger.spec.as_mut().context("spec")?.containers[0].volume_mounts = None;
    api.create_pod(&stranger)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (node, pod) in nodes.iter().zip(["edge-a", "edge-b"]) {
        node.wait_state(pod, "in_sync").await?;
    }

    // The plugin: the binary under kubectl's plugin name, first on PATH.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin)?;
    std::os::unix::fs::symlink(
        mountlag_testbed::agent::binary(),
        bin.join("kubectl-mountlag"),
    )?;
    let home = dir.path().join("home");
    std::fs::create_dir(&home)?;
    let kubectl = Kubectl { bin, home };
    let kubeconfig = |name: &str, token: &str| -> anyhow::Result<PathBuf> {
        let path = dir.path().join(name);
        api.write_kubeconfig(&path, Some(token))?;
        Ok(path)
    };
    let operator = kubeconfig("operator", OPERATOR_TOKEN)?;
    let started = Instant::now();

    let listed = kubectl.run(&operator, &["plugin", "list"]).await?;
    assert!(
        listed
            .stdout
            .contains(&kubectl.bin.join("kubectl-mountlag").display().to_string()),
        "{listed:#?}"
    );
    let help = kubectl
        .run(&operator, &["mountlag", "status", "--help"])
        .await?;
    assert_eq!(help.code, 0, "{help:#?}");
    assert!(
        help.stdout.contains("Usage: kubectl mountlag status"),
        "{help:#?}"
    );
    assert!(help.stdout.contains("--kubeconfig"), "{help:#?}");

    // Every node, as a table per node.
    let all = kubectl.run(&operator, &["mountlag", "status"]).await?;
    assert_eq!(all.code, 0, "{all:#?}");
    let (a, b) = (
        all.stdout.find("node node-a: ready, 1 mount (1 in_sync)"),
        all.stdout.find("node node-b: ready, 1 mount (1 in_sync)"),
    );
    assert!(a.is_some() && b.is_some() && a < b, "{all:#?}");
    for row in [
        "ingress/edge-a  tls     edge-a-tls@",
        "ingress/edge-b  tls     edge-b-tls@",
    ] {
        assert!(all.stdout.contains(row), "{row:?}: {all:#?}");
    }
    assert!(!all.stdout.contains("stranger"), "{all:#?}");
    assert_eq!(all.stderr, "", "{all:#?}");

    // One JSON document, one entry per node, each the agent's /status.
    let json = kubectl
        .run(&operator, &["mountlag", "status", "--json"])
        .await?;
    assert_eq!(json.code, 0, "{json:#?}");
    let doc = json_of(&json);
    assert_eq!(doc["namespace"], AGENT_NAMESPACE);
    assert_eq!(
        nodes_of(&doc),
        [
            ("node-a".to_owned(), "mountlag-a".to_owned()),
            ("node-b".to_owned(), "mountlag-b".to_owned())
        ]
    );
    for (entry, pod) in doc["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(["edge-a", "edge-b"])
    {
        assert_eq!(entry["status"]["node"], entry["node"], "{entry:#}");
        let mount = mount_of(&entry["status"], pod).with_context(|| format!("{pod}: {entry:#}"))?;
        assert_eq!(mount["state"], "in_sync", "{mount:#}");
    }

    // One node.
    let one = kubectl
        .run(&operator, &["mountlag", "status", "--node", "node-b"])
        .await?;
    assert_eq!(one.code, 0, "{one:#?}");
    assert!(one.stdout.contains("node node-b: ready"), "{one:#?}");
    assert!(one.stdout.contains("ingress/edge-b"), "{one:#?}");
    assert!(!one.stdout.contains("node-a"), "{one:#?}");
    let one = kubectl
        .run(
            &operator,
            &["mountlag", "status", "--json", "--node=node-a"],
        )
        .await?;
    assert_eq!(one.code, 0, "{one:#?}");
    assert_eq!(
        nodes_of(&json_of(&one)),
        [("node-a".to_owned(), "mountlag-a".to_owned())]
    );
    let none = kubectl
        .run(&operator, &["mountlag", "status", "--node", "node-z"])
        .await?;
    assert_one_line_error(
        &none,
        &["no mountlag agent pods", "mountlag-system", "node-z"],
    );

    // --watch: a frame a second, each with every node, until interrupted.
    let mut watch = kubectl
        .command(&operator, &["mountlag", "status", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = watch.stdout.take().context("stdout")?;
    let frames = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        let mut text = String::new();
        let mut headers = 0;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            headers += usize::from(
                line.starts_with("Every 1s: kubectl mountlag status -n mountlag-system"),
            );
            text.push_str(&line);
            text.push('\n');
            if headers == 2 && line.starts_with("node node-b: ready") {
                break;
            }
        }
        text
    });
    let frames = tokio::time::timeout(PATIENCE, frames).await;
    watch.kill()?;
    watch.wait()?;
    let frames = frames.context("no second --watch frame")??;
    assert_eq!(frames.matches("node node-a: ready").count(), 2, "{frames}");
    assert_eq!(frames.matches("node node-b: ready").count(), 2, "{frames}");

    // A stuck mount on node-b: exit 1 for the cluster, 0 for node-a alone.
    nodes[1]
        .node
        .set_stuck(PodRef::name(APP_NAMESPACE, "edge-b"), true);
    api.apply_secret(&keys.secret("edge-b-tls"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    nodes[1].wait_state("edge-b", "stuck").await?;
    let stuck = kubectl.run(&operator, &["mountlag", "status"]).await?;
    assert_eq!(stuck.code, 1, "{stuck:#?}");
    assert!(
        stuck
            .stdout
            .contains("node node-a: ready, 1 mount (1 in_sync)"),
        "{stuck:#?}"
    );
    assert!(
        stuck
            .stdout
            .contains("node node-b: ready, 1 mount (1 stuck)"),
        "{stuck:#?}"
    );
    let json = kubectl
        .run(&operator, &["mountlag", "status", "--json"])
        .await?;
    assert_eq!(json.code, 1, "{json:#?}");
    let a_alone = kubectl
        .run(&operator, &["mountlag", "status", "--node", "node-a"])
        .await?;
    assert_eq!(a_alone.code, 0, "{a_alone:#?}");

    // Who may not forward, or not even list: one readable line naming what is missing.
    let lister = kubeconfig("lister", LISTER_TOKEN)?;
    let denied = kubectl.run(&lister, &["mountlag", "status"]).await?;
    assert_one_line_error(
        &denied,
        &[
            "forbidden",
            &format!("User \"{LISTER}\""),
            "pods/portforward",
            "mountlag-system",
        ],
    );
    let nobody = kubeconfig("nobody", NOBODY_TOKEN)?;
    let denied = kubectl
        .run(&nobody, &["mountlag", "status", "--json"])
        .await?;
    assert_one_line_error(
        &denied,
        &[
            "cannot list the agent pods",
            "forbidden",
            "cannot list resource \"pods\"",
        ],
    );

    // Flags kubectl passes through: --kubeconfig over KUBECONFIG, --context, -n.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut two_contexts: Value = serde_yaml::from_str(&std::fs::read_to_string(&operator)?)?;
    let mut dead_cluster = two_contexts["clusters"][0].clone();
    dead_cluster["name"] = json!("dead");
    dead_cluster["cluster"]["server"] = json!(format!("https://127.0.0.1:{dead_port}"));
    two_contexts["clusters"]
        .as_array_mut()
        .context("clusters")?
        .push(dead_cluster);
    two_contexts["contexts"]
        .as_array_mut()
        .context("contexts")?
        .push(json!(
            {"name": "dead", "context": {"cluster": "dead", "user": "testbed-user"}}
        ));
    two_contexts["current-context"] = json!("dead");
    let two = dir.path().join("two-contexts");
    std::fs::write(&two, serde_yaml::to_string(&two_contexts)?)?;
    let unreachable = kubectl.run(&two, &["mountlag", "status"]).await?;
    assert_one_line_error(
        &unreachable,
        &[&format!(
            "cannot reach the Kubernetes API server at https://127.0.0.1:{dead_port}"
        )],
    );
    let by_context = kubectl
        .run(
            &two,
            &[
                "mountlag",
                "status",
                "--context",
                "testbed",
                "-n",
                AGENT_NAMESPACE,
            ],
        )
        .await?;
    assert_eq!(by_context.code, 1, "{by_context:#?}");
    assert!(
        by_context.stdout.contains("node node-a: ready"),
        "{by_context:#?}"
    );
    let by_file = kubectl
        .run(
            &two,
            &[
                "mountlag",
                "status",
                "--kubeconfig",
                &operator.display().to_string(),
            ],
        )
        .await?;
    assert_eq!(by_file.code, 1, "{by_file:#?}");
    let elsewhere = kubectl
        .run(&operator, &["mountlag", "status", "-n", APP_NAMESPACE])
        .await?;
    assert_one_line_error(&elsewhere, &["forbidden", "namespace \"ingress\""]);

    // node-b's agent gone: node-a is still reported, node-b says why, exit 2.
    nodes[1].kill_agent()?;
    let down = kubectl.run(&operator, &["mountlag", "status"]).await?;
    assert_eq!(down.code, 2, "{down:#?}");
    assert!(
        down.stdout
            .contains("node node-a: ready, 1 mount (1 in_sync)"),
        "{down:#?}"
    );
    assert!(down.stdout.contains("ingress/edge-a"), "{down:#?}");
    assert!(
        down.stdout
            .contains("node node-b: AGENT UNREACHABLE (pod mountlag-b): cannot read /status"),
        "{down:#?}"
    );
    assert!(down.stdout.contains("refused"), "{down:#?}");
    let down = kubectl
        .run(&operator, &["mountlag", "status", "--json"])
        .await?;
    assert_eq!(down.code, 2, "{down:#?}");
    let doc = json_of(&down);
    assert_eq!(doc["nodes"][0]["status"]["node"], "node-a", "{doc:#}");
    assert!(doc["nodes"][1]["status"].is_null(), "{doc:#}");
    assert!(
        doc["nodes"][1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("refused")),
        "{doc:#}"
    );
    eprintln!("kubectl runs took {:?}", started.elapsed());
    keys.assert_not_in(
        "kubectl mountlag status",
        &format!("{all:?}{json:?}{stuck:?}"),
    );
    Ok(())
}
