//! The real `mountlag` binary, as end-to-end tests run it.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Path of the `mountlag` binary of this workspace's build, built on first use if missing.
///
/// `cargo test --workspace` builds it already (the agent package has integration tests); the
/// fallback covers `cargo test -p mountlag-testbed`, where cargo builds no other package's
/// binaries. `MOUNTLAG_BIN` overrides both.
pub fn binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(locate_or_build).clone()
}

fn locate_or_build() -> PathBuf {
    if let Ok(path) = std::env::var("MOUNTLAG_BIN") {
        return PathBuf::from(path);
    }
    // Binaries live in target/<profile>/, test executables one level down in deps/.
    let exe = std::env::current_exe().expect("current_exe");
    let exe_dir = exe
        .parent()
        .expect("executable in a directory")
        .to_path_buf();
    let profile_dir = if exe_dir.file_name().is_some_and(|n| n == "deps") {
        exe_dir.parent().expect("target/<profile>").to_path_buf()
    } else {
        exe_dir
    };
    let candidate = profile_dir.join("mountlag");
    if candidate.exists() {
        return candidate;
    }
    // `cargo test` holds the lock on this target dir while tests run: build into another one.
    let target = profile_dir
        .parent()
        .expect("target dir")
        .join("testbed-agent");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .args(["build", "--quiet", "-p", "mountlag", "--bin", "mountlag"])
        .env("CARGO_TARGET_DIR", &target);
    if release {
        build.arg("--release");
    }
    let status = build
        .status()
        .expect("run cargo build for the mountlag binary");
    assert!(status.success(), "cargo build -p mountlag failed");
    let built = target
        .join(if release { "release" } else { "debug" })
        .join("mountlag");
    assert!(built.exists(), "{} missing after build", built.display());
    built
}

/// Runs `mountlag ARGS...` to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env("RUST_LOG", "debug")
        .output()
        .expect("spawn mountlag")
}
