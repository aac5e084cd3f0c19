//! The change-set gate's place in [`super::evaluate`]: finds the minor upgrades and
//! rollbacks of `CloudFormation` resources the rollout gate let through, renders them once
//! more on the version they run (only in cycles that have such changes, and through the
//! render cache: the cycle before rendered them on that version), and asks [`crate::gate::decide`] whether each may deploy. Held ones join the
//! rollout holds, so they are re-rendered on their deployed version like them and their
//! spec changes still deploy. Pure, like the rest of `evaluate`: it must never perform I/O.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Config;
use crate::desired::{DesiredSet, Resource, Snapshot};
use crate::gate::{self, Approval, Candidate, Decision, Rules};
use crate::plan::schedule::HoldReason;
use crate::plan::{ActionKind, DesiredState, Plan, UpdateReason, Version};
use crate::provision::Provisioning;

use super::Facts;

/// What the gate decided in one evaluation.
#[derive(Debug, Clone, Default)]
pub struct GatePass {
    /// Resources waiting for an approval, with the hold (`HoldReason::NeedsApproval`).
    pub holds: BTreeMap<String, HoldReason>,
    /// Resources that needed an approval and have one: the approval used.
    pub approved: BTreeMap<String, Approval>,
    /// The candidates that may deploy (no approval needed, or approved).
    pub passed: BTreeSet<String>,
    /// Every candidate and every pin rendered on the version it runs, when there were
    /// candidates: the second pass takes its rendering from here.
    pub base: Option<DesiredSet>,
    /// What the second pass pins: the rollbacks, and every resource the rollout gate or
    /// this gate holds on its deployed version.
    pub pins: BTreeMap<String, Version>,
    /// Whether `pins` holds more than the rollbacks (a second rendering is needed).
    pub pinned_more: bool,
}

impl GatePass {
    /// The second pass's rendering: the gate's, with the candidates that passed taken from
    /// `first`; else `compute` with [`Self::pins`] when anything is held that `first` (rendered
    /// with `first_pins`) does not already hold; else none (the first rendering stands).
    pub fn second(
        &mut self,
        first: &DesiredSet,
        first_pins: &BTreeMap<String, Version>,
        compute: impl FnOnce(&BTreeMap<String, Version>) -> DesiredSet,
    ) -> Option<DesiredSet> {
        match self.base.take() {
            Some(base) => Some(splice(base, first, &self.passed)),
            None if self.pinned_more && self.pins != *first_pins => Some(compute(&self.pins)),
            None => None,
        }
    }
}

/// What the gate pass reads.
pub struct GateInput<'a> {
    /// The repos.
    pub snapshot: &'a Snapshot,
    /// The facts (records, store approvals).
    pub facts: &'a Facts,
    /// The config (`[gate]`, the account).
    pub config: &'a Config,
    /// The first diff.
    pub first: &'a Plan,
    /// The first rendering.
    pub set: &'a DesiredSet,
    /// The rollbacks (operator pins, quarantine rollbacks), with their version.
    pub rollbacks: &'a BTreeMap<String, Version>,
    /// The rollout gate's holds (operator holds and freezes among them).
    pub holds: &'a BTreeMap<String, HoldReason>,
}

/// Runs the gate over the changes of `input.first` the rollout gate let through; `render`
/// renders the desired state with the pins it is given (through the evaluation's render
/// cache: the candidates on the version they run were rendered by an earlier cycle).
#[must_use]
pub fn pass(
    input: &GateInput<'_>,
    render: impl FnOnce(&BTreeMap<String, Version>) -> DesiredSet,
) -> GatePass {
    let rules = Rules::from_config(&input.config.gate);
    let by_id: BTreeMap<&str, &Resource> = input
        .set
        .resources
        .iter()
        .map(|r| (r.desired.id.as_str(), r))
        .collect();
    // A rollback of a resource whose last deployment failed (a quarantined release it never
    // reached) puts back what the stack runs: not gated.
    let failed: BTreeSet<&str> = input
        .facts
        .records
        .iter()
        .filter(|r| r.status != crate::model::ResourceStatus::Deployed)
        .map(|r| r.id.as_str())
        .collect();
    let candidates = candidates(input.first, &by_id, input.holds, &failed);
    let mut pins = input.rollbacks.clone();
    pins.extend(deployed_versions(input.first, input.holds));
    if !rules.enabled || candidates.is_empty() {
        return GatePass {
            passed: candidates.into_keys().collect(),
            pinned_more: pins != *input.rollbacks,
            pins,
            ..GatePass::default()
        };
    }
    let mut base_pins = pins.clone();
    base_pins.extend(candidates.iter().map(|(id, (from, _))| (id.clone(), *from)));
    let base = render(&base_pins);
    let approvals = approvals(input.facts, input.snapshot);
    let deployed: BTreeMap<&str, &Resource> = base
        .resources
        .iter()
        .map(|r| (r.desired.id.as_str(), r))
        .collect();
    // Each decision compares two renderings' documents: on every core (issue 20: the 12,500
    // upgrades of a 50,000-instance tag took 0.6 s on one).
    let candidates: Vec<(&String, &(Version, Version))> = candidates.iter().collect();
    let decisions = crate::desired::map_ordered(&candidates, |(id, (from, to))| {
        let (Some(new), Some(old)) = (by_id.get(id.as_str()), deployed.get(id.as_str())) else {
            return Decision::Clear;
        };
        match &old.desired.state {
            DesiredState::Ready { .. } => decide(&rules, &approvals, new, old, *to),
            DesiredState::Invalid { error } => Decision::NeedsApproval {
                changes: vec![format!(
                    "the deployed version {from} does not render with the current spec ({error}); no prediction can be made"
                )],
            },
            DesiredState::Blocked { .. } => Decision::Clear,
        }
    });
    let mut out = GatePass::default();
    for ((id, (_, to)), decision) in candidates.into_iter().zip(decisions) {
        match decision {
            Decision::Clear => {
                out.passed.insert(id.clone());
            }
            Decision::Approved { approval, .. } => {
                out.passed.insert(id.clone());
                out.approved.insert(id.clone(), approval);
            }
            Decision::NeedsApproval { changes } => {
                let hold = HoldReason::NeedsApproval {
                    version: *to,
                    changes,
                };
                out.holds.insert(id.clone(), hold);
            }
        }
    }
    out.base = Some(base);
    pins.extend(deployed_versions(input.first, &out.holds));
    out.pinned_more = pins != *input.rollbacks;
    out.pins = pins;
    out
}

/// The deployed version of each change of `plan` in `holds`.
fn deployed_versions<T>(plan: &Plan, holds: &BTreeMap<String, T>) -> BTreeMap<String, Version> {
    plan.changes()
        .filter(|a| holds.contains_key(&a.id))
        .filter_map(|a| a.deployed.map(|v| (a.id.clone(), v)))
        .collect()
}

fn decide(
    rules: &Rules,
    approvals: &[Approval],
    new: &Resource,
    old: &Resource,
    to: Version,
) -> Decision {
    let c = Candidate {
        id: &new.desired.id,
        repo: &new.desired.repo,
        template: &new.desired.template,
        version: to,
        deployed: &old.documents,
        new: &new.documents,
    };
    gate::decide(&c, rules, approvals)
}

/// The gated changes: minor upgrades and rollbacks (a rollback to an earlier minor can
/// replace too; not of a resource whose last deployment `failed`) of ready `CloudFormation`
/// resources, not held by the rollout gate, by id with (deployed, new) version. A release
/// change (an accepted moved tag) is not gated: `protond release accept` is the deliberate
/// act.
fn candidates(
    first: &Plan,
    resources: &BTreeMap<&str, &Resource>,
    held: &BTreeMap<String, HoldReason>,
    failed: &BTreeSet<&str>,
) -> BTreeMap<String, (Version, Version)> {
    first
        .changes()
        .filter(|a| !held.contains_key(&a.id))
        .filter_map(|a| {
            let (from, to) = match &a.action {
                ActionKind::Update {
                    reason: UpdateReason::MinorUpgrade { from, to },
                } => (from, to),
                ActionKind::Update {
                    reason: UpdateReason::Rollback { from, to },
                } if !failed.contains(a.id.as_str()) => (from, to),
                _ => return None,
            };
            let r = resources.get(a.id.as_str())?;
            let ready = matches!(r.desired.state, DesiredState::Ready { .. });
            (ready && r.provisioning == Provisioning::CloudFormation)
                .then(|| (a.id.clone(), (*from, *to)))
        })
        .collect()
}

/// The approvals that may count: the store's and every spec repo's file.
fn approvals(facts: &Facts, snapshot: &Snapshot) -> Vec<Approval> {
    let mut out = facts.approvals.clone();
    for repo in &snapshot.spec_repos {
        if let Ok(a) = &repo.approvals {
            out.extend(a.iter().cloned());
        }
    }
    out
}

/// Every spec repo's refused approval file, as desired-state problems.
#[must_use]
pub fn file_problems(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .spec_repos
        .iter()
        .filter_map(|r| r.approvals.as_ref().err())
        .flatten()
        .cloned()
        .collect()
}

/// The second pass's rendering from the gate's: `base` (candidates and pins on the version
/// they run) with the candidates that passed taken from the first rendering.
#[must_use]
pub fn splice(mut base: DesiredSet, first: &DesiredSet, passed: &BTreeSet<String>) -> DesiredSet {
    let first: BTreeMap<&str, &Resource> = first
        .resources
        .iter()
        .map(|r| (r.desired.id.as_str(), r))
        .collect();
    for r in &mut base.resources {
        if passed.contains(&r.desired.id)
            && let Some(f) = first.get(r.desired.id.as_str())
        {
            *r = (*f).clone();
        }
    }
    base
}
