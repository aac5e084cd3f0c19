//! What the reconciler would do now: quarantine failing releases (`quarantine`), compute the
//! desired state (no new resource on a halted minor; rollbacks from quarantined ones), diff it (re-renders under an accepted moved tag labelled release changes), gate
//! minor rollouts and release changes,
//! re-render held resources on the version they run, diff again, and schedule.
//!
//! One function, [`evaluate`], called by the daemon's cycle, `protond plan`, the bench and the
//! tests, so that `protond plan` shows exactly what the daemon will do, holds included. It is
//! pure apart from CPU work (rendering): the caller reads the repos ([`crate::desired::load`])
//! and the [`Facts`] (store, clock, in-memory retry state) first. It must never perform I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::desired::{self, ComputeCache, DesiredSet, Snapshot};
use crate::model::{DeploymentAction, DeploymentStatus, ResourceStatus};
use crate::plan::holds::{ActiveFreeze, Restrictions, Subject};
use crate::plan::schedule::{
    self, Decision, HoldReason, LastAttempt, RecordFacts, RolloutRules, RolloutUnit, Schedule,
    ScheduleInput, Verdict, Wanted,
};
use crate::plan::{self, Action, ActionKind, DesiredState, Plan, Version};
use crate::spec::{EnvironmentSpec, SpecFile, TemplateRef};
use crate::state::{DeploymentRecord, ResourceRecord};

pub mod gate;
pub mod pins;
pub mod quarantine;
pub mod rollback;
pub mod staged;

/// What the scheduler needs besides the repos: read from the store, the clock and the
/// daemon's memory before [`evaluate`].
#[derive(Debug, Clone)]
pub struct Facts {
    /// Deployed resources.
    pub records: Vec<ResourceRecord>,
    /// Halted rollouts by (template, version), with their reason.
    pub halted: BTreeMap<(String, Version), String>,
    /// The halted rollouts that are quarantines (a bad release, not a pause): resources on
    /// them are offered, or given, the previous usable minor.
    pub quarantined: BTreeSet<(String, Version)>,
    /// Resources with a deployment running (in this process, or left in flight).
    pub running: BTreeSet<String>,
    /// Self-managed resources waiting for their outcome.
    pub waiting: BTreeSet<String>,
    /// The last deployment of each resource whose last deployment failed.
    pub last_failures: Vec<DeploymentRecord>,
    /// Resources backing off after a transient failure, with the time left.
    pub backoff: BTreeMap<String, Duration>,
    /// Resources with a pending deploy request (`protond redeploy`, drift healing): planned
    /// as [`plan::UpdateReason::Forced`] updates when nothing else changes them.
    pub forced: BTreeMap<String, plan::ForceCause>,
    /// Operator pins (`protond rollback --to`): resources held on an earlier minor, rolled
    /// back to it through the rollout gate.
    pub pins: Vec<pins::Pin>,
    /// Operator holds (`protond hold`); ended ones are ignored.
    pub holds: Vec<crate::plan::holds::Hold>,
    /// Approvals recorded in the store (`protond approve`, the API) for the change-set gate;
    /// the spec repos' approval files are read from the snapshot.
    pub approvals: Vec<crate::gate::Approval>,
    /// The wall-clock time the decision is made at.
    pub now: SystemTime,
    /// What this leader may change (the shards it holds); everything when unsharded.
    pub scope: crate::ha::shard::Scope,
}

impl Facts {
    /// The planner's view of the records.
    fn observed(&self) -> Vec<plan::Deployed> {
        self.records
            .iter()
            .map(ResourceRecord::to_deployed)
            .collect()
    }

    /// Facts with nothing deployed, running, halted or asked for, at `now` (the bench,
    /// `protond preview` without a store).
    #[must_use]
    pub fn empty(now: SystemTime) -> Self {
        Self {
            records: Vec::new(),
            halted: BTreeMap::new(),
            quarantined: BTreeSet::new(),
            running: BTreeSet::new(),
            waiting: BTreeSet::new(),
            last_failures: Vec::new(),
            backoff: BTreeMap::new(),
            forced: BTreeMap::new(),
            pins: Vec::new(),
            holds: Vec::new(),
            approvals: Vec::new(),
            now,
            scope: crate::ha::shard::Scope::all(),
        }
    }
}

/// The result of [`evaluate`].
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The desired state, rendered (held minor upgrades on the version they run).
    pub set: DesiredSet,
    /// The diff of that desired state against the records.
    pub plan: Plan,
    /// What starts now and why the rest waits.
    pub schedule: Schedule,
    /// Minor upgrades the rollout gate held, and why (re-rendered on their deployed version,
    /// so their spec changes still deploy).
    pub rollout_holds: BTreeMap<String, HoldReason>,
    /// Releases the quarantine rule stops now (the daemon records them; already applied
    /// here, as halted).
    pub new_quarantines: Vec<quarantine::NewQuarantine>,
    /// Under `rollback = "offer"`: the resources on a quarantined release, and the previous
    /// usable minor `protond rollback <id> --to` would take them to.
    pub rollback_offers: BTreeMap<String, quarantine::Rollback>,
    /// Changes the change-set gate let through on an approval, with the approval used.
    pub approved: BTreeMap<String, crate::gate::Approval>,
}

/// Computes the desired state and decides what may start now. `cache`, when given, reuses
/// the last rendering for unchanged inputs.
#[must_use]
pub fn evaluate(
    snapshot: &Snapshot,
    facts: &Facts,
    config: &Config,
    mut cache: Option<&mut ComputeCache>,
) -> Evaluation {
    let observed = facts.observed();
    let latest_major = snapshot.catalog.latest_major();
    let stages = environment_field(snapshot, |e| e.stage.as_ref());
    let (new_quarantines, halted_map, quarantined) = quarantine_now(facts, config, &stages);
    // No new resource is given a halted minor.
    let halted: BTreeSet<(String, Version)> = halted_map.keys().cloned().collect();
    let changed = accepted_moves(snapshot);
    let (back, offers, rollbacks) = held_back(snapshot, facts, config, &quarantined, &stages);
    let labels = Labels {
        observed: &observed,
        latest_major: &latest_major,
        changed: &changed,
        rollbacks: &rollbacks,
        back: &back,
        scope: &facts.scope,
    };
    let inputs = (snapshot, facts, config);
    let records = record_facts(&facts.records);
    let declared = desired::Declared::new(snapshot, &facts.records);
    let pass = PassInput {
        inputs,
        declared: &declared,
        labels: &labels,
        rollbacks: &rollbacks,
        halted_map: &halted_map,
        halted: &halted,
        records: &records,
        stages: &stages,
    };
    let FirstPass {
        set,
        mut first,
        mut rollout_holds,
        restrictions,
        pins: rendered_with,
        replaced,
    } = first_pass(&pass, cache.as_deref_mut());
    // The change-set gate, on what the rollout gate let through.
    let mut gated = gate::pass(
        &gate::GateInput {
            snapshot,
            facts,
            config,
            first: &first,
            set: &set,
            rollbacks: &rollbacks,
            holds: &rollout_holds,
        },
        |pins| render(&declared, config, cache.as_deref_mut(), pins, &halted),
    );
    rollout_holds.extend(gated.holds.clone());
    // Held minor upgrades stay on their deployed version, so that their spec changes deploy.
    let held: Vec<Action> = first
        .changes()
        .filter(|a| rollout_holds.contains_key(&a.id))
        .cloned()
        .collect();
    // Cached too: what the next cycles render again while the rollout waits.
    let second = gated.second(&set, &rendered_with, |pins| {
        render(&declared, config, cache, pins, &halted)
    });
    let (mut set, mut plan) = if let Some(s) = second {
        let p = labels.diff(&s);
        (s, p)
    } else {
        staged::put_back(&mut first, replaced);
        (set, first)
    };
    set.problems.extend(gate::file_problems(snapshot));
    plan::force(&mut plan, &facts.forced);
    mark_relocations(&mut plan, &set, &facts.records, snapshot, config);
    let input = schedule_input(&set, facts, records, rollout_holds.clone(), config);
    let mut schedule = schedule::schedule(&plan, &input);
    restrictions.restrict(&mut schedule);
    // The held minor upgrades themselves, with their reasons (a re-rendered resource shows
    // its spec change, if any, as a separate decision before them).
    let pinned = held_decisions(held, &schedule, &rollout_holds);
    schedule.decisions.extend(pinned);
    schedule.decisions.extend(pinned_holds(snapshot, &plan));
    schedule
        .decisions
        .extend(operator_pinned(snapshot, &plan, &rollbacks));
    Evaluation {
        set,
        plan,
        schedule,
        rollout_holds,
        new_quarantines,
        rollback_offers: offers,
        approved: gated.approved,
    }
}

/// Releases whose moved tag an operator accepted: their re-renders are release changes.
fn accepted_moves(snapshot: &Snapshot) -> BTreeSet<(String, Version)> {
    snapshot
        .catalog
        .releases()
        .filter(|r| r.replaced.is_some())
        .map(|r| (r.template.clone(), r.version))
        .collect()
}

/// The rollbacks given and offered for quarantined releases, and every resource held back on
/// an earlier minor (rolled back from a quarantined release, or pinned by an operator, whose
/// pin wins), with the version it is rendered on from the start. An offer leaves out what
/// is held back anyway.
fn held_back(
    snapshot: &Snapshot,
    facts: &Facts,
    config: &Config,
    quarantined: &BTreeSet<(String, Version)>,
    stages: &BTreeMap<String, String>,
) -> (
    BTreeMap<String, quarantine::Rollback>,
    BTreeMap<String, quarantine::Rollback>,
    BTreeMap<String, Version>,
) {
    let (back, mut offers) = rollback_plan(snapshot, facts, config, quarantined);
    let mut rollbacks: BTreeMap<String, Version> =
        back.iter().map(|(id, r)| (id.clone(), r.to)).collect();
    rollbacks.extend(pins::resolve(&facts.pins, &facts.records, stages));
    offers.retain(|id, _| !rollbacks.contains_key(id));
    (back, offers, rollbacks)
}

/// What the first rendering reads besides the cache.
struct PassInput<'a> {
    inputs: (&'a Snapshot, &'a Facts, &'a Config),
    declared: &'a desired::Declared<'a>,
    labels: &'a Labels<'a>,
    rollbacks: &'a BTreeMap<String, Version>,
    halted_map: &'a Halted,
    halted: &'a BTreeSet<(String, Version)>,
    records: &'a BTreeMap<String, RecordFacts>,
    stages: &'a BTreeMap<String, String>,
}

/// The first rendering, its diff and the rollout gate's holds (operator holds and freezes
/// among them).
struct FirstPass {
    set: DesiredSet,
    /// The diff, with the predicted upgrades in it as the unpinned rendering gives them.
    first: Plan,
    rollout_holds: BTreeMap<String, HoldReason>,
    restrictions: Restrictions,
    /// The pins `set` was rendered with.
    pins: BTreeMap<String, Version>,
    /// What the predicted upgrades replaced in `first` (put back when it is the final plan).
    replaced: Vec<staged::Replaced>,
}

/// The first rendering, staged ([`staged`]): the upgrades the rollout gate is predicted to
/// hold rendered on the version they run, when the gate then holds every one of them; else
/// every resource on the version it resolves to.
fn first_pass(p: &PassInput<'_>, mut cache: Option<&mut ComputeCache>) -> FirstPass {
    let (snapshot, facts, config) = p.inputs;
    let rules = rollout_rules(config, facts.now);
    let predicted = staged::predict(&staged::Inputs {
        snapshot,
        declared: p.declared,
        records: &facts.records,
        record_facts: p.records,
        rollbacks: p.rollbacks,
        halted: p.halted_map,
        rules: &rules,
        stages: p.stages,
        scope: &facts.scope,
        now: facts.now,
    });
    if !predicted.is_empty() {
        let pass = first_pass_with(p, cache.as_deref_mut(), &rules, &predicted);
        if staged::confirmed(&predicted, &pass.replaced, &pass.rollout_holds) {
            return pass;
        }
        tracing::debug!(
            predicted = predicted.len(),
            "The rollout gate did not hold every predicted upgrade; rendering them all."
        );
    }
    first_pass_with(p, cache, &rules, &staged::Predicted::new())
}

fn first_pass_with(
    p: &PassInput<'_>,
    cache: Option<&mut ComputeCache>,
    rules: &RolloutRules,
    predicted: &staged::Predicted,
) -> FirstPass {
    let (snapshot, facts, config) = p.inputs;
    let pins = staged::pins(p.rollbacks, predicted);
    let set = render(p.declared, config, cache, &pins, p.halted);
    let mut first = p.labels.diff(&set);
    let replaced = staged::as_upgrades(&mut first, predicted);
    let mut units = rollout_units(&set, snapshot);
    staged::as_upgraded_units(&mut units, predicted);
    // Operator holds and freeze windows stop version moves like the gate does.
    let restrictions = restrictions(config, facts, &set, p.stages);
    let gate = schedule::rollout_holds(&first, &units, p.records, p.halted_map, rules, facts.now);
    let rollout_holds = restrictions.with_version_holds(&first, gate);
    FirstPass {
        set,
        first,
        rollout_holds,
        restrictions,
        pins,
        replaced,
    }
}

/// The desired state of `declared` with `pins` (rollbacks) and `halted`, through `cache`
/// when given.
fn render(
    declared: &desired::Declared<'_>,
    config: &Config,
    cache: Option<&mut ComputeCache>,
    pins: &BTreeMap<String, Version>,
    halted: &BTreeSet<(String, Version)>,
) -> DesiredSet {
    match cache {
        Some(cache) => cache.compute_declared(declared, &config.account_id, pins, halted),
        None => desired::compute_declared(declared, &config.account_id, pins, halted),
    }
}

/// Halted rollouts by (template, version), with their reason.
type Halted = BTreeMap<(String, Version), String>;

/// The releases the quarantine rule stops now, and the halted and quarantined releases
/// with them (a new quarantine is halted from this decision on).
fn quarantine_now(
    facts: &Facts,
    config: &Config,
    stages: &BTreeMap<String, String>,
) -> (
    Vec<quarantine::NewQuarantine>,
    Halted,
    BTreeSet<(String, Version)>,
) {
    let new = quarantine::pending(
        &facts.records,
        &facts.last_failures,
        &facts.halted,
        stages,
        &config.stages,
        &config.quarantine,
    );
    let mut halted = facts.halted.clone();
    let mut quarantined = facts.quarantined.clone();
    for q in &new {
        let key = (q.template.clone(), q.version);
        halted.insert(key.clone(), format!("quarantined by protond: {}", q.reason));
        quarantined.insert(key);
    }
    (new, halted, quarantined)
}

/// What a diff is labelled with: release changes, rollbacks (pinned, and redeploys of
/// resources that failed to reach a quarantined release).
struct Labels<'a> {
    observed: &'a [plan::Deployed],
    latest_major: &'a BTreeMap<String, u32>,
    changed: &'a BTreeSet<(String, Version)>,
    rollbacks: &'a BTreeMap<String, Version>,
    back: &'a BTreeMap<String, quarantine::Rollback>,
    /// What this leader may change: other shards' resources leave the plan.
    scope: &'a crate::ha::shard::Scope,
}

impl Labels<'_> {
    fn diff(&self, set: &DesiredSet) -> Plan {
        let mut plan = plan::diff(
            &set.desired(),
            self.observed,
            &set.unknown_repos,
            self.latest_major,
        );
        plan::label_release_changes(&mut plan, self.changed);
        plan::label_rollbacks(&mut plan, self.rollbacks);
        quarantine::label_redeploys(&mut plan, self.back, self.rollbacks);
        if !self.scope.is_everything() {
            // Its repo from the desired set, else from its record (a delete).
            let mut repos: BTreeMap<&str, &str> = self
                .observed
                .iter()
                .map(|d| (d.id.as_str(), d.repo.as_str()))
                .collect();
            repos.extend(
                set.resources
                    .iter()
                    .map(|r| (r.desired.id.as_str(), r.desired.repo.as_str())),
            );
            self.scope
                .retain_owned(&mut plan, |id| repos.get(id).copied());
        }
        plan
    }
}

/// The rollbacks from quarantined releases: given (`rollback = "auto"`) or offered. The
/// offers leave out resources an operator pinned.
fn rollback_plan(
    snapshot: &Snapshot,
    facts: &Facts,
    config: &Config,
    quarantined: &BTreeSet<(String, Version)>,
) -> (
    BTreeMap<String, quarantine::Rollback>,
    BTreeMap<String, quarantine::Rollback>,
) {
    let usable: BTreeSet<(String, Version)> = snapshot
        .catalog
        .releases()
        .filter(|r| r.usable())
        .map(|r| (r.template.clone(), r.version))
        .collect();
    let all = quarantine::rollbacks(quarantined, &usable, &facts.records, &facts.last_failures);
    match config.quarantine.rollback {
        crate::config::quarantine::RollbackMode::Auto => (all, BTreeMap::new()),
        crate::config::quarantine::RollbackMode::Offer => (BTreeMap::new(), all),
    }
}

/// What each desired resource brings to the rollout gate: its template, version and stage.
fn rollout_units(set: &DesiredSet, snapshot: &Snapshot) -> Vec<RolloutUnit> {
    let env_stages = environment_field(snapshot, |e| e.stage.as_ref());
    set.resources
        .iter()
        .map(|r| RolloutUnit {
            id: r.desired.id.clone(),
            template: r.desired.template.clone(),
            version: r.desired.version,
            stage: r
                .environment
                .as_ref()
                .and_then(|e| env_stages.get(e))
                .cloned(),
        })
        .collect()
}

/// The held minor upgrades not already decided, as holds with their reasons. Linear: the
/// decisions are indexed by resource id once (a scan of them per held upgrade was quadratic
/// in the fleet on a tag that holds most of it).
fn held_decisions(
    held: Vec<Action>,
    schedule: &Schedule,
    holds: &BTreeMap<String, HoldReason>,
) -> Vec<Decision> {
    let mut decided: BTreeMap<&str, Vec<&Action>> = BTreeMap::new();
    for d in &schedule.decisions {
        decided
            .entry(d.action.id.as_str())
            .or_default()
            .push(&d.action);
    }
    held.into_iter()
        .filter(|a| {
            !decided
                .get(a.id.as_str())
                .is_some_and(|same| same.contains(&a))
        })
        .filter_map(|a| {
            let reason = holds.get(&a.id)?.clone();
            Some(Decision {
                action: a,
                verdict: Verdict::Hold { reason },
            })
        })
        .collect()
}

/// Where a resource's stack belongs now: the configured region, and its environment's role.
#[must_use]
pub fn wanted_place(
    environment: Option<&String>,
    roles: &BTreeMap<String, String>,
    config: &Config,
) -> (String, Option<String>) {
    (
        config.region.clone(),
        environment.and_then(|e| roles.get(e)).cloned(),
    )
}

/// Marks as relocations the resources whose recorded stack is not where it belongs now (its
/// environment's role or the configured region changed). Records written before placements
/// were recorded are left alone: where their stacks live is not known for sure.
fn mark_relocations(
    plan: &mut Plan,
    set: &DesiredSet,
    records: &[ResourceRecord],
    snapshot: &Snapshot,
    config: &Config,
) {
    let roles = environment_field(snapshot, |e| e.role_arn.as_ref());
    let records: BTreeMap<&str, &ResourceRecord> =
        records.iter().map(|r| (r.id.as_str(), r)).collect();
    let environments: BTreeMap<&str, Option<&String>> = set
        .resources
        .iter()
        .map(|r| (r.desired.id.as_str(), r.environment.as_ref()))
        .collect();
    for a in &mut plan.actions {
        let movable = matches!(a.action, ActionKind::NoOp | ActionKind::Update { .. });
        let (Some(record), Some(env)) =
            (records.get(a.id.as_str()), environments.get(a.id.as_str()))
        else {
            continue;
        };
        let p = &record.placement;
        if !movable || p.stack_id.is_none() {
            continue;
        }
        let (region, role) = wanted_place(*env, &roles, config);
        let recorded_region = p.region.clone().unwrap_or_else(|| config.region.clone());
        if recorded_region != region || p.role_arn != role {
            a.action = ActionKind::Update {
                reason: plan::UpdateReason::Relocate,
            };
        }
    }
}

/// The freeze windows open at `now`, with when each ends.
#[must_use]
pub fn active_freezes(config: &Config, now: SystemTime) -> Vec<ActiveFreeze> {
    config
        .freezes
        .iter()
        .filter_map(|f| {
            Some(ActiveFreeze {
                reason: f.reason.clone(),
                stages: f.stages.clone(),
                all: f.all,
                until: f.active(config.timezone, now)?,
            })
        })
        .collect()
}

/// The operator holds and the freeze windows open now, with what each resource (desired or
/// recorded) belongs to.
fn restrictions(
    config: &Config,
    facts: &Facts,
    set: &DesiredSet,
    stages: &BTreeMap<String, String>,
) -> Restrictions {
    let subject = |template: &str, environment: Option<&String>| Subject {
        template: Some(template.to_string()),
        environment: environment.cloned(),
        stage: environment.and_then(|e| stages.get(e)).cloned(),
    };
    let mut out: BTreeMap<String, Subject> = facts
        .records
        .iter()
        .map(|r| (r.id.clone(), subject(&r.template, r.environment.as_ref())))
        .collect();
    for r in &set.resources {
        let s = subject(&r.desired.template, r.environment.as_ref());
        out.insert(r.desired.id.clone(), s);
    }
    Restrictions {
        holds: facts.holds.clone(),
        freezes: active_freezes(config, facts.now),
        subjects: out,
        now: facts.now,
    }
}

/// Resources an operator pin (`protond rollback --to`) keeps on a minor while a newer minor
/// of the major exists: shown as held, so that `protond plan` says why they do not move.
fn operator_pinned(
    snapshot: &Snapshot,
    plan: &Plan,
    pinned: &BTreeMap<String, Version>,
) -> Vec<Decision> {
    plan.actions
        .iter()
        .filter(|a| a.action == ActionKind::NoOp)
        .filter_map(|a| {
            let version = *pinned.get(&a.id)?;
            let newest = snapshot
                .catalog
                .resolve(&a.template, version.major, None)?
                .version;
            (newest > a.version).then(|| Decision {
                action: a.clone(),
                verdict: Verdict::Hold {
                    reason: HoldReason::PinnedByOperator {
                        version,
                        available: newest,
                    },
                },
            })
        })
        .collect()
}

/// Resources that stay on a minor their spec pins while a newer minor of the major exists:
/// shown as held, so that `protond plan` says why they do not move.
fn pinned_holds(snapshot: &Snapshot, plan: &Plan) -> Vec<Decision> {
    let mut pins: BTreeMap<String, &TemplateRef> = BTreeMap::new();
    for f in snapshot.spec_repos.iter().flat_map(|r| &r.files) {
        match &f.spec {
            Ok(SpecFile::Environment(e)) => {
                if let Some(t) = e.template.as_ref().filter(|t| t.minor.is_some()) {
                    pins.insert(desired::environment_id(&e.name), t);
                }
            }
            Ok(SpecFile::Service(s)) => {
                if let Some(t) = s.template.as_ref().filter(|t| t.minor.is_some()) {
                    pins.insert(desired::pipeline_id(&s.name), t);
                    for i in &s.instances {
                        pins.insert(desired::instance_id(&s.name, &i.name), t);
                    }
                }
            }
            Err(_) => {}
        }
    }
    plan.actions
        .iter()
        .filter(|a| a.action == ActionKind::NoOp)
        .filter_map(|a| {
            let pin = pins.get(&a.id)?;
            let newest = snapshot
                .catalog
                .resolve(&pin.name, pin.major, None)?
                .version;
            (newest > a.version).then(|| Decision {
                action: a.clone(),
                verdict: Verdict::Hold {
                    reason: HoldReason::PinnedBySpec { available: newest },
                },
            })
        })
        .collect()
}

fn schedule_input(
    set: &DesiredSet,
    facts: &Facts,
    records: BTreeMap<String, RecordFacts>,
    rollout_holds: BTreeMap<String, HoldReason>,
    config: &Config,
) -> ScheduleInput {
    let wanted = set
        .resources
        .iter()
        .map(|r| {
            let rendered_hash = match &r.desired.state {
                DesiredState::Ready { rendered_hash } => rendered_hash.clone(),
                _ => String::new(),
            };
            let w = Wanted {
                input_hash: r.desired.input_hash.clone(),
                rendered_hash,
            };
            (r.desired.id.clone(), w)
        })
        .collect();
    let last = facts
        .last_failures
        .iter()
        .map(|d| (d.deployment.resource_id.clone(), last_attempt(d)))
        .collect();
    ScheduleInput {
        rollout_holds,
        running: facts.running.clone(),
        waiting: facts.waiting.clone(),
        last,
        wanted,
        backoff: facts.backoff.clone(),
        records,
        deletion_budget: config.deletion_budget,
    }
}

fn last_attempt(d: &DeploymentRecord) -> LastAttempt {
    LastAttempt {
        failed_permanently: d.status == DeploymentStatus::Failed && !d.retryable,
        delete: d.deployment.action == DeploymentAction::Delete,
        version: d.deployment.to_version,
        input_hash: d.deployment.input_hash.clone(),
        rendered_hash: d.deployment.rendered_hash.clone(),
        conflict: d.is_conflict().then(|| d.error.clone().unwrap_or_default()),
    }
}

fn record_facts(records: &[ResourceRecord]) -> BTreeMap<String, RecordFacts> {
    records
        .iter()
        .map(|r| {
            let facts = RecordFacts {
                version: r.version,
                deployed: r.status == ResourceStatus::Deployed,
                updated_at: humantime::parse_rfc3339(&r.updated_at).ok(),
                environment: r.environment.clone(),
                kind: r.kind,
            };
            (r.id.clone(), facts)
        })
        .collect()
}

/// The rollout rules at `now`: the configured stages and soak, and which stages' maintenance
/// windows are closed.
#[must_use]
pub fn rollout_rules(config: &Config, now: SystemTime) -> RolloutRules {
    let at = chrono::DateTime::<chrono::Utc>::from(now);
    let closed_windows = config
        .windows
        .iter()
        .filter(|(_, window)| !in_window(window, config.timezone, at))
        .map(|(stage, _)| stage.clone())
        .collect();
    RolloutRules {
        stages: config.stages.clone(),
        soak: config.soak,
        closed_windows,
    }
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

/// One field of every environment spec that sets it, by environment name.
#[must_use]
pub fn environment_field(
    snapshot: &Snapshot,
    field: impl Fn(&EnvironmentSpec) -> Option<&String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for repo in &snapshot.spec_repos {
        for f in &repo.files {
            if let Ok(SpecFile::Environment(e)) = &f.spec
                && let Some(v) = field(e)
            {
                out.insert(e.name.clone(), v.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use chrono::TimeZone;

    use super::*;

    fn upgrade(id: &str, to: u32) -> Action {
        let v = |minor| Version { major: 1, minor };
        Action {
            id: id.to_owned(),
            kind: plan::ResourceKind::ServiceInstance,
            template: "svc".to_owned(),
            version: v(to),
            deployed: Some(v(0)),
            action: ActionKind::Update {
                reason: plan::UpdateReason::MinorUpgrade {
                    from: v(0),
                    to: v(to),
                },
            },
        }
    }

    #[test]
    fn held_upgrades_are_added_unless_the_same_change_is_decided() {
        type Case = (
            Vec<Action>,
            Vec<Decision>,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        let hold = |on: &str| HoldReason::EarlierStage {
            waiting_on: on.to_owned(),
        };
        let decided = |a: Action| Decision {
            action: a,
            verdict: Verdict::Start,
        };
        // (held, decided, holds, the held ids expected as new decisions)
        let cases: Vec<Case> = vec![
            (vec![upgrade("a", 1)], vec![], vec!["a"], vec!["a"]),
            // The same change decided already: not twice.
            (
                vec![upgrade("a", 1)],
                vec![decided(upgrade("a", 1))],
                vec!["a"],
                vec![],
            ),
            // Another change of the same resource (its spec change on the old version).
            (
                vec![upgrade("a", 1)],
                vec![decided(upgrade("a", 2))],
                vec!["a"],
                vec!["a"],
            ),
            // Another resource decided; a held change with no reason is left out.
            (
                vec![upgrade("a", 1), upgrade("b", 1)],
                vec![decided(upgrade("c", 1))],
                vec!["b"],
                vec!["b"],
            ),
        ];
        for (held, decisions, holds, want) in cases {
            let holds: BTreeMap<String, HoldReason> = holds
                .iter()
                .map(|id| ((*id).to_owned(), hold("x")))
                .collect();
            let got = held_decisions(held, &Schedule { decisions }, &holds);
            let ids: Vec<&str> = got.iter().map(|d| d.action.id.as_str()).collect();
            assert_eq!(ids, want);
            assert!(
                got.iter()
                    .all(|d| d.verdict == Verdict::Hold { reason: hold("x") })
            );
        }
    }

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
}
