//! The guard's no-parse path: the parse of a rendered document rebuilt from a cached parse
//! of its *skeleton* (the document with every printed value replaced by a numbered hole).
//!
//! It applies only when every printed value is only characters of the scalar it sits in,
//! so that the skeleton scans as the clean document does: either a plain word in an
//! ordinary position (the rule of [`super::guard::plain_values_only`]), or printable ASCII
//! text (no blank at either end, not starting with `-` or `.`) inside a single-quoted scalar
//! without `'`, a double-quoted one without `"` or `\`, or a block scalar, the style read
//! from libyaml's scanner of the skeleton (each hole in exactly one scalar). In addition,
//! every line holding a value is shorter than [`MAX_LINE`] bytes (libyaml drops a simple
//! key longer than 1024 characters: lengths must not decide anything) and the document
//! holds no core tag (`!!`, `tag:yaml.org`, `%TAG`: a core tag changes how a scalar is read)
//! and no `\u` escape (which could write a hole's markers). A skeleton is parsed twice, once
//! with holes `OPEN k CLOSE` (which hole each scalar holds) and once with holes `1000000+k`
//! (which hole-only scalars are plain: those read back as numbers), and the result is cached
//! by skeleton text, bounded by [`CACHE_BYTES`]. A document of a known shape is then rebuilt
//! by filling the holes with its values and reading each filled scalar as `serde_yaml` reads
//! a plain, quoted or block one. Whenever that is not certain (a filled plain scalar with
//! text around its holes that reads as a number, bool or null; two keys equal once filled;
//! the two skeleton parses of different shapes), [`parse`] answers `None` and the guard
//! parses the document.
//!
//! The guard does not take the rebuilt parse itself but its canonical JSON, the text the
//! rendered hash reads ([`canonical`]): written from the skeleton's JSON segments
//! ([`json`], computed once per shape) with each hole's filled value written in between,
//! so that neither the parse nor its whole JSON is built per render; where the segments do
//! not cover a document, the parse is rebuilt and written as before.
//!
//! This module only inspects text; it never renders and never performs I/O.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::BuildHasher as _;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, PoisonError};

use serde_yaml::{Mapping, Value};

use super::CanonicalJson;
use super::guard::{CLOSE, OPEN};
use crate::catalog::yaml;

mod json;

/// Longest line holding a printed value for which the skeleton is used, in bytes of the
/// marked text (libyaml's simple keys end at 1024 characters; a hole is at most twice as
/// long as a marked value, so the skeleton's lines stay under 1024 too).
pub const MAX_LINE: usize = 450;

/// Total bytes the cache may hold, counted as [`ENTRY_WEIGHT`] times each skeleton's text
/// (the text, its parse and the hole positions); past it the cache starts afresh.
pub const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// How many bytes an entry is counted as per byte of skeleton text: a parsed `Value` tree
/// takes several times its text, and its JSON segments ([`json::Plan`]) about as much as
/// the text again.
const ENTRY_WEIGHT: usize = 7;

/// The first probe number of the second skeleton parse.
const PROBE_BASE: usize = 1_000_000;

/// A document's printed values, with their kinds, in hole order.
type Values<'a> = Vec<(&'a str, Kind)>;

/// A cached skeleton parse: `None` when the shape cannot be rebuilt (the guard parses).
type Entry = Option<Arc<Skeleton>>;

/// A skeleton's parse, with its holes.
struct Skeleton {
    /// The parse of the skeleton with holes `OPEN k CLOSE`.
    value: Value,
    /// For each hole `k`, whether it is the whole of a plain scalar.
    plain_alone: Vec<bool>,
    /// For each hole `k`, the style of the scalar holding it (`None`: in no scalar, e.g. a
    /// comment).
    style: Vec<Option<Style>>,
    /// The canonical JSON of `value` filled, as fixed segments and holes (`None`: a fixed
    /// part has no JSON form, or a collection key holds a hole: [`fill`], then `serde_json`).
    json: Option<json::Plan>,
}

/// How a scalar is written; decides which values are only characters there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
    Block,
}

/// What a printed value may be in the rebuilt parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A plain word in an ordinary position ([`super::guard::is_plain_value`]): characters
    /// in any scalar.
    Word,
    /// Printable ASCII, neither starting nor ending with a blank, not starting with `-` or
    /// `.` (part of a document marker): characters inside a quoted or block scalar that does not end at them
    /// ([`fits`]).
    Text,
}

/// Whether a [`Kind::Text`] value is only characters in a scalar of style `style`: no quote
/// ending a quoted scalar, no escape in a double-quoted one; anything in a block scalar
/// (the value holds no line break).
fn fits(value: &str, style: Option<Style>) -> bool {
    match style {
        Some(Style::Single) => !value.contains('\''),
        Some(Style::Double) => !value.contains(['"', '\\']),
        Some(Style::Block) => true,
        Some(Style::Plain) | None => false,
    }
}

/// The [`Kind`] of a printed value, or `None` when the skeleton may not be used for it.
fn kind(value: &str, before: &str) -> Option<Kind> {
    if super::guard::is_plain_value(value) && super::guard::ordinary_position(before) {
        return Some(Kind::Word);
    }
    let b = value.as_bytes();
    let printable = b.iter().all(|c| (0x20..0x7f).contains(c));
    let blank_end = |c: Option<&u8>| c.is_none_or(|c| *c == b' ');
    // A document marker needs three of these at the start of a line.
    let marker = value.starts_with(['-', '.']);
    (printable && !blank_end(b.first()) && !blank_end(b.last()) && !marker).then_some(Kind::Text)
}

#[derive(Default)]
struct Cache {
    entries: HashMap<u64, Vec<(Arc<str>, Entry)>>,
    bytes: usize,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// Whether `marked` holds `!!`, `tag:yaml.org`, `%TAG`, `\\u` or `\\U`: core tags change how
/// scalars read, and a `\\u` escape could write a hole's markers. One scan for the first
/// characters, not one per text.
fn core_tag_or_escape(marked: &str) -> bool {
    let b = marked.as_bytes();
    memchr::memchr3_iter(b'!', b'%', b'\\', b).any(|i| {
        let next = &b[i + 1..];
        match b[i] {
            b'!' => next.starts_with(b"!"),
            b'%' => next.starts_with(b"TAG"),
            _ => next.starts_with(b"u") || next.starts_with(b"U"),
        }
    }) || memchr::memmem::find(b, b"tag:yaml.org").is_some()
}

/// The skeleton of a marked document (holes `OPEN k CLOSE`) and its printed values with
/// their kinds, or `None` when the skeleton may not be used (see the module doc).
fn split(marked: &str) -> Option<(String, Vec<(&str, Kind)>)> {
    if core_tag_or_escape(marked) {
        return None;
    }
    let mut skeleton = String::with_capacity(marked.len());
    let mut values = Vec::new();
    let mut rest = marked;
    while let Some(open) = rest.find(OPEN) {
        let start = open + OPEN.len_utf8();
        let len = rest[start..].find(CLOSE)?;
        let value = &rest[start..start + len];
        if rest[..open].contains(CLOSE) || value.contains(OPEN) {
            return None;
        }
        let before = &marked[..marked.len() - rest.len() + open];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_end = rest[open..].find('\n').map_or(rest.len(), |i| open + i);
        if before.len() - line_start + line_end - open > MAX_LINE {
            return None;
        }
        skeleton.push_str(&rest[..open]);
        skeleton.push(OPEN);
        let _ = write!(skeleton, "{}", values.len());
        skeleton.push(CLOSE);
        values.push((value, kind(value, before)?));
        rest = &rest[start + len + CLOSE.len_utf8()..];
    }
    if rest.contains(CLOSE) {
        return None;
    }
    skeleton.push_str(rest);
    Some((skeleton, values))
}

/// The skeleton with hole `k` written as the number `PROBE_BASE + k`.
fn probe_text(skeleton: &str) -> String {
    let mut out = String::with_capacity(skeleton.len());
    let mut rest = skeleton;
    while let Some(open) = rest.find(OPEN) {
        out.push_str(&rest[..open]);
        let start = open + OPEN.len_utf8();
        let len = rest[start..].find(CLOSE).unwrap_or(0);
        let k: usize = rest[start..start + len].parse().unwrap_or(0);
        out.push_str(&(PROBE_BASE + k).to_string());
        rest = &rest[start + len + CLOSE.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// The hole numbers in a skeleton scalar, when it holds any.
fn holes(s: &str) -> Vec<usize> {
    holes_in(s)
}

/// The hole numbers in `s`.
fn holes_in(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find(OPEN) {
        let start = open + OPEN.len_utf8();
        let Some(len) = rest[start..].find(CLOSE) else {
            break;
        };
        if let Ok(k) = rest[start..start + len].parse() {
            out.push(k);
        }
        rest = &rest[start + len + CLOSE.len_utf8()..];
    }
    out
}

/// Walks the two skeleton parses together, marking each hole that is the whole of a plain
/// scalar (its probe read back as a number). `false` when the shapes differ.
fn mark_plain(a: &Value, b: &Value, plain: &mut [bool]) -> bool {
    match (a, b) {
        (Value::Mapping(ma), Value::Mapping(mb)) => {
            ma.len() == mb.len()
                && ma.iter().zip(mb.iter()).all(|((ka, va), (kb, vb))| {
                    mark_plain(ka, kb, plain) && mark_plain(va, vb, plain)
                })
        }
        (Value::Sequence(sa), Value::Sequence(sb)) => {
            sa.len() == sb.len()
                && sa
                    .iter()
                    .zip(sb.iter())
                    .all(|(va, vb)| mark_plain(va, vb, plain))
        }
        (Value::Tagged(ta), Value::Tagged(tb)) => {
            ta.tag == tb.tag && mark_plain(&ta.value, &tb.value, plain)
        }
        (Value::String(s), probe) if s.contains(OPEN) => {
            let hs = holes(s);
            let alone = hs.len() == 1 && s.len() == OPEN.len_utf8() * 2 + digits(hs[0]);
            if alone && let Value::Number(n) = probe {
                if n.as_u64() != u64::try_from(PROBE_BASE + hs[0]).ok() {
                    return false;
                }
                if let Some(p) = plain.get_mut(hs[0]) {
                    *p = true;
                }
            }
            hs.iter().all(|&k| k < plain.len())
        }
        (a, b) => a == b,
    }
}

fn digits(k: usize) -> usize {
    k.to_string().len()
}

/// Parses a skeleton (both parses, and a scan for the holes' styles) into a cache entry.
fn build(skeleton: &str, holes: usize) -> Entry {
    let value: Value = yaml::from_str(skeleton).ok()?;
    let probe: Value = yaml::from_str(&probe_text(skeleton)).ok()?;
    let mut plain_alone = vec![false; holes];
    let style = styles(skeleton, holes)?;
    if !mark_plain(&value, &probe, &mut plain_alone) {
        return None;
    }
    let mut sk = Skeleton {
        value,
        plain_alone,
        style,
        json: None,
    };
    sk.json = json::Plan::new(&sk);
    Some(Arc::new(sk))
}

/// The style of the scalar holding each hole, from libyaml's scanner (the tokens of a
/// document that parsed: the depth was checked). `None` when the scan fails.
fn styles(skeleton: &str, holes: usize) -> Option<Vec<Option<Style>>> {
    use unsafe_libyaml as unsafe_y;
    let mut out = vec![None; holes];
    let mut seen = vec![false; holes];
    let mut parser = Box::new(MaybeUninit::<unsafe_y::yaml_parser_t>::uninit());
    let p = parser.as_mut_ptr();
    // SAFETY: `p` points to memory owned by `parser` until the end of this function;
    // `yaml_parser_initialize` fills it in (or leaves it zeroed, which `yaml_parser_delete`
    // accepts); the input pointer stays valid while `skeleton` is borrowed, past the
    // delete. Each token is initialised by a successful `yaml_parser_scan`, its scalar data
    // read only for scalar tokens (`length` bytes at `value`), and deleted before the next.
    let ok = unsafe {
        let mut ok = !unsafe_y::yaml_parser_initialize(p).fail;
        if ok {
            unsafe_y::yaml_parser_set_encoding(p, unsafe_y::YAML_UTF8_ENCODING);
            unsafe_y::yaml_parser_set_input_string(p, skeleton.as_ptr(), skeleton.len() as u64);
        }
        while ok {
            let mut token = MaybeUninit::<unsafe_y::yaml_token_t>::uninit();
            if unsafe_y::yaml_parser_scan(p, token.as_mut_ptr()).fail {
                ok = false;
                break;
            }
            let t = token.as_mut_ptr();
            let kind = (*t).type_;
            if kind == unsafe_y::YAML_SCALAR_TOKEN {
                let scalar = (*t).data.scalar;
                let length = usize::try_from(scalar.length).unwrap_or(0);
                let bytes = std::slice::from_raw_parts(scalar.value, length);
                let style = match scalar.style {
                    unsafe_y::YAML_PLAIN_SCALAR_STYLE => Some(Style::Plain),
                    unsafe_y::YAML_SINGLE_QUOTED_SCALAR_STYLE => Some(Style::Single),
                    unsafe_y::YAML_DOUBLE_QUOTED_SCALAR_STYLE => Some(Style::Double),
                    unsafe_y::YAML_LITERAL_SCALAR_STYLE | unsafe_y::YAML_FOLDED_SCALAR_STYLE => {
                        Some(Style::Block)
                    }
                    _ => None,
                };
                if let Ok(text) = std::str::from_utf8(bytes) {
                    for k in holes_in(text) {
                        match (out.get_mut(k), seen.get_mut(k)) {
                            (Some(slot), Some(once)) if !*once => {
                                *slot = style;
                                *once = true;
                            }
                            // A hole twice (or not one of the values): do not guess.
                            _ => ok = false,
                        }
                    }
                }
            }
            unsafe_y::yaml_token_delete(t);
            if kind == unsafe_y::YAML_STREAM_END_TOKEN {
                break;
            }
        }
        unsafe_y::yaml_parser_delete(p);
        ok
    };
    ok.then_some(out)
}

fn key_of(skeleton: &str) -> u64 {
    // Seeded once per process: equal texts, equal keys; entries are still compared whole.
    static STATE: std::sync::OnceLock<foldhash::fast::RandomState> = std::sync::OnceLock::new();
    STATE.get_or_init(Default::default).hash_one(skeleton)
}

/// The cached entry of `skeleton`, built and cached if new.
fn entry(skeleton: &str, holes: usize) -> Entry {
    let key = key_of(skeleton);
    {
        let guard = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = guard
            .as_ref()
            .and_then(|c| c.entries.get(&key))
            .and_then(|slot| slot.iter().find(|(s, _)| &**s == skeleton))
        {
            return found.1.clone();
        }
    }
    let built = build(skeleton, holes);
    let mut guard = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    let cache = guard.get_or_insert_with(Cache::default);
    let weight = skeleton.len().saturating_mul(ENTRY_WEIGHT);
    if weight <= CACHE_BYTES {
        if cache.bytes + weight > CACHE_BYTES {
            *cache = Cache::default();
        }
        cache
            .entries
            .entry(key)
            .or_default()
            .push((skeleton.into(), built.clone()));
        cache.bytes += weight;
    }
    built
}

/// How a plain scalar's text reads: as that text, or as another value.
enum Plain {
    /// The string of the text itself.
    Text,
    /// Anything else: null, a bool, a number, or another string.
    Other(Value),
}

/// How `serde_yaml` reads a plain scalar's text, or `None` when it is not a scalar.
#[cfg(test)]
fn read_plain(text: &str) -> Option<Value> {
    read_plain_ref(text).map(|p| match p {
        Plain::Text => Value::String(text.to_owned()),
        Plain::Other(v) => v,
    })
}

/// [`read_plain`] without copying the text where it reads as itself.
fn read_plain_ref(text: &str) -> Option<Plain> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Plain::Other(Value::Null)),
        "true" | "True" | "TRUE" => return Some(Plain::Other(Value::Bool(true))),
        "false" | "False" | "FALSE" => return Some(Plain::Other(Value::Bool(false))),
        _ => {}
    }
    let b = text.as_bytes();
    let starts_numeric = b
        .first()
        .is_some_and(|c| c.is_ascii_digit() || b"+-.".contains(c));
    // Only a text of these characters starting so can read as a number.
    if !starts_numeric
        || !b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"+-._".contains(c))
    {
        return Some(Plain::Text);
    }
    if b.len() <= 18 && b.iter().all(u8::is_ascii_digit) && (b[0] != b'0' || b.len() == 1) {
        return text
            .parse::<u64>()
            .ok()
            .map(|n| Plain::Other(Value::from(n)));
    }
    match serde_yaml::from_str::<Value>(text) {
        Ok(Value::String(s)) if s == text => Some(Plain::Text),
        Ok(v @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_))) => {
            Some(Plain::Other(v))
        }
        _ => None,
    }
}

/// How a skeleton scalar holding holes reads once filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Quoted or block: the characters, always a string.
    Chars,
    /// One hole alone in a plain scalar: as `serde_yaml` reads a plain scalar's text.
    Plain,
    /// Plain with text around the holes: a string unless it would read as something else
    /// when plain (then not certain: the guard parses).
    StringOnly,
}

/// A skeleton scalar holding holes, split at them once per shape.
struct HoleScalar {
    /// The text before each hole, and the hole's number.
    parts: Vec<(String, usize)>,
    /// The text after the last hole.
    tail: String,
    /// How the filled text reads.
    read: Read,
}

impl HoleScalar {
    /// Splits the skeleton scalar `s`; `None` when a hole is malformed.
    fn new(s: &str, sk: &Skeleton) -> Option<Self> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find(OPEN) {
            let start = open + OPEN.len_utf8();
            let len = rest[start..].find(CLOSE)?;
            let k: usize = rest[start..start + len].parse().ok()?;
            parts.push((rest[..open].to_owned(), k));
            rest = &rest[start + len + CLOSE.len_utf8()..];
        }
        let hs = holes(s);
        let alone = hs.len() == 1 && s.len() == OPEN.len_utf8() * 2 + digits(hs[0]);
        let style = hs.first().and_then(|&k| sk.style.get(k).copied().flatten());
        let read = if matches!(style, Some(Style::Single | Style::Double | Style::Block)) {
            Read::Chars
        } else if alone && sk.plain_alone.get(hs[0]).copied().unwrap_or(false) {
            Read::Plain
        } else {
            Read::StringOnly
        };
        Some(Self {
            parts,
            tail: rest.to_owned(),
            read,
        })
    }

    /// Fills the holes into `text` (cleared first) and reads it: [`Plain::Text`] when the
    /// scalar is the string `text`; `None` when not certain.
    fn read(&self, values: &[(&str, Kind)], text: &mut String) -> Option<Plain> {
        text.clear();
        for (before, k) in &self.parts {
            text.push_str(before);
            text.push_str(values.get(*k)?.0);
        }
        text.push_str(&self.tail);
        match self.read {
            Read::Chars => Some(Plain::Text),
            Read::Plain => read_plain_ref(text),
            Read::StringOnly => match read_plain_ref(text)? {
                p @ (Plain::Text | Plain::Other(Value::String(_))) => Some(p),
                Plain::Other(_) => None,
            },
        }
    }
}

/// The skeleton's value `v` with its holes filled, or `None` when not certain.
fn fill(v: &Value, sk: &Skeleton, values: &[(&str, Kind)]) -> Option<Value> {
    Some(match v {
        Value::String(s) if s.contains(OPEN) => {
            let mut text = String::with_capacity(s.len() + 16);
            match HoleScalar::new(s, sk)?.read(values, &mut text)? {
                Plain::Text => Value::String(text),
                Plain::Other(v) => v,
            }
        }
        Value::Mapping(m) => {
            let mut out = Mapping::with_capacity(m.len());
            for (k, item) in m {
                if out
                    .insert(fill(k, sk, values)?, fill(item, sk, values)?)
                    .is_some()
                {
                    return None;
                }
            }
            Value::Mapping(out)
        }
        Value::Sequence(items) => Value::Sequence(
            items
                .iter()
                .map(|i| fill(i, sk, values))
                .collect::<Option<_>>()?,
        ),
        Value::Tagged(t) => Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
            tag: t.tag.clone(),
            value: fill(&t.value, sk, values)?,
        })),
        other => other.clone(),
    })
}

/// The skeleton entry and printed values of `marked`, when its skeleton may rebuild the
/// parse (see the module doc).
fn rebuildable(marked: &str) -> Option<(Arc<Skeleton>, Values<'_>)> {
    let (skeleton, values) = split(marked)?;
    let sk = entry(&skeleton, values.len())?;
    let texts_fit = values
        .iter()
        .enumerate()
        .all(|(k, (v, kind))| *kind == Kind::Word || fits(v, sk.style.get(k).copied().flatten()));
    texts_fit.then_some((sk, values))
}

/// The parse of the clean document of `marked` without parsing it, when its skeleton allows
/// (see the module doc); `None`: parse it.
#[cfg(test)]
#[must_use]
pub fn parse(marked: &str) -> Option<Value> {
    let (sk, values) = rebuildable(marked)?;
    fill(&sk.value, &sk, &values)
}

/// What [`parse`] would return, in canonical JSON ([`CanonicalJson::of`] of it), written
/// from the skeleton's JSON segments ([`json::Plan`]) without building the parse where the
/// plan allows; `None`: parse the document.
#[must_use]
pub fn canonical(marked: &str) -> Option<CanonicalJson> {
    let (sk, values) = rebuildable(marked)?;
    match sk.json.as_ref().map(|plan| plan.write(&values)) {
        Some(json::Outcome::Json(text)) => {
            #[cfg(test)]
            COUNTS.with(|c| c.set((c.get().0 + 1, c.get().1)));
            Some(CanonicalJson::from_json(text))
        }
        Some(json::Outcome::NotCertain) => None,
        Some(json::Outcome::Fallback) | None => {
            #[cfg(test)]
            COUNTS.with(|c| c.set((c.get().0, c.get().1 + 1)));
            fill(&sk.value, &sk, &values).map(|v| CanonicalJson::of(&v))
        }
    }
}

// How many answers of `canonical` this thread had written from the plan, and how many
// built the parse.
#[cfg(test)]
thread_local! {
    pub(crate) static COUNTS: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_read_as_serde_yaml_reads_them() {
        for text in [
            "",
            "~",
            "null",
            "Null",
            "true",
            "FALSE",
            "0",
            "7",
            "80",
            "080",
            "0x1F",
            "0o17",
            "0b101",
            "-1",
            "+1",
            "1.5",
            "1e3",
            "-.inf",
            ".NaN",
            ".5",
            "1_000",
            "1e999",
            "inf",
            "abc",
            "a b",
            "10.0.0.0/16",
            "123456789012",
            "12345678901234567890",
            "00",
            "-0",
            "+-1",
            "1.",
            "y",
            "no",
            "on",
        ] {
            let want: Value = serde_yaml::from_str(&format!("a: {text}\n"))
                .map(|m: Mapping| m.get("a").cloned().unwrap_or(Value::Null))
                .expect("a mapping");
            assert_eq!(read_plain(text), Some(want), "{text:?}");
        }
    }

    #[test]
    fn core_tags_and_escapes_are_found_as_by_five_searches() {
        let texts = [
            "!!",
            "tag:yaml.org",
            "%TAG",
            "\\u",
            "\\U",
            "!",
            "%",
            "\\",
            "tag:yaml",
            "%TA",
        ];
        let mut cases = 0;
        for a in texts {
            for b in texts {
                for around in ["", "x", "!x%y\\z"] {
                    let text = format!("{around}{a}{around}{b}{around}");
                    let want = ["!!", "tag:yaml.org", "%TAG", "\\u", "\\U"]
                        .iter()
                        .any(|s| text.contains(s));
                    assert_eq!(core_tag_or_escape(&text), want, "{text:?}");
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 300);
    }

    #[test]
    fn core_tags_and_long_lines_take_the_parse() {
        let m = |t: &str| t.replace("{v}", &format!("{OPEN}a{CLOSE}"));
        assert!(split(&m("A: !!str {v}\n")).is_none());
        assert!(split(&m("%TAG ! tag:yaml.org,2002:\n---\nA: !str {v}\n")).is_none());
        assert!(split(&m(&format!("A: {}{{v}}\n", "x".repeat(MAX_LINE)))).is_none());
        assert!(split(&m(&format!("A: {{v}}\nB: {}\n", "x".repeat(2000)))).is_some());
    }
}
