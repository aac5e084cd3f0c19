//! Issues, for the per-repo dashboard (`propose::dashboard`): the open issue with a given
//! title, opening one, and replacing its body, on GitHub, Gitea/Forgejo and GitLab. The
//! request shapes are pure ([`find_query`], [`create_body`], [`edit_body`], table-tested).
//!
//! It must never decide what an issue says or when it changes: the dashboard does.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{AnyForge, ForgeError};
use crate::config::ForgeKind;

/// An issue as the forge knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Number (GitHub, Gitea) or iid (GitLab).
    pub number: i64,
    /// Its body (Markdown).
    pub body: String,
}

/// Pages of open issues searched for a title, at most.
const MAX_PAGES: u32 = 10;

/// Issues per page of [`find_query`].
fn page_size(kind: ForgeKind) -> usize {
    if kind == ForgeKind::Gitea { 50 } else { 100 }
}

/// The query listing page `page` of open issues whose title may be `title`.
#[must_use]
pub fn find_query(kind: ForgeKind, title: &str, page: u32) -> Vec<(&'static str, String)> {
    let page = page.to_string();
    match kind {
        ForgeKind::GitLab => vec![
            ("state", "opened".into()),
            ("search", title.into()),
            ("in", "title".into()),
            ("per_page", "100".into()),
            ("page", page),
        ],
        ForgeKind::Gitea => vec![
            ("state", "open".into()),
            ("type", "issues".into()),
            ("q", title.into()),
            ("limit", "50".into()),
            ("page", page),
        ],
        ForgeKind::GitHub | ForgeKind::Git => vec![
            ("state", "open".into()),
            ("per_page", "100".into()),
            ("page", page),
        ],
    }
}

/// The body opening an issue.
#[must_use]
pub fn create_body(kind: ForgeKind, title: &str, body: &str) -> Value {
    match kind {
        ForgeKind::GitLab => json!({ "title": title, "description": body }),
        _ => json!({ "title": title, "body": body }),
    }
}

/// The body replacing an issue's text.
#[must_use]
pub fn edit_body(kind: ForgeKind, body: &str) -> Value {
    match kind {
        ForgeKind::GitLab => json!({ "description": body }),
        _ => json!({ "body": body }),
    }
}

#[derive(Deserialize)]
struct Listed {
    #[serde(default)]
    number: Option<i64>,
    #[serde(default)]
    iid: Option<i64>,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    description: Option<String>,
    /// GitHub lists pull requests among issues; they carry this key.
    #[serde(default)]
    pull_request: Option<Value>,
}

impl Listed {
    fn into_issue(self) -> Option<Issue> {
        Some(Issue {
            number: self.iid.or(self.number)?,
            body: self.body.or(self.description).unwrap_or_default(),
        })
    }
}

impl AnyForge {
    /// The open issue titled exactly `title`, if any (the `git` forge has none).
    ///
    /// # Errors
    ///
    /// [`ForgeError`] when the forge refuses or cannot be reached.
    pub async fn find_issue(&self, title: &str) -> Result<Option<Issue>, ForgeError> {
        let (Self::GitHub(api) | Self::GitLab(api) | Self::Gitea(api)) = self else {
            return Ok(None);
        };
        for page in 1..=MAX_PAGES {
            let req = api
                .client
                .get(api.repo_url("/issues"))
                .query(&find_query(api.kind, title, page));
            let listed: Vec<Listed> = api.send("list open issues", req).await?;
            let last = listed.len() < page_size(api.kind);
            if let Some(found) = listed
                .into_iter()
                .find(|i| i.title == title && i.pull_request.is_none())
            {
                return Ok(found.into_issue());
            }
            if last {
                break;
            }
        }
        Ok(None)
    }

    /// Opens an issue; `None` for the `git` forge.
    ///
    /// # Errors
    ///
    /// [`ForgeError`] when the forge refuses or cannot be reached.
    pub async fn create_issue(&self, title: &str, body: &str) -> Result<Option<Issue>, ForgeError> {
        let (Self::GitHub(api) | Self::GitLab(api) | Self::Gitea(api)) = self else {
            return Ok(None);
        };
        let req = api
            .client
            .post(api.repo_url("/issues"))
            .json(&create_body(api.kind, title, body));
        let created: Listed = api.send("open an issue", req).await?;
        Ok(created.into_issue())
    }

    /// Replaces the body of issue `number`.
    ///
    /// # Errors
    ///
    /// [`ForgeError`] when the forge refuses or cannot be reached.
    pub async fn edit_issue(&self, number: i64, body: &str) -> Result<(), ForgeError> {
        let (Self::GitHub(api) | Self::GitLab(api) | Self::Gitea(api)) = self else {
            return Ok(());
        };
        let url = api.repo_url(&format!("/issues/{number}"));
        let req = match api.kind {
            ForgeKind::GitLab => api.client.put(url),
            _ => api.client.patch(url),
        }
        .json(&edit_body(api.kind, body));
        api.send::<Value>("edit an issue", req).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_shapes_per_forge() {
        assert_eq!(
            find_query(ForgeKind::GitHub, "t", 2),
            [
                ("state", "open".to_string()),
                ("per_page", "100".into()),
                ("page", "2".into())
            ]
        );
        assert!(find_query(ForgeKind::GitLab, "t", 1).contains(&("in", "title".into())));
        assert!(find_query(ForgeKind::Gitea, "t", 1).contains(&("type", "issues".into())));
        assert_eq!(
            create_body(ForgeKind::GitLab, "t", "b"),
            json!({"title": "t", "description": "b"})
        );
        assert_eq!(
            create_body(ForgeKind::Gitea, "t", "b"),
            json!({"title": "t", "body": "b"})
        );
        assert_eq!(edit_body(ForgeKind::GitHub, "b"), json!({"body": "b"}));
        assert_eq!(
            edit_body(ForgeKind::GitLab, "b"),
            json!({"description": "b"})
        );
    }

    #[test]
    fn pull_requests_listed_among_issues_are_not_issues() {
        let listed: Vec<Listed> = serde_json::from_value(json!([
            {"number": 3, "title": "x", "body": "b", "pull_request": {}},
            {"iid": 4, "title": "x", "description": "d"}
        ]))
        .expect("json");
        assert!(listed[0].pull_request.is_some());
        let Listed { iid, .. } = &listed[1];
        assert_eq!(*iid, Some(4));
        let issue = listed.into_iter().nth(1).and_then(Listed::into_issue);
        assert_eq!(
            issue,
            Some(Issue {
                number: 4,
                body: "d".into()
            })
        );
    }
}
