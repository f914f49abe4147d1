//! The in-memory object store: one global resourceVersion, bounded change history, broadcast
//! of every change (watches and [`super::ApiServer::subscribe`] read it).
//!
//! Objects are kept as JSON in their storage form, without `kind`/`apiVersion` (added when
//! served, for the group version asked for). Events written through `events.k8s.io/v1` are
//! converted to core/v1 on the way in and back on the way out, like the real server's single
//! events storage; the other kinds look the same in every version they are served at.
//! Cluster-scoped objects are keyed by the namespace `""` and carry no `metadata.namespace`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::ByteString;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::error::ApiError;
use super::kinds::{ApiGroup, Resource};

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Updated (resourceVersion changed).
    Modified,
    /// Deleted.
    Deleted,
}

impl ChangeType {
    /// Watch event type (`ADDED`, ...).
    pub fn watch_type(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One committed change of the store.
#[derive(Debug, Clone)]
pub struct StoreChange {
    /// The global resourceVersion of this change (deletions get one too).
    pub resource_version: u64,
    /// Which resource.
    pub resource: Resource,
    /// Namespace (`""` for cluster-scoped kinds).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// Added / Modified / Deleted.
    pub change: ChangeType,
    /// The object after the change (for Deleted: its last state, with the deletion's
    /// resourceVersion). Storage form (core/v1 for Events) without `kind`/`apiVersion`.
    pub object: Arc<Value>,
    /// The object before the change (Modified, Deleted).
    pub previous: Option<Arc<Value>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub obj: Arc<Value>,
    pub via: ApiGroup,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The main resource: for kinds with a status subresource, create drops `status` (pods:
    /// `Pending`) and an update keeps the stored one.
    Main,
    /// The `status` subresource: only `status` changes.
    Status,
    /// Everything, `status` included, as given: the in-process fixture writes
    /// (`ApiServer::apply_object`), which stand for a client and the kind's controller at once.
    Whole,
}

/// DeleteOptions preconditions.
#[derive(Debug, Clone, Default)]
pub(crate) struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

pub(crate) struct WatchStart {
    /// With `from == None`: the current objects (sorted), to be sent as ADDED.
    pub initial: Vec<Arc<Value>>,
    /// With `from == Some(rv)`: the retained changes after `rv`.
    pub replay: Vec<Arc<StoreChange>>,
    pub rx: broadcast::Receiver<Arc<StoreChange>>,
    /// The store's resourceVersion when the watch started.
    pub rv: u64,
}

type Key = (String, String);

#[derive(Debug)]
struct Inner {
    rv: u64,
    objects: BTreeMap<Resource, BTreeMap<Key, Stored>>,
    history: VecDeque<Arc<StoreChange>>,
    history_limit: usize,
    /// Changes with a resourceVersion ≤ this may have been dropped from the history.
    compacted_rv: u64,
}

#[derive(Debug)]
pub(crate) struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<StoreChange>>,
}

impl Store {
    pub fn new(history_limit: usize, channel_capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(channel_capacity.max(16));
        Self {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_limit: history_limit.max(1),
                compacted_rv: 1,
            }),
            tx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoreChange>> {
        self.tx.subscribe()
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Drop all history and advance the resourceVersion past everything handed out so far:
    /// the next watch resumed from any earlier resourceVersion gets 410.
    pub fn compact(&self) {
        let mut g = self.lock();
        g.history.clear();
        g.rv += 1;
        g.compacted_rv = g.rv;
    }

    pub fn get(&self, r: Resource, ns: &str, name: &str) -> Option<Stored> {
        self.lock()
            .objects
            .get(&r)
            .and_then(|m| m.get(&(ns.to_owned(), name.to_owned())))
            .cloned()
    }

    /// All objects of `r` (in `ns` if given), sorted by namespace then name, and the store's
    /// resourceVersion.
    pub fn list(&self, r: Resource, ns: Option<&str>) -> (Vec<Stored>, u64) {
        let g = self.lock();
        let items = g
            .objects
            .get(&r)
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
                    .map(|(_, s)| s.clone())
                    .collect()
            })
            .unwrap_or_default();
        (items, g.rv)
    }

    /// Namespaces that hold at least one object.
    pub fn namespaces(&self) -> BTreeSet<String> {
        self.lock()
            .objects
            .values()
            .flat_map(|m| m.keys().map(|(ns, _)| ns.clone()))
            // Cluster-scoped objects live under "".
            .filter(|ns| !ns.is_empty())
            .collect()
    }

    pub fn watch(&self, r: Resource, from: Option<u64>) -> Result<WatchStart, ApiError> {
        let g = self.lock();
        let rx = self.tx.subscribe();
        match from {
            None => Ok(WatchStart {
                initial: g
                    .objects
                    .get(&r)
                    .map(|m| m.values().map(|s| s.obj.clone()).collect())
                    .unwrap_or_default(),
                replay: Vec::new(),
                rx,
                rv: g.rv,
            }),
            Some(n) if n < g.compacted_rv => Err(ApiError::expired(format!(
                "too old resource version: {n} ({})",
                g.compacted_rv
            ))),
            Some(n) => Ok(WatchStart {
                initial: Vec::new(),
                replay: g
                    .history
                    .iter()
                    .filter(|c| c.resource == r && c.resource_version > n)
                    .cloned()
                    .collect(),
                rx,
                rv: g.rv,
            }),
        }
    }

    pub fn create(
        &self,
        r: Resource,
        ns: &str,
        obj: Value,
        via: ApiGroup,
    ) -> Result<Arc<Value>, ApiError> {
        let mut g = self.lock();
        self.create_locked(&mut g, r, ns, obj, via)
    }

    /// Read-modify-write under the store lock. `f` gets the current object (None if missing,
    /// only called then when `create_missing`) and returns the new one.
    #[allow(clippy::too_many_arguments)]
    pub fn modify(
        &self,
        r: Resource,
        ns: &str,
        name: &str,
        part: Part,
        create_missing: bool,
        via: ApiGroup,
        f: impl FnOnce(Option<&Value>) -> Result<Value, ApiError>,
    ) -> Result<Arc<Value>, ApiError> {
        let mut g = self.lock();
        let key = (ns.to_owned(), name.to_owned());
        let old = g.objects.get(&r).and_then(|m| m.get(&key)).cloned();
        match old {
            None if create_missing && part != Part::Status => {
                let mut new = f(None)?;
                check_name(r, &mut new, name)?;
                self.create_locked_part(&mut g, r, ns, new, via, part)
            }
            None => Err(ApiError::not_found(&r.qualified(), name)),
            Some(old) => {
                let new = f(Some(&old.obj))?;
                self.update_locked(&mut g, r, ns, name, &old, new, part, via)
            }
        }
    }

    pub fn delete(
        &self,
        r: Resource,
        ns: &str,
        name: &str,
        pre: &Preconditions,
    ) -> Result<Arc<Value>, ApiError> {
        let mut g = self.lock();
        let key = (ns.to_owned(), name.to_owned());
        let Some(old) = g.objects.get(&r).and_then(|m| m.get(&key)).cloned() else {
            return Err(ApiError::not_found(&r.qualified(), name));
        };
        if let Some(uid) = &pre.uid
            && Some(uid.as_str()) != old.obj.pointer("/metadata/uid").and_then(Value::as_str)
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in \
                     precondition: {uid}",
                    r.qualified()
                ),
            ));
        }
        if let Some(rv) = &pre.resource_version
            && Some(rv.as_str())
                != old
                    .obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
        {
            return Err(ApiError::conflict(&r.qualified(), name));
        }
        g.rv += 1;
        let rv = g.rv;
        let mut last = (*old.obj).clone();
        last["metadata"]["resourceVersion"] = json!(rv.to_string());
        let last = Arc::new(last);
        if let Some(m) = g.objects.get_mut(&r) {
            m.remove(&key);
        }
        let change = StoreChange {
            resource_version: rv,
            resource: r,
            namespace: ns.to_owned(),
            name: name.to_owned(),
            uid: uid_of(&last),
            change: ChangeType::Deleted,
            object: last.clone(),
            previous: Some(old.obj),
        };
        self.record(&mut g, change);
        Ok(last)
    }

    fn create_locked(
        &self,
        g: &mut Inner,
        r: Resource,
        ns: &str,
        obj: Value,
        via: ApiGroup,
    ) -> Result<Arc<Value>, ApiError> {
        self.create_locked_part(g, r, ns, obj, via, Part::Main)
    }

    fn create_locked_part(
        &self,
        g: &mut Inner,
        r: Resource,
        ns: &str,
        mut obj: Value,
        via: ApiGroup,
        part: Part,
    ) -> Result<Arc<Value>, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        strip_type_meta(r, via, &mut obj)?;
        set_namespace(r, &mut obj, ns)?;
        let meta = metadata_mut(&mut obj);
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let n = format!("{prefix}{}", super::random_suffix(5));
                    meta.insert("name".into(), json!(n));
                    n
                }
                _ => {
                    return Err(ApiError::invalid(
                        r.kind(),
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        validate_name(r, &name)?;
        let key = (ns.to_owned(), name.clone());
        if g.objects.get(&r).is_some_and(|m| m.contains_key(&key)) {
            return Err(ApiError::already_exists(&r.qualified(), &name));
        }
        normalize(r, &mut obj, &name, None)?;
        if part == Part::Main {
            reset_status_on_create(r, &mut obj);
        }
        g.rv += 1;
        let rv = g.rv;
        let meta = metadata_mut(&mut obj);
        meta.insert("uid".into(), json!(super::new_uid()));
        meta.insert("creationTimestamp".into(), json!(super::now_rfc3339()));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        let obj = Arc::new(obj);
        g.objects.entry(r).or_default().insert(
            key,
            Stored {
                obj: obj.clone(),
                via,
            },
        );
        let change = StoreChange {
            resource_version: rv,
            resource: r,
            namespace: ns.to_owned(),
            name,
            uid: uid_of(&obj),
            change: ChangeType::Added,
            object: obj.clone(),
            previous: None,
        };
        self.record(g, change);
        Ok(obj)
    }

    #[allow(clippy::too_many_arguments)]
    fn update_locked(
        &self,
        g: &mut Inner,
        r: Resource,
        ns: &str,
        name: &str,
        old: &Stored,
        mut new: Value,
        part: Part,
        via: ApiGroup,
    ) -> Result<Arc<Value>, ApiError> {
        if !new.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        strip_type_meta(r, via, &mut new)?;
        check_name(r, &mut new, name)?;
        set_namespace(r, &mut new, ns)?;
        let meta = metadata_mut(&mut new);
        let old_meta = old.obj.get("metadata").cloned().unwrap_or(json!({}));
        if let Some(rv) = meta.get("resourceVersion").and_then(Value::as_str)
            && !rv.is_empty()
            && Some(rv) != old_meta.get("resourceVersion").and_then(Value::as_str)
        {
            return Err(ApiError::conflict(&r.qualified(), name));
        }
        if let Some(uid) = meta.get("uid").and_then(Value::as_str)
            && !uid.is_empty()
            && Some(uid) != old_meta.get("uid").and_then(Value::as_str)
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in \
                     precondition: {uid}",
                    r.qualified()
                ),
            ));
        }
        let mut new = match part {
            Part::Status => {
                let mut merged = (*old.obj).clone();
                match new.get("status") {
                    Some(s) => merged["status"] = s.clone(),
                    None => {
                        if let Some(m) = merged.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                merged
            }
            Part::Whole => {
                normalize(r, &mut new, name, Some(&old.obj))?;
                new
            }
            Part::Main => {
                normalize(r, &mut new, name, Some(&old.obj))?;
                if r.has_status_subresource() {
                    // The update strategy keeps the stored status; only the subresource
                    // changes it.
                    match old.obj.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            if let Some(m) = new.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                new
            }
        };
        // Server-owned metadata.
        {
            let meta = metadata_mut(&mut new);
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(k) {
                    Some(v) => meta.insert(k.into(), v.clone()),
                    None => meta.remove(k),
                };
            }
            meta.insert(
                "resourceVersion".into(),
                old_meta
                    .get("resourceVersion")
                    .cloned()
                    .unwrap_or(json!("")),
            );
        }
        if spec_part(r, &new) != spec_part(r, &old.obj) {
            let gen_ = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            metadata_mut(&mut new).insert("generation".into(), json!(gen_));
        }
        if new == *old.obj {
            // A no-op update does not bump the resourceVersion (nor reach watches).
            return Ok(old.obj.clone());
        }
        g.rv += 1;
        let rv = g.rv;
        metadata_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        let new = Arc::new(new);
        g.objects.entry(r).or_default().insert(
            (ns.to_owned(), name.to_owned()),
            Stored {
                obj: new.clone(),
                via: old.via,
            },
        );
        let change = StoreChange {
            resource_version: rv,
            resource: r,
            namespace: ns.to_owned(),
            name: name.to_owned(),
            uid: uid_of(&new),
            change: ChangeType::Modified,
            object: new.clone(),
            previous: Some(old.obj.clone()),
        };
        self.record(g, change);
        Ok(new)
    }

    fn record(&self, g: &mut Inner, change: StoreChange) {
        let change = Arc::new(change);
        g.history.push_back(change.clone());
        while g.history.len() > g.history_limit {
            if let Some(c) = g.history.pop_front() {
                g.compacted_rv = c.resource_version;
            }
        }
        // Sent under the lock: receivers see changes in resourceVersion order, and a watch
        // that subscribed under the lock misses nothing.
        let _ = self.tx.send(change);
    }
}

fn uid_of(v: &Value) -> String {
    v.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

pub(crate) fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

fn check_name(r: Resource, obj: &mut Value, name: &str) -> Result<(), ApiError> {
    let meta = metadata_mut(obj);
    match meta.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() && n != name => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => {
            meta.insert("name".into(), json!(name));
            let _ = r;
            Ok(())
        }
    }
}

/// Drop `kind`/`apiVersion` (added again when served), refusing ones that name another kind
/// or group version than the request's, as the real decoder does.
fn strip_type_meta(r: Resource, via: ApiGroup, obj: &mut Value) -> Result<(), ApiError> {
    let Some(m) = obj.as_object_mut() else {
        return Ok(());
    };
    if let Some(k) = m.remove("kind")
        && k.as_str().is_some_and(|k| !k.is_empty() && k != r.kind())
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the object ({k}) does not match the resource ({})",
            r.qualified()
        )));
    }
    if let Some(v) = m.remove("apiVersion")
        && v.as_str()
            .is_some_and(|v| !v.is_empty() && v != via.api_version())
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version ({})",
            via.api_version()
        )));
    }
    Ok(())
}

/// Namespaced kinds: the request's namespace (a different one in the body is a 400).
/// Cluster-scoped kinds: no namespace, whatever the body says (the API server clears it).
fn set_namespace(r: Resource, obj: &mut Value, ns: &str) -> Result<(), ApiError> {
    let meta = metadata_mut(obj);
    if !r.namespaced() {
        meta.remove("namespace");
        return Ok(());
    }
    if let Some(n) = meta.get("namespace").and_then(Value::as_str)
        && !n.is_empty()
        && n != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the \
             request",
        ));
    }
    meta.insert("namespace".into(), json!(ns));
    Ok(())
}

/// The create strategies of kinds with a status subresource ignore the given status: pods
/// start `Pending` (kubelet fills the rest in), Ingresses and custom resources start without
/// one (their controllers write it through the subresource).
fn reset_status_on_create(r: Resource, obj: &mut Value) {
    if r == Resource::Pods {
        obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
    } else if r.has_status_subresource()
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
}

/// The part of an object whose change bumps `metadata.generation`: everything but `metadata`
/// and `status` (a custom resource without a status subresource counts its status too, as
/// the CRD strategy does).
fn spec_part(r: Resource, v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        if r.has_status_subresource() || !r.is_custom() {
            m.remove("status");
        }
    }
    v
}

fn validate_name(r: Resource, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            r.kind(),
            name,
            "metadata.name: Invalid value: a lowercase RFC 1123 subdomain must consist of lower \
             case alphanumeric characters, '-' or '.', and must start and end with an \
             alphanumeric character",
        ))
    }
}

fn normalize(
    r: Resource,
    obj: &mut Value,
    name: &str,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    match r {
        Resource::Secrets => normalize_secret(obj, name, old),
        Resource::Pods => {
            default_pod(obj);
            Ok(())
        }
        r if r.is_workload() => {
            default_workload(r, obj);
            validate_workload(r, obj, name, old)
        }
        // Events and the networking kinds: stored as given (no schema, no defaulting).
        _ => Ok(()),
    }
}

/// Set `key` in `m` to `v` unless present.
fn default_key(m: &mut Map<String, Value>, key: &str, v: Value) {
    m.entry(key).or_insert(v);
}

/// The object at `m[key]`, made one if missing (a non-object is left alone: None).
fn object_at<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    m.entry(key).or_insert_with(|| json!({})).as_object_mut()
}

/// apps/v1 defaulting (`pkg/apis/apps/v1/defaults.go`) for the fields a client reads back, and
/// the pod defaulting of [`default_pod`] on `spec.template`, as the real server does for every
/// pod template.
fn default_workload(r: Resource, obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if r != Resource::DaemonSets {
        default_key(spec, "replicas", json!(1));
    }
    if r != Resource::ReplicaSets {
        default_key(spec, "revisionHistoryLimit", json!(10));
    }
    match r {
        Resource::Deployments => {
            default_key(spec, "progressDeadlineSeconds", json!(600));
            if let Some(strategy) = object_at(spec, "strategy") {
                default_key(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate"))
                    && let Some(ru) = object_at(strategy, "rollingUpdate")
                {
                    default_key(ru, "maxUnavailable", json!("25%"));
                    default_key(ru, "maxSurge", json!("25%"));
                }
            }
        }
        Resource::DaemonSets => {
            if let Some(strategy) = object_at(spec, "updateStrategy") {
                default_key(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate"))
                    && let Some(ru) = object_at(strategy, "rollingUpdate")
                {
                    default_key(ru, "maxUnavailable", json!(1));
                    default_key(ru, "maxSurge", json!(0));
                }
            }
        }
        Resource::StatefulSets => {
            default_key(spec, "podManagementPolicy", json!("OrderedReady"));
            if let Some(strategy) = object_at(spec, "updateStrategy") {
                default_key(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate"))
                    && let Some(ru) = object_at(strategy, "rollingUpdate")
                {
                    default_key(ru, "partition", json!(0));
                }
            }
            if let Some(policy) = object_at(spec, "persistentVolumeClaimRetentionPolicy") {
                default_key(policy, "whenDeleted", json!("Retain"));
                default_key(policy, "whenScaled", json!("Retain"));
            }
        }
        _ => {}
    }
    if let Some(template) = spec.get_mut("template") {
        default_pod(template);
    }
}

/// The apps/v1 validation a client can trip over here: `spec.selector` is required, must
/// select the template's labels and is immutable.
fn validate_workload(
    r: Resource,
    obj: &Value,
    name: &str,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let invalid = |msg: &str| Err(ApiError::invalid(r.kind(), name, msg));
    let selector = obj.pointer("/spec/selector");
    let Some(selector) = selector.filter(|s| s.is_object()) else {
        return invalid("spec.selector: Required value");
    };
    if obj.pointer("/spec/template").is_none() {
        return invalid("spec.template: Required value");
    }
    let empty = Map::new();
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    let has_expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_some_and(|e| !e.is_empty());
    if match_labels.is_none_or(Map::is_empty) && !has_expressions {
        return invalid("spec.selector: Invalid value: empty selector is invalid");
    }
    if let Some(ml) = match_labels
        && ml.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return invalid(
            "spec.template.metadata.labels: Invalid value: `selector` does not match template \
             `labels`",
        );
    }
    if let Some(old) = old
        && old.pointer("/spec/selector") != Some(selector)
    {
        return invalid("spec.selector: Invalid value: field is immutable");
    }
    Ok(())
}

fn normalize_secret(obj: &mut Value, name: &str, old: Option<&Value>) -> Result<(), ApiError> {
    let Some(m) = obj.as_object_mut() else {
        return Ok(());
    };
    if let Some(sd) = m.remove("stringData") {
        let Value::Object(sd) = sd else {
            return Err(ApiError::bad_request("stringData must be an object"));
        };
        if !m.get("data").is_some_and(Value::is_object) {
            m.insert("data".into(), json!({}));
        }
        if let Some(Value::Object(data)) = m.get_mut("data") {
            for (k, v) in sd {
                let s = v.as_str().ok_or_else(|| {
                    ApiError::bad_request(format!("stringData[{k}] must be a string"))
                })?;
                let enc = serde_json::to_value(ByteString(s.as_bytes().to_vec()))
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                data.insert(k, enc);
            }
        }
    }
    if let Some(Value::Object(data)) = m.get("data") {
        for (k, v) in data {
            if k.is_empty()
                || !k
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            {
                return Err(ApiError::invalid(
                    "Secret",
                    name,
                    format!(
                        "data[{k}]: Invalid value: {k:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
                    ),
                ));
            }
            serde_json::from_value::<ByteString>(v.clone()).map_err(|e| {
                ApiError::bad_request(format!("Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data[{k}]: {e}"))
            })?;
        }
    }
    if m.get("data")
        .is_some_and(|d| d.as_object().is_some_and(|o| o.is_empty()))
    {
        m.remove("data");
    }
    if m.get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        m.insert("type".into(), json!("Opaque"));
    }
    if m.get("type").and_then(Value::as_str) == Some("kubernetes.io/tls") {
        for key in ["tls.crt", "tls.key"] {
            if m.get("data").and_then(|d| d.get(key)).is_none() {
                return Err(ApiError::invalid(
                    "Secret",
                    name,
                    format!("data[{key}]: Required value"),
                ));
            }
        }
    }
    if let Some(old) = old {
        if old.get("immutable") == Some(&json!(true))
            && (old.get("data") != m.get("data") || m.get("immutable") != Some(&json!(true)))
        {
            return Err(ApiError::invalid(
                "Secret",
                name,
                "data: Forbidden: field is immutable when `immutable` is set",
            ));
        }
        if old.get("type") != m.get("type") {
            return Err(ApiError::invalid(
                "Secret",
                name,
                "type: Invalid value: field is immutable",
            ));
        }
    }
    Ok(())
}

/// The API server's defaulting for the pod fields the testbed cares about (the volume
/// `defaultMode`s matter: a real API returns 420 where the manifest said nothing).
fn default_pod(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("securityContext", json!({})),
        ("enableServiceLinks", json!(true)),
    ] {
        spec.entry(k).or_insert(v);
    }
    if let Some(Value::Array(vols)) = spec.get_mut("volumes") {
        for vol in vols {
            for src in ["secret", "projected", "configMap", "downwardAPI"] {
                if let Some(Value::Object(s)) = vol.get_mut(src) {
                    s.entry("defaultMode").or_insert(json!(420));
                }
            }
        }
    }
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs {
                let Some(c) = c.as_object_mut() else { continue };
                let image = c
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let last = image.rsplit('/').next().unwrap_or("");
                let latest =
                    !last.contains(':') && !image.contains('@') || image.ends_with(":latest");
                c.entry("imagePullPolicy").or_insert(json!(if latest {
                    "Always"
                } else {
                    "IfNotPresent"
                }));
                c.entry("terminationMessagePath")
                    .or_insert(json!("/dev/termination-log"));
                c.entry("terminationMessagePolicy").or_insert(json!("File"));
                c.entry("resources").or_insert(json!({}));
            }
        }
    }
}
