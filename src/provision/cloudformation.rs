//! `CloudFormation` provisioning with the AWS SDK.
//!
//! Stacks are named and tagged deterministically from the resource id, created and updated
//! through change sets (with `CAPABILITY_IAM`, `CAPABILITY_NAMED_IAM` and
//! `CAPABILITY_AUTO_EXPAND`), and observed by polling. A change set without changes is a
//! success. Without change sets, a stack this installation has no record of is created at
//! once (`CreateStack`, then `DescribeStacks` until it settles: two calls when it completes
//! at the first look); "already exists" takes the adoption path, which reads the stack and
//! passes the ownership gate ([`check_owner`]) before anything touches it. A stack that failed on create (`ROLLBACK_COMPLETE`) is deleted before the next
//! create. Failures carry the failing stack events' reasons.
//!
//! A template over `CloudFormation`'s 51,200-byte `TemplateBody` limit ([`TEMPLATE_BODY_LIMIT`])
//! is put in the S3 artifact bucket (`[aws] artifact_bucket`, see [`super::artifacts`]) under
//! a content-addressed key and deployed with `TemplateURL` (create, update, change set);
//! without a bucket such a deployment fails before anything is created, saying which key to set.
//!
//! For `protond import` it also lists stacks, reads a stack's template and adds ownership
//! tags to a stack it did not create, without changing its template or parameters.
//!
//! This module only executes what it is told; it never decides what to deploy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::config::http::HttpResponse;
use aws_sdk_cloudformation::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudformation::types::{Capability, ChangeSetType, Tag};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::artifacts::{ArtifactError, Artifacts};
use super::stack_events::{Board, StackEvent, fresh_events};
use super::{Applied, BoxFuture, DeployError, Job, Provisioner};
use crate::model::Placement;

mod change_set;
mod drift;
pub use change_set::ChangeSetChange;
pub use drift::{DriftRead, ResourceDrift};

/// `CloudFormation`'s limit on an inline `TemplateBody`, in bytes; larger templates are
/// deployed from the artifact bucket with `TemplateURL` (whose limit is 1 MB).
pub const TEMPLATE_BODY_LIMIT: usize = 51_200;

/// Tag holding the resource id.
pub const TAG_RESOURCE: &str = "protond:resource";
/// Tag holding the template name.
pub const TAG_TEMPLATE: &str = "protond:template";
/// Tag holding the template version.
pub const TAG_VERSION: &str = "protond:version";
/// Tag holding the spec commit.
pub const TAG_SPEC_COMMIT: &str = "protond:spec-commit";
/// Tag holding the deployment id that last changed the stack.
pub const TAG_DEPLOYMENT: &str = "protond:deployment";
/// Tag holding the name of the installation that owns the stack.
pub const TAG_INSTALLATION: &str = "protond:installation";

/// A provisioning failure.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// An AWS call failed.
    #[error("{operation} of stack {stack} failed: {message}")]
    Call {
        /// The API operation.
        operation: &'static str,
        /// The stack.
        stack: String,
        /// AWS's error code and message.
        message: String,
        /// Whether retrying later may help (throttling, 5xx, network).
        retryable: bool,
    },
    /// The stack ended in a failed state.
    #[error("stack {stack} ended in {status}: {reasons}")]
    StackFailed {
        /// The stack.
        stack: String,
        /// Final status.
        status: String,
        /// Reasons from the failing stack events.
        reasons: String,
    },
    /// Waiting took longer than allowed.
    #[error("stack {stack} is still {status} after {waited:?}")]
    Timeout {
        /// The stack.
        stack: String,
        /// Last status seen.
        status: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The template is over the `TemplateBody` limit and no artifact bucket is configured.
    #[error(
        "{resource}: the rendered template is {size} bytes, over CloudFormation's TemplateBody limit of {TEMPLATE_BODY_LIMIT} bytes; set `[aws] artifact_bucket` in the config file to an S3 bucket protond may write to (s3:PutObject, s3:GetObject), and the template is deployed from there with TemplateURL. Nothing was created"
    )]
    TemplateTooLarge {
        /// The resource.
        resource: String,
        /// The template's size in bytes.
        size: usize,
    },
    /// Putting the template in the artifact bucket failed.
    #[error("uploading the template of stack {stack}: {source}")]
    Upload {
        /// The stack.
        stack: String,
        /// The S3 failure (boxed: errors are held across awaits in the lifecycle's future).
        #[source]
        source: Box<ArtifactError>,
    },
}

/// Where a stack's template comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplateSource {
    /// Inline (`TemplateBody`).
    Body(String),
    /// From the artifact bucket (`TemplateURL`).
    Url(String),
}

impl TemplateSource {
    fn body(&self) -> Option<String> {
        match self {
            Self::Body(b) => Some(b.clone()),
            Self::Url(_) => None,
        }
    }

    fn url(&self) -> Option<String> {
        match self {
            Self::Url(u) => Some(u.clone()),
            Self::Body(_) => None,
        }
    }
}

impl ProvisionError {
    /// Whether retrying later may help.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Call { retryable, .. } => *retryable,
            Self::Upload { source, .. } => source.retryable,
            // The fix is in the config, not the spec: retried with backoff (nothing was
            // created), it goes through once the bucket is set, without a spec change.
            Self::Timeout { .. } | Self::TemplateTooLarge { .. } => true,
            Self::StackFailed { .. } => false,
        }
    }

    /// Whether `CloudFormation` answered that the stack already exists (a create retried
    /// after its answer was lost, or a stack made by someone else meanwhile).
    #[must_use]
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Self::Call { message, .. }
            if message.starts_with("AlreadyExistsException") || message.contains("already exists"))
    }

    /// Short label for metrics.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Call {
                retryable: true, ..
            } => "aws_transient",
            Self::Call { .. } => "aws_call",
            Self::StackFailed { .. } => "stack_failed",
            Self::Timeout { .. } => "timeout",
            Self::TemplateTooLarge { .. } => "template_too_large",
            Self::Upload { .. } => "artifact_upload",
        }
    }
}

fn call_error<E>(
    operation: &'static str,
    stack: &str,
    e: &SdkError<E, HttpResponse>,
) -> ProvisionError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (message, retryable) = match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("Unknown");
            let msg = err.message().unwrap_or("");
            let status = se.raw().status().as_u16();
            let retryable = status >= 500
                || matches!(
                    code,
                    "Throttling"
                        | "ThrottlingException"
                        | "RequestLimitExceeded"
                        | "TooManyRequestsException"
                );
            if err.code().is_none() {
                // Not an AWS error document: say what the endpoint answered.
                let body = String::from_utf8_lossy(se.raw().body().bytes().unwrap_or_default());
                let body: String = body.chars().take(300).collect();
                (
                    format!("HTTP {status} without an AWS error: {body}"),
                    retryable,
                )
            } else {
                (format!("{code}: {msg}"), retryable)
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            (super::aws_errors::no_answer("AWS", e), true)
        }
        other => (crate::error_chain(other), false),
    };
    ProvisionError::Call {
        operation,
        stack: stack.to_string(),
        message,
        retryable,
    }
}

fn is_missing_stack<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    match e {
        SdkError::ServiceError(se) => se
            .err()
            .message()
            .is_some_and(|m| m.contains("does not exist")),
        _ => false,
    }
}

/// Deletes a change set that will not be executed (best effort: a leftover is harmless).
async fn discard_change_set(client: &Client, stack: &str, change_set: &str) {
    let _ = client
        .delete_change_set()
        .stack_name(stack)
        .change_set_name(change_set)
        .send()
        .await;
}

/// The stack name of a resource: `protond-<slug>-<hash>`, where the slug is the id made
/// CloudFormation-safe (for reading only) and the hash is 128 bits of the SHA-256 of the
/// exact id, so that no choice of names can land two resources on one stack.
#[must_use]
pub fn stack_name(resource_id: &str) -> String {
    let hash = hex::encode(Sha256::digest(resource_id.as_bytes()));
    format!("protond-{}-{}", slug(resource_id, 80), &hash[..32])
}

/// The name stacks got before names were recorded (32 bits of hash). A record without a
/// recorded stack name has its stack under this name; new stacks never get it.
#[must_use]
pub fn legacy_stack_name(resource_id: &str) -> String {
    let hash = hex::encode(Sha256::digest(resource_id.as_bytes()));
    format!("protond-{}-{}", slug(resource_id, 100), &hash[..8])
}

/// The id made CloudFormation-safe: alphanumerics kept, runs of anything else one `-`.
fn slug(resource_id: &str, max: usize) -> String {
    let mut slug: String = resource_id
        .replace("service_instance/", "svc/")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while slug.contains("--") {
        slug = slug.replace("--", "-");
    }
    slug.trim_matches('-').chars().take(max).collect()
}

/// The stack a placement names: its recorded name, or the legacy name of a record written
/// before names were recorded.
#[must_use]
pub fn placed_stack_name(resource_id: &str, placement: &Placement) -> String {
    if placement.stack_name.is_empty() {
        legacy_stack_name(resource_id)
    } else {
        placement.stack_name.clone()
    }
}

/// The words every ownership conflict's message carries (the history keeps the message; the
/// state store recognises conflicts by them).
pub const CONFLICT_MARKER: &str = crate::state::CONFLICT_MARK;

/// Why a live stack is not provably this installation's resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "stack {stack} is not protond's {resource} of installation {installation:?}: its tags say {tr}={fr}, {ti}={fi}. protond leaves it alone. If it belongs to someone else, give the resource another name (or delete or rename that stack); if it is this installation's (a restored or copied state), tag it {ti}={installation:?} and {tr}={resource:?}",
    tr = TAG_RESOURCE,
    ti = TAG_INSTALLATION,
    fr = shown(.found_resource.as_deref()),
    fi = shown(.found_installation.as_deref())
)]
pub struct Conflict {
    /// The stack found.
    pub stack: String,
    /// The resource protond wanted there.
    pub resource: String,
    /// This installation.
    pub installation: String,
    /// The stack's `protond:resource` tag.
    pub found_resource: Option<String>,
    /// The stack's `protond:installation` tag.
    pub found_installation: Option<String>,
}

/// A tag value for a message: quoted, or `none`.
fn shown(v: Option<&str>) -> String {
    v.map_or_else(|| "none".to_string(), |v| format!("{v:?}"))
}

/// The ownership gate: whether the live stack `info` is provably this installation's
/// `resource_id`. Both tags must match; a stack with the resource tag but no installation
/// tag passes only when `recorded` (this installation's record names the stack: a stack
/// created before installations were tagged).
///
/// # Errors
///
/// [`Conflict`] naming the stack, its owner tags and what to do.
pub fn check_owner(
    info: &StackInfo,
    resource_id: &str,
    installation: &str,
    recorded: bool,
) -> Result<(), Conflict> {
    let found_resource = info.tags.get(TAG_RESOURCE);
    let found_installation = info.tags.get(TAG_INSTALLATION);
    let resource_ok = found_resource.is_some_and(|r| r == resource_id);
    let installation_ok = match found_installation {
        Some(i) => i == installation,
        None => recorded,
    };
    if resource_ok && installation_ok {
        return Ok(());
    }
    Err(Conflict {
        stack: info.name.clone(),
        resource: resource_id.to_string(),
        installation: installation.to_string(),
        found_resource: found_resource.cloned(),
        found_installation: found_installation.cloned(),
    })
}

/// The tags every stack carries: resource, template, version, deployment, spec commit.
fn stack_tags(req: &StackRequest) -> Vec<(&'static str, String)> {
    tag_set(
        &req.installation,
        &req.resource_id,
        &req.template,
        &req.version,
        req.deployment_id,
        req.spec_commit.as_deref(),
    )
}

/// protond's tags on a stack: owner (installation and resource), template, version,
/// deployment, and spec commit when known.
fn tag_set(
    installation: &str,
    resource_id: &str,
    template: &str,
    version: &str,
    deployment_id: i64,
    spec_commit: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut tags = vec![
        (TAG_INSTALLATION, installation.to_string()),
        (TAG_RESOURCE, resource_id.to_string()),
        (TAG_TEMPLATE, template.to_string()),
        (TAG_VERSION, version.to_string()),
        (TAG_DEPLOYMENT, deployment_id.to_string()),
    ];
    if let Some(c) = spec_commit {
        tags.push((TAG_SPEC_COMMIT, c.to_string()));
    }
    tags
}

/// The tags a deployment gives its stack (the set [`check_owner`] reads), for a stack
/// `protond import` adopts without deploying it.
#[must_use]
pub fn ownership_tags(
    dep: &crate::state::NewDeployment,
    deployment_id: i64,
    installation: &str,
) -> Vec<(&'static str, String)> {
    tag_set(
        installation,
        &dep.resource_id,
        &dep.template,
        &dep.to_version.to_string(),
        deployment_id,
        dep.spec_commit.as_deref(),
    )
}

/// What `DescribeStacks` says about one stack, as [`StackInfo`] (`name` when it names none).
fn stack_info(s: &aws_sdk_cloudformation::types::Stack, name: &str) -> StackInfo {
    StackInfo {
        name: s.stack_name().unwrap_or(name).to_string(),
        id: s.stack_id().map(str::to_string),
        status: s
            .stack_status()
            .map_or_else(String::new, |st| st.as_str().to_string()),
        outputs: s
            .outputs()
            .iter()
            .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
            .collect(),
        tags: s
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect(),
    }
}

/// A live stack as `protond import` reads it: what `DescribeStacks` says, with its
/// parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveStack {
    /// Name, id, status, outputs and tags.
    pub info: StackInfo,
    /// The stack's parameter values, by key (`****` for a `NoEcho` one).
    pub parameters: BTreeMap<String, String>,
}

impl LiveStack {
    fn from_sdk(s: &aws_sdk_cloudformation::types::Stack, name: &str) -> Self {
        Self {
            info: stack_info(s, name),
            parameters: s
                .parameters()
                .iter()
                .filter_map(|p| {
                    Some((
                        p.parameter_key()?.to_string(),
                        p.parameter_value().unwrap_or_default().to_string(),
                    ))
                })
                .collect(),
        }
    }
}

/// What `CloudFormation` says about a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackInfo {
    /// Stack name.
    pub name: String,
    /// Stack id (its ARN).
    pub id: Option<String>,
    /// Status, e.g. `CREATE_COMPLETE`.
    pub status: String,
    /// The stack's outputs, by key.
    pub outputs: BTreeMap<String, String>,
    /// The stack's tags, by key (ownership is read from them).
    pub tags: BTreeMap<String, String>,
}

impl StackInfo {
    /// Whether the stack is mid-operation.
    #[must_use]
    pub fn in_progress(&self) -> bool {
        self.status.ends_with("_IN_PROGRESS")
    }

    /// Whether the stack is in a state that means the last operation failed.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.status.ends_with("_FAILED")
            || self.status == "ROLLBACK_COMPLETE"
            || self.status == "UPDATE_ROLLBACK_COMPLETE"
            || self.status == "IMPORT_ROLLBACK_COMPLETE"
    }
}

/// A stack to create or update.
#[derive(Debug, Clone)]
pub struct StackRequest {
    /// Resource id.
    pub resource_id: String,
    /// Template body.
    pub template_body: String,
    /// Template name.
    pub template: String,
    /// Template version.
    pub version: String,
    /// Spec commit.
    pub spec_commit: Option<String>,
    /// Deployment id.
    pub deployment_id: i64,
    /// Role to assume for this stack's calls (the environment's `role_arn`, as Proton's
    /// environment account connections did); `CloudFormation` then acts with its permissions.
    pub role_arn: Option<String>,
    /// The stack's name.
    pub stack_name: String,
    /// The installation creating it (`protond:installation`).
    pub installation: String,
}

/// How an apply started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// The change set had no changes; nothing runs.
    NoChanges,
    /// A change set is executing.
    Executing,
    /// A change set is ready but was not executed: the fence closed meanwhile.
    Fenced,
}

/// What to do with a change set once `CloudFormation` has prepared it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterChangeSet {
    /// It has no changes: nothing to execute.
    NoChanges,
    /// Execute it.
    Execute,
    /// Leave it unexecuted: this replica may not start a deployment any more (its lease
    /// was lost while the change set was created); the next leader adopts the deployment.
    Abandon,
}

/// The decision after a change set is ready (`has_changes`), asked of the fence
/// (`may_start`: [`super::Fence::allows`]) right before it would be executed.
fn after_change_set(has_changes: bool, may_start: bool) -> AfterChangeSet {
    match (has_changes, may_start) {
        (false, _) => AfterChangeSet::NoChanges,
        (true, true) => AfterChangeSet::Execute,
        (true, false) => AfterChangeSet::Abandon,
    }
}

/// Whether an apply creates the stack at once, without reading it first: stacks are created
/// directly (`change_sets = false`) and this installation has no record of the resource (nor
/// a `StackId`). A create change set is not: it would land on a stack left in
/// `REVIEW_IN_PROGRESS` under the name by anyone, so change sets keep their read and
/// ownership gate first.
fn creates_directly(settings: &Settings, job: &Job<'_>) -> bool {
    !settings.change_sets && !job.recorded && job.deployment.placement.stack_id.is_none()
}

/// Whether `info` is the stack of this very deployment of this installation (its
/// `protond:deployment` and `protond:installation` tags): a create whose answer was lost.
fn is_this_deployments(info: &StackInfo, job: &Job<'_>) -> bool {
    info.tags.get(TAG_DEPLOYMENT) == Some(&job.deployment_id.to_string())
        && info.tags.get(TAG_INSTALLATION).map(String::as_str) == Some(job.installation)
        && info.tags.get(TAG_RESOURCE).map(String::as_str)
            == Some(job.deployment.resource_id.as_str())
}

/// A deployed stack as the provisioner reports it.
fn deployed(info: Option<StackInfo>) -> Applied {
    Applied::Deployed {
        stack_id: info.as_ref().and_then(|i| i.id.clone()),
        outputs: info.map(|i| i.outputs).unwrap_or_default(),
    }
}

/// Longest wait to connect to the AWS endpoint (the SDK's own default).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// Settings of the `CloudFormation` provisioner.
#[derive(Debug, Clone)]
pub struct Settings {
    /// AWS region.
    pub region: String,
    /// Endpoint override (e.g. `moto_server`).
    pub endpoint_url: Option<String>,
    /// SDK attempts per call (1 disables SDK retries).
    pub max_attempts: u32,
    /// Time between status polls.
    pub poll_interval: Duration,
    /// Longest wait for one attempt of one call (then retried as a transient error).
    pub call_timeout: Duration,
    /// Longest wait for one stack operation.
    pub timeout: Duration,
    /// Create and update through change sets (true) or CreateStack/UpdateStack (false).
    pub change_sets: bool,
    /// Use fixed local credentials (a local `moto_server`), not the default chain.
    pub local_credentials: bool,
    /// The S3 artifact bucket for templates over [`TEMPLATE_BODY_LIMIT`], if configured.
    pub artifacts: Option<crate::config::ArtifactBucket>,
}

impl Settings {
    /// The settings a configuration asks for.
    #[must_use]
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            region: config.region.clone(),
            endpoint_url: config.endpoint_url.clone(),
            max_attempts: config.aws_max_attempts,
            poll_interval: config.stack_poll_interval,
            call_timeout: config.aws_call_timeout,
            timeout: config.stack_timeout,
            change_sets: config.change_sets,
            local_credentials: config.local_credentials,
            artifacts: config.artifacts.clone(),
        }
    }
}

/// The `CloudFormation` provisioner. Clients per assumed role, and provisioners per region
/// (a stack is always addressed in the region it was recorded in), are cached.
#[derive(Clone)]
pub struct CloudFormation {
    base: aws_config::SdkConfig,
    client: Client,
    by_role: Arc<Mutex<BTreeMap<String, Client>>>,
    by_region: Arc<Mutex<BTreeMap<String, CloudFormation>>>,
    artifacts: Option<Artifacts>,
    settings: Settings,
    board: Board,
}

impl std::fmt::Debug for CloudFormation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudFormation")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl CloudFormation {
    /// Builds a client from the default credential chain and `settings`.
    pub async fn new(settings: Settings) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(settings.region.clone()))
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(settings.max_attempts.max(1)),
            )
            // Every attempt of every call ends: an answer lost on the way (a dropped
            // connection, an endpoint that accepted the request and never replies) becomes
            // a transient error the SDK retries, instead of a deployment waiting forever.
            // Clients of other services built from this configuration inherit it.
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT.min(settings.call_timeout))
                    .operation_attempt_timeout(settings.call_timeout)
                    .build(),
            );
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if settings.local_credentials {
            loader = loader.credentials_provider(aws_sdk_cloudformation::config::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "protond-local",
            ));
        }
        let base = loader.load().await;
        let client = Client::new(&base);
        let artifacts = settings
            .artifacts
            .clone()
            .map(|bucket| Artifacts::new(&base, bucket));
        Self {
            base,
            client,
            by_role: Arc::new(Mutex::new(BTreeMap::new())),
            by_region: Arc::new(Mutex::new(BTreeMap::new())),
            artifacts,
            settings,
            board: Board::default(),
        }
    }

    /// This provisioner for `region` (itself for the configured region, or none given).
    async fn in_region(&self, region: Option<&str>) -> CloudFormation {
        let Some(region) = region.filter(|r| *r != self.settings.region) else {
            return self.clone();
        };
        let mut cache = self.by_region.lock().await;
        if let Some(c) = cache.get(region) {
            return c.clone();
        }
        let settings = Settings {
            region: region.to_string(),
            ..self.settings.clone()
        };
        let mut cfn = Box::pin(CloudFormation::new(settings)).await;
        cfn.board = self.board.clone();
        cache.insert(region.to_string(), cfn.clone());
        cfn
    }

    /// The underlying SDK configuration (shared with other AWS clients).
    #[must_use]
    pub fn sdk_config(&self) -> &aws_config::SdkConfig {
        &self.base
    }

    async fn client_for(&self, role_arn: Option<&str>) -> Client {
        let Some(role) = role_arn else {
            return self.client.clone();
        };
        let mut cache = self.by_role.lock().await;
        if let Some(c) = cache.get(role) {
            return c.clone();
        }
        let provider = aws_config::sts::AssumeRoleProvider::builder(role)
            .session_name("protond")
            .configure(&self.base)
            .build()
            .await;
        let conf = aws_sdk_cloudformation::config::Builder::from(&self.base)
            .credentials_provider(provider)
            .build();
        let client = Client::from_conf(conf);
        cache.insert(role.to_string(), client.clone());
        client
    }

    /// The physical id of the stack's `AWS::CodePipeline::Pipeline` resource, if it has one.
    ///
    /// # Errors
    ///
    /// [`ProvisionError`] when the stack cannot be read.
    pub async fn pipeline_resource(
        &self,
        stack: &str,
        role_arn: Option<&str>,
    ) -> Result<Option<String>, ProvisionError> {
        let client = self.client_for(role_arn).await;
        let out = client
            .describe_stack_resources()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| call_error("DescribeStackResources", stack, &e))?;
        Ok(out
            .stack_resources()
            .iter()
            .find(|r| r.resource_type() == Some("AWS::CodePipeline::Pipeline"))
            .and_then(|r| r.physical_resource_id())
            .map(str::to_string))
    }

    /// Describes a stack; `None` when it does not exist.
    pub async fn describe(
        &self,
        stack: &str,
        role_arn: Option<&str>,
    ) -> Result<Option<StackInfo>, ProvisionError> {
        let client = self.client_for(role_arn).await;
        match client.describe_stacks().stack_name(stack).send().await {
            Ok(out) => Ok(out.stacks().first().map(|s| stack_info(s, stack))),
            Err(e) if is_missing_stack(&e) => Ok(None),
            Err(e) => Err(call_error("DescribeStacks", stack, &e)),
        }
    }

    /// Reasons of the failed events of the stack's latest operation.
    pub async fn failure_reasons(&self, stack: &str, role_arn: Option<&str>) -> String {
        let client = self.client_for(role_arn).await;
        let Ok(out) = client
            .describe_stack_events()
            .stack_name(stack)
            .send()
            .await
        else {
            return "no stack events available".into();
        };
        let mut reasons: Vec<String> = Vec::new();
        for e in out.stack_events() {
            let status = e.resource_status().map_or("", |s| s.as_str());
            if status.ends_with("_FAILED") {
                let reason = e.resource_status_reason().unwrap_or("no reason given");
                let line = format!(
                    "{} {status}: {reason}",
                    e.logical_resource_id().unwrap_or("?")
                );
                if !reasons.contains(&line) {
                    reasons.push(line);
                }
            }
            if reasons.len() >= 5 {
                break;
            }
        }
        if reasons.is_empty() {
            "no failed resource events recorded".into()
        } else {
            reasons.join("; ")
        }
    }

    /// Starts a create or update through a change set. A stack left in `ROLLBACK_COMPLETE`
    /// by a failed create is deleted first.
    pub async fn start_apply(&self, req: &StackRequest) -> Result<Started, ProvisionError> {
        let existing = self
            .describe(&req.stack_name, req.role_arn.as_deref())
            .await?;
        self.start_apply_on(req, existing, super::Fence::OPEN).await
    }

    /// [`CloudFormation::start_apply`] with the stack already described (`existing`), so that
    /// the ownership gate's read is not repeated.
    /// A change set is executed only if `fence` still allows it once it is ready.
    async fn start_apply_on(
        &self,
        req: &StackRequest,
        existing: Option<StackInfo>,
        fence: super::Fence<'_>,
    ) -> Result<Started, ProvisionError> {
        let stack = req.stack_name.clone();
        let role = req.role_arn.as_deref();
        let source = self.template_source(req).await?;
        let client = self.client_for(role).await;
        let change_set_type = if self.existing_stack(existing, &stack, role).await? {
            ChangeSetType::Update
        } else {
            ChangeSetType::Create
        };
        let tags = stack_tags(req);
        if !self.settings.change_sets {
            return self
                .start_direct(
                    &client,
                    (&stack, req, &source),
                    change_set_type == ChangeSetType::Update,
                    &tags,
                    fence,
                )
                .await;
        }
        let change_set = format!("protond-{}", req.deployment_id);
        let mut call = client
            .create_change_set()
            .stack_name(&stack)
            .change_set_name(&change_set)
            .change_set_type(change_set_type.clone())
            .set_template_body(source.body())
            .set_template_url(source.url())
            .capabilities(Capability::CapabilityIam)
            .capabilities(Capability::CapabilityNamedIam)
            .capabilities(Capability::CapabilityAutoExpand)
            .client_token(format!("protond-{}", req.deployment_id));
        for (k, v) in &tags {
            call = call.tags(Tag::builder().key(*k).value(v).build());
        }
        call.send()
            .await
            .map_err(|e| call_error("CreateChangeSet", &stack, &e))?;
        let update = change_set_type == ChangeSetType::Update;
        let ready = self
            .change_set_ready(&client, &stack, &change_set, update)
            .await?;
        match after_change_set(ready, fence.allows()) {
            AfterChangeSet::NoChanges => return Ok(Started::NoChanges),
            AfterChangeSet::Abandon => {
                tracing::warn!(stack = %stack, change_set = %change_set, "The lead was lost while the change set was created: not executed; the next leader adopts the deployment.");
                return Ok(Started::Fenced);
            }
            AfterChangeSet::Execute => {}
        }
        client
            .execute_change_set()
            .stack_name(&stack)
            .change_set_name(&change_set)
            // A retried execute (its answer lost or timed out) is the same request, not a
            // second one.
            .client_request_token(format!("protond-{}", req.deployment_id))
            .send()
            .await
            .map_err(|e| call_error("ExecuteChangeSet", &stack, &e))?;
        Ok(Started::Executing)
    }

    /// Where `req`'s template comes from: inline up to [`TEMPLATE_BODY_LIMIT`] bytes; above,
    /// put in the artifact bucket (as the stack's role) under a content-addressed key and
    /// referenced by URL, or [`ProvisionError::TemplateTooLarge`] without a bucket.
    async fn template_source(&self, req: &StackRequest) -> Result<TemplateSource, ProvisionError> {
        let body = &req.template_body;
        if body.len() <= TEMPLATE_BODY_LIMIT {
            return Ok(TemplateSource::Body(body.clone()));
        }
        let Some(artifacts) = &self.artifacts else {
            return Err(ProvisionError::TemplateTooLarge {
                resource: req.resource_id.clone(),
                size: body.len(),
            });
        };
        // 0x7b is an opening brace: a JSON template.
        let ext = if body.trim_start().as_bytes().first() == Some(&0x7b) {
            "json"
        } else {
            "yaml"
        };
        let key = artifacts.key("templates", &req.stack_name, body.as_bytes(), ext);
        artifacts
            .put(req.role_arn.as_deref(), &key, body.as_bytes().to_vec())
            .await
            .map_err(|source| ProvisionError::Upload {
                stack: req.stack_name.clone(),
                source: Box::new(source),
            })?;
        tracing::info!(stack = %req.stack_name, bytes = body.len(), bucket = %artifacts.bucket(), key = %key, "The template is over the TemplateBody limit: deploying it from the artifact bucket.");
        Ok(TemplateSource::Url(artifacts.url(&key)))
    }

    /// Whether a stack to update exists under `stack`. A stack left in `ROLLBACK_COMPLETE`
    /// by a failed create is deleted first; one in `REVIEW_IN_PROGRESS` (a create change
    /// set never executed) or `DELETE_COMPLETE` counts as absent.
    async fn existing_stack(
        &self,
        info: Option<StackInfo>,
        stack: &str,
        role: Option<&str>,
    ) -> Result<bool, ProvisionError> {
        let Some(info) = info else {
            return Ok(false);
        };
        match info.status.as_str() {
            "ROLLBACK_COMPLETE" => {
                tracing::info!(stack = %stack, "Deleting stack left by a failed create before retrying.");
                self.delete_and_wait(stack, role).await?;
                Ok(false)
            }
            "DELETE_COMPLETE" | "REVIEW_IN_PROGRESS" => Ok(false),
            _ => Ok(true),
        }
    }

    /// Waits for a change set to be ready. `false` when it has no changes (it is discarded).
    async fn change_set_ready(
        &self,
        client: &Client,
        stack: &str,
        change_set: &str,
        update: bool,
    ) -> Result<bool, ProvisionError> {
        let started = tokio::time::Instant::now();
        loop {
            let out = client
                .describe_change_set()
                .stack_name(stack)
                .change_set_name(change_set)
                .send()
                .await
                .map_err(|e| call_error("DescribeChangeSet", stack, &e))?;
            let status = out.status().map_or("", |s| s.as_str()).to_string();
            match status.as_str() {
                "CREATE_COMPLETE" => {
                    if update && out.changes().is_empty() {
                        discard_change_set(client, stack, change_set).await;
                        return Ok(false);
                    }
                    return Ok(true);
                }
                "FAILED" => {
                    let reason = out.status_reason().unwrap_or("").to_string();
                    if reason.contains("didn't contain changes") || reason.contains("No updates") {
                        discard_change_set(client, stack, change_set).await;
                        return Ok(false);
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

    /// `UpdateStack` or `CreateStack`, only if `fence` still allows it (slow steps, a
    /// template upload or the delete of a failed stack, may run before).
    async fn start_direct(
        &self,
        client: &Client,
        (stack, req, source): (&str, &StackRequest, &TemplateSource),
        update: bool,
        tags: &[(&str, String)],
        fence: super::Fence<'_>,
    ) -> Result<Started, ProvisionError> {
        if !fence.allows() {
            return Ok(Started::Fenced);
        }
        let token = format!("protond-{}", req.deployment_id);
        let tags: Vec<Tag> = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(*k).value(v).build())
            .collect();
        let caps = vec![
            Capability::CapabilityIam,
            Capability::CapabilityNamedIam,
            Capability::CapabilityAutoExpand,
        ];
        if update {
            let result = client
                .update_stack()
                .stack_name(stack)
                .set_template_body(source.body())
                .set_template_url(source.url())
                .set_capabilities(Some(caps))
                .set_tags(Some(tags))
                .client_request_token(token)
                .send()
                .await;
            match result {
                Ok(_) => Ok(Started::Executing),
                Err(SdkError::ServiceError(se))
                    if se
                        .err()
                        .message()
                        .is_some_and(|m| m.contains("No updates are to be performed")) =>
                {
                    Ok(Started::NoChanges)
                }
                Err(e) => Err(call_error("UpdateStack", stack, &e)),
            }
        } else {
            client
                .create_stack()
                .stack_name(stack)
                .set_template_body(source.body())
                .set_template_url(source.url())
                .set_capabilities(Some(caps))
                .set_tags(Some(tags))
                .client_request_token(token)
                .send()
                .await
                .map_err(|e| call_error("CreateStack", stack, &e))?;
            Ok(Started::Executing)
        }
    }

    /// Starts deleting a stack (a missing stack is already deleted).
    pub async fn start_delete(
        &self,
        stack: &str,
        role_arn: Option<&str>,
    ) -> Result<(), ProvisionError> {
        let client = self.client_for(role_arn).await;
        match client.delete_stack().stack_name(stack).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_missing_stack(&e) => Ok(()),
            Err(e) => Err(call_error("DeleteStack", stack, &e)),
        }
    }

    async fn delete_and_wait(&self, stack: &str, role: Option<&str>) -> Result<(), ProvisionError> {
        self.start_delete(stack, role).await?;
        self.wait(stack, role, true).await.map(|_| ())
    }

    /// Polls a stack until its operation ends. For deletes, `None` means gone. A failed end
    /// state is an error with the failing events' reasons.
    pub async fn wait(
        &self,
        stack: &str,
        role_arn: Option<&str>,
        deleting: bool,
    ) -> Result<Option<StackInfo>, ProvisionError> {
        let mut watch = Watch {
            stack,
            role_arn,
            started: tokio::time::Instant::now(),
            seen: std::collections::BTreeSet::new(),
            in_flight_seen: false,
            progress: crate::state::Progress {
                stack: stack.to_string(),
                ..crate::state::Progress::default()
            },
        };
        let result = self.wait_loop(&mut watch, deleting).await;
        // The events of the end state, seen once the stack settled (not when the endpoint
        // stopped answering: that would only wait for it again; nor for a create complete at
        // the first look, whose events would only repeat CREATE_COMPLETE at the cost of a
        // third call per stack).
        let quiet_create = !watch.in_flight_seen
            && matches!(&result, Ok(Some(i)) if i.status == "CREATE_COMPLETE");
        if !quiet_create
            && !matches!(
                result,
                Err(ProvisionError::Call { .. } | ProvisionError::Timeout { .. })
            )
        {
            self.stream_events(&mut watch, None).await;
        }
        self.board.remove(stack);
        result
    }

    async fn wait_loop(
        &self,
        watch: &mut Watch<'_>,
        deleting: bool,
    ) -> Result<Option<StackInfo>, ProvisionError> {
        let (stack, role_arn, started) = (watch.stack, watch.role_arn, watch.started);
        loop {
            let info = self.describe(stack, role_arn).await?;
            tracing::debug!(
                stack,
                status = info.as_ref().map(|i| i.status.as_str()),
                "Stack polled."
            );
            if let Some(i) = &info
                && i.in_progress()
            {
                watch.in_flight_seen = true;
                self.stream_events(watch, Some(&i.status)).await;
            }
            match info {
                None => {
                    return if deleting {
                        Ok(None)
                    } else {
                        Err(ProvisionError::StackFailed {
                            stack: stack.to_string(),
                            status: "MISSING".into(),
                            reasons: "the stack disappeared while being deployed".into(),
                        })
                    };
                }
                Some(info) if info.status == "DELETE_COMPLETE" && deleting => return Ok(None),
                Some(info) if info.in_progress() => {
                    if started.elapsed() > self.settings.timeout {
                        return Err(ProvisionError::Timeout {
                            stack: stack.to_string(),
                            status: info.status,
                            waited: started.elapsed(),
                        });
                    }
                }
                Some(info) if info.failed() => {
                    let reasons = self.failure_reasons(stack, role_arn).await;
                    return Err(ProvisionError::StackFailed {
                        stack: stack.to_string(),
                        status: info.status,
                        reasons,
                    });
                }
                Some(info) => return Ok(Some(info)),
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }
}

/// One stack being waited for: the events logged so far and its progress.
struct Watch<'a> {
    stack: &'a str,
    role_arn: Option<&'a str>,
    started: tokio::time::Instant,
    seen: std::collections::BTreeSet<String>,
    /// Whether a poll saw the operation in flight.
    in_flight_seen: bool,
    progress: crate::state::Progress,
}

impl CloudFormation {
    /// Logs the stack events of the operation in flight not logged yet, in order, and
    /// updates the board. Best effort: a failed read is retried at the next poll.
    async fn stream_events(&self, watch: &mut Watch<'_>, status: Option<&str>) {
        let client = self.client_for(watch.role_arn).await;
        let page = match client
            .describe_stack_events()
            .stack_name(watch.stack)
            .send()
            .await
        {
            Ok(out) => out
                .stack_events()
                .iter()
                .map(|e| StackEvent {
                    id: e.event_id().unwrap_or_default().to_string(),
                    logical_id: e.logical_resource_id().unwrap_or("?").to_string(),
                    resource_type: e.resource_type().unwrap_or("?").to_string(),
                    status: e.resource_status().map_or("?", |s| s.as_str()).to_string(),
                    reason: e.resource_status_reason().map(str::to_string),
                })
                .collect::<Vec<_>>(),
            Err(e) => {
                tracing::debug!(stack = watch.stack, error = %aws_sdk_cloudformation::error::DisplayErrorContext(&e), "Could not read stack events.");
                Vec::new()
            }
        };
        let elapsed = watch.started.elapsed();
        for e in fresh_events(&page, &watch.seen) {
            crate::telemetry::events::StackEventSeen {
                stack: watch.stack,
                event: &e,
                elapsed,
            }
            .emit();
            watch.seen.insert(e.id.clone());
            watch.progress.events += 1;
            watch.progress.last_event = Some(e.line());
            if e.logical_id == watch.stack {
                e.status.clone_into(&mut watch.progress.status);
            }
        }
        if let Some(s) = status {
            s.clone_into(&mut watch.progress.status);
        }
        watch.progress.elapsed_secs = elapsed.as_secs();
        self.board.set(watch.stack, watch.progress.clone());
    }

    /// `CancelUpdateStack` on the job's stack: `CloudFormation` rolls the update back and
    /// the running wait ends in `UPDATE_ROLLBACK_COMPLETE`.
    async fn cancel_job(&self, job: Job<'_>) -> Result<(), DeployError> {
        let p = &job.deployment.placement;
        let stack = placed_stack_name(&job.deployment.resource_id, p);
        let client = self.client_for(p.role_arn.as_deref()).await;
        client
            .cancel_update_stack()
            .stack_name(&stack)
            .send()
            .await
            .map_err(|e| call_error("CancelUpdateStack", &stack, &e))?;
        Ok(())
    }

    /// The live stack a job addresses: by its recorded `StackId` (which also finds a deleted
    /// stack), else by name. A stack whose recorded id is deleted is looked up by name again:
    /// something else may live under the name now.
    async fn live_stack(&self, job: &Job<'_>) -> Result<Option<StackInfo>, ProvisionError> {
        let p = &job.deployment.placement;
        let role = p.role_arn.as_deref();
        let name = placed_stack_name(&job.deployment.resource_id, p);
        if let Some(id) = &p.stack_id {
            match self.describe(id, role).await? {
                Some(info) if info.status != "DELETE_COMPLETE" => return Ok(Some(info)),
                _ => {}
            }
        }
        Ok(self
            .describe(&name, role)
            .await?
            .filter(|i| i.status != "DELETE_COMPLETE"))
    }

    /// The ownership gate for a job. A stack without the installation tag passes only when
    /// it is provably the one this installation recorded: its `StackId` is the recorded one, or
    /// (a record written before `StackIds` were recorded) a record exists and names no `StackId`.
    fn gate(job: &Job<'_>, info: &StackInfo) -> Result<(), DeployError> {
        let p = &job.deployment.placement;
        let recorded = match &p.stack_id {
            Some(id) => info.id.as_ref() == Some(id),
            None => job.recorded,
        };
        check_owner(
            info,
            &job.deployment.resource_id,
            job.installation,
            recorded,
        )
        .map_err(DeployError::Conflict)
    }

    async fn apply_job(
        &self,
        job: Job<'_>,
        documents: &[(String, String)],
    ) -> Result<Applied, DeployError> {
        let dep = job.deployment;
        let [(_, body)] = documents else {
            return Err(DeployError::Unsupported {
                resource: dep.resource_id.clone(),
                reason: "expected exactly one rendered CloudFormation document".into(),
            });
        };
        let role = dep.placement.role_arn.as_deref();
        let stack = placed_stack_name(&dep.resource_id, &dep.placement);
        let req = StackRequest {
            resource_id: dep.resource_id.clone(),
            template_body: body.clone(),
            template: dep.template.clone(),
            version: dep.to_version.to_string(),
            spec_commit: dep.spec_commit.clone(),
            deployment_id: job.deployment_id,
            role_arn: role.map(str::to_string),
            stack_name: stack.clone(),
            installation: job.installation.to_string(),
        };
        let started = if creates_directly(&self.settings, &job) {
            self.create_or_adopt(&job, &req).await?
        } else {
            match self.read_then_apply(&job, &req).await {
                Ok(started) => started,
                Err(DeployError::Stack(e)) if e.is_already_exists() => {
                    return Ok(deployed(self.lost_answer(&job, &stack).await?));
                }
                Err(e) => return Err(e),
            }
        };
        let info = match started {
            Started::NoChanges => self.describe(&stack, role).await?,
            Started::Executing => self.wait(&stack, role, false).await?,
            Started::Fenced => {
                return Err(DeployError::Fenced {
                    resource: dep.resource_id.clone(),
                });
            }
        };
        Ok(deployed(info))
    }

    /// The create-or-update of a stack this installation recorded (or of any stack, through
    /// change sets): the live stack read first (by its recorded `StackId`, else by name), the
    /// ownership gate, then a change set or `CreateStack`/`UpdateStack`.
    async fn read_then_apply(
        &self,
        job: &Job<'_>,
        req: &StackRequest,
    ) -> Result<Started, DeployError> {
        let live = self.live_stack(job).await?;
        if let Some(info) = &live {
            Self::gate(job, info)?;
        }
        // The gate's read serves as the create-or-update decision (nothing live under the
        // name: a create), unless it found the stack by a recorded StackId under another name.
        let existing = match live {
            None => None,
            Some(info) if info.name == req.stack_name => Some(info),
            Some(_) => {
                self.describe(&req.stack_name, req.role_arn.as_deref())
                    .await?
            }
        };
        Ok(self.start_apply_on(req, existing, job.fence).await?)
    }

    /// A stack without a recorded `StackId`, created at once (`CreateStack`, no read before
    /// it: one call). `AlreadyExistsException` means a stack sits under the name: it is read
    /// and takes the adoption path, through the same ownership gate as every update (a
    /// foreign stack is a conflict, left alone): a stack of this resource and installation
    /// (this create's lost answer, a failed create's `ROLLBACK_COMPLETE`, a record lost) is
    /// updated or replaced as [`CloudFormation::start_apply_on`] decides.
    async fn create_or_adopt(
        &self,
        job: &Job<'_>,
        req: &StackRequest,
    ) -> Result<Started, DeployError> {
        let role = req.role_arn.as_deref();
        let source = self.template_source(req).await?;
        let client = self.client_for(role).await;
        let tags = stack_tags(req);
        match self
            .start_direct(
                &client,
                (&req.stack_name, req, &source),
                false,
                &tags,
                job.fence,
            )
            .await
        {
            Ok(started) => return Ok(started),
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
        let Some(info) = self.describe(&req.stack_name, role).await? else {
            return Err(ProvisionError::StackFailed {
                stack: req.stack_name.clone(),
                status: "MISSING".into(),
                reasons: "the create answered that the stack exists, but it does not".into(),
            }
            .into());
        };
        // Even a stack tagged with this deployment's id goes through the gate and an update:
        // ids start again from 1 in a new state file, so the tag alone cannot tell this
        // create's lost answer from a stack an earlier state left (whose template may
        // differ). An update that changes nothing costs one call; a stack still being
        // created fails the update (retried by the next cycle).
        Self::gate(job, &info)?;
        tracing::info!(stack = %req.stack_name, status = %info.status, "A stack of this resource already exists under its name: taking it over.");
        Ok(self.start_apply_on(req, Some(info), job.fence).await?)
    }

    /// A create answered "already exists" after the stack was read: the SDK retried a create
    /// whose first answer was lost, or someone else created the stack meanwhile. Only a stack
    /// carrying this very deployment's tags (and this installation's) is adopted; anything
    /// else is a conflict.
    async fn lost_answer(
        &self,
        job: &Job<'_>,
        stack: &str,
    ) -> Result<Option<StackInfo>, DeployError> {
        let role = job.deployment.placement.role_arn.as_deref();
        let Some(info) = self.describe(stack, role).await? else {
            return Err(ProvisionError::StackFailed {
                stack: stack.to_string(),
                status: "MISSING".into(),
                reasons: "the create answered that the stack exists, but it does not".into(),
            }
            .into());
        };
        if !is_this_deployments(&info, job) {
            check_owner(&info, &job.deployment.resource_id, job.installation, false)
                .map_err(DeployError::Conflict)?;
            // Ours, but from another deployment: this one never ran.
            return Err(ProvisionError::StackFailed {
                stack: stack.to_string(),
                status: info.status,
                reasons: "the stack exists from an earlier deployment; retrying".into(),
            }
            .into());
        }
        tracing::info!(stack = %stack, "The create's answer was lost; the stack is this deployment's: adopting it.");
        Ok(self.wait(stack, role, false).await?)
    }

    async fn delete_job(&self, job: Job<'_>) -> Result<Applied, DeployError> {
        let Some(info) = self.live_stack(&job).await? else {
            return Ok(Applied::Deleted);
        };
        Self::gate(&job, &info)?;
        // Addressed by StackId: done only when that very stack is DELETE_COMPLETE.
        let id = info.id.clone().unwrap_or(info.name.clone());
        let role = job.deployment.placement.role_arn.as_deref();
        if !job.fence.allows() {
            return Err(DeployError::Fenced {
                resource: job.deployment.resource_id.clone(),
            });
        }
        self.start_delete(&id, role).await?;
        self.wait(&id, role, true).await?;
        Ok(Applied::Deleted)
    }

    /// Finishes a deployment an earlier process left in flight, from the stack's
    /// `protond:deployment` tag and status, after the ownership gate.
    async fn adopt_job(&self, job: Job<'_>) -> Result<Applied, DeployError> {
        let d = job.deployment;
        let role = d.placement.role_arn.as_deref();
        let info = self.live_stack(&job).await?;
        if d.action == crate::model::DeploymentAction::Delete {
            let Some(info) = info else {
                return Ok(Applied::Deleted);
            };
            Self::gate(&job, &info)?;
            if info.status == "DELETE_IN_PROGRESS" {
                let id = info.id.clone().unwrap_or(info.name.clone());
                self.wait(&id, role, true).await?;
                return Ok(Applied::Deleted);
            }
            return Ok(Applied::Interrupted);
        }
        let Some(info) = info else {
            return Ok(Applied::Interrupted);
        };
        Self::gate(&job, &info)?;
        if info.status == "REVIEW_IN_PROGRESS" {
            // A change set was created for a new stack but never executed.
            return Ok(Applied::Interrupted);
        }
        if info.tags.get(TAG_DEPLOYMENT).map(String::as_str)
            != Some(job.deployment_id.to_string().as_str())
        {
            // The stack is from an earlier deployment: this one never executed.
            return Ok(Applied::Interrupted);
        }
        let stack = info.id.clone().unwrap_or(info.name.clone());
        if info.in_progress() {
            let done = self.wait(&stack, role, false).await?;
            return Ok(Applied::Deployed {
                stack_id: done.as_ref().and_then(|x| x.id.clone()),
                outputs: done.map(|x| x.outputs).unwrap_or_default(),
            });
        }
        if info.failed() {
            let reasons = self.failure_reasons(&stack, role).await;
            return Err(ProvisionError::StackFailed {
                stack: info.name,
                status: info.status,
                reasons,
            }
            .into());
        }
        Ok(Applied::Deployed {
            stack_id: info.id,
            outputs: info.outputs,
        })
    }
}

/// What `protond import` reads and the one change it makes: listing stacks, reading a
/// stack's template, and adding ownership tags to a stack without changing anything else.
impl CloudFormation {
    /// Every stack of the configured region that is not deleted (`DescribeStacks`, every
    /// page), with tags and parameters, as `role_arn` (or the default credentials) sees them.
    pub async fn list_stacks(
        &self,
        role_arn: Option<&str>,
    ) -> Result<Vec<LiveStack>, ProvisionError> {
        let client = self.client_for(role_arn).await;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = client
                .describe_stacks()
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| call_error("DescribeStacks", "(all stacks)", &e))?;
            out.extend(
                page.stacks()
                    .iter()
                    .map(|s| LiveStack::from_sdk(s, ""))
                    .filter(|s| s.info.status != "DELETE_COMPLETE"),
            );
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// One stack (by name or `StackId`) with its parameters; `None` when it does not exist
    /// or is deleted.
    pub async fn describe_live(
        &self,
        stack: &str,
        role_arn: Option<&str>,
    ) -> Result<Option<LiveStack>, ProvisionError> {
        let client = self.client_for(role_arn).await;
        match client.describe_stacks().stack_name(stack).send().await {
            Ok(out) => Ok(out
                .stacks()
                .first()
                .map(|s| LiveStack::from_sdk(s, stack))
                .filter(|s| s.info.status != "DELETE_COMPLETE")),
            Err(e) if is_missing_stack(&e) => Ok(None),
            Err(e) => Err(call_error("DescribeStacks", stack, &e)),
        }
    }

    /// The template body a stack was created or last updated with, as it was submitted
    /// (`GetTemplate`, stage `Original`: before transforms, short-form tags kept).
    pub async fn template_body(
        &self,
        stack: &str,
        role_arn: Option<&str>,
    ) -> Result<String, ProvisionError> {
        let client = self.client_for(role_arn).await;
        let out = client
            .get_template()
            .stack_name(stack)
            .template_stage(aws_sdk_cloudformation::types::TemplateStage::Original)
            .send()
            .await
            .map_err(|e| call_error("GetTemplate", stack, &e))?;
        Ok(out.template_body().unwrap_or_default().to_string())
    }

    /// Adds `tags` to an existing stack and changes nothing else: `UpdateStack` with
    /// `UsePreviousTemplate` and every parameter's `UsePreviousValue`, the stack's own tags
    /// kept (tags under AWS's reserved `aws:` prefix are left to AWS: callers can neither
    /// set nor remove them), then waits for the update. A stack that already carries the
    /// tags is left as it is. Returns the stack as it stands afterwards.
    pub async fn add_tags(
        &self,
        stack: &LiveStack,
        role_arn: Option<&str>,
        tags: &[(&str, String)],
    ) -> Result<Option<StackInfo>, ProvisionError> {
        let target = stack.info.id.clone().unwrap_or(stack.info.name.clone());
        let mut merged: BTreeMap<String, String> = stack
            .info
            .tags
            .iter()
            .filter(|(k, _)| !k.starts_with("aws:"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in tags {
            merged.insert((*k).to_string(), v.clone());
        }
        let parameters: Vec<aws_sdk_cloudformation::types::Parameter> = stack
            .parameters
            .keys()
            .map(|k| {
                aws_sdk_cloudformation::types::Parameter::builder()
                    .parameter_key(k)
                    .use_previous_value(true)
                    .build()
            })
            .collect();
        let client = self.client_for(role_arn).await;
        let result = client
            .update_stack()
            .stack_name(&target)
            .use_previous_template(true)
            .set_parameters((!parameters.is_empty()).then_some(parameters))
            .capabilities(Capability::CapabilityIam)
            .capabilities(Capability::CapabilityNamedIam)
            .capabilities(Capability::CapabilityAutoExpand)
            .set_tags(Some(
                merged
                    .iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .send()
            .await;
        match result {
            Ok(_) => self.wait(&target, role_arn, false).await,
            Err(SdkError::ServiceError(se))
                if se
                    .err()
                    .message()
                    .is_some_and(|m| m.contains("No updates are to be performed")) =>
            {
                self.describe(&target, role_arn).await
            }
            Err(e) => Err(call_error("UpdateStack", &target, &e)),
        }
    }
}

impl Provisioner for CloudFormation {
    fn apply<'a>(
        &'a self,
        job: Job<'a>,
        documents: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Applied, DeployError>> {
        Box::pin(async move {
            let region = job.deployment.placement.region.as_deref();
            self.in_region(region).await.apply_job(job, documents).await
        })
    }

    fn delete<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Applied, DeployError>> {
        Box::pin(async move {
            let region = job.deployment.placement.region.as_deref();
            self.in_region(region).await.delete_job(job).await
        })
    }

    fn adopt<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Applied, DeployError>> {
        Box::pin(async move {
            let region = job.deployment.placement.region.as_deref();
            self.in_region(region).await.adopt_job(job).await
        })
    }

    fn cancel<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(async move {
            let region = job.deployment.placement.region.as_deref();
            self.in_region(region).await.cancel_job(job).await
        })
    }

    fn progress(&self, job: Job<'_>) -> Option<crate::state::Progress> {
        self.board.get(&placed_stack_name(
            &job.deployment.resource_id,
            &job.deployment.placement,
        ))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_ready_change_set_is_executed_only_while_the_fence_allows() {
        // (has changes, fence allows, decision).
        let cases = [
            (true, true, AfterChangeSet::Execute),
            (true, false, AfterChangeSet::Abandon),
            (false, true, AfterChangeSet::NoChanges),
            (false, false, AfterChangeSet::NoChanges),
        ];
        for (changes, allows, want) in cases {
            assert_eq!(
                after_change_set(changes, allows),
                want,
                "{changes} {allows}"
            );
        }
        let closed = || false;
        assert!(!crate::provision::Fence::new(&closed).allows());
        assert!(crate::provision::Fence::OPEN.allows());
    }
    use super::*;

    #[test]
    fn stack_names_are_deterministic_safe_and_distinct() {
        let a = stack_name("service_instance/payments/payments-dev");
        assert_eq!(a, stack_name("service_instance/payments/payments-dev"));
        assert!(a.starts_with("protond-svc-payments-payments-dev-"), "{a}");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_ne!(stack_name("environment/a_b"), stack_name("environment/a-b"));
        let long = stack_name(&format!("environment/{}", "x".repeat(300)));
        assert!(long.len() <= 128, "{}", long.len());
        // 128 bits of the exact id: ids that fold to one slug still differ.
        let (x, y) = (
            stack_name("service_instance/a-b/c"),
            stack_name("service_instance/a/b-c"),
        );
        assert_ne!(x, y);
        assert_eq!(x.rsplit('-').next().map(str::len), Some(32), "{x}");
        // Records written before names were recorded keep their stack.
        let hash = hex::encode(Sha256::digest(b"service_instance/payments/payments-dev"));
        assert_eq!(
            legacy_stack_name("service_instance/payments/payments-dev"),
            format!("protond-svc-payments-payments-dev-{}", &hash[..8])
        );
        assert_eq!(
            placed_stack_name("environment/dev", &Placement::default()),
            legacy_stack_name("environment/dev")
        );
        let recorded = Placement {
            stack_name: "given".into(),
            ..Placement::default()
        };
        assert_eq!(placed_stack_name("environment/dev", &recorded), "given");
    }

    fn stack(tags: &[(&str, &str)]) -> StackInfo {
        StackInfo {
            name: "s".into(),
            id: None,
            status: "CREATE_COMPLETE".into(),
            outputs: BTreeMap::new(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        }
    }

    /// The ownership gate: both tags must match; a stack with the resource tag and no
    /// installation tag passes only when this installation recorded it (a legacy stack).
    #[test]
    fn the_ownership_gate() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool, bool);
        let cases: &[Case] = &[
            (
                "ours",
                &[(TAG_RESOURCE, "environment/dev"), (TAG_INSTALLATION, "me")],
                false,
                true,
            ),
            (
                "another installation's",
                &[
                    (TAG_RESOURCE, "environment/dev"),
                    (TAG_INSTALLATION, "them"),
                ],
                true,
                false,
            ),
            (
                "another resource's",
                &[(TAG_RESOURCE, "environment/prod"), (TAG_INSTALLATION, "me")],
                true,
                false,
            ),
            ("no tags at all", &[], true, false),
            (
                "legacy, recorded by us",
                &[(TAG_RESOURCE, "environment/dev")],
                true,
                true,
            ),
            (
                "legacy, not recorded",
                &[(TAG_RESOURCE, "environment/dev")],
                false,
                false,
            ),
            (
                "installation only",
                &[(TAG_INSTALLATION, "me")],
                true,
                false,
            ),
        ];
        for (name, tags, recorded, ok) in cases {
            let result = check_owner(&stack(tags), "environment/dev", "me", *recorded);
            assert_eq!(result.is_ok(), *ok, "{name}: {result:?}");
            if let Err(c) = result {
                let text = c.to_string();
                assert!(
                    text.contains("stack s is not protond's environment/dev"),
                    "{text}"
                );
                assert!(text.contains("leaves it alone"), "{text}");
            }
        }
    }
}
