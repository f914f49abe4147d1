//! Property tests of what `mountlag status` reads from the network: the endpoint URL it is
//! given and the `/status` document (or anything else) that answers.
//!
//! `PROPTEST_CASES=N` runs N cases of every property instead of the bounded default.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use crate::proptest_cases::config;
use proptest::prelude::*;
use time::macros::datetime;

use super::table::*;
use super::*;
use crate::text::needs_escape;

const NOW: OffsetDateTime = datetime!(2025-06-01 12:00:00 UTC);

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "in_sync",
            "stuck",
            "unreadable",
            "ok",
            "failed",
            "verified",
            "withheld",
            "",
            "2025-06-01T11:00:00Z",
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "2025-13-45T99:99:99Z",
        ])
        .prop_map(String::from),
        "[a-z0-9/._-]{0,16}",
        any::<String>(),
        "[\u{0}-\u{1f}\u{7f}-\u{9f}\u{202a}-\u{202e}\u{2028}\u{feff}a]{0,12}",
        (0usize..3000).prop_map(|n| "\u{1b}[2J".repeat(n)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            any::<f64>(),
            Just(f64::MAX),
            Just(-1e300),
            Just(1e18),
            Just(-0.0)
        ]
        .prop_filter("finite", |f| f.is_finite())
        .prop_map(Value::from),
        hostile_string().prop_map(Value::from),
    ]
}

/// Any JSON, keys drawn mostly from those the table reads.
fn json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => prop::sample::select(vec![
            "namespace", "pod", "volume", "state", "lagSeconds", "secrets", "secret", "name",
            "resourceVersion", "served", "servedMatch", "match", "certificate", "notAfter",
            "expiring", "daysToExpiry", "lastReload", "result", "outcome", "at", "time",
            "finishedAt", "lastReloadMessage", "controller", "host", "from", "message",
        ])
        .prop_map(String::from),
        1 => hostile_string(),
    ];
    leaf().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A status document: the top-level fields the table reads, any mounts and hosts.
fn document() -> impl Strategy<Value = Value> {
    (
        leaf(),
        leaf(),
        prop::collection::vec(hostile_string(), 0..3),
        prop::collection::vec(json(), 0..6),
        prop::option::of(prop::collection::vec(json(), 0..4)),
        prop::option::of(json()),
    )
        .prop_map(|(node, ready, waiting, mounts, hosts, disk)| {
            let mut doc = serde_json::json!({
                "node": node, "ready": ready, "waitingFor": waiting, "mounts": mounts,
            });
            if let Some(hosts) = hosts {
                doc["hosts"] = Value::Array(hosts);
            }
            if let Some(disk) = disk {
                doc["disk"] = disk;
            }
            doc
        })
}

/// The colours the table paints with, and nothing else, removed.
fn without_colours(text: &str) -> String {
    let mut text = text.to_string();
    for sgr in ["\u{1b}[32m", "\u{1b}[33m", "\u{1b}[1;31m", "\u{1b}[0m"] {
        text = text.replace(sgr, "");
    }
    text
}

proptest! {
    #![proptest_config(config(256))]

    /// Any document: the table is written without a raw control character (colours aside),
    /// each line bounded, one row per mount; the exit status is 0 or 1, and 1 whenever a mount
    /// is in a state that needs a human.
    #[test]
    fn any_status_document_renders_terminal_safe(doc in document(), color in any::<bool>()) {
        let text = render(&doc, NOW, color);
        let plain = if color { without_colours(&text) } else { text.clone() };
        let raw: Vec<char> = plain.chars().filter(|c| *c != '\n' && needs_escape(*c)).collect();
        prop_assert!(raw.is_empty(), "raw {:?} in:\n{}", raw, plain);
        let mounts = doc["mounts"].as_array().unwrap();
        // Header and one row per mount, after the summary line.
        if !mounts.is_empty() {
            prop_assert!(plain.lines().count() > mounts.len() + 1, "{}", plain);
        }
        // Cells are cut at 512 bytes; a note quotes at most a 4 KiB message.
        for line in plain.lines() {
            prop_assert!(line.len() <= 8 * (512 + 2) + 4096 + 64, "{} bytes", line.len());
        }
        let code = exit_code(&doc);
        prop_assert!(code <= 1);
        if mounts.iter().any(|m| NEEDS_ATTENTION.contains(&m["state"].as_str().unwrap_or(""))) {
            prop_assert_eq!(code, EXIT_ATTENTION);
        }
    }

    /// Any answer with status 200: a status only when it is a JSON object with a `mounts` list;
    /// `--json` prints it as the same JSON value with no character a terminal would act on
    /// other than blanks between tokens.
    #[test]
    fn any_answer_is_a_status_or_a_clear_error(
        body in prop_oneof![
            document().prop_map(|d| serde_json::to_vec(&d).unwrap()),
            document().prop_map(|d| serde_json::to_vec_pretty(&d).unwrap()),
            json().prop_map(|d| serde_json::to_vec(&d).unwrap()),
            prop::collection::vec(any::<u8>(), 0..200),
        ],
        code in prop_oneof![Just(200u16), 100u16..600],
    ) {
        let endpoint = Endpoint::parse("127.0.0.1:9977").unwrap();
        let code = hyper::StatusCode::from_u16(code).unwrap();
        let value: Option<Value> = serde_json::from_slice(&body).ok();
        match parse_status(endpoint.authority(), code, &body) {
            Ok(fetched) => {
                prop_assert!(code.is_success());
                let value = value.unwrap();
                prop_assert!(value["mounts"].is_array());
                let text = fetched.raw_text();
                prop_assert!(
                    !text.chars().any(|c| needs_escape(c) && !matches!(c, '\n' | '\r' | '\t')),
                    "{:?}", text
                );
                prop_assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
            }
            Err(message) => {
                prop_assert!(
                    !code.is_success()
                        || value.is_none_or(|v| !v.is_object() || !v["mounts"].is_array())
                );
                prop_assert!(message.len() <= 600, "{} bytes: {}", message.len(), message);
                prop_assert!(!message.chars().any(needs_escape), "{:?}", message);
            }
        }
    }

    /// Any endpoint text: an endpoint with a host and a port, or an error naming it.
    #[test]
    fn any_endpoint_text_is_an_endpoint_or_an_error(
        text in prop_oneof![
            any::<String>(),
            "(http://|https://|ftp://|)[a-z0-9.:@\\[\\]/%-]{0,30}",
        ],
    ) {
        match Endpoint::parse(&text) {
            Ok(endpoint) => {
                let (host, port) = endpoint.authority().rsplit_once(':').unwrap();
                prop_assert!(!host.is_empty());
                prop_assert!(port.parse::<u16>().is_ok(), "{}", endpoint.authority());
            }
            Err(err) => prop_assert!(err.to_string().starts_with("invalid endpoint")),
        }
    }
}

#[test]
fn a_status_nested_a_hundred_thousand_deep_is_refused_without_deep_recursion() {
    let endpoint = Endpoint::parse("127.0.0.1:9977").unwrap();
    let started = Instant::now();
    for body in [
        format!("{{\"mounts\":{}", "[".repeat(100_000)),
        format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000)),
    ] {
        let err =
            parse_status(endpoint.authority(), hyper::StatusCode::OK, body.as_bytes()).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}
