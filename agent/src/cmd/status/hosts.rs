//! `/status` `hosts[]`: the TLS hosts of controllers whose hosts come from Ingress and
//! Gateway objects, as a second table, and when they make `mountlag status` exit 1.

use serde_json::Value;

use time::OffsetDateTime;

use super::table::{Tone, columns, expiry_cell, str_field, timestamp};
use crate::text::untrusted_capped;

/// Host states that need attention: the controller cannot serve the host's certificate.
pub const HOST_NEEDS_ATTENTION: [&str; 3] =
    ["secret_missing", "secret_invalid", "ref_not_permitted"];

const MAX_CELL_BYTES: usize = 256;
const HEADERS: [&str; 7] = [
    "CONTROLLER",
    "HOST",
    "SECRET",
    "FROM",
    "STATE",
    "SERVED",
    "EXPIRY",
];

pub(super) fn hosts(status: &Value) -> Vec<&Value> {
    status["hosts"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// A problem state, a pod serving another certificate for the host, or a served certificate
/// within `expiry.warnBefore` of its notAfter.
pub(super) fn needs_attention(host: &Value) -> bool {
    str_field(host, "state").is_some_and(|s| HOST_NEEDS_ATTENTION.contains(&s))
        || served(host) == Some(false)
        || answers(host).any(|s| s["expiring"].as_bool() == Some(true))
}

fn answers(host: &Value) -> impl Iterator<Item = &Value> {
    host["served"].as_array().into_iter().flatten()
}

/// Whether every pod that answered served the host's certificate (`None`: none compared).
fn served(host: &Value) -> Option<bool> {
    let answers: Vec<bool> = answers(host).filter_map(|s| s["match"].as_bool()).collect();
    (!answers.is_empty()).then(|| answers.iter().all(|m| *m))
}

pub(super) fn render_hosts(status: &Value, now: OffsetDateTime, color: bool) -> String {
    let hosts = hosts(status);
    if hosts.is_empty() {
        return String::new();
    }
    let rows: Vec<[(String, Tone); 7]> = hosts
        .iter()
        .map(|h| {
            let state = str_field(h, "state").unwrap_or("unknown");
            let state_tone = match state {
                "ok" => Tone::Good,
                s if HOST_NEEDS_ATTENTION.contains(&s) => Tone::Bad,
                _ => Tone::Warn,
            };
            let served = match served(h) {
                Some(true) => ("match".to_string(), Tone::Good),
                Some(false) => ("MISMATCH".to_string(), Tone::Bad),
                None => ("-".to_string(), Tone::Plain),
            };
            [
                (
                    str_field(h, "controller").unwrap_or("-").to_string(),
                    Tone::Plain,
                ),
                (str_field(h, "host").unwrap_or("-").to_string(), Tone::Plain),
                (
                    str_field(h, "secret").unwrap_or("-").to_string(),
                    Tone::Plain,
                ),
                (str_field(h, "from").unwrap_or("-").to_string(), Tone::Plain),
                (state.to_string(), state_tone),
                served,
                expiry(h, now),
            ]
            .map(|(cell, tone)| (untrusted_capped(&cell, MAX_CELL_BYTES).to_string(), tone))
        })
        .collect();
    let mut out = format!(
        "\n{} TLS host(s) from Ingress and Gateway objects\n",
        hosts.len()
    );
    out.push_str(&columns(&HEADERS, rows, color));
    for h in &hosts {
        if let (Some(host), Some(message)) = (str_field(h, "host"), str_field(h, "message")) {
            out.push_str(&format!(
                "{}: {}\n",
                untrusted_capped(host, MAX_CELL_BYTES),
                untrusted_capped(message, crate::text::MAX_MESSAGE_BYTES)
            ));
        }
    }
    out
}

/// Days until the earliest served leaf's notAfter, toned like the mounts' column.
fn expiry(host: &Value, now: OffsetDateTime) -> (String, Tone) {
    let days = answers(host)
        .filter_map(|s| timestamp(&s["notAfter"]))
        .min()
        .map(|t| (t - now).whole_seconds().div_euclid(86_400));
    let tone = match days {
        Some(d) if d < 7 => Tone::Bad,
        Some(d) if d < 21 => Tone::Warn,
        _ => Tone::Plain,
    };
    (expiry_cell(days), tone)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cmd::status::exit_code;

    #[test]
    fn a_host_without_a_usable_secret_or_served_another_certificate_exits_1() {
        let ok = json!({"node": "n", "ready": true, "mounts": [], "hosts": [
            {"controller": "ingress-nginx", "host": "a.example", "secret": "shop/web-tls",
             "from": "Ingress shop/web", "state": "ok",
             "served": [{"pod": "ingress-nginx/c-0", "fingerprintSha256": "ab", "match": true}]}
        ]});
        assert_eq!(exit_code(&ok), 0);
        let text = render_hosts(&ok, OffsetDateTime::now_utc(), false);
        assert!(
            text.contains("a.example") && text.contains("match"),
            "{text}"
        );
        let mut mismatch = ok.clone();
        mismatch["hosts"][0]["served"][0]["match"] = json!(false);
        assert_eq!(exit_code(&mismatch), 1);
        assert!(render_hosts(&mismatch, OffsetDateTime::now_utc(), false).contains("MISMATCH"));
        for state in HOST_NEEDS_ATTENTION {
            let mut bad = ok.clone();
            bad["hosts"][0]["state"] = json!(state);
            bad["hosts"][0]["served"] = json!([]);
            assert_eq!(exit_code(&bad), 1, "{state}");
        }
        let mut expiring = ok.clone();
        expiring["hosts"][0]["served"][0]["notAfter"] = json!("2030-01-10T00:00:00Z");
        expiring["hosts"][0]["served"][0]["expiring"] = json!(true);
        assert_eq!(exit_code(&expiring), 1, "a served leaf about to expire");
        let now = OffsetDateTime::parse(
            "2030-01-01T00:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(
            render_hosts(&expiring, now, false).contains(" 9d"),
            "{}",
            render_hosts(&expiring, now, false)
        );
        let mut unknown = ok.clone();
        unknown["hosts"][0]["state"] = json!("unknown");
        assert_eq!(exit_code(&unknown), 0, "not listed yet is not a problem");
    }
}
