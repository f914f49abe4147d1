//! Ingress and Gateway API objects, watched cluster-wide (only while a local controller pod's
//! profile needs them) and converted here, at the edge, into the core's route views.
//!
//! Every kind is read as a [`LeanRoute`] (Gateway API types are not in k8s-openapi; and a list
//! of every Ingress in the cluster, annotations and managed fields included, is memory the
//! node pays for): `spec` as JSON, the few annotations read here. Conversion is lenient the way
//! the controllers are: a field of the wrong type is left out, never a panic, and an object
//! that cannot be read at all (no name) is skipped.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ApiResource};
use kube::runtime::watcher;
use mountlag_core::node::Input;
use mountlag_core::routes::{
    AttachedRouteView, CertificateRef, GatewayClassView, GatewayView, GrantFrom, GrantTo,
    IngressClassView, IngressTls, IngressView, ListenerView, ParentRef, ReferenceGrantView,
    RouteKind, RouteObject, RouteObjectKey, TlsMode,
};
use mountlag_core::text::{MAX_MESSAGE_BYTES, untrusted_capped};
use serde_json::Value;
use tokio::sync::mpsc;

use super::lean::LeanRoute;
use super::watches::{ObjectChange, watch_objects};

/// The API resource of a kind: group, version, plural.
pub fn api_resource(kind: RouteKind) -> ApiResource {
    let (group, version) = match kind {
        RouteKind::Ingress | RouteKind::IngressClass => ("networking.k8s.io", "v1"),
        // ReferenceGrant is served as v1beta1 by every Gateway API release's standard channel.
        RouteKind::ReferenceGrant => ("gateway.networking.k8s.io", "v1beta1"),
        // TLSRoute: v1 in the standard channel since Gateway API v1.5.0 (older clusters serve
        // only the experimental v1alpha2: the kind then counts as empty).
        RouteKind::Gateway
        | RouteKind::GatewayClass
        | RouteKind::HttpRoute
        | RouteKind::TlsRoute => ("gateway.networking.k8s.io", "v1"),
    };
    ApiResource {
        group: group.to_string(),
        version: version.to_string(),
        api_version: format!("{group}/{version}"),
        kind: kind.as_str().to_string(),
        plural: kind.resource().to_string(),
    }
}

/// One cluster-wide watch of `kind`. A kind the cluster does not serve (Gateway API CRDs not
/// installed) counts as listed and empty, so the agent still becomes ready; the watch keeps
/// retrying with backoff and picks the kind up once it is installed.
pub async fn watch_routes(
    client: Client,
    kind: RouteKind,
    watch_config: watcher::Config,
    tx: mpsc::UnboundedSender<Input>,
) {
    let api: Api<LeanRoute> = Api::all_with(client, &api_resource(kind));
    let mut reported_absent = false;
    let convert = |object: &LeanRoute| route_object(kind, &object.metadata, object.spec_json());
    watch_objects(api, watch_config, convert, |change| {
        let input = match change {
            ObjectChange::Listed(objects) => Input::RoutesListed { kind, objects },
            ObjectChange::Applied(object) => Input::RouteApplied(object),
            ObjectChange::Deleted {
                namespace, name, ..
            } => Input::RouteDeleted(RouteObjectKey {
                kind,
                namespace: namespace.filter(|_| !kind.cluster_scoped()),
                name,
            }),
            ObjectChange::Failed { reason, error } => {
                if reason == "NotFound" && !reported_absent {
                    reported_absent = true;
                    tracing::info!(
                        resource = kind.resource(),
                        "the cluster does not serve this kind (CRD not installed?): counted as empty, retrying with backoff"
                    );
                    let listed = Input::RoutesListed {
                        kind,
                        objects: Vec::new(),
                    };
                    if tx.send(listed).is_err() {
                        return false;
                    }
                } else if reason != "NotFound" {
                    tracing::warn!(resource = kind.resource(), error = %untrusted_capped(&error.to_string(), MAX_MESSAGE_BYTES), "route watch failed; retrying with backoff");
                }
                Input::RouteWatchFailed { kind, reason }
            }
        };
        tx.send(input).is_ok()
    })
    .await;
}

/// The core's view of one object from its metadata and `spec` (`Null` when absent); `None`
/// for one without a name.
pub fn route_object(kind: RouteKind, metadata: &ObjectMeta, spec: &Value) -> Option<RouteObject> {
    let name = metadata.name.clone()?;
    let namespace = metadata.namespace.clone().unwrap_or_default();
    let uid = metadata.uid.clone().unwrap_or_default();
    let annotations = metadata.annotations.clone().unwrap_or_default();
    Some(match kind {
        RouteKind::Ingress => RouteObject::Ingress(IngressView {
            namespace,
            name,
            uid,
            class_name: string(&spec["ingressClassName"]),
            class_annotation: annotations.get("kubernetes.io/ingress.class").cloned(),
            tls: items(&spec["tls"])
                .map(|tls| IngressTls {
                    hosts: strings(&tls["hosts"]),
                    secret_name: string(&tls["secretName"]),
                })
                .collect(),
            rule_hosts: items(&spec["rules"])
                .filter_map(|rule| string(&rule["host"]))
                .collect(),
            cert_manager_issuer: cert_manager_issuer(&annotations),
        }),
        RouteKind::IngressClass => RouteObject::IngressClass(IngressClassView {
            name,
            controller: string(&spec["controller"]).unwrap_or_default(),
            is_default: annotations
                .get("ingressclass.kubernetes.io/is-default-class")
                .is_some_and(|v| v == "true"),
        }),
        RouteKind::Gateway => RouteObject::Gateway(GatewayView {
            namespace,
            name,
            uid,
            class_name: string(&spec["gatewayClassName"]).unwrap_or_default(),
            listeners: items(&spec["listeners"]).map(listener).collect(),
            cert_manager_issuer: cert_manager_issuer(&annotations),
        }),
        RouteKind::GatewayClass => RouteObject::GatewayClass(GatewayClassView {
            name,
            controller_name: string(&spec["controllerName"]).unwrap_or_default(),
        }),
        RouteKind::ReferenceGrant => RouteObject::ReferenceGrant(ReferenceGrantView {
            namespace,
            name,
            from: items(&spec["from"])
                .map(|f| GrantFrom {
                    group: string(&f["group"]).unwrap_or_default(),
                    kind: string(&f["kind"]).unwrap_or_default(),
                    namespace: string(&f["namespace"]).unwrap_or_default(),
                })
                .collect(),
            to: items(&spec["to"])
                .map(|t| GrantTo {
                    group: string(&t["group"]).unwrap_or_default(),
                    kind: string(&t["kind"]).unwrap_or_default(),
                    name: string(&t["name"]),
                })
                .collect(),
        }),
        RouteKind::HttpRoute | RouteKind::TlsRoute => RouteObject::Route(AttachedRouteView {
            kind,
            namespace,
            name,
            hostnames: strings(&spec["hostnames"]),
            parents: items(&spec["parentRefs"])
                // A parent of another kind (a Service, for mesh routing) is not a Gateway.
                .filter(|p| string(&p["kind"]).is_none_or(|k| k == "Gateway"))
                .filter_map(|p| {
                    Some(ParentRef {
                        namespace: string(&p["namespace"]),
                        name: string(&p["name"])?,
                        section_name: string(&p["sectionName"]),
                    })
                })
                .collect(),
        }),
    })
}

/// cert-manager's ingress-shim annotations (the namespaced `issuer` is read first).
fn cert_manager_issuer(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<mountlag_core::certmanager::IssuerRef> {
    use mountlag_core::certmanager::{CLUSTER_ISSUER_ANNOTATION, ISSUER_ANNOTATION, IssuerRef};
    if let Some(name) = annotations.get(ISSUER_ANNOTATION).filter(|n| !n.is_empty()) {
        return Some(IssuerRef::Issuer(name.clone()));
    }
    annotations
        .get(CLUSTER_ISSUER_ANNOTATION)
        .filter(|n| !n.is_empty())
        .map(|name| IssuerRef::ClusterIssuer(name.clone()))
}

fn listener(value: &Value) -> ListenerView {
    let tls = &value["tls"];
    ListenerView {
        name: string(&value["name"]).unwrap_or_default(),
        hostname: string(&value["hostname"]),
        port: value["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0),
        protocol: string(&value["protocol"]).unwrap_or_default(),
        tls_mode: tls.is_object().then(|| match tls["mode"].as_str() {
            Some("Passthrough") => TlsMode::Passthrough,
            _ => TlsMode::Terminate,
        }),
        certificate_refs: items(&tls["certificateRefs"])
            .filter_map(|r| {
                Some(CertificateRef {
                    group: string(&r["group"]).unwrap_or_default(),
                    kind: string(&r["kind"]).unwrap_or_else(|| "Secret".to_string()),
                    namespace: string(&r["namespace"]),
                    name: string(&r["name"])?,
                })
            })
            .collect(),
    }
}

fn string(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

fn strings(value: &Value) -> Vec<String> {
    items(value).filter_map(string).collect()
}

fn items(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn object(value: Value) -> LeanRoute {
        serde_json::from_value(value).unwrap()
    }

    fn route_object(kind: RouteKind, object: &LeanRoute) -> Option<RouteObject> {
        super::route_object(kind, &object.metadata, object.spec_json())
    }

    #[test]
    fn an_ingress_is_read_with_its_class_tls_and_rule_hosts() {
        let ingress = object(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u",
                         "annotations": {"kubernetes.io/ingress.class": "nginx"}},
            "spec": {"tls": [{"hosts": ["a.example", 7], "secretName": "web-tls"}, {"hosts": ["b.example"]}],
                     "rules": [{"host": "a.example"}, {"http": {}}]}
        }));
        let Some(RouteObject::Ingress(view)) = route_object(RouteKind::Ingress, &ingress) else {
            panic!("not an Ingress");
        };
        assert_eq!(view.class_annotation.as_deref(), Some("nginx"));
        assert_eq!(view.class_name, None);
        assert_eq!(
            view.tls[0].hosts,
            ["a.example"],
            "a non-string host is left out"
        );
        assert_eq!(view.tls[0].secret_name.as_deref(), Some("web-tls"));
        assert_eq!(view.tls[1].secret_name, None);
        assert_eq!(view.rule_hosts, ["a.example"]);
    }

    #[test]
    fn a_gateway_listener_defaults_to_terminate_and_core_secrets() {
        let gateway = object(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": "infra"},
            "spec": {"gatewayClassName": "eg", "listeners": [
                {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "shop.example",
                 "tls": {"certificateRefs": [{"name": "shop-tls", "namespace": "certs"}]}},
                {"name": "pass", "port": 8443, "protocol": "TLS", "tls": {"mode": "Passthrough"}},
                {"name": "http", "port": "80", "protocol": "HTTP"}
            ]}
        }));
        let Some(RouteObject::Gateway(view)) = route_object(RouteKind::Gateway, &gateway) else {
            panic!("not a Gateway");
        };
        let https = &view.listeners[0];
        assert_eq!(https.tls_mode, Some(TlsMode::Terminate));
        assert_eq!(https.certificate_refs[0].kind, "Secret");
        assert_eq!(https.certificate_refs[0].group, "");
        assert_eq!(
            https.certificate_refs[0].namespace.as_deref(),
            Some("certs")
        );
        assert_eq!(view.listeners[1].tls_mode, Some(TlsMode::Passthrough));
        assert_eq!(view.listeners[2].tls_mode, None);
        assert_eq!(
            view.listeners[2].port, 0,
            "a port of the wrong type is left out"
        );
    }

    #[test]
    fn nameless_objects_are_skipped_and_service_parents_are_not_gateways() {
        let nameless = object(serde_json::json!({"apiVersion": "v1", "kind": "X", "metadata": {}}));
        assert!(route_object(RouteKind::Ingress, &nameless).is_none());
        let route = object(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "shop"},
            "spec": {"hostnames": ["www.example"], "parentRefs": [
                {"name": "edge", "namespace": "infra", "sectionName": "https"},
                {"kind": "Service", "name": "mesh"}
            ]}
        }));
        let Some(RouteObject::Route(view)) = route_object(RouteKind::HttpRoute, &route) else {
            panic!("not a route");
        };
        assert_eq!(view.parents.len(), 1);
        assert_eq!(view.parents[0].section_name.as_deref(), Some("https"));
    }
}
