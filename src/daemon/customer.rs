//! Reads the stacks customer-managed environments name (`customer_managed.stack`) for their
//! outputs (`DescribeStacks`), in the environment's account (its `role_arn`) and the
//! configured region, into the snapshot before it is evaluated. Shared by the daemon's cycle
//! and `protond plan`. It only reads: it must never create, update, tag or delete a stack.

use std::collections::BTreeMap;

use crate::desired::Snapshot;
use crate::provision::cloudformation::CloudFormation;
use crate::spec::SpecFile;

/// The customer-managed environments whose outputs come from a stack: (environment name,
/// stack, role), from the platform repos' parsed spec files.
#[must_use]
pub fn stacks_to_read(snapshot: &Snapshot) -> Vec<(String, String, Option<String>)> {
    snapshot
        .spec_repos
        .iter()
        .filter(|r| r.platform)
        .flat_map(|r| &r.files)
        .filter_map(|f| match &f.spec {
            Ok(SpecFile::Environment(e)) => e
                .customer_managed
                .as_ref()
                .and_then(|c| c.stack.clone())
                .map(|stack| (e.name.clone(), stack, e.role_arn.clone())),
            _ => None,
        })
        .collect()
}

/// Reads each stack [`stacks_to_read`] names into `snapshot.customer_stacks`: its outputs,
/// or why they could not be read (a missing or deleted stack, a failed call).
pub async fn read_stacks(cfn: &CloudFormation, snapshot: &mut Snapshot) {
    let mut read = BTreeMap::new();
    for (environment, stack, role) in stacks_to_read(snapshot) {
        let outcome = match cfn.describe(&stack, role.as_deref()).await {
            Ok(Some(info)) if info.status == "DELETE_COMPLETE" => {
                Err(format!("stack {stack} is deleted"))
            }
            Ok(Some(info)) => Ok(info.outputs),
            Ok(None) => Err(format!("stack {stack} does not exist")),
            Err(e) => Err(e.to_string()),
        };
        if let Err(reason) = &outcome {
            tracing::warn!(environment = %environment, stack = %stack, reason = %reason, "Cannot read a customer-managed environment's stack.");
        }
        read.insert(environment, outcome);
    }
    snapshot.customer_stacks = read;
}
