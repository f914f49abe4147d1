//! PATCH bodies: JSON merge patch (RFC 7386), a strategic-merge approximation, JSON patch
//! (RFC 6902).

use serde_json::{Map, Value};

/// The patch types the stand-in understands, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`: RFC 7386.
    Merge,
    /// `application/strategic-merge-patch+json`: applied as a merge patch; `$`-directives
    /// (`$patch`, `$retainKeys`, `$setElementOrder/...`) are dropped and lists are replaced,
    /// never merged by key.
    Strategic,
    /// `application/json-patch+json`: RFC 6902.
    Json,
    /// `application/apply-patch+yaml` (server-side apply): applied as a merge patch, creating
    /// the object when missing. No field ownership.
    Apply,
}

impl PatchType {
    /// From a `Content-Type` header value.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/json-patch+json" => Some(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Apply `patch` (already parsed) to `target`.
pub fn apply(kind: PatchType, target: &mut Value, patch: &Value) -> Result<(), String> {
    match kind {
        PatchType::Merge | PatchType::Apply => {
            merge_patch(target, patch, false);
            Ok(())
        }
        PatchType::Strategic => {
            merge_patch(target, patch, true);
            Ok(())
        }
        PatchType::Json => json_patch(target, patch),
    }
}

/// RFC 7386. With `drop_directives`, keys starting with `$` are ignored (strategic merge).
pub fn merge_patch(target: &mut Value, patch: &Value, drop_directives: bool) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return;
    };
    for (k, v) in p {
        if drop_directives && k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(
                t.entry(k.clone()).or_insert(Value::Null),
                v,
                drop_directives,
            );
        }
    }
}

/// RFC 6902: `add`, `remove`, `replace`, `move`, `copy`, `test`. All or nothing.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    let mut work = target.clone();
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or("JSON patch operation without \"op\"")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("JSON patch operation without \"path\"")?;
        match name {
            "add" => {
                let v = op.get("value").ok_or("add without value")?.clone();
                add(&mut work, path, v)?;
            }
            "remove" => {
                remove(&mut work, path)?;
            }
            "replace" => {
                let v = op.get("value").ok_or("replace without value")?.clone();
                remove(&mut work, path)?;
                add(&mut work, path, v)?;
            }
            "move" => {
                let from = op
                    .get("from")
                    .and_then(Value::as_str)
                    .ok_or("move without from")?;
                let v = remove(&mut work, from)?;
                add(&mut work, path, v)?;
            }
            "copy" => {
                let from = op
                    .get("from")
                    .and_then(Value::as_str)
                    .ok_or("copy without from")?;
                let v = work
                    .pointer(from)
                    .ok_or_else(|| format!("copy: {from} does not exist"))?
                    .clone();
                add(&mut work, path, v)?;
            }
            "test" => {
                let v = op.get("value").ok_or("test without value")?;
                if work.pointer(path) != Some(v) {
                    return Err(format!("test operation failed at {path}"));
                }
            }
            other => return Err(format!("unknown JSON patch op {other:?}")),
        }
    }
    *target = work;
    Ok(())
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    if path.is_empty() {
        return Err("the whole document cannot be patched".into());
    }
    let i = path
        .rfind('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    let last = path[i + 1..].replace("~1", "/").replace("~0", "~");
    Ok((path[..i].to_owned(), last))
}

fn add(doc: &mut Value, path: &str, v: Value) -> Result<(), String> {
    let (parent, last) = split_pointer(path)?;
    let p = doc
        .pointer_mut(&parent)
        .ok_or_else(|| format!("add: parent of {path} does not exist"))?;
    match p {
        Value::Object(m) => {
            m.insert(last, v);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(v);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| format!("add: bad array index in {path}"))?;
            if i > a.len() {
                return Err(format!("add: index out of range in {path}"));
            }
            a.insert(i, v);
            Ok(())
        }
        _ => Err(format!("add: parent of {path} is not a container")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let p = doc
        .pointer_mut(&parent)
        .ok_or_else(|| format!("remove: parent of {path} does not exist"))?;
    match p {
        Value::Object(m) => m
            .remove(&last)
            .ok_or_else(|| format!("remove: {path} does not exist")),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("remove: bad array index in {path}"))?;
            if i >= a.len() {
                return Err(format!("remove: index out of range in {path}"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("remove: parent of {path} is not a container")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn merge() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(
            &mut t,
            &json!({"a": {"b": null, "d": 3}, "l": [3], "$x": 1}),
            true,
        );
        assert_eq!(t, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn json_patch_ops() {
        let mut t = json!({"metadata": {"annotations": {"a/b": "1"}}, "l": [1]});
        json_patch(
            &mut t,
            &json!([
                {"op": "add", "path": "/metadata/annotations/x~1y", "value": "2"},
                {"op": "remove", "path": "/metadata/annotations/a~1b"},
                {"op": "add", "path": "/l/-", "value": 2},
                {"op": "test", "path": "/l/1", "value": 2},
            ]),
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"metadata": {"annotations": {"x/y": "2"}}, "l": [1, 2]})
        );
        assert!(json_patch(&mut t, &json!([{"op": "test", "path": "/l/0", "value": 9}])).is_err());
    }
}
