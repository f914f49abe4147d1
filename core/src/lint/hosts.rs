//! TLS hosts: which controller serves which (per profile with [`RouteIndex::hosts_for`], and
//! per class for objects no profile claims), hosts without a Secret, one host with different
//! Secrets, references no ReferenceGrant allows, and the cert-manager findings.

use std::collections::{BTreeMap, BTreeSet};

use crate::certmanager::CertManagerIndex;
use crate::certmanager::findings::{HostUse, SecretFacts, SecretUse, findings};
use crate::reconcile::SecretKey;
use crate::routes::{ControllerHosts, RouteIndex, RouteKind, RouteMatch, RouteObject, RouteOrigin};

use super::{Check, Cluster, LintFinding, LintSecret, Settings, list};

/// What one controller serves: a profile's, or (for objects no profile claims) a class's.
#[derive(Debug)]
pub(super) struct Group {
    /// `ingress-nginx`, `IngressClass controller k8s.io/ingress-nginx`.
    pub(super) name: String,
    pub(super) hosts: ControllerHosts,
}

/// The object a host comes from, without the listener.
type ObjectKey = (RouteKind, String, String);

fn object_of(origin: &RouteOrigin) -> ObjectKey {
    (origin.kind, origin.namespace.clone(), origin.name.clone())
}

/// The controllers: every profile with routes, then one per class (IngressClass controller,
/// class name without an IngressClass, legacy annotation, GatewayClass controller) for the
/// Ingresses and Gateways no profile claims.
pub(super) fn groups(cluster: &Cluster, index: &RouteIndex) -> Vec<Group> {
    let mut groups = Vec::new();
    let mut claimed: BTreeSet<ObjectKey> = BTreeSet::new();
    for profile in &cluster.profiles {
        let Some(matcher) = &profile.routes else {
            continue;
        };
        let hosts = index.hosts_for(matcher);
        claimed.extend(hosts.hosts.iter().map(|h| object_of(&h.origin)));
        claimed.extend(hosts.not_permitted.iter().map(|p| object_of(&p.origin)));
        groups.push(Group {
            name: profile.name.clone(),
            hosts,
        });
    }
    let mut fallback: BTreeMap<String, RouteMatch> = BTreeMap::new();
    let class_names: BTreeSet<&str> = cluster
        .routes
        .iter()
        .filter_map(|o| match o {
            RouteObject::IngressClass(c) => Some(c.name.as_str()),
            _ => None,
        })
        .collect();
    for object in &cluster.routes {
        match object {
            RouteObject::IngressClass(class) => {
                fallback.insert(
                    format!("IngressClass controller {}", class.controller),
                    RouteMatch {
                        ingress_controllers: vec![class.controller.clone()],
                        ..RouteMatch::default()
                    },
                );
            }
            RouteObject::Ingress(ingress) => match (&ingress.class_name, &ingress.class_annotation)
            {
                (Some(name), _) if !class_names.contains(name.as_str()) => {
                    fallback.insert(
                        format!("ingressClassName {name}"),
                        RouteMatch {
                            ingress_class_names: vec![name.clone()],
                            ..RouteMatch::default()
                        },
                    );
                }
                (None, Some(annotation)) => {
                    fallback.insert(
                        format!("kubernetes.io/ingress.class {annotation}"),
                        RouteMatch {
                            ingress_class_annotations: vec![annotation.clone()],
                            ..RouteMatch::default()
                        },
                    );
                }
                _ => {}
            },
            RouteObject::GatewayClass(class) => {
                fallback.insert(
                    format!("GatewayClass controller {}", class.controller_name),
                    RouteMatch {
                        gateway_controllers: vec![class.controller_name.clone()],
                        ..RouteMatch::default()
                    },
                );
            }
            _ => {}
        }
    }
    for (name, matcher) in fallback {
        let mut hosts = index.hosts_for(&matcher);
        hosts
            .hosts
            .retain(|h| !claimed.contains(&object_of(&h.origin)));
        hosts
            .not_permitted
            .retain(|p| !claimed.contains(&object_of(&p.origin)));
        if !hosts.hosts.is_empty() || !hosts.not_permitted.is_empty() {
            groups.push(Group { name, hosts });
        }
    }
    groups
}

pub(super) fn check(cluster: &Cluster, groups: &[Group], out: &mut BTreeSet<LintFinding>) {
    without_secret(cluster, out);
    for group in groups {
        duplicates(group, out);
        for refused in &group.hosts.not_permitted {
            let listener = refused
                .origin
                .listener
                .as_deref()
                .map(|l| format!("listener {l}"))
                .unwrap_or_else(|| "a listener".to_string());
            out.insert(LintFinding::new(
                Check::CertificateRefNotPermitted,
                refused.origin.kind.as_str(),
                &refused.origin.namespace,
                &refused.origin.name,
                format!(
                    "{listener} refers to Secret {}/{}, but {}: the controller will not serve it",
                    refused.secret.namespace, refused.secret.name, refused.why
                ),
            ));
        }
    }
}

/// Ingress `spec.tls[]` entries with hosts and no `secretName`.
fn without_secret(cluster: &Cluster, out: &mut BTreeSet<LintFinding>) {
    for object in &cluster.routes {
        let RouteObject::Ingress(ingress) = object else {
            continue;
        };
        for (entry, tls) in ingress.tls.iter().enumerate() {
            let named = tls.secret_name.as_deref().is_some_and(|n| !n.is_empty());
            if named || tls.hosts.is_empty() {
                continue;
            }
            let defaults: Vec<String> = cluster
                .profiles
                .iter()
                .filter_map(|p| {
                    let secret = p.routes.as_ref()?.default_certificate.as_ref()?;
                    Some(format!(
                        "profile {}: Secret {}/{}",
                        p.name, secret.namespace, secret.name
                    ))
                })
                .collect();
            let served = if defaults.is_empty() {
                "the controller's default certificate (ingress-nginx: a self-signed fake unless --default-ssl-certificate is set)".to_string()
            } else {
                format!(
                    "the controller's default certificate ({})",
                    list(&defaults, 3)
                )
            };
            out.insert(LintFinding::new(
                Check::TlsHostWithoutSecret,
                "Ingress",
                &ingress.namespace,
                &ingress.name,
                format!(
                    "spec.tls[{entry}] names no secretName: {} gets {served}",
                    list(&tls.hosts, 5)
                ),
            ));
        }
    }
}

/// One host of one controller with different Secrets from different objects: the controller
/// serves one of them for every client of the host.
fn duplicates(group: &Group, out: &mut BTreeSet<LintFinding>) {
    let mut by_host: BTreeMap<&str, BTreeMap<ObjectKey, BTreeSet<&SecretKey>>> = BTreeMap::new();
    for host in &group.hosts.hosts {
        by_host
            .entry(host.host.as_str())
            .or_default()
            .entry(object_of(&host.origin))
            .or_default()
            .insert(&host.secret);
    }
    for (host, objects) in by_host {
        if objects.len() < 2 {
            continue;
        }
        for (object, secrets) in &objects {
            let others: Vec<String> = objects
                .iter()
                .filter(|(other, theirs)| *other != object && *theirs != secrets)
                .map(|((kind, namespace, name), theirs)| {
                    format!(
                        "{} {namespace}/{name} serves it with {}",
                        kind.as_str(),
                        describe_secrets(theirs)
                    )
                })
                .collect();
            if others.is_empty() {
                continue;
            }
            let (kind, namespace, name) = object;
            out.insert(LintFinding::new(
                Check::DuplicateTlsHost,
                kind.as_str(),
                namespace,
                name,
                format!(
                    "TLS host {host} uses {} here, but {} (controller {}): clients of the host get one certificate or the other",
                    describe_secrets(secrets),
                    list(&others, 3),
                    group.name
                ),
            ));
        }
    }
}

fn describe_secrets(secrets: &BTreeSet<&SecretKey>) -> String {
    let names: Vec<String> = secrets
        .iter()
        .map(|s| format!("Secret {}/{}", s.namespace, s.name))
        .collect();
    names.join(" + ")
}

/// The cert-manager findings for every Secret served (mounted by controller pods, named by the
/// hosts of every group, default certificates) and every Certificate in scope.
pub(super) fn cert_manager(
    cluster: &Cluster,
    groups: &[Group],
    routes: &RouteIndex,
    index: &CertManagerIndex,
    secrets: &BTreeMap<SecretKey, LintSecret>,
    settings: &Settings,
    out: &mut BTreeSet<LintFinding>,
) {
    let mut uses = BTreeSet::new();
    for pod in &cluster.controller_pods {
        for secret in pod.secret_names() {
            uses.insert(SecretUse {
                controller: pod.controller.clone(),
                secret: SecretKey {
                    namespace: pod.namespace.clone(),
                    name: secret.to_string(),
                },
                mounted: true,
                host: None,
            });
        }
    }
    for group in groups {
        for host in &group.hosts.hosts {
            uses.insert(SecretUse {
                controller: group.name.clone(),
                secret: host.secret.clone(),
                mounted: false,
                host: Some(HostUse {
                    origin: host.origin.clone(),
                    host: host.host.clone(),
                    issuer: routes.cert_manager_issuer(&host.origin).cloned(),
                }),
            });
        }
        if let Some(secret) = &group.hosts.default_certificate {
            uses.insert(SecretUse {
                controller: group.name.clone(),
                secret: secret.clone(),
                mounted: false,
                host: None,
            });
        }
    }
    // Every Certificate is judged, served or not yet.
    for object in &cluster.cert_manager {
        if let crate::certmanager::CertManagerObject::Certificate(c) = object {
            uses.insert(SecretUse {
                controller: String::new(),
                secret: SecretKey {
                    namespace: c.namespace.clone(),
                    name: c.secret_name.clone(),
                },
                mounted: false,
                host: None,
            });
        }
    }
    let uses: Vec<SecretUse> = uses
        .into_iter()
        .filter(|u| cluster.scope.contains(&u.secret.namespace))
        .collect();
    let facts: BTreeMap<SecretKey, SecretFacts> = secrets
        .iter()
        .map(|(key, secret)| (key.clone(), SecretFacts::of_view(&secret.view)))
        .collect();
    let found = findings(
        &uses,
        &facts,
        index,
        settings.now.unix_timestamp(),
        settings.grace,
    );
    for (key, found) in found.found {
        out.insert(LintFinding::new(
            Check::CertManager(key.reason),
            key.kind,
            &key.namespace,
            &key.name,
            found.finding.message,
        ));
    }
}
