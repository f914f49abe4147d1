//! Tests of [`super`].

#![allow(clippy::unwrap_used)]

use super::*;

const LIMITS: ReloadLimits = ReloadLimits {
    min_interval: Duration::from_secs(5),
    verify_timeout: Duration::from_secs(10),
    wait_for_others: Duration::from_secs(60),
    expiry_warn_before: Duration::from_secs(21 * 86_400),
    max_attempts: 3,
    verify_interval: Duration::from_secs(300),
    mismatch_after: Duration::from_secs(30),
};
const NOW_UNIX: i64 = 1_800_000_000;

fn base() -> Instant {
    Instant::now() + Duration::from_secs(1000)
}

fn ms(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

fn leaf(fp: &str) -> ExpectedLeaf {
    ExpectedLeaf {
        file: "tls.crt".into(),
        fingerprint: fp.into(),
        dns_names: vec!["a.example".into(), "b.example".into()],
        not_after: NOW_UNIX + 90 * 86_400,
    }
}

fn valid(fp: &str) -> ReloadInput {
    ReloadInput::NewMaterial {
        volume: "tls".into(),
        generation: "..g2".into(),
        material: Material::Valid {
            leaves: vec![leaf(fp)],
        },
    }
}

fn key(sni: Option<String>) -> ProbeKey {
    ProbeKey {
        sni,
        endpoint: "10.0.0.7:443".into(),
    }
}

fn served(fp: &str, not_after: i64) -> ReloadInput {
    let leaf = ServedLeaf {
        fingerprint: fp.into(),
        not_after: Some(not_after),
        subject: String::new(),
    };
    ReloadInput::Probed(ProbeRound {
        served: [
            None,
            Some("a.example".to_string()),
            Some("b.example".to_string()),
        ]
        .into_iter()
        .map(|n| (key(n), Ok(leaf.clone())))
        .collect(),
        at_unix: NOW_UNIX,
    })
}

/// A probe round where each SNI name serves its own leaf (and no SNI the first one's).
fn served_by_host(by_host: &[(&str, &str)]) -> ReloadInput {
    let leaf = |fp: &str| ServedLeaf {
        fingerprint: fp.into(),
        not_after: Some(NOW_UNIX + 90 * 86_400),
        subject: String::new(),
    };
    let mut served: BTreeMap<ProbeKey, Result<ServedLeaf, String>> = by_host
        .iter()
        .map(|(host, fp)| (key(Some((*host).to_string())), Ok(leaf(fp))))
        .collect();
    if let Some((_, fp)) = by_host.first() {
        served.insert(key(None), Ok(leaf(fp)));
    }
    ReloadInput::Probed(ProbeRound {
        served,
        at_unix: NOW_UNIX,
    })
}

fn names(actions: &[Decision]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Decision::Reload { attempt, .. } => format!("reload#{attempt}"),
            Decision::Probe { names, .. } => format!("probe {}", names.join(",")),
            Decision::Event { reason, .. } => reason.as_str().to_string(),
            Decision::Finished { result, .. } => format!("finished {}", result.label()),
        })
        .collect()
}

/// The confirming rounds after a first round that served `fp` at `at_ms`: returns the actions
/// of the last one.
fn confirm(r: &mut PodReload, t0: Instant, at_ms: u64, fp: &str, not_after: i64) -> Vec<Decision> {
    let mut last = Vec::new();
    let mut at = at_ms;
    for _ in 1..CONFIRM_ROUNDS {
        at += CONFIRM_GAP.as_millis() as u64;
        assert_eq!(r.next_deadline(), Some(ms(t0, at)));
        assert!(matches!(
            r.step(ReloadInput::Tick, ms(t0, at))[..],
            [Decision::Probe { .. }]
        ));
        last = r.step(served(fp, not_after), ms(t0, at));
    }
    last
}

/// `done` reports a verified reload that took `served_ms` (swap → first served round).
fn assert_verified_after(done: &[Decision], served_ms: u64) {
    assert_eq!(names(done), vec!["ControllerReloaded", "finished verified"]);
    let Decision::Finished { seconds, .. } = done[1] else {
        unreachable!()
    };
    assert!(
        (seconds - served_ms as f64 / 1000.0).abs() < 1e-6,
        "swap → first round of the run that held, not → confirmed: {seconds}"
    );
}

fn lagging(volumes: &[&str]) -> ReloadInput {
    ReloadInput::Lagging(volumes.iter().map(|v| v.to_string()).collect())
}

#[test]
fn the_volume_that_brought_the_material_does_not_hold_it_back() {
    // Disk ahead of the API (API unreachable, or kubelet faster than our watch): the changed
    // volume itself lags, and disk is what the controller reads.
    let t0 = base();
    let mut r = reloader(ReloadKind::Reload);
    r.step(lagging(&["tls"]), t0);
    assert_eq!(names(&r.step(valid("new"), t0)), vec!["reload#1"]);
}

fn reloader(kind: ReloadKind) -> PodReload {
    PodReload::new(kind, LIMITS, vec![], 7)
}

#[test]
fn valid_material_is_reloaded_probed_and_verified() {
    let t0 = base();
    let first = PROBE_FIRST.as_millis() as u64;
    let mut r = reloader(ReloadKind::Reload);
    assert_eq!(names(&r.step(valid("new"), t0)), vec!["reload#1"]);
    assert_eq!(r.phase_label(), "reloading");
    assert!(r.step(ReloadInput::Reloaded(Ok(())), ms(t0, 2)).is_empty());
    assert_eq!(r.next_deadline(), Some(ms(t0, 2 + first)));
    assert_eq!(
        names(&r.step(ReloadInput::Tick, ms(t0, 2 + first))),
        vec!["probe a.example,b.example"]
    );
    // Still the old leaf: probe again later, backing off.
    assert!(
        r.step(served("old", NOW_UNIX + 86_400 * 90), ms(t0, 4 + first))
            .is_empty()
    );
    let again = 4 + 3 * first;
    assert_eq!(r.next_deadline(), Some(ms(t0, again)));
    assert_eq!(r.served_matches(), Some(false));
    r.step(ReloadInput::Tick, ms(t0, again));
    let served_at = again + 11;
    assert!(
        r.step(served("new", NOW_UNIX + 86_400 * 90), ms(t0, served_at))
            .is_empty(),
        "one round is not proof yet"
    );
    let done = confirm(&mut r, t0, served_at, "new", NOW_UNIX + 86_400 * 90);
    assert_verified_after(&done, served_at);
    assert_eq!(r.last_result(), Some(ReloadResult::Verified));
    assert_eq!(r.served_matches(), Some(true));
    // Nothing left but the periodic check, one verify.interval (±10%) later.
    let verified_at = ms(t0, served_at + 2 * CONFIRM_GAP.as_millis() as u64);
    let next = r.next_deadline().unwrap() - verified_at;
    assert!(
        next >= LIMITS.verify_interval.mul_f64(0.9) && next <= LIMITS.verify_interval.mul_f64(1.1),
        "{next:?}"
    );
}

#[test]
fn an_old_leaf_between_new_ones_restarts_the_confirmation() {
    // nginx right after SIGHUP: new and old workers both accept for a while.
    let t0 = base();
    let mut r = reloader(ReloadKind::Reload);
    r.step(valid("new"), t0);
    r.step(ReloadInput::Reloaded(Ok(())), t0);
    let first = PROBE_FIRST.as_millis() as u64;
    assert_eq!(
        names(&r.step(ReloadInput::Tick, ms(t0, first))),
        vec!["probe a.example,b.example"]
    );
    assert!(
        r.step(served("new", NOW_UNIX + 86_400 * 90), ms(t0, first + 1))
            .is_empty()
    );
    let second = first + 1 + CONFIRM_GAP.as_millis() as u64;
    assert_eq!(r.next_deadline(), Some(ms(t0, second)));
    r.step(ReloadInput::Tick, ms(t0, second));
    assert!(
        r.step(served("old", NOW_UNIX + 86_400 * 90), ms(t0, second))
            .is_empty()
    );
    assert_eq!(r.served_matches(), Some(false));
    assert_eq!(r.phase_label(), "verifying");
    let next = r.next_deadline().unwrap();
    r.step(ReloadInput::Tick, next);
    let at = next.duration_since(t0).as_millis() as u64;
    assert!(
        r.step(served("new", NOW_UNIX + 86_400 * 90), next)
            .is_empty()
    );
    let done = confirm(&mut r, t0, at, "new", NOW_UNIX + 86_400 * 90);
    assert_verified_after(&done, at);
}

#[test]
fn invalid_material_is_withheld_and_never_reloaded() {
    let t0 = base();
    let mut r = reloader(ReloadKind::Reload);
    let invalid = ReloadInput::NewMaterial {
        volume: "tls".into(),
        generation: "..g3".into(),
        material: Material::Invalid {
            reasons: vec!["tls.key: keyMismatch".into()],
        },
    };
    let actions = r.step(invalid, t0);
    assert_eq!(
        names(&actions),
        vec!["InvalidCertificateMaterial", "finished withheld"]
    );
    let Decision::Event { note, .. } = &actions[0] else {
        unreachable!()
    };
    assert!(
        note.contains("keyMismatch") && note.contains("..g3"),
        "{note}"
    );
    assert_eq!(r.next_deadline(), None);
    assert!(r.step(ReloadInput::Tick, ms(t0, 60_000)).is_empty());
}

#[test]
fn a_rotation_touching_several_secrets_costs_one_reload() {
    let t0 = base();
    let mut r = reloader(ReloadKind::Reload);
    r.step(lagging(&["tls", "ca"]), t0);
    assert!(
        r.step(valid("new"), t0).is_empty(),
        "waits for the other volume"
    );
    assert_eq!(r.next_deadline(), Some(t0 + Duration::from_secs(60)));
    assert!(r.step(valid("newer"), ms(t0, 500)).is_empty());
    // The hand-off alone decides nothing; the input it precedes (here a tick) does.
    assert!(r.step(lagging(&[]), ms(t0, 800)).is_empty());
    assert_eq!(r.next_deadline(), Some(ms(t0, 500)));
    assert_eq!(
        names(&r.step(ReloadInput::Tick, ms(t0, 800))),
        vec!["reload#1"]
    );
}

#[test]
fn waiting_for_other_volumes_is_bounded() {
    let t0 = base();
    let mut r = reloader(ReloadKind::Reload);
    r.step(lagging(&["ca"]), t0);
    r.step(valid("new"), t0);
    assert!(r.step(ReloadInput::Tick, ms(t0, 59_999)).is_empty());
    assert_eq!(
        names(&r.step(ReloadInput::Tick, ms(t0, 60_000))),
        vec!["reload#1"]
    );
}

#[test]
fn reloads_respect_the_minimum_interval() {
    let t0 = base();
    let mut r = reloader(ReloadKind::Reload);
    r.step(valid("v2"), t0);
    r.step(ReloadInput::Reloaded(Ok(())), ms(t0, 1));
    let probe_at = 1 + PROBE_FIRST.as_millis() as u64;
    assert_eq!(r.next_deadline(), Some(ms(t0, probe_at)));
    r.step(ReloadInput::Tick, ms(t0, probe_at));
    r.step(served("v2", NOW_UNIX + 86_400 * 90), ms(t0, probe_at + 4));
    confirm(&mut r, t0, probe_at + 4, "v2", NOW_UNIX + 86_400 * 90);
    assert!(
        r.step(valid("v3"), ms(t0, 1000)).is_empty(),
        "5 s since the last reload"
    );
    assert_eq!(r.next_deadline(), Some(ms(t0, 5001)));
    assert_eq!(
        names(&r.step(ReloadInput::Tick, ms(t0, 5001))),
        vec!["reload#1"]
    );
}

#[test]
fn an_unverified_reload_is_reported_and_retried_with_backoff() {
    let t0 = base();
    let mut r = reloader(ReloadKind::Reload);
    r.step(valid("new"), t0);
    r.step(ReloadInput::Reloaded(Ok(())), t0);
    let mut t = 0;
    while t + 5 < 10_000 {
        t += 5;
        for action in r.step(ReloadInput::Tick, ms(t0, t)) {
            if let Decision::Probe { .. } = action {
                r.step(served("old", NOW_UNIX + 86_400 * 90), ms(t0, t));
            }
        }
    }
    let actions = r.step(ReloadInput::Tick, ms(t0, 10_000));
    assert_eq!(
        names(&actions),
        vec!["ReloadUnverified", "finished unverified"]
    );
    let Decision::Event { note, .. } = &actions[0] else {
        unreachable!()
    };
    assert!(note.contains("(no SNI)=old"), "{note}");
    assert_eq!(r.phase_label(), "retry");
    assert_eq!(
        names(&r.step(ReloadInput::Tick, ms(t0, 15_000))),
        vec!["reload#2"]
    );
}

#[test]
fn a_missing_process_is_its_own_event() {
    let t0 = base();
    let mut r = reloader(ReloadKind::Reload);
    r.step(valid("new"), t0);
    let failure = ReloadFailure {
        kind: FailureKind::ProcessNotFound,
        message: "no process titled nginx: master process in container nginx".into(),
    };
    let actions = r.step(ReloadInput::Reloaded(Err(failure)), ms(t0, 1));
    assert_eq!(
        names(&actions),
        vec!["ControllerProcessNotFound", "finished failed"]
    );
}

#[test]
fn a_withheld_signal_is_reported_verified_only_and_never_retried() {
    let t0 = base();
    let mut r = reloader(ReloadKind::Reload);
    r.step(valid("new"), t0);
    let failure = ReloadFailure {
        kind: FailureKind::SignalWithheld,
        message: "pid 7 (traefik) is not Traefik v3".into(),
    };
    let actions = r.step(ReloadInput::Reloaded(Err(failure)), ms(t0, 1));
    assert_eq!(
        names(&actions),
        vec!["ReloadSignalWithheld", "finished signal_withheld"]
    );
    assert_eq!(r.last_result(), Some(ReloadResult::SignalWithheld));
    assert!(r.last_message().unwrap().contains("not Traefik v3"));
    assert_eq!(r.phase_label(), "verifying");
    // The controller keeps serving the old leaf: a mismatch at the deadline, no retry.
    let mut seen = Vec::new();
    let mut t = 1;
    while t < 20_000 {
        t += 5;
        for action in r.step(ReloadInput::Tick, ms(t0, t)) {
            if let Decision::Probe { .. } = action {
                seen.extend(names(
                    &r.step(served("old", NOW_UNIX + 86_400 * 90), ms(t0, t)),
                ));
            } else {
                seen.extend(names(&[action]));
            }
        }
    }
    assert_eq!(seen, vec!["ServedCertificateMismatch"], "{seen:?}");
    assert_eq!(r.phase_label(), "idle");
    assert_eq!(r.last_result(), Some(ReloadResult::SignalWithheld));
    assert!(r.last_message().unwrap().contains("not Traefik v3"));
    // The next rotation asks again (a restarted controller may be a different program).
    let actions = r.step(valid("newer"), ms(t0, 30_000));
    let later = r.step(ReloadInput::Tick, ms(t0, 40_000));
    assert!(
        names(&actions)
            .iter()
            .chain(names(&later).iter())
            .any(|n| n.starts_with("reload#")),
        "{actions:?} {later:?}"
    );
}

#[test]
fn self_reloading_controllers_are_only_verified() {
    let t0 = base();
    let mut r = reloader(ReloadKind::VerifyOnly);
    assert!(r.step(valid("new"), t0).is_empty());
    let first = PROBE_FIRST.as_millis() as u64;
    assert_eq!(
        names(&r.step(ReloadInput::Tick, ms(t0, first))),
        vec!["probe a.example,b.example"]
    );
    r.step(served("new", NOW_UNIX + 86_400 * 90), ms(t0, first + 1));
    let done = confirm(&mut r, t0, first + 1, "new", NOW_UNIX + 86_400 * 90);
    assert_eq!(
        names(&done),
        vec!["finished verified"],
        "no ControllerReloaded: we did not reload"
    );
}

#[test]
fn api_driven_controllers_that_keep_the_old_leaf_are_a_mismatch() {
    let t0 = base();
    let mut r = reloader(ReloadKind::ApiDriven);
    assert!(
        r.step(valid("ignored"), t0).is_empty(),
        "disk does not matter"
    );
    r.step(
        ReloadInput::ApiLeaves {
            leaves: vec![leaf("api")],
            hosts: None,
        },
        t0,
    );
    let mut t = 0;
    let mut seen = Vec::new();
    while t <= 30_000 {
        for action in r.step(ReloadInput::Tick, ms(t0, t)) {
            match action {
                Decision::Probe { .. } => {
                    seen.extend(names(
                        &r.step(served("stale", NOW_UNIX + 86_400 * 90), ms(t0, t)),
                    ));
                }
                other => seen.extend(names(&[other])),
            }
        }
        t += 5;
    }
    assert_eq!(
        seen,
        vec!["ServedCertificateMismatch", "finished unverified"]
    );
}

#[test]
fn a_served_leaf_close_to_expiry_is_reported_once() {
    let t0 = base();
    let mut r = reloader(ReloadKind::VerifyOnly);
    r.step(valid("new"), t0);
    let first = PROBE_FIRST.as_millis() as u64;
    assert_eq!(r.next_deadline(), Some(ms(t0, first)));
    r.step(ReloadInput::Tick, ms(t0, first));
    let actions = r.step(served("new", NOW_UNIX + 3 * 86_400 + 60), ms(t0, first + 1));
    assert_eq!(names(&actions), vec!["CertificateExpiringSoon"]);
    assert_eq!(
        names(&confirm(
            &mut r,
            t0,
            first + 1,
            "new",
            NOW_UNIX + 3 * 86_400 + 60
        )),
        vec!["finished verified"]
    );
    let Decision::Event { note, .. } = &actions[0] else {
        unreachable!()
    };
    assert!(note.contains("3 day"), "{note}");
    r.step(valid("new"), ms(t0, 1000));
    r.step(ReloadInput::Tick, ms(t0, 1000 + first));
    let again = r.step(served("new", NOW_UNIX + 3 * 86_400), ms(t0, 1001 + first));
    assert!(again.is_empty(), "{:?}", names(&again));
    assert_eq!(
        names(&confirm(
            &mut r,
            t0,
            1001 + first,
            "new",
            NOW_UNIX + 3 * 86_400
        )),
        vec!["finished verified"]
    );
}

#[test]
fn wildcard_names_match_one_label() {
    assert!(names_match("*.example.com", "a.example.com"));
    assert!(!names_match("*.example.com", "a.b.example.com"));
    assert!(names_match("A.example.com", "a.EXAMPLE.com"));
}

// ---------------------------------------------------------------------------------------------
// Between rotations: periodic checks, mismatch episodes, the lost reload, expiry
// ---------------------------------------------------------------------------------------------

fn served_by(fp: &str, not_after: i64, subject: &str) -> ReloadInput {
    let ReloadInput::Probed(mut round) = served(fp, not_after) else {
        unreachable!()
    };
    for leaf in round.served.values_mut().flatten() {
        leaf.subject = subject.into();
    }
    ReloadInput::Probed(round)
}

/// Ticks at `at` and answers the probe it sends with `answer`: the decisions of the answer.
fn check_at(r: &mut PodReload, at: Instant, answer: ReloadInput) -> Vec<Decision> {
    assert_eq!(r.next_deadline(), Some(at), "a check is due then");
    let probe = r.step(ReloadInput::Tick, at);
    assert!(matches!(probe[..], [Decision::Probe { .. }]), "{probe:?}");
    r.step(answer, at)
}

/// The first read of the pod's volume finds `leaf`: a check is due at once.
fn first_read(r: &mut PodReload, leaf: ExpectedLeaf, at: Instant) {
    let decisions = r.step(
        ReloadInput::Baseline {
            material: Material::Valid { leaves: vec![leaf] },
        },
        at,
    );
    assert!(decisions.is_empty(), "{decisions:?}");
    assert_eq!(r.next_deadline(), Some(at));
}

fn notes(actions: &[Decision]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Decision::Event { note, .. } => Some(note.as_str()),
            _ => None,
        })
        .collect()
}

/// An API-driven pod whose controller served the API's leaf "api" from `t0`.
fn verified_api_pod(t0: Instant) -> PodReload {
    let mut r = reloader(ReloadKind::ApiDriven);
    r.step(
        ReloadInput::ApiLeaves {
            leaves: vec![leaf("api")],
            hosts: None,
        },
        t0,
    );
    r.step(ReloadInput::Tick, ms(t0, 25));
    r.step(served("api", NOW_UNIX + 90 * 86_400), ms(t0, 25));
    confirm(&mut r, t0, 25, "api", NOW_UNIX + 90 * 86_400);
    assert_eq!(r.phase_label(), "idle");
    assert_eq!(r.served_matches(), Some(true));
    r
}

#[test]
fn an_idle_pod_is_checked_every_interval_and_a_lasting_mismatch_is_one_event_series_per_episode() {
    let t0 = base();
    let mut r = verified_api_pod(t0);
    let old = NOW_UNIX + 30 * 86_400;
    // The controller falls back to an old leaf: not reported within verify.mismatchAfter...
    let first = r.next_deadline().unwrap();
    assert!(
        first > ms(t0, 270_000) && first < ms(t0, 331_000),
        "jittered interval"
    );
    assert!(names(&check_at(&mut r, first, served("stale", old))).is_empty());
    assert_eq!(r.served_matches(), Some(false));
    assert!(!r.mismatch_reported());
    // ...and confirmed when the grace ends, not an interval later.
    let confirm_at = first + LIMITS.mismatch_after;
    let reported = check_at(&mut r, confirm_at, served("stale", old));
    assert_eq!(names(&reported), vec!["ServedCertificateMismatch"]);
    let note = notes(&reported)[0];
    assert!(note.contains("a.example on 10.0.0.7:443"), "{note}");
    assert!(
        note.contains("is old: the Secrets in the API hold api"),
        "{note}"
    );
    assert!(r.mismatch_reported());
    // While it lasts, every check says so again: one Event series, its count rising.
    let later = r.next_deadline().unwrap();
    assert!(later >= confirm_at + LIMITS.verify_interval.mul_f64(0.9));
    assert_eq!(
        names(&check_at(&mut r, later, served("stale", old))),
        vec!["ServedCertificateMismatch"]
    );
    // Healed: the episode is over, and the next one is reported again.
    let healed = r.next_deadline().unwrap();
    assert!(
        names(&check_at(
            &mut r,
            healed,
            served("api", NOW_UNIX + 90 * 86_400)
        ))
        .is_empty()
    );
    assert_eq!(r.served_matches(), Some(true));
    assert!(!r.mismatch_reported());
    let again = r.next_deadline().unwrap();
    check_at(&mut r, again, served("stale", old));
    let again = check_at(&mut r, again + LIMITS.mismatch_after, served("stale", old));
    assert_eq!(names(&again), vec!["ServedCertificateMismatch"]);
}

#[test]
fn unreachable_names_neither_open_nor_end_an_episode() {
    let t0 = base();
    let mut r = verified_api_pod(t0);
    let at = r.next_deadline().unwrap();
    r.step(ReloadInput::Tick, at);
    let unreachable = ProbeRound {
        served: [(key(None), Err("connection refused".to_string()))]
            .into_iter()
            .collect(),
        at_unix: NOW_UNIX,
    };
    assert!(r.step(ReloadInput::Probed(unreachable), at).is_empty());
    assert!(r.next_deadline().unwrap() >= at + LIMITS.verify_interval.mul_f64(0.9));
}

#[test]
fn a_placeholder_certificate_is_named_as_such() {
    let t0 = base();
    let mut r = verified_api_pod(t0);
    let at = r.next_deadline().unwrap();
    let fake = "CN=Kubernetes Ingress Controller Fake Certificate, O=Acme Co";
    check_at(&mut r, at, served_by("fake", NOW_UNIX + 365 * 86_400, fake));
    let reported = check_at(
        &mut r,
        at + LIMITS.mismatch_after,
        served_by("fake", NOW_UNIX + 365 * 86_400, fake),
    );
    let note = notes(&reported)[0];
    assert!(
        note.contains("is ingress-nginx's placeholder certificate"),
        "{note}"
    );
}

#[test]
fn after_an_agent_restart_files_newer_than_what_is_served_are_reloaded_once() {
    let t0 = base();
    let mut r = reloader(ReloadKind::Reload);
    // The first read of the volume: the renewal is on disk, but the reload was lost. A first
    // look is not enough (a reload may be under way); a second one 2 s later is.
    first_read(&mut r, leaf("new"), t0);
    let old = NOW_UNIX + 30 * 86_400;
    assert!(names(&check_at(&mut r, t0, served("old", old))).is_empty());
    assert_eq!(
        names(&check_at(&mut r, ms(t0, 2000), served("old", old))),
        vec!["reload#1"]
    );
    r.step(ReloadInput::Reloaded(Ok(())), ms(t0, 2005));
    r.step(ReloadInput::Tick, ms(t0, 2030));
    r.step(served("new", NOW_UNIX + 90 * 86_400), ms(t0, 2030));
    let done = confirm(&mut r, t0, 2030, "new", NOW_UNIX + 90 * 86_400);
    assert_eq!(
        names(&done),
        vec!["ControllerReloaded", "finished verified"]
    );
    // A controller that is already current costs nothing.
    let mut current = reloader(ReloadKind::Reload);
    first_read(&mut current, leaf("new"), t0);
    assert!(
        names(&check_at(
            &mut current,
            t0,
            served("new", NOW_UNIX + 90 * 86_400)
        ))
        .is_empty()
    );
    assert_eq!(current.phase_label(), "idle");
    // Restarted while the previous agent's reload was under way (the controller's old workers
    // still answering): the second look finds the new leaf, and nothing is reloaded again.
    let mut under_way = reloader(ReloadKind::Reload);
    first_read(&mut under_way, leaf("new"), t0);
    assert!(names(&check_at(&mut under_way, t0, served("old", old))).is_empty());
    assert!(
        names(&check_at(
            &mut under_way,
            ms(t0, 2000),
            served("new", NOW_UNIX + 90 * 86_400)
        ))
        .is_empty()
    );
    assert_eq!(under_way.phase_label(), "idle");
}

#[test]
fn a_controller_that_keeps_the_old_leaf_after_its_reload_is_not_reloaded_again_but_reported() {
    let t0 = base();
    let mut r = reloader(ReloadKind::Reload);
    let old = NOW_UNIX + 30 * 86_400;
    first_read(&mut r, leaf("new"), t0);
    assert!(names(&check_at(&mut r, t0, served("old", old))).is_empty());
    assert_eq!(
        names(&check_at(&mut r, ms(t0, 2000), served("old", old))),
        vec!["reload#1"]
    );
    r.step(ReloadInput::Reloaded(Ok(())), ms(t0, 2000));
    // Every attempt is answered with the old leaf until the attempts are spent.
    let mut seen = Vec::new();
    let mut t = 0;
    while t <= 3_600_000 {
        for decision in r.step(ReloadInput::Tick, ms(t0, t)) {
            match decision {
                Decision::Reload { attempt } => {
                    seen.push(format!("reload#{attempt}"));
                    seen.extend(names(&r.step(ReloadInput::Reloaded(Ok(())), ms(t0, t))));
                }
                Decision::Probe { .. } => {
                    seen.extend(names(&r.step(served("old", old), ms(t0, t))))
                }
                other => seen.extend(names(&[other])),
            }
        }
        t += 5;
    }
    // Reported on the checks that follow the retries (an Event series), never reloaded again.
    let first_mismatch = seen
        .iter()
        .position(|s| s.as_str() == "ServedCertificateMismatch")
        .expect("the lasting mismatch is reported");
    assert!(
        seen[first_mismatch..]
            .iter()
            .all(|s| s.as_str() == "ServedCertificateMismatch"),
        "{seen:?}"
    );
    // The healing reload's own retries, then never again for these files.
    let reloads: Vec<&String> = seen.iter().filter(|s| s.starts_with("reload#")).collect();
    assert_eq!(reloads, ["reload#2", "reload#3"], "{seen:?}");
    assert_eq!(
        seen.iter()
            .filter(|s| s.as_str() == "ReloadUnverified")
            .count(),
        3,
        "{seen:?}"
    );
}

#[test]
fn an_expiring_served_leaf_is_warned_without_a_rotation_and_says_whether_a_renewal_exists() {
    let t0 = base();
    // Nothing renews: the files hold the served leaf, 10 days from expiry.
    let mut r = reloader(ReloadKind::VerifyOnly);
    let soon = NOW_UNIX + 10 * 86_400;
    first_read(
        &mut r,
        ExpectedLeaf {
            not_after: soon,
            ..leaf("cur")
        },
        t0,
    );
    let warned = check_at(&mut r, t0, served("cur", soon));
    assert_eq!(names(&warned), vec!["CertificateExpiringSoon"]);
    assert!(
        notes(&warned)[0].contains("expires in 10 day(s)")
            && notes(&warned)[0].contains("no renewal exists: the mounted files hold no newer"),
        "{}",
        notes(&warned)[0]
    );
    // Once per leaf.
    let next = r.next_deadline().unwrap();
    assert!(names(&check_at(&mut r, next, served("cur", soon))).is_empty());
    // A renewal in the API that the controller does not serve says so.
    let mut api = verified_api_pod(t0);
    let at = api.next_deadline().unwrap();
    let warned = check_at(&mut api, at, served("stale", soon));
    assert_eq!(names(&warned), vec!["CertificateExpiringSoon"]);
    assert!(
        notes(&warned)[0].contains("a renewal api (notAfter")
            && notes(&warned)[0].contains("is in the Secrets in the API but not served"),
        "{}",
        notes(&warned)[0]
    );
}

#[test]
fn a_host_plan_mismatch_after_a_change_names_the_host_and_the_old_view() {
    let t0 = base();
    let mut r = reloader(ReloadKind::ApiDriven);
    let plan = |fp: &str| HostPlan {
        by_host: [("a.example".to_string(), vec![leaf(fp)])]
            .into_iter()
            .collect(),
        default: None,
    };
    r.step(
        ReloadInput::ApiLeaves {
            leaves: vec![],
            hosts: Some(plan("new")),
        },
        t0,
    );
    let mut seen = Vec::new();
    let mut t = 0;
    while t <= 31_000 {
        for d in r.step(ReloadInput::Tick, ms(t0, t)) {
            if let Decision::Probe { .. } = d {
                seen.extend(r.step(served("old", NOW_UNIX + 30 * 86_400), ms(t0, t)));
            } else {
                seen.push(d);
            }
        }
        t += 5;
    }
    let notes = notes(&seen);
    assert_eq!(notes.len(), 1, "{seen:?}");
    assert!(
        notes[0].contains("a.example on 10.0.0.7:443") && notes[0].contains("is old"),
        "{}",
        notes[0]
    );
    // Checks go on after the verification gave up.
    let next = r.next_deadline().expect("a periodic check is planned");
    assert!(next <= ms(t0, 31_000) + LIMITS.verify_interval.mul_f64(1.1));
}

#[test]
fn a_second_renewal_before_the_first_is_served_verifies_both_hosts() {
    let t0 = base();
    let mut r = reloader(ReloadKind::ApiDriven);
    let plan = |a: &str, b: &str| HostPlan {
        by_host: [
            ("a.example".to_string(), vec![leaf(a)]),
            ("b.example".to_string(), vec![leaf(b)]),
        ]
        .into_iter()
        .collect(),
        default: None,
    };
    let api = |hosts| ReloadInput::ApiLeaves {
        leaves: vec![],
        hosts: Some(hosts),
    };
    r.step(api(plan("a1", "b1")), t0);
    // Let the first verification end: every host serves what the API holds.
    let mut t = 0;
    while r.phase_label() != "idle" && t <= 31_000 {
        for d in r.step(ReloadInput::Tick, ms(t0, t)) {
            if let Decision::Probe { .. } = d {
                r.step(
                    served_by_host(&[("a.example", "a1"), ("b.example", "b1")]),
                    ms(t0, t),
                );
            }
        }
        t += 5;
    }
    assert_eq!(r.phase_label(), "idle");
    // a.example renewed; before the controller serves it, b.example renewed too.
    let start = t + 1_000;
    r.step(api(plan("a2", "b1")), ms(t0, start));
    r.step(api(plan("a2", "b2")), ms(t0, start + 10));
    let mut names = None;
    let mut t = start + 10;
    while names.is_none() && t <= start + 1_000 {
        for d in r.step(ReloadInput::Tick, ms(t0, t)) {
            if let Decision::Probe { names: n } = d {
                names = Some(n);
            }
        }
        t += 5;
    }
    let names = names.expect("a probe after the renewals");
    assert!(
        names.contains(&"a.example".to_string()) && names.contains(&"b.example".to_string()),
        "both renewed hosts are verified, not only the last one: {names:?}"
    );
}
