//! Property tests of the `/proc/<pid>/{cgroup,stat,status,cmdline}` parsers: a process in any
//! container on the node chooses its own title, comm and (inside its namespace) cgroup names.
//!
//! `PROPTEST_CASES=N` runs N cases of every property instead of the bounded default.

#![allow(clippy::unwrap_used)]

use crate::proptest_cases::config;
use proptest::prelude::*;

use super::*;

/// A pod UID: 32 hex digits, as a UUID (either case) or bare (a static pod's).
fn uid() -> impl Strategy<Value = String> {
    ("[0-9a-fA-F]{32}", any::<bool>()).prop_map(|(hex, uuid)| {
        let h = hex.as_str();
        if uuid {
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        } else {
            hex
        }
    })
}

/// How the runtime and the cgroup driver lay a container out.
#[derive(Debug, Clone, Copy)]
enum Layout {
    Systemd(&'static str),
    Cgroupfs(&'static str),
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        prop::sample::select(vec!["cri-containerd-", "crio-", "docker-"]).prop_map(Layout::Systemd),
        prop::sample::select(vec!["", "crio-"]).prop_map(Layout::Cgroupfs),
    ]
}

/// The cgroup path of container `id` of pod `uid` with QoS class `qos` (`""`: Guaranteed).
fn cgroup_path(prefix: &str, layout: Layout, qos: &str, uid: &str, id: &str) -> String {
    match layout {
        Layout::Systemd(runtime) => {
            let qos_dash = if qos.is_empty() {
                String::new()
            } else {
                format!("-{qos}")
            };
            let qos_slice = if qos.is_empty() {
                String::new()
            } else {
                format!("/kubepods-{qos}.slice")
            };
            format!(
                "{prefix}/kubepods.slice{qos_slice}/kubepods{qos_dash}-pod{}.slice/{runtime}{id}.scope",
                uid.replace('-', "_")
            )
        }
        Layout::Cgroupfs(runtime) => {
            let qos = if qos.is_empty() {
                String::new()
            } else {
                format!("/{qos}")
            };
            format!("{prefix}/kubepods{qos}/pod{uid}/{runtime}{id}")
        }
    }
}

/// Lines of `/proc/<pid>/cgroup` that name no pod.
fn other_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,2}:[a-z,=]{0,12}:/[a-z./_-]{0,30}",
        Just("0::/".to_string()),
        Just("0::/system.slice/containerd.service".to_string()),
        "[^\n]{0,40}",
    ]
}

proptest! {
    #![proptest_config(config(512))]

    /// Every layout of every runtime, under any cgroup root or namespace prefix, on a v1 or v2
    /// line, gives the pod UID (dashed, lower case) and the container id (lower case).
    #[test]
    fn a_container_cgroup_line_gives_its_pod_and_container(
        uid in uid(),
        id in "[0-9a-fA-F]{12,128}",
        layout in layout(),
        qos in prop::sample::select(vec!["", "burstable", "besteffort"]),
        prefix in prop::sample::select(vec!["", "/..", "/../..", "/custom-root", "/a/b.slice"]),
        v1 in prop::option::of(("[1-9][0-9]?", "[a-z]{1,8}(,[a-z]{1,8})?")),
    ) {
        let path = cgroup_path(prefix, layout, qos, &uid, &id);
        let line = match &v1 {
            Some((n, controllers)) => format!("{n}:{controllers}:{path}"),
            None => format!("0::{path}"),
        };
        let want = CgroupMatch {
            pod_uid: uid.to_ascii_lowercase(),
            container_id: Some(id.to_ascii_lowercase()),
        };
        prop_assert_eq!(parse_cgroup_line(&line), Some(want.clone()), "{}", line);
        prop_assert_eq!(parse_cgroup_line(&format!("{line}\n")), Some(want.clone()));
        // CRI-O's monitor is in the pod, not in the container.
        if let Layout::Systemd(_) = layout {
            let conmon = cgroup_path(prefix, Layout::Systemd("crio-conmon-"), qos, &uid, &id);
            let found = parse_cgroup_line(&format!("0::{conmon}")).unwrap();
            prop_assert_eq!(found.container_id, None);
            prop_assert_eq!(found.pod_uid, want.pod_uid);
        }
    }

    /// A whole file: the v2 line wins; without one, a v1 line naming a container; lines that
    /// name nothing change nothing.
    #[test]
    fn a_cgroup_file_is_judged_by_its_best_line(
        uid in uid(),
        other_uid in uid(),
        id in "[0-9a-f]{64}",
        layout in layout(),
        noise in prop::collection::vec(other_line(), 0..6),
        has_v2 in any::<bool>(),
        at in any::<prop::sample::Index>(),
    ) {
        let mut lines = noise.clone();
        let v1_pod = format!("3:cpu:/kubepods/pod{other_uid}");
        lines.insert(at.index(lines.len() + 1), v1_pod);
        let v1_container = format!("5:memory:{}", cgroup_path("", layout, "", &uid, &id));
        lines.push(v1_container);
        if has_v2 {
            let v2 = cgroup_path("", layout, "burstable", &other_uid, &id);
            lines.insert(0, format!("0::{v2}"));
        }
        let text = lines.join("\n");
        let found = parse_cgroup_file(&text);
        // The noise itself may name a pod (arbitrary text): only judge when it does not.
        prop_assume!(noise.iter().all(|l| parse_cgroup_line(l).is_none()));
        let want_uid = if has_v2 { &other_uid } else { &uid };
        prop_assert_eq!(found.map(|f| f.pod_uid), Some(want_uid.to_ascii_lowercase()));
    }

    /// Any text: an answer, never a panic; a pod UID is 32 hex digits (UUID-dashed or not) and a
    /// container id 12-128 lower-case hex digits.
    #[test]
    fn any_cgroup_text_gives_only_well_formed_ids(
        text in prop_oneof![
            any::<String>(),
            prop::collection::vec(prop::sample::select(vec![
                "0::", "1:cpu:", "/", "..", "kubepods", "-pod", "pod", ".slice", ".scope", "crio-",
                "conmon-", "cri-containerd-", "_", "-", "0123456789abcdef", "ABCDEF", "\n", ":",
            ]), 0..40).prop_map(|parts| parts.concat()),
        ],
    ) {
        if let Some(found) = parse_cgroup_file(&text) {
            let hex = found.pod_uid.bytes().filter(u8::is_ascii_hexdigit).count();
            prop_assert_eq!(hex, 32, "{:?}", found);
            prop_assert!(found.pod_uid.len() == 32 || found.pod_uid.len() == 36, "{:?}", found);
            prop_assert_eq!(found.pod_uid.to_ascii_lowercase(), found.pod_uid.clone());
            if let Some(id) = &found.container_id {
                prop_assert!((12..=128).contains(&id.len()), "{:?}", found);
                prop_assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            }
        }
    }

    /// `/proc/<pid>/stat` with any comm (a process names itself: spaces, parentheses, numbers,
    /// newlines): the comm, ppid and start time come back as written.
    #[test]
    fn a_stat_line_gives_back_its_comm_ppid_and_start_time(
        pid in 1i32..4_194_304,
        comm in prop_oneof!["[^\u{0}]{0,15}", "[() 0-9a-z]{0,15}", Just(") S 1 2 (".to_string())],
        state in "[RSDZTtXIK]",
        ppid in 0i32..4_194_304,
        middle in prop::collection::vec(any::<i64>(), 17),
        start_time in any::<u64>(),
        rest in prop::collection::vec(any::<u64>(), 0..30),
    ) {
        let middle: Vec<String> = middle.iter().map(i64::to_string).collect();
        let rest: Vec<String> = rest.iter().map(u64::to_string).collect();
        let text = format!(
            "{pid} ({comm}) {state} {ppid} {} {start_time} {}\n",
            middle.join(" "),
            rest.join(" ")
        );
        prop_assert_eq!(
            parse_stat(&text),
            Some(StatFields { comm, ppid, start_time }),
            "{}", text
        );
    }

    /// `/proc/<pid>/status`: the last value of the `NSpid:` line, wherever it is.
    #[test]
    fn the_last_nspid_value_is_read(
        before in prop::collection::vec("[A-Za-z_]{1,12}:\t[^\n]{0,20}", 0..10),
        after in prop::collection::vec("[A-Za-z_]{1,12}:\t[^\n]{0,20}", 0..10),
        pids in prop::collection::vec(1i32..4_194_304, 1..5),
    ) {
        let pids_text: Vec<String> = pids.iter().map(i32::to_string).collect();
        let mut lines: Vec<String> =
            before.into_iter().filter(|l| !l.starts_with("NSpid:")).collect();
        lines.push(format!("NSpid:\t{}", pids_text.join("\t")));
        lines.extend(after);
        let text = lines.join("\n") + "\n";
        prop_assert_eq!(parse_status_nspid(&text), pids.last().copied());
    }

    /// Any status text: never a panic.
    #[test]
    fn any_status_text_is_read_without_panic(text in any::<String>(), nspid in any::<String>()) {
        let _ = parse_status_nspid(&text);
        let _ = parse_status_nspid(&format!("{text}\nNSpid:{nspid}\n"));
        let _ = parse_stat(&text);
    }

    /// `/proc/<pid>/cmdline`: argv back, whatever the arguments hold, without the NUL padding a
    /// rewritten title leaves; bytes that are not UTF-8 are replaced, never a panic.
    #[test]
    fn a_cmdline_gives_back_its_arguments(
        argv in prop::collection::vec("[^\u{0}]{0,12}", 1..8),
        padding in 0usize..64,
        raw in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = argv.join("\0").into_bytes();
        bytes.push(0);
        bytes.extend(std::iter::repeat_n(0u8, padding));
        let mut want = argv.clone();
        while want.last().is_some_and(String::is_empty) {
            want.pop();
        }
        prop_assert_eq!(parse_cmdline(&bytes), want);
        let args = parse_cmdline(&raw);
        prop_assert!(args.len() <= raw.iter().filter(|b| **b == 0).count() + 1);
        prop_assert!(args.last().is_none_or(|a| !a.is_empty()));
    }
}
