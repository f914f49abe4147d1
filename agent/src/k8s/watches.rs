//! The agent's watches on the API: one on the node's pods, one per referenced Secret. Each
//! event is converted here, at the edge, into a node-model [`Input`]; nothing downstream sees a
//! `k8s_openapi` type.

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Client;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use mountlag_core::node::Input;
use mountlag_core::pod::ControllerPod;
use mountlag_core::reconcile::SecretKey;
use mountlag_core::secret::SecretView;
use mountlag_core::text::{MAX_MESSAGE_BYTES, untrusted_capped};
use tokio::sync::mpsc;

use crate::admin::Heartbeat;
use crate::config::Config;
use crate::k8s::sinks::api_failure;
use crate::k8s::{controller_pod, secret_view};

/// The pod as the first controller profile that selects it sees it; `None` for a pod no profile
/// selects, or one that has finished (`Succeeded`, `Failed`).
pub fn select_controller(config: &Config, pod: &Pod) -> Option<ControllerPod> {
    let namespace = pod.metadata.namespace.as_deref()?;
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let profile = config
        .controllers
        .iter()
        .find(|c| c.selects(namespace, &labels))?;
    controller_pod(pod, &profile.name)
}

/// One watch on the node's pods; label selectors are applied here, not by the API server,
/// because several profiles may select different pods of the node.
pub async fn watch_pods(
    client: Client,
    node: String,
    config: std::sync::Arc<Config>,
    tx: mpsc::UnboundedSender<Input>,
    beat: Heartbeat,
) {
    let api: Api<Pod> = Api::all(client);
    let watch_config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher::watcher(api, watch_config)
        .default_backoff()
        .boxed();
    let mut listing: Vec<ControllerPod> = Vec::new();
    loop {
        // An API outage is not a wedged loop: pings are answered while waiting for the stream.
        let next = beat.answer_pings_while(stream.try_next()).await;
        beat.beat();
        let input = match next {
            Ok(Some(Event::Init)) => {
                listing.clear();
                continue;
            }
            Ok(Some(Event::InitApply(pod))) => {
                listing.extend(select_controller(&config, &pod));
                continue;
            }
            Ok(Some(Event::InitDone)) => Input::PodsListed(std::mem::take(&mut listing)),
            Ok(Some(Event::Apply(pod))) => match select_controller(&config, &pod) {
                Some(pod) => Input::PodApplied(pod),
                None => Input::PodUnselected {
                    uid: pod.metadata.uid,
                },
            },
            Ok(Some(Event::Delete(pod))) => match pod.metadata.uid {
                Some(uid) => Input::PodDeleted { uid },
                None => continue,
            },
            Ok(None) => return,
            Err(err) => {
                // kube's error quotes the API server's answer: escaped and cut.
                tracing::warn!(error = %untrusted_capped(&err.to_string(), MAX_MESSAGE_BYTES), "pod watch failed; retrying with backoff");
                Input::PodWatchFailed {
                    reason: watch_error_reason(&err),
                }
            }
        };
        if tx.send(input).is_err() {
            return;
        }
    }
}

/// One watch per referenced Secret, field-selected by name: never a namespace-wide list.
pub async fn watch_secret(client: Client, key: SecretKey, tx: mpsc::UnboundedSender<Input>) {
    let api: Api<Secret> = Api::namespaced(client, &key.namespace);
    let watch_config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
    let mut stream = watcher::watcher(api, watch_config)
        .default_backoff()
        .boxed();
    let mut listed: Option<SecretView> = None;
    let observed = |view| Input::SecretObserved {
        key: key.clone(),
        view,
    };
    loop {
        let input = match stream.try_next().await {
            Ok(Some(Event::Init)) => {
                listed = None;
                continue;
            }
            Ok(Some(Event::InitApply(secret))) => {
                listed = secret_view(&secret);
                continue;
            }
            Ok(Some(Event::InitDone)) => observed(listed.take()),
            Ok(Some(Event::Apply(secret))) => observed(secret_view(&secret)),
            Ok(Some(Event::Delete(_))) => observed(None),
            Ok(None) => return,
            Err(err) => {
                let reason = watch_error_reason(&err);
                // A missing grant is the usual cause and the user's to fix: say where.
                let hint = if reason == "Forbidden" {
                    "grant the ClusterRole mountlag-secret-reader in this namespace (the overlay's secret-reads.yaml, components/route-secrets for Ingress and Gateway Secrets, or components/cluster-wide-secrets; docs/install.md)"
                } else {
                    "retrying with backoff"
                };
                tracing::warn!(namespace = %key.namespace, secret = %key.name, error = %untrusted_capped(&err.to_string(), MAX_MESSAGE_BYTES), hint, "secret watch failed; retrying");
                Input::SecretWatchFailed {
                    key: key.clone(),
                    reason,
                }
            }
        };
        if tx.send(input).is_err() {
            return;
        }
    }
}

pub(super) fn watch_error_reason(err: &watcher::Error) -> String {
    match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => api_failure(e).reason,
        watcher::Error::WatchError(status) => {
            if status.reason.is_empty() {
                format!("http_{}", status.code)
            } else {
                status.reason.clone()
            }
        }
        _ => "other".to_string(),
    }
}
