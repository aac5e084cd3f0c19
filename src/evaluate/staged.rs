//! Staged evaluation (issue 20): the rollout gate asked before the rendering, from the
//! version each resource resolves to ([`desired::resolve_versions`], no rendering), so that the
//! minor upgrades it will hold are rendered only on the version they run (the render cache's
//! rendering from the cycle before), not first on the new minor and then again on the old one.
//! On a tag that moves a whole fleet stage by stage, the tag's cycle renders the services with
//! an instance in the first stage instead of every service, some of them twice.
//!
//! What this predicts is checked, never trusted: the evaluation runs the rollout gate as
//! before, on the plan and units the unpinned rendering would give (each predicted upgrade
//! put back in place of its pinned rendering's action, [`as_upgrades`]), and when that gate
//! would not hold every predicted upgrade, it renders again without the prediction
//! ([`confirmed`]). What differs from rendering every upgrade: an upgrade the gate holds is
//! not rendered on its new minor until its stage opens, so a release that fails to render
//! for it says so then (the first stage's resources render it at once).
//!
//! Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use crate::desired::{self, Snapshot};
use crate::plan::schedule::{self, RecordFacts, RolloutRules, RolloutUnit};
use crate::plan::{Action, ActionKind, Plan, UpdateReason, Version};
use crate::state::ResourceRecord;

/// A minor upgrade the rollout gate is predicted to hold: rendered on `from`, the version the
/// resource runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// The deployed version.
    pub from: Version,
    /// The version it would move to.
    pub to: Version,
}

/// Predicted holds by resource id.
pub type Predicted = BTreeMap<String, Move>;

#[cfg(test)]
thread_local! {
    /// Tests: no prediction on this thread (every upgrade rendered, as before staging), to
    /// compare both evaluations.
    pub static UNSTAGED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What the prediction reads: the same facts the rollout gate reads after the rendering.
pub struct Inputs<'a> {
    /// The repos.
    pub snapshot: &'a Snapshot,
    /// Their declarations, read once for the evaluation.
    pub declared: &'a desired::Declared<'a>,
    /// The deployed records.
    pub records: &'a [ResourceRecord],
    /// The records as the rollout gate reads them.
    pub record_facts: &'a BTreeMap<String, RecordFacts>,
    /// Rollbacks and operator pins (rendered on their version whatever the gate says).
    pub rollbacks: &'a BTreeMap<String, Version>,
    /// Halted rollouts (never given to a new resource), with their reasons.
    pub halted: &'a BTreeMap<(String, Version), String>,
    /// The rollout rules now.
    pub rules: &'a RolloutRules,
    /// Environment name → stage.
    pub stages: &'a BTreeMap<String, String>,
    /// What this leader may change.
    pub scope: &'a crate::ha::shard::Scope,
    /// The time of the decision.
    pub now: SystemTime,
}

/// The minor upgrades the rollout gate will hold, with their versions; none when no deployed
/// resource runs a minor older than its major's newest (a cycle at rest pays one pass over
/// the records).
#[must_use]
pub fn predict(i: &Inputs<'_>) -> Predicted {
    #[cfg(test)]
    if UNSTAGED.with(std::cell::Cell::get) {
        return Predicted::new();
    }
    if !lagging(i.snapshot, i.records, i.rollbacks) {
        return Predicted::new();
    }
    let halted: BTreeSet<(String, Version)> = i.halted.keys().cloned().collect();
    let resolved = desired::resolve_versions(i.declared, i.rollbacks, &halted);
    let by_id: BTreeMap<&str, &ResourceRecord> =
        i.records.iter().map(|r| (r.id.as_str(), r)).collect();
    let units: Vec<RolloutUnit> = resolved
        .iter()
        .map(|r| RolloutUnit {
            id: r.id.clone(),
            template: r.template.clone(),
            version: r.version,
            stage: r
                .environment
                .as_ref()
                .and_then(|e| i.stages.get(e))
                .cloned(),
        })
        .collect();
    let actions = resolved
        .iter()
        .filter(|r| !i.rollbacks.contains_key(&r.id))
        .filter_map(|r| {
            let have = by_id.get(r.id.as_str())?;
            let (from, to) = (have.version, r.version);
            let upgrade = have.template == r.template && from.major == to.major && from < to;
            upgrade.then(|| Action {
                id: r.id.clone(),
                kind: have.kind,
                template: r.template.clone(),
                version: to,
                deployed: Some(from),
                action: ActionKind::Update {
                    reason: UpdateReason::MinorUpgrade { from, to },
                },
            })
        })
        .collect();
    let mut plan = Plan {
        actions,
        proposals: Vec::new(),
    };
    i.scope
        .retain_owned(&mut plan, |id| by_id.get(id).map(|r| r.repo.as_str()));
    let holds = schedule::rollout_holds(&plan, &units, i.record_facts, i.halted, i.rules, i.now);
    plan.actions
        .into_iter()
        .filter(|a| holds.contains_key(&a.id))
        .filter_map(|a| {
            let from = a.deployed?;
            Some((
                a.id,
                Move {
                    from,
                    to: a.version,
                },
            ))
        })
        .collect()
}

/// Whether some deployed resource (not rolled back) runs an older minor than the newest
/// registered one of its template's major.
fn lagging(
    snapshot: &Snapshot,
    records: &[ResourceRecord],
    rollbacks: &BTreeMap<String, Version>,
) -> bool {
    let mut newest: BTreeMap<(&str, u32), u32> = BTreeMap::new();
    for r in snapshot.catalog.releases() {
        let minor = newest
            .entry((r.template.as_str(), r.version.major))
            .or_default();
        *minor = (*minor).max(r.version.minor);
    }
    records.iter().any(|r| {
        !rollbacks.contains_key(&r.id)
            && newest
                .get(&(r.template.as_str(), r.version.major))
                .is_some_and(|&m| r.version.minor < m)
    })
}

/// The pins of the first rendering: the rollbacks, and each predicted upgrade on the version
/// it runs.
#[must_use]
pub fn pins(
    rollbacks: &BTreeMap<String, Version>,
    predicted: &Predicted,
) -> BTreeMap<String, Version> {
    let mut pins = rollbacks.clone();
    pins.extend(predicted.iter().map(|(id, m)| (id.clone(), m.from)));
    pins
}

/// An action replaced by [`as_upgrades`]: where, and what it was.
#[derive(Debug)]
pub struct Replaced {
    index: usize,
    action: ActionKind,
    version: Version,
}

/// Puts each predicted upgrade into `plan` (the diff of the rendering with [`pins`]) in place
/// of the action its rendering on the deployed version gave, so that the plan is the one the
/// unpinned rendering would give: a minor upgrade wherever that rendering is ready (a no-op,
/// a spec change or a re-render there). A resource whose pinned rendering is anything else is
/// left as it is, and [`confirmed`] then fails. Returns what was replaced, for [`put_back`].
pub fn as_upgrades(plan: &mut Plan, predicted: &Predicted) -> Vec<Replaced> {
    if predicted.is_empty() {
        return Vec::new();
    }
    let mut replaced = Vec::new();
    for (index, a) in plan.actions.iter_mut().enumerate() {
        let Some(m) = predicted.get(&a.id) else {
            continue;
        };
        let ready = matches!(
            a.action,
            ActionKind::NoOp
                | ActionKind::Update {
                    reason: UpdateReason::SpecChange | UpdateReason::Rerender
                }
        );
        if !ready || a.version != m.from || a.deployed != Some(m.from) {
            continue;
        }
        let upgrade = ActionKind::Update {
            reason: UpdateReason::MinorUpgrade {
                from: m.from,
                to: m.to,
            },
        };
        replaced.push(Replaced {
            index,
            action: std::mem::replace(&mut a.action, upgrade),
            version: std::mem::replace(&mut a.version, m.to),
        });
    }
    replaced
}

/// Undoes [`as_upgrades`]: the plan of the pinned rendering again.
pub fn put_back(plan: &mut Plan, replaced: Vec<Replaced>) {
    for r in replaced {
        if let Some(a) = plan.actions.get_mut(r.index) {
            a.action = r.action;
            a.version = r.version;
        }
    }
}

/// Gives each predicted upgrade's unit the version it would move to, as in the unpinned
/// rendering.
pub fn as_upgraded_units(units: &mut [RolloutUnit], predicted: &Predicted) {
    if predicted.is_empty() {
        return;
    }
    for u in units {
        if let Some(m) = predicted.get(&u.id) {
            u.version = m.to;
        }
    }
}

/// Whether the rollout gate (`holds`, run on the plan with [`as_upgrades`] applied) holds
/// every predicted upgrade, each of which `replaced` holds: the rendering with the prediction
/// is then the one the evaluation without it ends with.
#[must_use]
pub fn confirmed<T>(
    predicted: &Predicted,
    replaced: &[Replaced],
    holds: &BTreeMap<String, T>,
) -> bool {
    replaced.len() == predicted.len() && predicted.keys().all(|id| holds.contains_key(id))
}

#[cfg(test)]
mod tests;
