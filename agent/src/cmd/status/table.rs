//! The `mountlag status` table: one row per mount, cells escaped and cut, states coloured, and
//! the exit code a script reads from it.

use super::*;

/// 1 when any mount needs a human ([`needs_attention`]), 0 otherwise.
pub fn exit_code(status: &Value) -> u8 {
    let bad = mounts(status).iter().any(|m| needs_attention(m))
        || super::hosts::hosts(status)
            .iter()
            .any(|h| super::hosts::needs_attention(h))
        || !super::certmanager::findings(status).is_empty();
    if bad { EXIT_ATTENTION } else { 0 }
}

/// A [`NEEDS_ATTENTION`] state, a last reload in [`RELOAD_NEEDS_ATTENTION`], a controller
/// that serves another certificate than expected, or a certificate within
/// `expiry.warnBefore` of its notAfter.
pub(super) fn needs_attention(mount: &Value) -> bool {
    NEEDS_ATTENTION.contains(&state(mount))
        || str_field(mount, "lastReload").is_some_and(|r| RELOAD_NEEDS_ATTENTION.contains(&r))
        || served_match(mount) == Some(false)
        || mount["certificate"]["expiring"].as_bool() == Some(true)
}

pub(super) fn mounts(status: &Value) -> Vec<&Value> {
    status["mounts"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

pub(super) fn state(mount: &Value) -> &str {
    mount["state"].as_str().unwrap_or("unknown")
}

pub(super) fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key)?.as_str().filter(|s| !s.is_empty())
}

/// `secret@resourceVersion` for every Secret of the mount (`secrets` list, or one `secret`).
pub(super) fn secrets_cell(mount: &Value) -> String {
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
pub(super) fn human_duration(seconds: f64) -> String {
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

pub(super) fn lag_cell(mount: &Value) -> String {
    mount["lagSeconds"]
        .as_f64()
        .map_or_else(|| "-".to_string(), human_duration)
}

/// Whether the served certificate matches: `served.match`, `servedMatch` or `served` (bool).
pub(super) fn served_match(mount: &Value) -> Option<bool> {
    mount["served"]["match"]
        .as_bool()
        .or_else(|| mount["servedMatch"].as_bool())
        .or_else(|| mount["served"].as_bool())
}

/// A timestamp written as RFC 3339 text or as seconds since the epoch.
pub(super) fn timestamp(value: &Value) -> Option<OffsetDateTime> {
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
pub(super) fn not_after(mount: &Value) -> Option<OffsetDateTime> {
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
pub(super) fn expiry_days(mount: &Value, now: OffsetDateTime) -> Option<i64> {
    match not_after(mount) {
        Some(not_after) => Some((not_after - now).whole_seconds().div_euclid(86400)),
        None => mount["certificate"]["daysToExpiry"].as_i64(),
    }
}

pub(super) fn expiry_cell(days: Option<i64>) -> String {
    match days {
        None => "-".to_string(),
        Some(d) if d < 0 => "EXPIRED".to_string(),
        Some(d) => format!("{d}d"),
    }
}

/// `result age ago` from `lastReload` (`{result|outcome, at|time|finishedAt}`) or its text.
pub(super) fn last_reload_cell(mount: &Value, now: OffsetDateTime) -> (String, Option<bool>) {
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
pub(in crate::cmd) enum Tone {
    Plain,
    Good,
    Warn,
    Bad,
}

impl Tone {
    pub(in crate::cmd) fn paint(self, text: &str, color: bool) -> String {
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

pub(super) fn state_tone(state: &str) -> Tone {
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

pub(super) const HEADERS: [&str; 8] = [
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
        out.push_str(&super::hosts::render_hosts(status, now, color));
        out.push_str(&super::certmanager::render_cert_manager(status, color));
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
    out.push_str(&columns(&HEADERS, rows, color));
    out.push_str(&reload_notes(&mounts));
    out.push_str(&super::hosts::render_hosts(status, now, color));
    out.push_str(&super::certmanager::render_cert_manager(status, color));
    out
}

/// `headers` and `rows` as aligned columns (two spaces apart), each cell painted in its tone.
pub(super) fn columns<const N: usize>(
    headers: &[&str; N],
    rows: Vec<[(String, Tone); N]>,
    color: bool,
) -> String {
    let mut widths = headers.map(|h| h.chars().count());
    for row in &rows {
        for (w, (cell, _)) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [(String, Tone); N]| -> String {
        let mut text = String::new();
        for (i, ((cell, tone), width)) in cells.into_iter().zip(widths).enumerate() {
            text.push_str(&tone.paint(&cell, color));
            if i + 1 < N {
                text.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
            }
        }
        text.push('\n');
        text
    };
    let mut out = line(headers.map(|h| (h.to_string(), Tone::Plain)));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// One line per pod whose last reload did not verify, with the agent's reason
/// (`lastReloadMessage`): why a signal was withheld is not something a table cell can say.
pub(super) fn reload_notes(mounts: &[&Value]) -> String {
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
