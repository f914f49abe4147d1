//! The agent's watches on the API: one on the node's pods, one per referenced Secret. Each
//! event is converted here, at the edge, into a node-model [`Input`]; nothing downstream sees a
//! `k8s_openapi` type.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use mountlag_core::cert::SharedPemCache;
use mountlag_core::node::Input;
use mountlag_core::pod::ControllerPod;
use mountlag_core::reconcile::SecretKey;
use mountlag_core::secret::SecretView;
use mountlag_core::text::{MAX_MESSAGE_BYTES, untrusted_capped};
use tokio::sync::{Semaphore, mpsc};

use crate::admin::Heartbeat;
use crate::config::Config;
use crate::k8s::lean::NodePod;
use crate::k8s::named_watch::watch_named;
use crate::k8s::sinks::api_failure;
use crate::k8s::{controller_pod, secret_view_with};

/// The pod as the first controller profile that selects it sees it; `None` for a pod no profile
/// selects, or one that has finished (`Succeeded`, `Failed`).
pub fn select_controller(config: &Config, pod: &NodePod) -> Option<ControllerPod> {
    let namespace = pod.metadata.namespace.as_deref()?;
    let no_labels = std::collections::BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&no_labels);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let profile = config
        .controllers
        .iter()
        .find(|c| c.selects(namespace, labels))?;
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
    let api: Api<NodePod> = Api::all_with(client, &crate::k8s::lean::pod_resource());
    let watch_config =
        crate::k8s::watch_config(&config.api).fields(&format!("spec.nodeName={node}"));
    let mut stream = RelistingWatch::new(api, watch_config);
    let mut listing: Vec<ControllerPod> = Vec::new();
    loop {
        // An API outage is not a wedged loop: pings are answered while waiting for the stream.
        let next = beat.answer_pings_while(stream.next()).await;
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

/// One watch per referenced Secret, field-selected by name: never a namespace-wide list. Read
/// with [`watch_named`], which keeps no read buffer while the Secret does not change. The
/// certificates it parses go into `pem_cache` too, for the volume read after kubelet's swap.
pub async fn watch_secret(
    client: Client,
    key: SecretKey,
    watch_config: watcher::Config,
    tx: mpsc::UnboundedSender<Input>,
    pem_cache: SharedPemCache,
    lists: Arc<Semaphore>,
) {
    let (namespace, name, timeout) = (
        key.namespace.clone(),
        key.name.clone(),
        watch_config.timeout,
    );
    let mut stream = RelistingWatch::starting_with(move || {
        watch_named::<Secret>(
            client.clone(),
            &namespace,
            &name,
            timeout,
            Arc::clone(&lists),
        )
    });
    let mut listed: Option<SecretView> = None;
    // Only the first failure of a run is a warning: through an API outage every watch fails
    // again at each backoff (at 1,000 Secrets, ~40 lines a second), and the status already
    // says how many are failing.
    let mut warned = false;
    let observed = |view| Input::SecretObserved {
        key: key.clone(),
        view,
    };
    loop {
        let input = match stream.next().await {
            Ok(Some(Event::Init)) => {
                listed = None;
                continue;
            }
            Ok(Some(Event::InitApply(secret))) => {
                listed = secret_view_with(&secret, Some(&pem_cache));
                continue;
            }
            Ok(Some(Event::InitDone)) => {
                warned = false;
                observed(listed.take())
            }
            Ok(Some(Event::Apply(secret))) => observed(secret_view_with(&secret, Some(&pem_cache))),
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
                let text = err.to_string();
                let error = untrusted_capped(&text, MAX_MESSAGE_BYTES);
                if std::mem::replace(&mut warned, true) {
                    tracing::debug!(namespace = %key.namespace, secret = %key.name, %error, hint, "secret watch failed again; retrying");
                } else {
                    tracing::warn!(namespace = %key.namespace, secret = %key.name, %error, hint, "secret watch failed; retrying");
                }
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

pub(super) type WatchStream<K> = BoxStream<'static, Result<Event<K>, watcher::Error>>;

/// A kube watcher that lists afresh after every error, after a backoff.
///
/// kube's own watcher resumes a failed watch from its last resourceVersion without a word, so
/// nothing would tell the node model that its view of the API is current again until the
/// object next changes, and the model judges no mount while its view may be stale (an outage
/// would silence every Event and nudge for the mounts of Secrets that do not change). A fresh
/// list ends with `InitDone`, which says so. The cost is one list of the watched objects (one
/// Secret, or the node's pods) per failure, spread by the jittered backoff.
pub(super) struct RelistingWatch<K> {
    start: Box<dyn Fn() -> WatchStream<K> + Send>,
    stream: WatchStream<K>,
    /// Failures since the last complete list.
    failures: u32,
    restart: bool,
}

impl<K> RelistingWatch<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    /// kube's watcher on `api`.
    pub(super) fn new(api: Api<K>, config: watcher::Config) -> Self {
        Self::starting_with(move || watcher::watcher(api.clone(), config.clone()).boxed())
    }

    /// The stream `start` makes, made again after every error.
    pub(super) fn starting_with(start: impl Fn() -> WatchStream<K> + Send + 'static) -> Self {
        Self {
            stream: start(),
            start: Box::new(start),
            failures: 0,
            restart: false,
        }
    }

    /// The next event; after an error, the next call waits out the backoff and lists again.
    pub(super) async fn next(&mut self) -> Result<Option<Event<K>>, watcher::Error> {
        if self.restart {
            tokio::time::sleep(relist_backoff(self.failures, random_unit())).await;
            self.stream = (self.start)();
            self.restart = false;
        }
        let next = self.stream.try_next().await;
        match &next {
            Err(_) => {
                self.failures = self.failures.saturating_add(1);
                self.restart = true;
            }
            Ok(Some(Event::InitDone)) => self.failures = 0,
            Ok(_) => {}
        }
        next
    }
}

/// kube's default backoff: 0.8 s doubling up to 30 s, each wait drawn from its upper half
/// (`unit` in [0, 1)) so that a thousand watches failing together do not all list together.
pub(super) fn relist_backoff(failures: u32, unit: f64) -> std::time::Duration {
    let exponent = failures.saturating_sub(1).min(6);
    let ceiling = (0.8 * f64::from(1u32 << exponent)).min(30.0);
    std::time::Duration::from_secs_f64(ceiling * (0.5 + 0.5 * unit.clamp(0.0, 1.0)))
}

/// A random number in [0, 1) without a dependency: std's per-map random hash keys.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod relist_tests {
    use super::relist_backoff;
    use std::time::Duration;

    #[test]
    fn the_backoff_doubles_from_under_a_second_to_thirty_seconds_with_jitter_below_it() {
        let ceilings: Vec<Duration> = (1..=9).map(|n| relist_backoff(n, 1.0)).collect();
        assert_eq!(
            ceilings,
            [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0].map(Duration::from_secs_f64)
        );
        assert_eq!(relist_backoff(1, 0.0), Duration::from_millis(400));
        assert_eq!(relist_backoff(u32::MAX, 0.5), Duration::from_secs_f64(22.5));
        let unit = super::random_unit();
        assert!((0.0..1.0).contains(&unit), "{unit}");
    }
}

/// What a cluster-wide watch of converted objects saw: a complete (re)list, one object applied
/// or deleted (its namespace and name), or an error with its stable reason (kube's watcher
/// then retries with backoff).
#[derive(Debug)]
pub(super) enum ObjectChange<T> {
    Listed(Vec<T>),
    Applied(T),
    Deleted {
        namespace: Option<String>,
        name: String,
        uid: Option<String>,
    },
    Failed {
        reason: String,
        error: watcher::Error,
    },
}

/// Watches `api` with kube's watcher (default backoff), converting each object with
/// `convert` (objects it cannot read are skipped) and handing every change to `handle` until it
/// returns `false` or the stream ends.
pub(super) async fn watch_objects<K, T>(
    api: Api<K>,
    config: watcher::Config,
    convert: impl Fn(&K) -> Option<T>,
    mut handle: impl FnMut(ObjectChange<T>) -> bool,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    use futures::TryStreamExt as _;
    use kube::runtime::WatchStreamExt as _;
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut listing: Vec<T> = Vec::new();
    loop {
        let change = match stream.try_next().await {
            Ok(Some(Event::Init)) => {
                listing.clear();
                continue;
            }
            Ok(Some(Event::InitApply(object))) => {
                listing.extend(convert(&object));
                continue;
            }
            Ok(Some(Event::InitDone)) => ObjectChange::Listed(std::mem::take(&mut listing)),
            Ok(Some(Event::Apply(object))) => match convert(&object) {
                Some(object) => ObjectChange::Applied(object),
                None => continue,
            },
            Ok(Some(Event::Delete(object))) => match object.meta().name.clone() {
                Some(name) => ObjectChange::Deleted {
                    namespace: object.meta().namespace.clone(),
                    name,
                    uid: object.meta().uid.clone(),
                },
                None => continue,
            },
            Ok(None) => return,
            Err(error) => ObjectChange::Failed {
                reason: watch_error_reason(&error),
                error,
            },
        };
        if !handle(change) {
            return;
        }
    }
}
