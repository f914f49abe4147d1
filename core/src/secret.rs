//! A Secret as mountlag keeps it: digests and certificate summaries, never the bytes.
//!
//! The agent's Kubernetes edge hands the values in once ([`SecretView::from_values`]); they are
//! hashed and, for PEM-looking keys, summarised here and then dropped.

use std::collections::BTreeMap;

use crate::cert::{self, ContentDigest, PemContents};

/// What the API says a Secret holds, as digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    /// Key → lowercase hex SHA-256 of the value.
    pub keys: BTreeMap<String, String>,
    /// Key → certificates and key summary, for keys that parse as PEM.
    pub certificates: BTreeMap<String, PemContents>,
    /// Immutable Secrets are no longer watched by kubelet.
    pub immutable: bool,
    /// The `cert-manager.io/certificate-name` annotation: the Certificate that issues into it.
    pub certificate_name: Option<String>,
}

/// The identity of a Secret object, without its data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub immutable: bool,
    pub certificate_name: Option<String>,
}

impl SecretView {
    /// Digests `data` (binary values) and `string_data` (text values; write-only in the API, a
    /// stored object never carries it, but a hand-written one might). A later `string_data` key
    /// replaces a `data` key of the same name, as the API server does.
    pub fn from_values<'a>(
        meta: SecretMeta,
        data: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        string_data: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        Self::from_values_with_verdicts(meta, data, string_data, |_, _| {})
    }

    /// [`Self::from_values`], also handing every successful PEM parse to `parsed` with the
    /// digest of exactly the bytes it was parsed from, so that the caller can keep the verdict
    /// in a [`PemCache`](crate::cert::PemCache) without parsing again: the same bytes usually
    /// reach the volume moments later.
    pub fn from_values_with_verdicts<'a>(
        meta: SecretMeta,
        data: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        string_data: impl IntoIterator<Item = (&'a str, &'a str)>,
        mut parsed: impl FnMut(ContentDigest, &PemContents),
    ) -> Self {
        let mut keys = BTreeMap::new();
        let mut certificates = BTreeMap::new();
        for (key, value) in data {
            let digest = ContentDigest::of(value);
            keys.insert(key.to_string(), digest.to_hex());
            if cert::is_pem_candidate(key, value)
                && let Ok(contents) = cert::parse_pem(value)
            {
                parsed(digest, &contents);
                certificates.insert(key.to_string(), contents);
            }
        }
        for (key, value) in string_data {
            keys.insert(
                key.to_string(),
                ContentDigest::of(value.as_bytes()).to_hex(),
            );
        }
        Self {
            namespace: meta.namespace,
            name: meta.name,
            uid: meta.uid,
            resource_version: meta.resource_version,
            keys,
            certificates,
            immutable: meta.immutable,
            certificate_name: meta.certificate_name,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn values_become_digests_and_nothing_else() {
        let meta = SecretMeta {
            namespace: "ns".into(),
            name: "tls".into(),
            resource_version: "42".into(),
            ..SecretMeta::default()
        };
        let data: [(&str, &[u8]); 2] = [
            ("token", b"s3cr3t-value"),
            (
                "tls.crt",
                b"-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n",
            ),
        ];
        let view = SecretView::from_values(meta, data, [("note", "s3cr3t-text")]);
        assert_eq!(view.resource_version, "42");
        assert_eq!(
            view.keys["token"],
            hex::encode(Sha256::digest(b"s3cr3t-value"))
        );
        assert_eq!(
            view.keys["note"],
            hex::encode(Sha256::digest(b"s3cr3t-text"))
        );
        assert!(
            view.certificates.is_empty(),
            "an unparsable certificate has no summary"
        );
        let shown = format!("{view:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn each_verdict_is_handed_over_with_the_digest_of_the_bytes_it_was_parsed_from() {
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let data: [(&str, &[u8]); 3] = [
            ("tls.key", key.as_bytes()),
            ("token", b"s3cr3t-value"),
            ("broken.crt", b"not pem"),
        ];
        let mut verdicts = Vec::new();
        let view = SecretView::from_values_with_verdicts(
            SecretMeta::default(),
            data,
            [],
            |digest, contents: &PemContents| verdicts.push((digest, contents.clone())),
        );
        assert_eq!(
            verdicts,
            [(
                ContentDigest::of(key.as_bytes()),
                view.certificates["tls.key"].clone()
            )]
        );
        assert_eq!(verdicts[0].0.to_hex(), view.keys["tls.key"]);
        assert_eq!(
            view,
            SecretView::from_values(SecretMeta::default(), data, [])
        );
    }
}
