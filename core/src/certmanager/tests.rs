#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use super::findings::{
    FindingReason, Grace, HostUse, LeafFacts, SecretFacts, SecretUse, Server, findings,
};
use super::reporter::{PeerPod, reporter};
use super::*;
use crate::routes::{RouteKind, RouteOrigin};

const NOW: i64 = 1_800_000_000;
const GRACE: Grace = Grace { seconds: 600 };

fn key(name: &str) -> SecretKey {
    SecretKey {
        namespace: "shop".into(),
        name: name.into(),
    }
}

fn ready(status: ConditionStatus, since: Option<i64>) -> Readiness {
    Readiness {
        status,
        reason: (status != ConditionStatus::True).then(|| "Failed".to_string()),
        message: (status != ConditionStatus::True).then(|| "the order failed".to_string()),
        since,
    }
}

fn certificate(name: &str, secret: &str, dns: &[&str]) -> CertificateObject {
    CertificateObject {
        namespace: "shop".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        secret_name: secret.into(),
        dns_names: dns.iter().map(|d| d.to_string()).collect(),
        issuer: Some(IssuerRef::ClusterIssuer("letsencrypt".into())),
        ready: ready(ConditionStatus::True, Some(NOW - 86_400)),
        renewal_time: Some(NOW + 86_400),
        revision: Some(1),
    }
}

fn cluster_issuer(status: ConditionStatus) -> CertManagerObject {
    CertManagerObject::Issuer(IssuerObject {
        cluster: true,
        namespace: String::new(),
        name: "letsencrypt".into(),
        ready: ready(status, Some(NOW - 86_400)),
    })
}

fn facts(dns: &[&str], not_before: i64, annotation: Option<&str>) -> SecretFacts {
    SecretFacts {
        certificate_name: annotation.map(str::to_string),
        leaf: Some(LeafFacts {
            dns_names: dns.iter().map(|d| d.to_string()).collect(),
            not_before,
        }),
    }
}

fn mounted(secret: &str) -> SecretUse {
    SecretUse {
        controller: "edge".into(),
        secret: key(secret),
        mounted: true,
        host: None,
    }
}

fn ingress_host(host: &str, secret: &str, issuer: Option<IssuerRef>) -> SecretUse {
    SecretUse {
        controller: "ingress-nginx".into(),
        secret: key(secret),
        mounted: false,
        host: Some(HostUse {
            origin: RouteOrigin {
                kind: RouteKind::Ingress,
                namespace: "shop".into(),
                name: "web".into(),
                uid: "uid-web".into(),
                listener: None,
            },
            host: host.into(),
            issuer,
        }),
    }
}

fn index(objects: Vec<CertManagerObject>) -> CertManagerIndex {
    let mut index = CertManagerIndex::default();
    for object in objects {
        index.apply(object);
    }
    index
}

fn reasons(found: &findings::Findings) -> Vec<(FindingReason, String, String)> {
    found
        .found
        .keys()
        .map(|k| (k.reason, format!("{}/{}", k.kind, k.name), k.about.clone()))
        .collect()
}

fn one_secret(name: &str, f: SecretFacts) -> BTreeMap<SecretKey, SecretFacts> {
    BTreeMap::from([(key(name), f)])
}

#[test]
fn a_healthy_certificate_with_a_ready_issuer_has_no_finding_and_rechecks_at_its_renewal() {
    let index = index(vec![
        CertManagerObject::Certificate(certificate("web", "web-tls", &["shop.example"])),
        cluster_issuer(ConditionStatus::True),
    ]);
    let found = findings(
        &[
            mounted("web-tls"),
            ingress_host("shop.example", "web-tls", None),
        ],
        &one_secret("web-tls", facts(&["shop.example"], NOW - 1000, Some("web"))),
        &index,
        NOW,
        GRACE,
    );
    assert_eq!(reasons(&found), vec![]);
    assert_eq!(found.recheck_at, Some(NOW + 86_400 + 600));
}

#[test]
fn a_certificate_not_ready_past_the_grace_period_is_a_finding_with_its_reason() {
    let mut cert = certificate("web", "web-tls", &["shop.example"]);
    cert.ready = ready(ConditionStatus::False, Some(NOW - 300));
    let secrets = one_secret("web-tls", facts(&["shop.example"], NOW - 1000, None));
    let index_now = index(vec![
        CertManagerObject::Certificate(cert.clone()),
        cluster_issuer(ConditionStatus::True),
    ]);
    let early = findings(&[mounted("web-tls")], &secrets, &index_now, NOW, GRACE);
    assert_eq!(reasons(&early), vec![], "within the grace period");
    assert_eq!(early.recheck_at, Some(NOW + 300));
    let late = findings(
        &[mounted("web-tls")],
        &secrets,
        &index_now,
        NOW + 300,
        GRACE,
    );
    assert_eq!(
        reasons(&late),
        vec![(
            FindingReason::CertificateNotReady,
            "Certificate/web".into(),
            String::new()
        )]
    );
    let found = late.found.values().next().unwrap();
    assert!(
        found
            .finding
            .message
            .contains("Ready=False (Failed: the order failed)"),
        "{}",
        found.finding.message
    );
    assert_eq!(found.finding.regarding.api_version, "cert-manager.io/v1");
    assert_eq!(
        found.served_by,
        BTreeSet::from([Server {
            controller: "edge".into(),
            secret: Some(key("web-tls"))
        }])
    );
}

#[test]
fn renewal_is_overdue_only_when_the_secret_still_holds_a_leaf_issued_before_the_renewal_time() {
    let mut cert = certificate("web", "web-tls", &["shop.example"]);
    cert.renewal_time = Some(NOW - 3600);
    let index = index(vec![
        CertManagerObject::Certificate(cert),
        cluster_issuer(ConditionStatus::True),
    ]);
    let old_leaf = one_secret("web-tls", facts(&["shop.example"], NOW - 60 * 86_400, None));
    let overdue = findings(&[mounted("web-tls")], &old_leaf, &index, NOW, GRACE);
    assert_eq!(
        reasons(&overdue),
        vec![(
            FindingReason::CertificateRenewalOverdue,
            "Certificate/web".into(),
            String::new()
        )]
    );
    let renewed = one_secret("web-tls", facts(&["shop.example"], NOW - 1800, None));
    assert_eq!(
        reasons(&findings(
            &[mounted("web-tls")],
            &renewed,
            &index,
            NOW,
            GRACE
        )),
        vec![]
    );
    // Within the grace period after the renewal time: not yet, but rechecked when it ends.
    let soon = findings(
        &[mounted("web-tls")],
        &old_leaf,
        &index,
        NOW - 3600 + 10,
        GRACE,
    );
    assert_eq!(reasons(&soon), vec![]);
    assert_eq!(soon.recheck_at, Some(NOW - 3600 + 600));
}

#[test]
fn a_missing_or_unready_issuer_is_reported_for_the_certificate_and_for_the_ingress_annotation() {
    let cert = certificate("web", "web-tls", &["shop.example"]);
    let secrets = one_secret("web-tls", facts(&["shop.example"], NOW - 1000, None));
    let uses = [ingress_host(
        "shop.example",
        "web-tls",
        Some(IssuerRef::Issuer("shop-ca".into())),
    )];
    let missing = findings(
        &uses,
        &secrets,
        &index(vec![CertManagerObject::Certificate(cert.clone())]),
        NOW,
        GRACE,
    );
    assert_eq!(
        reasons(&missing),
        vec![
            (
                FindingReason::IssuerNotReady,
                "Certificate/web".into(),
                "ClusterIssuer letsencrypt".into()
            ),
            (
                FindingReason::IssuerNotReady,
                "Ingress/web".into(),
                "Issuer shop/shop-ca".into()
            ),
        ]
    );
    assert!(
        missing
            .found
            .values()
            .all(|f| f.finding.message.contains("does not exist"))
    );
    let unready = findings(
        &uses,
        &secrets,
        &index(vec![
            CertManagerObject::Certificate(cert),
            cluster_issuer(ConditionStatus::False),
            CertManagerObject::Issuer(IssuerObject {
                cluster: false,
                namespace: "shop".into(),
                name: "shop-ca".into(),
                ready: ready(ConditionStatus::True, None),
            }),
        ]),
        NOW,
        GRACE,
    );
    assert_eq!(
        reasons(&unready),
        vec![(
            FindingReason::IssuerNotReady,
            "Certificate/web".into(),
            "ClusterIssuer letsencrypt".into()
        )]
    );
}

#[test]
fn a_host_is_covered_by_the_certificate_dns_names_or_the_leaf_sans_with_one_label_wildcards() {
    let index = index(vec![
        CertManagerObject::Certificate(certificate("web", "web-tls", &["*.shop.example"])),
        cluster_issuer(ConditionStatus::True),
    ]);
    let secrets = one_secret("web-tls", facts(&["legacy.example"], NOW - 1000, None));
    let uses = [
        ingress_host("www.shop.example", "web-tls", None),
        ingress_host("legacy.example", "web-tls", None),
        ingress_host("a.b.shop.example", "web-tls", None),
        ingress_host("other.example", "web-tls", None),
    ];
    let found = findings(&uses, &secrets, &index, NOW, GRACE);
    assert_eq!(
        reasons(&found),
        vec![
            (
                FindingReason::TlsHostNotCovered,
                "Ingress/web".into(),
                "a.b.shop.example".into()
            ),
            (
                FindingReason::TlsHostNotCovered,
                "Ingress/web".into(),
                "other.example".into()
            ),
        ]
    );
    let message = &found.found.values().next().unwrap().finding.message;
    assert!(
        message.contains("[*.shop.example]") && message.contains("[legacy.example]"),
        "{message}"
    );
    assert_eq!(
        found.found.values().next().unwrap().served_by,
        BTreeSet::from([Server {
            controller: "ingress-nginx".into(),
            secret: None
        }]),
        "a host finding is served by every pod of the profile"
    );
}

#[test]
fn the_certificate_is_found_by_the_secret_annotation_first_then_by_spec_secret_name() {
    let index = index(vec![
        CertManagerObject::Certificate(certificate("a-first", "web-tls", &["a.example"])),
        CertManagerObject::Certificate(certificate("z-annotated", "web-tls", &["z.example"])),
    ]);
    assert_eq!(
        index
            .certificate_for(&key("web-tls"), Some("z-annotated"))
            .unwrap()
            .name,
        "z-annotated"
    );
    assert_eq!(
        index.certificate_for(&key("web-tls"), None).unwrap().name,
        "a-first"
    );
    // An annotation naming a Certificate that issues elsewhere is not trusted.
    assert_eq!(
        index
            .certificate_for(&key("web-tls"), Some("missing"))
            .unwrap()
            .name,
        "a-first"
    );
    assert!(index.certificate_for(&key("other-tls"), None).is_none());
}

#[test]
fn a_secret_without_a_certificate_has_no_cert_manager_finding() {
    let found = findings(
        &[
            mounted("hand-made"),
            ingress_host("x.example", "hand-made", None),
        ],
        &one_secret("hand-made", facts(&["y.example"], NOW, None)),
        &index(vec![cluster_issuer(ConditionStatus::True)]),
        NOW,
        GRACE,
    );
    assert_eq!(
        reasons(&found),
        vec![],
        "coverage is cert-manager's only when it issues"
    );
}

fn peer(name: &str, node: &str, terminating: bool, controller: &str, secrets: &[&str]) -> PeerPod {
    PeerPod {
        uid: format!("uid-{name}"),
        namespace: "ingress".into(),
        name: name.into(),
        controller: controller.into(),
        node: Some(node.into()),
        terminating,
        secrets: secrets.iter().map(|s| key(s)).collect(),
    }
}

#[test]
fn the_reporter_is_the_node_of_the_first_pod_that_serves_the_finding() {
    // edge-a is being deleted; edge-0 serves another Secret.
    let peers = [
        peer("edge-a", "node-3", true, "edge", &["web-tls"]),
        peer("edge-b", "node-2", false, "edge", &["web-tls"]),
        peer("edge-c", "node-1", false, "edge", &["web-tls"]),
        peer("edge-0", "node-9", false, "edge", &["other-tls"]),
        peer("api-0", "node-8", false, "ingress-nginx", &[]),
    ];
    let mounted = BTreeSet::from([Server {
        controller: "edge".into(),
        secret: Some(key("web-tls")),
    }]);
    assert_eq!(reporter(&peers, &mounted), Some("node-2"));
    let routed = BTreeSet::from([Server {
        controller: "ingress-nginx".into(),
        secret: None,
    }]);
    assert_eq!(reporter(&peers, &routed), Some("node-8"));
    // A pod without a node is no candidate.
    let mut unscheduled = peers.to_vec();
    unscheduled[1].node = None;
    assert_eq!(reporter(&unscheduled, &mounted), Some("node-1"));
    // Not listed yet: nobody.
    assert_eq!(reporter(&[], &mounted), None);
    // The answer does not depend on the order the pods were listed in.
    let mut reversed = peers.to_vec();
    reversed.reverse();
    assert_eq!(reporter(&reversed, &mounted), Some("node-2"));
}
