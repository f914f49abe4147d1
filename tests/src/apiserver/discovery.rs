//! Legacy discovery documents (`/api`, `/api/v1`, `/apis`, `/apis/<group>`,
//! `/apis/<group>/<version>`), generated from the kinds table so that kubectl and kube-rs
//! find every served kind with its scope, kind, verbs, short names and categories.

use serde_json::{Value, json};

use super::kinds::{ApiGroup, Resource};

/// Verbs of every stored resource (`deletecollection` is not served, so not advertised).
const RW_VERBS: [&str; 7] = [
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// Verbs of a `status` subresource.
const STATUS_VERBS: [&str; 3] = ["get", "patch", "update"];

/// `/api`.
pub(crate) fn core_versions(port: u16) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{port}")}
        ],
    })
}

/// `/apis`: every non-core group with its versions (but those `unserved`).
pub(crate) fn group_list(unserved: &[&str]) -> Value {
    let groups: Vec<Value> = ApiGroup::group_names()
        .into_iter()
        .filter(|g| !unserved.contains(g))
        .filter_map(group_body)
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>` (None: not served).
pub(crate) fn group(name: &str) -> Option<Value> {
    let mut g = group_body(name)?;
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

fn group_body(name: &str) -> Option<Value> {
    let versions = ApiGroup::versions_of(name);
    let preferred = *versions.first()?;
    let entry = |g: ApiGroup| json!({"groupVersion": g.api_version(), "version": g.version()});
    Some(json!({
        "name": name,
        "versions": versions.iter().map(|g| entry(*g)).collect::<Vec<_>>(),
        "preferredVersion": entry(preferred),
    }))
}

/// `/api/v1` or `/apis/<group>/<version>`: the APIResourceList.
pub(crate) fn resource_list(group: ApiGroup) -> Value {
    let mut resources: Vec<Value> = Vec::new();
    for r in group.resources() {
        resources.push(resource_entry(r));
        if r.has_status_subresource() {
            resources.push(json!({
                "name": format!("{}/status", r.plural()),
                "singularName": "",
                "namespaced": r.namespaced(),
                "kind": r.kind(),
                "verbs": STATUS_VERBS,
            }));
        }
    }
    if group == ApiGroup::Core {
        // Derived from the stored objects' namespaces, read-only (see http.rs).
        resources.push(json!({
            "name": "namespaces", "singularName": "namespace", "namespaced": false,
            "kind": "Namespace", "verbs": ["get", "list"], "shortNames": ["ns"],
        }));
        resources.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        // The real /api/v1 document carries no apiVersion; the group ones do.
        return json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": resources});
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group.api_version(),
        "resources": resources,
    })
}

fn resource_entry(r: Resource) -> Value {
    let mut e = json!({
        "name": r.plural(),
        "singularName": r.singular(),
        "namespaced": r.namespaced(),
        "kind": r.kind(),
        "verbs": RW_VERBS,
    });
    if !r.short_names().is_empty() {
        e["shortNames"] = json!(r.short_names());
    }
    if !r.categories().is_empty() {
        e["categories"] = json!(r.categories());
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(list: &'a Value, name: &str) -> &'a Value {
        list["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["name"] == name))
            .unwrap_or(&Value::Null)
    }

    #[test]
    fn documents() {
        let apis = group_list(&[]);
        let names: Vec<&str> = apis["groups"]
            .as_array()
            .map(|gs| gs.iter().filter_map(|g| g["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            names,
            [
                "apps",
                "events.k8s.io",
                "networking.k8s.io",
                "gateway.networking.k8s.io",
                "cert-manager.io"
            ]
        );
        let gw = group("gateway.networking.k8s.io").unwrap_or_default();
        assert_eq!(gw["preferredVersion"]["version"], "v1");
        assert_eq!(
            gw["versions"][1]["groupVersion"],
            "gateway.networking.k8s.io/v1beta1"
        );
        assert!(group("example.com").is_none());

        let net = resource_list(ApiGroup::NetworkingV1);
        assert_eq!(entry(&net, "ingressclasses")["namespaced"], false);
        assert_eq!(entry(&net, "ingresses")["namespaced"], true);
        assert_eq!(entry(&net, "ingresses/status")["kind"], "Ingress");
        assert_eq!(entry(&net, "ingressclasses/status"), &Value::Null);
        let beta = resource_list(ApiGroup::GatewayV1beta1);
        assert_eq!(entry(&beta, "referencegrants")["kind"], "ReferenceGrant");
        assert_eq!(entry(&beta, "gatewayclasses")["shortNames"][0], "gc");
        let core = resource_list(ApiGroup::Core);
        assert_eq!(entry(&core, "namespaces")["verbs"], json!(["get", "list"]));
        assert_eq!(entry(&core, "pods/status")["verbs"], json!(STATUS_VERBS));
        assert_eq!(entry(&core, "ingresses"), &Value::Null);
        let apps = resource_list(ApiGroup::AppsV1);
        assert_eq!(apps["groupVersion"], "apps/v1");
        assert_eq!(entry(&apps, "deployments")["shortNames"][0], "deploy");
        assert_eq!(entry(&apps, "statefulsets/status")["kind"], "StatefulSet");
        assert_eq!(entry(&apps, "daemonsets")["categories"][0], "all");
        assert_eq!(entry(&apps, "replicasets")["namespaced"], true);
    }
}
