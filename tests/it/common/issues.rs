//! Issues on the fake GitHub and Gitea (the dashboard's): listing the open ones (GitHub lists
//! pull requests among them, marked `pull_request`), opening one (a second open issue with the
//! same title is a violation) and replacing an issue's body (nothing else may change).

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::forge::{Inner, Kind};

/// An issue the fake holds.
#[derive(Debug, Clone)]
pub struct Issue {
    pub number: i64,
    pub title: String,
    pub body: String,
    /// Times its body was replaced.
    pub edits: usize,
}

/// Issue numbers start here, apart from pull requests'.
const FIRST: i64 = 1000;

/// Answers the issue endpoints of `repo` on a `kind` forge under `prefix` (`None` for any
/// other request), given the method, the path and the request line.
pub fn handle(
    g: &mut Inner,
    (kind, prefix, repo): (Kind, &str, &str),
    (method, path, line): (&Method, &str, &str),
    query: &[(String, String)],
    body: &Value,
) -> Option<Response> {
    if kind == Kind::GitLab {
        return None;
    }
    let base = format!("{prefix}/repos/{repo}/issues");
    let fail = |g: &mut Inner, what: String| {
        g.violations.push(format!("{line}: {what}"));
        Some(
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({ "message": what })),
            )
                .into_response(),
        )
    };
    if path == base && *method == Method::GET {
        if !query.iter().any(|(k, v)| k == "state" && v == "open") {
            return fail(g, "issues listed without state=open".into());
        }
        let mut list: Vec<Value> = g
            .issues
            .iter()
            .map(|i| json!({"number": i.number, "title": i.title, "body": i.body, "state": "open"}))
            .collect();
        if kind == Kind::GitHub {
            list.extend(g.prs.iter().filter(|p| p.state == "open").map(|p| {
                json!({"number": p.number, "title": p.title, "body": p.body, "state": "open", "pull_request": {}})
            }));
        }
        return Some(axum::Json(Value::Array(list)).into_response());
    }
    if path == base && *method == Method::POST {
        let (Some(title), Some(text)) = (body["title"].as_str(), body["body"].as_str()) else {
            return fail(g, "an issue without title or body".into());
        };
        if g.issues.iter().any(|i| i.title == title) {
            return fail(g, format!("a second open issue titled {title:?}"));
        }
        let issue = Issue {
            number: FIRST + i64::try_from(g.issues.len()).expect("few issues"),
            title: title.into(),
            body: text.into(),
            edits: 0,
        };
        let answer = json!({"number": issue.number, "title": issue.title, "body": issue.body});
        g.issues.push(issue);
        return Some((StatusCode::CREATED, axum::Json(answer)).into_response());
    }
    let number: i64 = path.strip_prefix(&format!("{base}/"))?.parse().ok()?;
    let i = g.issues.iter().position(|i| i.number == number)?;
    if *method != Method::PATCH {
        return fail(g, "unexpected method on an issue".into());
    }
    let Some(obj) = body.as_object() else {
        return fail(g, "an edit without a JSON object".into());
    };
    if obj.keys().any(|k| k != "body") {
        return fail(g, format!("an edit of more than the body: {body}"));
    }
    let Some(text) = body["body"].as_str() else {
        return fail(g, "an edit without a body".into());
    };
    let issue = &mut g.issues[i];
    issue.body = text.into();
    issue.edits += 1;
    let answer = json!({"number": issue.number, "title": issue.title, "body": issue.body});
    Some(axum::Json(answer).into_response())
}
