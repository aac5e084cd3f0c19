//! One reconcile cycle, and the deployment tasks it starts.
//!
//! A cycle reads the repos, records the catalogue, adopts deployments left in flight by an
//! earlier process, plans, and starts a background task for every change that may run now.
//! It never waits for stacks: each task claims its deployment in the store, drives
//! CloudFormation, polls, records the outcome, and wakes the scheduler so dependants proceed.
//!
//! # Guarantees
//! * One deployment in flight per resource (in memory and by a unique index in the store),
//!   and a resource is only planned while nothing runs for it, from the record its last
//!   outcome left (never twice from a stale record).
//! * A deployment row is written before any stack call, and finished in one transaction with
//!   the resource record: after a crash, [`adopt`] finds the row, reads the stack by its
//!   deterministic name and `protond:deployment` tag, and finishes it. No duplicate stacks.
//! * A failure that retrying cannot fix is not retried until something changes (a new commit
//!   or version); transient failures back off exponentially with jitter.
//! * Deletes run after creates and updates, kinds in reverse order, an environment only once
//!   nothing lives in it, and never more than the deletion budget in one cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify, Semaphore, mpsc};
use tracing::Instrument as _;

use crate::config::Config;
use crate::desired::{self, Resource};
use crate::ops;
use crate::plan::{self, Action, ActionKind, DesiredState, ResourceKind, UpdateReason};
use crate::provision::cloudformation::{
    self, CloudFormation, StackRequest, Started, TAG_DEPLOYMENT,
};
use crate::state::{DeploymentRecord, NewDeployment, Outcome, ResourceRecord, StateError, Store};

/// Everything a cycle needs: the config, the backends, and the in-memory bookkeeping.
pub struct Ctx {
    /// Configuration.
    pub config: Config,
    /// State store.
    pub store: Store,
    /// CloudFormation.
    pub cfn: CloudFormation,
    /// CodePipeline (same SDK configuration).
    pub pipelines: crate::provision::codepipeline::CodePipeline,
    previous: Mutex<Option<Arc<desired::Snapshot>>>,
    compute_cache: std::sync::Mutex<desired::ComputeCache>,
    inflight: Mutex<BTreeSet<String>>,
    idle: Notify,
    permits: Arc<Semaphore>,
    backoff: Mutex<BTreeMap<String, (Instant, u32)>>,
    wake: mpsc::UnboundedSender<()>,
    proposer: Mutex<Option<tokio::task::JoinHandle<crate::propose::SyncReport>>>,
    /// Metrics.
    pub telemetry: crate::telemetry::Telemetry,
    proposal_backoff: Arc<crate::propose::Backoff>,
    /// Wakes the run loop for a cycle (webhooks, the API); what it fetches is in
    /// `fetch_request` (see [`Ctx::request_cycle`]).
    pub fetch_now: Notify,
    fetch_request: std::sync::Mutex<desired::Fetch>,
    /// Deployments that failed since start.
    pub failed: AtomicU64,
    /// Deployments that succeeded since start.
    pub succeeded: AtomicU64,
    /// The last failure to write a deployment to the state store (begin or finish).
    store_failure: std::sync::Mutex<Option<String>>,
}

/// What a cycle did.
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    /// Deployments started.
    pub started: usize,
    /// Changes held back (in flight, failed before, backing off, budget, ordering).
    pub held: usize,
    /// Deployments adopted from an earlier process.
    pub adopted: usize,
    /// Resources in the plan.
    pub resources: usize,
    /// Resources whose desired state is invalid (bad spec, inputs or template).
    pub invalid: Vec<String>,
    /// Self-managed deployments waiting for their outcome to be reported.
    pub waiting: usize,
    /// What this cycle could not act on: unreadable or refused spec files and repos, and a
    /// refused deletion batch. Logged as warnings too.
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
    #[error("reading the repos failed: {0}")]
    Load(String),
}

impl Ctx {
    /// Builds the context; `wake` receives a message whenever a deployment finishes.
    #[must_use]
    pub fn new(
        config: Config,
        store: Store,
        cfn: CloudFormation,
        wake: mpsc::UnboundedSender<()>,
    ) -> Arc<Self> {
        let permits = Arc::new(Semaphore::new(config.concurrency));
        let pipelines = crate::provision::codepipeline::CodePipeline::new(cfn.sdk_config());
        Arc::new(Self {
            config,
            store,
            cfn,
            pipelines,
            previous: Mutex::new(None),
            compute_cache: std::sync::Mutex::new(desired::ComputeCache::default()),
            inflight: Mutex::new(BTreeSet::new()),
            idle: Notify::new(),
            permits,
            backoff: Mutex::new(BTreeMap::new()),
            wake,
            proposer: Mutex::new(None),
            telemetry: crate::telemetry::Telemetry::new(),
            proposal_backoff: Arc::default(),
            fetch_now: Notify::new(),
            fetch_request: std::sync::Mutex::new(desired::Fetch::None),
            failed: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            store_failure: std::sync::Mutex::new(None),
        })
    }

    /// Waits until no deployment task is running, or `deadline` passes. Returns whether idle.
    pub async fn wait_idle(&self, deadline: Option<Duration>) -> bool {
        let start = Instant::now();
        loop {
            let notified = self.idle.notified();
            if self.inflight.lock().await.is_empty() {
                return true;
            }
            match deadline {
                Some(d) => {
                    let left = d.saturating_sub(start.elapsed());
                    if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                        return self.inflight.lock().await.is_empty();
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Waits for the pull-request pass started by the last cycle, if one is running, and
    /// returns what it did.
    pub async fn wait_proposals(&self) -> Option<crate::propose::SyncReport> {
        let handle = self.proposer.lock().await.take()?;
        handle.await.ok()
    }

    /// Starts a pull-request pass in the background unless one is still running.
    async fn start_proposals(
        self: &Arc<Self>,
        snapshot: Arc<desired::Snapshot>,
        deployed: Vec<ResourceRecord>,
    ) {
        if !self.config.proposals.enabled
            || !self.config.spec_repos.iter().any(|r| r.forge.is_some())
        {
            return;
        }
        let mut slot = self.proposer.lock().await;
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let ctx = self.clone();
        *slot = Some(tokio::spawn(
            async move {
                crate::propose::sync(
                    &ctx.config,
                    &ctx.store,
                    &ctx.telemetry,
                    &snapshot,
                    &deployed,
                    &ctx.proposal_backoff,
                )
                .await
            }
            .instrument(tracing::info_span!("proposals")),
        ));
    }

    /// Wakes the run loop for a cycle (without fetching), e.g. after an outcome was
    /// reported.
    pub fn poke(&self) {
        let _ = self.wake.send(());
    }

    /// Number of deployment tasks running.
    pub async fn in_flight(&self) -> usize {
        self.inflight.lock().await.len()
    }

    /// Asks the run loop for a cycle now, fetching `fetch` first (a webhook names its repos;
    /// a rollout decision needs no fetch).
    pub fn request_cycle(&self, fetch: desired::Fetch) {
        if let Ok(mut pending) = self.fetch_request.lock() {
            *pending = std::mem::take(&mut *pending).merge(fetch);
        }
        self.fetch_now.notify_one();
    }

    /// Takes what the requests since the last call asked to fetch.
    pub fn take_fetch_request(&self) -> desired::Fetch {
        self.fetch_request
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or(desired::Fetch::All)
    }

    /// Takes the last failure to write a deployment to the state store, if any since the
    /// last call.
    pub fn take_store_failure(&self) -> Option<String> {
        self.store_failure.lock().ok()?.take()
    }

    fn store_failed(&self, e: &StateError) {
        // The whole chain: a query error's cause (say, "database or disk is full") is in
        // its source.
        let msg = crate::error_chain(e);
        if let Ok(mut slot) = self.store_failure.lock() {
            *slot = Some(msg);
        }
    }

    async fn claim(&self, id: &str) -> bool {
        self.inflight.lock().await.insert(id.to_string())
    }

    async fn release(&self, id: &str) {
        let mut set = self.inflight.lock().await;
        set.remove(id);
        if set.is_empty() {
            self.idle.notify_waiters();
        }
    }
}

fn role_for(snapshot_roles: &BTreeMap<String, String>, env: Option<&String>) -> Option<String> {
    env.and_then(|e| snapshot_roles.get(e).cloned())
}

/// One field of every environment spec that sets it, by environment name.
fn environment_field(
    snapshot: &desired::Snapshot,
    field: impl Fn(&crate::spec::EnvironmentSpec) -> Option<&String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for repo in &snapshot.spec_repos {
        for f in &repo.files {
            if let Ok(crate::spec::SpecFile::Environment(e)) = &f.spec
                && let Some(v) = field(e)
            {
                out.insert(e.name.clone(), v.clone());
            }
        }
    }
    out
}

/// Where a resource stands in the rollout order: its environment's stage; resources with
/// no known stage (and pipelines) go last.
fn stage_rank(
    stages: &[String],
    env_stages: &BTreeMap<String, String>,
    env: Option<&String>,
) -> usize {
    env.and_then(|e| env_stages.get(e))
        .and_then(|s| stages.iter().position(|x| x == s))
        .unwrap_or(stages.len())
}

/// Whether `at` falls in a maintenance window given as a cron schedule in `tz`.
#[must_use]
pub fn in_window(
    window: &cron::Schedule,
    tz: chrono_tz::Tz,
    at: chrono::DateTime<chrono::Utc>,
) -> bool {
    window.includes(at.with_timezone(&tz))
}

/// Whether a minor upgrade may start: its rollout is not halted, every resource of earlier
/// stages moving to the same version is deployed on it, and the soak time has passed since
/// the last of them finished. `Err` says why not.
#[allow(clippy::too_many_arguments)]
fn rollout_gate(
    a: &Action,
    resource: &Resource,
    all: &[Resource],
    deployed: &BTreeMap<&str, &ResourceRecord>,
    stages: &[String],
    env_stages: &BTreeMap<String, String>,
    rollouts: &BTreeMap<(String, plan::Version), (bool, String)>,
    config: &Config,
) -> Result<(), String> {
    let soak = config.soak;
    let ActionKind::Update {
        reason: UpdateReason::MinorUpgrade { to, .. },
    } = &a.action
    else {
        return Ok(());
    };
    if let Some((true, reason)) = rollouts.get(&(a.template.clone(), *to)) {
        return Err(format!(
            "rollout of {} {to} is halted: {reason}",
            a.template
        ));
    }
    if let Some(stage) = resource
        .environment
        .as_ref()
        .and_then(|e| env_stages.get(e))
        && let Some(window) = config.windows.get(stage)
        && !in_window(window, config.timezone, chrono::Utc::now())
    {
        return Err(format!("outside the maintenance window of stage {stage}"));
    }
    let mine = stage_rank(stages, env_stages, resource.environment.as_ref());
    let mut latest: Option<std::time::SystemTime> = None;
    for r in all {
        if r.desired.template != a.template
            || r.desired.version != *to
            || stage_rank(stages, env_stages, r.environment.as_ref()) >= mine
        {
            continue;
        }
        match deployed.get(r.desired.id.as_str()) {
            Some(rec) if rec.version == *to && rec.status == "deployed" => {
                let at = humantime::parse_rfc3339(&rec.updated_at).ok();
                latest = latest.max(at);
            }
            _ => {
                return Err(format!(
                    "waiting for the earlier stage: {} is not yet on {to}",
                    r.desired.id
                ));
            }
        }
    }
    if let Some(at) = latest {
        let elapsed = at.elapsed().unwrap_or_default();
        if elapsed < soak {
            return Err(format!(
                "earlier stages are soaking for another {}s",
                (soak - elapsed).as_secs()
            ));
        }
    }
    Ok(())
}

/// Runs one cycle: read, record, adopt, plan, start deployments.
pub async fn cycle(ctx: &Arc<Ctx>, fetch: desired::Fetch) -> Result<CycleReport, ReconcileError> {
    let span = tracing::info_span!(
        "cycle",
        changes = tracing::field::Empty,
        started = tracing::field::Empty
    );
    let started_at = Instant::now();
    async move {
        let previous = ctx.previous.lock().await.clone();
        let config = ctx.config.clone();
        let fetched_all = fetch == desired::Fetch::All;
        if let desired::Fetch::Only(repos) = &fetch {
            tracing::info!(repos = ?repos, "Fetching the repos named by the trigger.");
        }
        let snapshot = tokio::task::spawn_blocking(move || {
            desired::load_cached_with(&config, previous.as_deref(), &fetch)
        })
        .await
        .map_err(|e| ReconcileError::Load(e.to_string()))?;
        let snapshot = Arc::new(snapshot);
        for (repo, reason) in &snapshot.template_repo_errors {
            tracing::warn!(repo = %repo, reason = %reason, "Template repo could not be read.");
            ctx.telemetry.fetch_failures.get_or_create(&crate::telemetry::SourceLabels { source: "template".into() }).inc();
        }
        let unreadable = snapshot.spec_repos.iter().filter(|r| r.unknown.is_some()).count();
        if unreadable > 0 {
            ctx.telemetry.fetch_failures.get_or_create(&crate::telemetry::SourceLabels { source: "spec".into() }).inc_by(u64::try_from(unreadable).unwrap_or(0));
        }
        if fetched_all {
            ctx.telemetry.fetched();
        }
        ops::record_catalog(&ctx.store, &snapshot.catalog).await?;
        *ctx.previous.lock().await = Some(snapshot.clone());
        let roles = environment_field(&snapshot, |e| e.role_arn.as_ref());
        let env_stages = environment_field(&snapshot, |e| e.stage.as_ref());
        let rollouts = ctx.store.rollouts().await?;

        let mut report = CycleReport::default();
        // Self-managed deployments wait for `protond notify`, not for a stack.
        let waiting: BTreeSet<String> = ctx
            .store
            .self_managed_waiting()
            .await?
            .into_iter()
            .map(|r| r.resource_id)
            .collect();
        report.waiting = waiting.len();
        // Adopt deployments an earlier process left in flight.
        for dep in ctx.store.in_flight().await? {
            if waiting.contains(&dep.deployment.resource_id) {
                continue;
            }
            if ctx.claim(&dep.deployment.resource_id).await {
                report.adopted += 1;
                let role = role_for(&roles, dep.deployment.environment.as_ref());
                spawn_adopt(ctx.clone(), dep, role);
            }
        }

        // A resource with a deployment running now (adopted above, or started by an earlier
        // cycle) is left to the next cycle, which plans it from the record its outcome
        // leaves: were it to finish between reading the records and claiming it below, a plan
        // from the stale record would deploy it a second time.
        let running = ctx.inflight.lock().await.clone();
        let deployed = ctx.store.resources().await?;
        let observed: Vec<_> = deployed.iter().map(ResourceRecord::to_deployed).collect();
        let deployed_by_id: BTreeMap<&str, &ResourceRecord> =
            deployed.iter().map(|r| (r.id.as_str(), r)).collect();
        let latest_major = snapshot.catalog.latest_major();
        // Unchanged inputs (a no-op cycle) reuse the last rendering.
        let set = match ctx.compute_cache.lock() {
            Ok(mut cache) => cache.compute(&snapshot, &deployed, &ctx.config.account_id, &BTreeMap::new()),
            Err(_) => desired::compute(&snapshot, &deployed, &ctx.config.account_id),
        };
        let plan = plan::diff(&set.desired(), &observed, &set.unknown_repos, &latest_major);
        // Minor upgrades held back by the rollout order stay on their deployed version, so
        // that their spec changes still deploy.
        let mut pins = BTreeMap::new();
        let mut held = BTreeSet::new();
        for a in plan.changes() {
            let Some(resource) = set.resources.iter().find(|r| r.desired.id == a.id) else { continue };
            if let Err(why) = rollout_gate(a, resource, &set.resources, &deployed_by_id, &ctx.config.stages, &env_stages, &rollouts, &ctx.config) {
                tracing::info!(resource = %a.id, version = %a.version, "Minor upgrade held: {why}.");
                held.insert(a.id.clone());
                if let Some(v) = a.deployed {
                    pins.insert(a.id.clone(), v);
                }
            }
        }
        let (set, plan) = if pins.is_empty() {
            (set, plan)
        } else {
            let set = desired::compute_pinned(&snapshot, &deployed, &ctx.config.account_id, &pins);
            let plan = plan::diff(&set.desired(), &observed, &set.unknown_repos, &latest_major);
            (set, plan)
        };
        for p in &set.problems {
            tracing::warn!(problem = %p, "Desired state problem.");
        }
        report.problems.clone_from(&set.problems);
        report.resources = plan.actions.len();
        tracing::Span::current().record("changes", plan.changes().count());
        for a in &plan.actions {
            if let ActionKind::Invalid { error } = &a.action {
                report.invalid.push(a.id.clone());
                tracing::warn!(resource = %a.id, error = %error, "Resource is invalid; what is deployed is left as is.");
            }
        }
        let resources: BTreeMap<&str, &Resource> =
            set.resources.iter().map(|r| (r.desired.id.as_str(), r)).collect();
        // A spec file moved to another repo without changing what it renders: no deployment
        // will record the move, so record it here (ownership and "unknown repo, delete
        // nothing" read the record's repo).
        for a in plan.actions.iter().filter(|a| a.action == ActionKind::NoOp) {
            if let (Some(r), Some(rec)) = (resources.get(a.id.as_str()), deployed_by_id.get(a.id.as_str()))
                && r.desired.repo != rec.repo
            {
                tracing::info!(resource = %a.id, from = %rec.repo, to = %r.desired.repo, "Resource now declared by another repo.");
                ctx.store.set_resource_repo(&a.id, &r.desired.repo).await?;
            }
        }

        // Creates and updates.
        for a in plan.changes().filter(|a| a.action != ActionKind::Delete) {
            let Some(resource) = resources.get(a.id.as_str()) else { continue };
            // Still a minor upgrade after pinning: its held version could not be kept.
            if held.contains(&a.id)
                && matches!(a.action, ActionKind::Update { reason: UpdateReason::MinorUpgrade { .. } })
            {
                report.held += 1;
                continue;
            }
            if waiting.contains(&a.id)
                || running.contains(&a.id)
                || !may_start(ctx, a, Some(resource)).await?
            {
                report.held += 1;
                continue;
            }
            if ctx.claim(&a.id).await {
                let role = role_for(&roles, resource.environment.as_ref());
                spawn_apply(ctx.clone(), a.clone(), (*resource).clone(), role);
                report.started += 1;
            } else {
                report.held += 1;
            }
        }

        // Deletes: within budget, kinds in reverse order, environments only once empty.
        let deletes: Vec<&Action> = plan.changes().filter(|a| a.action == ActionKind::Delete).collect();
        if deletes.len() > ctx.config.deletion_budget {
            tracing::error!(
                deletes = deletes.len(),
                budget = ctx.config.deletion_budget,
                "Refusing to delete: more resources would be deleted than the per-cycle deletion budget allows. Raise daemon.deletion_budget if this is intended."
            );
            report.held += deletes.len();
            report.problems.push(format!(
                "{} deletions refused: the per-cycle deletion budget is {} (raise daemon.deletion_budget if this is intended)",
                deletes.len(),
                ctx.config.deletion_budget
            ));
        } else if !deletes.is_empty() {
            let inflight = ctx.inflight.lock().await.clone();
            let busy = report.started > 0 || !inflight.is_empty();
            let top = deletes.iter().map(|a| a.kind).max();
            for a in deletes {
                let record = deployed.iter().find(|r| r.id == a.id);
                let env_in_use = a.kind == ResourceKind::Environment
                    && deployed.iter().any(|r| {
                        r.kind != ResourceKind::Environment
                            && r.environment.as_deref() == record.and_then(|x| x.environment.as_deref())
                    });
                if busy
                    || Some(a.kind) != top
                    || env_in_use
                    || waiting.contains(&a.id)
                    || running.contains(&a.id)
                    || !may_start(ctx, a, None).await?
                {
                    report.held += 1;
                    continue;
                }
                if ctx.claim(&a.id).await {
                    let role = role_for(&roles, record.and_then(|r| r.environment.as_ref()));
                    spawn_delete(ctx.clone(), a.clone(), record.cloned(), role);
                    report.started += 1;
                }
            }
        }
        ctx.start_proposals(snapshot, deployed).await;
        ctx.telemetry.cycles.inc();
        ctx.telemetry.cycle_seconds.observe(started_at.elapsed().as_secs_f64());
        ctx.telemetry.cycled();
        tracing::Span::current().record("started", report.started);
        tracing::info!(
            resources = report.resources,
            started = report.started,
            held = report.held,
            adopted = report.adopted,
            "Reconcile cycle finished."
        );
        Ok(report)
    }
    .instrument(span)
    .await
}

/// Whether a change may start now: not failing the same way again, not backing off.
async fn may_start(ctx: &Ctx, a: &Action, resource: Option<&Resource>) -> Result<bool, StateError> {
    if let Some((until, _)) = ctx.backoff.lock().await.get(&a.id)
        && Instant::now() < *until
    {
        return Ok(false);
    }
    let last = ctx
        .store
        .deployments(Some(&a.id), 1)
        .await?
        .into_iter()
        .next();
    let Some(last) = last else { return Ok(true) };
    if last.status != "failed" || last.retryable {
        return Ok(true);
    }
    let same = match (resource, &a.action) {
        (Some(r), _) => {
            let rendered = match &r.desired.state {
                DesiredState::Ready { rendered_hash } => rendered_hash.as_str(),
                _ => "",
            };
            last.deployment.to_version == a.version
                && last.deployment.input_hash == r.desired.input_hash
                && last.deployment.rendered_hash == rendered
        }
        (None, ActionKind::Delete) => last.deployment.action == "delete",
        _ => false,
    };
    if same {
        tracing::debug!(resource = %a.id, "Not retrying a failed deployment until something changes.");
    }
    Ok(!same)
}

fn reason_label(a: &Action) -> Option<String> {
    match &a.action {
        ActionKind::Update { reason } => Some(
            match reason {
                UpdateReason::SpecChange => "spec_change",
                UpdateReason::MinorUpgrade { .. } => "minor_upgrade",
                UpdateReason::TemplateChange { .. } => "template_change",
                UpdateReason::Rerender => "rerender",
            }
            .to_string(),
        ),
        _ => None,
    }
}

fn action_label(a: &Action) -> &'static str {
    match a.action {
        ActionKind::Create => "create",
        ActionKind::Delete => "delete",
        _ => "update",
    }
}

async fn finish(
    ctx: &Ctx,
    id: i64,
    resource_id: &str,
    action: &str,
    outcome: Outcome,
    rollout: Option<(&str, plan::Version)>,
) {
    if let (
        Outcome::Failed {
            error,
            retryable: false,
        },
        Some((template, version)),
    ) = (&outcome, rollout)
    {
        let reason = format!("{resource_id} failed: {error}");
        match ctx
            .store
            .set_rollout(template, version, true, &reason)
            .await
        {
            Ok(()) => {
                tracing::error!(template, version = %version, reason = %reason, "Minor rollout halted.")
            }
            Err(e) => tracing::error!(error = %e, "Could not record the halted rollout."),
        }
    }
    match &outcome {
        Outcome::Interrupted => {
            // Not a failure of the deployment itself: retry at once.
            tracing::warn!(resource = %resource_id, deployment = id, "{}", crate::state::INTERRUPTED);
        }
        Outcome::Failed { error, retryable } => {
            ctx.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(resource = %resource_id, deployment = id, error = %error, retryable, "Deployment failed.");
            if *retryable {
                let mut backoff = ctx.backoff.lock().await;
                let attempts = backoff.get(resource_id).map_or(0, |(_, n)| *n) + 1;
                let base = Duration::from_secs(5).saturating_mul(1 << attempts.min(6));
                let jitter = Duration::from_millis(rand::random_range(0..1000));
                backoff.insert(
                    resource_id.to_string(),
                    (
                        Instant::now() + base.min(Duration::from_secs(300)) + jitter,
                        attempts,
                    ),
                );
            }
        }
        Outcome::Succeeded(_) | Outcome::Deleted => {
            ctx.succeeded.fetch_add(1, Ordering::Relaxed);
            ctx.backoff.lock().await.remove(resource_id);
            tracing::info!(resource = %resource_id, deployment = id, "Deployment succeeded.");
        }
    }
    // Bookkeeping must not be lost: retry the write a few times (a locked database).
    for attempt in 0..5u32 {
        match ctx.store.finish_deployment(id, &outcome).await {
            Ok(()) => break,
            Err(e) if e.is_retryable() && attempt < 4 => {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
            }
            Err(e) => {
                tracing::error!(resource = %resource_id, deployment = id, error = %e, "Could not record the deployment outcome; it will be adopted on the next cycle.");
                ctx.store_failed(&e);
                break;
            }
        }
    }
    // Counted once recorded, so a scrape never sees the counter ahead of the store.
    let kind = resource_id.split('/').next().unwrap_or_default();
    ctx.telemetry
        .deployment(kind, action, outcome_label(&outcome));
    let _ = ctx.wake.send(());
}

/// The CodePipeline pipeline of a service's pipeline stack: its `PipelineName` output, or
/// its `AWS::CodePipeline::Pipeline` resource. `Err` says why there is none.
pub async fn pipeline_name(
    cfn: &CloudFormation,
    store: &Store,
    service: &str,
) -> Result<String, String> {
    let id = desired::pipeline_id(service);
    let records = store.resources().await.map_err(|e| e.to_string())?;
    let Some(record) = records.iter().find(|r| r.id == id) else {
        return Err(format!("the pipeline of {service} is not deployed (yet)"));
    };
    if let Some(name) = record
        .outputs
        .get(crate::provision::codepipeline::PIPELINE_NAME_OUTPUT)
    {
        return Ok(name.clone());
    }
    match cfn
        .pipeline_resource(&cloudformation::stack_name(&id), None)
        .await
    {
        Ok(Some(name)) => Ok(name),
        Ok(None) => Err(format!(
            "the pipeline stack of {service} has neither an AWS::CodePipeline::Pipeline resource nor a `{}` output",
            crate::provision::codepipeline::PIPELINE_NAME_OUTPUT
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Starts the service's pipeline after `instance_id` deployed, and records what happened.
async fn start_pipeline(ctx: &Ctx, instance_id: &str) {
    use crate::provision::codepipeline::PipelineError;
    let service = instance_id
        .split('/')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let mut run = crate::state::PipelineRunRecord {
        service: service.clone(),
        pipeline: None,
        execution_id: None,
        result: String::new(),
        message: None,
        triggered_by: instance_id.to_string(),
        updated_at: String::new(),
    };
    match pipeline_name(&ctx.cfn, &ctx.store, &service).await {
        Err(why) => {
            run.result = "not_available".into();
            run.message = Some(why);
        }
        Ok(name) => {
            run.pipeline = Some(name.clone());
            match ctx.pipelines.start(&name).await {
                Ok(execution) => {
                    run.result = "started".into();
                    run.execution_id = Some(execution);
                }
                Err(PipelineError::NotAvailable(m)) => {
                    run.result = "not_available".into();
                    run.message = Some(m);
                }
                Err(PipelineError::Failed(m)) => {
                    run.result = "failed".into();
                    run.message = Some(m);
                }
            }
        }
    }
    match run.result.as_str() {
        "started" => {
            tracing::info!(service = %service, pipeline = ?run.pipeline, execution = ?run.execution_id, "Pipeline execution started.")
        }
        _ => {
            tracing::warn!(service = %service, result = %run.result, reason = ?run.message, "Pipeline execution not started.")
        }
    }
    if let Err(e) = ctx.store.put_pipeline_run(&run).await {
        tracing::warn!(error = %e, "Could not record the pipeline start.");
    }
}

pub(crate) fn record_for(dep: &NewDeployment, outputs: BTreeMap<String, String>) -> ResourceRecord {
    ResourceRecord {
        id: dep.resource_id.clone(),
        kind: dep.kind,
        repo: dep.repo.clone(),
        environment: dep.environment.clone(),
        template: dep.template.clone(),
        version: dep.to_version,
        input_hash: dep.input_hash.clone(),
        rendered_hash: dep.rendered_hash.clone(),
        outputs,
        status: crate::model::ResourceStatus::Deployed,
        spec_commit: dep.spec_commit.clone(),
        updated_at: String::new(),
    }
}

fn failed(e: &cloudformation::ProvisionError) -> Outcome {
    Outcome::Failed {
        error: e.to_string(),
        retryable: e.is_retryable(),
    }
}

fn spawn_apply(ctx: Arc<Ctx>, a: Action, resource: Resource, role: Option<String>) {
    tokio::spawn(async move {
        let _permit = ctx.permits.clone().acquire_owned().await;
        let rendered_hash = match &resource.desired.state {
            DesiredState::Ready { rendered_hash } => rendered_hash.clone(),
            _ => String::new(),
        };
        let dep = NewDeployment {
            resource_id: a.id.clone(),
            kind: a.kind,
            repo: resource.desired.repo.clone(),
            environment: resource.environment.clone(),
            action: action_label(&a).into(),
            reason: reason_label(&a),
            template: a.template.clone(),
            from_version: a.deployed,
            to_version: a.version,
            input_hash: resource.desired.input_hash.clone(),
            rendered_hash,
            spec_commit: resource.spec_commit.clone(),
        };
        let id = match ctx.store.begin_deployment(&dep).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(resource = %a.id, error = %e, "Could not start the deployment.");
                // A busy store is retried next cycle; anything else stops `--once`.
                if !matches!(e, StateError::InFlight { .. }) && !e.is_retryable() {
                    ctx.store_failed(&e);
                }
                ctx.release(&a.id).await;
                return;
            }
        };
        let span = tracing::info_span!("deployment", resource = %a.id, template = %a.template, version = %a.version, deployment = id, action = action_label(&a));
        async {
            tracing::info!(reason = ?reason_label(&a), "Deployment started.");
            if super::self_managed::is_terraform(&resource.documents) {
                match super::self_managed::submit(&ctx.config, &ctx.store, id, &dep, Some(&resource.documents)).await {
                    Ok(r) => {
                        tracing::info!(folder = %r.folder, branch = %r.branch, pull_request = ?r.url, "Submitted to the infrastructure repo; waiting for the outcome (protond notify).");
                        return;
                    }
                    Err(e) => {
                        let outcome = Outcome::Failed { error: e.message, retryable: e.retryable };
                        finish(&ctx, id, &a.id, action_label(&a), outcome, None).await;
                        return;
                    }
                }
            }
            let outcome = apply(&ctx, id, &dep, &resource, role.as_deref()).await;
            let rollout = (dep.reason.as_deref() == Some("minor_upgrade"))
                .then_some((dep.template.as_str(), dep.to_version));
            let start = resource.start_pipeline && matches!(outcome, Outcome::Succeeded(_));
            finish(&ctx, id, &a.id, action_label(&a), outcome, rollout).await;
            if start {
                start_pipeline(&ctx, &a.id).await;
            }
        }
        .instrument(span)
        .await;
        ctx.release(&a.id).await;
    });
}

async fn apply(
    ctx: &Ctx,
    id: i64,
    dep: &NewDeployment,
    resource: &Resource,
    role: Option<&str>,
) -> Outcome {
    let [(path, body)] = resource.documents.as_slice() else {
        return Outcome::Failed {
            error: format!(
                "{}: expected exactly one rendered CloudFormation document",
                dep.resource_id
            ),
            retryable: false,
        };
    };
    if path.ends_with(".tf") {
        return Outcome::Failed {
            error: format!(
                "{}: self-managed (Terraform) provisioning is not available yet",
                dep.resource_id
            ),
            retryable: false,
        };
    }
    let req = StackRequest {
        resource_id: dep.resource_id.clone(),
        template_body: body.clone(),
        template: dep.template.clone(),
        version: dep.to_version.to_string(),
        spec_commit: dep.spec_commit.clone(),
        deployment_id: id,
        role_arn: role.map(str::to_string),
    };
    let stack = cloudformation::stack_name(&dep.resource_id);
    match ctx.cfn.start_apply(&req).await {
        Err(e) => failed(&e),
        Ok(Started::NoChanges) => match ctx.cfn.describe(&stack, role).await {
            Ok(info) => {
                Outcome::Succeeded(record_for(dep, info.map(|i| i.outputs).unwrap_or_default()))
            }
            Err(e) => failed(&e),
        },
        Ok(Started::Executing) => match ctx.cfn.wait(&stack, role, false).await {
            Ok(info) => {
                Outcome::Succeeded(record_for(dep, info.map(|i| i.outputs).unwrap_or_default()))
            }
            Err(e) => failed(&e),
        },
    }
}

fn spawn_delete(ctx: Arc<Ctx>, a: Action, record: Option<ResourceRecord>, role: Option<String>) {
    tokio::spawn(async move {
        let _permit = ctx.permits.clone().acquire_owned().await;
        let dep = NewDeployment {
            resource_id: a.id.clone(),
            kind: a.kind,
            repo: record.as_ref().map(|r| r.repo.clone()).unwrap_or_default(),
            environment: record.as_ref().and_then(|r| r.environment.clone()),
            action: "delete".into(),
            reason: None,
            template: a.template.clone(),
            from_version: a.deployed,
            to_version: a.version,
            input_hash: record
                .as_ref()
                .map(|r| r.input_hash.clone())
                .unwrap_or_default(),
            rendered_hash: record
                .as_ref()
                .map(|r| r.rendered_hash.clone())
                .unwrap_or_default(),
            spec_commit: None,
        };
        let id = match ctx.store.begin_deployment(&dep).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(resource = %a.id, error = %e, "Could not start the delete.");
                // A busy store is retried next cycle; anything else stops `--once`.
                if !matches!(e, StateError::InFlight { .. }) && !e.is_retryable() {
                    ctx.store_failed(&e);
                }
                ctx.release(&a.id).await;
                return;
            }
        };
        let span = tracing::info_span!("deployment", resource = %a.id, template = %a.template, version = %a.version, deployment = id, action = "delete");
        async {
            tracing::info!("Delete started.");
            let self_managed = match ctx.store.self_managed(&a.id).await {
                Ok(r) => r.is_some(),
                Err(e) => {
                    // Unknown how it was provisioned: deleting nothing is the safe answer.
                    let outcome = Outcome::Failed { error: format!("cannot tell how {} was provisioned: {e}", a.id), retryable: true };
                    finish(&ctx, id, &a.id, "delete", outcome, None).await;
                    return;
                }
            };
            if self_managed {
                match super::self_managed::submit(&ctx.config, &ctx.store, id, &dep, None).await {
                    Ok(r) => tracing::info!(folder = %r.folder, branch = %r.branch, "Destroy submitted to the infrastructure repo; waiting for the outcome (protond notify)."),
                    Err(e) => {
                        let outcome = Outcome::Failed { error: e.message, retryable: e.retryable };
                        finish(&ctx, id, &a.id, "delete", outcome, None).await;
                    }
                }
                return;
            }
            let stack = cloudformation::stack_name(&a.id);
            let outcome = match ctx.cfn.start_delete(&stack, role.as_deref()).await {
                Err(e) => failed(&e),
                Ok(()) => match ctx.cfn.wait(&stack, role.as_deref(), true).await {
                    Ok(_) => Outcome::Deleted,
                    Err(e) => failed(&e),
                },
            };
            finish(&ctx, id, &a.id, "delete", outcome, None).await;
        }
        .instrument(span)
        .await;
        ctx.release(&a.id).await;
    });
}

fn spawn_adopt(ctx: Arc<Ctx>, dep: DeploymentRecord, role: Option<String>) {
    tokio::spawn(async move {
        let resource_id = dep.deployment.resource_id.clone();
        let span = tracing::info_span!("deployment", resource = %resource_id, deployment = dep.id, action = %dep.deployment.action, adopted = true);
        async {
            let outcome = adopt(&ctx, &dep, role.as_deref()).await;
            tracing::info!(outcome = ?outcome_label(&outcome), "Adopted an in-flight deployment.");
            let rollout = (dep.deployment.reason.as_deref() == Some("minor_upgrade"))
                .then_some((dep.deployment.template.as_str(), dep.deployment.to_version));
            finish(
                &ctx,
                dep.id,
                &resource_id,
                &dep.deployment.action,
                outcome,
                rollout,
            )
            .await;
        }
        .instrument(span)
        .await;
        ctx.release(&resource_id).await;
    });
}

fn outcome_label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Succeeded(_) => "succeeded",
        Outcome::Deleted => "deleted",
        Outcome::Failed { .. } => "failed",
        Outcome::Interrupted => "interrupted",
    }
}

/// Finishes a deployment an earlier process left in flight, from the stack's tags and status.
pub async fn adopt(ctx: &Ctx, dep: &DeploymentRecord, role: Option<&str>) -> Outcome {
    let d = &dep.deployment;
    let stack = cloudformation::stack_name(&d.resource_id);
    let interrupted = Outcome::Interrupted;
    let info = match ctx.cfn.describe(&stack, role).await {
        Ok(info) => info,
        Err(e) => return failed(&e),
    };
    if d.action == "delete" {
        return match info {
            None => Outcome::Deleted,
            Some(i) if i.status == "DELETE_COMPLETE" => Outcome::Deleted,
            Some(i) if i.status == "DELETE_IN_PROGRESS" => {
                match ctx.cfn.wait(&stack, role, true).await {
                    Ok(_) => Outcome::Deleted,
                    Err(e) => failed(&e),
                }
            }
            Some(_) => interrupted,
        };
    }
    let Some(info) = info else { return interrupted };
    if info.status == "REVIEW_IN_PROGRESS" {
        // A change set was created for a new stack but never executed.
        return interrupted;
    }
    if info.tags.get(TAG_DEPLOYMENT).map(String::as_str) != Some(dep.id.to_string().as_str()) {
        // The stack is from an earlier deployment: this one never executed.
        return interrupted;
    }
    if info.in_progress() {
        return match ctx.cfn.wait(&stack, role, false).await {
            Ok(i) => Outcome::Succeeded(record_for(d, i.map(|x| x.outputs).unwrap_or_default())),
            Err(e) => failed(&e),
        };
    }
    if info.failed() {
        let reasons = ctx.cfn.failure_reasons(&stack, role).await;
        return Outcome::Failed {
            error: format!("stack {stack} ended in {}: {reasons}", info.status),
            retryable: false,
        };
    }
    Outcome::Succeeded(record_for(d, info.outputs))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use chrono::TimeZone;

    use super::*;

    #[test]
    fn windows_are_read_in_their_time_zone() {
        let window = cron::Schedule::from_str("* * 22-23 * * Mon-Fri").expect("cron");
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().expect("tz");
        // Monday 2026-11-23 21:30 UTC is 22:30 in Berlin (UTC+1): inside.
        let inside = chrono::Utc
            .with_ymd_and_hms(2026, 11, 23, 21, 30, 0)
            .single()
            .expect("time");
        assert!(in_window(&window, berlin, inside));
        assert!(!in_window(&window, chrono_tz::UTC, inside));
        // Saturday evening: outside.
        let weekend = chrono::Utc
            .with_ymd_and_hms(2026, 11, 28, 21, 30, 0)
            .single()
            .expect("time");
        assert!(!in_window(&window, berlin, weekend));
    }

    #[test]
    fn stage_rank_puts_unknown_stages_last() {
        let stages = vec!["dev".to_string(), "prod".to_string()];
        let env_stages = BTreeMap::from([
            ("d".to_string(), "dev".to_string()),
            ("p".to_string(), "prod".to_string()),
            ("x".to_string(), "qa".to_string()),
        ]);
        assert_eq!(stage_rank(&stages, &env_stages, Some(&"d".to_string())), 0);
        assert_eq!(stage_rank(&stages, &env_stages, Some(&"p".to_string())), 1);
        assert_eq!(stage_rank(&stages, &env_stages, Some(&"x".to_string())), 2);
        assert_eq!(stage_rank(&stages, &env_stages, None), 2);
    }
}
