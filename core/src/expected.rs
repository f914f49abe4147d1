//! What kubelet will write into a volume, predicted from the Secrets in the API.
//!
//! Kubelet's rules (`pkg/volume/secret`, `pkg/volume/projected`):
//! - no `items`: every key becomes a file named after it;
//! - `items`: only the listed keys, at their paths; a listed key missing from the Secret fails
//!   the mount unless the source is optional, in which case it is skipped;
//! - a missing Secret fails the mount unless optional; an optional missing Secret contributes
//!   nothing (a plain secret volume is then empty);
//! - projected sources are merged in order, a later source winning on the same path.
//!
//! File modes are not predicted: kubelet does not rewrite a volume when only modes differ.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::pod::SecretVolume;
use crate::secret::SecretView;

/// What the agent knows about one referenced Secret.
#[derive(Debug, Clone, Copy)]
pub enum SecretLookup<'a> {
    Found(&'a SecretView),
    /// The watch has synced and the Secret does not exist.
    Missing,
    /// The watch has not delivered its first list yet.
    NotSynced,
}

/// The Secret versions a prediction was made from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretVersion {
    pub name: String,
    pub uid: String,
    pub resource_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// A referenced Secret has not been listed yet: nothing can be said.
    Unknown,
    /// kubelet cannot fill the volume (required Secret or key missing); old content stays.
    MountFails {
        reason: String,
    },
    Files(ExpectedFiles),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedFiles {
    /// Path in the volume → lowercase hex SHA-256 of the content.
    pub files: BTreeMap<String, String>,
    /// The volume also has sources mountlag does not predict (ConfigMaps, tokens, ...): extra
    /// files on disk are expected.
    pub partial: bool,
    pub versions: Vec<SecretVersion>,
}

impl ExpectedFiles {
    /// Whether the files on disk (path → digest; `None` when unread) are what kubelet will write.
    pub fn matches(&self, disk: &BTreeMap<String, Option<String>>) -> bool {
        let expected_present = self
            .files
            .iter()
            .all(|(path, digest)| disk.get(path).is_some_and(|d| d.as_ref() == Some(digest)));
        expected_present && (self.partial || disk.len() == self.files.len())
    }

    /// A short stable name for this set of Secret versions: the nudge annotation's value.
    pub fn version_key(&self) -> String {
        let mut hasher = Sha256::new();
        for v in &self.versions {
            hasher.update(v.name.as_bytes());
            hasher.update([0]);
            hasher.update(v.uid.as_bytes());
            hasher.update([0]);
            hasher.update(v.resource_version.as_bytes());
            hasher.update([0]);
        }
        hex::encode(&hasher.finalize()[..8])
    }

    /// `name@resourceVersion` of every Secret, for Events and logs.
    pub fn describe_versions(&self) -> String {
        self.versions
            .iter()
            .map(|v| format!("{}@{}", v.name, v.resource_version))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Predicts the files of `volume` from the Secrets `lookup` knows.
pub fn expected_payload<'a>(
    volume: &SecretVolume,
    lookup: impl Fn(&str) -> SecretLookup<'a>,
) -> Expected {
    let mut files = BTreeMap::new();
    let mut versions = Vec::new();
    for source in &volume.sources {
        let secret = match lookup(&source.secret) {
            SecretLookup::NotSynced => return Expected::Unknown,
            SecretLookup::Missing if source.optional => continue,
            SecretLookup::Missing => {
                return Expected::MountFails {
                    reason: format!("secret {:?} not found", source.secret),
                };
            }
            SecretLookup::Found(secret) => secret,
        };
        versions.push(SecretVersion {
            name: secret.name.clone(),
            uid: secret.uid.clone(),
            resource_version: secret.resource_version.clone(),
        });
        match &source.items {
            None => {
                for (key, digest) in &secret.keys {
                    files.insert(key.clone(), digest.clone());
                }
            }
            Some(items) => {
                for item in items {
                    match secret.keys.get(&item.key) {
                        Some(digest) => {
                            files.insert(item.path.clone(), digest.clone());
                        }
                        None if source.optional => {}
                        None => {
                            return Expected::MountFails {
                                reason: format!(
                                    "secret {:?} has no key {:?}",
                                    source.secret, item.key
                                ),
                            };
                        }
                    }
                }
            }
        }
    }
    Expected::Files(ExpectedFiles {
        files,
        partial: volume.has_other_sources,
        versions,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pod::{KeyPath, SecretSource};
    use crate::volume::VolumeKind;

    fn view(name: &str, rv: &str, keys: &[(&str, &str)]) -> SecretView {
        SecretView {
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            resource_version: rv.into(),
            keys: keys
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            certificates: BTreeMap::new(),
            immutable: false,
            certificate_name: None,
        }
    }

    fn source(secret: &str, items: Option<&[(&str, &str)]>, optional: bool) -> SecretSource {
        SecretSource {
            secret: secret.into(),
            items: items.map(|items| {
                items
                    .iter()
                    .map(|(k, p)| KeyPath {
                        key: k.to_string(),
                        path: p.to_string(),
                    })
                    .collect()
            }),
            optional,
        }
    }

    fn volume(kind: VolumeKind, sources: Vec<SecretSource>) -> SecretVolume {
        SecretVolume {
            name: "v".into(),
            kind,
            sources,
            has_other_sources: false,
        }
    }

    fn files(expected: &Expected) -> Vec<(&str, &str)> {
        match expected {
            Expected::Files(f) => f
                .files
                .iter()
                .map(|(p, d)| (p.as_str(), d.as_str()))
                .collect(),
            other => panic!("expected files, got {other:?}"),
        }
    }

    #[test]
    fn without_items_every_key_is_a_file() {
        let tls = view("tls", "1", &[("tls.crt", "c1"), ("tls.key", "k1")]);
        let v = volume(VolumeKind::Secret, vec![source("tls", None, false)]);
        let e = expected_payload(&v, |_| SecretLookup::Found(&tls));
        assert_eq!(files(&e), vec![("tls.crt", "c1"), ("tls.key", "k1")]);
    }

    #[test]
    fn items_select_keys_and_place_them_at_their_paths() {
        let tls = view(
            "tls",
            "1",
            &[("tls.crt", "c1"), ("tls.key", "k1"), ("ca.crt", "ca")],
        );
        let v = volume(
            VolumeKind::Secret,
            vec![source(
                "tls",
                Some(&[("tls.crt", "certs/server.crt")]),
                false,
            )],
        );
        let e = expected_payload(&v, |_| SecretLookup::Found(&tls));
        assert_eq!(files(&e), vec![("certs/server.crt", "c1")]);
    }

    #[test]
    fn a_missing_key_fails_the_mount_unless_optional() {
        let tls = view("tls", "1", &[("tls.crt", "c1")]);
        let required = volume(
            VolumeKind::Secret,
            vec![source("tls", Some(&[("tls.key", "tls.key")]), false)],
        );
        assert!(matches!(
            expected_payload(&required, |_| SecretLookup::Found(&tls)),
            Expected::MountFails { .. }
        ));
        let optional = volume(
            VolumeKind::Secret,
            vec![source(
                "tls",
                Some(&[("tls.key", "tls.key"), ("tls.crt", "tls.crt")]),
                true,
            )],
        );
        assert_eq!(
            files(&expected_payload(&optional, |_| SecretLookup::Found(&tls))),
            vec![("tls.crt", "c1")]
        );
    }

    #[test]
    fn a_missing_secret_fails_the_mount_unless_optional() {
        let required = volume(VolumeKind::Secret, vec![source("tls", None, false)]);
        match expected_payload(&required, |_| SecretLookup::Missing) {
            Expected::MountFails { reason } => assert!(reason.contains("tls")),
            other => panic!("{other:?}"),
        }
        let optional = volume(VolumeKind::Secret, vec![source("tls", None, true)]);
        assert!(files(&expected_payload(&optional, |_| SecretLookup::Missing)).is_empty());
    }

    #[test]
    fn an_unsynced_secret_means_nothing_is_known() {
        let v = volume(VolumeKind::Secret, vec![source("tls", None, false)]);
        assert_eq!(
            expected_payload(&v, |_| SecretLookup::NotSynced),
            Expected::Unknown
        );
    }

    #[test]
    fn projected_sources_merge_in_order_later_wins() {
        let a = view("a", "1", &[("tls.crt", "from-a"), ("only-a", "x")]);
        let b = view("b", "7", &[("tls.crt", "from-b")]);
        let v = volume(
            VolumeKind::Projected,
            vec![
                source("a", None, false),
                source("missing", None, true),
                source("b", None, false),
            ],
        );
        let e = expected_payload(&v, |name| match name {
            "a" => SecretLookup::Found(&a),
            "b" => SecretLookup::Found(&b),
            _ => SecretLookup::Missing,
        });
        assert_eq!(files(&e), vec![("only-a", "x"), ("tls.crt", "from-b")]);
        let Expected::Files(f) = e else {
            unreachable!()
        };
        assert_eq!(f.describe_versions(), "a@1, b@7");
    }

    #[test]
    fn matching_compares_paths_and_digests_and_tolerates_extras_only_when_partial() {
        let mut f = ExpectedFiles {
            files: BTreeMap::from([("tls.crt".into(), "c1".into())]),
            partial: false,
            versions: vec![],
        };
        let same = BTreeMap::from([("tls.crt".to_string(), Some("c1".to_string()))]);
        let other = BTreeMap::from([("tls.crt".to_string(), Some("c0".to_string()))]);
        let extra = BTreeMap::from([
            ("tls.crt".to_string(), Some("c1".to_string())),
            ("token".to_string(), Some("t".to_string())),
        ]);
        assert!(f.matches(&same));
        assert!(!f.matches(&other));
        assert!(!f.matches(&extra));
        assert!(!f.matches(&BTreeMap::new()));
        f.partial = true;
        assert!(f.matches(&extra));
    }

    #[test]
    fn the_version_key_changes_with_any_resource_version() {
        let mk = |rv: &str| ExpectedFiles {
            files: BTreeMap::new(),
            partial: false,
            versions: vec![SecretVersion {
                name: "tls".into(),
                uid: "u".into(),
                resource_version: rv.into(),
            }],
        };
        assert_eq!(mk("1").version_key(), mk("1").version_key());
        assert_ne!(mk("1").version_key(), mk("2").version_key());
        assert_eq!(mk("1").version_key().len(), 16);
    }
}
