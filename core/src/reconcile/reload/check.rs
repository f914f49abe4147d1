//! Between rotations: the served leaves of an idle pod are checked again every
//! `verify.interval`, because the outage that matters most is the one nothing rotates into (a
//! renewal that never reached the controller, a reload lost to an agent restart).
//!
//! ```text
//!  Idle ──every verify.interval (±10%), first soon after the files are first read──▶ Probe
//!    ▲                                                                                 │
//!    │ every served leaf is expected: the episode (if any) is over ◀───────────────────┤
//!    │                                                                                 ▼
//!    │      an older leaf served, the files hold the newer one, nothing reloaded for it yet
//!    │        └──▶ Waiting: one reload, verified as after a rotation
//!    └─ otherwise: an episode; after verify.mismatchAfter ServedCertificateMismatch, repeated
//!       on each check while it lasts (one Event series, its count rising)
//! ```
//!
//! The expiry warning is judged on every round (see `verify.rs`), so it fires for a certificate
//! that never rotates, within one interval.

use std::time::{Duration, Instant};

use super::*;

/// When the next periodic check is due, and whether one is out.
#[derive(Debug, Clone)]
pub(super) struct PeriodicCheck {
    next_at: Option<Instant>,
    pub(super) in_flight: bool,
    seed: u64,
    rounds: u64,
    /// When a check first found an older leaf served than the files hold, with nothing
    /// reloaded for them: the heal waits for a second look [`HEAL_CONFIRM_AFTER`] later.
    stale_since: Option<Instant>,
}

/// A controller that is reloading still serves its old leaf for a while: nginx's old workers
/// accept for ~100 ms after the new ones start, HAProxy's old worker until the new one is up.
/// An agent restarted in the middle of a reload (killed after its signal) would see the old
/// leaf and reload a second time; the heal reloads only if the old leaf is still served this
/// much later, which no graceful reload takes.
pub(super) const HEAL_CONFIRM_AFTER: Duration = Duration::from_secs(2);

impl PeriodicCheck {
    pub(super) fn new(seed: u64) -> Self {
        Self {
            next_at: None,
            in_flight: false,
            seed,
            rounds: 0,
            stale_since: None,
        }
    }

    /// A rotation's verification takes over; the next check counts from its end.
    pub(super) fn cancel(&mut self) {
        self.next_at = None;
        self.in_flight = false;
    }

    /// `interval` ±10%, different per pod (seed) and round, reproducible for tests.
    fn jittered(&mut self, interval: Duration) -> Duration {
        self.rounds += 1;
        let per_mille = 900 + splitmix64(self.seed ^ self.rounds) % 201;
        interval.mul_f64(per_mille as f64 / 1000.0)
    }
}

/// One served ≠ expected episode: reported after `verify.mismatchAfter` (then on every check,
/// folded into one Event series), over when a round serves only expected leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mismatch {
    since: Instant,
    reported: bool,
}

impl Mismatch {
    /// Already reported (a verification that timed out said so).
    pub(super) fn reported(since: Instant) -> Self {
        Self {
            since,
            reported: true,
        }
    }
}

/// A served leaf that is not what the pod should serve on that name.
pub(super) struct Stale<'a> {
    name: Option<&'a str>,
    endpoint: &'a str,
    served: &'a ServedLeaf,
    /// The newest expected leaf for the name, when it is not older than the served one.
    newer: Option<&'a ExpectedLeaf>,
    /// Nothing can be right: the host's Secret is missing or unusable.
    expected_none: bool,
}

/// Subjects of certificates controllers serve when they have no usable Secret for a host.
/// (ingress-nginx: `internal/net/ssl`'s fake certificate; Traefik: its generated default.)
const PLACEHOLDERS: &[(&str, &str)] = &[
    (
        "Kubernetes Ingress Controller Fake Certificate",
        "ingress-nginx",
    ),
    ("TRAEFIK DEFAULT CERT", "Traefik"),
];

/// Which controller's placeholder certificate this subject is, if it is one.
pub fn placeholder_of(subject: &str) -> Option<&'static str> {
    PLACEHOLDERS
        .iter()
        .find(|(cn, _)| subject.contains(cn))
        .map(|(_, controller)| *controller)
}

impl PodReload {
    pub(super) fn check_due_at(&self) -> Option<Instant> {
        if !self.has_expectations() || self.check.in_flight {
            None
        } else {
            self.check.next_at
        }
    }

    /// Whether a periodic check would go out at `now` (the node holds it to its handshake
    /// budget first).
    pub fn check_due(&self, now: Instant) -> bool {
        self.phase == Phase::Idle && self.check_due_at().is_some_and(|at| at <= now)
    }

    /// Whether a served ≠ expected episode has been reported and is not over.
    pub fn mismatch_reported(&self) -> bool {
        self.mismatch.is_some_and(|m| m.reported)
    }

    pub(super) fn expected_fingerprints(&self) -> Vec<String> {
        self.expected
            .iter()
            .map(|l| l.fingerprint.clone())
            .collect()
    }

    /// Idle with something to check and no check planned: plan one an interval from now.
    pub(super) fn schedule_check(&mut self, now: Instant) {
        if self.has_expectations() && !self.check.in_flight && self.check.next_at.is_none() {
            self.check.next_at = Some(now + self.check.jittered(self.limits.verify_interval));
        }
    }

    /// On a tick: the check, if one is due. Only ticks start checks, so the node can hold every
    /// check to its handshake budget before it ticks the pod.
    pub(super) fn start_check_if_due(&mut self, now: Instant, actions: &mut Vec<Decision>) {
        if self.check_due(now) {
            self.check.in_flight = true;
            actions.push(Decision::Probe {
                names: self.probe_names(),
            });
        }
    }

    /// What a volume held when first read: the controller should serve it already.
    pub(super) fn baseline(&mut self, material: Material, now: Instant) {
        if self.kind == ReloadKind::ApiDriven {
            return;
        }
        if let Material::Valid { leaves } = material {
            for leaf in leaves {
                if !self
                    .expected
                    .iter()
                    .any(|l| l.fingerprint == leaf.fingerprint)
                {
                    self.expected.push(leaf);
                }
            }
            if self.phase == Phase::Idle {
                self.check.next_at = Some(now);
            }
        }
    }

    /// The result of a periodic check.
    pub(super) fn checked(
        &mut self,
        round: &ProbeRound,
        now: Instant,
        actions: &mut Vec<Decision>,
    ) {
        self.check.in_flight = false;
        let next = now + self.check.jittered(self.limits.verify_interval);
        self.check.next_at = Some(next);
        let stale = self.stale_leaves(round);
        if stale.is_empty() {
            // Unreachable names prove nothing either way.
            if round.served.values().any(Result::is_ok) {
                self.mismatch = None;
                self.check.stale_since = None;
            }
            return;
        }
        let files_newer = stale.iter().any(|s| s.newer.is_some());
        if self.kind == ReloadKind::Reload
            && !self.signal_withheld
            && files_newer
            && self.reloaded_for != self.expected_fingerprints()
        {
            // Nothing has reloaded the controller for what the files hold: once, unless a
            // second look shows a reload was under way (see HEAL_CONFIRM_AFTER).
            match self.check.stale_since {
                Some(since) if now >= since + HEAL_CONFIRM_AFTER => {
                    self.check.stale_since = None;
                    self.phase = Phase::Waiting { since: now };
                }
                Some(since) => self.check.next_at = Some(since + HEAL_CONFIRM_AFTER),
                None => {
                    self.check.stale_since = Some(now);
                    self.check.next_at = Some(now + HEAL_CONFIRM_AFTER);
                }
            }
            return;
        }
        let note = self.mismatch_note(&stale);
        let episode = self.mismatch.get_or_insert(Mismatch {
            since: now,
            reported: false,
        });
        let report_at = episode.since + self.limits.mismatch_after;
        if now >= report_at {
            // Reported again on every check while the episode lasts: the Event recorder folds
            // the repeats into the episode's one Event (same pod, reason and related Secret),
            // its series count rising, so a long mismatch stays visible as it goes on.
            episode.reported = true;
            let lasted = now.saturating_duration_since(episode.since);
            actions.push(self.event(
                EventReason::ServedCertificateMismatch,
                format!("{note} (for {})", seconds(lasted)),
            ));
        } else {
            // Confirm the episode when its grace ends, not an interval later.
            self.check.next_at = Some(next.min(report_at));
        }
    }

    pub(super) fn stale_leaves<'a>(&'a self, round: &'a ProbeRound) -> Vec<Stale<'a>> {
        round
            .served
            .iter()
            .filter_map(|(key, result)| {
                let served = result.as_ref().ok()?;
                let expected = self.expected_leaves_for(key.sni.as_deref())?;
                if expected.iter().any(|l| l.fingerprint == served.fingerprint) {
                    return None;
                }
                let expected_none = expected.is_empty();
                // At least as new: a renewal issued within the second of the served leaf
                // expires with it; one that expires earlier is the older material.
                let newer = expected
                    .into_iter()
                    .filter(|l| served.not_after.is_none_or(|t| l.not_after >= t))
                    .max_by_key(|l| l.not_after);
                Some(Stale {
                    name: key.sni.as_deref(),
                    endpoint: &key.endpoint,
                    served,
                    newer,
                    expected_none,
                })
            })
            .collect()
    }

    /// Names host(s), endpoint, what is served and which view is old.
    pub(super) fn mismatch_note(&self, stale: &[Stale<'_>]) -> String {
        let source = self.expected_source();
        let mut parts = Vec::new();
        for s in stale.iter().take(5) {
            let host = s.name.unwrap_or("(no SNI)");
            let served = format!(
                "{} (notAfter {})",
                short(&s.served.fingerprint),
                s.served.not_after.map_or("unknown".into(), day)
            );
            let verdict = if let Some(controller) = placeholder_of(&s.served.subject) {
                format!(
                    "{served} is {controller}'s placeholder certificate: the controller has no usable Secret for this host"
                )
            } else if s.expected_none {
                format!(
                    "{served} is served, but the host's Secret is missing or holds no usable certificate"
                )
            } else if let Some(newer) = s.newer {
                format!(
                    "{served} is old: {source} hold {} (notAfter {})",
                    short(&newer.fingerprint),
                    day(newer.not_after)
                )
            } else {
                format!("{served} is not in {source}; {source} are old or hold another certificate")
            };
            parts.push(format!("{host} on {}: {verdict}", s.endpoint));
        }
        if stale.len() > 5 {
            parts.push(format!("and {} more handshake(s)", stale.len() - 5));
        }
        format!(
            "the controller serves another certificate than expected: {}",
            parts.join("; ")
        )
    }

    /// Where the expected leaves come from, for notes.
    pub(super) fn expected_source(&self) -> &'static str {
        match self.kind {
            ReloadKind::ApiDriven => "the Secrets in the API",
            ReloadKind::Reload | ReloadKind::VerifyOnly => "the mounted files",
        }
    }
}

/// A Unix time as its UTC date.
pub(super) fn day(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| unix.to_string())
}

/// A 64-bit mix (splitmix64): spreads consecutive inputs over the whole range.
pub(super) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
