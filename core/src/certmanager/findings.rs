//! What is wrong with the certificates cert-manager should keep fresh, for the Secrets and TLS
//! hosts the local controller pods serve. One pure function: uses + facts + index + now.

use std::collections::{BTreeMap, BTreeSet};

use crate::events::{EventReason, Regarding};
use crate::reconcile::SecretKey;
use crate::routes::{RouteOrigin, host_matches};

use super::{CertManagerIndex, CertificateObject, IssuerLookup, IssuerRef, Readiness};

/// What a Secret holds, as far as the findings care (from the API view; never the bytes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretFacts {
    /// The Secret's `cert-manager.io/certificate-name` annotation.
    pub certificate_name: Option<String>,
    /// The leaf of `tls.crt`, when it parses.
    pub leaf: Option<LeafFacts>,
}

impl SecretFacts {
    /// The facts of a Secret as the API view holds it: its annotation and the leaf of `tls.crt`.
    pub fn of_view(view: &crate::secret::SecretView) -> Self {
        SecretFacts {
            certificate_name: view.certificate_name.clone(),
            leaf: view
                .certificates
                .get("tls.crt")
                .and_then(|pem| pem.leaf())
                .map(|leaf| LeafFacts {
                    dns_names: leaf.dns_names.clone(),
                    not_before: leaf.not_before.unix_timestamp(),
                }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeafFacts {
    pub dns_names: Vec<String>,
    /// notBefore, Unix seconds: a leaf issued before the renewal time is the old one.
    pub not_before: i64,
}

/// One way a local controller uses a Secret: mounted by its pods, or through the API for a TLS
/// host of an Ingress or Gateway (or as its default certificate).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretUse {
    pub controller: String,
    pub secret: SecretKey,
    /// Mounted: only the profile's pods that mount it serve it. Otherwise all of them do.
    pub mounted: bool,
    pub host: Option<HostUse>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostUse {
    pub origin: RouteOrigin,
    pub host: String,
    /// The origin's `cert-manager.io/issuer` or `cert-manager.io/cluster-issuer` annotation.
    pub issuer: Option<IssuerRef>,
}

/// The kinds of finding; each is published as the Event reason of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FindingReason {
    CertificateNotReady,
    CertificateRenewalOverdue,
    IssuerNotReady,
    TlsHostNotCovered,
}

impl FindingReason {
    pub const ALL: [FindingReason; 4] = [
        FindingReason::CertificateNotReady,
        FindingReason::CertificateRenewalOverdue,
        FindingReason::IssuerNotReady,
        FindingReason::TlsHostNotCovered,
    ];

    pub fn event_reason(self) -> EventReason {
        match self {
            FindingReason::CertificateNotReady => EventReason::CertificateNotReady,
            FindingReason::CertificateRenewalOverdue => EventReason::CertificateRenewalOverdue,
            FindingReason::IssuerNotReady => EventReason::IssuerNotReady,
            FindingReason::TlsHostNotCovered => EventReason::TLSHostNotCovered,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.event_reason().as_str()
    }
}

/// Identifies a finding across recomputations and nodes: what it is about, not its wording.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FindingKey {
    pub reason: FindingReason,
    /// `Certificate`, `Ingress`, `Gateway`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// The host or the issuer it is about; empty for the Certificate's own state.
    pub about: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub regarding: Regarding,
    /// For the Event note and /status: API text in it is not escaped yet.
    pub message: String,
}

/// A finding and who serves what it is about: the reporter is chosen among their pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub finding: Finding,
    pub served_by: BTreeSet<Server>,
}

/// A controller profile whose pods serve a finding: those mounting `secret`, or all of them
/// (`secret: None`) when the finding comes from its routes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Server {
    pub controller: String,
    pub secret: Option<SecretKey>,
}

/// The findings now, and when they may change with no new input (a renewal time or a grace
/// period running out), Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Findings {
    pub found: BTreeMap<FindingKey, Found>,
    pub recheck_at: Option<i64>,
}

/// How long a state may last before it is a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grace {
    /// Not Ready (Certificate or issuer) for longer than this; renewal not done this long
    /// after `status.renewalTime`.
    pub seconds: i64,
}

pub fn findings(
    uses: &[SecretUse],
    secrets: &BTreeMap<SecretKey, SecretFacts>,
    index: &CertManagerIndex,
    now: i64,
    grace: Grace,
) -> Findings {
    let mut judge = Judge {
        index,
        now,
        grace,
        out: Findings::default(),
    };
    for usage in uses {
        let facts = secrets.get(&usage.secret);
        let certificate = index.certificate_for(
            &usage.secret,
            facts.and_then(|f| f.certificate_name.as_deref()),
        );
        let server = Server {
            controller: usage.controller.clone(),
            secret: usage.mounted.then(|| usage.secret.clone()),
        };
        if let Some(certificate) = certificate {
            judge.certificate(certificate, facts, &server);
        }
        if let Some(host) = &usage.host {
            judge.host(host, &usage.secret, certificate, facts, &server);
        }
    }
    judge.out
}

fn certificate_regarding(certificate: &CertificateObject) -> Regarding {
    Regarding {
        api_version: "cert-manager.io/v1",
        kind: "Certificate",
        namespace: certificate.namespace.clone(),
        name: certificate.name.clone(),
        uid: certificate.uid.clone(),
    }
}

/// What every finding is judged against, and where they go.
struct Judge<'a> {
    index: &'a CertManagerIndex,
    now: i64,
    grace: Grace,
    out: Findings,
}

impl Judge<'_> {
    fn certificate(
        &mut self,
        certificate: &CertificateObject,
        facts: Option<&SecretFacts>,
        server: &Server,
    ) {
        let regarding = certificate_regarding(certificate);
        let named = format!("Certificate {}/{}", certificate.namespace, certificate.name);
        let secret = format!(
            "Secret {}/{}",
            certificate.namespace, certificate.secret_name
        );
        if !certificate.ready.is_ready() && self.not_ready_past_grace(&certificate.ready) {
            self.out.add(
                FindingReason::CertificateNotReady,
                &regarding,
                "",
                format!(
                    "{named} is {}: {secret} is not renewed while it stays so",
                    certificate.ready.describe()
                ),
                server,
            );
        }
        if let Some(renewal) = certificate.renewal_time
            && let Some(leaf) = facts.and_then(|f| f.leaf.as_ref())
            && leaf.not_before < renewal
            && self.grace_over_since(renewal)
        {
            self.out.add(
                FindingReason::CertificateRenewalOverdue,
                &regarding,
                "",
                format!(
                    "{named} was due for renewal at {}; {secret} still holds the certificate issued at {}",
                    rfc3339(renewal),
                    rfc3339(leaf.not_before)
                ),
                server,
            );
        }
        if let Some(issuer) = &certificate.issuer {
            self.issuer(issuer, &certificate.namespace, &regarding, &named, server);
        }
    }

    fn host(
        &mut self,
        host: &HostUse,
        secret: &SecretKey,
        certificate: Option<&CertificateObject>,
        facts: Option<&SecretFacts>,
        server: &Server,
    ) {
        let regarding = Regarding::from(&host.origin);
        let named = host.origin.describe();
        if let Some(issuer) = &host.issuer {
            self.issuer(issuer, &host.origin.namespace, &regarding, &named, server);
        }
        let Some(certificate) = certificate else {
            return;
        };
        let in_spec = certificate
            .dns_names
            .iter()
            .any(|name| host_matches(name, &host.host));
        let leaf_names = facts
            .and_then(|f| f.leaf.as_ref())
            .map(|l| l.dns_names.as_slice())
            .unwrap_or_default();
        let in_leaf = leaf_names.iter().any(|name| host_matches(name, &host.host));
        if !in_spec && !in_leaf {
            self.out.add(
                FindingReason::TlsHostNotCovered,
                &regarding,
                &host.host,
                format!(
                    "TLS host {} of {named} uses Secret {}/{}, but neither the dnsNames of Certificate {}/{} [{}] nor the certificate the Secret holds [{}] cover it: clients of that host get a name mismatch",
                    host.host,
                    secret.namespace,
                    secret.name,
                    certificate.namespace,
                    certificate.name,
                    certificate.dns_names.join(", "),
                    leaf_names.join(", ")
                ),
                server,
            );
        }
    }

    fn issuer(
        &mut self,
        issuer: &IssuerRef,
        namespace: &str,
        regarding: &Regarding,
        named: &str,
        server: &Server,
    ) {
        let issuer_named = issuer.describe(namespace);
        let state = match self.index.issuer(issuer, namespace) {
            IssuerLookup::External => return,
            IssuerLookup::Missing => "which does not exist".to_string(),
            IssuerLookup::Found(found) => {
                if found.ready.is_ready() || !self.not_ready_past_grace(&found.ready) {
                    return;
                }
                format!("which is {}", found.ready.describe())
            }
        };
        self.out.add(
            FindingReason::IssuerNotReady,
            regarding,
            &issuer_named,
            format!(
                "{named} names {issuer_named}, {state}: nothing issues or renews its certificate"
            ),
            server,
        );
    }

    /// Whether a not-Ready state has lasted the grace period (a state without a transition
    /// time is taken as old).
    fn not_ready_past_grace(&mut self, ready: &Readiness) -> bool {
        ready.since.is_none_or(|since| self.grace_over_since(since))
    }

    /// Whether the grace period after `since` is over; if not, its end is a recheck.
    fn grace_over_since(&mut self, since: i64) -> bool {
        let due = since.saturating_add(self.grace.seconds);
        if self.now >= due {
            true
        } else {
            self.out.recheck(due);
            false
        }
    }
}

impl Findings {
    fn add(
        &mut self,
        reason: FindingReason,
        regarding: &Regarding,
        about: &str,
        message: String,
        server: &Server,
    ) {
        let key = FindingKey {
            reason,
            kind: regarding.kind,
            namespace: regarding.namespace.clone(),
            name: regarding.name.clone(),
            about: about.to_string(),
        };
        self.found
            .entry(key)
            .or_insert_with(|| Found {
                finding: Finding {
                    regarding: regarding.clone(),
                    message,
                },
                served_by: BTreeSet::new(),
            })
            .served_by
            .insert(server.clone());
    }

    fn recheck(&mut self, at: i64) {
        self.recheck_at = Some(self.recheck_at.map_or(at, |r| r.min(at)));
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}
