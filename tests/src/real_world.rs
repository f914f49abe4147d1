//! Objects as a real cluster serves them, for benches that measure what lists and watches cost.
//!
//! The API stand-in stores what it is given: its objects carry no managed fields, and the
//! benches' Secrets none of cert-manager's annotations. A real API server adds a
//! `managedFields` entry per writer to every object (server-side field tracking, on since
//! Kubernetes 1.18), and a Secret cert-manager issued carries its annotations; every list page
//! and watch event the agent reads includes them. `testbed bench footprint --managed-fields`
//! adds them to its pods and Secrets.

use k8s_openapi::api::core::v1::{Pod, Secret};
use serde_json::{Map, Value, json};

/// A leaf Secret as cert-manager writes it for Certificate `certificate` (its annotations and
/// label), with the managed fields of that apply.
pub fn issued_secret(secret: &Secret, certificate: &str, host: &str) -> anyhow::Result<Secret> {
    let mut object = serde_json::to_value(secret)?;
    let metadata = &mut object["metadata"];
    metadata["annotations"] = json!({
        "cert-manager.io/alt-names": host,
        "cert-manager.io/certificate-name": certificate,
        "cert-manager.io/common-name": host,
        "cert-manager.io/ip-sans": "",
        "cert-manager.io/issuer-group": "cert-manager.io",
        "cert-manager.io/issuer-kind": "ClusterIssuer",
        "cert-manager.io/issuer-name": "letsencrypt-prod",
        "cert-manager.io/uri-sans": "",
    });
    metadata["labels"] = json!({"controller.cert-manager.io/fao": "true"});
    let owned = json!({
        "metadata": {"annotations": metadata["annotations"], "labels": metadata["labels"]},
        "data": object["data"],
        "type": object["type"],
    });
    object["metadata"]["managedFields"] = json!([entry(
        "cert-manager-certificates-issuing",
        "Apply",
        None,
        &owned
    )]);
    Ok(serde_json::from_value(object)?)
}

/// A pod as a controller creates it and kubelet reports it: a `pod-template-hash` label, an
/// owner, and the managed fields of both writers (the controller's spec, kubelet's status).
pub fn scheduled_pod(pod: &Pod) -> anyhow::Result<Pod> {
    let mut object = serde_json::to_value(pod)?;
    object["metadata"]["labels"]["pod-template-hash"] = json!("7d4b9c8f6d");
    object["metadata"]["generateName"] = json!("edge-7d4b9c8f6d-");
    object["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "edge-7d4b9c8f6d",
        "uid": "5f0c1a52-8d2e-4c1b-9b7e-3e1f2a4b6c8d", "controller": true,
        "blockOwnerDeletion": true
    }]);
    let spec_owner = json!({
        "metadata": {
            "generateName": object["metadata"]["generateName"],
            "labels": object["metadata"]["labels"],
            "ownerReferences": object["metadata"]["ownerReferences"],
        },
        "spec": object["spec"],
    });
    // What kubelet sets once the pod runs (the stand-in's own status patch sets fewer).
    let status_owner = json!({"status": {
        "conditions": [{"type": "Initialized"}, {"type": "PodReadyToStartContainers"},
                       {"type": "Ready"}, {"type": "ContainersReady"}, {"type": "PodScheduled"}],
        "containerStatuses": [], "hostIP": "", "hostIPs": [{"ip": ""}], "phase": "",
        "podIP": "", "podIPs": [{"ip": ""}], "startTime": ""
    }});
    object["metadata"]["managedFields"] = json!([
        entry("kube-controller-manager", "Update", None, &spec_owner),
        entry("kubelet", "Update", Some("status"), &status_owner),
    ]);
    Ok(serde_json::from_value(object)?)
}

fn entry(manager: &str, operation: &str, subresource: Option<&str>, owned: &Value) -> Value {
    let mut entry = json!({
        "manager": manager, "operation": operation, "apiVersion": "v1",
        "time": "2026-12-07T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields(owned),
    });
    if let Some(subresource) = subresource {
        entry["subresource"] = json!(subresource);
    }
    entry
}

/// The FieldsV1 set of `value`'s fields: `f:<name>` per field, `k:{"name":…}` per named list
/// item, `.` for a member that is itself set (the shape `kubectl get -o json` shows).
fn fields(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, v)| (format!("f:{key}"), member(v)))
                .collect(),
        ),
        _ => json!({}),
    }
}

fn member(value: &Value) -> Value {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let mut set = match fields(value) {
                Value::Object(set) => set,
                _ => Map::new(),
            };
            set.insert(".".into(), json!({}));
            Value::Object(set)
        }
        Value::Array(items) if items.iter().any(|i| i.get("name").is_some()) => Value::Object(
            items
                .iter()
                .filter_map(|item| {
                    let name = item.get("name")?.as_str()?;
                    let mut set = match fields(item) {
                        Value::Object(set) => set,
                        _ => Map::new(),
                    };
                    set.insert(".".into(), json!({}));
                    Some((format!("k:{{\"name\":\"{name}\"}}"), Value::Object(set)))
                })
                .collect(),
        ),
        _ => json!({}),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_gains_both_writers_and_its_spec_fields() {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "edge-0", "namespace": "default", "labels": {"app": "edge"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx"}],
                     "volumes": [{"name": "tls-0", "secret": {"secretName": "tls-0000"}}]}
        }))
        .unwrap();
        let pod = serde_json::to_value(scheduled_pod(&pod).unwrap()).unwrap();
        let managed = pod["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(managed.len(), 2);
        let spec = &managed[0]["fieldsV1"]["f:spec"];
        assert!(spec["f:containers"]["k:{\"name\":\"nginx\"}"]["f:image"].is_object());
        assert!(
            spec["f:volumes"]["k:{\"name\":\"tls-0\"}"]["f:secret"]["f:secretName"].is_object()
        );
        assert_eq!(managed[1]["subresource"], "status");
        assert_eq!(pod["metadata"]["labels"]["app"], "edge");
    }
}
