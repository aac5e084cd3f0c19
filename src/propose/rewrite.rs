//! Rewriting a spec file for a new major version.
//!
//! The result is decided on the parsed document (major bumped, minor pin dropped, removed
//! inputs dropped, new required inputs filled from their defaults or with a placeholder), then
//! written by editing the file's lines so that comments and layout survive. The edited text is
//! parsed again and must equal the decided document; when it does not (flow-style blocks,
//! unusual layouts), the document is written out whole instead, keeping the file's leading
//! comment, and the pull request says formatting was not kept.

use serde_yaml::{Mapping, Value};

use crate::catalog::Bundle;
use crate::catalog::schema::{InputKind, PropertyInfo};
use crate::spec::PLACEHOLDER;

/// One input the rewrite changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputEdit {
    /// A new required input set to its default.
    Filled {
        /// e.g. `instances[0].spec.cpu`.
        path: String,
        /// The default, as JSON.
        value: String,
    },
    /// A new required input without a default: left as a placeholder.
    Placeholder {
        /// The file and position of the problem.
        path: String,
        /// The input's description or title, if any.
        about: Option<String>,
    },
    /// An input the new version no longer has.
    Dropped {
        /// The file and position of the problem.
        path: String,
    },
}

/// A rewritten spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The new text.
    pub text: String,
    /// What changed in the inputs.
    pub edits: Vec<InputEdit>,
    /// The minor pin that was removed, if the spec pinned one.
    pub unpinned: Option<u32>,
    /// Whether comments and layout were kept.
    pub formatting_kept: bool,
}

impl Rewritten {
    /// Whether someone must fill in placeholders before merging.
    #[must_use]
    pub fn has_placeholders(&self) -> bool {
        self.edits
            .iter()
            .any(|e| matches!(e, InputEdit::Placeholder { .. }))
    }
}

/// One input block's changes: its path, the keys dropped, and the keys added (name, value,
/// line comment).
type BlockPlan = (Vec<Seg>, Vec<String>, Vec<(String, Value, String)>);

/// An edit of the file's lines.
enum LineEdit {
    /// Replace line `at` with the text.
    Replace(usize, String),
    /// Remove lines `start..end`.
    Remove(usize, usize),
    /// Insert lines before line `at`.
    Insert(usize, Vec<String>),
}

impl LineEdit {
    fn at(&self) -> usize {
        match self {
            Self::Replace(a, _) | Self::Remove(a, _) | Self::Insert(a, _) => *a,
        }
    }
}

/// Why [`rewrite`] could not rewrite a spec file.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// The file does not parse. The message names the parser's error, as it always has.
    #[error("not valid YAML: {0}")]
    Parse(#[source] serde_yaml::Error),
    /// The file parses, but its top level is not a mapping.
    #[error("the spec file is not a mapping")]
    NotMapping,
    /// The file has no `template:` mapping whose major could be bumped.
    #[error("the spec file has no `template:` header to bump")]
    NoTemplateHeader,
    /// The rewritten document could not be serialised.
    #[error("cannot write YAML: {0}")]
    Write(#[source] serde_yaml::Error),
}

/// Rewrites `text` (a spec file following an older major of `to`'s template) for `to`.
///
/// # Errors
///
/// A [`RewriteError`] when the file is not a YAML mapping with a `template:` header.
pub fn rewrite(text: &str, to: &Bundle) -> Result<Rewritten, RewriteError> {
    let original: Value = serde_yaml::from_str(text).map_err(RewriteError::Parse)?;
    let mut doc = original.clone();
    let root = doc.as_mapping_mut().ok_or(RewriteError::NotMapping)?;
    let header = root
        .get_mut("template")
        .and_then(Value::as_mapping_mut)
        .ok_or(RewriteError::NoTemplateHeader)?;
    header.insert("major".into(), Value::from(to.major));
    let unpinned = header
        .remove("minor")
        .and_then(|v| v.as_u64())
        .and_then(|m| u32::try_from(m).ok());

    let is_env = root.get("proton").and_then(Value::as_str) == Some("EnvironmentSpec");
    let mut blocks: Vec<(Vec<Seg>, InputKind)> = Vec::new();
    let mut edits = Vec::new();
    let mut drop_pipeline = false;
    if is_env {
        blocks.push((vec![Seg::Key("spec")], InputKind::Environment));
    } else {
        if root.contains_key("pipeline") {
            if to.pipeline.is_none() && to.schema.input_type(InputKind::Pipeline).is_none() {
                drop_pipeline = true;
                root.remove("pipeline");
                edits.push(InputEdit::Dropped {
                    path: "pipeline".into(),
                });
            } else {
                blocks.push((vec![Seg::Key("pipeline")], InputKind::Pipeline));
            }
        }
        let n = root
            .get("instances")
            .and_then(Value::as_sequence)
            .map_or(0, Vec::len);
        for i in 0..n {
            blocks.push((
                vec![Seg::Key("instances"), Seg::Index(i), Seg::Key("spec")],
                InputKind::Service,
            ));
        }
    }

    // Decide, per block: which keys go, which are added.
    let mut plans = Vec::new();
    for (path, kind) in &blocks {
        let label = label(path);
        let has_type = to.schema.input_type(*kind).is_some();
        let props = to.schema.properties(*kind);
        let Some(parent) = lookup_parent(&mut doc, path) else {
            continue;
        };
        let key = path.last().and_then(Seg::key).unwrap_or_default();
        let block = parent.entry(key.into()).or_insert(Value::Null);
        if block.is_null() {
            *block = Value::Mapping(Mapping::new());
        }
        let Some(map) = block.as_mapping_mut() else {
            continue;
        };
        let mut drop = Vec::new();
        for k in map.keys() {
            let name = k.as_str().unwrap_or_default();
            if !has_type || !props.iter().any(|p| p.name == name) {
                drop.push(name.to_string());
            }
        }
        for name in &drop {
            map.remove(name.as_str());
            edits.push(InputEdit::Dropped {
                path: format!("{label}.{name}"),
            });
        }
        let mut add = Vec::new();
        for p in props.iter().filter(|p| p.required) {
            if map.contains_key(p.name.as_str()) {
                continue;
            }
            let (value, comment) = fill(p, to);
            match &p.default {
                Some(d) => edits.push(InputEdit::Filled {
                    path: format!("{label}.{}", p.name),
                    value: d.to_string(),
                }),
                None => edits.push(InputEdit::Placeholder {
                    path: format!("{label}.{}", p.name),
                    about: p.description.clone().or_else(|| p.title.clone()),
                }),
            }
            map.insert(p.name.clone().into(), value.clone());
            add.push((p.name.clone(), value, comment));
        }
        plans.push((path.clone(), drop, add));
    }

    if let Some(text) = edit_lines(text, to.major, unpinned.is_some(), drop_pipeline, &plans)
        && serde_yaml::from_str::<Value>(&text).ok().as_ref() == Some(&doc)
    {
        return Ok(Rewritten {
            text,
            edits,
            unpinned,
            formatting_kept: true,
        });
    }
    let body = serde_yaml::to_string(&doc).map_err(RewriteError::Write)?;
    Ok(Rewritten {
        text: format!("{}{body}", leading_comment(text)),
        edits,
        unpinned,
        formatting_kept: false,
    })
}

/// The value and line comment for a new required input.
fn fill(p: &PropertyInfo, to: &Bundle) -> (Value, String) {
    if let Some(d) = &p.default {
        (
            serde_yaml::to_value(d).unwrap_or(Value::Null),
            format!("# added by {} v{}: its default", to.name, to.major),
        )
    } else {
        let about = p
            .description
            .as_deref()
            .or(p.title.as_deref())
            .map(|d| format!(" ({})", d.replace('\n', " ")))
            .unwrap_or_default();
        (
            Value::String(format!(
                "{PLACEHOLDER}: {} {} required by {} v{}",
                p.type_name, p.name, to.name, to.major
            )),
            format!("# TODO: set this {}{about} before merging", p.type_name),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

impl Seg {
    fn key(&self) -> Option<&'static str> {
        match self {
            Self::Key(k) => Some(k),
            Self::Index(_) => None,
        }
    }
}

fn label(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn lookup_parent<'a>(doc: &'a mut Value, path: &[Seg]) -> Option<&'a mut Mapping> {
    let (_, parents) = path.split_last()?;
    let mut cur = doc;
    for s in parents {
        cur = match s {
            Seg::Key(k) => cur.as_mapping_mut()?.get_mut(*k)?,
            Seg::Index(i) => cur.as_sequence_mut()?.get_mut(*i)?,
        };
    }
    cur.as_mapping_mut()
}

/// The comment lines and blank lines at the top of the file.
fn leading_comment(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            out.push_str(line);
            out.push('\n');
        } else {
            break;
        }
    }
    out
}

/// A line's indentation and content, reading a sequence item's `- ` as indentation.
fn shape(line: &str) -> Option<(usize, &str, bool)> {
    let trimmed = line.trim_start_matches(' ');
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let indent = line.len() - trimmed.len();
    if let Some(rest) = trimmed.strip_prefix("- ") {
        let inner = rest.trim_start_matches(' ');
        return Some((indent + 2 + (rest.len() - inner.len()), inner, true));
    }
    Some((indent, trimmed, false))
}

fn is_key(content: &str, key: &str) -> bool {
    [key.to_string(), format!("\"{key}\""), format!("'{key}'")]
        .iter()
        .any(|k| {
            content
                .strip_prefix(k.as_str())
                .is_some_and(|r| r.trim_start().starts_with(':'))
        })
}

/// The value written after `key:` on the same line (comments removed), if any.
fn inline_value(content: &str) -> &str {
    let after = content.split_once(':').map_or("", |(_, v)| v);
    let v = after.split(" #").next().unwrap_or("").trim();
    if v.starts_with('#') { "" } else { v }
}

/// End (exclusive) of the block starting at `line` whose key sits at `indent`: the lines up to
/// the next content line at or left of `indent`, without trailing blank or comment lines.
fn block_end(lines: &[&str], line: usize, indent: usize) -> usize {
    let mut end = line + 1;
    let mut last_content = line + 1;
    while end < lines.len() {
        match shape(lines[end]) {
            Some((i, _, dash)) if i <= indent || (dash && i - 2 <= indent) => break,
            Some(_) => last_content = end + 1,
            None => {}
        }
        end += 1;
    }
    last_content
}

/// Finds `key` among the lines `start..end` at exactly `indent`.
fn find_key(lines: &[&str], start: usize, end: usize, indent: usize, key: &str) -> Option<usize> {
    (start..end).find(|&n| shape(lines[n]).is_some_and(|(i, c, _)| i == indent && is_key(c, key)))
}

/// The line range of sequence item `index` of the block sequence under the key at `line`.
fn seq_item(lines: &[&str], line: usize, end: usize, index: usize) -> Option<(usize, usize)> {
    let mut items = Vec::new();
    let mut dash_indent = None;
    for (n, l) in lines.iter().enumerate().take(end).skip(line + 1) {
        let t = l.trim_start_matches(' ');
        if t.starts_with("- ") || t == "-" {
            let ind = l.len() - t.len();
            match dash_indent {
                None => {
                    dash_indent = Some(ind);
                    items.push(n);
                }
                Some(d) if d == ind => items.push(n),
                _ => {}
            }
        }
    }
    let start = *items.get(index)?;
    let stop = items.get(index + 1).copied().unwrap_or(end);
    Some((start, stop))
}

/// Sets (`Some`) or removes (`None`) the `minor:` of the `template:` header of a spec file,
/// every other line kept as written (comments, order, quoting): the edit of `protond rollback
/// --via pull-request` and `unpin --via pull-request`. `None` when the file has no
/// `template:` header in a layout this understands (flow `{name, major}` or a block).
#[must_use]
pub fn set_minor(text: &str, minor: Option<u32>) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let minor_flow = regex::Regex::new(r",\s*minor\s*:\s*\d+|\bminor\s*:\s*\d+\s*,\s*").ok()?;
    let h = find_key(&lines, 0, lines.len(), 0, "template")?;
    let mut out: Vec<String> = lines.iter().map(|s| (*s).to_string()).collect();
    if inline_value(shape(lines[h])?.1).starts_with('{') {
        let mut l = minor_flow.replace(lines[h], "").into_owned();
        if let Some(m) = minor {
            let close = l.rfind('}')?;
            let before = l[..close].trim_end().len();
            l = format!("{}, minor: {m}{}", &l[..before], &l[close..]);
        }
        out[h] = l;
    } else {
        let end = block_end(&lines, h, 0);
        let child = (h + 1..end).find_map(|n| shape(lines[n]).map(|s| s.0))?;
        let major = find_key(&lines, h + 1, end, child, "major")?;
        match (find_key(&lines, h + 1, end, child, "minor"), minor) {
            (Some(n), Some(m)) => {
                let re = regex::Regex::new(r"(\bminor\s*:\s*)\d+").ok()?;
                out[n] = re
                    .replace(lines[n], format!("${{1}}{m}").as_str())
                    .into_owned();
            }
            (Some(n), None) => {
                out.remove(n);
            }
            (None, Some(m)) => out.insert(major + 1, format!("{}minor: {m}", " ".repeat(child))),
            (None, None) => {}
        }
    }
    let mut text = out.join("\n");
    text.push('\n');
    Some(text)
}

/// Edits the lines; `None` when the layout is not one this understands.
// Line-editing code: `h`, `l`, `i`, `j`… are line indexes and lines, named as in the YAML
// they walk; longer names would hide the arithmetic.
#[allow(clippy::many_single_char_names)]
fn edit_lines(
    text: &str,
    major: u32,
    unpin: bool,
    drop_pipeline: bool,
    plans: &[BlockPlan],
) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut edits: Vec<LineEdit> = Vec::new();
    let major_re = regex::Regex::new(r"(\bmajor\s*:\s*)\d+").ok()?;
    let minor_flow = regex::Regex::new(r",\s*minor\s*:\s*\d+|\bminor\s*:\s*\d+\s*,\s*").ok()?;

    // The header.
    let h = find_key(&lines, 0, lines.len(), 0, "template")?;
    if inline_value(shape(lines[h])?.1).starts_with('{') {
        let mut l = major_re
            .replace(lines[h], format!("${{1}}{major}").as_str())
            .into_owned();
        if unpin {
            l = minor_flow.replace(&l, "").into_owned();
        }
        edits.push(LineEdit::Replace(h, l));
    } else {
        let end = block_end(&lines, h, 0);
        let child = (h + 1..end).find_map(|n| shape(lines[n]).map(|s| s.0))?;
        let m = find_key(&lines, h + 1, end, child, "major")?;
        edits.push(LineEdit::Replace(
            m,
            major_re
                .replace(lines[m], format!("${{1}}{major}").as_str())
                .into_owned(),
        ));
        if unpin {
            let n = find_key(&lines, h + 1, end, child, "minor")?;
            edits.push(LineEdit::Remove(n, n + 1));
        }
    }
    if drop_pipeline {
        let p = find_key(&lines, 0, lines.len(), 0, "pipeline")?;
        edits.push(LineEdit::Remove(p, block_end(&lines, p, 0)));
    }

    for (path, drop, add) in plans {
        if drop.is_empty() && add.is_empty() {
            continue;
        }
        // Locate the block's key line and its indentation.
        let (key_line, key_indent) = match path.as_slice() {
            [Seg::Key(k)] => (find_key(&lines, 0, lines.len(), 0, k)?, 0),
            [Seg::Key(seq), Seg::Index(i), Seg::Key(k)] => {
                let s = find_key(&lines, 0, lines.len(), 0, seq)?;
                let end = block_end(&lines, s, 0);
                let (a, b) = seq_item(&lines, s, end, *i)?;
                let item_indent = shape(lines[a])?.0;
                let l = find_key(&lines, a, b, item_indent, k)?;
                (l, item_indent)
            }
            _ => return None,
        };
        let inline = inline_value(shape(lines[key_line])?.1);
        if !(inline.is_empty() || inline == "~" || inline == "null") {
            return None; // flow style or a scalar: write the document whole
        }
        let end = block_end(&lines, key_line, key_indent);
        let child = (key_line + 1..end)
            .find_map(|n| shape(lines[n]).map(|s| s.0))
            .unwrap_or(key_indent + 2);
        if inline == "~" || inline == "null" {
            let l = lines[key_line];
            let pos = l.find(inline)?;
            edits.push(LineEdit::Replace(
                key_line,
                format!("{}{}", &l[..pos], &l[pos + inline.len()..])
                    .trim_end()
                    .to_string(),
            ));
        }
        for name in drop {
            let n = find_key(&lines, key_line + 1, end, child, name)?;
            // The comment lines right above a dropped input describe it: they go too.
            let mut start = n;
            while start > key_line + 1 && {
                let l = lines[start - 1];
                let t = l.trim_start_matches(' ');
                t.starts_with('#') && l.len() - t.len() == child
            } {
                start -= 1;
            }
            edits.push(LineEdit::Remove(start, block_end(&lines, n, child)));
        }
        if !add.is_empty() {
            let pad = " ".repeat(child);
            let new_lines = add
                .iter()
                .map(|(name, value, comment)| {
                    let v = serde_json::to_string(&serde_json::to_value(value).ok()?).ok()?;
                    Some(format!("{pad}{name}: {v}  {comment}"))
                })
                .collect::<Option<Vec<_>>>()?;
            edits.push(LineEdit::Insert(end, new_lines));
        }
    }

    // Apply from the bottom up; at one position, removals first, insertions last (so a
    // removal starting where lines are inserted does not take them away).
    edits.sort_by_key(|e| {
        std::cmp::Reverse((
            e.at(),
            match e {
                LineEdit::Remove(..) => 2,
                LineEdit::Replace(..) => 1,
                LineEdit::Insert(..) => 0,
            },
        ))
    });
    let mut out: Vec<String> = lines.iter().map(|s| (*s).to_string()).collect();
    for e in edits {
        match e {
            LineEdit::Replace(a, l) => *out.get_mut(a)? = l,
            LineEdit::Remove(a, b) => {
                out.drain(a..b.min(out.len()));
            }
            LineEdit::Insert(a, ls) => {
                let a = a.min(out.len());
                out.splice(a..a, ls);
            }
        }
    }
    let mut text = out.join("\n");
    text.push('\n');
    Some(text)
}
