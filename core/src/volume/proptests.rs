//! Property tests of [`super::VolumeLocation::from_path`]: paths come from the disk.
//!
//! `PROPTEST_CASES=N` runs N cases of every property instead of the bounded default.

#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;

use crate::proptest_cases::config;
use proptest::prelude::*;

use super::*;

/// One path component as a volume, pod or root directory may be named (not `.`/`..`).
fn component() -> impl Strategy<Value = String> {
    "[^/\u{0}]{1,40}".prop_filter("not . or ..", |c| c != "." && c != "..")
}

proptest! {
    #![proptest_config(config(512))]

    /// A path in kubelet's shape reads back as the pod, plugin and volume it was made of.
    #[test]
    fn a_kubelet_volume_path_reads_back_as_what_it_was_made_of(
        root in prop::collection::vec(component(), 0..4),
        uid in component(),
        secret in any::<bool>(),
        name in component(),
    ) {
        let kind = if secret { VolumeKind::Secret } else { VolumeKind::Projected };
        let root: PathBuf = std::iter::once("/".to_string()).chain(root).collect();
        let path = KubeletRoot::new(root).volume_dir(&uid, kind, &name);
        let location = VolumeLocation::from_path(&path);
        prop_assert_eq!(location.pod_uid.as_deref(), Some(uid.as_str()));
        prop_assert_eq!(location.kind, Some(kind));
        prop_assert_eq!(&location.name, &name);
        prop_assert_eq!(location.path, path);
    }

    /// Any bytes as a path: an answer, and a kind only where the parent is a plugin directory.
    #[test]
    fn any_path_is_read_without_panic_and_kind_needs_the_plugin_directory(
        bytes in prop::collection::vec(
            prop_oneof![any::<u8>(), Just(b'/'), Just(b'.'), Just(0xff)],
            0..120,
        ),
    ) {
        let path = Path::new(OsStr::from_bytes(&bytes));
        let location = VolumeLocation::from_path(path);
        prop_assert_eq!(&location.name, &file_name(path));
        if let Some(kind) = location.kind {
            let plugin = path.parent().map(file_name);
            prop_assert_eq!(plugin.as_deref(), Some(kind.plugin_dir()));
        } else {
            prop_assert!(location.pod_uid.is_none());
        }
    }
}
