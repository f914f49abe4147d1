//! `/status` `hosts[]`: the TLS hosts of controllers whose hosts come from Ingress and
//! Gateway objects, as a second table, and when they make `mountlag status` exit 1.

use serde_json::Value;

use super::table::{Tone, columns, str_field};
use crate::text::untrusted_capped;

/// Host states that need attention: the controller cannot serve the host's certificate.
pub const HOST_NEEDS_ATTENTION: [&str; 3] =
    ["secret_missing", "secret_invalid", "ref_not_permitted"];

const MAX_CELL_BYTES: usize = 256;
const HEADERS: [&str; 6] = ["CONTROLLER", "HOST", "SECRET", "FROM", "STATE", "SERVED"];

pub(super) fn hosts(status: &Value) -> Vec<&Value> {
    status["hosts"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// A problem state, or a pod serving another certificate for the host.
pub(super) fn needs_attention(host: &Value) -> bool {
    str_field(host, "state").is_some_and(|s| HOST_NEEDS_ATTENTION.contains(&s))
        || served(host) == Some(false)
}

/// Whether every pod that answered served the host's certificate (`None`: none compared).
fn served(host: &Value) -> Option<bool> {
    let answers: Vec<bool> = host["served"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["match"].as_bool())
        .collect();
    (!answers.is_empty()).then(|| answers.iter().all(|m| *m))
}

pub(super) fn render_hosts(status: &Value, color: bool) -> String {
    let hosts = hosts(status);
    if hosts.is_empty() {
        return String::new();
    }
    let rows: Vec<[(String, Tone); 6]> = hosts
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

#[cfg(test)]
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
        let text = render_hosts(&ok, false);
        assert!(
            text.contains("a.example") && text.contains("match"),
            "{text}"
        );
        let mut mismatch = ok.clone();
        mismatch["hosts"][0]["served"][0]["match"] = json!(false);
        assert_eq!(exit_code(&mismatch), 1);
        assert!(render_hosts(&mismatch, false).contains("MISMATCH"));
        for state in HOST_NEEDS_ATTENTION {
            let mut bad = ok.clone();
            bad["hosts"][0]["state"] = json!(state);
            bad["hosts"][0]["served"] = json!([]);
            assert_eq!(exit_code(&bad), 1, "{state}");
        }
        let mut unknown = ok.clone();
        unknown["hosts"][0]["state"] = json!("unknown");
        assert_eq!(exit_code(&unknown), 0, "not listed yet is not a problem");
    }
}
