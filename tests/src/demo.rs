//! `testbed demo`: the node-side story on a stand-in node, for someone with no cluster.
//!
//! A kubelet stand-in projects a TLS Secret onto a real tmpfs; the real `mountlag` binary
//! inspects it; the certificate is rotated the way kubelet does it and mountlag's watcher
//! reports the new generation; broken material is flagged; a subPath mount is shown to keep the
//! old certificate. Every step checks what it shows; the demo exits non-zero if one misbehaved.

use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use mountlag::watch::{VolumeChange, VolumeWatcher, WatcherConfig};
use serde_json::Value;

use crate::certs::{IssuedLeaf, LeafSpec, TestCa};
use crate::kubelet::{FileProjection, KubeletStandIn, Payload, VolumeKind, WriteOutcome};
use crate::{agent, real};

const POD: &str = "7f8e1c2a-0000-4000-8000-00000000demo";

fn tls_payload(leaf: &IssuedLeaf) -> Payload {
    let mut payload = Payload::new();
    payload.insert(
        "tls.crt".into(),
        FileProjection::new(leaf.chain_pem.clone(), 0o644),
    );
    payload.insert(
        "tls.key".into(),
        FileProjection::new(leaf.key_pem.clone(), 0o600),
    );
    payload
}

fn colour() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdout().is_terminal()
}

fn heading(step: usize, text: &str) {
    if colour() {
        println!("\n\x1b[1m── {step}. {text}\x1b[0m");
    } else {
        println!("\n── {step}. {text}");
    }
}

fn ok(text: &str) {
    if colour() {
        println!("   \x1b[32m✓\x1b[0m {text}");
    } else {
        println!("   ✓ {text}");
    }
}

/// Runs `mountlag inspect --json` and `mountlag inspect` on `path`; prints the text view.
fn inspect(path: &Path) -> anyhow::Result<(i32, Value)> {
    let shown = path.to_str().context("non-UTF-8 path")?;
    let text = agent::run(&["inspect", shown]);
    for line in String::from_utf8_lossy(&text.stdout).lines() {
        println!("   │ {line}");
    }
    let json = agent::run(&["inspect", "--json", shown]);
    let report: Value = serde_json::from_slice(&json.stdout).context("inspect --json output")?;
    Ok((json.status.code().unwrap_or(-1), report))
}

fn leaf_fingerprint(report: &Value, file: &str) -> Option<String> {
    report["volumes"][0]["files"]
        .as_array()?
        .iter()
        .find(|f| f["path"] == file)?["certificates"][0]["fingerprintSha256"]
        .as_str()
        .map(str::to_owned)
}

fn problem_codes(report: &Value) -> Vec<String> {
    report["volumes"][0]["problems"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| Some(format!("{}:{}", p["file"].as_str()?, p["kind"].as_str()?)))
                .collect()
        })
        .unwrap_or_default()
}

pub fn run() -> anyhow::Result<()> {
    if let Err(why) = real::can_mount() {
        bail!("testbed demo mounts tmpfs volumes like kubelet and needs root: {why}");
    }
    println!(
        "mountlag demo: a stand-in node with a kubelet that writes Secrets the way kubelet does"
    );
    let kubelet = KubeletStandIn::in_tempdir()?;
    let ca = TestCa::new("demo ingress CA")?;
    let names = vec![
        "edge.example.com".to_string(),
        "www.example.com".to_string(),
    ];
    let v1 = ca.issue(&LeafSpec::valid_for(names.clone()))?;

    heading(
        1,
        "kubelet projects the Secret `edge-tls` into the ingress pod (tmpfs, AtomicWriter)",
    );
    let volume = kubelet.mount_volume(POD, VolumeKind::Secret, "tls")?;
    kubelet.write(&volume, &tls_payload(&v1), None)?;
    let (code, report) = inspect(&volume)?;
    if code != 0 || leaf_fingerprint(&report, "tls.crt").as_deref() != Some(&v1.fingerprint_sha256)
    {
        bail!("inspect did not report the healthy v1 certificate (exit {code})");
    }
    ok("inspect reads one generation, shows the leaf and that tls.key matches it (exit 0)");

    heading(
        2,
        "the certificate is renewed; kubelet swaps ..data; mountlag's watcher sees it",
    );
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let watcher = VolumeWatcher::new(
        WatcherConfig::default(),
        Box::new(move |change| {
            if let (VolumeChange::Generation { generation, .. }, Ok(tx)) = (change, tx.lock()) {
                let _ = tx.send((generation, Instant::now()));
            }
        }),
    )?;
    watcher.track(&volume)?;
    let v2 = ca.issue(&LeafSpec::valid_for(names.clone()))?;
    let started = Instant::now();
    let WriteOutcome::Written { generation } = kubelet.write(&volume, &tls_payload(&v2), None)?
    else {
        bail!("kubelet stand-in did not write the renewed certificate");
    };
    let (reported, seen) = rx
        .recv_timeout(Duration::from_secs(5))
        .context("the watcher reported nothing within 5 s")?;
    if reported.as_deref() != Some(generation.as_str()) {
        bail!("the watcher reported {reported:?}, kubelet published {generation}");
    }
    ok(&format!(
        "watcher reported generation {generation} {} µs after kubelet began writing",
        seen.duration_since(started).as_micros()
    ));
    let (code, report) = inspect(&volume)?;
    if code != 0 || leaf_fingerprint(&report, "tls.crt").as_deref() != Some(&v2.fingerprint_sha256)
    {
        bail!("inspect did not show the renewed certificate");
    }
    ok("inspect shows the new leaf fingerprint");

    heading(
        3,
        "broken material: a key that belongs to another certificate, and an expired leaf",
    );
    let other = ca.issue(&LeafSpec::valid_for(names.clone()))?;
    let mut broken = tls_payload(&v2);
    broken.insert(
        "tls.key".into(),
        FileProjection::new(other.key_pem.clone(), 0o600),
    );
    let expired = ca.issue(&LeafSpec {
        not_before: time::OffsetDateTime::now_utc() - time::Duration::days(60),
        not_after: time::OffsetDateTime::now_utc() - time::Duration::days(1),
        ..LeafSpec::valid_for(["old.example.com"])
    })?;
    broken.insert(
        "old.crt".into(),
        FileProjection::new(expired.cert_pem.clone(), 0o644),
    );
    broken.insert(
        "old.key".into(),
        FileProjection::new(expired.key_pem.clone(), 0o600),
    );
    kubelet.write(&volume, &broken, None)?;
    let (code, report) = inspect(&volume)?;
    let problems = problem_codes(&report);
    if code != 1
        || !problems.contains(&"tls.key:keyMismatch".to_string())
        || !problems.contains(&"old.crt:expired".to_string())
    {
        bail!("inspect did not flag the broken material (exit {code}, problems {problems:?})");
    }
    ok("inspect names tls.key (keyMismatch) and old.crt (expired) and exits 1");
    println!("     (the agent will withhold the reload on such material: next issues)");

    heading(
        4,
        "a container that mounts tls.crt through subPath never sees an update",
    );
    kubelet.write(&volume, &tls_payload(&v2), None)?;
    let pinned = kubelet.mount_subpath(POD, "tls", VolumeKind::Secret, "nginx", 0, "tls.crt")?;
    let v3 = ca.issue(&LeafSpec::valid_for(names))?;
    kubelet.write(&volume, &tls_payload(&v3), None)?;
    let pinned_pem = std::fs::read(&pinned).context("read the subPath bind mount")?;
    let current_pem = std::fs::read(volume.join("tls.crt")).context("read the volume")?;
    if pinned_pem != v2.chain_pem.as_bytes() || current_pem != v3.chain_pem.as_bytes() {
        bail!("the subPath bind mount did not behave like kubelet's");
    }
    ok(&format!(
        "{} still holds the old certificate while the volume holds the new one",
        pinned.display()
    ));
    println!("     (the agent will raise SubPathNeverUpdates for such containers: next issues)");

    drop(watcher);
    kubelet.teardown_pod(POD)?;
    println!("\ndemo finished: every step behaved as shown");
    Ok(())
}
