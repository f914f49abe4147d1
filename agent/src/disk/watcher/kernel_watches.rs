//! Which inodes the kernel really watches for this process, read from the inotify fds'
//! `/proc/self/fdinfo` entries (`inotify wd:3 ino:1a sdev:2d ...`).
//!
//! notify keeps its own map of watches and cannot be asked whether the kernel still holds one.
//! The two drift apart when a volume's tmpfs is remounted while the inotify thread is stalled
//! (a queue overflow): the watch is re-armed on the new mount, then notify handles the old
//! watch's late `IN_IGNORED` and removes the watch for that path, which is now the new one.
//! After a rescan the watcher compares its volumes with this list and re-arms the missing.

use std::collections::HashSet;

/// `(device, inode)` in `stat`'s encoding of every inode watched by an inotify instance of
/// this process; `None` when `/proc/self` cannot be read (then nothing is re-armed).
pub(super) fn watched_inodes() -> Option<HashSet<(u64, u64)>> {
    let mut watched = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let is_inotify = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:inotify");
        if !is_inotify {
            continue;
        }
        let fdinfo = format!("/proc/self/fdinfo/{}", entry.file_name().to_string_lossy());
        if let Ok(text) = std::fs::read_to_string(fdinfo) {
            watched.extend(parse_fdinfo(&text));
        }
    }
    Some(watched)
}

/// The `(device, inode)` pairs of an inotify fd's `fdinfo`, the device converted from the
/// kernel's internal `MKDEV` (major << 20 | minor) to `stat`'s `st_dev`.
fn parse_fdinfo(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter(|line| line.starts_with("inotify wd:"))
        .filter_map(|line| {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix(name))
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            };
            let kernel_dev = field("sdev:")?;
            let ino = field("ino:")?;
            let dev = nix::sys::stat::makedev(kernel_dev >> 20, kernel_dev & 0xf_ffff);
            Some((dev, ino))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn fdinfo_lines_become_stat_devices_and_inodes() {
        let text = "pos:\t0\nflags:\t02004000\nmnt_id:\t15\nino:\t1057\n\
            inotify wd:2 ino:1a2b sdev:800021 mask:fc6 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:2b1a0000\n\
            inotify wd:1 ino:3 sdev:3f mask:fc6 ignored_mask:0\n\
            inotify wd:9 ino:zz sdev:3f\n";
        assert_eq!(
            parse_fdinfo(text),
            [
                (nix::sys::stat::makedev(8, 0x21), 0x1a2b),
                (nix::sys::stat::makedev(0, 0x3f), 3),
            ]
        );
    }

    #[test]
    fn a_directory_watched_by_this_process_is_listed_with_its_stat_identity() {
        let dir = tempfile::tempdir().unwrap();
        let inotify =
            nix::sys::inotify::Inotify::init(nix::sys::inotify::InitFlags::empty()).unwrap();
        let meta = std::fs::metadata(dir.path()).unwrap();
        assert!(
            !watched_inodes()
                .unwrap()
                .contains(&(meta.dev(), meta.ino()))
        );
        inotify
            .add_watch(dir.path(), nix::sys::inotify::AddWatchFlags::IN_CREATE)
            .unwrap();
        assert!(
            watched_inodes()
                .unwrap()
                .contains(&(meta.dev(), meta.ino()))
        );
    }
}
