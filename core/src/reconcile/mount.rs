//! One mount's state machine: where a mount becomes an action.
//!
//! ```text
//!              disk ≠ API                 nudge.after             stuckAfter
//!   InSync ─────────────▶ Pending ──────────────▶ Nudged ───────────────▶ Stuck
//!     ▲                      │  (≤ 2 nudges per Secret version per pod)    │
//!     └──────────────────────┴──────────── disk = API ◀────────────────────┘
//!                                  (lag observed; from Stuck: SecretMountRecovered)
//!
//!   SecretMissing   a required Secret or key is missing: kubelet cannot mount, nothing to do
//!   NeverUpdates    every watched consumer mounts it through subPath: nudging cannot help
//!   Unreadable      the volume directory cannot be read
//!   Unchecked       the agent cannot see kubelet's pod directories (a probe-only install):
//!                   disk is never compared, the served certificate is the only check
//!   Unknown         API or disk not seen yet
//! ```
//!
//! Pure: `step(input, now) -> actions`, with the clock passed in. No tokio, no kube.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use crate::action::{Action, VolumeNudge};
use crate::events::EventReason;
use crate::expected::Expected;

/// Which pod an action concerns (what Events are regarding and nudges patch).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MountState {
    Unknown,
    InSync,
    Pending,
    Nudged,
    Stuck,
    SecretMissing,
    NeverUpdates,
    Unreadable,
    Unchecked,
}

impl MountState {
    pub const ALL: [MountState; 9] = [
        MountState::Unknown,
        MountState::InSync,
        MountState::Pending,
        MountState::Nudged,
        MountState::Stuck,
        MountState::SecretMissing,
        MountState::NeverUpdates,
        MountState::Unreadable,
        MountState::Unchecked,
    ];

    /// Stable label value (`mountlag_mounts{state}`, `/status`).
    pub fn label(self) -> &'static str {
        match self {
            MountState::Unknown => "unknown",
            MountState::InSync => "in_sync",
            MountState::Pending => "pending",
            MountState::Nudged => "nudged",
            MountState::Stuck => "stuck",
            MountState::SecretMissing => "secret_missing",
            MountState::NeverUpdates => "never_updates",
            MountState::Unreadable => "unreadable",
            MountState::Unchecked => "unchecked",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub nudge_enabled: bool,
    pub nudge_after: Duration,
    /// `nudge.retryAfter`: how long after a nudge the second one may follow. Separate from
    /// `nudge_after` because a first nudge may come at once, while kubelet needs about a second
    /// to remount: a retry sooner than that would only double the API writes.
    pub nudge_retry_after: Duration,
    pub stuck_after: Duration,
}

/// At most this many nudges per Secret version per pod: one, and one more in case kubelet's own
/// Secret watch had not delivered the new version when it remounted.
pub const MAX_NUDGES_PER_VERSION: u8 = 2;

/// What the disk holds, as the watcher and a snapshot saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskView {
    Files {
        generation: Option<String>,
        /// Path → digest (`None` for a file too large to read).
        files: BTreeMap<String, Option<String>>,
    },
    Unreadable {
        reason: String,
    },
    /// The agent has no kubelet root to read (a probe-only install): disk is never seen.
    NotChecked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Expected(Expected),
    Disk(DiskView),
    /// Whether every API watch this mount depends on is current. While not, no nudge and no
    /// Event is raised from this mount: the agent cannot justify them.
    ApiHealthy(bool),
    /// The pod's nudge annotation as last seen (a previous run may have nudged already).
    ResyncAnnotation(Option<String>),
    Tick,
}

/// Facts about a mount that do not change while the pod lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub pod: PodRef,
    pub volume: String,
    /// Containers that mount the volume through `subPath`.
    pub subpath_containers: Vec<String>,
    /// Every watched consumer uses subPath: the containers never see an update.
    pub subpath_only: bool,
}

#[derive(Debug, Clone)]
pub struct Mount {
    spec: MountSpec,
    state: MountState,
    expected: Expected,
    /// `version_key()` of `expected` when it is `Files`: asked for every out-of-sync mount each
    /// time the node computes its next deadline, so kept rather than hashed again.
    expected_version: Option<String>,
    disk: Option<DiskView>,
    api_healthy: bool,
    /// When disk and API were first seen to differ (in this run).
    out_of_sync_since: Option<Instant>,
    nudged_version: Option<String>,
    nudges: u8,
    last_nudge: Option<Instant>,
    /// The nudge annotation found on the pod: (version, attempt) per volume it asked for, maybe
    /// left by a previous run.
    annotated_nudge: Vec<(String, u8)>,
    subpath_reported: bool,
}

/// The nudge annotation's value: for each volume of the pod it asks kubelet to remount, which
/// Secret versions and which attempt (`<version key>/<attempt>`, joined by `+` and sorted, so
/// the same request always reads the same), so a restarted agent knows how many nudges each
/// version has had. One volume reads as before: `<version key>/<attempt>`.
pub fn nudge_annotation(volumes: &[VolumeNudge]) -> String {
    let mut members: Vec<String> = volumes
        .iter()
        .map(|v| format!("{}/{}", v.version, v.attempt))
        .collect();
    members.sort();
    members.dedup();
    members.join("+")
}

/// `None` when any member is not `<version>/<attempt>`: the annotation is then ignored as a
/// whole (someone else wrote it), which at worst costs one nudge more.
fn parse_nudge_annotation(value: &str) -> Option<Vec<(String, u8)>> {
    value
        .split('+')
        .map(|member| {
            let (version, attempt) = member.rsplit_once('/')?;
            Some((version.to_string(), attempt.parse().ok()?))
        })
        .collect()
}

impl Mount {
    pub fn new(spec: MountSpec) -> Self {
        Self {
            spec,
            state: MountState::Unknown,
            expected: Expected::Unknown,
            expected_version: None,
            disk: None,
            api_healthy: true,
            out_of_sync_since: None,
            nudged_version: None,
            nudges: 0,
            last_nudge: None,
            annotated_nudge: Vec::new(),
            subpath_reported: false,
        }
    }

    pub fn spec(&self) -> &MountSpec {
        &self.spec
    }

    pub fn state(&self) -> MountState {
        self.state
    }

    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    pub fn disk(&self) -> Option<&DiskView> {
        self.disk.as_ref()
    }

    /// How long disk has differed from the API, at `now`.
    pub fn lag(&self, now: Instant) -> Option<Duration> {
        self.out_of_sync_since
            .map(|since| now.saturating_duration_since(since))
    }

    pub fn step(&mut self, input: Input, now: Instant, limits: &Thresholds) -> Vec<Action> {
        match input {
            Input::Expected(expected) => {
                self.expected_version = match &expected {
                    Expected::Files(files) => Some(files.version_key()),
                    _ => None,
                };
                self.expected = expected;
            }
            Input::Disk(disk) => self.disk = Some(disk),
            Input::ApiHealthy(healthy) => self.api_healthy = healthy,
            Input::ResyncAnnotation(value) => {
                self.annotated_nudge = value
                    .as_deref()
                    .and_then(parse_nudge_annotation)
                    .unwrap_or_default();
            }
            Input::Tick => {}
        }
        self.evaluate(now, limits)
    }

    /// When a previous run already nudged for the version we want, count its nudges, so a
    /// restart does not start a fresh round of two.
    fn adopt_previous_nudges(&mut self, version: &str, now: Instant) {
        if self.nudged_version.as_deref() == Some(version) {
            return;
        }
        if let Some((_, attempts)) = self.annotated_nudge.iter().find(|(v, _)| v == version) {
            self.nudged_version = Some(version.to_string());
            self.nudges = (*attempts).min(MAX_NUDGES_PER_VERSION);
            self.last_nudge = Some(now);
        }
    }

    /// The next instant at which a timer could change something.
    pub fn next_deadline(&self, limits: &Thresholds) -> Option<Instant> {
        let since = self.out_of_sync_since?;
        if !self.api_healthy {
            return None;
        }
        let nudge = self.next_nudge_at(since, limits);
        match self.state {
            MountState::Pending | MountState::Nudged => {
                let stuck = since + limits.stuck_after;
                Some(nudge.map_or(stuck, |n| n.min(stuck)))
            }
            // Reported stuck, but a retry may still be due: with nudge.retryAfter past
            // stuckAfter the second nudge comes after the report, and must not be dropped.
            MountState::Stuck => nudge,
            _ => None,
        }
    }

    fn next_nudge_at(&self, since: Instant, limits: &Thresholds) -> Option<Instant> {
        if !limits.nudge_enabled || self.nudges_used_for_current() >= MAX_NUDGES_PER_VERSION {
            return None;
        }
        match (self.nudges_used_for_current(), self.last_nudge) {
            (0, _) | (_, None) => Some(since + limits.nudge_after),
            (_, Some(last)) => Some(last + limits.nudge_retry_after),
        }
    }

    /// `name@resourceVersion` of the Secrets expected, for Events.
    fn expected_versions(&self) -> String {
        match &self.expected {
            Expected::Files(files) => files.describe_versions(),
            _ => String::new(),
        }
    }

    fn nudges_used_for_current(&self) -> u8 {
        match &self.expected_version {
            Some(version) if self.nudged_version.as_ref() == Some(version) => self.nudges,
            _ => 0,
        }
    }

    fn evaluate(&mut self, now: Instant, limits: &Thresholds) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.subpath_reported && !self.spec.subpath_containers.is_empty() {
            self.subpath_reported = true;
            actions.push(Action::Event {
                pod: self.spec.pod.clone(),
                related: None,
                reason: EventReason::SubPathNeverUpdates,
                note: format!(
                    "container(s) {} mount volume {:?} through subPath; kubelet never updates \
                     such mounts, so a rotated Secret reaches them only on container restart",
                    self.spec.subpath_containers.join(", "),
                    self.spec.volume
                ),
            });
        }
        let files = match (&self.expected, &self.disk) {
            (_, Some(DiskView::Unreadable { .. })) => {
                self.state = MountState::Unreadable;
                return actions;
            }
            // Known from the API alone: kubelet cannot fill the volume, whatever disk holds.
            (Expected::MountFails { .. }, _) => {
                self.state = MountState::SecretMissing;
                self.out_of_sync_since = None;
                return actions;
            }
            (_, Some(DiskView::NotChecked)) => {
                self.state = MountState::Unchecked;
                self.out_of_sync_since = None;
                return actions;
            }
            (Expected::Unknown, _) | (_, None) => {
                self.state = MountState::Unknown;
                return actions;
            }
            (Expected::Files(files), Some(DiskView::Files { files: disk, .. })) => {
                files.matches(disk)
            }
        };
        let in_sync = files;
        // Set with every `Files` expectation (`step`); cloned, not the whole expectation.
        let version = self.expected_version.clone().unwrap_or_default();
        self.adopt_previous_nudges(&version, now);
        if in_sync {
            if self.state == MountState::Stuck && self.api_healthy {
                actions.push(Action::Event {
                    pod: self.spec.pod.clone(),
                    related: None,
                    reason: EventReason::SecretMountRecovered,
                    note: format!(
                        "volume {:?} now holds {} after {}",
                        self.spec.volume,
                        self.expected_versions(),
                        seconds(self.lag(now).unwrap_or_default())
                    ),
                });
            }
            if let Some(lag) = self.lag(now) {
                actions.push(Action::ObserveLag {
                    seconds: lag.as_secs_f64(),
                });
            }
            self.out_of_sync_since = None;
            self.state = MountState::InSync;
            return actions;
        }
        let since = *self.out_of_sync_since.get_or_insert(now);
        if self.spec.subpath_only {
            self.state = MountState::NeverUpdates;
            return actions;
        }
        if self.state != MountState::Stuck && self.state != MountState::Nudged {
            self.state = MountState::Pending;
        }
        if !self.api_healthy {
            return actions;
        }
        if let Some(due) = self.next_nudge_at(since, limits)
            && now >= due
        {
            let volume = self.record_nudge(version, now);
            actions.push(Action::Nudge {
                pod: self.spec.pod.clone(),
                volumes: vec![volume],
            });
        }
        if self.state != MountState::Stuck && now >= since + limits.stuck_after {
            self.state = MountState::Stuck;
            actions.push(Action::Event {
                pod: self.spec.pod.clone(),
                related: None,
                reason: EventReason::SecretMountStuck,
                note: format!(
                    "volume {:?} still differs from {} after {} (kubelet has not written the \
                     current Secret version; nudges sent: {})",
                    self.spec.volume,
                    self.expected_versions(),
                    seconds(now.saturating_duration_since(since)),
                    self.nudges_used_for_current()
                ),
            });
        }
        actions
    }
}

impl Mount {
    /// Another volume of this pod is being nudged now: when this one lags too and still waits
    /// for its first nudge, it goes in the same pod update (kubelet remounts every volume of a
    /// pod on one sync), so a pod whose Secrets were renewed together costs one PATCH.
    /// Retries are not pulled forward: they keep their own `nudge.retryAfter`.
    pub fn join_nudge(&mut self, now: Instant, limits: &Thresholds) -> Option<VolumeNudge> {
        let Expected::Files(expected) = &self.expected else {
            return None;
        };
        let version = expected.version_key();
        let joinable = limits.nudge_enabled
            && self.api_healthy
            && self.out_of_sync_since.is_some()
            && !self.spec.subpath_only
            && matches!(
                self.state,
                MountState::Pending | MountState::Nudged | MountState::Stuck
            )
            && self.nudges_used_for_current() == 0;
        joinable.then(|| self.record_nudge(version, now))
    }

    fn record_nudge(&mut self, version: String, now: Instant) -> VolumeNudge {
        let attempt = if self.nudged_version.as_deref() == Some(version.as_str()) {
            self.nudges + 1
        } else {
            1
        };
        self.nudged_version = Some(version.clone());
        self.nudges = attempt;
        self.last_nudge = Some(now);
        if self.state == MountState::Pending {
            self.state = MountState::Nudged;
        }
        VolumeNudge {
            volume: self.spec.volume.clone(),
            version,
            attempt,
        }
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests;
