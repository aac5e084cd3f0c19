//! One reconcile cycle, as a list of named steps:
//!
//! 1. [`load`]: fetch (what the trigger asked for) and read the repos into a snapshot;
//! 2. [`record_catalog`]: record registered and rejected releases;
//! 3. [`adopt`]: hand deployments an earlier process left in flight to the lifecycle;
//! 4. [`read_facts`]: read what the scheduler decides from (records, halts, history,
//!    running and backing-off resources, the clock);
//! 5. [`crate::evaluate::evaluate`]: quarantine failing releases, compute the desired
//!    state, diff, gate and schedule (pure; `protond plan` calls the same function); the
//!    quarantines it decided are recorded and announced ([`super::quarantine`]);
//! 6. [`start`]: record the spec-repo approvals the evaluation used (the history row of a
//!    deployment names its approval), then start a deployment task for every change the
//!    schedule lets start;
//! 7. [`record_moves`]: record spec files that moved to another repo; record the invalid
//!    specs (for `protond status`) and what the change-set gate holds; start the drift
//!    check beside the cycle when it is due ([`super::drift`]); log the rollout holds. This
//!    bookkeeping is about resources that do not start, so it comes after the starts;
//! 8. [`propose`]: start the pull-request pass for major upgrades.
//!
//! A cycle never waits for stacks: each task runs the deployment lifecycle
//! ([`super::lifecycle`]) and wakes the scheduler when it ends, so dependants proceed.
//!
//! # Guarantees
//! * One deployment in flight per resource (a claim in memory and a unique index in the
//!   store), and a resource is only planned while nothing runs for it, from the record its
//!   last outcome left (never twice from a stale record).
//! * What starts and what waits is decided by [`crate::plan::schedule`] alone: deletes after
//!   creates and updates, kinds in reverse order, an environment only once nothing lives in
//!   it, never more than the deletion budget in one cycle; failures retried by the one
//!   error policy of the lifecycle.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument as _;

use super::ctx::Ctx;
use super::lifecycle::{self, Work};
use crate::catalog::releases::{Catalog, ReleaseState};
use crate::desired::{self, Resource, Snapshot};
use crate::evaluate::{self, Evaluation, Facts};
use crate::ha::shard::{Known, Scope};
use crate::model::{SourceKind, TagState};
use crate::plan::schedule::HoldReason;
use crate::plan::{ActionKind, Version};
use crate::state::{
    Fallback, ResourceRecord, SkippedRepo, StateError, Store, TemplateVersionRecord,
};
use crate::telemetry::Repeats;
use crate::telemetry::events::{CycleFinished, FetchFailed, Refusal, ReleaseRefused, ReposSkipped};

/// What a cycle did.
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    /// Deployments started.
    pub started: usize,
    /// Changes held back (in flight, failed before, backing off, budget, ordering, rollout).
    pub held: usize,
    /// Deployments adopted from an earlier process.
    pub adopted: usize,
    /// Changes the end of another deployment may let start: blocked on another resource's
    /// outputs, or held for an earlier stage or the delete order (see
    /// [`crate::plan::schedule::HoldReason::lifts_when_a_deployment_ends`]).
    pub waiting_on_deployments: usize,
    /// Resources in the plan.
    pub resources: usize,
    /// Resources whose desired state is invalid (bad spec, inputs or template).
    pub invalid: Vec<String>,
    /// Self-managed deployments waiting for their outcome to be reported.
    pub waiting: usize,
    /// What this cycle could not act on: unreadable or refused spec files and repos, repos
    /// read as last fetched because their fetch failed, and a refused deletion batch.
    /// Logged as warnings too.
    pub problems: Vec<String>,
}

/// A failed cycle (the repos or the store could not be read at all).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The state store failed.
    #[error("state store")]
    State(#[from] StateError),
    /// A deployment could not be begun or finished in the state store.
    #[error("deployments could not be recorded in the state store: {0}")]
    Record(String),
    /// Reading the repos panicked.
    #[error("reading the repos failed")]
    Load(#[source] tokio::task::JoinError),
}

/// Runs one cycle: the steps listed in the module documentation, in order.
///
/// # Errors
///
/// [`ReconcileError`] when the repos or the store cannot be read at all.
pub async fn cycle(ctx: &Arc<Ctx>, fetch: desired::Fetch) -> Result<CycleReport, ReconcileError> {
    let span = tracing::info_span!(
        "cycle",
        changes = tracing::field::Empty,
        started = tracing::field::Empty
    );
    let started_at = Instant::now();
    async move {
        let snapshot = load(ctx, fetch).await?;
        record_catalog(&ctx.store, &snapshot.catalog, &ctx.telemetry).await?;
        let mut report = CycleReport::default();
        let waiting = waiting(&ctx.store).await?;
        report.waiting = waiting.len();
        report.adopted = adopt(ctx, &snapshot, &waiting).await?;
        let mut facts = read_facts(
            &ctx.store,
            ctx.running(),
            waiting,
            ctx.backoff_remaining(),
            (ctx.clock)(),
        )
        .await?;
        facts.scope = (*ctx.scope()).clone();
        let eval = {
            let mut cache = ctx
                .compute_cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            evaluate::evaluate(&snapshot, &facts, &ctx.config, Some(&mut cache))
        };
        // Quarantines decided now are recorded before anything starts.
        super::quarantine::record(ctx, &eval.new_quarantines).await?;
        report_problems(&eval, &mut report, &ctx.repeats);
        report.waiting_on_deployments = waiting_on_deployments(
            eval.plan.actions.iter().map(|a| &a.action),
            eval.schedule
                .holds()
                .map(|(_, why)| why)
                .chain(eval.rollout_holds.values()),
        );
        // A repo read as last fetched deploys, but its fetch failed: say so (unread repos
        // are among the desired state's problems already).
        report.problems.extend(
            ctx.skipped()
                .iter()
                .filter(|r| r.fallback == Fallback::LastFetched)
                .map(ToString::to_string),
        );
        ctx.set_findings(
            crate::ops::Findings::from_plan(&eval.plan)
                .with_customer_managed(&eval.set.customer_managed),
        );
        // The approvals a deployment uses are recorded before it starts: its history row
        // names them.
        super::gate::record_approvals(&ctx.store, &eval).await?;
        start(ctx, &snapshot, &eval, &facts.records, &mut report);
        // The rest of the bookkeeping concerns resources that do not start (unchanged,
        // invalid, held): written once the deployments are on their way.
        record_moves(&ctx.store, &eval, &facts.records).await?;
        let known = known(&eval, &facts.records);
        record_spec_findings(&ctx.store, &eval, (&facts.scope, &known)).await?;
        super::gate::record(&ctx.store, &eval, &ctx.telemetry, (&facts.scope, &known)).await?;
        super::drift::maybe_start(ctx, &eval);
        log_holds(&eval, &ctx.repeats);
        propose(ctx, snapshot, facts.records).await;
        // What the cycle freed goes back to the system, so that the daemon at rest holds
        // only what it keeps (repo handles, the render cache, the last snapshot).
        drop(eval);
        desired::release_freed_memory();
        tracing::Span::current().record("started", report.started);
        CycleFinished {
            resources: report.resources,
            started: report.started,
            held: report.held,
            adopted: report.adopted,
            elapsed: started_at.elapsed(),
        }
        .emit(&ctx.telemetry);
        Ok(report)
    }
    .instrument(span)
    .await
}

/// How many changes wait for another resource's deployment to end: those blocked on its
/// outputs, and those held for a reason its end may lift. Pure.
pub fn waiting_on_deployments<'a>(
    actions: impl Iterator<Item = &'a ActionKind>,
    holds: impl Iterator<Item = &'a HoldReason>,
) -> usize {
    actions
        .filter(|a| matches!(a, ActionKind::Blocked { .. }))
        .count()
        + holds.filter(|h| h.lifts_when_a_deployment_ends()).count()
}

/// The resources this cycle knows (desired, then recorded): id → kind and repo, for the
/// shard that answers for their bookkeeping rows.
fn known<'a>(eval: &'a Evaluation, records: &'a [ResourceRecord]) -> Known<'a> {
    let mut known: Known<'a> = records
        .iter()
        .map(|r| (r.id.as_str(), (r.kind, r.repo.as_str())))
        .collect();
    known.extend(eval.set.resources.iter().map(|r| {
        (
            r.desired.id.as_str(),
            (r.desired.kind, r.desired.repo.as_str()),
        )
    }));
    known
}

/// Records the resources this cycle found invalid, for `protond status` (another process):
/// the findings of the resources this leader answers for (`scope`), the other shards'
/// left as their leaders wrote them.
///
/// # Errors
///
/// [`StateError`] when the store cannot record them.
async fn record_spec_findings(
    store: &Store,
    eval: &Evaluation,
    (scope, known): (&Scope, &Known<'_>),
) -> Result<(), StateError> {
    let findings: BTreeMap<String, crate::state::drift::SpecFinding> = eval
        .plan
        .actions
        .iter()
        .filter_map(|a| match &a.action {
            crate::plan::ActionKind::Invalid { error } => Some((
                a.id.clone(),
                crate::state::drift::SpecFinding {
                    kind: a.kind,
                    template: a.template.clone(),
                    detail: error.clone(),
                },
            )),
            _ => None,
        })
        .collect();
    // Written only when it changed: most cycles find what the last one found.
    let mut before = store.spec_findings().await?;
    before.retain(|id, _| findings.contains_key(id) || scope.answers_for(id, known));
    if before == findings {
        return Ok(());
    }
    let fixed = scope.stale_rows(before.keys(), |id| findings.contains_key(id), known);
    store.set_spec_findings(&findings, &fixed).await
}

/// Step 1: fetches what `fetch` names and reads every repo (blocking git work, off the
/// runtime), reusing what the last cycle read where nothing changed.
async fn load(ctx: &Arc<Ctx>, fetch: desired::Fetch) -> Result<Arc<Snapshot>, ReconcileError> {
    let previous = ctx.previous.lock().await.clone();
    let config = ctx.config.clone();
    let fetched_all = fetch == desired::Fetch::All;
    if let desired::Fetch::Only(repos) = &fetch {
        tracing::info!(repos = ?repos, "Fetching the repos named by the trigger.");
    }
    // Each repo's fetch and read has its own time budget inside (`[git]`): a slow repo is
    // skipped, the others proceed.
    let snapshot =
        tokio::task::spawn_blocking(move || desired::load_shared(config, previous, &fetch))
            .await
            .map_err(ReconcileError::Load)?;
    let mut snapshot = snapshot;
    snapshot.add_forgotten(&forgotten_repos(&ctx.store, &ctx.config).await?);
    super::customer::read_stacks(&ctx.cfn, &mut snapshot).await;
    let snapshot = Arc::new(snapshot);
    for (repo, reason) in &snapshot.template_repo_errors {
        FetchFailed {
            source: SourceKind::Template,
            repo,
            reason,
        }
        .emit(&ctx.telemetry);
    }
    for repo in &snapshot.spec_repos {
        if let Some(reason) = &repo.unknown {
            FetchFailed {
                source: SourceKind::Spec,
                repo: &repo.repo,
                reason,
            }
            .emit(&ctx.telemetry);
        }
    }
    let skipped = skipped_repos(&ctx.config, &snapshot);
    ReposSkipped { repos: &skipped }.emit(&ctx.telemetry);
    ctx.record_skipped(skipped).await;
    if fetched_all {
        ctx.telemetry.fetched();
    }
    *ctx.previous.lock().await = Some(snapshot.clone());
    Ok(snapshot)
}

/// The repos `snapshot` could not fetch or read, in config order: template repos not read,
/// spec repos unknown, and repos read as last fetched.
#[must_use]
pub fn skipped_repos(config: &crate::config::Config, snapshot: &Snapshot) -> Vec<SkippedRepo> {
    let not_read = |source, repo: &str, reason: &str| SkippedRepo {
        repo: repo.to_owned(),
        source,
        fallback: Fallback::NotRead,
        reason: reason.to_owned(),
    };
    let mut out: Vec<SkippedRepo> = snapshot
        .template_repo_errors
        .iter()
        .map(|(repo, reason)| not_read(SourceKind::Template, repo, reason))
        .chain(snapshot.spec_repos.iter().filter_map(|s| {
            s.unknown
                .as_deref()
                .map(|reason| not_read(SourceKind::Spec, &s.repo, reason))
        }))
        .collect();
    for (repo, reason) in &snapshot.stale_repos {
        let source = if config.template_repos.iter().any(|t| &t.name == repo) {
            SourceKind::Template
        } else {
            SourceKind::Spec
        };
        out.push(SkippedRepo {
            repo: repo.clone(),
            source,
            fallback: Fallback::LastFetched,
            reason: reason.clone(),
        });
    }
    let position = |r: &SkippedRepo| {
        config
            .template_repos
            .iter()
            .map(|t| &t.name)
            .chain(config.spec_repos.iter().map(|s| &s.name))
            .position(|name| name == &r.repo)
    };
    out.sort_by_key(position);
    out
}

/// The repos `protond forget` marked, after dropping the marks that no longer apply: a
/// repo in the config again (read as usual from now on, so that removing it later does not
/// delete anything by surprise), or one with no resources left. Each drop is logged.
///
/// # Errors
///
/// [`StateError`] when the store cannot be read or written.
async fn forgotten_repos(
    store: &Store,
    config: &crate::config::Config,
) -> Result<BTreeMap<String, String>, StateError> {
    let mut forgotten = store.forgotten_repos().await?;
    if forgotten.is_empty() {
        return Ok(forgotten);
    }
    let counts = store.resources_per_repo().await?;
    let mut dropped = Vec::new();
    for repo in forgotten.keys() {
        let configured = config
            .spec_repos
            .iter()
            .any(|r| &r.name == repo && !r.retired);
        let left = counts.get(repo).copied().unwrap_or(0);
        if configured {
            tracing::warn!(repo = %repo, "Spec repo forgotten with protond forget is in the config again: its mark is dropped and it is read as usual.");
        } else if left == 0 {
            tracing::info!(repo = %repo, "Spec repo forgotten with protond forget has no resources left: its mark is dropped.");
        } else {
            continue;
        }
        dropped.push(repo.clone());
    }
    for repo in dropped {
        store.unforget_repo(&repo).await?;
        forgotten.remove(&repo);
    }
    Ok(forgotten)
}

/// Step 2: records every registered and rejected release; logs the new ones.
///
/// # Errors
///
/// [`StateError`] when the store cannot record them.
pub async fn record_catalog(
    store: &Store,
    catalog: &Catalog,
    telemetry: &crate::telemetry::Telemetry,
) -> Result<(), StateError> {
    for r in catalog.releases() {
        let rec = TemplateVersionRecord {
            template: r.template.clone(),
            version: r.version,
            kind: r.bundle.kind.to_string(),
            repo: r.repo.clone(),
            tag: r.tag.clone(),
            commit: r.commit.clone(),
            registered: true,
            reason: None,
            release_notes: r.notes.clone(),
            tag_state: match r.state {
                ReleaseState::Current => TagState::Current,
                ReleaseState::Moved { .. } => TagState::Moved,
                ReleaseState::Withdrawn => TagState::Withdrawn,
            },
            tag_commit: match &r.state {
                ReleaseState::Moved { tag_commit } => Some(tag_commit.clone()),
                _ => None,
            },
        };
        if store.record_template_version(&rec).await? {
            match &r.state {
                ReleaseState::Current => {
                    tracing::info!(template = %r.template, version = %r.version, tag = %r.tag, "Template version registered.");
                }
                ReleaseState::Moved { tag_commit } => ReleaseRefused {
                    template: &r.template,
                    version: r.version,
                    tag: &r.tag,
                    refusal: Refusal::TagMoved {
                        commit: &r.commit,
                        tag_commit,
                    },
                }
                .emit(telemetry),
                ReleaseState::Withdrawn => {
                    tracing::warn!(template = %r.template, version = %r.version, tag = %r.tag, commit = %r.commit, "Release tag deleted: the release stays for the resources that run it and is no longer given to new resources.");
                }
            }
        }
    }
    for r in &catalog.rejected {
        let rec = TemplateVersionRecord {
            template: r.template.clone(),
            version: r.version,
            kind: String::new(),
            repo: r.repo.clone(),
            tag: r.tag.clone(),
            commit: r.commit.clone(),
            registered: false,
            reason: Some(r.reason.clone()),
            release_notes: r.notes.clone(),
            tag_state: TagState::Current,
            tag_commit: None,
        };
        if store.record_template_version(&rec).await? {
            ReleaseRefused {
                template: &r.template,
                version: r.version,
                tag: &r.tag,
                refusal: Refusal::Rejected { reason: &r.reason },
            }
            .emit(telemetry);
        }
    }
    Ok(())
}

/// Self-managed deployments waiting for `protond notify` (not for a stack).
///
/// # Errors
///
/// [`StateError`] when the store cannot be read.
pub async fn waiting(store: &Store) -> Result<BTreeSet<String>, StateError> {
    Ok(store
        .self_managed_waiting()
        .await?
        .into_iter()
        .map(|r| r.resource_id)
        .collect())
}

/// Step 3: hands every deployment an earlier process left in flight to the lifecycle (its
/// provisioner's `adopt`). Returns how many were adopted.
async fn adopt(
    ctx: &Arc<Ctx>,
    snapshot: &Snapshot,
    waiting: &BTreeSet<String>,
) -> Result<usize, StateError> {
    let roles = evaluate::environment_field(snapshot, |e| e.role_arn.as_ref());
    let scope = ctx.scope();
    let mut adopted = 0;
    // Read before the rows: a task of this process holds its claim from before its row is
    // begun until after it is finished, so a row of a resource claimed now may be finished
    // by its own task between this read and the claim below; a row of a resource not
    // claimed now is no task's here (cycles, the only claimers, run one at a time).
    let running = ctx.running();
    for dep in ctx.store.in_flight().await? {
        if waiting.contains(&dep.deployment.resource_id)
            || running.contains(&dep.deployment.resource_id)
        {
            continue;
        }
        // Another shard's deployment is its leader's to adopt.
        if !scope.owns(dep.deployment.kind, &dep.deployment.repo) {
            continue;
        }
        if let Some(claim) = ctx.claim(&dep.deployment.resource_id) {
            adopted += 1;
            let role = role_for(&roles, dep.deployment.environment.as_ref());
            lifecycle::spawn(ctx.clone(), claim, Work::Adopt(dep), role);
        }
    }
    Ok(adopted)
}

/// Step 4: reads what the scheduler decides from. `running` are the resources with a task in
/// this process; deployments another process left in flight count as running too.
///
/// # Errors
///
/// [`StateError`] when the store cannot be read.
pub async fn read_facts(
    store: &Store,
    mut running: BTreeSet<String>,
    waiting: BTreeSet<String>,
    backoff: BTreeMap<String, std::time::Duration>,
    now: std::time::SystemTime,
) -> Result<Facts, StateError> {
    // A resource with a deployment running now is left to the next cycle, which plans it
    // from the record its outcome leaves: were it to finish between reading the records and
    // claiming it, a plan from the stale record would deploy it a second time.
    // The reads are the last cycle's when nothing was written since (the store's generation).
    let reads = store.cycle_reads().await?;
    running.extend(
        reads
            .in_flight
            .iter()
            .map(|d| d.deployment.resource_id.clone()),
    );
    let halted: BTreeMap<(String, Version), String> = reads
        .rollouts
        .iter()
        .filter(|(_, (halted, _))| *halted)
        .map(|(key, (_, reason))| (key.clone(), reason.clone()))
        .collect();
    Ok(Facts {
        records: reads.resources.clone(),
        halted,
        quarantined: reads.quarantined.clone(),
        running,
        waiting,
        last_failures: reads.last_failures.clone(),
        backoff,
        forced: reads
            .deploy_requests
            .iter()
            .map(|(id, r)| (id.clone(), r.cause))
            .collect(),
        pins: reads
            .pins
            .iter()
            .filter_map(crate::evaluate::pins::from_record)
            .collect(),
        holds: reads.holds.clone(),
        approvals: reads.approvals.clone(),
        now,
        scope: crate::ha::shard::Scope::all(),
    })
}

/// Logs the desired state's problems and invalid resources, and adds them to the report.
/// Each is logged at `warn` in the cycle it appears, then at `debug` while it stays the same
/// (`repeats`). The rollout holds are logged after the starts ([`log_holds`]).
fn report_problems(eval: &Evaluation, report: &mut CycleReport, repeats: &Repeats) {
    let problems = repeats.news("problem", eval.set.problems.iter().cloned().collect());
    for p in &eval.set.problems {
        if problems.contains(p) {
            tracing::warn!(problem = %p, "Desired state problem.");
        } else {
            tracing::debug!(problem = %p, "Desired state problem (unchanged).");
        }
    }
    report.problems.clone_from(&eval.set.problems);
    report.resources = eval.plan.actions.len();
    tracing::Span::current().record("changes", eval.plan.changes().count());
    let invalid: Vec<(&str, &str)> = eval
        .plan
        .actions
        .iter()
        .filter_map(|a| match &a.action {
            ActionKind::Invalid { error } => Some((a.id.as_str(), error.as_str())),
            _ => None,
        })
        .collect();
    let new_invalid = repeats.news(
        "invalid",
        invalid.iter().map(|(id, e)| format!("{id}\n{e}")).collect(),
    );
    for (id, error) in invalid {
        report.invalid.push(id.to_string());
        if new_invalid.contains(&format!("{id}\n{error}")) {
            tracing::warn!(resource = %id, error = %error, "Resource is invalid; what is deployed is left as is.");
        } else {
            tracing::debug!(resource = %id, error = %error, "Resource is invalid (unchanged).");
        }
    }
    if let Some((_, hold @ HoldReason::DeletionBudget { deletes, budget })) = eval
        .schedule
        .holds()
        .find(|(_, h)| matches!(h, HoldReason::DeletionBudget { .. }))
    {
        tracing::error!(
            deletes,
            budget,
            "Refusing to delete: more resources would be deleted than the per-cycle deletion budget allows. Raise daemon.deletion_budget if this is intended."
        );
        report.problems.push(hold.to_string());
    }
}

/// Logs the rollout holds: at `info` in the cycle a hold appears, then at `debug` while it
/// stays the same (`repeats`). Called once the cycle's deployments started: a tag that holds
/// most of a large fleet logs a line per held resource, which would otherwise delay the
/// first deployment.
fn log_holds(eval: &Evaluation, repeats: &Repeats) {
    let holds = repeats.news(
        "hold",
        eval.rollout_holds
            .iter()
            .map(|(id, why)| format!("{id}\n{why}"))
            .collect(),
    );
    // New holds by reason: a few are logged one by one; a rollout holding thousands of
    // resources for one reason is one line with its count (issue 20: 50,000 lines a tag).
    let mut new: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (id, why) in &eval.rollout_holds {
        if holds.contains(&format!("{id}\n{why}")) {
            new.entry(why.to_string()).or_default().push(id.as_str());
        } else {
            tracing::debug!(resource = %id, "Minor upgrade held (unchanged): {why}.");
        }
    }
    for (why, ids) in new {
        if ids.len() <= HOLDS_LOGGED_ONE_BY_ONE {
            for id in ids {
                tracing::info!(resource = %id, "Minor upgrade held: {why}.");
            }
            continue;
        }
        let first: Vec<&str> = ids.iter().take(HOLDS_LOGGED_ONE_BY_ONE).copied().collect();
        tracing::info!(
            resources = ids.len(),
            first = %first.join(", "),
            "Minor upgrade held for {} resources: {why}.",
            ids.len()
        );
        for id in ids {
            tracing::debug!(resource = %id, "Minor upgrade held: {why}.");
        }
    }
}

/// New holds of one reason up to this many are logged one line each; more are one line.
const HOLDS_LOGGED_ONE_BY_ONE: usize = 5;

/// Step 7: a spec file moved to another repo without changing what it renders: no
/// deployment will record the move, so record it here (ownership and "unknown repo, delete
/// nothing" read the record's repo).
async fn record_moves(
    store: &Store,
    eval: &Evaluation,
    records: &[ResourceRecord],
) -> Result<(), StateError> {
    let (resources, records) = by_id(eval, records, |_| true);
    for a in eval
        .plan
        .actions
        .iter()
        .filter(|a| a.action == ActionKind::NoOp)
    {
        if let (Some(r), Some(rec)) = (resources.get(a.id.as_str()), records.get(a.id.as_str()))
            && r.desired.repo != rec.repo
        {
            tracing::info!(resource = %a.id, from = %rec.repo, to = %r.desired.repo, "Resource now declared by another repo.");
            store.set_resource_repo(&a.id, &r.desired.repo).await?;
        }
    }
    Ok(())
}

/// Step 6: starts a deployment task for every change the schedule lets start.
fn start(
    ctx: &Arc<Ctx>,
    snapshot: &Snapshot,
    eval: &Evaluation,
    records: &[ResourceRecord],
    report: &mut CycleReport,
) {
    let roles = evaluate::environment_field(snapshot, |e| e.role_arn.as_ref());
    // Only the starting resources are looked up: a tag that starts a stage of a large
    // fleet starts a few of its resources, and the first should not wait for maps of all.
    let starting: HashSet<&str> = eval.schedule.starts().map(|a| a.id.as_str()).collect();
    let (resources, records) = by_id(eval, records, |id| starting.contains(id));
    report.held += eval.schedule.holds().count();
    for a in eval.schedule.starts() {
        let Some(claim) = ctx.claim(&a.id) else {
            report.held += 1;
            continue;
        };
        let (work, env) = if a.action == ActionKind::Delete {
            let record = records.get(a.id.as_str()).map(|r| (*r).clone());
            let env = record.as_ref().and_then(|r| r.environment.clone());
            let work = Work::Delete {
                action: a.clone(),
                record,
            };
            (work, env)
        } else {
            let Some(resource) = resources.get(a.id.as_str()) else {
                continue;
            };
            let work = Work::Apply {
                action: a.clone(),
                resource: (*resource).clone(),
                record: records.get(a.id.as_str()).map(|r| (*r).clone()),
            };
            (work, resource.environment.clone())
        };
        let role = role_for(&roles, env.as_ref());
        lifecycle::spawn(ctx.clone(), claim, work, role);
        report.started += 1;
    }
}

/// Step 8: starts the pull-request pass for major upgrades in the background.
async fn propose(ctx: &Arc<Ctx>, snapshot: Arc<Snapshot>, records: Vec<ResourceRecord>) {
    ctx.start_proposals(snapshot, records).await;
}

/// The evaluation's resources and the records whose id `wanted` keeps, by resource id.
fn by_id<'a>(
    eval: &'a Evaluation,
    records: &'a [ResourceRecord],
    wanted: impl Fn(&str) -> bool,
) -> (
    HashMap<&'a str, &'a Resource>,
    HashMap<&'a str, &'a ResourceRecord>,
) {
    let resources = eval
        .set
        .resources
        .iter()
        .map(|r| (r.desired.id.as_str(), r))
        .filter(|(id, _)| wanted(id))
        .collect();
    let records = records
        .iter()
        .map(|r| (r.id.as_str(), r))
        .filter(|(id, _)| wanted(id))
        .collect();
    (resources, records)
}

fn role_for(roles: &BTreeMap<String, String>, env: Option<&String>) -> Option<String> {
    env.and_then(|e| roles.get(e).cloned())
}
