//! Finding a controller process by its kubelet-shaped cgroup and signalling it through a pidfd,
//! with a real child process moved into a real cgroup (cgroup v2), plus selection rules on fake
//! process tables (nginx master/workers, HAProxy `-W`).
//!
//! The cgroup part needs root and a writable cgroup v2 hierarchy. Under
//! `MOUNTLAG_REQUIRE_REAL=1` their absence fails the test; elsewhere it prints `SKIPPED:`.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mountlag::config::{ReloadAction, ReloadSignal};
use mountlag::effects::process::{
    CgroupMatch, ProcessError, ProcessInfo, Target, container_processes, find_reload_target, scan,
    select_target,
};
use mountlag::effects::signal::{SignalError, signal_pinned, signal_verified};
use mountlag_core::pod::{ContainerInfo, ControllerPod};

const REQUIRE_REAL_ENV: &str = "MOUNTLAG_REQUIRE_REAL";

/// `true` when the test may go on; otherwise panics under `MOUNTLAG_REQUIRE_REAL=1`, or prints
/// `SKIPPED:` and returns `false`.
fn require(test: &str, part: &str, available: Result<(), String>) -> bool {
    let why = match available {
        Ok(()) => return true,
        Err(why) => why,
    };
    if std::env::var(REQUIRE_REAL_ENV).is_ok_and(|v| v.trim() == "1") {
        panic!(
            "{test}: requires {part}, which is unavailable: {why} \
             ({REQUIRE_REAL_ENV}=1 forbids skipping; run as root on a machine that has it)"
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test}: {part}: {why} (set {REQUIRE_REAL_ENV}=1 to make this a failure)"
    );
    false
}

/// The mount point of a writable cgroup v2 hierarchy (`/sys/fs/cgroup/unified` on hybrid hosts,
/// `/sys/fs/cgroup` on pure v2 ones), for root.
fn cgroup2_root() -> Result<PathBuf, String> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return Err(format!("not running as root (euid {euid})"));
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let root = mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .ok_or("no cgroup2 hierarchy is mounted")?;
    let probe = root.join(format!("mountlag-probe-{}", std::process::id()));
    fs::create_dir(&probe)
        .map_err(|e| format!("cannot create a cgroup under {}: {e}", root.display()))?;
    let _ = fs::remove_dir(&probe);
    Ok(root)
}

/// A kubelet-shaped cgroup (systemd driver, Burstable, containerd) under a unique top directory
/// standing in for a `cgroupRoot`, removed again on drop.
struct PodCgroup {
    hierarchy: PathBuf,
    top: PathBuf,
    scope: PathBuf,
}

impl PodCgroup {
    fn create(hierarchy: &Path, pod_uid: &str, container_id: &str) -> PodCgroup {
        let top = hierarchy.join(format!(
            "mountlag-test-{}-{}.slice",
            std::process::id(),
            nanos()
        ));
        let scope = top.join(format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{container_id}.scope",
            pod_uid.replace('-', "_")
        ));
        fs::create_dir_all(&scope).unwrap();
        PodCgroup {
            hierarchy: hierarchy.to_path_buf(),
            top,
            scope,
        }
    }

    fn enter(&self, pid: u32) {
        fs::write(self.scope.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        // Kill whatever is left (the shell's `sleep` children), or move it out when cgroup.kill
        // is missing, then remove the directories bottom-up once the cgroup is empty.
        if fs::write(self.scope.join("cgroup.kill"), "1").is_err()
            && let Ok(pids) = fs::read_to_string(self.scope.join("cgroup.procs"))
        {
            for pid in pids.lines() {
                let _ = fs::write(self.hierarchy.join("cgroup.procs"), pid);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut dir = self.scope.clone();
        loop {
            while fs::remove_dir(&dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if dir == self.top {
                break;
            }
            match dir.parent() {
                Some(parent) => dir = parent.to_path_buf(),
                None => break,
            }
        }
    }
}

/// Kills and reaps the child on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pod(uid: &str, containers: &[(&str, Option<&str>)]) -> ControllerPod {
    ControllerPod {
        uid: uid.to_string(),
        namespace: "ingress".to_string(),
        name: "edge-0".to_string(),
        controller: "edge".to_string(),
        resync_annotation: None,
        restart_annotation: None,
        config_hash: None,
        host_network: false,
        pod_ips: Vec::new(),
        terminating: false,
        containers: containers
            .iter()
            .map(|(name, id)| ContainerInfo {
                name: name.to_string(),
                container_id: id.map(str::to_string),
                mounts: Vec::new(),
            })
            .collect(),
        volumes: Vec::new(),
    }
}

#[test]
fn a_real_process_in_a_kubelet_cgroup_is_found_and_signalled_through_a_pidfd() {
    let test = "a_real_process_in_a_kubelet_cgroup_is_found_and_signalled_through_a_pidfd";
    let hierarchy = match cgroup2_root() {
        Ok(root) => root,
        Err(why) => {
            require(test, "root + a writable cgroup v2 hierarchy", Err(why));
            return;
        }
    };

    // Unique ids per run: parallel runs do not share a cgroup.
    let n = nanos();
    let pod_uid = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        std::process::id(),
        n & 0xffff,
        (n >> 16) & 0xfff,
        (n >> 28) & 0xfff,
        (n >> 40) & 0xffff_ffff_ffff
    );
    let container_id = format!("{:032x}{:032x}", n, u128::from(std::process::id()));
    let sidecar_id = format!("{:064x}", n ^ 0x5a5a);

    let dir = tempfile::tempdir().unwrap();
    let hup_file = dir.path().join("hup");
    let ready_file = dir.path().join("ready");
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"trap 'echo HUP >> "$HUP_FILE"' HUP; trap 'echo USR1 >> "$HUP_FILE"' USR1; echo ready > "$READY_FILE"; while :; do sleep 0.05; done"#)
        .env("HUP_FILE", &hup_file)
        .env("READY_FILE", &ready_file)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let child = Reaped(child);
    let pid = child.0.id();
    wait_for("the shell's trap", || ready_file.exists());

    let cgroup = PodCgroup::create(&hierarchy, &pod_uid, &container_id);
    cgroup.enter(pid);

    // scan finds it by pod UID + container id; the test process itself is not in the container.
    let procs = scan(Path::new("/proc"));
    let mine = container_processes(&procs, &pod_uid, &container_id);
    let shell = mine
        .iter()
        .find(|p| p.pid == pid as i32)
        .unwrap_or_else(|| panic!("pid {pid} not found in the container: {mine:?}"));
    assert_eq!(
        shell.cgroup,
        Some(CgroupMatch {
            pod_uid: pod_uid.clone(),
            container_id: Some(container_id.clone()),
        })
    );
    assert_eq!(shell.comm, "sh");
    assert!(
        !mine.iter().any(|p| p.pid == std::process::id() as i32),
        "the test process is outside the container"
    );
    assert!(container_processes(&procs, &pod_uid, &sidecar_id).is_empty());

    // Selection: by title prefix, and as the container's init (parent outside the container;
    // the shell's `sleep` children have it as their parent).
    let by_title = select_target(
        &mine,
        &Target::TitlePrefix("sh".into()),
        "ingress/edge-0",
        "ctl",
    )
    .unwrap();
    assert_eq!(by_title.pid, pid as i32);
    let init = select_target(&mine, &Target::InitProcess, "ingress/edge-0", "ctl").unwrap();
    assert_eq!(init.pid, pid as i32);
    let err = select_target(
        &mine,
        &Target::TitlePrefix("nginx: master process".into()),
        "ingress/edge-0",
        "ctl",
    )
    .unwrap_err();
    assert!(matches!(err, ProcessError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("ingress/edge-0"), "{err}");

    // The whole lookup, from the pod: the sidecar has no processes, a container without an id
    // is skipped, the first hit wins.
    let controller_pod = pod(
        &pod_uid,
        &[
            ("pending", None),
            ("sidecar", Some(&sidecar_id)),
            ("ctl", Some(&container_id)),
        ],
    );
    let reload = ReloadAction::Signal {
        signal: ReloadSignal::Hup,
        process: None,
        go: mountlag::config::GoSignalPolicy::Refuse,
    };
    let target = find_reload_target(Path::new("/proc"), &controller_pod, None, &reload).unwrap();
    assert_eq!(target.pid, pid as i32);
    let only_sidecar = ["sidecar".to_string()];
    let err = find_reload_target(
        Path::new("/proc"),
        &controller_pod,
        Some(&only_sidecar),
        &reload,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("container sidecar") && err.to_string().contains("0 process"),
        "{err}"
    );
    let err = find_reload_target(
        Path::new("/proc"),
        &controller_pod,
        Some(&["pending".to_string()]),
        &reload,
    )
    .unwrap_err();
    assert!(matches!(err, ProcessError::NoContainerId { .. }), "{err}");
    let err = find_reload_target(
        Path::new("/proc"),
        &controller_pod,
        None,
        &ReloadAction::Http {
            url: "http://127.0.0.1:2019/load".into(),
        },
    )
    .unwrap_err();
    assert!(matches!(err, ProcessError::NotSignalled { .. }), "{err}");

    // The signal arrives, through the trap, and the shell lives on; the next one goes through
    // the same pidfd.
    let pinned = signal_verified(Path::new("/proc"), &target, ReloadSignal::Hup).unwrap();
    wait_for("the HUP trap to write its file", || {
        fs::read_to_string(&hup_file).is_ok_and(|t| t.contains("HUP"))
    });
    signal_pinned(Path::new("/proc"), &pinned, ReloadSignal::Hup).unwrap();
    wait_for("the second HUP", || {
        fs::read_to_string(&hup_file).is_ok_and(|t| t.matches("HUP").count() == 2)
    });

    // A forged identity (as if the pid had been recycled) is refused before any signal.
    let hups_before = fs::read_to_string(&hup_file).unwrap();
    let forged = ProcessInfo {
        start_time: target.start_time + 1,
        ..target.clone()
    };
    let err = signal_verified(Path::new("/proc"), &forged, ReloadSignal::Hup).unwrap_err();
    assert!(matches!(err, SignalError::Recycled { .. }), "{err}");
    assert!(err.to_string().contains(&format!("pid {pid}")), "{err}");
    let moved = ProcessInfo {
        cgroup: Some(CgroupMatch {
            pod_uid: pod_uid.clone(),
            container_id: Some(sidecar_id.clone()),
        }),
        ..target.clone()
    };
    let err = signal_verified(Path::new("/proc"), &moved, ReloadSignal::Hup).unwrap_err();
    assert!(matches!(err, SignalError::Recycled { .. }), "{err}");
    // Quiescence: a SIGUSR1 sent after the refused SIGHUPs. The shell runs pending traps in
    // signal-number order (SIGHUP 1 before SIGUSR1 10), so once the USR1 line is written, a
    // SIGHUP sent before it would have written its line first.
    signal_verified(Path::new("/proc"), &target, ReloadSignal::Usr1).unwrap();
    wait_for("the marker SIGUSR1", || {
        fs::read_to_string(&hup_file).is_ok_and(|t| t.contains("USR1"))
    });
    assert_eq!(
        fs::read_to_string(&hup_file).unwrap(),
        format!("{hups_before}USR1\n"),
        "a refused signal must not be delivered"
    );

    // Once the process is gone, the cached target is Gone, not signalled.
    drop(child);
    let err = signal_verified(Path::new("/proc"), &target, ReloadSignal::Hup).unwrap_err();
    assert!(
        matches!(err, SignalError::Gone { .. }),
        "expected Gone after the process exited: {err}"
    );
    let err = signal_pinned(Path::new("/proc"), &pinned, ReloadSignal::Hup).unwrap_err();
    assert!(
        matches!(err, SignalError::Gone { .. }),
        "expected the pinned process Gone after it exited: {err}"
    );
    drop(cgroup);
}

// ------------------------------------------------------------- selection on fake process tables

const U: &str = "8f3c2a1e-5b6d-4e7f-9a0b-1c2d3e4f5a6b";

fn fake(
    pid: i32,
    ppid: i32,
    comm: &str,
    argv: &[&str],
    start: u64,
    container: &str,
) -> ProcessInfo {
    ProcessInfo {
        pid,
        ppid,
        comm: comm.to_string(),
        cmdline: argv.iter().map(|a| a.to_string()).collect(),
        start_time: start,
        cgroup: Some(CgroupMatch {
            pod_uid: U.to_string(),
            container_id: Some(container.to_string()),
        }),
        nspid_is_one: false,
    }
}

#[test]
fn nginx_master_is_chosen_over_its_workers() {
    let c = "a".repeat(64);
    let pause = "b".repeat(64);
    let procs = vec![
        fake(900, 800, "pause", &["/pause"], 1, &pause),
        fake(
            1000,
            800,
            "nginx",
            &["nginx: master process /usr/sbin/nginx -g daemon off;"],
            10,
            &c,
        ),
        fake(1001, 1000, "nginx", &["nginx: worker process"], 11, &c),
        fake(1002, 1000, "nginx", &["nginx: worker process"], 11, &c),
    ];
    let mine = container_processes(&procs, U, &c);
    assert_eq!(mine.len(), 3, "the pause container is another container");
    for prefix in ["nginx: master process", "nginx"] {
        let chosen =
            select_target(&mine, &Target::TitlePrefix(prefix.into()), "ns/p", "nginx").unwrap();
        assert_eq!(chosen.pid, 1000, "{prefix}");
    }
    let init = select_target(&mine, &Target::InitProcess, "ns/p", "nginx").unwrap();
    assert_eq!(init.pid, 1000);
}

#[test]
fn haproxy_w_master_is_chosen_over_workers_with_the_same_argv() {
    let c = "c".repeat(64);
    let argv = ["haproxy", "-W", "-f", "/usr/local/etc/haproxy/haproxy.cfg"];
    let procs = vec![
        fake(2000, 1900, "haproxy", &argv, 100, &c),
        // An old worker still draining after a reload, and the new one.
        fake(2001, 2000, "haproxy", &argv, 101, &c),
        fake(2005, 2000, "haproxy", &argv, 180, &c),
    ];
    let mine = container_processes(&procs, U, &c);
    let chosen = select_target(
        &mine,
        &Target::TitlePrefix("haproxy".into()),
        "ns/p",
        "haproxy",
    )
    .unwrap();
    assert_eq!(chosen.pid, 2000);
}

#[test]
fn a_missing_process_names_what_was_wanted() {
    let c = "d".repeat(64);
    let procs = vec![fake(3000, 1, "traefik", &["traefik"], 1, &c)];
    let mine = container_processes(&procs, U, &c);
    let err = select_target(
        &mine,
        &Target::TitlePrefix("haproxy".into()),
        "ingress/edge-0",
        "proxy",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("ingress/edge-0")
            && text.contains("container proxy")
            && text.contains("\"haproxy\"")
            && text.contains("1 process(es)"),
        "{text}"
    );
}
