//! PEM blocks and the DER inside them, as far as the leak scanner needs to find the secret part
//! of a private key (the EC/Ed25519 scalar, RSA `d` through `qinv`) and a key's PEM body.

/// One PEM block: its label, its base64 body without whitespace, and the offset in the PEM text
/// of every body character.
pub(super) struct PemBlock {
    pub(super) label: String,
    pub(super) body: String,
    pub(super) offsets: Vec<usize>,
}

impl PemBlock {
    /// The body's text, line breaks included.
    pub(super) fn text_range(&self) -> std::ops::Range<usize> {
        match (self.offsets.first(), self.offsets.last()) {
            (Some(&first), Some(&last)) => first..last + 1,
            _ => 0..0,
        }
    }
}

/// Every PEM block of `pem`.
pub(super) fn pem_blocks(pem: &str) -> Vec<PemBlock> {
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
pub(super) struct Tlv {
    pub(super) tag: u8,
    pub(super) start: usize,
    pub(super) end: usize,
}

pub(super) fn der_tlv(der: &[u8], pos: usize) -> Option<Tlv> {
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

pub(super) fn der_children(der: &[u8], parent: Tlv) -> Vec<Tlv> {
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
pub(super) fn private_region(label: &str, der: &[u8]) -> Option<(usize, usize)> {
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

pub(super) fn sequence_secret(der: &[u8], seq: Tlv) -> Option<(usize, usize)> {
    let fields = der_children(der, seq);
    match fields.get(1)?.tag {
        // ECPrivateKey { version, OCTET STRING privateKey, [0] params, [1] publicKey }
        0x04 => Some((fields[1].start, fields[1].end)),
        // RSAPrivateKey { version, n, e, d, p, q, dp, dq, qinv }: d..qinv are secret.
        0x02 if fields.len() >= 9 => Some((fields[3].start, fields[8].end)),
        _ => None,
    }
}

pub(super) fn base64_decode(s: &str) -> Option<Vec<u8>> {
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
