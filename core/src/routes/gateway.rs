//! Gateway → hosts: the controller's Gateways (by GatewayClass `controllerName`), their HTTPS
//! and TLS listeners that terminate TLS, the Secret each listener serves and the concrete
//! hosts it serves it for.
//!
//! - A listener with a concrete `hostname` serves that host. One without (or with a wildcard)
//!   serves the hostnames of the HTTPRoutes (HTTPS) or TLSRoutes (TLS) attached to it that it
//!   covers; a route with a wildcard hostname adds no concrete host to probe.
//! - `mode: Passthrough` presents the backend's certificate, not the controller's: skipped.
//! - A `certificateRef` to another namespace counts only when a ReferenceGrant in that
//!   namespace lets Gateways of the Gateway's namespace refer to the Secret; otherwise it is
//!   reported, as the controller will not serve it.
//!
//! Not modelled: `allowedRoutes` (a route the listener does not admit still adds its hosts;
//! probing them is harmless), route acceptance status, non-Secret certificate kinds.

use std::collections::BTreeSet;

use super::*;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

impl RouteIndex {
    pub(super) fn gateway_hosts(&self, matcher: &RouteMatch, out: &mut ControllerHosts) {
        let classes: BTreeSet<&str> = self
            .of_kind(RouteKind::GatewayClass)
            .filter_map(|o| match o {
                RouteObject::GatewayClass(c)
                    if matcher.gateway_controllers.contains(&c.controller_name) =>
                {
                    Some(c.name.as_str())
                }
                _ => None,
            })
            .collect();
        for object in self.of_kind(RouteKind::Gateway) {
            let RouteObject::Gateway(gateway) = object else {
                continue;
            };
            if !classes.contains(gateway.class_name.as_str()) {
                continue;
            }
            for listener in &gateway.listeners {
                self.listener_hosts(gateway, listener, out);
            }
        }
    }

    fn listener_hosts(
        &self,
        gateway: &GatewayView,
        listener: &ListenerView,
        out: &mut ControllerHosts,
    ) {
        let route_kind = match listener.protocol.as_str() {
            "HTTPS" => RouteKind::HttpRoute,
            "TLS" => RouteKind::TlsRoute,
            _ => return,
        };
        if listener.tls_mode == Some(TlsMode::Passthrough) {
            return;
        }
        let origin = RouteOrigin {
            kind: RouteKind::Gateway,
            namespace: gateway.namespace.clone(),
            name: gateway.name.clone(),
            uid: gateway.uid.clone(),
            listener: Some(listener.name.clone()),
        };
        let mut secrets = Vec::new();
        for reference in &listener.certificate_refs {
            let is_secret = reference.group.is_empty()
                && (reference.kind.is_empty() || reference.kind == "Secret");
            if !is_secret {
                continue;
            }
            let namespace = reference
                .namespace
                .clone()
                .unwrap_or_else(|| gateway.namespace.clone());
            let secret = SecretKey {
                namespace,
                name: reference.name.clone(),
            };
            if secret.namespace != gateway.namespace && !self.granted(&gateway.namespace, &secret) {
                out.not_permitted.push(RefNotPermitted {
                    origin: origin.clone(),
                    why: format!(
                        "no ReferenceGrant in namespace {} lets Gateways of namespace {} refer to Secret {}",
                        secret.namespace, gateway.namespace, secret.name
                    ),
                    secret,
                });
                continue;
            }
            secrets.push(secret);
        }
        if secrets.is_empty() {
            return;
        }
        let hosts = match listener.hostname.as_deref() {
            Some(host) if !host.starts_with('*') && !host.is_empty() => {
                vec![host.to_ascii_lowercase()]
            }
            pattern => self.attached_hosts(gateway, listener, route_kind, pattern),
        };
        for host in hosts {
            for secret in &secrets {
                out.hosts.push(TlsHost {
                    host: host.clone(),
                    secret: secret.clone(),
                    origin: origin.clone(),
                });
            }
        }
    }

    /// Whether a ReferenceGrant in the Secret's namespace admits Gateways of `from_namespace`.
    fn granted(&self, from_namespace: &str, secret: &SecretKey) -> bool {
        self.of_kind(RouteKind::ReferenceGrant).any(|o| {
            let RouteObject::ReferenceGrant(grant) = o else {
                return false;
            };
            grant.namespace == secret.namespace
                && grant.from.iter().any(|f| {
                    f.group == GATEWAY_GROUP && f.kind == "Gateway" && f.namespace == from_namespace
                })
                && grant.to.iter().any(|t| {
                    t.group.is_empty()
                        && t.kind == "Secret"
                        && t.name.as_ref().is_none_or(|n| n == &secret.name)
                })
        })
    }

    /// Concrete hostnames of the routes attached to the listener that its `pattern` covers.
    fn attached_hosts(
        &self,
        gateway: &GatewayView,
        listener: &ListenerView,
        kind: RouteKind,
        pattern: Option<&str>,
    ) -> Vec<String> {
        let mut hosts = Vec::new();
        for object in self.of_kind(kind) {
            let RouteObject::Route(route) = object else {
                continue;
            };
            let attached = route.parents.iter().any(|p| {
                p.name == gateway.name
                    && p.namespace.as_deref().unwrap_or(&route.namespace) == gateway.namespace
                    && p.section_name.as_ref().is_none_or(|s| s == &listener.name)
            });
            if !attached {
                continue;
            }
            hosts.extend(
                route
                    .hostnames
                    .iter()
                    .filter(|h| !h.starts_with('*') && !h.is_empty())
                    .filter(|h| pattern.is_none_or(|p| gateway_host_matches(p, h)))
                    .map(|h| h.to_ascii_lowercase()),
            );
        }
        hosts
    }
}

/// Gateway API's wildcard: `*.example.com` matches any host ending in `.example.com`, of any
/// depth, but not `example.com` itself.
fn gateway_host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            host.len() > suffix.len()
                && host
                    .to_ascii_lowercase()
                    .ends_with(&suffix.to_ascii_lowercase())
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}
