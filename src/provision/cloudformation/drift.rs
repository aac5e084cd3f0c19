//! Reading a recorded stack for a drift check: the stack by its recorded `StackId` (or its
//! name when none is recorded), in its recorded region and as its recorded role, its
//! submitted template, and `CloudFormation`'s own resource drift detection
//! (`DetectStackDrift`), where the endpoint has it. Reads only: it never changes a stack
//! (`DetectStackDrift` changes nothing but the stack's drift status) and decides nothing.

use std::time::{Duration, Instant};

use aws_sdk_cloudformation::types::{StackDriftDetectionStatus, StackResourceDriftStatus};

use super::{CloudFormation, LiveStack, ProvisionError, call_error, is_missing_stack};
use crate::model::Placement;

/// Longest wait for one `DetectStackDrift` to finish.
const DETECTION_BUDGET: Duration = Duration::from_mins(1);

/// What `CloudFormation`'s own resource drift detection said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceDrift {
    /// Not asked (the stack is gone, or detection is known to be unavailable).
    NotChecked,
    /// The endpoint does not support it (or refused it): why.
    NotAvailable(String),
    /// Every resource is in sync.
    InSync,
    /// These resources drifted (`logical id: MODIFIED` or `DELETED`).
    Drifted(Vec<String>),
}

/// A recorded stack as live AWS has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftRead {
    /// The stack; `None` when it does not exist or is `DELETE_COMPLETE`.
    pub live: Option<LiveStack>,
    /// Its submitted template (`GetTemplate`, stage `Original`), when it exists.
    pub template: Option<String>,
    /// `DetectStackDrift`'s verdict.
    pub resources: ResourceDrift,
}

impl CloudFormation {
    /// Reads the stack `placement` records for `resource_id` (see [`DriftRead`]); resource
    /// drift detection is skipped when `detect` is false.
    ///
    /// # Errors
    ///
    /// [`ProvisionError`] when the stack cannot be read (not when it is missing, and not
    /// when resource drift detection is unavailable).
    pub async fn read_for_drift(
        &self,
        resource_id: &str,
        placement: &Placement,
        detect: bool,
    ) -> Result<DriftRead, ProvisionError> {
        let cfn = self.in_region(placement.region.as_deref()).await;
        let role = placement.role_arn.as_deref();
        let target = placement
            .stack_id
            .clone()
            .unwrap_or_else(|| super::placed_stack_name(resource_id, placement));
        let Some(live) = cfn.describe_live(&target, role).await? else {
            return Ok(DriftRead {
                live: None,
                template: None,
                resources: ResourceDrift::NotChecked,
            });
        };
        let template = Some(cfn.template_body(&target, role).await?);
        let resources = if detect {
            cfn.detect_drift(&target, role).await
        } else {
            ResourceDrift::NotChecked
        };
        Ok(DriftRead {
            live: Some(live),
            template,
            resources,
        })
    }

    /// `DetectStackDrift`, waited for within [`DETECTION_BUDGET`], then the drifted
    /// resources. Any failure to start it means it is not available here.
    async fn detect_drift(&self, stack: &str, role: Option<&str>) -> ResourceDrift {
        let client = self.client_for(role).await;
        let id = match client.detect_stack_drift().stack_name(stack).send().await {
            Ok(out) => out
                .stack_drift_detection_id()
                .unwrap_or_default()
                .to_string(),
            Err(e) => {
                let e = call_error("DetectStackDrift", stack, &e);
                return ResourceDrift::NotAvailable(e.to_string());
            }
        };
        let started = Instant::now();
        loop {
            let status = client
                .describe_stack_drift_detection_status()
                .stack_drift_detection_id(&id)
                .send()
                .await;
            match status {
                Ok(s) => match s.detection_status() {
                    Some(StackDriftDetectionStatus::DetectionInProgress) => {}
                    Some(StackDriftDetectionStatus::DetectionComplete) => break,
                    other => {
                        return ResourceDrift::NotAvailable(format!(
                            "drift detection of stack {stack} ended {}: {}",
                            other.map_or("without a status", StackDriftDetectionStatus::as_str),
                            s.detection_status_reason().unwrap_or("no reason given")
                        ));
                    }
                },
                Err(e) => {
                    let e = call_error("DescribeStackDriftDetectionStatus", stack, &e);
                    return ResourceDrift::NotAvailable(e.to_string());
                }
            }
            if started.elapsed() > DETECTION_BUDGET {
                return ResourceDrift::NotAvailable(format!(
                    "drift detection of stack {stack} did not finish within {}s",
                    DETECTION_BUDGET.as_secs()
                ));
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
        match client
            .describe_stack_resource_drifts()
            .stack_name(stack)
            .stack_resource_drift_status_filters(StackResourceDriftStatus::Modified)
            .stack_resource_drift_status_filters(StackResourceDriftStatus::Deleted)
            .send()
            .await
        {
            Ok(out) => {
                let drifted: Vec<String> = out
                    .stack_resource_drifts()
                    .iter()
                    .map(|d| {
                        format!(
                            "{}: {}",
                            d.logical_resource_id().unwrap_or("?"),
                            d.stack_resource_drift_status()
                                .map_or("?", StackResourceDriftStatus::as_str)
                        )
                    })
                    .collect();
                if drifted.is_empty() {
                    ResourceDrift::InSync
                } else {
                    ResourceDrift::Drifted(drifted)
                }
            }
            Err(e) if is_missing_stack(&e) => ResourceDrift::NotChecked,
            Err(e) => ResourceDrift::NotAvailable(
                call_error("DescribeStackResourceDrifts", stack, &e).to_string(),
            ),
        }
    }
}
