//! Reading a volume wakes nobody: kubelet's periodic resync (which opens and walks the current
//! generation to compare it with the Secret) and controllers reading their certificates must not
//! wake the agent's inotify thread. Its own binary, so that the only inotify thread in the
//! process is the one under test.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mountlag::disk::VolumeChange;
use mountlag_testbed::kubelet::{
    FileProjection, KubeletStandIn, Payload, VolumeKind, WriteOutcome,
};
use mountlag_testbed::real;

/// notify names its event thread "notify-rs inotify loop"; `comm` keeps 15 bytes.
const INOTIFY_THREAD: &str = "notify-rs inoti";

fn payload(round: usize) -> Payload {
    let mut payload = Payload::new();
    for name in ["tls.crt", "tls.key"] {
        payload.insert(
            name.into(),
            FileProjection {
                data: format!("{name} round {round}").into_bytes(),
                mode: 0o644,
            },
        );
    }
    payload
}

/// Context switches of this process's inotify thread: each one is a wakeup.
fn inotify_thread_switches() -> u64 {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != INOTIFY_THREAD {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        let switches: u64 = status
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches")
                    || l.starts_with("nonvoluntary_ctxt_switches")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        found.push(switches);
    }
    assert_eq!(
        found.len(),
        1,
        "exactly one inotify thread in this test binary"
    );
    found[0]
}

#[test]
fn kubelet_resyncs_and_readers_do_not_wake_the_inotify_thread() {
    if !real::require("root + tmpfs", real::can_mount()) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("mountlag-idle-")
        .tempdir()
        .unwrap();
    let kubelet = KubeletStandIn::new(dir.path().join("kubelet")).unwrap();
    let volume = kubelet
        .mount_volume("pod-1", VolumeKind::Secret, "tls")
        .unwrap();
    kubelet.write(&volume, &payload(0), None).unwrap();
    let (watcher, rx) = mountlag_testbed::watcher_to_channel();
    watcher.track(&volume).unwrap();
    // Let the thread settle (blocked in read, its switch count steady) before counting.
    let settling = std::time::Instant::now();
    loop {
        let first = inotify_thread_switches();
        std::thread::sleep(Duration::from_millis(100));
        if inotify_thread_switches() == first || settling.elapsed() > Duration::from_secs(5) {
            break;
        }
    }

    let before = inotify_thread_switches();
    for _ in 0..200 {
        // kubelet's sync: nothing to write, but the current generation is opened and compared.
        assert!(matches!(
            kubelet.write(&volume, &payload(0), None).unwrap(),
            WriteOutcome::Unchanged
        ));
        // A controller (or `mountlag inspect`) reading the files through the root symlinks.
        for entry in std::fs::read_dir(&volume).unwrap().flatten() {
            let _ = std::fs::read(entry.path());
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let idle = inotify_thread_switches() - before;
    assert_eq!(
        idle, 0,
        "200 resyncs and reads woke the inotify thread {idle} times"
    );

    // The thread is alive and watching: a real update wakes it and is reported.
    kubelet.write(&volume, &payload(1), None).unwrap();
    let change = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        matches!(&change, VolumeChange::Generation { volume: v, .. } if v == &volume),
        "{change:?}"
    );
    // A switch is counted when the thread blocks again, which may be just after it reported.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while inotify_thread_switches() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the update was reported but the inotify thread never went back to sleep"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
