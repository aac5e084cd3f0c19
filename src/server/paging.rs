//! Cursor pagination of the API's lists: `?limit=N&after=CURSOR`. Items are ordered by a
//! key (the resource id, the service name, the template and version, or, for deployments,
//! the id, newest first); a page holds the items after the cursor, and the cursor of the
//! next page is the key of the page's last item, so items recorded or removed between two
//! requests never make a page skip or repeat one.
//!
//! The body stays the JSON array of before; the next page is named by a `Link: <…>;
//! rel="next"` header and `X-Next-Cursor`. A request with `after` (empty for the first page)
//! gets `{"items": [...], "next": "CURSOR" | null}` instead. This module only slices and
//! answers; it never reads the store.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// Items per page when `limit` is not given: the whole list of a small fleet, as before.
pub(super) const DEFAULT_LIMIT: usize = 100;
/// The most items a page holds, whatever `limit` asks.
pub(super) const MAX_LIMIT: usize = 1000;

/// `?limit=&after=`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct PageQuery {
    /// Items per page: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
    pub(super) limit: Option<usize>,
    /// The cursor: the previous page's `next`. Present (even empty): the envelope answer.
    pub(super) after: Option<String>,
}

impl PageQuery {
    /// The page size, within bounds.
    pub(super) fn size(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }

    /// The cursor, if a page after the first is asked for.
    pub(super) fn cursor(&self) -> Option<&str> {
        self.after.as_deref().filter(|c| !c.is_empty())
    }
}

/// The page of `items` (in any order) after `after` by `key`, sorted by key; with the
/// cursor of the next page when more follow.
pub(super) fn slice<T>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> String,
    after: Option<&str>,
    size: usize,
) -> (Vec<T>, Option<String>) {
    items.sort_by_cached_key(|i| key(i));
    let mut rest: Vec<T> = items
        .into_iter()
        .filter(|i| after.is_none_or(|a| key(i).as_str() > a))
        .collect();
    if rest.len() <= size {
        return (rest, None);
    }
    rest.truncate(size);
    let next = rest.last().map(&key);
    (rest, next)
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The answer for one page of `path`: the array (or the envelope when `after` was given),
/// and the `Link` and `X-Next-Cursor` headers when more follow. `extra` are the other query
/// parameters the next page keeps.
pub(super) fn answer(
    path: &str,
    extra: &[(&str, &str)],
    q: &PageQuery,
    items: Vec<Value>,
    next: Option<String>,
) -> Response {
    let mut res = if q.after.is_some() {
        axum::Json(json!({ "items": items, "next": next })).into_response()
    } else {
        axum::Json(items).into_response()
    };
    if let Some(cursor) = next {
        let mut query: Vec<String> = extra
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        query.push(format!("limit={}", q.size()));
        query.push(format!("after={}", encode(&cursor)));
        let link = format!("<{path}?{}>; rel=\"next\"", query.join("&"));
        if let Ok(v) = HeaderValue::from_str(&link) {
            res.headers_mut().insert(header::LINK, v);
        }
        if let Ok(v) = HeaderValue::from_str(&encode(&cursor)) {
            res.headers_mut().insert("x-next-cursor", v);
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_every_item_once() {
        let items: Vec<u32> = (0..25).rev().collect();
        let key = |i: &u32| format!("{i:03}");
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..10 {
            let (page, next) = slice(items.clone(), key, after.as_deref(), 10);
            seen.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, (0..25).collect::<Vec<_>>());
    }

    #[test]
    fn slices_by_table() {
        // (items, after, size) -> (page, next)
        type Case<'a> = (
            &'a [&'a str],
            Option<&'a str>,
            usize,
            &'a [&'a str],
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            (&[], None, 3, &[], None),
            (&["b", "a"], None, 3, &["a", "b"], None),
            (&["a", "b", "c"], None, 3, &["a", "b", "c"], None),
            (&["a", "b", "c", "d"], None, 3, &["a", "b", "c"], Some("c")),
            (&["a", "b", "c", "d"], Some("c"), 3, &["d"], None),
            // The cursor's item was removed in between: the page starts after where it was.
            (&["a", "b", "d"], Some("c"), 1, &["d"], None),
            (&["a", "b"], Some("z"), 3, &[], None),
        ];
        for (items, after, size, want, next) in cases {
            let (page, n) = slice(items.to_vec(), |s| (*s).to_string(), *after, *size);
            assert_eq!(&page, want, "{items:?} after {after:?}");
            assert_eq!(n.as_deref(), *next, "{items:?} after {after:?}");
        }
    }

    #[test]
    fn sizes_are_bounded() {
        let q = |limit| PageQuery { limit, after: None };
        assert_eq!(q(None).size(), DEFAULT_LIMIT);
        assert_eq!(q(Some(0)).size(), 1);
        assert_eq!(q(Some(5000)).size(), MAX_LIMIT);
        assert_eq!(encode("service_instance/a b"), "service_instance%2Fa%20b");
    }
}
