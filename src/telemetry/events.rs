//! One type per thing that happens, whose `emit` writes the log line and moves the metric
//! together (Vector's `internal_events`), so a counter cannot drift from its log.
//!
//! Events carry typed values ([`ResourceKind`], [`DeploymentAction`], [`Outcome`], …);
//! they become label text only inside `emit`. The log messages are the ones operators and
//! tests already read. Emit an event where the thing has happened (a deployment is counted
//! once its outcome is recorded), inside the span that names the resource or cycle.
//!
//! Events only log, count and notify: they never read the store or decide anything. The
//! events people are told about (commit statuses, `[[notify]]` targets) offer a
//! notification in their `emit`, the one place events map to notifications; offering never
//! waits (`notifications::Outbox`). Hooking a new event is one line in its `emit`, e.g. for
//! drift: `t.notifications().offer(Notification::new(NotifyEvent::DriftFound, summary)
//! .resource(id).detail("kind", kind));`.

use std::fmt::Display;
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::{
    DeploymentLabels, KindActionLabels, OutcomeLabels, ReasonLabels, SourceLabels, StateLabels,
    Telemetry,
};
use crate::model::{
    DeploymentAction, ProposalState, ResourceId, ResourceKind, SourceKind, Version,
};
use crate::notifications::{Notification, NotifyEvent, StatusState, StatusUpdate};
use crate::state::Outcome;

fn count<L>(family: &Family<L, Counter>, labels: &L)
where
    L: Clone + std::hash::Hash + Eq,
{
    family.get_or_create(labels).inc();
}

/// Offers the commit status `protond/<resource>` on the spec commit, if the deployment has
/// one.
fn commit_status(
    t: &Telemetry,
    repo: &str,
    spec_commit: Option<&str>,
    resource: &str,
    state: StatusState,
    description: String,
) {
    if let Some(commit) = spec_commit.filter(|c| !c.is_empty()) {
        t.notifications().status(StatusUpdate {
            repo: repo.into(),
            commit: commit.into(),
            resource: resource.into(),
            state,
            description,
        });
    }
}

/// A deployment (create, update or delete) was recorded as started. Counts
/// `protond_deployments_started_total{kind,action}`; logs "Deployment started." (or
/// "Delete started.").
#[derive(Debug, Clone, Copy)]
pub struct DeploymentStarted<'a> {
    /// The resource id.
    pub resource: &'a str,
    /// The resource's kind.
    pub kind: ResourceKind,
    /// What the deployment does.
    pub action: DeploymentAction,
    /// Why an update happens (`spec_change`, `minor_upgrade`, …), when it is one.
    pub reason: Option<&'a str>,
    /// The spec repo that declares the resource.
    pub repo: &'a str,
    /// The spec commit that caused the deployment (a commit status is set on it).
    pub spec_commit: Option<&'a str>,
}

impl DeploymentStarted<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        match self.action {
            DeploymentAction::Delete => {
                tracing::info!(resource = %self.resource, "Delete started.");
            }
            DeploymentAction::Create | DeploymentAction::Update | DeploymentAction::Import => {
                tracing::info!(resource = %self.resource, reason = self.reason, "Deployment started.");
            }
        }
        count(
            &t.deployments_started,
            &KindActionLabels {
                kind: self.kind.as_str().into(),
                action: self.action.as_str().into(),
            },
        );
        let description = match self.reason {
            Some(reason) => format!("Deploying ({}, {reason})", self.action.as_str()),
            None => format!("Deploying ({})", self.action.as_str()),
        };
        commit_status(
            t,
            self.repo,
            self.spec_commit,
            self.resource,
            StatusState::Pending,
            description,
        );
    }
}

/// A deployment finished and its outcome is recorded. Counts
/// `protond_deployments_total{kind,action,outcome}`; logs "Deployment succeeded.",
/// "Deployment failed." (with the error) or the interruption notice.
#[derive(Debug, Clone, Copy)]
pub struct DeploymentFinished<'a> {
    /// The resource id.
    pub resource: &'a str,
    /// The deployment (history row) id.
    pub deployment: i64,
    /// The resource's kind.
    pub kind: ResourceKind,
    /// What the deployment did.
    pub action: DeploymentAction,
    /// How it ended.
    pub outcome: &'a Outcome,
    /// The spec repo that declares the resource.
    pub repo: &'a str,
    /// The spec commit that caused the deployment (its commit status is set).
    pub spec_commit: Option<&'a str>,
}

impl DeploymentFinished<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        let (resource, deployment) = (self.resource, self.deployment);
        match self.outcome {
            Outcome::Interrupted => {
                tracing::warn!(resource = %resource, deployment, "{}", crate::state::INTERRUPTED);
            }
            Outcome::Failed { error, retryable } => {
                tracing::error!(resource = %resource, deployment, error = %error, retryable, "Deployment failed.");
            }
            Outcome::Conflict { error } => {
                tracing::error!(resource = %resource, deployment, error = %error, "Ownership conflict: the stack is left alone.");
            }
            Outcome::Succeeded(_) | Outcome::Deleted => {
                tracing::info!(resource = %resource, deployment, "Deployment succeeded.");
            }
        }
        count(
            &t.deployments,
            &DeploymentLabels {
                kind: self.kind.as_str().into(),
                action: self.action.as_str().into(),
                outcome: self.outcome.label().into(),
            },
        );
        self.notify(t);
    }

    /// The commit status, and the notification of a failure or a conflict.
    fn notify(self, t: &Telemetry) {
        let (resource, deployment) = (self.resource, self.deployment);
        let (state, description) = match self.outcome {
            Outcome::Interrupted => return,
            Outcome::Succeeded(_) => (StatusState::Success, "Deployed".to_string()),
            Outcome::Deleted => (StatusState::Success, "Deleted".to_string()),
            Outcome::Failed { error, .. } | Outcome::Conflict { error } => {
                (StatusState::Failure, error.clone())
            }
        };
        commit_status(t, self.repo, self.spec_commit, resource, state, description);
        let (event, error, summary) = match self.outcome {
            Outcome::Failed { error, .. } => (
                NotifyEvent::DeploymentFailed,
                error,
                format!("{resource}: {} failed: {error}", self.action.as_str()),
            ),
            Outcome::Conflict { error } => (
                NotifyEvent::ConflictFound,
                error,
                format!("{resource}: the stack is not protond's and is left alone: {error}"),
            ),
            _ => return,
        };
        let mut n = Notification::new(event, summary)
            .resource(resource)
            .detail("kind", self.kind.as_str())
            .detail("action", self.action.as_str())
            .detail("deployment", deployment)
            .detail("error", error)
            .detail("repo", self.repo);
        if let Some(c) = self.spec_commit {
            n = n.detail("spec_commit", c);
        }
        t.notifications().offer(n);
    }
}

/// The outcome of a self-managed (infrastructure repo) deployment was reported and recorded
/// (`protond notify` or `POST /api/v1/notify`). Counts
/// `protond_deployments_total{kind,action,outcome}` with action `apply` (create or update:
/// the report does not say) or `delete`; logs "Self-managed deployment outcome reported.";
/// notifies `deployment_failed` for a failure reported to the daemon (`POST /api/v1/notify`).
#[derive(Debug, Clone, Copy)]
pub struct SelfManagedOutcomeReported<'a> {
    /// The resource.
    pub resource: &'a ResourceId,
    /// The outcome recorded.
    pub outcome: &'a Outcome,
}

impl SelfManagedOutcomeReported<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        let (outcome, action) = match self.outcome {
            Outcome::Succeeded(_) => ("succeeded", "apply"),
            Outcome::Deleted => ("deleted", "delete"),
            Outcome::Failed { .. } | Outcome::Interrupted | Outcome::Conflict { .. } => {
                ("failed", "apply")
            }
        };
        tracing::info!(resource = %self.resource, outcome, "Self-managed deployment outcome reported.");
        count(
            &t.deployments,
            &DeploymentLabels {
                kind: self.resource.kind().as_str().into(),
                action: action.into(),
                outcome: outcome.into(),
            },
        );
        if let Outcome::Failed { error, .. } = self.outcome {
            t.notifications().offer(
                Notification::new(
                    NotifyEvent::DeploymentFailed,
                    format!("{}: self-managed deployment failed: {error}", self.resource),
                )
                .resource(self.resource)
                .detail("kind", self.resource.kind().as_str())
                .detail("action", action)
                .detail("error", error),
            );
        }
    }
}

/// A minor rollout was halted by a failure. Logs "Minor rollout halted."; notifies
/// `rollout_halted`.
#[derive(Debug, Clone, Copy)]
pub struct RolloutHalted<'a> {
    /// The template.
    pub template: &'a str,
    /// The version whose rollout stops.
    pub version: Version,
    /// Why (the failed resource and its error).
    pub reason: &'a str,
}

impl RolloutHalted<'_> {
    /// Logs and notifies.
    pub fn emit(self, t: &Telemetry) {
        let (template, version, reason) = (self.template, self.version, self.reason);
        tracing::error!(template, version = %version, reason = %reason, "Minor rollout halted.");
        t.notifications().offer(
            Notification::new(
                NotifyEvent::RolloutHalted,
                format!("{template} v{version}: rollout halted: {reason}; `protond rollout resume {template}/v{version}` retries it"),
            )
            .detail("template", template)
            .detail("version", version)
            .detail("reason", reason),
        );
    }
}

/// A release was quarantined (by protond after failures in its first stage, or by an
/// operator). Logs "Release quarantined."; notifies `release_quarantined`.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseQuarantined<'a> {
    /// The template.
    pub template: &'a str,
    /// The quarantined version.
    pub version: Version,
    /// Who: `protond` or `cli:<user>`.
    pub by: &'a str,
    /// Why.
    pub reason: &'a str,
}

impl ReleaseQuarantined<'_> {
    /// Logs and notifies.
    pub fn emit(self, t: &Telemetry) {
        let (template, version, by, reason) = (self.template, self.version, self.by, self.reason);
        tracing::error!(template, version = %version, by, reason = %reason, "Release quarantined.");
        t.notifications().offer(
            Notification::new(
                NotifyEvent::ReleaseQuarantined,
                format!("{template} v{version}: quarantined by {by}: {reason}; `protond release release {template}/v{version}` lets it continue"),
            )
            .detail("template", template)
            .detail("version", version)
            .detail("by", by)
            .detail("reason", reason),
        );
    }
}

/// A quarantined release was released by an operator: its rollout continues. Logs "Release
/// released."; notifies `release_released`.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseReleased<'a> {
    /// The template.
    pub template: &'a str,
    /// The released version.
    pub version: Version,
    /// Who.
    pub by: &'a str,
    /// Why.
    pub reason: &'a str,
}

impl ReleaseReleased<'_> {
    /// Logs and notifies.
    pub fn emit(self, t: &Telemetry) {
        let (template, version, by, reason) = (self.template, self.version, self.by, self.reason);
        tracing::warn!(template, version = %version, by, reason = %reason, "Release released.");
        t.notifications().offer(
            Notification::new(
                NotifyEvent::ReleaseReleased,
                format!("{template} v{version}: released by {by}: {reason}; its rollout continues"),
            )
            .detail("template", template)
            .detail("version", version)
            .detail("by", by)
            .detail("reason", reason),
        );
    }
}

/// Why a release is refused.
#[derive(Debug, Clone, Copy)]
pub enum Refusal<'a> {
    /// Its check (syntax, schema, trial render) failed.
    Rejected {
        /// What failed.
        reason: &'a str,
    },
    /// Its tag moved to another commit: quarantined until `protond release accept`.
    TagMoved {
        /// The recorded commit, which stays deployed.
        commit: &'a str,
        /// Where the tag points now.
        tag_commit: &'a str,
    },
}

/// A new release was refused or quarantined. Logs "Template version rejected." or "Release
/// tag moved to another commit: refused, …"; notifies `release_refused`.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseRefused<'a> {
    /// The template.
    pub template: &'a str,
    /// The version.
    pub version: Version,
    /// The tag.
    pub tag: &'a str,
    /// Why.
    pub refusal: Refusal<'a>,
}

impl ReleaseRefused<'_> {
    /// Logs and notifies.
    pub fn emit(self, t: &Telemetry) {
        let (template, version, tag) = (self.template, self.version, self.tag);
        let n = match self.refusal {
            Refusal::Rejected { reason } => {
                tracing::warn!(template = %template, version = %version, tag = %tag, reason = %reason, "Template version rejected.");
                Notification::new(
                    NotifyEvent::ReleaseRefused,
                    format!("{template} v{version} (tag {tag}) refused: {reason}"),
                )
                .detail("reason", reason)
            }
            Refusal::TagMoved { commit, tag_commit } => {
                tracing::warn!(template = %template, version = %version, tag = %tag, commit = %commit, tag_commit = %tag_commit, "Release tag moved to another commit: refused, the release stays on its recorded commit and nothing is redeployed; run `protond release accept {template}/v{version}` to roll the new commit out, or tag a new minor.");
                Notification::new(
                    NotifyEvent::ReleaseRefused,
                    format!("{template} v{version}: tag {tag} moved to {tag_commit}: quarantined, the release stays on {commit}; `protond release accept {template}/v{version}` rolls the new commit out"),
                )
                .detail("reason", "tag_moved")
                .detail("commit", commit)
                .detail("tag_commit", tag_commit)
            }
        };
        t.notifications().offer(
            n.detail("template", template)
                .detail("version", version)
                .detail("tag", tag),
        );
    }
}

/// A repo could not be fetched or read. Counts `protond_fetch_failures_total{source}`; logs
/// "Template repo could not be read." or "Spec repo could not be read.".
#[derive(Debug, Clone, Copy)]
pub struct FetchFailed<'a> {
    /// Which kind of repo.
    pub source: SourceKind,
    /// The repo's configured name.
    pub repo: &'a str,
    /// Why (the error chain).
    pub reason: &'a str,
}

impl FetchFailed<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        match self.source {
            SourceKind::Template => {
                tracing::warn!(repo = %self.repo, reason = %self.reason, "Template repo could not be read.");
            }
            SourceKind::Spec => {
                tracing::warn!(repo = %self.repo, reason = %self.reason, "Spec repo could not be read.");
            }
        }
        count(
            &t.fetch_failures,
            &SourceLabels {
                source: self.source.as_str().into(),
            },
        );
    }
}

/// A cycle could not fetch or read some repos: what it skipped, what it did instead, and why
/// (the same list `reconcile --once`, `protond status` and `/readyz` report). Logs "Repos
/// skipped this cycle." with one entry per repo; counts
/// `protond_fetch_failures_total{source}` for each repo read as last fetched (those not read
/// at all are counted by [`FetchFailed`]).
#[derive(Debug, Clone, Copy)]
pub struct ReposSkipped<'a> {
    /// The repos, in config order.
    pub repos: &'a [crate::state::SkippedRepo],
}

impl ReposSkipped<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        if self.repos.is_empty() {
            return;
        }
        let list: Vec<String> = self.repos.iter().map(ToString::to_string).collect();
        tracing::warn!(count = self.repos.len(), repos = ?list, "Repos skipped this cycle.");
        for r in self
            .repos
            .iter()
            .filter(|r| r.fallback == crate::state::Fallback::LastFetched)
        {
            count(
                &t.fetch_failures,
                &SourceLabels {
                    source: r.source.as_str().into(),
                },
            );
        }
    }
}

/// A reconcile cycle finished. Counts `protond_reconcile_cycles_total`, observes
/// `protond_reconcile_duration_seconds` and the time of the last cycle (the status page);
/// logs "Reconcile cycle finished.".
#[derive(Debug, Clone, Copy, Default)]
pub struct CycleFinished {
    /// Resources desired or deployed.
    pub resources: usize,
    /// Deployments started.
    pub started: usize,
    /// Changes held (rollout gate, window, backoff, …).
    pub held: usize,
    /// In-flight deployments of an earlier process adopted.
    pub adopted: usize,
    /// How long the cycle took.
    pub elapsed: Duration,
}

impl CycleFinished {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        // An idle cycle (nothing started or adopted) is routine: `debug`, so that a daemon
        // polling every minute logs what it does, not that it did nothing.
        if self.started > 0 || self.adopted > 0 {
            tracing::info!(
                resources = self.resources,
                started = self.started,
                held = self.held,
                adopted = self.adopted,
                "Reconcile cycle finished."
            );
        } else {
            tracing::debug!(
                resources = self.resources,
                held = self.held,
                "Reconcile cycle finished; nothing to start."
            );
        }
        t.cycles.inc();
        t.cycle_seconds.observe(self.elapsed.as_secs_f64());
        if let Ok(mut g) = t.last_cycle.lock() {
            *g = Some(SystemTime::now());
        }
    }
}

/// An upgrade pull request was opened, or, for a forge without an API, its branch pushed.
/// Counts `protond_proposals_opened_total`; logs "Opened an upgrade pull request." (or
/// "Pushed an upgrade branch; …").
#[derive(Debug, Clone, Copy)]
pub struct ProposalOpened<'a> {
    /// The spec repo.
    pub repo: &'a str,
    /// The spec file.
    pub file: &'a str,
    /// The template.
    pub template: &'a str,
    /// The major the spec follows.
    pub from: u32,
    /// The major proposed.
    pub to: u32,
    /// The branch pushed.
    pub branch: &'a str,
    /// The pull request's number and address, when the forge has an API.
    pub pull_request: Option<(i64, &'a str)>,
}

impl ProposalOpened<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        let (repo, file, template, from, to) =
            (self.repo, self.file, self.template, self.from, self.to);
        if let Some((number, url)) = self.pull_request {
            tracing::info!(
                repo = %repo, file = %file, template = %template, from, to, number, url = %url,
                "Opened an upgrade pull request."
            );
        } else {
            tracing::info!(
                repo = %repo, file = %file, template = %template, from, to, branch = %self.branch,
                "Pushed an upgrade branch; this forge has no API, so open the pull request by hand."
            );
        }
        t.proposals_opened.inc();
        let mut n = Notification::new(
            NotifyEvent::PullRequestOpened,
            match self.pull_request {
                Some((number, url)) => format!(
                    "{repo}: upgrade pull request #{number} moves {file} from {template} v{from} to v{to}: {url}"
                ),
                None => format!(
                    "{repo}: branch {} moves {file} from {template} v{from} to v{to}; open the pull request by hand",
                    self.branch
                ),
            },
        )
        .detail("repo", repo)
        .detail("file", file)
        .detail("template", template)
        .detail("from", from)
        .detail("to", to)
        .detail("branch", self.branch);
        if let Some((number, url)) = self.pull_request {
            n = n.detail("number", number).detail("url", url);
        }
        t.notifications().offer(n);
    }
}

/// What became of an upgrade pull request, other than opening: the `outcome` label of
/// `protond_proposal_outcomes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProposalOutcome {
    Updated,
    Adopted,
    Merged,
    Closed,
    Declined,
    Edited,
    RateLimited,
    Invalid,
    Failed,
    CloseFailed,
}

impl ProposalOutcome {
    /// Every label, for the zero-valued series.
    pub(super) const LABELS: [&'static str; 10] = [
        "updated",
        "adopted",
        "merged",
        "closed",
        "declined",
        "edited",
        "rate_limited",
        "invalid",
        "failed",
        "close_failed",
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Updated => "updated",
            Self::Adopted => "adopted",
            Self::Merged => "merged",
            Self::Closed => "closed",
            Self::Declined => "declined",
            Self::Edited => "edited",
            Self::RateLimited => "rate_limited",
            Self::Invalid => "invalid",
            Self::Failed => "failed",
            Self::CloseFailed => "close_failed",
        }
    }

    fn count(self, t: &Telemetry) {
        count(
            &t.proposal_outcomes,
            &OutcomeLabels {
                outcome: self.as_str().into(),
            },
        );
    }
}

/// An open upgrade pull request was brought up to date (branch, title, body). Counts
/// `protond_proposal_outcomes_total{outcome="updated"}`.
#[derive(Debug, Clone, Copy)]
pub struct ProposalUpdated<'a> {
    /// The spec repo.
    pub repo: &'a str,
    /// The spec file.
    pub file: &'a str,
    /// The template.
    pub template: &'a str,
    /// The major proposed.
    pub to: u32,
    /// The pull request's number, when the forge has an API.
    pub number: Option<i64>,
}

impl ProposalUpdated<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        tracing::info!(
            repo = %self.repo, file = %self.file, template = %self.template, to = self.to,
            number = self.number, "Updated the upgrade pull request."
        );
        ProposalOutcome::Updated.count(t);
    }
}

/// The open pull request of a spec file was found on the forge (the store had lost it) and
/// is taken over. Counts `protond_proposal_outcomes_total{outcome="adopted"}`.
#[derive(Debug, Clone, Copy)]
pub struct ProposalAdopted<'a> {
    /// The spec repo.
    pub repo: &'a str,
    /// The spec file.
    pub file: &'a str,
    /// The pull request's number.
    pub number: i64,
}

impl ProposalAdopted<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        tracing::info!(repo = %self.repo, file = %self.file, number = self.number, "Found the open upgrade pull request of this file; updating it.");
        ProposalOutcome::Adopted.count(t);
    }
}

/// An open upgrade pull request was found merged. Counts
/// `protond_proposal_outcomes_total{outcome="merged"}`.
#[derive(Debug, Clone, Copy)]
pub struct ProposalMerged<'a> {
    /// The spec repo.
    pub repo: &'a str,
    /// The spec file.
    pub file: &'a str,
    /// The major it proposed.
    pub to: u32,
}

impl ProposalMerged<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        tracing::info!(repo = %self.repo, file = %self.file, to = self.to, "Upgrade pull request was merged; the spec change deploys by the ordinary path.");
        ProposalOutcome::Merged.count(t);
    }
}

/// An upgrade pull request was closed unmerged by someone else: that major is not proposed
/// again. Counts `protond_proposal_outcomes_total{outcome="declined"}`.
#[derive(Debug, Clone, Copy)]
pub struct ProposalDeclined<'a> {
    /// The spec repo.
    pub repo: &'a str,
    /// The spec file.
    pub file: &'a str,
    /// The major it proposed.
    pub to: u32,
}

impl ProposalDeclined<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        tracing::info!(repo = %self.repo, file = %self.file, "Upgrade pull request was closed unmerged; not proposing v{} again.", self.to);
        ProposalOutcome::Declined.count(t);
    }
}

/// Someone else pushed to an upgrade branch: protond stops overwriting it. Counts
/// `protond_proposal_outcomes_total{outcome="edited"}`.
#[derive(Debug, Clone, Copy)]
pub struct ProposalEdited<'a> {
    /// The spec repo.
    pub repo: &'a str,
    /// The spec file.
    pub file: &'a str,
    /// The branch.
    pub branch: &'a str,
}

impl ProposalEdited<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        tracing::warn!(repo = %self.repo, file = %self.file, branch = %self.branch, "Someone else pushed to the upgrade branch; protond no longer overwrites it.");
        ProposalOutcome::Edited.count(t);
    }
}

/// A new upgrade pull request waits: the hourly limit is reached. Counts
/// `protond_proposal_outcomes_total{outcome="rate_limited"}`.
#[derive(Debug, Clone, Copy)]
pub struct ProposalRateLimited<'a> {
    /// The spec repo.
    pub repo: &'a str,
    /// The spec file.
    pub file: &'a str,
    /// Pull requests allowed per hour.
    pub limit: u32,
}

impl ProposalRateLimited<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        tracing::info!(repo = %self.repo, file = %self.file, limit = self.limit, "Upgrade pull request waits: the hourly limit is reached.");
        ProposalOutcome::RateLimited.count(t);
    }
}

/// An upgrade pull request no longer needed was closed by protond, or found merged or
/// closed. Counts `protond_proposal_outcomes_total{outcome}` with the state it ends in
/// (`merged` or `closed`).
#[derive(Debug, Clone, Copy)]
pub struct ProposalRetired<'a> {
    /// The spec repo.
    pub repo: &'a str,
    /// The spec file.
    pub file: &'a str,
    /// The state it ends in.
    pub state: ProposalState,
    /// Why it is no longer needed.
    pub reason: &'a str,
}

impl ProposalRetired<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        tracing::info!(repo = %self.repo, file = %self.file, state = %self.state, "Upgrade pull request retired: {}.", self.reason);
        match self.state {
            ProposalState::Merged => ProposalOutcome::Merged,
            ProposalState::Open | ProposalState::Closed | ProposalState::Declined => {
                ProposalOutcome::Closed
            }
        }
        .count(t);
    }
}

/// The upgrade of a spec file cannot be proposed (its rewrite or rendering failed). Counts
/// `protond_proposal_outcomes_total{outcome="invalid"}`.
#[derive(Debug, Clone, Copy)]
pub struct ProposalInvalid<'a> {
    /// The spec repo.
    pub repo: &'a str,
    /// The spec file.
    pub file: &'a str,
    /// What went wrong.
    pub error: &'a str,
}

impl ProposalInvalid<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        tracing::warn!(repo = %self.repo, file = %self.file, "Cannot propose the upgrade: {}", self.error);
        ProposalOutcome::Invalid.count(t);
    }
}

/// Opening or updating an upgrade pull request failed; the file backs off. Counts
/// `protond_proposal_outcomes_total{outcome="failed"}`.
#[derive(Clone, Copy)]
pub struct ProposalFailed<'a> {
    /// The spec repo.
    pub repo: &'a str,
    /// The spec file.
    pub file: &'a str,
    /// The template.
    pub template: &'a str,
    /// The major proposed.
    pub to: u32,
    /// Whether the failure looks temporary.
    pub retry: bool,
    /// Seconds until the file is tried again.
    pub retry_in_secs: u64,
    /// What went wrong.
    pub error: &'a dyn Display,
}

impl ProposalFailed<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        tracing::warn!(
            repo = %self.repo, file = %self.file, template = %self.template, to = self.to,
            retry = self.retry, retry_in_secs = self.retry_in_secs,
            "Upgrade pull request not brought up to date: {}", self.error
        );
        ProposalOutcome::Failed.count(t);
    }
}

/// Closing an upgrade pull request no longer needed failed; it is tried again next pass.
/// Counts `protond_proposal_outcomes_total{outcome="close_failed"}`.
#[derive(Clone, Copy)]
pub struct ProposalCloseFailed<'a> {
    /// The spec repo.
    pub repo: &'a str,
    /// What went wrong.
    pub error: &'a dyn Display,
}

impl ProposalCloseFailed<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        tracing::warn!(repo = %self.repo, "Could not close a superseded upgrade pull request: {}", self.error);
        ProposalOutcome::CloseFailed.count(t);
    }
}

/// Which forge sent a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookSource {
    /// `POST /webhooks/github`.
    GitHub,
    /// `POST /webhooks/gitlab`.
    GitLab,
    /// `POST /webhooks/gitea` (Gitea and Forgejo).
    Gitea,
}

impl WebhookSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
            Self::Gitea => "gitea",
        }
    }
}

fn count_webhook(t: &Telemetry, state: &str) {
    count(
        &t.webhooks,
        &StateLabels {
            state: state.into(),
        },
    );
}

/// A verified webhook names watched repos: they are fetched now. Counts
/// `protond_webhooks_total{state="accepted"}`.
#[derive(Debug, Clone, Copy)]
pub struct WebhookAccepted<'a> {
    /// The forge.
    pub source: WebhookSource,
    /// The forge's event name (`push`, `Tag Push Hook`, …).
    pub event: &'a str,
    /// The configured repos it names.
    pub repos: &'a [String],
}

impl WebhookAccepted<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        tracing::info!(source = self.source.as_str(), event = self.event, repos = ?self.repos, "Webhook accepted; fetching now.");
        count_webhook(t, "accepted");
    }
}

/// Why a verified webhook is not acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoredBecause {
    /// GitHub's `ping`, sent when a webhook is created.
    Ping,
    /// An event that does not change repos.
    NotAPush,
    /// No configured repo matches the payload.
    UnwatchedRepo,
}

/// A verified webhook needs no action. Counts `protond_webhooks_total{state="ignored"}`.
#[derive(Debug, Clone, Copy)]
pub struct WebhookIgnored<'a> {
    /// The forge.
    pub source: WebhookSource,
    /// The forge's event name.
    pub event: &'a str,
    /// Why, as a typed reason (a label in the metric).
    pub because: IgnoredBecause,
}

impl WebhookIgnored<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        let (source, event) = (self.source.as_str(), self.event);
        match self.because {
            IgnoredBecause::UnwatchedRepo => tracing::info!(
                source,
                event,
                "Webhook for a repo protond does not watch; ignored."
            ),
            IgnoredBecause::Ping => tracing::debug!(source, event, "Webhook ping answered."),
            IgnoredBecause::NotAPush => {
                tracing::debug!(
                    source,
                    event,
                    "Webhook event does not change repos; ignored."
                );
            }
        }
        count_webhook(t, "ignored");
    }
}

/// Why a webhook delivery is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectedBecause {
    /// No secret is configured for this forge: its webhooks are off.
    Disabled,
    /// The signature (GitHub) or token (GitLab) is missing or wrong.
    BadCredentials,
    /// The verified payload is not JSON.
    NotJson,
}

/// A webhook delivery was refused and not acted on. Counts
/// `protond_webhooks_total{state="rejected"}`.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRejected {
    /// The forge.
    pub source: WebhookSource,
    /// Why, as a typed reason (a label in the metric).
    pub because: RejectedBecause,
}

impl WebhookRejected {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        let source = self.source.as_str();
        match (self.because, self.source) {
            (RejectedBecause::BadCredentials, WebhookSource::GitHub) => {
                tracing::warn!("Rejected a GitHub webhook: missing or wrong X-Hub-Signature-256.");
            }
            (RejectedBecause::BadCredentials, WebhookSource::GitLab) => {
                tracing::warn!("Rejected a GitLab webhook: missing or wrong X-Gitlab-Token.");
            }
            (RejectedBecause::BadCredentials, WebhookSource::Gitea) => {
                tracing::warn!(
                    "Rejected a Gitea webhook: missing or wrong X-Gitea-Signature (X-Forgejo-Signature)."
                );
            }
            (RejectedBecause::Disabled, _) => tracing::info!(
                source,
                "Rejected a webhook: this forge's webhooks are disabled (no secret configured)."
            ),
            (RejectedBecause::NotJson, _) => {
                tracing::info!(source, "Rejected a webhook: its payload is not JSON.");
            }
        }
        count_webhook(t, "rejected");
    }
}

/// A verified webhook delivery already received within the dedupe window
/// (`server.webhook_dedupe_window`): answered, not acted on. Counts
/// `protond_webhooks_total{state="duplicate"}`.
#[derive(Debug, Clone, Copy)]
pub struct WebhookDuplicate<'a> {
    /// The forge.
    pub source: WebhookSource,
    /// The delivery id it carried, if any (not a secret).
    pub delivery: Option<&'a str>,
}

impl WebhookDuplicate<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        tracing::info!(
            source = self.source.as_str(),
            delivery = self.delivery.unwrap_or(""),
            "Duplicate webhook delivery (a retry or a replay); not acted on."
        );
        count_webhook(t, "duplicate");
    }
}

/// Why the HTTP server refused a request or closed a connection (a label of
/// `protond_http_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRefusal {
    /// At `server.max_connections`, an open connection was closed for a new one.
    ConnectionShed,
    /// A request head did not arrive within `server.header_timeout`.
    HeaderTimeout,
    /// A request body did not arrive within `server.body_timeout`.
    BodyTimeout,
    /// A request body was larger than `server.max_body_bytes`.
    BodyTooLarge,
    /// Request bodies in flight would exceed `server.max_inflight_body_bytes`.
    BodyBudget,
    /// A request was not answered within `server.request_timeout`.
    RequestTimeout,
    /// A client did not read its answer within `server.request_timeout`.
    WriteTimeout,
    /// The `Host` header is not one the server answers to (DNS rebinding).
    Host,
}

impl HttpRefusal {
    /// Every reason, in label order.
    pub const ALL: [Self; 8] = [
        Self::ConnectionShed,
        Self::HeaderTimeout,
        Self::BodyTimeout,
        Self::BodyTooLarge,
        Self::BodyBudget,
        Self::RequestTimeout,
        Self::WriteTimeout,
        Self::Host,
    ];

    /// The label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionShed => "connection_shed",
            Self::HeaderTimeout => "header_timeout",
            Self::BodyTimeout => "body_timeout",
            Self::BodyTooLarge => "body_too_large",
            Self::BodyBudget => "body_budget",
            Self::RequestTimeout => "request_timeout",
            Self::WriteTimeout => "write_timeout",
            Self::Host => "host",
        }
    }
}

/// The HTTP server refused a request or closed a connection under its limits. Counts
/// `protond_http_refused_total{reason}`; logs at debug level only (an attack would flood the
/// log: the server writes a summary warning once a minute instead).
#[derive(Debug, Clone, Copy)]
pub struct HttpRefused {
    /// Why.
    pub reason: HttpRefusal,
}

impl HttpRefused {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        tracing::debug!(
            reason = self.reason.as_str(),
            "HTTP request refused or connection closed by a server limit."
        );
        count(
            &t.http_refused,
            &ReasonLabels {
                reason: self.reason.as_str().into(),
            },
        );
    }
}

/// A drift check found a resource's stack different from what protond recorded, in a way
/// it had not found before (logged once per resource and kind, not every interval). Counts
/// `protond_drift_found_total{kind}` (the `protond_drift{kind}` gauge is read from the
/// store); logs "Drift found." as a warning.
#[derive(Debug, Clone, Copy)]
pub struct DriftFound<'a> {
    /// The resource id.
    pub resource: &'a str,
    /// What differs.
    pub kind: crate::model::DriftKind,
    /// How.
    pub detail: &'a str,
    /// What the policy does about it.
    pub policy: crate::config::DriftPolicy,
}

impl DriftFound<'_> {
    /// Logs and counts.
    pub fn emit(self, t: &Telemetry) {
        count(
            &t.drift_found,
            &super::DriftLabels {
                kind: self.kind.as_str().into(),
            },
        );
        let policy = match self.policy {
            crate::config::DriftPolicy::Report => "report",
            crate::config::DriftPolicy::Heal => "heal",
        };
        tracing::warn!(resource = %self.resource, kind = %self.kind, detail = %self.detail, policy, "Drift found.");
        t.notifications().offer(
            Notification::new(
                NotifyEvent::DriftFound,
                format!(
                    "{}: drift found ({}): {} (policy: {policy})",
                    self.resource, self.kind, self.detail
                ),
            )
            .resource(self.resource)
            .detail("kind", self.kind.as_str())
            .detail("detail", self.detail)
            .detail("policy", policy),
        );
    }
}

/// The change-set gate began holding a resource until a person approves its new version
/// (once per resource and version, not every cycle). Logs "Approval needed." as a warning
/// and offers an `approval_needed` notification; the `protond_needs_approval` gauge is read
/// from the store.
#[derive(Debug, Clone, Copy)]
pub struct ApprovalNeeded<'a> {
    /// The resource id.
    pub resource: &'a str,
    /// Its template.
    pub template: &'a str,
    /// The version waiting.
    pub version: Version,
    /// The predicted effects that need the approval.
    pub changes: &'a [String],
}

impl ApprovalNeeded<'_> {
    /// Logs and notifies.
    pub fn emit(self, t: &Telemetry) {
        let changes = self.changes.join("; ");
        tracing::warn!(resource = %self.resource, template = %self.template, version = %self.version, changes = %changes, "Approval needed.");
        t.notifications().offer(
            Notification::new(
                NotifyEvent::ApprovalNeeded,
                format!(
                    "{}: {} {} needs approval: {changes} (protond approve {} {})",
                    self.resource, self.template, self.version, self.resource, self.version
                ),
            )
            .resource(self.resource)
            .detail("template", self.template)
            .detail("version", self.version.to_string())
            .detail("changes", changes.as_str()),
        );
    }
}

/// A drift check ended. Logs "Drift check finished." with its figures.
#[derive(Debug, Clone, Copy)]
pub struct DriftCheckFinished {
    /// Stacks compared.
    pub checked: usize,
    /// Of which drifted.
    pub drifted: usize,
    /// Stacks that could not be read (each logged).
    pub unreadable: usize,
    /// How long the check took.
    pub elapsed: Duration,
}

impl DriftCheckFinished {
    /// Logs.
    pub fn emit(self, _t: &Telemetry) {
        tracing::info!(
            checked = self.checked,
            drifted = self.drifted,
            unreadable = self.unreadable,
            elapsed_ms = u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX),
            "Drift check finished."
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::ProposalState;

    /// The value of the series `name{labels}` in the exposition, if present.
    fn value(t: &Telemetry, name: &str, labels: &str) -> Option<f64> {
        let text = t.encode().expect("encode");
        let series = if labels.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{labels}}}")
        };
        text.lines()
            .find_map(|l| l.strip_prefix(&series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn deployment_events_count_with_typed_labels() {
        let t = Telemetry::new();
        let failed = Outcome::Failed {
            error: "boom".into(),
            retryable: false,
        };
        for _ in 0..2 {
            DeploymentFinished {
                resource: "service_instance/payments/payments-dev",
                deployment: 7,
                kind: ResourceKind::ServiceInstance,
                action: DeploymentAction::Update,
                outcome: &failed,
                repo: "",
                spec_commit: None,
            }
            .emit(&t);
        }
        DeploymentFinished {
            resource: "environment/dev",
            deployment: 8,
            kind: ResourceKind::Environment,
            action: DeploymentAction::Delete,
            outcome: &Outcome::Deleted,
            repo: "",
            spec_commit: None,
        }
        .emit(&t);
        DeploymentStarted {
            resource: "pipeline/payments",
            kind: ResourceKind::Pipeline,
            action: DeploymentAction::Create,
            reason: None,
            repo: "",
            spec_commit: None,
        }
        .emit(&t);
        assert_eq!(
            value(
                &t,
                "protond_deployments_total",
                "kind=\"service_instance\",action=\"update\",outcome=\"failed\""
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &t,
                "protond_deployments_total",
                "kind=\"environment\",action=\"delete\",outcome=\"deleted\""
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &t,
                "protond_deployments_started_total",
                "kind=\"pipeline\",action=\"create\""
            ),
            Some(1.0)
        );
    }

    #[test]
    fn self_managed_reports_keep_their_labels() {
        let t = Telemetry::new();
        let id = ResourceId::environment("tfdev");
        SelfManagedOutcomeReported {
            resource: &id,
            outcome: &Outcome::Interrupted,
        }
        .emit(&t);
        assert_eq!(
            value(
                &t,
                "protond_deployments_total",
                "kind=\"environment\",action=\"apply\",outcome=\"failed\""
            ),
            Some(1.0)
        );
    }

    #[test]
    fn fetch_and_cycle_events_count() {
        let t = Telemetry::new();
        assert_eq!(t.last_cycle(), None);
        FetchFailed {
            source: SourceKind::Spec,
            repo: "payments",
            reason: "gone",
        }
        .emit(&t);
        CycleFinished {
            elapsed: Duration::from_millis(30),
            ..CycleFinished::default()
        }
        .emit(&t);
        assert_eq!(
            value(&t, "protond_fetch_failures_total", "source=\"spec\""),
            Some(1.0)
        );
        assert_eq!(value(&t, "protond_reconcile_cycles_total", ""), Some(1.0));
        assert_eq!(
            value(&t, "protond_reconcile_duration_seconds_count", ""),
            Some(1.0)
        );
        assert!(t.last_cycle().is_some());
    }

    #[test]
    fn proposal_events_count_opened_and_outcomes() {
        let t = Telemetry::new();
        assert_eq!(value(&t, "protond_proposals_opened_total", ""), Some(0.0));
        for pull_request in [Some((3, "https://forge/pr/3")), None] {
            ProposalOpened {
                repo: "payments",
                file: "proton/services/payments.yaml",
                template: "web-svc",
                from: 1,
                to: 2,
                branch: "protond/upgrade/x",
                pull_request,
            }
            .emit(&t);
        }
        ProposalRetired {
            repo: "payments",
            file: "proton/services/payments.yaml",
            state: ProposalState::Merged,
            reason: "the spec now follows web-svc v2",
        }
        .emit(&t);
        ProposalFailed {
            repo: "payments",
            file: "proton/services/payments.yaml",
            template: "web-svc",
            to: 2,
            retry: true,
            retry_in_secs: 60,
            error: &"forge down",
        }
        .emit(&t);
        assert_eq!(value(&t, "protond_proposals_opened_total", ""), Some(2.0));
        assert_eq!(
            value(&t, "protond_proposal_outcomes_total", "outcome=\"merged\""),
            Some(1.0)
        );
        assert_eq!(
            value(&t, "protond_proposal_outcomes_total", "outcome=\"failed\""),
            Some(1.0)
        );
    }

    #[test]
    fn webhook_events_count_by_state() {
        let t = Telemetry::new();
        WebhookRejected {
            source: WebhookSource::GitHub,
            because: RejectedBecause::BadCredentials,
        }
        .emit(&t);
        WebhookIgnored {
            source: WebhookSource::GitLab,
            event: "Note Hook",
            because: IgnoredBecause::NotAPush,
        }
        .emit(&t);
        WebhookAccepted {
            source: WebhookSource::GitHub,
            event: "push",
            repos: &["payments".to_string()],
        }
        .emit(&t);
        WebhookDuplicate {
            source: WebhookSource::GitHub,
            delivery: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        }
        .emit(&t);
        HttpRefused {
            reason: HttpRefusal::Host,
        }
        .emit(&t);
        assert_eq!(
            value(&t, "protond_http_refused_total", "reason=\"host\""),
            Some(1.0)
        );
        for state in ["rejected", "ignored", "accepted", "duplicate"] {
            assert_eq!(
                value(&t, "protond_webhooks_total", &format!("state=\"{state}\"")),
                Some(1.0),
                "{state}"
            );
        }
    }

    #[test]
    fn events_map_to_notifications_and_commit_statuses() {
        let t = Telemetry::new();
        let (mut notes, mut statuses) = t.notifications().capture(&["payments"]);
        let failed = Outcome::Failed {
            error: "CreateStack failed: boom".into(),
            retryable: false,
        };
        let id = "service_instance/payments/payments-dev";
        let commit = "a3992abc62978f1a45c239eef35317ce5e26c674";
        DeploymentStarted {
            resource: id,
            kind: ResourceKind::ServiceInstance,
            action: DeploymentAction::Update,
            reason: Some("spec_change"),
            repo: "payments",
            spec_commit: Some(commit),
        }
        .emit(&t);
        for (outcome, repo) in [
            (&failed, "payments"),
            (
                &Outcome::Conflict {
                    error: "foreign stack".into(),
                },
                "payments",
            ),
            (&Outcome::Deleted, "payments"),
            (&Outcome::Interrupted, "payments"),
            (&failed, "no-forge"),
        ] {
            DeploymentFinished {
                resource: id,
                deployment: 3,
                kind: ResourceKind::ServiceInstance,
                action: DeploymentAction::Update,
                outcome,
                repo,
                spec_commit: Some(commit),
            }
            .emit(&t);
        }
        let states: Vec<(StatusState, String)> = std::iter::from_fn(|| statuses.try_recv().ok())
            .map(|u| {
                assert_eq!(
                    (u.repo.as_str(), u.commit.as_str(), u.resource.as_str()),
                    ("payments", commit, id)
                );
                (u.state, u.description)
            })
            .collect();
        assert_eq!(
            states,
            [
                (
                    StatusState::Pending,
                    "Deploying (update, spec_change)".to_string()
                ),
                (StatusState::Failure, "CreateStack failed: boom".to_string()),
                (StatusState::Failure, "foreign stack".to_string()),
                (StatusState::Success, "Deleted".to_string()),
            ]
        );
        RolloutHalted {
            template: "web-svc",
            version: Version { major: 1, minor: 2 },
            reason: "payments-dev failed",
        }
        .emit(&t);
        ReleaseRefused {
            template: "web-svc",
            version: Version { major: 1, minor: 3 },
            tag: "web-svc/v1.3",
            refusal: Refusal::TagMoved {
                commit: "aaa",
                tag_commit: "bbb",
            },
        }
        .emit(&t);
        ProposalOpened {
            repo: "payments",
            file: "proton/services/payments.yaml",
            template: "web-svc",
            from: 1,
            to: 2,
            branch: "protond/upgrade/x",
            pull_request: Some((3, "https://forge/pr/3")),
        }
        .emit(&t);
        let got: Vec<Arc<Notification>> = std::iter::from_fn(|| notes.try_recv().ok()).collect();
        let events: Vec<NotifyEvent> = got.iter().map(|n| n.event).collect();
        assert_eq!(
            events,
            [
                NotifyEvent::DeploymentFailed,
                NotifyEvent::ConflictFound,
                NotifyEvent::DeploymentFailed,
                NotifyEvent::RolloutHalted,
                NotifyEvent::ReleaseRefused,
                NotifyEvent::PullRequestOpened,
            ]
        );
        assert_eq!(got[0].resource.as_deref(), Some(id));
        assert_eq!(got[0].details["error"], "CreateStack failed: boom");
        assert_eq!(got[0].details["spec_commit"], commit);
        assert_eq!(got[4].details["reason"], "tag_moved");
        assert_eq!(got[5].details["url"], "https://forge/pr/3");
    }
}

/// A stack event of the operation a deployment waits for, seen for the first time (each is
/// logged once, in order). Logs "Stack event." with the stack, the resource, its type, status
/// and reason, and the seconds since the wait started; no counter (events are many and say
/// nothing a rate should).
#[derive(Debug, Clone, Copy)]
pub struct StackEventSeen<'a> {
    /// The stack.
    pub stack: &'a str,
    /// The event.
    pub event: &'a crate::provision::stack_events::StackEvent,
    /// Since the wait started.
    pub elapsed: Duration,
}

impl StackEventSeen<'_> {
    /// Logs.
    pub fn emit(self) {
        let e = self.event;
        if e.status.ends_with("_FAILED") {
            tracing::warn!(stack = %self.stack, logical_resource = %e.logical_id, resource_type = %e.resource_type, status = %e.status, reason = e.reason.as_deref().unwrap_or(""), elapsed_secs = self.elapsed.as_secs(), "Stack event.");
        } else {
            tracing::info!(stack = %self.stack, logical_resource = %e.logical_id, resource_type = %e.resource_type, status = %e.status, reason = e.reason.as_deref().unwrap_or(""), elapsed_secs = self.elapsed.as_secs(), "Stack event.");
        }
    }
}
