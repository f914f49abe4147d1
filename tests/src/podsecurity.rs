//! The Pod Security Standards' `baseline` and `restricted` levels, checked on a pod template.
//!
//! <https://kubernetes.io/docs/concepts/security/pod-security-standards/>: every control that
//! a pod template can violate, named as the Pod Security admission controller names its checks
//! (`hostNamespaces`, `capabilities_restricted`, ...). `restricted` includes `baseline`:
//! [`violations`] returns both, each with its [`Level`], so [`lowest_admitting_level`] tells
//! which `pod-security.kubernetes.io/enforce` label admits the pod.
//!
//! Fields checked: `spec.securityContext` and every container's (containers, init and
//! ephemeral containers) `securityContext`, `spec.host{Network,PID,IPC}`, `spec.volumes`,
//! container `ports[*].hostPort`, and the template's AppArmor annotations
//! (`container.apparmor.security.beta.kubernetes.io/*`). Not modelled: the optional
//! relaxations for pods in a user namespace (`hostUsers: false`, feature gate
//! `UserNamespacesPodSecurityStandards`), and Windows-only fields other than `hostProcess`.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ContainerPort, PodSpec, PodTemplateSpec, SecurityContext};

/// A Pod Security level. `Privileged` has no rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Admits everything.
    Privileged,
    /// Prevents known privilege escalations.
    Baseline,
    /// Current pod hardening best practice.
    Restricted,
}

impl Level {
    /// The value of a `pod-security.kubernetes.io/*` namespace label.
    pub fn label(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// One control a pod template fails.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// The level whose rule it breaks (`Baseline` rules are `Restricted` rules too).
    pub level: Level,
    /// The check's name in the Pod Security admission controller.
    pub check: &'static str,
    /// Which field, and its value.
    pub detail: String,
}

/// Capabilities `baseline` lets a container add (the container runtimes' defaults).
pub const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls `baseline` allows (namespaced and isolated per pod); the last five since 1.27–1.29.
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// SELinux types `baseline` allows (besides none); `container_engine_t` since 1.31.
pub const SELINUX_TYPES: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// Volume sources `restricted` allows.
pub const RESTRICTED_VOLUME_TYPES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

const APPARMOR_ANNOTATION: &str = "container.apparmor.security.beta.kubernetes.io/";

/// A container of any kind, as far as Pod Security looks at it.
struct ContainerView<'a> {
    what: String,
    security: Option<&'a SecurityContext>,
    ports: &'a [ContainerPort],
}

fn containers(spec: &PodSpec) -> Vec<ContainerView<'_>> {
    let mut out = Vec::new();
    for c in &spec.containers {
        out.push(ContainerView {
            what: format!("containers[{}]", c.name),
            security: c.security_context.as_ref(),
            ports: c.ports.as_deref().unwrap_or_default(),
        });
    }
    for c in spec.init_containers.as_deref().unwrap_or_default() {
        out.push(ContainerView {
            what: format!("initContainers[{}]", c.name),
            security: c.security_context.as_ref(),
            ports: c.ports.as_deref().unwrap_or_default(),
        });
    }
    for c in spec.ephemeral_containers.as_deref().unwrap_or_default() {
        out.push(ContainerView {
            what: format!("ephemeralContainers[{}]", c.name),
            security: c.security_context.as_ref(),
            ports: c.ports.as_deref().unwrap_or_default(),
        });
    }
    out
}

/// Every `baseline` and `restricted` control `template` fails, sorted by level and check.
pub fn violations(template: &PodTemplateSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut add = |level: Level, check: &'static str, detail: String| {
        out.push(Violation {
            level,
            check,
            detail,
        });
    };
    let empty = PodSpec::default();
    let spec = template.spec.as_ref().unwrap_or(&empty);
    let pod = spec.security_context.clone().unwrap_or_default();
    let boxes = containers(spec);
    use Level::{Baseline, Restricted};

    // ---- baseline
    let host_process = |w: Option<&k8s_openapi::api::core::v1::WindowsSecurityContextOptions>| {
        w.and_then(|w| w.host_process) == Some(true)
    };
    if host_process(pod.windows_options.as_ref()) {
        add(
            Baseline,
            "hostProcess",
            "securityContext.windowsOptions.hostProcess: true".into(),
        );
    }
    for (field, value) in [
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
        ("hostIPC", spec.host_ipc),
    ] {
        if value == Some(true) {
            add(Baseline, "hostNamespaces", format!("{field}: true"));
        }
    }
    for b in &boxes {
        let Some(sc) = b.security else { continue };
        if host_process(sc.windows_options.as_ref()) {
            add(
                Baseline,
                "hostProcess",
                format!(
                    "{}.securityContext.windowsOptions.hostProcess: true",
                    b.what
                ),
            );
        }
        if sc.privileged == Some(true) {
            add(
                Baseline,
                "privileged",
                format!("{}.securityContext.privileged: true", b.what),
            );
        }
        let added = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.add.clone())
            .unwrap_or_default();
        let beyond: Vec<&String> = added
            .iter()
            .filter(|c| !BASELINE_CAPABILITIES.contains(&c.as_str()))
            .collect();
        if !beyond.is_empty() {
            add(
                Baseline,
                "capabilities_baseline",
                format!("{}.securityContext.capabilities.add: {beyond:?}", b.what),
            );
        }
        if let Some(proc_mount) = sc.proc_mount.as_deref()
            && proc_mount != "Default"
        {
            add(
                Baseline,
                "procMount",
                format!("{}.securityContext.procMount: {proc_mount}", b.what),
            );
        }
    }
    for b in &boxes {
        for port in b.ports {
            if port.host_port.is_some_and(|p| p != 0) {
                add(
                    Baseline,
                    "hostPorts",
                    format!(
                        "{}.ports[{}].hostPort: {:?}",
                        b.what, port.container_port, port.host_port
                    ),
                );
            }
        }
    }
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    for volume in volumes {
        if volume.host_path.is_some() {
            add(
                Baseline,
                "hostPathVolumes",
                format!("volumes[{}].hostPath", volume.name),
            );
        }
    }
    // AppArmor: the field (1.30+) at both levels, and the older annotations.
    let mut apparmor: Vec<(String, String)> = Vec::new();
    if let Some(p) = &pod.app_armor_profile {
        apparmor.push(("securityContext.appArmorProfile".into(), p.type_.clone()));
    }
    for b in &boxes {
        if let Some(p) = b.security.and_then(|s| s.app_armor_profile.as_ref()) {
            apparmor.push((
                format!("{}.securityContext.appArmorProfile", b.what),
                p.type_.clone(),
            ));
        }
    }
    for (field, kind) in apparmor {
        if kind != "RuntimeDefault" && kind != "Localhost" {
            add(Baseline, "appArmorProfile", format!("{field}.type: {kind}"));
        }
    }
    let annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    for (key, value) in &annotations {
        if key.starts_with(APPARMOR_ANNOTATION)
            && value != "runtime/default"
            && !value.starts_with("localhost/")
        {
            add(
                Baseline,
                "appArmorProfile",
                format!("annotation {key}: {value}"),
            );
        }
    }
    let mut selinux = Vec::new();
    if let Some(o) = &pod.se_linux_options {
        selinux.push(("securityContext.seLinuxOptions".to_owned(), o));
    }
    for b in &boxes {
        if let Some(o) = b.security.and_then(|s| s.se_linux_options.as_ref()) {
            selinux.push((format!("{}.securityContext.seLinuxOptions", b.what), o));
        }
    }
    for (field, o) in selinux {
        if let Some(t) = o.type_.as_deref()
            && !t.is_empty()
            && !SELINUX_TYPES.contains(&t)
        {
            add(Baseline, "seLinuxOptions", format!("{field}.type: {t}"));
        }
        for (key, value) in [("user", &o.user), ("role", &o.role)] {
            if value.as_deref().is_some_and(|v| !v.is_empty()) {
                add(
                    Baseline,
                    "seLinuxOptions",
                    format!("{field}.{key}: {}", value.as_deref().unwrap_or_default()),
                );
            }
        }
    }
    let pod_seccomp = pod.seccomp_profile.as_ref().map(|s| s.type_.as_str());
    if pod_seccomp == Some("Unconfined") {
        add(
            Baseline,
            "seccompProfile_baseline",
            "securityContext.seccompProfile.type: Unconfined".into(),
        );
    }
    for b in &boxes {
        if b.security
            .and_then(|s| s.seccomp_profile.as_ref())
            .is_some_and(|s| s.type_ == "Unconfined")
        {
            add(
                Baseline,
                "seccompProfile_baseline",
                format!("{}.securityContext.seccompProfile.type: Unconfined", b.what),
            );
        }
    }
    for sysctl in pod.sysctls.as_deref().unwrap_or_default() {
        if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
            add(
                Baseline,
                "sysctls",
                format!("securityContext.sysctls: {}", sysctl.name),
            );
        }
    }

    // ---- restricted
    for volume in volumes {
        let source = serde_json::to_value(volume).unwrap_or_default();
        let kinds: Vec<String> = source
            .as_object()
            .map(|o| o.keys().filter(|k| *k != "name").cloned().collect())
            .unwrap_or_default();
        for kind in kinds {
            if !RESTRICTED_VOLUME_TYPES.contains(&kind.as_str()) {
                add(
                    Restricted,
                    "restrictedVolumes",
                    format!("volumes[{}]: {kind}", volume.name),
                );
            }
        }
    }
    for b in &boxes {
        let sc = b.security;
        if sc.and_then(|s| s.allow_privilege_escalation) != Some(false) {
            add(
                Restricted,
                "allowPrivilegeEscalation",
                format!(
                    "{}.securityContext.allowPrivilegeEscalation is not false",
                    b.what
                ),
            );
        }
        // runAsNonRoot: the container's own value, else the pod's; it must end up true. An
        // explicit pod-level false is reported once, below.
        match sc.and_then(|s| s.run_as_non_root) {
            Some(true) => {}
            Some(false) => add(
                Restricted,
                "runAsNonRoot",
                format!("{}.securityContext.runAsNonRoot: false", b.what),
            ),
            None if pod.run_as_non_root.is_some() => {}
            None => add(
                Restricted,
                "runAsNonRoot",
                format!("{}: runAsNonRoot set neither here nor for the pod", b.what),
            ),
        }
        if sc.and_then(|s| s.run_as_user) == Some(0) {
            add(
                Restricted,
                "runAsUser",
                format!("{}.securityContext.runAsUser: 0", b.what),
            );
        }
        // seccomp: the container's own type, else the pod's (an invalid pod-level type is
        // reported once, below).
        match sc
            .and_then(|s| s.seccomp_profile.as_ref())
            .map(|s| s.type_.as_str())
        {
            Some("RuntimeDefault" | "Localhost") => {}
            Some(kind) => add(
                Restricted,
                "seccompProfile_restricted",
                format!("{}.securityContext.seccompProfile.type: {kind}", b.what),
            ),
            None if pod_seccomp.is_some() => {}
            None => add(
                Restricted,
                "seccompProfile_restricted",
                format!(
                    "{}: seccompProfile set neither here nor for the pod",
                    b.what
                ),
            ),
        }
        let caps = sc.and_then(|s| s.capabilities.as_ref());
        let dropped: BTreeSet<&str> = caps
            .and_then(|c| c.drop.as_deref())
            .unwrap_or_default()
            .iter()
            .map(String::as_str)
            .collect();
        if !dropped.contains("ALL") {
            add(
                Restricted,
                "capabilities_restricted",
                format!("{}.securityContext.capabilities.drop lacks ALL", b.what),
            );
        }
        let beyond: Vec<&String> = caps
            .and_then(|c| c.add.as_deref())
            .unwrap_or_default()
            .iter()
            .filter(|c| *c != "NET_BIND_SERVICE")
            .collect();
        if !beyond.is_empty() {
            add(
                Restricted,
                "capabilities_restricted",
                format!("{}.securityContext.capabilities.add: {beyond:?}", b.what),
            );
        }
    }
    if pod.run_as_non_root == Some(false) {
        add(
            Restricted,
            "runAsNonRoot",
            "securityContext.runAsNonRoot: false".into(),
        );
    }
    if let Some(kind) = pod_seccomp
        && kind != "RuntimeDefault"
        && kind != "Localhost"
    {
        add(
            Restricted,
            "seccompProfile_restricted",
            format!("securityContext.seccompProfile.type: {kind}"),
        );
    }
    if pod.run_as_user == Some(0) {
        add(
            Restricted,
            "runAsUser",
            "securityContext.runAsUser: 0".into(),
        );
    }
    out.sort();
    out
}

/// The lowest level that admits a pod with these violations: `restricted` with none,
/// `baseline` with only `restricted` ones, `privileged` otherwise.
pub fn lowest_admitting_level(violations: &[Violation]) -> Level {
    if violations.iter().any(|v| v.level == Level::Baseline) {
        Level::Privileged
    } else if violations.is_empty() {
        Level::Restricted
    } else {
        Level::Baseline
    }
}

/// The names of the checks among `violations`, each once.
pub fn checks(violations: &[Violation]) -> BTreeSet<&'static str> {
    violations.iter().map(|v| v.check).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::{Value, json};

    /// A pod template that meets `restricted`, as components/probe-only renders it.
    fn good() -> Value {
        json!({
            "metadata": {"labels": {"app": "x"}},
            "spec": {
                "securityContext": {
                    "runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [{
                    "name": "agent",
                    "image": "x",
                    "ports": [{"containerPort": 9977}],
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/x"}],
                }],
                "volumes": [
                    {"name": "config", "configMap": {"name": "c"}},
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "token", "projected": {"sources": []}},
                ],
            },
        })
    }

    fn check(template: &Value) -> Vec<Violation> {
        violations(&serde_json::from_value(template.clone()).unwrap())
    }

    /// `good()` changed at one JSON pointer (created if missing).
    fn with(pointer: &str, value: Value) -> Value {
        let mut doc = good();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let mut target = &mut doc;
        for part in parent.split('/').skip(1) {
            target = match part.parse::<usize>() {
                Ok(i) => &mut target[i],
                Err(_) => {
                    if target.get(part).is_none() {
                        target[part] = json!({});
                    }
                    &mut target[part]
                }
            };
        }
        match key.parse::<usize>() {
            Ok(i) if target.is_array() => target[i] = value,
            _ => target[key] = value,
        }
        doc
    }

    fn only(template: &Value, level: Level, expected: &str) {
        let found = check(template);
        assert!(
            !found.is_empty()
                && found
                    .iter()
                    .all(|v| v.check == expected && v.level == level),
            "expected only {expected} ({level:?}), found {found:?}\n{template:#}"
        );
    }

    #[test]
    fn a_hardened_template_has_no_violation() {
        assert_eq!(check(&good()), vec![]);
        assert_eq!(lowest_admitting_level(&check(&good())), Level::Restricted);
        // Allowed values stay allowed.
        for allowed in [
            with(
                "/spec/containers/0/securityContext/capabilities/add",
                json!(["NET_BIND_SERVICE"]),
            ),
            with(
                "/spec/securityContext/seccompProfile",
                json!({"type": "Localhost", "localhostProfile": "p.json"}),
            ),
            with(
                "/spec/securityContext/sysctls",
                json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]),
            ),
            with(
                "/spec/securityContext/seLinuxOptions",
                json!({"type": "container_init_t", "level": "s0:c1"}),
            ),
            with(
                "/spec/securityContext/appArmorProfile",
                json!({"type": "RuntimeDefault"}),
            ),
            with(
                "/metadata/annotations",
                json!({"container.apparmor.security.beta.kubernetes.io/agent": "localhost/p"}),
            ),
            with(
                "/spec/containers/0/securityContext/procMount",
                json!("Default"),
            ),
            with("/spec/containers/0/ports/0/hostPort", json!(0)),
            with("/spec/hostPID", json!(false)),
            with(
                "/spec/volumes/1",
                json!({"name": "pvc", "persistentVolumeClaim": {"claimName": "c"}}),
            ),
        ] {
            assert_eq!(check(&allowed), vec![], "{allowed:#}");
        }
    }

    #[test]
    fn each_baseline_control_fails_on_its_own() {
        let cases: &[(&str, Value, &str)] = &[
            ("/spec/hostPID", json!(true), "hostNamespaces"),
            ("/spec/hostNetwork", json!(true), "hostNamespaces"),
            ("/spec/hostIPC", json!(true), "hostNamespaces"),
            (
                "/spec/containers/0/securityContext/privileged",
                json!(true),
                "privileged",
            ),
            (
                "/spec/containers/0/securityContext/procMount",
                json!("Unmasked"),
                "procMount",
            ),
            (
                "/spec/containers/0/ports/0/hostPort",
                json!(9977),
                "hostPorts",
            ),
            (
                "/spec/securityContext/appArmorProfile",
                json!({"type": "Unconfined"}),
                "appArmorProfile",
            ),
            (
                "/spec/containers/0/securityContext/appArmorProfile",
                json!({"type": "Unconfined"}),
                "appArmorProfile",
            ),
            (
                "/metadata/annotations",
                json!({"container.apparmor.security.beta.kubernetes.io/agent": "unconfined"}),
                "appArmorProfile",
            ),
            (
                "/spec/securityContext/seLinuxOptions",
                json!({"type": "spc_t"}),
                "seLinuxOptions",
            ),
            (
                "/spec/containers/0/securityContext/seLinuxOptions",
                json!({"user": "system_u"}),
                "seLinuxOptions",
            ),
            (
                "/spec/securityContext/seLinuxOptions",
                json!({"role": "system_r"}),
                "seLinuxOptions",
            ),
            (
                "/spec/securityContext/sysctls",
                json!([{"name": "kernel.msgmax", "value": "1"}]),
                "sysctls",
            ),
            (
                "/spec/securityContext/windowsOptions",
                json!({"hostProcess": true}),
                "hostProcess",
            ),
        ];
        for (pointer, value, expected) in cases {
            only(&with(pointer, value.clone()), Level::Baseline, expected);
            assert_eq!(
                lowest_admitting_level(&check(&with(pointer, value.clone()))),
                Level::Privileged
            );
        }
    }

    #[test]
    fn baseline_controls_that_come_with_a_restricted_one() {
        // A hostPath volume is also not a restricted volume type.
        let host_path = with(
            "/spec/volumes/1",
            json!({"name": "pods", "hostPath": {"path": "/var/lib/kubelet/pods"}}),
        );
        assert_eq!(
            checks(&check(&host_path)),
            BTreeSet::from(["hostPathVolumes", "restrictedVolumes"])
        );
        // A capability beyond the default set breaks both capability rules.
        let sys_admin = with(
            "/spec/containers/0/securityContext/capabilities/add",
            json!(["SYS_ADMIN"]),
        );
        assert_eq!(
            checks(&check(&sys_admin)),
            BTreeSet::from(["capabilities_baseline", "capabilities_restricted"])
        );
        // Unconfined seccomp, at the pod or the container.
        for pointer in [
            "/spec/securityContext/seccompProfile",
            "/spec/containers/0/securityContext/seccompProfile",
        ] {
            let unconfined = with(pointer, json!({"type": "Unconfined"}));
            assert_eq!(
                checks(&check(&unconfined)),
                BTreeSet::from(["seccompProfile_baseline", "seccompProfile_restricted"]),
                "{pointer}"
            );
        }
    }

    #[test]
    fn each_restricted_control_fails_on_its_own() {
        let cases: &[(&str, Value, &str)] = &[
            (
                "/spec/volumes/1",
                json!({"name": "nfs", "nfs": {"server": "s", "path": "/"}}),
                "restrictedVolumes",
            ),
            (
                "/spec/volumes/1",
                json!({"name": "git", "gitRepo": {"repository": "r"}}),
                "restrictedVolumes",
            ),
            (
                "/spec/containers/0/securityContext/allowPrivilegeEscalation",
                json!(true),
                "allowPrivilegeEscalation",
            ),
            (
                "/spec/containers/0/securityContext/allowPrivilegeEscalation",
                Value::Null,
                "allowPrivilegeEscalation",
            ),
            (
                "/spec/securityContext/runAsNonRoot",
                json!(false),
                "runAsNonRoot",
            ),
            (
                "/spec/securityContext/runAsNonRoot",
                Value::Null,
                "runAsNonRoot",
            ),
            (
                "/spec/containers/0/securityContext/runAsNonRoot",
                json!(false),
                "runAsNonRoot",
            ),
            ("/spec/securityContext/runAsUser", json!(0), "runAsUser"),
            (
                "/spec/containers/0/securityContext/runAsUser",
                json!(0),
                "runAsUser",
            ),
            (
                "/spec/securityContext/seccompProfile",
                Value::Null,
                "seccompProfile_restricted",
            ),
            (
                "/spec/containers/0/securityContext/capabilities/drop",
                json!(["NET_RAW"]),
                "capabilities_restricted",
            ),
            (
                "/spec/containers/0/securityContext/capabilities",
                Value::Null,
                "capabilities_restricted",
            ),
            // In the baseline set, so only restricted refuses it: the agent's CAP_KILL.
            (
                "/spec/containers/0/securityContext/capabilities/add",
                json!(["KILL"]),
                "capabilities_restricted",
            ),
        ];
        for (pointer, value, expected) in cases {
            let template = with(pointer, value.clone());
            only(&template, Level::Restricted, expected);
            assert_eq!(
                lowest_admitting_level(&check(&template)),
                Level::Baseline,
                "{pointer}"
            );
        }
    }

    #[test]
    fn container_values_override_the_pods_and_init_containers_count() {
        // Pod-level runAsNonRoot unset, but the container sets it: admitted.
        let mut t = with("/spec/securityContext/runAsNonRoot", Value::Null);
        t["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = json!(true);
        assert_eq!(check(&t), vec![]);
        // Pod-level seccomp unset, the container sets RuntimeDefault: admitted.
        let mut t = with("/spec/securityContext/seccompProfile", Value::Null);
        t["spec"]["containers"][0]["securityContext"]["seccompProfile"] =
            json!({"type": "RuntimeDefault"});
        assert_eq!(check(&t), vec![]);
        // An init container without any hardening is checked like a container.
        let mut t = good();
        t["spec"]["initContainers"] = json!([{"name": "init", "image": "x"}]);
        let found = check(&t);
        assert_eq!(
            checks(&found),
            BTreeSet::from(["allowPrivilegeEscalation", "capabilities_restricted"]),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .all(|v| v.detail.contains("initContainers[init]")),
            "{found:?}"
        );
    }

    #[test]
    fn the_base_daemonset_fails_for_hostpid_the_hostpath_uid_0_and_cap_kill_only() {
        // hostPID, the kubelet-pods hostPath, uid 0 and CAP_KILL, as deploy/base renders it.
        let mut t = with(
            "/spec/volumes/1",
            json!({"name": "kubelet-pods", "hostPath": {"path": "/var/lib/kubelet/pods", "type": "Directory"}}),
        );
        t["spec"]["hostPID"] = json!(true);
        t["spec"]["securityContext"] = json!({
            "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": false,
            "seccompProfile": {"type": "RuntimeDefault"},
        });
        t["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["KILL"]);
        let found = check(&t);
        assert_eq!(
            checks(&found),
            BTreeSet::from([
                "capabilities_restricted",
                "hostNamespaces",
                "hostPathVolumes",
                "restrictedVolumes",
                "runAsNonRoot",
                "runAsUser",
            ]),
            "{found:#?}"
        );
        assert_eq!(lowest_admitting_level(&found), Level::Privileged);
    }
}
