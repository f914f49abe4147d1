//! The findings sorted for a person (severity, then object), the counts, the exit status and
//! the text table. (The JSON document is built by the agent from the same values.)

use std::collections::{BTreeMap, BTreeSet};

use crate::certmanager::CertManagerObject;
use crate::reconcile::SecretKey;
use crate::routes::RouteObject;
use crate::text::untrusted_capped;

use super::{Check, Cluster, LintFinding, LintSecret, Scope, Severity, TLS_SECRET_TYPE};

/// Longest message printed in the table (they hold API text).
const MAX_MESSAGE_BYTES: usize = 2048;
/// Longest object or check cell.
const MAX_CELL_BYTES: usize = 320;

/// How much was looked at: a clean report over nothing is not a clean cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checked {
    pub ingresses: usize,
    pub gateways: usize,
    pub tls_secrets: usize,
    pub controller_pods: usize,
    pub certificates: usize,
}

impl Checked {
    pub fn of(cluster: &Cluster, secrets: &BTreeMap<SecretKey, LintSecret>) -> Self {
        let count = |f: fn(&RouteObject) -> bool| cluster.routes.iter().filter(|o| f(o)).count();
        Checked {
            ingresses: count(|o| matches!(o, RouteObject::Ingress(_))),
            gateways: count(|o| matches!(o, RouteObject::Gateway(_))),
            tls_secrets: secrets
                .values()
                .filter(|s| s.secret_type == TLS_SECRET_TYPE)
                .count(),
            controller_pods: cluster.controller_pods.len(),
            certificates: cluster
                .cert_manager
                .iter()
                .filter(|o| matches!(o, CertManagerObject::Certificate(_)))
                .count(),
        }
    }

    /// `2 Ingresses, 0 Gateways, 3 TLS Secrets, 1 controller pod, 0 Certificates`.
    pub fn describe(&self) -> String {
        let n = |count: usize, one: &str, many: &str| {
            format!("{count} {}", if count == 1 { one } else { many })
        };
        [
            n(self.ingresses, "Ingress", "Ingresses"),
            n(self.gateways, "Gateway", "Gateways"),
            n(self.tls_secrets, "TLS Secret", "TLS Secrets"),
            n(self.controller_pods, "controller pod", "controller pods"),
            n(self.certificates, "Certificate", "Certificates"),
        ]
        .join(", ")
    }
}

/// A lint run's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub scope: Scope,
    /// Sorted by severity, then object, then check.
    pub findings: Vec<LintFinding>,
    pub checked: Checked,
    /// Resources the cluster does not serve (`tlsroutes.gateway.networking.k8s.io`): counted
    /// as empty.
    pub not_served: Vec<String>,
    /// Findings of this severity or worse fail the lint (exit status 1).
    pub fail_on: Severity,
}

impl Report {
    pub fn new(
        scope: Scope,
        mut findings: Vec<LintFinding>,
        checked: Checked,
        not_served: Vec<String>,
        fail_on: Severity,
    ) -> Self {
        findings.sort_by(|a, b| {
            (a.severity, a.object(), a.check, &a.message).cmp(&(
                b.severity,
                b.object(),
                b.check,
                &b.message,
            ))
        });
        Report {
            scope,
            findings,
            checked,
            not_served,
            fail_on,
        }
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// Whether a finding is at least as bad as `fail_on`.
    pub fn failing(&self) -> bool {
        self.findings.iter().any(|f| f.severity <= self.fail_on)
    }

    /// 1 when failing, else 0 (2, usage errors and an unreachable API, is the command's).
    pub fn exit_code(&self) -> u8 {
        u8::from(self.failing())
    }

    /// `2 findings in namespace shop (1 error, 1 info): fails (--fail-on warning); checked ...`.
    pub fn summary_line(&self) -> String {
        let checked = self.checked.describe();
        let not_served = if self.not_served.is_empty() {
            String::new()
        } else {
            format!("; not served here: {}", self.not_served.join(", "))
        };
        if self.findings.is_empty() {
            return format!(
                "no findings in {} (checked {checked}{not_served})",
                self.scope.describe()
            );
        }
        let counts: Vec<String> = Severity::ALL
            .into_iter()
            .map(|s| (s, self.count(s)))
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| match (s, n) {
                (Severity::Info, _) | (_, 1) => format!("{n} {}", s.as_str()),
                _ => format!("{n} {}s", s.as_str()),
            })
            .collect();
        let total = self.findings.len();
        let verdict = if self.failing() {
            format!("fails (--fail-on {})", self.fail_on.as_str())
        } else {
            format!("passes (--fail-on {})", self.fail_on.as_str())
        };
        format!(
            "{total} finding{} in {} ({}): {verdict}; checked {checked}{not_served}",
            if total == 1 { "" } else { "s" },
            self.scope.describe(),
            counts.join(", ")
        )
    }

    /// The table, the hint of each check present, and the summary line. Every cell is escaped
    /// (API text may hold terminal control characters) and cut.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if !self.findings.is_empty() {
            let rows: Vec<[String; 4]> = self
                .findings
                .iter()
                .map(|f| {
                    [
                        f.severity.as_str().to_string(),
                        untrusted_capped(&f.object(), MAX_CELL_BYTES).to_string(),
                        f.check.as_str().to_string(),
                        untrusted_capped(&f.message, MAX_MESSAGE_BYTES).to_string(),
                    ]
                })
                .collect();
            let header = ["SEVERITY", "KIND/NAMESPACE/NAME", "CHECK", "MESSAGE"];
            let width = |i: usize| {
                rows.iter()
                    .map(|r| r[i].chars().count())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            };
            let widths = [width(0), width(1), width(2)];
            let line = |cells: [&str; 4]| {
                format!(
                    "{:w0$}  {:w1$}  {:w2$}  {}\n",
                    cells[0],
                    cells[1],
                    cells[2],
                    cells[3],
                    w0 = widths[0],
                    w1 = widths[1],
                    w2 = widths[2]
                )
            };
            out.push_str(&line(header));
            for row in &rows {
                out.push_str(&line([&row[0], &row[1], &row[2], &row[3]]));
            }
            out.push_str("\nWhat to do:\n");
            let checks: BTreeSet<Check> = self.findings.iter().map(|f| f.check).collect();
            for check in Check::ALL.into_iter().filter(|c| checks.contains(c)) {
                out.push_str(&format!("  {}: {}\n", check.as_str(), check.hint()));
            }
            out.push('\n');
        }
        out.push_str(&self.summary_line());
        out.push('\n');
        out
    }
}
