//! Tests of [`super`].

#![allow(clippy::unwrap_used)]

use super::*;

const U: &str = "8f3c2a1e-5b6d-4e7f-9a0b-1c2d3e4f5a6b";
const U_SYSTEMD: &str = "8f3c2a1e_5b6d_4e7f_9a0b_1c2d3e4f5a6b";
const STATIC: &str = "0123456789abcdef0123456789abcdef";
const C: &str = "4a5f0e3c9b1d2e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";

fn m(uid: &str, id: Option<&str>) -> Option<CgroupMatch> {
    Some(CgroupMatch {
        pod_uid: uid.to_string(),
        container_id: id.map(str::to_string),
    })
}

#[test]
fn cgroup_lines_of_every_layout() {
    let cases: Vec<(String, Option<CgroupMatch>)> = vec![
        // systemd driver, cgroup v2, containerd: Burstable, Guaranteed, BestEffort.
        (
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_SYSTEMD}.slice/cri-containerd-{C}.scope"
            ),
            m(U, Some(C)),
        ),
        (
            format!("0::/kubepods.slice/kubepods-pod{U_SYSTEMD}.slice/cri-containerd-{C}.scope"),
            m(U, Some(C)),
        ),
        (
            format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{U_SYSTEMD}.slice/crio-{C}.scope"
            ),
            m(U, Some(C)),
        ),
        // cgroupfs driver: containerd, CRI-O, Guaranteed.
        (format!("0::/kubepods/burstable/pod{U}/{C}"), m(U, Some(C))),
        (format!("0::/kubepods/besteffort/pod{U}/{C}"), m(U, Some(C))),
        (format!("0::/kubepods/pod{U}/crio-{C}"), m(U, Some(C))),
        // cgroup v1 lines.
        (
            format!(
                "12:memory:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_SYSTEMD}.slice/cri-containerd-{C}.scope"
            ),
            m(U, Some(C)),
        ),
        (
            format!("4:cpu,cpuacct:/kubepods/burstable/pod{U}/{C}"),
            m(U, Some(C)),
        ),
        (
            format!(
                "1:name=systemd:/kubepods.slice/kubepods-pod{U_SYSTEMD}.slice/docker-{C}.scope"
            ),
            m(U, Some(C)),
        ),
        // cri-dockerd.
        (
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_SYSTEMD}.slice/docker-{C}.scope"
            ),
            m(U, Some(C)),
        ),
        // CRI-O's conmon: in the pod, in no container.
        (
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_SYSTEMD}.slice/crio-conmon-{C}.scope"
            ),
            m(U, None),
        ),
        // The pod cgroup itself.
        (
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_SYSTEMD}.slice"
            ),
            m(U, None),
        ),
        // Static pod: 32 hex digits, no dashes.
        (
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC}.slice/cri-containerd-{C}.scope"
            ),
            m(STATIC, Some(C)),
        ),
        (
            format!("0::/kubepods/burstable/pod{STATIC}/{C}"),
            m(STATIC, Some(C)),
        ),
        // cgroupRoot prefixes (kind).
        (
            format!(
                "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{U_SYSTEMD}.slice/cri-containerd-{C}.scope"
            ),
            m(U, Some(C)),
        ),
        (
            format!("0::/custom/root/kubepods/burstable/pod{U}/{C}"),
            m(U, Some(C)),
        ),
        // Private cgroup namespace: relative to the reader's cgroup.
        (
            format!(
                "0::/../../kubepods-besteffort.slice/kubepods-besteffort-pod{U_SYSTEMD}.slice/cri-containerd-{C}.scope"
            ),
            m(U, Some(C)),
        ),
        (
            format!("0::/../../../kubepods-pod{U_SYSTEMD}.slice/cri-containerd-{C}.scope"),
            m(U, Some(C)),
        ),
        (
            format!("0::kubepods-pod{U_SYSTEMD}.slice/cri-containerd-{C}.scope"),
            m(U, Some(C)),
        ),
        // A sub-cgroup the container made inside its own.
        (format!("0::/kubepods/pod{U}/{C}/init.scope"), m(U, Some(C))),
        // Upper-case is normalised.
        (
            format!("0::/kubepods/pod{}/{}", U.to_uppercase(), C.to_uppercase()),
            m(U, Some(C)),
        ),
    ];
    for (line, want) in cases {
        assert_eq!(parse_cgroup_line(&line), want, "{line}");
    }
}

#[test]
fn lines_outside_pods_and_garbage_give_none() {
    let mut lines: Vec<String> = [
        "",
        "0::/",
        "0::/user.slice/user-1000.slice/session-2.scope",
        "0::/system.slice/containerd.service",
        "4:memory:/process_api/20c4197b7522b16a214ab7a2e8bdf0f3",
        "0::/kubepods.slice/kubepods-burstable.slice",
        "0::/kubepods/burstable",
        "0::/kubepods/podnot-a-uid/abc",
        "0::/kubepods.slice/kubepods-pod.slice/cri-containerd-x.scope",
        "0::/../../..",
        "no colons at all",
        "x::/kubepods/pod8f3c2a1e-5b6d-4e7f-9a0b-1c2d3e4f5a6b/abc",
        ":::::",
        "0:",
        "0::/kubepods/pod8f3c2a1e-5b6d-4e7f-9a0b-1c2d3e4f5a6",
        "0::/kubepods/pod8f3c2a1e5b6d-4e7f-9a0b-1c2d3e4f5a6b0",
        "0::/kubepods/pod8f3c2a1e-5b6d-4e7f-9a0b-1c2d3e4f5a6b-",
        "0::/kubepods/podzz3c2a1e-5b6d-4e7f-9a0b-1c2d3e4f5a6b",
        "\u{0}\u{ff}(\u{10ffff}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    lines.push("0::/".to_string() + &"pod/".repeat(10_000));
    lines.push("0::/kubepods/pod".to_string() + &"ä".repeat(40));
    for line in lines {
        assert_eq!(parse_cgroup_line(&line), None, "{line:?}");
    }
}

#[test]
fn container_ids_that_are_not_ids_leave_the_container_unknown() {
    for tail in [
        "pause",
        "crio-conmon-abc.scope",
        "cri-containerd-.scope",
        "xyz",
    ] {
        let line = format!("0::/kubepods/pod{U}/{tail}");
        assert_eq!(parse_cgroup_line(&line), m(U, None), "{line}");
    }
}

#[test]
fn a_cgroup_file_prefers_the_v2_line() {
    let file = format!(
        "9:name=systemd:/\n4:memory:/process_api/20c4197b7522b16a214ab7a2e8bdf0f3\n\
             0::/kubepods.slice/kubepods-pod{U_SYSTEMD}.slice/cri-containerd-{C}.scope\n"
    );
    assert_eq!(parse_cgroup_file(&file), m(U, Some(C)));
    let v1_only = format!(
        "12:pids:/kubepods/burstable/pod{U}\n11:memory:/kubepods/burstable/pod{U}/{C}\n0::/\n"
    );
    assert_eq!(parse_cgroup_file(&v1_only), m(U, Some(C)));
    assert_eq!(parse_cgroup_file("0::/\n1:cpu:/\n"), None);
    assert_eq!(parse_cgroup_file(""), None);
}

#[test]
fn uids_compare_across_spellings() {
    assert!(same_uid(U, U_SYSTEMD));
    assert!(same_uid(&U.to_uppercase(), U));
    assert!(!same_uid(U, STATIC));
}

#[test]
fn stat_with_odd_comms() {
    let base = |comm: &str| {
        format!(
            "4242 ({comm}) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 12345678 100 \
                 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0"
        )
    };
    for comm in ["nginx", "a b", "x) S 1 (y", "((", "))", ""] {
        let stat = parse_stat(&base(comm)).unwrap();
        assert_eq!(stat.comm, comm);
        assert_eq!(stat.ppid, 17);
        assert_eq!(stat.start_time, 987_654);
    }
    for garbage in [
        "",
        "1",
        "1 (x",
        "1 x) S 2",
        "1 (x) S",
        ")(",
        "1 (x) S abc 3",
    ] {
        assert_eq!(parse_stat(garbage), None, "{garbage:?}");
    }
}

#[test]
fn nspid_and_cmdline() {
    let status = "Name:\tnginx\nNSpid:\t81234\t1\nNSpgid:\t81234\t1\n";
    assert_eq!(parse_status_nspid(status), Some(1));
    assert_eq!(parse_status_nspid("NSpid:\t77\n"), Some(77));
    assert_eq!(parse_status_nspid("Name: x\n"), None);
    assert_eq!(parse_status_nspid("NSpid:\n"), None);
    assert_eq!(
        parse_cmdline(b"nginx: master process /usr/sbin/nginx -g daemon off;\0\0\0\0\0"),
        vec!["nginx: master process /usr/sbin/nginx -g daemon off;"]
    );
    assert_eq!(
        parse_cmdline(b"haproxy\0-W\0-f\0/etc/haproxy.cfg\0"),
        vec!["haproxy", "-W", "-f", "/etc/haproxy.cfg"]
    );
    assert_eq!(parse_cmdline(b""), Vec::<String>::new());
    assert_eq!(parse_cmdline(b"\xff\0"), vec!["\u{fffd}"]);
}

fn proc(pid: i32, ppid: i32, comm: &str, argv: &[&str], start: u64) -> ProcessInfo {
    ProcessInfo {
        pid,
        ppid,
        comm: comm.to_string(),
        cmdline: argv.iter().map(|a| a.to_string()).collect(),
        start_time: start,
        cgroup: m(U, Some(C)),
        nspid_is_one: false,
    }
}

#[test]
fn nginx_master_not_its_workers() {
    let procs = [
        proc(
            10,
            1,
            "nginx",
            &["nginx: master process /usr/sbin/nginx -g daemon off;"],
            100,
        ),
        proc(11, 10, "nginx", &["nginx: worker process"], 101),
        proc(12, 10, "nginx", &["nginx: worker process"], 101),
    ];
    let mine = container_processes(&procs, U, C);
    let t = Target::TitlePrefix("nginx: master process".into());
    assert_eq!(select_target(&mine, &t, "ns/p", "nginx").unwrap().pid, 10);
    // By comm: every process is "nginx"; the parent rule leaves the master.
    let t = Target::TitlePrefix("nginx".into());
    assert_eq!(select_target(&mine, &t, "ns/p", "nginx").unwrap().pid, 10);
}

#[test]
fn haproxy_master_worker() {
    let argv = ["haproxy", "-W", "-f", "/etc/haproxy/haproxy.cfg"];
    let procs = [
        proc(7, 3, "haproxy", &argv, 50),
        proc(8, 7, "haproxy", &argv, 60),
        proc(9, 7, "haproxy", &argv, 40), // clock skew does not matter: parent matches
        proc(3, 1, "tini", &["/tini", "--", "haproxy"], 10),
    ];
    let mine = container_processes(&procs, U, C);
    let t = Target::TitlePrefix("haproxy".into());
    assert_eq!(select_target(&mine, &t, "ns/p", "haproxy").unwrap().pid, 7);
}

#[test]
fn several_candidates_the_oldest_wins() {
    let procs = [
        proc(30, 1, "traefik", &["traefik"], 500),
        proc(20, 2, "traefik", &["traefik"], 400),
    ];
    let mine = container_processes(&procs, U, C);
    let t = Target::TitlePrefix("traefik".into());
    assert_eq!(select_target(&mine, &t, "ns/p", "c").unwrap().pid, 20);
}

#[test]
fn comms_in_the_not_found_message_are_escaped() {
    // Any process may rename itself (prctl PR_SET_NAME, 15 bytes) or rewrite its argv.
    let procs = [
        proc(50, 1, "\u{1b}]0;owned\u{7}", &["\u{1b}[2J\u{202e}x"], 1),
        proc(51, 50, "\u{9b}31m\r\nfake", &["y"], 2),
    ];
    let mine = container_processes(&procs, U, C);
    let t = Target::TitlePrefix("nginx: master process".into());
    let err = select_target(&mine, &t, "ns/p", "c")
        .unwrap_err()
        .to_string();
    assert!(!err.chars().any(crate::text::needs_escape), "{err:?}");
    assert!(err.contains("\\u{1b}]0;owned\\u{7}"), "{err}");
    assert!(err.contains("\\u{9b}31m\\r\\nfake"), "{err}");
}

#[test]
fn init_process_by_nspid_else_by_parent() {
    let mut procs = vec![
        proc(41, 40, "sleep", &["sleep", "1"], 9),
        proc(40, 5, "sh", &["sh", "-c", "x"], 8),
    ];
    let mine = container_processes(&procs, U, C);
    assert_eq!(
        select_target(&mine, &Target::InitProcess, "ns/p", "c")
            .unwrap()
            .pid,
        40
    );
    procs[0].nspid_is_one = true;
    let mine = container_processes(&procs, U, C);
    assert_eq!(
        select_target(&mine, &Target::InitProcess, "ns/p", "c")
            .unwrap()
            .pid,
        41
    );
}

#[test]
fn other_containers_and_the_pause_container_are_not_candidates() {
    let pause = "9".repeat(64);
    let mut other = proc(5, 1, "pause", &["/pause"], 1);
    other.cgroup = m(U, Some(&pause));
    let mut conmon = proc(6, 1, "conmon", &["conmon"], 1);
    conmon.cgroup = m(U, None);
    let mut elsewhere = proc(7, 1, "nginx", &["nginx: master process"], 1);
    elsewhere.cgroup = m(STATIC, Some(C));
    let mut host = proc(8, 1, "nginx", &["nginx: master process"], 1);
    host.cgroup = None;
    let procs = [other, conmon, elsewhere, host];
    assert!(container_processes(&procs, U, C).is_empty());
    assert_eq!(container_processes(&procs, U_SYSTEMD, &pause).len(), 1);
    let err = select_target(
        &container_processes(&procs, U, C),
        &Target::InitProcess,
        "ns/p",
        "c",
    )
    .unwrap_err();
    assert!(err.to_string().contains("0 process(es)"), "{err}");
}

#[test]
fn not_found_says_what_and_how_many() {
    let procs = [proc(11, 10, "nginx", &["nginx: worker process"], 101)];
    let mine = container_processes(&procs, U, C);
    let err = select_target(
        &mine,
        &Target::TitlePrefix("nginx: master process".into()),
        "ingress/edge-0",
        "nginx",
    )
    .unwrap_err();
    let text = err.to_string();
    for part in [
        "ingress/edge-0",
        "container nginx",
        "\"nginx: master process\"",
        "1 process(es)",
        "comm: nginx",
    ] {
        assert!(text.contains(part), "{text} lacks {part}");
    }
}

#[test]
fn scan_reads_a_fake_proc_tree_and_skips_broken_entries() {
    let root = tempfile::tempdir().unwrap();
    let write = |pid: &str, name: &str, data: &[u8]| {
        let dir = root.path().join(pid);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
    };
    let cg = format!("0::/kubepods/burstable/pod{U}/{C}\n");
    write(
        "100",
        "stat",
        b"100 (nginx: (master)) S 1 100 100 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5555 0 0",
    );
    write("100", "comm", b"nginx\n");
    write(
        "100",
        "cmdline",
        b"nginx: master process nginx -g daemon off;\0\0\0",
    );
    write("100", "status", b"Name:\tnginx\nNSpid:\t100\t1\n");
    write("100", "cgroup", cg.as_bytes());
    // No stat: vanished mid-scan.
    write("101", "cgroup", cg.as_bytes());
    // Garbage stat.
    write("102", "stat", b"\xff\xfe garbage");
    // Not a pid.
    write("self", "stat", b"1 (x) S 0");
    // Only a stat: no cgroup, comm from stat.
    write(
        "103",
        "stat",
        b"103 (kworker/0:1) I 2 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 7 0 0",
    );
    let procs = scan(root.path());
    assert_eq!(procs.len(), 2, "{procs:?}");
    let nginx = &procs[0];
    assert_eq!(nginx.pid, 100);
    assert_eq!(nginx.ppid, 1);
    assert_eq!(nginx.comm, "nginx");
    assert_eq!(nginx.start_time, 5555);
    assert!(nginx.nspid_is_one);
    assert_eq!(nginx.title(), "nginx: master process nginx -g daemon off;");
    assert_eq!(nginx.cgroup, m(U, Some(C)));
    assert_eq!(procs[1].comm, "kworker/0:1");
    assert_eq!(procs[1].cgroup, None);
    let pod = scan_pod(root.path(), U_SYSTEMD).unwrap();
    assert_eq!(pod.len(), 1);
    assert!(scan(&root.path().join("missing")).is_empty());
    assert!(matches!(
        scan_pod(&root.path().join("missing"), U),
        Err(ProcessError::ProcRoot { .. })
    ));
}
