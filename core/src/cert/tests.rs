//! Tests of the certificate analysis, with fixtures made by OpenSSL (`core/tests/fixtures`).

#![allow(clippy::unwrap_used)]

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SerialNumber,
    SignatureAlgorithm,
};
use time::Duration;
use time::macros::datetime;

const RSA_A: &str = include_str!("../../tests/fixtures/rsa-a.key.pem");
const RSA_A_PKCS1: &str = include_str!("../../tests/fixtures/rsa-a.rsa.pem");
const RSA_B: &str = include_str!("../../tests/fixtures/rsa-b.key.pem");
const P256_SEC1: &str = include_str!("../../tests/fixtures/ec-p256.sec1.pem");
const P256_PKCS8: &str = include_str!("../../tests/fixtures/ec-p256.pkcs8.pem");
const P384_SEC1: &str = include_str!("../../tests/fixtures/ec-p384.sec1.pem");
const P384_PKCS8: &str = include_str!("../../tests/fixtures/ec-p384.pkcs8.pem");
const ED25519_V1: &str = include_str!("../../tests/fixtures/ed25519.openssl.pem");
const DSA: &str = include_str!("../../tests/fixtures/dsa.key.pem");
const P521_SEC1: &str = include_str!("../../tests/fixtures/ec-p521.sec1.pem");
const RSA_1024: &str = include_str!("../../tests/fixtures/rsa-1024.rsa.pem");

// Public key digests computed with OpenSSL, not with this module (see core/tests/fixtures/README.md).
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

/// Standard base64 with padding (also used by the property tests).
pub(super) fn b64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
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
