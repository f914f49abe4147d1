//! Tests of [`super`].

#![allow(clippy::unwrap_used)]

use super::*;
use crate::expected::{ExpectedFiles, SecretVersion};

const LIMITS: Thresholds = Thresholds {
    nudge_enabled: true,
    nudge_after: Duration::from_secs(2),
    nudge_retry_after: Duration::from_secs(2),
    stuck_after: Duration::from_secs(10),
};

/// Instants relative to a base, which may lie in the past (negative seconds).
struct Clock(Instant);
impl Clock {
    fn at(&self, secs: f64) -> Instant {
        if secs >= 0.0 {
            self.0 + Duration::from_secs_f64(secs)
        } else {
            self.0 - Duration::from_secs_f64(-secs)
        }
    }
}

fn pod() -> PodRef {
    PodRef {
        namespace: "ingress".into(),
        name: "edge-0".into(),
        uid: "u1".into(),
    }
}

fn mount() -> Mount {
    Mount::new(MountSpec {
        pod: pod(),
        volume: "tls".into(),
        subpath_containers: vec![],
        subpath_only: false,
    })
}

fn expected(rv: &str, digest: &str) -> Input {
    Input::Expected(Expected::Files(ExpectedFiles {
        files: BTreeMap::from([("tls.crt".to_string(), digest.to_string())]),
        partial: false,
        versions: vec![SecretVersion {
            name: "edge-tls".into(),
            uid: "s1".into(),
            resource_version: rv.into(),
        }],
    }))
}

fn disk(generation: &str, digest: &str) -> Input {
    Input::Disk(DiskView::Files {
        generation: Some(generation.into()),
        files: BTreeMap::from([("tls.crt".to_string(), Some(digest.to_string()))]),
    })
}

fn reasons(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Nudge { volumes, .. } => volumes
                .iter()
                .map(|v| format!("nudge#{}", v.attempt))
                .collect::<Vec<_>>()
                .join(","),
            Action::Event { reason, .. } => reason.as_str().to_string(),
            Action::ObserveLag { seconds } => format!("lag {seconds:.1}"),
            other => format!("{other:?}"),
        })
        .collect()
}

/// A mount in sync on version 1, then the API moves to version 2 at t=0.
fn lagging(clock: &Clock) -> Mount {
    let mut m = mount();
    m.step(expected("1", "a"), clock.at(-100.0), &LIMITS);
    m.step(disk("..g1", "a"), clock.at(-100.0), &LIMITS);
    assert_eq!(m.state(), MountState::InSync);
    assert!(
        m.step(expected("2", "b"), clock.at(0.0), &LIMITS)
            .is_empty()
    );
    assert_eq!(m.state(), MountState::Pending);
    m
}

#[test]
fn unknown_until_both_api_and_disk_are_seen() {
    let clock = Clock(Instant::now() + Duration::from_secs(1000));
    let mut m = mount();
    assert_eq!(m.state(), MountState::Unknown);
    m.step(expected("1", "a"), clock.at(0.0), &LIMITS);
    assert_eq!(m.state(), MountState::Unknown);
    assert!(m.step(disk("..g1", "a"), clock.at(0.0), &LIMITS).is_empty());
    assert_eq!(m.state(), MountState::InSync);
}

#[test]
fn pending_becomes_nudged_after_nudge_after() {
    let clock = Clock(Instant::now() + Duration::from_secs(1000));
    let mut m = lagging(&clock);
    assert_eq!(m.next_deadline(&LIMITS), Some(clock.at(2.0)));
    assert!(m.step(Input::Tick, clock.at(1.9), &LIMITS).is_empty());
    let actions = m.step(Input::Tick, clock.at(2.0), &LIMITS);
    assert_eq!(reasons(&actions), vec!["nudge#1"]);
    let Action::Nudge { pod: p, volumes } = &actions[0] else {
        unreachable!()
    };
    assert_eq!(p, &pod());
    let Expected::Files(files) = m.expected() else {
        unreachable!()
    };
    assert_eq!(
        nudge_annotation(volumes),
        format!("{}/1", files.version_key())
    );
    assert_eq!(m.state(), MountState::Nudged);
}

#[test]
fn a_remount_with_old_content_gets_one_more_nudge_and_never_a_third() {
    let clock = Clock(Instant::now() + Duration::from_secs(1000));
    let mut m = lagging(&clock);
    m.step(Input::Tick, clock.at(2.0), &LIMITS);
    // kubelet remounted, but with what its own watch had: still the old content.
    assert!(m.step(disk("..g2", "a"), clock.at(2.5), &LIMITS).is_empty());
    assert_eq!(m.next_deadline(&LIMITS), Some(clock.at(4.0)));
    assert_eq!(
        reasons(&m.step(Input::Tick, clock.at(4.0), &LIMITS)),
        vec!["nudge#2"]
    );
    assert_eq!(
        m.next_deadline(&LIMITS),
        Some(clock.at(10.0)),
        "only stuck is left"
    );
    assert!(m.step(Input::Tick, clock.at(9.0), &LIMITS).is_empty());
}

#[test]
fn a_new_secret_version_earns_new_nudges() {
    let clock = Clock(Instant::now() + Duration::from_secs(1000));
    let mut m = lagging(&clock);
    m.step(Input::Tick, clock.at(2.0), &LIMITS);
    m.step(Input::Tick, clock.at(4.0), &LIMITS);
    let actions = m.step(expected("3", "c"), clock.at(5.0), &LIMITS);
    assert_eq!(
        reasons(&actions),
        vec!["nudge#1"],
        "behind for > nudge.after already"
    );
}

#[test]
fn stuck_after_stuck_after_with_exactly_one_event_then_recovered() {
    let clock = Clock(Instant::now() + Duration::from_secs(1000));
    let mut m = lagging(&clock);
    m.step(Input::Tick, clock.at(2.0), &LIMITS);
    m.step(Input::Tick, clock.at(4.0), &LIMITS);
    let actions = m.step(Input::Tick, clock.at(10.0), &LIMITS);
    assert_eq!(reasons(&actions), vec!["SecretMountStuck"]);
    let Action::Event { note, .. } = &actions[0] else {
        unreachable!()
    };
    assert!(
        note.contains("edge-tls@2") && note.contains("10.0s"),
        "{note}"
    );
    assert_eq!(m.state(), MountState::Stuck);
    assert_eq!(m.next_deadline(&LIMITS), None, "nothing more to wait for");
    for t in [11.0, 20.0, 300.0] {
        assert!(m.step(Input::Tick, clock.at(t), &LIMITS).is_empty());
    }
    let actions = m.step(disk("..g3", "b"), clock.at(301.0), &LIMITS);
    assert_eq!(reasons(&actions), vec!["SecretMountRecovered", "lag 301.0"]);
    assert_eq!(m.state(), MountState::InSync);
}

#[test]
fn catching_up_records_the_lag_and_raises_no_event() {
    let clock = Clock(Instant::now() + Duration::from_secs(1000));
    let mut m = lagging(&clock);
    let actions = m.step(disk("..g2", "b"), clock.at(0.7), &LIMITS);
    assert_eq!(reasons(&actions), vec!["lag 0.7"]);
    assert_eq!(m.state(), MountState::InSync);
    assert_eq!(m.next_deadline(&LIMITS), None);
}

#[test]
fn with_nudges_disabled_it_only_waits_and_reports_stuck() {
    let clock = Clock(Instant::now() + Duration::from_secs(1000));
    let limits = Thresholds {
        nudge_enabled: false,
        ..LIMITS
    };
    let mut m = lagging(&clock);
    assert_eq!(m.next_deadline(&limits), Some(clock.at(10.0)));
    assert!(m.step(Input::Tick, clock.at(5.0), &limits).is_empty());
    assert_eq!(m.state(), MountState::Pending);
    assert_eq!(
        reasons(&m.step(Input::Tick, clock.at(10.0), &limits)),
        vec!["SecretMountStuck"]
    );
}

#[test]
fn while_the_api_is_unhealthy_nothing_is_raised() {
    let clock = Clock(Instant::now() + Duration::from_secs(1000));
    let mut m = lagging(&clock);
    assert!(
        m.step(Input::ApiHealthy(false), clock.at(1.0), &LIMITS)
            .is_empty()
    );
    assert_eq!(m.next_deadline(&LIMITS), None);
    for t in [2.0, 10.0, 60.0] {
        assert!(m.step(Input::Tick, clock.at(t), &LIMITS).is_empty());
    }
    // Disk keeps being watched: catching up still counts.
    let mut other = lagging(&clock);
    other.step(Input::ApiHealthy(false), clock.at(1.0), &LIMITS);
    assert_eq!(
        reasons(&other.step(disk("..g2", "b"), clock.at(3.0), &LIMITS)),
        vec!["lag 3.0"]
    );
    // Back, still behind after 60 s: the nudge goes first, then stuck is justified.
    let actions = m.step(Input::ApiHealthy(true), clock.at(61.0), &LIMITS);
    assert_eq!(reasons(&actions), vec!["nudge#1", "SecretMountStuck"]);
}

#[test]
fn a_missing_required_secret_is_its_own_state() {
    let clock = Clock(Instant::now() + Duration::from_secs(1000));
    let mut m = lagging(&clock);
    let actions = m.step(
        Input::Expected(Expected::MountFails {
            reason: "gone".into(),
        }),
        clock.at(1.0),
        &LIMITS,
    );
    assert!(actions.is_empty());
    assert_eq!(m.state(), MountState::SecretMissing);
    assert!(m.step(Input::Tick, clock.at(100.0), &LIMITS).is_empty());
    // Recreated with the content already on disk.
    m.step(expected("9", "a"), clock.at(101.0), &LIMITS);
    assert_eq!(m.state(), MountState::InSync);
}

#[test]
fn an_unreadable_volume_is_its_own_state() {
    let clock = Clock(Instant::now() + Duration::from_secs(1000));
    let mut m = lagging(&clock);
    let unreadable = Input::Disk(DiskView::Unreadable {
        reason: "EACCES".into(),
    });
    assert!(m.step(unreadable, clock.at(1.0), &LIMITS).is_empty());
    assert_eq!(m.state(), MountState::Unreadable);
    assert!(m.step(Input::Tick, clock.at(50.0), &LIMITS).is_empty());
}

#[test]
fn subpath_consumers_are_reported_once_and_subpath_only_mounts_never_nudge() {
    let clock = Clock(Instant::now() + Duration::from_secs(1000));
    let mut m = Mount::new(MountSpec {
        pod: pod(),
        volume: "tls".into(),
        subpath_containers: vec!["nginx".into()],
        subpath_only: true,
    });
    let actions = m.step(expected("1", "a"), clock.at(0.0), &LIMITS);
    assert_eq!(reasons(&actions), vec!["SubPathNeverUpdates"]);
    assert!(m.step(disk("..g1", "a"), clock.at(0.0), &LIMITS).is_empty());
    assert!(
        m.step(expected("2", "b"), clock.at(1.0), &LIMITS)
            .is_empty()
    );
    assert_eq!(m.state(), MountState::NeverUpdates);
    for t in [3.0, 11.0, 100.0] {
        assert!(m.step(Input::Tick, clock.at(t), &LIMITS).is_empty());
    }
    assert_eq!(m.next_deadline(&LIMITS), None);
}

#[test]
fn a_restart_counts_the_nudges_a_previous_run_left_on_the_pod() {
    let clock = Clock(Instant::now() + Duration::from_secs(1000));
    let mut probe = mount();
    probe.step(expected("2", "b"), clock.at(0.0), &LIMITS);
    let Expected::Files(files) = probe.expected() else {
        unreachable!()
    };
    let key = files.version_key();
    // The annotation is seen before the Secret is listed, as on a restart.
    let mut m = mount();
    let annotated = Input::ResyncAnnotation(Some(format!("{key}/1")));
    m.step(annotated, clock.at(0.0), &LIMITS);
    m.step(expected("2", "b"), clock.at(0.0), &LIMITS);
    m.step(disk("..g1", "a"), clock.at(0.0), &LIMITS);
    assert!(m.step(Input::Tick, clock.at(1.0), &LIMITS).is_empty());
    assert_eq!(
        reasons(&m.step(Input::Tick, clock.at(2.0), &LIMITS)),
        vec!["nudge#2"]
    );
    assert_eq!(m.next_deadline(&LIMITS), Some(clock.at(10.0)));

    let mut done = mount();
    let annotated = Input::ResyncAnnotation(Some(format!("{key}/2")));
    done.step(annotated, clock.at(0.0), &LIMITS);
    done.step(expected("2", "b"), clock.at(0.0), &LIMITS);
    done.step(disk("..g1", "a"), clock.at(0.0), &LIMITS);
    for t in [2.0, 5.0, 9.0] {
        assert!(
            done.step(Input::Tick, clock.at(t), &LIMITS).is_empty(),
            "no third nudge"
        );
    }

    // An annotation for another version does not count.
    let mut other = mount();
    let annotated = Input::ResyncAnnotation(Some("0000/2".into()));
    other.step(annotated, clock.at(0.0), &LIMITS);
    other.step(expected("2", "b"), clock.at(0.0), &LIMITS);
    other.step(disk("..g1", "a"), clock.at(0.0), &LIMITS);
    assert_eq!(
        reasons(&other.step(Input::Tick, clock.at(2.0), &LIMITS)),
        vec!["nudge#1"]
    );
    assert_eq!(parse_nudge_annotation("garbage"), None);
    assert_eq!(parse_nudge_annotation("a/1+garbage"), None);

    // A pod-wide annotation that asked for this volume among others counts too.
    let mut joined = mount();
    let annotated = Input::ResyncAnnotation(Some(format!("0000/1+{key}/2")));
    joined.step(annotated, clock.at(0.0), &LIMITS);
    joined.step(expected("2", "b"), clock.at(0.0), &LIMITS);
    joined.step(disk("..g1", "a"), clock.at(0.0), &LIMITS);
    for t in [2.0, 5.0, 9.0] {
        assert!(
            joined.step(Input::Tick, clock.at(t), &LIMITS).is_empty(),
            "no third nudge"
        );
    }
}

#[test]
fn the_annotation_names_each_volume_s_versions_sorted_so_equal_requests_read_equal() {
    let nudge = |volume: &str, version: &str, attempt| VolumeNudge {
        volume: volume.into(),
        version: version.into(),
        attempt,
    };
    let one = nudge_annotation(&[nudge("tls", "ab12", 1)]);
    assert_eq!(
        one, "ab12/1",
        "one volume reads as before the pod-wide nudge"
    );
    let ab = nudge_annotation(&[nudge("a", "ff00", 1), nudge("b", "0011", 2)]);
    let ba = nudge_annotation(&[nudge("b", "0011", 2), nudge("a", "ff00", 1)]);
    assert_eq!(ab, "0011/2+ff00/1");
    assert_eq!(ab, ba);
    assert_eq!(
        parse_nudge_annotation(&ab),
        Some(vec![("0011".into(), 2), ("ff00".into(), 1)])
    );
}

#[test]
fn only_a_mount_waiting_for_its_first_nudge_joins_another_volume_s() {
    let clock = Clock(Instant::now() + Duration::from_secs(1000));
    let mut in_sync = mount();
    in_sync.step(expected("1", "a"), clock.at(0.0), &LIMITS);
    in_sync.step(disk("..g1", "a"), clock.at(0.0), &LIMITS);
    assert_eq!(in_sync.join_nudge(clock.at(0.5), &LIMITS), None);

    let mut m = lagging(&clock);
    let joined = m.join_nudge(clock.at(0.5), &LIMITS).unwrap();
    assert_eq!((joined.volume.as_str(), joined.attempt), ("tls", 1));
    assert_eq!(m.state(), MountState::Nudged);
    assert_eq!(
        m.join_nudge(clock.at(0.6), &LIMITS),
        None,
        "a retry keeps its own time"
    );
    // The retry counts from the joined nudge.
    assert_eq!(m.next_deadline(&LIMITS), Some(clock.at(2.5)));

    let off = Thresholds {
        nudge_enabled: false,
        ..LIMITS
    };
    assert_eq!(lagging(&clock).join_nudge(clock.at(0.5), &off), None);
    let mut unhealthy = lagging(&clock);
    unhealthy.step(Input::ApiHealthy(false), clock.at(0.1), &LIMITS);
    assert_eq!(unhealthy.join_nudge(clock.at(0.5), &LIMITS), None);

    // Nudged for version 2, then version 3 arrives before the files: its first nudge is
    // already due (the lag started with version 2), so it goes at once, and nothing is left
    // to join.
    let mut renewed = lagging(&clock);
    assert_eq!(
        reasons(&renewed.step(Input::Tick, clock.at(2.0), &LIMITS)),
        vec!["nudge#1"]
    );
    assert_eq!(
        reasons(&renewed.step(expected("3", "c"), clock.at(2.1), &LIMITS)),
        vec!["nudge#1"]
    );
    assert_eq!(renewed.join_nudge(clock.at(2.2), &LIMITS), None);
}

#[test]
fn an_immediate_first_nudge_waits_retry_after_for_the_second() {
    let clock = Clock(Instant::now() + Duration::from_secs(1000));
    let limits = Thresholds {
        nudge_after: Duration::ZERO,
        nudge_retry_after: Duration::from_secs(2),
        ..LIMITS
    };
    let mut m = lagging(&clock);
    assert_eq!(
        reasons(&m.step(Input::Tick, clock.at(0.0), &limits)),
        vec!["nudge#1"]
    );
    // The loop's next turn (or the echo of our own annotation) must not send the second one.
    assert!(m.step(Input::Tick, clock.at(0.001), &limits).is_empty());
    assert_eq!(m.next_deadline(&limits), Some(clock.at(2.0)));
    // kubelet remounted with the old content: the second nudge, retryAfter after the first.
    assert!(m.step(disk("..g2", "a"), clock.at(0.9), &limits).is_empty());
    assert_eq!(
        reasons(&m.step(Input::Tick, clock.at(2.0), &limits)),
        vec!["nudge#2"]
    );
}

#[test]
fn a_retry_due_after_the_stuck_report_still_goes_out() {
    let clock = Clock(Instant::now() + Duration::from_secs(1000));
    let limits = Thresholds {
        nudge_after: Duration::from_secs(1),
        nudge_retry_after: Duration::from_secs(3),
        stuck_after: Duration::from_secs(3),
        ..LIMITS
    };
    let mut m = lagging(&clock);
    assert_eq!(
        reasons(&m.step(Input::Tick, clock.at(1.0), &limits)),
        vec!["nudge#1"]
    );
    assert_eq!(m.next_deadline(&limits), Some(clock.at(3.0)));
    assert_eq!(
        reasons(&m.step(Input::Tick, clock.at(3.0), &limits)),
        vec!["SecretMountStuck"]
    );
    // Stuck is reported; the retry (first nudge + retryAfter = 4 s) is still scheduled.
    assert_eq!(m.next_deadline(&limits), Some(clock.at(4.0)));
    assert_eq!(
        reasons(&m.step(Input::Tick, clock.at(4.0), &limits)),
        vec!["nudge#2"]
    );
    assert_eq!(m.next_deadline(&limits), None);
}
