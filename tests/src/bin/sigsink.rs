//! `sigsink`: a stand-in controller for `testbed bench reload`. It installs a SIGHUP handler,
//! says `ready`, and prints the CLOCK_MONOTONIC time (ns) of every SIGHUP it receives, so the
//! bench can measure `..data` rename → signal delivered across processes.

use std::io::Write as _;

use nix::time::{ClockId, clock_gettime};
use tokio::signal::unix::{SignalKind, signal};

fn monotonic_ns() -> i128 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
        .unwrap_or_default()
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("sigsink: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut hups = match signal(SignalKind::hangup()) {
            Ok(hups) => hups,
            Err(err) => {
                eprintln!("sigsink: cannot handle SIGHUP: {err}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
        while hups.recv().await.is_some() {
            let _ = writeln!(out, "{}", monotonic_ns());
            let _ = out.flush();
        }
        std::process::ExitCode::SUCCESS
    })
}
