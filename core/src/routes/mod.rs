//! Where a TLS host becomes an expected Secret, for controllers that read their certificates
//! from the API (ingress-nginx, Gateway API implementations) and mount none of them.
//!
//! ```text
//!  Ingress ── class: ingressClassName → IngressClass.spec.controller,  ─┐
//!             legacy annotation, or the default IngressClass            │
//!  Gateway ── GatewayClass.spec.controllerName; HTTPS/TLS listeners     ├─▶ RouteIndex::hosts_for(RouteMatch)
//!             with mode Terminate; hostless or wildcard listeners take  │      = host → Secret (+ origin),
//!             their hosts from attached HTTPRoutes/TLSRoutes;           │        problems (a reference no
//!             cross-namespace refs need a ReferenceGrant               ─┘        ReferenceGrant allows)
//! ```
//!
//! The agent converts the API objects into these views at the edge; nothing here knows kube.

mod gateway;
mod ingress;
#[cfg(test)]
mod tests;

use crate::certmanager::IssuerRef;
use crate::reconcile::SecretKey;

/// The kinds that say which hosts a controller serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    Ingress,
    IngressClass,
    Gateway,
    GatewayClass,
    ReferenceGrant,
    HttpRoute,
    TlsRoute,
}

impl RouteKind {
    pub const INGRESS_KINDS: [RouteKind; 2] = [RouteKind::Ingress, RouteKind::IngressClass];
    pub const GATEWAY_KINDS: [RouteKind; 5] = [
        RouteKind::Gateway,
        RouteKind::GatewayClass,
        RouteKind::ReferenceGrant,
        RouteKind::HttpRoute,
        RouteKind::TlsRoute,
    ];

    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Ingress => "Ingress",
            RouteKind::IngressClass => "IngressClass",
            RouteKind::Gateway => "Gateway",
            RouteKind::GatewayClass => "GatewayClass",
            RouteKind::ReferenceGrant => "ReferenceGrant",
            RouteKind::HttpRoute => "HTTPRoute",
            RouteKind::TlsRoute => "TLSRoute",
        }
    }

    /// The plural resource name (for metrics and RBAC messages).
    pub fn resource(self) -> &'static str {
        match self {
            RouteKind::Ingress => "ingresses",
            RouteKind::IngressClass => "ingressclasses",
            RouteKind::Gateway => "gateways",
            RouteKind::GatewayClass => "gatewayclasses",
            RouteKind::ReferenceGrant => "referencegrants",
            RouteKind::HttpRoute => "httproutes",
            RouteKind::TlsRoute => "tlsroutes",
        }
    }

    pub fn cluster_scoped(self) -> bool {
        matches!(self, RouteKind::IngressClass | RouteKind::GatewayClass)
    }
}

/// One object of a [`RouteKind`], by kind, namespace (none for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteObjectKey {
    pub kind: RouteKind,
    pub namespace: Option<String>,
    pub name: String,
}

/// An object as the agent converted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteObject {
    Ingress(IngressView),
    IngressClass(IngressClassView),
    Gateway(GatewayView),
    GatewayClass(GatewayClassView),
    ReferenceGrant(ReferenceGrantView),
    /// An HTTPRoute or a TLSRoute: only its hostnames and parents matter here.
    Route(AttachedRouteView),
}

impl RouteObject {
    pub fn key(&self) -> RouteObjectKey {
        let (kind, namespace, name) = match self {
            RouteObject::Ingress(i) => (RouteKind::Ingress, Some(&i.namespace), &i.name),
            RouteObject::IngressClass(c) => (RouteKind::IngressClass, None, &c.name),
            RouteObject::Gateway(g) => (RouteKind::Gateway, Some(&g.namespace), &g.name),
            RouteObject::GatewayClass(c) => (RouteKind::GatewayClass, None, &c.name),
            RouteObject::ReferenceGrant(g) => {
                (RouteKind::ReferenceGrant, Some(&g.namespace), &g.name)
            }
            RouteObject::Route(r) => (r.kind, Some(&r.namespace), &r.name),
        };
        RouteObjectKey {
            kind,
            namespace: namespace.cloned(),
            name: name.clone(),
        }
    }
}

/// `networking.k8s.io/v1` Ingress: its class and `spec.tls`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IngressView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.ingressClassName`.
    pub class_name: Option<String>,
    /// The legacy `kubernetes.io/ingress.class` annotation.
    pub class_annotation: Option<String>,
    pub tls: Vec<IngressTls>,
    /// `spec.rules[].host`: the concrete hosts a wildcard TLS host is probed through.
    pub rule_hosts: Vec<String>,
    /// The `cert-manager.io/issuer` or `cert-manager.io/cluster-issuer` annotation.
    pub cert_manager_issuer: Option<IssuerRef>,
}

/// One `spec.tls[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IngressTls {
    pub hosts: Vec<String>,
    /// `None`: the controller's default certificate.
    pub secret_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IngressClassView {
    pub name: String,
    /// `spec.controller`, e.g. `k8s.io/ingress-nginx`.
    pub controller: String,
    /// Annotated `ingressclass.kubernetes.io/is-default-class: "true"`.
    pub is_default: bool,
}

/// `gateway.networking.k8s.io/v1` Gateway.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewayView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub class_name: String,
    pub listeners: Vec<ListenerView>,
    /// The `cert-manager.io/issuer` or `cert-manager.io/cluster-issuer` annotation (cert-manager's
    /// gateway-shim reads the same ones).
    pub cert_manager_issuer: Option<IssuerRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListenerView {
    pub name: String,
    pub hostname: Option<String>,
    pub port: u16,
    /// `HTTPS`, `TLS`, `HTTP`, ...
    pub protocol: String,
    /// `tls.mode`; `None` when the listener has no `tls` (Terminate is the API default).
    pub tls_mode: Option<TlsMode>,
    pub certificate_refs: Vec<CertificateRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Terminate,
    /// The backend's certificate, not the controller's: never compared.
    Passthrough,
}

/// A `tls.certificateRefs[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertificateRef {
    /// `""`: the core group (a Secret).
    pub group: String,
    /// `Secret` unless set.
    pub kind: String,
    /// `None`: the Gateway's namespace.
    pub namespace: Option<String>,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewayClassView {
    pub name: String,
    /// `spec.controllerName`, e.g. `gateway.envoyproxy.io/gatewayclass-controller`.
    pub controller_name: String,
}

/// A ReferenceGrant: lets objects `from` other namespaces refer to objects `to` in its own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReferenceGrantView {
    pub namespace: String,
    pub name: String,
    pub from: Vec<GrantFrom>,
    pub to: Vec<GrantTo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrantFrom {
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrantTo {
    pub group: String,
    pub kind: String,
    /// `None`: every object of the kind.
    pub name: Option<String>,
}

/// An HTTPRoute or TLSRoute: the hosts it brings to the listeners it attaches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedRouteView {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
    pub hostnames: Vec<String>,
    pub parents: Vec<ParentRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParentRef {
    /// `None`: the route's namespace.
    pub namespace: Option<String>,
    pub name: String,
    /// The listener's name, when the route picks one.
    pub section_name: Option<String>,
}

/// What one controller profile serves: which classes are its own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteMatch {
    /// IngressClass `spec.controller` values it implements (`k8s.io/ingress-nginx`).
    pub ingress_controllers: Vec<String>,
    /// IngressClass names it takes whatever their `spec.controller` (Contour matches the
    /// class by name, `contour`).
    pub ingress_class_names: Vec<String>,
    /// Legacy `kubernetes.io/ingress.class` annotation values it takes (`nginx`).
    pub ingress_class_annotations: Vec<String>,
    /// GatewayClass `spec.controllerName` values it implements.
    pub gateway_controllers: Vec<String>,
    /// Served without SNI and for TLS hosts without a Secret
    /// (ingress-nginx `--default-ssl-certificate`).
    pub default_certificate: Option<SecretKey>,
}

impl RouteMatch {
    pub fn watches_ingresses(&self) -> bool {
        !self.ingress_controllers.is_empty()
            || !self.ingress_class_names.is_empty()
            || !self.ingress_class_annotations.is_empty()
    }

    pub fn watches_gateways(&self) -> bool {
        !self.gateway_controllers.is_empty()
    }

    /// The kinds to watch for this profile.
    pub fn kinds(&self) -> Vec<RouteKind> {
        let mut kinds = Vec::new();
        if self.watches_ingresses() {
            kinds.extend(RouteKind::INGRESS_KINDS);
        }
        if self.watches_gateways() {
            kinds.extend(RouteKind::GATEWAY_KINDS);
        }
        kinds
    }
}

/// The object a host comes from: what Events about it are regarding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteOrigin {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The Gateway listener.
    pub listener: Option<String>,
}

impl RouteOrigin {
    /// `Ingress shop/web`, `Gateway infra/edge listener https`.
    pub fn describe(&self) -> String {
        let listener = self
            .listener
            .as_deref()
            .map(|l| format!(" listener {l}"))
            .unwrap_or_default();
        format!(
            "{} {}/{}{listener}",
            self.kind.as_str(),
            self.namespace,
            self.name
        )
    }
}

/// One concrete host the controller must serve with the certificate of `secret`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TlsHost {
    pub host: String,
    pub secret: SecretKey,
    pub origin: RouteOrigin,
}

/// A certificate reference that does not count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RefNotPermitted {
    pub origin: RouteOrigin,
    pub secret: SecretKey,
    pub why: String,
}

/// What one controller must serve, from the objects seen so far.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ControllerHosts {
    pub hosts: Vec<TlsHost>,
    /// Expected without SNI (and the Secret of TLS hosts that name none).
    pub default_certificate: Option<SecretKey>,
    pub not_permitted: Vec<RefNotPermitted>,
}

impl ControllerHosts {
    /// Every Secret the controller's hosts need (to watch by name).
    pub fn secrets(&self) -> impl Iterator<Item = &SecretKey> {
        self.hosts
            .iter()
            .map(|h| &h.secret)
            .chain(self.default_certificate.iter())
    }
}

impl crate::objects::Keyed for RouteObject {
    type Key = RouteObjectKey;
    type Kind = RouteKind;
    fn key(&self) -> RouteObjectKey {
        RouteObject::key(self)
    }
    fn kind_of(key: &RouteObjectKey) -> RouteKind {
        key.kind
    }
}

/// Every Ingress and Gateway API object seen, by key.
#[derive(Debug, Clone, Default)]
pub struct RouteIndex {
    objects: crate::objects::Objects<RouteObject>,
}

impl RouteIndex {
    /// Stores (or replaces) an object; returns whether anything changed.
    pub fn apply(&mut self, object: RouteObject) -> bool {
        self.objects.apply(object)
    }

    pub fn delete(&mut self, key: &RouteObjectKey) -> bool {
        self.objects.delete(key)
    }

    /// A (re)list of one kind: objects of the kind not in it are gone.
    pub fn replace_kind(&mut self, kind: RouteKind, objects: Vec<RouteObject>) -> bool {
        self.objects.replace_kind(kind, objects)
    }

    /// Forgets every object of `kinds` (their watches stopped).
    pub fn forget_kinds(&mut self, kinds: &[RouteKind]) {
        self.objects.forget_kinds(kinds);
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The cert-manager issuer annotation of the Ingress or Gateway a host comes from.
    pub fn cert_manager_issuer(&self, origin: &RouteOrigin) -> Option<&IssuerRef> {
        let key = RouteObjectKey {
            kind: origin.kind,
            namespace: Some(origin.namespace.clone()),
            name: origin.name.clone(),
        };
        match self.objects.get(&key)? {
            RouteObject::Ingress(ingress) => ingress.cert_manager_issuer.as_ref(),
            RouteObject::Gateway(gateway) => gateway.cert_manager_issuer.as_ref(),
            _ => None,
        }
    }

    fn of_kind(&self, kind: RouteKind) -> impl Iterator<Item = &RouteObject> {
        self.objects
            .from_key(RouteObjectKey {
                kind,
                namespace: None,
                name: String::new(),
            })
            .take_while(move |(key, _)| key.kind == kind)
            .map(|(_, object)| object)
    }

    /// The hosts a controller with `matcher` must serve, and the references that do not count.
    pub fn hosts_for(&self, matcher: &RouteMatch) -> ControllerHosts {
        let mut out = ControllerHosts {
            default_certificate: matcher.default_certificate.clone(),
            ..ControllerHosts::default()
        };
        if matcher.watches_ingresses() {
            self.ingress_hosts(matcher, &mut out);
        }
        if matcher.watches_gateways() {
            self.gateway_hosts(matcher, &mut out);
        }
        out.hosts.sort();
        out.hosts.dedup();
        out.not_permitted.sort();
        out.not_permitted.dedup();
        out
    }
}

/// Whether `host` is covered by `pattern` (`*.example.com` covers one label).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest.eq_ignore_ascii_case(suffix)),
        None => pattern.eq_ignore_ascii_case(host),
    }
}
