//! One pod's reload: decide when to reload, withhold broken material, and count a reload only
//! once the new leaf is served.
//!
//! ```text
//!  new generation on disk ──▶ material invalid? ──yes──▶ InvalidCertificateMaterial (no reload)
//!          │ valid
//!          ▼
//!   Waiting ── other volumes of the pod behind the API? wait (≤ stuckAfter); reload.minInterval
//!          │
//!          ▼
//!   Reloading ──(executor: signal / HTTP)──▶ Verifying ──probe every name + no SNI──▶ served = new?
//!          ▲                                     │ yes: ControllerReloaded (old → new, duration)
//!          └── retry with backoff ◀── verify.timeout: ReloadUnverified
//! ```
//!
//! The executor may withhold the signal (a Go program not proven to handle it):
//! `ReloadSignalWithheld`, then verify only, with no retry; a timeout there is
//! `ServedCertificateMismatch` and `/status` keeps saying `signal_withheld` and why.
//!
//! Controllers that reload by themselves (Envoy SDS) or read Secrets from the API
//! (ingress-nginx, ...) skip the signal: they go straight to Verifying, and a timeout there is
//! `ServedCertificateMismatch`. Pure: the clock is an argument.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::events::EventReason;

/// A leaf the controller should serve after the rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedLeaf {
    pub file: String,
    pub fingerprint: String,
    pub dns_names: Vec<String>,
    /// Unix seconds.
    pub not_after: i64,
}

/// What a new generation on disk holds, judged before anything is reloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    /// Key pairs match, leaves are within validity.
    Valid { leaves: Vec<ExpectedLeaf> },
    /// Something a server would refuse or serve broken: never reloaded.
    Invalid { reasons: Vec<String> },
    /// No certificate with a key: nothing to serve or verify (e.g. a CA bundle only).
    NoServedCertificate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadKind {
    /// Signal or HTTP call, then verify.
    Reload,
    /// The controller picks the files up itself (Envoy SDS): verify only.
    VerifyOnly,
    /// The controller reads the Secret from the API: verify served == API.
    ApiDriven,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadLimits {
    pub min_interval: Duration,
    pub verify_timeout: Duration,
    /// Bound on waiting for the pod's other lagging volumes.
    pub wait_for_others: Duration,
    pub expiry_warn_before: Duration,
    /// Reload attempts per generation after verification failed, with doubling backoff.
    pub max_attempts: u8,
    /// `verify.interval`: how often an idle pod's served leaves are checked again (jittered by
    /// ±10% per pod and round, so pods started together do not probe together).
    pub verify_interval: Duration,
    /// `verify.mismatchAfter`: how long served ≠ expected may last before it is reported.
    pub mismatch_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Idle,
    /// Valid material waiting for the rest of the rotation or for `min_interval`.
    Waiting {
        since: Instant,
    },
    /// Reload requested; waiting for the executor.
    Reloading {
        attempt: u8,
        swapped_at: Instant,
    },
    Verifying {
        attempt: u8,
        swapped_at: Instant,
        deadline: Instant,
        next_probe: Instant,
        probe_in_flight: bool,
        backoff: Duration,
        /// The run of consecutive rounds that all served the expected leaf: when it began and
        /// how many rounds it holds.
        matched: Option<(Instant, u8)>,
    },
    /// Verification failed; reload again at `retry_at`.
    RetryAt {
        attempt: u8,
        swapped_at: Instant,
        retry_at: Instant,
    },
}

/// The first probe after a reload waits this long; later ones back off to `PROBE_MAX`. No
/// controller serves new material sooner (nginx and HAProxy take 50–100 ms to start new
/// workers): an earlier handshake is work that can only find the old leaf.
const PROBE_FIRST: Duration = Duration::from_millis(25);
const PROBE_MAX: Duration = Duration::from_millis(500);
/// One round serving the new leaf does not prove the old one is gone: nginx keeps its old
/// workers accepting for 100 ms after the new ones start (the master sleeps before it tells
/// them to quit), and a loaded node stretches that. A reload counts as verified only after
/// `CONFIRM_ROUNDS` consecutive rounds, `CONFIRM_GAP` apart, all served the new leaf.
const CONFIRM_ROUNDS: u8 = 3;
const CONFIRM_GAP: Duration = Duration::from_millis(150);

#[derive(Debug, Clone)]
pub struct PodReload {
    kind: ReloadKind,
    limits: ReloadLimits,
    phase: Phase,
    lagging: BTreeSet<String>,
    /// Volumes whose new material waits for this reload.
    fresh: BTreeSet<String>,
    /// What should be served once the reload is done.
    expected: Vec<ExpectedLeaf>,
    /// What was last seen served, by name.
    served: BTreeMap<Option<String>, String>,
    /// The notAfter of what was last seen served, by name (when the leaf parsed).
    served_not_after: BTreeMap<Option<String>, i64>,
    /// The last probe round, for the notes that say what is wrong with it.
    last_round: Option<ProbeRound>,
    last_reload: Option<Instant>,
    last_result: Option<ReloadResult>,
    /// Why the last result is what it is, for `/status` (no secret material: reasons name
    /// files, processes and fingerprints).
    last_message: Option<String>,
    /// Set when the executor withheld this generation's signal: verification is then
    /// verify-only (no retry, a timeout is a mismatch, not a failed reload).
    signal_withheld: bool,
    warned_expiry_for: Option<String>,
    /// Extra SNI names from the profile.
    extra_hosts: Vec<String>,
    /// What each host must serve, when the hosts come from Ingress and Gateway objects.
    plan: Option<HostPlan>,
    /// The names the current verification probes, when not all (only the hosts whose Secret
    /// changed).
    verify_names: Option<Vec<String>>,
    /// The check of an idle pod's served leaves every `verify_interval`.
    check: PeriodicCheck,
    /// The current served ≠ expected episode, if any.
    mismatch: Option<Mismatch>,
    /// Fingerprints of the expected leaves the last reload was requested for: a periodic check
    /// reloads at most once for material nothing has reloaded for yet.
    reloaded_for: Vec<String>,
}

impl PodReload {
    /// `jitter_seed` spreads the pod's periodic checks (the node derives it from the pod UID).
    pub fn new(
        kind: ReloadKind,
        limits: ReloadLimits,
        extra_hosts: Vec<String>,
        jitter_seed: u64,
    ) -> Self {
        Self {
            kind,
            limits,
            phase: Phase::Idle,
            lagging: BTreeSet::new(),
            fresh: BTreeSet::new(),
            expected: Vec::new(),
            served: BTreeMap::new(),
            served_not_after: BTreeMap::new(),
            last_round: None,
            last_reload: None,
            last_result: None,
            last_message: None,
            signal_withheld: false,
            warned_expiry_for: None,
            extra_hosts,
            plan: None,
            verify_names: None,
            check: PeriodicCheck::new(jitter_seed),
            mismatch: None,
            reloaded_for: Vec::new(),
        }
    }

    pub fn last_result(&self) -> Option<ReloadResult> {
        self.last_result
    }

    /// Why the last result is what it is (for `/status`).
    pub fn last_message(&self) -> Option<&str> {
        self.last_message.as_deref()
    }

    fn set_result(&mut self, result: ReloadResult, message: String) {
        self.last_result = Some(result);
        self.last_message = Some(message);
    }

    /// Whether what is served equals what is expected, when known.
    pub fn served_matches(&self) -> Option<bool> {
        if !self.has_expectations() || self.served.is_empty() {
            return None;
        }
        let mut compared = self
            .served
            .iter()
            .filter_map(|(name, fp)| {
                Some(self.expected_for(name.as_deref())?.contains(&fp.as_str()))
            })
            .peekable();
        compared.peek()?;
        Some(compared.all(|matches| matches))
    }

    /// What was last served for `host`, and whether it is what the host must serve (`None`:
    /// not compared).
    pub fn served_for(&self, host: &str) -> Option<ServedFor<'_>> {
        let name = Some(host.to_string());
        let fingerprint = self.served.get(&name)?;
        let matches = self
            .expected_for(Some(host))
            .map(|expected| expected.contains(&fingerprint.as_str()));
        Some(ServedFor {
            fingerprint,
            matches,
            not_after: self.served_not_after.get(&name).copied(),
        })
    }

    pub fn served_fingerprint(&self) -> Option<&str> {
        self.served.get(&None).map(String::as_str)
    }

    /// A label for /status.
    pub fn phase_label(&self) -> &'static str {
        match self.phase {
            Phase::Idle => "idle",
            Phase::Waiting { .. } => "waiting",
            Phase::Reloading { .. } => "reloading",
            Phase::Verifying { .. } => "verifying",
            Phase::RetryAt { .. } => "retry",
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Idle => self.check_due_at(),
            Phase::Reloading { .. } => None,
            Phase::Waiting { since } => Some(self.release_at(*since)),
            Phase::Verifying {
                deadline,
                next_probe,
                probe_in_flight,
                ..
            } => Some(if *probe_in_flight {
                *deadline
            } else {
                (*next_probe).min(*deadline)
            }),
            Phase::RetryAt { retry_at, .. } => Some(*retry_at),
        }
    }

    /// When waiting valid material may go: the rest of the rotation has arrived (or waiting
    /// for it took too long), and the last reload is `min_interval` ago.
    fn release_at(&self, since: Instant) -> Instant {
        let others = if !self.lagging.is_subset(&self.fresh) {
            since + self.limits.wait_for_others
        } else {
            since
        };
        let interval = self
            .last_reload
            .map_or(since, |last| last + self.limits.min_interval);
        others.max(interval)
    }

    pub fn step(&mut self, input: ReloadInput, now: Instant) -> Vec<Decision> {
        let mut actions = Vec::new();
        match input {
            ReloadInput::NewMaterial {
                volume,
                generation,
                material,
            } => {
                if self.kind == ReloadKind::ApiDriven {
                    return actions;
                }
                match material {
                    Material::Invalid { reasons } => {
                        let note = format!(
                            "volume {volume:?} generation {generation} holds material a server must not load; reload withheld, the old certificate stays served: {}",
                            reasons.join("; ")
                        );
                        self.set_result(ReloadResult::Withheld, note.clone());
                        actions.push(self.event(EventReason::InvalidCertificateMaterial, note));
                        actions.push(Decision::Finished {
                            result: ReloadResult::Withheld,
                            seconds: 0.0,
                        });
                        // Anything already waiting was older material: keep waiting for it, and
                        // release nothing now, while the disk holds what must not be loaded.
                        return actions;
                    }
                    // A volume without a served pair (a CA bundle) has caught up: what waits
                    // for it may go.
                    Material::NoServedCertificate => {}
                    Material::Valid { leaves } => {
                        self.expected = leaves;
                        self.verify_names = None;
                        self.signal_withheld = false;
                        self.fresh.insert(volume);
                        self.phase = match self.kind {
                            ReloadKind::Reload => Phase::Waiting { since: now },
                            _ => self.verifying(0, now, now),
                        };
                    }
                }
            }
            ReloadInput::Baseline { material } => self.baseline(material, now),
            ReloadInput::ApiLeaves { leaves, hosts } => {
                let leaves = hosts.as_ref().map_or(leaves, HostPlan::leaves);
                if self.kind == ReloadKind::ApiDriven
                    && (leaves != self.expected || hosts != self.plan)
                {
                    // A thousand hosts and one renewed Secret: verify the hosts it serves,
                    // not all of them (the periodic check covers the rest).
                    let changed: Option<Vec<String>> = match (&self.plan, &hosts) {
                        (Some(old), Some(new)) => Some(
                            new.by_host
                                .iter()
                                .filter(|(host, leaves)| old.by_host.get(*host) != Some(leaves))
                                .map(|(host, _)| host.clone())
                                .collect(),
                        ),
                        _ => None,
                    };
                    // A renewal wave: the next Secret changes before the controller serves the
                    // last one. The verification still running keeps its hosts, or they would
                    // wait for the next periodic check (5 minutes by default).
                    let running = matches!(self.phase, Phase::Verifying { .. });
                    self.verify_names = match (running, self.verify_names.take(), changed) {
                        (true, Some(mut names), Some(changed)) => {
                            names.retain(|host| {
                                hosts.as_ref().is_some_and(|p| p.by_host.contains_key(host))
                            });
                            names.extend(changed);
                            names.sort();
                            names.dedup();
                            Some(names)
                        }
                        // Already verifying every name.
                        (true, None, _) => None,
                        (_, _, changed) => changed,
                    };
                    self.expected = leaves;
                    self.plan = hosts;
                    if self.has_expectations() {
                        self.phase = self.verifying(0, now, now);
                    }
                }
            }
            // Only a hand-off before the real input: releasing here would reload for the
            // material waiting so far, and the input (the last lagging volume's new material)
            // would start a second reload right behind it.
            ReloadInput::Lagging(volumes) => {
                self.lagging = volumes;
                return actions;
            }
            ReloadInput::Reloaded(result) => {
                if let Phase::Reloading {
                    attempt,
                    swapped_at,
                } = self.phase
                {
                    match result {
                        Ok(()) => {
                            self.last_reload = Some(now);
                            self.phase = self.verifying(attempt, swapped_at, now);
                        }
                        Err(failure) if failure.kind == FailureKind::SignalWithheld => {
                            // Not retried: the process's identity will not change by waiting,
                            // and a new process (restart) is judged again on the next rotation.
                            let note = format!(
                                "reload signal withheld, verifying only: {}",
                                failure.message
                            );
                            self.set_result(ReloadResult::SignalWithheld, note.clone());
                            self.signal_withheld = true;
                            actions.push(self.event(EventReason::ReloadSignalWithheld, note));
                            actions.push(Decision::Finished {
                                result: ReloadResult::SignalWithheld,
                                seconds: 0.0,
                            });
                            self.phase = self.verifying(attempt, swapped_at, now);
                        }
                        Err(failure) => {
                            let reason = if failure.kind == FailureKind::ProcessNotFound {
                                EventReason::ControllerProcessNotFound
                            } else {
                                EventReason::ReloadUnverified
                            };
                            let note = format!("cannot reload: {}", failure.message);
                            self.set_result(ReloadResult::Failed, note.clone());
                            actions.push(self.event(reason, note));
                            actions.push(Decision::Finished {
                                result: ReloadResult::Failed,
                                seconds: now.saturating_duration_since(swapped_at).as_secs_f64(),
                            });
                            self.phase = self.retry_or_idle(attempt, swapped_at, now);
                        }
                    }
                }
            }
            ReloadInput::Probed(round) => self.probed(round, now, &mut actions),
            ReloadInput::Tick => self.start_check_if_due(now, &mut actions),
        }
        self.advance(now, &mut actions);
        actions
    }

    fn verifying(&self, attempt: u8, swapped_at: Instant, now: Instant) -> Phase {
        Phase::Verifying {
            attempt,
            swapped_at,
            deadline: now + self.verify_deadline(),
            next_probe: now + PROBE_FIRST,
            probe_in_flight: false,
            backoff: PROBE_FIRST,
            matched: None,
        }
    }

    /// How long the new leaf may take to be served: `verify.timeout` after a reload or for a
    /// controller that watches its files, `verify.mismatchAfter` for one that reads the API
    /// (it picks a Secret up on its own schedule, seconds later).
    fn verify_deadline(&self) -> Duration {
        match self.kind {
            ReloadKind::ApiDriven => self.limits.mismatch_after,
            ReloadKind::Reload | ReloadKind::VerifyOnly => self.limits.verify_timeout,
        }
    }

    fn retry_or_idle(&self, attempt: u8, swapped_at: Instant, now: Instant) -> Phase {
        if self.kind == ReloadKind::Reload
            && !self.signal_withheld
            && attempt + 1 < self.limits.max_attempts
        {
            let backoff =
                self.limits.min_interval.max(Duration::from_secs(1)) * 2u32.pow(u32::from(attempt));
            Phase::RetryAt {
                attempt: attempt + 1,
                swapped_at,
                retry_at: now + backoff,
            }
        } else {
            Phase::Idle
        }
    }

    fn advance(&mut self, now: Instant, actions: &mut Vec<Decision>) {
        match self.phase.clone() {
            Phase::Waiting { since } if now >= self.release_at(since) => {
                self.phase = Phase::Reloading {
                    attempt: 0,
                    swapped_at: since,
                };
                self.reloaded_for = self.expected_fingerprints();
                actions.push(Decision::Reload { attempt: 1 });
            }
            Phase::RetryAt {
                attempt,
                swapped_at,
                retry_at,
            } if now >= retry_at => {
                self.phase = Phase::Reloading {
                    attempt,
                    swapped_at,
                };
                actions.push(Decision::Reload {
                    attempt: attempt + 1,
                });
            }
            Phase::Verifying {
                attempt,
                swapped_at,
                deadline,
                next_probe,
                probe_in_flight,
                backoff,
                matched,
            } => {
                if now >= deadline && !probe_in_flight {
                    self.verification_timed_out(attempt, swapped_at, now, actions);
                } else if !probe_in_flight && now >= next_probe {
                    self.phase = Phase::Verifying {
                        attempt,
                        swapped_at,
                        deadline,
                        next_probe,
                        probe_in_flight: true,
                        backoff,
                        matched,
                    };
                    let names = match &self.verify_names {
                        Some(names) => names.clone(),
                        None => self.probe_names(),
                    };
                    actions.push(Decision::Probe { names });
                }
            }
            _ => {}
        }
        if self.phase == Phase::Idle {
            // Also right after a verification ended (verified or timed out) in this step.
            self.schedule_check(now);
        } else {
            // A rotation's verification probes instead; the next check counts from its end.
            self.check.cancel();
        }
    }

    fn event(&self, reason: EventReason, note: String) -> Decision {
        Decision::Event { reason, note }
    }
}

fn names_match(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(suffix)),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

fn short(fingerprint: &str) -> String {
    fingerprint.chars().take(16).collect()
}

fn seconds(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

mod check;
mod io;
mod round;
#[cfg(test)]
mod tests;
mod verify;

pub use io::{Decision, FailureKind, ReloadFailure, ReloadInput, ReloadResult};
pub use round::{HostPlan, ProbeKey, ProbeRound, ServedFor, ServedLeaf};

use check::{Mismatch, PeriodicCheck};
