//! What the agent watches and tracks for the node: the Secret watches the pods need, the volume
//! directories under inotify, and what a read of one of them means (first sighting or rotation).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::action::Action;
use crate::reconcile::DiskView;
use crate::reconcile::material::material_of_snapshot;
use crate::reconcile::reload::{Material, ReloadInput};
use crate::volume::VolumeSnapshot;

use super::{Node, Now};

impl Node {
    /// Starts a watch for every newly referenced Secret and stops the ones no longer needed.
    pub(super) fn sync_secret_watches(&mut self) -> Vec<Action> {
        let mut wanted = self.index.wanted_secrets();
        wanted.extend(self.route_secrets.keys().cloned());
        let mut actions: Vec<Action> = self
            .watched_secrets
            .difference(&wanted)
            .cloned()
            .map(Action::UnwatchSecret)
            .collect();
        actions.extend(
            wanted
                .difference(&self.watched_secrets)
                .cloned()
                .map(Action::WatchSecret),
        );
        self.watched_secrets = wanted;
        actions
    }

    /// Tracks every volume directory the index knows, untracks the rest.
    pub(super) fn sync_volumes(&mut self) -> Vec<Action> {
        let wanted = self.index.volume_paths();
        let gone: Vec<PathBuf> = self
            .tracked
            .iter()
            .filter(|p| !wanted.contains(*p))
            .cloned()
            .collect();
        let mut actions = Vec::new();
        for path in gone {
            self.tracked.remove(&path);
            // Pod UIDs are never reused: what was read there is of no further use.
            self.generations.remove(&path);
            self.leaves_on_disk.remove(&path);
            actions.push(Action::UntrackVolume(path));
        }
        self.untrackable.retain(|p| wanted.contains(p));
        let new: Vec<PathBuf> = wanted
            .into_iter()
            .filter(|p| !self.tracked.contains(p) && !self.untrackable.contains(p))
            .collect();
        actions.extend(self.retrack(new));
        actions
    }

    pub(super) fn retrack(&mut self, paths: Vec<PathBuf>) -> Vec<Action> {
        paths
            .into_iter()
            .map(|path| {
                self.untrackable.remove(&path);
                self.tracked.insert(path.clone());
                Action::TrackVolume(path)
            })
            .collect()
    }

    pub(super) fn volume_tracked(
        &mut self,
        path: PathBuf,
        result: Result<(), String>,
    ) -> Vec<Action> {
        if !self.tracked.contains(&path) {
            // Untracked meanwhile (its pod went away).
            return Vec::new();
        }
        match result {
            Ok(()) => vec![Action::ReadVolume(path)],
            Err(_) => {
                self.tracked.remove(&path);
                self.untrackable.insert(path);
                Vec::new()
            }
        }
    }

    pub(super) fn volume_unmounted(&mut self, path: PathBuf, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.tracked.remove(&path) {
            actions.push(Action::UntrackVolume(path.clone()));
        }
        if self.index.volume_paths().contains(&path) {
            self.untrackable.insert(path.clone());
        }
        actions.extend(self.index.disk_observed(
            &path,
            DiskView::Unreadable {
                reason: "the volume was unmounted".into(),
            },
            now,
        ));
        actions
    }

    /// A volume read: the digests go to the index, and a new generation's material to the
    /// pod's reload machine. The first sighting is what the controller started with; only a
    /// change is a rotation.
    pub(super) fn volume_read(
        &mut self,
        path: &Path,
        read: Result<VolumeSnapshot, String>,
        now: Now,
    ) -> Vec<Action> {
        let (disk, material) = match read {
            Ok(snapshot) => {
                let material = material_of_snapshot(&snapshot, now.utc);
                let disk = DiskView::Files {
                    generation: snapshot.generation,
                    files: snapshot
                        .files
                        .into_iter()
                        .map(|f| (f.path, f.sha256))
                        .collect(),
                };
                (disk, Some(material))
            }
            Err(reason) => (DiskView::Unreadable { reason }, None),
        };
        let generation = match &disk {
            DiskView::Files { generation, .. } => generation.clone(),
            DiskView::Unreadable { .. } | DiskView::NotChecked => None,
        };
        let previous = self
            .generations
            .insert(path.to_path_buf(), generation.clone());
        if let Some(Material::Valid { leaves }) = &material {
            self.leaves_on_disk
                .insert(path.to_path_buf(), leaves.clone());
        }
        let mut actions = self.index.disk_observed(path, disk, now.at);
        let (Some(generation), Some(material), Some(key)) =
            (generation, material, self.index.mount_at(path).cloned())
        else {
            return actions;
        };
        let input = match previous {
            Some(Some(previous)) if previous == generation => return actions,
            Some(Some(_)) => ReloadInput::NewMaterial {
                volume: key.volume,
                generation,
                material,
            },
            // First sighting: what the controller started with, or what it should be serving
            // when the agent (re)starts.
            None | Some(None) => ReloadInput::Baseline { material },
        };
        actions.extend(self.step_reload(&key.pod_uid, input, now.at));
        actions
    }
}
