//! The executor's metrics, in one place: nudges, API errors, Events and the API→disk lag
//! ([`ExecutorMetrics`]); reloads, served-certificate match and notAfter ([`ReloadMetrics`]);
//! all registered into the agent's one registry by [`EffectMetrics::register`].

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use mountlag_core::reconcile::reload::ReloadResult;

use crate::admin::AgentMetrics;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ResultLabel {
    pub(super) result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ApiErrorLabels {
    pub resource: String,
    pub reason: String,
}

/// The executor's metrics, registered into the agent's one registry.
#[derive(Debug, Clone)]
pub struct ExecutorMetrics {
    pub(super) nudges: Family<ResultLabel, Counter>,
    pub api_errors: Family<ApiErrorLabels, Counter>,
    pub(super) lag: Histogram,
    pub(super) events: Family<EventLabels, Counter>,
    /// What verification costs: one per handshake, `served` (a leaf came back) or `failed`.
    pub(super) handshakes: Family<ResultLabel, Counter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct EventLabels {
    pub(super) reason: &'static str,
    pub(super) result: &'static str,
}

/// Buckets from 50 ms (a nudged remount) to 10 minutes (kubelet's slowest sync and beyond).
const LAG_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 90.0, 120.0, 300.0, 600.0,
];

impl ExecutorMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            nudges: Family::default(),
            api_errors: Family::default(),
            lag: Histogram::new(LAG_BUCKETS),
            events: Family::default(),
            handshakes: Family::default(),
        };
        // The fixed label sets exist from the start, so dashboards see zeros, not gaps.
        for result in ["success", "error"] {
            drop(metrics.nudges.get_or_create(&ResultLabel { result }));
        }
        for result in ["served", "failed"] {
            drop(metrics.handshakes.get_or_create(&ResultLabel { result }));
        }
        registry.register(
            "mountlag_kubelet_nudges",
            "Pod annotation patches that ask kubelet to resync a lagging mount",
            metrics.nudges.clone(),
        );
        registry.register(
            "mountlag_api_errors",
            "Failed Kubernetes API calls and watch errors",
            metrics.api_errors.clone(),
        );
        registry.register_with_unit(
            "mountlag_mount_lag",
            "Time from an API change being observed to the volume on disk matching it",
            prometheus_client::registry::Unit::Seconds,
            metrics.lag.clone(),
        );
        registry.register(
            "mountlag_tls_handshakes",
            "TLS handshakes made to verify served certificates: served (a leaf came back) or failed",
            metrics.handshakes.clone(),
        );
        registry.register(
            "mountlag_events",
            "Kubernetes Events by reason and whether they were published, rate-limited or failed",
            metrics.events.clone(),
        );
        metrics
    }

    /// Counts a probe round's handshakes.
    pub fn handshakes(&self, round: &mountlag_core::reconcile::reload::ProbeRound) {
        let served = round.served.values().filter(|r| r.is_ok()).count();
        let failed = round.served.len() - served;
        for (result, n) in [("served", served), ("failed", failed)] {
            self.handshakes
                .get_or_create(&ResultLabel { result })
                .inc_by(n as u64);
        }
    }

    pub fn api_error(&self, resource: &str, reason: &str) {
        self.api_errors
            .get_or_create(&ApiErrorLabels {
                resource: resource.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    namespace: String,
    pod: String,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ServedLabels {
    pub namespace: String,
    pub pod: String,
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TlsHostLabels {
    pub controller: String,
    pub state: &'static str,
}

/// One cert-manager finding this node reports (`reason` is the Event reason).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CertManagerFindingLabels {
    pub reason: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct NotAfterLabels {
    pub namespace: String,
    pub secret: String,
    pub source: &'static str,
}

/// Buckets from 5 ms (a signal and a handshake) to the verify timeout range.
const RELOAD_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// `mountlag_reloads_total`, `mountlag_reload_duration_seconds`,
/// `mountlag_served_certificate_match`, `mountlag_certificate_not_after_timestamp_seconds`.
#[derive(Debug, Clone)]
pub struct ReloadMetrics {
    reloads: Family<ReloadLabels, Counter>,
    duration: Histogram,
    pub served_match: Family<ServedLabels, Gauge>,
    pub not_after: Family<NotAfterLabels, Gauge>,
    pub tls_hosts: Family<TlsHostLabels, Gauge>,
    pub cert_manager_findings: Family<CertManagerFindingLabels, Gauge>,
}

impl ReloadMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reloads: Family::default(),
            duration: Histogram::new(RELOAD_BUCKETS),
            served_match: Family::default(),
            not_after: Family::default(),
            tls_hosts: Family::default(),
            cert_manager_findings: Family::default(),
        };
        registry.register(
            "mountlag_reloads",
            "Controller reloads by result (verified, unverified, withheld, signal_withheld, failed)",
            metrics.reloads.clone(),
        );
        registry.register_with_unit(
            "mountlag_reload_duration",
            "Time from the new files appearing on disk to the new leaf being served",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register(
            "mountlag_served_certificate_match",
            "1 when the controller serves the expected leaf on every probed name, else 0",
            metrics.served_match.clone(),
        );
        registry.register(
            "mountlag_tls_hosts",
            "TLS hosts from Ingress and Gateway objects by controller and state (ok, unknown, secret_missing, secret_invalid, ref_not_permitted)",
            metrics.tls_hosts.clone(),
        );
        registry.register(
            "mountlag_cert_manager_findings",
            "cert-manager findings this node reports, one series each (reason: CertificateNotReady, CertificateRenewalOverdue, IssuerNotReady, TLSHostNotCovered); one node reports each finding",
            metrics.cert_manager_findings.clone(),
        );
        registry.register_with_unit(
            "mountlag_certificate_not_after_timestamp",
            "notAfter of the leaf, as the API, the disk and the controller have it",
            Unit::Seconds,
            metrics.not_after.clone(),
        );
        metrics
    }

    pub fn finished(&self, namespace: &str, pod: &str, result: ReloadResult, seconds: f64) {
        self.reloads
            .get_or_create(&ReloadLabels {
                namespace: namespace.to_string(),
                pod: pod.to_string(),
                result: result.label(),
            })
            .inc();
        if result == ReloadResult::Verified {
            self.duration.observe(seconds);
        }
    }

    /// Forgets a pod's series when it goes away, so label cardinality stays bounded.
    pub fn forget_pod(&self, namespace: &str, pod: &str) {
        for result in [
            ReloadResult::Verified,
            ReloadResult::Unverified,
            ReloadResult::Withheld,
            ReloadResult::SignalWithheld,
            ReloadResult::Failed,
        ] {
            self.reloads.remove(&ReloadLabels {
                namespace: namespace.to_string(),
                pod: pod.to_string(),
                result: result.label(),
            });
        }
    }
}

/// Every metric the executor writes, registered together.
#[derive(Debug, Clone)]
pub struct EffectMetrics {
    pub executor: ExecutorMetrics,
    pub reload: ReloadMetrics,
    pub agent: AgentMetrics,
    /// `mountlag_inotify_watches`, read on each scrape.
    pub inotify_watches: Arc<AtomicUsize>,
}

impl EffectMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let inotify_watches = Arc::default();
        crate::admin::register_inotify_watches(registry, Arc::clone(&inotify_watches));
        Self {
            executor: ExecutorMetrics::register(registry),
            reload: ReloadMetrics::register(registry),
            agent: AgentMetrics::register(registry),
            inotify_watches,
        }
    }
}
