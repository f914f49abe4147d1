//! Tests of [`super`].

#![allow(clippy::unwrap_used)]

use super::*;
use crate::effects::goexe::Module;

fn go(path: &str, version: &str) -> Result<ExeKind, String> {
    Ok(ExeKind::Go {
        info: Some(BuildInfo {
            go_version: "go1.22.5".into(),
            path: Some(format!("{path}/cmd/traefik")),
            main: Some(Module {
                path: path.into(),
                version: version.into(),
            }),
        }),
    })
}

fn facts(exe: Result<ExeKind, String>, file: Option<Result<FileProvider, String>>) -> Facts {
    Facts {
        pid: 42,
        comm: "traefik".into(),
        exe,
        catches_everything: true,
        file_provider: file,
    }
}

fn on() -> Option<Result<FileProvider, String>> {
    Some(Ok(FileProvider {
        on: true,
        evidence: "flag --providers.file.directory".into(),
    }))
}

fn withheld(v: &Verdict) -> &str {
    match v {
        Verdict::Withhold { reason } => reason,
        Verdict::Allow { .. } => panic!("allowed: {v:?}"),
    }
}

const TRAEFIK: GoSignalPolicy = GoSignalPolicy::TraefikV3FileProvider;
const HUP: ReloadSignal = ReloadSignal::Hup;

#[test]
fn only_traefik_v3_with_the_file_provider_is_signalled_by_the_traefik_profile() {
    for version in ["(devel)", "v3.0.0", "v3.3.4", "v3.1.0-rc1"] {
        let v = decide(TRAEFIK, HUP, &facts(go(TRAEFIK_V3_MODULE, version), on()));
        assert!(
            matches!(v, Verdict::Allow { proof: Some(_) }),
            "{version}: {v:?}"
        );
    }
    let v2 = decide(
        TRAEFIK,
        HUP,
        &facts(go("github.com/traefik/traefik/v2", "(devel)"), on()),
    );
    assert!(withheld(&v2).contains("not Traefik v3"), "{v2:?}");
    assert!(withheld(&v2).contains("exits on a SIGHUP"), "{v2:?}");
    let wrong_major = decide(TRAEFIK, HUP, &facts(go(TRAEFIK_V3_MODULE, "v2.11.0"), on()));
    assert!(withheld(&wrong_major).contains("not Traefik v3"));
    let off = Some(Ok(FileProvider {
        on: false,
        evidence: "the command-line flags configure no file provider".into(),
    }));
    let v = decide(TRAEFIK, HUP, &facts(go(TRAEFIK_V3_MODULE, "(devel)"), off));
    assert!(withheld(&v).contains("without the file provider"), "{v:?}");
    let unknown = Some(Err("its environment cannot be read".to_string()));
    let v = decide(
        TRAEFIK,
        HUP,
        &facts(go(TRAEFIK_V3_MODULE, "(devel)"), unknown),
    );
    assert!(withheld(&v).contains("cannot tell"), "{v:?}");
    let v = decide(TRAEFIK, HUP, &facts(Ok(ExeKind::NotGo), on()));
    assert!(withheld(&v).contains("not a Go program"), "{v:?}");
    let v = decide(TRAEFIK, HUP, &facts(Ok(ExeKind::Go { info: None }), on()));
    assert!(withheld(&v).contains("cannot be decoded"), "{v:?}");
    let v = decide(TRAEFIK, HUP, &facts(Err("permission denied".into()), on()));
    assert!(withheld(&v).contains("ptrace access"), "{v:?}");
    // The opt-in vouches for the process: nothing else is asked.
    let v = decide(GoSignalPolicy::OptIn, HUP, &facts(Err("x".into()), None));
    assert_eq!(v, Verdict::Allow { proof: None });
}

#[test]
fn a_go_program_is_signalled_only_with_the_opt_in() {
    let refuse = GoSignalPolicy::Refuse;
    let v = decide(refuse, HUP, &facts(go("example.com/proxy", "v1.2.3"), None));
    let reason = withheld(&v);
    assert!(
        reason.contains("pid 42 (traefik) is a Go program"),
        "{reason}"
    );
    assert!(reason.contains("example.com/proxy v1.2.3"), "{reason}");
    assert!(reason.contains("goProgramHandlesSignal: true"), "{reason}");
    let v = decide(refuse, ReloadSignal::Usr2, &facts(go("x", "v1"), None));
    assert!(withheld(&v).contains("ignores a SIGUSR2"), "{v:?}");
    assert_eq!(
        decide(refuse, HUP, &facts(Ok(ExeKind::NotGo), None)),
        Verdict::Allow { proof: None }
    );
    // Unreadable executable: the signal mask decides.
    let mut f = facts(Err("permission denied".into()), None);
    assert!(withheld(&decide(refuse, HUP, &f)).contains("catches nearly every signal"));
    f.catches_everything = false;
    assert_eq!(decide(refuse, HUP, &f), Verdict::Allow { proof: None });
    assert_eq!(
        decide(GoSignalPolicy::OptIn, HUP, &facts(go("x", "v1"), None)),
        Verdict::Allow { proof: None }
    );
}

#[test]
fn the_go_runtime_signal_mask_is_recognised() {
    let status = |cgt: &str| format!("Name:\tx\nSigCgt:\t{cgt}\n");
    assert!(
        catches_everything(&status("fffffffd7fc1fefd")),
        "Go, SIGINT ignored"
    );
    assert!(catches_everything(&status("fffffffe7fc1feff")), "Go");
    assert!(
        !catches_everything(&status("0000000018016a07")),
        "nginx master"
    );
    assert!(
        !catches_everything(&status("0000000100716a03")),
        "haproxy -W master"
    );
    assert!(!catches_everything(&status("zz")));
    assert!(!catches_everything("Name:\tx\n"));
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

fn no_files(_: &str) -> Result<Option<String>, String> {
    Ok(None)
}

#[test]
fn flags_turn_the_file_provider_on() {
    let env = EnvFacts::default();
    for on in [
        &["--providers.file.directory=/etc/dyn"][..],
        &[
            "--entrypoints.websecure.address=:8443",
            "--providers.file.filename",
            "/x.yml",
        ],
        &["--Providers.File.Watch=false"],
        &["-providers.file=true"],
        &["--providers.file"],
    ] {
        let fp = file_provider(&args(on), Some(&env), &mut no_files).unwrap();
        assert!(fp.on, "{on:?}");
        assert!(fp.evidence.starts_with("flag --providers.file"), "{fp:?}");
        assert!(!fp.evidence.contains("/etc/dyn"), "values stay out: {fp:?}");
    }
    for off in [
        &["--providers.kubernetescrd"][..],
        &["--providers.file=false"],
        &[
            "--entrypoints.web.address=:80",
            "--providersfile.directory=/x",
        ],
    ] {
        let fp = file_provider(&args(off), Some(&env), &mut no_files).unwrap();
        assert!(!fp.on, "{off:?}");
    }
}

#[test]
fn with_no_flags_the_environment_decides() {
    let env = parse_environ(b"PATH=/bin\0TRAEFIK_PROVIDERS_FILE_DIRECTORY=/dyn\0SECRET=hunter2\0");
    assert_eq!(env.traefik_names, vec!["TRAEFIK_PROVIDERS_FILE_DIRECTORY"]);
    let fp = file_provider(&[], Some(&env), &mut no_files).unwrap();
    assert!(fp.on);
    assert_eq!(
        fp.evidence,
        "environment variable TRAEFIK_PROVIDERS_FILE_DIRECTORY"
    );
    let env = parse_environ(b"TRAEFIK_PROVIDERS_FILE=true\0");
    assert!(file_provider(&[], Some(&env), &mut no_files).unwrap().on);
    let env = parse_environ(b"TRAEFIK_PROVIDERS_KUBERNETESCRD=true\0");
    assert!(!file_provider(&[], Some(&env), &mut no_files).unwrap().on);
    // Flags present: Traefik ignores the environment.
    let env = parse_environ(b"TRAEFIK_PROVIDERS_FILE_DIRECTORY=/dyn\0");
    let fp = file_provider(&args(&["--log.level=DEBUG"]), Some(&env), &mut no_files).unwrap();
    assert!(!fp.on);
    // Unknown environment: the default file places cannot be checked.
    assert!(
        file_provider(
            &args(&["--providers.file.directory=/d"]),
            None,
            &mut no_files
        )
        .is_err()
    );
}

#[test]
fn a_static_configuration_file_wins_over_flags() {
    let env = parse_environ(b"HOME=/home/traefik\0");
    let candidates = default_config_candidates(&env);
    assert_eq!(candidates[0], "/etc/traefik/traefik.toml");
    assert!(
        candidates.contains(&"/traefik.yaml".to_string()),
        "unset XDG_CONFIG_HOME"
    );
    assert!(candidates.contains(&"/home/traefik/.config/traefik.yml".to_string()));
    assert_eq!(candidates.last().unwrap(), "./traefik.yml");

    let mut files = |path: &str| -> Result<Option<String>, String> {
        Ok(match path {
            "/etc/traefik/traefik.yml" => Some("entryPoints:\n  web: {}\n".to_string()),
            "/config/static.toml" => Some("[providers.file]\ndirectory = \"/d\"\n".to_string()),
            _ => None,
        })
    };
    let fp = file_provider(
        &args(&["--providers.file.directory=/d"]),
        Some(&env),
        &mut files,
    )
    .unwrap();
    assert!(!fp.on, "the default file has no file provider: {fp:?}");
    assert!(fp.evidence.contains("/etc/traefik/traefik.yml"));
    let fp = file_provider(
        &args(&["--configFile=/config/static.toml"]),
        Some(&env),
        &mut files,
    )
    .unwrap();
    assert!(fp.on, "{fp:?}");
    let fp = file_provider(
        &args(&["--configfile", "/config/static.toml"]),
        Some(&env),
        &mut files,
    )
    .unwrap();
    assert!(fp.on, "{fp:?}");
    assert!(
        file_provider(
            &args(&["--configFile=/missing.yml"]),
            Some(&env),
            &mut files
        )
        .is_err()
    );
    let mut unreadable = |_: &str| -> Result<Option<String>, String> { Err("EACCES".into()) };
    assert!(file_provider(&[], Some(&env), &mut unreadable).is_err());
}

#[test]
fn yaml_file_provider_sections_are_found_line_by_line() {
    assert!(yaml_has_file_provider(
        "providers:\n  file:\n    directory: /d\n"
    ));
    assert!(yaml_has_file_provider(
        "# c\nProviders:\n  kubernetesCRD: {}\n  File: {}\n"
    ));
    assert!(yaml_has_file_provider(
        "providers: {file: {directory: /d}}\n"
    ));
    assert!(yaml_has_file_provider(
        "\"providers\":\n    'file':\n      watch: true\n"
    ));
    assert!(!yaml_has_file_provider(
        "providers:\n  kubernetesCRD:\n    file: x\n"
    ));
    assert!(!yaml_has_file_provider(
        "providers:\n  # file:\n  docker: {}\n"
    ));
    assert!(!yaml_has_file_provider("file:\n  directory: /d\n"));
    assert!(!yaml_has_file_provider(
        "providers:\n  docker: {}\nfile: {}\n"
    ));
    assert!(!yaml_has_file_provider(""));
}

#[test]
fn toml_file_provider_sections_are_found_line_by_line() {
    assert!(toml_has_file_provider(
        "[providers.file]\n  directory = \"/d\"\n"
    ));
    assert!(toml_has_file_provider("[providers]\n  [providers.file]\n"));
    assert!(toml_has_file_provider(
        "[providers]\nfile.directory = \"/d\"\n"
    ));
    assert!(toml_has_file_provider("providers.file.filename = \"/x\"\n"));
    assert!(toml_has_file_provider("[ providers . \"file\" ]\n"));
    assert!(!toml_has_file_provider("[providers.docker]\nfile = 1\n"));
    assert!(!toml_has_file_provider(
        "# [providers.file]\n[providers.kubernetesCRD]\n"
    ));
    assert!(!toml_has_file_provider(
        "[entryPoints.web]\naddress = \":80\"\n"
    ));
}

#[test]
fn files_are_read_inside_the_process_root() {
    // This test process, whose root is /: found, missing and not-a-file.
    let dir = tempfile::tempdir().unwrap();
    let proc_self = Path::new("/proc/self");
    std::fs::write(dir.path().join("traefik.yml"), "providers:\n  file: {}\n").unwrap();
    let found = read_in_root(proc_self, dir.path().join("traefik.yml").to_str().unwrap())
        .unwrap()
        .unwrap();
    assert!(yaml_has_file_provider(&found));
    assert_eq!(
        read_in_root(proc_self, "/nonexistent/traefik.toml").unwrap(),
        None
    );
    assert!(
        read_in_root(proc_self, "/tmp").is_err(),
        "a directory is not a config file"
    );
}
