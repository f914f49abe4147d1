//! The node model's decisions, with plain values and an injected clock: the decisions the
//! agent's loop used to make in untested async wiring.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::HostState;
use super::*;
use crate::cert;
use crate::events::EventReason;
use crate::pod::{ContainerInfo, SecretSource, SecretVolume, VolumeMountInfo};
use crate::reconcile::reload::{FailureKind, ProbeKey, ReloadResult, ServedLeaf};
use crate::reconcile::{MountState, MountStatus, Thresholds};
use crate::secret::SecretMeta;
use crate::volume::{FileSnapshot, VolumeKind};

mod certmanager;

const UID: &str = "u1";
const SECRET: &str = "edge-tls";

fn settings(controllers: Vec<ControllerSpec>, disk_checked: bool) -> NodeSettings {
    NodeSettings {
        node_name: "node-a".into(),
        kubelet: KubeletRoot::new("/k"),
        disk: DiskStatus {
            checked: disk_checked,
            kubelet_root: "/k".into(),
            reason: (!disk_checked).then(|| "no kubelet pods directory".into()),
        },
        thresholds: Thresholds {
            nudge_enabled: true,
            nudge_after: Duration::from_secs(10),
            nudge_retry_after: Duration::from_secs(10),
            stuck_after: Duration::from_secs(120),
        },
        reload: ReloadLimits {
            min_interval: Duration::from_secs(5),
            verify_timeout: Duration::from_secs(10),
            wait_for_others: Duration::from_secs(120),
            expiry_warn_before: Duration::from_secs(21 * 86_400),
            max_attempts: 3,
            verify_interval: Duration::from_secs(300),
            mismatch_after: Duration::from_secs(30),
        },
        controllers,
        publish_every: Duration::from_millis(100),
        handshakes_per_second: 5,
        cert_manager: None,
    }
}

fn files_controller(reloads: bool) -> ControllerSpec {
    ControllerSpec {
        name: "nginx".into(),
        containers: None,
        source: CertificateSource::Files,
        reloads,
        probe_hosts: Vec::new(),
        probe_ports: 1,
        routes: None,
        restart: None,
    }
}

fn api_controller() -> ControllerSpec {
    ControllerSpec {
        source: CertificateSource::Api,
        reloads: false,
        ..files_controller(false)
    }
}

/// A pod of `controller` with one Secret volume per `(volume, secret)`.
fn pod(uid: &str, controller: &str, volumes: &[(&str, &str)]) -> ControllerPod {
    ControllerPod {
        uid: uid.into(),
        namespace: "ingress".into(),
        name: format!("edge-{uid}"),
        controller: controller.into(),
        resync_annotation: None,
        restart_annotation: None,
        config_hash: None,
        host_network: false,
        pod_ips: vec!["10.0.0.7".parse().unwrap()],
        terminating: false,
        containers: vec![ContainerInfo {
            name: "nginx".into(),
            container_id: Some("c1".into()),
            mounts: volumes
                .iter()
                .map(|(volume, _)| VolumeMountInfo {
                    volume: (*volume).into(),
                    mount_path: format!("/etc/{volume}"),
                    sub_path: None,
                })
                .collect(),
        }],
        volumes: volumes
            .iter()
            .map(|(volume, secret)| SecretVolume {
                name: (*volume).into(),
                kind: VolumeKind::Secret,
                sources: vec![SecretSource {
                    secret: (*secret).into(),
                    items: None,
                    optional: false,
                }],
                has_other_sources: false,
            })
            .collect(),
    }
}

fn key(secret: &str) -> SecretKey {
    SecretKey {
        namespace: "ingress".into(),
        name: secret.into(),
    }
}

fn path(uid: &str, volume: &str) -> PathBuf {
    KubeletRoot::new("/k").volume_dir(uid, VolumeKind::Secret, volume)
}

/// A self-signed leaf for `name`: (certificate PEM, key PEM).
fn leaf(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

struct Material {
    files: Vec<(&'static str, Vec<u8>)>,
}

impl Material {
    fn tls(name: &str) -> Self {
        let (cert, key) = leaf(name);
        Self {
            files: vec![
                ("tls.crt", cert.into_bytes()),
                ("tls.key", key.into_bytes()),
            ],
        }
    }

    fn fingerprint(&self) -> String {
        let pem = cert::parse_pem(&self.files[0].1).unwrap();
        pem.leaf().unwrap().fingerprint_sha256.clone()
    }

    fn secret(&self, name: &str, version: &str) -> SecretView {
        let meta = SecretMeta {
            namespace: "ingress".into(),
            name: name.into(),
            uid: format!("{name}-uid"),
            resource_version: version.into(),
            immutable: false,
            certificate_name: None,
        };
        SecretView::from_values(meta, self.files.iter().map(|(k, v)| (*k, v.as_slice())), [])
    }

    /// The volume as a snapshot of generation `generation` would read it.
    fn snapshot(&self, generation: &str) -> VolumeSnapshot {
        let files: Vec<FileSnapshot> = self
            .files
            .iter()
            .map(|(name, bytes)| FileSnapshot {
                path: (*name).into(),
                size: bytes.len() as u64,
                mode: 0o644,
                sha256: Some(hex::encode(Sha256::digest(bytes))),
                pem: cert::parse_pem(bytes).ok(),
            })
            .collect();
        let parsed: Vec<(&str, &cert::PemContents)> = files
            .iter()
            .filter_map(|f| f.pem.as_ref().map(|p| (f.path.as_str(), p)))
            .collect();
        let pairings = cert::pair_keys(&parsed);
        VolumeSnapshot {
            generation: Some(generation.into()),
            files,
            pairings,
            problems: Vec::new(),
        }
    }
}

struct Clock {
    base: Instant,
    utc: OffsetDateTime,
}

impl Clock {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            utc: OffsetDateTime::now_utc(),
        }
    }

    fn at(&self, ms: u64) -> Now {
        let d = Duration::from_millis(ms);
        Now {
            at: self.base + d,
            utc: self.utc + d,
        }
    }
}

/// Performs the disk actions the way the agent's executor would (every directory exists,
/// reads return `disk`), feeding the results back, and returns every other action.
fn run(
    node: &mut Node,
    input: Input,
    now: Now,
    disk: &dyn Fn(&Path) -> VolumeSnapshot,
) -> Vec<Action> {
    let mut queue = vec![input];
    let mut out = Vec::new();
    while let Some(input) = queue.pop() {
        for action in node.step(input, now) {
            match action {
                Action::TrackVolume(path) => queue.push(Input::VolumeTracked {
                    path,
                    result: Ok(()),
                }),
                Action::ReadVolume(path) => {
                    let read = Ok(disk(&path));
                    queue.push(Input::VolumeRead { path, read });
                }
                other => out.push(other),
            }
        }
    }
    out
}

/// The executor's answer to a reload.
fn reloaded(node: &mut Node, result: Result<(), ReloadFailure>, now: Now) -> Vec<Action> {
    node.step(
        Input::Reloaded {
            uid: UID.into(),
            result,
        },
        now,
    )
}

fn reloads(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reload { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect()
}

fn probes(actions: &[Action]) -> Vec<Vec<String>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Probe { names, .. } => Some(names.clone()),
            _ => None,
        })
        .collect()
}

fn events(actions: &[Action]) -> Vec<EventReason> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn served(fingerprint: &str, names: &[String], at_unix: i64) -> ProbeRound {
    let leaf = ServedLeaf {
        fingerprint: fingerprint.into(),
        not_after: Some(at_unix + 90 * 86_400),
        subject: String::new(),
    };
    ProbeRound {
        served: std::iter::once(None)
            .chain(names.iter().cloned().map(Some))
            .map(|sni| {
                let key = ProbeKey {
                    sni,
                    endpoint: "10.0.0.7:443".into(),
                };
                (key, Ok(leaf.clone()))
            })
            .collect(),
        at_unix,
    }
}

/// The API now holds `material` as version `version` of `secret`.
fn observe(
    node: &mut Node,
    material: &Material,
    secret: &str,
    version: &str,
    now: Now,
) -> Vec<Action> {
    node.step(
        Input::SecretObserved {
            key: key(secret),
            view: Some(material.secret(secret, version)),
        },
        now,
    )
}

/// The watcher saw a new generation of the pod's `volume`; reading it finds `snapshot`.
fn volume_changed(
    node: &mut Node,
    volume: &str,
    snapshot: &VolumeSnapshot,
    now: Now,
) -> Vec<Action> {
    let path = path(UID, volume);
    run(node, Input::VolumeChanged { path }, now, &|_| {
        snapshot.clone()
    })
}

/// The started pod's Secret rotates: version 2 in the API at 30 ms, its files on disk at
/// 40 ms. Returns the new material and what reading the volume decided.
fn rotate(node: &mut Node, clock: &Clock) -> (Material, Vec<Action>) {
    let new = Material::tls("a.example");
    observe(node, &new, SECRET, "2", clock.at(30));
    let actions = volume_changed(node, "tls", &new.snapshot("..g2"), clock.at(40));
    (new, actions)
}

/// A node with one files-mode pod whose volume holds `old`, listed and read, Secret synced.
fn started(clock: &Clock, old: &Material, reloads: bool) -> Node {
    let mut node = Node::new(settings(vec![files_controller(reloads)], true), clock.base);
    let first = old.snapshot("..g1");
    let actions = run(
        &mut node,
        Input::PodsListed(vec![pod(UID, "nginx", &[("tls", SECRET)])]),
        clock.at(0),
        &|_| first.clone(),
    );
    assert!(
        actions.contains(&Action::WatchSecret(key(SECRET))),
        "{actions:?}"
    );
    observe(&mut node, old, SECRET, "1", clock.at(10));
    assert_eq!(node.waiting_for(), Vec::<String>::new());
    node
}

#[test]
fn a_listed_pod_gets_its_secret_watched_and_its_volume_tracked_and_read() {
    let clock = Clock::new();
    let mut node = Node::new(settings(vec![files_controller(true)], true), clock.base);
    assert_eq!(node.waiting_for(), ["pods not listed yet"]);
    let actions = node.step(
        Input::PodsListed(vec![pod(UID, "nginx", &[("tls", SECRET)])]),
        clock.at(0),
    );
    assert_eq!(
        actions[..2],
        [
            Action::WatchSecret(key(SECRET)),
            Action::TrackVolume(path(UID, "tls")),
        ]
    );
    assert_eq!(
        node.step(
            Input::VolumeTracked {
                path: path(UID, "tls"),
                result: Ok(()),
            },
            clock.at(1),
        ),
        [Action::ReadVolume(path(UID, "tls"))]
    );
    let waiting = node.waiting_for();
    assert!(
        waiting[0].starts_with("1 Secret(s) not synced: ingress/edge-tls"),
        "{waiting:?}"
    );
    assert_eq!(waiting[1], "1 volume(s) not scanned");
}

#[test]
fn the_first_sighting_is_what_the_controller_started_with_only_a_change_is_a_rotation() {
    let clock = Clock::new();
    let old = Material::tls("a.example");
    let mut node = started(&clock, &old, true);
    // Read again, same generation (a rescan): nothing to reload.
    let actions = volume_changed(&mut node, "tls", &old.snapshot("..g1"), clock.at(20));
    assert_eq!(reloads(&actions), Vec::<u8>::new(), "{actions:?}");

    let (_, actions) = rotate(&mut node, &clock);
    assert_eq!(reloads(&actions), [1], "{actions:?}");
    let Some(Action::Reload { pod, .. }) =
        actions.iter().find(|a| matches!(a, Action::Reload { .. }))
    else {
        unreachable!()
    };
    assert_eq!((pod.uid.as_str(), pod.controller.as_str()), (UID, "nginx"));
}

#[test]
fn a_reload_is_verified_by_probes_and_finishes_with_controller_reloaded() {
    let clock = Clock::new();
    let old = Material::tls("a.example");
    let mut node = started(&clock, &old, true);
    let (new, _) = rotate(&mut node, &clock);
    assert!(reloaded(&mut node, Ok(()), clock.at(50)).is_empty());
    let mut verified = false;
    let mut ms = 50;
    while !verified && ms < 5_000 {
        ms += 25;
        let now = clock.at(ms);
        if node.next_deadline().is_some_and(|d| d <= now.at) {
            for action in node.step(Input::Tick, now) {
                if let Action::Probe { names, .. } = action {
                    assert_eq!(names, ["a.example"]);
                    let round = served(&new.fingerprint(), &names, now.utc.unix_timestamp());
                    let done = node.step(
                        Input::Probed {
                            uid: UID.into(),
                            round,
                        },
                        now,
                    );
                    verified |= events(&done).contains(&EventReason::ControllerReloaded);
                    if verified {
                        assert!(
                            done.iter().any(|a| matches!(
                                a,
                                Action::ReloadFinished {
                                    result: ReloadResult::Verified,
                                    ..
                                }
                            )),
                            "{done:?}"
                        );
                        let Some(Action::Event { related, .. }) =
                            done.iter().find(|a| matches!(a, Action::Event { .. }))
                        else {
                            unreachable!()
                        };
                        let related = related.as_ref().unwrap();
                        assert_eq!(
                            (related.name.as_str(), related.resource_version.as_str()),
                            (SECRET, "2")
                        );
                    }
                }
            }
        }
    }
    assert!(verified, "no ControllerReloaded within 5 s of probes");
    let publication = node.publish_if_due(clock.at(ms + 1_000)).unwrap();
    let mount = &publication.status.mounts[0];
    assert_eq!(mount.last_reload, Some("verified"));
    assert_eq!(mount.served.as_ref().unwrap().matches, Some(true));
    assert_eq!(
        publication.served_matches,
        [ServedMatch {
            namespace: "ingress".into(),
            pod: "edge-u1".into(),
            secret: SECRET.into(),
            matches: true
        }]
    );
    assert_eq!(publication.not_after_on_disk.len(), 1);
}

#[test]
fn a_lagging_volume_of_the_same_pod_holds_the_reload_back_until_it_arrives() {
    let clock = Clock::new();
    let (a_old, b_old) = (Material::tls("a.example"), Material::tls("b.example"));
    let mut node = Node::new(settings(vec![files_controller(true)], true), clock.base);
    let volumes = [("a", "a-tls"), ("b", "b-tls")];
    let disk = |p: &Path| {
        if p.ends_with("a") {
            a_old.snapshot("..g1")
        } else {
            b_old.snapshot("..g1")
        }
    };
    run(
        &mut node,
        Input::PodsListed(vec![pod(UID, "nginx", &volumes)]),
        clock.at(0),
        &disk,
    );
    for (material, secret) in [(&a_old, "a-tls"), (&b_old, "b-tls")] {
        run(
            &mut node,
            Input::SecretObserved {
                key: key(secret),
                view: Some(material.secret(secret, "1")),
            },
            clock.at(5),
            &disk,
        );
    }
    // Both Secrets rotate in the API; only volume a has the new files so far.
    let (a_new, b_new) = (Material::tls("a.example"), Material::tls("b.example"));
    for (material, secret) in [(&a_new, "a-tls"), (&b_new, "b-tls")] {
        observe(&mut node, material, secret, "2", clock.at(10));
    }
    let a_rotated = a_new.snapshot("..g2");
    let actions = volume_changed(&mut node, "a", &a_rotated, clock.at(20));
    assert_eq!(
        reloads(&actions),
        Vec::<u8>::new(),
        "b still lags: {actions:?}"
    );
    let actions = node.step(Input::Tick, clock.at(1_000));
    assert_eq!(reloads(&actions), Vec::<u8>::new(), "{actions:?}");
    // b arrives: one reload for both.
    let b_rotated = b_new.snapshot("..g2");
    let actions = volume_changed(&mut node, "b", &b_rotated, clock.at(1_100));
    assert_eq!(reloads(&actions), [1], "{actions:?}");
}

#[test]
fn invalid_material_is_never_reloaded_and_says_why() {
    let clock = Clock::new();
    let old = Material::tls("a.example");
    let mut node = started(&clock, &old, true);
    // A certificate with someone else's key.
    let (mismatch, other) = (Material::tls("a.example"), Material::tls("a.example"));
    let broken = Material {
        files: vec![mismatch.files[0].clone(), other.files[1].clone()],
    };
    let snapshot = broken.snapshot("..g2");
    let snapshot = VolumeSnapshot {
        problems: Vec::new(),
        ..snapshot
    };
    let actions = volume_changed(&mut node, "tls", &snapshot, clock.at(40));
    assert_eq!(reloads(&actions), Vec::<u8>::new());
    // A key that does not match is not a served pair: nothing to serve, nothing reloaded.
    // The mismatch itself comes from the snapshot reader as a problem.
    let mut flagged = broken.snapshot("..g3");
    flagged.problems.push(crate::volume::Problem::new(
        "tls.key",
        crate::volume::ProblemKind::KeyMismatch,
        "the key does not belong to tls.crt",
    ));
    let actions = volume_changed(&mut node, "tls", &flagged, clock.at(50));
    assert_eq!(reloads(&actions), Vec::<u8>::new());
    assert_eq!(
        events(&actions),
        [EventReason::InvalidCertificateMaterial],
        "{actions:?}"
    );
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::ReloadFinished {
            result: ReloadResult::Withheld,
            ..
        }
    )));
}

#[test]
fn an_api_driven_controller_is_probed_for_the_leaves_its_secrets_hold_in_the_api() {
    let clock = Clock::new();
    let mut node = Node::new(settings(vec![api_controller()], true), clock.base);
    let material = Material::tls("a.example");
    // The Secret is seen first, the pod after: the pod is verified all the same.
    run(
        &mut node,
        Input::PodsListed(vec![]),
        clock.at(0),
        &|_| unreachable!(),
    );
    let actions = run(
        &mut node,
        Input::PodApplied(pod(UID, "nginx", &[("tls", SECRET)])),
        clock.at(5),
        &|_| material.snapshot("..g1"),
    );
    assert!(actions.contains(&Action::WatchSecret(key(SECRET))));
    observe(&mut node, &material, SECRET, "1", clock.at(10));
    let actions = node.step(Input::Tick, clock.at(100));
    assert_eq!(
        probes(&actions),
        [vec!["a.example".to_string()]],
        "{actions:?}"
    );
    // A new version in the API: verified again. Unchanged leaves are not.
    let actions = observe(&mut node, &material, SECRET, "2", clock.at(200));
    assert!(probes(&actions).is_empty());
}

#[test]
fn without_disk_every_controller_is_verified_against_the_api_and_nothing_is_tracked() {
    let clock = Clock::new();
    let mut node = Node::new(settings(vec![files_controller(true)], false), clock.base);
    let material = Material::tls("a.example");
    let actions = node.step(
        Input::PodsListed(vec![pod(UID, "nginx", &[("tls", SECRET)])]),
        clock.at(0),
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::TrackVolume(_)))
            .count(),
        0,
        "{actions:?}"
    );
    observe(&mut node, &material, SECRET, "1", clock.at(10));
    let actions = node.step(Input::Tick, clock.at(100));
    assert_eq!(probes(&actions).len(), 1, "{actions:?}");
    assert!(reloads(&actions).is_empty());
    let publication = node.publish_if_due(clock.at(200)).unwrap();
    assert_eq!(
        publication.status.mounts[0].state,
        MountState::Unchecked.label()
    );
    assert!(publication.status.ready);
}

#[test]
fn a_pod_that_goes_away_mid_reload_is_forgotten_and_its_late_results_are_ignored() {
    let clock = Clock::new();
    let old = Material::tls("a.example");
    let mut node = started(&clock, &old, true);
    let (_, actions) = rotate(&mut node, &clock);
    assert_eq!(reloads(&actions), [1]);
    let actions = node.step(Input::PodDeleted { uid: UID.into() }, clock.at(45));
    assert!(
        actions.contains(&Action::UnwatchSecret(key(SECRET))),
        "{actions:?}"
    );
    assert!(
        actions.contains(&Action::UntrackVolume(path(UID, "tls"))),
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::ForgetPod(p) if p.uid == UID)),
        "{actions:?}"
    );
    // The executor's answer arrives after the pod is gone.
    assert!(reloaded(&mut node, Ok(()), clock.at(50)).is_empty());
    let publication = node.publish_if_due(clock.at(1_000)).unwrap();
    // Its reload machine went with it: no verification timer is left.
    assert_eq!(node.next_deadline(), None);
    assert!(publication.status.mounts.is_empty());
    assert_eq!(publication.tracked_volumes, 0);
    assert_eq!(publication.controller_pods["nginx"], 0);
}

#[test]
fn a_relist_drops_pods_that_are_gone_and_keeps_the_rest() {
    let clock = Clock::new();
    let material = Material::tls("a.example");
    let mut node = Node::new(settings(vec![files_controller(true)], true), clock.base);
    let disk = |_: &Path| material.snapshot("..g1");
    // u2 mounts its Secret through subPath: reported once, when it is first seen.
    let mut u2 = pod("u2", "nginx", &[("tls", "s2")]);
    u2.containers[0].mounts[0].sub_path = Some("tls.crt".into());
    let actions = run(
        &mut node,
        Input::PodsListed(vec![pod("u1", "nginx", &[("tls", "s1")]), u2.clone()]),
        clock.at(0),
        &disk,
    );
    assert_eq!(events(&actions), [EventReason::SubPathNeverUpdates]);
    let actions = run(&mut node, Input::PodsListed(vec![u2]), clock.at(100), &disk);
    assert_eq!(
        events(&actions),
        [],
        "u2 was known: no second SubPathNeverUpdates"
    );
    assert!(
        actions.contains(&Action::UnwatchSecret(key("s1"))),
        "{actions:?}"
    );
    assert!(actions.contains(&Action::UntrackVolume(path("u1", "tls"))));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::ForgetPod(p) if p.uid == "u1"))
    );
    assert!(
        !actions.contains(&Action::WatchSecret(key("s2"))),
        "already watched: {actions:?}"
    );
    let publication = node.publish_if_due(clock.at(1_000)).unwrap();
    assert_eq!(publication.status.mounts.len(), 1);
    assert_eq!(publication.controller_pods["nginx"], 1);
}

#[test]
fn a_pod_update_that_adds_a_volume_brings_its_watch_and_one_that_only_annotates_brings_none() {
    let clock = Clock::new();
    let material = Material::tls("a.example");
    let mut node = started(&clock, &material, true);
    let step = |node: &mut Node, pod: ControllerPod, ms: u64| {
        node.step(Input::PodApplied(pod), clock.at(ms))
    };
    // The nudge's annotation and a new container id: nothing to watch or track anew.
    let mut annotated = pod(UID, "nginx", &[("tls", SECRET)]);
    annotated.resync_annotation = Some("1/1".into());
    annotated.containers[0].container_id = Some("c2".into());
    let actions = step(&mut node, annotated.clone(), 100);
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            Action::WatchSecret(_) | Action::UnwatchSecret(_) | Action::TrackVolume(_)
        )),
        "{actions:?}"
    );
    // A second volume: its Secret is watched and its directory tracked.
    let mut wider = pod(UID, "nginx", &[("tls", SECRET), ("extra", "other")]);
    wider.resync_annotation = annotated.resync_annotation.clone();
    let actions = step(&mut node, wider, 200);
    assert!(
        actions.contains(&Action::WatchSecret(key("other"))),
        "{actions:?}"
    );
    assert!(actions.contains(&Action::TrackVolume(path(UID, "extra"))));
    // And back to one: the other Secret's watch stops.
    let actions = step(&mut node, annotated, 300);
    assert!(
        actions.contains(&Action::UnwatchSecret(key("other"))),
        "{actions:?}"
    );
}

#[test]
fn a_pod_no_profile_selects_any_more_is_dropped() {
    let clock = Clock::new();
    let material = Material::tls("a.example");
    let mut node = started(&clock, &material, true);
    let actions = node.step(
        Input::PodUnselected {
            uid: Some(UID.into()),
        },
        clock.at(100),
    );
    assert!(
        actions.contains(&Action::UnwatchSecret(key(SECRET))),
        "{actions:?}"
    );
}

#[test]
fn a_directory_not_there_yet_is_retried_when_kubelet_mounts_it() {
    let clock = Clock::new();
    let mut node = Node::new(settings(vec![files_controller(true)], true), clock.base);
    node.step(
        Input::PodsListed(vec![pod(UID, "nginx", &[("tls", SECRET)])]),
        clock.at(0),
    );
    let actions = node.step(
        Input::VolumeTracked {
            path: path(UID, "tls"),
            result: Err("no such directory".into()),
        },
        clock.at(1),
    );
    assert!(actions.is_empty());
    assert!(
        node.waiting_for().iter().all(|w| !w.contains("volume")),
        "an untrackable directory is not waited for"
    );
    // A mount elsewhere changes nothing; kubelet's tmpfs for the volume does.
    assert!(
        node.step(
            Input::MountsChanged {
                mount_points: vec!["/mnt/other".into()]
            },
            clock.at(2)
        )
        .is_empty()
    );
    let actions = node.step(
        Input::MountsChanged {
            mount_points: vec![path(UID, "tls")],
        },
        clock.at(3),
    );
    assert_eq!(actions, [Action::TrackVolume(path(UID, "tls"))]);
    // Every rescan retries, an overflow one too: the events that would have announced the
    // directory may be among those the kernel dropped.
    node.step(
        Input::VolumeTracked {
            path: path(UID, "tls"),
            result: Err("still not there".into()),
        },
        clock.at(4),
    );
    assert_eq!(
        node.step(
            Input::VolumesRescanned {
                reason: RescanReason::QueueOverflow
            },
            clock.at(5)
        ),
        [Action::TrackVolume(path(UID, "tls"))]
    );
    node.step(
        Input::VolumeTracked {
            path: path(UID, "tls"),
            result: Err("still not there".into()),
        },
        clock.at(5),
    );
    assert_eq!(
        node.step(
            Input::VolumesRescanned {
                reason: RescanReason::Safety
            },
            clock.at(6)
        ),
        [Action::TrackVolume(path(UID, "tls"))]
    );
}

#[test]
fn an_unmounted_volume_is_unreadable_and_tracked_again_once_remounted() {
    let clock = Clock::new();
    let material = Material::tls("a.example");
    let mut node = started(&clock, &material, true);
    let actions = node.step(
        Input::VolumeUnmounted {
            path: path(UID, "tls"),
        },
        clock.at(100),
    );
    assert_eq!(actions[0], Action::UntrackVolume(path(UID, "tls")));
    let status = node.publish_if_due(clock.at(1_000)).unwrap().status;
    assert_eq!(status.mounts[0].state, MountState::Unreadable.label());
    let actions = node.step(
        Input::MountsChanged {
            mount_points: vec![path(UID, "tls")],
        },
        clock.at(1_100),
    );
    assert_eq!(actions, [Action::TrackVolume(path(UID, "tls"))]);
}

#[test]
fn watch_failures_are_counted_and_the_status_is_published_at_most_every_interval() {
    let clock = Clock::new();
    let mut node = Node::new(settings(vec![files_controller(true)], true), clock.base);
    assert_eq!(
        node.next_deadline(),
        Some(clock.base),
        "the first status is due at once"
    );
    let first = node.publish_if_due(clock.at(0)).unwrap();
    assert!(!first.status.ready);
    assert_eq!(first.mounts_by_state.len(), MountState::ALL.len());
    assert_eq!(node.publish_if_due(clock.at(10)), None, "nothing changed");
    let actions = node.step(
        Input::PodWatchFailed {
            reason: "Forbidden".into(),
        },
        clock.at(20),
    );
    assert_eq!(
        actions,
        [Action::CountApiError {
            resource: "pods",
            reason: "Forbidden".into()
        }]
    );
    assert_eq!(
        node.publish_if_due(clock.at(50)),
        None,
        "within 100 ms of the last one"
    );
    assert_eq!(node.next_deadline(), Some(clock.at(100).at));
    assert!(node.publish_if_due(clock.at(100)).is_some());
}

#[test]
fn the_status_is_rebuilt_at_most_every_millisecond_per_mount_except_the_turn_to_ready() {
    let clock = Clock::new();
    let mut node = Node::new(settings(vec![files_controller(true)], false), clock.base);
    let material = Material::tls("a.example");
    let secrets: Vec<String> = (0..300).map(|i| format!("tls-{i}")).collect();
    let pods = secrets
        .iter()
        .enumerate()
        .map(|(i, secret)| pod(&format!("uid-{i}"), "nginx", &[("tls", secret)]))
        .collect();
    node.step(Input::PodsListed(pods), clock.at(0));
    assert!(!node.publish_if_due(clock.at(0)).unwrap().status.ready);
    // Still waiting (half of the Secrets listed): what changes while waiting (a start, an
    // outage's failing retries) is spaced as once ready.
    for secret in &secrets[..150] {
        observe(&mut node, &material, secret, "1", clock.at(50));
    }
    assert!(
        node.publish_if_due(clock.at(100)).is_none(),
        "waiting: 300 ms"
    );
    assert!(
        node.publish_if_due(clock.at(299)).is_none(),
        "waiting: 300 ms"
    );
    // The turn to ready is published at the usual spacing, so readiness is never held back.
    for secret in &secrets[150..] {
        observe(&mut node, &material, secret, "1", clock.at(60));
    }
    let ready = node.publish_if_due(clock.at(100)).unwrap();
    assert!(ready.status.ready);
    assert_eq!(ready.status.mounts.len(), 300);
    observe(&mut node, &material, "tls-0", "2", clock.at(110));
    assert_eq!(
        node.publish_if_due(clock.at(200)),
        None,
        "300 mounts: 300 ms between rebuilds once ready"
    );
    assert_eq!(node.publish_if_due(clock.at(399)), None);
    assert!(node.publish_if_due(clock.at(400)).is_some());
}

/// Publishes at `now` and checks it shows what a rebuild of every entry would.
fn publish_checked(node: &mut Node, now: Now) -> Publication {
    let publication = node.publish_if_due(now).expect("something changed");
    let shown: Vec<_> = publication
        .status
        .mounts
        .iter()
        .map(|m| (**m).clone())
        .collect();
    assert_eq!(shown, node.mounts_rebuilt_whole(now));
    publication
}

fn same_entry(a: &Publication, b: &Publication, at: usize) -> bool {
    Arc::ptr_eq(&a.status.mounts[at], &b.status.mounts[at])
}

#[test]
fn a_publication_rebuilds_only_the_entries_whose_facts_changed() {
    let clock = Clock::new();
    let (a_old, b_old) = (Material::tls("a.example"), Material::tls("b.example"));
    let mut node = Node::new(settings(vec![files_controller(true)], true), clock.base);
    let disk = |p: &Path| {
        if p == path("u1", "tls") {
            a_old.snapshot("..g1")
        } else {
            b_old.snapshot("..g1")
        }
    };
    let pods = vec![
        pod("u1", "nginx", &[("tls", "a-tls")]),
        pod("u2", "nginx", &[("tls", "b-tls")]),
    ];
    run(&mut node, Input::PodsListed(pods), clock.at(0), &disk);
    observe(&mut node, &a_old, "a-tls", "1", clock.at(10));
    observe(&mut node, &b_old, "b-tls", "1", clock.at(10));
    let first = publish_checked(&mut node, clock.at(1_000));
    assert!(first.status.ready);
    assert_eq!(first.not_after_on_disk.len(), 2, "both entries are new");

    // Nothing either entry shows changed: both are published again as they were, and no
    // gauge is set again.
    node.step(Input::Tick, clock.at(2_000));
    let idle = publish_checked(&mut node, clock.at(2_000));
    assert!(same_entry(&first, &idle, 0) && same_entry(&first, &idle, 1));
    assert!(idle.not_after_on_disk.is_empty() && idle.served_matches.is_empty());

    // a-tls rotates in the API: u1's entry shows the new version, u2's is untouched.
    let a_new = Material::tls("a.example");
    observe(&mut node, &a_new, "a-tls", "2", clock.at(3_000));
    let api = publish_checked(&mut node, clock.at(3_000));
    assert_eq!(
        api.status.mounts[0].secrets[0].resource_version.as_deref(),
        Some("2")
    );
    assert!(!same_entry(&idle, &api, 0) && same_entry(&idle, &api, 1));

    // Still lagging half a second later: only the lag changed.
    node.step(Input::Tick, clock.at(3_500));
    let lagging = publish_checked(&mut node, clock.at(3_500));
    assert_eq!(lagging.status.mounts[0].lag_seconds, Some(0.5));
    assert!(same_entry(&api, &lagging, 1));

    // The new files arrive on u1's volume: its certificate and generation change.
    run(
        &mut node,
        Input::VolumeChanged {
            path: path("u1", "tls"),
        },
        clock.at(4_000),
        &|_| a_new.snapshot("..g2"),
    );
    let disk_now = publish_checked(&mut node, clock.at(4_000));
    let u1 = &disk_now.status.mounts[0];
    assert_eq!(u1.disk_generation.as_deref(), Some("..g2"));
    assert_eq!(
        u1.certificate
            .as_ref()
            .map(|c| c.fingerprint_sha256.clone()),
        Some(a_new.fingerprint())
    );
    assert!(same_entry(&api, &disk_now, 1));
    let disk_gauges: Vec<_> = disk_now
        .not_after_on_disk
        .iter()
        .map(|(namespace, secret, _)| (namespace.as_str(), secret.as_str()))
        .collect();
    assert_eq!(disk_gauges, [("ingress", "a-tls")]);

    // u2 is probed: what it serves shows on its entry alone.
    let names = vec!["b.example".to_string()];
    let probed_at = clock.at(5_000);
    node.step(
        Input::Probed {
            uid: "u2".into(),
            round: served(&b_old.fingerprint(), &names, probed_at.utc.unix_timestamp()),
        },
        probed_at,
    );
    let probed = publish_checked(&mut node, probed_at);
    assert_eq!(
        probed.status.mounts[1]
            .served
            .as_ref()
            .and_then(|s| s.fingerprint_sha256.clone()),
        Some(b_old.fingerprint())
    );
    assert!(same_entry(&disk_now, &probed, 0) && !same_entry(&disk_now, &probed, 1));

    // b-tls gets a new resourceVersion with the same data (a label changed), and kubelet
    // writes the same files as a new generation: only the version and the generation change.
    observe(&mut node, &b_old, "b-tls", "3", clock.at(6_000));
    let relabelled = publish_checked(&mut node, clock.at(6_000));
    let u2 = &relabelled.status.mounts[1];
    assert_eq!(u2.secrets[0].resource_version.as_deref(), Some("3"));
    assert_eq!(u2.state, probed.status.mounts[1].state);
    run(
        &mut node,
        Input::VolumeChanged {
            path: path("u2", "tls"),
        },
        clock.at(7_000),
        &|_| b_old.snapshot("..g3"),
    );
    let rewritten = publish_checked(&mut node, clock.at(7_000));
    assert_eq!(
        rewritten.status.mounts[1].disk_generation.as_deref(),
        Some("..g3")
    );
    assert!(same_entry(&probed, &rewritten, 0));

    // u2's container is renamed: the pod is replaced, and its entry shows the new name.
    let mut renamed = pod("u2", "nginx", &[("tls", "b-tls")]);
    renamed.containers[0].name = "proxy".into();
    node.step(Input::PodApplied(renamed), clock.at(8_000));
    let replaced = publish_checked(&mut node, clock.at(8_000));
    assert_eq!(replaced.status.mounts[1].containers, ["proxy"]);
    assert!(same_entry(&rewritten, &replaced, 0));

    // A day later every leaf is a day closer to expiry.
    let tomorrow = clock.at(8_000 + 86_400_000);
    node.step(Input::Tick, tomorrow);
    let later = publish_checked(&mut node, tomorrow);
    for at in 0..2 {
        let (before, after) = (&replaced.status.mounts[at], &later.status.mounts[at]);
        let days = |m: &MountStatus| m.certificate.as_ref().unwrap().days_to_expiry;
        assert_eq!(days(after), days(before) - 1);
    }

    // A pod ordered before both arrives, then u1 goes: the others' entries stay as they were.
    let at = clock.at(9_000 + 86_400_000);
    run(
        &mut node,
        Input::PodApplied(pod("u0", "nginx", &[("tls", "b-tls")])),
        at,
        &|_| b_old.snapshot("..g3"),
    );
    let added = publish_checked(&mut node, at);
    assert_eq!(added.status.mounts.len(), 3);
    assert!(Arc::ptr_eq(
        &later.status.mounts[0],
        &added.status.mounts[1]
    ));
    assert!(Arc::ptr_eq(
        &later.status.mounts[1],
        &added.status.mounts[2]
    ));
    let at = clock.at(10_000 + 86_400_000);
    node.step(Input::PodDeleted { uid: "u1".into() }, at);
    let removed = publish_checked(&mut node, at);
    let pods: Vec<_> = removed
        .status
        .mounts
        .iter()
        .map(|m| m.pod_uid.as_str())
        .collect();
    assert_eq!(pods, ["u0", "u2"]);
    assert!(Arc::ptr_eq(
        &added.status.mounts[0],
        &removed.status.mounts[0]
    ));
    assert!(Arc::ptr_eq(
        &added.status.mounts[2],
        &removed.status.mounts[1]
    ));
}

#[test]
fn a_served_certificate_sets_its_not_after_for_the_pods_secrets() {
    let clock = Clock::new();
    let material = Material::tls("a.example");
    let mut node = started(&clock, &material, true);
    // The answer to the check that follows the first read: the files' leaf is served.
    let round = served(&material.fingerprint(), &[], 1_800_000_000);
    let actions = node.step(
        Input::Probed {
            uid: UID.into(),
            round,
        },
        clock.at(100),
    );
    assert_eq!(
        actions,
        [Action::SetNotAfter {
            namespace: "ingress".into(),
            secret: SECRET.into(),
            source: crate::action::CertificateView::Served,
            unix: 1_800_000_000 + 90 * 86_400,
        }]
    );
    let failed = ReloadFailure {
        kind: FailureKind::Failed,
        message: "x".into(),
    };
    // No reload was asked for: a stray answer changes nothing.
    assert!(
        node.step(
            Input::Reloaded {
                uid: UID.into(),
                result: Err(failed)
            },
            clock.at(200)
        )
        .is_empty()
    );
}

#[test]
fn a_secret_in_the_api_sets_its_not_after_whether_or_not_anything_mounts_it_yet() {
    let clock = Clock::new();
    let mut node = Node::new(settings(vec![files_controller(true)], true), clock.base);
    let material = Material::tls("a.example");
    let leaf = cert::parse_pem(&material.files[0].1).unwrap();
    let not_after = leaf.leaf().unwrap().not_after.unix_timestamp();
    let actions = observe(&mut node, &material, SECRET, "1", clock.at(0));
    assert_eq!(
        actions,
        [Action::SetNotAfter {
            namespace: "ingress".into(),
            secret: SECRET.into(),
            source: crate::action::CertificateView::Api,
            unix: not_after,
        }]
    );
    // A Secret without a certificate and its key (an opaque token, a CA bundle) has none.
    let opaque = Material {
        files: vec![("token", b"not a certificate".to_vec())],
    };
    assert_eq!(observe(&mut node, &opaque, "token", "1", clock.at(10)), []);
    assert!(
        node.step(
            Input::SecretObserved {
                key: key(SECRET),
                view: None
            },
            clock.at(20)
        )
        .is_empty()
    );
}

#[test]
fn periodic_checks_share_one_node_wide_handshake_budget() {
    let clock = Clock::new();
    let mut settings = settings(vec![files_controller(false)], true);
    settings.handshakes_per_second = 1;
    let mut node = Node::new(settings, clock.base);
    let (a, b) = (Material::tls("a.example"), Material::tls("b.example"));
    let (on_a, on_b) = (a.snapshot("..g1"), b.snapshot("..g1"));
    let path_a = path("u1", "tls");
    run(
        &mut node,
        Input::PodsListed(vec![
            pod("u1", "nginx", &[("tls", "secret-a")]),
            pod("u2", "nginx", &[("tls", "secret-b")]),
        ]),
        clock.at(0),
        &|p| {
            if p == path_a {
                on_a.clone()
            } else {
                on_b.clone()
            }
        },
    );
    // Both first reads want a check at once: one round (a name and no SNI: 2 handshakes at
    // 1/s) goes out, the other waits until the budget is free again.
    assert_eq!(probes(&node.step(Input::Tick, clock.at(0))).len(), 1);
    // Nothing is due at once: the deferred check waits for the budget, and the loop sleeps
    // instead of waking again and again for a check that would be deferred each time.
    assert!(node.publish_if_due(clock.at(0)).is_some());
    assert!(node.next_deadline() > Some(clock.at(0).at));
    assert!(probes(&node.step(Input::Tick, clock.at(1_999))).is_empty());
    assert_eq!(probes(&node.step(Input::Tick, clock.at(2_000))).len(), 1);
}

#[test]
fn checks_waiting_for_the_budget_go_out_in_the_order_they_came_due_one_per_turn() {
    let clock = Clock::new();
    let mut settings = settings(vec![files_controller(false)], true);
    settings.handshakes_per_second = 1;
    let mut node = Node::new(settings, clock.base);
    let material = Material::tls("a.example");
    let on_disk = material.snapshot("..g1");
    let uids = ["u1", "u2", "u3", "u4"];
    let pods = uids
        .iter()
        .map(|uid| pod(uid, "nginx", &[("tls", "secret-a")]));
    run(
        &mut node,
        Input::PodsListed(pods.collect()),
        clock.at(0),
        &|_| on_disk.clone(),
    );
    // Every check is due at once; a round costs 2 handshakes, 2 s of the budget.
    let mut probed = Vec::new();
    let mut now = clock.at(0);
    for _ in 0..100 {
        for action in node.step(Input::Tick, now) {
            if let Action::Probe { pod, .. } = action {
                probed.push((pod.uid.clone(), now.at - clock.base));
            }
        }
        node.publish_if_due(now);
        if probed.len() == uids.len() {
            break;
        }
        // The loop sleeps until the budget is free, not a moment less.
        let next = node.next_deadline().unwrap();
        assert!(next > now.at, "woken again at once");
        now = Now {
            at: next,
            utc: clock.utc + (next - clock.base),
        };
    }
    let secs = Duration::from_secs;
    assert_eq!(
        probed,
        [
            ("u1".to_string(), secs(0)),
            ("u2".to_string(), secs(2)),
            ("u3".to_string(), secs(4)),
            ("u4".to_string(), secs(6)),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Hosts from Ingress and Gateway objects
// ---------------------------------------------------------------------------------------------

fn ingress_nginx() -> ControllerSpec {
    ControllerSpec {
        routes: Some(crate::routes::RouteMatch {
            ingress_controllers: vec!["k8s.io/ingress-nginx".into()],
            ..Default::default()
        }),
        ..api_controller()
    }
}

fn web_ingress(secret: &str) -> crate::routes::RouteObject {
    crate::routes::RouteObject::Ingress(crate::routes::IngressView {
        namespace: "ingress".into(),
        name: "web".into(),
        uid: "web-uid".into(),
        class_name: Some("nginx".into()),
        tls: vec![crate::routes::IngressTls {
            hosts: vec!["a.example".into(), "b.example".into()],
            secret_name: Some(secret.into()),
        }],
        ..Default::default()
    })
}

fn nginx_class() -> crate::routes::RouteObject {
    crate::routes::RouteObject::IngressClass(crate::routes::IngressClassView {
        name: "nginx".into(),
        controller: "k8s.io/ingress-nginx".into(),
        is_default: false,
    })
}

fn route_watches(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::WatchRoutes(kind) => Some(format!("watch {}", kind.resource())),
            Action::UnwatchRoutes(kind) => Some(format!("unwatch {}", kind.resource())),
            _ => None,
        })
        .collect()
}

/// An ingress-nginx pod on the node, its Ingress and IngressClass listed.
fn ingress_node(clock: &Clock) -> Node {
    let mut node = Node::new(settings(vec![ingress_nginx()], true), clock.base);
    let actions = node.step(Input::PodsListed(vec![pod(UID, "nginx", &[])]), clock.at(0));
    assert_eq!(
        route_watches(&actions),
        ["watch ingresses", "watch ingressclasses"]
    );
    node.step(
        Input::RoutesListed {
            kind: crate::routes::RouteKind::IngressClass,
            objects: vec![nginx_class()],
        },
        clock.at(1),
    );
    let actions = node.step(
        Input::RoutesListed {
            kind: crate::routes::RouteKind::Ingress,
            objects: vec![web_ingress("web-tls")],
        },
        clock.at(2),
    );
    assert!(
        actions.contains(&Action::WatchSecret(key("web-tls"))),
        "{actions:?}"
    );
    node
}

#[test]
fn route_kinds_are_watched_only_while_a_local_pod_needs_them() {
    let clock = Clock::new();
    // A profile without routes, or no pod of a profile with them: no route watch at all.
    let mut plain = Node::new(
        settings(vec![api_controller(), ingress_nginx()], true),
        clock.base,
    );
    let actions = plain.step(Input::PodsListed(vec![]), clock.at(0));
    assert!(route_watches(&actions).is_empty());
    let mut node = ingress_node(&clock);
    let actions = node.step(Input::PodDeleted { uid: UID.into() }, clock.at(10));
    assert_eq!(
        route_watches(&actions),
        ["unwatch ingresses", "unwatch ingressclasses"]
    );
    assert!(actions.contains(&Action::UnwatchSecret(key("web-tls"))));
}

#[test]
fn ingress_hosts_are_probed_by_name_and_verified_against_their_secret() {
    let clock = Clock::new();
    let mut node = ingress_node(&clock);
    assert!(
        !node.waiting_for().is_empty(),
        "the Secret is not listed yet"
    );
    let material = Material::tls("a.example");
    observe(&mut node, &material, "web-tls", "1", clock.at(3));
    assert!(node.waiting_for().is_empty(), "{:?}", node.waiting_for());
    let probe = node.step(Input::Tick, clock.at(30));
    assert_eq!(
        probes(&probe),
        [vec!["a.example".to_string(), "b.example".into()]]
    );
    // Without SNI ingress-nginx serves its own default: not compared.
    let fingerprint = material.fingerprint();
    let answer = || {
        let mut round = served(
            &fingerprint,
            &["a.example".into(), "b.example".into()],
            1_800_000_000,
        );
        let no_sni = ProbeKey {
            sni: None,
            endpoint: "10.0.0.7:443".into(),
        };
        round.served.insert(
            no_sni,
            Ok(ServedLeaf {
                fingerprint: "fake".into(),
                not_after: Some(1_900_000_000),
                subject: "CN=Kubernetes Ingress Controller Fake Certificate".into(),
            }),
        );
        Input::Probed {
            uid: UID.into(),
            round,
        }
    };
    let mut at = 30;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(node.step(answer(), clock.at(at)));
        at += 150;
        node.step(Input::Tick, clock.at(at));
    }
    assert!(
        seen.iter().any(|a| matches!(
            a,
            Action::ReloadFinished {
                result: ReloadResult::Verified,
                ..
            }
        )),
        "{seen:?}"
    );
    assert!(
        events(&seen).is_empty(),
        "no reload happened: nothing to claim"
    );
    assert!(
        seen.contains(&Action::SetNotAfter {
            namespace: "ingress".into(),
            secret: "web-tls".into(),
            source: crate::action::CertificateView::Served,
            unix: 1_800_000_000 + 90 * 86_400,
        }),
        "the served view of the hosts' Secret: {seen:?}"
    );
    let status = node.publish_if_due(clock.at(1_000)).unwrap();
    assert_eq!(status.status.hosts.len(), 2);
    assert!(status.status.hosts.iter().all(|h| h.state == HostState::Ok));
    assert_eq!(status.tls_hosts[&("nginx".to_string(), HostState::Ok)], 2);
    let answer = &status.status.hosts[0].served[0];
    assert_eq!(answer.matches, Some(true));
    assert!(
        answer
            .not_after
            .as_deref()
            .is_some_and(|t| t.starts_with("2027-")),
        "{answer:?}"
    );
    assert!(!answer.expiring);
}

#[test]
fn a_missing_host_secret_is_reported_once_regarding_the_ingress() {
    let clock = Clock::new();
    let mut node = ingress_node(&clock);
    let missing = Input::SecretObserved {
        key: key("web-tls"),
        view: None,
    };
    let actions = node.step(missing.clone(), clock.at(3));
    let reported: Vec<(&str, String, &str)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::RouteEvent {
                regarding,
                reason,
                note,
            } => Some((reason.as_str(), regarding.describe(), note.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(reported.len(), 2, "one per host: {reported:?}");
    assert_eq!(reported[0].0, "TLSSecretMissing");
    assert_eq!(reported[0].1, "Ingress ingress/web");
    assert!(
        reported[0].2.contains("TLS host a.example") && reported[0].2.contains("ingress/web-tls"),
        "{}",
        reported[0].2
    );
    // Once: the same news again reports nothing.
    let again = node.step(missing, clock.at(4));
    assert!(!again.iter().any(|a| matches!(a, Action::RouteEvent { .. })));
    // The hosts are still probed: what is served for them is reported too.
    assert_eq!(probes(&node.step(Input::Tick, clock.at(30))).len(), 1);
    let status = node.publish_if_due(clock.at(1_000)).unwrap();
    assert!(
        status
            .status
            .hosts
            .iter()
            .all(|h| h.state == HostState::SecretMissing),
        "{:?}",
        status.status.hosts
    );
    // A Secret without its key is another problem.
    let no_key = Material {
        files: vec![("tls.crt", Material::tls("a.example").files[0].1.clone())],
    };
    let actions = observe(&mut node, &no_key, "web-tls", "2", clock.at(2_000));
    let notes: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::RouteEvent { reason, note, .. } if *reason == EventReason::TLSSecretInvalid => {
                Some(note.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(notes.len(), 2, "{actions:?}");
    assert!(notes[0].contains("it has no tls.key"), "{}", notes[0]);
}

#[test]
fn readiness_says_which_watch_is_failing_until_it_lists_again() {
    let clock = Clock::new();
    let material = Material::tls("a.example");
    let mut node = started(&clock, &material, true);
    node.step(
        Input::PodWatchFailed {
            reason: "unreachable".into(),
        },
        clock.at(20),
    );
    node.step(
        Input::SecretWatchFailed {
            key: key(SECRET),
            reason: "unreachable".into(),
        },
        clock.at(21),
    );
    assert_eq!(
        node.waiting_for(),
        [
            "the pod watch is failing (API unreachable?); retrying",
            "1 Secret watch(es) failing: ingress/edge-tls",
        ]
    );
    node.step(
        Input::PodsListed(vec![pod(UID, "nginx", &[("tls", SECRET)])]),
        clock.at(30),
    );
    assert_eq!(
        node.waiting_for(),
        ["1 Secret watch(es) failing: ingress/edge-tls"]
    );
    observe(&mut node, &material, SECRET, "1", clock.at(31));
    assert_eq!(node.waiting_for(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Reload by rolling restart
// ---------------------------------------------------------------------------------------------

fn restarting_controller() -> ControllerSpec {
    ControllerSpec {
        restart: Some(RollingRestart {
            timeout: Duration::from_secs(600),
        }),
        ..files_controller(true)
    }
}

fn restart_of(actions: &[Action]) -> Option<Option<String>> {
    actions.iter().find_map(|a| match a {
        Action::Reload { restart, .. } => Some(restart.clone()),
        _ => None,
    })
}

#[test]
fn a_restart_profile_asks_for_a_restart_with_a_value_every_node_computes_alike() {
    let clock = Clock::new();
    let old = Material::tls("a.example");
    let mut node = Node::new(settings(vec![restarting_controller()], true), clock.base);
    let first = old.snapshot("..g1");
    run(
        &mut node,
        Input::PodsListed(vec![pod(UID, "nginx", &[("tls", SECRET)])]),
        clock.at(0),
        &|_| first.clone(),
    );
    observe(&mut node, &old, SECRET, "1", clock.at(10));
    let (new, actions) = rotate(&mut node, &clock);
    let value = restart_of(&actions)
        .expect("a reload")
        .expect("a restart value");
    // The value is the Secret's content, not its version: another node that saw the same
    // bytes at another resourceVersion (a metadata-only update in between) agrees.
    let same_bytes = |version: &str| {
        let mut view = new.secret(SECRET, version);
        view.namespace = "ingress".into();
        restart_value(&[&view])
    };
    assert_eq!(value, same_bytes("2"));
    assert_eq!(value, same_bytes("7"));
    assert_ne!(value, restart_value(&[&old.secret(SECRET, "2")]));
    assert_eq!(value.len(), 16);
    // The old pod is given the restart timeout, not verify.timeout, to be replaced: no
    // ReloadUnverified after 10 s.
    assert!(reloaded(&mut node, Ok(()), clock.at(50)).is_empty());
    let mut unverified = false;
    let mut ms = 50;
    while ms < 60_000 {
        ms += 1_000;
        let now = clock.at(ms);
        let ticked = node.step(Input::Tick, now);
        unverified |= events(&ticked).contains(&EventReason::ReloadUnverified);
        for action in ticked {
            if let Action::Probe { names, .. } = action {
                let round = served(&old.fingerprint(), &names, now.utc.unix_timestamp());
                unverified |= events(&node.step(
                    Input::Probed {
                        uid: UID.into(),
                        round,
                    },
                    now,
                ))
                .contains(&EventReason::ReloadUnverified);
            }
        }
    }
    assert!(!unverified, "a rollout may take longer than verify.timeout");
    // A plain signal profile carries no restart value.
    let mut plain = started(&clock, &old, true);
    let (_, actions) = rotate(&mut plain, &clock);
    assert_eq!(restart_of(&actions), Some(None));
}

#[test]
fn the_restart_value_does_not_depend_on_the_order_of_the_pods_secrets() {
    let a = Material::tls("a.example").secret("a-tls", "1");
    let b = Material::tls("b.example").secret("b-tls", "1");
    assert_eq!(restart_value(&[&a, &b]), restart_value(&[&b, &a]));
    assert_ne!(restart_value(&[&a, &b]), restart_value(&[&a]));
}

/// Runs ticks for `ms` and answers every probe with `fingerprint`; returns the Events.
fn probe_until(
    node: &mut Node,
    clock: &Clock,
    from: u64,
    ms: u64,
    fingerprint: &str,
) -> Vec<EventReason> {
    let mut seen = Vec::new();
    let mut at = from;
    while at < from + ms {
        at += 100;
        let now = clock.at(at);
        let ticked = node.step(Input::Tick, now);
        seen.extend(events(&ticked));
        for action in ticked {
            if let Action::Probe { names, .. } = action {
                let round = served(fingerprint, &names, now.utc.unix_timestamp());
                seen.extend(events(&node.step(
                    Input::Probed {
                        uid: UID.into(),
                        round,
                    },
                    now,
                )));
            }
        }
    }
    seen
}

#[test]
fn a_pod_created_by_a_rolling_restart_is_verified_once_when_it_serves_its_secret() {
    let clock = Clock::new();
    let material = Material::tls("a.example");
    for (annotation, expected) in [(Some("0123456789abcdef"), 1), (None, 0)] {
        let mut node = Node::new(settings(vec![restarting_controller()], true), clock.base);
        let mut new_pod = pod(UID, "nginx", &[("tls", SECRET)]);
        new_pod.restart_annotation = annotation.map(str::to_string);
        let first = material.snapshot("..g1");
        run(
            &mut node,
            Input::PodsListed(vec![new_pod]),
            clock.at(0),
            &|_| first.clone(),
        );
        observe(&mut node, &material, SECRET, "1", clock.at(10));
        // Serving something else: not verified.
        let wrong = probe_until(&mut node, &clock, 10, 2_000, "00ff");
        assert!(
            !wrong.contains(&EventReason::ControllerReloaded),
            "{wrong:?}"
        );
        let seen = probe_until(&mut node, &clock, 2_010, 700_000, &material.fingerprint());
        let verified = seen
            .iter()
            .filter(|r| **r == EventReason::ControllerReloaded)
            .count();
        assert_eq!(verified, expected, "annotation {annotation:?}: {seen:?}");
    }
}
