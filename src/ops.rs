//! Operator views shared by the CLI, the HTTP API and the status page: pure functions from
//! records already read (the plan, the store's [`Overview`], rollout progress, proposals) to
//! rows and text tables.
//!
//! Views never read the store, call AWS or log: callers read, then render.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::catalog::releases::Catalog;
use crate::desired::DesiredSet;
use crate::model::{DeploymentStatus, ResourceKind, ResourceStatus, Version};
use crate::plan::{ActionKind, Plan, UpdateReason};
use crate::state::{Overview, RolloutProgress};

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
                    UpdateReason::ReleaseChanged { version } => {
                        format!("release {version} changed (accepted moved tag)")
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

/// One row of `protond status`, `/api/v1/environments` and `/api/v1/services`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    /// Resource id.
    pub id: String,
    /// The resource's kind.
    pub kind: ResourceKind,
    /// The template it is deployed from.
    pub template: String,
    /// Deployed version.
    pub version: String,
    /// Whether its last deployment succeeded.
    pub status: ResourceStatus,
    /// Newest registered minor of the same major, when newer.
    pub minor_available: Option<String>,
    /// Newest registered major, when newer.
    pub major_available: Option<u32>,
    /// Its newest deployment.
    pub last_deployment: Option<LastDeployment>,
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

/// Status of every managed resource: what is deployed, what update is available, and how
/// its newest deployment went.
#[must_use]
pub fn status(overview: &Overview) -> Vec<StatusRow> {
    let mut registered: BTreeMap<&str, Vec<Version>> = BTreeMap::new();
    for v in overview.template_versions.iter().filter(|v| v.registered) {
        registered
            .entry(v.template.as_str())
            .or_default()
            .push(v.version);
    }
    let mut rows = Vec::new();
    for r in &overview.resources {
        let known = registered.get(r.template.as_str());
        let minor_available = known
            .and_then(|vs| vs.iter().filter(|v| v.major == r.version.major).max())
            .filter(|v| **v > r.version)
            .map(ToString::to_string);
        let major_available = known
            .and_then(|vs| vs.iter().map(|v| v.major).max())
            .filter(|m| *m > r.version.major);
        let last = overview
            .last_deployments
            .get(&r.id)
            .map(|d| LastDeployment {
                id: d.id,
                action: d.deployment.action.to_string(),
                status: d.status,
                version: d.deployment.to_version.to_string(),
                started_at: d.started_at.clone(),
                finished_at: d.finished_at.clone(),
                error: d.error.clone(),
            });
        rows.push(StatusRow {
            id: r.id.clone(),
            kind: r.kind,
            template: r.template.clone(),
            version: r.version.to_string(),
            status: r.status,
            minor_available,
            major_available,
            last_deployment: last,
        });
    }
    rows
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
            r.status.to_string(),
            last,
        ]);
    }
    table(&t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeploymentAction;
    use crate::state::{DeploymentRecord, NewDeployment, ResourceRecord, TemplateVersionRecord};

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
            outputs: BTreeMap::new(),
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
}
