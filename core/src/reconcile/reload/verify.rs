//! Verification: probe rounds after a reload, what counts as the new leaf served on every name,
//! timeouts, and the expiry warning from what is served.

use std::time::Instant;

use super::check::{Mismatch, day};
use super::*;

impl PodReload {
    pub(super) fn verification_timed_out(
        &mut self,
        attempt: u8,
        swapped_at: Instant,
        now: Instant,
        actions: &mut Vec<Decision>,
    ) {
        let seen = self
            .served
            .iter()
            .map(|(name, fp)| format!("{}={}", name.as_deref().unwrap_or("(no SNI)"), short(fp)))
            .collect::<Vec<_>>()
            .join(", ");
        let want = self
            .expected
            .iter()
            .map(|l| short(&l.fingerprint))
            .collect::<Vec<_>>()
            .join(", ");
        let note = format!(
            "after {} the controller does not serve the expected leaf {want} (served: {})",
            seconds(self.limits.verify_timeout),
            if seen.is_empty() {
                "nothing reachable".to_string()
            } else {
                seen
            }
        );
        if self.signal_withheld {
            // Already counted (and reported) as withheld: say what is served, keep the
            // withheld result and its reason in /status, and do not retry.
            actions.push(self.event(
                EventReason::ServedCertificateMismatch,
                format!("{note}; the reload signal was withheld"),
            ));
            self.mismatch = Some(Mismatch::reported(swapped_at));
            self.phase = Phase::Idle;
            return;
        }
        let (reason, result) = match self.kind {
            ReloadKind::Reload => (EventReason::ReloadUnverified, ReloadResult::Unverified),
            _ => (
                EventReason::ServedCertificateMismatch,
                ReloadResult::Unverified,
            ),
        };
        // A mismatch says, per host, what is served and which view is old.
        let note = match &self.last_round {
            Some(round) if reason == EventReason::ServedCertificateMismatch => {
                let stale = self.stale_leaves(round);
                if stale.is_empty() {
                    note
                } else {
                    format!(
                        "{} (for {} after the change)",
                        self.mismatch_note(&stale),
                        seconds(now.saturating_duration_since(swapped_at))
                    )
                }
            }
            _ => note,
        };
        if reason == EventReason::ServedCertificateMismatch {
            self.mismatch = Some(Mismatch::reported(swapped_at));
        }
        actions.push(self.event(reason, note.clone()));
        actions.push(Decision::Finished {
            result,
            seconds: now.saturating_duration_since(swapped_at).as_secs_f64(),
        });
        self.set_result(result, note);
        self.phase = self.retry_or_idle(attempt, swapped_at, now);
    }

    pub(super) fn probed(&mut self, round: ProbeRound, now: Instant, actions: &mut Vec<Decision>) {
        for (key, result) in &round.served {
            if let Ok(leaf) = result {
                self.served
                    .insert(key.sni.clone(), leaf.fingerprint.clone());
                match leaf.not_after {
                    Some(unix) => self.served_not_after.insert(key.sni.clone(), unix),
                    None => self.served_not_after.remove(&key.sni),
                };
            }
        }
        self.last_round = Some(round.clone());
        self.check_expiry(&round, actions);
        if self.phase == Phase::Idle && self.check.in_flight {
            self.checked(&round, now, actions);
            return;
        }
        let Phase::Verifying {
            attempt,
            swapped_at,
            deadline,
            backoff,
            matched,
            ..
        } = self.phase.clone()
        else {
            return;
        };
        let mut compared = round
            .served
            .iter()
            .filter_map(|(key, result)| Some((self.expected_for(key.sni.as_deref())?, result)))
            .peekable();
        let all_match = compared.peek().is_some()
            && compared.all(|(expected, result)| match result {
                Ok(leaf) => expected.contains(&leaf.fingerprint.as_str()),
                Err(_) => false,
            });
        if !all_match {
            let backoff = (backoff * 2).min(PROBE_MAX);
            self.phase = Phase::Verifying {
                attempt,
                swapped_at,
                deadline,
                next_probe: now + backoff,
                probe_in_flight: false,
                backoff,
                matched: None,
            };
            return;
        }
        let (first_seen, rounds) = matched.map_or((now, 1), |(since, n)| (since, n + 1));
        if rounds < CONFIRM_ROUNDS {
            self.phase = Phase::Verifying {
                attempt,
                swapped_at,
                deadline,
                next_probe: now + CONFIRM_GAP,
                probe_in_flight: false,
                backoff,
                matched: Some((first_seen, rounds)),
            };
            return;
        }
        // The figure users care about is when the new leaf began to be served, not when we
        // finished convincing ourselves.
        let took = first_seen.saturating_duration_since(swapped_at);
        let note = format!(
            "now serving {} on {} name(s) and without SNI at {} address(es), {} after the new files appeared",
            self.expected
                .iter()
                .map(|l| short(&l.fingerprint))
                .collect::<Vec<_>>()
                .join(", "),
            round
                .served
                .keys()
                .filter_map(|k| k.sni.as_deref())
                .collect::<BTreeSet<_>>()
                .len(),
            round
                .served
                .keys()
                .map(|k| k.endpoint.as_str())
                .collect::<BTreeSet<_>>()
                .len(),
            seconds(took)
        );
        self.set_result(ReloadResult::Verified, note.clone());
        // A controller that took the files by itself after a withheld signal was not reloaded
        // by mountlag: no ControllerReloaded for it.
        if self.kind == ReloadKind::Reload && !self.signal_withheld {
            actions.push(self.event(EventReason::ControllerReloaded, note));
        }
        actions.push(Decision::Finished {
            result: ReloadResult::Verified,
            seconds: took.as_secs_f64(),
        });
        self.mismatch = None;
        self.phase = Phase::Idle;
    }

    pub(super) fn check_expiry(&mut self, round: &ProbeRound, actions: &mut Vec<Decision>) {
        let Some(leaf) = round.default_leaf() else {
            return;
        };
        let Some(not_after) = leaf.not_after else {
            return;
        };
        let now = round.at_unix;
        let warn = i64::try_from(self.limits.expiry_warn_before.as_secs()).unwrap_or(i64::MAX);
        if not_after - now <= warn
            && self.warned_expiry_for.as_deref() != Some(leaf.fingerprint.as_str())
        {
            self.warned_expiry_for = Some(leaf.fingerprint.clone());
            let days = (not_after - now).div_euclid(86_400);
            let source = self.expected_source();
            let renewal = self
                .expected
                .iter()
                .filter(|l| l.fingerprint != leaf.fingerprint && l.not_after > not_after)
                .max_by_key(|l| l.not_after);
            let verdict = match renewal {
                Some(renewal) => format!(
                    "a renewal {} (notAfter {}) is in {source} but not served",
                    short(&renewal.fingerprint),
                    day(renewal.not_after)
                ),
                None => format!("no renewal exists: {source} hold no newer certificate"),
            };
            actions.push(self.event(
                EventReason::CertificateExpiringSoon,
                format!(
                    "the served leaf {} expires in {days} day(s) (notAfter {}); {verdict}",
                    short(&leaf.fingerprint),
                    day(not_after)
                ),
            ));
        }
    }

    /// The fingerprints that may be served on `name`; `None`: the handshake is not compared.
    pub(super) fn expected_for(&self, name: Option<&str>) -> Option<Vec<&str>> {
        Some(
            self.expected_leaves_for(name)?
                .into_iter()
                .map(|l| l.fingerprint.as_str())
                .collect(),
        )
    }

    /// The leaves that may be served on `name`. With a host plan: the host's Secret's (the
    /// profile's extra `probe.hosts` take any), without SNI the default certificate's, if one
    /// is expected. Otherwise: the leaves whose names cover it, else (no SNI, or a name only
    /// `probe.hosts` lists) any.
    pub(super) fn expected_leaves_for(&self, name: Option<&str>) -> Option<Vec<&ExpectedLeaf>> {
        if let Some(plan) = &self.plan {
            return match name {
                Some(host) => match plan.by_host.get(host) {
                    Some(leaves) => Some(leaves.iter().collect()),
                    None => Some(self.expected.iter().collect()),
                },
                None => plan.default.as_ref().map(|leaves| leaves.iter().collect()),
            };
        }
        let by_name: Vec<&ExpectedLeaf> = match name {
            Some(name) => self
                .expected
                .iter()
                .filter(|l| l.dns_names.iter().any(|n| names_match(n, name)))
                .collect(),
            None => Vec::new(),
        };
        Some(if by_name.is_empty() {
            self.expected.iter().collect()
        } else {
            by_name
        })
    }

    /// Whether there is anything to probe and compare.
    pub(super) fn has_expectations(&self) -> bool {
        !self.expected.is_empty() || self.plan.as_ref().is_some_and(|p| !p.by_host.is_empty())
    }

    /// The SNI names a probe round uses (plus one handshake without SNI).
    pub fn probe_names(&self) -> Vec<String> {
        let from_leaves: Vec<String> = match &self.plan {
            Some(plan) => plan.by_host.keys().cloned().collect(),
            None => self
                .expected
                .iter()
                .flat_map(|l| l.dns_names.iter())
                .filter(|n| !n.starts_with("*."))
                .cloned()
                .collect(),
        };
        let mut names: Vec<String> = from_leaves
            .into_iter()
            .chain(self.extra_hosts.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}
