//! Major upgrades, proposed as pull requests, never applied by themselves.
//!
//! When a template's newest registered major is above the one a spec file follows, protond
//! opens one pull request for that file in the repo that owns it (service specs in service
//! repos, environment specs in platform repos). The pull request carries the rewritten spec
//! ([`rewrite`]) and a body naming the template, from and to, the release notes, the input
//! schema diff, the affected resources and a summary of how their rendered infrastructure
//! changes. Merging it is an ordinary spec change, deployed by the ordinary path.
//!
//! # Guarantees
//! * At most one pull request per spec file: the state store keeps one row per file, and a
//!   lost store is recovered by asking the forge for the open pull request of the file's
//!   branch (whose name depends only on the file) before opening one.
//! * A newer major updates the open pull request (branch force-pushed, title and body
//!   replaced) instead of opening another.
//! * Nothing is pushed or changed while the proposal is unchanged: a steady state makes no
//!   forge calls at all.
//! * A pull request closed unmerged by someone is not proposed again until a newer major.
//! * A branch someone else pushed to is never overwritten.
//! * A pull request whose spec no longer needs it (upgraded by hand, file removed) is closed
//!   with a comment; a repo that could not be read closes nothing.
//! * At most `proposals.max_per_hour` pull requests are opened in any hour.

pub mod dashboard;
pub mod rewrite;
pub mod sign;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::catalog::Bundle;
use crate::catalog::releases::Release;
use crate::catalog::schema::{InputKind, PropertyInfo};
use crate::config::{Config, ForgeConfig, SpecRepo};
use crate::desired::{self, Snapshot, SpecEntry, SpecRepoState};
use crate::forge::{self, AnyForge, Forge as _, ForgeError, PullRequestDraft, PullState};
use crate::model::{ProposalState, ResourceId};
use crate::plan::DesiredState;
use crate::source::{SourceError, WriteCommitError};
use crate::spec::SpecFile;
use crate::state::{ProposalRecord, ResourceRecord, StateError, Store};
use crate::telemetry::Telemetry;
use crate::telemetry::events::{
    ProposalAdopted, ProposalCloseFailed, ProposalDeclined, ProposalEdited, ProposalFailed,
    ProposalInvalid, ProposalMerged, ProposalOpened, ProposalRateLimited, ProposalRetired,
    ProposalUpdated,
};

use rewrite::{InputEdit, RewriteError, Rewritten};

/// Longest body sent; GitHub refuses bodies over 65,536 characters.
const MAX_BODY: usize = 60_000;

/// A spec file that follows an older major than the newest registered.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The spec repo's configuration.
    pub repo: &'a SpecRepo,
    /// The repo as read.
    pub state: &'a SpecRepoState,
    /// The file.
    pub entry: &'a SpecEntry,
    /// Its parsed spec.
    pub spec: &'a SpecFile,
    /// The release it runs now, if its major still has one.
    pub from: Option<&'a Release>,
    /// Major followed now.
    pub from_major: u32,
    /// The newest release of the newest major.
    pub to: &'a Release,
}

/// Every spec file that should have an upgrade pull request, in repo and path order.
#[must_use]
pub fn candidates<'a>(config: &'a Config, snapshot: &'a Snapshot) -> Vec<Candidate<'a>> {
    let latest = snapshot.catalog.latest_major();
    let mut out = Vec::new();
    for state in &snapshot.spec_repos {
        let Some(repo) = config.spec_repos.iter().find(|r| r.name == state.repo) else {
            continue;
        };
        if state.unknown.is_some() {
            continue;
        }
        for entry in &state.files {
            let Ok(spec) = &entry.spec else { continue };
            let Some(t) = spec.template() else { continue };
            let Some(&newest) = latest.get(&t.name) else {
                continue;
            };
            if newest <= t.major {
                continue;
            }
            let Some(to) = snapshot.catalog.resolve(&t.name, newest, None) else {
                continue;
            };
            out.push(Candidate {
                repo,
                state,
                entry,
                spec,
                from: snapshot.catalog.resolve(&t.name, t.major, t.minor),
                from_major: t.major,
                to,
            });
        }
    }
    out
}

/// A pull request as protond wants it.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// Spec repo.
    pub repo: String,
    /// Spec file.
    pub path: String,
    /// The template the spec follows.
    pub template: String,
    /// From major.
    pub from_major: u32,
    /// To major.
    pub to_major: u32,
    /// The branch the pull request comes from.
    pub branch: String,
    /// The pull request's title.
    pub title: String,
    /// The pull request's body (release notes, schema and rendered diffs).
    pub body: String,
    /// Rewritten spec.
    pub rewritten: Rewritten,
    /// Commit of the spec branch the change is based on.
    pub base: String,
    /// Hash of spec text, target release and body.
    pub content: String,
}

/// The branch of a spec file's upgrade pull requests: fixed per file, whatever the major.
#[must_use]
pub fn branch_name(prefix: &str, path: &str) -> String {
    let stem = path
        .strip_suffix(".yaml")
        .or_else(|| path.strip_suffix(".yml"))
        .unwrap_or(path);
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_/".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean
        .split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    // A short hash of the exact path keeps names unique (`a.b.yaml` and `a-b.yaml`, `x.yaml`
    // and `x.yml`) and keeps refs from nesting (`payments` and `payments/x`).
    let h = hex::encode(Sha256::digest(path.as_bytes()));
    format!("{prefix}upgrade/{clean}-{}", &h[..8])
}

/// Why [`build`] could not build a candidate's pull request: its spec file cannot be
/// rewritten for the new major. The message names the file and the major.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot rewrite for v{major}: {source}")]
pub struct BuildError {
    /// The spec file, relative to its repo.
    pub path: String,
    /// The major the file was to be rewritten for.
    pub major: u32,
    /// Why the rewrite failed. Also in the message, which has always named it;
    /// [`crate::error_chain`] prints it once.
    #[source]
    pub source: RewriteError,
}

/// Builds the pull request for a candidate: rewritten spec, title and body.
///
/// # Errors
///
/// A [`BuildError`] when the spec cannot be rewritten (no `template:` header, not a
/// mapping).
pub fn build(
    c: &Candidate<'_>,
    snapshot: &Snapshot,
    deployed: &[ResourceRecord],
    config: &Config,
) -> Result<Proposal, BuildError> {
    let to_bundle: &Bundle = &c.to.bundle;
    let rewritten = rewrite::rewrite(&c.entry.text, to_bundle).map_err(|source| BuildError {
        path: c.entry.path.clone(),
        major: c.to.version.major,
        source,
    })?;
    let (kind_word, name) = match c.spec {
        SpecFile::Environment(e) => ("environment", e.name.as_str()),
        SpecFile::Service(s) => ("service", s.name.as_str()),
    };
    let template = &c.to.template;
    let title = format!(
        "Upgrade {kind_word} {name} to {template} v{}",
        c.to.version.major
    );
    let body = body(c, snapshot, deployed, config, &rewritten, kind_word, name);
    // Two parts: what the branch holds (spec and target release) and what the body says.
    // A change of the body alone (say, a deployment elsewhere) only edits the pull request.
    let digest = |parts: &[&str]| {
        let mut h = Sha256::new();
        for part in parts {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    };
    let branch_part = digest(&[c.entry.text.as_str(), c.to.commit.as_str()]);
    let body_part = digest(&[&title, &body]);
    Ok(Proposal {
        repo: c.repo.name.clone(),
        path: c.entry.path.clone(),
        template: template.clone(),
        from_major: c.from_major,
        to_major: c.to.version.major,
        branch: branch_name(&config.proposals.branch_prefix, &c.entry.path),
        title,
        body,
        rewritten,
        base: c.state.commit.clone().unwrap_or_default(),
        content: format!("{branch_part}:{body_part}"),
    })
}

fn input_kinds(spec: &SpecFile) -> &'static [InputKind] {
    match spec {
        SpecFile::Environment(_) => &[InputKind::Environment],
        SpecFile::Service(_) => &[InputKind::Service, InputKind::Pipeline],
    }
}

/// The input-schema changes between two bundles, as table rows: (input, change).
#[must_use]
pub fn schema_diff(from: &Bundle, to: &Bundle, kinds: &[InputKind]) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for &kind in kinds {
        let old: BTreeMap<String, PropertyInfo> = from
            .schema
            .properties(kind)
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        let new = to.schema.properties(kind);
        match (
            from.schema.input_type(kind).is_some(),
            to.schema.input_type(kind).is_some(),
        ) {
            (false, true) => rows.push((format!("{kind} inputs"), "new input type".into())),
            (true, false) => rows.push((format!("{kind} inputs"), "removed".into())),
            _ => {}
        }
        for p in &new {
            let label = format!("{kind}.{}", p.name);
            match old.get(&p.name) {
                None => rows.push((
                    label,
                    format!(
                        "added: {}{}{}",
                        p.type_name,
                        if p.required {
                            ", required"
                        } else {
                            ", optional"
                        },
                        p.default
                            .as_ref()
                            .map(|d| format!(", default `{d}`"))
                            .unwrap_or_default()
                    ),
                )),
                Some(o) => {
                    let mut changes = Vec::new();
                    if o.type_name != p.type_name {
                        changes.push(format!("type {} → {}", o.type_name, p.type_name));
                    }
                    if o.required != p.required {
                        changes.push(
                            if p.required {
                                "now required"
                            } else {
                                "now optional"
                            }
                            .to_string(),
                        );
                    }
                    if o.default != p.default {
                        let show = |d: &Option<serde_json::Value>| {
                            d.as_ref()
                                .map_or_else(|| "none".to_string(), |v| format!("`{v}`"))
                        };
                        changes.push(format!(
                            "default {} → {}",
                            show(&o.default),
                            show(&p.default)
                        ));
                    }
                    if !changes.is_empty() {
                        rows.push((label, changes.join("; ")));
                    }
                }
            }
        }
        for name in old.keys() {
            if !new.iter().any(|p| &p.name == name) {
                rows.push((format!("{kind}.{name}"), "removed".into()));
            }
        }
    }
    rows
}

/// How the rendered infrastructure of one resource changes.
#[must_use]
pub fn summarize_render(old: &[(String, String)], new: &[(String, String)]) -> String {
    let resources = |docs: &[(String, String)]| -> Option<BTreeMap<String, serde_yaml::Value>> {
        let mut out = BTreeMap::new();
        for (_, text) in docs {
            let v: serde_yaml::Value = crate::catalog::yaml::from_str(text).ok()?;
            for (k, r) in v.get("Resources")?.as_mapping()? {
                out.insert(k.as_str()?.to_string(), r.clone());
            }
        }
        Some(out)
    };
    if let (Some(a), Some(b)) = (resources(old), resources(new)) {
        let type_of = |r: &serde_yaml::Value| {
            r.get("Type")
                .and_then(serde_yaml::Value::as_str)
                .unwrap_or("?")
                .to_string()
        };
        let added: Vec<String> = b
            .iter()
            .filter(|(k, _)| !a.contains_key(*k))
            .map(|(k, r)| format!("`{k}` ({})", type_of(r)))
            .collect();
        let removed: Vec<String> = a
            .iter()
            .filter(|(k, _)| !b.contains_key(*k))
            .map(|(k, r)| format!("`{k}` ({})", type_of(r)))
            .collect();
        let changed: Vec<String> = b
            .iter()
            .filter(|(k, r)| a.get(*k).is_some_and(|o| o != *r))
            .map(|(k, _)| format!("`{k}`"))
            .collect();
        if added.is_empty() && removed.is_empty() && changed.is_empty() {
            return "no resource changes".into();
        }
        let mut parts = Vec::new();
        for (word, list) in [("added", added), ("removed", removed), ("changed", changed)] {
            if !list.is_empty() {
                parts.push(format!("{} {word}: {}", list.len(), list.join(", ")));
            }
        }
        return parts.join("; ");
    }
    let lines = |docs: &[(String, String)]| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (_, t) in docs {
            for l in t.lines() {
                *m.entry(l.trim_end().to_string()).or_insert(0) += 1;
            }
        }
        m
    };
    let (a, b) = (lines(old), lines(new));
    let plus: usize = b
        .iter()
        .map(|(l, n)| n.saturating_sub(a.get(l).copied().unwrap_or(0)))
        .sum();
    let minus: usize = a
        .iter()
        .map(|(l, n)| n.saturating_sub(b.get(l).copied().unwrap_or(0)))
        .sum();
    if plus == 0 && minus == 0 {
        "no changes".into()
    } else {
        format!("{plus} lines added, {minus} removed")
    }
}

/// Renders the candidate's resources before and after, from a snapshot holding only the
/// environments and this file. Returns (resource id, summary).
fn render_changes(
    c: &Candidate<'_>,
    snapshot: &Snapshot,
    deployed: &[ResourceRecord],
    config: &Config,
    rewritten: &Rewritten,
) -> Vec<(String, String)> {
    let stem = Path::new(&c.entry.path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let new_spec = crate::spec::parse(&rewritten.text, &c.entry.path, &stem)
        .map_err(|es| es.iter().map(ToString::to_string).collect::<Vec<_>>());
    let reduced = |replacement: Option<Result<SpecFile, Vec<String>>>| -> Snapshot {
        let mut s = Snapshot {
            catalog: snapshot.catalog.clone(),
            template_repo_errors: Vec::new(),
            stale_repos: Vec::new(),
            spec_repos: Vec::new(),
            retired_repos: snapshot.retired_repos.clone(),
            customer_stacks: snapshot.customer_stacks.clone(),
        };
        for repo in &snapshot.spec_repos {
            let files = repo
                .files
                .iter()
                .filter(|f| {
                    (repo.repo == c.state.repo && f.path == c.entry.path)
                        || matches!(f.spec, Ok(SpecFile::Environment(_)))
                })
                .map(|f| {
                    let mut f = f.clone();
                    if repo.repo == c.state.repo
                        && f.path == c.entry.path
                        && let Some(r) = &replacement
                    {
                        f.spec.clone_from(r);
                        f.text.clone_from(&rewritten.text);
                    }
                    f
                })
                .collect();
            s.spec_repos.push(SpecRepoState {
                repo: repo.repo.clone(),
                branch: repo.branch.clone(),
                platform: repo.platform,
                commit: repo.commit.clone(),
                files,
                unknown: repo.unknown.clone(),
                approvals: repo.approvals.clone(),
            });
        }
        s
    };
    let spec_error = new_spec.as_ref().err().and_then(|es| es.first().cloned());
    let before = desired::compute(&reduced(None), deployed, &config.account_id);
    let after = desired::compute(&reduced(Some(new_spec)), deployed, &config.account_id);
    let owned = owned_ids(c.spec);
    let mut out = Vec::new();
    for id in owned {
        let old = before.resources.iter().find(|r| r.desired.id == id);
        let new = after.resources.iter().find(|r| r.desired.id == id);
        let summary = match (old, new) {
            (_, None) => match &spec_error {
                Some(e) => format!("not rendered yet: {e}"),
                None => "no longer rendered".to_string(),
            },
            (_, Some(n)) if !matches!(n.desired.state, DesiredState::Ready { .. }) => {
                match &n.desired.state {
                    DesiredState::Invalid { error } => format!(
                        "not rendered yet: {}",
                        error.lines().next().unwrap_or_default()
                    ),
                    DesiredState::Blocked { on } => format!("waits for {}", on.join(", ")),
                    DesiredState::Ready { .. } => String::new(),
                }
            }
            (Some(o), Some(n)) if matches!(o.desired.state, DesiredState::Ready { .. }) => {
                summarize_render(&o.documents, &n.documents)
            }
            (_, Some(n)) => format!(
                "new rendering ({} file{})",
                n.documents.len(),
                if n.documents.len() == 1 { "" } else { "s" }
            ),
        };
        out.push((id, summary));
    }
    out
}

/// Ids of the resources a spec file declares (components are not templated: unaffected).
pub(crate) fn owned_ids(spec: &SpecFile) -> Vec<String> {
    match spec {
        SpecFile::Environment(e) => vec![ResourceId::environment(&e.name).to_string()],
        SpecFile::Service(s) => {
            let mut ids: Vec<String> = s
                .instances
                .iter()
                .map(|i| ResourceId::service_instance(&s.name, &i.name).to_string())
                .collect();
            if s.pipeline.is_some() {
                ids.push(ResourceId::pipeline(&s.name).to_string());
            }
            ids
        }
    }
}

fn quote(text: &str) -> String {
    text.lines()
        .map(|l| format!("> {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn body(
    c: &Candidate<'_>,
    snapshot: &Snapshot,
    deployed: &[ResourceRecord],
    config: &Config,
    rewritten: &Rewritten,
    kind_word: &str,
    name: &str,
) -> String {
    let t = &c.to.template;
    let to = c.to.version;
    let mut b = String::new();
    let from = c.from.map_or_else(
        || {
            format!(
                "v{} (no release of it is registered any more)",
                c.from_major
            )
        },
        |r| format!("v{} (newest release `{}`)", c.from_major, r.tag),
    );
    let _ = writeln!(
        b,
        "This pull request upgrades the {kind_word} **{name}** (`{}`) from template **{t}** {from} to **v{}** (release `{}`).\n",
        c.entry.path, to.major, c.to.tag
    );
    let _ = writeln!(
        b,
        "| | |\n|---|---|\n| Template | `{t}` |\n| From | v{} |\n| To | v{}.{} |\n| Spec file | `{}` in `{}` |\n",
        c.from_major, to.major, to.minor, c.entry.path, c.repo.name
    );
    let _ = writeln!(
        b,
        "protond never applies a major version by itself: merging this pull request is an ordinary spec change, deployed stage by stage like any other.\n"
    );
    if rewritten.has_placeholders() {
        let _ = writeln!(
            b,
            "**Before merging:** the new version requires inputs without defaults. They are set to the placeholder `{}`, which fails validation until replaced; see the table below.\n",
            crate::spec::PLACEHOLDER
        );
    }

    if let SpecFile::Environment(e) = c.spec {
        let blocked = incompatible_services(snapshot, &e.name, t, to.major);
        if !blocked.is_empty() {
            let _ = writeln!(
                b,
                "**Upgrade these services first:** their templates do not list `{t}:{}` as a compatible environment, so they would stay as deployed (and be reported invalid) until they move to a major that does:\n",
                to.major
            );
            for line in blocked {
                let _ = writeln!(b, "- {line}");
            }
            b.push('\n');
        }
    }

    let _ = writeln!(b, "### Release notes\n");
    let mut notes = 0;
    let mut releases: Vec<&Release> = snapshot
        .catalog
        .releases()
        .filter(|r| r.template == *t && r.version.major == to.major)
        .collect();
    releases.sort_by_key(|r| std::cmp::Reverse(r.version));
    for r in releases {
        if let Some(n) = r.notes.as_deref().filter(|n| !n.trim().is_empty()) {
            let _ = writeln!(b, "**{}**\n\n{}\n", r.tag, quote(n));
            notes += 1;
        }
    }
    if notes == 0 {
        let _ = writeln!(
            b,
            "_The release tags carry no notes (tag with `git tag -a` to add them)._\n"
        );
    }

    let _ = writeln!(b, "### Input schema changes\n");
    match c.from {
        Some(from) => {
            let rows = schema_diff(&from.bundle, &c.to.bundle, input_kinds(c.spec));
            if rows.is_empty() {
                let _ = writeln!(b, "No input changes.\n");
            } else {
                let _ = writeln!(b, "| Input | Change |\n|---|---|");
                for (input, change) in rows {
                    let _ = writeln!(b, "| `{input}` | {change} |");
                }
                b.push('\n');
            }
        }
        None => {
            let _ = writeln!(
                b,
                "Unknown: no release of v{} is registered to compare with.\n",
                c.from_major
            );
        }
    }

    let _ = writeln!(b, "### Changes to this spec\n");
    let mut spec_rows = Vec::new();
    spec_rows.push(format!("`template.major`: {} → {}", c.from_major, to.major));
    if let Some(m) = rewritten.unpinned {
        spec_rows.push(format!(
            "`template.minor`: the pin to {}.{m} is removed (it named a minor of the old major)",
            c.from_major
        ));
    }
    for e in &rewritten.edits {
        spec_rows.push(match e {
            InputEdit::Filled { path, value } => {
                format!("`{path}`: added, set to its default `{value}`")
            }
            InputEdit::Placeholder { path, about } => format!(
                "`{path}`: added as a **placeholder, fill it in**{}",
                about
                    .as_deref()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default()
            ),
            InputEdit::Dropped { path } => {
                format!("`{path}`: removed (v{} no longer has it)", to.major)
            }
        });
    }
    for r in spec_rows {
        let _ = writeln!(b, "- {r}");
    }
    if !rewritten.formatting_kept {
        let _ = writeln!(
            b,
            "\n_This file's layout could not be edited in place, so it was rewritten whole; comments below its header were not kept._"
        );
    }
    b.push('\n');

    let _ = writeln!(b, "### Affected resources\n");
    let by_id: BTreeMap<&str, &ResourceRecord> =
        deployed.iter().map(|r| (r.id.as_str(), r)).collect();
    let changes = render_changes(c, snapshot, deployed, config, rewritten);
    let _ = writeln!(
        b,
        "| Resource | Environment | Deployed now | Rendered infrastructure |\n|---|---|---|---|"
    );
    for (id, summary) in changes {
        let rec = by_id.get(id.as_str());
        let env = rec
            .and_then(|r| r.environment.clone())
            .or_else(|| environment_of(c.spec, &id))
            .unwrap_or_else(|| "-".into());
        let now = rec.map_or_else(
            || "not deployed".to_string(),
            |r| format!("{} {} ({})", r.template, r.version, r.status),
        );
        let _ = writeln!(
            b,
            "| `{id}` | {env} | {now} | {} |",
            summary.replace('|', "\\|")
        );
    }
    let _ = writeln!(
        b,
        "\n<!-- protond:proposal repo={} path={} template={t} to={} -->",
        c.repo.name, c.entry.path, to.major
    );
    if b.len() > MAX_BODY {
        let mut cut = MAX_BODY;
        while !b.is_char_boundary(cut) {
            cut -= 1;
        }
        b.truncate(cut);
        b.push_str("\n\n_(truncated)_\n");
    }
    b
}

/// Service instances in `env` whose template (at the major they follow) does not accept
/// environment template `template` at `major`.
fn incompatible_services(
    snapshot: &Snapshot,
    env: &str,
    template: &str,
    major: u32,
) -> Vec<String> {
    let mut out = Vec::new();
    for repo in &snapshot.spec_repos {
        for f in &repo.files {
            let Ok(SpecFile::Service(s)) = &f.spec else {
                continue;
            };
            let Some(t) = &s.template else { continue };
            let Some(release) = snapshot.catalog.resolve(&t.name, t.major, t.minor) else {
                continue;
            };
            let ok = release
                .bundle
                .compatible_environments
                .iter()
                .any(|c| c.name == template && c.major == major);
            if ok {
                continue;
            }
            for i in s.instances.iter().filter(|i| i.environment == env) {
                out.push(format!(
                    "`{}` ({} v{}, `{}` in `{}`)",
                    ResourceId::service_instance(&s.name, &i.name),
                    t.name,
                    t.major,
                    f.path,
                    repo.repo
                ));
            }
        }
    }
    out
}

fn environment_of(spec: &SpecFile, id: &str) -> Option<String> {
    match spec {
        SpecFile::Environment(e) => Some(e.name.clone()),
        SpecFile::Service(s) => s
            .instances
            .iter()
            .find(|i| ResourceId::service_instance(&s.name, &i.name).to_string() == id)
            .map(|i| i.environment.clone()),
    }
}

/// Files whose last attempt failed: when to try again, and how many failures in a row.
pub type Backoff = std::sync::Mutex<BTreeMap<String, (Instant, u32)>>;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Pull requests opened (or branches pushed, for the `git` forge).
    pub opened: usize,
    /// Pull requests updated.
    pub updated: usize,
    /// Pull requests closed as superseded.
    pub closed: usize,
    /// Pull requests found merged.
    pub merged: usize,
    /// Proposals waiting for the hourly limit.
    pub rate_limited: usize,
    /// New proposals waiting for their repo's `proposals.schedule`.
    pub outside_schedule: usize,
    /// Dashboard issues opened or edited.
    pub dashboards: usize,
    /// Errors (one line each).
    pub errors: Vec<String>,
}

/// A failed step for one spec file. Everything but a permanent forge error is retried
/// after a back-off.
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// The forge refused or failed a call.
    #[error(transparent)]
    Forge(#[from] ForgeError),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The spec repo's mirror could not be opened.
    #[error(transparent)]
    Mirror(SourceError),
    /// The proposal's base (the spec repo's commit as read) is not a commit id.
    #[error("writing the upgrade commit: {source}")]
    Base {
        /// The base as recorded.
        base: String,
        /// Why it is not a commit id.
        #[source]
        source: gix::Error,
    },
    /// The upgrade commit could not be written into the mirror.
    #[error("writing the upgrade commit: {0}")]
    WriteCommit(#[source] WriteCommitError),
    /// The blocking git task panicked or was cancelled.
    #[error(transparent)]
    Task(tokio::task::JoinError),
    /// The commit could not be signed (`[proposals] sign`).
    #[error(transparent)]
    Sign(#[from] sign::SignError),
}

/// What one pass has done so far: the report it returns, and where its events count.
struct Pass<'a> {
    report: SyncReport,
    telemetry: &'a Telemetry,
}

/// Opens, updates and closes pull requests so that they match the snapshot, then brings the
/// repos' dashboard issues up to date ([`dashboard::sync`]). Spec repos without a forge are
/// skipped. One file's failure never stops the others. Every outcome is logged and counted
/// through `telemetry`'s proposal events.
pub async fn sync(
    config: &Config,
    store: &Store,
    telemetry: &Telemetry,
    snapshot: &Snapshot,
    deployed: &[ResourceRecord],
    backoff: &Backoff,
) -> SyncReport {
    let mut report = sync_pulls(config, store, telemetry, snapshot, deployed, backoff).await;
    if config.proposals.enabled {
        let (changed, errors) = dashboard::sync(config, store, snapshot, deployed).await;
        report.dashboards = changed;
        report.errors.extend(errors);
    }
    report
}

async fn sync_pulls(
    config: &Config,
    store: &Store,
    telemetry: &Telemetry,
    snapshot: &Snapshot,
    deployed: &[ResourceRecord],
    backoff: &Backoff,
) -> SyncReport {
    let mut pass = Pass {
        report: SyncReport::default(),
        telemetry,
    };
    if !config.proposals.enabled {
        return pass.report;
    }
    let cands = candidates(config, snapshot);
    let mut wanted = Vec::new();
    let mut unbuilt = std::collections::BTreeSet::new();
    for c in &cands {
        if c.repo.forge.is_none() {
            continue;
        }
        match build(c, snapshot, deployed, config) {
            Ok(p) => wanted.push((c.repo, p)),
            Err(e) => {
                let error = e.to_string();
                ProposalInvalid {
                    repo: &c.repo.name,
                    file: &c.entry.path,
                    error: &error,
                }
                .emit(telemetry);
                unbuilt.insert((c.repo.name.clone(), c.entry.path.clone()));
                pass.report.errors.push(error);
            }
        }
    }
    for (repo, p) in &wanted {
        let key = format!("{}:{}", repo.name, p.path);
        if backoff
            .lock()
            .ok()
            .and_then(|b| b.get(&key).map(|(until, _)| Instant::now() < *until))
            .unwrap_or(false)
        {
            continue;
        }
        let Some(forge_cfg) = &repo.forge else {
            continue;
        };
        match ensure(config, store, repo, forge_cfg, p, &mut pass).await {
            Ok(()) => {
                if let Ok(mut b) = backoff.lock() {
                    b.remove(&key);
                }
            }
            Err(e) => {
                let retry = match &e {
                    StepError::Forge(f) => f.is_retryable(),
                    _ => true,
                };
                // Back off this file: 1 minute, doubling, at most an hour (a permanent
                // error waits the hour), so a broken token or repo is not hammered.
                let wait = if let Ok(mut b) = backoff.lock() {
                    let n = b.get(&key).map_or(0, |(_, n)| *n) + 1;
                    let secs = if retry {
                        (60u64 << n.min(6)).min(3600)
                    } else {
                        3600
                    };
                    b.insert(key.clone(), (Instant::now() + Duration::from_secs(secs), n));
                    secs
                } else {
                    0
                };
                ProposalFailed {
                    repo: &repo.name,
                    file: &p.path,
                    template: &p.template,
                    to: p.to_major,
                    retry,
                    retry_in_secs: wait,
                    error: &e,
                }
                .emit(telemetry);
                pass.report
                    .errors
                    .push(format!("{}: {}: {e}", repo.name, p.path));
            }
        }
    }
    // Open pull requests no longer wanted.
    let open = match store.proposals().await {
        Ok(rows) => rows,
        Err(e) => {
            pass.report.errors.push(e.to_string());
            return pass.report;
        }
    };
    if !snapshot.template_repo_errors.is_empty() {
        // Part of the catalogue is unknown: "no longer wanted" cannot be told apart from
        // "not seen". Retire nothing this pass.
        return finish_report(pass.report);
    }
    for row in open.into_iter().filter(|r| r.state == ProposalState::Open) {
        if wanted
            .iter()
            .any(|(r, p)| r.name == row.repo && p.path == row.path)
            || unbuilt.contains(&(row.repo.clone(), row.path.clone()))
            || !snapshot.catalog.knows(&row.template)
        {
            continue;
        }
        let Some(repo) = config.spec_repos.iter().find(|r| r.name == row.repo) else {
            continue; // the repo left the config: leave its pull requests alone
        };
        let Some(forge_cfg) = &repo.forge else {
            continue;
        };
        let Some(state) = snapshot.spec_repos.iter().find(|s| s.repo == row.repo) else {
            continue;
        };
        if state.unknown.is_some() {
            continue; // unreadable: never act on a failed fetch
        }
        let entry = state.files.iter().find(|f| f.path == row.path);
        let reason = match entry.map(|e| &e.spec) {
            None => "the spec file was removed".to_string(),
            Some(Err(_)) => continue, // broken for now: decide once it parses again
            Some(Ok(spec)) => match spec.template() {
                Some(t) if t.name == row.template && i64::from(t.major) >= row.to_major => {
                    format!("the spec now follows {} v{}", t.name, t.major)
                }
                Some(t) if t.name != row.template => {
                    format!("the spec now follows another template, {}", t.name)
                }
                Some(t) => {
                    format!(
                        "{} v{} is no longer the newest major",
                        row.template, row.to_major
                    ) + &format!(" (the spec follows v{})", t.major)
                }
                None => "the spec no longer names a template".to_string(),
            },
        };
        if let Err(e) = retire(config, store, repo, forge_cfg, row, &reason, &mut pass).await {
            ProposalCloseFailed {
                repo: &repo.name,
                error: &e,
            }
            .emit(telemetry);
            pass.report.errors.push(e.to_string());
        }
    }
    finish_report(pass.report)
}

fn finish_report(report: SyncReport) -> SyncReport {
    if report != SyncReport::default() {
        tracing::info!(
            opened = report.opened,
            updated = report.updated,
            closed = report.closed,
            merged = report.merged,
            rate_limited = report.rate_limited,
            errors = report.errors.len(),
            "Upgrade pull requests synchronised."
        );
    }
    report
}

fn mirror_dir(config: &Config, url: &str) -> Result<std::path::PathBuf, StepError> {
    crate::source::Mirror::open(url, &config.data_dir.join("git"))
        .map(|m| m.path().to_path_buf())
        .map_err(StepError::Mirror)
}

/// Writes the proposal's commit into the repo's mirror (no reference is changed).
async fn write_commit(config: &Config, repo: &SpecRepo, p: &Proposal) -> Result<String, StepError> {
    let mirror = crate::source::Mirror::open(&repo.url, &config.data_dir.join("git"))
        .map_err(StepError::Mirror)?;
    let base = p.base.clone();
    let path = p.path.clone();
    let text = p.rewritten.text.clone();
    let message = format!(
        "{}\n\nProposed by protond: {} v{} -> v{} for {}.\n",
        p.title, p.template, p.from_major, p.to_major, p.path
    );
    let (name, email) = (
        config.proposals.author_name.clone(),
        config.proposals.author_email.clone(),
    );
    let git_dir = mirror.path().to_path_buf();
    let written = tokio::task::spawn_blocking(move || -> Result<String, StepError> {
        let base_id = gix::ObjectId::from_hex(base.as_bytes())
            .map_err(|source| StepError::Base { base, source })?;
        mirror
            .write_commit(
                base_id,
                &[(path, text.into_bytes())],
                &[],
                &message,
                (&name, &email),
            )
            .map(|id| id.to_string())
            .map_err(StepError::WriteCommit)
    })
    .await
    .map_err(StepError::Task)??;
    match &config.proposals.signing {
        Some(signing) => Ok(sign::sign(&git_dir, &written, signing).await?),
        None => Ok(written),
    }
}

/// Whether commit `id` of the repo's mirror was written by protond's configured author.
async fn authored_by_us(config: &Config, repo: &SpecRepo, id: &str) -> bool {
    let Ok(mirror) = crate::source::Mirror::open(&repo.url, &config.data_dir.join("git")) else {
        return false;
    };
    let Ok(oid) = gix::ObjectId::from_hex(id.as_bytes()) else {
        return false;
    };
    let email = config.proposals.author_email.clone();
    tokio::task::spawn_blocking(move || mirror.commit_author_email(oid).is_some_and(|e| e == email))
        .await
        .unwrap_or(false)
}

/// Whether a new pull request for `repo` may open at `now`: always without a schedule,
/// else when the schedule matches the current minute in the rollout time zone.
fn may_open_now(repo: &SpecRepo, tz: chrono_tz::Tz, now: chrono::DateTime<chrono::Utc>) -> bool {
    repo.pull_options
        .schedule
        .as_ref()
        .is_none_or(|s| s.includes(now.with_timezone(&tz)))
}

fn draft(repo: &SpecRepo, p: &Proposal) -> PullRequestDraft {
    let kind = repo
        .forge
        .as_ref()
        .map_or(crate::config::ForgeKind::Git, |f| f.kind);
    PullRequestDraft {
        branch: p.branch.clone(),
        base: repo.branch.trim_start_matches("refs/heads/").to_string(),
        title: forge::draft_title(kind, &p.title, repo.pull_options.draft),
        body: p.body.clone(),
    }
}

fn record(p: &Proposal, forge: &ForgeConfig, created_at: String) -> ProposalRecord {
    let now = crate::state::now();
    ProposalRecord {
        repo: p.repo.clone(),
        path: p.path.clone(),
        template: p.template.clone(),
        from_major: i64::from(p.from_major),
        to_major: i64::from(p.to_major),
        branch: p.branch.clone(),
        forge: forge.kind.as_str().to_string(),
        number: None,
        url: None,
        state: ProposalState::Open,
        head: None,
        content: p.content.clone(),
        edited: false,
        created_at,
        updated_at: now,
    }
}

async fn ensure(
    config: &Config,
    store: &Store,
    repo: &SpecRepo,
    forge_cfg: &ForgeConfig,
    p: &Proposal,
    pass: &mut Pass<'_>,
) -> Result<(), StepError> {
    let forge = AnyForge::new(forge_cfg);
    let existing = store.proposal(&p.repo, &p.path).await?;
    if let Some(row) = &existing {
        match row.state {
            ProposalState::Open if row.content == p.content => return Ok(()),
            ProposalState::Declined | ProposalState::Merged
                if row.to_major >= i64::from(p.to_major) =>
            {
                return Ok(());
            }
            ProposalState::Open => {
                let pr = match row.number {
                    Some(n) => Some(forge.get(n).await?),
                    None => None,
                };
                match pr.map(|x| x.state) {
                    Some(PullState::Closed) if row.to_major == i64::from(p.to_major) => {
                        let mut row = row.clone();
                        row.state = ProposalState::Declined;
                        row.updated_at = crate::state::now();
                        store.put_proposal(&row).await?;
                        ProposalDeclined {
                            repo: &p.repo,
                            file: &p.path,
                            to: p.to_major,
                        }
                        .emit(pass.telemetry);
                        return Ok(());
                    }
                    Some(PullState::Merged) if row.to_major == i64::from(p.to_major) => {
                        // Merged: the spec follows shortly. Never propose the same upgrade twice.
                        let mut row = row.clone();
                        row.state = ProposalState::Merged;
                        row.updated_at = crate::state::now();
                        store.put_proposal(&row).await?;
                        pass.report.merged += 1;
                        ProposalMerged {
                            repo: &p.repo,
                            file: &p.path,
                            to: p.to_major,
                        }
                        .emit(pass.telemetry);
                        return Ok(());
                    }
                    Some(PullState::Closed | PullState::Merged) => {} // open a new one below
                    Some(PullState::Open) | None => {
                        return update(config, store, repo, forge_cfg, &forge, row, p, pass).await;
                    }
                }
            }
            ProposalState::Closed | ProposalState::Declined | ProposalState::Merged => {}
        }
    }
    // Open a new pull request, inside the repo's schedule only.
    if !may_open_now(repo, config.timezone, chrono::Utc::now()) {
        pass.report.outside_schedule += 1;
        tracing::debug!(
            repo = %p.repo,
            file = %p.path,
            "outside the proposal schedule; the pull request opens in the next window"
        );
        return Ok(());
    }
    let since = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() - std::time::Duration::from_hours(1),
    )
    .to_string();
    if store.proposals_opened_since(&since).await? >= config.proposals.max_per_hour {
        pass.report.rate_limited += 1;
        ProposalRateLimited {
            repo: &p.repo,
            file: &p.path,
            limit: config.proposals.max_per_hour,
        }
        .emit(pass.telemetry);
        return Ok(());
    }
    let git_dir = mirror_dir(config, &repo.url)?;
    let base = repo.branch.trim_start_matches("refs/heads/");
    if let Some(pr) = forge.find_open_to(&p.branch, base).await? {
        // Ours from before a lost state store: adopt it. Its branch is only overwritten if
        // its tip is a commit protond wrote (by the configured author).
        let head = forge::remote_head(&git_dir, &repo.url, &p.branch, forge_cfg).await?;
        let ours = match &head {
            Some(h) => authored_by_us(config, repo, h).await,
            None => false,
        };
        let mut row = record(p, forge_cfg, crate::state::now());
        row.number = Some(pr.number);
        row.url = Some(pr.url.clone());
        row.head = head;
        row.edited = !ours;
        row.content = String::new();
        store.put_proposal(&row).await?;
        ProposalAdopted {
            repo: &p.repo,
            file: &p.path,
            number: pr.number,
        }
        .emit(pass.telemetry);
        return update(config, store, repo, forge_cfg, &forge, &row, p, pass).await;
    }
    let commit = write_commit(config, repo, p).await?;
    forge::push_branch(&git_dir, &repo.url, &commit, &p.branch, forge_cfg).await?;
    let d = draft(repo, p);
    let (pr, warnings) = forge.open_with(&d, &repo.pull_options).await?;
    for w in &warnings {
        tracing::warn!(
            repo = %p.repo,
            file = %p.path,
            error = %w,
            "the pull request is open, but one of its proposals options could not be applied"
        );
    }
    let mut row = record(p, forge_cfg, crate::state::now());
    row.head = Some(commit);
    if let Some(pr) = &pr {
        row.number = Some(pr.number);
        row.url = Some(pr.url.clone());
    }
    store.put_proposal(&row).await?;
    pass.report.opened += 1;
    ProposalOpened {
        repo: &p.repo,
        file: &p.path,
        template: &p.template,
        from: p.from_major,
        to: p.to_major,
        branch: &p.branch,
        pull_request: pr.as_ref().map(|pr| (pr.number, pr.url.as_str())),
    }
    .emit(pass.telemetry);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn update(
    config: &Config,
    store: &Store,
    repo: &SpecRepo,
    forge_cfg: &ForgeConfig,
    forge: &AnyForge,
    row: &ProposalRecord,
    p: &Proposal,
    pass: &mut Pass<'_>,
) -> Result<(), StepError> {
    let git_dir = mirror_dir(config, &repo.url)?;
    let mut row = row.clone();
    if !row.edited {
        let head = forge::remote_head(&git_dir, &repo.url, &row.branch, forge_cfg).await?;
        if head.is_some() && head != row.head {
            row.edited = true;
            ProposalEdited {
                repo: &p.repo,
                file: &p.path,
                branch: &row.branch,
            }
            .emit(pass.telemetry);
        }
    }
    let mut body = p.body.clone();
    let branch_unchanged = row.content.split(':').next() == p.content.split(':').next()
        && row.to_major == i64::from(p.to_major);
    if branch_unchanged {
        // Only the body changed: no push.
    } else if row.edited {
        body.push_str(&format!(
            "\n> **Note:** someone else pushed to `{}`, so protond did not replace its content with the v{} rewrite. Close this pull request to get a fresh one.\n",
            row.branch, p.to_major
        ));
    } else {
        let commit = write_commit(config, repo, p).await?;
        forge::push_branch(&git_dir, &repo.url, &commit, &p.branch, forge_cfg).await?;
        row.head = Some(commit);
    }
    if let Some(n) = row.number {
        let mut d = draft(repo, p);
        d.body = body;
        forge.update(n, &d).await?;
    }
    row.from_major = i64::from(p.from_major);
    row.to_major = i64::from(p.to_major);
    row.template = p.template.clone();
    row.content = p.content.clone();
    row.updated_at = crate::state::now();
    store.put_proposal(&row).await?;
    pass.report.updated += 1;
    ProposalUpdated {
        repo: &p.repo,
        file: &p.path,
        template: &p.template,
        to: p.to_major,
        number: row.number,
    }
    .emit(pass.telemetry);
    Ok(())
}

async fn retire(
    config: &Config,
    store: &Store,
    repo: &SpecRepo,
    forge_cfg: &ForgeConfig,
    mut row: ProposalRecord,
    reason: &str,
    pass: &mut Pass<'_>,
) -> Result<(), StepError> {
    let forge = AnyForge::new(forge_cfg);
    let state = match row.number {
        Some(n) => forge.get(n).await?.state,
        None => PullState::Open,
    };
    let merged_by_hand = reason.starts_with("the spec now follows ") && !reason.contains("another");
    match state {
        PullState::Merged => {
            row.state = ProposalState::Merged;
            pass.report.merged += 1;
        }
        PullState::Closed => {
            row.state = ProposalState::Closed;
            pass.report.closed += 1;
        }
        PullState::Open => {
            if let Some(n) = row.number {
                forge
                    .close(n, &format!("protond closes this pull request: {reason}."))
                    .await?;
            }
            if !row.edited {
                let git_dir = mirror_dir(config, &repo.url)?;
                let head = forge::remote_head(&git_dir, &repo.url, &row.branch, forge_cfg).await?;
                if head.is_some() && head == row.head {
                    forge::delete_branch(&git_dir, &repo.url, &row.branch, forge_cfg).await?;
                }
            }
            if row.number.is_none() && merged_by_hand {
                row.state = ProposalState::Merged;
                pass.report.merged += 1;
            } else {
                row.state = ProposalState::Closed;
                pass.report.closed += 1;
            }
        }
    }
    row.updated_at = crate::state::now();
    store.put_proposal(&row).await?;
    ProposalRetired {
        repo: &row.repo,
        file: &row.path,
        state: row.state,
        reason,
    }
    .emit(pass.telemetry);
    Ok(())
}

#[cfg(test)]
mod tests;
