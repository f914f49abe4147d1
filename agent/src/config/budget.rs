//! How much a config document may grow when its aliases are expanded, checked before it is
//! turned into a tree.
//!
//! YAML aliases repeat a node by reference, so a few KiB of nested anchors (`a: &a [x, x]`,
//! `b: &b [*a, *a]`, …) stand for billions of nodes. `serde_yaml` keeps the parsed events (about
//! the size of the text) and expands an alias only while a value is being built; building the
//! whole [`serde_yaml::Value`] of such a file is what ran the agent out of memory. So the text
//! is first walked once by a visitor that builds nothing and only counts: every node reached,
//! aliases expanded, and the scalar bytes they carry. Past either limit the walk stops at once
//! with an error that names the limit, and memory stays at the event list's size.
//!
//! ```text
//!  text ─▶ serde_yaml events ─▶ ExpansionBudget (counts, builds nothing) ─┬─ over ─▶ TooComplex
//!                                                                       └─ ok ───▶ Value ─▶ Validator
//! ```

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Most YAML nodes (scalars, sequences, mappings; aliases counted as often as they are expanded)
/// a config document may stand for. A config with a hundred controllers has a few thousand.
pub const MAX_CONFIG_NODES: usize = 20_000;

/// Most scalar bytes a config document may stand for once its aliases are expanded: sixteen
/// times the largest file read, so an anchor may be reused but not multiplied.
pub const MAX_CONFIG_EXPANDED_BYTES: usize = 1 << 20;

/// serde_yaml's message when alias replay passes its own limit (serde_yaml 0.9 is frozen, so
/// the text is stable).
const SERDE_YAML_REPETITION: &str = "repetition limit exceeded";

/// Where the walk stopped, when it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Nodes,
    Bytes,
}

impl Exceeded {
    /// The sentence the error carries.
    pub fn message(self) -> String {
        match self {
            Exceeded::Nodes => format!(
                "the document stands for more than {MAX_CONFIG_NODES} YAML nodes once its \
                 aliases (*name) are expanded; a config needs a few thousand at most"
            ),
            Exceeded::Bytes => format!(
                "the document stands for more than {} MiB of text once its aliases (*name) are \
                 expanded",
                MAX_CONFIG_EXPANDED_BYTES >> 20
            ),
        }
    }
}

/// What [`check`] found wrong.
#[derive(Debug, PartialEq, Eq)]
pub enum BudgetError {
    /// Over a limit; `line`/`column` are where the walk was (1-based), when the parser says.
    Exceeded {
        limit: Exceeded,
        line: usize,
        column: usize,
    },
    /// Not YAML at all: left to the real parse, which reports it with its own position.
    NotYaml,
}

/// Walks `text` once, counting the nodes and scalar bytes it stands for with aliases expanded,
/// and stops at the first limit passed. Builds nothing.
pub fn check(text: &str) -> Result<(), BudgetError> {
    let mut tally = Tally::default();
    let result =
        Counter { tally: &mut tally }.deserialize(serde_yaml::Deserializer::from_str(text));
    match (result, tally.exceeded) {
        (Ok(()), _) => Ok(()),
        (Err(err), exceeded) => {
            // serde_yaml's own brake on alias replay (a multiple of the document's events)
            // catches the same bomb before ours in a small document.
            let limit = exceeded.or_else(|| {
                err.to_string()
                    .contains(SERDE_YAML_REPETITION)
                    .then_some(Exceeded::Nodes)
            });
            let Some(limit) = limit else {
                return Err(BudgetError::NotYaml);
            };
            let (line, column) = err
                .location()
                .map_or((1, 1), |l| (l.line().max(1), l.column().max(1)));
            Err(BudgetError::Exceeded {
                limit,
                line,
                column,
            })
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    nodes: usize,
    bytes: usize,
    exceeded: Option<Exceeded>,
}

impl Tally {
    fn node<E: de::Error>(&mut self, scalar_bytes: usize) -> Result<(), E> {
        self.nodes += 1;
        self.bytes = self.bytes.saturating_add(scalar_bytes);
        let over = if self.nodes > MAX_CONFIG_NODES {
            Some(Exceeded::Nodes)
        } else if self.bytes > MAX_CONFIG_EXPANDED_BYTES {
            Some(Exceeded::Bytes)
        } else {
            None
        };
        match over {
            Some(limit) => {
                self.exceeded = Some(limit);
                Err(E::custom(limit.message()))
            }
            None => Ok(()),
        }
    }
}

/// A seed that visits one node (and everything under it) and only counts.
struct Counter<'a> {
    tally: &'a mut Tally,
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.tally.node(1)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.tally.node(8)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.tally.node(8)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.tally.node(8)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.tally.node(v.len())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.tally.node(0)
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.tally.node(0)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.tally.node(0)?;
        while seq
            .next_element_seed(Counter {
                tally: &mut *self.tally,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.tally.node(0)?;
        while map
            .next_key_seed(Counter {
                tally: &mut *self.tally,
            })?
            .is_some()
        {
            map.next_value_seed(Counter {
                tally: &mut *self.tally,
            })?;
        }
        Ok(())
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged value (`!tag x`): count the tag as a node and walk what it tags.
        self.tally.node(0)?;
        let ((), variant) = data.variant_seed(Counter {
            tally: &mut *self.tally,
        })?;
        de::VariantAccess::newtype_variant_seed(
            variant,
            Counter {
                tally: &mut *self.tally,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `levels` anchors, each a list of ten aliases of the one before: 10^levels leaves.
    fn laughs(levels: usize) -> String {
        let mut text = String::from("a0: &a0 [lol]\n");
        for level in 1..=levels {
            let prev = level - 1;
            let items = vec![format!("*a{prev}"); 10].join(", ");
            text.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        text
    }

    #[test]
    fn an_ordinary_config_is_within_budget() {
        let text = "stuckAfter: 2m\ncontrollers:\n  - name: edge\n    selector: app=edge\n    \
                    reload: &r {signal: SIGHUP, process: nginx}\n  - name: b\n    selector: \
                    app=b\n    reload: *r\n";
        assert_eq!(check(text), Ok(()));
    }

    #[test]
    fn a_few_levels_of_aliases_are_fine_and_nine_are_refused() {
        assert_eq!(check(&laughs(3)), Ok(()));
        // Small: serde_yaml's own replay brake stops it first; reported as the same limit.
        assert!(matches!(
            check(&laughs(9)),
            Err(BudgetError::Exceeded {
                limit: Exceeded::Nodes,
                ..
            })
        ));
    }

    #[test]
    fn a_large_document_whose_aliases_pass_the_node_limit_stops_at_it_with_a_position() {
        // Enough plain events that serde_yaml's brake (a multiple of them) lets it replay far.
        let padding = vec!["p"; 5_000].join(", ");
        let text = format!(
            "pad: [{padding}]
{}",
            laughs(9)
        );
        match check(&text) {
            Err(BudgetError::Exceeded {
                limit: Exceeded::Nodes,
                line,
                ..
            }) => assert!(
                line >= 2,
                "stopped inside the aliases, not at the top: {line}"
            ),
            other => panic!("expected the node limit, got {other:?}"),
        }
    }

    #[test]
    fn one_large_scalar_repeated_is_refused_by_bytes() {
        let scalar = "x".repeat(60 * 1024);
        let text = format!(
            "big: &big {scalar}\nmany: [{}]\n",
            vec!["*big"; 20].join(", ")
        );
        assert!(matches!(
            check(&text),
            Err(BudgetError::Exceeded {
                limit: Exceeded::Bytes,
                ..
            })
        ));
    }

    #[test]
    fn text_that_is_not_yaml_is_left_to_the_parser() {
        assert_eq!(check("a: [unclosed\n"), Err(BudgetError::NotYaml));
        assert_eq!(check("a: *undefined\n"), Err(BudgetError::NotYaml));
    }

    #[test]
    fn the_limits_are_named_in_the_message() {
        assert!(Exceeded::Nodes.message().contains("20000"));
        assert!(Exceeded::Bytes.message().contains("1 MiB"));
    }
}
