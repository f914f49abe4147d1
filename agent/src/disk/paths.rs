//! Where kubelet keeps pod volumes, and how a path on disk maps back to pod, plugin and volume.
//!
//! ```text
//! <kubeletRoot>/pods/<podUID>/volumes/kubernetes.io~secret/<volume>/      one tmpfs per volume
//! <kubeletRoot>/pods/<podUID>/volumes/kubernetes.io~projected/<volume>/
//! <kubeletRoot>/pods/<podUID>/volume-subpaths/<volume>/<container>/<index>   subPath bind mounts
//! ```

use std::path::{Path, PathBuf};

use serde::Serialize;

use mountlag_core::status::DiskStatus;
use mountlag_core::text::untrusted;
use mountlag_core::volume::file_name;
pub use mountlag_core::volume::{KubeletRoot, VolumeKind, VolumeLocation};

/// Whether kubelet's volume directories can be read (a probe-only install mounts none).
pub fn disk_status(kubelet_root: &std::path::Path) -> DiskStatus {
    let kubelet_root_text = kubelet_root.display().to_string();
    match check_readable(&KubeletRoot::new(kubelet_root)) {
        Ok(()) => DiskStatus {
            checked: true,
            kubelet_root: kubelet_root_text,
            reason: None,
        },
        Err(reason) => {
            tracing::warn!(
                %reason,
                "no kubelet root: checking served certificates against the API only; no disk \
                 comparison, nudge or reload on this node"
            );
            DiskStatus {
                checked: false,
                kubelet_root: kubelet_root_text,
                reason: Some(format!(
                    "{reason}: served certificates are checked against the API only; mounts \
                     are not compared on disk, nudged or reloaded"
                )),
            }
        }
    }
}

/// Whether this process can list `<root>/pods`; `Err` says why not. A probe-only install
/// mounts no kubelet root, so the directory is simply absent there.
pub fn check_readable(root: &KubeletRoot) -> Result<(), String> {
    let pods = root.pods_dir();
    match std::fs::read_dir(&pods) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "no kubelet pods directory at {} (not mounted into this container)",
            pods.display()
        )),
        Err(err) => Err(format!("cannot read {}: {err}", pods.display())),
    }
}

/// What kind of directory a path given to `inspect` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathShape {
    /// A volume directory (has `..data`, or sits under a secret/projected plugin dir).
    Volume,
    /// A pod directory (has `volumes/`).
    Pod,
    /// A directory of pod directories (`<kubeletRoot>/pods`).
    Pods,
    /// A kubelet root (has `pods/`).
    KubeletRoot,
}

/// Why a path could not be turned into volume directories.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    // Paths found while walking come from the disk: shown escaped.
    #[error("{}: cannot read: {source}", shown(path))]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: not a kubelet volume, pod or root directory (expected ..data, volumes/ or pods/)",
        shown(path)
    )]
    NotKubeletPath { path: PathBuf },
}

fn shown(path: &Path) -> String {
    mountlag_core::text::untrusted_capped(
        &path.to_string_lossy(),
        mountlag_core::text::MAX_MESSAGE_BYTES,
    )
    .to_string()
}

/// Recognises a volume, pod, pods or kubelet-root directory by its contents and path.
pub fn classify(path: &Path) -> Result<PathShape, DiscoverError> {
    let meta = std::fs::metadata(path).map_err(|source| DiscoverError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(DiscoverError::NotKubeletPath {
            path: path.to_path_buf(),
        });
    }
    let has = |name: &str| path.join(name).symlink_metadata().is_ok();
    let under_plugin_dir = path
        .parent()
        .and_then(|p| VolumeKind::from_plugin_dir(&file_name(p)))
        .is_some();
    if has("..data") || under_plugin_dir {
        Ok(PathShape::Volume)
    } else if path.join("volumes").is_dir() {
        Ok(PathShape::Pod)
    } else if path.join("pods").is_dir() {
        Ok(PathShape::KubeletRoot)
    } else if file_name(path) == "pods" {
        Ok(PathShape::Pods)
    } else {
        Err(DiscoverError::NotKubeletPath {
            path: path.to_path_buf(),
        })
    }
}

/// A directory of kubelet's tree that is a symlink, found while walking it: not followed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedPath {
    pub path: PathBuf,
    /// What it is and where it points (escaped), e.g. `pod directory is a symlink to "/x"`.
    pub reason: String,
}

/// What a walk of kubelet's tree found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    /// Sorted by path. A volume directory that is a symlink is listed: reading it is refused
    /// and reported per volume (as the agent reports it per mount).
    pub volumes: Vec<VolumeLocation>,
    /// Pod, `volumes` and plugin directories that are symlinks; nothing below them was read.
    pub refused: Vec<RefusedPath>,
}

/// Every secret and projected volume directory at or below `path`, sorted by path.
pub fn discover_volumes(path: &Path) -> Result<Vec<VolumeLocation>, DiscoverError> {
    discover(path).map(|found| found.volumes)
}

/// Every secret and projected volume directory at or below `path`, and the directories of
/// kubelet's tree that were not walked because they are symlinks. The path given is the
/// operator's and is followed; nothing below it is.
pub fn discover(path: &Path) -> Result<Discovered, DiscoverError> {
    let mut found = Discovered::default();
    match classify(path)? {
        PathShape::Volume => found.volumes.push(VolumeLocation::from_path(path)),
        PathShape::Pod => volumes_of_pod(path, &mut found)?,
        PathShape::Pods => volumes_of_pods(path, &mut found)?,
        PathShape::KubeletRoot => volumes_of_pods(&path.join("pods"), &mut found)?,
    }
    found.volumes.sort();
    found.refused.sort();
    Ok(found)
}

fn volumes_of_pods(pods: &Path, found: &mut Discovered) -> Result<(), DiscoverError> {
    let (pod_dirs, links) = entries(pods)?;
    refuse(found, links, "pod directory");
    for pod in pod_dirs {
        match Entry::of(&pod.join("volumes")) {
            Entry::Directory => volumes_of_pod(&pod, found)?,
            Entry::Symlink(link) => refuse(found, vec![link], "volumes directory"),
            Entry::Other => {}
        }
    }
    Ok(())
}

fn volumes_of_pod(pod: &Path, found: &mut Discovered) -> Result<(), DiscoverError> {
    let volumes = pod.join("volumes");
    if let Entry::Symlink(link) = Entry::of(&volumes) {
        refuse(found, vec![link], "volumes directory");
        return Ok(());
    }
    for kind in VolumeKind::ALL {
        let plugin = volumes.join(kind.plugin_dir());
        match Entry::of(&plugin) {
            Entry::Directory => {
                let (dirs, links) = entries(&plugin)?;
                // A volume that is a symlink is listed too: its snapshot refuses and says why.
                for volume in dirs
                    .into_iter()
                    .chain(links.into_iter().map(|(path, _)| path))
                {
                    found.volumes.push(VolumeLocation::from_path(&volume));
                }
            }
            Entry::Symlink(link) => refuse(found, vec![link], "volume plugin directory"),
            Entry::Other => {}
        }
    }
    Ok(())
}

fn refuse(found: &mut Discovered, links: Vec<(PathBuf, String)>, what: &str) {
    for (path, target) in links {
        found.refused.push(RefusedPath {
            path,
            reason: format!(
                "{what} is a symlink to \"{}\"; kubelet never makes one, not followed",
                untrusted(&target)
            ),
        });
    }
}

/// What a name in kubelet's tree is, looked at without following it.
enum Entry {
    Directory,
    /// The path and its target.
    Symlink((PathBuf, String)),
    Other,
}

impl Entry {
    fn of(path: &Path) -> Self {
        match path.symlink_metadata() {
            Ok(meta) if meta.is_dir() => Entry::Directory,
            Ok(meta) if meta.file_type().is_symlink() => Entry::Symlink((
                path.to_path_buf(),
                std::fs::read_link(path)
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "?".into()),
            )),
            _ => Entry::Other,
        }
    }
}

/// Real subdirectories, and symlinks (path, target) that are never followed, each sorted.
#[allow(clippy::type_complexity)]
fn entries(dir: &Path) -> Result<(Vec<PathBuf>, Vec<(PathBuf, String)>), DiscoverError> {
    let unreadable = |source| DiscoverError::Unreadable {
        path: dir.to_path_buf(),
        source,
    };
    let mut dirs = Vec::new();
    let mut links = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        match Entry::of(&entry.path()) {
            Entry::Directory => dirs.push(entry.path()),
            Entry::Symlink(link) => links.push(link),
            Entry::Other => {}
        }
    }
    dirs.sort();
    links.sort();
    Ok((dirs, links))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn volume_path_round_trips_through_location() {
        let root = KubeletRoot::new("/var/lib/kubelet");
        let dir = root.volume_dir("0b7c-11", VolumeKind::Projected, "certs");
        assert_eq!(
            dir,
            Path::new("/var/lib/kubelet/pods/0b7c-11/volumes/kubernetes.io~projected/certs")
        );
        let loc = VolumeLocation::from_path(&dir);
        assert_eq!(loc.pod_uid.as_deref(), Some("0b7c-11"));
        assert_eq!(loc.kind, Some(VolumeKind::Projected));
        assert_eq!(loc.name, "certs");
    }

    #[test]
    fn a_path_of_another_shape_has_no_pod_or_kind() {
        let loc = VolumeLocation::from_path(Path::new("/tmp/some/vol"));
        assert_eq!(loc.pod_uid, None);
        assert_eq!(loc.kind, None);
        assert_eq!(loc.name, "vol");
    }

    #[test]
    fn subpath_dir_follows_kubelet_layout() {
        let root = KubeletRoot::new("/k");
        assert_eq!(
            root.subpath_dir("u", "tls", "nginx", 2),
            Path::new("/k/pods/u/volume-subpaths/tls/nginx/2")
        );
    }

    #[test]
    fn discovers_volumes_of_a_kubelet_root_pod_and_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let root = KubeletRoot::new(tmp.path());
        let a = root.volume_dir("pod-a", VolumeKind::Secret, "tls");
        let b = root.volume_dir("pod-b", VolumeKind::Projected, "bundle");
        let other = root
            .pod_dir("pod-b")
            .join("volumes/kubernetes.io~empty-dir/scratch");
        for d in [&a, &b, &other] {
            std::fs::create_dir_all(d).unwrap();
        }
        let all: Vec<_> = discover_volumes(root.path())
            .unwrap()
            .into_iter()
            .map(|v| v.path)
            .collect();
        assert_eq!(all, vec![a.clone(), b.clone()]);
        let pods: Vec<_> = discover_volumes(&root.pods_dir()).unwrap();
        assert_eq!(pods.len(), 2);
        let one = discover_volumes(&root.pod_dir("pod-b")).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].path, b);
        assert_eq!(discover_volumes(&a).unwrap()[0].path, a);
    }

    #[test]
    fn an_unrelated_directory_is_named_in_the_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = discover_volumes(tmp.path()).unwrap_err();
        assert!(err.to_string().contains(&tmp.path().display().to_string()));
        assert!(matches!(err, DiscoverError::NotKubeletPath { .. }));
        let missing = tmp.path().join("nope");
        assert!(matches!(
            discover_volumes(&missing).unwrap_err(),
            DiscoverError::Unreadable { .. }
        ));
    }
}
