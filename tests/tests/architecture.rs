//! The architecture is a build fact, not a doc comment: `mountlag-core` (the pure model) depends
//! on no async runtime, Kubernetes client, system-call, file-watch, HTTP or TLS-I/O crate, and
//! its non-test code touches neither the file system, the network nor the clock.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates whose presence in the core would mean it does I/O, waits, or reads Kubernetes types.
const FORBIDDEN_CRATES: &[&str] = &[
    "tokio",
    "tokio-rustls",
    "tokio-util",
    "kube",
    "kube-client",
    "kube-runtime",
    "k8s-openapi",
    "nix",
    "rustix",
    "notify",
    "inotify",
    "hyper",
    "hyper-util",
    "hyper-rustls",
    "axum",
    "tower",
    "reqwest",
    "mio",
    "serde_yaml",
];

/// Text in the core's non-test code that would mean it reaches outside its arguments.
const FORBIDDEN_TEXT: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "std::env",
    "std::thread",
    "Instant::now",
    "SystemTime::now",
    "now_utc",
    "tokio::",
];

fn repo() -> PathBuf {
    mountlag_testbed::repo::root()
}

/// `(name, version)` of every crate in the core's normal dependency tree.
fn core_dependencies() -> Vec<(String, String)> {
    let output = Command::new(env!("CARGO"))
        .current_dir(repo())
        .args([
            "tree",
            "-p",
            "mountlag-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
            "--locked",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).unwrap();
    tree.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

#[test]
fn the_core_depends_on_no_io_runtime_or_kubernetes_crate() {
    let dependencies = core_dependencies();
    assert!(
        dependencies.iter().any(|(name, _)| name == "mountlag-core"),
        "cargo tree did not list the core itself: {dependencies:?}"
    );
    assert!(
        dependencies.iter().any(|(name, _)| name == "x509-parser"),
        "cargo tree did not list the core's dependencies: {dependencies:?}"
    );
    let forbidden: Vec<&(String, String)> = dependencies
        .iter()
        .filter(|(name, _)| FORBIDDEN_CRATES.contains(&name.as_str()))
        .collect();
    assert!(
        forbidden.is_empty(),
        "mountlag-core must stay pure; it now depends on {forbidden:?}"
    );
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The part of a source file that is not a test: everything before its `#[cfg(test)]` module;
/// nothing for a file that is a test module of its own (`tests.rs`).
fn non_test_code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let cut = text.find("#[cfg(test)]\n#[allow(clippy::unwrap_used)]\nmod ");
    let cut = cut.or_else(|| text.find("#[cfg(test)]\nmod "));
    text[..cut.unwrap_or(text.len())].to_string()
}

#[test]
fn the_core_reads_no_file_socket_environment_or_clock() {
    let files = sources(&repo().join("core/src"));
    assert!(files.len() > 5, "core sources not found: {files:?}");
    let mut found = Vec::new();
    for file in &files {
        let code = non_test_code(file);
        for (number, line) in code.lines().enumerate() {
            let code_part = line.split("//").next().unwrap_or("");
            for needle in FORBIDDEN_TEXT {
                if code_part.contains(needle) {
                    found.push(format!("{}:{}: {needle}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the core takes time and data as arguments; found:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_finds_what_it_looks_for() {
    // The check above is only as good as its reading of a file: a forbidden call before the
    // test module is seen, one inside it is not.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.rs");
    std::fs::write(
        &file,
        "fn f() { let _ = std::time::Instant::now(); }\n#[cfg(test)]\nmod tests { fn g() { std::fs::read(\"x\"); } }\n",
    )
    .unwrap();
    let code = non_test_code(&file);
    assert!(code.contains("Instant::now"));
    assert!(!code.contains("std::fs"));
}
