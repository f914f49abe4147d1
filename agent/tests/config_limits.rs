//! Hostile config files against the real `mountlag check-config` binary: each one is refused with
//! an error that names the file and what was wrong, in bounded memory and CPU time.
//!
//! Peak memory is the largest `ru_maxrss` of the waited children (`getrusage(RUSAGE_CHILDREN)`),
//! which is a running maximum over every child this test binary ran; this file has one test,
//! so the only children are the `check-config` runs. CPU time (user + system) is used instead
//! of wall time, so a loaded machine does not fail the check.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};

/// The peak memory the issue allows a hostile config to cost (32 MiB).
const PEAK_RSS_LIMIT_KIB: i64 = 32 * 1024;
/// CPU per refusal; the measured figures (docs/security.md) are a few tens of milliseconds.
const CPU_LIMIT: Duration = Duration::from_secs(1);

struct Outcome {
    code: Option<i32>,
    stderr: String,
    cpu: Duration,
}

fn children_cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(usage.user_time()) + tv(usage.system_time())
}

fn children_peak_rss_kib() -> i64 {
    getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss()
}

fn check_config(path: &Path) -> Outcome {
    let before = children_cpu();
    let out = Command::new(env!("CARGO_BIN_EXE_mountlag"))
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap();
    Outcome {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        cpu: children_cpu().saturating_sub(before),
    }
}

/// Nested anchors, each a list of `width` aliases of the one before, `levels` deep, padded with
/// comments to about `size` bytes so the file is as large as the reported ones.
fn alias_bomb(levels: usize, width: usize, size: usize) -> Vec<u8> {
    let mut text = String::from(
        "controllers:\n  - name: a\n    selector: app=a\n    probe:\n      hosts: &h0 [\"lol\"]\n",
    );
    for level in 1..=levels {
        let items = vec![format!("*h{}", level - 1); width].join(", ");
        text.push_str(&format!("x{level}: &h{level} [{items}]\n"));
    }
    // Real events, not comments: serde_yaml's own replay brake grows with the event count.
    text.push_str("pad: [");
    while text.len() < size {
        text.push_str("p, ");
    }
    text.push_str("p]\n");
    text.push_str(&format!("bomb: *h{levels}\n"));
    text.into_bytes()
}

#[test]
fn hostile_config_files_are_refused_clearly_in_bounded_memory_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "alias-bomb-43k.yaml",
            alias_bomb(9, 10, 43 * 1024),
            &["config too large once expanded", "20000 YAML nodes"],
        ),
        (
            // Just under the file cap: the most events a file can carry, and a bomb.
            "alias-bomb-63k.yaml",
            alias_bomb(12, 12, 63 * 1024),
            &["config too large once expanded", "20000 YAML nodes"],
        ),
        (
            "alias-bomb-430k.yaml",
            alias_bomb(12, 12, 430 * 1024),
            &["config file is larger than 65536 bytes"],
        ),
        (
            // No aliases at all: the most plain events a file under the cap can hold.
            "many-events.yaml",
            format!("pad: [{}p]\n", "p,".repeat(32_000)).into_bytes(),
            &["config too large once expanded", "20000 YAML nodes"],
        ),
        (
            // One 60 KiB scalar repeated through aliases: few nodes, many bytes.
            "alias-bytes.yaml",
            format!(
                "big: &big {}\nmany: [*big, *big, *big, *big, *big, *big, *big, *big, *big, *big, *big, *big, *big, *big, *big, *big, *big, *big]\n",
                "x".repeat(60 * 1024)
            )
            .into_bytes(),
            &["config too large once expanded", "1 MiB"],
        ),
        (
            "deep-block.yaml",
            (0..300)
                .map(|depth| format!("{}k:\n", " ".repeat(depth)))
                .collect::<String>()
                .into_bytes(),
            &["invalid YAML"],
        ),
        (
            "deep-flow.yaml",
            format!("controllers: {}\n", "[".repeat(60_000)).into_bytes(),
            &["invalid YAML", "nested more than 32 levels"],
        ),
        (
            // A scalar just under the file cap: parsed, then refused as a bad value.
            "huge-scalar.yaml",
            format!("stuckAfter: {}\n", "9".repeat(60_000)).into_bytes(),
            &["stuckAfter", "invalid duration"],
        ),
        (
            "oversized.yaml",
            format!("# {}\n", "x".repeat(1 << 20)).into_bytes(),
            &["config file is larger than 65536 bytes"],
        ),
        (
            "not-utf8.yaml",
            b"stuckAfter: 2m\ncontrollers:\n  - name: \xff\xfe\x00bad\n".to_vec(),
            &["not-utf8.yaml:3:", "not valid UTF-8"],
        ),
    ];

    let mut report = Vec::new();
    for (name, bytes, expected) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let outcome = check_config(&path);
        let peak = children_peak_rss_kib();
        report.push(format!(
            "{name}: {} bytes, exit {:?}, cpu {:?}, peak rss so far {} KiB",
            bytes.len(),
            outcome.code,
            outcome.cpu,
            peak
        ));
        assert_eq!(
            outcome.code,
            Some(1),
            "{name}: check-config must refuse it with exit 1; stderr: {}",
            outcome.stderr
        );
        assert!(
            outcome.stderr.contains(name),
            "{name}: the error names the file: {}",
            outcome.stderr
        );
        for needle in *expected {
            assert!(
                outcome.stderr.contains(needle),
                "{name}: the error says {needle:?}: {}",
                outcome.stderr
            );
        }
        assert!(
            outcome.stderr.len() < 4096,
            "{name}: the error is short, not an echo of the input ({} bytes)",
            outcome.stderr.len()
        );
        assert!(
            outcome.cpu < CPU_LIMIT,
            "{name}: refused within {CPU_LIMIT:?} of CPU, took {:?}",
            outcome.cpu
        );
        assert!(
            peak < PEAK_RSS_LIMIT_KIB,
            "{name}: peak memory {peak} KiB, limit {PEAK_RSS_LIMIT_KIB} KiB\n{}",
            report.join("\n")
        );
    }
    eprintln!("{}", report.join("\n"));
}
