//! Reload mode `restart` across three nodes: one Deployment with a real nginx pod on each node,
//! three real agents under the RBAC and admission policy of `deploy/overlays/traefik-restart`
//! (component rolling-restart), the rollout model playing the Deployment controller.
//!
//! A rotation must patch the pod template once, with one value every agent agrees on, and
//! roll the Deployment once; the new pods must serve the new leaf and be verified. Invalid
//! material must restart nothing. A patch beyond the annotation is refused by the policy.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mountlag_testbed::apiserver::{
    ADMIN_TOKEN, ADMIN_USER, ApiServer, ApiServerConfig, ValidatingPolicies,
};
use mountlag_testbed::certs::LeafSpec;
use mountlag_testbed::cluster::{KeyRing, free_port, mount_of, tls_secret};
use mountlag_testbed::controllers::{self, ControllerKind, ControllerSpec, RunningController};
use mountlag_testbed::kubelet::VolumeKind;
use mountlag_testbed::multinode::{NodeAgent, logs};
use mountlag_testbed::rbac::{self, Rbac};
use mountlag_testbed::real;
use mountlag_testbed::rollout::{Rollouts, WorkloadRef};
use serde_json::{Value, json};

/// The namespace `overlays/traefik-restart` grants Secret reads in.
const NS: &str = "traefik";
const VARIANT: &str = "overlays/traefik-restart";
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const NAME: &str = "edge.example.com";
const PATIENCE: Duration = Duration::from_secs(90);
const NODE_NAME_CLAIM: &str = "authentication.kubernetes.io/node-name";

/// A quick nudge so that every node's old pod has the new files (and its agent asks for the
/// restart) before the rollout has replaced it: the three agents ask at once.
fn config(port: u16) -> String {
    format!(
        "nudge:\n  after: 100ms\nreload:\n  restartTimeout: 2m\nverify:\n  interval: 3s\ncontrollers:\n  - name: edge\n    profile: nginx\n    \
         selector: app=edge\n    namespaces: [{NS}]\n    reload: restart\n    probe:\n      \
         ports: [{port}]\n"
    )
}

fn token(node: &str) -> String {
    format!("mountlag-token-{node}")
}

/// The API stand-in enforcing the overlay's RBAC and admission policies, one pod-bound token
/// per node for the agents.
async fn api_under_overlay() -> ApiServer {
    let docs = rbac::documents(&rbac::render(&rbac::deploy_dir().join(VARIANT)).unwrap()).unwrap();
    let user = rbac::daemonset_user(&docs).unwrap();
    let rbac = Rbac::from_documents(&docs).unwrap();
    let mut tokens = BTreeMap::from([(ADMIN_TOKEN.to_owned(), ADMIN_USER.to_owned())]);
    let mut extra = BTreeMap::new();
    for node in NODES {
        tokens.insert(token(node), user.clone());
        extra.insert(
            token(node),
            BTreeMap::from([(NODE_NAME_CLAIM.to_owned(), vec![node.to_owned()])]),
        );
    }
    ApiServer::start(ApiServerConfig {
        tokens,
        token_extra: extra,
        authorizer: Arc::new(rbac.with_kubernetes_defaults().with_superuser(ADMIN_USER)),
        admission: Arc::new(ValidatingPolicies::from_documents(&docs).unwrap()),
        ..ApiServerConfig::default()
    })
    .await
    .unwrap()
}

fn template() -> Value {
    json!({
        "metadata": {"labels": {"app": "edge"}},
        "spec": {
            "containers": [{"name": "nginx", "image": "nginx",
                            "volumeMounts": [{"name": "tls", "mountPath": "/etc/tls", "readOnly": true}]}],
            "volumes": [{"name": "tls", "secret": {"secretName": "edge-tls"}}],
        },
    })
}

/// One real nginx per node, serving the node's newest running pod of the Deployment from that
/// pod's volume (the test plays the container runtime: a new pod's nginx replaces the old
/// one's on the pod IP of the node).
struct Containers {
    port: u16,
    running: BTreeMap<String, (String, RunningController)>,
}

impl Containers {
    fn sync(&mut self, rollouts: &Rollouts, dep: &WorkloadRef, agents: &[NodeAgent]) {
        for pod in rollouts.pods(dep) {
            let status = pod.status.clone().unwrap_or_default();
            let (Some(uid), Some(node)) = (
                pod.metadata.uid.clone(),
                pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            ) else {
                continue;
            };
            if status.phase.as_deref() != Some("Running")
                || pod.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            if self
                .running
                .get(&node)
                .is_some_and(|(served, _)| *served == uid)
            {
                continue;
            }
            let Some(agent) = agents.iter().find(|a| a.name == node) else {
                continue;
            };
            let volume = agent.kubelet.volume_dir(&uid, VolumeKind::Secret, "tls");
            if !volume.join("tls.crt").exists() {
                continue;
            }
            if let Some((_, old)) = self.running.remove(&node) {
                old.stop().unwrap();
            }
            let spec = ControllerSpec::new(ControllerKind::Nginx, &uid, &volume, vec![NAME.into()])
                .with_ip(agent.pod_ip)
                .with_port(self.port);
            let nginx = tokio::task::block_in_place(|| RunningController::start(spec)).unwrap();
            self.running.insert(node, (uid, nginx));
        }
    }
}

/// `(reason, regarding name)` of every Event.
fn events(api: &ApiServer, reason: &str) -> Vec<String> {
    api.events()
        .into_iter()
        .filter(|e| e.reason == reason)
        .map(|e| e.regarding.name)
        .collect()
}

/// The restart annotation values of the agents' patches of the Deployment, and how many of
/// them changed it (200).
fn restart_patches(api: &ApiServer) -> (Vec<String>, usize) {
    let patches: Vec<_> = api
        .patches()
        .into_iter()
        .filter(|p| p.resource.starts_with("deployments") && p.user != ADMIN_USER)
        .collect();
    let values = patches
        .iter()
        .map(|p| {
            p.body["spec"]["template"]["metadata"]["annotations"]["mountlag.io/restart"]
                .as_str()
                .unwrap_or("<none>")
                .to_owned()
        })
        .collect();
    (values, patches.iter().filter(|p| p.code == 200).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_rolls_the_deployment_once_from_three_agents_and_the_new_pods_are_verified() {
    if !real::require("kubectl (kustomize)", rbac::kubectl_available())
        || !real::require("root + tmpfs", real::can_mount())
        || !real::require("nginx", controllers::available(ControllerKind::Nginx))
    {
        return;
    }
    let api = api_under_overlay().await;
    let rollouts = Rollouts::start(api.clone());
    let mut keys = KeyRing::new("rolling restart test CA").unwrap();
    let leaf = |keys: &mut KeyRing| keys.ca.issue(&LeafSpec::valid_for([NAME])).unwrap();
    let first = leaf(&mut keys);
    api.apply_secret(&tls_secret(NS, "edge-tls", &first))
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("mountlag-restart-")
        .tempdir()
        .unwrap();
    let port = free_port().unwrap();
    let dep = WorkloadRef::deployment(NS, "edge");
    rollouts
        .create_deployment(NS, "edge", &template(), &NODES)
        .unwrap();
    // The pods' containers are started as the kubelet stand-ins start the pods.
    let mut containers = Containers {
        port,
        running: BTreeMap::new(),
    };
    let mut agents = Vec::new();
    for (i, node) in NODES.iter().enumerate() {
        let kubeconfig = dir.path().join(format!("{node}.kubeconfig"));
        api.write_kubeconfig(&kubeconfig, Some(&token(node)))
            .unwrap();
        agents.push(
            NodeAgent::start(
                &api,
                dir.path(),
                node,
                i as u16,
                &config(port),
                Some(&kubeconfig),
            )
            .unwrap(),
        );
    }

    // Every pod served and in sync before the rotation.
    let start = Instant::now();
    loop {
        containers.sync(&rollouts, &dep, &agents);
        let mut in_sync = 0;
        for agent in &agents {
            let Some(status) = agent.status().await else {
                continue;
            };
            in_sync += status["mounts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["state"] == "in_sync" && m["served"]["match"] == true)
                .count();
        }
        if in_sync == NODES.len() {
            break;
        }
        if start.elapsed() > PATIENCE {
            let mut statuses = Vec::new();
            for agent in &agents {
                statuses.push(agent.status().await);
            }
            panic!(
                "not in sync: {statuses:#?}\ncontainers {:?}\npods {:#?}\n{}",
                containers.running.keys().collect::<Vec<_>>(),
                rollouts
                    .pods(&dep)
                    .iter()
                    .map(|p| (
                        &p.metadata.name,
                        p.status.as_ref().and_then(|s| s.phase.clone())
                    ))
                    .collect::<Vec<_>>(),
                logs(&agents)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old_pods: BTreeSet<String> = rollouts
        .pods(&dep)
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();

    // The rotation.
    let second = leaf(&mut keys);
    api.apply_secret(&tls_secret(NS, "edge-tls", &second))
        .unwrap();
    let start = Instant::now();
    let new_pods = loop {
        containers.sync(&rollouts, &dep, &agents);
        let stats = rollouts.stats(&dep);
        let pods: BTreeSet<String> = rollouts
            .pods(&dep)
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        let verified: BTreeSet<String> = events(&api, "ControllerReloaded").into_iter().collect();
        if stats.completed >= 1
            && !stats.in_progress
            && pods.is_disjoint(&old_pods)
            && pods.is_subset(&verified)
        {
            break pods;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "rollout {stats:?}, pods {pods:?}, verified {verified:?}, patches {:?}\n{}",
            restart_patches(&api),
            logs(&agents)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(new_pods.len(), NODES.len());
    // Every agent asked (its old pod had the new files before it was replaced) ...
    for agent in &agents {
        assert!(
            agent.log_text().contains("rolling restart"),
            "{} did not ask for the restart:\n{}",
            agent.name,
            agent.log_text()
        );
    }
    // ... and the template changed once.
    let (values, changed) = restart_patches(&api);
    assert_eq!(changed, 1, "one patch changed the template: {values:?}");
    assert!(
        values.iter().all(|v| *v == values[0]) && values[0].len() == 16,
        "every agent patched the same value: {values:?}"
    );
    assert_eq!(rollouts.started(&dep), 1, "one rollout for one rotation");
    assert_eq!(
        events(&api, "RollingRestartRequested"),
        ["edge"],
        "one Event, regarding the Deployment"
    );
    // Each new pod serves the new leaf, as its node's agent says (its /status is rebuilt at
    // most once a second: waited for).
    let start = Instant::now();
    'served: loop {
        let mut last = Vec::new();
        for agent in &agents {
            let status = agent.status().await.unwrap_or_default();
            let served = new_pods
                .iter()
                .find_map(|p| mount_of(&status, p))
                .map(|m| m["served"].clone());
            let ok = served.as_ref().is_some_and(|s| {
                s["match"] == true && s["fingerprintSha256"] == second.fingerprint_sha256
            });
            last.push((agent.name.clone(), served));
            if !ok {
                assert!(
                    start.elapsed() < PATIENCE,
                    "new pods not seen serving the new leaf: {last:?}\n{}",
                    logs(&agents)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'served;
            }
        }
        break;
    }

    // Broken material (the key of another leaf): refused on every node, nothing restarted.
    let third = leaf(&mut keys);
    let mut broken = tls_secret(NS, "edge-tls", &third);
    let other = leaf(&mut keys);
    broken.data.as_mut().unwrap().insert(
        "tls.key".into(),
        k8s_openapi::ByteString(other.key_pem.clone().into_bytes()),
    );
    api.apply_secret(&broken).unwrap();
    let start = Instant::now();
    loop {
        let refused: BTreeSet<String> = events(&api, "InvalidCertificateMaterial")
            .into_iter()
            .collect();
        if refused == new_pods {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "refused on {refused:?}, wanted {new_pods:?}\n{}",
            logs(&agents)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        restart_patches(&api).1,
        1,
        "no restart for invalid material"
    );
    assert_eq!(rollouts.started(&dep), 1);

    // The policy lets the agent's identity change the restart annotation and nothing else.
    let client_as_agent = {
        let kubeconfig = dir.path().join("node-a.kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        kube::Client::try_from(config).unwrap()
    };
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client_as_agent, NS);
    let refused = deployments
        .patch(
            "edge",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "nginx", "image": "attacker/nginx"}]}}}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 403 && s.message.contains("mountlag.io/restart")),
        "{refused:?}"
    );
    for agent in &agents {
        keys.assert_not_in(&agent.name, &agent.log_text());
    }
    for (_, (_, nginx)) in std::mem::take(&mut containers.running) {
        nginx.stop().unwrap();
    }
}
