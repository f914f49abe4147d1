//! `/status` `certManager`: cert-manager findings (docs/cert-manager.md) as a third table. A
//! finding makes `mountlag status` exit 1 on every node that sees it, not only on the node
//! that reports it: whoever looks at any of them should learn of it.

use serde_json::Value;

use super::table::{Tone, columns, str_field};
use crate::text::untrusted_capped;

const MAX_CELL_BYTES: usize = 256;
const HEADERS: [&str; 3] = ["FINDING", "REGARDING", "REPORTED BY"];

pub(super) fn findings(status: &Value) -> Vec<&Value> {
    status["certManager"]["findings"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

pub(super) fn render_cert_manager(status: &Value, color: bool) -> String {
    let view = &status["certManager"];
    if view.is_null() {
        return String::new();
    }
    let findings = findings(status);
    if findings.is_empty() {
        // Quiet when all is well; a cluster without cert-manager is worth one line.
        return match str_field(view, "state") {
            Some("notInstalled") => "\ncert-manager: not installed\n".to_string(),
            _ => String::new(),
        };
    }
    let rows: Vec<[(String, Tone); 3]> = findings
        .iter()
        .map(|f| {
            [
                (str_field(f, "reason").unwrap_or("-").to_string(), Tone::Bad),
                (
                    str_field(f, "regarding").unwrap_or("-").to_string(),
                    Tone::Plain,
                ),
                (
                    str_field(f, "reporter").unwrap_or("-").to_string(),
                    Tone::Plain,
                ),
            ]
            .map(|(cell, tone)| (untrusted_capped(&cell, MAX_CELL_BYTES).to_string(), tone))
        })
        .collect();
    let mut out = format!("\ncert-manager: {} finding(s)\n", findings.len());
    out.push_str(&columns(&HEADERS, rows, color));
    for f in &findings {
        if let Some(message) = str_field(f, "message") {
            out.push_str(&format!(
                "{}: {}\n",
                untrusted_capped(str_field(f, "regarding").unwrap_or("-"), MAX_CELL_BYTES),
                untrusted_capped(message, crate::text::MAX_MESSAGE_BYTES)
            ));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn findings_are_listed_with_their_reporter_and_make_status_exit_1() {
        let status = serde_json::json!({
            "node": "node-a", "ready": true, "mounts": [],
            "certManager": {"state": "installed", "findings": [{
                "reason": "CertificateNotReady", "regarding": "Certificate shop/web",
                "message": "Certificate shop/web is Ready=False (Failed: the order failed)",
                "reporter": "node-b"
            }]}
        });
        let text = render_cert_manager(&status, false);
        assert!(text.contains("cert-manager: 1 finding(s)"), "{text}");
        assert!(
            text.contains("CertificateNotReady  Certificate shop/web  node-b"),
            "{text}"
        );
        assert!(text.contains("the order failed"), "{text}");
        assert_eq!(super::super::table::exit_code(&status), 1);
        let clean = serde_json::json!({
            "node": "node-a", "ready": true, "mounts": [],
            "certManager": {"state": "notInstalled", "findings": []}
        });
        assert_eq!(
            render_cert_manager(&clean, false),
            "\ncert-manager: not installed\n"
        );
        assert_eq!(super::super::table::exit_code(&clean), 0);
    }
}
