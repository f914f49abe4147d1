//! Real nginx and HAProxy on kubelet stand-in volumes: they serve the leaf on disk, take a new
//! one on their reload signal (proved by a TLS handshake, not by the signal), lose no request
//! while rotating under load, keep the old leaf when handed a broken one, and run in
//! kubelet-shaped cgroups.
//!
//! Needs root (tmpfs, cgroups) and the Debian nginx / haproxy packages. Without them every test
//! skips loudly, or fails under `MOUNTLAG_REQUIRE_REAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mountlag::effects::probe::{self, ProbeError, ServedLeaf};
use mountlag_testbed::certs::{IssuedLeaf, LeafSpec, TestCa};
use mountlag_testbed::controllers::{self, ControllerKind, ControllerSpec, RunningController};
use mountlag_testbed::kubelet::{KubeletStandIn, Payload, VolumeKind, WriteOutcome};
use mountlag_testbed::real;
use mountlag_testbed::tlsload::LoadGenerator;
use nix::sys::signal::kill;
use nix::unistd::Pid;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a test waits for the new leaf after the signal: a failure here means "not served",
/// not "slow" — nginx and HAProxy take 50–100 ms, and `testbed bench reload` measures that; the
/// bound is generous because CI machines are loaded.
const SERVED_WITHIN: Duration = Duration::from_secs(10);

fn real_parts(kind: ControllerKind) -> bool {
    real::require("root + tmpfs", real::can_mount())
        && real::require(kind.name(), controllers::available(kind))
}

fn random_uid() -> String {
    let mut b = [0u8; 16];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A pod with one Secret volume on a kubelet stand-in, a CA, and the names to serve.
struct Bed {
    kind: ControllerKind,
    kubelet: KubeletStandIn,
    pod_uid: String,
    dir: PathBuf,
    ca: TestCa,
    names: Vec<String>,
}

impl Bed {
    fn new(kind: ControllerKind) -> Self {
        let kubelet = KubeletStandIn::in_tempdir().unwrap();
        let pod_uid = random_uid();
        let dir = kubelet
            .mount_volume(&pod_uid, VolumeKind::Secret, "tls")
            .unwrap();
        Self {
            kind,
            kubelet,
            pod_uid,
            dir,
            ca: TestCa::new("controllers test CA").unwrap(),
            names: vec!["edge.example.test".into(), "www.example.test".into()],
        }
    }

    fn issue(&self) -> IssuedLeaf {
        self.ca.issue(&LeafSpec::valid_for(&self.names)).unwrap()
    }

    fn write_payload(&self, payload: &Payload) {
        let outcome = self.kubelet.write(&self.dir, payload, None).unwrap();
        assert!(
            matches!(outcome, WriteOutcome::Written { .. }),
            "{outcome:?}"
        );
    }

    /// AtomicWriter swap to `leaf`.
    fn write(&self, leaf: &IssuedLeaf) {
        self.write_payload(&controllers::payload(self.kind, leaf));
    }

    fn spec(&self) -> ControllerSpec {
        ControllerSpec::new(self.kind, &self.pod_uid, &self.dir, self.names.clone())
    }

    fn start(&self) -> RunningController {
        RunningController::start(self.spec()).unwrap()
    }
}

fn served_summary(results: &[(probe::ProbeTarget, Result<ServedLeaf, ProbeError>)]) -> String {
    results
        .iter()
        .map(|(t, r)| match r {
            Ok(l) => format!("{t}: {}", &l.fingerprint_sha256[..12]),
            Err(e) => format!("{t}: {e}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Probe every name + no SNI until all serve `leaf`; returns how long that took.
async fn wait_served(
    ctl: &RunningController,
    names: &[String],
    leaf: &IssuedLeaf,
    within: Duration,
) -> Duration {
    let addr = ctl.addr();
    let started = Instant::now();
    loop {
        let results = probe::probe_all(addr, names, PROBE_TIMEOUT).await;
        assert_eq!(results.len(), names.len() + 1);
        if results.iter().all(|(_, r)| {
            r.as_ref()
                .is_ok_and(|l| l.fingerprint_sha256 == leaf.fingerprint_sha256)
        }) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "leaf {} not served on every target within {within:?}: {}\ncontroller log:\n{}",
            &leaf.fingerprint_sha256[..12],
            served_summary(&results),
            tail(&ctl.log(), 30)
        );
    }
}

/// Every target serves `leaf` now.
async fn assert_serving(addr: SocketAddr, names: &[String], leaf: &IssuedLeaf) {
    let results = probe::probe_all(addr, names, PROBE_TIMEOUT).await;
    let targets: Vec<Option<String>> = results.iter().map(|(t, _)| t.sni.clone()).collect();
    let mut expected: Vec<Option<String>> = names.iter().cloned().map(Some).collect();
    expected.push(None);
    assert_eq!(targets, expected);
    for (target, result) in &results {
        let served = result.as_ref().unwrap_or_else(|e| panic!("{target}: {e}"));
        assert_eq!(
            served.fingerprint_sha256,
            leaf.fingerprint_sha256,
            "{target}: {}",
            served_summary(&results)
        );
    }
}

/// The file descriptors of `pid` that could report a file change: inotify and fanotify
/// instances (`anon_inode:inotify`, `anon_inode:[fanotify]`).
fn file_watchers(pid: i32) -> Vec<String> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new(); // Gone (a worker replaced meanwhile): it watches nothing.
    };
    fds.filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| target.contains("inotify") || target.contains("fanotify"))
        .collect()
}

/// Rotations under load: 10, or `MOUNTLAG_CONTROLLER_ROTATIONS` (e.g. 100, the design target).
fn rotations() -> usize {
    std::env::var("MOUNTLAG_CONTROLLER_ROTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

// ------------------------------------------------------------------------ rotation + timing

async fn rotation_is_served_after_the_signal(kind: ControllerKind) {
    if !real_parts(kind) {
        return;
    }
    let bed = Bed::new(kind);
    let v1 = bed.issue();
    bed.write(&v1);
    let ctl = bed.start();
    let addr = ctl.addr();

    // v1 everywhere, with its notAfter and subject.
    assert_serving(addr, &bed.names, &v1).await;
    let (_, first) = &probe::probe_all(addr, &bed.names, PROBE_TIMEOUT).await[0];
    let first = first.as_ref().unwrap();
    assert_eq!(first.subject, "CN=edge.example.test");
    assert!(first.not_after.is_some());

    // Without a signal nothing changes: the controller does not watch its files. Not waited
    // for (no wait proves that nothing comes later): no process of the controller holds an
    // inotify or fanotify instance, so nothing can tell it about the write; a controller that
    // polled its files would show up in the timings below (served before the signal).
    let v2 = bed.issue();
    bed.write(&v2);
    assert_serving(addr, &bed.names, &v1).await;
    for pid in ctl.pids() {
        let watchers = file_watchers(pid);
        assert!(
            watchers.is_empty(),
            "pid {pid} of {} can watch files: {watchers:?}",
            kind.name()
        );
    }

    // Signal → v2; then more rotations for timings (swap → every target serves the new leaf).
    // Before each signal wait until the master acts on it: HAProxy's re-executed master
    // ignores SIGUSR2 for a while after every reload (RunningController::reload_ready).
    let master = ctl.master_pid();
    kill(Pid::from_raw(master), ctl.reload_signal()).unwrap();
    let mut timings = vec![wait_served(&ctl, &bed.names, &v2, SERVED_WITHIN).await];
    let mut deaf = Vec::new();
    for _ in 0..9 {
        deaf.push(ctl.wait_reload_ready(Duration::from_secs(5)).unwrap());
        let next = bed.issue();
        let swap = Instant::now();
        bed.write(&next);
        kill(Pid::from_raw(master), ctl.reload_signal()).unwrap();
        wait_served(&ctl, &bed.names, &next, SERVED_WITHIN).await;
        timings.push(swap.elapsed());
    }
    assert_eq!(
        ctl.master_pid(),
        master,
        "the master keeps its PID across reloads"
    );
    timings.sort();
    deaf.sort();
    eprintln!(
        "{}: swap → new leaf served on {} targets, {} rotations: min {:?}, median {:?}, max {:?}; \
         new leaf served → master ready for the next signal: median {:?}, max {:?}",
        kind.name(),
        bed.names.len() + 1,
        timings.len(),
        timings[0],
        percentile(&timings, 0.5),
        timings[timings.len() - 1],
        percentile(&deaf, 0.5),
        deaf[deaf.len() - 1],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_the_new_leaf_after_sighup() {
    rotation_is_served_after_the_signal(ControllerKind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_serves_the_new_leaf_after_sigusr2() {
    rotation_is_served_after_the_signal(ControllerKind::Haproxy).await;
}

// ---------------------------------------------------------------------------- under load

async fn rotations_under_load_lose_no_request(kind: ControllerKind) {
    if !real_parts(kind) {
        return;
    }
    let bed = Bed::new(kind);
    let mut leaves = vec![bed.issue()];
    bed.write(&leaves[0]);
    let ctl = bed.start();
    let addr = ctl.addr();
    assert_serving(addr, &bed.names, &leaves[0]).await;

    let load = LoadGenerator::start(addr, &bed.names, 4).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut timings = Vec::new();
    for _ in 0..rotations() {
        let before = load.requests();
        let next = bed.issue();
        let swap = Instant::now();
        bed.write(&next);
        ctl.reload().unwrap();
        wait_served(&ctl, &bed.names, &next, SERVED_WITHIN).await;
        timings.push(swap.elapsed());
        let next_fp = next.fingerprint_sha256.clone();
        leaves.push(next);
        // Let the load run on the new leaf (and the old workers drain) before the next swap,
        // until its clients have been served the new leaf themselves.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let waited = Instant::now();
        while !(load.requests() > before && load.has_seen(&next_fp))
            && waited.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            load.requests() > before,
            "the load generator made no progress"
        );
    }
    let enough = Instant::now();
    while load.requests() < 100 && enough.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = load.stop();
    timings.sort();
    eprintln!(
        "{} under load: {report}; swap → served: median {:?}, max {:?}",
        kind.name(),
        percentile(&timings, 0.5),
        timings[timings.len() - 1]
    );
    assert_eq!(
        report.failures,
        0,
        "{report}\ncontroller log:\n{}",
        tail(&ctl.log(), 40)
    );
    assert!(report.requests >= 100, "{report}");
    // Every leaf the clients saw is one we issued, and the rotations were seen by the clients.
    let issued: BTreeSet<&str> = leaves
        .iter()
        .map(|l| l.fingerprint_sha256.as_str())
        .collect();
    for fp in report.fingerprints_seen.keys() {
        assert!(issued.contains(fp.as_str()), "unknown leaf {fp} served");
    }
    assert!(
        report
            .fingerprints_seen
            .contains_key(&leaves[leaves.len() - 1].fingerprint_sha256),
        "{report}"
    );
    assert!(
        report.fingerprints_seen.len() >= rotations(),
        "{:?}",
        report.fingerprints_seen
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_rotations_under_load_lose_no_request() {
    rotations_under_load_lose_no_request(ControllerKind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_rotations_under_load_lose_no_request() {
    rotations_under_load_lose_no_request(ControllerKind::Haproxy).await;
}

// ------------------------------------------------------------------------- broken material

async fn broken_material_keeps_the_old_leaf(kind: ControllerKind, expected_log: &[&str]) {
    if !real_parts(kind) {
        return;
    }
    let bed = Bed::new(kind);
    let v1 = bed.issue();
    bed.write(&v1);
    let ctl = bed.start();
    let addr = ctl.addr();
    assert_serving(addr, &bed.names, &v1).await;
    let mut pids_before = ctl.pids();
    pids_before.sort_unstable();
    // Clients throughout: what they are served, and whether any request fails, from before the
    // broken reload until the good one after it is served.
    let load = LoadGenerator::start(addr, &bed.names, 2).unwrap();

    // v2's certificate with v1's key: parsable PEM, but the pair does not match.
    let v2 = bed.issue();
    bed.write_payload(&controllers::payload_from_pem(
        kind,
        &v2.chain_pem,
        &v1.key_pem,
    ));
    ctl.reload().unwrap();

    // Wait for the controller to have tried (its log says so), then it still serves v1.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !expected_log.iter().all(|m| ctl.log().contains(m)) {
        assert!(
            Instant::now() < deadline,
            "expected {expected_log:?} in the log:\n{}",
            tail(&ctl.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_serving(addr, &bed.names, &v1).await;
    let mut pids_now = ctl.pids();
    pids_now.sort_unstable();
    assert_eq!(pids_now, pids_before, "the old processes keep serving");
    eprintln!(
        "{} on a mismatched key logs:\n{}",
        kind.name(),
        ctl.log()
            .lines()
            .filter(|l| expected_log.iter().any(|m| l.contains(m))
                || l.contains("[emerg]")
                || l.contains("[ALERT]"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Good material again: the next reload takes it. The controller handles its signals one
    // after the other, so once v3 is served and the clients have seen it, anything the failed
    // reload could still have changed has happened.
    let v3 = bed.issue();
    bed.write(&v3);
    ctl.reload().unwrap();
    wait_served(&ctl, &bed.names, &v3, SERVED_WITHIN).await;
    let seen_v3 = Instant::now();
    while !load.has_seen(&v3.fingerprint_sha256) {
        assert!(
            seen_v3.elapsed() < SERVED_WITHIN,
            "the clients were never served v3"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = load.stop();
    assert_eq!(
        report.failures,
        0,
        "{report}\ncontroller log:\n{}",
        tail(&ctl.log(), 40)
    );
    let served: BTreeSet<&str> = report
        .fingerprints_seen
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        served,
        BTreeSet::from([
            v1.fingerprint_sha256.as_str(),
            v3.fingerprint_sha256.as_str()
        ]),
        "v1 until the good reload, then v3; never v2 ({})",
        &v2.fingerprint_sha256[..12]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_keeps_the_old_leaf_when_the_key_does_not_match() {
    broken_material_keeps_the_old_leaf(ControllerKind::Nginx, &["[emerg]", "key values mismatch"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_keeps_the_old_leaf_when_the_key_does_not_match() {
    broken_material_keeps_the_old_leaf(
        ControllerKind::Haproxy,
        &[
            "inconsistencies between private key and certificate",
            "Loading failure!",
        ],
    )
    .await;
}

// --------------------------------------------------------------------------------- cgroups

/// `(hierarchy id, controllers, path)` of every line of `/proc/<pid>/cgroup`.
fn proc_cgroups(pid: i32) -> Vec<(String, String, String)> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ':');
            (
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
            )
        })
        .collect()
}

fn ppid(pid: i32) -> i32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn processes_live_in_kubelet_shaped_cgroups(kind: ControllerKind) {
    if !real_parts(kind) {
        return;
    }
    let v1 = real::require("cgroup v1 pids hierarchy", controllers::v1_available());
    let bed = Bed::new(kind);
    let leaf = bed.issue();
    bed.write(&leaf);
    let spec = bed.spec().with_v1(v1);
    let container_id = spec.container_id.clone();
    let ctl = RunningController::start(spec).unwrap();

    // Written out by hand (not with the library's helper): kubelet's systemd-driver path.
    let expected = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{container_id}.scope",
        bed.pod_uid.replace('-', "_")
    );
    assert!(expected.contains(&bed.pod_uid.replace('-', "_")));

    let check = |pids: &[i32]| {
        for &pid in pids {
            let lines = proc_cgroups(pid);
            assert!(
                lines.contains(&("0".into(), String::new(), expected.clone())),
                "pid {pid}: {lines:?}"
            );
            if v1 {
                assert!(
                    lines
                        .iter()
                        .any(|(_, ctrls, path)| ctrls.split(',').any(|c| c == "pids")
                            && *path == expected),
                    "pid {pid}: no v1 pids line: {lines:?}"
                );
            }
        }
    };

    let master = ctl.master_pid();
    let pids = ctl.pids();
    assert!(pids.contains(&master), "{pids:?} lacks master {master}");
    let workers: Vec<i32> = pids.iter().copied().filter(|&p| p != master).collect();
    assert_eq!(workers.len(), kind.settled_process_count() - 1, "{pids:?}");
    for &w in &workers {
        assert_eq!(ppid(w), master, "worker {w} is the master's child");
    }
    check(&pids);
    let comm = fs::read_to_string(format!("/proc/{master}/comm")).unwrap();
    assert_eq!(comm.trim(), kind.name());
    if kind == ControllerKind::Nginx {
        let cmdline = fs::read(format!("/proc/{master}/cmdline")).unwrap();
        assert!(
            String::from_utf8_lossy(&cmdline).starts_with("nginx: master process"),
            "{cmdline:?}"
        );
    }
    let paths = ctl.cgroup_paths();
    assert_eq!(paths.len(), if v1 { 2 } else { 1 });
    assert!(
        paths
            .iter()
            .all(|p| p.ends_with(expected.trim_start_matches('/')))
    );

    // Workers born by a reload are in the cgroup too.
    let next = bed.issue();
    bed.write(&next);
    ctl.reload().unwrap();
    wait_served(&ctl, &bed.names, &next, SERVED_WITHIN).await;
    // The old workers leave first: an exiting process is still listed in the v2 cgroup.procs
    // while its /proc/<pid>/cgroup already shows the v1 root (seen with HAProxy's old worker).
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let now = ctl.pids();
        if now.len() == kind.settled_process_count() && workers.iter().all(|w| !now.contains(w)) {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "old workers {workers:?} still there after reload: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        after.iter().any(|p| !pids.contains(p)),
        "no new worker after reload: {after:?}"
    );
    check(&after);

    // Drop kills everything and removes the cgroup dirs.
    drop(ctl);
    for pid in after {
        assert!(
            !fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")),
            "pid {pid} still alive after drop"
        );
    }
    for p in &paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_processes_live_in_kubelet_shaped_cgroups() {
    processes_live_in_kubelet_shaped_cgroups(ControllerKind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_processes_live_in_kubelet_shaped_cgroups() {
    processes_live_in_kubelet_shaped_cgroups(ControllerKind::Haproxy).await;
}
