//! The change-set gate's bookkeeping in the cycle: records what the evaluation held as
//! needing an approval (for `protond approvals`, `status`, the page and the metrics), tells
//! people once per resource and version (`ApprovalNeeded`), and records the spec-repo
//! approvals the evaluation used, so the history row of the deployment names them. Decides
//! nothing: the gate is `crate::gate`, run inside `crate::evaluate`.

use std::collections::BTreeMap;

use crate::evaluate::Evaluation;
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

/// Records the gate's findings and approvals used; notifies what is newly held.
///
/// # Errors
///
/// A store failure.
pub async fn record(store: &Store, eval: &Evaluation, t: &Telemetry) -> Result<(), StateError> {
    for approval in eval.approved.values().filter(|a| a.repo.is_some()) {
        store.record_approval(approval, false).await?;
    }
    let now = pending(eval);
    let before = store.needs_approval().await?;
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
    store.set_needs_approval(&now).await
}
