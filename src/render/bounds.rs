//! The bounds of one render: work (minijinja's fuel), output size, and the size of the values
//! a template builds on the way. A render past any of them fails alone, with an error naming
//! the file, the line and the bound ([`super::RenderError::Bound`]).
//!
//! * **Fuel** ([`FUEL`]): minijinja charges every instruction, every byte it writes and every
//!   byte or list slot an operator, literal, filter or function creates; allocations of known
//!   size (`"x" * n`, `a ~ b`) are refused before they happen. The budget also bounds time.
//! * **Output** ([`MAX_OUTPUT_BYTES`]): the render writes into a [`BoundedOutput`] that fails
//!   the render once the file would exceed it; printed values are streamed into it, never
//!   copied whole first.
//! * **Amplifiers**: minijinja charges a filter's or method's result only once it exists,
//!   and a few build results far larger than their charged inputs (`indent(10**9)`,
//!   `replace`, `join`, `format("%99999999s")`, `tojson`/`pprint`/`string` of lazily repeated
//!   lists, `split`, `sum`, and Jinja2's `center(10**9)`, `wordwrap`, `escape`, `urlize`,
//!   `batch(10**9, x)`, `slice`, `urlencode`, `xmlattr`). Each of those is wrapped here: the size of its result is
//!   estimated from its arguments (bounded work) and the call is refused when the estimate
//!   exceeds what the fuel left could pay for, capped at [`MAX_VALUE_BYTES`].
//!
//! Left to fuel alone, measured: a lazily repeated list (`[1] * 100000000`, created for free)
//! concatenated with `~` or searched with `in` is walked by minijinja without charging; the
//! concatenation of one such list allocates about 800 MiB before it is refused. The README's
//! "Limits and guarantees" gives the figures.
//!
//! This module performs no I/O.

use std::fmt::{self, Write as _};
use std::io;

use minijinja::value::{Rest, Value, ValueOrKwargs};
use minijinja::{Environment, Error, ErrorKind, State};

/// Work budget of one Jinja render, in minijinja's fuel: one per instruction, one per 64 bytes
/// produced. The AWS sample bundles use at most 456 (a pipeline over its instances; 21 KB of
/// output): 1,000,000 leaves room for about 2,000 times that, and pays for at most 64 MiB of
/// produced data.
pub const FUEL: u64 = 1_000_000;

/// Bytes one fuel pays for (minijinja's internal resolution).
const BYTES_PER_FUEL: u64 = 64;

/// Largest rendered file, in bytes (value markers included). `CloudFormation` refuses
/// templates over 1 MB (through S3; 51,200 bytes inline), so a larger render could never
/// deploy; Terraform files get the same room.
pub const MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;

/// Largest value one amplifying filter or method may produce, in bytes.
pub const MAX_VALUE_BYTES: u64 = 16 * 1024 * 1024;

/// What the errors of this module start with, so that [`is_bound`] can tell them apart.
pub const MARK: &str = "render bound";

/// Cost of one list slot, as minijinja charges it.
const SLOT: u64 = 32;

/// Whether a minijinja error is a bound violation (as opposed to an ordinary template error):
/// fuel, recursion, minijinja's own size limits, or this module's.
#[must_use]
pub fn is_bound(e: &Error) -> bool {
    if e.kind() == ErrorKind::OutOfFuel {
        return true;
    }
    let detail = e.detail().unwrap_or("");
    detail.starts_with(MARK)
        || detail.contains("recursion limit exceeded")
        || detail.contains("is too large")
        || detail.contains("too many elements")
}

/// The rendered text, refusing to grow past its limit.
#[derive(Debug)]
pub struct BoundedOutput {
    /// What was written.
    pub buf: Vec<u8>,
    limit: usize,
    /// Set once a write was refused.
    pub exceeded: bool,
}

impl BoundedOutput {
    /// An empty output of at most `limit` bytes.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
            exceeded: false,
        }
    }
}

impl io::Write for BoundedOutput {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("rendered output over its bound"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts formatted bytes up to a cap, then fails (which stops the formatting).
struct Count {
    n: u64,
    cap: u64,
}

impl fmt::Write for Count {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.n = self.n.saturating_add(s.len() as u64);
        if self.n > self.cap {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

impl io::Write for Count {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.n = self.n.saturating_add(data.len() as u64);
        if self.n > self.cap {
            return Err(io::Error::other("over the cap"));
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// At least how many bytes `v` prints as, counted up to just past `cap` without formatting it:
/// every item of a list or map takes at least two (itself and a separator). A list's length
/// is read before its items, so a lazily repeated list of a hundred million items costs
/// nothing to refuse; formatting it would walk every item even after the output failed.
#[must_use]
pub fn min_print_len(v: &Value, cap: u64) -> u64 {
    if let Some(s) = v.as_str() {
        return s.len() as u64;
    }
    if v.as_object().is_none() {
        return 1;
    }
    let items = v.len().unwrap_or(0) as u64;
    if items.saturating_mul(2) > cap {
        return cap.saturating_add(1);
    }
    let Ok(iter) = v.try_iter() else { return 2 };
    let is_map = v.kind() == minijinja::value::ValueKind::Map;
    let mut total = 2u64;
    for item in iter {
        let mut size = 2 + min_print_len(&item, cap.saturating_sub(total));
        if is_map && let Ok(value) = v.get_item(&item) {
            size += min_print_len(&value, cap.saturating_sub(total + size));
        }
        total = total.saturating_add(size);
        if total > cap {
            break;
        }
    }
    total
}

/// Bytes `v` prints as (`{v}`), counted up to just past `cap`.
fn display_len(v: &Value, cap: u64) -> u64 {
    if let Some(s) = v.as_str() {
        return s.len() as u64;
    }
    let least = min_print_len(v, cap);
    if least > cap {
        return least;
    }
    let mut c = Count { n: 0, cap };
    let _ = write!(c, "{v}");
    c.n
}

/// Bytes `v` pretty-prints as (`{v:#?}`), counted up to just past `cap`.
fn debug_len(v: &Value, cap: u64) -> u64 {
    let least = min_print_len(v, cap);
    if least > cap {
        return least;
    }
    let mut c = Count { n: 0, cap };
    let _ = write!(c, "{v:#?}");
    c.n
}

/// Bytes `v` serialises to as compact JSON, counted up to just past `cap`.
fn json_len(v: &Value, cap: u64) -> u64 {
    let least = min_print_len(v, cap);
    if least > cap {
        return least;
    }
    let mut c = Count { n: 0, cap };
    let _ = serde_json::to_writer(&mut c, v);
    c.n
}

/// What a filter or method may still produce: the fuel left, capped.
fn room(state: &State) -> u64 {
    state
        .fuel_levels()
        .map_or(MAX_VALUE_BYTES, |(_, left)| {
            left.saturating_mul(BYTES_PER_FUEL)
        })
        .min(MAX_VALUE_BYTES)
}

fn too_large(what: &str, need: u64, room: u64) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "{MARK}: {what} would produce {need} bytes or more, more than this render may still allocate ({room} bytes; at most {MAX_VALUE_BYTES} per value)"
        ),
    )
}

/// Arguments as a filter or method got them: positional values, then keyword arguments.
struct Args<'a>(&'a [Value]);

impl Args<'_> {
    /// Positional argument `i`, or keyword `name`.
    fn get(&self, i: usize, name: &str) -> Option<Value> {
        let kwargs = self.0.last().filter(|v| v.is_kwargs());
        let positional = self.0.len() - usize::from(kwargs.is_some());
        if i < positional {
            return Some(self.0[i].clone());
        }
        kwargs
            .and_then(|k| k.get_attr(name).ok())
            .filter(|v| !v.is_undefined() && !v.is_none())
    }

    fn str_len(&self, i: usize, name: &str, cap: u64) -> u64 {
        self.get(i, name).map_or(0, |v| display_len(&v, cap))
    }

    fn usize(&self, i: usize, name: &str, default: u64) -> u64 {
        self.get(i, name).map_or(default, |v| {
            v.as_str()
                .map(|s| s.len() as u64)
                .or_else(|| v.as_i64().map(|n| u64::try_from(n).unwrap_or(0)))
                .unwrap_or(default)
        })
    }
}

/// An estimate of the bytes a call produces, given its arguments and the room left (an
/// estimator may stop counting once past it).
type Estimate = fn(&Args<'_>, u64) -> u64;

fn text_of(args: &Args<'_>, i: usize) -> String {
    args.get(i, "")
        .and_then(|v| v.as_str().map(ToString::to_string))
        .unwrap_or_default()
}

fn indent(args: &Args<'_>, _room: u64) -> u64 {
    let text = text_of(args, 0);
    let width = args.usize(1, "width", 4);
    let lines = text.bytes().filter(|b| *b == b'\n').count() as u64 + 1;
    (text.len() as u64).saturating_add(lines.saturating_mul(width))
}

fn occurrences(text: &str, from: &str, count: Option<u64>) -> u64 {
    let all = if from.is_empty() {
        text.chars().count() as u64 + 1
    } else {
        text.matches(from).count() as u64
    };
    count.map_or(all, |c| all.min(c))
}

/// `s|replace(old, new[, count])`, `s.replace(old, new[, count])`.
fn replace(args: &Args<'_>, room: u64) -> u64 {
    let text = text_of(args, 0);
    let from = args
        .get(1, "old")
        .map(|v| display_len_string(&v, room))
        .unwrap_or_default();
    let to = args.str_len(2, "new", room);
    let count = args
        .get(3, "count")
        .and_then(|v| v.as_i64())
        .and_then(|n| u64::try_from(n).ok());
    (text.len() as u64).saturating_add(occurrences(&text, &from, count).saturating_mul(to))
}

fn display_len_string(v: &Value, cap: u64) -> String {
    match v.as_str() {
        Some(s) => s.to_string(),
        None if display_len(v, cap) <= cap => v.to_string(),
        None => String::new(),
    }
}

/// Bytes of the items of `seq` plus a separator each, counting up to just past `room`.
fn joined(seq: &Value, sep: u64, room: u64) -> u64 {
    if let Some(s) = seq.as_str() {
        return (s.len() as u64).saturating_add((s.chars().count() as u64).saturating_mul(sep));
    }
    let Ok(items) = seq.try_iter() else { return 0 };
    let mut total = 0u64;
    for item in items {
        total = total
            .saturating_add(sep)
            .saturating_add(display_len(&item, room.saturating_sub(total)));
        if total > room {
            break;
        }
    }
    total
}

/// `seq|join(d)`.
fn join_filter(args: &Args<'_>, room: u64) -> u64 {
    let sep = args.str_len(1, "d", room);
    args.get(0, "").map_or(0, |seq| joined(&seq, sep, room))
}

/// `sep.join(seq)`.
fn join_method(args: &Args<'_>, room: u64) -> u64 {
    let sep = args.str_len(0, "", room);
    args.get(1, "").map_or(0, |seq| joined(&seq, sep, room))
}

/// `fmt|format(args…)`, `fmt.format(args…)`: the format, every argument, and every number in
/// the format (widths and precisions) as padding.
fn format(args: &Args<'_>, room: u64) -> u64 {
    let text = text_of(args, 0);
    let mut total = text.len() as u64;
    for number in text.split(|c: char| !c.is_ascii_digit()) {
        if !number.is_empty() {
            total = total.saturating_add(number.parse::<u64>().unwrap_or(u64::MAX));
        }
    }
    for v in args.0.iter().skip(1) {
        total = total.saturating_add(display_len(v, room));
    }
    total
}

fn tojson(args: &Args<'_>, room: u64) -> u64 {
    let indent = args.usize(1, "indent", 0);
    args.get(0, "").map_or(0, |v| {
        json_len(&v, room).saturating_mul(indent.saturating_add(1))
    })
}

fn pprint(args: &Args<'_>, room: u64) -> u64 {
    args.get(0, "").map_or(0, |v| debug_len(&v, room))
}

fn string(args: &Args<'_>, room: u64) -> u64 {
    args.get(0, "").map_or(0, |v| display_len(&v, room))
}

/// `s|split(sep)`, `s.split(sep)`: one list slot per part.
fn split(args: &Args<'_>, _room: u64) -> u64 {
    let text = text_of(args, 0);
    let sep = args
        .get(1, "sep")
        .and_then(|v| v.as_str().map(ToString::to_string));
    let parts = match sep.as_deref() {
        Some(s) if !s.is_empty() => text.matches(s).count() as u64 + 1,
        _ => text.split_whitespace().count() as u64 + 1,
    };
    (text.len() as u64).saturating_add(parts.saturating_mul(SLOT))
}

/// `s|lines`, `s.splitlines()`.
fn lines(args: &Args<'_>, _room: u64) -> u64 {
    let text = text_of(args, 0);
    let parts = text.bytes().filter(|b| *b == b'\n').count() as u64 + 1;
    (text.len() as u64).saturating_add(parts.saturating_mul(SLOT))
}

/// `seq|sum`: strings and lists add up to their total size.
fn sum(args: &Args<'_>, room: u64) -> u64 {
    let Some(Ok(items)) = args.get(0, "").map(|v| v.try_iter()) else {
        return 0;
    };
    let mut total = 0u64;
    for item in items {
        let size = match item.as_str() {
            Some(s) => s.len() as u64,
            None if item.as_object().is_some() => {
                (item.len().unwrap_or(0) as u64).saturating_mul(SLOT)
            }
            None => 0,
        };
        total = total.saturating_add(size);
        if total > room {
            break;
        }
    }
    total
}

/// `s|center(width)`: the wider of the text and the width.
fn center(args: &Args<'_>, _room: u64) -> u64 {
    (text_of(args, 0).len() as u64).max(args.usize(1, "width", 80))
}

/// `s|wordwrap(width, …, wrapstring)`: at most one wrap string per character.
fn wordwrap(args: &Args<'_>, room: u64) -> u64 {
    let text = text_of(args, 0).len() as u64;
    let wrap = args.str_len(3, "wrapstring", room).max(1);
    text.saturating_add(text.saturating_mul(wrap))
}

/// `s|escape`, `s|urlize`: an entity (at most 6 bytes) per character, plus a link's markup
/// (at most three copies of the word and the attributes) per word.
fn escaped(args: &Args<'_>, room: u64) -> u64 {
    let text = text_of(args, 0).len() as u64;
    let attrs = args
        .str_len(3, "target", room)
        .saturating_add(args.str_len(4, "rel", room));
    text.saturating_mul(18)
        .saturating_add(attrs.saturating_mul(text / 2 + 1))
}

/// `v|urlencode`: at most three bytes (`%XX`) per byte printed.
fn urlencoded(args: &Args<'_>, room: u64) -> u64 {
    args.get(0, "")
        .map_or(0, |v| display_len(&v, room).saturating_mul(3))
}

/// `d|xmlattr`: at most an entity (6 bytes) per byte printed, plus the markup.
fn attributes(args: &Args<'_>, room: u64) -> u64 {
    args.get(0, "")
        .map_or(0, |v| display_len(&v, room).saturating_mul(8))
}

/// `seq|batch(n, fill)`, `seq|slice(n, fill)`: up to `n` new slots.
fn slots(args: &Args<'_>, _room: u64) -> u64 {
    args.usize(1, "linecount", 0)
        .max(args.usize(1, "slices", 0))
        .saturating_mul(SLOT)
}

/// Replaces minijinja's amplifying filters (and Jinja2's, from [`super::jinja2`]) with ones
/// that refuse an undefined value and an oversized result before building it, then call
/// the implementation.
pub fn register(env: &mut Environment<'static>) {
    use super::jinja2 as j;
    use minijinja::filters as f;
    let wrapped: [(&str, Value, Estimate); 20] = [
        ("indent", Value::from_function(j::indent), indent),
        ("replace", Value::from_function(f::replace), replace),
        ("join", Value::from_function(f::join), join_filter),
        ("format", Value::from_function(j::format), format),
        ("tojson", Value::from_function(j::tojson), tojson),
        ("pprint", Value::from_function(j::pprint), pprint),
        ("string", Value::from_function(j::string), string),
        ("split", Value::from_function(f::split), split),
        ("lines", Value::from_function(f::lines), lines),
        ("sum", Value::from_function(f::sum), sum),
        ("center", Value::from_function(j::center), center),
        ("wordwrap", Value::from_function(j::wordwrap), wordwrap),
        ("escape", Value::from_function(j::escape), escaped),
        ("e", Value::from_function(j::escape), escaped),
        ("forceescape", Value::from_function(j::forceescape), escaped),
        ("urlize", Value::from_function(j::urlize), escaped),
        ("batch", Value::from_function(j::batch), slots),
        ("slice", Value::from_function(j::slice), slots),
        ("urlencode", Value::from_function(j::urlencode), urlencoded),
        ("xmlattr", Value::from_function(j::xmlattr), attributes),
    ];
    for (name, original, estimate) in wrapped {
        env.add_filter(
            name,
            move |state: &mut State, args: Rest<ValueOrKwargs>| -> Result<Value, Error> {
                let args = args.into_values();
                if args.first().is_some_and(Value::is_undefined) {
                    return Err(Error::from(ErrorKind::UndefinedError));
                }
                check(state, name, estimate, &args)?;
                if name == "replace" {
                    return replace_counted(state, &original, &args);
                }
                original.call(state, &args)
            },
        );
    }
    env.set_unknown_method_callback(|state, value, method, args| {
        let estimate: Option<Estimate> = match method {
            "replace" => Some(replace),
            "join" => Some(join_method),
            "format" => Some(format),
            "split" => Some(split),
            "splitlines" => Some(lines),
            _ => None,
        };
        if let Some(estimate) = estimate {
            let mut all = Vec::with_capacity(args.len() + 1);
            all.push(value.clone());
            all.extend_from_slice(args);
            check(state, method, estimate, &all)?;
        }
        minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
    });
}

fn check(state: &State, what: &str, estimate: Estimate, args: &[Value]) -> Result<(), Error> {
    let room = room(state);
    let need = estimate(&Args(args), room);
    if need > room {
        return Err(too_large(what, need, room));
    }
    Ok(())
}

/// `replace` with its optional `count` (minijinja's public `replace` replaces every
/// occurrence; the registered one it replaces also took a count).
fn replace_counted(state: &mut State, original: &Value, args: &[Value]) -> Result<Value, Error> {
    let a = Args(args);
    let count = a
        .get(3, "count")
        .and_then(|v| v.as_i64())
        .and_then(|n| usize::try_from(n).ok());
    let Some(count) = count else {
        let plain: Vec<Value> = args.iter().filter(|v| !v.is_kwargs()).cloned().collect();
        return original.call(state, &plain);
    };
    let text = text_of(&a, 0);
    let from = a.get(1, "old").map(|v| v.to_string()).unwrap_or_default();
    let to = a.get(2, "new").map(|v| v.to_string()).unwrap_or_default();
    let out = text.replacen(&from, &to, count);
    Ok(if args.first().is_some_and(Value::is_safe) {
        Value::from_safe_string(out)
    } else {
        Value::from(out)
    })
}
