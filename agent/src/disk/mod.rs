//! The node's disk: what kubelet put there and how the agent sees it change.
//!
//! ```text
//! <kubeletRoot>/pods/<uid>/volumes/kubernetes.io~secret/<vol>/
//!     ..2026_11_28_05_07_12.1234/tls.crt   the generation: real files, written once
//!     ..data -> ..2026_11_28_05_07_12.1234 swapped atomically by rename(2)
//!     tls.crt -> ..data/tls.crt            what the container opens
//! ```
//!
//! [`paths`] maps paths to pods and volumes; [`snapshot`] reads one generation into digests and
//! certificate summaries, never mixing two generations and never leaving the volume;
//! [`watcher`] turns inotify and mount table changes into [`VolumeChange`]s ([`mounttable`]
//! polls `/proc/self/mountinfo`).

#[cfg(test)]
mod material_of_disk_tests;
pub mod mounttable;
pub mod paths;
pub mod snapshot;
#[cfg(test)]
pub(crate) mod test_volume;
pub mod watcher;

pub use paths::{
    KubeletRoot, VolumeKind, VolumeLocation, check_readable, discover_volumes, disk_status,
};
pub use snapshot::{
    FileSnapshot, Problem, ProblemKind, SnapshotError, VolumeSnapshot, VolumeState, snapshot,
    snapshot_with,
};
pub use watcher::{
    RescanReason, VolumeChange, VolumeWatcher, WatchError, WatchMetrics, WatcherConfig,
};
