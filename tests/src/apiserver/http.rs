//! The HTTP side: routing, discovery, list/get/create/update/patch/delete, watch streams.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::admission::AdmissionRequest;
use super::auth::{self, Decision, Identity, RequestAttributes};
use super::convert::{
    from_storage, present, to_storage, validate_events_v1_create, with_type_meta,
};
use super::discovery;
use super::error::ApiError;
use super::faults::WatchFault;
use super::kinds::{ApiGroup, Resource};
use super::patch::{self, PatchType};
use super::select::{FieldSelector, LabelSelector};
use super::store::{ChangeType, Part, Preconditions, StoreChange};
use super::{ApiStats, PatchRecord, RequestShape, Shared};

/// Largest request body accepted (Secrets are ≤ 1 MiB).
const MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Debug, Default)]
pub(crate) struct StatsInner {
    pub requests: BTreeMap<(String, String), u64>,
    pub requests_by_user: BTreeMap<String, u64>,
    pub requests_by_shape: BTreeMap<RequestShape, u64>,
    pub bytes_by_user: BTreeMap<String, u64>,
    pub watch_events_by_user: BTreeMap<String, u64>,
    pub open_watches: BTreeMap<String, usize>,
    pub open_watches_by_user: BTreeMap<String, usize>,
    pub watches_started: u64,
    pub watches_started_by_user: BTreeMap<String, u64>,
    /// Open connection → the users that sent a request on it.
    pub connection_users: HashMap<u64, BTreeSet<String>>,
    pub refused_while_stopped: u64,
    pub forbidden: BTreeMap<(String, String), u64>,
    pub admission_denied: u64,
    pub connections_accepted: u64,
    pub open_connections: usize,
    pub requests_by_http_version: BTreeMap<String, u64>,
    pub faults: super::FaultCounts,
    pub patches: BTreeMap<(String, String, String), u64>,
    pub patch_log: std::collections::VecDeque<PatchRecord>,
}

/// PATCH requests kept in [`super::ApiServer::patches`] (oldest dropped first).
pub(crate) const PATCH_LOG_CAPACITY: usize = 10_000;

impl StatsInner {
    pub fn snapshot(&self, rv: u64) -> ApiStats {
        ApiStats {
            requests: self.requests.clone(),
            requests_by_user: self.requests_by_user.clone(),
            requests_by_shape: self.requests_by_shape.clone(),
            bytes_by_user: self.bytes_by_user.clone(),
            watch_events_by_user: self.watch_events_by_user.clone(),
            open_watches: self.open_watches.values().sum(),
            open_watches_by_resource: self
                .open_watches
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| (k.clone(), *n))
                .collect(),
            open_watches_by_user: self
                .open_watches_by_user
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| (k.clone(), *n))
                .collect(),
            watches_started: self.watches_started,
            watches_started_by_user: self.watches_started_by_user.clone(),
            open_connections_by_user: self.open_connections_by_user(),
            refused_while_stopped: self.refused_while_stopped,
            forbidden: self.forbidden.clone(),
            admission_denied: self.admission_denied,
            connections_accepted: self.connections_accepted,
            open_connections: self.open_connections,
            requests_by_http_version: self.requests_by_http_version.clone(),
            resource_version: rv,
            faults: self.faults.clone(),
            patches: self.patches.clone(),
        }
    }
}

impl StatsInner {
    fn open_connections_by_user(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for user in self.connection_users.values().flatten() {
            *out.entry(user.clone()).or_default() += 1;
        }
        out
    }

    /// Adds `n` response body bytes to `user`.
    fn count_bytes(&mut self, user: &str, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        match self.bytes_by_user.get_mut(user) {
            Some(total) => *total = total.saturating_add(n),
            None => {
                self.bytes_by_user.insert(user.to_owned(), n);
            }
        }
    }
}

/// The connection a request came on (set per connection by `serve_connection`), so that
/// connections can be counted per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionId(pub u64);

pub(crate) fn lock_stats(m: &Mutex<StatsInner>) -> MutexGuard<'_, StatsInner> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Version,
    Health,
    Api,
    ApiV1,
    Apis,
    /// `/apis/<group>` of a served group.
    Group(&'static str),
    /// `/apis/<group>/<version>` of a served group version.
    GroupVersion(ApiGroup),
    Objects {
        group: ApiGroup,
        resource: Resource,
        namespace: Option<String>,
        name: Option<String>,
        subresource: Option<String>,
    },
    Namespaces {
        name: Option<String>,
    },
    NotFound,
}

fn parse_route(path: &str) -> Route {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz"] => Route::Health,
        ["api"] => Route::Api,
        ["api", "v1"] => Route::ApiV1,
        ["api", "v1", rest @ ..] => parse_objects(ApiGroup::Core, rest),
        ["apis"] => Route::Apis,
        ["apis", group] => match ApiGroup::versions_of(group).first() {
            Some(g) => Route::Group(g.group()),
            None => Route::NotFound,
        },
        ["apis", group, version, rest @ ..] => match ApiGroup::from_group_version(group, version) {
            Some(g) if rest.is_empty() => Route::GroupVersion(g),
            Some(g) => parse_objects(g, rest),
            None => Route::NotFound,
        },
        _ => Route::NotFound,
    }
}

/// A route into a group the cluster does not serve (its CRDs not installed) is not found.
fn unserve(route: Route, unserved: &[&str]) -> Route {
    let group = match &route {
        Route::Group(name) => *name,
        Route::GroupVersion(g) | Route::Objects { group: g, .. } => g.group(),
        _ => return route,
    };
    if unserved.contains(&group) {
        Route::NotFound
    } else {
        route
    }
}

/// The resource of a URL segment, if it is served at `group`.
fn resource_in(group: ApiGroup, s: &str) -> Option<Resource> {
    Resource::from_plural(s).filter(|r| r.served_at(group))
}

/// The object paths under a group version, as the real server lays them out: namespaced kinds
/// under `namespaces/<ns>/` (and a cluster-wide list/watch path without it), cluster-scoped
/// kinds only without it. A path of the wrong scope is not found.
fn parse_objects(group: ApiGroup, rest: &[&str]) -> Route {
    let obj = |res: &str, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        let Some(resource) = resource_in(group, res) else {
            return Route::NotFound;
        };
        // Namespaced kinds are named only inside a namespace; cluster-scoped ones never are.
        let scope_ok = match ns {
            Some(_) => resource.namespaced(),
            None => !resource.namespaced() || name.is_none(),
        };
        if !scope_ok {
            return Route::NotFound;
        }
        Route::Objects {
            group,
            resource,
            namespace: ns.map(str::to_owned),
            name: name.map(str::to_owned),
            subresource: sub.map(str::to_owned),
        }
    };
    match rest {
        ["namespaces"] if group == ApiGroup::Core => Route::Namespaces { name: None },
        ["namespaces", ns] if group == ApiGroup::Core => Route::Namespaces {
            name: Some((*ns).to_owned()),
        },
        ["namespaces", ns, res] => obj(res, Some(ns), None, None),
        ["namespaces", ns, res, name] => obj(res, Some(ns), Some(name), None),
        ["namespaces", ns, res, name, sub] => obj(res, Some(ns), Some(name), Some(sub)),
        [res] => obj(res, None, None, None),
        [res, name] => obj(res, None, Some(name), None),
        [res, name, sub] => obj(res, None, Some(name), Some(sub)),
        _ => Route::NotFound,
    }
}

fn is_true(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true" || v == "1")
}

fn verb_of(method: &Method, route: &Route, q: &HashMap<String, String>) -> String {
    let named = match route {
        Route::Objects { name, .. } | Route::Namespaces { name } => Some(name.is_some()),
        _ => None,
    };
    let Some(named) = named else {
        return method.as_str().to_ascii_lowercase();
    };
    match (method.as_str(), named) {
        ("GET", true) => "get",
        ("GET", false) if is_true(q, "watch") => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (m, _) => return m.to_ascii_lowercase(),
    }
    .to_owned()
}

fn attributes(
    method: &Method,
    route: &Route,
    q: &HashMap<String, String>,
    path: &str,
) -> RequestAttributes {
    let verb = verb_of(method, route, q);
    let mut a = RequestAttributes {
        verb,
        resource_request: false,
        api_group: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
        path: path.to_owned(),
    };
    match route {
        Route::Objects {
            group,
            resource,
            namespace,
            name,
            subresource,
        } => {
            a.resource_request = true;
            a.api_group = group.group().to_owned();
            a.resource = resource.plural().to_owned();
            a.subresource = subresource.clone().unwrap_or_default();
            a.namespace = namespace.clone().unwrap_or_default();
            a.name = name.clone().unwrap_or_default();
        }
        Route::Namespaces { name } => {
            a.resource_request = true;
            a.resource = "namespaces".into();
            a.name = name.clone().unwrap_or_default();
        }
        _ => {}
    }
    a
}

pub(crate) fn json_response(code: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(crate) fn error_response(e: &ApiError) -> Response {
    json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.status(),
    )
}

fn identify(sh: &Shared, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let Some(h) = headers.get(header::AUTHORIZATION) else {
        return Ok(Identity::anonymous());
    };
    let h = h.to_str().unwrap_or("");
    let token = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
        .map(str::trim);
    match token.and_then(|t| Some((t, sh.config.tokens.get(t)?))) {
        Some((token, user)) => {
            let mut who = Identity::user(user.clone());
            if let Some(extra) = sh.config.token_extra.get(token) {
                who.extra = extra.clone();
            }
            Ok(who)
        }
        None => Err(ApiError::new(401, "Unauthorized", "Unauthorized")),
    }
}

/// How the client wants objects (from `Accept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Full,
    Metadata,
}

fn shape_of(headers: &HeaderMap) -> Shape {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    // Only the first (most preferred) media type counts; Table is never offered (kubectl then
    // falls back to JSON, its later choice) — see docs/testbed.md.
    let first = accept.split(',').next().unwrap_or("");
    if first.contains("as=PartialObjectMetadata") {
        Shape::Metadata
    } else {
        Shape::Full
    }
}

fn shaped(shape: Shape, obj: Value) -> Value {
    match shape {
        Shape::Full => obj,
        Shape::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
        }),
    }
}

/// The one entry point of every HTTP request.
pub(crate) async fn handle(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    *lock_stats(&sh.stats)
        .requests_by_http_version
        .entry(format!("{:?}", req.version()))
        .or_default() += 1;
    if !sh.available.load(Ordering::SeqCst) {
        lock_stats(&sh.stats).refused_while_stopped += 1;
        return error_response(&ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ));
    }
    let rejection = sh.faults().take_rejection();
    if let Some(rejection) = rejection {
        sh.count_fault(&format!("reject_{}", rejection.status));
        let mut response = error_response(&ApiError::new(
            rejection.status,
            super::faults::reason_of(rejection.status),
            "the server is overloaded; try again later (injected)",
        ));
        if let Ok(value) = header::HeaderValue::from_str(&rejection.retry_after_seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let (mut parts, body) = req.into_parts();
    let who = match identify(&sh, &parts.headers) {
        Ok(w) => w,
        Err(e) => return error_response(&e),
    };
    let q: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let route = unserve(parse_route(&path), &sh.config.unserved_groups);
    let attrs = attributes(&parts.method, &route, &q, &path);
    if let Decision::Deny(why) = auth::authorize(sh.config.authorizer.as_ref(), &who, &attrs) {
        *lock_stats(&sh.stats)
            .forbidden
            .entry((attrs.verb.clone(), attrs.resource_key()))
            .or_default() += 1;
        return error_response(&ApiError::new(
            403,
            "Forbidden",
            format!(
                "{} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\"{}: {why}",
                attrs.resource_key(),
                who.user,
                attrs.verb,
                // As kube-apiserver words it: `resource "pods/portforward"`.
                if attrs.subresource.is_empty() {
                    attrs.resource.clone()
                } else {
                    format!("{}/{}", attrs.resource, attrs.subresource)
                },
                attrs.api_group,
                if attrs.namespace.is_empty() {
                    " at the cluster scope".to_owned()
                } else {
                    format!(" in the namespace \"{}\"", attrs.namespace)
                }
            ),
        ));
    }
    {
        let mut st = lock_stats(&sh.stats);
        *st.requests
            .entry((attrs.verb.clone(), attrs.resource_key()))
            .or_default() += 1;
        *st.requests_by_user.entry(who.user.clone()).or_default() += 1;
        *st.requests_by_shape
            .entry(RequestShape::of(&who.user, &attrs, &q))
            .or_default() += 1;
        if let Some(ConnectionId(id)) = parts.extensions.get::<ConnectionId>().copied()
            && let Some(users) = st.connection_users.get_mut(&id)
            && !users.contains(&who.user)
        {
            users.insert(who.user.clone());
        }
    }
    if let Route::Objects {
        group: ApiGroup::Core,
        resource: Resource::Pods,
        namespace: Some(ns),
        name: Some(name),
        subresource: Some(sub),
    } = &route
        && sub == "portforward"
    {
        return super::portforward::upgrade(&sh, &mut parts, ns, name, &q)
            .unwrap_or_else(|e| error_response(&e));
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(&ApiError::bad_request(format!(
                "reading the request body: {e}"
            )));
        }
    };
    let shape = shape_of(&parts.headers);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let result = dispatch(
        &sh,
        &who,
        &parts.method,
        route,
        &attrs.verb,
        &q,
        shape,
        &content_type,
        &body,
    );
    let response = match result {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    if attrs.verb == "patch" && attrs.resource_request {
        record_patch(&sh, &who, &attrs, &content_type, &body, response.status());
    }
    count_response_bytes(&sh, &who.user, response)
}

/// Counts the response body's bytes for `user`: at once when its length is known, else (watch
/// streams) chunk by chunk as the connection takes them. Headers and HTTP/2 or TLS framing
/// are not counted.
fn count_response_bytes(sh: &Arc<Shared>, user: &str, response: Response) -> Response {
    use axum::body::HttpBody as _;
    let (parts, body) = response.into_parts();
    if let Some(n) = body.size_hint().exact() {
        lock_stats(&sh.stats).count_bytes(user, usize::try_from(n).unwrap_or(usize::MAX));
        return Response::from_parts(parts, body);
    }
    let sh = Arc::clone(sh);
    let user = user.to_owned();
    let counted = body.into_data_stream().inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            lock_stats(&sh.stats).count_bytes(&user, chunk.len());
        }
    });
    Response::from_parts(parts, Body::from_stream(counted))
}

/// Keeps one authorized PATCH request (its body as sent, and the answer's status).
fn record_patch(
    sh: &Shared,
    who: &Identity,
    attrs: &RequestAttributes,
    content_type: &str,
    body: &Bytes,
    status: StatusCode,
) {
    let parsed = if PatchType::from_content_type(content_type) == Some(PatchType::Apply) {
        serde_yaml::from_slice::<Value>(body).ok()
    } else {
        serde_json::from_slice::<Value>(body).ok()
    };
    let record = PatchRecord {
        user: who.user.clone(),
        resource: attrs.resource_key(),
        namespace: attrs.namespace.clone(),
        name: attrs.name.clone(),
        content_type: content_type.to_owned(),
        body: parsed.unwrap_or_else(|| Value::String(String::from_utf8_lossy(body).into_owned())),
        code: status.as_u16(),
    };
    let mut st = lock_stats(&sh.stats);
    *st.patches
        .entry((
            record.resource.clone(),
            record.namespace.clone(),
            record.name.clone(),
        ))
        .or_default() += 1;
    if st.patch_log.len() >= PATCH_LOG_CAPACITY {
        st.patch_log.pop_front();
    }
    st.patch_log.push_back(record);
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    sh: &Arc<Shared>,
    who: &Identity,
    method: &Method,
    route: Route,
    verb: &str,
    q: &HashMap<String, String>,
    shape: Shape,
    content_type: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let get_only = |v: Value| {
        if method == Method::GET {
            Ok(json_response(StatusCode::OK, &v))
        } else {
            Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            )))
        }
    };
    match route {
        Route::Version => get_only(version()),
        Route::Health => {
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response())
        }
        Route::Api => get_only(discovery::core_versions(sh.port)),
        Route::ApiV1 => get_only(discovery::resource_list(ApiGroup::Core)),
        Route::Apis => get_only(discovery::group_list(&sh.config.unserved_groups)),
        Route::Group(name) => match discovery::group(name) {
            Some(g) => get_only(g),
            None => Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )),
        },
        Route::GroupVersion(g) => get_only(discovery::resource_list(g)),
        Route::NotFound => Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
        Route::Namespaces { name } => match (verb, name) {
            ("list", None) => Ok(json_response(StatusCode::OK, &namespace_list(sh))),
            ("get", Some(n)) => Ok(json_response(
                StatusCode::OK,
                &with_ns_type(namespace_object(sh, &n)),
            )),
            _ => Err(ApiError::method_not_allowed(
                "the testbed API serves namespaces read-only (get, list)",
            )),
        },
        Route::Objects {
            group,
            resource,
            namespace,
            name,
            subresource,
        } => {
            let part = match subresource.as_deref() {
                None => Part::Main,
                Some("status")
                    if resource.has_status_subresource()
                        && matches!(verb, "get" | "update" | "patch") =>
                {
                    Part::Status
                }
                _ => {
                    return Err(ApiError::new(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    ));
                }
            };
            let ctx = ObjCtx {
                sh,
                who,
                group,
                resource,
                namespace,
                part,
                shape,
            };
            match (verb, name) {
                ("list", None) => ctx.list(q),
                ("watch", None) => ctx.watch(q),
                ("get", Some(n)) => ctx.get(&n),
                ("create", None) => ctx.create(content_type, body),
                ("update", Some(n)) => ctx.update(&n, content_type, body),
                ("patch", Some(n)) => ctx.patch(&n, content_type, body),
                ("delete", Some(n)) => ctx.delete(&n, body),
                _ => Err(ApiError::method_not_allowed(format!(
                    "the server does not allow this method on the requested resource ({verb})"
                ))),
            }
        }
    }
}

fn with_ns_type(v: Value) -> Value {
    let mut out = json!({"kind": "Namespace", "apiVersion": "v1"});
    if let (Some(o), Value::Object(m)) = (out.as_object_mut(), v) {
        o.extend(m);
    }
    out
}

fn namespace_object(sh: &Shared, name: &str) -> Value {
    json!({
        "metadata": {
            "name": name,
            "uid": super::stable_uid(&format!("namespace/{name}")),
            "resourceVersion": "1",
            "creationTimestamp": sh.started,
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

fn namespace_list(sh: &Shared) -> Value {
    let mut names = sh.store.namespaces();
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        names.insert(n.to_owned());
    }
    json!({
        "kind": "NamespaceList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": sh.store.resource_version().to_string()},
        "items": names.iter().map(|n| namespace_object(sh, n)).collect::<Vec<_>>(),
    })
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "gitVersion": "v1.33.0-mountlag-testbed",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

struct Selectors {
    fields: FieldSelector,
    labels: LabelSelector,
}

impl Selectors {
    fn parse(r: Resource, group: ApiGroup, q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?;
        fields
            .check_supported(r.kind(), r.field_labels(group))
            .map_err(ApiError::bad_request)?;
        let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?;
        Ok(Self { fields, labels })
    }

    /// `obj` as presented to the client's group.
    fn matches(&self, obj: &Value) -> bool {
        self.fields.matches_object(obj) && self.labels.matches_object(obj)
    }
}

struct ObjCtx<'a> {
    sh: &'a Arc<Shared>,
    who: &'a Identity,
    group: ApiGroup,
    resource: Resource,
    namespace: Option<String>,
    part: Part,
    shape: Shape,
}

fn parse_body(content_type: &str, body: &Bytes) -> Result<Value, ApiError> {
    let base = content_type.split(';').next().unwrap_or("").trim();
    match base {
        "" | "application/json" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}"))),
        "application/yaml" | "application/apply-patch+yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e}"))),
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types \
                 include: application/json (got {other}; the testbed API speaks JSON only)"
            ),
        )),
    }
}

fn key_of(v: &Value) -> (String, String) {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

fn encode_continue(rv: u64, key: &(String, String)) -> String {
    hex::encode(format!("{rv}\n{}\n{}", key.0, key.1))
}

fn decode_continue(tok: &str) -> Result<(u64, (String, String)), ApiError> {
    let bad = || ApiError::bad_request("invalid value for continue parameter");
    let raw = hex::decode(tok).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let mut it = raw.splitn(3, '\n');
    let rv = it.next().and_then(|r| r.parse().ok()).ok_or_else(bad)?;
    let ns = it.next().ok_or_else(bad)?.to_owned();
    let name = it.next().ok_or_else(bad)?.to_owned();
    Ok((rv, (ns, name)))
}

impl ObjCtx<'_> {
    /// Admission of an update of an existing object (subresources such as `pods/status` are
    /// not admitted: no shipped policy names them).
    fn admit(&self, ns: &str, name: &str, old: &Value, new: &Value) -> Result<(), ApiError> {
        if self.part != Part::Main {
            return Ok(());
        }
        let version = self.group.api_version();
        let request = AdmissionRequest {
            who: self.who,
            operation: "UPDATE",
            api_group: self.group.group(),
            api_version: version.rsplit('/').next().unwrap_or(version),
            resource: self.resource.plural(),
            namespace: ns,
            name,
            object: new,
            old_object: Some(old),
        };
        self.sh.config.admission.admit(&request).map_err(|denial| {
            lock_stats(&self.sh.stats).admission_denied += 1;
            let code = if denial.reason == "Forbidden" {
                403
            } else {
                422
            };
            ApiError::new(code, &denial.reason, denial.message)
        })
    }

    /// The store namespace of a single-object request: the URL's for namespaced kinds (a
    /// cluster-wide path cannot create one), `""` for cluster-scoped kinds (routing keeps
    /// namespaced paths away from them).
    fn ns_required(&self) -> Result<&str, ApiError> {
        if !self.resource.namespaced() {
            return Ok("");
        }
        self.namespace.as_deref().ok_or_else(|| {
            ApiError::method_not_allowed(format!(
                "{} must be addressed in a namespace (/namespaces/<ns>/{})",
                self.resource.plural(),
                self.resource.plural()
            ))
        })
    }

    fn out(&self, obj: &Value) -> Value {
        shaped(self.shape, present(self.resource, self.group, obj))
    }

    fn list(&self, q: &HashMap<String, String>) -> Result<Response, ApiError> {
        let sel = Selectors::parse(self.resource, self.group, q)?;
        let (items, rv) = self.sh.store.list(self.resource, self.namespace.as_deref());
        let (list_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
            Some(tok) => {
                let (rv, key) = decode_continue(tok)?;
                (rv, Some(key))
            }
            None => (rv, None),
        };
        let limit: usize = q
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let mut selected = items
            .iter()
            .map(|s| from_storage(self.resource, self.group, &s.obj))
            .filter(|o| after.as_ref().is_none_or(|a| key_of(o) > *a))
            .filter(|o| sel.matches(o));
        let mut out = Vec::new();
        let mut last_key = None;
        for o in selected.by_ref().take(limit) {
            last_key = Some(key_of(&o));
            out.push(match self.shape {
                Shape::Full => o,
                Shape::Metadata => shaped(Shape::Metadata, o),
            });
        }
        let remaining = selected.count();
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if remaining > 0
            && let Some(k) = last_key
        {
            metadata["continue"] = json!(encode_continue(list_rv, &k));
            metadata["remainingItemCount"] = json!(remaining);
        }
        let (kind, api_version) = match self.shape {
            Shape::Full => (
                format!("{}List", self.resource.kind()),
                self.group.api_version().to_owned(),
            ),
            Shape::Metadata => (
                "PartialObjectMetadataList".to_owned(),
                "meta.k8s.io/v1".to_owned(),
            ),
        };
        Ok(json_response(
            StatusCode::OK,
            &json!({"kind": kind, "apiVersion": api_version, "metadata": metadata, "items": out}),
        ))
    }

    fn get(&self, name: &str) -> Result<Response, ApiError> {
        let ns = self.ns_required()?;
        let s = self
            .sh
            .store
            .get(self.resource, ns, name)
            .ok_or_else(|| ApiError::not_found(&self.resource.qualified(), name))?;
        Ok(json_response(StatusCode::OK, &self.out(&s.obj)))
    }

    fn create(&self, content_type: &str, body: &Bytes) -> Result<Response, ApiError> {
        let ns = self.ns_required()?;
        let mut obj = parse_body(content_type, body)?;
        if self.resource == Resource::Events && self.group == ApiGroup::EventsV1 {
            validate_events_v1_create(&obj, ns).map_err(|e| {
                let name = obj
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                ApiError::invalid("Event", name, e)
            })?;
        }
        to_storage(self.resource, self.group, &mut obj);
        let created = self.sh.store.create(self.resource, ns, obj, self.group)?;
        Ok(json_response(StatusCode::CREATED, &self.out(&created)))
    }

    fn update(&self, name: &str, content_type: &str, body: &Bytes) -> Result<Response, ApiError> {
        let ns = self.ns_required()?;
        let mut obj = parse_body(content_type, body)?;
        to_storage(self.resource, self.group, &mut obj);
        // Events allow create-on-update, pods and secrets do not.
        let create_missing = self.resource == Resource::Events && self.part == Part::Main;
        let existed = self.sh.store.get(self.resource, ns, name).is_some();
        let new = self.sh.store.modify(
            self.resource,
            ns,
            name,
            self.part,
            create_missing,
            self.group,
            |old| {
                if let Some(old) = old {
                    self.admit(
                        ns,
                        name,
                        &present(self.resource, self.group, old),
                        &present(self.resource, self.group, &obj),
                    )?;
                }
                Ok(obj)
            },
        )?;
        let code = if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        Ok(json_response(code, &self.out(&new)))
    }

    fn patch(&self, name: &str, content_type: &str, body: &Bytes) -> Result<Response, ApiError> {
        let ns = self.ns_required()?;
        let kind = PatchType::from_content_type(content_type)
            // Custom resources have no patch strategy: the real server refuses strategic merge.
            .filter(|k| !(self.resource.is_custom() && *k == PatchType::Strategic))
            .ok_or_else(|| self.unsupported_patch(content_type))?;
        let patch_body: Value = match kind {
            PatchType::Apply => serde_yaml::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid apply body: {e}")))?,
            _ => serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid patch body: {e}")))?,
        };
        let (r, g) = (self.resource, self.group);
        let existed = self.sh.store.get(r, ns, name).is_some();
        let new =
            self.sh
                .store
                .modify(r, ns, name, self.part, kind == PatchType::Apply, g, |old| {
                    let mut cur = match old {
                        Some(o) => present(r, g, o),
                        None => with_type_meta(r, g, json!({})),
                    };
                    patch::apply(kind, &mut cur, &patch_body)
                        .map_err(|e| ApiError::new(422, "Invalid", e))?;
                    if let Some(old) = old {
                        self.admit(ns, name, &present(r, g, old), &cur)?;
                    }
                    to_storage(r, g, &mut cur);
                    Ok(cur)
                })?;
        let code = if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        Ok(json_response(code, &self.out(&new)))
    }

    fn unsupported_patch(&self, content_type: &str) -> ApiError {
        let strategic = if self.resource.is_custom() {
            ""
        } else {
            ", application/strategic-merge-patch+json"
        };
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types \
                 include: application/json-patch+json, application/merge-patch+json, \
                 application/apply-patch+yaml{strategic} (got {content_type})"
            ),
        )
    }

    fn delete(&self, name: &str, body: &Bytes) -> Result<Response, ApiError> {
        let ns = self.ns_required()?;
        let mut pre = Preconditions::default();
        if !body.is_empty()
            && let Ok(opts) = serde_json::from_slice::<Value>(body)
        {
            pre.uid = opts
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_owned);
            pre.resource_version = opts
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        let gone = self.sh.store.delete(self.resource, ns, name, &pre)?;
        Ok(json_response(StatusCode::OK, &self.out(&gone)))
    }

    fn watch(&self, q: &HashMap<String, String>) -> Result<Response, ApiError> {
        let sel = Selectors::parse(self.resource, self.group, q)?;
        let bookmarks = is_true(q, "allowWatchBookmarks");
        let send_initial = is_true(q, "sendInitialEvents");
        if send_initial && !bookmarks {
            return Err(ApiError::bad_request(
                "sendInitialEvents requires allowWatchBookmarks=true",
            ));
        }
        let rv_param = q.get("resourceVersion").map_or("", String::as_str);
        let from = if send_initial || rv_param.is_empty() || rv_param == "0" {
            None
        } else {
            Some(rv_param.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {rv_param:?}"))
            })?)
        };
        let timeout = match q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()) {
            Some(t) if t > 0 => Some(Duration::from_secs(t)),
            _ => self.sh.config.default_watch_timeout,
        };
        let key = RequestAttributes {
            verb: "watch".into(),
            resource_request: true,
            api_group: self.group.group().into(),
            resource: self.resource.plural().into(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
            path: String::new(),
        }
        .resource_key();
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let spec = WatchSpec {
            sh: self.sh.clone(),
            group: self.group,
            resource: self.resource,
            namespace: self.namespace.clone(),
            sel,
            shape: self.shape,
            bookmarks,
            send_initial,
            from,
            timeout,
            key,
            user: self.who.user.clone(),
        };
        // Subscribe now (not in the task), so nothing committed after this request is missed.
        let start = self.sh.store.watch(self.resource, from);
        {
            let mut st = lock_stats(&self.sh.stats);
            st.watches_started += 1;
            *st.watches_started_by_user
                .entry(self.who.user.clone())
                .or_default() += 1;
        }
        let gauge = WatchGauge::new(self.sh.clone(), spec.key.clone(), self.who.user.clone());
        let fault = self.sh.faults().watch_fault();
        tokio::spawn(async move {
            let _gauge = gauge;
            let start = match (start, fault) {
                (Ok(_), Some(WatchFault::Gone)) => {
                    spec.sh.count_fault("watch_gone");
                    Err(ApiError::new(
                        410,
                        "Expired",
                        format!(
                            "too old resource version: {} (injected)",
                            spec.from.unwrap_or(0)
                        ),
                    ))
                }
                (Ok(_), Some(WatchFault::Silent)) => {
                    spec.sh.count_fault("watch_silent");
                    let mut epoch = spec.sh.epoch.subscribe();
                    epoch.borrow_and_update();
                    tokio::select! {
                        _ = tx.closed() => {}
                        _ = epoch.changed() => {}
                    }
                    return;
                }
                (start, _) => start,
            };
            match start {
                Ok(start) => run_watch(spec, start, tx).await,
                Err(e) => {
                    // Too old: an ERROR event with a 410 Status, then the stream ends.
                    let _ = tx.send(line("ERROR", &e.status())).await;
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<Bytes, Infallible>(b), rx))
        });
        Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from_stream(stream),
        )
            .into_response())
    }
}

/// Counts one open watch stream, per resource and per user, while it lives.
struct WatchGauge {
    sh: Arc<Shared>,
    key: String,
    user: String,
}

impl WatchGauge {
    fn new(sh: Arc<Shared>, key: String, user: String) -> Self {
        {
            let mut st = lock_stats(&sh.stats);
            *st.open_watches.entry(key.clone()).or_default() += 1;
            *st.open_watches_by_user.entry(user.clone()).or_default() += 1;
        }
        Self { sh, key, user }
    }
}

impl Drop for WatchGauge {
    fn drop(&mut self) {
        let mut st = lock_stats(&self.sh.stats);
        if let Some(n) = st.open_watches.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = st.open_watches_by_user.get_mut(&self.user) {
            *n = n.saturating_sub(1);
        }
    }
}

struct WatchSpec {
    sh: Arc<Shared>,
    group: ApiGroup,
    resource: Resource,
    namespace: Option<String>,
    sel: Selectors,
    shape: Shape,
    bookmarks: bool,
    send_initial: bool,
    from: Option<u64>,
    timeout: Option<Duration>,
    key: String,
    /// Who watches (for the per-user event count).
    user: String,
}

fn line(kind: &str, obj: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

impl WatchSpec {
    fn presented(&self, obj: &Value) -> Value {
        present(self.resource, self.group, obj)
    }

    /// The watch event a committed change turns into for this watch, if any.
    fn event_for(&self, c: &StoreChange) -> Option<Bytes> {
        if c.resource != self.resource {
            return None;
        }
        if let Some(ns) = &self.namespace
            && *ns != c.namespace
        {
            return None;
        }
        let cur = self.presented(&c.object);
        let (kind, obj) = match c.change {
            ChangeType::Added => self.sel.matches(&cur).then_some(("ADDED", cur))?,
            ChangeType::Deleted => self.sel.matches(&cur).then_some(("DELETED", cur))?,
            ChangeType::Modified => {
                let prev = c.previous.as_ref().map(|p| self.presented(p));
                let was = prev.as_ref().is_some_and(|p| self.sel.matches(p));
                let is = self.sel.matches(&cur);
                match (was, is) {
                    (true, true) => ("MODIFIED", cur),
                    (false, true) => ("ADDED", cur),
                    (true, false) => {
                        // Like the watch cache: the previous content, the new resourceVersion.
                        let mut p = prev.unwrap_or(cur);
                        p["metadata"]["resourceVersion"] = json!(c.resource_version.to_string());
                        ("DELETED", p)
                    }
                    (false, false) => return None,
                }
            }
        };
        Some(line(kind, &shaped(self.shape, obj)))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = match self.shape {
            Shape::Full => json!({
                "kind": self.resource.kind(),
                "apiVersion": self.group.api_version(),
                "metadata": meta,
            }),
            Shape::Metadata => json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
            }),
        };
        line("BOOKMARK", &obj)
    }
}

async fn run_watch(spec: WatchSpec, start: super::store::WatchStart, tx: mpsc::Sender<Bytes>) {
    let super::store::WatchStart {
        initial,
        replay,
        mut rx,
        rv,
    } = start;
    let mut epoch = spec.sh.epoch.subscribe();
    epoch.borrow_and_update();
    let deadline = spec.timeout.map(|t| Instant::now() + t);
    let mut last_rv = spec.from.unwrap_or(rv);
    let mut pending: Vec<Bytes> = Vec::new();
    if spec.from.is_none() {
        for obj in &initial {
            if let Some(ns) = &spec.namespace
                && obj.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns)
            {
                continue;
            }
            let p = spec.presented(obj);
            if spec.sel.matches(&p) {
                pending.push(line("ADDED", &shaped(spec.shape, p)));
            }
        }
        if spec.send_initial {
            pending.push(spec.bookmark(rv, true));
        }
        last_rv = rv;
    }
    for c in &replay {
        if let Some(b) = spec.event_for(c) {
            pending.push(b);
        }
        last_rv = last_rv.max(c.resource_version);
    }
    for b in pending {
        if !emit(&spec, &tx, b).await {
            return;
        }
    }
    let mut ticker = tokio::time::interval_at(
        Instant::now() + spec.sh.config.bookmark_interval,
        spec.sh.config.bookmark_interval,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let out: Option<Bytes> = tokio::select! {
            _ = tx.closed() => return,
            _ = epoch.changed() => return,
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => return,
            _ = ticker.tick(), if spec.bookmarks => {
                // Everything committed up to `cur` is already queued in `rx` (changes are sent
                // under the store lock): drain it, then the bookmark is exact.
                let cur = spec.sh.store.resource_version();
                let mut batch = Vec::new();
                loop {
                    match rx.try_recv() {
                        Ok(c) => {
                            if c.resource_version > last_rv {
                                if let Some(b) = spec.event_for(&c) {
                                    batch.push(b);
                                }
                                last_rv = c.resource_version;
                            }
                        }
                        Err(broadcast::error::TryRecvError::Empty) => break,
                        Err(_) => return,
                    }
                }
                if epoch.has_changed().unwrap_or(true) {
                    return;
                }
                last_rv = last_rv.max(cur);
                batch.push(spec.bookmark(last_rv, false));
                for b in batch {
                    if !emit(&spec, &tx, b).await {
                        return;
                    }
                }
                None
            }
            r = rx.recv() => match r {
                Ok(c) if c.resource_version > last_rv => {
                    last_rv = c.resource_version;
                    spec.event_for(&c)
                }
                Ok(_) => None,
                // A watcher that cannot keep up is closed, like the real server does; the
                // client re-watches from its last resourceVersion.
                Err(_) => return,
            },
        };
        if let Some(b) = out
            && !emit(&spec, &tx, b).await
        {
            return;
        }
    }
}

/// Sends one line of a watch stream; `false` ends the watch (the client left, or a cut was
/// injected: then only the first half of the line goes out). Bookmarks are never cut, so a
/// cut lands on the next real change.
async fn emit(spec: &WatchSpec, tx: &mpsc::Sender<Bytes>, line: Bytes) -> bool {
    let bookmark = line
        .windows(br#""type":"BOOKMARK""#.len())
        .any(|w| w == br#""type":"BOOKMARK""#);
    let cut = !bookmark && spec.sh.faults().take_cut();
    if cut {
        spec.sh.count_fault("watch_cut");
        let _ = tx.send(line.slice(..line.len() / 2)).await;
        return false;
    }
    let sent = tx.send(line).await.is_ok();
    if sent && !bookmark {
        *lock_stats(&spec.sh.stats)
            .watch_events_by_user
            .entry(spec.user.clone())
            .or_default() += 1;
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse_route("/api/v1/pods"), parse_route("/api/v1/pods/"));
        assert!(matches!(
            parse_route("/api/v1/namespaces/ns/pods/p/status"),
            Route::Objects { resource: Resource::Pods, subresource: Some(s), .. } if s == "status"
        ));
        assert!(matches!(
            parse_route("/apis/events.k8s.io/v1/namespaces/ns/events"),
            Route::Objects {
                group: ApiGroup::EventsV1,
                ..
            }
        ));
        assert_eq!(parse_route("/apis/events.k8s.io/v1/pods"), Route::NotFound);
        assert_eq!(
            parse_route("/api/v1/namespaces/x"),
            Route::Namespaces {
                name: Some("x".into())
            }
        );
        // Discovery of the networking and Gateway API groups.
        assert_eq!(
            parse_route("/apis/gateway.networking.k8s.io"),
            Route::Group("gateway.networking.k8s.io")
        );
        assert_eq!(
            parse_route("/apis/gateway.networking.k8s.io/v1beta1/"),
            Route::GroupVersion(ApiGroup::GatewayV1beta1)
        );
        assert_eq!(parse_route("/apis/example.com"), Route::NotFound);
        assert_eq!(parse_route("/apis/networking.k8s.io/v2"), Route::NotFound);
        // Namespaced kinds: in a namespace, or a cluster-wide list.
        assert_eq!(
            parse_route("/apis/networking.k8s.io/v1/namespaces/a/ingresses/web/status"),
            Route::Objects {
                group: ApiGroup::NetworkingV1,
                resource: Resource::Ingresses,
                namespace: Some("a".into()),
                name: Some("web".into()),
                subresource: Some("status".into()),
            }
        );
        assert!(matches!(
            parse_route("/apis/networking.k8s.io/v1/ingresses"),
            Route::Objects {
                resource: Resource::Ingresses,
                namespace: None,
                name: None,
                ..
            }
        ));
        assert_eq!(
            parse_route("/apis/networking.k8s.io/v1/ingresses/web"),
            Route::NotFound
        );
        // Cluster-scoped kinds: only without a namespace.
        assert_eq!(
            parse_route("/apis/gateway.networking.k8s.io/v1/gatewayclasses/gc/status"),
            Route::Objects {
                group: ApiGroup::GatewayV1,
                resource: Resource::GatewayClasses,
                namespace: None,
                name: Some("gc".into()),
                subresource: Some("status".into()),
            }
        );
        assert_eq!(
            parse_route("/apis/networking.k8s.io/v1/namespaces/a/ingressclasses"),
            Route::NotFound
        );
        assert_eq!(
            parse_route("/apis/gateway.networking.k8s.io/v1/namespaces/a/gatewayclasses/gc"),
            Route::NotFound
        );
        // A kind is found only in the groups that serve it.
        assert!(matches!(
            parse_route("/apis/gateway.networking.k8s.io/v1beta1/namespaces/a/referencegrants"),
            Route::Objects {
                group: ApiGroup::GatewayV1beta1,
                resource: Resource::ReferenceGrants,
                ..
            }
        ));
        assert_eq!(
            parse_route("/api/v1/namespaces/a/gateways"),
            Route::NotFound
        );
        assert_eq!(
            parse_route("/apis/networking.k8s.io/v1/namespaces/a/httproutes"),
            Route::NotFound
        );
    }

    #[test]
    fn continue_tokens() {
        let k = ("ns".to_owned(), "a\nb".to_owned());
        let t = encode_continue(7, &k);
        assert_eq!(decode_continue(&t).ok(), Some((7, k)));
        assert!(decode_continue("zz").is_err());
    }
}
