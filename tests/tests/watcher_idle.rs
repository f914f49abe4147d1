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

/// This process's inotify thread as one read of its `status` shows it: whether it is asleep
/// (`State: S`), and its context switches, each one a wakeup (counted when it blocks again).
/// Both come from the same read: a thread that an event woke is runnable (`R`) from the wakeup
/// until it blocks again, and then its count has grown.
fn inotify_thread() -> (bool, u64) {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != INOTIFY_THREAD {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        let asleep = status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|state| state.trim_start().starts_with('S'));
        let switches: u64 = status
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches")
                    || l.starts_with("nonvoluntary_ctxt_switches")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        found.push((asleep, switches));
    }
    assert_eq!(
        found.len(),
        1,
        "exactly one inotify thread in this test binary"
    );
    found[0]
}

fn inotify_thread_switches() -> u64 {
    inotify_thread().1
}

/// Waits until the inotify thread is asleep with the same switch count over `windows`
/// consecutive 100 ms windows; returns that count. Fails after `deadline` with what it saw.
fn settled(windows: usize, deadline: Duration) -> u64 {
    let start = std::time::Instant::now();
    let mut stable = 0;
    let mut last = inotify_thread();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = inotify_thread();
        stable = if now.0 && now == last { stable + 1 } else { 0 };
        if stable >= windows {
            return now.1;
        }
        assert!(
            start.elapsed() < deadline,
            "the inotify thread never settled within {deadline:?} (asleep, switch count steady \
             for {windows} windows of 100 ms): last {now:?}, before {last:?}"
        );
        last = now;
    }
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
    // Let the thread settle (asleep, its switch count steady) before counting.
    let before = settled(3, Duration::from_secs(60));
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
    // Quiescence: an event queued by any of those syscalls (inotify queues it inside the
    // syscall) made the thread runnable at once, and it stays runnable until it has read the
    // event and blocked again, which counts a switch. So once it is seen asleep, every wakeup
    // they caused is in the count.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (idle, after) = loop {
        let (asleep, switches) = inotify_thread();
        if asleep {
            break (switches - before, switches);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the inotify thread never went back to sleep after the resyncs"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        idle, 0,
        "200 resyncs and reads woke the inotify thread {idle} times"
    );

    // The thread is alive and watching: a real update wakes it and is reported.
    // (Mount table changes of other processes on the machine are reported too: skipped.)
    kubelet.write(&volume, &payload(1), None).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(VolumeChange::Generation { volume: v, .. }) if v == volume => break,
            Ok(VolumeChange::MountsChanged { .. }) => {}
            Ok(other) => panic!("{other:?}"),
            Err(err) => panic!("the update was not reported: {err}"),
        }
    }
    // A switch is counted when the thread blocks again, which may be just after it reported.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while inotify_thread_switches() == after {
        assert!(
            std::time::Instant::now() < deadline,
            "the update was reported but the inotify thread never went back to sleep"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
