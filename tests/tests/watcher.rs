//! The inotify watcher against real tmpfs volumes written by the kubelet stand-in.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use mountlag::disk::{VolumeChange, VolumeWatcher};
use mountlag_testbed::kubelet::{
    FileProjection, KubeletStandIn, Payload, VolumeKind, WriteOutcome,
};
use mountlag_testbed::real;

const WAIT: Duration = Duration::from_secs(5);

fn payload(round: usize) -> Payload {
    let mut payload = Payload::new();
    payload.insert(
        "tls.crt".into(),
        FileProjection {
            data: format!("round {round}").into_bytes(),
            mode: 0o644,
        },
    );
    payload
}

fn written(outcome: WriteOutcome) -> String {
    match outcome {
        WriteOutcome::Written { generation } => generation,
        WriteOutcome::Unchanged => panic!("payload was expected to change"),
    }
}

fn start_watcher() -> (VolumeWatcher, Receiver<VolumeChange>) {
    mountlag_testbed::watcher_to_channel()
}

/// The next report about `volume`, skipping rescan notices.
fn next_change(rx: &Receiver<VolumeChange>, volume: &Path) -> VolumeChange {
    loop {
        let change = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no report about {} within {WAIT:?}", volume.display()));
        match &change {
            VolumeChange::Generation { volume: v, .. } | VolumeChange::Unmounted { volume: v }
                if v == volume =>
            {
                return change;
            }
            _ => {}
        }
    }
}

fn generation_of(change: &VolumeChange) -> Option<String> {
    match change {
        VolumeChange::Generation { generation, .. } => generation.clone(),
        other => panic!("expected a generation report, got {other:?}"),
    }
}

/// Reports about `volume` that arrive within `quiet`, rescans skipped.
fn drain(rx: &Receiver<VolumeChange>, volume: &Path, quiet: Duration) -> Vec<VolumeChange> {
    let mut rest = Vec::new();
    loop {
        match rx.recv_timeout(quiet) {
            Ok(VolumeChange::Rescanned { .. }) => {}
            Ok(change) => {
                if matches!(&change, VolumeChange::Generation { volume: v, .. } if v == volume) {
                    rest.push(change);
                }
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return rest,
        }
    }
}

fn kubelet() -> Option<(tempfile::TempDir, KubeletStandIn)> {
    if !real::require("root + tmpfs", real::can_mount()) {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("mountlag-watch-")
        .tempdir()
        .unwrap();
    let kubelet = KubeletStandIn::new(dir.path().join("kubelet")).unwrap();
    Some((dir, kubelet))
}

#[test]
fn every_one_of_a_thousand_updates_is_reported_once() {
    let Some((_dir, kubelet)) = kubelet() else {
        return;
    };
    let volume = kubelet
        .mount_volume("pod-1", VolumeKind::Secret, "tls")
        .unwrap();
    let first = written(kubelet.write(&volume, &payload(0), None).unwrap());
    let (watcher, rx) = start_watcher();
    assert_eq!(watcher.track(&volume).unwrap(), Some(first));
    let reads_before = watcher.generation_reads();

    for round in 1..=1000 {
        let generation = written(kubelet.write(&volume, &payload(round), None).unwrap());
        let change = next_change(&rx, &volume);
        assert_eq!(
            generation_of(&change),
            Some(generation),
            "round {round}: the report names the generation just published"
        );
    }
    let extra = drain(&rx, &volume, Duration::from_millis(300));
    assert!(extra.is_empty(), "reported twice: {extra:?}");
    // The other events of an update (generation directory created, old one removed,
    // `..data_tmp`, notify's second rename event) cost no read of `..data`.
    assert_eq!(
        watcher.generation_reads() - reads_before,
        1000,
        "one ..data read per update"
    );
}

#[test]
fn a_burst_of_swaps_ends_on_the_last_generation_without_repeats() {
    let Some((_dir, kubelet)) = kubelet() else {
        return;
    };
    let volume = kubelet
        .mount_volume("pod-2", VolumeKind::Projected, "bundle")
        .unwrap();
    let a = written(kubelet.write(&volume, &payload(1), None).unwrap());
    // Keep generation `a` around to swap back and forth without kubelet's cleanup.
    let b_dir = volume.join("..2026_01_01_00_00_00.42");
    std::fs::create_dir(&b_dir).unwrap();
    std::fs::write(b_dir.join("tls.crt"), b"other").unwrap();
    let b = "..2026_01_01_00_00_00.42".to_string();

    let (watcher, rx) = start_watcher();
    assert_eq!(watcher.track(&volume).unwrap(), Some(a.clone()));
    let mut last = a.clone();
    for i in 0..2000 {
        last = if i % 2 == 0 { b.clone() } else { a.clone() };
        mountlag_testbed::kubelet::raw_swap_data_link(&volume, &last).unwrap();
    }
    // Collect until the last swap is reported (a starved watcher thread may pause mid-burst
    // for longer than any fixed quiet period), then a little longer to catch repeats.
    let mut changes = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while changes.last().map(generation_of) != Some(Some(last.clone()))
        && std::time::Instant::now() < deadline
    {
        changes.extend(drain(&rx, &volume, Duration::from_millis(200)));
    }
    changes.extend(drain(&rx, &volume, Duration::from_millis(300)));
    let reports: Vec<Option<String>> = changes.iter().map(generation_of).collect();
    assert_eq!(
        reports.last().cloned().flatten(),
        Some(last),
        "ends on the last swap; {} reports: {reports:?}",
        reports.len()
    );
    for pair in reports.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "the same generation reported twice in a row"
        );
    }
    assert_ne!(
        reports.first().cloned().flatten(),
        Some(a),
        "the tracked generation is not re-reported"
    );
}

#[test]
fn a_tmpfs_mounted_over_a_watched_directory_is_picked_up() {
    let Some((_dir, kubelet)) = kubelet() else {
        return;
    };
    // The directory exists before kubelet mounts the volume's tmpfs on it.
    let volume: PathBuf = kubelet.volume_dir("pod-3", VolumeKind::Secret, "tls");
    std::fs::create_dir_all(&volume).unwrap();
    let (watcher, rx) = start_watcher();
    assert_eq!(watcher.track(&volume).unwrap(), None);

    let mounted = kubelet
        .mount_volume("pod-3", VolumeKind::Secret, "tls")
        .unwrap();
    assert_eq!(mounted, volume);
    let generation = written(kubelet.write(&volume, &payload(7), None).unwrap());
    assert_eq!(
        generation_of(&next_change(&rx, &volume)),
        Some(generation.clone())
    );

    // And the re-armed watch keeps working for the next update.
    let next = written(kubelet.write(&volume, &payload(8), None).unwrap());
    assert_eq!(generation_of(&next_change(&rx, &volume)), Some(next));
}

#[test]
fn an_unmounted_volume_is_reported() {
    let Some((_dir, kubelet)) = kubelet() else {
        return;
    };
    let volume = kubelet
        .mount_volume("pod-4", VolumeKind::Secret, "tls")
        .unwrap();
    written(kubelet.write(&volume, &payload(1), None).unwrap());
    let (watcher, rx) = start_watcher();
    watcher.track(&volume).unwrap();

    kubelet.teardown_pod("pod-4").unwrap();
    let change = next_change(&rx, &volume);
    assert_eq!(
        change,
        VolumeChange::Unmounted {
            volume: volume.clone()
        }
    );
    watcher.untrack(&volume);
    assert_eq!(watcher.tracked(), 0);
}

#[test]
fn a_volume_directory_replaced_by_a_symlink_is_reported_changed_so_it_is_read_and_refused() {
    let Some((dir, kubelet)) = kubelet() else {
        return;
    };
    // A plain directory (no tmpfs), as a hostile actor on the node could swap it.
    let volume = kubelet.volume_dir("pod-5", VolumeKind::Secret, "tls");
    std::fs::create_dir_all(&volume).unwrap();
    written(kubelet.write(&volume, &payload(1), None).unwrap());
    let (watcher, rx) = start_watcher();
    watcher.track(&volume).unwrap();

    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    written(kubelet.write(&elsewhere, &payload(2), None).unwrap());
    // One atomic step (RENAME_EXCHANGE): the path is a directory, then a symlink, never absent,
    // so what the watcher sees is the symlink, not a removal.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &link,
        nix::fcntl::AT_FDCWD,
        &volume,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap();
    let change = next_change(&rx, &volume);
    assert!(
        matches!(
            &change,
            VolumeChange::Generation {
                generation: None,
                ..
            }
        ),
        "{change:?}"
    );
    // What the agent then reads: the snapshot refuses the symlink.
    assert!(matches!(
        mountlag::disk::snapshot(&volume),
        Err(mountlag::disk::SnapshotError::Symlink { .. })
    ));
}
