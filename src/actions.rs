//! Manual actions on one resource, shared by the CLI (`protond redeploy`, `retry`, `cancel`)
//! and the API (`POST /api/v1/resources/{id}/{action}`): each checks the resource against the
//! store, decides (pure functions, table-tested below) and leaves a request the daemon acts
//! on through its normal path:
//!
//! * redeploy: a deploy request (`ForceCause::Operator`); the next cycle plans the unchanged
//!   resource as a forced update through the normal gates.
//! * retry: the last failure is marked retryable, so the failed-until-change hold lifts, and
//!   a deploy request records who asked. An ownership conflict is refused unless the operator
//!   says it is resolved (the ownership check runs again on the next attempt either way).
//! * cancel: a cancel request on the deployment in flight; the lifecycle calls the
//!   provisioner's `cancel` (`CancelUpdateStack`) and records the outcome as cancelled. A
//!   self-managed deployment waiting for `protond notify` is finished here at once: protond
//!   stops waiting and records it cancelled.
//! * approve: an approval of one version of the resource for the change-set gate
//!   ([`crate::gate`]); the next cycle lets that version through the rollout gate.
//!
//! This module never deploys or calls AWS; it writes only the requests above (the inbox
//! exception to "one writer", see [`crate::state`]).

use crate::model::DeploymentStatus;
use crate::plan::ForceCause;
use crate::state::{DeploymentRecord, Outcome, StateError, Store};

/// Why an action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No such resource.
    #[error(
        "{resource}: no such resource in the state store; `protond status` (or GET /api/v1/environments and /api/v1/services) lists the resource ids, e.g. environment/dev or service_instance/<service>/<instance>"
    )]
    Unknown {
        /// The id asked for.
        resource: String,
    },
    /// The action does not apply to the resource's state.
    #[error("{resource}: {why}")]
    NotApplicable {
        /// The resource.
        resource: String,
        /// What its state is and what to do instead.
        why: String,
    },
    /// The store failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// What `retry` does with a resource's last deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Lift the failed-until-change hold.
    Lift,
    /// Nothing to retry: the last deployment did not fail.
    NotFailed,
    /// In flight now.
    InFlight,
    /// An ownership conflict, and the operator did not say it is resolved.
    Conflict,
    /// A retryable failure: the daemon retries it already, after its backoff.
    AlreadyRetrying,
}

/// Decides `retry` from the resource's last deployment.
#[must_use]
pub fn retry_decision(last: &DeploymentRecord, conflict_resolved: bool) -> RetryDecision {
    match last.status {
        DeploymentStatus::InProgress => RetryDecision::InFlight,
        DeploymentStatus::Succeeded => RetryDecision::NotFailed,
        DeploymentStatus::Failed if last.is_conflict() && !conflict_resolved => {
            RetryDecision::Conflict
        }
        DeploymentStatus::Failed if last.retryable => RetryDecision::AlreadyRetrying,
        DeploymentStatus::Failed => RetryDecision::Lift,
    }
}

/// The error a cancelled deployment records.
#[must_use]
pub fn cancelled_error(by: &str, what: &str) -> String {
    format!(
        "cancelled by {by}: {what}; it is not retried until its spec or template changes or `protond retry` is run"
    )
}

/// Whether a recorded failure is a cancel.
#[must_use]
pub fn is_cancelled(error: &str) -> bool {
    error.starts_with("cancelled by ")
}

/// When the daemon acts on a request: `at_once` through the API (which wakes it), else
/// within its poll interval.
fn when(poll_secs: Option<u64>) -> String {
    poll_secs.map_or_else(
        || "the cycle starting now".to_string(),
        |s| format!("the next cycle (within {s}s, the poll interval)"),
    )
}

/// `redeploy`: asks for `resource`'s current desired state to be deployed even if
/// unchanged. Returns what will happen, for the operator.
///
/// # Errors
///
/// [`ActionError::Unknown`] for an id the store has no record of; a store failure.
pub async fn redeploy(
    store: &Store,
    resource: &str,
    by: &str,
    poll_secs: Option<u64>,
) -> Result<String, ActionError> {
    if !store.resources().await?.iter().any(|r| r.id == resource) {
        return Err(ActionError::Unknown {
            resource: resource.to_string(),
        });
    }
    store
        .request_deploy(resource, ForceCause::Operator, by)
        .await?;
    Ok(format!(
        "queued: {} redeploys {resource} from its current desired state (through the normal gates: a hold, e.g. a failure of the same change, shows in `protond plan`)",
        when(poll_secs)
    ))
}

/// Who approves what, for [`approve`].
#[derive(Debug, Clone, Copy)]
pub struct ApprovalRequest<'a> {
    /// The resource id.
    pub resource: &'a str,
    /// The version approved, as written (`1.1`).
    pub version: &'a str,
    /// Who approves.
    pub by: &'a str,
    /// How: `cli` or `api`.
    pub via: &'a str,
    /// Why, when given.
    pub reason: Option<&'a str>,
}

/// `approve`: records an approval of one version of `resource` for the change-set gate
/// ([`crate::gate`]); the next cycle lets that version through (the rollout gate still
/// applies: stage order, windows, soak).
///
/// # Errors
///
/// [`ActionError::Unknown`]; [`ActionError::NotApplicable`] when the version is not
/// `major.minor` or is of another major than the resource runs; a store failure.
pub async fn approve(
    store: &Store,
    req: ApprovalRequest<'_>,
    poll_secs: Option<u64>,
) -> Result<String, ActionError> {
    let resource = req.resource;
    let Some(record) = store
        .resources()
        .await?
        .into_iter()
        .find(|r| r.id == resource)
    else {
        return Err(ActionError::Unknown {
            resource: resource.to_string(),
        });
    };
    let not = |why: String| ActionError::NotApplicable {
        resource: resource.to_string(),
        why,
    };
    let Some(version) = crate::model::Version::parse(req.version.trim()) else {
        return Err(not(format!(
            "{:?} is not a version; give it as major.minor, e.g. 1.1 (`protond approvals` lists what waits)",
            req.version
        )));
    };
    if version.major != record.version.major {
        return Err(not(format!(
            "runs {} {}: an approval is for a minor of the same major (a new major is proposed by pull request)",
            record.template, record.version
        )));
    }
    store
        .record_approval(
            &crate::gate::Approval {
                resource: resource.to_string(),
                template: Some(record.template.clone()),
                version,
                by: req.by.to_string(),
                via: req.via.to_string(),
                reason: req.reason.map(str::to_string),
                at: None,
                repo: None,
            },
            true,
        )
        .await?;
    Ok(format!(
        "approved: {resource} may move to {} {version} (by {}); {} deploys it through the rollout gate (stage order, windows, soak)",
        record.template,
        req.by,
        when(poll_secs)
    ))
}

/// `retry`: lifts the failed-until-change hold of `resource`'s last failure.
///
/// # Errors
///
/// [`ActionError::Unknown`], [`ActionError::NotApplicable`] (nothing failed, in flight, an
/// unresolved conflict); a store failure.
pub async fn retry(
    store: &Store,
    resource: &str,
    by: &str,
    conflict_resolved: bool,
    poll_secs: Option<u64>,
) -> Result<String, ActionError> {
    let last = store.deployments(Some(resource), 1).await?;
    let Some(last) = last.first() else {
        return Err(ActionError::Unknown {
            resource: resource.to_string(),
        });
    };
    let not = |why: &str| ActionError::NotApplicable {
        resource: resource.to_string(),
        why: why.to_string(),
    };
    match retry_decision(last, conflict_resolved) {
        RetryDecision::InFlight => Err(not(
            "a deployment is in flight; `protond wait` follows it, `protond cancel` stops it",
        )),
        RetryDecision::NotFailed => Err(not(
            "its last deployment did not fail: nothing to retry (`protond redeploy` deploys it again)",
        )),
        RetryDecision::Conflict => Err(not(
            "its last deployment ended in an ownership conflict; resolve it (see `protond status`), then run `protond retry --conflict-resolved`",
        )),
        RetryDecision::AlreadyRetrying => Err(not(
            "its last failure is retried already after a backoff (see `protond plan`)",
        )),
        RetryDecision::Lift => {
            store.mark_retryable(last).await?;
            store
                .request_deploy(resource, ForceCause::Operator, &format!("{by} (retry)"))
                .await?;
            Ok(format!(
                "queued: {} retries {resource} (deployment {} failed: {})",
                when(poll_secs),
                last.id,
                last.error.as_deref().unwrap_or("no error recorded")
            ))
        }
    }
}

/// `cancel`: stops `resource`'s deployment in flight.
///
/// # Errors
///
/// [`ActionError::NotApplicable`] when nothing is in flight; a store failure.
pub async fn cancel(store: &Store, resource: &str, by: &str) -> Result<String, ActionError> {
    let in_flight = store.in_flight().await?;
    let Some(dep) = in_flight
        .iter()
        .find(|d| d.deployment.resource_id == resource)
    else {
        return Err(ActionError::NotApplicable {
            resource: resource.to_string(),
            why: "no deployment is in flight; nothing to cancel".into(),
        });
    };
    let waiting = store
        .self_managed(resource)
        .await?
        .filter(|r| r.state == "waiting" && r.deployment_id == dep.id);
    if let Some(mut row) = waiting {
        let error = cancelled_error(
            by,
            "protond stopped waiting for the outcome of the self-managed deployment (its pull request is left as it is)",
        );
        store
            .finish_deployment(
                dep.id,
                &Outcome::Failed {
                    error,
                    retryable: false,
                },
            )
            .await?;
        "cancelled".clone_into(&mut row.state);
        store.put_self_managed(&row).await?;
        return Ok(format!(
            "cancelled: deployment {} of {resource} is recorded as cancelled; a later `protond notify` for it is refused",
            dep.id
        ));
    }
    store.request_cancel(dep.id, by).await?;
    Ok(format!(
        "cancel requested: the daemon cancels deployment {} of {resource} (CancelUpdateStack for an update; a create or delete runs to its end) within a few seconds, then records it as cancelled; `protond wait {resource}` follows it",
        dep.id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(status: DeploymentStatus, retryable: bool, error: Option<&str>) -> DeploymentRecord {
        DeploymentRecord {
            id: 1,
            deployment: crate::state::tests::new_dep("environment/dev"),
            status,
            error: error.map(str::to_string),
            retryable,
            started_at: String::new(),
            finished_at: None,
        }
    }

    #[test]
    fn retry_lifts_only_a_permanent_failure() {
        let conflict = format!("stack x: {}", crate::state::CONFLICT_MARK);
        let cases = [
            (
                DeploymentStatus::Failed,
                false,
                None,
                false,
                RetryDecision::Lift,
            ),
            (
                DeploymentStatus::Failed,
                true,
                None,
                false,
                RetryDecision::AlreadyRetrying,
            ),
            (
                DeploymentStatus::Succeeded,
                false,
                None,
                false,
                RetryDecision::NotFailed,
            ),
            (
                DeploymentStatus::InProgress,
                false,
                None,
                false,
                RetryDecision::InFlight,
            ),
            (
                DeploymentStatus::Failed,
                false,
                Some(conflict.as_str()),
                false,
                RetryDecision::Conflict,
            ),
            (
                DeploymentStatus::Failed,
                false,
                Some(conflict.as_str()),
                true,
                RetryDecision::Lift,
            ),
        ];
        for (status, retryable, error, resolved, want) in cases {
            assert_eq!(
                retry_decision(&last(status, retryable, error), resolved),
                want,
                "{status:?} retryable={retryable} error={error:?} resolved={resolved}"
            );
        }
    }

    #[test]
    fn a_cancel_is_recognised_in_the_history() {
        let e = cancelled_error("cli:alice", "CancelUpdateStack");
        assert!(is_cancelled(&e));
        assert!(!is_cancelled("stack x ended in UPDATE_ROLLBACK_COMPLETE"));
    }
}
