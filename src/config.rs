//! `proton.toml`: the daemon's configuration.
//!
//! Loaded in two stages: [`RawConfig`] is exactly the file (serde, unknown keys rejected,
//! every one of them listed by `unknown`), and [`Config::compile`] checks it as a whole and
//! reports every problem at once. `local` checks local repo paths for `check-config` only
//! (their metadata). Nothing here touches git, AWS or the state store.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

mod freeze;
pub mod ha;
mod local;
mod notifications;
pub mod quarantine;
mod unknown;
pub use freeze::{Freeze, RawFreeze};
pub use ha::{Ha, RawHa, shard_of};
pub use notifications::{
    Notifications, NotifyEvent, NotifyTarget, RawNotifications, RawNotifyTarget, SecretSource,
    Transport,
};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// This installation's name, tagged on every stack it creates (`protond:installation`).
    /// Default: a name generated at first start and recorded in the state store.
    #[serde(default)]
    pub installation: Option<String>,
    /// Where state lives: `sqlite://path` (default `sqlite://.protond/state.db`), or
    /// `postgres://user@host:port/db?sslmode=…` (no password in it).
    #[serde(default)]
    pub state: Option<String>,
    /// A file holding the `PostgreSQL` password (else `PROTOND_STATE_PASSWORD`), read at start.
    #[serde(default)]
    pub state_password_file: Option<PathBuf>,
    /// High availability and sharding on `PostgreSQL` (`[ha]`).
    #[serde(default)]
    pub ha: Option<ha::RawHa>,
    /// Folder for git caches and rendered output (default `.protond`).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// How often every repo is fetched, e.g. `30s`.
    #[serde(default)]
    pub poll_interval: Option<String>,
    /// AWS settings.
    #[serde(default)]
    pub aws: RawAws,
    /// Repos holding template bundles.
    #[serde(default)]
    pub template_repos: Vec<RawTemplateRepo>,
    /// Repos holding spec files.
    #[serde(default)]
    pub spec_repos: Vec<RawSpecRepo>,
    /// How repos are fetched and read: size limits and time budgets.
    #[serde(default)]
    pub git: RawGit,
    /// Rollout order and pacing.
    #[serde(default)]
    pub rollout: RawRollout,
    /// Reconciler behaviour.
    #[serde(default)]
    pub daemon: RawDaemon,
    /// Pull requests proposing major upgrades.
    #[serde(default)]
    pub proposals: RawProposals,
    /// The HTTP server of `protond run`.
    #[serde(default)]
    pub server: RawServer,
    /// The infrastructure repo of self-managed (Terraform) provisioning.
    #[serde(default)]
    pub self_managed: Option<RawSelfManaged>,
    /// `CodeBuild` provisioning (bundles with `rendering_engine: codebuild`).
    #[serde(default)]
    pub codebuild: RawCodeBuild,
    /// Commit statuses and notification settings (`[notifications]`).
    #[serde(default)]
    pub notifications: RawNotifications,
    /// Notification receivers (`[[notify]]`).
    #[serde(default)]
    pub notify: Vec<RawNotifyTarget>,
    /// Drift detection: comparing recorded stacks with live AWS.
    #[serde(default)]
    pub drift: RawDrift,
    /// The change-set gate for automatic minors (`[gate]`).
    #[serde(default)]
    pub gate: RawGate,
}

/// `[gate]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGate {
    /// Whether automatic minor upgrades (and rollbacks) that would replace or remove a
    /// stateful resource wait for an approval (default `true`).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The stateful resource types, replacing the default list (`AWS::RDS::*` matches a
    /// whole service).
    #[serde(default)]
    pub stateful_types: Option<Vec<String>>,
    /// Types added to the stateful list (the default one, or `stateful_types`).
    #[serde(default)]
    pub extra_stateful_types: Vec<String>,
    /// Whether an update with interruption of a stateful resource needs an approval too
    /// (default `false`).
    #[serde(default)]
    pub block_interruption: Option<bool>,
}

/// `[gate]` after checks. The stateful types are kept as written: `crate::gate` turns them
/// into `impact::StatefulTypes` (the default list lives there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    /// Whether the gate is on.
    pub enabled: bool,
    /// The stateful resource types replacing the default list, when set.
    pub stateful_types: Option<Vec<String>>,
    /// Types added to the stateful list.
    pub extra_stateful_types: Vec<String>,
    /// Whether an interruption of a stateful resource needs an approval.
    pub block_interruption: bool,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            stateful_types: None,
            extra_stateful_types: Vec::new(),
            block_interruption: false,
        }
    }
}

impl GateConfig {
    fn compile(raw: &RawGate, file: &str, errors: &mut Vec<ConfigError>) -> Self {
        let mut check = |key: String, ty: &str| {
            let parts: Vec<&str> = ty.split("::").collect();
            let ok = parts.len() == 3
                && parts.iter().all(|p| !p.is_empty())
                && parts[..2].iter().all(|p| !p.contains('*'))
                && (parts[2] == "*" || !parts[2].contains('*'));
            if !ok {
                errors.push(ConfigError {
                    file: file.into(),
                    key,
                    message: format!(
                        "{ty:?} is not a resource type; write it as CloudFormation does (\"AWS::DynamoDB::Table\"), or \"AWS::RDS::*\" for a whole service"
                    ),
                });
            }
        };
        for (i, t) in raw.stateful_types.iter().flatten().enumerate() {
            check(format!("gate.stateful_types[{i}]"), t);
        }
        for (i, t) in raw.extra_stateful_types.iter().enumerate() {
            check(format!("gate.extra_stateful_types[{i}]"), t);
        }
        Self {
            enabled: raw.enabled.unwrap_or(true),
            stateful_types: raw.stateful_types.clone(),
            extra_stateful_types: raw.extra_stateful_types.clone(),
            block_interruption: raw.block_interruption.unwrap_or(false),
        }
    }
}

/// `[drift]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrift {
    /// How often every recorded stack is compared with live AWS (default `10m`; `0` turns
    /// the periodic check off; `protond refresh` still runs one).
    #[serde(default)]
    pub interval: Option<String>,
    /// What a drifted resource gets: `report` (default) or `heal` (redeployed through the
    /// normal path and its gates; a missing stack recreated).
    #[serde(default)]
    pub policy: Option<String>,
    /// Policy by environment name (the environment and everything in it); wins over `repos`.
    #[serde(default)]
    pub environments: std::collections::BTreeMap<String, String>,
    /// Policy by spec repo name (the resources its spec files declare).
    #[serde(default)]
    pub repos: std::collections::BTreeMap<String, String>,
}

/// What a drifted resource gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriftPolicy {
    /// Reported only (status, API, page, metrics, logs); a missing stack is not recreated.
    #[default]
    Report,
    /// Reported, and redeployed through the normal path (a missing stack recreated).
    Heal,
}

/// `[drift]` after checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftConfig {
    /// How often the check runs; `None`: only on demand.
    pub interval: Option<Duration>,
    /// The default policy.
    pub policy: DriftPolicy,
    /// Policy by environment name.
    pub environments: std::collections::BTreeMap<String, DriftPolicy>,
    /// Policy by spec repo name.
    pub repos: std::collections::BTreeMap<String, DriftPolicy>,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            interval: Some(Duration::from_mins(10)),
            policy: DriftPolicy::Report,
            environments: std::collections::BTreeMap::new(),
            repos: std::collections::BTreeMap::new(),
        }
    }
}

impl DriftConfig {
    /// The policy of a resource in `environment` declared in `repo`: the environment's,
    /// else the repo's, else the default.
    #[must_use]
    pub fn policy_for(&self, environment: Option<&str>, repo: &str) -> DriftPolicy {
        environment
            .and_then(|e| self.environments.get(e))
            .or_else(|| self.repos.get(repo))
            .copied()
            .unwrap_or(self.policy)
    }

    fn compile(raw: &RawDrift, file: &str, errors: &mut Vec<ConfigError>) -> Self {
        let d = Self::default();
        let interval = match raw.interval.as_deref().map(str::trim) {
            Some("0") => None,
            other => {
                let v = duration(
                    other,
                    Duration::from_mins(10),
                    "drift.interval",
                    file,
                    errors,
                );
                (!v.is_zero()).then_some(v)
            }
        };
        let mut policy = |v: &str, key: String| match v {
            "report" => DriftPolicy::Report,
            "heal" => DriftPolicy::Heal,
            other => {
                errors.push(ConfigError {
                    file: file.into(),
                    key,
                    message: format!(
                        "unknown drift policy {other:?}; use \"report\" (default) or \"heal\""
                    ),
                });
                DriftPolicy::Report
            }
        };
        let default = raw
            .policy
            .as_deref()
            .map_or(d.policy, |p| policy(p, "drift.policy".into()));
        let environments = raw
            .environments
            .iter()
            .map(|(k, v)| (k.clone(), policy(v, format!("drift.environments.{k}"))))
            .collect();
        let repos = raw
            .repos
            .iter()
            .map(|(k, v)| (k.clone(), policy(v, format!("drift.repos.{k}"))))
            .collect();
        Self {
            interval,
            policy: default,
            environments,
            repos,
        }
    }
}

/// `[codebuild]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCodeBuild {
    /// The `CodeBuild` project builds run in (default `protond-provisioning`), in the
    /// placement's account (role) and region.
    #[serde(default)]
    pub project: Option<String>,
    /// Service role of the project protond creates when it does not exist (default: none;
    /// the project must then exist).
    #[serde(default)]
    pub service_role: Option<String>,
    /// Compute type of the builds (default `BUILD_GENERAL1_SMALL`).
    #[serde(default)]
    pub compute_type: Option<String>,
    /// Image when the manifest names none (default
    /// `aws/codebuild/amazonlinux2-x86_64-standard:5.0`).
    #[serde(default)]
    pub image: Option<String>,
    /// Longest wait for one build (default `60m`).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// `[codebuild]` after checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeBuildConfig {
    /// Project name.
    pub project: String,
    /// Service role of a project protond creates.
    pub service_role: Option<String>,
    /// Compute type.
    pub compute_type: String,
    /// Default image.
    pub image: String,
    /// Longest wait for one build.
    pub timeout: Duration,
}

impl CodeBuildConfig {
    fn compile(raw: &RawCodeBuild, file: &str, errors: &mut Vec<ConfigError>) -> Self {
        let project = raw
            .project
            .clone()
            .unwrap_or_else(|| "protond-provisioning".into());
        if project.len() < 2
            || project.len() > 150
            || !project
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            errors.push(ConfigError {
                file: file.into(),
                key: "codebuild.project".into(),
                message: format!(
                    "{project:?} is not a CodeBuild project name: 2 to 150 letters, digits, `-` and `_`"
                ),
            });
        }
        if let Some(role) = &raw.service_role
            && !role.starts_with("arn:")
        {
            errors.push(ConfigError {
                file: file.into(),
                key: "codebuild.service_role".into(),
                message: format!("{role:?} is not a role ARN, e.g. \"arn:aws:iam::123456789012:role/protond-codebuild\""),
            });
        }
        Self {
            project,
            service_role: raw.service_role.clone(),
            compute_type: raw
                .compute_type
                .clone()
                .unwrap_or_else(|| "BUILD_GENERAL1_SMALL".into()),
            image: raw
                .image
                .clone()
                .unwrap_or_else(|| "aws/codebuild/amazonlinux2-x86_64-standard:5.0".into()),
            timeout: duration(
                raw.timeout.as_deref(),
                Duration::from_hours(1),
                "codebuild.timeout",
                file,
                errors,
            ),
        }
    }
}

/// `[git]`: the bounds of fetching and reading one repo.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGit {
    /// Largest object a fetch inflates, in bytes (default 33554432, 32 MiB); a repo holding a
    /// larger one on a branch or tag protond reads is refused. Also bounds the memory that
    /// indexes a pack (about 36 bytes per object).
    #[serde(default)]
    pub max_object_bytes: Option<u64>,
    /// Most pack bytes one fetch may receive (default 134217728, 128 MiB).
    #[serde(default)]
    pub max_pack_bytes: Option<u64>,
    /// Longest fetch of one repo, e.g. `60s` (default); a slower one is stopped and the repo
    /// is read as last fetched.
    #[serde(default)]
    pub fetch_timeout: Option<String>,
    /// Longest read of one repo's files and releases, e.g. `60s` (default); a slower repo is
    /// skipped this cycle (its resources unknown, never deleted).
    #[serde(default)]
    pub read_timeout: Option<String>,
    /// Most repos fetched at once (default 8, at most 64); each mirror is still fetched once
    /// at a time.
    #[serde(default)]
    pub fetch_concurrency: Option<usize>,
}

/// `[git]` after checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Git {
    /// Largest object a fetch inflates, in bytes.
    pub max_object_bytes: u64,
    /// Most pack bytes one fetch may receive.
    pub max_pack_bytes: u64,
    /// Longest fetch of one repo.
    pub fetch_timeout: Duration,
    /// Longest read of one repo.
    pub read_timeout: Duration,
    /// Most repos fetched at once.
    pub fetch_concurrency: usize,
}

impl Default for Git {
    fn default() -> Self {
        Self {
            max_object_bytes: crate::source::DEFAULT_MAX_OBJECT_BYTES,
            max_pack_bytes: crate::source::DEFAULT_MAX_PACK_BYTES,
            fetch_timeout: Duration::from_mins(1),
            read_timeout: Duration::from_mins(1),
            fetch_concurrency: 8,
        }
    }
}

/// `[self_managed]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelfManaged {
    /// The infrastructure repo: local path, `file://` or `https://`.
    pub url: String,
    /// Branch the pull requests target (default `main`).
    #[serde(default)]
    pub branch: Option<String>,
    /// Where the pull requests go (default: `git`, push the branch only).
    #[serde(default)]
    pub forge: Option<RawForge>,
    /// Folder layout (Proton's two): `auto` (default: `environments/<env>/` when the repo
    /// has an `environments/` folder, else `<env>/`), `environments` or `root`.
    #[serde(default)]
    pub layout: Option<String>,
    /// A separate repo for pipelines' Terraform (Proton's account setting
    /// `pipelineProvisioningRepository`); default: pipelines go to the infrastructure repo.
    #[serde(default)]
    pub pipeline_repository: Option<RawPipelineRepository>,
}

/// `[self_managed.pipeline_repository]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipelineRepository {
    /// The pipeline repo: local path, `file://` or `https://`.
    pub url: String,
    /// Branch the pull requests target (default: the infrastructure repo's branch).
    #[serde(default)]
    pub branch: Option<String>,
    /// Where its pull requests go (default: `git`, push the branch only).
    #[serde(default)]
    pub forge: Option<RawForge>,
}

/// Which of Proton's two infrastructure-repo layouts to write (`[self_managed] layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// As Proton chose: `environments/<env>/` when the repo's branch has an `environments/`
    /// folder, else `<env>/`.
    #[default]
    Auto,
    /// Always `environments/<env>/` (Proton's layout 1).
    Environments,
    /// Always `<env>/` (Proton's layout 2).
    Root,
}

impl Layout {
    /// Whether environment folders go under `environments/`, given whether the repo has
    /// that folder now.
    #[must_use]
    pub fn under_environments(self, repo_has_environments: bool) -> bool {
        match self {
            Self::Auto => repo_has_environments,
            Self::Environments => true,
            Self::Root => false,
        }
    }
}

/// `[self_managed]` after checks.
#[derive(Debug, Clone)]
pub struct SelfManaged {
    /// Repo location.
    pub url: String,
    /// Target branch.
    pub branch: String,
    /// The forge that opens its pull requests.
    pub forge: ForgeConfig,
    /// Proton's folder layout to write.
    pub layout: Layout,
    /// The separate pipeline repo (`pipeline_repository`), if any.
    pub pipelines: Option<PipelineRepository>,
}

/// `[self_managed.pipeline_repository]` after checks: where pipelines' Terraform goes.
#[derive(Debug, Clone)]
pub struct PipelineRepository {
    /// Repo location.
    pub url: String,
    /// Target branch.
    pub branch: String,
    /// The forge that opens its pull requests.
    pub forge: ForgeConfig,
}

impl SelfManaged {
    /// The repo `resource_id`'s files go to: the pipeline repo for pipelines when one is
    /// configured (as Proton's `pipelineProvisioningRepository`), else the infrastructure
    /// repo.
    #[must_use]
    pub fn repo_for(&self, resource_id: &str) -> SelfManaged {
        match &self.pipelines {
            Some(p) if resource_id.starts_with("pipeline/") => SelfManaged {
                url: p.url.clone(),
                branch: p.branch.clone(),
                forge: p.forge.clone(),
                layout: self.layout,
                pipelines: None,
            },
            _ => self.clone(),
        }
    }
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Serve HTTP in `protond run` (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Address to listen on (default `127.0.0.1:8080`).
    #[serde(default)]
    pub listen: Option<String>,
    /// Environment variable with the bearer token for mutating endpoints (default
    /// `PROTOND_API_TOKEN`); without it they answer 403.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Environment variable with the GitHub webhook secret (default
    /// `PROTOND_GITHUB_WEBHOOK_SECRET`).
    #[serde(default)]
    pub github_secret_env: Option<String>,
    /// Environment variable with the GitLab webhook token (default
    /// `PROTOND_GITLAB_WEBHOOK_TOKEN`).
    #[serde(default)]
    pub gitlab_token_env: Option<String>,
    /// Environment variable with the Gitea/Forgejo webhook secret (default
    /// `PROTOND_GITEA_WEBHOOK_SECRET`).
    #[serde(default)]
    pub gitea_secret_env: Option<String>,
    /// Host names (optionally `name:port`) the server answers to besides loopback ones
    /// (default none). On a loopback address other names are refused (DNS rebinding); on
    /// any other address the list applies only when set. `"*"` turns the check off.
    #[serde(default)]
    pub allowed_hosts: Option<Vec<String>>,
    /// Most connections open at once (default 512); at the cap a new connection closes the
    /// least useful open one (idle first, oldest first).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Largest request body in bytes (default 5 MiB).
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Request body bytes held at once across all connections (default 32 MiB).
    #[serde(default)]
    pub max_inflight_body_bytes: Option<u64>,
    /// Time to receive a request's head once its first byte arrived (default `10s`).
    #[serde(default)]
    pub header_timeout: Option<String>,
    /// Time to receive a whole request body (default `30s`).
    #[serde(default)]
    pub body_timeout: Option<String>,
    /// Time a connection may wait for its next request (default `60s`).
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// Time to answer a request once its head is read, body included, and again to write
    /// the answer (default `60s`).
    #[serde(default)]
    pub request_timeout: Option<String>,
    /// How long a webhook delivery id is remembered to refuse its replays (default `1h`).
    #[serde(default)]
    pub webhook_dedupe_window: Option<String>,
    /// Most delivery ids remembered (default 10000; the oldest are forgotten first).
    #[serde(default)]
    pub webhook_dedupe_entries: Option<usize>,
}

/// `[server]` after checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Serve HTTP in `protond run`.
    pub enabled: bool,
    /// Listen address.
    pub listen: std::net::SocketAddr,
    /// Variable with the API bearer token.
    pub token_env: String,
    /// Variable with the GitHub webhook secret.
    pub github_secret_env: String,
    /// Variable with the GitLab webhook token.
    pub gitlab_token_env: String,
    /// Variable with the Gitea/Forgejo webhook secret.
    pub gitea_secret_env: String,
    /// Names answered besides loopback ones (`name` or `name:port`; `*` for any).
    pub allowed_hosts: Vec<String>,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: u64,
    /// Request body bytes held at once across all connections.
    pub max_inflight_body_bytes: u64,
    /// Time to receive a request head once it started.
    pub header_timeout: Duration,
    /// Time to receive a whole request body.
    pub body_timeout: Duration,
    /// Time a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Time to answer a request (and, separately, to write the answer).
    pub request_timeout: Duration,
    /// How long a webhook delivery id is remembered.
    pub webhook_dedupe_window: Duration,
    /// Most delivery ids remembered.
    pub webhook_dedupe_entries: usize,
}

impl Server {
    /// Compiles `[server]`, pushing every problem onto `errors` (the defaults stand in).
    fn compile(raw: &RawServer, file: &str, errors: &mut Vec<ConfigError>) -> Self {
        let mut problem = |key: &str, message: String| {
            errors.push(ConfigError {
                file: file.into(),
                key: format!("server.{key}"),
                message,
            });
        };
        let listen_text = raw
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_text
            .parse::<std::net::SocketAddr>()
            .unwrap_or_else(|_| {
                problem(
                    "listen",
                    format!("{listen_text:?} is not an address and port, e.g. \"127.0.0.1:8080\""),
                );
                std::net::SocketAddr::from(([127, 0, 0, 1], 8080))
            });
        let mut timeout = |key: &str, value: Option<&str>, default: Duration| {
            let mut errs = Vec::new();
            let d = duration(value, default, &format!("server.{key}"), file, &mut errs);
            let d = if errs.is_empty() && d.is_zero() {
                problem(key, "must be more than zero; write e.g. \"10s\"".into());
                default
            } else {
                d
            };
            for e in errs {
                problem(key, e.message);
            }
            d
        };
        let header_timeout = timeout(
            "header_timeout",
            raw.header_timeout.as_deref(),
            Duration::from_secs(10),
        );
        let body_timeout = timeout(
            "body_timeout",
            raw.body_timeout.as_deref(),
            Duration::from_secs(30),
        );
        let idle_timeout = timeout(
            "idle_timeout",
            raw.idle_timeout.as_deref(),
            Duration::from_mins(1),
        );
        let request_timeout = timeout(
            "request_timeout",
            raw.request_timeout.as_deref(),
            Duration::from_mins(1),
        );
        let webhook_dedupe_window = timeout(
            "webhook_dedupe_window",
            raw.webhook_dedupe_window.as_deref(),
            Duration::from_hours(1),
        );
        if body_timeout > request_timeout {
            problem(
                "body_timeout",
                format!(
                    "{} is longer than server.request_timeout ({}), which includes reading the body; raise request_timeout or lower body_timeout",
                    humantime::format_duration(body_timeout),
                    humantime::format_duration(request_timeout)
                ),
            );
        }
        let max_connections = raw.max_connections.unwrap_or(512);
        if max_connections < 8 {
            problem(
                "max_connections",
                format!(
                    "{max_connections} is too few to keep serving health checks; use at least 8 (default 512)"
                ),
            );
        }
        let max_body_bytes = raw.max_body_bytes.unwrap_or(5 * 1024 * 1024);
        let max_inflight_body_bytes = raw.max_inflight_body_bytes.unwrap_or(32 * 1024 * 1024);
        if max_body_bytes == 0 {
            problem(
                "max_body_bytes",
                "must be more than zero (default 5242880, 5 MiB)".into(),
            );
        }
        if max_body_bytes > max_inflight_body_bytes {
            problem(
                "max_body_bytes",
                format!(
                    "{max_body_bytes} is more than server.max_inflight_body_bytes ({max_inflight_body_bytes}), so no such body could ever be received; lower it or raise max_inflight_body_bytes"
                ),
            );
        }
        let webhook_dedupe_entries = raw.webhook_dedupe_entries.unwrap_or(10_000);
        if webhook_dedupe_entries == 0 {
            problem(
                "webhook_dedupe_entries",
                "must be at least 1 (default 10000)".into(),
            );
        }
        let allowed_hosts = raw.allowed_hosts.clone().unwrap_or_default();
        for (i, h) in allowed_hosts.iter().enumerate() {
            if let Err(why) = check_allowed_host(h) {
                problem(&format!("allowed_hosts[{i}]"), format!("{h:?} {why}"));
            }
        }
        Self {
            enabled: raw.enabled.unwrap_or(true),
            listen,
            token_env: raw
                .token_env
                .clone()
                .unwrap_or_else(|| "PROTOND_API_TOKEN".into()),
            github_secret_env: raw
                .github_secret_env
                .clone()
                .unwrap_or_else(|| "PROTOND_GITHUB_WEBHOOK_SECRET".into()),
            gitlab_token_env: raw
                .gitlab_token_env
                .clone()
                .unwrap_or_else(|| "PROTOND_GITLAB_WEBHOOK_TOKEN".into()),
            gitea_secret_env: raw
                .gitea_secret_env
                .clone()
                .unwrap_or_else(|| "PROTOND_GITEA_WEBHOOK_SECRET".into()),
            allowed_hosts,
            max_connections,
            max_body_bytes,
            max_inflight_body_bytes,
            header_timeout,
            body_timeout,
            idle_timeout,
            request_timeout,
            webhook_dedupe_window,
            webhook_dedupe_entries,
        }
    }
}

/// An `allowed_hosts` entry is `*`, a host name or IP, optionally with `:port`.
fn check_allowed_host(h: &str) -> Result<(), &'static str> {
    if h == "*" {
        return Ok(());
    }
    if h.contains("://") || h.contains('/') {
        return Err(
            "is not a host name: write the name only, e.g. \"protond.example.com\" or \"protond.example.com:8443\"",
        );
    }
    match split_host_port(h) {
        Some(_) => Ok(()),
        None => Err(
            "is not a host name with an optional port, e.g. \"protond.example.com\", \"protond.example.com:8443\" or \"[::1]:8080\"",
        ),
    }
}

/// Splits a `Host` value (`name`, `name:port`, `[v6]`, `[v6]:port`) into its lowercased
/// host (brackets kept off) and port; `None` when it is not of that form.
#[must_use]
pub fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (v6, port)
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0)?),
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if host.is_empty() || !host.chars().all(valid) {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// `[proposals]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProposals {
    /// Open pull requests at all (default true; spec repos without a `forge` get none).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Most new pull requests opened in any hour, across all repos (default 10).
    #[serde(default)]
    pub max_per_hour: Option<u32>,
    /// Prefix of the branches protond pushes (default `protond/`).
    #[serde(default)]
    pub branch_prefix: Option<String>,
    /// Commit author, `Name <email>` (default `protond <protond@localhost>`).
    #[serde(default)]
    pub author: Option<String>,
    /// When new pull requests may open, for spec repos without their own
    /// `proposals.schedule` (default: any time).
    #[serde(default)]
    pub schedule: Option<String>,
    /// Sign proposal commits through git: `ssh` or `gpg` (default: unsigned).
    #[serde(default)]
    pub sign: Option<String>,
    /// The signing key: an SSH key file (absolute path) for `ssh`, a key id for `gpg`.
    #[serde(default)]
    pub signing_key: Option<String>,
}

/// `[spec_repos.forge]`: where pull requests for this repo are opened.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForge {
    /// `github`, `gitlab`, `gitea` (also Forgejo), or `git` (push the branch only).
    pub kind: String,
    /// API base URL. Defaults to `https://api.github.com` for GitHub; GitHub Enterprise is
    /// `https://HOST/api/v3`, GitLab `https://HOST/api/v4`, Gitea `https://HOST/api/v1`.
    #[serde(default)]
    pub api_url: Option<String>,
    /// The repository on the forge: `owner/name` (GitLab: the full project path).
    #[serde(default)]
    pub repo: Option<String>,
    /// Environment variable holding the API token (default `GITHUB_TOKEN`, `GITLAB_TOKEN`
    /// or `GITEA_TOKEN`). The token is read when used and never logged.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A file holding the API token instead (e.g. a mounted secret); re-read when its
    /// modification time changes, so a rotated token is used without a restart.
    #[serde(default)]
    pub token_file: Option<String>,
    /// GitHub App authentication instead of a token: the App's id (with
    /// `private_key_file`; GitHub only).
    #[serde(default)]
    pub app_id: Option<u64>,
    /// The GitHub App's private key (PEM, as GitHub hands it out), read when a token is minted.
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// The App's installation on the repo's owner (default: looked up for the repo).
    #[serde(default)]
    pub installation_id: Option<u64>,
}

/// `[[spec_repos]] proposals = { ... }`: how this repo's upgrade pull requests are opened.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPullOptions {
    /// Labels to put on each pull request (by name).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Users asked for a review (user names).
    #[serde(default)]
    pub reviewers: Vec<String>,
    /// Users assigned (user names).
    #[serde(default)]
    pub assignees: Vec<String>,
    /// Open pull requests as drafts (default false).
    #[serde(default)]
    pub draft: bool,
    /// Ask the forge to merge once its checks pass (default false).
    #[serde(default)]
    pub auto_merge: bool,
    /// When new pull requests may open: a cron expression whose matching minutes form the
    /// window (default: `[proposals] schedule`, else any time).
    #[serde(default)]
    pub schedule: Option<String>,
    /// Keep one dashboard issue in the repo listing its pending upgrades and holds (default
    /// false).
    #[serde(default)]
    pub dashboard: bool,
}

/// `[daemon]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    /// Deployments running at once (default 4).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Most deletions one cycle may start; a cycle wanting more deletes nothing (default 5).
    #[serde(default)]
    pub deletion_budget: Option<usize>,
    /// Extra reconcile times, as cron expressions of five fields (`"0 * * * *"`) or six with
    /// seconds first (`"0 0 * * * *"`).
    #[serde(default)]
    pub schedules: Vec<String>,
    /// How long shutdown waits for in-flight bookkeeping (default `30s`).
    #[serde(default)]
    pub shutdown_grace: Option<String>,
    /// Watch local repos for changes (default true); off, only polls, schedules, webhooks
    /// and the API trigger fetches.
    #[serde(default)]
    pub watch: Option<bool>,
}

/// `[aws]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAws {
    /// Region (default from the environment, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint override, e.g. a local `moto_server`.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Account id used for `environment.account_id` when a spec gives none.
    #[serde(default)]
    pub account_id: Option<String>,
    /// SDK attempts per call, retries included (default 3).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Time between stack status polls (default `5s`).
    #[serde(default)]
    pub poll_interval: Option<String>,
    /// Longest wait for one attempt of one AWS call (default `30s`): an answer lost on the
    /// way (a dropped connection, an endpoint that never replies) is retried as a transient
    /// error, never waited for forever.
    #[serde(default)]
    pub call_timeout: Option<String>,
    /// Longest wait for one stack operation (default `60m`).
    #[serde(default)]
    pub stack_timeout: Option<String>,
    /// Create and update stacks through change sets (default true). `moto_server` returns no
    /// outputs for change-set stacks, so local setups turn this off.
    #[serde(default)]
    pub change_sets: Option<bool>,
    /// S3 bucket for deployment artifacts: templates over `CloudFormation`'s `TemplateBody`
    /// limit, `CodeBuild` provisioning's bundles (default: none; such deployments then fail
    /// saying so).
    #[serde(default)]
    pub artifact_bucket: Option<String>,
    /// Key prefix in the artifact bucket (default `protond`).
    #[serde(default)]
    pub artifact_prefix: Option<String>,
    /// Region of the artifact bucket (default `region`).
    #[serde(default)]
    pub artifact_region: Option<String>,
    /// Fixed test credentials instead of the default chain, for a local endpoint such as
    /// the demo's `moto_server` (default false). Refused unless `endpoint_url` is on
    /// 127.0.0.1, `[::1]` or localhost: they must never be sent to AWS.
    #[serde(default)]
    pub local_credentials: Option<bool>,
}

/// `[aws]`'s artifact bucket after checks (`artifact_bucket`, `artifact_prefix`,
/// `artifact_region`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactBucket {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// The bucket's region.
    pub region: String,
}

impl ArtifactBucket {
    /// The artifact bucket `[aws]` names, or `None`; problems go to `errors`.
    fn compile(raw: &RawAws, file: &str, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let bucket = raw.artifact_bucket.as_deref()?;
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !valid_bucket {
            errors.push(ConfigError {
                file: file.into(),
                key: "aws.artifact_bucket".into(),
                message: format!(
                    "{bucket:?} is not an S3 bucket name: 3 to 63 lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit"
                ),
            });
        }
        let prefix = raw.artifact_prefix.as_deref().unwrap_or("protond");
        let prefix = prefix.trim_matches('/');
        if !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
            || prefix.contains("//")
        {
            errors.push(ConfigError {
                file: file.into(),
                key: "aws.artifact_prefix".into(),
                message: format!(
                    "{prefix:?} is not a key prefix protond uses: letters, digits, `-`, `_`, `.` and single `/`, e.g. \"protond/artifacts\""
                ),
            });
        }
        Some(Self {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            region: raw
                .artifact_region
                .clone()
                .or_else(|| raw.region.clone())
                .unwrap_or_else(|| "us-east-1".into()),
        })
    }
}

/// `[[template_repos]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplateRepo {
    /// Short name used in logs and status.
    pub name: String,
    /// Local path, `file://` or `https://` URL.
    pub url: String,
    /// Tag pattern; `{template}`, `{major}` and `{minor}` are replaced.
    #[serde(default)]
    pub tag_pattern: Option<String>,
    /// Folder holding the bundles (`<subdirectory>/<template>/v<major>/`), as in Proton's
    /// template sync; default the repo's root.
    #[serde(default)]
    pub subdirectory: Option<String>,
    /// Where `protond preview --comment <PR>` posts its report (same shape as a spec repo's
    /// `forge`); default none.
    #[serde(default)]
    pub forge: Option<RawForge>,
}

/// `[[spec_repos]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpecRepo {
    /// Short name; environments may restrict deployments to named repos.
    pub name: String,
    /// Local path, `file://` or `https://` URL.
    pub url: String,
    /// Branch whose head is the desired state (default `main`).
    #[serde(default)]
    pub branch: Option<String>,
    /// Folder holding the spec files (default `proton`).
    #[serde(default)]
    pub folder: Option<String>,
    /// Whether environments may be declared here.
    #[serde(default)]
    pub platform: bool,
    /// Accept an empty spec folder as "delete everything" (default false: treated as unknown).
    #[serde(default)]
    pub allow_empty: bool,
    /// Where major-upgrade pull requests for this repo go; none when absent.
    #[serde(default)]
    pub forge: Option<RawForge>,
    /// Labels, reviewers, assignees, draft, auto-merge and schedule of its pull requests.
    #[serde(default)]
    pub proposals: RawPullOptions,
    /// The repo is retired: it is no longer read (it need not exist), and every resource it
    /// deployed is deleted, within the deletion budget. Default false. Removing the entry
    /// instead deletes nothing: the resources are kept as unknown.
    #[serde(default)]
    pub retired: bool,
    /// Templates of Proton's header-less spec files, by folder or file (issue 16).
    #[serde(default)]
    pub templates: Vec<crate::spec::templates::TemplateMapping>,
    /// This repo's shard, overriding the hash of its name (below `[ha] shards`).
    #[serde(default)]
    pub shard: Option<u32>,
}

/// `[rollout]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    /// Stage names in rollout order, e.g. `["dev", "staging", "prod"]`.
    #[serde(default)]
    pub stages: Vec<String>,
    /// Time a stage must stay healthy before the next starts, e.g. `10m`.
    #[serde(default)]
    pub soak: Option<String>,
    /// Maintenance windows per stage: cron expressions whose matching instants form the
    /// window, five fields (`prod = "* 22-23 * * Mon-Fri"`) or six with seconds first
    /// (`"* * 22-23 * * Mon-Fri"`). Outside it, minor rollouts
    /// wait; spec changes do not.
    #[serde(default)]
    pub windows: std::collections::BTreeMap<String, String>,
    /// Time zone of the windows, e.g. `Europe/Berlin` (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Failures of a new minor in its first stage that quarantine it (default 1).
    #[serde(default)]
    pub quarantine_after: Option<u32>,
    /// Share of its first stage's resources whose failure quarantines a new minor, e.g. `"25%"`.
    #[serde(default)]
    pub quarantine_share: Option<String>,
    /// `"offer"` (default) or `"auto"`: what resources already on a quarantined minor get.
    #[serde(default)]
    pub rollback: Option<String>,
    /// Freeze windows (`[[rollout.freeze]]`): version moves (or every change) wait inside.
    #[serde(default)]
    pub freeze: Vec<freeze::RawFreeze>,
}

/// Whether `url` is an `http(s)://` address on the loopback interface.
fn is_loopback_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or("");
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Parses a cron expression of five fields (minute hour day month weekday, as crontab and
/// Kubernetes write them) or of six or seven (seconds first, years last, as the `cron` crate
/// reads them). A five-field expression gets `seconds` in front: `"0"` for a schedule (fire
/// once, at the minute), `"*"` for a window (every second of a matching minute); its numeric
/// weekdays are crontab's (0 or 7 Sunday, 1 Monday), which the crate would read one day off
/// (1 Sunday), so they are written as names first.
fn parse_cron(expr: &str, seconds: &str) -> Result<cron::Schedule, cron::error::Error> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if let [minute, hour, day, month, weekday] = fields[..] {
        let weekday = crontab_weekdays(weekday);
        cron::Schedule::from_str(&format!(
            "{seconds} {minute} {hour} {day} {month} {weekday}"
        ))
    } else {
        cron::Schedule::from_str(expr)
    }
}

/// Crontab's numeric weekdays as names (`1-5` → `Mon-Fri`); steps (`*/2`) are left alone.
fn crontab_weekdays(field: &str) -> String {
    const NAMES: [&str; 8] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let mut out = String::new();
    let mut digits = String::new();
    let mut after_slash = false;
    let flush = |digits: &mut String, out: &mut String, after_slash: bool| {
        if digits.is_empty() {
            return;
        }
        match digits.parse::<usize>().ok().and_then(|n| NAMES.get(n)) {
            Some(name) if !after_slash => out.push_str(name),
            _ => out.push_str(digits),
        }
        digits.clear();
    };
    for c in field.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out, after_slash);
            after_slash = c == '/';
            out.push(c);
        }
    }
    flush(&mut digits, &mut out, after_slash);
    out
}

/// Default tag pattern: `fargate-svc/v1.4`.
pub const DEFAULT_TAG_PATTERN: &str = "{template}/v{major}.{minor}";

/// A template repo after checks.
#[derive(Debug, Clone)]
pub struct TemplateRepo {
    /// The name used in logs, status and the state store.
    pub name: String,
    /// A local path, a `file://` or an `https://` URL.
    pub url: String,
    /// Tag pattern.
    pub tag_pattern: String,
    /// Folder holding the bundles; empty for the repo's root.
    pub subdirectory: String,
    /// The forge `protond preview --comment` posts to, if configured.
    pub forge: Option<ForgeConfig>,
}

/// A spec repo after checks.
#[derive(Debug, Clone)]
pub struct SpecRepo {
    /// The name used in logs, status and the state store.
    pub name: String,
    /// A local path, a `file://` or an `https://` URL.
    pub url: String,
    /// The branch read.
    pub branch: String,
    /// Spec folder.
    pub folder: String,
    /// May declare environments.
    pub platform: bool,
    /// Empty folder means delete.
    pub allow_empty: bool,
    /// Forge for upgrade pull requests.
    pub forge: Option<ForgeConfig>,
    /// How its pull requests are opened (`proposals = { ... }`).
    pub pull_options: PullOptions,
    /// Retired (`retired = true`): never read; the resources it deployed are deleted.
    pub retired: bool,
    /// Templates of header-less spec files, by folder or file (`templates = [...]`).
    pub templates: Vec<crate::spec::templates::TemplateMapping>,
    /// Its explicit shard (`shard = N`), else [`shard_of`] hashes its name.
    pub shard: Option<u32>,
}

/// Which forge API a spec repo's pull requests go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgeKind {
    /// GitHub or GitHub Enterprise.
    GitHub,
    /// GitLab (merge requests).
    GitLab,
    /// Gitea or Forgejo.
    Gitea,
    /// No API: the branch is pushed and the pull request opened by hand.
    Git,
}

impl ForgeKind {
    /// Lowercase name, as written in the config.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
            Self::Gitea => "gitea",
            Self::Git => "git",
        }
    }
}

/// A spec repo's forge after checks.
#[derive(Debug, Clone)]
pub struct ForgeConfig {
    /// Which forge API it speaks.
    pub kind: ForgeKind,
    /// API base URL without a trailing slash (empty for `git`).
    pub api_url: String,
    /// `owner/name` or the GitLab project path (empty for `git`).
    pub repo: String,
    /// Environment variable with the token (empty for `git`).
    pub token_env: String,
    /// File with the token, preferred to the variable when set.
    pub token_file: Option<PathBuf>,
    /// GitHub App authentication, preferred to both when set.
    pub app: Option<GitHubApp>,
}

/// A spec repo's forge authenticating as a GitHub App (`app_id`, `private_key_file`,
/// `installation_id`): installation tokens are minted with the key and refreshed before expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubApp {
    /// The App's id.
    pub app_id: u64,
    /// Its private key (PEM); never read here.
    pub private_key_file: PathBuf,
    /// The installation, when given; else looked up for the repo.
    pub installation_id: Option<u64>,
}

/// A spec repo's `proposals = { ... }` after checks.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Label names.
    pub labels: Vec<String>,
    /// Reviewer user names.
    pub reviewers: Vec<String>,
    /// Assignee user names.
    pub assignees: Vec<String>,
    /// Open as a draft.
    pub draft: bool,
    /// Merge when the checks pass.
    pub auto_merge: bool,
    /// When new pull requests may open (none: any time).
    pub schedule: Option<cron::Schedule>,
    /// Keep a dashboard issue (`propose::dashboard`).
    pub dashboard: bool,
}

/// `[proposals]` after checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposals {
    /// Whether pull requests are opened.
    pub enabled: bool,
    /// New pull requests per hour.
    pub max_per_hour: u32,
    /// Branch prefix.
    pub branch_prefix: String,
    /// Commit author name.
    pub author_name: String,
    /// Commit author email.
    pub author_email: String,
    /// How proposal commits are signed (`sign`, `signing_key`), if they are.
    pub signing: Option<Signing>,
}

/// `[proposals] sign` and `signing_key` after checks: git signs each proposal commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    /// `ssh` or `openpgp`, git's `gpg.format`.
    pub format: &'static str,
    /// git's `user.signingkey`: a key file for SSH, a key id for GPG.
    pub key: String,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This installation's name, when the config sets one (else the state store's).
    pub installation: Option<String>,
    /// State URL: `sqlite://…` or `postgres://…`/`postgresql://…` (without a password).
    pub state: String,
    /// The file holding the `PostgreSQL` password (else `PROTOND_STATE_PASSWORD`).
    pub state_password_file: Option<PathBuf>,
    /// `[ha]`: leader lease, replica id, shards (defaults without the table).
    pub ha: Ha,
    /// Data folder.
    pub data_dir: PathBuf,
    /// Poll interval.
    pub poll_interval: Duration,
    /// AWS region.
    pub region: String,
    /// AWS endpoint override.
    pub endpoint_url: Option<String>,
    /// Default account id for rendering.
    pub account_id: String,
    /// Template repos.
    pub template_repos: Vec<TemplateRepo>,
    /// Spec repos.
    pub spec_repos: Vec<SpecRepo>,
    /// Fetch and read bounds.
    pub git: Git,
    /// Stage order.
    pub stages: Vec<String>,
    /// Soak time between stages.
    pub soak: Duration,
    /// Maintenance windows per stage.
    pub windows: std::collections::BTreeMap<String, cron::Schedule>,
    /// Time zone of the windows.
    pub timezone: chrono_tz::Tz,
    /// When a failing release is quarantined, and what its resources get.
    pub quarantine: quarantine::Quarantine,
    /// Freeze windows (`[[rollout.freeze]]`), read in `timezone`.
    pub freezes: Vec<Freeze>,
    /// SDK attempts per call.
    pub aws_max_attempts: u32,
    /// Stack poll interval.
    pub stack_poll_interval: Duration,
    /// Longest wait for one attempt of one AWS call.
    pub aws_call_timeout: Duration,
    /// Stack operation timeout.
    pub stack_timeout: Duration,
    /// Use change sets.
    pub change_sets: bool,
    /// Use fixed local credentials (the demo's own `moto_server`), not the default chain.
    pub local_credentials: bool,
    /// Concurrent deployments.
    pub concurrency: usize,
    /// Deletions allowed per cycle.
    pub deletion_budget: usize,
    /// Cron schedules.
    pub schedules: Vec<cron::Schedule>,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Watch local repos.
    pub watch: bool,
    /// Major-upgrade pull requests.
    pub proposals: Proposals,
    /// HTTP server.
    pub server: Server,
    /// Self-managed provisioning.
    pub self_managed: Option<SelfManaged>,
    /// The S3 artifact bucket (`[aws] artifact_bucket`), if configured.
    pub artifacts: Option<ArtifactBucket>,
    /// `CodeBuild` provisioning.
    pub codebuild: CodeBuildConfig,
    /// Commit statuses and outgoing notifications.
    pub notifications: Notifications,
    /// `[drift]`: drift detection.
    pub drift: DriftConfig,
    /// `[gate]`: the change-set gate for automatic minors.
    pub gate: GateConfig,
}

/// A configuration problem: the file, the key, and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    /// The config file.
    pub file: String,
    /// The key, e.g. `spec_repos[1].url`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn duration(
    value: Option<&str>,
    default: Duration,
    key: &str,
    file: &str,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    match value {
        None => default,
        Some(v) => humantime::parse_duration(v).unwrap_or_else(|e| {
            errors.push(ConfigError {
                file: file.into(),
                key: key.into(),
                message: format!(
                    "{v:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"1h\""
                ),
            });
            default
        }),
    }
}

impl Config {
    /// Reads and compiles a config file; relative repo paths are taken relative to the file.
    /// Every problem is reported: each unknown key (with its line and the nearest valid key)
    /// and each error of [`Config::compile`].
    pub fn load(path: &Path) -> Result<Self, Vec<ConfigError>> {
        Self::load_with(path, false)
    }

    /// [`Config::load`], and each local repo path (`url` of a template, spec or self-managed
    /// repo) must be an existing git repository: `protond check-config`'s checks. The daemon
    /// does not check this at load, so that a repo gone for a while stays unknown.
    pub fn load_checked(path: &Path) -> Result<Self, Vec<ConfigError>> {
        Self::load_with(path, true)
    }

    fn load_with(path: &Path, local_repos: bool) -> Result<Self, Vec<ConfigError>> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError {
                file: file.clone(),
                key: ".".into(),
                message: format!("cannot read: {e}"),
            }]
        })?;
        let (raw, mut errors) = unknown::parse::<RawConfig>(&text, &file);
        let Some(raw) = raw else {
            return Err(errors);
        };
        let base = path.parent().unwrap_or(Path::new("."));
        if local_repos {
            errors.extend(local::check(&raw, &file, base));
        }
        match Self::compile(raw, &file, base) {
            Ok(config) if errors.is_empty() => Ok(config),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }

    /// Checks a raw config as a whole; every problem is reported.
    pub fn compile(raw: RawConfig, file: &str, base: &Path) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut err = |key: String, message: String| {
            errors.push(ConfigError {
                file: file.into(),
                key,
                message,
            });
        };
        let resolve = |url: &str| -> String {
            if url.contains("://") || Path::new(url).is_absolute() {
                url.to_string()
            } else {
                base.join(url).display().to_string()
            }
        };
        let mut names = BTreeSet::new();
        let mut template_repos = Vec::new();
        for (i, r) in raw.template_repos.iter().enumerate() {
            if !names.insert(r.name.clone()) {
                err(
                    format!("template_repos[{i}].name"),
                    format!("repo name {:?} is used twice; names must be unique", r.name),
                );
            }
            let pattern = r
                .tag_pattern
                .clone()
                .unwrap_or_else(|| DEFAULT_TAG_PATTERN.into());
            for part in ["{template}", "{major}", "{minor}"] {
                if !pattern.contains(part) {
                    err(
                        format!("template_repos[{i}].tag_pattern"),
                        format!("{pattern:?} lacks {part}; e.g. {DEFAULT_TAG_PATTERN:?}"),
                    );
                }
            }
            let subdirectory = match r.subdirectory.as_deref().map(str::trim) {
                None | Some("" | "." | "/") => String::new(),
                Some(sub) => match crate::catalog::check_relative_path(sub.trim_matches('/')) {
                    Ok(sub) => sub,
                    Err(e) => {
                        err(
                            format!("template_repos[{i}].subdirectory"),
                            format!(
                                "{e}; give the folder holding the bundles, relative to the repo's root (e.g. \"templates\")"
                            ),
                        );
                        String::new()
                    }
                },
            };
            let forge = r.forge.as_ref().and_then(|f| match compile_forge(f) {
                Ok(mut f) => {
                    f.token_file = f.token_file.map(|t| base.join(t));
                    if let Some(app) = &mut f.app {
                        app.private_key_file = base.join(&app.private_key_file);
                    }
                    Some(f)
                }
                Err((field, m)) => {
                    err(format!("template_repos[{i}].forge.{field}"), m);
                    None
                }
            });
            template_repos.push(TemplateRepo {
                name: r.name.clone(),
                url: resolve(&r.url),
                tag_pattern: pattern,
                subdirectory,
                forge,
            });
        }
        let mut spec_repos = Vec::with_capacity(raw.spec_repos.len());
        for (i, r) in raw.spec_repos.iter().enumerate() {
            if !names.insert(r.name.clone()) {
                err(
                    format!("spec_repos[{i}].name"),
                    format!("repo name {:?} is used twice; names must be unique", r.name),
                );
            }
            let folder = r.folder.clone().unwrap_or_else(|| "proton".into());
            if let Err(e) = crate::catalog::check_relative_path(&folder) {
                err(format!("spec_repos[{i}].folder"), e.to_string());
            }
            let forge = r.forge.as_ref().and_then(|f| match compile_forge(f) {
                // A relative token file is relative to the config file, like repo paths.
                Ok(mut f) => {
                    f.token_file = f.token_file.map(|t| base.join(t));
                    if let Some(app) = &mut f.app {
                        app.private_key_file = base.join(&app.private_key_file);
                    }
                    Some(f)
                }
                Err((field, m)) => {
                    err(format!("spec_repos[{i}].forge.{field}"), m);
                    None
                }
            });
            check_template_mappings(&r.templates, &folder, &mut |f, m| {
                err(format!("spec_repos[{i}].templates{f}"), m);
            });
            spec_repos.push(SpecRepo {
                name: r.name.clone(),
                url: resolve(&r.url),
                branch: r.branch.clone().unwrap_or_else(|| "main".into()),
                folder,
                platform: r.platform,
                allow_empty: r.allow_empty,
                forge,
                pull_options: compile_pull_options(&r.proposals, &raw.proposals, &mut |f, m| {
                    err(format!("spec_repos[{i}].proposals.{f}"), m);
                }),
                retired: r.retired,
                templates: r.templates.clone(),
                shard: r.shard,
            });
        }
        let urls = raw
            .template_repos
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("template_repos[{i}].url"), r.url.as_str()))
            .chain(
                raw.spec_repos
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (format!("spec_repos[{i}].url"), r.url.as_str())),
            )
            .chain(
                raw.self_managed
                    .iter()
                    .map(|sm| ("self_managed.url".to_string(), sm.url.as_str())),
            )
            .chain(
                raw.self_managed
                    .iter()
                    .filter_map(|sm| sm.pipeline_repository.as_ref())
                    .map(|p| {
                        (
                            "self_managed.pipeline_repository.url".to_string(),
                            p.url.as_str(),
                        )
                    }),
            );
        for (key, url) in urls {
            if let Err(message) = check_git_url(url) {
                err(key, message);
            }
        }
        let git = compile_git(&raw.git).unwrap_or_else(|es| {
            for (key, message) in es {
                err(key, message);
            }
            Git::default()
        });
        let mut stages = BTreeSet::new();
        for (i, s) in raw.rollout.stages.iter().enumerate() {
            if !stages.insert(s) {
                err(
                    format!("rollout.stages[{i}]"),
                    format!("stage {s:?} is listed twice"),
                );
            }
        }
        let state = raw
            .state
            .clone()
            .unwrap_or_else(|| "sqlite://.protond/state.db".into());
        let state = match state.strip_prefix("sqlite://") {
            Some(path) if !Path::new(path).is_absolute() => {
                format!("sqlite://{}", base.join(path).display())
            }
            _ => state,
        };
        if let Some(id) = &raw.aws.account_id
            && (id.len() != 12 || !id.chars().all(|c| c.is_ascii_digit()))
        {
            err(
                "aws.account_id".into(),
                format!("{id:?} is not a 12-digit AWS account id"),
            );
        }
        let mut errors2 = Vec::new();
        let poll_interval = duration(
            raw.poll_interval.as_deref(),
            Duration::from_secs(30),
            "poll_interval",
            file,
            &mut errors2,
        );
        let soak = duration(
            raw.rollout.soak.as_deref(),
            Duration::ZERO,
            "rollout.soak",
            file,
            &mut errors2,
        );
        let stack_poll_interval = duration(
            raw.aws.poll_interval.as_deref(),
            Duration::from_secs(5),
            "aws.poll_interval",
            file,
            &mut errors2,
        );
        let aws_call_timeout = duration(
            raw.aws.call_timeout.as_deref(),
            Duration::from_secs(30),
            "aws.call_timeout",
            file,
            &mut errors2,
        );
        if aws_call_timeout.is_zero() {
            errors2.push(ConfigError {
                file: file.into(),
                key: "aws.call_timeout".into(),
                message: "must be longer than zero (no AWS call could be answered), e.g. \"30s\""
                    .into(),
            });
        }
        let stack_timeout = duration(
            raw.aws.stack_timeout.as_deref(),
            Duration::from_hours(1),
            "aws.stack_timeout",
            file,
            &mut errors2,
        );
        let shutdown_grace = duration(
            raw.daemon.shutdown_grace.as_deref(),
            Duration::from_secs(30),
            "daemon.shutdown_grace",
            file,
            &mut errors2,
        );
        let proposals = compile_proposals(&raw.proposals).unwrap_or_else(|es| {
            for (key, message) in es {
                errors2.push(ConfigError {
                    file: file.into(),
                    key,
                    message,
                });
            }
            Proposals::default()
        });
        let server = Server::compile(&raw.server, file, &mut errors2);
        let artifacts = ArtifactBucket::compile(&raw.aws, file, &mut errors2);
        let codebuild = CodeBuildConfig::compile(&raw.codebuild, file, &mut errors2);
        let notifications =
            Notifications::compile(&raw.notifications, &raw.notify, file, &mut errors2);
        let drift = DriftConfig::compile(&raw.drift, file, &mut errors2);
        let gate = GateConfig::compile(&raw.gate, file, &mut errors2);
        let ha = ha::compile(&raw, &state, &ha::Process::current(), file, &mut errors2);
        let self_managed = raw.self_managed.as_ref().and_then(|sm| {
            let branch = sm.branch.clone().unwrap_or_else(|| "main".into());
            let forge = self_managed_forge(sm.forge.as_ref(), "self_managed", file, &mut errors2)?;
            let pipelines = match &sm.pipeline_repository {
                None => None,
                Some(p) => Some(PipelineRepository {
                    url: resolve(&p.url),
                    branch: p.branch.clone().unwrap_or_else(|| branch.clone()),
                    forge: self_managed_forge(
                        p.forge.as_ref(),
                        "self_managed.pipeline_repository",
                        file,
                        &mut errors2,
                    )?,
                }),
            };
            let layout = match sm.layout.as_deref() {
                None | Some("auto") => Layout::Auto,
                Some("environments") => Layout::Environments,
                Some("root") => Layout::Root,
                Some(other) => {
                    errors2.push(ConfigError {
                        file: file.into(),
                        key: "self_managed.layout".into(),
                        message: format!(
                            "unknown layout {other:?}; use \"auto\", \"environments\" (environments/<env>/) or \"root\" (<env>/)"
                        ),
                    });
                    return None;
                }
            };
            Some(SelfManaged {
                url: resolve(&sm.url),
                branch,
                forge,
                layout,
                pipelines,
            })
        });
        let mut schedules = Vec::new();
        for (i, expr) in raw.daemon.schedules.iter().enumerate() {
            match parse_cron(expr, "0") {
                Ok(s) => schedules.push(s),
                Err(e) => errors2.push(ConfigError {
                    file: file.into(),
                    key: format!("daemon.schedules[{i}]"),
                    message: format!(
                        "{expr:?} is not a cron expression ({e}); use five fields (minute hour day month weekday, e.g. \"*/10 * * * *\") or six with seconds first (\"0 */10 * * * *\")"
                    ),
                }),
            }
        }
        let mut windows = std::collections::BTreeMap::new();
        for (stage, expr) in &raw.rollout.windows {
            if !raw.rollout.stages.contains(stage) {
                errors2.push(ConfigError {
                    file: file.into(),
                    key: format!("rollout.windows.{stage}"),
                    message: format!("{stage:?} is not one of rollout.stages"),
                });
            }
            match parse_cron(expr, "*") {
                Ok(s) => {
                    windows.insert(stage.clone(), s);
                }
                Err(e) => errors2.push(ConfigError {
                    file: file.into(),
                    key: format!("rollout.windows.{stage}"),
                    message: format!(
                        "{expr:?} is not a cron expression ({e}); the window is every instant it matches, e.g. \"* * 22-23 * * Mon-Fri\""
                    ),
                }),
            }
        }
        let local_credentials = raw.aws.local_credentials.unwrap_or(false);
        if local_credentials && !raw.aws.endpoint_url.as_deref().is_some_and(is_loopback_url) {
            errors2.push(ConfigError {
                file: file.into(),
                key: "aws.local_credentials".into(),
                message: "only with an endpoint_url on 127.0.0.1, [::1] or localhost (fixed test credentials must never reach AWS); remove it to use the default credential chain".into(),
            });
        }
        let timezone = match raw.rollout.timezone.as_deref() {
            None => chrono_tz::UTC,
            Some(tz) => tz.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
                errors2.push(ConfigError {
                    file: file.into(),
                    key: "rollout.timezone".into(),
                    message: format!("{tz:?} is not an IANA time zone, e.g. \"Europe/Berlin\""),
                });
                chrono_tz::UTC
            }),
        };
        let quarantine = quarantine::compile(
            raw.rollout.quarantine_after,
            raw.rollout.quarantine_share.as_deref(),
            raw.rollout.rollback.as_deref(),
            file,
            &mut errors2,
        );
        let freezes = freeze::compile(&raw.rollout.freeze, &raw.rollout.stages, file, &mut errors2);
        if raw.daemon.concurrency == Some(0) {
            errors2.push(ConfigError {
                file: file.into(),
                key: "daemon.concurrency".into(),
                message: "must be at least 1".into(),
            });
        }
        errors.extend(errors2);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            installation: raw.installation.clone(),
            state,
            state_password_file: raw.state_password_file.as_ref().map(|p| base.join(p)),
            ha,
            data_dir: raw
                .data_dir
                .map_or_else(|| base.join(".protond"), |d| base.join(d)),
            poll_interval,
            region: raw.aws.region.unwrap_or_else(|| "us-east-1".into()),
            endpoint_url: raw.aws.endpoint_url,
            account_id: raw.aws.account_id.unwrap_or_else(|| "123456789012".into()),
            template_repos,
            spec_repos,
            git,
            stages: raw.rollout.stages,
            soak,
            windows,
            timezone,
            quarantine,
            freezes,
            aws_max_attempts: raw.aws.max_attempts.unwrap_or(3),
            stack_poll_interval,
            aws_call_timeout,
            stack_timeout,
            change_sets: raw.aws.change_sets.unwrap_or(true),
            local_credentials,
            concurrency: raw.daemon.concurrency.unwrap_or(4),
            deletion_budget: raw.daemon.deletion_budget.unwrap_or(5),
            schedules,
            shutdown_grace,
            watch: raw.daemon.watch.unwrap_or(true),
            proposals,
            server,
            self_managed,
            artifacts,
            codebuild,
            notifications,
            drift,
            gate,
        })
    }
}

impl Default for Proposals {
    fn default() -> Self {
        Self {
            enabled: true,
            max_per_hour: 10,
            branch_prefix: "protond/".into(),
            author_name: "protond".into(),
            author_email: "protond@localhost".into(),
            signing: None,
        }
    }
}

impl Config {
    /// What a fetch of the mirror of `url` brings in, within `[git]`'s limits: the union of
    /// what every entry sharing that mirror reads (a spec repo its branch, a template repo the
    /// tags its pattern can match, the infrastructure repo its branch). Retired repos read
    /// nothing.
    #[must_use]
    pub fn fetch_options(&self, url: &str) -> crate::source::FetchOptions {
        let folder = crate::source::Mirror::key_of(url);
        self.fetch_options_by_mirror()
            .remove(&folder)
            .unwrap_or_else(|| self.limited(&[]))
    }

    /// [`Config::fetch_options`] of every mirror, by mirror folder (a URL that cannot be
    /// parsed stands for itself), found in one pass: a fetch round asking each mirror's
    /// options in turn parsed every configured URL once per mirror (issue 20: quadratic in
    /// the repos, seconds per round at 5,000 repos).
    #[must_use]
    pub fn fetch_options_by_mirror(
        &self,
    ) -> std::collections::HashMap<String, crate::source::FetchOptions> {
        use crate::source::Want;
        let mut wants: std::collections::HashMap<String, Vec<Want>> =
            std::collections::HashMap::new();
        let mut want = |url: &str, w: Want| {
            wants
                .entry(crate::source::Mirror::key_of(url))
                .or_default()
                .push(w);
        };
        for r in &self.template_repos {
            want(
                &r.url,
                Want::TagsStartingWith(tag_prefix(&r.tag_pattern).to_owned()),
            );
        }
        for r in self.spec_repos.iter().filter(|r| !r.retired) {
            want(&r.url, Want::Branch(r.branch.clone()));
        }
        if let Some(sm) = &self.self_managed {
            want(&sm.url, Want::Branch(sm.branch.clone()));
            if let Some(p) = &sm.pipelines {
                want(&p.url, Want::Branch(p.branch.clone()));
            }
        }
        wants
            .into_iter()
            .map(|(folder, w)| (folder, self.limited(&w)))
            .collect()
    }

    /// Fetch options for `wants` within `[git]`'s limits.
    fn limited(&self, wants: &[crate::source::Want]) -> crate::source::FetchOptions {
        crate::source::FetchOptions::new(wants)
            .with_limits(self.git.max_object_bytes, self.git.max_pack_bytes)
    }
}

/// A self-managed repo's forge (`key` is its table): `git` when none is given; `None` (with
/// the error pushed) when it is invalid.
fn self_managed_forge(
    forge: Option<&RawForge>,
    key: &str,
    file: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<ForgeConfig> {
    match forge {
        None => Some(ForgeConfig {
            kind: ForgeKind::Git,
            api_url: String::new(),
            repo: String::new(),
            token_env: String::new(),
            token_file: None,
            app: None,
        }),
        Some(f) => match compile_forge(f) {
            Ok(f) => Some(f),
            Err((field, message)) => {
                errors.push(ConfigError {
                    file: file.into(),
                    key: format!("{key}.forge.{field}"),
                    message,
                });
                None
            }
        },
    }
}

/// The literal start of a tag pattern, before its first placeholder: every tag it matches
/// starts with it.
fn tag_prefix(pattern: &str) -> &str {
    let first = ["{template}", "{major}", "{minor}"]
        .iter()
        .filter_map(|p| pattern.find(p))
        .min()
        .unwrap_or(pattern.len());
    &pattern[..first]
}

/// How to give protond git credentials, for messages.
const CREDENTIALS_HINT: &str = "give the token in the environment variable PROTOND_GIT_TOKEN (user name in PROTOND_GIT_USER, default x-access-token) or through a git credential helper (credential.helper)";

/// Whether `host` (of a URL's authority) is this machine's loopback.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The user info and host of a `scheme://` URL's authority.
fn authority(url: &str) -> Option<(&str, Option<&str>, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let host = if hostport.starts_with('[') {
        hostport.split_inclusive(']').next().unwrap_or(hostport)
    } else {
        hostport.split(':').next().unwrap_or(hostport)
    };
    Some((scheme, userinfo, host))
}

/// A git URL carries no credential and is not plain http (except to this machine).
///
/// Credentials in a URL reach logs, the state store and the command line of every `git`
/// that uses it; plain http would send credentials and the repository (which protond
/// deploys) unencrypted and unauthenticated.
fn check_git_url(url: &str) -> Result<(), String> {
    let Some((scheme, userinfo, host)) = authority(url) else {
        return Ok(());
    };
    let shown = crate::source::redact_url(url);
    let http = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    match userinfo {
        Some(info) if info.contains(':') => {
            return Err(format!(
                "{shown:?} carries a password in the URL; remove it and {CREDENTIALS_HINT}"
            ));
        }
        Some(_) if http => {
            return Err(format!(
                "{shown:?} carries a user name in the URL, which forges also accept as a token; remove it and {CREDENTIALS_HINT}"
            ));
        }
        _ => {}
    }
    if scheme.eq_ignore_ascii_case("http") && !is_loopback(host) {
        return Err(format!(
            "{shown:?} is plain http: credentials and the repo's content would travel unencrypted; use https:// (plain http is only accepted for 127.0.0.1, ::1 and localhost)"
        ));
    }
    Ok(())
}

fn compile_git(g: &RawGit) -> Result<Git, Vec<(String, String)>> {
    let d = Git::default();
    let mut errors = Vec::new();
    let mut bytes = |value: Option<u64>, default: u64, key: &str| match value {
        Some(v) if v < 1024 * 1024 => {
            errors.push((
                format!("git.{key}"),
                format!("{v} bytes is too small to fetch any repo; use at least 1048576 (1 MiB), or leave it out for {default}"),
            ));
            default
        }
        Some(v) => v,
        None => default,
    };
    let max_object_bytes = bytes(g.max_object_bytes, d.max_object_bytes, "max_object_bytes");
    let max_pack_bytes = bytes(g.max_pack_bytes, d.max_pack_bytes, "max_pack_bytes");
    let mut timeout = |value: Option<&str>, default: Duration, key: &str| {
        let mut found = Vec::new();
        let parsed = duration(value, default, &format!("git.{key}"), "", &mut found);
        errors.extend(found.into_iter().map(|e| (e.key, e.message)));
        if parsed.is_zero() {
            errors.push((
                format!("git.{key}"),
                "must be longer than zero, e.g. \"60s\"".into(),
            ));
        }
        parsed
    };
    let fetch_timeout = timeout(g.fetch_timeout.as_deref(), d.fetch_timeout, "fetch_timeout");
    let read_timeout = timeout(g.read_timeout.as_deref(), d.read_timeout, "read_timeout");
    let fetch_concurrency = match g.fetch_concurrency {
        Some(n @ 1..=64) => n,
        Some(n) => {
            errors.push((
                "git.fetch_concurrency".into(),
                format!(
                    "{n} is out of range; use 1 to 64, or leave it out for {}",
                    d.fetch_concurrency
                ),
            ));
            d.fetch_concurrency
        }
        None => d.fetch_concurrency,
    };
    if errors.is_empty() {
        Ok(Git {
            max_object_bytes,
            max_pack_bytes,
            fetch_timeout,
            read_timeout,
            fetch_concurrency,
        })
    } else {
        Err(errors)
    }
}

fn compile_forge(f: &RawForge) -> Result<ForgeConfig, (&'static str, String)> {
    let kind = match f.kind.to_ascii_lowercase().as_str() {
        "github" => ForgeKind::GitHub,
        "gitlab" => ForgeKind::GitLab,
        "gitea" | "forgejo" => ForgeKind::Gitea,
        "git" => ForgeKind::Git,
        other => {
            return Err((
                "kind",
                format!("unknown forge {other:?}; use github, gitlab, gitea (also Forgejo) or git"),
            ));
        }
    };
    if kind == ForgeKind::Git {
        return Ok(ForgeConfig {
            kind,
            api_url: String::new(),
            repo: String::new(),
            token_env: String::new(),
            token_file: None,
            app: None,
        });
    }
    let api_url = match (&f.api_url, kind) {
        (Some(u), _) => u.trim_end_matches('/').to_string(),
        (None, ForgeKind::GitHub) => "https://api.github.com".to_string(),
        (None, _) => {
            return Err((
                "api_url",
                format!(
                    "required for {}: the API base URL, e.g. \"https://git.example.com/api/{}\"",
                    kind.as_str(),
                    if kind == ForgeKind::GitLab {
                        "v4"
                    } else {
                        "v1"
                    }
                ),
            ));
        }
    };
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        return Err(("api_url", format!("{api_url:?} is not an http(s) URL")));
    }
    // The API token travels in a header: never over plain http, never in the URL.
    if let Some((scheme, userinfo, host)) = authority(&api_url) {
        if userinfo.is_some() {
            return Err((
                "api_url",
                format!(
                    "{:?} carries credentials in the URL; remove them and give the token in the environment variable named by token_env",
                    crate::source::redact_url(&api_url)
                ),
            ));
        }
        if scheme == "http" && !is_loopback(host) {
            return Err((
                "api_url",
                format!(
                    "{api_url:?} is plain http: the API token would travel unencrypted; use https:// (plain http is only accepted for 127.0.0.1, ::1 and localhost)"
                ),
            ));
        }
    }
    let repo = match &f.repo {
        Some(r) if r.contains('/') && !r.starts_with('/') && !r.ends_with('/') => r.clone(),
        Some(r) => {
            return Err((
                "repo",
                format!("{r:?} is not a repository path; write owner/name"),
            ));
        }
        None => {
            return Err((
                "repo",
                "required: the repository on the forge, owner/name".into(),
            ));
        }
    };
    let token_env = f.token_env.clone().unwrap_or_else(|| {
        match kind {
            ForgeKind::GitHub => "GITHUB_TOKEN",
            ForgeKind::GitLab => "GITLAB_TOKEN",
            _ => "GITEA_TOKEN",
        }
        .to_string()
    });
    Ok(ForgeConfig {
        kind,
        api_url,
        repo,
        token_env,
        token_file: f.token_file.as_ref().map(PathBuf::from),
        app: compile_github_app(f, kind)?,
    })
}

/// A forge's GitHub App keys: both `app_id` and `private_key_file`, or neither; GitHub only.
fn compile_github_app(
    f: &RawForge,
    kind: ForgeKind,
) -> Result<Option<GitHubApp>, (&'static str, String)> {
    let app = match (f.app_id, &f.private_key_file) {
        (None, None) if f.installation_id.is_some() => {
            return Err((
                "installation_id",
                "is only used with app_id and private_key_file (GitHub App authentication); add them or remove it".into(),
            ));
        }
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err((
                "private_key_file",
                "required with app_id: the path of the GitHub App's private key (.pem)".into(),
            ));
        }
        (None, Some(_)) => {
            return Err((
                "app_id",
                "required with private_key_file: the GitHub App's id (a number, on the App's settings page)".into(),
            ));
        }
        (Some(app_id), Some(key)) => GitHubApp {
            app_id,
            private_key_file: PathBuf::from(key),
            installation_id: f.installation_id,
        },
    };
    if kind != ForgeKind::GitHub {
        return Err((
            "app_id",
            format!(
                "GitHub App authentication is for kind = \"github\", not {:?}; give this forge a token (token_env or token_file)",
                kind.as_str()
            ),
        ));
    }
    if f.token_file.is_some() {
        return Err((
            "token_file",
            "cannot be used with app_id: the App's installation tokens are used; remove one".into(),
        ));
    }
    Ok(Some(app))
}

/// Checks a spec repo's `proposals = { ... }`; the schedule falls back to `[proposals]`'s.
fn compile_pull_options(
    p: &RawPullOptions,
    global: &RawProposals,
    err: &mut dyn FnMut(&str, String),
) -> PullOptions {
    for (field, names) in [
        ("labels", &p.labels),
        ("reviewers", &p.reviewers),
        ("assignees", &p.assignees),
    ] {
        if let Some(bad) = names
            .iter()
            .find(|n| n.trim().is_empty() || n.contains(','))
        {
            err(
                field,
                format!(
                    "{bad:?} is not a name; give each one as its own string, e.g. [\"deps\", \"upgrade\"]"
                ),
            );
        }
    }
    let schedule = p.schedule.as_ref().or(global.schedule.as_ref()).and_then(|expr| {
        parse_cron(expr, "*")
            .map_err(|e| {
                err(
                    "schedule",
                    format!(
                        "{expr:?} is not a cron expression ({e}); pull requests open in every minute it matches, e.g. \"* 0-5 * * 1\" (Mondays before 6am)"
                    ),
                );
            })
            .ok()
    });
    PullOptions {
        labels: p.labels.clone(),
        reviewers: p.reviewers.clone(),
        assignees: p.assignees.clone(),
        draft: p.draft,
        auto_merge: p.auto_merge,
        schedule,
        dashboard: p.dashboard,
    }
}

fn compile_proposals(p: &RawProposals) -> Result<Proposals, Vec<(String, String)>> {
    let d = Proposals::default();
    let mut errors = Vec::new();
    let author = p
        .author
        .clone()
        .unwrap_or_else(|| format!("{} <{}>", d.author_name, d.author_email));
    let parsed = author
        .split_once('<')
        .and_then(|(n, rest)| Some((n.trim(), rest.strip_suffix('>')?.trim())))
        .filter(|(n, e)| !n.is_empty() && e.contains('@'));
    if parsed.is_none() {
        errors.push((
            "proposals.author".to_string(),
            format!("{author:?} is not `Name <email>`, e.g. \"protond <protond@example.com>\""),
        ));
    }
    let branch_prefix = p.branch_prefix.clone().unwrap_or(d.branch_prefix);
    if branch_prefix.is_empty()
        || branch_prefix.starts_with('/')
        || branch_prefix.contains("..")
        || branch_prefix
            .chars()
            .any(|c| c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        errors.push((
            "proposals.branch_prefix".into(),
            format!("{branch_prefix:?} is not a valid branch name prefix, e.g. \"protond/\""),
        ));
    }
    let signing = compile_signing(p, &mut errors);
    match parsed {
        Some((name, email)) if errors.is_empty() => Ok(Proposals {
            enabled: p.enabled.unwrap_or(d.enabled),
            max_per_hour: p.max_per_hour.unwrap_or(d.max_per_hour),
            branch_prefix,
            author_name: name.to_string(),
            author_email: email.to_string(),
            signing,
        }),
        _ => Err(errors),
    }
}

/// `[proposals] sign` and `signing_key`: both or neither; an SSH key as an absolute path.
fn compile_signing(p: &RawProposals, errors: &mut Vec<(String, String)>) -> Option<Signing> {
    let mut fail = |key: &str, message: String| {
        errors.push((format!("proposals.{key}"), message));
        None
    };
    let (sign, key) = match (&p.sign, &p.signing_key) {
        (None, None) => return None,
        (None, Some(_)) => {
            return fail(
                "sign",
                "required with signing_key: \"ssh\" or \"gpg\"".into(),
            );
        }
        (Some(_), None) => {
            return fail(
                "signing_key",
                "required with sign: an SSH key file (absolute path) for \"ssh\", a key id for \"gpg\"".into(),
            );
        }
        (Some(s), Some(k)) => (s, k.trim()),
    };
    let format = match sign.as_str() {
        "ssh" => "ssh",
        "gpg" => "openpgp",
        other => {
            return fail(
                "sign",
                format!("{other:?} is not a signing format; use \"ssh\" or \"gpg\""),
            );
        }
    };
    if key.is_empty() || (format == "ssh" && !Path::new(key).is_absolute()) {
        return fail(
            "signing_key",
            format!(
                "{key:?} is not an absolute path to an SSH key file, e.g. \"/etc/protond/signing_key\""
            ),
        );
    }
    Some(Signing {
        format,
        key: key.to_string(),
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Checks a spec repo's `templates` mappings: each path safe, inside the spec `folder` (or
/// it would never match), given once, and naming a valid template.
fn check_template_mappings(
    mappings: &[crate::spec::templates::TemplateMapping],
    folder: &str,
    err: &mut dyn FnMut(String, String),
) {
    let mut seen = BTreeSet::new();
    for (j, m) in mappings.iter().enumerate() {
        let at = format!("[{j}]");
        match crate::catalog::check_relative_path(&m.path) {
            Err(e) => err(format!("{at}.path"), e.to_string()),
            Ok(path) => {
                let inside =
                    folder == "." || path == folder || path.starts_with(&format!("{folder}/"));
                if !inside {
                    err(
                        format!("{at}.path"),
                        format!(
                            "{path:?} is outside the spec folder {folder:?}, so no spec file is read there; give a path under {folder:?} (paths are relative to the repo's root), or change `folder`"
                        ),
                    );
                }
                if !seen.insert(path.clone()) {
                    err(
                        format!("{at}.path"),
                        format!("{path:?} is mapped twice; keep one mapping per folder or file"),
                    );
                }
            }
        }
        if let Some(resource) = &m.resource {
            #[allow(clippy::case_sensitive_file_extension_comparisons)]
            let file = m.path.ends_with(".yaml") || m.path.ends_with(".yml");
            if !file {
                err(
                    format!("{at}.resource"),
                    format!(
                        "names the resource of one spec file, but {:?} is a folder; map the file itself (its path ending in .yaml or .yml), or remove `resource`",
                        m.path
                    ),
                );
            }
            if !crate::spec::is_valid_name(resource) {
                err(
                    format!("{at}.resource"),
                    format!(
                        "{resource:?} is not a valid resource name: use letters, digits, '-' and '_'"
                    ),
                );
            }
        }
        if !crate::spec::is_valid_name(&m.name) {
            err(
                format!("{at}.name"),
                format!(
                    "{:?} is not a valid template name: use letters, digits, '-' and '_'",
                    m.name
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// `[aws] artifact_bucket`, `artifact_prefix`, `artifact_region`: defaults, and errors
    /// that name the key and the fix.
    #[test]
    fn the_artifact_bucket_keys() {
        let compile = |aws: &str| {
            let raw: RawAws = toml::from_str(aws).expect("parses");
            let mut errors = Vec::new();
            let out = ArtifactBucket::compile(&raw, "proton.toml", &mut errors);
            (out, errors)
        };
        assert_eq!(compile("region = \"eu-west-1\"\n"), (None, Vec::new()));
        let (b, errors) = compile("region = \"eu-west-1\"\nartifact_bucket = \"my-artifacts\"\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            b,
            Some(ArtifactBucket {
                bucket: "my-artifacts".into(),
                prefix: "protond".into(),
                region: "eu-west-1".into(),
            })
        );
        let (b, _) = compile(
            "artifact_bucket = \"b.example\"\nartifact_prefix = \"/ci/x/\"\nartifact_region = \"us-west-2\"\n",
        );
        let b = b.expect("a bucket");
        assert_eq!(
            (b.prefix.as_str(), b.region.as_str()),
            ("ci/x", "us-west-2")
        );
        let (_, errors) = compile("artifact_bucket = \"My_Bucket\"\nartifact_prefix = \"a b\"\n");
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["aws.artifact_bucket", "aws.artifact_prefix"],
            "{errors:?}"
        );
        assert!(errors[0].to_string().starts_with(
            "proton.toml: aws.artifact_bucket: \"My_Bucket\" is not an S3 bucket name"
        ));
    }

    #[test]
    fn example_config_compiles() {
        let text = include_str!("../proton.toml.example");
        let raw: RawConfig = toml::from_str(text).expect("example parses");
        let cfg = Config::compile(raw, "proton.toml.example", Path::new("/srv")).expect("compiles");
        assert!(!cfg.template_repos.is_empty());
        assert!(!cfg.spec_repos.is_empty());
        assert!(cfg.template_repos[0].url.starts_with("/srv/"));
        assert_eq!(cfg.stages, vec!["dev", "prod"]);
        let gh = cfg.spec_repos[1].forge.as_ref().expect("forge");
        assert_eq!(gh.kind, ForgeKind::GitHub);
        assert_eq!(gh.api_url, "https://api.github.com");
        assert_eq!(cfg.proposals.author_email, "protond@example.com");
    }

    #[test]
    fn pull_options_token_files_and_schedules() {
        let text = "[proposals]\nschedule = \"* 0-5 * * 1\"\n\
                    [[spec_repos]]\nname = \"a\"\nurl = \"a\"\n\
                    forge = { kind = \"github\", repo = \"o/r\", token_file = \"/run/t\" }\n\
                    proposals = { labels = [\"deps\"], reviewers = [\"al\"], assignees = [\"bo\"], draft = true, auto_merge = true }\n\
                    [[spec_repos]]\nname = \"b\"\nurl = \"b\"\nproposals = { schedule = \"* * * * *\" }\n";
        let raw: RawConfig = toml::from_str(text).expect("parses");
        let cfg = Config::compile(raw, "p.toml", Path::new(".")).expect("valid");
        let a = &cfg.spec_repos[0];
        assert_eq!(
            a.forge.as_ref().and_then(|f| f.token_file.clone()),
            Some(PathBuf::from("/run/t"))
        );
        let o = &a.pull_options;
        assert_eq!(
            (
                o.labels.as_slice(),
                o.reviewers.as_slice(),
                o.assignees.as_slice()
            ),
            (
                &["deps".to_string()][..],
                &["al".to_string()][..],
                &["bo".to_string()][..]
            )
        );
        assert!(o.draft && o.auto_merge);
        // The global schedule (Mondays 00:00-05:59) applies to a; b has its own (always).
        let monday_3am =
            chrono::DateTime::parse_from_rfc3339("2026-11-30T03:00:00Z").expect("time");
        let tuesday = chrono::DateTime::parse_from_rfc3339("2026-12-01T03:00:00Z").expect("time");
        let sa = o.schedule.as_ref().expect("global schedule");
        assert!(sa.includes(monday_3am.with_timezone(&chrono::Utc)));
        assert!(!sa.includes(tuesday.with_timezone(&chrono::Utc)));
        let sb = cfg.spec_repos[1]
            .pull_options
            .schedule
            .as_ref()
            .expect("own schedule");
        assert!(sb.includes(tuesday.with_timezone(&chrono::Utc)));

        let bad = "[[spec_repos]]\nname = \"a\"\nurl = \"a\"\nproposals = { labels = [\"a,b\"], schedule = \"soon\" }\n";
        let raw: RawConfig = toml::from_str(bad).expect("parses");
        let errs = Config::compile(raw, "p.toml", Path::new(".")).expect_err("invalid");
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        for key in [
            "spec_repos[0].proposals.labels:",
            "spec_repos[0].proposals.schedule:",
        ] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(&format!("p.toml: {key}"))),
                "{key} in {lines:#?}"
            );
        }
    }

    #[test]
    fn github_app_keys_are_checked_together_and_resolved_beside_the_config() {
        let text = "[[spec_repos]]\nname = \"a\"\nurl = \"a\"\n\
                    forge = { kind = \"github\", repo = \"o/r\", app_id = 7, private_key_file = \"app.pem\" }\n";
        let raw: RawConfig = toml::from_str(text).expect("parses");
        let cfg = Config::compile(raw, "p.toml", Path::new("/etc/protond")).expect("valid");
        let app = cfg.spec_repos[0].forge.as_ref().and_then(|f| f.app.clone());
        assert_eq!(
            app,
            Some(GitHubApp {
                app_id: 7,
                private_key_file: PathBuf::from("/etc/protond/app.pem"),
                installation_id: None,
            })
        );
        let bad = "[[spec_repos]]\nname = \"a\"\nurl = \"a\"\nforge = { kind = \"github\", repo = \"o/r\", app_id = 7 }\n\
                   [[spec_repos]]\nname = \"b\"\nurl = \"b\"\nforge = { kind = \"gitea\", api_url = \"https://g/api/v1\", repo = \"o/r\", app_id = 7, private_key_file = \"k\" }\n\
                   [[spec_repos]]\nname = \"c\"\nurl = \"c\"\nforge = { kind = \"github\", repo = \"o/r\", installation_id = 3 }\n";
        let raw: RawConfig = toml::from_str(bad).expect("parses");
        let errs = Config::compile(raw, "p.toml", Path::new(".")).expect_err("invalid");
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        for key in [
            "spec_repos[0].forge.private_key_file:",
            "spec_repos[1].forge.app_id:",
            "spec_repos[2].forge.installation_id:",
        ] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(&format!("p.toml: {key}"))),
                "{key} in {lines:#?}"
            );
        }
    }

    #[test]
    fn proposal_signing_needs_a_format_and_a_key() {
        let ok = "[proposals]\nsign = \"ssh\"\nsigning_key = \"/etc/protond/key\"\n";
        let raw: RawConfig = toml::from_str(ok).expect("parses");
        let cfg = Config::compile(raw, "p.toml", Path::new(".")).expect("valid");
        assert_eq!(
            cfg.proposals.signing,
            Some(Signing {
                format: "ssh",
                key: "/etc/protond/key".into()
            })
        );
        for (text, key) in [
            (
                "sign = \"ssh\"\nsigning_key = \"key\"",
                "proposals.signing_key",
            ),
            ("sign = \"x509\"\nsigning_key = \"k\"", "proposals.sign"),
            ("signing_key = \"/k\"", "proposals.sign"),
            ("sign = \"gpg\"", "proposals.signing_key"),
        ] {
            let raw: RawConfig = toml::from_str(&format!("[proposals]\n{text}\n")).expect("parses");
            let errs = Config::compile(raw, "p.toml", Path::new(".")).expect_err("invalid");
            let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(&format!("p.toml: {key}:"))),
                "{key} in {lines:#?}"
            );
        }
        let gpg = "[proposals]\nsign = \"gpg\"\nsigning_key = \"ABCD1234\"\n";
        let raw: RawConfig = toml::from_str(gpg).expect("parses");
        let cfg = Config::compile(raw, "p.toml", Path::new(".")).expect("valid");
        assert_eq!(cfg.proposals.signing.map(|s| s.format), Some("openpgp"));
    }

    #[test]
    fn forge_and_proposal_errors_name_the_key() {
        let text = "[proposals]\nauthor = \"nobody\"\nbranch_prefix = \"a b\"\n\
                    [[spec_repos]]\nname = \"a\"\nurl = \"a\"\nforge = { kind = \"bitbucket\" }\n\
                    [[spec_repos]]\nname = \"b\"\nurl = \"b\"\nforge = { kind = \"gitlab\", repo = \"g/p\" }\n\
                    [[spec_repos]]\nname = \"c\"\nurl = \"c\"\nforge = { kind = \"github\", repo = \"noslash\" }\n\
                    [[spec_repos]]\nname = \"d\"\nurl = \"d\"\nforge = { kind = \"forgejo\", api_url = \"ftp://x\", repo = \"o/r\" }\n";
        let raw: RawConfig = toml::from_str(text).expect("parses");
        let errs = Config::compile(raw, "p.toml", Path::new(".")).expect_err("invalid");
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        for want in [
            "p.toml: spec_repos[0].forge.kind: unknown forge \"bitbucket\"; use github, gitlab, gitea (also Forgejo) or git",
            "p.toml: spec_repos[1].forge.api_url: required for gitlab: the API base URL, e.g. \"https://git.example.com/api/v4\"",
            "p.toml: spec_repos[2].forge.repo: \"noslash\" is not a repository path; write owner/name",
            "p.toml: spec_repos[3].forge.api_url: \"ftp://x\" is not an http(s) URL",
        ] {
            assert!(
                lines.iter().any(|l| l == want),
                "missing {want:?} in {lines:#?}"
            );
        }
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("p.toml: proposals.author:")),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("p.toml: proposals.branch_prefix:")),
            "{lines:#?}"
        );
    }

    #[test]
    fn server_limits_have_safe_defaults_and_named_errors() {
        let compile = |text: &str| {
            let raw: RawConfig = toml::from_str(text).expect("parses");
            Config::compile(raw, "p.toml", Path::new("."))
        };
        let s = compile("").expect("compiles").server;
        assert_eq!(s.max_connections, 512);
        assert_eq!(s.max_body_bytes, 5 * 1024 * 1024);
        assert_eq!(s.max_inflight_body_bytes, 32 * 1024 * 1024);
        assert_eq!(s.header_timeout, Duration::from_secs(10));
        assert_eq!(s.body_timeout, Duration::from_secs(30));
        assert_eq!(s.idle_timeout, Duration::from_mins(1));
        assert_eq!(s.request_timeout, Duration::from_mins(1));
        assert_eq!(s.webhook_dedupe_window, Duration::from_hours(1));
        assert_eq!(s.webhook_dedupe_entries, 10_000);
        assert!(s.allowed_hosts.is_empty());
        let errs = compile(
            "[server]\nmax_connections = 2\nmax_body_bytes = 100\nmax_inflight_body_bytes = 10\n\
             header_timeout = \"0s\"\nbody_timeout = \"2m\"\nrequest_timeout = \"1m\"\n\
             idle_timeout = \"later\"\nallowed_hosts = [\"ok.example:8443\", \"https://x.example/\", \"a b\"]\n",
        )
        .expect_err("invalid");
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.header_timeout",
                "server.idle_timeout",
                "server.body_timeout",
                "server.max_connections",
                "server.max_body_bytes",
                "server.allowed_hosts[1]",
                "server.allowed_hosts[2]",
            ],
            "{errs:#?}"
        );
        assert!(
            errs[2]
                .message
                .contains("longer than server.request_timeout")
        );
    }

    #[test]
    fn spec_template_mappings_and_subdirectories_are_checked() {
        let text = "state = \"sqlite://s.db\"\ndata_dir = \"d\"\n[[template_repos]]\nname = \"t\"\nurl = \"t\"\nsubdirectory = \"templates/\"\n[[spec_repos]]\nname = \"s\"\nurl = \"s\"\ntemplates = [{ path = \"proton/envs\", name = \"env\", major = 1 }, { path = \"proton/a.yaml\", name = \"svc\", major = 2, resource = \"api\" }]\n";
        let raw: RawConfig = toml::from_str(text).expect("parses");
        let cfg = Config::compile(raw, "p.toml", Path::new("/srv")).expect("compiles");
        assert_eq!(cfg.template_repos[0].subdirectory, "templates");
        assert_eq!(cfg.spec_repos[0].templates.len(), 2);
        let text = "state = \"sqlite://s.db\"\ndata_dir = \"d\"\n[[template_repos]]\nname = \"t\"\nurl = \"t\"\nsubdirectory = \"../up\"\n[[spec_repos]]\nname = \"s\"\nurl = \"s\"\ntemplates = [{ path = \"elsewhere\", name = \"e\", major = 1 }, { path = \"proton/x\", name = \"bad name\", major = 1, resource = \"r\" }, { path = \"proton/x\", name = \"e\", major = 1 }]\n";
        let raw: RawConfig = toml::from_str(text).expect("parses");
        let errs = Config::compile(raw, "p.toml", Path::new("/srv")).expect_err("invalid");
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "template_repos[0].subdirectory",
                "spec_repos[0].templates[0].path",
                "spec_repos[0].templates[1].resource",
                "spec_repos[0].templates[1].name",
                "spec_repos[0].templates[2].path",
            ],
            "{errs:#?}"
        );
    }

    #[test]
    fn host_values_split_into_name_and_port() {
        assert_eq!(
            split_host_port("LocalHost:8080"),
            Some(("localhost".into(), Some(8080)))
        );
        assert_eq!(split_host_port("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(split_host_port("[::1]"), Some(("::1".into(), None)));
        assert_eq!(
            split_host_port("example.com"),
            Some(("example.com".into(), None))
        );
        for bad in [
            "", ":80", "a:b", "a:0", "a:99999", "[::1", "a/b", "a b", "::1",
        ] {
            assert_eq!(split_host_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_error_is_reported() {
        let text = "poll_interval = \"soon\"\nstate = \"mysql://x\"\n[[template_repos]]\nname = \"a\"\nurl = \"x\"\ntag_pattern = \"{template}-{major}\"\n[[spec_repos]]\nname = \"a\"\nurl = \"y\"\nfolder = \"../up\"\n[rollout]\nstages = [\"dev\", \"dev\"]\nsoak = \"forever\"\n";
        let raw: RawConfig = toml::from_str(text).expect("parses");
        let errs = Config::compile(raw, "p.toml", Path::new(".")).expect_err("invalid");
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "poll_interval",
            "state",
            "template_repos[0].tag_pattern",
            "spec_repos[0].name",
            "spec_repos[0].folder",
            "rollout.stages[1]",
            "rollout.soak",
        ] {
            assert!(keys.contains(&k), "missing {k} in {errs:?}");
        }
    }

    #[test]
    fn pipelines_go_to_the_pipeline_repository_when_one_is_set() {
        let compile = |extra: &str| {
            let text = format!("[self_managed]\nurl = \"infra\"\nbranch = \"trunk\"\n{extra}");
            let raw: RawConfig = toml::from_str(&text).expect("parses");
            Config::compile(raw, "p.toml", Path::new("."))
        };
        let sm = compile("")
            .expect("valid")
            .self_managed
            .expect("self_managed");
        assert!(sm.repo_for("pipeline/api").url.ends_with("infra"));
        let sm = compile("[self_managed.pipeline_repository]\nurl = \"pipes\"")
            .expect("valid")
            .self_managed
            .expect("self_managed");
        let pipe = sm.repo_for("pipeline/api");
        assert!(pipe.url.ends_with("pipes"), "{}", pipe.url);
        assert_eq!(
            pipe.branch, "trunk",
            "the infrastructure repo's branch by default"
        );
        assert_eq!(pipe.forge.kind, ForgeKind::Git);
        let inst = sm.repo_for("service_instance/api/api-dev");
        assert!(inst.url.ends_with("infra"), "{}", inst.url);
        let errs = compile(
            "[self_managed.pipeline_repository]\nurl = \"pipes\"\nforge = { kind = \"svn\", api_url = \"x\", repo = \"a/b\", token_env = \"T\" }",
        )
        .expect_err("invalid forge");
        assert!(
            errs[0]
                .key
                .starts_with("self_managed.pipeline_repository.forge."),
            "{errs:?}"
        );
    }

    #[test]
    fn self_managed_layout_is_one_of_protons() {
        let compile = |layout: &str| {
            let text = format!("[self_managed]\nurl = \"infra\"\n{layout}");
            let raw: RawConfig = toml::from_str(&text).expect("parses");
            Config::compile(raw, "p.toml", Path::new("."))
        };
        let layout = |l: &str| {
            compile(l)
                .expect("valid")
                .self_managed
                .expect("self_managed")
                .layout
        };
        assert_eq!(layout(""), Layout::Auto);
        assert_eq!(layout("layout = \"environments\""), Layout::Environments);
        assert_eq!(layout("layout = \"root\""), Layout::Root);
        let errs = compile("layout = \"flat\"").expect_err("invalid");
        assert_eq!(errs[0].key, "self_managed.layout");
        assert!(
            errs[0].message.contains("\"environments\""),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn repo_urls_carry_no_credentials_and_are_never_plain_http() {
        let text = "[[template_repos]]\nname = \"t\"\nurl = \"https://bot:s3cret@git.example.com/t.git\"\n\
                    [[spec_repos]]\nname = \"a\"\nurl = \"https://tok3n@git.example.com/a.git\"\n\
                    [[spec_repos]]\nname = \"b\"\nurl = \"http://git.example.com/b.git\"\n\
                    [[spec_repos]]\nname = \"c\"\nurl = \"ssh://git:pw@git.example.com/c.git\"\n\
                    [[spec_repos]]\nname = \"ok1\"\nurl = \"ssh://git@git.example.com/ok.git\"\n\
                    [[spec_repos]]\nname = \"ok2\"\nurl = \"git@git.example.com:o/ok.git\"\n\
                    [[spec_repos]]\nname = \"ok3\"\nurl = \"http://127.0.0.1:8080/ok.git\"\n\
                    [[spec_repos]]\nname = \"ok4\"\nurl = \"http://[::1]:8080/ok.git\"\n\
                    [[spec_repos]]\nname = \"ok5\"\nurl = \"https://git.example.com/ok.git\"\n\
                    [[spec_repos]]\nname = \"d\"\nurl = \"d\"\nforge = { kind = \"gitea\", api_url = \"http://git.example.com/api/v1\", repo = \"o/r\" }\n\
                    [self_managed]\nurl = \"https://x:y@git.example.com/infra.git\"\n";
        let raw: RawConfig = toml::from_str(text).expect("parses");
        let errs = Config::compile(raw, "p.toml", Path::new(".")).expect_err("invalid");
        let by_key: BTreeMap<&str, &str> = errs
            .iter()
            .map(|e| (e.key.as_str(), e.message.as_str()))
            .collect();
        let keys: Vec<&str> = by_key.keys().copied().collect();
        assert_eq!(
            keys,
            [
                "self_managed.url",
                "spec_repos[0].url",
                "spec_repos[1].url",
                "spec_repos[2].url",
                "spec_repos[8].forge.api_url",
                "template_repos[0].url",
            ],
            "{errs:#?}"
        );
        for e in &errs {
            let line = e.to_string();
            assert!(
                !line.contains("s3cret") && !line.contains("tok3n"),
                "{line}"
            );
        }
        let password = by_key["template_repos[0].url"];
        assert!(password.contains("carries a password"), "{password}");
        assert!(password.contains("PROTOND_GIT_TOKEN"), "{password}");
        assert!(password.contains("credential helper"), "{password}");
        assert!(by_key["spec_repos[0].url"].contains("user name"));
        assert!(by_key["spec_repos[1].url"].contains("plain http"));
        assert!(by_key["spec_repos[1].url"].contains("https://"));
        assert!(by_key["spec_repos[8].forge.api_url"].contains("plain http"));
    }

    #[test]
    fn a_mirror_fetches_what_every_entry_of_its_url_reads() {
        let text = "[git]\nmax_object_bytes = 2097152\n\
                    [[template_repos]]\nname = \"t\"\nurl = \"/srv/shared\"\ntag_pattern = \"rel/{template}-{major}.{minor}\"\n\
                    [[template_repos]]\nname = \"u\"\nurl = \"/srv/templates\"\n\
                    [[spec_repos]]\nname = \"a\"\nurl = \"/srv/shared\"\n\
                    [[spec_repos]]\nname = \"b\"\nurl = \"/srv/./shared\"\nbranch = \"staging\"\n\
                    [[spec_repos]]\nname = \"old\"\nurl = \"/srv/shared\"\nbranch = \"gone\"\nretired = true\n\
                    [[spec_repos]]\nname = \"c\"\nurl = \"/srv/other\"\nbranch = \"prod\"\n";
        let raw: RawConfig = toml::from_str(text).expect("parses");
        let cfg = Config::compile(raw, "p.toml", Path::new("/srv")).expect("compiles");
        let shared = cfg.fetch_options("/srv/shared");
        assert_eq!(
            shared.refspecs,
            [
                "+refs/heads/main:refs/heads/main",
                "+refs/heads/staging:refs/heads/staging",
                "+refs/tags/rel/*:refs/tags/rel/*",
            ]
        );
        assert_eq!(shared.max_object_bytes, 2 * 1024 * 1024);
        assert_eq!(
            cfg.fetch_options("/srv/templates").refspecs,
            ["+refs/tags/*:refs/tags/*"]
        );
        assert_eq!(
            cfg.fetch_options("/srv/other").refspecs,
            ["+refs/heads/prod:refs/heads/prod"]
        );
    }

    #[test]
    fn git_limits_have_defaults_and_checked_values() {
        let raw: RawConfig = toml::from_str("").expect("parses");
        let cfg = Config::compile(raw, "p.toml", Path::new(".")).expect("compiles");
        assert_eq!(cfg.git, Git::default());
        assert_eq!(cfg.git.max_object_bytes, 32 * 1024 * 1024);
        assert_eq!(cfg.git.fetch_timeout, Duration::from_mins(1));
        assert_eq!(cfg.git.fetch_concurrency, 8);
        let text = "[git]\nmax_object_bytes = 1000\nmax_pack_bytes = 67108864\nfetch_timeout = \"soon\"\nread_timeout = \"0s\"\nfetch_concurrency = 0\n";
        let raw: RawConfig = toml::from_str(text).expect("parses");
        let errs = Config::compile(raw, "p.toml", Path::new(".")).expect_err("invalid");
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        for want in [
            "p.toml: git.max_object_bytes: 1000 bytes is too small",
            "p.toml: git.fetch_timeout: \"soon\" is not a duration",
            "p.toml: git.read_timeout: must be longer than zero",
            "p.toml: git.fetch_concurrency: 0 is out of range",
        ] {
            assert!(
                lines.iter().any(|l| l.starts_with(want)),
                "{want} in {lines:#?}"
            );
        }
        let text =
            "[git]\nmax_object_bytes = 67108864\nfetch_timeout = \"2m\"\nfetch_concurrency = 16\n";
        let raw: RawConfig = toml::from_str(text).expect("parses");
        let cfg = Config::compile(raw, "p.toml", Path::new(".")).expect("compiles");
        assert_eq!(cfg.git.max_object_bytes, 64 * 1024 * 1024);
        assert_eq!(cfg.git.fetch_timeout, Duration::from_mins(2));
        assert_eq!(cfg.git.read_timeout, Duration::from_mins(1));
        assert_eq!(cfg.git.fetch_concurrency, 16);
    }

    #[test]
    fn local_credentials_only_for_a_loopback_endpoint() {
        for (url, ok) in [
            ("http://127.0.0.1:5000", true),
            ("http://localhost:5000/", true),
            ("http://[::1]:5000", true),
            ("https://cloudformation.us-east-1.amazonaws.com", false),
            ("http://127.0.0.1.evil.example:5000", false),
            ("http://user@127.0.0.1:5000", false),
        ] {
            assert_eq!(is_loopback_url(url), ok, "{url}");
        }
    }

    #[test]
    fn cron_takes_five_fields_with_crontab_weekdays_or_six_with_seconds() {
        use chrono::TimeZone;
        // 2026-11-30 is a Monday.
        let monday_noon = chrono::Utc
            .with_ymd_and_hms(2026, 11, 30, 12, 0, 30)
            .single();
        let monday_noon = monday_noon.expect("a time");
        let next = |expr: &str, seconds: &str| {
            parse_cron(expr, seconds)
                .unwrap_or_else(|e| panic!("{expr}: {e}"))
                .after(&monday_noon)
                .next()
                .expect("a next time")
                .to_rfc3339()
        };
        // Crontab's 1 is Monday (the crate alone would read Sunday): the next is 12:01 today.
        assert_eq!(next("*/1 * * * 1", "0"), "2026-11-30T12:01:00+00:00");
        assert_eq!(next("0 9 * * 1-5", "0"), "2026-12-01T09:00:00+00:00");
        // 0 and 7 are Sunday.
        assert_eq!(next("0 9 * * 0", "0"), "2026-12-06T09:00:00+00:00");
        assert_eq!(next("0 9 * * 7", "0"), "2026-12-06T09:00:00+00:00");
        // A window matches every second of its minutes.
        assert_eq!(next("* 12 * * Mon", "*"), "2026-11-30T12:00:31+00:00");
        // Six fields are read as before.
        assert_eq!(next("0 0 13 * * *", "0"), "2026-11-30T13:00:00+00:00");
        assert_eq!(crontab_weekdays("*/2"), "*/2");
        assert_eq!(crontab_weekdays("1,3-5"), "Mon,Wed-Fri");
        assert!(parse_cron("61 * * * *", "0").is_err());
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proton.toml");
        std::fs::write(&path, "poll_interval = \"1s\"\npoll_intervall = \"2s\"\n").expect("write");
        let errs = Config::load(&path).expect_err("unknown key");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "poll_intervall", "{errs:?}");
        assert_eq!(
            errs[0].message,
            "unknown key on line 2; did you mean `poll_interval`? Rename it, or remove it"
        );
    }

    /// Every unknown key in one run, in the file's order: top level, a nested table, an
    /// array of tables and a table inside one; each with its path, its line
    /// and the nearest valid key (or the valid ones), and the other problems too.
    #[test]
    fn every_unknown_key_is_reported_with_its_line_and_the_nearest_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proton.toml");
        let text = r#"poll_intervall = "30s"
[aws]
regoin = "eu-west-1"

[[template_repos]]
name = "t"
url = "https://git.example.com/t.git"

[[spec_repos]]
name = "a"
url = "https://git.example.com/a.git"

[[spec_repos]]
name = "b"
url = "https://git.example.com/b.git"
brnach = "main"
[spec_repos.forge]
kind = "github"
repo = "org/b"
tokn_env = "T"
api_url = "https://api.github.com"

[drift]
colour = "blue"
[rollout]
stages = ["a", "a"]
"#;
        std::fs::write(&path, text).expect("write");
        let errs = Config::load(&path).expect_err("unknown keys");
        let got: Vec<(&str, &str)> = errs
            .iter()
            .map(|e| (e.key.as_str(), e.message.as_str()))
            .collect();
        let file = path.display().to_string();
        assert!(errs.iter().all(|e| e.file == file), "{errs:?}");
        let near = |k: &str| format!("did you mean `{k}`? Rename it, or remove it");
        assert_eq!(
            got[0],
            (
                "poll_intervall",
                format!("unknown key on line 1; {}", near("poll_interval")).as_str()
            )
        );
        assert_eq!(
            got[1],
            (
                "aws.regoin",
                format!("unknown key on line 3; {}", near("region")).as_str()
            )
        );
        assert_eq!(
            got[2],
            (
                "spec_repos[1].brnach",
                format!("unknown key on line 16; {}", near("branch")).as_str()
            )
        );
        assert_eq!(
            got[3],
            (
                "spec_repos[1].forge.tokn_env",
                format!("unknown key on line 20; {}", near("token_env")).as_str()
            )
        );
        assert_eq!(got[4].0, "drift.colour");
        assert!(
            got[4].1.starts_with(
                "unknown key on line 24; remove it, or use one of the valid keys here: `"
            ),
            "{errs:?}"
        );
        // The config without its unknown keys is compiled too: its other problems follow.
        assert_eq!(got[5].0, "rollout.stages[1]", "{errs:?}");
        assert_eq!(errs.len(), 6, "{errs:?}");
    }

    /// A syntax error, or a problem other than an unknown key, stops the parse: the unknown
    /// keys found so far (keys are read in sorted order) are reported with it.
    #[test]
    fn other_parse_errors_are_reported_after_the_unknown_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proton.toml");
        std::fs::write(
            &path,
            "poll_interval = \"1s\"\ndata_dri = 1\n[git]\nmax_pack_bytes = \"big\"\n",
        )
        .expect("write");
        let errs = Config::load(&path).expect_err("invalid");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].key, "data_dri", "{errs:?}");
        assert!(
            errs[0].message.contains("did you mean `data_dir`?"),
            "{errs:?}"
        );
        assert_eq!(errs[1].key, "line 4", "{errs:?}");
        assert!(errs[1].message.contains("invalid type"), "{errs:?}");
        std::fs::write(&path, "poll_interval = \n").expect("write");
        let errs = Config::load(&path).expect_err("syntax");
        assert_eq!(
            (errs.len(), errs[0].key.as_str()),
            (1, "line 1"),
            "{errs:?}"
        );
    }

    #[test]
    fn gate_defaults_on_and_names_each_bad_type() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proton.toml");
        let base = "[[template_repos]]\nname = \"t\"\nurl = \"https://git.example.com/t.git\"\n";
        std::fs::write(&path, base).expect("write");
        let c = Config::load(&path).expect("valid");
        assert_eq!(c.gate, GateConfig::default());
        assert!(c.gate.enabled && !c.gate.block_interruption);
        let text = format!(
            "{base}[gate]\nenabled = true\nstateful_types = [\"AWS::RDS::*\", \"DynamoDB\"]\nextra_stateful_types = [\"AWS::*::Queue\"]\nblock_interruption = true\n"
        );
        std::fs::write(&path, text).expect("write");
        let errs = Config::load(&path).expect_err("bad types");
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["gate.stateful_types[1]", "gate.extra_stateful_types[0]"],
            "{errs:?}"
        );
        assert!(errs[0].message.contains("AWS::DynamoDB::Table"), "{errs:?}");
    }
}
