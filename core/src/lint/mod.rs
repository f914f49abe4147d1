//! `mountlag lint`: the agent's checks, and static ones, over a namespace or the whole cluster at
//! once, as pure code. The agent lists the objects (agent/src/cmd/lint.rs), converts them at
//! its edge into the views below and prints the [`Report`].
//!
//! ```text
//!  Ingress, Gateway, classes, grants, routes (RouteObject) ─┐
//!  controller pods (ControllerPod, selected by a profile),  │
//!  other pods' Secret volumes, profiles (name, RouteMatch)  ├─▶ Cluster::references ─▶ the agent
//!  cert-manager objects (CertManagerObject)                 │     fetches those Secrets too
//!                                                           │
//!  Secrets: SecretView (digests, certificate summaries)     ├─▶ lint ─▶ LintFinding ─▶ Report
//!           + type                                          ┘    (severity, check, object,
//!                                                                 message, hint)
//! ```
//!
//! The checks:
//! - [`secrets`]: every Secret a TLS host, a Gateway listener, a profile's default certificate
//!   or a controller pod names — missing, of the wrong type, without `tls.crt`/`tls.key`, with
//!   material a server refuses ([`crate::reconcile::material::material_of_secrets`], key
//!   pairing, validity) or about to expire; `kubernetes.io/tls` Secrets nothing uses.
//! - [`hosts`]: TLS hosts without a Secret; one host with different Secrets in two objects
//!   served by the same controller ([`RouteIndex::hosts_for`] per profile, and per class for
//!   objects no profile claims); certificate references no ReferenceGrant allows; every
//!   cert-manager finding ([`crate::certmanager::findings::findings`]).
//! - controller pods mounting a Secret through `subPath` (never updated by kubelet).
//!
//! Nothing here sees Secret bytes: a [`SecretView`] holds digests and certificate summaries.

mod hosts;
mod report;
mod secrets;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use time::OffsetDateTime;

use crate::certmanager::findings::{FindingReason, Grace};
use crate::certmanager::{CertManagerIndex, CertManagerObject};
use crate::pod::ControllerPod;
use crate::reconcile::SecretKey;
use crate::routes::{RouteIndex, RouteMatch, RouteObject};
use crate::secret::SecretView;

pub use report::{Checked, Report};

/// The Secret type of TLS Secrets (`kubernetes.io/tls`).
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// How bad a finding is. Ordered from the worst: sorting puts errors first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Broken now: a certificate is not served, served wrong, or will not be renewed.
    Error,
    /// Works today, but not as intended or not for long.
    Warning,
    /// Worth knowing; never fails the lint unless asked (`--fail-on info`).
    Info,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Error, Severity::Warning, Severity::Info];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// What a finding is about. Names are the Event reasons where the agent publishes the same
/// problem (`InvalidCertificateMaterial`, `SubPathNeverUpdates`, `CertificateExpiringSoon`,
/// the cert-manager findings), so one word means one thing in Events, alerts and lint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    SecretMissing,
    SecretMissingKey,
    InvalidCertificateMaterial,
    DuplicateTlsHost,
    CertificateRefNotPermitted,
    CertManager(FindingReason),
    SecretWrongType,
    TlsHostWithoutSecret,
    SubPathNeverUpdates,
    CertificateExpiringSoon,
    UnusedTlsSecret,
}

impl Check {
    /// Every check, in documentation order.
    pub const ALL: [Check; 14] = [
        Check::SecretMissing,
        Check::SecretMissingKey,
        Check::InvalidCertificateMaterial,
        Check::DuplicateTlsHost,
        Check::CertificateRefNotPermitted,
        Check::CertManager(FindingReason::CertificateNotReady),
        Check::CertManager(FindingReason::CertificateRenewalOverdue),
        Check::CertManager(FindingReason::IssuerNotReady),
        Check::CertManager(FindingReason::TlsHostNotCovered),
        Check::SecretWrongType,
        Check::TlsHostWithoutSecret,
        Check::SubPathNeverUpdates,
        Check::CertificateExpiringSoon,
        Check::UnusedTlsSecret,
    ];

    /// The name printed in the CHECK column and the JSON `check` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::SecretMissing => "SecretMissing",
            Check::SecretMissingKey => "SecretMissingKey",
            Check::InvalidCertificateMaterial => "InvalidCertificateMaterial",
            Check::DuplicateTlsHost => "DuplicateTLSHost",
            Check::CertificateRefNotPermitted => "CertificateRefNotPermitted",
            Check::CertManager(reason) => reason.as_str(),
            Check::SecretWrongType => "SecretWrongType",
            Check::TlsHostWithoutSecret => "TLSHostWithoutSecret",
            Check::SubPathNeverUpdates => "SubPathNeverUpdates",
            Check::CertificateExpiringSoon => "CertificateExpiringSoon",
            Check::UnusedTlsSecret => "UnusedTLSSecret",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Check::SecretMissing
            | Check::SecretMissingKey
            | Check::InvalidCertificateMaterial
            | Check::DuplicateTlsHost
            | Check::CertificateRefNotPermitted
            | Check::CertManager(_) => Severity::Error,
            Check::SecretWrongType
            | Check::TlsHostWithoutSecret
            | Check::SubPathNeverUpdates
            | Check::CertificateExpiringSoon => Severity::Warning,
            Check::UnusedTlsSecret => Severity::Info,
        }
    }

    /// What to do about it, in one sentence (docs/lint.md has more).
    pub fn hint(self) -> &'static str {
        match self {
            Check::SecretMissing => {
                "create the Secret (or let cert-manager issue it), or fix the name that refers to it"
            }
            Check::SecretMissingKey => {
                "put the certificate chain in tls.crt and its private key in tls.key (kubectl create secret tls NAME --cert=FILE --key=FILE)"
            }
            Check::InvalidCertificateMaterial => {
                "replace the Secret's tls.crt and tls.key with a certificate and its own key, both PEM, valid now"
            }
            Check::DuplicateTlsHost => {
                "serve the host from one Ingress/Gateway, or point every object that names it at the same Secret"
            }
            Check::CertificateRefNotPermitted => {
                "add a ReferenceGrant in the Secret's namespace from Gateways of the Gateway's namespace, or copy the Secret next to the Gateway"
            }
            Check::CertManager(FindingReason::CertificateNotReady) => {
                "kubectl describe certificate -n NAMESPACE NAME, then its newest CertificateRequest (and for ACME the Order and Challenges)"
            }
            Check::CertManager(FindingReason::CertificateRenewalOverdue) => {
                "check that cert-manager runs and why the Certificate is not reissued (kubectl describe certificate; status.lastFailureTime)"
            }
            Check::CertManager(FindingReason::IssuerNotReady) => {
                "create the Issuer/ClusterIssuer or fix its name; kubectl describe it for why it is not Ready"
            }
            Check::CertManager(FindingReason::TlsHostNotCovered) => {
                "add the host to the Certificate's dnsNames (with ingress-shim: to the same spec.tls[] entry), or use a Secret that covers it"
            }
            Check::SecretWrongType => {
                "recreate the Secret with type kubernetes.io/tls (kubectl create secret tls); Gateway API implementations may refuse other types"
            }
            Check::TlsHostWithoutSecret => {
                "name a secretName for these hosts, or accept the controller's default certificate (--fail-on error)"
            }
            Check::SubPathNeverUpdates => {
                "mount the whole Secret volume (no subPath) and point the controller at the file inside it"
            }
            Check::CertificateExpiringSoon => {
                "renew the certificate now (cert-manager: kubectl cert-manager renew, or find out why it did not)"
            }
            Check::UnusedTlsSecret => {
                "delete it if nothing needs it; nothing to do otherwise (info never fails the lint by default)"
            }
        }
    }
}

/// One problem, on the object to fix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LintFinding {
    pub severity: Severity,
    pub check: Check,
    /// `Ingress`, `Gateway`, `Secret`, `Pod`, `Certificate`.
    pub kind: &'static str,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    /// Names, hosts, dates and API text (not escaped: the printer escapes it); never Secret
    /// bytes.
    pub message: String,
}

impl LintFinding {
    fn new(check: Check, kind: &'static str, namespace: &str, name: &str, message: String) -> Self {
        LintFinding {
            severity: check.severity(),
            check,
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            message,
        }
    }

    /// `Kind/namespace/name`, `Kind/name` when cluster-scoped.
    pub fn object(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.kind, self.name)
        } else {
            format!("{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }

    pub fn hint(&self) -> &'static str {
        self.check.hint()
    }
}

/// Which namespaces were listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Namespace(String),
    All,
}

impl Scope {
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Scope::Namespace(only) => only == namespace,
            Scope::All => true,
        }
    }

    /// `namespace shop`, `all namespaces`.
    pub fn describe(&self) -> String {
        match self {
            Scope::Namespace(namespace) => format!("namespace {namespace}"),
            Scope::All => "all namespaces".to_string(),
        }
    }
}

/// A controller profile of the configuration: its name and, for controllers that read their
/// certificates from the API, which Ingress and Gateway objects are its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub routes: Option<RouteMatch>,
}

/// A Secret as the lint judges it: the API view (digests and certificate summaries) and its
/// `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintSecret {
    pub view: SecretView,
    pub secret_type: String,
}

/// Everything listed, except the Secrets.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub scope: Scope,
    pub profiles: Vec<Profile>,
    /// Pods a profile selects (`controller` is the profile's name).
    pub controller_pods: Vec<ControllerPod>,
    /// The Secrets other pods' volumes name: they are not unused.
    pub other_pod_secrets: BTreeSet<SecretKey>,
    /// Ingresses, IngressClasses and the Gateway API kinds.
    pub routes: Vec<RouteObject>,
    /// Certificates, Issuers and ClusterIssuers.
    pub cert_manager: Vec<CertManagerObject>,
}

/// Thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub now: OffsetDateTime,
    /// cert-manager: how long not Ready, or a renewal late, may last (config
    /// `certManager.gracePeriod`, `--grace`).
    pub grace: Grace,
    /// Warn about a certificate expiring within this (config `expiry.warnBefore`; zero: off).
    pub expiry_warn_before: Duration,
}

impl Cluster {
    /// The Secrets the checks judge, in the listed namespaces: every one a TLS host, Gateway
    /// listener, default certificate or controller pod names. The agent lists `kubernetes.io/tls`
    /// Secrets and fetches these by name, so a referenced Secret of another type is judged too.
    pub fn references(&self) -> BTreeSet<SecretKey> {
        secrets::references(self)
            .into_iter()
            .map(|r| r.secret)
            .filter(|s| self.scope.contains(&s.namespace))
            .collect()
    }
}

/// Every finding, unsorted (the [`Report`] sorts). `secrets` holds every `kubernetes.io/tls`
/// Secret of the scope and every one of [`Cluster::references`] that exists.
pub fn lint(
    cluster: &Cluster,
    secrets: &BTreeMap<SecretKey, LintSecret>,
    settings: &Settings,
) -> Vec<LintFinding> {
    let mut routes = RouteIndex::default();
    for object in &cluster.routes {
        routes.apply(object.clone());
    }
    let mut index = CertManagerIndex::default();
    for object in &cluster.cert_manager {
        index.apply(object.clone());
    }
    let mut out = BTreeSet::new();
    secrets::check(cluster, secrets, settings, &mut out);
    let groups = hosts::groups(cluster, &routes);
    hosts::check(cluster, &groups, &mut out);
    hosts::cert_manager(
        cluster, &groups, &routes, &index, secrets, settings, &mut out,
    );
    sub_paths(cluster, &mut out);
    out.into_iter().collect()
}

/// Controller pods whose containers mount a Secret volume through `subPath`: kubelet copies the
/// file once and never updates it.
fn sub_paths(cluster: &Cluster, out: &mut BTreeSet<LintFinding>) {
    for pod in &cluster.controller_pods {
        for volume in &pod.volumes {
            let secrets: Vec<&str> = volume.sources.iter().map(|s| s.secret.as_str()).collect();
            for (container, mount) in pod.consumers(&volume.name) {
                let Some(sub_path) = &mount.sub_path else {
                    continue;
                };
                out.insert(LintFinding::new(
                    Check::SubPathNeverUpdates,
                    "Pod",
                    &pod.namespace,
                    &pod.name,
                    format!(
                        "container {} of controller {} mounts volume {} (Secret {}) at {} through subPath {}: kubelet never updates such a file, so a renewed certificate reaches the controller only when the pod restarts",
                        container.name,
                        pod.controller,
                        volume.name,
                        secrets.join(", "),
                        mount.mount_path,
                        sub_path
                    ),
                ));
            }
        }
    }
}

/// `a, b, c and 2 more`.
fn list(items: &[String], at_most: usize) -> String {
    if items.len() <= at_most {
        return items.join(", ");
    }
    format!(
        "{} and {} more",
        items[..at_most].join(", "),
        items.len() - at_most
    )
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}
