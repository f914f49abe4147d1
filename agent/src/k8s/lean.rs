//! Lean objects for the cluster-wide watches: only the fields a conversion reads are kept.
//!
//! kube's watcher holds a whole list page at once (and an API server answering a
//! `resourceVersion=0` list from its watch cache sends every object in one page). Deserialised
//! whole, a `Pod` is several KiB in memory — managed fields, annotations, container specs,
//! status conditions — of which the reporter choice reads a few hundred bytes; at start the
//! peers' list was the agent's largest allocation (7.2 MiB for 1,000 pods, docs/benchmarks.md,
//! session 12), and the heap keeps its high-water. [`Lean`] is deserialised straight from the
//! JSON: skipped fields are parsed over, never allocated.
//!
//! ```text
//!  Pod JSON ──▶ Lean<PodSpec, PodStatus> { name, namespace, uid, labels, resourceVersion,
//!                                           deletionTimestamp, nodeName, volumes' Secret
//!                                           names, phase }
//!  Ingress, Gateway, … JSON ──▶ Lean<Value, IgnoredAny, RouteAnnotations> { the same metadata,
//!                                           the annotations routes read, spec as JSON }
//!  Pod JSON (this node's) ──▶ NodePod { + mountlag's annotations, containers' mounts and ids,
//!                                       pod IPs, hostNetwork, volumes' Secret sources }
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::ApiResource;
use kube::core::DynamicResourceScope;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// An object of the kind its [`ApiResource`] names, with the metadata a watch and a conversion
/// need, the annotations `A` names, and the parts of `spec` and `status` that `S` and `U`
/// declare.
#[derive(Clone, Debug, Deserialize)]
#[serde(bound(deserialize = "S: Deserialize<'de>, U: Deserialize<'de>, A: KeptAnnotations"))]
pub struct Lean<S, U, A = NoAnnotations> {
    #[serde(default, deserialize_with = "lean_meta::<_, A>")]
    pub metadata: ObjectMeta,
    pub spec: Option<S>,
    pub status: Option<U>,
    #[serde(skip)]
    annotations: PhantomData<A>,
}

impl<U, A> Lean<serde_json::Value, U, A> {
    /// `spec` as read, `Null` when the object has none.
    pub fn spec_json(&self) -> &serde_json::Value {
        self.spec.as_ref().unwrap_or(&serde_json::Value::Null)
    }
}

impl<S, A> Lean<S, serde_json::Value, A> {
    /// `status` as read, `Null` when the object has none.
    pub fn status_json(&self) -> &serde_json::Value {
        self.status.as_ref().unwrap_or(&serde_json::Value::Null)
    }
}

/// The annotations a lean object keeps; the others are skipped unread (a
/// `kubectl.kubernetes.io/last-applied-configuration` holds the whole object again).
pub trait KeptAnnotations {
    const KEYS: &'static [&'static str];
}

/// Keeps no annotation.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAnnotations;

impl KeptAnnotations for NoAnnotations {
    const KEYS: &'static [&'static str] = &[];
}

/// The metadata fields kept: identity, labels (selectors), the version a watch resumes from,
/// deletion, and the annotations `A` names. Managed fields, often the bulk of an object, are
/// skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "A: KeptAnnotations"))]
struct LeanMeta<A> {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Kept<A>,
    deletion_timestamp: Option<Time>,
}

fn lean_meta<'de, D: Deserializer<'de>, A: KeptAnnotations>(
    deserializer: D,
) -> Result<ObjectMeta, D::Error> {
    let meta = LeanMeta::<A>::deserialize(deserializer)?;
    Ok(ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        labels: meta.labels,
        annotations: (!meta.annotations.map.is_empty()).then_some(meta.annotations.map),
        deletion_timestamp: meta.deletion_timestamp,
        ..ObjectMeta::default()
    })
}

/// An annotations map reduced to the keys `A` names while it is read.
struct Kept<A> {
    map: BTreeMap<String, String>,
    keys: PhantomData<A>,
}

impl<A> Default for Kept<A> {
    fn default() -> Self {
        Kept {
            map: BTreeMap::new(),
            keys: PhantomData,
        }
    }
}

impl<'de, A: KeptAnnotations> Deserialize<'de> for Kept<A> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_option(KeptVisitor(PhantomData))
    }
}

struct KeptVisitor<A>(PhantomData<A>);

impl<'de, A: KeptAnnotations> Visitor<'de> for KeptVisitor<A> {
    type Value = Kept<A>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of strings to strings, or null")
    }

    fn visit_none<E>(self) -> Result<Kept<A>, E> {
        Ok(Kept::default())
    }

    fn visit_unit<E>(self) -> Result<Kept<A>, E> {
        Ok(Kept::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Kept<A>, D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<M: MapAccess<'de>>(self, mut entries: M) -> Result<Kept<A>, M::Error> {
        let mut kept = Kept::default();
        while let Some(key) = entries.next_key::<String>()? {
            if A::KEYS.contains(&key.as_str()) {
                let value = entries.next_value::<String>()?;
                kept.map.insert(key, value);
            } else {
                entries.next_value::<IgnoredAny>()?;
            }
        }
        Ok(kept)
    }
}

impl<S, U, A> kube::Resource for Lean<S, U, A> {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(resource: &ApiResource) -> Cow<'_, str> {
        resource.kind.as_str().into()
    }

    fn group(resource: &ApiResource) -> Cow<'_, str> {
        resource.group.as_str().into()
    }

    fn version(resource: &ApiResource) -> Cow<'_, str> {
        resource.version.as_str().into()
    }

    fn api_version(resource: &ApiResource) -> Cow<'_, str> {
        resource.api_version.as_str().into()
    }

    fn plural(resource: &ApiResource) -> Cow<'_, str> {
        resource.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A pod as the reporter choice reads it.
pub type LeanPod = Lean<PodSpec, PodStatus>;

/// An Ingress, IngressClass or Gateway API object as the route conversion reads it: `spec` as
/// JSON (read leniently there), no `status`, and the annotations it reads.
pub type LeanRoute = Lean<serde_json::Value, IgnoredAny, RouteAnnotations>;

/// The annotations the route conversion reads: the legacy Ingress class, the default
/// IngressClass mark and cert-manager's ingress-shim issuers.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteAnnotations;

impl KeptAnnotations for RouteAnnotations {
    const KEYS: &'static [&'static str] = &[
        "kubernetes.io/ingress.class",
        "ingressclass.kubernetes.io/is-default-class",
        mountlag_core::certmanager::ISSUER_ANNOTATION,
        mountlag_core::certmanager::CLUSTER_ISSUER_ANNOTATION,
    ];
}

/// The `Pod` kind, for `Api::all_with`.
pub fn pod_resource() -> ApiResource {
    ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&())
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub node_name: Option<String>,
    pub volumes: Option<Vec<Volume>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodStatus {
    pub phase: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Volume {
    #[serde(default)]
    pub name: String,
    pub secret: Option<SecretVolumeSource>,
    pub projected: Option<ProjectedVolumeSource>,
}

/// A pod of this node as the node model reads it ([`super::pod::controller_pod`]).
pub type NodePod = Lean<NodePodSpec, NodePodStatus, NodePodAnnotations>;

/// The annotations [`super::pod::controller_pod`] reads: mountlag's own two and a static pod's
/// config hash.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodePodAnnotations;

impl KeptAnnotations for NodePodAnnotations {
    const KEYS: &'static [&'static str] = &[
        mountlag_core::pod::RESYNC_ANNOTATION,
        mountlag_core::pod::RESTART_ANNOTATION,
        mountlag_core::pod::CONFIG_HASH_ANNOTATION,
    ];
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePodSpec {
    pub host_network: Option<bool>,
    pub containers: Option<Vec<Container>>,
    pub volumes: Option<Vec<Volume>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub mount_path: String,
    pub sub_path: Option<String>,
    pub sub_path_expr: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePodStatus {
    pub phase: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Vec<PodIp>>,
    pub container_statuses: Option<Vec<ContainerStatus>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodIp {
    #[serde(default)]
    pub ip: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "containerID")]
    pub container_id: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretVolumeSource {
    pub secret_name: Option<String>,
    pub items: Option<Vec<KeyToPath>>,
    pub optional: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct KeyToPath {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub path: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProjectedVolumeSource {
    pub sources: Option<Vec<VolumeProjection>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct VolumeProjection {
    pub secret: Option<SecretProjection>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct SecretProjection {
    pub name: Option<String>,
    pub items: Option<Vec<KeyToPath>>,
    pub optional: Option<bool>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_keeps_what_the_reporter_reads_and_drops_the_rest() {
        let pod: LeanPod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-0", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{…}"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                                   "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
                "deletionTimestamp": "2026-12-07T10:00:00Z"
            },
            "spec": {
                "nodeName": "node-a",
                "containers": [{"name": "web", "image": "nginx"}],
                "volumes": [
                    {"name": "tls", "secret": {"secretName": "web-tls", "defaultMode": 420}},
                    {"name": "all", "projected": {"sources": [
                        {"secret": {"name": "ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"configMap": {"name": "settings"}}
                    ]}},
                    {"name": "tmp", "emptyDir": {}}
                ]
            },
            "status": {"phase": "Running", "podIP": "10.0.0.7",
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let meta = &pod.metadata;
        assert_eq!(meta.name.as_deref(), Some("web-0"));
        assert_eq!(meta.namespace.as_deref(), Some("shop"));
        assert_eq!(meta.uid.as_deref(), Some("u-1"));
        assert_eq!(meta.resource_version.as_deref(), Some("42"));
        assert_eq!(meta.labels.as_ref().unwrap()["app"], "web");
        assert!(meta.deletion_timestamp.is_some());
        assert!(meta.annotations.is_none() && meta.managed_fields.is_none());
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        let volumes = spec.volumes.unwrap();
        assert_eq!(
            volumes[0].secret.as_ref().unwrap().secret_name.as_deref(),
            Some("web-tls")
        );
        let sources = volumes[1]
            .projected
            .as_ref()
            .unwrap()
            .sources
            .as_ref()
            .unwrap();
        assert_eq!(
            sources[0].secret.as_ref().unwrap().name.as_deref(),
            Some("ca")
        );
        assert!(sources[1].secret.is_none() && volumes[2].secret.is_none());
        assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Running"));
    }

    #[test]
    fn a_route_keeps_only_the_annotations_routes_read() {
        let ingress: LeanRoute = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop", "annotations": {
                "kubernetes.io/ingress.class": "nginx",
                "cert-manager.io/cluster-issuer": "le",
                "kubectl.kubernetes.io/last-applied-configuration": "{\"the\": \"whole object\"}",
                "nginx.ingress.kubernetes.io/rewrite-target": "/"
            }},
            "spec": {"rules": [{"host": "a.example"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}
        }))
        .unwrap();
        let annotations = ingress.metadata.annotations.unwrap();
        assert_eq!(
            annotations.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "cert-manager.io/cluster-issuer",
                "kubernetes.io/ingress.class"
            ]
        );
        assert_eq!(ingress.spec.unwrap()["rules"][0]["host"], "a.example");
        let bare: LeanRoute = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "nginx", "annotations": null}
        }))
        .unwrap();
        assert!(bare.metadata.annotations.is_none());
    }

    #[test]
    fn a_pod_with_only_a_name_is_read() {
        let pod: LeanPod = serde_json::from_value(
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}),
        )
        .unwrap();
        assert!(pod.spec.is_none() && pod.status.is_none());
        assert_eq!(pod.metadata.name.as_deref(), Some("p"));
    }
}
