//! `mountlag inspect` (the real binary) against volumes that are not what kubelet writes: a
//! symlink loop, `..data` pointing out of the volume or at nothing, a FIFO or a device named
//! `tls.crt`, a 2 GiB sparse `tls.crt`, thousands of keys. Each is a problem naming the file and
//! exit status 1 (docs/inspect.md), within a deadline: the child is killed and the test fails if
//! it hangs. Nothing outside the volume is read.
//!
//! The volumes are written by kubelet's AtomicWriter stand-in on a plain directory, in kubelet's
//! layout, then damaged. Device nodes need CAP_MKNOD (the tests run as root, as CI does).

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mountlag_testbed::certs::{IssuedLeaf, LeafSpec, TestCa, secret_bytes_markers};
use mountlag_testbed::kubelet::{FileProjection, Payload, VolumeKind, atomic_write};
use mountlag_testbed::{agent, real};
use serde_json::Value;

/// How long one `inspect` may take (a debug build on a busy machine; each takes well under 5 s).
const DEADLINE: Duration = Duration::from_secs(60);

/// What one run printed, and how it ended.
struct Run {
    code: i32,
    stdout: String,
    took: Duration,
}

/// Runs `mountlag ARGS...` with its output in files (a full pipe must not look like a hang),
/// killing it and failing the test when it outlives [`DEADLINE`].
fn inspect(args: &[&str]) -> Run {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let mut child = Command::new(agent::binary())
        .arg("inspect")
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .spawn()
        .expect("spawn mountlag");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mountlag inspect {args:?} still running after {DEADLINE:?}: it hangs; stderr: {}",
                std::fs::read_to_string(err.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code().expect("exited, not killed"),
        stdout: std::fs::read_to_string(out.path()).unwrap(),
        took: started.elapsed(),
    }
}

/// A kubelet-shaped root in a temporary directory, and a certificate to put in volumes.
struct Node {
    dir: tempfile::TempDir,
    leaf: IssuedLeaf,
}

impl Node {
    fn new() -> Node {
        let ca = TestCa::new("hostile volumes CA").unwrap();
        let leaf = ca
            .issue(&LeafSpec::valid_for(["edge.example.com"]))
            .unwrap();
        Node {
            dir: tempfile::Builder::new()
                .prefix("mountlag-hostile-")
                .tempdir()
                .unwrap(),
            leaf,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("kubelet")
    }

    /// A secret volume of pod `uid` written by AtomicWriter with `tls.crt` and `tls.key`;
    /// returns it and its generation directory.
    fn volume(&self, uid: &str) -> (PathBuf, PathBuf) {
        let volume = self
            .root()
            .join("pods")
            .join(uid)
            .join("volumes")
            .join(VolumeKind::Secret.dir_name())
            .join("tls");
        std::fs::create_dir_all(&volume).unwrap();
        let payload: Payload = [
            ("tls.crt", self.leaf.chain_pem.as_bytes()),
            ("tls.key", self.leaf.key_pem.as_bytes()),
        ]
        .into_iter()
        .map(|(name, data)| (name.to_string(), FileProjection::new(data, 0o644)))
        .collect();
        let outcome = atomic_write(&volume, &payload, None).unwrap();
        let generation = volume.join(outcome.generation().unwrap());
        (volume, generation)
    }

    /// Runs text and JSON inspect on `path`: both exit alike, within the deadline, and print no
    /// byte of the key.
    fn inspect(&self, path: &Path) -> (i32, String, Value) {
        let shown = path.to_str().unwrap();
        let text = inspect(&[shown]);
        let json = inspect(&["--json", shown]);
        assert_eq!(text.code, json.code, "text and JSON exit alike");
        eprintln!("{shown}: {:?}", text.took);
        for marker in secret_bytes_markers(&self.leaf.key_pem) {
            assert!(
                !text.stdout.contains(&marker),
                "key bytes in: {}",
                text.stdout
            );
            assert!(
                !json.stdout.contains(&marker),
                "key bytes in: {}",
                json.stdout
            );
        }
        let report = serde_json::from_str(&json.stdout)
            .unwrap_or_else(|e| panic!("--json is JSON ({e}): {}", json.stdout));
        (text.code, text.stdout, report)
    }
}

/// The problems of the one volume of a report, as `file: code`.
fn problem_codes(report: &Value) -> Vec<String> {
    report["volumes"][0]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                p["file"].as_str().unwrap_or("(volume)"),
                p["kind"].as_str().unwrap()
            )
        })
        .collect()
}

fn assert_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l.trim_start() == line),
        "no line {line:?} in:\n{text}"
    );
}

#[test]
fn a_symlink_loop_is_reported_and_never_followed() {
    let node = Node::new();
    let (volume, generation) = node.volume("loop");
    symlink("b", generation.join("a")).unwrap();
    symlink("a", generation.join("b")).unwrap();
    symlink("loop", volume.join("loop")).unwrap();
    let (code, text, report) = node.inspect(&volume);
    assert_eq!(code, 1, "{text}");
    assert_line(
        &text,
        "✗ a: notRegularFile: symlink inside the generation directory; kubelet never writes one, not followed",
    );
    assert_line(
        &text,
        "✗ loop: unexpectedEntry: symlink to loop, not into ..data",
    );
    assert!(problem_codes(&report).contains(&"b: notRegularFile".to_string()));
    // The real files beside the loop are still read.
    assert!(text.contains(&node.leaf.fingerprint_sha256), "{text}");
}

#[test]
fn a_data_link_out_of_the_volume_or_at_nothing_is_refused_and_nothing_outside_is_read() {
    let node = Node::new();
    let outside_ca = TestCa::new("outside CA").unwrap();
    let outside_leaf = outside_ca
        .issue(&LeafSpec::valid_for(["outside.example.com"]))
        .unwrap();
    let outside = node.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("tls.crt"), &outside_leaf.chain_pem).unwrap();
    for (uid, target) in [
        ("relative", "../../../../../../outside".to_string()),
        ("absolute", outside.to_string_lossy().into_owned()),
        ("parent", "..".to_string()),
    ] {
        let (volume, _) = node.volume(uid);
        std::fs::remove_file(volume.join("..data")).unwrap();
        symlink(&target, volume.join("..data")).unwrap();
        let (code, text, report) = node.inspect(&volume);
        assert_eq!(code, 1, "{text}");
        assert_line(
            &text,
            &format!(
                "✗ ..data: symlinkEscapesVolume: ..data points to \"{target}\", not to a generation directory in the volume"
            ),
        );
        assert_eq!(report["volumes"][0]["files"], Value::Array(Vec::new()));
        let json = report.to_string();
        for output in [&text, &json] {
            assert!(
                !output.contains(&outside_leaf.fingerprint_sha256),
                "{output}"
            );
            assert!(!output.contains("outside.example.com"), "{output}");
        }
    }
    // A generation that is not there (regression: this was "..data moved during each of 8
    // reads; the volume is being rewritten").
    let (volume, generation) = node.volume("missing");
    std::fs::remove_dir_all(&generation).unwrap();
    let name = generation.file_name().unwrap().to_str().unwrap();
    let (code, text, _) = node.inspect(&volume);
    assert_eq!(code, 1, "{text}");
    assert_line(
        &text,
        &format!(
            "✗ ..data: danglingSymlink: ..data points to {name}, which is not in the volume; kubelet publishes a generation only once it is written"
        ),
    );
}

#[test]
fn a_fifo_named_tls_crt_is_refused_without_blocking() {
    let node = Node::new();
    let (volume, generation) = node.volume("fifo");
    std::fs::remove_file(generation.join("tls.crt")).unwrap();
    nix::unistd::mkfifo(
        &generation.join("tls.crt"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let (code, text, report) = node.inspect(&volume);
    assert_eq!(code, 1, "{text}");
    assert_line(
        &text,
        "✗ tls.crt: notRegularFile: a named pipe (FIFO), not a regular file; not read",
    );
    assert!(problem_codes(&report).contains(&"tls.crt: notRegularFile".to_string()));
}

#[test]
fn a_device_named_tls_crt_is_refused_and_never_read() {
    if !real::require("root (CAP_MKNOD)", can_mknod()) {
        return;
    }
    let node = Node::new();
    let (volume, generation) = node.volume("device");
    std::fs::remove_file(generation.join("tls.crt")).unwrap();
    // /dev/zero's numbers: a reader that opened it as a file would read forever.
    nix::sys::stat::mknod(
        &generation.join("tls.crt"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
        nix::sys::stat::makedev(1, 5),
    )
    .unwrap();
    let (code, text, _) = node.inspect(&volume);
    assert_eq!(code, 1, "{text}");
    assert_line(
        &text,
        "✗ tls.crt: notRegularFile: a character device, not a regular file; not read",
    );
}

fn can_mknod() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    nix::sys::stat::mknod(
        &dir.path().join("probe"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 3),
    )
    .map_err(|e| format!("mknod: {e}"))
}

#[test]
fn a_two_gib_sparse_tls_crt_is_refused_by_its_size_and_not_read() {
    let node = Node::new();
    let (volume, generation) = node.volume("sparse");
    std::fs::File::options()
        .write(true)
        .truncate(true)
        .open(generation.join("tls.crt"))
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let (code, text, report) = node.inspect(&volume);
    assert_eq!(code, 1, "{text}");
    assert_line(
        &text,
        "✗ tls.crt: fileTooLarge: 2147483648 bytes, over the 1048576-byte limit of a Secret; not read",
    );
    let file = &report["volumes"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "tls.crt")
        .unwrap()
        .clone();
    assert_eq!(file["size"], 2u64 << 30);
    assert_eq!(file["sha256"], Value::Null);
}

#[test]
fn thousands_of_keys_are_read_and_past_the_limit_refused_clearly() {
    let node = Node::new();
    // 5,000 files: 2,500 certificate and key pairs, read and paired.
    let (volume, generation) = node.volume("many");
    for i in 0..2_500 {
        std::fs::write(
            generation.join(format!("site-{i}.crt")),
            &node.leaf.chain_pem,
        )
        .unwrap();
        std::fs::write(generation.join(format!("site-{i}.key")), &node.leaf.key_pem).unwrap();
        for ext in ["crt", "key"] {
            let name = format!("site-{i}.{ext}");
            symlink(format!("..data/{name}"), volume.join(&name)).unwrap();
        }
    }
    let (code, text, report) = node.inspect(&volume);
    assert_eq!(code, 0, "{}", &text[text.len().saturating_sub(500)..]);
    assert!(text.ends_with("1 volume(s), 0 problem(s): healthy\n"));
    assert_eq!(
        report["volumes"][0]["files"].as_array().unwrap().len(),
        5_002
    );
    assert_eq!(
        report["volumes"][0]["keyPairs"].as_array().unwrap().len(),
        2_501
    );

    // 12,000 entries: the first 10,000 are read, and the volume says the rest was not.
    let (volume, generation) = node.volume("too-many");
    for i in 0..12_000 {
        let name = format!("k{i:05}");
        std::fs::write(generation.join(&name), b"x").unwrap();
        symlink(format!("..data/{name}"), volume.join(&name)).unwrap();
    }
    let (code, text, report) = node.inspect(&volume);
    assert_eq!(code, 1);
    assert_line(
        &text,
        "✗ (volume): tooManyEntries: more than 10000 entries; the rest was not read",
    );
    assert_eq!(problem_codes(&report), ["(volume): tooManyEntries"]);
}

#[test]
fn every_hostile_volume_of_a_node_is_listed_with_its_problem() {
    let node = Node::new();
    let (good, _) = node.volume("good");
    let (_, generation) = node.volume("fifo");
    std::fs::remove_file(generation.join("tls.crt")).unwrap();
    nix::unistd::mkfifo(
        &generation.join("tls.crt"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let (volume, _) = node.volume("escape");
    std::fs::remove_file(volume.join("..data")).unwrap();
    symlink("/", volume.join("..data")).unwrap();
    let (_, generation) = node.volume("sparse");
    std::fs::File::options()
        .write(true)
        .open(generation.join("tls.crt"))
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let (code, text, report) = node.inspect(&node.root());
    assert_eq!(code, 1, "{text}");
    let volumes = report["volumes"].as_array().unwrap();
    let by_pod = |uid: &str| {
        volumes
            .iter()
            .find(|v| v["podUid"] == uid)
            .unwrap_or_else(|| panic!("{uid} not listed: {text}"))
    };
    assert_eq!(by_pod("good")["problems"], Value::Array(Vec::new()));
    assert_eq!(by_pod("good")["path"], good.to_str().unwrap());
    for (uid, kind) in [
        ("fifo", "notRegularFile"),
        ("escape", "symlinkEscapesVolume"),
        ("sparse", "fileTooLarge"),
    ] {
        let kinds: Vec<&str> = by_pod(uid)["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["kind"].as_str().unwrap())
            .collect();
        assert!(kinds.contains(&kind), "{uid}: {kinds:?}");
    }
    let summary = text.lines().last().unwrap();
    assert!(
        summary.starts_with("4 volume(s), ") && summary.ends_with(": UNHEALTHY"),
        "{summary}"
    );
}
