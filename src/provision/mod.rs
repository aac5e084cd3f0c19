//! Provisioners: the one seam through which every create, update, delete and adoption
//! reaches the outside world. They execute what they are told and report what they observe;
//! they never decide what to deploy (that is [`crate::plan`]'s job) and never write the
//! deployment history (that is the daemon's deployment lifecycle).
//!
//! * [`cloudformation::CloudFormation`]: stacks through AWS `CloudFormation`.
//! * [`self_managed::SelfManaged`]: Terraform, committed to an infrastructure repo as Proton's
//!   self-managed provisioning did; the outcome is reported later (`protond notify`).
//! * [`fake::Fake`]: an in-memory provisioner for tests, which records every call.
//! * [`codebuild::CodeBuild`]: Proton's `CodeBuild` provisioning (`rendering_engine:
//!   codebuild`): the bundle's commands run in an AWS `CodeBuild` build.
//! * [`artifacts::Artifacts`]: the S3 artifact bucket large templates are deployed from and
//!   `CodeBuild` bundles travel through.
//!
//! Which one a resource uses follows its bundle's manifest (`template_language`), see
//! [`Provisioning`].

pub mod artifacts;
pub mod aws_errors;
pub mod cloudformation;
pub mod codebuild;
pub mod codepipeline;
pub mod fake;
pub mod self_managed;
pub mod stack_events;
pub mod terraform;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use crate::state::{NewDeployment, StateError};

/// A boxed future, so that provisioners can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a resource is provisioned, from its bundle's manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioning {
    /// `template_language: cloudformation`: a `CloudFormation` stack.
    CloudFormation,
    /// `template_language: terraform`: self-managed, through the infrastructure repo.
    SelfManaged,
    /// `rendering_engine: codebuild`: the bundle's commands in an AWS `CodeBuild` build.
    CodeBuild,
}

/// One deployment handed to a provisioner: its history row, what it deploys and where
/// (`deployment.placement`: the recorded stack and the identity to act with), and who asks.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// The deployment's id in the history (tags, change set names, metadata).
    pub deployment_id: i64,
    /// What is deployed, and where.
    pub deployment: &'a NewDeployment,
    /// This installation's name (`protond:installation`).
    pub installation: &'a str,
    /// Whether this installation has a record of the resource (a legacy stack without an
    /// installation tag is then its own).
    pub recorded: bool,
    /// Whether the deployment may still start its provider operation, asked again right
    /// before a change set created for it is executed (on PostgreSQL: this replica's lease
    /// is still held and trusted).
    pub fence: Fence<'a>,
}

/// Whether a deployment may still start its provider operation ([`Job::fence`]): a check
/// the daemon passes in (its lease), asked again after the slow steps before an operation
/// starts (a change set's creation). Open by default.
#[derive(Clone, Copy, Default)]
pub struct Fence<'a>(Option<&'a (dyn Fn() -> bool + Send + Sync)>);

impl<'a> Fence<'a> {
    /// No check: always allowed (`SQLite`'s one writer, tests).
    pub const OPEN: Fence<'static> = Fence(None);

    /// Asks `check` each time.
    #[must_use]
    pub fn new(check: &'a (dyn Fn() -> bool + Send + Sync)) -> Self {
        Self(Some(check))
    }

    /// Whether the operation may start now.
    #[must_use]
    pub fn allows(&self) -> bool {
        self.0.is_none_or(|check| check())
    }
}

impl std::fmt::Debug for Fence<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Fence(check)"
        } else {
            "Fence(open)"
        })
    }
}

/// What a provisioner did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Deployed, with the outputs it reported.
    Deployed {
        /// Stack (or Terraform) outputs.
        outputs: BTreeMap<String, String>,
        /// The stack's id, when the provisioner has one.
        stack_id: Option<String>,
    },
    /// The stack (or the self-managed resource) is gone.
    Deleted,
    /// Handed over; the outcome is reported later (`protond notify`).
    Submitted {
        /// Folder of the infrastructure repo.
        folder: String,
        /// Branch of the pull request.
        branch: String,
        /// Pull request, when the forge opened one.
        pull_request: Option<String>,
    },
    /// An adopted deployment never reached the provisioner: the resource is as it was.
    Interrupted,
}

/// A deployment a provisioner could not carry out.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// `CloudFormation` failed.
    #[error(transparent)]
    Stack(#[from] cloudformation::ProvisionError),
    /// The self-managed submission failed.
    #[error(transparent)]
    Submit(#[from] self_managed::SubmitError),
    /// A `CodeBuild` deployment failed (boxed: errors are held across awaits in the
    /// lifecycle's future).
    #[error(transparent)]
    Build(Box<codebuild::BuildError>),
    /// The rendered documents do not fit the provisioner.
    #[error("{resource}: {reason}")]
    Unsupported {
        /// The resource.
        resource: String,
        /// What does not fit.
        reason: String,
    },
    /// How the resource was provisioned could not be read.
    #[error("cannot tell how {resource} was provisioned")]
    Store {
        /// The resource.
        resource: String,
        /// The store's error.
        #[source]
        source: StateError,
    },
    /// The stack under the resource's name is not provably this installation's.
    #[error(transparent)]
    Conflict(cloudformation::Conflict),
    /// The fake provisioner was told to fail.
    #[error("{0}")]
    Fake(String),
    /// The fence closed before the operation started (the lease was lost or is no longer
    /// trusted): nothing was started; the deployment stays in flight for the next leader.
    #[error(
        "{resource}: this replica lost the lead (or no longer trusts its lease) before the operation started; nothing was started, the next leader adopts the deployment"
    )]
    Fenced {
        /// The resource.
        resource: String,
    },
}

impl From<codebuild::BuildError> for DeployError {
    fn from(e: codebuild::BuildError) -> Self {
        Self::Build(Box::new(e))
    }
}

impl DeployError {
    /// Whether retrying later, without a change, may help.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Stack(e) => e.is_retryable(),
            Self::Submit(e) => e.retryable,
            Self::Build(e) => e.is_retryable(),
            Self::Store { .. } | Self::Fenced { .. } => true,
            Self::Unsupported { .. } | Self::Fake(_) | Self::Conflict(_) => false,
        }
    }
}

/// A provisioner: applies, deletes and adopts one resource's deployment.
///
/// Implementations are driven by the daemon's deployment lifecycle, which has already
/// recorded the deployment as started and records whatever is returned.
pub trait Provisioner: Send + Sync {
    /// Creates or updates the resource from its rendered documents, and waits for the end.
    fn apply<'a>(
        &'a self,
        job: Job<'a>,
        documents: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Applied, DeployError>>;

    /// Deletes the resource, and waits for the end.
    fn delete<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Applied, DeployError>>;

    /// Finishes a deployment an earlier process left in flight, from what it observes.
    fn adopt<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Applied, DeployError>>;

    /// Asks the provider to stop the job's operation in flight (`protond cancel`); the
    /// running `apply` then ends as the provider ends it (rolled back). By default the
    /// provisioner cannot, and the deployment runs to its end.
    fn cancel<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(async move {
            Err(DeployError::Unsupported {
                resource: job.deployment.resource_id.clone(),
                reason: "this provisioner cannot cancel a deployment in flight; it runs to its end"
                    .into(),
            })
        })
    }

    /// The progress of the job's operation in flight, when the provisioner reports any.
    fn progress(&self, _job: Job<'_>) -> Option<crate::state::Progress> {
        None
    }
}
