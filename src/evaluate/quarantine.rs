//! Quarantine and automatic rollback, pure: which failing releases to quarantine now
//! ([`pending`]), and what the resources already on a quarantined release are offered or
//! given ([`rollbacks`], [`label_redeploys`]). The caller passes the records, the last
//! failures, the stages and the rules; it records what is decided. It must never perform I/O
//! or read a clock.
//!
//! A new minor (or an accepted release change) is quarantined when it failed, for good (not
//! retryable, not an ownership conflict), on `quarantine_after` resources of the first stage
//! that tried it, or on `quarantine_share` of that stage's resources on its major; a failure
//! in a later stage quarantines it at once (that stage was only reached after the first
//! passed). Quarantined means halted: no new resource and no later stage gets it.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::quarantine::Quarantine;
use crate::model::{DeploymentStatus, ResourceStatus, Version};
use crate::plan::{ActionKind, Plan, UpdateReason};
use crate::state::{DeploymentRecord, ResourceRecord};

/// A release to quarantine now, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQuarantine {
    /// The template.
    pub template: String,
    /// The version.
    pub version: Version,
    /// Why (the stage, the count and the first failure).
    pub reason: String,
}

/// Who quarantines automatically, in the store and the history.
pub const BY_PROTOND: &str = "protond";

/// What a resource's failure on a release counts as, for the quarantine rule.
fn counts(d: &DeploymentRecord) -> bool {
    d.status == DeploymentStatus::Failed
        && !d.retryable
        && !d.is_conflict()
        && matches!(
            d.deployment.reason.as_deref(),
            Some("minor_upgrade" | "release_changed")
        )
}

/// One resource's try of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attempt<'a> {
    id: &'a str,
    rank: usize,
    error: Option<&'a str>,
}

/// The releases to quarantine now: those not yet halted whose failures reach the rules.
/// `stage_of` maps environment names to their stage; `stages` is the rollout order.
#[must_use]
pub fn pending(
    records: &[ResourceRecord],
    last_failures: &[DeploymentRecord],
    halted: &BTreeMap<(String, Version), String>,
    stage_of: &BTreeMap<String, String>,
    stages: &[String],
    rules: &Quarantine,
) -> Vec<NewQuarantine> {
    let rank = |env: Option<&String>| {
        env.and_then(|e| stage_of.get(e))
            .and_then(|s| stages.iter().position(|x| x == s))
            .unwrap_or(stages.len())
    };
    let failing: BTreeSet<(&str, Version)> = last_failures
        .iter()
        .filter(|d| counts(d))
        .map(|d| (d.deployment.template.as_str(), d.deployment.to_version))
        .filter(|(t, v)| !halted.contains_key(&((*t).to_string(), *v)))
        .collect();
    let mut out = Vec::new();
    for (template, version) in failing {
        let failed = last_failures
            .iter()
            .filter(|d| counts(d))
            .filter(|d| d.deployment.template == template && d.deployment.to_version == version)
            .map(|d| Attempt {
                id: &d.deployment.resource_id,
                rank: rank(d.deployment.environment.as_ref()),
                error: d.error.as_deref(),
            });
        let passed = records
            .iter()
            .filter(|r| r.template == template && r.version == version)
            .filter(|r| r.status == ResourceStatus::Deployed)
            .map(|r| Attempt {
                id: &r.id,
                rank: rank(r.environment.as_ref()),
                error: None,
            });
        let attempts: Vec<Attempt> = failed.chain(passed).collect();
        let Some(first) = attempts.iter().map(|a| a.rank).min() else {
            continue;
        };
        // The first stage's resources on the major: the share's denominator.
        let population: BTreeSet<&str> = records
            .iter()
            .filter(|r| r.template == template && r.version.major == version.major)
            .filter(|r| rank(r.environment.as_ref()) == first)
            .map(|r| r.id.as_str())
            .chain(attempts.iter().filter(|a| a.rank == first).map(|a| a.id))
            .collect();
        let stage = stages.get(first).map_or("(no stage)", String::as_str);
        if let Some(reason) = verdict(&attempts, first, population.len(), stage, rules) {
            out.push(NewQuarantine {
                template: template.to_string(),
                version,
                reason,
            });
        }
    }
    out
}

/// Whether the attempts of one release reach the rules, and why.
fn verdict(
    attempts: &[Attempt],
    first: usize,
    population: usize,
    stage: &str,
    rules: &Quarantine,
) -> Option<String> {
    let failed: Vec<&Attempt> = attempts.iter().filter(|a| a.error.is_some()).collect();
    let later: Vec<&&Attempt> = failed.iter().filter(|a| a.rank > first).collect();
    let in_first = failed.len() - later.len();
    let by_count = rules
        .after
        .is_some_and(|n| u32::try_from(in_first).unwrap_or(u32::MAX) >= n);
    let by_share = rules
        .share_percent
        .is_some_and(|p| population > 0 && in_first * 100 >= usize::from(p) * population);
    let why = if let Some(a) = later.first() {
        format!("{} failed after stage {stage} had passed", a.id)
    } else if by_count || by_share {
        format!("{in_first} of {population} resources of stage {stage} failed")
    } else {
        return None;
    };
    let example = failed
        .iter()
        .find(|a| a.rank > first)
        .or_else(|| failed.first())?;
    let error: String = example
        .error
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    Some(format!("{why}; {} failed: {error}", example.id))
}

/// A resource moved back from a quarantined release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollback {
    /// The quarantined version it runs, or failed to reach.
    pub from: Version,
    /// The previous usable minor it goes back to.
    pub to: Version,
}

/// The newest version of `template` below `below` in the same major that is `usable`
/// (registered, not withdrawn) and not quarantined.
#[must_use]
pub fn previous_usable(
    template: &str,
    below: Version,
    usable: &BTreeSet<(String, Version)>,
    quarantined: &BTreeSet<(String, Version)>,
) -> Option<Version> {
    usable
        .iter()
        .filter(|(t, v)| t == template && v.major == below.major && *v < below)
        .filter(|k| !quarantined.contains(*k))
        .map(|(_, v)| *v)
        .max()
}

/// The rollback of each resource on a quarantined release: one that runs it goes to the
/// previous usable minor; one whose last deployment failed to reach it, and runs that
/// previous minor, is deployed on it again (its stack may be half-applied or rolled back by
/// the provider; the record says failed).
#[must_use]
pub fn rollbacks(
    quarantined: &BTreeSet<(String, Version)>,
    usable: &BTreeSet<(String, Version)>,
    records: &[ResourceRecord],
    last_failures: &[DeploymentRecord],
) -> BTreeMap<String, Rollback> {
    if quarantined.is_empty() {
        return BTreeMap::new();
    }
    let mut out = BTreeMap::new();
    for r in records {
        let key = (r.template.clone(), r.version);
        if quarantined.contains(&key)
            && let Some(to) = previous_usable(&r.template, r.version, usable, quarantined)
        {
            out.insert(
                r.id.clone(),
                Rollback {
                    from: r.version,
                    to,
                },
            );
        }
    }
    let by_id: BTreeMap<&str, &ResourceRecord> =
        records.iter().map(|r| (r.id.as_str(), r)).collect();
    for d in last_failures {
        let (t, from) = (&d.deployment.template, d.deployment.to_version);
        if d.status != DeploymentStatus::Failed || !quarantined.contains(&(t.clone(), from)) {
            continue;
        }
        let Some(record) = by_id.get(d.deployment.resource_id.as_str()) else {
            continue;
        };
        let to = previous_usable(t, from, usable, quarantined);
        if record.template == *t && to == Some(record.version) && record.version < from {
            out.insert(
                record.id.clone(),
                Rollback {
                    from,
                    to: record.version,
                },
            );
        }
    }
    out
}

/// Turns the no-ops of resources rolled back onto the version they run (`rollbacks` whose
/// target is the version planned, and still the version `pinned` holds them on: an
/// operator's pin wins) into [`UpdateReason::Rollback`] updates.
pub fn label_redeploys(
    plan: &mut Plan,
    rollbacks: &BTreeMap<String, Rollback>,
    pinned: &BTreeMap<String, Version>,
) {
    for a in &mut plan.actions {
        if a.action == ActionKind::NoOp
            && let Some(r) = rollbacks.get(&a.id)
            && a.version == r.to
            && pinned.get(&a.id) == Some(&r.to)
        {
            a.action = ActionKind::Update {
                reason: UpdateReason::Rollback {
                    from: r.from,
                    to: r.to,
                },
            };
        }
    }
}

#[cfg(test)]
mod tests;
