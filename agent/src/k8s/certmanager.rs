//! cert-manager's kinds and the cluster's controller pods, watched only while a controller pod
//! runs on this node, and converted here into the core's cert-manager values.
//!
//! ```text
//!  Certificate, Issuer, ClusterIssuer (cert-manager.io/v1, LeanObject) ─▶ CertManagerObject
//!  Pods label-selected by one controller profile, every node ─▶ LeanPod ─▶ PeerPod (reporter choice)
//! ```
//!
//! Conversion is lenient like the route conversion: a field of the wrong type is left out, and
//! an object without a name is skipped. A cluster without cert-manager (the kinds are not
//! served) is said once in the log and counts as listed and empty.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ApiResource};
use kube::runtime::watcher;
use mountlag_core::certmanager::reporter::PeerPod;
use mountlag_core::certmanager::{
    CertManagerKey, CertManagerKind, CertManagerObject, CertificateObject, ConditionStatus, GROUP,
    IssuerObject, IssuerRef, Readiness,
};
use mountlag_core::node::{CertManagerInput, Input};
use mountlag_core::reconcile::SecretKey;
use mountlag_core::text::{MAX_MESSAGE_BYTES, untrusted_capped};
use serde_json::Value;
use tokio::sync::mpsc;

use super::lean::{self, Lean, LeanPod};
use super::watches::{ObjectChange, watch_objects};
use crate::config::Config;

/// A cert-manager object as listed: its spec and status as JSON (read leniently below), the
/// metadata without annotations and managed fields.
pub type LeanObject = Lean<Value, Value>;

pub fn api_resource(kind: CertManagerKind) -> ApiResource {
    ApiResource {
        group: GROUP.to_string(),
        version: "v1".to_string(),
        api_version: format!("{GROUP}/v1"),
        kind: kind.as_str().to_string(),
        plural: kind.resource().to_string(),
    }
}

/// One cluster-wide watch of a cert-manager kind.
pub async fn watch_cert_manager(
    client: Client,
    kind: CertManagerKind,
    watch_config: watcher::Config,
    tx: mpsc::UnboundedSender<Input>,
) {
    let api: Api<LeanObject> = Api::all_with(client, &api_resource(kind));
    let mut reported_absent = false;
    let convert = |object: &LeanObject| {
        cert_manager_object(
            kind,
            &object.metadata,
            object.spec_json(),
            object.status_json(),
        )
    };
    watch_objects(api, watch_config, convert, |change| {
        let input = match change {
            ObjectChange::Listed(objects) => CertManagerInput::Listed { kind, objects },
            ObjectChange::Applied(object) => CertManagerInput::Applied(object),
            ObjectChange::Deleted {
                namespace, name, ..
            } => CertManagerInput::Deleted(CertManagerKey {
                kind,
                namespace: if kind.cluster_scoped() {
                    String::new()
                } else {
                    namespace.unwrap_or_default()
                },
                name,
            }),
            ObjectChange::Failed { reason, .. } if reason == "NotFound" => {
                if reported_absent {
                    return true;
                }
                reported_absent = true;
                // Said once for the agent, by the Certificates watch: the three kinds come
                // and go together with cert-manager's CRDs.
                if kind == CertManagerKind::Certificate {
                    tracing::info!(
                        "cert-manager is not installed (the cluster does not serve certificates.{GROUP}): its checks are off until it is; retrying with backoff"
                    );
                } else {
                    tracing::debug!(resource = kind.resource(), "not served");
                }
                CertManagerInput::NotInstalled { kind }
            }
            ObjectChange::Failed { reason, error } => {
                tracing::warn!(resource = kind.resource(), error = %untrusted_capped(&error.to_string(), MAX_MESSAGE_BYTES), "cert-manager watch failed; retrying with backoff");
                CertManagerInput::WatchFailed { kind, reason }
            }
        };
        tx.send(Input::CertManager(input)).is_ok()
    })
    .await;
}

/// The pods one controller profile selects, on every node: label-selected by the API server,
/// namespaces filtered here.
pub async fn watch_peers(
    client: Client,
    controller: String,
    config: std::sync::Arc<Config>,
    tx: mpsc::UnboundedSender<Input>,
) {
    let Some(profile) = config.controllers.iter().find(|c| c.name == controller) else {
        return;
    };
    if profile.selector.as_str().trim().is_empty() {
        // Never a list of every pod: without a selector each node reports what it finds.
        tracing::info!(controller = %controller, "the profile has no selector: its cert-manager findings are reported by every node that finds them");
        let _ = tx.send(Input::CertManager(CertManagerInput::PeersListed {
            controller,
            pods: Vec::new(),
        }));
        return;
    }
    let api: Api<LeanPod> = Api::all_with(client, &lean::pod_resource());
    let watch_config = super::watch_config(&config.api).labels(profile.selector.as_str());
    let convert = |pod: &LeanPod| {
        Some((
            pod.metadata.uid.clone(),
            peer_pod(&config, &controller, pod),
        ))
    };
    watch_objects(api, watch_config, convert, |change| {
        let input = match change {
            ObjectChange::Listed(pods) => CertManagerInput::PeersListed {
                controller: controller.clone(),
                pods: pods.into_iter().filter_map(|(_, peer)| peer).collect(),
            },
            ObjectChange::Applied((_, Some(peer))) => CertManagerInput::PeerApplied(peer),
            // No longer selected (or finished): gone for the reporter choice.
            ObjectChange::Applied((Some(uid), None)) => CertManagerInput::PeerDeleted {
                controller: controller.clone(),
                uid,
            },
            ObjectChange::Applied((None, None)) | ObjectChange::Deleted { uid: None, .. } => {
                return true;
            }
            ObjectChange::Deleted { uid: Some(uid), .. } => CertManagerInput::PeerDeleted {
                controller: controller.clone(),
                uid,
            },
            ObjectChange::Failed { reason, error } => {
                tracing::warn!(controller = %controller, error = %untrusted_capped(&error.to_string(), MAX_MESSAGE_BYTES), "watch of the controller's pods failed; retrying with backoff");
                CertManagerInput::PeersWatchFailed {
                    controller: controller.clone(),
                    reason,
                }
            }
        };
        tx.send(Input::CertManager(input)).is_ok()
    })
    .await;
}

/// A pod of the cluster that `controller` selects (the same first-match rule as the node's own
/// pod watch), or `None`.
pub fn peer_pod(config: &Config, controller: &str, pod: &LeanPod) -> Option<PeerPod> {
    let meta = &pod.metadata;
    let namespace = meta.namespace.clone()?;
    let no_labels = std::collections::BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&no_labels);
    if config.controller_for(&namespace, labels)?.name != controller {
        return None;
    }
    let status = pod.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return None;
    }
    let spec = pod.spec.as_ref();
    let mut secrets: Vec<SecretKey> = spec
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(super::pod::secret_volume)
        .flat_map(|volume| volume.sources)
        .map(|source| source.secret)
        .filter(|name| !name.is_empty())
        .map(|name| SecretKey {
            namespace: namespace.clone(),
            name,
        })
        .collect();
    secrets.sort();
    secrets.dedup();
    Some(PeerPod {
        uid: meta.uid.clone()?,
        namespace,
        name: meta.name.clone()?,
        controller: controller.to_string(),
        node: spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        terminating: meta.deletion_timestamp.is_some(),
        secrets,
    })
}

/// The core's view of one object from its metadata, `spec` and `status` (`Null` when absent);
/// `None` for one without a name.
pub fn cert_manager_object(
    kind: CertManagerKind,
    metadata: &ObjectMeta,
    spec: &Value,
    status: &Value,
) -> Option<CertManagerObject> {
    let name = metadata.name.clone()?;
    let namespace = metadata.namespace.clone().unwrap_or_default();
    Some(match kind {
        CertManagerKind::Certificate => CertManagerObject::Certificate(CertificateObject {
            namespace,
            name,
            uid: metadata.uid.clone().unwrap_or_default(),
            secret_name: string(&spec["secretName"]).unwrap_or_default(),
            dns_names: strings(&spec["dnsNames"]),
            issuer: string(&spec["issuerRef"]["name"]).map(|issuer| {
                IssuerRef::from_fields(
                    string(&spec["issuerRef"]["group"]).as_deref(),
                    string(&spec["issuerRef"]["kind"]).as_deref(),
                    &issuer,
                )
            }),
            ready: readiness(status),
            renewal_time: string(&status["renewalTime"]).and_then(|t| unix(&t)),
            revision: status["revision"].as_u64(),
        }),
        CertManagerKind::Issuer | CertManagerKind::ClusterIssuer => {
            let cluster = kind == CertManagerKind::ClusterIssuer;
            CertManagerObject::Issuer(IssuerObject {
                cluster,
                namespace: if cluster { String::new() } else { namespace },
                name,
                ready: readiness(status),
            })
        }
    })
}

/// The `Ready` condition of `status.conditions`.
fn readiness(status: &Value) -> Readiness {
    let Some(condition) = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"].as_str() == Some("Ready"))
    else {
        return Readiness::default();
    };
    Readiness {
        status: match condition["status"].as_str() {
            Some("True") => ConditionStatus::True,
            Some("False") => ConditionStatus::False,
            _ => ConditionStatus::Unknown,
        },
        reason: string(&condition["reason"]),
        message: string(&condition["message"]),
        since: string(&condition["lastTransitionTime"]).and_then(|t| unix(&t)),
    }
}

fn unix(rfc3339: &str) -> Option<i64> {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

fn string(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn object(json: Value) -> LeanObject {
        serde_json::from_value(json).unwrap()
    }

    fn convert(kind: CertManagerKind, object: &LeanObject) -> Option<CertManagerObject> {
        cert_manager_object(
            kind,
            &object.metadata,
            object.spec_json(),
            object.status_json(),
        )
    }

    #[test]
    fn a_peer_is_its_node_and_the_secrets_its_volumes_name_and_a_finished_pod_is_none() {
        let config = Config::from_yaml(
            "controllers:\n  - name: edge\n    selector: app=edge\n    reload: none\n",
            "test",
        )
        .unwrap();
        let json = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "edge-0", "namespace": "shop", "uid": "u-1",
                         "labels": {"app": "edge"}},
            "spec": {"nodeName": "node-b", "volumes": [
                {"name": "tls", "secret": {"secretName": "web-tls"}},
                {"name": "all", "projected": {"sources": [
                    {"secret": {"name": "ca"}}, {"configMap": {"name": "settings"}}]}},
                {"name": "tmp", "emptyDir": {}}
            ]},
            "status": {"phase": "Running"}
        });
        let pod: LeanPod = serde_json::from_value(json.clone()).unwrap();
        let peer = peer_pod(&config, "edge", &pod).unwrap();
        assert_eq!(peer.node.as_deref(), Some("node-b"));
        assert_eq!(
            peer.secrets
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>(),
            ["ca", "web-tls"]
        );
        assert!(peer.secrets.iter().all(|k| k.namespace == "shop"));
        assert!(peer_pod(&config, "other", &pod).is_none());
        let mut finished = json;
        finished["status"]["phase"] = serde_json::json!("Succeeded");
        let finished: LeanPod = serde_json::from_value(finished).unwrap();
        assert!(peer_pod(&config, "edge", &finished).is_none());
    }

    #[test]
    fn a_certificate_becomes_its_secret_names_issuer_readiness_and_renewal_time() {
        let certificate = object(serde_json::json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u"},
            "spec": {"secretName": "web-tls", "dnsNames": ["shop.example", 7],
                     "issuerRef": {"name": "le", "kind": "ClusterIssuer", "group": "cert-manager.io"}},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Failed",
                        "message": "order failed", "lastTransitionTime": "2026-12-01T10:00:00Z"}],
                       "renewalTime": "2027-01-01T00:00:00Z", "revision": 4}
        }));
        let Some(CertManagerObject::Certificate(c)) =
            convert(CertManagerKind::Certificate, &certificate)
        else {
            panic!("not a Certificate");
        };
        assert_eq!(c.secret_name, "web-tls");
        assert_eq!(
            c.dns_names,
            ["shop.example"],
            "a name of the wrong type is left out"
        );
        assert_eq!(c.issuer, Some(IssuerRef::ClusterIssuer("le".into())));
        assert_eq!(c.ready.status, ConditionStatus::False);
        assert_eq!(c.ready.since, Some(1_796_119_200));
        assert_eq!(c.renewal_time, Some(1_798_761_600));
        assert_eq!(c.revision, Some(4));
    }

    #[test]
    fn an_issuer_without_status_is_not_ready_and_an_external_issuer_is_not_judged() {
        let issuer = object(serde_json::json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
            "metadata": {"name": "ca", "namespace": "shop"}, "spec": {"ca": {}}
        }));
        let Some(CertManagerObject::Issuer(i)) = convert(CertManagerKind::Issuer, &issuer) else {
            panic!("not an Issuer");
        };
        assert!(!i.ready.is_ready());
        assert_eq!((i.cluster, i.namespace.as_str()), (false, "shop"));
        assert!(matches!(
            IssuerRef::from_fields(
                Some("awspca.cert-manager.io"),
                Some("AWSPCAClusterIssuer"),
                "pca"
            ),
            IssuerRef::External { .. }
        ));
        let nameless = object(
            serde_json::json!({"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": {}}),
        );
        assert!(convert(CertManagerKind::Issuer, &nameless).is_none());
    }
}
