//! Hosts from Ingress and Gateway objects, for controllers that read their certificates from
//! the API.
//!
//! ```text
//!  local pods of profiles with a RouteMatch ─▶ kinds to watch (none: a node without such
//!                                              pods opens no route watch)
//!  route objects ─▶ RouteIndex::hosts_for ─▶ host → Secret per profile ─▶ Secret watches by name
//!  those Secrets ─▶ HostPlan per pod (what each host must serve) ─▶ PodReload (probe, compare)
//!               └▶ host problems (missing, unusable, not permitted) ─▶ one Event each,
//!                  regarding the Ingress or Gateway; /status hosts[]; mountlag_tls_hosts
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::Serialize;

use crate::action::Action;
use crate::events::EventReason;
use crate::reconcile::SecretKey;
use crate::reconcile::material::material_of_secrets;
use crate::reconcile::reload::{ExpectedLeaf, HostPlan, Material};
use crate::routes::{RouteKind, RouteOrigin};
use crate::secret::SecretView;
use crate::text::untrusted;

use super::Node;

/// A Secret some host needs, as the API has it.
#[derive(Debug, Clone, Default)]
pub(super) struct RouteSecret {
    synced: bool,
    /// `Ok`: the leaves a server may serve; `Err`: why none (missing, lacks a key, invalid).
    judged: Option<Result<Vec<ExpectedLeaf>, HostTrouble>>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum HostTrouble {
    Missing,
    Invalid(String),
}

/// One problem with one host, reported once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct HostProblem {
    origin: RouteOrigin,
    host: Option<String>,
    secret: SecretKey,
    reason: EventReason,
    message: String,
}

/// What a controller's pods must serve, when its hosts come from routes.
pub(super) enum Plan {
    /// The profile has no RouteMatch, or its routes name no host: expectations come from the
    /// pod's own Secrets.
    NoRoutes,
    /// A kind or a Secret has not listed yet.
    NotSynced,
    Ready(HostPlan),
}

/// The state of one TLS host, for `/status` and `mountlag_tls_hosts{state}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Its Secret holds a certificate with its key.
    Ok,
    /// Its Secret has not been listed yet.
    Unknown,
    SecretMissing,
    SecretInvalid,
    /// In another namespace, and no ReferenceGrant allows it.
    RefNotPermitted,
}

impl HostState {
    pub const ALL: [HostState; 5] = [
        HostState::Ok,
        HostState::Unknown,
        HostState::SecretMissing,
        HostState::SecretInvalid,
        HostState::RefNotPermitted,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HostState::Ok => "ok",
            HostState::Unknown => "unknown",
            HostState::SecretMissing => "secret_missing",
            HostState::SecretInvalid => "secret_invalid",
            HostState::RefNotPermitted => "ref_not_permitted",
        }
    }
}

/// `/status` `hosts[]`: one TLS host of one controller profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    pub controller: String,
    /// `None`: a certificate reference no host is served with (not permitted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `namespace/name`.
    pub secret: String,
    /// `Ingress shop/web`, `Gateway infra/edge listener https`.
    pub from: String,
    pub state: HostState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What each local pod of the controller served for the host at its last probe.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub served: Vec<HostServed>,
}

/// One pod's answer for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostServed {
    pub pod: String,
    pub fingerprint_sha256: String,
    /// Whether it is the certificate of the host's Secret (absent: not compared).
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<bool>,
    /// The served leaf's notAfter, RFC 3339 (absent when it did not parse).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// It expires within `expiry.warnBefore` (or has expired).
    pub expiring: bool,
}

/// A Unix time as RFC 3339.
fn rfc3339(unix: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// Whether `view` is a TLS Secret a server may serve, at `now_unix`.
fn judge(view: &SecretView, now_unix: i64) -> Result<Vec<ExpectedLeaf>, HostTrouble> {
    for key in ["tls.crt", "tls.key"] {
        if !view.keys.contains_key(key) {
            return Err(HostTrouble::Invalid(format!("it has no {key}")));
        }
    }
    if !view.certificates.contains_key("tls.crt") {
        return Err(HostTrouble::Invalid("tls.crt is not PEM".into()));
    }
    match material_of_secrets(&view.certificates) {
        Material::Valid { leaves } => {
            if let Some(expired) = leaves.iter().find(|l| l.not_after < now_unix) {
                return Err(HostTrouble::Invalid(format!(
                    "its certificate {} has expired",
                    expired.fingerprint.chars().take(16).collect::<String>()
                )));
            }
            Ok(leaves)
        }
        Material::Invalid { reasons } => Err(HostTrouble::Invalid(reasons.join("; "))),
        Material::NoServedCertificate => Err(HostTrouble::Invalid(
            "tls.key does not belong to the certificate in tls.crt".into(),
        )),
    }
}

impl Node {
    /// The kinds the local controller pods' profiles need, under a watch; the rest not.
    pub(super) fn sync_route_watches(&mut self) -> Vec<Action> {
        let wanted: BTreeSet<RouteKind> = self
            .local_route_profiles()
            .into_iter()
            .flat_map(|(_, matcher)| matcher.kinds())
            .collect();
        let mut actions = Vec::new();
        let gone: Vec<RouteKind> = self
            .route_kinds
            .keys()
            .filter(|k| !wanted.contains(k))
            .copied()
            .collect();
        for kind in &gone {
            self.route_kinds.remove(kind);
            actions.push(Action::UnwatchRoutes(*kind));
        }
        self.routes.forget_kinds(&gone);
        for kind in wanted {
            if let std::collections::btree_map::Entry::Vacant(entry) = self.route_kinds.entry(kind)
            {
                entry.insert(false);
                actions.push(Action::WatchRoutes(kind));
            }
        }
        actions
    }

    /// Profiles with a RouteMatch and at least one pod on this node.
    fn local_route_profiles(&self) -> Vec<(String, crate::routes::RouteMatch)> {
        let local: BTreeSet<&str> = self.pods.values().map(|p| p.controller.as_str()).collect();
        self.settings
            .controllers
            .iter()
            .filter(|c| local.contains(c.name.as_str()))
            .filter_map(|c| Some((c.name.clone(), c.routes.clone()?)))
            .collect()
    }

    /// Hosts per local profile, and the Secrets they need (new ones unsynced until listed).
    pub(super) fn compute_route_hosts(&mut self) {
        self.route_hosts = self
            .local_route_profiles()
            .into_iter()
            .map(|(name, matcher)| {
                let hosts = self.routes.hosts_for(&matcher);
                (name, hosts)
            })
            .collect();
        let wanted: BTreeSet<SecretKey> = self
            .route_hosts
            .values()
            .flat_map(|h| h.secrets().cloned())
            .collect();
        self.route_secrets.retain(|key, _| wanted.contains(key));
        for key in wanted {
            self.route_secrets.entry(key).or_default();
        }
    }

    /// A Secret watch's news, for the Secrets hosts need.
    pub(super) fn route_secret_observed(
        &mut self,
        key: &SecretKey,
        view: Option<&SecretView>,
        now_unix: i64,
    ) {
        if let Some(secret) = self.route_secrets.get_mut(key) {
            secret.synced = true;
            secret.judged = Some(match view {
                Some(view) => judge(view, now_unix),
                None => Err(HostTrouble::Missing),
            });
            self.route_secrets_changed = true;
        }
    }

    /// What the controller's pods must serve per host; [`Plan::NoRoutes`] for a profile
    /// without a RouteMatch.
    pub(super) fn host_plan(&self, controller: &str) -> Plan {
        let Some(hosts) = self.route_hosts.get(controller) else {
            return Plan::NoRoutes;
        };
        // No Ingress or Gateway names a host of it (yet): what it serves is judged by the
        // Secrets its pods mount, as for a profile without routes.
        if hosts.hosts.is_empty() && hosts.default_certificate.is_none() {
            return Plan::NoRoutes;
        }
        let synced = self.route_kinds.values().all(|listed| *listed)
            && hosts
                .secrets()
                .all(|k| self.route_secrets.get(k).is_some_and(|s| s.synced));
        if !synced {
            return Plan::NotSynced;
        }
        let leaves_of = |key: &SecretKey| -> Vec<ExpectedLeaf> {
            match self.route_secrets.get(key).and_then(|s| s.judged.as_ref()) {
                Some(Ok(leaves)) => leaves.clone(),
                _ => Vec::new(),
            }
        };
        let mut plan = HostPlan::default();
        for host in &hosts.hosts {
            plan.by_host
                .entry(host.host.clone())
                .or_default()
                .extend(leaves_of(&host.secret));
        }
        plan.default = hosts.default_certificate.as_ref().map(leaves_of);
        Plan::Ready(plan)
    }

    /// After routes or their Secrets changed: each route-driven pod's plan, and the problems
    /// to report.
    pub(super) fn route_expectations(&mut self, now: Instant) -> Vec<Action> {
        let pods: Vec<String> = self
            .pods
            .values()
            .filter(|p| self.route_hosts.contains_key(&p.controller))
            .map(|p| p.uid.clone())
            .collect();
        let mut actions = Vec::new();
        for uid in pods {
            actions.extend(self.api_leaves_of_pod(&uid, now));
        }
        actions.extend(self.report_host_problems());
        actions
    }

    fn host_problems(&self) -> BTreeSet<HostProblem> {
        let mut problems = BTreeSet::new();
        for hosts in self.route_hosts.values() {
            for host in &hosts.hosts {
                let Some(Some(Err(trouble))) = self
                    .route_secrets
                    .get(&host.secret)
                    .map(|s| s.judged.as_ref())
                else {
                    continue;
                };
                let secret = format!("{}/{}", host.secret.namespace, host.secret.name);
                let (reason, message) = match trouble {
                    HostTrouble::Missing => (
                        EventReason::TLSSecretMissing,
                        format!(
                            "TLS host {} of {} names Secret {secret}, which does not exist: the controller cannot serve its certificate",
                            untrusted(&host.host),
                            untrusted(&host.origin.describe())
                        ),
                    ),
                    HostTrouble::Invalid(why) => (
                        EventReason::TLSSecretInvalid,
                        format!(
                            "TLS host {} of {} names Secret {secret}, which cannot be served: {why}",
                            untrusted(&host.host),
                            untrusted(&host.origin.describe())
                        ),
                    ),
                };
                problems.insert(HostProblem {
                    origin: host.origin.clone(),
                    host: Some(host.host.clone()),
                    secret: host.secret.clone(),
                    reason,
                    message,
                });
            }
            for refused in &hosts.not_permitted {
                problems.insert(HostProblem {
                    origin: refused.origin.clone(),
                    host: None,
                    secret: refused.secret.clone(),
                    reason: EventReason::TLSSecretRefNotPermitted,
                    message: format!(
                        "{} refers to Secret {}/{}, which it may not: {}",
                        untrusted(&refused.origin.describe()),
                        refused.secret.namespace,
                        refused.secret.name,
                        refused.why
                    ),
                });
            }
        }
        problems
    }

    /// One Event per new problem, regarding the Ingress or Gateway; a problem that went away
    /// and comes back is reported again.
    fn report_host_problems(&mut self) -> Vec<Action> {
        let now = self.host_problems();
        let actions = now
            .difference(&self.reported_host_problems)
            .map(|p| Action::RouteEvent {
                regarding: p.origin.clone(),
                reason: p.reason,
                note: p.message.clone(),
            })
            .collect();
        self.reported_host_problems = now;
        actions
    }

    /// `/status` `hosts[]`, at `now_unix` (for what expires).
    pub(super) fn host_statuses(&self, now_unix: i64) -> Vec<HostStatus> {
        let warn_before =
            i64::try_from(self.settings.reload.expiry_warn_before.as_secs()).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        for (controller, hosts) in &self.route_hosts {
            for host in &hosts.hosts {
                let (state, message) = match self
                    .route_secrets
                    .get(&host.secret)
                    .and_then(|s| s.judged.as_ref())
                {
                    None => (HostState::Unknown, None),
                    Some(Ok(_)) => (HostState::Ok, None),
                    Some(Err(HostTrouble::Missing)) => (HostState::SecretMissing, None),
                    Some(Err(HostTrouble::Invalid(why))) => {
                        (HostState::SecretInvalid, Some(why.clone()))
                    }
                };
                let served = self
                    .pods
                    .values()
                    .filter(|p| &p.controller == controller)
                    .filter_map(|p| {
                        let served = self.reloads.get(&p.uid)?.served_for(&host.host)?;
                        Some(HostServed {
                            pod: format!("{}/{}", p.namespace, p.name),
                            fingerprint_sha256: served.fingerprint.to_string(),
                            matches: served.matches,
                            not_after: served.not_after.and_then(rfc3339),
                            expiring: served
                                .not_after
                                .is_some_and(|t| t - now_unix <= warn_before),
                        })
                    })
                    .collect();
                out.push(HostStatus {
                    controller: controller.clone(),
                    host: Some(host.host.clone()),
                    secret: format!("{}/{}", host.secret.namespace, host.secret.name),
                    from: host.origin.describe(),
                    state,
                    message,
                    served,
                });
            }
            for refused in &hosts.not_permitted {
                out.push(HostStatus {
                    controller: controller.clone(),
                    host: None,
                    secret: format!("{}/{}", refused.secret.namespace, refused.secret.name),
                    from: refused.origin.describe(),
                    state: HostState::RefNotPermitted,
                    message: Some(refused.why.clone()),
                    served: Vec::new(),
                });
            }
        }
        out
    }

    /// `mountlag_served_certificate_match` for the Secrets of route hosts: per pod and Secret,
    /// whether every host served with it was answered with its certificate.
    pub(super) fn route_served_matches(&self) -> Vec<super::ServedMatch> {
        let mut out = Vec::new();
        for (controller, hosts) in &self.route_hosts {
            for pod in self.pods.values().filter(|p| &p.controller == controller) {
                let Some(reload) = self.reloads.get(&pod.uid) else {
                    continue;
                };
                let mut by_secret: BTreeMap<&SecretKey, bool> = BTreeMap::new();
                for host in &hosts.hosts {
                    if let Some(crate::reconcile::reload::ServedFor {
                        matches: Some(matches),
                        ..
                    }) = reload.served_for(&host.host)
                    {
                        *by_secret.entry(&host.secret).or_insert(true) &= matches;
                    }
                }
                out.extend(
                    by_secret
                        .into_iter()
                        .map(|(secret, matches)| super::ServedMatch {
                            namespace: pod.namespace.clone(),
                            pod: pod.name.clone(),
                            secret: format!("{}/{}", secret.namespace, secret.name),
                            matches,
                        }),
                );
            }
        }
        out
    }

    /// `mountlag_tls_hosts{controller, state}`: every profile with routes, every state.
    pub(super) fn host_counts(
        &self,
        statuses: &[HostStatus],
    ) -> BTreeMap<(String, HostState), usize> {
        let mut counts = BTreeMap::new();
        for controller in self.route_hosts.keys() {
            for state in HostState::ALL {
                counts.insert((controller.clone(), state), 0);
            }
        }
        for status in statuses {
            *counts
                .entry((status.controller.clone(), status.state))
                .or_default() += 1;
        }
        counts
    }

    /// Readiness lines for routes: kinds not listed yet.
    pub(super) fn routes_waiting_for(&self) -> Option<String> {
        let unlisted: Vec<&str> = self
            .route_kinds
            .iter()
            .filter(|(_, listed)| !**listed)
            .map(|(kind, _)| kind.resource())
            .collect();
        (!unlisted.is_empty()).then(|| format!("not listed yet: {}", unlisted.join(", ")))
    }

    /// Every route Secret has listed.
    pub(super) fn routes_secrets_synced(&self) -> bool {
        self.route_secrets.values().all(|s| s.synced)
    }

    /// Route Secrets not listed yet.
    pub(super) fn unsynced_route_secrets(&self) -> impl Iterator<Item = &SecretKey> {
        self.route_secrets
            .iter()
            .filter(|(_, s)| !s.synced)
            .map(|(k, _)| k)
    }
}
