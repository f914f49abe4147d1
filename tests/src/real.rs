//! Honest skipping: tests that need a real part of the node say so, loudly.
//!
//! A test that needs something this machine may not offer (root, tmpfs mounts, nginx, HAProxy,
//! writable cgroups, ...) asks [`require`] first:
//!
//! ```no_run
//! use mountlag_testbed::real;
//! if !real::require("root + tmpfs", real::can_mount()) {
//!     return;
//! }
//! ```
//!
//! - Under `MOUNTLAG_REQUIRE_REAL=1` (set by the test script and CI) a missing part is a test
//!   failure: [`require`] panics with a message naming the part and why it is missing.
//! - Elsewhere the test prints `SKIPPED: <test>: <part>: <why>` to stderr and returns early, so a
//!   developer without root sees exactly what did not run instead of a silent green.

use std::path::Path;
use std::sync::OnceLock;

/// Name of the environment variable that turns a missing real part into a failure.
pub const REQUIRE_REAL_ENV: &str = "MOUNTLAG_REQUIRE_REAL";

/// True when `MOUNTLAG_REQUIRE_REAL=1` is set: missing real parts must fail tests.
pub fn real_required() -> bool {
    std::env::var(REQUIRE_REAL_ENV).is_ok_and(|v| v.trim() == "1")
}

/// Tests that need a real part (root, tmpfs mounts, nginx, ...) call this.
///
/// Returns `true` when `available` is `Ok`. Otherwise, under `MOUNTLAG_REQUIRE_REAL=1` it
/// panics with a clear message; without it, it prints a loud `SKIPPED: <test>: <part>: <why>`
/// to stderr and returns `false` (the caller then returns early).
pub fn require(part: &str, available: Result<(), String>) -> bool {
    let why = match available {
        Ok(()) => return true,
        Err(why) => why,
    };
    let current = std::thread::current();
    let test = current.name().unwrap_or("<unnamed test>");
    if real_required() {
        panic!(
            "{test}: requires {part}, which is unavailable: {why} \
             ({REQUIRE_REAL_ENV}=1 forbids skipping; run as root on a machine that has it)"
        );
    }
    // Written to fd 2 directly, not through `eprintln!`, so libtest's output capture does not
    // swallow it: a skip must be visible in a normal `cargo test` run.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test}: {part}: {why} (set {REQUIRE_REAL_ENV}=1 to make this a failure)"
    );
    false
}

/// `Ok` when this process is root and a trial tmpfs mount + unmount in a temp dir works.
///
/// The answer is computed once per process and cached.
pub fn can_mount() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER.get_or_init(probe_mount).clone()
}

fn probe_mount() -> Result<(), String> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return Err(format!("not running as root (euid {euid})"));
    }
    let dir = tempfile::Builder::new()
        .prefix("mountlag-can-mount-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
    trial_tmpfs(dir.path())
}

fn trial_tmpfs(target: &Path) -> Result<(), String> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .map_err(|e| format!("trial tmpfs mount on {} failed: {e}", target.display()))?;
    let probe = target.join("probe");
    let written = std::fs::write(&probe, b"ok");
    if let Err(e) = umount2(target, MntFlags::empty()) {
        // Do not leave the trial mount behind.
        let _ = umount2(target, MntFlags::MNT_DETACH);
        return Err(format!(
            "trial tmpfs unmount of {} failed: {e}",
            target.display()
        ));
    }
    written.map_err(|e| format!("cannot write into the trial tmpfs: {e}"))?;
    if probe.exists() {
        return Err(format!(
            "{} still shows the tmpfs content after unmount",
            target.display()
        ));
    }
    Ok(())
}

/// `Ok` when `promtool` (Debian package `prometheus`; tests/run installs it) runs.
pub fn promtool() -> Result<(), String> {
    match std::process::Command::new("promtool")
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("`promtool --version` failed: {}", out.status)),
        Err(err) => Err(format!(
            "promtool not found ({err}); install Debian package `prometheus`"
        )),
    }
}

/// Pipes a scrape through `promtool check metrics`: `Err` with promtool's findings (and the
/// scrape) unless it accepts it without a single lint finding.
pub fn promtool_check_metrics(scrape: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool: {e}"))?;
    let mut stdin = check.stdin.take().ok_or("promtool: no stdin")?;
    stdin
        .write_all(scrape.as_bytes())
        .map_err(|e| format!("promtool stdin: {e}"))?;
    drop(stdin);
    let out = check
        .wait_with_output()
        .map_err(|e| format!("promtool: {e}"))?;
    if out.status.success() && out.stdout.is_empty() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics: {}\n{}{}\n--- scrape ---\n{scrape}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        ))
    }
}
