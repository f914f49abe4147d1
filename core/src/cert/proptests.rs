//! Property tests of the PEM walk, the X.509 summary and the private key classification: the
//! input of [`parse_pem`] is whatever a Secret holds, so every byte of it is hostile.
//!
//! Each property runs a bounded number of cases (about a second each in a debug build);
//! `PROPTEST_CASES=N` runs N cases of every property instead, for a longer fuzzing session.
//! A failing case is not persisted to a file: it is kept as a named test at the bottom.

#![allow(clippy::unwrap_used)]

use std::sync::LazyLock;

use crate::proptest_cases::config;
use proptest::prelude::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::*;
use crate::text::needs_escape;

const RSA_A_PKCS8: &str = include_str!("../../tests/fixtures/rsa-a.key.pem");
const RSA_A_PKCS1: &str = include_str!("../../tests/fixtures/rsa-a.rsa.pem");
const P256_SEC1: &str = include_str!("../../tests/fixtures/ec-p256.sec1.pem");
const P256_PKCS8: &str = include_str!("../../tests/fixtures/ec-p256.pkcs8.pem");
const P384_SEC1: &str = include_str!("../../tests/fixtures/ec-p384.sec1.pem");
const ED25519_V1: &str = include_str!("../../tests/fixtures/ed25519.openssl.pem");

/// A CA, a leaf it signed for the P-256 fixture key, and the fixture keys.
struct Material {
    ca_pem: String,
    leaf_pem: String,
    /// (PEM, algorithm, the key matches the leaf)
    keys: Vec<(&'static str, KeyAlgorithm, bool)>,
}

static MATERIAL: LazyLock<Material> = LazyLock::new(|| {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "proptest CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::from_pem(P256_PKCS8).unwrap();
    let leaf = CertificateParams::new(vec!["leaf.example.test".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    Material {
        ca_pem: ca.pem(),
        leaf_pem: leaf.pem(),
        keys: vec![
            (P256_SEC1, KeyAlgorithm::EcdsaP256, true),
            (P256_PKCS8, KeyAlgorithm::EcdsaP256, true),
            (RSA_A_PKCS8, KeyAlgorithm::Rsa, false),
            (RSA_A_PKCS1, KeyAlgorithm::Rsa, false),
            (P384_SEC1, KeyAlgorithm::EcdsaP384, false),
            (ED25519_V1, KeyAlgorithm::Ed25519, false),
        ],
    }
});

// ---------------------------------------------------------------------------------------------
// Helpers: PEM text, DER

use super::tests::b64 as base64;

/// One PEM block of `der`, its base64 cut every `width` characters, lines ended by `eol`.
fn pem_block(label: &str, der: &[u8], width: usize, eol: &str) -> String {
    let body = base64(der);
    let mut out = format!("-----BEGIN {label}-----{eol}");
    for line in body.as_bytes().chunks(width.max(1)) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push_str(eol);
    }
    out.push_str(&format!("-----END {label}-----{eol}"));
    out
}

/// The label and DER of the last block of `pem` (a fixture key may follow `EC PARAMETERS`).
fn block_of(pem: &str) -> (String, Vec<u8>) {
    let block = Pem::iter_from_buffer(pem.as_bytes())
        .last()
        .unwrap()
        .unwrap();
    (block.label, block.contents)
}

/// Every 16-character window of the base64 bodies in `pem`: what a leak would quote.
fn body_windows(pem: &str) -> Vec<String> {
    let mut windows = Vec::new();
    let mut body = String::new();
    for line in pem.lines().chain(std::iter::once("-----")) {
        if line.starts_with("-----") {
            windows.extend(
                body.as_bytes()
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

fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes: Vec<u8> = len
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(content.len()));
    out.extend_from_slice(content);
    out
}

fn sequence(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// A non-negative DER INTEGER of big-endian `magnitude` (leading zeros dropped, one added back
/// when the high bit is set).
fn integer(magnitude: &[u8]) -> Vec<u8> {
    let significant: Vec<u8> = magnitude.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = if significant.is_empty() {
        vec![0]
    } else {
        significant
    };
    if content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    tlv(0x02, &content)
}

fn small_integer(value: u64) -> Vec<u8> {
    integer(&value.to_be_bytes())
}

/// DER OBJECT IDENTIFIER of `arcs` (first arc 0..=2, second < 40 below 2).
fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut content = Vec::new();
    let mut base128 = |mut value: u64| {
        let mut groups = vec![(value & 0x7f) as u8];
        value >>= 7;
        while value > 0 {
            groups.push(0x80 | (value & 0x7f) as u8);
            value >>= 7;
        }
        groups.reverse();
        content.extend(groups);
    };
    base128(arcs[0] * 40 + arcs[1]);
    for arc in &arcs[2..] {
        base128(*arc);
    }
    tlv(0x06, &content)
}

fn dotted(arcs: &[u64]) -> String {
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// A big-endian number of exactly `bits` significant bits, lower bits from `filler`.
fn number_of_bits(bits: usize, filler: u8) -> Vec<u8> {
    if bits == 0 {
        return vec![0];
    }
    let bytes = bits.div_ceil(8);
    let top_bits = bits - (bytes - 1) * 8;
    let mut out = vec![filler; bytes];
    let mask = ((1u16 << top_bits) - 1) as u8;
    out[0] = (filler & mask) | (1 << (top_bits - 1));
    out
}

const RSA_ENCRYPTION: [u64; 7] = [1, 2, 840, 113549, 1, 1, 1];
const EC_PUBLIC_KEY: [u64; 6] = [1, 2, 840, 10045, 2, 1];
const P256: [u64; 7] = [1, 2, 840, 10045, 3, 1, 7];
const P384: [u64; 5] = [1, 3, 132, 0, 34];
const P521: [u64; 5] = [1, 3, 132, 0, 35];
const ED25519: [u64; 4] = [1, 3, 101, 112];

fn pkcs8(algorithm: &[u8], private_key: &[u8]) -> Vec<u8> {
    sequence(&[
        small_integer(0),
        sequence(&[algorithm.to_vec()]),
        tlv(0x04, private_key),
    ])
}

fn assert_printable(text: &str) {
    assert!(
        !text.chars().any(needs_escape),
        "raw control or bidi character in {text:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// Text that looks like a Secret's content to a PEM reader: framing lines, base64, junk.
fn pem_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let label = prop_oneof![
        Just("CERTIFICATE".to_string()),
        Just("PRIVATE KEY".to_string()),
        Just("RSA PRIVATE KEY".to_string()),
        Just("EC PRIVATE KEY".to_string()),
        Just("EC PARAMETERS".to_string()),
        Just("ENCRYPTED PRIVATE KEY".to_string()),
        "[ -~\u{80}-\u{10ffff}]{0,12}",
    ];
    let piece = prop_oneof![
        label
            .clone()
            .prop_map(|l| format!("-----BEGIN {l}-----\n").into_bytes()),
        label.prop_map(|l| format!("-----END {l}-----\n").into_bytes()),
        "[A-Za-z0-9+/=]{0,80}\n".prop_map(String::into_bytes),
        Just(b"-----BEGIN ".to_vec()),
        Just(b"\r\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

/// A line between blocks: anything without a newline that does not open a block.
fn junk_line() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
        0..60,
    )
    .prop_filter("does not open a block", |line| {
        !line.starts_with(b"-----BEGIN ")
    })
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config(512))]

    /// Any bytes: an answer, never a panic; an error is one short printable sentence.
    #[test]
    fn any_bytes_give_an_answer_and_errors_are_short_and_printable(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..2048), pem_like_bytes()],
        name in "[a-zA-Z0-9._/\u{1b}\u{202e}-]{0,24}",
    ) {
        let expected_candidate = [".crt", ".pem", ".key", ".cer"].iter().any(|ext| {
            name.len() >= ext.len()
                && name.as_bytes()[name.len() - ext.len()..].eq_ignore_ascii_case(ext.as_bytes())
        }) || bytes.windows(11).any(|w| w == b"-----BEGIN ");
        prop_assert_eq!(is_pem_candidate(&name, &bytes), expected_candidate);
        match parse_pem(&bytes) {
            Ok(contents) => {
                // Something parsed: at least one block was there.
                prop_assert!(bytes.windows(11).any(|w| w == b"-----BEGIN "));
                prop_assert!(contents.certificates.len() <= bytes.len() / 64);
            }
            Err(err) => {
                let text = err.to_string();
                prop_assert!(text.len() <= 200, "{} bytes: {}", text.len(), text);
                assert_printable(&text);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(96))]

    /// Certificates and one key in any order, with junk lines between blocks, CRLF or LF and any
    /// base64 line width: the same summaries, certificates in file order.
    #[test]
    fn a_well_formed_bundle_parses_the_same_however_it_is_laid_out(
        certs in prop::collection::vec(any::<bool>(), 0..4),
        key in prop::option::of(0usize..6),
        key_at in any::<prop::sample::Index>(),
        junk in prop::collection::vec(prop::option::of(junk_line()), 8),
        width in prop_oneof![Just(64usize), Just(76), 1usize..200],
        crlf in any::<bool>(),
    ) {
        let material = &*MATERIAL;
        let eol = if crlf { "\r\n" } else { "\n" };
        let cert_pems: Vec<&String> = certs
            .iter()
            .map(|leaf| if *leaf { &material.leaf_pem } else { &material.ca_pem })
            .collect();
        let mut blocks: Vec<(String, Vec<u8>)> = cert_pems.iter().map(|p| block_of(p)).collect();
        let key = key.map(|i| material.keys[i]);
        if let Some((pem, _, _)) = key {
            blocks.insert(key_at.index(blocks.len() + 1), block_of(pem));
        }
        let mut file = Vec::new();
        for (i, (label, der)) in blocks.iter().enumerate() {
            if let Some(Some(line)) = junk.get(i) {
                file.extend_from_slice(line);
                file.push(b'\n');
            }
            file.extend_from_slice(pem_block(label, der, width, eol).as_bytes());
        }
        if let Some(Some(line)) = junk.last() {
            file.extend_from_slice(line);
        }

        if blocks.is_empty() {
            prop_assert!(matches!(parse_pem(&file), Err(CertError::NoPemBlocks)));
            return Ok(());
        }
        let contents = parse_pem(&file).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let fingerprints: Vec<String> =
            contents.certificates.iter().map(|c| c.fingerprint_sha256.clone()).collect();
        let expected: Vec<String> = cert_pems
            .iter()
            .map(|p| sha256_hex(&block_of(p).1))
            .collect();
        prop_assert_eq!(fingerprints, expected);
        prop_assert_eq!(
            contents.leaf().map(|l| l.dns_names.clone()),
            certs.first().map(|leaf| {
                if *leaf { vec!["leaf.example.test".to_string()] } else { Vec::new() }
            })
        );
        match key {
            None => prop_assert!(contents.private_key.is_none()),
            Some((_, algorithm, matches_leaf)) => {
                let summary = contents.private_key.clone().unwrap();
                prop_assert_eq!(summary.algorithm, algorithm);
                if let Some(leaf) = contents.leaf() {
                    let is_leaf = leaf.dns_names.first().is_some_and(|n| n == "leaf.example.test");
                    prop_assert_eq!(summary.matches(leaf), matches_leaf && is_leaf);
                }
                // The summary is the same whatever the layout: compare with the plain file.
                let plain = parse_pem(key.unwrap().0.as_bytes()).unwrap();
                prop_assert_eq!(Some(summary), plain.private_key);
            }
        }
    }

    /// A key block damaged anywhere: never a panic, and an error never quotes the key's base64.
    #[test]
    fn a_damaged_key_is_an_error_that_quotes_no_key_bytes(
        key in 0usize..6,
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), 0u8..4, prop_oneof![
                any::<u8>(),
                prop::sample::select(b"-\n\r=+/ AZaz09".to_vec()),
            ]),
            1..5,
        ),
    ) {
        let material = &*MATERIAL;
        let (key_pem, _, _) = material.keys[key];
        let mut bytes = format!("{}{key_pem}", material.leaf_pem).into_bytes();
        let key_start = material.leaf_pem.len();
        for (at, op, byte) in edits {
            if bytes.len() <= key_start {
                break;
            }
            let pos = key_start + at.index(bytes.len() - key_start);
            match op {
                0 => bytes[pos] = byte,
                1 => {
                    bytes.remove(pos);
                }
                2 => bytes.insert(pos, byte),
                _ => bytes.truncate(pos),
            }
        }
        if let Err(err) = parse_pem(&bytes) {
            let mut texts = vec![err.to_string(), format!("{err:?}")];
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                texts.push(s.to_string());
                source = s.source();
            }
            for text in texts {
                assert_printable(&text);
                for window in body_windows(key_pem) {
                    prop_assert!(!text.contains(&window), "{window:?} quoted in {text}");
                }
            }
        }
    }

    /// An RSAPrivateKey ring refuses is named by what is wrong with it: its modulus size, its
    /// exponent, its version, or (in range) as inconsistent; the same in PKCS#1 and PKCS#8.
    #[test]
    fn a_refused_rsa_key_is_classified_by_size_and_exponent(
        modulus_bits in prop_oneof![0usize..2048, 2048usize..=4096, 4097usize..9000],
        exponent_bits in 0usize..40,
        version in prop_oneof![4 => Just(0u64), 1 => 1u64..4],
        filler in any::<u8>(),
        extra in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 0..4),
        pkcs8_wrapped in any::<bool>(),
    ) {
        let exponent = number_of_bits(exponent_bits, filler);
        let mut parts = vec![
            small_integer(version),
            integer(&number_of_bits(modulus_bits, filler)),
            integer(&exponent),
        ];
        parts.extend(extra.iter().map(|e| integer(e)));
        let rsa = sequence(&parts);
        let (label, der) = if pkcs8_wrapped {
            ("PRIVATE KEY", pkcs8(&[oid(&RSA_ENCRYPTION), vec![0x05, 0x00]].concat(), &rsa))
        } else {
            ("RSA PRIVATE KEY", rsa)
        };
        let err = parse_pem(pem_block(label, &der, 64, "\n").as_bytes()).unwrap_err();
        let exponent_value = (exponent_bits <= 64).then(|| {
            exponent.iter().fold(0u128, |n, b| (n << 8) | u128::from(*b))
        });
        let expected = if version != 0 {
            Some("multi-prime RSA".to_string())
        } else if !(2048..=4096).contains(&modulus_bits) {
            Some(format!("RSA-{modulus_bits} (supported: 2048 to 4096 bits)"))
        } else if exponent_bits > 33 || exponent_value.is_none_or(|e| e < 65537) {
            Some("RSA with public exponent below 65537 or above 2^33".to_string())
        } else {
            None
        };
        match (&err, expected) {
            (CertError::UnsupportedKeyType { block: 1, label: l, algorithm }, Some(want)) => {
                prop_assert_eq!(*l, label);
                prop_assert_eq!(algorithm, &want);
            }
            (CertError::InvalidPrivateKey { block: 1, label: l, reason }, None) => {
                prop_assert_eq!(*l, label);
                prop_assert_eq!(*reason, "RSA key rejected: malformed or inconsistent components");
            }
            (other, want) => prop_assert!(false, "{other} (expected {want:?})"),
        }
    }

    /// An EC key on a curve ring lacks is unsupported and names the curve; on P-256/P-384
    /// (here without its public key) it is invalid. SEC1 and PKCS#8 agree.
    #[test]
    fn a_refused_ec_key_names_its_curve(
        curve in prop_oneof![
            Just(P256.to_vec()),
            Just(P384.to_vec()),
            Just(P521.to_vec()),
            (1u64..3, 0u64..40, prop::collection::vec(any::<u64>(), 0..6)).prop_map(|(a, b, rest)| {
                let mut arcs = vec![a, b];
                arcs.extend(rest.into_iter().map(|r| r >> 2));
                arcs
            }),
        ],
        scalar in prop::collection::vec(any::<u8>(), 0..66),
        pkcs8_wrapped in any::<bool>(),
    ) {
        let (label, der) = if pkcs8_wrapped {
            let algorithm = [oid(&EC_PUBLIC_KEY), oid(&curve)].concat();
            let inner = sequence(&[small_integer(1), tlv(0x04, &scalar)]);
            ("PRIVATE KEY", pkcs8(&algorithm, &inner))
        } else {
            let inner = sequence(&[small_integer(1), tlv(0x04, &scalar), tlv(0xa0, &oid(&curve))]);
            ("EC PRIVATE KEY", inner)
        };
        let err = parse_pem(pem_block(label, &der, 64, "\n").as_bytes()).unwrap_err();
        if curve == P256 || curve == P384 {
            let is_invalid = matches!(err, CertError::InvalidPrivateKey { block: 1, .. });
            prop_assert!(is_invalid, "{}", err);
        } else {
            let want = if curve == P521 {
                "ECDSA on curve P-521".to_string()
            } else {
                // Quoted up to 64 characters (a hostile OID can have thousands of arcs).
                let text = dotted(&curve);
                match text.char_indices().nth(64) {
                    Some((cut, _)) => format!("ECDSA on curve {}…", &text[..cut]),
                    None => format!("ECDSA on curve {text}"),
                }
            };
            match &err {
                CertError::UnsupportedKeyType { block: 1, label: l, algorithm } => {
                    prop_assert_eq!(*l, label);
                    prop_assert_eq!(algorithm, &want);
                }
                other => prop_assert!(false, "{other} (expected {want})"),
            }
        }
    }

    /// A PKCS#8 key of an algorithm that is neither RSA, EC nor Ed25519 is unsupported, whatever
    /// its key bytes, and the message names the algorithm, never the key.
    #[test]
    fn a_pkcs8_key_of_another_algorithm_is_unsupported_and_named(
        arcs in (1u64..3, 0u64..40, prop::collection::vec(0u64..1_000_000, 1..6)).prop_map(
            |(a, b, rest)| [vec![a, b], rest].concat()
        ),
        key_bytes in prop::collection::vec(any::<u8>(), 16..64),
    ) {
        prop_assume!(arcs != RSA_ENCRYPTION && arcs != EC_PUBLIC_KEY && arcs != ED25519);
        let der = pkcs8(&oid(&arcs), &key_bytes);
        let err = parse_pem(pem_block("PRIVATE KEY", &der, 64, "\n").as_bytes()).unwrap_err();
        let CertError::UnsupportedKeyType { algorithm, .. } = &err else {
            return Err(TestCaseError::fail(format!("{err}")));
        };
        prop_assert!(algorithm.contains(&dotted(&arcs)), "{}", algorithm);
        prop_assert!(!err.to_string().contains(&hex::encode(&key_bytes[..8])));
    }

    /// A block of any other label is refused naming its block; the label is echoed only when it
    /// looks like one, otherwise only its length.
    #[test]
    fn an_unknown_label_is_named_only_when_it_looks_like_one(
        label in prop_oneof!["[A-Z0-9 ._]{1,50}", "[^-\r\n]{1,50}"],
        before in 0usize..3,
    ) {
        prop_assume!(![
            "CERTIFICATE", "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY",
            "EC PARAMETERS", "ENCRYPTED PRIVATE KEY",
        ].contains(&label.as_str()));
        let params = pem_block("EC PARAMETERS", &oid(&P256), 64, "\n").repeat(before);
        let text = format!("{params}{}", pem_block(&label, b"opaque", 64, "\n"));
        match parse_pem(text.as_bytes()) {
            Err(CertError::UnsupportedLabel { block, label: shown }) => {
                prop_assert_eq!(block, before + 1);
                let plausible = label.len() <= 40
                    && label.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()
                        || matches!(b, b' ' | b'.' | b'_'));
                if plausible {
                    prop_assert_eq!(shown, label);
                } else {
                    prop_assert_eq!(shown, format!("(unprintable, {} bytes)", label.len()));
                }
            }
            // A label with a '-' is cut there by the PEM reader: the `-----BEGIN ` rule of
            // `pem_like_bytes` covers such headers; here only the outcome's shape matters.
            Err(err) => assert_printable(&err.to_string()),
            Ok(contents) => prop_assert!(false, "accepted {contents:?}"),
        }
    }
}

/// Key pairing by file name: any names, never a panic; pairs sorted by key file, each naming a
/// file that holds a key and one that holds a certificate.
#[test]
fn pairing_any_file_names_yields_sorted_pairs_of_real_files() {
    let material = &*MATERIAL;
    let cert = parse_pem(material.leaf_pem.as_bytes()).unwrap();
    let key = parse_pem(P256_SEC1.as_bytes()).unwrap();
    let other_key = parse_pem(RSA_A_PKCS1.as_bytes()).unwrap();
    let contents = [&cert, &key, &other_key];
    let name = prop_oneof![
        "[a-z]{0,3}(\\.pem|\\.crt|\\.key|\\.pem\\.key|\\.crt\\.key|/\\.key|\\.key)?",
        "[^\u{0}]{0,12}",
    ];
    let mut runner = proptest::test_runner::TestRunner::new(config(256));
    runner
        .run(&prop::collection::vec((name, 0usize..3), 0..10), |files| {
            let files: Vec<(&str, &PemContents)> = files
                .iter()
                .map(|(name, which)| (name.as_str(), contents[*which]))
                .collect();
            let pairs = pair_keys(&files);
            let first = |path: &str| files.iter().find(|(p, _)| *p == path).map(|f| f.1);
            for window in pairs.windows(2) {
                prop_assert!(window[0].key_file < window[1].key_file);
            }
            for pair in &pairs {
                let key = first(&pair.key_file).and_then(|c| c.private_key.as_ref());
                let leaf = first(&pair.cert_file).and_then(|c| c.leaf());
                prop_assert!(key.is_some() && leaf.is_some(), "{pair:?}");
                prop_assert_eq!(pair.matches, key.unwrap().matches(leaf.unwrap()));
            }
            Ok(())
        })
        .unwrap();
}
