#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use time::OffsetDateTime;

use super::*;
use crate::certmanager::findings::{FindingReason, Grace};
use crate::certmanager::{
    CertManagerObject, CertificateObject, ConditionStatus, IssuerObject, IssuerRef, Readiness,
};
use crate::pod::{ContainerInfo, ControllerPod, SecretSource, SecretVolume, VolumeMountInfo};
use crate::routes::{
    CertificateRef, GatewayClassView, GatewayView, IngressClassView, IngressTls, IngressView,
    ListenerView, ReferenceGrantView, RouteMatch, RouteObject, TlsMode,
};
use crate::secret::{SecretMeta, SecretView};
use crate::volume::VolumeKind;

const DAY: i64 = 86_400;

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap()
}

fn settings() -> Settings {
    Settings {
        now: now(),
        grace: Grace { seconds: 600 },
        expiry_warn_before: Duration::from_secs(21 * DAY as u64),
    }
}

/// A certificate for `names` valid from `from` to `until` days around now, and its key (PEM).
fn pair(names: &[&str], from: i64, until: i64) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_before = now() + time::Duration::days(from);
    params.not_after = now() + time::Duration::days(until);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn secret_with(
    namespace: &str,
    name: &str,
    secret_type: &str,
    data: &[(&str, &[u8])],
) -> (SecretKey, LintSecret) {
    let meta = SecretMeta {
        namespace: namespace.into(),
        name: name.into(),
        ..SecretMeta::default()
    };
    let view = SecretView::from_values(meta, data.iter().copied(), []);
    (
        SecretKey {
            namespace: namespace.into(),
            name: name.into(),
        },
        LintSecret {
            view,
            secret_type: secret_type.into(),
        },
    )
}

/// A valid `kubernetes.io/tls` Secret for `names`.
fn tls(namespace: &str, name: &str, names: &[&str]) -> (SecretKey, LintSecret) {
    let (crt, key) = pair(names, -30, 60);
    secret_with(
        namespace,
        name,
        TLS_SECRET_TYPE,
        &[("tls.crt", crt.as_bytes()), ("tls.key", key.as_bytes())],
    )
}

fn ingress(
    namespace: &str,
    name: &str,
    class: &str,
    tls: &[(&[&str], Option<&str>)],
) -> RouteObject {
    RouteObject::Ingress(IngressView {
        namespace: namespace.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        class_name: Some(class.into()),
        tls: tls
            .iter()
            .map(|(hosts, secret)| IngressTls {
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                secret_name: secret.map(str::to_string),
            })
            .collect(),
        ..IngressView::default()
    })
}

fn nginx_class() -> RouteObject {
    RouteObject::IngressClass(IngressClassView {
        name: "nginx".into(),
        controller: "k8s.io/ingress-nginx".into(),
        is_default: false,
    })
}

fn ingress_nginx() -> Profile {
    Profile {
        name: "ingress-nginx".into(),
        routes: Some(RouteMatch {
            ingress_controllers: vec!["k8s.io/ingress-nginx".into()],
            ingress_class_annotations: vec!["nginx".into()],
            ..RouteMatch::default()
        }),
    }
}

fn cluster(routes: Vec<RouteObject>) -> Cluster {
    Cluster {
        scope: Scope::All,
        profiles: vec![ingress_nginx()],
        controller_pods: Vec::new(),
        other_pod_secrets: BTreeSet::new(),
        routes,
        cert_manager: Vec::new(),
    }
}

fn run(cluster: &Cluster, secrets: &[(SecretKey, LintSecret)]) -> Vec<LintFinding> {
    let secrets: BTreeMap<SecretKey, LintSecret> = secrets.iter().cloned().collect();
    lint(cluster, &secrets, &settings())
}

/// (check, object) of every finding.
fn found(findings: &[LintFinding]) -> BTreeSet<(&'static str, String)> {
    findings
        .iter()
        .map(|f| (f.check.as_str(), f.object()))
        .collect()
}

fn one(findings: &[LintFinding], check: Check) -> &LintFinding {
    let matching: Vec<&LintFinding> = findings.iter().filter(|f| f.check == check).collect();
    assert_eq!(matching.len(), 1, "{check:?} in {findings:#?}");
    matching[0]
}

fn controller_pod(
    name: &str,
    secret: &str,
    sub_path: Option<&str>,
    optional: bool,
) -> ControllerPod {
    ControllerPod {
        uid: format!("uid-{name}"),
        namespace: "ingress".into(),
        name: name.into(),
        controller: "edge".into(),
        resync_annotation: None,
        restart_annotation: None,
        config_hash: None,
        host_network: false,
        pod_ips: Vec::new(),
        terminating: false,
        containers: vec![ContainerInfo {
            name: "nginx".into(),
            container_id: None,
            mounts: vec![VolumeMountInfo {
                volume: "tls".into(),
                mount_path: "/etc/tls/tls.crt".into(),
                sub_path: sub_path.map(str::to_string),
            }],
        }],
        volumes: vec![SecretVolume {
            name: "tls".into(),
            kind: VolumeKind::Secret,
            sources: vec![SecretSource {
                secret: secret.into(),
                items: None,
                optional,
            }],
            has_other_sources: false,
        }],
    }
}

#[test]
fn a_clean_cluster_has_no_finding() {
    let c = cluster(vec![
        nginx_class(),
        ingress(
            "shop",
            "web",
            "nginx",
            &[(&["shop.example"], Some("web-tls"))],
        ),
    ]);
    let findings = run(&c, &[tls("shop", "web-tls", &["shop.example"])]);
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn a_tls_entry_without_secret_name_is_a_warning_on_the_ingress() {
    let c = cluster(vec![
        nginx_class(),
        ingress(
            "shop",
            "web",
            "nginx",
            &[(&["a.example", "b.example"], None), (&[], None)],
        ),
    ]);
    let findings = run(&c, &[]);
    let f = one(&findings, Check::TlsHostWithoutSecret);
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.object(), "Ingress/shop/web");
    assert!(f.message.contains("spec.tls[0]"), "{}", f.message);
    assert!(f.message.contains("a.example, b.example"), "{}", f.message);
    assert_eq!(
        findings.len(),
        1,
        "a TLS entry without hosts is not: {findings:#?}"
    );
}

#[test]
fn a_missing_secret_is_an_error_on_whoever_names_it_but_not_for_an_optional_mount() {
    let mut c = cluster(vec![
        nginx_class(),
        ingress("shop", "web", "nginx", &[(&["shop.example"], Some("gone"))]),
        RouteObject::Gateway(GatewayView {
            namespace: "shop".into(),
            name: "edge".into(),
            class_name: "eg".into(),
            listeners: vec![ListenerView {
                name: "https".into(),
                hostname: Some("gw.example".into()),
                port: 443,
                protocol: "HTTPS".into(),
                tls_mode: Some(TlsMode::Terminate),
                certificate_refs: vec![CertificateRef {
                    kind: "Secret".into(),
                    name: "gw-gone".into(),
                    ..CertificateRef::default()
                }],
            }],
            ..GatewayView::default()
        }),
    ]);
    c.controller_pods = vec![
        controller_pod("edge-0", "mounted-gone", None, false),
        controller_pod("edge-1", "optional-gone", None, true),
    ];
    let findings = run(&c, &[]);
    assert_eq!(
        found(&findings),
        BTreeSet::from([
            ("SecretMissing", "Ingress/shop/web".to_string()),
            ("SecretMissing", "Gateway/shop/edge".to_string()),
            ("SecretMissing", "Pod/ingress/edge-0".to_string()),
        ]),
        "{findings:#?}"
    );
    assert!(findings.iter().all(|f| f.severity == Severity::Error));
    let on_ingress = findings.iter().find(|f| f.kind == "Ingress").unwrap();
    assert!(
        on_ingress
            .message
            .contains("names Secret shop/gone, which does not exist"),
        "{}",
        on_ingress.message
    );
    assert!(on_ingress.message.contains("shop.example"));
    assert_eq!(
        c.references(),
        ["gone", "gw-gone", "optional-gone", "mounted-gone"]
            .into_iter()
            .map(|n| SecretKey {
                namespace: if n.starts_with('g') {
                    "shop"
                } else {
                    "ingress"
                }
                .into(),
                name: n.into(),
            })
            .collect(),
        "what the agent fetches"
    );
}

#[test]
fn a_secret_of_another_type_or_without_its_keys_is_reported_on_the_secret() {
    let c = cluster(vec![
        nginx_class(),
        ingress(
            "shop",
            "web",
            "nginx",
            &[
                (&["a.example"], Some("opaque")),
                (&["b.example"], Some("half")),
            ],
        ),
    ]);
    let (crt, key) = pair(&["a.example"], -1, 60);
    let (crt_b, _) = pair(&["b.example"], -1, 60);
    let findings = run(
        &c,
        &[
            secret_with(
                "shop",
                "opaque",
                "Opaque",
                &[("tls.crt", crt.as_bytes()), ("tls.key", key.as_bytes())],
            ),
            secret_with(
                "shop",
                "half",
                TLS_SECRET_TYPE,
                &[("tls.crt", crt_b.as_bytes())],
            ),
        ],
    );
    assert_eq!(
        found(&findings),
        BTreeSet::from([
            ("SecretWrongType", "Secret/shop/opaque".to_string()),
            ("SecretMissingKey", "Secret/shop/half".to_string()),
        ]),
        "{findings:#?}"
    );
    let wrong = one(&findings, Check::SecretWrongType);
    assert_eq!(wrong.severity, Severity::Warning);
    assert!(wrong.message.contains("\"Opaque\""), "{}", wrong.message);
    assert!(
        wrong
            .message
            .contains("used by Ingress shop/web (spec.tls[0])"),
        "{}",
        wrong.message
    );
    let half = one(&findings, Check::SecretMissingKey);
    assert_eq!(half.severity, Severity::Error);
    assert!(
        half.message.starts_with("no tls.key key (it has: tls.crt)"),
        "{}",
        half.message
    );
}

/// A Secret's name, its data, and what the finding must say.
type Case<'a> = (&'a str, Vec<(&'a str, &'a [u8])>, &'a str);

#[test]
fn invalid_material_is_named_key_mismatch_expired_not_yet_valid_unparsable_swapped() {
    let (crt, _) = pair(&["a.example"], -30, 60);
    let (_, other_key) = pair(&["a.example"], -30, 60);
    let (old, old_key) = pair(&["old.example"], -90, -1);
    let (early, early_key) = pair(&["early.example"], 2, 60);
    let (good, good_key) = pair(&["good.example"], -30, 60);
    let cases: [Case<'_>; 5] = [
        (
            "mismatch",
            vec![
                ("tls.crt", crt.as_bytes()),
                ("tls.key", other_key.as_bytes()),
            ],
            "the private key in tls.key does not match the certificate in tls.crt",
        ),
        (
            "expired",
            vec![("tls.crt", old.as_bytes()), ("tls.key", old_key.as_bytes())],
            "the certificate in tls.crt (old.example) expired at",
        ),
        (
            "early",
            vec![
                ("tls.crt", early.as_bytes()),
                ("tls.key", early_key.as_bytes()),
            ],
            "the certificate in tls.crt (early.example) is not valid before",
        ),
        (
            "garbage",
            vec![
                ("tls.crt", b"not a certificate at all"),
                ("tls.key", good_key.as_bytes()),
            ],
            "tls.crt is not PEM a server can load",
        ),
        (
            "swapped",
            vec![
                ("tls.crt", good_key.as_bytes()),
                ("tls.key", good.as_bytes()),
            ],
            "tls.crt: swappedKeyAndCertificate",
        ),
    ];
    for (name, data, wanted) in cases {
        let c = cluster(vec![
            nginx_class(),
            ingress("shop", "web", "nginx", &[(&["a.example"], Some(name))]),
        ]);
        let findings = run(&c, &[secret_with("shop", name, TLS_SECRET_TYPE, &data)]);
        let f = one(&findings, Check::InvalidCertificateMaterial);
        assert_eq!(f.object(), format!("Secret/shop/{name}"));
        assert!(f.message.contains(wanted), "{name}: {}", f.message);
        assert_eq!(findings.len(), 1, "{name}: {findings:#?}");
        for text in [&f.message, &format!("{findings:?}")] {
            for pem in [&good_key, &other_key, &old_key, &early_key] {
                let body: String = pem.lines().nth(1).unwrap().chars().take(40).collect();
                assert!(!text.contains(&body), "{name}: key bytes in {text}");
            }
        }
    }
}

#[test]
fn a_certificate_expiring_within_warn_before_is_a_warning_and_zero_turns_it_off() {
    let (crt, key) = pair(&["soon.example"], -80, 5);
    let secret = secret_with(
        "shop",
        "soon",
        TLS_SECRET_TYPE,
        &[("tls.crt", crt.as_bytes()), ("tls.key", key.as_bytes())],
    );
    let c = cluster(vec![
        nginx_class(),
        ingress("shop", "web", "nginx", &[(&["soon.example"], Some("soon"))]),
    ]);
    let findings = run(&c, std::slice::from_ref(&secret));
    let f = one(&findings, Check::CertificateExpiringSoon);
    assert_eq!(f.severity, Severity::Warning);
    assert!(
        f.message.contains("(in 4 days)") || f.message.contains("(in 5 days)"),
        "{}",
        f.message
    );
    let secrets: BTreeMap<SecretKey, LintSecret> = [secret].into_iter().collect();
    let off = Settings {
        expiry_warn_before: Duration::ZERO,
        ..settings()
    };
    assert!(lint(&c, &secrets, &off).is_empty());
}

#[test]
fn one_host_with_two_secrets_of_one_controller_is_reported_on_both_objects() {
    let c = cluster(vec![
        nginx_class(),
        ingress("shop", "a", "nginx", &[(&["shop.example"], Some("a-tls"))]),
        ingress("shop", "b", "nginx", &[(&["shop.example"], Some("b-tls"))]),
        // The same Secret twice is no conflict.
        ingress("shop", "c", "nginx", &[(&["blog.example"], Some("a-tls"))]),
        ingress("shop", "d", "nginx", &[(&["blog.example"], Some("a-tls"))]),
    ]);
    let secrets = [
        tls("shop", "a-tls", &["shop.example", "blog.example"]),
        tls("shop", "b-tls", &["shop.example"]),
    ];
    let findings = run(&c, &secrets);
    assert_eq!(
        found(&findings),
        BTreeSet::from([
            ("DuplicateTLSHost", "Ingress/shop/a".to_string()),
            ("DuplicateTLSHost", "Ingress/shop/b".to_string()),
        ]),
        "{findings:#?}"
    );
    let on_a = findings.iter().find(|f| f.name == "a").unwrap();
    assert!(
        on_a.message.contains(
            "TLS host shop.example uses Secret shop/a-tls here, but Ingress shop/b serves it with Secret shop/b-tls (controller ingress-nginx)"
        ),
        "{}",
        on_a.message
    );
    assert!(
        on_a.message.contains("controller ingress-nginx"),
        "{}",
        on_a.message
    );

    // Two controllers may serve one host with two Secrets (two load balancers).
    let mut other = c.clone();
    other.routes[2] = ingress(
        "shop",
        "b",
        "haproxy",
        &[(&["shop.example"], Some("b-tls"))],
    );
    let findings = run(&other, &secrets);
    assert!(
        findings.iter().all(|f| f.check != Check::DuplicateTlsHost),
        "{findings:#?}"
    );
}

#[test]
fn objects_no_profile_claims_are_grouped_by_their_class() {
    let mut c = cluster(vec![
        ingress("shop", "a", "custom", &[(&["shop.example"], Some("a-tls"))]),
        ingress("shop", "b", "custom", &[(&["shop.example"], Some("b-tls"))]),
    ]);
    c.profiles.clear();
    let findings = run(
        &c,
        &[
            tls("shop", "a-tls", &["shop.example"]),
            tls("shop", "b-tls", &["shop.example"]),
        ],
    );
    let f = findings
        .iter()
        .find(|f| f.check == Check::DuplicateTlsHost)
        .unwrap();
    assert!(
        f.message.contains("controller ingressClassName custom"),
        "{}",
        f.message
    );
}

#[test]
fn a_certificate_ref_to_another_namespace_needs_a_reference_grant() {
    let gateway = RouteObject::Gateway(GatewayView {
        namespace: "infra".into(),
        name: "edge".into(),
        class_name: "eg".into(),
        listeners: vec![ListenerView {
            name: "https".into(),
            hostname: Some("gw.example".into()),
            port: 443,
            protocol: "HTTPS".into(),
            tls_mode: Some(TlsMode::Terminate),
            certificate_refs: vec![CertificateRef {
                kind: "Secret".into(),
                namespace: Some("certs".into()),
                name: "gw-tls".into(),
                ..CertificateRef::default()
            }],
        }],
        ..GatewayView::default()
    });
    let class = RouteObject::GatewayClass(GatewayClassView {
        name: "eg".into(),
        controller_name: "gateway.envoyproxy.io/gatewayclass-controller".into(),
    });
    let secrets = [tls("certs", "gw-tls", &["gw.example"])];
    let c = cluster(vec![gateway.clone(), class.clone()]);
    let findings = run(&c, &secrets);
    let f = one(&findings, Check::CertificateRefNotPermitted);
    assert_eq!(f.object(), "Gateway/infra/edge");
    assert!(
        f.message
            .contains("listener https refers to Secret certs/gw-tls"),
        "{}",
        f.message
    );
    let grant = RouteObject::ReferenceGrant(ReferenceGrantView {
        namespace: "certs".into(),
        name: "gateways".into(),
        from: vec![crate::routes::GrantFrom {
            group: "gateway.networking.k8s.io".into(),
            kind: "Gateway".into(),
            namespace: "infra".into(),
        }],
        to: vec![crate::routes::GrantTo {
            group: String::new(),
            kind: "Secret".into(),
            name: None,
        }],
    });
    let findings = run(&cluster(vec![gateway, class, grant]), &secrets);
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn a_controller_pod_mounting_a_secret_through_sub_path_is_a_warning() {
    let mut c = cluster(Vec::new());
    c.controller_pods = vec![
        controller_pod("edge-0", "edge-tls", Some("tls.crt"), false),
        controller_pod("edge-1", "edge-tls", None, false),
    ];
    let (key, mut secret) = tls("ingress", "edge-tls", &["edge.example"]);
    secret.secret_type = "Opaque".into();
    let findings = run(&c, &[(key, secret)]);
    let f = one(&findings, Check::SubPathNeverUpdates);
    assert_eq!(f.object(), "Pod/ingress/edge-0");
    assert_eq!(f.severity, Severity::Warning);
    assert!(
        f.message.contains(
            "mounts volume tls (Secret edge-tls) at /etc/tls/tls.crt through subPath tls.crt"
        ),
        "{}",
        f.message
    );
    assert_eq!(
        findings.len(),
        1,
        "a mounted Secret may be Opaque: {findings:#?}"
    );
}

#[test]
fn a_tls_secret_nothing_uses_is_info_and_one_another_pod_mounts_is_not() {
    let mut c = cluster(vec![
        nginx_class(),
        ingress(
            "shop",
            "web",
            "nginx",
            &[(&["shop.example"], Some("web-tls"))],
        ),
    ]);
    c.other_pod_secrets.insert(SecretKey {
        namespace: "shop".into(),
        name: "webhook-tls".into(),
    });
    let (opaque_key, mut opaque) = tls("shop", "opaque", &["x.example"]);
    opaque.secret_type = "Opaque".into();
    let findings = run(
        &c,
        &[
            tls("shop", "web-tls", &["shop.example"]),
            tls("shop", "old-tls", &["old.example"]),
            tls("shop", "webhook-tls", &["webhook.example"]),
            (opaque_key, opaque),
        ],
    );
    let f = one(&findings, Check::UnusedTlsSecret);
    assert_eq!(f.object(), "Secret/shop/old-tls");
    assert_eq!(f.severity, Severity::Info);
    assert_eq!(findings.len(), 1, "{findings:#?}");
}

fn readiness(status: ConditionStatus, since: i64) -> Readiness {
    Readiness {
        status,
        reason: Some("Failed".into()),
        message: Some("the order failed".into()),
        since: Some(now().unix_timestamp() + since),
    }
}

fn certificate(name: &str, secret: &str, ready: Readiness, dns: &[&str]) -> CertManagerObject {
    CertManagerObject::Certificate(CertificateObject {
        namespace: "shop".into(),
        name: name.into(),
        uid: String::new(),
        secret_name: secret.into(),
        dns_names: dns.iter().map(|d| d.to_string()).collect(),
        issuer: Some(IssuerRef::ClusterIssuer("letsencrypt".into())),
        ready,
        renewal_time: None,
        revision: Some(1),
    })
}

#[test]
fn every_cert_manager_finding_is_reported_with_the_grace_period() {
    let mut c = cluster(vec![
        nginx_class(),
        ingress(
            "shop",
            "web",
            "nginx",
            &[(&["shop.example", "other.example"], Some("web-tls"))],
        ),
    ]);
    c.cert_manager = vec![
        certificate(
            "web",
            "web-tls",
            readiness(ConditionStatus::False, -DAY),
            &["shop.example"],
        ),
        // Not used by anything, still judged; not Ready for 5 minutes only: within grace.
        certificate(
            "fresh",
            "fresh-tls",
            readiness(ConditionStatus::False, -300),
            &["fresh.example"],
        ),
        // Not used; names an issuer that does not exist.
        CertManagerObject::Certificate(CertificateObject {
            issuer: Some(IssuerRef::Issuer("nope".into())),
            ..match certificate(
                "lost",
                "lost-tls",
                readiness(ConditionStatus::True, -DAY),
                &["lost.example"],
            ) {
                CertManagerObject::Certificate(c) => c,
                CertManagerObject::Issuer(_) => unreachable!(),
            }
        }),
        CertManagerObject::Issuer(IssuerObject {
            cluster: true,
            namespace: String::new(),
            name: "letsencrypt".into(),
            ready: readiness(ConditionStatus::True, -DAY),
        }),
    ];
    let findings = run(
        &c,
        &[
            tls("shop", "web-tls", &["shop.example"]),
            tls("shop", "fresh-tls", &["fresh.example"]),
            tls("shop", "lost-tls", &["lost.example"]),
        ],
    );
    let cm = |f: &LintFinding| matches!(f.check, Check::CertManager(_));
    let got: BTreeSet<(&str, String)> = findings
        .iter()
        .filter(|f| cm(f))
        .map(|f| (f.check.as_str(), f.object()))
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([
            ("CertificateNotReady", "Certificate/shop/web".to_string()),
            ("IssuerNotReady", "Certificate/shop/lost".to_string()),
            ("TLSHostNotCovered", "Ingress/shop/web".to_string()),
        ]),
        "{findings:#?}"
    );
    assert!(
        findings
            .iter()
            .filter(|f| cm(f))
            .all(|f| f.severity == Severity::Error)
    );
    let not_ready = one(
        &findings,
        Check::CertManager(FindingReason::CertificateNotReady),
    );
    assert!(
        not_ready
            .message
            .contains("Ready=False (Failed: the order failed)"),
        "{}",
        not_ready.message
    );
    // Five minutes later than the grace period.
    let later = Settings {
        now: now() + time::Duration::minutes(6),
        ..settings()
    };
    let secrets: BTreeMap<SecretKey, LintSecret> = [
        tls("shop", "web-tls", &["shop.example"]),
        tls("shop", "fresh-tls", &["fresh.example"]),
    ]
    .into_iter()
    .collect();
    assert!(
        lint(&c, &secrets, &later)
            .iter()
            .any(|f| f.object() == "Certificate/shop/fresh")
    );
}

#[test]
fn a_namespace_scope_judges_only_its_own_secrets() {
    let mut c = cluster(vec![
        nginx_class(),
        ingress(
            "shop",
            "web",
            "nginx",
            &[(&["shop.example"], Some("web-tls"))],
        ),
        RouteObject::Gateway(GatewayView {
            namespace: "shop".into(),
            name: "edge".into(),
            class_name: "eg".into(),
            listeners: vec![ListenerView {
                name: "https".into(),
                hostname: Some("gw.example".into()),
                port: 443,
                protocol: "HTTPS".into(),
                tls_mode: Some(TlsMode::Terminate),
                certificate_refs: vec![CertificateRef {
                    kind: "Secret".into(),
                    namespace: Some("certs".into()),
                    name: "elsewhere".into(),
                    ..CertificateRef::default()
                }],
            }],
            ..GatewayView::default()
        }),
    ]);
    c.scope = Scope::Namespace("shop".into());
    let findings = run(&c, &[tls("shop", "web-tls", &["shop.example"])]);
    assert!(
        findings.is_empty(),
        "certs/elsewhere was not listed: {findings:#?}"
    );
    assert_eq!(
        c.references(),
        BTreeSet::from([SecretKey {
            namespace: "shop".into(),
            name: "web-tls".into()
        }])
    );
}

fn finding(severity: Severity, kind: &'static str, name: &str, message: &str) -> LintFinding {
    let check = match severity {
        Severity::Error => Check::SecretMissing,
        Severity::Warning => Check::TlsHostWithoutSecret,
        Severity::Info => Check::UnusedTlsSecret,
    };
    LintFinding {
        severity,
        check,
        kind,
        namespace: "shop".into(),
        name: name.into(),
        message: message.into(),
    }
}

#[test]
fn the_report_sorts_by_severity_then_object_and_fails_on_the_chosen_severity() {
    let findings = vec![
        finding(Severity::Info, "Secret", "old", "unused"),
        finding(Severity::Warning, "Ingress", "b", "no secret"),
        finding(Severity::Error, "Ingress", "z", "gone\u{1b}[2J"),
        finding(Severity::Error, "Ingress", "a", "gone"),
    ];
    let report = Report::new(
        Scope::Namespace("shop".into()),
        findings.clone(),
        Checked {
            ingresses: 3,
            tls_secrets: 1,
            ..Checked::default()
        },
        vec!["tlsroutes.gateway.networking.k8s.io".into()],
        Severity::Warning,
    );
    let order: Vec<String> = report.findings.iter().map(LintFinding::object).collect();
    assert_eq!(
        order,
        [
            "Ingress/shop/a",
            "Ingress/shop/z",
            "Ingress/shop/b",
            "Secret/shop/old"
        ]
    );
    assert_eq!(report.exit_code(), 1);
    let text = report.to_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "SEVERITY  KIND/NAMESPACE/NAME  CHECK                 MESSAGE"
    );
    assert_eq!(
        lines[1],
        "error     Ingress/shop/a       SecretMissing         gone"
    );
    assert!(lines[2].ends_with("gone\\u{1b}[2J"), "escaped: {text}");
    assert!(!text.contains('\u{1b}'));
    assert!(
        text.contains("What to do:\n  SecretMissing: create the Secret"),
        "{text}"
    );
    assert_eq!(
        lines.last().copied(),
        Some(
            "4 findings in namespace shop (2 errors, 1 warning, 1 info): fails (--fail-on warning); checked 3 Ingresses, 0 Gateways, 1 TLS Secret, 0 controller pods, 0 Certificates; not served here: tlsroutes.gateway.networking.k8s.io"
        )
    );

    let only_info = Report::new(
        Scope::All,
        vec![finding(Severity::Info, "Secret", "old", "unused")],
        Checked::default(),
        Vec::new(),
        Severity::Warning,
    );
    assert_eq!(only_info.exit_code(), 0, "info does not fail by default");
    assert!(
        only_info
            .summary_line()
            .contains(": passes (--fail-on warning)")
    );
    let strict = Report {
        fail_on: Severity::Info,
        ..only_info
    };
    assert_eq!(strict.exit_code(), 1);
    let lenient = Report::new(
        Scope::All,
        vec![finding(Severity::Warning, "Ingress", "b", "no secret")],
        Checked::default(),
        Vec::new(),
        Severity::Error,
    );
    assert_eq!(lenient.exit_code(), 0);

    let clean = Report::new(
        Scope::All,
        Vec::new(),
        Checked::default(),
        Vec::new(),
        Severity::Warning,
    );
    assert_eq!(clean.exit_code(), 0);
    assert_eq!(
        clean.to_text(),
        "no findings in all namespaces (checked 0 Ingresses, 0 Gateways, 0 TLS Secrets, 0 controller pods, 0 Certificates)\n"
    );
}

#[test]
fn every_check_has_a_distinct_name_a_hint_and_a_severity() {
    let names: BTreeSet<&str> = Check::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(names.len(), Check::ALL.len());
    for check in Check::ALL {
        assert!(!check.hint().is_empty());
        let _ = check.severity();
    }
    for reason in FindingReason::ALL {
        assert!(Check::ALL.contains(&Check::CertManager(reason)));
    }
    assert_eq!(Severity::parse("warning"), Some(Severity::Warning));
    assert_eq!(Severity::parse("bad"), None);
}
