//! [`SecretLeakScanner`] knows every encoding of each test key (PEM text, hex and `{:?}` dumps
//! of the DER, `{:?}` of a k8s-openapi `ByteString`, the PEM base64-encoded again as Secret JSON
//! carries it, JSON-escaped PEM, ...) and finds any of them in any output (logs, metrics,
//! `/status`, Events, panics), saying where; [`secret_bytes_markers`] and
//! [`assert_no_key_bytes`] are built on it.

use std::collections::BTreeMap;
use std::fmt;

use super::pem::{base64_decode, pem_blocks, private_region};

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
pub(super) const ENC_PEM_DEBUG: &str = "{:?} of the PEM bytes (k8s-openapi ByteString, Vec<u8>)";
const ENC_PEM_HEX: &str = "hex of the PEM text";
pub(super) const ENC_DER_HEX: &str = "hex of the DER bytes";
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

pub(super) struct Built {
    pub(super) needles: Vec<Needle>,
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
pub(super) struct Needle {
    secret: usize,
    pub(super) encoding: String,
    pub(super) text: String,
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

    pub(super) fn built(&self) -> &Built {
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
pub(super) fn squash(text: &[u8]) -> (Vec<u8>, Vec<usize>) {
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

/// Every needle, raw and squashed, in one Aho-Corasick automaton each.
struct Matcher {
    raw: PatternSet,
    squashed: PatternSet,
}

/// The distinct patterns of at least 3 bytes, and for each the needle it came from.
struct PatternSet {
    automaton: aho_corasick::AhoCorasick,
    needles: Vec<usize>,
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
        let mut seen = std::collections::HashSet::new();
        let (needles, kept): (Vec<usize>, Vec<Vec<u8>>) = patterns
            .filter(|(_, pattern)| pattern.len() >= 3 && seen.insert(pattern.clone()))
            .unzip();
        Self {
            automaton: aho_corasick::AhoCorasick::new(&kept)
                .expect("a few thousand short needles fit an Aho-Corasick automaton"),
            needles,
        }
    }

    /// Calls `on(needle, start, end)` for every occurrence, overlapping ones included.
    fn find(&self, hay: &[u8], mut on: impl FnMut(usize, usize, usize)) {
        for found in self.automaton.find_overlapping_iter(hay) {
            on(
                self.needles[found.pattern().as_usize()],
                found.start(),
                found.end(),
            );
        }
    }
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
