//! Tests of [`super`].

#![allow(clippy::unwrap_used)]

use super::table::*;
use super::*;
use serde_json::json;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2025-06-01 12:00:00 UTC);

/// Every state the agent reports today, those the reload issue adds, and one this client
/// has never heard of.
const STATES: [&str; 13] = [
    "unknown",
    "in_sync",
    "pending",
    "nudged",
    "stuck",
    "secret_missing",
    "never_updates",
    "unreadable",
    "reloading",
    "reload_unverified",
    "invalid_material",
    "served_mismatch",
    "some_future_state",
];

fn mount(pod: &str, state: &str) -> Value {
    json!({
        "namespace": "ingress",
        "pod": pod,
        "podUid": "uid-1",
        "controller": "edge",
        "containers": ["nginx"],
        "volume": "tls",
        "path": "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~secret/tls",
        "secrets": [{"name": "edge-tls", "resourceVersion": "42"}],
        "state": state,
        "lagSeconds": null,
        "diskGeneration": "..2025_06_01_11_59_00.123"
    })
}

fn status(mounts: Vec<Value>) -> Value {
    json!({"node": "node-a", "ready": true, "waitingFor": [], "mounts": mounts})
}

#[test]
fn a_probe_only_agent_says_that_disk_is_not_checked() {
    let mut doc = status(vec![mount("edge-0", "unchecked")]);
    doc["disk"] = json!({"checked": false, "kubeletRoot": "/var/lib/kubelet",
                             "reason": "no kubelet pods directory at /var/lib/kubelet/pods"});
    let text = render(&doc, NOW, true);
    assert!(
        text.contains("disk not checked: no kubelet pods directory at /var/lib/kubelet/pods"),
        "{text}"
    );
    // Not a problem to flag: the state is printed without a colour, and the exit code is 0.
    let row = text.lines().find(|l| l.contains("edge-0")).unwrap();
    assert!(row.contains(" unchecked "), "{row}");
    assert!(!row.contains("\u{1b}[33munchecked"), "{row:?}");
    assert_eq!(exit_code(&doc), 0);
    doc["disk"] = json!({"checked": true, "kubeletRoot": "/var/lib/kubelet"});
    assert!(!render(&doc, NOW, false).contains("disk not checked"));
}

#[test]
fn strings_from_the_endpoint_reach_the_terminal_escaped_and_cut() {
    let mut m = mount("edge-\u{1b}[2J\u{202e}0", "\u{1b}]0;owned\u{7}");
    m["volume"] = json!("tls\r\nforged line");
    m["secrets"] = json!([{"name": "x".repeat(100_000), "resourceVersion": "1\u{9b}2J"}]);
    m["lastReload"] = json!({"result": "\u{1b}[8mhidden"});
    let mut doc = status(vec![m]);
    doc["node"] = json!("node\u{1b}[31m");
    doc["ready"] = json!(false);
    doc["waitingFor"] = json!(["\u{1b}[1Asecret x"]);
    let text = render(&doc, NOW, false);
    let raw: Vec<char> = text
        .chars()
        .filter(|c| *c != '\n' && crate::text::needs_escape(*c))
        .collect();
    assert!(raw.is_empty(), "raw {raw:?} in:\n{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    for shown in [
        "node\\u{1b}[31m",
        "\\u{1b}[1Asecret x",
        "ingress/edge-\\u{1b}[2J\\u{202e}0",
        "tls\\r\\nforged line",
        "\\u{1b}]0;owned\\u{7}",
        "\\u{1b}[8mhidden",
    ] {
        assert!(text.contains(shown), "{shown}: {text}");
    }
    assert!(text.len() < 4 * MAX_CELL_BYTES, "{} bytes", text.len());
}

#[test]
fn json_output_drops_carriage_returns_between_tokens_and_stays_the_same_document() {
    let raw = b"{\"node\": \"n\",\r\"mounts\": [{\"state\": \"stuck\"}\r\n]}\r".to_vec();
    let value: Value = serde_json::from_slice(&raw).unwrap();
    let text = Fetched {
        raw,
        value: value.clone(),
    }
    .raw_text();
    assert!(!text.contains('\r'), "{text:?}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
}

#[test]
fn json_output_is_the_same_document_without_raw_c1_or_bidi_characters() {
    let doc =
        json!({"node": "n\u{9b}2J", "mounts": [{"pod": "a\u{202e}b\u{2028}", "state": "x\u{7f}"}]});
    let raw = serde_json::to_vec_pretty(&doc).unwrap();
    assert!(
        String::from_utf8_lossy(&raw).contains('\u{9b}'),
        "serde leaves C1 raw"
    );
    let fetched = Fetched {
        raw,
        value: doc.clone(),
    };
    let text = fetched.raw_text();
    assert!(
        !text
            .chars()
            .any(|c| c != '\n' && crate::text::needs_escape(c)),
        "{text:?}"
    );
    assert!(
        text.contains("n\\u009b2J") && text.contains("a\\u202eb\\u2028"),
        "{text}"
    );
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), doc);
}

#[test]
fn why_a_reload_was_withheld_is_printed_once_per_pod() {
    let mut a = mount("traefik-0", "in_sync");
    a["lastReload"] = json!("signal_withheld");
    a["lastReloadMessage"] =
        json!("reload signal withheld, verifying only: pid 7 (traefik) is not Traefik v3\u{1b}[2J");
    let mut b = a.clone();
    b["volume"] = json!("tls-2");
    let mut ok = mount("nginx-0", "in_sync");
    ok["lastReload"] = json!("verified");
    ok["lastReloadMessage"] = json!("now serving ab12");
    let plain = mount("plain-0", "in_sync");
    let notes = reload_notes(&[&a, &b, &ok, &plain]);
    assert_eq!(
        notes,
        "ingress/traefik-0: reload signal_withheld: reload signal withheld, verifying only: pid 7 (traefik) is not Traefik v3\\u{1b}[2J\n"
    );
}

#[test]
fn the_table_renders_every_state_with_one_row_each() {
    let all: Vec<Value> = STATES
        .iter()
        .enumerate()
        .map(|(i, s)| mount(&format!("edge-{i:02}"), s))
        .collect();
    let text = render(&status(all), NOW, false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 + STATES.len(), "{text}");
    assert!(
        lines[0].starts_with("node node-a: ready, 13 mounts ("),
        "{text}"
    );
    assert!(lines[1].starts_with("POD"), "{text}");
    for header in HEADERS {
        assert!(lines[1].contains(header), "{header}: {text}");
    }
    for (i, state) in STATES.iter().enumerate() {
        let row = lines[2 + i];
        assert!(row.starts_with(&format!("ingress/edge-{i:02} ")), "{row}");
        assert!(row.contains(&format!("  {state}  ")), "{state}: {row}");
        assert!(row.contains("edge-tls@42"), "{row}");
    }
    assert!(!text.contains('\x1b'), "no colour when not asked: {text}");
    // Columns line up: every STATE cell starts where the header's does.
    let column = lines[1].find("STATE").unwrap();
    for (i, state) in STATES.iter().enumerate() {
        assert_eq!(&lines[2 + i][column..column + state.len()], *state);
    }
}

#[test]
fn fields_of_newer_agents_fill_their_columns() {
    let mut m = mount("edge-0", "in_sync");
    m["lagSeconds"] = json!(1.25);
    m["served"] = json!({"fingerprint": "ab:cd", "match": true});
    m["certificate"] = json!({"notAfter": "2025-07-11T12:00:00Z", "fingerprint": "ab:cd"});
    m["lastReload"] = json!({"at": "2025-06-01T11:57:00Z", "result": "verified"});
    let mut n = mount("edge-1", "reload_unverified");
    n["served"] = json!({"match": false});
    n["certificate"] = json!({"notAfter": 1_748_779_200});
    n["lastReload"] = json!({"time": 1_748_779_170, "outcome": "unverified"});
    let text = render(&status(vec![m, n]), NOW, false);
    let rows: Vec<&str> = text.lines().skip(2).collect();
    for cell in ["1.2s", "match", "40d", "verified 3m00s ago"] {
        assert!(rows[0].contains(cell), "{cell}: {}", rows[0]);
    }
    for cell in ["MISMATCH", "0d", "unverified 30.0s ago"] {
        assert!(rows[1].contains(cell), "{cell}: {}", rows[1]);
    }
}

#[test]
fn the_agents_current_shapes_are_read() {
    let mut m = mount("edge-0", "in_sync");
    m["certificate"] = json!({"fingerprintSha256": "ab", "notAfter": "2025-06-11T12:00:00Z",
                                  "daysToExpiry": 10});
    m["served"] = json!({"fingerprintSha256": null, "match": null});
    m["lastReload"] = json!("verified");
    let mut n = mount("edge-1", "in_sync");
    n["certificate"] = json!({"daysToExpiry": 3});
    n["lastReload"] = json!("withheld");
    let text = render(&status(vec![m, n]), NOW, true);
    let rows: Vec<&str> = text.lines().skip(2).collect();
    assert!(rows[0].contains("\x1b[33m10d\x1b[0m"), "{}", rows[0]);
    assert!(rows[0].contains("\x1b[32mverified\x1b[0m"), "{}", rows[0]);
    assert!(
        rows[0].contains(" - "),
        "served not probed yet: {}",
        rows[0]
    );
    assert!(rows[1].contains("\x1b[1;31m3d\x1b[0m"), "{}", rows[1]);
    assert!(rows[1].contains("\x1b[1;31mwithheld\x1b[0m"), "{}", rows[1]);
}

#[test]
fn absent_fields_show_a_dash_and_an_expired_leaf_says_so() {
    let mut m = mount("edge-0", "in_sync");
    m["secrets"] = json!([]);
    m["notAfter"] = json!("2025-05-01T00:00:00Z");
    let text = render(&status(vec![m]), NOW, false);
    let row = text.lines().nth(2).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "ingress/edge-0",
            "tls",
            "-",
            "in_sync",
            "-",
            "-",
            "EXPIRED",
            "-"
        ]
    );
}

#[test]
fn colour_marks_states_but_keeps_the_columns() {
    let text = render(
        &status(vec![mount("a", "in_sync"), mount("b", "stuck")]),
        NOW,
        true,
    );
    assert!(text.contains("\x1b[32min_sync\x1b[0m"), "{text}");
    assert!(text.contains("\x1b[1;31mstuck\x1b[0m"), "{text}");
    let plain = render(
        &status(vec![mount("a", "in_sync"), mount("b", "stuck")]),
        NOW,
        false,
    );
    let strip = |s: &str| {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    assert_eq!(strip(&text), plain);
}

#[test]
fn an_unready_agent_says_what_it_waits_for() {
    let doc = json!({"node": "node-a", "ready": false,
                         "waitingFor": ["pods not listed yet"], "mounts": []});
    assert_eq!(
        render(&doc, NOW, false),
        "node node-a: NOT READY (pods not listed yet), 0 mounts\n"
    );
}

/// Exit status per mount state, written out from docs/operations.md ("Exit status": 1 when a
/// mount is `stuck` or `unreadable`) and `mountlag status --help` (1 also for the reload states
/// `reload_unverified` and `invalid_material`); 0 for every other state, one this client has
/// never heard of included. Independent of the client's own constants on purpose.
const DOCUMENTED_EXIT: [(&str, u8); 14] = [
    ("unknown", 0),
    ("in_sync", 0),
    ("pending", 0),
    ("nudged", 0),
    ("stuck", 1),
    ("secret_missing", 0),
    ("never_updates", 0),
    ("unreadable", 1),
    ("unchecked", 0),
    ("reloading", 0),
    ("reload_unverified", 1),
    ("invalid_material", 1),
    // Not a mount state the agent reports: a mismatch is `served.match: false` (see below).
    ("served_mismatch", 0),
    ("some_future_state", 0),
];

#[test]
fn exit_codes_follow_the_states() {
    assert_eq!(exit_code(&status(vec![])), 0);
    for state in STATES {
        assert!(
            DOCUMENTED_EXIT.iter().any(|(s, _)| *s == state),
            "{state} has no documented exit status here"
        );
    }
    for (state, expected) in DOCUMENTED_EXIT {
        let alone = exit_code(&status(vec![mount("b", state)]));
        assert_eq!(alone, expected, "{state} alone");
        let beside_in_sync = exit_code(&status(vec![mount("a", "in_sync"), mount("b", state)]));
        assert_eq!(beside_in_sync, expected, "{state} beside in_sync");
        // One mount that needs attention decides, wherever it is in the list.
        let beside_stuck = exit_code(&status(vec![mount("b", state), mount("c", "stuck")]));
        assert_eq!(beside_stuck, 1, "{state} beside stuck");
    }
}

#[test]
fn a_reload_not_proven_or_a_served_mismatch_needs_attention_whatever_the_mount_state() {
    let with = |field: &str, value: Value| {
        let mut m = mount("b", "in_sync");
        m[field] = value;
        exit_code(&status(vec![mount("a", "in_sync"), m]))
    };
    for outcome in ["unverified", "withheld", "failed"] {
        assert_eq!(with("lastReload", json!(outcome)), 1, "{outcome}");
    }
    for outcome in ["verified", "signal_withheld"] {
        assert_eq!(with("lastReload", json!(outcome)), 0, "{outcome}");
    }
    assert_eq!(
        with("served", json!({"fingerprintSha256": "ab", "match": false})),
        1
    );
    assert_eq!(
        with("served", json!({"fingerprintSha256": "ab", "match": true})),
        0
    );
    assert_eq!(
        with("served", json!({"fingerprintSha256": null, "match": null})),
        0
    );
    // A certificate within expiry.warnBefore of its notAfter, as the agent judged it.
    let cert = |expiring: bool| {
        json!({"fingerprintSha256": "ab", "notAfter": "2030-01-01T00:00:00Z",
               "daysToExpiry": 9, "expiring": expiring})
    };
    assert_eq!(with("certificate", cert(true)), 1);
    assert_eq!(with("certificate", cert(false)), 0);
}

#[test]
fn durations_are_short() {
    assert_eq!(human_duration(0.0123), "12ms");
    assert_eq!(human_duration(4.25), "4.2s");
    assert_eq!(human_duration(185.0), "3m05s");
    assert_eq!(human_duration(7800.0), "2h10m");
    assert_eq!(human_duration(3.0 * 86400.0 + 4.0 * 3600.0), "3d4h");
    assert_eq!(human_duration(-1.0), "-");
}

#[test]
fn the_default_endpoints_parse_and_end_with_the_listen_default() {
    let parsed: Vec<String> = DEFAULT_ENDPOINTS
        .iter()
        .map(|e| Endpoint::parse(e).unwrap().authority().to_owned())
        .collect();
    assert_eq!(parsed, ["127.0.0.1:9978", "127.0.0.1:9977"]);
}

async fn serve_status_on(
    serve_status: bool,
) -> (Endpoint, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let (_tx, rx) =
        tokio::sync::watch::channel(std::sync::Arc::new(crate::admin::StatusSnapshot {
            node: "node-a".into(),
            ..Default::default()
        }));
    let server = crate::admin::AdminServer::new(
        std::sync::Arc::new(prometheus_client::registry::Registry::default()),
        rx,
    )
    .serve_status(serve_status);
    let task = tokio::spawn(server.serve(listener, std::future::pending()));
    (endpoint, task)
}

fn nobody_listens() -> Endpoint {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = Endpoint::parse(&format!("http://{}", listener.local_addr().unwrap()));
    drop(listener);
    endpoint.unwrap()
}

#[tokio::test]
async fn the_next_endpoint_is_asked_only_when_nobody_listens_on_one() {
    let (agent, agent_task) = serve_status_on(true).await;
    let fetched = fetch(&[nobody_listens(), agent.clone()]).await.unwrap();
    assert_eq!(fetched.value["node"], "node-a");

    // A public listener that leaves /status to the node-local one answers 404: reported,
    // not skipped (it is an agent, the user should point --endpoint elsewhere).
    let (public, public_task) = serve_status_on(false).await;
    let err = fetch(&[public, agent]).await.unwrap_err();
    assert!(
        err.contains("404") && err.contains("--status-listen"),
        "{err}"
    );

    let (first, second) = (nobody_listens(), nobody_listens());
    let err = fetch(&[first.clone(), second.clone()]).await.unwrap_err();
    assert!(
        err.contains(&format!(
            "cannot reach the agent at {} or {}",
            first.authority(),
            second.authority()
        )),
        "{err}"
    );
    agent_task.abort();
    public_task.abort();
}
