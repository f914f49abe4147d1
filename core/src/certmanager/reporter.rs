//! One reporter per finding, without leader election: every agent that sees a finding computes
//! the same answer from the same cluster-wide list of controller pods, and only the agent on
//! that pod's node publishes.
//!
//! The reporter of a finding is the node of the first pod, by namespace and name, among the
//! scheduled, not terminating pods that serve what the finding is about (the pods of its
//! controller profile that mount the Secret, or all pods of the profile when the finding comes
//! from its Ingress or Gateway hosts).
//!
//! Readiness is deliberately not part of the choice: pods become ready at different times on
//! different nodes, and a choice that follows readiness moves while they do, so two agents
//! report the same finding one after the other (measured: 1 run in 3 with three agents
//! starting together). A pod's name is fixed from its scheduling to its deletion; whether the
//! controller in it is ready says nothing about the agent on its node.

use std::collections::BTreeSet;

use crate::reconcile::SecretKey;

use super::findings::Server;

/// A controller pod anywhere in the cluster, as the reporter choice needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// The controller profile that selects it.
    pub controller: String,
    /// `spec.nodeName`; `None` while unscheduled (never a reporter).
    pub node: Option<String>,
    /// Being deleted (`deletionTimestamp` set): its node stops reporting now, not when it is
    /// gone.
    pub terminating: bool,
    /// Secrets its volumes use (its own namespace), sorted, each once: a pod names a few, and
    /// a set would take a 0.5 KiB tree node for each of the cluster's pods.
    pub secrets: Vec<SecretKey>,
}

impl PeerPod {
    fn serves(&self, server: &Server) -> bool {
        self.controller == server.controller
            && server
                .secret
                .as_ref()
                .is_none_or(|secret| self.secrets.contains(secret))
    }
}

/// The node that reports a finding served by `servers`; `None` when no pod of the list serves
/// it (the list is not complete yet).
pub fn reporter<'a>(
    peers: impl IntoIterator<Item = &'a PeerPod>,
    servers: &BTreeSet<Server>,
) -> Option<&'a str> {
    peers
        .into_iter()
        .filter(|p| p.node.is_some() && !p.terminating && servers.iter().any(|s| p.serves(s)))
        .min_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)))
        .and_then(|p| p.node.as_deref())
}
