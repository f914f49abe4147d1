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
//! [`secret_bytes_markers`] turns key material into substrings tests search for in every
//! output (logs, metrics, `/status`, Events, panics) to prove no key bytes leaked.

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

/// Distinctive substrings of the key material in `pem` that must never appear in any output
/// (logs, metrics, `/status`, Events, panics).
///
/// For every private-key PEM block (`PRIVATE KEY`, `EC PRIVATE KEY`, `RSA PRIVATE KEY`) the
/// markers come from the secret part only (the EC/Ed25519 scalar, RSA `d` through `qinv`), never
/// from the public key or the ASN.1 header, so a legitimately printed public key or certificate
/// cannot trigger them:
/// - up to four 24-character windows of the PEM base64 body that encode secret bytes only
///   (a verbatim leak of the PEM);
/// - 16 secret bytes as hex, lower and upper case (a hex dump);
/// - 8 secret bytes in decimal as Rust's `{:?}` of a byte slice prints them (`12, 250, ...`).
///
/// Other PEM blocks (e.g. certificates) get the same kinds of markers from the middle of the
/// body. Returns an empty list when `pem` holds no decodable block.
pub fn secret_bytes_markers(pem: &str) -> Vec<String> {
    let mut markers = Vec::new();
    for (label, body) in pem_blocks(pem) {
        let Some(der) = base64_decode(&body) else {
            continue;
        };
        let (start, end) = private_region(&label, &der).unwrap_or_else(|| {
            let mid = der.len() / 2;
            (mid.saturating_sub(18), (mid + 18).min(der.len()))
        });
        if end <= start || end - start < 8 {
            continue;
        }
        // Base64 char 4k starts byte 3k; 24 chars cover 18 bytes.
        let mut candidates = Vec::new();
        let mut o = start.div_ceil(3) * 4;
        while o / 4 * 3 + 18 <= end && o + 24 <= body.len() {
            candidates.push(o);
            o += 4;
        }
        if candidates.len() <= 4 {
            markers.extend(candidates.iter().map(|&o| body[o..o + 24].to_owned()));
        } else {
            let last = candidates.len() - 1;
            markers.extend((0..4).map(|i| {
                let o = candidates[i * last / 3];
                body[o..o + 24].to_owned()
            }));
        }
        let secret = &der[start..end];
        let hex_lower = hex::encode(&secret[..secret.len().min(16)]);
        markers.push(hex_lower.to_ascii_uppercase());
        markers.push(hex_lower);
        let dec: Vec<String> = secret[..8].iter().map(u8::to_string).collect();
        markers.push(dec.join(", "));
    }
    markers.sort();
    markers.dedup();
    markers
}

/// `(label, base64 body without whitespace)` of every PEM block.
fn pem_blocks(pem: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in pem.lines() {
        let line = line.trim();
        if let Some(label) = line.strip_prefix("-----BEGIN ") {
            current = Some((label.trim_end_matches('-').to_owned(), String::new()));
        } else if line.starts_with("-----END ") {
            if let Some(block) = current.take() {
                blocks.push(block);
            }
        } else if let Some((_, body)) = current.as_mut() {
            // Skip RFC 1421 headers (Proc-Type: ...) if any.
            if !line.contains(':') {
                body.extend(line.chars().filter(|c| !c.is_whitespace()));
            }
        }
    }
    blocks
}

/// One DER element: tag, content range, offset of the next element.
#[derive(Debug, Clone, Copy)]
struct Tlv {
    tag: u8,
    start: usize,
    end: usize,
}

fn der_tlv(der: &[u8], pos: usize) -> Option<Tlv> {
    let tag = *der.get(pos)?;
    let first = *der.get(pos + 1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *der.get(pos + 2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let start = pos + header;
    let end = start.checked_add(len)?;
    (end <= der.len()).then_some(Tlv { tag, start, end })
}

fn der_children(der: &[u8], parent: Tlv) -> Vec<Tlv> {
    let mut out = Vec::new();
    let mut pos = parent.start;
    while pos < parent.end {
        let Some(t) = der_tlv(der, pos) else { break };
        pos = t.end;
        out.push(t);
    }
    out
}

/// Byte range of the secret part of a private key DER.
fn private_region(label: &str, der: &[u8]) -> Option<(usize, usize)> {
    let outer = der_tlv(der, 0)?;
    match label {
        "PRIVATE KEY" => {
            // PKCS#8: SEQUENCE { INTEGER, AlgorithmIdentifier, OCTET STRING privateKey, ... }
            let fields = der_children(der, outer);
            let key = *fields.get(2).filter(|t| t.tag == 0x04)?;
            let inner = der_tlv(der, key.start)?;
            match inner.tag {
                0x04 => Some((inner.start, inner.end)), // Ed25519/X25519: CurvePrivateKey
                0x30 => sequence_secret(der, inner),    // ECPrivateKey or RSAPrivateKey
                _ => None,
            }
        }
        "EC PRIVATE KEY" | "RSA PRIVATE KEY" => sequence_secret(der, outer),
        _ => None,
    }
}

fn sequence_secret(der: &[u8], seq: Tlv) -> Option<(usize, usize)> {
    let fields = der_children(der, seq);
    match fields.get(1)?.tag {
        // ECPrivateKey { version, OCTET STRING privateKey, [0] params, [1] publicKey }
        0x04 => Some((fields[1].start, fields[1].end)),
        // RSAPrivateKey { version, n, e, d, p, q, dp, dq, qinv }: d..qinv are secret.
        0x02 if fields.len() >= 9 => Some((fields[3].start, fields[8].end)),
        _ => None,
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for &c in s {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

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
    use super::*;

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
            let der = base64_decode(&pem_blocks(&a.key_pem)[0].1).unwrap();
            let dumped = format!("{} {:?}", hex::encode(&der), der);
            assert!(
                ma.iter().filter(|m| dumped.contains(m.as_str())).count() >= 2,
                "{kt:?}"
            );
        }
        assert!(secret_bytes_markers("no pem here").is_empty());
    }

    #[test]
    fn base64_roundtrip_of_known_value() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8hIQ==").unwrap(), b"hello!!");
    }
}
