//! `CodePipeline`: starting a service's pipeline after an instance deploys (when the service
//! spec sets `start_pipeline_on_deploy: true`), and reading its latest execution for
//! `protond status`.
//!
//! The pipeline is found in the service's pipeline stack: its `AWS::CodePipeline::Pipeline`
//! resource, or a stack output named `PipelineName`. Endpoints that do not offer an operation
//! (`moto_server` has no `StartPipelineExecution` or `ListPipelineExecutions`) are reported as
//! "not available", with the endpoint's own words, never as a deployment failure.

use aws_sdk_codepipeline::Client;
use aws_sdk_codepipeline::error::ProvideErrorMetadata as _;

use super::cloudformation::{CloudFormation, ProvisionError, stack_name};
use crate::plan::ResourceKind;
use crate::state::{PipelineRunRecord, ResourceRecord};

/// Output of a pipeline stack naming its `CodePipeline` pipeline.
pub const PIPELINE_NAME_OUTPUT: &str = "PipelineName";

/// A failed `CodePipeline` call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// The endpoint does not offer this operation.
    #[error("not available: {0}")]
    NotAvailable(String),
    /// The call failed.
    #[error("{0}")]
    Failed(String),
}

/// The latest execution of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Execution {
    /// Execution id.
    pub id: String,
    /// `InProgress`, `Succeeded`, `Failed`, …
    pub status: String,
    /// Last update, RFC 3339.
    pub updated_at: Option<String>,
}

/// Why a service's pipeline cannot be named.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The pipeline stack is not recorded as deployed.
    #[error("the pipeline of {service} is not deployed (yet)")]
    NotDeployed {
        /// The service.
        service: String,
    },
    /// The stack names no pipeline.
    #[error(
        "the pipeline stack of {service} has neither an AWS::CodePipeline::Pipeline resource nor a `{PIPELINE_NAME_OUTPUT}` output"
    )]
    NoPipeline {
        /// The service.
        service: String,
    },
    /// The stack could not be read.
    #[error(transparent)]
    Stack(#[from] ProvisionError),
}

/// The `CodePipeline` pipeline of a service's pipeline stack (`record`, the pipeline
/// resource's record): its `PipelineName` output, or its `AWS::CodePipeline::Pipeline`
/// resource.
///
/// # Errors
///
/// [`LookupError`] says why there is none.
pub async fn pipeline_name(
    cfn: &CloudFormation,
    service: &str,
    record: Option<&ResourceRecord>,
) -> Result<String, LookupError> {
    let Some(record) = record else {
        return Err(LookupError::NotDeployed {
            service: service.to_string(),
        });
    };
    if let Some(name) = record.outputs.get(PIPELINE_NAME_OUTPUT) {
        return Ok(name.clone());
    }
    cfn.pipeline_resource(&stack_name(&record.id), None)
        .await?
        .ok_or_else(|| LookupError::NoPipeline {
            service: service.to_string(),
        })
}

/// A service pipeline's executions, for status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineRow {
    /// The service whose pipeline this is.
    pub service: String,
    /// `CodePipeline` pipeline name, when found.
    pub pipeline: Option<String>,
    /// The latest execution as `CodePipeline` reports it, or why it cannot be shown.
    pub latest_execution: String,
    /// The last execution protond started (or tried to).
    pub last_start: Option<PipelineRunRecord>,
}

/// The pipelines of the deployed services among `records`, with their latest execution read
/// live from `CodePipeline` where the endpoint offers it.
pub async fn pipeline_rows(
    records: &[ResourceRecord],
    runs: &[PipelineRunRecord],
    cfn: &CloudFormation,
    cp: &CodePipeline,
) -> Vec<PipelineRow> {
    let mut rows = Vec::new();
    for r in records.iter().filter(|r| r.kind == ResourceKind::Pipeline) {
        let service = service_of(&r.id);
        let (pipeline, latest_execution) = match pipeline_name(cfn, &service, Some(r)).await {
            Err(why) => (None, format!("not available: {why}")),
            Ok(name) => {
                let latest = match cp.latest(&name).await {
                    Ok(Some(e)) => format!(
                        "{} ({}{})",
                        e.status,
                        e.id,
                        e.updated_at.map(|t| format!(", {t}")).unwrap_or_default()
                    ),
                    Ok(None) => "no executions yet".into(),
                    Err(e) => e.to_string(),
                };
                (Some(name), latest)
            }
        };
        rows.push(PipelineRow {
            last_start: runs.iter().find(|x| x.service == service).cloned(),
            service,
            pipeline,
            latest_execution,
        });
    }
    rows
}

/// The service named by a pipeline or instance id (empty for an environment).
pub(crate) fn service_of(id: &str) -> String {
    crate::model::ResourceId::parse(id)
        .ok()
        .and_then(|r| r.service().map(str::to_string))
        .unwrap_or_default()
}

/// A `CodePipeline` client.
#[derive(Debug, Clone)]
pub struct CodePipeline {
    client: Client,
}

fn classify<E>(op: &str, e: &aws_sdk_codepipeline::error::SdkError<E>) -> PipelineError
where
    E: aws_sdk_codepipeline::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    if let aws_sdk_codepipeline::error::SdkError::ResponseError(r) = e {
        // Not an API answer at all (an HTML error page): the endpoint lacks the operation.
        return PipelineError::NotAvailable(format!(
            "{op} is not offered by this endpoint (it answered HTTP {} without an API response)",
            r.raw().status().as_u16()
        ));
    }
    let code = e.code().unwrap_or_default().to_string();
    let message = e.message().unwrap_or_default().to_string();
    let status = e.raw_response().map(|r| r.status().as_u16());
    let unsupported = matches!(
        code.as_str(),
        "UnknownOperationException" | "InvalidAction" | "NotImplemented" | "UnsupportedOperation"
    ) || matches!(status, Some(404 | 501))
        || message.to_ascii_lowercase().contains("not yet implemented")
        || message.to_ascii_lowercase().contains("not implemented");
    let detail = if code.is_empty() && message.is_empty() {
        // No answer (credentials, network): the cause chain, never debug text.
        super::aws_errors::no_answer("CodePipeline", e)
    } else {
        format!("{code} {message}").trim().to_string()
    };
    if unsupported {
        PipelineError::NotAvailable(format!("{op} is not offered by this endpoint ({detail})"))
    } else {
        PipelineError::Failed(format!("{op}: {detail}"))
    }
}

impl CodePipeline {
    /// A client sharing the `CloudFormation` client's configuration.
    #[must_use]
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            client: Client::new(config),
        }
    }

    /// Starts an execution; returns its id.
    ///
    /// # Errors
    ///
    /// [`PipelineError`].
    pub async fn start(&self, pipeline: &str) -> Result<String, PipelineError> {
        self.client
            .start_pipeline_execution()
            .name(pipeline)
            .send()
            .await
            .map(|o| o.pipeline_execution_id().unwrap_or_default().to_string())
            .map_err(|e| classify("StartPipelineExecution", &e))
    }

    /// The newest execution, if any.
    ///
    /// # Errors
    ///
    /// [`PipelineError`].
    pub async fn latest(&self, pipeline: &str) -> Result<Option<Execution>, PipelineError> {
        let out = self
            .client
            .list_pipeline_executions()
            .pipeline_name(pipeline)
            .max_results(1)
            .send()
            .await
            .map_err(|e| classify("ListPipelineExecutions", &e))?;
        Ok(out
            .pipeline_execution_summaries()
            .first()
            .map(|s| Execution {
                id: s.pipeline_execution_id().unwrap_or_default().to_string(),
                status: s
                    .status()
                    .map(|x| x.as_str().to_string())
                    .unwrap_or_default(),
                updated_at: s.last_update_time().map(|t| {
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_secs(u64::try_from(t.secs()).unwrap_or(0)),
                    )
                    .to_string()
                }),
            }))
    }
}
