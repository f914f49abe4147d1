//! Label selectors in kubectl `-l` syntax, and the label, host and URL checks they share.

use super::*;

/// A parsed label selector (kubectl -l syntax: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
/// `a notin (x,y)`, `a`, `!a`, comma-separated; whitespace tolerated).
///
/// Differences from the API server's parser, all stricter: `in ()` and empty values inside a
/// set are refused, `>`/`<` are not supported, and a trailing comma is an error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    canonical: String,
    selector: Selector,
}

impl LabelSelector {
    /// Parses a selector; the error says what is wrong and where (1-based character position).
    /// An empty (or all-whitespace) string selects everything.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(LabelSelector::everything());
        }
        let mut lexer = Lexer { s, pos: 0 };
        let mut exprs = Vec::new();
        loop {
            exprs.push(parse_requirement(&mut lexer)?);
            match lexer.next() {
                (_, Tok::End) => break,
                (_, Tok::Comma) => {}
                (at, tok) => {
                    return Err(at_char(
                        s,
                        at,
                        &format!("expected \",\" or the end of the selector, found {tok}"),
                    ));
                }
            }
        }
        let selector: Selector = exprs.into_iter().collect();
        Ok(LabelSelector {
            canonical: selector.to_string(),
            selector,
        })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.matches(labels)
    }

    /// Canonical form, usable as the API's `labelSelector` query parameter (`a=b`, `a!=b`,
    /// `a in (x,y)` with sorted values, `a`, `!a`, joined by `,`). Empty for [`Self::everything`].
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// The selector that matches every pod.
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// Whether this selector matches every pod.
    pub fn is_everything(&self) -> bool {
        self.selector.selects_all()
    }

    /// The parsed form, for kube's `ListParams::labels_from`/`WatchParams::labels_from`.
    pub fn kube_selector(&self) -> &Selector {
        &self.selector
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl FromStr for LabelSelector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabelSelector::parse(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tok<'a> {
    Ident(&'a str),
    Comma,
    Eq,
    DoubleEq,
    NotEq,
    Bang,
    Open,
    Close,
    Gt,
    Lt,
    End,
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "{}", quote(s)),
            Tok::Comma => f.write_str("\",\""),
            Tok::Eq => f.write_str("\"=\""),
            Tok::DoubleEq => f.write_str("\"==\""),
            Tok::NotEq => f.write_str("\"!=\""),
            Tok::Bang => f.write_str("\"!\""),
            Tok::Open => f.write_str("\"(\""),
            Tok::Close => f.write_str("\")\""),
            Tok::Gt => f.write_str("\">\""),
            Tok::Lt => f.write_str("\"<\""),
            Tok::End => f.write_str("the end of the selector"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Lexer<'a> {
    s: &'a str,
    /// Byte offset of the next unread character.
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// The next token and the byte offset where it starts.
    fn next(&mut self) -> (usize, Tok<'a>) {
        let rest = &self.s[self.pos..];
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
        let start = self.pos;
        let Some(first) = trimmed.chars().next() else {
            return (start, Tok::End);
        };
        let second_is_eq = trimmed.as_bytes().get(1) == Some(&b'=');
        let (tok, len) = match first {
            ',' => (Tok::Comma, 1),
            '(' => (Tok::Open, 1),
            ')' => (Tok::Close, 1),
            '>' => (Tok::Gt, 1),
            '<' => (Tok::Lt, 1),
            '=' if second_is_eq => (Tok::DoubleEq, 2),
            '=' => (Tok::Eq, 1),
            '!' if second_is_eq => (Tok::NotEq, 2),
            '!' => (Tok::Bang, 1),
            _ => {
                let end = trimmed
                    .find(|c: char| c.is_whitespace() || ",=!()<>".contains(c))
                    .unwrap_or(trimmed.len());
                (Tok::Ident(&trimmed[..end]), end)
            }
        };
        self.pos += len;
        (start, tok)
    }

    fn peek(&self) -> (usize, Tok<'a>) {
        let mut copy = *self;
        copy.next()
    }
}

/// `message at character N` (1-based, in characters).
pub(super) fn at_char(s: &str, byte: usize, message: &str) -> String {
    let n = s.get(..byte).map_or(0, |p| p.chars().count()) + 1;
    format!("{message} at character {n}")
}

pub(super) fn parse_requirement(lexer: &mut Lexer<'_>) -> Result<Expression, String> {
    let s = lexer.s;
    let (at, tok) = lexer.next();
    match tok {
        Tok::Bang => match lexer.next() {
            (at, Tok::Ident(key)) => {
                check_label_key(key).map_err(|e| at_char(s, at, &e))?;
                Ok(Expression::DoesNotExist(key.to_string()))
            }
            (at, tok) => Err(at_char(
                s,
                at,
                &format!("expected a label key after \"!\", found {tok}"),
            )),
        },
        Tok::Ident(key) => {
            check_label_key(key).map_err(|e| at_char(s, at, &e))?;
            let key = key.to_string();
            let (op_at, op) = lexer.peek();
            match op {
                Tok::Comma | Tok::End => Ok(Expression::Exists(key)),
                Tok::Eq | Tok::DoubleEq | Tok::NotEq => {
                    lexer.next();
                    let value = match lexer.peek() {
                        (value_at, Tok::Ident(value)) => {
                            lexer.next();
                            check_label_value(value).map_err(|e| at_char(s, value_at, &e))?;
                            value
                        }
                        (_, Tok::Comma | Tok::End) => "",
                        (value_at, tok) => {
                            return Err(at_char(
                                s,
                                value_at,
                                &format!("expected a value after {op}, found {tok}"),
                            ));
                        }
                    };
                    Ok(if op == Tok::NotEq {
                        Expression::NotEqual(key, value.to_string())
                    } else {
                        Expression::Equal(key, value.to_string())
                    })
                }
                Tok::Ident(word @ ("in" | "notin")) => {
                    lexer.next();
                    let values = parse_value_set(lexer, word)?;
                    Ok(if word == "in" {
                        Expression::In(key, values)
                    } else {
                        Expression::NotIn(key, values)
                    })
                }
                Tok::Gt | Tok::Lt => Err(at_char(
                    s,
                    op_at,
                    &format!("operator {op} is not supported"),
                )),
                tok => Err(at_char(
                    s,
                    op_at,
                    &format!(
                        "expected an operator (=, ==, !=, in, notin), \",\" or the end after key {}, found {tok}",
                        quote(&key)
                    ),
                )),
            }
        }
        tok => Err(at_char(
            s,
            at,
            &format!("expected a label key or \"!\", found {tok}"),
        )),
    }
}

pub(super) fn parse_value_set(
    lexer: &mut Lexer<'_>,
    word: &str,
) -> Result<BTreeSet<String>, String> {
    let s = lexer.s;
    match lexer.next() {
        (_, Tok::Open) => {}
        (at, tok) => {
            return Err(at_char(
                s,
                at,
                &format!("expected \"(\" after {word}, found {tok}"),
            ));
        }
    }
    let mut values = BTreeSet::new();
    loop {
        match lexer.next() {
            (at, Tok::Ident(value)) => {
                check_label_value(value).map_err(|e| at_char(s, at, &e))?;
                values.insert(value.to_string());
            }
            (at, Tok::Close) if values.is_empty() => {
                return Err(at_char(s, at, &format!("empty value list after {word}")));
            }
            (at, tok) => {
                return Err(at_char(s, at, &format!("expected a value, found {tok}")));
            }
        }
        match lexer.next() {
            (_, Tok::Comma) => {}
            (_, Tok::Close) => return Ok(values),
            (at, Tok::End) => return Err(at_char(s, at, "missing \")\"")),
            (at, tok) => {
                return Err(at_char(
                    s,
                    at,
                    &format!("expected \",\" or \")\", found {tok}"),
                ));
            }
        }
    }
}

/// A label key: optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
pub(super) fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns_subdomain(prefix)
    {
        return Err(format!(
            "invalid label key {}: the prefix must be a DNS subdomain (lower-case letters, digits, '-' and '.')",
            quote(key)
        ));
    }
    if name.contains('/') {
        return Err(format!(
            "invalid label key {}: at most one \"/\"",
            quote(key)
        ));
    }
    if !is_label_name(name) {
        return Err(format!(
            "invalid label key {}: the name must be 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            quote(key)
        ));
    }
    Ok(())
}

pub(super) fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {}: at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            quote(value)
        ))
    }
}

pub(super) fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// RFC 1123 label: lower-case alphanumerics and '-', 1-63, alphanumeric at both ends.
pub(super) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|c| is_lower_alnum(*c) || *c == b'-')
}

pub(super) fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

pub(super) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A host name usable as SNI: letters, digits and '-', dot-separated labels, no wildcard.
pub(super) fn check_host(s: &str) -> Result<(), String> {
    if s.contains('*') {
        return Err(format!(
            "host {}: a wildcard cannot be sent as SNI, name a concrete host",
            quote(s)
        ));
    }
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
        && !s.split('.').all(|l| l.bytes().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "host {}: expected a DNS name such as shop.example.com (no scheme, port or IP address)",
            quote(s)
        ))
    }
}

/// A reload endpoint: plain HTTP only. Admin endpoints (Caddy's `/load`, a sidecar's webhook)
/// listen in plain HTTP on the pod IP or loopback; the reloader speaks nothing else, so an
/// `https://` URL is refused here, where the user sees it, not at every reload.
pub(super) fn check_url(s: &str) -> Result<(), String> {
    if s.starts_with("https://") {
        return Err(format!(
            "url {}: https is not supported; reload endpoints are called over plain HTTP (http://)",
            quote(s)
        ));
    }
    let rest = s
        .strip_prefix("http://")
        .ok_or_else(|| format!("url {}: must start with http://", quote(s)))?;
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if rest[..host_end].is_empty() {
        return Err(format!("url {}: no host", quote(s)));
    }
    if s.len() > 2048 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "url {}: must not contain spaces or control characters",
            quote(s)
        ));
    }
    Ok(())
}

/// A class or controller name (`k8s.io/ingress-nginx`, `nginx`): printable, no spaces, at most
/// 253 bytes (a GatewayClass `controllerName` is a domain-prefixed path).
pub(super) fn check_class_value(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{}: expected a name such as k8s.io/ingress-nginx (letters, digits, '-', '_', '.', '/')",
            quote(s)
        ))
    }
}
