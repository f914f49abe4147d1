//! The one vocabulary of what the agent does: every decision of the core is an [`Action`], and
//! the agent's executor (`mountlag::effects`) is the only place that performs one.

use std::path::PathBuf;
use std::sync::Arc;

use crate::certmanager::CertManagerKind;
use crate::events::{EventReason, Regarding, RelatedSecret};
use crate::pod::ControllerPod;
use crate::reconcile::reload::ReloadResult;
use crate::reconcile::{PodRef, SecretKey};
use crate::routes::{RouteKind, RouteOrigin};

/// One volume's share of a nudge: which Secret versions it waits for, and which attempt for
/// those versions this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeNudge {
    pub volume: String,
    /// [`crate::expected::ExpectedFiles::version_key`].
    pub version: String,
    pub attempt: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Merge-patch the pod's `mountlag.io/resync` annotation (to
    /// [`crate::reconcile::mount::nudge_annotation`] of `volumes`), so kubelet remounts the
    /// pod's volumes now instead of at its next sync. One per pod at a time: every lagging
    /// volume of the pod rides on the same update.
    Nudge {
        pod: PodRef,
        /// Sorted by volume name, never empty.
        volumes: Vec<VolumeNudge>,
    },
    /// Publish a Kubernetes Event regarding the pod (rate-limited by the executor).
    Event {
        pod: PodRef,
        reason: EventReason,
        note: String,
        related: Option<RelatedSecret>,
    },
    /// Publish a Kubernetes Event regarding an Ingress or Gateway (a TLS host's Secret is
    /// missing, unusable or not permitted).
    RouteEvent {
        regarding: RouteOrigin,
        reason: EventReason,
        note: String,
    },
    /// Publish a Kubernetes Event about a cluster-level finding (a cert-manager Certificate,
    /// or an Ingress or Gateway), only on the node that reports it.
    ObjectEvent {
        regarding: Regarding,
        reason: EventReason,
        note: String,
    },
    /// Start a cluster-wide watch for the cert-manager view; results come back as
    /// `Input::CertManager`.
    WatchCluster(ClusterWatch),
    UnwatchCluster(ClusterWatch),
    /// Start a cluster-wide list/watch of one kind; its results come back as
    /// `Input::RoutesListed`, `RouteApplied`, `RouteDeleted`.
    WatchRoutes(RouteKind),
    UnwatchRoutes(RouteKind),
    /// Start a watch on one Secret (field-selected by name); its results come back as
    /// `Input::SecretObserved`.
    WatchSecret(SecretKey),
    UnwatchSecret(SecretKey),
    /// Put a volume directory under an inotify watch; answered by `Input::VolumeTracked`.
    TrackVolume(PathBuf),
    UntrackVolume(PathBuf),
    /// Read one generation of a volume; answered by `Input::VolumeRead`.
    ReadVolume(PathBuf),
    /// Make the controller take the new files (signal or HTTP, per its profile); answered by
    /// `Input::Reloaded`.
    Reload {
        pod: Arc<ControllerPod>,
        attempt: u8,
        /// Set when the profile may restart the pod's workload (`reload: restart`, or a
        /// signal with `fallback: restart`): the pod-template annotation value, a digest of the
        /// Secret contents the pod uses, the same on every node.
        restart: Option<String>,
    },
    /// Handshake with every name and once without SNI; answered by `Input::Probed`.
    Probe {
        pod: Arc<ControllerPod>,
        names: Vec<String>,
    },
    /// The pod is gone: drop what the executor keeps for it (cached reload target, per-pod
    /// series).
    ForgetPod(PodRef),
    /// `mountlag_mount_lag_seconds`: the API→disk lag of one change.
    ObserveLag {
        seconds: f64,
    },
    /// `mountlag_reload_duration_seconds` and `mountlag_reloads_total{result}`.
    ReloadFinished {
        pod: PodRef,
        result: ReloadResult,
        seconds: f64,
    },
    /// `mountlag_api_errors_total{resource, reason}` for a failed watch.
    CountApiError {
        resource: &'static str,
        reason: String,
    },
    /// `mountlag_certificate_not_after_seconds{namespace, secret, source}`.
    SetNotAfter {
        namespace: String,
        secret: String,
        source: CertificateView,
        unix: i64,
    },
}

/// A cluster-wide watch of the cert-manager view.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClusterWatch {
    CertManager(CertManagerKind),
    /// The pods a controller profile selects, on every node (for the reporter choice).
    Peers(String),
}

/// Which view of a certificate a figure comes from (metric label `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertificateView {
    Api,
    Disk,
    Served,
}

impl CertificateView {
    pub fn label(self) -> &'static str {
        match self {
            CertificateView::Api => "api",
            CertificateView::Disk => "disk",
            CertificateView::Served => "served",
        }
    }
}
