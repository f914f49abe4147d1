//! The Secrets TLS hosts, Gateway listeners, default certificates and controller pods name:
//! missing, of the wrong type, without `tls.crt`/`tls.key`, with material a server refuses or
//! about to expire; and `kubernetes.io/tls` Secrets nothing names.

use std::collections::{BTreeMap, BTreeSet};

use crate::cert::{self, PemContents, Validity};
use crate::reconcile::SecretKey;
use crate::reconcile::material::material_of_secrets;
use crate::reconcile::reload::Material;
use crate::routes::{RouteObject, TlsMode};

use super::{Check, Cluster, LintFinding, LintSecret, Settings, TLS_SECRET_TYPE, list, rfc3339};

/// Who names a Secret.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Referrer {
    Ingress {
        namespace: String,
        name: String,
        entry: usize,
        hosts: Vec<String>,
    },
    Gateway {
        namespace: String,
        name: String,
        listener: String,
    },
    Pod {
        namespace: String,
        name: String,
        volume: String,
        optional: bool,
    },
    /// A profile's `routes.defaultCertificate`.
    Profile { name: String },
}

impl Referrer {
    /// `Ingress shop/web (spec.tls[0])`.
    fn describe(&self) -> String {
        match self {
            Referrer::Ingress {
                namespace,
                name,
                entry,
                ..
            } => format!("Ingress {namespace}/{name} (spec.tls[{entry}])"),
            Referrer::Gateway {
                namespace,
                name,
                listener,
            } => format!("Gateway {namespace}/{name} (listener {listener})"),
            Referrer::Pod {
                namespace,
                name,
                volume,
                ..
            } => format!("Pod {namespace}/{name} (volume {volume})"),
            Referrer::Profile { name } => {
                format!("controller profile {name} (routes.defaultCertificate)")
            }
        }
    }

    /// Whether it needs a TLS Secret (`tls.crt` and `tls.key`); a pod may mount any layout.
    fn wants_tls_keys(&self) -> bool {
        !matches!(self, Referrer::Pod { .. })
    }
}

/// One Secret named by one referrer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Reference {
    pub(super) secret: SecretKey,
    pub(super) by: Referrer,
}

/// Every Secret named for TLS or mounted by a controller pod, in any namespace.
pub(super) fn references(cluster: &Cluster) -> Vec<Reference> {
    let mut out = Vec::new();
    for object in &cluster.routes {
        match object {
            RouteObject::Ingress(ingress) => {
                for (entry, tls) in ingress.tls.iter().enumerate() {
                    let Some(name) = tls.secret_name.as_deref().filter(|n| !n.is_empty()) else {
                        continue;
                    };
                    out.push(Reference {
                        secret: SecretKey {
                            namespace: ingress.namespace.clone(),
                            name: name.to_string(),
                        },
                        by: Referrer::Ingress {
                            namespace: ingress.namespace.clone(),
                            name: ingress.name.clone(),
                            entry,
                            hosts: tls.hosts.clone(),
                        },
                    });
                }
            }
            RouteObject::Gateway(gateway) => {
                for listener in &gateway.listeners {
                    let terminates = matches!(listener.protocol.as_str(), "HTTPS" | "TLS")
                        && listener.tls_mode != Some(TlsMode::Passthrough);
                    if !terminates {
                        continue;
                    }
                    for reference in &listener.certificate_refs {
                        let is_secret = reference.group.is_empty()
                            && (reference.kind.is_empty() || reference.kind == "Secret");
                        if !is_secret {
                            continue;
                        }
                        out.push(Reference {
                            secret: SecretKey {
                                namespace: reference
                                    .namespace
                                    .clone()
                                    .unwrap_or_else(|| gateway.namespace.clone()),
                                name: reference.name.clone(),
                            },
                            by: Referrer::Gateway {
                                namespace: gateway.namespace.clone(),
                                name: gateway.name.clone(),
                                listener: listener.name.clone(),
                            },
                        });
                    }
                }
            }
            _ => {}
        }
    }
    for profile in &cluster.profiles {
        if let Some(secret) = profile
            .routes
            .as_ref()
            .and_then(|r| r.default_certificate.clone())
        {
            out.push(Reference {
                secret,
                by: Referrer::Profile {
                    name: profile.name.clone(),
                },
            });
        }
    }
    for pod in &cluster.controller_pods {
        for volume in &pod.volumes {
            for source in &volume.sources {
                out.push(Reference {
                    secret: SecretKey {
                        namespace: pod.namespace.clone(),
                        name: source.secret.clone(),
                    },
                    by: Referrer::Pod {
                        namespace: pod.namespace.clone(),
                        name: pod.name.clone(),
                        volume: volume.name.clone(),
                        optional: source.optional,
                    },
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

pub(super) fn check(
    cluster: &Cluster,
    secrets: &BTreeMap<SecretKey, LintSecret>,
    settings: &Settings,
    out: &mut BTreeSet<LintFinding>,
) {
    let all = references(cluster);
    let mut by_secret: BTreeMap<&SecretKey, Vec<&Referrer>> = BTreeMap::new();
    for reference in &all {
        by_secret
            .entry(&reference.secret)
            .or_default()
            .push(&reference.by);
    }
    for (key, referrers) in &by_secret {
        if !cluster.scope.contains(&key.namespace) {
            continue;
        }
        match secrets.get(*key) {
            None => {
                for referrer in referrers {
                    missing(key, referrer, out);
                }
            }
            Some(secret) => present(key, secret, referrers, settings, out),
        }
    }
    for (key, secret) in secrets {
        if secret.secret_type == TLS_SECRET_TYPE
            && cluster.scope.contains(&key.namespace)
            && !by_secret.contains_key(key)
            && !cluster.other_pod_secrets.contains(key)
        {
            let issuer = cluster
                .cert_manager
                .iter()
                .filter_map(|o| match o {
                    crate::certmanager::CertManagerObject::Certificate(c)
                        if c.namespace == key.namespace && c.secret_name == key.name =>
                    {
                        Some(format!(
                            " (Certificate {}/{} keeps it issued)",
                            c.namespace, c.name
                        ))
                    }
                    _ => None,
                })
                .next()
                .unwrap_or_default();
            out.insert(LintFinding::new(
                Check::UnusedTlsSecret,
                "Secret",
                &key.namespace,
                &key.name,
                format!(
                    "no Ingress, Gateway, controller profile or pod in {} uses this TLS Secret{issuer}",
                    cluster.scope.describe()
                ),
            ));
        }
    }
}

fn missing(key: &SecretKey, referrer: &Referrer, out: &mut BTreeSet<LintFinding>) {
    let secret = format!("Secret {}/{}", key.namespace, key.name);
    let (kind, namespace, name, consequence) = match referrer {
        Referrer::Ingress {
            namespace,
            name,
            hosts,
            ..
        } => (
            "Ingress",
            namespace.as_str(),
            name.as_str(),
            format!(
                "the controller serves its default certificate (ingress-nginx: a self-signed fake) for {}",
                if hosts.is_empty() {
                    "these hosts".to_string()
                } else {
                    list(hosts, 5)
                }
            ),
        ),
        Referrer::Gateway {
            namespace, name, ..
        } => (
            "Gateway",
            namespace.as_str(),
            name.as_str(),
            "the listener's certificate reference does not resolve (ResolvedRefs=False): its hosts get no certificate".to_string(),
        ),
        Referrer::Pod {
            optional: true, ..
        } => return,
        Referrer::Pod {
            namespace, name, ..
        } => (
            "Pod",
            namespace.as_str(),
            name.as_str(),
            "kubelet cannot mount the volume: a new pod does not start, a running one keeps the files it has".to_string(),
        ),
        Referrer::Profile { .. } => (
            "Secret",
            key.namespace.as_str(),
            key.name.as_str(),
            "the controller has no default certificate to serve".to_string(),
        ),
    };
    out.insert(LintFinding::new(
        Check::SecretMissing,
        kind,
        namespace,
        name,
        format!(
            "{} names {secret}, which does not exist: {consequence}",
            referrer.describe()
        ),
    ));
}

fn present(
    key: &SecretKey,
    secret: &LintSecret,
    referrers: &[&Referrer],
    settings: &Settings,
    out: &mut BTreeSet<LintFinding>,
) {
    let users: Vec<String> = referrers.iter().map(|r| r.describe()).collect();
    let used_by = format!("used by {}", list(&users, 3));
    let wants_tls = referrers.iter().any(|r| r.wants_tls_keys());
    let view = &secret.view;
    let finding = |check: Check, message: String| {
        LintFinding::new(check, "Secret", &key.namespace, &key.name, message)
    };
    if wants_tls {
        if secret.secret_type != TLS_SECRET_TYPE {
            out.insert(finding(
                Check::SecretWrongType,
                format!(
                    "type is {:?}, not {TLS_SECRET_TYPE} ({used_by})",
                    secret.secret_type
                ),
            ));
        }
        let absent: Vec<String> = ["tls.crt", "tls.key"]
            .into_iter()
            .filter(|k| !view.keys.contains_key(*k))
            .map(str::to_string)
            .collect();
        if !absent.is_empty() {
            let has: Vec<String> = view.keys.keys().cloned().collect();
            out.insert(finding(
                Check::SecretMissingKey,
                format!(
                    "no {} key (it has: {}); {used_by}",
                    absent.join(" and no "),
                    if has.is_empty() {
                        "no keys".to_string()
                    } else {
                        list(&has, 6)
                    }
                ),
            ));
        }
    }
    let judged = judge(view.keys.keys(), &view.certificates, wants_tls, settings);
    if !judged.problems.is_empty() {
        out.insert(finding(
            Check::InvalidCertificateMaterial,
            format!(
                "{}: a server refuses it or serves it broken; {used_by}",
                judged.problems.join("; ")
            ),
        ));
    }
    if !judged.expiring.is_empty() {
        out.insert(finding(
            Check::CertificateExpiringSoon,
            format!("{}; {used_by}", judged.expiring.join("; ")),
        ));
    }
}

/// What is wrong with a Secret's certificate material.
#[derive(Debug, Default)]
pub(super) struct Judged {
    pub(super) problems: Vec<String>,
    pub(super) expiring: Vec<String>,
}

/// Judges the material of one Secret: keys (names, for digests only) and the summaries of those
/// that parse. `tls`: it must hold a TLS pair in `tls.crt`/`tls.key`.
pub(super) fn judge<'a>(
    keys: impl IntoIterator<Item = &'a String>,
    certificates: &BTreeMap<String, PemContents>,
    tls: bool,
    settings: &Settings,
) -> Judged {
    let keys: BTreeSet<&str> = keys.into_iter().map(String::as_str).collect();
    let mut judged = Judged::default();
    if tls {
        for key in ["tls.crt", "tls.key"] {
            if keys.contains(key) && !certificates.contains_key(key) {
                judged.problems.push(format!(
                    "{key} is not PEM a server can load (unparsable, an unsupported key type, or blocks other than certificates and one private key)"
                ));
            }
        }
    }
    let swapped = match material_of_secrets(certificates) {
        Material::Invalid { reasons } => {
            judged.problems.extend(reasons);
            true
        }
        Material::Valid { .. } | Material::NoServedCertificate => false,
    };
    let files: Vec<(&str, &PemContents)> =
        certificates.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let pairings = cert::pair_keys(&files);
    for pairing in pairings.iter().filter(|p| !p.matches) {
        judged.problems.push(format!(
            "the private key in {} does not match the certificate in {}",
            pairing.key_file, pairing.cert_file
        ));
    }
    if tls
        && !swapped
        && certificates
            .get("tls.crt")
            .is_some_and(|pem| pem.leaf().is_none())
    {
        judged
            .problems
            .push("tls.crt holds no certificate".to_string());
    }
    // The leaves a server presents: tls.crt's and every file a key pairs with.
    let mut served: BTreeSet<&str> = pairings.iter().map(|p| p.cert_file.as_str()).collect();
    if tls && certificates.contains_key("tls.crt") {
        served.insert("tls.crt");
    }
    let now = settings.now;
    for file in served {
        let Some(leaf) = certificates.get(file).and_then(PemContents::leaf) else {
            continue;
        };
        let names = if leaf.dns_names.is_empty() {
            leaf.subject.clone()
        } else {
            list(&leaf.dns_names, 3)
        };
        match leaf.validity_at(now) {
            Validity::Expired => judged.problems.push(format!(
                "the certificate in {file} ({names}) expired at {}",
                rfc3339(leaf.not_after)
            )),
            Validity::NotYetValid => judged.problems.push(format!(
                "the certificate in {file} ({names}) is not valid before {}",
                rfc3339(leaf.not_before)
            )),
            Validity::Valid => {
                let left = leaf.not_after - now;
                if !settings.expiry_warn_before.is_zero() && left <= settings.expiry_warn_before {
                    judged.expiring.push(format!(
                        "the certificate in {file} ({names}) expires at {} (in {} days)",
                        rfc3339(leaf.not_after),
                        leaf.days_to_expiry(now)
                    ));
                }
            }
        }
    }
    judged
}
