//! The fleet report (`protond report`, `GET /api/v1/report`, the status page's versions
//! table and the `protond_versions_behind` gauge): per template and kind, how many resources
//! run each version, the newest registered version, how many minors and majors each group
//! is behind, the oldest version running and on which resources; the pull requests waiting
//! and the rollouts stopped (halted, quarantined).
//!
//! [`build`] is pure and table-tested: every caller reads the same rows ([`read`], the one
//! edge that touches the store) and builds the same report, so the CLI, the API, the page
//! and the metric never disagree. It must never write the store, call AWS or decide
//! anything: it counts what the records say.
//!
//! Definitions. For a resource on version `M.m` of a template: *minors behind* is the number
//! of registered minors of major `M` newer than `m`; *majors behind* is the newest
//! registered major of the template minus `M` (0 when `M` is the newest, or newer than any
//! registered). Components (directly defined, unversioned) are left out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::model::{ProposalState, ResourceKind, Version};
use crate::state::{
    ProposalRecord, ResourceRecord, RolloutDecision, StateError, Store, TemplateVersionRecord,
};

/// At most this many resource ids are listed for a template's oldest version (the count is
/// always whole).
pub const OLDEST_LISTED: usize = 100;

/// A hold or a pin as the report lists it (see [`Inputs::holds`], [`Inputs::pins`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restriction {
    /// What it applies to (a resource id, `environment:<name>`, `stage:<name>`, a template).
    pub target: String,
    /// The template it is about, when it is about one.
    pub template: Option<String>,
    /// The version pinned to, for a pin.
    pub version: Option<String>,
    /// Why, as recorded.
    pub reason: Option<String>,
    /// Who set it.
    pub set_by: Option<String>,
    /// When it ends by itself (RFC 3339), when it does.
    pub until: Option<String>,
}

/// What the report is built from: rows read from the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// Every resource record.
    pub resources: Vec<ResourceRecord>,
    /// Every recorded template version (registered and rejected).
    pub template_versions: Vec<TemplateVersionRecord>,
    /// Every rollout decision.
    pub rollouts: Vec<RolloutDecision>,
    /// Every proposal (pull requests for major upgrades).
    pub proposals: Vec<ProposalRecord>,
    /// Open holds (`protond hold`), ended ones left out.
    pub holds: Vec<Restriction>,
    /// Recorded pins (`protond rollback --to`).
    pub pins: Vec<Restriction>,
}

/// The resources of one template on one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionGroup {
    /// The version they run.
    #[serde(serialize_with = "as_text")]
    pub version: Version,
    /// How many resources run it.
    pub resources: usize,
    /// Whether the version is registered (a resource may run a version whose tag was
    /// rejected or never recorded here).
    pub registered: bool,
    /// The newest registered minor of the same major, when one is registered.
    #[serde(serialize_with = "opt_text")]
    pub newest_minor: Option<Version>,
    /// Registered minors of the same major newer than this one.
    pub minors_behind: u32,
    /// The template's newest registered major minus this one.
    pub majors_behind: u32,
}

/// The oldest version a template's resources run, and which resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Oldest {
    /// The version.
    #[serde(serialize_with = "as_text")]
    pub version: Version,
    /// How many resources run it.
    pub count: usize,
    /// Their ids, sorted, at most [`OLDEST_LISTED`].
    pub resources: Vec<String>,
}

/// One template's line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateReport {
    /// The template's name.
    pub template: String,
    /// `environment` or `service` (instances and pipelines run service templates).
    pub kind: String,
    /// Resources running it.
    pub resources: usize,
    /// The newest registered version (newest major, its newest minor).
    #[serde(serialize_with = "opt_text")]
    pub newest: Option<Version>,
    /// The newest registered major.
    pub newest_major: Option<u32>,
    /// Resources per version, newest first.
    pub versions: Vec<VersionGroup>,
    /// The oldest version running.
    pub oldest: Option<Oldest>,
    /// The most minors any of its resources is behind.
    pub max_minors_behind: u32,
    /// The most majors any of its resources is behind.
    pub max_majors_behind: u32,
    /// Open pull requests proposing a major upgrade of a spec on this template.
    pub pull_requests_waiting: usize,
}

/// A pull request waiting (an open major-upgrade proposal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitingPullRequest {
    /// The template.
    pub template: String,
    /// Spec repo.
    pub repo: String,
    /// Spec file.
    pub path: String,
    /// Major the spec follows.
    pub from_major: i64,
    /// Major proposed.
    pub to_major: i64,
    /// Pull request number, when the forge has one.
    pub number: Option<i64>,
    /// Its address.
    pub url: Option<String>,
    /// When it was opened.
    pub opened_at: String,
}

/// A rollout that does not proceed: halted (by an operator or a failure), quarantined, or
/// any other recorded status but `resumed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoppedRollout {
    /// The template.
    pub template: String,
    /// The version whose rollout stopped.
    #[serde(serialize_with = "as_text")]
    pub version: Version,
    /// The stored status (`halted`, `quarantined`, …).
    pub status: String,
    /// Why.
    pub reason: Option<String>,
    /// Since when.
    pub since: String,
    /// Resources of the template that run this version.
    pub resources_on_it: usize,
}

/// The fleet report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// One line per template and kind that has resources, by name.
    pub templates: Vec<TemplateReport>,
    /// Open pull requests, oldest first.
    pub pull_requests: Vec<WaitingPullRequest>,
    /// Rollouts that do not proceed.
    pub stopped_rollouts: Vec<StoppedRollout>,
    /// Open holds (see [`Inputs::holds`]).
    pub holds: Vec<Restriction>,
    /// Pins (see [`Inputs::pins`]).
    pub pins: Vec<Restriction>,
}

// serde's `serialize_with` passes the field by reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn as_text<S: serde::Serializer>(v: &Version, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(v)
}

// serde's `serialize_with` passes the field by reference.
#[allow(clippy::ref_option)]
fn opt_text<S: serde::Serializer>(v: &Option<Version>, serializer: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => serializer.collect_str(v),
        None => serializer.serialize_none(),
    }
}

/// Reads what [`build`] needs from the store.
///
/// # Errors
///
/// A store failure.
pub async fn read(store: &Store) -> Result<Inputs, StateError> {
    Ok(Inputs {
        resources: store.resources().await?,
        template_versions: store.template_versions().await?,
        rollouts: store.rollout_decisions().await?,
        proposals: store.proposals().await?,
        holds: open_holds(&store.holds().await?, std::time::SystemTime::now()),
        pins: store.pins().await?.iter().map(pin_restriction).collect(),
    })
}

/// The holds still in force at `now`, as the report lists them.
fn open_holds(holds: &[crate::plan::holds::Hold], now: std::time::SystemTime) -> Vec<Restriction> {
    holds
        .iter()
        .filter(|h| h.active(now))
        .map(|h| Restriction {
            target: h.target.to_string(),
            template: match &h.target {
                crate::plan::holds::HoldTarget::Template(t) => Some(t.clone()),
                _ => None,
            },
            version: None,
            reason: Some(h.reason.clone()),
            set_by: Some(h.by.clone()),
            until: Some(humantime::format_rfc3339_seconds(h.until).to_string()),
        })
        .collect()
}

/// A recorded pin, as the report lists it.
fn pin_restriction(p: &crate::state::PinRecord) -> Restriction {
    let target = if p.target_kind == "resource" {
        p.target_name.clone()
    } else {
        format!("{}:{}", p.target_kind, p.target_name)
    };
    Restriction {
        target,
        template: p.template.clone(),
        version: Some(p.version.to_string()),
        reason: None,
        set_by: Some(p.by.clone()),
        until: None,
    }
}

/// The template kind a resource runs: `environment` or `service`; `None` for components,
/// which have no versioned template.
fn template_kind(kind: ResourceKind) -> Option<&'static str> {
    match kind {
        ResourceKind::Environment => Some("environment"),
        ResourceKind::ServiceInstance | ResourceKind::Pipeline => Some("service"),
        ResourceKind::Component => None,
    }
}

/// How far `v` is behind within `registered` (the template's registered versions): minors
/// of its major newer than it, and the newest major minus its own.
#[must_use]
pub fn behind(v: Version, registered: &[Version]) -> (u32, u32) {
    let minors = registered
        .iter()
        .filter(|r| r.major == v.major && r.minor > v.minor)
        .count();
    let newest_major = registered.iter().map(|r| r.major).max().unwrap_or(v.major);
    (
        u32::try_from(minors).unwrap_or(u32::MAX),
        newest_major.saturating_sub(v.major),
    )
}

/// Builds the report from rows already read.
#[must_use]
pub fn build(inputs: &Inputs) -> Report {
    let mut registered: BTreeMap<(&str, &str), Vec<Version>> = BTreeMap::new();
    for v in inputs.template_versions.iter().filter(|v| v.registered) {
        registered
            .entry((v.template.as_str(), v.kind.as_str()))
            .or_default()
            .push(v.version);
    }
    let mut on: BTreeMap<(&str, &str), BTreeMap<Version, Vec<&str>>> = BTreeMap::new();
    for r in &inputs.resources {
        if let Some(kind) = template_kind(r.kind) {
            on.entry((r.template.as_str(), kind))
                .or_default()
                .entry(r.version)
                .or_default()
                .push(r.id.as_str());
        }
    }
    let open: Vec<&ProposalRecord> = inputs
        .proposals
        .iter()
        .filter(|p| p.state == ProposalState::Open)
        .collect();
    let templates = on
        .iter()
        .map(|(&(template, kind), by_version)| {
            let versions = registered
                .get(&(template, kind))
                .map_or(&[][..], Vec::as_slice);
            let waiting = open.iter().filter(|p| p.template == template).count();
            template_line(template, kind, by_version, versions, waiting)
        })
        .collect();
    let mut pull_requests: Vec<WaitingPullRequest> = open
        .iter()
        .map(|p| WaitingPullRequest {
            template: p.template.clone(),
            repo: p.repo.clone(),
            path: p.path.clone(),
            from_major: p.from_major,
            to_major: p.to_major,
            number: p.number,
            url: p.url.clone(),
            opened_at: p.created_at.clone(),
        })
        .collect();
    pull_requests
        .sort_by(|a, b| (&a.opened_at, &a.repo, &a.path).cmp(&(&b.opened_at, &b.repo, &b.path)));
    Report {
        templates,
        pull_requests,
        stopped_rollouts: stopped(inputs),
        holds: inputs.holds.clone(),
        pins: inputs.pins.clone(),
    }
}

/// One template's line from its resources by version and its registered versions.
fn template_line(
    template: &str,
    kind: &str,
    by_version: &BTreeMap<Version, Vec<&str>>,
    registered: &[Version],
    pull_requests_waiting: usize,
) -> TemplateReport {
    let newest = registered.iter().max().copied();
    let versions: Vec<VersionGroup> = by_version
        .iter()
        .rev()
        .map(|(&version, ids)| {
            let (minors_behind, majors_behind) = behind(version, registered);
            VersionGroup {
                version,
                resources: ids.len(),
                registered: registered.contains(&version),
                newest_minor: registered
                    .iter()
                    .filter(|r| r.major == version.major)
                    .max()
                    .copied(),
                minors_behind,
                majors_behind,
            }
        })
        .collect();
    let oldest = by_version.iter().next().map(|(&version, ids)| {
        let mut ids: Vec<String> = ids.iter().map(|s| (*s).to_string()).collect();
        ids.sort();
        let count = ids.len();
        ids.truncate(OLDEST_LISTED);
        Oldest {
            version,
            count,
            resources: ids,
        }
    });
    TemplateReport {
        template: template.to_string(),
        kind: kind.to_string(),
        resources: by_version.values().map(Vec::len).sum(),
        newest,
        newest_major: newest.map(|v| v.major),
        max_minors_behind: versions.iter().map(|g| g.minors_behind).max().unwrap_or(0),
        max_majors_behind: versions.iter().map(|g| g.majors_behind).max().unwrap_or(0),
        versions,
        oldest,
        pull_requests_waiting,
    }
}

/// Every rollout decision that stops a rollout (any status but `resumed`).
fn stopped(inputs: &Inputs) -> Vec<StoppedRollout> {
    inputs
        .rollouts
        .iter()
        .filter(|d| d.status != "resumed")
        .map(|d| StoppedRollout {
            template: d.template.clone(),
            version: d.version,
            status: d.status.clone(),
            reason: d.reason.clone(),
            since: d.updated_at.clone(),
            resources_on_it: inputs
                .resources
                .iter()
                .filter(|r| r.template == d.template && r.version == d.version)
                .count(),
        })
        .collect()
}

/// `protond_versions_behind{template,kind}`: per template name, the most minors
/// (`kind="minor"`) and majors (`kind="major"`) any of its resources is behind.
#[must_use]
pub fn versions_behind(report: &Report) -> BTreeMap<(String, &'static str), u32> {
    let mut out: BTreeMap<(String, &'static str), u32> = BTreeMap::new();
    for t in &report.templates {
        for (kind, n) in [
            ("minor", t.max_minors_behind),
            ("major", t.max_majors_behind),
        ] {
            let e = out.entry((t.template.clone(), kind)).or_insert(0);
            *e = (*e).max(n);
        }
    }
    out
}

/// The report as text tables (`protond report`).
#[must_use]
pub fn table(report: &Report) -> String {
    let mut rows = vec![
        [
            "TEMPLATE",
            "KIND",
            "VERSION",
            "RESOURCES",
            "NEWEST",
            "MINORS BEHIND",
            "MAJORS BEHIND",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for t in &report.templates {
        let newest = t.newest.map_or_else(|| "-".into(), |v| v.to_string());
        for (i, g) in t.versions.iter().enumerate() {
            let first = i == 0;
            rows.push(vec![
                if first {
                    t.template.clone()
                } else {
                    String::new()
                },
                if first { t.kind.clone() } else { String::new() },
                format!(
                    "{}{}",
                    g.version,
                    if g.registered { "" } else { " (unregistered)" }
                ),
                g.resources.to_string(),
                if first { newest.clone() } else { String::new() },
                g.minors_behind.to_string(),
                g.majors_behind.to_string(),
            ]);
        }
    }
    let mut out = if report.templates.is_empty() {
        "No versioned resources recorded.\n".to_string()
    } else {
        columns(&rows)
    };
    let with_oldest: Vec<&TemplateReport> = report
        .templates
        .iter()
        .filter(|t| t.versions.len() > 1)
        .collect();
    if !with_oldest.is_empty() {
        out.push_str("\nOldest versions running:\n");
        for t in with_oldest {
            if let Some(o) = &t.oldest {
                let more = o.count - o.resources.len();
                let _ = write!(
                    out,
                    "  {} v{}: {}",
                    t.template,
                    o.version,
                    o.resources.join(", ")
                );
                if more > 0 {
                    let _ = write!(out, " and {more} more");
                }
                out.push('\n');
            }
        }
    }
    sections(&mut out, report);
    out
}

/// The pull requests, stopped rollouts, holds and pins sections of [`table`].
fn sections(out: &mut String, report: &Report) {
    if !report.pull_requests.is_empty() {
        out.push_str("\nPull requests waiting:\n");
        for p in &report.pull_requests {
            let _ = writeln!(
                out,
                "  {} v{} -> v{}: {}/{}{} (opened {})",
                p.template,
                p.from_major,
                p.to_major,
                p.repo,
                p.path,
                p.url
                    .as_deref()
                    .map(|u| format!(" {u}"))
                    .unwrap_or_default(),
                p.opened_at
            );
        }
    }
    if !report.stopped_rollouts.is_empty() {
        out.push_str("\nRollouts stopped:\n");
        for r in &report.stopped_rollouts {
            let _ = writeln!(
                out,
                "  {} v{}: {} since {} (resources on it: {}){}",
                r.template,
                r.version,
                r.status.to_uppercase(),
                r.since,
                r.resources_on_it,
                r.reason
                    .as_deref()
                    .map(|x| format!(": {}", x.lines().next().unwrap_or("")))
                    .unwrap_or_default()
            );
        }
    }
    for (title, list) in [("Holds", &report.holds), ("Pins", &report.pins)] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}:");
        for h in list {
            let _ = writeln!(
                out,
                "  {}{}{}{}",
                h.target,
                h.version
                    .as_deref()
                    .map(|v| format!(" on v{v}"))
                    .unwrap_or_default(),
                h.until
                    .as_deref()
                    .map(|u| format!(" until {u}"))
                    .unwrap_or_default(),
                h.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
        }
    }
}

/// Left-aligned columns, two spaces apart.
fn columns(rows: &[Vec<String>]) -> String {
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
            let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
