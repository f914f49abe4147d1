//! The Kubernetes API behind [`WorkloadRestarter`]: Pod → ReplicaSet → Deployment, or
//! DaemonSet, or StatefulSet; then one merge patch of the pod template's annotation.
//!
//! The patch carries the workload's `resourceVersion` as a precondition, so when agents on
//! several nodes ask for the same restart at once exactly one patch changes the template (the
//! others get 409, read the workload again and find the value already there): one rollout per
//! rotation, one `RollingRestartRequested` Event.

use futures::FutureExt as _;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use mountlag_core::pod::RESTART_ANNOTATION;

use super::sinks::{FIELD_MANAGER, api_failure};
use crate::effects::{ApiFailure, Regarding, RestartOutcome, WorkloadRestarter};
use crate::reconcile::PodRef;

/// Conflicts tolerated before giving up (each means another writer changed the workload).
const MAX_CONFLICTS: usize = 3;

#[derive(Clone)]
pub struct KubeWorkloadRestarter {
    client: Client,
}

impl std::fmt::Debug for KubeWorkloadRestarter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeWorkloadRestarter")
            .finish_non_exhaustive()
    }
}

impl KubeWorkloadRestarter {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl WorkloadRestarter for KubeWorkloadRestarter {
    fn restart(
        &self,
        pod: &PodRef,
        value: &str,
    ) -> BoxFuture<'static, Result<RestartOutcome, ApiFailure>> {
        let client = self.client.clone();
        let pod = pod.clone();
        let value = value.to_string();
        async move { restart(client, pod, value).await }.boxed()
    }
}

/// The workload kinds whose controllers roll pods when the template changes.
fn workload_kind(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" => Some("Deployment"),
        "DaemonSet" => Some("DaemonSet"),
        "StatefulSet" => Some("StatefulSet"),
        _ => None,
    }
}

fn controller_owner(meta: &ObjectMeta) -> Option<(String, String)> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.clone(), o.name.clone()))
}

fn refused(message: String) -> ApiFailure {
    ApiFailure {
        reason: "no_workload".to_string(),
        message,
    }
}

async fn restart(client: Client, pod: PodRef, value: String) -> Result<RestartOutcome, ApiFailure> {
    let namespace = pod.namespace.clone();
    let found: Pod = Api::namespaced(client.clone(), &namespace)
        .get(&pod.name)
        .await
        .map_err(|e| api_failure(&e))?;
    let Some((owner_kind, owner_name)) = controller_owner(&found.metadata) else {
        return Err(refused(format!(
            "pod {namespace}/{} has no controller: nothing would replace it, so it is not restarted",
            pod.name
        )));
    };
    let (kind, name) = if owner_kind == "ReplicaSet" {
        let replica_set: ReplicaSet = Api::namespaced(client.clone(), &namespace)
            .get(&owner_name)
            .await
            .map_err(|e| api_failure(&e))?;
        match controller_owner(&replica_set.metadata) {
            Some((kind, name)) if kind == "Deployment" => ("Deployment", name),
            _ => {
                return Err(refused(format!(
                    "pod {namespace}/{} belongs to ReplicaSet {owner_name} without a Deployment: changing its template replaces no pod",
                    pod.name
                )));
            }
        }
    } else if let Some(kind) = workload_kind(&owner_kind) {
        (kind, owner_name)
    } else {
        return Err(refused(format!(
            "pod {namespace}/{} belongs to {owner_kind} {owner_name}, not to a Deployment, DaemonSet or StatefulSet",
            pod.name
        )));
    };
    let resource = ApiResource {
        group: "apps".into(),
        version: "v1".into(),
        api_version: "apps/v1".into(),
        kind: kind.into(),
        plural: format!("{}s", kind.to_lowercase()),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &resource);
    for _ in 0..MAX_CONFLICTS {
        let workload = api.get(&name).await.map_err(|e| api_failure(&e))?;
        let regarding = Regarding {
            api_version: "apps/v1",
            kind,
            namespace: namespace.clone(),
            name: name.clone(),
            uid: workload.metadata.uid.clone().unwrap_or_default(),
        };
        let current = workload.data["spec"]["template"]["metadata"]["annotations"]
            [RESTART_ANNOTATION]
            .as_str();
        if current == Some(value.as_str()) {
            return Ok(RestartOutcome::AlreadyRequested {
                workload: regarding,
            });
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": workload.metadata.resource_version},
            "spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: value}}}},
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        match api.patch(&name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                return Ok(RestartOutcome::Requested {
                    workload: regarding,
                });
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(err) => return Err(api_failure(&err)),
        }
    }
    Err(ApiFailure {
        reason: "Conflict".to_string(),
        message: format!(
            "{kind} {namespace}/{name} kept changing under {MAX_CONFLICTS} patches; retried with the next reload attempt"
        ),
    })
}
