//! Config errors: where (file, line, column, key path) and what, and the syntax-level checks
//! that run before validation.

use super::*;

/// Where an error is: file, 1-based line and column (in characters), and the key path
/// (`controllers[0].reload.signal`; empty for the document itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub path: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        Ok(())
    }
}

/// One problem with a config file. Displayed as `FILE:LINE:COL: KEY.PATH: message`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read config file: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error(
        "{file}: config file is larger than {limit} bytes (the limit; a config needs a few KiB)"
    )]
    TooLarge { file: String, limit: u64 },
    /// Not YAML (or not UTF-8). The position is the parser's.
    #[error("{at}: invalid YAML: {message}")]
    Syntax { at: Location, message: String },
    /// Aliases expand the document past [`MAX_CONFIG_NODES`] or [`MAX_CONFIG_EXPANDED_BYTES`].
    #[error("{at}: config too large once expanded: {message}")]
    TooComplex { at: Location, message: String },
    /// A key that is not part of the format, at any depth.
    #[error("{at}: unknown key {} ({expected})", quote(.key))]
    UnknownKey {
        at: Location,
        key: String,
        /// `expected one of: ...` or `did you mean "..."?`
        expected: String,
    },
    /// A value of the wrong YAML type.
    #[error("{at}: expected {expected}, found {found}")]
    WrongType {
        at: Location,
        expected: String,
        found: String,
    },
    /// A required key is absent; the path names it.
    #[error("{at}: required key is missing{}", hint_suffix(.hint))]
    MissingKey { at: Location, hint: String },
    /// Not a duration, or out of range.
    #[error("{at}: invalid duration {}: {reason} ({})", quote(.value), DURATION_HINT)]
    InvalidDuration {
        at: Location,
        value: String,
        reason: String,
    },
    /// `selector: ""` (would select every pod).
    #[error("{at}: empty selector would select every pod; write one such as app=edge")]
    EmptySelector { at: Location },
    /// Not a label selector.
    #[error("{at}: invalid selector {}: {reason}", quote(.selector))]
    InvalidSelector {
        at: Location,
        selector: String,
        reason: String,
    },
    /// Two controllers with one name.
    #[error("{at}: duplicate controller name {} (also used by {first})", quote(.name))]
    DuplicateName {
        at: Location,
        name: String,
        /// Key path of the first use, e.g. `controllers[0]`.
        first: String,
    },
    /// `profile:` names no built-in profile.
    #[error("{at}: unknown profile {} (expected one of: {expected})", quote(.value))]
    UnknownProfile {
        at: Location,
        value: String,
        expected: String,
    },
    /// A signal outside the reload-safe set.
    #[error("{at}: {}", unknown_signal_message(.value))]
    UnknownSignal { at: Location, value: String },
    /// `reload` with both a signal and http.
    #[error(
        "{at}: conflicting reload actions: use either signal (with an optional process) or http, not both"
    )]
    ConflictingReload { at: Location },
    /// A port outside 1..65535 (or not an integer).
    #[error("{at}: port {value} is out of range (expected an integer from 1 to 65535)")]
    InvalidPort { at: Location, value: String },
    /// Any other invalid value; the message says what is expected.
    #[error("{at}: {message}")]
    InvalidValue { at: Location, message: String },
}

impl ConfigError {
    /// The position of the error, when it has one (all but read failures).
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Read { .. } | ConfigError::TooLarge { .. } => None,
            ConfigError::Syntax { at, .. }
            | ConfigError::TooComplex { at, .. }
            | ConfigError::UnknownKey { at, .. }
            | ConfigError::WrongType { at, .. }
            | ConfigError::MissingKey { at, .. }
            | ConfigError::InvalidDuration { at, .. }
            | ConfigError::EmptySelector { at }
            | ConfigError::InvalidSelector { at, .. }
            | ConfigError::DuplicateName { at, .. }
            | ConfigError::UnknownProfile { at, .. }
            | ConfigError::UnknownSignal { at, .. }
            | ConfigError::ConflictingReload { at }
            | ConfigError::InvalidPort { at, .. }
            | ConfigError::InvalidValue { at, .. } => Some(at),
        }
    }
}

pub(super) fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!(" ({hint})")
    }
}

pub(super) fn unknown_signal_message(value: &str) -> String {
    format!(
        "unknown signal {} (expected SIGHUP, SIGUSR1 or SIGUSR2)",
        quote(value)
    )
}

/// Every error found in a config file, in document order. Display prints one per line.
#[derive(Debug)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.errors.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(err: ConfigError) -> Self {
        ConfigErrors { errors: vec![err] }
    }
}

/// `mountlag check-config FILE`: prints `FILE: ok (N controllers: a, b)` and returns 0, or prints
/// every error to stderr, one per line, and returns 1.
pub fn check_config_command(path: &Path) -> u8 {
    match Config::load(path) {
        Ok(config) => {
            let mut out = std::io::stdout().lock();
            // A closed pipe is not a config error.
            let _ = writeln!(out, "{}: ok ({})", path.display(), config.summary());
            for note in config.signal_notes() {
                let _ = writeln!(out, "{note}");
            }
            let _ = out.flush();
            0
        }
        Err(errors) => {
            let mut err = std::io::stderr().lock();
            for e in &errors.errors {
                let _ = writeln!(err, "{e}");
            }
            1
        }
    }
}

pub(super) enum ReadFailure {
    Io(std::io::Error),
    TooLarge,
}

pub(super) fn read_capped(path: &Path) -> Result<Vec<u8>, ReadFailure> {
    let file = std::fs::File::open(path).map_err(ReadFailure::Io)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadFailure::Io)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ReadFailure::TooLarge);
    }
    Ok(bytes)
}

pub(super) fn syntax_error(err: &serde_yaml::Error, text: &str, origin: &str) -> ConfigError {
    let mut message = err.to_string();
    let given = err
        .location()
        .map_or((1, 1), |l| (l.line().max(1), l.column().max(1)));
    // serde_yaml places a duplicate key at the start of its mapping; point at the repeat.
    const DUPLICATE: &str = "duplicate entry with key \"";
    let (line, column) = message
        .find(DUPLICATE)
        .and_then(|i| message[i + DUPLICATE.len()..].split('"').next())
        .and_then(|key| duplicate_key_position(text, key, given.0))
        .unwrap_or(given);
    // The position is already in front; drop serde_yaml's own copy of it.
    let own = format!(" at line {} column {}", given.0, given.1);
    if let Some(i) = message.find(&own) {
        message.replace_range(i..i + own.len(), "");
    }
    ConfigError::Syntax {
        at: Location {
            file: origin.to_string(),
            line,
            column,
            path: String::new(),
        },
        message,
    }
}

/// Position of the first `[`/`{` nested deeper than [`MAX_FLOW_DEPTH`], skipping comments and
/// quoted scalars (a quote opens a scalar only where a scalar can start). Linear time.
pub(super) fn flow_too_deep(text: &str) -> Option<(usize, usize)> {
    let (mut line, mut col) = (1usize, 0usize);
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut comment = false;
    // The last non-blank character of the line so far ('\n' at its start), and whether the
    // previous character was blank (or the line start).
    let mut last = '\n';
    let mut after_blank = true;
    for c in text.chars() {
        col += 1;
        if c == '\n' {
            (line, col) = (line + 1, 0);
            (comment, last, after_blank) = (false, '\n', true);
            continue;
        }
        if comment {
            continue;
        }
        match quote {
            Some('"') => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    quote = None;
                }
            }
            Some(_) => {
                if c == '\'' {
                    quote = None;
                }
            }
            None => match c {
                '#' if after_blank => comment = true,
                '"' | '\'' if matches!(last, '\n' | ':' | '-' | '[' | '{' | ',' | '?') => {
                    quote = Some(c);
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Some((line, col));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        after_blank = c == ' ' || c == '\t';
        if !after_blank {
            last = c;
        }
    }
    None
}

/// Line and column of the second occurrence of plain key `key` within one block mapping that
/// starts at line `from` or later: the same column, with no line indented less in between.
/// Best effort (block style only).
pub(super) fn duplicate_key_position(text: &str, key: &str, from: usize) -> Option<(usize, usize)> {
    let mut seen: Vec<usize> = Vec::new();
    for (n, line) in text.lines().enumerate().skip(from.saturating_sub(1)) {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = &line[indent..];
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        seen.retain(|col| *col <= indent);
        // Skip list dashes (`- - key:`) to the key's own column.
        let mut col = indent;
        let mut body = rest;
        while let Some(after) = body.strip_prefix("- ") {
            let trimmed = after.trim_start_matches(' ');
            col += body.len() - trimmed.len();
            body = trimmed;
        }
        let is_key = body
            .strip_prefix(key)
            .is_some_and(|after| after.trim_start_matches(' ').starts_with(':'));
        if is_key {
            if seen.contains(&col) {
                let column = line[..col].chars().count() + 1;
                return Some((n + 1, column));
            }
            seen.push(col);
        }
    }
    None
}

/// A string for messages: Debug-quoted (so control characters are escaped) and cut at 64
/// characters.
/// A number from the file, as written, cut to a readable length (digits only, so no quotes).
pub(super) fn quote_number(digits: &str) -> String {
    const MAX: usize = 24;
    match digits.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}… ({} digits)", &digits[..cut], digits.chars().count()),
        None => digits.to_string(),
    }
}

pub(super) fn quote(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() > MAX {
        let cut: String = s.chars().take(MAX - 1).collect();
        format!("{:?}", cut + "…")
    } else {
        format!("{s:?}")
    }
}
