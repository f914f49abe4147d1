//! The one vocabulary of Kubernetes Event reasons the agent publishes (docs/operations.md
//! lists them; `tests/tests/docs.rs` keeps the two in step).

/// Why an Event is published. Mount events come from [`crate::reconcile::mount`], reload and
/// served-certificate events from [`crate::reconcile::reload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventReason {
    SecretMountStuck,
    SecretMountRecovered,
    KubeletResyncRequested,
    SubPathNeverUpdates,
    ControllerReloaded,
    ReloadUnverified,
    InvalidCertificateMaterial,
    ServedCertificateMismatch,
    CertificateExpiringSoon,
    ControllerProcessNotFound,
    /// The signal was not sent: the target is a Go program not proven to handle it.
    ReloadSignalWithheld,
    /// An Ingress or Gateway TLS host names a Secret that does not exist (regarding the
    /// Ingress or Gateway).
    TLSSecretMissing,
    /// ... a Secret without `tls.crt`/`tls.key`, or with material no server may load.
    TLSSecretInvalid,
    /// ... a Secret in another namespace that no ReferenceGrant allows.
    TLSSecretRefNotPermitted,
    /// Reload mode `restart`: the owning workload's pod template was annotated so its
    /// controller rolls the pods (regarding the Deployment, DaemonSet or StatefulSet).
    RollingRestartRequested,
    /// cert-manager: the Certificate that issues a served Secret is not Ready (regarding the
    /// Certificate).
    CertificateNotReady,
    /// cert-manager: `status.renewalTime` passed and the Secret still holds the old leaf.
    CertificateRenewalOverdue,
    /// cert-manager: an Issuer or ClusterIssuer named by a Certificate or an Ingress/Gateway
    /// annotation is missing or not Ready.
    IssuerNotReady,
    /// cert-manager: an Ingress/Gateway TLS host is covered neither by the Certificate's
    /// dnsNames nor by the Secret's leaf.
    TLSHostNotCovered,
}

impl EventReason {
    pub const ALL: [EventReason; 19] = [
        EventReason::SecretMountStuck,
        EventReason::SecretMountRecovered,
        EventReason::KubeletResyncRequested,
        EventReason::SubPathNeverUpdates,
        EventReason::ControllerReloaded,
        EventReason::ReloadUnverified,
        EventReason::InvalidCertificateMaterial,
        EventReason::ServedCertificateMismatch,
        EventReason::CertificateExpiringSoon,
        EventReason::ControllerProcessNotFound,
        EventReason::ReloadSignalWithheld,
        EventReason::TLSSecretMissing,
        EventReason::TLSSecretInvalid,
        EventReason::TLSSecretRefNotPermitted,
        EventReason::RollingRestartRequested,
        EventReason::CertificateNotReady,
        EventReason::CertificateRenewalOverdue,
        EventReason::IssuerNotReady,
        EventReason::TLSHostNotCovered,
    ];

    /// The Event's `reason`, as the contract names it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::SecretMountStuck => "SecretMountStuck",
            EventReason::SecretMountRecovered => "SecretMountRecovered",
            EventReason::KubeletResyncRequested => "KubeletResyncRequested",
            EventReason::SubPathNeverUpdates => "SubPathNeverUpdates",
            EventReason::ControllerReloaded => "ControllerReloaded",
            EventReason::ReloadUnverified => "ReloadUnverified",
            EventReason::InvalidCertificateMaterial => "InvalidCertificateMaterial",
            EventReason::ServedCertificateMismatch => "ServedCertificateMismatch",
            EventReason::CertificateExpiringSoon => "CertificateExpiringSoon",
            EventReason::ControllerProcessNotFound => "ControllerProcessNotFound",
            EventReason::ReloadSignalWithheld => "ReloadSignalWithheld",
            EventReason::TLSSecretMissing => "TLSSecretMissing",
            EventReason::TLSSecretInvalid => "TLSSecretInvalid",
            EventReason::TLSSecretRefNotPermitted => "TLSSecretRefNotPermitted",
            EventReason::RollingRestartRequested => "RollingRestartRequested",
            EventReason::CertificateNotReady => "CertificateNotReady",
            EventReason::CertificateRenewalOverdue => "CertificateRenewalOverdue",
            EventReason::IssuerNotReady => "IssuerNotReady",
            EventReason::TLSHostNotCovered => "TLSHostNotCovered",
        }
    }

    /// Published as `type: Warning` (else `Normal`).
    pub fn is_warning(self) -> bool {
        !matches!(
            self,
            EventReason::SecretMountRecovered
                | EventReason::KubeletResyncRequested
                | EventReason::ControllerReloaded
                | EventReason::RollingRestartRequested
        )
    }
}

/// The object an Event is about (`regarding`): a controller Pod, the Ingress or Gateway whose
/// TLS host has a problem, or a cert-manager Certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Regarding {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl From<&crate::reconcile::PodRef> for Regarding {
    fn from(pod: &crate::reconcile::PodRef) -> Self {
        Self {
            api_version: "v1",
            kind: "Pod",
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        }
    }
}

impl From<&crate::routes::RouteOrigin> for Regarding {
    fn from(origin: &crate::routes::RouteOrigin) -> Self {
        use crate::routes::RouteKind;
        let api_version = match origin.kind {
            RouteKind::Ingress | RouteKind::IngressClass => "networking.k8s.io/v1",
            RouteKind::ReferenceGrant => "gateway.networking.k8s.io/v1beta1",
            RouteKind::Gateway
            | RouteKind::GatewayClass
            | RouteKind::HttpRoute
            | RouteKind::TlsRoute => "gateway.networking.k8s.io/v1",
        };
        Self {
            api_version,
            kind: origin.kind.as_str(),
            namespace: origin.namespace.clone(),
            name: origin.name.clone(),
            uid: origin.uid.clone(),
        }
    }
}

/// A Secret version an Event is about (`related`): Events about different versions are not
/// folded into one series, so each keeps its own note.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelatedSecret {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recoveries_requests_and_verified_reloads_are_normal_events() {
        let normal: Vec<&str> = EventReason::ALL
            .into_iter()
            .filter(|r| !r.is_warning())
            .map(EventReason::as_str)
            .collect();
        assert_eq!(
            normal,
            [
                "SecretMountRecovered",
                "KubeletResyncRequested",
                "ControllerReloaded",
                "RollingRestartRequested"
            ]
        );
    }
}
