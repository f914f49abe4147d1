//! What a probe round brings back, and what a pod must serve per host: the values that pass
//! between the agent's prober and the reload machine.

use std::collections::BTreeMap;

use super::ExpectedLeaf;

/// What a pod last served for one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedFor<'a> {
    pub fingerprint: &'a str,
    /// Whether it is what the host must serve (`None`: not compared).
    pub matches: Option<bool>,
    /// Unix seconds, when the leaf parsed.
    pub not_after: Option<i64>,
}

/// What one probe round saw: per handshake the served leaf, or why there was none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProbeRound {
    pub served: BTreeMap<ProbeKey, Result<ServedLeaf, String>>,
    /// Wall-clock time of the probe, Unix seconds (certificate validity is wall-clock).
    pub at_unix: i64,
}

/// One handshake of a round: an SNI name (`None`: without SNI) on one pod IP and port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeKey {
    pub sni: Option<String>,
    /// `10.0.0.7:443`, `[fd00::7]:443`.
    pub endpoint: String,
}

impl ProbeRound {
    /// The leaf served without SNI (on the first endpoint), else any leaf: the one whose
    /// expiry and fingerprint stand for the pod.
    pub fn default_leaf(&self) -> Option<&ServedLeaf> {
        let mut ok = self
            .served
            .iter()
            .filter_map(|(k, r)| Some((k, r.as_ref().ok()?)));
        let first = ok.clone().next().map(|(_, leaf)| leaf);
        ok.find(|(k, _)| k.sni.is_none())
            .map(|(_, leaf)| leaf)
            .or(first)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedLeaf {
    pub fingerprint: String,
    /// Unix seconds.
    pub not_after: Option<i64>,
    /// As the probe printed it (`CN=a.example, O=...`); empty when the DER did not parse.
    pub subject: String,
}

/// What each host must serve, for a controller whose hosts come from Ingress and Gateway
/// objects: only these hosts are probed (a certificate's other names may not be routed to it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostPlan {
    /// Host → the leaves its Secret holds. Empty: the Secret is missing or unusable, so no
    /// served leaf is right (the controller serves a placeholder).
    pub by_host: BTreeMap<String, Vec<ExpectedLeaf>>,
    /// Expected without SNI; `None`: not compared (the controller's own default certificate).
    pub default: Option<Vec<ExpectedLeaf>>,
}

impl HostPlan {
    /// Every leaf the plan expects somewhere.
    pub fn leaves(&self) -> Vec<ExpectedLeaf> {
        let mut leaves: Vec<ExpectedLeaf> = Vec::new();
        for leaf in self.by_host.values().chain(self.default.iter()).flatten() {
            if !leaves.iter().any(|l| l.fingerprint == leaf.fingerprint) {
                leaves.push(leaf.clone());
            }
        }
        leaves
    }
}
