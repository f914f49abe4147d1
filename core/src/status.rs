//! What `/status` shows: the node's readiness and every mount, as one serialisable value.

use std::sync::Arc;

use serde::Serialize;

use crate::node::HostStatus;
use crate::reconcile::MountStatus;

/// What the agent publishes after every reconcile step.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusSnapshot {
    pub node: String,
    pub ready: bool,
    /// Why the agent is not ready yet (empty when ready).
    pub waiting_for: Vec<String>,
    /// Whether the agent reads kubelet's volume directories at all.
    pub disk: DiskStatus,
    /// Shared with the node, which publishes an unchanged entry again as it is.
    pub mounts: Vec<Arc<MountStatus>>,
    /// TLS hosts from Ingress and Gateway objects, for controllers that read the API (absent
    /// when there are none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostStatus>,
    /// The cert-manager view (absent when it is off or no controller pod runs here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<crate::node::CertManagerStatus>,
}

/// `/status` `disk`: whether mounts are compared on disk, or (a probe-only install, no kubelet
/// root in the container) only the served certificate is checked against the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskStatus {
    pub checked: bool,
    /// The `--kubelet-root` the agent looked at.
    pub kubelet_root: String,
    /// Why disk is not checked (absent when it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
