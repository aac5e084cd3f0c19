//! The change-set gate for automatic minors: whether a minor upgrade (or a rollback to an
//! earlier minor) of a `CloudFormation` resource may deploy by itself, or waits for a
//! person's approval of that version because it would replace or remove a stateful resource
//! (or, under `gate.block_interruption`, interrupt one), or because its template does not
//! parse. The prediction is [`crate::impact::compare`] of the documents rendered on the
//! deployed version and on the new one (both with the current spec).
//!
//! Approvals come from the store (`protond approve`, `POST /api/v1/resources/{id}/approve`)
//! and from spec repos' `.protond/approvals.yaml` ([`file`]); an approval is for one version
//! of one resource, and one from a spec repo counts only for the resources that repo
//! declares. Pure: no I/O, no rendering, no clock; it must never decide anything but the
//! gate (the rollout gate, halts and windows stay in `plan::schedule`).

use crate::config::GateConfig;
use crate::impact::{self, Action, Effect, ResourceChange, StatefulTypes};
use crate::model::Version;

pub mod file;

/// A person's approval of one version of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// The resource id (`service_instance/web/dev`).
    pub resource: String,
    /// The template, when recorded (an approval names the version of this template).
    pub template: Option<String>,
    /// The approved version.
    pub version: Version,
    /// Who approved.
    pub by: String,
    /// How: `cli`, `api`, or `spec repo <name>`.
    pub via: String,
    /// Why, when given.
    pub reason: Option<String>,
    /// When (RFC 3339), when known.
    pub at: Option<String>,
    /// For an approval read from a spec repo: that repo (it counts only for its resources).
    pub repo: Option<String>,
}

impl Approval {
    /// What the history row says of it (`approved 1.1 by alice (cli): data migrated`).
    #[must_use]
    pub fn note(&self) -> String {
        let mut s = format!("approved {} by {} ({})", self.version, self.by, self.via);
        if let Some(r) = self.reason.as_deref().filter(|r| !r.is_empty()) {
            s.push_str(": ");
            s.push_str(r);
        }
        s
    }
}

/// The gate's rules, from `[gate]`.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Whether the gate is on.
    pub enabled: bool,
    /// The stateful resource types.
    pub stateful: StatefulTypes,
    /// Whether an interruption of a stateful resource needs approval.
    pub block_interruption: bool,
}

impl Rules {
    /// The rules `[gate]` sets: its `stateful_types` replace the default list, its
    /// `extra_stateful_types` add to it.
    #[must_use]
    pub fn from_config(c: &GateConfig) -> Self {
        let base: Vec<String> = c.stateful_types.clone().unwrap_or_else(|| {
            impact::DEFAULT_STATEFUL
                .iter()
                .map(|s| (*s).to_string())
                .collect()
        });
        Self {
            enabled: c.enabled,
            stateful: StatefulTypes::new(base.into_iter().chain(c.extra_stateful_types.clone())),
            block_interruption: c.block_interruption,
        }
    }

    /// Whether a change between documents one of which is `docs` could need approval, read
    /// from the text alone: only when a document names a stateful type (or a pattern's
    /// service prefix) as written, or holds what could spell one otherwise (an escape, a
    /// `!!` tag, a `%TAG` directive). Else nothing stateful is in either document, no change
    /// can destroy or interrupt one, and neither needs parsing (issue 20: at 50,000
    /// instances the comparisons of templates without stateful resources took a third of
    /// the tag cycle). An alias repeats an anchor's text, which is in the document.
    #[must_use]
    pub fn may_block(&self, docs: &[(String, String)]) -> bool {
        docs.iter().any(|(_, text)| {
            text.contains('\\')
                || text.contains("!!")
                || text.contains("%TAG")
                || self
                    .stateful
                    .iter()
                    .any(|t| text.contains(t.strip_suffix('*').unwrap_or(t)))
        })
    }

    /// Whether `change` needs approval: a stateful resource replaced (or maybe replaced),
    /// removed without a retaining `DeletionPolicy`, or, under `block_interruption`,
    /// updated with interruption. Additions never do.
    #[must_use]
    pub fn blocks(&self, change: &ResourceChange) -> bool {
        if !self.stateful.contains(&change.resource_type) {
            return false;
        }
        change.destroys()
            || (self.block_interruption
                && change.action == Action::Modify
                && change.effect == Some(Effect::Interruption))
    }
}

/// One resource the rollout gate let through to a new version.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Resource id.
    pub id: &'a str,
    /// The spec repo that declares it.
    pub repo: &'a str,
    /// Its template.
    pub template: &'a str,
    /// The version it would move to.
    pub version: Version,
    /// Its documents rendered on the deployed version (path, text).
    pub deployed: &'a [(String, String)],
    /// Its documents rendered on the new version.
    pub new: &'a [(String, String)],
}

/// The gate's verdict on one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing needs approval: it deploys.
    Clear,
    /// It needs approval and has one: it deploys, and the history row says whose.
    Approved {
        /// The predicted effects that needed it.
        changes: Vec<String>,
        /// The approval used.
        approval: Approval,
    },
    /// It waits for an approval of this version.
    NeedsApproval {
        /// The predicted effects that need it, or why no prediction could be made.
        changes: Vec<String>,
    },
}

/// Decides one candidate against the approvals given.
#[must_use]
pub fn decide(c: &Candidate<'_>, rules: &Rules, approvals: &[Approval]) -> Decision {
    if !rules.enabled || !(rules.may_block(c.deployed) || rules.may_block(c.new)) {
        return Decision::Clear;
    }
    let changes = match compare_documents(c.deployed, c.new) {
        Ok(changes) => changes
            .iter()
            .filter(|ch| rules.blocks(ch))
            .map(describe)
            .collect::<Vec<_>>(),
        Err(why) => vec![why],
    };
    if changes.is_empty() {
        return Decision::Clear;
    }
    match approval_for(approvals, c) {
        Some(a) => Decision::Approved {
            changes,
            approval: a.clone(),
        },
        None => Decision::NeedsApproval { changes },
    }
}

/// A change as the gate shows it: `AWS::DynamoDB::Table Table: replaced (KeySchema)`, naming
/// only the properties that cause the effect (the others change along with them).
#[must_use]
pub fn describe(change: &ResourceChange) -> String {
    let causes: Vec<&str> = change
        .properties
        .iter()
        .filter(|p| Some(p.effect) == change.effect)
        .map(|p| p.name.as_str())
        .collect();
    match (change.action, change.effect) {
        (Action::Modify, Some(effect)) if !causes.is_empty() => format!(
            "{} {}: {} ({})",
            change.resource_type,
            change.logical_id,
            effect.describe(),
            causes.join(", ")
        ),
        _ => change.to_string(),
    }
}

/// The approval that counts for `c`: same resource and version, same template when it
/// names one, and from `c`'s own spec repo when it was read from one. The latest wins.
#[must_use]
pub fn approval_for<'a>(approvals: &'a [Approval], c: &Candidate<'_>) -> Option<&'a Approval> {
    approvals
        .iter()
        .filter(|a| a.resource == c.id && a.version == c.version)
        .filter(|a| a.template.as_deref().is_none_or(|t| t == c.template))
        .filter(|a| a.repo.as_deref().is_none_or(|r| r == c.repo))
        .max_by(|a, b| a.at.cmp(&b.at))
}

/// The per-logical-resource changes between two sets of rendered documents, paired by
/// path (a document only on one side compares with an empty template).
///
/// # Errors
///
/// Why a document could not be compared (`cloudformation.yaml: the new template does not
/// parse: …`).
pub fn compare_documents<'a>(
    old: &'a [(String, String)],
    new: &'a [(String, String)],
) -> Result<Vec<ResourceChange>, String> {
    let mut paths: Vec<&str> = old.iter().chain(new).map(|(p, _)| p.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    let text = |docs: &'a [(String, String)], path: &str| -> &'a str {
        docs.iter()
            .find(|(p, _)| p == path)
            .map_or("{}", |(_, t)| t.as_str())
    };
    let mut out = Vec::new();
    for path in paths {
        let (before, after) = (text(old, path), text(new, path));
        // The same text has the same resources: nothing to parse. (A new minor often changes
        // one file of a bundle and leaves the others' renderings as they were.)
        if before == after {
            continue;
        }
        let changes = impact::compare(before, after)
            .map_err(|e| format!("{path}: {e}; no prediction can be made"))?;
        out.extend(changes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
