//! Conversions: core/v1 ⇄ events.k8s.io/v1 Events, type meta, normalised [`RecordedEvent`]s.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::kinds::{ApiGroup, Resource};

/// events.k8s.io/v1 field name → core/v1 field name (the real conversion is a rename).
const EVENT_RENAMES: [(&str, &str); 7] = [
    ("note", "message"),
    ("regarding", "involvedObject"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// An object as written through `group` → the stored (core) form.
pub(crate) fn to_storage(r: Resource, group: ApiGroup, obj: &mut Value) {
    if r == Resource::Events
        && group == ApiGroup::EventsV1
        && let Some(m) = obj.as_object_mut()
    {
        for (ev, core) in EVENT_RENAMES {
            if let Some(v) = m.remove(ev) {
                m.insert(core.into(), v);
            }
        }
    }
}

/// A stored object → its form in `group` (no type meta).
pub(crate) fn from_storage(r: Resource, group: ApiGroup, obj: &Value) -> Value {
    let mut v = obj.clone();
    if r == Resource::Events
        && group == ApiGroup::EventsV1
        && let Some(m) = v.as_object_mut()
    {
        for (ev, core) in EVENT_RENAMES {
            if let Some(x) = m.remove(core) {
                m.insert(ev.into(), x);
            }
        }
    }
    v
}

/// Set `kind` and `apiVersion` (first, like the real server's JSON).
pub(crate) fn with_type_meta(r: Resource, group: ApiGroup, obj: Value) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("kind".into(), json!(r.kind()));
    out.insert("apiVersion".into(), json!(group.api_version()));
    if let Value::Object(m) = obj {
        for (k, v) in m {
            if k != "kind" && k != "apiVersion" {
                out.insert(k, v);
            }
        }
    }
    Value::Object(out)
}

/// A stored object as a client of `group` sees it, with type meta.
pub(crate) fn present(r: Resource, group: ApiGroup, obj: &Value) -> Value {
    with_type_meta(r, group, from_storage(r, group, obj))
}

/// The object `kind`/`apiVersion`/`name`/... an Event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventObjectRef {
    /// `kind` (`Pod`).
    pub kind: String,
    /// `apiVersion` (`v1`).
    pub api_version: String,
    /// `name`.
    pub name: String,
    /// `namespace`.
    pub namespace: String,
    /// `uid`.
    pub uid: String,
    /// `fieldPath`.
    pub field_path: String,
}

/// An Event as recorded by the stand-in, normalised over both events APIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// API group it was created through: `events.k8s.io` or `""` (core/v1).
    pub api_group: String,
    /// Event namespace.
    pub namespace: String,
    /// Event name.
    pub name: String,
    /// Its resourceVersion.
    pub resource_version: String,
    /// `Normal` / `Warning`.
    pub type_: String,
    /// `reason`.
    pub reason: String,
    /// `action` (events.k8s.io; core `action`).
    pub action: String,
    /// `note` (events.k8s.io) / `message` (core).
    pub note: String,
    /// `regarding` / `involvedObject`.
    pub regarding: EventObjectRef,
    /// `reportingController` / `reportingComponent` (else `source.component`).
    pub reporting_controller: String,
    /// `reportingInstance` (else `source.host`).
    pub reporting_instance: String,
    /// `series.count`, if the event is a series.
    pub series_count: Option<i64>,
    /// `deprecatedCount` / `count`.
    pub count: Option<i64>,
    /// `eventTime`, else `deprecatedFirstTimestamp`/`firstTimestamp`, else creation time.
    pub first_time: Option<Timestamp>,
    /// `series.lastObservedTime`, else `deprecatedLastTimestamp`/`lastTimestamp`, else
    /// `first_time`.
    pub last_time: Option<Timestamp>,
}

fn s(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn ts(v: &Value, ptr: &str) -> Option<Timestamp> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok())
}

/// Normalise a stored (core-form) Event.
pub(crate) fn recorded_event(obj: &Value, via: ApiGroup) -> RecordedEvent {
    let first_time = ts(obj, "/eventTime")
        .or_else(|| ts(obj, "/firstTimestamp"))
        .or_else(|| ts(obj, "/metadata/creationTimestamp"));
    let last_time = ts(obj, "/series/lastObservedTime")
        .or_else(|| ts(obj, "/lastTimestamp"))
        .or(first_time);
    let mut reporting_controller = s(obj, "/reportingComponent");
    if reporting_controller.is_empty() {
        reporting_controller = s(obj, "/source/component");
    }
    let mut reporting_instance = s(obj, "/reportingInstance");
    if reporting_instance.is_empty() {
        reporting_instance = s(obj, "/source/host");
    }
    RecordedEvent {
        api_group: via.group().to_owned(),
        namespace: s(obj, "/metadata/namespace"),
        name: s(obj, "/metadata/name"),
        resource_version: s(obj, "/metadata/resourceVersion"),
        type_: s(obj, "/type"),
        reason: s(obj, "/reason"),
        action: s(obj, "/action"),
        note: s(obj, "/message"),
        regarding: EventObjectRef {
            kind: s(obj, "/involvedObject/kind"),
            api_version: s(obj, "/involvedObject/apiVersion"),
            name: s(obj, "/involvedObject/name"),
            namespace: s(obj, "/involvedObject/namespace"),
            uid: s(obj, "/involvedObject/uid"),
            field_path: s(obj, "/involvedObject/fieldPath"),
        },
        reporting_controller,
        reporting_instance,
        series_count: obj.pointer("/series/count").and_then(Value::as_i64),
        count: obj.get("count").and_then(Value::as_i64),
        first_time,
        last_time,
    }
}

/// The real server's create validation of an `events.k8s.io/v1` Event (`obj` in that form):
/// `eventTime`, `reportingController` (a qualified name), `reportingInstance`, `action` and
/// `reason` are required, the deprecated fields must be unset, `type` is Normal or Warning,
/// `regarding.namespace` must match, length limits (128; note 1 KiB).
pub(crate) fn validate_events_v1_create(obj: &Value, namespace: &str) -> Result<(), String> {
    let mut errs = Vec::new();
    let get = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
    if get("eventTime").is_empty() {
        errs.push("eventTime: Required value".to_owned());
    }
    if !matches!(get("type"), "Normal" | "Warning") {
        errs.push(format!(
            "type: Invalid value: \"{}\": has invalid value",
            get("type")
        ));
    }
    for k in [
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedCount",
    ] {
        if obj.get(k).is_some_and(|v| !v.is_null() && *v != json!(0)) {
            errs.push(format!("{k}: Invalid value: needs to be unset"));
        }
    }
    if obj
        .get("deprecatedSource")
        .is_some_and(|s| !get_str(s, "component").is_empty() || !get_str(s, "host").is_empty())
    {
        errs.push("deprecatedSource: Invalid value: needs to be unset".to_owned());
    }
    let rc = get("reportingController");
    if rc.is_empty() {
        errs.push("reportingController: Required value".to_owned());
    } else if let Err(e) = qualified_name(rc) {
        errs.push(format!("reportingController: Invalid value: {rc:?}: {e}"));
    }
    for (k, limit) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
        if get(k).is_empty() {
            errs.push(format!("{k}: Required value"));
        } else if get(k).len() > limit {
            errs.push(format!("{k}: Too long: may not be more than {limit} bytes"));
        }
    }
    if get("note").len() > 1024 {
        errs.push("note: Too long: may not be more than 1024 bytes".to_owned());
    }
    let regarding_ns = obj
        .pointer("/regarding/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !regarding_ns.is_empty() && regarding_ns != namespace {
        errs.push(format!(
            "regarding.namespace: Invalid value: {regarding_ns:?}: does not match event.namespace"
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("[{}]", errs.join(", ")))
    }
}

fn get_str<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Kubernetes' `IsQualifiedName`: `[prefix/]name`, prefix a DNS subdomain, name ≤ 63 of
/// `[A-Za-z0-9_.-]` starting and ending alphanumeric.
fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
            && p.as_bytes()[0].is_ascii_alphanumeric()
            && p.as_bytes()[p.len() - 1].is_ascii_alphanumeric();
        if !ok {
            return Err("prefix part must be a lowercase RFC 1123 subdomain".into());
        }
    }
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must \
             start and end with an alphanumeric character (at most 63)"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn events_round_trip() {
        let ev = json!({"note": "n", "regarding": {"kind": "Pod"}, "reportingController": "c",
            "series": {"count": 2}, "reason": "R"});
        let mut stored = ev.clone();
        to_storage(Resource::Events, ApiGroup::EventsV1, &mut stored);
        assert_eq!(stored["message"], "n");
        assert_eq!(stored["involvedObject"]["kind"], "Pod");
        assert_eq!(
            from_storage(Resource::Events, ApiGroup::EventsV1, &stored),
            ev
        );
        let r = recorded_event(&stored, ApiGroup::EventsV1);
        assert_eq!(r.series_count, Some(2));
        assert_eq!(r.reporting_controller, "c");
    }

    #[test]
    fn events_v1_validation() {
        let good = json!({"eventTime": "2025-01-01T00:00:00.000000Z", "type": "Normal",
            "reportingController": "mountlag.io/agent", "reportingInstance": "node-a",
            "action": "Nudge", "reason": "KubeletResyncRequested",
            "regarding": {"kind": "Pod", "namespace": "ns", "name": "p"}});
        assert_eq!(validate_events_v1_create(&good, "ns"), Ok(()));
        let mut bad = good.clone();
        bad["reportingController"] = json!("Not A Name");
        bad["deprecatedCount"] = json!(2);
        let e = validate_events_v1_create(&bad, "other").unwrap_err();
        assert!(
            e.contains("reportingController") && e.contains("deprecatedCount"),
            "{e}"
        );
        assert!(e.contains("regarding.namespace"), "{e}");
        let mut missing = good;
        missing.as_object_mut().map(|m| m.remove("eventTime"));
        assert!(validate_events_v1_create(&missing, "ns").is_err());
    }
}
