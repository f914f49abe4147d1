//! Authentication (bearer token → user) and the authorization hook.
//!
//! Every HTTP request goes through [`authorize`] exactly once, after the route is known and
//! before anything is read or written. Today the default [`AllowAll`] authorizer allows
//! everything; the RBAC issue plugs in an [`Authorizer`] built from the Roles/ClusterRoles and
//! bindings in `deploy/` through [`super::ApiServerConfig::authorizer`] and nothing else has to
//! change. The attributes are Kubernetes' authorizer attributes (`verb`, `apiGroup`,
//! `resource`, `subresource`, `namespace`, `name`, or a non-resource path), so rules map 1:1.

use std::fmt;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// User name (`system:anonymous` without a token).
    pub user: String,
    /// Groups (`system:authenticated` for token users, `system:unauthenticated` otherwise).
    pub groups: Vec<String>,
    /// Extra claims of the token, e.g. `authentication.kubernetes.io/node-name` of a
    /// ServiceAccount token bound to a pod (`ApiServerConfig::token_extra`).
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl Identity {
    /// A user authenticated by token.
    pub fn user(name: impl Into<String>) -> Self {
        Self {
            user: name.into(),
            groups: vec!["system:authenticated".into()],
            extra: Default::default(),
        }
    }

    /// No credentials.
    pub fn anonymous() -> Self {
        Self {
            user: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            extra: Default::default(),
        }
    }
}

/// Kubernetes authorizer attributes of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAttributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete` (resource requests), or the
    /// lower-case HTTP method for non-resource requests.
    pub verb: String,
    /// `true` for `/api/v1/...` and `/apis/<group>/<version>/...` object requests.
    pub resource_request: bool,
    /// API group (`""` for core, `events.k8s.io`).
    pub api_group: String,
    /// `pods`, `secrets`, `events`, `namespaces`.
    pub resource: String,
    /// `status` for `pods/<name>/status`, else empty.
    pub subresource: String,
    /// Namespace of the request (empty for cluster-wide lists/watches).
    pub namespace: String,
    /// Object name (empty for list/watch/create).
    pub name: String,
    /// URL path (for non-resource requests like `/api`, `/version`).
    pub path: String,
}

impl RequestAttributes {
    /// `resource` or `resource/subresource`, with `.group` appended for non-core groups
    /// (`events.events.k8s.io`), as kubectl spells it. Non-resource requests give the path.
    pub fn resource_key(&self) -> String {
        if !self.resource_request {
            return self.path.clone();
        }
        let mut s = self.resource.clone();
        if !self.subresource.is_empty() {
            s.push('/');
            s.push_str(&self.subresource);
        }
        if !self.api_group.is_empty() {
            s.push('.');
            s.push_str(&self.api_group);
        }
        s
    }
}

/// The answer of an [`Authorizer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// 403 Forbidden with this reason in the message.
    Deny(String),
}

/// Pluggable authorization (the RBAC issue implements this).
pub trait Authorizer: Send + Sync + fmt::Debug {
    /// Decide one request.
    fn authorize(&self, who: &Identity, attrs: &RequestAttributes) -> Decision;
}

/// Allows everything (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _who: &Identity, _attrs: &RequestAttributes) -> Decision {
        Decision::Allow
    }
}

/// The single authorization point every HTTP request passes through.
pub fn authorize(
    authorizer: &dyn Authorizer,
    who: &Identity,
    attrs: &RequestAttributes,
) -> Decision {
    let d = authorizer.authorize(who, attrs);
    if let Decision::Deny(why) = &d {
        tracing::debug!(user = %who.user, verb = %attrs.verb, resource = %attrs.resource_key(),
            namespace = %attrs.namespace, name = %attrs.name, why = %why, "request denied");
    }
    d
}
