//! The kubelet stand-in: secret/projected volumes exactly as kubelet lays them out on a node.
//!
//! Every end-to-end test that needs "what kubelet put on disk" uses this module, so it follows
//! kubelet's code, not its documentation. The references are kubelet's
//! `pkg/volume/util/atomic_writer.go` (the writer), `pkg/volume/secret/secret.go` and
//! `pkg/volume/projected/projected.go` (each volume wraps a memory-backed emptyDir),
//! `pkg/volume/emptydir/empty_dir.go` (the tmpfs), `pkg/volume/volume_linux.go`
//! (`SetVolumeOwnership`, the fsGroup walk) and `pkg/volume/util/subpath/subpath_linux.go`
//! (subPath bind mounts).
//!
//! # How it maps to kubelet
//!
//! Layout under the kubelet root (`--root-dir`, `/var/lib/kubelet` on a real node):
//!
//! ```text
//! <root>/pods/<podUID>/                                  0750
//!   volumes/kubernetes.io~secret/<vol>/                  tmpfs mount, root mode 1777
//!     ..2025_01_31_12_00_00.123456789/                   0755, the real files
//!       tls.crt  tls.key  a/b/c                          item mode (defaultMode 0644)
//!     ..data -> ..2025_01_31_12_00_00.123456789          relative symlink, swapped atomically
//!     tls.crt -> ..data/tls.crt                          one link per first path component
//!     a -> ..data/a
//!   volumes/kubernetes.io~projected/<vol>/               same shape
//!   volume-subpaths/<vol>/<container>/<index>            bind mount of one resolved file
//!   plugins/kubernetes.io~empty-dir/<vol>/ready          emptyDir's "set up" marker
//! ```
//!
//! - [`KubeletStandIn::mount_volume`] is the wrapped emptyDir `SetUpAt` with medium `Memory`:
//!   `MkdirAll(dir, 0777)` (+ chmod 0777 against the umask), then
//!   `mount -t tmpfs -o size=<bytes> tmpfs <dir>` with no other flags, so the tmpfs root has
//!   tmpfs' default mode `1777` owned by root, then the `ready` marker. kubelet sizes the tmpfs
//!   as min(pod memory limit, node allocatable memory) (`SizeMemoryBackedVolumes`); the
//!   stand-in uses [`DEFAULT_TMPFS_SIZE`] unless [`KubeletStandIn::with_tmpfs_size`] says
//!   otherwise. The mount stays for the pod's whole life.
//! - [`KubeletStandIn::write`] / [`atomic_write`] is `AtomicWriter.Write`, step for step:
//!   1. validate and clean the payload paths (relative, no `..` element, not starting with
//!      `..`, elements ≤ 255 bytes, path ≤ 4096 bytes);
//!   2. `readlink ..data` (the current generation);
//!   3. walk the current generation: every path in it that is not in the new payload (nor a
//!      parent of one) is to be removed;
//!   4. compare bytes: if every payload file exists in the current generation with identical
//!      content and nothing is to be removed, no new generation is written (only missing
//!      top-level links are re-created, kubernetes#121472) and the result is
//!      [`WriteOutcome::Unchanged`]. Only content counts: a mode-only change is `Unchanged`;
//!   5. `MkdirTemp(dir, "..YYYY_MM_DD_HH_MM_SS.")` in UTC (mode 0700, name suffix = Go's
//!      random `uint32` in decimal, 1–10 digits), then chmod 0755;
//!   6. write each file (`MkdirAll(parent, 0777)`, `WriteFile(path, data, mode)`, chmod mode;
//!      only the 0777 bits of a mode count, as with Go's `os.FileMode`);
//!   7. with fsGroup, `SetVolumeOwnership` over the WHOLE volume dir (not only the new
//!      generation): every entry `lchown(-1, fsGroup)`; every non-symlink gets `mode | 0440`,
//!      directories also `| 0110 | setgid` (secret and projected volumes are read-only, hence
//!      0440 and not 0660). So with fsGroup the new generation dir ends up `2755` and the tmpfs
//!      root `3777`;
//!   8. `symlink("<generation>", "..data_tmp")`;
//!   9. `rename("..data_tmp", "..data")`: the atomic switch;
//!   10. for the first path component `c` of every payload path, `symlink("..data/c", c)`
//!       unless `readlink c` succeeds or fails with anything but "not found";
//!   11. remove the top-level names found in step 3 (nested ones disappear with the old
//!       generation);
//!   12. `RemoveAll` the old generation dir.
//!
//!   Inotify on the volume dir therefore sees, for an update: `IN_CREATE|IN_ISDIR ..<new>`,
//!   `IN_ATTRIB ..<new>` (the chmod), [`IN_ATTRIB` on many entries with fsGroup],
//!   `IN_CREATE ..data_tmp`, `IN_MOVED_FROM ..data_tmp` + `IN_MOVED_TO ..data` (same cookie),
//!   `IN_CREATE` of new top-level names, `IN_DELETE` of dropped top-level names,
//!   `IN_DELETE|IN_ISDIR ..<old>`.
//! - [`KubeletStandIn::mount_subpath`] is kubelet's `doBindSubPath`: resolve all symlinks of
//!   `<volume>/<subPath>` once, refuse a result outside the volume, create the target under
//!   `volume-subpaths/<vol>/<container>/<index>` (parents 0750; an empty 0640 file for a file, a
//!   0750 dir for a dir), open the resolved path `O_PATH|O_NOFOLLOW` and bind-mount
//!   `/proc/self/fd/<fd>` onto the target. If the target is already a mount point it is returned
//!   as is: kubelet never refreshes a subPath mount, so it keeps the generation it was made
//!   from (the deleted old file stays alive behind the bind mount).
//! - [`KubeletStandIn::teardown_pod`] is what kubelet does when a pod goes: subPath mounts
//!   are unmounted first (`CleanSubPaths`), then the volume tmpfs mounts (emptyDir
//!   `TearDownAt`), then the pod dir is removed. Watchers on a volume dir get `IN_UNMOUNT`.
//!
//! # Where this differs from kubelet
//!
//! - No SELinux: no `context=` mount option, no relabelling.
//! - Ownership: only fsGroup (steps above). No `FsUser` (kubelet sets it only for projected
//!   service-account tokens), no `fsGroupChangePolicy` (secret/projected volumes always use
//!   "Always" anyway), no user namespaces (`hostUsers: false` id mapping).
//! - tmpfs size is a fixed number instead of min(pod memory limit, node allocatable), and the
//!   `noswap` option newer kubelets add when node swap is enabled is never added.
//! - Timing: nothing here runs by itself. kubelet rewrites volumes when it syncs the pod
//!   (every 60–90 s, on pod spec/annotation changes, on container events); here the caller
//!   decides when to call [`KubeletStandIn::write`]. There is no retry loop and no backoff.
//! - Payload: the caller builds the final payload (keys, `items`, modes, projected-source
//!   merging); the stand-in does not talk to an API server.
//! - Safety: kubelet would `RemoveAll` whatever `..data` points at, even outside the volume
//!   (`..data -> ../x`); the stand-in refuses with an error instead. Pod UIDs, volume and
//!   container names must be single path components.
//! - Payload maps are ordered ([`Payload`] is a `BTreeMap`), so files are written and links
//!   created in sorted order; kubelet iterates a Go map (random order). Nothing observable on
//!   the volume root depends on it except the order of `IN_CREATE` events for top-level links.
//! - Quirks of kubelet that are reproduced on purpose: a payload path whose parent was a file
//!   in the current generation (`a` → `a/b`) makes the comparison step fail with "not a
//!   directory" (Go's `os.IsNotExist` does not cover `ENOTDIR`), and a top-level name listed
//!   for removal that is already gone makes `write` return an error after the switch, leaving
//!   the old generation dir behind.
//!
//! # Building hostile layouts
//!
//! The free functions [`raw_write_generation`], [`raw_swap_data_link`],
//! [`raw_create_user_visible_links`] and [`read_data_link`] expose single steps, so tests can
//! pre-write generations and swap `..data` between them thousands of times, or leave a volume
//! half-written.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, bail, ensure};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

/// Name of the symlink that points at the current generation.
pub const DATA_DIR_NAME: &str = "..data";
/// Name of the symlink created next to `..data` and renamed over it.
pub const NEW_DATA_DIR_NAME: &str = "..data_tmp";
/// Directory under the pod dir that holds subPath bind mounts.
pub const SUBPATHS_DIR_NAME: &str = "volume-subpaths";
/// tmpfs size used by [`KubeletStandIn::mount_volume`] unless configured otherwise.
pub const DEFAULT_TMPFS_SIZE: u64 = 64 * 1024 * 1024;
/// Directory under `pods/<uid>/plugins` where the wrapped emptyDir keeps its `ready` marker.
pub const EMPTY_DIR_PLUGIN_DIR_NAME: &str = "kubernetes.io~empty-dir";

const MAX_FILE_NAME_LENGTH: usize = 255;
const MAX_PATH_LENGTH: usize = 4096;

/// The two kinds of volume kubelet projects Secrets into (both tmpfs-backed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VolumeKind {
    /// `secret:` volume, plugin `kubernetes.io/secret`.
    Secret,
    /// `projected:` volume, plugin `kubernetes.io/projected`.
    Projected,
}

impl VolumeKind {
    /// Directory name under `pods/<uid>/volumes/` (the escaped plugin name).
    pub fn dir_name(self) -> &'static str {
        match self {
            VolumeKind::Secret => "kubernetes.io~secret",
            VolumeKind::Projected => "kubernetes.io~projected",
        }
    }

    /// kubelet's plugin name.
    pub fn plugin_name(self) -> &'static str {
        match self {
            VolumeKind::Secret => "kubernetes.io/secret",
            VolumeKind::Projected => "kubernetes.io/projected",
        }
    }
}

/// One file of a payload: its bytes and its mode (only the 0777 bits are used, like kubelet).
#[derive(Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// File content.
    pub data: Vec<u8>,
    /// File mode, e.g. `0o644` (secret `defaultMode`) or an item's `mode`.
    pub mode: u32,
}

impl FileProjection {
    /// A file with `data` and `mode`.
    pub fn new(data: impl Into<Vec<u8>>, mode: u32) -> Self {
        Self {
            data: data.into(),
            mode,
        }
    }
}

impl fmt::Debug for FileProjection {
    // Secret bytes never go into test output: only their length and a digest prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&self.data);
        f.debug_struct("FileProjection")
            .field("len", &self.data.len())
            .field("sha256_prefix", &hex::encode(&digest[..6]))
            .field("mode", &format_args!("{:#o}", self.mode))
            .finish()
    }
}

/// Relative path (may be nested, `a/b/c`) → file.
pub type Payload = BTreeMap<String, FileProjection>;

/// What [`KubeletStandIn::write`] did.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WriteOutcome {
    /// Every payload file was byte-identical and nothing was to be removed: no new generation.
    Unchanged,
    /// A new generation was written and `..data` now points at it.
    Written {
        /// Name of the new generation dir (the `..data` target), e.g.
        /// `..2025_01_31_12_00_00.123456789`.
        generation: String,
    },
}

impl WriteOutcome {
    /// The new generation, if one was written.
    pub fn generation(&self) -> Option<&str> {
        match self {
            WriteOutcome::Unchanged => None,
            WriteOutcome::Written { generation } => Some(generation),
        }
    }
}

/// A kubelet on this machine, rooted at a (temporary) kubelet root dir.
///
/// It remembers every pod it mounted something for and tears those pods down on drop.
#[derive(Debug)]
pub struct KubeletStandIn {
    root: PathBuf,
    tmpfs_size: Option<u64>,
    mounted_pods: Mutex<BTreeSet<String>>,
    // Declared last: dropped after `Drop::drop` has unmounted everything.
    owned_root: Option<tempfile::TempDir>,
}

impl KubeletStandIn {
    /// A stand-in rooted at `root` (created if missing, then canonicalized so paths match
    /// `/proc/self/mountinfo`).
    pub fn new(root: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)
            .with_context(|| format!("creating kubelet root {}", root.display()))?;
        let root = fs::canonicalize(&root)
            .with_context(|| format!("canonicalizing kubelet root {}", root.display()))?;
        // kubelet creates `<root>/pods` when it starts (setupDataDirs), before any pod runs;
        // an agent started before the first pod must find it, or it runs probe-only.
        fs::create_dir_all(root.join("pods"))
            .with_context(|| format!("creating {}/pods", root.display()))?;
        Ok(Self {
            root,
            tmpfs_size: Some(DEFAULT_TMPFS_SIZE),
            mounted_pods: Mutex::new(BTreeSet::new()),
            owned_root: None,
        })
    }

    /// A stand-in rooted at a fresh temp dir under `/tmp`, removed on drop (after teardown).
    pub fn in_tempdir() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("mountlag-kubelet-")
            .tempdir()
            .context("creating a temp kubelet root")?;
        let mut me = Self::new(dir.path())?;
        me.owned_root = Some(dir);
        Ok(me)
    }

    /// Size of the tmpfs mounted per volume (`size=` option); `None` = the kernel default
    /// (half of RAM), which is what kubelet does without `SizeMemoryBackedVolumes`.
    pub fn with_tmpfs_size(mut self, bytes: Option<u64>) -> Self {
        self.tmpfs_size = bytes;
        self
    }

    /// The kubelet root dir (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/pods`.
    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }

    /// `<root>/pods/<uid>`.
    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.pods_dir().join(pod_uid)
    }

    /// `<root>/pods/<uid>/volumes/kubernetes.io~secret|projected/<name>`.
    pub fn volume_dir(&self, pod_uid: &str, kind: VolumeKind, name: &str) -> PathBuf {
        self.pod_dir(pod_uid)
            .join("volumes")
            .join(kind.dir_name())
            .join(name)
    }

    /// `<root>/pods/<uid>/volume-subpaths/<vol>/<container>/<index>`.
    pub fn subpath_dir(
        &self,
        pod_uid: &str,
        volume_name: &str,
        container: &str,
        index: usize,
    ) -> PathBuf {
        self.pod_dir(pod_uid)
            .join(SUBPATHS_DIR_NAME)
            .join(volume_name)
            .join(container)
            .join(index.to_string())
    }

    /// Pods this stand-in mounted something for and has not torn down yet.
    pub fn mounted_pods(&self) -> Vec<String> {
        self.pods().iter().cloned().collect()
    }

    fn pods(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.mounted_pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Set up a secret/projected volume like kubelet's wrapped emptyDir (medium Memory):
    /// `mkdir -p` the volume dir (0777), mount a fresh tmpfs on it (root mode 1777, `size=`),
    /// write the emptyDir `ready` marker. Idempotent: an existing tmpfs mount is kept (and
    /// with it the content), as kubelet does on remount.
    pub fn mount_volume(
        &self,
        pod_uid: &str,
        kind: VolumeKind,
        name: &str,
    ) -> anyhow::Result<PathBuf> {
        check_component("pod UID", pod_uid)?;
        check_component("volume name", name)?;
        let pod_dir = self.pod_dir(pod_uid);
        // kubelet's makePodDataDirs: pod dir, volumes and plugins dirs, all 0750.
        for dir in [
            pod_dir.clone(),
            pod_dir.join("volumes"),
            pod_dir.join("plugins"),
        ] {
            mkdir_all(&dir, 0o750)?;
        }
        let dir = self.volume_dir(pod_uid, kind, name);
        // emptyDir setupDir: MkdirAll(dir, 0777), chmod 0777 if the umask got in the way.
        mkdir_all(&dir, 0o777)?;
        let meta = fs::symlink_metadata(&dir).with_context(|| format!("stat {}", dir.display()))?;
        if meta.permissions().mode() & 0o777 != 0o777 {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))
                .with_context(|| format!("chmod 0777 {}", dir.display()))?;
        }
        self.pods().insert(pod_uid.to_owned());
        let already = read_mountinfo()?
            .into_iter()
            .any(|m| m.mount_point == dir && m.fs_type == "tmpfs");
        if !already {
            let options = self.tmpfs_size.map(|s| format!("size={s}"));
            nix::mount::mount(
                Some("tmpfs"),
                &dir,
                Some("tmpfs"),
                MsFlags::empty(),
                options.as_deref(),
            )
            .with_context(|| format!("mount -t tmpfs tmpfs {}", dir.display()))?;
        }
        // emptyDir SetReady: plugins/kubernetes.io~empty-dir/<vol>/ready (dir 0750, file 0600).
        let meta_dir = pod_dir
            .join("plugins")
            .join(EMPTY_DIR_PLUGIN_DIR_NAME)
            .join(name);
        mkdir_all(&meta_dir, 0o750)?;
        let ready = meta_dir.join("ready");
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&ready)
            .with_context(|| format!("creating {}", ready.display()))?;
        Ok(dir)
    }

    /// Unmount one volume's tmpfs (lazy-detach fallback), leaving the empty dir. kubelet does
    /// this only while tearing a pod down; tests use it for "the mount disappeared" cases.
    pub fn unmount_volume(
        &self,
        pod_uid: &str,
        kind: VolumeKind,
        name: &str,
    ) -> anyhow::Result<()> {
        check_component("pod UID", pod_uid)?;
        check_component("volume name", name)?;
        unmount(&self.volume_dir(pod_uid, kind, name))
    }

    /// kubelet's `AtomicWriter.Write` into `volume_dir` (see the module docs for the steps).
    /// `fs_group` is the pod's `securityContext.fsGroup`.
    pub fn write(
        &self,
        volume_dir: &Path,
        payload: &Payload,
        fs_group: Option<u32>,
    ) -> anyhow::Result<WriteOutcome> {
        atomic_write(volume_dir, payload, fs_group)
    }

    /// subPath: bind-mount the resolved `<volume>/<sub_path>` ONCE onto
    /// `pods/<uid>/volume-subpaths/<vol>/<container>/<index>`. Returns the target. If it is
    /// already mounted, it is returned unchanged: kubelet never updates a subPath mount.
    pub fn mount_subpath(
        &self,
        pod_uid: &str,
        volume_name: &str,
        kind: VolumeKind,
        container: &str,
        index: usize,
        sub_path: &str,
    ) -> anyhow::Result<PathBuf> {
        check_component("pod UID", pod_uid)?;
        check_component("volume name", volume_name)?;
        check_component("container name", container)?;
        // API validation of volumeMounts[].subPath: relative, no '..' element.
        let sub = Path::new(sub_path);
        ensure!(
            !sub_path.is_empty()
                && sub
                    .components()
                    .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)),
            "invalid subPath {sub_path:?}: must be relative and must not contain '..'"
        );
        let target = self.subpath_dir(pod_uid, volume_name, container, index);
        if read_mountinfo()?.iter().any(|m| m.mount_point == target) {
            return Ok(target);
        }
        let volume_path = self.volume_dir(pod_uid, kind, volume_name);
        let volume_real = fs::canonicalize(&volume_path)
            .with_context(|| format!("resolving volume path {}", volume_path.display()))?;
        let host_path = volume_path.join(sub);
        let resolved = fs::canonicalize(&host_path)
            .with_context(|| format!("resolving subPath {}", host_path.display()))?;
        ensure!(
            resolved.starts_with(&volume_real),
            "subpath {} not within volume path {}",
            resolved.display(),
            volume_real.display()
        );
        // Open the resolved path without following anything further; mount through the fd.
        let source = fs::OpenOptions::new()
            .read(true)
            .custom_flags(
                (nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_NOFOLLOW
                    | nix::fcntl::OFlag::O_CLOEXEC)
                    .bits(),
            )
            .open(&resolved)
            .with_context(|| format!("opening subPath {}", resolved.display()))?;
        let is_dir = source
            .metadata()
            .with_context(|| format!("stat {}", resolved.display()))?
            .is_dir();
        let parent = target
            .parent()
            .context("subpath target has no parent")?
            .to_path_buf();
        mkdir_all(&parent, 0o750)?;
        self.pods().insert(pod_uid.to_owned());
        if is_dir {
            match fs::DirBuilder::new().mode(0o750).create(&target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("mkdir {}", target.display()));
                }
            }
        } else {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o640)
                .open(&target)
                .with_context(|| format!("creating subpath target {}", target.display()))?;
        }
        let fd_path = format!("/proc/self/fd/{}", source.as_raw_fd());
        if let Err(e) = nix::mount::mount(
            Some(fd_path.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            let _ = if is_dir {
                fs::remove_dir(&target)
            } else {
                fs::remove_file(&target)
            };
            return Err(e).with_context(|| {
                format!(
                    "bind-mounting {} ({}) onto {}",
                    resolved.display(),
                    fd_path,
                    target.display()
                )
            });
        }
        Ok(target)
    }

    /// Pod teardown: unmount the pod's subPath mounts, then its volume mounts (each with a
    /// lazy-detach fallback; anything else mounted under the pod dir goes too), then remove
    /// the pod dir. A pod that does not exist is not an error.
    pub fn teardown_pod(&self, pod_uid: &str) -> anyhow::Result<()> {
        check_component("pod UID", pod_uid)?;
        let pod_dir = self.pod_dir(pod_uid);
        let subpaths = pod_dir.join(SUBPATHS_DIR_NAME);
        for _round in 0..32 {
            let mut mounts: Vec<PathBuf> = read_mountinfo()?
                .into_iter()
                .map(|m| m.mount_point)
                .filter(|p| p.starts_with(&pod_dir))
                .collect();
            if mounts.is_empty() {
                break;
            }
            // subPaths first (CleanSubPaths before TearDown), deepest first within each group.
            mounts.sort_by_key(|p| {
                (
                    !p.starts_with(&subpaths),
                    std::cmp::Reverse(p.components().count()),
                )
            });
            mounts.dedup();
            for m in &mounts {
                unmount(m)?;
            }
        }
        let left: Vec<PathBuf> = read_mountinfo()?
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&pod_dir))
            .collect();
        ensure!(
            left.is_empty(),
            "mounts left under {} after teardown: {:?}",
            pod_dir.display(),
            left
        );
        match fs::remove_dir_all(&pod_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", pod_dir.display())),
        }
        self.pods().remove(pod_uid);
        Ok(())
    }
}

impl Drop for KubeletStandIn {
    fn drop(&mut self) {
        let pods: Vec<String> = self.pods().iter().cloned().collect();
        for pod in pods {
            if let Err(e) = self.teardown_pod(&pod) {
                eprintln!(
                    "kubelet stand-in: teardown of pod {pod} under {} failed: {e:#}",
                    self.root.display()
                );
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// AtomicWriter

/// kubelet's `AtomicWriter.Write` into `volume_dir`, usable without a [`KubeletStandIn`]
/// (also on a plain directory, as for ConfigMap volumes).
pub fn atomic_write(
    volume_dir: &Path,
    payload: &Payload,
    fs_group: Option<u32>,
) -> anyhow::Result<WriteOutcome> {
    // NewAtomicWriter: the target dir must exist.
    fs::metadata(volume_dir)
        .with_context(|| format!("atomic writer target {}", volume_dir.display()))?;
    // (1) validate and clean.
    let clean = validate_payload(payload)?;
    // (2) the current generation.
    let data_path = volume_dir.join(DATA_DIR_NAME);
    let mut old_ts = match fs::read_link(&data_path) {
        Ok(p) => Some(p.into_os_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("readlink {}", data_path.display())),
    };
    let mut to_remove = BTreeSet::new();
    let mut should_write = true;
    if let Some(old) = &old_ts {
        let old_path = go_join(volume_dir, old);
        // (3) paths of the current generation that the payload no longer has.
        to_remove = paths_to_remove(&clean, &old_path);
        // (4) byte comparison.
        let differs = should_write_payload(&clean, &old_path)?;
        if !differs && to_remove.is_empty() {
            should_write = false;
            old_ts = None;
        }
    }
    let mut outcome = WriteOutcome::Unchanged;
    if should_write {
        // (5)
        let (ts_dir, ts_name) = new_timestamp_dir(volume_dir)?;
        // (6)
        write_payload_to_dir(&clean, &ts_dir)?;
        // (7)
        if let Some(gid) = fs_group {
            set_volume_ownership(volume_dir, gid)?;
        }
        // (8) + (9)
        if let Err(e) = swap_data_link(volume_dir, &ts_name) {
            let _ = go_remove_all(&ts_dir);
            return Err(e);
        }
        outcome = WriteOutcome::Written {
            generation: ts_name,
        };
    }
    // (10)
    create_user_visible_files(volume_dir, &clean)?;
    // (11)
    remove_user_visible_paths(volume_dir, &to_remove)?;
    // (12)
    if let Some(old) = old_ts {
        let old_path = go_join(volume_dir, &old);
        ensure!(
            old_path.parent() == Some(go_clean_path(volume_dir).as_path())
                && old_path.file_name().is_some(),
            "refusing to remove the old generation {:?} of {}: it is not inside the volume dir \
             (kubelet would RemoveAll {})",
            old,
            volume_dir.display(),
            old_path.display()
        );
        go_remove_all(&old_path)
            .with_context(|| format!("removing old data directory {}", old_path.display()))?;
    }
    Ok(outcome)
}

/// Target of `<volume_dir>/..data` (the current generation name), `None` when there is none.
pub fn read_data_link(volume_dir: &Path) -> anyhow::Result<Option<String>> {
    let link = volume_dir.join(DATA_DIR_NAME);
    match fs::read_link(&link) {
        Ok(p) => Ok(Some(p.to_string_lossy().into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("readlink {}", link.display())),
    }
}

/// Steps 5–6 only: write `payload` into a new generation dir inside `volume_dir` and return
/// its name. `..data` and the user-visible links are not touched.
pub fn raw_write_generation(volume_dir: &Path, payload: &Payload) -> anyhow::Result<String> {
    let clean = validate_payload(payload)?;
    let (ts_dir, ts_name) = new_timestamp_dir(volume_dir)?;
    write_payload_to_dir(&clean, &ts_dir)?;
    Ok(ts_name)
}

/// Steps 8–9 only: `symlink(new_generation_dir_name, "..data_tmp")` then
/// `rename("..data_tmp", "..data")`. The target is not checked: it may be missing, a file,
/// anything a hostile test wants. Fails like kubelet if `..data_tmp` already exists.
pub fn raw_swap_data_link(volume_dir: &Path, new_generation_dir_name: &str) -> anyhow::Result<()> {
    swap_data_link(volume_dir, new_generation_dir_name)
}

/// Step 10 only: create `c -> ..data/c` for the first component `c` of every payload path
/// unless `c` already exists.
pub fn raw_create_user_visible_links(volume_dir: &Path, payload: &Payload) -> anyhow::Result<()> {
    let clean = validate_payload(payload)?;
    create_user_visible_files(volume_dir, &clean)
}

/// True for names kubelet's writer gives generation dirs:
/// `^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d{1,10}$`.
pub fn is_generation_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let b = rest.as_bytes();
    // YYYY_MM_DD_HH_MM_SS = 19 bytes, then '.', then 1..=10 digits.
    if b.len() < 21 || b.len() > 30 {
        return false;
    }
    let stamp_ok = b[..19].iter().enumerate().all(|(i, c)| match i {
        4 | 7 | 10 | 13 | 16 => *c == b'_',
        _ => c.is_ascii_digit(),
    });
    stamp_ok && b[19] == b'.' && b[20..].iter().all(u8::is_ascii_digit)
}

fn swap_data_link(volume_dir: &Path, ts_name: &str) -> anyhow::Result<()> {
    let tmp = volume_dir.join(NEW_DATA_DIR_NAME);
    std::os::unix::fs::symlink(ts_name, &tmp)
        .with_context(|| format!("symlink {ts_name} {}", tmp.display()))?;
    let data = volume_dir.join(DATA_DIR_NAME);
    if let Err(e) = fs::rename(&tmp, &data) {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("rename {} {}", tmp.display(), data.display()));
    }
    Ok(())
}

type CleanPayload<'a> = BTreeMap<String, &'a FileProjection>;

fn validate_payload(payload: &Payload) -> anyhow::Result<CleanPayload<'_>> {
    let mut clean = BTreeMap::new();
    for (path, projection) in payload {
        validate_path(path)?;
        clean.insert(go_clean(path), projection);
    }
    Ok(clean)
}

fn validate_path(target: &str) -> anyhow::Result<()> {
    ensure!(
        !target.is_empty(),
        "invalid path: must not be empty: {target:?}"
    );
    ensure!(
        !target.starts_with('/'),
        "invalid path: must be relative path: {target}"
    );
    ensure!(
        target.len() <= MAX_PATH_LENGTH,
        "invalid path: must be less than or equal to {MAX_PATH_LENGTH} characters"
    );
    let items: Vec<&str> = target.split('/').collect();
    for item in &items {
        ensure!(
            *item != "..",
            "invalid path: must not contain '..': {target}"
        );
        ensure!(
            item.len() <= MAX_FILE_NAME_LENGTH,
            "invalid path: filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters"
        );
    }
    ensure!(
        !(items[0].starts_with("..") && items[0].len() > 2),
        "invalid path: must not start with '..': {target}"
    );
    Ok(())
}

fn should_write_payload(clean: &CleanPayload<'_>, old_ts_path: &Path) -> anyhow::Result<bool> {
    for (path, projection) in clean {
        let full = old_ts_path.join(path);
        if let Err(e) = fs::symlink_metadata(&full)
            && e.kind() == io::ErrorKind::NotFound
        {
            return Ok(true);
        }
        let on_disk = fs::read(&full).with_context(|| {
            format!(
                "error determining whether payload should be written to disk: reading {}",
                full.display()
            )
        })?;
        if on_disk != projection.data {
            return Ok(true);
        }
    }
    Ok(false)
}

fn paths_to_remove(clean: &CleanPayload<'_>, old_ts_path: &Path) -> BTreeSet<String> {
    // filepath.Walk over the old generation; errors are ignored like kubelet's visitor does.
    let mut current = BTreeSet::new();
    walk_relative(old_ts_path, "", &mut current);
    let mut new_paths = BTreeSet::new();
    for file in clean.keys() {
        let mut sub = file.as_str();
        loop {
            new_paths.insert(sub.to_owned());
            match sub.rfind('/') {
                Some(i) => sub = &sub[..i],
                None => break,
            }
        }
    }
    current.difference(&new_paths).cloned().collect()
}

fn walk_relative(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<OsString> = entries
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for name in names {
        let rel = if prefix.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{prefix}/{}", name.to_string_lossy())
        };
        out.insert(rel.clone());
        walk_relative(&dir.join(&name), &rel, out);
    }
}

fn new_timestamp_dir(volume_dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    let now = time::OffsetDateTime::now_utc();
    let prefix = format!(
        "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    // Go's os.MkdirTemp: prefix + decimal of a random uint32, Mkdir 0700, retry on EEXIST.
    for _ in 0..10_000 {
        let name = format!("{prefix}{}", random_u32()?);
        let path = volume_dir.join(&name);
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                    .with_context(|| format!("chmod 0755 {}", path.display()))?;
                return Ok((path, name));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("unable to create new temp directory {}", path.display())
                });
            }
        }
    }
    bail!(
        "unable to create new temp directory in {}: too many collisions",
        volume_dir.display()
    )
}

fn write_payload_to_dir(clean: &CleanPayload<'_>, dir: &Path) -> anyhow::Result<()> {
    for (path, projection) in clean {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o777)
                .create(parent)
                .with_context(|| format!("unable to create directory {}", parent.display()))?;
        }
        let mode = projection.mode & 0o777;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&full)
            .with_context(|| {
                format!("unable to write file {} with mode {mode:o}", full.display())
            })?;
        file.write_all(&projection.data)
            .with_context(|| format!("unable to write file {}", full.display()))?;
        drop(file);
        fs::set_permissions(&full, fs::Permissions::from_mode(mode)).with_context(|| {
            format!("unable to change file {} to mode {mode:o}", full.display())
        })?;
    }
    Ok(())
}

/// kubelet's `SetVolumeOwnership` for a read-only volume: every entry under (and including)
/// `dir` gets group `gid`; non-symlinks get `| 0440`, directories also `| 0110 | setgid`.
fn set_volume_ownership(dir: &Path, gid: u32) -> anyhow::Result<()> {
    let meta =
        fs::symlink_metadata(dir).with_context(|| format!("stat {} for fsGroup", dir.display()))?;
    change_file_permission(dir, gid, &meta);
    if meta.is_dir() {
        let mut names: Vec<OsString> = fs::read_dir(dir)
            .with_context(|| format!("reading {} for fsGroup", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for name in names {
            let child = dir.join(&name);
            match fs::symlink_metadata(&child) {
                // walkDeep tolerates entries that vanish while it runs.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                _ => set_volume_ownership(&child, gid)?,
            }
        }
    }
    Ok(())
}

fn change_file_permission(path: &Path, gid: u32, meta: &fs::Metadata) {
    // kubelet logs and ignores both failures.
    if let Err(e) = std::os::unix::fs::lchown(path, None, Some(gid)) {
        tracing::warn!(path = %path.display(), error = %e, "lchown for fsGroup failed");
    }
    if meta.file_type().is_symlink() {
        return;
    }
    let mut mask = 0o440;
    if meta.is_dir() {
        mask |= 0o2000 | 0o110;
    }
    let mode = (meta.mode() & 0o7777) | mask;
    if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
        tracing::warn!(path = %path.display(), error = %e, "chmod for fsGroup failed");
    }
}

fn create_user_visible_files(volume_dir: &Path, clean: &CleanPayload<'_>) -> anyhow::Result<()> {
    for path in clean.keys() {
        let link_name = path.split('/').next().unwrap_or(path);
        let visible = volume_dir.join(link_name);
        match fs::read_link(&visible) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let target = format!("{DATA_DIR_NAME}/{link_name}");
                std::os::unix::fs::symlink(&target, &visible)
                    .with_context(|| format!("symlink {target} {}", visible.display()))?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn remove_user_visible_paths(volume_dir: &Path, paths: &BTreeSet<String>) -> anyhow::Result<()> {
    let mut last_err = None;
    for p in paths {
        // Only names in the volume root; nested paths go with the old generation.
        if p.contains('/') {
            continue;
        }
        let path = volume_dir.join(p);
        if let Err(e) = go_remove(&path) {
            last_err = Some(anyhow::Error::new(e).context(format!(
                "error pruning old user-visible path {}",
                path.display()
            )));
        }
    }
    match last_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Go's `os.Remove`: unlink, else rmdir.
fn go_remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(unlink_err) => match fs::remove_dir(path) {
            Ok(()) => Ok(()),
            Err(rmdir_err) if rmdir_err.raw_os_error() == Some(Errno::ENOTDIR as i32) => {
                Err(unlink_err)
            }
            Err(rmdir_err) => Err(rmdir_err),
        },
    }
}

/// Go's `os.RemoveAll`: a missing path is fine; a symlink or file is removed itself.
fn go_remove_all(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => match fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
        Ok(_) => fs::remove_file(path),
    }
}

/// Go's `filepath.Clean` for '/'-separated relative or absolute paths.
fn go_clean(p: &str) -> String {
    let bytes = go_clean_bytes(p.as_bytes());
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn go_clean_bytes(p: &[u8]) -> Vec<u8> {
    if p.is_empty() {
        return b".".to_vec();
    }
    let rooted = p[0] == b'/';
    let mut out: Vec<&[u8]> = Vec::new();
    for part in p.split(|c| *c == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if out.last().is_some_and(|l| *l != b"..") {
                    out.pop();
                } else if !rooted {
                    out.push(part);
                }
            }
            _ => out.push(part),
        }
    }
    let mut joined = out.join(&b'/');
    if rooted {
        joined.insert(0, b'/');
    }
    if joined.is_empty() {
        joined.push(b'.');
    }
    joined
}

fn go_clean_path(p: &Path) -> PathBuf {
    PathBuf::from(OsString::from_vec(go_clean_bytes(p.as_os_str().as_bytes())))
}

/// Go's `filepath.Join(dir, name)`: concatenation then Clean (an absolute `name` stays under
/// `dir`, `..` elements are resolved lexically).
fn go_join(dir: &Path, name: &OsStr) -> PathBuf {
    let mut joined = dir.as_os_str().as_bytes().to_vec();
    joined.push(b'/');
    joined.extend_from_slice(name.as_bytes());
    PathBuf::from(OsString::from_vec(go_clean_bytes(&joined)))
}

fn random_u32() -> anyhow::Result<u32> {
    let mut buf = [0u8; 4];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(u32::from_ne_bytes(buf))
}

fn mkdir_all(dir: &Path, mode: u32) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("mkdir -p {}", dir.display()))
}

fn check_component(what: &str, s: &str) -> anyhow::Result<()> {
    ensure!(
        !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0'),
        "invalid {what} {s:?}: must be a single path component"
    );
    Ok(())
}

/// Unmount `target`; busy → lazy detach; "not mounted" is fine.
fn unmount(target: &Path) -> anyhow::Result<()> {
    match nix::mount::umount2(target, MntFlags::empty()) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EBUSY) => match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("umount -l {}", target.display())),
        },
        Err(e) => Err(e).with_context(|| format!("umount {}", target.display())),
    }
}

// ------------------------------------------------------------------------------------------
// mountinfo

/// One line of `/proc/self/mountinfo` (the fields tests need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount ID.
    pub mount_id: u64,
    /// Root of the mount within its filesystem (e.g. the file a bind mount came from).
    pub root: PathBuf,
    /// Mount point, octal escapes (`\040`) decoded.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,relatime`).
    pub mount_options: String,
    /// Filesystem type (`tmpfs`).
    pub fs_type: String,
    /// Mount source (`tmpfs`).
    pub source: String,
    /// Per-superblock options (`rw,size=65536k,mode=1777`).
    pub super_options: String,
}

/// Parse `/proc/self/mountinfo`.
pub fn read_mountinfo() -> anyhow::Result<Vec<MountEntry>> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (pre, post) = line.split_once(" - ")?;
    let pre: Vec<&str> = pre.split(' ').collect();
    let post: Vec<&str> = post.split(' ').collect();
    if pre.len() < 6 || post.len() < 3 {
        return None;
    }
    Some(MountEntry {
        mount_id: pre[0].parse().ok()?,
        root: PathBuf::from(OsString::from_vec(unescape_octal(pre[3]))),
        mount_point: PathBuf::from(OsString::from_vec(unescape_octal(pre[4]))),
        mount_options: pre[5].to_owned(),
        fs_type: post[0].to_owned(),
        source: post[1].to_owned(),
        super_options: post[2].to_owned(),
    })
}

fn unescape_octal(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_clean_matches_go() {
        assert_eq!(go_clean("a//b/./c/"), "a/b/c");
        assert_eq!(go_clean("./a"), "a");
        assert_eq!(go_clean("a/../b"), "b");
        assert_eq!(go_clean(""), ".");
        assert_eq!(
            go_join(Path::new("/v"), OsStr::new("/etc")),
            PathBuf::from("/v/etc")
        );
        assert_eq!(
            go_join(Path::new("/v/x"), OsStr::new("../y")),
            PathBuf::from("/v/y")
        );
    }

    #[test]
    fn generation_names() {
        assert!(is_generation_name("..2025_01_31_12_00_00.1"));
        assert!(is_generation_name("..2025_01_31_12_00_00.4294967295"));
        assert!(!is_generation_name("..2025_01_31_12_00_00."));
        assert!(!is_generation_name("..2025_01_31_12_00_00.12345678901"));
        assert!(!is_generation_name("..data"));
        assert!(!is_generation_name("2025_01_31_12_00_00.1"));
        assert!(!is_generation_name("..2025-01_31_12_00_00.1"));
    }

    #[test]
    fn payload_validation() {
        for bad in ["", "/abs", "a/../b", "..x", "..data", "../a"] {
            assert!(validate_path(bad).is_err(), "{bad:?} should be rejected");
        }
        for good in ["a", "a/b/c", "..", "a..b", "x/..y"] {
            // ".." alone is rejected by the element check; the rest pass.
            assert_eq!(validate_path(good).is_ok(), good != "..", "{good:?}");
        }
    }

    #[test]
    fn mountinfo_line() {
        let e = parse_mountinfo_line(
            "36 35 0:45 / /tmp/a\\040b rw,relatime shared:1 - tmpfs tmpfs rw,size=1024k,mode=1777",
        )
        .expect("parses");
        assert_eq!(e.mount_point, PathBuf::from("/tmp/a b"));
        assert_eq!(e.fs_type, "tmpfs");
        assert_eq!(e.super_options, "rw,size=1024k,mode=1777");
    }

    #[test]
    fn debug_hides_bytes() {
        let p = FileProjection::new(b"-----BEGIN PRIVATE KEY-----".to_vec(), 0o400);
        let s = format!("{p:?}");
        assert!(!s.contains("PRIVATE"), "{s}");
        assert!(s.contains("0o400"), "{s}");
    }
}
