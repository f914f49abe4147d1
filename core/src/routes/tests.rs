//! Tests of [`super`]: plain objects in, hosts out.

#![allow(clippy::unwrap_used)]

use super::*;

fn key(namespace: &str, name: &str) -> SecretKey {
    SecretKey {
        namespace: namespace.into(),
        name: name.into(),
    }
}

fn nginx() -> RouteMatch {
    RouteMatch {
        ingress_controllers: vec!["k8s.io/ingress-nginx".into()],
        ingress_class_annotations: vec!["nginx".into()],
        ..RouteMatch::default()
    }
}

fn envoy() -> RouteMatch {
    RouteMatch {
        gateway_controllers: vec!["gateway.envoyproxy.io/gatewayclass-controller".into()],
        ..RouteMatch::default()
    }
}

fn class(name: &str, controller: &str, is_default: bool) -> RouteObject {
    RouteObject::IngressClass(IngressClassView {
        name: name.into(),
        controller: controller.into(),
        is_default,
    })
}

fn ingress(name: &str, class_name: Option<&str>, tls: &[(&[&str], Option<&str>)]) -> IngressView {
    IngressView {
        namespace: "shop".into(),
        name: name.into(),
        uid: format!("{name}-uid"),
        class_name: class_name.map(Into::into),
        class_annotation: None,
        tls: tls
            .iter()
            .map(|(hosts, secret)| IngressTls {
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                secret_name: secret.map(Into::into),
            })
            .collect(),
        rule_hosts: Vec::new(),
        cert_manager_issuer: None,
    }
}

fn hosts(out: &ControllerHosts) -> Vec<(String, String)> {
    out.hosts
        .iter()
        .map(|h| {
            (
                h.host.clone(),
                format!("{}/{}", h.secret.namespace, h.secret.name),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(h, s)| (h.to_string(), s.to_string()))
        .collect()
}

#[test]
fn an_ingress_is_the_controllers_through_its_class_the_legacy_annotation_or_the_default_class() {
    let mut index = RouteIndex::default();
    index.apply(class("nginx", "k8s.io/ingress-nginx", false));
    index.apply(class("other", "example.com/other", true));
    index.apply(RouteObject::Ingress(ingress(
        "by-class",
        Some("nginx"),
        &[(&["a.example", "b.example"], Some("ab-tls"))],
    )));
    index.apply(RouteObject::Ingress(ingress(
        "other-class",
        Some("other"),
        &[(&["x.example"], Some("x-tls"))],
    )));
    let mut legacy = ingress("legacy", None, &[(&["c.example"], Some("c-tls"))]);
    legacy.class_annotation = Some("nginx".into());
    index.apply(RouteObject::Ingress(legacy));
    // No class at all: the default IngressClass is not ingress-nginx's.
    index.apply(RouteObject::Ingress(ingress(
        "classless",
        None,
        &[(&["d.example"], Some("d-tls"))],
    )));
    let out = index.hosts_for(&nginx());
    assert_eq!(
        hosts(&out),
        pairs(&[
            ("a.example", "shop/ab-tls"),
            ("b.example", "shop/ab-tls"),
            ("c.example", "shop/c-tls"),
        ])
    );
    assert_eq!(out.hosts[0].origin.describe(), "Ingress shop/by-class");
    // Once ingress-nginx's class is the default, the classless Ingress is its too.
    index.apply(class("other", "example.com/other", false));
    index.apply(class("nginx", "k8s.io/ingress-nginx", true));
    assert!(hosts(&index.hosts_for(&nginx())).contains(&("d.example".into(), "shop/d-tls".into())));
}

#[test]
fn wildcard_tls_hosts_are_probed_through_the_rule_hosts_they_cover_and_secretless_ones_get_the_default()
 {
    let mut index = RouteIndex::default();
    index.apply(class("nginx", "k8s.io/ingress-nginx", false));
    let mut wild = ingress(
        "wild",
        Some("nginx"),
        &[
            (&["*.shop.example"], Some("wild-tls")),
            (&["plain.example"], None),
        ],
    );
    wild.rule_hosts = vec![
        "a.shop.example".into(),
        "deep.a.shop.example".into(),
        "other.example".into(),
    ];
    index.apply(RouteObject::Ingress(wild));
    assert_eq!(
        hosts(&index.hosts_for(&nginx())),
        pairs(&[("a.shop.example", "shop/wild-tls")]),
        "one label per wildcard, and no default certificate to expect"
    );
    let with_default = RouteMatch {
        default_certificate: Some(key("ingress", "default-tls")),
        ..nginx()
    };
    let out = index.hosts_for(&with_default);
    assert_eq!(
        hosts(&out),
        pairs(&[
            ("a.shop.example", "shop/wild-tls"),
            ("plain.example", "ingress/default-tls"),
        ])
    );
    assert_eq!(out.secrets().count(), 3, "hosts' Secrets and the default");
}

fn gateway(listeners: Vec<ListenerView>) -> RouteObject {
    RouteObject::Gateway(GatewayView {
        namespace: "infra".into(),
        name: "edge".into(),
        uid: "gw-uid".into(),
        class_name: "eg".into(),
        listeners,
        cert_manager_issuer: None,
    })
}

fn listener(
    name: &str,
    hostname: Option<&str>,
    protocol: &str,
    refs: &[(Option<&str>, &str)],
) -> ListenerView {
    ListenerView {
        name: name.into(),
        hostname: hostname.map(Into::into),
        port: 443,
        protocol: protocol.into(),
        tls_mode: (!refs.is_empty()).then_some(TlsMode::Terminate),
        certificate_refs: refs
            .iter()
            .map(|(namespace, name)| CertificateRef {
                group: String::new(),
                kind: "Secret".into(),
                namespace: namespace.map(Into::into),
                name: (*name).into(),
            })
            .collect(),
    }
}

fn envoy_class() -> RouteObject {
    RouteObject::GatewayClass(GatewayClassView {
        name: "eg".into(),
        controller_name: "gateway.envoyproxy.io/gatewayclass-controller".into(),
    })
}

#[test]
fn gateway_listeners_that_terminate_tls_serve_their_secret_and_passthrough_is_not_compared() {
    let mut index = RouteIndex::default();
    index.apply(envoy_class());
    let mut passthrough = listener("pass", Some("db.example"), "TLS", &[]);
    passthrough.tls_mode = Some(TlsMode::Passthrough);
    index.apply(gateway(vec![
        listener(
            "https",
            Some("shop.example"),
            "HTTPS",
            &[(None, "shop-tls")],
        ),
        listener("http", Some("shop.example"), "HTTP", &[]),
        passthrough,
    ]));
    let out = index.hosts_for(&envoy());
    assert_eq!(hosts(&out), pairs(&[("shop.example", "infra/shop-tls")]));
    assert_eq!(
        out.hosts[0].origin.describe(),
        "Gateway infra/edge listener https"
    );
    // Another implementation's class is not ours.
    index.apply(RouteObject::GatewayClass(GatewayClassView {
        name: "eg".into(),
        controller_name: "example.com/other".into(),
    }));
    assert!(index.hosts_for(&envoy()).hosts.is_empty());
    assert!(
        index.hosts_for(&nginx()).hosts.is_empty(),
        "no Ingress matcher sees Gateways"
    );
}

#[test]
fn a_cross_namespace_certificate_ref_counts_only_with_a_reference_grant_for_it() {
    let mut index = RouteIndex::default();
    index.apply(envoy_class());
    index.apply(gateway(vec![listener(
        "https",
        Some("shop.example"),
        "HTTPS",
        &[(Some("certs"), "shop-tls")],
    )]));
    let out = index.hosts_for(&envoy());
    assert!(out.hosts.is_empty());
    assert_eq!(out.not_permitted.len(), 1);
    assert_eq!(out.not_permitted[0].secret, key("certs", "shop-tls"));
    assert!(
        out.not_permitted[0]
            .why
            .contains("no ReferenceGrant in namespace certs lets Gateways of namespace infra"),
        "{}",
        out.not_permitted[0].why
    );
    let grant = |to_name: Option<&str>, from_namespace: &str| {
        RouteObject::ReferenceGrant(ReferenceGrantView {
            namespace: "certs".into(),
            name: "gateways".into(),
            from: vec![GrantFrom {
                group: "gateway.networking.k8s.io".into(),
                kind: "Gateway".into(),
                namespace: from_namespace.into(),
            }],
            to: vec![GrantTo {
                group: String::new(),
                kind: "Secret".into(),
                name: to_name.map(Into::into),
            }],
        })
    };
    // A grant for another Secret, or for another namespace's Gateways, does not count.
    index.apply(grant(Some("other-tls"), "infra"));
    assert_eq!(index.hosts_for(&envoy()).not_permitted.len(), 1);
    index.apply(grant(None, "elsewhere"));
    assert_eq!(index.hosts_for(&envoy()).not_permitted.len(), 1);
    index.apply(grant(Some("shop-tls"), "infra"));
    let out = index.hosts_for(&envoy());
    assert!(out.not_permitted.is_empty());
    assert_eq!(hosts(&out), pairs(&[("shop.example", "certs/shop-tls")]));
}

fn http_route(name: &str, hostnames: &[&str], section: Option<&str>) -> RouteObject {
    RouteObject::Route(AttachedRouteView {
        kind: RouteKind::HttpRoute,
        namespace: "shop".into(),
        name: name.into(),
        hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
        parents: vec![ParentRef {
            namespace: Some("infra".into()),
            name: "edge".into(),
            section_name: section.map(Into::into),
        }],
    })
}

#[test]
fn a_hostless_or_wildcard_listener_is_probed_through_the_routes_attached_to_it() {
    let mut index = RouteIndex::default();
    index.apply(envoy_class());
    index.apply(gateway(vec![
        listener("any", None, "HTTPS", &[(None, "any-tls")]),
        listener(
            "wild",
            Some("*.shop.example"),
            "HTTPS",
            &[(None, "wild-tls")],
        ),
    ]));
    index.apply(http_route("all", &["www.example", "*.example"], None));
    index.apply(http_route(
        "only-wild",
        &["deep.a.shop.example", "other.example"],
        Some("wild"),
    ));
    assert_eq!(
        hosts(&index.hosts_for(&envoy())),
        pairs(&[
            ("deep.a.shop.example", "infra/wild-tls"),
            ("www.example", "infra/any-tls"),
        ])
    );
    // A relist without the route: its hosts are gone.
    index.replace_kind(
        RouteKind::HttpRoute,
        vec![http_route("all", &["www.example"], None)],
    );
    assert_eq!(
        hosts(&index.hosts_for(&envoy())),
        pairs(&[("www.example", "infra/any-tls")])
    );
}
