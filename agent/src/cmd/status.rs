//! `mountlag status [--endpoint URL] [--json] [--watch]`: reads a running agent's `/status`
//! and prints it as a table an operator reads at a glance, or unchanged as JSON.
//!
//! Exit status (also with `--json`): 0 when every mount is fine, 1 when any mount is in a state
//! that needs a human ([`NEEDS_ATTENTION`]), 2 when the endpoint cannot be reached or does not
//! answer a status document. With `--watch` the last refresh's status is returned on Ctrl-C.
//!
//! Rendering is tolerant: the document is read as untyped JSON, fields that this version does
//! not know are ignored and columns whose fields are absent show `-`, so an older client reads
//! a newer agent (and the other way round).

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::status_client::{ClientError, Endpoint};
use crate::text::{untrusted, untrusted_capped};

/// Where `mountlag status` looks without `--endpoint`, in this order: the node-local
/// `--status-listen` address of the shipped DaemonSet (there `/status` is not served on
/// `--listen`), then the default `--listen` port (an agent started without `--status-listen`).
/// Inside the agent's pod (`kubectl exec`) the first answers.
pub const DEFAULT_ENDPOINTS: [&str; 2] = [DEFAULT_STATUS_ENDPOINT, DEFAULT_ENDPOINT];
/// The shipped DaemonSet's `--status-listen`, as an endpoint.
pub const DEFAULT_STATUS_ENDPOINT: &str = "http://127.0.0.1:9978";
/// The default `--listen` port, as an endpoint.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9977";
/// Exit status when a mount needs attention.
pub const EXIT_ATTENTION: u8 = 1;
/// Exit status when the endpoint cannot be reached or answers something else than a status.
pub const EXIT_UNREACHABLE: u8 = 2;
/// Mount states that make `mountlag status` exit 1: stuck, unverified or invalid.
pub const NEEDS_ATTENTION: [&str; 4] = [
    "stuck",
    "reload_unverified",
    "invalid_material",
    "unreadable",
];
/// States shown in green.
const HEALTHY: [&str; 1] = ["in_sync"];
/// Longest table cell: every string of the document came over the network and is escaped and
/// cut to this (a namespace/pod pair is at most 317 bytes).
const MAX_CELL_BYTES: usize = 512;
/// How much of a failed answer is quoted.
const MAX_QUOTED_BYTES: usize = 200;
/// Whole exchange with the agent.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the subcommand against `endpoint`, or without one against [`DEFAULT_ENDPOINTS`];
/// returns the exit status.
pub fn run(endpoint: Option<&str>, json: bool, watch: bool) -> u8 {
    let endpoints = match endpoint.map_or_else(
        || {
            DEFAULT_ENDPOINTS
                .iter()
                .map(|e| Endpoint::parse(e))
                .collect()
        },
        |endpoint| Endpoint::parse(endpoint).map(|e| vec![e]),
    ) {
        Ok(endpoints) => endpoints,
        Err(err) => {
            eprintln!("mountlag status: {err}");
            return EXIT_UNREACHABLE;
        }
    };
    let endpoints = &endpoints[..];
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("mountlag status: cannot start the runtime: {err}");
            return EXIT_UNREACHABLE;
        }
    };
    let terminal = std::io::stdout().is_terminal();
    let color = terminal
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var("TERM").map_or(true, |t| t != "dumb");
    runtime.block_on(async {
        if watch {
            watch_loop(endpoints, json, terminal, color).await
        } else {
            match fetch(endpoints).await {
                Ok(fetched) => {
                    let text = if json {
                        fetched.raw_text()
                    } else {
                        render(&fetched.value, OffsetDateTime::now_utc(), color)
                    };
                    print(&text);
                    exit_code(&fetched.value)
                }
                Err(message) => {
                    eprintln!("mountlag status: {message}");
                    EXIT_UNREACHABLE
                }
            }
        }
    })
}

fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not a failure of the status query.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

async fn watch_loop(endpoints: &[Endpoint], json: bool, terminal: bool, color: bool) -> u8 {
    let shown = endpoints
        .iter()
        .map(Endpoint::authority)
        .collect::<Vec<_>>()
        .join(" or ");
    let mut last;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let now = OffsetDateTime::now_utc();
        let mut frame = String::new();
        if terminal {
            // Home + clear: redraw in place.
            frame.push_str("\x1b[H\x1b[2J");
        }
        if !json {
            frame.push_str(&format!(
                "Every 1s: mountlag status --endpoint {shown}    {}\n\n",
                now.replace_nanosecond(0)
                    .unwrap_or(now)
                    .format(&Rfc3339)
                    .unwrap_or_default()
            ));
        }
        match fetch(endpoints).await {
            Ok(fetched) => {
                last = exit_code(&fetched.value);
                if json {
                    frame.push_str(&fetched.raw_text());
                } else {
                    frame.push_str(&render(&fetched.value, now, color));
                }
            }
            Err(message) => {
                last = EXIT_UNREACHABLE;
                frame.push_str(&format!("mountlag status: {message}\n"));
            }
        }
        if !terminal && !json {
            frame.push('\n');
        }
        print(&frame);
        tokio::select! {
            _ = &mut ctrl_c => return last,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// A fetched status document: the bytes as served and their parse.
#[derive(Debug)]
struct Fetched {
    raw: Vec<u8>,
    value: Value,
}

impl Fetched {
    /// The body as served, ending with a newline. The only change: DEL, C1, bidi and separator
    /// characters, which JSON allows raw inside strings, are written as `\uXXXX` escapes, the
    /// same JSON value that a terminal cannot take as a control sequence. (Raw C0 characters
    /// other than whitespace between tokens cannot be in a document that parsed.)
    fn raw_text(&self) -> String {
        let raw = String::from_utf8_lossy(&self.raw);
        let mut text = String::with_capacity(raw.len() + 1);
        for c in raw.chars() {
            if crate::text::needs_escape(c) && !matches!(c, '\n' | '\r' | '\t') {
                // Every such character is in the Basic Multilingual Plane: one \u escape.
                text.push_str(&format!("\\u{:04x}", u32::from(c)));
            } else {
                text.push(c);
            }
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    }
}

/// The status from the first of `endpoints` that can be connected to (an agent there that
/// answers something else is an error, not a reason to try the next).
async fn fetch(endpoints: &[Endpoint]) -> Result<Fetched, String> {
    let mut refused = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        match endpoint.get("/status", REQUEST_TIMEOUT).await {
            Err(err) if try_next(&err) && i + 1 < endpoints.len() => {
                refused.push(endpoint.authority());
            }
            Err(err) => return Err(unreachable_message(endpoint, &err, &refused)),
            Ok((code, body)) => return parse_status(endpoint, code, &body),
        }
    }
    Err("mountlag status: no endpoint to ask".to_owned())
}

/// Whether a failed request means "nobody listens here" (try the next default) rather than
/// "somebody answered badly".
fn try_next(err: &ClientError) -> bool {
    matches!(err, ClientError::Connect { .. })
}

fn parse_status(
    endpoint: &Endpoint,
    code: hyper::StatusCode,
    body: &[u8],
) -> Result<Fetched, String> {
    if !code.is_success() {
        let text = String::from_utf8_lossy(body);
        return Err(format!(
            "{} answered /status with {code}: {}",
            endpoint.authority(),
            untrusted_capped(text.trim(), MAX_QUOTED_BYTES)
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        format!(
            "{} answered /status with something that is not JSON ({err}); is it a mountlag agent?",
            endpoint.authority()
        )
    })?;
    if !value.is_object() || !value["mounts"].is_array() {
        return Err(format!(
            "{} answered /status with JSON that is not a mountlag status (no \"mounts\" list)",
            endpoint.authority()
        ));
    }
    Ok(Fetched {
        raw: body.to_vec(),
        value,
    })
}

fn unreachable_message(endpoint: &Endpoint, err: &ClientError, refused: &[&str]) -> String {
    match err {
        ClientError::Connect { source, .. } => {
            let mut tried = refused.to_vec();
            tried.push(endpoint.authority());
            format!(
                "cannot reach the agent at {} ({source}); is `mountlag agent` running there \
                 (its --status-listen or --listen address)? Use --endpoint to point elsewhere",
                tried.join(" or ")
            )
        }
        other => format!("cannot read the agent's status: {other}"),
    }
}

/// 1 when any mount is in a [`NEEDS_ATTENTION`] state, 0 otherwise.
pub fn exit_code(status: &Value) -> u8 {
    let bad = mounts(status)
        .iter()
        .any(|m| NEEDS_ATTENTION.contains(&state(m)));
    if bad { EXIT_ATTENTION } else { 0 }
}

fn mounts(status: &Value) -> Vec<&Value> {
    status["mounts"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn state(mount: &Value) -> &str {
    mount["state"].as_str().unwrap_or("unknown")
}

fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key)?.as_str().filter(|s| !s.is_empty())
}

/// `secret@resourceVersion` for every Secret of the mount (`secrets` list, or one `secret`).
fn secrets_cell(mount: &Value) -> String {
    let one = |s: &Value| -> Option<String> {
        let name = s.as_str().or_else(|| str_field(s, "name"))?;
        let rv = str_field(s, "resourceVersion").unwrap_or("-");
        Some(format!("{name}@{rv}"))
    };
    let cells: Vec<String> = match (&mount["secrets"], &mount["secret"]) {
        (Value::Array(list), _) => list.iter().filter_map(one).collect(),
        (_, secret) if !secret.is_null() => one(secret).into_iter().collect(),
        _ => Vec::new(),
    };
    if cells.is_empty() {
        "-".to_string()
    } else {
        cells.join(",")
    }
}

/// Human duration: `850ms`, `4.2s`, `3m05s`, `2h10m`, `3d4h`.
fn human_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".to_string();
    }
    if seconds < 1.0 {
        return format!("{}ms", (seconds * 1000.0).round() as u64);
    }
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    let total = seconds.round() as u64;
    let (d, h, m, s) = (
        total / 86400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else {
        format!("{m}m{s:02}s")
    }
}

fn lag_cell(mount: &Value) -> String {
    mount["lagSeconds"]
        .as_f64()
        .map_or_else(|| "-".to_string(), human_duration)
}

/// Whether the served certificate matches: `served.match`, `servedMatch` or `served` (bool).
fn served_match(mount: &Value) -> Option<bool> {
    mount["served"]["match"]
        .as_bool()
        .or_else(|| mount["servedMatch"].as_bool())
        .or_else(|| mount["served"].as_bool())
}

/// A timestamp written as RFC 3339 text or as seconds since the epoch.
fn timestamp(value: &Value) -> Option<OffsetDateTime> {
    match value {
        Value::String(text) => OffsetDateTime::parse(text, &Rfc3339).ok(),
        Value::Number(n) => {
            let secs = n.as_f64()?;
            OffsetDateTime::from_unix_timestamp_nanos((secs * 1e9) as i128).ok()
        }
        _ => None,
    }
}

/// The certificate's notAfter: `certificate.notAfter`, `served.notAfter` or `notAfter`.
fn not_after(mount: &Value) -> Option<OffsetDateTime> {
    [
        &mount["certificate"]["notAfter"],
        &mount["served"]["notAfter"],
        &mount["notAfter"],
    ]
    .into_iter()
    .find_map(timestamp)
}

/// Whole days until expiry (negative once expired): from notAfter, else the agent's
/// `certificate.daysToExpiry`.
fn expiry_days(mount: &Value, now: OffsetDateTime) -> Option<i64> {
    match not_after(mount) {
        Some(not_after) => Some((not_after - now).whole_seconds().div_euclid(86400)),
        None => mount["certificate"]["daysToExpiry"].as_i64(),
    }
}

fn expiry_cell(days: Option<i64>) -> String {
    match days {
        None => "-".to_string(),
        Some(d) if d < 0 => "EXPIRED".to_string(),
        Some(d) => format!("{d}d"),
    }
}

/// `result age ago` from `lastReload` (`{result|outcome, at|time|finishedAt}`) or its text.
fn last_reload_cell(mount: &Value, now: OffsetDateTime) -> (String, Option<bool>) {
    let reload = &mount["lastReload"];
    let (result, at) = match reload {
        Value::String(text) if !text.is_empty() => (text.as_str(), None),
        Value::Object(_) => (
            ["result", "outcome"]
                .iter()
                .find_map(|k| str_field(reload, k))
                .unwrap_or("?"),
            ["at", "time", "finishedAt", "timestamp"]
                .iter()
                .find_map(|k| timestamp(&reload[*k])),
        ),
        _ => return ("-".to_string(), None),
    };
    let verdict = match result {
        "ok" | "success" | "verified" | "reloaded" => Some(true),
        "failed" | "failure" | "error" | "unverified" | "timeout" | "withheld"
        | "signal_withheld" => Some(false),
        _ => None,
    };
    let cell = match at {
        Some(at) => format!(
            "{result} {} ago",
            human_duration((now - at).as_seconds_f64().max(0.0))
        ),
        None => result.to_string(),
    };
    (cell, verdict)
}

#[derive(Clone, Copy)]
enum Tone {
    Plain,
    Good,
    Warn,
    Bad,
}

impl Tone {
    fn paint(self, text: &str, color: bool) -> String {
        let code = match self {
            Tone::Plain => return text.to_string(),
            Tone::Good => "32",
            Tone::Warn => "33",
            Tone::Bad => "1;31",
        };
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

fn state_tone(state: &str) -> Tone {
    if state == "unchecked" {
        // A probe-only install: not a problem, only less to look at.
        Tone::Plain
    } else if HEALTHY.contains(&state) {
        Tone::Good
    } else if NEEDS_ATTENTION.contains(&state) {
        Tone::Bad
    } else {
        Tone::Warn
    }
}

const HEADERS: [&str; 8] = [
    "POD",
    "VOLUME",
    "SECRET@RV",
    "STATE",
    "LAG",
    "SERVED",
    "EXPIRY",
    "LAST RELOAD",
];

/// The status as a table (plus a summary line), coloured when `color`.
pub fn render(status: &Value, now: OffsetDateTime, color: bool) -> String {
    let node = untrusted(str_field(status, "node").unwrap_or("?"));
    let mut mounts = mounts(status);
    mounts.sort_by_key(|m| {
        (
            str_field(m, "namespace").unwrap_or("").to_string(),
            str_field(m, "pod").unwrap_or("").to_string(),
            str_field(m, "volume").unwrap_or("").to_string(),
        )
    });
    let mut out = String::new();
    let readiness = if status["ready"].as_bool() == Some(true) {
        Tone::Good.paint("ready", color)
    } else {
        let waiting: Vec<String> = status["waitingFor"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|w| untrusted(w).to_string())
                    .collect()
            })
            .unwrap_or_default();
        let why = if waiting.is_empty() {
            String::new()
        } else {
            format!(" ({})", waiting.join("; "))
        };
        Tone::Warn.paint(&format!("NOT READY{why}"), color)
    };
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for m in &mounts {
        *counts.entry(state(m)).or_default() += 1;
    }
    let summary: Vec<String> = counts
        .iter()
        .map(|(s, n)| format!("{n} {}", untrusted(s)))
        .collect();
    out.push_str(&format!(
        "node {node}: {readiness}, {} mount{}{}\n",
        mounts.len(),
        if mounts.len() == 1 { "" } else { "s" },
        if summary.is_empty() {
            String::new()
        } else {
            format!(" ({})", summary.join(", "))
        }
    ));
    if status["disk"]["checked"].as_bool() == Some(false) {
        let reason = str_field(&status["disk"], "reason").unwrap_or("no kubelet root");
        out.push_str(&format!(
            "disk not checked: {}\n",
            untrusted_capped(reason, MAX_QUOTED_BYTES)
        ));
    }
    if mounts.is_empty() {
        return out;
    }
    let rows: Vec<[(String, Tone); 8]> = mounts
        .iter()
        .map(|m| {
            let pod = format!(
                "{}/{}",
                str_field(m, "namespace").unwrap_or("-"),
                str_field(m, "pod").unwrap_or("-")
            );
            let state = state(m);
            let served = match served_match(m) {
                Some(true) => ("match".to_string(), Tone::Good),
                Some(false) => ("MISMATCH".to_string(), Tone::Bad),
                None => ("-".to_string(), Tone::Plain),
            };
            let days = expiry_days(m, now);
            let expiry_tone = match days {
                Some(d) if d < 7 => Tone::Bad,
                Some(d) if d < 21 => Tone::Warn,
                _ => Tone::Plain,
            };
            let (reload, reload_ok) = last_reload_cell(m, now);
            let reload_tone = match reload_ok {
                Some(true) => Tone::Good,
                Some(false) => Tone::Bad,
                None => Tone::Plain,
            };
            [
                (pod, Tone::Plain),
                (
                    str_field(m, "volume").unwrap_or("-").to_string(),
                    Tone::Plain,
                ),
                (secrets_cell(m), Tone::Plain),
                (state.to_string(), state_tone(state)),
                (lag_cell(m), Tone::Plain),
                served,
                (expiry_cell(days), expiry_tone),
                (reload, reload_tone),
            ]
            .map(|(cell, tone)| (untrusted_capped(&cell, MAX_CELL_BYTES).to_string(), tone))
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (w, (cell, _)) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<(String, Tone)>| -> String {
        let last = cells.len() - 1;
        let mut text = String::new();
        for (i, ((cell, tone), width)) in cells.into_iter().zip(widths).enumerate() {
            text.push_str(&tone.paint(&cell, color));
            if i < last {
                let pad = width - cell.chars().count() + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.push('\n');
        text
    };
    out.push_str(&line(
        HEADERS
            .iter()
            .map(|h| (h.to_string(), Tone::Plain))
            .collect(),
    ));
    for row in rows {
        out.push_str(&line(row.into()));
    }
    out.push_str(&reload_notes(&mounts));
    out
}

/// One line per pod whose last reload did not verify, with the agent's reason
/// (`lastReloadMessage`): why a signal was withheld is not something a table cell can say.
fn reload_notes(mounts: &[&Value]) -> String {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = String::new();
    for m in mounts {
        let (Some(result), Some(message)) = (
            str_field(m, "lastReload"),
            str_field(m, "lastReloadMessage"),
        ) else {
            continue;
        };
        if result == "verified" {
            continue;
        }
        let pod = format!(
            "{}/{}",
            str_field(m, "namespace").unwrap_or("-"),
            str_field(m, "pod").unwrap_or("-")
        );
        if seen.insert(pod.clone()) {
            out.push_str(&format!(
                "{}: reload {}: {}\n",
                untrusted(&pod),
                untrusted(result),
                untrusted_capped(message, crate::text::MAX_MESSAGE_BYTES)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
