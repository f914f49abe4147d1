//! `testbed demo` — the README's "run it" command — runs to completion and exits 0.

use std::process::Command;

use mountlag_testbed::{controllers, real};

#[test]
fn the_demo_runs_to_completion_and_every_step_behaves() {
    if !real::require("root + tmpfs", real::can_mount())
        || !real::require(
            "nginx",
            controllers::available(controllers::ControllerKind::Nginx),
        )
    {
        return;
    }
    // The demo looks for the agent binary next to itself.
    let _ = mountlag_testbed::agent::binary();
    let out = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .arg("demo")
        .output()
        .expect("run testbed demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for shown in [
        "ControllerReloaded",
        "SecretMountStuck",
        "SecretMountRecovered",
        "InvalidCertificateMaterial",
        "SubPathNeverUpdates",
        "ServedCertificateMismatch",
        "CertificateExpiringSoon",
        "0 failed",
        "every step behaved as shown",
    ] {
        assert!(stdout.contains(shown), "the demo shows {shown}:\n{stdout}");
    }
}
