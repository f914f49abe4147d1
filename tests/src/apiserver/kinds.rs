//! The kinds the stand-in serves and the group versions it serves them at. This one table
//! drives routing, discovery, field selectors, scope and status-subresource handling, so a
//! kind is added here and nowhere else.
//!
//! Built-in kinds (core/v1, `apps/v1`, `events.k8s.io/v1`, `networking.k8s.io/v1`) follow
//! kube-apiserver 1.33; the Gateway API kinds follow the standard-channel
//! CRDs of Gateway API v1.5 / v1.6 (`config/crd/standard/` of kubernetes-sigs/gateway-api):
//! every kind served at `v1` and `v1beta1` with conversion strategy `None` (the same object,
//! another `apiVersion`), `v1` preferred.

/// The resources the stand-in stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// core/v1 `pods`
    Pods,
    /// core/v1 `secrets`
    Secrets,
    /// core/v1 `events` and events.k8s.io/v1 `events` (one storage)
    Events,
    /// networking.k8s.io/v1 `ingresses`
    Ingresses,
    /// networking.k8s.io/v1 `ingressclasses` (cluster-scoped)
    IngressClasses,
    /// gateway.networking.k8s.io `gateways`
    Gateways,
    /// gateway.networking.k8s.io `gatewayclasses` (cluster-scoped)
    GatewayClasses,
    /// gateway.networking.k8s.io `httproutes`
    HttpRoutes,
    /// gateway.networking.k8s.io `referencegrants`
    ReferenceGrants,
    /// cert-manager.io/v1 `certificates`
    Certificates,
    /// cert-manager.io/v1 `issuers`
    Issuers,
    /// cert-manager.io/v1 `clusterissuers` (cluster-scoped)
    ClusterIssuers,
    /// apps/v1 `deployments`
    Deployments,
    /// apps/v1 `replicasets`
    ReplicaSets,
    /// apps/v1 `daemonsets`
    DaemonSets,
    /// apps/v1 `statefulsets`
    StatefulSets,
}

/// The names of a resource, as discovery spells them.
struct Names {
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
}

const fn names(
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
) -> Names {
    Names {
        plural,
        singular,
        kind,
        short_names,
        categories,
    }
}

/// The built-in kinds `kubectl get all` lists.
const CATEGORY_ALL: &[&str] = &["all"];
/// Every Gateway API standard CRD carries this category (`kubectl get gateway-api`).
const GATEWAY_API: &[&str] = &["gateway-api"];
/// cert-manager's CRDs carry this category (`kubectl get cert-manager`).
const CERT_MANAGER: &[&str] = &["cert-manager"];

impl Resource {
    /// Every resource, in no particular order.
    pub const ALL: [Resource; 16] = [
        Resource::Pods,
        Resource::Secrets,
        Resource::Events,
        Resource::Ingresses,
        Resource::IngressClasses,
        Resource::Gateways,
        Resource::GatewayClasses,
        Resource::HttpRoutes,
        Resource::ReferenceGrants,
        Resource::Certificates,
        Resource::Issuers,
        Resource::ClusterIssuers,
        Resource::Deployments,
        Resource::ReplicaSets,
        Resource::DaemonSets,
        Resource::StatefulSets,
    ];

    fn names(self) -> Names {
        match self {
            Resource::Pods => names("pods", "pod", "Pod", &["po"], CATEGORY_ALL),
            Resource::Secrets => names("secrets", "secret", "Secret", &[], &[]),
            Resource::Events => names("events", "event", "Event", &["ev"], &[]),
            Resource::Ingresses => names("ingresses", "ingress", "Ingress", &["ing"], &[]),
            Resource::IngressClasses => {
                names("ingressclasses", "ingressclass", "IngressClass", &[], &[])
            }
            Resource::Gateways => names("gateways", "gateway", "Gateway", &["gtw"], GATEWAY_API),
            Resource::GatewayClasses => names(
                "gatewayclasses",
                "gatewayclass",
                "GatewayClass",
                &["gc"],
                GATEWAY_API,
            ),
            Resource::HttpRoutes => names("httproutes", "httproute", "HTTPRoute", &[], GATEWAY_API),
            Resource::ReferenceGrants => names(
                "referencegrants",
                "referencegrant",
                "ReferenceGrant",
                &["refgrant"],
                GATEWAY_API,
            ),
            // cert-manager v1.16's CRDs (`deploy/crds/`): short names and the `cert-manager`
            // category.
            Resource::Certificates => names(
                "certificates",
                "certificate",
                "Certificate",
                &["cert", "certs"],
                CERT_MANAGER,
            ),
            Resource::Issuers => names("issuers", "issuer", "Issuer", &[], CERT_MANAGER),
            // kube-apiserver 1.33's discovery: short names, category `all`.
            Resource::Deployments => names(
                "deployments",
                "deployment",
                "Deployment",
                &["deploy"],
                CATEGORY_ALL,
            ),
            Resource::ReplicaSets => names(
                "replicasets",
                "replicaset",
                "ReplicaSet",
                &["rs"],
                CATEGORY_ALL,
            ),
            Resource::DaemonSets => names(
                "daemonsets",
                "daemonset",
                "DaemonSet",
                &["ds"],
                CATEGORY_ALL,
            ),
            Resource::StatefulSets => names(
                "statefulsets",
                "statefulset",
                "StatefulSet",
                &["sts"],
                CATEGORY_ALL,
            ),
            Resource::ClusterIssuers => names(
                "clusterissuers",
                "clusterissuer",
                "ClusterIssuer",
                &[],
                CERT_MANAGER,
            ),
        }
    }

    /// Plural resource name (`pods`).
    pub fn plural(self) -> &'static str {
        self.names().plural
    }

    /// Singular name (`pod`), what `kubectl get pod` resolves.
    pub fn singular(self) -> &'static str {
        self.names().singular
    }

    /// Kind (`Pod`).
    pub fn kind(self) -> &'static str {
        self.names().kind
    }

    /// Discovery `shortNames` (`po`).
    pub fn short_names(self) -> &'static [&'static str] {
        self.names().short_names
    }

    /// Discovery `categories` (`all`, `gateway-api`).
    pub fn categories(self) -> &'static [&'static str] {
        self.names().categories
    }

    /// Namespaced (true) or cluster-scoped (false). Cluster-scoped objects are stored under
    /// the namespace `""` and carry no `metadata.namespace`.
    pub fn namespaced(self) -> bool {
        !matches!(
            self,
            Resource::IngressClasses | Resource::GatewayClasses | Resource::ClusterIssuers
        )
    }

    /// Has a `status` subresource: create drops `status`, updates of the main resource keep
    /// it, and only `<plural>/<name>/status` changes it.
    pub fn has_status_subresource(self) -> bool {
        matches!(
            self,
            Resource::Pods
                | Resource::Ingresses
                | Resource::Gateways
                | Resource::GatewayClasses
                | Resource::HttpRoutes
                | Resource::Certificates
                | Resource::Issuers
                | Resource::ClusterIssuers
                | Resource::Deployments
                | Resource::ReplicaSets
                | Resource::DaemonSets
                | Resource::StatefulSets
        )
    }

    /// The apps/v1 workload kinds (a pod template under `spec.template`, defaulted like a pod,
    /// a required `spec.selector` matching its labels).
    pub fn is_workload(self) -> bool {
        matches!(
            self,
            Resource::Deployments
                | Resource::ReplicaSets
                | Resource::DaemonSets
                | Resource::StatefulSets
        )
    }

    /// Served by a CustomResourceDefinition (Gateway API): no strategic merge patch, and the
    /// field labels of custom resources.
    pub fn is_custom(self) -> bool {
        matches!(
            self,
            Resource::Gateways
                | Resource::GatewayClasses
                | Resource::HttpRoutes
                | Resource::ReferenceGrants
                | Resource::Certificates
                | Resource::Issuers
                | Resource::ClusterIssuers
        )
    }

    /// The group versions this resource is served at, preferred first.
    pub fn group_versions(self) -> &'static [ApiGroup] {
        match self {
            Resource::Pods | Resource::Secrets => &[ApiGroup::Core],
            Resource::Events => &[ApiGroup::Core, ApiGroup::EventsV1],
            Resource::Ingresses | Resource::IngressClasses => &[ApiGroup::NetworkingV1],
            Resource::Gateways
            | Resource::GatewayClasses
            | Resource::HttpRoutes
            | Resource::ReferenceGrants => &[ApiGroup::GatewayV1, ApiGroup::GatewayV1beta1],
            Resource::Certificates | Resource::Issuers | Resource::ClusterIssuers => {
                &[ApiGroup::CertManagerV1]
            }
            Resource::Deployments
            | Resource::ReplicaSets
            | Resource::DaemonSets
            | Resource::StatefulSets => &[ApiGroup::AppsV1],
        }
    }

    /// The group version in-process reads present objects in ([`Self::group_versions`]'s
    /// first: core/v1 for Events).
    pub fn preferred(self) -> ApiGroup {
        self.group_versions()[0]
    }

    /// Is it served at `group`?
    pub fn served_at(self, group: ApiGroup) -> bool {
        self.group_versions().contains(&group)
    }

    /// `plural.group` as the API server words errors (`ingresses.networking.k8s.io`), the
    /// bare plural for the core group (and Events, stored as core/v1).
    pub fn qualified(self) -> String {
        let group = self.preferred().group();
        if group.is_empty() {
            self.plural().to_owned()
        } else {
            format!("{}.{group}", self.plural())
        }
    }

    /// The resource of this plural name (any group).
    pub(crate) fn from_plural(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.plural() == s)
    }

    /// The resource and group version of an object's `apiVersion` and `kind`.
    pub fn from_kind(api_version: &str, kind: &str) -> Option<(Self, ApiGroup)> {
        let group = ApiGroup::from_api_version(api_version)?;
        Self::ALL
            .into_iter()
            .find(|r| r.kind() == kind && r.served_at(group))
            .map(|r| (r, group))
    }

    /// The field labels the real server supports for this resource in `group`; anything else
    /// is a 400 "field label not supported".
    pub(crate) fn field_labels(self, group: ApiGroup) -> &'static [&'static str] {
        const META: &[&str] = &["metadata.name", "metadata.namespace"];
        match (self, group) {
            (Resource::Pods, _) => &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            (Resource::Secrets, _) => &["metadata.name", "metadata.namespace", "type"],
            (Resource::Events, ApiGroup::EventsV1) => &[
                "metadata.name",
                "metadata.namespace",
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "regarding.apiVersion",
                "regarding.resourceVersion",
                "regarding.fieldPath",
                "reason",
                "reportingController",
                "type",
            ],
            (Resource::Events, _) => &[
                "metadata.name",
                "metadata.namespace",
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            // Built-in kinds without their own field labels get the scheme's default
            // conversion, which accepts both metadata labels even when cluster-scoped (apps/v1
            // registers no field label conversion of its own).
            (Resource::Ingresses | Resource::IngressClasses, _) => META,
            (r, _) if r.is_workload() => META,
            // The CRD converter accepts metadata.namespace only for namespaced kinds (the
            // standard Gateway API CRDs declare no selectableFields).
            (r, _) if !r.namespaced() => &["metadata.name"],
            _ => META,
        }
    }
}

/// The API group and version an object is read or written through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiGroup {
    /// `v1` (`/api/v1`).
    Core,
    /// `apps/v1`.
    AppsV1,
    /// `events.k8s.io/v1` (`/apis/events.k8s.io/v1`).
    EventsV1,
    /// `networking.k8s.io/v1`.
    NetworkingV1,
    /// `gateway.networking.k8s.io/v1`.
    GatewayV1,
    /// `gateway.networking.k8s.io/v1beta1`.
    GatewayV1beta1,
    /// `cert-manager.io/v1`.
    CertManagerV1,
}

impl ApiGroup {
    /// Every group version; within a group, the preferred version first. The order of the
    /// groups is the order of `/apis`.
    pub const ALL: [ApiGroup; 7] = [
        ApiGroup::Core,
        ApiGroup::AppsV1,
        ApiGroup::EventsV1,
        ApiGroup::NetworkingV1,
        ApiGroup::GatewayV1,
        ApiGroup::GatewayV1beta1,
        ApiGroup::CertManagerV1,
    ];

    /// `apiVersion` value (`v1`, `networking.k8s.io/v1`).
    pub fn api_version(self) -> &'static str {
        match self {
            ApiGroup::Core => "v1",
            ApiGroup::AppsV1 => "apps/v1",
            ApiGroup::EventsV1 => "events.k8s.io/v1",
            ApiGroup::NetworkingV1 => "networking.k8s.io/v1",
            ApiGroup::GatewayV1 => "gateway.networking.k8s.io/v1",
            ApiGroup::GatewayV1beta1 => "gateway.networking.k8s.io/v1beta1",
            ApiGroup::CertManagerV1 => "cert-manager.io/v1",
        }
    }

    /// Group name (`""` for core).
    pub fn group(self) -> &'static str {
        match self.api_version().rsplit_once('/') {
            Some((group, _)) => group,
            None => "",
        }
    }

    /// Version (`v1`, `v1beta1`).
    pub fn version(self) -> &'static str {
        match self.api_version().rsplit_once('/') {
            Some((_, version)) => version,
            None => self.api_version(),
        }
    }

    /// The group version of an `apiVersion` value.
    pub fn from_api_version(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.api_version() == s)
    }

    /// The group version of `/apis/<group>/<version>`.
    pub(crate) fn from_group_version(group: &str, version: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|g| g.group() == group && g.version() == version)
    }

    /// The resources served at this group version, sorted by plural name (discovery order).
    pub fn resources(self) -> Vec<Resource> {
        let mut out: Vec<Resource> = Resource::ALL
            .into_iter()
            .filter(|r| r.served_at(self))
            .collect();
        out.sort_by_key(|r| r.plural());
        out
    }

    /// The versions of a named group, preferred first (empty for an unknown group).
    pub(crate) fn versions_of(group: &str) -> Vec<ApiGroup> {
        Self::ALL
            .into_iter()
            .filter(|g| g.group() == group)
            .collect()
    }

    /// The non-core group names, in `/apis` order.
    pub(crate) fn group_names() -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for g in Self::ALL {
            if !g.group().is_empty() && !out.contains(&g.group()) {
                out.push(g.group());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for r in Resource::ALL {
            assert_eq!(Resource::from_plural(r.plural()), Some(r));
            for g in r.group_versions() {
                assert_eq!(
                    Resource::from_kind(g.api_version(), r.kind()),
                    Some((r, *g))
                );
                assert!(g.resources().contains(&r));
            }
        }
        assert_eq!(
            ApiGroup::GatewayV1beta1.group(),
            "gateway.networking.k8s.io"
        );
        assert_eq!(ApiGroup::GatewayV1beta1.version(), "v1beta1");
        assert_eq!(ApiGroup::Core.group(), "");
        assert_eq!(ApiGroup::Core.version(), "v1");
        assert_eq!(
            ApiGroup::group_names(),
            [
                "apps",
                "events.k8s.io",
                "networking.k8s.io",
                "gateway.networking.k8s.io",
                "cert-manager.io"
            ]
        );
        assert_eq!(Resource::from_kind("networking.k8s.io/v1", "Gateway"), None);
        assert_eq!(
            Resource::Ingresses.qualified(),
            "ingresses.networking.k8s.io"
        );
        assert_eq!(Resource::Events.qualified(), "events");
        assert_eq!(Resource::Deployments.qualified(), "deployments.apps");
        assert_eq!(
            Resource::from_kind("apps/v1", "StatefulSet"),
            Some((Resource::StatefulSets, ApiGroup::AppsV1))
        );
    }
}
