//! The RBAC of `deploy/`, enforced by the API stand-in.
//!
//! [`Rbac`] is built from rendered manifests (`kubectl kustomize deploy/...`): every
//! `ClusterRole`, `Role`, `ClusterRoleBinding` and `RoleBinding` in them. It implements the
//! stand-in's [`Authorizer`] with Kubernetes' RBAC semantics, so an end-to-end test can run the
//! real agent under exactly the rules a user installs:
//!
//! - a `ClusterRoleBinding` grants its `ClusterRole`'s rules in every namespace and at the
//!   cluster scope; a `RoleBinding` grants its `Role` (same namespace) or `ClusterRole` only
//!   for requests in its own namespace;
//! - subjects: `User` by name, `Group` by the caller's groups (a ServiceAccount user
//!   `system:serviceaccount:<ns>:<name>` is also in `system:serviceaccounts` and
//!   `system:serviceaccounts:<ns>`), `ServiceAccount` by that user name;
//! - a rule matches when its `verbs`, `apiGroups` and `resources` (`*`, `res`, `res/sub`,
//!   `*/sub`) cover the request, and `resourceNames`, when given, contain the request's object
//!   name (so they never match a list, watch or create, as in Kubernetes);
//! - `nonResourceURLs` (exact, `prefix*` or `*`) for non-resource requests such as `/version`.
//!
//! Not modelled: aggregated ClusterRoles (`aggregationRule`), `escalate`/`bind`/`impersonate`,
//! and the API server's turning a `fieldSelector=metadata.name=<n>` list/watch into a
//! named request (the stand-in's attributes carry no name for lists, so a `resourceNames` rule
//! is stricter here than in Kubernetes: it can only be too strict, never too lax).
//! Kubernetes' default `system:discovery` grant can be added with
//! [`Rbac::with_kubernetes_defaults`]; [`Rbac::with_superuser`] exempts a test's own client.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use serde_json::Value;

use crate::apiserver::{Authorizer, Decision, Identity, RequestAttributes};

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("deploy"), |root| root.join("deploy"))
}

/// `Ok` when `kubectl kustomize` can run (for [`crate::real::require`]).
pub fn kubectl_available() -> Result<(), String> {
    match Command::new("kubectl")
        .args(["version", "--client"])
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`kubectl version --client` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(err) => Err(format!("kubectl is not installed ({err})")),
    }
}

/// `kubectl kustomize <dir>`: the manifests a user installs with `kubectl apply -k <dir>`.
pub fn render(kustomization: &Path) -> anyhow::Result<String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(kustomization)
        .output()
        .context("running kubectl kustomize")?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize {} failed: {}",
            kustomization.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("kubectl kustomize printed non-UTF-8")
}

/// Every non-empty document of a multi-document YAML stream, as JSON values.
pub fn documents(yaml: &str) -> anyhow::Result<Vec<Value>> {
    use serde::Deserialize as _;
    let mut docs = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value = Value::deserialize(doc).with_context(|| format!("YAML document {index}"))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The documents of `kind`.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The user name Kubernetes gives a ServiceAccount's tokens.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The user the rendered DaemonSet's pods run as (its `serviceAccountName` in its namespace).
pub fn daemonset_user(docs: &[Value]) -> anyhow::Result<String> {
    let [ds] = of_kind(docs, "DaemonSet")[..] else {
        bail!("expected exactly one DaemonSet in the manifests");
    };
    let namespace = ds["metadata"]["namespace"]
        .as_str()
        .context("the DaemonSet has no namespace")?;
    let account = ds["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .context("the DaemonSet names no serviceAccountName")?;
    Ok(service_account_user(namespace, account))
}

/// A `Role` (with its namespace) or a `ClusterRole`.
#[derive(Debug, Clone, PartialEq)]
pub struct RbacRole {
    /// `Role` or `ClusterRole`.
    pub kind: String,
    pub name: String,
    /// `None` for a ClusterRole.
    pub namespace: Option<String>,
    pub rules: Vec<PolicyRule>,
}

/// A `RoleBinding` (with its namespace) or a `ClusterRoleBinding`.
#[derive(Debug, Clone, PartialEq)]
pub struct RbacBinding {
    /// `RoleBinding` or `ClusterRoleBinding`.
    pub kind: String,
    pub name: String,
    /// `None` for a ClusterRoleBinding.
    pub namespace: Option<String>,
    pub role_ref: RoleRef,
    pub subjects: Vec<Subject>,
}

impl RbacBinding {
    fn label(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// RBAC rules and bindings: an [`Authorizer`] for the API stand-in.
#[derive(Debug, Clone, Default)]
pub struct Rbac {
    pub roles: Vec<RbacRole>,
    pub bindings: Vec<RbacBinding>,
    superusers: BTreeSet<String>,
}

impl Rbac {
    /// The roles and bindings among rendered manifests (other kinds are ignored).
    pub fn from_yaml(yaml: &str) -> anyhow::Result<Self> {
        Self::from_documents(&documents(yaml)?)
    }

    /// The roles and bindings among parsed documents (other kinds are ignored).
    pub fn from_documents(docs: &[Value]) -> anyhow::Result<Self> {
        let mut rbac = Rbac::default();
        for doc in docs {
            let kind = doc["kind"].as_str().unwrap_or_default();
            let what = || {
                format!(
                    "{kind} {}",
                    doc["metadata"]["name"].as_str().unwrap_or("<unnamed>")
                )
            };
            match kind {
                "ClusterRole" => {
                    let role: ClusterRole =
                        serde_json::from_value(doc.clone()).with_context(what)?;
                    if role.aggregation_rule.is_some() {
                        bail!("{}: aggregated ClusterRoles are not modelled", what());
                    }
                    rbac.roles.push(RbacRole {
                        kind: kind.into(),
                        name: role.metadata.name.context("a ClusterRole without name")?,
                        namespace: None,
                        rules: role.rules.unwrap_or_default(),
                    });
                }
                "Role" => {
                    let role: Role = serde_json::from_value(doc.clone()).with_context(what)?;
                    rbac.roles.push(RbacRole {
                        kind: kind.into(),
                        name: role.metadata.name.context("a Role without name")?,
                        namespace: Some(
                            role.metadata
                                .namespace
                                .with_context(|| format!("{}: no namespace", what()))?,
                        ),
                        rules: role.rules.unwrap_or_default(),
                    });
                }
                "ClusterRoleBinding" => {
                    let binding: ClusterRoleBinding =
                        serde_json::from_value(doc.clone()).with_context(what)?;
                    if binding.role_ref.kind != "ClusterRole" {
                        bail!(
                            "{}: a ClusterRoleBinding must refer to a ClusterRole",
                            what()
                        );
                    }
                    rbac.bindings.push(RbacBinding {
                        kind: kind.into(),
                        name: binding.metadata.name.context("a binding without name")?,
                        namespace: None,
                        role_ref: binding.role_ref,
                        subjects: binding.subjects.unwrap_or_default(),
                    });
                }
                "RoleBinding" => {
                    let binding: RoleBinding =
                        serde_json::from_value(doc.clone()).with_context(what)?;
                    rbac.bindings.push(RbacBinding {
                        kind: kind.into(),
                        name: binding.metadata.name.context("a binding without name")?,
                        namespace: Some(
                            binding
                                .metadata
                                .namespace
                                .with_context(|| format!("{}: no namespace", what()))?,
                        ),
                        role_ref: binding.role_ref,
                        subjects: binding.subjects.unwrap_or_default(),
                    });
                }
                _ => {}
            }
        }
        Ok(rbac)
    }

    /// Adds what every Kubernetes cluster grants every authenticated user: the
    /// `system:discovery` and `system:public-info-viewer` non-resource URLs (`/api`, `/apis`,
    /// `/version`, `/healthz`, ...).
    pub fn with_kubernetes_defaults(mut self) -> Self {
        let urls = [
            "/api",
            "/api/*",
            "/apis",
            "/apis/*",
            "/healthz",
            "/livez",
            "/readyz",
            "/version",
            "/version/",
            "/openapi",
            "/openapi/*",
        ];
        self.roles.push(RbacRole {
            kind: "ClusterRole".into(),
            name: "system:discovery".into(),
            namespace: None,
            rules: vec![PolicyRule {
                verbs: vec!["get".into()],
                non_resource_urls: Some(urls.iter().map(|u| (*u).to_owned()).collect()),
                ..PolicyRule::default()
            }],
        });
        self.bindings.push(RbacBinding {
            kind: "ClusterRoleBinding".into(),
            name: "system:discovery".into(),
            namespace: None,
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "system:discovery".into(),
            },
            subjects: vec![Subject {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Group".into(),
                name: "system:authenticated".into(),
                namespace: None,
            }],
        });
        self
    }

    /// Lets `user` do anything (a test's own admin client).
    pub fn with_superuser(mut self, user: &str) -> Self {
        self.superusers.insert(user.to_owned());
        self
    }

    /// Removes `verb` on `resource` of `api_group` from every rule that grants it explicitly
    /// (wildcards are left alone) and drops rules left without verbs. Returns how many rules
    /// changed.
    pub fn revoke(&mut self, verb: &str, api_group: &str, resource: &str) -> usize {
        let mut changed = 0;
        for role in &mut self.roles {
            for rule in &mut role.rules {
                let covers_resource = contains(rule.api_groups.as_deref(), api_group)
                    && contains(rule.resources.as_deref(), resource);
                if covers_resource && rule.verbs.iter().any(|v| v == verb) {
                    rule.verbs.retain(|v| v != verb);
                    changed += 1;
                }
            }
            role.rules.retain(|r| !r.verbs.is_empty());
        }
        changed
    }

    /// Removes the role `kind`/`name` (in `namespace` for a Role) and every binding that refers
    /// to it. Returns whether the role existed.
    pub fn remove_role(&mut self, kind: &str, name: &str, namespace: Option<&str>) -> bool {
        let before = self.roles.len();
        self.roles
            .retain(|r| !(r.kind == kind && r.name == name && r.namespace.as_deref() == namespace));
        self.bindings.retain(|b| {
            let same_ns = kind == "ClusterRole" || b.namespace.as_deref() == namespace;
            !(b.role_ref.kind == kind && b.role_ref.name == name && same_ns)
        });
        self.roles.len() != before
    }

    /// Removes the binding `kind`/`name` (in `namespace` for a RoleBinding), leaving its role.
    /// Returns whether it existed.
    pub fn remove_binding(&mut self, kind: &str, name: &str, namespace: Option<&str>) -> bool {
        let before = self.bindings.len();
        self.bindings
            .retain(|b| !(b.kind == kind && b.name == name && b.namespace.as_deref() == namespace));
        self.bindings.len() != before
    }

    /// The namespaces in which `user` may `verb` `resource` through a RoleBinding, and whether
    /// a ClusterRoleBinding grants it everywhere.
    pub fn grants(&self, user: &str, verb: &str, api_group: &str, resource: &str) -> Grants {
        let mut grants = Grants::default();
        let who = Identity::user(user);
        for binding in self.bindings.iter().filter(|b| binds(b, &who)) {
            let Some(role) = self.role_of(binding) else {
                continue;
            };
            let probe = RequestAttributes {
                verb: verb.into(),
                resource_request: true,
                api_group: api_group.into(),
                resource: resource.into(),
                subresource: String::new(),
                namespace: String::new(),
                name: String::new(),
                path: String::new(),
            };
            if role.rules.iter().any(|r| rule_matches(r, &probe)) {
                match &binding.namespace {
                    Some(ns) => {
                        grants.namespaces.insert(ns.clone());
                    }
                    None => grants.cluster_wide = true,
                }
            }
        }
        grants
    }

    /// Whether `user` may `verb` `resource` in `namespace` (`""`: at the cluster scope).
    pub fn allows(
        &self,
        user: &str,
        verb: &str,
        api_group: &str,
        resource: &str,
        namespace: &str,
    ) -> bool {
        let attrs = RequestAttributes {
            verb: verb.into(),
            resource_request: true,
            api_group: api_group.into(),
            resource: resource.into(),
            subresource: String::new(),
            namespace: namespace.into(),
            name: String::new(),
            path: String::new(),
        };
        self.check(&Identity::user(user), &attrs).is_ok()
    }

    /// `Ok(binding and role that allow it)` or `Err(why not)`.
    pub fn check(&self, who: &Identity, attrs: &RequestAttributes) -> Result<String, String> {
        if self.superusers.contains(&who.user) {
            return Ok(format!("superuser {}", who.user));
        }
        let mut considered = Vec::new();
        for binding in self.bindings.iter().filter(|b| binds(b, who)) {
            considered.push(binding.label());
            if let Some(ns) = &binding.namespace {
                // A RoleBinding grants nothing outside its namespace (nor cluster-wide).
                if !attrs.resource_request || attrs.namespace != *ns {
                    continue;
                }
            }
            let Some(role) = self.role_of(binding) else {
                continue;
            };
            if role.rules.iter().any(|r| rule_matches(r, attrs)) {
                return Ok(format!(
                    "{} -> {} {}",
                    binding.label(),
                    role.kind,
                    role.name
                ));
            }
        }
        let target = if attrs.resource_request {
            let mut t = format!("{} {}", attrs.verb, attrs.resource_key());
            if !attrs.name.is_empty() {
                t.push_str(&format!(" {:?}", attrs.name));
            }
            if attrs.namespace.is_empty() {
                t.push_str(" at the cluster scope");
            } else {
                t.push_str(&format!(" in namespace {:?}", attrs.namespace));
            }
            t
        } else {
            format!("{} {}", attrs.verb, attrs.path)
        };
        Err(format!(
            "RBAC: no rule allows {target} (bindings of {:?}: {})",
            who.user,
            if considered.is_empty() {
                "none".to_owned()
            } else {
                considered.join(", ")
            }
        ))
    }

    fn role_of(&self, binding: &RbacBinding) -> Option<&RbacRole> {
        let namespace = match binding.role_ref.kind.as_str() {
            "ClusterRole" => None,
            "Role" => Some(binding.namespace.as_deref()?),
            _ => return None,
        };
        self.roles.iter().find(|r| {
            r.kind == binding.role_ref.kind
                && r.name == binding.role_ref.name
                && r.namespace.as_deref() == namespace
        })
    }
}

impl Authorizer for Rbac {
    fn authorize(&self, who: &Identity, attrs: &RequestAttributes) -> Decision {
        match self.check(who, attrs) {
            Ok(_) => Decision::Allow,
            Err(why) => Decision::Deny(why),
        }
    }
}

/// What [`Rbac::grants`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Granted everywhere by a ClusterRoleBinding.
    pub cluster_wide: bool,
    /// Namespaces granted by RoleBindings.
    pub namespaces: BTreeSet<String>,
}

impl Grants {
    /// Whether the grant covers `namespace`.
    pub fn covers(&self, namespace: &str) -> bool {
        self.cluster_wide || self.namespaces.contains(namespace)
    }
}

fn contains(list: Option<&[String]>, item: &str) -> bool {
    list.unwrap_or_default().iter().any(|x| x == item)
}

fn groups_of(who: &Identity) -> Vec<String> {
    let mut groups = who.groups.clone();
    if let Some(rest) = who.user.strip_prefix("system:serviceaccount:")
        && let Some((namespace, _)) = rest.split_once(':')
    {
        groups.push("system:serviceaccounts".into());
        groups.push(format!("system:serviceaccounts:{namespace}"));
    }
    groups
}

fn binds(binding: &RbacBinding, who: &Identity) -> bool {
    let groups = groups_of(who);
    binding.subjects.iter().any(|s| match s.kind.as_str() {
        "User" => s.name == who.user,
        "Group" => groups.contains(&s.name),
        "ServiceAccount" => {
            // A subject without namespace means the binding's own (RoleBindings only).
            let namespace = s.namespace.as_deref().or(binding.namespace.as_deref());
            namespace.is_some_and(|ns| service_account_user(ns, &s.name) == who.user)
        }
        _ => false,
    })
}

fn rule_matches(rule: &PolicyRule, attrs: &RequestAttributes) -> bool {
    let verb_ok = rule.verbs.iter().any(|v| v == "*" || *v == attrs.verb);
    if !verb_ok {
        return false;
    }
    if !attrs.resource_request {
        return rule
            .non_resource_urls
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|u| {
                u == "*"
                    || *u == attrs.path
                    || u.strip_suffix('*')
                        .is_some_and(|prefix| attrs.path.starts_with(prefix))
            });
    }
    let group_ok = rule
        .api_groups
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|g| g == "*" || *g == attrs.api_group);
    let combined = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    let resource_ok = rule
        .resources
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|r| {
            r == "*"
                || *r == combined
                || (!attrs.subresource.is_empty()
                    && r.strip_prefix("*/") == Some(attrs.subresource.as_str()))
        });
    let names_ok = match rule.resource_names.as_deref() {
        None | Some([]) => true,
        Some(names) => !attrs.name.is_empty() && names.contains(&attrs.name),
    };
    group_ok && resource_ok && names_ok
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const SA: &str = "system:serviceaccount:mountlag-system:mountlag";

    const MANIFESTS: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: pods}
rules:
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: pods}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: pods}
subjects: [{kind: ServiceAccount, name: mountlag, namespace: mountlag-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: secrets, namespace: ingress}
rules:
  - apiGroups: [""]
    resources: [secrets]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [configmaps]
    resourceNames: [only-this]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: secrets, namespace: ingress}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: secrets}
subjects: [{kind: ServiceAccount, name: mountlag, namespace: mountlag-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: pod-status, namespace: other}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: status}
subjects: [{kind: Group, name: "system:serviceaccounts:mountlag-system"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: status}
rules:
  - apiGroups: [""]
    resources: ["*/status"]
    verbs: [patch]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
"#;

    fn attrs(verb: &str, resource: &str, namespace: &str, name: &str) -> RequestAttributes {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        RequestAttributes {
            verb: verb.into(),
            resource_request: true,
            api_group: String::new(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
            path: String::new(),
        }
    }

    fn allowed(rbac: &Rbac, who: &str, a: &RequestAttributes) -> bool {
        rbac.check(&Identity::user(who), a).is_ok()
    }

    #[test]
    fn cluster_role_bindings_grant_everywhere_role_bindings_only_in_their_namespace() {
        let rbac = Rbac::from_yaml(MANIFESTS).unwrap();
        assert_eq!(rbac.roles.len(), 3);
        assert_eq!(rbac.bindings.len(), 3);
        assert!(allowed(&rbac, SA, &attrs("watch", "pods", "", "")));
        assert!(allowed(&rbac, SA, &attrs("get", "pods", "ingress", "p")));
        assert!(!allowed(&rbac, SA, &attrs("patch", "pods", "ingress", "p")));
        assert!(allowed(&rbac, SA, &attrs("list", "secrets", "ingress", "")));
        assert!(!allowed(&rbac, SA, &attrs("list", "secrets", "other", "")));
        assert!(!allowed(&rbac, SA, &attrs("list", "secrets", "", "")));
        assert!(!allowed(
            &rbac,
            "someone-else",
            &attrs("list", "secrets", "ingress", "")
        ));
        assert!(!allowed(
            &rbac,
            "system:serviceaccount:ingress:mountlag",
            &attrs("watch", "pods", "", "")
        ));
    }

    #[test]
    fn resource_names_subresources_groups_and_wildcards() {
        let rbac = Rbac::from_yaml(MANIFESTS).unwrap();
        assert!(allowed(
            &rbac,
            SA,
            &attrs("get", "configmaps", "ingress", "only-this")
        ));
        assert!(!allowed(
            &rbac,
            SA,
            &attrs("get", "configmaps", "ingress", "another")
        ));
        assert!(!allowed(
            &rbac,
            SA,
            &attrs("list", "configmaps", "ingress", "")
        ));
        // Group subject derived from the ServiceAccount, `*/status`, RoleBinding to ClusterRole.
        assert!(allowed(
            &rbac,
            SA,
            &attrs("patch", "pods/status", "other", "p")
        ));
        assert!(!allowed(&rbac, SA, &attrs("patch", "pods", "other", "p")));
        assert!(!allowed(
            &rbac,
            SA,
            &attrs("patch", "pods/status", "ingress", "p")
        ));
        let mut events = attrs("create", "events", "ingress", "");
        events.api_group = "events.k8s.io".into();
        assert!(!allowed(&rbac, SA, &events));
    }

    #[test]
    fn denials_name_the_request_and_the_bindings_considered() {
        let rbac = Rbac::from_yaml(MANIFESTS).unwrap();
        let why = rbac
            .check(
                &Identity::user(SA),
                &attrs("patch", "pods", "ingress", "edge-0"),
            )
            .unwrap_err();
        assert!(
            why.contains("patch pods \"edge-0\" in namespace \"ingress\""),
            "{why}"
        );
        assert!(why.contains("ClusterRoleBinding pods"), "{why}");
    }

    #[test]
    fn non_resource_urls_need_the_discovery_defaults() {
        let version = RequestAttributes {
            verb: "get".into(),
            resource_request: false,
            api_group: String::new(),
            resource: String::new(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
            path: "/apis/events.k8s.io/v1".into(),
        };
        let bare = Rbac::from_yaml(MANIFESTS).unwrap();
        assert!(!allowed(&bare, SA, &version));
        let with_defaults = bare.with_kubernetes_defaults();
        assert!(allowed(&with_defaults, SA, &version));
        assert!(
            with_defaults
                .with_superuser("admin")
                .check(
                    &Identity::user("admin"),
                    &attrs("delete", "secrets", "x", "y")
                )
                .is_ok()
        );
    }

    #[test]
    fn revoke_and_remove_role() {
        let mut rbac = Rbac::from_yaml(MANIFESTS).unwrap();
        assert_eq!(rbac.revoke("watch", "", "pods"), 1);
        assert!(!rbac.allows(SA, "watch", "", "pods", ""));
        assert!(rbac.allows(SA, "list", "", "pods", ""));
        assert!(rbac.remove_role("Role", "secrets", Some("ingress")));
        assert!(!rbac.allows(SA, "list", "", "secrets", "ingress"));
        assert!(!rbac.bindings.iter().any(|b| b.name == "secrets"));
    }

    #[test]
    fn remove_binding_leaves_the_role_and_other_namespaces() {
        let mut rbac = Rbac::from_yaml(MANIFESTS).unwrap();
        let status = attrs("patch", "pods/status", "other", "p");
        assert!(allowed(&rbac, SA, &status));
        assert!(!rbac.remove_binding("RoleBinding", "pod-status", Some("ingress")));
        assert!(!rbac.remove_binding("ClusterRoleBinding", "pod-status", None));
        assert!(allowed(&rbac, SA, &status));
        assert!(rbac.remove_binding("RoleBinding", "pod-status", Some("other")));
        assert!(!allowed(&rbac, SA, &status));
        assert!(
            rbac.roles.iter().any(|r| r.name == "status"),
            "the role stays"
        );
        assert!(rbac.allows(SA, "list", "", "secrets", "ingress"));
    }

    #[test]
    fn grants_lists_namespaces_and_cluster_wide_access() {
        let rbac = Rbac::from_yaml(MANIFESTS).unwrap();
        let secrets = rbac.grants(SA, "watch", "", "secrets");
        assert!(!secrets.cluster_wide);
        assert!(secrets.covers("ingress"));
        assert!(!secrets.covers("other"));
        assert!(rbac.grants(SA, "watch", "", "pods").cluster_wide);
    }

    #[test]
    fn the_daemonset_user_comes_from_its_service_account() {
        let docs = documents(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: d, namespace: ns}\n\
             spec: {template: {spec: {serviceAccountName: sa}}}\n",
        )
        .unwrap();
        assert_eq!(
            daemonset_user(&docs).unwrap(),
            "system:serviceaccount:ns:sa"
        );
    }
}
