//! Tests of the config loader: every key, default, error and position.

#![allow(clippy::unwrap_used)]

use super::*;

fn parse(text: &str) -> Config {
    match Config::from_yaml(text, "test.yaml") {
        Ok(config) => config,
        Err(errors) => panic!("unexpected errors:\n{errors}"),
    }
}

/// Every error line of a document that must fail.
fn errors(text: &str) -> Vec<String> {
    match Config::from_yaml(text, "t.yaml") {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(errors) => errors.errors.iter().map(ToString::to_string).collect(),
    }
}

/// The single error of a document that must fail with exactly one.
fn error(text: &str) -> String {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    errors.into_iter().next().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sel(s: &str) -> LabelSelector {
    LabelSelector::parse(s).unwrap()
}

// --- defaults -------------------------------------------------------------------------

#[test]
fn defaults() {
    let config = Config::default();
    assert_eq!(config.stuck_after, Duration::from_secs(120));
    assert!(config.nudge.enabled);
    assert_eq!(config.nudge.after, Duration::from_millis(250));
    assert_eq!(config.reload.min_interval, Duration::from_secs(5));
    assert_eq!(config.verify.timeout, Duration::from_secs(10));
    assert_eq!(config.expiry.warn_before, Duration::from_secs(21 * 86_400));
    let names: Vec<&str> = config.controllers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ingress-nginx",
            "haproxy-ingress",
            "traefik-crd",
            "contour",
            "istio",
            "envoy-gateway"
        ]
    );
    for c in &config.controllers {
        assert_eq!(c.mode, ReloadMode::Api, "{}", c.name);
        assert_eq!(c.reload, ReloadAction::None, "{}", c.name);
        assert!(!c.selector.is_everything(), "{}", c.name);
        // Look-alike pods elsewhere are not enrolled: each default watches only the
        // namespaces its controller is usually installed in.
        let usual = BuiltinProfile::from_name(&c.name)
            .map(|p| p.usual_namespaces().to_vec())
            .unwrap_or_default();
        assert!(!usual.is_empty(), "{}", c.name);
        assert_eq!(
            c.namespaces
                .as_deref()
                .map(|n| n.iter().map(String::as_str).collect::<Vec<_>>()),
            Some(usual),
            "{}",
            c.name
        );
        assert_eq!(c.containers, None);
    }
    assert_eq!(config.summary().split(':').next(), Some("6 controllers"));
}

#[test]
fn empty_documents_give_the_defaults() {
    for text in [
        "",
        "\n\n",
        "# nothing here\n",
        "---\n",
        "{}",
        "--- {}\n",
        "\u{feff}",
    ] {
        assert_eq!(parse(text), Config::default(), "{text:?}");
    }
    // `key:` with nothing after it means "not set".
    let text = "stuckAfter:\nnudge:\nreload:\nverify:\nexpiry:\ncontrollers:\n";
    assert_eq!(parse(text), Config::default());
}

// --- every key --------------------------------------------------------------------------

#[test]
fn every_key() {
    let text = r#"
stuckAfter: 90s
nudge:
  enabled: false
  after: 500ms
  retryAfter: 3s
reload:
  minInterval: 1m30s
verify:
  timeout: 15s
  interval: 2m
  mismatchAfter: 0s
  handshakesPerSecond: 20
expiry:
  warnBefore: 30d
api:
  http2: false
  maxStreamsPerConnection: 32
certManager:
  enabled: false
  gracePeriod: 30m
controllers:
  - name: edge
    selector: app=edge, tier in (front, public)
    namespaces: [ingress, ingress-b]
    containers:
      - nginx
    mode: files
    reload:
      signal: hup
      process: "nginx: master process"
    probe:
      ports: [443, 8443]
      hosts: [shop.example.com, api.example.com]
  - name: caddy
    selector: app=caddy
    reload:
      http:
        url: http://127.0.0.1:2019/load
  - name: envoy
    selector: "!legacy"
    reload: none
    mode: api
    routes:
      ingressControllers: [k8s.io/ingress-nginx]
      ingressClassNames: [contour]
      ingressClassAnnotations: [nginx]
      gatewayControllers: [gateway.envoyproxy.io/gatewayclass-controller]
      defaultCertificate: ingress/default-tls
"#;
    let config = parse(text);
    let expected = Config {
        stuck_after: Duration::from_secs(90),
        nudge: NudgeConfig {
            enabled: false,
            after: Duration::from_millis(500),
            retry_after: Duration::from_secs(3),
        },
        reload: ReloadConfig {
            min_interval: Duration::from_secs(90),
            restart_timeout: DEFAULT_RELOAD_RESTART_TIMEOUT,
        },
        verify: VerifyConfig {
            timeout: Duration::from_secs(15),
            interval: Duration::from_secs(120),
            mismatch_after: Duration::ZERO,
            handshakes_per_second: 20,
        },
        expiry: ExpiryConfig {
            warn_before: Duration::from_secs(30 * 86_400),
        },
        api: ApiConfig {
            http2: false,
            max_streams_per_connection: 32,
            watch_timeout: DEFAULT_API_WATCH_TIMEOUT,
        },
        cert_manager: CertManagerConfig {
            enabled: false,
            grace_period: Duration::from_secs(30 * 60),
        },
        controllers: vec![
            ControllerProfile {
                restart_fallback: false,
                name: "edge".into(),
                selector: sel("app=edge,tier in (front,public)"),
                namespaces: Some(vec!["ingress".into(), "ingress-b".into()]),
                containers: Some(vec!["nginx".into()]),
                reload: ReloadAction::Signal {
                    signal: ReloadSignal::Hup,
                    process: Some("nginx: master process".into()),
                    go: GoSignalPolicy::Refuse,
                },
                mode: ReloadMode::Files,
                probe: ProbeConfig {
                    ports: vec![443, 8443],
                    hosts: vec!["shop.example.com".into(), "api.example.com".into()],
                },
                routes: None,
            },
            ControllerProfile {
                restart_fallback: false,
                name: "caddy".into(),
                selector: sel("app=caddy"),
                namespaces: None,
                containers: None,
                reload: ReloadAction::Http {
                    url: "http://127.0.0.1:2019/load".into(),
                },
                mode: ReloadMode::Files,
                probe: ProbeConfig::default(),
                routes: None,
            },
            ControllerProfile {
                restart_fallback: false,
                name: "envoy".into(),
                selector: sel("!legacy"),
                namespaces: None,
                containers: None,
                reload: ReloadAction::None,
                mode: ReloadMode::Api,
                probe: ProbeConfig::default(),
                routes: Some(RouteMatch {
                    ingress_controllers: vec!["k8s.io/ingress-nginx".into()],
                    ingress_class_names: vec!["contour".into()],
                    ingress_class_annotations: vec!["nginx".into()],
                    gateway_controllers: vec![
                        "gateway.envoyproxy.io/gatewayclass-controller".into(),
                    ],
                    default_certificate: Some(SecretKey {
                        namespace: "ingress".into(),
                        name: "default-tls".into(),
                    }),
                }),
            },
        ],
    };
    assert_eq!(config, expected);
    assert_eq!(config.summary(), "3 controllers: edge, caddy, envoy");
    assert_eq!(
        config.controllers[0].selector.as_str(),
        "app=edge,tier in (front,public)"
    );
}

#[test]
fn api_stream_caps_outside_one_to_a_thousand_are_refused_with_their_line() {
    assert_eq!(
        error("stuckAfter: 2m\napi:\n  maxStreamsPerConnection: 0\n"),
        "t.yaml:3:28: api.maxStreamsPerConnection: must be a whole number from 1 to 1000 (requests kept open on one connection), not number 0"
    );
    assert_eq!(
        error("api: {maxStreamsPerConnection: \"many\"}\n"),
        "t.yaml:1:32: api.maxStreamsPerConnection: must be a whole number from 1 to 1000 (requests kept open on one connection), not string \"many\""
    );
    assert!(error("api: {http2: yes please}\n").contains("api.http2"));
    assert_eq!(parse("api: {}\n").api, ApiConfig::default());
}

#[test]
fn watch_timeouts_outside_five_seconds_to_an_hour_are_refused_with_their_line() {
    assert_eq!(
        parse("api:\n  watchTimeout: 30s\n").api.watch_timeout,
        Duration::from_secs(30)
    );
    assert_eq!(
        parse("api: {}\n").api.watch_timeout,
        Duration::from_secs(290)
    );
    assert_eq!(
        error("api:\n  watchTimeout: 1s\n"),
        "t.yaml:2:17: api.watchTimeout: must be from 5s to 1h (the timeout of each watch request), not 1s"
    );
    assert!(error("api:\n  watchTimeout: 2h\n").contains("not 2h"));
    assert!(error("api:\n  watchTimeout: 0s\n").contains("api.watchTimeout"));
}

#[test]
fn verify_keys_have_defaults_and_bad_values_name_their_line() {
    let defaults = parse("verify: {}\n").verify;
    assert_eq!(defaults.interval, Duration::from_secs(300));
    assert_eq!(defaults.mismatch_after, Duration::from_secs(30));
    assert_eq!(defaults.handshakes_per_second, 5);
    assert_eq!(
        error("verify:\n  handshakesPerSecond: 0\n"),
        "t.yaml:2:24: verify.handshakesPerSecond: must be a whole number from 1 to 1000 (TLS handshakes per second, node-wide), not number 0"
    );
    assert!(
        error("verify:\n  interval: 0s\n").starts_with("t.yaml:2:13: verify.interval:"),
        "{}",
        error("verify:\n  interval: 0s\n")
    );
    assert!(error("verify: {mismatchAfter: soon}\n").contains("verify.mismatchAfter"));
}

#[test]
fn zero_durations_where_they_mean_off() {
    let config =
        parse("nudge: {after: 0s}\nreload: {minInterval: 0ms}\nexpiry: {warnBefore: 0d}\n");
    assert_eq!(config.nudge.after, Duration::ZERO);
    assert_eq!(config.reload.min_interval, Duration::ZERO);
    assert_eq!(config.expiry.warn_before, Duration::ZERO);
}

#[test]
fn merge_keys_and_anchors_are_applied() {
    let text = "\
x-common: &common
  selector: app=edge
controllers:
  - <<: *common
    name: edge
    reload: none
";
    // `x-common` is not a key of the format, so this fails; without it the anchor must be
    // defined inside a known key, which the format has no place for: merges are only
    // useful between controllers.
    assert!(Config::from_yaml(text, "t").is_err());
    let text = "\
controllers:
  - &first
    name: a
    selector: app=a
    reload: none
  - <<: *first
    name: b
";
    let config = parse(text);
    assert_eq!(config.controllers[1].name, "b");
    assert_eq!(config.controllers[1].selector, sel("app=a"));
}

// --- profiles ---------------------------------------------------------------------------

#[test]
fn every_builtin_profile() {
    type Row = (
        &'static str,
        ReloadMode,
        ReloadAction,
        Vec<u16>,
        Option<&'static str>,
    );
    let expected: [Row; 14] = [
        (
            "nginx",
            ReloadMode::Files,
            ReloadAction::Signal {
                signal: ReloadSignal::Hup,
                process: Some("nginx: master process".into()),
                go: GoSignalPolicy::Refuse,
            },
            vec![443],
            None,
        ),
        (
            "haproxy",
            ReloadMode::Files,
            ReloadAction::Signal {
                signal: ReloadSignal::Usr2,
                process: Some("haproxy".into()),
                go: GoSignalPolicy::Refuse,
            },
            vec![443],
            None,
        ),
        (
            "traefik",
            ReloadMode::Files,
            ReloadAction::Signal {
                signal: ReloadSignal::Hup,
                process: Some("traefik".into()),
                go: GoSignalPolicy::TraefikV3FileProvider,
            },
            vec![443],
            None,
        ),
        (
            "caddy",
            ReloadMode::Files,
            ReloadAction::Http {
                url: "http://{podIP}:2019/load".into(),
            },
            vec![443],
            None,
        ),
        (
            "envoy",
            ReloadMode::Files,
            ReloadAction::None,
            vec![443],
            None,
        ),
        (
            "ingress-nginx",
            ReloadMode::Api,
            ReloadAction::None,
            vec![443],
            Some("app.kubernetes.io/name=ingress-nginx,app.kubernetes.io/component=controller"),
        ),
        (
            "haproxy-ingress",
            ReloadMode::Api,
            ReloadAction::None,
            vec![443],
            Some("app.kubernetes.io/name=haproxy-ingress"),
        ),
        (
            "traefik-crd",
            ReloadMode::Api,
            ReloadAction::None,
            vec![8443],
            Some("app.kubernetes.io/name=traefik"),
        ),
        (
            "contour",
            ReloadMode::Api,
            ReloadAction::None,
            vec![8443],
            Some("app.kubernetes.io/name=contour,app.kubernetes.io/component=envoy"),
        ),
        (
            "istio",
            ReloadMode::Api,
            ReloadAction::None,
            vec![8443],
            Some("istio=ingressgateway"),
        ),
        (
            "envoy-gateway",
            ReloadMode::Api,
            ReloadAction::None,
            vec![10443],
            Some(
                "app.kubernetes.io/component=proxy,app.kubernetes.io/managed-by=envoy-gateway,app.kubernetes.io/name=envoy",
            ),
        ),
        (
            "nginx-gateway-fabric",
            ReloadMode::Api,
            ReloadAction::None,
            vec![443],
            None,
        ),
        (
            "istio-gateway",
            ReloadMode::Api,
            ReloadAction::None,
            vec![443],
            Some("gateway.istio.io/managed=istio.io-gateway-controller"),
        ),
        (
            "contour-gateway",
            ReloadMode::Api,
            ReloadAction::None,
            vec![8443],
            Some("app.kubernetes.io/managed-by=contour-gateway-provisioner"),
        ),
    ];
    assert_eq!(BuiltinProfile::ALL.len(), expected.len());
    for (profile, (name, mode, reload, ports, selector)) in
        BuiltinProfile::ALL.into_iter().zip(expected)
    {
        assert_eq!(profile.name(), name);
        assert_eq!(BuiltinProfile::from_name(name), Some(profile));
        assert!(!profile.description().is_empty());

        // With an explicit selector.
        let text = format!("controllers:\n  - name: c\n    profile: {name}\n    selector: app=c\n");
        let c = parse(&text).controllers.remove(0);
        assert_eq!(c, profile.controller("c", sel("app=c")), "{name}");
        assert_eq!(c.mode, mode, "{name}");
        assert_eq!(c.reload, reload, "{name}");
        assert_eq!(c.probe.ports, ports, "{name}");
        assert!(c.probe.hosts.is_empty());
        // API-driven profiles know their Ingress or Gateway classes; file readers have none.
        assert_eq!(c.routes.is_some(), mode == ReloadMode::Api, "{name}");

        // Without one: the profile's default, or an error.
        let text = format!("controllers:\n  - name: c\n    profile: {name}\n");
        match selector {
            Some(default) => {
                let c = parse(&text).controllers.remove(0);
                assert_eq!(c.selector.as_str(), default, "{name}");
                assert_eq!(
                    profile.default_controller().unwrap().selector.as_str(),
                    default
                );
            }
            None => {
                assert_eq!(
                    error(&text),
                    format!(
                        "t.yaml:2:5: controllers[0].selector: required key is missing (profile \"{name}\" has no default selector)"
                    )
                );
                assert!(profile.default_controller().is_none());
            }
        }
    }
}

#[test]
fn go_programs_are_signalled_only_with_the_opt_in() {
    let text = "\
controllers:
  - name: plain
    selector: app=a
    reload: {signal: HUP, process: proxy}
  - name: vouched
    selector: app=b
    reload: {signal: USR2, process: proxy, goProgramHandlesSignal: true}
  - name: traefik
    profile: traefik
    selector: app=c
  - name: traefik-vouched
    profile: traefik
    selector: app=d
    reload: {goProgramHandlesSignal: true}
  - name: traefik-process
    profile: traefik
    selector: app=e
    reload: {process: traefik-custom}
";
    let c = parse(text).controllers;
    let go = |i: usize| match &c[i].reload {
        ReloadAction::Signal { go, .. } => *go,
        other => panic!("{other:?}"),
    };
    assert_eq!(go(0), GoSignalPolicy::Refuse);
    assert_eq!(go(1), GoSignalPolicy::OptIn);
    assert_eq!(go(2), GoSignalPolicy::TraefikV3FileProvider);
    assert_eq!(
        go(3),
        GoSignalPolicy::OptIn,
        "the user vouches instead of the proof"
    );
    assert_eq!(
        go(4),
        GoSignalPolicy::TraefikV3FileProvider,
        "inherited with the signal"
    );
    assert_eq!(
        c[4].reload,
        ReloadAction::Signal {
            signal: ReloadSignal::Hup,
            process: Some("traefik-custom".into()),
            go: GoSignalPolicy::TraefikV3FileProvider,
        }
    );

    let notes = parse(text).signal_notes();
    assert_eq!(notes.len(), 5, "{notes:#?}");
    assert!(
        notes[0].starts_with(
            "note: controllers[0] (plain): SIGHUP to \"proxy\" is not sent to a Go program"
        ),
        "{}",
        notes[0]
    );
    assert!(notes[0].contains("goProgramHandlesSignal: true"));
    assert!(
        notes[1].starts_with("warning: controllers[1] (vouched)"),
        "{}",
        notes[1]
    );
    assert!(notes[1].contains("does not handle SIGUSR2"), "{}", notes[1]);
    assert!(notes[2].contains("proven to be Traefik v3"), "{}", notes[2]);
    assert!(
        notes[3].starts_with("warning: controllers[3]"),
        "{}",
        notes[3]
    );
    assert!(
        parse("controllers: [{name: a, selector: app=a, reload: none}]\n")
            .signal_notes()
            .is_empty()
    );
}

#[test]
fn go_program_handles_signal_is_validated() {
    assert_eq!(
        error(
            "controllers:\n  - name: a\n    selector: app=a\n    reload: {signal: HUP, goProgramHandlesSignal: yes}\n"
        ),
        "t.yaml:4:51: controllers[0].reload.goProgramHandlesSignal: expected true or false, found string \"yes\""
    );
    let e = error(
        "controllers:\n  - name: a\n    selector: app=a\n    reload:\n      http: {url: http://127.0.0.1:1/load}\n      goProgramHandlesSignal: true\n",
    );
    assert!(
        e.starts_with("t.yaml:6:7: controllers[0].reload.goProgramHandlesSignal:"),
        "{e}"
    );
    assert!(e.contains("not to http"), "{e}");
    // Alone it needs a signal (no profile to inherit one from).
    let e = error(
        "controllers:\n  - name: a\n    selector: app=a\n    reload: {goProgramHandlesSignal: true}\n",
    );
    assert!(
        e.contains("controllers[0].reload.signal: required key is missing"),
        "{e}"
    );
}

#[test]
fn profile_fields_can_be_overridden() {
    let text = "\
controllers:
  - name: a
    profile: nginx
    selector: app=a
    reload: {signal: USR1}
    probe: {ports: [8443]}
  - name: b
    profile: nginx
    selector: app=b
    reload: {process: nginx}
  - name: c
    profile: haproxy
    selector: app=c
    reload: {http: {url: 'http://127.0.0.1:9999/reload'}}
  - name: d
    profile: ingress-nginx
    selector: app=d
    namespaces: [ingress-nginx]
  - name: e
    profile: envoy
    selector: app=e
    mode: api
";
    let config = parse(text);
    let c = &config.controllers;
    assert_eq!(
        c[0].reload,
        ReloadAction::Signal {
            signal: ReloadSignal::Usr1,
            process: Some("nginx: master process".into()),
            go: GoSignalPolicy::Refuse,
        }
    );
    assert_eq!(c[0].probe.ports, [8443]);
    assert_eq!(
        c[1].reload,
        ReloadAction::Signal {
            signal: ReloadSignal::Hup,
            process: Some("nginx".into()),
            go: GoSignalPolicy::Refuse,
        }
    );
    assert_eq!(
        c[2].reload,
        ReloadAction::Http {
            url: "http://127.0.0.1:9999/reload".into()
        }
    );
    assert_eq!(c[3].selector.as_str(), "app=d");
    assert_eq!(
        c[3].namespaces.as_deref(),
        Some(&["ingress-nginx".to_string()][..])
    );
    assert_eq!(c[4].mode, ReloadMode::Api);
    assert_eq!(c[4].reload, ReloadAction::None);
}

#[test]
fn api_profiles_default_to_their_usual_namespaces_and_star_means_every_namespace() {
    let text = "\
controllers:
  - {name: a, profile: ingress-nginx}
  - {name: b, profile: istio, namespaces: [gw]}
  - {name: c, profile: contour, namespaces: ['*']}
  - {name: d, profile: nginx, selector: app=d}
";
    let c = parse(text).controllers;
    assert_eq!(c[0].namespaces, Some(vec!["ingress-nginx".to_string()]));
    assert_eq!(c[1].namespaces, Some(vec!["gw".to_string()]));
    assert_eq!(c[2].namespaces, None, "'*' chooses every namespace");
    assert_eq!(
        c[3].namespaces, None,
        "file profiles have no usual namespace"
    );
}

#[test]
fn star_mixed_with_namespaces_is_an_error() {
    assert_eq!(
        errors("controllers:\n  - name: a\n    profile: contour\n    namespaces: [x, '*']\n"),
        [
            "t.yaml:4:21: controllers[0].namespaces[1]: \"*\" means every namespace and stands alone in the list"
        ]
    );
}

#[test]
fn controller_without_profile_in_mode_api_needs_no_reload() {
    let config = parse("controllers:\n  - {name: x, selector: app=x, mode: api}\n");
    assert_eq!(config.controllers[0].reload, ReloadAction::None);
}

#[test]
fn selects_and_watches_container() {
    let config = parse(
        "controllers:\n  - name: a\n    selector: app=a\n    namespaces: [ingress]\n    containers: [nginx]\n    reload: none\n  - name: b\n    selector: app=b\n    reload: none\n",
    );
    let a = &config.controllers[0];
    assert!(a.selects("ingress", &labels(&[("app", "a")])));
    assert!(!a.selects("default", &labels(&[("app", "a")])));
    assert!(!a.selects("ingress", &labels(&[("app", "b")])));
    assert!(a.watches_container("nginx"));
    assert!(!a.watches_container("sidecar"));
    let b = &config.controllers[1];
    assert!(b.selects("anything", &labels(&[("app", "b"), ("x", "y")])));
    assert!(b.watches_container("whatever"));
    assert_eq!(config.watched_namespaces(), None);
    assert_eq!(
        config
            .controller_for("ingress", &labels(&[("app", "a")]))
            .map(|c| c.name.as_str()),
        Some("a")
    );
    assert!(config.controller_for("x", &labels(&[])).is_none());

    let config = parse(
        "controllers:\n  - {name: a, selector: a, namespaces: [x, y], reload: none}\n  - {name: b, selector: b, namespaces: [y, z], reload: none}\n",
    );
    assert_eq!(
        config.watched_namespaces(),
        Some(BTreeSet::from(["x", "y", "z"]))
    );
}

// --- signals -----------------------------------------------------------------------------

#[test]
fn signals() {
    for (text, signal) in [
        ("SIGHUP", ReloadSignal::Hup),
        ("HUP", ReloadSignal::Hup),
        ("hup", ReloadSignal::Hup),
        ("SigHup", ReloadSignal::Hup),
        ("SIGUSR1", ReloadSignal::Usr1),
        ("usr1", ReloadSignal::Usr1),
        ("SIGUSR2", ReloadSignal::Usr2),
        ("Usr2", ReloadSignal::Usr2),
    ] {
        assert_eq!(ReloadSignal::parse(text), Some(signal), "{text}");
        assert_eq!(text.parse::<ReloadSignal>(), Ok(signal));
    }
    for text in [
        "SIGTERM",
        "TERM",
        "KILL",
        "SIGKILL",
        "INT",
        "1",
        "",
        "SIG",
        "SIGSIGHUP",
    ] {
        assert_eq!(ReloadSignal::parse(text), None, "{text}");
    }
    assert_eq!(ReloadSignal::Hup.name(), "SIGHUP");
    assert_eq!(ReloadSignal::Usr1.name(), "SIGUSR1");
    assert_eq!(ReloadSignal::Usr2.to_string(), "SIGUSR2");
    use nix::sys::signal::Signal;
    assert_eq!(ReloadSignal::Hup.number(), Signal::SIGHUP as i32);
    assert_eq!(ReloadSignal::Usr1.number(), Signal::SIGUSR1 as i32);
    assert_eq!(ReloadSignal::Usr2.number(), Signal::SIGUSR2 as i32);
    assert_eq!(
        ReloadSignal::ALL.map(|s| s.number()),
        [1, 10, 12],
        "generic Linux ABI"
    );
}

// --- selectors ---------------------------------------------------------------------------

#[test]
fn selector_parsing() {
    for (input, canonical) in [
        ("", ""),
        ("   ", ""),
        ("a=b", "a=b"),
        ("a==b", "a=b"),
        ("a = b", "a=b"),
        ("a!=b", "a!=b"),
        (" a != b ", "a!=b"),
        ("a=", "a="),
        ("a!=", "a!="),
        ("a", "a"),
        ("!a", "!a"),
        ("! a", "!a"),
        ("a in (y,x)", "a in (x,y)"),
        ("a in(x)", "a in (x)"),
        ("a  in  ( x ,  y )", "a in (x,y)"),
        ("a notin (x, y)", "a notin (x,y)"),
        (
            "app.kubernetes.io/name=ingress-nginx, tier!=b,!legacy,env in (prod,stage),x",
            "app.kubernetes.io/name=ingress-nginx,tier!=b,!legacy,env in (prod,stage),x",
        ),
        ("a=b,a=c", "a=b,a=c"),
        ("in=x", "in=x"),
        ("a=in", "a=in"),
        ("A_b.c-D=V_1.x-Y", "A_b.c-D=V_1.x-Y"),
    ] {
        let selector =
            LabelSelector::parse(input).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
        assert_eq!(selector.as_str(), canonical, "{input:?}");
        assert_eq!(selector.to_string(), canonical);
        // The canonical form parses back to the same selector.
        assert_eq!(LabelSelector::parse(canonical).unwrap(), selector);
    }
    assert!(LabelSelector::everything().is_everything());
    assert_eq!(LabelSelector::everything().as_str(), "");
    assert!(LabelSelector::everything().kube_selector().selects_all());
}

#[test]
fn selector_matching() {
    let pod = labels(&[("app", "edge"), ("tier", "front"), ("empty", "")]);
    for (selector, matches) in [
        ("", true),
        ("app=edge", true),
        ("app==edge", true),
        ("app=other", false),
        ("app!=other", true),
        ("app!=edge", false),
        ("missing!=x", true),
        ("app", true),
        ("missing", false),
        ("!missing", true),
        ("!app", false),
        ("tier in (front,back)", true),
        ("tier in (back)", false),
        ("missing in (x)", false),
        ("tier notin (back)", true),
        ("tier notin (front)", false),
        ("missing notin (x)", true),
        ("empty=", true),
        ("app=", false),
        ("app=edge,tier=front", true),
        ("app=edge,tier=back", false),
    ] {
        assert_eq!(sel(selector).matches(&pod), matches, "{selector}");
    }
}

#[test]
fn selector_errors() {
    for (input, message) in [
        (
            "a in (",
            "expected a value, found the end of the selector at character 7",
        ),
        ("a in (x", "missing \")\" at character 8"),
        (
            "a in x",
            "expected \"(\" after in, found \"x\" at character 6",
        ),
        ("a in ()", "empty value list after in at character 7"),
        (
            "a in (x,,y)",
            "expected a value, found \",\" at character 9",
        ),
        (
            "a in (x y)",
            "expected \",\" or \")\", found \"y\" at character 9",
        ),
        (
            "=b",
            "expected a label key or \"!\", found \"=\" at character 1",
        ),
        (
            "a=b=c",
            "expected \",\" or the end of the selector, found \"=\" at character 4",
        ),
        (
            "a=b,",
            "expected a label key or \"!\", found the end of the selector at character 5",
        ),
        (
            ",a",
            "expected a label key or \"!\", found \",\" at character 1",
        ),
        (
            "a b",
            "expected an operator (=, ==, !=, in, notin), \",\" or the end after key \"a\", found \"b\" at character 3",
        ),
        ("a>1", "operator \">\" is not supported at character 2"),
        ("a<1", "operator \"<\" is not supported at character 2"),
        (
            "!",
            "expected a label key after \"!\", found the end of the selector at character 2",
        ),
        (
            "!a=b",
            "expected \",\" or the end of the selector, found \"=\" at character 3",
        ),
        (
            "a=(",
            "expected a value after \"=\", found \"(\" at character 3",
        ),
        (
            "-a=b",
            "invalid label key \"-a\": the name must be 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit at character 1",
        ),
        (
            "Example.com/a=b",
            "invalid label key \"Example.com/a\": the prefix must be a DNS subdomain (lower-case letters, digits, '-' and '.') at character 1",
        ),
        (
            "a/b/c",
            "invalid label key \"a/b/c\": at most one \"/\" at character 1",
        ),
        (
            "/a",
            "invalid label key \"/a\": the prefix must be a DNS subdomain (lower-case letters, digits, '-' and '.') at character 1",
        ),
        (
            "a=b-",
            "invalid label value \"b-\": at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit at character 3",
        ),
        (
            "é=b",
            "invalid label key \"é\": the name must be 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit at character 1",
        ),
    ] {
        assert_eq!(
            LabelSelector::parse(input).unwrap_err(),
            message,
            "{input:?}"
        );
    }
    let long = "a".repeat(64);
    assert!(LabelSelector::parse(&long).is_err());
    assert!(LabelSelector::parse(&"a".repeat(63)).is_ok());
    assert!(LabelSelector::parse(&format!("a={long}")).is_err());
}

// --- durations ---------------------------------------------------------------------------

#[test]
fn durations() {
    for (text, expected) in [
        ("500ms", Duration::from_millis(500)),
        ("15s", Duration::from_secs(15)),
        ("2m", Duration::from_secs(120)),
        ("1h", Duration::from_secs(3600)),
        ("21d", Duration::from_secs(21 * 86_400)),
        ("1h30m", Duration::from_secs(5400)),
        ("1m30s500ms", Duration::from_millis(90_500)),
        ("1.5s", Duration::from_millis(1500)),
        ("0.5ms", Duration::from_micros(500)),
        (".5s", Duration::from_millis(500)),
        ("0s", Duration::ZERO),
        ("3650d", MAX_DURATION),
    ] {
        assert_eq!(parse_duration(text), Ok(expected), "{text}");
    }
    for (text, reason) in [
        ("", "empty"),
        ("5 seconds", "must not contain spaces"),
        ("-1s", "must not be negative"),
        ("abc", "expected a number at \"abc\""),
        ("5", "missing unit after 5"),
        ("5S", "unknown unit \"S\""),
        ("5sec", "unknown unit \"sec\""),
        ("1.s", "expected digits after \".\""),
        ("1s-", "unexpected \"-\""),
        ("1s5", "missing unit after 5"),
        ("5s!", "unexpected \"!\""),
        ("3651d", "too large (at most 3650d)"),
        ("99999999999999999999999d", "too many digits"),
        ("1e3s", "unknown unit \"e\""),
        ("5µs", "unexpected \"µs\""),
    ] {
        assert_eq!(parse_duration(text), Err(reason.to_string()), "{text}");
    }
    for d in [
        Duration::ZERO,
        Duration::from_millis(500),
        Duration::from_secs(120),
        Duration::from_secs(21 * 86_400),
        Duration::from_millis(90_500),
        Duration::from_micros(1500),
        Duration::from_nanos(1),
        MAX_DURATION,
    ] {
        let text = format_duration(d);
        assert_eq!(parse_duration(&text), Ok(d), "{text}");
    }
    assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    assert_eq!(format_duration(Duration::from_micros(1500)), "1.5ms");
}

// --- errors: one of each kind, with exact positions -------------------------------------

#[test]
fn the_example_from_the_brief() {
    let text = "\
stuckAfter: 120s
controllers:
  - name: edge
    profile: nginx
    selector: app=edge
    reload:
      signal: SIGKILL
";
    let errors = Config::from_yaml(text, "edge.yaml").unwrap_err();
    assert_eq!(
        errors.to_string(),
        "edge.yaml:7:15: controllers[0].reload.signal: unknown signal \"SIGKILL\" (expected SIGHUP, SIGUSR1 or SIGUSR2)"
    );
    let at = errors.errors[0].location().unwrap();
    assert_eq!((at.line, at.column), (7, 15));
    assert_eq!(at.path, "controllers[0].reload.signal");
    assert!(matches!(
        errors.errors[0],
        ConfigError::UnknownSignal { .. }
    ));
}

#[test]
fn unknown_keys_at_any_depth() {
    assert_eq!(
        error("stuckAfter: 1m\nstuck_after: 2m\n"),
        "t.yaml:2:1: stuck_after: unknown key \"stuck_after\" (did you mean \"stuckAfter\"?)"
    );
    assert_eq!(
        error("nudge:\n  enabled: true\n  enabeld: false\n"),
        "t.yaml:3:3: nudge.enabeld: unknown key \"enabeld\" (did you mean \"enabled\"?)"
    );
    assert_eq!(
        error("foo: 1\n"),
        "t.yaml:1:1: foo: unknown key \"foo\" (expected one of: stuckAfter, nudge, reload, verify, expiry, api, certManager, controllers)"
    );
    assert_eq!(
        error(
            "controllers:\n  - name: a\n    selector: a\n    reload: none\n    probe:\n      ports: [443]\n      sni: [x]\n"
        ),
        "t.yaml:7:7: controllers[0].probe.sni: unknown key \"sni\" (expected one of: ports, hosts)"
    );
    assert_eq!(
        error(
            "controllers:\n- name: a\n  selector: a\n  reload:\n    http:\n      url: http://x/\n      method: PUT\n"
        ),
        "t.yaml:7:7: controllers[0].reload.http.method: unknown key \"method\" (expected one of: url)"
    );
    assert_eq!(
        error("reload: {minInterval: 1s, maxInterval: 2s}\n"),
        "t.yaml:1:27: reload.maxInterval: unknown key \"maxInterval\" (did you mean \"minInterval\"?)"
    );
    assert_eq!(
        error("1: x\n"),
        "t.yaml:1:1: 1: unknown key \"1\" (expected one of: stuckAfter, nudge, reload, verify, expiry, api, certManager, controllers)"
    );
    assert_eq!(
        error("\"odd key\": x\n"),
        "t.yaml:1:1: [\"odd key\"]: unknown key \"odd key\" (expected one of: stuckAfter, nudge, reload, verify, expiry, api, certManager, controllers)"
    );
    let err = Config::from_yaml("x: 1", "t").unwrap_err();
    assert!(matches!(err.errors[0], ConfigError::UnknownKey { .. }));
}

#[test]
fn bad_durations() {
    assert_eq!(
        error("stuckAfter: 5 seconds\n"),
        format!(
            "t.yaml:1:13: stuckAfter: invalid duration \"5 seconds\": must not contain spaces ({DURATION_HINT})"
        )
    );
    assert_eq!(
        error("nudge:\n  after: -1s\n"),
        format!(
            "t.yaml:2:10: nudge.after: invalid duration \"-1s\": must not be negative ({DURATION_HINT})"
        )
    );
    assert_eq!(
        error("verify:\n  timeout: abc\n"),
        format!(
            "t.yaml:2:12: verify.timeout: invalid duration \"abc\": expected a number at \"abc\" ({DURATION_HINT})"
        )
    );
    assert_eq!(
        error("stuckAfter: 120\n"),
        format!(
            "t.yaml:1:13: stuckAfter: invalid duration \"120\": missing unit ({DURATION_HINT})"
        )
    );
    assert_eq!(
        error("verify:\n  timeout: 0s\n"),
        format!(
            "t.yaml:2:12: verify.timeout: invalid duration \"0s\": must be greater than zero ({DURATION_HINT})"
        )
    );
    assert_eq!(
        error("expiry: {warnBefore: \"21 d\"}\n"),
        format!(
            "t.yaml:1:22: expiry.warnBefore: invalid duration \"21 d\": must not contain spaces ({DURATION_HINT})"
        )
    );
    assert_eq!(
        error("reload:\n  minInterval: [5s]\n"),
        "t.yaml:2:16: reload.minInterval: expected a duration such as \"15s\", found a list"
    );
    let err = Config::from_yaml("stuckAfter: 1x", "t").unwrap_err();
    assert!(matches!(err.errors[0], ConfigError::InvalidDuration { .. }));
}

#[test]
fn nudge_must_come_before_stuck() {
    assert_eq!(
        error("stuckAfter: 10s\nnudge:\n  after: 10s\n"),
        "t.yaml:3:10: nudge.after: nudge.after (10s) must be shorter than stuckAfter (10s): the mount would be reported stuck before kubelet is nudged"
    );
    assert_eq!(
        error("stuckAfter: 200ms\n"),
        "t.yaml:1:13: stuckAfter: nudge.after (250ms) must be shorter than stuckAfter (200ms): the mount would be reported stuck before kubelet is nudged"
    );
    // Disabled nudges do not constrain stuckAfter.
    parse("stuckAfter: 1s\nnudge: {enabled: false}\n");
}

#[test]
fn wrong_types() {
    assert_eq!(
        error("nudge:\n  enabled: yes\n"),
        "t.yaml:2:12: nudge.enabled: expected true or false, found string \"yes\""
    );
    assert_eq!(
        error("nudge: true\n"),
        "t.yaml:1:8: nudge: expected a mapping with keys enabled, after, retryAfter, found boolean true"
    );
    assert_eq!(
        error("controllers: edge\n"),
        "t.yaml:1:14: controllers: expected a list of controllers, found string \"edge\""
    );
    assert_eq!(
        error("controllers:\n  - edge\n"),
        "t.yaml:2:5: controllers[0]: expected a controller (a mapping with name, selector, reload, ...), found string \"edge\""
    );
    assert_eq!(
        error("- a\n- b\n"),
        "t.yaml:1:1: expected a mapping of settings, found a list"
    );
    assert_eq!(
        error("controllers:\n  - name: a\n    selector: {app: a}\n    reload: none\n"),
        "t.yaml:3:15: controllers[0].selector: expected a label selector string such as app=edge, found a mapping"
    );
    assert_eq!(
        error("controllers:\n  - name: [a]\n    selector: a\n    reload: none\n"),
        "t.yaml:2:11: controllers[0].name: expected a name (free text), found a list"
    );
    assert_eq!(
        error("controllers:\n  - name: a\n    selector: a\n    reload: none\n    mode: both\n"),
        "t.yaml:5:11: controllers[0].mode: expected files or api, found string \"both\""
    );
    assert_eq!(
        error(
            "controllers:\n  - name: a\n    selector: a\n    reload: none\n    namespaces: ingress\n"
        ),
        "t.yaml:5:17: controllers[0].namespaces: expected a list of namespace, found string \"ingress\""
    );
    assert_eq!(
        error("stuckAfter: !custom 5s\n"),
        // The value's content, after its tag (serde-saphyr's span).
        "t.yaml:1:21: stuckAfter: expected a duration such as \"15s\", found a value tagged \"!custom\""
    );
    let err = Config::from_yaml("nudge: 1", "t").unwrap_err();
    assert!(matches!(err.errors[0], ConfigError::WrongType { .. }));
}

#[test]
fn controller_errors() {
    // Missing name: points at the item.
    let e = error("controllers:\n  - selector: a\n    reload: none\n");
    assert_eq!(
        e,
        "t.yaml:2:5: controllers[0].name: required key is missing"
    );
    assert_eq!(
        error("controllers:\n  - name: \"  \"\n    selector: a\n    reload: none\n"),
        "t.yaml:2:11: controllers[0].name: name must not be empty"
    );
    // Duplicate names.
    let e = errors(
        "controllers:\n  - name: edge\n    selector: a\n    reload: none\n  - name: edge\n    selector: b\n    reload: none\n",
    );
    assert_eq!(
        e,
        [
            "t.yaml:5:11: controllers[1].name: duplicate controller name \"edge\" (also used by controllers[0])"
        ]
    );
    // Selector missing without profile, and empty.
    assert_eq!(
        error("controllers:\n  - name: a\n    reload: none\n"),
        "t.yaml:2:5: controllers[0].selector: required key is missing (no profile with a default selector is given)"
    );
    assert_eq!(
        error("controllers:\n  - name: a\n    selector: \"\"\n    reload: none\n"),
        "t.yaml:3:15: controllers[0].selector: empty selector would select every pod; write one such as app=edge"
    );
    assert_eq!(
        error("controllers:\n  - name: a\n    profile: istio\n    selector: ' '\n"),
        "t.yaml:4:15: controllers[0].selector: empty selector would select every pod; write one such as app=edge"
    );
    assert_eq!(
        error("controllers:\n  - name: a\n    selector: a in (\n    reload: none\n"),
        "t.yaml:3:15: controllers[0].selector: invalid selector \"a in (\": expected a value, found the end of the selector at character 7"
    );
    // Unknown profile: no cascade of selector/reload errors.
    assert_eq!(
        error("controllers:\n  - name: a\n    profile: nginxx\n"),
        "t.yaml:3:14: controllers[0].profile: unknown profile \"nginxx\" (expected one of: nginx, haproxy, traefik, caddy, envoy, ingress-nginx, haproxy-ingress, traefik-crd, contour, istio, envoy-gateway, nginx-gateway-fabric, istio-gateway, contour-gateway)"
    );
    // Reload missing without profile.
    assert_eq!(
        error("controllers:\n  - name: a\n    selector: a\n"),
        "t.yaml:2:5: controllers[0].reload: required key is missing (no profile given; write reload: none for a controller that reloads itself)"
    );
    // Namespaces and containers.
    assert_eq!(
        error("controllers:\n  - name: a\n    selector: a\n    reload: none\n    namespaces: []\n"),
        "t.yaml:5:17: controllers[0].namespaces: an empty list matches nothing; omit the key to mean every namespace"
    );
    assert_eq!(
        error(
            "controllers:\n  - name: a\n    selector: a\n    reload: none\n    namespaces:\n      - ok\n      - Not_OK\n"
        ),
        "t.yaml:7:9: controllers[0].namespaces[1]: namespace \"Not_OK\": expected a DNS label (lower-case letters, digits and '-', at most 63)"
    );
    assert_eq!(
        error(
            "controllers:\n  - name: a\n    selector: a\n    reload: none\n    containers: [nginx, nginx]\n"
        ),
        "t.yaml:5:25: controllers[0].containers[1]: \"nginx\" is listed twice"
    );
    let err = Config::from_yaml(
        "controllers: [{name: a, selector: a, reload: none}, {name: a, selector: a, reload: none}]",
        "t",
    )
    .unwrap_err();
    assert!(matches!(err.errors[0], ConfigError::DuplicateName { .. }));
}

#[test]
fn reload_errors() {
    let base = "controllers:\n  - name: a\n    selector: a\n";
    assert_eq!(
        error(&format!(
            "{base}    reload:\n      signal: SIGHUP\n      http:\n        url: http://x/\n"
        )),
        "t.yaml:4:5: controllers[0].reload: conflicting reload actions: use either signal (with an optional process) or http, not both"
    );
    assert_eq!(
        error(&format!("{base}    reload:\n      signal: TERM\n")),
        "t.yaml:5:15: controllers[0].reload.signal: unknown signal \"TERM\" (expected SIGHUP, SIGUSR1 or SIGUSR2)"
    );
    assert_eq!(
        error(&format!("{base}    reload:\n      process: nginx\n")),
        "t.yaml:5:7: controllers[0].reload.signal: required key is missing (process names the target, signal says what to send)"
    );
    assert_eq!(
        error(&format!("{base}    reload: SIGHUP\n")),
        "t.yaml:4:13: controllers[0].reload: expected none, restart, {signal: ..., process: ...} or {http: {url: ...}}, found string \"SIGHUP\"; to send a signal write reload: {signal: SIGHUP}"
    );
    assert_eq!(
        error(&format!("{base}    reload: {{}}\n")),
        "t.yaml:4:13: controllers[0].reload: empty reload: expected none, restart, {signal: ..., process: ...} or {http: {url: ...}}"
    );
    assert_eq!(
        error(&format!(
            "{base}    reload:\n      http:\n        url: ftp://x/\n"
        )),
        "t.yaml:6:14: controllers[0].reload.http.url: url \"ftp://x/\": must start with http://"
    );
    assert_eq!(
        error(&format!(
            "{base}    reload:\n      http:\n        url: https://127.0.0.1:2019/load\n"
        )),
        "t.yaml:6:14: controllers[0].reload.http.url: url \"https://127.0.0.1:2019/load\": https is not supported; reload endpoints are called over plain HTTP (http://)"
    );
    assert_eq!(
        error(&format!("{base}    reload:\n      http: {{}}\n")),
        "t.yaml:5:13: controllers[0].reload.http.url: required key is missing"
    );
    assert_eq!(
        error(&format!(
            "{base}    reload:\n      signal: HUP\n      process: \"\"\n"
        )),
        "t.yaml:6:16: controllers[0].reload.process: process must be a non-empty prefix of the process title or comm"
    );
    assert_eq!(
        error(&format!(
            "{base}    mode: api\n    reload: {{signal: HUP}}\n"
        )),
        "t.yaml:5:5: controllers[0].reload: mode api (the controller reads Secrets from the API) cannot be combined with a reload action (SIGHUP to the container's init process); write reload: none or mode: files"
    );
    assert_eq!(
        error("controllers:\n  - name: a\n    profile: nginx\n    selector: a\n    mode: api\n"),
        "t.yaml:5:11: controllers[0].mode: mode api (the controller reads Secrets from the API) cannot be combined with a reload action (SIGHUP to \"nginx: master process\"); write reload: none or mode: files"
    );
    let err = Config::from_yaml(
        &format!("{base}    reload: {{signal: HUP, http: {{url: 'http://x'}}}}\n"),
        "t",
    )
    .unwrap_err();
    assert!(matches!(
        err.errors[0],
        ConfigError::ConflictingReload { .. }
    ));
}

#[test]
fn probe_errors() {
    let base = "controllers:\n  - name: a\n    selector: a\n    reload: none\n    probe:\n";
    assert_eq!(
        errors(&format!("{base}      ports: [443, 0, 70000]\n")),
        [
            "t.yaml:6:20: controllers[0].probe.ports[1]: port 0 is out of range (expected an integer from 1 to 65535)",
            "t.yaml:6:23: controllers[0].probe.ports[2]: port 70000 is out of range (expected an integer from 1 to 65535)",
        ]
    );
    assert_eq!(
        error(&format!("{base}      ports:\n        - -1\n")),
        "t.yaml:7:11: controllers[0].probe.ports[0]: port -1 is out of range (expected an integer from 1 to 65535)"
    );
    assert_eq!(
        error(&format!("{base}      ports: [\"443\"]\n")),
        "t.yaml:6:15: controllers[0].probe.ports[0]: expected a port number from 1 to 65535, found string \"443\""
    );
    assert_eq!(
        error(&format!("{base}      ports: []\n")),
        "t.yaml:6:14: controllers[0].probe.ports: at least one port is needed"
    );
    assert_eq!(
        error(&format!("{base}      ports: [443, 443]\n")),
        "t.yaml:6:20: controllers[0].probe.ports[1]: port 443 is listed twice"
    );
    assert_eq!(
        error(&format!("{base}      hosts: ['*.example.com']\n")),
        "t.yaml:6:15: controllers[0].probe.hosts[0]: host \"*.example.com\": a wildcard cannot be sent as SNI, name a concrete host"
    );
    assert_eq!(
        error(&format!("{base}      hosts: [\"https://x.example.com\"]\n")),
        "t.yaml:6:15: controllers[0].probe.hosts[0]: host \"https://x.example.com\": expected a DNS name such as shop.example.com (no scheme, port or IP address)"
    );
    assert_eq!(
        error(&format!("{base}      hosts: [10.0.0.1]\n")),
        "t.yaml:6:15: controllers[0].probe.hosts[0]: host \"10.0.0.1\": expected a DNS name such as shop.example.com (no scheme, port or IP address)"
    );
    parse(&format!("{base}      hosts: []\n"));
    let err = Config::from_yaml(&format!("{base}      ports: [0]\n"), "t").unwrap_err();
    assert!(matches!(err.errors[0], ConfigError::InvalidPort { .. }));
}

#[test]
fn syntax_errors() {
    let e = error("nudge:\n  enabled: true\n after: 1s\n");
    assert!(e.starts_with("t.yaml:3:2: invalid YAML: "), "{e}");
    let e = error("a: [1, 2\n");
    assert!(e.starts_with("t.yaml:2:1: invalid YAML: "), "{e}");
    assert_eq!(
        error("stuckAfter: 1s\nstuckAfter: 2s\n"),
        "t.yaml:2:1: invalid YAML: duplicate entry with key \"stuckAfter\""
    );
    assert_eq!(
        error(
            "controllers:\n  - name: a\n    reload: none\n  - name: b\n    selector: x\n    nested:\n      name: 1\n    name: c\n"
        ),
        "t.yaml:8:5: invalid YAML: controllers[1]: duplicate entry with key \"name\""
    );
    let e = error("a: 1\n---\nb: 2\n");
    assert!(e.starts_with("t.yaml:1:1: invalid YAML: "), "{e}");
    assert!(e.contains("more than one document"), "{e}");
    let e = error("a: *nope\n");
    assert!(e.contains("unknown anchor"), "{e}");
    let err = Config::from_yaml("a: [", "t").unwrap_err();
    assert!(matches!(err.errors[0], ConfigError::Syntax { .. }));
    // The position is given once, in front.
    assert!(!err.to_string().contains("at line 2 column 1"), "{err}");
}

#[test]
fn deep_flow_nesting_is_refused_before_parsing() {
    let deep = format!("stuckAfter: 1m\nx: {}\n", "[".repeat(40));
    assert_eq!(
        error(&deep),
        "t.yaml:2:36: invalid YAML: flow collections ([...], {...}) nested more than 32 levels deep"
    );
    // Brackets in comments and quoted scalars do not count; 32 levels are fine for the scan.
    let many = "[".repeat(40);
    let text = format!(
        "# {many}\ncontrollers: # {many}\n  - name: \"{many}\"\n    selector: a\n    reload: none\n    probe: {{hosts: ['{many}']}}\n"
    );
    let e = error(&text);
    assert!(
        e.starts_with("t.yaml:6:21: controllers[0].probe.hosts[0]: host"),
        "{e}"
    );
    let nested = format!("x: {}1{}\n", "[".repeat(32), "]".repeat(32));
    assert!(error(&nested).starts_with("t.yaml:1:1: x: unknown key"));
    assert_eq!(flow_too_deep("a: \"\\\"[[\"\nb: 'it''s [['\n"), None);
}

#[test]
fn every_error_is_reported_together() {
    let text = "\
stuckAfter: 5 seconds
nudge:
  enabled: maybe
  afterr: 2s
verify:
  timeout: -1s
controllers:
  - name: edge
    profile: nginx
    selector: app=edge=x
    reload:
      signal: SIGKILL
    probe:
      ports: [0]
  - selector: app=b
    reload:
      signal: HUP
      http: {url: 'http://x/'}
  - name: edge
    profile: nope
";
    let errors = Config::from_yaml(text, "f.yaml").unwrap_err();
    let lines: Vec<String> = errors.to_string().lines().map(str::to_string).collect();
    let prefixes: Vec<&str> = lines.iter().map(|l| &l[..l.find(": ").unwrap()]).collect();
    assert_eq!(
        prefixes,
        [
            "f.yaml:1:13",
            "f.yaml:3:12",
            "f.yaml:4:3",
            "f.yaml:6:12",
            "f.yaml:10:15",
            "f.yaml:12:15",
            "f.yaml:14:15",
            "f.yaml:15:5",
            "f.yaml:16:5",
            "f.yaml:19:11",
            "f.yaml:20:14",
        ],
        "{errors}"
    );
    assert!(lines[0].contains("stuckAfter: invalid duration"));
    assert!(lines[1].contains("nudge.enabled: expected true or false"));
    assert!(lines[2].contains("nudge.afterr: unknown key \"afterr\" (did you mean \"after\"?)"));
    assert!(lines[3].contains("verify.timeout: invalid duration \"-1s\""));
    assert!(lines[4].contains("controllers[0].selector: invalid selector"));
    assert!(lines[5].contains("controllers[0].reload.signal: unknown signal"));
    assert!(lines[6].contains("controllers[0].probe.ports[0]: port 0"));
    assert!(lines[7].contains("controllers[1].name: required key is missing"));
    assert!(lines[8].contains("controllers[1].reload: conflicting reload actions"));
    assert!(lines[9].contains("controllers[2].name: duplicate controller name \"edge\""));
    assert!(lines[10].contains("controllers[2].profile: unknown profile \"nope\""));
    assert_eq!(errors.errors.len(), 11);
    assert!(std::error::Error::source(&errors).is_none());
}

// --- the locator --------------------------------------------------------------------------

fn pos_of(text: &str, path: &[Seg], key: bool) -> (usize, usize) {
    let p = positions::parse(text).locate(path, key);
    (p.line, p.col)
}

fn k(s: &str) -> Seg {
    Seg::Key(s.to_string())
}

#[test]
fn locator_block_style() {
    let text = "\
# comment
a: 1   # trailing
b:
  c: x
  'd e': y
  \"f\\\"g\": z
l:
- one
- k: v
  m:
    - deep
n: |
  text: not a key
  more
o: >-
  folded
p: plain
  continued
q: &anchor
  r: 1
s: !tag
  t: 2
";
    assert_eq!(pos_of(text, &[k("a")], true), (2, 1));
    assert_eq!(pos_of(text, &[k("a")], false), (2, 4));
    assert_eq!(pos_of(text, &[k("b"), k("c")], false), (4, 6));
    assert_eq!(pos_of(text, &[k("b"), k("d e")], true), (5, 3));
    assert_eq!(pos_of(text, &[k("b"), k("f\"g")], false), (6, 11));
    assert_eq!(pos_of(text, &[k("l"), Seg::Index(0)], true), (8, 1));
    assert_eq!(pos_of(text, &[k("l"), Seg::Index(0)], false), (8, 3));
    assert_eq!(
        pos_of(text, &[k("l"), Seg::Index(1), k("k")], false),
        (9, 6)
    );
    assert_eq!(
        pos_of(text, &[k("l"), Seg::Index(1), k("m"), Seg::Index(0)], false),
        (11, 7)
    );
    // A value's position is where its content starts (serde-saphyr's span): a block scalar's
    // first content line, not its `|` indicator.
    assert_eq!(pos_of(text, &[k("n")], false), (13, 3));
    assert_eq!(pos_of(text, &[k("o")], true), (15, 1));
    assert_eq!(pos_of(text, &[k("p")], true), (17, 1));
    assert_eq!(pos_of(text, &[k("q"), k("r")], false), (20, 6));
    assert_eq!(pos_of(text, &[k("s"), k("t")], true), (22, 3));
    // Missing paths stop at the deepest node found.
    assert_eq!(pos_of(text, &[k("b"), k("zz")], true), (4, 3));
    assert_eq!(pos_of(text, &[k("l"), Seg::Index(9)], true), (8, 1));
    assert_eq!(pos_of(text, &[k("zz")], true), (2, 1));
    assert_eq!(pos_of(text, &[], true), (2, 1));
}

#[test]
fn locator_flow_style() {
    let text = "\
a: {b: 1, c: [x, {d: 2}], 'e': \"f\"}
g: [
  1,
  {h: 3}
]
i:
  - {j: k}
";
    assert_eq!(pos_of(text, &[k("a"), k("b")], true), (1, 5));
    assert_eq!(pos_of(text, &[k("a"), k("b")], false), (1, 8));
    assert_eq!(
        pos_of(text, &[k("a"), k("c"), Seg::Index(1), k("d")], false),
        (1, 22)
    );
    assert_eq!(pos_of(text, &[k("a"), k("e")], false), (1, 32));
    assert_eq!(
        pos_of(text, &[k("g"), Seg::Index(1), k("h")], false),
        (4, 7)
    );
    assert_eq!(
        pos_of(text, &[k("i"), Seg::Index(0), k("j")], false),
        (7, 9)
    );
}

#[test]
fn locator_survives_anything() {
    let mut inputs: Vec<String> = vec![
        String::new(),
        "[".repeat(10_000),
        "{".repeat(10_000),
        "- ".repeat(10_000),
        (0..2_000)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect(),
        (0..2_000)
            .map(|i| format!("{}- a\n", " ".repeat(i)))
            .collect(),
        "\"unterminated\n".repeat(100),
        "'".to_string(),
        "a: \"x\\".to_string(),
        "? a\n: b\n".to_string(),
        "a: |\n".to_string(),
        "\u{feff}a: 1".to_string(),
        "a:\r\n  b: 1\r\n".to_string(),
        ":::\n- :\n  - - - :".to_string(),
        "{a: [b, {c: d}, ], ,}".to_string(),
        "# only\n#comment\n".to_string(),
        "\t\ta:\t1\n".to_string(),
    ];
    inputs.extend(garbage(200));
    let paths: Vec<Vec<Seg>> = vec![
        vec![],
        vec![k("a")],
        vec![Seg::Index(0)],
        vec![k("a"), Seg::Index(3), k("b")],
        vec![k("k0"), k("k1"), k("k2")],
    ];
    for input in &inputs {
        let tree = positions::parse(input);
        for path in &paths {
            let p = tree.locate(path, true);
            assert!(p.line >= 1 && p.col >= 1);
            tree.locate(path, false);
        }
    }
}

/// Deterministic pseudo-random byte strings (as lossy UTF-8), some YAML-flavoured.
fn garbage(n: usize) -> Vec<String> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet: &[u8] = b" \t\n-:[]{},#&*!|>'\"?%@`abcXYZ019.\\\r";
    (0..n)
        .map(|i| {
            let len = (next() % 400) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if i % 2 == 0 {
                        alphabet[(r % alphabet.len() as u64) as usize]
                    } else {
                        (r & 0xff) as u8
                    }
                })
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .collect()
}

#[test]
fn never_panics() {
    let example = include_str!("../../../docs/examples/mountlag.yaml");
    let mut inputs: Vec<String> = vec![
        "[".repeat(100_000),
        "{a: ".repeat(10_000),
        "- ".repeat(10_000),
        (0..500)
            .map(|i| format!("{}a{i}:\n", " ".repeat(i)))
            .collect(),
        "a: &a [*a]".to_string(),
        "controllers: &c\n  - *c\n".to_string(),
        "controllers:\n  - name: \u{0}\n".to_string(),
        "controllers:\n  - name: \"\\u0000\"\n    selector: a\n    reload: none\n".to_string(),
        format!("controllers:\n  - name: {}\n", "x".repeat(100_000)),
        "stuckAfter: 99999999999999999999999999999999999999999999s\n".to_string(),
        "controllers: [{probe: {ports: [1.5, 1e99, -0, 99999999999999999999999]}}]".to_string(),
        "controllers:\n- ? [a]\n  : b\n".to_string(),
        "{[a]: b, {c: d}: e, null: f, ~: g, true: h, 1.5: i}".to_string(),
        "!!binary aGVsbG8=".to_string(),
        "%YAML 1.2\n---\nstuckAfter: 1s\n...\n".to_string(),
    ];
    inputs.extend(garbage(300));
    // Mutations of a valid document: cut it anywhere, and replace single characters.
    let chars: Vec<char> = example.chars().collect();
    for cut in (0..chars.len()).step_by(13) {
        inputs.push(chars[..cut].iter().collect());
    }
    for (i, replacement) in (0..chars.len()).step_by(17).zip(
        [
            ' ', ':', '-', '[', '{', '"', '\'', '#', '\n', '\t', 'x', '&', '*', '!',
        ]
        .iter()
        .cycle(),
    ) {
        let mut mutated = chars.clone();
        mutated[i] = *replacement;
        inputs.push(mutated.into_iter().collect());
    }
    for input in &inputs {
        match Config::from_yaml(input, "fuzz.yaml") {
            Ok(config) => {
                let _ = config.summary();
            }
            Err(errors) => {
                assert!(!errors.errors.is_empty());
                for e in &errors.errors {
                    let text = e.to_string();
                    assert!(text.starts_with("fuzz.yaml:"), "{text}");
                    assert!(!text.contains('\n'), "{text:?}");
                    assert!(text.chars().count() < 2_000, "{text}");
                    if let Some(at) = e.location() {
                        assert!(at.line >= 1 && at.column >= 1);
                    }
                }
            }
        }
    }
    for input in garbage(100) {
        let _ = LabelSelector::parse(&input);
        let _ = parse_duration(&input);
        let _ = ReloadSignal::parse(&input);
    }
}

// --- files and the command ---------------------------------------------------------------

#[test]
fn the_shipped_example_is_valid() {
    let text = include_str!("../../../docs/examples/mountlag.yaml");
    let config = parse(text);
    assert!(!config.controllers.is_empty());
    // It documents the defaults: every threshold in it is the default value.
    assert_eq!(config.stuck_after, DEFAULT_STUCK_AFTER);
    assert_eq!(config.nudge, NudgeConfig::default());
    assert_eq!(config.reload, ReloadConfig::default());
    assert_eq!(config.verify, VerifyConfig::default());
    assert_eq!(config.expiry, ExpiryConfig::default());
}

#[test]
fn load_and_check_config_command() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
            &good,
            "controllers:\n  - name: edge\n    profile: nginx\n    selector: app=edge\n  - name: api\n    profile: istio\n",
        )
        .unwrap();
    assert_eq!(
        Config::load(&good).unwrap().summary(),
        "2 controllers: edge, api"
    );
    assert_eq!(check_config_command(&good), 0);

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "stuckAfter: soon\nfoo: 1\n").unwrap();
    let errors = Config::load(&bad).unwrap_err();
    assert_eq!(errors.errors.len(), 2);
    let shown = errors.to_string();
    let file = bad.display().to_string();
    assert!(
        shown.starts_with(&format!("{file}:1:13: stuckAfter: invalid duration")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("\n{file}:2:1: foo: unknown key")),
        "{shown}"
    );
    assert_eq!(check_config_command(&bad), 1);

    let missing = dir.path().join("missing.yaml");
    let errors = Config::load(&missing).unwrap_err();
    assert_eq!(errors.errors.len(), 1);
    assert!(matches!(errors.errors[0], ConfigError::Read { .. }));
    assert!(
        errors
            .to_string()
            .starts_with(&format!("{}: cannot read config file: ", missing.display()))
    );
    assert!(std::error::Error::source(&errors.errors[0]).is_some());
    assert_eq!(check_config_command(&missing), 1);
    assert_eq!(check_config_command(dir.path()), 1);

    let latin1 = dir.path().join("latin1.yaml");
    std::fs::write(&latin1, b"controllers:\n  - name: caf\xe9\n").unwrap();
    let e = Config::load(&latin1).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:2:14: invalid YAML: the file is not valid UTF-8",
            latin1.display()
        )
    );

    let huge = dir.path().join("huge.yaml");
    std::fs::write(&huge, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
    let errors = Config::load(&huge).unwrap_err();
    assert!(matches!(errors.errors[0], ConfigError::TooLarge { .. }));
    assert_eq!(check_config_command(&huge), 1);

    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "").unwrap();
    assert_eq!(Config::load(&empty).unwrap(), Config::default());
}

#[test]
fn summary_wording() {
    let mut config = Config::default();
    config.controllers.truncate(1);
    assert_eq!(config.summary(), "1 controller: ingress-nginx");
    config.controllers.clear();
    assert_eq!(config.summary(), "0 controllers");
    assert_eq!(parse("controllers: []\n").controllers, vec![]);
}

#[test]
fn reload_restart_and_a_restart_fallback_for_a_withheld_signal() {
    let config = parse(
        "reload:\n  restartTimeout: 5m\ncontrollers:\n  - name: legacy\n    selector: app=legacy\n    reload: restart\n  - name: edge\n    profile: traefik\n    selector: app=traefik\n    reload:\n      fallback: restart\n  - name: plain\n    profile: nginx\n    selector: app=nginx\n",
    );
    assert_eq!(config.reload.restart_timeout, Duration::from_secs(300));
    let [legacy, traefik, plain] = &config.controllers[..] else {
        panic!("{:?}", config.controllers);
    };
    assert_eq!(legacy.reload, ReloadAction::Restart);
    assert!(legacy.may_restart() && !legacy.restart_fallback);
    // The fallback keeps the profile's signal (and its Go guard) and adds the restart.
    assert!(matches!(
        traefik.reload,
        ReloadAction::Signal {
            go: GoSignalPolicy::TraefikV3FileProvider,
            ..
        }
    ));
    assert!(traefik.restart_fallback && traefik.may_restart());
    assert!(!plain.may_restart());
    let settings = config.node_settings(
        "n",
        std::path::Path::new("/k"),
        mountlag_core::status::DiskStatus::default(),
    );
    let restarts: Vec<Option<Duration>> = settings
        .controllers
        .iter()
        .map(|c| c.restart.map(|r| r.timeout))
        .collect();
    assert_eq!(
        restarts,
        [
            Some(Duration::from_secs(300)),
            Some(Duration::from_secs(300)),
            None
        ]
    );
    assert_eq!(
        parse("controllers: [{name: a, selector: app=a, reload: restart}]\n")
            .reload
            .restart_timeout,
        DEFAULT_RELOAD_RESTART_TIMEOUT
    );
}

#[test]
fn a_restart_fallback_is_for_signals_and_restart_is_its_only_value() {
    assert_eq!(
        error(
            "controllers:\n  - name: c\n    selector: app=c\n    reload:\n      http: {url: 'http://127.0.0.1:2019/load'}\n      fallback: restart\n"
        ),
        "t.yaml:6:7: controllers[0].reload.fallback: fallback applies to a signal reload (when the signal is withheld), not to http"
    );
    let wrong = error(
        "controllers:\n  - name: c\n    profile: traefik\n    selector: app=c\n    reload:\n      fallback: delete\n",
    );
    assert!(
        wrong.starts_with(
            "t.yaml:6:17: controllers[0].reload.fallback: the only fallback is restart"
        ),
        "{wrong}"
    );
    let api = error(
        "controllers:\n  - name: c\n    selector: app=c\n    mode: api\n    reload: restart\n",
    );
    assert!(
        api.contains("cannot be combined with a reload action (rolling restart)"),
        "{api}"
    );
}

#[test]
fn nudge_retry_after_defaults_to_two_seconds_and_must_be_positive() {
    assert_eq!(
        parse("nudge:\n  after: 0s\n").nudge.retry_after,
        DEFAULT_NUDGE_RETRY_AFTER
    );
    let config = parse("nudge:\n  after: 0s\n  retryAfter: 1500ms\n");
    let settings = config.node_settings(
        "n",
        std::path::Path::new("/k"),
        mountlag_core::status::DiskStatus::default(),
    );
    assert_eq!(
        (
            settings.thresholds.nudge_after,
            settings.thresholds.nudge_retry_after
        ),
        (Duration::ZERO, Duration::from_millis(1500))
    );
    assert!(error("nudge:\n  retryAfter: 0s\n").contains("nudge.retryAfter"));
}
