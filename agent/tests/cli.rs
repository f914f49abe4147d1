//! The command line contract that scripts rely on: exit statuses and usage errors.

use std::process::Command;

fn mountlag(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mountlag"))
        .args(args)
        .output()
        .expect("spawn mountlag")
}

#[test]
fn inspect_without_a_path_is_a_usage_error() {
    let out = mountlag(&["inspect"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PATH"));
}

#[test]
fn inspect_of_a_missing_path_is_a_usage_error_naming_it() {
    let out = mountlag(&["inspect", "/nonexistent/mountlag-test-path"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/mountlag-test-path"),
        "{stderr}"
    );
}

#[test]
fn inspect_of_a_directory_that_is_not_kubelets_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = mountlag(&["inspect", dir.path().to_str().expect("utf-8 temp path")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a kubelet volume"));
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    assert_eq!(mountlag(&["frobnicate"]).status.code(), Some(2));
}
