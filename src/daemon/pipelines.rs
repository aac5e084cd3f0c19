//! The post-deployment step of service instances whose spec asks for it
//! (`start_pipeline_on_deploy: true`): start the service's `CodePipeline` pipeline and record
//! what happened. A pipeline that cannot be started never fails the deployment.

use super::ctx::Ctx;
use crate::provision::codepipeline::{self, PipelineError};
use crate::state::PipelineRunRecord;

/// Starts the service's pipeline after `instance_id` deployed, and records what happened.
pub(super) async fn start_after(ctx: &Ctx, instance_id: &str) {
    let service = codepipeline::service_of(instance_id);
    let mut run = PipelineRunRecord {
        service: service.clone(),
        pipeline: None,
        execution_id: None,
        result: String::new(),
        message: None,
        triggered_by: instance_id.to_string(),
        updated_at: String::new(),
    };
    let pipeline_id = crate::desired::pipeline_id(&service);
    let record = match ctx.store.resources().await {
        Ok(records) => records.into_iter().find(|r| r.id == pipeline_id),
        Err(e) => {
            tracing::warn!(error = %e, "Could not read the pipeline's record.");
            None
        }
    };
    match codepipeline::pipeline_name(&ctx.cfn, &service, record.as_ref()).await {
        Err(why) => {
            run.result = "not_available".into();
            run.message = Some(why.to_string());
        }
        Ok(name) => {
            run.pipeline = Some(name.clone());
            match ctx.pipelines.start(&name).await {
                Ok(execution) => {
                    run.result = "started".into();
                    run.execution_id = Some(execution);
                }
                Err(PipelineError::NotAvailable(m)) => {
                    run.result = "not_available".into();
                    run.message = Some(m);
                }
                Err(PipelineError::Failed(m)) => {
                    run.result = "failed".into();
                    run.message = Some(m);
                }
            }
        }
    }
    if run.result == "started" {
        tracing::info!(service = %service, pipeline = run.pipeline.as_deref(), execution = run.execution_id.as_deref(), "Pipeline execution started.");
    } else {
        tracing::warn!(service = %service, result = %run.result, reason = run.message.as_deref(), "Pipeline execution not started.");
    }
    if let Err(e) = ctx.store.put_pipeline_run(&run).await {
        tracing::warn!(error = %e, "Could not record the pipeline start.");
    }
}
