//! Forges: where upgrade pull requests are opened.
//!
//! One trait, [`Forge`], with four implementations: GitHub (and GitHub Enterprise through
//! its API base URL), GitLab merge requests, Gitea and Forgejo (the same API), and a plain
//! `git` forge for hosts without an API, which only pushes the branch.
//!
//! Branches are always pushed with the `git` command line (gitoxide cannot push yet), from
//! the repo's local mirror. API tokens are read from the environment (or a `token_file`,
//! re-read when its modification time changes, or minted as a GitHub App's installation
//! token by [`app`]) when used, sent only in
//! a header marked sensitive, and never logged or stored; error messages carry the status and
//! the forge's own message, never the request headers.
//!
//! No credential is ever on a command line (any local user can read every process's
//! arguments): the remote URL given to `git` carries no user info, and the token reaches
//! `git` as an `http.extraHeader` in its environment (`GIT_CONFIG_*`), which only the same
//! user (and root) can read, and only for https remotes.

use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::json;

use crate::config::{ForgeConfig, ForgeKind};

pub mod app;
mod comment;
pub mod issues;
mod options;
mod status;
mod token;
pub use comment::{MAX_COMMENT_BYTES, comment_request};
pub use options::{draft_title, open_body};
pub use status::{StatusDraft, StatusState, status_request};

/// A failed forge call.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// The token's environment variable is unset or empty.
    #[error(
        "the {forge} API token is missing: set the environment variable {var} (or change spec_repos.forge.token_env)"
    )]
    MissingToken {
        /// Forge kind.
        forge: &'static str,
        /// The variable.
        var: String,
    },
    /// The `token_file` could not be read or is empty.
    #[error(
        "the {forge} API token file {path} cannot be used: {message}; fix the file or change spec_repos.forge.token_file"
    )]
    TokenFile {
        /// Forge kind.
        forge: &'static str,
        /// The file.
        path: String,
        /// What is wrong (never the contents).
        message: String,
    },
    /// The GitHub App's private key file could not be used.
    #[error(
        "the GitHub App private key {path} cannot be used: {message}; fix the file or change spec_repos.forge.private_key_file"
    )]
    AppKey {
        /// The file.
        path: String,
        /// What is wrong (never the contents).
        message: String,
    },
    /// The request could not be sent or its answer read.
    #[error("{what}: {source}")]
    Http {
        /// The call.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The forge answered with an error status.
    #[error("{what}: the forge answered {status}: {message}")]
    Status {
        /// The call.
        what: &'static str,
        /// HTTP status.
        status: u16,
        /// The forge's message (trimmed).
        message: String,
    },
    /// `git push` or `git ls-remote` failed.
    #[error("git {what} to {url} failed: {message}")]
    Git {
        /// `push`, `push --delete` or `ls-remote`.
        what: &'static str,
        /// Remote, redacted.
        url: String,
        /// git's message (trimmed, redacted).
        message: String,
    },
}

impl ForgeError {
    /// Whether trying again later may help (network trouble, rate limits, server errors).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http { .. } | Self::Git { .. } => true,
            Self::Status {
                status, message, ..
            } => {
                *status == 429
                    || *status >= 500
                    || (*status == 403 && message.to_ascii_lowercase().contains("rate limit"))
            }
            Self::MissingToken { .. } | Self::TokenFile { .. } | Self::AppKey { .. } => false,
        }
    }
}

/// What a pull request says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestDraft {
    /// Source branch (short name).
    pub branch: String,
    /// Target branch (short name).
    pub base: String,
    /// The pull request's title.
    pub title: String,
    /// Body (Markdown).
    pub body: String,
}

/// A pull request as the forge knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// Number (GitHub, Gitea) or iid (GitLab).
    pub number: i64,
    /// Web address.
    pub url: String,
    /// Whether it is open, merged or closed.
    pub state: PullState,
}

/// Where a pull request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullState {
    /// Open: it may still be merged.
    Open,
    /// Merged into its base branch.
    Merged,
    /// Closed without merging.
    Closed,
}

/// A forge's pull-request API. The `git` forge has none: it answers `Ok(None)` where a pull
/// request would be returned.
pub trait Forge: Send + Sync {
    /// Kind, for messages and the state store.
    fn kind(&self) -> ForgeKind;

    /// The open pull request from `branch`, if any: how a lost or rebuilt state store still
    /// finds the pull request it opened, instead of opening a second one.
    fn find_open(
        &self,
        branch: &str,
    ) -> impl Future<Output = Result<Option<PullRequest>, ForgeError>> + Send;

    /// Opens a pull request.
    fn open(
        &self,
        draft: &PullRequestDraft,
    ) -> impl Future<Output = Result<Option<PullRequest>, ForgeError>> + Send;

    /// Replaces the title and body of pull request `number`.
    fn update(
        &self,
        number: i64,
        draft: &PullRequestDraft,
    ) -> impl Future<Output = Result<(), ForgeError>> + Send;

    /// Reads pull request `number`.
    fn get(&self, number: i64) -> impl Future<Output = Result<PullRequest, ForgeError>> + Send;

    /// Comments on pull request `number`, then closes it.
    fn close(
        &self,
        number: i64,
        comment: &str,
    ) -> impl Future<Output = Result<(), ForgeError>> + Send;
}

/// The forge configured for a spec repo.
#[derive(Debug, Clone)]
pub enum AnyForge {
    /// GitHub or GitHub Enterprise.
    GitHub(Api),
    /// GitLab.
    GitLab(Api),
    /// Gitea or Forgejo.
    Gitea(Api),
    /// Push only.
    Git,
}

/// An API client for one repository on one forge.
#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    repo: String,
    token_env: String,
    token: token::TokenSource,
    kind: ForgeKind,
    app: Option<crate::config::GitHubApp>,
}

impl AnyForge {
    /// Builds the client for a spec repo's forge configuration. No request is made.
    #[must_use]
    pub fn new(config: &ForgeConfig) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("protond/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let api = Api {
            client,
            base: config.api_url.clone(),
            repo: config.repo.clone(),
            token_env: config.token_env.clone(),
            token: token::TokenSource::new(config.token_file.clone()),
            kind: config.kind,
            app: config.app.clone(),
        };
        match config.kind {
            ForgeKind::GitHub => Self::GitHub(api),
            ForgeKind::GitLab => Self::GitLab(api),
            ForgeKind::Gitea => Self::Gitea(api),
            ForgeKind::Git => Self::Git,
        }
    }
}

/// Percent-encodes one path segment (GitLab project paths, branch names in queries).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct GitHubPull {
    number: i64,
    #[serde(default)]
    node_id: Option<String>,
    html_url: String,
    state: String,
    #[serde(default)]
    merged: Option<bool>,
    #[serde(default)]
    merged_at: Option<String>,
    #[serde(default)]
    head: Option<GitHubHead>,
}

#[derive(Deserialize)]
struct GitHubHead {
    #[serde(rename = "ref")]
    branch: String,
}

impl GitHubPull {
    fn into_pull(self) -> PullRequest {
        let merged = self.merged.unwrap_or(false) || self.merged_at.is_some();
        PullRequest {
            number: self.number,
            url: self.html_url,
            state: if merged {
                PullState::Merged
            } else if self.state == "open" {
                PullState::Open
            } else {
                PullState::Closed
            },
        }
    }
}

#[derive(Deserialize)]
struct GitLabMr {
    iid: i64,
    web_url: String,
    state: String,
}

impl GitLabMr {
    fn into_pull(self) -> PullRequest {
        PullRequest {
            number: self.iid,
            url: self.web_url,
            state: match self.state.as_str() {
                "opened" | "locked" => PullState::Open,
                "merged" => PullState::Merged,
                _ => PullState::Closed,
            },
        }
    }
}

impl Api {
    /// The API token: the GitHub App's installation token when one is configured, else the
    /// file's or the variable's.
    async fn api_token(&self) -> Result<String, ForgeError> {
        match &self.app {
            Some(app) => app::token(&self.base, &self.repo, app).await,
            None => self.token.read(self.kind, &self.token_env),
        }
    }

    fn headers(&self, token: &str) -> Result<HeaderMap, ForgeError> {
        let mut h = HeaderMap::new();
        let (name, value) = match self.kind {
            ForgeKind::GitLab => ("PRIVATE-TOKEN", token.trim().to_string()),
            ForgeKind::Gitea => ("Authorization", format!("token {}", token.trim())),
            _ => ("Authorization", format!("Bearer {}", token.trim())),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| ForgeError::MissingToken {
            forge: self.kind.as_str(),
            var: format!(
                "{} (it holds characters a header cannot carry)",
                self.token_env
            ),
        })?;
        value.set_sensitive(true);
        h.insert(name, value);
        if self.kind == ForgeKind::GitHub {
            h.insert(
                "Accept",
                HeaderValue::from_static("application/vnd.github+json"),
            );
            h.insert(
                "X-GitHub-Api-Version",
                HeaderValue::from_static("2022-11-28"),
            );
        } else {
            h.insert("Accept", HeaderValue::from_static("application/json"));
        }
        Ok(h)
    }

    fn repo_url(&self, rest: &str) -> String {
        match self.kind {
            ForgeKind::GitLab => format!("{}/projects/{}{rest}", self.base, encode(&self.repo)),
            _ => format!("{}/repos/{}{rest}", self.base, self.repo),
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ForgeError> {
        let again = req.try_clone();
        let token = self.api_token().await?;
        let mut resp = req
            .headers(self.headers(&token)?)
            .send()
            .await
            .map_err(|source| ForgeError::Http { what, source })?;
        // An App token refused before its time (revoked, clocks apart): mint one, try once more.
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED
            && let (Some(app), Some(again)) = (&self.app, again)
        {
            app::forget(&self.base, &self.repo, app, &token).await;
            let token = self.api_token().await?;
            resp = again
                .headers(self.headers(&token)?)
                .send()
                .await
                .map_err(|source| ForgeError::Http { what, source })?;
        }
        read_json(what, resp).await
    }
}

/// A forge's answer read as `T`, or [`ForgeError::Status`] with the forge's own message
/// (its JSON `message` or `error`, else the body; at most 300 characters).
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    resp: reqwest::Response,
) -> Result<T, ForgeError> {
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .or_else(|| v.get("error"))
                    .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
            })
            .unwrap_or(text);
        return Err(ForgeError::Status {
            what,
            status: status.as_u16(),
            message: message.chars().take(300).collect(),
        });
    }
    resp.json::<T>()
        .await
        .map_err(|source| ForgeError::Http { what, source })
}

impl Forge for AnyForge {
    fn kind(&self) -> ForgeKind {
        match self {
            Self::GitHub(_) => ForgeKind::GitHub,
            Self::GitLab(_) => ForgeKind::GitLab,
            Self::Gitea(_) => ForgeKind::Gitea,
            Self::Git => ForgeKind::Git,
        }
    }

    async fn find_open(&self, branch: &str) -> Result<Option<PullRequest>, ForgeError> {
        const WHAT: &str = "list open pull requests";
        match self {
            Self::Git => Ok(None),
            Self::GitHub(api) => {
                let owner = api.repo.split('/').next().unwrap_or_default();
                let req = api.client.get(api.repo_url("/pulls")).query(&[
                    ("state", "open"),
                    ("head", &format!("{owner}:{branch}")),
                    ("per_page", "100"),
                ]);
                let pulls: Vec<GitHubPull> = api.send(WHAT, req).await?;
                Ok(pulls
                    .into_iter()
                    .find(|p| p.head.as_ref().is_none_or(|h| h.branch == branch))
                    .map(GitHubPull::into_pull))
            }
            Self::Gitea(api) => {
                // Gitea's list cannot filter by head branch: page through the open ones.
                for page in 1..=20u32 {
                    let req = api.client.get(api.repo_url("/pulls")).query(&[
                        ("state", "open"),
                        ("limit", "50"),
                        ("page", &page.to_string()),
                    ]);
                    let pulls: Vec<GitHubPull> = api.send(WHAT, req).await?;
                    let last = pulls.len() < 50;
                    if let Some(p) = pulls
                        .into_iter()
                        .find(|p| p.head.as_ref().is_some_and(|h| h.branch == branch))
                    {
                        return Ok(Some(p.into_pull()));
                    }
                    if last {
                        break;
                    }
                }
                Ok(None)
            }
            Self::GitLab(api) => {
                let req = api
                    .client
                    .get(api.repo_url("/merge_requests"))
                    .query(&[("state", "opened"), ("source_branch", branch)]);
                let mrs: Vec<GitLabMr> = api.send(WHAT, req).await?;
                Ok(mrs.into_iter().next().map(GitLabMr::into_pull))
            }
        }
    }

    async fn open(&self, d: &PullRequestDraft) -> Result<Option<PullRequest>, ForgeError> {
        const WHAT: &str = "open a pull request";
        match self {
            Self::Git => Ok(None),
            Self::GitHub(api) | Self::Gitea(api) => {
                let req = api.client.post(api.repo_url("/pulls")).json(&json!({
                    "title": d.title,
                    "head": d.branch,
                    "base": d.base,
                    "body": d.body,
                }));
                let p: GitHubPull = api.send(WHAT, req).await?;
                Ok(Some(p.into_pull()))
            }
            Self::GitLab(api) => {
                let req = api
                    .client
                    .post(api.repo_url("/merge_requests"))
                    .json(&json!({
                        "source_branch": d.branch,
                        "target_branch": d.base,
                        "title": d.title,
                        "description": d.body,
                        "remove_source_branch": true,
                    }));
                let mr: GitLabMr = api.send("open a merge request", req).await?;
                Ok(Some(mr.into_pull()))
            }
        }
    }

    async fn update(&self, number: i64, d: &PullRequestDraft) -> Result<(), ForgeError> {
        const WHAT: &str = "update a pull request";
        match self {
            Self::Git => Ok(()),
            Self::GitHub(api) | Self::Gitea(api) => {
                let req = api
                    .client
                    .patch(api.repo_url(&format!("/pulls/{number}")))
                    .json(&json!({ "title": d.title, "body": d.body }));
                api.send::<serde_json::Value>(WHAT, req).await.map(drop)
            }
            Self::GitLab(api) => {
                let req = api
                    .client
                    .put(api.repo_url(&format!("/merge_requests/{number}")))
                    .json(&json!({ "title": d.title, "description": d.body }));
                api.send::<serde_json::Value>("update a merge request", req)
                    .await
                    .map(drop)
            }
        }
    }

    async fn get(&self, number: i64) -> Result<PullRequest, ForgeError> {
        const WHAT: &str = "read a pull request";
        match self {
            Self::Git => Ok(PullRequest {
                number,
                url: String::new(),
                state: PullState::Open,
            }),
            Self::GitHub(api) | Self::Gitea(api) => {
                let req = api.client.get(api.repo_url(&format!("/pulls/{number}")));
                api.send::<GitHubPull>(WHAT, req)
                    .await
                    .map(GitHubPull::into_pull)
            }
            Self::GitLab(api) => {
                let req = api
                    .client
                    .get(api.repo_url(&format!("/merge_requests/{number}")));
                api.send::<GitLabMr>("read a merge request", req)
                    .await
                    .map(GitLabMr::into_pull)
            }
        }
    }

    async fn close(&self, number: i64, comment: &str) -> Result<(), ForgeError> {
        match self {
            Self::Git => Ok(()),
            Self::GitHub(api) | Self::Gitea(api) => {
                let req = api
                    .client
                    .post(api.repo_url(&format!("/issues/{number}/comments")))
                    .json(&json!({ "body": comment }));
                api.send::<serde_json::Value>("comment on a pull request", req)
                    .await?;
                let req = api
                    .client
                    .patch(api.repo_url(&format!("/pulls/{number}")))
                    .json(&json!({ "state": "closed" }));
                api.send::<serde_json::Value>("close a pull request", req)
                    .await
                    .map(drop)
            }
            Self::GitLab(api) => {
                let req = api
                    .client
                    .post(api.repo_url(&format!("/merge_requests/{number}/notes")))
                    .json(&json!({ "body": comment }));
                api.send::<serde_json::Value>("comment on a merge request", req)
                    .await?;
                let req = api
                    .client
                    .put(api.repo_url(&format!("/merge_requests/{number}")))
                    .json(&json!({ "state_event": "close" }));
                api.send::<serde_json::Value>("close a merge request", req)
                    .await
                    .map(drop)
            }
        }
    }
}

/// Runs `git` with `args` against the mirror at `git_dir`, pushing to or listing `url`.
/// Credentials for https remotes come from `PROTOND_GIT_TOKEN` (as for fetching) or, failing
/// that, the forge token in `token_env`; they travel in an environment-provided config entry,
/// so they appear neither in the process list nor in any message.
async fn git(
    git_dir: &Path,
    url: &str,
    what: &'static str,
    args: &[&str],
    forge: &ForgeConfig,
) -> Result<String, ForgeError> {
    use base64::Engine as _;
    let (token_env, kind) = (forge.token_env.as_str(), forge.kind);
    // The remote as given to git: never with credentials (the config refuses them; this
    // keeps one that slipped through off the process list).
    let remote = if url.starts_with("https://") || url.starts_with("http://") {
        crate::source::redact_url(url)
    } else {
        url.to_owned()
    };
    let mut cmd = tokio::process::Command::new("git");
    // The state password is protond's alone: never a child's.
    cmd.env_remove(crate::state::pg::PASSWORD_ENV);
    cmd.arg("--git-dir")
        .arg(git_dir)
        .args(
            args.iter()
                .map(|a| if *a == url { remote.as_str() } else { a }),
        )
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .kill_on_drop(true);
    // The forge's token can write; the fetch token may be read-only: prefer the former (a
    // GitHub App's installation token first).
    let from_app = match &forge.app {
        Some(app) if url.starts_with("https://") => {
            Some(app::token(&forge.api_url, &forge.repo, app).await?)
        }
        _ => None,
    };
    let from_file = forge.token_file.as_ref().and_then(|_| {
        token::TokenSource::new(forge.token_file.clone())
            .read(kind, "")
            .ok()
    });
    let token = from_app
        .or(from_file)
        .or_else(|| {
            (!token_env.is_empty())
                .then(|| std::env::var(token_env).ok())
                .flatten()
        })
        .filter(|t| !t.trim().is_empty())
        .or_else(|| std::env::var(crate::source::TOKEN_ENV).ok())
        .filter(|t| !t.trim().is_empty());
    let mut secrets = Vec::new();
    // Credentials only over TLS, as for fetching.
    if url.starts_with("https://")
        && let Some(token) = token
    {
        {
            let user = std::env::var(crate::source::TOKEN_USER_ENV)
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| {
                    if kind == ForgeKind::GitLab {
                        "oauth2".into()
                    } else {
                        "x-access-token".into()
                    }
                });
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("{user}:{}", token.trim()).as_bytes());
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
            secrets.push(token.trim().to_string());
            secrets.push(basic);
        }
    }
    let out = cmd.output().await.map_err(|e| ForgeError::Git {
        what,
        url: crate::source::redact_url(url),
        message: format!("could not run git: {e}"),
    })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut message = String::from_utf8_lossy(&out.stderr).trim().to_string();
    for s in &secrets {
        message = message.replace(s.as_str(), "***");
    }
    Err(ForgeError::Git {
        what,
        url: crate::source::redact_url(url),
        message: message.chars().take(500).collect(),
    })
}

/// Force-pushes `commit` from the mirror at `git_dir` to `branch` of `url`.
///
/// # Errors
///
/// [`ForgeError::Git`] when git fails.
pub async fn push_branch(
    git_dir: &Path,
    url: &str,
    commit: &str,
    branch: &str,
    forge: &ForgeConfig,
) -> Result<(), ForgeError> {
    let refspec = format!("+{commit}:refs/heads/{branch}");
    git(
        git_dir,
        url,
        "push",
        &["push", "--quiet", "--no-verify", url, &refspec],
        forge,
    )
    .await
    .map(drop)
}

/// Deletes `branch` of `url`; a branch already gone is not an error.
///
/// # Errors
///
/// [`ForgeError::Git`] when git fails.
pub async fn delete_branch(
    git_dir: &Path,
    url: &str,
    branch: &str,
    forge: &ForgeConfig,
) -> Result<(), ForgeError> {
    if remote_head(git_dir, url, branch, forge).await?.is_none() {
        return Ok(());
    }
    let refspec = format!(":refs/heads/{branch}");
    git(
        git_dir,
        url,
        "push --delete",
        &["push", "--quiet", "--no-verify", url, &refspec],
        forge,
    )
    .await
    .map(drop)
}

/// The commit at the tip of `branch` of `url`, if the branch exists.
///
/// # Errors
///
/// [`ForgeError::Git`] when git fails.
pub async fn remote_head(
    git_dir: &Path,
    url: &str,
    branch: &str,
    forge: &ForgeConfig,
) -> Result<Option<String>, ForgeError> {
    let full = format!("refs/heads/{branch}");
    let out = git(git_dir, url, "ls-remote", &["ls-remote", url, &full], forge).await?;
    Ok(out.lines().find_map(|l| {
        let (sha, name) = l.split_once('\t')?;
        (name == full).then(|| sha.to_string())
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_gitlab_project_paths() {
        assert_eq!(super::encode("group/sub/proj"), "group%2Fsub%2Fproj");
        assert_eq!(super::encode("a-b_c.d"), "a-b_c.d");
    }
}
