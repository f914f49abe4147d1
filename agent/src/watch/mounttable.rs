//! Wakes up when the mount table changes, and (rarely) when nothing happened at all.
//!
//! The kernel flags `/proc/self/mountinfo` with `POLLPRI` on every mount and unmount in the
//! namespace; `poll` itself clears the flag. One thread blocks in `poll` on that file and on
//! one end of a socket pair; dropping the listener closes the other end, which ends the thread.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::RescanReason;

pub(super) struct MountTableListener {
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl MountTableListener {
    pub(super) fn start(
        mountinfo: &Path,
        safety_interval: Duration,
        on_change: impl Fn(RescanReason) + Send + 'static,
    ) -> std::io::Result<Self> {
        let table = File::open(mountinfo)?;
        let (stop, stopped) = UnixStream::pair()?;
        let timeout = PollTimeout::try_from(safety_interval).unwrap_or(PollTimeout::MAX);
        let thread = std::thread::Builder::new()
            .name("mountlag-mounttable".into())
            .spawn(move || listen(&table, &stopped, timeout, on_change))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

fn listen(
    table: &File,
    stopped: &UnixStream,
    timeout: PollTimeout,
    on_change: impl Fn(RescanReason),
) {
    loop {
        let mut fds = [
            PollFd::new(table.as_fd(), PollFlags::POLLPRI),
            PollFd::new(stopped.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Ok(0) => on_change(RescanReason::Safety),
            Ok(_) => {
                let stop = fds[1].revents().is_some_and(|r| !r.is_empty());
                if stop {
                    return;
                }
                let changed = fds[0]
                    .revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR));
                if changed {
                    on_change(RescanReason::MountTable);
                }
            }
            Err(Errno::EINTR) => {}
            Err(err) => {
                tracing::error!(error = %err, "cannot poll the mount table; mount changes are now seen only by the safety rescan");
                std::thread::sleep(timeout_duration(timeout));
                on_change(RescanReason::Safety);
            }
        }
    }
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
