//! Self-managed provisioning (`template_language: terraform`), as AWS Proton did it: the
//! rendered Terraform is committed to the infrastructure repo with Proton's files and layout
//! ([`super::terraform`]), a pull request is opened, and the outcome is reported back later
//! (`protond notify`, `POST /api/v1/notify`), recorded by [`notify()`].
//!
//! Pipelines go to the pipeline repo instead when `[self_managed.pipeline_repository]` is
//! set (Proton's `pipelineProvisioningRepository`), at the same `pipeline/<service>` folder.
//!
//! A submitted deployment stays `in_progress` in the store, marked `waiting` in the
//! `self_managed` table: the reconciler neither adopts it nor starts another deployment of
//! that resource until the outcome is reported. A restart changes nothing.

use std::collections::BTreeMap;

use std::sync::Arc;

use super::{Applied, BoxFuture, DeployError, Job, Provisioner, terraform};
use crate::config::Config;
use crate::forge::{self, AnyForge, Forge as _, PullRequestDraft};
use crate::state::{NewDeployment, Outcome, ResourceRecord, SelfManagedRecord, StateError, Store};

/// The self-managed provisioner: submits to the infrastructure repo of the config.
#[derive(Debug, Clone)]
pub struct SelfManaged {
    config: Arc<Config>,
    store: Store,
}

impl SelfManaged {
    /// A provisioner submitting to `config`'s infrastructure repo and recording waiting
    /// deployments in `store`.
    #[must_use]
    pub fn new(config: Arc<Config>, store: Store) -> Self {
        Self { config, store }
    }

    async fn submit_job(
        &self,
        job: Job<'_>,
        documents: Option<&[(String, String)]>,
    ) -> Result<Applied, DeployError> {
        let r = submit(
            &self.config,
            &self.store,
            job.deployment_id,
            job.deployment,
            documents,
        )
        .await?;
        Ok(Applied::Submitted {
            folder: r.folder,
            branch: r.branch,
            pull_request: r.url,
        })
    }
}

impl Provisioner for SelfManaged {
    fn apply<'a>(
        &'a self,
        job: Job<'a>,
        documents: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Applied, DeployError>> {
        Box::pin(self.submit_job(job, Some(documents)))
    }

    fn delete<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Applied, DeployError>> {
        Box::pin(self.submit_job(job, None))
    }

    /// A submitted deployment waits for its reported outcome and is never adopted; one
    /// that never reached the infrastructure repo is retried.
    fn adopt<'a>(&'a self, _job: Job<'a>) -> BoxFuture<'a, Result<Applied, DeployError>> {
        Box::pin(async { Ok(Applied::Interrupted) })
    }
}

/// A submission that did not reach the infrastructure repo.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SubmitError {
    /// What went wrong.
    pub message: String,
    /// Whether trying again later may help.
    pub retryable: bool,
}

fn fatal(message: impl Into<String>) -> SubmitError {
    SubmitError {
        message: message.into(),
        retryable: false,
    }
}

fn transient(message: impl Into<String>) -> SubmitError {
    SubmitError {
        message: message.into(),
        retryable: true,
    }
}

fn template_arn(config: &Config, dep: &NewDeployment) -> String {
    let kind = if dep.kind == crate::plan::ResourceKind::Environment {
        "environment-template"
    } else {
        "service-template"
    };
    format!(
        "arn:aws:proton:{}:{}:{kind}/{}",
        config.region, config.account_id, dep.template
    )
}

/// The resource's Proton ARN, its documents with `proton_tags` filled in, and its
/// `.proton/deployment-metadata.json` (marked deleted when there are no documents).
fn files_of(
    config: &Config,
    deployment_id: i64,
    dep: &NewDeployment,
    documents: Option<&[(String, String)]>,
) -> (String, Vec<(String, String)>, String) {
    let (arn, env_arn) = terraform::arns(
        &dep.resource_id,
        dep.environment.as_deref(),
        &config.region,
        &config.account_id,
    );
    let metadata = terraform::deployment_metadata(
        deployment_id,
        documents.is_none(),
        &arn,
        env_arn.as_deref(),
        &template_arn(config, dep),
        dep.to_version.major,
        dep.to_version.minor,
    );
    let tags = terraform::proton_tags(
        &dep.resource_id,
        dep.environment.as_deref(),
        &config.region,
        &config.account_id,
        &dep.template,
    );
    let documents = terraform::with_proton_tags(documents.unwrap_or_default(), &tags);
    (arn, documents, metadata)
}

/// Commits the resource's files (or, for a delete, its metadata marked deleted) on the
/// resource's branch of the infrastructure repo, opens or updates its pull request, and
/// records the deployment as waiting.
///
/// # Errors
///
/// [`SubmitError`] when nothing was recorded as waiting; the caller fails the deployment.
async fn submit(
    config: &Config,
    store: &Store,
    deployment_id: i64,
    dep: &NewDeployment,
    documents: Option<&[(String, String)]>,
) -> Result<SelfManagedRecord, SubmitError> {
    let Some(sm) = config
        .self_managed
        .as_ref()
        .map(|sm| sm.repo_for(&dep.resource_id))
    else {
        return Err(fatal(format!(
            "{}: the template is Terraform (self-managed provisioning), but no infrastructure repo is configured; set [self_managed] url in the config",
            dep.resource_id
        )));
    };
    // Components are refused before anything is written.
    terraform::folder_for(&dep.resource_id, dep.environment.as_deref(), false)
        .map_err(|e| fatal(e.to_string()))?;
    let deleted = documents.is_none();
    let (arn, documents, metadata) = files_of(config, deployment_id, dep, documents);
    // A resource stays where it was first committed, whatever the layout says now.
    let recorded = store
        .self_managed(&dep.resource_id)
        .await
        .map_err(|e| transient(e.to_string()))?
        .map(|r| r.folder);
    let action = if deleted { "delete" } else { "deploy" };
    let message = format!(
        "protond: {action} {} ({} v{}, deployment {deployment_id})",
        dep.resource_id, dep.template, dep.to_version
    );
    let target = Target {
        resource_id: dep.resource_id.clone(),
        environment: dep.environment.clone(),
        recorded,
    };
    let (commit, git_dir, folder) =
        commit_folder(config, &sm, target, documents, metadata, deleted, message).await?;
    // Named after the resource id: folders nest (`dev/` and `dev/api-api-dev/`), and git
    // refs cannot.
    let pr_branch = format!(
        "{}deploy/{}",
        config.proposals.branch_prefix, dep.resource_id
    );
    forge::push_branch(&git_dir, &sm.url, &commit, &pr_branch, &sm.forge)
        .await
        .map_err(|e| SubmitError {
            retryable: e.is_retryable(),
            message: e.to_string(),
        })?;
    let draft = pull_request_draft(
        dep,
        deployment_id,
        &folder,
        &arn,
        deleted,
        &pr_branch,
        &sm.branch,
    );
    let f = AnyForge::new(&sm.forge);
    let pr = match f.find_open(&pr_branch).await {
        Ok(Some(pr)) => f.update(pr.number, &draft).await.map(|()| Some(pr)),
        Ok(None) => f.open(&draft).await,
        Err(e) => Err(e),
    }
    .map_err(|e| SubmitError {
        retryable: e.is_retryable(),
        message: e.to_string(),
    })?;
    let record = SelfManagedRecord {
        resource_id: dep.resource_id.clone(),
        deployment_id,
        folder,
        branch: pr_branch,
        number: pr.as_ref().map(|p| p.number),
        url: pr.map(|p| p.url),
        state: "waiting".into(),
        updated_at: String::new(),
    };
    store
        .put_self_managed(&record)
        .await
        .map_err(|e| transient(e.to_string()))?;
    Ok(record)
}

/// The files of a resource's folder: its rendered documents directly in the folder, as
/// Proton committed them, and `.proton/deployment-metadata.json`.
fn folder_files(
    folder: &str,
    documents: &[(String, String)],
    metadata: String,
) -> Vec<(String, Vec<u8>)> {
    let mut upserts: Vec<(String, Vec<u8>)> = documents
        .iter()
        .map(|(p, t)| {
            let rel = match p.split_once('/') {
                Some((first, rest)) if first.ends_with("infrastructure") => rest,
                _ => p.as_str(),
            };
            (format!("{folder}/{rel}"), t.clone().into_bytes())
        })
        .collect();
    upserts.push((
        format!("{folder}/.proton/deployment-metadata.json"),
        metadata.into_bytes(),
    ));
    upserts
}

/// Which resource a commit is for, to find its folder.
struct Target {
    resource_id: String,
    environment: Option<String>,
    /// The folder it was committed to before.
    recorded: Option<String>,
}

/// Commits the resource's folder on the infrastructure repo's branch (blocking git work,
/// off the runtime): `documents` and `metadata` at the folder of the configured layout
/// (`auto` looks for `environments/` on the branch); files of an earlier deployment that
/// this one no longer has are removed, unless it is a delete. Returns the commit, the
/// mirror's folder and the resource's folder.
async fn commit_folder(
    config: &Config,
    sm: &crate::config::SelfManaged,
    target: Target,
    documents: Vec<(String, String)>,
    metadata: String,
    deleted: bool,
    message: String,
) -> Result<(String, std::path::PathBuf, String), SubmitError> {
    let cache = config.data_dir.join("git");
    let url = sm.url.clone();
    let fetch = config.fetch_options(&url);
    let branch = sm.branch.clone();
    let layout = sm.layout;
    let author = (
        config.proposals.author_name.clone(),
        config.proposals.author_email.clone(),
    );
    tokio::task::spawn_blocking(move || -> Result<_, SubmitError> {
        fn infra(e: impl std::fmt::Display) -> SubmitError {
            transient(format!("infrastructure repo: {e}"))
        }
        let mirror = crate::source::Mirror::sync_with(&url, &cache, &fetch).map_err(infra)?;
        let base = mirror.branch_head(&branch).map_err(infra)?;
        let folder = if let Some(f) = target.recorded {
            f
        } else {
            let has_environments = mirror
                .tree_id(base, "environments")
                .map_err(infra)?
                .is_some();
            terraform::folder_for(
                &target.resource_id,
                target.environment.as_deref(),
                layout.under_environments(has_environments),
            )
            .map_err(|e| fatal(e.to_string()))?
        };
        let upserts = folder_files(&folder, &documents, metadata);
        let keep: Vec<String> = upserts.iter().map(|(p, _)| p.clone()).collect();
        let exists = mirror.tree_id(base, &folder).map_err(infra)?.is_some();
        let removes: Vec<String> = if deleted || !exists {
            Vec::new()
        } else {
            mirror
                .read_tree(base, &folder, 10_000, 64 * 1024 * 1024)
                .map_err(infra)?
                .into_iter()
                // Only this resource's own files: instances live in subfolders of their
                // environment's folder and must never be touched by its deployments.
                .filter(|e| !e.path.contains('/'))
                .map(|e| format!("{folder}/{}", e.path))
                .filter(|p| !keep.contains(p))
                .collect()
        };
        let commit = mirror
            .write_commit(base, &upserts, &removes, &message, (&author.0, &author.1))
            .map_err(infra)?;
        Ok((commit.to_string(), mirror.path().to_path_buf(), folder))
    })
    .await
    .map_err(|e| transient(e.to_string()))?
}

/// The pull request of a self-managed deployment: what to apply and how to report back.
fn pull_request_draft(
    dep: &NewDeployment,
    deployment_id: i64,
    folder: &str,
    arn: &str,
    deleted: bool,
    branch: &str,
    base: &str,
) -> PullRequestDraft {
    let verb = if deleted { "Destroy" } else { "Deploy" };
    PullRequestDraft {
        branch: branch.to_string(),
        base: base.to_string(),
        title: format!(
            "{verb} {} ({} v{})",
            dep.resource_id, dep.template, dep.to_version
        ),
        body: format!(
            "protond deployment {deployment_id} of `{}`: {} **{}** v{} in `{folder}/`.\n\n\
             {}\n\nWhen your automation has run, report the outcome:\n\n\
             ```sh\nprotond notify {} --status succeeded --outputs outputs.json   # or --status failed --message \"...\"\n```\n\n\
             or `POST /api/v1/notify` with `{{\"resource\": \"{}\", \"deploymentId\": \"{deployment_id}\", \"status\": \"SUCCEEDED\", \"outputs\": [{{\"key\": \"...\", \"valueString\": \"...\"}}]}}` \
             (Proton's `resourceArn` `{arn}` is accepted too). `terraform output -json` works as the outputs file.\n\n\
             `.proton/deployment-metadata.json` has `isResourceDeleted: {deleted}`.\n",
            dep.resource_id,
            dep.kind.as_str(),
            dep.template,
            dep.to_version,
            if deleted {
                "The resource was removed from its spec: destroy it (the `.tf` files stay so that `terraform destroy` can run)."
            } else {
                "Plan on this pull request, apply when it is merged."
            },
            dep.resource_id,
            dep.resource_id,
        ),
    }
}

/// A report that could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Nothing of that resource waits for an outcome.
    #[error("{0}")]
    NotWaiting(String),
    /// The report names another deployment than the one waiting.
    #[error("{0}")]
    Stale(String),
    /// The store failed.
    #[error("state store: {0}")]
    State(#[from] StateError),
}

/// Maps Proton's resource ARNs to protond resource ids; ids pass through.
#[must_use]
pub fn resource_id_from(s: &str) -> String {
    let Some(rest) = s.strip_prefix("arn:aws:proton:") else {
        return s.to_string();
    };
    let path = rest.splitn(3, ':').nth(2).unwrap_or_default();
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["environment", env] => format!("environment/{env}"),
        ["service", svc, "service-instance", inst] => format!("service_instance/{svc}/{inst}"),
        ["service", svc, "pipeline"] => format!("pipeline/{svc}"),
        _ => s.to_string(),
    }
}

/// Records the reported outcome of a waiting self-managed deployment. `deployment_id`, when
/// given, must be the one waiting (a late report of an older deployment is refused).
/// Returns the outcome recorded.
///
/// # Errors
///
/// [`NotifyError`] when nothing waits, the report is stale, or the store fails.
pub async fn notify(
    store: &Store,
    resource: &str,
    deployment_id: Option<i64>,
    succeeded: bool,
    outputs: BTreeMap<String, String>,
    message: Option<String>,
) -> Result<Outcome, NotifyError> {
    let resource = resource_id_from(resource);
    let row = store
        .self_managed(&resource)
        .await?
        .filter(|r| r.state == "waiting")
        .ok_or_else(|| {
            NotifyError::NotWaiting(format!(
                "{resource}: no self-managed deployment is waiting for an outcome"
            ))
        })?;
    if let Some(d) = deployment_id
        && d != row.deployment_id
    {
        return Err(NotifyError::Stale(format!(
            "{resource}: deployment {d} is not the one waiting ({}); the report is ignored",
            row.deployment_id
        )));
    }
    let Some(dep) = store.in_flight_deployment(row.deployment_id).await? else {
        // Finished already (a report recorded before its bookkeeping completed).
        let mut done = row.clone();
        done.state = "done".into();
        store.put_self_managed(&done).await?;
        return Err(NotifyError::NotWaiting(format!(
            "{resource}: deployment {} is no longer in progress",
            row.deployment_id
        )));
    };
    let outcome = match (succeeded, dep.deployment.action) {
        (true, crate::model::DeploymentAction::Delete) => Outcome::Deleted,
        (true, _) => {
            Outcome::Succeeded(ResourceRecord::deployed_by(&dep.deployment, outputs, None))
        }
        (false, _) => Outcome::Failed {
            error: format!(
                "reported failed: {}",
                message.unwrap_or_else(|| "no message".into())
            ),
            retryable: false,
        },
    };
    store.finish_deployment(row.deployment_id, &outcome).await?;
    let mut done = row;
    done.state = "done".into();
    store.put_self_managed(&done).await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    #[test]
    fn proton_arns_map_to_resource_ids() {
        use super::resource_id_from as f;
        assert_eq!(
            f("arn:aws:proton:us-east-1:123456789012:environment/dev"),
            "environment/dev"
        );
        assert_eq!(
            f("arn:aws:proton:us-east-1:123456789012:service/api/service-instance/api-dev"),
            "service_instance/api/api-dev"
        );
        assert_eq!(
            f("arn:aws:proton:us-east-1:1:service/api/pipeline"),
            "pipeline/api"
        );
        assert_eq!(f("environment/dev"), "environment/dev");
    }
}
