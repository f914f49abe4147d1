//! The cert-manager view on the node: watches only with local controller pods, judgement only
//! once every kind listed, one Event per finding on the reporter node only, cleared when fixed.

use super::*;
use crate::action::ClusterWatch;
use crate::certmanager::reporter::PeerPod;
use crate::certmanager::{
    CertManagerKind, CertManagerObject, CertificateObject, ConditionStatus, IssuerObject,
    IssuerRef, Readiness,
};

const GRACE: Duration = Duration::from_secs(600);

fn cm_settings() -> NodeSettings {
    NodeSettings {
        cert_manager: Some(CertManagerSettings { grace: GRACE }),
        ..settings(vec![files_controller(true)], true)
    }
}

fn secret_of_certificate(material: &Material, certificate: Option<&str>) -> SecretView {
    let meta = SecretMeta {
        namespace: "ingress".into(),
        name: SECRET.into(),
        uid: "s-uid".into(),
        resource_version: "1".into(),
        immutable: false,
        certificate_name: certificate.map(str::to_string),
    };
    SecretView::from_values(
        meta,
        material.files.iter().map(|(k, v)| (*k, v.as_slice())),
        [],
    )
}

fn certificate(ready: ConditionStatus, since: i64, renewal: Option<i64>) -> CertManagerObject {
    CertManagerObject::Certificate(CertificateObject {
        namespace: "ingress".into(),
        name: "edge".into(),
        uid: "cert-uid".into(),
        secret_name: SECRET.into(),
        dns_names: vec!["edge.example".into()],
        issuer: Some(IssuerRef::ClusterIssuer("letsencrypt".into())),
        ready: Readiness {
            status: ready,
            reason: Some("Failed".into()),
            message: Some("order failed".into()),
            since: Some(since),
        },
        renewal_time: renewal,
        revision: Some(3),
    })
}

fn issuer() -> CertManagerObject {
    CertManagerObject::Issuer(IssuerObject {
        cluster: true,
        namespace: String::new(),
        name: "letsencrypt".into(),
        ready: Readiness {
            status: ConditionStatus::True,
            ..Readiness::default()
        },
    })
}

fn peer(uid: &str, name: &str, node: &str, terminating: bool) -> PeerPod {
    PeerPod {
        uid: uid.into(),
        namespace: "ingress".into(),
        name: name.into(),
        controller: "nginx".into(),
        node: Some(node.into()),
        terminating,
        secrets: [key(SECRET)].into(),
    }
}

fn object_events(actions: &[Action]) -> Vec<(EventReason, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ObjectEvent {
                regarding, reason, ..
            } => Some((*reason, format!("{} {}", regarding.kind, regarding.name))),
            _ => None,
        })
        .collect()
}

fn listed(kind: CertManagerKind, objects: Vec<CertManagerObject>) -> Input {
    Input::CertManager(CertManagerInput::Listed { kind, objects })
}

/// The Certificates list (the last kind to list), holding `certificate`.
fn certificate_listed(node: &mut Node, certificate: CertManagerObject, now: Now) -> Vec<Action> {
    node.step(listed(CertManagerKind::Certificate, vec![certificate]), now)
}

/// A node with one nginx pod (`edge-u1`) mounting the Secret of a cert-manager Certificate,
/// every watch listed except the Certificates.
fn node_with_secret(clock: &Clock) -> Node {
    let mut node = Node::new(cm_settings(), clock.base);
    let actions = node.step(
        Input::PodsListed(vec![pod(UID, "nginx", &[("tls", SECRET)])]),
        clock.at(0),
    );
    let watches: Vec<&ClusterWatch> = actions
        .iter()
        .filter_map(|a| match a {
            Action::WatchCluster(w) => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(
        watches,
        [
            &ClusterWatch::CertManager(CertManagerKind::Certificate),
            &ClusterWatch::CertManager(CertManagerKind::Issuer),
            &ClusterWatch::CertManager(CertManagerKind::ClusterIssuer),
            &ClusterWatch::Peers("nginx".into()),
        ]
    );
    let material = Material::tls("edge.example");
    node.step(
        Input::SecretObserved {
            key: key(SECRET),
            view: Some(secret_of_certificate(&material, Some("edge"))),
        },
        clock.at(1),
    );
    node.step(listed(CertManagerKind::Issuer, vec![]), clock.at(2));
    node.step(
        listed(CertManagerKind::ClusterIssuer, vec![issuer()]),
        clock.at(3),
    );
    node.step(
        Input::CertManager(CertManagerInput::PeersListed {
            controller: "nginx".into(),
            pods: vec![peer(UID, "edge-u1", "node-a", false)],
        }),
        clock.at(4),
    );
    node
}

#[test]
fn without_local_controller_pods_nothing_cluster_wide_is_watched() {
    let clock = Clock::new();
    let mut node = Node::new(cm_settings(), clock.base);
    let actions = node.step(Input::PodsListed(vec![]), clock.at(0));
    assert!(
        !actions.iter().any(|a| matches!(a, Action::WatchCluster(_))),
        "{actions:?}"
    );
    // And with the view off, a controller pod opens no cert-manager watch either.
    let mut off = Node::new(settings(vec![files_controller(true)], true), clock.base);
    let actions = off.step(
        Input::PodsListed(vec![pod(UID, "nginx", &[("tls", SECRET)])]),
        clock.at(0),
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::WatchCluster(_))));
    // The last pod gone: every cluster-wide watch stops.
    let mut node = node_with_secret(&clock);
    let actions = node.step(Input::PodDeleted { uid: UID.into() }, clock.at(10));
    let unwatched = actions
        .iter()
        .filter(|a| matches!(a, Action::UnwatchCluster(_)))
        .count();
    assert_eq!(unwatched, 4, "{actions:?}");
}

#[test]
fn a_certificate_not_ready_is_reported_once_by_the_reporter_and_cleared_when_fixed() {
    let clock = Clock::new();
    let mut node = node_with_secret(&clock);
    let long_ago = clock.utc.unix_timestamp() - 3600;
    let actions = certificate_listed(
        &mut node,
        certificate(ConditionStatus::False, long_ago, None),
        clock.at(5),
    );
    assert_eq!(
        object_events(&actions),
        [(EventReason::CertificateNotReady, "Certificate edge".into())]
    );
    let note = actions
        .iter()
        .find_map(|a| match a {
            Action::ObjectEvent { note, .. } => Some(note.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        note.contains("Ready=False (Failed: order failed)"),
        "{note}"
    );
    // Seen again (a resync, an unrelated change): no second Event.
    let again = node.step(Input::Tick, clock.at(6));
    assert!(object_events(&again).is_empty());
    let published = node.publish_if_due(clock.at(200)).unwrap();
    assert_eq!(published.cert_manager_findings.len(), 1);
    let status = published.status.cert_manager.unwrap();
    assert_eq!(status.state, "installed");
    assert_eq!(status.findings[0].reporter.as_deref(), Some("node-a"));
    // Fixed: the finding and its series are gone.
    node.step(
        Input::CertManager(CertManagerInput::Applied(certificate(
            ConditionStatus::True,
            long_ago,
            None,
        ))),
        clock.at(300),
    );
    let published = node.publish_if_due(clock.at(500)).unwrap();
    assert!(published.cert_manager_findings.is_empty());
    assert!(published.status.cert_manager.unwrap().findings.is_empty());
}

#[test]
fn another_node_with_an_earlier_pod_reports_and_this_one_stays_quiet() {
    let clock = Clock::new();
    let mut node = node_with_secret(&clock);
    node.step(
        Input::CertManager(CertManagerInput::PeerApplied(peer(
            "u0", "edge-a", "node-b", false,
        ))),
        clock.at(5),
    );
    let long_ago = clock.utc.unix_timestamp() - 3600;
    let actions = certificate_listed(
        &mut node,
        certificate(ConditionStatus::False, long_ago, None),
        clock.at(6),
    );
    assert!(object_events(&actions).is_empty(), "{actions:?}");
    let published = node.publish_if_due(clock.at(200)).unwrap();
    assert!(published.cert_manager_findings.is_empty());
    let status = published.status.cert_manager.unwrap();
    assert_eq!(status.findings[0].reporter.as_deref(), Some("node-b"));
    // That pod is being deleted: this node takes over, and says so once.
    let actions = node.step(
        Input::CertManager(CertManagerInput::PeerApplied(peer(
            "u0", "edge-a", "node-b", true,
        ))),
        clock.at(300),
    );
    assert_eq!(
        object_events(&actions),
        [(EventReason::CertificateNotReady, "Certificate edge".into())]
    );
}

#[test]
fn nothing_is_judged_before_every_kind_listed_and_a_missing_cert_manager_counts_as_listed() {
    let clock = Clock::new();
    let mut node = Node::new(cm_settings(), clock.base);
    node.step(
        Input::PodsListed(vec![pod(UID, "nginx", &[("tls", SECRET)])]),
        clock.at(0),
    );
    node.step(
        Input::CertManager(CertManagerInput::PeersListed {
            controller: "nginx".into(),
            pods: vec![peer(UID, "edge-u1", "node-a", false)],
        }),
        clock.at(1),
    );
    // The Certificate lists before its ClusterIssuer: the issuer is not "missing" yet.
    let long_ago = clock.utc.unix_timestamp() - 3600;
    let cert = certificate(ConditionStatus::True, long_ago, None);
    let actions = node.step(
        listed(CertManagerKind::Certificate, vec![cert]),
        clock.at(2),
    );
    assert!(object_events(&actions).is_empty());
    node.step(listed(CertManagerKind::Issuer, vec![]), clock.at(3));
    let actions = node.step(listed(CertManagerKind::ClusterIssuer, vec![]), clock.at(4));
    assert_eq!(
        object_events(&actions),
        [(EventReason::IssuerNotReady, "Certificate edge".into())]
    );
    // A cluster without cert-manager: listed, nothing to say.
    let mut bare = Node::new(cm_settings(), clock.base);
    bare.step(
        Input::PodsListed(vec![pod(UID, "nginx", &[("tls", SECRET)])]),
        clock.at(0),
    );
    for kind in CertManagerKind::ALL {
        bare.step(
            Input::CertManager(CertManagerInput::NotInstalled { kind }),
            clock.at(1),
        );
    }
    let status = bare.publish_if_due(clock.at(200)).unwrap().status;
    assert_eq!(status.cert_manager.unwrap().state, "notInstalled");
}

#[test]
fn an_overdue_renewal_is_reported_when_its_grace_period_ends_without_new_input() {
    let clock = Clock::new();
    let mut node = node_with_secret(&clock);
    // The leaf was issued just now; renewal is due in 100 s, the grace period is 600 s.
    let renewal = clock.utc.unix_timestamp() + 100;
    let actions = certificate_listed(
        &mut node,
        certificate(ConditionStatus::True, 0, Some(renewal)),
        clock.at(5),
    );
    assert!(object_events(&actions).is_empty());
    node.publish_if_due(clock.at(200)).unwrap();
    let deadline = node.next_deadline().unwrap();
    assert!(
        deadline >= clock.at(699_000).at && deadline <= clock.at(701_000).at,
        "the recheck is due when the grace period after the renewal time ends"
    );
    let actions = node.step(Input::Tick, clock.at(701_000));
    assert_eq!(
        object_events(&actions),
        [(
            EventReason::CertificateRenewalOverdue,
            "Certificate edge".into()
        )]
    );
}

#[test]
fn judgments_are_spaced_by_the_uses_and_a_change_in_between_is_judged_when_the_spacing_ends() {
    let clock = Clock::new();
    let mut node = node_with_secret(&clock);
    let long_ago = clock.utc.unix_timestamp() - 3600;
    // The last kind listed: judged at once, nothing to report.
    let actions = certificate_listed(
        &mut node,
        certificate(ConditionStatus::True, long_ago, None),
        clock.at(5),
    );
    assert!(object_events(&actions).is_empty());
    // Half a millisecond later (the spacing is 1 ms per Secret use; one use here) the
    // Certificate fails: not judged yet...
    let within = Now {
        at: clock.at(5).at + Duration::from_micros(500),
        utc: clock.at(5).utc,
    };
    let actions = node.step(
        Input::CertManager(CertManagerInput::Applied(certificate(
            ConditionStatus::False,
            long_ago,
            None,
        ))),
        within,
    );
    assert!(object_events(&actions).is_empty(), "{actions:?}");
    // ...the loop is woken when the spacing ends, and the Tick then reports it.
    node.publish_if_due(within).unwrap();
    assert_eq!(node.next_deadline(), Some(clock.at(6).at));
    let actions = node.step(Input::Tick, clock.at(6));
    assert_eq!(
        object_events(&actions),
        [(EventReason::CertificateNotReady, "Certificate edge".into())]
    );
}
