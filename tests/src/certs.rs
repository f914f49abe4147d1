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
//! [`SecretLeakScanner`] knows every encoding of each test key (PEM text, hex and `{:?}` dumps
//! of the DER, `{:?}` of a k8s-openapi `ByteString`, the PEM base64-encoded again as Secret JSON
//! carries it, JSON-escaped PEM, ...) and finds any of them in any output (logs, metrics,
//! `/status`, Events, panics), saying where; [`secret_bytes_markers`] and
//! [`assert_no_key_bytes`] are built on it.

use std::collections::{BTreeMap, HashMap};
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

// ------------------------------------------------------------------------------ leak scanning

/// Distinctive substrings of the key material in `pem` that must never appear in any output
/// (logs, metrics, `/status`, Events, panics): what `text.contains(marker)` callers check.
///
/// A sample (at most [`MARKERS_PER_ENCODING`] per encoding, evenly spread over the secret part)
/// of the needles a [`SecretLeakScanner`] built from `pem` searches for, in every encoding it
/// knows (see there): the PEM base64 text, hex and `{:?}` dumps of the DER, `{:?}` of the PEM
/// bytes (a k8s-openapi `ByteString`), the PEM base64-encoded again (Secret JSON), the PEM with
/// JSON-escaped newlines, hex of the PEM text. Plain substring search cannot see through
/// re-wrapped or pretty-printed dumps: [`SecretLeakScanner::scan`] also does that, checks every
/// needle rather than a sample and says where a match is.
///
/// For every private-key PEM block (`PRIVATE KEY`, `EC PRIVATE KEY`, `RSA PRIVATE KEY`) the
/// markers come from the secret part only (the EC/Ed25519 scalar, RSA `d` through `qinv`), never
/// from the public key or the ASN.1 header, so a legitimately printed public key or certificate
/// cannot trigger them. Other PEM blocks (e.g. certificates) get the same kinds of markers from
/// the middle 36 bytes of their DER. Returns an empty list when `pem` holds no decodable block.
pub fn secret_bytes_markers(pem: &str) -> Vec<String> {
    let mut scanner = SecretLeakScanner::new();
    let secret = scanner.secret("key");
    scanner.sources.push(Source::Pem {
        secret,
        pem: pem.to_owned(),
        others: NonKeyBlocks::Middle,
    });
    let mut by_encoding: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for needle in &scanner.built().needles {
        by_encoding
            .entry(needle.encoding.as_str())
            .or_default()
            .push(needle.text.as_str());
    }
    let mut markers = Vec::new();
    for texts in by_encoding.values() {
        let n = texts.len();
        let take = n.min(MARKERS_PER_ENCODING);
        markers.extend((0..take).map(|i| {
            let at = if take > 1 {
                i * (n - 1) / (take - 1)
            } else {
                0
            };
            texts[at].to_owned()
        }));
    }
    markers.sort();
    markers.dedup();
    markers
}

/// Panics, saying where, when `text` (output `what`) holds bytes of any of `key_pems` in any
/// encoding [`SecretLeakScanner`] knows.
#[track_caller]
pub fn assert_no_key_bytes(what: &str, text: &str, key_pems: &[&str]) {
    SecretLeakScanner::for_key_pems(key_pems.iter().copied()).assert_clean(what, text);
}

/// How many needles of one encoding [`secret_bytes_markers`] returns at most.
pub const MARKERS_PER_ENCODING: usize = 16;

// Window sizes: long enough that a match is never chance, short enough that a partial leak is
// still caught (a window starts every `STRIDE` units, so any leaked run of window + stride - 1
// units of the secret part is seen).
const B64_WINDOW: usize = 24;
const B64_STRIDE: usize = 4;
const HEX_WINDOW_BYTES: usize = 12;
/// Every other byte: a 16-byte `xxd` line holds a whole window wherever it starts.
const HEX_STRIDE: usize = 2;
const COLON_HEX_WINDOW_BYTES: usize = 12;
const DEC_WINDOW_BYTES: usize = 10;
const TEXT_BYTES_WINDOW: usize = 16;
const BYTE_STRIDE: usize = 3;
/// Characters either side of a line break in a needle that spans one.
const SPAN_HALF: usize = 12;
/// Shortest secret (bytes) [`SecretLeakScanner::add_secret_bytes`] accepts: below that, a needle
/// could match by chance.
pub const MIN_SECRET_BYTES: usize = 12;
/// Characters of context shown either side of a match, after redaction.
const CONTEXT: usize = 64;
/// Bytes of the output read either side of a match for that context (on its line).
const CONTEXT_RAW: usize = 4096;

/// Encodings, as reports name them.
const ENC_PEM_TEXT: &str = "PEM base64 text";
const ENC_PEM_REWRAPPED: &str = "PEM base64 text (other line wrapping)";
const ENC_PEM_JSON: &str = "PEM text with JSON-escaped newlines";
const ENC_PEM_DEBUG: &str = "{:?} of the PEM bytes (k8s-openapi ByteString, Vec<u8>)";
const ENC_PEM_HEX: &str = "hex of the PEM text";
const ENC_DER_HEX: &str = "hex of the DER bytes";
const ENC_DER_COLON_HEX: &str = "colon-separated hex of the DER bytes (openssl -text)";
const ENC_DER_DEBUG: &str = "{:?} of the DER bytes (Vec<u8>, &[u8])";
const ENC_DER_DEBUG_HEX: &str = "{:x?} of the DER bytes";
const ENC_TEXT: &str = "text";
const ENC_BYTES_HEX: &str = "hex of the bytes";
const ENC_BYTES_COLON_HEX: &str = "colon-separated hex of the bytes";
const ENC_TEXT_DEBUG: &str = "{:?} of the text's bytes";
const ENC_TEXT_HEX: &str = "hex of the text";
const ENC_BYTES_DEBUG: &str = "{:?} of the bytes";
const ENC_BYTES_DEBUG_HEX: &str = "{:x?} of the bytes";

/// Finds test key material in any output, in every encoding a leak takes, and says where.
///
/// Built from the private keys (PEM) and Secrets of a test; [`SecretLeakScanner::scan`] then
/// looks for, from the secret part of each key only (never the public key or ASN.1 header, so
/// printing a certificate or public key is not a finding):
///
/// | encoding | example |
/// |---|---|
/// | the PEM base64 body, any window of it, with any line wrapping | `MIGHAgEAMBMG…` |
/// | the PEM text with JSON-escaped newlines | `…zj0DAQcE\nbTBrAgEB…` |
/// | the PEM base64-encoded again, at each of the three alignments (Secret JSON `data`) | `LS0tLS1CRUdJTi…` |
/// | `{:?}`/`{:#?}` of the PEM bytes: k8s-openapi `ByteString` (a derived `Debug`), `Vec<u8>` | `ByteString([77, 73, 71, …])` |
/// | hex of the PEM text | `4d4947…` |
/// | the DER as hex (lower, upper, colon-separated as `openssl -text`, spaced as `xxd`) | `3081870201…` |
/// | `{:?}`, `{:#?}`, `{:x?}` of the DER bytes (`Vec<u8>`, `&[u8]`), serde_json of them | `[48, 129, 135, …]` |
/// | the DER base64-encoded, standard and URL-safe, at each of the three alignments | |
///
/// Text is searched as written and squashed (whitespace and `\n`/`\r`/`\t` escapes removed, `\/`
/// unescaped), so re-wrapped PEM, pretty-printed `{:#?}` lists and JSON strings are found too.
/// Secrets that are not keys (garbage in a `tls.key`) are added with
/// [`SecretLeakScanner::add_secret_bytes`] or [`SecretLeakScanner::add_secret`]; their text is
/// secret except runs also found in a PEM block of a key or certificate added to the scanner
/// (garbage built around a real key: add that key too, its secret part then counts as that key
/// and its public part as public). A finding names the output, the secret, the
/// encoding, the line and a short context with the match (and anything else that looks like
/// encoded bytes) redacted.
#[derive(Default)]
pub struct SecretLeakScanner {
    secrets: Vec<String>,
    sources: Vec<Source>,
    /// Needles and their matcher, made on first use after the last addition.
    built: std::sync::OnceLock<Built>,
}

/// What a secret was added as.
enum Source {
    Pem {
        secret: usize,
        pem: String,
        others: NonKeyBlocks,
    },
    Bytes {
        secret: usize,
        bytes: Vec<u8>,
    },
}

struct Built {
    needles: Vec<Needle>,
    matcher: Matcher,
}

/// Makes the needles of every source.
struct NeedleBuilder {
    needles: Vec<Needle>,
    seen: std::collections::HashSet<String>,
    /// Every [`B64_WINDOW`]-character window of the body of every PEM block that decodes:
    /// text of an opaque secret found here is public (a certificate, a public key) or the
    /// secret part of a key that has needles of its own.
    known: std::collections::HashSet<Vec<u8>>,
}

impl fmt::Debug for SecretLeakScanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the needles: they are key bytes.
        f.debug_struct("SecretLeakScanner")
            .field("secrets", &self.secrets)
            .field("sources", &self.sources.len())
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Needle {
    secret: usize,
    encoding: String,
    text: String,
}

/// Private-key blocks always count; what to do with the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NonKeyBlocks {
    /// Public material (certificates): not secret.
    Skip,
    /// [`secret_bytes_markers`]' historical behaviour: the middle 36 bytes of the DER.
    Middle,
}

/// One match of a [`SecretLeakScanner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// The output it was found in, as the caller named it.
    pub output: String,
    /// Which secret (the label it was added with).
    pub secret: String,
    /// How it was encoded there.
    pub encoding: String,
    /// 1-based line of the output.
    pub line: usize,
    /// Byte range in the output.
    pub span: std::ops::Range<usize>,
    /// The text around it, the match and anything else that looks like encoded bytes redacted.
    pub context: String,
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, line {} (bytes {}..{}): {} of {}: «{}»",
            self.output,
            self.line,
            self.span.start,
            self.span.end,
            self.encoding,
            self.secret,
            self.context
        )
    }
}

impl SecretLeakScanner {
    /// A scanner that knows no secret yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A scanner for these private keys (PEM), labelled `key #1`, `key #2`, ...
    pub fn for_key_pems<'a>(pems: impl IntoIterator<Item = &'a str>) -> Self {
        let mut scanner = Self::new();
        for (i, pem) in pems.into_iter().enumerate() {
            scanner.add_key_pem(&format!("key #{}", i + 1), pem);
        }
        scanner
    }

    /// Adds every private-key block of `pem` (certificates in it are public and skipped).
    ///
    /// # Panics
    /// When `pem` holds no private key block with a secret part: a scanner that silently knew
    /// nothing would pass every test.
    pub fn add_key_pem(&mut self, label: &str, pem: &str) -> &mut Self {
        let keys = pem_blocks(pem)
            .iter()
            .filter(|b| b.label.ends_with("PRIVATE KEY") && b.body.len() >= MIN_SECRET_BYTES)
            .count();
        assert!(keys > 0, "{label}: no private key block in this PEM");
        let secret = self.secret(label);
        self.sources.push(Source::Pem {
            secret,
            pem: pem.to_owned(),
            others: NonKeyBlocks::Skip,
        });
        self
    }

    /// Adds every value of `secret`'s `data` and `stringData`: private-key blocks as
    /// [`SecretLeakScanner::add_key_pem`] does, other PEM blocks that do not decode and values
    /// without PEM as opaque secrets ([`SecretLeakScanner::add_secret_bytes`]); certificates are
    /// skipped.
    pub fn add_secret(
        &mut self,
        label: &str,
        secret: &k8s_openapi::api::core::v1::Secret,
    ) -> &mut Self {
        let values = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .chain(
                secret
                    .string_data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
            );
        for (key, value) in values {
            let name = format!("{label} {key}");
            let text = String::from_utf8_lossy(&value);
            let secret = self.secret(&name);
            if !pem_blocks(&text).is_empty() {
                self.sources.push(Source::Pem {
                    secret,
                    pem: text.into_owned(),
                    others: NonKeyBlocks::Skip,
                });
            } else if value.len() >= MIN_SECRET_BYTES {
                self.sources.push(Source::Bytes {
                    secret,
                    bytes: value,
                });
            }
        }
        self
    }

    /// Adds opaque secret bytes (garbage in a `tls.key`, a token): hex, `{:?}` and base64 of
    /// them, and when they are text, the text itself, `{:?}` of its bytes, its hex and base64.
    ///
    /// # Panics
    /// When `bytes` is shorter than [`MIN_SECRET_BYTES`].
    pub fn add_secret_bytes(&mut self, label: &str, bytes: &[u8]) -> &mut Self {
        assert!(
            bytes.len() >= MIN_SECRET_BYTES,
            "{label}: {} bytes are too few to scan for",
            bytes.len()
        );
        let secret = self.secret(label);
        self.sources.push(Source::Bytes {
            secret,
            bytes: bytes.to_vec(),
        });
        self
    }

    /// The labels of every secret added.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// How many needles are searched for.
    pub fn needle_count(&self) -> usize {
        self.built().needles.len()
    }

    /// Every match in `text` (the output named `output`), one per run of overlapping matches,
    /// in text order.
    pub fn scan(&self, output: &str, text: &str) -> Vec<Leak> {
        let built = self.built();
        let matcher = &built.matcher;
        let mut hits: Vec<(usize, usize, usize)> = Vec::new();
        matcher
            .raw
            .find(text.as_bytes(), |n, s, e| hits.push((s, e, n)));
        let (squashed, map) = squash(text.as_bytes());
        matcher.squashed.find(&squashed, |n, s, e| {
            hits.push((map[s], map[e - 1] + 1, n));
        });
        hits.sort();
        // Overlapping matches are one leak, named after its first needle.
        let mut runs: Vec<(usize, usize, usize)> = Vec::new();
        for (s, e, n) in hits {
            match runs.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => runs.push((s, e, n)),
            }
        }
        let spans: Vec<(usize, usize)> = runs.iter().map(|&(s, e, _)| (s, e)).collect();
        runs.iter()
            .map(|&(s, e, n)| {
                let needle = &built.needles[n];
                Leak {
                    output: output.to_owned(),
                    secret: self.secrets[needle.secret].clone(),
                    encoding: needle.encoding.clone(),
                    line: 1 + text.as_bytes()[..s].iter().filter(|&&b| b == b'\n').count(),
                    span: s..e,
                    context: context(text, s, e, &spans),
                }
            })
            .collect()
    }

    /// `Err` listing every leak (at most 5 per output shown, with a count) in `outputs`
    /// (`(name, text)`).
    pub fn check<N: AsRef<str>, T: AsRef<str>>(&self, outputs: &[(N, T)]) -> Result<(), String> {
        let mut report = String::new();
        for (name, text) in outputs {
            let leaks = self.scan(name.as_ref(), text.as_ref());
            for leak in leaks.iter().take(5) {
                report.push_str(&format!("  {leak}\n"));
            }
            if leaks.len() > 5 {
                report.push_str(&format!(
                    "  ... and {} more in {}\n",
                    leaks.len() - 5,
                    name.as_ref()
                ));
            }
        }
        if report.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "key bytes leaked (scanned for {} secrets: {}):\n{report}",
                self.secrets.len(),
                self.secrets.join(", ")
            ))
        }
    }

    /// Panics with every leak in `text` (output `output`).
    #[track_caller]
    pub fn assert_clean(&self, output: &str, text: &str) {
        if let Err(report) = self.check(&[(output, text)]) {
            panic!("{report}");
        }
    }

    /// Panics with every leak in `outputs` (`(name, text)`).
    #[track_caller]
    pub fn assert_all_clean<N: AsRef<str>, T: AsRef<str>>(&self, outputs: &[(N, T)]) {
        if let Err(report) = self.check(outputs) {
            panic!("{report}");
        }
    }

    fn secret(&mut self, label: &str) -> usize {
        self.built = std::sync::OnceLock::new();
        self.secrets.push(label.to_owned());
        self.secrets.len() - 1
    }

    fn built(&self) -> &Built {
        self.built.get_or_init(|| {
            let mut builder = NeedleBuilder::new(&self.sources);
            for source in &self.sources {
                match source {
                    Source::Pem {
                        secret,
                        pem,
                        others,
                    } => builder.add_pem_blocks(*secret, pem, *others),
                    Source::Bytes { secret, bytes } => builder.add_opaque(*secret, bytes),
                }
            }
            let matcher = Matcher::new(&builder.needles);
            Built {
                needles: builder.needles,
                matcher,
            }
        })
    }
}

impl NeedleBuilder {
    fn new(sources: &[Source]) -> Self {
        let mut known = std::collections::HashSet::new();
        for source in sources {
            if let Source::Pem { pem, .. } = source {
                for block in pem_blocks(pem) {
                    if base64_decode(&block.body).is_some() {
                        let body = block.body.as_bytes();
                        for w in body.windows(B64_WINDOW) {
                            known.insert(w.to_vec());
                        }
                    }
                }
            }
        }
        Self {
            needles: Vec::new(),
            seen: std::collections::HashSet::new(),
            known,
        }
    }

    fn push(&mut self, secret: usize, encoding: &str, text: String) {
        if self.seen.insert(text.clone()) {
            self.needles.push(Needle {
                secret,
                encoding: encoding.to_owned(),
                text,
            });
        }
    }

    /// The blocks of `pem` that hold secrets.
    fn add_pem_blocks(&mut self, secret: usize, pem: &str, others: NonKeyBlocks) {
        for block in pem_blocks(pem) {
            let is_key = block.label.ends_with("PRIVATE KEY");
            let Some(der) = base64_decode(&block.body) else {
                // A key block that does not decode (garbage): its text is the secret.
                if is_key {
                    self.add_opaque_text(secret, &pem.as_bytes()[block.text_range()]);
                }
                continue;
            };
            let region = match private_region(&block.label, &der) {
                Some(region) => region,
                // A key of a structure not known here: all but the header.
                None if is_key => ((der.len() / 4).min(24), der.len()),
                None if others == NonKeyBlocks::Middle => {
                    let mid = der.len() / 2;
                    (mid.saturating_sub(18), (mid + 18).min(der.len()))
                }
                None => continue,
            };
            let (start, end) = region;
            if end <= start || end - start < 8 {
                continue;
            }
            // Base64 character i carries bits 6i..6i+6 of the DER: the characters that carry
            // secret bits only.
            let c0 = (8 * start).div_ceil(6);
            let c1 = (8 * end / 6).min(block.offsets.len());
            if c1 > c0 {
                let text = &pem.as_bytes()[block.offsets[c0]..block.offsets[c1 - 1] + 1];
                self.add_text(secret, text, true);
            }
            self.add_bytes(secret, &der[start..end], true);
        }
    }

    fn add_opaque(&mut self, secret: usize, bytes: &[u8]) {
        self.add_bytes(secret, bytes, false);
        let printable = bytes
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
        if printable {
            self.add_opaque_text(secret, bytes);
        }
    }

    /// Opaque secret text, minus what is known from a PEM block that decodes (garbage built
    /// around a real key or certificate: its public parts are not secret, and the key's secret
    /// part has needles of its own): the encodings of each remaining run.
    fn add_opaque_text(&mut self, secret: usize, text: &[u8]) {
        let (stripped, offsets): (Vec<u8>, Vec<usize>) = text
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.is_ascii_whitespace())
            .map(|(i, b)| (*b, i))
            .unzip();
        let mut known = vec![false; stripped.len()];
        for (i, w) in stripped.windows(B64_WINDOW).enumerate() {
            if self.known.contains(w) {
                known[i..i + B64_WINDOW].fill(true);
            }
        }
        let mut start = 0;
        while start < stripped.len() {
            if known[start] {
                start += 1;
                continue;
            }
            let end = (start..stripped.len())
                .find(|&i| known[i])
                .unwrap_or(stripped.len());
            if end - start >= MIN_SECRET_BYTES {
                self.add_text(secret, &text[offsets[start]..offsets[end - 1] + 1], false);
            }
            start = end;
        }
    }

    /// Encodings of secret bytes themselves.
    fn add_bytes(&mut self, secret: usize, bytes: &[u8], der: bool) {
        let (hex_name, colon_name, debug_name, debug_hex_name) = if der {
            (
                ENC_DER_HEX,
                ENC_DER_COLON_HEX,
                ENC_DER_DEBUG,
                ENC_DER_DEBUG_HEX,
            )
        } else {
            (
                ENC_BYTES_HEX,
                ENC_BYTES_COLON_HEX,
                ENC_BYTES_DEBUG,
                ENC_BYTES_DEBUG_HEX,
            )
        };
        for w in windows(bytes.len(), HEX_WINDOW_BYTES, HEX_STRIDE, 8) {
            let lower = hex::encode(&bytes[w.clone()]);
            self.push(secret, hex_name, lower.to_ascii_uppercase());
            self.push(secret, hex_name, lower);
        }
        for w in windows(bytes.len(), COLON_HEX_WINDOW_BYTES, BYTE_STRIDE, 8) {
            let parts: Vec<String> = bytes[w].iter().map(|b| format!("{b:02x}")).collect();
            let lower = parts.join(":");
            self.push(secret, colon_name, lower.to_ascii_uppercase());
            self.push(secret, colon_name, lower);
        }
        for w in windows(bytes.len(), DEC_WINDOW_BYTES, BYTE_STRIDE, 8) {
            let dec: Vec<String> = bytes[w.clone()].iter().map(u8::to_string).collect();
            self.push(secret, debug_name, dec.join(", "));
            let hex: Vec<String> = bytes[w].iter().map(|b| format!("{b:x}")).collect();
            self.push(secret, debug_hex_name, hex.join(", "));
        }
        let what = if der { "the DER bytes" } else { "the bytes" };
        self.add_base64(secret, bytes, &format!("base64 of {what}"));
    }

    /// Encodings of secret text (the secret part of a PEM body, with its line breaks).
    fn add_text(&mut self, secret: usize, text: &[u8], pem: bool) {
        let (verbatim, rewrapped, debug_name, hex_name) = if pem {
            (ENC_PEM_TEXT, ENC_PEM_REWRAPPED, ENC_PEM_DEBUG, ENC_PEM_HEX)
        } else {
            (ENC_TEXT, ENC_TEXT, ENC_TEXT_DEBUG, ENC_TEXT_HEX)
        };
        // Windows inside one line: found by plain substring search in the text as written.
        for line in text.split(|&b| b == b'\n') {
            let line = line.trim_ascii();
            for w in windows(line.len(), B64_WINDOW, B64_STRIDE, B64_WINDOW) {
                self.push(
                    secret,
                    verbatim,
                    String::from_utf8_lossy(&line[w]).into_owned(),
                );
            }
        }
        // Across each line break: as written, and JSON-escaped (`\n`).
        for (at, _) in text.iter().enumerate().filter(|(_, b)| **b == b'\n') {
            let before = text[..at].trim_ascii_end();
            let after = text[at + 1..].trim_ascii_start();
            if before.len() >= SPAN_HALF && after.len() >= SPAN_HALF {
                let before = String::from_utf8_lossy(&before[before.len() - SPAN_HALF..]);
                let after = String::from_utf8_lossy(&after[..SPAN_HALF]);
                self.push(secret, verbatim, format!("{before}\n{after}"));
                self.push(secret, ENC_PEM_JSON, format!("{before}\\n{after}"));
            }
        }
        // Any wrapping: windows of the text without whitespace (found in the squashed view).
        let stripped: Vec<u8> = text
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        for w in windows(stripped.len(), B64_WINDOW, B64_STRIDE, B64_WINDOW) {
            let window = String::from_utf8_lossy(&stripped[w]).into_owned();
            self.push(secret, rewrapped, window);
        }
        for w in windows(
            text.len(),
            TEXT_BYTES_WINDOW,
            BYTE_STRIDE,
            TEXT_BYTES_WINDOW,
        ) {
            let dec: Vec<String> = text[w.clone()].iter().map(u8::to_string).collect();
            self.push(secret, debug_name, dec.join(", "));
            let lower = hex::encode(&text[w]);
            self.push(secret, hex_name, lower.to_ascii_uppercase());
            self.push(secret, hex_name, lower);
        }
        let what = if pem {
            "the PEM text (Secret JSON data)"
        } else {
            "the text"
        };
        self.add_base64(secret, text, &format!("base64 of {what}"));
    }

    /// Base64 (standard and URL-safe) of `bytes` at each of the three alignments they can have
    /// in a longer value: only characters that carry bits of `bytes` alone.
    fn add_base64(&mut self, secret: usize, bytes: &[u8], what: &str) {
        use base64::Engine as _;
        for align in 0..3 {
            let mut shifted = vec![0u8; align];
            shifted.extend_from_slice(bytes);
            let encoded = base64::engine::general_purpose::STANDARD.encode(&shifted);
            let c0 = (8 * align).div_ceil(6);
            let c1 = 8 * shifted.len() / 6;
            let chars = &encoded.as_bytes()[c0..c1];
            let encoding = format!("{what}, alignment {align}");
            for w in windows(chars.len(), B64_WINDOW, B64_STRIDE, B64_WINDOW) {
                let window = String::from_utf8_lossy(&chars[w]).into_owned();
                let url_safe = window.replace('+', "-").replace('/', "_");
                self.push(secret, &encoding, window);
                self.push(secret, &format!("{encoding}, URL-safe"), url_safe);
            }
        }
    }
}

/// Start..end of windows of `size` every `stride` over `len` units, the last one flush with the
/// end; one window of all `len` when `min <= len < size`; none below `min`.
fn windows(
    len: usize,
    size: usize,
    stride: usize,
    min: usize,
) -> impl Iterator<Item = std::ops::Range<usize>> {
    let size = size.min(len);
    let starts: Vec<usize> = if len < min || size == 0 {
        Vec::new()
    } else {
        let last = len - size;
        let mut starts: Vec<usize> = (0..=last).step_by(stride).collect();
        if starts.last() != Some(&last) {
            starts.push(last);
        }
        starts
    };
    starts.into_iter().map(move |s| s..s + size)
}

/// `text` without whitespace and without `\n`, `\r`, `\t` escapes (any number of backslashes),
/// `\/` unescaped; with the offset in `text` of every byte kept.
fn squash(text: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::with_capacity(text.len());
    let mut map = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if b == b'\\' {
            let mut j = i;
            while j < text.len() && text[j] == b'\\' {
                j += 1;
            }
            match text.get(j) {
                Some(b'n' | b'r' | b't') => {
                    i = j + 1;
                    continue;
                }
                Some(b'/') => {
                    out.push(b'/');
                    map.push(j);
                    i = j + 1;
                    continue;
                }
                _ => {}
            }
        }
        out.push(b);
        map.push(i);
        i += 1;
    }
    (out, map)
}

/// Needles by their first three bytes, behind a bitmap of those prefixes.
struct Matcher {
    raw: PatternSet,
    squashed: PatternSet,
}

struct PatternSet {
    bitmap: Vec<u64>,
    by_prefix: HashMap<[u8; 3], Vec<(usize, Vec<u8>)>>,
}

impl Matcher {
    fn new(needles: &[Needle]) -> Self {
        let raw = needles
            .iter()
            .enumerate()
            .map(|(i, n)| (i, n.text.as_bytes().to_vec()));
        let squashed = needles
            .iter()
            .enumerate()
            .map(|(i, n)| (i, squash(n.text.as_bytes()).0));
        Self {
            raw: PatternSet::new(raw),
            squashed: PatternSet::new(squashed),
        }
    }
}

impl PatternSet {
    fn new(patterns: impl Iterator<Item = (usize, Vec<u8>)>) -> Self {
        let mut set = Self {
            bitmap: vec![0; (1 << 24) / 64],
            by_prefix: HashMap::new(),
        };
        let mut seen = std::collections::HashSet::new();
        for (needle, pattern) in patterns {
            if pattern.len() < 3 || !seen.insert(pattern.clone()) {
                continue;
            }
            let k = prefix_index(&pattern);
            set.bitmap[k >> 6] |= 1 << (k & 63);
            set.by_prefix
                .entry([pattern[0], pattern[1], pattern[2]])
                .or_default()
                .push((needle, pattern));
        }
        set
    }

    /// Calls `on(needle, start, end)` for every occurrence.
    fn find(&self, hay: &[u8], mut on: impl FnMut(usize, usize, usize)) {
        if hay.len() < 3 {
            return;
        }
        for i in 0..=hay.len() - 3 {
            let k = prefix_index(&hay[i..]);
            if self.bitmap[k >> 6] & (1 << (k & 63)) == 0 {
                continue;
            }
            if let Some(list) = self.by_prefix.get(&[hay[i], hay[i + 1], hay[i + 2]]) {
                for (needle, pattern) in list {
                    if hay[i..].starts_with(pattern) {
                        on(*needle, i, i + pattern.len());
                    }
                }
            }
        }
    }
}

fn prefix_index(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// The match's line(s) around `start..end`: up to [`CONTEXT`] characters either side after
/// redaction, the match and every other span of `spans` redacted, runs that look like encoded
/// bytes replaced by their length, line breaks shown as `⏎`.
fn context(text: &str, start: usize, end: usize, spans: &[(usize, usize)]) -> String {
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[end..].find('\n').map_or(text.len(), |i| end + i);
    let from = floor_boundary(text, start.saturating_sub(CONTEXT_RAW).max(line_start));
    let to = ceil_boundary(text, (end + CONTEXT_RAW).min(line_end).max(end));
    let (mut before, mut after) = (String::new(), String::new());
    let mut pos = from;
    for &(s, e) in spans.iter().filter(|(s, e)| *e > from && *s < to) {
        let out = if s <= start { &mut before } else { &mut after };
        if s > pos {
            out.push_str(&scrub(&text[pos..floor_boundary(text, s)]));
        }
        if s == start {
            out.push_str(&format!("⟦REDACTED: {} bytes⟧", e - s));
        } else {
            out.push_str("⟦another match⟧");
        }
        pos = pos.max(ceil_boundary(text, e));
    }
    if pos < to {
        after.push_str(&scrub(&text[pos..to]));
    }
    let before: Vec<char> = before.chars().collect();
    let after: Vec<char> = after.chars().collect();
    // The redaction mark itself ends `before`: keep it whole.
    let keep = CONTEXT + before.iter().rev().take_while(|c| **c != '⟦').count() + 1;
    let mut shown = String::new();
    if before.len() > keep {
        shown.push('…');
    }
    shown.extend(&before[before.len().saturating_sub(keep)..]);
    shown.extend(after.iter().take(CONTEXT));
    if after.len() > CONTEXT {
        shown.push('…');
    }
    shown.replace('\n', "⏎").replace('\r', "")
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Runs of 20+ base64/hex characters and lists of 6+ numbers are replaced by their length, so a
/// report never prints key bytes next to the one it found.
fn scrub(s: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let encoded =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_');
        let mut j = i;
        while j < chars.len() && encoded(chars[j]) {
            j += 1;
        }
        if j - i >= 20 {
            out.push_str(&format!("⟦{} chars⟧", j - i));
            i = j;
            continue;
        }
        // A list of numbers: digits, commas, spaces.
        let mut k = i;
        let mut commas = 0;
        while k < chars.len() && (chars[k].is_ascii_digit() || matches!(chars[k], ',' | ' ')) {
            commas += usize::from(chars[k] == ',');
            k += 1;
        }
        if commas >= 6 {
            out.push_str(&format!("⟦list of {} numbers⟧", commas + 1));
            i = k;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// One PEM block: its label, its base64 body without whitespace, and the offset in the PEM text
/// of every body character.
struct PemBlock {
    label: String,
    body: String,
    offsets: Vec<usize>,
}

impl PemBlock {
    /// The body's text, line breaks included.
    fn text_range(&self) -> std::ops::Range<usize> {
        match (self.offsets.first(), self.offsets.last()) {
            (Some(&first), Some(&last)) => first..last + 1,
            _ => 0..0,
        }
    }
}

/// Every PEM block of `pem`.
fn pem_blocks(pem: &str) -> Vec<PemBlock> {
    let mut blocks = Vec::new();
    let mut current: Option<PemBlock> = None;
    let mut line_start = 0;
    for raw in pem.split_inclusive('\n') {
        let at = line_start;
        line_start += raw.len();
        let line = raw.trim();
        if let Some(label) = line.strip_prefix("-----BEGIN ") {
            current = Some(PemBlock {
                label: label.trim_end_matches('-').to_owned(),
                body: String::new(),
                offsets: Vec::new(),
            });
        } else if line.starts_with("-----END ") {
            if let Some(block) = current.take() {
                blocks.push(block);
            }
        } else if let Some(block) = current.as_mut() {
            // Skip RFC 1421 headers (Proc-Type: ...) if any.
            if !line.contains(':') {
                for (i, c) in raw.char_indices().filter(|(_, c)| !c.is_whitespace()) {
                    block.body.push(c);
                    block
                        .offsets
                        .extend(std::iter::repeat_n(at + i, c.len_utf8()));
                }
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
