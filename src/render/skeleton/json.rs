//! The rendered hash's canonical JSON of a rebuilt parse, written without building the
//! parse: a skeleton's parse is turned once per shape into a [`Plan`], the JSON text of its
//! fixed parts (exactly as `serde_json` writes them, collection punctuation included) with
//! the scalars holding holes between them. A render then writes the fixed text and, for each
//! such scalar, its filled value as `serde_json` writes that value; the result is
//! byte-for-byte `serde_json::to_string` of what [`super::fill`] would build (the agreement
//! tests of `guard.rs` compare the two on thousands of documents).
//!
//! Whatever the plan does not cover is answered by building the parse: a fixed part
//! `serde_json` cannot write (a key that is null, a list or a mapping), a collection key
//! holding a hole ([`Plan::new`] gives `None`), a hole key that reads as something other
//! than a string ([`Outcome::Fallback`]). Two keys of a mapping equal once filled make the
//! document not certain, as in [`super::fill`] ([`Outcome::NotCertain`]).
//!
//! This module only writes text; it never parses a document and never performs I/O.

use serde_yaml::value::TaggedValue;
use serde_yaml::{Mapping, Value};

use super::{HoleScalar, Kind, Plain, Skeleton};
use crate::render::guard::OPEN;

/// A skeleton's canonical JSON: fixed text and holes.
pub(super) struct Plan {
    segments: Vec<Segment>,
    /// For each mapping with a key holding holes, its string keys without holes.
    groups: Vec<Vec<String>>,
    /// Bytes of the fixed text (the output's least size).
    fixed_bytes: usize,
}

enum Segment {
    /// JSON text, as `serde_json` writes that part.
    Text(String),
    /// A scalar holding holes; `key`: the group of the mapping whose key it is.
    Hole {
        scalar: HoleScalar,
        key: Option<usize>,
    },
}

/// What [`Plan::write`] found.
pub(super) enum Outcome {
    /// The canonical JSON (UTF-8).
    Json(Vec<u8>),
    /// Not certain ([`super::fill`] answers `None`): the guard parses.
    NotCertain,
    /// Not covered by the plan: build the parse and write it.
    Fallback,
}

/// Whether `v` holds a hole anywhere.
fn holds_hole(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains(OPEN),
        Value::Mapping(m) => m.iter().any(|(k, v)| holds_hole(k) || holds_hole(v)),
        Value::Sequence(items) => items.iter().any(holds_hole),
        Value::Tagged(t) => holds_hole(&t.value),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// How `serde_json` writes `key` as a mapping key, or `None` when it cannot.
fn key_json(key: &Value) -> Option<String> {
    let mut one = Mapping::with_capacity(1);
    one.insert(key.clone(), Value::Null);
    let text = serde_json::to_string(&Value::Mapping(one)).ok()?;
    Some(text.strip_prefix('{')?.strip_suffix(":null}")?.to_owned())
}

/// Builds a [`Plan`].
struct Builder<'a> {
    sk: &'a Skeleton,
    plan: Plan,
}

impl Builder<'_> {
    fn text(&mut self, text: &str) {
        self.plan.fixed_bytes += text.len();
        if let Some(Segment::Text(last)) = self.plan.segments.last_mut() {
            last.push_str(text);
        } else {
            self.plan.segments.push(Segment::Text(text.to_owned()));
        }
    }

    /// Adds `v`'s JSON; `key`: `v` is a key of the mapping of that group.
    fn add(&mut self, v: &Value, key: Option<usize>) -> Option<()> {
        if !holds_hole(v) {
            let text = match key {
                Some(_) => key_json(v)?,
                None => serde_json::to_string(v).ok()?,
            };
            self.text(&text);
            return Some(());
        }
        match v {
            Value::String(s) => {
                let scalar = HoleScalar::new(s, self.sk)?;
                self.plan.segments.push(Segment::Hole { scalar, key });
            }
            // `serde_json` writes no collection as a key.
            _ if key.is_some() => return None,
            Value::Mapping(m) => {
                let group = m.keys().any(holds_hole).then(|| {
                    let fixed = m
                        .keys()
                        .filter(|k| !holds_hole(k))
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect();
                    self.plan.groups.push(fixed);
                    self.plan.groups.len() - 1
                });
                self.text("{");
                for (i, (k, item)) in m.iter().enumerate() {
                    if i > 0 {
                        self.text(",");
                    }
                    self.add(k, Some(group.unwrap_or(usize::MAX)))?;
                    self.text(":");
                    self.add(item, None)?;
                }
                self.text("}");
            }
            Value::Sequence(items) => {
                self.text("[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.text(",");
                    }
                    self.add(item, None)?;
                }
                self.text("]");
            }
            Value::Tagged(t) => {
                // `{"!Tag":` then the value, then `}`: as `serde_json` writes a tagged null,
                // without the null.
                let empty = serde_json::to_string(&Value::Tagged(Box::new(TaggedValue {
                    tag: t.tag.clone(),
                    value: Value::Null,
                })))
                .ok()?;
                self.text(empty.strip_suffix("null}")?);
                self.add(&t.value, None)?;
                self.text("}");
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => return None,
        }
        Some(())
    }
}

impl Plan {
    /// The plan of a skeleton's parse, or `None` when it does not cover it.
    pub(super) fn new(sk: &Skeleton) -> Option<Self> {
        let mut b = Builder {
            sk,
            plan: Self {
                segments: Vec::new(),
                groups: Vec::new(),
                fixed_bytes: 0,
            },
        };
        b.add(&sk.value, None)?;
        Some(b.plan)
    }

    /// The canonical JSON of the skeleton filled with `values`.
    pub(super) fn write(&self, values: &[(&str, Kind)]) -> Outcome {
        let mut out: Vec<u8> = Vec::with_capacity(self.fixed_bytes + 32 * values.len());
        let mut text = String::new();
        // The filled keys of mappings whose keys hold holes: (group, key).
        let mut keys: Vec<(usize, String)> = Vec::new();
        for segment in &self.segments {
            let (scalar, key) = match segment {
                Segment::Text(t) => {
                    out.extend_from_slice(t.as_bytes());
                    continue;
                }
                Segment::Hole { scalar, key } => (scalar, key),
            };
            let Some(read) = scalar.read(values, &mut text) else {
                return Outcome::NotCertain;
            };
            let string = match &read {
                Plain::Text => text.as_str(),
                Plain::Other(Value::String(s)) => s.as_str(),
                // A key must be a string here; a value is written as it reads.
                Plain::Other(_) if key.is_some() => return Outcome::Fallback,
                Plain::Other(v) => {
                    if serde_json::to_writer(&mut out, v).is_err() {
                        return Outcome::Fallback;
                    }
                    continue;
                }
            };
            if serde_json::to_writer(&mut out, string).is_err() {
                return Outcome::Fallback;
            }
            if let Some(group) = key {
                keys.push((*group, string.to_owned()));
            }
        }
        for (i, (group, key)) in keys.iter().enumerate() {
            let fixed = self.groups.get(*group).is_some_and(|f| f.contains(key));
            if fixed || keys[..i].iter().any(|(g, k)| g == group && k == key) {
                return Outcome::NotCertain;
            }
        }
        Outcome::Json(out)
    }
}
