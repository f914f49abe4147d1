//! Positions of key paths in the source text, from serde-saphyr's spans.
//!
//! Only when there is an error to report, the document is read a second time, by serde-saphyr,
//! into a tree in which every key, list item and value carries the line and column where it
//! starts (`Spanned`); a lookup walks a key path and stops at the deepest node it found. The read
//! runs under serde-saphyr's budget (events, aliases, depth, nodes), so a hostile file costs
//! bounded time; a document it cannot read (serde_yaml and serde-saphyr disagree on a corner of
//! YAML) locates everything at its start. An error about a list item points at its dash, which
//! is the one position a span does not give: it is the `-` that only whitespace separates from
//! the item on the item's line.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Budget, Options, Spanned};

use super::Seg;

/// Nesting serde-saphyr may read (its budget): a config is six levels deep at most
/// (`controllers[0].reload.http.url`), and each level of the spanned tree costs tens of KiB of
/// stack in a debug build; a deeper document is located at its start.
const MAX_DEPTH: usize = 16;

/// 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pos {
    pub(super) line: usize,
    pub(super) col: usize,
}

const START: Pos = Pos { line: 1, col: 1 };

/// A YAML node and where it starts.
#[derive(Debug)]
pub(super) struct Node {
    pos: Pos,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Scalar,
    /// Entries in document order: key text, key position, value.
    Map(Vec<(String, Pos, Node)>),
    /// Items in document order: dash position, item.
    Seq(Vec<(Pos, Node)>),
}

/// Reads `text` into a tree of positions; never fails (see the module docs).
pub(super) fn parse(text: &str) -> Node {
    let mut budget = Budget::default();
    budget.max_depth = MAX_DEPTH;
    let mut options = Options::default();
    options.budget = Some(budget);
    match serde_saphyr::from_str_with_options::<Spanned<Tree>>(text, options) {
        Ok(root) => node(text, root),
        Err(_) => Node {
            pos: START,
            kind: Kind::Scalar,
        },
    }
}

impl Node {
    /// Position of the node at `path`: of its key (or list dash) when `key`, else of its
    /// value. Stops at the deepest node found.
    pub(super) fn locate(&self, path: &[Seg], key: bool) -> Pos {
        let mut node = self;
        for (i, seg) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            let next = match (seg, &node.kind) {
                (Seg::Key(k), Kind::Map(entries)) => entries
                    .iter()
                    .find(|(name, _, _)| name == k)
                    .map(|(_, key_pos, value)| (*key_pos, value)),
                (Seg::Index(n), Kind::Seq(items)) => {
                    items.get(*n).map(|(dash, item)| (*dash, item))
                }
                _ => None,
            };
            match next {
                Some((key_pos, _)) if last && key => return key_pos,
                Some((_, child)) => node = child,
                None => return node.pos,
            }
        }
        node.pos
    }
}

fn pos(text: &str, location: &serde_saphyr::Location) -> Pos {
    let line = usize::try_from(location.line()).unwrap_or(0);
    let col = usize::try_from(location.column()).unwrap_or(0);
    if line == 0 || col == 0 || text.is_empty() {
        // An unknown location (serde-saphyr reports 0:0): the document's start.
        return START;
    }
    Pos { line, col }
}

/// The `-` of a block sequence item at `item`: on the item's line, before it, with only
/// whitespace between. A flow item (`[a, b]`) or an item on the line after its dash has
/// none: the item's own position stands for it.
fn dash_of(text: &str, item: Pos) -> Pos {
    let Some(line) = text.lines().nth(item.line - 1) else {
        return item;
    };
    let before: Vec<char> = line.chars().take(item.col - 1).collect();
    let gap = before
        .iter()
        .rev()
        .take_while(|c| c.is_whitespace())
        .count();
    match before.len().checked_sub(gap + 1) {
        Some(dash) if before[dash] == '-' && gap > 0 => Pos {
            line: item.line,
            col: dash + 1,
        },
        _ => item,
    }
}

fn node(text: &str, spanned: Spanned<Tree>) -> Node {
    let mut at = pos(text, &spanned.referenced);
    let kind = match spanned.value {
        Tree::Scalar => Kind::Scalar,
        Tree::Map(entries) => Kind::Map(
            entries
                .into_iter()
                .map(|(key, value)| (key.value.0, pos(text, &key.referenced), node(text, value)))
                .collect(),
        ),
        Tree::Seq(items) => {
            let items: Vec<(Pos, Node)> = items
                .into_iter()
                .map(|item| {
                    let child = node(text, item);
                    (dash_of(text, child.pos), child)
                })
                .collect();
            // A block sequence starts at its first dash.
            if let Some((dash, _)) = items.first()
                && (dash.line, dash.col) < (at.line, at.col)
            {
                at = *dash;
            }
            Kind::Seq(items)
        }
    };
    Node { pos: at, kind }
}

/// What serde-saphyr reads: every child with its span.
enum Tree {
    Scalar,
    Map(Vec<(Spanned<KeyText>, Spanned<Tree>)>),
    Seq(Vec<Spanned<Tree>>),
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }

    fn visit_none<E: de::Error>(self) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Tree, D::Error> {
        Tree::deserialize(deserializer)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            entries.push((key, map.next_value::<Spanned<Tree>>()?));
        }
        Ok(Tree::Map(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Tree>>()? {
            items.push(item);
        }
        Ok(Tree::Seq(items))
    }
}

/// A mapping key as the validator names it in a key path (a scalar's text).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // As text: `n`, `on` or `yes` are keys, not YAML 1.1 booleans (serde_yaml reads them so).
        deserializer.deserialize_string(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = KeyText;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
        Ok(KeyText(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
        Ok(KeyText(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
        Ok(KeyText(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
        Ok(KeyText(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
        Ok(KeyText(v.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
        Ok(KeyText(String::new()))
    }

    fn visit_none<E: de::Error>(self) -> Result<KeyText, E> {
        Ok(KeyText(String::new()))
    }

    // A complex key (a mapping or list as key) is never a config key: skip its contents.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyText, A::Error> {
        while map
            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
            .is_some()
        {}
        Ok(KeyText(String::new()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyText, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(KeyText(String::new()))
    }
}
