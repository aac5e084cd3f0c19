//! An in-memory provisioner for tests: it records every call it receives, in order, and
//! answers from a script (succeed by default; fail, permanently or not, for chosen
//! resources), holding an apply until the test lets it go ([`Fake::hold`]). It never
//! touches the outside world.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Applied, BoxFuture, DeployError, Job, Provisioner};
use crate::model::DeploymentAction;

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `apply`, `delete` or `adopt`.
    pub operation: &'static str,
    /// The resource.
    pub resource: String,
    /// The deployment id it was given.
    pub deployment_id: i64,
    /// The version deployed.
    pub version: String,
}

/// How the fake answers for a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Script {
    /// Succeed with these outputs.
    Succeed(BTreeMap<String, String>),
    /// Fail; `retryable` says whether retrying may help.
    Fail {
        /// The error message.
        message: String,
        /// Whether it is transient.
        retryable: bool,
    },
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<Call>,
    scripts: BTreeMap<String, Script>,
    /// Applies that wait until their gate is notified.
    gates: BTreeMap<String, Arc<tokio::sync::Notify>>,
}

/// The fake provisioner. Clones share their calls and scripts.
#[derive(Debug, Clone, Default)]
pub struct Fake {
    inner: Arc<Mutex<Inner>>,
}

impl Fake {
    /// A fake that succeeds for every resource, with no outputs.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `script` for `resource` from now on.
    pub fn script(&self, resource: &str, script: Script) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.scripts.insert(resource.to_string(), script);
        }
    }

    /// Holds every apply of `resource` (recorded as a call at once) until the returned gate
    /// is notified (`notify_one`, once per apply to let go).
    #[must_use]
    pub fn hold(&self, resource: &str) -> Arc<tokio::sync::Notify> {
        let gate = Arc::new(tokio::sync::Notify::new());
        if let Ok(mut inner) = self.inner.lock() {
            inner.gates.insert(resource.to_string(), gate.clone());
        }
        gate
    }

    fn gate(&self, resource: &str) -> Option<Arc<tokio::sync::Notify>> {
        self.inner.lock().ok()?.gates.get(resource).cloned()
    }

    /// The calls received so far, in order.
    #[must_use]
    pub fn calls(&self) -> Vec<Call> {
        self.inner
            .lock()
            .map(|i| i.calls.clone())
            .unwrap_or_default()
    }

    fn answer(&self, operation: &'static str, job: Job<'_>) -> Result<Applied, DeployError> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| DeployError::Fake("the fake's lock is poisoned".into()))?;
        let dep = job.deployment;
        inner.calls.push(Call {
            operation,
            resource: dep.resource_id.clone(),
            deployment_id: job.deployment_id,
            version: dep.to_version.to_string(),
        });
        match inner.scripts.get(&dep.resource_id) {
            Some(Script::Fail { message, retryable }) => Err(if *retryable {
                DeployError::Stack(super::cloudformation::ProvisionError::Call {
                    operation: "Fake",
                    stack: dep.resource_id.clone(),
                    message: message.clone(),
                    retryable: true,
                })
            } else {
                DeployError::Fake(message.clone())
            }),
            Some(Script::Succeed(outputs)) if operation != "delete" => Ok(Applied::Deployed {
                outputs: outputs.clone(),
                stack_id: None,
            }),
            _ if operation == "delete" || dep.action == DeploymentAction::Delete => {
                Ok(Applied::Deleted)
            }
            _ => Ok(Applied::Deployed {
                outputs: BTreeMap::new(),
                stack_id: None,
            }),
        }
    }
}

impl Provisioner for Fake {
    fn apply<'a>(
        &'a self,
        job: Job<'a>,
        _documents: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Applied, DeployError>> {
        Box::pin(async move {
            let gate = self.gate(&job.deployment.resource_id);
            let answer = self.answer("apply", job);
            if let Some(gate) = gate {
                gate.notified().await;
            }
            answer
        })
    }

    fn delete<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Applied, DeployError>> {
        Box::pin(async move { self.answer("delete", job) })
    }

    fn adopt<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Applied, DeployError>> {
        Box::pin(async move { self.answer("adopt", job) })
    }
}
