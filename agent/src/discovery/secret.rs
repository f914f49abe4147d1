//! Where a Secret becomes a [`SecretView`]: digests and certificate summaries, no bytes.
//!
//! The Secret's values are hashed and, for PEM-looking keys, summarised here, at the edge; the
//! rest of the agent never sees them. (They did pass through the Kubernetes client's decode
//! buffers, which mountlag does not control.)

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};

use crate::cert::{self, PemContents};

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
}

impl SecretView {
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let meta = &secret.metadata;
        let mut keys = BTreeMap::new();
        let mut certificates = BTreeMap::new();
        for (key, value) in secret.data.iter().flatten() {
            keys.insert(key.clone(), hex::encode(Sha256::digest(&value.0)));
            if cert::is_pem_candidate(key, &value.0)
                && let Ok(contents) = cert::parse_pem(&value.0)
            {
                certificates.insert(key.clone(), contents);
            }
        }
        // `stringData` is write-only in the API; a stored object never carries it, but a
        // hand-written one might.
        for (key, value) in secret.string_data.iter().flatten() {
            keys.insert(key.clone(), hex::encode(Sha256::digest(value.as_bytes())));
        }
        Some(Self {
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            keys,
            certificates,
            immutable: secret.immutable.unwrap_or(false),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn values_become_digests_and_nothing_else() {
        let mut secret = Secret::default();
        secret.metadata.namespace = Some("ns".into());
        secret.metadata.name = Some("tls".into());
        secret.metadata.resource_version = Some("42".into());
        secret.data = Some(BTreeMap::from([
            ("token".to_string(), ByteString(b"s3cr3t-value".to_vec())),
            (
                "tls.crt".to_string(),
                ByteString(
                    b"-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n".to_vec(),
                ),
            ),
        ]));
        let view = SecretView::from_secret(&secret).unwrap();
        assert_eq!(view.resource_version, "42");
        assert_eq!(
            view.keys["token"],
            hex::encode(Sha256::digest(b"s3cr3t-value"))
        );
        assert!(
            view.certificates.is_empty(),
            "an unparsable certificate has no summary"
        );
        assert!(!format!("{view:?}").contains("s3cr3t"));
    }
}
