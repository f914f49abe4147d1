//! Where a Secret becomes a [`SecretView`]: digests and certificate summaries, no bytes.
//!
//! The Secret's values are handed to `mountlag-core` here, at the edge, and hashed there; the
//! rest of the agent never sees them. (They did pass through the Kubernetes client's decode
//! buffers, which mountlag does not control.)
//!
//! The certificate summaries made here are also kept in the agent's [`SharedPemCache`], by the
//! digest of the value: kubelet writes the same bytes into the volume moments later, and the
//! read that follows its swap then finds them parsed.

use k8s_openapi::api::core::v1::Secret;
use mountlag_core::cert::SharedPemCache;
use mountlag_core::secret::{SecretMeta, SecretView};

/// `None` for a Secret without namespace or name (never the case for stored objects).
pub fn secret_view(secret: &Secret) -> Option<SecretView> {
    secret_view_with(secret, None)
}

/// [`secret_view`], keeping every certificate summary it makes in `cache` (by the digest of
/// the value it was parsed from) for the volume reads that follow. Nothing is parsed twice.
pub fn secret_view_with(secret: &Secret, cache: Option<&SharedPemCache>) -> Option<SecretView> {
    let meta = &secret.metadata;
    let identity = SecretMeta {
        namespace: meta.namespace.clone()?,
        name: meta.name.clone()?,
        uid: meta.uid.clone().unwrap_or_default(),
        resource_version: meta.resource_version.clone().unwrap_or_default(),
        immutable: secret.immutable.unwrap_or(false),
        certificate_name: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(mountlag_core::certmanager::CERTIFICATE_NAME_ANNOTATION))
            .cloned(),
    };
    let data = secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| (key.as_str(), value.0.as_slice()));
    let string_data = secret
        .string_data
        .iter()
        .flatten()
        .map(|(key, value)| (key.as_str(), value.as_str()));
    Some(SecretView::from_values_with_verdicts(
        identity,
        data,
        string_data,
        |digest, contents| {
            if let Some(cache) = cache {
                cache.lock().insert(digest, contents.clone());
            }
        },
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    #[test]
    fn an_api_secret_becomes_digests_and_nothing_else() {
        let mut secret = Secret::default();
        secret.metadata.namespace = Some("ns".into());
        secret.metadata.name = Some("tls".into());
        secret.metadata.resource_version = Some("42".into());
        secret.immutable = Some(true);
        secret.data = Some(BTreeMap::from([(
            "token".to_string(),
            ByteString(b"s3cr3t-value".to_vec()),
        )]));
        let view = secret_view(&secret).unwrap();
        assert_eq!(view.resource_version, "42");
        assert!(view.immutable);
        assert_eq!(view.keys.len(), 1);
        assert!(!format!("{view:?}").contains("s3cr3t"));
        secret.metadata.name = None;
        assert_eq!(secret_view(&secret), None);
    }
}
