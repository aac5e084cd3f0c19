//! Jinja2 compatibility: the builtin filters, tests and globals of Python Jinja2 (the engine
//! AWS Proton rendered with) that minijinja and minijinja-contrib lack or implement with
//! other semantics, registered over theirs with Jinja2's full signatures (positional or by
//! keyword), and floats printed as Python prints them (`1e+20`).
//!
//! Every filter here fails on an undefined value, as any use of one does (only `default`/`d`
//! and the tests accept one). Filters that can build results much larger than their input
//! (`center`, `indent`, `wordwrap`, `batch`, `slice`, `escape`, `urlize`, `pprint`,
//! `tojson`, …) are registered through the render bounds (`bounds.rs`), which refuse an oversized result
//! before it is built. [`text`] holds the text algorithms (Python's `textwrap`, `pprint`,
//! Jinja2's `urlize`). This module performs no I/O.

pub mod text;

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use minijinja::value::{
    ArgType, Kwargs, Object, ObjectRepr, Rest, Value, ValueKind, ValueOrKwargs,
};
use minijinja::{Environment, Error, ErrorKind, State};
use regex::Regex;

/// Registers the Jinja2 filters, tests and globals that are not amplifying (those are
/// registered by `bounds.rs`, which calls this module's implementations).
pub fn register(env: &mut Environment<'static>) {
    env.add_filter("attr", attr);
    env.add_filter("default", default);
    env.add_filter("d", default);
    env.add_filter("dictsort", dictsort);
    env.add_filter("filesizeformat", filesizeformat);
    env.add_filter("float", float);
    env.add_filter("int", int);
    env.add_filter("random", random);
    env.add_filter("round", round);
    env.add_filter("sort", sort);
    env.add_filter("trim", trim);
    env.add_filter("truncate", truncate);
    env.add_filter("wordcount", wordcount);
    env.add_test("callable", is_callable);
    env.add_test("sequence", is_sequence);
    env.add_function("cycler", cycler);
    env.add_function("lipsum", lipsum);
    env.add_function("namespace", namespace);
}

/// The error of a use of an undefined value.
fn undefined() -> Error {
    Error::from(ErrorKind::UndefinedError)
}

/// Fails when `v` is undefined.
fn defined(v: &Value) -> Result<(), Error> {
    if v.is_undefined() {
        Err(undefined())
    } else {
        Ok(())
    }
}

fn invalid(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::InvalidOperation, message)
}

/// A filter's arguments after its value: positional, then by keyword, checked against the
/// filter's parameter names.
pub struct Params {
    positional: Vec<Value>,
    kwargs: Option<Value>,
    names: &'static [&'static str],
}

impl Params {
    /// Splits `args` (as minijinja passes them: positional values, then a kwargs value) for a
    /// filter whose parameters after the value are `names`.
    ///
    /// # Errors
    ///
    /// Too many positional arguments, an unknown keyword, or one given twice.
    pub fn new(args: Vec<Value>, names: &'static [&'static str]) -> Result<Self, Error> {
        let mut positional = args;
        let kwargs = positional.last().filter(|v| v.is_kwargs()).cloned();
        if kwargs.is_some() {
            positional.pop();
        }
        if positional.len() > names.len() {
            return Err(Error::from(ErrorKind::TooManyArguments));
        }
        if let Some(k) = &kwargs {
            for key in k.try_iter()? {
                let key = key.as_str().unwrap_or_default().to_string();
                match names.iter().position(|n| *n == key) {
                    None => {
                        return Err(Error::new(
                            ErrorKind::TooManyArguments,
                            format!("unexpected keyword argument {key:?}"),
                        ));
                    }
                    Some(i) if i < positional.len() => {
                        return Err(Error::new(
                            ErrorKind::TooManyArguments,
                            format!("argument {key:?} given twice"),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(Self {
            positional,
            kwargs,
            names,
        })
    }

    /// The argument `name`, positional or by keyword (`None` when not given).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<Value> {
        let i = self.names.iter().position(|n| *n == name)?;
        if let Some(v) = self.positional.get(i) {
            return Some(v.clone());
        }
        self.kwargs
            .as_ref()
            .and_then(|k| k.get_attr(name).ok())
            .filter(|v| !v.is_undefined())
    }

    fn bool(&self, name: &str, default: bool) -> bool {
        self.get(name).map_or(default, |v| v.is_true())
    }

    fn int(&self, name: &str, default: i64) -> Result<i64, Error> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| invalid(format!("{name} must be an integer, got {v}"))),
        }
    }

    fn text(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_none()).map(|v| text_of(&v))
    }
}

/// A value as Python's `str()` gives it.
#[must_use]
pub fn text_of(v: &Value) -> String {
    match v.as_str() {
        Some(s) => s.to_string(),
        None if v.kind() == ValueKind::Number && !v.is_integer() => {
            f64::try_from(v.clone()).map_or_else(|_| v.to_string(), py_float)
        }
        None => v.to_string(),
    }
}

/// A float as Python's `repr()` prints it: the shortest digits that read back the same,
/// with an exponent below 1e-4 and from 1e16.
#[must_use]
pub fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..16).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let fixed = format!("{f}");
    if fixed.contains('.') {
        fixed
    } else {
        format!("{fixed}.0")
    }
}

/// A string marked safe when `like` was.
fn same_safety(like: &Value, s: String) -> Value {
    if like.is_safe() {
        Value::from_safe_string(s)
    } else {
        Value::from(s)
    }
}

/// `attr(obj, name)`: an attribute, never an item (as in Jinja2: `{'a': 1}|attr('a')` is
/// undefined).
fn attr(value: &Value, name: &str) -> Result<Value, Error> {
    defined(value)?;
    // A mapping of data (from the context, a literal or `dict()`) has keys, not attributes;
    // objects such as `namespace()` have attributes.
    if value
        .downcast_object_ref::<BTreeMap<Value, Value>>()
        .is_some()
    {
        return Ok(Value::UNDEFINED);
    }
    value.get_attr(name)
}

/// `default(value, default_value='', boolean=False)`, alias `d`.
fn default(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    let p = Params::new(args.into_values(), &["default_value", "boolean"])?;
    let use_default = value.is_undefined() || (p.bool("boolean", false) && !value.is_true());
    Ok(if use_default {
        p.get("default_value").unwrap_or_else(|| Value::from(""))
    } else {
        value.clone()
    })
}

/// `dictsort(value, case_sensitive=False, by='key', reverse=False)`.
fn dictsort(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let p = Params::new(args.into_values(), &["case_sensitive", "by", "reverse"])?;
    let kwargs = ["case_sensitive", "by", "reverse"]
        .into_iter()
        .filter_map(|n| p.get(n).map(|v| (n, v)))
        .collect::<Kwargs>();
    minijinja::filters::dictsort(value, kwargs)
}

/// `filesizeformat(value, binary=False)`.
fn filesizeformat(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let p = Params::new(args.into_values(), &["binary"])?;
    let binary = p.bool("binary", false);
    let bytes = py_float_of(value).ok_or_else(|| invalid("filesizeformat needs a number"))?;
    let base: f64 = if binary { 1024.0 } else { 1000.0 };
    let prefixes: [&str; 8] = if binary {
        ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"]
    } else {
        ["kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    };
    #[allow(clippy::float_cmp)]
    if bytes == 1.0 {
        return Ok(Value::from("1 Byte"));
    }
    if bytes < base {
        #[allow(clippy::cast_possible_truncation)]
        return Ok(Value::from(format!("{} Bytes", bytes.trunc() as i64)));
    }
    let mut unit = base;
    for (i, prefix) in prefixes.iter().enumerate() {
        unit = base.powi(i32::try_from(i).unwrap_or(0) + 2);
        if bytes < unit || i == prefixes.len() - 1 {
            return Ok(Value::from(format!("{:.1} {prefix}", base * bytes / unit)));
        }
    }
    Ok(Value::from(format!("{:.1} YB", base * bytes / unit)))
}

/// Python's `float(value)`, `None` where Python raises.
fn py_float_of(value: &Value) -> Option<f64> {
    if let Some(s) = value.as_str() {
        let t = s.trim().replace('_', "");
        if s.trim().starts_with('_') || s.trim().ends_with('_') || s.contains("__") {
            return None;
        }
        return t.parse::<f64>().ok();
    }
    match value.kind() {
        ValueKind::Bool => Some(if value.is_true() { 1.0 } else { 0.0 }),
        ValueKind::Number => f64::try_from(value.clone()).ok(),
        _ => None,
    }
}

/// `float(value, default=0.0)`.
fn float(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let p = Params::new(args.into_values(), &["default"])?;
    Ok(py_float_of(value).map_or_else(
        || p.get("default").unwrap_or_else(|| Value::from(0.0)),
        Value::from,
    ))
}

/// Python's `int(s, base)` for a string.
fn py_int_str(s: &str, base: u32) -> Option<i64> {
    let t = s.trim();
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = t.to_ascii_lowercase();
    let prefixed = |p: &str, b: u32| (base == b || base == 0) && lower.starts_with(p);
    let (digits, base) = if prefixed("0x", 16) {
        (&t[2..], 16)
    } else if prefixed("0o", 8) {
        (&t[2..], 8)
    } else if prefixed("0b", 2) {
        (&t[2..], 2)
    } else {
        (t, if base == 0 { 10 } else { base })
    };
    let digits = digits.strip_prefix('_').unwrap_or(digits);
    if digits.is_empty()
        || digits.ends_with('_')
        || digits.contains("__")
        || digits.starts_with('_')
    {
        return None;
    }
    let n = i64::from_str_radix(&digits.replace('_', ""), base).ok()?;
    Some(if negative { -n } else { n })
}

/// `int(value, default=0, base=10)`: like Jinja2, a string that is not an integer is read as
/// a float and truncated (`'3.9'` is 3).
fn int(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let p = Params::new(args.into_values(), &["default", "base"])?;
    let base =
        u32::try_from(p.int("base", 10)?).map_err(|_| invalid("int: base must be 0 or 2 to 36"))?;
    if value.is_integer() {
        return Ok(value.clone());
    }
    let n = match value.as_str() {
        Some(s) => py_int_str(s, base),
        None => None,
    };
    #[allow(clippy::cast_possible_truncation)]
    let n = n.or_else(|| {
        py_float_of(value)
            .filter(|f| f.is_finite())
            .map(|f| f.trunc() as i64)
    });
    Ok(n.map_or_else(
        || p.get("default").unwrap_or_else(|| Value::from(0)),
        Value::from,
    ))
}

/// A random number from the standard library's per-process random hash keys.
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish()
}

/// A random index below `n` (`n` > 0).
fn random_below(n: usize) -> usize {
    usize::try_from(random_u64() % (n as u64)).unwrap_or(0)
}

/// `random(seq)`: a random item.
fn random(value: &Value) -> Result<Value, Error> {
    defined(value)?;
    let items: Vec<Value> = if let Some(s) = value.as_str() {
        s.chars().map(Value::from).collect()
    } else {
        value.try_iter()?.collect()
    };
    if items.is_empty() {
        return Err(invalid("random: the sequence is empty"));
    }
    Ok(items[random_below(items.len())].clone())
}

/// `round(value, precision=0, method='common')`: `floor` and `ceil` give floats, as in
/// Jinja2.
fn round(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let p = Params::new(args.into_values(), &["precision", "method"])?;
    let precision = i32::try_from(p.int("precision", 0)?)
        .map_err(|_| invalid("round: precision out of range"))?;
    let method = p.text("method").unwrap_or_else(|| "common".into());
    let scale = 10f64.powi(precision);
    let x = py_float_of(value).ok_or_else(|| invalid("round needs a number"))?;
    match method.as_str() {
        "common" => minijinja::filters::round(
            value.clone(),
            Some(precision),
            None,
            std::iter::empty::<(&str, Value)>().collect::<Kwargs>(),
        ),
        "floor" => Ok(Value::from((x * scale).floor() / scale)),
        "ceil" => Ok(Value::from((x * scale).ceil() / scale)),
        _ => Err(invalid("round: method must be 'common', 'ceil' or 'floor'")),
    }
}

/// `sort(value, reverse=False, case_sensitive=False, attribute=None)`.
fn sort(state: &State, value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let p = Params::new(
        args.into_values(),
        &["reverse", "case_sensitive", "attribute"],
    )?;
    let kwargs = ["reverse", "case_sensitive", "attribute"]
        .into_iter()
        .filter_map(|n| p.get(n).filter(|v| !v.is_none()).map(|v| (n, v)))
        .collect::<Kwargs>();
    minijinja::filters::sort(state, value.clone(), kwargs)
}

/// `trim(value, chars=None)`: Python's `str.strip(chars)`.
fn trim(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let p = Params::new(args.into_values(), &["chars"])?;
    let s = text_of(value);
    let out = match p.text("chars") {
        Some(chars) => s.trim_matches(|c| chars.contains(c)).to_string(),
        None => s.trim().to_string(),
    };
    Ok(same_safety(value, out))
}

/// Percent-encodes UTF-8 bytes; `safe` bytes and `A-Za-z0-9_.-~` stay as they are.
fn url_quote(s: &str, for_query: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) || (!for_query && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if for_query {
        out.replace("%20", "+")
    } else {
        out
    }
}

/// `urlencode(value)`: a string (`/` kept), or a mapping or list of pairs as a query
/// string.
///
/// # Errors
///
/// An undefined value, or a list whose items are not pairs.
pub fn urlencode(value: &Value) -> Result<Value, Error> {
    defined(value)?;
    if value.as_str().is_some()
        || !matches!(
            value.kind(),
            ValueKind::Map | ValueKind::Seq | ValueKind::Iterable
        )
    {
        return Ok(Value::from(url_quote(&text_of(value), false)));
    }
    let mut parts = Vec::new();
    if value.kind() == ValueKind::Map {
        for k in value.try_iter()? {
            let v = value.get_item(&k)?;
            parts.push(format!(
                "{}={}",
                url_quote(&text_of(&k), true),
                url_quote(&text_of(&v), true)
            ));
        }
    } else {
        for pair in value.try_iter()? {
            let k = pair.get_item(&Value::from(0))?;
            let v = pair.get_item(&Value::from(1))?;
            parts.push(format!(
                "{}={}",
                url_quote(&text_of(&k), true),
                url_quote(&text_of(&v), true)
            ));
        }
    }
    Ok(Value::from(parts.join("&")))
}

static WORD: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"\w+").ok());

/// `wordcount(s)`: the runs of word characters.
fn wordcount(value: &Value) -> Result<Value, Error> {
    defined(value)?;
    let s = text_of(value);
    Ok(Value::from(
        WORD.as_ref().map_or(0, |re| re.find_iter(&s).count()),
    ))
}

/// Markupsafe's `escape`: `& < > " '` as entities.
#[must_use]
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `escape(s)`, alias `e`: safe values as they are, the rest escaped and marked safe.
///
/// # Errors
///
/// An undefined value.
pub fn escape(value: &Value) -> Result<Value, Error> {
    defined(value)?;
    if value.is_safe() {
        return Ok(value.clone());
    }
    Ok(Value::from_safe_string(html_escape(&text_of(value))))
}

/// `forceescape(s)`: escaped even when marked safe.
///
/// # Errors
///
/// An undefined value.
pub fn forceescape(value: &Value) -> Result<Value, Error> {
    defined(value)?;
    Ok(Value::from_safe_string(html_escape(&text_of(value))))
}

/// `xmlattr(d, autospace=True)`: ` key="value"` pairs, skipping none and undefined values.
///
/// # Errors
///
/// An undefined value, a value that is not a mapping, or a key that is no attribute name.
pub fn xmlattr(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let p = Params::new(args.into_values(), &["autospace"])?;
    if value.kind() != ValueKind::Map {
        return Err(invalid("xmlattr needs a mapping"));
    }
    let mut items = Vec::new();
    for k in value.try_iter()? {
        let v = value.get_item(&k)?;
        if v.is_none() || v.is_undefined() {
            continue;
        }
        let key = text_of(&k);
        if key
            .chars()
            .any(|c| c.is_ascii_whitespace() || "/>=".contains(c))
        {
            return Err(invalid(format!(
                "Invalid character in attribute name: {key:?}"
            )));
        }
        items.push(format!(
            "{}=\"{}\"",
            html_escape(&key),
            html_escape(&text_of(&v))
        ));
    }
    let mut rv = items.join(" ");
    if p.bool("autospace", true) && !rv.is_empty() {
        rv.insert(0, ' ');
    }
    Ok(Value::from_safe_string(rv))
}

/// `center(value, width=80)`: Python's `str.center`.
///
/// # Errors
///
/// An undefined value or a bad argument.
pub fn center(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let p = Params::new(args.into_values(), &["width"])?;
    let width = usize::try_from(p.int("width", 80)?).unwrap_or(0);
    let s = text_of(value);
    let len = s.chars().count();
    if width <= len {
        return Ok(Value::from(s));
    }
    let marg = width - len;
    let left = marg / 2 + (marg & width & 1);
    Ok(Value::from(format!(
        "{}{s}{}",
        " ".repeat(left),
        " ".repeat(marg - left)
    )))
}

/// Python's `str.splitlines()` for `\n`, `\r\n` and `\r`.
fn splitlines(s: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        match rest.find(['\n', '\r']) {
            None => {
                lines.push(rest);
                break;
            }
            Some(i) => {
                lines.push(&rest[..i]);
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
        }
    }
    lines
}

/// `indent(s, width=4, first=False, blank=False)`; `width` may be a string.
///
/// # Errors
///
/// An undefined value or a bad argument.
pub fn indent(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let p = Params::new(args.into_values(), &["width", "first", "blank"])?;
    let indention = match p.get("width") {
        Some(w) if w.as_str().is_some() => text_of(&w),
        Some(w) => " ".repeat(usize::try_from(w.as_i64().unwrap_or(4)).unwrap_or(0)),
        None => "    ".into(),
    };
    let s = format!("{}\n", text_of(value));
    let lines = splitlines(&s);
    let mut rv = if p.bool("blank", false) {
        lines.join(&format!("\n{indention}"))
    } else {
        let mut it = lines.into_iter();
        let mut rv = it.next().unwrap_or_default().to_string();
        for line in it {
            rv.push('\n');
            if !line.is_empty() {
                rv.push_str(&indention);
            }
            rv.push_str(line);
        }
        rv
    };
    if p.bool("first", false) {
        rv.insert_str(0, &indention);
    }
    Ok(same_safety(value, rv))
}

/// `wordwrap(s, width=79, break_long_words=True, wrapstring=None, break_on_hyphens=True)`:
/// Python's `textwrap.wrap` per line, lines joined with `wrapstring` (default `\n`).
///
/// # Errors
///
/// An undefined value or a bad argument.
pub fn wordwrap(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let p = Params::new(
        args.into_values(),
        &[
            "width",
            "break_long_words",
            "wrapstring",
            "break_on_hyphens",
        ],
    )?;
    let width = usize::try_from(p.int("width", 79)?)
        .map_err(|_| invalid("wordwrap: width must be positive"))?;
    if width == 0 {
        return Err(invalid("wordwrap: width must be positive"));
    }
    let options = text::Wrap {
        width,
        break_long_words: p.bool("break_long_words", true),
        break_on_hyphens: p.bool("break_on_hyphens", true),
    };
    let wrapstring = p.text("wrapstring").unwrap_or_else(|| "\n".into());
    let s = text_of(value);
    let out: Vec<String> = splitlines(&s)
        .into_iter()
        .map(|line| text::wrap(line, &options).join(&wrapstring))
        .collect();
    Ok(Value::from(out.join(&wrapstring)))
}

/// `urlize(value, trim_url_limit=None, nofollow=False, target=None, rel=None,
/// extra_schemes=None)`.
///
/// # Errors
///
/// An undefined value or a bad argument.
pub fn urlize(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let p = Params::new(
        args.into_values(),
        &[
            "trim_url_limit",
            "nofollow",
            "target",
            "rel",
            "extra_schemes",
        ],
    )?;
    let mut rel: Vec<String> = p
        .text("rel")
        .map(|r| r.split_whitespace().map(ToString::to_string).collect())
        .unwrap_or_default();
    if p.bool("nofollow", false) {
        rel.push("nofollow".into());
    }
    rel.push("noopener".into());
    rel.sort();
    rel.dedup();
    let limit = p
        .get("trim_url_limit")
        .filter(|v| !v.is_none())
        .map(|v| usize::try_from(v.as_i64().unwrap_or(0)).unwrap_or(0));
    let schemes: Vec<String> = match p.get("extra_schemes").filter(|v| !v.is_none()) {
        Some(v) => v.try_iter()?.map(|s| text_of(&s)).collect(),
        None => Vec::new(),
    };
    let options = text::Urlize {
        limit,
        rel: rel.join(" "),
        target: p.text("target"),
        extra_schemes: schemes,
    };
    Ok(Value::from_safe_string(text::urlize(
        &text_of(value),
        &options,
    )))
}

/// `pprint(value)`: Python's `pprint.pformat` (80 columns).
///
/// # Errors
///
/// An undefined value.
pub fn pprint(value: &Value) -> Result<Value, Error> {
    defined(value)?;
    Ok(Value::from(text::pformat(value)))
}

/// `tojson(value, indent=None)`: Jinja2's `htmlsafe_json_dumps` (keys sorted, `< > & '`
/// and every non-ASCII character escaped).
///
/// # Errors
///
/// An undefined value, or one JSON cannot hold.
pub fn tojson(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let p = Params::new(args.into_values(), &["indent"])?;
    let json = minijinja::filters::tojson(
        value,
        p.get("indent").filter(|v| !v.is_none()),
        std::iter::empty::<(&str, Value)>().collect::<Kwargs>(),
    )?;
    let s = json.as_str().unwrap_or_default();
    if s.is_ascii() {
        return Ok(json);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    Ok(Value::from_safe_string(out))
}

/// Rewrites `%r` conversions of a printf-style format to `%s` of the argument's Python
/// `repr` (minijinja knows every conversion but `r`).
fn repr_conversions(format: &str, args: &mut [Value]) -> String {
    let chars: Vec<char> = format.chars().collect();
    let mut out = String::with_capacity(format.len());
    let (mut i, mut arg) = (0, 0);
    while i < chars.len() {
        out.push(chars[i]);
        if chars[i] != '%' {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        let mut keyed = false;
        if chars.get(j) == Some(&'(') {
            keyed = true;
            while j < chars.len() && chars[j] != ')' {
                j += 1;
            }
        }
        while j < chars.len() && !chars[j].is_ascii_alphabetic() && chars[j] != '%' {
            j += 1;
        }
        let spec: String = chars[i + 1..j.min(chars.len())].iter().collect();
        out.push_str(&spec);
        match chars.get(j) {
            Some('%') => out.push('%'),
            Some('r') => {
                out.push('s');
                if !keyed && let Some(a) = args.get_mut(arg) {
                    *a = Value::from(text::repr(a));
                }
                arg += 1;
            }
            Some(c) => {
                out.push(*c);
                arg += usize::from(!keyed) + spec.matches('*').count();
            }
            None => {}
        }
        i = j + 1;
    }
    out
}

/// Largest total of the `repr`s `format`'s `%r` conversions may build (as the render bounds'
/// largest value).
const MAX_REPR_BYTES: usize = 16 * 1024 * 1024;

/// `format(value, *args, **kwargs)`: printf-style, `%r` included.
///
/// # Errors
///
/// An undefined value, or a format its arguments do not fit.
pub fn format(state: &mut State, value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let mut args = args.into_values();
    let Some(f) = value.as_str().filter(|f| f.contains('%')) else {
        return minijinja::filters::format(
            state,
            value,
            Rest(
                args.into_iter()
                    .map(ValueOrKwargs::from_value_owned)
                    .collect::<Result<_, _>>()?,
            ),
        );
    };
    let f = repr_conversions(f, &mut args);
    // A repr is at most four bytes per byte of its value (`\xNN`): cap what it built.
    let built: usize = args.iter().filter_map(|a| a.as_str()).map(str::len).sum();
    if built > MAX_REPR_BYTES {
        return Err(invalid(format!(
            "format: the %r arguments are larger than {MAX_REPR_BYTES} bytes"
        )));
    }
    let args = args
        .into_iter()
        .map(ValueOrKwargs::from_value_owned)
        .collect::<Result<_, _>>()?;
    minijinja::filters::format(state, &Value::from(f), Rest(args))
}

/// `string(value)`: Python's `str()` (floats as Python prints them).
///
/// # Errors
///
/// An undefined value.
pub fn string(state: &State, value: &Value) -> Result<Value, Error> {
    defined(value)?;
    if value.kind() == ValueKind::Number && !value.is_integer() {
        return Ok(Value::from(text_of(value)));
    }
    minijinja::filters::string(state, value)
}

/// `batch(value, linecount, fill_with=None)`.
///
/// # Errors
///
/// An undefined value or a bad argument.
pub fn batch(state: &State, value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let p = Params::new(args.into_values(), &["linecount", "fill_with"])?;
    let count = usize::try_from(p.int("linecount", 0)?)
        .map_err(|_| invalid("batch: linecount must be positive"))?;
    minijinja::filters::batch(state, value.clone(), count, p.get("fill_with"))
}

/// `slice(value, slices, fill_with=None)`.
///
/// # Errors
///
/// An undefined value or a bad argument.
pub fn slice(state: &State, value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let p = Params::new(args.into_values(), &["slices", "fill_with"])?;
    let count = usize::try_from(p.int("slices", 0)?)
        .map_err(|_| invalid("slice: slices must be positive"))?;
    minijinja::filters::slice(state, value.clone(), count, p.get("fill_with"))
}

/// `truncate(s, length=255, killwords=False, end='...', leeway=5)`.
///
/// # Errors
///
/// An undefined value, or `length` shorter than `end`.
pub fn truncate(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let p = Params::new(
        args.into_values(),
        &["length", "killwords", "end", "leeway"],
    )?;
    let length = usize::try_from(p.int("length", 255)?)
        .map_err(|_| invalid("truncate: length must not be negative"))?;
    let leeway = usize::try_from(p.int("leeway", 5)?)
        .map_err(|_| invalid("truncate: leeway must not be negative"))?;
    let end = p.text("end").unwrap_or_else(|| "...".into());
    let end_len = end.chars().count();
    if length < end_len {
        return Err(invalid(format!(
            "truncate: expected length >= {end_len}, got {length}"
        )));
    }
    let s = text_of(value);
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= length + leeway {
        return Ok(Value::from(s));
    }
    let head: String = chars[..length - end_len].iter().collect();
    let head = if p.bool("killwords", false) {
        head
    } else {
        head.rsplit_once(' ')
            .map_or(head.clone(), |(a, _)| a.to_string())
    };
    Ok(Value::from(format!("{head}{end}")))
}

/// The `callable` test: functions, macros and objects that can be called.
fn is_callable(value: &Value) -> bool {
    value.kind() == ValueKind::Plain
}

/// The `sequence` test: anything with a length and items (strings, lists, mappings).
fn is_sequence(value: &Value) -> bool {
    matches!(
        value.kind(),
        ValueKind::String | ValueKind::Seq | ValueKind::Map
    )
}

/// Jinja2's `cycler(*items)`: `next()`, `reset()` and `current`.
#[derive(Debug)]
struct Cycler {
    items: Vec<Value>,
    pos: AtomicUsize,
}

impl Object for Cycler {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        (key.as_str() == Some("current"))
            .then(|| self.items[self.pos.load(Ordering::Relaxed)].clone())
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        if !args.is_empty() {
            return Err(Error::from(ErrorKind::TooManyArguments));
        }
        match method {
            "next" => {
                let i = self.pos.load(Ordering::Relaxed);
                self.pos
                    .store((i + 1) % self.items.len(), Ordering::Relaxed);
                Ok(self.items[i].clone())
            }
            "reset" => {
                self.pos.store(0, Ordering::Relaxed);
                Ok(Value::from(()))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// `cycler(*items)`.
fn cycler(items: Rest<Value>) -> Result<Value, Error> {
    if items.is_empty() {
        return Err(invalid("cycler needs at least one item"));
    }
    Ok(Value::from_object(Cycler {
        items: items.0,
        pos: AtomicUsize::new(0),
    }))
}

/// `namespace(*mappings, **attributes)`.
fn namespace(args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    let mut attrs: BTreeMap<String, Value> = BTreeMap::new();
    for v in args.into_values() {
        if v.kind() != ValueKind::Map {
            return Err(invalid("namespace takes mappings and keyword arguments"));
        }
        for k in v.try_iter()? {
            let item = v.get_item(&k)?;
            attrs.insert(text_of(&k), item);
        }
    }
    minijinja::functions::namespace(Some(ValueOrKwargs::from_value_owned(Value::from(attrs))?))
}

/// Jinja2's lorem ipsum words.
const LOREM: &str = "a ac accumsan ad adipiscing aenean aliquam aliquet amet ante aptent arcu at auctor augue \
bibendum blandit class commodo condimentum congue consectetuer consequat conubia convallis cras \
cubilia cum curabitur curae cursus dapibus diam dictum dictumst dignissim dis dolor donec dui \
duis egestas eget eleifend elementum elit enim erat eros est et etiam eu euismod facilisi \
facilisis fames faucibus felis fermentum feugiat fringilla fusce gravida habitant habitasse hac \
hendrerit hymenaeos iaculis id imperdiet in inceptos integer interdum ipsum justo lacinia lacus \
laoreet lectus leo libero ligula litora lobortis lorem luctus maecenas magna magnis malesuada \
massa mattis mauris metus mi molestie mollis montes morbi mus nam nascetur natoque nec neque \
netus nibh nisi nisl non nonummy nostra nulla nullam nunc odio orci ornare parturient pede \
pellentesque penatibus per pharetra phasellus placerat platea porta porttitor posuere potenti \
praesent pretium primis proin pulvinar purus quam quis quisque rhoncus ridiculus risus rutrum \
sagittis sapien scelerisque sed sem semper senectus sit sociis sociosqu sodales sollicitudin \
suscipit suspendisse taciti tellus tempor tempus tincidunt torquent tortor tristique turpis \
ullamcorper ultrices ultricies urna ut varius vehicula vel velit venenatis vestibulum vitae \
vivamus viverra volutpat vulputate";

/// A random integer in `lo..hi` (`lo < hi`).
fn randrange(lo: usize, hi: usize) -> usize {
    lo + random_below(hi - lo)
}

/// One lorem ipsum paragraph of `min..max` words, as Jinja2 builds them.
fn lorem_paragraph(words: &[&str], min: usize, max: usize) -> String {
    let mut p: Vec<String> = Vec::new();
    let (mut capitalize, mut last_comma, mut last_fullstop) = (true, 0usize, 0usize);
    let mut last = "";
    for idx in 0..randrange(min, max) {
        let mut word = words[random_below(words.len())];
        while word == last {
            word = words[random_below(words.len())];
        }
        last = word;
        let mut word = word.to_string();
        if capitalize {
            word = text::capitalize(&word);
            capitalize = false;
        }
        if idx > last_comma + randrange(3, 8) {
            last_comma = idx;
            last_fullstop += 2;
            word.push(',');
        }
        if idx > last_fullstop + randrange(10, 20) {
            last_comma = idx;
            last_fullstop = idx;
            word.push('.');
            capitalize = true;
        }
        p.push(word);
    }
    let mut s = p.join(" ");
    if s.ends_with(',') {
        s.pop();
    }
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

/// `lipsum(n=5, html=True, min=20, max=100)`: `n` paragraphs of random lorem ipsum.
fn lipsum(args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    let p = Params::new(args.into_values(), &["n", "html", "min", "max"])?;
    let n = usize::try_from(p.int("n", 5)?).unwrap_or(0).min(100);
    let min = usize::try_from(p.int("min", 20)?).unwrap_or(0);
    let max = usize::try_from(p.int("max", 100)?).unwrap_or(0).min(10_000);
    if min >= max {
        return Err(invalid("lipsum: min must be less than max"));
    }
    let words: Vec<&str> = LOREM.split_whitespace().collect();
    let paragraphs: Vec<String> = (0..n).map(|_| lorem_paragraph(&words, min, max)).collect();
    if !p.bool("html", true) {
        return Ok(Value::from(paragraphs.join("\n\n")));
    }
    let html: Vec<String> = paragraphs
        .iter()
        .map(|x| format!("<p>{}</p>", html_escape(x)))
        .collect();
    Ok(Value::from_safe_string(html.join("\n")))
}

#[cfg(test)]
mod cases;

#[cfg(test)]
mod tests;
