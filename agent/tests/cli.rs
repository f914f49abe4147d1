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

#[test]
fn status_names_itself_kubectl_mountlag_when_installed_as_the_plugin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin = dir.path().join("kubectl-mountlag");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_mountlag"), &plugin).expect("symlink");
    let help = Command::new(&plugin)
        .args(["status", "--help"])
        .output()
        .expect("spawn kubectl-mountlag");
    let stdout = String::from_utf8_lossy(&help.stdout);
    assert!(
        stdout.contains("Usage: kubectl mountlag status"),
        "{stdout}"
    );
    // As the plugin, `status` asks the cluster: without a kubeconfig, outside a cluster, one
    // line and exit 2.
    let out = Command::new(&plugin)
        .arg("status")
        .env("KUBECONFIG", dir.path().join("missing"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .expect("spawn kubectl-mountlag");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("kubectl mountlag status: no usable kubeconfig"),
        "{stderr}"
    );
}

#[test]
fn status_endpoint_and_cluster_flags_do_not_mix() {
    let out = mountlag(&["status", "--endpoint", "127.0.0.1:1", "--node", "node-a"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--endpoint"), "{stderr}");
}
