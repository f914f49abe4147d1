//! A snapshot is one generation, never two, while kubelet (or anyone) swaps `..data` under it.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use mountlag::disk::{SnapshotError, snapshot};
use mountlag_testbed::kubelet::{
    FileProjection, KubeletStandIn, Payload, VolumeKind, raw_swap_data_link,
};
use mountlag_testbed::real;
use sha2::{Digest, Sha256};

fn digest(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn round_payload(round: usize) -> Payload {
    let mut payload = Payload::new();
    for (name, size) in [("tls.crt", 1500), ("tls.key", 300), ("nested/ca.crt", 900)] {
        let mut data = format!("{name} round {round} ").into_bytes();
        data.resize(size, b'0' + (round % 10) as u8);
        payload.insert(name.to_string(), FileProjection { data, mode: 0o644 });
    }
    payload
}

/// Which round each file digest belongs to; a consistent snapshot has one round for all files.
fn rounds_by_digest(rounds: usize) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    for round in 0..rounds {
        for file in round_payload(round).values() {
            map.insert(digest(&file.data), round);
        }
    }
    map
}

fn setup() -> Option<(tempfile::TempDir, KubeletStandIn)> {
    if !real::require("root + tmpfs", real::can_mount()) {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("mountlag-snap-")
        .tempdir()
        .unwrap();
    let kubelet = KubeletStandIn::new(dir.path().join("kubelet")).unwrap();
    Some((dir, kubelet))
}

#[test]
fn snapshots_never_mix_generations_under_atomic_writer_updates() {
    let Some((_dir, kubelet)) = setup() else {
        return;
    };
    let kubelet = Arc::new(kubelet);
    let volume = kubelet
        .mount_volume("pod-s", VolumeKind::Projected, "certs")
        .unwrap();
    kubelet.write(&volume, &round_payload(0), None).unwrap();
    // The writer rewrites the volume back to back at least MIN_ROUNDS times (so the reader
    // overlaps many swaps), then on until the reader has seen enough. A fixed round count made
    // the test depend on how the scheduler shares the cores: on a loaded machine the reader gave
    // up (Unstable) on most attempts while the writer never paused, and completed too few.
    const MIN_ROUNDS: usize = 2_000;
    const MAX_ROUNDS: usize = 10_000;
    const WANT_SNAPSHOTS: usize = 100;
    const WANT_GENERATIONS: usize = 10;
    let by_digest = rounds_by_digest(MAX_ROUNDS + 1);

    let enough = Arc::new(AtomicBool::new(false));
    let last_round = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (kubelet, volume) = (Arc::clone(&kubelet), volume.clone());
        let (enough, last_round) = (Arc::clone(&enough), Arc::clone(&last_round));
        std::thread::spawn(move || {
            for round in 1..=MAX_ROUNDS {
                if round > MIN_ROUNDS && enough.load(Ordering::SeqCst) {
                    break;
                }
                kubelet.write(&volume, &round_payload(round), None).unwrap();
                last_round.store(round, Ordering::SeqCst);
            }
        })
    };
    let (mut consistent, mut unstable) = (0usize, 0usize);
    let mut seen_rounds = std::collections::BTreeSet::new();
    while !writer.is_finished() {
        match snapshot(&volume) {
            Ok(snap) => {
                assert_eq!(
                    snap.files.len(),
                    3,
                    "every file of the generation: {snap:?}"
                );
                let rounds: std::collections::BTreeSet<usize> = snap
                    .files
                    .iter()
                    .map(|f| by_digest[f.sha256.as_ref().unwrap()])
                    .collect();
                assert_eq!(rounds.len(), 1, "files from two generations: {rounds:?}");
                seen_rounds.extend(rounds);
                consistent += 1;
                if consistent >= WANT_SNAPSHOTS && seen_rounds.len() >= WANT_GENERATIONS {
                    enough.store(true, Ordering::SeqCst);
                }
            }
            Err(SnapshotError::Unstable { .. }) => unstable += 1,
            Err(other) => panic!("unexpected snapshot error: {other}"),
        }
    }
    writer.join().unwrap();
    let last_round = last_round.load(Ordering::SeqCst);
    eprintln!(
        "{consistent} consistent snapshots over {} generations while {last_round} were written, {unstable} gave up",
        seen_rounds.len()
    );
    assert!(
        consistent >= WANT_SNAPSHOTS && seen_rounds.len() >= WANT_GENERATIONS,
        "the reader completed only {consistent} snapshots over {} generations in {MAX_ROUNDS} rewrites",
        seen_rounds.len()
    );
    let last = snapshot(&volume).unwrap();
    assert!(
        last.files
            .iter()
            .all(|f| by_digest[f.sha256.as_ref().unwrap()] == last_round),
        "the final snapshot is the last generation written"
    );
}

#[test]
fn snapshots_never_mix_generations_under_raw_link_swaps() {
    let Some((_dir, kubelet)) = setup() else {
        return;
    };
    let volume = kubelet
        .mount_volume("pod-r", VolumeKind::Secret, "tls")
        .unwrap();
    let first = match kubelet.write(&volume, &round_payload(1), None).unwrap() {
        mountlag_testbed::kubelet::WriteOutcome::Written { generation } => generation,
        other => panic!("{other:?}"),
    };
    // A second, persistent generation to swap to and back, thousands of times.
    let second = "..2026_01_01_00_00_00.7".to_string();
    for (name, file) in round_payload(2) {
        let path = volume.join(&second).join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &file.data).unwrap();
    }
    let by_digest = rounds_by_digest(3);
    let files_per_generation = round_payload(1).len();
    // At least MIN_SWAPS swaps, then on until the reader has completed WANT_SNAPSHOTS snapshots
    // covering both generations (a fixed count could end before a starved reader completed any).
    const MIN_SWAPS: usize = 20_000;
    const MAX_SWAPS: usize = 400_000;
    const WANT_SNAPSHOTS: usize = 100;
    let swaps = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (volume, swaps, enough) = (volume.clone(), Arc::clone(&swaps), Arc::clone(&enough));
        let (first, second) = (first.clone(), second.clone());
        std::thread::spawn(move || {
            for i in 0..MAX_SWAPS {
                if i >= MIN_SWAPS && i % 2 == 0 && enough.load(Ordering::SeqCst) {
                    break;
                }
                raw_swap_data_link(&volume, if i % 2 == 0 { &second } else { &first }).unwrap();
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut by_generation: HashMap<String, usize> = HashMap::new();
    let (mut consistent, mut unstable) = (0usize, 0usize);
    while !swapper.is_finished() {
        let snap = match snapshot(&volume) {
            Ok(snap) => snap,
            // The one transient error: `..data` moved during every attempt (documented:
            // "the volume is being rewritten"). Anything else is a failure.
            Err(SnapshotError::Unstable { .. }) => {
                unstable += 1;
                continue;
            }
            Err(other) => panic!("snapshot failed under raw ..data swaps: {other}"),
        };
        assert_eq!(
            snap.files.len(),
            files_per_generation,
            "every file of the generation, no more: {snap:?}"
        );
        let rounds: std::collections::BTreeSet<usize> = snap
            .files
            .iter()
            .map(|f| by_digest[f.sha256.as_ref().unwrap()])
            .collect();
        assert_eq!(rounds.len(), 1, "files from two generations: {rounds:?}");
        let expected = if snap.generation.as_deref() == Some(first.as_str()) {
            1
        } else {
            assert_eq!(
                snap.generation.as_deref(),
                Some(second.as_str()),
                "{snap:?}"
            );
            2
        };
        assert_eq!(
            rounds.into_iter().next(),
            Some(expected),
            "files match the generation named"
        );
        *by_generation.entry(snap.generation.unwrap()).or_default() += 1;
        consistent += 1;
        if by_generation.len() == 2 && consistent >= WANT_SNAPSHOTS {
            enough.store(true, Ordering::SeqCst);
        }
    }
    swapper.join().unwrap();
    eprintln!(
        "{consistent} consistent snapshots, per generation {by_generation:?}, {unstable} gave up \
         (Unstable), over {} swaps",
        swaps.load(Ordering::Relaxed)
    );
    assert_eq!(
        by_generation.len(),
        2,
        "both generations were read: {by_generation:?}"
    );
    assert!(
        consistent >= WANT_SNAPSHOTS,
        "only {consistent} snapshots completed ({unstable} Unstable) in {MAX_SWAPS} swaps"
    );
}

/// The volume's tmpfs unmounted (lazily, as `umount -l` and kubelet's teardown of a busy mount
/// do) and a new one mounted with the next generation, over and over, while snapshots run: each
/// snapshot is one whole generation or a clear error naming the volume, never a mix, a panic
/// or a hang.
#[test]
fn snapshots_of_a_volume_unmounted_and_remounted_under_them_are_whole_or_a_clear_error() {
    let Some((_dir, kubelet)) = setup() else {
        return;
    };
    let kubelet = Arc::new(kubelet);
    let volume = kubelet
        .mount_volume("pod-u", VolumeKind::Secret, "tls")
        .unwrap();
    kubelet.write(&volume, &round_payload(0), None).unwrap();
    const ROUNDS: usize = 300;
    let by_digest = rounds_by_digest(ROUNDS + 1);
    let done = Arc::new(AtomicBool::new(false));
    let remounter = {
        let (kubelet, volume, done) = (Arc::clone(&kubelet), volume.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            for round in 1..=ROUNDS {
                nix::mount::umount2(&volume, nix::mount::MntFlags::MNT_DETACH).unwrap();
                kubelet
                    .mount_volume("pod-u", VolumeKind::Secret, "tls")
                    .unwrap();
                kubelet.write(&volume, &round_payload(round), None).unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let (mut whole, mut errors) = (0usize, std::collections::BTreeMap::<String, usize>::new());
    while !done.load(Ordering::SeqCst) {
        match snapshot(&volume) {
            Ok(snap) if snap.files.is_empty() => {
                // Caught between the new mount and its first write: an empty volume.
                *errors.entry("empty (fresh mount)".into()).or_default() += 1;
            }
            Ok(snap) => {
                assert_eq!(
                    snap.files.len(),
                    3,
                    "every file of the generation: {snap:?}"
                );
                let rounds: std::collections::BTreeSet<usize> = snap
                    .files
                    .iter()
                    .map(|f| by_digest[f.sha256.as_ref().unwrap()])
                    .collect();
                assert_eq!(rounds.len(), 1, "files from two generations: {rounds:?}");
                whole += 1;
            }
            Err(err) => {
                let text = err.to_string();
                assert!(
                    text.contains(&*volume.to_string_lossy()) || text.contains("..data"),
                    "an error names what it is about: {text}"
                );
                let kind: String = text.chars().take(60).collect();
                *errors.entry(kind).or_default() += 1;
            }
        }
    }
    remounter.join().unwrap();
    eprintln!("{whole} whole snapshots during {ROUNDS} remounts; not whole: {errors:?}");
    assert!(
        whole + errors.values().sum::<usize>() > 0,
        "the reader ran during the remounts"
    );
    // The remounts are over: the volume holds the last generation, read whole.
    let last = snapshot(&volume).unwrap();
    assert!(
        last.files
            .iter()
            .all(|f| by_digest[f.sha256.as_ref().unwrap()] == ROUNDS)
    );
}
