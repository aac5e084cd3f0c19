//! The per-repo dashboard issue (opt-in, `proposals = { dashboard = true }`), as Renovate's
//! dependency dashboard: one open issue per spec repo, titled [`title`], listing its open
//! upgrade pull requests, the minor upgrades not deployed yet (and what holds each), the
//! resources waiting for an approval, and the operator holds and pins that touch it.
//!
//! What it says is pure ([`gather`], [`body`]); [`sync`] finds the open issue by its title
//! when its text changes (so after a restart, too), edits it, or opens it when there is none:
//! the last text written is kept in memory (per forge, repo and title), so a steady state
//! makes no forge call after the first pass of a process. It must never open a second issue for a repo,
//! deploy, or write the state store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use crate::catalog::releases::Catalog;
use crate::config::{Config, SpecRepo};
use crate::desired::Snapshot;
use crate::forge::{AnyForge, ForgeError};
use crate::model::{ProposalState, Version};
use crate::plan::holds::{Hold, HoldTarget, rfc3339};
use crate::state::{PendingApproval, PinRecord, ProposalRecord, ResourceRecord, Store};

/// The hidden first line of every dashboard body.
const MARKER: &str = "<!-- protond:dashboard -->";

/// The dashboard issue's title for spec repo `repo`.
#[must_use]
pub fn title(repo: &str) -> String {
    format!("protond dashboard ({repo})")
}

/// An open upgrade pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenProposal {
    /// Spec file.
    pub path: String,
    /// Template.
    pub template: String,
    /// Major followed.
    pub from: i64,
    /// Major proposed.
    pub to: i64,
    /// Its number and web address, when the forge has them.
    pub link: Option<(i64, String)>,
}

/// A resource running an older minor than the newest of its major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMinor {
    /// Resource id.
    pub id: String,
    /// Template.
    pub template: String,
    /// Deployed.
    pub from: Version,
    /// Newest usable minor.
    pub to: Version,
    /// What holds it (empty: rolling out with the next cycles).
    pub held_by: Vec<String>,
}

/// What a repo's dashboard lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Items {
    /// Open upgrade pull requests.
    pub proposals: Vec<OpenProposal>,
    /// Minor upgrades not deployed yet.
    pub minors: Vec<PendingMinor>,
    /// Resources waiting for an approval: id, template, version, predicted changes.
    pub approvals: Vec<(String, String, Version, Vec<String>)>,
    /// Operator holds and pins touching the repo, one line each.
    pub holds: Vec<String>,
}

/// What the store and the snapshot say, for [`gather`].
pub struct Inputs<'a> {
    /// Every proposal row.
    pub proposals: &'a [ProposalRecord],
    /// Deployed resources (every repo's).
    pub deployed: &'a [ResourceRecord],
    /// Resources waiting for an approval.
    pub approvals: &'a BTreeMap<String, PendingApproval>,
    /// Operator holds.
    pub holds: &'a [Hold],
    /// Operator pins.
    pub pins: &'a [PinRecord],
    /// Registered releases.
    pub catalog: &'a Catalog,
    /// Resource ids whose spec file pins a minor, with that minor.
    pub spec_pins: &'a BTreeMap<String, u32>,
    /// The time (ended holds are left out).
    pub now: SystemTime,
}

/// Whether `target` covers resource `r` (stage holds cover every resource: stages are the
/// environments' own, not the records').
fn covers(target: &HoldTarget, r: &ResourceRecord) -> bool {
    match target {
        HoldTarget::Resource(id) => *id == r.id,
        HoldTarget::Environment(e) => r.environment.as_deref() == Some(e.as_str()),
        HoldTarget::Template(t) => *t == r.template,
        HoldTarget::Stage(_) => true,
    }
}

fn pin_touches(p: &PinRecord, r: &ResourceRecord) -> bool {
    let target = match p.target_kind.as_str() {
        "resource" => r.id == p.target_name,
        "environment" => r.environment.as_deref() == Some(p.target_name.as_str()),
        _ => true,
    };
    target && p.template.as_ref().is_none_or(|t| *t == r.template)
}

/// What repo `repo`'s dashboard lists, from `inputs` (pure).
#[must_use]
pub fn gather(repo: &str, inputs: &Inputs<'_>) -> Items {
    let mine: Vec<&ResourceRecord> = inputs.deployed.iter().filter(|r| r.repo == repo).collect();
    let ids: BTreeSet<&str> = mine.iter().map(|r| r.id.as_str()).collect();
    let holds: Vec<&Hold> = inputs
        .holds
        .iter()
        .filter(|h| h.active(inputs.now) && mine.iter().any(|r| covers(&h.target, r)))
        .collect();
    let proposals = inputs
        .proposals
        .iter()
        .filter(|p| p.repo == repo && p.state == ProposalState::Open)
        .map(|p| OpenProposal {
            path: p.path.clone(),
            template: p.template.clone(),
            from: p.from_major,
            to: p.to_major,
            link: p.number.zip(p.url.clone()),
        })
        .collect();
    let mut minors = Vec::new();
    for r in &mine {
        let Some(newest) = inputs.catalog.resolve(&r.template, r.version.major, None) else {
            continue;
        };
        if newest.version <= r.version {
            continue;
        }
        let mut held_by: Vec<String> = holds
            .iter()
            .filter(|h| covers(&h.target, r))
            .map(|h| format!("hold on {}", h.target))
            .collect();
        if let Some(minor) = inputs.spec_pins.get(&r.id) {
            held_by.push(format!("minor {minor} pinned in the spec"));
        }
        held_by.extend(
            inputs
                .pins
                .iter()
                .filter(|p| pin_touches(p, r))
                .map(|p| format!("pinned on {} by {}", p.version, p.by)),
        );
        if inputs.approvals.contains_key(&r.id) {
            held_by.push("waiting for an approval".into());
        }
        minors.push(PendingMinor {
            id: r.id.clone(),
            template: r.template.clone(),
            from: r.version,
            to: newest.version,
            held_by,
        });
    }
    let approvals = inputs
        .approvals
        .iter()
        .filter(|(id, _)| ids.contains(id.as_str()))
        .map(|(id, a)| (id.clone(), a.template.clone(), a.version, a.changes.clone()))
        .collect();
    let mut lines: Vec<String> = holds
        .iter()
        .map(|h| {
            format!(
                "hold on `{}`{} until {}, by {}: {}",
                h.target,
                if h.all { " (every change)" } else { "" },
                rfc3339(h.until),
                h.by,
                if h.reason.is_empty() {
                    "no reason given"
                } else {
                    h.reason.as_str()
                }
            )
        })
        .collect();
    lines.extend(
        inputs
            .pins
            .iter()
            .filter(|p| mine.iter().any(|r| pin_touches(p, r)))
            .map(|p| {
                format!(
                    "pin of `{}`{} on {}, by {}",
                    if p.target_kind == "resource" {
                        p.target_name.clone()
                    } else {
                        format!("{}:{}", p.target_kind, p.target_name)
                    },
                    p.template
                        .as_ref()
                        .map(|t| format!(" ({t})"))
                        .unwrap_or_default(),
                    p.version,
                    p.by
                )
            }),
    );
    Items {
        proposals,
        minors,
        approvals,
        holds: lines,
    }
}

/// The dashboard's Markdown for repo `repo` (pure: the same items give the same text).
#[must_use]
pub fn body(repo: &str, items: &Items) -> String {
    let mut b = format!(
        "{MARKER}\nWhat protond has pending for spec repo `{repo}`. protond keeps this issue up to date; edits to it are overwritten.\n"
    );
    let section = |b: &mut String, heading: &str, lines: Vec<String>| {
        let _ = write!(b, "\n## {heading}\n\n");
        if lines.is_empty() {
            b.push_str("None.\n");
        }
        for l in lines {
            let _ = writeln!(b, "- {l}");
        }
    };
    let proposals = items
        .proposals
        .iter()
        .map(|p| {
            let link = p
                .link
                .as_ref()
                .map(|(n, url)| format!(" ([#{n}]({url}))"))
                .unwrap_or_default();
            format!(
                "`{}`: **{}** v{} to v{}{link}",
                p.path, p.template, p.from, p.to
            )
        })
        .collect();
    section(&mut b, "Open upgrade pull requests", proposals);
    let minors = items
        .minors
        .iter()
        .map(|m| {
            let why = if m.held_by.is_empty() {
                "rolling out".to_string()
            } else {
                format!("held: {}", m.held_by.join("; "))
            };
            format!(
                "`{}`: **{}** {} to {} ({why})",
                m.id, m.template, m.from, m.to
            )
        })
        .collect();
    section(&mut b, "Minor upgrades not deployed yet", minors);
    let approvals = items
        .approvals
        .iter()
        .map(|(id, template, version, changes)| {
            let changes = if changes.is_empty() {
                "see `protond approvals`".to_string()
            } else {
                changes.join("; ")
            };
            format!(
                "`{id}`: **{template}** {version}: {changes} (`protond approve {id} {version}`)"
            )
        })
        .collect();
    section(&mut b, "Waiting for approval", approvals);
    section(&mut b, "Holds and pins", items.holds.clone());
    b
}

/// The last body written per forge, repo and title, with the issue's number.
type Written = Mutex<HashMap<(String, String, String), (i64, String)>>;

fn written() -> &'static Written {
    static WRITTEN: OnceLock<Written> = OnceLock::new();
    WRITTEN.get_or_init(Written::default)
}

/// Brings repo `repo`'s dashboard issue to `text`: nothing when the last text written is
/// `text`, else the open issue with the title is looked up (a dashboard closed by hand is
/// not edited) and edited, or opened when there is none. Whether the forge was changed.
async fn ensure(
    forge: &AnyForge,
    key: (String, String, String),
    text: &str,
) -> Result<bool, ForgeError> {
    let unchanged = written()
        .lock()
        .ok()
        .and_then(|w| w.get(&key).map(|(_, last)| last == text))
        .unwrap_or(false);
    if unchanged {
        return Ok(false);
    }
    let number = match forge.find_issue(&key.2).await? {
        Some(found) if found.body == text => {
            remember(key, found.number, text);
            return Ok(false);
        }
        Some(found) => {
            forge.edit_issue(found.number, text).await?;
            found.number
        }
        None => match forge.create_issue(&key.2, text).await? {
            Some(i) => i.number,
            None => return Ok(false),
        },
    };
    remember(key, number, text);
    Ok(true)
}

fn remember(key: (String, String, String), number: i64, text: &str) {
    if let Ok(mut w) = written().lock() {
        w.insert(key, (number, text.to_string()));
    }
}

/// The spec-pinned minors of repo `repo`'s resources, from the snapshot.
fn spec_pins(snapshot: &Snapshot, repo: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for state in snapshot.spec_repos.iter().filter(|s| s.repo == repo) {
        for entry in &state.files {
            let Ok(spec) = &entry.spec else { continue };
            let Some(minor) = spec.template().and_then(|t| t.minor) else {
                continue;
            };
            for id in super::owned_ids(spec) {
                out.insert(id, minor);
            }
        }
    }
    out
}

fn wants(repo: &SpecRepo) -> bool {
    repo.pull_options.dashboard && repo.forge.is_some() && !repo.retired
}

/// Brings the dashboard issue of every spec repo that asks for one up to date. Returns how
/// many issues were opened or edited, and one line per failure (a repo's failure never stops
/// the others).
pub async fn sync(
    config: &Config,
    store: &Store,
    snapshot: &Snapshot,
    deployed: &[ResourceRecord],
) -> (usize, Vec<String>) {
    let repos: Vec<&SpecRepo> = config.spec_repos.iter().filter(|r| wants(r)).collect();
    if repos.is_empty() {
        return (0, Vec::new());
    }
    let read = async {
        Ok::<_, crate::state::StateError>((
            store.proposals().await?,
            store.needs_approval().await?,
            store.holds().await?,
            store.pins().await?,
        ))
    };
    let (proposals, approvals, holds, pins) = match read.await {
        Ok(r) => r,
        Err(e) => return (0, vec![format!("dashboard: {e}")]),
    };
    let (mut changed, mut errors) = (0, Vec::new());
    for repo in repos {
        let Some(forge_cfg) = &repo.forge else {
            continue;
        };
        // An unreadable repo's dashboard stays as it was: its pins are unknown.
        if snapshot
            .spec_repos
            .iter()
            .any(|s| s.repo == repo.name && s.unknown.is_some())
        {
            continue;
        }
        let pinned = spec_pins(snapshot, &repo.name);
        let items = gather(
            &repo.name,
            &Inputs {
                proposals: &proposals,
                deployed,
                approvals: &approvals,
                holds: &holds,
                pins: &pins,
                catalog: &snapshot.catalog,
                spec_pins: &pinned,
                now: SystemTime::now(),
            },
        );
        let text = body(&repo.name, &items);
        let key = (
            forge_cfg.api_url.clone(),
            forge_cfg.repo.clone(),
            title(&repo.name),
        );
        match ensure(&AnyForge::new(forge_cfg), key, &text).await {
            Ok(true) => {
                tracing::info!(repo = %repo.name, "Dashboard issue updated.");
                changed += 1;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(repo = %repo.name, error = %e, "The dashboard issue could not be updated.");
                errors.push(format!("{}: dashboard issue: {e}", repo.name));
            }
        }
    }
    (changed, errors)
}

#[cfg(test)]
mod tests;
