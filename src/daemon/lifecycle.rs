//! One deployment lifecycle: claim, record, call the provisioner, wait, record the outcome,
//! release. Creates, updates, deletes and adoptions all go through [`spawn`]; adoption is a
//! branch of it, not a copy.
//!
//! # Guarantees
//! * The claim ([`super::ctx::Claim`]) is held from before the task starts until it ends,
//!   however it ends: one deployment per resource in this process (and a unique index in the
//!   store across processes).
//! * A deployment row is written before any provisioner call, and its outcome is recorded
//!   in one transaction with the resource record. After a crash, the next cycle adopts the
//!   row through the provisioner's `adopt`.
//! * Every outcome passes through [`error_policy`], the one place that decides between
//!   "retry after a backoff" and "wait for a change".
//!
//! # Errors
//! A row that cannot be begun or finished is reported through
//! [`super::Ctx::take_store_failure`] (`reconcile --once` stops); a busy store is retried.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::Instrument as _;

use super::ctx::{Claim, Ctx};
use crate::desired::Resource;
use crate::model::{DeploymentAction, Placement};
use crate::plan::{Action, ActionKind, DesiredState, UpdateReason, Version};
use crate::provision::cloudformation::{placed_stack_name, stack_name};
use crate::provision::{Applied, DeployError, Fence, Job, Provisioner, Provisioning};
use crate::state::{DeploymentRecord, NewDeployment, Outcome, ResourceRecord, StateError};
use crate::telemetry::events::{DeploymentFinished, DeploymentStarted};

/// The first retry after a transient failure waits this long, doubling per failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Doubling stops after this many failures in a row.
pub const BACKOFF_MAX_DOUBLINGS: u32 = 6;
/// No retry waits longer than this (plus jitter).
pub const BACKOFF_CAP: Duration = Duration::from_mins(5);
/// Random jitter added to every backoff, so that retries of many resources spread out.
pub const BACKOFF_JITTER: Duration = Duration::from_secs(1);
/// Attempts to record an outcome in a locked store before giving up (it is then adopted).
const FINISH_ATTEMPTS: u32 = 5;

/// What a deployment task does.
pub(super) enum Work {
    /// Create or update a resource to its desired state.
    Apply {
        /// The planned change.
        action: Action,
        /// The rendered resource.
        resource: Resource,
        /// Its record, when it is deployed (where its stack lives).
        record: Option<ResourceRecord>,
    },
    /// Delete a resource no spec declares any more.
    Delete {
        /// The planned delete.
        action: Action,
        /// Its record.
        record: Option<ResourceRecord>,
    },
    /// Finish a deployment an earlier process left in flight.
    Adopt(DeploymentRecord),
}

impl Work {
    fn resource_id(&self) -> &str {
        match self {
            Self::Apply { action, .. } | Self::Delete { action, .. } => &action.id,
            Self::Adopt(d) => &d.deployment.resource_id,
        }
    }
}

/// Starts the task for `work` under `claim`. `role` is the role its environment names now:
/// new stacks are created with it; recorded stacks are addressed with the role recorded
/// with them (or `role`, for records written before roles were recorded).
pub(super) fn spawn(ctx: Arc<Ctx>, claim: Claim, work: Work, role: Option<String>) {
    let tracked = ctx.clone();
    let task = tokio::spawn(async move {
        Box::pin(run(&ctx, work, role.as_deref())).await;
        drop(claim);
    });
    tracked.track(task.abort_handle());
}

/// Whether this process may still start a deployment (on PostgreSQL, its lease is held and
/// trusted); logged when not: the row stays in flight for the next leader to adopt.
fn still_leading(ctx: &Ctx, what: &str) -> bool {
    let ok = ctx.may_deploy();
    if !ok {
        tracing::warn!(
            what,
            "Not leading any more (or the lease is not trusted now): not started; the next leader adopts the deployment."
        );
    }
    ok
}

async fn run(ctx: &Arc<Ctx>, work: Work, role: Option<&str>) {
    let _permit = ctx.permits.clone().acquire_owned().await;
    let resource_id = work.resource_id().to_string();
    let (id, dep, adopted) = match &work {
        Work::Adopt(d) => {
            let mut dep = d.deployment.clone();
            if dep.placement.role_arn.is_none() && dep.placement.stack_name.is_empty() {
                // A row written before placements were recorded.
                dep.placement.role_arn = role.map(str::to_string);
            }
            (d.id, dep, true)
        }
        Work::Apply {
            action,
            resource,
            record,
        } => {
            let placement = if is_relocation(action) {
                // The new place: a stack there, named and placed as a new one.
                placement_for(ctx, &action.id, None, role)
            } else {
                placement_for(ctx, &action.id, record.as_ref(), role)
            };
            let dep = new_apply(action, resource, placement);
            let Some(id) = begin(ctx, &dep).await else {
                return;
            };
            (id, dep, false)
        }
        Work::Delete { action, record } => {
            let placement = placement_for(ctx, &action.id, record.as_ref(), role);
            let dep = new_delete(action, record.as_ref(), placement);
            let Some(id) = begin(ctx, &dep).await else {
                return;
            };
            (id, dep, false)
        }
    };
    let span = tracing::info_span!("deployment", resource = %resource_id, template = %dep.template, version = %dep.to_version, deployment = id, action = %dep.action, adopted);
    async {
        if !adopted {
            DeploymentStarted {
                resource: &resource_id,
                kind: dep.kind,
                action: dep.action,
                reason: dep.reason.as_deref(),
                repo: &dep.repo,
                spec_commit: dep.spec_commit.as_deref(),
            }
            .emit(&ctx.telemetry);
        }
        let leading = || ctx.may_deploy();
        let job = Job {
            deployment_id: id,
            deployment: &dep,
            installation: &ctx.installation,
            recorded: matches!(&work, Work::Apply { record: Some(_), .. } | Work::Delete { record: Some(_), .. }),
            fence: Fence::new(&leading),
        };
        let mut cancelled_by = None;
        if !still_leading(ctx, "deployment") {
            return;
        }
        let result = match provisioner_for(ctx, &work).await {
            Ok(p) => match watched(&ctx.store, p.as_ref(), &work, job, &mut cancelled_by).await {
                Ok(applied) => leave_old_place(ctx, p.as_ref(), &work, &dep, id, applied).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(DeployError::Fenced { .. }) = &result {
            // Nothing was started: the row stays in flight for the next leader to adopt.
            still_leading(ctx, "change set execution");
            return;
        }
        if let Some(pause) = record_delay() {
            tokio::time::sleep(pause).await;
        }
        let Some(outcome) = outcome_of(result, &dep) else {
            return;
        };
        let outcome = cancelled(outcome, cancelled_by.as_deref());
        if adopted {
            tracing::info!(outcome = outcome.label(), "Adopted an in-flight deployment.");
        }
        let start_pipeline = matches!(&work, Work::Apply { resource, .. } if resource.start_pipeline)
            && matches!(outcome, Outcome::Succeeded(_));
        finish(ctx, id, &dep, outcome).await;
        if start_pipeline && still_leading(ctx, "pipeline start") {
            super::pipelines::start_after(ctx, &resource_id).await;
        }
    }
    .instrument(span)
    .await;
}

/// `PROTOND_TEST_RECORD_DELAY` (humantime): a pause between the provisioner's answer and
/// recording it, so that the failover tests can kill a leader while its deployment is in
/// flight (a `moto_server` answers at once). Unset in production.
fn record_delay() -> Option<Duration> {
    let v = std::env::var("PROTOND_TEST_RECORD_DELAY").ok()?;
    humantime::parse_duration(v.trim()).ok()
}

/// The outcome to record for what the provisioner answered; `None` for a self-managed
/// submission, whose outcome `protond notify` reports later.
fn outcome_of(result: Result<Applied, DeployError>, dep: &NewDeployment) -> Option<Outcome> {
    match result {
        Ok(Applied::Submitted {
            folder,
            branch,
            pull_request,
        }) => {
            tracing::info!(folder = %folder, branch = %branch, pull_request = pull_request.as_deref(), "Submitted to the infrastructure repo; waiting for the outcome (protond notify).");
            None
        }
        Ok(Applied::Deployed { outputs, stack_id }) => Some(Outcome::Succeeded(
            ResourceRecord::deployed_by(dep, outputs, stack_id),
        )),
        Ok(Applied::Deleted) => Some(Outcome::Deleted),
        Ok(Applied::Interrupted) => Some(Outcome::Interrupted),
        Err(DeployError::Conflict(c)) => Some(Outcome::Conflict {
            error: c.to_string(),
        }),
        Err(e) => Some(Outcome::Failed {
            error: crate::error_chain(&e),
            retryable: e.is_retryable(),
        }),
    }
}

fn is_relocation(a: &Action) -> bool {
    a.action
        == ActionKind::Update {
            reason: UpdateReason::Relocate,
        }
}

/// The second half of a relocation: once the stack runs in the new place, the stack in the
/// recorded place is deleted with the recorded identity (and the ownership gate). If the two
/// are the same stack (the role changed within one account and region), nothing is deleted.
async fn leave_old_place(
    ctx: &Ctx,
    p: &dyn Provisioner,
    work: &Work,
    dep: &NewDeployment,
    id: i64,
    applied: Applied,
) -> Result<Applied, DeployError> {
    let Work::Apply {
        action,
        record: Some(record),
        ..
    } = work
    else {
        return Ok(applied);
    };
    let Applied::Deployed { stack_id, .. } = &applied else {
        return Ok(applied);
    };
    if !is_relocation(action) || stack_id.is_some() && *stack_id == record.placement.stack_id {
        return Ok(applied);
    }
    let old = NewDeployment {
        action: DeploymentAction::Delete,
        placement: record.placement.clone(),
        ..dep.clone()
    };
    let leading = || ctx.may_deploy();
    let job = Job {
        deployment_id: id,
        deployment: &old,
        installation: &ctx.installation,
        recorded: true,
        fence: Fence::new(&leading),
    };
    if !still_leading(ctx, "relocation's delete") {
        return Err(DeployError::Unsupported {
            resource: dep.resource_id.clone(),
            reason: "the lead was lost before the stack in the old place was deleted".into(),
        });
    }
    tracing::info!(stack = %placed_stack_name(&dep.resource_id, &old.placement), region = old.placement.region.as_deref(), role = old.placement.role_arn.as_deref(), "Relocated: deleting the stack in its old place.");
    match p.delete(job).await {
        Ok(_) => Ok(applied),
        Err(DeployError::Conflict(c)) => Err(DeployError::Conflict(c)),
        Err(e) => Err(DeployError::Unsupported {
            resource: dep.resource_id.clone(),
            reason: format!(
                "created in its new place, but deleting the stack in the old place failed (retried next cycle): {}",
                crate::error_chain(&e)
            ),
        }),
    }
}

/// How often a deployment in flight is watched: its progress copied into the store, and a
/// cancel request looked for.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Calls the provisioner and, while it runs, copies its progress into the store and acts on
/// a cancel request (`protond cancel`): the provisioner's `cancel` is called once, and who
/// asked is left in `cancelled_by`.
async fn watched(
    store: &crate::state::Store,
    p: &dyn Provisioner,
    work: &Work,
    job: Job<'_>,
    cancelled_by: &mut Option<String>,
) -> Result<Applied, DeployError> {
    let run = call(p, work, job);
    tokio::pin!(run);
    // The first look one period in: a row begun just now has no cancel mark and no progress
    // yet (a query saved per deployment).
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + WATCH_EVERY, WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        tokio::select! {
            result = &mut run => return result,
            _ = tick.tick() => {
                let now = p.progress(job);
                if now.is_some() && now != last {
                    if let Some(pr) = &now
                        && let Err(e) = store.set_progress(job.deployment_id, pr).await
                    {
                        tracing::debug!(error = %e, "Could not record the deployment's progress.");
                    }
                    last = now;
                }
                if cancelled_by.is_none()
                    && let Ok(Some(by)) = store.cancel_requested(job.deployment_id).await
                {
                    match p.cancel(job).await {
                        Ok(()) => tracing::warn!(by = %by, "Cancel requested: the provider is rolling the deployment back."),
                        Err(e) => tracing::warn!(by = %by, error = %crate::error_chain(&e), "Cancel requested, but the deployment cannot be cancelled now; it runs to its end."),
                    }
                    *cancelled_by = Some(by);
                }
            }
        }
    }
}

/// The outcome of a deployment someone asked to cancel: a failure (the rollback a cancel
/// causes) is recorded as cancelled, and not retried until a change or `protond retry`.
fn cancelled(outcome: Outcome, by: Option<&str>) -> Outcome {
    match (outcome, by) {
        (Outcome::Failed { error, .. }, Some(by)) => Outcome::Failed {
            error: crate::actions::cancelled_error(
                by,
                &format!("the provider stopped it ({error})"),
            ),
            retryable: false,
        },
        (outcome, Some(by)) => {
            tracing::warn!(by = %by, outcome = outcome.label(), "The cancel came too late: the deployment had ended.");
            outcome
        }
        (outcome, None) => outcome,
    }
}

async fn call(p: &dyn Provisioner, work: &Work, job: Job<'_>) -> Result<Applied, DeployError> {
    match work {
        Work::Apply { resource, .. } => p.apply(job, &resource.documents).await,
        Work::Delete { .. } => p.delete(job).await,
        Work::Adopt(_) => p.adopt(job).await,
    }
}

/// The provisioner of a resource: by its manifest's `template_language` for applies; by how it was
/// provisioned for deletes and adoptions.
async fn provisioner_for(ctx: &Ctx, work: &Work) -> Result<Arc<dyn Provisioner>, DeployError> {
    let provisioning = match work {
        Work::Apply { resource, .. } => resource.provisioning,
        Work::Delete {
            record: Some(r), ..
        } if crate::provision::codebuild::CodeBuild::provisioned(
            r.placement.stack_id.as_deref(),
        ) =>
        {
            Provisioning::CodeBuild
        }
        Work::Delete { action, .. } => match ctx.store.self_managed(&action.id).await {
            Ok(Some(_)) => Provisioning::SelfManaged,
            Ok(None) => Provisioning::CloudFormation,
            // Unknown how it was provisioned: deleting nothing is the safe answer.
            Err(source) => {
                return Err(DeployError::Store {
                    resource: action.id.clone(),
                    source,
                });
            }
        },
        // Self-managed deployments wait for their outcome and are never adopted.
        Work::Adopt(_) => Provisioning::CloudFormation,
    };
    Ok(match provisioning {
        Provisioning::CloudFormation => ctx.provisioners.cloudformation.clone(),
        Provisioning::SelfManaged => ctx.provisioners.self_managed.clone(),
        Provisioning::CodeBuild => ctx.provisioners.codebuild.clone(),
    })
}

/// Where a deployment goes: a recorded stack stays where it is recorded (its name, `StackId`,
/// region and role; a record written before names were recorded keeps the legacy name and
/// the environment's current role); a new stack gets a collision-free name, the configured
/// region and the environment's role.
fn placement_for(
    ctx: &Ctx,
    resource_id: &str,
    record: Option<&ResourceRecord>,
    role: Option<&str>,
) -> Placement {
    match record {
        Some(r) => {
            let recorded = &r.placement;
            let legacy = recorded.stack_name.is_empty() && recorded.stack_id.is_none();
            let role_now = role.map(str::to_string);
            if !legacy && recorded.role_arn != role_now {
                tracing::warn!(resource = %resource_id, recorded = recorded.role_arn.as_deref(), now = role_now.as_deref(), "The environment's role changed; the stack stays where it is recorded and is addressed with the recorded role (moving it is not supported yet).");
            }
            Placement {
                stack_name: placed_stack_name(resource_id, recorded),
                stack_id: recorded.stack_id.clone(),
                region: recorded
                    .region
                    .clone()
                    .or_else(|| Some(ctx.config.region.clone())),
                role_arn: if legacy {
                    role_now
                } else {
                    recorded.role_arn.clone()
                },
            }
        }
        None => Placement {
            stack_name: stack_name(resource_id),
            stack_id: None,
            region: Some(ctx.config.region.clone()),
            role_arn: role.map(str::to_string),
        },
    }
}

/// Writes the deployment row; `None` when it could not be written (a busy store is retried
/// next cycle; anything else stops `--once`).
async fn begin(ctx: &Ctx, dep: &NewDeployment) -> Option<i64> {
    match ctx.store.begin_deployment(dep).await {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(resource = %dep.resource_id, error = %e, "Could not start the deployment.");
            if !matches!(e, StateError::InFlight { .. }) && !e.is_retryable() {
                ctx.store_failed(&e);
            }
            None
        }
    }
}

fn new_apply(a: &Action, resource: &Resource, placement: Placement) -> NewDeployment {
    let rendered_hash = match &resource.desired.state {
        DesiredState::Ready { rendered_hash } => rendered_hash.clone(),
        _ => String::new(),
    };
    NewDeployment {
        resource_id: a.id.clone(),
        kind: a.kind,
        repo: resource.desired.repo.clone(),
        environment: resource.environment.clone(),
        action: action_label(a),
        reason: reason_label(a).map(str::to_string),
        template: a.template.clone(),
        from_version: a.deployed,
        to_version: a.version,
        input_hash: resource.desired.input_hash.clone(),
        rendered_hash,
        spec_commit: resource.spec_commit.clone(),
        placement,
    }
}

fn new_delete(a: &Action, record: Option<&ResourceRecord>, placement: Placement) -> NewDeployment {
    NewDeployment {
        resource_id: a.id.clone(),
        kind: a.kind,
        repo: record.map(|r| r.repo.clone()).unwrap_or_default(),
        environment: record.and_then(|r| r.environment.clone()),
        action: DeploymentAction::Delete,
        reason: None,
        template: a.template.clone(),
        from_version: a.deployed,
        to_version: a.version,
        input_hash: record.map(|r| r.input_hash.clone()).unwrap_or_default(),
        rendered_hash: record.map(|r| r.rendered_hash.clone()).unwrap_or_default(),
        spec_commit: None,
        placement,
    }
}

fn reason_label(a: &Action) -> Option<&'static str> {
    match &a.action {
        ActionKind::Update { reason } => Some(match reason {
            UpdateReason::SpecChange => "spec_change",
            UpdateReason::MinorUpgrade { .. } => "minor_upgrade",
            UpdateReason::TemplateChange { .. } => "template_change",
            UpdateReason::Rerender => "rerender",
            UpdateReason::Relocate => "relocate",
            UpdateReason::ReleaseChanged { .. } => "release_changed",
            UpdateReason::Rollback { .. } => "rollback",
            UpdateReason::Forced {
                cause: crate::plan::ForceCause::Operator,
            } => "redeploy",
            UpdateReason::Forced {
                cause: crate::plan::ForceCause::DriftHeal,
            } => "drift_heal",
        }),
        _ => None,
    }
}

fn action_label(a: &Action) -> DeploymentAction {
    match a.action {
        ActionKind::Create => DeploymentAction::Create,
        ActionKind::Delete => DeploymentAction::Delete,
        _ => DeploymentAction::Update,
    }
}

/// What happens after an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeue {
    /// Done: forget any backoff.
    Done,
    /// Retry at once (the deployment never reached the provisioner).
    Now,
    /// Retry after a backoff (a transient failure).
    Backoff,
    /// Do not retry until something changes (a new commit or version); the scheduler's
    /// "failed until change" rule reads the history.
    AwaitChange {
        /// The template version this failure counts against for its quarantine (a failed
        /// minor upgrade or release change).
        halt: Option<(String, Version)>,
    },
}

/// The one error policy: what an outcome of `dep` means for retrying.
#[must_use]
pub fn error_policy(dep: &NewDeployment, outcome: &Outcome) -> Requeue {
    match outcome {
        Outcome::Succeeded(_) | Outcome::Deleted => Requeue::Done,
        Outcome::Interrupted => Requeue::Now,
        Outcome::Failed {
            retryable: true, ..
        } => Requeue::Backoff,
        // A conflict waits for a person: nothing protond does can resolve it.
        Outcome::Conflict { .. } => Requeue::AwaitChange { halt: None },
        Outcome::Failed { .. } => Requeue::AwaitChange {
            halt: matches!(
                dep.reason.as_deref(),
                Some("minor_upgrade" | "release_changed")
            )
            .then(|| (dep.template.clone(), dep.to_version)),
        },
    }
}

/// The delay before retry number `attempts` (1 for the first), without jitter.
#[must_use]
pub fn backoff_delay(attempts: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1 << attempts.min(BACKOFF_MAX_DOUBLINGS))
        .min(BACKOFF_CAP)
}

async fn finish(ctx: &Ctx, id: i64, dep: &NewDeployment, outcome: Outcome) {
    let resource_id = dep.resource_id.as_str();
    match &outcome {
        Outcome::Failed { .. } | Outcome::Conflict { .. } => {
            ctx.failed.fetch_add(1, Ordering::Relaxed)
        }
        Outcome::Succeeded(_) | Outcome::Deleted => ctx.succeeded.fetch_add(1, Ordering::Relaxed),
        Outcome::Interrupted => 0,
    };
    match error_policy(dep, &outcome) {
        Requeue::Done => ctx.reset_backoff(resource_id),
        // Retried at once; or, for a failure that halts, counted toward its release's
        // quarantine, which the next cycle (woken below) decides (`evaluate::quarantine`).
        Requeue::Now | Requeue::AwaitChange { .. } => {}
        Requeue::Backoff => ctx.back_off(resource_id, |attempts| {
            let jitter = rand::random_range(0..BACKOFF_JITTER.as_millis());
            backoff_delay(attempts)
                + Duration::from_millis(u64::try_from(jitter).unwrap_or_default())
        }),
    }
    record_outcome(ctx, id, resource_id, &outcome).await;
    // Logged and counted once recorded, so a scrape never sees the counter ahead of the
    // store.
    DeploymentFinished {
        resource: resource_id,
        deployment: id,
        kind: dep.kind,
        action: dep.action,
        outcome: &outcome,
        repo: &dep.repo,
        spec_commit: dep.spec_commit.as_deref(),
    }
    .emit(&ctx.telemetry);
    if dep.kind == crate::model::ResourceKind::Environment
        && matches!(outcome, Outcome::Succeeded(_))
    {
        // Other shards' instances may wait on this environment's outputs.
        ctx.tell_other_shards();
    }
    ctx.wake();
}

/// Records the outcome; bookkeeping must not be lost, so a locked store is retried a few
/// times before the deployment is left for adoption.
async fn record_outcome(ctx: &Ctx, id: i64, resource_id: &str, outcome: &Outcome) {
    for attempt in 1..=FINISH_ATTEMPTS {
        match ctx.store.finish_deployment(id, outcome).await {
            Ok(()) => return,
            Err(e) if e.is_retryable() && attempt < FINISH_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => {
                tracing::error!(resource = %resource_id, deployment = id, error = %crate::error_chain(&e), "Could not record the deployment outcome; it will be adopted on the next cycle.");
                ctx.store_failed(&e);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ResourceKind;

    fn dep(reason: Option<&str>) -> NewDeployment {
        NewDeployment {
            resource_id: "service_instance/a/b".into(),
            kind: ResourceKind::ServiceInstance,
            repo: "r".into(),
            environment: None,
            action: DeploymentAction::Update,
            reason: reason.map(str::to_string),
            template: "svc".into(),
            from_version: None,
            to_version: Version { major: 1, minor: 2 },
            input_hash: String::new(),
            rendered_hash: String::new(),
            spec_commit: None,
            placement: crate::model::Placement::default(),
        }
    }

    #[test]
    fn the_error_policy_decides_retry_or_wait() {
        let failed = |retryable| Outcome::Failed {
            error: "x".into(),
            retryable,
        };
        assert_eq!(error_policy(&dep(None), &Outcome::Deleted), Requeue::Done);
        assert_eq!(
            error_policy(&dep(None), &Outcome::Interrupted),
            Requeue::Now
        );
        assert_eq!(error_policy(&dep(None), &failed(true)), Requeue::Backoff);
        assert_eq!(
            error_policy(&dep(Some("spec_change")), &failed(false)),
            Requeue::AwaitChange { halt: None }
        );
        assert_eq!(
            error_policy(&dep(Some("minor_upgrade")), &failed(false)),
            Requeue::AwaitChange {
                halt: Some(("svc".into(), Version { major: 1, minor: 2 }))
            }
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff_delay(1), Duration::from_secs(10));
        assert_eq!(backoff_delay(2), Duration::from_secs(20));
        assert_eq!(backoff_delay(5), Duration::from_secs(160));
        assert_eq!(backoff_delay(6), BACKOFF_CAP);
        assert_eq!(backoff_delay(60), BACKOFF_CAP);
    }

    /// Adopts by waiting until cancelled, then ends as a cancelled update does.
    struct Stuck(tokio::sync::Notify);

    impl Provisioner for Stuck {
        fn apply<'a>(
            &'a self,
            job: Job<'a>,
            _documents: &'a [(String, String)],
        ) -> crate::provision::BoxFuture<'a, Result<Applied, DeployError>> {
            self.adopt(job)
        }

        fn delete<'a>(
            &'a self,
            job: Job<'a>,
        ) -> crate::provision::BoxFuture<'a, Result<Applied, DeployError>> {
            self.adopt(job)
        }

        fn adopt<'a>(
            &'a self,
            _job: Job<'a>,
        ) -> crate::provision::BoxFuture<'a, Result<Applied, DeployError>> {
            Box::pin(async move {
                self.0.notified().await;
                Err(DeployError::Fake(
                    "stack s ended in UPDATE_ROLLBACK_COMPLETE".into(),
                ))
            })
        }

        fn cancel<'a>(
            &'a self,
            _job: Job<'a>,
        ) -> crate::provision::BoxFuture<'a, Result<(), DeployError>> {
            Box::pin(async move {
                self.0.notify_one();
                Ok(())
            })
        }

        fn progress(&self, _job: Job<'_>) -> Option<crate::state::Progress> {
            Some(crate::state::Progress {
                stack: "s".into(),
                status: "UPDATE_IN_PROGRESS".into(),
                ..crate::state::Progress::default()
            })
        }
    }

    #[tokio::test]
    async fn a_cancel_request_cancels_and_is_recorded_as_cancelled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = crate::state::testing::url(dir.path()).await;
        let store = crate::state::Store::open(&url).await.expect("open");
        let dep = crate::state::tests::new_dep("environment/dev");
        let id = store.begin_deployment(&dep).await.expect("begin");
        assert!(store.request_cancel(id, "cli:alice").await.expect("cancel"));
        let record = store.in_flight().await.expect("in flight").remove(0);
        let job = Job {
            deployment_id: id,
            deployment: &dep,
            installation: "i",
            recorded: true,
            fence: Fence::OPEN,
        };
        let mut by = None;
        let stuck = Stuck(tokio::sync::Notify::new());
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            watched(&store, &stuck, &Work::Adopt(record), job, &mut by),
        )
        .await
        .expect("the cancel ends the wait");
        assert_eq!(by.as_deref(), Some("cli:alice"));
        let Err(e) = result else {
            panic!("a cancelled update fails")
        };
        let outcome = cancelled(
            Outcome::Failed {
                error: e.to_string(),
                retryable: true,
            },
            by.as_deref(),
        );
        let Outcome::Failed { error, retryable } = &outcome else {
            panic!("{outcome:?}")
        };
        assert!(!retryable);
        assert!(crate::actions::is_cancelled(error), "{error}");
        assert!(error.contains("UPDATE_ROLLBACK_COMPLETE"), "{error}");
        // The progress reached the store while it waited.
        let notes = store.action_notes(&[id]).await.expect("notes");
        assert_eq!(
            notes[&id].progress.as_ref().map(|p| p.status.as_str()),
            Some("UPDATE_IN_PROGRESS")
        );
        // Without a cancel request, an outcome is left as it is.
        let ok = Outcome::Interrupted;
        assert_eq!(cancelled(ok.clone(), None), ok);
    }
}
