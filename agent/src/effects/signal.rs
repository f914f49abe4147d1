//! Signalling a controller process so that a recycled PID is never hit.
//!
//! ```text
//!  pidfd_open(pid) ──▶ re-read <proc_root>/<pid>/stat (start time) and cgroup (pod + container)
//!        │               └─ differ from the ProcessInfo that was chosen? ──▶ Recycled, no signal
//!        ▼
//!  pidfd_send_signal(pidfd, SIGHUP/SIGUSR1/SIGUSR2)
//! ```
//!
//! The pidfd pins the process: once it is open, the pid cannot be reused for another process
//! that the signal would then reach (if ours exits, the send fails with `ESRCH`). The re-check
//! after opening proves the pinned process is still the one that was chosen: same start time
//! (a recycled pid has a later one) and still in the target container's cgroup.
//!
//! A process that took a signal stays pinned ([`PinnedProcess`]): its pidfd is kept, so the
//! next reload needs neither a new pidfd nor the identity re-read — the pidfd still names that
//! very process or the send fails with `ESRCH` (then the process is looked up afresh). What a
//! living process can change about itself is re-read before every signal: whether it catches
//! the signal and keeps it unblocked (`/proc/<pid>/status`). Its start time cannot change, and
//! its cgroup is the container's for as long as it lives (runtimes never migrate a container's
//! processes; only root on the node could), so both are proven once, when the pidfd is opened.
//!
//! `proc_root` must be the `/proc` of the pid namespace the agent itself runs in — the host's
//! `/proc` with `hostPID: true` in the DaemonSet — because `pidfd_open` takes a pid of the
//! caller's namespace. Pointed at another tree (a fake one in tests), the re-check reads the
//! wrong process and the signal is refused as `Recycled` (or the pid is `Gone`).

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

use super::process::{MAX_SMALL_FILE_BYTES, ProcessInfo, read_identity, read_text};
use crate::config::ReloadSignal;

/// Why a signal was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The process exited (`ESRCH`), before or while being signalled.
    #[error("pid {pid} ({comm}) is gone: the process exited")]
    Gone { pid: i32, comm: String },
    /// The pid now belongs to a different process, or the process left the container.
    #[error("pid {pid} ({comm}) is no longer the chosen process: {reason}; not signalled")]
    Recycled {
        pid: i32,
        comm: String,
        reason: String,
    },
    /// `EPERM`: the agent lacks the capability to signal it (CAP_KILL, or a user namespace).
    #[error("not permitted to {op} pid {pid} ({comm}): {source}")]
    Permission {
        pid: i32,
        comm: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The process has no handler for the signal, or keeps it blocked: the signal would kill it
    /// (default action) or be dropped (HAProxy's master blocks SIGUSR2 for a while after each
    /// reload).
    #[error(
        "pid {pid} ({comm}) did not accept {signal} within {waited:?} (no handler installed, or \
         the signal blocked); not signalled"
    )]
    NotReady {
        pid: i32,
        comm: String,
        signal: &'static str,
        waited: std::time::Duration,
    },
    #[error("cannot {op} pid {pid} ({comm}): {source}")]
    Other {
        pid: i32,
        comm: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl SignalError {
    /// A stable label value (for metrics): `gone`, `recycled`, `permission`, `error`.
    pub fn reason(&self) -> &'static str {
        match self {
            SignalError::Gone { .. } => "gone",
            SignalError::Recycled { .. } => "recycled",
            SignalError::Permission { .. } => "permission",
            SignalError::NotReady { .. } => "not_ready",
            SignalError::Other { .. } => "error",
        }
    }
}

/// Sends `signal` to `target` via a pidfd, after proving that the pid still names the process
/// that was chosen (same start time, same pod and container cgroup). `target.cgroup` must name a
/// container: a process not proven to be in one is never signalled. Returns the process pinned,
/// for the next signal ([`signal_pinned`]).
///
/// `proc_root` must be the agent's own `/proc` (the host's, with `hostPID`); see the module doc.
pub fn signal_verified(
    proc_root: &Path,
    target: &ProcessInfo,
    signal: ReloadSignal,
) -> Result<PinnedProcess, SignalError> {
    let pinned = pin(proc_root, target)?;
    signal_pinned(proc_root, &pinned, signal)?;
    Ok(pinned)
}

/// A process proven to be the chosen one (start time and container cgroup read after its pidfd
/// was opened), held by that pidfd: signals through it reach this process or fail with `Gone`.
#[derive(Debug, Clone)]
pub struct PinnedProcess {
    pub info: ProcessInfo,
    pidfd: Arc<OwnedFd>,
}

/// Opens a pidfd on `target` and proves it names the chosen process: same start time, same pod
/// and container cgroup. Nothing is signalled.
pub fn pin(proc_root: &Path, target: &ProcessInfo) -> Result<PinnedProcess, SignalError> {
    let pid_number = target.pid;
    // Shown in messages only, and set by the process itself (`prctl(PR_SET_NAME)`): escaped.
    let comm = || crate::text::untrusted(&target.comm).to_string();
    let recycled = |reason: String| SignalError::Recycled {
        pid: pid_number,
        comm: comm(),
        reason,
    };

    let Some(expected_cgroup) = target.cgroup.as_ref().filter(|c| c.container_id.is_some()) else {
        return Err(recycled(
            "it was not found in a container's cgroup".to_string(),
        ));
    };
    // Checked before `from_raw`, which debug-asserts a non-negative pid.
    let Some(pid) = (pid_number > 0)
        .then(|| Pid::from_raw(pid_number))
        .flatten()
    else {
        return Err(SignalError::Other {
            pid: pid_number,
            comm: comm(),
            op: "open a pidfd for",
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a valid pid"),
        });
    };

    let pidfd = pidfd_open(pid, PidfdFlags::empty())
        .map_err(|e| errno_error(target, "open a pidfd for", e))?;

    let (stat, cgroup) = match read_identity(proc_root, pid_number) {
        Ok(found) => found,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(SignalError::Gone {
                pid: pid_number,
                comm: comm(),
            });
        }
        Err(err) => {
            return Err(SignalError::Other {
                pid: pid_number,
                comm: comm(),
                op: "re-read /proc of",
                source: err,
            });
        }
    };
    match stat {
        Some(stat) if stat.start_time == target.start_time => {}
        Some(stat) => {
            return Err(recycled(format!(
                "start time is {} (clock ticks after boot), expected {}",
                stat.start_time, target.start_time
            )));
        }
        None => return Err(recycled("its stat file is unreadable".to_string())),
    }
    if cgroup.as_ref() != Some(expected_cgroup) {
        let now = match &cgroup {
            Some(c) => format!(
                "pod {} container {}",
                c.pod_uid,
                c.container_id.as_deref().unwrap_or("none")
            ),
            None => "no pod".to_string(),
        };
        return Err(recycled(format!(
            "its cgroup is now {now}, expected pod {} container {}",
            expected_cgroup.pod_uid,
            expected_cgroup.container_id.as_deref().unwrap_or("none")
        )));
    }

    Ok(PinnedProcess {
        info: target.clone(),
        pidfd: Arc::new(pidfd),
    })
}

/// Sends `signal` through the pinned pidfd once the process catches it and has it unblocked.
/// `Gone` when the process has exited (its pid may already name another process, which the
/// pidfd never reaches).
pub fn signal_pinned(
    proc_root: &Path,
    pinned: &PinnedProcess,
    signal: ReloadSignal,
) -> Result<(), SignalError> {
    let target = &pinned.info;
    wait_until_accepting(proc_root, target, signal)?;
    pidfd_send_signal(&pinned.pidfd, rustix_signal(signal))
        .map_err(|err| errno_error(target, "send a signal to", err))?;
    tracing::debug!(
        pid = target.pid,
        comm = %target.comm,
        signal = signal.name(),
        "signal delivered via pidfd"
    );
    Ok(())
}

fn errno_error(target: &ProcessInfo, op: &'static str, err: Errno) -> SignalError {
    // Shown in messages only, and set by the process itself (`prctl(PR_SET_NAME)`): escaped.
    let comm = crate::text::untrusted(&target.comm).to_string();
    let pid = target.pid;
    match err {
        Errno::SRCH => SignalError::Gone { pid, comm },
        Errno::PERM | Errno::ACCESS => SignalError::Permission {
            pid,
            comm,
            op,
            source: err.into(),
        },
        _ => SignalError::Other {
            pid,
            comm,
            op,
            source: err.into(),
        },
    }
}

/// How long a process may take to (re)install its handler or unblock the signal.
const ACCEPT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const ACCEPT_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// Waits until the target catches `signal` and does not block it, as `/proc/<pid>/status`
/// shows (`SigCgt`, `SigBlk`). Signalling earlier would kill a process whose handler is not
/// installed yet, or be lost while it is blocked.
fn wait_until_accepting(
    proc_root: &Path,
    target: &ProcessInfo,
    signal: ReloadSignal,
) -> Result<(), SignalError> {
    let status_path = proc_root.join(target.pid.to_string()).join("status");
    let start = std::time::Instant::now();
    loop {
        let status =
            read_text(&status_path, MAX_SMALL_FILE_BYTES).map_err(|_| SignalError::Gone {
                pid: target.pid,
                comm: crate::text::untrusted(&target.comm).to_string(),
            })?;
        if accepts_signal(&status, signal.number()) == Some(true) {
            return Ok(());
        }
        if start.elapsed() >= ACCEPT_WAIT {
            return Err(SignalError::NotReady {
                pid: target.pid,
                comm: crate::text::untrusted(&target.comm).to_string(),
                signal: signal.name(),
                waited: ACCEPT_WAIT,
            });
        }
        std::thread::sleep(ACCEPT_POLL);
    }
}

/// Whether a process with this `/proc/<pid>/status` catches `signo` and has it unblocked;
/// `None` when the masks are missing or malformed.
pub fn accepts_signal(status: &str, signo: i32) -> Option<bool> {
    let mask = |field: &str| -> Option<u64> {
        let line = status.lines().find_map(|l| l.strip_prefix(field))?;
        u64::from_str_radix(line.trim(), 16).ok()
    };
    let bit = 1u64.checked_shl(u32::try_from(signo - 1).ok()?)?;
    let caught = mask("SigCgt:")? & bit != 0;
    let blocked = mask("SigBlk:")? & bit != 0;
    Some(caught && !blocked)
}

fn rustix_signal(signal: ReloadSignal) -> Signal {
    match signal {
        ReloadSignal::Hup => Signal::HUP,
        ReloadSignal::Usr1 => Signal::USR1,
        ReloadSignal::Usr2 => Signal::USR2,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::effects::process::CgroupMatch;

    #[test]
    fn a_signal_is_accepted_only_when_caught_and_unblocked() {
        // SIGHUP = bit 0, SIGUSR2 = bit 11 (0x800).
        let status = |blk: &str, cgt: &str| {
            format!("Name:\tx\nSigBlk:\t{blk}\nSigIgn:\t0000000000000000\nSigCgt:\t{cgt}\n")
        };
        assert_eq!(
            accepts_signal(&status("0000000000000000", "0000000000000801"), 1),
            Some(true)
        );
        assert_eq!(
            accepts_signal(&status("0000000000000000", "0000000000000801"), 12),
            Some(true)
        );
        assert_eq!(
            accepts_signal(&status("0000000000000800", "0000000000000801"), 12),
            Some(false),
            "blocked"
        );
        assert_eq!(
            accepts_signal(&status("0000000000000000", "0000000000000000"), 1),
            Some(false),
            "no handler: SIGHUP would kill"
        );
        assert_eq!(accepts_signal("Name:\tx\n", 1), None);
        assert_eq!(accepts_signal(&status("zz", "01"), 1), None);
    }

    #[test]
    fn signal_numbers_agree_with_the_config() {
        for s in ReloadSignal::ALL {
            assert_eq!(rustix_signal(s).as_raw(), s.number(), "{s}");
        }
    }

    fn fake(pid: i32, cgroup: Option<CgroupMatch>) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid: 1,
            comm: "nginx".into(),
            cmdline: vec![],
            start_time: 1,
            cgroup,
            nspid_is_one: false,
        }
    }

    const POD: &str = "0123456789abcdef0123456789abcdef";
    const START_TIME: u64 = 4242;

    fn container(id: char) -> String {
        id.to_string().repeat(64)
    }

    /// A kubelet-shaped cgroup v2 line: pod `POD`, and container `id` when given.
    fn cgroup_line(pod: &str, id: Option<&str>) -> String {
        let pod_dir =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod}.slice");
        match id {
            Some(id) => format!("0::{pod_dir}/cri-containerd-{id}.scope\n"),
            None => format!("0::{pod_dir}\n"),
        }
    }

    /// A real child process (`sleep`: SIGHUP and SIGUSR2 kill it) seen through a fake proc
    /// root whose `stat`, `cgroup` and `status` say what the test wants: a start time equal to
    /// the target's, a signal caught and unblocked, and the given cgroup file. Only the check a
    /// test is about can then refuse the signal; a signal that gets through kills the child.
    struct Child {
        child: std::process::Child,
        proc_root: tempfile::TempDir,
    }

    impl Child {
        fn spawn(cgroup_file: &str) -> Self {
            let child = std::process::Command::new("sleep")
                .arg("600")
                .stdin(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let proc_root = tempfile::tempdir().unwrap();
            let dir = proc_root.path().join(child.id().to_string());
            std::fs::create_dir(&dir).unwrap();
            let fields_4_to_21 = "1 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0";
            std::fs::write(
                dir.join("stat"),
                format!(
                    "{} (sleep) S {fields_4_to_21} {START_TIME} 0 0\n",
                    child.id()
                ),
            )
            .unwrap();
            std::fs::write(dir.join("cgroup"), cgroup_file).unwrap();
            // SIGHUP (bit 0) and SIGUSR2 (bit 11) caught, nothing blocked.
            std::fs::write(
                dir.join("status"),
                "Name:\tsleep\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n\
                 SigCgt:\t0000000000000801\n",
            )
            .unwrap();
            Self { child, proc_root }
        }

        fn pid(&self) -> i32 {
            i32::try_from(self.child.id()).unwrap()
        }

        /// The target as chosen: this pid and start time, in `cgroup`.
        fn target(&self, cgroup: Option<CgroupMatch>) -> ProcessInfo {
            ProcessInfo {
                start_time: START_TIME,
                ..fake(self.pid(), cgroup)
            }
        }

        fn signal(&self, target: &ProcessInfo) -> Result<(), SignalError> {
            signal_verified(self.proc_root.path(), target, ReloadSignal::Hup).map(drop)
        }

        fn write_status(&self, sig_cgt: &str) {
            let dir = self.proc_root.path().join(self.child.id().to_string());
            std::fs::write(
                dir.join("status"),
                format!(
                    "Name:\tsleep\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n\
                     SigCgt:\t{sig_cgt}\n"
                ),
            )
            .unwrap();
        }

        /// No refused SIGHUP reached the child: proven by a SIGUSR2 sent after them through the
        /// same path (the fake now shows the container the marker target names). Signals are
        /// pending from the moment they are sent and the lower number (SIGHUP) is delivered
        /// first, so the child dies of SIGUSR2 only if no SIGHUP was ever sent.
        fn assert_never_signalled(mut self) {
            use std::os::unix::process::ExitStatusExt as _;
            let marker = container('f');
            let dir = self.proc_root.path().join(self.child.id().to_string());
            std::fs::write(dir.join("cgroup"), cgroup_line(POD, Some(&marker))).unwrap();
            let sent = signal_verified(
                self.proc_root.path(),
                &self.target(in_container(&marker)),
                ReloadSignal::Usr2,
            );
            let status = self.child.wait().unwrap();
            assert_eq!(
                status.signal(),
                Some(Signal::USR2.as_raw()),
                "the child died of {status:?}, not of the marker SIGUSR2 ({sent:?})"
            );
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn in_container(id: &str) -> Option<CgroupMatch> {
        Some(CgroupMatch {
            pod_uid: POD.into(),
            container_id: Some(id.into()),
        })
    }

    fn recycled_reason(err: &SignalError) -> &str {
        match err {
            SignalError::Recycled { reason, .. } => reason,
            other => panic!("expected Recycled, got {other}"),
        }
    }

    /// The control for the guard tests below: with the container matching, the same fake
    /// passes every check and the signal is delivered.
    #[test]
    fn the_fake_process_is_signalled_when_its_container_matches() {
        use std::os::unix::process::ExitStatusExt as _;
        let mut child = Child::spawn(&cgroup_line(POD, Some(&container('a'))));
        child
            .signal(&child.target(in_container(&container('a'))))
            .unwrap();
        let status = child.child.wait().unwrap();
        assert_eq!(status.signal(), Some(Signal::HUP.as_raw()), "{status:?}");
    }

    /// A pinned process is signalled without its identity re-read, but what it can change
    /// while it lives — its handler — is read again before every signal.
    #[test]
    fn a_pinned_process_whose_handler_is_gone_is_not_signalled() {
        let child = Child::spawn(&cgroup_line(POD, Some(&container('a'))));
        let pinned = pin(
            child.proc_root.path(),
            &child.target(in_container(&container('a'))),
        )
        .unwrap();
        // SIGUSR2 (the marker) still caught, SIGHUP no longer.
        child.write_status("0000000000000800");
        let err = signal_pinned(child.proc_root.path(), &pinned, ReloadSignal::Hup).unwrap_err();
        assert!(matches!(err, SignalError::NotReady { .. }), "{err}");
        child.assert_never_signalled();
    }

    /// The pidfd, not the pid, names a pinned process: once it has exited the signal fails as
    /// `Gone` (and the caller looks the controller up again) even though the fake /proc still
    /// shows a live process with that pid, as a recycled pid would.
    #[test]
    fn a_pinned_process_that_exited_is_gone() {
        let mut child = Child::spawn(&cgroup_line(POD, Some(&container('a'))));
        let pinned = pin(
            child.proc_root.path(),
            &child.target(in_container(&container('a'))),
        )
        .unwrap();
        child.child.kill().unwrap();
        child.child.wait().unwrap();
        let err = signal_pinned(child.proc_root.path(), &pinned, ReloadSignal::Hup).unwrap_err();
        assert!(matches!(err, SignalError::Gone { .. }), "{err}");
    }

    #[test]
    fn a_process_outside_a_container_is_never_signalled() {
        // The process is in the pod's cgroup but in no container's (the pod cgroup itself, as
        // CRI-O's conmon is): its start time matches and its cgroup is the one chosen, so only
        // the container guard stands between it and the signal.
        let child = Child::spawn(&cgroup_line(POD, None));
        let pod_only = Some(CgroupMatch {
            pod_uid: POD.into(),
            container_id: None,
        });
        let err = child.signal(&child.target(pod_only)).unwrap_err();
        assert_eq!(
            recycled_reason(&err),
            "it was not found in a container's cgroup",
            "{err}"
        );
        // Chosen outside any pod (no cgroup found).
        let err = child.signal(&child.target(None)).unwrap_err();
        assert_eq!(
            recycled_reason(&err),
            "it was not found in a container's cgroup",
            "{err}"
        );
        child.assert_never_signalled();
    }

    #[test]
    fn a_process_in_another_cgroup_is_refused() {
        // Chosen in container a; /proc now shows it elsewhere. The start time matches, so only
        // the cgroup re-check can refuse.
        let chosen = in_container(&container('a'));
        let other_pod = "fedcba9876543210fedcba9876543210";
        for (now, says) in [
            (
                cgroup_line(POD, Some(&container('b'))),
                format!("its cgroup is now pod {POD} container {}", container('b')),
            ),
            (
                cgroup_line(other_pod, Some(&container('a'))),
                format!(
                    "its cgroup is now pod {other_pod} container {}",
                    container('a')
                ),
            ),
            (
                cgroup_line(POD, None),
                format!("its cgroup is now pod {POD} container none"),
            ),
            (
                "0::/user.slice/session-1.scope\n".to_string(),
                "its cgroup is now no pod".into(),
            ),
        ] {
            let child = Child::spawn(&now);
            let err = child.signal(&child.target(chosen.clone())).unwrap_err();
            assert!(recycled_reason(&err).starts_with(&says), "{now:?}: {err}");
            child.assert_never_signalled();
        }
    }

    #[test]
    fn a_recycled_pid_with_a_later_start_time_is_refused() {
        let child = Child::spawn(&cgroup_line(POD, Some(&container('a'))));
        let chosen = ProcessInfo {
            start_time: START_TIME - 1,
            ..child.target(in_container(&container('a')))
        };
        let err = child.signal(&chosen).unwrap_err();
        assert_eq!(
            recycled_reason(&err),
            format!(
                "start time is {START_TIME} (clock ticks after boot), expected {}",
                START_TIME - 1
            ),
            "{err}"
        );
        child.assert_never_signalled();
    }

    #[test]
    fn a_hostile_comm_is_escaped_in_the_error() {
        let mut target = fake(std::process::id() as i32, None);
        target.comm = "\u{1b}]0;owned\u{7}\n".into();
        let err = signal_verified(Path::new("/proc"), &target, ReloadSignal::Hup).unwrap_err();
        let text = err.to_string();
        assert!(!text.chars().any(crate::text::needs_escape), "{text:?}");
        assert!(text.contains("(\\u{1b}]0;owned\\u{7}\\n)"), "{text}");
    }

    #[test]
    fn a_missing_pid_is_gone_and_pid_0_is_no_pid() {
        let root = Path::new("/proc");
        let cgroup = in_container(&container('a'));
        let err =
            signal_verified(root, &fake(i32::MAX, cgroup.clone()), ReloadSignal::Hup).unwrap_err();
        assert!(matches!(err, SignalError::Gone { .. }), "{err}");
        let err = signal_verified(root, &fake(0, cgroup), ReloadSignal::Hup).unwrap_err();
        assert!(matches!(err, SignalError::Other { .. }), "{err}");
    }
}
