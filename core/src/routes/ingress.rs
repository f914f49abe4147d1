//! Ingress → hosts: which Ingresses are the controller's, and which Secret serves each TLS host.
//!
//! The class is decided as the controllers decide it (ingress-nginx's `IsValid`): an Ingress
//! naming an IngressClass is the controller's when that class's `spec.controller` is one the
//! controller implements; one with only the legacy annotation when the value is one it takes;
//! one with neither when a default IngressClass is the controller's.

use super::*;

impl RouteIndex {
    pub(super) fn ingress_hosts(&self, matcher: &RouteMatch, out: &mut ControllerHosts) {
        let classes: Vec<&IngressClassView> = self
            .of_kind(RouteKind::IngressClass)
            .filter_map(|o| match o {
                RouteObject::IngressClass(c) => Some(c),
                _ => None,
            })
            .collect();
        let ours =
            |class: &IngressClassView| matcher.ingress_controllers.contains(&class.controller);
        let default_is_ours = classes.iter().any(|c| c.is_default && ours(c));
        for object in self.of_kind(RouteKind::Ingress) {
            let RouteObject::Ingress(ingress) = object else {
                continue;
            };
            let selected = match (&ingress.class_name, &ingress.class_annotation) {
                // A class named but not (yet) listed: its name alone may say it is ours.
                (Some(name), _) => {
                    classes.iter().any(|c| &c.name == name && ours(c))
                        || (matcher.ingress_class_names.contains(name)
                            && !classes.iter().any(|c| &c.name == name))
                }
                (None, Some(annotation)) => matcher.ingress_class_annotations.contains(annotation),
                (None, None) => default_is_ours,
            };
            if selected {
                ingress_tls_hosts(ingress, matcher, out);
            }
        }
    }
}

fn ingress_tls_hosts(ingress: &IngressView, matcher: &RouteMatch, out: &mut ControllerHosts) {
    let origin = RouteOrigin {
        kind: RouteKind::Ingress,
        namespace: ingress.namespace.clone(),
        name: ingress.name.clone(),
        uid: ingress.uid.clone(),
        listener: None,
    };
    for tls in &ingress.tls {
        // A TLS entry without a Secret is served with the default certificate, when there is
        // one to expect.
        let secret = match &tls.secret_name {
            Some(name) => SecretKey {
                namespace: ingress.namespace.clone(),
                name: name.clone(),
            },
            None => match &matcher.default_certificate {
                Some(default) => default.clone(),
                None => continue,
            },
        };
        for host in concrete_hosts(&tls.hosts, &ingress.rule_hosts) {
            out.hosts.push(TlsHost {
                host,
                secret: secret.clone(),
                origin: origin.clone(),
            });
        }
    }
}

/// The TLS hosts as SNI names: a wildcard stands for the rule hosts it covers.
fn concrete_hosts(tls_hosts: &[String], rule_hosts: &[String]) -> Vec<String> {
    let mut hosts = Vec::new();
    for host in tls_hosts {
        if host.starts_with("*.") {
            hosts.extend(
                rule_hosts
                    .iter()
                    .filter(|r| !r.starts_with("*.") && host_matches(host, r))
                    .cloned(),
            );
        } else if !host.is_empty() {
            hosts.push(host.to_ascii_lowercase());
        }
    }
    hosts
}
