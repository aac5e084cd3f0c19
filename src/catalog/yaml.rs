//! Parsing YAML that users control (spec files, schemas, manifests, registration files,
//! component files, rendered templates) in time linear in its size.
//!
//! libyaml, under `serde_yaml`, scans the whole document before `serde_yaml` applies its
//! recursion limit (128 levels), and its scanner is quadratic in flow nesting: for every
//! token it walks the stack of possible simple keys, one per open `[` or `{`. A 2 MB file of
//! `[[[[…` (a million levels) would take hours. [`check_depth`] runs the same scanner token by
//! token and stops at the first token deeper than [`MAX_DEPTH`], so the stack never grows
//! past the limit and the scan costs at most `MAX_DEPTH` steps per token; [`from_str`] does
//! that before handing the text to `serde_yaml`. Every parse of user YAML goes through
//! [`from_str`] (or [`check_depth`] first).
//!
//! The depth counted is the number of open collections the scanner reports (block and flow
//! starts); it never exceeds the document's real nesting, so nothing `serde_yaml` accepted
//! before is refused. This module only reads text: no I/O, no rendering.

use std::mem::MaybeUninit;

use serde::de::DeserializeOwned;
use unsafe_libyaml as unsafe_yaml;

/// Deepest nesting of collections a user document may have: `serde_yaml`'s own recursion
/// limit, so a document refused here would have been refused by the parse anyway (after a
/// scan that may be quadratic).
pub const MAX_DEPTH: usize = 128;

/// A document nested deeper than [`MAX_DEPTH`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the document is nested too deeply: more than {limit} levels (at line {line}, column {column}); flatten it"
)]
pub struct TooDeep {
    /// 1-based line of the first collection past the limit.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The limit.
    pub limit: usize,
}

/// Why user YAML did not parse.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// Nested deeper than [`MAX_DEPTH`]; refused before parsing.
    #[error(transparent)]
    TooDeep(TooDeep),
    /// Not YAML, or not of the expected shape.
    #[error("{}", super::yaml_error(.0))]
    Parse(serde_yaml::Error),
}

impl YamlError {
    /// The parser's 1-based line, when known.
    #[must_use]
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::TooDeep(d) => Some(d.line),
            Self::Parse(e) => e.location().map(|l| l.line()),
        }
    }
}

/// Parses user YAML: [`check_depth`], then `serde_yaml`.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    check_depth(text).map_err(YamlError::TooDeep)?;
    serde_yaml::from_str(text).map_err(YamlError::Parse)
}

/// Refuses a document nested deeper than [`MAX_DEPTH`], in time linear in its size. A
/// document the scanner cannot read is let through: the parse reports it (with the nesting
/// up to that point within the limit, that parse is linear too).
pub fn check_depth(text: &str) -> Result<(), TooDeep> {
    check_depth_with(text, MAX_DEPTH)
}

/// [`check_depth`] with another limit (tests).
pub fn check_depth_with(text: &str, limit: usize) -> Result<(), TooDeep> {
    // Cheap exit: a document cannot be nested deeper than it has indicators and lines.
    let openers = text
        .bytes()
        .filter(|b| matches!(b, b'[' | b'{' | b'-' | b':' | b'?'))
        .count();
    if openers <= limit {
        return Ok(());
    }
    let mut scanner = Scanner::new(text);
    let mut depth = 0usize;
    while let Some((kind, mark)) = scanner.next() {
        match kind {
            unsafe_yaml::YAML_BLOCK_SEQUENCE_START_TOKEN
            | unsafe_yaml::YAML_BLOCK_MAPPING_START_TOKEN
            | unsafe_yaml::YAML_FLOW_SEQUENCE_START_TOKEN
            | unsafe_yaml::YAML_FLOW_MAPPING_START_TOKEN => {
                depth += 1;
                if depth > limit {
                    return Err(TooDeep {
                        line: usize::try_from(mark.line).unwrap_or(usize::MAX) + 1,
                        column: usize::try_from(mark.column).unwrap_or(usize::MAX) + 1,
                        limit,
                    });
                }
            }
            unsafe_yaml::YAML_BLOCK_END_TOKEN
            | unsafe_yaml::YAML_FLOW_SEQUENCE_END_TOKEN
            | unsafe_yaml::YAML_FLOW_MAPPING_END_TOKEN => depth = depth.saturating_sub(1),
            unsafe_yaml::YAML_STREAM_END_TOKEN => break,
            _ => {}
        }
    }
    Ok(())
}

/// libyaml's scanner over a borrowed text, one token at a time.
struct Scanner<'a> {
    parser: Box<MaybeUninit<unsafe_yaml::yaml_parser_t>>,
    /// The scanner reads from this text through a raw pointer: it must outlive the parser.
    _text: &'a str,
    done: bool,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        let mut parser = Box::new(MaybeUninit::<unsafe_yaml::yaml_parser_t>::uninit());
        let p = parser.as_mut_ptr();
        // SAFETY: `p` points to memory owned by `parser` for the scanner's whole life;
        // `yaml_parser_initialize` fills it in (it only fails when out of memory, and then
        // leaves it zeroed, which `yaml_parser_delete` accepts); the input pointer stays
        // valid while `text` is borrowed, which outlives the scanner.
        let ok = unsafe {
            let ok = !unsafe_yaml::yaml_parser_initialize(p).fail;
            if ok {
                unsafe_yaml::yaml_parser_set_encoding(p, unsafe_yaml::YAML_UTF8_ENCODING);
                unsafe_yaml::yaml_parser_set_input_string(p, text.as_ptr(), text.len() as u64);
            }
            ok
        };
        Self {
            parser,
            _text: text,
            done: !ok,
        }
    }

    /// The next token's kind and start, or `None` at the end or on a scanner error.
    fn next(&mut self) -> Option<(unsafe_yaml::yaml_token_type_t, unsafe_yaml::yaml_mark_t)> {
        if self.done {
            return None;
        }
        let mut token = MaybeUninit::<unsafe_yaml::yaml_token_t>::uninit();
        // SAFETY: the parser was initialised in `new` and is not used after a failure; the
        // token is initialised by a successful `yaml_parser_scan` and deleted (freeing its
        // strings) before it goes out of scope.
        unsafe {
            if unsafe_yaml::yaml_parser_scan(self.parser.as_mut_ptr(), token.as_mut_ptr()).fail {
                self.done = true;
                return None;
            }
            let t = token.as_mut_ptr();
            let out = ((*t).type_, (*t).start_mark);
            unsafe_yaml::yaml_token_delete(t);
            if out.0 == unsafe_yaml::YAML_STREAM_END_TOKEN {
                self.done = true;
            }
            Some(out)
        }
    }
}

impl Drop for Scanner<'_> {
    fn drop(&mut self) {
        // SAFETY: the parser was initialised (or zeroed by a failed initialisation) in `new`
        // and is deleted exactly once, here.
        unsafe { unsafe_yaml::yaml_parser_delete(self.parser.as_mut_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(n: usize) -> String {
        format!("a: {}{}\n", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn shallow_documents_pass() {
        for doc in [
            "a: 1\n",
            "a: [1, {b: [2]}]\n",
            "- - - x\n",
            "a: |\n  [[[[[[[[[[[[[[\n",
            "a: '[[[['\n",
            "",
            "a: [unclosed\n",
        ] {
            assert_eq!(check_depth_with(doc, 4), Ok(()), "{doc:?}");
        }
        assert!(check_depth(&flow(MAX_DEPTH - 1)).is_ok());
    }

    #[test]
    fn deep_documents_are_refused_with_where_and_the_limit() {
        let e = check_depth(&flow(MAX_DEPTH + 1)).expect_err("too deep");
        assert_eq!((e.line, e.limit), (1, MAX_DEPTH));
        assert!(
            e.to_string()
                .contains("nested too deeply: more than 128 levels"),
            "{e}"
        );
        let block = format!("a:\n{}x\n", "- ".repeat(1000));
        assert!(check_depth(&block).is_err());
        let map = format!("a: {}x{}\n", "{a: ".repeat(1000), "}".repeat(1000));
        assert!(check_depth(&map).is_err());
        let unclosed = format!("a: {}\n", "[".repeat(1000));
        assert!(check_depth(&unclosed).is_err());
    }

    #[test]
    fn a_million_levels_cost_a_scan_of_the_first_few_hundred() {
        let doc = flow(1_000_000);
        let start = std::time::Instant::now();
        let e = from_str::<serde_yaml::Value>(&doc).expect_err("too deep");
        println!("1,000,000 levels refused in {:?}", start.elapsed());
        assert!(matches!(e, YamlError::TooDeep(_)), "{e}");
        assert_eq!(e.line(), Some(1));
    }

    #[test]
    fn the_refusal_agrees_with_serde_yaml() {
        // Whatever serde_yaml accepts passes the check: the check never counts deeper than
        // the real nesting.
        for n in [100, 126, 127, 128, 129, 130] {
            let doc = flow(n);
            let parsed = serde_yaml::from_str::<serde_yaml::Value>(&doc).is_ok();
            if parsed {
                assert!(check_depth(&doc).is_ok(), "{n}");
            }
        }
    }
}
