//! Tests of [`super`].

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::symlink;

use super::open::{open_beneath, open_walking};
use super::*;
use crate::disk::test_volume::{self_signed, write_volume};
use crate::disk::{KubeletRoot, VolumeKind};

/// A kubelet root with one secret volume `tls` of pod `uid`, and a valid-looking volume
/// outside the root; returns (tempdir, root, volume path, outside volume, its fingerprint).
fn layout() -> (tempfile::TempDir, KubeletRoot, PathBuf, PathBuf, String) {
    let tmp = tempfile::tempdir().unwrap();
    let root = KubeletRoot::new(tmp.path().join("kubelet"));
    let volume = root.volume_dir("uid", VolumeKind::Secret, "tls");
    std::fs::create_dir_all(volume.parent().unwrap()).unwrap();
    let outside = tmp.path().join("outside/tls");
    let cert = self_signed("outside.test", &["outside.test"], (2020, 2040));
    write_volume(
        &outside,
        &[
            ("tls.crt", cert.cert_pem.as_bytes()),
            ("tls.key", cert.key_pem.as_bytes()),
        ],
    );
    (tmp, root, volume, outside, cert.fingerprint)
}

fn assert_refused(err: &SnapshotError, component: &str, target: &Path) {
    let SnapshotError::Symlink {
        component: c,
        target: t,
        ..
    } = err
    else {
        panic!("not refused as a symlink: {err}");
    };
    assert_eq!(c, component, "{err}");
    assert_eq!(t, &target.to_string_lossy(), "{err}");
    assert!(err.to_string().contains("not followed"), "{err}");
}

#[test]
fn a_volume_directory_that_is_a_symlink_out_of_the_root_is_refused() {
    let (_tmp, _root, volume, outside, fingerprint) = layout();
    symlink(&outside, &volume).unwrap();
    let err = snapshot(&volume).unwrap_err();
    assert_refused(&err, "uid/volumes/kubernetes.io~secret/tls", &outside);
    assert!(!err.to_string().contains(&fingerprint));
    assert_refused(
        &read_generation(&volume).unwrap_err(),
        "uid/volumes/kubernetes.io~secret/tls",
        &outside,
    );
    // Also outside kubelet's shape: the last component is never followed.
    let elsewhere = outside.parent().unwrap().join("link");
    symlink(&outside, &elsewhere).unwrap();
    assert_refused(&snapshot(&elsewhere).unwrap_err(), "link", &outside);
    // The real directory reads fine, and so does a kubelet root reached through a symlink
    // (the root is the operator's: moved to another disk).
    let snap = snapshot(&outside).unwrap();
    assert_eq!(snap.files.len(), 2);
    std::fs::remove_file(&volume).unwrap();
    std::fs::rename(&outside, &volume).unwrap();
    let moved = volume
        .ancestors()
        .nth(5)
        .unwrap()
        .with_file_name("root-link");
    symlink(volume.ancestors().nth(5).unwrap(), &moved).unwrap();
    let through = KubeletRoot::new(&moved).volume_dir("uid", VolumeKind::Secret, "tls");
    assert_eq!(snapshot(&through).unwrap().files.len(), 2);
}

#[test]
fn a_pod_or_volumes_directory_that_is_a_symlink_is_refused() {
    let (tmp, root, volume, outside, _) = layout();
    // The pod directory points at a pod-shaped tree outside the root.
    let fake_pod = tmp.path().join("fake-pod");
    let fake_volume = fake_pod.join("volumes/kubernetes.io~secret/tls");
    std::fs::create_dir_all(fake_volume.parent().unwrap()).unwrap();
    std::fs::rename(&outside, &fake_volume).unwrap();
    std::fs::remove_dir_all(root.pod_dir("uid")).unwrap();
    symlink(&fake_pod, root.pod_dir("uid")).unwrap();
    assert_refused(&snapshot(&volume).unwrap_err(), "uid", &fake_pod);

    // `volumes` points out of the pod directory.
    std::fs::remove_file(root.pod_dir("uid")).unwrap();
    std::fs::create_dir_all(root.pod_dir("uid")).unwrap();
    let fake_volumes = fake_pod.join("volumes");
    symlink(&fake_volumes, root.pod_dir("uid").join("volumes")).unwrap();
    assert_refused(
        &snapshot(&volume).unwrap_err(),
        "uid/volumes",
        &fake_volumes,
    );
}

#[test]
fn the_walk_without_openat2_refuses_the_same_paths() {
    let (tmp, _root, volume, outside, _) = layout();
    symlink(&outside, &volume).unwrap();
    let base = nix::fcntl::open(
        &tmp.path().join("kubelet/pods"),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    let walk = |p: &str| open_walking(&base, Path::new(p)).map(drop);
    // Each component is opened alone, under O_DIRECTORY | O_NOFOLLOW: a symlink is ENOTDIR.
    assert_eq!(
        walk("uid/volumes/kubernetes.io~secret/tls"),
        Err(Errno::ENOTDIR)
    );
    assert_eq!(
        walk("uid/volumes/kubernetes.io~secret/tls/tls.crt"),
        Err(Errno::ENOTDIR)
    );
    assert_eq!(walk("uid/volumes/kubernetes.io~secret"), Ok(()));
    assert_eq!(walk("uid/../uid"), Err(Errno::EXDEV));
    assert_eq!(walk("/etc"), Err(Errno::EXDEV));
    assert_eq!(walk("uid/nope"), Err(Errno::ENOENT));
    // And openat2 itself, where the kernel has it, agrees.
    for (path, want) in [
        ("uid/volumes/kubernetes.io~secret/tls", Errno::ENOTDIR),
        ("uid/volumes/kubernetes.io~secret/tls/x", Errno::ELOOP),
        ("uid/../..", Errno::EXDEV),
    ] {
        match open_beneath(&base, Path::new(path)) {
            Err(got) => assert_eq!(got, want, "{path}"),
            Ok(_) => panic!("{path} opened"),
        }
    }
}
