//! Where an action touches the system. [`perform::Effects`] is the one executor of the node
//! model's actions; each side effect sits behind a narrow trait or function so the pipeline can
//! be driven in tests.
//!
//! ```text
//!  Action::Nudge ──▶ PodPatcher::annotate (merge patch of mountlag.io/resync) ──▶ KubeletResyncRequested
//!  Action::Event ──▶ EventLimiter ──▶ EventPublisher::publish (events.k8s.io/v1, series dedup)
//!  Action::ObjectEvent ──▶ the same, regarding a Certificate, Ingress or Gateway (cert-manager)
//!  Action::ObserveLag ──▶ mountlag_mount_lag_seconds
//!  Action::Reload ──▶ reload (process: cgroup lookup; goguard/goexe: may it be signalled;
//!                     signal: pidfd; http_reload: Caddy /load)
//!  Action::Probe ──▶ probe (one rustls handshake per name, leaf recorded)
//! ```

pub mod events;
pub mod goexe;
pub mod goguard;
pub mod http_reload;
pub mod metrics;
pub mod perform;
pub mod probe;
pub mod process;
pub mod reload;
pub mod signal;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::BoxFuture;

use mountlag_core::action::{Action, VolumeNudge};
pub use mountlag_core::events::{EventReason, Regarding, RelatedSecret};
use mountlag_core::reconcile::PodRef;
use mountlag_core::reconcile::mount::nudge_annotation;

use crate::text::{MAX_EVENT_NOTE_BYTES, MAX_MESSAGE_BYTES, sanitize, untrusted_capped};

pub use events::EventLimiter;
pub use metrics::{EffectMetrics, ExecutorMetrics, ReloadMetrics};
use metrics::{EventLabels, ResultLabel};

/// Why a call to the API failed, as a stable label value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    pub reason: String,
    pub message: String,
}

/// Patches the nudge annotation onto a pod.
pub trait PodPatcher: Send + Sync + 'static {
    fn annotate(
        &self,
        pod: &PodRef,
        key: &str,
        value: &str,
    ) -> BoxFuture<'static, Result<(), ApiFailure>>;
}

/// A rolling restart asked of a pod's workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartOutcome {
    /// This agent's patch changed the pod template: the workload's controller rolls the pods.
    Requested { workload: Regarding },
    /// The template already carries the value (another node's agent was first): nothing to do.
    AlreadyRequested { workload: Regarding },
}

/// Restarts the Deployment, DaemonSet or StatefulSet that owns a pod by annotating its pod
/// template (never by deleting pods: the workload's strategy and PodDisruptionBudgets pace it).
pub trait WorkloadRestarter: Send + Sync + 'static {
    fn restart(
        &self,
        pod: &PodRef,
        value: &str,
    ) -> BoxFuture<'static, Result<RestartOutcome, ApiFailure>>;
}

/// An Event reason from the contract, and whether it is a Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reason {
    pub name: &'static str,
    pub warning: bool,
}

impl From<EventReason> for Reason {
    fn from(reason: EventReason) -> Self {
        Self {
            name: reason.as_str(),
            warning: reason.is_warning(),
        }
    }
}

/// Publishes a Kubernetes Event regarding a pod, an Ingress or a Gateway.
pub trait EventPublisher: Send + Sync + 'static {
    fn publish(
        &self,
        regarding: &Regarding,
        reason: Reason,
        note: &str,
        related: Option<&RelatedSecret>,
    ) -> BoxFuture<'static, Result<(), ApiFailure>>;
}

/// Nudges and Events in flight to the API server at once. A renewal wave of 1,000 Secrets
/// nudges 1,000 pods and publishes as many Events; each request held ~4 KiB of request and
/// HTTP/2 stream state from the moment it was spawned, and glibc keeps that high-water for the
/// agent's life (+10 MiB after one wave at 1,000, docs/benchmarks.md, session 16). A request
/// is built only once it holds a permit. It also bounds the agent's burst on the API server.
pub const API_WRITES_AT_ONCE: usize = 32;

/// Performs actions. Cheap to clone; every call spawns its side effect so the reconcile loop
/// never waits on the API.
#[derive(Clone)]
pub struct Executor {
    patcher: Arc<dyn PodPatcher>,
    publisher: Arc<dyn EventPublisher>,
    limiter: Arc<Mutex<EventLimiter>>,
    metrics: ExecutorMetrics,
    /// [`API_WRITES_AT_ONCE`] permits, one per request in flight.
    writes: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

impl Executor {
    pub fn new(
        patcher: Arc<dyn PodPatcher>,
        publisher: Arc<dyn EventPublisher>,
        limiter: EventLimiter,
        metrics: ExecutorMetrics,
    ) -> Self {
        Self {
            patcher,
            publisher,
            limiter: Arc::new(Mutex::new(limiter)),
            metrics,
            writes: Arc::new(tokio::sync::Semaphore::new(API_WRITES_AT_ONCE)),
        }
    }

    /// Performs a nudge, an Event or a lag observation.
    pub fn execute(&self, action: Action) {
        match action {
            Action::ObserveLag { seconds } => self.metrics.lag.observe(seconds),
            Action::Nudge { pod, volumes } => {
                let this = self.clone();
                tokio::spawn(async move { this.nudge(pod, volumes).await });
            }
            Action::Event {
                pod,
                reason,
                note,
                related,
            } => self.publish(Regarding::from(&pod), reason.into(), note, related),
            Action::RouteEvent {
                regarding,
                reason,
                note,
            } => self.publish(Regarding::from(&regarding), reason.into(), note, None),
            Action::ObjectEvent {
                regarding,
                reason,
                note,
            } => self.publish(regarding, reason.into(), note, None),
            // The other actions are not the API's: see `effects::Effects::perform`.
            _ => {}
        }
    }

    /// Publishes an Event (rate-limited) without waiting for it.
    pub fn publish(
        &self,
        regarding: Regarding,
        reason: Reason,
        note: String,
        related: Option<RelatedSecret>,
    ) {
        let this = self.clone();
        tokio::spawn(async move { this.event(regarding, reason, note, related).await });
    }

    async fn nudge(&self, pod: PodRef, volumes: Vec<VolumeNudge>) {
        let annotation = nudge_annotation(&volumes);
        let attempt = volumes.iter().map(|v| v.attempt).max().unwrap_or(1);
        let names: Vec<&str> = volumes.iter().map(|v| v.volume.as_str()).collect();
        let quoted: Vec<String> = names.iter().map(|v| format!("{v:?}")).collect();
        let which = match quoted.as_slice() {
            [one] => format!("volume {one}"),
            many => format!("volumes {}", many.join(", ")),
        };
        let volume = names.join(",");
        let result = {
            // Never closed; the permit is released before the Event below takes its own.
            let _permit = self.writes.acquire().await.ok();
            self.patcher
                .annotate(&pod, crate::k8s::RESYNC_ANNOTATION, &annotation)
                .await
        };
        match result {
            Ok(()) => {
                self.metrics
                    .nudges
                    .get_or_create(&ResultLabel { result: "success" })
                    .inc();
                tracing::info!(namespace = %pod.namespace, pod = %pod.name, %volume, %annotation, attempt, "asked kubelet to resync");
                let note = format!(
                    "annotated {}={annotation} so kubelet remounts {which} now instead of at its next sync (attempt {attempt})",
                    crate::k8s::RESYNC_ANNOTATION
                );
                self.event(
                    Regarding::from(&pod),
                    EventReason::KubeletResyncRequested.into(),
                    note,
                    None,
                )
                .await;
            }
            Err(failure) => {
                self.metrics
                    .nudges
                    .get_or_create(&ResultLabel { result: "error" })
                    .inc();
                self.metrics.api_error("pods", &failure.reason);
                tracing::warn!(namespace = %pod.namespace, pod = %pod.name, %volume, error = %untrusted_capped(&failure.message, MAX_MESSAGE_BYTES), "nudge failed");
            }
        }
    }

    async fn event(
        &self,
        regarding: Regarding,
        reason: Reason,
        note: String,
        related: Option<RelatedSecret>,
    ) {
        // Notes quote names, subjects, process titles and error texts from disk, /proc and the
        // network: whatever a note holds, it is escaped and fits the Events API's limit before it
        // is published or logged.
        let note = sanitize(&note, MAX_EVENT_NOTE_BYTES).into_owned();
        let allowed = self
            .limiter
            .lock()
            .map(|mut l| l.allow(&regarding.uid, reason.name, Instant::now()))
            .unwrap_or(true);
        if !allowed {
            self.count_event(reason, "rate_limited");
            tracing::debug!(kind = regarding.kind, name = %regarding.name, reason = reason.name, "event rate-limited");
            return;
        }
        let _permit = self.writes.acquire().await.ok();
        match self
            .publisher
            .publish(&regarding, reason, &note, related.as_ref())
            .await
        {
            Ok(()) => {
                self.count_event(reason, "published");
                tracing::info!(namespace = %regarding.namespace, kind = regarding.kind, name = %regarding.name, reason = reason.name, %note, "event");
            }
            Err(failure) => {
                self.count_event(reason, "error");
                self.metrics.api_error("events", &failure.reason);
                tracing::warn!(kind = regarding.kind, name = %regarding.name, reason = reason.name, error = %untrusted_capped(&failure.message, MAX_MESSAGE_BYTES), "cannot publish event");
            }
        }
    }

    fn count_event(&self, reason: Reason, result: &'static str) {
        self.metrics
            .events
            .get_or_create(&EventLabels {
                reason: reason.name,
                result,
            })
            .inc();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures::FutureExt as _;
    use tokio::sync::mpsc;

    use super::*;

    struct NoPatches;

    impl PodPatcher for NoPatches {
        fn annotate(
            &self,
            _: &PodRef,
            _: &str,
            _: &str,
        ) -> BoxFuture<'static, Result<(), ApiFailure>> {
            async { Ok(()) }.boxed()
        }
    }

    /// Hands every published note to the test.
    struct Notes(mpsc::UnboundedSender<String>);

    impl EventPublisher for Notes {
        fn publish(
            &self,
            _: &Regarding,
            _: Reason,
            note: &str,
            _: Option<&RelatedSecret>,
        ) -> BoxFuture<'static, Result<(), ApiFailure>> {
            let _ = self.0.send(note.to_string());
            async { Ok(()) }.boxed()
        }
    }

    /// Counts the patches in flight; each takes 10 ms.
    #[derive(Default)]
    struct SlowPatches {
        in_flight: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
        done: std::sync::atomic::AtomicUsize,
    }

    impl PodPatcher for Arc<SlowPatches> {
        fn annotate(
            &self,
            _: &PodRef,
            _: &str,
            _: &str,
        ) -> BoxFuture<'static, Result<(), ApiFailure>> {
            use std::sync::atomic::Ordering::SeqCst;
            let this = Arc::clone(self);
            async move {
                let now = this.in_flight.fetch_add(1, SeqCst) + 1;
                this.most.fetch_max(now, SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                this.in_flight.fetch_sub(1, SeqCst);
                this.done.fetch_add(1, SeqCst);
                Ok(())
            }
            .boxed()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wave_of_nudges_keeps_no_more_than_the_bound_in_flight_and_sends_them_all() {
        use std::sync::atomic::Ordering::SeqCst;
        let patches = Arc::new(SlowPatches::default());
        let (tx, mut notes) = mpsc::unbounded_channel();
        let executor = Executor::new(
            Arc::new(Arc::clone(&patches)),
            Arc::new(Notes(tx)),
            EventLimiter::default(),
            ExecutorMetrics::register(&mut prometheus_client::registry::Registry::default()),
        );
        let wave = 3 * API_WRITES_AT_ONCE;
        for i in 0..wave {
            executor.execute(Action::Nudge {
                pod: PodRef {
                    namespace: "ingress".into(),
                    name: format!("edge-{i}"),
                    uid: format!("uid-{i}"),
                },
                volumes: vec![VolumeNudge {
                    volume: "tls".into(),
                    version: "v2".into(),
                    attempt: 1,
                }],
            });
        }
        // Every nudge is followed by its Event.
        for _ in 0..wave {
            notes.recv().await.unwrap();
        }
        assert_eq!(patches.done.load(SeqCst), wave);
        assert_eq!(patches.most.load(SeqCst), API_WRITES_AT_ONCE);
    }

    #[tokio::test]
    async fn event_notes_are_escaped_and_fit_the_events_api() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let executor = Executor::new(
            Arc::new(NoPatches),
            Arc::new(Notes(tx)),
            EventLimiter::default(),
            ExecutorMetrics::register(&mut prometheus_client::registry::Registry::default()),
        );
        let pod = PodRef {
            namespace: "ingress".into(),
            name: "edge-0".into(),
            uid: "uid-1".into(),
        };
        // What a note quoting a hostile PEM file name, subject and process title looks like.
        let hostile = format!(
            "volume \"tls\" holds material a server must not load: \u{1b}[2J\u{202e}x.pem; \
             comm \u{1b}]0;owned\u{7}\r\nforged log line; {}; {}",
            "é".repeat(600),
            "A".repeat(1 << 20)
        );
        executor.publish(
            Regarding::from(&pod),
            EventReason::SecretMountStuck.into(),
            hostile.clone(),
            None,
        );
        let note = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(note.len() <= 1024, "{} bytes", note.len());
        assert!(!note.chars().any(crate::text::needs_escape), "{note:?}");
        assert!(note.starts_with("volume \"tls\" holds material"), "{note}");
        assert!(note.contains("\\u{1b}[2J\\u{202e}x.pem"), "{note}");
        assert!(note.contains("\\u{7}\\r\\nforged"), "{note}");
        assert!(note.ends_with(" bytes)"), "{note}");
    }
}
