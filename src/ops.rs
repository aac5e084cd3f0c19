//! Operator views shared by the CLI and the HTTP API: the plan table, and the status of
//! every managed resource.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::catalog::releases::Catalog;
use crate::desired::DesiredSet;
use crate::plan::{ActionKind, Plan, UpdateReason, Version};
use crate::state::{StateError, Store};

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
                    UpdateReason::Rerender => {
                        "rendered output changed (dependency outputs)".to_string()
                    }
                },
            ),
            ActionKind::Delete => ("delete", "no longer declared".to_string()),
            ActionKind::NoOp => ("no-op", String::new()),
            ActionKind::Blocked { on } => ("blocked", format!("waiting for {}", on.join(", "))),
            ActionKind::Invalid { error } => ("invalid", first_line(error).to_string()),
            ActionKind::Unknown => (
                "unknown",
                "its repo could not be read; kept as is".to_string(),
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
    /// in_progress, succeeded or failed.
    pub status: String,
    /// Version deployed.
    pub version: String,
    /// When it started.
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One row of `protond status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    /// Resource id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Template.
    pub template: String,
    /// Deployed version.
    pub version: String,
    /// Resource status.
    pub status: String,
    /// Newest registered minor of the same major, when newer.
    pub minor_available: Option<String>,
    /// Newest registered major, when newer.
    pub major_available: Option<u32>,
    /// Last deployment.
    pub last_deployment: Option<LastDeployment>,
}

/// Progress of the newest minor of a template major across its resources.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutRow {
    /// Template.
    pub template: String,
    /// The newest registered minor of that major.
    pub version: String,
    /// Resources on it.
    pub done: usize,
    /// Resources on that major.
    pub total: usize,
    /// Whether the rollout is halted, and why.
    pub halted: Option<String>,
}

/// Rollout progress per template major, from the state store alone.
pub async fn rollouts(store: &Store) -> Result<Vec<RolloutRow>, StateError> {
    let decisions = store.rollouts().await?;
    let versions = store.template_versions().await?;
    let resources = store.resources().await?;
    let mut newest: BTreeMap<(String, u32), Version> = BTreeMap::new();
    for v in versions.iter().filter(|v| v.registered) {
        let e = newest
            .entry((v.template.clone(), v.version.major))
            .or_insert(v.version);
        if v.version > *e {
            *e = v.version;
        }
    }
    let mut rows = Vec::new();
    for ((template, major), version) in newest {
        let on_major: Vec<_> = resources
            .iter()
            .filter(|r| r.template == template && r.version.major == major)
            .collect();
        if on_major.is_empty() {
            continue;
        }
        let halted = decisions
            .get(&(template.clone(), version))
            .filter(|(h, _)| *h)
            .map(|(_, reason)| reason.clone());
        rows.push(RolloutRow {
            done: on_major.iter().filter(|r| r.version == version).count(),
            total: on_major.len(),
            template,
            version: version.to_string(),
            halted,
        });
    }
    Ok(rows)
}

/// Rollouts as readable lines.
#[must_use]
pub fn rollouts_table(rows: &[RolloutRow]) -> String {
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

/// Status of every managed resource, from the state store alone.
pub async fn status(store: &Store) -> Result<Vec<StatusRow>, StateError> {
    let versions = store.template_versions().await?;
    let mut registered: BTreeMap<&str, Vec<Version>> = BTreeMap::new();
    for v in versions.iter().filter(|v| v.registered) {
        registered
            .entry(v.template.as_str())
            .or_default()
            .push(v.version);
    }
    let mut rows = Vec::new();
    for r in store.resources().await? {
        let known = registered.get(r.template.as_str());
        let minor_available = known
            .and_then(|vs| vs.iter().filter(|v| v.major == r.version.major).max())
            .filter(|v| **v > r.version)
            .map(ToString::to_string);
        let major_available = known
            .and_then(|vs| vs.iter().map(|v| v.major).max())
            .filter(|m| *m > r.version.major);
        let last = store
            .deployments(Some(&r.id), 1)
            .await?
            .into_iter()
            .next()
            .map(|d| LastDeployment {
                id: d.id,
                action: d.deployment.action,
                status: d.status,
                version: d.deployment.to_version.to_string(),
                started_at: d.started_at,
                finished_at: d.finished_at,
                error: d.error,
            });
        rows.push(StatusRow {
            id: r.id,
            kind: r.kind.to_string(),
            template: r.template,
            version: r.version.to_string(),
            status: r.status,
            minor_available,
            major_available,
            last_deployment: last,
        });
    }
    Ok(rows)
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
        let last = r.last_deployment.as_ref().map_or_else(String::new, |d| {
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
        t.push(vec![
            r.id.clone(),
            r.template.clone(),
            r.version.clone(),
            if update.is_empty() {
                "-".into()
            } else {
                update.join(", ")
            },
            r.status.clone(),
            last,
        ]);
    }
    table(&t)
}
