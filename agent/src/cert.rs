//! Summaries of the PEM files a TLS Secret projects into a pod: certificates, private keys, and
//! whether each key belongs to the certificate a server would load beside it.
//!
//! Why this module exists: before mountlag signals a controller to reload, it must know that the
//! material on disk is something the controller will accept (parsable, key matching the leaf,
//! leaf currently valid). A controller that is handed bad material typically keeps the old
//! configuration silently, so the check has to happen here, first.
//!
//! Design constraints, and why:
//!
//! - **Pure.** No I/O, no async, no clock: the caller passes bytes and `now`, so every decision is
//!   reproducible in tests and the module can run on any thread.
//! - **No secret bytes kept.** Secret bytes must never reach logs, metrics, Events or panics
//!   (design.md, "Security rules"). A private key is reduced to its algorithm and a SHA-256 of its
//!   public key, then the decoded DER is zeroized. Error messages name *what* was wrong (block
//!   number, label, reason) and never quote input bytes; the only input text ever echoed is a PEM
//!   label, and only when it looks like one.
//! - **No hand-written crypto.** Keys are loaded by rustls' ring provider, which derives the
//!   public key; X.509 and PEM come from x509-parser. Key/certificate matching compares the
//!   `subjectPublicKey` BIT STRING contents of both SubjectPublicKeyInfos, so it does not depend on
//!   how either side encodes AlgorithmIdentifier parameters (e.g. absent vs. NULL).
//! - **Never panics on input.** Every malformed input maps to a [`CertError`] variant; a
//!   mutation test at the bottom of this file exercises that.
//!
//! Known limits inherited from ring (reported as [`CertError::UnsupportedKeyType`], never as a
//! mismatch): RSA keys must be 2048–4096 bits with a public exponent ≥ 65537; ECDSA keys must be
//! on P-256 or P-384 and carry their public key; Ed25519 is the only EdDSA curve. Zeroizing is
//! best effort: buffers this module owns are wiped, but intermediate copies made inside
//! x509-parser (base64 text), rustls (SEC1 → PKCS#8 re-wrapping) and ring are out of our reach.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use rustls::crypto::ring::sign::any_supported_type;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::asn1_rs::{Any, Class, FromDer, Integer, Oid, Sequence};
use x509_parser::error::{PEMError, X509Error};
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_DSA, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS, OID_SIG_ED448, OID_SIG_ED25519,
};
use x509_parser::pem::Pem;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::Zeroizing;

/// Everything that can be wrong with one file's PEM contents.
///
/// Block numbers are 1-based and count every `-----BEGIN` block in file order, including skipped
/// `EC PARAMETERS` blocks, so they match what a human counts in an editor.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file holds no `-----BEGIN ...-----` block at all (empty, binary DER, or plain text).
    #[error("no PEM blocks found")]
    NoPemBlocks,

    /// PEM framing is broken: bad BEGIN line, missing END line, invalid base64, or invalid UTF-8
    /// inside a block.
    #[error("PEM block {block}: malformed PEM: {source}")]
    MalformedPem {
        block: usize,
        #[source]
        source: PEMError,
    },

    /// A block whose label this module does not handle (e.g. `X509 CRL`, `PUBLIC KEY`).
    /// `label` is echoed only when it looks like an RFC 7468 label; otherwise only its length.
    #[error("PEM block {block}: unsupported label {label}")]
    UnsupportedLabel { block: usize, label: String },

    /// Servers cannot load a key that needs a passphrase from a mounted Secret.
    #[error("PEM block {block} (ENCRYPTED PRIVATE KEY): encrypted private keys are not supported")]
    EncryptedPrivateKey { block: usize },

    /// A `CERTIFICATE` block whose DER x509-parser rejects.
    #[error("PEM block {block} (CERTIFICATE): invalid DER: {source}")]
    InvalidCertificateDer {
        block: usize,
        #[source]
        source: X509Error,
    },

    /// A `CERTIFICATE` block that parses but is unusable (trailing bytes, broken SAN or
    /// basicConstraints extension, IP SAN of impossible length).
    #[error("PEM block {block} (CERTIFICATE): {reason}")]
    InvalidCertificate { block: usize, reason: String },

    /// A key block of a supported algorithm that cannot be loaded (garbage DER, inconsistent
    /// components, missing public key).
    #[error("PEM block {block} ({label}): invalid private key: {reason}")]
    InvalidPrivateKey {
        block: usize,
        label: &'static str,
        reason: &'static str,
    },

    /// A well-formed key that the TLS stack cannot use (DSA, P-521, RSA-1024, Ed448, ...).
    #[error("PEM block {block} ({label}): unsupported private key type: {algorithm}")]
    UnsupportedKeyType {
        block: usize,
        label: &'static str,
        algorithm: String,
    },

    /// Servers load exactly one key per certificate file; two keys make the pairing ambiguous.
    #[error("PEM blocks {first} and {second} both hold a private key; a file may hold at most one")]
    MultiplePrivateKeys { first: usize, second: usize },
}

/// What an operator (and the reload gate) needs to know about one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSummary {
    /// RFC 4514-style string as x509-parser prints it, e.g. `CN=example.test, O=Example`.
    pub subject: String,
    pub issuer: String,
    /// DNS SANs in certificate order.
    pub dns_names: Vec<String>,
    /// IP SANs as text (`10.0.0.1`, `::1`).
    pub ip_addresses: Vec<String>,
    /// Lowercase hex of the DER INTEGER content bytes, no colons: a leading `00` appears exactly
    /// when the DER encoding has one (serials with the high bit set).
    pub serial: String,
    /// Lowercase hex SHA-256 of the certificate DER.
    pub fingerprint_sha256: String,
    /// Lowercase hex SHA-256 of the subjectPublicKey BIT STRING contents; equal to
    /// [`KeySummary::public_key_sha256`] of the matching private key.
    pub public_key_sha256: String,
    #[serde(serialize_with = "serialize_rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(serialize_with = "serialize_rfc3339")]
    pub not_after: OffsetDateTime,
    /// basicConstraints `cA` is true.
    pub is_ca: bool,
}

/// The private key algorithms a rustls/ring based check can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum KeyAlgorithm {
    Rsa,
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

/// A private key reduced to what is safe to keep: its algorithm and a digest of its public half.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeySummary {
    pub algorithm: KeyAlgorithm,
    /// Lowercase hex SHA-256 of the subjectPublicKey BIT STRING contents of the derived public key.
    pub public_key_sha256: String,
}

impl KeySummary {
    /// True when this key is the private half of `cert`'s public key.
    pub fn matches(&self, cert: &CertificateSummary) -> bool {
        self.public_key_sha256 == cert.public_key_sha256
    }
}

/// Everything found in one file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PemContents {
    /// In file order: `[0]` is the leaf a server presents, the rest is the chain sent after it.
    pub certificates: Vec<CertificateSummary>,
    pub private_key: Option<KeySummary>,
}

impl PemContents {
    /// The certificate a server presents from this file: the first one.
    pub fn leaf(&self) -> Option<&CertificateSummary> {
        self.certificates.first()
    }

    /// Number of certificates in the file, leaf included (what a server sends in its
    /// Certificate message). 0 for a key-only file.
    pub fn chain_length(&self) -> usize {
        self.certificates.len()
    }
}

/// Whether a certificate is usable at a given instant (RFC 5280: both bounds inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Validity {
    Valid,
    Expired,
    NotYetValid,
}

impl CertificateSummary {
    /// Validity at `now`; `notBefore` and `notAfter` themselves are still valid (RFC 5280 4.1.2.5).
    pub fn validity_at(&self, now: OffsetDateTime) -> Validity {
        if now < self.not_before {
            Validity::NotYetValid
        } else if now > self.not_after {
            Validity::Expired
        } else {
            Validity::Valid
        }
    }

    /// Whole days until notAfter, floor, negative once expired: 0 during the last day (and at
    /// notAfter itself), -1 from the first nanosecond after notAfter.
    pub fn days_to_expiry(&self, now: OffsetDateTime) -> i64 {
        const NANOS_PER_DAY: i128 = 86_400 * 1_000_000_000;
        let days = (self.not_after - now)
            .whole_nanoseconds()
            .div_euclid(NANOS_PER_DAY);
        // Unreachable saturation: x509 dates span < 10^4 years, far inside i64 days.
        i64::try_from(days).unwrap_or(if days < 0 { i64::MIN } else { i64::MAX })
    }
}

/// True when the file should be parsed as PEM: its name ends with `.crt`, `.pem`, `.key` or
/// `.cer` (case-insensitive) or its bytes contain `-----BEGIN `.
///
/// Both tests because Secret keys are free-form: `tls.crt` is conventional, but `ca`, `bundle`
/// or `haproxy.cfg`-adjacent names with PEM inside also occur.
pub fn is_pem_candidate(file_name: &str, bytes: &[u8]) -> bool {
    const EXTENSIONS: [&str; 4] = [".crt", ".pem", ".key", ".cer"];
    let name = file_name.as_bytes();
    let by_name = EXTENSIONS.iter().any(|ext| {
        name.len() >= ext.len()
            && name[name.len() - ext.len()..].eq_ignore_ascii_case(ext.as_bytes())
    });
    by_name
        || bytes
            .windows(b"-----BEGIN ".len())
            .any(|w| w == b"-----BEGIN ")
}

/// Parses every PEM block of one file.
///
/// Accepted labels: `CERTIFICATE`, `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1),
/// `EC PRIVATE KEY` (SEC1). `EC PARAMETERS` (as written by `openssl ecparam -genkey`) is skipped
/// because servers skip it too. Any other label is an error naming it and its block, so a
/// surprise in a Secret is reported rather than ignored. Text outside blocks is ignored (as
/// OpenSSL does). A file with no block is an error; a file holding only `EC PARAMETERS` yields
/// empty contents. More than one private key is an error.
pub fn parse_pem(bytes: &[u8]) -> Result<PemContents, CertError> {
    let mut contents = PemContents::default();
    let mut key_block: Option<usize> = None;
    let mut blocks = 0usize;

    for item in Pem::iter_from_buffer(bytes) {
        blocks += 1;
        let block = blocks;
        let pem = item.map_err(|source| CertError::MalformedPem { block, source })?;
        let Pem {
            label,
            contents: der,
        } = pem;
        // Wipe decoded bytes on every exit path; key material is the point, certificates are
        // cheap enough to treat the same way.
        let der = Zeroizing::new(der);

        let encoding = match label.as_str() {
            "CERTIFICATE" => {
                contents
                    .certificates
                    .push(summarise_certificate(block, &der)?);
                continue;
            }
            "EC PARAMETERS" => continue,
            "ENCRYPTED PRIVATE KEY" => return Err(CertError::EncryptedPrivateKey { block }),
            "PRIVATE KEY" => KeyEncoding::Pkcs8,
            "RSA PRIVATE KEY" => KeyEncoding::Pkcs1,
            "EC PRIVATE KEY" => KeyEncoding::Sec1,
            other => {
                return Err(CertError::UnsupportedLabel {
                    block,
                    label: sanitise_label(other),
                });
            }
        };
        if let Some(first) = key_block {
            return Err(CertError::MultiplePrivateKeys {
                first,
                second: block,
            });
        }
        key_block = Some(block);
        contents.private_key = Some(summarise_key(block, encoding, &der)?);
    }

    if blocks == 0 {
        return Err(CertError::NoPemBlocks);
    }
    Ok(contents)
}

/// A private key paired with the certificate a server would load with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyPairing {
    pub key_file: String,
    pub cert_file: String,
    /// The key's public key equals the public key of `cert_file`'s leaf.
    pub matches: bool,
}

/// Pairs keys with certificates the way servers are configured to load them, given
/// `(relative path, contents)` of every parsed file of one volume.
///
/// For each file holding a private key, the first rule that finds a file with certificates wins:
///
/// 1. the file itself holds certificates (bundle `X.pem`, HAProxy style) → paired with itself;
/// 2. `X.pem.key` → `X.pem` (HAProxy loads the key from beside the crt file);
/// 3. `X.key` → `X.crt` (same directory; covers `tls.key`/`tls.crt`);
/// 4. `X.key` → `X.pem` when no `X.crt` with certificates exists;
/// 5. `X.key` → `X` (HAProxy's general `<crt file>.key`, e.g. `tls.crt.key` → `tls.crt`).
///
/// Certificates without a key (CA bundles such as `ca.crt`) and keys without a certificate yield
/// no pairing; neither is a problem by itself. Paths are matched exactly (`/` separated, case
/// sensitive) as they appear in the volume. Output is sorted by `key_file`; if a path appears
/// twice in `files`, its first entry is used.
pub fn pair_keys(files: &[(&str, &PemContents)]) -> Vec<KeyPairing> {
    let mut by_path: BTreeMap<&str, &PemContents> = BTreeMap::new();
    for (path, contents) in files {
        by_path.entry(path).or_insert(contents);
    }

    // BTreeMap iteration is sorted by path, so the output is sorted by key_file.
    by_path
        .iter()
        .filter_map(|(&key_path, contents)| {
            let key = contents.private_key.as_ref()?;
            let (cert_path, leaf) = if let Some(leaf) = contents.leaf() {
                (key_path.to_owned(), leaf)
            } else {
                cert_candidates(key_path)
                    .into_iter()
                    .find_map(|candidate| {
                        let leaf = by_path.get(candidate.as_str())?.leaf()?;
                        Some((candidate, leaf))
                    })?
            };
            Some(KeyPairing {
                key_file: key_path.to_owned(),
                cert_file: cert_path,
                matches: key.matches(leaf),
            })
        })
        .collect()
}

/// Certificate files a server would load beside `key_path`, most specific first.
fn cert_candidates(key_path: &str) -> Vec<String> {
    let Some(stem) = key_path.strip_suffix(".key") else {
        return Vec::new();
    };
    // `.key` alone (or `dir/.key`) has no stem to pair on.
    if stem.is_empty() || stem.ends_with('/') {
        return Vec::new();
    }
    if stem.ends_with(".pem") {
        return vec![stem.to_owned()];
    }
    // Last: HAProxy's general rule, `<crt file>.key` beside any certificate file name
    // (`tls.crt.key` with `tls.crt`).
    vec![
        format!("{stem}.crt"),
        format!("{stem}.pem"),
        stem.to_owned(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Certificates

fn summarise_certificate(block: usize, der: &[u8]) -> Result<CertificateSummary, CertError> {
    let invalid = |reason: String| CertError::InvalidCertificate { block, reason };

    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertError::InvalidCertificateDer {
            block,
            source: nom_to_x509(e),
        })?;
    // Trailing bytes mean the block is not one certificate; servers reject that.
    if !rest.is_empty() {
        return Err(invalid(format!(
            "{} trailing bytes after the certificate DER",
            rest.len()
        )));
    }

    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| invalid(format!("unreadable subjectAltName extension: {e}")))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                GeneralName::IPAddress(ip) => ip_addresses.push(
                    ip_to_string(ip)
                        .ok_or_else(|| invalid(format!("IP address SAN of {} bytes", ip.len())))?,
                ),
                // A DNS or IP SAN x509-parser could not decode would silently vanish from the
                // summary; refuse instead. Other malformed name types do not affect serving.
                GeneralName::Invalid(tag, _) if matches!(tag.0, 2 | 7) => {
                    return Err(invalid(format!(
                        "subjectAltName entry [{}] is not valid",
                        tag.0
                    )));
                }
                _ => {}
            }
        }
    }

    let is_ca = cert
        .basic_constraints()
        .map_err(|e| invalid(format!("unreadable basicConstraints extension: {e}")))?
        .is_some_and(|bc| bc.value.ca);

    Ok(CertificateSummary {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        dns_names,
        ip_addresses,
        serial: hex::encode(cert.raw_serial()),
        fingerprint_sha256: sha256_hex(der),
        public_key_sha256: sha256_hex(&cert.public_key().subject_public_key.data),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        is_ca,
    })
}

fn ip_to_string(bytes: &[u8]) -> Option<String> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(Ipv4Addr::from(v4).to_string());
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Some(Ipv6Addr::from(v6).to_string());
    }
    None
}

fn nom_to_x509(e: x509_parser::nom::Err<X509Error>) -> X509Error {
    match e {
        x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
        x509_parser::nom::Err::Incomplete(_) => X509Error::InvalidCertificate,
    }
}

// ---------------------------------------------------------------------------------------------
// Private keys

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyEncoding {
    Pkcs8,
    Pkcs1,
    Sec1,
}

impl KeyEncoding {
    fn label(self) -> &'static str {
        match self {
            Self::Pkcs8 => "PRIVATE KEY",
            Self::Pkcs1 => "RSA PRIVATE KEY",
            Self::Sec1 => "EC PRIVATE KEY",
        }
    }
}

fn summarise_key(block: usize, encoding: KeyEncoding, der: &[u8]) -> Result<KeySummary, CertError> {
    let label = encoding.label();
    // Borrowed, so the only owned copy of the secret stays in the caller's Zeroizing buffer.
    let key_der = match encoding {
        KeyEncoding::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
        KeyEncoding::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
        KeyEncoding::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
    };
    // rustls' error is a generic string; our own classification says more and is known to be
    // free of key bytes.
    let signing_key =
        any_supported_type(&key_der).map_err(|_| classify_rejected_key(block, encoding, der))?;
    let spki_der = signing_key
        .public_key()
        .ok_or(CertError::InvalidPrivateKey {
            block,
            label,
            reason: "the TLS stack cannot derive its public key",
        })?;
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der.as_ref()).map_err(|_| {
        CertError::InvalidPrivateKey {
            block,
            label,
            reason: "derived public key is not a valid SubjectPublicKeyInfo",
        }
    })?;
    let algorithm = spki_algorithm(&spki).ok_or_else(|| CertError::UnsupportedKeyType {
        block,
        label,
        algorithm: format!("public key algorithm {}", spki.algorithm.algorithm),
    })?;
    Ok(KeySummary {
        algorithm,
        public_key_sha256: sha256_hex(&spki.subject_public_key.data),
    })
}

fn spki_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> Option<KeyAlgorithm> {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_PKCS1_RSAENCRYPTION {
        Some(KeyAlgorithm::Rsa)
    } else if *oid == OID_SIG_ED25519 {
        Some(KeyAlgorithm::Ed25519)
    } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .clone()
            .and_then(|p| Oid::try_from(p).ok())?;
        if curve == OID_EC_P256 {
            Some(KeyAlgorithm::EcdsaP256)
        } else if curve == OID_NIST_EC_P384 {
            Some(KeyAlgorithm::EcdsaP384)
        } else {
            None
        }
    } else {
        None
    }
}

/// Why ring refused a key: unsupported-but-valid material must read differently from garbage,
/// because the fix differs (re-issue with another algorithm vs. fix the Secret).
fn classify_rejected_key(block: usize, encoding: KeyEncoding, der: &[u8]) -> CertError {
    let label = encoding.label();
    let verdict = match encoding {
        KeyEncoding::Pkcs1 => classify_rsa(der),
        KeyEncoding::Sec1 => classify_sec1(der),
        KeyEncoding::Pkcs8 => classify_pkcs8(der),
    };
    match verdict {
        Rejection::Unsupported(algorithm) => CertError::UnsupportedKeyType {
            block,
            label,
            algorithm,
        },
        Rejection::Invalid(reason) => CertError::InvalidPrivateKey {
            block,
            label,
            reason,
        },
    }
}

enum Rejection {
    Unsupported(String),
    Invalid(&'static str),
}

const P256_OR_P384_REJECTED: &str =
    "EC key rejected: malformed, inconsistent, or missing its embedded public key";

fn classify_pkcs8(der: &[u8]) -> Rejection {
    type Parsed<'a> = (Oid<'a>, Option<Any<'a>>, &'a [u8]);
    // PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier, privateKey OCTET STRING, ... }
    let parsed: Result<(_, Parsed<'_>), _> = Sequence::from_der_and_then(der, |i| {
        let (i, _version) = Integer::from_der(i)?;
        let (i, (oid, params)) = Sequence::from_der_and_then(i, |a| {
            let (a, oid) = Oid::from_der(a)?;
            let (a, params) = if a.is_empty() {
                (a, None)
            } else {
                let (a, any) = Any::from_der(a)?;
                (a, Some(any))
            };
            Ok((a, (oid, params)))
        })?;
        let (i, private_key) = <&[u8]>::from_der(i)?;
        Ok::<_, x509_parser::nom::Err<x509_parser::asn1_rs::Error>>((i, (oid, params, private_key)))
    });
    let Ok((_, (oid, params, private_key))) = parsed else {
        return Rejection::Invalid("not a PKCS#8 PrivateKeyInfo");
    };

    if oid == OID_PKCS1_RSAENCRYPTION {
        classify_rsa(private_key)
    } else if oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        match params.and_then(|p| Oid::try_from(p).ok()) {
            Some(curve) => classify_curve(&curve),
            None => Rejection::Invalid("EC key without a named curve"),
        }
    } else if oid == OID_SIG_ED25519 {
        Rejection::Invalid("Ed25519 key rejected: malformed or inconsistent")
    } else {
        Rejection::Unsupported(algorithm_name(&oid))
    }
}

fn classify_sec1(der: &[u8]) -> Rejection {
    // ECPrivateKey ::= SEQUENCE { version, privateKey OCTET STRING,
    //                             parameters [0] ECParameters OPTIONAL, publicKey [1] OPTIONAL }
    let parsed = Sequence::from_der_and_then(der, |i| {
        let (i, _version) = Integer::from_der(i)?;
        let (mut i, _private_key) = <&[u8]>::from_der(i)?;
        let mut curve = None;
        while !i.is_empty() {
            let (rest, any) = Any::from_der(i)?;
            if any.class() == Class::ContextSpecific && any.tag().0 == 0 {
                curve = Oid::from_der(any.data).ok().map(|(_, oid)| oid);
            }
            i = rest;
        }
        Ok::<_, x509_parser::nom::Err<x509_parser::asn1_rs::Error>>((i, curve))
    });
    match parsed {
        Err(_) => Rejection::Invalid("not a SEC1 ECPrivateKey"),
        Ok((_, Some(curve))) => classify_curve(&curve),
        Ok((_, None)) => Rejection::Invalid("EC key rejected and names no curve"),
    }
}

fn classify_curve(curve: &Oid<'_>) -> Rejection {
    if *curve == OID_EC_P256 || *curve == OID_NIST_EC_P384 {
        Rejection::Invalid(P256_OR_P384_REJECTED)
    } else if *curve == OID_NIST_EC_P521 {
        Rejection::Unsupported("ECDSA on curve P-521".to_owned())
    } else {
        Rejection::Unsupported(format!("ECDSA on curve {curve}"))
    }
}

fn classify_rsa(der: &[u8]) -> Rejection {
    // RSAPrivateKey ::= SEQUENCE { version, modulus, publicExponent, ... }
    let parsed = Sequence::from_der_and_then(der, |i| {
        let (i, version) = Integer::from_der(i)?;
        let (i, modulus) = Integer::from_der(i)?;
        let (i, exponent) = Integer::from_der(i)?;
        Ok::<_, x509_parser::nom::Err<x509_parser::asn1_rs::Error>>((
            i,
            (
                version.as_u32().ok(),
                bit_length(modulus.as_ref()),
                bit_length(exponent.as_ref()),
                exponent.as_u64().ok(),
            ),
        ))
    });
    let Ok((_, (version, modulus_bits, exponent_bits, exponent))) = parsed else {
        return Rejection::Invalid("not a PKCS#1 RSAPrivateKey");
    };
    if version != Some(0) {
        return Rejection::Unsupported("multi-prime RSA".to_owned());
    }
    if !(2048..=4096).contains(&modulus_bits) {
        return Rejection::Unsupported(format!(
            "RSA-{modulus_bits} (supported: 2048 to 4096 bits)"
        ));
    }
    if exponent_bits > 33 || exponent.is_none_or(|e| e < 65537) {
        return Rejection::Unsupported(
            "RSA with public exponent below 65537 or above 2^33".to_owned(),
        );
    }
    Rejection::Invalid("RSA key rejected: malformed or inconsistent components")
}

/// Bit length of a big-endian unsigned integer (leading zero bytes ignored).
fn bit_length(bytes: &[u8]) -> usize {
    let significant = match bytes.iter().position(|&b| b != 0) {
        Some(first) => &bytes[first..],
        None => return 0,
    };
    match significant.first() {
        Some(&top) => significant.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

fn algorithm_name(oid: &Oid<'_>) -> String {
    let name = if *oid == OID_KEY_TYPE_DSA {
        "DSA"
    } else if *oid == OID_SIG_ED448 {
        "Ed448"
    } else if *oid == OID_PKCS1_RSASSAPSS {
        "RSASSA-PSS"
    } else if oid.to_id_string() == "1.3.101.110" {
        "X25519"
    } else if oid.to_id_string() == "1.3.101.111" {
        "X448"
    } else if oid.to_id_string() == "1.2.840.113549.1.3.1" {
        "DH"
    } else {
        return format!("algorithm {oid}");
    };
    format!("{name} ({oid})")
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Labels come from the input; echo them only when they look like RFC 7468 labels (uppercase,
/// digits, spaces, a little punctuation, short), so a mangled header can never smuggle body text
/// or control characters into logs.
fn sanitise_label(label: &str) -> String {
    let plausible = !label.is_empty()
        && label.len() <= 40
        && label.bytes().all(|b| {
            b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b' ' | b'.' | b'_')
        });
    if plausible {
        label.to_owned()
    } else {
        format!("(unprintable, {} bytes)", label.len())
    }
}

fn serialize_rfc3339<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::Error as _;
    let text = t
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(S::Error::custom)?;
    s.serialize_str(&text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SerialNumber,
        SignatureAlgorithm,
    };
    use time::Duration;
    use time::macros::datetime;

    const RSA_A: &str = include_str!("../tests/fixtures/rsa-a.key.pem");
    const RSA_A_PKCS1: &str = include_str!("../tests/fixtures/rsa-a.rsa.pem");
    const RSA_B: &str = include_str!("../tests/fixtures/rsa-b.key.pem");
    const P256_SEC1: &str = include_str!("../tests/fixtures/ec-p256.sec1.pem");
    const P256_PKCS8: &str = include_str!("../tests/fixtures/ec-p256.pkcs8.pem");
    const P384_SEC1: &str = include_str!("../tests/fixtures/ec-p384.sec1.pem");
    const P384_PKCS8: &str = include_str!("../tests/fixtures/ec-p384.pkcs8.pem");
    const ED25519_V1: &str = include_str!("../tests/fixtures/ed25519.openssl.pem");
    const DSA: &str = include_str!("../tests/fixtures/dsa.key.pem");
    const P521_SEC1: &str = include_str!("../tests/fixtures/ec-p521.sec1.pem");
    const RSA_1024: &str = include_str!("../tests/fixtures/rsa-1024.rsa.pem");

    // Public key digests computed with OpenSSL, not with this module (see fixtures/README.md).
    const RSA_A_PUB: &str = "ea847300ca6be08104e09604c78d9a938f30241e7f8040d04833984c4fd8f95e";
    const RSA_B_PUB: &str = "89225f54a9ca74ff8dcd9c08fe183c41977b3f0329d767db0a32c7a29fafa0e0";
    const P256_PUB: &str = "8f2adf3f20e9884a0779004e62d344abcdf1ede88ab8672388dad36048341bb5";
    const P384_PUB: &str = "5f20f855b7bd1e5e5c66e550f78c2be65b16b3bc4e5f0df9ef5dc4144e12501c";
    const ED25519_PUB: &str = "b294e4bab37dacd1dcb6ca758ffd549172e15d1032b6d687fe60aa48452f921c";

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        cert: rcgen::Certificate,
    }

    fn ca(alg: &'static SignatureAlgorithm) -> Ca {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "mountlag test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            cert,
        }
    }

    fn leaf_params(sans: &[&str]) -> CertificateParams {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "leaf.example.test");
        params
    }

    fn leaf(ca: &Ca, key: &KeyPair) -> rcgen::Certificate {
        leaf_params(&["leaf.example.test"])
            .signed_by(key, &ca.issuer)
            .unwrap()
    }

    fn rsa_key(pem: &str) -> KeyPair {
        KeyPair::from_pem_and_sign_algo(pem, &rcgen::PKCS_RSA_SHA256).unwrap()
    }

    fn parse(text: &str) -> PemContents {
        parse_pem(text.as_bytes()).unwrap()
    }

    fn key_of(text: &str) -> KeySummary {
        parse(text).private_key.unwrap()
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    fn b64(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn pem_block(label: &str, der: &[u8]) -> String {
        let body = b64(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in body.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    fn der_of(pem: &str) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents
    }

    /// Every 16-character window of the base64 bodies in `pem`.
    fn body_windows(pem: &str) -> Vec<String> {
        let mut windows = Vec::new();
        let mut body = String::new();
        for line in pem.lines().chain(std::iter::once("-----")) {
            if line.starts_with("-----") {
                let bytes = body.as_bytes();
                windows.extend(
                    bytes
                        .windows(16)
                        .map(|w| String::from_utf8_lossy(w).into_owned()),
                );
                body.clear();
            } else {
                body.push_str(line.trim());
            }
        }
        windows
    }

    fn assert_no_leak(output: &str, input: &str) {
        for window in body_windows(input) {
            assert!(
                !output.contains(&window),
                "output quotes input bytes {window:?}: {output}"
            );
        }
    }

    fn assert_error_is_clean(err: &CertError, input: &str) {
        assert_no_leak(&err.to_string(), input);
        assert_no_leak(&format!("{err:?}"), input);
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            assert_no_leak(&s.to_string(), input);
            source = s.source();
        }
    }

    // -----------------------------------------------------------------------------------------
    // Certificates

    #[test]
    fn leaf_and_chain_are_summarised_in_file_order() {
        let ca = ca(&rcgen::PKCS_ECDSA_P256_SHA256);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = leaf_params(&[
            "example.test",
            "www.example.test",
            "10.0.0.1",
            "2001:db8::1",
        ]);
        params.serial_number = Some(SerialNumber::from_slice(&[0x01, 0x23, 0xab]));
        let leaf = params.signed_by(&key, &ca.issuer).unwrap();

        let file = format!("{}{}", leaf.pem(), ca.cert.pem());
        let contents = parse(&file);
        assert_eq!(contents.chain_length(), 2);
        assert!(contents.private_key.is_none());

        let got = contents.leaf().unwrap();
        assert_eq!(got.subject, "CN=leaf.example.test");
        assert_eq!(got.issuer, "CN=mountlag test CA");
        assert_eq!(got.dns_names, ["example.test", "www.example.test"]);
        assert_eq!(got.ip_addresses, ["10.0.0.1", "2001:db8::1"]);
        assert_eq!(got.serial, "0123ab");
        assert_eq!(got.fingerprint_sha256, sha(leaf.der()));
        assert_eq!(got.public_key_sha256, sha(key.public_key_raw()));
        assert!(!got.is_ca);

        let chain = &contents.certificates[1];
        assert_eq!(chain.subject, "CN=mountlag test CA");
        assert_eq!(chain.fingerprint_sha256, sha(ca.cert.der()));
        assert!(chain.is_ca);

        // Reversed file: the first certificate is what a server presents, whatever it is.
        let reversed = parse(&format!("{}{}", ca.cert.pem(), leaf.pem()));
        assert_eq!(reversed.leaf().unwrap().subject, "CN=mountlag test CA");
        assert_eq!(reversed.chain_length(), 2);
    }

    #[test]
    fn serial_keeps_the_der_leading_zero_of_high_bit_serials() {
        let ca = ca(&rcgen::PKCS_ECDSA_P256_SHA256);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = leaf_params(&["example.test"]);
        params.serial_number = Some(SerialNumber::from_slice(&[0x80, 0x01]));
        let leaf = params.signed_by(&key, &ca.issuer).unwrap();
        assert_eq!(parse(&leaf.pem()).leaf().unwrap().serial, "008001");
    }

    #[test]
    fn dates_round_trip_and_serialise_as_rfc3339() {
        let ca = ca(&rcgen::PKCS_ED25519);
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut params = leaf_params(&["example.test"]);
        params.not_before = datetime!(2025-01-01 0:00 UTC);
        params.not_after = datetime!(2025-04-01 12:30:05 UTC);
        let leaf = params.signed_by(&key, &ca.issuer).unwrap();
        let file = format!("{}{}", leaf.pem(), key.serialize_pem());
        let contents = parse(&file);
        let got = contents.leaf().unwrap();
        assert_eq!(got.not_before, datetime!(2025-01-01 0:00 UTC));
        assert_eq!(got.not_after, datetime!(2025-04-01 12:30:05 UTC));

        let json = serde_json::to_value(&contents).unwrap();
        let cert = &json["certificates"][0];
        assert_eq!(cert["notBefore"], "2025-01-01T00:00:00Z");
        assert_eq!(cert["notAfter"], "2025-04-01T12:30:05Z");
        assert_eq!(cert["isCa"], false);
        assert_eq!(cert["dnsNames"][0], "example.test");
        assert!(cert["fingerprintSha256"].is_string());
        assert_eq!(json["privateKey"]["algorithm"], "ed25519");
        assert_eq!(
            serde_json::to_value(Validity::NotYetValid).unwrap(),
            "notYetValid"
        );
        assert_eq!(
            serde_json::to_value(KeyAlgorithm::EcdsaP256).unwrap(),
            "ecdsaP256"
        );
    }

    fn summary(not_before: OffsetDateTime, not_after: OffsetDateTime) -> CertificateSummary {
        CertificateSummary {
            subject: String::new(),
            issuer: String::new(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            serial: String::new(),
            fingerprint_sha256: String::new(),
            public_key_sha256: String::new(),
            not_before,
            not_after,
            is_ca: false,
        }
    }

    #[test]
    fn validity_bounds_are_inclusive() {
        let nb = datetime!(2025-01-01 0:00 UTC);
        let na = datetime!(2025-04-01 0:00 UTC);
        let cert = summary(nb, na);
        let second = Duration::SECOND;
        assert_eq!(cert.validity_at(nb - second), Validity::NotYetValid);
        assert_eq!(
            cert.validity_at(nb - Duration::nanoseconds(1)),
            Validity::NotYetValid
        );
        assert_eq!(cert.validity_at(nb), Validity::Valid);
        assert_eq!(cert.validity_at(nb + Duration::days(30)), Validity::Valid);
        assert_eq!(cert.validity_at(na), Validity::Valid);
        assert_eq!(
            cert.validity_at(na + Duration::nanoseconds(1)),
            Validity::Expired
        );
        assert_eq!(cert.validity_at(na + second), Validity::Expired);
        assert_eq!(
            cert.validity_at(datetime!(2030-01-01 0:00 UTC)),
            Validity::Expired
        );
    }

    #[test]
    fn days_to_expiry_floors_and_goes_negative_after_expiry() {
        let na = datetime!(2025-04-01 0:00 UTC);
        let cert = summary(datetime!(2025-01-01 0:00 UTC), na);
        let cases = [
            (na - Duration::days(90), 90),
            (na - Duration::days(2) - Duration::SECOND, 2),
            (na - Duration::days(1), 1),
            (na - Duration::days(1) + Duration::SECOND, 0),
            (na - Duration::milliseconds(500), 0),
            (na, 0),
            (na + Duration::milliseconds(500), -1),
            (na + Duration::SECOND, -1),
            (na + Duration::days(1), -1),
            (na + Duration::days(1) + Duration::SECOND, -2),
            (na + Duration::days(365), -365),
        ];
        for (now, want) in cases {
            assert_eq!(cert.days_to_expiry(now), want, "now = {now}");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Keys

    #[test]
    fn each_key_type_matches_its_own_certificate_only() {
        let ca = ca(&rcgen::PKCS_ECDSA_P384_SHA384);
        let keys = [
            (
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
                KeyAlgorithm::EcdsaP256,
            ),
            (
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
                KeyAlgorithm::EcdsaP384,
            ),
            (
                KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
                KeyAlgorithm::Ed25519,
            ),
            (rsa_key(RSA_A), KeyAlgorithm::Rsa),
            (rsa_key(RSA_B), KeyAlgorithm::Rsa),
            (
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
                KeyAlgorithm::EcdsaP256,
            ),
        ];
        let mut pairs = Vec::new();
        for (key, algorithm) in &keys {
            let summary = key_of(&key.serialize_pem());
            assert_eq!(summary.algorithm, *algorithm);
            assert_eq!(summary.public_key_sha256, sha(key.public_key_raw()));
            let cert = parse(&leaf(&ca, key).pem()).certificates.remove(0);
            pairs.push((summary, cert));
        }
        for (i, (key, _)) in pairs.iter().enumerate() {
            for (j, (_, cert)) in pairs.iter().enumerate() {
                assert_eq!(key.matches(cert), i == j, "key {i} vs cert {j}");
            }
        }
    }

    #[test]
    fn rsa_keys_in_pkcs8_and_pkcs1_agree_with_openssl() {
        let a = key_of(RSA_A);
        assert_eq!(a.algorithm, KeyAlgorithm::Rsa);
        assert_eq!(a.public_key_sha256, RSA_A_PUB);
        assert_eq!(key_of(RSA_A_PKCS1), a);
        assert_eq!(key_of(RSA_B).public_key_sha256, RSA_B_PUB);

        let ca = ca(&rcgen::PKCS_ECDSA_P256_SHA256);
        let cert = parse(&leaf(&ca, &rsa_key(RSA_A)).pem())
            .certificates
            .remove(0);
        assert_eq!(cert.public_key_sha256, RSA_A_PUB);
        assert!(key_of(RSA_A_PKCS1).matches(&cert));
        assert!(!key_of(RSA_B).matches(&cert));
    }

    #[test]
    fn ec_keys_in_sec1_and_pkcs8_agree_with_openssl() {
        let p256 = parse(P256_SEC1);
        assert!(p256.certificates.is_empty(), "EC PARAMETERS is skipped");
        let p256 = p256.private_key.unwrap();
        assert_eq!(p256.algorithm, KeyAlgorithm::EcdsaP256);
        assert_eq!(p256.public_key_sha256, P256_PUB);
        assert_eq!(key_of(P256_PKCS8), p256);

        let p384 = key_of(P384_SEC1);
        assert_eq!(p384.algorithm, KeyAlgorithm::EcdsaP384);
        assert_eq!(p384.public_key_sha256, P384_PUB);
        assert_eq!(key_of(P384_PKCS8), p384);

        // A certificate issued for the PKCS#8 form matches the SEC1 form of the same key.
        let ca = ca(&rcgen::PKCS_ECDSA_P256_SHA256);
        let key = KeyPair::from_pem(P256_PKCS8).unwrap();
        let cert = parse(&leaf(&ca, &key).pem()).certificates.remove(0);
        assert!(p256.matches(&cert));
        assert!(!p384.matches(&cert));
    }

    #[test]
    fn openssl_ed25519_pkcs8_v1_is_accepted() {
        let key = key_of(ED25519_V1);
        assert_eq!(key.algorithm, KeyAlgorithm::Ed25519);
        assert_eq!(key.public_key_sha256, ED25519_PUB);
    }

    #[test]
    fn bundle_with_key_and_chain_in_any_order() {
        let ca = ca(&rcgen::PKCS_ECDSA_P256_SHA256);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let leaf = leaf(&ca, &key);
        for file in [
            format!("{}{}{}", key.serialize_pem(), leaf.pem(), ca.cert.pem()),
            format!("{}{}{}", leaf.pem(), ca.cert.pem(), key.serialize_pem()),
            format!(
                "explanatory text\n{}\n\n{}{}",
                leaf.pem(),
                key.serialize_pem(),
                ca.cert.pem()
            ),
            format!("{}{}", leaf.pem(), key.serialize_pem()).replace('\n', "\r\n"),
        ] {
            let contents = parse(&file);
            assert_eq!(contents.leaf().unwrap().fingerprint_sha256, sha(leaf.der()));
            assert!(
                contents
                    .private_key
                    .as_ref()
                    .unwrap()
                    .matches(contents.leaf().unwrap())
            );
        }
    }

    // -----------------------------------------------------------------------------------------
    // Pairing

    #[test]
    fn keys_are_paired_the_way_servers_load_them() {
        let ca = ca(&rcgen::PKCS_ECDSA_P256_SHA256);
        let key_a = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key_b = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let leaf_a = leaf(&ca, &key_a).pem();
        let leaf_b = leaf(&ca, &key_b).pem();
        let key_a = key_a.serialize_pem();
        let key_b = key_b.serialize_pem();

        let files: Vec<(&str, PemContents)> = vec![
            ("tls.key", parse(&key_a)),
            ("tls.crt", parse(&format!("{leaf_a}{}", ca.cert.pem()))),
            ("ca.crt", parse(&ca.cert.pem())),
            ("site.pem.key", parse(&key_b)),
            ("site.pem", parse(&leaf_b)),
            ("bundle.pem", parse(&format!("{leaf_a}{key_a}"))),
            ("other.key", parse(&key_a)),
            ("other.pem", parse(&leaf_b)),
            ("x.key", parse(&key_b)),
            ("x.crt", parse(&leaf_b)),
            ("x.pem", parse(&leaf_a)),
            ("a/b/n.key", parse(&key_a)),
            ("a/b/n.crt", parse(&leaf_a)),
            ("a/n.crt", parse(&leaf_b)),
            ("lonely.key", parse(&key_a)),
            ("keyonly.key", parse(&key_a)),
            ("keyonly.crt", parse(&key_b)),
            (".key", parse(&key_a)),
            (".crt", parse(&leaf_a)),
            ("hap/tls.crt.key", parse(&key_b)),
            ("hap/tls.crt", parse(&leaf_b)),
        ];
        let refs: Vec<(&str, &PemContents)> = files.iter().map(|(p, c)| (*p, c)).collect();
        let pairing = |key: &str, cert: &str, matches: bool| KeyPairing {
            key_file: key.to_owned(),
            cert_file: cert.to_owned(),
            matches,
        };
        assert_eq!(
            pair_keys(&refs),
            vec![
                pairing("a/b/n.key", "a/b/n.crt", true),
                pairing("bundle.pem", "bundle.pem", true),
                pairing("hap/tls.crt.key", "hap/tls.crt", true),
                pairing("other.key", "other.pem", false),
                pairing("site.pem.key", "site.pem", true),
                pairing("tls.key", "tls.crt", true),
                pairing("x.key", "x.crt", true),
            ]
        );

        // Order of the input does not matter.
        let mut reversed = refs.clone();
        reversed.reverse();
        assert_eq!(pair_keys(&reversed), pair_keys(&refs));

        // A lone CA bundle or a lone key yields nothing.
        assert!(pair_keys(&refs[2..3]).is_empty());
        assert!(pair_keys(&[("lonely.key", &files[14].1)]).is_empty());
    }

    // -----------------------------------------------------------------------------------------
    // Malformed input

    fn expect_err(input: &str) -> CertError {
        let err = parse_pem(input.as_bytes()).unwrap_err();
        assert_error_is_clean(&err, input);
        err
    }

    #[test]
    fn files_without_pem_blocks_are_rejected() {
        assert!(matches!(
            parse_pem(b"").unwrap_err(),
            CertError::NoPemBlocks
        ));
        assert!(matches!(
            parse_pem(b"\x00\xffnot pem at all\n\x80\x81").unwrap_err(),
            CertError::NoPemBlocks
        ));
        let ca = ca(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert!(matches!(
            parse_pem(ca.cert.der()).unwrap_err(),
            CertError::NoPemBlocks
        ));
        assert_eq!(CertError::NoPemBlocks.to_string(), "no PEM blocks found");
    }

    #[test]
    fn broken_framing_and_base64_are_malformed_pem() {
        let ca = ca(&rcgen::PKCS_ECDSA_P256_SHA256);
        let pem = ca.cert.pem();

        // Truncated file: no END line.
        let truncated = &pem[..pem.len() / 2];
        let err = expect_err(truncated);
        assert!(
            matches!(err, CertError::MalformedPem { block: 1, .. }),
            "{err}"
        );

        // Base64 cut short inside the last line, END line intact.
        let end = pem.find("-----END").unwrap();
        let cut = format!("{}\n{}", &pem[..end - 4], &pem[end..]);
        let err = expect_err(&cut);
        assert!(
            matches!(err, CertError::MalformedPem { block: 1, .. }),
            "{err}"
        );

        // Invalid base64 characters.
        let bad = pem.replacen("MII", "M*I", 1);
        let err = expect_err(&bad);
        assert!(
            matches!(err, CertError::MalformedPem { block: 1, .. }),
            "{err}"
        );

        // The second block is the broken one.
        let two = format!("{pem}{truncated}");
        let err = expect_err(&two);
        assert!(
            matches!(err, CertError::MalformedPem { block: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("PEM block 2: malformed PEM"));

        // Bad BEGIN line.
        let err = expect_err("-----BEGIN CERTIFICATE\nAAAA\n-----END CERTIFICATE-----\n");
        assert!(
            matches!(err, CertError::MalformedPem { block: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn garbage_der_in_a_valid_wrapper_is_typed_by_label() {
        let garbage = b"this is certainly not DER; it is just some text";
        let err = expect_err(&pem_block("CERTIFICATE", garbage));
        assert!(
            matches!(err, CertError::InvalidCertificateDer { block: 1, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("PEM block 1 (CERTIFICATE): invalid DER: "),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());

        for label in ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"] {
            let err = expect_err(&pem_block(label, garbage));
            match &err {
                CertError::InvalidPrivateKey {
                    block: 1,
                    label: got,
                    ..
                } => assert_eq!(*got, label),
                other => panic!("{label}: {other}"),
            }
        }

        // Empty body.
        let err = expect_err("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n");
        assert!(
            matches!(err, CertError::InvalidCertificateDer { block: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn truncated_der_and_trailing_bytes_are_invalid_certificates() {
        let ca = ca(&rcgen::PKCS_ECDSA_P256_SHA256);
        let der = ca.cert.der().to_vec();

        let short = pem_block("CERTIFICATE", &der[..der.len() - 10]);
        let err = expect_err(&short);
        assert!(
            matches!(err, CertError::InvalidCertificateDer { block: 1, .. }),
            "{err}"
        );

        let mut long = der.clone();
        long.extend_from_slice(&[0, 0]);
        let err = expect_err(&pem_block("CERTIFICATE", &long));
        assert!(
            matches!(err, CertError::InvalidCertificate { block: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn inconsistent_ec_key_is_invalid_not_unsupported() {
        let mut der = der_of(P256_PKCS8);
        // The last bytes are the embedded public point; ring checks it against the scalar.
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let input = pem_block("PRIVATE KEY", &der);
        let err = expect_err(&input);
        assert!(
            matches!(
                err,
                CertError::InvalidPrivateKey {
                    block: 1,
                    label: "PRIVATE KEY",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn unsupported_labels_are_named_with_their_block() {
        let ca = ca(&rcgen::PKCS_ECDSA_P256_SHA256);
        let input = format!(
            "{}{}",
            ca.cert.pem(),
            pem_block("X509 CRL", b"not looked at")
        );
        let err = expect_err(&input);
        assert!(
            matches!(&err, CertError::UnsupportedLabel { block: 2, label } if label == "X509 CRL"),
            "{err}"
        );
        assert_eq!(err.to_string(), "PEM block 2: unsupported label X509 CRL");

        let err = expect_err(&pem_block("PUBLIC KEY", b"x"));
        assert!(matches!(err, CertError::UnsupportedLabel { block: 1, .. }));

        // A label that does not look like one is not echoed.
        let err = expect_err(&pem_block("weird label\u{1b}[31m", b"x"));
        assert_eq!(
            err.to_string(),
            "PEM block 1: unsupported label (unprintable, 16 bytes)"
        );

        let err = expect_err(&pem_block("ENCRYPTED PRIVATE KEY", b"x"));
        assert!(matches!(err, CertError::EncryptedPrivateKey { block: 1 }));
    }

    #[test]
    fn ec_parameters_blocks_are_skipped_but_counted() {
        let input = format!("{P256_SEC1}{}", pem_block("FOO", b"x"));
        let err = expect_err(&input);
        assert!(
            matches!(err, CertError::UnsupportedLabel { block: 3, .. }),
            "{err}"
        );

        let params_only: String = P256_SEC1
            .split_inclusive('\n')
            .take_while(|l| !l.contains("BEGIN EC PRIVATE KEY"))
            .collect();
        assert_eq!(parse(&params_only), PemContents::default());
    }

    #[test]
    fn two_private_keys_are_rejected() {
        let err = expect_err(&format!("{P256_PKCS8}{RSA_A}"));
        assert!(
            matches!(
                err,
                CertError::MultiplePrivateKeys {
                    first: 1,
                    second: 2
                }
            ),
            "{err}"
        );

        let ca = ca(&rcgen::PKCS_ECDSA_P256_SHA256);
        let input = format!("{}{P256_SEC1}{}{P256_PKCS8}", ca.cert.pem(), ca.cert.pem());
        let err = expect_err(&input);
        assert!(
            matches!(
                err,
                CertError::MultiplePrivateKeys {
                    first: 3,
                    second: 5
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn unsupported_key_types_are_named() {
        let cases = [
            (DSA, "PRIVATE KEY", "DSA (1.2.840.10040.4.1)"),
            (P521_SEC1, "EC PRIVATE KEY", "ECDSA on curve P-521"),
            (
                RSA_1024,
                "RSA PRIVATE KEY",
                "RSA-1024 (supported: 2048 to 4096 bits)",
            ),
        ];
        for (input, want_label, want_algorithm) in cases {
            let err = expect_err(input);
            match &err {
                CertError::UnsupportedKeyType {
                    block: 1,
                    label,
                    algorithm,
                } => {
                    assert_eq!(*label, want_label);
                    assert_eq!(algorithm, want_algorithm);
                }
                other => panic!("{want_algorithm}: {other}"),
            }
            assert!(err.to_string().contains("unsupported private key type"));
        }
    }

    #[test]
    fn summaries_never_contain_key_material() {
        let ca = ca(&rcgen::PKCS_ECDSA_P256_SHA256);
        for key_pem in [RSA_A_PKCS1, P256_SEC1, P384_PKCS8, ED25519_V1] {
            let input = format!("{}{key_pem}", ca.cert.pem());
            let contents = parse(&input);
            assert_no_leak(&format!("{contents:?}"), key_pem);
            assert_no_leak(&serde_json::to_string(&contents).unwrap(), key_pem);
        }
    }

    #[test]
    fn random_mutations_never_panic_or_leak() {
        let ca = ca(&rcgen::PKCS_ECDSA_P256_SHA256);
        let key = KeyPair::from_pem(P256_PKCS8).unwrap();
        let leaf = leaf(&ca, &key).pem();
        let inputs = [
            (format!("{P256_SEC1}{leaf}{}", ca.cert.pem()), 3000),
            (format!("{leaf}{RSA_A_PKCS1}"), 300),
            (format!("{ED25519_V1}{P384_SEC1}"), 500),
        ];
        let special = b"-\n\r=+/ AZaz09";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        for (base, rounds) in inputs {
            let base = base.into_bytes();
            for _ in 0..rounds {
                let mut bytes = base.clone();
                for _ in 0..1 + next() % 4 {
                    if bytes.is_empty() {
                        break;
                    }
                    let pos = next() % bytes.len();
                    let byte = if next() % 2 == 0 {
                        special[next() % special.len()]
                    } else {
                        (next() % 256) as u8
                    };
                    match next() % 5 {
                        0 | 1 => bytes[pos] = byte,
                        2 => {
                            bytes.remove(pos);
                        }
                        3 => bytes.insert(pos, byte),
                        _ => bytes.truncate(pos),
                    }
                }
                if let Err(err) = parse_pem(&bytes) {
                    // Only the key bodies are secret; certificates are public.
                    let text = format!("{err} {err:?}");
                    for secret in [P256_SEC1, RSA_A_PKCS1, ED25519_V1, P384_SEC1] {
                        assert_no_leak(&text, secret);
                    }
                }
            }
        }
    }

    #[test]
    fn pem_candidates_by_name_or_content() {
        for name in ["tls.crt", "tls.key", "ca.pem", "x.CER", "dir/Bundle.PEM"] {
            assert!(is_pem_candidate(name, b""), "{name}");
        }
        for name in ["config.yaml", "crt", "key", "tls.crt.bak", ""] {
            assert!(!is_pem_candidate(name, b"plain"), "{name}");
        }
        assert!(is_pem_candidate(
            "ca",
            b"junk\n-----BEGIN CERTIFICATE-----\n"
        ));
        assert!(!is_pem_candidate("ca", b"-----BEGIN"));
    }
}
