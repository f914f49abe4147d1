//! Test certificates: a throwaway CA and leaves with chosen names, validity and key types.
//!
//! Everything is generated in-process with rcgen (ring backend) except RSA keys: ring cannot
//! generate them, so [`KeyType::Rsa2048`] leaves use three fixed RSA-2048 PKCS#8 keys committed
//! under `tests/fixtures/rsa-{1,2,3}.key.pem` (generated once with `openssl genpkey`), handed
//! out in rotation so that consecutive RSA leaves never share a key. Those keys are public test
//! material and must never be used for anything but tests.
//!
//! Every leaf gets a fresh random 128-bit serial (rcgen's default serial is derived from the
//! public key, which would repeat with the rotated RSA keys).
//!
//! The leak scanner built on these keys is in [`leaks`] (re-exported here).

use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, ensure};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use sha2::Digest;
use time::{Duration, OffsetDateTime};

/// Test-only RSA-2048 keys (PKCS#8), used in rotation for [`KeyType::Rsa2048`].
const RSA_FIXTURE_KEYS: [&str; 3] = [
    include_str!("../fixtures/rsa-1.key.pem"),
    include_str!("../fixtures/rsa-2.key.pem"),
    include_str!("../fixtures/rsa-3.key.pem"),
];

static NEXT_RSA_KEY: AtomicUsize = AtomicUsize::new(0);

/// Key algorithm of a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// ECDSA P-256, signed ecdsa-with-SHA256.
    EcdsaP256,
    /// ECDSA P-384, signed ecdsa-with-SHA384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA-2048 from the committed fixture keys (in rotation), sha256WithRSAEncryption.
    Rsa2048,
}

/// What to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    /// DNS subject alternative names; the first one is also the subject CN.
    pub dns_names: Vec<String>,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// Key algorithm.
    pub key_type: KeyType,
}

impl LeafSpec {
    /// Valid now: notBefore = now − 1 h, notAfter = now + 90 d, ECDSA P-256.
    pub fn valid_for<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let now = OffsetDateTime::now_utc();
        Self {
            dns_names: names.into_iter().map(Into::into).collect(),
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(90),
            key_type: KeyType::EcdsaP256,
        }
    }

    /// Same spec with another key type.
    pub fn with_key_type(mut self, key_type: KeyType) -> Self {
        self.key_type = key_type;
        self
    }

    /// Same spec with another validity window.
    pub fn with_validity(mut self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }
}

/// A test CA (ECDSA P-256, valid from now − 1 h for 10 years).
pub struct TestCa {
    name: String,
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa")
            .field("name", &self.name)
            .field("fingerprint_sha256", &sha256_hex(&self.cert_der))
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA whose subject CN is `name`.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating the CA key")?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "mountlag testbed");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        params.serial_number = Some(random_serial()?);
        let cert = params
            .self_signed(&key)
            .with_context(|| format!("self-signing CA {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA's subject CN.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Issue a server leaf (`serverAuth`) per `spec`.
    pub fn issue(&self, spec: &LeafSpec) -> anyhow::Result<IssuedLeaf> {
        ensure!(
            !spec.dns_names.is_empty(),
            "a leaf needs at least one DNS name"
        );
        let key = match spec.key_type {
            KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyType::Ed25519 => {
                KeyPair::generate_for(&rcgen::PKCS_ED25519).and_then(ed25519_as_pkcs8_v1)
            }
            KeyType::Rsa2048 => {
                let i = NEXT_RSA_KEY.fetch_add(1, Ordering::Relaxed) % RSA_FIXTURE_KEYS.len();
                KeyPair::from_pem_and_sign_algo(RSA_FIXTURE_KEYS[i], &rcgen::PKCS_RSA_SHA256)
            }
        }
        .with_context(|| format!("making a {:?} key", spec.key_type))?;

        let mut params = CertificateParams::new(spec.dns_names.clone())
            .with_context(|| format!("leaf names {:?}", spec.dns_names))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, spec.dns_names[0].as_str());
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = match spec.key_type {
            KeyType::Rsa2048 => vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
            _ => vec![KeyUsagePurpose::DigitalSignature],
        };
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial()?;
        let serial_hex = hex::encode(serial.to_bytes());
        params.serial_number = Some(serial);
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing leaf {:?} by {}", spec.dns_names, self.name))?;

        let cert_pem = cert.pem();
        let cert_der = cert.der().to_vec();
        let chain_pem = format!("{cert_pem}{}", self.cert_pem);
        Ok(IssuedLeaf {
            fingerprint_sha256: sha256_hex(&cert_der),
            key_pem: key.serialize_pem(),
            cert_pem,
            chain_pem,
            cert_der,
            serial_hex,
        })
    }
}

/// An issued leaf. `Debug` shows the fingerprint and serial, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedLeaf {
    /// Leaf certificate, PEM.
    pub cert_pem: String,
    /// Private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
    /// Leaf then CA, PEM (what goes into `tls.crt`).
    pub chain_pem: String,
    /// Leaf certificate, DER.
    pub cert_der: Vec<u8>,
    /// Lowercase hex SHA-256 of `cert_der` (what a TLS probe reports).
    pub fingerprint_sha256: String,
    /// Serial number, lowercase hex of its big-endian bytes (no leading zero byte).
    pub serial_hex: String,
}

impl fmt::Debug for IssuedLeaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedLeaf")
            .field("fingerprint_sha256", &self.fingerprint_sha256)
            .field("serial_hex", &self.serial_hex)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

mod leaks;
mod pem;
pub use leaks::*;
use pem::{der_children, der_tlv};

/// ring writes Ed25519 keys as PKCS#8 v2 (with the public key), which OpenSSL 3 (and so nginx
/// and HAProxy) refuses to load. Re-encode as PKCS#8 v1, as `openssl genpkey` writes them.
fn ed25519_as_pkcs8_v1(key: KeyPair) -> Result<KeyPair, rcgen::Error> {
    let der = key.serialized_der();
    let seed = der_tlv(der, 0)
        .and_then(|outer| der_children(der, outer).get(2).copied())
        .filter(|t| t.tag == 0x04)
        .and_then(|t| der_tlv(der, t.start))
        .filter(|t| t.tag == 0x04 && t.end - t.start == 32)
        .map(|t| &der[t.start..t.end])
        .ok_or(rcgen::Error::CouldNotParseKeyPair)?;
    // SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed } }
    let mut v1 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    v1.extend_from_slice(seed);
    KeyPair::try_from(v1.as_slice())
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn random_serial() -> anyhow::Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for a serial number")?;
    // Positive and without a leading zero byte, so the DER integer has exactly these bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::leaks::{ENC_DER_HEX, ENC_PEM_DEBUG, squash};
    use super::pem::{base64_decode, pem_blocks, private_region};
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn issues_every_key_type() {
        let ca = TestCa::new("test-ca").unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let mut fingerprints = std::collections::BTreeSet::new();
        for kt in [
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Ed25519,
            KeyType::Rsa2048,
            KeyType::Rsa2048,
        ] {
            let leaf = ca
                .issue(&LeafSpec::valid_for(["a.example", "b.example"]).with_key_type(kt))
                .unwrap();
            assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(leaf.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            assert!(leaf.chain_pem.starts_with(&leaf.cert_pem));
            assert!(leaf.chain_pem.ends_with(&ca.cert_pem()));
            assert_eq!(leaf.fingerprint_sha256, sha256_hex(&leaf.cert_der));
            assert_eq!(leaf.fingerprint_sha256.len(), 64);
            assert_eq!(leaf.serial_hex.len(), 32);
            // The serial appears verbatim in the DER.
            let serial = hex::decode(&leaf.serial_hex).unwrap();
            assert!(leaf.cert_der.windows(serial.len()).any(|w| w == serial));
            assert!(fingerprints.insert(leaf.fingerprint_sha256.clone()));
            let dbg = format!("{leaf:?}");
            for m in secret_bytes_markers(&leaf.key_pem) {
                assert!(!dbg.contains(&m));
            }
        }
    }

    #[test]
    fn markers_are_distinctive() {
        let ca = TestCa::new("test-ca").unwrap();
        for kt in [
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Ed25519,
            KeyType::Rsa2048,
        ] {
            let spec = LeafSpec::valid_for(["a.example"]).with_key_type(kt);
            let a = ca.issue(&spec).unwrap();
            let b = ca.issue(&spec).unwrap();
            let ma = secret_bytes_markers(&a.key_pem);
            assert!(ma.len() >= 5, "{kt:?}: {ma:?}");
            let cert_hex = hex::encode(&a.cert_der);
            let others: Vec<&str> = RSA_FIXTURE_KEYS
                .iter()
                .copied()
                .chain([b.key_pem.as_str()])
                .filter(|k| *k != a.key_pem)
                .collect();
            for m in &ma {
                for other in &others {
                    assert!(
                        !other.contains(m.as_str()),
                        "{kt:?}: marker {m} not distinctive"
                    );
                }
                assert!(
                    !a.cert_pem.contains(m.as_str()),
                    "{kt:?}: marker {m} in the cert"
                );
                assert!(!a.chain_pem.contains(m.as_str()));
                assert!(
                    !cert_hex.contains(&m.to_ascii_lowercase()),
                    "{kt:?}: {m} public"
                );
            }
            // A verbatim leak of the key PEM, a hex dump or a Debug print of the DER is caught.
            assert!(ma.iter().any(|m| a.key_pem.contains(m.as_str())), "{kt:?}");
            let der = base64_decode(&pem_blocks(&a.key_pem)[0].body).unwrap();
            let dumped = format!("{} {:?}", hex::encode(&der), der);
            assert!(
                ma.iter().filter(|m| dumped.contains(m.as_str())).count() >= 2,
                "{kt:?}"
            );
        }
        assert!(secret_bytes_markers("no pem here").is_empty());
    }

    const KEY_TYPES: [KeyType; 4] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
    ];

    fn tls_secret(leaf: &IssuedLeaf) -> k8s_openapi::api::core::v1::Secret {
        let mut secret = k8s_openapi::api::core::v1::Secret::default();
        secret.metadata.name = Some("edge-tls".into());
        secret.type_ = Some("kubernetes.io/tls".into());
        secret.data = Some(BTreeMap::from([
            (
                "tls.crt".to_string(),
                k8s_openapi::ByteString(leaf.chain_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_string(),
                k8s_openapi::ByteString(leaf.key_pem.clone().into_bytes()),
            ),
        ]));
        secret
    }

    /// Every encoding a leak of `key_pem` can take, made here independently of the scanner
    /// (with base64, hex, serde and `format!`), and whether a plain `contains` of
    /// [`secret_bytes_markers`] must see it too (single-line forms).
    fn leaks_of(leaf: &IssuedLeaf) -> Vec<(&'static str, String, bool)> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let key_pem = leaf.key_pem.as_str();
        let block = &pem_blocks(key_pem)[0];
        let body = block.body.clone();
        let der = base64_decode(&body).unwrap();
        let (s, _) = private_region(&block.label, &der).unwrap();
        let c0 = (8 * s).div_ceil(6);
        let rewrapped: String = body
            .as_bytes()
            .chunks(76)
            .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
            .collect();
        let openssl_text: String = der
            .chunks(15)
            .map(|c| {
                let hex: Vec<String> = c.iter().map(|b| format!("{b:02x}")).collect();
                format!("    {}:\n", hex.join(":"))
            })
            .collect();
        let xxd: String = der
            .chunks(16)
            .enumerate()
            .map(|(i, c)| {
                let groups: Vec<String> = c.chunks(2).map(hex::encode).collect();
                format!("{:08x}: {}  ................\n", i * 16, groups.join(" "))
            })
            .collect();
        let secret = tls_secret(leaf);
        let bytes = k8s_openapi::ByteString(key_pem.as_bytes().to_vec());
        let json_pem = serde_json::to_string(key_pem).unwrap();
        vec![
            ("the PEM as written", key_pem.to_owned(), true),
            (
                "a 32-character fragment of the body's secret part",
                body[c0..c0 + 32].to_owned(),
                true,
            ),
            ("the body re-wrapped at 76 with CRLF", rewrapped, false),
            ("the body on one line", body.clone(), true),
            ("hex of the DER", hex::encode(&der), true),
            ("HEX of the DER", hex::encode_upper(&der), true),
            ("openssl -text of the DER", openssl_text, false),
            ("xxd of the DER", xxd, false),
            ("{:?} of the DER Vec<u8>", format!("{der:?}"), true),
            (
                "{:?} of the DER &[u8]",
                format!("{:?}", der.as_slice()),
                true,
            ),
            ("{:#?} of the DER", format!("{der:#?}"), false),
            ("{:x?} of the DER", format!("{der:x?}"), true),
            (
                "serde_json of the DER bytes",
                serde_json::to_string(&der).unwrap(),
                false,
            ),
            ("base64 of the DER, URL-safe", url.encode(&der), true),
            (
                "base64 of the DER after one byte",
                b64.encode([&[7u8][..], &der].concat()),
                true,
            ),
            (
                "{:?} of a ByteString of the PEM",
                format!("{bytes:?}"),
                true,
            ),
            (
                "{:#?} of a ByteString of the PEM",
                format!("{bytes:#?}"),
                false,
            ),
            ("{:?} of the Secret", format!("{secret:?}"), true),
            (
                "the Secret as JSON",
                serde_json::to_string(&secret).unwrap(),
                true,
            ),
            (
                "the Secret as YAML",
                serde_yaml::to_string(&secret).unwrap(),
                true,
            ),
            (
                "the PEM base64-encoded after one byte",
                b64.encode(format!("x{key_pem}")),
                true,
            ),
            (
                "the PEM base64-encoded after two bytes",
                b64.encode(format!("xy{key_pem}")),
                true,
            ),
            (
                "the PEM base64-encoded, URL-safe",
                url.encode(key_pem),
                true,
            ),
            ("the PEM as a JSON string", json_pem.clone(), true),
            (
                "the PEM in a JSON string in JSON",
                serde_json::to_string(&json_pem).unwrap(),
                false,
            ),
            ("{:?} of the PEM String", format!("{key_pem:?}"), true),
            ("hex of the PEM text", hex::encode(key_pem), true),
            ("HEX of the PEM text", hex::encode_upper(key_pem), true),
        ]
    }

    #[test]
    fn the_scanner_finds_every_encoding_of_every_key_type() {
        let ca = TestCa::new("test-ca").unwrap();
        for kt in KEY_TYPES {
            let leaf = ca
                .issue(&LeafSpec::valid_for(["a.example"]).with_key_type(kt))
                .unwrap();
            let scanner = SecretLeakScanner::for_key_pems([leaf.key_pem.as_str()]);
            let markers = secret_bytes_markers(&leaf.key_pem);
            for (what, text, single_line) in leaks_of(&leaf) {
                let leaks = scanner.scan(what, &text);
                assert!(!leaks.is_empty(), "{kt:?}: {what} not found");
                assert!(
                    leaks
                        .iter()
                        .all(|l| l.secret == "key #1" && l.output == what),
                    "{leaks:?}"
                );
                if single_line {
                    assert!(
                        markers.iter().any(|m| text.contains(m.as_str())),
                        "{kt:?}: {what} not found by secret_bytes_markers"
                    );
                }
            }
        }
    }

    #[test]
    fn the_scanner_finds_keys_in_secrets_and_opaque_garbage() {
        use base64::Engine as _;
        let ca = TestCa::new("test-ca").unwrap();
        let leaf = ca.issue(&LeafSpec::valid_for(["a.example"])).unwrap();
        let mut scanner = SecretLeakScanner::new();
        scanner.add_secret("edge-tls", &tls_secret(&leaf));
        assert_eq!(scanner.secrets(), ["edge-tls tls.crt", "edge-tls tls.key"]);
        // The certificate is public; the key is found.
        assert!(scanner.scan("chain", &leaf.chain_pem).is_empty());
        let found = scanner.scan("key", &leaf.key_pem);
        assert!(!found.is_empty() && found.iter().all(|l| l.secret == "edge-tls tls.key"));

        let mut garbage = vec![0u8; 48];
        random_bytes(&mut garbage);
        let text = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGJ1dCBzZWNyZXQgYWxsIHRoZSBzYW1l!!\n-----END PRIVATE KEY-----\n";
        let mut scanner = SecretLeakScanner::new();
        scanner.add_secret_bytes("garbage", &garbage);
        let secret = k8s_openapi::api::core::v1::Secret {
            data: Some(BTreeMap::from([(
                "tls.key".to_string(),
                k8s_openapi::ByteString(text.as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        scanner.add_secret("broken", &secret);
        for (what, out) in [
            ("hex", hex::encode(&garbage)),
            ("{:?}", format!("{garbage:?}")),
            (
                "base64",
                base64::engine::general_purpose::STANDARD.encode(&garbage),
            ),
            (
                "undecodable key body",
                "bm90IGEga2V5IGJ1dCBzZWNyZXQgYWxsIHRoZSBzYW1l".to_owned(),
            ),
            ("its bytes", format!("{:?}", text.as_bytes())),
        ] {
            assert!(!scanner.scan(what, &out).is_empty(), "{what}");
        }

        // Garbage made of a real key's whole body (public key and ASN.1 header included) and
        // noise: the noise is secret, the key's secret part is found as that key, and its public
        // parts are not secret (printing the certificate is not a leak).
        let donor = ca.issue(&LeafSpec::valid_for(["a.example"])).unwrap();
        let noise = base64::engine::general_purpose::STANDARD.encode(&garbage);
        let body: String = donor
            .key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(|l| format!("{l}\n"))
            .collect();
        let broken = format!(
            "-----BEGIN PRIVATE KEY-----\n{body}{noise}\n*** not base64 ***\n-----END PRIVATE KEY-----\n"
        );
        let mut scanner = SecretLeakScanner::new();
        scanner.add_key_pem("donor key", &donor.key_pem);
        let mut secret = tls_secret(&donor);
        secret.data.as_mut().unwrap().insert(
            "tls.key".to_string(),
            k8s_openapi::ByteString(broken.clone().into_bytes()),
        );
        scanner.add_secret("garbage", &secret);
        let chain = k8s_openapi::ByteString(donor.chain_pem.clone().into_bytes());
        for (what, public) in [
            ("{:?} of the chain", format!("{chain:?}")),
            ("the chain", donor.chain_pem.clone()),
            ("the certificate's hex", hex::encode(&donor.cert_der)),
        ] {
            let leaks = scanner.scan(what, &public);
            assert!(leaks.is_empty(), "{what}: {leaks:?}");
        }
        let leaks = scanner.scan("noise", &noise);
        assert!(
            !leaks.is_empty() && leaks.iter().all(|l| l.secret == "garbage tls.key"),
            "{leaks:?}"
        );
        let leaks = scanner.scan("the garbage", &format!("{:?}", broken.as_bytes()));
        assert!(leaks.iter().any(|l| l.secret == "donor key"), "{leaks:?}");
        assert!(
            leaks.iter().any(|l| l.secret == "garbage tls.key"),
            "{leaks:?}"
        );
    }

    fn random_bytes(buf: &mut [u8]) {
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(buf))
            .unwrap();
    }

    /// What the agent legitimately prints about a certificate, and other keys, are never a match.
    #[test]
    fn the_scanner_does_not_flag_public_material_metrics_or_other_keys() {
        use base64::Engine as _;
        let ca = TestCa::new("test-ca").unwrap();
        for kt in KEY_TYPES {
            let spec = LeafSpec::valid_for(["a.example", "b.example"]).with_key_type(kt);
            let a = ca.issue(&spec).unwrap();
            let b = ca.issue(&spec).unwrap();
            let scanner = SecretLeakScanner::for_key_pems([a.key_pem.as_str()]);
            let metrics = format!(
                "# HELP mountlag_reloads_total Controller reloads.\n# TYPE mountlag_reloads_total counter\n\
                 mountlag_reloads_total{{namespace=\"ingress\",pod=\"edge-0\",result=\"verified\"}} 1\n\
                 mountlag_certificate_not_after_timestamp_seconds{{namespace=\"ingress\",secret=\"edge-tls\",source=\"disk\"}} 1.790726400e9\n\
                 mountlag_served_certificate_info{{fingerprint=\"{}\",serial=\"{}\"}} 1\n\
                 mountlag_volume_lag_seconds_bucket{{le=\"0.005\"}} 0\nmountlag_volume_lag_seconds_bucket{{le=\"0.01\"}} 1\n# EOF\n",
                a.fingerprint_sha256, a.serial_hex
            );
            let mut public = vec![
                ("/metrics", metrics),
                ("fingerprint", a.fingerprint_sha256.clone()),
                ("serial", a.serial_hex.clone()),
                ("certificate", a.cert_pem.clone()),
                ("chain", a.chain_pem.clone()),
                ("CA", ca.cert_pem()),
                ("hex of the certificate", hex::encode(&a.cert_der)),
                ("{:?} of the certificate", format!("{:?}", a.cert_der)),
                (
                    "{:?} of the chain's bytes",
                    format!("{:?}", a.chain_pem.as_bytes()),
                ),
                (
                    "base64 of the chain",
                    base64::engine::general_purpose::STANDARD.encode(&a.chain_pem),
                ),
                ("{:?} of the leaf", format!("{a:?}")),
            ];
            // Another key of the same type (the RSA fixtures rotate; skip a repeat).
            if b.key_pem != a.key_pem {
                for (what, text, _) in leaks_of(&b) {
                    public.push((what, text));
                }
            }
            for (what, text) in &public {
                let leaks = scanner.scan(what, text);
                assert!(leaks.is_empty(), "{kt:?}: {what} flagged: {leaks:?}");
            }
            assert!(scanner.check(&public).is_ok());
        }
    }

    #[test]
    fn a_finding_says_where_and_never_prints_the_key() {
        let ca = TestCa::new("test-ca").unwrap();
        let leaf = ca.issue(&LeafSpec::valid_for(["a.example"])).unwrap();
        let scanner = SecretLeakScanner::for_key_pems([leaf.key_pem.as_str()]);
        let der = base64_decode(&pem_blocks(&leaf.key_pem)[0].body).unwrap();
        let log = format!(
            "2025-01-01T00:00:00Z INFO mountlag: starting\n\
             2025-01-01T00:00:01Z DEBUG mountlag::k8s: secret data={:?} after\n\
             2025-01-01T00:00:02Z WARN mountlag: dump {}\n",
            k8s_openapi::ByteString(leaf.key_pem.clone().into_bytes()),
            hex::encode(&der)
        );
        let leaks = scanner.scan("agent log", &log);
        assert_eq!(leaks.len(), 2, "{leaks:?}");
        assert_eq!(leaks[0].line, 2);
        assert_eq!(leaks[0].encoding, ENC_PEM_DEBUG);
        assert_eq!(leaks[1].line, 3);
        assert_eq!(leaks[1].encoding, ENC_DER_HEX);
        assert!(
            leaks[0].context.contains("secret data=ByteString(["),
            "{}",
            leaks[0].context
        );
        assert!(
            leaks[0].context.contains("⟦REDACTED"),
            "{}",
            leaks[0].context
        );
        let report = scanner.check(&[("agent log", &log)]).unwrap_err();
        assert!(report.contains("agent log, line 2"), "{report}");
        assert!(report.contains("agent log, line 3"), "{report}");
        for needle in &scanner.built().needles {
            assert!(
                !report.contains(&needle.text),
                "the report quotes key bytes: {report}"
            );
        }
        assert_no_key_bytes("startup line", "INFO mountlag: starting", &[&leaf.key_pem]);
    }

    #[test]
    fn squashing_keeps_offsets_and_drops_escapes() {
        let (out, map) = squash(b"ab \\ncd\\\\n e\\/f\n");
        assert_eq!(out, b"abcde/f");
        assert_eq!(map, [0, 1, 5, 6, 11, 13, 14]);
    }

    #[test]
    fn base64_roundtrip_of_known_value() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8hIQ==").unwrap(), b"hello!!");
    }
}
