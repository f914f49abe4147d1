//! `deploy/grafana/mountlag-dashboard.json`: it imports into any Grafana with a Prometheus data
//! source (a `${datasource}` variable, no fixed data source uid), every query parses as PromQL
//! (`promtool check rules` on the queries with the template variables filled in), and every
//! metric and label it reads is in a live scrape of the real agent on a stand-in node that went
//! through a rotation: a nudged mount, a verified nginx reload, an API error.
//!
//! Real parts: `promtool` (Debian `prometheus`), root + tmpfs, nginx. Under
//! `MOUNTLAG_REQUIRE_REAL=1` a missing one fails the test.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use mountlag_testbed::apiserver::Faults;
use mountlag_testbed::certs::{LeafSpec, TestCa};
use mountlag_testbed::cluster::{
    NAMESPACE, NODE, TestNode, controller_pod, free_port, mount_of, tls_secret,
};
use mountlag_testbed::controllers::{self, ControllerKind, ControllerSpec, RunningController};
use mountlag_testbed::kubelet::VolumeKind;
use mountlag_testbed::node::NodeConfig;
use mountlag_testbed::{real, repo};
use serde_json::{Value, json};

const DASHBOARD: &str = "deploy/grafana/mountlag-dashboard.json";

/// Labels a query may use that the agent does not export: the scrape adds them
/// (`deploy/prometheus/podmonitor.yaml` relabels the agent pod's node into `node`).
const SCRAPE_LABELS: &[&str] = &["node"];

/// The value each template variable gets, as Grafana would interpolate a single selection.
/// Grafana's built-ins first, then the dashboard's own variables (checked to be all of them).
const BUILT_INS: &[(&str, &str)] = &[
    ("__rate_interval", "1m"),
    ("__rate_interval_ms", "60000"),
    ("__interval", "30s"),
    ("__interval_ms", "30000"),
    ("__range", "1h"),
    ("__range_s", "3600"),
    ("__range_ms", "3600000"),
];

fn variable_values() -> BTreeMap<&'static str, &'static str> {
    BUILT_INS
        .iter()
        .copied()
        .chain([
            ("datasource", "prometheus"),
            ("node", NODE),
            ("namespace", NAMESPACE),
        ])
        .collect()
}

fn dashboard() -> Value {
    let path = repo::root().join(DASHBOARD);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

// ------------------------------------------------------------------------- the queries

/// One PromQL query of the dashboard, variables filled in.
#[derive(Debug, Clone)]
struct Query {
    /// `panel "Title" (id 4), query B` or `variable node`.
    what: String,
    /// Name of its recording rule in the checked rules file.
    record: String,
    expr: String,
    /// For a `label_values(selector, label)` variable: the label it lists.
    lists_label: Option<String>,
}

/// Every panel in `panels`, rows' collapsed children included.
fn all_panels(panels: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in panels.as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(all_panels(&panel["panels"]));
    }
    out
}

/// Every query of the dashboard: each panel target's `expr` and each query variable's
/// `label_values` selector, template variables substituted. `Err` lists what cannot be read.
fn queries(dashboard: &Value) -> Result<Vec<Query>, String> {
    let values = variable_values();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for panel in all_panels(&dashboard["panels"]) {
        let title = panel["title"].as_str().unwrap_or("<untitled>");
        let id = panel["id"].as_u64().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let ref_id = target["refId"].as_str().unwrap_or("?");
            let what = format!("panel {title:?} (id {id}), query {ref_id}");
            let Some(expr) = target["expr"].as_str() else {
                problems.push(format!("{what}: no `expr`"));
                continue;
            };
            match substitute(expr, &values) {
                Ok(expr) => out.push(Query {
                    what,
                    record: format!("dashboard:panel_{id}_{ref_id}"),
                    expr,
                    lists_label: None,
                }),
                Err(err) => problems.push(format!("{what}: {err}")),
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or("?");
        let what = format!("variable {name}");
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap_or_default();
        let Some((selector, label)) = label_values(query) else {
            problems.push(format!(
                "{what}: not label_values(selector, label): {query:?}"
            ));
            continue;
        };
        match substitute(selector, &values) {
            Ok(expr) => out.push(Query {
                what,
                record: format!("dashboard:variable_{name}"),
                expr,
                lists_label: Some(label.to_string()),
            }),
            Err(err) => problems.push(format!("{what}: {err}")),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems.join("\n"))
    }
}

/// `label_values(selector, label)` → (selector, label).
fn label_values(query: &str) -> Option<(&str, &str)> {
    let args = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = args.rsplit_once(',')?;
    Some((selector.trim(), label.trim()))
}

/// Fills in Grafana's template variables: `$name`, `${name}`, `${name:format}`, `[[name]]`.
/// A variable without a value is an error (a typo, or one the dashboard does not define).
fn substitute(expr: &str, values: &BTreeMap<&str, &str>) -> Result<String, String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    loop {
        let Some(at) = rest.find(['$', '[']) else {
            out.push_str(rest);
            return Ok(out);
        };
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (name, len) = if let Some(braced) = tail.strip_prefix("${") {
            let end = braced
                .find('}')
                .ok_or(format!("unclosed ${{ in {expr:?}"))?;
            let name = braced[..end].split(':').next().unwrap_or_default();
            (name, 2 + end + 1)
        } else if let Some(bracketed) = tail.strip_prefix("[[") {
            let end = bracketed
                .find("]]")
                .ok_or(format!("unclosed [[ in {expr:?}"))?;
            (&bracketed[..end], 2 + end + 2)
        } else if let Some(plain) = tail.strip_prefix('$') {
            let end = plain.find(|c| !is_name(c)).unwrap_or(plain.len());
            (&plain[..end], 1 + end)
        } else {
            // A `[` that opens a range, not `[[`.
            out.push('[');
            rest = &tail[1..];
            continue;
        };
        let value = values
            .get(name)
            .ok_or(format!("unknown template variable ${name} in {expr:?}"))?;
        out.push_str(value);
        rest = &tail[len..];
    }
}

// ------------------------------------------------------------------------- promtool

fn can_promtool() -> bool {
    real::require("promtool (Debian package prometheus)", real::promtool())
}

/// `promtool check rules` on every query as a recording rule. `Err` names each query promtool
/// rejects, with its reason.
fn promtool_check(queries: &[Query]) -> Result<(), String> {
    let rules: Vec<Value> = queries
        .iter()
        .map(|q| json!({"record": q.record, "expr": q.expr}))
        .collect();
    let file = json!({"groups": [{"name": "mountlag-dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&path, serde_yaml::to_string(&file).unwrap()).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        return Ok(());
    }
    let rejected: Vec<String> = queries
        .iter()
        .filter_map(|q| {
            let reason = output
                .lines()
                .find(|l| l.contains(&format!("\"{}\"", q.record)))?;
            let reason = reason.split_once(": ").map_or(reason, |(_, r)| r);
            Some(format!(
                "{} does not parse: {reason}\n    {}",
                q.what, q.expr
            ))
        })
        .collect();
    if rejected.is_empty() {
        Err(format!("promtool check rules failed:\n{output}"))
    } else {
        Err(rejected.join("\n"))
    }
}

// ------------------------------------------------------------------------- what a query reads

/// The metric names an expression reads, each with the label names its matchers use, and the
/// label names of its `by`/`without`/`on`/`ignoring`/`group_left`/`group_right` clauses.
#[derive(Debug, Default, PartialEq, Eq)]
struct Reads {
    metrics: Vec<(String, Vec<String>)>,
    grouping: Vec<String>,
}

/// Words that are never a metric name: aggregations, binary operators, modifiers.
const NOT_METRICS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
];
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A small PromQL scanner: enough to find metric names and label names (promtool has already
/// said the expression parses).
fn reads(expr: &str) -> Reads {
    let s: Vec<char> = expr.chars().collect();
    let skip_ws = |mut i: usize| {
        while s.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        i
    };
    let word_at = |mut i: usize| {
        let start = i;
        while s.get(i).copied().is_some_and(is_word) {
            i += 1;
        }
        (s[start..i].iter().collect::<String>(), i)
    };
    let mut out = Reads::default();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&s, i);
        } else if c == '#' {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '[' {
            while i < s.len() && s[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // A selector without a metric name.
            i = matchers(&s, i).1;
        } else if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration: 86400, 0.99, 1e3, 5m.
            while s
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '.')
            {
                i += 1;
            }
        } else if is_word_start(c) {
            let (word, end) = word_at(i);
            let next = skip_ws(end);
            let lower = word.to_ascii_lowercase();
            i = end;
            if GROUPING.contains(&lower.as_str()) {
                if s.get(next) == Some(&'(') {
                    let mut j = next + 1;
                    loop {
                        j = skip_ws(j);
                        match s.get(j) {
                            Some(')') | None => break,
                            Some(',') => j += 1,
                            Some(_) => {
                                let (label, end) = word_at(j);
                                if label.is_empty() {
                                    j += 1;
                                } else {
                                    out.grouping.push(label);
                                    j = end;
                                }
                            }
                        }
                    }
                    i = j + 1;
                }
            } else if s.get(next) == Some(&'(') || NOT_METRICS.contains(&lower.as_str()) {
                // A function call, an aggregation or a keyword.
            } else if s.get(next) == Some(&'{') {
                let (labels, end) = matchers(&s, next);
                out.metrics.push((word, labels));
                i = end;
            } else {
                out.metrics.push((word, Vec::new()));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Index after the string literal starting at `i` (its quote).
fn skip_string(s: &[char], mut i: usize) -> usize {
    let quote = s[i];
    i += 1;
    while i < s.len() && s[i] != quote {
        if s[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The label names of the matchers `{...}` starting at `i`, and the index after the `}`.
fn matchers(s: &[char], mut i: usize) -> (Vec<String>, usize) {
    let mut labels = Vec::new();
    i += 1;
    let mut expect_name = true;
    while i < s.len() && s[i] != '}' {
        let c = s[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(s, i);
            expect_name = false;
        } else if c == ',' {
            expect_name = true;
            i += 1;
        } else if expect_name && is_word_start(c) {
            let start = i;
            while i < s.len() && is_word(s[i]) {
                i += 1;
            }
            labels.push(s[start..i].iter().collect());
            expect_name = false;
        } else {
            i += 1;
        }
    }
    (labels, i + 1)
}

// ------------------------------------------------------------------------- the scrape

/// Sample names of a Prometheus text scrape, each with the label names its samples carry.
fn scrape_samples(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let s: Vec<char> = line.chars().collect();
        let end = s.iter().position(|c| !is_word(*c)).unwrap_or(s.len());
        let name: String = s[..end].iter().collect();
        let labels = if s.get(end) == Some(&'{') {
            matchers(&s, end).0
        } else {
            Vec::new()
        };
        out.entry(name).or_default().extend(labels);
    }
    out
}

/// Every metric the queries read must have samples in `scrape` (as the text format names them:
/// `_total`, `_bucket`, `_sum`, `_count`), and every label they match or group by must be
/// on them (or be one the scrape adds). `Err` names each query and what it misses.
fn check_against_scrape(queries: &[Query], scrape: &str) -> Result<(), String> {
    let samples = scrape_samples(scrape);
    let families: BTreeSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next())
        .collect();
    let mut problems = Vec::new();
    for query in queries {
        let reads = reads(&query.expr);
        if reads.metrics.is_empty() {
            problems.push(format!("{} reads no metric: {}", query.what, query.expr));
        }
        let mut available: BTreeSet<&str> = SCRAPE_LABELS.iter().copied().collect();
        let mut all_found = true;
        for (metric, labels) in &reads.metrics {
            let Some(on_it) = samples.get(metric) else {
                let family = families
                    .iter()
                    .find(|f| metric.starts_with(*f) || f.starts_with(metric.as_str()))
                    .map(|f| {
                        format!(
                            " (family {f} is, with samples {:?})",
                            sample_names(&samples, f)
                        )
                    })
                    .unwrap_or_default();
                problems.push(format!(
                    "{} reads metric {metric}, which is not in the agent's scrape{family}",
                    query.what
                ));
                all_found = false;
                continue;
            };
            available.extend(on_it.iter().map(String::as_str));
            for label in labels {
                if !on_it.contains(label) && !SCRAPE_LABELS.contains(&label.as_str()) {
                    problems.push(format!(
                        "{} matches label {label} of {metric}, which has only {on_it:?}",
                        query.what
                    ));
                }
            }
        }
        // Grouping labels are checked against the query's metrics: only once all are found.
        for label in reads.grouping.iter().chain(&query.lists_label) {
            if all_found && !available.contains(label.as_str()) {
                problems.push(format!(
                    "{} uses label {label}, which none of its metrics has ({:?})",
                    query.what, available
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

fn sample_names<'a>(samples: &'a BTreeMap<String, BTreeSet<String>>, family: &str) -> Vec<&'a str> {
    samples
        .keys()
        .filter(|s| s.starts_with(family))
        .map(String::as_str)
        .collect()
}

// ------------------------------------------------------------------------- the tests

#[test]
fn the_dashboard_imports_with_any_prometheus_data_source() {
    let dashboard = dashboard();
    let schema = dashboard["schemaVersion"].as_u64().unwrap();
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert_eq!(dashboard["uid"], "mountlag");
    // No fixed data source: the `datasource` variable picks any Prometheus at import.
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    for name in ["node", "namespace"] {
        let v = variable(name);
        assert_eq!(v["type"], "query", "{name}");
        let query = v["query"]["query"].as_str().unwrap();
        assert!(
            label_values(query).is_some_and(|(_, l)| l == name),
            "{name}: {query}"
        );
        assert_eq!(v["definition"].as_str(), Some(query), "{name}");
    }
    // Every variable a query may use is defined, and every defined one has a test value.
    let defined: BTreeSet<&str> = variables
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let valued: BTreeSet<&str> = variable_values()
        .into_keys()
        .filter(|k| !k.starts_with("__"))
        .collect();
    assert_eq!(defined, valued, "template variables");
    fn data_sources<'a>(value: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    if key == "datasource" {
                        out.push((path.clone(), v));
                    }
                    data_sources(v, format!("{path}.{key}"), out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    data_sources(v, format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut refs = Vec::new();
    data_sources(&dashboard, String::new(), &mut refs);
    assert!(refs.len() > 20, "{refs:?}");
    for (path, reference) in refs {
        // Grafana's own annotation source is the only other one allowed.
        if reference["type"] == "grafana" && path.starts_with(".annotations") {
            continue;
        }
        assert_eq!(
            reference,
            &json!({"type": "prometheus", "uid": "${datasource}"}),
            "{path}: a fixed data source"
        );
    }
    // Rows with panels; ids unique; every non-row panel has a query.
    let panels = all_panels(&dashboard["panels"]);
    let ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(
        ids.len(),
        ids.iter().collect::<BTreeSet<_>>().len(),
        "panel ids {ids:?}"
    );
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(rows.len(), 5, "{rows:?}");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert!(
            panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "panel {} has no query",
            panel["title"]
        );
        assert!(
            panel["gridPos"]["w"].as_u64().is_some(),
            "{}",
            panel["title"]
        );
    }
    // The `node` label the queries filter on is the one the shipped PodMonitor adds.
    let podmonitor: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo::root().join("deploy/prometheus/podmonitor.yaml")).unwrap(),
    )
    .unwrap();
    for label in SCRAPE_LABELS {
        assert!(
            podmonitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["targetLabel"] == *label),
            "podmonitor.yaml does not add label {label}"
        );
    }
    let queries = queries(&dashboard).unwrap_or_else(|e| panic!("{e}"));
    assert!(queries.len() >= 20, "{} queries", queries.len());
}

#[test]
fn every_dashboard_query_parses_with_promtool() {
    if !can_promtool() {
        return;
    }
    let queries = queries(&dashboard()).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    if let Err(rejected) = promtool_check(&queries) {
        panic!("{DASHBOARD}: queries promtool rejects:\n{rejected}");
    }
}

#[test]
fn the_checks_name_a_broken_query_and_a_metric_the_agent_does_not_export() {
    // The scanner finds metrics and labels, not functions, keywords, strings or durations.
    let sample = reads(
        "histogram_quantile(0.99, sum by (le, node) (rate(a_bucket{node=~\"x{1}\", b='y'}[5m:1m])))\
         / on (node) group_left (version) c_total offset 1h > bool 0 or vector(1) unless d",
    );
    assert_eq!(
        sample,
        Reads {
            metrics: vec![
                ("a_bucket".into(), vec!["node".into(), "b".into()]),
                ("c_total".into(), vec![]),
                ("d".into(), vec![]),
            ],
            grouping: vec!["le".into(), "node".into(), "node".into(), "version".into()],
        }
    );
    assert_eq!(
        substitute(
            "rate(x{a=~\"$node\", b=\"${namespace:regex}\"}[$__rate_interval]) [[node]]",
            &variable_values()
        ),
        Ok(format!(
            "rate(x{{a=~\"{NODE}\", b=\"{NAMESPACE}\"}}[1m]) {NODE}"
        ))
    );
    assert!(substitute("x{a=\"$nodes\"}", &variable_values()).is_err());

    // A metric the agent does not export, a label it does not carry: named with the panel.
    let mut dashboard = dashboard();
    let title = dashboard["panels"][1]["title"]
        .as_str()
        .unwrap()
        .to_string();
    let original = first_target(&mut dashboard)["expr"]
        .as_str()
        .unwrap()
        .to_string();
    first_target(&mut dashboard)["expr"] =
        json!("sum by (state) (mountlag_mount{node=~\"$node\", phase=\"x\"})");
    let scrape = "# TYPE mountlag_mounts gauge\nmountlag_mounts{state=\"in_sync\"} 1\n\
                  mountlag_build_info{version=\"0.1.0\"} 1\n";
    let err = check_against_scrape(&queries(&dashboard).unwrap(), scrape).unwrap_err();
    assert!(
        err.lines().any(|l| l.contains(&format!("panel {title:?}"))
            && l.contains("reads metric mountlag_mount,")),
        "{err}"
    );
    first_target(&mut dashboard)["expr"] =
        json!("sum by (state) (mountlag_mounts{node=~\"$node\", phase=\"x\"})");
    let err = check_against_scrape(&queries(&dashboard).unwrap(), scrape).unwrap_err();
    assert!(
        err.lines().any(|l| l.contains(&format!("panel {title:?}"))
            && l.contains("matches label phase of mountlag_mounts")),
        "{err}"
    );
    // A query that does not parse: promtool rejects it, named with its panel.
    if !can_promtool() {
        return;
    }
    first_target(&mut dashboard)["expr"] = json!(original.replacen(')', "", 1));
    let err = promtool_check(&queries(&dashboard).unwrap()).unwrap_err();
    assert!(
        err.starts_with(&format!("panel {title:?}")) && err.contains("does not parse"),
        "{err}"
    );
    assert_eq!(err.matches("does not parse").count(), 1, "{err}");
}

fn first_target(dashboard: &mut Value) -> &mut Value {
    &mut dashboard["panels"][1]["targets"][0]
}

// ------------------------------------------------------------------------- the live scrape

fn can_run_agent() -> bool {
    real::require("root + tmpfs", real::can_mount())
        && real::require("nginx", controllers::available(ControllerKind::Nginx))
}

const NAMES: [&str; 2] = ["edge.example.com", "www.example.com"];

/// Polls `/metrics` until `pred` holds for it.
async fn wait_scrape(node: &TestNode, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let timeout = Duration::from_secs(30);
    let start = Instant::now();
    loop {
        if let Ok((200, body)) = node.get("/metrics").await
            && pred(&body)
        {
            return body;
        }
        assert!(
            start.elapsed() < timeout,
            "{what}: not within {timeout:?}; last scrape:\n{}\n{}",
            node.get("/metrics").await.map(|r| r.1).unwrap_or_default(),
            node.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn value(scrape: &str, sample: &str) -> f64 {
    mountlag_testbed::cluster::metric_value(scrape, sample).unwrap_or(0.0)
}

fn has_sample(scrape: &str, prefix: &str) -> bool {
    scrape.lines().any(|l| l.starts_with(prefix))
}

/// A node with real nginx mounting a Secret (kubelet at its real 60–90 s period, so the
/// rotation is nudged), an ingress-nginx pod (TLS hosts from Ingress objects), one rotation
/// reloaded and verified, and one API error: every family the dashboard reads has series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_and_label_the_dashboard_reads_is_in_a_live_scrape() {
    if !can_run_agent() {
        return;
    }
    let queries = queries(&dashboard()).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    let port = free_port().unwrap();
    let config = format!(
        "stuckAfter: 30s\nnudge:\n  after: 100ms\nreload:\n  minInterval: 0s\nverify:\n  timeout: 6s\n\
         controllers:\n  - name: edge\n    profile: nginx\n    selector: app=edge\n    probe:\n      ports: [{port}]\n\
         \x20 - name: ingress-nginx\n    profile: ingress-nginx\n    namespaces: [{NAMESPACE}]\n    probe:\n      ports: [{}]\n",
        free_port().unwrap()
    );
    let mut node = TestNode::start(NodeConfig::new(NODE), &config)
        .await
        .unwrap();
    let ca = TestCa::new("dashboard test CA").unwrap();
    let v1 = ca.issue(&LeafSpec::valid_for(NAMES)).unwrap();
    node.api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v1))
        .unwrap();
    let pod = node
        .create_pod_and_wait_started(&controller_pod(
            "edge-0",
            "nginx",
            &[("app", "edge")],
            "edge-tls",
            None,
        ))
        .await
        .unwrap();
    let uid = pod.metadata.uid.unwrap();
    let volume = node.kubelet.volume_dir(&uid, VolumeKind::Secret, "tls");
    let names = NAMES.iter().map(|n| n.to_string()).collect();
    let _nginx = RunningController::start(
        ControllerSpec::new(ControllerKind::Nginx, &uid, &volume, names).with_port(port),
    )
    .unwrap();
    // An API-driven controller's pod (no container behind it): its entry reports TLS hosts.
    let ingress_pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ingress-nginx-controller-0", "namespace": NAMESPACE, "labels": {
            "app.kubernetes.io/name": "ingress-nginx",
            "app.kubernetes.io/component": "controller"
        }},
        "spec": {"nodeName": NODE, "containers": [{"name": "controller", "image": "ingress-nginx"}]}
    }))
    .unwrap();
    node.create_pod_and_wait_started(&ingress_pod)
        .await
        .unwrap();
    // cert-manager: the Certificate of edge-tls has not been Ready for an hour (a finding this
    // node reports: mountlag_cert_manager_findings).
    let hour_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    node.api
        .apply_object(&json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"namespace": NAMESPACE, "name": "edge"},
            "spec": {"secretName": "edge-tls", "dnsNames": NAMES,
                     "issuerRef": {"name": "ca", "kind": "Issuer"}},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Failed",
                "lastTransitionTime": hour_ago.format(&time::format_description::well_known::Rfc3339).unwrap()}]},
        }))
        .unwrap();
    node.start_agent().unwrap();
    node.wait_ready(Duration::from_secs(15)).await.unwrap();
    node.wait_status(Duration::from_secs(15), "edge-0 in sync", |s| {
        mount_of(s, "edge-0").is_some_and(|m| m["state"] == "in_sync")
    })
    .await
    .unwrap();

    // A rotation: kubelet lags, the agent nudges it, the mount catches up, nginx is reloaded
    // and the new leaf verified.
    let v2 = ca.issue(&LeafSpec::valid_for(NAMES)).unwrap();
    node.api
        .apply_secret(&tls_secret(NAMESPACE, "edge-tls", &v2))
        .unwrap();
    let verified = format!(
        "mountlag_reloads_total{{namespace=\"{NAMESPACE}\",pod=\"edge-0\",result=\"verified\"}}"
    );
    wait_scrape(
        &node,
        "the rotation nudged, on disk, reloaded, verified",
        |m| {
            value(m, &verified) >= 1.0
                && value(m, "mountlag_kubelet_nudges_total{result=\"success\"}") >= 1.0
                && value(m, "mountlag_mount_lag_seconds_count") >= 1.0
                && value(m, "mountlag_reload_duration_seconds_count") >= 1.0
                && has_sample(m, "mountlag_served_certificate_match{")
                && has_sample(m, "mountlag_events_total{")
        },
    )
    .await;
    // An API error: every new watch answered 410 Gone, then the API is healthy again.
    node.api.set_faults(Faults {
        watches_gone: true,
        ..Faults::default()
    });
    node.api.drop_watches();
    wait_scrape(&node, "an API error counted", |m| {
        has_sample(m, "mountlag_api_errors_total{")
    })
    .await;
    node.api.set_faults(Faults::default());
    let scrape = wait_scrape(&node, "every source's notAfter, the TLS hosts and a cert-manager finding", |m| {
        ["api", "disk", "served"].iter().all(|source| {
            has_sample(
                m,
                &format!(
                    "mountlag_certificate_not_after_timestamp_seconds{{namespace=\"{NAMESPACE}\",secret=\"edge-tls\",source=\"{source}\"}}"
                ),
            )
        }) && has_sample(m, "mountlag_tls_hosts{controller=\"ingress-nginx\"")
            && has_sample(m, "mountlag_cert_manager_findings{")
    })
    .await;

    if let Err(problems) = check_against_scrape(&queries, &scrape) {
        panic!(
            "{DASHBOARD} reads what the agent does not export:\n{problems}\n--- scrape ---\n{scrape}"
        );
    }
    let read: BTreeSet<String> = queries
        .iter()
        .flat_map(|q| reads(&q.expr).metrics)
        .map(|(m, _)| m)
        .collect();
    eprintln!(
        "the dashboard reads {} metrics, all in the scrape: {read:?}",
        read.len()
    );
}
