//! What goes into one pod's reload machine and what comes out of it.

use std::collections::BTreeSet;

use crate::events::EventReason;

use super::{ExpectedLeaf, HostPlan, Material, ProbeRound};

/// What one pod's reload machine decided. The node model turns each into an
/// [`crate::action::Action`] for that pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Signal the controller (or call its reload URL).
    Reload {
        attempt: u8,
    },
    /// Handshake with every name of the expected leaves and once without SNI.
    Probe {
        names: Vec<String>,
    },
    Event {
        reason: EventReason,
        note: String,
    },
    /// `mountlag_reload_duration_seconds` and `mountlag_reloads_total{result}`.
    Finished {
        result: ReloadResult,
        seconds: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    Verified,
    Unverified,
    /// Invalid material: not reloaded.
    Withheld,
    /// The signal was not sent to a Go program not proven to handle it.
    SignalWithheld,
    Failed,
}

impl ReloadResult {
    pub fn label(self) -> &'static str {
        match self {
            ReloadResult::Verified => "verified",
            ReloadResult::Unverified => "unverified",
            ReloadResult::Withheld => "withheld",
            ReloadResult::SignalWithheld => "signal_withheld",
            ReloadResult::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadInput {
    /// A mount of this pod has a new generation on disk with this material.
    NewMaterial {
        volume: String,
        generation: String,
        material: Material,
    },
    /// A volume of this pod read for the first time (agent start, pod start): what the
    /// controller should be serving already. No reload; a check soon, which reloads once when
    /// the controller serves an older leaf (a reload lost to an agent restart).
    Baseline {
        material: Material,
    },
    /// For API-driven controllers: the leaves the API Secrets hold now, and, for controllers
    /// whose hosts come from Ingress and Gateway objects, what each host must serve.
    ApiLeaves {
        leaves: Vec<ExpectedLeaf>,
        hosts: Option<HostPlan>,
    },
    /// The pod's mounts known to be behind the API. The ones whose new material is already
    /// waiting do not count: only the rest of a rotation is waited for.
    Lagging(BTreeSet<String>),
    /// The executor signalled (Ok) or did not (Err: why, and which kind of failure).
    Reloaded(Result<(), ReloadFailure>),
    Probed(ProbeRound),
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadFailure {
    pub kind: FailureKind,
    pub message: String,
}

/// Why the executor did not reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The signal or HTTP call failed: retried with backoff.
    Failed,
    /// No process to signal was found: `ControllerProcessNotFound`, retried with backoff.
    ProcessNotFound,
    /// The signal was withheld on purpose (a Go program not proven to handle it): reported,
    /// verified only, never retried for this generation.
    SignalWithheld,
}
