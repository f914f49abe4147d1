//! Label and field selectors with the API server's syntax and semantics.
//!
//! - Label selectors (`labelSelector=`, what `kubectl -l` takes): comma-separated requirements
//!   `key`, `!key`, `key=v`, `key==v`, `key!=v`, `key in (a,b)`, `key notin (a,b)`, `key>N`,
//!   `key<N`. `!=` and `notin` also match objects without the label, as in Kubernetes.
//! - Field selectors (`fieldSelector=`): comma-separated `path=v`, `path==v`, `path!=v`, with
//!   `\,` `\=` `\\` escapes. Only the field labels the real server supports for the resource are
//!   accepted (anything else is a 400, like "field label not supported"); a missing field
//!   compares as the empty string.

use std::collections::BTreeMap;

use serde_json::Value;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    /// `key`
    Exists(String),
    /// `!key`
    NotExists(String),
    /// `key=v` / `key==v`
    Equals(String, String),
    /// `key!=v`
    NotEquals(String, String),
    /// `key in (a,b)`
    In(String, Vec<String>),
    /// `key notin (a,b)`
    NotIn(String, Vec<String>),
    /// `key>N`
    GreaterThan(String, i64),
    /// `key<N`
    LessThan(String, i64),
}

/// A parsed label selector (empty = everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// AND of these.
    pub requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// Parse `kubectl -l` syntax.
    pub fn parse(s: &str) -> Result<Self, String> {
        LabelParser {
            s: s.as_bytes(),
            i: 0,
            src: s,
        }
        .parse()
    }

    /// Does an object with these labels match?
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            LabelRequirement::Exists(k) => labels.contains_key(k),
            LabelRequirement::NotExists(k) => !labels.contains_key(k),
            LabelRequirement::Equals(k, v) => labels.get(k) == Some(v),
            LabelRequirement::NotEquals(k, v) => labels.get(k) != Some(v),
            LabelRequirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            LabelRequirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            LabelRequirement::GreaterThan(k, n) => labels
                .get(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l > *n),
            LabelRequirement::LessThan(k, n) => labels
                .get(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l < *n),
        })
    }

    /// Match against the `metadata.labels` of a JSON object.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        self.matches(&labels_of(obj))
    }
}

/// `metadata.labels` of a JSON object (non-string values ignored).
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

struct LabelParser<'a> {
    s: &'a [u8],
    i: usize,
    src: &'a str,
}

fn is_label_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'/')
}

impl LabelParser<'_> {
    fn err(&self, what: &str) -> String {
        format!(
            "unable to parse requirement: {what} at position {} in label selector {:?}",
            self.i, self.src
        )
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn word(&mut self) -> String {
        let start = self.i;
        while self.i < self.s.len() && is_label_char(self.s[self.i]) {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    fn key(&mut self) -> Result<String, String> {
        self.ws();
        let k = self.word();
        if k.is_empty() {
            return Err(self.err("expected a label key"));
        }
        validate_label_key(&k).map_err(|e| format!("{e} in label selector {:?}", self.src))?;
        Ok(k)
    }

    fn value(&mut self) -> Result<String, String> {
        self.ws();
        let v = self.word();
        validate_label_value(&v).map_err(|e| format!("{e} in label selector {:?}", self.src))?;
        Ok(v)
    }

    fn set(&mut self) -> Result<Vec<String>, String> {
        self.ws();
        if self.peek() != Some(b'(') {
            return Err(self.err("expected '('"));
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let v = self.value()?;
            out.push(v);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b')') => {
                    self.i += 1;
                    break;
                }
                _ => return Err(self.err("expected ',' or ')'")),
            }
        }
        Ok(out)
    }

    fn int(&mut self) -> Result<i64, String> {
        self.ws();
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| self.err("expected an integer"))
    }

    fn requirement(&mut self) -> Result<LabelRequirement, String> {
        self.ws();
        if self.peek() == Some(b'!') {
            self.i += 1;
            return Ok(LabelRequirement::NotExists(self.key()?));
        }
        let key = self.key()?;
        self.ws();
        match self.peek() {
            None | Some(b',') => Ok(LabelRequirement::Exists(key)),
            Some(b'=') => {
                self.i += 1;
                if self.peek() == Some(b'=') {
                    self.i += 1;
                }
                Ok(LabelRequirement::Equals(key, self.value()?))
            }
            Some(b'!') => {
                self.i += 1;
                if self.peek() != Some(b'=') {
                    return Err(self.err("expected '=' after '!'"));
                }
                self.i += 1;
                Ok(LabelRequirement::NotEquals(key, self.value()?))
            }
            Some(b'>') => {
                self.i += 1;
                Ok(LabelRequirement::GreaterThan(key, self.int()?))
            }
            Some(b'<') => {
                self.i += 1;
                Ok(LabelRequirement::LessThan(key, self.int()?))
            }
            Some(_) => {
                let op = self.word();
                match op.as_str() {
                    "in" => Ok(LabelRequirement::In(key, self.set()?)),
                    "notin" => Ok(LabelRequirement::NotIn(key, self.set()?)),
                    _ => Err(self.err(&format!("unknown operator {op:?}"))),
                }
            }
        }
    }

    fn parse(mut self) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        self.ws();
        if self.peek().is_none() {
            return Ok(LabelSelector { requirements });
        }
        loop {
            requirements.push(self.requirement()?);
            self.ws();
            match self.peek() {
                None => break,
                Some(b',') => self.i += 1,
                Some(_) => return Err(self.err("expected ','")),
            }
        }
        Ok(LabelSelector { requirements })
    }
}

fn validate_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || p.contains('/'))
    {
        return Err(format!("invalid label key {k:?}: bad prefix"));
    }
    if name.is_empty() || name.len() > 63 || name.contains('/') {
        return Err(format!("invalid label key {k:?}"));
    }
    let b = name.as_bytes();
    if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Err(format!(
            "invalid label key {k:?}: name part must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

fn validate_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    let b = v.as_bytes();
    if v.len() > 63
        || v.contains('/')
        || !b[0].is_ascii_alphanumeric()
        || !b[b.len() - 1].is_ascii_alphanumeric()
    {
        return Err(format!("invalid label value: {v:?}"));
    }
    Ok(())
}

/// One field requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Field label, e.g. `spec.nodeName`.
    pub field: String,
    /// `true` for `=`/`==`, `false` for `!=`.
    pub equals: bool,
    /// The value compared against.
    pub value: String,
}

/// A parsed field selector (empty = everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// AND of these.
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parse `a=b,c!=d` (with `\` escapes).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_unescaped(s, ',') {
            if term.trim().is_empty() {
                continue;
            }
            let (field, equals, value) = if let Some(i) = find_unescaped(&term, "!=") {
                (&term[..i], false, &term[i + 2..])
            } else if let Some(i) = find_unescaped(&term, "==") {
                (&term[..i], true, &term[i + 2..])
            } else if let Some(i) = find_unescaped(&term, "=") {
                (&term[..i], true, &term[i + 1..])
            } else {
                return Err(format!(
                    "invalid selector: {s:?}; can't understand {term:?}"
                ));
            };
            requirements.push(FieldRequirement {
                field: unescape(field.trim()),
                equals,
                value: unescape(value),
            });
        }
        Ok(Self { requirements })
    }

    /// 400 unless every field label is in `supported`.
    pub fn check_supported(&self, kind: &str, supported: &[&str]) -> Result<(), String> {
        for r in &self.requirements {
            if !supported.contains(&r.field.as_str()) {
                return Err(format!(
                    "field label not supported: {} (for kind {kind})",
                    r.field
                ));
            }
        }
        Ok(())
    }

    /// Match against a JSON object: each field label is a dotted path into the object.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.requirements
            .iter()
            .all(|r| (field_value(obj, &r.field) == r.value) == r.equals)
    }
}

/// The string value of a field label on an object (`""` when missing). `source` on core
/// Events means `source.component`, as in the real server.
pub fn field_value(obj: &Value, field: &str) -> String {
    let path = if field == "source" {
        "source.component"
    } else {
        field
    };
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i..].starts_with(pat.as_bytes()) {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        let l = labels(&[("app", "edge"), ("tier", "front")]);
        for (sel, want) in [
            ("", true),
            ("app=edge", true),
            ("app==edge", true),
            ("app!=edge", false),
            ("app=other", false),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("missing!=x", true),
            ("app in (edge, other)", true),
            ("app notin (edge)", false),
            ("missing notin (edge)", true),
            ("app=edge,tier=front", true),
            ("app=edge, tier=back", false),
            ("app in (a,b),tier", false),
        ] {
            let s = LabelSelector::parse(sel).unwrap();
            assert_eq!(s.matches(&l), want, "{sel}");
        }
        assert!(
            LabelSelector::parse("app=")
                .unwrap()
                .matches(&labels(&[("app", "")]))
        );
        assert!(
            LabelSelector::parse("n>3")
                .unwrap()
                .matches(&labels(&[("n", "4")]))
        );
        for bad in ["app in edge", "=x", "app=-x", "app ~ b", "app in (a"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let pod =
            json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "node-a"}});
        for (sel, want) in [
            ("spec.nodeName=node-a", true),
            ("spec.nodeName==node-a", true),
            ("spec.nodeName!=node-a", false),
            ("spec.nodeName=node-a,metadata.name=p", true),
            ("spec.nodeName=node-a,metadata.name=q", false),
            ("status.phase=", true),
        ] {
            let s = FieldSelector::parse(sel).unwrap();
            assert_eq!(s.matches_object(&pod), want, "{sel}");
        }
        let s = FieldSelector::parse(r"metadata.name=a\,b").unwrap();
        assert_eq!(s.requirements[0].value, "a,b");
        assert!(
            FieldSelector::parse("spec.foo=x")
                .unwrap()
                .check_supported("Pod", &["spec.nodeName"])
                .is_err()
        );
        assert!(FieldSelector::parse("novalue").is_err());
    }
}
