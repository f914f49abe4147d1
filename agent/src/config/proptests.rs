//! Property tests of the config loader, label selectors and durations, and hostile documents
//! (alias bombs, deep nesting, huge scalars, bytes that are not UTF-8), each timed.
//!
//! Each property runs a bounded number of cases; `PROPTEST_CASES=N` runs N cases of every
//! property instead, for a longer fuzzing session. A failing case is not persisted to a file:
//! it is kept as a named test.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use crate::proptest_cases::config;
use proptest::prelude::*;

use super::*;

/// Runs `f`, fails when it takes longer than `limit` (a debug build on a busy machine), and
/// returns what it returned.
fn timed<T>(what: &str, limit: Duration, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    let took = started.elapsed();
    eprintln!("{what}: {took:?}");
    assert!(took < limit, "{what} took {took:?} (limit {limit:?})");
    out
}

// ---------------------------------------------------------------------------------------------
// Durations

/// Durations up to [`MAX_DURATION`], weighted towards the round values people write.
fn duration() -> impl Strategy<Value = Duration> {
    let max = u64::try_from(MAX_DURATION.as_nanos()).unwrap();
    prop_oneof![
        (0u64..=3650 * DAY_SECS).prop_map(Duration::from_secs),
        (0u64..=10_000_000).prop_map(Duration::from_millis),
        (0u64..=max).prop_map(Duration::from_nanos),
    ]
}

/// A unit and its length in nanoseconds.
fn unit() -> impl Strategy<Value = (&'static str, u128)> {
    prop::sample::select(vec![
        ("ms", 1_000_000u128),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
        ("d", 86_400_000_000_000),
    ])
}

proptest! {
    #![proptest_config(config(1024))]

    /// What [`format_duration`] writes, [`parse_duration`] reads back exactly.
    #[test]
    fn a_formatted_duration_parses_back_to_itself(d in duration()) {
        let text = format_duration(d);
        prop_assert_eq!(parse_duration(&text), Ok(d), "{}", text);
    }

    /// `<n><unit>` parts in any order, whole or with a fraction, add up; past the maximum is
    /// an error that says so.
    #[test]
    fn duration_parts_add_up(
        parts in prop::collection::vec(
            (0u64..100_000, prop::option::of("[0-9]{1,6}"), unit()),
            1..5,
        ),
    ) {
        let mut text = String::new();
        let mut nanos: u128 = 0;
        for (whole, fraction, (unit, size)) in &parts {
            text.push_str(&whole.to_string());
            let mut part = u128::from(*whole) * size;
            if let Some(digits) = fraction {
                text.push('.');
                text.push_str(digits);
                let scale = 10u128.pow(u32::try_from(digits.len()).unwrap());
                part += digits.parse::<u128>().unwrap() * size / scale;
            }
            text.push_str(unit);
            nanos += part;
        }
        if nanos <= MAX_DURATION.as_nanos() {
            let expected = Duration::from_nanos(u64::try_from(nanos).unwrap());
            prop_assert_eq!(parse_duration(&text), Ok(expected), "{}", text);
        } else {
            let too_large = super::duration::too_large_message();
            prop_assert_eq!(parse_duration(&text), Err(too_large), "{}", text);
        }
    }

    /// Any text: an answer, never a panic; an error is short whatever the input's length.
    #[test]
    fn any_text_is_a_duration_or_a_short_reason(
        text in prop_oneof![
            any::<String>(),
            "[0-9.a-z \u{0}-\u{1f}-]{0,40}",
            "[0-9]{15,60}(ms|s|m|h|d)",
            ".{0,4}[0-9.]{1,4}(ms|s|m|h|d|µs|ns|S|D){0,3}.{0,4}",
        ],
    ) {
        match parse_duration(&text) {
            Ok(d) => prop_assert!(d <= MAX_DURATION),
            Err(reason) => {
                prop_assert!(reason.chars().count() <= 120, "{}", reason);
                prop_assert!(!reason.contains('\n') || text.contains('\n'));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Label selectors

/// One requirement, with the operator spelled as it was written.
#[derive(Debug, Clone)]
enum Req {
    Eq(String, String, &'static str),
    NotEq(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Req {
    fn key(&self) -> &str {
        match self {
            Req::Eq(k, ..)
            | Req::NotEq(k, _)
            | Req::In(k, _)
            | Req::NotIn(k, _)
            | Req::Exists(k)
            | Req::DoesNotExist(k) => k,
        }
    }

    /// As written, with `ws` (each entry blank or not) between tokens.
    fn written(&self, ws: &mut impl Iterator<Item = &'static str>) -> String {
        let mut w = || ws.next().unwrap_or("");
        match self {
            Req::Eq(k, v, op) => format!("{k}{}{op}{}{v}", w(), w()),
            Req::NotEq(k, v) => format!("{k}{}!={}{v}", w(), w()),
            Req::In(k, vs) | Req::NotIn(k, vs) => {
                let word = if matches!(self, Req::In(..)) {
                    "in"
                } else {
                    "notin"
                };
                let sep = format!("{},{}", w(), w());
                let list: Vec<&str> = vs.iter().map(String::as_str).collect();
                format!("{k} {word}{}({}{}{})", w(), w(), list.join(&sep), w())
            }
            Req::Exists(k) => k.clone(),
            Req::DoesNotExist(k) => format!("!{}{k}", w()),
        }
    }

    /// The canonical form the docs promise: `=` for both equalities, sorted values.
    fn canonical(&self) -> String {
        match self {
            Req::Eq(k, v, _) => format!("{k}={v}"),
            Req::NotEq(k, v) => format!("{k}!={v}"),
            Req::In(k, vs) => format!("{k} in ({})", join(vs)),
            Req::NotIn(k, vs) => format!("{k} notin ({})", join(vs)),
            Req::Exists(k) => k.clone(),
            Req::DoesNotExist(k) => format!("!{k}"),
        }
    }

    /// Kubernetes' meaning, written out here independently of kube's.
    fn holds(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Req::Eq(k, v, _) => labels.get(k) == Some(v),
            Req::NotEq(k, v) => labels.get(k) != Some(v),
            Req::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Req::Exists(k) => labels.contains_key(k),
            Req::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

fn join(values: &BTreeSet<String>) -> String {
    values.iter().cloned().collect::<Vec<_>>().join(",")
}

fn label_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9]([A-Za-z0-9._-]{0,10}[A-Za-z0-9])?",
        prop::sample::select(vec!["in", "notin", "app", "tier", "a"]).prop_map(String::from),
        "[a-z]{63}",
    ]
}

fn label_key() -> impl Strategy<Value = String> {
    let prefix = prop::collection::vec("[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", 1..4)
        .prop_map(|labels| labels.join("."));
    (prop::option::of(prefix), label_name()).prop_map(|(prefix, name)| match prefix {
        Some(prefix) => format!("{prefix}/{name}"),
        None => name,
    })
}

fn req() -> impl Strategy<Value = Req> {
    let value = || prop_oneof![label_name(), Just(String::new())];
    let values = || prop::collection::btree_set(label_name(), 1..4);
    prop_oneof![
        (label_key(), value(), prop::sample::select(vec!["=", "=="]))
            .prop_map(|(k, v, op)| Req::Eq(k, v, op)),
        (label_key(), value()).prop_map(|(k, v)| Req::NotEq(k, v)),
        (label_key(), values()).prop_map(|(k, vs)| Req::In(k, vs)),
        (label_key(), values()).prop_map(|(k, vs)| Req::NotIn(k, vs)),
        label_key().prop_map(Req::Exists),
        label_key().prop_map(Req::DoesNotExist),
    ]
}

/// Labels drawn from the keys and values the requirements name, and others.
fn labels_for(reqs: &[Req]) -> impl Strategy<Value = BTreeMap<String, String>> + use<> {
    let mut keys: Vec<String> = reqs.iter().map(|r| r.key().to_string()).collect();
    keys.push("other".to_string());
    let mut values: Vec<String> = reqs
        .iter()
        .flat_map(|r| match r {
            Req::Eq(_, v, _) | Req::NotEq(_, v) => vec![v.clone()],
            Req::In(_, vs) | Req::NotIn(_, vs) => vs.iter().cloned().collect(),
            _ => Vec::new(),
        })
        .collect();
    values.extend(["x".to_string(), String::new()]);
    prop::collection::btree_map(
        prop::sample::select(keys),
        prop::sample::select(values),
        0..6,
    )
}

fn whitespace() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(vec!["", "", " ", "\t", "  "]), 64)
}

proptest! {
    #![proptest_config(config(512))]

    /// A selector written with any spacing parses; its canonical form is the documented one and
    /// parses back to the same selector; it matches exactly the labels Kubernetes would.
    #[test]
    fn a_selector_that_parses_matches_what_it_says(
        (reqs, labels) in prop::collection::vec(req(), 1..5)
            .prop_flat_map(|reqs| { let labels = labels_for(&reqs); (Just(reqs), labels) }),
        ws in whitespace(),
        lead in prop::sample::select(vec!["", " "]),
    ) {
        let mut ws = ws.into_iter();
        let written: Vec<String> = reqs.iter().map(|r| r.written(&mut ws)).collect();
        let sep = format!("{},{}", ws.next().unwrap_or(""), ws.next().unwrap_or(""));
        let text = format!("{lead}{}{lead}", written.join(&sep));
        let selector = LabelSelector::parse(&text).map_err(TestCaseError::fail)?;
        let canonical: Vec<String> = reqs.iter().map(Req::canonical).collect();
        prop_assert_eq!(selector.as_str(), canonical.join(","));
        prop_assert_eq!(&LabelSelector::parse(selector.as_str()).unwrap(), &selector);
        prop_assert!(!selector.is_everything());
        prop_assert_eq!(selector.matches(&labels), reqs.iter().all(|r| r.holds(&labels)));
    }

    /// Any text: a selector or an error that says where, never a panic.
    #[test]
    fn any_text_is_a_selector_or_an_error_with_its_position(
        text in prop_oneof![
            any::<String>(),
            "[a-z=!(),<> \t.-/]{0,40}",
            prop::collection::vec(req(), 1..4).prop_map(|reqs| {
                let mut ws = std::iter::empty();
                reqs.iter().map(|r| r.written(&mut ws)).collect::<Vec<_>>().join(",")
            }).prop_flat_map(|text| {
                let len = text.len();
                (Just(text), 0..=len, prop::sample::select(vec![
                    "", ",", "=", "!", "(", ")", " in ", "notin", "a/b/c", "-", "é", "\u{0}",
                ]))
            }).prop_map(|(mut text, at, insert)| {
                let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
                text.insert_str(at, insert);
                text
            }),
        ],
    ) {
        match LabelSelector::parse(&text) {
            Ok(selector) => {
                prop_assert_eq!(&LabelSelector::parse(selector.as_str()).unwrap(), &selector);
            }
            Err(reason) => {
                let (_, at) = reason.rsplit_once(" at character ").unwrap_or_else(|| {
                    panic!("no position in {reason:?}")
                });
                let at: usize = at.parse().unwrap();
                prop_assert!(at >= 1 && at <= text.chars().count() + 1, "{}", reason);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Whole documents

/// A valid config: what was written, and where each duration value sits.
#[derive(Debug, Clone)]
struct Doc {
    text: String,
    expected: Config,
    /// (key path, 1-based line, 1-based column of the value)
    durations: Vec<(String, usize, usize)>,
    /// (key path of a mapping, indentation of its keys, line after which a key may be added)
    sections: Vec<(String, usize, usize)>,
}

#[derive(Debug, Clone)]
struct ControllerSpec {
    name: String,
    selector: Vec<Req>,
    namespaces: Option<Vec<String>>,
}

fn controller() -> impl Strategy<Value = ControllerSpec> {
    (
        "[a-z][a-z0-9 -]{0,20}",
        prop::collection::vec(req(), 1..3),
        prop::option::of(prop::collection::btree_set(
            "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?",
            1..3,
        )),
    )
        .prop_map(|(name, selector, namespaces)| ControllerSpec {
            name: name.trim().to_string(),
            selector,
            namespaces: namespaces.map(|n| n.into_iter().collect()),
        })
        .prop_filter("a name", |c| !c.name.is_empty())
}

fn nonzero(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

fn doc() -> impl Strategy<Value = Doc> {
    (
        duration(),
        any::<bool>(),
        duration(),
        [duration(), duration(), duration(), duration(), duration()],
        prop::sample::select(vec![2usize, 4]),
        prop::collection::vec(controller(), 0..4),
    )
        .prop_map(|(stuck, nudge_on, nudge, rest, indent, controllers)| {
            let stuck = nonzero(stuck).max(Duration::from_secs(3));
            let nudge = if nudge_on {
                nudge.min(stuck - Duration::from_nanos(1))
            } else {
                nudge
            };
            let [min_interval, timeout, interval, mismatch, warn] = rest;
            let (timeout, interval) = (nonzero(timeout), nonzero(interval));
            let pad = " ".repeat(indent);
            let mut lines: Vec<String> = vec!["# generated".to_string()];
            let mut durations = Vec::new();
            let mut sections = Vec::new();
            let mut value =
                |lines: &mut Vec<String>, path: &str, key_indent: usize, key: &str, d: Duration| {
                    let key_text = format!("{}{key}: ", " ".repeat(key_indent));
                    durations.push((path.to_string(), lines.len() + 1, key_text.len() + 1));
                    lines.push(format!("{key_text}{}", format_duration(d)));
                };
            value(&mut lines, "stuckAfter", 0, "stuckAfter", stuck);
            lines.push("nudge:".to_string());
            lines.push(format!("{pad}enabled: {nudge_on}"));
            value(&mut lines, "nudge.after", indent, "after", nudge);
            sections.push(("nudge".to_string(), indent, lines.len()));
            lines.push("reload:".to_string());
            value(
                &mut lines,
                "reload.minInterval",
                indent,
                "minInterval",
                min_interval,
            );
            sections.push(("reload".to_string(), indent, lines.len()));
            lines.push("verify:".to_string());
            value(&mut lines, "verify.timeout", indent, "timeout", timeout);
            value(&mut lines, "verify.interval", indent, "interval", interval);
            value(
                &mut lines,
                "verify.mismatchAfter",
                indent,
                "mismatchAfter",
                mismatch,
            );
            sections.push(("verify".to_string(), indent, lines.len()));
            lines.push("expiry:".to_string());
            value(&mut lines, "expiry.warnBefore", indent, "warnBefore", warn);
            sections.push(("expiry".to_string(), indent, lines.len()));
            let defaults = Config::default();
            let mut expected = Config {
                stuck_after: stuck,
                nudge: NudgeConfig {
                    enabled: nudge_on,
                    after: nudge,
                    ..defaults.nudge
                },
                reload: ReloadConfig {
                    min_interval,
                    ..defaults.reload
                },
                verify: VerifyConfig {
                    timeout,
                    interval,
                    mismatch_after: mismatch,
                    ..defaults.verify
                },
                expiry: ExpiryConfig { warn_before: warn },
                ..defaults
            };
            let mut seen = BTreeSet::new();
            let controllers: Vec<ControllerSpec> = controllers
                .into_iter()
                .filter(|c| seen.insert(c.name.clone()))
                .collect();
            if !controllers.is_empty() {
                lines.push("controllers:".to_string());
                expected.controllers.clear();
            }
            for (i, c) in controllers.iter().enumerate() {
                let mut ws = std::iter::empty();
                let selector: Vec<String> = c.selector.iter().map(|r| r.written(&mut ws)).collect();
                lines.push(format!("{pad}- name: \"{}\"", c.name));
                lines.push(format!("{pad}  selector: \"{}\"", selector.join(", ")));
                if let Some(namespaces) = &c.namespaces {
                    let quoted: Vec<String> =
                        namespaces.iter().map(|n| format!("\"{n}\"")).collect();
                    lines.push(format!("{pad}  namespaces: [{}]", quoted.join(", ")));
                }
                lines.push(format!("{pad}  reload: none"));
                sections.push((format!("controllers[{i}]"), indent + 2, lines.len()));
                expected.controllers.push(ControllerProfile {
                    restart_fallback: false,
                    name: c.name.clone(),
                    selector: LabelSelector::parse(&selector.join(",")).unwrap(),
                    namespaces: c.namespaces.clone(),
                    containers: None,
                    reload: ReloadAction::None,
                    mode: ReloadMode::Files,
                    probe: ProbeConfig::default(),
                    routes: None,
                });
            }
            let mut text = lines.join("\n");
            text.push('\n');
            Doc {
                text,
                expected,
                durations,
                sections,
            }
        })
}

/// Durations no parser should take, each with the start of the reason it must give.
fn bad_duration() -> impl Strategy<Value = (String, &'static str)> {
    prop::sample::select(vec![
        ("5x", "unknown unit"),
        ("-1s", "must not be negative"),
        ("\"1 s\"", "must not contain spaces"),
        ("s", "expected a number"),
        ("1.s", "expected digits after"),
        ("120", "missing unit"),
        ("99999999999999999999d", "too large"),
        ("3651d", "too large"),
        ("1h-2m", "unexpected"),
        ("\"\"", "empty"),
    ])
    .prop_map(|(text, reason)| (text.to_string(), reason))
}

proptest! {
    #![proptest_config(config(128))]

    /// A generated config loads as exactly what it says.
    #[test]
    fn a_generated_config_loads_as_written(doc in doc()) {
        let config = Config::from_yaml(&doc.text, "t.yaml")
            .map_err(|e| TestCaseError::fail(format!("{e}\n{}", doc.text)))?;
        let mut expected = doc.expected.clone();
        expected.api = config.api;
        prop_assert_eq!(config, expected, "{}", doc.text);
    }

    /// One bad duration anywhere: exactly one error, naming its file, line, column, key path and
    /// the reason.
    #[test]
    fn one_bad_duration_is_one_error_at_its_key(
        doc in doc(),
        which in any::<prop::sample::Index>(),
        (bad, reason) in bad_duration(),
    ) {
        let (path, line, column) = which.get(&doc.durations).clone();
        let mut lines: Vec<String> = doc.text.lines().map(str::to_string).collect();
        let cut = column - 1;
        lines[line - 1] = format!("{}{bad}", &lines[line - 1][..cut]);
        let text = lines.join("\n") + "\n";
        let errors = Config::from_yaml(&text, "t.yaml").unwrap_err().errors;
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        prop_assert_eq!(errors.len(), 1, "{:#?}\n{}", shown, text);
        let want = format!("t.yaml:{line}:{column}: {path}: invalid duration ");
        prop_assert!(shown[0].starts_with(&want), "{} (want {})", shown[0], want);
        prop_assert!(shown[0].contains(reason), "{} (want {})", shown[0], reason);
    }

    /// An unknown key in any section: one error at its line and column naming its path.
    #[test]
    fn an_unknown_key_is_named_with_its_path_and_line(
        doc in doc(),
        which in any::<prop::sample::Index>(),
        key in "[a-z][a-zA-Z]{2,12}",
    ) {
        let (section, indent, after) = which.get(&doc.sections).clone();
        prop_assume!(![
            "enabled", "after", "minInterval", "timeout", "interval", "mismatchAfter",
            "warnBefore", "name", "selector", "namespaces", "reload", "handshakesPerSecond",
            "profile", "containers", "mode", "probe", "routes", "null", "true", "false",
        ].contains(&key.as_str()));
        let mut lines: Vec<String> = doc.text.lines().map(str::to_string).collect();
        lines.insert(after, format!("{}{key}: 1", " ".repeat(indent)));
        let text = lines.join("\n") + "\n";
        let errors = Config::from_yaml(&text, "t.yaml").unwrap_err().errors;
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        prop_assert_eq!(errors.len(), 1, "{:#?}\n{}", shown, text);
        let want = format!(
            "t.yaml:{}:{}: {section}.{key}: unknown key \"{key}\"",
            after + 1,
            indent + 1
        );
        prop_assert!(shown[0].starts_with(&want), "{} (want {})", shown[0], want);
    }

    /// Bytes that are not UTF-8 anywhere in a config file: one error naming the line and column
    /// of the first of them.
    #[test]
    fn a_byte_that_is_not_utf8_is_reported_where_it_is(
        doc in doc(),
        at in any::<prop::sample::Index>(),
        // Bytes that start no UTF-8 sequence: whatever follows, the file is invalid right here.
        bad in prop_oneof![0x80u8..=0xc1, 0xf5u8..=0xff],
        more in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut bytes = doc.text.clone().into_bytes();
        let pos = at.index(bytes.len() + 1);
        let mut inserted = vec![bad];
        inserted.extend(more);
        bytes.splice(pos..pos, inserted);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, &bytes).unwrap();
        let errors = Config::load(&path).unwrap_err().errors;
        prop_assert_eq!(errors.len(), 1);
        let prefix = &doc.text[..pos];
        let line = prefix.matches('\n').count() + 1;
        let column = prefix.rsplit('\n').next().unwrap().chars().count() + 1;
        let want = format!("{}:{line}:{column}: invalid YAML: the file is not valid UTF-8",
            path.display());
        prop_assert_eq!(errors[0].to_string(), want);
    }

    /// Any YAML-flavoured text: a config or errors that each name the file and a position
    /// inside the text, one line each, never a panic.
    #[test]
    fn any_text_is_a_config_or_errors_with_positions(
        text in prop_oneof![
            any::<String>(),
            prop::collection::vec(prop::sample::select(vec![
                "\n", " ", "  ", "- ", ": ", "[", "]", "{", "}", ",", "&a ", "*a", "<<: ",
                "!!str ", "? ", "|\n", ">\n", "\"", "'", "#", "stuckAfter", "nudge",
                "controllers", "name", "selector", "reload", "1s", "none", "x", "\t", "\r\n",
                "---\n", "%YAML 1.2\n",
            ]), 0..60).prop_map(|parts| parts.concat()),
        ],
    ) {
        match Config::from_yaml(&text, "fuzz.yaml") {
            Ok(config) => prop_assert!(!config.summary().is_empty()),
            Err(errors) => {
                prop_assert!(!errors.errors.is_empty());
                // Every character YAML may take as a line break, and the line after the last.
                let lines = text
                    .chars()
                    .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
                    .count()
                    + 1;
                for e in &errors.errors {
                    let shown = e.to_string();
                    prop_assert!(shown.starts_with("fuzz.yaml:"), "{}", shown);
                    prop_assert!(!shown.contains('\n'), "{:?}", shown);
                    if let Some(at) = e.location() {
                        prop_assert!(at.line >= 1 && at.column >= 1, "{}", shown);
                        prop_assert!(at.line <= lines + 1, "{} (text has {} lines)", shown, lines);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile documents, each a clear error within a bounded time

const QUICK: Duration = Duration::from_secs(10);

fn errors_of(text: &str) -> Vec<ConfigError> {
    match Config::from_yaml(text, "hostile.yaml") {
        Ok(config) => panic!("accepted: {}", config.summary()),
        Err(errors) => errors.errors,
    }
}

fn load_errors(bytes: &[u8]) -> Vec<ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.yaml");
    std::fs::write(&path, bytes).unwrap();
    match Config::load(&path) {
        Ok(config) => panic!("accepted: {}", config.summary()),
        Err(errors) => errors.errors,
    }
}

/// `levels` anchors, each a list of ten aliases of the one before: 10^levels leaves.
fn laughs(levels: usize) -> String {
    let mut text = String::from("a0: &a0 [lol]\n");
    for level in 1..=levels {
        let items = vec![format!("*a{}", level - 1); 10].join(", ");
        text.push_str(&format!("a{level}: &a{level} [{items}]\n"));
    }
    text
}

#[test]
fn a_billion_laughs_is_too_complex_and_refused_quickly() {
    for (what, text) in [
        ("flow lists", laughs(10)),
        (
            "block mappings",
            (1..=9).fold("l0: &l0 {a: lol}\n".to_string(), |mut text, level| {
                let keys: Vec<String> = (0..10)
                    .map(|k| format!("  k{k}: *l{}", level - 1))
                    .collect();
                text.push_str(&format!("l{level}: &l{level}\n{}\n", keys.join("\n")));
                text
            }),
        ),
        (
            "a controller list",
            format!("{}controllers: [*a9, *a9]\n", laughs(9)),
        ),
    ] {
        let errors = timed(what, QUICK, || load_errors(text.as_bytes()));
        assert_eq!(errors.len(), 1, "{what}: {errors:?}");
        assert!(
            matches!(errors[0], ConfigError::TooComplex { .. }),
            "{what}: {}",
            errors[0]
        );
        assert!(
            errors[0].to_string().contains("once its aliases"),
            "{}",
            errors[0]
        );
    }
}

#[test]
fn ten_thousand_levels_of_nesting_are_refused_without_deep_recursion() {
    let block_lists = format!("stuckAfter: 1m\nx:\n{}y\n", "- ".repeat(10_000));
    let flow_lists = format!("x: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let flow_maps = format!("x: {}a{}\n", "{a: ".repeat(10_000), "}".repeat(10_000));
    let mixed = format!("x: {}y\n", "- [".repeat(5_000));
    // 300 levels of block mappings, one more space each: 46 KB, under the file cap.
    let indented: String = (0..300)
        .map(|i| format!("{}a:\n", " ".repeat(i)))
        .chain(std::iter::once(format!("{}b: 1\n", " ".repeat(300))))
        .collect();
    let explicit = format!("{}y\n", "? ".repeat(10_000));
    for (what, text) in [
        ("block lists", block_lists),
        ("flow lists", flow_lists),
        ("flow maps", flow_maps),
        ("mixed", mixed),
        ("indented maps", indented),
        ("explicit keys", explicit),
    ] {
        // Through the file (each is under the size cap) and as text.
        let errors = timed(what, QUICK, || load_errors(text.as_bytes()));
        assert!(!errors.is_empty(), "{what}");
        for error in &errors {
            let shown = error.to_string();
            assert!(
                shown.contains("invalid YAML") || shown.contains("too large"),
                "{what}: {shown}"
            );
            assert!(shown.len() < 400, "{what}: {shown}");
        }
        timed(what, QUICK, || errors_of(&text));
    }
}

#[test]
fn a_fifty_megabyte_scalar_is_refused_by_size_before_it_is_parsed() {
    let huge = format!("stuckAfter: {}s\n", "9".repeat(50 << 20));
    // From a file (the agent's and check-config's way in): refused by the size cap, unread.
    let errors = timed("50 MB file", QUICK, || load_errors(huge.as_bytes()));
    assert_eq!(errors.len(), 1);
    assert!(
        matches!(errors[0], ConfigError::TooLarge { limit, .. } if limit == MAX_CONFIG_BYTES),
        "{}",
        errors[0]
    );
    // Given as text (no caller does: every file is read through the cap), a large document is
    // refused by the expansion budget after one linear pass (8 MiB here to keep the test short:
    // 50 MB takes about 7 s in a debug build).
    let text = format!("stuckAfter: {}s\n", "9".repeat(8 << 20));
    let errors = timed("8 MiB text", QUICK, || errors_of(&text));
    assert_eq!(errors.len(), 1);
    assert!(
        matches!(errors[0], ConfigError::TooComplex { .. }),
        "{}",
        errors[0]
    );
    // A scalar just under the file cap is parsed and refused with a short reason.
    let big = format!("stuckAfter: {}s\n", "9".repeat(60 << 10));
    let errors = timed("60 KiB scalar", QUICK, || load_errors(big.as_bytes()));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().contains("too many digits") && errors[0].to_string().len() < 400,
        "{}",
        errors[0]
    );
    // The same scalar repeated through aliases is too complex.
    let repeated = format!(
        "x: &x {}\ny: [{}]\n",
        "z".repeat(60 << 10),
        vec!["*x"; 20].join(", ")
    );
    let errors = timed("repeated scalar", QUICK, || {
        load_errors(repeated.as_bytes())
    });
    assert!(
        matches!(errors[0], ConfigError::TooComplex { .. }),
        "{}",
        errors[0]
    );
}

#[test]
fn bytes_that_are_not_utf8_are_one_error_with_their_position() {
    for (bytes, line, column) in [
        (&b"\xff\xfe"[..], 1, 1),
        (b"stuckAfter: 1m\nnudge:\n  after: \xc0\xaf1s\n", 3, 10),
        (b"# caf\xe9\n", 1, 6),
        (b"\xef\xbb\xbfstuckAfter: 1m\n\xed\xa0\x80", 2, 1),
    ] {
        let errors = timed("not UTF-8", QUICK, || load_errors(bytes));
        assert_eq!(errors.len(), 1);
        let shown = errors[0].to_string();
        assert!(
            shown.ends_with(&format!(
                ":{line}:{column}: invalid YAML: the file is not valid UTF-8"
            )),
            "{shown}"
        );
    }
}
