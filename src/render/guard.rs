//! The input-injection guard: input values are data, never structure.
//!
//! While rendering, every value a template prints is wrapped in two private-use marker
//! characters. Afterwards the marked document and the clean document (markers removed) are
//! both parsed as YAML and walked together. A render is accepted only when
//!
//! * every marked value lies inside a single scalar (a value that closes a quote, starts a
//!   new line or opens a comment splits its markers across scalars), and
//! * the two documents have the same shape, with equal scalars (a value that becomes a tag,
//!   an alias, a list or a mapping when unmarked changes the shape).
//!
//! Both parses go through [`yaml::from_str`], which refuses a document nested deeper than
//! [`yaml::MAX_DEPTH`] before libyaml scans it, so the check is linear in the document's
//! size whatever a template or an input value nests (the walk below recurses at most that
//! deep). This module only inspects text; it never renders and never performs I/O.
//!
//! Fast path ([`plain_values_only`]): when every printed value is a plain word (ASCII letters
//! and digits at both ends, only letters, digits, `_ . / - :` and single inner spaces
//! between, never `: `) and no value sits where such a word is not an ordinary scalar character (an
//! anchor, alias, tag, directive or block scalar header token, or after a backslash), the
//! markers cannot change how the document is scanned: a value is then a run of ordinary
//! scalar characters in both documents, so the marked parse is skipped. The clean document's
//! parse (returned for the rendered hash) is then rebuilt without parsing from the cached
//! parse of the document's skeleton where [`super::skeleton`] allows, else parsed once.

use serde_yaml::Value;

use super::CanonicalJson;
use crate::catalog::yaml::{self, YamlError};

/// Opens a printed value in the marked render.
pub const OPEN: char = '\u{E000}';
/// Closes a printed value in the marked render.
pub const CLOSE: char = '\u{E001}';
/// Opens a block whose continuation lines are indented to the block's start column.
pub const INDENT_OPEN: char = '\u{E002}';
/// Closes such a block.
pub const INDENT_CLOSE: char = '\u{E003}';

/// Whether `s` contains any of the reserved marker characters.
#[must_use]
pub fn has_reserved(s: &str) -> bool {
    // All four are U+E000..U+E003, whose UTF-8 starts with the byte 0xEE: most text has none.
    s.as_bytes().contains(&0xEE)
        && s.chars()
            .any(|c| matches!(c, OPEN | CLOSE | INDENT_OPEN | INDENT_CLOSE))
}

/// Wraps a printed value in markers.
pub fn mark(out: &mut String, value: &str) {
    out.push(OPEN);
    out.push_str(value);
    out.push(CLOSE);
}

/// Indents the continuation lines of each `INDENT_OPEN … INDENT_CLOSE` block to the column
/// where the block starts, then removes those markers. Value markers count as zero width.
#[must_use]
pub fn apply_indent_blocks(text: String) -> String {
    if !text.contains(INDENT_OPEN) {
        return text;
    }
    // Runs of ordinary characters are copied and counted whole; only line breaks and the
    // characters starting with 0xEE (the markers among them, all three bytes) are looked at.
    let b = text.as_bytes();
    let chars = |run: &[u8]| run.iter().filter(|&&x| x & 0xC0 != 0x80).count();
    let mut out = String::with_capacity(text.len() + 64);
    let mut column = 0usize;
    let mut indent: Option<usize> = None;
    let (mut from, mut at) = (0, 0);
    while let Some(i) = memchr::memchr2(b'\n', 0xEE, &b[at..]).map(|i| at + i) {
        column += chars(&b[at..i]);
        at = i + 1;
        if b[i] == b'\n' {
            out.push_str(&text[from..at]);
            from = at;
            column = 0;
            if let Some(n) = indent {
                out.extend(std::iter::repeat_n(' ', n));
                column = n;
            }
            continue;
        }
        at = i + 3;
        match text[i..].chars().next() {
            Some(INDENT_OPEN) => indent = Some(column),
            Some(INDENT_CLOSE) => indent = None,
            Some(OPEN | CLOSE) => continue,
            _ => {
                column += 1;
                continue;
            }
        }
        out.push_str(&text[from..i]);
        from = at;
    }
    out.push_str(&text[from..]);
    out
}

/// Removes value markers.
#[must_use]
pub fn strip(text: &str) -> String {
    // OPEN is EE 80 80 in UTF-8, CLOSE EE 80 81; 0xEE only ever starts a character.
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let (mut from, mut at) = (0, 0);
    while let Some(i) = memchr::memchr(0xEE, &b[at..]).map(|i| at + i) {
        if b.get(i + 1) == Some(&0x80) && matches!(b.get(i + 2), Some(0x80 | 0x81)) {
            out.push_str(&text[from..i]);
            from = i + 3;
        }
        at = i + 1;
    }
    out.push_str(&text[from..]);
    out
}

/// What the guard found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardError {
    /// The clean document is not YAML at all.
    NotYaml {
        /// Parser message with line and column.
        message: String,
    },
    /// The document is nested deeper than [`yaml::MAX_DEPTH`]; refused before parsing.
    TooDeep {
        /// 1-based line of the first collection past the limit.
        line: usize,
        /// The limit.
        limit: usize,
    },
    /// A printed value changed the document's structure.
    Injection {
        /// Where in the document, e.g. `Resources.Bucket.Properties.BucketName`.
        at: String,
        /// The offending value (shortened).
        value: String,
    },
}

/// Checks a marked `CloudFormation` document. Returns the clean text when it is safe.
#[cfg(test)]
pub fn check_yaml(marked: &str) -> Result<String, GuardError> {
    check_yaml_canonical(marked).map(|(clean, _)| clean)
}

/// [`check_yaml`], also returning the clean document's parse in canonical JSON (for the
/// rendered hash): written from the skeleton's JSON segments where [`super::skeleton`]
/// allows, else `serde_json`'s text of the parse.
pub fn check_yaml_canonical(marked: &str) -> Result<(String, CanonicalJson), GuardError> {
    if let Some(json) = super::skeleton::canonical(marked) {
        return Ok((strip(marked), json));
    }
    check_parsing(marked, true).map(|(clean, b)| (clean, CanonicalJson::of(&b)))
}

/// The guard returning the parse itself, the skeleton's rebuilt parse ([`super::skeleton::parse`])
/// where `fast` allows: the reference the agreement tests compare [`check_yaml_canonical`] to.
#[cfg(test)]
fn check_with(marked: &str, fast: bool) -> Result<(String, Value), GuardError> {
    if fast && let Some(b) = super::skeleton::parse(marked) {
        return Ok((strip(marked), b));
    }
    check_parsing(marked, fast)
}

/// The guard, parsing; `fast`: whether the fast path may skip the marked parse.
fn check_parsing(marked: &str, fast: bool) -> Result<(String, Value), GuardError> {
    let clean = strip(marked);
    let fast = fast && plain_values_only(marked);
    let b: Value = yaml::from_str(&clean).map_err(|e| match e {
        YamlError::TooDeep(d) => GuardError::TooDeep {
            line: d.line,
            limit: d.limit,
        },
        YamlError::Parse(e) => GuardError::NotYaml {
            message: crate::catalog::yaml_error(&e),
        },
    })?;
    if fast {
        return Ok((clean, b));
    }
    // Markers only add characters to scalars: a marked document deeper than the clean one
    // (or not YAML where the clean one is) has had its structure changed by a value.
    let a: Value = match yaml::from_str(marked) {
        Ok(a) => a,
        Err(e) => {
            return Err(GuardError::Injection {
                at: e
                    .line()
                    .map_or_else(|| "document".into(), |l| format!("line {l}")),
                value: first_marked_on_line(marked, e.line().unwrap_or(0)),
            });
        }
    };
    walk(&a, &b, &mut Vec::new())?;
    Ok((clean, b))
}

/// Whether a printed value is a plain word: ASCII letters or digits at both ends, and only
/// letters, digits, `_`, `.`, `/`, `-`, `:` and single spaces between, never `: `. No such
/// text holds a line break, a quote, a comment, a flow or block indicator or a mapping value
/// indicator, and it neither starts nor ends with a space or an indicator.
#[must_use]
pub fn is_plain_value(v: &str) -> bool {
    let b = v.as_bytes();
    let (Some(first), Some(last)) = (b.first(), b.last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && !v.contains("  ")
        && !v.contains(": ")
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_./-: ".contains(c))
}

/// Whether the token a value starts in (`before`: the marked text up to the value's opening
/// marker; the token reaches back to the last blank) lets a plain word be ordinary scalar
/// characters: it must hold none of `&`, `*`, `!`, `%`, `|`, `>` (anchor, alias, tag,
/// directive, block scalar header: their names end at a marker, not at a letter) and no
/// backslash (an escape in a double-quoted scalar). Conservative: `'&{{ x }}'` takes the
/// full check although quoted.
pub(crate) fn ordinary_position(before: &str) -> bool {
    let token_start = before.rfind([' ', '\t', '\n', '\r']).map_or(0, |i| i + 1);
    !before[token_start..]
        .bytes()
        .any(|c| b"&*!%|>\\".contains(&c))
}

/// Whether every printed value of `marked` is a plain word ([`is_plain_value`]) in an
/// ordinary position: then the marked document scans as the clean one does and the marked
/// parse can be skipped.
#[must_use]
pub fn plain_values_only(marked: &str) -> bool {
    let mut rest = marked;
    let mut offset = 0;
    while let Some(open) = rest.find(OPEN) {
        let start = open + OPEN.len_utf8();
        let Some(len) = rest[start..].find(CLOSE) else {
            return false;
        };
        let value = &rest[start..start + len];
        if value.contains(OPEN)
            || rest[..open].contains(CLOSE)
            || !is_plain_value(value)
            || !ordinary_position(&marked[..offset + open])
        {
            return false;
        }
        let next = start + len + CLOSE.len_utf8();
        offset += next;
        rest = &rest[next..];
    }
    !rest.contains(CLOSE)
}

fn first_marked_on_line(marked: &str, line: usize) -> String {
    let text = marked.lines().nth(line.saturating_sub(1)).unwrap_or("");
    let value: String = text
        .split(OPEN)
        .nth(1)
        .map_or(text, |s| s.split(CLOSE).next().unwrap_or(s))
        .to_string();
    shorten(&value)
}

fn shorten(s: &str) -> String {
    let clean = strip(s);
    if clean.chars().count() > 80 {
        format!("{}…", clean.chars().take(80).collect::<String>())
    } else {
        clean
    }
}

fn path_string(path: &[String]) -> String {
    if path.is_empty() {
        "document root".into()
    } else {
        path.join(".")
    }
}

fn balanced(s: &str) -> bool {
    let mut open = false;
    for c in s.chars() {
        match c {
            OPEN if open => return false,
            OPEN => open = true,
            CLOSE if !open => return false,
            CLOSE => open = false,
            _ => {}
        }
    }
    !open
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn scalars_equal(a: &Value, b: &Value) -> bool {
    let (Some(at), Some(bt)) = (scalar_text(a), scalar_text(b)) else {
        return false;
    };
    if !balanced(&at) {
        return false;
    }
    let stripped = strip(&at);
    if stripped == bt {
        return true;
    }
    // A tag, anchor or alias is structure even where it resolves to a plain scalar
    // (`!!binary aGk=` reads back as "aGk=").
    if stripped.trim_start().starts_with(['!', '&', '*']) {
        return false;
    }
    // A marked plain scalar is always a string; unmarked it may be a number, bool, null or a
    // quoted string. Equal when the value re-read as YAML is the same scalar.
    match yaml::from_str::<Value>(&stripped) {
        Ok(re) if re.is_mapping() || re.is_sequence() || matches!(re, Value::Tagged(_)) => false,
        Ok(re) => re == *b || scalar_text(&re).as_deref() == Some(bt.as_str()),
        Err(_) => false,
    }
}

fn walk(a: &Value, b: &Value, path: &mut Vec<String>) -> Result<(), GuardError> {
    let injection = |path: &[String], v: &Value| GuardError::Injection {
        at: path_string(path),
        value: scalar_text(v).map_or_else(|| "(structure)".into(), |s| shorten(&s)),
    };
    match (a, b) {
        (Value::Mapping(ma), Value::Mapping(mb)) => {
            if ma.len() != mb.len() {
                return Err(injection(path, a));
            }
            for ((ka, va), (kb, vb)) in ma.iter().zip(mb.iter()) {
                if !scalars_equal(ka, kb) {
                    return Err(injection(path, ka));
                }
                path.push(strip(&scalar_text(kb).unwrap_or_default()));
                walk(va, vb, path)?;
                path.pop();
            }
            Ok(())
        }
        (Value::Sequence(sa), Value::Sequence(sb)) => {
            if sa.len() != sb.len() {
                return Err(injection(path, a));
            }
            for (i, (va, vb)) in sa.iter().zip(sb.iter()).enumerate() {
                path.push(format!("[{i}]"));
                walk(va, vb, path)?;
                path.pop();
            }
            Ok(())
        }
        (Value::Tagged(ta), Value::Tagged(tb)) => {
            if ta.tag != tb.tag {
                return Err(injection(path, &ta.value));
            }
            walk(&ta.value, &tb.value, path)
        }
        _ if scalars_equal(a, b) => Ok(()),
        _ => Err(injection(path, a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The production guard ([`check_yaml_canonical`], twice: the second time from the cached
    /// skeleton) agrees with `want` (a check that built the parse): same verdict, same clean
    /// text, and its canonical JSON is `serde_json`'s text of that parse, so the same
    /// rendered hash. Returns whether the skeleton answered without a parse.
    fn canonical_agrees(m: &str, want: &Result<(String, Value), GuardError>, what: &str) -> bool {
        let want = want
            .as_ref()
            .map(|(clean, v)| (clean.clone(), CanonicalJson::of(v)));
        for _ in 0..2 {
            let got = check_yaml_canonical(m);
            assert_eq!(got.is_ok(), want.is_ok(), "{what}: {got:?}");
            assert_eq!(got.as_ref().ok(), want.as_ref().ok(), "{what}");
        }
        super::super::skeleton::canonical(m).is_some()
    }

    fn marked(template: &str, value: &str) -> String {
        let mut v = String::new();
        mark(&mut v, value);
        template.replace("{v}", &v)
    }

    #[test]
    fn plain_values_pass_and_come_back_clean() {
        for (t, v) in [
            ("A: '{v}'\n", "it is fine"),
            ("A: {v}\n", "80"),
            ("A: {v}\n", "true"),
            ("A: \"{v}\"\n", "x y z"),
            ("A: !Ref {v}\n", "Param"),
            ("{v}Bucket:\n  Type: x\n", "Payments"),
            ("A: >-\n  {\"c\": \"{v}\"}\n", "echo 'hi'"),
        ] {
            let m = marked(t, v);
            let clean = check_yaml(&m).unwrap_or_else(|e| panic!("{t:?} with {v:?}: {e:?}"));
            assert_eq!(clean, t.replace("{v}", v));
        }
    }

    #[test]
    fn core_schema_tags_are_caught() {
        for v in ["!!binary aGk=", "!!str x", "!!int 3", "&a x"] {
            let doc = format!("a: {OPEN}{v}{CLOSE}\n");
            assert!(check_yaml(&doc).is_err(), "{v}");
        }
        assert!(check_yaml(&format!("a: '{OPEN}!!binary aGk={CLOSE}'\n")).is_ok());
    }

    #[test]
    fn injections_are_caught() {
        for (t, v) in [
            ("A: {v}\n", "x\nEvil:\n  Type: AWS::IAM::User"),
            ("A: '{v}'\nB: 1\n", "x'\nEvil: 'y"),
            ("R:\n  A: {v}\n", "[1, 2]"),
            ("R:\n  A: {v}\n", "!Ref Secret"),
            ("R: {a: '{v}'}\n", "x', b: 'y"),
            ("R:\n  - {v}\n", "a\n  - b"),
            ("A: {v}\nB: 2\n", "x # hide"),
            ("A: {v}\n", "{Evil: 1}"),
        ] {
            let m = marked(t, v);
            let clean = strip(&m);
            match check_yaml(&m) {
                Err(GuardError::Injection { .. }) => {}
                Err(GuardError::NotYaml { .. }) => {
                    assert!(serde_yaml::from_str::<Value>(&clean).is_err());
                }
                Err(e @ GuardError::TooDeep { .. }) => panic!("{t:?} with {v:?}: {e:?}"),
                Ok(_) => panic!("{t:?} with {v:?} was accepted:\n{clean}"),
            }
        }
    }

    #[test]
    fn deep_documents_are_refused_before_parsing() {
        // In the template itself, a thousand and a million levels deep: the refusal costs a
        // scan of the first levels (timings are printed, not asserted).
        for n in [1_000usize, 1_000_000] {
            let doc = format!("A: {}{}\n", "[".repeat(n), "]".repeat(n));
            let start = std::time::Instant::now();
            let e = check_yaml(&doc).expect_err("too deep");
            println!("guard: {n} levels refused in {:?}", start.elapsed());
            assert_eq!(
                e,
                GuardError::TooDeep {
                    line: 1,
                    limit: yaml::MAX_DEPTH
                }
            );
        }
        // In an input value printed unquoted: the clean document is the deep one.
        let m = marked("A: {v}\n", &"[".repeat(1_000_000));
        assert!(matches!(check_yaml(&m), Err(GuardError::TooDeep { .. })));
        // Quoted, it is data.
        let m = marked("A: '{v}'\n", &"[".repeat(1_000_000));
        assert!(check_yaml(&m).is_ok());
    }

    #[test]
    fn plain_values_are_words() {
        for (v, plain) in [
            ("payments", true),
            ("Payments-Prod_2", true),
            ("10.0.0.0/16", true),
            ("arn:aws:iam::123456789012:role/x", true),
            ("public.ecr.aws/nginx/nginx:latest", true),
            ("a b c", true),
            ("80", true),
            ("true", true),
            ("", false),
            ("-1", false),
            ("1.5e+20", false),
            (".hidden", false),
            ("x.", false),
            ("a  b", false),
            ("a: b", false),
            ("a:", false),
            (" a", false),
            ("a ", false),
            ("a\nb", false),
            ("a\tb", false),
            ("a#b", false),
            ("it's", false),
            ("say \"hi\"", false),
            ("[1, 2]", false),
            ("{a}", false),
            ("a,b", false),
            ("&a", false),
            ("a*b", false),
            ("!Ref", false),
            ("a|b", false),
            ("a>b", false),
            ("50%", false),
            ("a\\b", false),
            ("a@b", false),
            ("a`b", false),
            ("a~b", false),
            ("café", false),
        ] {
            assert_eq!(is_plain_value(v), plain, "{v:?}");
        }
    }

    #[test]
    fn plain_values_only_in_ordinary_positions() {
        for (t, fast) in [
            ("A: {v}\n", true),
            ("A: '{v}'\n", true),
            ("A: \"{v}\"\n", true),
            ("A: !Ref {v}\n", true),
            ("A: !Sub 'arn:aws:s3:::{v}-*'\n", true),
            ("{v}Bucket:\n  Type: x\n", true),
            ("A: [{v}, b]\n", true),
            ("A: {a: {v}}\n", true),
            ("A: |\n  echo {v}\n", true),
            ("A: x-{v}-{v}\n", true),
            ("A: &{v} x\n", false),
            ("A: *{v}\n", false),
            ("A: !{v} x\n", false),
            ("A: !Ref{v}\n", false),
            ("A: !a[{v}] x\n", false),
            ("A: [b,&{v} x]\n", false),
            ("A: |{v}\n  x\n", false),
            ("A: >-{v}\n  x\n", false),
            ("%{v} x\n---\nA: 1\n", false),
            ("A: \"\\x{v}\"\n", false),
            ("A: \"\\{v}\"\n", false),
            ("A: '&{v}'\n", false),
        ] {
            let m = marked(t, "a1");
            assert_eq!(plain_values_only(&m), fast, "{t:?}");
        }
        // Markers in the template's own text take the full check (which refuses them).
        let stray = format!("A: x{CLOSE}\nB: {OPEN}y{CLOSE}\n");
        assert!(!plain_values_only(&stray));
        assert!(check_yaml(&stray).is_err());
        // A value that is not a plain word takes the full check.
        assert!(!plain_values_only(&marked("A: {v}\n", "a b: c")));
    }

    /// Wherever the fast path applies, the full check (both parses, the walk) agrees: same
    /// verdict, same clean text, same parse.
    #[test]
    fn fast_path_agrees_with_the_full_check() {
        let templates = [
            "A: {v}\n",
            "A: '{v}'\nB: 1\n",
            "A: \"{v}\"\n",
            "A: !Ref {v}\n",
            "A: !Sub '${AWS::StackName}-{v}'\n",
            "{v}Bucket:\n  Type: x\n",
            "{v}: 1\n",
            "A: [{v}, b]\n",
            "A: [{v}]\n",
            "A: {a: {v}}\n",
            "A: {{v}: 1}\n",
            "A:{v}\n",
            "A: -{v}\n",
            "- {v}\n- b\n",
            "-{v}\n",
            "?{v}\n",
            "---{v}\n",
            "...{v}\n",
            "A: |\n  {v}\n",
            "A: >\n  {v} {v}\n",
            "A: 1{v}\n",
            "A: 0x{v}\n",
            "A: x #{v}\n",
            "A: x#{v}\n",
            "A: [a,{v}]\n",
            "A: [a:{v}]\n",
            "A:\n  - {v}\n  - {v}:{v}\n",
        ];
        let more_templates = [
            "A: &a {v}\nB: *a\n",
            "A: &a x-{v}\nB: *a\nC: {w}\n",
            "A: &a {x: {v}}\nB:\n  <<: *a\n  y: {w}\n",
            "{v}: 1\n{w}: 2\n",
            "A: {v}-{w}\n",
            "A: {v}{w}\n",
            "A: '{v}{w}'\n",
            "A: {v}.{w}\n",
            "A: !Ref {v}\nB: !GetAtt {w}.Arn\n",
            "A: !Sub\n  - '${X}-{v}'\n  - X: {w}\n",
            "A: \"{v}\"\nB: {w}\n",
            "A:\n  B: {v}\n  C:\n    - {w}\n    - {v}\n",
            "# {v}\nA: {w}\n",
            "A: x\n  {v}\n  {w}\n",
            "A: >-\n  {v}\n  {w}\n",
            "A: [{v}, {w}]\n",
            "A: {{v}: {w}}\n",
            "? {v}\n: {w}\n",
            "A: {w}\nA: {v}\n",
            // Keys and tags around holes, for the JSON written without the parse.
            "A: 1\n{v}: 2\n",
            "80: 1\n{v}: 2\n",
            "1.5: a\n{v}: b\ntrue: c\n",
            "~: 1\nB: {v}\n",
            "{v}: 1\n{w}: 2\n",
            "A: {{v}: 1, {w}: 2, a: 3}\n",
            "A: !Sub\n  - '{v}-x'\n  - {B: {w}, C: [{v}]}\n",
            "A: []\nB: {}\nC: {v}\nD: !Ref\nE: \"q\\\"{w}\"\n",
            "A:\n  {v}x: 1\n  {w}x: [{v}, {w}x]\n",
        ];
        let values = [
            "a",
            "1",
            "10",
            "0",
            "080",
            "1e3",
            "False",
            "NULL",
            "inf",
            "true",
            "null",
            "x y",
            "arn:aws:s3:::b",
            "a:b",
            "1.5",
            "10.0.0.0/16",
            "a-b",
            "No",
            "0x1F",
            "a/b",
            "a:1",
            "e",
        ];
        let mut fast = 0;
        let mut written = 0;
        let mut rebuilt = 0;
        for t in templates.iter().chain(&more_templates) {
            for v in values {
                for w in ["b", v, "80", "x1"] {
                    let m = marked(t, v).replace("{w}", &marked("{v}", w));
                    if !plain_values_only(&m) {
                        continue;
                    }
                    fast += 1;
                    let (quick, full) = (check_with(&m, true), check_with(&m, false));
                    assert_eq!(quick, full, "{t:?} with {v:?}, {w:?}");
                    // The same parse, so the same rendered hash.
                    let json = |r: &Result<(String, Value), GuardError>| {
                        r.as_ref().ok().map(|(_, v)| serde_json::to_string(v).ok())
                    };
                    assert_eq!(json(&quick), json(&full), "{t:?} with {v:?}, {w:?}");
                    let what = format!("{t:?} with {v:?}, {w:?}");
                    written += usize::from(canonical_agrees(&m, &quick, &what));
                    if let (Err(got), Err(want)) = (check_yaml_canonical(&m), &full) {
                        assert_eq!(&got, want, "{what}");
                    }
                    // Twice: the skeleton is then cached.
                    let again = super::super::skeleton::parse(&m);
                    if let Some(again) = &again {
                        rebuilt += 1;
                        assert_eq!(
                            Ok(again),
                            full.as_ref().map(|(_, v)| v),
                            "{t:?} with {v:?}, {w:?}"
                        );
                    }
                }
            }
        }
        println!(
            "{fast} fast-path cases, {rebuilt} rebuilt without a parse, {written} written as JSON without a parse"
        );
        let (from_plan, built) = super::super::skeleton::COUNTS.with(std::cell::Cell::get);
        println!(
            "of the answers without a parse, {from_plan} written from the plan, {built} built the parse"
        );
        assert!(from_plan > 3 * 4000, "{from_plan} written from the plan");
        assert_eq!(
            written, rebuilt,
            "the JSON path answers where the rebuilt parse does"
        );
        assert!(fast > 3000, "{fast} fast-path cases");
        assert!(
            rebuilt > 2500,
            "{rebuilt} of {fast} rebuilt without a parse"
        );
    }

    /// Keys the JSON cannot write or the plan does not cover (a list or a tagged scalar as a
    /// key, holding holes): the production guard answers as the rebuilt parse does. (The
    /// full check refuses a list key, `scalars_equal` reading only scalars, where the
    /// rebuilt parse accepts it: a difference that predates the JSON path and is kept, the
    /// verdict of the path in use being the one not to change.)
    #[test]
    fn keys_outside_the_plan_agree_with_the_rebuilt_parse() {
        let mut cases = 0;
        let fallbacks = || super::super::skeleton::COUNTS.with(|c| c.get().1);
        let before = fallbacks();
        for t in [
            "[{v}, {w}]: 1\n",
            "? !T {v}\n: 1\n",
            "? [a, {v}]\n: {w}\n",
            "{v}: 1\n",
            "{v}: 1\nB: {w}\n",
        ] {
            for v in ["a", "80", "null", "1.5", "inf", "true", "x1"] {
                for w in ["b", v, "80"] {
                    let m = marked(t, v).replace("{w}", &marked("{v}", w));
                    let today = check_with(&m, true);
                    canonical_agrees(&m, &today, &format!("{t:?} with {v:?}, {w:?}"));
                    cases += 1;
                }
            }
        }
        assert!(cases > 100, "{cases} cases");
        assert!(fallbacks() > before, "no case built the parse");
    }

    /// The shape of a parse: its collections, keys' shapes and tags, every scalar blanked.
    fn shape(v: &Value) -> Value {
        match v {
            Value::Mapping(m) => {
                Value::Sequence(m.iter().flat_map(|(k, v)| [shape(k), shape(v)]).collect())
            }
            Value::Sequence(s) => {
                Value::Sequence(vec![Value::Sequence(s.iter().map(shape).collect())])
            }
            Value::Tagged(t) => {
                Value::Sequence(vec![Value::String(t.tag.to_string()), shape(&t.value)])
            }
            _ => Value::Null,
        }
    }

    /// Values that try to slip structure through the fast path: none is a plain word, so
    /// none takes it, and each is refused or read back as one plain value where it stands.
    #[test]
    fn hostile_values_never_take_the_fast_path() {
        let templates = [
            "A: {v}\nB: 1\n",
            "A: '{v}'\nB: 1\n",
            "A: \"{v}\"\nB: 1\n",
            "R:\n  - {v}\n  - b\n",
            "{v}: 1\nB: 2\n",
            "A: [{v}, b]\n",
            "A: {a: {v}, b: 1}\n",
            "A: |\n  {v}\nB: 1\n",
            "A: x-{v}\nB: 1\n",
            "A: !Ref {v}\nB: 1\n",
            "A: !Sub 'arn:{v}'\nB: 1\n",
        ];
        let values = [
            "x\nEvil: 1",
            "x\n  Evil: 1",
            "x: y",
            "x : y",
            "{Evil: 1}",
            "x, Evil: 1",
            "- x",
            "x\n- y",
            "&a x",
            "*a",
            "!Ref Secret",
            "!!binary aGk=",
            "| x",
            "> x",
            "%YAML 1.2",
            "@x",
            "`x`",
            "x\u{2028}Evil: 1",
            "x\u{2029}Evil: 1",
            "x\u{85}Evil: 1",
            "x\tEvil: 1",
            "x\t# hidden",
            "x # hidden",
            " x",
            "  x",
            "x ",
            "---",
            "...",
            "x\n---\nEvil: 1",
            "x\n...\n",
            "x'\nEvil: 'y",
            "x\"\nEvil: \"y",
            "x', b: 'y",
            "x\r\nEvil: 1",
            "?x",
            "? x",
            "[x]",
            "#x",
            "x#y",
            "\\",
            "\\\"",
        ];
        let mut refused = 0;
        for t in templates {
            let harmless = serde_yaml::from_str::<Value>(&t.replace("{v}", "harmless"))
                .unwrap_or_else(|e| panic!("{t:?}: {e}"));
            for v in values {
                let m = marked(t, v);
                assert!(
                    !plain_values_only(&m),
                    "{t:?} with {v:?} took the fast path"
                );
                let checked = check_with(&m, true);
                canonical_agrees(&m, &checked, &format!("{t:?} with {v:?}"));
                match checked {
                    Ok((_, parsed)) => assert_eq!(
                        shape(&parsed),
                        shape(&harmless),
                        "{t:?} with {v:?} changed the document's shape"
                    ),
                    Err(GuardError::Injection { .. } | GuardError::NotYaml { .. }) => refused += 1,
                    Err(e) => panic!("{t:?} with {v:?}: {e:?}"),
                }
            }
        }
        assert!(refused > 200, "{refused} refused");
    }

    /// Values that are not plain words, inside quoted and block scalars: where the skeleton
    /// rebuilds the parse, the full check agrees.
    #[test]
    fn text_values_in_quoted_and_block_scalars_agree_with_the_full_check() {
        let templates = [
            "A: '{v}'\nB: 1\n",
            "A: \"{v}\"\nB: 1\n",
            "A: 'x {v} y'\n",
            "A: \"{v}-{v}\"\n",
            "'{v}': 1\nB: 2\n",
            "A: |\n  {v}\n  x\nB: 1\n",
            "A: >-\n  {\"c\": \"{v}\"}\n  x\n",
            "A: >\n  {v}\n\n  {v}\n",
            "A: !Sub 'arn:{v}:x'\n",
            "A: ['{v}', \"{v}\"]\n",
            "A: {a: '{v}'}\n",
            "A: 'x\n  {v}\n  y'\n",
            "A: \"x\n  {v}\n  y\"\n",
            "--- |\n{v}\n",
            "--- |\n-{v}\n",
            "--- >\n.{v}\n",
            "A: {v}\n",
            "# {v}\nA: 1\n",
        ];
        let values = [
            "echo 'add your unit test command here'",
            "say \"hi\"",
            "a: b",
            "x # y",
            "{Evil: 1}",
            "[1, 2]",
            "- x",
            "&a *b !c |d >e %f @g `h`",
            "50%",
            "a\\b",
            "it's",
            "80",
            "--x",
            "..x",
            "a  b",
            "x, y: z",
            "? x",
        ];
        let mut rebuilt = 0;
        let mut written = 0;
        for t in templates {
            for v in values {
                let m = marked(t, v);
                let quick = check_with(&m, true);
                written += usize::from(canonical_agrees(&m, &quick, &format!("{t:?} with {v:?}")));
                let full = check_with(&m, false);
                let json = |r: &Result<(String, Value), GuardError>| {
                    r.as_ref()
                        .ok()
                        .map(|(c, v)| (c.clone(), serde_json::to_string(v).ok()))
                };
                assert_eq!(json(&quick), json(&full), "{t:?} with {v:?}");
                assert_eq!(quick.is_ok(), full.is_ok(), "{t:?} with {v:?}");
                rebuilt += usize::from(super::super::skeleton::parse(&m).is_some());
            }
        }
        println!("{rebuilt} rebuilt without a parse, {written} written as JSON without a parse");
        assert!(rebuilt > 120, "{rebuilt} rebuilt without a parse");
        assert_eq!(written, rebuilt);
    }

    #[test]
    fn values_that_make_keys_equal_are_refused_as_the_parse_refuses_them() {
        let doc = format!("{OPEN}a1{CLOSE}: 1\n{OPEN}a1{CLOSE}: 2\n");
        assert!(plain_values_only(&doc));
        assert!(matches!(check_yaml(&doc), Err(GuardError::NotYaml { .. })));
        let doc = format!("{OPEN}a1{CLOSE}: 1\n{OPEN}a2{CLOSE}: 2\n");
        assert!(check_yaml(&doc).is_ok());
    }

    /// The character-by-character `apply_indent_blocks` it replaced, as the reference.
    fn indent_blocks_by_char(text: &str) -> String {
        let mut out = String::new();
        let mut column = 0usize;
        let mut indent: Option<usize> = None;
        for c in text.chars() {
            match c {
                INDENT_OPEN => indent = Some(column),
                INDENT_CLOSE => indent = None,
                '\n' => {
                    out.push('\n');
                    column = 0;
                    if let Some(n) = indent {
                        out.extend(std::iter::repeat_n(' ', n));
                        column = n;
                    }
                }
                OPEN | CLOSE => out.push(c),
                _ => {
                    out.push(c);
                    column += 1;
                }
            }
        }
        out
    }

    #[test]
    fn indent_blocks_and_strip_agree_with_the_char_by_char_versions() {
        let pieces = [
            "a",
            "é",
            "\u{E004}",
            "\u{EFFF}",
            "\n",
            " ",
            "\t",
            "- x",
            "日本",
            "\u{1F600}",
            "\u{E000}",
            "\u{E001}",
            "\u{E002}",
            "\u{E003}",
        ];
        let mut cases = 0;
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let text = format!("k:{a}{INDENT_OPEN}{b}\n{c}{a}\n{b}{INDENT_CLOSE}{c}\nz");
                    assert_eq!(
                        apply_indent_blocks(text.clone()),
                        indent_blocks_by_char(&text),
                        "{text:?}"
                    );
                    let by_char: String = text.split([OPEN, CLOSE]).collect();
                    assert_eq!(strip(&text), by_char, "{text:?}");
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, pieces.len().pow(3));
    }

    #[test]
    fn indent_blocks_follow_their_column() {
        let text = format!("L:\n  - a\n  {INDENT_OPEN}- b\n- c{INDENT_CLOSE}\nZ: 1\n");
        assert_eq!(apply_indent_blocks(text), "L:\n  - a\n  - b\n  - c\nZ: 1\n");
    }
}
