//! Pull-request comments: `protond preview --comment <PR>` posts its Markdown report to the
//! template repo's pull request (GitHub and Gitea `POST /repos/{repo}/issues/{n}/comments`,
//! GitLab `POST /projects/{id}/merge_requests/{n}/notes`).
//!
//! The request shapes are pure ([`comment_request`], table-tested); the token travels only in
//! the forge client's sensitive header. It must never decide what is posted or when: the
//! preview command does.

use serde_json::{Value, json};

use super::{AnyForge, ForgeError, encode};
use crate::config::ForgeKind;

/// The longest comment body sent, in bytes (GitHub refuses bodies over 65,536 characters).
pub const MAX_COMMENT_BYTES: usize = 60_000;

/// The request commenting `body` on pull request `number`: the URL under `base` and the JSON
/// body (`None` for the `git` forge, which has no API).
#[must_use]
pub fn comment_request(
    kind: ForgeKind,
    base: &str,
    repo: &str,
    number: u64,
    body: &str,
) -> Option<(String, Value)> {
    let url = match kind {
        ForgeKind::Git => return None,
        ForgeKind::GitLab => {
            format!(
                "{base}/projects/{}/merge_requests/{number}/notes",
                encode(repo)
            )
        }
        ForgeKind::GitHub | ForgeKind::Gitea => {
            format!("{base}/repos/{repo}/issues/{number}/comments")
        }
    };
    Some((url, json!({ "body": body })))
}

impl AnyForge {
    /// Comments `body` on pull request (merge request) `number`; `false` for the `git`
    /// forge, which has no API to comment through (nothing is sent).
    ///
    /// # Errors
    ///
    /// [`ForgeError`] when the token is missing or the forge refuses or cannot be reached.
    pub async fn comment(&self, number: u64, body: &str) -> Result<bool, ForgeError> {
        let api = match self {
            Self::Git => return Ok(false),
            Self::GitHub(api) | Self::GitLab(api) | Self::Gitea(api) => api,
        };
        let Some((url, body)) = comment_request(api.kind, &api.base, &api.repo, number, body)
        else {
            return Ok(false);
        };
        let req = api.client.post(url).json(&body);
        api.send::<Value>("comment on a pull request", req)
            .await
            .map(|_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_shapes_per_forge() {
        let github = comment_request(
            ForgeKind::GitHub,
            "https://api.github.com",
            "acme/t",
            7,
            "hi",
        );
        assert_eq!(
            github,
            Some((
                "https://api.github.com/repos/acme/t/issues/7/comments".to_string(),
                json!({"body": "hi"})
            ))
        );
        let gitea = comment_request(
            ForgeKind::Gitea,
            "https://git.example/api/v1",
            "acme/t",
            3,
            "x",
        );
        assert_eq!(
            gitea.map(|(u, _)| u).as_deref(),
            Some("https://git.example/api/v1/repos/acme/t/issues/3/comments")
        );
        let gitlab = comment_request(
            ForgeKind::GitLab,
            "https://gl.example/api/v4",
            "acme/tpl",
            12,
            "x",
        );
        assert_eq!(
            gitlab.map(|(u, _)| u).as_deref(),
            Some("https://gl.example/api/v4/projects/acme%2Ftpl/merge_requests/12/notes")
        );
        assert_eq!(comment_request(ForgeKind::Git, "", "acme/t", 1, "x"), None);
    }
}
