//! Operator views shared by the CLI, the HTTP API and the status page: pure functions from
//! records already read (the plan, the store's [`Overview`], rollout progress, proposals) to
//! rows and text tables.
//!
//! Views never read the store, call AWS or log: callers read, then render.

pub mod quarantine;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::catalog::releases::Catalog;
use crate::desired::DesiredSet;
use crate::model::{DeploymentStatus, ResourceKind, Version, ViewStatus};
use crate::plan::{ActionKind, Plan, UpdateReason};
use crate::state::{DeploymentRecord, Overview, RolloutProgress, SelfManagedRecord};

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The plan as a readable table, followed by proposals, rejected releases and problems.
#[must_use]
pub fn plan_table(plan: &Plan, set: &DesiredSet, catalog: &Catalog) -> String {
    let mut rows = vec![vec![
        "ACTION".to_string(),
        "KIND".into(),
        "RESOURCE".into(),
        "TEMPLATE".into(),
        "VERSION".into(),
        "DETAIL".into(),
    ]];
    for a in &plan.actions {
        let (action, detail) = match &a.action {
            ActionKind::Create => ("create", String::new()),
            ActionKind::Update { reason } => (
                "update",
                match reason {
                    UpdateReason::SpecChange => "spec changed".to_string(),
                    UpdateReason::MinorUpgrade { from, to } => {
                        format!("minor upgrade {from} -> {to}")
                    }
                    UpdateReason::TemplateChange { from, to } => {
                        format!("template change {from} -> {to}")
                    }
                    UpdateReason::Relocate => {
                        "moves to another role, account or region (created there, then deleted here)"
                            .to_string()
                    }
                    UpdateReason::Rerender => {
                        "rendered output changed (dependency outputs)".to_string()
                    }
                    UpdateReason::ReleaseChanged { version } => {
                        format!("release {version} changed (accepted moved tag)")
                    }
                    UpdateReason::Rollback { from, to } => {
                        format!("rollback {from} -> {to}")
                    }
                    UpdateReason::Forced {
                        cause: crate::plan::ForceCause::Operator,
                    } => "redeploy asked for (unchanged)".to_string(),
                    UpdateReason::Forced {
                        cause: crate::plan::ForceCause::DriftHeal,
                    } => "drift found: healed by redeploying (unchanged)".to_string(),
                },
            ),
            ActionKind::Delete => (
                "delete",
                set.record_notes
                    .get(&a.id)
                    .cloned()
                    .unwrap_or_else(|| "no longer declared".to_string()),
            ),
            ActionKind::NoOp => ("no-op", String::new()),
            ActionKind::Blocked { on } => ("blocked", format!("waiting for {}", on.join(", "))),
            ActionKind::Invalid { error } => ("invalid", first_line(error).to_string()),
            ActionKind::Unknown => (
                "unknown",
                set.record_notes
                    .get(&a.id)
                    .cloned()
                    .unwrap_or_else(|| "its repo could not be read; kept as is".to_string()),
            ),
        };
        rows.push(vec![
            action.to_string(),
            a.kind.to_string(),
            a.id.clone(),
            a.template.clone(),
            a.version.to_string(),
            detail,
        ]);
    }
    let mut out = table(&rows);
    let changes = plan.changes().count();
    let _ = writeln!(
        out,
        "\n{changes} change(s), {} resource(s)",
        plan.actions.len()
    );
    if !plan.proposals.is_empty() {
        out.push_str("\nMajor versions available (proposed by pull request, never deployed by themselves):\n");
        for p in &plan.proposals {
            let _ = writeln!(
                out,
                "  {}: {} v{} -> v{}",
                p.id, p.template, p.current, p.available
            );
        }
    }
    if !catalog.rejected.is_empty() {
        out.push_str("\nRejected template releases:\n");
        for r in &catalog.rejected {
            let _ = writeln!(
                out,
                "  {} ({}): {}",
                r.tag,
                r.repo,
                r.reason.replace('\n', "\n    ")
            );
        }
    }
    if !catalog.ignored.is_empty() {
        out.push_str(
            "\nIgnored tags (they name a template but do not match the repo's tag pattern):\n",
        );
        for t in &catalog.ignored {
            let _ = writeln!(
                out,
                "  {} ({}): not a release; release tags look like {:?}, e.g. {}",
                t.tag, t.repo, t.pattern, t.example
            );
        }
    }
    let invalid: Vec<&ActionKind> = plan
        .actions
        .iter()
        .map(|a| &a.action)
        .filter(|a| matches!(a, ActionKind::Invalid { .. }))
        .collect();
    if !set.problems.is_empty() || !invalid.is_empty() {
        out.push_str("\nProblems:\n");
        for p in &set.problems {
            let _ = writeln!(out, "  {}", p.replace('\n', "\n  "));
        }
        for a in invalid {
            if let ActionKind::Invalid { error } = a {
                let _ = writeln!(out, "  {}", error.replace('\n', "\n  "));
            }
        }
    }
    out
}

/// The last deployment of a resource, for status.
#[derive(Debug, Clone, Serialize)]
pub struct LastDeployment {
    /// Deployment id.
    pub id: i64,
    /// create, update or delete.
    pub action: String,
    /// In progress, succeeded or failed.
    pub status: DeploymentStatus,
    /// The version it deploys.
    pub version: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended, once it has.
    pub finished_at: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// One row of `protond status`, `/api/v1/environments` and `/api/v1/services`: every
/// resource with a record, every resource whose history has not ended in a delete (a first
/// create in flight, failed, in conflict or waiting for `protond notify`), and every
/// resource the daemon's last cycle found invalid before it was ever deployed.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    /// Resource id.
    pub id: String,
    /// The resource's kind.
    pub kind: ResourceKind,
    /// The template it is deployed from (for a resource never deployed: the one its last
    /// deployment or its spec names).
    pub template: String,
    /// Deployed version; `null` when nothing is deployed yet.
    pub version: Option<String>,
    /// Where it stands (see [`ViewStatus`]).
    pub status: ViewStatus,
    /// A deployment of it runs now (omitted when not).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub in_flight: bool,
    /// What the daemon's last cycle found wrong with its desired state (an invalid spec, an
    /// unreadable repo); omitted when nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Newest registered minor of the same major, when newer.
    pub minor_available: Option<String>,
    /// Newest registered major, when newer.
    pub major_available: Option<u32>,
    /// Its newest deployment.
    pub last_deployment: Option<LastDeployment>,
    /// How its stack differs from live AWS, as the last drift check found (omitted when in
    /// sync or never checked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<crate::state::drift::DriftRecord>,
}

/// Rollouts as readable lines.
#[must_use]
pub fn rollouts_table(rows: &[RolloutProgress]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        return out;
    }
    out.push_str("\nRollouts (newest minor per major):\n");
    for r in rows {
        let state = match &r.halted {
            Some(reason) => format!("HALTED: {}", first_line(reason)),
            None if r.done == r.total => "complete".to_string(),
            None => "in progress".to_string(),
        };
        let _ = writeln!(
            out,
            "  {} {}: {}/{} resources, {state}",
            r.template, r.version, r.done, r.total
        );
    }
    out
}

/// The resources the change-set gate holds until an approval, as a section (empty when
/// none): the version waiting, the predicted effects, and how to approve.
#[must_use]
pub fn needs_approval_table(pending: &BTreeMap<String, crate::state::PendingApproval>) -> String {
    let mut out = String::new();
    if pending.is_empty() {
        return out;
    }
    out.push_str(
        "\nNeeds approval (the change-set gate; `protond approve <resource> <version>`):\n",
    );
    for (id, p) in pending {
        let _ = writeln!(
            out,
            "  {id}: {} {} needs approval (since {}): {}",
            p.template,
            p.version,
            p.since,
            p.changes.join("; ")
        );
    }
    out
}

/// `protond approvals`: what waits for an approval, then the approvals given.
#[must_use]
pub fn approvals_table(
    pending: &BTreeMap<String, crate::state::PendingApproval>,
    given: &[crate::gate::Approval],
) -> String {
    let mut out = needs_approval_table(pending);
    if pending.is_empty() {
        out.push_str("Nothing needs approval (as the daemon's last cycle found it).\n");
    }
    if given.is_empty() {
        out.push_str("\nNo approvals given.\n");
        return out;
    }
    out.push_str("\nApprovals given:\n");
    for a in given {
        let _ = writeln!(
            out,
            "  {} {}: {} at {}",
            a.resource,
            a.version,
            a.note(),
            a.at.as_deref().unwrap_or("-")
        );
    }
    out
}

/// Releases whose tag no longer names their recorded commit (`moved`: refused until
/// `protond release accept`; `withdrawn`: the tag was deleted), as a section (empty when
/// every release follows its tag).
#[must_use]
pub fn releases_table(versions: &[crate::state::TemplateVersionRecord]) -> String {
    let mut out = String::new();
    let odd: Vec<&crate::state::TemplateVersionRecord> = versions
        .iter()
        .filter(|v| v.registered && v.tag_state != crate::model::TagState::Current)
        .collect();
    if odd.is_empty() {
        return out;
    }
    out.push_str("\nReleases not following their tag:\n");
    for v in odd {
        let what = match (v.tag_state, &v.tag_commit) {
            (crate::model::TagState::Moved, Some(to)) => format!(
                "tag {} moved to {to}; stays on {} (protond release accept {}/v{})",
                v.tag, v.commit, v.template, v.version
            ),
            _ => format!(
                "tag {} deleted; kept on {} for the resources running it, not given to new ones",
                v.tag, v.commit
            ),
        };
        let _ = writeln!(
            out,
            "  {} {}: {}, {what}",
            v.template,
            v.version,
            v.tag_state.as_str()
        );
    }
    out
}

/// One customer-managed environment as `protond status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CustomerManagedRow {
    /// `environment/<name>`.
    pub id: String,
    /// The spec file declaring it.
    pub spec: String,
    /// Where its outputs come from: `spec`, `stack` or `stack+spec`.
    pub outputs_from: &'static str,
    /// The stack it names, if any.
    pub stack: Option<String>,
    /// Whether that stack's outputs could be read (`None` without a stack).
    pub stack_readable: Option<bool>,
    /// Why not, when it could not be read.
    pub error: Option<String>,
    /// The output keys instances see (the given ones and the stack's).
    pub outputs: Vec<String>,
}

/// The customer-managed environments the platform repos declare, with the stacks
/// `daemon::customer::read_stacks` read (from `snapshot.customer_stacks`).
#[must_use]
pub fn customer_managed_rows(snapshot: &crate::desired::Snapshot) -> Vec<CustomerManagedRow> {
    let mut rows: Vec<CustomerManagedRow> = snapshot
        .spec_repos
        .iter()
        .filter(|r| r.platform)
        .flat_map(|r| r.files.iter().map(move |f| (r, f)))
        .filter_map(|(repo, f)| {
            let Ok(crate::spec::SpecFile::Environment(e)) = &f.spec else {
                return None;
            };
            let c = e.customer_managed.as_ref()?;
            let read = snapshot.customer_stacks.get(&e.name);
            let mut outputs: Vec<String> = c.outputs.keys().cloned().collect();
            if let Some(Ok(o)) = read {
                outputs.extend(o.keys().cloned());
            }
            outputs.sort();
            outputs.dedup();
            Some(CustomerManagedRow {
                id: format!("environment/{}", e.name),
                spec: format!("{}:{}", repo.repo, f.path),
                outputs_from: match (&c.stack, c.outputs.is_empty()) {
                    (Some(_), true) => "stack",
                    (Some(_), false) => "stack+spec",
                    (None, _) => "spec",
                },
                stack: c.stack.clone(),
                stack_readable: c.stack.as_ref().map(|_| matches!(read, Some(Ok(_)))),
                error: match read {
                    Some(Err(e)) => Some(e.clone()),
                    None if c.stack.is_some() => Some("not read".into()),
                    _ => None,
                },
                outputs,
            })
        })
        .collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

/// `protond status`: the customer-managed environments (protond never deploys them), where
/// their outputs come from and whether the stack they name could be read.
#[must_use]
pub fn customer_managed_table(rows: &[CustomerManagedRow]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        return out;
    }
    out.push_str("\nCustomer-managed environments (never deployed by protond):\n");
    for r in rows {
        let source = match (&r.stack, r.outputs_from) {
            (Some(stack), "stack+spec") => format!("stack {stack} and the spec"),
            (Some(stack), _) => format!("stack {stack}"),
            (None, _) => "the spec".to_string(),
        };
        let readable = match (r.stack_readable, &r.error) {
            (Some(true), _) => ", stack readable".to_string(),
            (Some(false), Some(e)) => format!(", stack NOT readable: {e}"),
            (Some(false), None) => ", stack NOT readable".to_string(),
            (None, _) => String::new(),
        };
        let _ = writeln!(
            out,
            "  {} ({}): outputs from {source}{readable}; {} output(s){}",
            r.id,
            r.spec,
            r.outputs.len(),
            if r.outputs.is_empty() {
                String::new()
            } else {
                format!(": {}", r.outputs.join(", "))
            }
        );
    }
    out
}

/// Pipelines as a table section (empty when there are none).
#[must_use]
pub fn pipelines_table(rows: &[crate::provision::codepipeline::PipelineRow]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        return out;
    }
    out.push_str("\nPipelines:\n");
    for r in rows {
        let _ = writeln!(
            out,
            "  {} ({}): latest execution: {}",
            r.service,
            r.pipeline.as_deref().unwrap_or("no CodePipeline pipeline"),
            r.latest_execution
        );
        if let Some(s) = &r.last_start {
            let _ = writeln!(
                out,
                "    last start by protond after {}: {}{} at {}",
                s.triggered_by,
                s.result,
                s.message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default(),
                s.updated_at
            );
        }
    }
    out
}

/// Upgrade pull requests as a table section (empty when there are none).
#[must_use]
pub fn proposals_table(rows: &[crate::state::ProposalRecord]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        return out;
    }
    out.push_str("\nUpgrade pull requests:\n");
    for r in rows {
        let at = match (&r.url, r.number) {
            (Some(u), _) if !u.is_empty() => u.clone(),
            (_, Some(n)) => format!("#{n}"),
            _ => format!("branch {}", r.branch),
        };
        let _ = writeln!(
            out,
            "  {}:{} {} v{} -> v{}: {}{} ({at})",
            r.repo,
            r.path,
            r.template,
            r.from_major,
            r.to_major,
            r.state,
            if r.edited {
                ", edited by someone else"
            } else {
                ""
            }
        );
    }
    out
}

/// What the daemon's last cycle found about resources it could not plan: invalid desired
/// states and resources of unreadable repos, by resource id. Empty when no cycle ran (the
/// CLI reads only the store).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// The findings, by resource id.
    pub by_id: BTreeMap<String, Finding>,
}

/// One resource the last cycle could not plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The resource's kind.
    pub kind: ResourceKind,
    /// The template its spec (or record) names.
    pub template: String,
    /// [`ViewStatus::SpecInvalid`] or [`ViewStatus::Unknown`].
    pub status: ViewStatus,
    /// Why: the validation error, or that its repo could not be read.
    pub detail: String,
}

/// The detail of a resource whose repo could not be read.
const UNKNOWN_DETAIL: &str = "its repo could not be read; what is deployed is kept as is";

impl Findings {
    /// The invalid and unknown resources of a plan.
    #[must_use]
    pub fn from_plan(plan: &Plan) -> Self {
        let by_id = plan
            .actions
            .iter()
            .filter_map(|a| {
                let (status, detail) = match &a.action {
                    ActionKind::Invalid { error } => (ViewStatus::SpecInvalid, error.clone()),
                    ActionKind::Unknown => (ViewStatus::Unknown, UNKNOWN_DETAIL.to_string()),
                    _ => return None,
                };
                let finding = Finding {
                    kind: a.kind,
                    template: a.template.clone(),
                    status,
                    detail,
                };
                Some((a.id.clone(), finding))
            })
            .collect();
        Self { by_id }
    }

    /// Adds the customer-managed environments (id → where their outputs come from).
    #[must_use]
    pub fn with_customer_managed(mut self, environments: &BTreeMap<String, String>) -> Self {
        for (id, how) in environments {
            self.by_id.insert(
                id.clone(),
                Finding {
                    kind: ResourceKind::Environment,
                    template: String::new(),
                    status: ViewStatus::CustomerManaged,
                    detail: how.clone(),
                },
            );
        }
        self
    }
}

/// Where a resource with no record stands, from its newest deployment: `None` when that
/// deployment deleted it (or, inconsistently, deployed it without leaving a record).
fn unrecorded_status(last: &DeploymentRecord, waiting: &[SelfManagedRecord]) -> Option<ViewStatus> {
    match last.status {
        DeploymentStatus::InProgress => Some(
            if waiting
                .iter()
                .any(|w| w.resource_id == last.deployment.resource_id && w.deployment_id == last.id)
            {
                ViewStatus::WaitingForNotify
            } else {
                ViewStatus::Creating
            },
        ),
        DeploymentStatus::Failed if last.is_conflict() => Some(ViewStatus::Conflict),
        DeploymentStatus::Failed => Some(ViewStatus::CreateFailed),
        DeploymentStatus::Succeeded => None,
    }
}

/// Status of every managed resource: what is deployed, what update is available, and how
/// its newest deployment went. Resources that were never deployed are listed from their
/// history (see [`StatusRow`]).
#[must_use]
pub fn status(overview: &Overview) -> Vec<StatusRow> {
    status_with(overview, &Findings::default())
}

/// [`status`], with what the daemon's last cycle found: a resource it found invalid or
/// unknown shows that status (a conflict still shows `conflict`) and the finding as its
/// problem; an invalid resource never deployed nor attempted is listed too.
#[must_use]
pub fn status_with(overview: &Overview, findings: &Findings) -> Vec<StatusRow> {
    let mut registered: BTreeMap<&str, Vec<Version>> = BTreeMap::new();
    for v in overview.template_versions.iter().filter(|v| v.registered) {
        registered
            .entry(v.template.as_str())
            .or_default()
            .push(v.version);
    }
    // Recorded resources in the store's order (by id), and the others by id.
    let mut recorded: Vec<StatusRow> = Vec::new();
    for r in &overview.resources {
        let known = registered.get(r.template.as_str());
        let minor_available = known
            .and_then(|vs| vs.iter().filter(|v| v.major == r.version.major).max())
            .filter(|v| **v > r.version)
            .map(ToString::to_string);
        let major_available = known
            .and_then(|vs| vs.iter().map(|v| v.major).max())
            .filter(|m| *m > r.version.major);
        recorded.push(StatusRow {
            id: r.id.clone(),
            kind: r.kind,
            template: r.template.clone(),
            version: Some(r.version.to_string()),
            status: r.status.into(),
            in_flight: false,
            problem: None,
            minor_available,
            major_available,
            last_deployment: None,
            drift: Vec::new(),
        });
    }
    let position: BTreeMap<String, usize> = recorded
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i))
        .collect();
    let mut unrecorded: BTreeMap<String, StatusRow> = BTreeMap::new();
    for (id, d) in &overview.last_deployments {
        let row = if let Some(&i) = position.get(id) {
            &mut recorded[i]
        } else {
            let Some(status) = unrecorded_status(d, &overview.waiting) else {
                continue;
            };
            unrecorded.entry(id.clone()).or_insert(StatusRow {
                id: id.clone(),
                kind: d.deployment.kind,
                template: d.deployment.template.clone(),
                version: None,
                status,
                in_flight: false,
                problem: None,
                minor_available: None,
                major_available: None,
                last_deployment: None,
                drift: Vec::new(),
            })
        };
        row.in_flight = d.status == DeploymentStatus::InProgress;
        row.last_deployment = Some(LastDeployment {
            id: d.id,
            action: d.deployment.action.to_string(),
            status: d.status,
            version: d.deployment.to_version.to_string(),
            started_at: d.started_at.clone(),
            finished_at: d.finished_at.clone(),
            error: d.error.clone(),
        });
    }
    for (id, f) in &findings.by_id {
        let row = if let Some(&i) = position.get(id) {
            &mut recorded[i]
        } else if let Some(row) = unrecorded.get_mut(id) {
            row
        } else if matches!(
            f.status,
            ViewStatus::SpecInvalid | ViewStatus::CustomerManaged
        ) {
            unrecorded.entry(id.clone()).or_insert(StatusRow {
                id: id.clone(),
                kind: f.kind,
                template: f.template.clone(),
                version: None,
                status: f.status,
                in_flight: false,
                problem: None,
                minor_available: None,
                major_available: None,
                last_deployment: None,
                drift: Vec::new(),
            })
        } else {
            // Unknown is only ever said of what is recorded.
            continue;
        };
        if row.status != ViewStatus::Conflict {
            row.status = f.status;
        }
        // A customer-managed environment is no problem: its status says all.
        if f.status != ViewStatus::CustomerManaged {
            row.problem = Some(f.detail.clone());
        }
    }
    merge_by_id(recorded, unrecorded.into_values().collect())
}

/// Adds what the store records as drifted to each row (see [`StatusRow::drift`]).
#[must_use]
pub fn with_drift(
    mut rows: Vec<StatusRow>,
    drift: &BTreeMap<String, Vec<crate::state::drift::DriftRecord>>,
) -> Vec<StatusRow> {
    for row in &mut rows {
        if let Some(d) = drift.get(&row.id) {
            row.drift.clone_from(d);
        }
    }
    rows
}

/// [`Findings`] from what the daemon's last cycle recorded in the store (the CLI's view of
/// invalid specs: `protond status` runs in another process).
#[must_use]
pub fn findings_from_store(
    recorded: &BTreeMap<String, crate::state::drift::SpecFinding>,
) -> Findings {
    Findings {
        by_id: recorded
            .iter()
            .map(|(id, f)| {
                (
                    id.clone(),
                    Finding {
                        kind: f.kind,
                        template: f.template.clone(),
                        status: ViewStatus::SpecInvalid,
                        detail: f.detail.clone(),
                    },
                )
            })
            .collect(),
    }
}

/// The drift of a row in one line: `drifted (missing, template)`; empty when in sync.
#[must_use]
pub fn drift_label(row: &StatusRow) -> String {
    if row.drift.is_empty() {
        return String::new();
    }
    let kinds: Vec<&str> = row.drift.iter().map(|d| d.kind.as_str()).collect();
    format!("drifted ({})", kinds.join(", "))
}

/// Merges two lists of rows, each kept in its order, taking the smaller id first: sorted
/// lists give a sorted list.
fn merge_by_id(a: Vec<StatusRow>, b: Vec<StatusRow>) -> Vec<StatusRow> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    loop {
        let take_b = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => y.id < x.id,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let next = if take_b { b.next() } else { a.next() };
        match next {
            Some(row) => out.push(row),
            None => return out,
        }
    }
}

/// The status cell of the table and the page: the status, and whether a deployment runs.
#[must_use]
pub fn status_label(row: &StatusRow) -> String {
    let label = if row.in_flight
        && row.status != ViewStatus::Creating
        && row.status != ViewStatus::WaitingForNotify
    {
        format!("{}, in flight", row.status.label())
    } else {
        row.status.label().to_string()
    };
    if row.drift.is_empty() {
        label
    } else {
        format!("{label}, {}", drift_label(row))
    }
}

/// Status as a readable table.
#[must_use]
pub fn status_table(rows: &[StatusRow]) -> String {
    if rows.is_empty() {
        return "No resources deployed yet.\n".into();
    }
    let mut t = vec![vec![
        "RESOURCE".to_string(),
        "TEMPLATE".into(),
        "VERSION".into(),
        "UPDATE AVAILABLE".into(),
        "STATUS".into(),
        "LAST DEPLOYMENT".into(),
    ]];
    for r in rows {
        let mut update = Vec::new();
        if let Some(m) = &r.minor_available {
            update.push(format!("minor {m}"));
        }
        if let Some(m) = r.major_available {
            update.push(format!("major v{m}"));
        }
        let mut last = r.last_deployment.as_ref().map_or_else(String::new, |d| {
            let mut s = format!(
                "#{} {} {} {}",
                d.id,
                d.action,
                d.status,
                d.finished_at.as_deref().unwrap_or(&d.started_at)
            );
            if let Some(e) = &d.error {
                let _ = write!(s, ": {}", first_line(e));
            }
            s
        });
        if let Some(p) = &r.problem {
            if !last.is_empty() {
                last.push_str("; ");
            }
            last.push_str(first_line(p));
        }
        for d in &r.drift {
            if !last.is_empty() {
                last.push_str("; ");
            }
            let _ = write!(last, "drift {}: {}", d.kind, first_line(&d.detail));
        }
        t.push(vec![
            r.id.clone(),
            r.template.clone(),
            r.version.clone().unwrap_or_else(|| "-".into()),
            if update.is_empty() {
                "-".into()
            } else {
                update.join(", ")
            },
            status_label(r),
            last,
        ]);
    }
    table(&t)
}

/// Operator holds (`protond hold`) and pins (`protond rollback --to`) as a section: who set
/// each, when it ends (holds) or what it holds on (pins); empty when there are none.
#[must_use]
pub fn holds_table(
    holds: &[crate::plan::holds::Hold],
    pins: &[crate::state::PinRecord],
    now: std::time::SystemTime,
) -> String {
    let mut out = String::new();
    if !holds.is_empty() {
        out.push_str("\nHolds (`protond unhold <target>` lifts one):\n");
        for h in holds {
            let what = if h.all {
                "every change"
            } else {
                "version moves"
            };
            let state = if h.active(now) { "until" } else { "ended" };
            let _ = writeln!(
                out,
                "  {}: {what}, {state} {}, by {} at {}: {}",
                h.target,
                crate::plan::holds::rfc3339(h.until),
                h.by,
                h.set_at,
                first_line(&h.reason)
            );
        }
    }
    if !pins.is_empty() {
        out.push_str("\nPins (`protond unpin <target>` follows new minors again):\n");
        for p in pins {
            let target = if p.target_kind == "resource" {
                p.target_name.clone()
            } else {
                format!("{}:{}", p.target_kind, p.target_name)
            };
            let _ = writeln!(
                out,
                "  {target}: {} {}, by {} at {}",
                p.template.as_deref().unwrap_or("any template"),
                p.version,
                p.by,
                p.set_at
            );
        }
    }
    out
}

/// Holds and pins as JSON (`protond holds --output json`, `protond status`): each hold with
/// `active` at `now`.
#[must_use]
pub fn holds_json(
    holds: &[crate::plan::holds::Hold],
    pins: &[crate::state::PinRecord],
    now: std::time::SystemTime,
) -> serde_json::Value {
    let holds: Vec<serde_json::Value> = holds
        .iter()
        .map(|h| {
            serde_json::json!({
                "target": h.target.to_string(),
                "all": h.all,
                "until": crate::plan::holds::rfc3339(h.until),
                "active": h.active(now),
                "reason": h.reason,
                "by": h.by,
                "set_at": h.set_at,
            })
        })
        .collect();
    serde_json::json!({ "holds": holds, "pins": pins })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeploymentAction, ResourceStatus};
    use crate::plan::Action;
    use crate::state::{NewDeployment, ResourceRecord, TemplateVersionRecord};

    fn version(major: u32, minor: u32) -> Version {
        Version { major, minor }
    }

    fn resource(
        id: &str,
        kind: ResourceKind,
        v: Version,
        status: ResourceStatus,
    ) -> ResourceRecord {
        ResourceRecord {
            id: id.into(),
            kind,
            repo: "platform".into(),
            environment: Some("dev".into()),
            template: "web".into(),
            version: v,
            input_hash: "i".into(),
            rendered_hash: "r".into(),
            outputs: crate::state::Outputs::default(),
            status,
            spec_commit: None,
            updated_at: String::new(),
            placement: crate::model::Placement::default(),
        }
    }

    fn registered(minor_versions: &[(u32, u32)]) -> Vec<TemplateVersionRecord> {
        minor_versions
            .iter()
            .map(|&(major, minor)| TemplateVersionRecord {
                tag_state: crate::model::TagState::Current,
                tag_commit: None,
                template: "web".into(),
                version: version(major, minor),
                kind: "service".into(),
                repo: "platform".into(),
                tag: format!("web/v{major}.{minor}"),
                commit: "c".into(),
                registered: true,
                reason: None,
                release_notes: None,
            })
            .collect()
    }

    #[test]
    fn status_rows_show_updates_and_the_last_deployment() {
        let failed = resource(
            "service_instance/a/a-dev",
            ResourceKind::ServiceInstance,
            version(1, 0),
            ResourceStatus::Failed,
        );
        let current = resource(
            "environment/dev",
            ResourceKind::Environment,
            version(2, 0),
            ResourceStatus::Deployed,
        );
        let last = DeploymentRecord {
            id: 4,
            deployment: NewDeployment {
                resource_id: failed.id.clone(),
                kind: failed.kind,
                repo: failed.repo.clone(),
                environment: None,
                action: DeploymentAction::Update,
                reason: None,
                template: "web".into(),
                from_version: Some(version(1, 0)),
                to_version: version(1, 1),
                input_hash: "i".into(),
                rendered_hash: "r".into(),
                spec_commit: None,
                placement: crate::model::Placement::default(),
            },
            status: DeploymentStatus::Failed,
            error: Some("boom\nmore".into()),
            retryable: false,
            started_at: "t0".into(),
            finished_at: Some("t1".into()),
        };
        let overview = Overview {
            resources: vec![failed.clone(), current],
            template_versions: registered(&[(1, 0), (1, 1), (2, 0)]),
            last_deployments: BTreeMap::from([(failed.id.clone(), last)]),
            waiting: Vec::new(),
        };
        let rows = status(&overview);
        assert_eq!(rows[0].minor_available.as_deref(), Some("1.1"));
        assert_eq!(rows[0].major_available, Some(2));
        assert_eq!(
            (rows[1].minor_available.as_deref(), rows[1].major_available),
            (None, None)
        );
        assert_eq!(
            serde_json::to_value(&rows[0]).expect("json"),
            serde_json::json!({
                "id": "service_instance/a/a-dev",
                "kind": "service_instance",
                "template": "web",
                "version": "1.0",
                "status": "failed",
                "minor_available": "1.1",
                "major_available": 2,
                "last_deployment": {
                    "id": 4, "action": "update", "status": "failed", "version": "1.1",
                    "started_at": "t0", "finished_at": "t1", "error": "boom\nmore"
                }
            })
        );
        let table = status_table(&rows);
        assert!(
            table.contains("minor 1.1, major v2  failed    #4 update failed t1: boom\n"),
            "{table}"
        );
    }

    /// The newest deployment of `id`: `action`, ended as `status` with `error`.
    fn history(
        id: &str,
        kind: ResourceKind,
        deployment: i64,
        action: DeploymentAction,
        status: DeploymentStatus,
        error: Option<&str>,
    ) -> (String, DeploymentRecord) {
        let record = DeploymentRecord {
            id: deployment,
            deployment: NewDeployment {
                resource_id: id.into(),
                kind,
                repo: "platform".into(),
                environment: None,
                action,
                reason: None,
                template: "web".into(),
                from_version: None,
                to_version: version(1, 0),
                input_hash: "i".into(),
                rendered_hash: "r".into(),
                spec_commit: None,
                placement: crate::model::Placement::default(),
            },
            status,
            error: error.map(Into::into),
            retryable: false,
            started_at: "t0".into(),
            finished_at: (status != DeploymentStatus::InProgress).then(|| "t1".into()),
        };
        (id.into(), record)
    }

    const CONFLICT: &str = "stack x is not protond's environment/taken of installation \"a\": its tags say protond:resource=none, protond:installation=none. protond leaves it alone. If it belongs to someone else, give the resource another name";

    /// Records for two resources and history for seven: an update in flight, a first
    /// create in flight, one waiting for `protond notify`, one failed, one in conflict, one
    /// deleted, and a deleted-then-recreated one.
    fn fleet() -> Overview {
        use DeploymentAction::{Create, Delete, Update};
        use DeploymentStatus::{Failed, InProgress, Succeeded};
        use ResourceKind::{Environment, ServiceInstance};
        Overview {
            resources: vec![
                resource(
                    "environment/dev",
                    Environment,
                    version(1, 0),
                    ResourceStatus::Deployed,
                ),
                resource(
                    "service_instance/a/a-dev",
                    ServiceInstance,
                    version(1, 0),
                    ResourceStatus::Failed,
                ),
            ],
            template_versions: registered(&[(1, 0), (1, 1)]),
            last_deployments: BTreeMap::from([
                history("environment/dev", Environment, 10, Update, InProgress, None),
                history(
                    "service_instance/a/a-dev",
                    ServiceInstance,
                    11,
                    Update,
                    Failed,
                    Some("update broke"),
                ),
                history("environment/new", Environment, 12, Create, InProgress, None),
                history("environment/tf", Environment, 13, Create, InProgress, None),
                history(
                    "environment/broken",
                    Environment,
                    14,
                    Create,
                    Failed,
                    Some("NoSuchResource\nmore"),
                ),
                history(
                    "environment/taken",
                    Environment,
                    15,
                    Create,
                    Failed,
                    Some(CONFLICT),
                ),
                history("environment/gone", Environment, 16, Delete, Succeeded, None),
            ]),
            waiting: vec![SelfManagedRecord {
                resource_id: "environment/tf".into(),
                deployment_id: 13,
                folder: "tf".into(),
                branch: "protond/deploy/environment/tf".into(),
                number: Some(1),
                url: None,
                state: "waiting".into(),
                updated_at: "t0".into(),
            }],
        }
    }

    fn by_id<'a>(rows: &'a [StatusRow], id: &str) -> &'a StatusRow {
        rows.iter().find(|r| r.id == id).expect(id)
    }

    #[test]
    fn every_resource_with_a_record_or_a_live_history_is_listed() {
        let rows = status(&fleet());
        let listed: Vec<(&str, ViewStatus, bool)> = rows
            .iter()
            .map(|r| (r.id.as_str(), r.status, r.in_flight))
            .collect();
        assert_eq!(
            listed,
            [
                ("environment/broken", ViewStatus::CreateFailed, false),
                ("environment/dev", ViewStatus::Deployed, true),
                ("environment/new", ViewStatus::Creating, true),
                ("environment/taken", ViewStatus::Conflict, false),
                ("environment/tf", ViewStatus::WaitingForNotify, true),
                ("service_instance/a/a-dev", ViewStatus::Failed, false),
            ],
            "sorted by id; the deleted resource is not listed"
        );
        let broken = by_id(&rows, "environment/broken");
        assert_eq!(
            serde_json::to_value(broken).expect("json"),
            serde_json::json!({
                "id": "environment/broken",
                "kind": "environment",
                "template": "web",
                "version": null,
                "status": "create_failed",
                "minor_available": null,
                "major_available": null,
                "last_deployment": {
                    "id": 14, "action": "create", "status": "failed", "version": "1.0",
                    "started_at": "t0", "finished_at": "t1", "error": "NoSuchResource\nmore"
                }
            })
        );
        let dev = serde_json::to_value(by_id(&rows, "environment/dev")).expect("json");
        assert_eq!(
            (&dev["status"], &dev["in_flight"]),
            (&serde_json::json!("deployed"), &serde_json::json!(true))
        );
        let table = status_table(&rows);
        // Columns compared with single spaces.
        let lines: Vec<String> = table
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        for line in [
            "environment/broken web - - create failed #14 create failed t1: NoSuchResource",
            "environment/dev web 1.0 minor 1.1 deployed, in flight #10 update in_progress t0",
            "environment/new web - - creating #12 create in_progress t0",
            "environment/taken web - - conflict #15 create failed t1: stack x",
            "environment/tf web - - waiting for notify #13 create in_progress t0",
        ] {
            assert!(lines.iter().any(|l| l.starts_with(line)), "{line}\n{table}");
        }
        assert!(!table.contains("environment/gone"), "{table}");
    }

    #[test]
    fn a_create_failed_before_stays_listed_once_a_new_attempt_runs() {
        let mut overview = fleet();
        let (id, retry) = history(
            "environment/broken",
            ResourceKind::Environment,
            20,
            DeploymentAction::Create,
            DeploymentStatus::InProgress,
            None,
        );
        overview.last_deployments.insert(id, retry);
        // A succeeded create without a record (never left by the store) is not invented.
        let (id, odd) = history(
            "environment/odd",
            ResourceKind::Environment,
            21,
            DeploymentAction::Create,
            DeploymentStatus::Succeeded,
            None,
        );
        overview.last_deployments.insert(id, odd);
        let rows = status(&overview);
        assert_eq!(
            by_id(&rows, "environment/broken").status,
            ViewStatus::Creating
        );
        assert!(rows.iter().all(|r| r.id != "environment/odd"));
    }

    #[test]
    fn the_last_cycle_s_findings_show_invalid_and_unknown_resources() {
        let action = |id: &str, kind, action| Action {
            id: id.into(),
            kind,
            template: "web".into(),
            version: version(1, 0),
            deployed: None,
            action,
        };
        let plan = Plan {
            actions: vec![
                action(
                    "environment/dev",
                    ResourceKind::Environment,
                    ActionKind::Unknown,
                ),
                action(
                    "environment/fresh",
                    ResourceKind::Environment,
                    ActionKind::Invalid {
                        error: "unknown input size\nmore".into(),
                    },
                ),
                action(
                    "environment/taken",
                    ResourceKind::Environment,
                    ActionKind::Invalid {
                        error: "bad".into(),
                    },
                ),
                action(
                    "environment/broken",
                    ResourceKind::Environment,
                    ActionKind::Invalid {
                        error: "still bad".into(),
                    },
                ),
                action(
                    "environment/ghost",
                    ResourceKind::Environment,
                    ActionKind::Unknown,
                ),
                action(
                    "service_instance/a/a-dev",
                    ResourceKind::ServiceInstance,
                    ActionKind::NoOp,
                ),
            ],
            proposals: Vec::new(),
        };
        let findings = Findings::from_plan(&plan);
        assert_eq!(findings.by_id.len(), 5);
        let rows = status_with(&fleet(), &findings);
        let dev = by_id(&rows, "environment/dev");
        assert_eq!(
            (dev.status, dev.version.as_deref()),
            (ViewStatus::Unknown, Some("1.0"))
        );
        assert_eq!(dev.problem.as_deref(), Some(UNKNOWN_DETAIL));
        let fresh = by_id(&rows, "environment/fresh");
        assert_eq!(
            (fresh.status, fresh.version.as_deref()),
            (ViewStatus::SpecInvalid, None)
        );
        assert!(fresh.last_deployment.is_none());
        assert_eq!(
            serde_json::to_value(fresh).expect("json")["problem"],
            "unknown input size\nmore"
        );
        assert_eq!(
            by_id(&rows, "environment/taken").status,
            ViewStatus::Conflict,
            "a conflict stays one"
        );
        assert_eq!(
            by_id(&rows, "environment/broken").status,
            ViewStatus::SpecInvalid
        );
        assert!(
            rows.iter().all(|r| r.id != "environment/ghost"),
            "unknown is said of records only"
        );
        let table = status_table(&rows);
        assert!(
            table.lines().any(|l| l.starts_with("environment/fresh")
                && l.contains("spec invalid")
                && l.ends_with("unknown input size")),
            "{table}"
        );
        let counts = rows
            .iter()
            .filter(|r| r.status == ViewStatus::SpecInvalid)
            .count();
        assert_eq!(counts, 2);
    }
}
