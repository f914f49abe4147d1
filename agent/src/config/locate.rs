//! Positions of key paths in the source text.
//!
//! A forgiving reader of YAML's structure that records where each key, list item and value
//! starts, so errors found on the parsed `Value` can name a line and column. It only runs on
//! text serde_yaml already accepted, and only when there is an error to report; anything it
//! does not follow (complex keys, merged keys, aliases) makes a lookup stop at the deepest node
//! it found. It never panics and always terminates (a step budget and a depth limit).

use std::collections::HashMap;

use super::Seg;

const MAX_DEPTH: usize = 64;

/// 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pos {
    pub(super) line: usize,
    pub(super) col: usize,
}

#[derive(Debug)]
pub(super) struct Node {
    pos: Pos,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Scalar,
    /// Entries in order, and the index of each key's first entry.
    Map(Vec<Entry>, HashMap<String, usize>),
    Seq(Vec<Item>),
}

#[derive(Debug)]
struct Entry {
    key: String,
    key_pos: Pos,
    value: Node,
}

#[derive(Debug)]
struct Item {
    dash: Pos,
    value: Node,
}

const START: Pos = Pos { line: 1, col: 1 };

fn map_kind(entries: Vec<Entry>) -> Kind {
    let mut index = HashMap::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        index.entry(entry.key.clone()).or_insert(i);
    }
    Kind::Map(entries, index)
}

fn scalar(pos: Pos) -> Node {
    Node {
        pos,
        kind: Kind::Scalar,
    }
}

pub(super) fn parse(text: &str) -> Node {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser::new(text);
    parser.document()
}

impl Node {
    /// Position of the node at `path`: of its key (or list dash) when `key`, else of its
    /// value. Stops at the deepest node found.
    pub(super) fn locate(&self, path: &[Seg], key: bool) -> Pos {
        let mut node = self;
        for (i, seg) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            match (seg, &node.kind) {
                (Seg::Key(k), Kind::Map(entries, index)) => {
                    match index.get(k).and_then(|i| entries.get(*i)) {
                        Some(entry) if last && key => return entry.key_pos,
                        Some(entry) => node = &entry.value,
                        None => return node.pos,
                    }
                }
                (Seg::Index(n), Kind::Seq(items)) => match items.get(*n) {
                    Some(item) if last && key => return item.dash,
                    Some(item) => node = &item.value,
                    None => return node.pos,
                },
                _ => return node.pos,
            }
        }
        node.pos
    }
}

fn blank(c: Option<char>) -> bool {
    matches!(c, None | Some(' ' | '\t'))
}

fn is_blank_line(line: &[char]) -> bool {
    line.iter().all(|c| matches!(c, ' ' | '\t'))
}

fn indent(line: &[char]) -> usize {
    line.iter().take_while(|c| **c == ' ').count()
}

/// A quoted scalar starting at `line[start]` and closed on the same line: its decoded text
/// and the index after the closing quote.
fn quoted_on_line(line: &[char], start: usize) -> Option<(String, usize)> {
    let quote = *line.get(start)?;
    let mut out = String::new();
    let mut i = start + 1;
    while i < line.len() {
        let c = line[i];
        if quote == '\'' {
            if c == '\'' {
                if line.get(i + 1) == Some(&'\'') {
                    out.push('\'');
                    i += 2;
                    continue;
                }
                return Some((out, i + 1));
            }
            out.push(c);
            i += 1;
        } else {
            match c {
                '"' => return Some((out, i + 1)),
                '\\' => {
                    let (decoded, used) = unescape(&line[i + 1..]);
                    out.push_str(&decoded);
                    i += 1 + used;
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            }
        }
    }
    None
}

/// Decodes one escape after a backslash; returns the text and the characters consumed.
fn unescape(rest: &[char]) -> (String, usize) {
    let Some(&c) = rest.first() else {
        return (String::new(), 0);
    };
    let hex = |n: usize| -> (String, usize) {
        let digits: String = rest.iter().skip(1).take(n).collect();
        match u32::from_str_radix(&digits, 16)
            .ok()
            .and_then(char::from_u32)
        {
            Some(ch) if digits.len() == n => (ch.to_string(), 1 + n),
            _ => (c.to_string(), 1),
        }
    };
    match c {
        'n' => ("\n".to_string(), 1),
        't' => ("\t".to_string(), 1),
        'r' => ("\r".to_string(), 1),
        '0' => ("\0".to_string(), 1),
        'x' => hex(2),
        'u' => hex(4),
        'U' => hex(8),
        other => (other.to_string(), 1),
    }
}

#[derive(Debug)]
struct Parser {
    lines: Vec<Vec<char>>,
    line: usize,
    col: usize,
    budget: usize,
}

impl Parser {
    fn new(text: &str) -> Self {
        let lines: Vec<Vec<char>> = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l).chars().collect())
            .collect();
        let budget = text.len().saturating_mul(8).saturating_add(1024);
        Parser {
            lines,
            line: 0,
            col: 0,
            budget,
        }
    }

    /// Spends one step; when the budget is gone, jumps to the end so every loop stops.
    fn tick(&mut self) -> bool {
        if self.budget == 0 {
            self.line = self.lines.len();
            self.col = 0;
            return false;
        }
        self.budget -= 1;
        true
    }

    fn eof(&self) -> bool {
        self.line >= self.lines.len()
    }

    fn cur(&self) -> &[char] {
        self.lines.get(self.line).map_or(&[], Vec::as_slice)
    }

    fn peek(&self) -> Option<char> {
        self.cur().get(self.col).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.cur().get(self.col + ahead).copied()
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line + 1,
            col: self.col + 1,
        }
    }

    fn next_line(&mut self) {
        self.line += 1;
        self.col = 0;
    }

    fn at_line_start(&self) -> bool {
        self.cur()
            .iter()
            .take(self.col)
            .all(|c| matches!(c, ' ' | '\t'))
    }

    fn is_seq_indicator(&self) -> bool {
        self.peek() == Some('-') && blank(self.peek_at(1))
    }

    /// Skips spaces, comments and line ends up to the next significant character.
    fn skip_ws(&mut self) {
        while !self.eof() && self.tick() {
            match self.peek() {
                Some(' ' | '\t') => self.col += 1,
                None | Some('#') => self.next_line(),
                Some(_) => break,
            }
        }
    }

    /// Skips a run of non-blank characters (an anchor, tag or alias).
    fn skip_token(&mut self, flow: bool) {
        while let Some(c) = self.peek() {
            if c == ' ' || c == '\t' || (flow && matches!(c, ',' | '[' | ']' | '{' | '}')) {
                break;
            }
            self.col += 1;
        }
    }

    fn starts_with_marker(&self, marker: &str) -> bool {
        let line = self.cur();
        let n = marker.chars().count();
        marker
            .chars()
            .enumerate()
            .all(|(i, c)| line.get(self.col + i) == Some(&c))
            && blank(line.get(self.col + n).copied())
    }

    fn document(&mut self) -> Node {
        loop {
            self.skip_ws();
            if self.eof() {
                return scalar(START);
            }
            if self.col == 0 && self.peek() == Some('%') {
                self.next_line();
            } else if self.col == 0 && self.starts_with_marker("---") {
                self.col += 3;
            } else {
                break;
            }
        }
        self.node(0, None, 0).unwrap_or_else(|| scalar(START))
    }

    fn fits(&self, min_col: usize, seq_col: Option<usize>) -> bool {
        self.col >= min_col || (seq_col == Some(self.col) && self.is_seq_indicator())
    }

    /// A block node that starts on this line, or on a later line at column `min_col` or
    /// more (or a `-` list at `seq_col`, for lists written flush under their key).
    fn node(&mut self, min_col: usize, seq_col: Option<usize>, depth: usize) -> Option<Node> {
        let start_line = self.line;
        self.skip_ws();
        if self.eof() || (self.line != start_line && !self.fits(min_col, seq_col)) {
            return None;
        }
        // A node starts at its first property (anchor or tag), as in libyaml.
        let pos = self.pos();
        while matches!(self.peek(), Some('&' | '!')) && self.tick() {
            self.skip_token(false);
            let line = self.line;
            self.skip_ws();
            if self.eof() || (self.line != line && !self.fits(min_col, seq_col)) {
                return Some(scalar(pos));
            }
        }
        if depth > MAX_DEPTH {
            self.skip_block(min_col);
            return Some(scalar(pos));
        }
        let mut node = match self.peek() {
            Some('-') if self.is_seq_indicator() => self.seq(depth),
            Some('[' | '{') => {
                let node = self.flow(depth);
                // Whatever follows on the line (a comment) is not structure.
                self.col = self.cur().len().max(self.col);
                node
            }
            Some('|' | '>') => {
                self.skip_block(min_col);
                scalar(pos)
            }
            Some('?') if blank(self.peek_at(1)) => {
                self.skip_block(min_col);
                scalar(pos)
            }
            Some('*') => {
                self.skip_token(false);
                scalar(pos)
            }
            Some(_) if self.key_here().is_some() => self.map(depth),
            Some(_) => {
                self.skip_scalar(min_col);
                scalar(pos)
            }
            None => scalar(pos),
        };
        node.pos = pos;
        Some(node)
    }

    /// If a mapping key starts here (`key:` followed by a blank), its text and the column
    /// after the colon.
    fn key_here(&self) -> Option<(String, usize)> {
        let line = self.cur();
        let start = self.col;
        match line.get(start)? {
            '"' | '\'' => {
                let (key, end) = quoted_on_line(line, start)?;
                let mut i = end;
                while matches!(line.get(i), Some(' ' | '\t')) {
                    i += 1;
                }
                (line.get(i) == Some(&':') && blank(line.get(i + 1).copied()))
                    .then_some((key, i + 1))
            }
            _ => {
                for i in start..line.len() {
                    let c = line[i];
                    if c == '#' && i > start && matches!(line[i - 1], ' ' | '\t') {
                        return None;
                    }
                    if c == ':' && blank(line.get(i + 1).copied()) {
                        let key: String = line[start..i].iter().collect();
                        return Some((key.trim_end().to_string(), i + 1));
                    }
                }
                None
            }
        }
    }

    fn map(&mut self, depth: usize) -> Node {
        let col = self.col;
        let pos = self.pos();
        let mut entries = Vec::new();
        while self.tick() {
            let key_pos = self.pos();
            let Some((key, after)) = self.key_here() else {
                break;
            };
            self.col = after;
            let value = self
                .node(col + 1, Some(col), depth + 1)
                .unwrap_or_else(|| scalar(key_pos));
            entries.push(Entry {
                key,
                key_pos,
                value,
            });
            self.skip_ws();
            if self.eof() || self.col != col || !self.at_line_start() || self.is_seq_indicator() {
                break;
            }
        }
        Node {
            pos,
            kind: map_kind(entries),
        }
    }

    fn seq(&mut self, depth: usize) -> Node {
        let col = self.col;
        let pos = self.pos();
        let mut items = Vec::new();
        while self.tick() {
            let dash = self.pos();
            self.col += 1;
            let value = self
                .node(col + 1, None, depth + 1)
                .unwrap_or_else(|| scalar(dash));
            items.push(Item { dash, value });
            self.skip_ws();
            if self.eof() || self.col != col || !self.at_line_start() || !self.is_seq_indicator() {
                break;
            }
        }
        Node {
            pos,
            kind: Kind::Seq(items),
        }
    }

    /// Skips the rest of this line and every following line that is blank or indented at
    /// least `min_col` (block scalars, skipped subtrees).
    fn skip_block(&mut self, min_col: usize) {
        self.col = self.cur().len();
        while self.tick() {
            let next = self.line + 1;
            let Some(line) = self.lines.get(next) else {
                break;
            };
            if is_blank_line(line) || indent(line) >= min_col {
                self.line = next;
                self.col = self.cur().len();
            } else {
                break;
            }
        }
    }

    /// Skips a block-context scalar: quoted (possibly over several lines) or plain (this
    /// line plus continuation lines indented at least `min_col`).
    fn skip_scalar(&mut self, min_col: usize) {
        if matches!(self.peek(), Some('"' | '\'')) {
            self.skip_quoted();
            self.col = self.cur().len().max(self.col);
            return;
        }
        self.col = self.cur().len();
        while self.tick() {
            let mut next = self.line + 1;
            while self.lines.get(next).is_some_and(|l| is_blank_line(l)) {
                next += 1;
            }
            let Some(line) = self.lines.get(next) else {
                break;
            };
            let ind = indent(line);
            if ind < min_col || line.get(ind) == Some(&'#') {
                break;
            }
            self.line = next;
            self.col = self.cur().len();
        }
    }

    /// Skips a quoted scalar starting at the cursor, across lines.
    fn skip_quoted(&mut self) {
        let Some(quote) = self.peek() else {
            return;
        };
        self.col += 1;
        while !self.eof() && self.tick() {
            match self.peek() {
                None => self.next_line(),
                Some('\\') if quote == '"' => self.col += 2,
                Some('\'') if quote == '\'' && self.peek_at(1) == Some('\'') => self.col += 2,
                Some(c) if c == quote => {
                    self.col += 1;
                    return;
                }
                Some(_) => self.col += 1,
            }
        }
    }

    /// A flow collection (`[...]` or `{...}`) starting at the cursor.
    fn flow(&mut self, depth: usize) -> Node {
        let pos = self.pos();
        let is_map = self.peek() == Some('{');
        self.col += 1;
        if depth > MAX_DEPTH {
            self.skip_flow_rest();
            return scalar(pos);
        }
        let close = if is_map { '}' } else { ']' };
        let mut entries = Vec::new();
        let mut items = Vec::new();
        while !self.eof() && self.tick() {
            self.skip_ws();
            let before = (self.line, self.col);
            match self.peek() {
                None => break,
                Some(c) if c == close => {
                    self.col += 1;
                    break;
                }
                Some(',') => self.col += 1,
                Some(_) if is_map => {
                    let key_pos = self.pos();
                    let key = self.flow_key(depth);
                    self.skip_ws();
                    let value = if self.peek() == Some(':') {
                        self.col += 1;
                        self.flow_item(depth + 1)
                    } else {
                        scalar(key_pos)
                    };
                    entries.push(Entry {
                        key,
                        key_pos,
                        value,
                    });
                }
                Some(_) => {
                    let value = self.flow_item(depth + 1);
                    // `[a: b]` is a one-pair mapping; its value is not tracked.
                    self.skip_ws();
                    if self.peek() == Some(':') {
                        self.col += 1;
                        let _ = self.flow_item(depth + 1);
                    }
                    items.push(Item {
                        dash: value.pos,
                        value,
                    });
                }
            }
            if (self.line, self.col) == before {
                self.col += 1;
            }
        }
        let kind = if is_map {
            map_kind(entries)
        } else {
            Kind::Seq(items)
        };
        Node { pos, kind }
    }

    /// A key inside `{...}`: its text (empty for collection keys).
    fn flow_key(&mut self, depth: usize) -> String {
        match self.peek() {
            Some('"' | '\'') => {
                let line = self.cur();
                let key = quoted_on_line(line, self.col).map(|(k, _)| k);
                self.skip_quoted();
                key.unwrap_or_default()
            }
            Some('[' | '{') => {
                let _ = self.flow(depth + 1);
                String::new()
            }
            _ => self.flow_plain(),
        }
    }

    /// A value inside a flow collection.
    fn flow_item(&mut self, depth: usize) -> Node {
        self.skip_ws();
        let pos = self.pos();
        while matches!(self.peek(), Some('&' | '!')) && self.tick() {
            self.skip_token(true);
            self.skip_ws();
        }
        match self.peek() {
            Some('[' | '{') => {
                let mut node = self.flow(depth);
                node.pos = pos;
                node
            }
            Some('"' | '\'') => {
                self.skip_quoted();
                scalar(pos)
            }
            Some(',' | ']' | '}') | None => scalar(pos),
            Some(_) => {
                let _ = self.flow_plain();
                scalar(pos)
            }
        }
    }

    /// A plain scalar inside a flow collection, possibly over several lines; its text.
    fn flow_plain(&mut self) -> String {
        let mut text = String::new();
        while !self.eof() && self.tick() {
            match self.peek() {
                None => {
                    self.next_line();
                    text.push(' ');
                }
                Some(',' | '[' | ']' | '{' | '}') => break,
                Some(':')
                    if blank(self.peek_at(1))
                        || matches!(self.peek_at(1), Some(',' | '[' | ']' | '{' | '}')) =>
                {
                    break;
                }
                Some('#') if self.col == 0 || blank(self.cur().get(self.col - 1).copied()) => {
                    self.next_line();
                }
                Some(c) => {
                    text.push(c);
                    self.col += 1;
                }
            }
        }
        text.trim().to_string()
    }

    /// Skips to the end of the flow collection whose opening bracket was just consumed.
    fn skip_flow_rest(&mut self) {
        let mut open = 1usize;
        while !self.eof() && open > 0 && self.tick() {
            match self.peek() {
                None => self.next_line(),
                Some('"' | '\'') => self.skip_quoted(),
                Some('[' | '{') => {
                    open += 1;
                    self.col += 1;
                }
                Some(']' | '}') => {
                    open -= 1;
                    self.col += 1;
                }
                Some(_) => self.col += 1,
            }
        }
    }
}
