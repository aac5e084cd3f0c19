//! Pull-request options: labels, reviewers, assignees, draft mode and auto-merge, per forge.
//!
//! The request bodies are pure ([`open_body`], [`draft_title`], table-tested); the calls
//! that follow an opened pull request (labels, reviewers, auto-merge) report their failures
//! as warnings and never undo the pull request. It must never decide whether a pull request
//! is opened: `propose` does.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AnyForge, Api, ForgeError, GitHubPull, GitLabMr, PullRequest, PullRequestDraft, PullState,
};
use crate::config::{ForgeKind, PullOptions};

/// The title of a draft where the forge marks drafts by a prefix (GitLab `Draft: `, Gitea
/// and Forgejo `WIP: `); GitHub has a draft flag instead.
#[must_use]
pub fn draft_title(kind: ForgeKind, title: &str, draft: bool) -> String {
    match (kind, draft) {
        (ForgeKind::GitLab, true) => format!("Draft: {title}"),
        (ForgeKind::Gitea, true) => format!("WIP: {title}"),
        _ => title.to_string(),
    }
}

/// The body opening pull request `d` with `opts`. GitLab wants user ids (`user_ids`, in the
/// order of reviewers then assignees, unknown users left out) and Gitea label ids
/// (`label_ids`): the caller looks them up first.
#[must_use]
pub fn open_body(
    kind: ForgeKind,
    d: &PullRequestDraft,
    opts: &PullOptions,
    reviewer_ids: &[i64],
    assignee_ids: &[i64],
    label_ids: &[i64],
) -> Value {
    match kind {
        ForgeKind::GitLab => {
            let mut b = json!({
                "source_branch": d.branch,
                "target_branch": d.base,
                "title": d.title,
                "description": d.body,
                "remove_source_branch": true,
            });
            if !opts.labels.is_empty() {
                b["labels"] = json!(opts.labels.join(","));
            }
            if !reviewer_ids.is_empty() {
                b["reviewer_ids"] = json!(reviewer_ids);
            }
            if !assignee_ids.is_empty() {
                b["assignee_ids"] = json!(assignee_ids);
            }
            b
        }
        ForgeKind::Gitea => {
            let mut b = json!({"title": d.title, "head": d.branch, "base": d.base, "body": d.body});
            if !label_ids.is_empty() {
                b["labels"] = json!(label_ids);
            }
            if !opts.assignees.is_empty() {
                b["assignees"] = json!(opts.assignees);
            }
            b
        }
        ForgeKind::GitHub | ForgeKind::Git => {
            let mut b = json!({"title": d.title, "head": d.branch, "base": d.base, "body": d.body});
            if opts.draft {
                b["draft"] = json!(true);
            }
            b
        }
    }
}

/// GitHub's GraphQL endpoint next to REST base `base` (`https://HOST/api/v3` →
/// `https://HOST/api/graphql`, `https://api.github.com` → `https://api.github.com/graphql`).
#[must_use]
pub fn graphql_url(base: &str) -> String {
    match base.strip_suffix("/api/v3") {
        Some(host) => format!("{host}/api/graphql"),
        None => format!("{base}/graphql"),
    }
}

#[derive(Deserialize)]
struct Named {
    id: i64,
    #[serde(default)]
    name: String,
}

impl Api {
    async fn post_json(
        &self,
        what: &'static str,
        url: String,
        body: &Value,
    ) -> Result<Value, ForgeError> {
        self.send::<Value>(what, self.client.post(url).json(body))
            .await
    }

    /// GitLab user ids of `names`; unknown or failed look-ups become warnings.
    async fn gitlab_users(&self, names: &[String], warnings: &mut Vec<ForgeError>) -> Vec<i64> {
        let mut ids = Vec::new();
        for n in names {
            let req = self
                .client
                .get(format!("{}/users", self.base))
                .query(&[("username", n.as_str())]);
            match self.send::<Vec<Named>>("look up a user", req).await {
                Ok(users) => match users.first() {
                    Some(u) => ids.push(u.id),
                    None => warnings.push(ForgeError::Status {
                        what: "look up a user",
                        status: 404,
                        message: format!("no user {n:?}"),
                    }),
                },
                Err(e) => warnings.push(e),
            }
        }
        ids
    }

    /// Gitea label ids of `names`; unknown labels become warnings.
    async fn gitea_labels(&self, names: &[String], warnings: &mut Vec<ForgeError>) -> Vec<i64> {
        if names.is_empty() {
            return Vec::new();
        }
        let req = self
            .client
            .get(self.repo_url("/labels"))
            .query(&[("limit", "50")]);
        let labels = match self.send::<Vec<Named>>("list labels", req).await {
            Ok(l) => l,
            Err(e) => {
                warnings.push(e);
                return Vec::new();
            }
        };
        let mut ids = Vec::new();
        for n in names {
            match labels.iter().find(|l| &l.name == n) {
                Some(l) => ids.push(l.id),
                None => warnings.push(ForgeError::Status {
                    what: "find a label",
                    status: 404,
                    message: format!("the repository has no label {n:?}; create it"),
                }),
            }
        }
        ids
    }
}

/// Pushes `r`'s error, if any, to `warnings`.
fn keep(warnings: &mut Vec<ForgeError>, r: Result<Value, ForgeError>) {
    if let Err(e) = r {
        warnings.push(e);
    }
}

impl AnyForge {
    /// Opens a pull request with `opts`. The follow-up calls' failures (an unknown label or
    /// user, auto-merge refused) come back as warnings next to the opened pull request.
    ///
    /// # Errors
    ///
    /// [`ForgeError`] when the pull request itself cannot be opened.
    pub async fn open_with(
        &self,
        draft: &PullRequestDraft,
        opts: &PullOptions,
    ) -> Result<(Option<PullRequest>, Vec<ForgeError>), ForgeError> {
        let mut warnings = Vec::new();
        match self {
            Self::Git => Ok((None, warnings)),
            Self::GitHub(api) => {
                let body = open_body(api.kind, draft, opts, &[], &[], &[]);
                let pull: GitHubPull = api
                    .send(
                        "open a pull request",
                        api.client.post(api.repo_url("/pulls")).json(&body),
                    )
                    .await?;
                let number = pull.number;
                if !opts.labels.is_empty() {
                    let answer = api
                        .post_json(
                            "add labels",
                            api.repo_url(&format!("/issues/{number}/labels")),
                            &json!({"labels": opts.labels}),
                        )
                        .await;
                    keep(&mut warnings, answer);
                }
                if !opts.assignees.is_empty() {
                    let answer = api
                        .post_json(
                            "add assignees",
                            api.repo_url(&format!("/issues/{number}/assignees")),
                            &json!({"assignees": opts.assignees}),
                        )
                        .await;
                    keep(&mut warnings, answer);
                }
                if !opts.reviewers.is_empty() {
                    let answer = api
                        .post_json(
                            "request reviews",
                            api.repo_url(&format!("/pulls/{number}/requested_reviewers")),
                            &json!({"reviewers": opts.reviewers}),
                        )
                        .await;
                    keep(&mut warnings, answer);
                }
                if opts.auto_merge
                    && let Some(id) = &pull.node_id
                {
                    let query = "mutation($id: ID!) { enablePullRequestAutoMerge(input: {pullRequestId: $id}) { clientMutationId } }";
                    let answer = api
                        .post_json(
                            "enable auto-merge",
                            graphql_url(&api.base),
                            &json!({"query": query, "variables": {"id": id}}),
                        )
                        .await;
                    match answer {
                        Ok(reply) if reply.get("errors").is_some_and(|e| !e.is_null()) => {
                            warnings.push(ForgeError::Status {
                                what: "enable auto-merge",
                                status: 200,
                                message: reply["errors"].to_string().chars().take(300).collect(),
                            });
                        }
                        other => keep(&mut warnings, other),
                    }
                }
                Ok((Some(pull.into_pull()), warnings))
            }
            Self::GitLab(api) => {
                let reviewers = api.gitlab_users(&opts.reviewers, &mut warnings).await;
                let assignees = api.gitlab_users(&opts.assignees, &mut warnings).await;
                let body = open_body(api.kind, draft, opts, &reviewers, &assignees, &[]);
                let mr: GitLabMr = api
                    .send(
                        "open a merge request",
                        api.client.post(api.repo_url("/merge_requests")).json(&body),
                    )
                    .await?;
                if opts.auto_merge {
                    let req = api
                        .client
                        .put(api.repo_url(&format!("/merge_requests/{}/merge", mr.iid)))
                        .json(&json!({"merge_when_pipeline_succeeds": true}));
                    keep(
                        &mut warnings,
                        api.send::<Value>("merge when the pipeline succeeds", req)
                            .await,
                    );
                }
                Ok((Some(mr.into_pull()), warnings))
            }
            Self::Gitea(api) => {
                let labels = api.gitea_labels(&opts.labels, &mut warnings).await;
                let body = open_body(api.kind, draft, opts, &[], &[], &labels);
                let pull: GitHubPull = api
                    .send(
                        "open a pull request",
                        api.client.post(api.repo_url("/pulls")).json(&body),
                    )
                    .await?;
                let number = pull.number;
                if !opts.reviewers.is_empty() {
                    let answer = api
                        .post_json(
                            "request reviews",
                            api.repo_url(&format!("/pulls/{number}/requested_reviewers")),
                            &json!({"reviewers": opts.reviewers}),
                        )
                        .await;
                    keep(&mut warnings, answer);
                }
                if opts.auto_merge {
                    let answer = api
                        .post_json(
                            "merge when checks succeed",
                            api.repo_url(&format!("/pulls/{number}/merge")),
                            &json!({"Do": "merge", "merge_when_checks_succeed": true}),
                        )
                        .await;
                    keep(&mut warnings, answer);
                }
                Ok((Some(pull.into_pull()), warnings))
            }
        }
    }

    /// The open pull request from `branch` into `base`, looked up directly where the API
    /// can (Gitea `GET /repos/{repo}/pulls/{base}/{head}`); elsewhere as [`super::Forge::find_open`].
    ///
    /// # Errors
    ///
    /// [`ForgeError`] when the forge refuses or cannot be reached.
    pub async fn find_open_to(
        &self,
        branch: &str,
        base: &str,
    ) -> Result<Option<PullRequest>, ForgeError> {
        let Self::Gitea(api) = self else {
            return super::Forge::find_open(self, branch).await;
        };
        let head: Vec<String> = branch.split('/').map(super::encode).collect();
        let url = api.repo_url(&format!(
            "/pulls/{}/{}",
            super::encode(base),
            head.join("/")
        ));
        match api
            .send::<GitHubPull>("find the pull request of a branch", api.client.get(url))
            .await
        {
            Ok(p) => Ok(Some(p.into_pull()).filter(|p| p.state == PullState::Open)),
            Err(ForgeError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> PullRequestDraft {
        PullRequestDraft {
            branch: "protond/upgrade/x".into(),
            base: "main".into(),
            title: "Upgrade".into(),
            body: "b".into(),
        }
    }

    fn opts() -> PullOptions {
        PullOptions {
            labels: vec!["deps".into(), "upgrade".into()],
            reviewers: vec!["alice".into()],
            assignees: vec!["bob".into()],
            draft: true,
            auto_merge: true,
            schedule: None,
            dashboard: false,
        }
    }

    #[test]
    fn open_bodies_per_forge() {
        assert_eq!(
            open_body(ForgeKind::GitHub, &d(), &opts(), &[], &[], &[]),
            json!({"title": "Upgrade", "head": "protond/upgrade/x", "base": "main", "body": "b", "draft": true})
        );
        assert_eq!(
            open_body(ForgeKind::GitLab, &d(), &opts(), &[7], &[8], &[]),
            json!({"source_branch": "protond/upgrade/x", "target_branch": "main", "title": "Upgrade", "description": "b",
                   "remove_source_branch": true, "labels": "deps,upgrade", "reviewer_ids": [7], "assignee_ids": [8]})
        );
        assert_eq!(
            open_body(ForgeKind::Gitea, &d(), &opts(), &[], &[], &[3, 4]),
            json!({"title": "Upgrade", "head": "protond/upgrade/x", "base": "main", "body": "b", "labels": [3, 4], "assignees": ["bob"]})
        );
        let plain = open_body(
            ForgeKind::GitHub,
            &d(),
            &PullOptions::default(),
            &[],
            &[],
            &[],
        );
        assert!(plain.get("draft").is_none());
    }

    #[test]
    fn draft_titles_and_graphql_urls() {
        assert_eq!(draft_title(ForgeKind::GitLab, "T", true), "Draft: T");
        assert_eq!(draft_title(ForgeKind::Gitea, "T", true), "WIP: T");
        assert_eq!(draft_title(ForgeKind::GitHub, "T", true), "T");
        assert_eq!(draft_title(ForgeKind::GitLab, "T", false), "T");
        assert_eq!(
            graphql_url("https://api.github.com"),
            "https://api.github.com/graphql"
        );
        assert_eq!(
            graphql_url("https://ghe.example/api/v3"),
            "https://ghe.example/api/graphql"
        );
    }
}
