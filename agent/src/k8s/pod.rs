//! Where a Pod becomes a [`ControllerPod`]: the few facts about it mountlag acts on.
//!
//! The pod is read as a [`NodePod`] (`lean.rs`): only these facts are deserialised, so a node
//! with fat pods (managed fields, long container specs) costs the watch little; everything
//! downstream (in `mountlag-core`) works on plain structs tested with literal values.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mountlag_core::pod::{
    CONFIG_HASH_ANNOTATION, ContainerInfo, ControllerPod, KeyPath, RESTART_ANNOTATION,
    RESYNC_ANNOTATION, SecretSource, SecretVolume, VolumeMountInfo,
};
use mountlag_core::volume::VolumeKind;

use super::lean::{KeyToPath, NodePod, Volume};

/// Converts an API Pod selected by `controller`. `None` for a pod without uid, namespace or
/// name (never the case for objects the API server returns).
pub fn controller_pod(pod: &NodePod, controller: &str) -> Option<ControllerPod> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let statuses: BTreeMap<&str, Option<String>> = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|cs| {
            (
                cs.name.as_str(),
                cs.container_id.as_deref().map(strip_scheme),
            )
        })
        .collect();
    let containers = spec
        .and_then(|s| s.containers.as_ref())
        .into_iter()
        .flatten()
        .map(|c| ContainerInfo {
            name: c.name.clone(),
            container_id: statuses.get(c.name.as_str()).cloned().flatten(),
            mounts: c
                .volume_mounts
                .iter()
                .flatten()
                .map(|m| VolumeMountInfo {
                    volume: m.name.clone(),
                    mount_path: m.mount_path.clone(),
                    sub_path: m
                        .sub_path
                        .clone()
                        .filter(|p| !p.is_empty())
                        .or_else(|| m.sub_path_expr.clone().filter(|p| !p.is_empty())),
                })
                .collect(),
        })
        .collect();
    let volumes = spec
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(secret_volume)
        .collect();
    let mut pod_ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    if pod_ips.is_empty()
        && let Some(ip) = status
            .and_then(|s| s.pod_ip.as_ref())
            .and_then(|ip| ip.parse().ok())
    {
        pod_ips.push(ip);
    }
    let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key).cloned());
    Some(ControllerPod {
        uid: meta.uid.clone()?,
        namespace: meta.namespace.clone()?,
        name: meta.name.clone()?,
        controller: controller.to_string(),
        resync_annotation: annotation(RESYNC_ANNOTATION),
        restart_annotation: annotation(RESTART_ANNOTATION),
        config_hash: annotation(CONFIG_HASH_ANNOTATION),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        pod_ips,
        terminating: meta.deletion_timestamp.is_some(),
        containers,
        volumes,
    })
}

/// A Pod as `mountlag lint` lists it (a one-shot, whole objects), read as the agent reads it.
pub fn node_pod(pod: &k8s_openapi::api::core::v1::Pod) -> Option<NodePod> {
    serde_json::to_value(pod)
        .ok()
        .and_then(|value| serde_json::from_value(value).ok())
}

fn strip_scheme(id: &str) -> String {
    id.split_once("://")
        .map_or(id, |(_, rest)| rest)
        .to_string()
}

fn key_paths(items: Option<&Vec<KeyToPath>>) -> Option<Vec<KeyPath>> {
    items.map(|items| {
        items
            .iter()
            .map(|i| KeyPath {
                key: i.key.clone(),
                path: i.path.clone(),
            })
            .collect()
    })
}

/// The Secret sources of a secret or projected volume; `None` for a volume without one.
pub(super) fn secret_volume(volume: &Volume) -> Option<SecretVolume> {
    if let Some(secret) = &volume.secret {
        return Some(SecretVolume {
            name: volume.name.clone(),
            kind: VolumeKind::Secret,
            sources: vec![SecretSource {
                secret: secret.secret_name.clone()?,
                items: key_paths(secret.items.as_ref()),
                optional: secret.optional.unwrap_or(false),
            }],
            has_other_sources: false,
        });
    }
    let projected = volume.projected.as_ref()?;
    let mut sources = Vec::new();
    let mut has_other_sources = false;
    for source in projected.sources.iter().flatten() {
        match source.secret.as_ref() {
            Some(secret) => sources.push(SecretSource {
                secret: secret.name.clone().unwrap_or_default(),
                items: key_paths(secret.items.as_ref()),
                optional: secret.optional.unwrap_or(false),
            }),
            None => has_other_sources = true,
        }
    }
    (!sources.is_empty()).then(|| SecretVolume {
        name: volume.name.clone(),
        kind: VolumeKind::Projected,
        sources,
        has_other_sources,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> NodePod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_pod_becomes_a_controller_pod_with_its_secret_volumes() {
        let p = pod(serde_json::json!({
            "metadata": {"uid": "u-1", "namespace": "ingress", "name": "edge-0",
                         "labels": {"app": "edge"},
                         "annotations": {"mountlag.io/resync": "v1", "other": "x"}},
            "spec": {
                "nodeName": "node-a",
                "containers": [
                    {"name": "nginx", "volumeMounts": [
                        {"name": "tls", "mountPath": "/etc/tls"},
                        {"name": "bundle", "mountPath": "/etc/ca.crt", "subPath": "ca.crt"}]},
                    {"name": "sidecar"}],
                "volumes": [
                    {"name": "tls", "secret": {"secretName": "edge-tls", "optional": true}},
                    {"name": "bundle", "projected": {"sources": [
                        {"secret": {"name": "ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"configMap": {"name": "extra"}},
                        {"secret": {"name": "edge-tls"}}]}},
                    {"name": "cm", "configMap": {"name": "x"}},
                    {"name": "only-cm", "projected": {"sources": [{"configMap": {"name": "y"}}]}}]
            },
            "status": {"podIP": "10.0.0.7",
                       "containerStatuses": [{"name": "nginx", "containerID": "containerd://abc123",
                                              "image": "", "imageID": "", "ready": true, "restartCount": 0}]}
        }));
        let cp = controller_pod(&p, "edge").unwrap();
        assert_eq!(cp.uid, "u-1");
        assert_eq!(cp.cgroup_uid(), "u-1");
        assert_eq!(cp.controller, "edge");
        assert_eq!(cp.resync_annotation.as_deref(), Some("v1"));
        assert_eq!(cp.pod_ips, vec!["10.0.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(cp.containers[0].container_id.as_deref(), Some("abc123"));
        assert_eq!(cp.containers[1].container_id, None);
        assert_eq!(cp.volumes.len(), 2, "configMap-only volumes are not ours");
        assert_eq!(cp.volumes[0].kind, VolumeKind::Secret);
        assert!(cp.volumes[0].sources[0].optional);
        let bundle = &cp.volumes[1];
        assert_eq!(bundle.kind, VolumeKind::Projected);
        assert!(bundle.has_other_sources);
        assert_eq!(
            bundle
                .sources
                .iter()
                .map(|s| s.secret.as_str())
                .collect::<Vec<_>>(),
            vec!["ca", "edge-tls"]
        );
        assert_eq!(bundle.sources[0].items.as_ref().unwrap()[0].path, "ca.crt");
        let consumers: Vec<_> = cp
            .consumers("bundle")
            .map(|(c, m)| (c.name.as_str(), m.sub_path.as_deref()))
            .collect();
        assert_eq!(consumers, vec![("nginx", Some("ca.crt"))]);
        assert_eq!(
            cp.secret_names().collect::<Vec<_>>(),
            vec!["edge-tls", "ca", "edge-tls"]
        );
    }

    #[test]
    fn a_static_pod_is_found_in_cgroups_by_its_config_hash() {
        let p = pod(serde_json::json!({
            "metadata": {"uid": "mirror-uid", "namespace": "kube-system", "name": "edge-node-a",
                         "annotations": {"kubernetes.io/config.hash": "0123456789abcdef0123456789abcdef"}}
        }));
        let cp = controller_pod(&p, "edge").unwrap();
        assert_eq!(cp.cgroup_uid(), "0123456789abcdef0123456789abcdef");
    }

    #[test]
    fn a_pod_without_identity_is_skipped() {
        let p = pod(serde_json::json!({"metadata": {"name": "x"}}));
        assert_eq!(controller_pod(&p, "edge"), None);
    }
}
