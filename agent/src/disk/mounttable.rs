//! Wakes up when the mount table changes, and (rarely) when nothing happened at all.
//!
//! The kernel flags `/proc/self/mountinfo` with `POLLPRI` on every mount and unmount in the
//! namespace; `poll` itself clears the flag. One thread blocks in `poll` on that file and on
//! one end of a socket pair; dropping the listener closes the other end, which ends the thread.
//!
//! A change is reported as the mount points that appeared or went away (the table is re-read
//! and compared with the last one by mount ID), so that the watcher re-checks only the volumes
//! at or below them: on a node, every pod start or stop anywhere changes the table, and a full
//! rescan costs ~16 µs per tracked volume.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read as _;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::RescanReason;

/// What the listener saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TableChange {
    /// These mount points were mounted or unmounted (each once, sorted).
    Mounts(Vec<PathBuf>),
    /// Something may have changed, nobody knows what: re-check everything.
    Unknown(RescanReason),
}

/// One mount: its ID (unique while mounted) and where it is mounted.
type MountEntry = (u64, PathBuf);

/// Largest mount table read: a line is ~150–250 bytes, so this holds 30,000+ mounts (a busy
/// node has a few thousand). A larger table is not read (each change then re-checks every
/// volume, which stays correct) rather than growing the agent with every mount on the node.
pub const MAX_MOUNTINFO_BYTES: u64 = 8 << 20;

/// Reads and parses the mount table, at most [`MAX_MOUNTINFO_BYTES`] of it.
fn read_table(path: &Path) -> std::io::Result<BTreeSet<MountEntry>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(MAX_MOUNTINFO_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_MOUNTINFO_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is larger than {MAX_MOUNTINFO_BYTES} bytes; not read",
                path.display()
            ),
        ));
    }
    // The kernel escapes only space, tab, newline and backslash: other bytes of a path come
    // raw and need not be UTF-8; such a path is never a kubelet volume.
    Ok(mounts_of(&String::from_utf8_lossy(&bytes)))
}

pub(super) struct MountTableListener {
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl MountTableListener {
    pub(super) fn start(
        mountinfo: &Path,
        safety_interval: Duration,
        on_change: impl Fn(TableChange) + Send + 'static,
    ) -> std::io::Result<Self> {
        let table = File::open(mountinfo)?;
        // Read here, not in the thread: a mount made after `start` returns must differ from
        // `known`, or its POLLPRI would find nothing new and the change would be lost.
        let known = read_table(mountinfo).ok();
        let path = mountinfo.to_path_buf();
        let (stop, stopped) = UnixStream::pair()?;
        let timeout = PollTimeout::try_from(safety_interval).unwrap_or(PollTimeout::MAX);
        let thread = std::thread::Builder::new()
            .name("mountlag-mounttable".into())
            .spawn(move || listen(&path, &table, known, &stopped, timeout, on_change))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

fn listen(
    path: &Path,
    table: &File,
    mut known: Option<BTreeSet<MountEntry>>,
    stopped: &UnixStream,
    timeout: PollTimeout,
    on_change: impl Fn(TableChange),
) {
    let read = || read_table(path);
    loop {
        let mut fds = [
            PollFd::new(table.as_fd(), PollFlags::POLLPRI),
            PollFd::new(stopped.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Ok(0) => {
                known = read().ok();
                on_change(TableChange::Unknown(RescanReason::Safety));
            }
            Ok(_) => {
                let stop = fds[1].revents().is_some_and(|r| !r.is_empty());
                if stop {
                    return;
                }
                let changed = fds[0]
                    .revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR));
                if !changed {
                    continue;
                }
                // Read after the wake-up: the table holds at least the change that woke us, and
                // a later one raises POLLPRI again.
                match (known.take(), read()) {
                    (Some(before), Ok(now)) => {
                        let points = changed_mount_points(&before, &now);
                        known = Some(now);
                        if !points.is_empty() {
                            on_change(TableChange::Mounts(points));
                        }
                    }
                    (None, Ok(now)) => {
                        known = Some(now);
                        on_change(TableChange::Unknown(RescanReason::MountTable));
                    }
                    (_, Err(err)) => {
                        tracing::warn!(error = %err, "cannot read the mount table; re-checking every volume");
                        on_change(TableChange::Unknown(RescanReason::MountTable));
                    }
                }
            }
            Err(Errno::EINTR) => {}
            Err(err) => {
                tracing::error!(error = %err, "cannot poll the mount table; mount changes are now seen only by the safety rescan");
                std::thread::sleep(timeout_duration(timeout));
                known = read().ok();
                on_change(TableChange::Unknown(RescanReason::Safety));
            }
        }
    }
}

/// The mounts in a `/proc/<pid>/mountinfo` text. Lines that do not parse are skipped: the
/// kernel writes this file, and a skipped line only costs a re-check that would not happen.
fn mounts_of(text: &str) -> BTreeSet<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next()?.parse().ok()?;
            let mount_point = fields.nth(3)?;
            Some((id, PathBuf::from(unescape(mount_point))))
        })
        .collect()
}

/// Mount points whose mounts differ between two tables.
fn changed_mount_points(before: &BTreeSet<MountEntry>, now: &BTreeSet<MountEntry>) -> Vec<PathBuf> {
    let points: BTreeSet<&PathBuf> = before
        .symmetric_difference(now)
        .map(|(_, point)| point)
        .collect();
    points.into_iter().cloned().collect()
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')));
        match octal.and_then(|n| u8::try_from(n).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn timeout_duration(timeout: PollTimeout) -> Duration {
    Duration::from_millis(u64::try_from(i32::from(timeout)).unwrap_or(300_000))
}

impl Drop for MountTableListener {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw
40 22 0:35 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/tls rw,relatime shared:20 - tmpfs tmpfs rw,size=1024k
41 22 0:36 / /mnt/with\\040space rw - tmpfs tmpfs rw
garbage line
";

    #[test]
    fn mount_points_are_read_with_their_ids_and_unescaped() {
        let mounts = mounts_of(TABLE);
        assert_eq!(mounts.len(), 3, "{mounts:?}");
        assert!(mounts.contains(&(41, PathBuf::from("/mnt/with space"))));
        assert!(mounts.contains(&(
            40,
            PathBuf::from("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/tls")
        )));
    }

    #[test]
    fn only_mounts_that_came_or_went_are_reported() {
        let before = mounts_of(TABLE);
        let mut now = before.clone();
        now.remove(&(41, PathBuf::from("/mnt/with space")));
        // A second tmpfs stacked on the same volume directory (kubelet remounts): new ID.
        now.insert((
            42,
            PathBuf::from("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/tls"),
        ));
        assert_eq!(
            changed_mount_points(&before, &now),
            vec![
                PathBuf::from("/mnt/with space"),
                PathBuf::from("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/tls"),
            ]
        );
        assert!(changed_mount_points(&before, &before).is_empty());
    }

    #[test]
    fn the_table_is_read_up_to_its_cap_and_refused_beyond() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = tmp.path().join("mountinfo");
        // A non-UTF-8 path does not spoil the rest of the table.
        let mut table = TABLE.as_bytes().to_vec();
        table.extend_from_slice(b"43 22 0:37 / /mnt/\xff rw - tmpfs tmpfs rw\n");
        std::fs::write(&path, &table).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_table(&path).map(|m| m.len()).ok(), Some(4));
        // One byte over the cap: refused with the limit named, not read whole.
        let line = "40 22 0:35 / /x rw - tmpfs tmpfs rw\n";
        let lines = usize::try_from(MAX_MOUNTINFO_BYTES).unwrap_or(usize::MAX) / line.len() + 1;
        std::fs::write(&path, line.repeat(lines)).unwrap_or_else(|e| panic!("{e}"));
        let err = read_table(&path).err().map(|e| (e.kind(), e.to_string()));
        let Some((kind, text)) = err else {
            panic!("a table over the cap was read")
        };
        assert_eq!(kind, std::io::ErrorKind::InvalidData);
        assert!(text.contains(&MAX_MOUNTINFO_BYTES.to_string()), "{text}");
    }

    #[test]
    fn escapes_that_are_not_octal_stay_as_written() {
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("a\\9zz"), "a\\9zz");
        assert_eq!(unescape("tail\\04"), "tail\\04");
    }
}

#[cfg(test)]
mod proptests;
