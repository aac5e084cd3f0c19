//! `protond preview`'s policy, pure: given the desired state computed with and without a
//! candidate release, which resources would move to it ([`moving`]), the rendered diff and
//! the predicted `CloudFormation` effect of each changed logical resource per document
//! ([`documents`], through [`crate::impact::compare`]), identical impacts grouped and listed
//! by stage in rollout order ([`group`], [`by_stage`]), the schema impact ([`schema_impact`]:
//! specs the candidate makes invalid, new required inputs, changed defaults), and a change
//! set's verdict against the prediction ([`confirm`]). `report` writes the table and the
//! Markdown report.
//!
//! It must never perform I/O, call AWS, or write the store: the `preview` command
//! (`src/cli/preview.rs`) reads the repos, the store and AWS, and calls these.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::catalog::Bundle;
use crate::catalog::schema::InputKind;
use crate::desired::{DesiredSet, Resource, Snapshot};
use crate::impact::{Action, Effect, ResourceChange};
use crate::plan::{DesiredState, Version};
use crate::provision::Provisioning;
use crate::provision::cloudformation::ChangeSetChange;
use crate::spec::SpecFile;
use crate::state::ResourceRecord;

pub mod report;

/// Longest rendered diff kept per document, in bytes; a longer one is cut with a note.
pub const MAX_DIFF_BYTES: usize = 20_000;

/// The candidate release being previewed.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// The template.
    pub template: String,
    /// The version it would be tagged as (`1.3`).
    pub version: String,
    /// Where it was read from (a folder, or `<repo>@<ref>`).
    pub source: String,
    /// What was read: `bundle folder`, `template repo checkout` or `git ref`.
    pub read_as: String,
    /// For a git ref, the commit it names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// One rendered document of a resource that would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DocumentChange {
    /// The document's path in the bundle.
    pub path: String,
    /// Whether it is a `CloudFormation` template (only those get a per-resource prediction).
    pub cloudformation: bool,
    /// The predicted change of each logical resource (empty when none, or not predicted).
    pub changes: Vec<ResourceChange>,
    /// A unified diff of the rendered text, at most [`MAX_DIFF_BYTES`].
    pub diff: String,
    /// Why no prediction could be made (a template that does not parse).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One resource that would move to the candidate.
#[derive(Debug, Clone, Serialize)]
pub struct Moving {
    /// Its id.
    pub id: String,
    /// Its environment (its own name for an environment).
    pub environment: Option<String>,
    /// Its environment's stage, if any.
    pub stage: Option<String>,
    /// The version it runs; `None` for a resource the candidate would create.
    pub from: Option<String>,
    /// The candidate's version.
    pub to: String,
    /// Each rendered document that changes.
    pub documents: Vec<DocumentChange>,
    /// The index of its group in [`Preview::groups`].
    pub group: usize,
}

impl Moving {
    /// Whether the candidate would create it (no record).
    #[must_use]
    pub fn creates(&self) -> bool {
        self.from.is_none()
    }

    /// Every predicted resource change, over all documents.
    pub fn changes(&self) -> impl Iterator<Item = &ResourceChange> {
        self.documents.iter().flat_map(|d| &d.changes)
    }
}

/// Resources with an identical impact.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// `Table replaced (KeySchema); Queue added`.
    pub summary: String,
    /// How many resources.
    pub count: usize,
    /// Whether a change destroys a physical resource (a replacement or a removal).
    pub destroys: bool,
    /// Whether the resources would be created (rather than updated).
    pub creates: bool,
    /// The shared predicted changes.
    pub changes: Vec<ResourceChange>,
    /// The resources, in rollout order.
    pub resources: Vec<String>,
    /// How many of them per stage, in rollout order.
    pub stages: Vec<StageCount>,
}

/// A count in one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageCount {
    /// The stage (`(no stage)` for environments without one).
    pub stage: String,
    /// How many.
    pub count: usize,
}

/// The resources of one stage, in rollout order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// The stage (`(no stage)` for environments without one).
    pub stage: String,
    /// Its resources that would move.
    pub resources: Vec<String>,
}

/// A spec the candidate would make invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invalid {
    /// The resource.
    pub id: String,
    /// The error under the candidate.
    pub error: String,
}

/// An input the candidate requires that the release before it did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewRequired {
    /// `environment`, `service` or `pipeline`.
    pub kind: String,
    /// The input.
    pub input: String,
}

/// An input whose schema default changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DefaultChange {
    /// `environment`, `service` or `pipeline`.
    pub kind: String,
    /// The input.
    pub input: String,
    /// The default before (`null`: none).
    pub old: Option<Value>,
    /// The candidate's default (`null`: none).
    pub new: Option<Value>,
    /// The resources that would move and do not set the input: their value changes.
    pub resources: Vec<String>,
}

/// What the candidate's schema does to the specs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SchemaImpact {
    /// Specs that are valid now and would be invalid under the candidate.
    pub invalid: Vec<Invalid>,
    /// Inputs the candidate requires that the release before it did not.
    pub new_required: Vec<NewRequired>,
    /// Inputs whose default changes.
    pub changed_defaults: Vec<DefaultChange>,
}

/// What a change set said, against the prediction.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeSetVerdict {
    /// The resource.
    pub id: String,
    /// `confirmed`, `differs`, `no stack` or `error`.
    pub status: String,
    /// For `differs`, each difference; for `error`, why.
    pub details: Vec<String>,
    /// What the change set listed.
    pub aws: Vec<ChangeSetChange>,
}

/// The whole preview.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// The candidate.
    pub candidate: Candidate,
    /// Why the candidate would be rejected (the catalog's error); nothing else is computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// The resources that would move, in rollout order.
    pub resources: Vec<Moving>,
    /// Identical impacts, largest first.
    pub groups: Vec<Group>,
    /// The resources by stage, in rollout order.
    pub stages: Vec<Stage>,
    /// What the candidate's schema does to the specs.
    pub schema: SchemaImpact,
    /// `--change-sets`: what `CloudFormation` said per resource with a live stack.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub change_sets: Vec<ChangeSetVerdict>,
}

/// The label of a resource without a stage.
pub const NO_STAGE: &str = "(no stage)";

/// Whether resource `r` of the candidate set would move to (`template`, `version`): it would
/// run it, renders (or waits for outputs of resources not deployed, with nothing to diff),
/// and its record runs another version (or it has none).
fn moves(
    r: &Resource,
    records: &BTreeMap<&str, Version>,
    template: &str,
    version: Version,
) -> bool {
    r.desired.template == template
        && r.desired.version == version
        && matches!(
            r.desired.state,
            DesiredState::Ready { .. } | DesiredState::Blocked { .. }
        )
        && records.get(r.desired.id.as_str()) != Some(&version)
}

/// The resources of `candidate` (the desired state with the candidate release) that would
/// move to (`template`, `version`), each with its documents against `current` (the desired
/// state rendered on the versions the records run), in rollout order of `stage_order`.
/// `stages` maps environments to their stage. Their `group` is set by [`group`].
#[must_use]
pub fn moving(
    (candidate, current): (&DesiredSet, &DesiredSet),
    records: &[ResourceRecord],
    (template, version): (&str, Version),
    stages: &BTreeMap<String, String>,
    stage_order: &[String],
) -> Vec<Moving> {
    let deployed: BTreeMap<&str, Version> =
        records.iter().map(|r| (r.id.as_str(), r.version)).collect();
    let mut out: Vec<Moving> = candidate
        .resources
        .iter()
        .filter(|r| moves(r, &deployed, template, version))
        .map(|r| {
            let from = deployed.get(r.desired.id.as_str()).copied();
            let old: &[(String, String)] = match from {
                Some(_) => current
                    .resources
                    .iter()
                    .find(|c| c.desired.id == r.desired.id)
                    .map_or(&[], |c| c.documents.as_slice()),
                None => &[],
            };
            Moving {
                id: r.desired.id.clone(),
                environment: r.environment.clone(),
                stage: r.environment.as_ref().and_then(|e| stages.get(e)).cloned(),
                from: from.map(|v| v.to_string()),
                to: version.to_string(),
                documents: documents(old, &r.documents, r.provisioning),
                group: 0,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        stage_rank(a.stage.as_deref(), stage_order)
            .cmp(&stage_rank(b.stage.as_deref(), stage_order))
            .then_with(|| a.id.cmp(&b.id))
    });
    out
}

/// Where a stage comes in the rollout: configured stages in order, then the others by name,
/// then resources without a stage.
fn stage_rank<'a>(stage: Option<&'a str>, order: &[String]) -> (usize, Option<&'a str>) {
    match stage {
        Some(s) => (
            order.iter().position(|o| o == s).unwrap_or(order.len()),
            Some(s),
        ),
        None => (order.len() + 1, None),
    }
}

/// The documents that change from `old` to `new` (by path; a document only in one of them
/// is compared with an empty one), with their diff and, for `CloudFormation`, the predicted
/// change of each logical resource.
#[must_use]
pub fn documents(
    old: &[(String, String)],
    new: &[(String, String)],
    provisioning: Provisioning,
) -> Vec<DocumentChange> {
    let paths: BTreeSet<&str> = old.iter().chain(new).map(|(p, _)| p.as_str()).collect();
    let text = |docs: &'_ [(String, String)], p: &str| -> String {
        docs.iter()
            .find(|(q, _)| q == p)
            .map(|(_, t)| t.clone())
            .unwrap_or_default()
    };
    let cloudformation = provisioning == Provisioning::CloudFormation;
    paths
        .into_iter()
        .filter_map(|p| {
            let (o, n) = (text(old, p), text(new, p));
            if o == n {
                return None;
            }
            let (changes, error) = if cloudformation {
                predict(&o, &n)
            } else {
                (Vec::new(), None)
            };
            Some(DocumentChange {
                path: p.to_string(),
                cloudformation,
                changes,
                diff: unified_diff(&o, &n, p),
                error,
            })
        })
        .collect()
}

/// [`crate::impact::compare`], an empty old template meaning none.
fn predict(old: &str, new: &str) -> (Vec<ResourceChange>, Option<String>) {
    let old = if old.trim().is_empty() { "{}" } else { old };
    let new = if new.trim().is_empty() { "{}" } else { new };
    match crate::impact::compare(old, new) {
        Ok(changes) => (changes, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    }
}

/// A unified diff of two texts (three lines of context), cut at [`MAX_DIFF_BYTES`].
#[must_use]
pub fn unified_diff(old: &str, new: &str, path: &str) -> String {
    let diff = similar::TextDiff::configure()
        .timeout(std::time::Duration::from_secs(2))
        .diff_lines(old, new);
    let text = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string();
    cut(&text, MAX_DIFF_BYTES)
}

/// `text`, cut on a character boundary at `max` bytes with a note saying so.
#[must_use]
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n… (cut at {max} bytes of {})\n",
        &text[..end],
        text.len()
    )
}

/// What makes two impacts identical: each change's logical id, type, action, effect and
/// changed properties, and whether the resource is created.
type GroupKey = (bool, Vec<ResourceChange>);

/// Groups identical impacts (largest group first, then in rollout order of their first
/// resource), and sets each resource's `group`.
#[must_use]
pub fn group(resources: &mut [Moving], stage_order: &[String]) -> Vec<Group> {
    let mut keys: Vec<GroupKey> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, r) in resources.iter().enumerate() {
        let key = (r.creates(), r.changes().cloned().collect::<Vec<_>>());
        if let Some(g) = keys.iter().position(|k| *k == key) {
            members[g].push(i);
        } else {
            keys.push(key);
            members.push(vec![i]);
        }
    }
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&g| (std::cmp::Reverse(members[g].len()), members[g][0]));
    let mut groups = Vec::new();
    for (n, g) in order.into_iter().enumerate() {
        for &i in &members[g] {
            resources[i].group = n;
        }
        let mine: Vec<&Moving> = members[g].iter().map(|&i| &resources[i]).collect();
        let (creates, changes) = keys[g].clone();
        groups.push(Group {
            summary: summary(
                &changes,
                mine.iter().any(|m| !m.documents.is_empty()),
                creates,
            ),
            count: mine.len(),
            destroys: changes.iter().any(ResourceChange::destroys),
            creates,
            resources: mine.iter().map(|m| m.id.clone()).collect(),
            stages: stage_counts(&mine, stage_order),
            changes,
        });
    }
    groups
}

/// `Table replaced (KeySchema); Queue added`.
fn summary(changes: &[ResourceChange], rendered_changes: bool, creates: bool) -> String {
    if changes.is_empty() {
        return match (rendered_changes, creates) {
            (true, _) => "rendered files change, no CloudFormation resource changes".into(),
            (false, true) => {
                "not rendered yet: waits for the outputs of resources not deployed".into()
            }
            (false, false) => "no rendered change".into(),
        };
    }
    changes
        .iter()
        .map(|c| format!("{} {}", c.logical_id, c.summary()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// How many of `members` per stage, in rollout order.
fn stage_counts(members: &[&Moving], stage_order: &[String]) -> Vec<StageCount> {
    let mut counts: Vec<StageCount> = Vec::new();
    let mut sorted: Vec<&&Moving> = members.iter().collect();
    sorted.sort_by_key(|m| stage_rank(m.stage.as_deref(), stage_order));
    for m in sorted {
        let stage = m.stage.clone().unwrap_or_else(|| NO_STAGE.into());
        match counts.last_mut() {
            Some(c) if c.stage == stage => c.count += 1,
            _ => counts.push(StageCount { stage, count: 1 }),
        }
    }
    counts
}

/// The resources by stage, in rollout order (`resources` already is).
#[must_use]
pub fn by_stage(resources: &[Moving]) -> Vec<Stage> {
    let mut out: Vec<Stage> = Vec::new();
    for r in resources {
        let stage = r.stage.clone().unwrap_or_else(|| NO_STAGE.into());
        match out.last_mut() {
            Some(s) if s.stage == stage => s.resources.push(r.id.clone()),
            _ => out.push(Stage {
                stage,
                resources: vec![r.id.clone()],
            }),
        }
    }
    out
}

/// Each declared resource's inputs and their kind, by resource id, from the spec files.
#[must_use]
pub fn declared_inputs(snapshot: &Snapshot) -> BTreeMap<String, (InputKind, Value)> {
    let mut out = BTreeMap::new();
    for f in snapshot.spec_repos.iter().flat_map(|r| &r.files) {
        match &f.spec {
            Ok(SpecFile::Environment(e)) => {
                out.insert(
                    crate::desired::environment_id(&e.name),
                    (InputKind::Environment, e.inputs.value()),
                );
            }
            Ok(SpecFile::Service(s)) => {
                for i in &s.instances {
                    out.insert(
                        crate::desired::instance_id(&s.name, &i.name),
                        (InputKind::Service, i.inputs.value()),
                    );
                }
                if let Some(p) = &s.pipeline {
                    out.insert(
                        crate::desired::pipeline_id(&s.name),
                        (InputKind::Pipeline, p.clone()),
                    );
                }
            }
            _ => {}
        }
    }
    out
}

/// The candidate's schema impact: resources of (`template`, `version`) invalid in
/// `candidate` and not in `current`; inputs the candidate (`new`) requires that `previous`
/// (the release before it, if any) did not; and inputs whose default changes, with the
/// moving resources that do not set them (from `inputs`, see [`declared_inputs`]).
#[must_use]
pub fn schema_impact(
    (candidate, current): (&DesiredSet, &DesiredSet),
    (template, version): (&str, Version),
    (previous, new): (Option<&Bundle>, &Bundle),
    moving: &[Moving],
    inputs: &BTreeMap<String, (InputKind, Value)>,
) -> SchemaImpact {
    let invalid_now: BTreeSet<&str> = current
        .resources
        .iter()
        .filter(|r| matches!(r.desired.state, DesiredState::Invalid { .. }))
        .map(|r| r.desired.id.as_str())
        .collect();
    let invalid = candidate
        .resources
        .iter()
        .filter(|r| r.desired.template == template && r.desired.version == version)
        .filter_map(|r| match &r.desired.state {
            DesiredState::Invalid { error } if !invalid_now.contains(r.desired.id.as_str()) => {
                Some(Invalid {
                    id: r.desired.id.clone(),
                    error: error.clone(),
                })
            }
            _ => None,
        })
        .collect();
    let mut out = SchemaImpact {
        invalid,
        ..SchemaImpact::default()
    };
    for kind in [
        InputKind::Environment,
        InputKind::Service,
        InputKind::Pipeline,
    ] {
        input_changes(&mut out, kind, previous, new, moving, inputs);
    }
    out
}

/// [`schema_impact`]'s new required inputs and changed defaults of one input kind.
fn input_changes(
    out: &mut SchemaImpact,
    kind: InputKind,
    previous: Option<&Bundle>,
    new: &Bundle,
    moving: &[Moving],
    inputs: &BTreeMap<String, (InputKind, Value)>,
) {
    let before: BTreeMap<String, crate::catalog::schema::PropertyInfo> = previous
        .map(|b| b.schema.properties(kind))
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
    for p in new.schema.properties(kind) {
        let old = before.get(&p.name);
        if p.required && !old.is_some_and(|o| o.required) {
            out.new_required.push(NewRequired {
                kind: kind.to_string(),
                input: p.name.clone(),
            });
        }
        let Some(old) = old else { continue };
        if old.default == p.default {
            continue;
        }
        let resources = moving
            .iter()
            .filter(|m| {
                inputs
                    .get(&m.id)
                    .is_some_and(|(k, v)| *k == kind && v.get(&p.name).is_none())
            })
            .map(|m| m.id.clone())
            .collect();
        out.changed_defaults.push(DefaultChange {
            kind: kind.to_string(),
            input: p.name.clone(),
            old: old.default.clone(),
            new: p.default.clone(),
            resources,
        });
    }
}

/// The change-set action a predicted action is.
fn aws_action(a: Action) -> &'static str {
    match a {
        Action::Add => "Add",
        Action::Modify => "Modify",
        Action::Remove => "Remove",
    }
}

/// Whether a change set's `Replacement` agrees with a predicted effect (`Conditional` agrees
/// with a possible replacement; an unreported replacement agrees with anything).
fn replacement_agrees(predicted: Option<Effect>, aws: Option<&str>) -> bool {
    match aws {
        None | Some("") => true,
        Some("True") => matches!(predicted, Some(Effect::Replacement | Effect::MayReplace)),
        Some("Conditional") => predicted == Some(Effect::MayReplace),
        Some(_) => matches!(
            predicted,
            Some(Effect::NoInterruption | Effect::Interruption) | None
        ),
    }
}

/// Compares a change set's changes with the prediction for resource `id`: `confirmed` when
/// every logical resource has the same action (and a compatible replacement, where AWS
/// reports one), else `differs`, one line per difference.
#[must_use]
pub fn confirm(
    id: &str,
    predicted: &[ResourceChange],
    aws: Vec<ChangeSetChange>,
) -> ChangeSetVerdict {
    let ids: BTreeSet<&str> = predicted
        .iter()
        .map(|c| c.logical_id.as_str())
        .chain(aws.iter().map(|c| c.logical_id.as_str()))
        .collect();
    let mut details = Vec::new();
    for lid in ids {
        let p = predicted.iter().find(|c| c.logical_id == lid);
        let a = aws.iter().find(|c| c.logical_id == lid);
        let said = |a: &ChangeSetChange| match &a.replacement {
            Some(r) if !r.is_empty() => format!("{} (Replacement {r})", a.action),
            _ => a.action.clone(),
        };
        match (p, a) {
            (Some(p), Some(a))
                if aws_action(p.action) == a.action
                    && replacement_agrees(p.effect, a.replacement.as_deref()) => {}
            (Some(p), Some(a)) => details.push(format!(
                "differs: AWS says {lid} {}, predicted {}",
                said(a),
                p.summary()
            )),
            (Some(p), None) => details.push(format!(
                "differs: AWS lists no change of {lid}, predicted {}",
                p.summary()
            )),
            (None, Some(a)) => details.push(format!(
                "differs: AWS says {lid} {}, predicted no change",
                said(a)
            )),
            (None, None) => {}
        }
    }
    ChangeSetVerdict {
        id: id.to_string(),
        status: if details.is_empty() {
            "confirmed"
        } else {
            "differs"
        }
        .into(),
        details,
        aws,
    }
}

#[cfg(test)]
mod tests;
