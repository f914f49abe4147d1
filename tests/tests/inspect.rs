//! `mountlag inspect` (the real binary) against volumes the kubelet stand-in wrote on tmpfs.
//!
//! Expected digests and fingerprints are computed here, independently, from the payload bytes.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Output;

use mountlag_testbed::certs::{IssuedLeaf, KeyType, LeafSpec, TestCa, secret_bytes_markers};
use mountlag_testbed::kubelet::{
    FileProjection, KubeletStandIn, Payload, VolumeKind, WriteOutcome,
};
use mountlag_testbed::{agent, real};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

struct Node {
    _dir: tempfile::TempDir,
    kubelet: KubeletStandIn,
    ca: TestCa,
    /// Every key written, to prove none of it is ever printed.
    keys: std::cell::RefCell<Vec<String>>,
}

fn node() -> Option<Node> {
    if !real::require("root + tmpfs", real::can_mount()) {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("mountlag-inspect-")
        .tempdir()
        .unwrap();
    let kubelet = KubeletStandIn::new(dir.path().join("kubelet")).unwrap();
    Some(Node {
        _dir: dir,
        kubelet,
        ca: TestCa::new("inspect test CA").unwrap(),
        keys: Default::default(),
    })
}

impl Node {
    fn leaf(&self, spec: LeafSpec) -> IssuedLeaf {
        let leaf = self.ca.issue(&spec).unwrap();
        self.keys.borrow_mut().push(leaf.key_pem.clone());
        leaf
    }

    fn volume(
        &self,
        pod: &str,
        kind: VolumeKind,
        name: &str,
        payload: &Payload,
    ) -> std::path::PathBuf {
        let dir = self.kubelet.mount_volume(pod, kind, name).unwrap();
        self.kubelet.write(&dir, payload, None).unwrap();
        dir
    }

    /// Runs text and JSON inspect; asserts both agree on the exit status and leak no key bytes.
    fn inspect(&self, path: &Path) -> (i32, Value, String) {
        let shown = path.to_str().unwrap();
        let text = agent::run(&["inspect", shown]);
        let json = agent::run(&["inspect", "--json", shown]);
        assert_eq!(
            text.status.code(),
            json.status.code(),
            "text and JSON exit alike"
        );
        self.assert_no_key_bytes(&text);
        self.assert_no_key_bytes(&json);
        let report: Value = serde_json::from_slice(&json.stdout).unwrap_or_else(|e| {
            panic!(
                "--json is JSON ({e}): {}",
                String::from_utf8_lossy(&json.stdout)
            )
        });
        (
            json.status.code().unwrap(),
            report,
            String::from_utf8_lossy(&text.stdout).into_owned(),
        )
    }

    fn assert_no_key_bytes(&self, out: &Output) {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for key in self.keys.borrow().iter() {
            for marker in secret_bytes_markers(key) {
                assert!(
                    !all.contains(&marker),
                    "key bytes in inspect output: {marker}"
                );
            }
        }
    }
}

fn tls(leaf: &IssuedLeaf) -> Payload {
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

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn file<'a>(report: &'a Value, path: &str) -> &'a Value {
    report["volumes"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("no file {path} in {report:#}"))
}

fn problems(report: &Value) -> Vec<(String, String)> {
    report["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v["problems"].as_array().unwrap().iter())
        .map(|p| {
            (
                p["file"].as_str().unwrap_or("").to_string(),
                p["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pair(file: &str, kind: &str) -> (String, String) {
    (file.to_string(), kind.to_string())
}

#[test]
fn a_plain_secret_volume_is_reported_with_independent_digests() {
    let Some(node) = node() else { return };
    let leaf = node.leaf(LeafSpec::valid_for(["edge.example.com", "www.example.com"]));
    let payload = tls(&leaf);
    let dir = node
        .kubelet
        .mount_volume("pod-plain", VolumeKind::Secret, "tls")
        .unwrap();
    let WriteOutcome::Written { generation } = node.kubelet.write(&dir, &payload, None).unwrap()
    else {
        panic!("first write publishes a generation");
    };
    let (code, report, text) = node.inspect(&dir);
    assert_eq!(code, 0, "{text}");
    assert_eq!(report["healthy"], true);
    let volume = &report["volumes"][0];
    assert_eq!(volume["podUid"], "pod-plain");
    assert_eq!(volume["kind"], "secret");
    assert_eq!(volume["name"], "tls");
    assert_eq!(volume["state"], "written");
    assert_eq!(volume["generation"], generation.as_str());
    for (name, projection) in &payload {
        let f = file(&report, name);
        assert_eq!(f["sha256"], sha256(&projection.data).as_str(), "{name}");
        assert_eq!(f["size"], projection.data.len());
        assert_eq!(f["mode"], format!("{:04o}", projection.mode).as_str());
    }
    let crt = file(&report, "tls.crt");
    let cert = &crt["certificates"][0];
    assert_eq!(cert["fingerprintSha256"], leaf.fingerprint_sha256.as_str());
    assert_eq!(cert["serial"], leaf.serial_hex.as_str());
    assert_eq!(
        cert["dnsNames"],
        serde_json::json!(["edge.example.com", "www.example.com"])
    );
    assert_eq!(crt["chainLength"], 2, "leaf + CA");
    assert!(cert["daysToExpiry"].as_i64().unwrap() >= 89);
    assert_eq!(
        volume["keyPairs"],
        serde_json::json!([{"keyFile": "tls.key", "certFile": "tls.crt", "matches": true}])
    );
    assert!(text.contains(&leaf.fingerprint_sha256), "{text}");
    assert!(text.contains("matches tls.crt"), "{text}");
}

#[test]
fn a_projected_volume_with_items_and_nested_paths() {
    let Some(node) = node() else { return };
    let ec384 =
        node.leaf(LeafSpec::valid_for(["api.example.com"]).with_key_type(KeyType::EcdsaP384));
    let rsa = node.leaf(LeafSpec::valid_for(["rsa.example.com"]).with_key_type(KeyType::Rsa2048));
    let ed = node.leaf(LeafSpec::valid_for(["ed.example.com"]).with_key_type(KeyType::Ed25519));
    let mut payload = Payload::new();
    payload.insert(
        "certs/api/tls.crt".into(),
        FileProjection::new(ec384.chain_pem.clone(), 0o644),
    );
    payload.insert(
        "certs/api/tls.key".into(),
        FileProjection::new(ec384.key_pem.clone(), 0o400),
    );
    payload.insert(
        "haproxy/site.pem".into(),
        FileProjection::new(rsa.chain_pem.clone(), 0o644),
    );
    payload.insert(
        "haproxy/site.pem.key".into(),
        FileProjection::new(rsa.key_pem.clone(), 0o400),
    );
    let bundle = format!("{}{}", ed.key_pem, ed.chain_pem);
    payload.insert(
        "bundle.pem".into(),
        FileProjection::new(bundle.clone(), 0o640),
    );
    payload.insert(
        "ca.crt".into(),
        FileProjection::new(node.ca.cert_pem(), 0o644),
    );
    let dir = node.volume("pod-proj", VolumeKind::Projected, "certs", &payload);
    // kubelet makes one root link per first path component.
    assert_eq!(
        std::fs::read_link(dir.join("certs")).unwrap(),
        Path::new("..data/certs")
    );

    let (code, report, text) = node.inspect(&dir);
    assert_eq!(code, 0, "{text}");
    assert_eq!(report["volumes"][0]["kind"], "projected");
    for (name, projection) in &payload {
        assert_eq!(
            file(&report, name)["sha256"],
            sha256(&projection.data).as_str(),
            "{name}"
        );
    }
    assert_eq!(file(&report, "certs/api/tls.key")["mode"], "0400");
    assert_eq!(
        file(&report, "certs/api/tls.key")["privateKey"]["algorithm"],
        "ecdsaP384"
    );
    assert_eq!(
        file(&report, "haproxy/site.pem.key")["privateKey"]["algorithm"],
        "rsa"
    );
    assert_eq!(
        file(&report, "bundle.pem")["privateKey"]["algorithm"],
        "ed25519"
    );
    assert_eq!(
        file(&report, "bundle.pem")["certificates"][0]["fingerprintSha256"],
        ed.fingerprint_sha256.as_str()
    );
    let pairs = &report["volumes"][0]["keyPairs"];
    assert_eq!(
        *pairs,
        serde_json::json!([
            {"keyFile": "bundle.pem", "certFile": "bundle.pem", "matches": true},
            {"keyFile": "certs/api/tls.key", "certFile": "certs/api/tls.crt", "matches": true},
            {"keyFile": "haproxy/site.pem.key", "certFile": "haproxy/site.pem", "matches": true},
        ])
    );
    assert!(
        problems(&report).is_empty(),
        "a CA bundle alone is not a problem"
    );
}

#[test]
fn an_empty_optional_secret_and_a_volume_not_yet_written_are_healthy() {
    let Some(node) = node() else { return };
    let empty = node.volume("pod-empty", VolumeKind::Secret, "optional", &Payload::new());
    let pending = node
        .kubelet
        .mount_volume("pod-empty", VolumeKind::Secret, "pending")
        .unwrap();
    let (code, report, text) = node.inspect(&node.kubelet.pod_dir("pod-empty"));
    assert_eq!(code, 0, "{text}");
    let volumes = report["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 2);
    let by_name = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap();
    assert_eq!(by_name("optional")["state"], "empty");
    assert!(by_name("optional")["generation"].is_string());
    assert_eq!(by_name("optional")["path"], empty.to_str().unwrap());
    assert_eq!(by_name("pending")["state"], "notWritten");
    assert_eq!(by_name("pending")["generation"], Value::Null);
    assert_eq!(by_name("pending")["path"], pending.to_str().unwrap());
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_a_problem() {
    let Some(node) = node() else { return };
    let a = node.leaf(LeafSpec::valid_for(["a.example.com"]));
    let b = node.leaf(LeafSpec::valid_for(["a.example.com"]));
    let mut payload = tls(&a);
    payload.insert(
        "tls.key".into(),
        FileProjection::new(b.key_pem.clone(), 0o600),
    );
    let dir = node.volume("pod-mismatch", VolumeKind::Secret, "tls", &payload);
    let (code, report, text) = node.inspect(&dir);
    assert_eq!(code, 1, "{text}");
    assert_eq!(problems(&report), vec![pair("tls.key", "keyMismatch")]);
    assert_eq!(report["healthy"], false);
    assert!(text.contains("tls.key: keyMismatch"), "{text}");
}

#[test]
fn an_expired_leaf_is_a_problem() {
    let Some(node) = node() else { return };
    let now = OffsetDateTime::now_utc();
    let leaf = node.leaf(
        LeafSpec::valid_for(["old.example.com"])
            .with_validity(now - Duration::days(30), now - Duration::days(2)),
    );
    let dir = node.volume("pod-expired", VolumeKind::Secret, "tls", &tls(&leaf));
    let (code, report, text) = node.inspect(&dir);
    assert_eq!(code, 1, "{text}");
    assert_eq!(problems(&report), vec![pair("tls.crt", "expired")]);
    let cert = &file(&report, "tls.crt")["certificates"][0];
    assert_eq!(cert["validity"], "expired");
    assert!(cert["daysToExpiry"].as_i64().unwrap() <= -2);
}

#[test]
fn unparsable_pem_is_a_problem_naming_the_file() {
    let Some(node) = node() else { return };
    let leaf = node.leaf(LeafSpec::valid_for(["x.example.com"]));
    let mut payload = tls(&leaf);
    payload.insert(
        "tls.crt".into(),
        FileProjection::new(
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
            0o644,
        ),
    );
    let dir = node.volume("pod-garbage", VolumeKind::Secret, "tls", &payload);
    let (code, report, _) = node.inspect(&dir);
    assert_eq!(code, 1);
    assert_eq!(problems(&report), vec![pair("tls.crt", "unparsablePem")]);
}

#[test]
fn a_dangling_symlink_is_a_problem() {
    let Some(node) = node() else { return };
    let leaf = node.leaf(LeafSpec::valid_for(["x.example.com"]));
    let dir = node.volume("pod-dangling", VolumeKind::Secret, "tls", &tls(&leaf));
    symlink("..data/ca.crt", dir.join("ca.crt")).unwrap();
    let (code, report, _) = node.inspect(&dir);
    assert_eq!(code, 1);
    assert_eq!(problems(&report), vec![pair("ca.crt", "danglingSymlink")]);
}

#[test]
fn a_symlink_escaping_the_volume_is_reported_and_never_followed() {
    let Some(node) = node() else { return };
    let leaf = node.leaf(LeafSpec::valid_for(["x.example.com"]));
    let dir = node.volume("pod-escape", VolumeKind::Secret, "tls", &tls(&leaf));
    // A secret lying outside the volume that an escaping link points at.
    let outside = node.kubelet.root().join("outside.key");
    std::fs::write(&outside, &leaf.key_pem).unwrap();
    symlink(&outside, dir.join("absolute.key")).unwrap();
    symlink("../../../../outside.key", dir.join("climbing.key")).unwrap();
    let (code, report, _) = node.inspect(&dir);
    assert_eq!(code, 1);
    assert_eq!(
        problems(&report),
        vec![
            pair("absolute.key", "symlinkEscapesVolume"),
            pair("climbing.key", "symlinkEscapesVolume")
        ]
    );
    let files: Vec<&str> = report["volumes"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        vec!["tls.crt", "tls.key"],
        "nothing outside the volume was read"
    );
}

#[test]
fn a_two_mebibyte_file_is_not_read() {
    let Some(node) = node() else { return };
    let mut payload = Payload::new();
    payload.insert(
        "huge.bin".into(),
        FileProjection::new(vec![7u8; 2 << 20], 0o644),
    );
    payload.insert("small.txt".into(), FileProjection::new("ok", 0o644));
    let dir = node.volume("pod-huge", VolumeKind::Secret, "blob", &payload);
    let (code, report, _) = node.inspect(&dir);
    assert_eq!(code, 1);
    assert_eq!(problems(&report), vec![pair("huge.bin", "fileTooLarge")]);
    assert_eq!(file(&report, "huge.bin")["sha256"], Value::Null);
    assert_eq!(file(&report, "huge.bin")["size"], 2 << 20);
    assert_eq!(file(&report, "small.txt")["sha256"], sha256(b"ok").as_str());
}

#[test]
fn a_whole_kubelet_root_lists_every_volume_and_fails_on_any_problem() {
    let Some(node) = node() else { return };
    let good = node.leaf(LeafSpec::valid_for(["good.example.com"]));
    let bad = node.leaf(LeafSpec::valid_for(["bad.example.com"]));
    node.volume("pod-a", VolumeKind::Secret, "tls", &tls(&good));
    node.volume("pod-b", VolumeKind::Projected, "tls", &tls(&good));
    let (code, report, _) = node.inspect(node.kubelet.root());
    assert_eq!(code, 0);
    assert_eq!(report["volumes"].as_array().unwrap().len(), 2);

    let mut broken = tls(&good);
    broken.insert(
        "tls.key".into(),
        FileProjection::new(bad.key_pem.clone(), 0o600),
    );
    node.volume("pod-c", VolumeKind::Secret, "tls", &broken);
    let (code, report, text) = node.inspect(node.kubelet.root());
    assert_eq!(code, 1, "{text}");
    assert_eq!(report["volumes"].as_array().unwrap().len(), 3);
    assert_eq!(problems(&report), vec![pair("tls.key", "keyMismatch")]);
    assert!(text.contains("3 volume(s), 1 problem(s)"), "{text}");
}
