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

//!
//! Files: this one holds the summaries and the PEM walk; [`x509`] summarises certificates,
//! [`key`] loads private keys, [`pairing`] pairs keys with the certificates beside them,
//! [`cache`] remembers verdicts by the SHA-256 of the parsed bytes so that the reload hot path
//! does not parse the same file twice.

pub mod cache;
mod key;
mod pairing;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
mod x509;

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::error::{PEMError, X509Error};
use x509_parser::pem::Pem;
use zeroize::Zeroizing;

pub use cache::{ContentDigest, PemCache, PemCacheStats, SharedPemCache};
use key::{KeyEncoding, summarise_key};
pub use pairing::{KeyPairing, pair_keys, swapped_pairs};
use x509::summarise_certificate;

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

// ---------------------------------------------------------------------------------------------
// Helpers

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Labels come from the input; echo them only when they look like RFC 7468 labels (uppercase,
/// digits, spaces, a little punctuation, short), so a mangled header can never smuggle body text
/// or control characters into logs.
pub(crate) fn sanitise_label(label: &str) -> String {
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
