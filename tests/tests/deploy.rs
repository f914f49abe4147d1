//! `deploy/`: the manifests render and validate, the DaemonSet keeps the properties
//! docs/security.md promises, every shipped configuration passes `check-config`, the alert rules
//! pass promtool (checks and unit tests), and the static binary the Dockerfile builds is static
//! and works.
//!
//! Real parts: `kubectl` (kustomize), `kubernetes-validate` (PyPI), `promtool` (Debian
//! `prometheus`), `cargo`. Under `MOUNTLAG_REQUIRE_REAL=1` a missing one fails the test.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mountlag::config::{ReloadAction, ReloadMode};
use mountlag_testbed::apiserver::{ApiServer, ApiServerConfig};
use mountlag_testbed::cluster::{free_port, http_get};
use mountlag_testbed::podsecurity;
use mountlag_testbed::rbac::{self, documents, of_kind};
use mountlag_testbed::real;
use serde_json::Value;

/// Kubernetes versions the manifests are validated against: the oldest supported and the one
/// the code's API types come from (k8s-openapi feature `v1_33`).
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.33.0"];

/// Capabilities the agent adds after dropping ALL; each is justified in docs/security.md.
const ADDED_CAPABILITIES: &[&str] = &["KILL"];

/// The build command of deploy/Dockerfile (and deploy/image/build), run by the static build
/// test with `$triple` the host's target triple.
const STATIC_BUILD: &str = r#"RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$triple" -p mountlag"#;

/// The overlay whose DaemonSet arguments and configuration the static agent is started with.
const STATIC_AGENT_VARIANT: &str = "overlays/ingress-nginx";

/// The host's target triple (`rustc -vV`), as the Dockerfile's build stage computes it.
fn host_triple() -> String {
    let out = Command::new("rustc").arg("-vV").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap()
        .to_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn can_render() -> bool {
    real::require("kubectl (kustomize)", rbac::kubectl_available())
}

fn command_works(program: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(err) => Err(format!("{program} is not installed ({err})")),
    }
}

/// Every overlay: what a user may `kubectl apply -k` (there is no top-level kustomization).
fn variants() -> Vec<String> {
    let mut overlays: Vec<String> = std::fs::read_dir(rbac::deploy_dir().join("overlays"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("kustomization.yaml").exists())
        .map(|e| format!("overlays/{}", e.file_name().to_string_lossy()))
        .collect();
    overlays.sort();
    assert!(overlays.len() >= 10, "{overlays:?}");
    overlays
}

/// Whether the overlay's kustomization lists components/probe-only.
fn uses_probe_only(variant: &str) -> bool {
    let kustomization: Value = serde_yaml::from_str(
        &std::fs::read_to_string(rbac::deploy_dir().join(variant).join("kustomization.yaml"))
            .unwrap(),
    )
    .unwrap();
    kustomization["components"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c == "../../components/probe-only"))
}

/// `((cpu, memory) requests, (cpu, memory) limits)` from docs/install.md's sentence
/// "Requests `10m` CPU and `32Mi` memory, limits `500m` and `128Mi`".
fn documented_resources() -> ((String, String), (String, String)) {
    let install = read("docs/install.md");
    let sentence = install
        .split("## Resources")
        .nth(1)
        .and_then(|s| s.split("Requests `").nth(1))
        .expect("docs/install.md: \"## Resources\" states \"Requests `...`\"");
    let values: Vec<String> = sentence
        .split('`')
        .step_by(2)
        .take(4)
        .map(str::to_owned)
        .collect();
    let [cpu, memory, cpu_limit, memory_limit] = &values[..] else {
        panic!("docs/install.md resources: {values:?}");
    };
    (
        (cpu.clone(), memory.clone()),
        (cpu_limit.clone(), memory_limit.clone()),
    )
}

fn render(variant: &str) -> String {
    rbac::render(&rbac::deploy_dir().join(variant)).unwrap()
}

fn one<'a>(docs: &'a [Value], kind: &str, variant: &str) -> &'a Value {
    match of_kind(docs, kind)[..] {
        [doc] => doc,
        ref found => panic!("{variant}: expected one {kind}, found {}", found.len()),
    }
}

// ------------------------------------------------------------------------------- rendering

#[test]
fn every_kustomization_renders_and_validates_against_the_kubernetes_schemas() {
    if !can_render()
        || !real::require(
            "kubernetes-validate (pip install kubernetes-validate)",
            command_works("kubernetes-validate", &["--version"]),
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for variant in variants() {
        let yaml = render(&variant);
        let docs = documents(&yaml).unwrap();
        for kind in [
            "Namespace",
            "ServiceAccount",
            "DaemonSet",
            "ConfigMap",
            "ClusterRoleBinding",
            "NetworkPolicy",
        ] {
            assert!(!of_kind(&docs, kind).is_empty(), "{variant}: no {kind}");
        }
        let file = dir
            .path()
            .join(format!("{}.yaml", variant.replace(['/', '.'], "_")));
        std::fs::write(&file, yaml).unwrap();
        files.push(file);
    }
    // The monitoring kustomization renders too (its CRs have no schema in kubernetes-validate:
    // the rules are checked by promtool below).
    let monitoring = documents(&render("prometheus")).unwrap();
    assert_eq!(of_kind(&monitoring, "PrometheusRule").len(), 1);
    assert_eq!(of_kind(&monitoring, "PodMonitor").len(), 1);

    for version in KUBERNETES_VERSIONS {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--quiet", "-k", version])
            .args(&files)
            .output()
            .unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "kubernetes-validate --strict -k {version}: every resource must validate, none be \
             skipped:\n{report}"
        );
    }
    // The validator does catch mistakes (a misspelt field).
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        render("overlays/nginx").replace("hostPID: true", "hostPID: true\n      hostPIDs: true"),
    )
    .unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSIONS[0]])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a misspelt field must fail validation"
    );
}

// ------------------------------------------------------------------------------- DaemonSet

fn args_of(container: &Container) -> BTreeMap<String, String> {
    let args = container.args.as_deref().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("agent"), "{args:?}");
    args[1..]
        .iter()
        .map(|a| {
            let (k, v) = a
                .strip_prefix("--")
                .and_then(|a| a.split_once('='))
                .unwrap_or_else(|| panic!("write agent flags as --flag=value: {a:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The container port a probe points at (by number or by name).
fn probe_target(probe: Option<&Probe>, container: &Container) -> (String, i32) {
    let get = probe
        .and_then(|p| p.http_get.as_ref())
        .expect("an httpGet probe");
    assert!(get.scheme.as_deref().is_none_or(|s| s == "HTTP"), "{get:?}");
    let port = match &get.port {
        IntOrString::Int(port) => *port,
        IntOrString::String(name) => {
            container
                .ports
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("probe port {name:?} is not a container port"))
                .container_port
        }
    };
    (get.path.clone().unwrap_or_default(), port)
}

fn config_of(docs: &[Value], variant: &str) -> mountlag::config::Config {
    let text = one(docs, "ConfigMap", variant)["data"]["mountlag.yaml"]
        .as_str()
        .unwrap_or_else(|| panic!("{variant}: the ConfigMap has no mountlag.yaml"));
    mountlag::config::Config::from_yaml(text, &format!("{variant} ConfigMap"))
        .unwrap_or_else(|errors| panic!("{variant}: invalid configuration:\n{errors}"))
}

#[test]
fn the_daemonset_keeps_every_property_docs_security_md_describes() {
    if !can_render() {
        return;
    }
    let security = read("docs/security.md");
    for cap in ADDED_CAPABILITIES {
        assert!(
            security.contains(&format!("CAP_{cap}")),
            "docs/security.md justifies CAP_{cap}"
        );
    }
    for variant in variants() {
        let docs = documents(&render(&variant)).unwrap();
        let ds: DaemonSet = serde_json::from_value(one(&docs, "DaemonSet", &variant).clone())
            .unwrap_or_else(|e| panic!("{variant}: DaemonSet: {e}"));
        let ctx = |what: &str| format!("{variant}: {what}");
        let namespace = ds.metadata.namespace.clone().unwrap();
        let ns = one(&docs, "Namespace", &variant);
        assert_eq!(ns["metadata"]["name"], namespace.as_str());
        // components/probe-only: no hostPID, no hostPath, no root: `restricted`. Otherwise
        // hostPID and hostPath need `privileged` (the_pod_security_level_...).
        let probe_only = uses_probe_only(&variant);
        assert_eq!(
            ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            if probe_only {
                "restricted"
            } else {
                "privileged"
            },
            "{}",
            ctx("Pod Security level")
        );
        let spec = ds.spec.as_ref().unwrap();
        let strategy = spec.update_strategy.as_ref().unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        assert!(
            strategy
                .rolling_update
                .as_ref()
                .and_then(|r| r.max_unavailable.as_ref())
                .is_some(),
            "{}",
            ctx("RollingUpdate with maxUnavailable")
        );
        let pod: &PodSpec = spec.template.spec.as_ref().unwrap();

        // Finding and signalling a controller process needs the host's PID namespace and
        // CAP_KILL; a configuration that never signals (verify-only) gets neither.
        let config = config_of(&docs, &variant);
        let signals = config
            .controllers
            .iter()
            .any(|c| matches!(c.reload, ReloadAction::Signal { .. }));
        let expected_caps: &[&str] = if signals { ADDED_CAPABILITIES } else { &[] };
        if probe_only {
            // Nothing it could act on: every controller reads the API, nothing is nudged.
            assert!(
                !config.nudge.enabled,
                "{}",
                ctx("probe-only: nudge.enabled false")
            );
            for c in &config.controllers {
                assert_eq!(
                    (c.mode, &c.reload),
                    (ReloadMode::Api, &ReloadAction::None),
                    "{}",
                    ctx(&format!(
                        "probe-only: {} reads the API, is never reloaded",
                        c.name
                    ))
                );
            }
        }
        assert_eq!(
            pod.host_pid.unwrap_or(false),
            signals,
            "{}",
            ctx("hostPID exactly when a controller is reloaded by signal")
        );
        assert_ne!(pod.host_network, Some(true), "{}", ctx("no hostNetwork"));
        assert_ne!(pod.host_ipc, Some(true), "{}", ctx("no hostIPC"));
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("system-node-critical")
        );
        assert!(
            pod.tolerations
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|t| {
                    t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()
                }),
            "{}",
            ctx("tolerates every taint")
        );
        let account = pod.service_account_name.as_deref().unwrap();
        assert!(
            of_kind(&docs, "ServiceAccount")
                .iter()
                .any(|sa| sa["metadata"]["name"] == account
                    && sa["metadata"]["namespace"] == namespace.as_str()),
            "{}",
            ctx("the ServiceAccount exists")
        );
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(
            pod_security
                .seccomp_profile
                .as_ref()
                .map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
        // docs/security.md, "User": uid 0 with every capability but KILL dropped; probe-only
        // runs as the image's nonroot user.
        let (uid, non_root) = if probe_only {
            (65532, true)
        } else {
            (0, false)
        };
        assert_eq!(pod_security.run_as_user, Some(uid), "{}", ctx("runAsUser"));
        assert_eq!(
            pod_security.run_as_group,
            Some(uid),
            "{}",
            ctx("runAsGroup")
        );
        assert_eq!(
            pod_security.run_as_non_root,
            Some(non_root),
            "{}",
            ctx("runAsNonRoot")
        );

        let [container] = &pod.containers[..] else {
            panic!("{}", ctx("one container"));
        };
        assert!(pod.init_containers.is_none());
        assert_eq!(
            container.image.as_deref(),
            Some(format!("ghcr.io/example/mountlag:{}", env!("CARGO_PKG_VERSION")).as_str()),
            "{}",
            ctx("the image tag is the release version")
        );
        let sc = container.security_context.as_ref().unwrap();
        assert_ne!(sc.privileged, Some(true), "{}", ctx("not privileged"));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert!(sc.proc_mount.is_none() || sc.proc_mount.as_deref() == Some("Default"));
        assert!(sc.run_as_user.is_none() && sc.run_as_non_root.is_none());
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
        let added: Vec<&str> = caps
            .add
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(added, expected_caps, "{}", ctx("added capabilities"));
        if let Some(seccomp) = &sc.seccomp_profile {
            assert_eq!(seccomp.type_, "RuntimeDefault");
        }

        // Flags: the kubelet root whose pods/ is mounted, the host's /proc, the port.
        let args = args_of(container);
        let kubelet_root = &args["kubelet-root"];
        assert_eq!(kubelet_root, "/var/lib/kubelet");
        assert_eq!(args["proc-root"], "/proc", "{}", ctx("hostPID gives /proc"));
        let listen: SocketAddr = args["listen"].parse().unwrap();
        assert!(
            listen.ip().is_unspecified(),
            "{}",
            ctx("kubelet probes the pod IP")
        );
        let listen_port = i32::from(listen.port());
        assert_eq!(listen_port, 9977);
        assert!(
            container
                .ports
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|p| p.container_port == listen_port),
            "{}",
            ctx("the --listen port is a container port")
        );
        assert_eq!(
            probe_target(container.liveness_probe.as_ref(), container),
            ("/livez".to_owned(), listen_port)
        );
        assert_eq!(
            probe_target(container.readiness_probe.as_ref(), container),
            ("/readyz".to_owned(), listen_port)
        );
        let node_name = container
            .env
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|e| e.name == "NODE_NAME")
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(node_name, Some("spec.nodeName"), "{}", ctx("NODE_NAME"));

        let resources = container.resources.as_ref().unwrap();
        let quantity =
            |map: &Option<
                BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
            >,
             key: &str| { map.as_ref().and_then(|m| m.get(key)).map(|q| q.0.clone()) };
        // The values docs/install.md ("Resources") states, which it backs with measurements.
        let (requests, limits) = documented_resources();
        assert_eq!(
            (
                quantity(&resources.requests, "cpu"),
                quantity(&resources.requests, "memory")
            ),
            (Some(requests.0.clone()), Some(requests.1.clone())),
            "{variant}: requests"
        );
        assert_eq!(
            (
                quantity(&resources.limits, "cpu"),
                quantity(&resources.limits, "memory")
            ),
            (Some(limits.0.clone()), Some(limits.1.clone())),
            "{variant}: limits"
        );

        // Volumes: kubelet's pods directory read-only at the same path, HostToContainer (not
        // in probe-only, where the agent finds --kubelet-root's pods/ missing and checks no
        // disk); the config; nothing else from the host.
        let volumes = pod.volumes.as_deref().unwrap_or_default();
        let host_paths: Vec<_> = volumes.iter().filter(|v| v.host_path.is_some()).collect();
        let mounts = container.volume_mounts.as_deref().unwrap_or_default();
        for mount in mounts {
            assert_eq!(mount.read_only, Some(true), "{}", ctx(&mount.name));
            assert!(mount.sub_path.is_none() && mount.sub_path_expr.is_none());
        }
        if probe_only {
            assert!(host_paths.is_empty(), "{}", ctx("probe-only: no hostPath"));
            assert!(
                mounts
                    .iter()
                    .all(|m| !m.mount_path.starts_with(kubelet_root.as_str())),
                "{}",
                ctx("probe-only: nothing at the kubelet root")
            );
        } else {
            let [kubelet_pods] = &host_paths[..] else {
                panic!("{}", ctx("exactly one hostPath volume"));
            };
            let host_path = kubelet_pods.host_path.as_ref().unwrap();
            assert_eq!(host_path.path, format!("{kubelet_root}/pods"));
            assert_eq!(host_path.type_.as_deref(), Some("Directory"));
            let pods_mount = mounts.iter().find(|m| m.name == kubelet_pods.name).unwrap();
            assert_eq!(
                pods_mount.mount_path,
                host_path.path,
                "{}",
                ctx("same path")
            );
            assert_eq!(
                pods_mount.mount_propagation.as_deref(),
                Some("HostToContainer")
            );
        }
        let config_volume = volumes.iter().find(|v| v.config_map.is_some()).unwrap();
        let config_mount = mounts
            .iter()
            .find(|m| m.name == config_volume.name)
            .unwrap();
        assert_eq!(
            args["config"],
            format!("{}/mountlag.yaml", config_mount.mount_path)
        );
        let config_map = one(&docs, "ConfigMap", &variant);
        assert_eq!(
            config_map["metadata"]["name"],
            config_volume.config_map.as_ref().unwrap().name.as_str(),
            "{}",
            ctx("the DaemonSet mounts the rendered ConfigMap")
        );
        assert_eq!(config_map["metadata"]["namespace"], namespace.as_str());
        assert!(config_map["data"]["mountlag.yaml"].is_string());
    }
}

// --------------------------------------------------------------------------- Pod Security

/// Checks every overlay fails outside components/probe-only: docs/security.md names each and
/// says why. The kubelet-pods hostPath (baseline, and no restricted volume type) and uid 0
/// everywhere; hostPID and CAP_KILL where a controller is signalled.
fn privileged_checks(signals: bool) -> BTreeSet<&'static str> {
    let mut checks = BTreeSet::from([
        "hostPathVolumes",
        "restrictedVolumes",
        "runAsNonRoot",
        "runAsUser",
    ]);
    if signals {
        checks.extend(["hostNamespaces", "capabilities_restricted"]);
    }
    checks
}

/// Pod Security (tests/src/podsecurity.rs): every overlay with components/probe-only renders a
/// DaemonSet that meets `restricted`, in a namespace that enforces, audits and warns at
/// `restricted`; every other overlay fails exactly the documented checks and its namespace
/// admits `privileged` pods. Either way the label is the lowest level that admits the pod.
#[test]
fn the_pod_security_level_of_every_overlay_is_the_lowest_that_admits_its_daemonset() {
    if !can_render() {
        return;
    }
    let security = read("docs/security.md");
    let mut probe_only = Vec::new();
    for variant in variants() {
        let docs = documents(&render(&variant)).unwrap();
        let ds: DaemonSet = serde_json::from_value(one(&docs, "DaemonSet", &variant).clone())
            .unwrap_or_else(|e| panic!("{variant}: DaemonSet: {e}"));
        let found = podsecurity::violations(&ds.spec.unwrap().template);
        let level = podsecurity::lowest_admitting_level(&found);
        let labels = &one(&docs, "Namespace", &variant)["metadata"]["labels"];
        for mode in ["enforce", "audit", "warn"] {
            assert_eq!(
                labels[format!("pod-security.kubernetes.io/{mode}")],
                level.label(),
                "{variant}: the namespace's {mode} level is the lowest that admits the agent: \
                 {found:#?}"
            );
        }
        if uses_probe_only(&variant) {
            assert_eq!(found, vec![], "{variant}: probe-only meets `restricted`");
            probe_only.push(variant);
            continue;
        }
        let signals = config_of(&docs, &variant)
            .controllers
            .iter()
            .any(|c| matches!(c.reload, ReloadAction::Signal { .. }));
        let expected = privileged_checks(signals);
        assert_eq!(
            podsecurity::checks(&found),
            expected,
            "{variant}: the Pod Security checks it fails: {found:#?}"
        );
        assert_eq!(level, podsecurity::Level::Privileged, "{variant}");
        for check in expected {
            assert!(
                security.contains(&format!("`{check}`")),
                "docs/security.md says why {variant} fails `{check}`"
            );
        }
    }
    assert_eq!(
        probe_only,
        [
            "overlays/cluster-wide-secrets",
            "overlays/contour",
            "overlays/haproxy-ingress",
            "overlays/ingress-nginx",
            "overlays/istio",
            "overlays/traefik-crd",
        ],
        "the overlays of API-driven controllers are probe-only"
    );
}

// -------------------------------------------------------------------------- README table

/// The privileges cell of a probe-only row in README.md's install table.
const PROBE_ONLY_PRIVILEGES: &str =
    "probe-only: no hostPath, no hostPID, uid 65532, no capabilities, Pod Security `restricted`";

/// README.md's decision table ("Install on a cluster"): every kustomization it names is an
/// overlay that renders (and so is validated by the tests above), every overlay is in it, and
/// each row's privileges say what the overlay renders: probe-only or not, and the namespaces
/// its Secret reads cover.
#[test]
fn every_kustomization_in_the_readme_install_table_exists_renders_and_is_described() {
    if !can_render() {
        return;
    }
    let readme = read("README.md");
    let section = readme
        .split("\n## Install on a cluster\n")
        .nth(1)
        .expect("README.md has the section Install on a cluster");
    let table: Vec<&str> = section
        .lines()
        .skip_while(|l| !l.starts_with("| your controller | kustomization |"))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .collect();
    assert!(
        table.len() >= 10,
        "the table has a row per controller: {table:?}"
    );
    let mut listed = BTreeSet::new();
    for row in table {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let [_, kustomization, _, privileges] = cells[..] else {
            panic!("four cells: {row}");
        };
        let Some(path) = kustomization
            .split('`')
            .skip(1)
            .step_by(2)
            .find(|code| code.starts_with("deploy/"))
        else {
            continue; // your own overlay, not yet
        };
        let variant = path.strip_prefix("deploy/").unwrap().trim_end_matches('/');
        assert!(
            variants().iter().any(|v| v == variant),
            "README.md names {path}, which is not an overlay in deploy/overlays"
        );
        listed.insert(variant.to_owned());
        let docs = documents(&render(variant)).unwrap();
        assert!(!of_kind(&docs, "DaemonSet").is_empty(), "{path}");
        assert_eq!(
            privileges.starts_with(PROBE_ONLY_PRIVILEGES),
            uses_probe_only(variant),
            "{path}: the privileges cell says probe-only exactly when it is: {privileges}"
        );
        let user = rbac::daemonset_user(&docs).unwrap();
        let secrets = rbac::Rbac::from_documents(&docs)
            .unwrap()
            .grants(&user, "watch", "", "secrets");
        if secrets.cluster_wide {
            assert!(
                privileges.contains("every namespace"),
                "{path}: {privileges}"
            );
        }
        for ns in &secrets.namespaces {
            assert!(
                privileges.contains(&format!("Secret reads in `{ns}`")),
                "{path}: the privileges cell names the Secret namespace {ns}: {privileges}"
            );
        }
    }
    let all: BTreeSet<String> = variants().into_iter().collect();
    assert_eq!(listed, all, "README.md's install table lists every overlay");
}

// ------------------------------------------------------------------------- who reaches it

/// The scraper the shipped NetworkPolicy admits (docs/security.md, "Who can reach the agent").
const SCRAPER_NAMESPACE: &str = "monitoring";
const SCRAPER_LABELS: &[(&str, &str)] = &[("app.kubernetes.io/name", "prometheus")];

#[test]
fn the_network_policy_admits_only_the_node_and_the_scraper_to_the_health_port() {
    if !can_render() {
        return;
    }
    let security = read("docs/security.md");
    assert!(
        security.contains("## Who can reach the agent")
            && security.contains(SCRAPER_NAMESPACE)
            && security.contains("--status-listen=127.0.0.1:9978"),
        "docs/security.md documents the policy's inputs and the node-local /status"
    );
    for variant in variants() {
        let ctx = |what: &str| format!("{variant}: {what}");
        let docs = documents(&render(&variant)).unwrap();
        let ds: DaemonSet = serde_json::from_value(one(&docs, "DaemonSet", &variant).clone())
            .unwrap_or_else(|e| panic!("{variant}: DaemonSet: {e}"));
        let pod_labels = ds
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        // A NetworkPolicy does not apply to a pod in the node's network namespace.
        assert_ne!(
            pod.host_network,
            Some(true),
            "{}",
            ctx("the policy applies")
        );
        let container = &pod.containers[0];
        let args = args_of(container);
        let listen: SocketAddr = args["listen"].parse().unwrap();

        // /status only on loopback, which no policy is needed for and no port exposes.
        let status_listen: SocketAddr = args
            .get("status-listen")
            .unwrap_or_else(|| panic!("{}", ctx("--status-listen is set")))
            .parse()
            .unwrap();
        assert!(
            status_listen.ip().is_loopback(),
            "{}",
            ctx("/status node-local")
        );
        assert_eq!(
            status_listen.to_string(),
            "127.0.0.1:9978",
            "{}",
            ctx("the default `mountlag status` asks first")
        );
        assert!(
            container
                .ports
                .as_deref()
                .unwrap_or_default()
                .iter()
                .all(|p| p.container_port != i32::from(status_listen.port())),
            "{}",
            ctx("the node-local port is no container port")
        );

        let policy = one(&docs, "NetworkPolicy", &variant);
        assert_eq!(policy["apiVersion"], "networking.k8s.io/v1");
        assert_eq!(
            policy["metadata"]["namespace"],
            ds.metadata.namespace.as_deref().unwrap()
        );
        let spec = &policy["spec"];
        // It selects the agent's pods (its labels are a subset of the pod template's).
        let selector = spec["podSelector"]["matchLabels"].as_object().unwrap();
        assert!(!selector.is_empty(), "{}", ctx("selects by label"));
        for (key, value) in selector {
            assert_eq!(
                pod_labels.get(key).map(String::as_str),
                value.as_str(),
                "{}",
                ctx("the policy selects the agent pods")
            );
        }
        assert!(spec["podSelector"].get("matchExpressions").is_none());
        assert_eq!(
            spec["policyTypes"],
            serde_json::json!(["Ingress"]),
            "{}",
            ctx("ingress only: the agent's egress is its job")
        );
        // Exactly one rule: the scraper's pods, to the --listen port. The node needs no rule
        // (traffic from a pod's own node is always admitted); anything broader than the
        // scraper (no `from`, an empty selector, an ipBlock) would admit the pod network.
        let rules = spec["ingress"].as_array().unwrap();
        let [rule] = &rules[..] else {
            panic!("{}", ctx("one ingress rule"));
        };
        assert_eq!(
            rule["ports"],
            serde_json::json!([{"port": i64::from(listen.port()), "protocol": "TCP"}]),
            "{}",
            ctx("only the health port")
        );
        let peers = rule["from"].as_array().unwrap();
        let [peer] = &peers[..] else {
            panic!("{}", ctx("one peer: the scraper"));
        };
        assert!(peer.get("ipBlock").is_none());
        assert_eq!(
            peer["namespaceSelector"],
            serde_json::json!({"matchLabels": {"kubernetes.io/metadata.name": SCRAPER_NAMESPACE}}),
            "{}",
            ctx("the scraper's namespace")
        );
        let labels: serde_json::Map<String, Value> = SCRAPER_LABELS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        assert_eq!(
            peer["podSelector"],
            serde_json::json!({"matchLabels": labels}),
            "{}",
            ctx("the scraper's pods")
        );
    }
}

#[test]
fn every_rendered_configuration_passes_check_config() {
    if !can_render() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for variant in variants() {
        let docs = documents(&render(&variant)).unwrap();
        let text = one(&docs, "ConfigMap", &variant)["data"]["mountlag.yaml"]
            .as_str()
            .unwrap()
            .to_owned();
        let file = dir.path().join("mountlag.yaml");
        std::fs::write(&file, text).unwrap();
        let out = mountlag_testbed::agent::run(&["check-config", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{variant}: check-config: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `components/ingress-nodes` keeps the agent to nodes labelled `mountlag.io/ingress=true`,
/// on top of the base's own scheduling (Linux, the image's architectures).
#[test]
fn the_ingress_nodes_component_schedules_the_agent_only_on_labelled_nodes() {
    if !can_render() {
        return;
    }
    // kustomize wants relative paths: a user's kustomization two levels below the repository.
    std::fs::create_dir_all(repo().join("target")).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("kustomize-")
        .tempdir_in(repo().join("target"))
        .unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../deploy/overlays/nginx\ncomponents:\n  - ../../deploy/components/ingress-nodes\n",
    )
    .unwrap();
    let docs = documents(&rbac::render(dir.path()).unwrap()).unwrap();
    let ds: DaemonSet =
        serde_json::from_value(one(&docs, "DaemonSet", "ingress-nodes").clone()).unwrap();
    let pod = ds.spec.unwrap().template.spec.unwrap();
    let selector = pod.node_selector.unwrap_or_default();
    assert_eq!(
        selector.get("mountlag.io/ingress").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        selector.get("kubernetes.io/os").map(String::as_str),
        Some("linux")
    );
    let arch = serde_json::to_value(pod.affinity.unwrap()).unwrap();
    assert!(arch.to_string().contains("kubernetes.io/arch"), "{arch}");
}

/// There is no default install (no deploy/kustomization.yaml, deploy/README.md): the built-in
/// defaults run only in overlays/cluster-wide-secrets, probe-only and opt-in. Every entry of any
/// shipped kustomization that signals or calls a reload endpoint names the namespaces it may
/// act in, and so does the annotated example.
#[test]
fn the_built_in_defaults_run_only_probe_only_and_every_reloading_entry_names_its_namespaces() {
    use mountlag::config::{BuiltinProfile, Config};
    if !can_render() {
        return;
    }
    assert!(
        !repo().join("deploy/kustomization.yaml").exists(),
        "no top-level kustomization: `kubectl apply -k deploy/` must fail"
    );
    assert!(read("deploy/README.md").contains("no top-level kustomization"));
    let defaults = "overlays/cluster-wide-secrets";
    assert!(uses_probe_only(defaults), "{defaults} is probe-only");
    let config = config_of(&documents(&render(defaults)).unwrap(), defaults);
    assert_eq!(
        config.controllers,
        BuiltinProfile::default_controllers(),
        "{defaults} runs the built-in defaults"
    );
    for c in &config.controllers {
        assert_eq!(
            c.reload,
            ReloadAction::None,
            "{defaults}: {} reloads",
            c.name
        );
        assert!(
            c.namespaces.is_some(),
            "{defaults}: {} watches every namespace",
            c.name
        );
    }
    let example = Config::from_yaml(&read("docs/examples/mountlag.yaml"), "example").unwrap();
    let mut configs: Vec<(String, Config)> = vec![("docs/examples".to_string(), example)];
    for variant in variants() {
        let config = config_of(&documents(&render(&variant)).unwrap(), &variant);
        if variant != defaults {
            assert_ne!(
                config.controllers,
                BuiltinProfile::default_controllers(),
                "{variant}: only {defaults} runs the built-in defaults"
            );
        }
        configs.push((variant, config));
    }
    for (variant, config) in &configs {
        for c in config
            .controllers
            .iter()
            .filter(|c| c.reload != ReloadAction::None)
        {
            assert!(
                c.namespaces.as_ref().is_some_and(|n| !n.is_empty()),
                "{variant}: {} ({}) may act on pods in every namespace",
                c.name,
                c.reload
            );
        }
    }
}

// ---------------------------------------------------------------------------------- alerts

fn can_promtool() -> bool {
    real::require(
        "promtool (Debian package prometheus)",
        command_works("promtool", &["--version"]),
    )
}

fn promtool(args: &[&str], cwd: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn yaml(path: &str) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    if !can_promtool() {
        return;
    }
    let dir = repo().join("deploy/prometheus");
    promtool(&["check", "rules", "mountlag-rules.yaml"], &dir);
    promtool(&["test", "rules", "mountlag-rules.test.yaml"], &dir);
    // The PrometheusRule's groups are a valid rules file too.
    let tmp = tempfile::tempdir().unwrap();
    let groups = serde_json::json!({"groups": yaml("deploy/prometheus/prometheusrule.yaml")["spec"]["groups"]});
    std::fs::write(
        tmp.path().join("rules.yaml"),
        serde_yaml::to_string(&groups).unwrap(),
    )
    .unwrap();
    promtool(&["check", "rules", "rules.yaml"], tmp.path());
}

#[test]
fn the_prometheusrule_carries_exactly_the_groups_of_the_rules_file() {
    let plain = yaml("deploy/prometheus/mountlag-rules.yaml");
    let cr = yaml("deploy/prometheus/prometheusrule.yaml");
    assert_eq!(cr["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(cr["kind"], "PrometheusRule");
    assert_eq!(
        cr["spec"]["groups"], plain["groups"],
        "deploy/prometheus/prometheusrule.yaml spec.groups must equal mountlag-rules.yaml groups"
    );
}

/// GitHub's anchor for a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_has_a_runbook_and_unit_tests_that_fire_and_stay_quiet() {
    let rules = yaml("deploy/prometheus/mountlag-rules.yaml");
    let tests = yaml("deploy/prometheus/mountlag-rules.test.yaml");
    let operations = read("docs/operations.md");
    let anchors: Vec<String> = operations
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    let expected = [
        "MountlagSecretMountStuck",
        "MountlagReloadUnverified",
        "MountlagServedCertificateMismatch",
        "MountlagCertificateExpiringSoon",
        "MountlagRenewalNotServed",
        "MountlagInvalidCertificateMaterial",
        "MountlagAgentDown",
        "MountlagAgentNotReady",
        "MountlagApiErrors",
        "MountlagCertManagerFinding",
        "MountlagInotifyWatchesNearLimit",
        "MountlagControllerSelectsNoPod",
    ];
    let mut seen = std::collections::BTreeSet::new();
    for rule in rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        let name = rule["alert"].as_str().expect("only alerting rules");
        seen.insert(name.to_owned());
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("warning" | "critical")
            ),
            "{name}: severity"
        );
        for key in ["summary", "description"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{name}: {key}"
            );
        }
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        let (page, fragment) = url.split_once('#').unwrap();
        assert!(
            page.ends_with("/docs/operations.md"),
            "{name}: runbook in docs/operations.md: {url}"
        );
        assert_eq!(fragment, name.to_lowercase(), "{name}: anchor");
        assert!(
            anchors.iter().any(|a| a == fragment),
            "{name}: docs/operations.md has no heading for #{fragment}"
        );
    }
    assert_eq!(
        seen,
        expected.iter().map(|s| (*s).to_owned()).collect(),
        "the documented alerts"
    );
    for name in &seen {
        let cases: Vec<&Value> = tests["tests"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
            .filter(|c| c["alertname"] == name.as_str())
            .collect();
        let firing = cases
            .iter()
            .any(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()));
        let quiet = cases
            .iter()
            .any(|c| c["exp_alerts"].as_array().is_some_and(Vec::is_empty));
        assert!(
            firing && quiet,
            "{name}: unit tests firing ({firing}) and quiet ({quiet})"
        );
    }
}

// ------------------------------------------------------------------------- static binary

/// Whether an ELF executable needs a program interpreter or shared libraries.
fn dynamic_dependencies(elf: &[u8]) -> Result<Vec<String>, String> {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let mut needs = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        match u32_at(ph) {
            3 => needs.push("a program interpreter (PT_INTERP)".to_owned()),
            2 => {
                let (offset, size) = (u64_at(ph + 8), u64_at(ph + 32));
                for entry in (offset..offset + size).step_by(16) {
                    match u64_at(entry) {
                        0 => break,
                        1 => needs.push("a shared library (DT_NEEDED)".to_owned()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(needs)
}

fn output_of(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the image archive from `binary` with deploy/image/build, checks it with `skopeo
/// inspect` (architecture, entrypoint, user, labels) and runs `mountlag --version` from it with
/// podman (runc; crun refuses this machine's hybrid cgroup layout).
fn image_of(binary: &Path) {
    for tool in ["umoci", "skopeo", "podman", "runc"] {
        if !real::require(
            &format!("{tool} (Debian package {tool})"),
            command_works(tool, &["--version"]),
        ) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("mountlag.oci.tar");
    let version = env!("CARGO_PKG_VERSION");
    output_of(
        "deploy/image/build",
        &[
            "--binary",
            binary.to_str().unwrap(),
            "--output",
            archive.to_str().unwrap(),
        ],
    );
    let image = format!("oci-archive:{}:{version}", archive.display());
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let inspect: Value = serde_json::from_str(&output_of("skopeo", &["inspect", &image])).unwrap();
    assert_eq!(inspect["Architecture"], arch, "{inspect}");
    assert_eq!(inspect["Os"], "linux", "{inspect}");
    let labels = &inspect["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"], version,
        "{inspect}"
    );
    assert_eq!(
        labels["org.opencontainers.image.title"], "mountlag",
        "{inspect}"
    );
    assert!(
        labels["org.opencontainers.image.source"].is_string(),
        "{inspect}"
    );
    assert_eq!(
        inspect["Layers"].as_array().map(Vec::len),
        Some(1),
        "{inspect}"
    );
    let config: Value =
        serde_json::from_str(&output_of("skopeo", &["inspect", "--config", &image])).unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "{config}");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/mountlag"]),
        "{config}"
    );
    assert_eq!(c["Cmd"], serde_json::json!(["agent"]), "{config}");

    // podman's default RLIMIT_NOFILE and RLIMIT_NPROC are above what this sandbox allows (and
    // runc may not raise them): small limits, plenty for `--version`.
    let (nofile, nproc) = (1024, 1024);
    let storage = dir.path().join("storage");
    let run_root = dir.path().join("run");
    let out = output_of(
        "podman",
        &[
            "--root",
            storage.to_str().unwrap(),
            "--runroot",
            run_root.to_str().unwrap(),
            "--runtime",
            "runc",
            "run",
            "--rm",
            "--network=none",
            "--ulimit",
            &format!("nofile={nofile}:{nofile}"),
            "--ulimit",
            &format!("nproc={nproc}:{nproc}"),
            &image,
            "--version",
        ],
    );
    assert_eq!(out.trim(), format!("mountlag {version}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dockerfiles_static_binary_is_static_and_runs_the_shipped_daemonset_args() {
    if !can_render() {
        return;
    }
    let dockerfile = read("deploy/Dockerfile");
    assert!(
        dockerfile.contains(STATIC_BUILD),
        "deploy/Dockerfile builds with: {STATIC_BUILD}"
    );
    assert!(dockerfile.contains(r#"cp "target/$triple/release/mountlag" /mountlag"#));
    // cargo resolves every workspace member, so `docker build` fails on one left out.
    for member in workspace_member_dirs() {
        assert!(
            dockerfile.contains(&format!("COPY {member} {member}\n")),
            "deploy/Dockerfile does not copy workspace member {member}"
        );
    }
    let triple = host_triple();
    // Same command; its own target dir so it never waits for (or invalidates) the main build.
    let (rustflags, cargo_args) = STATIC_BUILD
        .strip_prefix("RUSTFLAGS=\"")
        .and_then(|s| s.split_once("\" cargo "))
        .unwrap();
    let target_dir = repo().join("target/static");
    let started = Instant::now();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(cargo_args.split_whitespace().map(|a| {
            if a == r#""$triple""# {
                triple.as_str()
            } else {
                a
            }
        }))
        .current_dir(repo())
        .env("RUSTFLAGS", rustflags)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{STATIC_BUILD} failed");
    eprintln!("static build: {:?}", started.elapsed());
    let binary = target_dir.join(&triple).join("release/mountlag");

    let needs = dynamic_dependencies(&std::fs::read(&binary).unwrap()).unwrap();
    assert!(needs.is_empty(), "{} needs {needs:?}", binary.display());
    if let Ok(out) = Command::new("ldd").arg(&binary).output() {
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("statically linked") || text.contains("not a dynamic executable"),
            "ldd: {text}"
        );
    }
    let out = Command::new(&binary).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("mountlag {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(&binary)
        .args(["check-config", "docs/examples/mountlag.yaml"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The same binary packed by deploy/image/build (no container engine): an OCI archive
    // that skopeo reads and podman runs.
    image_of(&binary);

    // The static agent, started with the rendered DaemonSet's arguments (paths and address
    // made local) and environment, talks to the API stand-in at 127.0.0.1 and gets ready.
    let docs = documents(&render(STATIC_AGENT_VARIANT)).unwrap();
    let ds: DaemonSet =
        serde_json::from_value(one(&docs, "DaemonSet", STATIC_AGENT_VARIANT).clone()).unwrap();
    let container = &ds.spec.unwrap().template.spec.unwrap().containers[0];
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mountlag.yaml");
    std::fs::write(
        &config,
        one(&docs, "ConfigMap", STATIC_AGENT_VARIANT)["data"]["mountlag.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("kubelet/pods")).unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let status_listen: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let args: Vec<String> = container
        .args
        .clone()
        .unwrap()
        .into_iter()
        .map(|a| match a.split_once('=') {
            Some(("--config", _)) => format!("--config={}", config.display()),
            Some(("--kubelet-root", _)) => {
                format!("--kubelet-root={}", dir.path().join("kubelet").display())
            }
            Some(("--listen", _)) => format!("--listen={listen}"),
            Some(("--status-listen", _)) => format!("--status-listen={status_listen}"),
            _ => a,
        })
        .collect();
    let api = ApiServer::start(ApiServerConfig::default()).await.unwrap();
    let log = dir.path().join("agent.log");
    let mut child = Command::new(&binary)
        .args(&args)
        .env("KUBECONFIG", api.kubeconfig_path())
        .env("NODE_NAME", "node-a")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let ready = loop {
        if let Ok((200, body)) = http_get(listen, "/readyz").await {
            break body;
        }
        if started.elapsed() > Duration::from_secs(10) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "the static agent did not get ready: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (code, _) = http_get(listen, "/livez").await.unwrap();
    // /status on the node-local listener only.
    let (public_status, _) = http_get(listen, "/status").await.unwrap();
    let (local_status, _) = http_get(status_listen, "/status").await.unwrap();
    // The idle footprint fits the DaemonSet's memory request (32Mi) with room to spare.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    eprintln!("static agent, idle and ready: VmRSS {rss_kib} KiB");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exit = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 200);
    assert_eq!((public_status, local_status), (404, 200));
    assert!(ready.contains("ready"), "{ready}");
    assert!(
        rss_kib < 16 * 1024,
        "idle RSS {rss_kib} KiB; the DaemonSet requests 32Mi"
    );
    assert_eq!(exit.code(), Some(0), "{text}");
    assert!(api.stats().count("watch", "pods") >= 1, "{text}");
    // --log-format=json, as the DaemonSet asks: one JSON object per line.
    for line in text.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

// ------------------------------------------------------------------- your own kustomization

/// `from`'s relative path to `to` (both absolute): kustomize refuses absolute resource paths.
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let ups = from.components().count() - 1;
    let mut path = PathBuf::new();
    for _ in 0..ups {
        path.push("..");
    }
    path.join(to.strip_prefix("/").unwrap())
}

/// docs/install.md: without the `kustomize` binary (not in Debian; kubectl has no `edit`), the
/// image is set with `images:` in a kustomization of one's own, and a changed `mountlag.yaml`
/// rolls the DaemonSet because the ConfigMap's generated name carries a hash of it.
#[test]
fn a_kustomization_of_ones_own_sets_the_image_and_a_config_change_rolls_the_daemonset() {
    if !can_render() {
        return;
    }
    let install = read("docs/install.md");
    for documented in [
        "images:\n  - name: ghcr.io/example/mountlag\n    newName: registry.example.com/mountlag\n",
        "configMapGenerator:\n  - name: mountlag-config\n    namespace: mountlag-system\n",
    ] {
        assert!(
            install.contains(documented),
            "docs/install.md shows {documented:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let deploy = rbac::deploy_dir().canonicalize().unwrap();
    let base = relative_path(&dir.path().canonicalize().unwrap(), &deploy.join("base"));
    let probe_only = relative_path(
        &dir.path().canonicalize().unwrap(),
        &deploy.join("components/probe-only"),
    );
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\n\
             components:\n  - {}\nconfigMapGenerator:\n  - name: mountlag-config\n    namespace: mountlag-system\n    files: [mountlag.yaml]\n\
             images:\n  - name: ghcr.io/example/mountlag\n    newName: registry.example.com/mountlag\n    newTag: 0.2.0\n",
            base.display(),
            probe_only.display()
        ),
    )
    .unwrap();
    let rendered = |config: &str| {
        std::fs::write(dir.path().join("mountlag.yaml"), config).unwrap();
        let docs = documents(&rbac::render(dir.path()).unwrap()).unwrap();
        let ds: DaemonSet = serde_json::from_value(one(&docs, "DaemonSet", "own").clone()).unwrap();
        let spec = ds.spec.unwrap().template.spec.unwrap();
        let image = spec.containers[0].image.clone().unwrap();
        let volume = spec
            .volumes
            .unwrap()
            .into_iter()
            .find_map(|v| v.config_map.map(|c| c.name))
            .unwrap();
        let configmap = one(&docs, "ConfigMap", "own")["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        (image, volume, configmap)
    };
    let first =
        "nudge:\n  enabled: false\ncontrollers:\n  - name: edge\n    profile: ingress-nginx\n";
    let (image, volume, configmap) = rendered(first);
    assert_eq!(image, "registry.example.com/mountlag:0.2.0");
    assert_eq!(
        volume, configmap,
        "the DaemonSet mounts the generated ConfigMap"
    );
    assert!(configmap.starts_with("mountlag-config-"), "{configmap}");
    let (_, volume_after, configmap_after) =
        rendered(&format!("{first}expiry:\n  warnBefore: 30d\n"));
    assert_eq!(volume_after, configmap_after);
    assert_ne!(
        configmap_after, configmap,
        "a changed configuration gets a new name"
    );
}

/// The DaemonSet schedules exactly on the architectures an image can be built for: those
/// `deploy/image/build` maps a build machine to, which are also the platforms of the
/// Dockerfile's documented multi-arch build. A new architecture in one and not the others would
/// put pods on nodes whose image does not exist (or leave nodes without an agent).
#[test]
fn the_daemonset_schedules_on_exactly_the_architectures_the_image_is_built_for() {
    let ds = yaml("deploy/base/daemonset.yaml");
    let terms = &ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    let scheduled: BTreeSet<String> = terms
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| {
            t["matchExpressions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|e| e["key"] == "kubernetes.io/arch" && e["operator"] == "In")
        .flat_map(|e| e["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert!(
        !scheduled.is_empty(),
        "no kubernetes.io/arch affinity: {terms}"
    );

    let build = read("deploy/image/build");
    let buildable: BTreeSet<String> = build
        .lines()
        .filter_map(|l| l.split_once(") arch=").map(|(_, a)| a))
        .map(|a| a.trim_end_matches([';', ' ']).to_owned())
        .collect();
    assert_eq!(
        scheduled, buildable,
        "deploy/base/daemonset.yaml kubernetes.io/arch vs deploy/image/build"
    );

    let dockerfile = read("deploy/Dockerfile");
    // `docker buildx build --platform linux/amd64,linux/arm64 ...` in its header.
    let words: Vec<&str> = dockerfile.split_whitespace().collect();
    let platforms: BTreeSet<String> = words
        .windows(2)
        .find(|w| w[0] == "--platform")
        .map(|w| {
            w[1].split(',')
                .filter_map(|p| p.strip_prefix("linux/"))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        scheduled, platforms,
        "deploy/base/daemonset.yaml kubernetes.io/arch vs deploy/Dockerfile's --platform"
    );
}

/// The directory of every workspace member, relative to the repository, as cargo resolves them.
fn workspace_member_dirs() -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = output_of(
        &cargo,
        &[
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ],
    );
    let metadata: serde_json::Value = serde_json::from_str(&out).unwrap();
    let dirs: Vec<String> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let manifest = Path::new(p["manifest_path"].as_str()?);
            let dir = manifest.parent()?.strip_prefix(repo()).ok()?;
            Some(dir.to_string_lossy().into_owned())
        })
        .collect();
    assert!(dirs.len() >= 3, "{dirs:?}");
    dirs
}
