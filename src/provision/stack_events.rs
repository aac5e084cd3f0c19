//! Progress of the stacks the `CloudFormation` provisioner waits for: the stack events of the
//! operation in flight, each logged once and in order ([`crate::telemetry::events::StackEventSeen`]),
//! and a [`Board`] of each stack's current status, last event and elapsed time, which the
//! deployment lifecycle copies into the store for `protond wait`, `status`, the API and the
//! page. Which events belong to the operation is decided by [`fresh_events`] (pure).
//!
//! This module only observes: it never changes a stack or writes the store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::state::Progress;

/// One stack event, as read from `DescribeStackEvents`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackEvent {
    /// The event's id.
    pub id: String,
    /// Logical id of the resource (the stack's name for the stack itself).
    pub logical_id: String,
    /// Resource type (`AWS::CloudFormation::Stack` for the stack itself).
    pub resource_type: String,
    /// `CREATE_IN_PROGRESS`, `UPDATE_COMPLETE`, …
    pub status: String,
    /// Why, when `CloudFormation` says.
    pub reason: Option<String>,
}

impl StackEvent {
    /// `<logical id> <type> <status>[: <reason>]`.
    #[must_use]
    pub fn line(&self) -> String {
        let mut s = format!("{} {} {}", self.logical_id, self.resource_type, self.status);
        if let Some(r) = &self.reason {
            s.push_str(": ");
            s.push_str(r);
        }
        s
    }

    /// Whether this event starts an operation on the stack (`User Initiated`).
    fn starts_operation(&self) -> bool {
        self.resource_type == "AWS::CloudFormation::Stack"
            && self.status.ends_with("_IN_PROGRESS")
            && self.reason.as_deref() == Some("User Initiated")
    }
}

/// The events of the operation in flight not seen yet, oldest first, from a page of events
/// newest first: everything after the newest `User Initiated` event of the stack (that event
/// included), minus `seen`. Events of earlier operations are never returned.
#[must_use]
pub fn fresh_events(newest_first: &[StackEvent], seen: &BTreeSet<String>) -> Vec<StackEvent> {
    let mut out = Vec::new();
    for e in newest_first {
        if !seen.contains(&e.id) {
            out.push(e.clone());
        }
        if e.starts_operation() {
            break;
        }
    }
    out.reverse();
    out
}

/// The progress of every stack being waited for, by stack name; shared by the provisioner
/// (which writes it) and the lifecycle (which reads it).
#[derive(Debug, Clone, Default)]
pub struct Board(Arc<Mutex<BTreeMap<String, Progress>>>);

impl Board {
    /// Records `stack`'s progress.
    pub fn set(&self, stack: &str, progress: Progress) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(stack.to_string(), progress);
        }
    }

    /// `stack`'s progress, while waited for.
    #[must_use]
    pub fn get(&self, stack: &str) -> Option<Progress> {
        self.0.lock().ok().and_then(|m| m.get(stack).cloned())
    }

    /// Forgets `stack` (its wait ended).
    pub fn remove(&self, stack: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(stack);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, logical: &str, ty: &str, status: &str, reason: Option<&str>) -> StackEvent {
        StackEvent {
            id: id.into(),
            logical_id: logical.into(),
            resource_type: ty.into(),
            status: status.into(),
            reason: reason.map(str::to_string),
        }
    }

    const STACK: &str = "AWS::CloudFormation::Stack";

    #[test]
    fn only_the_operation_in_flight_and_each_event_once() {
        let newest_first = vec![
            ev("6", "s", STACK, "UPDATE_COMPLETE", None),
            ev("5", "Q", "AWS::SQS::Queue", "UPDATE_COMPLETE", None),
            ev("4", "Q", "AWS::SQS::Queue", "UPDATE_IN_PROGRESS", None),
            ev(
                "3",
                "s",
                STACK,
                "UPDATE_IN_PROGRESS",
                Some("User Initiated"),
            ),
            ev("2", "s", STACK, "CREATE_COMPLETE", None),
            ev(
                "1",
                "s",
                STACK,
                "CREATE_IN_PROGRESS",
                Some("User Initiated"),
            ),
        ];
        let ids = |v: &[StackEvent]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        let mut seen = BTreeSet::new();
        assert_eq!(ids(&fresh_events(&newest_first[2..], &seen)), ["3", "4"]);
        seen.extend(["3".to_string(), "4".to_string()]);
        assert_eq!(ids(&fresh_events(&newest_first, &seen)), ["5", "6"]);
        seen.extend(["5".to_string(), "6".to_string()]);
        assert!(fresh_events(&newest_first, &seen).is_empty());
        // Without a start marker on the page (a long operation), everything unseen counts.
        assert_eq!(
            ids(&fresh_events(&newest_first[..2], &BTreeSet::new())),
            ["5", "6"]
        );
    }

    #[test]
    fn lines_name_resource_type_status_and_reason() {
        let e = ev("1", "Q", "AWS::SQS::Queue", "CREATE_FAILED", Some("denied"));
        assert_eq!(e.line(), "Q AWS::SQS::Queue CREATE_FAILED: denied");
    }
}
