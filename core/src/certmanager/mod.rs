//! Where cert-manager's view of a certificate meets the three views: why a rotation that never
//! reached the Secret did not happen.
//!
//! ```text
//!  Certificate, Issuer, ClusterIssuer ─▶ CertManagerIndex ─┐
//!  (cert-manager.io/v1, converted at the agent's edge)      │
//!  Secrets the local pods serve: annotation, leaf ──────────┼─▶ findings::findings ─▶ Finding
//!  Ingress/Gateway TLS hosts (+ issuer annotations) ────────┘      (not Ready, renewal overdue,
//!                                                                   issuer missing or not Ready,
//!  controller pods of the cluster (PeerPod) ─▶ reporter::reporter   host not covered)
//!      the node of the first ready pod serving a finding reports it; the others stay quiet
//! ```
//!
//! Nothing here knows kube or a clock: `now` is a Unix time argument.

pub mod findings;
pub mod reporter;
#[cfg(test)]
mod tests;

use crate::reconcile::SecretKey;

/// The Secret annotation cert-manager writes on every Secret it issues into.
pub const CERTIFICATE_NAME_ANNOTATION: &str = "cert-manager.io/certificate-name";
/// Ingress (and Gateway) annotations that make cert-manager's ingress-shim create a Certificate.
pub const ISSUER_ANNOTATION: &str = "cert-manager.io/issuer";
pub const CLUSTER_ISSUER_ANNOTATION: &str = "cert-manager.io/cluster-issuer";
/// The API group of every kind here.
pub const GROUP: &str = "cert-manager.io";

/// The cert-manager kinds the agent reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CertManagerKind {
    Certificate,
    Issuer,
    ClusterIssuer,
}

impl CertManagerKind {
    pub const ALL: [CertManagerKind; 3] = [
        CertManagerKind::Certificate,
        CertManagerKind::Issuer,
        CertManagerKind::ClusterIssuer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CertManagerKind::Certificate => "Certificate",
            CertManagerKind::Issuer => "Issuer",
            CertManagerKind::ClusterIssuer => "ClusterIssuer",
        }
    }

    pub fn resource(self) -> &'static str {
        match self {
            CertManagerKind::Certificate => "certificates",
            CertManagerKind::Issuer => "issuers",
            CertManagerKind::ClusterIssuer => "clusterissuers",
        }
    }

    pub fn cluster_scoped(self) -> bool {
        self == CertManagerKind::ClusterIssuer
    }
}

/// One object, by kind, namespace (empty for ClusterIssuers) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertManagerKey {
    pub kind: CertManagerKind,
    pub namespace: String,
    pub name: String,
}

/// A condition's status, as the API spells it; `Absent` when the object has no such condition
/// (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
    #[default]
    Absent,
}

/// The `Ready` condition of a Certificate or an issuer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Readiness {
    pub status: ConditionStatus,
    pub reason: Option<String>,
    pub message: Option<String>,
    /// `lastTransitionTime`, Unix seconds.
    pub since: Option<i64>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.status == ConditionStatus::True
    }

    /// `Ready=False (Failed: the ACME order failed)`, for notes. The reason and message are the
    /// API's text: the caller escapes them for their sink.
    pub fn describe(&self) -> String {
        let status = match self.status {
            ConditionStatus::True => "Ready=True",
            ConditionStatus::False => "Ready=False",
            ConditionStatus::Unknown => "Ready=Unknown",
            ConditionStatus::Absent => "no Ready condition yet",
        };
        match (&self.reason, &self.message) {
            (Some(reason), Some(message)) => format!("{status} ({reason}: {message})"),
            (Some(reason), None) => format!("{status} ({reason})"),
            (None, Some(message)) => format!("{status} ({message})"),
            (None, None) => status.to_string(),
        }
    }
}

/// `spec.issuerRef`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IssuerRef {
    /// An Issuer in the namespace of whatever refers to it.
    Issuer(String),
    ClusterIssuer(String),
    /// An issuer of another API group (an external issuer): its readiness is not read here.
    External {
        group: String,
        kind: String,
        name: String,
    },
}

impl IssuerRef {
    /// From `spec.issuerRef` fields: an empty or `cert-manager.io` group is cert-manager's own.
    pub fn from_fields(group: Option<&str>, kind: Option<&str>, name: &str) -> Self {
        let group = group.unwrap_or_default();
        let kind = kind.unwrap_or_default();
        if !group.is_empty() && group != GROUP {
            return IssuerRef::External {
                group: group.to_string(),
                kind: kind.to_string(),
                name: name.to_string(),
            };
        }
        match kind {
            "ClusterIssuer" => IssuerRef::ClusterIssuer(name.to_string()),
            "" | "Issuer" => IssuerRef::Issuer(name.to_string()),
            other => IssuerRef::External {
                group: GROUP.to_string(),
                kind: other.to_string(),
                name: name.to_string(),
            },
        }
    }

    /// The key of the issuer object, for a reference made from `namespace`; `None` for an
    /// external issuer.
    pub fn key(&self, namespace: &str) -> Option<CertManagerKey> {
        match self {
            IssuerRef::Issuer(name) => Some(CertManagerKey {
                kind: CertManagerKind::Issuer,
                namespace: namespace.to_string(),
                name: name.clone(),
            }),
            IssuerRef::ClusterIssuer(name) => Some(CertManagerKey {
                kind: CertManagerKind::ClusterIssuer,
                namespace: String::new(),
                name: name.clone(),
            }),
            IssuerRef::External { .. } => None,
        }
    }

    /// `Issuer shop/letsencrypt`, `ClusterIssuer letsencrypt`.
    pub fn describe(&self, namespace: &str) -> String {
        match self {
            IssuerRef::Issuer(name) => format!("Issuer {namespace}/{name}"),
            IssuerRef::ClusterIssuer(name) => format!("ClusterIssuer {name}"),
            IssuerRef::External { group, kind, name } => format!("{kind}.{group} {name}"),
        }
    }
}

/// `cert-manager.io/v1` Certificate, reduced to what the findings read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertificateObject {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.secretName`.
    pub secret_name: String,
    /// `spec.dnsNames`.
    pub dns_names: Vec<String>,
    /// `spec.issuerRef`; `None` when the object has none (not valid, but read leniently).
    pub issuer: Option<IssuerRef>,
    pub ready: Readiness,
    /// `status.renewalTime`, Unix seconds.
    pub renewal_time: Option<i64>,
    /// `status.revision`.
    pub revision: Option<u64>,
}

/// An Issuer (namespace set) or a ClusterIssuer (namespace empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IssuerObject {
    pub cluster: bool,
    pub namespace: String,
    pub name: String,
    pub ready: Readiness,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertManagerObject {
    Certificate(CertificateObject),
    Issuer(IssuerObject),
}

impl CertManagerObject {
    pub fn key(&self) -> CertManagerKey {
        match self {
            CertManagerObject::Certificate(c) => CertManagerKey {
                kind: CertManagerKind::Certificate,
                namespace: c.namespace.clone(),
                name: c.name.clone(),
            },
            CertManagerObject::Issuer(i) => CertManagerKey {
                kind: if i.cluster {
                    CertManagerKind::ClusterIssuer
                } else {
                    CertManagerKind::Issuer
                },
                namespace: if i.cluster {
                    String::new()
                } else {
                    i.namespace.clone()
                },
                name: i.name.clone(),
            },
        }
    }
}

impl crate::objects::Keyed for CertManagerObject {
    type Key = CertManagerKey;
    type Kind = CertManagerKind;
    fn key(&self) -> CertManagerKey {
        CertManagerObject::key(self)
    }
    fn kind_of(key: &CertManagerKey) -> CertManagerKind {
        key.kind
    }
}

/// Every cert-manager object the watches hold.
#[derive(Debug, Clone, Default)]
pub struct CertManagerIndex {
    objects: crate::objects::Objects<CertManagerObject>,
}

impl CertManagerIndex {
    /// `true` when something changed.
    pub fn apply(&mut self, object: CertManagerObject) -> bool {
        self.objects.apply(object)
    }

    pub fn delete(&mut self, key: &CertManagerKey) -> bool {
        self.objects.delete(key)
    }

    /// A (re)list of `kind`: objects of the kind not in it are gone.
    pub fn replace_kind(&mut self, kind: CertManagerKind, objects: Vec<CertManagerObject>) -> bool {
        self.objects.replace_kind(kind, objects)
    }

    pub fn forget_all(&mut self) {
        self.objects.forget_kinds(&CertManagerKind::ALL);
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The Certificate that issues into `secret`: the one the Secret's
    /// `cert-manager.io/certificate-name` annotation names, else the one whose `spec.secretName`
    /// is the Secret (first by name, when several claim it).
    pub fn certificate_for(
        &self,
        secret: &SecretKey,
        annotation: Option<&str>,
    ) -> Option<&CertificateObject> {
        if let Some(name) = annotation {
            let key = CertManagerKey {
                kind: CertManagerKind::Certificate,
                namespace: secret.namespace.clone(),
                name: name.to_string(),
            };
            if let Some(CertManagerObject::Certificate(c)) = self.objects.get(&key)
                && c.secret_name == secret.name
            {
                return Some(c);
            }
        }
        self.certificates_in(&secret.namespace)
            .find(|c| c.secret_name == secret.name)
    }

    fn certificates_in<'a>(
        &'a self,
        namespace: &str,
    ) -> impl Iterator<Item = &'a CertificateObject> {
        let start = CertManagerKey {
            kind: CertManagerKind::Certificate,
            namespace: namespace.to_string(),
            name: String::new(),
        };
        let namespace = namespace.to_string();
        self.objects
            .from_key(start)
            .take_while(move |(key, _)| {
                key.kind == CertManagerKind::Certificate && key.namespace == namespace
            })
            .filter_map(|(_, object)| match object {
                CertManagerObject::Certificate(c) => Some(c),
                CertManagerObject::Issuer(_) => None,
            })
    }

    /// The issuer a reference from `namespace` names.
    pub fn issuer(&self, reference: &IssuerRef, namespace: &str) -> IssuerLookup<'_> {
        let Some(key) = reference.key(namespace) else {
            return IssuerLookup::External;
        };
        match self.objects.get(&key) {
            Some(CertManagerObject::Issuer(issuer)) => IssuerLookup::Found(issuer),
            _ => IssuerLookup::Missing,
        }
    }
}

/// What [`CertManagerIndex::issuer`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerLookup<'a> {
    Found(&'a IssuerObject),
    Missing,
    /// An issuer of another API group: not read, not judged.
    External,
}
