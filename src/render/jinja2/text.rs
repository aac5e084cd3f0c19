//! Text algorithms of Python that Jinja2's filters are built on, reimplemented to give the
//! same output: `textwrap.wrap` (for `wordwrap`), `pprint.pformat` and `repr` (for
//! `pprint`), and Jinja2's own `urlize`. Pure functions over strings and values; no I/O.

use std::sync::LazyLock;

use minijinja::value::{Value, ValueKind};
use regex::Regex;

use super::{html_escape, py_float};

/// `textwrap.wrap` options Jinja2's `wordwrap` sets.
pub struct Wrap {
    /// Largest line, in characters.
    pub width: usize,
    /// Words longer than a line are cut.
    pub break_long_words: bool,
    /// Words may break after their hyphens.
    pub break_on_hyphens: bool,
}

/// `textwrap`'s whitespace (ASCII only).
fn is_ws(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// A letter in `textwrap`'s sense: a word character that is not a digit.
fn is_letter(c: Option<&char>) -> bool {
    c.is_some_and(|c| (c.is_alphanumeric() && !c.is_numeric()) || *c == '_')
}

fn is_word_punct(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || "!\"'&.,?".contains(c)
}

/// Splits one word (no whitespace) after the hyphens `textwrap` breaks at.
fn split_hyphens(word: &[char], chunks: &mut Vec<String>) {
    let mut start = 0;
    let mut i = 0;
    while i < word.len() {
        if word[i] != '-' || i == start {
            i += 1;
            continue;
        }
        let run = word[i..].iter().take_while(|c| **c == '-').count();
        if run >= 2 {
            // An em-dash between words is a chunk of its own.
            if is_word_punct(word[i - 1])
                && word
                    .get(i + run)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
            {
                chunks.push(word[start..i].iter().collect());
                chunks.push(word[i..i + run].iter().collect());
                start = i + run;
            }
            i += run;
            continue;
        }
        let behind = (i >= 2 && is_letter(word.get(i - 1)) && is_letter(word.get(i - 2)))
            || (i >= 3
                && is_letter(word.get(i - 1))
                && word[i - 2] == '-'
                && is_letter(word.get(i - 3)));
        let ahead = is_letter(word.get(i + 1))
            && (is_letter(word.get(i + 2))
                || (word.get(i + 2) == Some(&'-') && is_letter(word.get(i + 3))));
        if behind && ahead {
            chunks.push(word[start..=i].iter().collect());
            start = i + 1;
        }
        i += 1;
    }
    if start < word.len() {
        chunks.push(word[start..].iter().collect());
    }
}

/// `textwrap`'s chunks: runs of whitespace and words (split after hyphens when asked).
fn chunks(text: &str, hyphens: bool) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let ws = is_ws(chars[i]);
        let end = i + chars[i..].iter().take_while(|c| is_ws(**c) == ws).count();
        if ws || !hyphens {
            out.push(chars[i..end].iter().collect());
        } else {
            split_hyphens(&chars[i..end], &mut out);
        }
        i = end;
    }
    out
}

fn len(s: &str) -> usize {
    s.chars().count()
}

/// Python's `textwrap.wrap(text, width, expand_tabs=False, replace_whitespace=False, …)`.
#[must_use]
pub fn wrap(text: &str, o: &Wrap) -> Vec<String> {
    let mut rev: Vec<String> = chunks(text, o.break_on_hyphens);
    rev.reverse();
    let mut lines: Vec<String> = Vec::new();
    while !rev.is_empty() {
        let mut cur: Vec<String> = Vec::new();
        let mut cur_len = 0;
        if !lines.is_empty() && rev.last().is_some_and(|c| c.trim_matches(is_ws).is_empty()) {
            rev.pop();
        }
        while let Some(c) = rev.last() {
            if cur_len + len(c) <= o.width {
                cur_len += len(c);
                cur.extend(rev.pop());
            } else {
                break;
            }
        }
        if rev.last().is_some_and(|c| len(c) > o.width) {
            long_word(&mut rev, &mut cur, cur_len, o);
        }
        if cur.last().is_some_and(|c| c.trim_matches(is_ws).is_empty()) {
            cur.pop();
        }
        if !cur.is_empty() {
            lines.push(cur.concat());
        }
    }
    lines
}

/// `textwrap`'s `_handle_long_word`.
fn long_word(rev: &mut Vec<String>, cur: &mut Vec<String>, cur_len: usize, o: &Wrap) {
    let space_left = if o.width < 1 {
        1
    } else {
        o.width.saturating_sub(cur_len)
    };
    let Some(chunk) = rev.last_mut() else { return };
    if o.break_long_words {
        let chars: Vec<char> = chunk.chars().collect();
        let mut end = space_left;
        if o.break_on_hyphens && chars.len() > space_left {
            let hyphen = chars[..space_left.min(chars.len())]
                .iter()
                .rposition(|c| *c == '-');
            if let Some(h) = hyphen
                && h > 0
                && chars[..h].iter().any(|c| *c != '-')
            {
                end = h + 1;
            }
        }
        let end = end.min(chars.len());
        cur.push(chars[..end].iter().collect());
        *chunk = chars[end..].iter().collect();
    } else if cur.is_empty() {
        cur.extend(rev.pop());
    }
}

/// Python's `str.capitalize`: the first character upper case, the rest lower case.
#[must_use]
pub fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// Python's `repr` of a string.
#[must_use]
pub fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr` of a value.
#[must_use]
pub fn repr(v: &Value) -> String {
    let mut out = String::new();
    let _ = write_repr(&mut out, v);
    out
}

/// Writes Python's `repr` of a value item by item (a large list is never copied whole
/// first).
///
/// # Errors
///
/// When `out` refuses a write.
pub fn write_repr(out: &mut impl std::fmt::Write, v: &Value) -> std::fmt::Result {
    match v.kind() {
        ValueKind::String => out.write_str(&repr_str(v.as_str().unwrap_or_default())),
        ValueKind::Number if !v.is_integer() => {
            out.write_str(&f64::try_from(v.clone()).map_or_else(|_| v.to_string(), py_float))
        }
        ValueKind::Seq => {
            let (open, close) = if v.is_tuple() { ('(', ')') } else { ('[', ']') };
            out.write_char(open)?;
            let mut n = 0;
            for (i, item) in v.try_iter().map_err(|_| std::fmt::Error)?.enumerate() {
                if i > 0 {
                    out.write_str(", ")?;
                }
                write_repr(out, &item)?;
                n = i + 1;
            }
            if n == 1 && v.is_tuple() {
                out.write_char(',')?;
            }
            out.write_char(close)
        }
        ValueKind::Map => {
            out.write_char('{')?;
            for (i, k) in v.try_iter().map_err(|_| std::fmt::Error)?.enumerate() {
                if i > 0 {
                    out.write_str(", ")?;
                }
                write_repr(out, &k)?;
                out.write_str(": ")?;
                write_repr(out, &v.get_item(&k).unwrap_or_default())?;
            }
            out.write_char('}')
        }
        _ => write!(out, "{v}"),
    }
}

const PPRINT_WIDTH: usize = 80;

/// Python's `pprint.pformat(value)`: the `repr` when it fits in 80 columns, otherwise one
/// item per line.
#[must_use]
pub fn pformat(v: &Value) -> String {
    let mut out = String::new();
    format_value(v, &mut out, 0, 0);
    out
}

fn format_value(v: &Value, out: &mut String, indent: usize, allowance: usize) {
    let rep = repr(v);
    if len(&rep) <= PPRINT_WIDTH.saturating_sub(indent + allowance) {
        out.push_str(&rep);
        return;
    }
    match v.kind() {
        ValueKind::Map => {
            out.push('{');
            let keys: Vec<Value> = v.try_iter().map(Iterator::collect).unwrap_or_default();
            let indent = indent + 1;
            for (i, k) in keys.iter().enumerate() {
                let last = i + 1 == keys.len();
                let key = repr(k);
                out.push_str(&key);
                out.push_str(": ");
                let item = v.get_item(k).unwrap_or_default();
                format_value(
                    &item,
                    out,
                    indent + len(&key) + 2,
                    if last { allowance + 1 } else { 1 },
                );
                if !last {
                    out.push_str(",\n");
                    out.push_str(&" ".repeat(indent));
                }
            }
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            let items: Vec<Value> = v.try_iter().map(Iterator::collect).unwrap_or_default();
            let indent = indent + 1;
            for (i, item) in items.iter().enumerate() {
                let last = i + 1 == items.len();
                format_value(item, out, indent, if last { allowance + 1 } else { 1 });
                if !last {
                    out.push_str(",\n");
                    out.push_str(&" ".repeat(indent));
                }
            }
            out.push(']');
        }
        _ => out.push_str(&rep),
    }
}

/// Jinja2's `urlize` options (with its `noopener` policy already in `rel`).
pub struct Urlize {
    /// Longest link text shown (`None`: whole).
    pub limit: Option<usize>,
    /// The `rel` attribute (empty: none).
    pub rel: String,
    /// The `target` attribute.
    pub target: Option<String>,
    /// Further schemes that make a word a link.
    pub extra_schemes: Vec<String>,
}

static HTTP: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)^(
            (https?://|www\.)(([\w%-]+\.)+)?([a-z]{2,63}|xn--[\w%]{2,59})
          | ([\w%-]{2,63}\.)+(com|net|int|edu|gov|org|info|mil)
          | (https?://)((([\d]{1,3})(\.[\d]{1,3}){3})|(\[([\da-f]{0,4}:){2}([\da-f]{0,4}:?){1,6}\]))
        )(?::[\d]{1,5})?(?:[/?\#]\S*)?\n?$",
    )
    .ok()
});
static EMAIL: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)^\S+@\w[\w.-]*\.\w+\n?$").ok());
static LEAD: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"^([(<]|&lt;)+").ok());
static TRAIL: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"([)>.,\n]|&gt;)+$").ok());

fn matches(re: &LazyLock<Option<Regex>>, s: &str) -> bool {
    re.as_ref().is_some_and(|r| r.is_match(s))
}

/// Splits on whitespace runs, keeping them (Python's `re.split(r"(\s+)", s)`).
fn split_keep_ws(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut ws = None;
    for (i, c) in s.char_indices() {
        let w = c.is_whitespace();
        if ws.is_some_and(|p| p != w) {
            out.push(&s[start..i]);
            start = i;
        }
        ws = Some(w);
    }
    out.push(&s[start..]);
    out
}

/// Jinja2's `urlize`: links for URLs and e-mail addresses in (escaped) text.
#[must_use]
pub fn urlize(text: &str, o: &Urlize) -> String {
    let escaped = html_escape(text);
    let rel_attr = if o.rel.is_empty() {
        String::new()
    } else {
        format!(" rel=\"{}\"", html_escape(&o.rel))
    };
    let target_attr = o
        .target
        .as_ref()
        .filter(|t| !t.is_empty())
        .map_or_else(String::new, |t| format!(" target=\"{}\"", html_escape(t)));
    let trim = |x: &str| match o.limit {
        Some(l) if len(x) > l => format!("{}...", x.chars().take(l).collect::<String>()),
        _ => x.to_string(),
    };
    let mut out = String::with_capacity(escaped.len());
    for word in split_keep_ws(&escaped) {
        let (head, mut middle, mut tail) = split_punctuation(word);
        if matches(&HTTP, &middle) {
            let href = if middle.starts_with("https://") || middle.starts_with("http://") {
                middle.clone()
            } else {
                format!("https://{middle}")
            };
            middle = format!(
                "<a href=\"{href}\"{rel_attr}{target_attr}>{}</a>",
                trim(&middle)
            );
        } else if let Some(addr) = middle
            .strip_prefix("mailto:")
            .filter(|a| matches(&EMAIL, a))
        {
            middle = format!("<a href=\"{middle}\">{addr}</a>");
        } else if middle.contains('@')
            && !middle.starts_with("www.")
            && !middle.starts_with('@')
            && !middle.contains(':')
            && matches(&EMAIL, &middle)
        {
            middle = format!("<a href=\"mailto:{middle}\">{middle}</a>");
        } else if let Some(_scheme) = o
            .extra_schemes
            .iter()
            .find(|s| middle != **s && middle.starts_with(s.as_str()))
        {
            middle = format!("<a href=\"{middle}\"{rel_attr}{target_attr}>{middle}</a>");
        }
        out.push_str(head);
        out.push_str(&middle);
        out.push_str(&std::mem::take(&mut tail));
    }
    out
}

/// A word's leading and trailing punctuation, with brackets balanced back into the middle.
fn split_punctuation(word: &str) -> (&str, String, String) {
    let lead = LEAD
        .as_ref()
        .and_then(|r| r.find(word))
        .map_or(0, |m| m.end());
    let (head, rest) = word.split_at(lead);
    let mut middle = rest.to_string();
    let mut tail = String::new();
    if [")", ">", ".", ",", "\n", "&gt;"]
        .iter()
        .any(|e| middle.ends_with(e))
        && let Some(m) = TRAIL.as_ref().and_then(|r| r.find(&middle))
    {
        tail = middle[m.start()..].to_string();
        middle.truncate(m.start());
    }
    for (open, close) in [("(", ")"), ("<", ">"), ("&lt;", "&gt;")] {
        let opens = middle.matches(open).count();
        if opens <= middle.matches(close).count() {
            continue;
        }
        for _ in 0..opens.min(tail.matches(close).count()) {
            let Some(i) = tail.find(close) else { break };
            let end = i + close.len();
            middle.push_str(&tail[..end]);
            tail = tail[end..].to_string();
        }
    }
    (head, middle, tail)
}
