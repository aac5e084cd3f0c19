//! Computes the changes that turn deployed state into desired state. Never performs I/O.
//!
//! [`diff`] takes the desired resources (already rendered, with content hashes), the
//! catalogue's view of the newest major per template, and what is recorded as deployed, and
//! returns an ordered list of [`Action`]s plus "major available" proposals:
//!
//! * environments before components before service instances before pipelines;
//! * deletes after everything else, in the reverse order;
//! * a deployed resource whose repo could not be fetched or parsed is [`ActionKind::Unknown`],
//!   never deleted; a desired resource that failed to render is [`ActionKind::Invalid`] and
//!   keeps whatever is deployed;
//! * a resource whose dependency is not deployed yet is [`ActionKind::Blocked`].

pub mod holds;
pub mod schedule;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

pub use crate::model::{ResourceKind, Version};

/// What the desired resource looks like after rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesiredState {
    /// Rendered; the hash is over the normalised rendered documents.
    Ready {
        /// Content hash of the rendered `IaC`.
        rendered_hash: String,
    },
    /// Cannot render until these resources are deployed (their outputs are needed).
    Blocked {
        /// Ids of the resources waited on.
        on: Vec<String>,
    },
    /// The spec, inputs or template failed; what is deployed stays as it is.
    Invalid {
        /// Why, naming file and field.
        error: String,
    },
}

/// One resource as the spec repos and catalogue want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Stable id, e.g. `service_instance/payments/payments-dev`.
    pub id: String,
    /// The resource's kind.
    pub kind: ResourceKind,
    /// Spec repo that declares it.
    pub repo: String,
    /// Template name.
    pub template: String,
    /// Template version chosen (highest valid minor of the major, or the pinned minor).
    pub version: Version,
    /// Hash of the validated inputs.
    pub input_hash: String,
    /// Rendered state.
    pub state: DesiredState,
}

/// One resource as recorded deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// Stable id.
    pub id: String,
    /// The resource's kind.
    pub kind: ResourceKind,
    /// Spec repo that declared it.
    pub repo: String,
    /// Template name.
    pub template: String,
    /// Deployed version.
    pub version: Version,
    /// Hash of the inputs deployed.
    pub input_hash: String,
    /// Hash of the rendered `IaC` deployed.
    pub rendered_hash: String,
}

/// Why an update happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum UpdateReason {
    /// The spec's inputs changed (a merged pull request).
    SpecChange,
    /// A newer minor of the same major.
    MinorUpgrade {
        /// Deployed version.
        from: Version,
        /// New version.
        to: Version,
    },
    /// A different template or major (e.g. a merged major-upgrade PR), or a minor pin moved back.
    TemplateChange {
        /// Deployed version.
        from: Version,
        /// New version.
        to: Version,
    },
    /// Same inputs and version but different rendered output (e.g. a dependency's outputs changed).
    Rerender,
    /// The stack must move: its environment's role (account) or the configured region
    /// changed. Created in the new place, then deleted from the recorded one with the
    /// recorded identity; counted against the deletion budget.
    Relocate,
    /// Same inputs and version, but the release itself changed: an operator accepted its
    /// moved tag (`protond release accept`). Rolled out like a minor upgrade, through the
    /// rollout gate.
    ReleaseChanged {
        /// The release (deployed and new).
        version: Version,
    },
    /// Nothing changed, but a deployment was asked for: an operator's `protond redeploy`, or
    /// drift healing. Deploys the current desired state through the normal gates.
    Forced {
        /// Who asked, in kind.
        cause: ForceCause,
    },
    /// Back to an earlier minor of the same major: an operator's pin (`protond rollback`)
    /// or a quarantined release's automatic rollback. Rolled out like a minor upgrade,
    /// through the rollout gate.
    Rollback {
        /// Deployed version.
        from: Version,
        /// The version pinned.
        to: Version,
    },
}

/// Why a deployment of an unchanged resource was asked for (see [`UpdateReason::Forced`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForceCause {
    /// An operator (`protond redeploy`, `POST /api/v1/resources/{id}/redeploy`).
    Operator,
    /// Drift found under the `heal` policy.
    DriftHeal,
}

impl ForceCause {
    /// The stored text.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::DriftHeal => "drift_heal",
        }
    }

    /// Reads the stored text.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "operator" => Some(Self::Operator),
            "drift_heal" => Some(Self::DriftHeal),
            _ => None,
        }
    }
}

/// What to do with one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum ActionKind {
    /// Deploy for the first time.
    Create,
    /// Deploy a change.
    Update {
        /// Why the update happens.
        #[serde(flatten)]
        reason: UpdateReason,
    },
    /// Remove (the spec no longer declares it).
    Delete,
    /// Nothing to do.
    NoOp,
    /// Waiting for dependencies.
    Blocked {
        /// Ids waited on.
        on: Vec<String>,
    },
    /// The desired state is invalid; the deployed resource is left alone.
    Invalid {
        /// What went wrong.
        error: String,
    },
    /// Its repo could not be read; left alone, never deleted.
    Unknown,
}

/// One planned step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    /// Resource id.
    pub id: String,
    /// The resource's kind.
    pub kind: ResourceKind,
    /// Template name.
    pub template: String,
    /// Version after the action (the deployed one for deletes and unknowns).
    pub version: Version,
    /// Version deployed now, if any.
    pub deployed: Option<Version>,
    /// What to do.
    #[serde(flatten)]
    pub action: ActionKind,
}

/// A newer major exists for a resource's template: proposed, never deployed by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MajorProposal {
    /// Resource id.
    pub id: String,
    /// The template's name.
    pub template: String,
    /// Major followed now.
    pub current: u32,
    /// Newest registered major.
    pub available: u32,
}

/// The result of [`diff`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Ordered actions, one per resource (including no-ops).
    pub actions: Vec<Action>,
    /// Major upgrades available.
    pub proposals: Vec<MajorProposal>,
}

impl Plan {
    /// Actions that change something (create, update, delete).
    pub fn changes(&self) -> impl Iterator<Item = &Action> {
        self.actions.iter().filter(|a| {
            matches!(
                a.action,
                ActionKind::Create | ActionKind::Update { .. } | ActionKind::Delete
            )
        })
    }
}

/// What to do with one desired resource, given what is deployed for it.
fn action_for(want: &Desired, have: Option<&Deployed>) -> ActionKind {
    let rendered_hash = match (&want.state, have) {
        (DesiredState::Invalid { error }, _) => {
            return ActionKind::Invalid {
                error: error.clone(),
            };
        }
        (DesiredState::Blocked { on }, _) => return ActionKind::Blocked { on: on.clone() },
        (DesiredState::Ready { .. }, None) => return ActionKind::Create,
        (DesiredState::Ready { rendered_hash }, Some(_)) => rendered_hash,
    };
    let Some(have) = have else {
        return ActionKind::Create;
    };
    let (from, to) = (have.version, want.version);
    let reason = if have.template != want.template || from.major != to.major {
        UpdateReason::TemplateChange { from, to }
    } else if from.minor < to.minor {
        UpdateReason::MinorUpgrade { from, to }
    } else if from.minor > to.minor {
        UpdateReason::TemplateChange { from, to }
    } else if have.input_hash != want.input_hash {
        UpdateReason::SpecChange
    } else if &have.rendered_hash != rendered_hash {
        UpdateReason::Rerender
    } else {
        return ActionKind::NoOp;
    };
    ActionKind::Update { reason }
}

/// Labels as [`UpdateReason::ReleaseChanged`] the re-renders of resources whose release
/// changed under them: `changed` holds the (template, version) releases whose moved tag an
/// operator accepted. Their updates then go through the rollout gate like a minor upgrade,
/// instead of reaching every stage at once as a re-render would.
pub fn label_release_changes(plan: &mut Plan, changed: &BTreeSet<(String, Version)>) {
    if changed.is_empty() {
        return;
    }
    for a in &mut plan.actions {
        if let ActionKind::Update {
            reason: reason @ UpdateReason::Rerender,
        } = &mut a.action
            && a.deployed == Some(a.version)
            && changed.contains(&(a.template.clone(), a.version))
        {
            *reason = UpdateReason::ReleaseChanged { version: a.version };
        }
    }
}

/// Labels as [`UpdateReason::Rollback`] the template changes of resources `pinned` back to
/// an earlier minor of the same major (by an operator's pin or a quarantine), so that the
/// rollout gate orders them by stage like a minor upgrade.
pub fn label_rollbacks(plan: &mut Plan, pinned: &BTreeMap<String, Version>) {
    if pinned.is_empty() {
        return;
    }
    for a in &mut plan.actions {
        if let ActionKind::Update {
            reason: reason @ UpdateReason::TemplateChange { .. },
        } = &mut a.action
            && let UpdateReason::TemplateChange { from, to } = *reason
            && from.major == to.major
            && to < from
            && pinned.get(&a.id) == Some(&to)
        {
            *reason = UpdateReason::Rollback { from, to };
        }
    }
}

/// Turns the no-ops of resources with a pending deploy request (`forced`) into
/// [`UpdateReason::Forced`] updates. A resource that changes anyway keeps its own reason (the
/// request is satisfied by that deployment); one that is blocked, invalid or unknown stays
/// so: a request never deploys what the normal path would refuse.
pub fn force(plan: &mut Plan, forced: &BTreeMap<String, ForceCause>) {
    if forced.is_empty() {
        return;
    }
    for a in &mut plan.actions {
        if a.action == ActionKind::NoOp
            && let Some(&cause) = forced.get(&a.id)
        {
            a.action = ActionKind::Update {
                reason: UpdateReason::Forced { cause },
            };
        }
    }
}

/// Diffs desired against deployed. `unknown_repos` are repos that failed to fetch or parse;
/// `latest_major` is the newest registered major per template.
#[must_use]
pub fn diff<D: std::borrow::Borrow<Desired>>(
    desired: &[D],
    deployed: &[Deployed],
    unknown_repos: &BTreeSet<String>,
    latest_major: &BTreeMap<String, u32>,
) -> Plan {
    let deployed_by_id: BTreeMap<&str, &Deployed> =
        deployed.iter().map(|d| (d.id.as_str(), d)).collect();
    let desired_ids: BTreeSet<&str> = desired.iter().map(|d| d.borrow().id.as_str()).collect();
    let mut actions = Vec::new();
    let mut proposals = Vec::new();
    for want in desired {
        let want = want.borrow();
        let have = deployed_by_id.get(want.id.as_str()).copied();
        let action = action_for(want, have);
        // An invalid resource has no meaningful version: nothing to propose.
        if let Some(&latest) = latest_major.get(&want.template)
            && latest > want.version.major
            && !matches!(want.state, DesiredState::Invalid { .. })
        {
            proposals.push(MajorProposal {
                id: want.id.clone(),
                template: want.template.clone(),
                current: want.version.major,
                available: latest,
            });
        }
        actions.push(Action {
            id: want.id.clone(),
            kind: want.kind,
            template: want.template.clone(),
            version: want.version,
            deployed: have.map(|h| h.version),
            action,
        });
    }
    let mut deletes = Vec::new();
    for have in deployed {
        if desired_ids.contains(have.id.as_str()) {
            continue;
        }
        let action = if unknown_repos.contains(&have.repo) {
            ActionKind::Unknown
        } else {
            ActionKind::Delete
        };
        let a = Action {
            id: have.id.clone(),
            kind: have.kind,
            template: have.template.clone(),
            version: have.version,
            deployed: Some(have.version),
            action,
        };
        if a.action == ActionKind::Delete {
            deletes.push(a);
        } else {
            actions.push(a);
        }
    }
    actions.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
    deletes.sort_by(|a, b| (b.kind, &b.id).cmp(&(a.kind, &a.id)));
    actions.extend(deletes);
    proposals.sort_by(|a, b| a.id.cmp(&b.id));
    Plan { actions, proposals }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32) -> Version {
        Version { major, minor }
    }

    fn want(
        id: &str,
        kind: ResourceKind,
        version: Version,
        input: &str,
        rendered: &str,
    ) -> Desired {
        Desired {
            id: id.into(),
            kind,
            repo: "r".into(),
            template: "t".into(),
            version,
            input_hash: input.into(),
            state: DesiredState::Ready {
                rendered_hash: rendered.into(),
            },
        }
    }

    fn have(
        id: &str,
        kind: ResourceKind,
        version: Version,
        input: &str,
        rendered: &str,
    ) -> Deployed {
        Deployed {
            id: id.into(),
            kind,
            repo: "r".into(),
            template: "t".into(),
            version,
            input_hash: input.into(),
            rendered_hash: rendered.into(),
        }
    }

    fn kinds(plan: &Plan) -> Vec<(String, ActionKind)> {
        plan.actions
            .iter()
            .map(|a| (a.id.clone(), a.action.clone()))
            .collect()
    }

    use ResourceKind::{Component, Environment, Pipeline, ServiceInstance};

    #[test]
    fn a_request_turns_only_no_ops_into_forced_updates() {
        let desired = vec![
            want("same", Environment, v(1, 0), "i", "r"),
            want("changed", Environment, v(1, 0), "i2", "r2"),
            want("new", Environment, v(1, 0), "i", "r"),
            want("unasked", Environment, v(1, 0), "i", "r"),
        ];
        let deployed = vec![
            have("same", Environment, v(1, 0), "i", "r"),
            have("changed", Environment, v(1, 0), "i", "r"),
            have("unasked", Environment, v(1, 0), "i", "r"),
        ];
        let mut plan = diff(&desired, &deployed, &BTreeSet::new(), &BTreeMap::new());
        let forced: BTreeMap<String, ForceCause> = ["same", "changed", "new"]
            .into_iter()
            .map(|id| (id.to_string(), ForceCause::Operator))
            .collect();
        force(&mut plan, &forced);
        let got: BTreeMap<String, ActionKind> = kinds(&plan).into_iter().collect();
        assert_eq!(
            got["same"],
            ActionKind::Update {
                reason: UpdateReason::Forced {
                    cause: ForceCause::Operator
                }
            }
        );
        assert_eq!(
            got["changed"],
            ActionKind::Update {
                reason: UpdateReason::SpecChange
            }
        );
        assert_eq!(got["new"], ActionKind::Create);
        assert_eq!(got["unasked"], ActionKind::NoOp);
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            desired: Vec<Desired>,
            deployed: Vec<Deployed>,
            expect: Vec<(&'static str, ActionKind)>,
        }
        let cases = vec![
            Case {
                name: "create",
                desired: vec![want("e", Environment, v(1, 0), "i", "r")],
                deployed: vec![],
                expect: vec![("e", ActionKind::Create)],
            },
            Case {
                name: "noop",
                desired: vec![want("e", Environment, v(1, 0), "i", "r")],
                deployed: vec![have("e", Environment, v(1, 0), "i", "r")],
                expect: vec![("e", ActionKind::NoOp)],
            },
            Case {
                name: "spec change",
                desired: vec![want("e", Environment, v(1, 0), "i2", "r2")],
                deployed: vec![have("e", Environment, v(1, 0), "i", "r")],
                expect: vec![(
                    "e",
                    ActionKind::Update {
                        reason: UpdateReason::SpecChange,
                    },
                )],
            },
            Case {
                name: "minor upgrade wins over spec change",
                desired: vec![want("e", Environment, v(1, 2), "i2", "r2")],
                deployed: vec![have("e", Environment, v(1, 1), "i", "r")],
                expect: vec![(
                    "e",
                    ActionKind::Update {
                        reason: UpdateReason::MinorUpgrade {
                            from: v(1, 1),
                            to: v(1, 2),
                        },
                    },
                )],
            },
            Case {
                name: "major change from a merged PR",
                desired: vec![want("e", Environment, v(2, 0), "i", "r")],
                deployed: vec![have("e", Environment, v(1, 3), "i", "r")],
                expect: vec![(
                    "e",
                    ActionKind::Update {
                        reason: UpdateReason::TemplateChange {
                            from: v(1, 3),
                            to: v(2, 0),
                        },
                    },
                )],
            },
            Case {
                name: "rerender when outputs changed",
                desired: vec![want("e", Environment, v(1, 0), "i", "r2")],
                deployed: vec![have("e", Environment, v(1, 0), "i", "r")],
                expect: vec![(
                    "e",
                    ActionKind::Update {
                        reason: UpdateReason::Rerender,
                    },
                )],
            },
            Case {
                name: "delete",
                desired: vec![],
                deployed: vec![have("e", Environment, v(1, 0), "i", "r")],
                expect: vec![("e", ActionKind::Delete)],
            },
        ];
        for c in cases {
            let plan = diff(&c.desired, &c.deployed, &BTreeSet::new(), &BTreeMap::new());
            let got = kinds(&plan);
            let expect: Vec<(String, ActionKind)> = c
                .expect
                .into_iter()
                .map(|(i, k)| (i.to_string(), k))
                .collect();
            assert_eq!(got, expect, "case {}", c.name);
        }
    }

    #[test]
    fn order_is_env_component_instance_pipeline_then_deletes_reversed() {
        let desired = vec![
            want("p", Pipeline, v(1, 0), "i", "r"),
            want("s", ServiceInstance, v(1, 0), "i", "r"),
            want("c", Component, v(1, 0), "i", "r"),
            want("e", Environment, v(1, 0), "i", "r"),
        ];
        let deployed = vec![
            have("old-env", Environment, v(1, 0), "i", "r"),
            have("old-svc", ServiceInstance, v(1, 0), "i", "r"),
            have("old-pipe", Pipeline, v(1, 0), "i", "r"),
            have("old-comp", Component, v(1, 0), "i", "r"),
        ];
        let plan = diff(&desired, &deployed, &BTreeSet::new(), &BTreeMap::new());
        let ids: Vec<&str> = plan.actions.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "e", "c", "s", "p", "old-pipe", "old-svc", "old-comp", "old-env"
            ]
        );
        assert_eq!(plan.changes().count(), 8);
    }

    #[test]
    fn unknown_repo_never_deletes() {
        let deployed = vec![have("s", ServiceInstance, v(1, 0), "i", "r")];
        let unknown = BTreeSet::from(["r".to_string()]);
        let plan = diff::<Desired>(&[], &deployed, &unknown, &BTreeMap::new());
        assert_eq!(kinds(&plan), vec![("s".to_string(), ActionKind::Unknown)]);
        assert_eq!(plan.changes().count(), 0);
    }

    #[test]
    fn invalid_and_blocked_keep_what_is_deployed() {
        let mut bad = want("s", ServiceInstance, v(1, 0), "i", "r");
        bad.state = DesiredState::Invalid {
            error: "spec.yaml: instances[0].spec.port: too big".into(),
        };
        let mut blocked = want("t", ServiceInstance, v(1, 0), "i", "r");
        blocked.state = DesiredState::Blocked {
            on: vec!["environment/dev".into()],
        };
        let deployed = vec![have("s", ServiceInstance, v(1, 0), "i", "r")];
        let plan = diff(
            &[bad, blocked],
            &deployed,
            &BTreeSet::new(),
            &BTreeMap::new(),
        );
        assert!(matches!(plan.actions[0].action, ActionKind::Invalid { .. }));
        assert!(matches!(plan.actions[1].action, ActionKind::Blocked { .. }));
        assert_eq!(plan.changes().count(), 0);
    }

    #[test]
    fn newer_major_is_proposed_not_deployed() {
        let desired = vec![want("s", ServiceInstance, v(1, 2), "i", "r")];
        let deployed = vec![have("s", ServiceInstance, v(1, 2), "i", "r")];
        let latest = BTreeMap::from([("t".to_string(), 3)]);
        let plan = diff(&desired, &deployed, &BTreeSet::new(), &latest);
        assert_eq!(plan.actions[0].action, ActionKind::NoOp);
        assert_eq!(
            plan.proposals,
            vec![MajorProposal {
                id: "s".into(),
                template: "t".into(),
                current: 1,
                available: 3
            }]
        );
    }

    #[test]
    fn accepted_release_changes_relabel_rerenders_only() {
        let desired = vec![
            want("a", Environment, v(1, 1), "i", "r2"),
            want("b", Environment, v(1, 1), "i2", "r2"),
            want("c", Environment, v(1, 2), "i", "r2"),
        ];
        let deployed = vec![
            have("a", Environment, v(1, 1), "i", "r"),
            have("b", Environment, v(1, 1), "i", "r"),
            have("c", Environment, v(1, 1), "i", "r"),
        ];
        let mut plan = diff(&desired, &deployed, &BTreeSet::new(), &BTreeMap::new());
        let changed = BTreeSet::from([("t".to_string(), v(1, 1))]);
        label_release_changes(&mut plan, &changed);
        let reasons: Vec<(&str, &ActionKind)> = plan
            .actions
            .iter()
            .map(|a| (a.id.as_str(), &a.action))
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    "a",
                    &ActionKind::Update {
                        reason: UpdateReason::ReleaseChanged { version: v(1, 1) }
                    }
                ),
                (
                    "b",
                    &ActionKind::Update {
                        reason: UpdateReason::SpecChange
                    }
                ),
                (
                    "c",
                    &ActionKind::Update {
                        reason: UpdateReason::MinorUpgrade {
                            from: v(1, 1),
                            to: v(1, 2)
                        }
                    }
                ),
            ]
        );
    }
}
