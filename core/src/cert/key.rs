//! One DER private key reduced to a [`KeySummary`]: rustls' ring provider loads it and derives
//! the public key; a key ring refuses is classified (curve, size, algorithm) for the message.

use rustls::crypto::ring::sign::any_supported_type;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use x509_parser::asn1_rs::{Any, Class, FromDer, Integer, Oid, Sequence};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_DSA, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS, OID_SIG_ED448, OID_SIG_ED25519,
};
use x509_parser::x509::SubjectPublicKeyInfo;

use super::{CertError, KeyAlgorithm, KeySummary, sha256_hex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyEncoding {
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

pub(super) fn summarise_key(
    block: usize,
    encoding: KeyEncoding,
    der: &[u8],
) -> Result<KeySummary, CertError> {
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
        Rejection::Unsupported(format!("ECDSA on curve {}", oid_text(curve)))
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
        return format!("algorithm {}", oid_text(oid));
    };
    format!("{name} ({})", oid_text(oid))
}

/// Longest OID quoted in a message, in characters.
const MAX_OID_TEXT: usize = 64;

/// An OID as dotted text, cut at [`MAX_OID_TEXT`] characters: a hostile key can carry one of
/// thousands of arcs, and messages quote what they refuse.
fn oid_text(oid: &Oid<'_>) -> String {
    let text = oid.to_id_string();
    match text.char_indices().nth(MAX_OID_TEXT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod oid_tests {
    use super::*;

    #[test]
    fn an_oid_of_thousands_of_arcs_is_quoted_cut() {
        let arcs: Vec<u64> = [1, 2]
            .into_iter()
            .chain(std::iter::repeat_n(99_999, 5_000))
            .collect();
        let long = Oid::from(&arcs).unwrap();
        let text = oid_text(&long);
        assert_eq!(text.chars().count(), MAX_OID_TEXT + 1, "{text}");
        assert!(text.ends_with('…'));
        assert!(algorithm_name(&long).len() < 100);
        assert_eq!(oid_text(&OID_EC_P256), "1.2.840.10045.3.1.7");
    }
}
