//! The documentation agrees with the code and the manifests: every metric name, Event reason,
//! config key, `mountlag` flag, repository path, relative link and namespace that README.md and
//! docs/ mention is checked against what the agent registers, what the config loader accepts,
//! what the CLI parses and what is in the repository.
//!
//! The checks are static (no agent runs): metric names must be registered in the agent's source
//! (`tests/tests/health.rs` compares a live scrape with the alert rules), Event reasons must be
//! in the agent's Event vocabulary, config keys must be accepted by `Config::from_yaml`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    mountlag_testbed::repo::root()
}

/// README.md, deploy/README.md and every Markdown file under docs/, with their text.
fn documents() -> Vec<(PathBuf, String)> {
    let mut files = vec![repo().join("README.md"), repo().join("deploy/README.md")];
    let mut dirs = vec![repo().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// The spans between backticks on each line (inline code), with the line number.
fn inline_code(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let mut parts = line.split('`');
        parts.next();
        while let (Some(code), Some(_)) = (parts.next(), parts.next()) {
            out.push((n + 1, code));
        }
    }
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

#[test]
fn every_metric_the_docs_name_is_registered_by_the_agent() {
    let source = mountlag_testbed::repo::agent_source();
    let mut missing = Vec::new();
    for (path, text) in documents() {
        let names: BTreeSet<&str> = words(&text)
            // `mountlag_testbed` is the test crate, not a metric.
            .filter(|w| {
                w.len() > "mountlag_".len()
                    && w.starts_with("mountlag_")
                    && *w != "mountlag_testbed"
            })
            .collect();
        for name in names {
            // prometheus-client registers counters without `_total`, info metrics without
            // `_info` and metrics with a unit without it (`_seconds`); histogram series add
            // `_bucket`, `_sum`, `_count`.
            let registered = [name]
                .into_iter()
                .chain(
                    ["_total", "_info", "_bucket", "_sum", "_count", "_seconds"]
                        .iter()
                        .filter_map(|s| name.strip_suffix(s)),
                )
                .any(|base| source.contains(&format!("\"{base}\"")));
            if !registered {
                missing.push(format!("{}: {name}", relative(&path)));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics named in the docs but not registered:\n{}",
        missing.join("\n")
    );
}

/// The reasons listed in docs/operations.md's Events table (rows `` | `Reason` | Normal|Warning ``).
fn events_table() -> Vec<String> {
    let operations = std::fs::read_to_string(repo().join("docs/operations.md")).unwrap();
    operations
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .filter(|(_, rest)| rest.starts_with(" | Normal") || rest.starts_with(" | Warning"))
        .map(|(reason, _)| reason.to_owned())
        .collect()
}

#[test]
fn every_event_reason_in_the_operations_table_is_one_the_agent_publishes() {
    let source = mountlag_testbed::repo::agent_source();
    let reasons = events_table();
    assert!(
        reasons.len() >= 10,
        "the Events table lists the reasons: {reasons:?}"
    );
    for reason in reasons {
        assert!(
            source.contains(&format!("\"{reason}\"")),
            "docs/operations.md lists Event reason {reason}, which the agent never publishes"
        );
    }
}

#[test]
fn every_config_key_in_the_reference_is_accepted_by_the_loader() {
    let reference = std::fs::read_to_string(repo().join("docs/configuration.md")).unwrap();
    let mut checked = 0;
    let mut section = "";
    let mut key_table = false;
    for line in reference.lines() {
        if line.starts_with("## ") {
            section = line;
        }
        // Only the reference tables, whose header is `| key | type | default | meaning |`.
        if line.starts_with("| key |") {
            key_table = true;
        } else if !line.starts_with('|') {
            key_table = false;
        }
        if !key_table {
            continue;
        }
        let Some((key, _)) = line.strip_prefix("| `").and_then(|l| l.split_once('`')) else {
            continue;
        };
        if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
            continue;
        }
        // A document that sets just this key: top-level keys as they are, controller keys
        // inside one otherwise valid entry. Values are wrong on purpose where the type is not
        // known: an unknown key is reported as such whatever its value, so only "unknown key"
        // means the reference names a key the loader does not have.
        let yaml = if section.contains("controllers[]") {
            let (first, rest) = key.split_once('.').unwrap_or((key, ""));
            let value = if rest.is_empty() {
                "x".to_owned()
            } else {
                format!("{{{rest}: x}}")
            };
            format!("controllers:\n  - name: a\n    selector: a=b\n    {first}: {value}\n")
        } else if section.contains("Top-level keys") {
            let (first, rest) = key.split_once('.').unwrap_or((key, ""));
            if rest.is_empty() {
                format!("{first}: x\n")
            } else {
                format!("{first}: {{{rest}: x}}\n")
            }
        } else {
            continue;
        };
        checked += 1;
        if let Err(errors) = mountlag::config::Config::from_yaml(&yaml, "doc.yaml") {
            let text = errors.to_string();
            assert!(
                !text.contains("unknown key"),
                "docs/configuration.md documents `{key}`, which the loader does not know:\n{yaml}\n{text}"
            );
        }
    }
    assert!(checked >= 15, "checked {checked} keys");
}

#[test]
fn every_mountlag_flag_in_the_docs_is_one_the_cli_parses() {
    let cli = std::fs::read_to_string(repo().join("agent/src/cmd/mod.rs")).unwrap();
    let other_tools = [
        "kubectl",
        "controller-runtime",
        "kube-proxy",
        "watch-events",
        "cargo",
        "kustomize",
        "skopeo",
        "podman",
        "promtool",
        "apiserver",
        "curl",
        "testbed",
        "kubelet",
        "docker",
        // Traefik's own flags (--providers.file.*, --configFile), named where the traefik
        // profile's proof is explained.
        "traefik",
        "Traefik",
        // The sidecar the HTTP reload bench compares with (docs/benchmarks.md).
        "configmap-reload v0.2.1",
    ];
    let mut missing = Vec::new();
    let mut checked = 0;
    for (path, text) in documents() {
        for (n, line) in text.lines().enumerate() {
            // Command lines of mountlag itself, and flags quoted on a line that names no other
            // tool (kubectl, cargo, kustomize, ...).
            let mut candidates: Vec<&str> = Vec::new();
            if let Some(start) = line.find("mountlag ") {
                let command = &line[start..];
                if ["agent", "inspect", "status", "check-config", "lint"]
                    .iter()
                    .any(|c| command.starts_with(&format!("mountlag {c}")))
                {
                    candidates.push(command.split(['`', '#', '|']).next().unwrap_or_default());
                }
            }
            if !other_tools.iter().any(|t| line.contains(t)) {
                candidates.extend(
                    line.split('`')
                        .skip(1)
                        .step_by(2)
                        .filter(|code| code.starts_with("--")),
                );
            }
            for flag in candidates
                .iter()
                .flat_map(|c| c.split_whitespace())
                .filter_map(|w| w.strip_prefix("--"))
            {
                let flag = flag.split(['=', ']', ')', ',']).next().unwrap_or_default();
                if flag.is_empty() || ["help", "version"].contains(&flag) {
                    continue;
                }
                checked += 1;
                let field = flag.replace('-', "_");
                if !cli.contains(&format!(" {field}:")) && !cli.contains(&format!("\"{flag}\"")) {
                    missing.push(format!("{}:{}: --{flag}", relative(&path), n + 1));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "flags in the docs that the CLI does not have:\n{}",
        missing.join("\n")
    );
    assert!(checked >= 10, "only {checked} flags found in the docs");
}

#[test]
fn every_repository_path_and_relative_link_in_the_docs_exists() {
    let mut missing = Vec::new();
    let mut checked = 0;
    for (path, text) in documents() {
        let here = path.parent().unwrap().to_path_buf();
        for (line, code) in inline_code(&text) {
            let first = code.split_whitespace().next().unwrap_or_default();
            if !["deploy/", "docs/", "agent/", "tests/"]
                .iter()
                .any(|p| first.starts_with(p))
                || first.contains(['<', '*', '{', '$', '…'])
            {
                continue;
            }
            let target = first.trim_end_matches([':', ',', '.', ')']);
            let target = target.split_once(':').map_or(target, |(p, _)| p);
            checked += 1;
            if !repo().join(target).exists() {
                missing.push(format!("{}:{line}: {target}", relative(&path)));
            }
        }
        // Markdown links to files of the repository: `](relative/path#anchor)`.
        for (n, l) in text.lines().enumerate() {
            for part in l.split("](").skip(1) {
                let Some((target, _)) = part.split_once(')') else {
                    continue;
                };
                if target.contains("://")
                    || target.starts_with('#')
                    || target.starts_with("mailto:")
                {
                    continue;
                }
                let file = target.split('#').next().unwrap_or_default();
                checked += 1;
                if !file.is_empty() && !here.join(file).exists() {
                    missing.push(format!("{}:{}: link {target}", relative(&path), n + 1));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "paths in the docs that do not exist:\n{}",
        missing.join("\n")
    );
    assert!(
        checked >= 50,
        "only {checked} paths and links found in the docs"
    );
}

#[test]
fn the_docs_name_the_agents_namespace_as_the_manifests_do() {
    let namespace = std::fs::read_to_string(repo().join("deploy/base/namespace.yaml")).unwrap();
    assert!(namespace.contains("name: mountlag-system"), "{namespace}");
    let mut wrong = Vec::new();
    for (path, text) in documents() {
        for (n, line) in text.lines().enumerate() {
            for flag in ["-n ", "--namespace ", "--namespace="] {
                for part in line.split(flag).skip(1) {
                    let ns = part
                        .split(|c: char| c.is_whitespace() || c == '`')
                        .next()
                        .unwrap_or_default();
                    if ns.starts_with("mountlag") && ns != "mountlag-system" {
                        wrong.push(format!("{}:{}: {ns}", relative(&path), n + 1));
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the agent's namespace is mountlag-system:\n{}",
        wrong.join("\n")
    );
}

/// The reasons of the agent's one Event vocabulary (`EventReason`), read from its `as_str`
/// table in the core's source.
fn published_event_reasons() -> BTreeSet<String> {
    let mut reasons = BTreeSet::new();
    for (file, prefix) in [("core/src/events.rs", "EventReason::")] {
        let source = std::fs::read_to_string(repo().join(file)).unwrap();
        for line in source.lines().map(str::trim) {
            if let Some((variant, label)) = line
                .strip_prefix(prefix)
                .and_then(|l| l.split_once(" => \""))
            {
                let label = label.trim_end_matches("\",");
                assert_eq!(variant, label, "{file}: {line}");
                reasons.insert(label.to_owned());
            }
        }
    }
    reasons
}

/// Every Event reason the agent can publish has a row in docs/operations.md's Events table, and
/// every reason any document names as an Event (`` `X` Event ``, ``Event `X` ``) is one of them.
#[test]
fn every_published_event_reason_is_documented_and_every_documented_one_is_published() {
    let published = published_event_reasons();
    assert!(published.len() >= 10, "{published:?}");
    let table: BTreeSet<String> = events_table().into_iter().collect();
    let undocumented: Vec<_> = published.difference(&table).collect();
    assert!(
        undocumented.is_empty(),
        "published but not in docs/operations.md's Events table: {undocumented:?}"
    );

    let mut unknown = Vec::new();
    let mut mentioned = 0;
    for (path, text) in documents() {
        for (n, line) in text.lines().enumerate() {
            let parts: Vec<&str> = line.split('`').collect();
            // Odd indices are inside backticks.
            for i in (1..parts.len().saturating_sub(1)).step_by(2) {
                let token = parts[i];
                let before = parts[i - 1].trim_end();
                let after = parts[i + 1].trim_start();
                let names_an_event = before.ends_with("Event")
                    || before.ends_with("Events")
                    || after.starts_with("Event")
                    || after.starts_with("Warning Event");
                let looks_like_a_reason = token.len() > 3
                    && token.starts_with(|c: char| c.is_ascii_uppercase())
                    && token.chars().all(|c| c.is_ascii_alphanumeric());
                if names_an_event && looks_like_a_reason {
                    mentioned += 1;
                    if !published.contains(token) {
                        unknown.push(format!("{}:{}: {token}", relative(&path), n + 1));
                    }
                }
            }
        }
    }
    assert!(mentioned >= 5, "found only {mentioned} Event mentions");
    assert!(
        unknown.is_empty(),
        "documents name Events the agent never publishes:\n{}",
        unknown.join("\n")
    );
}
