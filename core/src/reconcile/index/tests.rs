//! Tests of [`super`].

#![allow(clippy::unwrap_used)]

use super::*;
use crate::pod::{ContainerInfo, SecretSource, SecretVolume, VolumeMountInfo};
use crate::volume::VolumeKind;

fn pod(uid: &str, secret: &str, sub_path: Option<&str>) -> ControllerPod {
    ControllerPod {
        uid: uid.into(),
        namespace: "ingress".into(),
        name: format!("edge-{uid}"),
        controller: "edge".into(),
        resync_annotation: None,
        restart_annotation: None,
        config_hash: None,
        host_network: false,
        pod_ips: vec![],
        terminating: false,
        containers: vec![
            ContainerInfo {
                name: "nginx".into(),
                container_id: None,
                mounts: vec![VolumeMountInfo {
                    volume: "tls".into(),
                    mount_path: "/etc/tls".into(),
                    sub_path: sub_path.map(str::to_owned),
                }],
            },
            ContainerInfo {
                name: "exporter".into(),
                container_id: None,
                mounts: vec![],
            },
        ],
        volumes: vec![SecretVolume {
            name: "tls".into(),
            kind: VolumeKind::Secret,
            sources: vec![SecretSource {
                secret: secret.into(),
                items: None,
                optional: false,
            }],
            has_other_sources: false,
        }],
    }
}

fn view(name: &str, rv: &str, digest: &str) -> SecretView {
    SecretView {
        namespace: "ingress".into(),
        name: name.into(),
        uid: "s".into(),
        resource_version: rv.into(),
        keys: BTreeMap::from([("tls.crt".to_string(), digest.to_string())]),
        certificates: BTreeMap::new(),
        immutable: false,
        certificate_name: None,
    }
}

fn disk(digest: &str) -> DiskView {
    DiskView::Files {
        generation: Some("..g".into()),
        files: BTreeMap::from([("tls.crt".to_string(), Some(digest.to_string()))]),
    }
}

fn key(name: &str) -> SecretKey {
    SecretKey {
        namespace: "ingress".into(),
        name: name.into(),
    }
}

#[test]
fn without_disk_a_mount_is_unchecked_never_watched_and_never_nudged() {
    let start = Instant::now();
    let mut index = MountIndex::new(KubeletRoot::new("/k"), DEFAULT_THRESHOLDS).without_disk();
    let actions = index.upsert_pod(pod("u1", "edge-tls", None), None, start);
    assert!(actions.is_empty(), "{actions:?}");
    // The Secret is still watched (the API side is all there is); no directory is.
    assert_eq!(index.wanted_secrets(), BTreeSet::from([key("edge-tls")]));
    assert!(index.volume_paths().is_empty());
    // Nothing on disk to wait for: readiness depends on the API alone.
    assert!(index.disk_scanned());
    index.secret_observed(&key("edge-tls"), Some(view("edge-tls", "1", "a")), start);
    index.secret_observed(&key("edge-tls"), Some(view("edge-tls", "2", "b")), start);
    // Long past nudge.after and stuckAfter: no nudge, no stuck Event, no lag.
    let later = start + Duration::from_secs(3600);
    assert!(index.tick(later).is_empty());
    assert_eq!(index.next_deadline(), None);
    assert!(index.lagging_volumes("u1").is_empty());
    let [status] = &index.status(later)[..] else {
        panic!("one mount expected");
    };
    assert_eq!(status.state, "unchecked");
    assert_eq!(status.lag_seconds, None);
    assert_eq!(index.count_by_state()[&MountState::Unchecked], 1);
    // A missing Secret is known from the API alone and still reported as such.
    index.secret_observed(&key("edge-tls"), None, later);
    assert_eq!(index.status(later)[0].state, "secret_missing");
}

#[test]
fn a_pod_brings_its_secret_watches_and_volume_dirs_and_takes_them_away() {
    let now = Instant::now();
    let mut index = MountIndex::new(KubeletRoot::new("/k"), DEFAULT_THRESHOLDS);
    index.upsert_pod(pod("u1", "edge-tls", None), None, now);
    assert_eq!(index.wanted_secrets(), BTreeSet::from([key("edge-tls")]));
    let path = PathBuf::from("/k/pods/u1/volumes/kubernetes.io~secret/tls");
    assert_eq!(index.volume_paths(), BTreeSet::from([path.clone()]));
    assert!(!index.secrets_synced());
    assert!(!index.disk_scanned());

    index.secret_observed(&key("edge-tls"), Some(view("edge-tls", "1", "a")), now);
    index.disk_observed(&path, disk("a"), now);
    assert!(index.secrets_synced() && index.disk_scanned());
    assert_eq!(index.count_by_state()[&MountState::InSync], 1);
    let status = index.status(now);
    assert_eq!(status[0].state, "in_sync");
    assert_eq!(status[0].secrets[0].resource_version.as_deref(), Some("1"));
    assert_eq!(status[0].containers, vec!["nginx"]);

    index.remove_pod("u1");
    assert!(index.wanted_secrets().is_empty());
    assert!(index.volume_paths().is_empty());
}

#[test]
fn a_pod_updated_to_fewer_mounts_loses_them_and_its_neighbours_keep_theirs() {
    let now = Instant::now();
    let mut index = MountIndex::new(KubeletRoot::new("/k"), DEFAULT_THRESHOLDS);
    for (uid, secret) in [("u0", "a-tls"), ("u1", "b-tls"), ("u2", "c-tls")] {
        index.upsert_pod(pod(uid, secret, None), None, now);
    }
    // u1's profile now watches only its exporter, which mounts nothing.
    index.upsert_pod(pod("u1", "b-tls", None), Some(vec!["exporter".into()]), now);
    let paths = |uids: &[&str]| -> BTreeSet<PathBuf> {
        uids.iter()
            .map(|uid| PathBuf::from(format!("/k/pods/{uid}/volumes/kubernetes.io~secret/tls")))
            .collect()
    };
    assert_eq!(index.volume_paths(), paths(&["u0", "u2"]));
    assert_eq!(
        index.wanted_secrets(),
        BTreeSet::from([key("a-tls"), key("c-tls")])
    );
    assert_eq!(index.mount_count(), 2);
}

#[test]
fn a_secret_update_reaches_exactly_the_mounts_that_still_use_it() {
    let now = Instant::now();
    let mut index = MountIndex::new(KubeletRoot::new("/k"), DEFAULT_THRESHOLDS);
    index.upsert_pod(pod("u1", "shared-tls", None), None, now);
    index.upsert_pod(pod("u2", "shared-tls", None), None, now);
    index.upsert_pod(pod("u3", "other-tls", None), None, now);
    assert_eq!(
        index.pods_of_secret(&key("shared-tls")),
        BTreeSet::from(["u1".to_string(), "u2".to_string()])
    );
    for path in index.volume_paths() {
        index.disk_observed(&path, disk("a"), now);
    }
    index.secret_observed(&key("other-tls"), Some(view("other-tls", "1", "a")), now);
    index.secret_observed(&key("shared-tls"), Some(view("shared-tls", "1", "a")), now);
    assert_eq!(index.count_by_state()[&MountState::InSync], 3);

    index.remove_pod("u1");
    assert_eq!(
        index.pods_of_secret(&key("shared-tls")),
        BTreeSet::from(["u2".to_string()])
    );
    index.secret_observed(&key("shared-tls"), Some(view("shared-tls", "2", "b")), now);
    assert_eq!(index.count_by_state()[&MountState::Pending], 1);
    assert_eq!(index.count_by_state()[&MountState::InSync], 1);

    index.remove_pod("u2");
    assert!(index.pods_of_secret(&key("shared-tls")).is_empty());
    assert!(
        index
            .secret_observed(&key("shared-tls"), Some(view("shared-tls", "3", "c")), now)
            .is_empty()
    );
}

#[test]
fn a_container_filter_leaves_unwatched_consumers_out() {
    let now = Instant::now();
    let mut index = MountIndex::new(KubeletRoot::new("/k"), DEFAULT_THRESHOLDS);
    index.upsert_pod(
        pod("u1", "edge-tls", None),
        Some(vec!["exporter".into()]),
        now,
    );
    assert_eq!(index.mount_count(), 0);
    assert!(index.wanted_secrets().is_empty());
}

#[test]
fn a_secret_update_makes_the_mount_pending_and_the_deadline_drives_the_nudge() {
    let now = Instant::now();
    let mut index = MountIndex::new(KubeletRoot::new("/k"), DEFAULT_THRESHOLDS);
    index.upsert_pod(pod("u1", "edge-tls", None), None, now);
    let path = index.volume_paths().into_iter().next().unwrap();
    index.secret_observed(&key("edge-tls"), Some(view("edge-tls", "1", "a")), now);
    index.disk_observed(&path, disk("a"), now);
    index.secret_observed(&key("edge-tls"), Some(view("edge-tls", "2", "b")), now);
    assert_eq!(index.count_by_state()[&MountState::Pending], 1);
    let due = index.next_deadline().unwrap();
    assert_eq!(due, now + DEFAULT_THRESHOLDS.nudge_after);
    assert!(
        index
            .tick(now + DEFAULT_THRESHOLDS.nudge_after / 2)
            .is_empty()
    );
    let actions = index.tick(due);
    assert!(
        matches!(actions.as_slice(), [Action::Nudge { volumes, .. }] if volumes[0].attempt == 1),
        "{actions:?}"
    );
}

/// Pod `uid` mounting Secret `tls-<n>` as volume `tls-<n>` for each n.
fn pod_with_volumes(uid: &str, n: usize) -> ControllerPod {
    let mut pod = pod(uid, "tls-0", None);
    let template = pod.volumes[0].clone();
    pod.volumes = (0..n)
        .map(|i| {
            let mut volume = template.clone();
            volume.name = format!("tls-{i}");
            volume.sources[0].secret = format!("tls-{i}");
            volume
        })
        .collect();
    pod.containers[0].mounts = (0..n)
        .map(|i| VolumeMountInfo {
            volume: format!("tls-{i}"),
            mount_path: format!("/etc/tls-{i}"),
            sub_path: None,
        })
        .collect();
    pod
}

fn nudged_volumes(actions: &[Action]) -> Vec<(String, Vec<String>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Nudge { pod, volumes } => Some((
                pod.uid.clone(),
                volumes.iter().map(|v| v.volume.clone()).collect(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn secrets_of_one_pod_renewed_within_nudge_after_cost_one_nudge() {
    let now = Instant::now();
    let ms = Duration::from_millis;
    let mut index = MountIndex::new(KubeletRoot::new("/k"), DEFAULT_THRESHOLDS);
    index.upsert_pod(pod_with_volumes("u1", 3), None, now);
    index.upsert_pod(pod_with_volumes("u2", 1), None, now);
    let paths: Vec<PathBuf> = index.volume_paths().into_iter().collect();
    assert_eq!(paths.len(), 4);
    for i in 0..3 {
        let name = format!("tls-{i}");
        index.secret_observed(&key(&name), Some(view(&name, "1", "a")), now);
    }
    for path in &paths {
        index.disk_observed(path, disk("a"), now);
    }
    assert_eq!(index.count_by_state()[&MountState::InSync], 4);
    // cert-manager renews tls-0 and tls-1 (tls-0 is also u2's) 50 ms apart; tls-2 stays.
    index.secret_observed(&key("tls-0"), Some(view("tls-0", "2", "b")), now);
    index.secret_observed(&key("tls-1"), Some(view("tls-1", "2", "b")), now + ms(50));
    let due = index.next_deadline().unwrap();
    assert_eq!(due, now + DEFAULT_THRESHOLDS.nudge_after);
    let actions = index.tick(due);
    assert_eq!(
        nudged_volumes(&actions),
        vec![
            (
                "u1".to_string(),
                vec!["tls-0".to_string(), "tls-1".to_string()]
            ),
            ("u2".to_string(), vec!["tls-0".to_string()]),
        ],
        "one nudge per pod, the in-sync volume left out: {actions:?}"
    );
    // tls-1 went with tls-0: nothing is left for its own deadline, and the loop is not woken
    // for it.
    assert!(index.next_deadline() > Some(now + ms(50) + DEFAULT_THRESHOLDS.nudge_after));
    assert!(
        index
            .tick(now + ms(50) + DEFAULT_THRESHOLDS.nudge_after)
            .is_empty()
    );
}

#[test]
fn a_restarted_agent_counts_a_pod_wide_nudge_for_every_volume_it_named() {
    let now = Instant::now();
    let limits = DEFAULT_THRESHOLDS;
    let mut first = MountIndex::new(KubeletRoot::new("/k"), limits);
    let mut pod = pod_with_volumes("u1", 2);
    first.upsert_pod(pod.clone(), None, now);
    for i in 0..2 {
        let name = format!("tls-{i}");
        first.secret_observed(&key(&name), Some(view(&name, "2", "b")), now);
    }
    for path in first.volume_paths() {
        first.disk_observed(&path, disk("a"), now);
    }
    let actions = first.tick(now + limits.nudge_after);
    let [Action::Nudge { volumes, .. }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(volumes.len(), 2);
    pod.resync_annotation = Some(crate::reconcile::mount::nudge_annotation(volumes));

    // A new run sees the annotation on the pod: one nudge left per volume, still together.
    let mut second = MountIndex::new(KubeletRoot::new("/k"), limits);
    let later = now + Duration::from_secs(30);
    second.upsert_pod(pod, None, later);
    for i in 0..2 {
        let name = format!("tls-{i}");
        second.secret_observed(&key(&name), Some(view(&name, "2", "b")), later);
    }
    for path in second.volume_paths() {
        second.disk_observed(&path, disk("a"), later);
    }
    let retry = second.tick(later + limits.nudge_retry_after);
    let [Action::Nudge { volumes, .. }] = retry.as_slice() else {
        panic!("{retry:?}")
    };
    assert_eq!(
        volumes.iter().map(|v| v.attempt).collect::<Vec<_>>(),
        vec![2, 2]
    );
    for t in [5, 20, 60] {
        assert!(
            second.tick(later + Duration::from_secs(t)).is_empty(),
            "never a third nudge"
        );
    }
}

#[test]
fn while_the_pod_watch_is_down_no_action_is_taken() {
    let now = Instant::now();
    let mut index = MountIndex::new(KubeletRoot::new("/k"), DEFAULT_THRESHOLDS);
    index.upsert_pod(pod("u1", "edge-tls", None), None, now);
    let path = index.volume_paths().into_iter().next().unwrap();
    index.secret_observed(&key("edge-tls"), Some(view("edge-tls", "1", "a")), now);
    index.disk_observed(&path, disk("old"), now);
    index.set_pods_healthy(false, now);
    assert!(index.tick(now + Duration::from_secs(300)).is_empty());
    assert_eq!(index.next_deadline(), None);
}

#[test]
fn a_pods_secrets_count_for_a_restart_only_once_every_one_has_listed() {
    let now = Instant::now();
    let mut index = MountIndex::new(KubeletRoot::new("/k"), DEFAULT_THRESHOLDS);
    let mut two = pod("u1", "a-tls", None);
    let mut second = two.volumes[0].clone();
    second.name = "tls-b".into();
    second.sources[0].secret = "b-tls".into();
    two.volumes.push(second);
    two.containers[0].mounts.push(VolumeMountInfo {
        volume: "tls-b".into(),
        mount_path: "/etc/tls-b".into(),
        sub_path: None,
    });
    index.upsert_pod(two, None, now);
    assert!(index.secrets_of_pod_when_synced("u1").is_none());
    index.secret_observed(&key("a-tls"), Some(view("a-tls", "1", "a")), now);
    assert!(
        index.secrets_of_pod_when_synced("u1").is_none(),
        "b-tls has not listed: a partial set would give another value than other nodes'"
    );
    assert_eq!(index.secrets_of_pod("u1").len(), 1);
    index.secret_observed(&key("b-tls"), None, now);
    let synced = index.secrets_of_pod_when_synced("u1").unwrap();
    assert_eq!(
        synced.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["a-tls"],
        "a Secret that does not exist is left out"
    );
}
