//! Decides which planned changes may start now, and why every other one waits. Pure: it
//! reads no clock, store or network; the caller passes the time and every fact in.
//!
//! Two passes, both called by the daemon, `protond plan`, the bench and the tests through
//! `crate::evaluate`:
//!
//! * [`rollout_holds`] runs on the first diff: a minor upgrade (or a release change, an
//!   accepted moved tag, which counts as done for a resource only once it redeployed) waits while its rollout is
//!   halted, its stage's maintenance window is closed, an earlier stage has not reached the
//!   version, or the earlier stages are soaking. A held resource is then re-rendered on the
//!   version it runs ("pinned"), so that its spec changes still deploy.
//! * [`schedule`] runs on the final diff and gives each change a [`Verdict`]: start, or hold
//!   with a [`HoldReason`] (in flight, waiting for a self-managed outcome, failed until
//!   something changes, backing off, deletion budget, deletion order, environment in use, and
//!   the rollout holds of the first pass).
//!
//! It must never perform I/O or read the clock: every rule here is table-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{Action, ActionKind, Plan, ResourceKind, UpdateReason, Version};

/// Why a change does not start now. Shown by `protond plan`, logged by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "hold")]
pub enum HoldReason {
    /// A deployment of this resource is running.
    InFlight,
    /// A self-managed deployment waits for its outcome (`protond notify`).
    WaitingForNotify,
    /// The rollout of this template version was halted after a failure.
    RolloutHalted {
        /// Why it was halted.
        reason: String,
    },
    /// The stage's maintenance window is closed.
    Window {
        /// The stage.
        stage: String,
    },
    /// A resource of an earlier stage is not yet on the version.
    EarlierStage {
        /// The resource waited on.
        waiting_on: String,
    },
    /// The earlier stages finished less than the soak time ago.
    Soak {
        /// Seconds left.
        remaining_secs: u64,
    },
    /// The last deployment failed in a way retrying cannot fix, and nothing changed since.
    FailedUntilChange,
    /// The last deployment failed transiently; it is retried after a backoff.
    BackingOff {
        /// Seconds left.
        remaining_secs: u64,
    },
    /// More resources would be deleted than the per-cycle deletion budget allows.
    DeletionBudget {
        /// Deletions planned.
        deletes: usize,
        /// The budget.
        budget: usize,
    },
    /// Deletes wait until creates and updates are done, and run one kind at a time
    /// (pipelines, then instances, then components, then environments).
    DeleteOrder,
    /// An environment is deleted only once nothing lives in it.
    EnvironmentInUse,
    /// The last deployment met a stack protond cannot prove is its own; nothing is touched
    /// until a person resolves it (the message says how).
    Conflict {
        /// What was found and what to do.
        message: String,
    },
    /// The spec pins a minor version; a newer minor of the same major is not applied.
    PinnedBySpec {
        /// The newest minor of the major.
        available: Version,
    },
    /// An operator hold (`protond hold`) covers the resource until it ends.
    Held {
        /// What the hold names (`environment:dev`, a resource id, ...).
        target: String,
        /// Who set it.
        by: String,
        /// When it ends (RFC 3339).
        until: String,
        /// Why.
        reason: String,
    },
    /// A freeze window (`[[rollout.freeze]]`) of the resource's stage is open.
    Freeze {
        /// The window's reason.
        reason: String,
        /// When it ends (RFC 3339).
        until: String,
    },
    /// An operator pin (`protond rollback --to`) keeps the resource on a minor while a
    /// newer one of the major exists.
    PinnedByOperator {
        /// The pinned version.
        version: Version,
        /// The newest minor of the major.
        available: Version,
    },
    /// The change-set gate (`crate::gate`): the new version would replace, remove (or, under
    /// `gate.block_interruption`, interrupt) a stateful resource, or its template does not
    /// parse; it waits for a person's approval of that version (`protond approve`).
    NeedsApproval {
        /// The version waiting for approval.
        version: Version,
        /// The predicted effects that need it (`AWS::DynamoDB::Table Table: replaced
        /// (KeySchema)`), or why no prediction could be made.
        changes: Vec<String>,
    },
}

impl HoldReason {
    /// A stable label for metrics and JSON.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::InFlight => "in_flight",
            Self::WaitingForNotify => "waiting_for_notify",
            Self::RolloutHalted { .. } => "rollout_halted",
            Self::Window { .. } => "window",
            Self::EarlierStage { .. } => "earlier_stage",
            Self::Soak { .. } => "soak",
            Self::FailedUntilChange => "failed_until_change",
            Self::BackingOff { .. } => "backing_off",
            Self::DeletionBudget { .. } => "deletion_budget",
            Self::DeleteOrder => "delete_order",
            Self::EnvironmentInUse => "environment_in_use",
            Self::PinnedBySpec { .. } => "pinned_by_spec",
            Self::Conflict { .. } => "conflict",
            Self::Held { .. } => "held",
            Self::Freeze { .. } => "freeze",
            Self::PinnedByOperator { .. } => "pinned_by_operator",
            Self::NeedsApproval { .. } => "needs_approval",
        }
    }

    /// Whether the end of another resource's deployment can lift this hold: an earlier
    /// stage reaching the version, a delete that others of its order waited for, the last
    /// resource leaving an environment. `reconcile --once` runs its next cycle as soon as a
    /// deployment ends while such a hold (or a resource blocked on another's outputs) waits,
    /// instead of after every running deployment.
    #[must_use]
    pub fn lifts_when_a_deployment_ends(&self) -> bool {
        match self {
            Self::EarlierStage { .. } | Self::DeleteOrder | Self::EnvironmentInUse => true,
            // Its own deployment ending, a clock, a person, or a change lifts these.
            Self::InFlight
            | Self::WaitingForNotify
            | Self::RolloutHalted { .. }
            | Self::Window { .. }
            | Self::Soak { .. }
            | Self::FailedUntilChange
            | Self::BackingOff { .. }
            | Self::DeletionBudget { .. }
            | Self::PinnedBySpec { .. }
            | Self::Conflict { .. }
            | Self::Held { .. }
            | Self::Freeze { .. }
            | Self::PinnedByOperator { .. }
            | Self::NeedsApproval { .. } => false,
        }
    }
}

impl fmt::Display for HoldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InFlight => f.write_str("a deployment is running"),
            Self::WaitingForNotify => {
                f.write_str("waiting for the self-managed outcome (protond notify)")
            }
            Self::RolloutHalted { reason } => f.write_str(reason),
            Self::Window { stage } => write!(f, "outside the maintenance window of stage {stage}"),
            Self::EarlierStage { waiting_on } => {
                write!(f, "waiting for the earlier stage: {waiting_on} is not yet on the version")
            }
            Self::Soak { remaining_secs } => {
                write!(f, "earlier stages are soaking for another {remaining_secs}s")
            }
            Self::FailedUntilChange => f.write_str(
                "the last deployment failed and is not retried until the spec, inputs or version change",
            ),
            Self::BackingOff { remaining_secs } => {
                write!(f, "retrying after a failure in {remaining_secs}s")
            }
            Self::DeletionBudget { deletes, budget } => write!(
                f,
                "{deletes} deletions refused: the per-cycle deletion budget is {budget} (raise daemon.deletion_budget if this is intended)"
            ),
            Self::DeleteOrder => f.write_str("deletes wait for other changes and earlier kinds"),
            Self::EnvironmentInUse => f.write_str("resources still live in the environment"),
            Self::Conflict { message } => write!(f, "ownership conflict: {message}"),
            Self::PinnedBySpec { available } => write!(
                f,
                "the spec pins this minor; {available} is available (drop `minor:` from its template reference to follow new minors)"
            ),
            Self::Held {
                target,
                by,
                until,
                reason,
            } => write!(
                f,
                "held by {by} until {until} ({target}: {reason}); `protond unhold {target}` lifts it"
            ),
            Self::Freeze { reason, until } => {
                write!(f, "freeze window until {until}: {reason}")
            }
            Self::PinnedByOperator { version, available } => write!(
                f,
                "pinned on {version} by `protond rollback`; {available} is available (`protond unpin` to follow new minors)"
            ),
            Self::NeedsApproval { version, changes } => write!(
                f,
                "needs approval of {version}: {} (approve with `protond approve <resource> {version}`, or in the spec repo's .protond/approvals.yaml)",
                changes.join("; ")
            ),
        }
    }
}

/// What a resource of the desired state brings to the rollout gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutUnit {
    /// Resource id.
    pub id: String,
    /// Template name.
    pub template: String,
    /// Version it wants.
    pub version: Version,
    /// Its environment's stage, when known.
    pub stage: Option<String>,
}

/// What the store says about a deployed resource, as far as scheduling cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFacts {
    /// Deployed version.
    pub version: Version,
    /// Whether its last deployment succeeded.
    pub deployed: bool,
    /// When it was last deployed.
    pub updated_at: Option<SystemTime>,
    /// Its environment.
    pub environment: Option<String>,
    /// Its kind.
    pub kind: ResourceKind,
}

/// The rollout rules: stages, soak time, maintenance windows.
#[derive(Debug, Clone, Default)]
pub struct RolloutRules {
    /// Stages in rollout order.
    pub stages: Vec<String>,
    /// Soak time between stages.
    pub soak: Duration,
    /// Stages whose maintenance window is closed now (stages with no window are always
    /// open). The caller evaluates the cron schedules at the current time.
    pub closed_windows: BTreeSet<String>,
}

impl RolloutRules {
    fn rank(&self, stage: Option<&String>) -> usize {
        stage
            .and_then(|s| self.stages.iter().position(|x| x == s))
            .unwrap_or(self.stages.len())
    }
}

/// The rollout gate for the minor upgrades of `plan`: which are held, and why.
///
/// `halted` holds the halted rollouts by (template, version) with their reason.
#[must_use]
pub fn rollout_holds(
    plan: &Plan,
    units: &[RolloutUnit],
    records: &BTreeMap<String, RecordFacts>,
    halted: &BTreeMap<(String, Version), String>,
    rules: &RolloutRules,
    now: SystemTime,
) -> BTreeMap<String, HoldReason> {
    let by_id: BTreeMap<&str, &RolloutUnit> = units.iter().map(|u| (u.id.as_str(), u)).collect();
    // A resource whose release changed under it runs the version already, but not its new
    // content: it is not done until it deploys again.
    let pending: BTreeSet<&str> = plan
        .changes()
        .filter(|a| {
            matches!(
                a.action,
                ActionKind::Update {
                    reason: UpdateReason::ReleaseChanged { .. }
                }
            )
        })
        .map(|a| a.id.as_str())
        .collect();
    let progress = StageProgress::new(units, records, rules, &pending);
    let mut holds = BTreeMap::new();
    for a in plan.changes() {
        let ActionKind::Update {
            reason:
                UpdateReason::MinorUpgrade { to, .. }
                | UpdateReason::Rollback { to, .. }
                | UpdateReason::ReleaseChanged { version: to },
        } = &a.action
        else {
            continue;
        };
        let Some(unit) = by_id.get(a.id.as_str()) else {
            continue;
        };
        if let Some(hold) = gate(unit, *to, halted, rules, &progress, now) {
            holds.insert(a.id.clone(), hold);
        }
    }
    holds
}

fn gate(
    unit: &RolloutUnit,
    to: Version,
    halted: &BTreeMap<(String, Version), String>,
    rules: &RolloutRules,
    progress: &StageProgress,
    now: SystemTime,
) -> Option<HoldReason> {
    if let Some(reason) = halted.get(&(unit.template.clone(), to)) {
        return Some(HoldReason::RolloutHalted {
            reason: format!("rollout of {} {to} is halted: {reason}", unit.template),
        });
    }
    if let Some(stage) = &unit.stage
        && rules.closed_windows.contains(stage)
    {
        return Some(HoldReason::Window {
            stage: stage.clone(),
        });
    }
    let mine = rules.rank(unit.stage.as_ref());
    let (blocker, latest) = progress.before(&unit.template, to, mine);
    if let Some(id) = blocker {
        return Some(HoldReason::EarlierStage {
            waiting_on: id.to_string(),
        });
    }
    let elapsed = latest.map(|at| now.duration_since(at).unwrap_or_default())?;
    (elapsed < rules.soak).then(|| HoldReason::Soak {
        remaining_secs: rules.soak.saturating_sub(elapsed).as_secs(),
    })
}

/// For each (template, version) and stage rank: the first resource of that rank not yet
/// deployed on the version, and the latest time one of them finished. Built once per cycle,
/// so the gate is linear in the fleet, not quadratic.
struct StageProgress<'a> {
    by_target: BTreeMap<(&'a str, Version), BTreeMap<usize, RankProgress<'a>>>,
}

#[derive(Default)]
struct RankProgress<'a> {
    blocker: Option<&'a str>,
    latest: Option<SystemTime>,
}

impl<'a> StageProgress<'a> {
    fn new(
        units: &'a [RolloutUnit],
        records: &BTreeMap<String, RecordFacts>,
        rules: &RolloutRules,
        pending: &BTreeSet<&str>,
    ) -> Self {
        let mut by_target: BTreeMap<(&str, Version), BTreeMap<usize, RankProgress>> =
            BTreeMap::new();
        for u in units {
            let rank = rules.rank(u.stage.as_ref());
            let entry = by_target
                .entry((u.template.as_str(), u.version))
                .or_default()
                .entry(rank)
                .or_default();
            match records.get(&u.id) {
                Some(r)
                    if r.version == u.version && r.deployed && !pending.contains(u.id.as_str()) =>
                {
                    entry.latest = entry.latest.max(r.updated_at);
                }
                _ => {
                    entry.blocker.get_or_insert(u.id.as_str());
                }
            }
        }
        Self { by_target }
    }

    /// The first blocker of ranks below `rank`, and the latest finish among them.
    fn before(
        &self,
        template: &str,
        to: Version,
        rank: usize,
    ) -> (Option<&str>, Option<SystemTime>) {
        let Some(ranks) = self.by_target.get(&(template, to)) else {
            return (None, None);
        };
        let mut latest = None;
        for (_, p) in ranks.range(..rank) {
            if let Some(b) = p.blocker {
                return (Some(b), None);
            }
            latest = latest.max(p.latest);
        }
        (None, latest)
    }
}

/// The last deployment of a resource, as far as the retry rule cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastAttempt {
    /// It failed, and retrying cannot fix it.
    pub failed_permanently: bool,
    /// It was a delete.
    pub delete: bool,
    /// Version it deployed.
    pub version: Version,
    /// Inputs it deployed.
    pub input_hash: String,
    /// Rendered documents it deployed.
    pub rendered_hash: String,
    /// It met a stack that is not provably this installation's: the message, when so.
    pub conflict: Option<String>,
}

/// What the desired state says about a change that the retry rule compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Input hash.
    pub input_hash: String,
    /// Rendered hash (empty when not rendered).
    pub rendered_hash: String,
}

/// Everything [`schedule`] decides from, besides the plan.
#[derive(Debug, Clone, Default)]
pub struct ScheduleInput {
    /// Holds of the rollout gate ([`rollout_holds`]) that pinning could not resolve.
    pub rollout_holds: BTreeMap<String, HoldReason>,
    /// Resources with a deployment running.
    pub running: BTreeSet<String>,
    /// Self-managed resources waiting for their outcome.
    pub waiting: BTreeSet<String>,
    /// Last deployment per resource.
    pub last: BTreeMap<String, LastAttempt>,
    /// Desired inputs and rendering per resource (for the retry rule).
    pub wanted: BTreeMap<String, Wanted>,
    /// Resources backing off after a transient failure, with the time left.
    pub backoff: BTreeMap<String, Duration>,
    /// Deployed records (kind and environment, for "environment in use").
    pub records: BTreeMap<String, RecordFacts>,
    /// The per-cycle deletion budget.
    pub deletion_budget: usize,
}

/// Start now, or hold with a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    /// The change may start now.
    Start,
    /// The change waits.
    Hold {
        /// Why it waits.
        #[serde(flatten)]
        reason: HoldReason,
    },
}

/// One change and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The change.
    #[serde(flatten)]
    pub action: Action,
    /// Start or hold.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The result of [`schedule`]: every change of the plan, in plan order (creates and updates
/// first, deletes after), with its verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Schedule {
    /// Decisions, one per change.
    pub decisions: Vec<Decision>,
}

impl Schedule {
    /// The changes that start now.
    pub fn starts(&self) -> impl Iterator<Item = &Action> {
        self.decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Start)
            .map(|d| &d.action)
    }

    /// The changes held, with their reasons.
    pub fn holds(&self) -> impl Iterator<Item = (&Action, &HoldReason)> {
        self.decisions.iter().filter_map(|d| match &d.verdict {
            Verdict::Hold { reason } => Some((&d.action, reason)),
            Verdict::Start => None,
        })
    }

    /// The verdict on a resource's change, if it has one.
    #[must_use]
    pub fn verdict(&self, id: &str) -> Option<&Verdict> {
        self.decisions
            .iter()
            .find(|d| d.action.id == id)
            .map(|d| &d.verdict)
    }
}

/// Decides what may start now. Creates and updates come first; deletes only when nothing
/// else starts or runs, one kind at a time (the highest first), an environment only once
/// nothing lives in it, and never more than the deletion budget.
#[must_use]
pub fn schedule(plan: &Plan, input: &ScheduleInput) -> Schedule {
    let mut decisions = Vec::new();
    // A relocation deletes a stack too (the one in the old place): both count.
    let removals = plan
        .changes()
        .filter(|a| a.action == ActionKind::Delete || is_relocation(a))
        .count();
    for a in plan.changes().filter(|a| a.action != ActionKind::Delete) {
        let budget = (is_relocation(a) && removals > input.deletion_budget).then_some({
            HoldReason::DeletionBudget {
                deletes: removals,
                budget: input.deletion_budget,
            }
        });
        let verdict = match budget.or_else(|| apply_hold(a, input)) {
            Some(reason) => Verdict::Hold { reason },
            None => Verdict::Start,
        };
        decisions.push(Decision {
            action: a.clone(),
            verdict,
        });
    }
    let deletes: Vec<&Action> = plan
        .changes()
        .filter(|a| a.action == ActionKind::Delete)
        .collect();
    let busy = !input.running.is_empty() || decisions.iter().any(|d| d.verdict == Verdict::Start);
    let top = deletes.iter().map(|a| a.kind).max();
    for a in &deletes {
        let reason = if removals > input.deletion_budget {
            Some(HoldReason::DeletionBudget {
                deletes: removals,
                budget: input.deletion_budget,
            })
        } else {
            delete_hold(a, input, busy, top)
        };
        decisions.push(Decision {
            action: (*a).clone(),
            verdict: reason.map_or(Verdict::Start, |reason| Verdict::Hold { reason }),
        });
    }
    Schedule { decisions }
}

fn is_relocation(a: &Action) -> bool {
    a.action
        == ActionKind::Update {
            reason: UpdateReason::Relocate,
        }
}

/// Holds shared by every change: running, waiting, backing off, failed until a change.
fn common_hold(a: &Action, input: &ScheduleInput) -> Option<HoldReason> {
    if input.waiting.contains(&a.id) {
        return Some(HoldReason::WaitingForNotify);
    }
    if input.running.contains(&a.id) {
        return Some(HoldReason::InFlight);
    }
    if let Some(left) = input.backoff.get(&a.id)
        && !left.is_zero()
    {
        return Some(HoldReason::BackingOff {
            remaining_secs: left.as_secs().max(1),
        });
    }
    let last = input.last.get(&a.id)?;
    if !last.failed_permanently {
        return None;
    }
    let same = if a.action == ActionKind::Delete {
        last.delete
    } else {
        input.wanted.get(&a.id).is_some_and(|w| {
            last.version == a.version
                && last.input_hash == w.input_hash
                && last.rendered_hash == w.rendered_hash
        })
    };
    if !same {
        return None;
    }
    Some(match &last.conflict {
        Some(message) => HoldReason::Conflict {
            message: message.clone(),
        },
        None => HoldReason::FailedUntilChange,
    })
}

fn apply_hold(a: &Action, input: &ScheduleInput) -> Option<HoldReason> {
    // Still a minor upgrade after pinning: the version it runs could not be kept. A release
    // change cannot be pinned at all (the release has one commit), so it stays held.
    if matches!(
        a.action,
        ActionKind::Update {
            reason: UpdateReason::MinorUpgrade { .. }
                | UpdateReason::Rollback { .. }
                | UpdateReason::ReleaseChanged { .. }
        }
    ) && let Some(hold) = input.rollout_holds.get(&a.id)
    {
        return Some(hold.clone());
    }
    common_hold(a, input)
}

fn delete_hold(
    a: &Action,
    input: &ScheduleInput,
    busy: bool,
    top: Option<ResourceKind>,
) -> Option<HoldReason> {
    if let Some(hold) = common_hold(a, input) {
        return Some(hold);
    }
    if busy || Some(a.kind) != top {
        return Some(HoldReason::DeleteOrder);
    }
    if a.kind == ResourceKind::Environment {
        let env = input
            .records
            .get(&a.id)
            .and_then(|r| r.environment.as_ref());
        let in_use = input
            .records
            .values()
            .any(|r| r.kind != ResourceKind::Environment && r.environment.as_ref() == env);
        if in_use {
            return Some(HoldReason::EnvironmentInUse);
        }
    }
    None
}

#[cfg(test)]
mod tests;
