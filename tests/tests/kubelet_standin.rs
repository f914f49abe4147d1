//! The kubelet stand-in on real tmpfs and bind mounts: it must lay volumes out byte for byte
//! like kubelet's AtomicWriter, because every end-to-end test trusts it.
//!
//! Needs root (tmpfs + bind mounts). Without it every test skips loudly, or fails under
//! `MOUNTLAG_REQUIRE_REAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mountlag_testbed::kubelet::{
    FileProjection, KubeletStandIn, Payload, VolumeKind, WriteOutcome, raw_swap_data_link,
    raw_write_generation, read_data_link,
};
use mountlag_testbed::real;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent};

const POD: &str = "6f1c2a4e-1b7d-4c55-9a57-3f3c1f0b9e01";

fn real_mounts() -> bool {
    real::require("root + tmpfs", real::can_mount())
}

fn payload(items: &[(&str, &[u8], u32)]) -> Payload {
    items
        .iter()
        .map(|(path, data, mode)| ((*path).to_owned(), FileProjection::new(*data, *mode)))
        .collect()
}

/// `^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d{1,10}$`, checked independently of the library.
fn looks_like_generation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let Some((stamp, digits)) = rest.split_once('.') else {
        return false;
    };
    let groups: Vec<&str> = stamp.split('_').collect();
    let widths = [4, 2, 2, 2, 2, 2];
    groups.len() == 6
        && groups
            .iter()
            .zip(widths)
            .all(|(g, w)| g.len() == w && g.bytes().all(|b| b.is_ascii_digit()))
        && (1..=10).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
}

fn listing(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn link(path: &Path) -> String {
    fs::read_link(path).unwrap().to_string_lossy().into_owned()
}

/// `(mount point, fs type)` of every mount at or under `under`, from /proc/self/mountinfo.
fn mounts_under(under: &Path) -> Vec<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?.replace("\\040", " ");
            let fs_type = post.split(' ').next()?.to_owned();
            Some((PathBuf::from(mount_point), fs_type))
        })
        .filter(|(p, _)| p.starts_with(under))
        .collect()
}

fn written(outcome: WriteOutcome) -> String {
    match outcome {
        WriteOutcome::Written { generation } => generation,
        WriteOutcome::Unchanged => panic!("expected a new generation, got Unchanged"),
    }
}

#[test]
fn first_write_creates_the_kubelet_layout() {
    if !real_mounts() {
        return;
    }
    let k = KubeletStandIn::in_tempdir().unwrap();
    let vol = k.mount_volume(POD, VolumeKind::Secret, "tls").unwrap();
    assert_eq!(
        vol,
        k.root()
            .join("pods")
            .join(POD)
            .join("volumes/kubernetes.io~secret/tls")
    );
    assert_eq!(vol, k.volume_dir(POD, VolumeKind::Secret, "tls"));

    // The volume dir is its own tmpfs, root mode 1777, like kubelet's memory-backed emptyDir.
    let mounts = mounts_under(&vol);
    assert_eq!(mounts, vec![(vol.clone(), "tmpfs".to_owned())]);
    assert_eq!(mode(&vol), 0o1777);
    assert!(
        k.pod_dir(POD)
            .join("plugins/kubernetes.io~empty-dir/tls/ready")
            .is_file()
    );

    let p = payload(&[
        ("tls.crt", b"CERT-1", 0o644),
        ("tls.key", b"KEY-1", 0o400),
        ("a/b/c", b"nested", 0o644),
    ]);
    let generation = written(k.write(&vol, &p, None).unwrap());
    assert!(
        looks_like_generation(&generation),
        "bad generation name {generation:?}"
    );

    // Exactly: ..data, the generation, one link per first path component. No ..data_tmp.
    assert_eq!(
        listing(&vol),
        set(&["..data", &generation, "tls.crt", "tls.key", "a"])
    );
    // ..data is a relative symlink to the generation dir.
    assert!(
        fs::symlink_metadata(vol.join("..data"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(link(&vol.join("..data")), generation);
    assert_eq!(
        read_data_link(&vol).unwrap().as_deref(),
        Some(generation.as_str())
    );
    // Each top-level name is `c -> ..data/c`; nested a/b/c gives the single link `a`.
    for name in ["tls.crt", "tls.key", "a"] {
        let path = vol.join(name);
        assert!(
            fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(link(&path), format!("..data/{name}"));
    }
    // Real files live in the generation dir with the item modes; the dir is 0755.
    let ts = vol.join(&generation);
    assert!(fs::symlink_metadata(&ts).unwrap().is_dir());
    assert_eq!(mode(&ts), 0o755);
    assert_eq!(mode(&ts.join("tls.crt")), 0o644);
    assert_eq!(mode(&ts.join("tls.key")), 0o400);
    assert_eq!(mode(&ts.join("a/b/c")), 0o644);
    assert!(fs::symlink_metadata(ts.join("tls.key")).unwrap().is_file());
    assert_eq!(fs::read(vol.join("tls.crt")).unwrap(), b"CERT-1");
    assert_eq!(fs::read(vol.join("tls.key")).unwrap(), b"KEY-1");
    assert_eq!(fs::read(vol.join("a/b/c")).unwrap(), b"nested");
    // Files are owned by the writer (root) with its group; no fsGroup → no group change.
    assert_eq!(fs::metadata(ts.join("tls.key")).unwrap().gid(), 0);

    k.teardown_pod(POD).unwrap();
}

#[test]
fn identical_rewrite_is_unchanged_and_touches_nothing() {
    if !real_mounts() {
        return;
    }
    let k = KubeletStandIn::in_tempdir().unwrap();
    let vol = k.mount_volume(POD, VolumeKind::Projected, "certs").unwrap();
    let p = payload(&[("tls.crt", b"CERT", 0o644), ("tls.key", b"KEY", 0o600)]);
    let generation = written(k.write(&vol, &p, None).unwrap());

    let before_list = listing(&vol);
    let root_meta = fs::metadata(&vol).unwrap();
    let data_ino = fs::symlink_metadata(vol.join("..data")).unwrap().ino();
    let ts_ino = fs::metadata(vol.join(&generation)).unwrap().ino();
    let file_meta = fs::metadata(vol.join(&generation).join("tls.key")).unwrap();

    assert_eq!(k.write(&vol, &p, None).unwrap(), WriteOutcome::Unchanged);
    // kubelet compares content only: a mode-only change is not a write either.
    let mode_only = payload(&[("tls.crt", b"CERT", 0o644), ("tls.key", b"KEY", 0o400)]);
    assert_eq!(
        k.write(&vol, &mode_only, None).unwrap(),
        WriteOutcome::Unchanged
    );

    assert_eq!(listing(&vol), before_list);
    assert_eq!(link(&vol.join("..data")), generation);
    assert_eq!(
        fs::symlink_metadata(vol.join("..data")).unwrap().ino(),
        data_ino
    );
    assert_eq!(fs::metadata(vol.join(&generation)).unwrap().ino(), ts_ino);
    let root_after = fs::metadata(&vol).unwrap();
    assert_eq!(
        (root_after.mtime(), root_after.mtime_nsec()),
        (root_meta.mtime(), root_meta.mtime_nsec())
    );
    let file_after = fs::metadata(vol.join(&generation).join("tls.key")).unwrap();
    assert_eq!(file_after.ino(), file_meta.ino());
    assert_eq!(
        (file_after.ctime(), file_after.ctime_nsec()),
        (file_meta.ctime(), file_meta.ctime_nsec())
    );
    assert_eq!(file_after.mode() & 0o7777, 0o600);

    // A missing user-visible link is recreated even when nothing is written (kubernetes#121472).
    fs::remove_file(vol.join("tls.crt")).unwrap();
    assert_eq!(k.write(&vol, &p, None).unwrap(), WriteOutcome::Unchanged);
    assert_eq!(link(&vol.join("tls.crt")), "..data/tls.crt");
    assert_eq!(link(&vol.join("..data")), generation);
}

#[test]
fn update_switches_generation_and_removes_stale_names() {
    if !real_mounts() {
        return;
    }
    let k = KubeletStandIn::in_tempdir().unwrap();
    let vol = k.mount_volume(POD, VolumeKind::Secret, "tls").unwrap();
    let v1 = payload(&[
        ("tls.crt", b"CERT-1", 0o644),
        ("tls.key", b"KEY-1", 0o644),
        ("ca.crt", b"CA", 0o644),
        ("d/e", b"nested", 0o644),
    ]);
    let g1 = written(k.write(&vol, &v1, None).unwrap());
    let v2 = payload(&[
        ("tls.crt", b"CERT-2", 0o644),
        ("tls.key", b"KEY-2", 0o644),
        ("extra", b"new", 0o644),
    ]);
    let g2 = written(k.write(&vol, &v2, None).unwrap());
    assert_ne!(g1, g2);
    assert!(looks_like_generation(&g2));
    assert_eq!(
        listing(&vol),
        set(&["..data", &g2, "tls.crt", "tls.key", "extra"])
    );
    assert!(!vol.join(&g1).exists(), "old generation must be removed");
    assert_eq!(link(&vol.join("..data")), g2);
    assert_eq!(fs::read(vol.join("tls.crt")).unwrap(), b"CERT-2");
    assert_eq!(fs::read(vol.join("extra")).unwrap(), b"new");

    // Removing a key alone (no content change) is also a new generation.
    let v3 = payload(&[("tls.crt", b"CERT-2", 0o644), ("tls.key", b"KEY-2", 0o644)]);
    let g3 = written(k.write(&vol, &v3, None).unwrap());
    assert_eq!(listing(&vol), set(&["..data", &g3, "tls.crt", "tls.key"]));
}

#[test]
fn empty_payload_points_data_at_an_empty_dir() {
    if !real_mounts() {
        return;
    }
    let k = KubeletStandIn::in_tempdir().unwrap();
    let vol = k.mount_volume(POD, VolumeKind::Secret, "optional").unwrap();
    let empty = Payload::new();
    let g1 = written(k.write(&vol, &empty, None).unwrap());
    assert_eq!(listing(&vol), set(&["..data", &g1]));
    assert!(listing(&vol.join("..data")).is_empty());
    assert_eq!(mode(&vol.join(&g1)), 0o755);
    // Still empty: nothing to do.
    assert_eq!(
        k.write(&vol, &empty, None).unwrap(),
        WriteOutcome::Unchanged
    );

    // The Secret appears, then disappears again (optional Secret deleted).
    let g2 = written(
        k.write(&vol, &payload(&[("tls.crt", b"C", 0o644)]), None)
            .unwrap(),
    );
    assert_eq!(listing(&vol), set(&["..data", &g2, "tls.crt"]));
    let g3 = written(k.write(&vol, &empty, None).unwrap());
    assert_eq!(listing(&vol), set(&["..data", &g3]));
    assert!(listing(&vol.join(&g3)).is_empty());
}

#[test]
fn fs_group_sets_group_and_adds_read_bits() {
    if !real_mounts() {
        return;
    }
    const GID: u32 = 4321;
    let k = KubeletStandIn::in_tempdir().unwrap();
    let vol = k.mount_volume(POD, VolumeKind::Secret, "tls").unwrap();
    let p = payload(&[
        ("tls.key", b"KEY", 0o400),
        ("tls.crt", b"CERT", 0o644),
        ("sub/x", b"X", 0o600),
    ]);
    let g = written(k.write(&vol, &p, Some(GID)).unwrap());
    let ts = vol.join(&g);
    for (file, want) in [("tls.key", 0o440), ("tls.crt", 0o644), ("sub/x", 0o640)] {
        let m = fs::metadata(ts.join(file)).unwrap();
        assert_eq!(m.gid(), GID, "{file} group");
        assert_eq!(m.uid(), 0, "{file} owner unchanged");
        assert_eq!(m.mode() & 0o7777, want, "{file} mode");
    }
    // SetVolumeOwnership on a read-only volume: dirs get | 0550 | setgid.
    assert_eq!(mode(&ts), 0o2755);
    assert_eq!(fs::metadata(&ts).unwrap().gid(), GID);
    assert_eq!(mode(&ts.join("sub")), 0o2755);
    assert_eq!(mode(&vol), 0o3777);
    assert_eq!(fs::metadata(&vol).unwrap().gid(), GID);
    // Entries created after the walk inherit the group through the setgid volume root.
    assert_eq!(fs::symlink_metadata(vol.join("..data")).unwrap().gid(), GID);
    assert_eq!(
        fs::symlink_metadata(vol.join("tls.key")).unwrap().gid(),
        GID
    );
}

fn drain(inotify: &Inotify) -> Vec<InotifyEvent> {
    let mut events = Vec::new();
    loop {
        match inotify.read_events() {
            Ok(batch) => events.extend(batch),
            Err(nix::errno::Errno::EAGAIN) => return events,
            Err(e) => panic!("inotify read: {e}"),
        }
    }
}

fn name_of(e: &InotifyEvent) -> String {
    e.name
        .as_ref()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn inotify_sees_the_documented_sequence_on_update() {
    if !real_mounts() {
        return;
    }
    let k = KubeletStandIn::in_tempdir().unwrap();
    let vol = k.mount_volume(POD, VolumeKind::Secret, "tls").unwrap();
    let g1 = written(
        k.write(
            &vol,
            &payload(&[
                ("tls.crt", b"CERT-1", 0o644),
                ("tls.key", b"KEY-1", 0o600),
                ("old", b"gone soon", 0o644),
            ]),
            None,
        )
        .unwrap(),
    );

    // Watch added after the tmpfs is mounted (a watch on the dir underneath would never fire).
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).unwrap();
    inotify
        .add_watch(
            &vol,
            AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_ATTRIB
                | AddWatchFlags::IN_UNMOUNT,
        )
        .unwrap();

    let g2 = written(
        k.write(
            &vol,
            &payload(&[
                ("tls.crt", b"CERT-2", 0o644),
                ("tls.key", b"KEY-2", 0o600),
                ("new", b"fresh", 0o644),
            ]),
            None,
        )
        .unwrap(),
    );
    let events = drain(&inotify);
    let find = |flag: AddWatchFlags, name: &str| -> usize {
        events
            .iter()
            .position(|e| e.mask.contains(flag) && name_of(e) == name)
            .unwrap_or_else(|| panic!("no {flag:?} {name} in {events:#?}"))
    };
    let create_ts = find(AddWatchFlags::IN_CREATE, &g2);
    assert!(events[create_ts].mask.contains(AddWatchFlags::IN_ISDIR));
    let create_tmp = find(AddWatchFlags::IN_CREATE, "..data_tmp");
    let moved_from = find(AddWatchFlags::IN_MOVED_FROM, "..data_tmp");
    let moved_to = find(AddWatchFlags::IN_MOVED_TO, "..data");
    let create_new = find(AddWatchFlags::IN_CREATE, "new");
    let delete_old_key = find(AddWatchFlags::IN_DELETE, "old");
    let delete_old_ts = find(AddWatchFlags::IN_DELETE, &g1);
    assert!(events[delete_old_ts].mask.contains(AddWatchFlags::IN_ISDIR));

    assert!(create_ts < create_tmp, "{events:#?}");
    assert!(create_tmp < moved_from, "{events:#?}");
    assert_eq!(
        moved_from + 1,
        moved_to,
        "rename is one MOVED_FROM/MOVED_TO pair"
    );
    assert_ne!(events[moved_from].cookie, 0);
    assert_eq!(events[moved_from].cookie, events[moved_to].cookie);
    assert!(moved_to < create_new, "{events:#?}");
    assert!(create_new < delete_old_key, "{events:#?}");
    assert!(delete_old_key < delete_old_ts, "{events:#?}");
    // Nothing is created or deleted besides those; unchanged keys are not touched.
    let structural: Vec<String> = events
        .iter()
        .filter(|e| {
            e.mask.intersects(
                AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_MOVED_TO,
            )
        })
        .map(name_of)
        .collect();
    assert_eq!(
        structural,
        vec![
            g2.clone(),
            "..data_tmp".into(),
            "..data_tmp".into(),
            "..data".into(),
            "new".into(),
            "old".into(),
            g1.clone()
        ]
    );

    // An identical rewrite produces no event at all.
    assert_eq!(
        k.write(
            &vol,
            &payload(&[
                ("tls.crt", b"CERT-2", 0o644),
                ("tls.key", b"KEY-2", 0o600),
                ("new", b"fresh", 0o644),
            ]),
            None,
        )
        .unwrap(),
        WriteOutcome::Unchanged
    );
    assert!(drain(&inotify).is_empty());

    // Pod teardown unmounts the tmpfs: the watch gets IN_UNMOUNT.
    k.teardown_pod(POD).unwrap();
    let events = drain(&inotify);
    assert!(
        events
            .iter()
            .any(|e| e.mask.contains(AddWatchFlags::IN_UNMOUNT)),
        "{events:#?}"
    );
}

#[test]
fn subpath_bind_mount_keeps_the_old_content() {
    if !real_mounts() {
        return;
    }
    let k = KubeletStandIn::in_tempdir().unwrap();
    let vol = k.mount_volume(POD, VolumeKind::Secret, "tls").unwrap();
    written(
        k.write(
            &vol,
            &payload(&[("tls.crt", b"CERT-1", 0o644), ("tls.key", b"KEY-1", 0o600)]),
            None,
        )
        .unwrap(),
    );
    let target = k
        .mount_subpath(POD, "tls", VolumeKind::Secret, "nginx", 0, "tls.crt")
        .unwrap();
    assert_eq!(
        target,
        k.pod_dir(POD).join("volume-subpaths/tls/nginx/0"),
        "kubelet's subPath target path"
    );
    assert!(
        mounts_under(&k.pod_dir(POD).join("volume-subpaths"))
            .iter()
            .any(|(p, _)| *p == target)
    );
    assert_eq!(fs::read(&target).unwrap(), b"CERT-1");

    written(
        k.write(
            &vol,
            &payload(&[("tls.crt", b"CERT-2", 0o644), ("tls.key", b"KEY-2", 0o600)]),
            None,
        )
        .unwrap(),
    );
    assert_eq!(fs::read(vol.join("tls.crt")).unwrap(), b"CERT-2");
    assert_eq!(
        fs::read(&target).unwrap(),
        b"CERT-1",
        "subPath never updates"
    );

    // Asking again (container restart) does not refresh it either.
    let again = k
        .mount_subpath(POD, "tls", VolumeKind::Secret, "nginx", 0, "tls.crt")
        .unwrap();
    assert_eq!(again, target);
    assert_eq!(fs::read(&target).unwrap(), b"CERT-1");
    // A new mount index resolves the current file.
    let second = k
        .mount_subpath(POD, "tls", VolumeKind::Secret, "nginx", 1, "tls.crt")
        .unwrap();
    assert_eq!(fs::read(&second).unwrap(), b"CERT-2");

    // A symlink that escapes the volume is refused.
    fs::create_dir_all(k.root().join("outside")).unwrap();
    fs::write(k.root().join("outside/secret"), b"x").unwrap();
    std::os::unix::fs::symlink(k.root().join("outside/secret"), vol.join("escape")).unwrap();
    let err = k
        .mount_subpath(POD, "tls", VolumeKind::Secret, "nginx", 2, "escape")
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("not within volume path"),
        "{err:#}"
    );
    assert!(
        k.mount_subpath(POD, "tls", VolumeKind::Secret, "nginx", 3, "../x")
            .is_err()
    );

    k.teardown_pod(POD).unwrap();
    assert!(mounts_under(k.root()).is_empty());
}

#[test]
fn teardown_unmounts_everything_and_removes_the_pod_dir() {
    if !real_mounts() {
        return;
    }
    let k = KubeletStandIn::in_tempdir().unwrap();
    let other = "0a0a0a0a-0000-4000-8000-000000000002";
    let secret = k.mount_volume(POD, VolumeKind::Secret, "tls").unwrap();
    let projected = k
        .mount_volume(POD, VolumeKind::Projected, "bundle")
        .unwrap();
    let keep = k.mount_volume(other, VolumeKind::Secret, "tls").unwrap();
    for v in [&secret, &projected, &keep] {
        written(
            k.write(v, &payload(&[("tls.crt", b"C", 0o644)]), None)
                .unwrap(),
        );
    }
    k.mount_subpath(POD, "tls", VolumeKind::Secret, "c", 0, "tls.crt")
        .unwrap();
    k.mount_subpath(POD, "bundle", VolumeKind::Projected, "c", 1, "tls.crt")
        .unwrap();
    assert_eq!(mounts_under(&k.pod_dir(POD)).len(), 4);
    // Sorted by UID.
    assert_eq!(k.mounted_pods(), vec![other.to_owned(), POD.to_owned()]);

    k.teardown_pod(POD).unwrap();
    assert!(mounts_under(&k.pod_dir(POD)).is_empty());
    assert!(!k.pod_dir(POD).exists());
    assert_eq!(k.mounted_pods(), vec![other.to_owned()]);
    // The other pod is untouched.
    assert_eq!(
        mounts_under(&keep),
        vec![(keep.clone(), "tmpfs".to_owned())]
    );
    assert_eq!(fs::read(keep.join("tls.crt")).unwrap(), b"C");
    // Tearing down a pod that is gone is fine.
    k.teardown_pod(POD).unwrap();

    // Dropping the stand-in tears down the rest.
    let root = k.root().to_path_buf();
    drop(k);
    assert!(mounts_under(&root).is_empty());
    assert!(!root.exists(), "in_tempdir root is removed on drop");
}

#[test]
fn drop_tears_down_a_caller_owned_root() {
    if !real_mounts() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root;
    {
        let k = KubeletStandIn::new(tmp.path().join("kubelet")).unwrap();
        root = k.root().to_path_buf();
        let vol = k.mount_volume(POD, VolumeKind::Secret, "tls").unwrap();
        k.write(&vol, &payload(&[("a", b"1", 0o644)]), None)
            .unwrap();
        k.mount_subpath(POD, "tls", VolumeKind::Secret, "c", 0, "a")
            .unwrap();
        assert_eq!(mounts_under(&root).len(), 2);
    }
    assert!(mounts_under(&root).is_empty());
    assert!(!root.join("pods").join(POD).exists());
    assert!(root.exists(), "a caller-owned root stays");
}

#[test]
fn raw_swaps_between_pre_written_generations() {
    if !real_mounts() {
        return;
    }
    let k = KubeletStandIn::in_tempdir().unwrap();
    let vol = k.mount_volume(POD, VolumeKind::Secret, "tls").unwrap();
    let first = written(
        k.write(&vol, &payload(&[("tls.crt", b"A", 0o644)]), None)
            .unwrap(),
    );
    let second = raw_write_generation(&vol, &payload(&[("tls.crt", b"B", 0o644)])).unwrap();
    assert!(looks_like_generation(&second));
    assert_eq!(
        link(&vol.join("..data")),
        first,
        "raw write does not switch"
    );
    for i in 0..2000 {
        let to = if i % 2 == 0 { &second } else { &first };
        raw_swap_data_link(&vol, to).unwrap();
    }
    assert_eq!(link(&vol.join("..data")), first);
    assert_eq!(fs::read(vol.join("tls.crt")).unwrap(), b"A");
    raw_swap_data_link(&vol, &second).unwrap();
    assert_eq!(fs::read(vol.join("tls.crt")).unwrap(), b"B");
    assert!(!vol.join("..data_tmp").exists());
    assert_eq!(listing(&vol), set(&["..data", &first, &second, "tls.crt"]));

    // A normal write afterwards removes only the generation ..data pointed at.
    let third = written(
        k.write(&vol, &payload(&[("tls.crt", b"C", 0o644)]), None)
            .unwrap(),
    );
    assert_eq!(listing(&vol), set(&["..data", &first, &third, "tls.crt"]));
}

#[test]
fn invalid_payload_paths_are_rejected_like_kubelet() {
    if !real_mounts() {
        return;
    }
    let k = KubeletStandIn::in_tempdir().unwrap();
    let vol = k.mount_volume(POD, VolumeKind::Secret, "tls").unwrap();
    for bad in ["/abs", "a/../b", "..hidden", "..", ""] {
        let err = k
            .write(&vol, &payload(&[(bad, b"x", 0o644)]), None)
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("invalid path"),
            "{bad:?}: {err:#}"
        );
    }
    assert!(
        listing(&vol).is_empty(),
        "nothing written on invalid payload"
    );
    // Paths are cleaned like Go's filepath.Clean.
    written(
        k.write(&vol, &payload(&[("./x//y", b"x", 0o644)]), None)
            .unwrap(),
    );
    assert_eq!(link(&vol.join("x")), "..data/x");
    assert_eq!(fs::read(vol.join("x/y")).unwrap(), b"x");
}
