//! Finding the controller process to reload: which processes belong to a pod's container
//! (by their cgroup), and which of those is the one to signal.
//!
//! ```text
//!  <proc_root>/<pid>/cgroup ──parse_cgroup_file──▶ CgroupMatch { pod UID, container id }
//!  <proc_root>/<pid>/{stat,status,cmdline,comm} ──▶ ProcessInfo
//!        │ container_processes(pod UID, container id)      (the pause container has its own id)
//!        ▼
//!  select_target: title/comm prefix whose parent does not match too (nginx master, HAProxy -W
//!                 master), oldest first; or the container's init process
//! ```
//!
//! Parsing is pure and tested with literal lines. Reading `/proc` is thin: a process that
//! exits mid-scan is skipped, odd content never panics. Nothing here prints a command line
//! (argv may carry secrets); error messages name processes by comm only.
//!
//! Cost: [`scan`] opens five files per process, and [`scan_pod`] one per process plus five per
//! process of the pod. On a busy node that is milliseconds, far above the reload latency budget,
//! so callers should keep the [`ProcessInfo`] found here and re-use it: the signaller re-checks
//! it (start time and cgroup, under a pidfd) before every signal, and a `Gone`/`Recycled` answer
//! is the cue to look again.

use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use crate::config::ReloadAction;
use crate::k8s::ControllerPod;

/// Largest `/proc/<pid>/cmdline` read (nginx pads its rewritten title with NULs up to the
/// original argv+environ size; nothing past the title matters).
const MAX_CMDLINE_BYTES: u64 = 64 * 1024;
/// Largest `stat`, `status`, `comm` or `cgroup` file read (all are far smaller).
pub(crate) const MAX_SMALL_FILE_BYTES: u64 = 64 * 1024;
/// How many comms a `NotFound` message lists.
const MAX_LISTED_COMMS: usize = 8;

// ---------------------------------------------------------------------------------------------
// cgroup paths
// ---------------------------------------------------------------------------------------------

/// The pod and container a cgroup path belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupMatch {
    /// The pod UID with dashes (systemd's `_` turned back into `-`); a static pod's 32-hex
    /// UID is kept as it is.
    pub pod_uid: String,
    /// The runtime's container id (lower-case hex), or `None` for a process of the pod that is
    /// not in a container cgroup (CRI-O's `crio-conmon-<id>.scope`, or the pod cgroup itself).
    pub container_id: Option<String>,
}

/// Parses one line of `/proc/<pid>/cgroup`: `0::/path` (cgroup v2) or `12:memory:/path`
/// (cgroup v1). `None` for a line outside any pod, or for anything that is not a cgroup line.
pub fn parse_cgroup_line(line: &str) -> Option<CgroupMatch> {
    let line = line.trim_end_matches(['\n', '\r']);
    let mut fields = line.splitn(3, ':');
    let hierarchy = fields.next()?;
    let _controllers = fields.next()?;
    let path = fields.next()?;
    if hierarchy.is_empty() || !hierarchy.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    parse_cgroup_path(path)
}

/// Parses a whole `/proc/<pid>/cgroup` file. The cgroup v2 line (`0::`) wins when it names a
/// pod; otherwise the first v1 line that names a container, else the first that names a pod.
pub fn parse_cgroup_file(text: &str) -> Option<CgroupMatch> {
    let mut v2 = None;
    let mut v1_container = None;
    let mut v1_pod = None;
    for line in text.lines() {
        let Some(found) = parse_cgroup_line(line) else {
            continue;
        };
        if line.starts_with("0::") {
            if v2.is_none() {
                v2 = Some(found);
            }
        } else if found.container_id.is_some() {
            if v1_container.is_none() {
                v1_container = Some(found);
            }
        } else if v1_pod.is_none() {
            v1_pod = Some(found);
        }
    }
    v2.or(v1_container).or(v1_pod)
}

/// Parses a cgroup path (the third field of a `/proc/<pid>/cgroup` line). Only trailing
/// components matter, so any `cgroupRoot` prefix, a private cgroup namespace's `/../` and
/// relative paths all work: the last pod component (`kubepods-…-pod<U>.slice` or `pod<U>`) gives
/// the UID, and the component right after it the container.
pub fn parse_cgroup_path(path: &str) -> Option<CgroupMatch> {
    let components: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .collect();
    let (index, pod_uid) = components
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, c)| pod_component(c).map(|uid| (i, uid)))?;
    let container_id = components
        .get(index + 1)
        .and_then(|c| container_component(c));
    Some(CgroupMatch {
        pod_uid,
        container_id,
    })
}

/// `kubepods-burstable-pod<U_U>.slice`, `kubepods-pod<U>.slice`,
/// `kubelet-kubepods-besteffort-pod<U>.slice` (systemd driver) or `pod<U-U>` (cgroupfs).
fn pod_component(component: &str) -> Option<String> {
    let raw = match component.strip_suffix(".slice") {
        Some(unit) => {
            // The last dash-separated word of the unit name: `…-pod<U_U>` (systemd escapes the
            // UID's dashes as underscores, so the UID itself has no dash).
            let word = unit.rsplit('-').next()?;
            word.strip_prefix("pod")?
        }
        None => component.strip_prefix("pod")?,
    };
    normalise_uid(raw)
}

/// A pod UID as kubelet writes it into a cgroup name: a UUID (dashes or underscores) or a static
/// pod's 32 hex digits. Returns it with dashes, lower-case.
fn normalise_uid(raw: &str) -> Option<String> {
    let uid: String = raw
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let hex = uid.bytes().filter(u8::is_ascii_hexdigit).count();
    let dashes = uid.bytes().filter(|b| *b == b'-').count();
    let well_formed = hex + dashes == uid.len()
        && hex == 32
        && (dashes == 0 || (dashes == 4 && is_uuid_shape(&uid)));
    well_formed.then_some(uid)
}

fn is_uuid_shape(uid: &str) -> bool {
    let groups: Vec<usize> = uid.split('-').map(str::len).collect();
    groups == [8, 4, 4, 4, 12]
}

/// `cri-containerd-<C>.scope`, `crio-<C>.scope`, `docker-<C>.scope` (systemd driver), `<C>` or
/// `crio-<C>` (cgroupfs). `crio-conmon-<C>.scope` is CRI-O's monitor, not the container.
fn container_component(component: &str) -> Option<String> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    if name.starts_with("crio-conmon-") {
        return None;
    }
    let id = ["cri-containerd-", "crio-", "docker-", "containerd-"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name);
    let plausible = (12..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit());
    plausible.then(|| id.to_ascii_lowercase())
}

/// Compares pod UIDs however they are written: case, dashes and underscores do not matter.
fn same_uid(a: &str, b: &str) -> bool {
    let key = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '-' && *c != '_')
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    key(a) == key(b)
}

// ---------------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------------

/// One process, as read from `<proc_root>/<pid>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    /// `/proc/<pid>/comm` (at most 15 bytes, set by the kernel from the executable name or by
    /// `prctl(PR_SET_NAME)`).
    pub comm: String,
    /// argv; trailing empty arguments (the NUL padding nginx leaves after rewriting its title)
    /// are dropped.
    pub cmdline: Vec<String>,
    /// Field 22 of `/proc/<pid>/stat`: start time in clock ticks after boot. With the pid it
    /// identifies the process: a recycled pid has a later start time.
    pub start_time: u64,
    /// `None` when the process is in no pod's cgroup (or its cgroup file was unreadable).
    pub cgroup: Option<CgroupMatch>,
    /// The last `NSpid` value in `/proc/<pid>/status` is 1: the init of its pid namespace.
    pub nspid_is_one: bool,
}

impl ProcessInfo {
    /// The process title: argv joined with spaces (nginx rewrites argv[0] to
    /// `nginx: master process /usr/sbin/nginx ...`).
    pub fn title(&self) -> String {
        self.cmdline.join(" ")
    }

    /// Whether the title or the comm starts with `prefix`.
    pub fn matches_prefix(&self, prefix: &str) -> bool {
        self.comm.starts_with(prefix) || self.title().starts_with(prefix)
    }

    fn in_container(&self, pod_uid: &str, container_id: &str) -> bool {
        self.cgroup.as_ref().is_some_and(|c| {
            same_uid(&c.pod_uid, pod_uid)
                && c.container_id
                    .as_deref()
                    .is_some_and(|id| id.eq_ignore_ascii_case(container_id))
        })
    }
}

/// The fields of `/proc/<pid>/stat` mountlag uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFields {
    /// The comm between the parentheses (may itself contain spaces and parentheses).
    pub comm: String,
    pub ppid: i32,
    pub start_time: u64,
}

/// Parses `/proc/<pid>/stat`: `pid (comm) state ppid … starttime …`. The comm is delimited by the
/// first `(` and the *last* `)`, since it may contain either.
pub fn parse_stat(text: &str) -> Option<StatFields> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state), so field N is rest[N - 3].
    let ppid = rest.get(1)?.parse().ok()?;
    let start_time = rest.get(19)?.parse().ok()?;
    Some(StatFields {
        comm,
        ppid,
        start_time,
    })
}

/// The last `NSpid` value of `/proc/<pid>/status` (the pid inside the innermost namespace).
pub fn parse_status_nspid(text: &str) -> Option<i32> {
    text.lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

/// Splits `/proc/<pid>/cmdline` (NUL-separated) into argv, dropping trailing empty arguments.
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let mut args: Vec<String> = bytes
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    while args.last().is_some_and(String::is_empty) {
        args.pop();
    }
    args
}

/// Reads every process under `proc_root` (normally `/proc`). Processes that vanish mid-scan are
/// skipped; an unreadable `proc_root` gives an empty list (see [`scan_pod`] for an error).
pub fn scan(proc_root: &Path) -> Vec<ProcessInfo> {
    let Ok(pids) = list_pids(proc_root) else {
        return Vec::new();
    };
    pids.into_iter()
        .filter_map(|pid| read_process(proc_root, pid, None))
        .collect()
}

/// Like [`scan`] but reads only the cgroup file of processes outside pod `pod_uid`: the cheap
/// way to find one pod's processes on a busy node.
pub fn scan_pod(proc_root: &Path, pod_uid: &str) -> Result<Vec<ProcessInfo>, ProcessError> {
    let pids = list_pids(proc_root).map_err(|source| ProcessError::ProcRoot {
        path: proc_root.to_path_buf(),
        source,
    })?;
    Ok(pids
        .into_iter()
        .filter_map(|pid| read_process(proc_root, pid, Some(pod_uid)))
        .collect())
}

/// Re-reads one process: `None` when it is gone (or its stat is unreadable).
pub fn read_one(proc_root: &Path, pid: i32) -> Option<ProcessInfo> {
    read_process(proc_root, pid, None)
}

fn list_pids(proc_root: &Path) -> io::Result<Vec<i32>> {
    let mut pids: Vec<i32> = fs::read_dir(proc_root)?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid > 0)
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// Reads `<proc_root>/<pid>/{cgroup,stat,comm,cmdline,status}`. With `only_pod`, stops after the
/// cgroup file when the process is not in that pod.
fn read_process(proc_root: &Path, pid: i32, only_pod: Option<&str>) -> Option<ProcessInfo> {
    let dir = proc_root.join(pid.to_string());
    let cgroup = read_text(&dir.join("cgroup"), MAX_SMALL_FILE_BYTES)
        .ok()
        .and_then(|t| parse_cgroup_file(&t));
    if let Some(uid) = only_pod
        && !cgroup.as_ref().is_some_and(|c| same_uid(&c.pod_uid, uid))
    {
        return None;
    }
    let stat = parse_stat(&read_text(&dir.join("stat"), MAX_SMALL_FILE_BYTES).ok()?)?;
    let comm = read_text(&dir.join("comm"), MAX_SMALL_FILE_BYTES)
        .ok()
        .map(|c| c.trim_end_matches('\n').to_string())
        .unwrap_or_else(|| stat.comm.clone());
    let cmdline = read_capped(&dir.join("cmdline"), MAX_CMDLINE_BYTES)
        .map(|b| parse_cmdline(&b))
        .unwrap_or_default();
    let nspid_is_one = read_text(&dir.join("status"), MAX_SMALL_FILE_BYTES)
        .ok()
        .and_then(|t| parse_status_nspid(&t))
        == Some(1);
    Some(ProcessInfo {
        pid,
        ppid: stat.ppid,
        comm,
        cmdline,
        start_time: stat.start_time,
        cgroup,
        nspid_is_one,
    })
}

pub(crate) fn read_capped(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    // /proc files report size 0: without room up front, `read_to_end` starts with 32-byte reads
    // and needs five or six syscalls for a `status` file, on the signal's hot path.
    let mut bytes = Vec::with_capacity(PROC_READ_CHUNK);
    fs::File::open(path)?.take(cap).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Room for a whole `/proc/<pid>/{stat,cgroup,status}` in one `read`.
const PROC_READ_CHUNK: usize = 4096;

pub(crate) fn read_text(path: &Path, cap: u64) -> io::Result<String> {
    read_capped(path, cap).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// `/proc/<pid>/stat` and `/proc/<pid>/cgroup` of one process, for the signaller's re-check.
pub(crate) fn read_identity(
    proc_root: &Path,
    pid: i32,
) -> io::Result<(Option<StatFields>, Option<CgroupMatch>)> {
    let dir = proc_root.join(pid.to_string());
    let stat = parse_stat(&read_text(&dir.join("stat"), MAX_SMALL_FILE_BYTES)?);
    let cgroup = parse_cgroup_file(&read_text(&dir.join("cgroup"), MAX_SMALL_FILE_BYTES)?);
    Ok((stat, cgroup))
}

// ---------------------------------------------------------------------------------------------
// Selection
// ---------------------------------------------------------------------------------------------

/// The processes of container `container_id` of pod `pod_uid`. The pause (sandbox) container has
/// its own id, so it is never among them; neither is CRI-O's conmon.
pub fn container_processes<'a>(
    procs: &'a [ProcessInfo],
    pod_uid: &str,
    container_id: &str,
) -> Vec<&'a ProcessInfo> {
    procs
        .iter()
        .filter(|p| p.in_container(pod_uid, container_id))
        .collect()
}

/// Which process of a container receives the reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The process whose title (argv joined with spaces) or comm starts with this, and whose
    /// parent does not also match: nginx's master, not its workers; HAProxy's `-W` master, not
    /// its workers (same comm and argv).
    TitlePrefix(String),
    /// The container's init process (last `NSpid` is 1), else the process whose parent is
    /// outside the container.
    InitProcess,
}

impl Target {
    /// What a `NotFound` message says was looked for.
    pub fn describe(&self) -> String {
        match self {
            Target::TitlePrefix(prefix) => format!("a process titled {prefix:?}"),
            Target::InitProcess => "the container's init process".to_string(),
        }
    }

    /// The target for a signal reload; `None` for HTTP and verify-only controllers.
    pub fn for_action(action: &ReloadAction) -> Option<Target> {
        match action {
            ReloadAction::Signal {
                process: Some(prefix),
                ..
            } => Some(Target::TitlePrefix(prefix.clone())),
            ReloadAction::Signal { process: None, .. } => Some(Target::InitProcess),
            ReloadAction::Http { .. } | ReloadAction::None | ReloadAction::Restart => None,
        }
    }
}

/// Picks the process to signal among one container's processes (from
/// [`container_processes`]). `pod` and `container` only name them in the error. When several
/// qualify, the oldest (smallest start time, then smallest pid) wins.
pub fn select_target<'a>(
    procs: &[&'a ProcessInfo],
    target: &Target,
    pod: &str,
    container: &str,
) -> Result<&'a ProcessInfo, ProcessError> {
    let oldest = |candidates: Vec<&'a ProcessInfo>| {
        candidates.into_iter().min_by_key(|p| (p.start_time, p.pid))
    };
    let parent_of = |p: &ProcessInfo| procs.iter().find(|q| q.pid == p.ppid && q.pid != p.pid);
    let found = match target {
        Target::TitlePrefix(prefix) => oldest(
            procs
                .iter()
                .copied()
                .filter(|p| p.matches_prefix(prefix))
                .filter(|p| !parent_of(p).is_some_and(|parent| parent.matches_prefix(prefix)))
                .collect(),
        ),
        Target::InitProcess => oldest(procs.iter().copied().filter(|p| p.nspid_is_one).collect())
            .or_else(|| {
                oldest(
                    procs
                        .iter()
                        .copied()
                        .filter(|p| parent_of(p).is_none())
                        .collect(),
                )
            }),
    };
    found.ok_or_else(|| ProcessError::NotFound {
        pod: pod.to_string(),
        container: container.to_string(),
        wanted: target.describe(),
        processes: procs.len(),
        comms: list_comms(procs.iter().copied()),
    })
}

/// The comms of `procs` for an error message. Any process can rename itself
/// (`prctl(PR_SET_NAME)`), so each is escaped: the message reaches logs and an Event.
fn list_comms<'a>(procs: impl Iterator<Item = &'a ProcessInfo>) -> String {
    let mut comms: Vec<String> = procs
        .map(|p| crate::text::untrusted(&p.comm).to_string())
        .collect();
    comms.sort_unstable();
    comms.dedup();
    let more = comms.len().saturating_sub(MAX_LISTED_COMMS);
    comms.truncate(MAX_LISTED_COMMS);
    let mut text = comms.join(", ");
    if more > 0 {
        text.push_str(&format!(", and {more} more"));
    }
    if text.is_empty() {
        text.push_str("none");
    }
    text
}

/// Finds the process to signal for `reload` in `pod`: tries each watched container (`containers`,
/// `None` = all) that has a container id, in pod order; the first hit wins. `proc_root` is
/// normally the host's `/proc` (the agent runs with `hostPID`).
pub fn find_reload_target(
    proc_root: &Path,
    pod: &ControllerPod,
    containers: Option<&[String]>,
    reload: &ReloadAction,
) -> Result<ProcessInfo, ProcessError> {
    let pod_name = format!("{}/{}", pod.namespace, pod.name);
    let Some(target) = Target::for_action(reload) else {
        return Err(ProcessError::NotSignalled {
            pod: pod_name,
            action: reload.to_string(),
        });
    };
    let watched: Vec<_> = pod
        .containers
        .iter()
        .filter(|c| containers.is_none_or(|list| list.contains(&c.name)))
        .collect();
    let running: Vec<(&str, &str)> = watched
        .iter()
        .filter_map(|c| Some((c.name.as_str(), c.container_id.as_deref()?)))
        .collect();
    if running.is_empty() {
        let names: Vec<&str> = watched.iter().map(|c| c.name.as_str()).collect();
        return Err(ProcessError::NoContainerId {
            pod: pod_name,
            containers: if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            },
        });
    }
    let procs = scan_pod(proc_root, pod.cgroup_uid())?;
    let mut misses = Vec::new();
    for (name, id) in &running {
        let mine = container_processes(&procs, pod.cgroup_uid(), id);
        match select_target(&mine, &target, &pod_name, name) {
            Ok(found) => return Ok(found.clone()),
            Err(err) => misses.push((err, mine)),
        }
    }
    // Every container missed: one error naming them all.
    if misses.len() == 1
        && let Some((err, _)) = misses.pop()
    {
        return Err(err);
    }
    let names: Vec<&str> = running.iter().map(|(name, _)| *name).collect();
    let all: Vec<&ProcessInfo> = misses.iter().flat_map(|(_, m)| m.iter().copied()).collect();
    Err(ProcessError::NotFound {
        pod: pod_name,
        container: names.join(", "),
        wanted: target.describe(),
        processes: all.len(),
        comms: list_comms(all.into_iter()),
    })
}

/// Why no process to reload was found.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot list processes in {path}: {source}")]
    ProcRoot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "pod {pod}: no watched container has a container id yet (watched: {containers}); \
         nothing to signal until one starts"
    )]
    NoContainerId { pod: String, containers: String },
    #[error(
        "pod {pod}, container {container}: {wanted} is not among the container's \
         {processes} process(es) (comm: {comms})"
    )]
    NotFound {
        pod: String,
        container: String,
        wanted: String,
        processes: usize,
        comms: String,
    },
    #[error("pod {pod}: reload action {action:?} does not signal a process")]
    NotSignalled { pod: String, action: String },
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
