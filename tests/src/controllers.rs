//! Real nginx and HAProxy processes serving TLS from a kubelet stand-in volume, placed in
//! kubelet-shaped cgroups so the agent's process lookup finds them by pod UID and container id.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use mountlag_testbed::controllers::{self, ControllerKind, ControllerSpec, RunningController};
//! use mountlag_testbed::kubelet::{KubeletStandIn, VolumeKind};
//! # let leaf: mountlag_testbed::certs::IssuedLeaf = unimplemented!();
//! let kubelet = KubeletStandIn::in_tempdir()?;
//! let pod = "0b8f3c52-5d1e-4c0e-9d0e-2a4c8d1f6b7a";
//! let dir = kubelet.mount_volume(pod, VolumeKind::Secret, "tls")?;
//! kubelet.write(&dir, &controllers::payload(ControllerKind::Nginx, &leaf), None)?;
//! let nginx = RunningController::start(ControllerSpec::new(
//!     ControllerKind::Nginx, pod, &dir, vec!["a.example".into()],
//! ))?;
//! nix::sys::signal::kill(nix::unistd::Pid::from_raw(nginx.master_pid()), nginx.reload_signal())?;
//! # Ok(()) }
//! ```
//!
//! # The processes
//!
//! - **nginx** (Debian 1.22): `nginx -e <tmp>/error.log -p <tmp>/ -c <tmp>/nginx.conf` with
//!   `daemon off; master_process on; worker_processes 2;`, one `default_server` plus one
//!   `server` per name, every one with `ssl_certificate <cert_dir>/tls.crt` and
//!   `ssl_certificate_key <cert_dir>/tls.key` — the user-visible symlinks, so a reload re-reads
//!   the files through `..data`. Temp paths, pid file and logs live in the temp dir (no
//!   `/var/lib/nginx`, no `/var/log/nginx`). `SIGHUP` to the master: it re-reads the config
//!   and certificates, starts new workers and gracefully stops the old ones; if the new
//!   configuration fails (e.g. key mismatch) it logs `[emerg]` and keeps the old workers.
//! - **HAProxy** (Debian 2.6): `haproxy -W -f <tmp>/haproxy.cfg` (master-worker), one
//!   `frontend` with `bind 127.0.0.1:<port> ssl crt <cert_dir>/tls.crt` answering every request
//!   with `http-request return status 200`. `SIGUSR2` to the master: it re-executes itself,
//!   parses the configuration again, starts a new worker that takes the listening sockets over
//!   from the old one (`-x sockpair@...`, no refused connection) and soft-stops the old worker.
//!   If the new configuration fails it logs `[ALERT]` + `Loading failure!` and the old worker
//!   keeps serving.
//!
//! # HAProxy's certificate files
//!
//! HAProxy's `crt` wants the certificate and its key either in one PEM file or the key in a
//! file named `<crt>.key` beside it (`ssl-load-extra-files`, default `all`); it never looks for
//! `tls.key`. A real deployment that mounts a standard `kubernetes.io/tls` Secret therefore
//! remaps the keys with `items`:
//!
//! ```yaml
//! volumes:
//!   - name: tls
//!     secret:
//!       secretName: edge-tls
//!       items:
//!         - {key: tls.crt, path: tls.crt}
//!         - {key: tls.key, path: tls.crt.key}
//! ```
//!
//! and that is what [`haproxy_payload`] produces: files `tls.crt` (chain) and `tls.crt.key`
//! (key), each with its own user-visible symlink into `..data`. The Secret stays an ordinary
//! TLS Secret (no bundle key), and a reload reads both files through the swapped `..data`.
//!
//! # cgroups
//!
//! The controller runs in the cgroup kubelet + containerd (systemd driver) give a Burstable
//! pod's container, created in the cgroup v2 hierarchy (`/sys/fs/cgroup/unified` on these
//! hybrid machines, `/sys/fs/cgroup` on pure v2 ones):
//!
//! ```text
//! /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID, - → _>.slice/cri-containerd-<id>.scope
//! ```
//!
//! With [`ControllerSpec::v1`] the same path is also created in the v1 `pids` hierarchy, so
//! `/proc/<pid>/cgroup` has a v1 line as well. The process is moved into the cgroup(s) before it
//! execs the controller (`sh -c 'echo $$ > .../cgroup.procs && exec nginx ...'`), so every
//! worker is born inside. On drop the whole cgroup is killed (`cgroup.kill`, plus `SIGKILL` to
//! the process group), the master is reaped and the cgroup dirs this instance created are
//! removed leaf first (parents shared with other instances stay while they are in use).
//!
//! A test process that is itself killed (SIGKILL) leaves its controllers running: there is no
//! parent-death signal, because that would need `pre_exec` (unsafe) and fires when the spawning
//! *thread* exits, which tokio's blocking pool does at will.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::certs::IssuedLeaf;
use crate::kubelet::{FileProjection, Payload};

/// Path of the Debian nginx binary.
pub const NGINX_BIN: &str = "/usr/sbin/nginx";
/// Path of the Debian HAProxy binary.
pub const HAPROXY_BIN: &str = "/usr/sbin/haproxy";
/// nginx `worker_processes`.
pub const NGINX_WORKERS: usize = 2;
/// File mode of the payload files (a Secret volume's default `defaultMode`, 0644).
pub const PAYLOAD_MODE: u32 = 0o644;
/// How long [`RunningController::start`] waits for the controller to listen with all workers.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Which controller to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ControllerKind {
    /// nginx, master + 2 workers, reloads on `SIGHUP`.
    Nginx,
    /// HAProxy in master-worker mode (`-W`), reloads on `SIGUSR2` to the master.
    Haproxy,
}

impl ControllerKind {
    /// `nginx` / `haproxy` (also the container name used for the default container id).
    pub fn name(self) -> &'static str {
        match self {
            ControllerKind::Nginx => "nginx",
            ControllerKind::Haproxy => "haproxy",
        }
    }

    /// The binary this kind runs.
    pub fn binary(self) -> &'static str {
        match self {
            ControllerKind::Nginx => NGINX_BIN,
            ControllerKind::Haproxy => HAPROXY_BIN,
        }
    }

    /// The signal that makes the master reload: `SIGHUP` (nginx), `SIGUSR2` (HAProxy `-W`).
    pub fn reload_signal(self) -> Signal {
        match self {
            ControllerKind::Nginx => Signal::SIGHUP,
            ControllerKind::Haproxy => Signal::SIGUSR2,
        }
    }

    /// Files of the certificate volume this kind reads (relative to the volume dir).
    pub fn cert_files(self) -> (&'static str, &'static str) {
        match self {
            ControllerKind::Nginx => ("tls.crt", "tls.key"),
            ControllerKind::Haproxy => ("tls.crt", "tls.crt.key"),
        }
    }

    /// Processes of a settled controller: master + workers (nginx 1 + 2, HAProxy 1 + 1; HAProxy's
    /// worker runs one thread per CPU).
    pub fn settled_process_count(self) -> usize {
        match self {
            ControllerKind::Nginx => 1 + NGINX_WORKERS,
            ControllerKind::Haproxy => 2,
        }
    }
}

/// The volume payload a deployment of `kind` mounts for `leaf`: [`nginx_payload`] or
/// [`haproxy_payload`].
pub fn payload(kind: ControllerKind, leaf: &IssuedLeaf) -> Payload {
    payload_from_pem(kind, &leaf.chain_pem, &leaf.key_pem)
}

/// nginx: a `kubernetes.io/tls` Secret mounted as is: `tls.crt` (chain), `tls.key`.
pub fn nginx_payload(leaf: &IssuedLeaf) -> Payload {
    payload(ControllerKind::Nginx, leaf)
}

/// HAProxy: the same `kubernetes.io/tls` Secret with `items` mapping `tls.crt → tls.crt` and
/// `tls.key → tls.crt.key`, the name HAProxy loads the key from when the `crt` file has none
/// (see the module docs).
pub fn haproxy_payload(leaf: &IssuedLeaf) -> Payload {
    payload(ControllerKind::Haproxy, leaf)
}

/// A payload for `kind` from arbitrary PEM text, e.g. a certificate with someone else's key.
pub fn payload_from_pem(kind: ControllerKind, chain_pem: &str, key_pem: &str) -> Payload {
    let (crt, key) = kind.cert_files();
    Payload::from([
        (
            crt.to_owned(),
            FileProjection::new(chain_pem.as_bytes(), PAYLOAD_MODE),
        ),
        (
            key.to_owned(),
            FileProjection::new(key_pem.as_bytes(), PAYLOAD_MODE),
        ),
    ])
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSpec {
    /// nginx or HAProxy.
    pub kind: ControllerKind,
    /// The pod's UID (dashed UUID or 32 hex for static pods); names the pod slice.
    pub pod_uid: String,
    /// The container id, 64 lowercase hex; names the `cri-containerd-<id>.scope`.
    pub container_id: String,
    /// The kubelet stand-in's volume dir holding [`ControllerKind::cert_files`] (read through
    /// the user-visible symlinks).
    pub cert_dir: PathBuf,
    /// Address it listens on: 127.0.0.1 unless the pod has its own (a node of a multi-node
    /// test: `NodeConfig::pod_ip`).
    pub ip: Ipv4Addr,
    /// Port on `ip`; 0 = pick a free one.
    pub port: u16,
    /// nginx: one `server` block per name (all with the same certificate files). HAProxy serves
    /// its one certificate for every name and ignores this.
    pub server_names: Vec<String>,
    /// Also place the processes in the cgroup v1 `pids` hierarchy (same path).
    pub v1: bool,
    /// Only the cgroup v1 `pids` hierarchy has the kubelet-shaped path; the v2 cgroup is one
    /// outside any pod, so `/proc/<pid>/cgroup` names the pod in v1 lines only (as on a cgroup
    /// v1 node).
    pub v1_only: bool,
    /// Runtime, cgroup driver and QoS class that name the container's cgroup.
    pub layout: CgroupLayout,
}

/// How kubelet and the container runtime name a container's cgroup: the layouts the agent must
/// recognise in `/proc/<pid>/cgroup`. `<U>` is the pod UID (systemd driver: dashes as `_`),
/// `<C>` the container id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupLayout {
    /// containerd, systemd driver, Burstable:
    /// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<U>.slice/cri-containerd-<C>.scope`.
    /// The most common layout, and the default.
    #[default]
    ContainerdSystemd,
    /// CRI-O, systemd driver, BestEffort:
    /// `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<U>.slice/crio-<C>.scope`.
    CrioSystemd,
    /// cri-dockerd (Docker Engine), systemd driver, Guaranteed (no QoS slice):
    /// `/kubepods.slice/kubepods-pod<U>.slice/docker-<C>.scope`.
    DockerSystemd,
    /// containerd (or cri-dockerd), cgroupfs driver, Burstable: `/kubepods/burstable/pod<U>/<C>`.
    ContainerdCgroupfs,
    /// CRI-O, cgroupfs driver, Guaranteed: `/kubepods/pod<U>/crio-<C>`.
    CrioCgroupfs,
}

impl CgroupLayout {
    pub const ALL: [CgroupLayout; 5] = [
        CgroupLayout::ContainerdSystemd,
        CgroupLayout::CrioSystemd,
        CgroupLayout::DockerSystemd,
        CgroupLayout::ContainerdCgroupfs,
        CgroupLayout::CrioCgroupfs,
    ];

    /// The container's cgroup path from the hierarchy root.
    pub fn path(self, pod_uid: &str, container_id: &str) -> String {
        let u = pod_uid.replace('-', "_");
        let c = container_id;
        match self {
            CgroupLayout::ContainerdSystemd => format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{c}.scope"
            ),
            CgroupLayout::CrioSystemd => format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{c}.scope"
            ),
            CgroupLayout::DockerSystemd => {
                format!("/kubepods.slice/kubepods-pod{u}.slice/docker-{c}.scope")
            }
            CgroupLayout::ContainerdCgroupfs => format!("/kubepods/burstable/pod{pod_uid}/{c}"),
            CgroupLayout::CrioCgroupfs => format!("/kubepods/pod{pod_uid}/crio-{c}"),
        }
    }

    /// The scheme kubelet reports in `containerStatuses[].containerID` for this runtime.
    pub fn runtime(self) -> &'static str {
        match self {
            CgroupLayout::ContainerdSystemd | CgroupLayout::ContainerdCgroupfs => "containerd",
            CgroupLayout::CrioSystemd | CgroupLayout::CrioCgroupfs => "cri-o",
            CgroupLayout::DockerSystemd => "docker",
        }
    }
}

impl ControllerSpec {
    /// A spec with the container id the node stand-in would report for container
    /// `kind.name()` ([`crate::node::container_id`]), a free port and no v1 cgroup.
    pub fn new(
        kind: ControllerKind,
        pod_uid: impl Into<String>,
        cert_dir: impl Into<PathBuf>,
        server_names: Vec<String>,
    ) -> Self {
        let pod_uid = pod_uid.into();
        Self {
            kind,
            container_id: crate::node::container_id(&pod_uid, kind.name()),
            pod_uid,
            cert_dir: cert_dir.into(),
            ip: Ipv4Addr::LOCALHOST,
            port: 0,
            server_names,
            v1: false,
            v1_only: false,
            layout: CgroupLayout::ContainerdSystemd,
        }
    }

    /// Same spec with the container's cgroup named as `layout` names it.
    pub fn with_layout(mut self, layout: CgroupLayout) -> Self {
        self.layout = layout;
        self
    }

    /// Same spec, kubelet-shaped in the cgroup v1 `pids` hierarchy only ([`Self::v1_only`]).
    pub fn with_v1_only(mut self) -> Self {
        self.v1 = true;
        self.v1_only = true;
        self
    }

    /// Same spec, also placed in the cgroup v1 `pids` hierarchy.
    pub fn with_v1(mut self, v1: bool) -> Self {
        self.v1 = v1;
        self
    }

    /// Same spec listening on `ip` (a pod IP of its own).
    pub fn with_ip(mut self, ip: Ipv4Addr) -> Self {
        self.ip = ip;
        self
    }

    /// Same spec on a fixed port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
}

/// kubelet's (systemd driver) cgroup path of a Burstable pod's containerd container, from the
/// hierarchy root: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<U>.slice/
/// cri-containerd-<C>.scope` with the UID's dashes turned into underscores.
pub fn kubelet_cgroup_path(pod_uid: &str, container_id: &str) -> String {
    CgroupLayout::ContainerdSystemd.path(pod_uid, container_id)
}

/// `Ok` when `kind` can run here: the binary exists and runs, this process is root, and the
/// cgroup v2 hierarchy is writable (a trial mkdir + rmdir).
pub fn available(kind: ControllerKind) -> Result<(), String> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return Err(format!("not running as root (euid {euid})"));
    }
    let bin = kind.binary();
    if !Path::new(bin).exists() {
        return Err(format!("{bin} is missing (Debian package {})", kind.name()));
    }
    let version = Command::new(bin)
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {bin} -v: {e}"))?;
    if !version.status.success() {
        return Err(format!("{bin} -v failed: {}", version.status));
    }
    cgroup_v2_writable()
}

/// `Ok` when the cgroup v1 `pids` hierarchy is mounted and writable ([`ControllerSpec::v1`]).
pub fn v1_available() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER
        .get_or_init(|| {
            let root = cgroup_v1_root("pids")
                .map_err(|e| e.to_string())?
                .ok_or("no cgroup v1 pids hierarchy is mounted")?;
            trial_mkdir(&root)
        })
        .clone()
}

fn cgroup_v2_writable() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER
        .get_or_init(|| {
            let root = cgroup_v2_root()
                .map_err(|e| e.to_string())?
                .ok_or("no cgroup2 hierarchy is mounted")?;
            trial_mkdir(&root)
        })
        .clone()
}

fn trial_mkdir(root: &Path) -> Result<(), String> {
    let probe = root.join(format!("mountlag-trial-{}", std::process::id()));
    fs::create_dir(&probe).map_err(|e| format!("cannot mkdir {}: {e}", probe.display()))?;
    fs::remove_dir(&probe).map_err(|e| format!("cannot rmdir {}: {e}", probe.display()))
}

/// Mount point of the cgroup2 hierarchy (mounted with root `/`), from /proc/self/mountinfo.
pub fn cgroup_v2_root() -> anyhow::Result<Option<PathBuf>> {
    Ok(cgroup_mounts()?
        .into_iter()
        .find(|m| m.fs_type == "cgroup2")
        .map(|m| m.mount_point))
}

/// Mount point of the cgroup v1 hierarchy that has `controller` (e.g. `pids`).
pub fn cgroup_v1_root(controller: &str) -> anyhow::Result<Option<PathBuf>> {
    Ok(cgroup_mounts()?
        .into_iter()
        .find(|m| m.fs_type == "cgroup" && m.super_options.split(',').any(|o| o == controller))
        .map(|m| m.mount_point))
}

struct CgroupMount {
    mount_point: PathBuf,
    fs_type: String,
    super_options: String,
}

fn cgroup_mounts() -> anyhow::Result<Vec<CgroupMount>> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let fields: Vec<&str> = pre.split(' ').collect();
            let (root, mount_point) = (*fields.get(3)?, *fields.get(4)?);
            let mut post = post.split(' ');
            let fs_type = post.next()?.to_owned();
            let _source = post.next()?;
            let super_options = post.next().unwrap_or("").to_owned();
            // Only whole hierarchies: a bind mount of a sub-cgroup would shift every path.
            (root == "/" && fs_type.starts_with("cgroup")).then(|| CgroupMount {
                mount_point: PathBuf::from(mount_point.replace("\\040", " ")),
                fs_type,
                super_options,
            })
        })
        .collect())
}

/// Parent cgroup dirs (`kubepods.slice`, `kubepods-burstable.slice`, pod slices) this process
/// created. They are shared by every controller of this process and removed when the last
/// child goes. The lock also serialises creation and removal within the process, so one
/// instance never removes a parent another is about to use. (Another process doing the same
/// can still race with us: creation retries on `ENOENT`, and a parent still in use by it is
/// left alone.)
static CREATED_PARENTS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn created_parents() -> MutexGuard<'static, BTreeSet<PathBuf>> {
    CREATED_PARENTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// One kubelet-shaped cgroup in one hierarchy.
#[derive(Debug)]
struct Cgroup {
    /// The hierarchy's mount point.
    root: PathBuf,
    /// `<root>/kubepods.slice/.../cri-containerd-<id>.scope`.
    leaf: PathBuf,
}

impl Cgroup {
    fn create(root: &Path, relative: &str) -> anyhow::Result<Self> {
        let components: Vec<&str> = relative.trim_start_matches('/').split('/').collect();
        let leaf = components.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let me = Self {
            root: root.to_path_buf(),
            leaf,
        };
        let mut parents = created_parents();
        // Another process may rmdir a parent it created between our mkdirs: start over.
        let mut attempt = 0;
        'attempt: loop {
            attempt += 1;
            let mut path = root.to_path_buf();
            for (i, c) in components.iter().enumerate() {
                path.push(c);
                let is_leaf = i + 1 == components.len();
                match fs::create_dir(&path) {
                    Ok(()) if is_leaf => {}
                    Ok(()) => {
                        parents.insert(path.clone());
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !is_leaf => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        // A leftover scope from a crashed run is reused only when empty.
                        let procs = me.procs()?;
                        ensure!(
                            procs.is_empty(),
                            "cgroup {} already holds processes {procs:?} (another controller \
                             with the same container id?)",
                            path.display()
                        );
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 20 => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue 'attempt;
                    }
                    Err(e) => {
                        me.remove_locked(&mut parents);
                        return Err(e).with_context(|| format!("mkdir {}", path.display()));
                    }
                }
            }
            return Ok(me);
        }
    }

    fn procs_file(&self) -> PathBuf {
        self.leaf.join("cgroup.procs")
    }

    fn procs(&self) -> anyhow::Result<Vec<i32>> {
        let text = fs::read_to_string(self.procs_file())
            .with_context(|| format!("reading {}", self.procs_file().display()))?;
        text.lines()
            .map(|l| {
                l.trim()
                    .parse::<i32>()
                    .with_context(|| format!("pid {l:?}"))
            })
            .collect()
    }

    /// rmdir the leaf (retried briefly: killed processes may still be leaving it), then every
    /// parent this process created that has no other child left.
    fn remove(&self) {
        self.remove_locked(&mut created_parents());
    }

    fn remove_locked(&self, parents: &mut BTreeSet<PathBuf>) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match fs::remove_dir(&self.leaf) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => return,
            }
        }
        let mut dir = self.leaf.parent();
        while let Some(d) = dir {
            if d == self.root || !parents.contains(d) {
                break;
            }
            match fs::remove_dir(d) {
                Ok(()) => {
                    parents.remove(d);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    parents.remove(d);
                }
                // Busy: another controller's cgroup is below it.
                Err(_) => break,
            }
            dir = d.parent();
        }
    }
}

static INSTANCE: AtomicU64 = AtomicU64::new(0);

/// A running controller. Dropping it kills the whole cgroup and process group, reaps the
/// master and removes the cgroup dirs it created.
#[derive(Debug)]
pub struct RunningController {
    spec: ControllerSpec,
    addr: SocketAddr,
    child: Option<Child>,
    v2: Cgroup,
    v1: Option<Cgroup>,
    config_path: PathBuf,
    error_log: PathBuf,
    output_log: PathBuf,
    // Last: removed after the processes are gone.
    dir: tempfile::TempDir,
}

impl RunningController {
    /// Write the configuration, create the cgroup(s), start the controller in them (in its own
    /// process group) and wait until it accepts connections with all its workers running.
    ///
    /// With `port: 0` a free port is picked (and picked again, up to 3 times, if another
    /// process grabbed it first).
    pub fn start(spec: ControllerSpec) -> anyhow::Result<Self> {
        ensure!(
            spec.container_id.len() == 64
                && spec
                    .container_id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "container id must be 64 lowercase hex digits, got {:?}",
            spec.container_id
        );
        ensure!(
            !spec.pod_uid.is_empty() && !spec.pod_uid.contains('/'),
            "bad pod UID {:?}",
            spec.pod_uid
        );
        let attempts = if spec.port == 0 { 3 } else { 1 };
        let mut last = None;
        for _ in 0..attempts {
            let port = if spec.port == 0 {
                free_port()?
            } else {
                spec.port
            };
            match Self::start_on(spec.clone(), port) {
                Ok(me) => return Ok(me),
                Err(StartError::PortTaken(e)) => last = Some(e),
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
    }

    fn start_on(spec: ControllerSpec, port: u16) -> Result<Self, StartError> {
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let dir = tempfile::Builder::new()
            .prefix(&format!("mountlag-{}-{n}-", spec.kind.name()))
            .tempdir()
            .context("creating the controller's temp dir")?;
        // nginx workers run as nobody; let them traverse to their temp paths.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .context("chmod 0755 the controller's temp dir")?;
        let addr = SocketAddr::from((spec.ip, port));
        let error_log = dir.path().join("error.log");
        let output_log = dir.path().join("output.log");
        let (config_path, args) = match spec.kind {
            ControllerKind::Nginx => {
                let conf = dir.path().join("nginx.conf");
                fs::write(&conf, nginx_config(&spec, dir.path(), port))
                    .context("writing nginx.conf")?;
                let mut prefix = dir.path().as_os_str().to_owned();
                prefix.push("/");
                let args = vec![
                    "-e".into(),
                    error_log.clone().into_os_string(),
                    "-p".into(),
                    prefix,
                    "-c".into(),
                    conf.clone().into_os_string(),
                ];
                (conf, args)
            }
            ControllerKind::Haproxy => {
                let cfg = dir.path().join("haproxy.cfg");
                fs::write(&cfg, haproxy_config(&spec, dir.path(), port))
                    .context("writing haproxy.cfg")?;
                let args = vec!["-W".into(), "-f".into(), cfg.clone().into_os_string()];
                (cfg, args)
            }
        };

        let relative = spec.layout.path(&spec.pod_uid, &spec.container_id);
        let v2_root = cgroup_v2_root()?.context("no cgroup2 hierarchy is mounted")?;
        let v2 = if spec.v1_only {
            Cgroup::create(
                &v2_root,
                &format!("/mountlag-testbed-v1-only/{}", spec.container_id),
            )?
        } else {
            Cgroup::create(&v2_root, &relative)?
        };
        let v1 = if spec.v1 {
            let root = cgroup_v1_root("pids")?.context("no cgroup v1 pids hierarchy")?;
            match Cgroup::create(&root, &relative) {
                Ok(c) => Some(c),
                Err(e) => {
                    v2.remove();
                    return Err(e.into());
                }
            }
        } else {
            None
        };

        let output = fs::File::create(&output_log).context("creating output.log")?;
        let output2 = output.try_clone().context("dup output.log")?;
        // Join the cgroup(s) first, then exec: every worker is born inside.
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(
                r#"echo $$ > "$1" || exit 121; if [ -n "$2" ]; then echo $$ > "$2" || exit 122; fi; shift 2; exec "$@""#,
            )
            .arg("mountlag-controller")
            .arg(v2.procs_file())
            .arg(v1.as_ref().map(Cgroup::procs_file).unwrap_or_default())
            .arg(spec.kind.binary())
            .args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(output2)
            .process_group(0);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                v2.remove();
                if let Some(v1) = &v1 {
                    v1.remove();
                }
                return Err(anyhow::Error::new(e)
                    .context(format!("spawning {}", spec.kind.binary()))
                    .into());
            }
        };
        let me = Self {
            spec,
            addr,
            child: Some(child),
            v2,
            v1,
            config_path,
            error_log,
            output_log,
            dir,
        };
        me.wait_ready()
    }

    fn wait_ready(mut self) -> Result<Self, StartError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let want = self.spec.kind.settled_process_count();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("waiting for the controller")?
            {
                let log = self.log();
                let msg = format!(
                    "{} exited during start ({status}); log:\n{log}",
                    self.spec.kind.name()
                );
                let taken =
                    log.contains("Address already in use") || log.contains("cannot bind socket");
                return Err(if taken {
                    StartError::PortTaken(anyhow::anyhow!(msg))
                } else {
                    StartError::Other(anyhow::anyhow!(msg))
                });
            }
            let listening =
                TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok();
            if listening && self.pids().len() >= want && self.reload_ready() {
                return Ok(self);
            }
            if Instant::now() >= deadline {
                return Err(StartError::Other(anyhow::anyhow!(
                    "{} did not become ready within {START_TIMEOUT:?} (listening: {listening}, \
                     processes {:?}); log:\n{}",
                    self.spec.kind.name(),
                    self.pids(),
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The master will act on its reload signal: a handler is installed (`SigCgt`) and the
    /// signal is not blocked (`SigBlk`) in `/proc/<master>/status`.
    ///
    /// HAProxy's master (2.6, `-W`) keeps `SIGUSR2` blocked after every start and every
    /// reload (it re-executes itself) until a while after the worker reported ready (`Loading
    /// success.`); a `SIGUSR2` that arrives in that window is consumed without a reload (the
    /// signal leaves `SigPnd`, no `Reloading HAProxy` is logged, the old leaf stays). Observed
    /// here: 5–30 ms after the new leaf is served, longer right after start. nginx's master
    /// installs its handlers before it listens and keeps every signal blocked except inside
    /// `sigsuspend` (a `SIGHUP` is only a flag it acts on next), so for nginx only the handler
    /// is checked.
    pub fn reload_ready(&self) -> bool {
        let Ok(status) = fs::read_to_string(format!("/proc/{}/status", self.master_pid())) else {
            return false;
        };
        let mask = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        };
        let bit = 1u64 << (self.reload_signal() as i32 - 1);
        let caught = mask("SigCgt:").is_some_and(|m| m & bit != 0);
        let blocked = mask("SigBlk:").is_none_or(|m| m & bit != 0);
        match self.spec.kind {
            ControllerKind::Nginx => caught,
            ControllerKind::Haproxy => caught && !blocked,
        }
    }

    /// `<ip>:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The spec it was started with (`port` as given, see [`Self::addr`] for the real one).
    pub fn spec(&self) -> &ControllerSpec {
        &self.spec
    }

    /// nginx `master process` / HAProxy `-W` master: the process to signal. It keeps its PID
    /// across reloads (HAProxy's master re-executes itself in place).
    pub fn master_pid(&self) -> i32 {
        self.child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .unwrap_or(0)
    }

    /// Every process in the controller's (v2) cgroup, master and workers, in the kernel's order.
    pub fn pids(&self) -> Vec<i32> {
        // cgroup.procs is not guaranteed to be in any order; callers compare sets.
        let mut pids = self.v2.procs().unwrap_or_default();
        pids.sort_unstable();
        pids
    }

    /// The cgroup dirs the processes are in: the v2 one, then the v1 `pids` one if any.
    pub fn cgroup_paths(&self) -> Vec<PathBuf> {
        std::iter::once(self.v2.leaf.clone())
            .chain(self.v1.as_ref().map(|c| c.leaf.clone()))
            .collect()
    }

    /// The cgroup path relative to the hierarchy root, as `/proc/<pid>/cgroup` shows it.
    pub fn cgroup_relative_path(&self) -> String {
        self.spec
            .layout
            .path(&self.spec.pod_uid, &self.spec.container_id)
    }

    /// `SIGHUP` (nginx) or `SIGUSR2` (HAProxy).
    pub fn reload_signal(&self) -> Signal {
        self.spec.kind.reload_signal()
    }

    /// Wait (up to `timeout`) until the master will act on its reload signal
    /// ([`Self::reload_ready`]); returns how long that took.
    pub fn wait_reload_ready(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while !self.reload_ready() {
            ensure!(
                started.elapsed() < timeout,
                "{} master {} not ready for {:?} within {timeout:?}",
                self.spec.kind.name(),
                self.master_pid(),
                self.reload_signal()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(started.elapsed())
    }

    /// Send [`Self::reload_signal`] to [`Self::master_pid`] once the master is ready for it
    /// (waits up to 5 s: HAProxy's re-executed master ignores `SIGUSR2` for a while after each
    /// reload, see [`Self::reload_ready`]).
    pub fn reload(&self) -> anyhow::Result<()> {
        self.wait_reload_ready(Duration::from_secs(5))?;
        self.send_reload_signal()
    }

    /// Send [`Self::reload_signal`] to [`Self::master_pid`] now, ready or not.
    pub fn send_reload_signal(&self) -> anyhow::Result<()> {
        kill(Pid::from_raw(self.master_pid()), self.reload_signal())
            .with_context(|| format!("signalling {} master", self.spec.kind.name()))
    }

    /// The generated configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The controller's temp dir (config, pid file, logs, nginx temp paths).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the controller logged: nginx's `error.log` (level info) then anything it wrote to
    /// stdout/stderr; for HAProxy its stdout/stderr (master and worker `[NOTICE]`, `[WARNING]`,
    /// `[ALERT]` lines).
    pub fn log(&self) -> String {
        let mut out = String::new();
        if let Ok(text) = fs::read_to_string(&self.error_log) {
            out.push_str(&text);
        }
        if let Ok(text) = fs::read_to_string(&self.output_log)
            && !text.is_empty()
        {
            if !out.is_empty() {
                let _ = writeln!(out, "--- stdout/stderr ---");
            }
            out.push_str(&text);
        }
        out
    }

    /// Reloads the controller has logged: nginx's `signal 1 (SIGHUP) received` (level notice),
    /// HAProxy's master `Reloading HAProxy`. A signal it ignored is not counted.
    pub fn reloads_logged(&self) -> usize {
        let marker = match self.spec.kind {
            ControllerKind::Nginx => "(SIGHUP) received",
            ControllerKind::Haproxy => "Reloading HAProxy",
        };
        self.log().matches(marker).count()
    }

    /// Kill everything, reap, remove the cgroups; reports what could not be cleaned up.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // Everything in the cgroup (covers a process that left the process group), then the
        // process group (covers a kernel without cgroup.kill).
        let _ = fs::write(self.v2.leaf.join("cgroup.kill"), "1");
        if let Ok(pgid) = i32::try_from(child.id()) {
            match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => tracing::warn!("killpg {pgid}: {e}"),
            }
        }
        for pid in self.v2.procs().unwrap_or_default() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = child.wait();
        // Workers were re-parented to init when the master died; wait until they are gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut left = self.v2.procs().unwrap_or_default();
        while !left.is_empty() && Instant::now() < deadline {
            for &pid in &left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(5));
            left = self.v2.procs().unwrap_or_default();
        }
        self.v2.remove();
        if let Some(v1) = &self.v1 {
            v1.remove();
        }
        ensure!(
            left.is_empty(),
            "{} processes {left:?} still in {} after SIGKILL",
            self.spec.kind.name(),
            self.v2.leaf.display()
        );
        let stale: Vec<String> = self
            .cgroup_paths()
            .into_iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        ensure!(stale.is_empty(), "cgroup dirs left behind: {stale:?}");
        Ok(())
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!("stopping controller: {e:#}");
        }
    }
}

/// A program of the test's own (a small Go server, a signal sink) running as one container's
/// process: started with a chosen `argv[0]` (its process title), in its own process group, and
/// moved into the kubelet-shaped cgroup of `pod_uid`/`container_id` right after it starts (it
/// has no child processes, so nothing is born outside). Dropping it kills it and removes the
/// cgroup.
#[derive(Debug)]
pub struct ContainerProcess {
    child: Option<Child>,
    v2: Cgroup,
    output_log: PathBuf,
    // Last: removed after the process is gone.
    dir: tempfile::TempDir,
}

impl ContainerProcess {
    /// Starts `program` with `argv0` and `args`, an environment of only `PATH` and `HOME`
    /// (the temp dir, also the working directory) plus `env`, and waits up to
    /// [`START_TIMEOUT`] for it to print a line `ready`.
    pub fn start(
        pod_uid: &str,
        container_id: &str,
        program: &Path,
        argv0: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let dir = tempfile::Builder::new()
            .prefix(&format!("mountlag-proc-{n}-"))
            .tempdir()
            .context("creating the process's temp dir")?;
        let output_log = dir.path().join("output.log");
        let output = fs::File::create(&output_log).context("creating output.log")?;
        let output2 = output.try_clone().context("dup output.log")?;
        let v2_root = cgroup_v2_root()?.context("no cgroup2 hierarchy is mounted")?;
        let v2 = Cgroup::create(&v2_root, &kubelet_cgroup_path(pod_uid, container_id))?;
        let child = Command::new(program)
            .arg0(argv0)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", dir.path())
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(output2)
            .process_group(0)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                v2.remove();
                return Err(
                    anyhow::Error::new(e).context(format!("spawning {}", program.display()))
                );
            }
        };
        let mut me = Self {
            child: Some(child),
            v2,
            output_log,
            dir,
        };
        fs::write(me.v2.procs_file(), me.pid().to_string())
            .context("moving the process into its cgroup")?;
        let deadline = Instant::now() + START_TIMEOUT;
        while !me.log().lines().any(|l| l == "ready") {
            ensure!(
                me.alive(),
                "{argv0} exited during start; log:\n{}",
                me.log()
            );
            ensure!(
                Instant::now() < deadline,
                "{argv0} did not say ready within {START_TIMEOUT:?}; log:\n{}",
                me.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(me)
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .unwrap_or(-1)
    }

    /// Still running (not exited, not killed by a signal).
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// How it ended, once it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// What it printed on stdout and stderr.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.output_log).unwrap_or_default()
    }

    /// Its temp dir (working directory and `HOME`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ContainerProcess {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = fs::write(self.v2.leaf.join("cgroup.kill"), "1");
        if let Ok(pgid) = i32::try_from(child.id()) {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.v2.procs().unwrap_or_default().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.v2.remove();
    }
}

enum StartError {
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Other(e)
    }
}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        StartError::Other(e.into())
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// nginx.conf for `spec` on `port`, everything writable inside `dir`.
fn nginx_config(spec: &ControllerSpec, dir: &Path, port: u16) -> String {
    let d = dir.display();
    let (crt, key) = spec.kind.cert_files();
    let crt = spec.cert_dir.join(crt);
    let key = spec.cert_dir.join(key);
    let tls = format!(
        "        ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_protocols TLSv1.2 TLSv1.3;\n        location / {{ return 200 \"ok\\n\"; }}\n",
        crt.display(),
        key.display()
    );
    let mut conf = format!(
        "# Generated by mountlag-testbed for pod {uid}, container {cid}.
daemon off;
master_process on;
worker_processes {NGINX_WORKERS};
pid {d}/nginx.pid;
error_log {d}/error.log info;
worker_shutdown_timeout 10s;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server_names_hash_bucket_size 128;

    server {{
        listen {ip}:{port} ssl default_server;
        server_name _;
{tls}    }}
",
        ip = spec.ip,
        uid = spec.pod_uid,
        cid = spec.container_id,
    );
    let ip = spec.ip;
    for name in &spec.server_names {
        let _ = write!(
            conf,
            "
    server {{
        listen {ip}:{port} ssl;
        server_name {name};
{tls}    }}
"
        );
    }
    conf.push_str("}\n");
    conf
}

/// haproxy.cfg for `spec` on `port`.
fn haproxy_config(spec: &ControllerSpec, dir: &Path, port: u16) -> String {
    let (crt, _key) = spec.kind.cert_files();
    format!(
        "# Generated by mountlag-testbed for pod {uid}, container {cid}.
# The key is loaded from <crt>.key (ssl-load-extra-files, default all).
global
    master-worker
    pidfile {d}/haproxy.pid
    hard-stop-after 10s

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe
    bind {ip}:{port} ssl crt {crt} ssl-min-ver TLSv1.2
    http-request return status 200 content-type text/plain string ok
",
        ip = spec.ip,
        uid = spec.pod_uid,
        cid = spec.container_id,
        d = dir.display(),
        crt = spec.cert_dir.join(crt).display(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cgroup_path_is_kubelets() {
        assert_eq!(
            kubelet_cgroup_path("6f1c2a4e-1b7d-4c55-9a57-3f3c1f0b9e01", &"ab".repeat(32)),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f1c2a4e_1b7d_4c55_9a57_3f3c1f0b9e01.slice/cri-containerd-{}.scope",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn configs_use_the_user_visible_links() {
        let spec = ControllerSpec::new(
            ControllerKind::Nginx,
            "uid-1",
            "/v/tls",
            vec!["a.example".into(), "b.example".into()],
        );
        let conf = nginx_config(&spec, Path::new("/tmp/x"), 8443);
        assert_eq!(conf.matches("ssl_certificate /v/tls/tls.crt;").count(), 3);
        assert_eq!(
            conf.matches("ssl_certificate_key /v/tls/tls.key;").count(),
            3
        );
        assert!(conf.contains("listen 127.0.0.1:8443 ssl default_server;"));
        assert!(conf.contains("server_name b.example;"));
        assert_eq!(spec.container_id.len(), 64);

        let spec = ControllerSpec {
            kind: ControllerKind::Haproxy,
            ..spec
        };
        let cfg = haproxy_config(&spec, Path::new("/tmp/x"), 8443);
        assert!(cfg.contains("bind 127.0.0.1:8443 ssl crt /v/tls/tls.crt"));
    }
}
