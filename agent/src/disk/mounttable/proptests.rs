//! Property tests of the `/proc/self/mountinfo` reader: the kernel writes the file, but every
//! path in it is chosen by whoever mounted (a pod's volume name, a hostPath, a FUSE daemon).
//!
//! `PROPTEST_CASES=N` runs N cases of every property instead of the bounded default.

#![allow(clippy::unwrap_used)]

use crate::proptest_cases::config;
use proptest::prelude::*;

use super::*;

/// What the kernel writes for a path (`show_mountinfo` → `seq_path(..., " \t\n\\")`).
fn kernel_escape(path: &str) -> String {
    let mut out = String::new();
    for c in path.chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// A mount point as someone may name it: separators, blanks, backslashes, octal look-alikes.
fn mount_point() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[a-z0-9~._-]{1,8}",
            Just(" ".to_string()),
            Just("\t".to_string()),
            Just("\n".to_string()),
            Just("\\".to_string()),
            Just("\\040".to_string()),
            Just("\\777".to_string()),
            Just("é".to_string()),
            "[^\u{0}]{1,4}",
        ],
        1..8,
    )
    .prop_map(|parts| format!("/{}", parts.concat()))
}

/// The fields of one mountinfo line after the mount point.
fn tail() -> impl Strategy<Value = String> {
    (
        "(rw|ro),[a-z]{1,8}",
        prop::collection::vec("(shared|master|propagate_from):[0-9]{1,3}", 0..3),
        "[a-z0-9]{1,8}",
        "[a-z0-9/]{1,12}",
    )
        .prop_map(|(options, optional, fstype, source)| {
            let mut fields = vec![options];
            fields.extend(optional);
            fields.extend(["-".to_string(), fstype, source, "rw".to_string()]);
            fields.join(" ")
        })
}

/// A line that is no mount: nothing that starts with a number, then four more fields.
fn garbage_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^0-9+\n][^\n]{0,40}",
        "[0-9]{1,4}( [a-z]{1,3}){0,3}",
        Just(String::new()),
        Just("99999999999999999999999 1 0:1 / /x rw - a b c".to_string()),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// Whatever a path holds, its kernel-escaped form reads back as that path.
    #[test]
    fn an_escaped_mount_point_reads_back_as_itself(path in mount_point()) {
        prop_assert_eq!(unescape(&kernel_escape(&path)), path);
    }

    /// A table of mounts with garbage lines between them yields exactly its mounts.
    #[test]
    fn a_table_yields_exactly_its_mounts(
        lines in prop::collection::vec(
            prop_oneof![
                3 => (any::<u64>(), mount_point(), tail()).prop_map(|(id, point, tail)| {
                    let line = format!(
                        "{id} 1 0:42 / {} {tail}",
                        kernel_escape(&point)
                    );
                    (line, Some((id, PathBuf::from(point))))
                }),
                1 => garbage_line().prop_map(|line| (line, None)),
            ],
            0..24,
        ),
        crlf in any::<bool>(),
    ) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let text: String = lines.iter().map(|(line, _)| format!("{line}{eol}")).collect();
        let mut expected: BTreeSet<MountEntry> = BTreeSet::new();
        for (_, mount) in &lines {
            if let Some((id, point)) = mount {
                expected.insert((*id, point.clone()));
            }
        }
        prop_assert_eq!(mounts_of(&text), expected);
    }

    /// Any bytes (read lossily, as `read_table` does): an answer, never a panic, at most one
    /// mount per line, and only ids that are written in the text.
    #[test]
    fn any_bytes_are_read_without_panic(
        bytes in prop::collection::vec(any::<u16>(), 0..600).prop_map(|words| {
            // Half the bytes from what the format is made of, half anything.
            words.into_iter().map(|w| match w % 10 {
                0 => b' ',
                1 => b'\n',
                2 => b'\\',
                3 => b'7',
                4 => b'0' + (w >> 8) as u8 % 10,
                _ => (w >> 8) as u8,
            }).collect::<Vec<u8>>()
        }),
    ) {
        let text = String::from_utf8_lossy(&bytes);
        let mounts = mounts_of(&text);
        prop_assert!(mounts.len() <= text.lines().count());
        for (id, _) in &mounts {
            prop_assert!(text.contains(&id.to_string()));
        }
        let mut field = String::new();
        for piece in text.split(' ').take(8) {
            field.push_str(piece);
            let _ = unescape(&field);
        }
    }

    /// Two tables: every mount point that came, went or changed its mount is reported once,
    /// sorted, and nothing else.
    #[test]
    fn changes_are_the_points_whose_mounts_differ(
        before in prop::collection::btree_set((0u64..20, "/[ab]{1,2}"), 0..10),
        now in prop::collection::btree_set((0u64..20, "/[ab]{1,2}"), 0..10),
    ) {
        let before: BTreeSet<MountEntry> =
            before.into_iter().map(|(id, p)| (id, PathBuf::from(p))).collect();
        let now: BTreeSet<MountEntry> =
            now.into_iter().map(|(id, p)| (id, PathBuf::from(p))).collect();
        let changed = changed_mount_points(&before, &now);
        let mut sorted = changed.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(&changed, &sorted);
        for point in ["/a", "/b", "/aa", "/ab", "/ba", "/bb"].map(PathBuf::from) {
            let ids = |table: &BTreeSet<MountEntry>| -> BTreeSet<u64> {
                table.iter().filter(|(_, p)| *p == point).map(|(id, _)| *id).collect()
            };
            prop_assert_eq!(changed.contains(&point), ids(&before) != ids(&now), "{:?}", point);
        }
    }
}
