//! Hostile volumes: what a pod (or whoever can write under the kubelet root) may leave where
//! kubelet's AtomicWriter output is expected. Each is a clear problem naming the file, read
//! within a bounded time, and nothing outside the volume is read.
//!
//! Each snapshot runs on its own thread with a deadline, so a reader that blocks (a FIFO opened
//! for reading without a writer) or reads forever (a device) fails the test instead of hanging it.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::symlink;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::stat::{makedev, mknod};
use nix::unistd::mkfifo;

use super::*;
use crate::disk::test_volume::{GENERATION, self_signed, write_volume};

const DEADLINE: Duration = Duration::from_secs(20);

/// `f` on another thread; fails when it has not answered within `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("no answer within {limit:?}: the reader blocks or reads on"))
}

fn read(volume: &Path) -> VolumeSnapshot {
    let volume = volume.to_path_buf();
    within(DEADLINE, move || snapshot(&volume)).unwrap()
}

/// The problems of a snapshot as `file: code: detail` lines.
fn problems(snap: &VolumeSnapshot) -> Vec<String> {
    snap.problems
        .iter()
        .map(|p| {
            format!(
                "{}: {}: {}",
                p.file.as_deref().unwrap_or("(volume)"),
                p.kind.code(),
                p.detail
            )
        })
        .collect()
}

fn has(snap: &VolumeSnapshot, line: &str) -> bool {
    problems(snap).iter().any(|p| p.starts_with(line))
}

/// A volume whose generation holds `tls.key` and whatever `make` puts at `tls.crt`, with the
/// user-visible links kubelet makes.
fn volume_with(make: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("tls");
    let cert = self_signed("hostile.test", &["hostile.test"], (2020, 2040));
    write_volume(&volume, &[("tls.key", cert.key_pem.as_bytes())]);
    let generation = volume.join(GENERATION);
    make(&generation.join("tls.crt"));
    symlink("..data/tls.crt", volume.join("tls.crt")).unwrap();
    (tmp, volume)
}

/// One file of `dir` through [`Walk::file`], the way a name swapped in after the type check
/// would be opened: it must answer, not block or read on.
fn open_swapped_in(dir: &Path, name: &str) -> (bool, Walk<'static>) {
    let dir = dir.to_path_buf();
    let name = name.to_string();
    within(DEADLINE, move || {
        let fd =
            nix::fcntl::open(&dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let mut walk = Walk::default();
        let moved = walk.file(&fd, OsStr::new(&name), name.clone()).is_err();
        (moved, walk)
    })
}

#[test]
fn symlink_loops_are_reported_and_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("tls");
    write_volume(&volume, &[("ca.crt", b"not a certificate")]);
    let generation = volume.join(GENERATION);
    // In the generation: two links to each other, and one to itself.
    symlink("b", generation.join("a")).unwrap();
    symlink("a", generation.join("b")).unwrap();
    symlink("self", generation.join("self")).unwrap();
    // At the root: a name that points at itself, and one into a loop of the generation.
    symlink("tls.crt", volume.join("tls.crt")).unwrap();
    symlink("..data/a", volume.join("a")).unwrap();
    let snap = read(&volume);
    for line in [
        "a: notRegularFile: symlink inside the generation directory",
        "b: notRegularFile: symlink inside the generation directory",
        "self: notRegularFile: symlink inside the generation directory",
        "tls.crt: unexpectedEntry: symlink to tls.crt, not into ..data",
        "a: danglingSymlink: symlink to ..data/a",
    ] {
        assert!(has(&snap, line), "{line}: {:#?}", problems(&snap));
    }

    // `..data` itself in a loop: a link to itself, and to a link to a link back.
    for (target, extra) in [
        ("..data", None),
        ("..a", Some(("..a", "..b"))),
        ("..b", None),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("tls");
        std::fs::create_dir_all(&volume).unwrap();
        symlink(target, volume.join("..data")).unwrap();
        if let Some((a, b)) = extra {
            symlink(b, volume.join(a)).unwrap();
            symlink(a, volume.join(b)).unwrap();
        }
        let snap = read(&volume);
        assert!(
            has(&snap, "..data: notRegularFile: ..data points to")
                || has(&snap, "..data: danglingSymlink: ..data points to"),
            "{target}: {:#?}",
            problems(&snap)
        );
        assert!(snap.files.is_empty());
    }
}

#[test]
fn a_data_link_out_of_the_volume_is_refused_and_nothing_outside_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    let leaked = self_signed("outside.test", &["outside.test"], (2020, 2040));
    write_volume(
        &outside,
        &[
            ("tls.crt", leaked.cert_pem.as_bytes()),
            ("tls.key", leaked.key_pem.as_bytes()),
        ],
    );
    let outside_generation = outside.join(GENERATION);
    let targets = [
        outside_generation.to_string_lossy().into_owned(),
        format!("../outside/{GENERATION}"),
        "..".to_string(),
        "../..".to_string(),
        "/".to_string(),
        "/etc".to_string(),
    ];
    for target in &targets {
        let volume = tmp.path().join("tls");
        let _ = std::fs::remove_dir_all(&volume);
        std::fs::create_dir_all(&volume).unwrap();
        symlink(target, volume.join("..data")).unwrap();
        symlink("..data/tls.crt", volume.join("tls.crt")).unwrap();
        let snap = read(&volume);
        assert!(
            has(&snap, "..data: symlinkEscapesVolume: ..data points to"),
            "{target}: {:#?}",
            problems(&snap)
        );
        assert!(snap.files.is_empty(), "{target}: read {:?}", snap.files);
        assert_eq!(snap.generation, None);
    }

    // A generation-shaped name that is itself a link out of the volume: not followed either.
    let volume = tmp.path().join("tls");
    std::fs::remove_dir_all(&volume).unwrap();
    std::fs::create_dir_all(&volume).unwrap();
    symlink(&outside_generation, volume.join("..2026_06_06_06_06_06.6")).unwrap();
    symlink("..2026_06_06_06_06_06.6", volume.join("..data")).unwrap();
    let snap = read(&volume);
    assert!(
        has(
            &snap,
            "..data: notRegularFile: ..data points to ..2026_06_06_06_06_06.6, which is not a directory"
        ),
        "{:#?}",
        problems(&snap)
    );
    assert!(snap.files.is_empty());
    let shown = format!("{snap:?}");
    assert!(!shown.contains(&leaked.fingerprint) && !shown.contains("outside.test"));
}

/// Regression: a `..data` that names a generation directory that is not there was retried as a
/// rewrite in progress and reported as "..data moved during each of 8 reads".
#[test]
fn a_data_link_to_a_missing_generation_is_a_dangling_problem_not_a_rewrite() {
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("tls");
    std::fs::create_dir_all(&volume).unwrap();
    symlink("..2026_01_01_00_00_00.404", volume.join("..data")).unwrap();
    symlink("..data/tls.crt", volume.join("tls.crt")).unwrap();
    let snap = read(&volume);
    assert_eq!(
        problems(&snap),
        [
            "..data: danglingSymlink: ..data points to ..2026_01_01_00_00_00.404, which is not in the \
          volume; kubelet publishes a generation only once it is written"
        ]
    );
    assert_eq!(snap.generation, None);
    assert_eq!(snap.state(), VolumeState::NotWritten);
}

#[test]
fn a_fifo_named_tls_crt_is_refused_without_blocking() {
    let (_tmp, volume) = volume_with(|path| mkfifo(path, Mode::from_bits_truncate(0o644)).unwrap());
    let started = Instant::now();
    let snap = read(&volume);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        has(
            &snap,
            "tls.crt: notRegularFile: a named pipe (FIFO), not a regular file; not read"
        ),
        "{:#?}",
        problems(&snap)
    );
    assert!(snap.files.iter().all(|f| f.path != "tls.crt"));
    // Swapped in between the type check and the open: opened without blocking, then refused
    // as a file that changed under the reader.
    let (moved, walk) = open_swapped_in(&volume.join(GENERATION), "tls.crt");
    assert!(moved);
    assert!(walk.files.is_empty());
}

/// A device node needs CAP_MKNOD (the tests run as root, as CI does); without it, says so.
fn mknod_or_skip(path: &Path, major: u64, minor: u64) -> bool {
    match mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o644),
        makedev(major, minor),
    ) {
        Ok(()) => true,
        Err(err) => {
            eprintln!("SKIPPED: cannot make a device node ({err}); run as root to test it");
            false
        }
    }
}

#[test]
fn a_device_named_tls_crt_is_refused_and_never_read() {
    let mut made = true;
    // /dev/zero's numbers: a reader that followed it would read forever.
    let (_tmp, volume) = volume_with(|path| made = mknod_or_skip(path, 1, 5));
    if !made {
        return;
    }
    let snap = read(&volume);
    assert!(
        has(
            &snap,
            "tls.crt: notRegularFile: a character device, not a regular file; not read"
        ),
        "{:#?}",
        problems(&snap)
    );
    assert!(snap.files.iter().all(|f| f.path != "tls.crt"));
    let (moved, walk) = open_swapped_in(&volume.join(GENERATION), "tls.crt");
    assert!(moved, "a device opened as a file was read");
    assert!(walk.files.is_empty());
}

#[test]
fn a_two_gib_sparse_tls_crt_is_refused_by_its_size_and_not_read() {
    let (_tmp, volume) = volume_with(|path| {
        std::fs::File::create(path)
            .unwrap()
            .set_len(2 << 30)
            .unwrap();
    });
    let started = Instant::now();
    let snap = read(&volume);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        has(
            &snap,
            "tls.crt: fileTooLarge: 2147483648 bytes, over the 1048576-byte limit of a Secret; not read"
        ),
        "{:#?}",
        problems(&snap)
    );
    let file = snap.files.iter().find(|f| f.path == "tls.crt").unwrap();
    assert_eq!((file.size, file.sha256.as_deref()), (2 << 30, None));
}

#[test]
fn five_thousand_keys_are_read_and_paired() {
    let cert = self_signed("many.test", &["many.test"], (2020, 2040));
    let names: Vec<(String, &[u8])> = (0..2_500)
        .flat_map(|i| {
            [
                (format!("site-{i}.crt"), cert.cert_pem.as_bytes()),
                (format!("site-{i}.key"), cert.key_pem.as_bytes()),
            ]
        })
        .collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("tls");
    write_volume(&volume, &files);
    let started = Instant::now();
    let snap = read(&volume);
    eprintln!("5,000 keys: {:?}", started.elapsed());
    let first: Vec<String> = problems(&snap).into_iter().take(3).collect();
    assert!(snap.problems.is_empty(), "{first:#?}");
    assert_eq!(snap.files.len(), 5_000);
    assert_eq!(snap.pairings.len(), 2_500);
    assert!(snap.pairings.iter().all(|p| p.matches));
}

/// Regression: past the entry limit, the root names of entries that were not read were all
/// reported as dangling links "which do not exist", though they do.
#[test]
fn root_links_past_the_entry_limit_are_not_called_dangling() {
    let names: Vec<String> = (0..MAX_ENTRIES + 50).map(|i| format!("k{i:05}")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("tls");
    write_volume(&volume, &files);
    let snap = read(&volume);
    assert_eq!(
        problems(&snap),
        [format!(
            "(volume): tooManyEntries: more than {MAX_ENTRIES} entries; the rest was not read"
        )]
    );
    assert_eq!(snap.files.len(), MAX_ENTRIES);
}
