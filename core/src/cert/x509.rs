//! One DER certificate reduced to a [`CertificateSummary`] (x509-parser does the parsing).

use core::net::{Ipv4Addr, Ipv6Addr};

use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;

use super::{CertError, CertificateSummary, sha256_hex};

pub(super) fn summarise_certificate(
    block: usize,
    der: &[u8],
) -> Result<CertificateSummary, CertError> {
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
