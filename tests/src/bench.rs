//! `testbed bench ...`: figures for docs/benchmarks.md, measured, never asserted.
//!
//! `watch`: latency from the `..data` rename to a report, for mountlag's watcher and for a bare
//! inotify floor (one thread blocked in `read(2)` on an inotify fd that only watches
//! `IN_MOVED_TO`), in alternating blocks of the same run so both see the same machine state.
//! Each subject watches its own tmpfs volume, so the idle one is never woken.
//!
//! `snapshot`: the cost of one consistent snapshot of volumes with 1, 100 and 1,000 files.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mountlag::disk::{VolumeChange, VolumeWatcher, WatcherConfig};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::certs::{LeafSpec, TestCa};
use crate::kubelet::{FileProjection, KubeletStandIn, Payload, VolumeKind, raw_write_generation};

/// Percentiles of a set of durations (nearest rank).
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    pub fn of(samples: &[Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort();
        let rank = |q: f64| {
            let index = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[index]
        };
        Some(Self {
            count: sorted.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
        })
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One volume being swapped by hand with kubelet's exact steps, so the rename can be timed.
struct SwappedVolume {
    dir: PathBuf,
    round: usize,
}

impl SwappedVolume {
    /// AtomicWriter steps 2–3 and 4a before the clock starts, the rename (4b) timed, 5–6 after.
    fn swap(&mut self) -> anyhow::Result<Instant> {
        self.round += 1;
        let mut payload = Payload::new();
        payload.insert(
            "tls.crt".into(),
            FileProjection::new(format!("round {}", self.round), 0o644),
        );
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        let generation = raw_write_generation(&self.dir, &payload)?;
        let tmp = self.dir.join("..data_tmp");
        symlink(&generation, &tmp).context("symlink ..data_tmp")?;
        let renamed_at = Instant::now();
        std::fs::rename(&tmp, self.dir.join("..data")).context("rename ..data")?;
        let visible = self.dir.join("tls.crt");
        if visible.symlink_metadata().is_err() {
            symlink("..data/tls.crt", &visible).context("symlink tls.crt")?;
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).context("remove old generation")?;
        }
        Ok(renamed_at)
    }
}

/// The floor: a thread that only waits for `MOVED_TO ..data` on one directory.
fn start_floor(dir: &Path) -> anyhow::Result<Receiver<Instant>> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(dir, AddWatchFlags::IN_MOVED_TO)?;
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name("inotify-floor".into())
        .spawn(move || {
            while let Ok(events) = inotify.read_events() {
                let seen = Instant::now();
                if events
                    .iter()
                    .any(|e| e.name.as_deref().is_some_and(|n| n == "..data"))
                    && tx.send(seen).is_err()
                {
                    return;
                }
            }
        })?;
    Ok(rx)
}

fn start_mountlag(dir: &Path) -> anyhow::Result<(VolumeWatcher, Receiver<Instant>)> {
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let watcher = VolumeWatcher::new(
        WatcherConfig::default(),
        Box::new(move |change| {
            if let VolumeChange::Generation { .. } = change {
                let seen = Instant::now();
                if let Ok(tx) = tx.lock() {
                    let _ = tx.send(seen);
                }
            }
        }),
    )?;
    watcher.track(dir)?;
    Ok((watcher, rx))
}

#[derive(Debug)]
pub struct WatchResult {
    pub floor: Vec<Duration>,
    pub mountlag: Vec<Duration>,
    pub floor_missed: usize,
    pub mountlag_missed: usize,
}

/// Swaps `swaps` times for each subject, in `blocks` alternating blocks.
pub fn watch(swaps: usize, blocks: usize, pause: Duration) -> anyhow::Result<WatchResult> {
    let kubelet = KubeletStandIn::in_tempdir()?;
    let mut floor_volume = SwappedVolume {
        dir: kubelet.mount_volume("bench-floor", VolumeKind::Secret, "tls")?,
        round: 0,
    };
    let mut mountlag_volume = SwappedVolume {
        dir: kubelet.mount_volume("bench-mountlag", VolumeKind::Secret, "tls")?,
        round: 0,
    };
    floor_volume.swap()?;
    mountlag_volume.swap()?;
    let floor_rx = start_floor(&floor_volume.dir)?;
    let (_watcher, mountlag_rx) = start_mountlag(&mountlag_volume.dir)?;

    let mut result = WatchResult {
        floor: Vec::with_capacity(swaps),
        mountlag: Vec::with_capacity(swaps),
        floor_missed: 0,
        mountlag_missed: 0,
    };
    let per_block = swaps.div_ceil(blocks.max(1));
    let timeout = Duration::from_secs(2);
    let mut done = 0;
    while done < swaps {
        let n = per_block.min(swaps - done);
        for _ in 0..n {
            let renamed = floor_volume.swap()?;
            match floor_rx.recv_timeout(timeout) {
                Ok(seen) => result.floor.push(seen.saturating_duration_since(renamed)),
                Err(_) => result.floor_missed += 1,
            }
            std::thread::sleep(pause);
        }
        for _ in 0..n {
            let renamed = mountlag_volume.swap()?;
            match mountlag_rx.recv_timeout(timeout) {
                Ok(seen) => result
                    .mountlag
                    .push(seen.saturating_duration_since(renamed)),
                Err(_) => result.mountlag_missed += 1,
            }
            std::thread::sleep(pause);
            // Reports are one per generation: anything extra here would be a repeat.
            while mountlag_rx.try_recv().is_ok() {
                result.mountlag_missed += 1;
            }
        }
        done += n;
    }
    Ok(result)
}

/// Median and p99 of one snapshot of a volume with `files` files, over `runs` runs.
pub fn snapshot_cost(files: usize, runs: usize) -> anyhow::Result<Summary> {
    let kubelet = KubeletStandIn::in_tempdir()?;
    let dir = kubelet.mount_volume("bench-snapshot", VolumeKind::Projected, "many")?;
    let ca = TestCa::new("bench ca")?;
    let leaf = ca.issue(&LeafSpec::valid_for(["bench.example"]))?;
    let mut payload = Payload::new();
    payload.insert(
        "tls.crt".into(),
        FileProjection::new(leaf.chain_pem.clone(), 0o644),
    );
    payload.insert(
        "tls.key".into(),
        FileProjection::new(leaf.key_pem.clone(), 0o600),
    );
    for i in payload.len()..files {
        payload.insert(
            format!("data-{i:04}"),
            FileProjection::new(vec![b'x'; 1024], 0o644),
        );
    }
    while payload.len() > files {
        payload.pop_last();
    }
    kubelet.write(&dir, &payload, None)?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let snap = mountlag::disk::snapshot(&dir)?;
        samples.push(start.elapsed());
        anyhow::ensure!(
            snap.files.len() == files,
            "snapshot saw {} files",
            snap.files.len()
        );
    }
    Summary::of(&samples).context("no samples")
}

/// Prints the watch figures as a Markdown table.
pub fn print_watch(result: &WatchResult) {
    let floor = Summary::of(&result.floor);
    let ours = Summary::of(&result.mountlag);
    println!("| subject | swaps | missed | p50 µs | p99 µs | max µs |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, summary, missed) in [
        ("inotify floor", floor, result.floor_missed),
        ("mountlag watcher", ours, result.mountlag_missed),
    ] {
        match summary {
            Some(s) => println!(
                "| {name} | {} | {missed} | {:.0} | {:.0} | {:.0} |",
                s.count,
                micros(s.p50),
                micros(s.p99),
                micros(s.max)
            ),
            None => println!("| {name} | 0 | {missed} | - | - | - |"),
        }
    }
    if let (Some(f), Some(m)) = (floor, ours) {
        println!(
            "\nratio mountlag / floor: p50 {:.2}×, p99 {:.2}×",
            micros(m.p50) / micros(f.p50),
            micros(m.p99) / micros(f.p99)
        );
    }
}

pub fn print_snapshot(rows: &[(usize, Summary)]) {
    println!("| files | runs | p50 µs | p99 µs | max µs |");
    println!("|---:|---:|---:|---:|---:|");
    for (files, s) in rows {
        println!(
            "| {files} | {} | {:.0} | {:.0} | {:.0} |",
            s.count,
            micros(s.p50),
            micros(s.p99),
            micros(s.max)
        );
    }
}
