//! The Kubernetes API behind [`PodPatcher`] and [`EventPublisher`].

use futures::FutureExt as _;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::effects::{ApiFailure, EventPublisher, PodPatcher, Reason, Regarding, RelatedSecret};
use crate::reconcile::PodRef;
use crate::text::{MAX_EVENT_NOTE_BYTES, sanitize};

/// `reportingController` of every Event mountlag publishes.
pub const REPORTING_CONTROLLER: &str = "mountlag.io/agent";
/// Field manager name of mountlag's patches.
pub const FIELD_MANAGER: &str = "mountlag";

pub fn api_failure(err: &kube::Error) -> ApiFailure {
    let reason = match err {
        kube::Error::Api(status) => {
            if status.reason.is_empty() {
                format!("http_{}", status.code)
            } else {
                status.reason.clone()
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => "unreachable".to_string(),
        kube::Error::SerdeError(_) => "decode".to_string(),
        _ => "other".to_string(),
    };
    ApiFailure {
        reason,
        message: err.to_string(),
    }
}

#[derive(Clone)]
pub struct KubePodPatcher {
    client: Client,
}

impl std::fmt::Debug for KubePodPatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubePodPatcher").finish_non_exhaustive()
    }
}

impl KubePodPatcher {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl PodPatcher for KubePodPatcher {
    fn annotate(
        &self,
        pod: &PodRef,
        key: &str,
        value: &str,
    ) -> BoxFuture<'static, Result<(), ApiFailure>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let name = pod.name.clone();
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        async move {
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Merge(&patch),
            )
            .await
            .map(|_| ())
            .map_err(|e| api_failure(&e))
        }
        .boxed()
    }
}

/// Publishes through kube-runtime's recorder: `events.k8s.io/v1`, repeats folded into a series.
#[derive(Clone)]
pub struct KubeEventPublisher {
    recorder: Recorder,
}

impl std::fmt::Debug for KubeEventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeEventPublisher").finish_non_exhaustive()
    }
}

impl KubeEventPublisher {
    pub fn new(client: Client, node_name: &str) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.to_string(),
            instance: Some(node_name.to_string()),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }
}

pub fn object_reference(regarding: &Regarding) -> ObjectReference {
    ObjectReference {
        api_version: Some(regarding.api_version.to_string()),
        kind: Some(regarding.kind.to_string()),
        name: Some(regarding.name.clone()),
        namespace: Some(regarding.namespace.clone()),
        uid: Some(regarding.uid.clone()),
        ..ObjectReference::default()
    }
}

impl EventPublisher for KubeEventPublisher {
    fn publish(
        &self,
        regarding: &Regarding,
        reason: Reason,
        note: &str,
        related: Option<&RelatedSecret>,
    ) -> BoxFuture<'static, Result<(), ApiFailure>> {
        let recorder = self.recorder.clone();
        let reference = object_reference(regarding);
        let event = Event {
            type_: if reason.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.name.to_string(),
            // The Events API caps note at 1 kB (bytes, not characters): a longer one is refused.
            note: Some(sanitize(note, MAX_EVENT_NOTE_BYTES).into_owned()),
            action: action_of(reason).to_string(),
            secondary: related.map(|secret| ObjectReference {
                api_version: Some("v1".to_string()),
                kind: Some("Secret".to_string()),
                name: Some(secret.name.clone()),
                namespace: Some(secret.namespace.clone()),
                uid: Some(secret.uid.clone()),
                resource_version: Some(secret.resource_version.clone()),
                ..ObjectReference::default()
            }),
        };
        async move {
            recorder
                .publish(&event, &reference)
                .await
                .map_err(|e| api_failure(&e))
        }
        .boxed()
    }
}

/// The Events API's `action`: what mountlag was doing when it observed the reason.
fn action_of(reason: Reason) -> &'static str {
    match reason.name {
        "SecretMountStuck" | "SecretMountRecovered" => "CompareMount",
        "KubeletResyncRequested" => "NudgeKubelet",
        "SubPathNeverUpdates" => "Discover",
        "InvalidCertificateMaterial" | "ControllerProcessNotFound" | "ReloadSignalWithheld" => {
            "Reload"
        }
        "ControllerReloaded" | "ReloadUnverified" => "Reload",
        "TLSSecretMissing" | "TLSSecretInvalid" | "TLSSecretRefNotPermitted" => "ResolveHosts",
        _ => "Verify",
    }
}
