//! The status page: plain server-rendered HTML, readable without JavaScript or external
//! assets, refreshed by the browser every 30 seconds. Each resource shows its stored
//! outputs (collapsed); service pipelines have their own section with the last execution
//! the store recorded. Ids and timestamps never wrap mid-word. Renders only: never reads
//! the store or calls AWS.

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::model::{ResourceKind, TagState, ViewStatus};
use crate::ops::StatusRow;
use crate::state::{
    PipelineRunRecord, ProposalRecord, ResourceRecord, RolloutProgress, TemplateVersionRecord,
};

/// What the page shows beside the status rows: the records (outputs, stacks) and the
/// pipeline executions protond started.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// Every managed resource's record.
    pub records: &'a [ResourceRecord],
    /// The last pipeline execution protond started (or tried to), by service.
    pub pipeline_runs: &'a [PipelineRunRecord],
}

/// Escapes text for HTML content and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1b1f24;background:#fff}\
h1{font-size:1.6rem;margin:0 0 .3rem}h2{font-size:1.2rem;margin:2rem 0 .6rem}\
p.meta{color:#57606a;margin:0 0 1rem}\
table{border-collapse:collapse;width:100%;font-size:.95rem}\
th,td{border:1px solid #d0d7de;padding:.4rem .6rem;text-align:left;vertical-align:top}\
th{background:#f6f8fa}\
.ok{background:#dafbe1}.bad{background:#ffebe9}.warn{background:#fff8c5}.muted{color:#57606a}\
code{font-family:ui-monospace,monospace;font-size:.9em}\
code.id,td.id>code,time{white-space:nowrap}\
details summary{cursor:pointer;color:#57606a}details table{margin-top:.3rem;font-size:.85rem}";

fn update_cell(r: &StatusRow) -> String {
    let mut parts = Vec::new();
    if let Some(m) = &r.minor_available {
        parts.push(format!("minor {} available", esc(m)));
    }
    if let Some(m) = r.major_available {
        parts.push(format!("major v{m} available"));
    }
    if parts.is_empty() {
        "<td class=\"ok\">up to date</td>".into()
    } else {
        format!(
            "<td class=\"warn\">update available: {}</td>",
            parts.join(", ")
        )
    }
}

/// A resource's stored outputs, collapsed; nothing when it has none.
fn outputs_cell(record: Option<&ResourceRecord>) -> String {
    let Some(r) = record.filter(|r| !r.outputs.is_empty()) else {
        return String::new();
    };
    let mut s = format!(
        "<details class=\"outputs\"><summary>{} output{}</summary><table><tbody>",
        r.outputs.len(),
        if r.outputs.len() == 1 { "" } else { "s" }
    );
    for (k, v) in &r.outputs {
        let _ = write!(
            s,
            "<tr><td><code class=\"id\">{}</code></td><td><code>{}</code></td></tr>",
            esc(k),
            esc(v)
        );
    }
    s.push_str("</tbody></table></details>");
    s
}

fn resource_table(out: &mut String, rows: &[&StatusRow], records: &[ResourceRecord]) {
    let _ = writeln!(
        out,
        "<table><thead><tr><th>Resource</th><th>Template</th><th>Version</th><th>Status</th><th>Updates</th><th>Last deployment</th></tr></thead><tbody>"
    );
    for r in rows {
        let status_class = match r.status {
            ViewStatus::Deployed | ViewStatus::CustomerManaged => "ok",
            ViewStatus::Failed
            | ViewStatus::Conflict
            | ViewStatus::CreateFailed
            | ViewStatus::SpecInvalid => "bad",
            ViewStatus::Creating | ViewStatus::WaitingForNotify | ViewStatus::Unknown => "warn",
        };
        let mut status = esc(&crate::ops::status_label(r));
        if let Some(p) = &r.problem {
            let _ = write!(status, "<br><code>{}</code>", esc(p));
        }
        // Drift is never green: the stack is not what protond deployed.
        let status_class = if r.drift.is_empty() {
            status_class
        } else {
            "bad"
        };
        for d in &r.drift {
            let _ = write!(
                status,
                "<br><code>drift {}: {}</code>",
                d.kind,
                esc(&d.detail)
            );
        }
        let last = r.last_deployment.as_ref().map_or_else(
            || "<span class=\"muted\">none</span>".to_string(),
            |d| {
                let mut s = format!(
                    "#{} {} to {}: <strong>{}</strong>, <time>{}</time>",
                    d.id,
                    esc(&d.action),
                    esc(&d.version),
                    d.status,
                    esc(d.finished_at.as_deref().unwrap_or(&d.started_at))
                );
                if let Some(e) = &d.error {
                    let _ = write!(s, "<br><code>{}</code>", esc(e));
                }
                s
            },
        );
        let _ = writeln!(
            out,
            "<tr><td class=\"id\"><code>{}</code>{}</td><td>{}</td><td>{}</td><td class=\"{status_class}\">{status}</td>{}<td>{last}</td></tr>",
            esc(&r.id),
            outputs_cell(records.iter().find(|x| x.id == r.id)),
            esc(&r.template),
            r.version
                .as_deref()
                .map_or_else(|| "<span class=\"muted\">none</span>".to_string(), esc),
            update_cell(r)
        );
    }
    let _ = writeln!(out, "</tbody></table>");
}

/// Releases whose tag was moved (refused until `protond release accept`) or deleted; nothing
/// when every release follows its tag.
fn release_table(out: &mut String, releases: &[TemplateVersionRecord]) {
    let odd: Vec<&TemplateVersionRecord> = releases
        .iter()
        .filter(|v| v.registered && v.tag_state != TagState::Current)
        .collect();
    if odd.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<h2>Releases not following their tag</h2><table><thead><tr><th>Release</th><th>State</th><th>Recorded commit</th><th>Tag now</th></tr></thead><tbody>"
    );
    for v in odd {
        let (class, now) = match (v.tag_state, &v.tag_commit) {
            (TagState::Moved, Some(to)) => ("bad", format!("<code>{}</code>", esc(to))),
            _ => ("warn", "deleted".to_string()),
        };
        let _ = writeln!(
            out,
            "<tr><td>{} {}</td><td class=\"{class}\">{}</td><td><code>{}</code></td><td>{now}</td></tr>",
            esc(&v.template),
            v.version,
            v.tag_state,
            esc(&v.commit)
        );
    }
    let _ = writeln!(out, "</tbody></table>");
}

/// The whole page.
#[must_use]
pub fn render(
    rows: &[StatusRow],
    rollouts: &[RolloutProgress],
    releases: &[TemplateVersionRecord],
    proposals: &[ProposalRecord],
    last_cycle: Option<SystemTime>,
    stored: Stored<'_>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><meta http-equiv=\"refresh\" content=\"30\"><title>protond status</title><style>{STYLE}</style></head><body>"
    );
    let _ = writeln!(out, "<h1>protond status</h1>");
    let outdated = rows
        .iter()
        .filter(|r| r.minor_available.is_some() || r.major_available.is_some())
        .count();
    let failed = rows
        .iter()
        .filter(|r| matches!(r.status, ViewStatus::Failed | ViewStatus::CreateFailed))
        .count();
    let mut others = String::new();
    for s in [
        ViewStatus::Conflict,
        ViewStatus::SpecInvalid,
        ViewStatus::Unknown,
        ViewStatus::Creating,
        ViewStatus::WaitingForNotify,
    ] {
        let n = rows.iter().filter(|r| r.status == s).count();
        if n > 0 {
            let _ = write!(others, ", {n} {}", s.label());
        }
    }
    let _ = writeln!(
        out,
        "<p class=\"meta\">{} resources, {failed} failed{others}, {outdated} with updates available. Last reconcile: {}.</p>",
        rows.len(),
        last_cycle.map_or_else(
            || "not yet".to_string(),
            |t| format!("<time>{}</time>", humantime::format_rfc3339_seconds(t))
        )
    );
    let (envs, others): (Vec<&StatusRow>, Vec<&StatusRow>) = rows
        .iter()
        .partition(|r| r.kind == ResourceKind::Environment);
    let _ = writeln!(out, "<h2>Environments</h2>");
    resource_table(&mut out, &envs, stored.records);
    let _ = writeln!(
        out,
        "<h2>Services</h2><p class=\"meta\">Service instances, pipelines and components.</p>"
    );
    resource_table(&mut out, &others, stored.records);
    pipelines(&mut out, rows, stored);

    let _ = writeln!(out, "<h2>Rollouts</h2>");
    if rollouts.is_empty() {
        let _ = writeln!(out, "<p class=\"muted\">No rollouts recorded.</p>");
    } else {
        let _ = writeln!(
            out,
            "<table><thead><tr><th>Template version</th><th>Progress</th><th>State</th></tr></thead><tbody>"
        );
        for r in rollouts {
            let (class, state) = match &r.halted {
                Some(reason) => ("bad", format!("halted: {}", esc(reason))),
                None if r.done == r.total => ("ok", "complete".into()),
                None => ("warn", "in progress".into()),
            };
            let _ = writeln!(
                out,
                "<tr><td>{} {}</td><td><progress max=\"{}\" value=\"{}\"></progress> {}/{}</td><td class=\"{class}\">{state}</td></tr>",
                esc(&r.template),
                r.version,
                r.total,
                r.done,
                r.done,
                r.total
            );
        }
        let _ = writeln!(out, "</tbody></table>");
    }

    release_table(&mut out, releases);

    let _ = writeln!(out, "<h2>Upgrade pull requests</h2>");
    if proposals.is_empty() {
        let _ = writeln!(out, "<p class=\"muted\">None.</p>");
    } else {
        let _ = writeln!(
            out,
            "<table><thead><tr><th>Spec file</th><th>Upgrade</th><th>State</th><th>Link</th></tr></thead><tbody>"
        );
        for p in proposals {
            let link = match (&p.url, p.number) {
                (Some(u), Some(n)) if u.starts_with("https://") || u.starts_with("http://") => {
                    format!("<a href=\"{}\">#{n}</a>", esc(u))
                }
                _ => format!("branch <code>{}</code>", esc(&p.branch)),
            };
            let _ = writeln!(
                out,
                "<tr><td><code>{}:{}</code></td><td>{} v{} → v{}</td><td>{}</td><td>{link}</td></tr>",
                esc(&p.repo),
                esc(&p.path),
                esc(&p.template),
                p.from_major,
                p.to_major,
                p.state
            );
        }
        let _ = writeln!(out, "</tbody></table>");
    }
    let _ = writeln!(
        out,
        "<p class=\"meta\">JSON: <a href=\"/api/v1/environments\">environments</a>, <a href=\"/api/v1/services\">services</a>, <a href=\"/api/v1/deployments\">deployments</a>, <a href=\"/api/v1/templates\">templates</a>. <a href=\"/metrics\">Metrics</a>.</p></body></html>"
    );
    out
}

/// The "Pipelines" section: each service pipeline with its stack, its status and the last
/// `CodePipeline` execution protond started (or why it could not).
fn pipelines(out: &mut String, rows: &[StatusRow], stored: Stored<'_>) {
    let _ = writeln!(out, "<h2>Pipelines</h2>");
    let pipes: Vec<&StatusRow> = rows
        .iter()
        .filter(|r| r.kind == ResourceKind::Pipeline)
        .collect();
    if pipes.is_empty() {
        let _ = writeln!(out, "<p class=\"muted\">No service pipelines.</p>");
        return;
    }
    let _ = writeln!(
        out,
        "<table><thead><tr><th>Pipeline</th><th>Stack</th><th>Status</th><th>Last execution started by protond</th></tr></thead><tbody>"
    );
    for r in pipes {
        let service = r.id.strip_prefix("pipeline/").unwrap_or(&r.id);
        let stack = stored
            .records
            .iter()
            .find(|x| x.id == r.id)
            .map(|x| x.placement.stack_name.as_str())
            .filter(|s| !s.is_empty())
            .map_or_else(
                || "<span class=\"muted\">none</span>".to_string(),
                |s| format!("<code class=\"id\">{}</code>", esc(s)),
            );
        let run = stored
            .pipeline_runs
            .iter()
            .find(|x| x.service == service)
            .map_or_else(
                || "<span class=\"muted\">none recorded</span>".to_string(),
                |x| {
                    format!(
                        "{}{}{} after <code class=\"id\">{}</code>, <time>{}</time>{}",
                        esc(&x.result),
                        x.pipeline
                            .as_deref()
                            .map(|p| format!(" <code class=\"id\">{}</code>", esc(p)))
                            .unwrap_or_default(),
                        x.execution_id
                            .as_deref()
                            .map(|e| format!(" execution <code class=\"id\">{}</code>", esc(e)))
                            .unwrap_or_default(),
                        esc(&x.triggered_by),
                        esc(&x.updated_at),
                        x.message
                            .as_deref()
                            .map(|m| format!("<br><code>{}</code>", esc(m)))
                            .unwrap_or_default()
                    )
                },
            );
        let _ = writeln!(
            out,
            "<tr><td><code class=\"id\">{}</code></td><td>{stack}</td><td>{}</td><td>{run}</td></tr>",
            esc(&r.id),
            esc(&crate::ops::status_label(r)),
        );
    }
    let _ = writeln!(out, "</tbody></table>");
}

/// The "In flight" section: each deployment in flight with its stack, the stack's status, the
/// last stack event, the elapsed time and who asked; empty when nothing is in flight.
#[must_use]
pub fn in_flight(
    rows: &[crate::state::DeploymentRecord],
    notes: &std::collections::BTreeMap<i64, crate::state::ActionNotes>,
) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<h2>In flight</h2><table><thead><tr><th>Resource</th><th>Deployment</th><th>Stack</th><th>Status</th><th>Last event</th><th>Elapsed</th><th>Requested by</th></tr></thead><tbody>",
    );
    for d in rows {
        let n = notes.get(&d.id).cloned().unwrap_or_default();
        let p = n.progress.unwrap_or_default();
        let cancel = n
            .cancel_requested_by
            .map(|b| format!("<br>cancel requested by {}", esc(&b)))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td><code class=\"id\">{}</code></td><td>#{} {}</td><td><code class=\"id\">{}</code></td><td class=\"warn\">{}{cancel}</td><td><code>{}</code></td><td>{}s</td><td>{}</td></tr>",
            esc(&d.deployment.resource_id),
            d.id,
            esc(d.deployment.action.as_str()),
            esc(&p.stack),
            esc(if p.status.is_empty() {
                "starting"
            } else {
                &p.status
            }),
            esc(p.last_event.as_deref().unwrap_or("")),
            p.elapsed_secs,
            esc(n.requested_by.as_deref().unwrap_or("-")),
        );
    }
    out.push_str("</tbody></table>\n");
    out
}

/// The "Replicas" section of a PostgreSQL state: this replica's role, who leads (lease,
/// holder, epoch, time left) and every replica recorded, with how long it has been silent.
#[must_use]
pub fn replicas(role: &crate::ha::Standing, observed: &crate::ha::Observed) -> String {
    let mut out = format!(
        "<h2>Replicas</h2><p>This replica: <code class=\"id\">{}</code>, {}. Leader: <code class=\"id\">{}</code> (epoch {}).</p><table><thead><tr><th>Lease</th><th>Holder</th><th>Epoch</th><th>Expires in</th></tr></thead><tbody>",
        esc(&role.replica),
        esc(role.role),
        esc(role.leader.as_deref().unwrap_or("none")),
        role.epoch
            .map_or_else(|| "-".to_string(), |e| e.to_string()),
    );
    for l in &observed.leases {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td><code class=\"id\">{}</code></td><td>{}</td><td>{} ms</td></tr>",
            esc(&l.name),
            esc(&l.holder),
            l.epoch,
            l.remaining_ms
        );
    }
    out.push_str("</tbody></table><table><thead><tr><th>Replica</th><th>Shard</th><th>Serves</th><th>Started</th><th>Silent for</th></tr></thead><tbody>");
    for r in &observed.replicas {
        let _ = write!(
            out,
            "<tr><td><code class=\"id\">{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td></tr>",
            esc(&r.id),
            r.shard,
            esc(r.listen.as_deref().unwrap_or("-")),
            esc(&r.started_at),
            r.silent_ms
        );
    }
    out.push_str("</tbody></table>\n");
    out
}

/// The "Stopped releases" section: each quarantined or halted release with who stopped it,
/// when and why, and the rollbacks from quarantined ones (offered, with the command, or
/// under way); empty when nothing is stopped.
#[must_use]
pub fn stopped_releases(
    stops: &[crate::state::Stop],
    rollbacks: &std::collections::BTreeMap<String, crate::evaluate::quarantine::Rollback>,
    mode: crate::config::quarantine::RollbackMode,
) -> String {
    if stops.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<h2>Stopped releases</h2><table><thead><tr><th>Release</th><th>State</th><th>By</th><th>Since</th><th>Why</th></tr></thead><tbody>",
    );
    for s in stops {
        let state = match s.kind {
            crate::state::StopKind::Quarantine => "quarantined",
            crate::state::StopKind::Halt => "halted",
        };
        let _ = write!(
            out,
            "<tr><td>{} {}</td><td class=\"bad\">{state}</td><td>{}</td><td><time>{}</time></td><td>{}</td></tr>",
            esc(&s.template),
            s.version,
            esc(&s.by),
            esc(&s.at),
            esc(&s.reason),
        );
    }
    out.push_str("</tbody></table>\n");
    if !rollbacks.is_empty() {
        out.push_str("<ul>");
        for (id, r) in rollbacks {
            let line = crate::ops::quarantine::rollback_line(id, r, mode);
            let _ = write!(out, "<li><code>{}</code></li>", esc(&line));
        }
        out.push_str("</ul>\n");
    }
    out
}

/// The "Holds and pins" section: operator holds (`protond hold`) with who set each, what it
/// stops and when it ends, and pins (`protond rollback --to`); empty when there are none.
#[must_use]
pub fn holds_section(
    holds: &[crate::plan::holds::Hold],
    pins: &[crate::state::PinRecord],
    now: SystemTime,
) -> String {
    let mut out = String::new();
    if holds.is_empty() && pins.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "<h2>Holds and pins</h2><table><thead><tr><th>Target</th><th>Holds</th><th>Until</th><th>By</th><th>Why</th></tr></thead><tbody>"
    );
    for h in holds {
        let (class, state) = if h.active(now) {
            ("warn", "")
        } else {
            ("muted", " (ended)")
        };
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"{class}\"><time>{}</time>{state}</td><td>{}</td><td>{}</td></tr>",
            esc(&h.target.to_string()),
            if h.all {
                "every change"
            } else {
                "version moves"
            },
            crate::plan::holds::rfc3339(h.until),
            esc(&h.by),
            esc(&h.reason)
        );
    }
    for p in pins {
        let _ = writeln!(
            out,
            "<tr><td><code>{}:{}</code></td><td>pinned on {} {}</td><td>until unpinned</td><td>{}</td><td>protond rollback</td></tr>",
            esc(&p.target_kind),
            esc(&p.target_name),
            esc(p.template.as_deref().unwrap_or("any template")),
            p.version,
            esc(&p.by)
        );
    }
    let _ = writeln!(out, "</tbody></table>");
    out
}

/// The "Needs approval" section: each resource the change-set gate holds, the version
/// waiting, the predicted effects and how to approve; empty when none.
#[must_use]
pub fn needs_approval(
    pending: &std::collections::BTreeMap<String, crate::state::PendingApproval>,
) -> String {
    if pending.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<h2>Needs approval</h2><p class=\"meta\">The change-set gate holds these minor upgrades: they would replace or remove a stateful resource. Approve with <code>protond approve &lt;resource&gt; &lt;version&gt;</code>, the API, or the spec repo's <code>.protond/approvals.yaml</code>.</p><table><thead><tr><th>Resource</th><th>Version</th><th>Predicted effect</th><th>Since</th></tr></thead><tbody>",
    );
    for (id, p) in pending {
        let changes: Vec<String> = p.changes.iter().map(|c| esc(c)).collect();
        let _ = write!(
            out,
            "<tr><td><code class=\"id\">{}</code></td><td>{} {}</td><td class=\"warn\">{}</td><td>{}</td></tr>",
            esc(id),
            esc(&p.template),
            p.version,
            changes.join("<br>"),
            esc(&p.since),
        );
    }
    out.push_str("</tbody></table>\n");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn needs_approval_shows_the_predicted_effect_escaped() {
        let pending = std::collections::BTreeMap::from([(
            "service_instance/web/dev".to_string(),
            crate::state::PendingApproval {
                template: "svc".into(),
                version: crate::model::Version { major: 1, minor: 1 },
                changes: vec!["AWS::DynamoDB::Table <T>: replaced (KeySchema)".into()],
                since: "2026-11-30T05:00:00Z".into(),
            },
        )]);
        let html = super::needs_approval(&pending);
        assert!(html.contains("<h2>Needs approval</h2>"), "{html}");
        assert!(html.contains("svc 1.1"), "{html}");
        assert!(html.contains("&lt;T&gt;: replaced (KeySchema)"), "{html}");
        assert!(super::needs_approval(&std::collections::BTreeMap::new()).is_empty());
    }

    #[test]
    fn escapes_everything_that_matters() {
        assert_eq!(
            super::esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn in_flight_shows_stack_status_last_event_elapsed_and_who_asked() {
        assert_eq!(
            super::in_flight(&[], &std::collections::BTreeMap::new()),
            ""
        );
        let d = crate::state::DeploymentRecord {
            id: 7,
            deployment: crate::state::tests::new_dep("environment/dev"),
            status: crate::model::DeploymentStatus::InProgress,
            error: None,
            retryable: false,
            started_at: String::new(),
            finished_at: None,
        };
        let notes = [(
            7,
            crate::state::ActionNotes {
                requested_by: Some("cli:<alice>".into()),
                cancel_requested_by: None,
                progress: Some(crate::state::Progress {
                    stack: "protond-env".into(),
                    status: "UPDATE_IN_PROGRESS".into(),
                    last_event: Some("Q AWS::SQS::Queue UPDATE_IN_PROGRESS".into()),
                    elapsed_secs: 42,
                    events: 2,
                }),
            },
        )]
        .into_iter()
        .collect();
        let html = super::in_flight(&[d], &notes);
        for want in [
            "environment/dev",
            "protond-env",
            "UPDATE_IN_PROGRESS",
            "Q AWS::SQS::Queue",
            "42s",
            "cli:&lt;alice&gt;",
        ] {
            assert!(html.contains(want), "{want} in {html}");
        }
    }

    #[test]
    fn stopped_releases_say_who_and_escape() {
        let stops = vec![crate::state::Stop {
            template: "web".into(),
            version: crate::model::Version { major: 1, minor: 1 },
            kind: crate::state::StopKind::Quarantine,
            by: "protond".into(),
            reason: "2 of 2 failed: <script>".into(),
            at: "2026-11-30T05:00:00Z".into(),
        }];
        let mode = crate::config::quarantine::RollbackMode::Offer;
        let html = super::stopped_releases(&stops, &std::collections::BTreeMap::new(), mode);
        assert!(
            html.contains("<td>web 1.1</td><td class=\"bad\">quarantined</td><td>protond</td>"),
            "{html}"
        );
        assert!(
            html.contains("&lt;script&gt;") && !html.contains("<script>"),
            "{html}"
        );
        assert!(super::stopped_releases(&[], &std::collections::BTreeMap::new(), mode).is_empty());
    }
}
