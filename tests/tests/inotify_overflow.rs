//! A real inotify queue overflow: the kernel's queue is made small (`fs.inotify.max_queued_events`,
//! restored afterwards), the watcher's thread is held while 40 tmpfs volumes are rewritten three
//! times each and one is remounted, and the kernel drops events (`IN_Q_OVERFLOW`). The watcher
//! must rescan, report the last generation of every volume, and keep watching them all, the
//! remounted one included.
//!
//! Its own test binary: the queue limit is a machine-wide setting, and test binaries run one
//! after another.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mountlag::disk::{RescanReason, VolumeChange, VolumeWatcher, WatcherConfig};
use mountlag_testbed::kubelet::{
    FileProjection, KubeletStandIn, Payload, VolumeKind, WriteOutcome, read_data_link,
};
use mountlag_testbed::real;

const QUEUE_LIMIT: &str = "/proc/sys/fs/inotify/max_queued_events";
const VOLUMES: usize = 40;

/// Sets the kernel's inotify queue limit for instances created from now on; restores it on drop.
struct QueueLimit {
    old: String,
}

impl QueueLimit {
    fn set(limit: u32) -> Self {
        let old = std::fs::read_to_string(QUEUE_LIMIT).unwrap();
        std::fs::write(QUEUE_LIMIT, limit.to_string()).unwrap();
        Self { old }
    }
}

impl Drop for QueueLimit {
    fn drop(&mut self) {
        let _ = std::fs::write(QUEUE_LIMIT, self.old.trim());
    }
}

fn payload(volume: usize, round: usize) -> Payload {
    let mut payload = Payload::new();
    payload.insert(
        "tls.crt".into(),
        FileProjection::new(format!("volume {volume} round {round}"), 0o644),
    );
    payload
}

fn write(kubelet: &KubeletStandIn, volume: &std::path::Path, payload: &Payload) {
    match kubelet.write(volume, payload, None).unwrap() {
        WriteOutcome::Written { .. } => {}
        WriteOutcome::Unchanged => panic!("the payload was expected to change"),
    }
}

#[test]
fn after_a_real_queue_overflow_every_volume_ends_on_its_last_generation() {
    if !real::require("root + tmpfs", real::can_mount()) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("mountlag-overflow-")
        .tempdir()
        .unwrap();
    let kubelet = KubeletStandIn::new(dir.path().join("kubelet")).unwrap();
    let volumes: Vec<PathBuf> = (0..VOLUMES)
        .map(|i| {
            let volume = kubelet
                .mount_volume(&format!("pod-{i}"), VolumeKind::Secret, "tls")
                .unwrap();
            write(&kubelet, &volume, &payload(i, 0));
            volume
        })
        .collect();

    // Only instances created after this get the small queue.
    let limit = QueueLimit::set(16);
    let gate = Arc::new(Mutex::new(()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink_gate = Arc::clone(&gate);
    let tx = Mutex::new(tx);
    let watcher = VolumeWatcher::new(
        WatcherConfig::default(),
        Box::new(move |change| {
            // Held by the test during the storm: the thread reading inotify stops here.
            let _held = sink_gate.lock();
            if let Ok(tx) = tx.lock() {
                let _ = tx.send(change);
            }
        }),
    )
    .unwrap();
    for volume in &volumes {
        watcher.track(volume).unwrap();
    }

    let held = gate.lock().unwrap();
    for round in 1..=3 {
        for (i, volume) in volumes.iter().enumerate() {
            write(&kubelet, volume, &payload(i, round));
        }
    }
    // A volume remounted during the storm (kubelet tears a pod's tmpfs down and mounts a new
    // one, as for a pod recreated with the same UID): the old watch goes with the old mount,
    // and its late `IN_IGNORED` must not take the re-armed one with it.
    kubelet
        .unmount_volume("pod-0", VolumeKind::Secret, "tls")
        .unwrap();
    let remounted = kubelet
        .mount_volume("pod-0", VolumeKind::Secret, "tls")
        .unwrap();
    assert_eq!(remounted, volumes[0]);
    write(&kubelet, &remounted, &payload(0, 4));
    drop(held);

    let expected: BTreeMap<PathBuf, String> = volumes
        .iter()
        .map(|v| (v.clone(), read_data_link(v).unwrap().unwrap()))
        .collect();
    let mut last: BTreeMap<PathBuf, Option<String>> = BTreeMap::new();
    let mut overflowed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(overflowed
        && expected
            .iter()
            .all(|(v, g)| last.get(v).cloned().flatten().as_ref() == Some(g)))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let change = rx.recv_timeout(left).unwrap_or_else(|_| {
            let missed: Vec<_> = expected
                .iter()
                .filter(|(v, g)| last.get(*v).cloned().flatten().as_ref() != Some(*g))
                .map(|(v, _)| v.display().to_string())
                .collect();
            panic!(
                "within 60 s: overflow seen {overflowed}, {} of {VOLUMES} volumes not on their last generation: {missed:?}",
                missed.len()
            )
        });
        match change {
            VolumeChange::Generation {
                volume, generation, ..
            } => {
                last.insert(volume, generation);
            }
            VolumeChange::Rescanned {
                reason: RescanReason::QueueOverflow,
            } => overflowed = true,
            _ => {}
        }
    }
    drop(limit);

    // Still watched after the storm: the next update of each volume is reported by inotify.
    for (i, volume) in volumes.iter().enumerate() {
        write(&kubelet, volume, &payload(i, 5));
    }
    let expected: BTreeMap<PathBuf, String> = volumes
        .iter()
        .map(|v| (v.clone(), read_data_link(v).unwrap().unwrap()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while expected
        .iter()
        .any(|(v, g)| last.get(v).cloned().flatten().as_ref() != Some(g))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(VolumeChange::Generation {
                volume, generation, ..
            }) => {
                last.insert(volume, generation);
            }
            Ok(_) => {}
            Err(_) => panic!("an update after the storm was not reported"),
        }
    }
}
