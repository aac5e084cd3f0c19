//! Commit statuses: the `protond/<resource>` check a deployment sets on the spec commit that
//! caused it (GitHub and Gitea `POST /repos/{repo}/statuses/{sha}`, GitLab `POST
//! /projects/{id}/statuses/{sha}`).
//!
//! The request shapes are pure ([`status_request`], table-tested); the token travels only in
//! the forge client's sensitive header. It must never decide when a status is set: the
//! notification worker does.

use serde_json::{Value, json};

use super::{AnyForge, ForgeError, encode};
use crate::config::ForgeKind;

/// Where a deployment stands, as a commit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusState {
    /// Started, not finished.
    Pending,
    /// Deployed (or deleted).
    Success,
    /// Failed, or met a stack that is not protond's.
    Failure,
}

/// A commit status to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusDraft {
    /// The state.
    pub state: StatusState,
    /// The check's name, e.g. `protond/service_instance/payments/payments-dev`.
    pub context: String,
    /// One line (cut to 140 characters, GitHub's limit).
    pub description: String,
    /// The status page, when configured.
    pub target_url: Option<String>,
}

/// The longest description GitHub accepts.
const MAX_DESCRIPTION: usize = 140;

/// The request setting `draft` on commit `sha`: the URL under `base` and the JSON body.
#[must_use]
pub fn status_request(
    kind: ForgeKind,
    base: &str,
    repo: &str,
    sha: &str,
    draft: &StatusDraft,
) -> (String, Value) {
    let description: String = if draft.description.chars().count() > MAX_DESCRIPTION {
        let mut d: String = draft
            .description
            .chars()
            .take(MAX_DESCRIPTION - 1)
            .collect();
        d.push('…');
        d
    } else {
        draft.description.clone()
    };
    match kind {
        ForgeKind::GitLab => {
            let state = match draft.state {
                StatusState::Pending => "pending",
                StatusState::Success => "success",
                StatusState::Failure => "failed",
            };
            let mut body = json!({
                "state": state,
                "name": draft.context,
                "description": description,
            });
            if let Some(u) = &draft.target_url {
                body["target_url"] = json!(u);
            }
            (
                format!("{base}/projects/{}/statuses/{sha}", encode(repo)),
                body,
            )
        }
        ForgeKind::GitHub | ForgeKind::Gitea | ForgeKind::Git => {
            let state = match draft.state {
                StatusState::Pending => "pending",
                StatusState::Success => "success",
                StatusState::Failure => "failure",
            };
            let mut body = json!({
                "state": state,
                "context": draft.context,
                "description": description,
            });
            if let Some(u) = &draft.target_url {
                body["target_url"] = json!(u);
            }
            (format!("{base}/repos/{repo}/statuses/{sha}"), body)
        }
    }
}

impl AnyForge {
    /// Sets a commit status on `sha`; the `git` forge has no API and does nothing.
    ///
    /// # Errors
    ///
    /// [`ForgeError`] when the token is missing or the forge refuses or cannot be reached.
    pub async fn set_status(&self, sha: &str, draft: &StatusDraft) -> Result<(), ForgeError> {
        let api = match self {
            Self::Git => return Ok(()),
            Self::GitHub(api) | Self::GitLab(api) | Self::Gitea(api) => api,
        };
        let (url, body) = status_request(api.kind, &api.base, &api.repo, sha, draft);
        let req = api.client.post(url).json(&body);
        api.send::<Value>("set a commit status", req)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(state: StatusState, description: &str) -> StatusDraft {
        StatusDraft {
            state,
            context: "protond/environment/dev".into(),
            description: description.into(),
            target_url: Some("https://protond.example/".into()),
        }
    }

    #[test]
    fn request_shapes_per_forge() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let (url, body) = status_request(
            ForgeKind::GitHub,
            "https://api.github.com",
            "acme/envs",
            sha,
            &draft(StatusState::Pending, "Deploying"),
        );
        assert_eq!(
            url,
            format!("https://api.github.com/repos/acme/envs/statuses/{sha}")
        );
        assert_eq!(
            body,
            json!({"state": "pending", "context": "protond/environment/dev", "description": "Deploying", "target_url": "https://protond.example/"})
        );
        let (url, body) = status_request(
            ForgeKind::Gitea,
            "https://git.example/api/v1",
            "acme/envs",
            sha,
            &StatusDraft {
                target_url: None,
                ..draft(StatusState::Failure, "boom")
            },
        );
        assert_eq!(
            url,
            format!("https://git.example/api/v1/repos/acme/envs/statuses/{sha}")
        );
        assert_eq!(
            body,
            json!({"state": "failure", "context": "protond/environment/dev", "description": "boom"})
        );
        let (url, body) = status_request(
            ForgeKind::GitLab,
            "https://gitlab.example/api/v4",
            "platform/envs",
            sha,
            &draft(StatusState::Failure, "boom"),
        );
        assert_eq!(
            url,
            format!("https://gitlab.example/api/v4/projects/platform%2Fenvs/statuses/{sha}")
        );
        assert_eq!(
            body,
            json!({"state": "failed", "name": "protond/environment/dev", "description": "boom", "target_url": "https://protond.example/"})
        );
        let (_, body) = status_request(
            ForgeKind::GitLab,
            "b",
            "r",
            sha,
            &draft(StatusState::Success, "ok"),
        );
        assert_eq!(body["state"], "success");
    }

    #[test]
    fn long_descriptions_are_cut_to_the_limit() {
        let (_, body) = status_request(
            ForgeKind::GitHub,
            "b",
            "r",
            "s",
            &draft(StatusState::Failure, &"é".repeat(300)),
        );
        let d = body["description"].as_str().expect("text");
        assert_eq!(d.chars().count(), MAX_DESCRIPTION);
        assert!(d.ends_with('…'));
    }
}
