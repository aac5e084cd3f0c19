//! `protond preview --change-sets`: what `CloudFormation` itself says a candidate template
//! would do to a live stack. A change set (`UPDATE`, the candidate template, the same role,
//! region and capabilities as a deployment) is created on the recorded stack, described once
//! ready, and always deleted, on error too. It never executes a change set, and it never
//! changes a stack: a change set that is not executed changes nothing.

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::types::{Capability, ChangeSetType};
use serde::Serialize;

use super::{CloudFormation, ProvisionError, StackRequest, call_error, discard_change_set};
use crate::model::Placement;

/// One resource change as a change set reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeSetChange {
    /// Logical id in the template.
    pub logical_id: String,
    /// Resource type.
    pub resource_type: String,
    /// `Add`, `Modify`, `Remove` (or `Import`, `Dynamic`).
    pub action: String,
    /// For `Modify`: `True`, `False` or `Conditional`, when reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

impl CloudFormation {
    /// Creates a change set named `name` updating the stack `placement` records for
    /// `resource_id` to `template_body`, waits for it, reads its changes, and deletes it
    /// (always). An empty list: the template changes nothing.
    ///
    /// # Errors
    ///
    /// [`ProvisionError`] when the change set cannot be created, fails, or is not ready within
    /// the stack timeout.
    pub async fn preview_change_set(
        &self,
        resource_id: &str,
        placement: &Placement,
        template_body: &str,
        name: &str,
    ) -> Result<Vec<ChangeSetChange>, ProvisionError> {
        let cfn = self.in_region(placement.region.as_deref()).await;
        let role = placement.role_arn.as_deref();
        let stack = super::placed_stack_name(resource_id, placement);
        let req = StackRequest {
            resource_id: resource_id.to_string(),
            template_body: template_body.to_string(),
            template: String::new(),
            version: String::new(),
            spec_commit: None,
            deployment_id: 0,
            role_arn: placement.role_arn.clone(),
            stack_name: stack.clone(),
            installation: String::new(),
        };
        let source = cfn.template_source(&req).await?;
        let client = cfn.client_for(role).await;
        let created = client
            .create_change_set()
            .stack_name(&stack)
            .change_set_name(name)
            .change_set_type(ChangeSetType::Update)
            .set_template_body(source.body())
            .set_template_url(source.url())
            .capabilities(Capability::CapabilityIam)
            .capabilities(Capability::CapabilityNamedIam)
            .capabilities(Capability::CapabilityAutoExpand)
            .send()
            .await;
        if let Err(e) = created {
            // A request that failed on the way back may still have created it.
            discard_change_set(&client, &stack, name).await;
            return Err(call_error("CreateChangeSet", &stack, &e));
        }
        let read = cfn.read_change_set(&client, &stack, name).await;
        discard_change_set(&client, &stack, name).await;
        read
    }

    /// Waits for change set `name` to be ready and reads every change (all pages).
    async fn read_change_set(
        &self,
        client: &Client,
        stack: &str,
        name: &str,
    ) -> Result<Vec<ChangeSetChange>, ProvisionError> {
        let started = tokio::time::Instant::now();
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = client
                .describe_change_set()
                .stack_name(stack)
                .change_set_name(name)
                .set_next_token(next.clone())
                .send()
                .await
                .map_err(|e| call_error("DescribeChangeSet", stack, &e))?;
            let status = page.status().map_or("", |s| s.as_str()).to_string();
            match status.as_str() {
                "CREATE_COMPLETE" => {
                    out.extend(page.changes().iter().filter_map(change_of));
                    next = page.next_token().map(str::to_string);
                    if next.is_none() {
                        return Ok(out);
                    }
                    continue;
                }
                "FAILED" => {
                    let reason = page.status_reason().unwrap_or("").to_string();
                    if reason.contains("didn't contain changes") || reason.contains("No updates") {
                        return Ok(Vec::new());
                    }
                    return Err(ProvisionError::StackFailed {
                        stack: stack.to_string(),
                        status: "CHANGE_SET_FAILED".into(),
                        reasons: reason,
                    });
                }
                _ => {}
            }
            if started.elapsed() > self.settings.timeout {
                return Err(ProvisionError::Timeout {
                    stack: stack.to_string(),
                    status: format!("change set {status}"),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }
}

/// One SDK change as a [`ChangeSetChange`] (hook invocations and the like are left out).
fn change_of(c: &aws_sdk_cloudformation::types::Change) -> Option<ChangeSetChange> {
    let rc = c.resource_change()?;
    Some(ChangeSetChange {
        logical_id: rc.logical_resource_id().unwrap_or_default().to_string(),
        resource_type: rc.resource_type().unwrap_or_default().to_string(),
        action: rc.action().map_or("", |a| a.as_str()).to_string(),
        replacement: rc.replacement().map(|r| r.as_str().to_string()),
    })
}
