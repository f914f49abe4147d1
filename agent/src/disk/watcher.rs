//! Turns kernel notifications about volume directories into [`VolumeChange`]s.
//!
//! ```text
//!  volume dirs ── inotify (one instance, notify crate) ──▶ handle_event ──┐
//!                                                                          ├─▶ re-read ..data ─▶ VolumeChange
//!  /proc/self/mountinfo ── poll(POLLPRI) (mounttable thread) ──▶ re-arm ───┘      (only when it differs
//!                              └─ timeout: slow safety rescan                       from the last report)
//! ```
//!
//! The one published fact per volume is the `..data` target. An event naming `..data` (or the
//! volume directory itself) is a hint to re-read it; a report goes out only when it differs
//! from the last one. Of the five or so events of one AtomicWriter update only the rename onto
//! `..data` names it: one read and one report per update, none reported twice.
//!
//! The inotify mask holds only what can change a generation or the directory itself (create,
//! delete, rename, and the self events notify always adds): no `IN_OPEN`, `IN_ATTRIB` or
//! `IN_MODIFY`, so kubelet's periodic resync, which opens and reads each volume, wakes nobody.
//!
//! notify does not surface `IN_UNMOUNT` or `IN_IGNORED`, and a watch placed before kubelet
//! mounts the volume's tmpfs sits on the directory underneath and never fires. Both are caught
//! the same way: every mount table change re-checks each volume's (device, inode) and re-arms
//! the watch on the directory that is visible now. A volume whose tmpfs went away, or whose
//! directory was removed, is reported as [`VolumeChange::Unmounted`].

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use notify::event::{EventKind, Flag, ModifyKind, RenameMode};
use notify::{EventKindMask, INotifyWatcher, RecursiveMode, Watcher};

use crate::disk::snapshot::{DATA_LINK, SnapshotError, read_generation};

mod kernel_watches;

/// What the watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeChange {
    /// The `..data` target of a volume changed; `None` when it no longer has one.
    Generation {
        volume: PathBuf,
        generation: Option<String>,
        /// When the event that revealed the change was handled.
        observed_at: Instant,
    },
    /// The volume's filesystem was unmounted or its directory removed (pod teardown).
    Unmounted { volume: PathBuf },
    /// Every tracked volume was re-read; any change found was reported before this.
    Rescanned { reason: RescanReason },
    /// Filesystems were mounted or unmounted at these paths; the tracked volumes at or below
    /// them were re-checked, and any change found was reported before this.
    MountsChanged { mount_points: Vec<PathBuf> },
}

pub use mountlag_core::volume::RescanReason;

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// `mountlag_rescans_total{reason}`.
#[derive(Debug, Clone, Default)]
pub struct WatchMetrics {
    rescans: prometheus_client::metrics::family::Family<
        ReasonLabel,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl WatchMetrics {
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let metrics = Self::default();
        for reason in [
            RescanReason::QueueOverflow,
            RescanReason::MountTable,
            RescanReason::Safety,
        ] {
            drop(metrics.rescans.get_or_create(&ReasonLabel {
                reason: reason.label(),
            }));
        }
        registry.register(
            "mountlag_rescans",
            "Full re-reads of every tracked volume, by cause",
            metrics.rescans.clone(),
        );
        metrics
    }

    pub fn rescanned(&self, reason: RescanReason) {
        self.rescans
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot create the inotify instance: {0}")]
    Init(#[source] notify::Error),
    #[error("{path}: cannot watch: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("{path}: cannot stat: {source}")]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Read(#[from] SnapshotError),
    #[error("cannot follow the mount table {path}: {source}")]
    MountTable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// The file whose changes announce mounts and unmounts.
    pub mountinfo: PathBuf,
    /// Interval of the slow safety rescan; the hot path never polls.
    pub safety_rescan: Duration,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        Self {
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            safety_rescan: Duration::from_secs(300),
        }
    }
}

/// Where reports go. A channel sender or a closure; it must not block for long.
pub type ChangeSink = Box<dyn Fn(VolumeChange) + Send + Sync>;

/// One inotify instance watching every tracked volume directory.
pub struct VolumeWatcher {
    shared: Arc<Shared>,
    _mount_table: super::mounttable::MountTableListener,
}

impl std::fmt::Debug for VolumeWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeWatcher")
            .field("tracked", &self.tracked())
            .finish()
    }
}

struct Shared {
    volumes: Mutex<HashMap<PathBuf, Tracked>>,
    /// Lock order: `inotify` before `volumes`, and `volumes` is released before any call into
    /// notify: notify's calls wait for its event thread, which may be inside `handle_event`
    /// waiting for `volumes`.
    inotify: Mutex<INotifyWatcher>,
    sink: ChangeSink,
    /// An overflow rescan is queued and has not started: later overflows fold into it.
    overflow_rescan_pending: AtomicBool,
    /// `..data` reads on behalf of events, rechecks and rescans (one per update is the aim).
    generation_reads: AtomicU64,
}

/// What the inotify thread leaves to another thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    Done,
    /// The kernel dropped events: every volume must be re-read, which may re-arm watches, and
    /// re-arming calls into notify, which waits for the inotify thread.
    NeedsRescan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    /// A mount point (its own filesystem, as each secret volume's tmpfs is).
    mount_point: bool,
}

#[derive(Debug)]
struct Tracked {
    generation: Option<String>,
    identity: Option<Identity>,
}

impl VolumeWatcher {
    /// Starts the inotify instance and the mount table listener. Nothing is tracked yet.
    pub fn new(config: WatcherConfig, sink: ChangeSink) -> Result<Self, WatchError> {
        // The inotify handler needs the state that owns the inotify instance: tie the knot
        // through a slot filled once both exist.
        let slot: Arc<OnceLock<Weak<Shared>>> = Arc::new(OnceLock::new());
        let handler_slot = Arc::clone(&slot);
        let handler = move |event: notify::Result<notify::Event>| {
            if let Some(shared) = handler_slot.get().and_then(Weak::upgrade)
                && shared.handle_event(event) == Handled::NeedsRescan
            {
                Shared::rescan_off_inotify_thread(&shared);
            }
        };
        let kinds = EventKindMask::CREATE | EventKindMask::REMOVE | EventKindMask::MODIFY_NAME;
        let inotify =
            INotifyWatcher::new(handler, notify::Config::default().with_event_kinds(kinds))
                .map_err(WatchError::Init)?;
        let shared = Arc::new(Shared {
            volumes: Mutex::new(HashMap::new()),
            inotify: Mutex::new(inotify),
            sink,
            overflow_rescan_pending: AtomicBool::new(false),
            generation_reads: AtomicU64::new(0),
        });
        let _ = slot.set(Arc::downgrade(&shared));
        let listener_shared = Arc::downgrade(&shared);
        let mount_table = super::mounttable::MountTableListener::start(
            &config.mountinfo,
            config.safety_rescan,
            move |change| {
                if let Some(shared) = listener_shared.upgrade() {
                    match change {
                        super::mounttable::TableChange::Mounts(points) => {
                            shared.mounts_changed(points)
                        }
                        super::mounttable::TableChange::Unknown(reason) => shared.rescan(reason),
                    }
                }
            },
        )
        .map_err(|source| WatchError::MountTable {
            path: config.mountinfo.clone(),
            source,
        })?;
        Ok(Self {
            shared,
            _mount_table: mount_table,
        })
    }

    /// Starts watching a volume directory and returns its generation as of now. Changes after
    /// this call are reported; the current state is not.
    pub fn track(&self, volume: &Path) -> Result<Option<String>, WatchError> {
        let identity = identity_of(volume).map_err(|source| WatchError::Stat {
            path: volume.to_path_buf(),
            source,
        })?;
        let before = generation_of(volume)?;
        let tracked_before = self
            .shared
            .volumes()
            .insert(
                volume.to_path_buf(),
                Tracked {
                    generation: before,
                    identity: Some(identity),
                },
            )
            .is_some();
        if let Err(err) = self.shared.arm(volume, tracked_before) {
            self.shared.volumes().remove(volume);
            return Err(err);
        }
        // A swap between the first read and the watch is caught here; one after it, by inotify.
        self.shared.refresh(volume, Instant::now());
        Ok(self
            .shared
            .volumes()
            .get(volume)
            .and_then(|t| t.generation.clone()))
    }

    /// Stops watching a volume directory. Unknown paths are ignored.
    pub fn untrack(&self, volume: &Path) {
        // Holding the inotify lock across both steps keeps a concurrent re-arm (mount table
        // thread) from placing a watch on a volume that is no longer tracked.
        let mut inotify = self.shared.inotify();
        let removed = self.shared.volumes().remove(volume).is_some();
        if removed {
            // The kernel may have dropped the watch already (unmount): nothing to undo then.
            let _ = inotify.unwatch(volume);
        }
    }

    /// How many volume directories are tracked.
    pub fn tracked(&self) -> usize {
        self.shared.volumes().len()
    }

    /// How many times `..data` was re-read since the watcher started (by events, rechecks,
    /// rescans, and once per [`Self::track`]): once per kubelet update, however many events the
    /// update raises.
    pub fn generation_reads(&self) -> u64 {
        self.shared.generation_reads.load(Ordering::Relaxed)
    }

    /// Re-reads every tracked volume now, as after a lost event.
    pub fn rescan(&self, reason: RescanReason) {
        self.shared.rescan(reason);
    }
}

impl Shared {
    fn volumes(&self) -> MutexGuard<'_, HashMap<PathBuf, Tracked>> {
        lock(&self.volumes)
    }

    fn inotify(&self) -> MutexGuard<'_, INotifyWatcher> {
        lock(&self.inotify)
    }

    /// Places the watch; `replace` first removes one placed before. Only then: notify's
    /// `unwatch` scans every watch, so an unconditional one made tracking n volumes O(n²)
    /// (a fifth of the agent's CPU to ready at 1,000 mounts).
    fn arm(&self, volume: &Path, replace: bool) -> Result<(), WatchError> {
        let mut inotify = self.inotify();
        if replace {
            let _ = inotify.unwatch(volume);
        }
        inotify
            .watch(volume, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch {
                path: volume.to_path_buf(),
                source,
            })
    }

    /// Re-places the watch, unless the volume was untracked meanwhile.
    fn rearm_if_tracked(&self, volume: &Path) -> Result<(), WatchError> {
        let mut inotify = self.inotify();
        if !self.volumes().contains_key(volume) {
            return Ok(());
        }
        let _ = inotify.unwatch(volume);
        inotify
            .watch(volume, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch {
                path: volume.to_path_buf(),
                source,
            })
    }

    fn handle_event(&self, event: notify::Result<notify::Event>) -> Handled {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(error = %err, "inotify reported an error; rescanning");
                return Handled::NeedsRescan;
            }
        };
        if event.flag() == Some(Flag::Rescan) {
            tracing::warn!("the inotify queue overflowed; rescanning every volume");
            return Handled::NeedsRescan;
        }
        // Opening or closing a file changes nothing; our own reads would otherwise echo back.
        if matches!(event.kind, EventKind::Access(_)) {
            return Handled::Done;
        }
        // notify follows each rename's `To` event with a `Both` naming the same new path.
        if matches!(
            event.kind,
            EventKind::Modify(ModifyKind::Name(RenameMode::Both))
        ) {
            return Handled::Done;
        }
        let now = Instant::now();
        for path in &event.paths {
            if self.volumes().contains_key(path.as_path()) {
                // An event on the volume directory itself: removed, moved or its mount changed.
                self.recheck(path, now, Caller::InotifyThread);
            } else if let Some(volume) = path.parent()
                && path.file_name().is_some_and(|n| n == DATA_LINK)
            {
                // A symlink is never changed in place: a new `..data` target always comes with
                // an event naming `..data` (created, renamed onto, moved away or deleted). The
                // other events of an update (the generation directory created, the old one
                // removed, `..data_tmp`) cannot change it and cost no read.
                self.refresh(volume, now);
            }
        }
        Handled::Done
    }

    /// Runs an overflow rescan on its own thread; one already queued takes this one along.
    fn rescan_off_inotify_thread(shared: &Arc<Self>) {
        if shared.overflow_rescan_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(shared);
        let spawned = std::thread::Builder::new()
            .name("mountlag-rescan".to_owned())
            .spawn(move || {
                if let Some(shared) = weak.upgrade() {
                    shared
                        .overflow_rescan_pending
                        .store(false, Ordering::Release);
                    shared.rescan(RescanReason::QueueOverflow);
                }
            });
        if let Err(err) = spawned {
            // The next overflow or the safety rescan catches up.
            shared
                .overflow_rescan_pending
                .store(false, Ordering::Release);
            tracing::error!(error = %err, "cannot start the overflow rescan");
        }
    }

    /// Re-reads `..data` and reports it when it differs from the last report.
    fn refresh(&self, volume: &Path, observed_at: Instant) {
        let mut volumes = self.volumes();
        let Some(tracked) = volumes.get_mut(volume) else {
            return;
        };
        self.generation_reads.fetch_add(1, Ordering::Relaxed);
        let generation = match generation_of(volume) {
            Ok(generation) => generation,
            Err(err) => {
                tracing::debug!(volume = %volume.display(), error = %err, "cannot read ..data");
                return;
            }
        };
        if generation != tracked.generation {
            tracked.generation.clone_from(&generation);
            (self.sink)(VolumeChange::Generation {
                volume: volume.to_path_buf(),
                generation,
                observed_at,
            });
        }
    }

    /// Checks whether the directory visible at `volume` is still the one watched; re-arms the
    /// watch on a new mount, reports a volume whose mount or directory went away.
    fn recheck(&self, volume: &Path, now: Instant, caller: Caller) {
        if std::fs::symlink_metadata(volume).is_ok_and(|m| m.file_type().is_symlink()) {
            // Never kubelet's doing: a volume directory replaced by a symlink. Reported as a
            // change, so the agent reads it, and the snapshot refuses it and says why.
            let changed = self.volumes().get_mut(volume).is_some_and(|tracked| {
                let changed = tracked.identity.is_some() || tracked.generation.is_some();
                tracked.identity = None;
                tracked.generation = None;
                changed
            });
            if changed {
                (self.sink)(VolumeChange::Generation {
                    volume: volume.to_path_buf(),
                    generation: None,
                    observed_at: now,
                });
            }
            return;
        }
        let current = identity_of(volume).ok();
        let (rearm, unmounted) = {
            let mut volumes = self.volumes();
            let Some(tracked) = volumes.get_mut(volume) else {
                return;
            };
            if tracked.identity == current {
                (false, false)
            } else {
                let was_mounted = tracked.identity.is_some_and(|i| i.mount_point);
                let now_mounted = current.is_some_and(|i| i.mount_point);
                let gone = was_mounted && !now_mounted || current.is_none();
                if caller == Caller::InotifyThread && !gone {
                    // Another directory is visible here (a new mount): re-arming means calling
                    // into notify, which waits for its own thread — this one. The mount-table
                    // listener sees the same mount and re-arms; leave the identity for it.
                    return;
                }
                tracked.identity = current;
                (current.is_some(), gone)
            }
        };
        if unmounted {
            (self.sink)(VolumeChange::Unmounted {
                volume: volume.to_path_buf(),
            });
        }
        // From the inotify thread only a volume reported gone gets this far with a new identity,
        // and the agent untracks it: nothing to re-arm (and calling notify here would deadlock).
        if rearm
            && caller != Caller::InotifyThread
            && let Err(err) = self.rearm_if_tracked(volume)
        {
            tracing::warn!(volume = %volume.display(), error = %err, "cannot re-arm watch");
        }
        if current.is_some() {
            self.refresh(volume, now);
        } else if let Some(tracked) = self.volumes().get_mut(volume) {
            tracked.generation = None;
        }
    }

    /// Re-checks the volumes a mount or unmount at `mount_points` can affect: a volume's own
    /// tmpfs, or a filesystem mounted over one of its ancestors.
    fn mounts_changed(&self, mount_points: Vec<PathBuf>) {
        let now = Instant::now();
        let affected: Vec<PathBuf> = self
            .volumes()
            .keys()
            .filter(|volume| mount_points.iter().any(|point| volume.starts_with(point)))
            .cloned()
            .collect();
        for volume in &affected {
            self.recheck(volume, now, Caller::Other);
        }
        (self.sink)(VolumeChange::MountsChanged { mount_points });
    }

    fn rescan(&self, reason: RescanReason) {
        let now = Instant::now();
        let volumes: Vec<PathBuf> = self.volumes().keys().cloned().collect();
        for volume in &volumes {
            self.recheck(volume, now, Caller::Other);
        }
        self.rearm_unwatched(now);
        (self.sink)(VolumeChange::Rescanned { reason });
    }

    /// Re-arms every tracked volume whose directory the kernel no longer watches, though
    /// notify believes it does (see [`kernel_watches`]), and re-reads it.
    fn rearm_unwatched(&self, now: Instant) {
        let Some(watched) = kernel_watches::watched_inodes() else {
            return;
        };
        let unwatched: Vec<PathBuf> = self
            .volumes()
            .iter()
            .filter(|(_, tracked)| {
                tracked
                    .identity
                    .is_some_and(|i| !watched.contains(&(i.dev, i.ino)))
            })
            .map(|(volume, _)| volume.clone())
            .collect();
        for volume in unwatched {
            tracing::warn!(volume = %volume.display(), "the kernel had dropped this volume's watch; re-arming it");
            if let Err(err) = self.rearm_if_tracked(&volume) {
                tracing::warn!(volume = %volume.display(), error = %err, "cannot re-arm watch");
            }
            self.refresh(&volume, now);
        }
    }
}

/// Who re-checks a volume: the inotify thread must not call back into notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    InotifyThread,
    Other,
}

fn identity_of(path: &Path) -> std::io::Result<Identity> {
    let meta = std::fs::metadata(path)?;
    let parent_dev = path
        .parent()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.dev());
    Ok(Identity {
        dev: meta.dev(),
        ino: meta.ino(),
        mount_point: parent_dev.is_some_and(|dev| dev != meta.dev()),
    })
}

fn generation_of(volume: &Path) -> Result<Option<String>, WatchError> {
    match read_generation(volume) {
        Ok(generation) => Ok(generation.map(|target| target.to_string_lossy().into_owned())),
        // A volume path that is a symlink has no generation the agent may read; it stays
        // tracked so the snapshot (which refuses it the same way) reports it for its mount.
        Err(SnapshotError::Symlink { .. }) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// A poisoned lock only means another thread panicked mid-update; the maps stay usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
