//! Unknown keys in `proton.toml`: every one of them in one run, each with its key path, its
//! line and the nearest valid key ("did you mean").
//!
//! The `Raw*` structs keep `#[serde(deny_unknown_fields)]`, which stops at the first unknown
//! key; here the parsed document (with its spans) is deserialized again and again, each
//! unknown key named and taken out, until none is left. A config with unknown keys is still
//! refused: this module only lists them all. It must never accept an unknown key, nor read
//! anything but the text it is given.

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, Deserializer};

use super::{ConfigError, line_of};

/// Parses `text` as a `T`: the value read without the unknown keys (`None` when another
/// problem stops the parse), and one error per unknown key (and per other problem).
pub(super) fn parse<T: DeserializeOwned>(text: &str, file: &str) -> (Option<T>, Vec<ConfigError>) {
    let plain = |e: &toml::de::Error| ConfigError {
        file: file.into(),
        key: e.span().map_or_else(
            || ".".into(),
            |s| format!("line {}", line_of(text, s.start)),
        ),
        message: e.message().trim_end().to_string(),
    };
    let mut root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => return (None, vec![plain(&e)]),
    };
    // The keys as read (in key order, not the file's): sorted by line when done.
    let mut unknown = Vec::new();
    let done = |mut unknown: Vec<(usize, ConfigError)>, other: Option<ConfigError>| {
        unknown.sort_by_key(|(line, _)| *line);
        unknown.into_iter().map(|(_, e)| e).chain(other).collect()
    };
    loop {
        let e = match T::deserialize(Deserializer::from(root.clone())) {
            Ok(value) => return (Some(value), done(unknown, None)),
            Err(e) => e,
        };
        let field = unknown_field(e.message()).zip(e.span());
        let taken = field.and_then(|(expected, span)| {
            take_key(root.get_mut(), &span, "").map(|(key, name)| (key, name, expected, span))
        });
        let Some((key, name, expected, span)) = taken else {
            return (None, done(unknown, Some(plain(&e))));
        };
        let line = line_of(text, span.start);
        let message = format!("unknown key on line {line}; {}", advice(&name, &expected));
        unknown.push((
            line,
            ConfigError {
                file: file.into(),
                key,
                message,
            },
        ));
    }
}

/// The valid keys of serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`
/// or `b`", "there are no fields"); `None` for any other message.
fn unknown_field(message: &str) -> Option<Vec<String>> {
    let rest = message.strip_prefix("unknown field `")?;
    let expected = match rest.rsplit_once("`, expected ") {
        Some((_, expected)) => expected,
        None if rest.ends_with("`, there are no fields") => "",
        None => return None,
    };
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// What to do about unknown key `name` where `expected` are the valid ones.
fn advice(name: &str, expected: &[String]) -> String {
    let nearest = expected
        .iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), k))
        .min()
        .filter(|(d, k)| *d <= 2.max(k.chars().count() / 3));
    match (nearest, expected) {
        (Some((_, k)), _) => format!("did you mean `{k}`? Rename it, or remove it"),
        (None, []) => "this table takes no keys; remove it".into(),
        (None, keys) => format!(
            "remove it, or use one of the valid keys here: {}",
            keys.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Removes the key written at `span` from `table` (or a table or array of tables inside it,
/// `at` being `table`'s path): its path (e.g. `spec_repos[1].forge.kind`) and its name.
fn take_key(
    table: &mut DeTable<'_>,
    span: &std::ops::Range<usize>,
    at: &str,
) -> Option<(String, String)> {
    let path = |name: &str| {
        if at.is_empty() {
            name.to_owned()
        } else {
            format!("{at}.{name}")
        }
    };
    if let Some(name) = table
        .keys()
        .find(|k| k.span() == *span)
        .map(|k| k.get_ref().to_string())
    {
        table.remove(name.as_str());
        return Some((path(&name), name));
    }
    for (k, v) in table.iter_mut() {
        let here = path(k.get_ref());
        let found = match v.get_mut() {
            DeValue::Table(t) => take_key(t, span, &here),
            DeValue::Array(items) => items.iter_mut().enumerate().find_map(|(i, item)| match item
                .get_mut()
            {
                DeValue::Table(t) => take_key(t, span, &format!("{here}[{i}]")),
                _ => None,
            }),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_give_the_valid_keys() {
        let keys = |m: &str| unknown_field(m);
        assert_eq!(
            keys("unknown field `kidn`, expected one of `kind`, `api_url`"),
            Some(vec!["kind".to_string(), "api_url".to_string()])
        );
        assert_eq!(
            keys("unknown field `x`, expected `a` or `b`"),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            keys("unknown field `x`, expected `a`"),
            Some(vec!["a".to_string()])
        );
        assert_eq!(keys("unknown field `x`, there are no fields"), Some(vec![]));
        assert_eq!(keys("invalid type: string \"a\", expected u64"), None);
    }

    #[test]
    fn advice_suggests_only_near_keys() {
        let keys: Vec<String> = ["kind", "api_url", "repo", "token_env"]
            .map(str::to_owned)
            .into();
        assert_eq!(
            advice("kidn", &keys),
            "did you mean `kind`? Rename it, or remove it"
        );
        assert_eq!(
            advice("tokenenv", &keys),
            "did you mean `token_env`? Rename it, or remove it"
        );
        assert_eq!(
            advice("colour", &keys),
            "remove it, or use one of the valid keys here: `kind`, `api_url`, `repo`, `token_env`"
        );
        assert_eq!(advice("x", &[]), "this table takes no keys; remove it");
    }
}
