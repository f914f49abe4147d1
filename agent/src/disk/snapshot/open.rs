//! Opening a volume directory without following a symlink in it or between it and the
//! directory of pod directories: `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the
//! kernel has it, one `openat(O_NOFOLLOW | O_DIRECTORY)` per component elsewhere.

use super::*;

/// Where a volume directory is opened from, and the path below it that must hold no symlink.
///
/// A kubelet-shaped path (`…/pods/<uid>/volumes/<plugin>/<vol>`) is anchored at its `pods`
/// directory: the pod, `volumes`, plugin and volume directories are all kubelet's and never
/// symlinks. The kubelet root and `pods` themselves are the operator's (a root moved to another
/// disk through a symlink is common) and are followed. Any other path is anchored at its parent.
pub(super) fn anchor_of(volume_dir: &Path) -> (PathBuf, PathBuf) {
    let location = VolumeLocation::from_path(volume_dir);
    if location.pod_uid.is_some()
        && let Some(pods) = volume_dir.ancestors().nth(4)
        && let Ok(relative) = volume_dir.strip_prefix(pods)
    {
        return (anchor_dir(pods), relative.to_path_buf());
    }
    match (volume_dir.parent(), volume_dir.file_name()) {
        (Some(parent), Some(name)) => (anchor_dir(parent), PathBuf::from(name)),
        // `/`, `..` or a path ending in `..`: opened as named, still never through a final symlink.
        _ => (volume_dir.to_path_buf(), PathBuf::from(".")),
    }
}

/// `""` (the parent of a relative one-component path) is the current directory.
pub(super) fn anchor_dir(path: &Path) -> PathBuf {
    if path.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        path.to_path_buf()
    }
}

/// Opens a volume directory without following a symlink in it or in any directory between it and
/// its anchor (see [`anchor_of`]). A symlink is reported as [`SnapshotError::Symlink`].
pub fn open_volume_dir(volume_dir: &Path) -> Result<OwnedFd, SnapshotError> {
    let (anchor, relative) = anchor_of(volume_dir);
    let open_error = |source| SnapshotError::Open {
        path: volume_dir.to_path_buf(),
        source,
    };
    let base = nix::fcntl::open(
        &anchor,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(open_error)?;
    match open_beneath(&base, &relative) {
        Ok(fd) => Ok(fd),
        // ELOOP: a symlink on the way (RESOLVE_NO_SYMLINKS, O_NOFOLLOW); ENOTDIR: also a final
        // symlink under O_DIRECTORY, or a file; EXDEV: `..` out of the anchor.
        Err(source @ (Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV)) => {
            Err(symlink_error(volume_dir, &base, &relative).unwrap_or(open_error(source)))
        }
        Err(source) => Err(open_error(source)),
    }
}

pub(super) const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// `openat2` where the kernel has it; a component-by-component walk where it does not (Linux
/// < 5.6 answers ENOSYS; some seccomp profiles answer EPERM for syscalls they do not know).
pub(super) fn open_beneath(base: &OwnedFd, relative: &Path) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new().flags(DIR_FLAGS).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    match openat2(base.as_fd(), relative, how) {
        Err(Errno::ENOSYS | Errno::EPERM) => open_walking(base, relative),
        other => other,
    }
}

/// The fallback of [`open_beneath`]: one `openat(O_NOFOLLOW | O_DIRECTORY)` per component, each
/// relative to the directory opened before it; `..` and absolute paths are refused (EXDEV).
pub(super) fn open_walking(base: &OwnedFd, relative: &Path) -> Result<OwnedFd, Errno> {
    let mut current = openat(base.as_fd(), ".", DIR_FLAGS, Mode::empty())?;
    for component in relative.components() {
        match component {
            Component::CurDir => {}
            Component::Normal(name) => {
                current = openat(current.as_fd(), name, DIR_FLAGS, Mode::empty())?;
            }
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(Errno::EXDEV);
            }
        }
    }
    Ok(current)
}

/// Names the first component below the anchor that is a symlink (or `..`), and where it points
/// (read with `readlinkat`, never followed); `None` when there is none.
pub(super) fn symlink_error(
    volume_dir: &Path,
    base: &OwnedFd,
    relative: &Path,
) -> Option<SnapshotError> {
    let mut dir = openat(base.as_fd(), ".", DIR_FLAGS, Mode::empty()).ok();
    let mut walked = PathBuf::new();
    let mut found = None;
    for component in relative.components() {
        let Component::Normal(name) = component else {
            if component == Component::CurDir {
                continue;
            }
            found = Some((walked.join(component), "(leaves the directory)".to_string()));
            break;
        };
        walked.push(name);
        let Some(current) = dir.take() else { break };
        if let Ok(target) = readlinkat(current.as_fd(), name) {
            found = Some((walked.clone(), target.to_string_lossy().into_owned()));
            break;
        }
        dir = openat(current.as_fd(), name, DIR_FLAGS, Mode::empty()).ok();
    }
    let (component, target) = found?;
    Some(SnapshotError::Symlink {
        path: volume_dir.to_path_buf(),
        component: untrusted(&component.to_string_lossy()).to_string(),
        target: untrusted(&target).to_string(),
    })
}
