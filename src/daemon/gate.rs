//! The change-set gate's bookkeeping in the cycle: records what the evaluation held as
//! needing an approval (for `protond approvals`, `status`, the page and the metrics), tells
//! people once per resource and version (`ApprovalNeeded`), and records the spec-repo
//! approvals the evaluation used (before the deployments start), so the history row of the
//! deployment names them. Decides nothing: the gate is `crate::gate`, run inside
//! `crate::evaluate`.

use std::collections::BTreeMap;

use crate::evaluate::Evaluation;
use crate::ha::shard::{Known, Scope};
use crate::plan::Version;
use crate::plan::schedule::HoldReason;
use crate::state::{StateError, Store};
use crate::telemetry::Telemetry;
use crate::telemetry::events::ApprovalNeeded;

/// What the evaluation held as needing an approval: id → (template, version, changes).
#[must_use]
pub fn pending(eval: &Evaluation) -> BTreeMap<String, (String, Version, Vec<String>)> {
    let templates: BTreeMap<&str, &str> = eval
        .plan
        .actions
        .iter()
        .map(|a| (a.id.as_str(), a.template.as_str()))
        .collect();
    eval.rollout_holds
        .iter()
        .filter_map(|(id, h)| match h {
            HoldReason::NeedsApproval { version, changes } => Some((
                id.clone(),
                (
                    templates
                        .get(id.as_str())
                        .copied()
                        .unwrap_or("")
                        .to_string(),
                    *version,
                    changes.clone(),
                ),
            )),
            _ => None,
        })
        .collect()
}

/// Records the spec-repo approvals the evaluation used, before the deployments that use
/// them start (their history rows name them).
///
/// # Errors
///
/// A store failure.
pub async fn record_approvals(store: &Store, eval: &Evaluation) -> Result<(), StateError> {
    for approval in eval.approved.values().filter(|a| a.repo.is_some()) {
        store.record_approval(approval, false).await?;
    }
    Ok(())
}

/// Records the gate's findings; notifies what is newly held. Only the rows this leader
/// answers for (`scope`, of the resources `known`) are compared and replaced: with shards,
/// the other leaders' rows stay as they wrote them.
///
/// # Errors
///
/// A store failure.
pub async fn record(
    store: &Store,
    eval: &Evaluation,
    t: &Telemetry,
    (scope, known): (&Scope, &Known<'_>),
) -> Result<(), StateError> {
    let now = pending(eval);
    let mut before = store.needs_approval().await?;
    before.retain(|id, _| now.contains_key(id) || scope.answers_for(id, known));
    let unchanged = before.len() == now.len()
        && now.iter().all(|(id, (_, v, changes))| {
            before
                .get(id)
                .is_some_and(|b| b.version == *v && &b.changes == changes)
        });
    if unchanged {
        return Ok(());
    }
    for (id, (template, version, changes)) in &now {
        if before.get(id).is_none_or(|b| b.version != *version) {
            ApprovalNeeded {
                resource: id,
                template,
                version: *version,
                changes,
            }
            .emit(t);
        }
    }
    let done = scope.stale_rows(before.keys(), |id| now.contains_key(id), known);
    store.set_needs_approval(&now, &done).await
}
