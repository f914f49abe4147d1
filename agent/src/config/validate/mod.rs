//! Validation of the parsed document: every section checked by hand so one bad value does not
//! hide the next; each error carries the key path and, from [`super::positions`], its position.

mod controllers;

use super::*;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::config) enum Seg {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(in crate::config) struct KeyPath(Vec<Seg>);

impl KeyPath {
    pub(in crate::config) fn key(&self, key: &str) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        KeyPath(segs)
    }

    pub(in crate::config) fn index(&self, i: usize) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(i));
        KeyPath(segs)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k)
                    if !k.is_empty()
                        && k.len() <= 64
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')) =>
                {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{}]", quote(k))?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Whether an error points at a key or at its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::config) enum At {
    Key,
    Value,
}

pub(in crate::config) struct Validator<'a> {
    text: &'a str,
    origin: &'a str,
    tree: Option<positions::Node>,
    errors: Vec<ConfigError>,
}

/// The value of `key`, treating an explicit `null` (`key:` with nothing after it) as absent.
pub(in crate::config) fn get<'v>(map: &'v Mapping, key: &str) -> Option<&'v Value> {
    map.get(key).filter(|v| !v.is_null())
}

pub(in crate::config) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {}", quote(s)),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => format!("a value tagged {}", quote(&t.tag.to_string())),
    }
}

pub(in crate::config) fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        _ => "<complex key>".to_string(),
    }
}

/// `did you mean "stuckAfter"?` for near misses (case, `_`/`-`, one or two typos), else the list.
pub(in crate::config) fn expected_keys(unknown: &str, allowed: &[&str]) -> String {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let unknown_norm = norm(unknown);
    let best = allowed
        .iter()
        .map(|a| (edit_distance(&unknown_norm, &norm(a)), *a))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, a)) if d <= 2 && unknown_norm.chars().count() > d => {
            format!("did you mean {}?", quote(a))
        }
        _ => format!("expected one of: {}", allowed.join(", ")),
    }
}

pub(in crate::config) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().take(64).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl<'a> Validator<'a> {
    pub(in crate::config) fn new(text: &'a str, origin: &'a str) -> Self {
        Validator {
            text,
            origin,
            tree: None,
            errors: Vec::new(),
        }
    }

    pub(in crate::config) fn finish(mut self, config: Config) -> Result<Config, ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(config);
        }
        self.errors
            .sort_by_key(|e| e.location().map_or((0, 0), |at| (at.line, at.column)));
        Err(ConfigErrors {
            errors: self.errors,
        })
    }

    pub(in crate::config) fn at(&mut self, path: &KeyPath, at: At) -> Location {
        let text = self.text;
        let tree = self.tree.get_or_insert_with(|| positions::parse(text));
        let pos = tree.locate(&path.0, at == At::Key);
        Location {
            file: self.origin.to_string(),
            line: pos.line,
            column: pos.col,
            path: path.to_string(),
        }
    }

    pub(in crate::config) fn wrong_type(&mut self, path: &KeyPath, expected: &str, found: &Value) {
        let at = self.at(path, At::Value);
        self.errors.push(ConfigError::WrongType {
            at,
            expected: expected.to_string(),
            found: describe(found),
        });
    }

    pub(in crate::config) fn invalid(&mut self, path: &KeyPath, at: At, message: String) {
        let at = self.at(path, at);
        self.errors.push(ConfigError::InvalidValue { at, message });
    }

    pub(in crate::config) fn missing(&mut self, path: &KeyPath, hint: &str) {
        let at = self.at(path, At::Value);
        self.errors.push(ConfigError::MissingKey {
            at,
            hint: hint.to_string(),
        });
    }

    /// Reports keys of `map` that are not in `allowed` (and non-string keys).
    pub(in crate::config) fn check_keys(
        &mut self,
        map: &Mapping,
        path: &KeyPath,
        allowed: &[&str],
    ) {
        for key in map.keys() {
            if let Value::String(s) = key
                && allowed.contains(&s.as_str())
            {
                continue;
            }
            let name = key_text(key);
            let key_path = path.key(&name);
            let at = self.at(&key_path, At::Key);
            let expected = expected_keys(&name, allowed);
            self.errors.push(ConfigError::UnknownKey {
                at,
                key: name,
                expected,
            });
        }
    }

    /// The mapping under `key` (absent or null: `None` without error).
    pub(in crate::config) fn section<'v>(
        &mut self,
        map: &'v Mapping,
        path: &KeyPath,
        key: &str,
        allowed: &[&str],
    ) -> Option<(&'v Mapping, KeyPath)> {
        let value = get(map, key)?;
        let path = path.key(key);
        match value {
            Value::Mapping(m) => {
                self.check_keys(m, &path, allowed);
                Some((m, path))
            }
            other => {
                let expected = format!("a mapping with keys {}", allowed.join(", "));
                self.wrong_type(&path, &expected, other);
                None
            }
        }
    }

    /// A duration under `key`: `Some(default)` when absent, `None` after reporting an error.
    pub(in crate::config) fn duration(
        &mut self,
        map: &Mapping,
        path: &KeyPath,
        key: &str,
        default: Duration,
        allow_zero: bool,
    ) -> Option<Duration> {
        let path = path.key(key);
        let (text, result) = match get(map, key) {
            None => return Some(default),
            Some(Value::String(s)) => (s.clone(), parse_duration(s)),
            Some(Value::Number(n)) => (n.to_string(), Err("missing unit".to_string())),
            Some(other) => {
                self.wrong_type(&path, "a duration such as \"15s\"", other);
                return None;
            }
        };
        let result = result.and_then(|d| {
            if d.is_zero() && !allow_zero {
                Err("must be greater than zero".to_string())
            } else {
                Ok(d)
            }
        });
        match result {
            Ok(d) => Some(d),
            Err(reason) => {
                let at = self.at(&path, At::Value);
                self.errors.push(ConfigError::InvalidDuration {
                    at,
                    value: text,
                    reason,
                });
                None
            }
        }
    }

    pub(in crate::config) fn boolean(
        &mut self,
        map: &Mapping,
        path: &KeyPath,
        key: &str,
        default: bool,
    ) -> bool {
        match get(map, key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.wrong_type(&path.key(key), "true or false", other);
                default
            }
        }
    }

    pub(in crate::config) fn string<'v>(
        &mut self,
        value: &'v Value,
        path: &KeyPath,
        expected: &str,
    ) -> Option<&'v str> {
        match value {
            Value::String(s) => Some(s),
            other => {
                self.wrong_type(path, expected, other);
                None
            }
        }
    }

    /// A non-empty list of distinct strings, each accepted by `check`.
    pub(in crate::config) fn string_list(
        &mut self,
        value: &Value,
        path: &KeyPath,
        what: &str,
        check: fn(&str) -> Result<(), String>,
    ) -> Option<Vec<String>> {
        let Value::Sequence(items) = value else {
            self.wrong_type(path, &format!("a list of {what}"), value);
            return None;
        };
        if items.is_empty() {
            self.invalid(
                path,
                At::Value,
                format!("an empty list matches nothing; omit the key to mean every {what}"),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            let Some(s) = self.string(item, &item_path, what) else {
                ok = false;
                continue;
            };
            if let Err(message) = check(s) {
                self.invalid(&item_path, At::Value, message);
                ok = false;
            } else if out.iter().any(|o| o == s) {
                self.invalid(
                    &item_path,
                    At::Value,
                    format!("{} is listed twice", quote(s)),
                );
                ok = false;
            } else {
                out.push(s.to_string());
            }
        }
        ok.then_some(out)
    }

    pub(in crate::config) fn config(&mut self, root: &Value) -> Config {
        let root_path = KeyPath::default();
        let empty = Mapping::new();
        let map = match root {
            Value::Null => &empty,
            Value::Mapping(m) => m,
            other => {
                self.wrong_type(&root_path, "a mapping of settings", other);
                return Config::default();
            }
        };
        self.check_keys(map, &root_path, TOP_KEYS);
        let mut config = Config::default();

        let stuck_after = self.duration(map, &root_path, "stuckAfter", DEFAULT_STUCK_AFTER, false);
        config.stuck_after = stuck_after.unwrap_or(DEFAULT_STUCK_AFTER);

        let mut nudge_after = Some(DEFAULT_NUDGE_AFTER);
        if let Some((m, p)) = self.section(map, &root_path, "nudge", NUDGE_KEYS) {
            config.nudge.enabled = self.boolean(m, &p, "enabled", true);
            nudge_after = self.duration(m, &p, "after", DEFAULT_NUDGE_AFTER, true);
            config.nudge.after = nudge_after.unwrap_or(DEFAULT_NUDGE_AFTER);
            config.nudge.retry_after = self
                .duration(m, &p, "retryAfter", DEFAULT_NUDGE_RETRY_AFTER, false)
                .unwrap_or(DEFAULT_NUDGE_RETRY_AFTER);
        }
        if let (Some(stuck), Some(after)) = (stuck_after, nudge_after)
            && config.nudge.enabled
            && after >= stuck
        {
            let path = if get(map, "nudge").is_some() {
                root_path.key("nudge").key("after")
            } else {
                root_path.key("stuckAfter")
            };
            self.invalid(
                &path,
                At::Value,
                format!(
                    "nudge.after ({}) must be shorter than stuckAfter ({}): the mount would be reported stuck before kubelet is nudged",
                    format_duration(after),
                    format_duration(stuck)
                ),
            );
        }

        if let Some((m, p)) = self.section(map, &root_path, "reload", RELOAD_KEYS) {
            config.reload.min_interval = self
                .duration(m, &p, "minInterval", DEFAULT_RELOAD_MIN_INTERVAL, true)
                .unwrap_or(DEFAULT_RELOAD_MIN_INTERVAL);
            config.reload.restart_timeout = self
                .duration(
                    m,
                    &p,
                    "restartTimeout",
                    DEFAULT_RELOAD_RESTART_TIMEOUT,
                    false,
                )
                .unwrap_or(DEFAULT_RELOAD_RESTART_TIMEOUT);
        }
        if let Some((m, p)) = self.section(map, &root_path, "verify", VERIFY_KEYS) {
            config.verify.timeout = self
                .duration(m, &p, "timeout", DEFAULT_VERIFY_TIMEOUT, false)
                .unwrap_or(DEFAULT_VERIFY_TIMEOUT);
            config.verify.interval = self
                .duration(m, &p, "interval", DEFAULT_VERIFY_INTERVAL, false)
                .unwrap_or(DEFAULT_VERIFY_INTERVAL);
            config.verify.mismatch_after = self
                .duration(m, &p, "mismatchAfter", DEFAULT_VERIFY_MISMATCH_AFTER, true)
                .unwrap_or(DEFAULT_VERIFY_MISMATCH_AFTER);
            if let Some(value) = get(m, "handshakesPerSecond") {
                let path = p.key("handshakesPerSecond");
                match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
                    Some(n) if (1..=MAX_VERIFY_HANDSHAKES_PER_SECOND).contains(&n) => {
                        config.verify.handshakes_per_second = n;
                    }
                    _ => self.invalid(
                        &path,
                        At::Value,
                        format!(
                            "must be a whole number from 1 to {MAX_VERIFY_HANDSHAKES_PER_SECOND} (TLS handshakes per second, node-wide), not {}",
                            describe(value)
                        ),
                    ),
                }
            }
        }
        if let Some((m, p)) = self.section(map, &root_path, "expiry", EXPIRY_KEYS) {
            config.expiry.warn_before = self
                .duration(m, &p, "warnBefore", DEFAULT_EXPIRY_WARN_BEFORE, true)
                .unwrap_or(DEFAULT_EXPIRY_WARN_BEFORE);
        }
        if let Some((m, p)) = self.section(map, &root_path, "certManager", CERT_MANAGER_KEYS) {
            config.cert_manager.enabled = self.boolean(m, &p, "enabled", true);
            config.cert_manager.grace_period = self
                .duration(
                    m,
                    &p,
                    "gracePeriod",
                    DEFAULT_CERT_MANAGER_GRACE_PERIOD,
                    true,
                )
                .unwrap_or(DEFAULT_CERT_MANAGER_GRACE_PERIOD);
        }
        if let Some((m, p)) = self.section(map, &root_path, "api", API_KEYS) {
            config.api.http2 = self.boolean(m, &p, "http2", true);
            if let Some(value) = get(m, "maxStreamsPerConnection") {
                let path = p.key("maxStreamsPerConnection");
                match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
                    Some(n) if (1..=MAX_API_STREAMS_PER_CONNECTION).contains(&n) => {
                        config.api.max_streams_per_connection = n;
                    }
                    _ => self.invalid(
                        &path,
                        At::Value,
                        format!(
                            "must be a whole number from 1 to {MAX_API_STREAMS_PER_CONNECTION} (requests kept open on one connection), not {}",
                            describe(value)
                        ),
                    ),
                }
            }
            if let Some(timeout) =
                self.duration(m, &p, "watchTimeout", DEFAULT_API_WATCH_TIMEOUT, false)
            {
                if (MIN_API_WATCH_TIMEOUT..=MAX_API_WATCH_TIMEOUT).contains(&timeout) {
                    config.api.watch_timeout = timeout;
                } else {
                    self.invalid(
                        &p.key("watchTimeout"),
                        At::Value,
                        format!(
                            "must be from {} to {} (the timeout of each watch request), not {}",
                            format_duration(MIN_API_WATCH_TIMEOUT),
                            format_duration(MAX_API_WATCH_TIMEOUT),
                            format_duration(timeout)
                        ),
                    );
                }
            }
        }
        if let Some(value) = get(map, "controllers") {
            config.controllers = self.controllers(value, &root_path.key("controllers"));
        }
        config
    }
}
